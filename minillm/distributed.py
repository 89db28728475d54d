"""Data-parallel training over MPI: every process holds the whole model, sees its own shard
of each batch, and the processes average their gradients before the optimizer step.

    mpiexec -n 2 python train.py          # train.py: TrainingArguments(..., data_parallel="mpi")

    from minillm import distributed as dist
    group = dist.init("mpi")              # group.rank in 0..world_size-1
    dist.broadcast_(params, root=0)       # every rank starts from rank 0's weights
    ...loss.backward()...
    dist.allreduce_mean_(grads)           # g <- (g_0 + ... + g_{W-1}) / W, on every rank

**Why the average is the right gradient.** With ``W`` processes each taking ``b`` examples of
a global batch of ``W*b``, the mean loss of the global batch is the mean of the ``W`` shard
means, and the gradient of a mean is the mean of the gradients. So after
``allreduce_mean_`` every rank holds the gradient of the global batch and takes the same
optimizer step; the weights stay identical without ever being sent again.

**One message per dtype.** Sending every gradient separately would pay the network latency
once per parameter. ``allreduce_mean_`` flattens the arrays into one contiguous buffer per
dtype, makes one ``Allreduce(IN_PLACE, buf, op=SUM)``, divides by ``W`` and copies the pieces
back (float16 is summed in float32: MPI has no half type, and the sum could overflow).

**Backends.** ``"mpi"`` (mpi4py) works on host arrays; arrays on a device (CuPy, the test
stand-in) are copied to the host and back. ``"nccl"`` reduces CuPy arrays on the GPUs with
``cupy.cuda.nccl`` (NCCL's unique id is broadcast over MPI, so ``mpiexec`` still launches the
processes); choose the device of each rank first (e.g. ``cuda:{rank % n_gpus}``).

Install the MPI runtime from PyPI: ``pip install mpi4py mpich`` (``mpiexec`` then lives next
to ``python``). Processes are started by ``mpiexec -n W``; a plain ``python`` run is a group
of one, where every operation is a no-op copy.
"""
from __future__ import annotations

import os

import numpy as np

from . import backend
from .backend import nccl as nccl_backend
from .autograd import Tensor

__all__ = ["Group", "init", "get_group", "is_initialized", "launched_world_size",
           "allreduce_mean_", "allreduce_sum", "broadcast_", "barrier", "is_main",
           "BACKENDS"]

BACKENDS = ("mpi", "nccl")
_INSTALL = ("install the MPI runtime and its Python binding: pip install mpi4py mpich "
            "(then launch with: mpiexec -n 2 python your_script.py)")
# environment variables by which MPI launchers tell a process the size of its job
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")

_group = None                     # the group made by init(); the module functions use it


def launched_world_size():
    """The number of processes ``mpiexec`` started this job with, read from the launcher's
    environment variables (MPICH/Intel MPI ``PMI_SIZE``, Open MPI ``OMPI_COMM_WORLD_SIZE``);
    1 for a plain ``python`` run. Imports nothing (used to decide whether to import mpi4py)."""
    for name in _SIZE_VARS:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def _import_mpi():
    try:
        from mpi4py import MPI  # noqa: PLC0415 - optional dependency, only when asked for
    except ImportError as e:
        raise ImportError(f"minillm.distributed needs mpi4py ({e}); {_INSTALL}") from None
    return MPI


def _arrays(arrays, what):
    """The raw arrays of a list of arrays / Tensors, checked: all floating point, one device."""
    if isinstance(arrays, (Tensor, np.ndarray)) or backend.is_device_array(arrays):
        raise TypeError(f"{what} expects a list of arrays or Tensors, got a single "
                        f"{type(arrays).__name__}; wrap it in a list: [x]")
    out = []
    for i, a in enumerate(arrays):
        a = a.data if isinstance(a, Tensor) else a
        if not (isinstance(a, np.ndarray) or backend.is_device_array(a)):
            raise TypeError(f"{what}: item {i} is a {type(a).__name__}, not an array or Tensor")
        if a.dtype.kind != "f":
            raise TypeError(f"{what}: item {i} has dtype {a.dtype}; only floating-point arrays "
                            "(gradients, weights) are averaged or broadcast")
        out.append(a)
    devices = {str(backend.device_of(a)) for a in out}
    if len(devices) > 1:
        raise ValueError(f"{what}: the arrays live on several devices {sorted(devices)}; "
                         "move them to one device first")
    return out


def _by_dtype(arrays):
    """Indices of ``arrays`` grouped by dtype, in order of first appearance."""
    groups = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.dtype, []).append(i)
    return groups


class Group:
    """The processes of one job: ``rank`` (0..``world_size``-1), ``world_size``, ``backend``.

    Made by :func:`init`. Every collective (``allreduce_mean_``, ``broadcast_``, ``barrier``,
    ``allreduce_sum``) must be called by every rank, in the same order, with arrays of the
    same shapes and dtypes; a mismatch is detected and raised as a ValueError on every rank.
    """

    def __init__(self, comm, backend_name="mpi", nccl_comm=None):
        self.comm = comm
        self.backend = backend_name
        self.rank = comm.Get_rank()
        self.world_size = comm.Get_size()
        self._nccl = nccl_comm
        self._MPI = _import_mpi()

    def __repr__(self):
        return f"Group(backend={self.backend!r}, rank={self.rank}, world_size={self.world_size})"

    def is_main(self):
        """True on rank 0, the process that writes files and shows progress bars."""
        return self.rank == 0

    def barrier(self):
        """Wait until every rank has reached this point."""
        self.comm.Barrier()

    # -- checks ------------------------------------------------------------------------------
    def _check_same_layout(self, arrays, what):
        """Raise on every rank if the ranks passed different shapes/dtypes (one tiny
        Allreduce: each rank sends its signature and its negation; MAX gives max and -min)."""
        shapes = tuple((a.shape, a.dtype.num) for a in arrays)   # ints only: hash is stable
        sig = np.array([len(arrays), sum(a.size for a in arrays),
                        hash(shapes) & 0x7FFFFFFFFFFFFFFF], np.int64)
        both = np.concatenate([sig, -sig])
        self.comm.Allreduce(self._MPI.IN_PLACE, both, op=self._MPI.MAX)
        n = len(sig)
        if not np.array_equal(both[:n], -both[n:]):
            raise ValueError(
                f"{what}: the ranks passed different lists of arrays (this rank: "
                f"{len(arrays)} arrays of {sum(a.size for a in arrays)} elements). Every rank "
                "must pass the same parameters in the same order with the same shapes and "
                "dtypes (build the same model on every rank)")

    # -- collectives -------------------------------------------------------------------------
    def allreduce_mean_(self, arrays):
        """In place: every array becomes the mean of that array over the ranks.

        ``arrays``: a list of floating-point arrays (NumPy, CuPy, stand-in) or Tensors (their
        ``.data``). One flat buffer and one Allreduce per dtype. Returns ``arrays``.
        """
        raw = _arrays(arrays, "allreduce_mean_")
        if self.world_size == 1:
            return arrays
        def mean(buf):
            buf = self._transport(buf, "allreduce")
            buf /= self.world_size
            return buf

        self._per_dtype(raw, "allreduce_mean_", mean)
        return arrays

    def broadcast_(self, arrays, root=0):
        """In place: every array takes the values of rank ``root``'s array (one Bcast per
        dtype). Used once before training so all ranks start from the same weights, however
        each rank initialised its model. Returns ``arrays``."""
        if not (isinstance(root, (int, np.integer)) and not isinstance(root, bool)
                and 0 <= root < self.world_size):
            raise ValueError(f"broadcast_: root must be a rank in 0..{self.world_size - 1}, "
                             f"got {root!r}")
        raw = _arrays(arrays, "broadcast_")
        if self.world_size == 1:
            return arrays
        self._per_dtype(raw, "broadcast_", lambda buf: self._transport(buf, "bcast", int(root)))
        return arrays

    def allreduce_sum(self, values):
        """The sum over the ranks of a list of Python numbers (losses, counts), as a list of
        floats on every rank (exact for integers below 2**53)."""
        buf = np.array([float(v) for v in values], dtype=np.float64)
        if self.world_size > 1:
            self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        return buf.tolist()

    # -- transport ---------------------------------------------------------------------------
    def _per_dtype(self, raw, what, transport):
        """For each dtype: pack the arrays into one flat buffer (float16 widened to float32),
        ``transport`` it (a collective returning the result buffer), unpack in place."""
        self._check_same_layout(raw, what)
        for dtype, idx in _by_dtype(raw).items():
            xp = backend.device_of(raw[idx[0]]).xp
            wide = np.dtype(np.float32) if dtype == np.float16 else dtype
            buf = transport(xp.concatenate([raw[i].reshape(-1).astype(wide, copy=False)
                                            for i in idx]))
            off = 0
            for i in idx:
                a = raw[i]
                a[...] = buf[off:off + a.size].reshape(a.shape).astype(a.dtype)
                off += a.size

    def _transport(self, buf, op, root=0):
        """``op`` ("allreduce": sum, or "bcast" from ``root``) of a flat buffer over the ranks;
        returns the buffer holding the result. MPI works on host memory: a device buffer is
        staged through the host (NCCL reduces CuPy buffers in place)."""
        if self._nccl is not None:
            return self._nccl_op(buf, op, root)

        def mpi(host):
            if op == "allreduce":
                self.comm.Allreduce(self._MPI.IN_PLACE, host, op=self._MPI.SUM)
            else:
                self.comm.Bcast(host, root=root)
            return host

        if isinstance(buf, np.ndarray):
            return mpi(buf)
        dev = backend.device_of(buf)
        return backend.to_device(mpi(np.ascontiguousarray(backend.to_host(buf))), dev)

    def _nccl_op(self, buf, op, root=0):
        """NCCL on a CuPy buffer, in place, on the current stream (see backend.nccl)."""
        return nccl_backend.collective_(self._nccl, buf, op, root)


def init(backend="mpi"):
    """Join the job's process group (once per process; later calls return the same group).

    ``backend="mpi"``: collectives with mpi4py over ``MPI.COMM_WORLD``. ``backend="nccl"``:
    collectives with NCCL on the GPUs (CuPy), set up over MPI; rank ``r`` makes CUDA device
    ``r % device_count`` current and binds its communicator to it, so put that rank's model
    there (``TrainingArguments(device=f"cuda:{r % n_gpus}", data_parallel="nccl")``).
    """
    global _group
    if backend not in BACKENDS:
        raise ValueError(f"minillm.distributed.init: backend must be one of {list(BACKENDS)}, "
                         f"got {backend!r}")
    if _group is not None:
        if _group.backend != backend:
            raise ValueError(f"minillm.distributed.init: already initialised with backend "
                             f"{_group.backend!r}; one process uses one backend")
        return _group
    MPI = _import_mpi()
    comm = MPI.COMM_WORLD
    nccl_comm = None
    if backend == "nccl":
        nccl_comm = nccl_backend.communicator(comm.Get_rank(), comm.Get_size(),
                                              lambda uid: comm.Bcast(uid, root=0))
    _group = Group(comm, backend, nccl_comm)
    return _group


def is_initialized():
    """True once :func:`init` has made this process's group."""
    return _group is not None


def get_group():
    """The group made by :func:`init` (a clear error before it)."""
    if _group is None:
        raise RuntimeError("minillm.distributed: call minillm.distributed.init('mpi') first")
    return _group


def allreduce_mean_(arrays):
    """:meth:`Group.allreduce_mean_` on the group made by :func:`init`."""
    return get_group().allreduce_mean_(arrays)


def allreduce_sum(values):
    """:meth:`Group.allreduce_sum` on the group made by :func:`init`."""
    return get_group().allreduce_sum(values)


def broadcast_(arrays, root=0):
    """:meth:`Group.broadcast_` on the group made by :func:`init`."""
    return get_group().broadcast_(arrays, root)


def barrier():
    """:meth:`Group.barrier` on the group made by :func:`init`."""
    get_group().barrier()


def is_main():
    """True on rank 0 of the group made by :func:`init`, and in a process that never called
    it (a single process is its own main process)."""
    return _group is None or _group.is_main()
