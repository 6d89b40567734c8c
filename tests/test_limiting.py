"""Tests of sgdnotes.limiting (chapter 8): closed forms vs stationary.lyapunov, matrix exponentials,
discrete Lyapunov solutions, and momentum SGD / SDE simulations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from sgdnotes import limiting as lim
from sgdnotes import models, noise, sde, sgd, stationary


def random_problem(seed, d=4):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    rho = np.sort(rng.uniform(0.05, 1.5, d))[::-1]
    H = Q @ np.diag(rho) @ Q.T
    Z = rng.normal(size=(d, d))
    Sigma = Z @ Z.T / d + 0.1 * np.eye(d)
    return Q, rho, (H + H.T) / 2, (Sigma + Sigma.T) / 2


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), eta=st.floats(0.01, 1.0), beta=st.floats(0.0, 0.99),
       sigma2=st.floats(0.05, 3.0), lam=st.floats(0.0, 0.5))
def test_explicit_decomposition_matches_lyapunov(seed, eta, beta, sigma2, lam):
    _, rho, H, _ = random_problem(seed)
    ou = lim.ou_model(H, sigma2 * H, eta, beta, 8, weight_decay=lam)
    Q, U = lim.ou_decomposition(H, sigma2, eta, beta, weight_decay=lam)
    assert np.allclose(ou.A, (ou.D + Q) @ U, atol=1e-9 * np.abs(ou.A).max())
    assert np.allclose(Q, -Q.T)
    B = stationary.lyapunov(ou.A, ou.D)
    assert np.allclose(B, np.linalg.inv(U), rtol=1e-6, atol=1e-10)
    Qg, Ug = stationary.drift_decomposition(ou.A, ou.D)
    assert np.allclose(Qg, Q, rtol=1e-5, atol=1e-8 * np.abs(Q).max())


def test_stationary_variances_and_speed_any_sigma():
    Qv, rho, H, Sigma = random_problem(1)
    eta, beta, S = 0.3, 0.8, 16
    ou = lim.ou_model(H, Sigma, eta, beta, S)
    B = stationary.lyapunov(ou.A, ou.D) / ou.kappa
    # speed identity holds for a Sigma that does not commute with H
    assert np.isclose(eta**2 * np.trace(B[4:, 4:]), lim.momentum_speed(eta, beta, S, np.trace(Sigma)), rtol=1e-9)
    # commuting case: per-mode variances
    Sig_c = Qv @ np.diag([0.3, 0.2, 0.1, 0.05]) @ Qv.T
    Bc = stationary.lyapunov(*lim.ou_model(H, Sig_c, eta, beta, S)[:2]) / ou.kappa
    vt, vv = lim.stationary_variances(rho, [0.3, 0.2, 0.1, 0.05], eta, beta, S)
    assert np.allclose(np.diag(Qv.T @ Bc[:4, :4] @ Qv), vt, rtol=1e-8)
    assert np.allclose(np.diag(Qv.T @ Bc[4:, 4:] @ Qv), vv, rtol=1e-8)
    assert np.allclose(Bc[:4, 4:], 0, atol=1e-12)


@pytest.mark.parametrize("omega", [0.3, 1.0, 3.0])  # over-, critically and under-damped for gamma = 1
def test_mode_propagator_is_matrix_exponential(omega):
    gamma = 1.0
    S_ = np.array([[0.0, -1.0], [omega**2, 2 * gamma]])
    for t in (0.0, 0.3, 2.0, 7.0):
        P = lim.mode_propagator(gamma, omega, t)
        assert np.allclose(P, scipy.linalg.expm(-S_ * t), atol=1e-10)


def test_oscillator_solves_ode():
    rho, eta, beta = np.array([0.7, 0.05]), 0.1, 0.9
    t = np.linspace(0, 5, 6)
    a, b = lim.oscillator([1.0, -2.0], [0.5, 0.0], rho, eta, beta, t)
    gamma, omega = lim.oscillator_rates(rho, eta, beta)
    for l in range(2):
        S_ = np.array([[0.0, -1.0], [omega[l]**2, 2 * gamma[l]]])
        z = np.array([scipy.linalg.expm(-S_ * tt) @ np.array([[1.0, -2.0][l], [0.5, 0.0][l]]) for tt in t])
        assert np.allclose(a[:, l], z[:, 0]) and np.allclose(b[:, l], z[:, 1])
    assert np.allclose(lim.damping_ratio(rho, eta, beta), gamma / omega)
    assert np.allclose(lim.velocity_correlation(np.array([0]), rho, eta, beta), 1.0)


def test_discrete_moments_match_discrete_lyapunov_and_limit():
    Qv, rho, H, Sigma = random_problem(2)
    eta, beta, S, lam = 0.4, 0.7, 4, 0.1
    C = lim.discrete_stationary_cov(H, Sigma, eta, beta, S, weight_decay=lam)
    s = np.einsum("il,ij,jl->l", Qv, Sigma, Qv)
    vx, cxu, vu = lim.discrete_mode_moments(rho, s, eta, beta, S, weight_decay=lam)
    Qb = scipy.linalg.block_diag(Qv, Qv)
    Ce = Qb.T @ C @ Qb
    assert np.allclose(np.diag(Ce)[:4], vx, rtol=1e-9) and np.allclose(np.diag(Ce)[4:], vu, rtol=1e-9)
    assert np.allclose(np.diag(Ce[:4, 4:]), cxu, rtol=1e-9)
    assert np.isclose(np.trace(C[4:, 4:]), lim.discrete_speed(rho, s, eta, beta, S, weight_decay=lam))
    # small-eta limit: the exact speed tends to the continuous law
    r = lim.discrete_speed(rho, s, 1e-4, beta, S) / lim.momentum_speed(1e-4, beta, S, s.sum())
    assert abs(r - 1) < 1e-4


def test_displacements():
    _, rho, H, _ = random_problem(3)
    s = 0.2 * rho
    eta, beta, S = 0.2, 0.9, 8
    k = np.array([1, 5, 40, 300])
    # discrete from rest vs iterating the covariance recursion
    M = lim.discrete_transition(rho, eta, beta)
    q = eta**2 * s / S
    C = np.zeros((4, 2, 2))
    out = {}
    for kk in range(1, 301):
        C = M @ C @ np.swapaxes(M, -1, -2) + q[:, None, None] * np.ones((2, 2))
        out[kk] = C[:, 0, 0].sum()
    assert np.allclose(lim.displacement_from_rest(k, rho, s, eta, beta, S), [out[kk] for kk in k], rtol=1e-9)
    # continuous from rest vs eq. (20) with expm and lyapunov
    ou = lim.ou_model(np.diag(rho), np.diag(s), eta, beta, S)
    B = stationary.lyapunov(ou.A, ou.D) / ou.kappa
    ref = [np.trace((B - scipy.linalg.expm(-ou.A * eta * kk) @ B @ scipy.linalg.expm(-ou.A.T * eta * kk))[:4, :4]) for kk in k]
    assert np.allclose(lim.displacement_from_rest(k, rho, s, eta, beta, S, model="continuous"), ref, rtol=1e-8)
    # stationary displacement: continuous vs expm; paper's lag sum at k=1 is the speed
    ref = [2 * np.trace((B - scipy.linalg.expm(-ou.A * eta * kk) @ B)[:4, :4]) for kk in k]
    assert np.allclose(lim.stationary_displacement(k, rho, s, eta, beta, S, model="continuous"), ref, rtol=1e-8)
    assert np.isclose(lim.global_displacement(np.array([1]), rho, s, eta, beta, S)[0],
                      lim.momentum_speed(eta, beta, S, s.sum()))
    big = lim.stationary_displacement(np.array([5000]), rho, s, eta, beta, S)
    assert np.isclose(big[0], 2 * lim.discrete_mode_moments(rho, s, eta, beta, S)[0].sum(), rtol=1e-6)


def test_spectral_peaks_numerically():
    eta, beta = 0.2, 0.9
    w = np.linspace(0, np.pi, 200_001)
    for rho in (0.7, 0.27):
        a1, a2 = 1 + beta - eta * rho, -beta
        Sw = 1 / np.abs(1 - a1 * np.exp(-1j * w) - a2 * np.exp(-2j * w))**2
        assert abs(w[np.argmax(Sw)] - lim.spectral_peak(rho, eta, beta)) < 1e-4
        g, om = lim.oscillator_rates(rho, eta, beta)
        wc = np.linspace(0, 5, 200_001)
        Sc = 1 / ((om**2 - wc**2)**2 + 4 * g**2 * wc**2)
        assert abs(eta * wc[np.argmax(Sc)] - lim.spectral_peak(rho, eta, beta, model="continuous")) < 1e-4


def test_linreg_noise_spectrum_matches_empirical_cov():
    X, Y = models.load_digits_regression()
    X, Y = X[:300], Y[:300, :3]
    rng = np.random.default_rng(0)
    theta = rng.normal(size=64 * 3) * 0.1
    U, _ = np.linalg.qr(rng.normal(size=(64, 5)))
    G = noise.per_sample_grads(models.linreg_loss, jnp.asarray(theta, jnp.float32), X, Y)
    Sig = np.asarray(noise.empirical_noise_cov(G), float)
    s = lim.linreg_noise_spectrum(theta, X, Y, U)
    for a in range(5):
        for j in range(3):
            q = np.kron(U[:, a], np.eye(3)[j])
            assert np.isclose(s[a, j], q @ Sig @ q, rtol=2e-3, atol=1e-7)
    s2 = lim.linreg_noise_spectrum(np.stack([theta, theta]), X, Y, U)
    assert s2.shape == (2, 5, 3) and np.allclose(s2[1], s)


def test_speed_of_momentum_sgd_matches_exact_discrete_law():
    """Statistical: E||delta||^2 of run_sgd on linear regression vs the exact law with the visited-state noise."""
    key = jax.random.key(80)
    data = models.make_linreg_data(jax.random.fold_in(key, 0), 2000, 3, noise_std=0.5, input_scales=jnp.array([1.0, 0.6, 0.3]))
    X, Y = np.asarray(data.X, float), np.asarray(data.Y, float)
    mu = np.linalg.lstsq(X, Y, rcond=None)[0].ravel()
    c, U = np.linalg.eigh(X.T @ X / len(X))
    eta, beta, S, m = 0.3, 0.8, 8, 64
    steps = np.array([0, 300, 301, 400, 401, 500, 501, 600, 601])
    r = sgd.run_sgd(jax.random.fold_in(key, 1), models.linreg_loss, jnp.asarray(mu, jnp.float32), data.X, data.Y,
                    eta=eta, batch_size=S, n_steps=601, n_trajectories=m, momentum=beta, record_steps=steps)
    th = np.asarray(r.thetas, float)
    dl2 = np.sum((th[2::2] - th[1::2])**2, -1)  # (4, m)
    s_vis = lim.linreg_noise_spectrum(th[1::2], X, Y, U)[..., 0].mean(axis=(0, 1))
    pred = lim.discrete_speed(c, s_vis, eta, beta, S)
    se = dl2.mean(0).std(ddof=1) / np.sqrt(m)
    assert abs(dl2.mean() - pred) < 4 * se


def drift_fn(z, A):
    return -A @ z


def test_phase_space_sde_matches_euler_maruyama_lyapunov():
    eta, beta, S, rho, s = 0.5, 0.9, 8, 0.5, 0.2
    ou = lim.ou_model(np.array([[rho]]), np.array([[s]]), eta, beta, S)
    G = np.diag(np.sqrt(np.diag(2 * ou.D / ou.kappa)))
    dt = eta / 50
    r = sde.run_sde(jax.random.key(81), drift_fn, jnp.zeros(2), dt=dt, n_steps=50 * 400, diffusion=jnp.asarray(G, jnp.float32),
                    n_trajectories=64, stats="cov", burn_in=50 * 100, args=(jnp.asarray(ou.A, jnp.float32),), record_params=False)
    C_em = scipy.linalg.solve_discrete_lyapunov(np.eye(2) - ou.A * dt, G @ G.T * dt)
    vv = np.asarray(r.time_cov[:, 1, 1], float)
    assert abs(vv.mean() - C_em[1, 1]) < 4 * vv.std(ddof=1) / np.sqrt(len(vv))
    vt_c, vv_c = lim.stationary_variances(rho, s, eta, beta, S)
    assert abs(C_em[1, 1] / vv_c - 1) < 0.1  # Euler-Maruyama at dt = eta/50 is close to the continuous law


def test_validation_errors():
    with pytest.raises(ValueError, match="momentum"):
        lim.momentum_speed(0.1, 1.0, 8, 1.0)
    with pytest.raises(ValueError, match="batch_size"):
        lim.momentum_speed(0.1, 0.9, 0, 1.0)
    with pytest.raises(ValueError, match="stationary"):
        lim.discrete_mode_moments(5.0, 1.0, 1.0, 0.9, 8)
    with pytest.raises(ValueError, match="positive definite"):
        lim.ou_decomposition(np.diag([1.0, 0.0]), 1.0, 0.1, 0.9)
    with pytest.raises(ValueError, match="unstable"):
        lim.discrete_stationary_cov(np.eye(2) * 10, np.eye(2), 1.0, 0.9, 8)
    with pytest.raises(ValueError, match="model"):
        lim.displacement_from_rest(np.array([1]), [1.0], [1.0], 0.1, 0.9, 8, model="other")


@pytest.mark.parametrize("eta, beta", [(0.2, 0.9), (0.05, 0.5), (1.0, 0.0)])
def test_velocity_correlation_many_lags_against_expm(eta, beta):
    # independent: stationary Cov(v(t+tau), v(t)) = (e^{-A tau} B)_{vv} for the 2x2 OU of each mode
    rho = np.array([0.7, 0.27, 0.01])
    lags = np.array([0, 1, 2, 5, 17, 60, 250])
    C = lim.velocity_correlation(lags, rho, eta, beta)
    assert C.shape == (len(lags), len(rho))
    for l, r_ in enumerate(rho):
        ou = lim.ou_model(np.array([[r_]]), np.array([[1.0]]), eta, beta, 4)
        B = stationary.lyapunov(ou.A, ou.D)
        ref = [(scipy.linalg.expm(-ou.A * eta * k) @ B)[1, 1] / B[1, 1] for k in lags]
        assert np.allclose(C[:, l], ref, rtol=1e-8, atol=1e-12)


def test_global_displacement_many_k_against_double_sum():
    # eq. (13) by its definition: E||sum_{i=1}^k eta v_i||^2 = eta^2 sum_l Var v_l sum_{i,j=1}^k C_l(|i - j|),
    # with C_l from matrix exponentials (independent of velocity_correlation) and an explicit double sum
    rho, s = np.array([0.7, 0.2, 0.03]), np.array([0.05, 0.02, 0.004])
    eta, beta, S = 0.2, 0.9, 8
    ks = np.array([1, 2, 3, 7, 25, 80])
    _, var_v = lim.stationary_variances(rho, s, eta, beta, S)
    ref = []
    for k in ks:
        tot = 0.0
        for l, r_ in enumerate(rho):
            ou = lim.ou_model(np.array([[r_]]), np.array([[1.0]]), eta, beta, S)
            B = stationary.lyapunov(ou.A, ou.D)
            Cl = np.array([(scipy.linalg.expm(-ou.A * eta * t) @ B)[1, 1] / B[1, 1] for t in range(k)])
            ii, jj = np.meshgrid(np.arange(k), np.arange(k))
            tot += eta**2 * var_v[l] * Cl[np.abs(ii - jj)].sum()
        ref.append(tot)
    assert np.allclose(lim.global_displacement(ks, rho, s, eta, beta, S), ref, rtol=1e-9)
