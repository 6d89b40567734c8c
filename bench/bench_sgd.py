"""Throughput of the book's SGD ensemble simulator (issue 2, section 5).

Reference problem: two-layer linear network d0 = d1 = d2 = 5 (d = 50 parameters), n = 100 samples,
batch size B = 10 drawn with replacement, float32, constant learning rate, no per-step full loss.
Throughput is trajectory-steps per second, compile time excluded (one warm-up call per contender,
``block_until_ready`` on the result). Contenders, all measured in the same run:

* ``run_sgd``     -- ``sgdnotes.sgd.run_sgd`` exactly as the chapters call it;
* ``jax-vmap``    -- a straightforward ``jax.vmap`` of a ``lax.scan`` SGD loop (jax.grad per batch);
* ``numpy-loop``  -- a NumPy loop over trajectories and steps (hand-written gradient).

The machine may be shared, so each contender is timed ``--repeats`` times in interleaved rounds and
the median is reported; the ratios use the medians of the same run.

Run:  .venv/bin/python bench/bench_sgd.py [--trajectories 2048] [--steps 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sgdnotes import models, sgd  # noqa: E402

DIMS = (5, 5, 5)
N, B, ETA = 100, 10, 0.01
LOSS = partial(models.dln2_loss, dims=DIMS)  # one stable object, so compiled code is reused


def problem():
    key = jax.random.key(0)
    k_data, k_init = jax.random.split(key)
    X, Y, _ = models.make_dln_teacher_data(k_data, N, DIMS)
    d0, d1, d2 = DIMS
    theta0 = 0.3 * jax.random.normal(k_init, (d1 * d0 + d2 * d1,), jnp.float32)
    return X, Y, theta0


# --- contender 1: the book's simulator ----------------------------------------------------------
def bench_run_sgd(X, Y, theta0, m, K, seed):
    res = sgd.run_sgd(jax.random.key(seed), LOSS, theta0, X, Y, eta=ETA, batch_size=B, n_steps=K,
                      n_trajectories=m, record_steps=[K])
    return res.final_theta.block_until_ready()


# --- contender 2: a straightforward vmap of a scan ----------------------------------------------
@partial(jax.jit, static_argnames=("K",))
def _naive(keys, theta0, X, Y, *, K):
    def one(key, theta):
        def body(theta, k):
            idx = jax.random.randint(jax.random.fold_in(key, k), (B,), 0, N)
            g = jax.grad(lambda th: jnp.mean(jax.vmap(LOSS, in_axes=(None, 0, 0))(th, X[idx], Y[idx])))(theta)
            return theta - ETA * g, None

        return jax.lax.scan(body, theta, jnp.arange(K))[0]

    return jax.vmap(one)(keys, jnp.broadcast_to(theta0, (keys.shape[0], theta0.shape[0])))


def bench_naive(X, Y, theta0, m, K, seed):
    return _naive(jax.random.split(jax.random.key(seed), m), theta0, X, Y, K=K).block_until_ready()


# --- contender 3: NumPy, one trajectory at a time -----------------------------------------------
def bench_numpy(X, Y, theta0, m, K, seed):
    d0, d1, d2 = DIMS
    X, Y = np.asarray(X), np.asarray(Y)
    rng = np.random.default_rng(seed)
    out = np.empty((m, theta0.shape[0]), np.float32)
    for i in range(m):
        W1 = np.asarray(theta0[: d1 * d0]).reshape(d0, d1).T.copy()
        W2 = np.asarray(theta0[d1 * d0:]).reshape(d1, d2).T.copy()
        for _ in range(K):
            idx = rng.integers(0, N, B)
            Xb, Yb = X[idx], Y[idx]
            H = Xb @ W1.T                      # (B, d1)
            R = H @ W2.T - Yb                  # (B, d2), loss = mean ||R||^2
            G2 = (2.0 / B) * R.T @ H           # dL/dW2
            G1 = (2.0 / B) * (R @ W2).T @ Xb   # dL/dW1
            W1 -= ETA * G1
            W2 -= ETA * G2
        out[i] = np.concatenate([W1.T.ravel(), W2.T.ravel()])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trajectories", type=int, default=2048, help="m for the JAX contenders")
    ap.add_argument("--steps", type=int, default=1000, help="K for the JAX contenders")
    ap.add_argument("--numpy-trajectories", type=int, default=16)
    ap.add_argument("--numpy-steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    X, Y, theta0 = problem()
    m, K = args.trajectories, args.steps
    contenders = {
        "run_sgd (sgdnotes)": (bench_run_sgd, m, K),
        "jax vmap(scan)": (bench_naive, m, K),
        "numpy loop": (bench_numpy, args.numpy_trajectories, args.numpy_steps),
    }
    for fn, mm, kk in contenders.values():  # warm-up: compile, exclude from timing
        fn(X, Y, theta0, mm, kk, 1)
    times = {name: [] for name in contenders}
    for r in range(args.repeats):  # interleaved rounds: a load spike hits every contender alike
        for name, (fn, mm, kk) in contenders.items():
            t0 = time.perf_counter()
            fn(X, Y, theta0, mm, kk, 100 + r)
            times[name].append(time.perf_counter() - t0)

    thr = {name: contenders[name][1] * contenders[name][2] / statistics.median(t) for name, t in times.items()}
    base_np, base_naive = thr["numpy loop"], thr["jax vmap(scan)"]
    print(f"SGD ensemble throughput: 2-layer linear net d0=d1=d2={DIMS[0]}, n={N}, B={B} with replacement, "
          f"float32; jax {jax.__version__}, {os.cpu_count()} CPUs, {platform.machine()}")
    print(f"median of {args.repeats} interleaved repeats (compile excluded)\n")
    print(f"{'contender':<20} {'m x K':>13} {'median s':>9} {'traj*steps/s':>13} {'x numpy':>8} {'x vmap':>7}")
    for name, (fn, mm, kk) in contenders.items():
        print(f"{name:<20} {f'{mm} x {kk}':>13} {statistics.median(times[name]):>9.3f} {thr[name]:>13,.0f} "
              f"{thr[name] / base_np:>8.1f} {thr[name] / base_naive:>7.2f}")
    r = thr["run_sgd (sgdnotes)"]
    print(f"\ntarget 1: >= 2,000,000 traj*steps/s: {'met' if r >= 2e6 else 'NOT met'} ({r:,.0f})")
    print(f"target 2: >= 100x the NumPy loop:    {'met' if r >= 100 * base_np else 'NOT met'} "
          f"({r / base_np:.0f}x; this NumPy loop does {base_np:,.0f} traj*steps/s)")

if __name__ == "__main__":
    main()
