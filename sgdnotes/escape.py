"""Exit times and escape rates (chapter 7).

* Ensembles: :func:`first_exit` runs any of the book's simulators (``run_sde``, ``run_sgd``,
  ``run_sgd_sde``) in segments and records each trajectory's first exit step; trajectories that have not
  exited by the horizon are **censored**, never averaged as if they had escaped. :func:`kaplan_meier`
  (survival curve, Greenwood standard errors) and :func:`exponential_mle` (censored exponential MLE of
  the rate and the mean time, with standard errors) summarise them.
* Exact: :func:`mfpt_1d`, the mean first-passage time of ``dx = b(x) dt + sqrt(2 D(x)) dW`` (Ito) in 1-D
  by quadrature, for any drift and state-dependent D.
* Asymptotic laws: :func:`kramers_time` (1-D), :func:`eyring_kramers_time` (d dimensions, constant
  anisotropic D, reversible or with a transverse non-reversible drift as in Bouchet & Reygner 2016),
  :func:`power_law_time` (1-D loss-scaled noise ``D = kappa L``, Mori et al. 2022) and
  :func:`levy_exit_time` (small alpha-stable noise, Imkeller & Pavlyukevich 2006).

Conventions: time is the SDE's time (``t = eta k`` for models of SGD); the alpha-stable noise has the
scale of :func:`sgdnotes.sde.stable_driver` (each coordinate of a unit-time increment is symmetric
alpha-stable with scale 2^(-1/2)). NumPy float64 throughout.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import numpy as np

from . import _validate as v

# ---------------------------------------------------------------------------------------------
# First exits from ensembles, with censoring


class FirstExit(NamedTuple):
    """First exits of an ensemble (:func:`first_exit`).

    times    (m,)  exit time ``step * dt``, or the horizon ``n_steps * dt`` if censored
    steps    (m,)  exit step (the first recorded step at which ``exited`` holds), or n_steps if censored
    escaped  (m,)  bool, False for censored trajectories (still inside at the horizon)
    horizon  float ``n_steps * dt``
    """

    times: np.ndarray
    steps: np.ndarray
    escaped: np.ndarray
    horizon: float


def first_exit(key, simulate: Callable, theta0, exited: Callable, *, n_steps: int, dt: float,
               segment: int = 1000) -> FirstExit:
    """First exit step of every trajectory of an ensemble, run in segments through an existing simulator.

    Args:
        key: JAX PRNG key; segment j uses ``fold_in(key, j)``.
        simulate: ``simulate(key, theta (m, d), n_steps) -> EnsembleResult`` recording every step
            (``record_steps=range(n_steps + 1)``), e.g. a ``functools.partial`` of ``run_sde``; the same
            simulator, so no second stepping scheme.
        theta0: start (m, d) (one row per trajectory).
        exited: ``exited(result) -> bool (r, m)`` from the recorded ``thetas`` (r, m, d) or ``losses``
            (r, m); row 0 is the segment's start.
        n_steps: horizon in steps (> 0); dt: time per step (``eta`` for SGD).
        segment: steps per simulator call (memory: ``segment * m * d`` recorded values).

    Trajectories that have exited are put back at their start and ignored (so they cannot diverge);
    the loop stops early once all have exited. Detection is at the recorded steps: a crossing between
    two steps is missed (for a level crossing of a diffusion this delays the detection, see chapter 7).
    """
    key = v.key("key", key)
    if not callable(simulate):
        v.fail("simulate must be a callable simulate(key, theta (m, d), n_steps) -> EnsembleResult", simulate)
    if not callable(exited):
        v.fail("exited must be a callable exited(result) -> bool (r, m)", exited)
    theta0 = v.array("theta0", theta0, ndim=2, nonempty=True)
    K = v.positive_int("n_steps", n_steps, 1)
    dt = v.positive_float("dt", dt)
    seg = v.positive_int("segment", segment, 1)
    m = theta0.shape[0]
    start = np.asarray(theta0)
    theta = start.copy()
    step_of = np.full(m, K, dtype=np.int64)
    done = np.zeros(m, dtype=bool)
    k0, j = 0, 0
    while k0 < K and not done.all():
        L = min(seg, K - k0)
        res = simulate(jax.random.fold_in(key, j), theta, L)
        E = np.asarray(exited(res))
        if E.shape != (L + 1, m) or E.dtype != bool:
            v.fail(f"exited(result) must return a bool array of shape ({L + 1}, {m}) (records at every step)", E)
        hit = E[1:].any(axis=0) & ~done
        step_of[hit] = k0 + 1 + np.argmax(E[1:, hit], axis=0)
        done |= hit
        theta = np.where(done[:, None], start, np.asarray(res.final_theta))
        k0, j = k0 + L, j + 1
    return FirstExit(step_of * dt, step_of, done, K * dt)


def _survival_data(times, escaped):
    t = np.asarray(v.array("times", times, ndim=1, nonempty=True), dtype=np.float64)
    if np.any(t < 0):
        v.fail("times must be >= 0", times)
    e = np.asarray(escaped)
    if e.shape != t.shape or e.dtype != bool:
        v.fail(f"escaped must be a bool array of the shape of times {t.shape}", escaped)
    return t, e


class Survival(NamedTuple):
    """Kaplan--Meier estimate (:func:`kaplan_meier`): S(t) = P(tau > t), a step function.

    t         (k,) the distinct exit times
    survival  (k,) S just after each of them
    se        (k,) Greenwood standard error of S
    """

    t: np.ndarray
    survival: np.ndarray
    se: np.ndarray


def kaplan_meier(times, escaped) -> Survival:
    """Kaplan--Meier survival curve of first exits with right censoring (Greenwood s.e.).

    times (m,): exit or censoring times; escaped (m,) bool (False: censored at ``times``).
    """
    t, e = _survival_data(times, escaped)
    ev = np.unique(t[e])
    at_risk = np.array([(t >= s).sum() for s in ev], dtype=np.float64)
    d = np.array([((t == s) & e).sum() for s in ev], dtype=np.float64)
    S = np.cumprod(1.0 - d / at_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        gw = np.cumsum(np.where(at_risk > d, d / (at_risk * (at_risk - d)), np.inf))
    return Survival(ev, S, S * np.sqrt(gw))


class ExpFit(NamedTuple):
    """Censored exponential MLE (:func:`exponential_mle`).

    rate, rate_se            events / exposure and rate / sqrt(events)
    mean_time, mean_time_se  1 / rate and mean_time / sqrt(events)
    events                   number of exits observed
    exposure                 total time at risk (sum of exit and censoring times)
    """

    rate: float
    rate_se: float
    mean_time: float
    mean_time_se: float
    events: int
    exposure: float


def exponential_mle(times, escaped) -> ExpFit:
    """MLE of an exponential exit law from right-censored times: rate = events / total time at risk.

    The standard errors are the inverse-Fisher ones (relative s.e. 1/sqrt(events)). Valid when the exit
    time is exponential -- the metastable regime where the barrier is high compared with the noise.
    times (m,), escaped (m,) bool. Needs at least one exit.
    """
    t, e = _survival_data(times, escaped)
    d = int(e.sum())
    if d == 0:
        v.fail("exponential_mle needs at least one exit (all trajectories are censored)", escaped)
    exposure = float(t.sum())
    rate = d / exposure
    return ExpFit(rate, rate / math.sqrt(d), 1.0 / rate, 1.0 / (rate * math.sqrt(d)), d, exposure)


# ---------------------------------------------------------------------------------------------
# Exact 1-D mean first-passage time


def mfpt_1d(drift: Callable, diffusion: Callable, x0, target: float, lower: float, n_grid: int = 20001):
    """Mean first-passage time from x0 to ``target`` of ``dx = drift(x) dt + sqrt(2 diffusion(x)) dW`` (Ito).

    Reflecting at ``lower`` < x0 < ``target`` (use a point deep in the confining wall for an unbounded
    domain). With ``Phi(x) = -int drift/diffusion``,

        T(x0) = int_{x0}^{target} dy exp(Phi(y)) int_{lower}^{y} exp(-Phi(z)) / diffusion(z) dz,

    evaluated on a uniform grid of ``n_grid`` points with the trapezoid rule (shifted exponents, float64).
    drift, diffusion: vectorised callables on float64 arrays (diffusion > 0 on [lower, target]).
    x0: scalar or array; returns a float or an array of its shape.
    """
    if not callable(drift) or not callable(diffusion):
        v.fail("drift and diffusion must be vectorised callables of x", (drift, diffusion))
    lo = v.real("lower", lower)
    hi = v.real("target", target)
    if not hi > lo:
        v.fail("target must be > lower", (lower, target))
    x0a = np.asarray(x0, dtype=np.float64)
    if not np.all(np.isfinite(x0a)) or np.any(x0a < lo) or np.any(x0a > hi):
        v.fail(f"x0 must lie in [lower, target] = [{lo:g}, {hi:g}]", x0)
    n = v.positive_int("n_grid", n_grid, 101)
    x = np.linspace(lo, hi, n)
    b = np.broadcast_to(np.asarray(drift(x), dtype=np.float64), x.shape)
    D = np.broadcast_to(np.asarray(diffusion(x), dtype=np.float64), x.shape)
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(D))):
        v.fail("drift and diffusion must be finite on [lower, target]", (lower, target))
    if np.any(D <= 0):
        v.fail("diffusion must be > 0 on [lower, target]", float(D.min()))
    h = x[1] - x[0]
    f = -b / D
    Phi = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) * h / 2)])
    c = Phi.min()
    g = np.exp(-(Phi - c)) / D  # exp(-Phi) / D times exp(c)
    inner = np.concatenate([[0.0], np.cumsum((g[1:] + g[:-1]) * h / 2)])
    with np.errstate(over="ignore", divide="ignore"):  # exp(Phi - c) may overflow where inner = 0
        outer = np.exp(Phi - c + np.log(inner))  # the factors exp(+-c) cancel
    tail = np.concatenate([np.cumsum(((outer[1:] + outer[:-1]) * h / 2)[::-1])[::-1], [0.0]])
    if not np.all(np.isfinite(tail)):
        v.fail("the mean first-passage time exceeds the float64 range (barrier too high for these parameters)", target)
    out = np.interp(x0a, x, tail)
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------------------------
# Asymptotic laws


def kramers_time(curv_min, curv_saddle, barrier, temperature):
    """Kramers' mean transition time to the other well for ``dx = -V'(x) dt + sqrt(2T) dW`` in 1-D.

    ``2 pi / sqrt(V''(min) |V''(saddle)|) * exp(barrier / T)`` (the time to reach the saddle itself is
    half of it). curv_saddle may be given as V''(saddle) < 0 or as its absolute value. Floats or arrays.
    """
    h = np.asarray(curv_min, dtype=np.float64)
    hs = np.abs(np.asarray(curv_saddle, dtype=np.float64))
    dv = np.asarray(barrier, dtype=np.float64)
    T = np.asarray(temperature, dtype=np.float64)
    if not (np.all(np.isfinite(h)) and np.all(h > 0)):
        v.fail("curv_min must be > 0 (a minimum)", curv_min)
    if not (np.all(np.isfinite(hs)) and np.all(hs > 0)):
        v.fail("curv_saddle must be nonzero (a nondegenerate saddle)", curv_saddle)
    if not (np.all(np.isfinite(dv)) and np.all(dv >= 0)):
        v.fail("barrier must be >= 0", barrier)
    if not (np.all(np.isfinite(T)) and np.all(T > 0)):
        v.fail("temperature must be > 0", temperature)
    return 2 * np.pi / np.sqrt(h * hs) * np.exp(dv / T)


def eyring_kramers_time(H_min, H_saddle, barrier, temperature, D=None, jac_saddle=None) -> float:
    """Eyring--Kramers mean transition time in d dimensions.

    Reversible case (``jac_saddle`` None): ``d theta = -D grad V dt + sqrt(2 T D) dW`` with constant
    symmetric positive definite D (default I); Gibbs law exp(-V/T), and

        tau = 2 pi / |lambda_-(D H_s)| * sqrt(|det H_s| / det H_min) * exp(barrier / T),

    lambda_- the one negative eigenvalue of D H_s. Non-reversible case (Bouchet & Reygner 2016): drift
    ``b = -D grad V + l`` with the same noise, where ``l`` is transverse (``div(l exp(-V/T)) = 0``, so the
    Gibbs law is still stationary, e.g. ``l = -J grad V`` with a constant antisymmetric J): pass the
    Jacobian of b at the saddle as ``jac_saddle``; its one positive eigenvalue replaces |lambda_-|.
    Conditions: nondegenerate minimum and saddle (H_saddle has exactly one negative eigenvalue), the
    saddle is the lowest on the way out, barrier / T large. H_min, H_saddle (d, d) Hessians of V.
    """
    Hm = v.symmetric_psd("H_min", H_min, definite=True)
    Hs = np.asarray(v.square("H_saddle", H_saddle), dtype=np.float64)
    d = Hm.shape[0]
    if Hs.shape != (d, d) or not np.allclose(Hs, Hs.T, atol=1e-10 * max(1.0, np.abs(Hs).max())):
        v.fail(f"H_saddle must be a symmetric ({d}, {d}) matrix", H_saddle)
    ws = np.linalg.eigvalsh(Hs)
    if not (ws[0] < 0 < ws[1] if d > 1 else ws[0] < 0):
        v.fail("H_saddle must have exactly one negative eigenvalue and no zero one (a nondegenerate saddle)", ws)
    dv = v.real("barrier", barrier, 0.0)
    T = v.positive_float("temperature", temperature)
    Dm = np.eye(d) if D is None else v.symmetric_psd("D", D, definite=True)
    if Dm.shape != (d, d):
        v.fail(f"D must be ({d}, {d})", D)
    if jac_saddle is None:
        ev = np.linalg.eigvals(Dm @ Hs).real
        mu = -ev.min()
    else:
        J = np.asarray(v.square("jac_saddle", jac_saddle), dtype=np.float64)
        if J.shape != (d, d):
            v.fail(f"jac_saddle must be ({d}, {d})", jac_saddle)
        ev = np.linalg.eigvals(J)
        pos = ev[ev.real > 0]
        if pos.size != 1 or abs(pos[0].imag) > 1e-9 * abs(pos[0]):
            v.fail("jac_saddle must have exactly one positive (real) eigenvalue, the unstable direction", ev)
        mu = float(pos[0].real)
    ratio = abs(np.prod(ws)) / np.prod(np.linalg.eigvalsh(Hm))
    return float(2 * np.pi / mu * np.sqrt(ratio) * np.exp(dv / T))


def power_law_time(curv_min, curv_saddle, loss_min, loss_saddle, kappa):
    """Mean transition time in 1-D under loss-scaled noise ``dx = -L'(x) dt + sqrt(2 kappa L(x)) dW``.

    Laplace asymptotics of :func:`mfpt_1d` with ``Phi = log(L) / kappa`` (a = 1/kappa):

        tau = 2 pi / sqrt(h |h_s|) * g(a) * (L_s / L_min)^(a + 1/2),   g(a) = sqrt(a) Gamma(a + 1/2) / Gamma(a + 1) -> 1,

    a power law in the loss ratio (Mori et al. 2022 with n = 1: exponent ``B/(eta h) + 1 - n/2`` for
    ``kappa = eta h / B``). Valid for small kappa and loss_min > 0. Floats or arrays.
    """
    h = np.asarray(curv_min, dtype=np.float64)
    hs = np.abs(np.asarray(curv_saddle, dtype=np.float64))
    Lm = np.asarray(loss_min, dtype=np.float64)
    Ls = np.asarray(loss_saddle, dtype=np.float64)
    k = np.asarray(kappa, dtype=np.float64)
    if not (np.all(h > 0) and np.all(hs > 0)):
        v.fail("curv_min must be > 0 and curv_saddle nonzero", (curv_min, curv_saddle))
    if not (np.all(Lm > 0) and np.all(Ls > Lm)):
        v.fail("need 0 < loss_min < loss_saddle", (loss_min, loss_saddle))
    if not (np.all(np.isfinite(k)) and np.all(k > 0)):
        v.fail("kappa must be > 0", kappa)
    a = 1.0 / k
    from scipy.special import gammaln

    g = np.sqrt(a) * np.exp(gammaln(a + 0.5) - gammaln(a + 1.0))
    return 2 * np.pi / np.sqrt(h * hs) * g * (Ls / Lm) ** (a + 0.5)


def stable_levy_constant(alpha: float, scale: float = 2 ** -0.5) -> float:
    """c in the Levy density ``c |y|^(-1-alpha)`` of a symmetric alpha-stable law with characteristic
    function ``exp(-|scale u|^alpha)``: ``c = scale^alpha Gamma(1 + alpha) sin(pi alpha / 2) / pi``."""
    a = v.in_range("alpha", alpha, 0.0, 2.0)
    if a <= 0:
        v.fail("alpha must be in (0, 2)", alpha)
    s = v.positive_float("scale", scale)
    return s**a * math.gamma(1 + a) * math.sin(math.pi * a / 2) / math.pi


def levy_exit_time(alpha, eps, left, right, scale: float = 2 ** -0.5):
    """Small-noise mean exit time from a well for ``dx = -V'(x) dt + eps dL`` (alpha-stable L, alpha < 2).

    Imkeller & Pavlyukevich (2006): the exit happens by one jump out of the well, so
    ``E tau ~ 1 / (eps^alpha nu(outside))`` with ``nu(outside) = c (left^-alpha + right^-alpha) / alpha``
    (c: :func:`stable_levy_constant`); left, right > 0 are the distances from the minimum to the well's
    edges (``np.inf`` for an unbounded side). Depends on the well's width, not its depth. The default
    ``scale`` matches :func:`sgdnotes.sde.stable_driver`. Floats or arrays (eps).
    """
    c = stable_levy_constant(alpha, scale)
    e = np.asarray(eps, dtype=np.float64)
    if not (np.all(np.isfinite(e)) and np.all(e > 0)):
        v.fail("eps must be > 0", eps)
    lf = v.positive_float("left", left) if np.isfinite(left) else np.inf
    rt = v.positive_float("right", right) if np.isfinite(right) else np.inf
    nu = c * (lf ** -alpha + rt ** -alpha) / alpha
    if nu == 0:
        v.fail("at least one side of the well must be finite", (left, right))
    return 1.0 / (e**alpha * nu)


class Grid2D(NamedTuple):
    """Mean first-passage time on a grid (:func:`mfpt_2d`).

    x (nx,), y (ny,) grid coordinates; u (nx, ny) the mean time to reach ``x >= x[-1]`` from (x[i], y[j]).
    """

    x: np.ndarray
    y: np.ndarray
    u: np.ndarray


def _range_pair(name: str, r) -> tuple:
    try:
        a = np.asarray(r, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        v.fail(f"{name} must be (min, max) with max > min", r)
    if a.size != 2 or not np.all(np.isfinite(a)) or not a[1] > a[0]:
        v.fail(f"{name} must be (min, max) with max > min", r)
    return float(a[0]), float(a[1])


def _generator_2d(drift: Callable, temperature: float, x_range, y_range, h: float):
    """Central-difference generator ``T Laplacian + b . grad`` (absorbing at x = x_max, reflecting elsewhere).

    Returns (x (nx,), y (ny,), A sparse (m, m) with m = (nx - 1) ny, rows for the unknowns of every column but
    the absorbing one, in C order of shape (nx - 1, ny)).
    """
    import warnings

    from scipy import sparse

    if not callable(drift):
        v.fail("drift must be a vectorised callable drift(X, Y) -> (b_x, b_y)", drift)
    T = v.positive_float("temperature", temperature)
    h = v.positive_float("h", h)
    x0, x1 = _range_pair("x_range", x_range)
    y0, y1 = _range_pair("y_range", y_range)
    nx, ny = int(round((x1 - x0) / h)) + 1, int(round((y1 - y0) / h)) + 1
    if nx < 5 or ny < 5:
        v.fail("h must give at least 5 grid points per side", h)
    if nx * ny > 2_000_000:
        v.fail("grid too large (more than 2e6 points); increase h", (nx, ny))
    x, y = np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)
    X, Y = np.meshgrid(x[:-1], y, indexing="ij")  # unknowns: every column but the absorbing one
    bx, by = (np.broadcast_to(np.asarray(c, dtype=np.float64), X.shape) for c in drift(X, Y))
    if not (np.all(np.isfinite(bx)) and np.all(np.isfinite(by))):
        v.fail("drift must be finite on the box", (x_range, y_range))
    hx, hy = x[1] - x[0], y[1] - y[0]
    peclet = float(max(np.max(np.abs(bx)) * hx, np.max(np.abs(by)) * hy) / (2 * T))
    if peclet > 1.0:  # central differences lose monotonicity there; harmless only where u is flat
        warnings.warn(f"cell Peclet number |b| h / (2T) up to {peclet:.2g} > 1 on the box: central differences are "
                      "accurate only if u is flat where it exceeds 1 (check the O(h^2) order)", RuntimeWarning,
                      stacklevel=3)
    east, west = T / hx**2 + bx / (2 * hx), T / hx**2 - bx / (2 * hx)
    north, south = T / hy**2 + by / (2 * hy), T / hy**2 - by / (2 * hy)
    centre = np.full(X.shape, -2 * T / hx**2 - 2 * T / hy**2)
    m, idx = X.size, np.arange(X.size).reshape(X.shape)
    # reflecting edges: the ghost value mirrors the inner neighbour
    east = east.copy(); north = north.copy(); south = south.copy()
    east[0] += west[0]
    north[:, 0] += south[:, 0]
    south[:, -1] += north[:, -1]
    rows, cols, vals = [idx.ravel()], [idx.ravel()], [centre.ravel()]
    for coef, di, dj in [(east, 1, 0), (west, -1, 0), (north, 0, 1), (south, 0, -1)]:
        I, Jg = np.meshgrid(np.arange(nx - 1), np.arange(ny), indexing="ij")
        ti, tj = I + di, Jg + dj
        ok = (ti >= 0) & (ti < nx - 1) & (tj >= 0) & (tj < ny)  # ti == nx - 1: the absorbing edge, u = 0
        if di == -1:
            ok &= I > 0
        if dj == 1:
            ok &= Jg < ny - 1
        if dj == -1:
            ok &= Jg > 0
        rows.append(idx[ok]); cols.append(idx[ti[ok], tj[ok]]); vals.append(coef[ok])
    A = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    return x, y, A


def mfpt_2d(drift: Callable, temperature: float, x_range, y_range, h: float) -> Grid2D:
    """Mean first-passage time to the half-plane ``x >= x_max`` of ``d theta = b(theta) dt + sqrt(2T) dW`` in 2-D.

    Solves the backward equation ``T Laplacian(u) + b . grad(u) = -1`` on the box
    ``[x_min, x_max] x [y_min, y_max]`` by second-order central differences (grid step ``h``) and a sparse
    direct solve, with ``u = 0`` on the absorbing edge ``x = x_max`` and reflecting (zero normal derivative)
    edges elsewhere (put them where the Gibbs weight is negligible). The 2-D analogue of :func:`mfpt_1d` for
    constant isotropic diffusion and any drift, reversible or not (chapter 7: the exact finite-barrier time
    that Eyring--Kramers and Bouchet--Reygner approximate). Central differences need the cell Peclet number
    ``|b| h / (2T)`` below about 1 where ``u`` varies; a RuntimeWarning says when it exceeds 1 anywhere on the box.

    drift: vectorised callable ``drift(X, Y) -> (b_x, b_y)`` on float64 arrays; x_range, y_range: (min, max);
    h > 0. Returns :class:`Grid2D` with ``u`` of shape (nx, ny).
    """
    from scipy.sparse.linalg import spsolve

    x, y, A = _generator_2d(drift, temperature, x_range, y_range, h)
    u = spsolve(A.tocsc(), -np.ones(A.shape[0])).reshape(x.size - 1, y.size)
    if not np.all(np.isfinite(u)):
        v.fail("the linear solve failed (grid too coarse for this drift and temperature?)", (h, temperature))
    return Grid2D(x, y, np.vstack([u, np.zeros((1, y.size))]))


class CensoredTarget(NamedTuple):
    """What the censored exponential MLE estimates (:func:`censored_mle_target_2d`).

    target = E min(tau, c) / P(tau < c); mean = E tau; rate = lambda_1 (slowest decay rate of the survival);
    amplitude = a_1 (survival ~ a_1 exp(-lambda_1 t)); gap = lambda_2 / lambda_1 (real parts).
    """

    target: float
    mean: float
    rate: float
    amplitude: float
    gap: float


def censored_mle_target_2d(drift: Callable, temperature: float, x_range, y_range, h: float, density,
                           censor: float) -> CensoredTarget:
    """Expected value of the censored exponential MLE (total time / exits) for the exit of :func:`mfpt_2d`.

    Runs censored at time ``c`` estimate ``E min(tau, c) / P(tau < c)``, which equals ``E tau`` only when
    ``tau`` is exponential; a start away from the quasi-stationary law (and the transit time from the saddle
    to ``x_max``) makes them differ by O(transit / (c P(tau < c))). Computed on the grid of :func:`mfpt_2d`:
    ``E tau = <density, u>`` exactly, and the survival ``S(t) = <density, exp(tA) 1>`` from the slowest
    eigenpair of the generator, ``S(t) ~ a_1 exp(-lambda_1 t)``, exact up to the next modes' weight
    ``exp(-lambda_2 c)`` (``gap`` returned so the caller can check it): ``E min(tau, c) = E tau - a_1
    exp(-lambda_1 c) / lambda_1``, ``P(tau < c) = 1 - a_1 exp(-lambda_1 c)``.

    density: vectorised callable ``density(X, Y)`` giving the (unnormalised, >= 0) start weight at the grid
    nodes; it is normalised over the unknowns (the absorbing edge excluded); censor > 0.
    """
    from scipy.sparse.linalg import eigs, splu

    x, y, A = _generator_2d(drift, temperature, x_range, y_range, h)
    c = v.positive_float("censor", censor)
    if not callable(density):
        v.fail("density must be a vectorised callable density(X, Y) -> weights >= 0", density)
    X, Y = np.meshgrid(x[:-1], y, indexing="ij")
    rho = np.broadcast_to(np.asarray(density(X, Y), dtype=np.float64), X.shape).ravel()
    if not (np.all(np.isfinite(rho)) and np.all(rho >= 0) and rho.sum() > 0):
        v.fail("density must give finite weights >= 0, not all zero, on the grid", density)
    rho = rho / rho.sum()
    Ac = A.tocsc()
    u = splu(Ac).solve(-np.ones(A.shape[0]))
    lam_r, R = eigs(Ac, k=2, sigma=0.0, which="LM")  # eigenvalues nearest 0: -lambda_1, -lambda_2
    lam_l, L = eigs(Ac.T.tocsc(), k=1, sigma=0.0, which="LM")
    order = np.argsort(-lam_r.real)
    r1, l1 = np.real(R[:, order[0]]), np.real(L[:, 0])
    lam1, lam2 = -float(lam_r[order[0]].real), -float(lam_r[order[1]].real)
    a1 = float((rho @ r1) * l1.sum() / (l1 @ r1))
    mean = float(rho @ u)
    tail = a1 * np.exp(-lam1 * c)
    if not (np.isfinite(mean) and lam1 > 0 and 0 <= tail < 1):
        v.fail("the eigen-solve failed or the censoring time is too short for one exit", (h, censor))
    return CensoredTarget((mean - tail / lam1) / (1 - tail), mean, lam1, a1, lam2 / lam1)
