"""Alpha-stable sampling (samplers only; chapters 2 and 5).

Conventions (DESIGN.md section 5):

* :func:`sample_stable` -- symmetric alpha-stable ``S`` with characteristic function
  ``E[exp(i t S)] = exp(-|scale t|^alpha)``, equal in law to ``scipy.stats.levy_stable(alpha, 0,
  scale=scale)``; at ``alpha = 2`` this is ``N(0, 2 scale^2)``; at ``alpha = 1`` Cauchy(0, scale).
* :func:`sample_positive_stable` -- totally skewed positive a-stable ``W`` (0 < a < 1) with Laplace
  transform ``E[exp(-s W)] = exp(-s^a)``; in scipy's S1 parametrisation this is
  ``levy_stable(a, 1, scale=cos(pi a / 2)^(1/a))``.

Elliptical alpha-stable vectors (used by the SDE drivers, :mod:`sgdnotes.sde`): for ``G ~ N(0, S)``
and an independent ``W`` from :func:`sample_positive_stable` with ``a = alpha/2``, the vector
``Z = sqrt(W) G`` has ``E[exp(i <u, Z>)] = E[exp(-W u^T S u / 2)] = exp(-(u^T S u / 2)^(alpha/2))``:
every projection ``<u, Z>`` is symmetric alpha-stable with scale ``sqrt(u^T S u / 2)`` (at alpha = 2,
``W = 1`` and ``Z = G``).

Both samplers are Chambers--Mallows--Stuck / Kanter transforms of a uniform angle and an independent
standard exponential (Chambers, Mallows & Stuck 1976; Kanter 1975). The transforms are exposed on
arrays of uniforms (``*_from_uniforms``) so that the SDE simulator can feed them its own per-step
random words.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v


def _alpha(name, alpha, low, high, closed_high):
    a = v.in_range(name, alpha, low, high, closed_high=closed_high)
    if a <= low:
        v.fail(f"{name} must be > {low}", alpha)
    return a


def stable_from_uniforms(alpha: float, u1, u2):
    """Symmetric alpha-stable (scale 1) from two independent uniform(0, 1) arrays of one shape (CMS).

    ``V = pi (u1 - 1/2)`` uniform on (-pi/2, pi/2), ``E = -log u2`` standard exponential;
    ``S = sin(alpha V) / cos(V)^(1/alpha) * (cos((1 - alpha) V) / E)^((1 - alpha)/alpha)``.
    Exact for every alpha in (0, 2] (alpha = 1 gives tan V, a standard Cauchy). Static alpha.
    """
    V = jnp.pi * (u1 - 0.5)
    cosV = jnp.sin(jnp.pi * jnp.minimum(u1, 1.0 - u1))  # = cos V > 0 (rounded pi/2 could make cos V < 0)
    E = -jnp.log(u2)
    if alpha == 1.0:
        return jnp.sin(V) / cosV
    if alpha == 2.0:  # the general formula reduces to 2 sin(V) sqrt(E) ~ N(0, 2)
        return 2.0 * jnp.sin(V) * jnp.sqrt(E)
    return (jnp.sin(alpha * V) / cosV ** (1.0 / alpha)
            * (jnp.cos((1.0 - alpha) * V) / E) ** ((1.0 - alpha) / alpha))


def positive_stable_from_uniforms(a: float, u1, u2):
    """Positive a-stable with ``E[exp(-s W)] = exp(-s^a)`` from two uniform(0, 1) arrays (Kanter 1975).

    ``U = pi u1`` uniform on (0, pi), ``E = -log u2``;
    ``W = sin(a U) / sin(U)^(1/a) * (sin((1 - a) U) / E)^((1 - a)/a)``, 0 < a < 1; ``a = 1`` gives W = 1.
    """
    if a == 1.0:
        return jnp.ones_like(u1)
    U = jnp.pi * u1
    sinU = jnp.sin(jnp.pi * jnp.minimum(u1, 1.0 - u1))  # = sin U > 0 (rounded pi could make sin U < 0)
    E = -jnp.log(u2)
    return jnp.sin(a * U) / sinU ** (1.0 / a) * (jnp.sin((1.0 - a) * U) / E) ** ((1.0 - a) / a)


def _open_uniforms(key, shape, dtype):
    """Two independent uniform arrays on the open interval (0, 1) (no endpoint: log and 1/cos stay finite)."""
    tiny = jnp.finfo(dtype).tiny
    k1, k2 = jax.random.split(key)
    return (jax.random.uniform(k1, shape, dtype, minval=tiny, maxval=1.0),
            jax.random.uniform(k2, shape, dtype, minval=tiny, maxval=1.0))


def sample_stable(key, alpha: float, shape, *, scale: float = 1.0, dtype=jnp.float32):
    """Symmetric alpha-stable samples of ``shape``, equal in law to ``levy_stable(alpha, 0, scale=scale)``.

    key: JAX key; alpha in (0, 2] (alpha = 2: N(0, 2 scale^2)); scale > 0. -> array of ``shape``.
    Chambers--Mallows--Stuck; see :func:`stable_from_uniforms`.
    """
    v.key("key", key)
    alpha = _alpha("alpha (stability index)", alpha, 0.0, 2.0, True)
    scale = v.positive_float("scale", scale)
    u1, u2 = _open_uniforms(key, tuple(shape), dtype)
    return scale * stable_from_uniforms(alpha, u1, u2)


def sample_positive_stable(key, alpha: float, shape, *, dtype=jnp.float32):
    """Positive alpha-stable samples W of ``shape`` with Laplace transform ``E[exp(-s W)] = exp(-s^alpha)``.

    alpha in (0, 1] (alpha = 1: W = 1). Equal in law to scipy's
    ``levy_stable(alpha, 1, scale=cos(pi alpha / 2)^(1/alpha))`` (S1 parametrisation). For an elliptical
    beta-stable vector use ``alpha = beta / 2`` and ``sqrt(W) * Gaussian`` (module docstring).
    """
    v.key("key", key)
    alpha = _alpha("alpha (stability index of W)", alpha, 0.0, 1.0, True)
    u1, u2 = _open_uniforms(key, tuple(shape), dtype)
    return positive_stable_from_uniforms(alpha, u1, u2)


def positive_stable_scipy_scale(alpha: float) -> float:
    """scipy S1 scale ``cos(pi alpha/2)^(1/alpha)`` of the W of :func:`sample_positive_stable` (alpha < 1)."""
    alpha = _alpha("alpha (stability index of W)", alpha, 0.0, 1.0, False)
    return float(np.cos(np.pi * alpha / 2) ** (1.0 / alpha))
