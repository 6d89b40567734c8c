"""Tests of sgdnotes.experiment: the noise models' laws, the comparison
statistics, the results file and the command line, on tiny sizes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdnotes import distances, experiment as ex, models, noise

TINY = ex.Setting(name="tiny", init="large", inputs="gaussian", dims=(3, 2, 2), n=32, eta=0.01, batch_size=4,
                  n_steps=40, init_scale=1.0, record_every=10)


def test_student_t_inputs_unit_variance_and_heavier_tails():
    s = TINY._replace(inputs="student_t", n=20000, df=5.0)
    X = np.asarray(ex.make_problem(jax.random.key(1), s).X, np.float64)
    assert abs(X.var() - 1) < 0.1  # rescaled to unit variance (df = 5: kurtosis finite)
    kurt = np.mean(X**4) / X.var() ** 2 - 3
    assert kurt > 2  # t(5) has excess kurtosis 6; a Gaussian would give ~0


def test_factors_have_the_stated_covariance():
    prob = ex.make_problem(jax.random.key(2), TINY)
    drift, iso = ex._sde_fns(TINY.dims)
    th = prob.theta0
    C = np.asarray(noise.empirical_noise_cov(noise.per_sample_grads(prob.loss_fn, th, prob.X, prob.Y)))
    s = 0.25
    Gi = np.asarray(iso(th, prob.X, prob.Y, s))
    assert np.allclose(Gi @ Gi.T, s * np.trace(C) / C.shape[0] * np.eye(C.shape[0]), rtol=1e-4)
    assert np.allclose(drift(th, prob.X, prob.Y, s), -jax.grad(
        lambda t: jnp.mean(jax.vmap(prob.loss_fn, (None, 0, 0))(t, prob.X, prob.Y)))(th), atol=1e-5)


def test_refined_with_alpha_2_is_the_anisotropic_sde_and_alpha_below_2_has_heavy_steps():
    s = TINY._replace(n_steps=1, record_every=1)
    prob = ex.make_problem(jax.random.key(3), s)
    fit1 = ex.NoiseFit(3.0, 0.1, 2.5, 0.1, 2.0, 1.0, 0.0, 10)
    a = ex.simulate(jax.random.key(4), "refined", s, prob, 4000, fit=fit1)
    b = ex.simulate(jax.random.key(4), "anisotropic", s, prob, 4000)
    assert np.array_equal(a, b)  # same key, same law, same code path: bit-identical
    st = ex.simulate(jax.random.key(4), "refined", s, prob, 4000, fit=fit1._replace(alpha=1.5))
    dev = np.abs(st[1] - st[0] - (a[1] - a[0]).mean(axis=0)).max(axis=1)
    assert np.quantile(dev, 0.999) > 5 * np.quantile(np.abs(a[1] - a[0] - (a[1] - a[0]).mean(axis=0)).max(axis=1), 0.999)


def test_fit_noise_gaussian_limit_and_scale():
    prob = ex.make_problem(jax.random.key(4), TINY._replace(n=256))
    fit = ex.fit_noise(jax.random.key(5), prob, prob.theta0[None], batch_size=64, n_batches=4000)
    # B = 64 with Gaussian inputs: nearly Gaussian noise, so Hill reads > 2, the block estimator ~2 (a
    # Gaussian is stable with alpha = 2) and median matching gives c ~ 1
    assert fit.alpha_hill > 2 and abs(fit.alpha_block - 2) < 4 * fit.alpha_block_se + 0.1
    assert fit.alpha == min(fit.alpha_block, 2.0)
    assert abs(fit.scale_median - 1) < 0.1 and fit.n_samples == 4000


def test_fit_noise_heavy_tailed_noise_gives_alpha_below_2():
    # Student-t(2.2) inputs on many samples, B = 1: per-sample gradients ~ x x^T have tail index ~1.1
    s = TINY._replace(inputs="student_t", df=2.2, n=4096)
    prob = ex.make_problem(jax.random.key(11), s)
    fit = ex.fit_noise(jax.random.key(12), prob, prob.theta0[None], batch_size=1, n_batches=4000)
    assert fit.alpha_hill + 3 * fit.alpha_se < 2 and fit.alpha < 1.9 and fit.alpha == fit.alpha_block
    assert fit.kurtosis > 10


def test_mmd_stats_is_the_u_statistic_over_distinct_indices_and_masks_rows():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 2)), rng.normal(size=(12, 2)) + 0.5
    K = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / 2)
    blocks = (K(x, x), K(y, y), K(x, y))
    w = np.bincount(rng.integers(0, 12, 12), minlength=12).astype(float)
    keep = np.ones(12, bool)
    keep[[2, 5]] = False

    def loop(w, wb):  # sum over index pairs (i != j) with multiplicities, the definition
        def within(Kc, ww):
            num = sum(ww[i] * ww[j] * Kc[i, j] for i in range(12) for j in range(12) if i != j)
            return num / (ww.sum() ** 2 - (ww * ww).sum())
        return within(blocks[0], w) + within(blocks[1], wb) - 2 * (w @ blocks[2] @ wb) / (w.sum() * wb.sum())

    assert np.isclose(ex._mmd_stats(blocks, w[None])[0], loop(w, w))
    assert np.isclose(ex._mmd_stats(blocks, w[None], keep)[0], loop(w, w * keep))
    assert np.isclose(ex._mmd_stats(blocks, np.ones((1, 12)))[0], distances.mmd2(x, y, 1.0))
    assert np.isclose(ex._mmd_stats(blocks, np.ones((1, 12)), keep)[0], distances.mmd2(x, y[keep], 1.0))


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
    samples["refined"][:3] = np.nan  # diverged trajectories: left out of that model's distances only
    c2 = ex.compare(jax.random.key(7), samples, n_boot=20)
    assert abs(c2.mmd2["refined"] - distances.mmd2(samples["sgd"], samples["refined"][3:], c.bandwidth)) < 1e-9
    assert c2.mmd2["langevin"] == c.mmd2["langevin"] and np.isfinite(c2.w2["refined"])


def test_run_grid_results_file_and_cli(tmp_path):
    grid = ex.run_grid(jax.random.key(8), [TINY], 8, n_boot=20, observables_compared=("product", "loss"))
    r = grid["results"][0]
    assert set(r.obs) == set(ex.TIMES) and r.obs["end"]["product"]["sgd"].shape == (8, 6)
    assert np.all(r.eta_lam_max > 0) and set(r.seconds) == set(ex.MODELS) and r.n_diverged == 0
    assert r.snap_steps["early"] < r.snap_steps["mid"] < r.snap_steps["end"]  # distinct snapshots
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
