"""Sliders that work in the static HTML book, in a live Jupyter kernel, and under nbmake (chapter 1).

The frames are rendered ahead of time (one matplotlib figure per slider value), stored as PNG images
in an ``ipywidgets.Stack``, and a ``SelectionSlider`` is linked to the stack with ``jslink``. The link
runs in the browser, so the embedded widget state in the built HTML needs no kernel; in Jupyter the
same widget works live; under nbmake nothing is displayed and the frames are simply built.
"""

from __future__ import annotations

import io
import numbers
import re
from typing import Callable, Sequence

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np

from . import _validate as v


def figure_png(fig, dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    if not hasattr(fig, "savefig"):
        v.fail("fig must be a matplotlib Figure", fig)
    dpi = v.positive_int("dpi", dpi, 10, 600)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def frame_slider(
    render: Callable,
    values: Sequence,
    *,
    description: str,
    readout_format: str = "{:g}",
    initial: int = 0,
    dpi: int = 80,
    width: str = "520px",
):
    """A slider over ``values`` that switches between precomputed frames ``render(value)``.

    render(value) -> matplotlib Figure (closed after rendering); values: the slider positions (1 to 24
    of them); description: the slider label (e.g. "batch size B"); readout_format formats each value
    for the slider readout. Returns an ``ipywidgets.VBox`` (slider above the image stack); make it
    the last expression of a cell.
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):  # values may be tuples, e.g. (eta, beta)
        v.fail("values must be a sequence of slider values", values)
    values = list(values)
    v.positive_int("number of slider values", len(values), 1, 24)
    for x in values:
        if isinstance(x, (numbers.Real, np.floating)) and not np.isfinite(x):
            v.fail("slider values must be finite", values)
    if not isinstance(description, str) or not description.strip():
        v.fail("description must be a non-empty string (the slider label)", description)
    if not isinstance(readout_format, str) or "{" not in readout_format:
        v.fail("readout_format must be a format string with a {} field, e.g. '{:g}'", readout_format)
    if not isinstance(width, str) or not re.fullmatch(r"\d+(\.\d+)?(px|%|em|rem|vw)", width):
        v.fail("width must be a CSS length such as '520px'", width)
    dpi = v.positive_int("dpi", dpi, 10, 600)
    try:
        labels = [readout_format.format(x) for x in values]
    except (ValueError, TypeError, IndexError, KeyError) as err:
        v.fail(f"readout_format must format every value ({err})", readout_format)
    if len(set(labels)) != len(labels):
        v.fail("readout_format must give distinct labels to distinct values", labels)
    v.positive_int("initial (index into values)", initial, 0, len(values) - 1)
    if not callable(render):
        v.fail("render must be a callable value -> matplotlib Figure", render)
    images = []
    for value in values:
        fig = render(value)
        if not hasattr(fig, "savefig"):
            v.fail("render(value) must return a matplotlib Figure", fig)
        images.append(w.Image(value=figure_png(fig, dpi), format="png", layout=w.Layout(width=width)))
    slider = w.SelectionSlider(
        options=labels,
        index=initial,
        description=description,
        continuous_update=True,
        style={"description_width": "initial"},
        layout=w.Layout(width=width),
    )
    stack = w.Stack(images, selected_index=initial)
    w.jslink((slider, "index"), (stack, "selected_index"))
    return w.VBox([slider, stack])
