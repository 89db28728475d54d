"""The one place that decides between NumPy and CuPy.

Everything else in minillm asks a tensor for its device and the device for its array module
(``device.xp``): NumPy on ``cpu``, CuPy on ``cuda``/``cuda:N``, and on ``fake`` the strict
stand-in that computes with NumPy but refuses implicit host conversion, as CuPy does (the test
suite runs on it with ``MINILLM_TEST_DEVICE=fake`` to prove the library is device-clean).
The names below are all importable from ``minillm.backend``; they live in:

``devices``       :class:`Device`, :func:`device`, the default device, ``to_device``.
``cupy_import``   CuPy, imported lazily on first use, and :func:`cupy_status`.
``dtypes``        the default floating dtype.
``checks``        checks of device values, queued on a GPU and made at the next ``to_host``.
``rng``           one random :class:`Generator` per device, seeded together by ``manual_seed``.
``arrays``        scatter-add, the embedding backward, column sums, row max/sum, ``erfc``.
``strict``        the stand-in device's array type and its transfer counters.
``special``       ``erfc`` for NumPy, which lacks it.
``cuda_kernels``  the fused CUDA kernels (CuPy only).
``parallel``      cache-blocked, threaded row loops for the fused CPU kernels.
``host_memory``   opt-in tuning of glibc's allocator for long training runs.
``nccl``          NCCL collectives for data-parallel training on GPUs.
"""
from __future__ import annotations

# Re-exports: every name below is ``minillm.backend.NAME``. The private ones are kept for the
# modules that import them from here (cuda_kernels imports _import_cupy and is_cupy lazily).
from . import cuda_kernels, host_memory, special  # noqa: F401
from .strict import TRANSFERS, ImplicitConversionError, StrictArray, strict_numpy
from . import checks, cupy_import, devices, dtypes, rng  # noqa: F401
from .cupy_import import _cuda_count, _import_cupy, cupy_status, is_cupy
from .devices import (_DEVICES, Device, DeviceError, _check_cuda, _to_host, available_devices,
                      default_device_as, device, device_of, get_default_device,
                      is_device_array, set_default_device, synchronize, to_device)
from .dtypes import _FLOAT_DTYPES, default_dtype_as, get_default_dtype, set_default_dtype
from .checks import (_MAX_PENDING, _pending_checks, check, discard_checks, flush_checks,
                     pending_checks, read_flags, to_host)
from .rng import Generator, _generators, active_devices, generator, manual_seed
from .arrays import (_ufunc_at, column_sum, erfc, index_add_rows, row_max, row_sum,
                     scatter_add)

host_memory.tune_if_requested()      # only with MINILLM_HOST_ALLOCATOR=tuned: see its docstring

__all__ = [
    "Device", "device", "available_devices", "get_default_device", "set_default_device",
    "default_device_as", "get_default_dtype", "set_default_dtype", "default_dtype_as",
    "manual_seed", "generator", "to_host", "to_device", "synchronize", "check", "flush_checks",
    "read_flags", "pending_checks", "discard_checks", "device_of", "is_device_array", "is_cupy",
    "active_devices", "cupy_status", "scatter_add", "index_add_rows", "column_sum", "row_max",
    "row_sum", "erfc", "StrictArray", "ImplicitConversionError", "TRANSFERS", "DeviceError",
]

# Module state that is rebound at run time is read from its module on every access, so
# ``backend._cupy`` (say) is never a stale copy.
_LIVE = {"_cupy": cupy_import, "_cupy_error": cupy_import, "_default_device": devices,
         "_default_dtype": dtypes, "_seed": rng}


def __getattr__(name):
    module = _LIVE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)
