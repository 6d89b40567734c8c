"""Tests of sgdnotes.experiment: closed-form per-sample gradients, the noise models' laws, the comparison
statistics, the results file and the command line, on tiny sizes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdnotes import distances, experiment as ex, models, noise

TINY = ex.Setting(name="tiny", init="large", inputs="gaussian", dims=(3, 2, 2), n=32, eta=0.01, batch_size=4,
                  n_steps=40, init_scale=1.0, record_every=10)


def test_per_sample_grads_match_autodiff():
    prob = ex.make_problem(jax.random.key(0), TINY._replace(inputs="student_t"))
    G1 = ex.per_sample_grads(prob.theta0, prob.X, prob.Y, TINY.dims)
    G2 = noise.per_sample_grads(prob.loss_fn, prob.theta0, prob.X, prob.Y)
    assert np.allclose(G1, G2, atol=1e-5 * float(jnp.abs(G2).max()))


def test_student_t_inputs_unit_variance_and_heavier_tails():
    s = TINY._replace(inputs="student_t", n=20000, df=5.0)
    X = np.asarray(ex.make_problem(jax.random.key(1), s).X, np.float64)
    assert abs(X.var() - 1) < 0.1  # rescaled to unit variance (df = 5: kurtosis finite)
    kurt = np.mean(X**4) / X.var() ** 2 - 3
    assert kurt > 2  # t(5) has excess kurtosis 6; a Gaussian would give ~0


def test_factors_have_the_stated_covariance():
    prob = ex.make_problem(jax.random.key(2), TINY)
    drift, iso, aniso = ex._sde_fns(TINY.dims)
    th = prob.theta0
    C = np.asarray(noise.empirical_noise_cov(noise.per_sample_grads(prob.loss_fn, th, prob.X, prob.Y)))
    s = 0.25
    Ga = np.asarray(aniso(th, prob.X, prob.Y, s))
    assert np.allclose(Ga @ Ga.T, s * C, atol=1e-5 * np.abs(C).max())
    Gi = np.asarray(iso(th, prob.X, prob.Y, s))
    assert np.allclose(Gi @ Gi.T, s * np.trace(C) / C.shape[0] * np.eye(C.shape[0]), rtol=1e-4)
    assert np.allclose(drift(th, prob.X, prob.Y, s), -jax.grad(
        lambda t: jnp.mean(jax.vmap(prob.loss_fn, (None, 0, 0))(t, prob.X, prob.Y)))(th), atol=1e-5)


def test_refined_with_alpha_2_and_c_1_is_the_anisotropic_sde_and_c_scales_the_noise():
    s = TINY._replace(n_steps=1, record_every=1)
    prob = ex.make_problem(jax.random.key(3), s)
    fit1 = ex.NoiseFit(3.0, 0.1, 2.0, 1.0, 0.0, 10)
    a = ex.simulate(jax.random.key(4), "refined", s, prob, 4000, fit=fit1)
    b = ex.simulate(jax.random.key(4), "anisotropic", s, prob, 4000)
    assert np.array_equal(a, b)  # same key, same law, same code path: bit-identical
    c = ex.simulate(jax.random.key(4), "refined", s, prob, 4000, fit=fit1._replace(scale=2.0))
    ratio = np.var(c[1] - c[0], axis=0).sum() / np.var(a[1] - a[0], axis=0).sum()
    assert abs(ratio - 4) < 0.3  # one-step noise variance scales as c^2 (drift is deterministic here)
    st = ex.simulate(jax.random.key(4), "refined", s, prob, 4000, fit=fit1._replace(alpha=1.5))
    dev = np.abs(st[1] - st[0] - (a[1] - a[0]).mean(axis=0)).max(axis=1)
    assert np.quantile(dev, 0.999) > 5 * np.quantile(np.abs(a[1] - a[0] - (a[1] - a[0]).mean(axis=0)).max(axis=1), 0.999)


def test_fit_noise_gaussian_limit_and_scale():
    prob = ex.make_problem(jax.random.key(4), TINY._replace(n=256))
    fit = ex.fit_noise(jax.random.key(5), prob, prob.theta0[None], batch_size=64, n_batches=4000)
    # B = 64 with Gaussian inputs: nearly Gaussian noise, so alpha = 2 and median matching gives c ~ 1
    assert fit.alpha == 2.0 and fit.alpha_hill > 2
    assert abs(fit.scale - 1) < 0.1 and fit.n_samples == 4000


def test_compare_floor_null_and_detects_a_shift():
    k = jax.random.key(6)
    base = lambda i, shift=0.0: np.asarray(jax.random.normal(jax.random.fold_in(k, i), (64, 2)), np.float64) + shift
    samples = {"sgd": base(0), "sgd_floor": base(1), "langevin": base(2, 1.0), "anisotropic": base(3),
               "refined": base(4), "modified": base(5, 0.3)}
    c = ex.compare(jax.random.key(7), samples, n_boot=200)
    assert abs(c.mmd2["sgd_floor"]) < 4 * c.mmd2_se["sgd_floor"]
    assert c.mmd2["langevin"] > 4 * c.mmd2_se["langevin"]
    assert c.diff["langevin-refined"] / c.diff_se["langevin-refined"] > 4  # refined closer than the shifted model
    assert abs(c.diff["anisotropic-refined"]) < 4 * c.diff_se["anisotropic-refined"]
    lo, hi = c.diff_ci["langevin-refined"]
    assert lo < c.diff["langevin-refined"] < hi
    assert abs(c.w2["anisotropic"] - distances.w2(samples["sgd"], samples["anisotropic"])) < 1e-12
    assert abs(c.mmd2["langevin"] - distances.mmd2(samples["sgd"], samples["langevin"], c.bandwidth)) < 1e-9


def test_run_grid_results_file_and_cli(tmp_path):
    grid = ex.run_grid(jax.random.key(8), [TINY], 8, n_boot=20, observables_compared=("product", "loss"))
    r = grid["results"][0]
    assert set(r.obs) == set(ex.TIMES) and r.obs["end"]["product"]["sgd"].shape == (8, 6)
    assert np.all(r.eta_lam_max > 0) and set(r.seconds) == set(ex.MODELS)
    path = tmp_path / "res.npz"
    ex.save_results(path, grid, {"note": "test"})
    back = ex.load_results(path)
    assert back["info"]["meta"]["note"] == "test"
    assert np.allclose(back["arrays"]["tiny/obs/end/product/refined"], r.obs["end"]["product"]["refined"], atol=1e-6)
    assert "tiny/end/product" in back["info"]["comparisons"]
    out = tmp_path / "cli.npz"
    assert ex.main(["--trajectories", "8", "--steps", "40", "--settings", "large-gaussian", "--boot", "10",
                    "--out", str(out), "--no-progress"]) == 0
    info = ex.load_results(out)["info"]
    assert info["settings"][0]["setting"]["name"] == "large-gaussian" and info["meta"]["wall_seconds"] > 0


def test_same_key_same_result():
    a = ex.simulate(jax.random.key(9), "langevin", TINY, ex.make_problem(jax.random.key(0), TINY), 4)
    b = ex.simulate(jax.random.key(9), "langevin", TINY, ex.make_problem(jax.random.key(0), TINY), 4)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("call", [
    lambda: ex.check_setting(TINY._replace(init="medium")),
    lambda: ex.check_setting(TINY._replace(n_steps=45)),
    lambda: ex.check_setting(TINY._replace(eta=-1.0)),
    lambda: ex.check_setting("tiny"),
    lambda: ex.make_problem(jax.random.key(0), TINY._replace(inputs="student_t", df=2.0)),
    lambda: ex.simulate(jax.random.key(0), "euler", TINY, ex.make_problem(jax.random.key(0), TINY), 4),
    lambda: ex.simulate(jax.random.key(0), "refined", TINY, ex.make_problem(jax.random.key(0), TINY), 4),
    lambda: ex.default_grid(0),
    lambda: ex.compare(jax.random.key(0), {"sgd": np.zeros((4, 1))}),
])
def test_bad_input_names_the_rule(call):
    with pytest.raises(ValueError, match="must"):
        call()
