"""Tests of sgdnotes.fractional: E(t) moments, Mittag-Leffler relaxation (simulation and GL grid),
Mittag-Leffler special cases, fGn/DFA."""

import math

import jax
import numpy as np
import pytest

from sgdnotes import fractional as fr


def test_inverse_subordinator_moments():
    a, t, n = 0.6, np.array([0.5, 2.0]), 6000
    E = fr.inverse_subordinator(jax.random.key(0), a, t, n, n_grid=300, dither=False)
    dtau = t[-1] ** a / math.gamma(1 + a) / 300
    for j, tj in enumerate(t):
        m1, m2 = tj**a / math.gamma(1 + a), 2 * tj ** (2 * a) / math.gamma(1 + 2 * a)
        se1 = E[:, j].std() / np.sqrt(n)
        assert abs(E[:, j].mean() - dtau / 2 - m1) <= 4 * se1 + dtau / 2  # bias in [0, dtau]
        se2 = (E[:, j] ** 2).std() / np.sqrt(n)
        assert abs((E[:, j] ** 2).mean() - m2) <= 4 * se2 + 2 * dtau * (m1 + dtau)
    assert (np.diff(E, axis=1) >= 0).all()


def test_dithered_inverse_subordinator_is_unbiased():
    """On a coarse grid (n_grid = 20) the grid value dtau * ceil(E / dtau) is biased by about dtau / 2; the
    dithered E is not: E[E(t)] and E[exp(-lam E(t))] = Mittag-Leffler agree within the sampling error
    (two-sided, Bonferroni over 4 times x 2 statistics at level 1 %) at n = 20000, five times chapter 6's
    ensemble; the undithered E is rejected by the same test."""
    from scipy.stats import norm
    a, lam, n = 0.6, 1.0, 20000
    t = np.array([0.25, 0.5, 1.0, 2.0])
    k = norm.isf(0.01 / (2 * 8))
    m1, ml = t**a / math.gamma(1 + a), fr.mittag_leffler(a, -lam * t**a)
    for dither in (True, False):
        E = fr.inverse_subordinator(jax.random.key(5), a, t, n, n_grid=20, dither=dither)
        assert (np.diff(E, axis=1) >= 0).all() and (E > 0).all()
        z1 = (E.mean(0) - m1) / (E.std(0, ddof=1) / np.sqrt(n))
        x = np.exp(-lam * E)
        z2 = (x.mean(0) - ml) / (x.std(0, ddof=1) / np.sqrt(n))
        ok = max(np.abs(z1).max(), np.abs(z2).max()) <= k
        assert ok if dither else not ok
    # with the chapter's grid (n_grid = 300), the subordinated OU mean at n = 20000 agrees with E_alpha
    E = fr.inverse_subordinator(jax.random.key(6), a, t, n, n_grid=300)
    Y = fr.subordinated_ou(jax.random.key(7), E, 1.0, lam, 0.3)
    assert (np.abs(Y.mean(0) - ml) / (Y.std(0, ddof=1) / np.sqrt(n)) <= norm.isf(0.01 / 8)).all()
    assert (fr.inverse_subordinator(jax.random.key(5), a, np.array([0.0, 1.0]), 10)[:, 0] == 0).all()


def test_mittag_leffler_special_cases():
    z = np.array([-3.0, -0.5, 0.0, 1.0])
    np.testing.assert_allclose(fr.mittag_leffler(1.0, z), np.exp(z), rtol=1e-12)
    # E_{1/2}(-x) = exp(x^2) erfc(x)
    from scipy.special import erfcx
    x = np.array([0.1, 1.0, 4.0])
    np.testing.assert_allclose(fr.mittag_leffler(0.5, -x), erfcx(x), rtol=1e-10)


def test_subordinated_ou_and_grid_relax_as_mittag_leffler():
    a, lam = 0.7, 1.0
    t = np.array([0.25, 1.0, 2.0])
    n = 6000
    E = fr.inverse_subordinator(jax.random.key(1), a, t, n, n_grid=300)
    Y = fr.subordinated_ou(jax.random.key(2), E, 1.0, lam, 0.3)
    pred = fr.mittag_leffler(a, -lam * t**a)
    se = Y.std(0) / np.sqrt(n)
    dtau = t[-1] ** a / math.gamma(1 + a) / 300
    assert (np.abs(Y.mean(0) - pred) <= 4 * se + lam * dtau).all()
    x = np.linspace(-3, 3, 121)
    p0 = np.exp(-((x - 1.0) ** 2) / 0.01)
    g = fr.time_fractional_fp(a, x, p0, -lam * x, 0.3, 2.0, 400, 4)
    mean = (g.p * x).sum(1) / g.p.sum(1)
    np.testing.assert_allclose(mean, fr.mittag_leffler(a, -lam * g.t**a), atol=0.01)
    np.testing.assert_allclose(g.p.sum(1), p0.sum(), rtol=1e-8)  # mass conserved


def test_grunwald_letnikov_mean_is_first_order_in_dt():
    """The chapter's setting (alpha 0.6): the GL error of the mean halves with dt, error <= 0.2 dt (chapter 6
    glues the measured constant C of C dt)."""
    a, lam = 0.6, 1.0
    x = np.linspace(-3, 3, 121)
    p0 = np.exp(-((x - 1.0) ** 2) / 0.005)
    err = []
    for n_steps in (200, 400):
        g = fr.time_fractional_fp(a, x, p0, -lam * x, 0.3, 2.0, n_steps, 4)
        mean = (g.p * x).sum(1) / g.p.sum(1)
        err.append(np.abs(mean - fr.mittag_leffler(a, -lam * g.t**a)))
        assert (err[-1] <= 0.2 * 2.0 / n_steps).all()  # error constant C <= 0.2 in C dt
    ratio = err[0] / err[1]
    assert ((ratio > 1.8) & (ratio < 2.2)).all()  # first order


@pytest.mark.parametrize("H", [0.3, 0.5, 0.8])
def test_dfa_recovers_hurst_of_fgn(H):
    x = fr.fgn(jax.random.key(3), H, 4096, 16)
    assert abs(x.var() - 1.0) < 0.1
    assert abs(fr.dfa_hurst(x)[0] - H) < 0.05


def test_bad_input():
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="alpha"):
        fr.inverse_subordinator(k, 1.5, [1.0], 10)
    with pytest.raises(ValueError, match="non-decreasing"):
        fr.inverse_subordinator(k, 0.5, [2.0, 1.0], 10)
    with pytest.raises(ValueError, match="dither"):
        fr.inverse_subordinator(k, 0.5, [1.0], 10, dither=1)
    with pytest.raises(ValueError, match="hurst"):
        fr.fgn(k, 1.0, 100)
    with pytest.raises(ValueError, match="uniform grid"):
        fr.time_fractional_fp(0.5, [0.0, 1.0, 3.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], 1.0, 1.0, 10)
    with pytest.raises(ValueError, match="N >= 32"):
        fr.dfa_hurst(np.ones(10))
    with pytest.raises(ValueError, match="E must be"):
        fr.subordinated_ou(k, np.array([[1.0, 0.5]]), 1.0, 1.0, 1.0)
