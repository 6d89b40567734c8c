"""One SDE ensemble simulator for the whole book (introduced in chapter 2).

Euler--Maruyama for ``d theta = b(theta) dt + G(theta) dZ`` over m trajectories at once, on the same
step loop as the SGD simulator (:func:`sgdnotes.ensemble.scan_ensemble`). The diffusion is given as

* a scalar ``sigma``: ``G = sigma I`` (isotropic);
* a constant matrix ``G`` (d, k);
* a callable ``cov_fn(theta (d,)) -> (d, d)``: a state-dependent covariance ``Sigma(theta)``, with
  ``G = Sigma^{1/2}`` taken by a symmetric eigendecomposition every step (``cov_fn(theta0)`` is checked
  to be symmetric PSD up front; later negative round-off eigenvalues are clipped to 0, so singular
  ``Sigma`` is fine); or a callable factor ``G(theta) (d, k)`` (``diffusion_kind="factor"``, no root).

The driving increments are pluggable: ``noise(key, shape, dt) -> dZ``; the default is Brownian,
``sqrt(dt) N(0, I)``; the alpha-stable drivers :func:`stable_driver` (elliptical or independent
coordinates) scale as ``dt^(1/alpha)``. Trajectory i's increment at
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
    EnsembleResult,
    default_block,
    check_chunking,
    check_flag,
    check_growth,
    check_initial,
    check_memory,
    check_record_steps,
    check_stats,
    check_steps,
    divergence_message,
    finish,
    init_carry,
    initial_shape,
    report_divergence,
    resolve_mesh,
    run_chunks,
    scan_ensemble,
    warn_unstable,
)
from . import models
from .noise import empirical_noise_cov
from .sgd import (_blocks, _dln2_grad_from_stats, _dln2_split, _dln2_suffstats_cheaper, _key_pair, _mm,
                  batch_indices, mean_loss, trajectory_keys)
from .stable import positive_stable_from_uniforms, stable_from_uniforms


def brownian_increments(key, shape, dt):
    """Brownian increments ``sqrt(dt) N(0, I)`` of the given shape."""
    return jnp.sqrt(dt) * jax.random.normal(key, shape)


def sqrt_psd(S):
    """Symmetric square root of a PSD matrix S (d, d) -> (d, d).

    Only round-off is forgiven here (S is symmetrised, eigenvalues below 0 are clipped): :func:`run_sde`
    checks ``cov_fn(theta0)`` up front with :func:`check_cov`.
    """
    w, U = jnp.linalg.eigh((S + S.T) / 2)
    return (U * jnp.sqrt(jnp.clip(w, 0.0))) @ U.T


def check_cov(S, what: str = "diffusion cov_fn(theta0)"):
    """A covariance S (d, d) must be finite, symmetric and PSD up to round-off; ValueError otherwise.

    Round-off tolerance relative to ``max|S|``: ``100 d eps`` of S's dtype (float32, d = 50: 6e-4).
    Returns S as a float64 NumPy array.
    """
    A = np.asarray(S)
    eps = float(np.finfo(A.dtype if np.issubdtype(A.dtype, np.floating) else np.float64).eps)
    A = A.astype(np.float64)
    if not np.all(np.isfinite(A)):
        v.fail(f"{what} must be finite", S)
    d = A.shape[0]
    tol = 100 * max(d, 1) * eps * max(float(np.max(np.abs(A), initial=0.0)), np.finfo(np.float64).tiny)
    asym = float(np.max(np.abs(A - A.T), initial=0.0))
    if asym > tol:
        v.fail(f"{what} must be symmetric (max |S - S^T| = {asym:.3g} > round-off tolerance {tol:.3g})", S)
    lam = float(np.linalg.eigvalsh((A + A.T) / 2).min())
    if lam < -tol:
        v.fail(f"{what} must be positive semi-definite (smallest eigenvalue {lam:.3g} < -{tol:.3g})", S)
    return A


class StableDriver:
    """alpha-stable driving increments (chapters 2 and 5); build with :func:`stable_driver`.

    ``form="elliptical"``: ``dZ = dt^(1/alpha) sqrt(W) N(0, I_k)``, W positive (alpha/2)-stable with
    ``E[exp(-s W)] = exp(-s^(alpha/2))`` (:func:`sgdnotes.stable.sample_positive_stable`): an isotropic
    alpha-stable vector, so ``G dZ`` is elliptical with the dispersion ``G G^T`` of the Gaussian driver,
    for any factor G. ``form="independent"``: the k coordinates are i.i.d. symmetric alpha-stable with
    scale ``2^(-1/2) dt^(1/alpha)`` (``G dZ`` then depends on the factor G, not only on ``G G^T``).
    In both, every coordinate of a unit-time increment is symmetric alpha-stable with scale 2^(-1/2):
    at alpha = 2 both are Brownian increments ``sqrt(dt) N(0, I)``.
    """

    def __init__(self, alpha, form):
        self.alpha, self.form = alpha, form

    def __call__(self, key, shape, dt):
        """``noise(key, shape, dt)`` for :func:`run_sde` (one trajectory, one step)."""
        from .stable import sample_positive_stable, sample_stable

        k1, k2 = jax.random.split(key)
        if self.form == "independent":
            return dt ** (1.0 / self.alpha) * 2.0 ** -0.5 * sample_stable(k1, self.alpha, shape)
        W = sample_positive_stable(k2, self.alpha / 2, ())
        return dt ** (1.0 / self.alpha) * jnp.sqrt(W) * jax.random.normal(k1, shape)

    def __repr__(self):
        return f"stable_driver(alpha={self.alpha}, form={self.form!r})"


@lru_cache(maxsize=None)
def stable_driver(alpha: float, form: str = "elliptical") -> StableDriver:
    """alpha-stable driving noise for :func:`run_sde` and ``run_sgd_sde(noise=...)`` (see :class:`StableDriver`).

    alpha in (0, 2]; form ``"elliptical"`` (default) or ``"independent"``. Increments scale as dt^(1/alpha).
    """
    alpha = v.in_range("alpha (stability index)", alpha, 0.0, 2.0, closed_high=True)
    if alpha <= 0:
        v.fail("alpha (stability index) must be > 0", alpha)
    v.one_of("form", form, {"elliptical", "independent"})
    return StableDriver(alpha, form)


# ---------------------------------------------------------------------------------------------
# Fast refined-SDE noise: factor forms of the empirical covariance (no eigendecomposition per step)
#
# Sigma_emp(theta) = (1/n) C^T C with C = G - gbar (n, d) the centred per-sample gradients, so
# sqrt(s/n) C^T z, z ~ N(0, I_n), has covariance exactly s Sigma_emp at O(n d) cost, and
# C^T z = sum_i (z_i - zbar) g_i: a weighted sum of per-sample gradients, evaluated in closed form for
# the known losses without forming C. For linear regression and the two-layer linear network the
# weighted sum depends on the weights only through p weighted sufficient statistics S = P w
# (P (p, n): rows vec x_i x_i^T and vec y_i x_i^T), sum_i w_i g_i(theta) = Phi_theta(S) with Phi_theta
# linear. Then Phi_theta(P (z - zbar)) with P (z - zbar) ~ N(0, P_c P_c^T), P_c = P (I - 11^T/n), a
# constant p x p covariance: drawing it as L xi with L L^T = P_c P_c^T (L (p, r), factorised once,
# r = rank <= p) gives exactly the same law with r instead of n normals per step (r = 40 for the
# reference network, n = 100). The factor of the SDE step is thus F(theta) = sqrt(s/n) Phi_theta(L),
# F F^T = s Sigma_emp(theta) (:func:`empirical_factor`).

_TAG_NOISE = 0xA4093822  # counter tags of the SDE's random words (distinct from sgd's batch tags)
_TAG_W = 0x299F31D0


def _box_muller(u1, u2):
    """Standard normals (2k, ...) from uniforms u1, u2 (k, ...) on (0, 1) (both Box--Muller outputs)."""
    r = jnp.sqrt(-2.0 * jnp.log(u1))
    t = (2.0 * jnp.pi) * u2
    return jnp.concatenate([r * jnp.cos(t), r * jnp.sin(t)], axis=0)


def _unit_uniforms(words, dtype):
    """uint32 words -> uniforms on the open interval (0, 1): ((w >> 9) + 1/2) 2^-23 (exact in float32)."""
    return ((words >> jnp.uint32(9)).astype(dtype) + 0.5) * (2.0 ** -23)


def factor_noise(pair, step, k: int, driver, dtype):
    """Unit-time driving noise (k, b) of trajectories with key words ``pair`` (2, b) at ``step``.

    A pure function of (trajectory key, step): Threefry-2x32 words at counters (step, tag + j).
    driver None: N(0, I_k) by Box--Muller; a :class:`StableDriver`: its unit-time increments
    (elliptical: sqrt(W) N(0, I_k); independent: i.i.d. symmetric alpha-stable, scale 2^-1/2).
    """
    if driver is None:
        y0, y1 = _blocks(pair, step, _TAG_NOISE, (k + 1) // 2)
        return _box_muller(_unit_uniforms(y0, dtype), _unit_uniforms(y1, dtype))[:k]
    if driver.form == "independent":
        y0, y1 = _blocks(pair, step, _TAG_NOISE, k)
        return 2.0 ** -0.5 * stable_from_uniforms(driver.alpha, _unit_uniforms(y0, dtype), _unit_uniforms(y1, dtype))
    z = factor_noise(pair, step, k, None, dtype)
    w0, w1 = _blocks(pair, step, _TAG_W, 1)
    W = positive_stable_from_uniforms(driver.alpha / 2, _unit_uniforms(w0, dtype), _unit_uniforms(w1, dtype))
    return jnp.sqrt(W) * z


def _dln2_dims(loss_fn):
    if (isinstance(loss_fn, partial) and loss_fn.func is models.dln2_loss and not loss_fn.args
            and set(loss_fn.keywords) == {"dims"}):
        return tuple(int(x) for x in loss_fn.keywords["dims"])
    return None


def stats_matrix(loss_fn, X, Y):
    """P (p, n) with ``sum_i w_i g_i(theta) = Phi_theta(P w)`` (:func:`stats_grad_fn`), or None (P = I_n).

    Rows ``vec x_i x_i^T`` (row-major) then ``vec x_i y_i^T`` (linear regression) or ``vec y_i x_i^T``
    (two-layer network), used where p < n and cheaper than the per-sample form. NumPy float64.
    """
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    n, d_in = X.shape
    dims = _dln2_dims(loss_fn)
    if loss_fn is models.linreg_loss and d_in * (d_in + Y.shape[1]) < n:
        return np.concatenate([(X[:, :, None] * X[:, None, :]).reshape(n, -1),
                               (X[:, :, None] * Y[:, None, :]).reshape(n, -1)], axis=1).T
    if dims is not None and _dln2_suffstats_cheaper(dims, n) and d_in * (d_in + Y.shape[1]) < n:
        return np.concatenate([(X[:, :, None] * X[:, None, :]).reshape(n, -1),
                               (Y[:, :, None] * X[:, None, :]).reshape(n, -1)], axis=1).T
    return None


def stats_grad_fn(loss_fn, X, Y, reduced: bool):
    """``Phi(theta (d, b), S (p, b)) -> (d, b)``, linear in S, trajectories last.

    reduced (P from :func:`stats_matrix`): ``sum_i w_i g_i(theta) = Phi(theta, P w)``; otherwise S are
    the weights w (n, b) themselves (closed-form per-sample chain rule, or jax.grad for other losses).
    """
    n, d_in = X.shape
    d_out = Y.shape[1]
    dims = _dln2_dims(loss_fn)
    if loss_fn is models.linreg_loss:
        if reduced:  # sum_i w_i x_i (x_i^T W - y_i^T) = Sxx W - Sxy
            return lambda theta, S: (_mm(S[: d_in * d_in].reshape(d_in, d_in, -1), theta.reshape(d_in, d_out, -1))
                                     - S[d_in * d_in:].reshape(d_in, d_out, -1)).reshape(d_in * d_out, -1)

        def wgrad(theta, w):
            r = jnp.einsum("ni,iob->nob", X, theta.reshape(d_in, d_out, -1)) - Y[:, :, None]  # (n, d_out, b)
            return jnp.einsum("ni,nob->iob", X, w[:, None, :] * r).reshape(d_in * d_out, -1)

        return wgrad
    if dims is not None:
        d0, d1, d2 = dims
        if reduced:  # the batch gradient's closed form with weighted statistics
            def sgrad(theta, S):
                W1, W2 = _dln2_split(theta, dims)
                return _dln2_grad_from_stats(W1, W2, S[: d0 * d0].reshape(d0, d0, -1), S[d0 * d0:].reshape(d2, d0, -1))

            return sgrad

        def wgrad(theta, w):  # per-sample chain rule from residuals r_i and inputs x_i
            W1, W2 = _dln2_split(theta, dims)
            h = jnp.einsum("nk,jkb->jnb", X, W1)  # (d1, n, b)
            rw = 2.0 * (_mm(W2, h) - Y.T[:, :, None]) * w[None]  # (d2, n, b)
            g2 = _mm(rw, jnp.swapaxes(h, 0, 1))
            g1 = jnp.einsum("jnb,nk->jkb", _mm(jnp.swapaxes(W2, 0, 1), rw), X)
            return jnp.concatenate([jnp.swapaxes(g1, 0, 1).reshape(-1, g1.shape[-1]),
                                    jnp.swapaxes(g2, 0, 1).reshape(-1, g2.shape[-1])])

        return wgrad

    def one(theta, w):  # any loss: jax.grad of the weighted loss
        return jax.grad(lambda th: jnp.sum(w * jax.vmap(loss_fn, in_axes=(None, 0, 0))(th, X, Y)))(theta)

    return jax.vmap(one, in_axes=(1, 1), out_axes=1)


def stats_factor(P):
    """L (p, r) with ``L L^T = P_c P_c^T``, P_c = P (I - 11^T/n): a once-only eigh (float64) of a constant."""
    Pc = P - P.mean(axis=1, keepdims=True)
    w, U = np.linalg.eigh(Pc @ Pc.T)
    keep = w > 1e-12 * max(w.max(), np.finfo(np.float64).tiny)
    return U[:, keep] * np.sqrt(w[keep])


def empirical_factor(loss_fn, theta, X, Y):
    """The factor F (d, r) of run_sgd_sde's Gaussian driver at theta (d,): ``F F^T = Sigma_emp(theta)``.

    F = Phi_theta(L) / sqrt(n) with the reduced statistics where they apply (r = rank of P_c),
    otherwise the centred per-sample gradients C^T / sqrt(n) (r = n), computed by the same closed forms
    the simulator uses (chapter 2). X (n, d_in), Y (n, d_out).
    """
    X = v.array("X", X, ndim=2)
    Y = v.array("Y", Y, ndim=2)
    v.same_rows(X, Y)
    theta = v.array("theta", theta, ndim=1)
    n = X.shape[0]
    dtype = jnp.result_type(theta.dtype, jnp.float32)
    P = stats_matrix(loss_fn, X, Y)
    Xj, Yj = jnp.asarray(X, dtype), jnp.asarray(Y, dtype)
    phi = stats_grad_fn(loss_fn, Xj, Yj, P is not None)
    S = stats_factor(P) if P is not None else np.eye(n) - 1.0 / n
    T = jnp.broadcast_to(jnp.asarray(theta, dtype)[:, None], (theta.shape[0], S.shape[1]))
    return phi(T, jnp.asarray(S, dtype)) / np.sqrt(n)


def _simulate_factor(carry, replicated, seg_lengths, k0, burn_in, *,
                     loss_fn, order, driver, reduced, record_params, record_loss, stats, block_size):
    """One chunk of the SDE models of SGD with factor-form noise (traced, per device; see
    :func:`sgdnotes.ensemble.run_chunks`): Euler--Maruyama, blocked, trajectories last."""
    X, Y, P, L, dt, eta, scale = replicated
    n = X.shape[0]
    phi = stats_grad_fn(loss_fn, X, Y, reduced)
    alpha = 2.0 if driver is None else driver.alpha
    amp = dt ** (1.0 / alpha) * jnp.sqrt(scale / n)  # noise weight per unit of (z_i - zbar)
    mean_w = P.mean(axis=1)[:, None] if reduced else jnp.full((n, 1), 1.0 / n, carry.theta.dtype)  # Phi(., mean_w) = grad L_n
    Pc = P - mean_w if reduced else None

    def step(k, theta, pair):  # theta (d, b), pair (2, b)
        if reduced and (driver is None or driver.form == "elliptical"):  # law depends only on L L^T
            S = amp * (L @ factor_noise(pair, k, L.shape[1], driver, theta.dtype))
        else:
            z = factor_noise(pair, k, n, driver, theta.dtype)  # (n, b)
            S = amp * (Pc @ z if reduced else z - z.mean(axis=0))
        if order == 1:
            return theta + phi(theta, S - dt * mean_w), pair
        full = lambda th: phi(th, jnp.broadcast_to(mean_w, mean_w.shape[:1] + th.shape[-1:]))  # grad L_n
        g, Hg = jax.jvp(full, (theta,), (full(theta),))
        return theta + phi(theta, S) - dt * (g + 0.5 * eta * Hg), pair

    observe = jax.vmap(lambda th: mean_loss(loss_fn, th, X, Y)) if record_loss else None
    return scan_ensemble(step, carry, seg_lengths, k0, burn_in, stats=stats, record_params=record_params,
                         observe=observe, block_size=min(block_size, carry.theta.shape[0]))


def _simulate(carry, replicated, seg_lengths, k0, burn_in, *,
              drift, cov_fn, noise, kind, k_noise, record_params, observe, stats):
    """One chunk of the SDE ensemble (traced, per device): see :func:`sgdnotes.ensemble.run_chunks`."""
    dt, G, args = replicated
    keys = carry.aux  # (m,) trajectory keys

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
    return scan_ensemble(step, carry, seg_lengths, k0, burn_in, stats=stats, record_params=record_params,
                         observe=obs)


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
    mesh=None,
    chunk_steps: int | None = None,
    progress=False,
    max_growth: float | None = 1e6,
    block_size: int | None = None,
) -> EnsembleResult:
    """Euler--Maruyama ensemble for ``d theta = drift(theta) dt + G(theta) dZ``.

    Not jittable: it validates concrete inputs and runs the steps in chunks from Python (each chunk is
    one call of a jitted, cached function). Call it from ordinary Python code.

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
        mesh, chunk_steps, progress, max_growth: sharding over devices, chunking, progress bar and Ctrl-C,
            divergence by growth, as in
            :func:`sgdnotes.sgd.run_sgd` (results bit-identical whatever their values).
        block_size: trajectories computed together (blocks run one after another); None (default): 256 on
            CPUs, all of a device's trajectories on a GPU (:func:`sgdnotes.ensemble.default_block`). Results
            do not depend on the number of devices or on chunking, and only at float round-off on block_size.

    A RuntimeWarning is given up front when ``dt * lambda_max >= 2`` (lambda_max: ``lam_max`` or the
    largest real part of the eigenvalues of -d(drift)/d(theta) at theta0, for d <= 400).

    Returns:
        :class:`sgdnotes.ensemble.EnsembleResult` (``final_aux`` is empty, shape (m, 0)).
    """
    key = v.key("key", key)
    th0_a, m, d = initial_shape(theta0, n_trajectories)
    dt = v.positive_float("dt (time step)", dt)
    K = check_steps("n_steps", n_steps)
    burn_in = check_stats(stats, burn_in, K)
    v.one_of("on_divergence", on_divergence, {"raise", "warn", "ignore"})
    v.one_of("diffusion_kind", diffusion_kind, {"cov", "factor"})
    if not isinstance(args, tuple):
        v.fail("args must be a tuple of arrays passed as drift(theta, *args)", args)
    steps = check_record_steps(record_steps, K)
    record_params = check_flag("record_params", record_params)
    if observe is not None and not callable(observe):
        v.fail("observe must be None or a callable observe(theta, *args) -> scalar", observe)
    if not callable(noise):
        v.fail("noise must be a callable noise(key, shape, dt) -> increments", noise)
    if lam_max is not None:
        lam_max = v.positive_float("lam_max", lam_max)
    check_chunking(chunk_steps, progress)
    max_growth = check_growth(max_growth)
    mesh = resolve_mesh(mesh)
    block_size = default_block(block_size, m, mesh, 256)
    check_memory(m, d, n_records=steps.size, record_params=record_params, record_loss=observe is not None,
                 stats=stats, aux_per_traj=16, mesh=mesh)
    th0, m = check_initial(th0_a, m)

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
            check_cov(diffusion(th0[0], *args))
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

    lam = [lam_max]

    def top_eig():
        if lam[0] is None and d <= 400:
            J = _drift_jacobian(th0[0], tuple(args), drift=drift)
            lam[0] = float(np.max(np.real(np.linalg.eigvals(-np.asarray(J, np.float64)))))
        return lam[0]

    if K > 0:
        warn_unstable("run_sde", dt, top_eig(), step_name="dt")
    carry = init_carry(th0, trajectory_keys(key, m), stats, max_growth)
    static = dict(drift=drift, cov_fn=cov_fn, noise=noise, kind=kind, k_noise=k_noise,
                  record_params=record_params, observe=observe, stats=stats)
    carry, thetas, observed, done = run_chunks(
        _simulate, carry, (jnp.asarray(dt, th0.dtype), G, tuple(args)), steps=steps, n_steps=K, burn_in=burn_in,
        static=static, mesh=mesh, block=min(block_size, m), chunk_steps=chunk_steps, progress=progress, desc="run_sde",
        record_params=record_params, record_obs=observe is not None)
    result = finish(steps, K, burn_in, stats, carry, thetas, observed, done, jnp.zeros((m, 0), th0.dtype))
    report_divergence(result, on_divergence, lambda: divergence_message(
        "SDE (Euler-Maruyama)", result.diverged_step, dt, lam_max, top_eig, step_name="dt"))
    return result


@partial(jax.jit, static_argnames=("drift",))
def _drift_jacobian(theta, args, *, drift):
    return jax.jacobian(lambda th: drift(th, *args))(theta)


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
    mesh=None,
    chunk_steps: int | None = None,
    progress=False,
    max_growth: float | None = 1e6,
    noise_scale: float = 1.0,
) -> EnsembleResult:
    """Ensemble of an SDE model of SGD on ``L_n = mean_i loss_fn(theta, x_i, y_i)`` (chapter 2).

    Called like :func:`sgdnotes.sgd.run_sgd`. Time is ``t = eta k`` (k counts SGD steps); the model is

    * ``order=1``: ``d theta = -grad L_n dt + sqrt(eta/B Sigma_emp(theta)) dW`` (first-order SDE);
    * ``order=2``: ``d theta = -grad(L_n + eta/4 ||grad L_n||^2) dt + sqrt(eta/B Sigma_emp(theta)) dW``
      (second-order stochastic modified equation of Li, Tai & E 2017),

    with ``Sigma_emp(theta)`` the 1/n covariance of the per-sample gradients (``sgdnotes.noise``); for
    ``sampling`` without replacement or by epochs it is multiplied by ``(n - B)/(n - 1)`` (the one-step
    covariance; the epoch anti-correlation is not modelled).

    Drivers: ``"gaussian"``: Brownian increments with the exact factor form of the noise,
    ``sqrt(eta/(B n)) sum_i (z_i - zbar) g_i(theta)`` (covariance ``eta/B Sigma_emp``; no eigendecomposition;
    for linear regression and the two-layer network drawn in the rank-r space of the weighted sufficient
    statistics, see :func:`empirical_factor`), Euler--Maruyama with ``dt = eta/substeps``, trajectories in
    blocks of 16 with the trajectory axis last, as in ``run_sgd``. ``noise=stable_driver(alpha, form)``
    replaces the Gaussian by alpha-stable increments (elliptical: ``sqrt(W)`` times the Gaussian noise;
    independent: i.i.d. stable weights z_i over the n samples), at the same cost layout. Any other
    ``noise(key, (n,), dt)`` callable drives the factor ``sqrt(eta/(B n)) C(theta)^T`` through :func:`run_sde`. ``"minibatch"``: the increments are SGD's own gradient
    noise xi_k from the batches that :func:`sgdnotes.sgd.run_sgd` draws with the same key (see
    :func:`minibatch_driver`; needs ``substeps=1``; any ``sampling``): with ``order=1`` the scheme *is* SGD (same key ->
    the same path up to rounding), with ``order=2`` it is SGD with the modified drift -- a pathwise
    coupling of SGD and the modified equation.

    Returns an :class:`~sgdnotes.ensemble.EnsembleResult` whose ``steps``, ``diverged_step``,
    ``completed_steps`` and ``n_averaged`` count SGD steps (EM steps / substeps; an EM step inside SGD
    step k counts as k); ``losses`` holds ``L_n`` if ``record_loss``. ``mesh``, ``chunk_steps`` (in EM
    steps), ``progress`` and ``max_growth`` as in :func:`run_sde`. Not jittable (see :func:`run_sde`).
    """
    key = v.key("key", key)
    X = v.array("X", X, ndim=2)
    Y = v.array("Y", Y, ndim=2)
    v.same_rows(X, Y)
    n = X.shape[0]
    eta = v.positive_float("eta (learning rate)", eta)
    v.one_of("sampling", sampling, {"with_replacement", "without_replacement", "epoch"})
    B = v.positive_int("batch_size", batch_size, 1, None if sampling == "with_replacement" else n)
    if X.shape[0] == 0:
        v.fail("X and Y must have at least one row (sample)", X)
    K = v.positive_int("n_steps", n_steps, 0)
    if order not in (1, 2) or isinstance(order, bool):
        v.fail("order must be 1 (first-order SDE) or 2 (stochastic modified equation)", order)
    v.one_of("driver", driver, set(DRIVERS))
    M = v.positive_int("substeps", substeps, 1)
    check_steps("n_steps", K, M)
    record_loss = check_flag("record_loss", record_loss)
    record_params = check_flag("record_params", record_params)
    noise_scale = v.positive_float("noise_scale (factor on the driving noise)", noise_scale)
    if driver == "minibatch" and (M != 1 or noise is not None or noise_scale != 1.0):
        v.fail("the minibatch driver uses SGD's own batches: it needs substeps=1, noise=None and noise_scale=1",
               (substeps, noise_scale))
    if noise is not None and not callable(noise):
        v.fail("noise must be a callable noise(key, shape, dt) -> increments", noise)
    if not callable(loss_fn):
        v.fail("loss_fn must be a callable loss_fn(theta, x, y) -> scalar", loss_fn)
    theta0, _, _ = initial_shape(theta0, n_trajectories)
    v.one_of("on_divergence", on_divergence, {"raise", "warn", "ignore"})
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
    args = (jnp.asarray(X, dtype), jnp.asarray(Y, dtype), jnp.asarray(eta, dtype),
            jnp.asarray(eta * fpc / B * noise_scale**2, dtype))
    observe = _loss_observer(loss_fn) if record_loss else None
    if driver == "gaussian" and (noise is None or noise is brownian_increments or isinstance(noise, StableDriver)):
        res = _run_factor(key, loss_fn, theta0, args, n_trajectories=n_trajectories, order=order,
                          driver=noise if isinstance(noise, StableDriver) else None, substeps=M, n_steps=K,
                          steps=steps, record_params=record_params, record_loss=record_loss, stats=stats,
                          burn_in=burn_in, mesh=mesh, chunk_steps=chunk_steps, progress=progress,
                          max_growth=max_growth)
    else:
        if driver == "gaussian":  # any other noise(key, (n,), dt) callable drives the factor sqrt(s/n) C^T
            kw = dict(diffusion=_gaussian_factor(loss_fn), diffusion_kind="factor", noise=noise)
        else:
            kw = dict(diffusion=factor, diffusion_kind="factor", noise=minibatch_driver(n, B, sampling))
        res = run_sde(key, drift, theta0, dt=eta / M, n_steps=K * M, n_trajectories=n_trajectories,
                      record_steps=steps * M, record_params=record_params, observe=observe, stats=stats,
                      burn_in=burn_in * M, on_divergence="ignore", args=args, mesh=mesh, chunk_steps=chunk_steps,
                      progress=progress, max_growth=max_growth, **kw)
    done = res.completed_steps // M  # SGD steps completed (an interrupt may stop inside one)
    res = res._replace(steps=res.steps // M, completed_steps=done,
                       n_averaged=res.n_averaged if M == 1 else max(done - burn_in, 0),
                       diverged_step=np.where(res.diverged_step >= 0, -(-res.diverged_step // M), -1))
    what = f"SDE model of SGD (order {order}, {driver} driver, {M} Euler-Maruyama substeps per SGD step)"
    report_divergence(res, on_divergence, lambda: divergence_message(
        what, res.diverged_step, eta, None, lambda: _top_eig_sgd(loss_fn, res, X, Y, theta0),
        step_unit="SGD step"))
    return res


def _top_eig_sgd(loss_fn, res, X, Y, theta0):
    from .sgd import _hessian_top_eig

    th = jnp.asarray(theta0).reshape(-1, jnp.asarray(theta0).shape[-1])[0]
    return _hessian_top_eig(loss_fn, th.astype(jnp.float32), X, Y)


@lru_cache(maxsize=None)
def _gaussian_factor(loss_fn):
    """factor(theta, X, Y, eta, scale) -> (d, n) = sqrt(scale/n) C^T: covariance scale * Sigma_emp (stable object)."""
    centred_T = _sgd_model_fns(loss_fn, 1)[2]  # the one per-sample-gradient closure: C^T, (d, n)

    def factor(theta, X, Y, eta, scale):
        return jnp.sqrt(scale / X.shape[0]) * centred_T(theta, X, Y, eta, scale)

    return factor


def _run_factor(key, loss_fn, theta0, args, *, n_trajectories, order, driver, substeps, n_steps, steps,
                record_params, record_loss, stats, burn_in, mesh, chunk_steps, progress, max_growth, block_size=None):
    """run_sgd_sde's Gaussian/stable drivers: :func:`_simulate_factor` through the chunked, sharded driver
    :func:`sgdnotes.ensemble.run_chunks` (steps count Euler--Maruyama steps there; SGD steps here)."""
    theta0_a, m, d = initial_shape(theta0, n_trajectories)
    check_chunking(chunk_steps, progress)
    max_growth = check_growth(max_growth)
    mesh = resolve_mesh(mesh)
    check_memory(m, d, n_records=steps.size, record_params=record_params, record_loss=record_loss, stats=stats,
                 aux_per_traj=8, mesh=mesh)
    th0, m = check_initial(theta0_a, m)
    block_size = default_block(block_size, m, mesh, 16)
    X, Y, eta, scale = args
    M, K = substeps, n_steps
    dt = eta / M
    P = stats_matrix(loss_fn, X, Y)
    reduced = P is not None
    P_, L_ = (jnp.asarray(P, th0.dtype), jnp.asarray(stats_factor(P), th0.dtype)) if reduced else (None, None)
    if K > 0:
        from .sgd import _hessian_top_eig

        warn_unstable("run_sgd_sde", float(dt), _hessian_top_eig(loss_fn, th0[0], X, Y) if d <= 400 else None,
                      step_name="eta/substeps")
    carry = init_carry(th0, _key_pair(trajectory_keys(key, m)), stats, max_growth)
    replicated = (X.astype(th0.dtype), Y.astype(th0.dtype), P_, L_, dt.astype(th0.dtype), eta.astype(th0.dtype),
                  scale.astype(th0.dtype))
    static = dict(loss_fn=loss_fn, order=order, driver=driver, reduced=reduced, record_params=record_params,
                  record_loss=record_loss, stats=stats, block_size=block_size)
    carry, thetas, observed, done = run_chunks(
        _simulate_factor, carry, replicated, steps=steps * M, n_steps=K * M, burn_in=burn_in * M, static=static,
        mesh=mesh, block=min(block_size, m), chunk_steps=chunk_steps, progress=progress, desc="run_sgd_sde",
        record_params=record_params, record_obs=record_loss)
    return finish(steps * M, K * M, burn_in * M, stats, carry, thetas, observed, done, jnp.zeros((m, 0), th0.dtype))


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
    with np.errstate(over="ignore"):  # a growth factor beyond float range is inf: unstable, as it should read
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
