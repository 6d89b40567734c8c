"""Closed forms for the limiting dynamics of momentum SGD on a quadratic loss (chapter 8).

Model: heavy-ball SGD with learning rate eta, momentum beta, batch size S and weight decay lam on a
quadratic loss with Hessian H (eigenpairs rho_l, q_l), minimiser mu and constant gradient-noise
covariance Sigma (per-sample; the batch mean has covariance Sigma / S).

Velocity conventions. The paper (Kunin et al.) writes ``v_{k+1} = beta v_k - g - lam theta_k``,
``theta_{k+1} = theta_k + eta v_{k+1}``; ``sgdnotes.sgd.run_sgd`` stores the displacement
``delta_{k+1} = theta_{k+1} - theta_k = eta v_{k+1}``. Continuous time is ``t = eta k`` (DESIGN §5).
Functions marked "paper units" use v; functions marked "discrete" use (x = theta - mu, delta).

Per eigen-direction q_l the noise enters only through ``s_l = q_l^T Sigma q_l`` (``sigma^2 rho_l``
under the paper's Assumption 5, Sigma = sigma^2 H); traces of all second moments depend on Sigma only
through these numbers, because the linear dynamics decouple across the eigenbasis of H.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg

from . import _validate as v


class OUModel(NamedTuple):
    """The phase-space OU process ``dz = -A (z - m) dt + sqrt(2 D / kappa) dW``, z = (theta, v).

    A (2d, 2d) drift, D (2d, 2d) diffusion, kappa = S (1 - beta^2), m = (mu, 0) (2d,).
    """

    A: np.ndarray
    D: np.ndarray
    kappa: float
    mean: np.ndarray


def _hyper(eta, beta, batch_size=None, weight_decay=0.0):
    eta = v.positive_float("eta (learning rate)", eta)
    beta = v.in_range("momentum beta", beta, 0.0, 1.0)
    weight_decay = v.real("weight_decay", weight_decay, minimum=0.0)
    S = None if batch_size is None else v.positive_int("batch_size", batch_size)
    return eta, beta, S, float(weight_decay)


def _vals(name, x, ndim=None):
    """A finite, non-empty real array (float64)."""
    return np.asarray(v.array(name, x, ndim=ndim, nonempty=True), dtype=float)


def _curvatures(rho, lam, strict=False):
    """Eigenvalues rho (...) of H with rho + lam >= 0 (> 0 if ``strict``): a convex quadratic."""
    rho = _vals("rho (Hessian eigenvalues)", rho)
    if np.any(rho + lam < 0) or (strict and np.any(rho + lam <= 0)):
        v.fail(f"rho + weight_decay must be {'> 0' if strict else '>= 0'} (a convex quadratic)", rho)
    return rho


def _noise(s):
    """Noise variances s = q^T Sigma q (...) >= 0."""
    s = _vals("s (noise variances q^T Sigma q)", s)
    if np.any(s < -1e-8 * max(float(np.abs(s).max()), 1e-300)):  # round-off below 0 is tolerated
        v.fail("s (noise variances q^T Sigma q) must be >= 0", s)
    return s


def _broadcast(**arrays):
    try:
        return np.broadcast_arrays(*arrays.values())
    except ValueError:
        v.fail(f"{', '.join(arrays)} must broadcast together; shapes", tuple(np.shape(a) for a in arrays.values()))


def _steps(k, minimum):
    """Lags k (K,): integers >= minimum (integral floats accepted, never truncated)."""
    arr = _vals("k (steps)", k, ndim=1)
    if not np.all(arr == np.round(arr)) or arr.min() < minimum:
        v.fail(f"k must be a 1-D array of integer step counts >= {minimum}", k)
    v.memory("the lags", (int(arr.max()) + 1,), 8 * 8)
    return arr.astype(int)


def ou_model(H, Sigma, eta, beta, batch_size, weight_decay=0.0, mu=None) -> OUModel:
    """Drift and diffusion of the underdamped Langevin model of momentum SGD on a quadratic (paper units).

    ``A = [[0, -I], [2/(eta(1+beta)) (H + lam I), 2(1-beta)/(eta(1+beta)) I]]``,
    ``D = [[0, 0], [0, 2(1-beta)/(eta(1+beta)) Sigma]]``, ``kappa = S (1 - beta^2)``.
    H, Sigma (d, d); mu (d,) the minimiser (zeros if None). Chapter 8, eq. (4).
    """
    H = v.symmetric_psd("H (Hessian)", H)
    Sigma = v.symmetric_psd("Sigma (noise covariance)", Sigma)
    if H.shape != Sigma.shape:
        v.fail(f"H and Sigma must have the same shape; H is {H.shape}, Sigma", Sigma)
    eta, beta, S, lam = _hyper(eta, beta, batch_size, weight_decay)
    d = H.shape[0]
    I, Z = np.eye(d), np.zeros((d, d))
    c = 2.0 / (eta * (1.0 + beta))
    A = np.block([[Z, -I], [c * (H + lam * I), c * (1.0 - beta) * I]])
    D = np.block([[Z, Z], [Z, c * (1.0 - beta) * Sigma]])
    mu = np.zeros(d) if mu is None else v.array("mu", mu, shape=(d,))
    return OUModel(A, D, S * (1.0 - beta**2), np.concatenate([mu, np.zeros(d)]))


def ou_decomposition(H, sigma2, eta, beta, weight_decay=0.0):
    """The paper's explicit (Q, U) with ``A = (D + Q) U`` for Sigma = sigma2 H (H positive definite).

    ``Q = [[0, -sigma2 H], [sigma2 H, 0]]``,
    ``U = diag(2/(eta(1+beta) sigma2) H^{-1}(H + lam I), H^{-1}/sigma2)`` (eq. (43)); both (2d, 2d).
    """
    H = v.symmetric_psd("H (Hessian)", H)
    if np.linalg.eigvalsh(H).min() <= 0:
        v.fail("H must be positive definite (restrict to its column space)", H)
    sigma2 = v.positive_float("sigma2", sigma2)
    eta, beta, _, lam = _hyper(eta, beta, None, weight_decay)
    d = H.shape[0]
    Hi, Z = np.linalg.inv(H), np.zeros((d, d))
    Q = np.block([[Z, -sigma2 * H], [sigma2 * H, Z]])
    U = np.block([[2.0 / (eta * (1 + beta) * sigma2) * Hi @ (H + lam * np.eye(d)), Z], [Z, Hi / sigma2]])
    return Q, (U + U.T) / 2


def oscillator_rates(rho, eta, beta, weight_decay=0.0):
    """(gamma, omega) of mode rho: ``x'' + 2 gamma x' + omega^2 x = 0`` per unit time t = eta k.

    gamma = (1-beta)/(eta(1+beta)), omega = sqrt(2 (rho+lam)/(eta(1+beta))); rho (...) -> each (...).
    """
    eta, beta, _, lam = _hyper(eta, beta, None, weight_decay)
    rho = _curvatures(rho, lam)
    gamma = np.full_like(rho, (1.0 - beta) / (eta * (1.0 + beta)))
    return gamma, np.sqrt(2.0 * (rho + lam) / (eta * (1.0 + beta)))


def damping_ratio(rho, eta, beta, weight_decay=0.0):
    """zeta_l = gamma/omega_l = (1-beta)/sqrt(2 eta (1+beta)(rho_l+lam)): <1 under-, >1 over-damped."""
    gamma, omega = oscillator_rates(rho, eta, beta, weight_decay)
    with np.errstate(divide="ignore"):
        return gamma / omega


def mode_propagator(gamma, omega, t):
    """``exp(-S t)`` (..., 2, 2) for ``S = [[0, -1], [omega^2, 2 gamma]]`` (one mode, paper units).

    All three damping regimes from one formula with ``r = sqrt(gamma^2 - omega^2)`` (complex when
    underdamped): with ``c = (e^{-(gamma+r)t} + e^{-(gamma-r)t})/2`` and ``s = (e^{-(gamma-r)t} -
    e^{-(gamma+r)t})/(2r)`` (``t e^{-gamma t}`` at r = 0), ``exp(-S t) = [[c + gamma s, s],
    [-omega^2 s, c - gamma s]]``. gamma, omega, t broadcast together.
    """
    gamma, omega, t = _broadcast(gamma=_vals("gamma", gamma), omega=_vals("omega", omega), t=_vals("t", t))
    r = np.sqrt(gamma**2 - omega**2 + 0j)
    ep, em = np.exp(-(gamma + r) * t), np.exp(-(gamma - r) * t)
    c = np.real((ep + em) / 2)
    small = np.abs(r * t) < 1e-6
    s = np.where(small, t * np.exp(-gamma * t), np.real((em - ep) / np.where(small, 1.0, 2 * r)))
    out = np.empty(gamma.shape + (2, 2))
    out[..., 0, 0], out[..., 0, 1] = c + gamma * s, s
    out[..., 1, 0], out[..., 1, 1] = -(omega**2) * s, c - gamma * s
    return out


def oscillator(a0, b0, rho, eta, beta, t, weight_decay=0.0):
    """The paper's a_l(t), b_l(t): mean of q_l^T(theta - mu) and q_l^T v (paper units) at time t.

    a0, b0, rho (L,) initial coordinates and eigenvalues; t (T,) times (t = eta k). Returns two (T, L).
    """
    rho = _vals("rho", rho, ndim=1)
    a0, b0 = _vals("a0", a0, ndim=1), _vals("b0", b0, ndim=1)
    if a0.shape != rho.shape or b0.shape != rho.shape:
        v.fail(f"a0, b0 and rho must have the same shape (L,); rho has {rho.shape}, (a0, b0)", (a0.shape, b0.shape))
    t = _vals("t", t, ndim=1)
    gamma, omega = oscillator_rates(rho, eta, beta, weight_decay)
    P = mode_propagator(gamma[None, :], omega[None, :], t[:, None])  # (T, L, 2, 2)
    return P[..., 0, 0] * a0 + P[..., 0, 1] * b0, P[..., 1, 0] * a0 + P[..., 1, 1] * b0


def stationary_variances(rho, s, eta, beta, batch_size, weight_decay=0.0):
    """Continuous-model stationary variances per mode (paper units), from ``kappa^{-1} U^{-1}``.

    ``Var(q^T theta) = eta s / (2 S (1-beta)(rho+lam))``, ``Var(q^T v) = s / (S (1-beta^2))``,
    position and velocity uncorrelated. rho, s = q^T Sigma q broadcast -> (var_theta, var_v).
    """
    eta, beta, S, lam = _hyper(eta, beta, batch_size, weight_decay)
    rho, s = _broadcast(rho=_curvatures(rho, lam, strict=True), s=_noise(s))
    return eta * s / (2 * S * (1 - beta) * (rho + lam)), s / (S * (1 - beta**2)) + 0 * rho


def momentum_speed(eta, beta, batch_size, trace_sigma2_H):
    """Stationary ``E||theta_{k+1} - theta_k||^2 = eta^2 tr(Sigma) / (S (1 - beta^2))`` (continuous model).

    trace_sigma2_H = tr(sigma^2 H) under Assumption 5 (in general tr Sigma: the identity holds for any
    constant Sigma, chapter 8). Scalars or broadcasting arrays.
    """
    eta, beta, S, _ = _hyper(eta, beta, batch_size)
    tr = _vals("trace_sigma2_H", trace_sigma2_H)
    if np.any(tr < 0):
        v.fail("trace_sigma2_H (a trace of a covariance) must be >= 0", trace_sigma2_H)
    return eta**2 * tr / (S * (1.0 - beta**2))


def velocity_correlation(k, rho, eta, beta, weight_decay=0.0):
    """C_l(k): stationary corr(q^T v_i, q^T v_{i+k}) of the continuous model at lag t = eta k.

    k (K,) steps, rho (L,) -> (K, L). (The paper writes the lag as k itself; the lag in time is eta k.)
    """
    k = _vals("k (lags)", k, ndim=1)
    rho = _vals("rho", rho, ndim=1)
    gamma, omega = oscillator_rates(rho, eta, beta, weight_decay)
    eta = v.positive_float("eta (learning rate)", eta)
    t = eta * k[:, None]
    return mode_propagator(gamma[None, :], omega[None, :], t)[..., 1, 1]


def global_displacement(k, rho, s, eta, beta, batch_size, weight_decay=0.0):
    """Stationary ``E||theta_{i+k} - theta_i||^2`` from the paper's sum over lags (eq. (13)).

    ``sum_l eta^2 Var(v_l) [k + 2 sum_{tau=1}^{k-1} (k - tau) C_l(tau)]`` with C_l at lag eta tau.
    k (K,) positive ints, rho, s (L,) -> (K,).
    """
    k = _steps(k, 1)
    rho, s = _vals("rho", rho, ndim=1), _vals("s", s, ndim=1)
    if rho.shape != s.shape:
        v.fail(f"rho and s must have the same shape (L,); rho has {rho.shape}, s", s)
    _, var_v = stationary_variances(rho, s, eta, beta, batch_size, weight_decay)
    kmax = int(k.max())
    C = velocity_correlation(np.arange(1, kmax), rho, eta, beta, weight_decay) if kmax > 1 else np.zeros((0, len(var_v)))
    cw = np.concatenate([np.zeros((1, C.shape[1])), np.cumsum(C, 0)])  # sum_{tau<K} C(tau)
    tw = np.concatenate([np.zeros((1, C.shape[1])), np.cumsum(np.arange(1, kmax)[:, None] * C, 0)])
    out = []
    for kk in k:
        acc = kk + 2 * (kk * cw[kk - 1] - tw[kk - 1])
        out.append(eta**2 * np.sum(var_v * acc))
    return np.array(out)


# --------------------------------------------------------------------------------------------------
# Exact discrete time (momentum SGD itself), coordinates x = q^T(theta - mu), u = q^T delta


def discrete_transition(rho, eta, beta, weight_decay=0.0):
    """Per-mode transition ``(x, u)_{k+1} = M (x, u)_k - (e, e)`` of momentum SGD: M (..., 2, 2).

    ``M = [[1 - h, beta], [-h, beta]]`` with ``h = eta (rho + lam)``; e is the mode's gradient noise
    times eta (variance ``eta^2 s / S``).
    """
    eta, beta, _, lam = _hyper(eta, beta, None, weight_decay)
    h = eta * (_curvatures(rho, lam) + lam)
    M = np.empty(h.shape + (2, 2))
    M[..., 0, 0], M[..., 0, 1], M[..., 1, 0], M[..., 1, 1] = 1 - h, beta, -h, beta
    return M


def discrete_mode_moments(rho, s, eta, beta, batch_size, weight_decay=0.0):
    """Exact stationary (Var x, Cov(x, u), Var u) per mode of momentum SGD (discrete Lyapunov, closed form).

    With h = eta(rho+lam), q = eta^2 s / S:  Var u = 2q / ((1-beta)(2(1+beta) - h)),
    Cov(x, u) = Var u / 2,  Var x = (1+beta) Var u / (2h). Needs 0 < h < 2(1+beta) (stability).
    """
    eta, beta, S, lam = _hyper(eta, beta, batch_size, weight_decay)
    rho, s = _broadcast(rho=_vals("rho", rho), s=_noise(s))
    h = eta * (rho + lam)
    if np.any(h <= 0) or np.any(h >= 2 * (1 + beta)):
        v.fail("need 0 < eta (rho + lam) < 2 (1 + beta) for a stationary law", h)
    q = eta**2 * s / S
    var_u = 2 * q / ((1 - beta) * (2 * (1 + beta) - h))
    return (1 + beta) * var_u / (2 * h), var_u / 2, var_u


def discrete_speed(rho, s, eta, beta, batch_size, weight_decay=0.0):
    """Exact stationary ``E||theta_{k+1} - theta_k||^2`` of momentum SGD: ``sum_l Var u_l``.

    Equals :func:`momentum_speed` times ``1/(1 - h_l/(2(1+beta)))`` mode by mode.
    """
    return float(np.sum(discrete_mode_moments(rho, s, eta, beta, batch_size, weight_decay)[2]))


def discrete_stationary_cov(H, Sigma, eta, beta, batch_size, weight_decay=0.0):
    """Exact stationary covariance (2d, 2d) of (theta - mu, delta) for momentum SGD on a quadratic.

    Solves the discrete Lyapunov equation ``C = M C M^T + W`` with ``M = [[I - eta Ht, beta I],
    [-eta Ht, beta I]]`` (Ht = H + lam I) and ``W = eta^2/S [[Sigma, Sigma], [Sigma, Sigma]]``.
    """
    H = v.symmetric_psd("H (Hessian)", H)
    Sigma = v.symmetric_psd("Sigma (noise covariance)", Sigma)
    if H.shape != Sigma.shape:
        v.fail(f"H and Sigma must have the same shape; H is {H.shape}, Sigma", Sigma)
    eta, beta, S, lam = _hyper(eta, beta, batch_size, weight_decay)
    d = H.shape[0]
    v.memory("the stationary covariance", (2 * d, 2 * d), 8 * 4)
    I = np.eye(d)
    Ht = H + lam * I
    M = np.block([[I - eta * Ht, beta * I], [-eta * Ht, beta * I]])
    if np.max(np.abs(np.linalg.eigvals(M))) >= 1:
        v.fail("momentum SGD is unstable here (spectral radius of M >= 1); lower eta", eta)
    W = eta**2 / S * np.block([[Sigma, Sigma], [Sigma, Sigma]])
    C = scipy.linalg.solve_discrete_lyapunov(M, W)
    return (C + C.T) / 2


def displacement_from_rest(k, rho, s, eta, beta, batch_size, weight_decay=0.0, model="discrete"):
    """``E||theta_k - mu||^2`` for trajectories started at the minimiser mu with zero velocity -> (K,).

    ``model="discrete"``: exact for momentum SGD, ``C_k = C_inf - M^k C_inf M^kT`` per mode.
    ``model="continuous"``: the OU model at t = eta k, ``kappa^{-1}(B - e^{-St} B e^{-S^T t})`` (eq. (20)).
    k (K,) ints >= 0; rho, s (L,).
    """
    v.one_of("model", model, {"discrete", "continuous"})
    k = _steps(k, 0)
    rho, s = _vals("rho", rho, ndim=1), _vals("s", s, ndim=1)
    if rho.shape != s.shape:
        v.fail(f"rho and s must have the same shape (L,); rho has {rho.shape}, s", s)
    if model == "discrete":
        vx, cxu, vu = discrete_mode_moments(rho, s, eta, beta, batch_size, weight_decay)
        C = np.stack([np.stack([vx, cxu], -1), np.stack([cxu, vu], -1)], -2)  # (L, 2, 2)
        M = discrete_transition(rho, eta, beta, weight_decay)
        out = []
        for kk in k:
            P = np.linalg.matrix_power(M, int(kk))
            out.append(np.sum(vx - (P @ C @ np.swapaxes(P, -1, -2))[:, 0, 0]))
        return np.array(out)
    if model == "continuous":
        vt, vv = stationary_variances(rho, s, eta, beta, batch_size, weight_decay)
        gamma, omega = oscillator_rates(rho, eta, beta, weight_decay)
        P = mode_propagator(gamma[None, :], omega[None, :], eta * k[:, None].astype(float))  # (K, L, 2, 2)
        return np.sum(vt - (P[..., 0, 0] ** 2 * vt + P[..., 0, 1] ** 2 * vv), axis=1)
    v.fail("model must be 'discrete' or 'continuous'", model)


def stationary_displacement(k, rho, s, eta, beta, batch_size, weight_decay=0.0, model="discrete"):
    """``E||theta_{i+k} - theta_i||^2`` at stationarity, exactly: ``2 sum_l (Var x_l - Cov(x_{l,i+k}, x_{l,i}))``.

    discrete: ``Cov = (M^k C)_{xx}`` (exact for momentum SGD); continuous: ``(e^{-S eta k} B)_{theta theta}``.
    Bounded by 4 tr Var(theta): in a quadratic basin the stationary displacement saturates. k (K,), rho, s (L,).
    """
    v.one_of("model", model, {"discrete", "continuous"})
    k = _steps(k, 0)
    rho, s = _vals("rho", rho, ndim=1), _vals("s", s, ndim=1)
    if rho.shape != s.shape:
        v.fail(f"rho and s must have the same shape (L,); rho has {rho.shape}, s", s)
    if model == "discrete":
        vx, cxu, vu = discrete_mode_moments(rho, s, eta, beta, batch_size, weight_decay)
        M = discrete_transition(rho, eta, beta, weight_decay)
        out = []
        for kk in k:
            P = np.linalg.matrix_power(M, int(kk))
            out.append(2 * np.sum(vx - (P[:, 0, 0] * vx + P[:, 0, 1] * cxu)))
        return np.array(out)
    if model == "continuous":
        vt, _ = stationary_variances(rho, s, eta, beta, batch_size, weight_decay)
        gamma, omega = oscillator_rates(rho, eta, beta, weight_decay)
        P = mode_propagator(gamma[None, :], omega[None, :], eta * k[:, None].astype(float))
        return 2 * np.sum(vt * (1 - P[..., 0, 0]), axis=1)
    v.fail("model must be 'discrete' or 'continuous'", model)


def spectral_peak(rho, eta, beta, weight_decay=0.0, model="discrete"):
    """Angular frequency (radians per step) of the peak of the stationary power spectrum of q^T theta_k.

    discrete: x_k is AR(2), ``x_{k+1} = (1+beta-h) x_k - beta x_{k-1} - e_k``; its spectrum
    ``1/|1 - a1 e^{-iw} - a2 e^{-2iw}|^2`` peaks where ``cos w = a1 (a2 - 1)/(4 a2)`` (0 if none).
    continuous: ``eta sqrt(omega^2 - 2 gamma^2)`` (0 if omega^2 < 2 gamma^2). rho (...) -> (...).
    """
    v.one_of("model", model, {"discrete", "continuous"})
    eta, beta, _, lam = _hyper(eta, beta, None, weight_decay)
    rho = _curvatures(rho, lam)
    if model == "discrete":
        a1, a2 = 1 + beta - eta * (rho + lam), -beta
        if beta == 0:
            return np.where(a1 < 0, np.pi, 0.0) + 0 * rho
        cw = a1 * (a2 - 1) / (4 * a2)
        return np.arccos(np.clip(cw, -1, 1))
    if model == "continuous":
        gamma, omega = oscillator_rates(rho, eta, beta, weight_decay)
        return eta * np.sqrt(np.clip(omega**2 - 2 * gamma**2, 0, None))
    v.fail("model must be 'discrete' or 'continuous'", model)


def linreg_noise_spectrum(theta, X, Y, U):
    """``s_{aj}(theta) = q^T Sigma(theta) q`` for linear regression, ``q = U[:, a] (x) e_j`` (row-major theta).

    Sigma(theta) is the 1/n per-sample gradient covariance of ``1/2||y - W^T x||^2`` (``sgdnotes.models
    .linreg_loss``); its gradient is ``x (x) r`` with r = W^T x - y. theta (..., d_in*d_out), X (n, d_in),
    Y (n, d_out), U (d_in, p) orthonormal columns -> (..., p, d_out).
    """
    X = np.asarray(v.array("X", X, ndim=2, nonempty=True), float)
    Y = np.asarray(v.array("Y", Y, ndim=2, nonempty=True), float)
    v.same_rows(X, Y)
    theta = _vals("theta (..., d_in*d_out)", theta)
    d_in, d_out = X.shape[1], Y.shape[1]
    if theta.ndim < 1 or theta.shape[-1] != d_in * d_out:
        v.fail(f"theta must have last dimension d_in * d_out = {d_in * d_out}", theta)
    U = _vals("U (d_in, p)", U, ndim=2)
    if U.shape[0] != d_in or not np.allclose(U.T @ U, np.eye(U.shape[1]), atol=1e-4):
        v.fail(f"U must be (d_in = {d_in}, p) with orthonormal columns", U)
    v.memory("the residuals", theta.shape[:-1] + X.shape, 8)
    batch, n = theta.shape[:-1], X.shape[0]
    W = np.moveaxis(theta.reshape(-1, d_in, d_out), 0, 1).reshape(d_in, -1)  # (d_in, N d_out): one GEMM for all states
    R = ((X @ W).reshape(n, -1, d_out) - Y[:, None, :]).reshape(n, -1)  # residuals r = W^T x - y, (n, N d_out)
    P = X @ U  # (n, p)
    m2 = (P**2).T @ R**2 / n
    m1 = P.T @ R / n
    return np.moveaxis((m2 - m1**2).reshape(P.shape[1], -1, d_out), 0, 1).reshape(batch + (P.shape[1], d_out))
