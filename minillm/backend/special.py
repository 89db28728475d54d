"""Special functions NumPy lacks: ``erfc`` (for the exact GELU), vectorised.

NumPy has no ``erf``. We evaluate the scaled complementary error function
``erfcx(t) = exp(t^2) * erfc(t)`` for ``t >= 0``, which is smooth and slowly varying,
with a Chebyshev series in the variable ``u = (t - k) / (t + k)`` that maps
``[0, inf)`` onto ``[-1, 1)`` (the mapping Weideman (1994) uses for erfc). The series
coefficients are *fitted once, at first use*, from Python's scalar ``math.erfc`` at
Chebyshev nodes, so no magic constants are copied from anywhere and the accuracy is
checked by a test against ``math.erfc``. Then

    erfc(t)  = exp(-t^2) * erfcx(t)          (t >= 0, full relative precision in the tail)
    erfc(-t) = 2 - erfc(t)

CuPy ships ``cupyx.scipy.special.erfc``; the backend uses it on the GPU.
"""
from __future__ import annotations

import math

import numpy as np

K = 4.0           # scale of the mapping t = K (1 + u) / (1 - u) (fast_cpu uses it too)
_DEGREE = 24      # fitted degree: max relative error of erfc 8e-14 (test_backend checks it)
_TERMS_F32 = 14   # terms used for float32 inputs (evaluated in float32): ~4e-6 relative
_coef = None


def _erfcx_scalar(t):
    if t < 25.0:
        return math.erfc(t) * math.exp(t * t)
    # asymptotic series for large t: 1/(t sqrt(pi)) * (1 - 1/(2t^2) + 3/(4t^4) - 15/(8t^6))
    s = 1.0 / (2.0 * t * t)
    return (1.0 - s + 3.0 * s * s - 15.0 * s ** 3 + 105.0 * s ** 4) / (t * math.sqrt(math.pi))


def _coefficients():
    global _coef
    if _coef is None:
        n = _DEGREE + 1
        theta = np.pi * (np.arange(n) + 0.5) / n
        u = np.cos(theta)
        t = K * (1.0 + u) / (1.0 - u)
        f = np.array([_erfcx_scalar(float(v)) for v in t])
        # discrete Chebyshev transform at the nodes of the first kind
        j = np.arange(n)
        c = (2.0 / n) * np.cos(np.outer(j, theta)) @ f
        c[0] /= 2.0
        _coef = c
    return _coef


def _clenshaw(xp, c, u):
    b1 = xp.zeros_like(u)
    b2 = xp.zeros_like(u)
    two_u = 2.0 * u
    for ck in c[:0:-1]:
        b1, b2 = two_u * b1 - b2 + ck, b1
    return u * b1 - b2 + c[0]


def erfcx_coefficients(dtype):
    """The Chebyshev coefficients of ``erfcx`` used for arrays of ``dtype`` (fewer, in
    float32, for float32 arrays)."""
    c = _coefficients()
    return c[:_TERMS_F32].astype(np.float32) if np.dtype(dtype) == np.float32 else c


def erfcx_nonneg(xp, t):
    """``exp(t^2) erfc(t)`` for ``t >= 0``, in t's dtype (fewer terms for float32)."""
    u = (t - K) / (t + K)
    return _clenshaw(xp, erfcx_coefficients(t.dtype), u)


def erfc(xp, x):
    """Complementary error function of a float array on any array module."""
    if getattr(xp, "__name__", "") == "cupy":
        from cupyx.scipy import special  # the backend is the only place that imports CuPy
        return special.erfc(x)
    work = x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)
    a = xp.abs(work)
    tail = xp.exp(-a * a) * erfcx_nonneg(xp, a)
    return xp.where(work >= 0, tail, 2 - tail).astype(x.dtype, copy=False)
