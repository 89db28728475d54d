"""The argument checks of :mod:`minillm.functional`: one line of error naming the op, the
argument and what to pass instead, raised before any work is done."""
from __future__ import annotations

from ..autograd.tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _check_tensor(x, name, op, floating=True):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    if floating and x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be floating point, got {x.dtype}")


def _check_same(op, *named):
    tensors = [(n, t) for n, t in named if isinstance(t, Tensor)]
    devs = {str(t.device) for _, t in tensors}
    if len(devs) > 1:
        raise RuntimeError(f"{op}: tensors on different devices: "
                           + ", ".join(f"{n} on {t.device}" for n, t in tensors))
    fdt = {t.dtype for _, t in tensors if t.dtype.kind == "f"}
    if len(fdt) > 1:
        raise TypeError(f"{op}: dtype mismatch: "
                        + ", ".join(f"{n} {t.dtype}" for n, t in tensors if t.dtype.kind == "f")
                        + "; convert with .astype()")


def _check_reduction(reduction, op):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
