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


# --- degenerate active eigenvalues: the semidefinite complementarity problem (k <= 2) ---------------------

def two_block_y(th, y1=3.0, y2=2.5):
    return 0.5 * (th[0] * th[1] - y1) ** 2 + 0.5 * (th[2] * th[3] - y2) ** 2


def _block_top(a, b, y):
    """Top eigenvalue and unit eigenvector of the Hessian [[b^2, 2ab - y], [2ab - y, a^2]] of (ab - y)^2/2."""
    lam, vec = np.linalg.eigh(np.array([[b * b, 2 * a * b - y], [2 * a * b - y, a * a]]))
    return lam[-1], vec[:, -1]


def _degenerate_point():
    """theta where the two blocks' top eigenvalues are exactly equal (bisection on the scale of block 2)."""
    a, b = 2.0, 1.0
    lam1, _ = _block_top(a, b, 3.0)
    lo, hi = 0.5, 3.0
    for _ in range(200):
        r = 0.5 * (lo + hi)
        lo, hi = (r, hi) if _block_top(1.5 * r, 1.2 * r, 2.5)[0] < lam1 else (lo, r)
    c, d = 1.5 * r, 1.2 * r
    th = np.array([a, b, c, d])
    lam = np.linalg.eigvalsh(np.asarray(jax.hessian(two_block_y)(jnp.asarray(th, jnp.float64))))
    U = np.zeros((4, 2))
    U[:2, 0] = _block_top(a, b, 3.0)[1]
    U[2:, 1] = _block_top(c, d, 2.5)[1]
    return th, lam, U


def _rot(alpha):
    return np.array([[np.cos(alpha), -np.sin(alpha)], [np.sin(alpha), np.cos(alpha)]])


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def test_sdcp_complementarity_residuals(x64):
    """Random problems: Sigma >= 0, W >= 0, <Sigma, W> = 0 and W Sigma = 0 to ~ machine precision; all three
    ranks of Sigma occur."""
    rng = np.random.default_rng(3)
    ranks = set()
    for _ in range(60):
        G = rng.normal(size=(2, 2, 5))
        G = 0.5 * (G + G.transpose(1, 0, 2))
        Q = rng.normal(size=(2, 2))
        Q = Q + Q.T
        S, W = cf.solve_sdcp(G, Q)
        scale = 1 + np.abs(Q).max() + np.abs(G).max() ** 2
        assert np.linalg.eigvalsh(S)[0] >= -1e-12 * scale and np.linalg.eigvalsh(W)[0] >= -1e-12 * scale
        assert abs(np.trace(S @ W)) <= 1e-10 * scale and np.abs(W @ S).max() <= 1e-9 * scale
        # W is the gradient of the convex objective 1/4 |sum S_ab G_ab|^2 + <Q, S>: check it
        gS = np.einsum("ab,abd->d", S, G)
        np.testing.assert_allclose(W, Q + 0.5 * np.einsum("abd,d->ab", G, gS), atol=1e-12 * scale)
        ranks.add(int((np.linalg.eigvalsh(S) > 1e-9 * scale).sum()))
    assert ranks == {0, 1, 2}


def test_sdcp_agrees_with_diagonal_lcp_for_decoupled_blocks(x64):
    """Two independent blocks reaching 2/eta at different times: the semidefinite flow is the diagonal one.
    This holds because the blocks decouple (G_01 = 0), not because the eigenvalues are distinct; see
    test_sdcp_vs_diagonal_decoupled_and_coupled for a coupled problem where they differ."""
    thr = 7.0
    eta = 2 / thr
    th0 = jnp.array([2.2, 0.02, 0.01, 2.4])
    diag = cf.central_flow(two_block_loss, th0, eta, 60.0, n_eval=301)
    sdp = cf.central_flow(two_block_loss, th0, eta, 60.0, n_eval=301, semidefinite=True)
    assert sdp.lcp_ok.all() and sdp.n_active.max() == 2
    assert np.abs(sdp.theta - diag.theta).max() < 1e-6
    # at a point with distinct active eigenvalues of the decoupled blocks the two velocities agree
    th = jnp.array([2.0, 1.0, 1.5, 1.2])
    lam, U = np.linalg.eigh(np.asarray(jax.hessian(two_block_loss)(th)))
    U = U[:, ::-1][:, :2]
    assert lam[-1] - lam[-2] > 0.5
    v_sd, _, _ = cf.central_velocity(two_block_loss, th, 2 / (lam[-1] * 0.99), U)
    v_dg, _, _ = cf.central_velocity(two_block_loss, th, 2 / (lam[-1] * 0.99), U, semidefinite=False)
    np.testing.assert_allclose(v_sd, v_dg, atol=1e-10)


def test_sdcp_basis_independent_at_exact_degeneracy(x64):
    """At an exact 2-fold degeneracy the semidefinite velocity does not depend on the rotation of the
    eigenbasis; the eigenbasis-diagonal LCP does."""
    th, lam, U = _degenerate_point()
    assert abs(lam[-1] - lam[-2]) < 1e-10 * lam[-1] and lam[-2] - lam[-3] > 0.5
    eta = 2 / lam[-1]
    v_sd, v_dg = [], []
    for alpha in np.linspace(0.0, np.pi / 2, 7):
        UR = U @ _rot(alpha)
        v_sd.append(cf.central_velocity(two_block_y, th, eta, UR)[0])
        v_dg.append(cf.central_velocity(two_block_y, th, eta, UR, semidefinite=False)[0])
    v_sd, v_dg = np.array(v_sd), np.array(v_dg)
    assert np.abs(v_sd - v_sd[0]).max() < 1e-9 * np.abs(v_sd[0]).max()
    assert np.abs(v_dg - v_dg[0]).max() > 1e-2 * np.abs(v_dg[0]).max()
    # in the block basis (where the blocks decouple) the diagonal LCP is exact
    np.testing.assert_allclose(v_dg[0], v_sd[0], atol=1e-9)


def test_sdcp_bad_input(x64):
    G = np.zeros((2, 2, 3))
    with pytest.raises(ValueError, match="k = 1 or 2"):
        cf.solve_sdcp(np.zeros((3, 3, 3)), np.eye(3))
    with pytest.raises(ValueError, match="symmetric"):
        cf.solve_sdcp(G, np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="match Q"):
        cf.solve_sdcp(np.zeros((1, 1, 3)), np.eye(2))
    with pytest.raises(ValueError, match="finite"):
        cf.solve_sdcp(G, np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="orthonormal"):
        cf.central_velocity(two_block_y, jnp.ones(4), 0.3, np.ones((4, 2)))
    with pytest.raises(ValueError, match="max_active"):
        cf.central_flow(two_block_y, jnp.ones(4), 0.3, 1.0, semidefinite=True, max_active=3)


def _diag_solution(G, Q):
    """The eigenbasis-diagonal LCP as a covariance: Sigma = diag(x), x from the diagonal constraints only."""
    A = np.stack([G[0, 0], G[1, 1]], 1)
    S = np.diag(cf.solve_lcp(0.5 * A.T @ A, np.diag(Q)))
    return S, Q + 0.5 * np.einsum("abd,d->ab", G, np.einsum("ab,abd->d", S, G))


def test_sdcp_vs_diagonal_decoupled_and_coupled(x64):
    """Both active eigenvalues rising (Q_00, Q_11 < 0). Decoupled (G_01 = 0, Q_01 = 0): the diagonal LCP is the
    semidefinite solution. Coupled (G_01 != 0): when both variances are positive the diagonal solution has
    W_00 = W_11 = 0 but W_01 != 0, so W is not PSD; the semidefinite velocity then differs."""
    rng = np.random.default_rng(5)
    n_both = 0
    for _ in range(40):
        G = rng.normal(size=(2, 2, 6))
        G = 0.5 * (G + G.transpose(1, 0, 2))
        Q = np.diag(-rng.uniform(0.5, 2.0, size=2))
        Gd = G.copy()
        Gd[0, 1] = Gd[1, 0] = 0.0
        S_sd, _ = cf.solve_sdcp(Gd, Q)
        S_dg, W_dg = _diag_solution(Gd, Q)
        # decoupled: the same velocity (Sigma_01 is then free within Sigma >= 0 and does not move theta)
        np.testing.assert_allclose(np.einsum("ab,abd->d", S_sd, Gd), np.einsum("ab,abd->d", S_dg, Gd), atol=1e-9)
        Q[0, 1] = Q[1, 0] = rng.normal()
        S_sd, W_sd = cf.solve_sdcp(G, Q)
        S_dg, W_dg = _diag_solution(G, Q)
        if (np.diag(S_dg) > 1e-9).all():
            n_both += 1
            assert np.linalg.eigvalsh(W_dg)[0] < -1e-6  # violates the matrix constraint
            assert np.linalg.eigvalsh(W_sd)[0] > -1e-9
            v_sd, v_dg = (np.einsum("ab,abd->d", S, G) for S in (S_sd, S_dg))
            assert np.linalg.norm(v_sd - v_dg) > 1e-3 * np.linalg.norm(v_sd)
    assert n_both >= 10
