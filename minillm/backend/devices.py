"""Devices: the :class:`Device` value, parsing (:func:`device`), the default device, and the
explicit host -> device copy.

A device knows its array module (``device.xp``): NumPy for ``cpu``, CuPy for ``cuda:N``, the
strict stand-in namespace for ``fake``. Everything else in minillm asks a device for ``xp``.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import cupy_import
from .cupy_import import _cuda_count, _import_cupy
from .strict import StrictArray, strict_numpy

__all__ = ["DeviceError", "Device", "device", "available_devices", "get_default_device",
           "set_default_device", "default_device_as", "device_of", "is_device_array",
           "to_device", "synchronize"]


class DeviceError(RuntimeError):
    """A device was asked for that this machine does not have, or devices were mixed."""


def available_devices():
    """Names of the devices usable here, e.g. ``['cpu', 'fake', 'cuda:0']``."""
    return ["cpu", "fake"] + [f"cuda:{i}" for i in range(_cuda_count())]


class Device:
    """A device value: ``Device('cpu')``, ``Device('cuda', 1)``, ``Device('fake')``.

    Compares equal to its string form, so ``t.device == 'cpu'`` works.
    """

    __slots__ = ("type", "index", "_xp", "_ctx")

    def __init__(self, type, index=None):
        if type not in ("cpu", "cuda", "fake"):
            raise DeviceError(f"unknown device type {type!r}; expected 'cpu', 'cuda', 'cuda:N' "
                              f"or 'fake' (available here: {available_devices()})")
        self.type = type
        self.index = (index or 0) if type == "cuda" else None
        self._xp = None
        self._ctx = []

    @property
    def xp(self):
        """The array module of this device: numpy, cupy, or the strict stand-in namespace."""
        if self._xp is None:
            if self.type == "cpu":
                self._xp = np
            elif self.type == "fake":
                self._xp = strict_numpy
            else:
                self._xp = _check_cuda(self.index)
        return self._xp

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device('{self}')"

    def __eq__(self, other):
        if isinstance(other, Device):
            return self.type == other.type and self.index == other.index
        if isinstance(other, str):
            try:
                return self == device(other)
            except DeviceError:
                return False
        return NotImplemented

    def __hash__(self):
        return hash((self.type, self.index))

    # a device is a value: copies are the same device, pickling stores its name
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return (device, (str(self),))

    def __enter__(self):
        """``with device:`` makes the CUDA device current (a no-op for cpu/fake)."""
        if self.type == "cuda":
            ctx = self.xp.cuda.Device(self.index)
            ctx.__enter__()
            self._ctx.append(ctx)
        return self

    def __exit__(self, *exc):
        if self._ctx:
            self._ctx.pop().__exit__(*exc)


def _check_cuda(index):
    cp = _import_cupy()
    if cp is None:
        raise DeviceError(
            f"CUDA device 'cuda:{index}' requested, but CuPy is not usable here "
            f"({cupy_import._cupy_error}). Available devices: {available_devices()}. To use a "
            "GPU, install the CuPy wheel that matches your CUDA toolkit: `pip install "
            "minillm[gpu]` (cupy-cuda12x) or `pip install cupy-cuda13x` for CUDA 13.")
    n = cp.cuda.runtime.getDeviceCount()
    if index >= n:
        raise DeviceError(f"device 'cuda:{index}' does not exist; available devices: "
                          f"{available_devices()}")
    return cp


_DEVICES = {}


def device(spec=None):
    """Parse a device spec (``None`` = the default device, a :class:`Device`, or a string)."""
    if spec is None:
        return _default_device
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise DeviceError(f"a device is a string like 'cpu', 'cuda:0' or 'fake', got {spec!r}")
    d = _DEVICES.get(spec)
    if d is None:
        name, _, idx = spec.strip().lower().partition(":")
        if idx and not idx.isdigit():
            raise DeviceError(f"bad device index in {spec!r}; expected e.g. 'cuda:0'")
        if idx and name != "cuda":
            raise DeviceError(f"only CUDA devices take an index; got {spec!r}")
        d = Device(name, int(idx) if idx else 0)
        key = str(d)
        d = _DEVICES.setdefault(key, d)
        _DEVICES[spec] = d
    if d.type == "cuda":
        d.xp  # noqa: B018 - fail now, with the list of devices, not at first use
    return d


_default_device = device("cpu")


def get_default_device():
    return _default_device


def set_default_device(spec):
    """Device for tensors and modules created without an explicit ``device=``."""
    global _default_device
    _default_device = device(spec)
    return _default_device


@contextlib.contextmanager
def default_device_as(spec):
    """``with default_device_as("fake"):`` new tensors and modules go there; restored after."""
    prev = _default_device
    if spec is not None:
        set_default_device(spec)
    try:
        yield get_default_device()
    finally:
        set_default_device(prev)


def device_of(array):
    """The device an array lives on."""
    if isinstance(array, np.ndarray):
        return _DEVICES["cpu"]
    if type(array) is StrictArray:
        return device("fake")
    cp = cupy_import._cupy
    if cp is not None and isinstance(array, cp.ndarray):
        return device(f"cuda:{array.device.id}")
    raise TypeError(f"not an array minillm can hold: {type(array).__name__}")


def is_device_array(x):
    """True for arrays that live on a non-CPU device (CuPy arrays, stand-in arrays)."""
    cp = cupy_import._cupy
    return type(x) is StrictArray or (cp is not None and isinstance(x, cp.ndarray))


def to_device(host_array, dev, dtype=None):
    """Explicit host -> device copy (a no-op view on cpu when no dtype change is needed)."""
    dev = device(dev)
    if dev.type == "cpu":
        return np.asarray(host_array, dtype=dtype)
    if dev.type == "fake":
        return strict_numpy.asarray(np.asarray(host_array, dtype=dtype))
    with dev:
        return dev.xp.asarray(host_array, dtype=dtype)


def _to_host(array):
    """Device -> host copy without making the queued checks (``checks.to_host`` makes them)."""
    if isinstance(array, np.ndarray):
        return array
    if type(array) is StrictArray:
        return array.get()
    cp = cupy_import._cupy
    if cp is not None and isinstance(array, cp.ndarray):
        return array.get()
    if isinstance(array, (np.generic, int, float, bool)):
        return np.asarray(array)
    raise TypeError(f"to_host expects a device array, got {type(array).__name__}")


def synchronize(dev=None):
    """Wait until all queued work on ``dev`` (default: every CUDA device in use) is done.

    A no-op on ``cpu`` and ``fake`` (NumPy runs eagerly). Timings of GPU work must call it
    before reading the clock: CuPy kernels are launched asynchronously.
    """
    if dev is not None:
        dev = device(dev)
        if dev.type == "cuda":
            dev.xp.cuda.Device(dev.index).synchronize()
    elif cupy_import._cupy is not None:      # CuPy in use: every GPU it may have queued work on
        for i in range(_cuda_count()):
            cupy_import._cupy.cuda.Device(i).synchronize()
