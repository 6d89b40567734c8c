"""Sharpness and central flows at the edge of stability (chapter 6).

* :func:`sharpness` -- ``S(theta) = lambda_max(Hessian of loss_fn at theta)`` by Lanczos iteration
  (full reorthogonalisation) on Hessian-vector products ``jax.jvp(jax.grad(loss_fn), (theta,), (u,))``;
  the Hessian is never formed.
* :func:`sharpness_grad` -- ``grad S(theta) = grad_theta (u^T H(theta) u)`` with ``u`` the top unit
  eigenvector held fixed (Hellmann--Feynman; valid when the top eigenvalue is simple).
* :func:`central_flow` -- the central flow of gradient descent with step size eta (Cohen et al., ICLR 2025):
  ``dtheta/dt = -(grad L + 1/2 sum_i x_i grad lambda_i)``, ``t = eta k``, where the sum runs over the Hessian
  eigenvalues lambda_i that have reached ``2/eta`` and the weights ``x_i = sigma_i^2 >= 0`` (the variances of
  GD's oscillation along the eigenvectors) solve the linear complementarity problem

      w = A^T grad L + 1/2 (A^T A) x + kappa (2/eta - lambda),   x >= 0,  w >= 0,  x^T w = 0,

  ``A = [grad lambda_i]`` (d, m); ``w_i = -dlambda_i/dt`` (up to the stabilising ``kappa`` term), so an
  eigenvalue at the threshold cannot rise above it, and it is pushed only while it would otherwise rise.
  The LCP is solved exactly by enumerating the supports of ``x`` (2^m linear solves, m <= 6 candidates).
  With one active eigenvalue this is the projected gradient ``-(I - a a^T/|a|^2) grad L``. Restricting
  the oscillation covariance to the Hessian eigenbasis (diagonal in it) is the paper's problem when only
  one eigenvalue is active, or when the active ones are decoupled (``G_01 = grad(u_0^T H u_1) = 0``); with
  two coupled eigenvalues in the active band (both at 2/eta, so nearly equal) the paper's problem is the
  semidefinite one below, which also constrains the off-diagonal of ``d/dt U^T H U``.
  The predicted time-averaged loss of GD is ``L + 1/2 sum_i x_i lambda_i = L + sum_i x_i / eta``.

* :func:`solve_sdcp`, :func:`central_velocity` -- the paper's semidefinite problem on the active eigenspace
  for k <= 2 active directions (exact, by enumerating the rank of the covariance);
  ``central_flow(..., semidefinite=True)`` integrates with it, imposing the full 2 x 2 problem whenever the
  second eigenvalue is in the active band (the default ``semidefinite=False`` solves the diagonal LCP).
* :func:`modified_flow` -- chapter 2's modified equation ``-grad(L + eta/4 |grad L|^2)``, for comparison.

The central flow uses the dense Hessian (``jax.hessian`` + ``eigh``), so it is meant for d up to a few
hundred; it is integrated by Heun's method with a fixed step (see :func:`central_flow`).
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v


def _theta(theta):
    t = v.array("theta", theta, ndim=1, nonempty=True)
    return jnp.asarray(t, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)


def _loss(loss_fn, theta):
    loss_fn = v.function("loss_fn", loss_fn, "a callable theta (d,) -> scalar")
    val = loss_fn(theta)
    if np.ndim(val) != 0:
        v.fail("loss_fn must return a scalar", val)
    if not np.isfinite(float(val)):
        v.fail("loss_fn(theta) must be finite", val)
    return loss_fn


def hvp(loss_fn, theta, u):
    """Hessian-vector product ``H(theta) u`` by forward-over-reverse differentiation. theta, u: (d,) -> (d,)."""
    return jax.jvp(jax.grad(loss_fn), (theta,), (u,))[1]


_hvp_jit = jax.jit(hvp, static_argnums=0)


def top_eigenpairs(loss_fn, theta, k: int = 1, *, n_iter: int | None = None):
    """The k largest Hessian eigenvalues (descending) and unit eigenvectors (d, k) by Lanczos.

    loss_fn: theta (d,) -> scalar; theta (d,). ``n_iter`` Lanczos steps (default min(d, 40)) with full
    reorthogonalisation, started from a fixed vector (deterministic). -> (values (k,), vectors (d, k)).
    """
    theta = _theta(theta)
    loss_fn = _loss(loss_fn, theta)
    d = theta.shape[0]
    k = v.positive_int("k", k, 1, d)
    n_iter = min(d, 40) if n_iter is None else v.positive_int("n_iter", n_iter, k, d)
    mv = lambda u: _hvp_jit(loss_fn, theta, u)  # noqa: E731 (compiled once per loss_fn)
    Q = np.zeros((d, n_iter + 1))
    q = np.cos(np.arange(1, d + 1) * 0.7) + 0.3  # fixed start (not orthogonal to a generic eigenvector)
    Q[:, 0] = q / np.linalg.norm(q)
    alpha, beta = np.zeros(n_iter), np.zeros(n_iter)
    m = n_iter
    for j in range(n_iter):
        w = np.array(mv(jnp.asarray(Q[:, j], theta.dtype)), np.float64)
        alpha[j] = Q[:, j] @ w
        w -= Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)  # full reorthogonalisation (twice is enough)
        w -= Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        beta[j] = np.linalg.norm(w)
        if beta[j] < 1e-10 * max(1.0, abs(alpha[j])):
            m = j + 1  # invariant subspace found
            break
        Q[:, j + 1] = w / beta[j]
    T = np.diag(alpha[:m]) + np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    lam, S = np.linalg.eigh(T)
    order = np.argsort(lam)[::-1][:k]
    if len(order) < k:
        v.fail(f"Lanczos found only {len(order)} eigenvalues (start vector in an invariant subspace); k", k)
    return lam[order], Q[:, :m] @ S[:, order]


def sharpness(loss_fn, theta, *, n_iter: int | None = None) -> float:
    """``lambda_max`` of the Hessian of ``loss_fn`` at ``theta`` (d,) by Lanczos on Hessian-vector products."""
    return float(top_eigenpairs(loss_fn, theta, 1, n_iter=n_iter)[0][0])


def sharpness_grad(loss_fn, theta, *, n_iter: int | None = None):
    """``grad S(theta)`` (d,) = grad of ``u^T H(theta) u`` at fixed top eigenvector u (simple top eigenvalue)."""
    theta = _theta(theta)
    _, U = top_eigenpairs(loss_fn, theta, 1, n_iter=n_iter)
    u = jnp.asarray(U[:, 0], theta.dtype)
    return np.asarray(jax.grad(lambda th: hvp(loss_fn, th, u) @ u)(theta), np.float64)


def _supports(m):
    """All 2^m supports as a boolean (2^m, m) array, by increasing size (the empty one first)."""
    S = np.array(list(itertools.product([False, True], repeat=m)), bool).reshape(-1, m)
    return S[np.argsort(S.sum(1), kind="stable")]


def _lcp(M, q, active, supports):
    """Jittable exact LCP over the ``active`` indices: x >= 0, w = q + M x >= 0, x_i w_i = 0 (i active),
    x_i = 0 (inactive). Tries every support (rows of ``supports``) and returns the first valid x."""
    m = q.shape[0]
    scale = 1.0 + jnp.max(jnp.abs(q)) + jnp.max(jnp.abs(M))
    tol = 100 * jnp.finfo(M.dtype).eps * scale

    def try_support(S):
        Sf = S.astype(M.dtype)
        MS = M * jnp.outer(Sf, Sf) + jnp.diag(1.0 - Sf) + 10 * jnp.finfo(M.dtype).eps * scale * jnp.eye(m)
        x = jnp.linalg.solve(MS, -q * Sf)
        w = q + M @ x
        ok = (jnp.all(~S | active) & jnp.all(x >= -tol) & jnp.all((w >= -tol) | ~active))
        return jnp.maximum(x, 0.0), ok

    xs, oks = jax.vmap(try_support)(supports)
    first = jnp.argmax(oks)
    return xs[first], oks[first]


def solve_lcp(M, q):
    """Exact solution of the LCP ``w = q + M x, x >= 0, w >= 0, x^T w = 0`` (supports enumerated, m <= 10).

    M (m, m) symmetric PSD, q (m,). Returns the x (m,) of smallest support (w is unique for PSD M).
    """
    M = np.asarray(v.square("M", M), np.float64)
    q = np.asarray(v.array("q", q, ndim=1), np.float64)
    m = len(q)
    if M.shape[0] != m:
        v.fail(f"M must be ({m}, {m}) to match q", M)
    if m > 10:
        v.fail("solve_lcp enumerates supports: m must be <= 10", m)
    x, ok = _lcp(jnp.asarray(M), jnp.asarray(q), jnp.ones(m, bool), jnp.asarray(_supports(m)))
    if not bool(ok):
        v.fail("no solution of the LCP found (M not PSD?); M", M)
    return np.asarray(x, np.float64)


# ---------------------------------------------------------------------------------------------------------
# Degenerate active eigenvalues: the semidefinite complementarity problem on the active eigenspace (k <= 2).
#
# With U (d, k) an orthonormal basis of the active eigenspace, G_ab = grad_theta(u_a^T H(theta) u_b) (d,) at
# fixed U (a third-derivative contraction, by grad of an hvp), the oscillation covariance Sigma (k, k) >= 0
# gives the velocity -(grad L + 1/2 sum_ab Sigma_ab G_ab), and
#     W = Q + 1/2 A(Sigma),  A(Sigma)_ab = G_ab . sum_cd Sigma_cd G_cd,  Q_ab = G_ab . grad L + kappa (2/eta I - U^T H U)_ab
# is -(d/dt)(U^T H U) (up to the kappa term). The problem: Sigma >= 0, W >= 0 (PSD), <Sigma, W> = 0. It is the
# optimality condition of the convex problem  min_{Sigma >= 0} 1/4 |sum Sigma_ab G_ab|^2 + <Q, Sigma>, and it
# transforms covariantly under U -> U R (R orthogonal), so the velocity does not depend on the basis.
# ---------------------------------------------------------------------------------------------------------

_SQ2 = float(np.sqrt(2.0))


def _sym3(G):
    """(2, 2, ...) symmetric -> (3, ...) coordinates (x00, sqrt2 x01, x11) in an orthonormal basis of Sym(2)."""
    return jnp.stack([G[0, 0], _SQ2 * G[0, 1], G[1, 1]])


def _unsym3(s):
    return jnp.array([[s[0], s[1] / _SQ2], [s[1] / _SQ2, s[2]]])


def _sdcp2(G, Q, n_grid=64, n_newton=12):
    """Jittable exact SDCP for k = 2. G (2, 2, d) symmetric in (a, b), Q (2, 2) symmetric.

    Enumerates the three possible ranks of Sigma: 0 (valid iff Q >= 0), 2 (W = 0: three linear equations,
    valid iff the solution is PSD), and 1: Sigma = s v v^T, v = (cos phi, sin phi); for fixed v the best
    s = max(0, -2 v^T Q v / |g(v)|^2), g(v) = sum v_a v_b G_ab, and phi maximises (v^T Q v)^2 / |g(v)|^2 on
    {v^T Q v < 0} (a 1-D problem: a 64-point grid on [0, pi), then Newton steps on the derivative). The
    KKT conditions are then checked; the problem is convex, so a candidate that satisfies them is the
    optimum. -> (Sigma (2, 2), W (2, 2), ok).
    """
    dt = Q.dtype
    g3 = _sym3(G)  # (3, d)
    M3 = 0.5 * g3 @ g3.T  # W3 = M3 sigma3 + q3
    q3 = _sym3(Q)
    scale = 1.0 + jnp.max(jnp.abs(q3)) + jnp.max(jnp.abs(M3))
    tol = 1e-8 * scale
    # rank 0
    ok0 = jnp.linalg.eigvalsh(Q)[0] >= -tol
    # rank 2 (minimum-norm solution if the three G's are linearly dependent)
    ev, EV = jnp.linalg.eigh(M3)
    inv = jnp.where(ev > 1e-12 * scale, 1.0 / jnp.where(ev > 1e-12 * scale, ev, 1.0), 0.0)
    s_full = -(EV * inv) @ (EV.T @ q3)
    S_full = _unsym3(s_full)
    ok2 = (jnp.linalg.eigvalsh(S_full)[0] >= -tol) & (jnp.linalg.norm(M3 @ s_full + q3) <= tol)

    # rank 1
    def parts(phi):
        v = jnp.array([jnp.cos(phi), jnp.sin(phi)], dt)
        gv = jnp.einsum("a,b,abd->d", v, v, G)
        return v, v @ Q @ v, gv @ gv

    def h(phi):  # minus the optimal decrease for this direction
        _, p, c = parts(phi)
        return -jnp.minimum(p, 0.0) ** 2 / jnp.maximum(c, 1e-300)

    phis = jnp.linspace(0.0, jnp.pi, n_grid, endpoint=False, dtype=dt)
    phi = phis[jnp.argmin(jax.vmap(h)(phis))]
    dh, d2h = jax.grad(h), jax.grad(jax.grad(h))

    def newton(phi, _):
        step = dh(phi) / d2h(phi)
        new = phi - jnp.clip(step, -jnp.pi / n_grid, jnp.pi / n_grid)
        # accept a step that lowers |h'| (h itself is flat to round-off at the optimum)
        return jnp.where((d2h(phi) > 0) & (jnp.abs(dh(new)) <= jnp.abs(dh(phi))), new, phi), None

    phi, _ = jax.lax.scan(newton, phi, None, length=n_newton)
    v, p, c = parts(phi)
    s1 = jnp.maximum(-2.0 * p / jnp.maximum(c, 1e-300), 0.0)
    S_one = s1 * jnp.outer(v, v)

    def W_of(S):
        return _unsym3(M3 @ _sym3(S) + q3)

    W1 = W_of(S_one)
    ok1 = (jnp.linalg.eigvalsh(W1)[0] >= -tol) & (jnp.linalg.norm(W1 @ v) <= tol)
    S = jnp.where(ok0, jnp.zeros((2, 2), dt), jnp.where(ok1, S_one, S_full))
    return S, W_of(S), ok0 | ok2 | ok1


def _eigspace_G(loss_fn, theta, U):
    """G_ab = grad_theta(u_a^T H(theta) u_b) at fixed U (d, k) -> (k, k, d), by grad of a Hessian-vector product."""
    Hu = lambda th: jax.vmap(lambda u: hvp(loss_fn, th, u), in_axes=1, out_axes=1)(U)  # noqa: E731 (d, k)
    return jax.jacrev(lambda th: U.T @ Hu(th))(theta)


def solve_sdcp(G, Q):
    """Exact solution of the semidefinite complementarity problem of the central flow for k <= 2 active
    directions: Sigma >= 0, W = Q + 1/2 A(Sigma) >= 0, <Sigma, W> = 0 (matrix inequalities), with
    ``A(Sigma)_ab = G_ab . sum_cd Sigma_cd G_cd``.

    G (k, k, d) symmetric in its first two indices, Q (k, k) symmetric, k in {1, 2}. k = 1 is the scalar
    LCP; k = 2 enumerates rank 0, 1 and 2 of Sigma (the rank-1 direction by a 1-D grid + Newton solve).
    -> (Sigma (k, k), W (k, k)); raises ValueError if no candidate passes the KKT check. That does NOT prove
    there is no solution: the problem can be unbounded (dependent G_ab, e.g. d <= 2: a PSD Sigma with
    sum Sigma_ab G_ab = 0 and <Q, Sigma> < 0), but the rank-1 search (angle grid + Newton) can also miss a
    rank-1 solution that exists -- an independent check found a d = 2 instance with a rank-1 KKT solution
    (eigenvalue ~ 5e2) that this search misses. The random d = 5 instances of the
    tests all solve. When G_01 = 0 (decoupled directions) Sigma_01 is not unique, but the velocity
    sum Sigma_ab G_ab is.
    """
    G = np.asarray(v.array("G (k, k, d)", G, ndim=3), np.float64)
    Q = np.asarray(v.square("Q", Q), np.float64)
    k = Q.shape[0]
    if k not in (1, 2):
        v.fail("solve_sdcp handles k = 1 or 2 active directions; Q must be (k, k) with k", k)
    if G.shape[:2] != (k, k):
        v.fail(f"G must be ({k}, {k}, d) to match Q", G)
    if not (np.allclose(G, G.transpose(1, 0, 2)) and np.allclose(Q, Q.T)):
        v.fail("G and Q must be symmetric in the active indices; Q", Q)
    if not (np.isfinite(G).all() and np.isfinite(Q).all()):
        v.fail("G and Q must be finite; Q", Q)
    if k == 1:
        c = float(G[0, 0] @ G[0, 0])
        s = max(-2.0 * Q[0, 0] / c, 0.0) if c > 0 else 0.0
        if c == 0 and Q[0, 0] < 0:
            v.fail("no solution: Q < 0 with G = 0; Q", Q)
        S = np.array([[s]])
        return S, Q + 0.5 * c * S
    S, W, ok = _sdcp2(jnp.asarray(G), jnp.asarray(Q))
    if not bool(ok):
        v.fail("no candidate solution (rank 0, 1 or 2) of the semidefinite complementarity problem passed the KKT check (the rank-1 search can miss a solution, or the problem is unbounded); Q", Q)
    return np.asarray(S, np.float64), np.asarray(W, np.float64)


def central_velocity(loss_fn: Callable, theta, eta: float, U, *, semidefinite: bool = True,
                     kappa: float | None = None):
    """The central-flow velocity at theta (d,) with the active directions spanned by U (d, k), k <= 2.

    ``semidefinite=True``: the SDCP of :func:`solve_sdcp` (independent of the choice of orthonormal basis
    of span U). ``semidefinite=False``: the eigenbasis-diagonal LCP in the given columns of U (Sigma
    diagonal in that basis, only the diagonal of W constrained), which depends on the basis when the
    active eigenvalues are equal. The kappa term (default 1/eta) uses U^T H U.
    -> (velocity (d,), Sigma (k, k), W (k, k)).
    """
    theta = _theta(theta)
    loss_fn = _loss(loss_fn, theta)
    eta = v.positive_float("eta", eta)
    kappa = 1.0 / eta if kappa is None else v.positive_float("kappa", kappa)
    U = np.asarray(v.array("U (d, k)", U, ndim=2), np.float64)
    if U.shape[0] != theta.shape[0] or U.shape[1] not in (1, 2):
        v.fail(f"U must be (d, k) with d = {theta.shape[0]} and k in (1, 2)", U)
    if not np.allclose(U.T @ U, np.eye(U.shape[1]), atol=1e-8):
        v.fail("U must have orthonormal columns; U^T U", U.T @ U)
    Uj = jnp.asarray(U, theta.dtype)
    G = np.asarray(_eigspace_G(loss_fn, theta, Uj), np.float64)  # (k, k, d)
    g = np.asarray(jax.grad(loss_fn)(theta), np.float64)
    M = U.T @ np.asarray(jax.vmap(lambda u: hvp(loss_fn, theta, u), in_axes=1, out_axes=1)(Uj), np.float64)
    Q = G @ g + kappa * (2.0 / eta * np.eye(U.shape[1]) - 0.5 * (M + M.T))
    if semidefinite:
        S, W = solve_sdcp(G, Q)
    else:
        A = np.stack([G[i, i] for i in range(U.shape[1])], 1)  # (d, k)
        x = solve_lcp(0.5 * A.T @ A, np.diag(Q))
        S = np.diag(x)
        W = Q + 0.5 * np.einsum("abd,d->ab", G, np.einsum("cc,ccd->d", S, G))
    return -(g + 0.5 * np.einsum("ab,abd->d", S, G)), S, W


class CentralFlow(NamedTuple):
    """t (r,): times (t = eta k); theta (r, d); loss (r,): L on the flow; loss_pred (r,): L + sum x_i/eta
    (GD's predicted time-averaged loss); sharpness (r,); n_active (r,): eigenvalues at 2/eta; x (r, m_max):
    oscillation variances sigma_i^2 (0 where inactive); lcp_ok (r,): the LCP had a solution."""

    t: np.ndarray
    theta: np.ndarray
    loss: np.ndarray
    loss_pred: np.ndarray
    sharpness: np.ndarray
    n_active: np.ndarray
    x: np.ndarray
    lcp_ok: np.ndarray


def _field(loss_fn, m_max, thr, kappa, active_tol, semidefinite=False):
    """theta -> (velocity, (L, lambda_1, n_active, x, ok)) of the central flow (jittable).

    semidefinite=False: the eigenbasis-diagonal LCP over the top m_max eigenvalues; True (m_max = 2): the
    SDCP on the span of the active eigenvectors (x: the eigenvalues of Sigma, descending)."""
    grad = jax.grad(loss_fn)
    hess = jax.hessian(loss_fn)
    supports = jnp.asarray(_supports(m_max))

    def field(theta):
        lam, U = jnp.linalg.eigh(hess(theta))
        lam, U = lam[::-1][:m_max], U[:, ::-1][:, :m_max]
        g = grad(theta)
        active = lam >= thr * (1.0 - active_tol)
        if semidefinite:
            G = _eigspace_G(loss_fn, theta, U)  # (2, 2, d)
            Q = G @ g + kappa * jnp.diag(thr - lam)  # U^T H U = diag(lam) in the eigenbasis
            S2, _, ok2 = _sdcp2(G, Q)
            s1 = jnp.maximum(-2.0 * Q[0, 0] / jnp.maximum(G[0, 0] @ G[0, 0], 1e-300), 0.0)
            S1 = jnp.zeros((2, 2), g.dtype).at[0, 0].set(s1)
            S = jnp.where(active[1], S2, jnp.where(active[0], S1, jnp.zeros_like(S1)))
            return (-(g + 0.5 * jnp.einsum("ab,abd->d", S, G)),
                    (loss_fn(theta), lam[0], active.sum(), jnp.linalg.eigvalsh(S)[::-1], ok2 | ~active[1]))
        A = jax.vmap(lambda u: jax.grad(lambda th: hvp(loss_fn, th, u) @ u)(theta), in_axes=1, out_axes=1)(U)
        q = A.T @ g + kappa * (thr - lam)  # w >= 0  <=>  dlambda/dt <= kappa (2/eta - lambda)
        x, ok = _lcp(0.5 * A.T @ A, q, active, supports)
        return -(g + 0.5 * A @ x), (loss_fn(theta), lam[0], active.sum(), x, ok)

    return field


def _flow_args(loss_fn, theta0, eta, t_final, n_eval, dt):
    """Validated arguments of a flow integrated by Heun with step <= dt (default eta/8) and output at n_eval
    equally spaced times: -> theta0, loss_fn, eta, t_final, n_eval, h (the step), n_sub (steps per output)."""
    theta0 = _theta(theta0)
    loss_fn = _loss(loss_fn, theta0)
    eta = v.positive_float("eta", eta)
    t_final = v.positive_float("t_final", t_final)
    n_eval = v.positive_int("n_eval", n_eval, 2)
    dt = eta / 8 if dt is None else v.positive_float("dt", dt)
    n_sub = max(1, int(np.ceil(t_final / (n_eval - 1) / dt)))
    return theta0, loss_fn, eta, t_final, n_eval, t_final / (n_eval - 1) / n_sub, n_sub


def central_flow(loss_fn: Callable, theta0, eta: float, t_final: float, *, dt: float | None = None,
                 n_eval: int = 201, max_active: int | None = None, kappa: float | None = None,
                 active_tol: float = 0.02, semidefinite: bool = False) -> CentralFlow:
    """Integrate the central flow of GD with step ``eta`` from ``theta0`` (d,) over ``t in [0, t_final]``.

    ``t = eta k`` (k GD steps). The top ``max_active`` eigenvalues within ``active_tol`` (relative) of
    ``2/eta`` are candidates; their weights solve the LCP of the module docstring, whose ``kappa``
    term (default ``1/eta``, units 1/t) lets an eigenvalue approach 2/eta at most exponentially and pulls
    one that drifted above back, so integration error does not accumulate. Below the band the flow is
    gradient flow. Heun's method (RK2) with fixed step ``dt`` (default ``eta/8``) in one ``lax.scan``: the
    field is discontinuous where the active set changes, so an adaptive high-order method gains nothing;
    the chapter checks the step by halving it. Output at ``n_eval`` equally spaced times.
    ``semidefinite=True`` solves the semidefinite problem (:func:`solve_sdcp`) on the span of the top two
    eigenvectors instead of the eigenbasis-diagonal LCP (requires ``max_active <= 2``; with a degenerate
    active pair only this form is independent of the arbitrary eigenbasis). -> :class:`CentralFlow`.
    """
    theta0, loss_fn, eta, t_final, n_eval, h, n_sub = _flow_args(loss_fn, theta0, eta, t_final, n_eval, dt)
    kappa = 1.0 / eta if kappa is None else v.positive_float("kappa", kappa)
    max_active = (2 if semidefinite else 3) if max_active is None else v.positive_int("max_active", max_active, 1, 6)
    max_active = min(max_active, theta0.shape[0])
    active_tol = v.in_range("active_tol", active_tol, 0.0, 1.0)
    if semidefinite:
        if max_active > 2 or theta0.shape[0] < 2:
            v.fail("semidefinite=True solves the k <= 2 problem: max_active must be <= 2 (and d >= 2)", max_active)
        max_active = 2
    v.memory("the central-flow path", (n_eval, theta0.shape[0]), 8)
    thetas, aux = _integrate(loss_fn, theta0, max_active, 2.0 / eta, kappa, active_tol, h, n_sub, n_eval,
                             bool(semidefinite))
    L, lam1, n_act, X, ok = (np.asarray(a) for a in aux)
    return CentralFlow(t=np.linspace(0.0, t_final, n_eval), theta=np.asarray(thetas, np.float64), loss=L,
                       loss_pred=L + X.sum(1) / eta, sharpness=lam1, n_active=n_act, x=X, lcp_ok=ok)


@partial(jax.jit, static_argnums=(0, 2, 7, 8, 9))
def _integrate(loss_fn, theta0, m_max, thr, kappa, active_tol, h, n_sub, n_eval, semidefinite=False):
    return _heun(_field(loss_fn, m_max, thr, kappa, active_tol, semidefinite), theta0, h, n_sub, n_eval)


def _heun(field, theta0, h, n_sub, n_eval):
    """Heun's method for field: theta -> (velocity, aux), n_sub steps of h between n_eval outputs (jittable).
    -> (thetas (n_eval, d), aux at the output times)."""

    def heun(th, _):
        k1 = field(th)[0]
        k2 = field(th + h * k1)[0]
        return th + 0.5 * h * (k1 + k2), None

    def block(th, _):
        out = (th, field(th)[1])
        th, _ = jax.lax.scan(heun, th, None, length=n_sub)
        return th, out

    _, (ths, aux) = jax.lax.scan(block, theta0, None, length=n_eval)
    return ths, aux


def modified_flow(loss_fn: Callable, theta0, eta: float, t_final: float, *, dt: float | None = None,
                  n_eval: int = 201):
    """Chapter 2's modified equation of GD, ``dtheta/dt = -grad(L + eta/4 |grad L|^2)``, ``t = eta k``,
    integrated like :func:`central_flow` (Heun, step ``dt``, default eta/8) from theta0 (d,).
    -> (t (n_eval,), theta (n_eval, d))."""
    theta0, loss_fn, eta, t_final, n_eval, h, n_sub = _flow_args(loss_fn, theta0, eta, t_final, n_eval, dt)
    ths = _integrate_me(loss_fn, theta0, eta, h, n_sub, n_eval)
    return np.linspace(0.0, t_final, n_eval), np.asarray(ths, np.float64)


@partial(jax.jit, static_argnums=(0, 4, 5))
def _integrate_me(loss_fn, theta0, eta, h, n_sub, n_eval):
    grad = jax.grad(loss_fn)
    velocity = jax.grad(lambda th: -(loss_fn(th) + 0.25 * eta * jnp.sum(grad(th) ** 2)))
    return _heun(lambda th: (velocity(th), ()), theta0, h, n_sub, n_eval)[0]


def gradient_descent(loss_fn: Callable, theta0, eta: float, n_steps: int):
    """Full-batch GD ``theta_{k+1} = theta_k - eta grad L(theta_k)``; -> (thetas (n_steps+1, d), losses (n_steps+1,)).

    Deterministic; one ``lax.scan``. Used to compare GD with its central flow (chapter 6). The same
    iterates come from ``sgdnotes.sgd.run_sgd`` with ``batch_size=n, sampling="without_replacement"`` on a
    per-sample loss; this function exists because the central-flow comparisons need a loss that is not a
    mean of per-sample terms (e.g. the scalar factorisation) and the full loss at every step.
    """
    theta0 = _theta(theta0)
    loss_fn = _loss(loss_fn, theta0)
    eta = v.positive_float("eta", eta)
    n_steps = v.positive_int("n_steps", n_steps, 1, 10**8)
    return _gd(loss_fn, theta0, eta, n_steps)


def _gd(loss_fn, theta0, eta, n_steps):
    vg = jax.value_and_grad(loss_fn)

    def step(th, _):
        L, g = vg(th)
        return th - eta * g, (th, L)

    last, (ths, Ls) = jax.lax.scan(step, theta0, None, length=n_steps)
    return (np.concatenate([np.asarray(ths), np.asarray(last)[None]]),
            np.concatenate([np.asarray(Ls), [float(loss_fn(last))]]))
