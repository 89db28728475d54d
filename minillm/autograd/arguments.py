"""What the ops share about their arguments: summing a gradient back to a broadcast input's
shape, normalising axes, and turning Python scalars and array pairs into operands."""
from __future__ import annotations

import builtins
import numbers

import numpy as np

from .tensor import Tensor


def unbroadcast(g, shape):
    """Sum ``g`` down to ``shape``: the backward of NumPy broadcasting."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape)
                                      if s == 1 and g.shape[i + lead] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


def normalize_axis(axis, ndim, op="op"):
    """``None``/int/tuple -> sorted tuple of non-negative axes (validated)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -ndim <= a < builtins.max(ndim, 1):
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dims")
        out.append(int(a) % builtins.max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def _scalar(v):
    """Python scalars stay 'weak' (they take the tensor's dtype); NumPy scalars become Python ones."""
    return v.item() if isinstance(v, np.generic) else v


def _binary_operands(a, b, op):
    """Check and normalise the operands of a binary op; one must be a Tensor."""
    ta, tb = isinstance(a, Tensor), isinstance(b, Tensor)
    ref = a if ta else b
    out = []
    for v, is_t in ((a, ta), (b, tb)):
        if is_t:
            out.append(v)
        elif isinstance(v, (numbers.Number, np.generic)):
            out.append(_scalar(v))
        elif isinstance(v, (np.ndarray, list, tuple)):
            if ref._device.type != "cpu":
                raise TypeError(f"{op}: a host {type(v).__name__} cannot be combined with a tensor "
                                f"on '{ref.device}'; wrap it with mm.tensor(..., device=...)")
            arr = np.asarray(v)
            if arr.dtype.kind == "f" and ref.dtype.kind == "f":
                arr = arr.astype(ref.dtype)
            out.append(Tensor._make(arr, ref._device, False))
        else:
            raise TypeError(f"{op}: unsupported operand type {type(v).__name__}")
    x, y = out
    if isinstance(x, Tensor) and isinstance(y, Tensor):
        dx, dy = x.dtype, y.dtype
        if dx != dy and dx.kind == "f" and dy.kind == "f":
            raise TypeError(f"{op}: dtype mismatch {dx} vs {dy} (shapes {x.shape}, {y.shape}); "
                            "minillm does not promote silently: convert one with .astype()")
    return x, y


def _shape_of(v):
    return v.shape if hasattr(v, "shape") else None
