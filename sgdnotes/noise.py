"""Gradient-noise covariances of minibatch SGD (chapter 1).

Covariances over the data set use 1/n, as the notes define ``Sigma_emp``:
``Sigma_emp(theta) = (1/n) sum_i (g_i - g_n)(g_i - g_n)^T`` with ``g_i`` the per-sample gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _validate as v


def per_sample_grads(loss_fn, theta, X, Y):
    """Per-sample gradients ``g_i = grad_theta loss_fn(theta, x_i, y_i)``.

    loss_fn(theta (d,), x (d_in,), y (d_out,)) -> scalar; theta (d,), X (n, d_in), Y (n, d_out) -> (n, d).
    """
    theta = v.array("theta", theta, ndim=1)
    X = v.array("X", X, ndim=2)
    Y = v.array("Y", Y, ndim=2)
    v.same_rows(X, Y)
    return jax.vmap(jax.grad(loss_fn), in_axes=(None, 0, 0))(theta, X, Y)


def empirical_noise_cov(G):
    """``Sigma_emp = (1/n) sum_i (g_i - gbar)(g_i - gbar)^T`` for per-sample gradients G (n, d) -> (d, d)."""
    G = v.array("G (per-sample gradients)", G, ndim=2)
    C = G - G.mean(axis=0)
    return C.T @ C / G.shape[0]


def minibatch_noise_cov(G, batch_size: int, replacement: bool = True):
    """Covariance of the batch-mean gradient ``g_B`` over the random batch, for G (n, d) -> (d, d).

    With replacement: ``Sigma_emp / B``. Without replacement (B distinct indices):
    ``(n - B)/(n - 1) * Sigma_emp / B`` (finite-population correction; needs n >= 2).
    """
    G = v.array("G (per-sample gradients)", G, ndim=2)
    n = G.shape[0]
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
    Gb = v.array("batch_grads", batch_grads, ndim=2)
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
    from .sgd import SAMPLING, batch_indices

    G = v.array("G (per-sample gradients)", G, ndim=2)
    n = G.shape[0]
    v.one_of("sampling", sampling, set(SAMPLING))
    B = v.positive_int("batch_size", batch_size, 1, None if sampling == "with_replacement" else n)
    m = v.positive_int("n_batches", n_batches)
    idx = jax.vmap(lambda j: batch_indices(key, j, n, B, sampling))(jnp.arange(m))  # (m, B)
    return jnp.asarray(G)[idx].mean(axis=1)


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
    theta = v.array("theta", theta, ndim=1)
    theta_star = v.array("theta_star", theta_star, ndim=1)
    S = v.symmetric_psd("input_cov", input_cov)
    d = theta.shape[0]
    if theta_star.shape != (d,) or S.shape != (d, d):
        v.fail(f"theta (d,), theta_star (d,) and input_cov (d, d) must agree; theta has d = {d}, shapes",
               (tuple(theta_star.shape), tuple(S.shape)))
    sigma = float(noise_std)
    if not (sigma >= 0 and jnp.isfinite(sigma)):
        v.fail("noise_std must be a finite number >= 0", noise_std)
    S = jnp.asarray(S, dtype=jnp.result_type(theta, float))
    delta = jnp.asarray(theta) - jnp.asarray(theta_star)
    Sd = S @ delta
    cov = jnp.outer(Sd, Sd) + (delta @ Sd) * S + sigma**2 * S
    if fourth_moments is not None:
        m4 = v.array("fourth_moments", fourth_moments, ndim=1)
        if m4.shape != (d,):
            v.fail(f"fourth_moments must have shape ({d},)", fourth_moments)
        if not bool(jnp.allclose(S, jnp.diag(jnp.diag(S)))):
            v.fail("fourth_moments needs a diagonal input_cov (independent coordinates)", input_cov)
        s = jnp.diag(S)
        cov = cov + jnp.diag((jnp.asarray(m4, S.dtype) - 3 * s**2) * delta**2)
    return cov
