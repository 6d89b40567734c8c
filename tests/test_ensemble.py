"""The shared ensemble driver (sgdnotes.ensemble): streaming statistics that do not cancel, chunking,
interrupts, progress, divergence detection and messages, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdnotes import ensemble, models, sde, sgd
from sgdnotes.ensemble import DivergenceError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DLN = partial(models.dln2_loss, dims=(3, 2, 2))


def ou_drift(theta, centre):
    return -(theta - centre)


def two_pass(path):
    """float64 two-pass mean (m, d) and covariance (m, d, d) of a path (N, m, d)."""
    p = np.asarray(path, np.float64)
    mu = p.mean(axis=0)
    c = p - mu
    return mu, np.einsum("tmi,tmj->mij", c, c) / p.shape[0]


def linreg_data(n=20, d=2, seed=0, offset=0.0):
    key = jax.random.key(seed)
    X = jax.random.normal(key, (n, d))
    theta_star = offset + jnp.arange(1.0, d + 1)
    Y = (X @ theta_star)[:, None] + 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (n, 1))
    return X, Y, theta_star


# ---------------------------------------------------------------------------------------------
# 1. streaming statistics


@pytest.mark.parametrize("offset", [0.0, 1e2, 1e4])
def test_sde_stats_match_two_pass_at_offsets(offset):
    """OU process centred at `offset`: streaming mean/cov == float64 two-pass of the same float32 path.

    dt = sigma = 0.1 (EM stationary variance sigma^2/(2 - dt) = 5.3e-3): the drift increment dt*sd ~ 7e-3
    stays above the float32 spacing at 1e4 (9.8e-4); with dt = sigma = 0.01 the state itself cannot move
    by the drift at 1e4 and its variance is set by rounding, whatever the accumulator.
    """
    K, burn, m = 20000, 1000, 2
    c = jnp.full(2, offset, jnp.float32)
    r = sde.run_sde(jax.random.key(1), ou_drift, c, dt=0.1, n_steps=K, diffusion=0.1, n_trajectories=m,
                    args=(c,), stats="cov", burn_in=burn, record_steps=np.arange(K + 1))
    mu, cov = two_pass(r.thetas[burn + 1:])
    assert r.n_averaged == K - burn
    rel = np.abs(np.asarray(r.time_cov, np.float64) - cov).max() / np.abs(cov).max()
    assert rel <= 1e-3, rel
    ulp = np.spacing(np.float32(max(offset, 1.0)))  # the mean is returned in float32
    assert np.abs(np.asarray(r.time_mean, np.float64) - mu).max() <= ulp + 1e-3 * np.sqrt(cov.max())
    # the variance itself is the EM-OU one (sampling error ~ 5% here), not round-off
    v_em = 0.1 * 0.1 * 0.1 / (1 - 0.9**2)
    assert 0.8 * v_em < np.diagonal(cov, axis1=1, axis2=2).mean() < 1.25 * v_em


@pytest.mark.parametrize("offset", [0.0, 1e2, 1e4])
def test_sgd_stats_match_two_pass_at_offsets(offset):
    X, Y, theta_star = linreg_data(n=32, d=2, seed=2, offset=offset)
    K, burn, m = 6000, 500, 3
    r = sgd.run_sgd(jax.random.key(2), models.linreg_loss, theta_star, X, Y, eta=0.05, batch_size=4, n_steps=K,
                    n_trajectories=m, stats="cov", burn_in=burn, record_steps=np.arange(K + 1))
    mu, cov = two_pass(r.thetas[burn + 1:])
    rel = np.abs(np.asarray(r.time_cov, np.float64) - cov).max() / np.abs(cov).max()
    assert rel <= 1e-3, rel
    evals = np.linalg.eigvalsh(np.asarray(r.time_cov, np.float64))
    assert evals.min() >= -1e-3 * evals.max()


def test_naive_float32_accumulation_would_fail_the_same_check():
    """The check above is sensitive: the old s2/N - mu mu^T in float32 is far off at offset 1e4."""
    K, burn = 20000, 1000
    c = jnp.full(2, 1e4, jnp.float32)
    r = sde.run_sde(jax.random.key(1), ou_drift, c, dt=0.1, n_steps=K, diffusion=0.1, n_trajectories=2,
                    args=(c,), record_steps=np.arange(burn + 1, K + 1))
    p = np.asarray(r.thetas)  # float32 path
    s1 = np.zeros(p.shape[1:], np.float32)
    s2 = np.zeros(p.shape[1:] + p.shape[-1:], np.float32)
    for x in p:  # sequential float32 sums, as the old accumulator
        s1 += x
        s2 += x[:, :, None] * x[:, None, :]
    n = np.float32(p.shape[0])
    naive = s2 / n - (s1 / n)[:, :, None] * (s1 / n)[:, None, :]
    _, cov = two_pass(p)
    assert np.abs(naive - cov).max() / np.abs(cov).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# 3. chunking, interrupts, progress


def _leaves_equal(a, b):
    for name in a._fields:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert np.array_equal(np.asarray(x), np.asarray(y)), name


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunking_is_bit_identical_sgd(chunk):
    X, Y, _ = linreg_data(n=24, d=3, seed=3)
    kw = dict(eta=0.05, batch_size=5, n_steps=150, n_trajectories=19, sampling="epoch", momentum=0.3,
              stats="cov", burn_in=30, record_steps=[0, 3, 4, 77, 150], record_loss=True, block_size=8)
    one = sgd.run_sgd(jax.random.key(4), models.linreg_loss, jnp.zeros(3), X, Y, **kw)
    cut = sgd.run_sgd(jax.random.key(4), models.linreg_loss, jnp.zeros(3), X, Y, **kw, chunk_steps=chunk)
    _leaves_equal(one, cut)


@pytest.mark.parametrize("chunk", [1, 13])
def test_chunking_is_bit_identical_sde(chunk):
    X, Y, _ = linreg_data(n=24, d=2, seed=5)
    kw = dict(eta=0.05, batch_size=5, n_steps=60, n_trajectories=9, substeps=2, stats="cov", burn_in=10,
              record_steps=[0, 31, 60], record_loss=True)
    one = sde.run_sgd_sde(jax.random.key(5), models.linreg_loss, jnp.zeros(2), X, Y, **kw)
    cut = sde.run_sgd_sde(jax.random.key(5), models.linreg_loss, jnp.zeros(2), X, Y, **kw, chunk_steps=chunk)
    _leaves_equal(one, cut)


def test_keyboard_interrupt_returns_partial_result():
    X, Y, _ = linreg_data(n=24, d=2, seed=6)
    kw = dict(eta=0.05, batch_size=4, n_trajectories=5, stats="mean", burn_in=5)
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.warns(RuntimeWarning, match="interrupted after 30 of 100 steps"):
        part = sgd.run_sgd(jax.random.key(7), models.linreg_loss, jnp.zeros(2), X, Y, n_steps=100,
                           record_steps=[0, 10, 30, 31, 100], chunk_steps=10, progress=progress, **kw)
    assert calls == [(10, 100), (20, 100), (30, 100)]
    assert part.interrupted and part.completed_steps == 30 and part.n_averaged == 25
    assert list(part.steps) == [0, 10, 30] and part.thetas.shape[0] == 3
    full = sgd.run_sgd(jax.random.key(7), models.linreg_loss, jnp.zeros(2), X, Y, n_steps=30,
                       record_steps=[0, 10, 30], **kw)
    assert not full.interrupted and full.completed_steps == 30
    for name in ("thetas", "final_theta", "time_mean", "diverged_step"):
        assert np.array_equal(np.asarray(getattr(part, name)), np.asarray(getattr(full, name))), name


def test_progress_bar_runs(capsys):
    pytest.importorskip("tqdm")
    X, Y, _ = linreg_data(n=24, d=2, seed=6)
    r = sgd.run_sgd(jax.random.key(7), models.linreg_loss, jnp.zeros(2), X, Y, eta=0.05, batch_size=4,
                    n_steps=40, chunk_steps=10, progress=True)
    assert r.completed_steps == 40 and "40/40" in capsys.readouterr().err


def test_stats_only_keeps_no_path():
    X, Y, _ = linreg_data(n=24, d=2, seed=6)
    r = sgd.run_sgd(jax.random.key(7), models.linreg_loss, jnp.zeros(2), X, Y, eta=0.05, batch_size=4,
                    n_steps=5000, n_trajectories=4, stats="cov", record_params=False, chunk_steps=500)
    assert r.thetas is None and r.time_cov.shape == (4, 2, 2) and r.n_averaged == 5000


def test_plan_pieces_cover_steps_and_records():
    steps = np.array([0, 5, 6, 40])
    chunks = ensemble.plan(steps, 50, 8)
    pieces = [p for c in chunks for p in c]
    assert sum(p[0] for p in pieces) == 50
    assert [p[1] for p in pieces if p[1] >= 0] == [0, 1, 2, 3]
    assert all(sum(p[0] for p in c) <= 8 for c in chunks)
    k, at = 0, []
    for L, i in pieces:
        k += L
        if i >= 0:
            at.append(k)
    assert at == list(steps)


# ---------------------------------------------------------------------------------------------
# 2. divergence: growth, messages


def test_growth_counts_as_divergence_before_overflow():
    X, Y, _ = linreg_data(n=20, d=2, seed=3)
    lam = float(jnp.linalg.eigvalsh(models.linreg_hessian(X)).max())
    with pytest.warns(RuntimeWarning, match="stability bound 2/lambda_max"):
        r = sgd.run_sgd(jax.random.key(0), models.linreg_loss, jnp.ones(2), X, Y, eta=2.2 / lam, batch_size=20,
                        n_steps=200, n_trajectories=2, on_divergence="ignore", record_steps=np.arange(201))
    norms = np.linalg.norm(np.asarray(r.thetas, np.float64), axis=2)
    assert np.all(np.isfinite(norms[:-1]))  # finite values ... that the old check let through
    k = int(r.diverged_step[0])
    assert k > 0 and norms[k, 0] > 1e6 * np.sqrt(2) >= norms[k - 1, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r0 = sgd.run_sgd(jax.random.key(0), models.linreg_loss, jnp.ones(2), X, Y, eta=2.2 / lam, batch_size=20,
                         n_steps=200, n_trajectories=2, on_divergence="ignore", max_growth=None)
    assert int(r0.diverged_step[0]) == -1 or int(r0.diverged_step[0]) > k  # only NaN/inf count then


def test_divergence_message_substeps_counts_sgd_steps():
    X, Y, _ = linreg_data(n=20, d=2, seed=3)
    lam = float(jnp.linalg.eigvalsh(models.linreg_hessian(X)).max())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sde.run_sgd_sde(jax.random.key(0), models.linreg_loss, jnp.ones(2), X, Y, eta=12.0 / lam,
                            batch_size=5, n_steps=100, substeps=4, n_trajectories=2, on_divergence="ignore")
        with pytest.raises(DivergenceError) as info:
            sde.run_sgd_sde(jax.random.key(0), models.linreg_loss, jnp.ones(2), X, Y, eta=12.0 / lam,
                            batch_size=5, n_steps=100, substeps=4, n_trajectories=2)
    first = int(r.diverged_step[r.diverged_step >= 0].min())
    assert f"the first at SGD step {first} " in str(info.value)
    assert 0 < first < 100


def test_divergence_message_quotes_schedule_at_failing_step_and_heavy_ball_bound():
    X, Y, _ = linreg_data(n=20, d=2, seed=3)
    lam = float(jnp.linalg.eigvalsh(models.linreg_hessian(X)).max())
    sched = lambda k: jnp.where(k < 20, 0.5 / lam, 6.0 / lam)  # noqa: E731  stable, then unstable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DivergenceError) as info:
            sgd.run_sgd(jax.random.key(0), models.linreg_loss, jnp.ones(2), X, Y, eta=sched, batch_size=20,
                        n_steps=300)
    msg = str(info.value)
    k = int(msg.split("the first at step ")[1].split(" ")[0])
    assert k > 20 and f"eta({k - 1}) = {6.0 / lam:.4g}" in msg
    beta = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DivergenceError, match=r"heavy-ball stability bound 2\(1\+beta\)/lambda_max") as info:
            sgd.run_sgd(jax.random.key(0), models.linreg_loss, jnp.ones(2), X, Y, eta=3.5 / lam, batch_size=20,
                        n_steps=400, momentum=beta)
    assert f"= {2 * (1 + beta) / lam:.4g}" in str(info.value)


def test_upfront_warning_uses_heavy_ball_bound():
    X, Y, _ = linreg_data(n=20, d=2, seed=3)
    lam = float(jnp.linalg.eigvalsh(models.linreg_hessian(X)).max())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 2.5/lam is below 2(1+0.5)/lam: no warning
        sgd.run_sgd(jax.random.key(0), models.linreg_loss, jnp.ones(2), X, Y, eta=2.5 / lam, batch_size=20,
                    n_steps=5, momentum=0.5, on_divergence="ignore")
    with pytest.warns(RuntimeWarning, match="2\\(1\\+beta\\)/lambda_max"):
        sgd.run_sgd(jax.random.key(0), models.linreg_loss, jnp.ones(2), X, Y, eta=3.1 / lam, batch_size=20,
                    n_steps=5, momentum=0.5, on_divergence="ignore")


# ---------------------------------------------------------------------------------------------
# determinism


_HASH_SCRIPT = """
import hashlib, sys, jax, jax.numpy as jnp, numpy as np
from functools import partial
from sgdnotes import models, sgd
X = jax.random.normal(jax.random.key(0), (30, 3)); Y = jax.random.normal(jax.random.key(1), (30, 2))
loss = partial(models.dln2_loss, dims=(3, 2, 2))
th0 = 0.3 * jax.random.normal(jax.random.key(2), (10,))
out = []
for m, b in [(37, 16), (37, 5), (5, 16)]:
    r = sgd.run_sgd(jax.random.key(9), loss, th0, X, Y, eta=0.05, batch_size=4, n_steps=200, n_trajectories=m,
                    block_size=b, record_steps=[50, 200], stats="cov", mesh=False)
    out.append([hashlib.sha256(np.asarray(a)[..., :5, :].tobytes()).hexdigest() for a in (r.thetas, r.final_theta)])
print(out)
"""


def test_determinism_across_processes_block_sizes_and_counts():
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    runs = [subprocess.run([sys.executable, "-c", _HASH_SCRIPT], env=env, capture_output=True, text=True,
                           check=True, timeout=300).stdout.strip() for _ in range(2)]
    assert runs[0] == runs[1]
    h = eval(runs[0])  # noqa: S307  our own output
    assert h[0] == h[1] == h[2]  # first 5 trajectories: same whatever m and block_size


def test_default_block_cpu_and_accelerator():
    """Blocks of the CPU default on CPUs; one block per device (capped) on an accelerator; explicit sizes kept."""
    import types

    from sgdnotes.ensemble import ACCEL_BLOCK, default_block

    assert default_block(None, 1000, None, 16) == 16  # the test machine's devices are CPUs
    assert default_block(7, 1000, None, 16) == 7
    gpu = types.SimpleNamespace(platform="gpu")
    mesh = types.SimpleNamespace(devices=np.array([gpu, gpu], dtype=object))
    assert default_block(None, 1001, mesh, 16) == 501  # ceil(1001 / 2) trajectories per device, one block
    assert default_block(None, 10 * ACCEL_BLOCK, types.SimpleNamespace(devices=np.array([gpu], dtype=object)),
                         16) == ACCEL_BLOCK
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        default_block(0, 10, None, 16)
