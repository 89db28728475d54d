"""The argument checks the library shares; each returns the checked value, converted.

Why: a wrong argument should fail at once, before anything is computed or written, with ONE
line that names who was called, which argument was wrong, what it must be and what it got,
so that the message alone says how to fix the call (``GradScaler: growth_interval must be an
int >= 1, got 0``); written once here, that wording is the same everywhere. ``True`` and
``False`` do not pass as numbers (``num_layers=True`` is a mistake, though Python counts a
bool as an int), and NaN is in no range.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_int", "check_number", "int_tensor"]


def _fail(error, who, name, need, got):
    prefix = f"{who}: " if who else ""
    raise error(f"{prefix}{name} must be {need}, got {got}")


def _bounds(low, high, low_open=False, high_open=False):
    """The range as text: ``>= 0``, ``> 0``, ``<= 1``, ``in [0, 1)``, or ``""`` (no bound)."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def check_int(value, name, who=None, low=1, high=None, *, expected=None, type_error=False):
    """``value`` as an ``int`` in ``[low, high]`` (``None``: no bound); a bool is no int.

    Raises ``ValueError``: ``"{who}: {name} must be an int >= 1, got 0"``; ``expected``
    replaces the text after "must be" (e.g. ``"an int >= the current vocabulary (5)"``).
    With ``type_error=True`` a non-int raises ``TypeError`` (``"... must be an int, got
    float 2.5"``) and a value out of range ``ValueError`` (``"... must be >= 1, got 0"``).
    """
    bound = _bounds(low, high)
    need = expected or f"an int {bound}".rstrip()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if type_error:
            _fail(TypeError, who, name, "an int", f"{type(value).__name__} {value!r}")
        _fail(ValueError, who, name, need, repr(value))
    if (low is not None and value < low) or (high is not None and value > high):
        _fail(ValueError, who, name, bound if type_error and not expected else need, repr(value))
    return int(value)


def check_number(value, name, who=None, low=None, high=None, *, low_open=False,
                 high_open=False, finite=False, expected=None, type_error=False):
    """``value`` as a ``float`` between ``low`` and ``high`` (``None``: no bound;
    ``low_open``/``high_open``: the bound itself is excluded). NaN never passes, nor do
    infinities with ``finite=True``; a bool is no number.

    Raises ``ValueError``: ``"{who}: {name} must be a number in [0, 1], got 1.5"``;
    ``expected`` replaces the text after "must be". ``type_error=True`` splits the error as
    in :func:`check_int`: ``TypeError`` for a non-number, ``ValueError`` for the range.
    """
    bound = _bounds(low, high, low_open, high_open)
    need = expected or f"{'a finite number' if finite else 'a number'} {bound}".rstrip()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if type_error:
            _fail(TypeError, who, name, "a number", f"{type(value).__name__} {value!r}")
        _fail(ValueError, who, name, need, repr(value))
    ok = not math.isnan(value) and not (finite and math.isinf(value))
    if low is not None:
        ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        # after a separate type check the range alone is news: "must be > 0, got 0"
        short = type_error and not finite and bound and not expected
        _fail(ValueError, who, name, bound if short else need, repr(value))
    return float(value)


def int_tensor(x, name, device, who):
    """``x`` (a Tensor, or an array-like of ints) as an integer Tensor on ``device``.

    Raises ``TypeError`` if ``x`` does not hold integers, ``RuntimeError`` if it is a
    Tensor on another device than ``device`` (the model's).
    """
    # imported here, not at the top: the core packages import this module while they load
    from .autograd.tensor import Tensor, tensor

    if not isinstance(x, Tensor):
        arr = np.asarray(x)
        if arr.dtype.kind not in "iub":
            raise TypeError(f"{who}: {name} must hold integers, got {arr.dtype}")
        x = tensor(arr.astype(np.int64), device=device)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{who}: {name} must hold integers, got {x.dtype}")
    if x.device != device:
        raise RuntimeError(f"{who}: {name} is on {x.device}, the model on {device}; move it "
                           f"with .to('{device}')")
    return x
