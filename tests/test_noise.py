"""Tests of sgdnotes.noise: exact covariance identities (by enumeration), estimator bias, samplers,
the linear-regression population covariance, and validation errors."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgdnotes import models, noise, sgd


def all_batches(n, B, replacement):
    if replacement:
        return list(itertools.product(range(n), repeat=B))
    return list(itertools.combinations(range(n), B))


def exact_batch_cov(G, B, replacement):
    """Covariance of the batch mean over every equally likely batch (float64 brute force)."""
    means = np.array([G[list(b)].mean(axis=0) for b in all_batches(G.shape[0], B, replacement)])
    c = means - means.mean(axis=0)
    return c.T @ c / len(means), means.mean(axis=0)


@st.composite
def grads_and_batch(draw, max_n=6, max_d=3):
    n = draw(st.integers(2, max_n))
    d = draw(st.integers(1, max_d))
    B = draw(st.integers(1, n))
    seed = draw(st.integers(0, 2**31 - 1))
    G = np.random.default_rng(seed).normal(size=(n, d)) * draw(st.floats(0.1, 10.0))
    return G, B


@settings(max_examples=20, deadline=None)
@given(grads_and_batch(), st.booleans())
def test_minibatch_cov_matches_enumeration(GB, replacement):
    G, B = GB
    cov, mean = exact_batch_cov(G, B, replacement)
    np.testing.assert_allclose(mean, G.mean(axis=0), rtol=1e-10, atol=1e-10)
    got = np.asarray(noise.minibatch_noise_cov(G, B, replacement=replacement))
    np.testing.assert_allclose(got, cov, rtol=1e-9, atol=1e-9 * np.abs(cov).max() + 1e-12)


@settings(max_examples=15, deadline=None)
@given(grads_and_batch(max_n=30, max_d=5))
def test_empirical_cov_is_biased_sample_cov(GB):
    G, _ = GB
    want = np.cov(G.T, bias=True).reshape(G.shape[1], G.shape[1])
    np.testing.assert_allclose(np.asarray(noise.empirical_noise_cov(G)), want, rtol=1e-9, atol=1e-12)


@settings(max_examples=12, deadline=None)
@given(grads_and_batch(max_n=5, max_d=2), st.booleans())
def test_estimator_bias_by_enumeration(GB, replacement):
    """E[estimator] over every ordered pair of independent batches (m = 2): Sigma_emp with replacement,
    (n-B)/(n-1) Sigma_emp without. For m = 2 the estimator is B/2 (g_a - g_b)(g_a - g_b)^T."""
    G, B = GB
    n = G.shape[0]
    if replacement:
        B = min(B, 3)  # at most 5^3 batches, 15625 pairs
    M = np.array([G[list(b)].mean(axis=0) for b in all_batches(n, B, replacement)])
    D = (M[:, None, :] - M[None, :, :]).reshape(-1, G.shape[1])
    E_hat = B / 2 * D.T @ D / len(D)
    S = np.asarray(noise.empirical_noise_cov(G))
    factor = 1.0 if replacement else (n - B) / (n - 1)
    np.testing.assert_allclose(E_hat, factor * S, rtol=1e-9, atol=1e-12)
    # the package estimator is that formula (checked on a few pairs)
    for i, j in [(0, len(M) - 1), (len(M) // 2, 0)]:
        d = M[i] - M[j]
        np.testing.assert_allclose(np.asarray(noise.estimate_noise_cov(np.stack([M[i], M[j]]), B)),
                                   B / 2 * np.outer(d, d), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n,B", [(4, 2), (6, 3), (6, 2)])
def test_estimator_over_one_epoch_is_n_over_n_minus_1(n, B):
    G = np.random.default_rng(n * 10 + B).normal(size=(n, 2))
    perms = list(itertools.permutations(range(n)))
    E_hat = sum(
        np.asarray(noise.estimate_noise_cov(np.stack([G[list(p[j * B:(j + 1) * B])].mean(axis=0) for j in range(n // B)]), B))
        for p in perms
    ) / len(perms)
    np.testing.assert_allclose(E_hat, n / (n - 1) * np.asarray(noise.empirical_noise_cov(G)), rtol=1e-9)


def test_batch_gradients_are_the_sgd_batches():
    key = jax.random.key(3)
    G = jax.random.normal(jax.random.key(4), (12, 3))
    for sampling in ("with_replacement", "without_replacement", "epoch"):
        gb = noise.batch_gradients(key, G, 4, 7, sampling)
        assert gb.shape == (7, 3)
        want = jnp.stack([G[sgd.batch_indices(key, j, 12, 4, sampling)].mean(axis=0) for j in range(7)])
        np.testing.assert_allclose(np.asarray(gb), np.asarray(want), rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(gb), np.asarray(noise.batch_gradients(key, G, 4, 7, sampling)))
    # one epoch (m = n/B batches) averages to the full gradient
    ep = noise.batch_gradients(key, G, 4, 3, "epoch")
    np.testing.assert_allclose(np.asarray(ep.mean(axis=0)), np.asarray(G.mean(axis=0)), rtol=1e-5, atol=1e-6)


def test_batch_gradients_by_size_matches_single_size():
    key = jax.random.key(5)
    G = jax.random.normal(jax.random.key(6), (40, 2))
    for sampling in ("with_replacement", "without_replacement", "epoch"):
        got = noise.batch_gradients_by_size(key, G, [3, 40], 5, sampling)
        assert got.shape == (2, 5, 2)
        for s, B in enumerate([3, 40]):  # row s: the SGD batches of key fold_in(key, s), size B
            want = noise.batch_gradients(jax.random.fold_in(key, s), G, B, 5, sampling)
            np.testing.assert_allclose(np.asarray(got[s]), np.asarray(want), rtol=1e-6)
        if sampling != "with_replacement":  # B = n without replacement: the full gradient every time
            np.testing.assert_allclose(np.asarray(got[1]), np.broadcast_to(np.asarray(G.mean(axis=0)), (5, 2)),
                                       rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampling,replacement", [("with_replacement", True), ("without_replacement", False)])
def test_sampled_batch_cov_matches_formula(sampling, replacement):
    """Statistical: trace of the sample covariance of 20000 batch gradients within 4 s.e. of the formula."""
    G = jax.random.normal(jax.random.key(7), (40, 3)) * jnp.array([1.0, 0.5, 2.0])
    B, m = 10, 20_000
    gb = np.asarray(noise.batch_gradients_by_size(jax.random.key(8), G, [B], m, sampling)[0], np.float64)
    q = np.sum((gb - gb.mean(axis=0)) ** 2, axis=1)
    tr, se = q.sum() / (m - 1), q.std(ddof=1) / np.sqrt(m)
    want = float(jnp.trace(noise.minibatch_noise_cov(G, B, replacement=replacement)))
    assert abs(tr - want) < 4 * se


def test_linreg_population_cov_gaussian_monte_carlo():
    key = jax.random.key(9)
    theta_star = jnp.array([0.5, -1.0, 0.2])
    data = models.make_linreg_data(key, 200_000, 3, noise_std=0.4, input_scales=jnp.array([1.0, 0.6, 0.3]),
                                   theta_star=theta_star)
    theta = theta_star + jnp.array([0.7, 0.4, -1.5])
    G = np.asarray(noise.per_sample_grads(models.linreg_loss, theta, data.X, data.Y), np.float64)
    C = G - G.mean(axis=0)
    outer = np.einsum("ia,ib->iab", C, C)
    est, se = outer.mean(axis=0), outer.std(axis=0, ddof=1) / np.sqrt(len(G))
    want = np.asarray(noise.linreg_population_noise_cov(theta, theta_star, data.input_cov, data.noise_std))
    assert np.all(np.abs(est - want) < 4 * se + 1e-6)
    # at the optimum the formula is sigma^2 S
    np.testing.assert_allclose(np.asarray(noise.linreg_population_noise_cov(theta_star, theta_star, data.input_cov, 0.4)),
                               0.16 * np.asarray(data.input_cov), rtol=1e-6)


def test_linreg_population_cov_fourth_moments_student_t():
    """Independent Student-t(10) inputs: Var = 10/8, E x^4 = 3*100/(8*6); Monte Carlo within 4 s.e."""
    df = 10.0
    key = jax.random.key(10)
    theta_star = jnp.array([0.3, -0.2])
    data = models.make_linreg_data(key, 200_000, 2, noise_std=0.5, inputs="student_t", df=df, theta_star=theta_star)
    theta = theta_star + jnp.array([1.0, -0.5])
    m4 = np.full(2, 3 * df**2 / ((df - 2) * (df - 4)))
    want = np.asarray(noise.linreg_population_noise_cov(theta, theta_star, data.input_cov, 0.5, fourth_moments=m4))
    G = np.asarray(noise.per_sample_grads(models.linreg_loss, theta, data.X, data.Y), np.float64)
    C = G - G.mean(axis=0)
    outer = np.einsum("ia,ib->iab", C, C)
    est, se = outer.mean(axis=0), outer.std(axis=0, ddof=1) / np.sqrt(len(G))
    assert np.all(np.abs(est - want) < 4 * se)
    gauss = np.asarray(noise.linreg_population_noise_cov(theta, theta_star, data.input_cov, 0.5))
    assert want[0, 0] > gauss[0, 0]  # excess kurtosis adds to the diagonal


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: noise.per_sample_grads(models.linreg_loss, jnp.zeros(2), jnp.zeros(5), jnp.zeros((5, 1))), "X must have 2"),
        (lambda: noise.per_sample_grads(models.linreg_loss, jnp.zeros(2), jnp.zeros((5, 2)), jnp.zeros((4, 1))), "same number of rows"),
        (lambda: noise.empirical_noise_cov(np.zeros(4)), "must have 2 dimension"),
        (lambda: noise.empirical_noise_cov(np.array([[0.0, np.nan]])), "finite"),
        (lambda: noise.minibatch_noise_cov(np.zeros((4, 2)), 5, replacement=False), "batch_size must be <= 4"),
        (lambda: noise.minibatch_noise_cov(np.zeros((4, 2)), 0), "batch_size must be >= 1"),
        (lambda: noise.minibatch_noise_cov(np.zeros((1, 2)), 1, replacement=False), "n >= 2"),
        (lambda: noise.estimate_noise_cov(np.zeros((1, 2)), 3), "m >= 2"),
        (lambda: noise.estimate_noise_cov(np.zeros((3, 2)), 2.5), "batch_size must be an integer"),
        (lambda: noise.batch_gradients(jax.random.key(0), np.zeros((4, 2)), 2, 3, "bogus"), "sampling must be one of"),
        (lambda: noise.batch_gradients(jax.random.key(0), np.zeros((4, 2)), 5, 3, "epoch"), "batch_size must be <= 4"),
        (lambda: noise.batch_gradients(jax.random.key(0), np.zeros((4, 2)), 2, 0), "n_batches must be >= 1"),
        (lambda: noise.batch_gradients_by_size(jax.random.key(0), np.zeros((4, 2)), [2, 5], 3, "epoch"), "batch size must be <= 4"),
        (lambda: noise.batch_gradients_by_size(jax.random.key(0), np.zeros((4, 2)), [], 3), "must not be empty"),
        (lambda: noise.linreg_population_noise_cov(np.zeros(2), np.zeros(3), np.eye(2), 0.1), "must agree"),
        (lambda: noise.linreg_population_noise_cov(np.zeros(2), np.zeros(2), -np.eye(2), 0.1), "positive semi-definite"),
        (lambda: noise.linreg_population_noise_cov(np.zeros(2), np.zeros(2), np.eye(2), -1.0), "noise_std must be"),
        (lambda: noise.linreg_population_noise_cov(np.zeros(2), np.zeros(2), np.array([[1.0, 0.5], [0.5, 1.0]]), 0.1,
                                                   fourth_moments=np.ones(2)), "diagonal input_cov"),
        (lambda: noise.linreg_population_noise_cov(np.zeros(2), np.zeros(2), np.eye(2), 0.1, fourth_moments=np.ones(3)),
         r"fourth_moments must have shape \(2,\)"),
    ],
)
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
