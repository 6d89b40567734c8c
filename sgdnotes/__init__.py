"""sgdnotes: the simulators and checks behind the book "Beyond Langevin".

Modules (one concept each): ``models`` problems and data, ``noise`` gradient-noise covariances,
``ensemble`` the step loop shared by ``sgd`` (SGD ensembles) and ``sde`` (Euler--Maruyama ensembles),
``stable`` alpha-stable samplers and tail-index estimators, ``escape`` exit times and rates, ``centralflow`` sharpness and central flows, ``fractional`` fractional time and long memory,
``stationary`` Fokker--Planck objects, ``dln`` deep linear networks,
``limiting`` momentum-SGD closed forms, ``stats`` standard errors and the book's statistical asserts,
``plotting`` house style, ``distances`` distribution distances from samples and ``experiment`` the
proposal's SGD-vs-SDE grid and its command line (chapter 9; import it as ``from sgdnotes import
experiment`` -- it is not imported eagerly, so that ``python -m sgdnotes.experiment`` runs it cleanly), ``widgets`` sliders that work without a kernel. The public names below are
re-exported; each module's docstrings give shapes, conventions and the introducing chapter.
"""

from . import (
    centralflow, distances, dln, ensemble, escape, fractional, limiting, models, noise, plotting, sde, sgd, stable, stationary, stats,
    widgets,
)
from .centralflow import (
    CentralFlow,
    central_flow,
    gradient_descent,
    hvp,
    sharpness,
    sharpness_grad,
    solve_lcp,
    top_eigenpairs,
)
from .ensemble import DivergenceError, EnsembleResult, pooled_moments
from .fractional import (
    FPGrid,
    dfa_hurst,
    fgn,
    inverse_subordinator,
    mittag_leffler,
    subordinated_ou,
    time_fractional_fp,
)
from .models import (
    Dataset,
    dln2_loss,
    dln_pack,
    dln_unpack,
    linreg_full_loss,
    linreg_hessian,
    linreg_loss,
    linreg_minimiser,
    load_digits_regression,
    make_dln_teacher_data,
    make_linreg_data,
)
from .noise import (
    batch_gradients,
    batch_gradients_by_size,
    dln_noise_cov,
    empirical_noise_cov,
    estimate_noise_cov,
    linreg_population_noise_cov,
    minibatch_noise_cov,
    per_sample_grads,
)
from .sde import (
    brownian_increments,
    empirical_factor,
    linreg_moments,
    minibatch_driver,
    run_sde,
    run_sgd_sde,
    sqrt_psd,
    stable_driver,
)
from .stable import (
    block_tail_index,
    hill_estimator,
    hill_k,
    kesten_index,
    sample_positive_stable,
    sample_stable,
    stable_scale,
    tail_index,
)
from .sgd import batch_indices, run_sgd, trajectory_keys
from .stationary import drift_decomposition, lyapunov
from .stats import assert_agrees, assert_rejects, chapter_seed
from .widgets import frame_slider

__all__ = [
    "centralflow", "distances", "dln", "ensemble", "escape", "fractional", "limiting", "models", "noise", "plotting", "sde", "sgd", "stable", "stationary", "stats", "widgets",
    "CentralFlow", "central_flow", "gradient_descent", "hvp", "sharpness", "sharpness_grad", "solve_lcp",
    "top_eigenpairs",
    "FPGrid", "dfa_hurst", "fgn", "inverse_subordinator", "mittag_leffler", "subordinated_ou",
    "time_fractional_fp",
    "DivergenceError", "EnsembleResult", "pooled_moments",
    "Dataset", "dln2_loss", "dln_pack", "dln_unpack", "linreg_full_loss", "linreg_hessian", "linreg_loss",
    "linreg_minimiser", "load_digits_regression", "make_dln_teacher_data", "make_linreg_data",
    "batch_gradients", "batch_gradients_by_size", "dln_noise_cov", "empirical_noise_cov",
    "estimate_noise_cov", "linreg_population_noise_cov", "minibatch_noise_cov", "per_sample_grads",
    "brownian_increments", "empirical_factor", "linreg_moments", "minibatch_driver", "run_sde", "run_sgd_sde",
    "sqrt_psd", "stable_driver", "sample_positive_stable", "sample_stable",
    "block_tail_index", "hill_estimator", "hill_k", "kesten_index", "stable_scale", "tail_index",
    "batch_indices", "run_sgd", "trajectory_keys",
    "drift_decomposition", "lyapunov",
    "assert_agrees", "assert_rejects", "chapter_seed",
    "frame_slider",
]
