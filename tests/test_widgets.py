"""sgdnotes.widgets: precomputed-frame sliders (static HTML, nbmake) and their live mode (a kernel)."""

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


def _seen(widget):
    return {bytes(child.value) for child in widget.stack.children}


def test_live_controls_absent_until_the_slider_moves():
    """Executing a chapter never moves a slider, so the embedded state holds only the frames."""
    calls = []
    widget = widgets.frame_slider(_render, [1, 2, 4], description="B", live=widgets.Live(1, 16, 1),
                                  live_render=lambda b: calls.append(b) or _render(b))
    assert widget.children == (widget.slider, widget.stack) and widget.fine == [] and calls == []


def test_live_path_renders_a_new_image():
    """A reader's move (here: from Python) adds the fine slider; releasing it renders a new frame."""
    calls = []
    widget = widgets.frame_slider(_render, [1, 2, 4], description="B", live=widgets.Live(1, 16, 1),
                                  live_render=lambda b: calls.append(b) or _render(b), debounce=0)
    widget.slider.index = 2  # what jslink + the kernel see when the reader drags the frame slider
    (fine,) = widget.fine
    assert isinstance(fine, w.IntSlider) and fine.value == 4 and not fine.continuous_update  # recompute on release
    assert fine in widget.children and widget.live_image in widget.children and calls == []
    fine.value = 3  # a value with no precomputed frame
    assert calls == [3] and widget.renders == 1
    new = bytes(widget.live_image.value)
    assert new.startswith(b"\x89PNG") and new not in _seen(widget)
    assert widget.live_image.layout.display is None and widget.stack.layout.display == "none"
    assert "recomputed" in widget.status.value
    fine.value = 7
    assert calls == [3, 7] and bytes(widget.live_image.value) not in _seen(widget) | {new}
    # back to the frames: the precomputed frame is shown again, the fine slider follows without a recompute
    widget.slider.index = 0
    assert fine.value == 1 and calls == [3, 7]
    assert widget.stack.layout.display is None and widget.live_image.layout.display == "none"


def test_live_path_is_debounced():
    calls = []
    widget = widgets.frame_slider(_render, [1.0, 2.0], description="B", live=widgets.Live(0.5, 8.0, 0.25),
                                  live_render=lambda b: calls.append(b) or _render(b), debounce=1.0)
    widget.slider.index = 1
    (fine,) = widget.fine
    assert isinstance(fine, w.FloatSlider)
    for b in (3.0, 3.5, 5.0):  # three releases in quick succession
        fine.value = b
    assert widget.status.value == "<small>computing…</small>"
    widget.wait()
    assert calls == [5.0] and widget.renders == 1, "only the last of the quick releases is computed"
    assert bytes(widget.live_image.value) not in _seen(widget)


def test_live_log_range():
    calls = []
    widget = widgets.frame_slider(_render, [0.001, 0.1, 1.0], description="scale",
                                  live=widgets.Live(0.001, 1.0, 0.05, log=True),
                                  live_render=lambda b: calls.append(b) or _render(1 + b), debounce=0)
    widget.slider.index = 1
    (fine,) = widget.fine
    assert isinstance(fine, w.FloatLogSlider) and fine.value == pytest.approx(0.1) and fine.base == 10
    fine.value = 0.02
    assert calls == [0.02] and widget.renders == 1


def test_live_tuple_values_and_errors_shown():
    seen = []

    def render2(hp):
        eta, beta = hp
        if beta > 0.95:
            raise ValueError("unstable")
        seen.append(hp)
        return _render(1 + eta + beta)

    widget = widgets.frame_slider(render2, [(0.1, 0.0), (0.1, 0.9)], description="(η, β)", readout_format="{}",
                                  live=(widgets.Live(0.01, 1.0, 0.01, "η"), widgets.Live(0.0, 0.99, 0.01, "β")),
                                  debounce=0)
    widget.slider.index = 1
    eta_s, beta_s = widget.fine
    assert (eta_s.description, beta_s.description) == ("η", "β") and (eta_s.value, beta_s.value) == (0.1, 0.9)
    eta_s.value = 0.5
    assert seen[-1] == (0.5, 0.9) and widget.renders == 1
    beta_s.value = 0.98
    assert widget.renders == 1 and "unstable" in widget.status.value


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(live=(1, 16, 1)), "live must be a widgets.Live"),
        (dict(live=widgets.Live(2, 16, 1)), "inside its live range"),
        (dict(live=widgets.Live(16, 1, 1)), "min < max"),
        (dict(live=widgets.Live(1, 16, 0)), "0 < step"),
        (dict(live=widgets.Live(1, 16, float("nan"))), "finite"),
        (dict(live=[widgets.Live(1, 16, 1)] * 2), "one Live range per component"),
        (dict(live=widgets.Live(1, 16, 1), live_render=3), "live_render must be a callable"),
        (dict(live_render=_render), "live_render needs live="),
        (dict(live=widgets.Live(1, 16, 1), debounce=-1), "debounce"),
        (dict(live=widgets.Live(0, 16, 0.1, log=True)), "log live range needs 0 < min"),
        (dict(live=widgets.Live(1, 16, 0.1, log="yes")), "log must be True or False"),
    ],
)
def test_live_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        widgets.frame_slider(_render, [1, 2], description="B", **kwargs)


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
