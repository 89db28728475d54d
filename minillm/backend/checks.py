"""Checks of device values (:func:`check`): made now on the CPU, queued on a device.

The queue is read, in one transfer per device, at the next explicit host transfer: that is
:func:`to_host`, which therefore lives here and not beside ``to_device``.
"""
from __future__ import annotations

import numpy as np

from .devices import _DEVICES, _to_host, device_of

__all__ = ["check", "pending_checks", "flush_checks", "read_flags", "discard_checks", "to_host"]

_pending_checks = []
_MAX_PENDING = 256


def check(flag, error):
    """Raise ``error()`` if the boolean scalar array ``flag`` (True = something is wrong) is set.

    Input validation that depends on *values* (token ids in range, a mask of 0s and 1s)
    needs those values on the host. On the CPU that is free and the check happens now. On a
    GPU (and on the stand-in device) reading a flag means waiting for the device, so inside a
    training step that would be a host<->device round trip per check. There the check is
    queued instead and made at the next explicit host transfer (``to_host``, ``.item()``,
    ``.numpy()``) or :func:`flush_checks`, with one transfer for all queued flags. This is
    CUDA's own model: a device-side assert is reported at the next synchronisation, and the
    work queued in between has already run. ``error`` is a callable returning the exception
    (it may read the offending values: it runs only when the check failed).
    """
    if isinstance(flag, (np.ndarray, np.generic, bool)):
        if bool(flag):
            raise error()
        return
    _pending_checks.append((flag, error))
    if len(_pending_checks) >= _MAX_PENDING:
        flush_checks()


def pending_checks():
    """How many device-side checks are queued (see :func:`check`)."""
    return len(_pending_checks)


def flush_checks():
    """Make every queued :func:`check` now: one host read per device; raises the first error."""
    if _pending_checks:
        read_flags([])


def read_flags(flags):
    """Read boolean scalar device arrays to Python bools, together with the queued checks.

    One host read per device for all of them (a mixed-precision step reads its inf/NaN flag
    this way, so the step's input checks ride along instead of costing a second read).
    A failed queued check is raised (after the read).
    """
    pending = list(_pending_checks)
    _pending_checks.clear()
    items = pending + [(f, None) for f in flags]
    by_dev = {}
    for n, (flag, _) in enumerate(items):
        host = isinstance(flag, (np.ndarray, np.generic, bool))
        by_dev.setdefault(_DEVICES["cpu"] if host else device_of(flag), []).append(n)
    values = [None] * len(items)
    for dev, idx in by_dev.items():
        if dev.type == "cpu":
            host = [bool(items[n][0]) for n in idx]
        else:
            with dev:
                host = _to_host(dev.xp.stack([items[n][0].reshape(()) for n in idx])).tolist()
        for n, v in zip(idx, host):
            values[n] = bool(v)
    for (_, error), bad in zip(items, values):
        if error is not None and bad:
            raise error()
    return values[len(pending):]


def discard_checks():
    """Drop the queued checks without making them (after an error, or in tests)."""
    _pending_checks.clear()


def to_host(array):
    """Explicit device -> host copy, returning an ``np.ndarray``.

    Makes the queued device-side checks first (:func:`check`): a transfer synchronises anyway.
    """
    if _pending_checks:
        flush_checks()
    return _to_host(array)
