"""Tests of the factor-form noise of sgdnotes.sde (issue 10): exact covariance, moments, stable laws."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sgdnotes import models, noise, sde

P_MIN = 1e-3  # KS tests: a correct sampler fails each with probability 1e-3


def logcosh_loss(theta, x, y):  # a loss without a closed form: the jax.grad path
    return jnp.log(jnp.cosh(y[0] - x @ theta))


def _problems():
    k = jax.random.key(21)
    lin_big = models.make_linreg_data(jax.random.fold_in(k, 0), 60, 2, noise_std=0.5)   # reduced statistics
    lin_small = models.make_linreg_data(jax.random.fold_in(k, 1), 8, 3, noise_std=0.5)  # per-sample form
    dims = (5, 5, 5)
    Xd, Yd, _ = models.make_dln_teacher_data(jax.random.fold_in(k, 2), 100, dims)       # reduced (reference)
    Xw, Yw, _ = models.make_dln_teacher_data(jax.random.fold_in(k, 3), 20, (4, 3, 2))   # per-sample chain rule
    loss5, loss432 = partial(models.dln2_loss, dims=dims), partial(models.dln2_loss, dims=(4, 3, 2))
    th_d = 0.5 * jax.random.normal(jax.random.fold_in(k, 4), (50,))
    th_w = 0.5 * jax.random.normal(jax.random.fold_in(k, 5), (4 * 3 + 3 * 2,))
    return {
        "linreg-reduced": (models.linreg_loss, lin_big.X, lin_big.Y, jnp.array([0.7, -0.4]), True),
        "linreg-per-sample": (models.linreg_loss, lin_small.X, lin_small.Y, jnp.array([0.3, 0.1, -0.5]), False),
        "dln-reduced": (loss5, Xd, Yd, th_d, True),
        "dln-per-sample": (loss432, Xw, Yw, th_w, False),
        "generic": (logcosh_loss, lin_small.X, lin_small.Y, jnp.array([0.3, 0.1, -0.5]), False),
    }


PROBLEMS = _problems()


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_factor_identity(name):
    """F F^T = Sigma_emp(theta) to float32 round-off, Sigma_emp from jax.grad per-sample gradients."""
    loss, X, Y, th, reduced = PROBLEMS[name]
    assert (sde.stats_matrix(loss, X, Y) is not None) == reduced
    F = np.asarray(sde.empirical_factor(loss, th, X, Y), np.float64)
    S = np.asarray(noise.empirical_noise_cov(noise.per_sample_grads(loss, th, X, Y)), np.float64)
    np.testing.assert_allclose(F @ F.T, S, atol=2e-5 * np.abs(S).max())
    if name == "dln-reduced":  # the reference network: r = d0 (d0 + 1)/2 + d2 d0 = 40 normals, not n = 100
        assert F.shape == (50, 40)


@pytest.mark.parametrize("name", ["linreg-reduced", "dln-reduced", "dln-per-sample", "generic"])
def test_one_step_covariance(name):
    """One Euler--Maruyama step from theta0: mean theta0 - eta gbar, covariance eta (eta/B) Sigma_emp (z-tests)."""
    loss, X, Y, th, _ = PROBLEMS[name]
    eta, B, m = 0.05, 4, 40_000
    res = sde.run_sgd_sde(jax.random.key(31), loss, th, X, Y, eta=eta, batch_size=B, n_steps=1, n_trajectories=m,
                          record_params=False)
    G = np.asarray(noise.per_sample_grads(loss, th, X, Y), np.float64)
    D = np.asarray(res.final_theta, np.float64) - np.asarray(th, np.float64) + eta * G.mean(0)  # the noise
    C = eta * eta / B * np.asarray(noise.empirical_noise_cov(G), np.float64)
    se_mean = np.sqrt(np.diag(C) / m)
    assert np.max(np.abs(D.mean(0)) / se_mean) < 5
    prod = D[:, :, None] * D[:, None, :]
    iu = np.triu_indices(D.shape[1])
    z = (prod.mean(0) - C)[iu] / (prod.std(0)[iu] / np.sqrt(m))
    assert np.max(np.abs(z)) < 5.5, np.max(np.abs(z))  # Bonferroni over <= 1275 entries: ~5e-5 per test
    # a wrong covariance (the eigh path's 1/(n-1) or a missing 1/B would be far larger) is rejected:
    u = np.linalg.eigh(C)[1][:, -1]
    q = (D @ u) ** 2
    assert abs(q.mean() - u @ C @ u) < 4 * q.std() / np.sqrt(m)


def test_gaussian_sde_moments_per_sample_path():
    """Linear regression with n < d_in (d_in + 1) (per-sample form): the Gaussian SDE's exact moments."""
    loss, X, Y, th, _ = PROBLEMS["linreg-per-sample"]
    eta, B, K, m = 0.1, 2, 20, 20_000
    res = sde.run_sgd_sde(jax.random.key(32), loss, th, X, Y, eta=eta, batch_size=B, n_steps=K, n_trajectories=m,
                          substeps=8, record_params=False)
    x = np.asarray(res.final_theta, np.float64)
    mean, cov = sde.linreg_moments(X, Y, th, eta=eta, batch_size=B, n_steps=K, model="sde")
    assert np.all(np.abs(x.mean(0) - mean) < 4 * x.std(0) / np.sqrt(m))
    lam = np.linalg.eigvalsh(np.asarray(X.T @ X) / X.shape[0]).max()
    bias = np.diag(cov) * 2 * lam * eta / 8  # Euler--Maruyama with dt = eta/8
    assert np.all(np.abs(x.var(0) - np.diag(cov)) < 4 * np.std((x - x.mean(0)) ** 2, 0) / np.sqrt(m) + bias)


@pytest.mark.parametrize("name", ["linreg-reduced", "dln-reduced"])
@pytest.mark.parametrize("alpha", [1.2, 1.7])
def test_stable_driver_one_step_law(name, alpha):
    """One step with the stable drivers: projections of the increment have the predicted alpha-stable law."""
    loss, X, Y, th, _ = PROBLEMS[name]
    eta, B, m = 0.05, 4, 20_000
    G = np.asarray(noise.per_sample_grads(loss, th, X, Y), np.float64)
    C = G - G.mean(0)
    n, d = G.shape
    u = np.linalg.eigh(C.T @ C)[1][:, -1]  # the direction of largest noise
    amp = eta ** (1 / alpha) * np.sqrt(eta / B / n)
    for form in ("elliptical", "independent"):
        res = sde.run_sgd_sde(jax.random.key(33), loss, th, X, Y, eta=eta, batch_size=B, n_steps=1,
                              n_trajectories=m, record_params=False, noise=sde.stable_driver(alpha, form))
        D = np.asarray(res.final_theta, np.float64) - np.asarray(th, np.float64) + eta * G.mean(0)
        a = C @ u
        if form == "elliptical":  # sqrt(W) N(0, s Sigma): scale sqrt(u^T s Sigma u / 2)
            scale = amp * np.sqrt(a @ a / 2)
        else:  # amp sum_i a_i Z_i, Z_i iid S-alpha-S scale 2^-1/2
            scale = amp * 2 ** -0.5 * np.sum(np.abs(a) ** alpha) ** (1 / alpha)
        p = stats.kstest(D @ u, stats.levy_stable(alpha, 0.0, scale=scale).cdf).pvalue
        assert p > P_MIN, (form, p)


def test_stable_driver_alpha_two_is_brownian():
    """alpha = 2: both stable drivers give the Gaussian driver's one-step law (KS against N(0, u^T C u))."""
    loss, X, Y, th, _ = PROBLEMS["dln-reduced"]
    eta, B, m = 0.05, 4, 20_000
    G = np.asarray(noise.per_sample_grads(loss, th, X, Y), np.float64)
    S = eta * eta / B * np.asarray(noise.empirical_noise_cov(G))
    u = np.linalg.eigh(S)[1][:, -1]
    for form in ("elliptical", "independent"):
        res = sde.run_sgd_sde(jax.random.key(34), loss, th, X, Y, eta=eta, batch_size=B, n_steps=1, n_trajectories=m,
                              record_params=False, noise=sde.stable_driver(2.0, form))
        D = np.asarray(res.final_theta, np.float64) - np.asarray(th, np.float64) + eta * G.mean(0)
        assert stats.kstest(D @ u, stats.norm(scale=np.sqrt(u @ S @ u)).cdf).pvalue > P_MIN, form


@pytest.mark.parametrize("form", ["elliptical", "independent"])
def test_run_sde_stable_increments_scale(form):
    """run_sde with a stable driver, zero drift, unit diffusion: each coordinate of x_T is S-alpha-S, scale 2^-1/2 T^(1/alpha)."""
    alpha, dt, K, m = 1.5, 0.01, 20, 20_000
    res = sde.run_sde(jax.random.key(35), lambda th: jnp.zeros(2), jnp.zeros(2), dt=dt, n_steps=K, diffusion=1.0,
                      noise=sde.stable_driver(alpha, form), n_trajectories=m, record_params=False)
    x = np.asarray(res.final_theta[:, 0], np.float64)
    # sum of K iid increments with scale 2^-1/2 dt^(1/alpha): scale 2^-1/2 (K dt)^(1/alpha)
    scale = 2 ** -0.5 * (K * dt) ** (1 / alpha)
    assert stats.kstest(x, stats.levy_stable(alpha, 0.0, scale=scale).cdf).pvalue > P_MIN


def test_determinism():
    loss, X, Y, th, _ = PROBLEMS["dln-reduced"]
    kw = dict(eta=0.02, batch_size=10, n_steps=20, n_trajectories=40, record_params=False,
              max_growth=None, on_divergence="ignore")  # stable jumps may be huge; only bit-identity matters
    for extra in ({}, {"noise": sde.stable_driver(1.5)}, {"noise": sde.stable_driver(1.5, "independent")}, {"order": 2}):
        a = sde.run_sgd_sde(jax.random.key(5), loss, th, X, Y, **kw, **extra).final_theta
        b = sde.run_sgd_sde(jax.random.key(5), loss, th, X, Y, **kw, **extra).final_theta
        c = sde.run_sgd_sde(jax.random.key(6), loss, th, X, Y, **kw, **extra).final_theta
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_cov_fn_checked_up_front():
    """Non-symmetric or non-PSD cov_fn(theta0): ValueError naming the rule; PSD up to round-off passes."""
    drift = lambda th: -th
    kw = dict(dt=0.1, n_steps=2, n_trajectories=3)
    with pytest.raises(ValueError, match="symmetric"):
        sde.run_sde(jax.random.key(0), drift, jnp.zeros(2), diffusion=lambda th: jnp.array([[1.0, 0.5], [0.0, 1.0]]), **kw)
    with pytest.raises(ValueError, match="positive semi-definite"):
        sde.run_sde(jax.random.key(0), drift, jnp.zeros(2), diffusion=lambda th: jnp.diag(jnp.array([1.0, -0.1])), **kw)
    with pytest.raises(ValueError, match="finite"):
        sde.run_sde(jax.random.key(0), drift, jnp.zeros(2), diffusion=lambda th: jnp.full((2, 2), jnp.nan), **kw)
    # the empirical covariance of the reference network is singular (rank 40 < 50): round-off must pass
    loss, X, Y, th, _ = PROBLEMS["dln-reduced"]
    _, cov, _ = sde._sgd_model_fns(loss, 1)
    S = cov(th, X, Y, 0.0, 1.0)
    assert np.linalg.eigvalsh(np.asarray(S, np.float64)).min() < 0  # float32 round-off makes it slightly indefinite
    sde.check_cov(S)


def test_stable_driver_validation():
    with pytest.raises(ValueError, match="alpha"):
        sde.stable_driver(2.5)
    with pytest.raises(ValueError, match="alpha"):
        sde.stable_driver(0.0)
    with pytest.raises(ValueError, match="form"):
        sde.stable_driver(1.5, "diagonal")


def test_noise_scale_multiplies_the_driving_noise():
    """noise_scale = 2 quadruples the stationary variance of the Gaussian SDE on linear regression (a quadratic),
    started at the minimiser; the same key draws the same increments, so the ratio is sharp up to the state
    dependence of Sigma_emp(theta) (second order in the spread)."""
    loss, X, Y, _, _ = PROBLEMS["linreg-reduced"]
    th_star = jnp.asarray(np.linalg.lstsq(np.asarray(X), np.asarray(Y)[:, 0], rcond=None)[0], jnp.float32)
    kw = dict(eta=0.01, batch_size=4, n_steps=600, n_trajectories=2000, record_steps=[600])
    var = {c: np.asarray(sde.run_sgd_sde(jax.random.key(41), loss, th_star, X, Y, noise_scale=c, **kw).thetas[-1],
                         np.float64).var(axis=0).sum() for c in (1.0, 2.0)}
    assert abs(var[2.0] / var[1.0] - 4) < 0.2, var
    with pytest.raises(ValueError, match="noise_scale"):
        sde.run_sgd_sde(jax.random.key(41), loss, th_star, X, Y, noise_scale=0.0, **kw)
    with pytest.raises(ValueError, match="noise_scale"):
        sde.run_sgd_sde(jax.random.key(41), loss, th_star, X, Y, noise_scale=2.0, driver="minibatch", **kw)
