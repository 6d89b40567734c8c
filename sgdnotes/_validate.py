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
    shape = getattr(value, "shape", None)
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


def positive_float(name: str, value) -> float:
    """A finite real number > 0; returns it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        if not (hasattr(value, "shape") and np.ndim(value) == 0):
            fail(f"{name} must be a real number > 0", value)
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        fail(f"{name} must be a finite number > 0", value)
    return v


def in_range(name: str, value, low: float, high: float, closed_high: bool = False) -> float:
    """A real number in [low, high) (or [low, high] if ``closed_high``)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        fail(f"{name} must be a real number in [{low}, {high}{']' if closed_high else ')'}", value)
    v = float(value)
    ok = low <= v <= high if closed_high else low <= v < high
    if not ok or not np.isfinite(v):
        fail(f"{name} must be in [{low}, {high}{']' if closed_high else ')'}", value)
    return v


def one_of(name: str, value, options) -> str:
    """A string among ``options``."""
    if value not in options:
        fail(f"{name} must be one of {sorted(options)}", value)
    return value


def array(name: str, value, ndim: int | None = None, finite: bool = True) -> np.ndarray:
    """A real array (returned as-is if already an array) with the given number of dimensions.

    Non-finite entries are rejected when ``finite`` (data and initial points must be finite); the check
    needs concrete values, so it is skipped for values traced under ``jit``/``grad``/``vmap``.
    """
    arr = value if hasattr(value, "shape") and hasattr(value, "dtype") else np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        fail(f"{name} must be a real numeric array", value)
    if ndim is not None and arr.ndim != ndim:
        fail(f"{name} must have {ndim} dimension(s)", value)
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


def symmetric_psd(name: str, value, tol: float = 1e-8) -> np.ndarray:
    """A finite symmetric positive semi-definite (d, d) matrix (up to ``tol`` relative)."""
    arr = np.asarray(square(name, value), dtype=float)
    scale = max(1.0, float(np.max(np.abs(arr))))
    if not np.allclose(arr, arr.T, atol=tol * scale):
        fail(f"{name} must be symmetric", value)
    if np.linalg.eigvalsh((arr + arr.T) / 2).min() < -tol * scale:
        fail(f"{name} must be positive semi-definite", value)
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
