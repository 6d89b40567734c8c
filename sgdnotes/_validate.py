"""Input checks shared by every public function of ``sgdnotes``.

Each check raises ``ValueError("<rule>; got <value> (<type>, shape <shape>)")`` so that the
message names both the rule that was broken and what was received.
"""

from __future__ import annotations

import numbers

import jax
import numpy as np


def describe(value) -> str:
    """Short description of a value for error messages: repr (truncated), type and shape."""
    shape = None if isinstance(value, type) else getattr(value, "shape", None)  # np.int8 (a class) has .shape
    try:
        shape = None if shape is None else tuple(shape)
    except TypeError:
        shape = None
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if shape is not None:
        return f"{text} ({type(value).__name__}, shape {tuple(shape)})"
    return f"{text} ({type(value).__name__})"


def fail(rule: str, value) -> None:
    """Raise the package's standard ValueError."""
    raise ValueError(f"{rule}; got {describe(value)}")


def positive_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer with ``minimum <= value <= maximum``; returns it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        fail(f"{name} must be an integer", value)
    if value < minimum:
        fail(f"{name} must be >= {minimum}", value)
    if maximum is not None and value > maximum:
        fail(f"{name} must be <= {maximum}", value)
    return int(value)


def _real_scalar(name: str, value, rule: str) -> float:
    """``float(value)`` for a real scalar (Python/NumPy number or 0-d real array), else the package error."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        dtype = getattr(value, "dtype", None)
        if not (hasattr(value, "shape") and np.ndim(value) == 0 and dtype is not None
                and (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer))):
            fail(f"{name} must be {rule}", value)
        if isinstance(value, jax.core.Tracer):
            fail(f"{name} must be a concrete number (not traced under jit)", value)
    return float(value)


def positive_float(name: str, value) -> float:
    """A finite real number > 0; returns it as ``float``."""
    v = _real_scalar(name, value, "a real number > 0")
    if not np.isfinite(v) or v <= 0:
        fail(f"{name} must be a finite number > 0", value)
    return v


def in_range(name: str, value, low: float, high: float, closed_high: bool = False) -> float:
    """A real number in [low, high) (or [low, high] if ``closed_high``)."""
    v = _real_scalar(name, value, f"a real number in [{low}, {high}{']' if closed_high else ')'}")
    ok = low <= v <= high if closed_high else low <= v < high
    if not ok or not np.isfinite(v):
        fail(f"{name} must be in [{low}, {high}{']' if closed_high else ')'}", value)
    return v


def real(name: str, value, minimum: float | None = None) -> float:
    """A finite real number (``>= minimum`` if given); returns it as ``float``."""
    rule = "a finite real number" + ("" if minimum is None else f" >= {minimum:g}")
    x = _real_scalar(name, value, rule)
    if not np.isfinite(x) or (minimum is not None and x < minimum):
        fail(f"{name} must be {rule}", value)
    return x


def count(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """Like :func:`positive_int`, but also accepts integral floats (3.0); 2.7 is refused, never truncated."""
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        value = int(value)
    return positive_int(name, value, minimum, maximum)


def boolean(name: str, value) -> bool:
    """A Python or NumPy bool."""
    if not isinstance(value, (bool, np.bool_)):
        fail(f"{name} must be True or False", value)
    return bool(value)


def function(name: str, value, what: str = "a callable"):
    """A callable (a function passed as an argument)."""
    if not callable(value):
        fail(f"{name} must be {what}", value)
    return value


#: Largest array (in bytes) that a size argument may ask sgdnotes to allocate (2 GiB).
MAX_BYTES = 2 * 1024**3


def memory(what: str, shape, itemsize: int = 8) -> None:
    """Refuse up front an allocation of ``prod(shape)`` items above :data:`MAX_BYTES`, naming its size."""
    nbytes = float(np.prod([float(s) for s in shape])) * itemsize
    if nbytes > MAX_BYTES:
        fail(f"{what} of shape {tuple(int(s) for s in shape)} would need {nbytes / 1024**3:.3g} GiB, "
             f"above the {MAX_BYTES / 1024**3:g} GiB limit", tuple(int(s) for s in shape))


def float_dtype(name: str, value):
    """A floating dtype (e.g. ``jnp.float32``); returns ``np.dtype``."""
    try:
        dt = np.dtype(value)
    except TypeError:
        dt = None
    if dt is None or not np.issubdtype(dt, np.floating) or isinstance(value, (np.ndarray, list, tuple)):
        fail(f"{name} must be a floating dtype such as jnp.float32", value)
    return dt


def one_of(name: str, value, options) -> str:
    """A string among ``options``."""
    if not isinstance(value, str) or value not in options:
        fail(f"{name} must be one of {sorted(options)}", value)
    return value


def array(name: str, value, ndim: int | None = None, finite: bool = True, nonempty: bool = False,
          shape: tuple | None = None) -> np.ndarray:
    """A real array (returned as-is if already an array) with the given number of dimensions.

    Non-finite entries are rejected when ``finite`` (data and initial points must be finite); the check
    needs concrete values, so it is skipped for values traced under ``jit``/``grad``/``vmap``.
    ``nonempty`` rejects arrays with no entries; ``shape`` (entries ``None`` = any size) fixes the shape.
    """
    if isinstance(value, (str, bytes)) or value is None or callable(value):
        fail(f"{name} must be a real numeric array", value)
    try:
        arr = value if hasattr(value, "shape") and hasattr(value, "dtype") else np.asarray(value)
    except (ValueError, TypeError):  # ragged nested sequences
        fail(f"{name} must be a real numeric array (not a ragged sequence)", value)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        fail(f"{name} must be a real numeric array", value)
    if ndim is not None and arr.ndim != ndim:
        fail(f"{name} must have {ndim} dimension(s)", value)
    if nonempty and arr.size == 0:
        fail(f"{name} must not be empty", value)
    if shape is not None and (arr.ndim != len(shape)
                              or any(s is not None and a != s for a, s in zip(arr.shape, shape))):
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        fail(f"{name} must have shape {want}", value)
    if finite and not isinstance(arr, jax.core.Tracer) and not bool(np.all(np.isfinite(np.asarray(arr)))):
        fail(f"{name} must contain only finite values (no NaN/inf)", value)
    return arr


def same_rows(X, Y) -> None:
    """X (n, d_in) and Y (n, d_out) must have the same number of rows (samples)."""
    if X.shape[0] != Y.shape[0]:
        fail(f"X and Y must have the same number of rows (samples); X has {X.shape[0]} rows, Y", Y)


def square(name: str, value) -> np.ndarray:
    """A finite (d, d) matrix."""
    arr = array(name, value, ndim=2)
    if arr.shape[0] != arr.shape[1]:
        fail(f"{name} must be a square matrix", value)
    return arr


def symmetric_psd(name: str, value, tol: float = 1e-8, definite: bool = False) -> np.ndarray:
    """A finite symmetric positive semi-definite (d, d) matrix (up to ``tol`` relative); with
    ``definite`` it must be positive definite (its Cholesky factorisation must succeed)."""
    arr = np.asarray(square(name, value), dtype=float)
    if arr.size == 0:
        fail(f"{name} must not be empty", value)
    scale = max(1.0, float(np.max(np.abs(arr))))
    if not np.allclose(arr, arr.T, atol=tol * scale):
        fail(f"{name} must be symmetric", value)
    if np.linalg.eigvalsh((arr + arr.T) / 2).min() < -tol * scale:
        fail(f"{name} must be positive semi-definite", value)
    if definite:  # scale-free: a Cholesky factor exists (tiny but positive eigenvalues pass)
        try:
            np.linalg.cholesky((arr + arr.T) / 2)
        except np.linalg.LinAlgError:
            fail(f"{name} must be positive definite", value)
    return arr


def key(name: str, value):
    """A JAX PRNG key: a typed key (``jax.random.key``) or a raw uint32 key of shape (2,); returned as-is."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if getattr(value, "shape", None) != ():
            fail(f"{name} must be a single PRNG key (shape ()), not a batch of keys", value)
        return value
    if dtype is not None and np.dtype(dtype) == np.uint32 and tuple(value.shape) == (2,):
        return value
    fail(f"{name} must be a JAX PRNG key from jax.random.key(seed)", value)
