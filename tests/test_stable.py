"""Tests of sgdnotes.stable: the alpha-stable samplers against scipy (Kolmogorov--Smirnov)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sgdnotes import stable

N_KS = 20_000
P_MIN = 1e-3  # a correct sampler fails one of these KS tests with probability ~ 1e-3 each


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.3, 1.7, 1.95, 2.0])
def test_symmetric_matches_scipy(alpha):
    scale = 0.7
    x = np.asarray(stable.sample_stable(jax.random.key(int(100 * alpha)), alpha, (N_KS,), scale=scale), np.float64)
    assert np.all(np.isfinite(x))
    p = stats.kstest(x, stats.levy_stable(alpha, 0.0, scale=scale).cdf).pvalue
    assert p > P_MIN, (alpha, p)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, 0.9])
def test_positive_matches_scipy(alpha):
    w = np.asarray(stable.sample_positive_stable(jax.random.key(int(1000 * alpha)), alpha, (N_KS,)), np.float64)
    assert np.all(w > 0)
    law = stats.levy_stable(alpha, 1.0, scale=stable.positive_stable_scipy_scale(alpha))
    law.dist.parameterization = "S1"
    p = stats.kstest(w, law.cdf).pvalue
    assert p > P_MIN, (alpha, p)


def test_positive_half_is_levy():
    """a = 1/2: E[exp(-s W)] = exp(-sqrt(s)) is the Levy law with c = 1/2 (closed form, independent of scipy's stable code)."""
    w = np.asarray(stable.sample_positive_stable(jax.random.key(5), 0.5, (N_KS,)), np.float64)
    assert stats.kstest(w, stats.levy(scale=0.5).cdf).pvalue > P_MIN


def test_alpha_two_variance_and_laplace_transform():
    """alpha = 2 is N(0, 2 scale^2); the empirical Laplace transform of W matches exp(-s^a) (z-test)."""
    x = np.asarray(stable.sample_stable(jax.random.key(6), 2.0, (200_000,), scale=1.5), np.float64)
    se = np.std(x**2) / np.sqrt(x.size)
    assert abs(np.mean(x**2) - 2 * 1.5**2) < 4 * se
    a = 0.6
    w = np.asarray(stable.sample_positive_stable(jax.random.key(7), a, (200_000,)), np.float64)
    for s in (0.3, 1.0, 3.0):
        e = np.exp(-s * w)
        assert abs(e.mean() - np.exp(-s**a)) < 4 * e.std() / np.sqrt(e.size), s


def test_elliptical_projection_scale():
    """sqrt(W) * N(0, S) with W from a = alpha/2: a projection is S-alpha-S with scale sqrt(u^T S u / 2)."""
    alpha, m = 1.5, N_KS
    S = np.array([[2.0, 0.6], [0.6, 0.5]])
    k1, k2 = jax.random.split(jax.random.key(8))
    W = stable.sample_positive_stable(k1, alpha / 2, (m,))
    G = jax.random.normal(k2, (m, 2)) @ jnp.asarray(np.linalg.cholesky(S).T, jnp.float32)
    Z = np.asarray(jnp.sqrt(W)[:, None] * G, np.float64)
    for u in (np.array([1.0, 0.0]), np.array([0.6, -0.8])):
        law = stats.levy_stable(alpha, 0.0, scale=np.sqrt(u @ S @ u / 2))
        assert stats.kstest(Z @ u, law.cdf).pvalue > P_MIN


def test_deterministic_and_validation():
    k = jax.random.key(3)
    assert np.array_equal(stable.sample_stable(k, 1.2, (5,)), stable.sample_stable(k, 1.2, (5,)))
    with pytest.raises(ValueError, match="alpha"):
        stable.sample_stable(k, 2.5, (3,))
    with pytest.raises(ValueError, match="alpha"):
        stable.sample_stable(k, 0.0, (3,))
    with pytest.raises(ValueError, match="alpha"):
        stable.sample_positive_stable(k, 1.5, (3,))
    with pytest.raises(ValueError, match="scale"):
        stable.sample_stable(k, 1.5, (3,), scale=-1.0)
    with pytest.raises(ValueError, match="key"):
        stable.sample_stable(3, 1.5, (3,))


# ----------------------------------------------------------------------------------------------
# Tail-index estimators


def _pareto(seed, alpha, n):
    """|x| exactly Pareto(alpha) above 1 (inverse transform of uniforms), with random signs."""
    u = np.asarray(jax.random.uniform(jax.random.key(seed), (2, n), minval=1e-12, maxval=1.0), np.float64)
    return np.where(u[1] < 0.5, -1.0, 1.0) * u[0] ** (-1.0 / alpha)


def test_hill_exact_on_pareto_and_interval_coverage():
    """On an exact Pareto tail the Hill estimate is unbiased up to k/(k-1) and its interval covers ~95 %."""
    alpha, n, k, reps = 1.3, 2000, 200, 300
    cover, est = 0, []
    for r in range(reps):
        h = stable.hill_estimator(_pareto(r, alpha, n), k)
        est.append(h.alpha)
        cover += h.ci_low <= alpha <= h.ci_high
        assert h.k == k and h.ci_low < h.alpha < h.ci_high
    est = np.array(est)
    # E[1/H] = alpha k/(k-1) exactly for Pareto; sd alpha/sqrt(k)
    assert abs(est.mean() - alpha * k / (k - 1)) < 4 * est.std() / np.sqrt(reps)
    assert abs(est.std() / (alpha / np.sqrt(k)) - 1) < 0.15
    p = cover / reps
    assert abs(p - 0.95) < 4 * np.sqrt(0.95 * 0.05 / reps), p


def test_hill_on_stable_and_hill_k():
    x = np.asarray(stable.sample_stable(jax.random.key(11), 1.2, (200_000,)), np.float64)
    assert stable.hill_k(x) == int(np.ceil(np.sqrt(x.size)))
    h = stable.hill_estimator(x)  # k = 448: bias of the stable tail is small at alpha = 1.2
    assert abs(h.alpha - 1.2) < 4 * h.se, h
    # scale invariance, and the estimate uses |x| (sign flips do not matter)
    assert np.isclose(stable.hill_estimator(7.0 * x, 300).alpha, stable.hill_estimator(-x, 300).alpha)


def test_block_estimator_on_stable_and_its_se():
    """Block estimator is unbiased (in 1/alpha) on stable samples; its s.e. matches the spread over replicates."""
    alpha, n, reps = 1.5, 10_000, 60
    xs = np.asarray(stable.sample_stable(jax.random.key(12), alpha, (reps, n)), np.float64)
    res = [stable.block_tail_index(x) for x in xs]
    xi = np.array([r.xi for r in res])
    assert res[0].k1 == 100 and res[0].k2 == 100
    assert abs(xi.mean() - 1 / alpha) < 4 * xi.std(ddof=1) / np.sqrt(reps)
    mean_se = np.mean([r.xi_se for r in res])
    assert abs(xi.std(ddof=1) / mean_se - 1) < 0.35  # sd of a sd from 60 replicates: ~9 % relative
    assert np.isclose(res[0].alpha, 1 / res[0].xi) and np.isclose(res[0].se, res[0].alpha**2 * res[0].xi_se)


def test_block_estimator_finite_variance_bias():
    """Student-t, 3 degrees of freedom (tail index 3, variance 3): block sums are ~Gaussian, so
    xi -> (E log|N(0, 3 k1)| - E log|t_3|) / log k1, which tends to 1/2 only like 1/log k1 -- the block
    estimator reports an index below 2 for finite-variance data; Hill reports ~3."""
    from scipy import integrate
    from scipy import stats as sps
    t = np.asarray(jax.random.t(jax.random.key(13), 3.0, (250_000,)), np.float64)
    b = stable.block_tail_index(t)
    e_log_t = 2 * integrate.quad(lambda s: np.log(s) * sps.t(3.0).pdf(s), 0, np.inf)[0]
    e_log_n = -(np.euler_gamma + np.log(2)) / 2  # E log|N(0, 1)|
    xi_pred = (0.5 * np.log(3.0 * b.k1) + e_log_n - e_log_t) / np.log(b.k1)
    assert abs(b.xi - xi_pred) < 4 * b.xi_se, (b, xi_pred)
    assert 1 / xi_pred < 1.9  # the point: far from both 2 and 3 at this n
    h = stable.hill_estimator(t, 500)
    assert abs(h.alpha - 3.0) < 4 * h.se + 0.3, h  # second-order bias of the t tail at k/n = 0.002 is small


def test_tail_index_does_not_pool_scales():
    """Coordinates of scales 1, 30, 1000 with tail indices 1.2 and 1.8: per-coordinate estimates recover each,
    while a pooled Hill estimate on the flattened sample sees only the largest-scale coordinate."""
    n = 40_000
    k1, k2 = jax.random.split(jax.random.key(14))
    a = np.asarray(stable.sample_stable(k1, 1.2, (n, 2)), np.float64)
    b = np.asarray(stable.sample_stable(k2, 1.8, (n, 1)), np.float64)
    X = np.concatenate([a * np.array([1.0, 30.0]), 1000.0 * b], axis=1)
    r = stable.tail_index(X, axis=0, method="hill")
    assert r.alpha.shape == (3,) and r.method == "hill"
    for j, true in enumerate([1.2, 1.2, 1.8]):
        assert abs(r.alpha[j] - true) < 4 * r.se[j] + 0.1, (j, r.alpha[j])
    pooled = stable.hill_estimator(X)
    assert abs(pooled.alpha - 1.8) < abs(pooled.alpha - 1.2)  # the pooled top order statistics are coordinate 3's
    # combined = harmonic mean of the per-coordinate indices; axis handling
    assert np.isclose(r.combined, 1 / np.mean(1 / r.alpha))
    r_t = stable.tail_index(X.T, axis=1, method="hill")
    assert np.allclose(r_t.alpha, r.alpha)
    rb = stable.tail_index(X, method="block")
    xi_true = np.mean([1 / 1.2, 1 / 1.2, 1 / 1.8])
    assert abs(1 / rb.combined - xi_true) < 4 * rb.combined_se / rb.combined**2


def test_kesten_index():
    from scipy import stats as sps
    # two-point law a in {0.5, 2.5}, eta = 1: |1 - a| in {0.5, 1.5}, (0.5^k + 1.5^k)/2 = 1 at k = 1 exactly
    a = np.array([0.5, 2.5] * 1000)
    r = stable.kesten_index(a, 1.0)
    assert np.isclose(r.kappa, 1.0, atol=1e-8) and r.lyapunov < 0
    # chi-square law (1-D linear regression with Gaussian x, B = 1): E|1 - eta x^2|^2 = 1 - 2 eta + 3 eta^2
    # equals 1 at eta = 2/3, so kappa = 2 there exactly
    law = sps.chi2(1)
    r = stable.kesten_index(law, 2.0 / 3.0)
    assert abs(r.kappa - 2.0) < 1e-6, r
    # sample version agrees with the law within its standard error
    s = law.rvs(size=100_000, random_state=np.random.default_rng(0))
    rs = stable.kesten_index(s, 2.0 / 3.0)
    assert abs(rs.kappa - 2.0) < 4 * rs.se and rs.se > 0
    # |1 - eta a| <= 1 almost surely: infinite index
    assert stable.kesten_index(np.array([0.5, 1.0, 1.5]), 0.5).kappa == np.inf


def test_estimator_validation():
    with pytest.raises(ValueError, match="k"):
        stable.hill_estimator(np.arange(1.0, 11.0), 10)
    with pytest.raises(ValueError, match="k"):
        stable.hill_estimator(np.arange(1.0, 11.0), 0)
    with pytest.raises(ValueError, match="finite"):
        stable.hill_estimator(np.array([1.0, np.nan, 2.0]), 1)
    with pytest.raises(ValueError, match="nonzero"):
        stable.hill_estimator(np.array([0.0, 0.0, 0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="at least 3"):
        stable.hill_k(np.ones(2))
    with pytest.raises(ValueError, match="k1"):
        stable.block_tail_index(np.arange(1.0, 11.0), 1)
    with pytest.raises(ValueError, match="k1"):
        stable.block_tail_index(np.arange(1.0, 11.0), 6)
    with pytest.raises(ValueError, match="nonzero"):
        stable.block_tail_index(np.array([1.0, -1.0, 2.0, 3.0]), 2)
    with pytest.raises(ValueError, match="method"):
        stable.tail_index(np.ones((10, 2)), method="pooled")
    with pytest.raises(ValueError, match="axis"):
        stable.tail_index(np.ones((10, 2)), axis=2)
    with pytest.raises(ValueError, match="eta"):
        stable.kesten_index(np.ones(3), -0.1)
    with pytest.raises(ValueError, match="stationary"):
        stable.kesten_index(np.array([5.0, 6.0]), 1.0)  # |1 - a| = 4, 5: grows
    with pytest.raises(ValueError, match="1-D|dimension"):
        stable.kesten_index(np.ones((3, 2)), 0.1)


def test_stable_scale():
    for alpha, scale in ((0.9, 2.0), (1.5, 0.3), (2.0, 1.0)):
        x = np.asarray(stable.sample_stable(jax.random.key(20), alpha, (50_000,), scale=scale), np.float64)
        assert abs(stable.stable_scale(x, alpha) / scale - 1) < 0.03, alpha
    with pytest.raises(ValueError, match="alpha"):
        stable.stable_scale(np.ones(20), 2.5)
    with pytest.raises(ValueError, match="median"):
        stable.stable_scale(np.zeros(20), 1.5)


def test_extreme_uniforms_stay_finite():
    """The smallest uniform the samplers draw (eps/2) gives finite values (minval = tiny gave W = inf)."""
    lo = jnp.float32(0.5 * np.finfo(np.float32).eps)
    for a in (0.3, 0.6, 0.9):
        assert np.isfinite(stable.positive_stable_from_uniforms(a, lo, jnp.float32(0.5)))
        assert np.isfinite(stable.positive_stable_from_uniforms(a, 1 - lo, jnp.float32(0.5)))
    for alpha in (0.6, 1.2, 1.8):
        for u1 in (lo, 1 - lo):
            for u2 in (lo, 1 - lo):
                assert np.isfinite(stable.stable_from_uniforms(alpha, u1, jnp.float32(u2)))
    # the value the old minval = tiny allowed (drawn with probability 2^-23) overflows: why the bound matters
    assert not np.isfinite(stable.positive_stable_from_uniforms(0.6, jnp.float32(np.finfo(np.float32).tiny), jnp.float32(0.5)))
    u1, u2 = stable._open_uniforms(jax.random.key(30), (100_000,), jnp.float32)
    assert float(jnp.minimum(u1.min(), u2.min())) >= lo and float(jnp.maximum(u1.max(), u2.max())) < 1.0


@pytest.mark.parametrize("alpha", [1.2, 1.5])
def test_interval_coverage_on_stable_samples(alpha):
    """On alpha-stable samples (n = 2000, default k and k1) Hill's 95 % interval and the block estimator's
    +-1.96 s.e. interval each cover the true index in ~95 % of replicates (binomial s.e. of 300 replicates)."""
    n, reps = 2000, 300
    xs = np.asarray(stable.sample_stable(jax.random.key(int(40 + 10 * alpha)), alpha, (reps, n)), np.float64)
    hill = [stable.hill_estimator(x) for x in xs]
    block = [stable.block_tail_index(x) for x in xs]
    cov_h = np.mean([h.ci_low <= alpha <= h.ci_high for h in hill])
    cov_b = np.mean([abs(b.xi - 1 / alpha) <= 1.96 * b.xi_se for b in block])
    tol = 4 * np.sqrt(0.95 * 0.05 / reps)
    assert abs(cov_h - 0.95) < tol, cov_h
    assert abs(cov_b - 0.95) < tol, cov_b


def _ou_scale(A, G, u, alpha, form, dt):
    """Scale of u^T theta under the stationary law of the Euler chain theta' = (I - A dt) theta + G dZ, with
    dZ of unit-time coordinates S-alpha-S(2^-1/2) (independent) or elliptical, times dt^(1/alpha):
    2^-1/2 (dt sum_i f(G^T ((I - A dt)^i)^T u))^(1/alpha), f = sum |.|^alpha or ||.||^alpha."""
    P, M, val = np.eye(2) - A * dt, np.eye(2), 0.0
    for _ in range(int(40 / dt)):
        w = G.T @ M.T @ u
        val += dt * (np.sum(np.abs(w) ** alpha) if form == "independent" else np.linalg.norm(w) ** alpha)
        M = P @ M
    return 2**-0.5 * val ** (1 / alpha)


@pytest.mark.parametrize("form", ["independent", "elliptical"])
def test_levy_ou_stationary_projections(form):
    """Linear Levy SDE d theta = -A theta dt + G dL (run_sde + stable_driver): projections u^T theta of the
    Euler chain are exactly S-alpha-S with the scale above; checked by the empirical characteristic
    function E cos(t u^T theta) = exp(-|s t|^alpha) at three t, and the other form's scale is rejected."""
    from sgdnotes import sde

    A = np.array([[1.0, 0.6], [-0.3, 2.0]])
    G = np.array([[1.0, 0.0], [0.0, 0.7]])
    alpha, dt, n_steps, m = 1.2, 0.2, 60, 20_000  # start's memory ~ e^(-1.2 * 12), negligible
    res = sde.run_sde(jax.random.key(60 + (form == "elliptical")), lambda th: -jnp.asarray(A, jnp.float32) @ th,
                      jnp.zeros(2), dt=dt, n_steps=n_steps, diffusion=G, noise=sde.stable_driver(alpha, form),
                      n_trajectories=m, record_steps=[n_steps], max_growth=None)
    th = np.asarray(res.thetas[-1], np.float64)
    other = "elliptical" if form == "independent" else "independent"
    z_other = []
    for u in (np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0, 1.0]) / np.sqrt(2)):
        s = _ou_scale(A, G, u, alpha, form, dt)
        s_o = _ou_scale(A, G, u, alpha, other, dt)
        for ts in (0.5, 1.0, 2.0):
            c = np.cos(ts / s * (th @ u))
            se = c.std() / np.sqrt(m)
            assert abs(c.mean() - np.exp(-(ts**alpha))) < 4 * se, (u, ts, c.mean())
            z_other.append(abs(c.mean() - np.exp(-((ts * s_o / s) ** alpha))) / se)
    assert max(z_other) > 6  # the test tells the two vector forms apart (u = (1, 1)/sqrt 2)
