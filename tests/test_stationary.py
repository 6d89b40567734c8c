"""Tests of sgdnotes.stationary: linear-SDE stationary objects, the grid Fokker--Planck solver and the
path estimators of current and stochastic area (chapter 3)."""

import jax
import numpy as np
import scipy.linalg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from sgdnotes import sde, stationary as st


def rot(a):
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def random_spd(rng, d, scale=1.0):
    M = rng.standard_normal((d, d))
    return scale * (M @ M.T / d + 0.2 * np.eye(d))


# ---------------------------------------------------------------------------------------------
# linear SDEs

def vec(M):
    return M.reshape(-1, order="F")


@settings(max_examples=30, deadline=None)
@given(hst.integers(1, 6), hst.integers(0, 10_000))
def test_lyapunov_and_decomposition_against_kronecker_solves(d, seed):
    # independent references: the Lyapunov equation A B + B A^T = 2D and the equation
    # A Q + Q A^T = A D - D A^T satisfied by Q of A = (D + Q) U, both as Kronecker (vec) linear solves
    rng = np.random.default_rng(seed)
    A = random_spd(rng, d) + 0.3 * rng.standard_normal((d, d)) * (d > 1)
    if np.min(np.real(np.linalg.eigvals(A))) <= 0.05:
        A = A + np.eye(d)
    D = random_spd(rng, d)
    I = np.eye(d)
    K = np.kron(I, A) + np.kron(A, I)  # vec(A X + X A^T) = (I (x) A + A (x) I) vec X
    B_ref = np.linalg.solve(K, vec(2 * D)).reshape(d, d, order="F")
    np.testing.assert_allclose(st.lyapunov(A, D), B_ref, rtol=1e-9, atol=1e-12)
    Q_ref = np.linalg.solve(K, vec(A @ D - D @ A.T)).reshape(d, d, order="F")
    Q, U = st.drift_decomposition(A, D)
    np.testing.assert_allclose(Q, Q_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(U, np.linalg.inv(B_ref), rtol=1e-8, atol=1e-9)


def test_lyapunov_closed_form_2x2_nonnormal():
    # A = [[a, c], [0, b]], D = I: B solved by hand (three linear equations in B11, B12, B22)
    a, b, c = 1.0, 2.0, 1.5
    A = np.array([[a, c], [0.0, b]])
    B22 = 1 / b
    B12 = -c * B22 / (a + b)
    B11 = (1 - c * B12) / a
    np.testing.assert_allclose(st.lyapunov(A, np.eye(2)), [[B11, B12], [B12, B22]], rtol=1e-12)


def test_commuting_means_zero_current_and_area():
    H = np.diag([1.0, 0.25])
    D = np.diag([0.3, 0.1])  # commutes with H
    Q, U = st.drift_decomposition(H, D)
    np.testing.assert_allclose(Q, 0, atol=1e-12)
    assert st.ou_area_rate(H, D) == pytest.approx(0, abs=1e-12)
    x = np.random.default_rng(0).standard_normal((5, 2))
    np.testing.assert_allclose(st.ou_current(x, H, D), 0, atol=1e-12)
    # non-commuting: area rate = (H B - B H)_{01} / 2
    D2 = rot(0.6) @ D @ rot(0.6).T
    B = st.lyapunov(H, D2)
    assert st.ou_area_rate(H, D2) == pytest.approx(0.5 * (H @ B - B @ H)[0, 1], rel=1e-10)
    assert abs(st.ou_area_rate(H, D2)) > 1e-3


def test_ou_current_divergence_free_and_orthogonal():
    rng = np.random.default_rng(3)
    H = random_spd(rng, 3)
    D = random_spd(rng, 3, 0.5)
    o = st.ou_stationary(H, D)
    x = rng.standard_normal((4, 3))
    J = st.ou_current(x, H, D)
    # J = -QU x p is orthogonal to grad log p = -U x
    np.testing.assert_allclose(np.sum(J * (x @ o.U.T), axis=1), 0, atol=1e-12)
    # divergence by central differences
    eps = 1e-5
    div = sum((st.ou_current(x + eps * np.eye(3)[a], H, D)[:, a] - st.ou_current(x - eps * np.eye(3)[a], H, D)[:, a])
              / (2 * eps) for a in range(3))
    np.testing.assert_allclose(div, 0, atol=1e-7)
    # J = b p - D grad p
    p = st.gaussian_density(x, o.mean, o.cov)
    grad_p = -(x @ o.U.T) * p[:, None]
    np.testing.assert_allclose(J, -(x @ H.T) * p[:, None] - grad_p @ D.T, atol=1e-12)


def test_ou_transient_limits_and_kl():
    H = np.array([[1.0, 0.2], [0.2, 0.5]])
    D = np.diag([0.2, 0.4])
    m, C = st.ou_transient(H, D, [0.0, 200.0], np.array([1.0, 2.0]), 0.1 * np.eye(2))
    np.testing.assert_allclose(m[0], [1, 2])
    np.testing.assert_allclose(C[0], 0.1 * np.eye(2), atol=1e-14)
    np.testing.assert_allclose(C[1], st.lyapunov(H, D), atol=1e-10)
    assert st.gaussian_kl(m[1], C[1], m[1], C[1]) == pytest.approx(0, abs=1e-12)
    # 1-D KL closed form
    assert st.gaussian_kl(np.array([0.0]), np.array([[1.0]]), np.array([1.0]), np.array([[2.0]])) == pytest.approx(
        0.5 * (0.5 + 0.5 - 1 + np.log(2)))


def test_bad_input():
    with pytest.raises(ValueError, match="positive real part"):
        st.lyapunov(-np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match="symmetric"):
        st.lyapunov(np.eye(2), np.array([[1.0, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="d >= 2"):
        st.ou_area_rate(np.eye(1), np.eye(1))
    with pytest.raises(ValueError, match="alpha"):
        st.fp_generator(st.make_grid([-1], [1], 10), lambda x: -x, 1.0, alpha=2.0)
    with pytest.raises(ValueError, match="high"):
        st.make_grid([1.0], [0.0], 10)


# ---------------------------------------------------------------------------------------------
# grid Fokker--Planck solver

H2 = np.array([[1.0, 0.3], [0.3, 0.4]])
D2 = rot(0.7) @ np.diag([0.3, 0.05]) @ rot(0.7).T


def lin_drift(x):
    return -x @ H2.T


def test_grid_stationary_matches_exact_ou_2d():
    g = st.make_grid([-3, -3], [3, 3], 90)
    sol = st.fp_stationary(g, lin_drift, D2)
    assert abs(sol.mass - 1) < 1e-10
    o = st.ou_stationary(H2, D2)
    pe = st.gaussian_density(g.points, o.mean, o.cov)
    assert np.abs(sol.p - pe).max() < 5e-3 * pe.max()
    Je = st.ou_current(g.points, H2, D2)
    assert np.abs(sol.current - Je).max() < 0.05 * np.abs(Je).max()


def test_grid_evolution_matches_ou_transient_and_conserves_mass():
    g = st.make_grid([-3, -3], [3, 3], 60)
    p0 = st.gaussian_density(g.points, np.array([1.0, -1.0]), 0.15 * np.eye(2))
    ps = st.fp_evolve(g, p0, [0.0, 1.0], lin_drift, D2)
    m, C = st.ou_transient(H2, D2, [1.0], np.array([1.0, -1.0]), 0.15 * np.eye(2))
    pe = st.gaussian_density(g.points, m[0], C[0])
    assert np.abs(ps[1] - pe).max() < 2e-2 * pe.max()
    masses = ps.sum(axis=(1, 2)) * np.prod(g.h)
    assert np.abs(masses - masses[0]).max() < 1e-8


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_grid_1d_position_dependent_noise(alpha):
    # dx = -x dt + sqrt(2 D(x)) dW, D = (1 + x^2)/2: p ∝ D^(alpha - 1) exp(int b/D) = D^(alpha-1) / (1 + x^2)
    g = st.make_grid([-4], [4], 300)
    x = g.centers[0]
    sol = st.fp_stationary(g, lambda z: -z, lambda z: (0.5 * (1 + z[..., 0] ** 2))[..., None, None], alpha)
    pe = (0.5 * (1 + x**2)) ** (alpha - 1) / (1 + x**2)
    pe /= pe.sum() * g.h[0]
    assert np.abs(sol.p - pe).max() < 1e-3 * pe.max()
    assert np.abs(sol.current).max() < 1e-10  # 1-D stationary current vanishes with closed walls


def test_gibbs_and_helmholtz_for_isotropic_gradient_drift():
    # b = -grad V, D = T I: stationary = Gibbs exp(-V/T); with D = I the Helmholtz potential is V itself
    g = st.make_grid([-2, -2], [2, 2], 100)
    V = lambda z: 0.25 * (z[..., 0] ** 2 - 1) ** 2 + 0.5 * z[..., 1] ** 2 + 0.2 * z[..., 0] * z[..., 1]
    gradV = lambda z: np.stack([(z[..., 0] ** 2 - 1) * z[..., 0] + 0.2 * z[..., 1], z[..., 1] + 0.2 * z[..., 0]], -1)
    T = 0.5
    sol = st.fp_stationary(g, lambda z: -gradV(z), T * np.eye(2))
    pg = st.gibbs_density(g, V, T)
    assert np.abs(sol.p - pg).max() < 5e-3 * pg.max()
    Vg = V(g.points)
    # potentials are defined up to an additive constant: compare after removing the mean difference
    # -T log p is accurate where p is not tiny (central fluxes lose relative accuracy in far tails)
    bulk = sol.p > 1e-3 * sol.p.max()
    e = (st.effective_potential(sol.p, T) - Vg)[bulk]
    assert np.abs(e - e.mean()).max() < 1e-2 * np.ptp(Vg)  # O(h^2): 0.05, 0.014 at 60, 120 cells
    e = st.helmholtz_potential(g, lambda z: -gradV(z), np.eye(2)) - Vg
    assert np.abs(e - e.mean()).max() < 5e-3 * np.ptp(Vg)  # O(h^2): 2.8e-3 at 60 cells, 7e-4 at 120


# ---------------------------------------------------------------------------------------------
# path estimators (statistical tests on a simulated OU process)

def ou_sim_drift(theta):
    return -theta @ H2.T


@pytest.fixture(scope="module")
def ou_path():
    G = np.linalg.cholesky(2 * D2)
    o = st.ou_stationary(H2, D2)
    x0 = jax.random.multivariate_normal(jax.random.key(5), np.zeros(2), o.cov, (400,))
    dt, K = 0.01, 3000
    res = sde.run_sde(jax.random.key(6), ou_sim_drift, np.asarray(x0, np.float32), dt=dt, n_steps=K,
                      diffusion=G, n_trajectories=400, record_steps=np.arange(K + 1))
    return np.asarray(res.thetas, float), dt


def test_area_rate_estimator(ou_path):
    path, dt = ou_path
    ar = st.area_rate(path, dt, center=np.zeros(2))
    theory = st.ou_area_rate(H2, D2)
    # the simulated process is the Euler--Maruyama chain x' = M x + xi, M = I - dt H2, xi ~ N(0, 2 D2 dt):
    # its exact area rate is (C M^T)_{01} - (C M^T)_{10} over 2 dt, C its stationary covariance; it differs
    # from the SDE's by O(dt), so the estimator is tested against it with no slack beyond 4 s.e.
    M = np.eye(2) - dt * H2
    C = scipy.linalg.solve_discrete_lyapunov(M, 2 * D2 * dt)
    CM = C @ M.T
    theory_chain = 0.5 * (CM[0, 1] - CM[1, 0]) / dt
    assert abs(theory_chain - theory) < 5 * dt * abs(theory)  # O(dt) apart
    assert abs(ar.rate - theory_chain) < 4 * ar.se
    assert abs(ar.rate) > 4 * ar.se  # the rotation is detectable


def test_current_estimator(ou_path):
    path, dt = ou_path
    e = np.linspace(-1.0, 1.0, 5)
    est = st.current_from_increments(path, dt, (e, e))
    pts = np.stack(np.meshgrid(*est.centers, indexing="ij"), -1)
    Jt = st.ou_current(pts, H2, D2)
    z = (est.J - Jt) / est.se
    # bin averages vs point values: bins are small relative to the law's scale; use a loose 5 se bound
    assert np.abs(z).max() < 5
    o = st.ou_stationary(H2, D2)
    pe = st.gaussian_density(pts, o.mean, o.cov)
    assert np.abs(est.density - pe).max() < 0.1 * pe.max()


# ---------------------------------------------------------------------------------------------
# grid solver: manufactured stationary solution with position-dependent anisotropic D; positivity

def _manufactured(alpha):
    """p* = exp(-V) on [-1, 1]^2 with D(x) anisotropic and position dependent, and a drift that makes p*
    stationary with the divergence-free current r = (d_y psi, -d_x psi), psi = (1-x^2)^2 (1-y^2)^2
    (zero normal flux on the walls): b = (1 - alpha) div D + D grad log p* + r / p*."""
    def V(z):
        x, y = z[..., 0], z[..., 1]
        return 0.8 * x**2 + 0.5 * y**2 + 0.4 * x * y + 0.3 * x

    def gradV(z):
        x, y = z[..., 0], z[..., 1]
        return np.stack([1.6 * x + 0.4 * y + 0.3, y + 0.4 * x], -1)

    def Dfield(z):
        x, y = z[..., 0], z[..., 1]
        D = np.empty(z.shape[:-1] + (2, 2))
        D[..., 0, 0] = 1 + 0.5 * x**2
        D[..., 1, 1] = 0.6 + 0.3 * y**2
        D[..., 0, 1] = D[..., 1, 0] = 0.3 + 0.1 * x * y
        return D

    def drift(z):
        x, y = z[..., 0], z[..., 1]
        divD = np.stack([1.1 * x, 0.7 * y], -1)  # (d_x D11 + d_y D12, d_x D12 + d_y D22)
        r = 0.8 * np.stack([-4 * y * (1 - y**2) * (1 - x**2) ** 2, 4 * x * (1 - x**2) * (1 - y**2) ** 2], -1)
        return (1 - alpha) * divD - np.einsum("...ij,...j->...i", Dfield(z), gradV(z)) + r * np.exp(V(z))[..., None]

    return V, Dfield, drift


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_manufactured_solution_second_order(alpha):
    V, Dfield, drift = _manufactured(alpha)
    errs = []
    for n in (24, 48):
        g = st.make_grid([-1, -1], [1, 1], n)
        sol = st.fp_stationary(g, drift, Dfield, alpha)
        pe = np.exp(-V(g.points))
        pe /= pe.sum() * np.prod(g.h)
        errs.append(np.sqrt(np.mean((sol.p - pe) ** 2)) / pe.max())
    order = np.log2(errs[0] / errs[1])
    print(f"alpha {alpha}: rms errors {errs}, order {order:.2f}")
    assert 1.8 < order < 2.3, (errs, order)  # second order, as the flux is built to be


def test_positive_at_high_peclet_and_gibbs():
    # cold double well, diagonal position-dependent D: cell Peclet |b| h / D up to ~ 20, where central
    # fluxes give negative densities; the exponentially fitted flux keeps every cell positive
    g = st.make_grid([-2, -1.5], [2, 1.5], [80, 60])
    T = 0.02
    gradV = lambda z: np.stack([(z[..., 0] ** 2 - 1) * z[..., 0], 2 * z[..., 1]], -1)

    def Dfield(z):
        D = np.zeros(z.shape[:-1] + (2, 2))
        D[..., 0, 0] = T * (1 + 0.3 * np.sin(z[..., 1]))
        D[..., 1, 1] = T
        return D

    b = lambda z: -np.einsum("...ij,...j->...i", Dfield(z), gradV(z) / T)  # J = 0 for exp(-V/T), alpha = 1
    peclet = (np.abs(b(g.points)) * g.h / T).max()
    assert peclet > 10
    sol = st.fp_stationary(g, b, Dfield, alpha=1.0)
    assert sol.p.min() > -1e-13 * sol.p.max()  # no negative density beyond the solve's round-off
    V = lambda z: 0.25 * (z[..., 0] ** 2 - 1) ** 2 + z[..., 1] ** 2
    pg = st.gibbs_density(g, V, T)
    assert np.abs(sol.p - pg).max() < 0.05 * pg.max()


def test_monotone_cross_stencil_positive_with_nondiagonal_D():
    # constant rotated D (D12 != 0) on a cold double well: central cross terms give negative densities,
    # the monotone 9-point stencil (cross="monotone") gives p >= 0 and agrees with the central solution
    g = st.make_grid([-2, -2], [2, 2], 80)
    D = rot(np.pi / 6) @ np.diag([1.6, 0.4]) @ rot(np.pi / 6).T * 0.1
    b = lambda z: -np.stack([(z[..., 0] ** 2 - 1) * z[..., 0] - 0.5 * (z[..., 1] - 0.5 * z[..., 0]),
                             z[..., 1] - 0.5 * z[..., 0]], -1)
    pc = st.fp_stationary(g, b, D).p
    pm = st.fp_stationary(g, b, D, cross="monotone").p
    assert pc.min() < 0 <= pm.min()
    assert np.abs(pm - pc).max() < 0.02 * pc.max()
    with pytest.raises(ValueError, match="monotone"):
        st.fp_stationary(g, b, np.array([[1.0, 0.9], [0.9, 0.5]]), cross="monotone")   # |D12| > D22


def test_monotone_cross_stencil_second_order_on_ou():
    # exact OU stationary law with non-diagonal constant D: observed order of the max error ~ 2
    H = np.array([[1.0, 0.3], [0.3, 0.6]])
    D = rot(np.pi / 6) @ np.diag([0.48, 0.12]) @ rot(np.pi / 6).T
    cov = st.ou_stationary(H, D).cov
    errs = []
    for n in (40, 80):
        g = st.make_grid([-3, -3], [3, 3], n)
        pm = st.fp_stationary(g, lambda z: -z @ H.T, D, cross="monotone").p
        pe = st.gaussian_density(g.points.reshape(-1, 2), np.zeros(2), cov).reshape(g.shape)
        errs.append(np.abs(pm - pe).max() / pe.max())
    assert 1.7 < np.log2(errs[0] / errs[1]) < 2.3


# ---------------------------------------------------------------------------------------------
# minimum action method

def test_minimum_action_matches_exact_ou_quasi_potential():
    # non-reversible linear drift -A x: W(x) = x^T B^{-1} x / 2 with A B + B A^T = 2 D
    A = np.array([[1.0, 0.8], [-0.4, 0.5]])
    D = np.array([[0.5, 0.1], [0.1, 0.3]])
    B = st.lyapunov(A, D)
    for x1 in (np.array([1.0, -0.7]), np.array([-0.3, 0.9])):
        r = st.minimum_action_path(lambda x: -x @ A.T, D, np.zeros(2), x1, n_nodes=100)
        W = 0.5 * x1 @ np.linalg.solve(B, x1)
        assert r.action == pytest.approx(W, rel=2e-5)
        assert r.cumulative[-1] == pytest.approx(r.action) and np.all(np.diff(r.cumulative) >= -1e-12)
        # the reversible guess W = x^T (D^{-1} A) x / 2 (right only if A D^{-1} were symmetric) is far off
        assert abs(r.action - 0.5 * x1 @ np.linalg.solve(D, A) @ x1) > 0.05 * W


def test_minimum_action_bad_input():
    with pytest.raises(ValueError, match="positive definite"):
        st.minimum_action_path(lambda x: -x, np.diag([1.0, 0.0]), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="shape"):
        st.minimum_action_path(lambda x: -x, np.eye(2), np.zeros(3), np.ones(2))
    with pytest.raises(ValueError, match="n_nodes"):
        st.minimum_action_path(lambda x: -x, np.eye(2), np.zeros(2), np.ones(2), n_nodes=2)
