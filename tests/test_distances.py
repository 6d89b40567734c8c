"""Tests of sgdnotes.distances against closed forms (Gaussian W2 and KL), POT, and null behaviour."""

import jax
import numpy as np
import pytest

from sgdnotes import distances


def _normal(seed, shape):
    return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float64)


def test_w2_equal_sizes_matches_pot():
    import ot

    x, y = _normal(0, (40, 3)), _normal(1, (40, 3)) + 0.5
    C = ot.dist(x, y)  # squared Euclidean
    ref = np.sqrt(ot.emd2(np.full(40, 1 / 40), np.full(40, 1 / 40), C))
    assert abs(distances.w2(x, y) - ref) < 1e-9


def test_w2_unequal_sizes_is_pot_sqrt_and_symmetric():
    import ot

    x, y = _normal(2, (30, 2)), _normal(3, (45, 2)) * 2
    ref = np.sqrt(ot.emd2(np.full(30, 1 / 30), np.full(45, 1 / 45), ot.dist(x, y)))
    assert abs(distances.w2(x, y) - ref) < 1e-9
    assert abs(distances.w2(x, y) - distances.w2(y, x)) < 1e-9


def test_w2_1d_is_sorted_matching_and_shift():
    x = _normal(4, (500,))
    assert abs(distances.w2(x, x + 0.7) - 0.7) < 1e-9  # a translation moves every point by 0.7
    y = _normal(5, (500,))
    assert abs(distances.w2(x, y) - np.sqrt(np.mean((np.sort(x) - np.sort(y)) ** 2))) < 1e-9


def test_w2_converges_to_gaussian_closed_form():
    # N(0, I) vs N(m, diag(4, 1)) in 2-D: W2^2 = |m|^2 + (2 - 1)^2 = 1.25 + 1
    m, S = np.array([1.0, 0.5]), np.diag([4.0, 1.0])
    exact = distances.gaussian_w2(np.zeros(2), np.eye(2), m, S)
    assert abs(exact - np.sqrt(2.25)) < 1e-12
    x = _normal(6, (1500, 2))
    y = m + _normal(7, (1500, 2)) * np.sqrt(np.diag(S))
    assert abs(distances.w2(x, y) - exact) < 0.08  # finite-sample bias ~ n^(-1/2) in 2-D


def test_gaussian_w2_bures_commuting_case():
    S1, S2 = np.diag([1.0, 9.0]), np.diag([4.0, 1.0])
    assert abs(distances.gaussian_w2(np.zeros(2), S1, np.zeros(2), S2) ** 2 - ((1 - 2) ** 2 + (3 - 1) ** 2)) < 1e-12


def test_sliced_w2_lower_bound_and_translation():
    x, y = _normal(8, (300, 3)), _normal(9, (300, 3)) * 1.5
    s = distances.sliced_w2(jax.random.key(0), x, y, 500)
    assert 0 < s <= distances.w2(x, y) + 1e-12
    # a translation by t: sliced W2^2 = E (u.t)^2 = |t|^2 / p for the same cloud
    t = np.array([3.0, 0.0, 0.0])
    s_t = distances.sliced_w2(jax.random.key(1), x, x + t, 20000)
    assert abs(s_t**2 - 9 / 3) < 0.1
    assert distances.sliced_w2(jax.random.key(2), x, y[:200], 50) > 0


def test_gaussian_kl_closed_form_1d():
    # KL(N(0,1) || N(1, 4)) = (1/4 + 1/4 - 1 + ln 4) / 2
    assert abs(distances.gaussian_kl([0.0], [[1.0]], [1.0], [[4.0]]) - 0.5 * (0.5 - 1 + np.log(4))) < 1e-12


def test_kl_knn_against_gaussian_kl():
    m2, S2 = np.array([0.5, 0.0, 0.0]), np.diag([2.0, 1.0, 1.0])
    exact = distances.gaussian_kl(np.zeros(3), np.eye(3), m2, S2)
    ests = [distances.kl_knn(_normal(10 + r, (2000, 3)), m2 + _normal(50 + r, (2000, 3)) * np.sqrt(np.diag(S2)), k=5)
            for r in range(8)]
    se = np.std(ests, ddof=1) / np.sqrt(len(ests))
    assert abs(np.mean(ests) - exact) < 4 * se + 0.03, (np.mean(ests), exact, se)
    # and it is not symmetric: KL(Q||P) differs
    assert abs(distances.gaussian_kl(m2, S2, np.zeros(3), np.eye(3)) - exact) > 0.05


def test_kl_knn_same_law_near_zero():
    ests = [distances.kl_knn(_normal(100 + r, (1000, 2)), _normal(200 + r, (1000, 2))) for r in range(8)]
    assert abs(np.mean(ests)) < 4 * np.std(ests, ddof=1) / np.sqrt(8) + 0.02


def test_mmd2_unbiased_null_and_power():
    nulls = [distances.mmd2(_normal(300 + r, (100, 2)), _normal(400 + r, (100, 2))) for r in range(30)]
    assert abs(np.mean(nulls)) < 4 * np.std(nulls, ddof=1) / np.sqrt(30)
    assert min(nulls) < 0  # unbiased: negative values occur under the null
    alt = distances.mmd2(_normal(500, (100, 2)), _normal(501, (100, 2)) + 1.0)
    assert alt > max(nulls)


def test_mmd2_closed_form_for_point_masses():
    # x all at 0, y all at a (h fixed): MMD^2 = 1 + 1 - 2 exp(-a^2 / 2h^2) (U-statistic exact here)
    x, y = np.zeros((5, 1)), np.full((7, 1), 2.0)
    assert abs(distances.mmd2(x, y, bandwidth=1.0) - (2 - 2 * np.exp(-2.0))) < 1e-12


def test_mmd_test_p_values():
    r0 = distances.mmd_test(jax.random.key(0), _normal(600, (60, 2)), _normal(601, (60, 2)), n_permutations=200)
    r1 = distances.mmd_test(jax.random.key(1), _normal(602, (60, 2)), _normal(603, (60, 2)) + 1.0, n_permutations=200)
    assert r0.p_value > 0.01 and r1.p_value < 0.01 and r1.bandwidth > 0


@pytest.mark.parametrize("call", [
    lambda: distances.w2(np.zeros((3, 2)), np.zeros((3, 3))),
    lambda: distances.w2(np.full((3, 2), np.nan), np.zeros((3, 2))),
    lambda: distances.mmd2(np.zeros((1, 2)), np.zeros((3, 2))),
    lambda: distances.mmd2(np.zeros((3, 2)), np.ones((3, 2)), bandwidth=-1.0),
    lambda: distances.kl_knn(np.zeros((3, 2)), np.ones((3, 2))),
    lambda: distances.kl_knn(np.ones((1, 2)), np.ones((3, 2))),
    lambda: distances.gaussian_kl([0.0], [[0.0]], [0.0], [[1.0]]),
    lambda: distances.gaussian_w2([0.0, 1.0], np.eye(2), [0.0], [[1.0]]),
    lambda: distances.sliced_w2(jax.random.key(0), np.zeros((3, 2)), np.zeros((3, 2)), 0),
    lambda: distances.w2(np.zeros((2, 2, 2)), np.zeros((2, 2))),
])
def test_bad_input_names_the_rule(call):
    with pytest.raises(ValueError, match="must|needs"):
        call()
