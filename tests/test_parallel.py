"""The cache-blocked, multi-threaded CPU kernels (backend.parallel) and the host allocator.

The op table checks every op at small sizes, where a kernel runs as one block on one thread.
These tests use sizes that span many blocks and check that the blocked, threaded kernels
give the naive formulas' values and are independent of the thread count.
"""
import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import minillm as mm
import minillm.functional as F
from minillm.backend import parallel


@pytest.fixture
def threads():
    """Run a test body with a given thread count, restoring the previous one afterwards."""
    before = parallel.get_num_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(before)


@pytest.mark.parametrize("n_rows,row_size", [(0, 5), (1, 10), (7, 100000), (1000, 16),
                                              (333, 512), (5, 16384)])
def test_plan_blocks_cover_rows_once_in_order(n_rows, row_size):
    blocks = parallel.plan_blocks(n_rows, row_size)
    assert blocks[0][0] == 0 and blocks[-1][1] == n_rows
    for (a, b), (c, _) in zip(blocks, blocks[1:]):
        assert a < b == c
    if n_rows > 1:
        per = max(1, parallel.BLOCK_ELEMENTS // row_size)
        assert all(b - a <= per for a, b in blocks)


def test_plan_blocks_one_block_off_cpu():
    assert parallel.plan_blocks(1000, 512, mm.backend.strict_numpy) == [(0, 1000)]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_run_blocks_calls_each_block_once(threads, n):
    threads(n)
    blocks = parallel.plan_blocks(4000, 64)
    seen, names = [], set()
    lock = threading.Lock()

    def fn(k, a, b):
        with lock:
            seen.append((k, a, b))
            names.add(threading.current_thread().name)

    parallel.run_blocks(fn, blocks, 64)
    assert sorted(seen) == [(k, a, b) for k, (a, b) in enumerate(blocks)]
    # the caller takes the first run of blocks, pool threads the others (a pool thread may
    # take two runs, so with n threads 2..n distinct threads are seen)
    assert "MainThread" in names
    assert (len(names) == 1) if n == 1 else (2 <= len(names) <= n)


def test_run_blocks_raises_a_workers_error(threads):
    threads(2)
    blocks = parallel.plan_blocks(4000, 64)
    last = len(blocks) - 1

    def fn(k, a, b):
        if k == last:                     # dealt to the worker thread, not the caller
            raise ValueError(f"bad block {k}")

    with pytest.raises(ValueError, match=f"bad block {last}"):
        parallel.run_blocks(fn, blocks, 64)


def test_nested_run_blocks_is_sequential(threads):
    threads(2)
    inner_threads = set()

    def inner(k, a, b):
        inner_threads.add(threading.current_thread().name)

    def outer(k, a, b):
        before = set(inner_threads)
        parallel.run_blocks(inner, parallel.plan_blocks(4000, 64), 64)
        assert inner_threads - before <= {threading.current_thread().name}

    parallel.run_blocks(outer, parallel.plan_blocks(4000, 64), 64)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_rejects(bad):
    with pytest.raises(ValueError, match="integer >= 1"):
        parallel.set_num_threads(bad)


@pytest.mark.parametrize("value,ok", [("3", True), ("0", False), ("two", False)])
def test_thread_count_from_the_environment(value, ok):
    code = "from minillm.backend import parallel; print(parallel.get_num_threads())"
    env = dict(os.environ, MINILLM_NUM_THREADS=value)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if ok:
        assert r.returncode == 0 and r.stdout.strip() == value
    else:
        assert r.returncode != 0 and "MINILLM_NUM_THREADS" in r.stderr


# -- the kernels at sizes spanning many blocks, against the naive formulas ------------------
def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _run(op, arrays, n_threads, threads, seed=0):
    """Value and input gradients of sum(op(...) * r) for a fixed random r."""
    threads(n_threads)
    ts = [mm.tensor(a, requires_grad=True) for a in arrays]
    out = op(*ts)
    r = np.random.default_rng(seed).standard_normal(out.shape)
    (out * mm.tensor(r)).sum().backward()
    return out.numpy(), [t.grad.numpy() for t in ts], r


def _numeric_grad(f, arrays, r, i, idx, h=1e-6):
    a = [x.copy() for x in arrays]
    a[i][idx] += h
    up = (f(*a) * r).sum()
    a[i][idx] -= 2 * h
    return (up - (f(*a) * r).sum()) / (2 * h)


CASES = {
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), _gelu_tanh, [(3, 130, 517)]),
    "layer_norm": (F.layer_norm, _layer_norm, [(391, 300), (300,), (300,)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_blocked_kernels_match_the_formulas_and_each_other(name, threads):
    op, ref, shapes = CASES[name]
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s) * 2 for s in shapes]
    with mm.backend.default_dtype_as(np.float64):
        y1, g1, r = _run(op, arrays, 1, threads)
        y3, g3, _ = _run(op, arrays, 3, threads)
    np.testing.assert_allclose(y1, ref(*arrays), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(y1, y3)
    for a, b in zip(g1, g3):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    pick = np.random.default_rng(2)
    for i, a in enumerate(arrays):                  # spot-check gradients numerically
        for _ in range(3):
            idx = tuple(int(pick.integers(0, d)) for d in a.shape)
            num = _numeric_grad(ref, arrays, r, i, idx)
            assert g1[i][idx] == pytest.approx(num, rel=1e-6, abs=1e-6), (name, i, idx)


def test_blocked_cross_entropy_matches_the_formula(threads):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((700, 1000)) * 3
    t = rng.integers(0, 1000, 700)
    t[::7] = -100
    valid = t != -100
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    want = (lse - z[np.arange(700), np.where(valid, t, 0)])[valid].mean()
    p = np.exp(z - lse[:, None])
    gwant = p * valid[:, None]
    gwant[np.arange(700)[valid], t[valid]] -= 1
    gwant /= valid.sum()
    with mm.backend.default_dtype_as(np.float64):
        for n in (1, 2):
            threads(n)
            zt = mm.tensor(z, requires_grad=True)
            loss = F.cross_entropy(zt, mm.tensor(t))
            loss.backward()
            assert loss.item() == pytest.approx(want, rel=1e-12)
            np.testing.assert_allclose(zt.grad.numpy(), gwant, rtol=1e-10, atol=1e-14)


# -- host allocator --------------------------------------------------------------------------
def test_host_allocator_status_is_reported():
    st = mm.backend.host_memory.host_allocator_status()
    assert isinstance(st["tuned"], bool)
    if st["tuned"]:
        assert st["mmap_threshold"] == mm.backend.host_memory.MMAP_THRESHOLD
    else:
        assert st["reason"]


def _allocator_status_after(code, allocator_env):
    env = dict(os.environ)
    env.pop("MINILLM_HOST_ALLOCATOR", None)
    if allocator_env is not None:
        env["MINILLM_HOST_ALLOCATOR"] = allocator_env
    code = "import minillm as mm; " + code + "print(mm.backend.host_memory.host_allocator_status())"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True)
    return r.stdout


def test_importing_minillm_leaves_the_allocator_alone():
    out = _allocator_status_after("", None)
    assert "'tuned': False" in out and "not requested" in out


def test_host_allocator_is_opt_in():
    out = _allocator_status_after("mm.backend.host_memory.tune_host_allocator(); ", None)
    tuned_at_import = _allocator_status_after("", "tuned")
    if "not Linux with glibc" not in out:                 # elsewhere there is nothing to tune
        assert "'tuned': True" in out and "'tuned': True" in tuned_at_import


def test_host_allocator_can_be_left_alone():
    out = _allocator_status_after("mm.backend.host_memory.tune_host_allocator(); ", "default")
    assert "'tuned': False" in out and "MINILLM_HOST_ALLOCATOR=default" in out
