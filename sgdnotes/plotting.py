"""House style for the book's figures: pure plotting functions that return (fig, ax) or draw on ax.

Introduced in chapter 1; every chapter uses :func:`figure`. Importing this module sets one
colour-blind-safe palette for the whole book, the Okabe–Ito colours (:data:`OKABE_ITO`), as
matplotlib's colour cycle, so ``"C0"``, ``"C1"``, ... in the chapters are its colours (C0 blue,
C1 orange, C2 green, C3 vermillion, C4 reddish purple, C5 sky blue, C6 yellow, C7 black), and a
perceptually uniform, colour-blind-safe default colour map (``cividis``).
"""

from __future__ import annotations

import numbers

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler
from matplotlib.patches import Ellipse

from . import _validate as v

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision
# deficiencies; ordered so that C0..C4 keep matplotlib's usual hues (blue, orange, green, red, purple).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def _use_palette() -> None:
    """Make OKABE_ITO the colour cycle ("C0".."C7") and cividis the default colour map."""
    mpl.rcParams["axes.prop_cycle"] = cycler(color=list(OKABE_ITO))
    mpl.rcParams["image.cmap"] = "cividis"


_use_palette()


def figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.2, **kw):
    """A figure in the house style with ``nrows x ncols`` panels of ``width x height`` inches each.

    Returns (fig, ax) with ax a single Axes when nrows = ncols = 1, else an array of Axes.
    """
    ncols = v.positive_int("ncols", ncols, 1, 20)
    nrows = v.positive_int("nrows", nrows, 1, 20)
    width = v.positive_float("width (inches)", width)
    height = v.positive_float("height (inches)", height)
    if width > 50 or height > 50:
        v.fail("width and height must be at most 50 inches per panel", (width, height))
    # style is applied to the objects (not via rc_context, which would also reset the backend)
    fig, ax = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), layout="constrained", **kw)
    for a in np.atleast_1d(ax).ravel():
        a.grid(True, alpha=0.3)
        a.spines[["top", "right"]].set_visible(False)
        a.tick_params(labelsize=9)
    return fig, ax


def cov_ellipse(ax, mean, cov, n_std: float = 2.0, **kw):
    """Draw the ``n_std``-standard-deviation ellipse of a 2-D Gaussian N(mean (2,), cov (2, 2)) on ax."""
    if not hasattr(ax, "add_patch"):
        v.fail("ax must be a matplotlib Axes", ax)
    mean = np.asarray(v.array("mean (2,)", mean, shape=(2,)), dtype=float)
    cov = v.symmetric_psd("cov (2, 2)", cov)
    if cov.shape != (2, 2):
        v.fail("cov must have shape (2, 2)", cov)
    n_std = v.positive_float("n_std", n_std)
    w, U = np.linalg.eigh((cov + cov.T) / 2)
    w = np.clip(w, 0.0, None)
    angle = np.degrees(np.arctan2(U[1, 1], U[0, 1]))
    kw.setdefault("fill", False)
    e = Ellipse(mean, 2 * n_std * np.sqrt(w[1]), 2 * n_std * np.sqrt(w[0]), angle=angle, **kw)
    ax.add_patch(e)
    return e


def loss_contours(ax, loss2d, xlim, ylim, levels: int = 12, n_grid: int = 120, **kw):
    """Contour lines of a 2-D function ``loss2d(x (N,), y (N,)) -> (N,)`` (vectorised) on ax."""
    if not hasattr(ax, "contour"):
        v.fail("ax must be a matplotlib Axes", ax)
    v.function("loss2d", loss2d, "a vectorised callable loss2d(x (N,), y (N,)) -> (N,)")
    for name, lim in (("xlim", xlim), ("ylim", ylim)):
        lo_hi = v.array(name, lim, shape=(2,))
        if not lo_hi[0] < lo_hi[1]:
            v.fail(f"{name} must be (low, high) with low < high", lim)
    if isinstance(levels, (numbers.Integral, np.integer)) and not isinstance(levels, bool):
        v.positive_int("levels", levels)
    else:
        lv = v.array("levels (a count or increasing values)", levels, ndim=1, nonempty=True)
        if np.any(np.diff(lv) <= 0):
            v.fail("levels must be a count or increasing values", levels)
    n_grid = v.positive_int("n_grid", n_grid, 2, 4000)
    xs = np.linspace(*xlim, n_grid)
    ys = np.linspace(*ylim, n_grid)
    XX, YY = np.meshgrid(xs, ys)
    ZZ = np.asarray(loss2d(XX.ravel(), YY.ravel()))
    if ZZ.size != XX.size:
        v.fail(f"loss2d must return one value per point ({XX.size})", ZZ)
    ZZ = v.array("loss2d values", ZZ.reshape(XX.shape), finite=False)
    kw.setdefault("colors", "0.6")
    kw.setdefault("linewidths", 0.8)
    return ax.contour(XX, YY, ZZ, levels=levels, **kw)
