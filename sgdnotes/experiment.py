"""The proposal's experiment (seed 000 section 10, seed 002): SGD against SDE models on deep linear networks (chapter 9).

A *setting* fixes the problem (two-layer linear network ``dims = (d0, d1, d2)`` on ``n`` teacher samples,
Gaussian or Student-t inputs), the initialisation (``"small"``: one balanced point near the origin saddle,
``dln.small_init``; ``"large"``: one LeCun-type point, ``dln.lazy_init``) and the optimiser (``eta``, ``B``,
``n_steps``). All trajectories of a setting start from the *same* point, so that their spread is made by
the noise alone. Each setting is simulated by the book's one SGD core and one SDE core as

=============  ======================================================================================
``sgd``        real SGD (``sgd.run_sgd``, with replacement)
``sgd_floor``  a second, independent SGD ensemble: its distance to ``sgd`` is the sampling *floor*
``langevin``   isotropic Gaussian SDE, ``G = sqrt(eta tr Sigma_emp(theta) / (B d)) I`` (same trace as SGD's
               noise, no anisotropy; ``sde.run_sde``)
``anisotropic``  Gaussian SDE with ``eta/B Sigma_emp(theta)`` (``sde.run_sgd_sde``, order 1)
``refined``    anisotropic elliptical alpha-stable SDE: ``alpha`` from the block estimator on SGD's own
               gradient noise (:func:`fit_noise`), increments ``eta^(1/2 - 1/alpha) sqrt(eta/B) Sigma_emp^(1/2)
               dL^alpha`` so that one step of length eta carries ``eta Sigma^(1/2) sqrt(W) z / sqrt(B)``: SGD's
               own covariance factor driven by the unit elliptical stable law (scale c = 1 on the factor;
               ``sde.run_sgd_sde`` with ``noise=sde.stable_driver(alpha)``, ``noise_scale = eta^(1/2 - 1/alpha)``).
               Divergent trajectories are kept as NaN and counted, not raised
``modified``   the second-order stochastic modified equation of chapter 2 (``run_sgd_sde(order=2)``)
=============  ======================================================================================

Time is ``t = eta k`` everywhere (Euler--Maruyama with ``dt = eta``). :func:`run_setting` records
every model at the same steps and keeps three snapshots chosen on SGD's mean loss (``early``: 2 % of the
loss decrease done, on the first plateau for a small start; ``mid``: 50 %, between transitions for a small
start; where that is within two records of ``early`` -- a large start, whose loss falls at once -- ``mid`` is
halfway between ``early`` and the end in steps; ``end``: the last step);
:func:`compare` turns them into distances with bootstrap intervals. :func:`run_grid` runs a list of
settings (the chapter's grid is :func:`default_grid`), and ``python -m sgdnotes.experiment`` runs it at
any size from the command line, sharded over all devices by the simulation core, with a progress bar,
writing an ``.npz`` results file (:func:`save_results` / :func:`load_results`).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v
from . import distances, dln, models, noise, sde, sgd, stable
from .ensemble import DivergenceError

MODELS = ("sgd", "sgd_floor", "langevin", "anisotropic", "refined", "modified")
COMPARED = ("sgd_floor", "langevin", "anisotropic", "refined", "modified")  # distances to sgd
OBSERVABLES = ("product", "svals", "loss", "params", "flat", "stiff")
TIMES = ("early", "mid", "end")
_TIME_FRACTIONS = (0.02, 0.5)  # loss-decrease fractions of the early and mid snapshots


class Setting(NamedTuple):
    """One cell of the grid (all fields plain Python values, so a setting round-trips through JSON)."""

    name: str
    init: str  # "small" (balanced, near the origin saddle) or "large" (LeCun-type, toward lazy)
    inputs: str  # "gaussian" or "student_t"
    dims: tuple = (4, 4, 4)
    n: int = 128
    eta: float = 0.01
    batch_size: int = 4
    n_steps: int = 1000
    init_scale: float = 1e-2  # small_init scale, or lazy_init scale for "large"
    df: float = 4.0  # Student-t degrees of freedom (t(3) lets one extreme sample make SGD diverge for some seeds)
    noise_std: float = 0.1
    record_every: int = 10


def default_grid(width: int = 4, **overrides) -> list[Setting]:
    """The 2 x 2 grid of the proposal: {small, large} initialisation x {Gaussian, Student-t} inputs.

    width: the hidden width d1 (d0 = d2 = 4); overrides: any other :class:`Setting` field for all cells.
    """
    width = v.positive_int("width (hidden units d1)", width, 1, 256)
    out = []
    for init, scale in (("small", 1e-2), ("large", 1.0)):
        for inputs in ("gaussian", "student_t"):
            kw = dict(name=f"{init}-{inputs}", init=init, inputs=inputs, dims=(4, width, 4), init_scale=scale)
            kw.update(overrides)
            out.append(check_setting(Setting(**kw)))
    return out


def check_setting(s) -> Setting:
    """Validate a :class:`Setting` (ValueError naming the rule otherwise); returns it with plain types."""
    if not isinstance(s, Setting):
        v.fail("setting must be a sgdnotes.experiment.Setting", s)
    v.one_of("init", s.init, {"small", "large"})
    v.one_of("inputs", s.inputs, {"gaussian", "student_t"})
    dims = models._dims(s.dims)
    n = v.positive_int("n (number of samples)", s.n, 2)
    eta = v.positive_float("eta (learning rate)", s.eta)
    B = v.positive_int("batch_size", s.batch_size, 1)
    K = v.positive_int("n_steps", s.n_steps, 1)
    rec = v.positive_int("record_every", s.record_every, 1, K)
    if K % rec:
        v.fail(f"n_steps must be a multiple of record_every = {rec}", K)
    return Setting(str(s.name), s.init, s.inputs, dims, n, eta, B, K, v.positive_float("init_scale", s.init_scale),
                   v.positive_float("df", s.df), v.real("noise_std", s.noise_std, minimum=0.0), rec)


class Problem(NamedTuple):
    """Data and start of a setting: X (n, d0), Y (n, d2), teacher M (d2, d0), theta0 (d,), loss_fn."""

    X: jax.Array
    Y: jax.Array
    M: jax.Array
    theta0: jax.Array
    loss_fn: object


@functools.lru_cache(maxsize=None)
def _loss_fn(dims):
    return functools.partial(models.dln2_loss, dims=dims)  # one stable object per dims (compiled code reused)


def make_problem(key, setting: Setting) -> Problem:
    """Teacher data (``models.make_dln_teacher_data``; Student-t inputs rescaled to unit variance, same
    teacher) and the shared initial point of ``setting``."""
    v.key("key", key)
    s = check_setting(setting)
    k_data, k_t, k_init = jax.random.split(key, 3)
    X, Y, M = models.make_dln_teacher_data(k_data, s.n, s.dims, noise_std=s.noise_std)
    if s.inputs == "student_t":
        if s.df <= 2:
            v.fail("df must be > 2 (unit-variance Student-t inputs)", s.df)
        X = jax.random.t(k_t, s.df, X.shape) * np.sqrt((s.df - 2) / s.df)
        Y = X @ M.T + s.noise_std * jax.random.normal(jax.random.fold_in(k_t, 1), Y.shape)
    init = dln.small_init if s.init == "small" else dln.lazy_init
    return Problem(X, Y, M, init(k_init, s.dims, s.init_scale), _loss_fn(s.dims))


# ---------------------------------------------------------------------------------------------
# The noise models


@functools.lru_cache(maxsize=None)
def _sde_fns(dims):
    """drift(theta, X, Y, scale) = -grad L_n; isotropic factor sqrt(scale tr Sigma_emp(theta) / d) I (d, d)
    (stable objects, so compiled code is reused)."""
    loss_fn = _loss_fn(dims)

    def drift(theta, X, Y, scale):
        return dln.dln_drift(theta, X, Y, dims=dims)

    def iso_factor(theta, X, Y, scale):
        G = noise.per_sample_grads(loss_fn, theta, X, Y)
        C = G - G.mean(axis=0)
        tr = jnp.sum(C * C) / X.shape[0]  # tr Sigma_emp(theta)
        d = theta.shape[0]
        return jnp.sqrt(scale * tr / d) * jnp.eye(d, dtype=theta.dtype)

    return drift, iso_factor


class NoiseFit(NamedTuple):
    """SGD's gradient noise along the top eigenvector u of Sigma_emp, whitened: ``u.xi / sqrt(u.Sigma u / B)``."""

    alpha_hill: float  # Hill estimate of the tail index of the whitened projection ("is there a power-law tail?")
    alpha_se: float
    alpha_block: float  # block-sum estimate (stable.block_tail_index), the literature's stable-fit estimator
    alpha_block_se: float
    alpha: float  # min(alpha_block, 2): the index the refined SDE uses
    scale_median: float  # median |projection| / median |unit elliptical stable coordinate at alpha| (diagnostic)
    kurtosis: float  # excess kurtosis of the projection (0 for Gaussian noise)
    n_samples: int


def _median_abs_stable(key, alpha, n=200_000):
    """Median of |one coordinate of sqrt(W) z|, the unit-time elliptical driver (scale 2^-1/2 stable)."""
    if alpha >= 2.0:
        return 0.6744897501960817  # median |N(0, 1)|
    z = stable.sample_stable(key, alpha, (n,), scale=2.0 ** -0.5)
    return float(np.median(np.abs(np.asarray(z, np.float64))))


def fit_noise(key, problem: Problem, thetas, batch_size: int, n_batches: int = 2000) -> NoiseFit:
    """Fit alpha and the scale c of the refined SDE to SGD's own gradient noise.

    thetas (m', d): points of the SGD ensemble; at each, ``n_batches`` batch gradients (``noise.batch_gradients``,
    SGD's batch law) give ``xi = g_B - g_n``, projected on the top eigenvector of ``Sigma_emp`` and whitened.
    The pooled projections give ``stable.hill_estimator`` and ``stable.block_tail_index`` (tail index; the
    refined SDE uses the block estimate, capped at 2) and, as a diagnostic, the scale that would match
    their median absolute value to the driver's.
    """
    v.key("key", key)
    thetas = v.array("thetas (m', d)", thetas, ndim=2, nonempty=True)
    B = v.positive_int("batch_size", batch_size)
    nb = v.positive_int("n_batches", n_batches, 10)
    X, Y = problem.X, problem.Y
    proj = []
    for i, th in enumerate(np.asarray(thetas)):
        G = noise.per_sample_grads(problem.loss_fn, jnp.asarray(th), X, Y)
        S = np.asarray(noise.empirical_noise_cov(G), np.float64)
        w, U = np.linalg.eigh(S)
        if not w[-1] > 0:
            continue
        u = U[:, -1]
        gb = np.asarray(noise.batch_gradients(jax.random.fold_in(key, i), G, B, nb), np.float64)
        xi = gb - np.asarray(G, np.float64).mean(axis=0)
        proj.append(xi @ u / np.sqrt(w[-1] / B))
    if not proj:
        v.fail("fit_noise needs a point with nonzero gradient noise", thetas)
    x = np.concatenate(proj)
    h = stable.hill_estimator(x)
    b = stable.block_tail_index(x)
    alpha = float(min(b.alpha, 2.0))
    c = float(np.median(np.abs(x))) / _median_abs_stable(jax.random.fold_in(key, 10**6), alpha)
    kurt = float(np.mean((x - x.mean()) ** 4) / np.var(x) ** 2 - 3.0)
    return NoiseFit(float(h.alpha), float(h.se), float(b.alpha), float(b.se), alpha, c, kurt, int(x.size))


# ---------------------------------------------------------------------------------------------
# Simulation


def simulate(key, model: str, setting: Setting, problem: Problem, n_trajectories: int, *, fit: NoiseFit | None = None,
             mesh=None, progress=False):
    """Run one model of one setting; returns its recorded parameters (r, m, d) at ``record_every`` steps.

    model: one of :data:`MODELS` (``"refined"`` needs ``fit``). Divergent trajectories raise, except for the
    refined model, whose divergent trajectories are NaN from their first non-finite record on.
    """
    v.key("key", key)
    v.one_of("model", model, set(MODELS))
    s = check_setting(setting)
    m = v.positive_int("n_trajectories", n_trajectories, 2)
    rec = np.arange(0, s.n_steps + 1, s.record_every)
    X, Y, th0, loss_fn = problem.X, problem.Y, problem.theta0, problem.loss_fn
    kw = dict(n_trajectories=m, record_steps=rec, mesh=mesh, progress=progress)
    opt = dict(eta=s.eta, batch_size=s.batch_size, n_steps=s.n_steps)
    if model in ("sgd", "sgd_floor"):
        res = sgd.run_sgd(key, loss_fn, th0, X, Y, **opt, **kw)
    elif model == "langevin":
        drift, iso = _sde_fns(s.dims)
        res = sde.run_sde(key, drift, th0, dt=s.eta, n_steps=s.n_steps, diffusion=iso, diffusion_kind="factor",
                          args=(X, Y, jnp.float32(s.eta / s.batch_size)), **kw)
    elif model == "anisotropic":
        res = sde.run_sgd_sde(key, loss_fn, th0, X, Y, order=1, **opt, **kw)
    elif model == "modified":
        res = sde.run_sgd_sde(key, loss_fn, th0, X, Y, order=2, **opt, **kw)
    else:
        if not isinstance(fit, NoiseFit):
            v.fail("the refined model must be given fit=fit_noise(...)", fit)
        # one step carries eta Sigma^(1/2) sqrt(W) z / sqrt(B): increments dt^(1/alpha) with dt = eta
        a = round(fit.alpha, 4)
        drv = None if a >= 2.0 else sde.stable_driver(a, "elliptical")
        res = sde.run_sgd_sde(key, loss_fn, th0, X, Y, order=1, noise=drv, noise_scale=s.eta ** (0.5 - 1.0 / a),
                              on_divergence="ignore", **opt, **kw)
        th = np.array(res.thetas)
        bad = res.diverged_step >= 0
        for i in np.nonzero(bad)[0]:  # NaN from the first record at or after the divergence
            th[rec >= res.diverged_step[i], i] = np.nan
        return th
    return np.asarray(res.thetas)


# ---------------------------------------------------------------------------------------------
# Observables


def observables(thetas, problem: Problem, dims, basis=None) -> dict:
    """Observables of parameter samples thetas (m, d) -> dict of (m, k) float64 arrays.

    ``product`` vec(W2 W1) (d2 d0); ``svals`` its singular values (min(d0, d2)); ``loss`` L_n (1) -- these
    three are invariant under the GL(d1) symmetry W1 -> A W1, W2 -> W2 A^-1; ``params`` theta (d);
    with ``basis = (center (d,), flat (d, kf), stiff (d, ks))`` (:func:`hessian_basis`) also ``flat`` /
    ``stiff``: the coordinates of theta - center in the flattest (symmetry orbit) and stiff Hessian
    eigendirections.
    """
    th = jnp.asarray(thetas)
    W1, W2 = jax.vmap(lambda t: models.dln_unpack(t, dims))(th)
    P = jnp.einsum("mij,mjk->mik", W2, W1)
    out = {
        "product": np.asarray(jnp.transpose(P, (0, 2, 1)).reshape(P.shape[0], -1), np.float64),
        "svals": np.asarray(jnp.linalg.svd(P, compute_uv=False), np.float64),
        "loss": np.asarray(jax.vmap(lambda t: sgd.mean_loss(problem.loss_fn, t, problem.X, problem.Y))(th),
                           np.float64)[:, None],
        "params": np.asarray(th, np.float64),
    }
    if basis is not None:
        c, F, S = basis
        dev = out["params"] - c
        out["flat"], out["stiff"] = dev @ F, dev @ S
    return out


@functools.lru_cache(maxsize=None)
def _hessians(dims):
    """jit(vmap) of dln.dln_hessian: thetas (r, d), X, Y -> (r, d, d)."""
    return jax.jit(jax.vmap(lambda t, X, Y: dln.dln_hessian(*models.dln_unpack(t, dims), X, Y), in_axes=(0, None, None)))


def hessian_basis(problem: Problem, dims, center, n_flat: int | None = None, stiff_tol: float = 1e-1):
    """Eigendirections of the Hessian at ``center`` (d,): the ``n_flat`` of smallest |eigenvalue| (default
    d1^2, the dimension of the GL(d1) orbit, flat at a minimum) and the stiff ones, eigenvalue >= stiff_tol
    lambda_max. Returns (center, F (d, n_flat), S (d, ks), eigenvalues (d,) ascending)."""
    d1 = models._dims(dims)[1]
    W1, W2 = models.dln_unpack(jnp.asarray(center, jnp.float32), dims)
    H = np.asarray(dln.dln_hessian(W1, W2, problem.X, problem.Y), np.float64)
    w, U = np.linalg.eigh((H + H.T) / 2)
    k = d1 * d1 if n_flat is None else v.positive_int("n_flat", n_flat, 1, w.size)
    flat = np.argsort(np.abs(w))[:k]
    return (np.asarray(center, np.float64), U[:, flat], U[:, w >= stiff_tol * w[-1]], w)


# ---------------------------------------------------------------------------------------------
# One setting, end to end


class SettingResult(NamedTuple):
    """Everything recorded for one setting (the results file stores these arrays)."""

    setting: Setting
    steps: np.ndarray  # recorded SGD steps (R,)
    mean_loss: dict  # model -> (R,) ensemble-mean loss curve
    snap_steps: dict  # time name -> step
    obs: dict  # time -> observable -> model -> (m, k)
    fit: NoiseFit
    eta_lam_max: np.ndarray  # eta * lambda_max(H) at the SGD ensemble mean, (R,)
    flat_ratio: dict  # time -> largest |eigenvalue| among the flat directions / lambda_max
    n_stiff: dict  # time -> number of stiff directions
    seconds: dict  # model -> wall seconds of its simulation
    n_trajectories: int
    msd_lags: np.ndarray  # lags (SGD steps) of the mean squared displacement over the second half of the run
    msd: dict  # "flat" / "stiff" -> (len(msd_lags),) SGD's mean squared displacement in those directions (end basis)
    n_diverged: int  # refined-model trajectories that diverged (NaN in its records; left out of its distances)


def run_setting(key, setting: Setting, n_trajectories: int, *, mesh=None, progress=False, fit_points: int = 8,
                on_model=None) -> SettingResult:
    """Simulate every model of :data:`MODELS` for one setting and extract the snapshots' observables.

    on_model: optional callable ``on_model(model_name)`` called after each model's run (progress reporting).
    """
    v.key("key", key)
    s = check_setting(setting)
    m = v.positive_int("n_trajectories", n_trajectories, 2)
    k_prob, k_fit, *k_models = jax.random.split(key, 2 + len(MODELS))
    prob = make_problem(k_prob, s)
    steps = np.arange(0, s.n_steps + 1, s.record_every)
    paths, seconds = {}, {}
    full_loss = jax.jit(jax.vmap(jax.vmap(lambda t: sgd.mean_loss(prob.loss_fn, t, prob.X, prob.Y))))
    fit = None
    for name, k in zip(MODELS, k_models):
        if name == "refined":
            mid = paths["sgd"][len(steps) // 2]
            fit = fit_noise(k_fit, prob, mid[: min(fit_points, m)], s.batch_size)
        t0 = time.perf_counter()
        paths[name] = simulate(k, name, s, prob, m, fit=fit, mesh=mesh, progress=progress)
        seconds[name] = time.perf_counter() - t0
        if on_model is not None:
            on_model(name)
    mean_loss = {name: np.nanmean(np.asarray(full_loss(p), np.float64), axis=1) for name, p in paths.items()}
    L = mean_loss["sgd"]
    drop = L[0] - L[-1]
    snap = {}
    for tname, f in zip(TIMES[:2], _TIME_FRACTIONS):
        snap[tname] = int(np.argmax(L[0] - L >= f * drop)) if drop > 0 else len(steps) // 2
    snap["end"] = len(steps) - 1
    if snap["mid"] - snap["early"] < 2:  # a loss that falls at once (large start): mid halfway to the end
        snap["mid"] = (snap["early"] + snap["end"]) // 2
    # eta * lambda_max along SGD's path (the ensemble mean point), for the edge-of-stability question
    centers = paths["sgd"].mean(axis=1)
    lam = np.linalg.eigvalsh(np.asarray(_hessians(s.dims)(jnp.asarray(centers, jnp.float32), prob.X, prob.Y),
                                        np.float64))[:, -1]
    obs, flat_ratio, n_stiff = {}, {}, {}
    for tname, j in snap.items():
        # the SGD trajectory nearest the ensemble mean: a point of the dynamics (the mean of points spread
        # along a curved set of minima is off that set, where the Hessian has spurious negative directions)
        pts = paths["sgd"][j]
        medoid = pts[np.argmin(np.sum((pts - centers[j]) ** 2, axis=1))]
        basis = hessian_basis(prob, s.dims, medoid)
        w = basis[3]
        flat_ratio[tname] = float(np.sort(np.abs(w))[basis[1].shape[1] - 1] / w[-1])
        n_stiff[tname] = basis[2].shape[1]
        obs[tname] = {}
        per_model = {name: observables(paths[name][j], prob, s.dims, basis[:3]) for name in MODELS}
        for o in OBSERVABLES:
            obs[tname][o] = {name: per_model[name][o] for name in MODELS}
        if tname == "end":  # mean squared displacement of SGD along the end's flat / stiff directions
            half = paths["sgd"][len(steps) // 2:]
            lags = np.unique(np.geomspace(1, len(half) - 1, 12).astype(int))
            msd = {}
            for bname, U in (("flat", basis[1]), ("stiff", basis[2])):
                q = half @ U  # (R', m, k)
                msd[bname] = np.array([np.mean(np.sum((q[l:] - q[:-l]) ** 2, axis=-1)) for l in lags])
    return SettingResult(s, steps, mean_loss, {t: int(steps[j]) for t, j in snap.items()}, obs, fit,
                         s.eta * lam, flat_ratio, n_stiff, seconds, m, lags * s.record_every, msd,
                         int(np.sum(np.any(np.isnan(paths["refined"][:, :, 0]), axis=0))))


# ---------------------------------------------------------------------------------------------
# Comparison: distances, floors, bootstrap


PAIRS = (("langevin", "refined"), ("anisotropic", "refined"), ("langevin", "anisotropic"),
         ("anisotropic", "modified"))  # (a, b): MMD^2(sgd, a) - MMD^2(sgd, b) > 0 means b is closer to SGD


class Comparison(NamedTuple):
    """Distances of each model in :data:`COMPARED` to SGD, for one setting, time and observable."""

    mmd2: dict  # model -> unbiased MMD^2 to sgd (one bandwidth per observable, see compare)
    mmd2_se: dict  # bootstrap s.e.
    diff: dict  # "a-b" -> MMD^2(sgd, a) - MMD^2(sgd, b) for (a, b) in PAIRS
    diff_se: dict  # bootstrap s.e. of the difference
    diff_ci: dict  # 95 % percentile interval of the difference
    w2: dict  # model -> W2 to sgd (sgd_floor: the floor)
    bandwidth: float


def _mmd_stats(blocks, W, keep=None):
    """Unbiased MMD^2 from Gram blocks (K_aa, K_bb, K_ab) (m, m) for each row of resampling counts
    W (R, m) (a row of ones: the sample itself); keep (m,) bool: the rows of sample b that count (the
    others -- diverged trajectories -- get weight 0). -> (R,).

    Within-sample sums drop the pairs that repeat one original index (the diagonal of the resampled Gram
    matrix, with multiplicity): for a row of ones this is exactly ``distances.mmd2``; on a bootstrap
    resample it is the U-statistic over distinct original indices, not the V-type statistic that
    ``stats.bootstrap`` of ``distances.mmd2`` would compute (which counts repeated points as pairs at
    distance 0 and is biased by O(1/m)); tests/test_experiment.py checks both against an explicit loop."""
    Kaa, Kbb, Kab = blocks
    Wb = W if keep is None else W * keep
    n_off = lambda W_: W_.sum(axis=1) ** 2 - np.sum(W_ * W_, axis=1)
    within = lambda K_, W_: (np.einsum("ri,ri->r", W_ @ K_, W_) - (W_ * W_) @ np.diag(K_)) / n_off(W_)
    return within(Kaa, W) + within(Kbb, Wb) - 2 * np.einsum("ri,ri->r", W @ Kab, Wb) / (W.sum(axis=1) * Wb.sum(axis=1))


def compare(key, samples: dict, n_boot: int = 200, w2_max: int = 512) -> Comparison:
    """Distances to ``samples["sgd"]`` of every model in :data:`COMPARED` for one observable.

    samples: model -> (m, k), all with the same m; rows with NaN (a model's diverged trajectories) are left
    out of that model's distances (and of its W2). The Gaussian-kernel bandwidth is the median heuristic of
    ``sgd`` pooled with ``sgd_floor`` (one bandwidth for all models, so their MMD^2 are comparable).
    The bootstrap resamples trajectory indices jointly, as ``stats.bootstrap`` does (the ensembles are
    independent, so the tuples (x_i, y_i, ...) are i.i.d.), vectorised over replicates through resampling
    counts; it gives the s.e. and 95 % percentile interval of each MMD^2 and of each difference in :data:`PAIRS`.
    W2 (exact) on the first ``w2_max`` trajectories of each ensemble.
    """
    v.key("key", key)
    for name in ("sgd",) + COMPARED:
        if name not in samples:
            v.fail(f"samples must hold the model {name!r}", sorted(samples))
    x = np.asarray(samples["sgd"], np.float64)
    m = x.shape[0]
    if any(np.shape(samples[name]) != x.shape for name in COMPARED):
        v.fail(f"every model's samples must have the shape of sgd's {x.shape}", {k: np.shape(a) for k, a in samples.items()})
    h = distances.median_bandwidth(x, samples["sgd_floor"])
    keep = {name: np.all(np.isfinite(np.asarray(samples[name], np.float64)), axis=1) for name in COMPARED}
    if not np.all(np.isfinite(x)) or not all(k_.sum() >= 2 for k_ in keep.values()):
        v.fail("sgd's samples must be finite and every model must keep >= 2 finite rows", {k_: int(a.sum()) for k_, a in keep.items()})
    Z = np.concatenate([x] + [np.nan_to_num(np.asarray(samples[name], np.float64)) for name in COMPARED])
    K = np.exp(-distances._sqdist(Z, Z) / (2 * h * h))
    Kxx = K[:m, :m]
    blocks = {name: (Kxx, K[m * (1 + i):m * (2 + i), m * (1 + i):m * (2 + i)], K[:m, m * (1 + i):m * (2 + i)])
              for i, name in enumerate(COMPARED)}

    def stat(W):  # (R, m) counts -> (R, len(COMPARED) + len(PAIRS))
        d = {name: _mmd_stats(blocks[name], W, keep[name]) for name in COMPARED}
        return np.stack([d[name] for name in COMPARED] + [d[a] - d[b] for a, b in PAIRS], axis=1)

    # the resampling of stats.bootstrap (uniform indices from the key), vectorised over the replicates
    idx = np.asarray(jax.random.randint(key, (n_boot, m), 0, m))
    W = np.zeros((n_boot, m))
    np.add.at(W, (np.arange(n_boot)[:, None], idx), 1.0)
    reps = stat(W)
    est = stat(np.ones((1, m)))[0]
    se = reps.std(axis=0, ddof=1)
    lo, hi = np.quantile(reps, [0.025, 0.975], axis=0)
    nm = len(COMPARED)
    sub = slice(0, min(m, w2_max))
    w2 = {name: distances.w2(x[sub], np.asarray(samples[name])[sub][keep[name][sub]]) for name in COMPARED}
    keys = [f"{a}-{b}" for a, b in PAIRS]
    return Comparison(dict(zip(COMPARED, map(float, est[:nm]))), dict(zip(COMPARED, map(float, se[:nm]))),
                      dict(zip(keys, map(float, est[nm:]))), dict(zip(keys, map(float, se[nm:]))),
                      {k: (float(l), float(u)) for k, l, u in zip(keys, lo[nm:], hi[nm:])}, w2, float(h))


# ---------------------------------------------------------------------------------------------
# The grid, the results file, the command line


def run_grid(key, settings, n_trajectories: int, *, mesh=None, progress=False, n_boot: int = 200,
             observables_compared=("product", "svals", "loss", "flat", "stiff", "params")) -> dict:
    """Run every setting and compare every model at every snapshot time and observable.

    progress: False, True (one ``tqdm`` bar over settings x (models + comparisons)) or ``progress(done, total)``.
    Returns ``{"results": [SettingResult], "comparisons": {(setting, time, observable): Comparison}}``.
    """
    v.key("key", key)
    settings = [check_setting(s) for s in settings]
    if not settings:
        v.fail("settings must be a non-empty list of Setting", settings)
    for o in observables_compared:
        v.one_of("observable", o, set(OBSERVABLES))
    total = len(settings) * (len(MODELS) + 1)  # each model's run, then the setting's comparisons
    bar, done = None, [0]
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="experiment", unit="run")

    def tick(name):
        done[0] += 1
        if bar is not None:
            bar.set_postfix_str(name)
            bar.update(1)
        elif callable(progress) and progress is not False:
            progress(done[0], total)

    results, comps = [], {}
    try:
        for i, s in enumerate(settings):
            r = run_setting(jax.random.fold_in(key, i), s, n_trajectories, mesh=mesh, on_model=tick)
            results.append(r)
            for j, t in enumerate(TIMES):
                for l, o in enumerate(observables_compared):
                    comps[(s.name, t, o)] = compare(jax.random.fold_in(key, 10**6 + 1000 * i + 100 * j + l),
                                                    r.obs[t][o], n_boot=n_boot)
            tick("compare")
    finally:
        if bar is not None:
            bar.close()
    return {"results": results, "comparisons": comps}


def save_results(path, grid: dict, meta: dict | None = None) -> None:
    """Write :func:`run_grid`'s output to ``path`` (.npz: arrays plus one JSON entry ``meta``)."""
    arrays, info = {}, {"meta": meta or {}, "settings": [], "comparisons": {}}
    for r in grid["results"]:
        s = r.setting
        info["settings"].append(dict(setting=s._asdict(), snap_steps=r.snap_steps, fit=r.fit._asdict(), n_diverged=r.n_diverged,
                                     flat_ratio=r.flat_ratio, n_stiff=r.n_stiff, seconds=r.seconds,
                                     n_trajectories=r.n_trajectories))
        arrays[f"{s.name}/steps"] = r.steps
        arrays[f"{s.name}/msd_lags"] = r.msd_lags
        for bname, a in r.msd.items():
            arrays[f"{s.name}/msd/{bname}"] = a
        arrays[f"{s.name}/eta_lam_max"] = r.eta_lam_max
        for mname, curve in r.mean_loss.items():
            arrays[f"{s.name}/mean_loss/{mname}"] = curve
        for t, per_o in r.obs.items():
            for o, per_m in per_o.items():
                for mname, a in per_m.items():
                    arrays[f"{s.name}/obs/{t}/{o}/{mname}"] = a.astype(np.float32)
    for (sname, t, o), c in grid["comparisons"].items():
        info["comparisons"][f"{sname}/{t}/{o}"] = c._asdict()
    np.savez_compressed(path, meta=np.array(json.dumps(info)), **arrays)


def load_results(path) -> dict:
    """Read a results file: ``{"info": dict (settings, comparisons, meta), "arrays": {name: array}}``."""
    with np.load(path, allow_pickle=False) as f:
        info = json.loads(str(f["meta"]))
        arrays = {k: f[k] for k in f.files if k != "meta"}
    return {"info": info, "arrays": arrays}


def summary_rows(grid: dict, observable: str = "product"):
    """Rows (setting, time, model, MMD^2, s.e., W2, W2 floor) of the comparisons for one observable."""
    rows = []
    for (sname, t, o), c in grid["comparisons"].items():
        if o != observable:
            continue
        for mname in COMPARED:
            rows.append((sname, t, mname, c.mmd2[mname], c.mmd2_se[mname], c.w2[mname], c.w2["sgd_floor"]))
    return rows


def main(argv=None) -> int:
    """Command line: ``python -m sgdnotes.experiment --trajectories 2560 --out results.npz``."""
    p = argparse.ArgumentParser(prog="python -m sgdnotes.experiment",
                                description="SGD vs Langevin, anisotropic, refined (alpha-stable) SDEs and the modified "
                                            "equation on two-layer linear networks (the book's chapter 9 grid).")
    p.add_argument("--trajectories", type=int, default=256, help="trajectories per model and setting (default 256)")
    p.add_argument("--width", type=int, default=4, help="hidden width d1 (default 4)")
    p.add_argument("--steps", type=int, default=None, help="SGD steps per run (default: the chapter's 1000)")
    p.add_argument("--settings", default="all",
                   help="comma-separated setting names (small-gaussian, small-student_t, large-gaussian, "
                        "large-student_t) or 'all'")
    p.add_argument("--boot", type=int, default=200, help="bootstrap replicates (default 200)")
    p.add_argument("--seed", type=int, default=9, help="seed of jax.random.key (default 9, the chapter's)")
    p.add_argument("--out", default="experiment_results.npz", help="results file (.npz)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    over = {} if a.steps is None else {"n_steps": a.steps}
    grid_settings = default_grid(a.width, **over)
    if a.settings != "all":
        want = a.settings.split(",")
        unknown = set(want) - {s.name for s in grid_settings}
        if unknown:
            p.error(f"unknown settings {sorted(unknown)}")
        grid_settings = [s for s in grid_settings if s.name in want]
    t0 = time.perf_counter()
    grid = run_grid(jax.random.key(a.seed), grid_settings, a.trajectories, progress=not a.no_progress, n_boot=a.boot)
    wall = time.perf_counter() - t0
    meta = dict(argv=sys.argv[1:] if argv is None else list(argv), wall_seconds=wall,
                devices=[str(d) for d in jax.devices()], jax=jax.__version__)
    save_results(a.out, grid, meta)
    print(f"{len(grid_settings)} settings x {len(MODELS)} models x {a.trajectories} trajectories in {wall:.1f} s "
          f"on {len(jax.devices())} device(s) -> {a.out}")
    print(f"{'setting':>16} {'time':>10} {'model':>12} {'MMD2(P)':>10} {'s.e.':>8} {'W2(P)':>8} {'floor':>8}")
    for row in summary_rows(grid):
        print(f"{row[0]:>16} {row[1]:>10} {row[2]:>12} {row[3]:>10.4f} {row[4]:>8.4f} {row[5]:>8.4f} {row[6]:>8.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
