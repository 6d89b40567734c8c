"""sgdnotes.models: losses, Hessians, packing conventions and data generators."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgdnotes import models

jax.config.update("jax_enable_x64", False)


def test_linreg_full_loss_is_mean_of_per_sample():
    key = jax.random.key(0)
    ds = models.make_linreg_data(key, 30, 4)
    th = jax.random.normal(jax.random.key(1), (4,))
    per = jax.vmap(models.linreg_loss, (None, 0, 0))(th, ds.X, ds.Y)
    assert float(models.linreg_full_loss(th, ds.X, ds.Y)) == pytest.approx(float(per.mean()), rel=1e-5)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(3, 30), d_in=st.integers(1, 5), d_out=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_linreg_hessian_matches_autodiff(n, d_in, d_out, seed):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    X = jax.random.normal(k1, (n, d_in))
    Y = jax.random.normal(k2, (n, d_out))
    th = jax.random.normal(k3, (d_in * d_out,))
    H = jax.hessian(models.linreg_full_loss)(th, X, Y)
    np.testing.assert_allclose(models.linreg_hessian(X, d_out), H, rtol=1e-4, atol=1e-5)


def test_minimiser_zeroes_the_gradient():
    ds = models.make_linreg_data(jax.random.key(2), 50, 3, input_scales=[1.0, 2.0, 0.5])
    th = models.linreg_minimiser(ds.X, ds.Y)
    g = jax.grad(models.linreg_full_loss)(th, ds.X, ds.Y)
    assert float(jnp.max(jnp.abs(g))) < 1e-4


@settings(max_examples=20, deadline=None)
@given(d0=st.integers(1, 4), d1=st.integers(1, 4), d2=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_dln_pack_unpack_roundtrip_and_fortran_vec(d0, d1, d2, seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    W1 = jax.random.normal(k1, (d1, d0))
    W2 = jax.random.normal(k2, (d2, d1))
    th = models.dln_pack(W1, W2)
    np.testing.assert_array_equal(th[: d1 * d0], np.asarray(W1).reshape(-1, order="F"))
    A, B = models.dln_unpack(th, (d0, d1, d2))
    np.testing.assert_array_equal(A, W1)
    np.testing.assert_array_equal(B, W2)


def test_dln2_loss_has_no_half():
    W1 = jnp.eye(2)
    W2 = jnp.eye(2)
    th = models.dln_pack(W1, W2)
    loss = partial(models.dln2_loss, dims=(2, 2, 2))
    assert float(loss(th, jnp.array([1.0, 0.0]), jnp.array([3.0, 0.0]))) == pytest.approx(4.0)


def test_student_t_inputs_are_heavier_tailed():
    g = models.make_linreg_data(jax.random.key(3), 20000, 1, inputs="gaussian")
    t = models.make_linreg_data(jax.random.key(3), 20000, 1, inputs="student_t", df=3.0)
    kurt = lambda x: float(np.mean((x - x.mean()) ** 4) / np.var(x) ** 2)  # noqa: E731
    assert abs(kurt(np.asarray(g.X[:, 0])) - 3.0) < 0.3
    assert kurt(np.asarray(t.X[:, 0])) > 6.0
    assert t.input_cov is not None and float(t.input_cov[0, 0]) == pytest.approx(3.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0, d=2), "n .number of samples. must be >= 1"),
        (dict(n=5, d=2, inputs="cauchy"), "inputs must be one of"),
        (dict(n=5, d=2, noise_std=-1.0), "noise_std must be"),
        (dict(n=5, d=2, input_scales=[1.0]), "input_scales must be"),
        (dict(n=5, d=2, theta_star=[np.nan, 1.0]), "finite"),
    ],
)
def test_make_linreg_data_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.make_linreg_data(jax.random.key(0), **kwargs)


def test_digits_dataset_is_bundled():
    X, Y = models.load_digits_regression()
    assert X.shape == (1797, 64) and Y.shape == (1797, 10)
    np.testing.assert_allclose(np.asarray(X).mean(0), 0.0, atol=1e-5)
