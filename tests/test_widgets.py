"""sgdnotes.widgets: precomputed-frame sliders (static HTML, live kernel, nbmake)."""

import ipywidgets as w
import numpy as np
import pytest

from sgdnotes import plotting, widgets


def _render(b):
    fig, ax = plotting.figure()
    plotting.cov_ellipse(ax, [0.0, 0.0], np.diag([1.0, 1.0 / b]), color="C0")
    ax.set_title(f"B = {b}")
    return fig


def test_frame_slider_structure_and_link():
    widget = widgets.frame_slider(_render, [1, 2, 4], description="batch size B", initial=1)
    slider, stack = widget.children
    assert isinstance(slider, w.SelectionSlider) and isinstance(stack, w.Stack)
    assert slider.options == ("1", "2", "4") and slider.index == 1 and stack.selected_index == 1
    frames = [bytes(child.value) for child in stack.children]
    assert all(f.startswith(b"\x89PNG") for f in frames)
    assert len(set(frames)) == 3, "each slider value must give a different frame"
    # the jslink lives in the browser too; in Python it is a Link widget joining index -> selected_index
    from ipywidgets.widgets.widget import _instances
    from ipywidgets.widgets.widget_link import Link

    links = [m for m in _instances.values() if isinstance(m, Link)
             and m.source == (slider, "index") and m.target == (stack, "selected_index")]
    assert links, "slider index must be jslinked to the stack"


def test_frame_slider_closes_figures():
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    widgets.frame_slider(_render, [1, 2], description="B")
    assert len(plt.get_fignums()) == before


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(values=[]), "number of slider values must be >= 1"),
        (dict(values=list(range(30))), "number of slider values must be <= 24"),
        (dict(values=[1, 2], initial=5), "initial"),
        (dict(values=[1], render=lambda b: "not a figure"), "must return a matplotlib Figure"),
        (dict(values=[1], render=3), "render must be a callable"),
    ],
)
def test_frame_slider_validation(kwargs, match):
    args = dict(render=_render, description="B")
    args.update(kwargs)
    render = args.pop("render")
    values = args.pop("values")
    with pytest.raises(ValueError, match=match):
        widgets.frame_slider(render, values, **args)


def test_cov_ellipse_axes_lengths():
    fig, ax = plotting.figure()
    e = plotting.cov_ellipse(ax, [1.0, -1.0], np.array([[4.0, 0.0], [0.0, 1.0]]), n_std=1.0)
    assert sorted([e.width, e.height]) == pytest.approx([2.0, 4.0])
    assert tuple(e.center) == (1.0, -1.0)
