"""Tests of sgdnotes.stats: standard errors against known sampling laws, and the two asserts."""

import jax
import numpy as np
import pytest

from sgdnotes import stats


def _normal(seed, shape):
    return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float64)


def test_se_mean_matches_spread_of_means():
    x = _normal(0, (400, 200, 1))[..., 0]  # 400 replicates of 200 samples
    means = x.mean(axis=1)
    _, se = stats.se_mean(x[0])
    # the s.e. of one replicate estimates the sd of the replicate means (1/sqrt(200)) to ~5 %
    assert abs(se - means.std()) / means.std() < 0.15
    assert abs(means.std() * np.sqrt(200) - 1) < 0.1


def test_var_and_se_gaussian():
    x = _normal(1, (20000,))
    var, se = stats.var_and_se(x)
    assert abs(var - 1) < 4 * se
    assert abs(se - np.sqrt(2 / 20000)) / np.sqrt(2 / 20000) < 0.05  # Var of s^2 is 2 sigma^4 / N


def test_jackknife_of_mean_equals_se_mean():
    x = _normal(2, (300,))
    est, se = stats.jackknife(np.mean, x)
    m, se2 = stats.se_mean(x)
    assert np.isclose(est, m) and np.isclose(se, se2, rtol=1e-10)


def test_bootstrap_se_and_interval():
    x = _normal(3, (500,))
    est, se, (lo, hi) = stats.bootstrap(jax.random.key(4), np.mean, x, n_boot=800)
    assert abs(se - 1 / np.sqrt(500)) / (1 / np.sqrt(500)) < 0.15
    assert lo < est < hi


def test_asserts_pass_and_fail():
    c = stats.assert_agrees("ok", 1.02, 0.01, 1.0, k=3)
    assert c.kind == "agrees" and np.isclose(c.z, 2.0)
    with pytest.raises(AssertionError, match="disagrees"):
        stats.assert_agrees("bad", 1.05, 0.01, 1.0, k=3)
    stats.assert_rejects("rej", 1.5, 0.1, 1.0, k=4)
    with pytest.raises(AssertionError, match="does not reject"):
        stats.assert_rejects("norej", 1.1, 0.1, 1.0, k=4)


@pytest.mark.parametrize("bad", [
    dict(name="not an id", measured=1, se=1, predicted=1),
    dict(name="a", measured=1, se=0, predicted=1),
    dict(name="a", measured=1, se=-1, predicted=1),
    dict(name="a", measured=np.nan, se=1, predicted=1),
    dict(name="a", measured=1, se=np.inf, predicted=1),
])
def test_asserts_refuse_bad_input(bad):
    with pytest.raises(ValueError):
        stats.assert_agrees(**bad)


def test_chapter_seed(monkeypatch):
    monkeypatch.delenv("SGDNOTES_SEED", raising=False)
    assert stats.chapter_seed(3) == 3
    monkeypatch.setenv("SGDNOTES_SEED", "2")
    assert stats.chapter_seed(3) == 2003
    monkeypatch.setenv("SGDNOTES_SEED", "x")
    with pytest.raises(ValueError, match="SGDNOTES_SEED"):
        stats.chapter_seed(3)


def test_bad_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        stats.se_mean([1.0])
    with pytest.raises(ValueError, match="PRNG key"):
        stats.bootstrap(0, np.mean, np.ones(5))
