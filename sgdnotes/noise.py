"""Gradient-noise covariances of minibatch SGD (chapter 1).

Covariances over the data set use 1/n, as the notes define ``Sigma_emp``:
``Sigma_emp(theta) = (1/n) sum_i (g_i - g_n)(g_i - g_n)^T`` with ``g_i`` the per-sample gradients.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v


def per_sample_grads(loss_fn, theta, X, Y):
    """Per-sample gradients ``g_i = grad_theta loss_fn(theta, x_i, y_i)``.

    loss_fn(theta (d,), x (d_in,), y (d_out,)) -> scalar; theta (d,), X (n, d_in), Y (n, d_out) -> (n, d).
    """
    v.function("loss_fn", loss_fn, "a callable loss_fn(theta, x, y) -> scalar")
    theta = v.array("theta", theta, ndim=1, nonempty=True)
    X = v.array("X", X, ndim=2, nonempty=True)
    Y = v.array("Y", Y, ndim=2, nonempty=True)
    v.same_rows(X, Y)
    v.memory("the per-sample gradients", (X.shape[0], theta.shape[0]), 8)
    return jax.vmap(jax.grad(loss_fn), in_axes=(None, 0, 0))(theta, X, Y)


def empirical_noise_cov(G):
    """``Sigma_emp = (1/n) sum_i (g_i - gbar)(g_i - gbar)^T`` for per-sample gradients G (n, d) -> (d, d)."""
    G = v.array("G (per-sample gradients)", G, ndim=2, nonempty=True)
    v.memory("the covariance", (G.shape[1], G.shape[1]), G.dtype.itemsize)
    C = G - G.mean(axis=0)
    return C.T @ C / G.shape[0]


def minibatch_noise_cov(G, batch_size: int, replacement: bool = True):
    """Covariance of the batch-mean gradient ``g_B`` over the random batch, for G (n, d) -> (d, d).

    With replacement: ``Sigma_emp / B``. Without replacement (B distinct indices):
    ``(n - B)/(n - 1) * Sigma_emp / B`` (finite-population correction; needs n >= 2).
    """
    G = v.array("G (per-sample gradients)", G, ndim=2, nonempty=True)
    n = G.shape[0]
    replacement = v.boolean("replacement", replacement)
    B = v.positive_int("batch_size", batch_size, 1, None if replacement else n)
    S = empirical_noise_cov(G)
    if replacement:
        return S / B
    if n < 2:
        v.fail("sampling without replacement needs n >= 2 samples", G)
    return S * ((n - B) / ((n - 1) * B))


def estimate_noise_cov(batch_grads, batch_size: int):
    """The notes' estimator ``B/(m-1) sum_j (g_Bj - gbar)(g_Bj - gbar)^T`` from m batch gradients (m, d) -> (d, d).

    Unbiased for ``Sigma_emp`` when batches are drawn with replacement; without replacement its mean is
    ``(n - B)/(n - 1) Sigma_emp`` (chapter 1 checks both).
    """
    Gb = v.array("batch_grads", batch_grads, ndim=2, nonempty=True)
    if Gb.shape[0] < 2:
        v.fail("estimate_noise_cov needs m >= 2 batch gradients (rows)", batch_grads)
    B = v.positive_int("batch_size", batch_size)
    C = Gb - Gb.mean(axis=0)
    return B * (C.T @ C) / (Gb.shape[0] - 1)


def batch_gradients(key, G, batch_size: int, n_batches: int, sampling: str = "with_replacement"):
    """Batch-mean gradients ``g_{B_j} = (1/B) sum_{i in B_j} g_i`` for ``j = 0..m-1`` (chapter 1).

    key: a JAX key; G (n, d) per-sample gradients at one theta; the batch of draw j is
    ``sgdnotes.sgd.batch_indices(key, j, n, B, sampling)``, i.e. exactly the batch an SGD trajectory
    with this key would use at step j ("with_replacement", "without_replacement" or "epoch";
    with "epoch", consecutive draws partition a random permutation). -> (m, d).
    """
    from .sgd import SAMPLING

    v.key("key", key)
    G = v.array("G (per-sample gradients)", G, ndim=2, nonempty=True)
    n = G.shape[0]
    v.one_of("sampling", sampling, set(SAMPLING))
    B = v.positive_int("batch_size", batch_size, 1, None if sampling == "with_replacement" else n)
    m = v.positive_int("n_batches", n_batches)
    v.memory("the batch indices", (m, B), 4)
    v.memory("the batch gradients", (m, G.shape[1]), G.dtype.itemsize)
    return _batch_gradients(key, jnp.asarray(G), batch_size=B, n_batches=m, sampling=sampling)


@partial(jax.jit, static_argnames=("batch_size", "n_batches", "sampling"))
def _batch_gradients(key, G, *, batch_size, n_batches, sampling):
    from .sgd import batch_indices

    n = G.shape[0]
    idx = jax.vmap(lambda j: batch_indices(key, j, n, batch_size, sampling))(jnp.arange(n_batches))  # (m, B)
    return G[idx].mean(axis=1)


def batch_gradients_by_size(key, G, batch_sizes, n_batches: int, sampling: str = "with_replacement"):
    """Batch-mean gradients for several batch sizes, compiled once for all sizes (chapter 1).

    Row s is ``batch_gradients(fold_in(key, s), G, batch_sizes[s], n_batches, sampling)``: the batches
    an SGD trajectory with key ``fold_in(key, s)`` and batch size ``B_s`` would use at steps
    0..m-1 (independent across sizes). G (n, d), batch_sizes (S,) -> (S, m, d).
    """
    from .sgd import SAMPLING

    v.key("key", key)
    G = v.array("G (per-sample gradients)", G, ndim=2, nonempty=True)
    n = G.shape[0]
    v.one_of("sampling", sampling, set(SAMPLING))
    if isinstance(batch_sizes, (str, bytes)) or not hasattr(batch_sizes, "__iter__") or np.ndim(batch_sizes) != 1:
        v.fail("batch_sizes must be a 1-D sequence of integers", batch_sizes)
    sizes = tuple(int(v.positive_int("each batch size", b, 1, None if sampling == "with_replacement" else n))
                  for b in batch_sizes)
    if len(sizes) == 0:
        v.fail("batch_sizes must not be empty", batch_sizes)
    m = v.positive_int("n_batches", n_batches)
    v.memory("the batch indices", (m, max(sizes)), 4)
    v.memory("the batch gradients", (len(sizes), m, G.shape[1]), G.dtype.itemsize)
    return _batch_gradients_by_size(key, jnp.asarray(G), sizes=sizes, n_batches=m, sampling=sampling)


@partial(jax.jit, static_argnames=("sizes", "n_batches", "sampling"))
def _batch_gradients_by_size(key, G, *, sizes, n_batches, sampling):
    return jnp.stack([
        _batch_gradients.__wrapped__(jax.random.fold_in(key, s), G, batch_size=B, n_batches=n_batches, sampling=sampling)
        for s, B in enumerate(sizes)
    ])


def linreg_population_noise_cov(theta, theta_star, input_cov, noise_std, fourth_moments=None):
    """Population covariance ``Sigma_pop(theta)`` of the per-sample gradient of linear regression (chapter 1).

    Model: ``y = x^T theta* + eps``, ``eps ~ N(0, noise_std^2)`` independent of x, loss
    ``1/2 (y - x^T theta)^2``, so ``g = x (x^T delta - eps)`` with ``delta = theta - theta*``.
    For Gaussian ``x ~ N(0, S)`` (Isserlis):

        Sigma_pop = S delta delta^T S + (delta^T S delta) S + noise_std^2 S.

    ``fourth_moments`` (d,): for inputs with independent, symmetric coordinates and a diagonal S, the
    fourth moments ``E[x_j^4]``; the Gaussian value is ``3 S_jj^2`` and the general result adds
    ``diag((E[x_j^4] - 3 S_jj^2) delta_j^2)``. theta, theta_star (d,), input_cov (d, d) -> (d, d).
    """
    theta = v.array("theta", theta, ndim=1, nonempty=True)
    theta_star = v.array("theta_star", theta_star, ndim=1)
    S = v.symmetric_psd("input_cov", input_cov)
    d = theta.shape[0]
    if theta_star.shape != (d,) or S.shape != (d, d):
        v.fail(f"theta (d,), theta_star (d,) and input_cov (d, d) must agree; theta has d = {d}, shapes",
               (tuple(theta_star.shape), tuple(S.shape)))
    # a traced noise_std is used as is; a concrete one must be a finite number >= 0
    sigma = noise_std if isinstance(noise_std, jax.core.Tracer) else v.real("noise_std", noise_std, minimum=0.0)
    S_np = np.asarray(S)  # concrete, for the checks below
    S = jnp.asarray(S, dtype=jnp.result_type(theta, float))
    delta = jnp.asarray(theta) - jnp.asarray(theta_star)
    Sd = S @ delta
    cov = jnp.outer(Sd, Sd) + (delta @ Sd) * S + sigma**2 * S
    if fourth_moments is not None:
        m4 = v.array("fourth_moments", fourth_moments, ndim=1)
        if m4.shape != (d,):
            v.fail(f"fourth_moments must have shape ({d},)", fourth_moments)
        if not np.allclose(S_np, np.diag(np.diag(S_np))):
            v.fail("fourth_moments needs a diagonal input_cov (independent coordinates)", input_cov)
        s = jnp.diag(S)
        cov = cov + jnp.diag((jnp.asarray(m4, S.dtype) - 3 * s**2) * delta**2)
    return cov


def dln_noise_cov(W1, W2, X, Y):
    """Kronecker form of ``Sigma_emp`` for the two-layer linear network (chapter 4; seed 000 §4.2).

    W1 (d1, d0), W2 (d2, d1), X (n, d0), Y (n, d2); per-sample loss ``||y - W2 W1 x||^2``
    (``sgdnotes.models.dln2_loss``). With ``Z_mu = r_mu x_mu^T``, ``r_mu = W2 W1 x_mu - y_mu``,
    ``z_mu = vec(Z_mu - Zbar) = x_mu kron r_mu - mean`` and ``C = (1/n) sum_mu z_mu z_mu^T`` (d2 d0, d2 d0),

        Sigma = 4 [I_{d0} kron W2^T; W1 kron I_{d2}] C [I_{d0} kron W2^T; W1 kron I_{d2}]^T   (d, d)

    in the theta = [vec W1; vec W2] order (Fortran vec); equal to ``empirical_noise_cov`` of the
    per-sample gradients.
    """
    W1 = v.array("W1 (d1, d0)", W1, ndim=2, nonempty=True)
    W2 = v.array("W2 (d2, d1)", W2, ndim=2, nonempty=True)
    X = v.array("X (n, d0)", X, ndim=2, nonempty=True)
    Y = v.array("Y (n, d2)", Y, ndim=2, nonempty=True)
    v.same_rows(X, Y)
    (d1, d0), d2 = W1.shape, W2.shape[0]
    if W2.shape[1] != d1 or X.shape[1] != d0 or Y.shape[1] != d2:
        v.fail(f"shapes must be W1 (d1, d0), W2 (d2, d1), X (n, d0), Y (n, d2); W1 is {W1.shape}, W2 {W2.shape}, "
               f"X {X.shape}, Y", Y)
    d = d1 * d0 + d2 * d1
    v.memory("the covariance and its factor", (d + d2 * d0, d + d2 * d0), 8)
    R = X @ (W2 @ W1).T - Y  # rows r_mu (n, d2)
    Z = (X[:, :, None] * R[:, None, :]).reshape(X.shape[0], d0 * d2)  # rows vec(r x^T) = x kron r
    C = empirical_noise_cov(Z)  # (d2 d0, d2 d0)
    A = jnp.concatenate([jnp.kron(jnp.eye(d0, dtype=W2.dtype), W2.T),
                         jnp.kron(W1, jnp.eye(d2, dtype=W1.dtype))], axis=0)  # (d, d2 d0)
    return 4 * A @ C @ A.T
