"""Sliders that work in the static HTML book, in a live Jupyter kernel, and under nbmake (chapter 1).

Static frames. The frames are rendered ahead of time (one matplotlib figure per slider value),
stored as PNG images in an ``ipywidgets.Stack``, and a ``SelectionSlider`` is linked to the stack
with ``jslink``. The link runs in the browser, so the embedded widget state in the built HTML needs
no kernel; under nbmake and in the book build nothing is displayed and the frames are simply built.

Live mode (``live=``). The first change of the frame slider that reaches Python adds live controls
to the widget: a fine slider per parameter, a status line and a live image. Such a change only
happens when a reader moves the slider in a running kernel: a static page has no kernel to tell, and
executing a chapter (book build, nbmake) never moves a slider. So the built HTML embeds exactly the
precomputed frames, with no environment detection to get wrong.
The fine sliders recompute on release (``continuous_update=False``), debounced, in a worker thread,
with a "computing…" status; a newer request supersedes an older one.
"""

from __future__ import annotations

import io
import numbers
import re
import threading
from typing import Callable, NamedTuple, Sequence

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np

from . import _validate as v


class Live(NamedTuple):
    """A fine range for one slider parameter in a live kernel: ``min <= value <= max`` in steps of
    ``step``; label names it (default: the slider's description). Integer min, max and step give an
    integer slider; ``log=True`` a logarithmic one (0 < min, step in decades)."""

    min: float
    max: float
    step: float
    label: str | None = None
    log: bool = False


def figure_png(fig, dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    if not hasattr(fig, "savefig"):
        v.fail("fig must be a matplotlib Figure", fig)
    dpi = v.positive_int("dpi", dpi, 10, 600)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _live_specs(live, values, description):
    """Validate ``live`` against the slider values; return a list of Live, one per value component."""
    specs = [live] if isinstance(live, Live) else live
    if isinstance(specs, (str, bytes)) or not isinstance(specs, (list, tuple)) or not specs \
            or not all(isinstance(s, Live) for s in specs):
        v.fail("live must be a widgets.Live(min, max, step) or a sequence of them (one per component "
               "of tuple values)", live)
    n_comp = len(values[0]) if isinstance(values[0], tuple) else 1
    if len(specs) != n_comp or any((len(x) if isinstance(x, tuple) else 1) != n_comp for x in values):
        v.fail(f"live must give one Live range per component of the slider values ({n_comp})", live)
    out = []
    for i, s in enumerate(specs):
        for name in ("min", "max", "step"):
            x = getattr(s, name)
            if isinstance(x, bool) or not isinstance(x, (numbers.Real, np.number)) or not np.isfinite(x):
                v.fail(f"live {name} must be a finite real number", s)
        if not s.min < s.max or not 0 < s.step <= (np.inf if s.log else s.max - s.min):
            v.fail("live range must have min < max and 0 < step <= max - min", s)
        if not isinstance(s.log, bool):
            v.fail("live log must be True or False", s)
        if s.log and (s.min <= 0 or s.step > np.log10(s.max / s.min)):
            v.fail("a log live range needs 0 < min and 0 < step <= log10(max / min) (decades)", s)
        if s.label is not None and (not isinstance(s.label, str) or not s.label.strip()):
            v.fail("live label must be a non-empty string or None", s)
        for x in values:
            xi = x[i] if isinstance(x, tuple) else x
            if not isinstance(xi, (numbers.Real, np.number)) or not s.min <= xi <= s.max:
                v.fail("every slider value must lie inside its live range", (xi, s))
        out.append(s._replace(label=s.label or (description if n_comp == 1 else f"{description}[{i}]")))
    return out


def _fine_slider(spec: Live, value, width: str):
    common = dict(description=spec.label, continuous_update=False, style={"description_width": "initial"},
                  layout=w.Layout(width=width))
    if spec.log:
        return w.FloatLogSlider(value=value, base=10, min=np.log10(spec.min), max=np.log10(spec.max),
                                step=spec.step, readout_format=".3g", **common)
    integer = all(isinstance(x, (numbers.Integral, np.integer)) for x in (spec.min, spec.max, spec.step))
    cls = w.IntSlider if integer else w.FloatSlider
    kw = {} if integer else {"readout_format": ".4g"}
    return cls(value=value, min=spec.min, max=spec.max, step=spec.step, **kw, **common)


class FrameSlider(w.VBox):
    """The widget :func:`frame_slider` returns: ``slider`` (frames) above ``stack`` (precomputed
    images). With ``live=``, the first change of ``slider`` that reaches Python adds the live controls:
    ``fine`` (one slider per parameter), ``status`` and ``live_image``; until then they do not exist,
    so an executed chapter embeds only the precomputed frames."""

    def __init__(self, slider, stack, values, *, live=None, live_render=None, dpi=80, width="520px",
                 debounce=0.3):
        super().__init__([slider, stack])
        self.slider, self.stack, self.values = slider, stack, values
        self.fine, self.status, self.live_image = [], None, None
        self.renders = 0  # live frames rendered so far
        self._live, self._render, self._dpi, self._width, self._debounce = live, live_render, dpi, width, debounce
        self._lock, self._timer, self._generation, self._syncing = threading.Lock(), None, 0, False
        if live is not None:
            slider.observe(self._on_frame, names="index")

    def _go_live(self):
        """Build the live controls (once): fine sliders and a status line under the frame slider, the
        live image under the stack."""
        x0 = self.values[self.slider.index]
        comps = x0 if isinstance(x0, tuple) else (x0,)
        self.fine = [_fine_slider(s, c, self._width) for s, c in zip(self._live, comps)]
        for f in self.fine:
            f.observe(self._on_fine, names="value")
        self.status = w.HTML(value="")
        self.live_image = w.Image(value=self.stack.children[self.slider.index].value, format="png",
                                  layout=w.Layout(width=self._width, display="none"))
        self.children = [self.slider, *self.fine, self.status, self.stack, self.live_image]

    def _on_frame(self, change):
        """The frame slider moved in Python: a reader in a live kernel (or a test). Add or align the
        fine sliders to the frame shown; the precomputed frame is displayed (jslink chose it)."""
        if self.status is None:
            self._go_live()
        self._generation += 1  # any pending live frame is now stale
        x = self.values[change["new"]]
        self._syncing = True
        try:
            for f, c in zip(self.fine, x if isinstance(x, tuple) else (x,)):
                f.value = c
        finally:
            self._syncing = False
        self.live_image.layout.display = "none"
        self.stack.layout.display = None
        self.status.value = ("<small>precomputed frame; release a fine slider to recompute at any "
                             "value</small>")

    def _on_fine(self, change):
        if self._syncing:
            return
        self._generation += 1
        gen = self._generation
        x = tuple(round(f.value, 12) for f in self.fine)  # 0.21 rather than 0.21000000000000002
        x = x if len(x) > 1 else x[0]
        self.status.value = "<small>computing…</small>"
        if self._timer is not None:
            self._timer.cancel()
        if self._debounce == 0:
            self._compute(x, gen)
        else:
            self._timer = threading.Timer(self._debounce, self._compute, args=(x, gen))
            self._timer.daemon = True
            self._timer.start()

    def _compute(self, x, gen):
        """Render the live frame for x unless a newer request (generation) superseded it."""
        with self._lock:
            if gen != self._generation:
                return
            try:
                fig = self._render(x)
                if not hasattr(fig, "savefig"):
                    v.fail("live_render(value) must return a matplotlib Figure", fig)
                png = figure_png(fig, self._dpi)
            except Exception as err:  # noqa: BLE001 - shown to the reader, not lost in a thread
                self.status.value = f"<small>could not compute at {x}: {type(err).__name__}: {err}</small>"
                return
            if gen != self._generation:
                return
            self.live_image.value = png
            self.renders += 1
            self.stack.layout.display = "none"
            self.live_image.layout.display = None
            self.status.value = f"<small>recomputed at {x}</small>"

    def wait(self, timeout: float = 120.0) -> None:
        """Block until a pending debounced live frame is done (for tests)."""
        if self._timer is not None:
            self._timer.join(timeout)
        with self._lock:
            pass


def frame_slider(
    render: Callable,
    values: Sequence,
    *,
    description: str,
    readout_format: str = "{:g}",
    initial: int = 0,
    dpi: int = 80,
    width: str = "520px",
    live: Live | Sequence[Live] | None = None,
    live_render: Callable | None = None,
    debounce: float = 0.3,
):
    """A slider over ``values`` that switches between precomputed frames ``render(value)``.

    render(value) -> matplotlib Figure (closed after rendering); values: the slider positions (1 to 24
    of them); description: the slider label (e.g. "batch size B"); readout_format formats each value
    for the slider readout. live: optional fine range(s) for a running kernel, one ``Live`` for scalar
    values or one per component of tuple values (e.g. (η, β)); live_render(value) -> Figure renders
    any value in the range (default: render); debounce: seconds a fine slider must rest before the
    recompute starts (0: at once, in the caller's thread). Returns a :class:`FrameSlider` (a VBox:
    slider above the image stack, live controls hidden until used); make it the last expression of
    a cell.
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
    if live is not None:
        live = _live_specs(live, values, description)
        if live_render is None:
            live_render = render
        if not callable(live_render):
            v.fail("live_render must be a callable value -> matplotlib Figure", live_render)
        debounce = v.in_range("debounce (seconds)", debounce, 0.0, 10.0, closed_high=True)
    elif live_render is not None:
        v.fail("live_render needs live= (the fine range it is called on)", live_render)
    images = []
    for value, label in zip(values, labels):
        fig = render(value)
        if not hasattr(fig, "savefig"):
            v.fail("render(value) must return a matplotlib Figure", fig)
        # no tooltip: the offline HTML manager (@jupyter-widgets/html-manager 1.0.15) cannot create an
        # Image view that has one ("Could not create a view"), seen in the browser test
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
    return FrameSlider(slider, stack, values, live=live, live_render=live_render, dpi=dpi, width=width,
                       debounce=debounce)
