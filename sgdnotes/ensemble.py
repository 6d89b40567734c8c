"""The step loop shared by the SGD and SDE ensemble simulators (written once, used by both).

An ensemble is a state ``theta`` (m, d) of m trajectories plus auxiliary state (a velocity, keys, ...).
:func:`run_chunks` drives a simulator's *body* (a traceable function that advances a :class:`Carry`
through a few recording segments with :func:`scan_ensemble`) from the host:

* the run is cut into chunks of at most ``chunk_steps`` steps, each one call of the same compiled
  function; the carry passes between chunks unchanged, so any chunking gives bit-identical results;
  after each chunk a progress bar (``tqdm``) or callback is updated, and a ``KeyboardInterrupt``
  returns the chunks already computed as a partial result (``interrupted=True``);
* with more than one device the trajectory axis is sharded over a one-axis ``jax.sharding.Mesh``
  (``jax.shard_map``); trajectories are independent, so each device runs the same per-trajectory
  arithmetic and the result is bit-identical to one device;
* streaming time averages are accumulated relative to a per-trajectory shift (the first averaged
  state) with Kahan-compensated float32 sums, and combined on the host in float64: they do not
  cancel when the states carry a large offset (DESIGN.md section 8; tests/test_ensemble.py).

The simulators are not jittable as a whole (they validate concrete inputs and loop over chunks on
the host); their per-chunk body is jitted and cached per configuration.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from . import _validate as v

MAX_STEPS = 2**31 - 1  # steps are counted in int32 inside the loop
GROWTH = 1e6  # a trajectory whose norm exceeds GROWTH * max(|theta_0|, 1) counts as diverged
TRAJ_AXIS = "trajectories"  # the mesh axis name used when the simulators build the mesh themselves
MAX_PIECES = 4096  # recording segments per compiled chunk call


class DivergenceError(FloatingPointError):
    """A simulation diverged (NaN/inf or 1e6-fold growth); the message names the step and a stable step size."""


class EnsembleResult(NamedTuple):
    """Output of the ensemble simulators (:func:`sgdnotes.sgd.run_sgd`, :func:`sgdnotes.sde.run_sde`).

    steps           (r,)      the recorded step indices k (theta_k is the state after k steps)
    thetas          (r, m, d) parameters at ``steps`` (None if not recorded)
    losses          (r, m)    a scalar observable at ``steps``, e.g. the full-data loss (None if not recorded)
    final_theta     (m, d)    state after the last step
    final_aux       (m, d)    auxiliary state after the last step (SGD: velocity, zero without momentum)
    time_mean       (m, d)    per-trajectory average of theta_k over burn_in < k <= K (None unless stats)
    time_cov        (m, d, d) per-trajectory covariance (1/N) over the same steps (None unless stats="cov")
    n_averaged      int       N = K - burn_in, the number of states averaged
    diverged_step   (m,)      first k at which theta_k was non-finite or |theta_k| > 1e6 max(|theta_0|, 1),
                              -1 if never
    completed_steps int       K' = steps actually run (n_steps unless interrupted)
    interrupted     bool      True if a KeyboardInterrupt stopped the run after K' < n_steps steps: every
                              field then describes the first K' steps (records at steps <= K' only)
    """

    steps: np.ndarray
    thetas: jax.Array | None
    losses: jax.Array | None
    final_theta: jax.Array
    final_aux: jax.Array
    time_mean: jax.Array | None
    time_cov: jax.Array | None
    n_averaged: int
    diverged_step: np.ndarray
    completed_steps: int | None = None
    interrupted: bool = False

    @property
    def final_velocity(self):
        """Alias of ``final_aux`` for SGD (the heavy-ball velocity)."""
        return self.final_aux


class Carry(NamedTuple):
    """The loop state of :func:`scan_ensemble`; every leaf has the trajectory axis first (m, ...).

    theta (m, d); aux: a simulator's own state (pytree of (m, ...) leaves); acc: stats accumulators
    (shift, s1, c1[, s2, c2]) or None; div (m,) int32; limit (m,) squared-norm divergence threshold.
    """

    theta: Any
    aux: Any
    acc: Any
    div: Any
    limit: Any


# ---------------------------------------------------------------------------------------------
# input checks shared by the simulators


def check_steps(name: str, value, factor: int = 1) -> int:
    """A step count 0 <= value with value * factor <= MAX_STEPS (int32 counters); returns int."""
    K = v.positive_int(name, value, 0)
    if K * factor > MAX_STEPS:
        extra = f" (times substeps = {factor})" if factor != 1 else ""
        v.fail(f"{name}{extra} must be <= 2**31 - 1 = {MAX_STEPS} (steps are int32 counters)", value)
    return K


def initial_shape(theta0, n_trajectories):
    """Validate an initial state's shape: (d,) shared or (m, d); returns (theta0 array, m, d)."""
    theta0 = v.array("theta0", theta0)
    if theta0.ndim not in (1, 2):
        v.fail("theta0 must have shape (d,) or (m, d)", theta0)
    if theta0.shape[-1] == 0:
        v.fail("theta0 must have at least one coordinate (d >= 1)", theta0)
    if theta0.ndim == 2:
        m = theta0.shape[0] if n_trajectories is None else n_trajectories
        v.positive_int("n_trajectories", m)
        if theta0.shape[0] != m:
            v.fail(f"theta0 of shape (m, d) must have m = n_trajectories = {m} rows", theta0)
    else:
        m = v.positive_int("n_trajectories", 1 if n_trajectories is None else n_trajectories)
    return theta0, int(m), int(theta0.shape[-1])


def check_initial(theta0, n_trajectories):
    """Validate an initial state (d,) shared by all trajectories or (m, d), one per trajectory.

    Returns ``(theta0 (m, d) as a float array (at least float32), m)``.
    """
    theta0, m, d = initial_shape(theta0, n_trajectories)
    th = jnp.asarray(theta0)
    if theta0.ndim == 1:
        th = jnp.broadcast_to(th, (m, d))
    return th.astype(jnp.result_type(th.dtype, jnp.float32)), m


def check_record_steps(record_steps, n_steps: int) -> np.ndarray:
    """Validate recording steps (strictly increasing integers in [0, n_steps]); default [0, n_steps]."""
    if isinstance(record_steps, (str, bytes, dict, set)):
        v.fail("record_steps must be a non-empty 1-D sequence of integers", record_steps)
    try:
        steps = np.array([0, n_steps] if record_steps is None else record_steps)
    except (ValueError, TypeError):
        v.fail("record_steps must be a non-empty 1-D sequence of integers", record_steps)
    if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer):
        v.fail("record_steps must be a non-empty 1-D sequence of integers", record_steps)
    if steps.min() < 0 or steps.max() > n_steps or np.any(np.diff(steps) <= 0):
        v.fail(f"record_steps must be strictly increasing integers in [0, n_steps={n_steps}]", record_steps)
    return steps.astype(np.int64)


def check_stats(stats, burn_in, n_steps):
    """Validate the streaming-statistics options; returns burn_in as int."""
    if not (stats is None or (isinstance(stats, str) and stats in ("mean", "cov"))):
        v.fail("stats must be None, 'mean' or 'cov'", stats)
    return v.positive_int("burn_in", burn_in, 0, max(n_steps - 1, 0))


def check_flag(name: str, value) -> bool:
    """A bool (True/False or numpy bool)."""
    if not isinstance(value, (bool, np.bool_)):
        v.fail(f"{name} must be True or False", value)
    return bool(value)


def check_chunking(chunk_steps, progress):
    """Validate ``chunk_steps`` (None or int >= 1) and ``progress`` (bool or callable(done, total))."""
    if chunk_steps is not None:
        v.positive_int("chunk_steps", chunk_steps, 1)
    if not (isinstance(progress, (bool, np.bool_)) or callable(progress)):
        v.fail("progress must be True, False or a callable progress(done_steps, total_steps)", progress)


def resolve_mesh(mesh):
    """The mesh to shard trajectories over: None (auto: all of ``jax.devices()`` if more than one),
    False (one device) or a ``jax.sharding.Mesh`` with one axis. Returns a Mesh or None."""
    if mesh is None:
        devs = jax.devices()
        return Mesh(np.array(devs), (TRAJ_AXIS,)) if len(devs) > 1 else None
    if mesh is False:
        return None
    if not isinstance(mesh, Mesh):
        v.fail("mesh must be None (all devices), False (one device) or a jax.sharding.Mesh", mesh)
    if len(mesh.axis_names) != 1:
        v.fail("mesh must have exactly one axis (the trajectory axis is split over it)", mesh.axis_names)
    return mesh if mesh.size > 1 else None


def _memory_limit(mesh) -> tuple[float, str]:
    """Bytes available to the run (all devices of the mesh together) and a description."""
    devs = list(mesh.devices.flat) if mesh is not None else [jax.devices()[0]]
    stats = None
    try:
        stats = devs[0].memory_stats()
    except Exception:  # CPU backends may not implement it
        stats = None
    if stats and stats.get("bytes_limit"):
        return float(stats["bytes_limit"]) * len(devs), f"{len(devs)} x {devs[0].device_kind}"
    try:  # memory available now (other processes share the host), else the total
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return float(info["MemAvailable"].split()[0]) * 1024, "available host memory"
    except (OSError, KeyError, ValueError):
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "host memory"


def check_memory(m: int, d: int, *, n_records: int, record_params: bool, record_loss: bool, stats,
                 aux_per_traj: int, mesh, itemsize: int = 4) -> None:
    """Refuse up front a run whose arrays would not fit: state, recorded paths and stats, in bytes."""
    parts = {
        "state": itemsize * m * (2 * d + 2) + aux_per_traj * m,
        "recorded thetas": itemsize * n_records * m * d if record_params else 0,
        "recorded losses": itemsize * n_records * m if record_loss else 0,
        "stats": itemsize * m * (3 * d + (2 * d * d if stats == "cov" else 0)) if stats else 0,
    }
    need = 3 * sum(parts.values())  # chunk outputs, the assembled result and XLA temporaries coexist
    limit, where = _memory_limit(mesh)
    if need > limit:
        detail = ", ".join(f"{k} {b / 2**30:.3g} GiB" for k, b in parts.items() if b)
        v.fail(f"the run needs about {need / 2**30:.3g} GiB ({detail}, times 3 for chunk outputs and temporaries) but the "
               f"{where} has {limit / 2**30:.3g} GiB; use fewer trajectories or record_steps, "
               f"record_params=False, or stats='mean'",
               {"n_trajectories": m, "d": d, "records": n_records, "stats": stats})


# ---------------------------------------------------------------------------------------------
# the traced loop


#: most trajectories in one block on an accelerator (measured on an H100: blocks of 16 trajectories run
#: run_sgd at 0.67M trajectory*steps/s, one block of 8192 at 121M, of 65536 at 279M)
ACCEL_BLOCK = 1 << 18


def default_block(block_size, m: int, mesh, cpu_default: int) -> int:
    """The block size a simulator uses: ``block_size`` if given (an int >= 1), else ``cpu_default`` on CPUs
    (small blocks with the trajectory axis last suit their vector units) and all of a device's trajectories
    in one block (at most ``ACCEL_BLOCK``) on a GPU or TPU, where looping over small blocks serialises the
    chip. Results do not depend on it (run_sgd: bit-identical; SDEs: up to float round-off)."""
    if block_size is not None:
        return v.positive_int("block_size", block_size, 1)
    devices = list(mesh.devices.flat) if mesh is not None else jax.devices()[:1]
    if devices[0].platform == "cpu":
        return cpu_default
    per_device = -(-int(m) // max(len(devices), 1))
    return max(1, min(per_device, ACCEL_BLOCK))


def check_growth(max_growth):
    """``max_growth``: None (only NaN/inf count as divergence) or a number > 1; returns it."""
    if max_growth is None:
        return None
    g = v.positive_float("max_growth", max_growth)
    if g <= 1:
        v.fail("max_growth must be None or a number > 1", max_growth)
    return g


def init_carry(theta0, aux0, stats, max_growth=GROWTH) -> Carry:
    """The initial :class:`Carry` for theta0 (m, d) and aux0 (pytree of (m, ...) leaves).

    A trajectory counts as diverged once |theta_k| > max_growth * max(|theta_0|, 1) (None: only NaN/inf).
    """
    m, d = theta0.shape
    dt = theta0.dtype
    acc = None
    if stats is not None:
        z = jnp.zeros((m, d), dt)
        acc = (z, z, z) + ((jnp.zeros((m, d, d), dt),) * 2 if stats == "cov" else ())
    ref = jnp.maximum(jnp.sqrt(jnp.sum(theta0 * theta0, axis=1)), 1.0)
    if max_growth is None:
        limit = jnp.full((m,), jnp.finfo(dt).max, dt)
    else:
        limit = jnp.minimum((max_growth * ref) ** 2, jnp.finfo(dt).max).astype(dt)
    return Carry(theta0, aux0, acc, jnp.full((m,), -1, jnp.int32), limit)


def _kahan(s, c, x):
    """One compensated addition: (s, c) += x; the sum is s - c."""
    y = x - c
    t = s + y
    return t, (t - s) - y


def scan_ensemble(step, carry: Carry, seg_lengths, k0, burn_in, *, stats, record_params, observe=None,
                  block_size=None):
    """Run ``step`` over sum(seg_lengths) steps from step k0 (traced; call inside a jitted function).

    seg_lengths (R,) int32: steps of each recording segment; the state after each is recorded.
    Returns (carry, thetas (R, m, d) | None, observed (R, m) | None).

    ``block_size=None``: ``step(k, theta (m, d), aux) -> (theta, aux)``.
    ``block_size=b`` (int): the trajectories are processed in blocks of b, one block after another
    (``lax.map``), each block running all steps with the trajectory axis LAST: ``step`` then receives
    ``theta`` (d, b) and ``aux`` with every leaf's trajectory axis moved last (..., b). Small blocks in
    this layout keep the state in registers and let XLA vectorise over trajectories (about 10x faster
    than full width for tiny models on CPU). m is padded to a multiple of b by repeating the last
    trajectory; the padding is dropped from every output. Arithmetic is elementwise over trajectories,
    so the grouping does not change any trajectory's numbers.
    observe(theta (m or b, d)) -> (m or b,) is recorded with the parameters in both modes.
    """
    if block_size is None:
        return _scan(step, carry, seg_lengths, k0, burn_in, stats=stats, record_params=record_params,
                     observe=observe, last=False)
    m = carry.theta.shape[0]
    b = int(block_size)
    nb = -(-m // b)
    pad = nb * b - m

    def to_blocks(x):  # (m, ...) -> (nb, ..., b)
        if pad:
            x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)
        x = x.reshape((nb, b) + x.shape[1:])
        return jnp.moveaxis(x, 1, -1)

    def from_blocks(x, lead=0):  # (nb, [lead axes,] ..., b) -> ([lead axes,] m, ...)
        x = jnp.moveaxis(x, -1, 1 + lead)  # (nb, lead..., b, ...)
        x = jnp.moveaxis(x, 0, lead)  # (lead..., nb, b, ...)
        x = x.reshape(x.shape[:lead] + (nb * b,) + x.shape[lead + 2:])
        return jax.lax.slice_in_dim(x, 0, m, axis=lead)

    def one_block(c):
        return _scan(step, c, seg_lengths, k0, burn_in, stats=stats, record_params=record_params,
                     observe=observe, last=True)

    c, thetas, observed = jax.lax.map(one_block, jax.tree_util.tree_map(to_blocks, carry))
    c = jax.tree_util.tree_map(from_blocks, c)
    thetas = from_blocks(thetas, lead=1) if thetas is not None else None
    observed = from_blocks(observed, lead=1) if observed is not None else None
    return c, thetas, observed


def _scan(step, carry, seg_lengths, k0, burn_in, *, stats, record_params, observe, last):
    """The step loop; ``last``: theta is (d, m) (trajectories last) instead of (m, d)."""
    fax = 0 if last else 1  # the coordinate axis of theta
    to_md = (lambda th: th.T) if last else (lambda th: th)

    def one_step(k, c):
        theta, aux = step(k, c.theta, c.aux)
        sq = jnp.sum(theta * theta, axis=fax)
        div = jnp.where((c.div < 0) & ~(sq <= c.limit), k + 1, c.div)  # NaN compares False
        acc = c.acc
        if stats is not None:  # theta_{k+1} is averaged when k + 1 > burn_in
            on = k >= burn_in
            shift = jnp.where(k == burn_in, theta, acc[0])
            x = jnp.where(on, theta - shift, jnp.zeros_like(theta))
            s1, c1 = _kahan(acc[1], acc[2], x)
            acc = (shift, s1, c1)
            if stats == "cov":
                xx = x[:, None, :] * x[None, :, :] if last else x[:, :, None] * x[:, None, :]
                acc = acc + _kahan(c.acc[3], c.acc[4], xx)
        return Carry(theta, aux, acc, div, c.limit)

    def segment(carry_k, length):
        c, k = carry_k
        c = jax.lax.fori_loop(0, length, lambda i, s: one_step(k + i, s), c)
        out = (c.theta if record_params else None, observe(to_md(c.theta)) if observe is not None else None)
        return (c, k + length), out

    (carry, _), (thetas, observed) = jax.lax.scan(segment, (carry, jnp.asarray(k0, jnp.int32)), seg_lengths)
    return carry, thetas, observed


# ---------------------------------------------------------------------------------------------
# the host driver: chunks, progress, interrupts, sharding


def plan(steps: np.ndarray, n_steps: int, chunk_steps: int):
    """Cut [0, n_steps] into pieces (length, record index or -1) and group them into chunks.

    Every record step ends a piece; no piece is longer than chunk_steps; a chunk holds pieces of at
    most chunk_steps steps in all and at most MAX_PIECES pieces. Returns a list of chunks, each a
    list of pieces.
    """
    pieces, k = [], 0
    for i, s in enumerate(np.asarray(steps).tolist()):
        while s - k > chunk_steps:
            pieces.append((chunk_steps, -1))
            k += chunk_steps
        pieces.append((s - k, i))
        k = s
    while n_steps - k > 0:
        L = min(chunk_steps, n_steps - k)
        pieces.append((L, -1))
        k += L
    chunks, cur, tot = [], [], 0
    for p in pieces:
        if cur and (tot + p[0] > chunk_steps or len(cur) == MAX_PIECES):
            chunks.append(cur)
            cur, tot = [], 0
        cur.append(p)
        tot += p[0]
    chunks.append(cur)
    return chunks


_CHUNK_FNS: dict = {}


def _chunk_fn(body, mesh, static):
    """The jitted (and, with a mesh, trajectory-sharded) call of ``body`` for one chunk (cached)."""
    cache_key = (body, mesh, static)
    fn = _CHUNK_FNS.get(cache_key)
    if fn is not None:
        return fn
    kw = dict(static)
    block = kw.pop("_block")

    def local(carry, replicated, seg_lengths, k0, burn_in):
        # fixed-size blocks of trajectories, one after another: every trajectory is computed by the same
        # compiled block code at the same lane, whatever the number of devices and trajectories
        nb = carry.theta.shape[0] // block
        blocks = jax.tree_util.tree_map(lambda x: x.reshape((nb, block) + x.shape[1:]), carry)
        c, th, ob = jax.lax.map(lambda cb: body(cb, replicated, seg_lengths, k0, burn_in, **kw), blocks)
        c = jax.tree_util.tree_map(lambda x: x.reshape((nb * block,) + x.shape[2:]), c)
        join = (lambda x: None if x is None else jnp.moveaxis(x, 0, 1).reshape((x.shape[1], nb * block) + x.shape[3:]))
        return c, join(th), join(ob)

    if mesh is None:
        fn = jax.jit(local)
    else:
        ax = mesh.axis_names[0]
        fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(ax), P(), P(), P(), P()),
                                   out_specs=(P(ax), P(None, ax), P(None, ax)), check_vma=False))
    _CHUNK_FNS[cache_key] = fn
    return fn


def _pad_rows(tree, m_pad):
    def pad(x):
        m = x.shape[0]
        return x if m == m_pad else jnp.concatenate([x, jnp.repeat(x[-1:], m_pad - m, axis=0)], axis=0)
    return jax.tree_util.tree_map(pad, tree)


def _default_chunk_steps(m: int) -> int:
    return max(256, 2**23 // max(m, 1))  # about 2^23 trajectory-steps per call


def run_chunks(body, carry: Carry, replicated, *, steps, n_steps, burn_in, static: dict, mesh, block: int,
               chunk_steps, progress, desc, record_params: bool, record_obs: bool):
    """Run a simulator body over [0, n_steps] chunk by chunk; returns (carry, thetas, observed, done).

    body(carry, replicated, seg_lengths (R,), k0, burn_in, **static) -> (carry, thetas | None, obs | None)
    is traceable and is applied to blocks of ``block`` trajectories (``lax.map``), on one device or on
    each device of ``mesh``. m is padded (repeating the last trajectory) to a multiple of
    block x devices. ``done`` is the number of steps completed (< n_steps after a KeyboardInterrupt).
    """
    m = carry.theta.shape[0]
    ndev = 1 if mesh is None else mesh.size
    m_pad = -(-m // (ndev * block)) * ndev * block
    if m_pad != m:  # repeat the last trajectory; dropped below
        carry = _pad_rows(carry, m_pad)
    if mesh is not None:
        carry = jax.device_put(carry, jax.sharding.NamedSharding(mesh, P(mesh.axis_names[0])))
    chunks = plan(steps, n_steps, chunk_steps or _default_chunk_steps(m_pad // ndev))
    R = max(len(c) for c in chunks)
    fn = _chunk_fn(body, mesh, tuple(sorted(dict(static, _block=block).items())))
    bar = None
    if progress is True:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_steps, desc=desc, unit="step")
    thetas, obs, done = [], [], 0
    burn = jnp.int32(burn_in)
    try:
        for chunk in chunks:
            lengths = [p[0] for p in chunk] + [0] * (R - len(chunk))
            keep = np.array([j for j, p in enumerate(chunk) if p[1] >= 0], np.int32)
            new, th, ob = fn(carry, replicated, jnp.asarray(lengths, jnp.int32), jnp.int32(done), burn)
            jax.block_until_ready(new)
            carry = new
            if keep.size:
                if th is not None:
                    thetas.append(th[keep, :m])
                if ob is not None:
                    obs.append(ob[keep, :m])
            L = sum(lengths)
            done += L
            if bar is not None:
                bar.update(L)
            elif callable(progress) and progress is not False:
                progress(done, n_steps)
    except KeyboardInterrupt:
        warnings.warn(f"{desc} interrupted after {done} of {n_steps} steps: returning the partial result "
                      f"(interrupted=True)", RuntimeWarning, stacklevel=3)
    finally:
        if bar is not None:
            bar.close()
    carry = jax.tree_util.tree_map(lambda x: x[:m], carry)
    cat = (lambda xs: xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=0))
    th_all = cat(thetas) if record_params and thetas else None
    ob_all = cat(obs) if record_obs and obs else None
    return carry, th_all, ob_all, done


def _host(x, dtype=None):
    """A device array as a NumPy array on this host (gathered from all processes when multi-host)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x, dtype)


def finish(steps, n_steps, burn_in, stats, carry: Carry, thetas, observed, done, final_aux) -> EnsembleResult:
    """Assemble an :class:`EnsembleResult`; the time averages are combined in float64 on the host."""
    steps = np.asarray(steps)
    kept = steps[steps <= done] if done < n_steps else steps
    n_avg = max(done - burn_in, 0)
    mean = cov = None
    if stats is not None and n_avg > 0:
        dt = carry.theta.dtype
        shift, s1, c1 = (_host(a, np.float64) for a in carry.acc[:3])
        m1 = (s1 - c1) / n_avg  # mean of theta - shift
        mean = jnp.asarray((shift + m1).astype(dt))
        if stats == "cov":
            s2 = (_host(carry.acc[3], np.float64) - _host(carry.acc[4], np.float64)) / n_avg
            cov = jnp.asarray((s2 - m1[:, :, None] * m1[:, None, :]).astype(dt))
    if thetas is not None:
        thetas = thetas[: kept.size]
    if observed is not None:
        observed = observed[: kept.size]
    return EnsembleResult(kept, thetas, observed, carry.theta, final_aux, mean, cov, n_avg,
                          _host(carry.div), done, done < n_steps)


def divergence_message(what: str, diverged_step, step_size, lam_max, lam_max_fn=None,
                       step_name: str = "eta", momentum: float = 0.0, step_unit: str = "step") -> str:
    """Explain a divergence: how many trajectories, the first step, and the stability bound.

    ``step_size``: a float, or a callable ``step_size(k)`` evaluated at the step k that failed (a
    schedule). With momentum beta the bound is the heavy-ball one, 2(1 + beta)/lambda_max.
    """
    div = np.asarray(diverged_step)
    bad = np.flatnonzero(div >= 0)
    first = bad[np.argmin(div[bad])]
    k_fail = int(div[first])
    msg = (
        f"{what} diverged: {bad.size} of {div.size} trajectories became non-finite (NaN/inf) or grew "
        f"max_growth-fold in norm (default 1e6), the first at {step_unit} {k_fail} (trajectory {int(first)})."
    )
    if callable(step_size):
        k_eval = max(k_fail - 1, 0)  # theta_k is produced by the update with eta(k - 1)
        h = float(step_size(k_eval))
        name = f"{step_name}({k_eval})"
    else:
        h, name = float(step_size), step_name
    if lam_max is None and lam_max_fn is not None:
        lam_max = lam_max_fn()
    if momentum:
        bname, factor = f"heavy-ball stability bound 2(1+beta)/lambda_max (beta = {momentum:.4g})", 2.0 * (1 + momentum)
    else:
        bname, factor = "stability bound 2/lambda_max", 2.0
    if lam_max is not None and lam_max > 0:
        bound = factor / lam_max
        rel = "exceeds" if h > bound else "is below"
        msg += (
            f" Hint: {name} = {h:.4g} {rel} the {bname} = {bound:.4g} "
            f"(lambda_max = {lam_max:.4g}, Hessian at the initial point); use {step_name} well below it"
            + (" (noise lowers the bound further)." if rel == "is below" else ".")
        )
    else:
        msg += f" Hint: lower {step_name} below the {bname} of the loss Hessian."
    return msg


def warn_unstable(what: str, step_size: float, lam_max, momentum: float = 0.0, step_name: str = "eta") -> None:
    """Warn up front when step_size * lambda_max >= 2(1 + momentum): the linearised iteration diverges."""
    if lam_max is None or not np.isfinite(lam_max) or lam_max <= 0:
        return
    bound = 2.0 * (1.0 + momentum) / lam_max
    bname = f"2(1+beta)/lambda_max (beta = {momentum:.4g})" if momentum else "2/lambda_max"
    if step_size >= bound:
        warnings.warn(
            f"{what}: {step_name} = {step_size:.4g} >= the stability bound {bname} = {bound:.4g} "
            f"(lambda_max = {lam_max:.4g} at the initial point); the run will likely diverge",
            RuntimeWarning, stacklevel=3)


def report_divergence(result: EnsembleResult, on_divergence: str, message_fn) -> None:
    """Raise :class:`DivergenceError` or warn (per ``on_divergence``) if any trajectory diverged."""
    if np.any(result.diverged_step >= 0) and on_divergence != "ignore":
        msg = message_fn()
        if on_divergence == "raise":
            raise DivergenceError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def pooled_moments(thetas):
    """Mean (d,) and covariance (d, d) (1/N) of samples pooled over all leading axes of thetas (..., d)."""
    flat = jnp.reshape(thetas, (-1, thetas.shape[-1]))
    mu = flat.mean(axis=0)
    C = flat - mu
    return mu, C.T @ C / flat.shape[0]
