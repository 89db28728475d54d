"""Differentiable array operations: arithmetic, reductions, shapes, indexing, matmul.

Every op is a :class:`~minillm.autograd.function.Function` with a forward and a backward
written on raw arrays, followed by a small public wrapper that checks its arguments.
Backward rules never modify their incoming gradient in place.
"""
from __future__ import annotations

import builtins
import math
import numbers

import numpy as np

from .. import backend
from .function import Function
from .tensor import Tensor

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "exp", "log", "sqrt", "tanh", "sigmoid",
    "relu", "abs", "clip", "sum", "mean", "max", "min", "var", "argmax", "argmin", "reshape",
    "transpose", "swapaxes", "expand", "squeeze", "unsqueeze", "getitem", "concatenate", "stack",
    "split", "where", "masked_fill", "astype", "compare", "logical_not", "unbroadcast",
    "normalize_axis", "maximum", "minimum",
]


# -- helpers ------------------------------------------------------------------------------------
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

    def forward(self, a, axes=(), keepdims=False, sign=1):
        self.a, self.axes, self.keepdims = a, axes, keepdims
        self.y = a.max(axis=axes, keepdims=True) if sign > 0 else a.min(axis=axes, keepdims=True)
        return self.y if keepdims else self.y.reshape(
            tuple(s for i, s in enumerate(a.shape) if i not in axes))

    def backward(self, g):
        mask = self.a == self.y
        count = mask.sum(axis=self.axes, keepdims=True).astype(g.dtype)
        g = _expand_grad(self.xp, g, self.a.shape, self.axes, self.keepdims)
        return g * mask / count


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
    if a.size == 0 and cls in (Max,):
        raise ValueError(f"max/min of an empty tensor of shape {a.shape}")
    return cls.apply(a, axes=axes, keepdims=keepdims, **kw)


def sum(a, axis=None, keepdims=False):
    """Sum over ``axis`` (None = all; an int or a tuple)."""
    return _reduce(Sum, a, axis, keepdims)


def mean(a, axis=None, keepdims=False):
    return _reduce(Mean, a, axis, keepdims)


def max(a, axis=None, keepdims=False):
    return _reduce(Max, a, axis, keepdims, sign=1)


def min(a, axis=None, keepdims=False):
    return _reduce(Max, a, axis, keepdims, sign=-1)


def var(a, axis=None, ddof=0, keepdims=False):
    """Variance with NumPy's ``ddof`` (0 = population variance, 1 = unbiased)."""
    return _reduce(Var, a, axis, keepdims, ddof=ddof)


def argmax(a, axis=None):
    return Tensor._make(a.data.argmax(axis=axis), a._device, False)


def argmin(a, axis=None):
    return Tensor._make(a.data.argmin(axis=axis), a._device, False)


# -- shapes ---------------------------------------------------------------------------------------
class Reshape(Function):
    save_inputs = False

    def forward(self, a, shape=()):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.shape)


class Transpose(Function):
    save_inputs = False

    def forward(self, a, axes=None):
        self.inv = tuple(int(i) for i in np.argsort(axes))
        return a.transpose(axes)

    def backward(self, g):
        return g.transpose(self.inv)


class Expand(Function):
    save_inputs = False

    def forward(self, a, shape=()):
        self.shape = a.shape
        return self.xp.broadcast_to(a, shape)

    def backward(self, g):
        return unbroadcast(g, self.shape)


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def reshape(a, *shape):
    shape = _shape_arg(shape)
    if a.shape == shape:
        return a
    return Reshape.apply(a, shape=shape)


def transpose(a, *axes):
    """Permute axes (NumPy semantics: no axes reverses them)."""
    axes = _shape_arg(axes) if axes else tuple(range(a.ndim))[::-1]
    if sorted(normalize_axis(axes, a.ndim, "transpose")) != list(range(a.ndim)) or \
            len(axes) != a.ndim:
        raise ValueError(f"transpose: axes {axes} are not a permutation of {a.ndim} dims")
    axes = tuple(x % a.ndim for x in axes)
    return Transpose.apply(a, axes=axes)


def swapaxes(a, axis1, axis2):
    perm = list(range(a.ndim))
    i, j = normalize_axis(axis1, a.ndim, "swapaxes")[0], normalize_axis(axis2, a.ndim, "swapaxes")[0]
    perm[i], perm[j] = perm[j], perm[i]
    return Transpose.apply(a, axes=tuple(perm))


def expand(a, *shape):
    """Broadcast to ``shape`` (a view; the gradient is summed back)."""
    shape = _shape_arg(shape)
    if a.shape == shape:
        return a
    return Expand.apply(a, shape=shape)


def squeeze(a, axis=None):
    if axis is None:
        return reshape(a, tuple(s for s in a.shape if s != 1))
    axes = normalize_axis(axis, a.ndim, "squeeze")
    for ax in axes:
        if a.shape[ax] != 1:
            raise ValueError(f"squeeze: axis {ax} has size {a.shape[ax]}, not 1 (shape {a.shape})")
    return reshape(a, tuple(s for i, s in enumerate(a.shape) if i not in axes))


def unsqueeze(a, axis):
    nd = a.ndim + 1
    if not -nd <= axis < nd:
        raise ValueError(f"unsqueeze: axis {axis} out of range for {a.ndim}-d tensor")
    axis %= nd
    return reshape(a, a.shape[:axis] + (1,) + a.shape[axis:])


class Cast(Function):
    save_inputs = False

    def forward(self, a, dtype=None):
        self.src = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.src) if self.src.kind == "f" else None


def astype(a, dtype):
    dtype = np.dtype(dtype)
    if dtype == a.dtype:
        return a
    out = Cast.apply(a, dtype=dtype)
    if dtype.kind != "f":
        out.requires_grad = False
        out._ctx = None
    return out


class ToDevice(Function):
    save_inputs = False

    def forward(self, a, dev=None):
        from ..backend import device_of
        self.src = device_of(a)
        return backend.to_device(backend.to_host(a), dev)

    def backward(self, g):
        return backend.to_device(backend.to_host(g), self.src)


# -- indexing ---------------------------------------------------------------------------------
def _index_arrays(idx, dev):
    """Turn Tensors / lists / host arrays inside an index into device arrays."""
    def conv(i):
        if isinstance(i, Tensor):
            if i._device != dev:
                raise RuntimeError(f"index tensor on {i.device}, indexed tensor on {dev}")
            if i.dtype.kind not in "iub":
                raise IndexError(f"tensors used as indices must be integer or bool, got {i.dtype}")
            return i.data
        if isinstance(i, (list, np.ndarray)):
            arr = np.asarray(i)
            if arr.dtype.kind not in "iub":
                raise IndexError(f"arrays used as indices must be integer or bool, got {arr.dtype}")
            return arr if dev.type == "cpu" else backend.to_device(arr, dev)
        return i
    if isinstance(idx, tuple):
        return tuple(conv(i) for i in idx)
    return conv(idx)


def _is_basic(idx):
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(i is None or i is Ellipsis or isinstance(i, (slice, int, np.integer)) for i in items)


class GetItem(Function):
    save_inputs = False

    def forward(self, a, idx=None):
        self.shape, self.dtype, self.idx = a.shape, a.dtype, idx
        return a[idx]

    def backward(self, g):
        gx = self.xp.zeros(self.shape, dtype=self.dtype)
        if _is_basic(self.idx):
            gx[self.idx] = g          # basic indexing never repeats an element
        else:
            backend.scatter_add(gx, self.idx, g)
        return gx


def getitem(a, idx):
    """``a[idx]`` with NumPy's basic and advanced indexing; the backward scatter-adds."""
    return GetItem.apply(a, idx=_index_arrays(idx, a._device))


class Concatenate(Function):
    save_inputs = False

    def forward(self, *arrays, axis=0):
        self.axis = axis
        self.bounds = np.cumsum([0] + [a.shape[axis] for a in arrays])
        return self.xp.concatenate(arrays, axis=axis)

    def backward(self, g):
        sl = [slice(None)] * g.ndim
        out = []
        for i in range(len(self.bounds) - 1):
            sl[self.axis] = slice(int(self.bounds[i]), int(self.bounds[i + 1]))
            out.append(g[tuple(sl)])
        return tuple(out)


class Stack(Function):
    save_inputs = False

    def forward(self, *arrays, axis=0):
        self.axis = axis
        return self.xp.stack(arrays, axis=axis)

    def backward(self, g):
        return tuple(self.xp.take(g, i, axis=self.axis) for i in range(g.shape[self.axis]))


def _tensor_list(tensors, op):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected Tensors, got {type(t).__name__}")
    dts = {t.dtype for t in tensors if t.dtype.kind == "f"}
    if len(dts) > 1:
        raise TypeError(f"{op}: dtype mismatch {sorted(map(str, dts))}; convert with .astype()")
    return tensors


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis (NumPy's ``concatenate``)."""
    tensors = _tensor_list(tensors, "concatenate")
    axis = normalize_axis(axis, tensors[0].ndim, "concatenate")[0]
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    """Join same-shaped tensors along a new axis (NumPy's ``stack``)."""
    tensors = _tensor_list(tensors, "stack")
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors need the same shape, got {sorted(shapes)}")
    axis = normalize_axis(axis, tensors[0].ndim + 1, "stack")[0]
    return Stack.apply(*tensors, axis=axis)


def split(a, indices_or_sections, axis=0):
    """NumPy's ``split``: equal sections (an int) or split points (a list); returns a list."""
    axis = normalize_axis(axis, a.ndim, "split")[0]
    n = a.shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise ValueError(f"split: axis {axis} of size {n} cannot be split into {k} equal parts")
        points = [n // k * i for i in range(1, k)]
    else:
        points = [int(p) for p in indices_or_sections]
    bounds = [0] + points + [n]
    sl = [slice(None)] * a.ndim
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sl[axis] = slice(lo, hi)
        out.append(getitem(a, tuple(sl)))
    return out


# -- selection ------------------------------------------------------------------------------------
class Where(Function):
    save_inputs = False

    def forward(self, c, a, b):
        self.c, self.sa, self.sb = c, _shape_of(a), _shape_of(b)
        return self.xp.where(c, a, b)

    def backward(self, g):
        xp = self.xp
        zero = xp.zeros((), dtype=g.dtype)
        ga = None if self.sa is None else unbroadcast(xp.where(self.c, g, zero), self.sa)
        gb = None if self.sb is None else unbroadcast(xp.where(self.c, zero, g), self.sb)
        return None, ga, gb


def _bool_tensor(c, ref, op):
    if isinstance(c, Tensor):
        if c.dtype != np.dtype(bool):
            raise TypeError(f"{op}: the condition/mask must be a bool tensor, got {c.dtype}")
        return c
    arr = np.asarray(c)
    if arr.dtype != np.dtype(bool):
        raise TypeError(f"{op}: the condition/mask must be boolean, got {arr.dtype}")
    if ref._device.type != "cpu":
        raise TypeError(f"{op}: a host mask cannot be used with a tensor on '{ref.device}'")
    return Tensor._make(arr, ref._device, False)


def where(condition, x, y):
    """``x`` where ``condition`` is True, else ``y`` (NumPy's ``where``, differentiable in x, y)."""
    x, y = _binary_operands(x, y, "where")
    ref = x if isinstance(x, Tensor) else y
    if not isinstance(ref, Tensor):
        raise TypeError("where: x or y must be a Tensor")
    return Where.apply(_bool_tensor(condition, ref, "where"), x, y)


class MaskedFill(Function):
    save_inputs = False

    def forward(self, a, mask, value=0.0):
        # a NumPy scalar of a's dtype: a kernel argument on a GPU, not a host->device copy
        out = self.xp.where(mask, a.dtype.type(value), a)
        if out.shape != a.shape:
            raise ValueError(f"mask of shape {tuple(mask.shape)} must broadcast to the tensor's "
                             f"shape {tuple(a.shape)}")
        self.mask = mask
        return out

    def backward(self, g):
        return self.xp.where(self.mask, self.xp.zeros((), dtype=g.dtype), g), None


def masked_fill(a, mask, value):
    """Copy of ``a`` with ``value`` where ``mask`` is True (mask broadcasts to ``a``)."""
    return MaskedFill.apply(a, _bool_tensor(mask, a, "masked_fill"), value=_scalar(value))


def compare(a, b, ufunc):
    """Elementwise comparison/logic -> bool tensor (not differentiable)."""
    a, b = _binary_operands(a, b, ufunc)
    ref = a if isinstance(a, Tensor) else b
    av = a.data if isinstance(a, Tensor) else a
    bv = b.data if isinstance(b, Tensor) else b
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a._device != b._device:
        raise RuntimeError(f"{ufunc}: tensors on {a.device} and {b.device}")
    return Tensor._make(getattr(ref.xp, ufunc)(av, bv), ref._device, False)


def logical_not(a):
    return Tensor._make(a.xp.logical_not(a.data), a._device, False)
