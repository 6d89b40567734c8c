"""One SDE ensemble simulator for the whole book (introduced in chapter 2).

Euler--Maruyama for ``d theta = b(theta) dt + G(theta) dZ`` over m trajectories at once, on the same
step loop as the SGD simulator (:func:`sgdnotes.ensemble.scan_ensemble`). The diffusion is given as

* a scalar ``sigma``: ``G = sigma I`` (isotropic);
* a constant matrix ``G`` (d, k);
* a callable ``cov_fn(theta (d,)) -> (d, d)``: a state-dependent covariance ``Sigma(theta)``, with
  ``G = Sigma^{1/2}`` taken by a symmetric eigendecomposition (negative round-off eigenvalues are
  clipped to 0, so singular ``Sigma`` is fine).

The driving increments are pluggable: ``noise(key, shape, dt) -> dZ``; the default is Brownian,
``sqrt(dt) N(0, I)``; an alpha-stable driver scales as ``dt^(1/alpha)``. Trajectory i's increment at
step k is drawn from ``fold_in(trajectory_keys(key, m)[i], k)``: like the SGD simulator's batches, a
pure function of (trajectory key, step). Time is ``t = k * dt`` (``dt = eta`` for models of SGD).

Built-in SDE models of SGD (chapter 2): :func:`run_sgd_sde` (first-order SDE and the stochastic
modified equation, Gaussian or SGD-minibatch driving noise for coupled runs, called like
``run_sgd``); :func:`minibatch_driver`; exact moments on linear regression :func:`linreg_moments`
and the mean-square stability radius :func:`linreg_ms_radius`.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v
from .ensemble import (
    check_initial,
    EnsembleResult,
    check_record_steps,
    check_stats,
    divergence_message,
    finish,
    report_divergence,
    scan_ensemble,
    segments,
)
from .noise import empirical_noise_cov
from .sgd import batch_indices, mean_loss, trajectory_keys


def brownian_increments(key, shape, dt):
    """Brownian increments ``sqrt(dt) N(0, I)`` of the given shape."""
    return jnp.sqrt(dt) * jax.random.normal(key, shape)


def sqrt_psd(S):
    """Symmetric square root of a PSD matrix S (d, d) -> (d, d); eigenvalues below 0 are clipped."""
    w, U = jnp.linalg.eigh((S + S.T) / 2)
    return (U * jnp.sqrt(jnp.clip(w, 0.0))) @ U.T


@partial(jax.jit, static_argnames=("drift", "cov_fn", "noise", "kind", "k_noise", "record_params", "observe", "stats"))
def _simulate(keys, theta0, dt, G, seg_lengths, tail, burn_in, args, *,
              drift, cov_fn, noise, kind, k_noise, record_params, observe, stats):
    m, d = theta0.shape

    def step(k, theta, aux):
        if getattr(noise, "uses_step", False):  # e.g. minibatch_driver: noise(trajectory_key, shape, dt, step)
            dZ = jax.vmap(lambda kk: noise(kk, (k_noise,), dt, k))(keys).astype(theta.dtype)
        else:
            dZ = jax.vmap(lambda kk: noise(jax.random.fold_in(kk, k), (k_noise,), dt))(keys).astype(theta.dtype)
        b = jax.vmap(lambda th: drift(th, *args))(theta)
        if kind == "scalar":
            diff = G * dZ
        elif kind == "matrix":
            diff = dZ @ G.T
        elif kind == "factor":
            diff = jax.vmap(lambda th, z: cov_fn(th, *args) @ z)(theta, dZ)
        else:
            diff = jax.vmap(lambda th, z: sqrt_psd(cov_fn(th, *args)) @ z)(theta, dZ)
        return theta + b * dt + diff, aux

    obs = jax.vmap(lambda th: observe(th, *args)) if observe is not None else None
    return scan_ensemble(step, theta0, jnp.zeros((m, 0), theta0.dtype), seg_lengths, tail, burn_in,
                         stats=stats, record_params=record_params, observe=obs)


def run_sde(
    key,
    drift: Callable,
    theta0,
    *,
    dt: float,
    n_steps: int,
    diffusion=0.0,
    noise: Callable = brownian_increments,
    n_trajectories: int | None = None,
    record_steps=None,
    record_params: bool = True,
    observe: Callable | None = None,
    stats: str | None = None,
    burn_in: int = 0,
    on_divergence: str = "raise",
    lam_max: float | None = None,
    args: tuple = (),
    diffusion_kind: str = "cov",
) -> EnsembleResult:
    """Euler--Maruyama ensemble for ``d theta = drift(theta) dt + G(theta) dZ``.

    Args:
        key: JAX PRNG key.
        drift: ``drift(theta (d,)) -> (d,)``, e.g. ``lambda th: -grad L(th)``. Keep it a stable object
            (module-level function or stored partial) so compiled code is reused.
        theta0: initial point (d,) shared by all trajectories, or (m, d).
        dt: step size > 0 (``dt = eta`` when time is measured as t = eta k).
        n_steps: number of Euler--Maruyama steps K.
        diffusion: scalar sigma (G = sigma I), constant matrix G (d, k), or ``cov_fn(theta) -> (d, d)``
            (G = Sigma^{1/2}, state-dependent).
        noise: ``noise(key, shape, dt) -> increments``; default Brownian. A callable with attribute
            ``uses_step = True`` is called as ``noise(trajectory_key, shape, dt, step)`` instead (used by
            :func:`minibatch_driver` to reproduce SGD's batches).
        record_steps, record_params, stats, burn_in, on_divergence: as in :func:`sgdnotes.sgd.run_sgd`.
        observe: optional ``observe(theta (d,), *args) -> scalar`` recorded at ``record_steps`` (in ``losses``).
        lam_max: largest eigenvalue of -d(drift)/d(theta) for the divergence hint (estimated at theta0).
        args: extra arrays handed to the callables as ``drift(theta, *args)`` and ``cov_fn(theta, *args)``
            (traced, so new values -- another data set, another eta -- reuse the compiled code).
        diffusion_kind: how a callable ``diffusion`` is read: ``"cov"`` (default) returns the covariance
            Sigma(theta) (d, d) and G = Sigma^{1/2}; ``"factor"`` returns G(theta) (d, k) itself, driven by
            k-dimensional increments (no square root; e.g. G = centred per-sample gradients^T).

    Returns:
        :class:`sgdnotes.ensemble.EnsembleResult` (``final_aux`` is empty, shape (m, 0)).
    """
    th0, m = check_initial(theta0, n_trajectories)
    d = th0.shape[-1]
    dt = v.positive_float("dt (time step)", dt)
    K = v.positive_int("n_steps", n_steps, 0)
    burn_in = check_stats(stats, burn_in, K)
    v.one_of("on_divergence", on_divergence, {"raise", "warn", "ignore"})
    v.one_of("diffusion_kind", diffusion_kind, {"cov", "factor"})
    if not isinstance(args, tuple):
        v.fail("args must be a tuple of arrays passed as drift(theta, *args)", args)
    steps = check_record_steps(record_steps, K)

    if not callable(drift):
        v.fail("drift must be a callable drift(theta) -> (d,)", drift)
    try:
        out = jax.eval_shape(drift, th0[0], *args)
    except Exception as exc:
        v.fail(f"drift(theta) must accept theta of shape ({d},) ({type(exc).__name__}: "
               f"{str(exc).splitlines()[0][:200]})", theta0)
    if out.shape != (d,):
        v.fail(f"drift(theta) must return shape ({d},)", out)

    cov_fn = None
    if callable(diffusion):
        G = jnp.zeros((), th0.dtype)
        what = "factor G(theta)" if diffusion_kind == "factor" else "cov_fn(theta)"
        try:
            cs = jax.eval_shape(diffusion, th0[0], *args)
        except Exception as exc:
            v.fail(f"diffusion {what} must accept theta of shape ({d},) ({type(exc).__name__})", theta0)
        if diffusion_kind == "factor":
            if len(cs.shape) != 2 or cs.shape[0] != d:
                v.fail(f"diffusion factor G(theta) must return a ({d}, k) matrix", cs)
            kind, cov_fn, k_noise = "factor", diffusion, cs.shape[1]
        else:
            if cs.shape != (d, d):
                v.fail(f"diffusion cov_fn(theta) must return a ({d}, {d}) covariance", cs)
            kind, cov_fn, k_noise = "state", diffusion, d
    elif np.ndim(diffusion) == 0:
        sigma = float(diffusion)
        if not np.isfinite(sigma) or sigma < 0:
            v.fail("a scalar diffusion sigma must be finite and >= 0", diffusion)
        kind, G, k_noise = "scalar", jnp.asarray(sigma, th0.dtype), d
    else:
        G = jnp.asarray(v.array("diffusion matrix G", diffusion, ndim=2), th0.dtype)
        if G.shape[0] != d:
            v.fail(f"diffusion matrix G must have shape ({d}, k)", diffusion)
        kind, k_noise = "matrix", G.shape[1]

    seg, tail = segments(steps, K)
    raw = _simulate(trajectory_keys(key, m), th0, jnp.asarray(dt, th0.dtype), G, seg, tail, jnp.int32(burn_in),
                    tuple(args), drift=drift, cov_fn=cov_fn, noise=noise, kind=kind, k_noise=k_noise,
                    record_params=record_params, observe=observe, stats=stats)
    result = finish(steps, K, burn_in, stats, raw)

    def top_eig():
        if d > 400:
            return None
        J = jax.jacobian(lambda th: drift(th, *args))(th0[0])
        return float(np.max(np.real(np.linalg.eigvals(-np.asarray(J)))))

    report_divergence(result, on_divergence, lambda: divergence_message(
        "SDE (Euler-Maruyama)", result.diverged_step, dt, lam_max, top_eig, step_name="dt"))
    return result


# ---------------------------------------------------------------------------------------------
# Built-in SDE models of SGD (chapter 2)

DRIVERS = ("gaussian", "minibatch")


@lru_cache(maxsize=None)
def _sgd_model_fns(loss_fn, order: int):
    """Stable (cached) drift and diffusion callables of the SDE models of SGD for one per-sample loss.

    drift(theta, X, Y, eta, scale) -> (d,); cov(theta, X, Y, eta, scale) -> (d, d) = scale * Sigma_emp(theta);
    factor(theta, X, Y, eta, scale) -> (d, n) = centred per-sample gradients^T.
    """
    grad_L = jax.grad(lambda th, X, Y: mean_loss(loss_fn, th, X, Y))
    per_sample = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0, 0))

    def drift(theta, X, Y, eta, scale):
        g = grad_L(theta, X, Y)
        if order == 1:
            return -g
        # grad of (eta/4) ||grad L||^2 = (eta/2) H grad L, with H grad L a Hessian-vector product
        _, Hg = jax.jvp(lambda th: grad_L(th, X, Y), (theta,), (g,))
        return -(g + 0.5 * eta * Hg)

    def centred(theta, X, Y):
        G = per_sample(theta, X, Y)
        return G - G.mean(axis=0)

    def cov(theta, X, Y, eta, scale):
        return scale * empirical_noise_cov(per_sample(theta, X, Y))

    def factor(theta, X, Y, eta, scale):
        return centred(theta, X, Y).T

    return drift, cov, factor


class _MinibatchDriver:
    """Driving increments from SGD's own batches; see :func:`minibatch_driver`."""

    uses_step = True  # run_sde calls noise(trajectory_key, shape, dt, step)

    def __init__(self, n, batch_size, sampling):
        self.n, self.B, self.sampling = n, batch_size, sampling

    def __call__(self, key, shape, dt, step):
        idx = batch_indices(key, step, self.n, self.B, self.sampling)
        counts = jnp.zeros((self.n,), jnp.float32).at[idx].add(1.0)
        return -dt * counts / self.B


@lru_cache(maxsize=None)
def minibatch_driver(n: int, batch_size: int, sampling: str = "with_replacement"):
    """Driving increments made of SGD's own minibatches (chapter 2): ``noise(key, (n,), dt, step) -> (n,)``.

    Returns ``-dt * c / B`` where ``c`` (n,) counts how often each sample is in the batch
    ``sgdnotes.sgd.batch_indices(key, step, n, B, sampling)`` -- the batch that ``run_sgd`` uses at
    step k for the trajectory with key ``key`` (the driver has ``uses_step = True``, so
    :func:`run_sde` passes the trajectory key and the step instead of ``fold_in(key, step)``). With the
    factor ``G(theta) = C(theta)^T`` (centred per-sample gradients, d x n) the increment
    ``G dZ = dt * xi_k(theta)`` is exactly SGD's gradient noise ``xi_k = g_n - g_{B_k}``.
    """
    n = v.positive_int("n (number of samples)", n)
    v.one_of("sampling", sampling, {"with_replacement", "without_replacement", "epoch"})
    B = v.positive_int("batch_size", batch_size, 1, None if sampling == "with_replacement" else n)
    return _MinibatchDriver(n, B, sampling)


def run_sgd_sde(
    key,
    loss_fn: Callable,
    theta0,
    X,
    Y,
    *,
    eta: float,
    batch_size: int,
    n_steps: int,
    order: int = 1,
    driver: str = "gaussian",
    substeps: int = 1,
    sampling: str = "with_replacement",
    noise: Callable | None = None,
    n_trajectories: int | None = None,
    record_steps=None,
    record_params: bool = True,
    record_loss: bool = False,
    stats: str | None = None,
    burn_in: int = 0,
    on_divergence: str = "raise",
) -> EnsembleResult:
    """Ensemble of an SDE model of SGD on ``L_n = mean_i loss_fn(theta, x_i, y_i)`` (chapter 2).

    Called like :func:`sgdnotes.sgd.run_sgd`. Time is ``t = eta k`` (k counts SGD steps); the model is

    * ``order=1``: ``d theta = -grad L_n dt + sqrt(eta/B Sigma_emp(theta)) dW`` (first-order SDE);
    * ``order=2``: ``d theta = -grad(L_n + eta/4 ||grad L_n||^2) dt + sqrt(eta/B Sigma_emp(theta)) dW``
      (second-order stochastic modified equation of Li, Tai & E 2017),

    with ``Sigma_emp(theta)`` the 1/n covariance of the per-sample gradients (``sgdnotes.noise``); for
    ``sampling`` without replacement or by epochs it is multiplied by ``(n - B)/(n - 1)`` (the one-step
    covariance; the epoch anti-correlation is not modelled).

    Drivers: ``"gaussian"``: Brownian increments (or ``noise``, any ``noise(key, shape, dt)``, e.g. an
    alpha-stable driver), ``G = (eta/B Sigma)^{1/2}`` by eigendecomposition (singular Sigma is fine),
    Euler--Maruyama with ``dt = eta/substeps``. ``"minibatch"``: the increments are SGD's own gradient
    noise xi_k from the batches that :func:`sgdnotes.sgd.run_sgd` draws with the same key (see
    :func:`minibatch_driver`; needs ``substeps=1``; any ``sampling``): with ``order=1`` the scheme *is* SGD (same key ->
    the same path up to rounding), with ``order=2`` it is SGD with the modified drift -- a pathwise
    coupling of SGD and the modified equation.

    Returns an :class:`~sgdnotes.ensemble.EnsembleResult` whose ``steps`` count SGD steps (EM steps /
    substeps); ``losses`` holds ``L_n`` if ``record_loss``.
    """
    X = v.array("X", X, ndim=2)
    Y = v.array("Y", Y, ndim=2)
    v.same_rows(X, Y)
    n = X.shape[0]
    eta = v.positive_float("eta (learning rate)", eta)
    v.one_of("sampling", sampling, {"with_replacement", "without_replacement", "epoch"})
    B = v.positive_int("batch_size", batch_size, 1, None if sampling == "with_replacement" else n)
    K = v.positive_int("n_steps", n_steps, 0)
    if order not in (1, 2) or isinstance(order, bool):
        v.fail("order must be 1 (first-order SDE) or 2 (stochastic modified equation)", order)
    v.one_of("driver", driver, set(DRIVERS))
    M = v.positive_int("substeps", substeps, 1)
    if driver == "minibatch" and (M != 1 or noise is not None):
        v.fail("the minibatch driver uses SGD's own batches: it needs substeps=1 and noise=None", substeps)
    if noise is not None and not callable(noise):
        v.fail("noise must be a callable noise(key, shape, dt) -> increments", noise)
    if not callable(loss_fn):
        v.fail("loss_fn must be a callable loss_fn(theta, x, y) -> scalar", loss_fn)
    theta0 = v.array("theta0", theta0)
    if theta0.ndim not in (1, 2):
        v.fail("theta0 must have shape (d,) or (m, d)", theta0)
    try:
        out = jax.eval_shape(loss_fn, jnp.asarray(theta0).reshape(-1, theta0.shape[-1])[0], X[0], Y[0])
    except Exception as exc:
        v.fail(f"loss_fn(theta, x, y) must accept theta {theta0.shape[-1:]}, x {X.shape[1:]}, y {Y.shape[1:]} "
               f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", theta0)
    if out.shape != ():
        v.fail("loss_fn(theta, x, y) must return a scalar", out)
    steps = check_record_steps(record_steps, K)
    burn_in = check_stats(stats, burn_in, K)

    fpc = 1.0 if sampling == "with_replacement" else (n - B) / max(n - 1, 1)
    drift, cov, factor = _sgd_model_fns(loss_fn, order)
    dtype = jnp.result_type(jnp.asarray(theta0).dtype, jnp.float32)
    args = (jnp.asarray(X, dtype), jnp.asarray(Y, dtype), jnp.asarray(eta, dtype), jnp.asarray(eta * fpc / B, dtype))
    if driver == "gaussian":
        kw = dict(diffusion=cov, diffusion_kind="cov", noise=brownian_increments if noise is None else noise)
    else:
        kw = dict(diffusion=factor, diffusion_kind="factor", noise=minibatch_driver(n, B, sampling))
    observe = _loss_observer(loss_fn) if record_loss else None
    res = run_sde(key, drift, theta0, dt=eta / M, n_steps=K * M, n_trajectories=n_trajectories,
                  record_steps=steps * M, record_params=record_params, observe=observe, stats=stats,
                  burn_in=burn_in * M, on_divergence=on_divergence, args=args, **kw)
    return res._replace(steps=steps, diverged_step=np.where(res.diverged_step >= 0,
                                                            -(-res.diverged_step // M), -1))


@lru_cache(maxsize=None)
def _loss_observer(loss_fn):
    """observe(theta, X, Y, eta, scale) -> L_n(theta) (stable object per loss_fn)."""
    return lambda theta, X, Y, eta, scale: mean_loss(loss_fn, theta, X, Y)


# ---------------------------------------------------------------------------------------------
# Exact first and second moments on linear regression (chapter 2)

MODELS = ("sgd", "sde", "sme")


def _linreg_moment_ops(X, Y, eta, B, f, model):
    """Linear maps of the exact moment recursions of a model on linear regression, in centred form.

    With ``delta = theta - theta_n`` (``theta_n`` the least-squares minimiser), ``e = X theta_n - y``
    (residuals at theta_n, ``X^T e = 0``), ``A_i = x_i x_i^T - H``, the centred per-sample gradient is
    ``A_i delta + e_i x_i``, so for ``E delta = m`` and ``Cov delta = C``

        E[Sigma_emp(theta)] = (1/n) sum_i [A_i (C + m m^T) A_i^T + e_i (A_i m x_i^T + x_i m^T A_i^T)
                              + e_i^2 x_i x_i^T]

    -- a sum of centred terms, with no cancellation against the mean. Returns ``(theta_n, drift,
    noise_C, noise_m, noise_0, scale)`` with ``drift`` (d, d) the linear drift of the mean of delta,
    ``noise_C(S) = (1/n) sum_i A_i S A_i^T`` and the other two pieces of E[Sigma_emp]; ``scale`` multiplies
    E[Sigma_emp] in the covariance update (``eta^2 f/B`` per SGD step, ``eta f/B`` per unit time).
    """
    n, d = X.shape
    theta_n = np.linalg.lstsq(X, Y[:, 0], rcond=None)[0]
    e = X @ theta_n - Y[:, 0]  # (n,)
    H = X.T @ X / n
    A = np.einsum("ia,ib->iab", X, X) - H  # (n, d, d), symmetric

    def noise_C(S):  # (1/n) sum_i A_i S A_i
        return np.einsum("iab,bc,icd->ad", A, S, A) / n

    def noise_m(m):  # (1/n) sum_i e_i (A_i m x_i^T + x_i m^T A_i)
        u = np.einsum("i,iab,b->ia", e, A, m)  # e_i A_i m, (n, d)
        P = u.T @ X / n
        return P + P.T

    noise_0 = (X * (e**2)[:, None]).T @ X / n  # (1/n) sum_i e_i^2 x_i x_i^T
    drift = H if model != "sme" else (np.eye(d) + 0.5 * eta * H) @ H  # d m / dt = -drift m
    scale = eta**2 * f / B if model == "sgd" else eta * f / B
    return theta_n, drift, noise_C, noise_m, noise_0, scale


def _covariance_operator(d, eta, model, drift, noise_C, scale):
    """Matrix (d*d, d*d) of the homogeneous part of the covariance update: one SGD step (``"sgd"``)
    or the generator per unit time (``"sde"``, ``"sme"``)."""
    basis = np.eye(d * d).reshape(d * d, d, d)
    if model == "sgd":
        P = np.eye(d) - eta * drift
        return np.stack([(P @ E @ P.T + scale * noise_C(E)).ravel() for E in basis], axis=1)
    return np.stack([(-drift @ E - E @ drift.T + scale * noise_C(E)).ravel() for E in basis], axis=1)


def linreg_moment_growth(X, *, eta: float, batch_size: int, model: str = "sgd",
                         sampling: str = "with_replacement") -> float:
    """Growth factor per SGD step of a model's covariance on linear regression (mean-square stability).

    ``"sgd"``: the spectral radius of SGD's second-moment map (equal to :func:`linreg_ms_radius`);
    ``"sde"`` / ``"sme"``: ``exp(eta * a)`` with ``a`` the spectral abscissa of the model's
    second-moment generator (time ``t = eta k``). The model's covariance stays bounded iff the growth
    factor is < 1; at >= 1 it diverges and :func:`linreg_moments` refuses. X (n, d) -> float.
    """
    X = np.asarray(v.array("X", X, ndim=2), dtype=np.float64)
    n, d = X.shape
    eta = v.positive_float("eta (learning rate)", eta)
    v.one_of("sampling", sampling, {"with_replacement", "without_replacement"})
    B = v.positive_int("batch_size", batch_size, 1, None if sampling == "with_replacement" else n)
    v.one_of("model", model, set(MODELS))
    f = 1.0 if sampling == "with_replacement" else (n - B) / max(n - 1, 1)
    return _growth(X, np.zeros((n, 1)), eta, B, f, model)


def _growth(X, Y, eta, B, f, model):
    d = X.shape[1]
    _, drift, noise_C, _, _, scale = _linreg_moment_ops(X, Y, eta, B, f, model)
    eig = np.linalg.eigvals(_covariance_operator(d, eta, model, drift, noise_C, scale))
    return float(np.max(np.abs(eig))) if model == "sgd" else float(np.exp(eta * np.max(eig.real)))


def linreg_moments(X, Y, theta0, *, eta: float, batch_size: int, n_steps: int, model: str = "sgd",
                   sampling: str = "with_replacement"):
    """Exact mean (d,) and covariance (d, d) of theta after ``n_steps`` on linear regression (chapter 2).

    Loss ``L_n = (1/2n) sum_i (y_i - x_i^T theta)^2`` (``sgdnotes.models.linreg_loss``, d_out = 1), start
    at the point ``theta0`` (d,). The per-sample gradients are affine in theta, so ``Sigma_emp(theta)`` is
    quadratic in theta and the first two moments of every model below close. The mean ``m`` of
    ``delta = theta - theta_n`` and the covariance ``C`` itself (not ``E[theta theta^T] - m m^T``, which
    cancels catastrophically when the mean is large compared with the spread) are propagated exactly
    in float64 as one linear system in ``(C, m m^T, m)``:

    * ``"sgd"``: ``m' = P m``, ``C' = P C P^T + eta^2 f/B E[Sigma_emp]`` with ``P = I - eta H``, n_steps times;
    * ``"sde"``: ``dm/dt = -H m``, ``dC/dt = -H C - C H + eta f/B E[Sigma_emp]`` up to ``t = eta n_steps``;
    * ``"sme"``: the same with the modified drift ``-(I + eta/2 H) grad L_n`` (second-order SME),

    where ``f = 1`` with replacement and ``(n - B)/(n - 1)`` without replacement (per-step batches).
    Epoch sampling is not covered (its batches are correlated). Raises ValueError when the model's
    covariance is unstable (growth factor per step >= 1, :func:`linreg_moment_growth`): beyond this
    stability radius the moments diverge. Returns numpy (mean, cov).
    """
    from scipy.linalg import expm

    X = np.asarray(v.array("X", X, ndim=2), dtype=np.float64)
    Y = np.asarray(v.array("Y", Y, ndim=2), dtype=np.float64)
    v.same_rows(X, Y)
    if Y.shape[1] != 1:
        v.fail("linreg_moments needs a single output (Y of shape (n, 1))", Y)
    n, d = X.shape
    theta0 = np.asarray(v.array("theta0", theta0, ndim=1), dtype=np.float64)
    if theta0.shape != (d,):
        v.fail(f"theta0 must have shape ({d},)", theta0)
    eta = v.positive_float("eta (learning rate)", eta)
    v.one_of("sampling", sampling, {"with_replacement", "without_replacement"})
    B = v.positive_int("batch_size", batch_size, 1, None if sampling == "with_replacement" else n)
    K = v.positive_int("n_steps", n_steps, 0)
    v.one_of("model", model, set(MODELS))
    f = 1.0 if sampling == "with_replacement" else (n - B) / max(n - 1, 1)

    theta_n, drift, noise_C, noise_m, noise_0, scale = _linreg_moment_ops(X, Y, eta, B, f, model)
    Tc = _covariance_operator(d, eta, model, drift, noise_C, scale)
    eig = np.linalg.eigvals(Tc)
    growth = float(np.max(np.abs(eig))) if model == "sgd" else float(np.exp(eta * np.max(eig.real)))
    if not growth < 1:
        v.fail(f"the {model} covariance diverges here: its growth factor per step (mean-square stability "
               f"radius, linreg_moment_growth) must be < 1 at eta = {eta:g}, batch_size = {B}", growth)

    # state s = (vec C, vec N, m, 1) with N = m m^T; every update below is linear in s
    d2 = d * d
    D = 2 * d2 + d + 1
    basis = np.eye(d2).reshape(d2, d, d)
    L = np.zeros((D, D))
    if model == "sgd":
        P = np.eye(d) - eta * drift
        L[:d2, :d2] = Tc
        L[:d2, d2:2 * d2] = np.stack([(scale * noise_C(E)).ravel() for E in basis], axis=1)
        L[d2:2 * d2, d2:2 * d2] = np.stack([(P @ E @ P.T).ravel() for E in basis], axis=1)
        L[:d2, 2 * d2:2 * d2 + d] = np.stack([(scale * noise_m(u)).ravel() for u in np.eye(d)], axis=1)
        L[2 * d2:2 * d2 + d, 2 * d2:2 * d2 + d] = P
        L[:d2, -1] = (scale * noise_0).ravel()
        L[-1, -1] = 1.0
    else:
        L[:d2, :d2] = Tc
        L[:d2, d2:2 * d2] = np.stack([(scale * noise_C(E)).ravel() for E in basis], axis=1)
        L[d2:2 * d2, d2:2 * d2] = np.stack([(-drift @ E - E @ drift.T).ravel() for E in basis], axis=1)
        L[:d2, 2 * d2:2 * d2 + d] = np.stack([(scale * noise_m(u)).ravel() for u in np.eye(d)], axis=1)
        L[2 * d2:2 * d2 + d, 2 * d2:2 * d2 + d] = -drift
        L[:d2, -1] = (scale * noise_0).ravel()
    m0 = theta0 - theta_n
    s0 = np.concatenate([np.zeros(d2), np.outer(m0, m0).ravel(), m0, [1.0]])
    s = np.linalg.matrix_power(L, K) @ s0 if model == "sgd" else expm(L * eta * K) @ s0
    C = s[:d2].reshape(d, d)
    return theta_n + s[2 * d2:2 * d2 + d], (C + C.T) / 2


def linreg_ms_radius(X, *, eta: float, batch_size: int, sampling: str = "with_replacement") -> float:
    """Spectral radius of SGD's second-moment map on linear regression (mean-square stability, chapter 2).

    For ``delta = theta - theta_n`` the second moment ``S = E[delta delta^T]`` of SGD obeys
    ``S' = (I - eta H) S (I - eta H) + eta^2 f/B [(1/n) sum_i x_i x_i^T (x_i^T S x_i) - H S H] + const``
    (``H = X^T X / n``; ``f`` as in :func:`linreg_moments`). SGD's covariance stays bounded iff the
    radius of this linear map is < 1. Without the noise term the condition is ``eta lambda_max(H) < 2``;
    the multiplicative noise lowers it. X (n, d) -> float.
    """
    X = np.asarray(v.array("X", X, ndim=2), dtype=np.float64)
    n, d = X.shape
    eta = v.positive_float("eta (learning rate)", eta)
    v.one_of("sampling", sampling, {"with_replacement", "without_replacement"})
    B = v.positive_int("batch_size", batch_size, 1, None if sampling == "with_replacement" else n)
    f = 1.0 if sampling == "with_replacement" else (n - B) / max(n - 1, 1)
    H = X.T @ X / n
    P = np.eye(d) - eta * H

    def op(S):  # applied to the symmetric part: the radius is that of the map on symmetric matrices
        S = (S + S.T) / 2
        q = np.einsum("ia,ab,ib->i", X, S, X)
        return P @ S @ P + eta**2 * f / B * ((X * q[:, None]).T @ X / n - H @ S @ H)

    T = np.stack([op(E).ravel() for E in np.eye(d * d).reshape(d * d, d, d)], axis=1)
    return float(np.max(np.abs(np.linalg.eigvals(T))))
