"""The kernel table: which code computes a fused op on each kind of device.

Every fused op of :mod:`minillm.functional` (softmax, cross-entropy, GELU, layer norm,
attention) has a *plain* version there: a forward and a backward on arrays that read like
the op's equations. That version is registered here as the op's reference. A device kind may
register a *fast* version of the same math: cache-blocked in-place NumPy on the CPU
(:mod:`.fast_cpu`), one CUDA kernel per pass on the GPU (:mod:`.cuda_fast`). ``select``
picks, once per call, the kernel for the arrays' device; with the reference switch on
(:func:`use_reference_kernels`, or ``MINILLM_REFERENCE_KERNELS=1``) it always picks the plain
one, so the whole library runs on the math a learner reads. The tests run both and compare.

A kernel is a pair of array functions::

    forward(xp, *arrays, **options) -> (output, saved)
    backward(xp, saved, grad)       -> gradients

**float16.** Kernels that are not marked ``float16=True`` see float16 inputs (mixed
precision) converted to float32, and their results converted back: the *float32 island*,
written once in :func:`float32_island`. In float16 the sum of the exponentials of a
softmax row overflows 65504, and ``lse - z[target]`` next to large logits rounds to a
multiple of 8.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import cuda_kernels

__all__ = ["Kernel", "register", "select", "use_reference_kernels", "reference_kernels_on",
           "float32_island", "table"]

ENV = "MINILLM_REFERENCE_KERNELS"


@dataclass(frozen=True)
class Kernel:
    """One implementation of a fused op: ``forward(xp, ...) -> (out, saved)`` and
    ``backward(xp, saved, grad) -> grads``. ``float16``: it handles float16 itself.
    ``keep_float32``: under the float32 island the output stays float32 (a loss)."""

    forward: Callable
    backward: Callable
    float16: bool = False
    keep_float32: bool = False


_TABLE: dict[str, dict[str, Kernel]] = {"reference": {}, "cpu": {}, "cuda": {}}
_state = {"reference": os.environ.get(ENV, "0").strip() not in ("", "0"), "fast_loaded": False}


def register(op, kind, kernel):
    """Put ``kernel`` in the table for ``op`` on ``kind`` ("reference", "cpu" or "cuda")."""
    if kind not in _TABLE:
        raise ValueError(f"kernel kind must be one of {sorted(_TABLE)}, got {kind!r}")
    _TABLE[kind][op] = kernel
    return kernel


def table():
    """``{kind: sorted op names}``: what is registered where (for ``minillm info`` and tests)."""
    _load_fast()
    return {kind: sorted(ops) for kind, ops in _TABLE.items()}


def device_kind(xp):
    """"cuda" for CuPy arrays with the CUDA kernels on, else "cpu" (NumPy, the stand-in)."""
    return "cuda" if cuda_kernels.use(xp) else "cpu"


def _load_fast():
    if not _state["fast_loaded"]:
        from . import cuda_fast, fast_cpu  # noqa: F401  (they register themselves)
        _state["fast_loaded"] = True


def select(op, xp, dtype):
    """The kernel that computes ``op`` on arrays of module ``xp`` and ``dtype``: the device's
    fast one if it has one and the reference switch is off, else the plain one; wrapped in
    the float32 island for float16 unless it handles float16 itself."""
    _load_fast()
    kernel = None if _state["reference"] else _TABLE[device_kind(xp)].get(op)
    if kernel is None:
        kernel = _TABLE["reference"][op]
    if np.dtype(dtype) == np.float16 and not kernel.float16:
        return float32_island(kernel)
    return kernel


def reference_kernels_on():
    """True while the whole library runs on the plain (reference) versions."""
    return _state["reference"]


@contextlib.contextmanager
def _restoring(previous):
    try:
        yield
    finally:
        _state["reference"] = previous


def use_reference_kernels(on=True):
    """Run every fused op on its plain version (``on=True``) or on the fast kernels again.

    Works as a call (``mm.use_reference_kernels()``) and as a context manager
    (``with mm.use_reference_kernels(): ...`` restores the previous choice on exit).
    """
    previous = _state["reference"]
    _state["reference"] = bool(on)
    return _restoring(previous)


# -- the float32 island ----------------------------------------------------------------------------
def _up(a):
    return a.astype(np.float32) if getattr(a, "dtype", None) == np.float16 else a


def _down(a):
    return a.astype(np.float16) if getattr(a, "dtype", None) == np.float32 else a


def float32_island(kernel):
    """``kernel`` run in float32 on float16 inputs: inputs converted up once, outputs and
    gradients converted down once (the saved arrays stay float32)."""
    def forward(xp, *arrays, **options):
        out, saved = kernel.forward(xp, *[_up(a) for a in arrays], **options)
        return (out if kernel.keep_float32 else _down(out)), saved

    def backward(xp, saved, grad):
        grads = kernel.backward(xp, saved, _up(grad))
        if isinstance(grads, tuple):
            return tuple(None if g is None else _down(g) for g in grads)
        return _down(grads)

    return Kernel(forward, backward, float16=True, keep_float32=kernel.keep_float32)
