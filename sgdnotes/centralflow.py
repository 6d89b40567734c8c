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
  the oscillation covariance to the Hessian eigenbasis (diagonal in it) is exact when the active
  eigenvalues are distinct; the paper's general form is a semidefinite complementarity problem.
  The predicted time-averaged loss of GD is ``L + 1/2 sum_i x_i lambda_i = L + sum_i x_i / eta``.

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


def _field(loss_fn, m_max, thr, kappa, active_tol):
    """theta -> (velocity, (L, lambda_1, n_active, x, ok)) of the central flow (jittable)."""
    grad = jax.grad(loss_fn)
    hess = jax.hessian(loss_fn)
    supports = jnp.asarray(_supports(m_max))

    def field(theta):
        lam, U = jnp.linalg.eigh(hess(theta))
        lam, U = lam[::-1][:m_max], U[:, ::-1][:, :m_max]
        A = jax.vmap(lambda u: jax.grad(lambda th: hvp(loss_fn, th, u) @ u)(theta), in_axes=1, out_axes=1)(U)
        g = grad(theta)
        active = lam >= thr * (1.0 - active_tol)
        q = A.T @ g + kappa * (thr - lam)  # w >= 0  <=>  dlambda/dt <= kappa (2/eta - lambda)
        x, ok = _lcp(0.5 * A.T @ A, q, active, supports)
        return -(g + 0.5 * A @ x), (loss_fn(theta), lam[0], active.sum(), x, ok)

    return field


def central_flow(loss_fn: Callable, theta0, eta: float, t_final: float, *, dt: float | None = None,
                 n_eval: int = 201, max_active: int = 3, kappa: float | None = None,
                 active_tol: float = 0.02) -> CentralFlow:
    """Integrate the central flow of GD with step ``eta`` from ``theta0`` (d,) over ``t in [0, t_final]``.

    ``t = eta k`` (k GD steps). The top ``max_active`` eigenvalues within ``active_tol`` (relative) of
    ``2/eta`` are candidates; their weights solve the LCP of the module docstring, whose ``kappa``
    term (default ``1/eta``, units 1/t) lets an eigenvalue approach 2/eta at most exponentially and pulls
    one that drifted above back, so integration error does not accumulate. Below the band the flow is
    gradient flow. Heun's method (RK2) with fixed step ``dt`` (default ``eta/8``) in one ``lax.scan``: the
    field is discontinuous where the active set changes, so an adaptive high-order method gains nothing;
    the chapter checks the step by halving it. Output at ``n_eval`` equally spaced times. -> :class:`CentralFlow`.
    """
    theta0 = _theta(theta0)
    loss_fn = _loss(loss_fn, theta0)
    eta = v.positive_float("eta", eta)
    t_final = v.positive_float("t_final", t_final)
    n_eval = v.positive_int("n_eval", n_eval, 2)
    dt = eta / 8 if dt is None else v.positive_float("dt", dt)
    kappa = 1.0 / eta if kappa is None else v.positive_float("kappa", kappa)
    max_active = min(v.positive_int("max_active", max_active, 1, 6), theta0.shape[0])
    active_tol = v.in_range("active_tol", active_tol, 0.0, 1.0)
    n_sub = max(1, int(np.ceil(t_final / (n_eval - 1) / dt)))
    h = t_final / (n_eval - 1) / n_sub
    v.memory("the central-flow path", (n_eval, theta0.shape[0]), 8)
    thetas, aux = _integrate(loss_fn, theta0, max_active, 2.0 / eta, kappa, active_tol, h, n_sub, n_eval)
    L, lam1, n_act, X, ok = (np.asarray(a) for a in aux)
    return CentralFlow(t=np.linspace(0.0, t_final, n_eval), theta=np.asarray(thetas, np.float64), loss=L,
                       loss_pred=L + X.sum(1) / eta, sharpness=lam1, n_active=n_act, x=X, lcp_ok=ok)


@partial(jax.jit, static_argnums=(0, 2, 7, 8))
def _integrate(loss_fn, theta0, m_max, thr, kappa, active_tol, h, n_sub, n_eval):
    field = _field(loss_fn, m_max, thr, kappa, active_tol)

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
