"""Distances between distributions given by samples (chapter 9).

The proposal (seed 002) asks which distance between the parameter distributions of SGD and of an SDE
model is tractable and relevant. This module gives the three it names, each from two samples
``x`` (n, p) ~ P and ``y`` (m, p) ~ Q (rows are samples; a 1-D array is read as p = 1):

* :func:`w2` -- the 2-Wasserstein distance between the two empirical measures (exact optimal
  transport: an assignment problem for n = m, POT's network simplex ``ot.emd2`` otherwise, whose value
  is the *squared* cost); :func:`sliced_w2` (random 1-D projections, for large samples in many
  dimensions) and :func:`gaussian_w2` (the closed form between Gaussians, the Bures metric) as references;
* :func:`mmd2` -- the unbiased estimate of the squared maximum mean discrepancy with a Gaussian kernel
  (median heuristic for the bandwidth), and :func:`mmd_test`, its permutation test;
* :func:`kl_knn` -- the k-nearest-neighbour estimate of KL(P || Q) of Wang, Kulkarni & Verdu (2009),
  with :func:`gaussian_kl` the closed form between Gaussians.

All work in float64 on the host (NumPy / SciPy / POT); randomness (permutations, projections) comes
from a JAX key, first argument.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _validate as v

_ASSIGN_MAX = 4000  # exact assignment (O(n^3)) up to this many samples per side


def _pair(x, y, min_rows: int = 1):
    """Validated float64 samples (n, p), (m, p) with the same p."""
    xs = []
    for name, a in (("x", x), ("y", y)):
        arr = v.array(f"{name} (samples, rows are points)", a)
        if arr.ndim not in (1, 2):
            v.fail(f"{name} must be (n,) or (n, p): rows are samples", a)
        arr = np.asarray(arr, np.float64)
        arr = arr[:, None] if arr.ndim == 1 else arr
        if arr.shape[0] < min_rows or arr.shape[1] < 1:
            v.fail(f"{name} must have at least {min_rows} samples (rows) and one column", a)
        xs.append(arr)
    if xs[0].shape[1] != xs[1].shape[1]:
        v.fail(f"x and y must have the same number of columns (x has {xs[0].shape[1]})", y)
    return xs


def _sqdist(a, b):
    """Squared Euclidean distances (n, m), clipped at 0 against round-off."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def w2(x, y) -> float:
    """2-Wasserstein distance between the empirical measures of x (n, p) and y (m, p) (uniform weights).

    n = m: the optimal coupling is a permutation (Birkhoff), found by ``scipy.optimize.linear_sum_assignment``
    on the squared distances; otherwise POT's exact solver ``ot.emd2`` (it returns the squared cost).
    Returns the distance itself, W2 = sqrt(min E|X - Y|^2), not its square. Sizes up to 4000 per side.
    """
    x, y = _pair(x, y)
    if max(x.shape[0], y.shape[0]) > _ASSIGN_MAX:
        v.fail(f"w2 solves exact transport (O(n^3)); use at most {_ASSIGN_MAX} samples per side or sliced_w2",
               x if x.shape[0] > _ASSIGN_MAX else y)
    C = _sqdist(x, y)
    if x.shape[0] == y.shape[0]:
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(C)
        cost = C[r, c].mean()
    else:
        import ot

        a = np.full(x.shape[0], 1.0 / x.shape[0])
        b = np.full(y.shape[0], 1.0 / y.shape[0])
        cost = float(ot.emd2(a, b, C, numItermax=10**7))
    return float(np.sqrt(max(cost, 0.0)))


def _quantiles(s, q):
    """Empirical quantile function of sorted 1-D samples s (k, J) at levels q (Q,) -> (Q, J)."""
    k = s.shape[0]
    idx = np.minimum((q * k).astype(int), k - 1)
    return s[idx]


def sliced_w2(key, x, y, n_projections: int = 200) -> float:
    """Sliced 2-Wasserstein distance: sqrt of the mean over random unit directions u of W2^2(u.x, u.y).

    key: JAX key (the directions, uniform on the sphere); x (n, p), y (m, p). Each 1-D W2 is exact
    (sorted samples; for n != m by the quantile functions on the merged grid). A lower bound of
    ``w2(x, y)``, at O(n log n) per direction.
    """
    import jax

    v.key("key", key)
    x, y = _pair(x, y)
    L = v.positive_int("n_projections", n_projections, 1, 10**5)
    p = x.shape[1]
    U = np.asarray(jax.random.normal(key, (p, L)), np.float64)
    U /= np.linalg.norm(U, axis=0, keepdims=True)
    sx, sy = np.sort(x @ U, axis=0), np.sort(y @ U, axis=0)
    if sx.shape[0] == sy.shape[0]:
        w = ((sx - sy) ** 2).mean(axis=0)
    else:  # integrate (F^-1 - G^-1)^2 over the merged breakpoints of the two step quantile functions
        q = np.unique(np.concatenate([np.arange(sx.shape[0]) / sx.shape[0], np.arange(sy.shape[0]) / sy.shape[0], [1.0]]))
        dq = np.diff(q)
        w = (dq[:, None] * (_quantiles(sx, q[:-1]) - _quantiles(sy, q[:-1])) ** 2).sum(axis=0)
    return float(np.sqrt(w.mean()))


def _gauss_args(m1, S1, m2, S2):
    m1 = np.atleast_1d(np.asarray(v.array("m1 (mean)", m1), np.float64))
    m2 = np.atleast_1d(np.asarray(v.array("m2 (mean)", m2), np.float64))
    p = m1.shape[0]
    if m1.shape != (p,) or m2.shape != (p,):
        v.fail(f"m1 and m2 must be vectors of the same length ({p})", m2)
    S1 = np.atleast_2d(v.symmetric_psd("S1 (covariance)", S1))
    S2 = np.atleast_2d(v.symmetric_psd("S2 (covariance)", S2))
    if S1.shape != (p, p) or S2.shape != (p, p):
        v.fail(f"S1 and S2 must be ({p}, {p}) covariances", S2)
    return m1, S1, m2, S2


def _psd_sqrt(S):
    w, U = np.linalg.eigh((S + S.T) / 2)
    return (U * np.sqrt(np.clip(w, 0.0, None))) @ U.T


def gaussian_w2(m1, S1, m2, S2) -> float:
    """W2 between N(m1, S1) and N(m2, S2) in closed form (the Bures metric on the covariances):

    W2^2 = |m1 - m2|^2 + tr S1 + tr S2 - 2 tr (S2^(1/2) S1 S2^(1/2))^(1/2). m (p,), S (p, p) PSD.
    """
    m1, S1, m2, S2 = _gauss_args(m1, S1, m2, S2)
    r2 = _psd_sqrt(S2)
    cross = np.trace(_psd_sqrt(r2 @ S1 @ r2))
    return float(np.sqrt(max(np.sum((m1 - m2) ** 2) + np.trace(S1) + np.trace(S2) - 2 * cross, 0.0)))


def gaussian_kl(m1, S1, m2, S2) -> float:
    """KL(N(m1, S1) || N(m2, S2)) = (tr(S2^-1 S1) + (m2-m1)^T S2^-1 (m2-m1) - p + ln det S2/det S1) / 2.

    m (p,), S (p, p) positive definite.
    """
    m1, S1, m2, S2 = _gauss_args(m1, S1, m2, S2)
    for name, S in (("S1", S1), ("S2", S2)):
        if np.linalg.eigvalsh(S).min() <= 0:
            v.fail(f"{name} must be positive definite for the Gaussian KL", S)
    p = m1.shape[0]
    dm = m2 - m1
    S2i = np.linalg.inv(S2)
    ld1, ld2 = np.linalg.slogdet(S1)[1], np.linalg.slogdet(S2)[1]
    return float(0.5 * (np.trace(S2i @ S1) + dm @ S2i @ dm - p + ld2 - ld1))


def median_bandwidth(x, y) -> float:
    """Median heuristic: the median distance between distinct points of the pooled sample (> 0)."""
    x, y = _pair(x, y)
    z = np.concatenate([x, y])
    D = np.sqrt(_sqdist(z, z))
    iu = np.triu_indices(z.shape[0], 1)
    h = float(np.median(D[iu]))
    if not h > 0:
        v.fail("the median heuristic needs distinct points (median pairwise distance is 0)", x)
    return h


def _mmd2_from_gram(K, n):
    """Unbiased MMD^2 from the pooled Gram matrix K ((n+m), (n+m)), first n rows from x."""
    m = K.shape[0] - n
    Kxx, Kyy, Kxy = K[:n, :n], K[n:, n:], K[:n, n:]
    sxx = (Kxx.sum() - np.trace(Kxx)) / (n * (n - 1))
    syy = (Kyy.sum() - np.trace(Kyy)) / (m * (m - 1))
    return sxx + syy - 2.0 * Kxy.mean()


def _gram(x, y, bandwidth):
    z = np.concatenate([x, y])
    h = median_bandwidth(x, y) if bandwidth is None else v.positive_float("bandwidth", bandwidth)
    return np.exp(-_sqdist(z, z) / (2.0 * h * h)), h


def mmd2(x, y, bandwidth=None) -> float:
    """Unbiased estimate of MMD^2(P, Q) with the Gaussian kernel exp(-|a - b|^2 / (2 h^2)).

    x (n, p), y (m, p), n, m >= 2; bandwidth h > 0, or None for the median heuristic
    (:func:`median_bandwidth` of the pooled sample). The U-statistic of Gretton et al. (2012): it can be
    negative, and has mean 0 when P = Q.
    """
    x, y = _pair(x, y, min_rows=2)
    K, _ = _gram(x, y, bandwidth)
    return float(_mmd2_from_gram(K, x.shape[0]))


class MMDTest(NamedTuple):
    """Result of :func:`mmd_test`."""

    mmd2: float  # unbiased MMD^2 of the observed split
    p_value: float  # (1 + #{permuted >= observed}) / (1 + n_permutations)
    bandwidth: float  # the kernel bandwidth used (fixed across permutations)


def mmd_test(key, x, y, bandwidth=None, n_permutations: int = 500) -> MMDTest:
    """Permutation test of P = Q with the unbiased MMD^2 statistic (bandwidth fixed from the pooled sample).

    key: JAX key (the permutations); x (n, p), y (m, p); returns :class:`MMDTest`.
    """
    import jax

    v.key("key", key)
    x, y = _pair(x, y, min_rows=2)
    R = v.positive_int("n_permutations", n_permutations, 1, 10**5)
    K, h = _gram(x, y, bandwidth)
    n, N = x.shape[0], K.shape[0]
    obs = _mmd2_from_gram(K, n)
    perms = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, N))(jax.random.split(key, R)))
    null = np.array([_mmd2_from_gram(K[np.ix_(pi, pi)], n) for pi in perms])
    return MMDTest(float(obs), float((1 + np.sum(null >= obs)) / (1 + R)), h)


def kl_knn(x, y, k: int = 1) -> float:
    """k-nearest-neighbour estimate of KL(P || Q) from x (n, p) ~ P and y (m, p) ~ Q (Wang, Kulkarni & Verdu 2009):

    D = (p / n) sum_i ln(nu_k(i) / rho_k(i)) + ln(m / (n - 1)),

    rho_k(i) the distance from x_i to its k-th nearest neighbour among the other x, nu_k(i) to its k-th
    nearest neighbour in y. Consistent for densities; needs n > k, m >= k and distinct points.
    """
    from scipy.spatial import cKDTree

    x, y = _pair(x, y)
    k = v.positive_int("k (neighbour order)", k, 1)
    n, m, p = x.shape[0], y.shape[0], x.shape[1]
    if n <= k or m < k:
        v.fail(f"kl_knn needs more than k = {k} samples in x and at least k in y", (n, m))
    rho = cKDTree(x).query(x, k=k + 1)[0][:, k]  # the first neighbour is the point itself
    nu = cKDTree(y).query(x, k=k)[0]
    nu = nu if k == 1 else nu[:, k - 1]
    if np.any(rho <= 0) or np.any(nu <= 0):
        v.fail("kl_knn needs distinct points (a nearest-neighbour distance is 0: repeated rows)", x)
    return float(p * np.mean(np.log(nu / rho)) + np.log(m / (n - 1)))
