"""Throughput of the refined SDE of SGD with state-dependent empirical noise (issue 10, section 2b).

Reference problem (as bench_sgd.py): two-layer linear network d0 = d1 = d2 = 5 (d = 50), n = 100,
B = 10 with replacement, float32, eta = 0.01. Throughput = trajectory-steps per second (one SDE step
per SGD step, substeps=1), compile excluded (one warm-up call each, ``block_until_ready``).
Contenders, all measured in the same run, in interleaved rounds (median of ``--repeats``):

* ``run_sgd``            -- sgdnotes.sgd.run_sgd (the SGD it models);
* ``numpy vectorised``   -- SGD in NumPy vectorised over trajectories (batched matmul), the honest
                            NumPy baseline;
* ``sde gaussian``       -- run_sgd_sde(driver="gaussian"): factor-form noise sqrt(eta/(B n)) C^T z;
* ``sde elliptical a=1.8`` / ``sde independent a=1.8`` -- the same with sde.stable_driver(1.8, form) (on_divergence="ignore": a heavy-tailed jump can blow a trajectory up; throughput only);
* ``sde minibatch``      -- run_sgd_sde(driver="minibatch") (SGD's own batches as driving noise);
* ``sde eigh``           -- the previous Gaussian path: run_sde with cov_fn = (eta/B) Sigma_emp(theta)
                            and G = Sigma^{1/2} by eigh at every step (fewer trajectories and steps:
                            it is ~3 orders of magnitude slower).

Prints the table, the ratios the issue asks for, and a roofline line per contender: counted FLOPs per
trajectory-step (see README.md) divided into the measured throughput.

Run:  .venv/bin/python bench/bench_sde.py [--trajectories 2048] [--steps 1000] [--repeats 5]
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
from sgdnotes import sde, sgd  # noqa: E402

# the reference problem and the run_sgd contender are bench_sgd.py's (one definition of each)
from bench_sgd import B, DIMS, ETA, LOSS, N, bench_run_sgd, problem  # noqa: E402


def bench_numpy_vec(X, Y, theta0, m, K, seed):
    """SGD in NumPy, all m trajectories at once: per-sample chain rule with batched matmul (float32)."""
    d0, d1, d2 = DIMS
    X, Y = np.asarray(X, np.float32), np.asarray(Y, np.float32)
    rng = np.random.default_rng(seed)
    th = np.asarray(theta0, np.float32)
    W1 = np.broadcast_to(th[: d1 * d0].reshape(d0, d1).T, (m, d1, d0)).copy()  # vec is column-major
    W2 = np.broadcast_to(th[d1 * d0:].reshape(d1, d2).T, (m, d2, d1)).copy()
    c = np.float32(2.0 * ETA / B)
    for _ in range(K):
        idx = rng.integers(0, N, (m, B))
        Xb, Yb = X[idx], Y[idx]                      # (m, B, d0), (m, B, d2)
        H = Xb @ W1.transpose(0, 2, 1)               # (m, B, d1)
        R = H @ W2.transpose(0, 2, 1) - Yb           # (m, B, d2); loss = mean_b ||R_b||^2
        G2 = R.transpose(0, 2, 1) @ H                # (m, d2, d1), times 2/B
        G1 = (R @ W2).transpose(0, 2, 1) @ Xb        # (m, d1, d0), times 2/B
        W1 -= c * G1
        W2 -= c * G2
    return np.concatenate([W1.transpose(0, 2, 1).reshape(m, -1), W2.transpose(0, 2, 1).reshape(m, -1)], axis=1)


def bench_sde(X, Y, theta0, m, K, seed, **kw):
    return sde.run_sgd_sde(jax.random.key(seed), LOSS, theta0, X, Y, eta=ETA, batch_size=B, n_steps=K,
                           n_trajectories=m, record_steps=[K], **kw).final_theta.block_until_ready()


def bench_eigh(X, Y, theta0, m, K, seed):
    """The eigh path: run_sde with the covariance (eta/B) Sigma_emp(theta) and G = Sigma^{1/2} by eigh."""
    drift, cov, _ = sde._sgd_model_fns(LOSS, 1)
    args = (X, Y, jnp.float32(ETA), jnp.float32(ETA / B))
    return sde.run_sde(jax.random.key(seed), drift, theta0, dt=ETA, n_steps=K, n_trajectories=m, diffusion=cov,
                       args=args, record_steps=[K]).final_theta.block_until_ready()


def flops_per_step(X, Y):
    """Counted operations per trajectory-step (multiply-add = 2 flops; a transcendental counts once; a
    Threefry-2x32 block = 20 rounds x 5 integer ops + 15 for key injection = 115 integer ops)."""
    d0, d1, d2 = DIMS
    p = d0 * (d0 + d2)
    r = sde.stats_factor(sde.stats_matrix(LOSS, X, Y)).shape[1]  # normals per step of the reduced factor
    small = 2 * (d2 * d1 * d0 * 4)  # W2 W1, (W2 W1) Sxx, W2^T G, G W1^T
    update = 2 * (d0 * d1 + d1 * d2)
    return {
        "run_sgd": dict(flops=2 * B * p + small + update, trans=0, int_ops=115 * (B // 2), r=B),
        "numpy": dict(flops=2 * B * (2 * d0 * d1 + 3 * d1 * d2) + 2 * update, trans=0, int_ops=0, r=B),
        "gaussian": dict(flops=2 * p * r + small + 2 * update, trans=2 * r, int_ops=115 * (r // 2), r=r),
        "elliptical": dict(flops=2 * p * r + small + 2 * update, trans=2 * r + 8, int_ops=115 * (r // 2 + 1), r=r),
        "independent": dict(flops=2 * p * N + 2 * N + small + 2 * update, trans=7 * N, int_ops=115 * N, r=N),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trajectories", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--numpy-trajectories", type=int, default=2048)
    ap.add_argument("--numpy-steps", type=int, default=200)
    ap.add_argument("--eigh-trajectories", type=int, default=128)
    ap.add_argument("--eigh-steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    X, Y, theta0 = problem()
    m, K = a.trajectories, a.steps
    c = {
        "run_sgd": (bench_run_sgd, m, K),
        "numpy vectorised": (bench_numpy_vec, a.numpy_trajectories, a.numpy_steps),
        "sde gaussian": (partial(bench_sde, driver="gaussian"), m, K),
        "sde elliptical a=1.8": (partial(bench_sde, noise=sde.stable_driver(1.8, "elliptical"), on_divergence="ignore"), m, K),
        "sde independent a=1.8": (partial(bench_sde, noise=sde.stable_driver(1.8, "independent"), on_divergence="ignore"), m, K),
        "sde minibatch": (partial(bench_sde, driver="minibatch"), m, K),
        "sde eigh": (bench_eigh, a.eigh_trajectories, a.eigh_steps),
    }
    for fn, mm, kk in c.values():  # warm-up (compile), excluded
        fn(X, Y, theta0, mm, kk, 1)
    times = {name: [] for name in c}
    for r in range(a.repeats):  # interleaved rounds: a load spike hits every contender alike
        for name, (fn, mm, kk) in c.items():
            t0 = time.perf_counter()
            fn(X, Y, theta0, mm, kk, 100 + r)
            times[name].append(time.perf_counter() - t0)
    thr = {k: c[k][1] * c[k][2] / statistics.median(t) for k, t in times.items()}
    fl = flops_per_step(X, Y)
    fl_of = {"run_sgd": fl["run_sgd"], "numpy vectorised": fl["numpy"], "sde gaussian": fl["gaussian"],
             "sde elliptical a=1.8": fl["elliptical"], "sde independent a=1.8": fl["independent"]}
    print(f"refined-SDE throughput: 2-layer linear net d0=d1=d2={DIMS[0]}, n={N}, B={B}, float32; "
          f"jax {jax.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, {platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"median of {a.repeats} interleaved repeats (compile excluded)\n")
    print(f"{'contender':<23} {'m x K':>12} {'median s':>9} {'traj*steps/s':>13} {'flops':>6} {'transc':>6} "
          f"{'int ops':>7} {'GFLOP/s':>8} {'Gint/s':>7}")
    for k, (fn, mm, kk) in c.items():
        if k in fl_of:
            f = fl_of[k]
            g = (f"{f['flops']:>6} {f['trans']:>6} {f['int_ops']:>7} {thr[k] * f['flops'] / 1e9:8.2f} "
                 f"{thr[k] * f['int_ops'] / 1e9:7.2f}")
        else:
            g = f"{'-':>6} {'-':>6} {'-':>7} {'-':>8} {'-':>7}"
        print(f"{k:<23} {f'{mm} x {kk}':>12} {statistics.median(times[k]):>9.3f} {thr[k]:>13,.0f} {g}")
    s, e = thr["sde gaussian"], thr["sde eigh"]
    print("\nflops / transc / int ops: counted per trajectory-step (see README.md); GFLOP/s, Gint/s: attained")
    print(f"target A: sde gaussian >= 1.5M traj*steps/s: {'met' if s >= 1.5e6 else 'NOT met'} ({s:,.0f})")
    print(f"target B: sde gaussian >= 150x sde eigh:     {'met' if s >= 150 * e else 'NOT met'} ({s / e:,.0f}x)")
    print(f"target C: sde gaussian within 3x of run_sgd: {'met' if 3 * s >= thr['run_sgd'] else 'NOT met'} "
          f"(run_sgd / sde = {thr['run_sgd'] / s:.2f})")
    print(f"target D: run_sgd >= 5x numpy vectorised:    "
          f"{'met' if thr['run_sgd'] >= 5 * thr['numpy vectorised'] else 'NOT met'} "
          f"({thr['run_sgd'] / thr['numpy vectorised']:.2f}x)")
    for k in ("sde elliptical a=1.8", "sde independent a=1.8", "sde minibatch"):
        print(f"{k} / sde gaussian: {thr[k] / s:.2f}")


if __name__ == "__main__":
    main()
