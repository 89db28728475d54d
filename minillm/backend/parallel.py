"""Cache-blocked, multi-threaded row loops for the fused CPU kernels.

A fused op such as GELU or LayerNorm makes several passes over its data (multiply, add, tanh,
...). Done on a whole (768, 512) activation, each NumPy pass streams 1.5 MB through memory;
done on blocks of about 64K elements, every pass after the first finds its block in the
core's cache. And since NumPy releases the GIL inside its loops, two threads can work on two
halves of the rows at once. PyTorch does both in C++ (``at::parallel_for`` with a grain size);
here it is :func:`run_blocks`, twenty lines of Python around a thread pool.

Kernels are written as ``fn(k, a, b)``: process rows ``a:b`` (block number ``k``) of 2-D
views. On the GPU and on the stand-in device the whole array is one block (CuPy kernels do
their own blocking), so the same kernel code serves every device.

Threads: :func:`get_num_threads` (default 1; ``MINILLM_NUM_THREADS`` sets it) and
:func:`set_num_threads`. Why one by default: BLAS (the matrix products) has its own threads,
and OpenBLAS's workers keep spinning for about 0.1 s after each product, so between two
products they hold the other cores and a second kernel thread slows a step down (see
PERFORMANCE.md). With BLAS on one thread (``OPENBLAS_NUM_THREADS=1``), more kernel threads
do pay; the blocking pays either way.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..validation import check_int

__all__ = ["BLOCK_ELEMENTS", "get_num_threads", "set_num_threads", "plan_blocks", "run_blocks"]

#: Elements per block: 256 KB of float32 per array, so a kernel's few arrays stay in a 1-2 MB
#: L2 cache; smaller blocks pay more Python overhead per NumPy call (see PERFORMANCE.md).
BLOCK_ELEMENTS = 65536
#: Below this many elements a kernel runs on the calling thread only: handing work to a
#: thread costs more than it saves (see PERFORMANCE.md).
PARALLEL_MIN_ELEMENTS = 1 << 16

_threads = None
_pool = None
_lock = threading.Lock()
_local = threading.local()


def _default_threads():
    env = os.environ.get("MINILLM_NUM_THREADS")
    if not env:
        return 1
    try:
        n = int(env)
    except ValueError:
        raise ValueError(f"MINILLM_NUM_THREADS must be a positive integer, got {env!r}") from None
    if n < 1:
        raise ValueError(f"MINILLM_NUM_THREADS must be >= 1, got {n}")
    return n


def get_num_threads():
    """Threads the fused CPU kernels use (see the module docstring)."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
    return _threads


def set_num_threads(n):
    """Use ``n`` threads (>= 1) in the fused CPU kernels from now on."""
    global _threads, _pool
    n = check_int(n, "n", "set_num_threads", expected="an integer >= 1")
    with _lock:
        _threads = int(n)
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None


def _get_pool(n):
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="minillm")
        return _pool


def plan_blocks(n_rows, row_size, xp=np):
    """Split ``n_rows`` rows of ``row_size`` elements into ``[(a, b), ...]`` blocks.

    One block (the whole array) for CuPy and the stand-in device, or when the rows are few.
    """
    if xp is not np or n_rows <= 1:
        return [(0, n_rows)]
    per = max(1, BLOCK_ELEMENTS // max(1, row_size))
    return [(a, min(a + per, n_rows)) for a in range(0, n_rows, per)]


def run_blocks(fn, blocks, row_size=1):
    """Call ``fn(k, a, b)`` for every block ``k = (a, b)``, on several threads when it pays.

    Blocks are dealt to the threads in contiguous runs (each thread keeps to its own part of
    memory). Exceptions in any thread are raised here. Calls from inside a kernel (nested)
    run sequentially.
    """
    n_threads = get_num_threads()
    total = (blocks[-1][1] - blocks[0][0]) * row_size if blocks else 0
    if (n_threads == 1 or len(blocks) < 2 or total < PARALLEL_MIN_ELEMENTS
            or getattr(_local, "inside", False)):
        for k, (a, b) in enumerate(blocks):
            fn(k, a, b)
        return
    n = min(n_threads, len(blocks))
    bounds = [len(blocks) * i // n for i in range(n + 1)]

    def work(lo, hi):
        _local.inside = True
        try:
            for k in range(lo, hi):
                fn(k, *blocks[k])
        finally:
            _local.inside = False

    pool = _get_pool(n_threads)
    futures = [pool.submit(work, bounds[i], bounds[i + 1]) for i in range(1, n)]
    try:
        work(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()
