"""The Tensor: an array on a device, plus what autograd needs to send gradients back."""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from .function import _state, run_backward

__all__ = ["Tensor", "tensor", "zeros", "ones", "full", "empty", "zeros_like", "ones_like",
           "full_like", "arange", "rand", "randn", "randint", "eye"]


def _is_float(dtype):
    return dtype.kind == "f"


class Tensor:
    """An n-dimensional array with automatic differentiation.

    Attributes: ``data`` (the raw NumPy/CuPy array), ``grad`` (a Tensor, accumulated by
    :meth:`backward`), ``requires_grad``, and the read-only ``shape``, ``dtype``, ``device``.
    Create tensors with :func:`minillm.tensor` or the factories (``mm.zeros``, ``mm.randn`` ...).
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_version", "_device", "__weakref__")
    __array_priority__ = 1000      # numpy_array + tensor -> Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        t = tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)
        self.data, self.grad, self.requires_grad = t.data, None, t.requires_grad
        self._ctx, self._version, self._device = None, 0, t._device

    @classmethod
    def _make(cls, data, dev, requires_grad):
        """Internal fast constructor: no checks, no copies."""
        t = object.__new__(cls)
        t.data = data
        t.grad = None
        t.requires_grad = requires_grad
        t._ctx = None
        t._version = 0
        t._device = dev
        return t

    @classmethod
    def wrap(cls, data, device, requires_grad=False):
        """A tensor around the array ``data``, already on ``device`` (a :mod:`minillm.backend`
        device), without a copy or a check: how library code that computed raw arrays hands
        them back. User code should call :func:`minillm.tensor`, which checks and converts."""
        return cls._make(data, device, requires_grad)

    def mark_modified(self):
        """Record that ``data`` was changed in place by code working on the raw array (an
        optimizer step, pruning): a graph that saved this tensor then refuses a stale
        backward, as it does after an in-place tensor op."""
        self._version += 1

    # -- properties ---------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: self._device)
    is_leaf = property(lambda self: self._ctx is None)
    grad_fn = property(lambda self: self._ctx)

    @property
    def xp(self):
        """The array module (numpy, cupy, or the strict stand-in) of this tensor's device."""
        return self._device.xp

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # -- conversion to host (always explicit) ---------------------------------------------
    def numpy(self):
        """A host ``np.ndarray`` copy of the values (detached from the graph)."""
        a = backend.to_host(self.data)
        return a.copy() if a is self.data else a

    def item(self):
        """The single value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with exactly one element, got shape "
                             f"{self.shape}; reduce it first (e.g. .sum() or .mean())")
        return backend.to_host(self.data).item()

    def tolist(self):
        return backend.to_host(self.data).tolist()

    def __array__(self, dtype=None, copy=None):
        # On cpu this lets NumPy read the tensor; on cuda/fake the array module refuses.
        a = np.asarray(self.data)
        return a if dtype is None else a.astype(dtype)

    def __float__(self):
        return float(self.data)

    def __int__(self):
        return int(self.data)

    def __bool__(self):
        return bool(self.data)

    def __index__(self):
        if self.data.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors can be used as an index, got {self.dtype}")
        return int(self.data)

    def __repr__(self):
        extra = ""
        if self._ctx is not None:
            extra = f", grad_fn=<{self._ctx.name}>"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        dt = "" if self.dtype == backend.get_default_dtype() or self.dtype.kind in "ib" \
            else f", dtype={self.dtype}"
        if self._device.type == "cpu":
            body = np.array2string(self.data, separator=", ", prefix="tensor(", precision=4)
            return f"tensor({body}{dt}{extra})"
        return (f"tensor(<{self.shape} values on '{self._device}'; .numpy() to see them>"
                f", dtype={self.dtype}{extra})")

    # -- autograd -------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=False):
        """Compute gradients of this tensor w.r.t. the leaves of its graph (into ``.grad``).

        ``gradient`` is required unless the tensor has exactly one element (a loss).
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the computation "
                "had requires_grad=True (or it ran under mm.no_grad())")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient argument needs a scalar (one-element) tensor, "
                    f"got shape {self.shape}; reduce it (e.g. loss.mean()) or pass "
                    "gradient=<tensor of the same shape>")
            g = self.xp.ones_like(self.data)
        else:
            if isinstance(gradient, Tensor):
                if gradient._device != self._device:
                    raise RuntimeError(f"backward(): gradient is on {gradient.device}, tensor on "
                                       f"{self.device}")
                g = gradient.data
            else:
                g = backend.to_device(gradient, self._device, dtype=self.dtype)
            if tuple(g.shape) != self.shape:
                raise ValueError(f"backward(): gradient has shape {tuple(g.shape)} but the tensor "
                                 f"has shape {self.shape}")
            g = g.astype(self.dtype, copy=True)
        run_backward(self, g, retain_graph=retain_graph)

    def detach(self):
        """A tensor sharing the same data, cut from the graph."""
        return Tensor._make(self.data, self._device, False)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and not _is_float(self.dtype):
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor; use .detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor after backward (leaves always keep it)."""
        if self._ctx is not None:
            import weakref
            self._ctx.retained = weakref.ref(self)
        return self

    def zero_grad(self):
        self.grad = None

    # -- devices and dtypes -----------------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Copy to another device and/or dtype (differentiable); returns ``self`` if nothing changes."""
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = _ops.astype(out, dtype)
        if device is not None:
            dev = backend.device(device)
            if dev != out._device:
                out = _ops.ToDevice.apply(out, dev=dev)
                out._device = dev
        return out

    def cpu(self):
        return self.to("cpu")

    def astype(self, dtype):
        return _ops.astype(self, dtype)

    def float(self):
        return _ops.astype(self, np.float32)

    def double(self):
        return _ops.astype(self, np.float64)

    def long(self):
        return _ops.astype(self, np.int64)

    # -- in-place operations (bump the version counter) -----------------------------------
    def _check_inplace(self, what):
        if self.requires_grad and _state["grad"]:
            raise RuntimeError(
                f"{what}: in-place change of a tensor that requires grad while grad mode is on; "
                "autograd would lose track of it. Use an out-of-place op (x = x + y) or wrap "
                "the update in `with mm.no_grad():` (as optimizers do)")

    def _operand(self, other):
        if isinstance(other, Tensor):
            if other._device != self._device:
                raise RuntimeError(f"in-place op: tensors on {self.device} and {other.device}")
            return other.data
        if isinstance(other, numbers.Number):
            return other
        if isinstance(other, np.ndarray) and self._device.type != "cpu":
            raise TypeError(f"a host numpy array cannot be combined with a tensor on "
                            f"'{self.device}'; wrap it with mm.tensor(array, device=...)")
        return other

    def _inplace(self, what, fn):
        self._check_inplace(what)
        fn()
        self._version += 1
        return self

    def __setitem__(self, idx, value):
        idx = _ops._index_arrays(idx, self._device)
        v = self._operand(value)

        def f():
            self.data[idx] = v
        self._inplace("__setitem__", f)

    def __iadd__(self, other):
        v = self._operand(other)
        return self._inplace("+=", lambda: self.xp.add(self.data, v, out=self.data))

    def __isub__(self, other):
        v = self._operand(other)
        return self._inplace("-=", lambda: self.xp.subtract(self.data, v, out=self.data))

    def __imul__(self, other):
        v = self._operand(other)
        return self._inplace("*=", lambda: self.xp.multiply(self.data, v, out=self.data))

    def __itruediv__(self, other):
        v = self._operand(other)
        return self._inplace("/=", lambda: self.xp.divide(self.data, v, out=self.data))

    def add_(self, other, alpha=1.0):
        v = self._operand(other)
        return self._inplace("add_", lambda: self.xp.add(self.data, v * alpha if alpha != 1 else v,
                                                          out=self.data))

    def mul_(self, other):
        return self.__imul__(other)

    def zero_(self):
        return self._inplace("zero_", lambda: self.data.fill(0))

    def fill_(self, value):
        return self._inplace("fill_", lambda: self.data.fill(value))

    def copy_(self, src):
        v = self._operand(src)
        if tuple(getattr(v, "shape", ())) != self.shape and hasattr(v, "shape"):
            raise ValueError(f"copy_: source shape {tuple(v.shape)} != target shape {self.shape}")

        def f():
            self.data[...] = v
        return self._inplace("copy_", f)

    # -- arithmetic -------------------------------------------------------------------------
    def __add__(self, o): return _ops.add(self, o)
    def __radd__(self, o): return _ops.add(o, self)
    def __sub__(self, o): return _ops.sub(self, o)
    def __rsub__(self, o): return _ops.sub(o, self)
    def __mul__(self, o): return _ops.mul(self, o)
    def __rmul__(self, o): return _ops.mul(o, self)
    def __truediv__(self, o): return _ops.div(self, o)
    def __rtruediv__(self, o): return _ops.div(o, self)
    def __pow__(self, o): return _ops.pow(self, o)
    def __rpow__(self, o): return _ops.pow(o, self)
    def __matmul__(self, o): return _ops.matmul(self, o)
    def __rmatmul__(self, o): return _ops.matmul(o, self)
    def __neg__(self): return _ops.neg(self)
    def __pos__(self): return self
    def __abs__(self): return _ops.abs(self)
    def __getitem__(self, idx): return _ops.getitem(self, idx)

    # comparisons give boolean tensors outside the graph
    def __lt__(self, o): return _ops.compare(self, o, "less")
    def __le__(self, o): return _ops.compare(self, o, "less_equal")
    def __gt__(self, o): return _ops.compare(self, o, "greater")
    def __ge__(self, o): return _ops.compare(self, o, "greater_equal")
    def __eq__(self, o): return _ops.compare(self, o, "equal")
    def __ne__(self, o): return _ops.compare(self, o, "not_equal")
    def __invert__(self): return _ops.logical_not(self)
    def __and__(self, o): return _ops.compare(self, o, "logical_and")
    def __or__(self, o): return _ops.compare(self, o, "logical_or")
    __hash__ = object.__hash__

    # -- methods mirroring the functions in minillm.autograd.ops --------------------------------
    def sum(self, axis=None, keepdims=False): return _ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _ops.max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return _ops.min(self, axis, keepdims)
    def var(self, axis=None, ddof=0, keepdims=False): return _ops.var(self, axis, ddof, keepdims)
    def std(self, axis=None, ddof=0, keepdims=False):
        return _ops.sqrt(_ops.var(self, axis, ddof, keepdims))
    def argmax(self, axis=None): return _ops.argmax(self, axis)
    def argmin(self, axis=None): return _ops.argmin(self, axis)
    def reshape(self, *shape): return _ops.reshape(self, *shape)
    view = reshape
    def transpose(self, *axes): return _ops.transpose(self, *axes)
    permute = transpose
    def swapaxes(self, a, b): return _ops.swapaxes(self, a, b)
    def expand(self, *shape): return _ops.expand(self, *shape)
    broadcast_to = expand
    def squeeze(self, axis=None): return _ops.squeeze(self, axis)
    def unsqueeze(self, axis): return _ops.unsqueeze(self, axis)
    def flatten(self, start=0): return _ops.reshape(self, self.shape[:start] + (-1,))
    T = property(lambda self: _ops.transpose(self))
    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def tanh(self): return _ops.tanh(self)
    def sigmoid(self): return _ops.sigmoid(self)
    def relu(self): return _ops.relu(self)
    def abs(self): return _ops.abs(self)
    def clip(self, min=None, max=None): return _ops.clip(self, min, max)
    clamp = clip
    def masked_fill(self, mask, value): return _ops.masked_fill(self, mask, value)
    def split(self, indices_or_sections, axis=0): return _ops.split(self, indices_or_sections, axis)
    def matmul(self, o): return _ops.matmul(self, o)


# -- creation ---------------------------------------------------------------------------------
def _infer_dtype(data, dtype):
    if dtype is not None:
        return np.dtype(dtype)
    if isinstance(data, (np.ndarray, np.generic)) or hasattr(data, "__cuda_array_interface__") \
            or type(data) is backend.StrictArray:
        return None       # arrays keep their dtype, like torch.tensor(ndarray)
    probe = np.asarray(data)
    if probe.dtype.kind == "f":
        return backend.get_default_dtype()
    if probe.dtype.kind in "iub":
        return np.dtype(np.int64) if probe.dtype.kind in "iu" else np.dtype(bool)
    raise TypeError(f"cannot make a tensor from {type(data).__name__} with dtype {probe.dtype}")


def tensor(data, requires_grad=False, dtype=None, device=None):
    """Create a tensor (a copy of ``data``) on ``device`` (default: the default device).

    Python floats become the default dtype (float32 unless changed with
    ``mm.set_default_dtype``), ints int64, bools bool; NumPy arrays keep their dtype.
    """
    dev = backend.device(device)
    if isinstance(data, Tensor):
        src = data.detach()
        out = src.to(dev, dtype)
        arr = out.data.copy() if out.data is data.data else out.data
    else:
        dt = _infer_dtype(data, dtype)
        if backend.is_device_array(data):
            src_dev = backend.device_of(data)
            arr = data if src_dev == dev else backend.to_device(backend.to_host(data), dev)
            arr = arr.astype(dt or arr.dtype, copy=True)
        else:
            host = np.array(data, dtype=dt, copy=True)
            if host.dtype.kind not in "fiub":
                raise TypeError(f"cannot make a tensor of dtype {host.dtype} (from "
                                f"{type(data).__name__}); use numbers or booleans")
            arr = host if dev.type == "cpu" else backend.to_device(host, dev)
    t = Tensor._make(arr, dev, False)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _shape(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"a shape is a tuple of non-negative ints, got {shape}")
    return tuple(int(s) for s in shape)


def _float_dtype(dtype):
    return np.dtype(dtype) if dtype is not None else backend.get_default_dtype()


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    dev = backend.device(device)
    if dtype is None and isinstance(fill_value, (bool, np.bool_)):
        dtype = bool
    elif dtype is None and isinstance(fill_value, (int, np.integer)):
        dtype = np.int64
    t = Tensor._make(dev.xp.full(_shape((shape,)), fill_value, dtype=_float_dtype(dtype)),
                     dev, False)
    return t.requires_grad_(True) if requires_grad else t


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    dev = backend.device(device)
    t = Tensor._make(dev.xp.zeros(_shape(shape), dtype=_float_dtype(dtype)), dev, False)
    return t.requires_grad_(True) if requires_grad else t


def ones(*shape, dtype=None, device=None, requires_grad=False):
    dev = backend.device(device)
    t = Tensor._make(dev.xp.ones(_shape(shape), dtype=_float_dtype(dtype)), dev, False)
    return t.requires_grad_(True) if requires_grad else t



def empty(*shape, dtype=None, device=None, requires_grad=False):
    """A new tensor to be filled in by the caller. Unlike NumPy's ``empty`` its values are
    zeros, not leftover memory, so a run never depends on what was there before."""
    return zeros(*shape, dtype=dtype, device=device, requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=t.device)


def arange(start, stop=None, step=1, dtype=None, device=None):
    dev = backend.device(device)
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        ints = all(isinstance(v, (int, np.integer)) for v in (start, stop, step))
        dtype = np.int64 if ints else backend.get_default_dtype()
    return Tensor._make(dev.xp.arange(start, stop, step, dtype=dtype), dev, False)


def eye(n, m=None, dtype=None, device=None):
    dev = backend.device(device)
    return Tensor._make(dev.xp.eye(n, m, dtype=_float_dtype(dtype)), dev, False)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform [0, 1) from the device's seeded generator."""
    dev = backend.device(device)
    t = Tensor._make(backend.generator(dev).random(_shape(shape), _float_dtype(dtype)), dev, False)
    return t.requires_grad_(True) if requires_grad else t


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal from the device's seeded generator."""
    dev = backend.device(device)
    t = Tensor._make(backend.generator(dev).normal(_shape(shape), _float_dtype(dtype)), dev, False)
    return t.requires_grad_(True) if requires_grad else t


def randint(low, high, shape, device=None):
    """Uniform integers in [low, high) (int64)."""
    dev = backend.device(device)
    shape = _shape((shape,) if isinstance(shape, int) else tuple(shape))
    return Tensor._make(backend.generator(dev).integers(low, high, shape), dev, False)


from . import ops as _ops  # noqa: E402  (ops needs Tensor defined above)
