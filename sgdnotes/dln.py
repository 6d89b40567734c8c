"""Two-layer deep linear networks: loss, closed-form gradients and Hessian, critical points, the
Saxe et al. learning curve, initialisation schemes (chapter 4).

Conventions (DESIGN §5, ``book/notation.md``): data ``X`` (n, d0), ``Y`` (n, d2), samples are rows;
``W1`` (d1, d0), ``W2`` (d2, d1); ``theta = [vec W1; vec W2]`` with ``vec`` stacking columns (Fortran
order, ``sgdnotes.models.dln_pack``/``dln_unpack``); the loss has no 1/2, as in the notes,

    L(W1, W2) = (1/n) sum_mu ||y_mu - W2 W1 x_mu||^2
              = tr(P Sxx P^T) - 2 tr(P Syx^T) + tr Syy,     P = W2 W1,

with the moment matrices ``Sxx = X^T X / n`` (d0, d0), ``Syx = Y^T X / n`` (d2, d0), ``Syy = Y^T Y / n``.
The per-sample loss for the simulators is ``sgdnotes.models.dln2_loss``; the Kronecker-form noise
covariance is ``sgdnotes.noise.dln_noise_cov``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v
from .models import _dims as _model_dims
from .models import dln_pack, dln_unpack
from .noise import dln_noise_cov


# ---------------------------------------------------------------------------------------------
# Input checks


def _weights(W1, W2):
    W1 = v.array("W1 (d1, d0)", W1, ndim=2, nonempty=True)
    W2 = v.array("W2 (d2, d1)", W2, ndim=2, nonempty=True)
    if W2.shape[1] != W1.shape[0]:
        v.fail(f"W2 (d2, d1) must have d1 = W1.shape[0] = {W1.shape[0]} columns", W2)
    return W1, W2


def _data(W1, W2, X, Y):
    W1, W2 = _weights(W1, W2)
    X = v.array("X (n, d0)", X, ndim=2, nonempty=True)
    Y = v.array("Y (n, d2)", Y, ndim=2, nonempty=True)
    v.same_rows(X, Y)
    if X.shape[1] != W1.shape[1]:
        v.fail(f"X must have d0 = W1.shape[1] = {W1.shape[1]} columns", X)
    if Y.shape[1] != W2.shape[0]:
        v.fail(f"Y must have d2 = W2.shape[0] = {W2.shape[0]} columns", Y)
    return W1, W2, X, Y


def _dims(dims):
    # three positive integers; integral floats (3.0) are accepted, 2.7 is refused (never truncated)
    return _model_dims(dims)


def _indices(name, value, q):
    """A 1-D list of distinct integer indices in [0, q) (may be empty) -> list of int."""
    arr = np.asarray(v.array(name, value))
    if arr.ndim != 1 or (arr.size and not np.all(arr == np.round(arr))):
        v.fail(f"{name} must be a 1-D list of distinct integer indices in [0, {q})", value)
    return [int(i) for i in arr]


def _modes_arg(md):
    if not isinstance(md, Modes):
        v.fail("md must be the Modes of the data (sgdnotes.dln.modes(X, Y))", md)
    return md


# ---------------------------------------------------------------------------------------------
# Moments, loss, gradients, Hessian


def dln_loss(W1, W2, X, Y):
    """``L = (1/n) sum_mu ||y_mu - W2 W1 x_mu||^2`` (no 1/2). W1 (d1, d0), W2 (d2, d1), X (n, d0), Y (n, d2)."""
    W1, W2, X, Y = _data(W1, W2, X, Y)
    R = X @ (W2 @ W1).T - Y
    return jnp.mean(jnp.sum(R * R, axis=1))


def residual_moment(W1, W2, X, Y):
    """``E = (1/n) sum_mu r_mu x_mu^T = W2 W1 Sxx - Syx`` (d2, d0), ``r_mu = W2 W1 x_mu - y_mu`` (the notes' Z-bar)."""
    W1, W2, X, Y = _data(W1, W2, X, Y)
    return (X @ (W2 @ W1).T - Y).T @ X / X.shape[0]


def dln_grads(W1, W2, X, Y):
    """Closed-form gradients ``(g1, g2) = (2 W2^T E, 2 E W1^T)`` with ``E = W2 W1 Sxx - Syx`` (chapter 4).

    Shapes: g1 (d1, d0) like W1, g2 (d2, d1) like W2 (seed 000 eqs. (33)-(34)).
    """
    E = residual_moment(W1, W2, X, Y)
    return 2 * W2.T @ E, 2 * E @ W1.T


def dln_flat_grad(theta, X, Y, dims):
    """``grad_theta L`` (d,) in the theta = [vec W1; vec W2] order, from :func:`dln_grads`."""
    W1, W2 = dln_unpack(theta, dims)
    g1, g2 = dln_grads(W1, W2, X, Y)
    return dln_pack(g1, g2)


def commutation_matrix(m: int, n: int):
    """``K`` (mn, mn) with ``K vec(A) = vec(A^T)`` for A (m, n), Fortran-order vec (chapter 4)."""
    m = v.positive_int("m", m)
    n = v.positive_int("n", n)
    v.memory("the commutation matrix", (m * n, m * n), 8)
    K = np.zeros((m * n, m * n))
    i, j = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    K[(j + i * n).ravel(), (i + j * m).ravel()] = 1.0
    return jnp.asarray(K)


def product_jacobian(W1, W2):
    """Jacobian of ``vec(W2 W1)`` with respect to theta: ``J = [I_{d0} kron W2, W1^T kron I_{d2}]`` (d2 d0, d).

    ``vec(dP) = J dtheta`` for ``dP = W2 dW1 + dW2 W1``. Its transpose is the notes' stacked map
    ``[I kron W2^T; W1 kron I]`` of the noise covariance (chapter 4).
    """
    W1, W2 = _weights(W1, W2)
    d1, d0 = W1.shape
    d2 = W2.shape[0]
    v.memory("the Jacobian", (d2 * d0, d1 * d0 + d2 * d1), W1.dtype.itemsize)
    return jnp.concatenate([jnp.kron(jnp.eye(d0, dtype=W2.dtype), W2),
                            jnp.kron(W1.T, jnp.eye(d2, dtype=W1.dtype))], axis=1)


def dln_hessian(W1, W2, X, Y):
    """Closed-form Hessian (d, d) of L in the theta = [vec W1; vec W2] order (chapter 4):

        H = 2 J^T (Sxx kron I_{d2}) J + 2 [[0, (E^T kron I_{d1}) K], [K^T (E kron I_{d1}), 0]],

    with ``J`` = :func:`product_jacobian`, ``E = W2 W1 Sxx - Syx`` and ``K`` = ``commutation_matrix(d2, d1)``
    (``K vec W2 = vec W2^T``). The first term is the Gauss-Newton part (PSD), the second the
    residual (cross-layer) part, zero where the fit is exact.
    """
    W1, W2, X, Y = _data(W1, W2, X, Y)
    d1, d0 = W1.shape
    d2 = W2.shape[0]
    n = X.shape[0]
    d = d1 * d0 + d2 * d1
    v.memory("the Hessian", (d, d), 8)
    v.memory("the commutation matrix", (d2 * d1, d2 * d1), 8)
    Sxx = X.T @ X / n
    E = residual_moment(W1, W2, X, Y)
    J = product_jacobian(W1, W2)
    H_gn = 2 * J.T @ jnp.kron(Sxx, jnp.eye(d2, dtype=Sxx.dtype)) @ J
    B = 2 * jnp.kron(E.T, jnp.eye(d1, dtype=E.dtype)) @ commutation_matrix(d2, d1).astype(E.dtype)
    p = d1 * d0
    cross = jnp.zeros_like(H_gn).at[:p, p:].set(B).at[p:, :p].set(B.T)
    return H_gn + cross


# ---------------------------------------------------------------------------------------------
# Whitening, modes and critical points


def whiten(X):
    """``X Sxx^{-1/2}`` (n, d0): inputs with exactly identity second moment ``X^T X / n = I`` (chapter 4).

    Needs ``Sxx`` positive definite (n >= d0 and X of full column rank).
    """
    X = v.array("X (n, d0)", X, ndim=2, nonempty=True)
    Sxx = np.asarray(X, np.float64).T @ np.asarray(X, np.float64) / X.shape[0]
    w, U = np.linalg.eigh(Sxx)
    if w.min() <= 1e-10 * max(w.max(), 1e-300):
        v.fail("whiten needs X^T X / n positive definite (n >= d0, full column rank)", X)
    return jnp.asarray(np.asarray(X, np.float64) @ (U / np.sqrt(w)) @ U.T, dtype=jnp.asarray(X).dtype)


class Modes(NamedTuple):
    """SVD of the whitened input-output correlation ``Syx Sxx^{-1/2} = U diag(s) V^T`` (chapter 4).

    U (d2, q), s (q,) decreasing, V (d0, q) with q = min(d0, d2); ``Sxx_inv_sqrt`` (d0, d0) maps the
    whitened first layer back (``W1 = W1_white Sxx^{-1/2}``); ``loss_floor = tr Syy - sum s^2`` is the
    least-squares loss of an unconstrained linear map.
    """

    U: jax.Array
    s: jax.Array
    V: jax.Array
    Sxx_inv_sqrt: jax.Array
    loss_floor: float


def modes(X, Y):
    """The singular modes of the data (see :class:`Modes`); computed in float64 NumPy, returned as X's dtype."""
    X = v.array("X (n, d0)", X, ndim=2, nonempty=True)
    Y = v.array("Y (n, d2)", Y, ndim=2, nonempty=True)
    v.same_rows(X, Y)
    Xd, Yd = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    n = Xd.shape[0]
    Sxx, Syx, Syy = Xd.T @ Xd / n, Yd.T @ Xd / n, Yd.T @ Yd / n
    w, Q = np.linalg.eigh(Sxx)
    if w.min() <= 1e-10 * max(w.max(), 1e-300):
        v.fail("modes needs X^T X / n positive definite (n >= d0, full column rank)", X)
    S_is = (Q / np.sqrt(w)) @ Q.T
    U, s, Vt = np.linalg.svd(Syx @ S_is, full_matrices=False)
    dt = jnp.asarray(X).dtype
    return Modes(jnp.asarray(U, dt), jnp.asarray(s, dt), jnp.asarray(Vt.T, dt), jnp.asarray(S_is, dt),
                 float(np.trace(Syy) - np.sum(s**2)))


def mode_point(X, Y, d1: int, strengths, R=None):
    """Balanced weights whose product is ``W2 W1 = U diag(a) V^T Sxx^{-1/2}`` (chapter 4).

    strengths a (q',) with q' <= min(d1, q): mode i gets strength a_i (modes ordered by decreasing
    singular value); ``W1 = R diag(sqrt a) V^T Sxx^{-1/2}``, ``W2 = U diag(sqrt a) R^T`` with R (d1, q')
    orthonormal columns (default: the first q' unit vectors, hidden unit i <-> mode i).
    Strengths equal to the singular values give critical points (see :func:`critical_point`);
    small equal strengths give the decoupled small initialisation of Saxe et al. Returns (W1, W2).
    """
    d1 = v.positive_int("d1 (hidden width)", d1)
    md = modes(X, Y)
    a = jnp.asarray(v.array("strengths", strengths, ndim=1), md.s.dtype)
    q = a.shape[0]
    if q > min(d1, md.s.shape[0]):
        v.fail(f"at most min(d1, min(d0, d2)) = {min(d1, md.s.shape[0])} strengths", strengths)
    if bool(jnp.any(a < 0)):
        v.fail("strengths must be >= 0", strengths)
    if R is None:
        R = jnp.eye(d1, q, dtype=a.dtype)
    else:
        R = jnp.asarray(v.array("R (d1, q)", R, ndim=2), a.dtype)
        if R.shape != (d1, q) or not bool(jnp.allclose(R.T @ R, jnp.eye(q), atol=1e-5)):
            v.fail(f"R must be ({d1}, {q}) with orthonormal columns", R)
    sq = jnp.sqrt(a)
    W1 = (R * sq) @ md.V[:, :q].T @ md.Sxx_inv_sqrt
    W2 = (md.U[:, :q] * sq) @ R.T
    return W1, W2


def critical_point(X, Y, d1: int, modes_used, R=None):
    """A balanced critical point that has learned the singular modes ``modes_used`` (chapter 4).

    modes_used: distinct mode indices (0 = largest singular value), at most d1 of them;
    the product is ``W2 W1 = sum_{i in K} s_i u_i v_i^T Sxx^{-1/2}`` (Baldi & Hornik). The empty set is the
    origin; the top-min(d1, rank) set is a global minimum; any other set is a saddle. Returns (W1, W2).
    """
    d1 = v.positive_int("d1 (hidden width)", d1)
    md = modes(X, Y)
    q = md.s.shape[0]
    K = _indices("modes_used", modes_used, q)
    if len(set(K)) != len(K) or any(i < 0 or i >= q for i in K) or len(K) > d1:
        v.fail(f"modes_used must be at most d1 = {d1} distinct indices in [0, {q})", modes_used)
    d0, d2 = md.V.shape[0], md.U.shape[0]
    if not K:
        dt = md.s.dtype
        return jnp.zeros((d1, d0), dt), jnp.zeros((d2, d1), dt)
    k = len(K)
    if R is None:
        Rfull = jnp.eye(d1, k, dtype=md.s.dtype)
    else:
        Rfull = jnp.asarray(v.array("R (d1, k)", R, ndim=2), md.s.dtype)
        if Rfull.shape != (d1, k):
            v.fail(f"R must have shape ({d1}, {k})", R)
        if not np.allclose(np.asarray(Rfull).T @ np.asarray(Rfull), np.eye(k), atol=1e-5):
            v.fail(f"R must have orthonormal columns (R^T R = I_{k})", R)
    sq = jnp.sqrt(md.s[jnp.array(K)])
    W1 = (Rfull * sq) @ md.V[:, K].T @ md.Sxx_inv_sqrt
    W2 = (md.U[:, K] * sq) @ Rfull.T
    return W1, W2


def critical_hessian_eigenvalues(s, dims, modes_used):
    """Closed-form Hessian spectrum (d,) (sorted) at the critical point of :func:`critical_point` (chapter 4).

    Whitened inputs (``Sxx = I``); s (q,) the singular values of ``Syx``, q = min(d0, d2) (zeros allowed);
    K = modes_used (k = |K| <= d1, each with s_i > 0). The eigenvalues are

    * i, j in K (k^2 ordered pairs):           2 (s_i + s_j) and 0;
    * i in K, j not in K (j < q):              2 (s_i + s_j) and 2 (s_i - s_j)  (negative if s_j > s_i);
    * i in K, |d0 - d2| times:                 2 s_i;
    * each of the d1 - k unused hidden units:  +-2 s_j for j not in K, 0 twice for j in K, |d0 - d2| zeros.
    """
    d0, d1, d2 = _dims(dims)
    s = np.asarray(v.array("s (singular values)", s, ndim=1), np.float64)
    q = min(d0, d2)
    if s.shape != (q,) or np.any(s < 0):
        v.fail(f"s must hold the q = min(d0, d2) = {q} singular values (>= 0)", s)
    v.memory("the spectrum", (d1 * (d0 + d2),), 8)
    K = _indices("modes_used", modes_used, q)
    if len(set(K)) != len(K) or len(K) > d1 or any(i < 0 or i >= q or s[i] <= 0 for i in K):
        v.fail(f"modes_used must be at most d1 = {d1} distinct indices in [0, {q}) with s_i > 0", modes_used)
    k, extra = len(K), abs(d0 - d2)
    out = []
    for i in K:
        for j in K:
            out += [2 * (s[i] + s[j]), 0.0]
        for j in range(q):
            if j not in K:
                out += [2 * (s[i] + s[j]), 2 * (s[i] - s[j])]
        out += [2 * s[i]] * extra
    for _ in range(d1 - k):
        for j in range(q):
            out += [0.0, 0.0] if j in K else [2 * s[j], -2 * s[j]]
        out += [0.0] * extra
    return np.sort(np.array(out))


# ---------------------------------------------------------------------------------------------
# Saxe et al. (2014) learning curve


class SaxeCurve(NamedTuple):
    """Closed-form gradient-flow solution from the decoupled small balanced initialisation (chapter 4).

    t (T,) times; strengths (T, q) the mode strengths a_i(t); loss (T,) L(t); half_times (q,) the
    times at which a_i = s_i / 2; s (q,) the singular values used.
    """

    t: np.ndarray
    strengths: np.ndarray
    loss: np.ndarray
    half_times: np.ndarray
    s: np.ndarray


def saxe_curve(s, a0: float, t, loss_floor: float = 0.0) -> SaxeCurve:
    """Mode strengths under gradient flow ``dtheta/dt = -grad L`` for whitened inputs (chapter 4).

    With L = sum_i (s_i - a_i)^2 + loss_floor and balanced decoupled modes, ``da_i/dt = 4 a_i (s_i - a_i)``:

        a_i(t) = s_i / (1 + (s_i / a0 - 1) exp(-4 s_i t)),     t_half,i = ln(s_i / a0 - 1) / (4 s_i).

    (Saxe, McClelland & Ganguli 2014, with this book's loss: no 1/2, hence the 4.) s (q,) > 0,
    0 < a0 < min(s) / 2, t (T,) >= 0.
    """
    s = np.asarray(v.array("s (singular values)", s, ndim=1, nonempty=True), np.float64)
    if np.any(s <= 0):
        v.fail("saxe_curve needs singular values s > 0", s)
    a0 = v.positive_float("a0 (initial mode strength)", a0)
    if a0 >= s.min() / 2:
        v.fail(f"a0 must be below min(s)/2 = {s.min() / 2:.4g} (small initialisation)", a0)
    t = np.asarray(v.array("t (times)", t, ndim=1, nonempty=True), np.float64)
    if np.any(t < 0):
        v.fail("t (times) must be >= 0", t)
    loss_floor = v.real("loss_floor", loss_floor)
    v.memory("the strengths", (t.shape[0], s.shape[0]), 8)
    a = s / (1 + (s / a0 - 1) * np.exp(-4 * s * t[:, None]))
    loss = np.sum((s - a) ** 2, axis=1) + float(loss_floor)
    return SaxeCurve(t, a, loss, np.log(s / a0 - 1) / (4 * s), s)


def mode_strengths(W1, W2, md: Modes):
    """Strengths ``a_i = u_i^T W2 W1 Sxx^{1/2} v_i`` (q,) of the product along the data's modes (chapter 4)."""
    W1, W2 = _weights(W1, W2)
    md = _modes_arg(md)
    if W2.shape[0] != md.U.shape[0] or W1.shape[1] != md.V.shape[0]:
        v.fail(f"W2 W1 must have the data's shape (d2, d0) = {(md.U.shape[0], md.V.shape[0])}; "
               f"W1 is {W1.shape}, W2", W2)
    Sxx_sqrt = jnp.linalg.inv(md.Sxx_inv_sqrt)
    return jnp.einsum("iq,ij,jq->q", md.U, W2 @ W1 @ Sxx_sqrt, md.V)


# ---------------------------------------------------------------------------------------------
# Initialisation


def small_init(key, dims, scale: float, n_trajectories: int | None = None):
    """Small balanced initialisation near the origin saddle (chapter 4).

    Draw G (d2, d0) with i.i.d. N(0, 1) entries, SVD ``G = U diag(g) V^T`` truncated to q' = min(d1, d0, d2)
    values, a random orthogonal O (d1, d1), and set ``W1 = scale O[:, :q'] diag(sqrt g) V^T``,
    ``W2 = scale U diag(sqrt g) O[:, :q']^T``: balanced (``W1 W1^T = W2^T W2``) with product
    ``W2 W1 = scale^2 G_{q'}``. Returns theta (d,) or (m, d) when ``n_trajectories`` is given.
    """
    v.key("key", key)
    m = None if n_trajectories is None else v.positive_int("n_trajectories", n_trajectories)
    d0, d1, d2 = _dims(dims)
    scale = v.positive_float("scale", scale)
    v.memory("the initial parameters", (1 if m is None else m, d1 * d0 + d2 * d1 + d2 * d0 + d1 * d1), 4)
    q = min(d0, d1, d2)

    def one(k):
        kg, ko = jax.random.split(k)
        U, g, Vt = jnp.linalg.svd(jax.random.normal(kg, (d2, d0)), full_matrices=False)
        O, _ = jnp.linalg.qr(jax.random.normal(ko, (d1, d1)))
        sq = jnp.sqrt(g[:q])
        W1 = scale * (O[:, :q] * sq) @ Vt[:q]
        W2 = scale * (U[:, :q] * sq) @ O[:, :q].T
        return dln_pack(W1, W2)

    if n_trajectories is None:
        return one(key)
    return jax.vmap(one)(jax.random.split(key, m))


def lazy_init(key, dims, scale: float = 1.0, n_trajectories: int | None = None):
    """Large (LeCun-type) initialisation, toward the lazy / NTK regime (chapter 4).

    Independent Gaussian entries, ``W1 ~ N(0, scale^2 / d0)``, ``W2 ~ N(0, scale^2 / d1)`` (not balanced).
    Returns theta (d,) or (m, d).
    """
    v.key("key", key)
    m = None if n_trajectories is None else v.positive_int("n_trajectories", n_trajectories)
    d0, d1, d2 = _dims(dims)
    scale = v.positive_float("scale", scale)
    v.memory("the initial parameters", (1 if m is None else m, d1 * d0 + d2 * d1 + d2 * d0 + d1 * d1), 4)

    def one(k):
        k1, k2 = jax.random.split(k)
        W1 = scale * jax.random.normal(k1, (d1, d0)) / np.sqrt(d0)
        W2 = scale * jax.random.normal(k2, (d2, d1)) / np.sqrt(d1)
        return dln_pack(W1, W2)

    if n_trajectories is None:
        return one(key)
    return jax.vmap(one)(jax.random.split(key, m))


def _matrices(P):
    P = v.array("P (..., a, b)", P, nonempty=True)
    if P.ndim < 2:
        v.fail("P must be a matrix or a stack of matrices (..., a, b)", P)
    return P


def effective_rank(P):
    """Entropy effective rank ``exp(-sum p_i log p_i)``, ``p = sigma / sum sigma``, of P (..., a, b) -> (...) (chapter 4).

    Roy & Vetterli (2007): 1 for a rank-one matrix, k for k equal singular values, 0 for P = 0.
    """
    sv = jnp.linalg.svd(jnp.asarray(_matrices(P)), compute_uv=False)
    tot = sv.sum(axis=-1, keepdims=True)
    p = sv / jnp.where(tot > 0, tot, 1.0)
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
    return jnp.where(tot[..., 0] > 0, jnp.exp(ent), 0.0)


# ---------------------------------------------------------------------------------------------
# Plugging the DLN into the SDE simulator


def dln_drift(theta, X, Y, *unused, dims):
    """Gradient-flow drift ``-grad_theta L`` (d,) for ``sgdnotes.sde.run_sde`` (chapter 4).

    Use ``functools.partial(dln_drift, dims=dims)`` (kept in a variable) with ``args=(X, Y, ...)``;
    extra positional args (e.g. the diffusion scale that :func:`dln_sde_cov` takes) are ignored.
    """
    return -dln_flat_grad(theta, X, Y, dims)


def dln_sde_cov(theta, X, Y, scale, *, dims):
    """State-dependent diffusion ``scale * Sigma(theta)`` (d, d) for ``run_sde(diffusion=...)`` (chapter 4).

    Sigma is the Kronecker-form covariance ``sgdnotes.noise.dln_noise_cov``; for SGD with batch size B
    (with replacement) and time t = eta k, ``scale = eta / B``.
    """
    if not isinstance(scale, jax.core.Tracer):  # traced under run_sde: used as is
        v.real("scale", scale, minimum=0.0)
    W1, W2 = dln_unpack(theta, dims)
    return scale * dln_noise_cov(W1, W2, X, Y)



def numerical_rank(P, threshold: float):
    """Number of singular values of P (..., a, b) above ``threshold`` -> (...) int (chapter 4).

    Unlike :func:`effective_rank` it is not scale invariant, so a tiny product counts as rank 0: with a
    threshold below the smallest target singular value it counts the modes learned so far.
    """
    threshold = v.positive_float("threshold", threshold)
    return jnp.sum(jnp.linalg.svd(jnp.asarray(_matrices(P)), compute_uv=False) > threshold, axis=-1)
