"""Tests of the SGD ensemble simulator ``sgdnotes.sgd`` (and the shared loop ``sgdnotes.ensemble``).

Statistical tests use a fixed key (so they are deterministic) and tolerances of a few standard errors
computed from the sample itself.
"""

from __future__ import annotations

import itertools
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdnotes import models, noise, sgd
from sgdnotes.ensemble import DivergenceError

DIMS = (3, 4, 2)
DLN = partial(models.dln2_loss, dims=DIMS)  # stable object: compiled code is reused across tests


def linreg_data(n=20, d=2, seed=0):
    data = models.make_linreg_data(jax.random.key(seed), n, d, noise_std=0.5)
    return data.X, data.Y


def dln_data(n=30, seed=0):
    X, Y, _ = models.make_dln_teacher_data(jax.random.key(seed), n, DIMS)
    theta0 = 0.5 * jax.random.normal(jax.random.key(seed + 1), (DIMS[0] * DIMS[1] + DIMS[1] * DIMS[2],))
    return X, Y, theta0


# ---------------------------------------------------------------------------------------------
# validation


X0, Y0 = linreg_data()
BASE = dict(eta=0.1, batch_size=4, n_steps=5)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(batch_size=21, sampling="without_replacement"), "batch_size must be <= n = 20"),
        (dict(batch_size=21, sampling="epoch"), "batch_size must be <= n = 20"),
        (dict(eta=0.0), "eta .* must be a finite number > 0"),
        (dict(eta=-0.1), "eta .* must be a finite number > 0"),
        (dict(eta=lambda k: 0.0 * k), "eta .* at step 0 must be a finite number > 0"),
        (dict(n_trajectories=0), "n_trajectories must be >= 1"),
        (dict(record_steps=[3, 2]), "record_steps must be strictly increasing"),
        (dict(record_steps=[0, 6]), "record_steps must be strictly increasing integers in \\[0, n_steps=5\\]"),
        (dict(record_steps=[]), "record_steps must be a non-empty 1-D sequence of integers"),
        (dict(record_steps=[0.5]), "record_steps must be a non-empty 1-D sequence of integers"),
        (dict(sampling="bootstrap"), "sampling must be one of"),
        (dict(momentum=1.0), "momentum must be in"),
        (dict(weight_decay=-1.0), "weight_decay must be a finite number >= 0"),
        (dict(stats="var"), "stats must be None"),
        (dict(batch_grad="fast"), "batch_grad must be one of"),
        (dict(block_size=0), "block_size must be >= 1"),
        (dict(on_divergence="stop"), "on_divergence must be one of"),
    ],
)
def test_validation_options(change, match):
    kw = {**BASE, **change}
    with pytest.raises(ValueError, match=match):
        sgd.run_sgd(jax.random.key(0), models.linreg_loss, jnp.zeros(2), X0, Y0, **kw)


def test_validation_shapes_and_data():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="X and Y must have the same number of rows"):
        sgd.run_sgd(key, models.linreg_loss, jnp.zeros(2), X0, Y0[:-1], **BASE)
    with pytest.raises(ValueError, match="linreg_loss needs theta of size d_in \\* d_out"):
        sgd.run_sgd(key, models.linreg_loss, jnp.zeros(3), X0, Y0, **BASE)
    with pytest.raises(ValueError, match="loss_fn\\(theta, x, y\\) must accept"):
        sgd.run_sgd(key, lambda th, x, y: jnp.sum((y - x @ th.reshape(2, 2)) ** 2), jnp.zeros(3), X0, Y0, **BASE)
    X, Y, theta0 = dln_data()
    with pytest.raises(ValueError, match="dln2_loss with dims"):
        sgd.run_sgd(key, DLN, theta0, X, Y[:, :1], **BASE)
    with pytest.raises(ValueError, match="theta0 of shape \\(m, d\\) must have m = n_trajectories = 3 rows"):
        sgd.run_sgd(key, models.linreg_loss, jnp.zeros((2, 2)), X0, Y0, n_trajectories=3, **BASE)
    with pytest.raises(ValueError, match="X must have 2 dimension"):
        sgd.run_sgd(key, models.linreg_loss, jnp.zeros(2), X0[:, 0], Y0, **BASE)
    for bad in (np.nan, np.inf):
        Xb = np.array(X0).copy()
        Xb[3, 1] = bad
        with pytest.raises(ValueError, match="X must contain only finite values"):
            sgd.run_sgd(key, models.linreg_loss, jnp.zeros(2), Xb, Y0, **BASE)
        Yb = np.array(Y0).copy()
        Yb[0, 0] = bad
        with pytest.raises(ValueError, match="Y must contain only finite values"):
            sgd.run_sgd(key, models.linreg_loss, jnp.zeros(2), X0, Yb, **BASE)
    with pytest.raises(ValueError, match="theta0 must contain only finite values"):
        sgd.run_sgd(key, models.linreg_loss, jnp.array([0.0, np.nan]), X0, Y0, **BASE)


# ---------------------------------------------------------------------------------------------
# determinism, batches, fast path


@pytest.mark.parametrize("sampling", sgd.SAMPLING)
def test_same_key_bit_identical_different_keys_differ(sampling):
    X, Y, theta0 = dln_data()
    kw = dict(eta=0.02, batch_size=5, n_steps=12, n_trajectories=9, sampling=sampling, record_steps=[0, 6, 12])
    a = sgd.run_sgd(jax.random.key(3), DLN, theta0, X, Y, **kw)
    b = sgd.run_sgd(jax.random.key(3), DLN, theta0, X, Y, **kw)
    c = sgd.run_sgd(jax.random.key(4), DLN, theta0, X, Y, **kw)
    assert np.array_equal(np.asarray(a.thetas), np.asarray(b.thetas))
    assert np.array_equal(np.asarray(a.final_theta), np.asarray(b.final_theta))
    assert not np.allclose(np.asarray(a.final_theta), np.asarray(c.final_theta))
    # trajectories of one ensemble differ from each other too
    assert np.unique(np.asarray(a.final_theta)[:, 0]).size == 9


@partial(jax.jit, static_argnums=0)
def _batch_grad_reference(loss_fn, theta, X, Y, idx):
    return jax.grad(lambda th: sgd.mean_loss(loss_fn, th, X[idx], Y[idx]))(theta)


@pytest.mark.parametrize("sampling", sgd.SAMPLING)
def test_simulator_uses_batch_indices(sampling):
    """Each recorded update equals theta_k - eta * (gradient on batch_indices(traj_key_i, k))."""
    X, Y = linreg_data(n=14, d=3, seed=5)
    m, K, B, eta = 5, 9, 4, 0.05  # n // B = 3 steps per epoch: K spans three epochs
    res = sgd.run_sgd(jax.random.key(7), models.linreg_loss, jnp.zeros(3), X, Y, eta=eta, batch_size=B,
                      n_steps=K, n_trajectories=m, sampling=sampling, record_steps=np.arange(K + 1))
    keys = sgd.trajectory_keys(jax.random.key(7), m)
    th = np.asarray(res.thetas)
    for k in range(K):
        idx = jax.vmap(lambda kk: sgd.batch_indices(kk, k, 14, B, sampling))(keys)
        for i in range(m):
            expected = th[k, i] - eta * np.asarray(_batch_grad_reference(models.linreg_loss, th[k, i], X, Y, idx[i]))
            np.testing.assert_allclose(th[k + 1, i], expected, rtol=1e-5, atol=1e-6)


def test_fast_batch_gradients_match_generic():
    X, Y, theta0 = dln_data()
    kw = dict(eta=0.02, batch_size=5, n_steps=40, n_trajectories=20)
    fast = sgd.run_sgd(jax.random.key(1), DLN, theta0, X, Y, **kw)
    slow = sgd.run_sgd(jax.random.key(1), DLN, theta0, X, Y, batch_grad="generic", **kw)
    np.testing.assert_allclose(np.asarray(fast.final_theta), np.asarray(slow.final_theta), rtol=2e-5, atol=2e-6)
    # the per-sample chain rule variant (chosen for wide layers) agrees as well
    W1, W2 = models.dln_unpack(theta0, DIMS)
    th = jnp.stack([theta0, 2 * theta0], axis=1)
    idx = jnp.array([[0, 3], [5, 5], [29, 1]])
    xb, yb = X.T[:, idx], Y.T[:, idx]
    g_ss = sgd._dln2_batch_grad(th, xb, yb, dims=DIMS)
    ref = jnp.stack([_batch_grad_reference(DLN, th[:, j], X, Y, idx[:, j]) for j in range(2)], axis=1)
    np.testing.assert_allclose(np.asarray(g_ss), np.asarray(ref), rtol=1e-5, atol=1e-6)
    Xl, Yl = linreg_data(n=10, d=3)
    Yl = jnp.concatenate([Yl, -2 * Yl], axis=1)
    thl = jax.random.normal(jax.random.key(2), (6, 2))
    g_l = sgd._linreg_batch_grad(thl, Xl.T[:, idx], Yl.T[:, idx])
    ref_l = jnp.stack([_batch_grad_reference(models.linreg_loss, thl[:, j], Xl, Yl, idx[:, j]) for j in range(2)], 1)
    np.testing.assert_allclose(np.asarray(g_l), np.asarray(ref_l), rtol=1e-5, atol=1e-6)
    # a wide regression (d_in * d_out * B > sgd._SMALL: einsum branch)
    Xw, Yw = linreg_data(n=50, d=40, seed=4)
    thw = jax.random.normal(jax.random.key(3), (40, 2))
    idw = jax.random.randint(jax.random.key(4), (16, 2), 0, 50)
    g_w = sgd._linreg_batch_grad(thw, Xw.T[:, idw], Yw.T[:, idw])
    ref_w = jnp.stack([_batch_grad_reference(models.linreg_loss, thw[:, j], Xw, Yw, idw[:, j]) for j in range(2)], 1)
    np.testing.assert_allclose(np.asarray(g_w), np.asarray(ref_w), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dims", [(6, 2, 6), (12, 6, 12)])  # products broadcast-summed / via einsum
def test_wide_dln_uses_chain_rule_and_matches(dims):
    assert not sgd._dln2_suffstats_cheaper(dims, 10)
    assert sgd._dln2_suffstats_cheaper((5, 5, 5), 10)
    X, Y, _ = models.make_dln_teacher_data(jax.random.key(0), 15, dims)
    loss = partial(models.dln2_loss, dims=dims)
    th = 0.3 * jax.random.normal(jax.random.key(1), (dims[0] * dims[1] + dims[1] * dims[2], 3))
    idx = jax.random.randint(jax.random.key(2), (10, 3), 0, 15)
    g = sgd._dln2_batch_grad(th, X.T[:, idx], Y.T[:, idx], dims=dims)
    ref = jnp.stack([_batch_grad_reference(loss, th[:, j], X, Y, idx[:, j]) for j in range(3)], axis=1)
    np.testing.assert_allclose(np.asarray(g), np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_block_size_and_padding_do_not_change_results():
    X, Y, theta0 = dln_data()
    kw = dict(eta=0.02, batch_size=5, n_steps=20, n_trajectories=7, stats="mean", record_loss=True)
    a = sgd.run_sgd(jax.random.key(2), DLN, theta0, X, Y, **kw)
    b = sgd.run_sgd(jax.random.key(2), DLN, theta0, X, Y, block_size=3, **kw)  # 7 = 3 + 3 + 1 (padded)
    for f in ("thetas", "losses", "final_theta", "time_mean"):
        np.testing.assert_allclose(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), rtol=1e-5, atol=1e-6)
    assert np.array_equal(a.diverged_step, b.diverged_step)
    # record_loss records L_n at the recorded parameters
    L = jax.vmap(lambda th: sgd.mean_loss(DLN, th, X, Y))(a.thetas.reshape(-1, a.thetas.shape[-1]))
    np.testing.assert_allclose(np.asarray(a.losses).ravel(), np.asarray(L), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# sampling schemes against exact covariances


def _one_step_moments(sampling, m=20000, n=20, B=5, eta=0.1):
    X, Y = linreg_data(n=n, d=2, seed=11)
    theta0 = jnp.array([0.7, -0.4])
    res = sgd.run_sgd(jax.random.key(5), models.linreg_loss, theta0, X, Y, eta=eta, batch_size=B, n_steps=1,
                      n_trajectories=m, sampling=sampling, record_params=False)
    u = (np.asarray(res.final_theta, np.float64) - np.asarray(theta0)) / (-eta)  # = batch gradients (m, 2)
    G = np.asarray(noise.per_sample_grads(models.linreg_loss, theta0, X, Y), np.float64)
    return u, G


def _assert_cov_matches(u, mean, cov, k=5.0):
    m = u.shape[0]
    c = u - u.mean(axis=0)
    emp = c.T @ c / (m - 1)
    se_mean = np.sqrt(np.diag(emp) / m)
    assert np.all(np.abs(u.mean(axis=0) - mean) < k * se_mean), (u.mean(axis=0), mean, se_mean)
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.reshape(m, -1).std(axis=0).reshape(cov.shape) / np.sqrt(m)
    assert np.all(np.abs(emp - cov) < k * se_cov), (emp, cov, se_cov)


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_one_step_covariance(sampling):
    n, B = 20, 5
    u, G = _one_step_moments(sampling, n=n, B=B)
    Sigma_emp = np.cov(G.T, bias=True)  # 1/n, as the notes define Sigma_emp
    factor = 1.0 if sampling == "with_replacement" else (n - B) / (n - 1)
    _assert_cov_matches(u, G.mean(axis=0), factor * Sigma_emp / B)
    # the two schemes are distinguishable at this sample size: the other formula is rejected
    other = (n - B) / (n - 1) if sampling == "with_replacement" else 1.0
    with pytest.raises(AssertionError):
        _assert_cov_matches(u, G.mean(axis=0), other * Sigma_emp / B)
    # and agrees with noise.minibatch_noise_cov
    np.testing.assert_allclose(noise.minibatch_noise_cov(jnp.asarray(G), B, sampling == "with_replacement"),
                               factor * Sigma_emp / B, rtol=1e-4)


def test_epoch_uses_every_sample_once_per_epoch():
    n, B = 22, 5  # 4 steps per epoch, 2 samples skipped per epoch
    keys = sgd.trajectory_keys(jax.random.key(9), 4)
    spe = n // B
    for key in keys:
        epochs = []
        for e in range(3):
            idx = np.concatenate([np.asarray(sgd.batch_indices(key, e * spe + j, n, B, "epoch")) for j in range(spe)])
            assert idx.size == np.unique(idx).size == spe * B  # no sample twice within an epoch
            assert idx.min() >= 0 and idx.max() < n
            epochs.append(idx)
        assert not np.array_equal(epochs[0], epochs[1])  # a fresh permutation each epoch
    # with B | n every sample is used exactly once per epoch
    for key in keys:
        idx = np.concatenate([np.asarray(sgd.batch_indices(key, 4 + j, 20, 5, "epoch")) for j in range(4)])
        assert np.array_equal(np.sort(idx), np.arange(20))


@pytest.mark.parametrize("n, B", [(4, 2), (40, 35)])
def test_without_replacement_uniform_subsets(n, B):
    """Distinct indices each step; every B-subset (n=4) / every index (n=40, sorting path) equally likely."""
    keys = sgd.trajectory_keys(jax.random.key(13), 3000)
    idx = np.asarray(jax.vmap(lambda k: sgd.batch_indices(k, 17, n, B, "without_replacement"))(keys))
    assert all(np.unique(row).size == B for row in idx) and idx.min() >= 0 and idx.max() < n
    if n == 4:
        subsets = [tuple(sorted(r)) for r in idx]
        counts = np.array([subsets.count(s) for s in itertools.combinations(range(n), B)])
        p = 1 / counts.size
    else:
        counts = np.bincount(idx.ravel(), minlength=n)
        p = B / n
    N = idx.shape[0]
    assert np.all(np.abs(counts / N - p) < 5 * np.sqrt(p * (1 - p) / N)), counts


def test_with_replacement_marginals_uniform():
    keys = sgd.trajectory_keys(jax.random.key(21), 2000)
    idx = np.asarray(jax.vmap(lambda k: sgd.batch_indices(k, 3, 7, 6))(keys))
    N = idx.size
    counts = np.bincount(idx.ravel(), minlength=7)
    assert np.all(np.abs(counts / N - 1 / 7) < 5 * np.sqrt((1 / 7) * (6 / 7) / N))
    # the B draws of one batch are independent: correlation of draw 0 and draw 1 near 0
    r = np.corrcoef(idx[:, 0], idx[:, 1])[0, 1]
    assert abs(r) < 5 / np.sqrt(idx.shape[0])


# ---------------------------------------------------------------------------------------------
# divergence


def test_divergence_raises_with_step_and_bound():
    X, Y = linreg_data(n=20, d=2, seed=3)
    lam = float(jnp.linalg.eigvalsh(models.linreg_hessian(X)).max())
    with pytest.raises(DivergenceError, match=r"first at step \d+.*2/lambda_max = ") as info:
        sgd.run_sgd(jax.random.key(0), models.linreg_loss, jnp.ones(2), X, Y, eta=3.0 / lam, batch_size=20,
                    n_steps=400, n_trajectories=3, sampling="epoch")
    assert f"{2 / lam:.4g}" in str(info.value) and "exceeds" in str(info.value)


def test_divergence_warn_reports_exact_first_step():
    X, Y = linreg_data(n=20, d=2, seed=3)
    lam = float(jnp.linalg.eigvalsh(models.linreg_hessian(X)).max())
    K = 200
    with pytest.warns(RuntimeWarning, match="SGD diverged"):
        res = sgd.run_sgd(jax.random.key(0), models.linreg_loss, jnp.ones(2), X, Y, eta=4.0 / lam, batch_size=4,
                          n_steps=K, n_trajectories=6, on_divergence="warn", record_steps=np.arange(K + 1))
    th = np.asarray(res.thetas)
    # diverged: non-finite, or the norm grew past 1e6 max(|theta_0|, 1) (|theta_0| = sqrt(2))
    bad = ~(np.sum(th.astype(np.float32) ** 2, axis=2) <= np.float32((1e6 * np.sqrt(2.0)) ** 2))  # (K+1, m)
    first = [int(np.argmax(bad[:, i])) if bad[:, i].any() else -1 for i in range(6)]
    assert np.array_equal(res.diverged_step, first)
    assert np.all(res.diverged_step > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = sgd.run_sgd(jax.random.key(0), models.linreg_loss, jnp.ones(2), X, Y, eta=0.5 / lam, batch_size=4,
                         n_steps=50, n_trajectories=6)
    assert np.all(ok.diverged_step == -1)


# ---------------------------------------------------------------------------------------------
# update rule and streaming statistics


def test_momentum_weight_decay_schedule_match_hand_loop():
    X, Y = linreg_data(n=12, d=2, seed=8)
    m, K, B, beta, wd = 3, 6, 3, 0.6, 0.05
    schedule = lambda k: 0.1 / (1.0 + 0.5 * k)  # noqa: E731
    res = sgd.run_sgd(jax.random.key(4), models.linreg_loss, jnp.array([1.0, -1.0]), X, Y, eta=schedule,
                      batch_size=B, n_steps=K, n_trajectories=m, momentum=beta, weight_decay=wd,
                      record_steps=np.arange(K + 1))
    keys = sgd.trajectory_keys(jax.random.key(4), m)
    Xn, Yn = np.asarray(X, np.float64), np.asarray(Y, np.float64)[:, 0]
    for i in range(m):
        th, vel = np.array([1.0, -1.0]), np.zeros(2)
        for k in range(K):
            idx = np.asarray(sgd.batch_indices(keys[i], k, 12, B))
            g = Xn[idx].T @ (Xn[idx] @ th - Yn[idx]) / B
            vel = beta * vel - schedule(k) * (g + wd * th)
            th = th + vel
            np.testing.assert_allclose(np.asarray(res.thetas[k + 1, i]), th, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(res.final_velocity[i]), vel, rtol=2e-5, atol=1e-6)


def test_streaming_stats_equal_recorded_paths():
    X, Y, theta0 = dln_data()
    K, burn = 25, 7
    res = sgd.run_sgd(jax.random.key(6), DLN, theta0, X, Y, eta=0.02, batch_size=5, n_steps=K, n_trajectories=5,
                      record_steps=np.arange(K + 1), stats="cov", burn_in=burn)
    path = np.asarray(res.thetas, np.float64)[burn + 1:]  # theta_k for burn_in < k <= K
    assert res.n_averaged == K - burn == path.shape[0]
    mean = path.mean(axis=0)
    c = path - mean
    cov = np.einsum("tmi,tmj->mij", c, c) / path.shape[0]
    np.testing.assert_allclose(np.asarray(res.time_mean), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(res.time_cov), cov, rtol=1e-3, atol=2e-5)


def test_threefry_and_vectorised_indices_match_jax_and_batch_indices():
    from jax.extend.random import threefry_2x32

    k = jax.random.bits(jax.random.key(0), (2,))
    c = jax.random.bits(jax.random.key(1), (2, 9))
    y0, y1 = sgd._threefry2x32(k[0], k[1], c[0], c[1])
    assert np.array_equal(np.concatenate([y0, y1]), np.asarray(threefry_2x32((k[0], k[1]), c.ravel())))
    keys = sgd.trajectory_keys(jax.random.key(3), 6)
    pairs = sgd._key_pair(keys).T  # (2, m): the simulator's layout
    for sampling, n, B in [("with_replacement", 100, 10), ("without_replacement", 50, 40)]:
        one = jax.vmap(lambda kk: sgd.batch_indices(kk, 9, n, B, sampling), out_axes=1)(keys)
        assert np.array_equal(np.asarray(one), np.asarray(sgd._indices(pairs, 9, n, B, sampling)))
