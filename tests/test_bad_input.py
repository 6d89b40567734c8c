"""Every bad input to the non-simulator modules is refused with a ValueError naming the rule and the value.

Two tests (issue #10 §2):

* ``test_bad_input_case``: a table of (function, args, kwargs, regex on the rule) cases -- offsets,
  NaN/inf, empty arrays, 1-D where 2-D is meant, wrong sizes, non-integer counts, huge sizes, non-key
  keys, bad strings, negative scales, non-PSD/non-symmetric matrices, wrong lengths;
* ``test_sweep_public_function``: every public function of the modules below, found from the module's
  own names, is called with each argument of a valid call replaced in turn by a NaN version of it, an
  empty array and a string; each call must raise the package's ValueError ("rule; got value ...").
  ``VALID`` must list every public function, so a new function without checks is caught.

The simulators (sgd, sde, ensemble) are covered in ``tests/test_bad_input_simulators.py``.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sgdnotes import dln, limiting, models, noise, plotting, stationary, widgets  # noqa: E402

MODULES = (models, noise, dln, limiting, stationary, widgets, plotting)

# ----------------------------------------------------------------------------------------------
# Small valid inputs (deterministic; no global RNG)

_rng = np.random.default_rng(0)
X = _rng.normal(size=(8, 3))  # (n, d0)
Y = _rng.normal(size=(8, 2))  # (n, d2)
Y1 = Y[:, :1]
DIMS = (3, 2, 2)
W1 = _rng.normal(size=(2, 3))  # (d1, d0)
W2 = _rng.normal(size=(2, 2))  # (d2, d1)
THETA_DLN = np.asarray(models.dln_pack(W1, W2))  # (10,)
G = _rng.normal(size=(6, 3))
H = np.diag([1.0, 2.0])
SIG = np.diag([0.5, 0.3])
A = np.array([[1.0, 0.5], [-0.5, 1.0]])
D = np.eye(2)
NOT_PSD = np.array([[1.0, 0.0], [0.0, -1.0]])
NOT_SYM = np.array([[1.0, 0.5], [0.0, 1.0]])
KEY = jax.random.key(0)
GRID1 = stationary.make_grid([-2.0], [2.0], 8)
GRID2 = stationary.make_grid([-1.0, -1.0], [1.0, 1.0], 4)
PATH = _rng.normal(size=(5, 3, 2))
EDGES = (np.linspace(-3, 3, 4), np.linspace(-3, 3, 5))
MD = dln.modes(X, Y)
RHO = np.array([0.5, 1.0])
S2 = np.array([0.2, 0.1])
U_ORTH = np.eye(3)[:, :2]
_fig, AX = plt.subplots()


def drift1(p):
    return -p


def render(b):
    fig, ax = plotting.figure()
    ax.set_title(f"{b}")
    return fig


def loss2d(x, y):
    return x**2 + y**2


# ----------------------------------------------------------------------------------------------
# One valid call per public function: name -> (function, args, kwargs)

VALID = {
    # models
    "linreg_loss": (models.linreg_loss, (np.ones(3), X[0], Y1[0]), {}),
    "linreg_full_loss": (models.linreg_full_loss, (np.ones(3), X, Y1), {}),
    "linreg_hessian": (models.linreg_hessian, (X,), {"d_out": 2}),
    "linreg_minimiser": (models.linreg_minimiser, (X, Y), {}),
    "make_linreg_data": (models.make_linreg_data, (KEY, 10, 3),
                         {"noise_std": 0.5, "inputs": "student_t", "df": 4.0, "input_scales": np.ones(3),
                          "theta_star": np.ones(3), "dtype": jnp.float32}),
    "dln_unpack": (models.dln_unpack, (THETA_DLN, DIMS), {}),
    "dln_pack": (models.dln_pack, (W1, W2), {}),
    "dln2_loss": (models.dln2_loss, (THETA_DLN, X[0], Y[0], DIMS), {}),
    "make_dln_teacher_data": (models.make_dln_teacher_data, (KEY, 10, DIMS), {"noise_std": 0.1, "dtype": jnp.float32}),
    "load_digits_regression": (models.load_digits_regression, (), {"dtype": jnp.float32}),
    # noise
    "per_sample_grads": (noise.per_sample_grads, (models.linreg_loss, np.ones(3), X, Y1), {}),
    "empirical_noise_cov": (noise.empirical_noise_cov, (G,), {}),
    "minibatch_noise_cov": (noise.minibatch_noise_cov, (G, 2), {"replacement": False}),
    "estimate_noise_cov": (noise.estimate_noise_cov, (G, 2), {}),
    "batch_gradients": (noise.batch_gradients, (KEY, G, 2, 3), {"sampling": "epoch"}),
    "batch_gradients_by_size": (noise.batch_gradients_by_size, (KEY, G, [1, 2], 3), {"sampling": "with_replacement"}),
    "linreg_population_noise_cov": (noise.linreg_population_noise_cov, (np.ones(2), np.zeros(2), H, 0.5),
                                    {"fourth_moments": np.array([3.0, 12.0])}),
    "dln_noise_cov": (noise.dln_noise_cov, (W1, W2, X, Y), {}),
    # dln
    "dln_loss": (dln.dln_loss, (W1, W2, X, Y), {}),
    "residual_moment": (dln.residual_moment, (W1, W2, X, Y), {}),
    "dln_grads": (dln.dln_grads, (W1, W2, X, Y), {}),
    "dln_flat_grad": (dln.dln_flat_grad, (THETA_DLN, X, Y, DIMS), {}),
    "commutation_matrix": (dln.commutation_matrix, (2, 3), {}),
    "product_jacobian": (dln.product_jacobian, (W1, W2), {}),
    "dln_hessian": (dln.dln_hessian, (W1, W2, X, Y), {}),
    "whiten": (dln.whiten, (X,), {}),
    "modes": (dln.modes, (X, Y), {}),
    "mode_point": (dln.mode_point, (X, Y, 2, np.array([0.5, 0.2])), {"R": np.eye(2)}),
    "critical_point": (dln.critical_point, (X, Y, 2, [0]), {"R": np.array([[0.0], [1.0]])}),
    "critical_hessian_eigenvalues": (dln.critical_hessian_eigenvalues, (np.array([2.0, 1.0]), DIMS, [0]), {}),
    "saxe_curve": (dln.saxe_curve, (np.array([2.0, 1.0]), 0.01, np.linspace(0, 3, 5)), {"loss_floor": 0.1}),
    "mode_strengths": (dln.mode_strengths, (W1, W2, MD), {}),
    "small_init": (dln.small_init, (KEY, DIMS, 0.1), {"n_trajectories": 2}),
    "lazy_init": (dln.lazy_init, (KEY, DIMS, 1.0), {"n_trajectories": 2}),
    "effective_rank": (dln.effective_rank, (W2,), {}),
    "dln_drift": (dln.dln_drift, (THETA_DLN, X, Y), {"dims": DIMS}),
    "dln_sde_cov": (dln.dln_sde_cov, (THETA_DLN, X, Y, 0.01), {"dims": DIMS}),
    "numerical_rank": (dln.numerical_rank, (W2, 0.1), {}),
    # limiting
    "ou_model": (limiting.ou_model, (H, SIG, 0.1, 0.9, 4), {"weight_decay": 0.01, "mu": np.ones(2)}),
    "ou_decomposition": (limiting.ou_decomposition, (H, 0.5, 0.1, 0.9), {"weight_decay": 0.01}),
    "oscillator_rates": (limiting.oscillator_rates, (RHO, 0.1, 0.9), {"weight_decay": 0.0}),
    "damping_ratio": (limiting.damping_ratio, (RHO, 0.1, 0.9), {"weight_decay": 0.0}),
    "mode_propagator": (limiting.mode_propagator, (np.array([0.5]), np.array([2.0]), np.array([0.0, 1.0])), {}),
    "oscillator": (limiting.oscillator, (np.ones(2), np.zeros(2), RHO, 0.1, 0.9, np.array([0.0, 1.0])), {}),
    "stationary_variances": (limiting.stationary_variances, (RHO, S2, 0.1, 0.9, 4), {}),
    "momentum_speed": (limiting.momentum_speed, (0.1, 0.9, 4, 1.5), {}),
    "velocity_correlation": (limiting.velocity_correlation, (np.array([1, 2]), RHO, 0.1, 0.9), {}),
    "global_displacement": (limiting.global_displacement, (np.array([1, 3]), RHO, S2, 0.1, 0.9, 4), {}),
    "discrete_transition": (limiting.discrete_transition, (RHO, 0.1, 0.9), {}),
    "discrete_mode_moments": (limiting.discrete_mode_moments, (RHO, S2, 0.1, 0.9, 4), {}),
    "discrete_speed": (limiting.discrete_speed, (RHO, S2, 0.1, 0.9, 4), {}),
    "discrete_stationary_cov": (limiting.discrete_stationary_cov, (H, SIG, 0.1, 0.9, 4), {}),
    "displacement_from_rest": (limiting.displacement_from_rest, (np.array([0, 2]), RHO, S2, 0.1, 0.9, 4),
                               {"model": "continuous"}),
    "stationary_displacement": (limiting.stationary_displacement, (np.array([0, 2]), RHO, S2, 0.1, 0.9, 4),
                                {"model": "discrete"}),
    "spectral_peak": (limiting.spectral_peak, (RHO, 0.1, 0.9), {"model": "discrete"}),
    "linreg_noise_spectrum": (limiting.linreg_noise_spectrum, (np.ones(6), X, Y, U_ORTH), {}),
    # stationary
    "lyapunov": (stationary.lyapunov, (A, D), {}),
    "drift_decomposition": (stationary.drift_decomposition, (A, D), {}),
    "ou_stationary": (stationary.ou_stationary, (A, D), {"mu": np.ones(2)}),
    "gaussian_density": (stationary.gaussian_density, (np.zeros((3, 2)), np.zeros(2), D), {}),
    "ou_current": (stationary.ou_current, (np.ones((3, 2)), A, D), {"mu": np.zeros(2)}),
    "ou_area_rate": (stationary.ou_area_rate, (A, D), {}),
    "ou_transient": (stationary.ou_transient, (A, D, np.array([0.0, 1.0]), np.ones(2)),
                     {"cov0": 0.5 * D, "mu": np.zeros(2)}),
    "gaussian_kl": (stationary.gaussian_kl, (np.zeros(2), D, np.ones(2), 2 * D), {}),
    "make_grid": (stationary.make_grid, ([-1.0, -1.0], [1.0, 1.0], 4), {}),
    "fp_generator": (stationary.fp_generator, (GRID1, drift1, 1.0), {"alpha": 0.5}),
    "fp_current": (stationary.fp_current, (GRID1, np.ones(8), drift1, 1.0), {"alpha": 0.0}),
    "fp_stationary": (stationary.fp_stationary, (GRID1, drift1, 1.0), {"alpha": 0.0}),
    "fp_evolve": (stationary.fp_evolve, (GRID1, np.ones(8) / 4, np.array([0.0, 0.1]), drift1, 1.0), {}),
    "gibbs_density": (stationary.gibbs_density, (GRID1, lambda p: p[..., 0] ** 2, 1.0), {}),
    "helmholtz_potential": (stationary.helmholtz_potential, (GRID2, lambda p: -p, D), {}),
    "effective_potential": (stationary.effective_potential, (np.ones((3, 3)), 1.0), {}),
    "current_from_increments": (stationary.current_from_increments, (PATH, 0.1, EDGES), {}),
    "area_rate": (stationary.area_rate, (PATH, 0.1), {"center": np.zeros(2)}),
    # widgets
    "figure_png": (widgets.figure_png, (render(1),), {"dpi": 40}),
    "frame_slider": (widgets.frame_slider, (render, [1, 2]),
                     {"description": "B", "readout_format": "{:g}", "initial": 1, "dpi": 40, "width": "300px"}),
    # plotting
    "figure": (plotting.figure, (), {"ncols": 1, "nrows": 1, "width": 3.0, "height": 2.0}),
    "cov_ellipse": (plotting.cov_ellipse, (AX, np.zeros(2), SIG), {"n_std": 2.0}),
    "loss_contours": (plotting.loss_contours, (AX, loss2d, (-1.0, 1.0), (-1.0, 1.0)), {"levels": 5, "n_grid": 10}),
}

# (function, parameter, kind) whose bad value is in fact valid, with the reason
EXEMPT = {
    ("frame_slider", "description", "string"): "any non-empty string is a valid slider label",
    ("mode_point", "strengths", "empty"): "no strengths: the origin, a valid point",
    ("critical_point", "modes_used", "empty"): "no modes learned: the origin, a valid critical point",
    ("critical_hessian_eigenvalues", "modes_used", "empty"): "the origin's spectrum",
}


def public_functions(module):
    return sorted(n for n, o in vars(module).items()
                  if not n.startswith("_") and inspect.isfunction(o) and o.__module__ == module.__name__)


def _opaque(val):
    """Values that are not numbers or arrays: callables, keys, NamedTuples (Grid, Modes), axes, dtypes."""
    if callable(val) or hasattr(val, "_fields") or isinstance(val, (str, bool)) or val is None:
        return True
    dtype = getattr(val, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return True
    if isinstance(val, (tuple, list)) and val and all(hasattr(e, "shape") for e in val):
        return False
    try:
        arr = np.asarray(val)
    except Exception:
        return True
    return not (np.issubdtype(arr.dtype, np.number))


def bad_versions(val):
    """{kind: bad value}: a NaN version of val (one NaN entry), an empty array, a string."""
    if isinstance(val, (tuple, list)) and val and all(hasattr(e, "shape") for e in val):  # e.g. bin edges
        nan = (bad_versions(val[0])["nan"],) + tuple(val[1:])
    elif _opaque(val):
        nan = np.full((2, 2), np.nan)
    elif np.ndim(val) == 0:
        nan = float("nan")
    else:
        arr = np.array(val, dtype=float)
        arr.flat[0] = np.nan
        nan = arr
    ragged = isinstance(val, (tuple, list)) and val and all(hasattr(e, "shape") for e in val)
    shape = np.shape(val) if not (_opaque(val) or ragged) else ()
    empty = np.zeros((0,) + tuple(shape[1:]))
    return {"nan": nan, "empty": empty, "string": "not-a-valid-value"}


def test_valid_table_lists_every_public_function():
    names = {n for m in MODULES for n in public_functions(m)}
    missing = names - set(VALID)
    assert not missing, f"public functions without a valid call in VALID (add them and their checks): {missing}"
    assert not set(VALID) - names


SWEEP = sorted(VALID)


@pytest.mark.parametrize("name", SWEEP)
def test_sweep_public_function(name):
    fn, args, kwargs = VALID[name]
    fn(*args, **kwargs)  # the valid call works
    params = list(inspect.signature(fn).parameters)
    problems = []
    slots = [(params[i], i) for i in range(len(args))] + [(k, k) for k in kwargs]
    for pname, slot in slots:
        for kind, bad in bad_versions(args[slot] if isinstance(slot, int) else kwargs[slot]).items():
            if (name, pname, kind) in EXEMPT:
                continue
            a, kw = list(args), dict(kwargs)
            if isinstance(slot, int):
                a[slot] = bad
            else:
                kw[slot] = bad
            try:
                fn(*a, **kw)
            except ValueError as err:
                if "; got " not in str(err):
                    problems.append(f"{pname}={kind}: unclear ValueError {str(err)[:120]!r}")
            except Exception as err:  # noqa: BLE001 - any other exception is a finding
                problems.append(f"{pname}={kind}: {type(err).__name__} {str(err)[:120]!r}")
            else:
                problems.append(f"{pname}={kind}: accepted silently")
            finally:
                plt.close("all") if name in ("figure", "frame_slider", "figure_png") else None
    assert not problems, f"{name}: " + "; ".join(problems)
