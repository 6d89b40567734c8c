"""Tests of sgdnotes.escape: quadrature against simulation, censoring, Kramers / Eyring--Kramers limits,
the power-law and Levy exit laws, and bad input."""

import functools
import math
import warnings

import jax
import numpy as np
import pytest
from scipy import integrate

from sgdnotes import escape, sde


def _dw(x):  # -V', V = (x^2 - 1)^2
    return -4.0 * x * (x * x - 1.0)


def _sim_1d(drift, T, dt):
    return lambda k, th, n: sde.run_sde(k, drift, th, dt=dt, n_steps=n, diffusion=np.sqrt(2 * T),
                                        record_steps=np.arange(n + 1), lam_max=8.0)


def test_mfpt_ou_closed_form():
    # dx = -x dt + sqrt(2) dW, reflecting at 0, from 0 to c: T = int_0^c e^{y^2/2} int_0^y e^{-z^2/2} dz dy
    c = 1.5
    exact = integrate.quad(lambda y: np.exp(y * y / 2) * integrate.quad(lambda z: np.exp(-z * z / 2), 0, y)[0], 0, c)[0]
    got = escape.mfpt_1d(lambda x: -x, lambda x: 1.0 + 0 * x, 0.0, c, 0.0)
    assert abs(got - exact) < 1e-6 * exact
    # vectorised in x0 and zero at the target
    arr = escape.mfpt_1d(lambda x: -x, lambda x: 1.0 + 0 * x, np.array([0.0, 0.5, c]), c, 0.0)
    assert arr.shape == (3,) and arr[0] > arr[1] > arr[2] == 0.0


def test_mfpt_state_dependent_against_simulation():
    # loss-scaled diffusion D = kappa (0.3 + (x^2 - 1)^2): quadrature vs Euler-Maruyama (the 1/D must be inside)
    kappa = 0.6
    drift = _dw

    def factor(th):
        return np.sqrt(2 * kappa) * jax.numpy.sqrt(0.3 + (th[0] ** 2 - 1) ** 2)[None, None]

    sim = lambda k, th, n: sde.run_sde(k, drift, th, dt=0.005, n_steps=n, diffusion=factor, diffusion_kind="factor",
                                       record_steps=np.arange(n + 1), lam_max=8.0)
    m = 400
    fe = escape.first_exit(jax.random.key(0), sim, -np.ones((m, 1), np.float32),
                           lambda r: np.asarray(r.thetas[..., 0]) >= 1.0, n_steps=60_000, dt=0.005, segment=10_000)
    assert fe.escaped.all()
    pred = escape.mfpt_1d(lambda x: -4 * x * (x * x - 1), lambda x: kappa * (0.3 + (x * x - 1) ** 2), -1.0, 1.0, -3.0)
    se = fe.times.std(ddof=1) / np.sqrt(m)
    assert abs(fe.times.mean() - pred) < 4 * se, (fe.times.mean(), se, pred)
    # the formula with 1/D outside the inner integral (a common slip) is far off
    x = np.linspace(-3.0, 1.0, 40001)
    Dx = kappa * (0.3 + (x * x - 1) ** 2)
    Phi = integrate.cumulative_trapezoid(4 * x * (x * x - 1) / Dx, x, initial=0.0)
    inner = integrate.cumulative_trapezoid(np.exp(-Phi), x, initial=0.0)
    outer = np.exp(Phi) * inner / Dx
    wrong = integrate.trapezoid(outer[x >= -1.0], x[x >= -1.0])
    assert abs(fe.times.mean() - wrong) > 4 * se


def test_censoring_exponential_mle_and_kaplan_meier():
    rng = np.random.default_rng(1)
    tau, m, horizon = 2.0, 4000, 1.5
    t = rng.exponential(tau, m)
    esc = t < horizon
    tc = np.minimum(t, horizon)
    fit = escape.exponential_mle(tc, esc)
    assert abs(fit.mean_time - tau) < 4 * fit.mean_time_se
    # averaging the censored times as if they had escaped is biased low, far beyond the error bar
    assert tau - tc.mean() > 10 * fit.mean_time_se
    km = escape.kaplan_meier(tc, esc)
    i = np.searchsorted(km.t, 1.0)
    assert abs(km.survival[i] - np.exp(-km.t[i] / tau)) < 4 * km.se[i]
    assert np.all(np.diff(km.survival) <= 0)


def test_first_exit_censors_and_matches_quadrature():
    T, dt, m = 0.5, 0.01, 300
    fe = escape.first_exit(jax.random.key(2), _sim_1d(_dw, T, dt), -np.ones((m, 1), np.float32),
                           lambda r: np.asarray(r.thetas[..., 0]) >= 1.0, n_steps=800, dt=dt, segment=300)
    assert (~fe.escaped).any() and fe.escaped.any()
    assert np.all(fe.times[~fe.escaped] == fe.horizon) and np.all(fe.times[fe.escaped] <= fe.horizon)
    fit = escape.exponential_mle(fe.times, fe.escaped)
    pred = escape.mfpt_1d(lambda x: -4 * x * (x * x - 1), lambda x: T + 0 * x, -1.0, 1.0, -3.0)
    # at Delta V / T = 2 the law is close to exponential; allow the MLE's 4 s.e.
    assert abs(fit.mean_time - pred) < 4 * fit.mean_time_se, (fit, pred)
    # segmenting does not change which trajectories are censored in distribution; same key -> same result
    fe2 = escape.first_exit(jax.random.key(2), _sim_1d(_dw, T, dt), -np.ones((m, 1), np.float32),
                            lambda r: np.asarray(r.thetas[..., 0]) >= 1.0, n_steps=800, dt=dt, segment=300)
    assert np.array_equal(fe.steps, fe2.steps)


def test_kramers_limit_of_quadrature():
    ratios = np.array([8.0, 16.0, 32.0])
    exact = np.array([escape.mfpt_1d(lambda x: -4 * x * (x * x - 1), lambda x: 1 / r + 0 * x, -1.0, 1.0, -3.0)
                      for r in ratios])
    kr = escape.kramers_time(8.0, -4.0, 1.0, 1 / ratios)
    rel = exact / kr - 1
    assert np.all(np.diff(rel) < 0) and rel[-1] < 0.02
    # relative correction O(T / dV): halves when the barrier doubles
    assert abs(rel[1] / rel[2] - 2) < 0.3


def test_eyring_kramers_reduces_and_transforms():
    Hm, Hs = np.diag([8.0, 2.0]), np.diag([-4.0, 2.0])
    base = escape.eyring_kramers_time(Hm, Hs, 1.0, 0.25)
    # separable V: the 2-D law is the 1-D Kramers law
    assert abs(base - escape.kramers_time(8.0, -4.0, 1.0, 0.25)) < 1e-9 * base
    # commuting D = diag(d, .): time divided by d; a transverse drift with jac given reproduces the reversible value
    assert abs(escape.eyring_kramers_time(Hm, Hs, 1.0, 0.25, D=np.diag([0.5, 3.0])) - base / 0.5) < 1e-9 * base
    D = np.array([[1.2, 0.4], [0.4, 0.7]])
    rev = escape.eyring_kramers_time(Hm, Hs, 1.0, 0.25, D=D)
    assert abs(escape.eyring_kramers_time(Hm, Hs, 1.0, 0.25, jac_saddle=-D @ Hs) - rev) < 1e-9 * rev
    # a transverse drift -J grad V speeds the unstable direction up: shorter time
    J = np.array([[0.0, 1.0], [-1.0, 0.0]])
    assert escape.eyring_kramers_time(Hm, Hs, 1.0, 0.25, jac_saddle=-(np.eye(2) + J) @ Hs) < base
    # closed form: H_s = diag(-a, b), drift -(I + jJ) grad V has Jacobian [[a, -j b], [-j a, -b]] at the saddle,
    # positive eigenvalue mu = ((a - b) + sqrt((a - b)^2 + 4 a b (1 + j^2))) / 2
    a, b = 4.0, 2.0
    for j in (0.5, 1.0, 2.0):
        mu = ((a - b) + np.sqrt((a - b) ** 2 + 4 * a * b * (1 + j * j))) / 2
        want = 2 * np.pi / mu * np.sqrt(a * b / 16.0) * np.exp(1.0 / 0.25)
        got = escape.eyring_kramers_time(Hm, Hs, 1.0, 0.25, jac_saddle=-(np.eye(2) + j * J) @ Hs)
        assert abs(got / want - 1) < 1e-12, (j, got, want)


def test_mfpt_2d_against_1d_quadrature_and_grid_order():
    # b_x depends on x only, b_y is any (here non-gradient, x-dependent) field: u does not depend on y and must be
    # the 1-D time of x; central differences converge as O(h^2) (error ratio 4 when h halves)
    T = 0.3

    def drift(X, Y):
        return -4 * X * (X * X - 1), -Y + 3 * X * (X * X - 1)

    exact = escape.mfpt_1d(lambda x: -4 * x * (x * x - 1), lambda x: T + 0 * x, -1.0, 1.0, -1.7)
    errs = []
    for h in (0.04, 0.02):
        g = escape.mfpt_2d(drift, T, (-1.7, 1.0), (-2.0, 2.0), h)
        assert g.u.shape == (g.x.size, g.y.size) and np.all(g.u[-1] == 0)
        i = np.argmin(np.abs(g.x + 1))
        assert np.ptp(g.u[i]) < 1e-6 * g.u[i].mean()  # flat in y
        errs.append(g.u[i, g.y.size // 2] - exact)
    assert abs(errs[1]) < 2e-3 * exact and 3.0 < errs[0] / errs[1] < 5.0, (errs, exact)


def test_mfpt_2d_non_reversible_is_faster_and_matches_bouchet_reygner_trend():
    # -(I + jJ) grad V keeps the Gibbs law; the exact time falls with j like 1/mu_j, up to a finite-barrier factor
    Hm, Hs = np.diag([8.0, 2.0]), np.diag([-4.0, 2.0])
    Jm = np.array([[0.0, 1.0], [-1.0, 0.0]])
    T, out = 0.25, []
    for j in (0.0, 2.0):
        b = lambda X, Y, j=j: (-(4 * X * (X * X - 1) + j * 2 * Y), j * 4 * X * (X * X - 1) - 2 * Y)
        u = [escape.mfpt_2d(b, T, (-1.7, 1.0), (-2.0, 2.0), h) for h in (0.04, 0.02)]
        i, k = np.argmin(np.abs(u[1].x + 1)), np.argmin(np.abs(u[1].y))
        ex = (4 * u[1].u[i, k] - u[0].u[i, k]) / 3
        out.append(ex / escape.eyring_kramers_time(Hm, Hs, 1.0, T, jac_saddle=-(np.eye(2) + j * Jm) @ Hs))
    # finite-barrier factors of order 1 + O(T / dV), both above 1; the reversible formula would give ratio mu_2/mu_0 for j=2
    assert 1.0 < out[1] < out[0] < 1.2, out


def test_mfpt_2d_y_coupled_converges_at_second_order():
    # a drift that couples x and y (non-reversible double well): u depends on y, so the y terms matter; the
    # grid answer must converge at O(h^2) (successive differences shrink by 4 as h halves)
    T = 0.5

    def drift(X, Y):
        gx, gy = 4 * X * (X * X - 1), 2 * Y
        return -(gx + 2 * gy), 2 * gx - gy

    vals, spread = [], []
    for h in (0.1, 0.05, 0.025):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            g = escape.mfpt_2d(drift, T, (-1.8, 1.0), (-2.0, 2.0), h)
        i, k = np.argmin(np.abs(g.x)), np.argmin(np.abs(g.y - 0.5))
        vals.append(g.u[i, k])
        spread.append(np.ptp(g.u[i]) / g.u[i].mean())
    assert min(spread) > 0.05, spread  # u at the saddle column is far from flat in y
    ratio = (vals[0] - vals[1]) / (vals[1] - vals[2])
    assert 3.0 < ratio < 5.0, (vals, ratio)


def test_mfpt_2d_y_coupled_symmetry_and_exact_stencil():
    # (1) b_j(x, y) = (-(g_x + j g_y), j g_x - g_y) with g_y = 2y odd in y: flipping y and j maps the problem to
    # itself, so u_j(x, y) = u_{-j}(x, -y) on a box symmetric in y; (2) central differences are exact on
    # polynomials of degree <= 2 in each variable: the generator applied to f = (x_max - x)(y^2 + x y) must give
    # T Laplacian(f) + b . grad(f) at every node away from the reflecting edges (a y-dependent reference value)
    T, box = 0.5, ((-1.8, 1.0), (-2.0, 2.0))

    def drift(j):
        return lambda X, Y: (-(4 * X * (X * X - 1) + j * 2 * Y), j * 4 * X * (X * X - 1) - 2 * Y)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        up, um = (escape.mfpt_2d(drift(j), T, *box, 0.05) for j in (2.0, -2.0))
        x, y, A = escape._generator_2d(drift(2.0), T, *box, 0.05)
    assert np.ptp(up.u[np.argmin(np.abs(up.x))]) > 0.05 * up.u.max()  # u depends on y
    assert np.allclose(up.u, um.u[:, ::-1], rtol=1e-9, atol=1e-9 * up.u.max())
    X, Y = np.meshgrid(x[:-1], y, indexing="ij")
    f = (x[-1] - X) * (Y**2 + X * Y)
    fx, fy = -(Y**2 + X * Y) + (x[-1] - X) * Y, (x[-1] - X) * (2 * Y + X)
    lap = -2 * Y + 2 * (x[-1] - X)
    bx, by = drift(2.0)(X, Y)
    want = T * lap + bx * fx + by * fy
    got = (A @ f.ravel()).reshape(X.shape)
    inner = np.s_[1:, 1:-1]  # the reflecting edges x = x_min, y = y_min, y_max use mirrored ghosts
    assert np.allclose(got[inner], want[inner], rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_mfpt_2d_warns_on_large_peclet_number():
    with pytest.warns(RuntimeWarning, match="Peclet"):
        escape.mfpt_2d(lambda X, Y: (-50 * X, -Y), 0.1, (-1.0, 1.0), (-1.0, 1.0), 0.1)


def test_censored_mle_target_against_matrix_exponential():
    # E min(tau, c) / P(tau < c) from the slowest eigenpair must match the survival integrated with expm;
    # for a long censoring time it is the mean time itself
    from scipy.sparse.linalg import expm_multiply

    T, h, c = 0.4, 0.1, 6.0

    def drift(X, Y):
        gx, gy = 4 * X * (X * X - 1), 2 * Y
        return -(gx + gy), gx - gy

    rho = lambda X, Y: np.exp(-(X + 1) ** 2 * 8 / (2 * T) - Y**2 / T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ct = escape.censored_mle_target_2d(drift, T, (-1.8, 1.0), (-1.5, 1.5), h, rho, c)
        x, y, A = escape._generator_2d(drift, T, (-1.8, 1.0), (-1.5, 1.5), h)
        long = escape.censored_mle_target_2d(drift, T, (-1.8, 1.0), (-1.5, 1.5), h, rho, 1e4)
    X, Y = np.meshgrid(x[:-1], y, indexing="ij")
    r = rho(X, Y).ravel(); r /= r.sum()
    ts = np.linspace(0, c, 2001)
    S = expm_multiply(A.tocsc(), np.ones(A.shape[0]), start=0, stop=c, num=ts.size, endpoint=True) @ r
    want = np.trapezoid(S, ts) / (1 - S[-1])
    assert abs(ct.target / want - 1) < 1e-4, (ct, want)
    assert ct.target > ct.mean  # the start delay is counted about 1 / P(tau < c) times
    assert abs(long.target / long.mean - 1) < 1e-9, long


def test_power_law_time_is_the_asymptote_of_the_quadrature():
    for kappa in (0.05, 0.02):
        q = escape.mfpt_1d(lambda x: -4 * x * (x * x - 1), lambda x: kappa * (0.1 + (x * x - 1) ** 2), -1.0, 1.0, -3.0)
        p = escape.power_law_time(8.0, -4.0, 0.1, 1.1, kappa)
        assert abs(q / p - 1) < 3 * kappa, (kappa, q / p)


def test_levy_constant_and_exit_law():
    for a in (0.7, 1.3, 1.8):
        c = escape.stable_levy_constant(a, 1.0)
        head = integrate.quad(lambda y: (1 - np.cos(y)) * y ** (-1 - a), 0, 40 * np.pi, limit=400)[0]
        tail = (40 * np.pi) ** -a / a - integrate.quad(lambda y: y ** (-1 - a), 40 * np.pi, np.inf, weight="cos", wvar=1.0)[0]
        assert abs(2 * c * (head + tail) - 1) < 1e-6
    # width, not depth; eps^-alpha
    t1 = escape.levy_exit_time(1.5, 0.1, 1.0, 1.0)
    assert abs(escape.levy_exit_time(1.5, 0.2, 1.0, 1.0) / t1 - 2 ** -1.5) < 1e-12
    assert escape.levy_exit_time(1.5, 0.1, 2.0, 2.0) / t1 == pytest.approx(2 ** 1.5)
    assert escape.levy_exit_time(1.5, 0.1, 1.0, np.inf) == pytest.approx(2 * t1)


def test_levy_exit_against_simulation():
    alpha, eps, dt, m = 1.5, 0.2, 0.04, 300

    def drift(th):
        return -np.pi / 2 * jax.numpy.sin(np.pi * th)

    sim = lambda k, th, n: sde.run_sde(k, drift, th, dt=dt, n_steps=n, diffusion=eps,
                                       noise=sde.stable_driver(alpha, "independent"), record_steps=np.arange(n + 1),
                                       lam_max=5.0, on_divergence="ignore", max_growth=None)
    pred = escape.levy_exit_time(alpha, eps, 1.0, 1.0)
    fe = escape.first_exit(jax.random.key(3), sim, np.zeros((m, 1), np.float32),
                           lambda r: np.abs(np.asarray(r.thetas[..., 0])) >= 1.0, n_steps=int(2 * pred / dt), dt=dt,
                           segment=2000)
    fit = escape.exponential_mle(fe.times, fe.escaped)
    assert abs(fit.mean_time - pred) < 4 * fit.mean_time_se, (fit, pred)


@pytest.mark.parametrize("call, match", [
    (lambda: escape.mfpt_1d(lambda x: -x, lambda x: 1 + 0 * x, 0.0, -1.0, 0.0), "target must be > lower"),
    (lambda: escape.mfpt_1d(lambda x: -x, lambda x: 0 * x, 0.5, 1.0, 0.0), "diffusion must be > 0"),
    (lambda: escape.mfpt_1d(lambda x: -x, lambda x: 1 + 0 * x, 2.0, 1.0, 0.0), "x0 must lie in"),
    (lambda: escape.mfpt_1d(lambda x: -x, 1.0, 0.5, 1.0, 0.0), "vectorised callables"),
    (lambda: escape.kramers_time(-1.0, -4.0, 1.0, 0.2), "curv_min must be > 0"),
    (lambda: escape.kramers_time(8.0, 0.0, 1.0, 0.2), "curv_saddle must be nonzero"),
    (lambda: escape.kramers_time(8.0, -4.0, 1.0, 0.0), "temperature must be > 0"),
    (lambda: escape.eyring_kramers_time(np.eye(2), np.diag([-1.0, -1.0]), 1.0, 0.2), "exactly one negative"),
    (lambda: escape.eyring_kramers_time(np.diag([1.0, -1.0]), np.diag([-1.0, 1.0]), 1.0, 0.2), "H_min must be positive"),
    (lambda: escape.eyring_kramers_time(np.eye(2), np.diag([-1.0, 1.0]), 1.0, 0.2, jac_saddle=np.eye(2)), "exactly one positive"),
    (lambda: escape.power_law_time(8.0, -4.0, 1.0, 0.5, 0.1), "0 < loss_min < loss_saddle"),
    (lambda: escape.mfpt_2d(lambda X, Y: (X, Y), 0.0, (-1, 1), (-1, 1), 0.1), "temperature must be a finite number > 0"),
    (lambda: escape.mfpt_2d(lambda X, Y: (X, Y), 0.1, (1, -1), (-1, 1), 0.1), "x_range must be"),
    (lambda: escape.mfpt_2d(lambda X, Y: (X, Y), 0.1, (-1, 1), (-1, 1), 1.0), "at least 5 grid points"),
    (lambda: escape.mfpt_2d(None, 0.1, (-1, 1), (-1, 1), 0.1), "drift must be a vectorised callable"),
    (lambda: escape.mfpt_2d(lambda X, Y: (X, Y), 0.1, (-1, 0, 1), (-1, 1), 0.1), "x_range must be \\(min, max\\)"),
    (lambda: escape.mfpt_2d(lambda X, Y: (X, Y), 0.1, (-1, 1), 3.0, 0.1), "y_range must be \\(min, max\\)"),
    (lambda: escape.censored_mle_target_2d(lambda X, Y: (-X, -Y), 0.1, (-1, 1), (-1, 1), 0.1, None, 1.0),
     "density must be a vectorised callable"),
    (lambda: escape.censored_mle_target_2d(lambda X, Y: (-X, -Y), 0.1, (-1, 1), (-1, 1), 0.1, lambda X, Y: 0 * X, 1.0),
     "density must give finite weights"),
    (lambda: escape.levy_exit_time(2.0, 0.1, 1.0, 1.0), "alpha must be in"),
    (lambda: escape.levy_exit_time(1.5, 0.1, np.inf, np.inf), "at least one side"),
    (lambda: escape.exponential_mle([1.0, 2.0], np.array([False, False])), "at least one exit"),
    (lambda: escape.exponential_mle([1.0, -2.0], np.array([True, False])), "times must be >= 0"),
    (lambda: escape.kaplan_meier([1.0, 2.0], [1, 0]), "escaped must be a bool array"),
    (lambda: escape.first_exit(jax.random.key(0), None, np.zeros((2, 1)), lambda r: r, n_steps=5, dt=0.1), "simulate must be"),
    (lambda: escape.first_exit(jax.random.key(0), _sim_1d(_dw, 0.5, 0.01), np.zeros((2, 1), np.float32),
                               lambda r: np.zeros(3), n_steps=5, dt=0.01), "exited\\(result\\) must return a bool array"),
    (lambda: escape.first_exit(jax.random.key(0), _sim_1d(_dw, 0.5, 0.01), np.zeros(2), lambda r: r, n_steps=5, dt=0.1), "theta0 must have 2"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
