"""Problem specifications, per-sample losses and data generators.

Conventions (see ``book/notation.md``):

* data ``X`` (n, d_in), ``Y`` (n, d_out); samples are rows;
* linear regression: per-sample loss ``l(theta; x, y) = 1/2 ||y - W^T x||^2`` with
  ``W = theta.reshape(d_in, d_out)`` (row-major), so ``L_n = (1/2n) sum_i ||y_i - W^T x_i||^2``;
  for ``d_out = 1`` this is ``1/2 (y - x^T theta)^2`` with ``theta`` of shape (d_in,);
* two-layer linear network: ``W1`` (d1, d0), ``W2`` (d2, d1), ``theta = [vec W1; vec W2]`` where
  ``vec`` stacks columns (Fortran order), per-sample loss ``||y - W2 W1 x||^2`` (no 1/2), as in the
  notes (chapter 4).

Introduced in chapter 1 (linear regression) and chapter 4 (deep linear networks).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v


class Dataset(NamedTuple):
    """A regression data set drawn from a known generative model.

    Fields: ``X`` (n, d_in), ``Y`` (n, d_out), ``theta_star`` (d_in * d_out,) the true parameter,
    ``input_cov`` (d_in, d_in) the population covariance of x (``None`` if infinite),
    ``noise_std`` the standard deviation of the label noise.
    """

    X: jax.Array
    Y: jax.Array
    theta_star: jax.Array
    input_cov: jax.Array | None
    noise_std: float


# ---------------------------------------------------------------------------------------------
# Linear regression


def linreg_loss(theta, x, y):
    """Per-sample squared loss ``1/2 ||y - W^T x||^2``, ``W = theta.reshape(d_in, d_out)``.

    theta (d_in * d_out,), x (d_in,), y (d_out,) -> scalar.
    """
    theta = v.array("theta (d_in * d_out,)", theta, ndim=1, nonempty=True)
    x = v.array("x (d_in,)", x, ndim=1, nonempty=True)
    y = v.array("y (d_out,)", y, nonempty=True)
    if y.ndim > 1 or theta.shape[0] != x.shape[0] * y.size:
        v.fail(f"theta must have d_in * d_out entries and y shape (d_out,); theta has {theta.shape[0]}, "
               f"x has d_in = {x.shape[0]}, y", y)
    W = theta.reshape(x.shape[0], -1)
    r = y - x @ W
    return 0.5 * jnp.sum(r * r)


def _xy(X, Y):
    X = v.array("X (n, d_in)", X, ndim=2, nonempty=True)
    Y = v.array("Y (n, d_out)", Y, ndim=2, nonempty=True)
    v.same_rows(X, Y)
    return X, Y


def _linreg_args(theta, X, Y):
    X, Y = _xy(X, Y)
    theta = v.array("theta (d_in * d_out,)", theta, ndim=1)
    if theta.shape[0] != X.shape[1] * Y.shape[1]:
        v.fail(f"theta must have d_in * d_out = {X.shape[1]} * {Y.shape[1]} = {X.shape[1] * Y.shape[1]} entries",
               theta)
    return theta, X, Y


def linreg_full_loss(theta, X, Y):
    """Empirical risk ``L_n(theta) = (1/2n) sum_i ||y_i - W^T x_i||^2``. theta (d,), X (n, d_in), Y (n, d_out)."""
    theta, X, Y = _linreg_args(theta, X, Y)
    W = theta.reshape(X.shape[1], -1)
    R = Y - X @ W
    return 0.5 * jnp.mean(jnp.sum(R * R, axis=1))


def linreg_hessian(X, d_out: int = 1):
    """Hessian of ``L_n`` (constant): ``(X^T X / n) kron I_{d_out}`` in the row-major theta order. -> (d, d)."""
    X = jnp.asarray(v.array("X (n, d_in)", X, ndim=2, nonempty=True))
    d_out = v.positive_int("d_out", d_out)
    v.memory("the Hessian", (X.shape[1] * d_out, X.shape[1] * d_out), X.dtype.itemsize)
    return jnp.kron(X.T @ X / X.shape[0], jnp.eye(d_out, dtype=X.dtype))


def linreg_minimiser(X, Y):
    """Least-squares minimiser of ``L_n`` (flattened row-major), via ``lstsq``. -> (d_in * d_out,)."""
    X, Y = _xy(X, Y)
    W, *_ = jnp.linalg.lstsq(X, Y)
    return W.reshape(-1)


def make_linreg_data(
    key,
    n: int,
    d: int,
    *,
    noise_std: float = 0.5,
    inputs: str = "gaussian",
    df: float = 3.0,
    input_scales=None,
    theta_star=None,
    dtype=jnp.float32,
) -> Dataset:
    """Draw ``n`` samples of ``y = x^T theta* + eps`` with ``eps ~ N(0, noise_std^2)``.

    ``inputs="gaussian"``: ``x ~ N(0, diag(input_scales^2))``. ``inputs="student_t"``: each coordinate is
    ``input_scales_j * t_df`` (heavy tails; population covariance ``scale^2 df/(df-2)`` for ``df > 2``,
    infinite otherwise). ``theta_star`` defaults to a fixed draw from N(0, I/d) made from ``key``.
    Returns a :class:`Dataset` with ``X`` (n, d), ``Y`` (n, 1).
    """
    v.key("key", key)
    n = v.positive_int("n (number of samples)", n)
    d = v.positive_int("d (input dimension)", d)
    v.one_of("inputs", inputs, {"gaussian", "student_t"})
    v.real("noise_std", noise_std, minimum=0.0)
    dtype = v.float_dtype("dtype", dtype)
    v.memory("X", (n, d), dtype.itemsize)
    v.memory("input_cov", (d, d), dtype.itemsize)
    if inputs == "student_t":
        v.positive_float("df (Student-t degrees of freedom)", df)
    if input_scales is None:
        scales = jnp.ones(d, dtype)
    else:
        scales = v.array("input_scales", input_scales)  # finite (checked on concrete values only)
        if scales.shape != (d,) or (not isinstance(scales, jax.core.Tracer)
                                    and not bool(np.all(np.asarray(scales) > 0))):
            v.fail(f"input_scales must be a positive vector of shape ({d},)", input_scales)
        scales = jnp.asarray(scales, dtype)
    k_theta, k_x, k_eps = jax.random.split(key, 3)
    if theta_star is None:
        theta_star = jax.random.normal(k_theta, (d,), dtype) / np.sqrt(d)
    else:
        theta_star = jnp.asarray(v.array("theta_star", theta_star, ndim=1), dtype)
        if theta_star.shape != (d,):
            v.fail(f"theta_star must have shape ({d},)", theta_star)
    if inputs == "gaussian":
        Z = jax.random.normal(k_x, (n, d), dtype)
        var = jnp.ones(d, dtype)
    else:
        Z = jax.random.t(k_x, df, (n, d), dtype)
        var = jnp.full(d, df / (df - 2) if df > 2 else jnp.inf, dtype)
    X = Z * scales
    Y = (X @ theta_star + noise_std * jax.random.normal(k_eps, (n,), dtype))[:, None]
    finite_var = inputs == "gaussian" or df > 2  # decided on concrete df, so this also works under jit
    input_cov = jnp.diag(var * scales**2) if finite_var else None
    return Dataset(X, Y, theta_star, input_cov, float(noise_std))


# ---------------------------------------------------------------------------------------------
# Two-layer linear network


def _dims(dims):
    """dims = (d0, d1, d2): three positive integers (integral floats accepted, 2.7 refused)."""
    if isinstance(dims, (str, bytes)) or not hasattr(dims, "__len__") or len(dims) != 3:
        v.fail("dims must be (d0, d1, d2)", dims)
    return tuple(v.count("each of dims (d0, d1, d2)", x) for x in dims)


def dln_unpack(theta, dims):
    """theta (d1*d0 + d2*d1,) -> (W1 (d1, d0), W2 (d2, d1)); vec stacks columns (Fortran order)."""
    d0, d1, d2 = _dims(dims)
    theta = v.array("theta (d1*d0 + d2*d1,)", theta, ndim=1)
    if theta.shape[0] != d1 * d0 + d2 * d1:
        v.fail(f"theta must have d1*d0 + d2*d1 = {d1 * d0 + d2 * d1} entries for dims {(d0, d1, d2)}", theta)
    W1 = theta[: d1 * d0].reshape(d0, d1).T
    W2 = theta[d1 * d0 :].reshape(d1, d2).T
    return W1, W2


def dln_pack(W1, W2):
    """(W1 (d1, d0), W2 (d2, d1)) -> theta = [vec W1; vec W2] (d1*d0 + d2*d1,), Fortran-order vec."""
    W1 = v.array("W1 (d1, d0)", W1, ndim=2, nonempty=True)
    W2 = v.array("W2 (d2, d1)", W2, ndim=2, nonempty=True)
    if W2.shape[1] != W1.shape[0]:
        v.fail(f"W2 (d2, d1) must have d1 = W1.shape[0] = {W1.shape[0]} columns", W2)
    return jnp.concatenate([W1.T.reshape(-1), W2.T.reshape(-1)])


def dln2_loss(theta, x, y, dims):
    """Per-sample loss of the two-layer linear network ``||y - W2 W1 x||^2`` (no 1/2).

    theta (d1*d0 + d2*d1,), x (d0,), y (d2,), dims = (d0, d1, d2) -> scalar.
    Use ``functools.partial(dln2_loss, dims=dims)`` as a ``loss_fn``.
    """
    d0, _, d2 = _dims(dims)
    x = v.array("x (d0,)", x, shape=(d0,))
    y = v.array("y (d2,)", y, shape=(d2,))
    W1, W2 = dln_unpack(theta, dims)
    r = y - W2 @ (W1 @ x)
    return jnp.sum(r * r)


def make_dln_teacher_data(key, n: int, dims, *, noise_std: float = 0.1, dtype=jnp.float32):
    """Teacher data for a linear network: ``x ~ N(0, I_{d0})``, ``y = M x + eps`` with a random teacher
    ``M`` (d2, d0) whose singular values are spread over [0.5, 3]; ``eps ~ N(0, noise_std^2 I)``.

    Returns ``(X (n, d0), Y (n, d2), M (d2, d0))``.
    """
    v.key("key", key)
    n = v.positive_int("n (number of samples)", n)
    d0, _, d2 = _dims(dims)
    v.real("noise_std", noise_std, minimum=0.0)
    dtype = v.float_dtype("dtype", dtype)
    v.memory("X and Y", (n, d0 + d2), dtype.itemsize)
    v.memory("the teacher factors", (max(d0, d2), min(d0, d2)), dtype.itemsize)
    k_u, k_v, k_x, k_e = jax.random.split(key, 4)
    r = min(d0, d2)
    U, _ = jnp.linalg.qr(jax.random.normal(k_u, (d2, r), dtype))
    V, _ = jnp.linalg.qr(jax.random.normal(k_v, (d0, r), dtype))
    s = jnp.linspace(3.0, 0.5, r, dtype=dtype)
    M = (U * s) @ V.T
    X = jax.random.normal(k_x, (n, d0), dtype)
    Y = X @ M.T + noise_std * jax.random.normal(k_e, (n, d2), dtype)
    return X, Y, M


# ---------------------------------------------------------------------------------------------
# A real data set shipped inside a package (no download)


def load_digits_regression(dtype=jnp.float32):
    """scikit-learn's bundled 8x8 digits as a regression problem (works offline).

    Inputs are the 64 pixel intensities scaled to [0, 1] and centred; targets are one-hot labels
    (10 columns), centred. Returns ``(X (1797, 64), Y (1797, 10))``.
    """
    dtype = v.float_dtype("dtype", dtype)
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no network

    data = load_digits()
    X = np.asarray(data.data, dtype=np.float64) / 16.0
    Y = np.eye(10)[data.target]
    X = X - X.mean(axis=0)
    Y = Y - Y.mean(axis=0)
    return jnp.asarray(X, dtype), jnp.asarray(Y, dtype)
