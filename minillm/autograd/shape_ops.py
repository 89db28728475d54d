"""Differentiable shape, indexing and selection ops: reshape, transpose, expand, squeeze,
casts and device moves, indexing, concatenate/stack/split, where, masked_fill, comparisons."""
from __future__ import annotations

import numpy as np

from .. import backend
from .function import Function
from .tensor import Tensor
from .arguments import _binary_operands, _scalar, _shape_of, normalize_axis, unbroadcast


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
