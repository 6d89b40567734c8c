"""Tests of sgdnotes.centralflow: sharpness vs jax.hessian, the LCP, and the central flow on the
scalar factorisation L(a, b) = (ab - y)^2 / 2, whose minima ab = y have sharpness a^2 + b^2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdnotes import centralflow as cf

Y0 = 3.0


def scalar_loss(th):
    return 0.5 * (th[0] * th[1] - Y0) ** 2


def tanh_loss(th):
    X = jnp.linspace(-1.0, 1.0, 12).reshape(6, 2)
    W = th[:6].reshape(3, 2)
    return jnp.mean((jnp.tanh(X @ W.T) @ th[6:9] - jnp.sin(3 * X[:, 0])) ** 2)


@pytest.mark.parametrize("loss,d", [(scalar_loss, 2), (tanh_loss, 9)])
def test_sharpness_matches_dense_hessian(loss, d):
    th = jnp.asarray(np.random.default_rng(1).normal(size=d), jnp.float32)
    dense = np.linalg.eigvalsh(np.asarray(jax.hessian(loss)(th), np.float64))
    assert abs(cf.sharpness(loss, th) - dense[-1]) <= 1e-4 * max(1.0, abs(dense[-1]))
    vals, vecs = cf.top_eigenpairs(loss, th, 2)
    np.testing.assert_allclose(vals, dense[::-1][:2], rtol=1e-4, atol=1e-5)
    # sharpness gradient vs finite differences of the dense top eigenvalue
    g = cf.sharpness_grad(loss, th)
    e = np.zeros(d)
    e[0] = 1e-2
    fd = (np.linalg.eigvalsh(np.asarray(jax.hessian(loss)(th + e)))[-1]
          - np.linalg.eigvalsh(np.asarray(jax.hessian(loss)(th - e)))[-1]) / 2e-2
    assert abs(g[0] - fd) <= 2e-2 * max(1.0, abs(fd))


def test_lcp_exact():
    rng = np.random.default_rng(0)
    for _ in range(20):
        A = rng.normal(size=(5, 3))
        M, q = A.T @ A, rng.normal(size=3)
        x = cf.solve_lcp(M, q)
        w = q + M @ x
        assert (x >= 0).all() and (w >= -1e-4).all() and abs(x @ w) < 1e-4 * (1 + np.abs(q).max())  # float32


def test_scalar_factorisation_central_flow_ends_at_threshold():
    th0 = jnp.array([2.0, 0.02])
    thr = 6.5
    eta = 2 / thr
    K = 400
    flow = cf.central_flow(scalar_loss, th0, eta, K * eta, n_eval=K + 1)
    gf = cf.central_flow(scalar_loss, th0, 1e-6, K * eta, n_eval=K + 1, dt=eta / 8)
    ths, _ = cf.gradient_descent(scalar_loss, th0, eta, K)
    s_cf, s_gf, s_gd = ((p[-1] ** 2).sum() for p in (flow.theta, gf.theta, ths))
    # gradient flow conserves a^2 - b^2, so it ends at sqrt((a0^2 - b0^2)^2 + 4 y^2) > 2/eta
    assert abs(s_gf - np.sqrt((4.0 - 0.0004) ** 2 + 4 * Y0**2)) < 1e-3
    assert abs(s_cf - thr) < 1e-3 * thr  # on the threshold
    assert abs(flow.theta[-1].prod() - Y0) < 1e-3  # at a minimum
    assert s_gd < thr  # a minimum with S > 2/eta is unstable for GD
    assert abs(s_gd - s_cf) < abs(s_gd - s_gf)  # the central flow is closer to GD's end than GF


def test_bad_input():
    with pytest.raises(ValueError, match="eta"):
        cf.central_flow(scalar_loss, jnp.ones(2), -1.0, 1.0)
    with pytest.raises(ValueError, match="theta"):
        cf.sharpness(scalar_loss, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        cf.sharpness(scalar_loss, jnp.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match="scalar"):
        cf.sharpness(lambda th: th, jnp.ones(2))
    with pytest.raises(ValueError, match="M must be"):
        cf.solve_lcp(np.eye(2), np.ones(3))
    with pytest.raises(ValueError, match="n_steps"):
        cf.gradient_descent(scalar_loss, jnp.ones(2), 0.1, 0)


def two_block_loss(th):
    """Two independent scalar factorisations (ab - 3)^2/2 + (cd - 2.5)^2/2: two Hessian eigenvalues."""
    return 0.5 * (th[0] * th[1] - 3.0) ** 2 + 0.5 * (th[2] * th[3] - 2.5) ** 2


def test_two_active_eigenvalues_and_kappa():
    """Both blocks reach 2/eta at different times and are held there together (two active eigenvalues);
    each block's a^2 + b^2 ends on the threshold. The kappa term pulls an eigenvalue started above
    2/eta back to it (a start at a minimum with a^2 + b^2 > 2/eta)."""
    thr = 7.0
    eta = 2 / thr
    th0 = jnp.array([2.2, 0.02, 0.01, 2.4])  # GF would end at sharpness ~ 7.6 and ~ 7.0+ per block
    flow = cf.central_flow(two_block_loss, th0, eta, 60.0, n_eval=301)
    s1 = (flow.theta[-1, :2] ** 2).sum()
    s2 = (flow.theta[-1, 2:] ** 2).sum()
    assert flow.lcp_ok.all()
    assert flow.n_active.max() == 2
    assert abs(s1 - thr) < 2e-3 * thr and abs(s2 - thr) < 2e-3 * thr
    assert abs(flow.theta[-1, 0] * flow.theta[-1, 1] - 3.0) < 1e-3
    # kappa: start on a minimum of block 1 above the threshold (a^2 + b^2 = 9 + 1 = 10 > 7): pulled back
    a, b = 3.0, 1.0
    th_hi = jnp.array([a, b, np.sqrt(2.5), np.sqrt(2.5)])
    back = cf.central_flow(two_block_loss, th_hi, eta, 30.0, n_eval=151, active_tol=0.5)
    assert back.sharpness[0] > thr * 1.3 and abs(back.sharpness[-1] - thr) < 5e-3 * thr
