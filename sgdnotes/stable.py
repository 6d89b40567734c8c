"""Alpha-stable sampling and tail-index estimators (chapters 2 and 5).

Conventions (DESIGN.md section 5):

* :func:`sample_stable` -- symmetric alpha-stable ``S`` with characteristic function
  ``E[exp(i t S)] = exp(-|scale t|^alpha)``, equal in law to ``scipy.stats.levy_stable(alpha, 0,
  scale=scale)``; at ``alpha = 2`` this is ``N(0, 2 scale^2)``; at ``alpha = 1`` Cauchy(0, scale).
* :func:`sample_positive_stable` -- totally skewed positive a-stable ``W`` (0 < a < 1) with Laplace
  transform ``E[exp(-s W)] = exp(-s^a)``; in scipy's S1 parametrisation this is
  ``levy_stable(a, 1, scale=cos(pi a / 2)^(1/a))``.

Elliptical alpha-stable vectors (used by the SDE drivers, :mod:`sgdnotes.sde`): for ``G ~ N(0, S)``
and an independent ``W`` from :func:`sample_positive_stable` with ``a = alpha/2``, the vector
``Z = sqrt(W) G`` has ``E[exp(i <u, Z>)] = E[exp(-W u^T S u / 2)] = exp(-(u^T S u / 2)^(alpha/2))``:
every projection ``<u, Z>`` is symmetric alpha-stable with scale ``sqrt(u^T S u / 2)`` (at alpha = 2,
``W = 1`` and ``Z = G``).

Both samplers are Chambers--Mallows--Stuck / Kanter transforms of a uniform angle and an independent
standard exponential (Chambers, Mallows & Stuck 1976; Kanter 1975). The transforms are exposed on
arrays of uniforms (``*_from_uniforms``) so that the SDE simulator can feed them its own per-step
random words.

Tail-index estimators (chapter 5; chapters 7 and 9 call them). All work on concrete arrays in float64
(NumPy, not jitted) and return NamedTuples:

* :func:`hill_estimator` -- Hill (1975) estimate of the tail index of ``|x|`` from its ``k`` largest
  values, with the standard error ``alpha/sqrt(k)`` and the exact 95 % interval of a Pareto tail;
  :func:`hill_k` is its default ``k = ceil(sqrt(n))``.
* :func:`block_tail_index` -- the block-sum estimator of Mohammadi, Mohammadpour & Ogata (2015) used by
  Simsekli, Sagun & Gurbuzbalaban (2019); it assumes the sample *is* symmetric alpha-stable (on a
  finite-variance sample it tends to 2 only like 1/log(block length), from below or above).
* :func:`tail_index` -- one estimate per coordinate (coordinates of different scales are never pooled)
  and a combined estimate with a standard error valid whatever the dependence between coordinates.
* :func:`kesten_index` -- the Kesten (1973) tail index ``kappa`` of the scalar recursion
  ``theta' = (1 - eta a) theta + eta b``: ``E|1 - eta a|^kappa = 1`` (Goldie 1991; Gurbuzbalaban, Simsekli
  & Zhu 2021 for SGD).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v


def _alpha(name, alpha, low, high, closed_high):
    a = v.in_range(name, alpha, low, high, closed_high=closed_high)
    if a <= low:
        v.fail(f"{name} must be > {low}", alpha)
    return a


def stable_from_uniforms(alpha: float, u1, u2):
    """Symmetric alpha-stable (scale 1) from two independent uniform(0, 1) arrays of one shape (CMS).

    ``V = pi (u1 - 1/2)`` uniform on (-pi/2, pi/2), ``E = -log u2`` standard exponential;
    ``S = sin(alpha V) / cos(V)^(1/alpha) * (cos((1 - alpha) V) / E)^((1 - alpha)/alpha)``.
    Exact for every alpha in (0, 2] (alpha = 1 gives tan V, a standard Cauchy). Static alpha.
    """
    V = jnp.pi * (u1 - 0.5)
    cosV = jnp.sin(jnp.pi * jnp.minimum(u1, 1.0 - u1))  # = cos V > 0 (rounded pi/2 could make cos V < 0)
    E = -jnp.log(u2)
    if alpha == 1.0:
        return jnp.sin(V) / cosV
    if alpha == 2.0:  # the general formula reduces to 2 sin(V) sqrt(E) ~ N(0, 2)
        return 2.0 * jnp.sin(V) * jnp.sqrt(E)
    return (jnp.sin(alpha * V) / cosV ** (1.0 / alpha)
            * (jnp.cos((1.0 - alpha) * V) / E) ** ((1.0 - alpha) / alpha))


def positive_stable_from_uniforms(a: float, u1, u2):
    """Positive a-stable with ``E[exp(-s W)] = exp(-s^a)`` from two uniform(0, 1) arrays (Kanter 1975).

    ``U = pi u1`` uniform on (0, pi), ``E = -log u2``;
    ``W = sin(a U) / sin(U)^(1/a) * (sin((1 - a) U) / E)^((1 - a)/a)``, 0 < a < 1; ``a = 1`` gives W = 1.
    """
    if a == 1.0:
        return jnp.ones_like(u1)
    U = jnp.pi * u1
    sinU = jnp.sin(jnp.pi * jnp.minimum(u1, 1.0 - u1))  # = sin U > 0 (rounded pi could make sin U < 0)
    E = -jnp.log(u2)
    return jnp.sin(a * U) / sinU ** (1.0 / a) * (jnp.sin((1.0 - a) * U) / E) ** ((1.0 - a) / a)


def _open_uniforms(key, shape, dtype):
    """Two independent uniform arrays on the open interval (0, 1) (no endpoint: log and 1/cos stay finite)."""
    tiny = jnp.finfo(dtype).tiny
    k1, k2 = jax.random.split(key)
    return (jax.random.uniform(k1, shape, dtype, minval=tiny, maxval=1.0),
            jax.random.uniform(k2, shape, dtype, minval=tiny, maxval=1.0))


def sample_stable(key, alpha: float, shape, *, scale: float = 1.0, dtype=jnp.float32):
    """Symmetric alpha-stable samples of ``shape``, equal in law to ``levy_stable(alpha, 0, scale=scale)``.

    key: JAX key; alpha in (0, 2] (alpha = 2: N(0, 2 scale^2)); scale > 0. -> array of ``shape``.
    Chambers--Mallows--Stuck; see :func:`stable_from_uniforms`.
    """
    v.key("key", key)
    alpha = _alpha("alpha (stability index)", alpha, 0.0, 2.0, True)
    scale = v.positive_float("scale", scale)
    u1, u2 = _open_uniforms(key, tuple(shape), dtype)
    return scale * stable_from_uniforms(alpha, u1, u2)


def sample_positive_stable(key, alpha: float, shape, *, dtype=jnp.float32):
    """Positive alpha-stable samples W of ``shape`` with Laplace transform ``E[exp(-s W)] = exp(-s^alpha)``.

    alpha in (0, 1] (alpha = 1: W = 1). Equal in law to scipy's
    ``levy_stable(alpha, 1, scale=cos(pi alpha / 2)^(1/alpha))`` (S1 parametrisation). For an elliptical
    beta-stable vector use ``alpha = beta / 2`` and ``sqrt(W) * Gaussian`` (module docstring).
    """
    v.key("key", key)
    alpha = _alpha("alpha (stability index of W)", alpha, 0.0, 1.0, True)
    u1, u2 = _open_uniforms(key, tuple(shape), dtype)
    return positive_stable_from_uniforms(alpha, u1, u2)


def positive_stable_scipy_scale(alpha: float) -> float:
    """scipy S1 scale ``cos(pi alpha/2)^(1/alpha)`` of the W of :func:`sample_positive_stable` (alpha < 1)."""
    alpha = _alpha("alpha (stability index of W)", alpha, 0.0, 1.0, False)
    return float(np.cos(np.pi * alpha / 2) ** (1.0 / alpha))


# ----------------------------------------------------------------------------------------------
# Tail-index estimators


class HillResult(NamedTuple):
    """Hill estimate of a tail index (:func:`hill_estimator`).

    alpha    float  tail index estimate 1/H, H = mean_{i<=k} log(|x|_(i) / |x|_(k+1)) (descending order)
    se       float  asymptotic standard error alpha / sqrt(k)
    ci_low   float  lower end of the exact 95 % interval under a Pareto tail above |x|_(k+1)
    ci_high  float  upper end of that interval
    k        int    number of upper order statistics used
    """

    alpha: float
    se: float
    ci_low: float
    ci_high: float
    k: int


class BlockResult(NamedTuple):
    """Block-sum tail-index estimate (:func:`block_tail_index`).

    alpha  float  1 / xi, with xi = (mean log|block sums| - mean log|x|) / log k1
    se     float  delta-method standard error alpha^2 se(xi), se(xi) from the spread over blocks
    xi     float  the estimate of 1/alpha (what the estimator measures linearly)
    xi_se  float  its standard error (blocks are independent: exact up to the CLT)
    k1     int    block length
    k2     int    number of blocks (k1 * k2 samples used; the remainder of the sample is dropped)
    """

    alpha: float
    se: float
    xi: float
    xi_se: float
    k1: int
    k2: int


class TailIndexResult(NamedTuple):
    """Per-coordinate tail indices (:func:`tail_index`).

    alpha        (d,)   per-coordinate estimates (d = number of coordinates, in C order of the non-sample axes)
    se           (d,)   their standard errors
    combined     float  1 / mean_j(1/alpha_j): the mean tail exponent xi = 1/alpha turned back into an index
    combined_se  float  its standard error, valid for any dependence between coordinates (see tail_index)
    method       str    "hill" or "block"
    """

    alpha: np.ndarray
    se: np.ndarray
    combined: float
    combined_se: float
    method: str


class KestenResult(NamedTuple):
    """Kesten tail index of ``theta' = (1 - eta a) theta + eta b`` (:func:`kesten_index`).

    kappa     float  the root kappa > 0 of E|1 - eta a|^kappa = 1 (inf if |1 - eta a| <= 1 almost surely)
    se        float  its delta-method standard error when ``a`` is a sample (0 for an exact law)
    lyapunov  float  E log|1 - eta a| (< 0: the recursion has a stationary law)
    """

    kappa: float
    se: float
    lyapunov: float


def _abs_sorted(name, x, k_min):
    """|x| flattened to float64, sorted descending; at least ``k_min`` entries."""
    arr = np.abs(np.asarray(v.array(name, x, nonempty=True), np.float64)).ravel()
    if arr.size < k_min:
        v.fail(f"{name} must have at least {k_min} entries", x)
    return -np.sort(-arr)


def hill_k(x) -> int:
    """Default number of upper order statistics for :func:`hill_estimator`: ``k = ceil(sqrt(n))``.

    x: array of any shape (n = x.size >= 3) -> int in [2, n - 1]. The square-root rule balances the
    variance alpha^2/k of the Hill estimator against the bias of a tail that is only asymptotically Pareto
    (for an alpha-stable law the relative bias decays like (k/n)^1 ... (k/n)^2 depending on alpha); chapter
    5 measures its bias and coverage at several alpha.
    """
    arr = v.array("x", x, nonempty=True)
    n = int(np.size(arr))
    if n < 3:
        v.fail("x must have at least 3 entries", x)
    return int(min(max(int(np.ceil(np.sqrt(n))), 2), n - 1))


def hill_estimator(x, k: int | None = None) -> HillResult:
    """Hill estimate of the tail index of ``|x|`` from its ``k`` largest values.

    x: array of any shape (flattened; only |x| matters), finite; k: 1 <= k <= x.size - 1, or None for
    :func:`hill_k`. With |x|_(1) >= ... >= |x|_(n), ``H = (1/k) sum_{i<=k} log(|x|_(i) / |x|_(k+1))`` and
    ``alpha = 1/H`` (Hill 1975), ``se = alpha / sqrt(k)`` (asymptotic normality, no second-order bias).
    Interval: if |x| is exactly Pareto above |x|_(k+1), ``2 k alpha H`` is chi-square with 2k degrees of
    freedom, so ``[chi2_{0.025}(2k), chi2_{0.975}(2k)] / (2 k H)`` is an exact 95 % interval; it ignores the
    bias of a tail that is only asymptotically Pareto (chapter 5 measures the coverage).
    -> :class:`HillResult`.
    """
    from scipy import stats as sps

    xs = _abs_sorted("x", x, 2)
    n = xs.size
    if k is None:
        k = hill_k(xs)
    k = v.count("k (number of upper order statistics)", k, 1, n - 1)
    if not xs[k] > 0:
        v.fail("x must have more than k nonzero entries (|x|_(k+1) > 0)", x)
    H = float(np.mean(np.log(xs[:k])) - np.log(xs[k]))
    if not H > 0:
        v.fail("x must not have its k+1 largest |values| all equal", x)
    alpha = 1.0 / H
    lo, hi = sps.chi2.ppf([0.025, 0.975], 2 * k) / (2 * k * H)
    return HillResult(alpha, alpha / np.sqrt(k), float(lo), float(hi), k)


def block_tail_index(x, k1: int | None = None) -> BlockResult:
    """Block-sum tail-index estimator of Mohammadi, Mohammadpour & Ogata (2015).

    x: array of any shape (flattened in C order), assumed i.i.d. symmetric alpha-stable (centred);
    k1: block length >= 2, or None for ``floor(sqrt(n))``; at least 2 blocks. With ``K2 = n // k1`` blocks
    ``Y_i = sum_{j<k1} x_{i k1 + j}`` (the last ``n - k1 K2`` entries are dropped) the estimator is
    ``1/alpha = (mean_i log|Y_i| - mean log|x|) / log k1``: exact in expectation for a stable law since
    ``Y =d k1^(1/alpha) x``. Because ``mean log|x|`` is the mean over blocks of the block means, the
    estimate is the mean of the i.i.d. per-block terms ``z_i = log|Y_i| - mean_{j in block i} log|x_j|``,
    whose spread gives ``xi_se``; ``se = alpha^2 xi_se`` (delta method). For a finite-variance non-stable
    sample (variance s^2) the block sums are nearly Gaussian, so 1/alpha tends to
    ``(log(s sqrt(k1)) + E log|N(0,1)| - E log|x|) / log k1``: to 1/2 only like 1/log k1, whatever the
    tails (a Student-t_3 sample of 250 000 reads alpha ~ 1.8; tests/test_stable.py).
    -> :class:`BlockResult`.
    """
    arr = np.asarray(v.array("x", x, nonempty=True), np.float64).ravel()
    n = arr.size
    if n < 4:
        v.fail("x must have at least 4 entries (2 blocks of 2)", x)
    if k1 is None:
        k1 = int(np.floor(np.sqrt(n)))
    k1 = v.count("k1 (block length)", k1, 2, n // 2)
    k2 = n // k1
    blocks = arr[: k1 * k2].reshape(k2, k1)
    absx = np.abs(blocks)
    sums = np.abs(blocks.sum(axis=1))
    if np.any(absx == 0) or np.any(sums == 0):
        v.fail("x and its block sums must be nonzero (log|x| is used)", x)
    z = (np.log(sums) - np.log(absx).mean(axis=1)) / np.log(k1)
    xi = float(z.mean())
    xi_se = float(z.std(ddof=1) / np.sqrt(k2))
    alpha = 1.0 / xi
    return BlockResult(alpha, alpha**2 * xi_se, xi, xi_se, k1, k2)


def tail_index(x, axis: int = 0, method: str = "hill", k: int | None = None) -> TailIndexResult:
    """Tail index of each coordinate of a sample, never pooling coordinates of different scales.

    x: array with the samples along ``axis`` (n >= 4 of them) and coordinates on the other axes (flattened
    in C order to d coordinates); method: "hill" (:func:`hill_estimator`, ``k`` upper order statistics
    per coordinate, default :func:`hill_k` of n) or "block" (:func:`block_tail_index`, ``k`` = block
    length, default floor(sqrt(n))). Both estimators are scale invariant, so each coordinate is judged
    on its own scale; pooling coordinates of different scales makes the largest-scale coordinates supply
    the top order statistics and biases a pooled estimate (chapter 5).

    Combined estimate: ``1/mean_j(1/alpha_j)`` (the mean tail exponent). Its standard error: for "block",
    from the spread over blocks of the coordinate-averaged block terms (blocks are independent, so this
    holds for any dependence between coordinates); for "hill", the bound ``mean_j se(1/alpha_j)`` on the
    standard deviation of a mean (Minkowski), valid for any dependence and tight for perfectly dependent
    coordinates (conservative for independent ones). Delta method back to alpha.
    -> :class:`TailIndexResult` with per-coordinate arrays of shape (d,).
    """
    arr = np.asarray(v.array("x", x, nonempty=True), np.float64)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -arr.ndim <= axis < arr.ndim:
        v.fail(f"axis must be an integer in [-{arr.ndim}, {arr.ndim - 1}]", axis)
    method = v.one_of("method", method, {"hill", "block"})
    arr = np.moveaxis(arr, int(axis), 0)
    n = arr.shape[0]
    if n < 4:
        v.fail("x must have at least 4 samples along axis", x)
    cols = arr.reshape(n, -1)
    d = cols.shape[1]
    if method == "hill":
        res = [hill_estimator(cols[:, j], k) for j in range(d)]
        alpha = np.array([r.alpha for r in res])
        se = np.array([r.se for r in res])
        xi = 1.0 / alpha
        xi_se_j = xi / np.sqrt(np.array([r.k for r in res]))
        xi_bar = float(xi.mean())
        xi_bar_se = float(xi_se_j.mean())
    else:
        res = [block_tail_index(cols[:, j], k) for j in range(d)]
        alpha = np.array([r.alpha for r in res])
        se = np.array([r.se for r in res])
        k1, k2 = res[0].k1, res[0].k2
        blocks = cols[: k1 * k2].reshape(k2, k1, d)
        z = (np.log(np.abs(blocks.sum(axis=1))) - np.log(np.abs(blocks)).mean(axis=1)) / np.log(k1)  # (k2, d)
        zbar = z.mean(axis=1)
        xi_bar = float(zbar.mean())
        xi_bar_se = float(zbar.std(ddof=1) / np.sqrt(k2))
    combined = 1.0 / xi_bar
    return TailIndexResult(alpha, se, combined, combined**2 * xi_bar_se, method)


def _kesten_moment(eta, a=None, law=None):
    """log E|1 - eta a|^kappa as a function of kappa (sample mean or quadrature), and E log|1 - eta a|."""
    from scipy import integrate

    if a is not None:
        la = np.log(np.abs(1.0 - eta * a))

        def logm(kappa):
            t = kappa * la
            m = t.max()
            return float(m + np.log(np.mean(np.exp(t - m))))

        return logm, float(la.mean()), la
    lo, hi = law.support()
    pts = [p for p in (1.0 / eta,) if lo < p < hi]  # the kink of |1 - eta a|

    edges = [lo, *pts, hi]

    def expect(f):
        return sum(integrate.quad(f, edges[i], edges[i + 1], limit=200)[0] for i in range(len(edges) - 1))

    def logm(kappa):  # integrand exp(kappa log|1 - eta s| + log p(s)), no overflow of |1 - eta s|^kappa alone
        return float(np.log(expect(lambda s: np.exp(kappa * np.log(abs(1.0 - eta * s) + 1e-300) + law.logpdf(s)))))

    lyap = expect(lambda s: np.log(abs(1.0 - eta * s) + 1e-300) * law.pdf(s))
    return logm, float(lyap), None


def kesten_index(a, eta: float, *, kappa_max: float = 200.0) -> KestenResult:
    """Kesten tail index of the scalar SGD recursion ``theta' = (1 - eta a) theta + eta b``.

    a: either a 1-D sample of the random curvature ``a`` (e.g. the batch mean of x^2 for 1-D linear
    regression; the expectation is then the sample mean) or a frozen scipy distribution of ``a`` (exact
    expectation by quadrature); eta > 0. If ``E log|1 - eta a| < 0`` and ``P(|1 - eta a| > 1) > 0`` the
    stationary law has ``P(|theta| > x) ~ c x^(-kappa)`` with kappa > 0 the root of
    ``E|1 - eta a|^kappa = 1`` (Kesten 1973; Goldie 1991; for b with enough moments). ``kappa = inf`` when
    ``|1 - eta a| <= 1`` almost surely. The standard error (sample input) is the delta method applied to
    ``mean(|1 - eta a|^kappa) = 1``. kappa_max bounds the root search. -> :class:`KestenResult`.
    Raises ValueError if ``E log|1 - eta a| >= 0`` (no stationary law).
    """
    from scipy import optimize

    eta = v.positive_float("eta", eta)
    kappa_max = v.positive_float("kappa_max", kappa_max)
    if hasattr(a, "pdf") and hasattr(a, "support"):
        logm, lyap, la = _kesten_moment(eta, law=a)
        if np.all(np.abs(1.0 - eta * np.array(a.support())) <= 1.0):
            return KestenResult(np.inf, 0.0, lyap)
    else:
        arr = np.asarray(v.array("a (sample of the curvature)", a, ndim=1, nonempty=True), np.float64)
        if np.any(arr == 1.0 / eta):
            v.fail("a must avoid 1/eta exactly (log|1 - eta a| = -inf)", a)
        logm, lyap, la = _kesten_moment(eta, a=arr)
        if np.all(la <= 0.0):
            return KestenResult(np.inf, 0.0, lyap)
    if not lyap < 0:
        v.fail("E log|1 - eta a| must be < 0 (otherwise the recursion has no stationary law)", lyap)
    hi = min(1.0, kappa_max)
    while not logm(hi) > 0:  # log m is convex with log m(0) = 0: the root is the first sign change
        if hi >= kappa_max:
            v.fail(f"the root of E|1 - eta a|^kappa = 1 must lie below kappa_max={kappa_max:g}", kappa_max)
        hi = min(2 * hi, kappa_max)
    lo = 1e-6
    while logm(lo) >= 0:  # start just right of 0, where log m(kappa) ~ kappa * lyapunov < 0
        lo /= 10
    kappa = float(optimize.brentq(logm, lo, hi, xtol=1e-12, rtol=1e-10))
    se = 0.0
    if la is not None:
        w = np.exp(kappa * la)
        se = float(w.std(ddof=1) / np.sqrt(w.size) / abs(np.mean(w * la)))
    return KestenResult(kappa, se, lyap)
