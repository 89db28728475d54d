"""Host (CPU) memory: on request, keep freed NumPy buffers in the process instead of returning
them to the OS.

Why it matters. A training step allocates and frees the same large temporaries every step
(activations, gradients: hundreds of KB to MB each). glibc's ``malloc`` serves blocks above
its *mmap threshold* with a fresh ``mmap`` and returns them with ``munmap`` on ``free``, and it
*trims* free memory at the top of the heap back to the OS above the *trim threshold*. Either
way, the next step's buffer is new memory, and the first touch of every 4 KiB page is a page
fault the kernel must zero-fill. (The measured gain is in PERFORMANCE.md, "Host allocator".)

What is done. :func:`tune_host_allocator` sets, through ``mallopt``,
``M_MMAP_THRESHOLD`` = 32 MiB (blocks below it come from the heap and are reused) and
``M_TRIM_THRESHOLD`` = 256 MiB (up to that much free memory stays mapped for the next step),
on Linux with glibc only. The price: a process keeps up to 256 MiB of freed memory mapped.

Opt-in. The allocator belongs to the whole process, so importing minillm leaves it alone.
The ``minillm`` command (``python -m minillm``, ``make demo``, the benchmarks) opts in once at
start. A program or notebook that trains for long opts in with either of::

    mm.backend.host_memory.tune_host_allocator()     # in the program, before training
    MINILLM_HOST_ALLOCATOR=tuned                      # in the environment: tuned at import

``MINILLM_HOST_ALLOCATOR=default`` leaves glibc's defaults alone, even when asked (the
``minillm`` command included): :func:`tune_host_allocator` then changes nothing and says why.
"""
from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["tune_host_allocator", "tune_if_requested", "host_allocator_status", "MMAP_THRESHOLD",
           "TRIM_THRESHOLD"]

ENV = "MINILLM_HOST_ALLOCATOR"
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20

_M_TRIM_THRESHOLD = -1        # <malloc.h> parameter numbers
_M_MMAP_THRESHOLD = -3

_status = {"tuned": False, "reason": "not requested: see minillm.backend.host_memory"}


def tune_host_allocator(mmap_threshold=MMAP_THRESHOLD, trim_threshold=TRIM_THRESHOLD):
    """Apply the glibc ``mallopt`` settings described in the module docstring.

    Returns a status dict: ``{"tuned": True, "mmap_threshold": ..., "trim_threshold": ...}``
    or ``{"tuned": False, "reason": ...}`` (not glibc, disabled by the environment, or
    ``mallopt`` refused a value). Never raises: the settings change speed, not results.
    """
    global _status
    if os.environ.get(ENV, "").strip().lower() == "default":
        _status = {"tuned": False, "reason": "MINILLM_HOST_ALLOCATOR=default"}
        return dict(_status)
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _status = {"tuned": False, "reason": "not Linux with glibc"}
        return dict(_status)
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        ok = (mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
              and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1)
    except (OSError, AttributeError) as e:
        _status = {"tuned": False, "reason": f"mallopt unavailable: {e}"}
        return dict(_status)
    if not ok:
        _status = {"tuned": False, "reason": "mallopt refused the values"}
    else:
        _status = {"tuned": True, "mmap_threshold": int(mmap_threshold),
                   "trim_threshold": int(trim_threshold)}
    return dict(_status)


def tune_if_requested():
    """Tune when the environment asks for it (``MINILLM_HOST_ALLOCATOR=tuned``); called at
    import. Returns the status dict, or None when nothing was asked."""
    if os.environ.get(ENV, "").strip().lower() == "tuned":
        return tune_host_allocator()
    return None


def host_allocator_status():
    """What :func:`tune_host_allocator` did in this process (for ``minillm info``)."""
    return dict(_status)
