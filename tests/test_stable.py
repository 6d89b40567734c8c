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
