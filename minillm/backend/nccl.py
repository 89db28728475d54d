"""NCCL collectives on CuPy arrays, for :mod:`minillm.distributed`'s ``"nccl"`` backend.

The only place that touches CuPy's NCCL bindings (CuPy itself comes from :mod:`.cupy_import`),
so the rule "only the backend decides between NumPy and CuPy" holds for data-parallel training
too. The processes are still launched and wired by MPI: rank 0 makes NCCL's unique id and MPI
sends it to the others (``share_id``). Not exercised by the test suite: it needs one GPU per
rank.
"""
from __future__ import annotations

import numpy as np

from .cupy_import import _import_cupy
from .devices import device_of


def _cupy_nccl():
    cp = _import_cupy()
    try:
        if cp is None:
            raise ImportError("CuPy is not usable here")
        from cupy.cuda import nccl  # noqa: PLC0415 - only with backend="nccl"
    except ImportError as e:
        raise ImportError(f"data_parallel backend 'nccl' needs CuPy with NCCL and a GPU ({e}); "
                          "install cupy-cuda12x, or use backend='mpi'") from None
    return cp, nccl


def communicator(rank, size, share_id):
    """Make device ``rank % device_count`` current and return an NCCL communicator for it.

    ``share_id(array)`` broadcasts rank 0's int64 array (NCCL's 128-byte unique id) to every
    rank in place (an MPI ``Bcast``)."""
    cp, nccl = _cupy_nccl()
    cp.cuda.Device(rank % cp.cuda.runtime.getDeviceCount()).use()
    uid = np.zeros(128, dtype=np.int64)
    if rank == 0:
        uid[:] = np.array(nccl.get_unique_id(), dtype=np.int64)
    share_id(uid)
    return nccl.NcclCommunicator(size, tuple(int(v) for v in uid), rank)


def collective_(comm, buf, op, root=0):
    """``op`` ("allreduce": sum, or "bcast" from ``root``) on the CuPy buffer ``buf`` over
    ``comm``, on the current stream; returns the (contiguous) buffer holding the result."""
    cp, nccl = _cupy_nccl()
    if not isinstance(buf, cp.ndarray):
        raise TypeError(f"data_parallel backend 'nccl' reduces CuPy arrays on the GPU, got "
                        f"arrays on {device_of(buf)}; use backend='mpi' for CPU")
    types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
    buf = cp.ascontiguousarray(buf)
    stream = cp.cuda.get_current_stream().ptr
    if op == "allreduce":
        comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, types[buf.dtype], nccl.NCCL_SUM,
                       stream)
    else:
        comm.bcast(buf.data.ptr, buf.size, types[buf.dtype], root, stream)
    return buf
