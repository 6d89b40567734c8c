"""One SGD ensemble simulator for the whole book (introduced in chapter 1).

Many independent trajectories run at once: the state is ``theta`` (m, d) for m trajectories, the
step loop is a ``lax.scan``/``fori_loop`` (no Python loop per step), and the gradient is evaluated for
all trajectories together. The update is heavy-ball SGD with optional weight decay,

    v_{k+1} = beta v_k - eta_k (g_{B_k}(theta_k) + wd theta_k),   theta_{k+1} = theta_k + v_{k+1},

which is plain SGD ``theta_{k+1} = theta_k - eta_k g_{B_k}(theta_k)`` for ``beta = wd = 0``.

Randomness: trajectory i uses ``trajectory_keys(key, m)[i]``; its batch at step k is a pure function
of (that key, k) -- see :func:`batch_indices` -- so an SDE can be driven by the same batches
(coupled runs), and the same key gives bit-identical output.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v
from .ensemble import (
    DivergenceError,
    EnsembleResult,
    check_record_steps,
    check_stats,
    divergence_message,
    finish,
    pooled_moments,
    report_divergence,
    scan_ensemble,
    segments,
)

SAMPLING = ("with_replacement", "without_replacement", "epoch")

SGDResult = EnsembleResult  # fields: see sgdnotes.ensemble.EnsembleResult (final_aux is the velocity)


def trajectory_keys(key, n_trajectories: int):
    """The per-trajectory keys used by the simulators: ``jax.random.split(key, m)`` -> (m,) keys."""
    return jax.random.split(key, n_trajectories)


def batch_indices(key, step, n: int, batch_size: int, sampling: str = "with_replacement"):
    """Indices (B,) of the minibatch used at SGD step ``step`` by the trajectory with key ``key``.

    ``with_replacement``: B i.i.d. uniform indices. ``without_replacement``: B distinct indices, drawn
    afresh every step. ``epoch``: a fresh random permutation of the n samples each epoch, consumed in
    consecutive chunks of B; an epoch has ``n // B`` steps (the last ``n % B`` samples of each
    permutation are skipped).
    """
    if sampling == "with_replacement":
        return jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, n)
    if sampling == "without_replacement":
        perm = jax.random.permutation(jax.random.fold_in(key, step), n)
        return perm[:batch_size]
    steps_per_epoch = n // batch_size
    epoch, j = step // steps_per_epoch, step % steps_per_epoch
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
    return jax.lax.dynamic_slice(perm, (j * batch_size,), (batch_size,))


def mean_loss(loss_fn, theta, X, Y):
    """``L(theta) = mean_i loss_fn(theta, x_i, y_i)`` over the rows of X (n, d_in), Y (n, d_out)."""
    return jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0, 0))(theta, X, Y))


@partial(
    jax.jit,
    static_argnames=("loss_fn", "batch_size", "sampling", "schedule", "record_params", "record_loss", "stats"),
)
def _simulate(keys, theta0, X, Y, eta, beta, wd, seg_lengths, tail, burn_in, *,
              loss_fn, batch_size, sampling, schedule, record_params, record_loss, stats):
    n = X.shape[0]
    batch_grad = jax.grad(lambda th, Xb, Yb: mean_loss(loss_fn, th, Xb, Yb))

    def step(k, theta, vel):
        idx = jax.vmap(lambda kk: batch_indices(kk, k, n, batch_size, sampling))(keys)  # (m, B)
        g = jax.vmap(batch_grad)(theta, X[idx], Y[idx])  # (m, d)
        lr = eta if schedule is None else schedule(k)
        vel = beta * vel - lr * (g + wd * theta)
        return theta + vel, vel

    observe = jax.vmap(lambda th: mean_loss(loss_fn, th, X, Y)) if record_loss else None
    return scan_ensemble(step, theta0, jnp.zeros_like(theta0), seg_lengths, tail, burn_in,
                         stats=stats, record_params=record_params, observe=observe)


def run_sgd(
    key,
    loss_fn: Callable,
    theta0,
    X,
    Y,
    *,
    eta,
    batch_size: int,
    n_steps: int,
    n_trajectories: int | None = None,
    sampling: str = "with_replacement",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    record_steps=None,
    record_params: bool = True,
    record_loss: bool = False,
    stats: str | None = None,
    burn_in: int = 0,
    on_divergence: str = "raise",
    lam_max: float | None = None,
) -> SGDResult:
    """Simulate an ensemble of SGD trajectories on ``L_n(theta) = mean_i loss_fn(theta, x_i, y_i)``.

    Args:
        key: JAX PRNG key (first argument, as everywhere in ``sgdnotes``).
        loss_fn: per-sample loss ``loss_fn(theta (d,), x (d_in,), y (d_out,)) -> scalar``. Must be a
            stable object (module-level function or a ``functools.partial`` kept in a variable) for
            compiled code to be reused across calls.
        theta0: initial point (d,) shared by all trajectories, or (m, d) one per trajectory.
        X, Y: data (n, d_in) and (n, d_out).
        eta: learning rate, a float > 0 or a schedule ``eta(k) -> float`` (jnp-traceable).
        batch_size: B >= 1 (and B <= n unless sampling with replacement).
        n_steps: number of updates K.
        n_trajectories: m; defaults to theta0.shape[0] if theta0 is (m, d), else 1.
        sampling: "with_replacement", "without_replacement" (fresh distinct indices each step) or
            "epoch" (reshuffle each epoch, consecutive chunks); see :func:`batch_indices`.
        momentum, weight_decay: heavy-ball beta in [0, 1) and L2 coefficient >= 0.
        record_steps: step indices in [0, n_steps] at which to record (default: 0 and n_steps).
        record_params, record_loss: what to record at ``record_steps`` (theta (r, m, d); L_n (r, m)).
        stats: None, "mean" or "cov": streaming per-trajectory time average (and covariance) of
            theta_k over burn_in < k <= n_steps, without storing paths.
        on_divergence: "raise" (DivergenceError), "warn" (RuntimeWarning) or "ignore" when a
            trajectory becomes non-finite; ``diverged_step`` reports it in every case.
        lam_max: largest Hessian eigenvalue for the divergence hint (estimated at theta0 if None).

    Returns:
        :class:`sgdnotes.ensemble.EnsembleResult` (``final_aux`` is the velocity).
    """
    X = v.array("X", X, ndim=2)
    Y = v.array("Y", Y, ndim=2)
    v.same_rows(X, Y)
    n = X.shape[0]
    theta0 = v.array("theta0", theta0)
    if theta0.ndim not in (1, 2):
        v.fail("theta0 must have shape (d,) or (m, d)", theta0)
    v.one_of("sampling", sampling, set(SAMPLING))
    B = v.positive_int("batch_size", batch_size, 1)
    if sampling != "with_replacement" and B > n:
        v.fail(f"batch_size must be <= n = {n} when sampling without replacement ({sampling})", batch_size)
    K = v.positive_int("n_steps", n_steps, 0)
    if theta0.ndim == 2:
        m = theta0.shape[0] if n_trajectories is None else n_trajectories
        v.positive_int("n_trajectories", m)
        if theta0.shape[0] != m:
            v.fail(f"theta0 of shape (m, d) must have m = n_trajectories = {m} rows", theta0)
    else:
        m = v.positive_int("n_trajectories", 1 if n_trajectories is None else n_trajectories)
    schedule = None
    if callable(eta):
        schedule = eta
        eta0 = float(eta(0))
        v.positive_float("eta (learning rate) at step 0", eta0)
        eta_arr = jnp.asarray(0.0)
    else:
        eta_arr = jnp.asarray(v.positive_float("eta (learning rate)", eta))
    beta = v.in_range("momentum", momentum, 0.0, 1.0)
    if weight_decay < 0 or not np.isfinite(weight_decay):
        v.fail("weight_decay must be a finite number >= 0", weight_decay)
    if stats not in (None, "mean", "cov"):
        v.fail("stats must be None, 'mean' or 'cov'", stats)
    burn_in = check_stats(stats, burn_in, K)
    v.one_of("on_divergence", on_divergence, {"raise", "warn", "ignore"})
    steps = check_record_steps(record_steps, K)

    theta0_m = jnp.broadcast_to(theta0, (m, theta0.shape[-1])) if theta0.ndim == 1 else jnp.asarray(theta0)
    theta0_m = theta0_m.astype(jnp.result_type(theta0_m.dtype, jnp.float32))
    try:
        out = jax.eval_shape(loss_fn, theta0_m[0], X[0], Y[0])
    except Exception as exc:  # shape mismatch between theta, x and y
        v.fail(
            f"loss_fn(theta, x, y) must accept theta {theta0_m.shape[1:]}, x {X.shape[1:]}, y {Y.shape[1:]} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            theta0,
        )
    if out.shape != ():
        v.fail("loss_fn(theta, x, y) must return a scalar", out)

    seg, tail = segments(steps, K)
    dt = theta0_m.dtype
    out = _simulate(
        trajectory_keys(key, m), theta0_m, jnp.asarray(X, dt), jnp.asarray(Y, dt), eta_arr.astype(dt),
        jnp.asarray(beta, dt), jnp.asarray(weight_decay, dt), seg, tail, jnp.int32(burn_in),
        loss_fn=loss_fn, batch_size=B, sampling=sampling, schedule=schedule,
        record_params=record_params, record_loss=record_loss, stats=stats,
    )
    result = finish(steps, K, burn_in, stats, out)
    report_divergence(result, on_divergence, lambda: divergence_message(
        "SGD", result.diverged_step, eta0 if schedule is not None else float(eta_arr), lam_max,
        lambda: _hessian_top_eig(loss_fn, theta0_m[0], X, Y)))
    return result


def _hessian_top_eig(loss_fn, theta, X, Y):
    """Largest eigenvalue of the Hessian of L_n at theta (None if d is too large to form it)."""
    if theta.shape[0] > 400:
        return None
    H = jax.hessian(lambda th: mean_loss(loss_fn, th, jnp.asarray(X), jnp.asarray(Y)))(theta)
    return float(jnp.linalg.eigvalsh(H).max())
