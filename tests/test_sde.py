"""Tests of sgdnotes.sde: the Euler--Maruyama ensemble and the built-in SDE models of SGD (chapter 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sgdnotes import models, sde, sgd
from sgdnotes.stats import se_mean as stats_se_mean
from sgdnotes.stats import var_and_se as stats_var_and_se
from sgdnotes.ensemble import DivergenceError

A_OU = 1.0  # OU drift rate: d theta = -A theta dt + SIG dW


def ou_drift(theta):
    return -A_OU * theta


@pytest.fixture(scope="module")
def data():
    return models.make_linreg_data(jax.random.key(11), 60, 2, noise_std=0.5)


# ---------------------------------------------------------------------------------------------
# Euler--Maruyama core


def em_ou_moments(h, T, sig, x0):
    """Exact mean and variance of the Euler--Maruyama chain for the OU process after T/h steps."""
    K = round(T / h)
    q = 1 - A_OU * h
    return q**K * x0, sig**2 * h * (1 - q ** (2 * K)) / (1 - q**2)


def test_weak_order_one_on_ou():
    """Error of E[theta_T] and Var[theta_T] against the exact OU law shrinks like h (slope ~ 1)."""
    sig, x0, T, m = 1.0, 1.0, 1.0, 400_000
    exact_mean = np.exp(-A_OU * T) * x0
    exact_var = sig**2 / (2 * A_OU) * (1 - np.exp(-2 * A_OU * T))
    hs = np.array([0.2, 0.1, 0.05, 0.025])
    err_mean, err_var = [], []
    key = jax.random.key(0)
    for j, h in enumerate(hs):
        res = sde.run_sde(jax.random.fold_in(key, j), ou_drift, jnp.array([x0]), dt=float(h),
                          n_steps=round(T / h), diffusion=sig, n_trajectories=m, record_params=False)
        x = np.asarray(res.final_theta[:, 0], dtype=np.float64)
        mu, var = x.mean(), x.var()
        se_mu, se_var = x.std() / np.sqrt(m), np.std((x - mu) ** 2) / np.sqrt(m)
        em_mu, em_var = em_ou_moments(h, T, sig, x0)
        # the simulation reproduces the exact EM moments (4 standard errors) ...
        assert abs(mu - em_mu) < 4 * se_mu
        assert abs(var - em_var) < 4 * se_var
        err_mean.append(abs(mu - exact_mean))
        err_var.append(abs(var - exact_var))
    # ... and the weak errors decay with slope ~ 1 (exact EM slopes here are 0.98 and 0.97)
    slope_mean = np.polyfit(np.log(hs), np.log(err_mean), 1)[0]
    slope_var = np.polyfit(np.log(hs), np.log(err_var), 1)[0]
    assert abs(slope_mean - 1) < 0.15, slope_mean
    assert abs(slope_var - 1) < 0.15, slope_var


def test_ks_stationary_ou():
    """The ensemble at large time is N(0, sig^2/(2A)) (KS test; EM bias at h = 0.01 is 0.5% in variance)."""
    sig, m = 0.7, 4000
    res = sde.run_sde(jax.random.key(1), ou_drift, jnp.zeros(1), dt=0.01, n_steps=1500, diffusion=sig,
                      n_trajectories=m, record_params=False)
    x = np.asarray(res.final_theta[:, 0], dtype=np.float64)
    p = stats.kstest(x, "norm", args=(0.0, sig / np.sqrt(2 * A_OU))).pvalue
    assert p > 1e-3, p


def test_diffusion_forms_agree():
    """Isotropic sigma, matrix sigma I, and cov_fn sigma^2 I give identical paths with the same key."""
    key, s = jax.random.key(2), 0.3
    kw = dict(dt=0.05, n_steps=40, n_trajectories=16)
    a = sde.run_sde(key, ou_drift, jnp.ones(2), diffusion=s, **kw).final_theta
    b = sde.run_sde(key, ou_drift, jnp.ones(2), diffusion=s * np.eye(2), **kw).final_theta
    c = sde.run_sde(key, ou_drift, jnp.ones(2), diffusion=lambda th: s**2 * jnp.eye(2), **kw).final_theta
    f = sde.run_sde(key, ou_drift, jnp.ones(2), diffusion=lambda th: s * jnp.eye(2), diffusion_kind="factor",
                    **kw).final_theta
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-5)
    np.testing.assert_allclose(a, f, atol=1e-6)


def test_constant_matrix_diffusion_covariance():
    """Stationary covariance of d theta = -theta dt + G dW is G G^T / 2 (pooled over time and trajectories)."""
    G = np.array([[1.0, 0.0], [0.8, 0.4]])
    res = sde.run_sde(jax.random.key(3), ou_drift, jnp.zeros(2), dt=0.01, n_steps=3000, diffusion=G,
                      n_trajectories=2000, record_params=False)
    x = np.asarray(res.final_theta, dtype=np.float64)
    C = np.cov(x.T)
    target = G @ G.T / 2 / (1 - 0.005)  # EM stationary covariance at dt = 0.01: GG^T / (2 - dt)
    se = np.sqrt((target**2 + np.outer(np.diag(target), np.diag(target))) / len(x))
    assert np.all(np.abs(C - target) < 4 * se)


def test_singular_state_dependent_covariance():
    """A rank-1 Sigma(theta) is handled (no NaN) and puts no noise on its null direction."""
    def cov(th):
        u = jnp.array([1.0, 0.0]) * (1 + 0.5 * jnp.sin(th[0]))
        return jnp.outer(u, u)

    res = sde.run_sde(jax.random.key(4), lambda th: jnp.zeros(2), jnp.zeros(2), dt=0.01, n_steps=200,
                      diffusion=cov, n_trajectories=256)
    th = np.asarray(res.final_theta)
    assert np.all(np.isfinite(th))
    assert np.max(np.abs(th[:, 1])) < 1e-5
    assert th[:, 0].std() > 0.9  # sd >= 0.5 * sqrt(t = 2) = 0.71 at the least


@settings(max_examples=5, deadline=None)
@given(alpha=st.floats(0.6, 2.0), dt=st.floats(0.001, 0.5))
def test_pluggable_noise_scaling(alpha, dt):
    """A user driver noise(key, shape, dt) is used as is: here +-dt^(1/alpha) steps, so theta_K^2 = K dt^(2/alpha) on average."""
    def rademacher(key, shape, h):
        return h ** (1.0 / alpha) * jax.random.rademacher(key, shape).astype(jnp.float32)

    K, m = 16, 4000
    res = sde.run_sde(jax.random.key(5), lambda th: jnp.zeros(1), jnp.zeros(1), dt=dt, n_steps=K,
                      diffusion=1.0, noise=rademacher, n_trajectories=m, record_params=False)
    x = np.asarray(res.final_theta[:, 0], dtype=np.float64)
    scale = dt ** (1 / alpha)
    steps = np.round(x / scale)  # each path is a sum of K steps of +-1 in units of dt^(1/alpha)
    np.testing.assert_allclose(x, steps * scale, atol=1e-4 * max(scale, 1e-3) * K)
    assert np.all(np.abs(steps) <= K) and np.all((steps - K) % 2 == 0)
    m2 = np.mean(steps**2)
    assert abs(m2 - K) < 4 * np.std(steps**2) / np.sqrt(m)


def test_determinism(data):
    kw = dict(eta=0.1, batch_size=4, n_steps=30, n_trajectories=8)
    a = sde.run_sgd_sde(jax.random.key(6), models.linreg_loss, jnp.zeros(2), data.X, data.Y, **kw).final_theta
    b = sde.run_sgd_sde(jax.random.key(6), models.linreg_loss, jnp.zeros(2), data.X, data.Y, **kw).final_theta
    c = sde.run_sgd_sde(jax.random.key(7), models.linreg_loss, jnp.zeros(2), data.X, data.Y, **kw).final_theta
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


# ---------------------------------------------------------------------------------------------
# Built-in models of SGD


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement", "epoch"])
def test_minibatch_driver_is_sgd(data, sampling):
    """Coupling: the first-order model driven by SGD's own minibatch noise, same key, is SGD."""
    key, th0 = jax.random.key(8), jnp.array([1.0, -1.0])
    kw = dict(eta=0.1, batch_size=5, n_steps=50, n_trajectories=32, sampling=sampling)
    a = sgd.run_sgd(key, models.linreg_loss, th0, data.X, data.Y, **kw).final_theta
    b = sde.run_sgd_sde(key, models.linreg_loss, th0, data.X, data.Y, driver="minibatch", **kw).final_theta
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_modified_drift(data):
    """order=2 drift is -(g + eta/2 H g) for linear regression (H = X^T X / n)."""
    drift, _, _ = sde._sgd_model_fns(models.linreg_loss, 2)
    th = jnp.array([0.3, -0.2])
    eta = 0.2
    H = np.asarray(models.linreg_hessian(data.X))
    g = H @ np.asarray(th) - np.asarray(data.X.T @ data.Y[:, 0] / data.X.shape[0])
    got = drift(th, data.X, data.Y, jnp.asarray(eta), jnp.asarray(1.0))
    np.testing.assert_allclose(got, -(g + eta / 2 * H @ g), rtol=1e-4, atol=1e-6)


def em_chain_moments(X, Y, th0, *, eta, B, n_steps, substeps, order):
    """Exact mean and covariance of the Euler--Maruyama chain of the order-1/2 model (dt = eta/substeps).

    Independent of sde.linreg_moments: iterates E theta and Cov theta in theta coordinates, with
    E[Sigma_emp(theta)] = (1/n) sum_i x_i x_i^T E[r_i^2] - E[g] E[g]^T - H C H, r_i = x_i^T theta - y_i.
    """
    X, y = np.asarray(X, np.float64), np.asarray(Y, np.float64)[:, 0]
    n, d = X.shape
    H, b = X.T @ X / n, X.T @ y / n
    D = np.eye(d) if order == 1 else np.eye(d) + eta / 2 * H
    dt = eta / substeps
    mu, C = np.array(th0, np.float64), np.zeros((d, d))
    for _ in range(n_steps * substeps):
        g = H @ mu - b
        r2 = (X @ mu - y) ** 2 + np.einsum("ia,ab,ib->i", X, C, X)
        sig = (X * r2[:, None]).T @ X / n - np.outer(g, g) - H @ C @ H
        P = np.eye(d) - dt * D @ H
        mu, C = mu - dt * D @ g, P @ C @ P.T + dt * eta / B * sig
    return mu, C


@pytest.mark.parametrize("model", ["sgd", "sde", "sme"])
def test_linreg_moments_match_simulation(data, model):
    """SGD ensemble = exact SGD moments; SDE/SME ensembles (EM, dt = eta/8) = exact moments of their own
    Euler--Maruyama chain, with no allowance -- and the other model's chain is rejected (4 s.e.)."""
    th0, m, eta, K, B, M = np.array([1.0, -1.0]), 20_000, 0.2, 25, 3, 8
    kw = dict(eta=eta, batch_size=B, n_steps=K, n_trajectories=m, record_params=False)
    key = jax.random.key(9)
    if model == "sgd":
        res = sgd.run_sgd(key, models.linreg_loss, th0, data.X, data.Y, **kw)
        mean, cov = sde.linreg_moments(data.X, data.Y, th0, eta=eta, batch_size=B, n_steps=K, model=model)
        other = sde.linreg_moments(data.X, data.Y, th0, eta=eta, batch_size=B, n_steps=K, model="sde")
    else:
        order = 1 if model == "sde" else 2
        res = sde.run_sgd_sde(key, models.linreg_loss, th0, data.X, data.Y, order=order, substeps=M, **kw)
        mean, cov = em_chain_moments(data.X, data.Y, th0, eta=eta, B=B, n_steps=K, substeps=M, order=order)
        other = em_chain_moments(data.X, data.Y, th0, eta=eta, B=B, n_steps=K, substeps=M, order=3 - order)
    x = np.asarray(res.final_theta, dtype=np.float64)
    mu, mu_se = stats_se_mean(x)
    v, v_se = stats_var_and_se(x)
    assert np.all(np.abs(mu - mean) <= 4 * mu_se)
    assert np.all(np.abs(v - np.diag(cov)) <= 4 * v_se)
    # power: the same data tell this model from the other one (SGD vs SDE; SDE vs SME)
    z_other = np.maximum(np.abs(mu - other[0]) / mu_se, np.abs(v - np.diag(other[1])) / v_se)
    assert np.max(z_other) >= 4


def test_em_chain_reference_converges_to_linreg_moments(data):
    """The EM-chain reference tends to the exact SDE moments as dt -> 0 (error ~ dt)."""
    th0, eta, K, B = np.array([1.0, -1.0]), 0.2, 25, 3
    exact = sde.linreg_moments(data.X, data.Y, th0, eta=eta, batch_size=B, n_steps=K, model="sde")[1]
    errs = [np.linalg.norm(em_chain_moments(data.X, data.Y, th0, eta=eta, B=B, n_steps=K, substeps=M,
                                            order=1)[1] - exact) for M in (8, 16)]
    assert errs[1] < errs[0] and abs(errs[0] / errs[1] - 2) < 0.2


@pytest.mark.parametrize("model", ["sgd", "sde", "sme"])
def test_linreg_moments_large_offset(model):
    """Covariance at a large offset (mean 1e6 x the spread) = covariance of the centred problem (two-pass
    reference: shift the data so the minimiser is near 0), to 1e-8 relative; the mean to 16 ulp of the offset."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 2)) * np.array([1.0, 0.6])
    th_small = np.array([0.4, -0.3])
    Y0 = X @ th_small[:, None] + 0.5 * rng.normal(size=(40, 1))
    offset = np.array([3e6, -2e6])
    Y = Y0 + X @ offset[:, None]
    kw = dict(eta=0.3, batch_size=2, n_steps=60, model=model)
    th0 = th_small + np.array([0.5, 0.5])
    m_ref, c_ref = sde.linreg_moments(X, Y0, th0, **kw)
    m_big, c_big = sde.linreg_moments(X, Y, th0 + offset, **kw)
    # mean: float64 cannot resolve better than one ulp of the offset (eps * 3e6 = 6.7e-10); allow 16 ulp
    np.testing.assert_allclose(m_big - offset, m_ref, rtol=0, atol=16 * np.finfo(float).eps * np.abs(offset).max())
    np.testing.assert_allclose(c_big, c_ref, rtol=1e-8, atol=1e-8 * np.abs(c_ref).max())


def test_linreg_moments_refuses_beyond_stability():
    """Beyond the mean-square stability radius the moments diverge: ValueError naming the radius and value."""
    X = np.array([[1.0, 0.0], [0.0, 0.5], [1.0, 1.0], [-1.0, 0.5], [2.0, -0.3]])
    Y = np.ones((5, 1))
    lam = np.linalg.eigvalsh(X.T @ X / 5).max()
    for model in ("sgd", "sde", "sme"):
        grid = np.linspace(0.05, 1.99, 80) / lam if model == "sgd" else np.linspace(0.05, 20, 80) / lam
        growth = np.array([sde.linreg_moment_growth(X, eta=e, batch_size=1, model=model) for e in grid])
        assert growth[0] < 1 < growth[-1]
        bad = grid[np.argmax(growth >= 1)]
        with pytest.raises(ValueError, match="stability radius.*got"):
            sde.linreg_moments(X, Y, np.zeros(2), eta=bad, batch_size=1, n_steps=10, model=model)
        good = grid[np.argmax(growth >= 1) - 1]
        mean, cov = sde.linreg_moments(X, Y, np.zeros(2), eta=good, batch_size=1, n_steps=10, model=model)
        assert np.all(np.isfinite(cov))
    # SGD: the growth factor is the radius of linreg_ms_radius
    for e in (0.3, 1.0, 1.7):
        np.testing.assert_allclose(sde.linreg_moment_growth(X, eta=e / lam, batch_size=2),
                                   sde.linreg_ms_radius(X, eta=e / lam, batch_size=2), rtol=1e-10)


def test_linreg_moment_growth_1d_closed_forms():
    """1-D inputs with E x^2 = 1, E x^4 = kappa: SGD's covariance is stable iff eta < 2B/(B + kappa - 1),
    the SDE's iff eta < 2B/(kappa - 1) (roots of (1-eta)^2 + eta^2 (kappa-1)/B = 1 and
    -2 + eta (kappa-1)/B = 0)."""
    X = np.array([[-np.sqrt(3)], [0.0], [0.0], [0.0], [0.0], [np.sqrt(3)]])  # kappa = 3 (Gauss-Hermite)
    for B in (1, 4, 16):
        e_sgd, e_sde = 2 * B / (B + 2), B
        assert sde.linreg_moment_growth(X, eta=0.999 * e_sgd, batch_size=B) < 1
        assert sde.linreg_moment_growth(X, eta=1.001 * e_sgd, batch_size=B) > 1
        assert sde.linreg_moment_growth(X, eta=0.999 * e_sde, batch_size=B, model="sde") < 1
        assert sde.linreg_moment_growth(X, eta=1.001 * e_sde, batch_size=B, model="sde") > 1


def test_linreg_moments_1d_stationary_formula():
    """1-D quadratic (x_i = s): stationary variance of SGD = eta c/(B h (2 - eta h)); SDE = eta c/(2 B h)."""
    y = np.linspace(-1, 1, 21)[:, None] ** 3
    s, eta, B = 1.3, 0.5, 2
    X = np.full((21, 1), s)
    h, c = s**2, s**2 * y.var()
    _, v_sgd = sde.linreg_moments(X, y, np.zeros(1), eta=eta, batch_size=B, n_steps=5000, model="sgd")
    _, v_sde = sde.linreg_moments(X, y, np.zeros(1), eta=eta, batch_size=B, n_steps=5000, model="sde")
    np.testing.assert_allclose(v_sgd[0, 0], eta * c / (B * h * (2 - eta * h)), rtol=1e-9)
    np.testing.assert_allclose(v_sde[0, 0], eta * c / (2 * B * h), rtol=1e-9)


def test_substeps_and_steps_units(data):
    res = sde.run_sgd_sde(jax.random.key(10), models.linreg_loss, jnp.zeros(2), data.X, data.Y, eta=0.1,
                          batch_size=4, n_steps=20, substeps=4, record_steps=[0, 5, 20], record_loss=True,
                          n_trajectories=3)
    assert list(res.steps) == [0, 5, 20]
    assert res.thetas.shape == (3, 3, 2) and res.losses.shape == (3, 3)


def test_divergence_reported(data):
    lam = float(np.linalg.eigvalsh(np.asarray(models.linreg_hessian(data.X))).max())
    with pytest.raises(DivergenceError, match="stability bound"):
        sde.run_sgd_sde(jax.random.key(12), models.linreg_loss, jnp.ones(2), data.X, data.Y, eta=3.0 / lam,
                        batch_size=4, n_steps=2000, n_trajectories=4)
    res = sde.run_sgd_sde(jax.random.key(12), models.linreg_loss, jnp.ones(2), data.X, data.Y, eta=3.0 / lam,
                          batch_size=4, n_steps=2000, n_trajectories=4, on_divergence="ignore")
    assert np.all(res.diverged_step > 0)


@pytest.mark.parametrize("kw, match", [
    (dict(eta=-0.1), "eta"),
    (dict(order=3), "order"),
    (dict(driver="levy"), "driver"),
    (dict(driver="minibatch", substeps=2), "substeps=1"),
    (dict(substeps=0), "substeps"),
    (dict(batch_size=0), "batch_size"),
    (dict(noise=3), "noise"),
])
def test_run_sgd_sde_validation(data, kw, match):
    args = dict(eta=0.1, batch_size=4, n_steps=5)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        sde.run_sgd_sde(jax.random.key(0), models.linreg_loss, jnp.zeros(2), data.X, data.Y, **args)


def test_run_sde_validation():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="diffusion_kind"):
        sde.run_sde(key, ou_drift, jnp.zeros(2), dt=0.1, n_steps=3, diffusion=lambda t: jnp.eye(2),
                    diffusion_kind="chol")
    with pytest.raises(ValueError, match=r"factor G\(theta\) must return"):
        sde.run_sde(key, ou_drift, jnp.zeros(2), dt=0.1, n_steps=3, diffusion=lambda t: jnp.ones(3),
                    diffusion_kind="factor")
    with pytest.raises(ValueError, match="args must be a tuple"):
        sde.run_sde(key, ou_drift, jnp.zeros(2), dt=0.1, n_steps=3, args=[1.0])
    with pytest.raises(ValueError, match="dt"):
        sde.run_sde(key, ou_drift, jnp.zeros(2), dt=0.0, n_steps=3)
    with pytest.raises(ValueError, match="covariance"):
        sde.run_sde(key, ou_drift, jnp.zeros(2), dt=0.1, n_steps=3, diffusion=lambda t: jnp.eye(3))
    with pytest.raises(ValueError, match="model"):
        sde.linreg_moments(np.ones((3, 1)), np.ones((3, 1)), np.zeros(1), eta=0.1, batch_size=1, n_steps=2,
                           model="langevin")
    with pytest.raises(ValueError, match="sampling"):
        sde.minibatch_driver(10, 2, "shuffled")


def test_ms_radius_threshold():
    """Deterministic limit: the radius crosses 1 at eta lambda_max = 2 without noise (huge B); noise lowers it."""
    X = np.array([[1.0, 0.0], [0.0, 0.5], [1.0, 1.0], [-1.0, 0.5]])
    lam = np.linalg.eigvalsh(X.T @ X / 4).max()
    assert sde.linreg_ms_radius(X, eta=1.99 / lam, batch_size=10**9) < 1
    assert sde.linreg_ms_radius(X, eta=2.01 / lam, batch_size=10**9) > 1
    assert sde.linreg_ms_radius(X, eta=1.9 / lam, batch_size=1) > 1
    # the radius is the growth rate of the exact second moment E||theta - theta*||^2 (linreg_moments) of SGD
    theta_star = np.array([0.3, -0.2])
    Y = X @ theta_star[:, None]  # noiseless: theta* is a fixed point, so E||delta||^2 ~ radius^K
    eta = 0.5 / lam
    r = sde.linreg_ms_radius(X, eta=eta, batch_size=1)

    def m2(K):
        mean, cov = sde.linreg_moments(X, Y, np.array([1.0, 1.0]), eta=eta, batch_size=1, n_steps=K)
        return np.trace(cov) + np.sum((mean - theta_star) ** 2)

    assert r < 1
    np.testing.assert_allclose(m2(51) / m2(50), r, rtol=1e-4)
