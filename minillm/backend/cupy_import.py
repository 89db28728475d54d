"""CuPy, imported lazily: the module that imports CuPy itself for the whole of minillm.

CuPy is imported the first time a CUDA device is asked for (:func:`_import_cupy`); a failure
is remembered in ``_cupy_error`` so error messages can explain it. :func:`cupy_status` tells
whether CuPy is installed without importing it (for ``minillm info``). Other modules read
``cupy_import._cupy`` through this module, never a copy: it changes at the first import.
"""
from __future__ import annotations

__all__ = ["is_cupy", "cupy_status"]

_cupy = None
_cupy_error = None


def _import_cupy():
    """Import CuPy on first use; remember a failure so the error message can explain it."""
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy  # noqa: PLC0415 - the lazy import is the point
            cupy.cuda.runtime.getDeviceCount()
            _cupy = cupy
        except Exception as e:  # ImportError, CUDARuntimeError, missing driver ...
            _cupy_error = f"{type(e).__name__}: {e}"
    return _cupy


def _cuda_count():
    cp = _import_cupy()
    return 0 if cp is None else cp.cuda.runtime.getDeviceCount()


def is_cupy(xp):
    """True when the array module ``xp`` is CuPy (never imports CuPy to find out)."""
    return _cupy is not None and xp is _cupy


def cupy_status():
    """A one-line description of CuPy on this machine, found without importing it."""
    import importlib.metadata
    import importlib.util
    try:
        spec = importlib.util.find_spec("cupy")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return ("not installed (for a GPU: pip install 'minillm[gpu]' for CUDA 12.x, "
                "or pip install cupy-cuda13x for CUDA 13.x)")
    try:
        dists = importlib.metadata.packages_distributions().get("cupy", [])
        versions = [f"{d} {importlib.metadata.version(d)}" for d in dists]
    except Exception:  # metadata is informational only
        versions = []
    status = "installed" + (f" ({', '.join(versions)})" if versions else "")
    if _cuda_count() == 0:                   # no 'cuda:N' among the available devices
        status += " but no usable CUDA device" + (f" ({_cupy_error})" if _cupy_error else "")
    return status
