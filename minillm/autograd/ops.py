"""Differentiable array operations: arithmetic, matmul, elementwise functions, reductions
(shapes, indexing and selection are in :mod:`.shape_ops`; shared argument handling in
:mod:`.arguments`; all are importable from here).

Every op is a :class:`~minillm.autograd.function.Function` with a forward and a backward
written on raw arrays, followed by a small public wrapper that checks its arguments.
Backward rules never modify their incoming gradient in place.
"""
from __future__ import annotations

import math

import numpy as np

from .arguments import (_binary_operands, _scalar, _shape_of, normalize_axis,  # noqa: F401
                        unbroadcast)
from .function import Function
from .shape_ops import (ToDevice, _index_arrays, astype, compare,  # noqa: F401
                        concatenate, expand, getitem, logical_not, masked_fill, reshape, split,
                        squeeze, stack, swapaxes, transpose, unsqueeze, where)
from .tensor import Tensor

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "exp", "log", "sqrt", "tanh", "sigmoid",
    "relu", "abs", "clip", "sum", "mean", "max", "min", "var", "argmax", "argmin", "reshape",
    "transpose", "swapaxes", "expand", "squeeze", "unsqueeze", "getitem", "concatenate", "stack",
    "split", "where", "masked_fill", "astype", "compare", "logical_not", "unbroadcast",
    "normalize_axis", "maximum", "minimum",
]


# -- arithmetic ---------------------------------------------------------------------------------
class Add(Function):
    save_inputs = False

    def forward(self, a, b):
        self.sa, self.sb = _shape_of(a), _shape_of(b)
        return a + b

    def backward(self, g):
        return (None if self.sa is None else unbroadcast(g, self.sa),
                None if self.sb is None else unbroadcast(g, self.sb))


class Sub(Function):
    save_inputs = False

    def forward(self, a, b):
        self.sa, self.sb = _shape_of(a), _shape_of(b)
        return a - b

    def backward(self, g):
        return (None if self.sa is None else unbroadcast(g, self.sa),
                None if self.sb is None else unbroadcast(-g, self.sb))


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        a, b = self.a, self.b
        ga = None if _shape_of(a) is None else unbroadcast(g * b, a.shape)
        gb = None if _shape_of(b) is None else unbroadcast(g * a, b.shape)
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        a, b = self.a, self.b
        ga = None if _shape_of(a) is None else unbroadcast(g / b, a.shape)
        gb = None if _shape_of(b) is None else unbroadcast(-g * a / (b * b), b.shape)
        return ga, gb


class Neg(Function):
    save_inputs = False

    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Pow(Function):
    """``a ** b`` for tensor/scalar combinations."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = a ** b
        return self.y

    def backward(self, g):
        a, b, y, xp = self.a, self.b, self.y, self.xp
        ga = gb = None
        if _shape_of(a) is not None:
            if _shape_of(b) is None:
                ga = g * b * a ** (b - 1) if b != 0 else xp.zeros_like(a)
            else:
                ga = unbroadcast(g * b * a ** (b - 1), a.shape)
        if _shape_of(b) is not None:
            loga = xp.log(a) if _shape_of(a) is not None else math.log(a)
            gb = unbroadcast(g * y * loga, b.shape)
        return ga, gb


def add(a, b):
    return Add.apply(*_binary_operands(a, b, "add"))


def sub(a, b):
    return Sub.apply(*_binary_operands(a, b, "sub"))


def mul(a, b):
    return Mul.apply(*_binary_operands(a, b, "mul"))


def div(a, b):
    return Div.apply(*_binary_operands(a, b, "div"))


def neg(a):
    return Neg.apply(a)


def pow(a, b):
    return Pow.apply(*_binary_operands(a, b, "pow"))


class MatMul(Function):
    """Batched, broadcasting ``a @ b`` for operands with at least 2 dims."""

    def forward(self, a, b):
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"inner dimensions differ: {tuple(a.shape)} @ {tuple(b.shape)} "
                             f"({a.shape[-1]} != {b.shape[-2]})")
        self.a, self.b = a, b
        if b.ndim == 2 and a.ndim > 2:     # fold batch dims into rows: one 2-D GEMM
            rows = math.prod(a.shape[:-1])
            return (a.reshape(rows, a.shape[-1]) @ b).reshape(a.shape[:-1] + (b.shape[1],))
        return a @ b

    def backward(self, g):
        a, b = self.a, self.b
        xp = self.xp
        if b.ndim == 2:
            # y = a @ W with a (..., K): fold the batch dims into rows for one BLAS call each
            k, n = b.shape
            rows = math.prod(a.shape[:-1])
            g2 = g.reshape(rows, n)
            ga = (g2 @ b.T).reshape(a.shape)
            gb = a.reshape(rows, k).T @ g2
        else:
            ga = unbroadcast(g @ xp.swapaxes(b, -1, -2), a.shape)
            gb = unbroadcast(xp.swapaxes(a, -1, -2) @ g, b.shape)
        return unbroadcast(ga, a.shape), gb


def matmul(a, b):
    """Matrix product with NumPy semantics (1-D operands are promoted and the dim removed)."""
    a, b = _binary_operands(a, b, "matmul")
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        raise TypeError("matmul: both operands must be tensors or arrays, not scalars")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: 0-d operand (shapes {a.shape} and {b.shape}); use * instead")
    if a.ndim == 1 and b.ndim == 1:
        return reshape(MatMul.apply(reshape(a, 1, -1), reshape(b, -1, 1)), ())
    if a.ndim == 1:
        return squeeze(MatMul.apply(unsqueeze(a, 0), b), -2)
    if b.ndim == 1:
        return squeeze(MatMul.apply(a, unsqueeze(b, -1)), -1)
    return MatMul.apply(a, b)


# -- elementwise functions ----------------------------------------------------------------------
class Exp(Function):
    save_inputs = False

    def forward(self, a):
        self.y = self.xp.exp(a)
        return self.y

    def backward(self, g):
        return g * self.y


class Log(Function):
    def forward(self, a):
        self.a = a
        return self.xp.log(a)

    def backward(self, g):
        return g / self.a


class Sqrt(Function):
    save_inputs = False

    def forward(self, a):
        self.y = self.xp.sqrt(a)
        return self.y

    def backward(self, g):
        return g / (2 * self.y)


class Tanh(Function):
    save_inputs = False

    def forward(self, a):
        self.y = self.xp.tanh(a)
        return self.y

    def backward(self, g):
        return g * (1 - self.y * self.y)


def stable_sigmoid(xp, a):
    """1 / (1 + exp(-a)) without overflow, with full relative precision for large |a|."""
    e = xp.exp(-xp.abs(a))
    return xp.where(a >= 0, 1 / (1 + e), e / (1 + e))


class Sigmoid(Function):
    save_inputs = False

    def forward(self, a):
        self.y = stable_sigmoid(self.xp, a)
        return self.y

    def backward(self, g):
        return g * self.y * (1 - self.y)


class Relu(Function):
    save_inputs = False

    def forward(self, a):
        self.mask = a > 0
        return a * self.mask

    def backward(self, g):
        return g * self.mask


class Abs(Function):
    def forward(self, a):
        self.a = a
        return self.xp.abs(a)

    def backward(self, g):
        return g * self.xp.sign(self.a)


class Clip(Function):
    """Clamp to [lo, hi]; the gradient passes where lo <= a <= hi (as in PyTorch)."""

    save_inputs = False

    def forward(self, a, lo=None, hi=None):
        self.pass_ = self.xp.ones(a.shape, dtype=bool)
        if lo is not None:
            self.pass_ &= a >= lo
        if hi is not None:
            self.pass_ &= a <= hi
        return self.xp.clip(a, lo, hi)

    def backward(self, g):
        return g * self.pass_


def _elementwise(cls):
    def op(a):
        if not isinstance(a, Tensor):
            raise TypeError(f"{cls.__name__.lower()}: expected a Tensor, got {type(a).__name__}")
        return cls.apply(a)
    op.__name__ = cls.__name__.lower()
    op.__doc__ = f"Elementwise {cls.__name__.lower()} (differentiable)."
    return op


exp, log, sqrt, tanh = _elementwise(Exp), _elementwise(Log), _elementwise(Sqrt), _elementwise(Tanh)
sigmoid, relu, abs = _elementwise(Sigmoid), _elementwise(Relu), _elementwise(Abs)


def clip(a, min=None, max=None):
    if min is None and max is None:
        raise ValueError("clip: give at least one of min and max")
    return Clip.apply(a, lo=_scalar(min), hi=_scalar(max))


class Maximum(Function):
    """Elementwise max; ties send half the gradient to each side (like PyTorch)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return self.xp.maximum(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        wa = ((a > b) + 0.5 * (a == b)).astype(g.dtype)
        ga = None if _shape_of(a) is None else unbroadcast(g * wa, a.shape)
        gb = None if _shape_of(b) is None else unbroadcast(g * (1 - wa), b.shape)
        return ga, gb


def maximum(a, b):
    return Maximum.apply(*_binary_operands(a, b, "maximum"))


def minimum(a, b):
    return neg(maximum(neg(a) if isinstance(a, Tensor) else -a, neg(b) if isinstance(b, Tensor)
                       else -b))


# -- reductions -----------------------------------------------------------------------------------
def _expand_grad(xp, g, shape, axes, keepdims):
    if not keepdims:
        g = g.reshape(tuple(1 if i in axes else s for i, s in enumerate(shape)))
    return xp.broadcast_to(g, shape)


class Sum(Function):
    save_inputs = False

    def forward(self, a, axes=(), keepdims=False):
        self.shape, self.axes, self.keepdims = a.shape, axes, keepdims
        return a.sum(axis=axes, keepdims=keepdims)

    def backward(self, g):
        return _expand_grad(self.xp, g, self.shape, self.axes, self.keepdims)


class Mean(Function):
    save_inputs = False

    def forward(self, a, axes=(), keepdims=False):
        self.shape, self.axes, self.keepdims = a.shape, axes, keepdims
        self.n = int(np.prod([a.shape[i] for i in axes])) if axes else 1
        return a.mean(axis=axes, keepdims=keepdims)

    def backward(self, g):
        return _expand_grad(self.xp, g / self.n, self.shape, self.axes, self.keepdims)


class Max(Function):
    """max over axes; the gradient is shared equally among tied maxima (amax semantics)."""

    def _extreme(self, a, axes):
        return a.max(axis=axes, keepdims=True)

    def forward(self, a, axes=(), keepdims=False):
        self.a, self.axes, self.keepdims = a, axes, keepdims
        self.y = self._extreme(a, axes)
        return self.y if keepdims else self.y.reshape(
            tuple(s for i, s in enumerate(a.shape) if i not in axes))

    def backward(self, g):
        mask = self.a == self.y
        count = mask.sum(axis=self.axes, keepdims=True).astype(g.dtype)
        g = _expand_grad(self.xp, g, self.a.shape, self.axes, self.keepdims)
        return g * mask / count


class Min(Max):
    """min over axes; the gradient is shared equally among tied minima (amin semantics)."""

    def _extreme(self, a, axes):
        return a.min(axis=axes, keepdims=True)


class Var(Function):
    def forward(self, a, axes=(), ddof=0, keepdims=False):
        self.a, self.axes, self.keepdims = a, axes, keepdims
        n = int(np.prod([a.shape[i] for i in axes])) if axes else 1
        if n - ddof <= 0:
            raise ValueError(f"var over {n} element(s) with ddof={ddof}: nothing to divide by")
        self.denom = n - ddof
        self.mu = a.mean(axis=axes, keepdims=True)
        d = a - self.mu
        return (d * d).sum(axis=axes, keepdims=keepdims) / self.denom

    def backward(self, g):
        g = _expand_grad(self.xp, g, self.a.shape, self.axes, self.keepdims)
        return g * (2.0 / self.denom) * (self.a - self.mu)


def _reduce(cls, a, axis, keepdims, **kw):
    axes = normalize_axis(axis, a.ndim, cls.__name__.lower())
    if a.size == 0 and cls in (Max, Min):
        raise ValueError(f"max/min of an empty tensor of shape {a.shape}")
    return cls.apply(a, axes=axes, keepdims=keepdims, **kw)


def sum(a, axis=None, keepdims=False):
    """Sum over ``axis`` (None = all; an int or a tuple)."""
    return _reduce(Sum, a, axis, keepdims)


def mean(a, axis=None, keepdims=False):
    return _reduce(Mean, a, axis, keepdims)


def max(a, axis=None, keepdims=False):
    return _reduce(Max, a, axis, keepdims)


def min(a, axis=None, keepdims=False):
    return _reduce(Min, a, axis, keepdims)


def var(a, axis=None, ddof=0, keepdims=False):
    """Variance with NumPy's ``ddof`` (0 = population variance, 1 = unbiased)."""
    return _reduce(Var, a, axis, keepdims, ddof=ddof)


def argmax(a, axis=None):
    return Tensor._make(a.data.argmax(axis=axis), a._device, False)


def argmin(a, axis=None):
    return Tensor._make(a.data.argmin(axis=axis), a._device, False)
