"""The book's one statistical toolkit: standard errors and the two kinds of statistical assert.

Every chapter quotes a measurement with its standard error and then asserts one of two things:

* :func:`assert_agrees` -- the measurement agrees with a prediction within ``k`` standard errors
  (``|z| <= k``);
* :func:`assert_rejects` -- the measurement rejects an alternative by at least ``k`` standard errors
  (``|z| >= k``).

Both return a :class:`Check` and, when run inside a notebook that myst-nb executes, glue what they
compared under ``<name>`` (measured), ``<name>_se``, ``<name>_pred`` (prediction or alternative) and
``<name>_z``, so the prose and the errata quote exactly the numbers that were tested.

Standard errors: :func:`se_mean` (i.i.d. mean), :func:`var_and_se` (variance, from the spread of the
squared deviations), :func:`jackknife` (delete-one-block), :func:`bootstrap` (resampling, with a
percentile interval). :func:`chapter_seed` gives a chapter its one seed (``SGDNOTES_SEED`` replicates
the book with other seeds, see ``make replicate``).

Introduced with the referee pass of chapters 1-4 and 8; used by every chapter.
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple

import numpy as np

from . import _validate as v


class Check(NamedTuple):
    """What a statistical assert compared.

    name       str    the glue key prefix
    measured   float  the measurement
    se         float  its standard error (> 0)
    predicted  float  the prediction (``agrees``) or the alternative (``rejects``)
    z          float  (measured - predicted) / se
    k          float  the bound on |z|
    kind       str    "agrees" (|z| <= k) or "rejects" (|z| >= k)
    """

    name: str
    measured: float
    se: float
    predicted: float
    z: float
    k: float
    kind: str


def chapter_seed(default: int) -> int:
    """The chapter's one seed: ``default``, or a replicate seed when ``SGDNOTES_SEED`` is set.

    With ``SGDNOTES_SEED=s`` (an integer >= 1) every chapter runs with seed ``1000 * s + default``, so
    chapters stay distinct from one another and from the default run. ``make replicate`` uses it.
    """
    default = v.positive_int("default", default, 0)
    raw = os.environ.get("SGDNOTES_SEED", "").strip()
    if not raw:
        return default
    try:
        s = int(raw)
    except ValueError:
        v.fail("SGDNOTES_SEED must be an integer >= 1", raw)
    v.positive_int("SGDNOTES_SEED", s, 1)
    return 1000 * s + default


def _samples(name: str, x, axis: int) -> np.ndarray:
    x = np.asarray(v.array(name, x), dtype=np.float64)
    if x.ndim == 0:
        v.fail(f"{name} must have at least one dimension (samples along axis {axis})", x)
    if x.shape[axis] < 2:
        v.fail(f"{name} needs at least 2 samples along axis {axis}", x)
    return x


def se_mean(x, axis: int = 0):
    """Mean of i.i.d. samples along ``axis`` and its standard error s/sqrt(N) (ddof = 1).

    x (N, ...) -> (mean (...), se (...)), float64.
    """
    x = _samples("x", x, axis)
    n = x.shape[axis]
    return x.mean(axis=axis), x.std(axis=axis, ddof=1) / np.sqrt(n)


def var_and_se(x, axis: int = 0):
    """Sample variance (1/N) along ``axis`` and its standard error from the spread of (x - mean)^2.

    x (N, ...) -> (var (...), se (...)), float64. The s.e. is the delta-method one, sqrt((m4 - var^2)/N),
    valid when the fourth moment is finite.
    """
    x = _samples("x", x, axis)
    n = x.shape[axis]
    dev2 = (x - x.mean(axis=axis, keepdims=True)) ** 2
    return dev2.mean(axis=axis), dev2.std(axis=axis, ddof=1) / np.sqrt(n)


def jackknife(stat_fn: Callable, x, n_blocks: int | None = None):
    """Delete-one-block jackknife of ``stat_fn`` over the first axis of ``x``.

    stat_fn: samples (N', ...) -> float or array; x (N, ...); n_blocks (default N, at most N) contiguous
    blocks (use blocks for correlated series). Returns (estimate on all of x, jackknife s.e.), float64.
    """
    x = _samples("x", x, 0)
    n = x.shape[0]
    nb = n if n_blocks is None else v.positive_int("n_blocks", n_blocks, 2, n)
    edges = np.linspace(0, n, nb + 1).astype(int)
    full = np.asarray(stat_fn(x), dtype=np.float64)
    loo = np.stack([np.asarray(stat_fn(np.concatenate([x[:a], x[b:]])), dtype=np.float64)
                    for a, b in zip(edges[:-1], edges[1:])])
    se = np.sqrt((nb - 1) / nb * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0))
    return full, se


def bootstrap(key, stat_fn: Callable, x, n_boot: int = 1000, level: float = 0.95):
    """Non-parametric bootstrap of ``stat_fn`` over the first axis of ``x``.

    key: a JAX PRNG key (the resampling indices come from it); stat_fn: samples (N, ...) -> float or
    array; x (N, ...). Returns (estimate on x, bootstrap s.e., (low, high) percentile interval at
    ``level``), float64.
    """
    import jax

    v.key("key", key)
    x = _samples("x", x, 0)
    n_boot = v.positive_int("n_boot", n_boot, 2, 10**6)
    level = v.in_range("level", level, 0.0, 1.0)
    if level <= 0:
        v.fail("level must be in (0, 1)", level)
    n = x.shape[0]
    idx = np.asarray(jax.random.randint(key, (n_boot, n), 0, n))
    reps = np.stack([np.asarray(stat_fn(x[i]), dtype=np.float64) for i in idx])
    full = np.asarray(stat_fn(x), dtype=np.float64)
    a = (1 - level) / 2
    lo, hi = np.quantile(reps, [a, 1 - a], axis=0)
    return full, reps.std(axis=0, ddof=1), (lo, hi)


def _glue(name: str, check: Check) -> None:
    """Glue the compared numbers when running under IPython with myst-nb installed; else do nothing."""
    try:
        from IPython import get_ipython
        from myst_nb import glue
    except ImportError:  # plain Python without the book extras
        return
    if get_ipython() is None:
        return
    glue(name, check.measured, display=False)
    glue(f"{name}_se", check.se, display=False)
    glue(f"{name}_pred", check.predicted, display=False)
    glue(f"{name}_z", check.z, display=False)


def _check(name, measured, se, predicted, k, kind) -> Check:
    if not isinstance(name, str) or not name.isidentifier():
        v.fail("name must be a glue key: a Python identifier", name)
    measured = float(np.asarray(measured))
    predicted = float(np.asarray(predicted))
    se = float(np.asarray(se))
    if not (np.isfinite(measured) and np.isfinite(predicted)):
        v.fail(f"{name}: measured and predicted must be finite", (measured, predicted))
    v.positive_float(f"{name}: se", se)
    k = v.positive_float("k", k)
    return Check(name, measured, se, predicted, (measured - predicted) / se, k, kind)


def assert_agrees(name: str, measured, se, predicted, k: float = 4.0, *, glue: bool = True) -> Check:
    """Assert |measured - predicted| <= k * se; glue the four numbers under ``name``; return the Check.

    Raises AssertionError naming the claim, the numbers and z when the measurement disagrees.
    """
    c = _check(name, measured, se, predicted, k, "agrees")
    if glue:
        _glue(name, c)
    assert abs(c.z) <= c.k, (
        f"{name}: measured {c.measured:.6g} ± {c.se:.3g} disagrees with the prediction {c.predicted:.6g} "
        f"(z = {c.z:.2f}, bound |z| <= {c.k:g})")
    return c


def assert_rejects(name: str, measured, se, alternative, k: float = 4.0, *, glue: bool = True) -> Check:
    """Assert |measured - alternative| >= k * se; glue the four numbers under ``name``; return the Check.

    Raises AssertionError when the measurement cannot tell the alternative apart.
    """
    c = _check(name, measured, se, alternative, k, "rejects")
    if glue:
        _glue(name, c)
    assert abs(c.z) >= c.k, (
        f"{name}: measured {c.measured:.6g} ± {c.se:.3g} does not reject the alternative {c.predicted:.6g} "
        f"(z = {c.z:.2f}, need |z| >= {c.k:g})")
    return c
