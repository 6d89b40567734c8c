"""Fractional time and long memory (chapter 6).

* :func:`inverse_subordinator` -- ``E(t) = inf{tau : S(tau) > t}`` for the alpha-stable subordinator S
  with ``E[exp(-s S(1))] = exp(-s^alpha)``, 0 < alpha < 1 (Magdziarz & Weron 2007): S is simulated on a
  grid ``tau_k = k dtau`` with increments ``dtau^(1/alpha) W_k`` (W from
  :func:`sgdnotes.stable.sample_positive_stable`). The grid samples S exactly, so
  ``K dtau = dtau * min{k : S(tau_k) > t} = dtau * ceil(E(t) / dtau)``: E rounded *up* to the grid (bias in
  [0, dtau], about dtau/2). By default one uniform U per path is subtracted, ``E = (K - U) dtau``: the law
  of E(t) becomes the exact law averaged over each grid cell, so the bias of any smooth statistic drops to
  O(dtau^2) (increments between times stay multiples of dtau, an O(dtau) change of each increment). Moments: ``E[E(t)] = t^alpha / Gamma(1+alpha)``,
  ``E[E(t)^2] = 2 t^(2 alpha) / Gamma(1+2 alpha)``.
* :func:`subordinated_ou` -- ``Y(E(t))`` for the OU process ``dY = -lam Y dtau + sqrt(2 D) dW`` sampled
  exactly at the (increasing) operational times E(t). Its density solves the time-fractional
  Fokker--Planck equation ``C-D_t^alpha p = d/dx(lam x p) + D d^2p/dx^2`` (Caputo derivative); the mean
  relaxes as ``y0 E_alpha(-lam t^alpha)``.
* :func:`mittag_leffler` -- ``E_alpha(z) = sum_k z^k / Gamma(alpha k + 1)`` in mpmath with enough digits
  for the alternating series.
* :func:`time_fractional_fp` -- Grunwald--Letnikov (L1-type) implicit scheme for the Caputo equation
  above on a 1-D grid, finite-volume flux form with zero flux at the ends (mass conserved).
* :func:`fgn` -- exact fractional Gaussian noise (Davies--Harte circulant embedding) of Hurst index H.
* :func:`dfa_hurst` -- detrended fluctuation analysis (order 1) estimate of the Hurst exponent.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import mpmath
import numpy as np

from . import _validate as v
from .stable import sample_positive_stable


def _alpha(alpha):
    a = v.in_range("alpha", alpha, 0.0, 1.0, closed_high=True)
    if a <= 0.0:
        v.fail("alpha must be > 0", alpha)
    return a


def _times(t):
    t = np.asarray(v.array("t", t, ndim=1, nonempty=True), np.float64)
    if (t < 0).any() or (np.diff(t) < 0).any():
        v.fail("t must be >= 0 and non-decreasing", t)
    return t


def inverse_subordinator(key, alpha: float, t, n: int, *, n_grid: int = 2000, chunk: int = 512,
                         dither: bool = True):
    """n samples of the inverse alpha-stable subordinator at times t (m,) -> (n, m) float64.

    ``dtau = (t_max^alpha / Gamma(1 + alpha)) / n_grid`` (so ``E[E(t_max)]`` spans about ``n_grid`` steps).
    ``dither=True``: ``E = (K - U) dtau``, one U ~ uniform(0, 1) per path (bias O(dtau^2)); ``False``: the
    grid value ``K dtau = dtau * ceil(E / dtau)`` (bias in [0, dtau]). E(0) = 0 either way. The subordinator
    is extended chunk by chunk until it passes t_max on every path.
    """
    v.key("key", key)
    alpha = _alpha(alpha)
    t = _times(t)
    n = v.positive_int("n", n, 1, 10**7)
    n_grid = v.positive_int("n_grid", n_grid, 2, 10**7)
    chunk = v.positive_int("chunk", chunk, 1, 10**6)
    if not isinstance(dither, (bool, np.bool_)):
        v.fail("dither must be a bool", dither)
    v.memory("the subordinator chunk", (n, chunk), 8)
    t_max = float(t[-1])
    if t_max == 0.0:
        return np.zeros((n, len(t)))
    dtau = t_max**alpha / math.gamma(1.0 + alpha) / n_grid
    k_sub, k_u = jax.random.split(key)
    S0 = jnp.zeros(n)
    counts = np.zeros((n, len(t)), np.int64)
    tj = jnp.asarray(t)
    for c in range(10**4):
        S0, cnt = _sub_chunk(k_sub, c, S0, tj, dtau, alpha, chunk)
        counts += np.asarray(cnt)
        if bool(jnp.all(S0 > t_max)):
            break
    else:
        v.fail("the subordinator did not pass t_max within 10^4 chunks; t", t)
    K = counts + 1.0  # first grid index with S(tau_K) > t: K dtau = dtau * ceil(E(t) / dtau)
    if dither:
        K = K - np.asarray(jax.random.uniform(k_u, (n, 1), jnp.float64 if jax.config.jax_enable_x64 else jnp.float32))
    return np.where(t[None, :] > 0, dtau * K, 0.0)


@partial(jax.jit, static_argnums=(5, 6))
def _sub_chunk(key, c, S0, tj, dtau, alpha, chunk):
    """Extend the subordinator paths S0 (n,) by ``chunk`` steps; count grid points with S <= t per path."""
    W = sample_positive_stable(jax.random.fold_in(key, c), alpha, (S0.shape[0], chunk), dtype=S0.dtype)
    W = jnp.where(jnp.isnan(W), jnp.inf, W)  # 0 * inf at a rounded-off angle: an infinite jump
    S = S0[:, None] + jnp.cumsum(dtau ** (1.0 / alpha) * W, axis=1)
    return S[:, -1], jax.vmap(lambda s: jnp.searchsorted(s, tj, side="right"))(S)


def subordinated_ou(key, E, y0: float, lam: float, D: float):
    """``Y(E)`` (n, m) for OU ``dY = -lam Y dtau + sqrt(2 D) dW``, Y(0) = y0, at operational times E (n, m).

    E must be non-decreasing along each row; exact Gaussian transitions between consecutive E values.
    """
    v.key("key", key)
    E = np.asarray(v.array("E", E, ndim=2, nonempty=True), np.float64)
    if (E < 0).any() or (np.diff(E, axis=1) < 0).any():
        v.fail("E must be >= 0 and non-decreasing along rows", E)
    y0 = v.real("y0", y0)
    lam, D = v.positive_float("lam", lam), v.positive_float("D", D)
    dE = np.diff(np.concatenate([np.zeros((E.shape[0], 1)), E], axis=1), axis=1)
    Z = np.asarray(jax.random.normal(key, E.shape, jnp.float32), np.float64)
    a = np.exp(-lam * dE)
    s = np.sqrt(D / lam * (1.0 - a**2))
    Y = np.empty_like(E)
    y = np.full(E.shape[0], y0)
    for j in range(E.shape[1]):
        y = a[:, j] * y + s[:, j] * Z[:, j]
        Y[:, j] = y
    return Y


def mittag_leffler(alpha: float, z):
    """``E_alpha(z)`` for real z (array) and 0 < alpha <= 1, by its power series in mpmath (float64 result)."""
    alpha = _alpha(alpha)
    z = np.asarray(v.array("z", z), np.float64)
    if np.abs(z).max(initial=0.0) ** (1.0 / alpha) > 5000:
        v.fail("|z|^(1/alpha) must be <= 5000 (series cancellation)", z)
    out = np.empty(z.shape)
    for i, zi in np.ndenumerate(z):
        dps = 30 + int(abs(zi) ** (1.0 / alpha) / 2.0)  # terms peak near e^{|z|^(1/alpha)}
        with mpmath.workdps(dps):
            zm, total, k = mpmath.mpf(zi), mpmath.mpf(0), 0
            while True:
                term = zm**k / mpmath.gamma(alpha * k + 1)
                total += term
                if k > 10 and abs(term) < mpmath.mpf(10) ** (-25) * max(1, abs(total)):
                    break
                k += 1
            out[i] = float(total)
    return out


class FPGrid(NamedTuple):
    """x (M,): grid centres; t (r,): output times; p (r, M): densities at those times."""

    x: np.ndarray
    t: np.ndarray
    p: np.ndarray


def _gl_weights(alpha, K):
    """Grunwald--Letnikov weights w_j = (-1)^j binom(alpha, j), j = 0..K."""
    w = np.empty(K + 1)
    w[0] = 1.0
    for j in range(1, K + 1):
        w[j] = w[j - 1] * (1.0 - (alpha + 1.0) / j)
    return w


def time_fractional_fp(alpha: float, x, p0, drift, D: float, t_final: float, n_steps: int, n_out: int = 5):
    """Solve ``C-D_t^alpha p = -d/dx(F p) + D d^2p/dx^2`` on the uniform grid x (M,) from p0 (M,).

    drift: F at the grid centres (M,) (interpolated to the faces); zero flux at both ends. Implicit
    Grunwald--Letnikov scheme for the Caputo derivative,
    ``sum_{j=0}^k w_j (p^{k-j} - p^0) = dt^alpha L p^k`` (first order in dt), O(n_steps^2 M) history.
    Returns :class:`FPGrid` at ``n_out`` equally spaced times in (0, t_final].
    """
    alpha = _alpha(alpha)
    x = np.asarray(v.array("x", x, ndim=1, nonempty=True), np.float64)
    M = len(x)
    if M < 3 or not np.allclose(np.diff(x), x[1] - x[0]) or x[1] <= x[0]:
        v.fail("x must be an increasing uniform grid of >= 3 points", x)
    p0 = np.asarray(v.array("p0", p0, ndim=1), np.float64)
    F = np.asarray(v.array("drift", drift, ndim=1), np.float64)
    if p0.shape != (M,) or F.shape != (M,):
        v.fail(f"p0 and drift must have the grid's shape ({M},)", (p0.shape, F.shape))
    if (p0 < 0).any():
        v.fail("p0 must be >= 0", p0)
    D = v.positive_float("D", D)
    t_final = v.positive_float("t_final", t_final)
    K = v.positive_int("n_steps", n_steps, 1, 20000)
    n_out = v.positive_int("n_out", n_out, 1, K)
    h = x[1] - x[0]
    Ff = 0.5 * (F[1:] + F[:-1])  # drift at the M-1 interior faces
    Lop = np.zeros((M, M))  # L p = -(J_{i+1/2} - J_{i-1/2}) / h, J = F p - D p'
    for i in range(M - 1):  # face between i and i+1
        Jp = np.zeros(M)
        Jp[i] += 0.5 * Ff[i] + D / h
        Jp[i + 1] += 0.5 * Ff[i] - D / h
        Lop[i] -= Jp / h
        Lop[i + 1] += Jp / h
    dt = t_final / K
    w = _gl_weights(alpha, K)
    A = np.eye(M) - dt**alpha * Lop
    P = np.empty((K + 1, M))
    P[0] = p0
    out_steps = np.linspace(0, K, n_out + 1).round().astype(int)[1:]
    for k in range(1, K + 1):
        hist = w[1 : k + 1] @ (P[k - 1 :: -1][:k] - p0)  # sum_{j=1}^k w_j (p^{k-j} - p^0)
        P[k] = np.linalg.solve(A, p0 - hist)
    return FPGrid(x=x, t=out_steps * dt, p=P[out_steps])


def fgn(key, hurst: float, n_steps: int, n: int = 1):
    """Exact fractional Gaussian noise (n, n_steps), unit variance, Hurst index H in (0, 1) (Davies--Harte).

    Autocovariance ``gamma(k) = (|k+1|^{2H} - 2|k|^{2H} + |k-1|^{2H}) / 2``.
    """
    v.key("key", key)
    H = v.in_range("hurst", hurst, 0.0, 1.0)
    if not 0.0 < H < 1.0:
        v.fail("hurst must be in (0, 1)", hurst)
    N = v.positive_int("n_steps", n_steps, 2, 2**24)
    n = v.positive_int("n", n, 1, 10**6)
    v.memory("the circulant embedding", (n, 2 * N), 16)
    k = np.arange(N + 1, dtype=np.float64)
    g = 0.5 * (np.abs(k + 1) ** (2 * H) - 2 * k ** (2 * H) + np.abs(k - 1) ** (2 * H))
    c = np.concatenate([g, g[-2:0:-1]])  # circulant first row, length 2N
    lam = np.fft.fft(c).real
    lam = np.maximum(lam, 0.0)  # non-negative for fGn (Craigmile 2003); clip rounding
    Z = np.asarray(jax.random.normal(key, (2, n, 2 * N), jnp.float32), np.float64)
    W = np.fft.fft(np.sqrt(lam / (2 * N)) * (Z[0] + 1j * Z[1]), axis=1)
    return W.real[:, :N]


def dfa_hurst(x, scales=None):
    """DFA-1 Hurst estimate of a series x (N,) or rows of x (r, N) (averaged fluctuation function).

    Profile ``Y = cumsum(x - mean)``; for each scale s, non-overlapping windows, least-squares line
    removed, ``F(s)`` = RMS residual; H = slope of log F against log s. -> (H, scales, F).
    """
    x = np.asarray(v.array("x", x, nonempty=True), np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] < 32:
        v.fail("x must be (N,) or (r, N) with N >= 32", x)
    N = x.shape[1]
    if scales is None:
        scales = np.unique(np.logspace(np.log10(8), np.log10(N // 8), 10).astype(int))
    scales = np.asarray(v.array("scales", scales, ndim=1, nonempty=True))
    if (scales < 4).any() or (scales > N // 2).any():
        v.fail(f"scales must lie in [4, N/2 = {N // 2}]", scales)
    Y = np.cumsum(x - x.mean(1, keepdims=True), axis=1)
    F = []
    for s in scales.astype(int):
        m = N // s
        seg = Y[:, : m * s].reshape(x.shape[0], m, s)
        u = np.arange(s) - (s - 1) / 2
        slope = (seg * u).sum(2, keepdims=True) / (u**2).sum()
        resid = seg - seg.mean(2, keepdims=True) - slope * u
        F.append(np.sqrt((resid**2).mean()))
    F = np.array(F)
    H = np.polyfit(np.log(scales), np.log(F), 1)[0]
    return float(H), scales, F
