"""House style for the book's figures: pure plotting functions that return (fig, ax) or draw on ax.

Introduced in chapter 1; every chapter uses :func:`figure`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Ellipse

def figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.2, **kw):
    """A figure in the house style with ``nrows x ncols`` panels of ``width x height`` inches each.

    Returns (fig, ax) with ax a single Axes when nrows = ncols = 1, else an array of Axes.
    """
    # style is applied to the objects (not via rc_context, which would also reset the backend)
    fig, ax = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), layout="constrained", **kw)
    for a in np.atleast_1d(ax).ravel():
        a.grid(True, alpha=0.3)
        a.spines[["top", "right"]].set_visible(False)
        a.tick_params(labelsize=9)
    return fig, ax


def cov_ellipse(ax, mean, cov, n_std: float = 2.0, **kw):
    """Draw the ``n_std``-standard-deviation ellipse of a 2-D Gaussian N(mean (2,), cov (2, 2)) on ax."""
    cov = np.asarray(cov, dtype=float)
    w, U = np.linalg.eigh((cov + cov.T) / 2)
    w = np.clip(w, 0.0, None)
    angle = np.degrees(np.arctan2(U[1, 1], U[0, 1]))
    kw.setdefault("fill", False)
    e = Ellipse(np.asarray(mean, float), 2 * n_std * np.sqrt(w[1]), 2 * n_std * np.sqrt(w[0]), angle=angle, **kw)
    ax.add_patch(e)
    return e


def loss_contours(ax, loss2d, xlim, ylim, levels: int = 12, n_grid: int = 120, **kw):
    """Contour lines of a 2-D function ``loss2d(x (N,), y (N,)) -> (N,)`` (vectorised) on ax."""
    xs = np.linspace(*xlim, n_grid)
    ys = np.linspace(*ylim, n_grid)
    XX, YY = np.meshgrid(xs, ys)
    ZZ = np.asarray(loss2d(XX.ravel(), YY.ravel())).reshape(XX.shape)
    kw.setdefault("colors", "0.6")
    kw.setdefault("linewidths", 0.8)
    return ax.contour(XX, YY, ZZ, levels=levels, **kw)
