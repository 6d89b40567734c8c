"""One SGD ensemble simulator for the whole book (introduced in chapter 1).

Many independent trajectories run at once: the state is ``theta`` (m, d) for m trajectories, the
step loop is :func:`sgdnotes.ensemble.scan_ensemble` (``lax.scan``/``fori_loop``, no Python loop per
step). The update is heavy-ball SGD with optional weight decay,

    v_{k+1} = beta v_k - eta_k (g_{B_k}(theta_k) + wd theta_k),   theta_{k+1} = theta_k + v_{k+1},

which is plain SGD ``theta_{k+1} = theta_k - eta_k g_{B_k}(theta_k)`` for ``beta = wd = 0``.

Randomness: trajectory i uses ``trajectory_keys(key, m)[i]``; its batch at step k is a pure function
of (that key, k) -- :func:`batch_indices`, the single definition the simulator itself evaluates -- so
an SDE can be driven by the same batches (coupled runs), and the same key gives bit-identical output.

Speed (DESIGN.md section 8): trajectories run in blocks of ``block_size`` (16 on CPUs, one block per
device on a GPU: :func:`sgdnotes.ensemble.default_block`) with the
trajectory axis last, and the batch gradient of the known losses (``models.linreg_loss``,
``functools.partial(models.dln2_loss, dims=...)``) is computed by hand-written vectorised formulas
(the two-layer network from the batch means of x x^T and y x^T); any other per-sample loss uses
``jax.grad``. The two agree to float32 round-off on the same batches (tests/test_sgd.py).
"""

from __future__ import annotations

import functools
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v
from . import models
from .ensemble import (
    MAX_STEPS,
    default_block,
    EnsembleResult,
    check_chunking,
    check_flag,
    check_growth,
    check_initial,
    check_memory,
    check_record_steps,
    check_stats,
    check_steps,
    divergence_message,
    finish,
    init_carry,
    initial_shape,
    report_divergence,
    resolve_mesh,
    run_chunks,
    scan_ensemble,
    warn_unstable,
)

SAMPLING = ("with_replacement", "without_replacement", "epoch")
BATCH_GRADS = ("auto", "generic")

SGDResult = EnsembleResult  # fields: see sgdnotes.ensemble.EnsembleResult (final_aux is the velocity)

# Counter tags: the batch words of step k are Threefry-2x32(trajectory key, (k, TAG + j)). jax.random.fold_in
# hashes the counter (0, data) and jax.random.bits the counters (0, i), so a collision with them would need
# a fold_in datum or an array size near TAG (> 3e8): the streams are separate in practice.
_TAG_WITH = 0x243F6A88
_TAG_WITHOUT = 0x85A308D3
_TAG_EPOCH = 0x13198A2E
_FLOYD_MAX_B = 32  # without replacement: Floyd's algorithm for B <= 32, sorting random keys above


def trajectory_keys(key, n_trajectories: int):
    """The per-trajectory keys used by the simulators: ``jax.random.split(key, m)`` -> (m,) keys."""
    key = v.key("key", key)
    return jax.random.split(key, v.positive_int("n_trajectories", n_trajectories, 1))


def _key_pair(keys):
    """(..., 2) uint32 Threefry key words of PRNG keys (...,) (other key types: word halves xor-ed)."""
    data = jax.random.key_data(keys) if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys
    data = jnp.asarray(data, jnp.uint32)
    if data.shape[-1] == 2:
        return data
    if data.shape[-1] % 2:
        raise ValueError(f"unsupported PRNG key data shape {data.shape}")
    h = data.shape[-1] // 2
    return data[..., :2] ^ data[..., h:h + 2]


def _threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 (20 rounds; Salmon et al. 2011), bit-identical to ``jax.extend.random.threefry_2x32``.

    Written with jnp integer ops (broadcasting) so that XLA fuses it into the simulator's step; JAX's
    own CPU lowering is a rolled loop that costs a loop launch per step.
    """
    u32 = jnp.uint32
    ks = (k0, k1, k0 ^ k1 ^ u32(0x1BD11BDA))
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x0 = x0 + x1
            x1 = (x1 << u32(r)) | (x1 >> u32(32 - r))
            x1 = x0 ^ x1
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + u32(i + 1)
    return x0, x1


def _blocks(pair, counter, tag, h):
    """Threefry words of the h blocks (counter, tag + j), j < h: (y0, y1), each (h, *pair.shape[1:])."""
    shape = (h,) + tuple(pair.shape[1:])
    j = jnp.arange(h, dtype=jnp.uint32).reshape((h,) + (1,) * (pair.ndim - 1))
    x0 = jnp.broadcast_to(jnp.asarray(counter).astype(jnp.uint32), shape)
    x1 = jnp.broadcast_to(jnp.uint32(tag) + j, shape)
    y0, y1 = _threefry2x32(pair[0], pair[1], x0, x1)
    return y0, y1


def _words(pair, counter, tag, count):
    """``count`` uint32 words of a trajectory (pair (2,)) or of several (pair (2, b)) -> (count, ...).

    The words are those of ``threefry_2x32(pair, [counter]*h + [tag + j for j < h])``, h = ceil(count/2).
    """
    y0, y1 = _blocks(pair, counter, tag, (count + 1) // 2)
    return jnp.concatenate([y0, y1], axis=0)[:count]


def _random_perm(pair, counter, tag, n):
    """Uniformly random permutation(s) (n, ...) int32: stable argsort of n random 64-bit keys."""
    hi, lo = _blocks(pair, counter, tag, n)
    iota = jax.lax.broadcasted_iota(jnp.int32, hi.shape, 0)
    return jax.lax.sort((hi, lo, iota), dimension=0, num_keys=2)[2]


def _epoch_perm(pair, epoch, n):
    return _random_perm(pair, epoch, _TAG_EPOCH, n)


def _indices(pair, step, n: int, batch_size: int, sampling: str, epoch_perm=None):
    """Batch indices (B, ...) int32 at ``step`` for key words ``pair`` (2,) or (2, b) (trajectories last).

    The one definition behind :func:`batch_indices` (pair (2,)) and the simulator (pair (2, b)); all
    operations are elementwise over the trailing trajectory axis, so both give the same integers.
    ``epoch_perm`` lets the simulator pass the current epoch's permutation (:func:`_epoch_perm`),
    computed once per epoch instead of once per step.
    """
    B = batch_size
    step = jnp.asarray(step, jnp.int32)
    if sampling == "with_replacement":
        return (_words(pair, step, _TAG_WITH, B) % jnp.uint32(n)).astype(jnp.int32)
    if sampling == "without_replacement":
        if B <= _FLOYD_MAX_B:  # Floyd's algorithm: a uniformly random B-subset of range(n)
            w = _words(pair, step, _TAG_WITHOUT, B)
            chosen = []
            for j in range(B):
                i = n - B + j
                t = (w[j] % jnp.uint32(i + 1)).astype(jnp.int32)
                dup = jnp.zeros(t.shape, bool)
                for s in chosen:
                    dup = dup | (s == t)
                chosen.append(jnp.where(dup, jnp.int32(i), t))
            return jnp.stack(chosen)
        return _random_perm(pair, step, _TAG_WITHOUT, n)[:B]
    steps_per_epoch = n // B
    epoch, j = step // steps_per_epoch, step % steps_per_epoch
    perm = _epoch_perm(pair, epoch, n) if epoch_perm is None else epoch_perm
    return jax.lax.dynamic_slice_in_dim(perm, j * B, B, axis=0)


def batch_indices(key, step, n: int, batch_size: int, sampling: str = "with_replacement"):
    """Indices (B,) of the minibatch used at SGD step ``step`` by the trajectory with key ``key``.

    ``key`` is one of :func:`trajectory_keys` (``jax.vmap`` this function over them for an ensemble).
    The simulator computes its batches with exactly this definition. Random words are
    Threefry-2x32 of the key at counters (step, tag + j).

    ``with_replacement``: B i.i.d. uniform indices (word mod n; relative bias < n / 2**32).
    ``without_replacement``: B distinct indices, a uniformly random subset drawn afresh every step
    (Floyd's algorithm for B <= 32, otherwise the first B of a random permutation); their order is
    not uniformly random, which does not matter for a batch mean.
    ``epoch``: a fresh random permutation of the n samples each epoch, consumed in consecutive
    chunks of B; an epoch has ``n // B`` steps (the last ``n % B`` samples of each permutation are
    skipped).

    Validated: ``key`` a single PRNG key, ``step`` an integer scalar in [0, 2**31 - 1) (checked when
    concrete; traced steps are accepted), ``n >= 1``, ``B >= 1`` and ``B <= n`` unless sampling with
    replacement, ``sampling`` one of the three names. Works under ``jit``/``vmap`` (checks use shapes
    and dtypes only for traced arguments).
    """
    key = v.key("key", key)
    v.one_of("sampling", sampling, set(SAMPLING))
    n = v.positive_int("n (number of samples)", n, 1)
    B = v.positive_int("batch_size", batch_size, 1, None if sampling == "with_replacement" else n)
    sdt = getattr(step, "dtype", None)
    if sdt is not None:
        if getattr(step, "shape", ()) != () or not jnp.issubdtype(sdt, jnp.integer):
            v.fail("step must be an integer scalar", step)
        if not isinstance(step, jax.core.Tracer):
            step = int(step)
    elif isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        v.fail("step must be an integer scalar", step)
    if isinstance(step, (int, np.integer)):
        step = v.positive_int("step", step, 0, MAX_STEPS - 1)
    return _batch_indices(key, step, n=n, batch_size=B, sampling=sampling)


@partial(jax.jit, static_argnames=("n", "batch_size", "sampling"))
def _batch_indices(key, step, *, n, batch_size, sampling):
    return _indices(_key_pair(key), step, n, batch_size, sampling)


def mean_loss(loss_fn, theta, X, Y):
    """``L(theta) = mean_i loss_fn(theta, x_i, y_i)`` over the rows of X (n, d_in), Y (n, d_out)."""
    return jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0, 0))(theta, X, Y))


# ---------------------------------------------------------------------------------------------
# Ensemble batch gradients: g(theta (d, b), xb (d_in, B, b), yb (d_out, B, b)) -> (d, b), trajectories last


def _generic_batch_grad(loss_fn):
    """Batch gradient by ``jax.grad`` of the mean per-sample loss, vmapped over trajectories."""
    grad = jax.grad(lambda th, Xb, Yb: mean_loss(loss_fn, th, Xb, Yb))  # theta (d,), Xb (B, d_in), Yb (B, d_out)
    vgrad = jax.vmap(grad, in_axes=(1, 2, 2), out_axes=1)
    return lambda th, xb, yb: vgrad(th, jnp.swapaxes(xb, 0, 1), jnp.swapaxes(yb, 0, 1))


_SMALL = 512  # products with i*k*j <= this: broadcast-multiply-sum (XLA vectorises it over the trajectory
# axis, fastest for tiny models); larger ones: einsum (XLA's dot kernels). Measured on the reference DLN
# and on the digits regression.


def _mm(A, C):
    """Batched small matmul over the last (trajectory) axis: A (i, k, b) @ C (k, j, b) -> (i, j, b)."""
    if A.shape[0] * A.shape[1] * C.shape[1] <= _SMALL:
        return jnp.sum(A[:, :, None, :] * C[None, :, :, :], axis=1)
    return jnp.einsum("ikb,kjb->ijb", A, C)


def _linreg_batch_grad(theta, xb, yb):
    """Batch gradient of ``1/2 ||y - W^T x||^2`` (models.linreg_loss): mean_b x (W^T x - y)^T, row-major W."""
    d_in, B, b = xb.shape
    W = theta.reshape(d_in, -1, b)  # (d_in, d_out, b)
    if d_in * W.shape[1] * B <= _SMALL:
        r = jnp.sum(W[:, :, None, :] * xb[:, None, :, :], axis=0) - yb  # (d_out, B, b)
        g = jnp.mean(xb[:, None, :, :] * r[None, :, :, :], axis=2)  # (d_in, d_out, b)
    else:
        r = jnp.einsum("iob,ijb->ojb", W, xb) - yb
        g = jnp.einsum("ijb,ojb->iob", xb, r) / B
    return g.reshape(-1, b)


def _dln2_split(theta, dims):
    d0, d1, d2 = dims
    b = theta.shape[-1]
    W1 = jnp.swapaxes(theta[: d1 * d0].reshape(d0, d1, b), 0, 1)  # (d1, d0, b); vec is column-major
    W2 = jnp.swapaxes(theta[d1 * d0:].reshape(d1, d2, b), 0, 1)  # (d2, d1, b)
    return W1, W2


def _dln2_join(g1, g2):
    b = g1.shape[-1]
    return jnp.concatenate([jnp.swapaxes(g1, 0, 1).reshape(-1, b), jnp.swapaxes(g2, 0, 1).reshape(-1, b)])


def _dln2_suffstats_cheaper(dims, B):
    d0, d1, d2 = dims
    return B * d0 * (d0 + d2) + 4 * d0 * d1 * d2 <= B * (2 * d0 * d1 + 3 * d1 * d2)


def _dln2_grad_from_stats(W1, W2, Sxx, Syx):
    """Gradient of ``sum_i w_i ||y_i - W2 W1 x_i||^2`` from Sxx = sum_i w_i x_i x_i^T (d0, d0, b) and
    Syx = sum_i w_i y_i x_i^T (d2, d0, b): G = 2 (W2 W1 Sxx - Syx), dW1 = W2^T G, dW2 = G W1^T -> (d, b).
    Weights 1/B give the batch gradient; any weights give a weighted sum of per-sample gradients."""
    G = 2.0 * (_mm(_mm(W2, W1), Sxx) - Syx)  # (d2, d0, b)
    return _dln2_join(_mm(jnp.swapaxes(W2, 0, 1), G), _mm(G, jnp.swapaxes(W1, 0, 1)))


def _dln2_batch_grad(theta, xb, yb, *, dims):
    """Batch gradient of ``||y - W2 W1 x||^2`` (models.dln2_loss) for theta = [vec W1; vec W2].

    With G = 2 (W2 W1 Sxx - Syx), Sxx = mean_b x x^T, Syx = mean_b y x^T (batch sufficient statistics):
    dW1 = W2^T G, dW2 = G W1^T. For wide layers (where that costs more) the per-sample chain rule is used.
    """
    W1, W2 = _dln2_split(theta, dims)
    B = xb.shape[1]
    if _dln2_suffstats_cheaper(dims, B):
        Sxx = _mm(xb, jnp.swapaxes(xb, 0, 1)) / B  # (d0, d0, b) = mean_b x x^T
        Syx = _mm(yb, jnp.swapaxes(xb, 0, 1)) / B  # (d2, d0, b) = mean_b y x^T
        return _dln2_grad_from_stats(W1, W2, Sxx, Syx)
    else:  # per-sample chain rule, products via _mm: h = W1 x, r = W2 h - y, g2 = 2 r h^T / B, g1 = 2 W2^T r x^T / B
        h = _mm(W1, xb)  # (d1, B, b)
        r = _mm(W2, h) - yb  # (d2, B, b)
        g2 = (2.0 / B) * _mm(r, jnp.swapaxes(h, 0, 1))  # (d2, d1, b)
        dh = _mm(jnp.swapaxes(W2, 0, 1), r)  # (d1, B, b)
        g1 = (2.0 / B) * _mm(dh, jnp.swapaxes(xb, 0, 1))  # (d1, d0, b)
    return _dln2_join(g1, g2)


def _known_batch_grad(loss_fn):
    """The hand-written batch gradient for a known per-sample loss, or None."""
    if loss_fn is models.linreg_loss:
        return _linreg_batch_grad
    if (isinstance(loss_fn, functools.partial) and loss_fn.func is models.dln2_loss and not loss_fn.args
            and set(loss_fn.keywords) == {"dims"}):
        return _dln2_hook(tuple(int(x) for x in loss_fn.keywords["dims"]))
    return None


@functools.lru_cache(maxsize=None)
def _dln2_hook(dims):
    """One stable hook object per dims, so the jitted simulator is not recompiled on every call."""
    return partial(_dln2_batch_grad, dims=dims)


# ---------------------------------------------------------------------------------------------


def _simulate(carry, replicated, seg_lengths, k0, burn_in, *,
              loss_fn, grad_fn, batch_size, sampling, schedule, heavy_ball, record_params, record_loss, stats,
              block_size):
    """One chunk of the SGD ensemble (traced, per device): see :func:`sgdnotes.ensemble.run_chunks`."""
    X, Y, eta, beta, wd = replicated
    n = X.shape[0]
    B = batch_size
    Xt, Yt = X.T, Y.T
    g_fn = grad_fn if grad_fn is not None else _generic_batch_grad(loss_fn)
    epoch = sampling == "epoch"
    spe = n // B

    def step(k, theta, aux):  # theta (d, b); aux leaves with trajectories last
        vel, pair, perm = aux  # (d, b), (2, b), (n, b) | None
        if epoch:
            perm = jax.lax.cond(k % spe == 0, lambda: _epoch_perm(pair, k // spe, n), lambda: perm)
        idx = _indices(pair, k, n, B, sampling, perm)  # (B, b)
        g = g_fn(theta, Xt[:, idx], Yt[:, idx])
        lr = eta if schedule is None else schedule(k)
        if heavy_ball:
            vel = beta * vel - lr * (g + wd * theta)
            theta = theta + vel
        else:
            theta = theta - lr * g
        return theta, (vel, pair, perm)

    observe = jax.vmap(lambda th: mean_loss(loss_fn, th, X, Y)) if record_loss else None
    return scan_ensemble(step, carry, seg_lengths, k0, burn_in, stats=stats, record_params=record_params,
                         observe=observe, block_size=min(block_size, carry.theta.shape[0]))


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
    batch_grad="auto",
    block_size: int | None = None,
    mesh=None,
    chunk_steps: int | None = None,
    progress=False,
    max_growth: float | None = 1e6,
) -> SGDResult:
    """Simulate an ensemble of SGD trajectories on ``L_n(theta) = mean_i loss_fn(theta, x_i, y_i)``.

    Not jittable: it validates concrete inputs and runs the steps in chunks from Python (each chunk is
    one call of a jitted, cached function). Call it from ordinary Python code.

    Args:
        key: JAX PRNG key (first argument, as everywhere in ``sgdnotes``).
        loss_fn: per-sample loss ``loss_fn(theta (d,), x (d_in,), y (d_out,)) -> scalar``. Must be a
            stable object (module-level function or a ``functools.partial`` kept in a variable) for
            compiled code to be reused across calls.
        theta0: initial point (d,) shared by all trajectories, or (m, d) one per trajectory.
        X, Y: data (n, d_in) and (n, d_out).
        eta: learning rate, a float > 0 or a schedule ``eta(k) -> float`` (jnp-traceable), > 0 at k = 0
            and >= 0 at every step (checked for all k < n_steps before the run).
        batch_size: B >= 1 (and B <= n unless sampling with replacement).
        n_steps: number of updates K, 0 <= K <= 2**31 - 1.
        n_trajectories: m; defaults to theta0.shape[0] if theta0 is (m, d), else 1.
        sampling: "with_replacement", "without_replacement" (fresh distinct indices each step) or
            "epoch" (reshuffle each epoch, consecutive chunks); see :func:`batch_indices`.
        momentum, weight_decay: heavy-ball beta in [0, 1) and L2 coefficient >= 0.
        record_steps: step indices in [0, n_steps] at which to record (default: 0 and n_steps).
        record_params, record_loss: what to record at ``record_steps`` (theta (r, m, d); L_n (r, m)).
        stats: None, "mean" or "cov": streaming per-trajectory time average (and covariance) of
            theta_k over burn_in < k <= n_steps, without storing paths (memory O(m d) for "mean",
            O(m d^2) for "cov", whatever n_steps); accumulated relative to the first averaged state with
            compensated sums, so a large offset does not cancel.
        on_divergence: "raise" (DivergenceError), "warn" (RuntimeWarning) or "ignore" when a
            trajectory becomes non-finite or its norm exceeds 1e6 max(|theta_0|, 1); ``diverged_step``
            reports it in every case. A RuntimeWarning is also given up front when
            ``eta * lambda_max >= 2 (1 + momentum)`` (max of eta over the steps for a schedule).
        lam_max: largest Hessian eigenvalue for the stability warning and the divergence hint
            (computed at theta0 if None and d <= 400).
        batch_grad: how the minibatch gradient is computed. "auto" (default): hand-written vectorised
            formulas for ``models.linreg_loss`` and ``partial(models.dln2_loss, dims=...)``, ``jax.grad``
            of the per-sample loss otherwise; "generic": always ``jax.grad``; or a callable
            ``g(theta (d, b), xb (d_in, B, b), yb (d_out, B, b)) -> (d, b)`` returning the batch-mean
            gradient of b trajectories at once (trajectory axis last; a stable object).
        block_size: trajectories simulated together (trajectory axis last; blocks run one after
            another). None (default): 16 on CPUs (suits AVX-512), all of a device's trajectories on a GPU
            (:func:`sgdnotes.ensemble.default_block`); results do not depend on it.
        mesh: None (default): shard the trajectories over all ``jax.devices()`` when there are several;
            False: one device; or a one-axis ``jax.sharding.Mesh``. Results are bit-identical to one device.
        chunk_steps: at most this many steps per compiled call (default: about 2**23 / m); results do not
            depend on it. Between chunks the progress is reported and Ctrl-C is honoured: a
            KeyboardInterrupt returns the steps completed so far with ``interrupted=True``.
        progress: False (default), True (a ``tqdm`` bar, for Jupyter and terminals) or a callable
            ``progress(done_steps, n_steps)`` called after each chunk.
        max_growth: a trajectory counts as diverged once |theta_k| > max_growth * max(|theta_0|, 1)
            (default 1e6, before float overflow); None: only NaN/inf count (e.g. to study heavy tails).

    Returns:
        :class:`sgdnotes.ensemble.EnsembleResult` (``final_aux`` is the velocity).
    """
    key = v.key("key", key)
    if not callable(loss_fn):
        v.fail("loss_fn must be a callable loss_fn(theta, x, y) -> scalar", loss_fn)
    X = v.array("X", X, ndim=2)
    Y = v.array("Y", Y, ndim=2)
    v.same_rows(X, Y)
    n = X.shape[0]
    if n == 0:
        v.fail("X and Y must have at least one row (sample)", X)
    v.one_of("sampling", sampling, set(SAMPLING))
    B = v.positive_int("batch_size", batch_size, 1)
    if sampling != "with_replacement" and B > n:
        v.fail(f"batch_size must be <= n = {n} when sampling without replacement ({sampling})", batch_size)
    K = check_steps("n_steps", n_steps)
    theta0_a, m, d = initial_shape(theta0, n_trajectories)
    beta = v.in_range("momentum", momentum, 0.0, 1.0)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float, np.integer, np.floating)):
        v.fail("weight_decay must be a finite number >= 0", weight_decay)
    if weight_decay < 0 or not np.isfinite(weight_decay):
        v.fail("weight_decay must be a finite number >= 0", weight_decay)
    burn_in = check_stats(stats, burn_in, K)
    v.one_of("on_divergence", on_divergence, {"raise", "warn", "ignore"})
    steps = check_record_steps(record_steps, K)
    record_params = check_flag("record_params", record_params)
    record_loss = check_flag("record_loss", record_loss)
    if block_size is not None:
        block_size = v.positive_int("block_size", block_size, 1)
    if lam_max is not None:
        lam_max = v.positive_float("lam_max", lam_max)
    check_chunking(chunk_steps, progress)
    max_growth = check_growth(max_growth)
    mesh = resolve_mesh(mesh)
    check_memory(m, d, n_records=steps.size, record_params=record_params, record_loss=record_loss, stats=stats,
                 aux_per_traj=4 * (d + 2 + (n if sampling == "epoch" else 0)), mesh=mesh)
    theta0_m, m = check_initial(theta0_a, m)
    block_size = default_block(block_size, m, mesh, 16)
    schedule = None
    if callable(eta):
        schedule = eta
        eta_lo, eta_hi = _check_schedule(eta, K)
    else:
        eta_lo = eta_hi = v.positive_float("eta (learning rate)", eta)
    eta_arr = jnp.asarray(0.0 if schedule is not None else eta_hi)
    if callable(batch_grad):
        grad_fn = batch_grad
    else:
        v.one_of("batch_grad", batch_grad, set(BATCH_GRADS))
        grad_fn = _known_batch_grad(loss_fn) if batch_grad == "auto" else None
    _check_known_shapes(loss_fn, theta0_m, X, Y)

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
    if grad_fn is not None:
        b = min(block_size, m)
        try:
            gs = jax.eval_shape(grad_fn, jax.ShapeDtypeStruct((d, b), theta0_m.dtype),
                                jax.ShapeDtypeStruct((X.shape[1], B, b), theta0_m.dtype),
                                jax.ShapeDtypeStruct((Y.shape[1], B, b), theta0_m.dtype))
        except Exception as exc:
            v.fail(f"batch_grad must accept theta ({d}, b), xb ({X.shape[1]}, {B}, b), yb ({Y.shape[1]}, {B}, b) "
                   f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", theta0)
        if gs.shape != (d, b):
            v.fail(f"batch_grad must return the gradient of shape ({d}, b)", gs)

    lam = [lam_max]

    def top_eig():
        if lam[0] is None:
            lam[0] = _hessian_top_eig(loss_fn, theta0_m[0], X, Y)
        return lam[0]

    if K > 0:
        warn_unstable("run_sgd", eta_hi, top_eig(), beta)
    dt = theta0_m.dtype
    pairs = _key_pair(trajectory_keys(key, m))
    perm0 = jnp.zeros((m, n), jnp.int32) if sampling == "epoch" else None
    carry = init_carry(theta0_m, (jnp.zeros_like(theta0_m), pairs, perm0), stats, max_growth)
    replicated = (jnp.asarray(X, dt), jnp.asarray(Y, dt), eta_arr.astype(dt), jnp.asarray(beta, dt),
                  jnp.asarray(weight_decay, dt))
    static = dict(loss_fn=loss_fn, grad_fn=grad_fn, batch_size=B, sampling=sampling, schedule=schedule,
                  heavy_ball=bool(beta != 0.0 or weight_decay != 0.0), record_params=record_params,
                  record_loss=record_loss, stats=stats, block_size=block_size)
    carry, thetas, observed, done = run_chunks(
        _simulate, carry, replicated, steps=steps, n_steps=K, burn_in=burn_in, static=static, mesh=mesh,
        block=min(block_size, m),
        chunk_steps=chunk_steps, progress=progress, desc="run_sgd", record_params=record_params,
        record_obs=record_loss)
    result = finish(steps, K, burn_in, stats, carry, thetas, observed, done, carry.aux[0])
    report_divergence(result, on_divergence, lambda: divergence_message(
        "SGD", result.diverged_step, schedule if schedule is not None else eta_hi, lam_max, top_eig,
        momentum=beta))
    return result


_SCHEDULE_BLOCK = 1 << 20


@partial(jax.jit, static_argnames=("schedule", "size"))
def _schedule_block(k0, *, schedule, size):
    """(min, max, first bad offset or size) of eta(k) for k in [k0, k0 + size); bad: negative or non-finite."""
    k = k0 + jnp.arange(size, dtype=jnp.int32)
    e = jax.vmap(lambda kk: jnp.asarray(schedule(kk), jnp.float32))(k)
    bad = ~(e >= 0) | ~jnp.isfinite(e)
    first = jnp.where(jnp.any(bad), jnp.argmax(bad), size)
    return jnp.min(e), jnp.max(e), first


def _check_schedule(schedule, K):
    """Validate a learning-rate schedule at every step k < K; returns (min, max) of eta(k)."""
    try:
        e0 = jax.eval_shape(schedule, jax.ShapeDtypeStruct((), jnp.int32))
    except Exception as exc:
        v.fail(f"eta schedule must accept a traced int32 step k ({type(exc).__name__}: "
               f"{str(exc).splitlines()[0][:200]})", schedule)
    if getattr(e0, "shape", None) != ():
        v.fail("eta schedule eta(k) must return a scalar", e0)
    v.positive_float("eta (learning rate) at step 0", float(schedule(0)))
    lo, hi = np.inf, -np.inf
    for k0 in range(0, max(K, 1), _SCHEDULE_BLOCK):
        size = min(_SCHEDULE_BLOCK, max(K, 1) - k0)
        size = 1 << max(int(np.ceil(np.log2(size))), 0)  # few distinct compiled sizes
        a, b, first = _schedule_block(jnp.int32(k0), schedule=schedule, size=size)
        first = int(first)
        if first < size and k0 + first < max(K, 1):
            kb = k0 + first
            v.fail(f"eta schedule must be finite and >= 0 at every step k < n_steps; eta({kb}) =", float(schedule(kb)))
        lo, hi = min(lo, float(a)), max(hi, float(b))
    return lo, hi


def _check_known_shapes(loss_fn, theta0, X, Y):
    """theta, X and Y must fit each other for the known losses (their formulas would broadcast silently)."""
    d, d_in, d_out = theta0.shape[-1], X.shape[1], Y.shape[1]
    if loss_fn is models.linreg_loss and d != d_in * d_out:
        v.fail(f"linreg_loss needs theta of size d_in * d_out = {d_in} * {d_out} = {d_in * d_out} "
               f"(X {tuple(X.shape)}, Y {tuple(Y.shape)})", theta0)
    if isinstance(loss_fn, functools.partial) and loss_fn.func is models.dln2_loss and "dims" in loss_fn.keywords:
        d0, d1, d2 = (int(x) for x in loss_fn.keywords["dims"])
        if (d_in, d_out, d) != (d0, d2, d1 * d0 + d2 * d1):
            v.fail(f"dln2_loss with dims {(d0, d1, d2)} needs X (n, {d0}), Y (n, {d2}) and theta of size "
                   f"{d1 * d0 + d2 * d1}; X is {tuple(X.shape)}, Y is {tuple(Y.shape)}, theta", theta0)


def _hessian_top_eig(loss_fn, theta, X, Y):
    """Largest eigenvalue of the Hessian of L_n at theta (None if d is too large to form it)."""
    if theta.shape[0] > 400:
        return None
    return float(_hessian_eigs(theta, jnp.asarray(X), jnp.asarray(Y), loss_fn=loss_fn).max())


@partial(jax.jit, static_argnames=("loss_fn",))
def _hessian_eigs(theta, X, Y, *, loss_fn):
    H = jax.hessian(lambda th: mean_loss(loss_fn, th, X, Y))(theta)
    return jnp.linalg.eigvalsh(H)
