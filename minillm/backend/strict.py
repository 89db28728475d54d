"""A strict, NumPy-backed stand-in for a GPU array library.

CuPy arrays live in device memory: NumPy cannot read them implicitly, and code that
quietly calls ``np.asarray`` on one, or ``float()`` on a value in the middle of a
training step, breaks (or stalls) on a real GPU. This module gives the test suite a
device, ``"fake"``, that behaves the same way without a GPU:

* :class:`StrictArray` wraps an ``np.ndarray``; arithmetic, indexing and every
  NumPy function or ufunc applied to it return ``StrictArray`` again;
* implicit conversions to host values raise ``TypeError``: ``np.asarray(a)``,
  ``float(a)``, ``int(a)``, ``bool(a)``, ``len`` iteration, ``print(a)``, ``a.tolist()``;
* mixing a host ``np.ndarray`` into a device operation raises, as CuPy does;
* the only ways out are explicit: ``a.get()`` (CuPy's spelling) or
  :func:`minillm.backend.to_host`.

It is stricter than CuPy on purpose (CuPy allows ``float()`` of a 0-d array, at the
price of a device synchronisation): a library that runs on this device never
synchronises behind the user's back. Every host transfer is counted in
:data:`TRANSFERS` so tests can assert that a training step makes none.
"""
from __future__ import annotations

import numpy as np

__all__ = ["StrictArray", "strict_numpy", "ImplicitConversionError", "TRANSFERS"]


class ImplicitConversionError(TypeError):
    """Raised when a value on the stand-in device would be converted to the host implicitly."""


#: Counters of explicit transfers, ``{"to_host": n, "to_device": n}``.
TRANSFERS = {"to_host": 0, "to_device": 0}

_HINT = ("arrays on the 'fake' stand-in device (like CuPy arrays on a GPU) are not "
         "converted to host values implicitly; call tensor.numpy() / tensor.item() "
         "or minillm.backend.to_host(array) explicitly")


def _refuse(what):
    raise ImplicitConversionError(f"{what}: {_HINT}")


def _unwrap(x, allow_host=False):
    """StrictArray -> ndarray; recurse into lists/tuples/dicts; refuse host arrays."""
    if type(x) is StrictArray:
        return x._a
    if isinstance(x, np.ndarray):
        if allow_host:
            return x
        raise TypeError(
            f"a host numpy.ndarray of shape {x.shape} was mixed into an operation on the "
            "'fake' device (CuPy refuses this too); move it first with "
            "minillm.tensor(array, device=...) or minillm.backend.to_device(array, device)")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, allow_host) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, allow_host) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return StrictArray(x)
    if isinstance(x, np.generic):            # reductions give 0-d device arrays, as in CuPy
        return StrictArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


class StrictArray:
    """An ``np.ndarray`` that pretends to live on a GPU (see the module docstring)."""

    __slots__ = ("_a",)
    __array_priority__ = 1000

    def __init__(self, a):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"StrictArray wraps a numpy.ndarray, got {type(a).__name__}")
        self._a = a

    # -- the explicit way out -------------------------------------------------------
    def get(self):
        """Copy to a host ``np.ndarray`` (CuPy's ``ndarray.get``)."""
        TRANSFERS["to_host"] += 1
        return self._a.copy()

    # -- implicit conversions are refused --------------------------------------------
    def __array__(self, dtype=None, copy=None):
        _refuse("np.asarray()/np.array() of a device array")

    def __float__(self):
        _refuse("float() of a device array")

    def __int__(self):
        _refuse("int() of a device array")

    def __index__(self):
        _refuse("using a device array as a Python index")

    def __complex__(self):
        _refuse("complex() of a device array")

    def __bool__(self):
        _refuse("bool() of a device array (an `if` on a device value)")

    def __iter__(self):
        _refuse("iterating over a device array in Python")

    def __repr__(self):
        # repr stays safe for debuggers and test reports; it never shows values
        return f"<StrictArray shape={self._a.shape} dtype={self._a.dtype} on 'fake' (values hidden)>"

    def __str__(self):
        _refuse("printing the values of a device array")

    def __format__(self, spec):
        _refuse("formatting the values of a device array")

    def tolist(self):
        _refuse("tolist() of a device array")

    def item(self, *args):
        _refuse("item() of a device array")

    def __len__(self):
        return len(self._a)

    def __reduce__(self):
        _refuse("pickling a device array")

    def __copy__(self):                  # device-to-device copies are fine (CuPy allows them)
        return StrictArray(self._a.copy())

    def __deepcopy__(self, memo):
        return StrictArray(self._a.copy())

    # -- attributes ------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: StrictArray(self._a.T))
    base = property(lambda self: None if self._a.base is None else _wrap(self._a.base))

    def __getattr__(self, name):
        if name.startswith("__"):   # __array_interface__, __array_struct__, __dlpack__ ...
            raise AttributeError(f"'StrictArray' does not expose {name} (no implicit host access)")
        attr = getattr(self._a, name)
        if callable(attr):
            def method(*args, **kwargs):
                out = kwargs.get("out")
                res = attr(*_unwrap(args), **_unwrap(kwargs))
                return out if out is not None and res is _unwrap(out) else _wrap(res)
            method.__name__ = name
            return method
        return _wrap(attr)

    # -- indexing ---------------------------------------------------------------------
    def __getitem__(self, idx):
        return _wrap(self._a[_unwrap(idx)])

    def __setitem__(self, idx, value):
        self._a[_unwrap(idx)] = _unwrap(value)

    # -- NumPy protocols: ufuncs and functions stay on the device ---------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        res = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(res)

    def __array_function__(self, func, types, args, kwargs):
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))


def _binary(name):
    def op(self, other):
        if type(other) is not StrictArray and isinstance(other, np.ndarray):
            _unwrap(other)                       # raises the host-array error (0-d too, as CuPy)
        res = getattr(self._a, name)(_unwrap(other))
        return NotImplemented if res is NotImplemented else _wrap(res)
    op.__name__ = name
    return op


def _inplace(name):
    def op(self, other):
        getattr(self._a, name)(_unwrap(other))
        return self
    op.__name__ = name
    return op


def _unary(name):
    def op(self):
        return _wrap(getattr(self._a, name)())
    op.__name__ = name
    return op


for _n in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
           "and", "or", "xor", "lshift", "rshift"):
    setattr(StrictArray, f"__{_n}__", _binary(f"__{_n}__"))
    setattr(StrictArray, f"__r{_n}__", _binary(f"__r{_n}__"))
    setattr(StrictArray, f"__i{_n}__", _inplace(f"__i{_n}__"))
for _n in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(StrictArray, f"__{_n}__", _binary(f"__{_n}__"))
for _n in ("neg", "pos", "abs", "invert"):
    setattr(StrictArray, f"__{_n}__", _unary(f"__{_n}__"))
StrictArray.__hash__ = None


class _UfuncProxy:
    """``xp.add`` etc.: callable, with ``.at``, ``.reduce``, ``.reduceat``, ``.outer``."""

    __slots__ = ("_u",)

    def __init__(self, u):
        self._u = u

    def __call__(self, *args, **kwargs):
        out = kwargs.get("out")
        res = self._u(*_unwrap(args), **_unwrap(kwargs))
        return out if out is not None else _wrap(res)

    def at(self, a, indices, b=None):
        if type(a) is not StrictArray:
            raise TypeError("ufunc.at on the 'fake' device needs a device array as its target")
        args = (_unwrap(indices),) if b is None else (_unwrap(indices), _unwrap(b))
        self._u.at(a._a, *args)

    def __getattr__(self, name):
        attr = getattr(self._u, name)
        if callable(attr):
            return lambda *a, **k: _wrap(attr(*_unwrap(a), **_unwrap(k)))
        return attr


class _Namespace:
    """A module-like object: ``strict_numpy.exp(a)`` is ``np.exp`` that keeps arrays on 'fake'."""

    # Functions that create device arrays from host data: an explicit transfer, counted.
    _FROM_HOST = frozenset({"asarray", "array", "ascontiguousarray"})

    def __init__(self, module, name):
        self._m = module
        self.__name__ = name
        self._cache = {}

    ndarray = StrictArray

    def __getattr__(self, name):
        try:
            return self._cache[name]
        except KeyError:
            pass
        attr = getattr(self._m, name)
        if isinstance(attr, np.ufunc):
            res = _UfuncProxy(attr)
        elif isinstance(attr, type) or not callable(attr):
            if hasattr(attr, "__name__") and type(attr).__name__ == "module":
                res = _Namespace(attr, f"{self.__name__}.{name}")
            else:
                res = attr
        elif name in self._FROM_HOST:
            def res(obj, *args, _f=attr, **kwargs):
                if type(obj) is not StrictArray:
                    TRANSFERS["to_device"] += 1
                return _wrap(_f(_unwrap(obj, allow_host=True), *args, **kwargs))
        else:
            def res(*args, _f=attr, **kwargs):
                return _wrap(_f(*_unwrap(args), **_unwrap(kwargs)))
            res.__name__ = name
        self._cache[name] = res
        return res

    def __repr__(self):
        return f"<strict namespace over {self._m.__name__}>"


#: The array module of the 'fake' device.
strict_numpy = _Namespace(np, "strict_numpy")
