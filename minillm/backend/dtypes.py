"""The default floating dtype of new tensors and parameters (float32 unless changed)."""
from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["get_default_dtype", "set_default_dtype", "default_dtype_as"]

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_default_dtype = np.dtype(np.float32)


def get_default_dtype():
    return _default_dtype


@contextlib.contextmanager
def default_dtype_as(dtype):
    """``with default_dtype_as(np.float64):`` new parameters use ``dtype``; restored after."""
    prev = _default_dtype
    if dtype is not None:
        set_default_dtype(dtype)
    try:
        yield get_default_dtype()
    finally:
        set_default_dtype(prev)


def set_default_dtype(dtype):
    """Floating dtype for new tensors and parameters: ``np.float32`` (default) or ``np.float64``."""
    global _default_dtype
    d = np.dtype(dtype)
    if d not in _FLOAT_DTYPES:
        raise TypeError(f"default dtype must be a floating type (float16/32/64), got {d}")
    _default_dtype = d
    return d
