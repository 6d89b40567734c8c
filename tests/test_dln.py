"""sgdnotes.dln and noise.dln_noise_cov: closed forms against autodiff and brute-force covariances."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgdnotes import dln, models, noise, sde

sizes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))


def _problem(seed, dims, n=12):
    d0, d1, d2 = dims
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    X = jax.random.normal(k1, (n, d0))
    Y = jax.random.normal(k2, (n, d2))
    th = jax.random.normal(k3, (d1 * d0 + d2 * d1,))
    return X, Y, th


def _full_loss(dims):
    loss = partial(models.dln2_loss, dims=dims)
    return lambda th, X, Y: jnp.mean(jax.vmap(loss, (None, 0, 0))(th, X, Y))


@partial(jax.jit, static_argnames="dims")
def _autodiff(th, X, Y, dims):
    """Reference values by autodiff (jitted: one compile per shape instead of op-by-op dispatch)."""
    L = _full_loss(dims)
    G = jax.vmap(jax.grad(partial(models.dln2_loss, dims=dims)), (None, 0, 0))(th, X, Y)
    C = G - G.mean(axis=0)  # per-sample definition (36): (1/n) sum (g_mu - g_N)(g_mu - g_N)^T
    return L(th, X, Y), jax.grad(L)(th, X, Y), jax.hessian(L)(th, X, Y), C.T @ C / X.shape[0]


@partial(jax.jit, static_argnames="dims")
def _closed(th, X, Y, dims):
    W1, W2 = models.dln_unpack(th, dims)
    g1, g2 = dln.dln_grads(W1, W2, X, Y)
    return (dln.dln_loss(W1, W2, X, Y), models.dln_pack(g1, g2), dln.dln_hessian(W1, W2, X, Y),
            noise.dln_noise_cov(W1, W2, X, Y))


@settings(max_examples=8, deadline=None)
@given(dims=sizes, n=st.sampled_from([5, 12]), seed=st.integers(0, 10_000))
def test_closed_forms_match_autodiff_and_per_sample_covariance(dims, n, seed):
    X, Y, th = _problem(seed, dims, n)
    L_c, g_c, H_c, S_c = _closed(th, X, Y, dims)
    L_a, g_a, H_a, S_a = _autodiff(th, X, Y, dims)
    np.testing.assert_allclose(L_c, L_a, rtol=1e-5)
    np.testing.assert_allclose(g_c, g_a, rtol=1e-4, atol=1e-4 * float(jnp.abs(g_a).max()) + 1e-6)
    np.testing.assert_allclose(H_c, H_a, rtol=1e-4, atol=1e-4 * float(jnp.abs(H_a).max()))
    np.testing.assert_allclose(H_c, H_c.T, atol=1e-5 * float(jnp.abs(H_a).max()))
    np.testing.assert_allclose(S_c, S_a, rtol=1e-4, atol=1e-4 * float(jnp.abs(S_a).max()) + 1e-6)


def test_matrix_gradients_match_jax_grad_of_weights():
    dims = (3, 2, 4)
    X, Y, th = _problem(11, dims, 9)
    W1, W2 = models.dln_unpack(th, dims)
    g1, g2 = dln.dln_grads(W1, W2, X, Y)
    gj1, gj2 = jax.grad(lambda a, b: dln.dln_loss(a, b, X, Y), argnums=(0, 1))(W1, W2)
    np.testing.assert_allclose(g1, gj1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g2, gj2, rtol=1e-4, atol=1e-5)


@settings(max_examples=6, deadline=None)
@given(m=st.integers(1, 5), n=st.integers(1, 5), seed=st.integers(0, 1000))
def test_commutation_matrix(m, n, seed):
    A = jax.random.normal(jax.random.key(seed), (m, n))
    vec = lambda M: M.T.reshape(-1)
    np.testing.assert_allclose(dln.commutation_matrix(m, n) @ vec(A), vec(A.T))


@settings(max_examples=4, deadline=None)
@given(dims=sizes, seed=st.integers(0, 10_000))
def test_product_jacobian(dims, seed):
    _, _, th = _problem(seed, dims)
    W1, W2 = models.dln_unpack(th, dims)
    J = jax.jit(jax.jacobian(lambda t: (lambda a, b: (b @ a).T.reshape(-1))(*models.dln_unpack(t, dims))))(th)
    np.testing.assert_allclose(dln.product_jacobian(W1, W2), J, rtol=1e-5, atol=1e-5)


@settings(max_examples=6, deadline=None)
@given(dims=sizes, seed=st.integers(0, 10_000), data=st.data())
def test_critical_points_and_closed_form_spectrum(dims, seed, data):
    d0, d1, d2 = dims
    k1, k2 = jax.random.split(jax.random.key(seed))
    X = dln.whiten(jax.random.normal(k1, (12, d0)))
    Y = jax.random.normal(k2, (12, d2))
    q = min(d0, d2)
    K = data.draw(st.lists(st.integers(0, q - 1), unique=True, max_size=min(d1, q)))
    W1, W2 = dln.critical_point(X, Y, d1, K)
    s = np.asarray(dln.modes(X, Y).s, np.float64)
    g1, g2 = dln.dln_grads(W1, W2, X, Y)
    assert float(jnp.abs(g1).max() + jnp.abs(g2).max()) < 1e-4 * (1 + s.max())
    ev = np.linalg.eigvalsh(np.asarray(dln.dln_hessian(W1, W2, X, Y), np.float64))
    cf = dln.critical_hessian_eigenvalues(s, dims, K)
    np.testing.assert_allclose(ev, cf, atol=1e-4 * (1 + s.max()))


def test_critical_point_general_inputs_and_gl_symmetry():
    dims = (4, 3, 3)
    X, Y, _ = models.make_dln_teacher_data(jax.random.key(1), 60, dims)
    X = X * jnp.array([1.0, 2.0, 0.5, 1.5])  # non-whitened inputs
    W1, W2 = dln.critical_point(X, Y, 3, [1])
    g = dln.dln_flat_grad(models.dln_pack(W1, W2), X, Y, dims)
    assert float(jnp.abs(g).max()) < 1e-4
    G = jnp.eye(3) + 0.3 * jax.random.normal(jax.random.key(2), (3, 3))
    W1g, W2g = G @ W1, W2 @ jnp.linalg.inv(G)
    assert float(jnp.abs(dln.dln_flat_grad(models.dln_pack(W1g, W2g), X, Y, dims)).max()) < 1e-4
    assert float(dln.dln_loss(W1g, W2g, X, Y)) == pytest.approx(float(dln.dln_loss(W1, W2, X, Y)), rel=1e-5)


def test_saxe_curve_solves_the_mode_ode():
    s = np.array([3.0, 1.0, 0.4])
    t = np.linspace(0, 6, 6001)
    c = dln.saxe_curve(s, 1e-3, t)
    da = np.gradient(c.strengths, t, axis=0)
    np.testing.assert_allclose(da[1:-1], (4 * c.strengths * (s - c.strengths))[1:-1], atol=2e-3)
    for i in range(3):
        assert np.interp(c.half_times[i], t, c.strengths[:, i]) == pytest.approx(s[i] / 2, rel=1e-3)
    assert np.all(np.diff(c.half_times) > 0)  # larger modes are learned first


def test_gradient_descent_follows_saxe_from_aligned_small_init():
    dims = (3, 3, 3)
    X, Y, _ = models.make_dln_teacher_data(jax.random.key(4), 80, dims)
    X = dln.whiten(X)
    md = dln.modes(X, Y)
    a0, eta, K = 1e-3, 2e-3, 2000
    th0 = models.dln_pack(*dln.mode_point(X, Y, 3, jnp.full(3, a0)))
    drift = partial(dln.dln_drift, dims=dims)
    res = sde.run_sde(jax.random.key(0), drift, th0, dt=eta, n_steps=K, diffusion=0.0,
                      record_steps=np.arange(0, K + 1, 50), args=(X, Y))
    t = res.steps * eta
    a = np.asarray(jax.vmap(lambda th: dln.mode_strengths(*models.dln_unpack(th, dims), md))(res.thetas[:, 0]))
    ref = dln.saxe_curve(np.asarray(md.s, np.float64), a0, t).strengths
    # GD = Euler for the flow: the delay of each mode is below eta s_i t_half,i (chapter 4), i.e. a
    # strength error below s_i * (slope max s_i) * delay ~ s_1^2 eta s_1 t
    assert np.abs(a - ref).max() < 0.05 * float(md.s[0])


def test_inits_and_effective_rank():
    dims = (5, 4, 3)
    th = dln.small_init(jax.random.key(0), dims, 1e-2, n_trajectories=4)
    assert th.shape == (4, 5 * 4 + 3 * 4)
    W1, W2 = models.dln_unpack(th[0], dims)
    np.testing.assert_allclose(W1 @ W1.T, W2.T @ W2, atol=1e-7)  # balanced
    th_l = dln.lazy_init(jax.random.key(1), dims, 1.0)
    assert th_l.shape == (32,)
    P = jnp.diag(jnp.array([2.0, 2.0, 0.0]))
    assert float(dln.effective_rank(P)) == pytest.approx(2.0, rel=1e-5)
    assert float(dln.effective_rank(jnp.zeros((3, 3)))) == 0.0
    assert int(dln.numerical_rank(jnp.diag(jnp.array([2.0, 0.5, 0.1])), 0.3)) == 2


def test_sde_diffusion_is_the_kronecker_covariance():
    dims = (3, 2, 2)
    X, Y, th = _problem(5, dims, 20)
    W1, W2 = models.dln_unpack(th, dims)
    S = dln.dln_sde_cov(th, X, Y, 0.5, dims=dims)
    np.testing.assert_allclose(S, 0.5 * noise.dln_noise_cov(W1, W2, X, Y), rtol=1e-6)


def test_noise_vanishes_at_origin_and_has_bounded_rank():
    dims = (3, 4, 2)
    X, Y, th = _problem(6, dims, 30)
    S0 = noise.dln_noise_cov(jnp.zeros((4, 3)), jnp.zeros((2, 4)), X, Y)
    assert float(jnp.abs(S0).max()) == 0.0
    W1, W2 = models.dln_unpack(th, dims)
    S = noise.dln_noise_cov(W1, W2, X, Y)
    assert int(jnp.linalg.matrix_rank(S)) <= 3 * 2  # <= d0 d2 < d = 20


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="d1"):
        dln.dln_loss(jnp.ones((2, 3)), jnp.ones((2, 4)), jnp.ones((5, 3)), jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="rows"):
        noise.dln_noise_cov(jnp.ones((2, 3)), jnp.ones((2, 2)), jnp.ones((5, 3)), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="a0"):
        dln.saxe_curve(np.array([1.0]), 0.9, np.array([0.0]))
    with pytest.raises(ValueError, match="modes_used"):
        dln.critical_point(jnp.eye(3), jnp.eye(3), 2, [0, 1, 2])
    with pytest.raises(ValueError, match="finite"):
        dln.dln_grads(jnp.full((2, 2), jnp.nan), jnp.ones((2, 2)), jnp.ones((3, 2)), jnp.ones((3, 2)))


@pytest.mark.parametrize("dims", [(4, 1, 4), (4, 2, 4), (6, 2, 6), (3, 4, 2), (5, 3, 4)])
def test_noise_rank_is_the_product_jacobian_rank(dims):
    """rank Sigma = rank J = r2 d0 + r1 d2 - r1 r2 (C > 0): the GL(d1) tangents (A W1, -W2 A) are noise-free."""
    d0, d1, d2 = dims
    X, Y, th = _problem(11, dims, 80)
    W1, W2 = models.dln_unpack(th, dims)
    for W1_, W2_ in ((W1, W2), (W1.at[0].set(0.0), W2)):  # generic point, and W1 with a zero row
        r1, r2 = int(np.linalg.matrix_rank(np.asarray(W1_))), int(np.linalg.matrix_rank(np.asarray(W2_)))
        S = noise.dln_noise_cov(W1_, W2_, X, Y)
        J = dln.product_jacobian(W1_, W2_)
        rank = r2 * d0 + r1 * d2 - r1 * r2
        assert int(np.linalg.matrix_rank(np.asarray(J))) == rank
        assert int(jnp.linalg.matrix_rank(S)) == rank <= min(d0 * d2, d1 * (d0 + d2))
        A = jax.random.normal(jax.random.key(d0 + d1 + d2), (d1, d1))
        tangent = models.dln_pack(A @ W1_, -W2_ @ A)
        assert float(tangent @ S @ tangent) <= 1e-5 * float(jnp.abs(S).max()) * float(tangent @ tangent)
