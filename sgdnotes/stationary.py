"""Fokker--Planck objects for linear SDEs and stationary laws (chapter 3; used again in chapter 8).

Linear SDE convention: ``d x = -A (x - mu) dt + sqrt(2 D) dW`` with drift matrix A (d, d) (eigenvalues
with positive real part) and symmetric PSD diffusion D (d, d). Its stationary law is
``N(mu, B)`` where B solves the Lyapunov equation ``A B + B A^T = 2 D``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from . import _validate as v


def lyapunov(A, D):
    """Stationary covariance B (d, d) of ``dx = -A x dt + sqrt(2D) dW``: solves ``A B + B A^T = 2 D``.

    A (d, d) must be stable (all eigenvalues with positive real part); D (d, d) symmetric PSD.
    """
    A = np.asarray(v.square("A (drift matrix)", A), dtype=float)
    D = v.symmetric_psd("D (diffusion matrix)", D)
    if A.shape != D.shape:
        v.fail(f"A and D must have the same shape; A is {A.shape}, D", D)
    if np.min(np.real(np.linalg.eigvals(A))) <= 0:
        v.fail("A must have eigenvalues with positive real part (a stable drift -A x)", A)
    B = scipy.linalg.solve_continuous_lyapunov(A, 2.0 * D)
    return (B + B.T) / 2


def drift_decomposition(A, D):
    """(Q, U) with ``A = (D + Q) U``, Q antisymmetric and U symmetric positive definite (d, d) each.

    ``U = B^{-1}`` for the stationary covariance B = :func:`lyapunov` (A, D) and ``Q = A B - D``; Q is
    antisymmetric exactly because B solves the Lyapunov equation. Needs B invertible (D of full rank
    on the controllable subspace).
    """
    B = lyapunov(A, D)
    A = np.asarray(A, dtype=float)
    D = np.asarray(D, dtype=float)
    Q = A @ B - D
    Q = (Q - Q.T) / 2
    U = np.linalg.inv(B)
    return Q, (U + U.T) / 2
