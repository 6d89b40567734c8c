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
    "minimum_action_path": (stationary.minimum_action_path, (lambda p: -p, D, np.zeros(2), np.ones(2)),
                            {"n_nodes": 8, "n_rounds": 1}),
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


# ----------------------------------------------------------------------------------------------
# The table: (function, args, kwargs, regex on the rule)

def c(fn, *args, match, **kwargs):
    return pytest.param(fn, args, kwargs, match, id=f"{fn.__name__}-{match[:40]}")


NAN2 = np.array([[1.0, np.nan], [0.0, 1.0]])
INF2 = np.array([[np.inf, 0.0], [0.0, 1.0]])
RAW_KEY = jax.random.PRNGKey(0)  # (2,) uint32: also accepted

CASES = [
    # ---------------- models
    c(models.linreg_loss, np.ones(4), X[0], Y1[0], match="theta must have d_in . d_out entries"),
    c(models.linreg_loss, np.ones(3), X[:2], Y1[0], match=r"x \(d_in,\) must have 1 dimension"),
    c(models.linreg_loss, np.ones(3), X[0], np.ones((1, 1)), match="y shape"),
    c(models.linreg_loss, np.array([np.nan, 1, 1]), X[0], Y1[0], match="finite"),
    c(models.linreg_loss, np.ones(3), X[0], np.zeros(0), match="must not be empty"),
    c(models.linreg_full_loss, np.ones(2), X, Y1, match="theta must have d_in . d_out = 3 . 1 = 3 entries"),
    c(models.linreg_full_loss, np.ones(3), X[:, 0], Y1, match=r"X \(n, d_in\) must have 2 dimension"),
    c(models.linreg_full_loss, np.ones(3), X, Y1[:5], match="same number of rows"),
    c(models.linreg_full_loss, np.ones((3, 1)), X, Y1, match="theta .* must have 1 dimension"),
    c(models.linreg_full_loss, np.ones(3), np.zeros((0, 3)), np.zeros((0, 1)), match="must not be empty"),
    c(models.linreg_full_loss, np.ones(3), X, np.full((8, 1), np.inf), match="finite"),
    c(models.linreg_hessian, X[:, 0], match=r"X \(n, d_in\) must have 2 dimension"),
    c(models.linreg_hessian, X, 0, match="d_out must be >= 1"),
    c(models.linreg_hessian, X, 2.7, match="d_out must be an integer"),
    c(models.linreg_hessian, np.zeros((1, 100_000)), match="would need .* GiB"),
    c(models.linreg_hessian, NAN2, match="finite"),
    c(models.linreg_minimiser, X, Y[:3], match="same number of rows"),
    c(models.linreg_minimiser, X, Y[:, 0], match=r"Y \(n, d_out\) must have 2 dimension"),
    c(models.linreg_minimiser, np.zeros((0, 2)), np.zeros((0, 1)), match="must not be empty"),
    c(models.make_linreg_data, KEY, 2.7, 3, match="n .number of samples. must be an integer"),
    c(models.make_linreg_data, KEY, 10, 0, match="d .input dimension. must be >= 1"),
    c(models.make_linreg_data, KEY, 10**9, 3, match="would need .* GiB"),
    c(models.make_linreg_data, KEY, 10, 10**6, match="would need .* GiB"),
    c(models.make_linreg_data, 0, 10, 3, match="key must be a JAX PRNG key"),
    c(models.make_linreg_data, np.zeros(2), 10, 3, match="key must be a JAX PRNG key"),
    c(models.make_linreg_data, jax.random.split(KEY, 2), 10, 3, match="single PRNG key"),
    c(models.make_linreg_data, KEY, 10, 3, inputs="cauchy", match="inputs must be one of"),
    c(models.make_linreg_data, KEY, 10, 3, noise_std=-0.1, match="noise_std must be a finite real number >= 0"),
    c(models.make_linreg_data, KEY, 10, 3, noise_std=np.inf, match="noise_std must be a finite"),
    c(models.make_linreg_data, KEY, 10, 3, input_scales=[1.0, np.inf, 1.0], match="input_scales must contain only finite"),
    c(models.make_linreg_data, KEY, 10, 3, input_scales=[1.0, -1.0, 1.0], match="input_scales must be a positive"),
    c(models.make_linreg_data, KEY, 10, 3, input_scales=[1.0, 1.0], match="input_scales must be a positive vector of shape"),
    c(models.make_linreg_data, KEY, 10, 3, theta_star=np.ones(2), match=r"theta_star must have shape \(3,\)"),
    c(models.make_linreg_data, KEY, 10, 3, inputs="student_t", df=0.0, match="df .* must be a finite number > 0"),
    c(models.make_linreg_data, KEY, 10, 3, dtype=jnp.int32, match="dtype must be a floating dtype"),
    c(models.make_linreg_data, KEY, 10, 3, dtype="abc", match="dtype must be a floating dtype"),
    c(models.dln_unpack, np.ones(9), DIMS, match="theta must have d1.d0 . d2.d1 = 10 entries"),
    c(models.dln_unpack, THETA_DLN, (3, 2), match=r"dims must be \(d0, d1, d2\)"),
    c(models.dln_unpack, THETA_DLN, (3, 2.7, 2), match="each of dims .* must be an integer"),
    c(models.dln_unpack, THETA_DLN, "abc", match=r"dims must be \(d0, d1, d2\)"),
    c(models.dln_pack, W1, W2[:, :1], match="W2 .* must have d1 = W1.shape.0. = 2 columns"),
    c(models.dln_pack, W1[0], W2, match=r"W1 \(d1, d0\) must have 2 dimension"),
    c(models.dln_pack, NAN2, W2, match="finite"),
    c(models.dln2_loss, THETA_DLN, X[0, :2], Y[0], DIMS, match=r"x \(d0,\) must have shape \(3,\)"),
    c(models.dln2_loss, THETA_DLN, X[0], Y[0, :1], DIMS, match=r"y \(d2,\) must have shape \(2,\)"),
    c(models.dln2_loss, THETA_DLN, X[0], Y[0], (3, 2, 0), match="each of dims .* must be >= 1"),
    c(models.make_dln_teacher_data, KEY, 10, (4.9, 2, 2), match="each of dims .* must be an integer"),
    c(models.make_dln_teacher_data, KEY, 2.7, DIMS, match="n .number of samples. must be an integer"),
    c(models.make_dln_teacher_data, KEY, 10**9, DIMS, match="would need .* GiB"),
    c(models.make_dln_teacher_data, KEY, 10, (10**6, 2, 10**6), match="would need .* GiB"),
    c(models.make_dln_teacher_data, "key", 10, DIMS, match="key must be a JAX PRNG key"),
    c(models.make_dln_teacher_data, KEY, 10, DIMS, noise_std=-1.0, match="noise_std must be a finite real number >= 0"),
    c(models.make_dln_teacher_data, KEY, 10, DIMS, noise_std=np.nan, match="noise_std must be a finite"),
    c(models.load_digits_regression, np.int8, match="dtype must be a floating dtype"),
    # ---------------- noise
    c(noise.per_sample_grads, "loss", np.ones(3), X, Y1, match="loss_fn must be a callable"),
    c(noise.per_sample_grads, models.linreg_loss, np.ones(3), X, Y1[:4], match="same number of rows"),
    c(noise.per_sample_grads, models.linreg_loss, np.ones(2), X, Y1, match="theta must have d_in . d_out entries"),
    c(noise.per_sample_grads, models.linreg_loss, np.zeros(0), X, Y1, match="theta must not be empty"),
    c(noise.empirical_noise_cov, np.zeros((0, 3)), match="must not be empty"),
    c(noise.empirical_noise_cov, G[0], match="must have 2 dimension"),
    c(noise.empirical_noise_cov, np.full((2, 2), np.inf), match="finite"),
    c(noise.empirical_noise_cov, np.zeros((2, 200_000)), match="would need .* GiB"),
    c(noise.empirical_noise_cov, [["a", "b"]], match="real numeric array"),
    c(noise.minibatch_noise_cov, G, 2, replacement="no", match="replacement must be True or False"),
    c(noise.minibatch_noise_cov, G, 2.7, match="batch_size must be an integer"),
    c(noise.minibatch_noise_cov, G, 7, replacement=False, match="batch_size must be <= 6"),
    c(noise.estimate_noise_cov, G[0], 2, match="must have 2 dimension"),
    c(noise.estimate_noise_cov, G, -1, match="batch_size must be >= 1"),
    c(noise.batch_gradients, 42, G, 2, 3, match="key must be a JAX PRNG key"),
    c(noise.batch_gradients, KEY, G, 2, 2.7, match="n_batches must be an integer"),
    c(noise.batch_gradients, KEY, G, 2, 10**9, match="would need .* GiB"),
    c(noise.batch_gradients, KEY, G, 2, 3, sampling=3, match="sampling must be one of"),
    c(noise.batch_gradients, KEY, G, 0, 3, match="batch_size must be >= 1"),
    c(noise.batch_gradients_by_size, KEY, G, 2, 3, match="batch_sizes must be a 1-D sequence"),
    c(noise.batch_gradients_by_size, KEY, G, "12", 3, match="batch_sizes must be a 1-D sequence"),
    c(noise.batch_gradients_by_size, KEY, G, [1, 2.5], 3, match="each batch size must be an integer"),
    c(noise.batch_gradients_by_size, np.ones(3), G, [1, 2], 3, match="key must be a JAX PRNG key"),
    c(noise.batch_gradients_by_size, KEY, G, [1, 2], 10**9, match="would need .* GiB"),
    c(noise.linreg_population_noise_cov, np.ones(2), np.zeros(2), NOT_SYM, 0.5, match="input_cov must be symmetric"),
    c(noise.linreg_population_noise_cov, np.ones(2), np.zeros(2), H, np.nan, match="noise_std must be a finite"),
    c(noise.linreg_population_noise_cov, np.ones(2), np.zeros(2), H, "0.5", match="noise_std must be a finite"),
    c(noise.linreg_population_noise_cov, np.ones(2), np.zeros(2), np.eye(3), 0.5, match="must agree"),
    c(noise.linreg_population_noise_cov, np.zeros(0), np.zeros(0), H, 0.5, match="theta must not be empty"),
    c(noise.linreg_population_noise_cov, np.ones(2), np.zeros(2), INF2, 0.5, match="finite"),
    c(noise.dln_noise_cov, W1, W2, X[:, :2], Y, match="shapes must be W1"),
    c(noise.dln_noise_cov, W1, W2, X, Y[:4], match="same number of rows"),
    c(noise.dln_noise_cov, np.zeros((0, 3)), W2[:0], X, Y, match="must not be empty"),
    # ---------------- dln
    c(dln.dln_loss, W1, W2, X[:, :2], Y, match="X must have d0 = W1.shape.1. = 3 columns"),
    c(dln.dln_loss, W1, W2, X, Y[:, :1], match="Y must have d2 = W2.shape.0. = 2 columns"),
    c(dln.dln_loss, W1, W2[:, :1], X, Y, match="W2 .* must have d1"),
    c(dln.dln_loss, W1, W2, X, np.full((8, 2), np.nan), match="finite"),
    c(dln.residual_moment, W1.ravel(), W2, X, Y, match=r"W1 \(d1, d0\) must have 2 dimension"),
    c(dln.dln_grads, W1, W2, X, Y[:3], match="same number of rows"),
    c(dln.dln_flat_grad, THETA_DLN[:-1], X, Y, DIMS, match="theta must have d1.d0 . d2.d1 = 10"),
    c(dln.dln_flat_grad, THETA_DLN, X, Y, (3, 2, 2, 1), match=r"dims must be \(d0, d1, d2\)"),
    c(dln.commutation_matrix, 2.7, 3, match="m must be an integer"),
    c(dln.commutation_matrix, 0, 3, match="m must be >= 1"),
    c(dln.commutation_matrix, 1000, 1000, match="would need .* GiB"),
    c(dln.product_jacobian, np.zeros((2000, 2000)), np.zeros((2000, 2000)), match="would need .* GiB"),
    c(dln.product_jacobian, W1, "W2", match="real numeric array"),
    c(dln.dln_hessian, W1, W2, X, Y[:, :1], match="Y must have d2"),
    c(dln.whiten, X[:2], match="positive definite"),
    c(dln.whiten, X[:, 0], match="must have 2 dimension"),
    c(dln.whiten, np.zeros((0, 3)), match="must not be empty"),
    c(dln.modes, X, Y[:5], match="same number of rows"),
    c(dln.modes, X[:2], Y[:2], match="positive definite"),
    c(dln.mode_point, X, Y, 2, np.array([1.0, -1.0]), match="strengths must be >= 0"),
    c(dln.mode_point, X, Y, 1, np.array([1.0, 1.0]), match="at most min"),
    c(dln.mode_point, X, Y, 2.7, np.array([1.0]), match="d1 .* must be an integer"),
    c(dln.mode_point, X, Y, 2, np.array([1.0, 1.0]), R=np.ones((2, 2)), match="orthonormal"),
    c(dln.critical_point, X, Y, 2, [0], R=np.array([[2.0], [0.0]]), match="orthonormal columns"),
    c(dln.critical_point, X, Y, 2, [0], R=np.ones((3, 1)) / np.sqrt(3), match=r"R must have shape \(2, 1\)"),
    c(dln.critical_point, X, Y, 2, [0, 0], match="distinct indices"),
    c(dln.critical_point, X, Y, 2, [5], match="distinct indices in .0, 2."),
    c(dln.critical_point, X, Y, 2, [0.5], match="integer indices"),
    c(dln.critical_point, X, Y, 2, "0", match="real numeric array"),
    c(dln.critical_point, X, Y, 1, [0, 1], match="at most d1 = 1"),
    c(dln.critical_hessian_eigenvalues, np.array([2.0]), DIMS, [0], match="q = min.d0, d2. = 2 singular values"),
    c(dln.critical_hessian_eigenvalues, np.array([2.0, -1.0]), DIMS, [0], match="singular values .>= 0."),
    c(dln.critical_hessian_eigenvalues, np.array([2.0, 0.0]), DIMS, [1], match="with s_i > 0"),
    c(dln.critical_hessian_eigenvalues, np.array([2.0, 1.0]), (3, 2.5, 2), [0], match="must be an integer"),
    c(dln.critical_hessian_eigenvalues, np.ones(10**4), (10**4, 10**5, 10**4), [0], match="would need .* GiB"),
    c(dln.saxe_curve, np.array([2.0, 1.0]), 0.6, np.ones(3), match="a0 must be below"),
    c(dln.saxe_curve, np.array([2.0, 0.0]), 0.01, np.ones(3), match="s > 0"),
    c(dln.saxe_curve, np.array([2.0, 1.0]), 0.01, np.array([-1.0, 1.0]), match=r"t \(times\) must be >= 0"),
    c(dln.saxe_curve, np.array([2.0, 1.0]), 0.01, np.ones(3), loss_floor=np.inf, match="loss_floor must be a finite"),
    c(dln.saxe_curve, np.array([2.0, 1.0]), 0.01, np.ones(3), loss_floor="0", match="loss_floor must be a finite"),
    c(dln.mode_strengths, W1, W2, (1, 2), match="md must be the Modes"),
    c(dln.mode_strengths, W1[:, :2], W2, MD, match="data's shape"),
    c(dln.small_init, KEY, DIMS, -0.1, match="scale must be a finite number > 0"),
    c(dln.small_init, KEY, (3.7, 2, 2), 0.1, match="must be an integer"),
    c(dln.small_init, 7, DIMS, 0.1, match="key must be a JAX PRNG key"),
    c(dln.small_init, KEY, DIMS, 0.1, n_trajectories=2.5, match="n_trajectories must be an integer"),
    c(dln.small_init, KEY, DIMS, 0.1, n_trajectories=10**9, match="would need .* GiB"),
    c(dln.small_init, KEY, (10**6, 10**6, 1), 0.1, match="would need .* GiB"),
    c(dln.lazy_init, KEY, DIMS, 0.0, match="scale must be a finite number > 0"),
    c(dln.lazy_init, RAW_KEY[:1], DIMS, match="key must be a JAX PRNG key"),
    c(dln.lazy_init, KEY, DIMS, n_trajectories=0, match="n_trajectories must be >= 1"),
    c(dln.effective_rank, np.ones(3), match="matrix or a stack of matrices"),
    c(dln.effective_rank, np.full((2, 2), np.nan), match="finite"),
    c(dln.effective_rank, np.zeros((0, 2)), match="must not be empty"),
    c(dln.numerical_rank, W2, -1.0, match="threshold must be a finite number > 0"),
    c(dln.numerical_rank, np.ones(2), 0.1, match="matrix or a stack"),
    c(dln.dln_sde_cov, THETA_DLN, X, Y, -0.1, dims=DIMS, match="scale must be a finite real number >= 0"),
    c(dln.dln_drift, THETA_DLN, X, Y, dims=(3, 2), match=r"dims must be \(d0, d1, d2\)"),
    # ---------------- limiting
    c(limiting.ou_model, H, SIG, 0.1, 0.9, 4, mu=np.ones(3), match=r"mu must have shape \(2,\)"),
    c(limiting.ou_model, H, np.eye(3), 0.1, 0.9, 4, match="same shape"),
    c(limiting.ou_model, NOT_PSD, SIG, 0.1, 0.9, 4, match="positive semi-definite"),
    c(limiting.ou_model, H, SIG, 0.1, 1.0, 4, match="momentum beta must be in"),
    c(limiting.ou_model, H, SIG, -0.1, 0.9, 4, match="eta .* must be a finite number > 0"),
    c(limiting.ou_model, H, SIG, 0.1, 0.9, 2.7, match="batch_size must be an integer"),
    c(limiting.ou_model, H, SIG, 0.1, 0.9, 4, weight_decay=-1.0, match="weight_decay must be a finite real number >= 0"),
    c(limiting.ou_decomposition, np.diag([1.0, 0.0]), 0.5, 0.1, 0.9, match="positive definite"),
    c(limiting.ou_decomposition, H, -0.5, 0.1, 0.9, match="sigma2 must be a finite number > 0"),
    c(limiting.oscillator_rates, np.array([-1.0, 1.0]), 0.1, 0.9, match="rho . weight_decay must be >= 0"),
    c(limiting.oscillator_rates, np.zeros(0), 0.1, 0.9, match="must not be empty"),
    c(limiting.damping_ratio, np.array([np.nan]), 0.1, 0.9, match="finite"),
    c(limiting.mode_propagator, np.ones(2), np.ones(3), np.ones(1), match="must broadcast together"),
    c(limiting.mode_propagator, np.ones(2), np.ones(2), np.array([np.inf]), match="finite"),
    c(limiting.oscillator, np.ones(3), np.zeros(2), RHO, 0.1, 0.9, np.ones(2), match="same shape"),
    c(limiting.oscillator, np.ones(2), np.zeros(2), RHO, 0.1, 0.9, np.ones((2, 2)), match="must have 1 dimension"),
    c(limiting.stationary_variances, np.array([0.0, 1.0]), S2, 0.1, 0.9, 4, match="must be > 0"),
    c(limiting.stationary_variances, RHO, np.array([-0.2, 0.1]), 0.1, 0.9, 4, match="s .* must be >= 0"),
    c(limiting.stationary_variances, RHO, np.ones(3), 0.1, 0.9, 4, match="must broadcast together"),
    c(limiting.momentum_speed, 0.1, 0.9, 4, -1.0, match="trace_sigma2_H .* must be >= 0"),
    c(limiting.momentum_speed, 0.1, 0.9, 0, 1.0, match="batch_size must be >= 1"),
    c(limiting.velocity_correlation, np.ones((2, 2)), RHO, 0.1, 0.9, match="must have 1 dimension"),
    c(limiting.global_displacement, np.array([1, 2.7]), RHO, S2, 0.1, 0.9, 4, match="integer step counts"),
    c(limiting.global_displacement, np.array([0, 2]), RHO, S2, 0.1, 0.9, 4, match="integer step counts >= 1"),
    c(limiting.global_displacement, np.array([1, 2]), RHO, np.ones(3), 0.1, 0.9, 4, match="same shape"),
    c(limiting.global_displacement, np.array([10**12]), RHO, S2, 0.1, 0.9, 4, match="would need .* GiB"),
    c(limiting.discrete_transition, np.array([-1.0]), 0.1, 0.9, match="rho . weight_decay must be >= 0"),
    c(limiting.discrete_mode_moments, RHO, S2, 5.0, 0.0, 4, match="stationary law"),
    c(limiting.discrete_speed, RHO, np.array([np.nan, 1.0]), 0.1, 0.9, 4, match="finite"),
    c(limiting.discrete_stationary_cov, H, np.eye(3), 0.1, 0.9, 4, match="same shape"),
    c(limiting.discrete_stationary_cov, H, SIG, 5.0, 0.0, 4, match="unstable"),
    c(limiting.discrete_stationary_cov, NOT_SYM, SIG, 0.1, 0.9, 4, match="symmetric"),
    c(limiting.displacement_from_rest, np.array([0, 1]), RHO, S2, 0.1, 0.9, 4, model="exact", match="model must be one of"),
    c(limiting.displacement_from_rest, np.array([-1, 1]), RHO, S2, 0.1, 0.9, 4, match="integer step counts >= 0"),
    c(limiting.displacement_from_rest, np.array([0.5]), RHO, S2, 0.1, 0.9, 4, match="integer step counts"),
    c(limiting.stationary_displacement, np.array([0, 1]), RHO, S2[:1], 0.1, 0.9, 4, match="same shape"),
    c(limiting.stationary_displacement, np.array([0, 1]), RHO, S2, 0.1, 0.9, 4, model=None, match="model must be one of"),
    c(limiting.spectral_peak, RHO, 0.1, 0.9, model="fast", match="model must be one of"),
    c(limiting.linreg_noise_spectrum, np.ones(5), X, Y, U_ORTH, match="last dimension d_in . d_out = 6"),
    c(limiting.linreg_noise_spectrum, np.ones(6), X, Y, 2 * U_ORTH, match="orthonormal columns"),
    c(limiting.linreg_noise_spectrum, np.ones(6), X, Y, np.eye(2), match="orthonormal columns"),
    c(limiting.linreg_noise_spectrum, np.ones(6), X, Y[:3], U_ORTH, match="same number of rows"),
    # ---------------- stationary
    c(stationary.lyapunov, -A, D, match="positive real part"),
    c(stationary.lyapunov, A, NOT_PSD, match="positive semi-definite"),
    c(stationary.lyapunov, A, np.eye(3), match="same shape"),
    c(stationary.lyapunov, A[0], D, match="must have 2 dimension"),
    c(stationary.lyapunov, A[:, :1], D, match="square matrix"),
    c(stationary.lyapunov, np.zeros((0, 0)), np.zeros((0, 0)), match="must not be empty"),
    c(stationary.drift_decomposition, np.eye(2), np.diag([1.0, 0.0]), match="singular"),
    c(stationary.ou_stationary, A, D, mu=np.ones(3), match=r"mu must have shape \(2,\)"),
    c(stationary.gaussian_density, np.zeros((3, 2)), np.zeros(2), -np.eye(2), match="positive semi-definite"),
    c(stationary.gaussian_density, np.zeros((3, 2)), np.zeros(2), np.diag([1.0, 0.0]), match="positive definite"),
    c(stationary.gaussian_density, np.zeros((3, 3)), np.zeros(2), D, match="last dimension d = 2"),
    c(stationary.gaussian_density, np.zeros((3, 2)), np.zeros(2), np.eye(3), match=r"cov must have shape \(2, 2\)"),
    c(stationary.gaussian_density, np.zeros((3, 2)), np.zeros(2), NOT_SYM, match="symmetric"),
    c(stationary.ou_current, np.zeros((3, 3)), A, D, match="last dimension"),
    c(stationary.ou_area_rate, np.eye(1), np.eye(1), match="d >= 2"),
    c(stationary.ou_transient, A, D, np.array([-1.0]), np.ones(2), match="times t must be >= 0"),
    c(stationary.ou_transient, A, D, np.array([1.0]), np.ones(3), match=r"mean0 must have shape \(2,\)"),
    c(stationary.ou_transient, A, D, np.array([1.0]), np.ones(2), mu=np.ones(3), match=r"mu must have shape \(2,\)"),
    c(stationary.ou_transient, A, D, np.array([1.0]), np.ones(2), cov0=np.eye(3), match=r"cov0 must have shape \(2, 2\)"),
    c(stationary.ou_transient, A, D, np.ones((2, 2)), np.ones(2), match="scalar or a 1-D array"),
    c(stationary.gaussian_kl, np.zeros(2), -np.eye(2), np.zeros(2), D, match="positive semi-definite"),
    c(stationary.gaussian_kl, np.zeros(2), D, np.zeros(2), np.diag([1.0, 0.0]), match="positive definite"),
    c(stationary.gaussian_kl, np.zeros(2), D, np.zeros(3), D, match=r"mean1 .* must have shape \(2,\)"),
    c(stationary.gaussian_kl, np.zeros(2), np.eye(3), np.zeros(2), D, match="must have shape"),
    c(stationary.gaussian_kl, np.array([np.nan, 0.0]), D, np.zeros(2), D, match="finite"),
    c(stationary.make_grid, [-1.0], [1.0], 3.7, match="n .cells per axis. must be an integer"),
    c(stationary.make_grid, [-1.0], [1.0], 2, match="must be >= 3"),
    c(stationary.make_grid, [-1.0, -1.0], [1.0, 1.0], [10, 3.5], match="must be an integer"),
    c(stationary.make_grid, [-1.0, -1.0], [1.0, 1.0], [10, 10, 10], match="must be an integer or have shape"),
    c(stationary.make_grid, [1.0], [-1.0], 10, match="each high must exceed its low"),
    c(stationary.make_grid, [-1.0], [np.inf], 10, match="finite"),
    c(stationary.make_grid, [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], 10, match="shape .1,. or .2,."),
    c(stationary.make_grid, [-1.0], [1.0], 10**9, match="would need .* GiB"),
    c(stationary.make_grid, [-1.0, -1.0], [1.0, 1.0], 10**6, match="would need .* GiB"),
    c(stationary.fp_generator, GRID1, drift1, 1.0, alpha=1.5, match="alpha .* must be in"),
    c(stationary.fp_generator, "grid", drift1, 1.0, match="grid must be a Grid"),
    c(stationary.fp_generator, GRID1, lambda p: p[..., :0], 1.0, match="drift must give shape"),
    c(stationary.fp_generator, GRID1, lambda p: np.nan * p, 1.0, match="finite"),
    c(stationary.fp_generator, GRID1, drift1, -1.0, match="positive semi-definite in every cell"),
    c(stationary.fp_generator, GRID2, lambda p: -p, NOT_SYM, match="symmetric in every cell"),
    c(stationary.fp_generator, GRID2, lambda p: -p, np.eye(3), match="diffusion must be a scalar"),
    c(stationary.fp_current, GRID1, np.ones(7), drift1, 1.0, match="p must have the grid shape"),
    c(stationary.fp_current, GRID1, np.ones(8), drift1, 1.0, alpha=-0.5, match="alpha .* must be in"),
    c(stationary.fp_stationary, GRID1, "drift", 1.0, match="real numeric array"),
    c(stationary.fp_evolve, GRID1, -np.ones(8), np.array([0.0]), drift1, 1.0, match="density .>= 0"),
    c(stationary.fp_evolve, GRID1, np.ones(8), np.array([1.0, 0.5]), drift1, 1.0, match="non-decreasing"),
    c(stationary.fp_evolve, GRID1, np.ones(8), np.array([]), drift1, 1.0, match="must not be empty"),
    c(stationary.gibbs_density, GRID1, lambda p: p[..., 0] ** 2, 0.0, match="temperature must be a finite number > 0"),
    c(stationary.gibbs_density, GRID1, np.ones(5), 1.0, match="potential must give the grid shape"),
    c(stationary.helmholtz_potential, (1, 2), lambda p: -p, D, match="grid must be a Grid"),
    c(stationary.effective_potential, np.array([1.0, 0.0]), 1.0, match="positive everywhere"),
    c(stationary.effective_potential, np.ones(2), -1.0, match="temperature must be a finite number > 0"),
    c(stationary.current_from_increments, PATH[:, :, :1], 0.1, EDGES, match=r"path must have shape \(T\+1, m, 2\)"),
    c(stationary.current_from_increments, PATH, 0.0, EDGES, match="dt must be a finite number > 0"),
    c(stationary.current_from_increments, PATH, 0.1, EDGES[0], match="edges must be a pair"),
    c(stationary.current_from_increments, PATH, 0.1, (EDGES[0][::-1], EDGES[1]), match="increasing, equally spaced"),
    c(stationary.current_from_increments, PATH, 0.1, (np.array([0.0, 1.0, 3.0]), EDGES[1]), match="equally spaced"),
    c(stationary.area_rate, PATH[:, :1], 0.1, match="m >= 2"),
    c(stationary.area_rate, PATH, 0.1, center=np.zeros(3), match=r"center must have shape \(2,\)"),
    c(stationary.area_rate, PATH[..., 0], 0.1, match="must have 3 dimension"),
    # ---------------- widgets and plotting
    c(widgets.figure_png, "fig", match="fig must be a matplotlib Figure"),
    c(widgets.figure_png, _fig, dpi=0, match="dpi must be >= 10"),
    c(widgets.frame_slider, render, [], description="B", match="number of slider values must be >= 1"),
    c(widgets.frame_slider, render, list(range(30)), description="B", match="must be <= 24"),
    c(widgets.frame_slider, render, "12", description="B", match="values must be a sequence"),
    c(widgets.frame_slider, render, [1, 2], description="", match="description must be a non-empty string"),
    c(widgets.frame_slider, render, [1, 2], description="B", readout_format="x", match="readout_format must be a format"),
    c(widgets.frame_slider, render, [1, 2], description="B", readout_format="{:d}", initial=0, width="1",
      match="width must be a CSS length"),
    c(widgets.frame_slider, render, [1.0, 1.0000001], description="B", match="distinct labels"),
    c(widgets.frame_slider, render, [1, 2], description="B", initial=2, match="initial .* must be <= 1"),
    c(widgets.frame_slider, "render", [1, 2], description="B", match="render must be a callable"),
    c(widgets.frame_slider, render, [1, np.inf], description="B", match="slider values must be finite"),
    c(widgets.frame_slider, render, 3, description="B", match="values must be a sequence"),
    c(plotting.figure, 0, match="ncols must be >= 1"),
    c(plotting.figure, 1, 2.5, match="nrows must be an integer"),
    c(plotting.figure, width=-1.0, match="width .inches. must be a finite number > 0"),
    c(plotting.figure, height=1e6, match="at most 50 inches"),
    c(plotting.cov_ellipse, "ax", np.zeros(2), SIG, match="ax must be a matplotlib Axes"),
    c(plotting.cov_ellipse, AX, np.zeros(3), SIG, match=r"mean \(2,\) must have shape \(2,\)"),
    c(plotting.cov_ellipse, AX, np.zeros(2), NOT_PSD, match="positive semi-definite"),
    c(plotting.cov_ellipse, AX, np.zeros(2), np.eye(3), match=r"cov must have shape \(2, 2\)"),
    c(plotting.cov_ellipse, AX, np.zeros(2), SIG, n_std=-2.0, match="n_std must be a finite number > 0"),
    c(plotting.loss_contours, AX, loss2d, (1.0, -1.0), (-1.0, 1.0), match="xlim must be .low, high."),
    c(plotting.loss_contours, AX, loss2d, (-1.0, 1.0), (0.0, np.inf), match="finite"),
    c(plotting.loss_contours, AX, "f", (-1.0, 1.0), (-1.0, 1.0), match="loss2d must be a vectorised callable"),
    c(plotting.loss_contours, AX, loss2d, (-1.0, 1.0), (-1.0, 1.0), n_grid=10**6, match="n_grid must be <= 4000"),
    c(plotting.loss_contours, AX, loss2d, (-1.0, 1.0), (-1.0, 1.0), levels=[3.0, 1.0], match="levels must be"),
    c(plotting.loss_contours, AX, lambda x, y: x[:3], (-1.0, 1.0), (-1.0, 1.0), match="one value per point"),
]


@pytest.mark.parametrize("fn, args, kwargs, match", CASES)
def test_bad_input_case(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        fn(*args, **kwargs)
    assert "; got " in str(err.value), "the message must name the value received"
    plt.close("all") if fn.__module__.endswith(("plotting", "widgets")) else None


def test_table_size():
    assert len(CASES) >= 170


# ----------------------------------------------------------------------------------------------
# jit: only theta / the key traced


def test_linreg_population_noise_cov_under_jit():
    S = np.diag([2.0, 0.5])
    f = jax.jit(lambda th: noise.linreg_population_noise_cov(th, jnp.zeros(2), S, 0.5, fourth_moments=jnp.array([12.0, 1.0])))
    th = jnp.array([0.8, -1.1])
    want = noise.linreg_population_noise_cov(np.asarray(th), np.zeros(2), S, 0.5, fourth_moments=np.array([12.0, 1.0]))
    np.testing.assert_allclose(np.asarray(f(th)), np.asarray(want), rtol=1e-6)
    g = jax.jit(lambda sig: noise.linreg_population_noise_cov(th, jnp.zeros(2), S, sig))  # traced noise_std
    np.testing.assert_allclose(np.asarray(g(0.5)), np.asarray(noise.linreg_population_noise_cov(th, np.zeros(2), S, 0.5)),
                               rtol=1e-6)


@pytest.mark.parametrize("inputs", ["gaussian", "student_t"])
def test_make_linreg_data_under_jit(inputs):
    f = jax.jit(lambda k: models.make_linreg_data(k, 12, 3, inputs=inputs, input_scales=jnp.array([1.0, 2.0, 0.5])))
    got, want = f(KEY), models.make_linreg_data(KEY, 12, 3, inputs=inputs, input_scales=np.array([1.0, 2.0, 0.5]))
    np.testing.assert_allclose(np.asarray(got.X), np.asarray(want.X), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got.Y), np.asarray(want.Y), rtol=1e-5)
    assert (got.input_cov is None) == (want.input_cov is None)
    xs = jax.vmap(lambda k: models.make_linreg_data(k, 4, 2).X)(jax.random.split(KEY, 3))  # batch of keys
    assert xs.shape == (3, 4, 2)


def test_raw_uint32_key_accepted():
    a = models.make_dln_teacher_data(RAW_KEY, 5, DIMS)
    assert a[0].shape == (5, 3)
