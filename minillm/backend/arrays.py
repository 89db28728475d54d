"""Array helpers that differ by device: scatter-add, the embedding backward, column sums,
row reductions and ``erfc``.

Each one takes arrays of any device and picks the fastest correct way for it: a NumPy trick on
the CPU, a deterministic fused kernel on CuPy (:mod:`.cuda_kernels`), the plain reduction
elsewhere. The measurements behind the NumPy tricks are in PERFORMANCE.md.
"""
from __future__ import annotations

import numpy as np

from . import cuda_kernels, special
from .devices import device_of

__all__ = ["scatter_add", "index_add_rows", "column_sum", "row_max", "row_sum", "erfc"]


def _ufunc_at(xp):
    add = xp.add
    if hasattr(add, "at"):
        return add.at
    import cupyx  # older CuPy: cupy.add.at missing; cupyx.scatter_add is its predecessor
    return cupyx.scatter_add


def scatter_add(target, indices, values):
    """In place ``target[indices] += values`` where repeated indices accumulate.

    The one scatter-add of the library (the backward of advanced indexing). NumPy and
    current CuPy both provide ``add.at``; very old CuPy only ``cupyx.scatter_add``. On CuPy
    (fused kernels on) the indexed elements' flat positions go through the deterministic
    :func:`cuda_kernels.index_add_rows` instead of CuPy's atomic ``add.at``, so a GPU run
    gives the same bits every time.
    """
    xp = device_of(target).xp
    if cuda_kernels.use(xp) and target.flags.c_contiguous and target.size:
        flat = xp.arange(target.size, dtype=np.int64).reshape(target.shape)[indices]
        vals = xp.broadcast_to(xp.asarray(values, dtype=target.dtype), flat.shape)
        cuda_kernels.index_add_rows(target.reshape(-1, 1), flat.reshape(-1),
                                    vals.reshape(-1, 1))
        return target
    _ufunc_at(xp)(target, indices, values)
    return target


def index_add_rows(target, rows, values):
    """``target[rows[i]] += values[i]`` for a 1-D integer ``rows``: the embedding backward.

    Deterministic on every device: on the CPU the rows are sorted and each run summed with
    ``add.reduceat`` (much faster than ``np.add.at`` on big tables); on CuPy one fused
    kernel sums each run in sorted order (:func:`cuda_kernels.index_add_rows`; an atomic
    scatter-add would sum in arrival order, so identical runs would differ by rounding);
    elsewhere (the stand-in device, or the CuPy kernels switched off) :func:`scatter_add`.
    """
    if isinstance(target, np.ndarray) and rows.size:
        order = np.argsort(rows, kind="stable")
        r = rows[order]
        starts = np.flatnonzero(np.concatenate(([True], r[1:] != r[:-1])))
        target[r[starts]] += np.add.reduceat(values[order], starts, axis=0)
        return target
    xp = device_of(target).xp
    if cuda_kernels.use(xp) and target.ndim == 2 and values.ndim == 2:
        return cuda_kernels.index_add_rows(target, rows, values)
    _ufunc_at(xp)(target, rows, values)
    return target


def column_sum(a2):
    """The sum over the rows of a 2-D array (bias gradients): ``a2.sum(axis=0)``; on CuPy
    one coalesced, deterministic kernel (:func:`cuda_kernels.column_sums`)."""
    xp = device_of(a2).xp
    if cuda_kernels.use(xp) and a2.ndim == 2:
        return cuda_kernels.column_sums(a2)[1].astype(a2.dtype, copy=False)
    return a2.sum(axis=0)


def row_max(a, axis=-1):
    """The maximum over ``axis`` (default the last: each row), kept as a length-1 axis:
    ``a.max(axis=axis, keepdims=True)``.

    On NumPy it is found by ``argmax`` and a gather: NumPy's max is slow on short rows such
    as attention scores (see PERFORMANCE.md). The value is the same, NaN included: argmax
    stops at the first NaN. Other axes, and other arrays than NumPy's, use ``max``.
    """
    if isinstance(a, np.ndarray) and axis in (-1, a.ndim - 1) and a.ndim and a.shape[-1]:
        return np.take_along_axis(a, a.argmax(axis=-1)[..., None], axis=-1)
    return a.max(axis=axis, keepdims=True)


def row_sum(a, axis=-1):
    """The sum over ``axis`` (default the last: each row), kept as a length-1 axis:
    ``a.sum(axis=axis, keepdims=True)``.

    On NumPy, float32 and float64 rows are summed as one matrix-vector product with a vector
    of ones (BLAS gemv): NumPy's sum is slow on short rows (see PERFORMANCE.md). Other
    dtypes, float16 among them, and other axes use ``sum``.
    """
    if (isinstance(a, np.ndarray) and axis in (-1, a.ndim - 1) and a.ndim
            and a.dtype in (np.float32, np.float64) and a.shape[-1]):
        return (a @ np.ones(a.shape[-1], dtype=a.dtype))[..., None]
    return a.sum(axis=axis, keepdims=True)


def erfc(x):
    """Complementary error function on any device."""
    return special.erfc(device_of(x).xp, x)
