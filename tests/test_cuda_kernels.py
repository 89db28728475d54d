"""The fused CUDA kernels (minillm.backend.cuda_kernels) against the NumPy path.

Every test marked ``gpu`` needs CuPy and a CUDA GPU and is skipped (visibly) elsewhere; run
them with ``make test-gpu`` or ``MINILLM_TEST_DEVICE=cuda pytest -m gpu``. They check

* each kernel on random inputs against a NumPy reference computed in float64: float64 to
  1e-12, float32 to ~1e-5, float16 inputs at float16 precision (the kernels compute in
  float32 for them); edge cases: ignore_index rows, causal -inf entries and fully masked
  rows, rows longer than a thread block and not a multiple of 32, 1-row and 0-row inputs;
* the functional ops on cuda (kernels on) against the same ops on the CPU (NumPy path);
* the whole GPT training step on cuda with the kernels on and with ``MINILLM_CUDA_KERNELS=0``.

The tests without the mark run everywhere: the module imports without CuPy, and the ops on
cpu and on the stand-in device never call into it.
"""
import contextlib
import math

import numpy as np
import pytest

import minillm as mm
import minillm.functional as F
from minillm.backend import cuda_kernels as ck
from minillm.backend.strict import strict_numpy

GPU = "cuda"
KERNELS = ["gelu_tanh_forward", "gelu_tanh_backward", "layer_norm_forward",
           "layer_norm_backward", "softmax_cross_entropy_forward",
           "softmax_cross_entropy_backward", "softmax_lastdim", "softmax_backward_lastdim",
           "index_add_rows", "column_sums", "dropout_mask"]
# tolerances of a kernel against the float64 reference, by input dtype
TOL = {np.float64: 1e-12, np.float32: 1e-5, np.float16: 2e-3}


def rng(seed=0):
    return np.random.default_rng(seed)


@contextlib.contextmanager
def kernels(on):
    """Run the block with the fused kernels switched on or off (MINILLM_CUDA_KERNELS)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ck.ENV, "1" if on else "0")
        yield


# -- everywhere -----------------------------------------------------------------------------------
def test_module_imports_without_cupy_and_says_whether_it_is_usable(monkeypatch):
    has_gpu = any(d.startswith("cuda") for d in mm.available_devices())
    monkeypatch.delenv(ck.ENV, raising=False)
    assert ck.enabled() and ck.available() == has_gpu
    assert not ck.use(np) and not ck.use(strict_numpy)      # never on cpu or the stand-in
    monkeypatch.setenv(ck.ENV, "0")
    assert not ck.enabled() and not ck.available()
    monkeypatch.setenv(ck.ENV, "1")
    assert ck.enabled()


def _every_fused_op(device, dtype=np.float64):
    """Forward and backward of every op that has a fused CUDA kernel; returns the grads."""
    r = rng(1)
    mm.manual_seed(0)                                  # the same dropout mask every call

    def t(*shape, grad=True):
        return mm.tensor(r.normal(size=shape).astype(dtype), device=device, requires_grad=grad)

    x, w, b = t(3, 4, 8), t(8), t(8)
    z, q, k, v, qkv = t(6, 5), t(2, 4, 3), t(2, 4, 3), t(2, 4, 3), t(3, 2, 2, 4, 3)
    table, lw, lb = t(5, 8), t(8, 3), t(3)
    target = mm.tensor(np.array([0, 4, -100, 1, 2, 3]), device=device)
    ids = mm.tensor(np.array([[0, 3, 3, 1], [4, 0, 0, 0], [2, 2, 3, 0]]), device=device)
    picks = mm.tensor(np.array([0, 2, 2, 5, 0]), device=device)
    losses = [
        (F.embedding(ids, table) * x).sum(),                      # repeated ids add up
        (z[picks] * z[picks]).sum(),                              # indexing backward
        (F.dropout(x, 0.3) * x).sum(),
        (F.linear(x, lw, lb) ** 2).sum(),                         # the bias gradient
        F.gelu(x, approximate="tanh").sum(),
        F.layer_norm(x, w, b).sum(),
        F.layer_norm(x, None, None, normalized_shape=8).sum(),
        F.cross_entropy(z, target),
        F.cross_entropy(z, target, label_smoothing=0.1, reduction="sum"),
        (F.softmax(z) * z).sum(),
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum(),
        F.scaled_dot_product_attention(q, k, v, attn_mask=mm.tensor(
            np.tril(np.ones((4, 4), bool)), device=device)).sum(),
        F.packed_self_attention(qkv, is_causal=True).sum(),
    ]
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    total.backward()
    return [a.grad.numpy() for a in (x, w, b, z, q, k, v, qkv, table, lw, lb)] + [total.item()]


def test_random_wrappers_pass_key_inputs_and_output_in_kernel_order(monkeypatch):
    """The host side of the random kernels, run everywhere with NumPy standing in for CuPy:
    the key as uint64 (wrapped to 64 bits), the extra inputs, then the output array."""
    calls = []

    def kernel(kind):
        def launch(*args):
            calls.append((kind, args))
        return launch

    monkeypatch.setattr(ck, "_cp", lambda: np)
    monkeypatch.setattr(ck, "_rng_kernel", kernel)
    y = ck.random_uniform(-1, (2, 3), np.float32)
    assert y.shape == (2, 3) and y.dtype == np.float32
    kind, args = calls.pop()
    assert kind == "uniform" and args[0] == np.uint64(2 ** 64 - 1) and args[1] is y
    assert args[0].dtype == np.uint64
    ck.random_normal(5, (4,), np.float64)
    assert calls.pop()[0] == "normal"
    k = ck.random_integers(5, -2, 3, (4,))
    kind, args = calls.pop()
    assert kind == "integers" and args[1:3] == (-2, 5) and args[3] is k and k.dtype == np.int64
    m = ck.dropout_mask(5, (7,), np.float32, 0.2)
    kind, args = calls.pop()
    assert kind == "dropout" and args[1] == 0.2 and args[2] == pytest.approx(1.25)
    assert args[3] is m
    ck.random_uniform(5, (0,), np.float32)                 # nothing to draw: no launch
    assert calls == []
    for fn in (ck.random_uniform, ck.random_normal):
        with pytest.raises(TypeError, match="float32 or float64, got float16"):
            fn(1, (2,), np.float16)
    with pytest.raises(TypeError, match="dropout_mask: float32 or float64"):
        ck.dropout_mask(1, (2,), np.int32, 0.5)


@pytest.mark.parametrize("device", ["cpu", "fake"])
def test_ops_on_cpu_and_fake_never_call_the_kernels(device, monkeypatch):
    want = _every_fused_op("cpu")

    def refuse(*args, **kwargs):
        raise AssertionError("a CUDA kernel was called off the GPU")

    for name in KERNELS:
        monkeypatch.setattr(ck, name, refuse)
    for switch in ("1", "0"):
        monkeypatch.setenv(ck.ENV, switch)
        got = _every_fused_op(device)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# -- kernels against NumPy (GPU) ------------------------------------------------------------------
@pytest.fixture
def xp():
    """CuPy (the array module of the GPU)."""
    return mm.device(GPU).xp


def dev(xp, a):
    return xp.array(a)          # a copy on the device


def host(a):
    return mm.backend.to_host(a)


def softmax_ref(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True) if x.size else x.sum(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(x - m)
    s = e.sum(-1, keepdims=True)
    return e / np.where(s == 0, 1, s)


def close(got, want, tol):
    """|got - want| <= tol * (|want| + 1) elementwise (relative, absolute near 0)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 300), (1, 33), (0, 9), (4, 1), (3, 1000)])
def test_softmax_kernels(xp, dtype, shape):
    """softmax_lastdim (in place and into another dtype) and its backward; rows shorter and
    longer than a thread block (256), not multiples of 32; 1 row; 0 rows."""
    x = (rng().normal(size=shape) * 3).astype(dtype)
    ref = softmax_ref(x)
    s = dev(xp, x)
    p = ck.softmax_lastdim(s)
    assert p is s and p.dtype == dtype
    close(host(p), ref, TOL[dtype])
    if dtype == np.float16:                              # float16 scores -> float32 probs
        p32 = ck.softmax_lastdim(dev(xp, x), out=xp.empty(shape, dtype=np.float32))
        close(host(p32), ref, 1e-6)
    dp = rng(1).normal(size=shape).astype(dtype)
    pr = ref.astype(dtype)
    want = pr * (dp - (dp.astype(np.float64) * pr).sum(-1, keepdims=True))
    got = ck.softmax_backward_lastdim(dev(xp, dp), dev(xp, pr))
    assert got.dtype == dtype
    close(host(got), want, 4 * TOL[dtype])
    inplace = dev(xp, dp)
    assert ck.softmax_backward_lastdim(inplace, dev(xp, pr), out=inplace) is inplace
    np.testing.assert_array_equal(host(inplace), host(got))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_softmax_kernel_causal_and_fully_masked_rows(xp, dtype):
    L = 37
    s = rng().normal(size=(2, L, L)).astype(dtype)
    s += np.triu(np.full((L, L), -np.inf, dtype=dtype), 1)        # the causal bias
    s[1, 5, :] = -np.inf                                          # a fully masked query
    p = host(ck.softmax_lastdim(dev(xp, s)))
    close(p, softmax_ref(s), TOL[dtype])
    assert (np.triu(p[0], 1) == 0).all() and (p[1, 5] == 0).all()
    nan_rows = host(ck.softmax_lastdim(dev(xp, s), out=xp.empty(s.shape, dtype=dtype),
                                       masked_rows_zero=False))   # F.softmax's semantics
    assert np.isnan(nan_rows[1, 5]).all() and np.isfinite(np.delete(nan_rows[1], 5, 0)).all()


@pytest.mark.gpu
def test_softmax_kernels_broadcast_and_strided_inputs(xp):
    p = softmax_ref(rng().normal(size=(1, 4, 6)))
    dp = rng(1).normal(size=(3, 4, 6))
    want = p * (dp - (dp * p).sum(-1, keepdims=True))
    close(host(ck.softmax_backward_lastdim(dev(xp, dp), dev(xp, p))), want, 1e-12)
    x = rng(2).normal(size=(6, 5))
    s = dev(xp, x).T                                     # a transposed (strided) view
    ck.softmax_lastdim(s)
    close(host(s), softmax_ref(x.T), 1e-12)


def xent_ref(z, t, ignore_index, eps):
    z = z.astype(np.float64)
    m = z.max(1) if z.size else np.zeros(len(z))
    lse = np.log(np.exp(z - m[:, None]).sum(1)) + m
    valid = t != ignore_index
    picked = z[np.arange(len(t)), np.where(valid, t, 0)]
    loss = lse - picked
    if eps:
        loss = (1 - eps) * loss + eps * (lse - z.mean(1))
    return np.exp(z - lse[:, None]), lse, np.where(valid, loss, 0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("n,c", [(7, 11), (9, 257), (1, 1000), (3, 1), (0, 5), (4, 50257)])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_cross_entropy_kernels(xp, dtype, n, c, eps):
    r = rng(3)
    z = (r.normal(size=(n, c)) * 4).astype(dtype)
    t = r.integers(0, c, size=n)
    if n > 2:
        t[1] = -100                                      # an ignored row
    p, lse, loss = ck.softmax_cross_entropy_forward(dev(xp, z), dev(xp, t), -100, eps)
    work = np.float32 if dtype == np.float16 else dtype  # the float32 island
    assert p.dtype == lse.dtype == loss.dtype == work
    rp, rlse, rloss = xent_ref(z, t, -100, eps)
    tol = 1e-12 if dtype == np.float64 else 1e-5          # float16 logits are exact in float32
    close(host(p), rp, tol)
    close(host(lse), rlse, tol)
    close(host(loss), rloss, tol)
    coef = r.normal(size=n).astype(work)
    coef[t == -100] = 0
    dz = ck.softmax_cross_entropy_backward(p, dev(xp, t), dev(xp, coef), eps, out_dtype=dtype)
    assert dz.dtype == dtype and dz.shape == (n, c)
    onehot = np.zeros((n, c))
    valid = t != -100
    onehot[np.arange(n)[valid], t[valid]] = 1
    close(host(dz), coef[:, None] * (host(p) - (1 - eps) * onehot - eps / c), 2 * TOL[dtype])


@pytest.mark.gpu
def test_cross_entropy_kernel_targets(xp):
    z = rng().normal(size=(4, 6)).astype(np.float32)
    _, _, loss = ck.softmax_cross_entropy_forward(dev(xp, z), dev(xp, np.array(
        [0, 2, 0, 5], dtype=np.int32)), 0)               # int32 targets, ignore_index=0
    loss = host(loss)
    assert loss[0] == 0 and loss[2] == 0 and (loss[[1, 3]] > 0).all()
    _, _, loss = ck.softmax_cross_entropy_forward(dev(xp, z), dev(xp, np.array([1, 6, -1, 2])))
    loss = host(loss)                                    # out of range: NaN, no stray read
    assert np.isnan(loss[[1, 2]]).all() and np.isfinite(loss[[0, 3]]).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("shape", [(4, 5), (3, 2, 300), (1, 1), (0, 7), ()])
def test_gelu_tanh_kernels(xp, dtype, shape):
    x = np.asarray(rng().normal(size=shape) * 3).astype(dtype)
    y, t = ck.gelu_tanh_forward(dev(xp, x))
    assert y.dtype == t.dtype == dtype and y.shape == t.shape == shape
    xd = x.astype(np.float64)
    tr = np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd ** 3))
    close(host(y), 0.5 * xd * (1 + tr), TOL[dtype])
    close(host(t), tr, TOL[dtype])
    g = np.asarray(rng(1).normal(size=shape)).astype(dtype)
    dx = ck.gelu_tanh_backward(dev(xp, x), t, dev(xp, g))
    td = host(t).astype(np.float64)
    want = g * (0.5 * (1 + td) + 0.5 * xd * (1 - td ** 2) * math.sqrt(2 / math.pi)
                * (1 + 3 * 0.044715 * xd ** 2))
    assert dx.dtype == dtype
    close(host(dx), want, 2 * TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("rows,n", [(5, 8), (3, 300), (1, 1000), (6, 1), (0, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_kernels(xp, dtype, rows, n, affine):
    r = rng(4)
    x = (r.normal(size=(rows, n)) * 2 + 1).astype(dtype)
    w = (1 + 0.1 * r.normal(size=n)).astype(dtype) if affine else None
    b = (0.1 * r.normal(size=n)).astype(dtype) if affine else None
    y, xhat, rstd = ck.layer_norm_forward(dev(xp, x), None if w is None else dev(xp, w),
                                          None if b is None else dev(xp, b), 1e-5)
    work = np.float32 if dtype == np.float16 else dtype
    assert y.dtype == dtype and xhat.dtype == rstd.dtype == work
    xd = x.astype(np.float64)
    mean = xd.mean(1, keepdims=True) if rows else np.zeros((0, 1))
    rs = 1 / np.sqrt(((xd - mean) ** 2).mean(1) + 1e-5) if rows else np.zeros(0)
    h = (xd - mean) * rs[:, None]
    work_tol = 1e-11 if work == np.float64 else 2e-5
    close(host(rstd), rs, work_tol)
    close(host(xhat), h, work_tol)
    close(host(y), h * w + b if affine else h, 2 * TOL[dtype])
    g = r.normal(size=(rows, n)).astype(dtype)
    dx, dw, db = ck.layer_norm_backward(dev(xp, g), xhat, rstd,
                                        None if w is None else dev(xp, w), need_bias=affine)
    gd, hd, rsd = g.astype(np.float64), host(xhat).astype(np.float64), host(rstd)
    dxhat = gd * w if affine else gd
    want = rsd[:, None] * (dxhat - dxhat.mean(1, keepdims=True)
                           - hd * (dxhat * hd).mean(1, keepdims=True)) if rows else gd
    close(host(dx), want, 4 * TOL[dtype])
    if affine:
        assert dw.dtype == db.dtype == dtype and dw.shape == db.shape == (n,)
        close(host(dw), (gd * hd).sum(0), 4 * TOL[dtype] * max(1, rows))
        close(host(db), gd.sum(0), 4 * TOL[dtype] * max(1, rows))
    else:
        assert dw is None and db is None


# -- the functional ops on the GPU against the NumPy path (GPU) ------------------------------------
OPS = {
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), [(4, 7, 33)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, w, b), [(4, 7, 300), (300,), (300,)]),
    "layer_norm_2d_no_affine": (lambda x: F.layer_norm(x, None, None, normalized_shape=(3, 5)),
                                [(4, 3, 5)]),
    "cross_entropy": (lambda z: F.cross_entropy(z, mm.tensor(
        np.array([[3, -100, 0], [299, 7, -100]]), device=z.device)), [(2, 3, 300)]),
    "cross_entropy_smooth_sum": (lambda z: F.cross_entropy(z, mm.tensor(
        np.array([3, 1, 0, 2]), device=z.device), label_smoothing=0.1, reduction="sum"),
        [(4, 5)]),
    "cross_entropy_none": (lambda z: F.cross_entropy(z, mm.tensor(
        np.array([3, 1, -100, 2]), device=z.device), reduction="none"), [(4, 5)]),
    "softmax": (lambda x: F.softmax(x), [(3, 4, 300)]),
    "softmax_axis0": (lambda x: F.softmax(x, axis=0), [(3, 4)]),        # the generic path
    "sdpa_causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                    [(2, 3, 40, 8)] * 3),
    "sdpa_bool_mask": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mm.tensor(
        np.arange(6)[None, :] <= np.array([0, 5, -1, 2])[:, None], device=q.device)),
        [(2, 4, 8), (2, 6, 8), (2, 6, 8)]),                          # row 2 fully masked
    "sdpa_float_mask": (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                        [(2, 5, 8), (2, 7, 8), (2, 7, 8), (5, 7)]),
    "packed_self_attention": (lambda qkv: F.packed_self_attention(qkv, is_causal=True),
                              [(3, 2, 2, 17, 8)]),
}


def _run(fn, arrays, device, dtype):
    """Forward and backward of <r, fn(*arrays)> on ``device``; output and grads on the host."""
    ts = [mm.tensor(a.astype(dtype), device=device, requires_grad=True) for a in arrays]
    out = fn(*ts)
    proj = rng(9).normal(size=out.shape).astype(np.float16).astype(out.dtype)  # same values
    (out * mm.tensor(proj, device=device)).sum().backward()
    return [out.numpy()] + [t.grad.numpy() for t in ts]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("name", list(OPS))
def test_ops_with_kernels_match_the_numpy_path(name, dtype):
    fn, shapes = OPS[name]
    arrays = [rng(i).normal(size=s) for i, s in enumerate(shapes)]
    ref_dtype = np.float32 if dtype == np.float16 else dtype   # float16 vs a float32 reference
    with kernels(False):
        want = _run(fn, [a.astype(dtype) for a in arrays], "cpu", ref_dtype)
    with kernels(True):
        got = _run(fn, arrays, GPU, dtype)
    tol = {np.float64: 1e-12, np.float32: 1e-5, np.float16: 1e-2}[dtype]
    for g, w in zip(got, want):
        scale = max(1.0, float(np.abs(w).max())) if w.size else 1.0
        np.testing.assert_allclose(g.astype(np.float64), w, rtol=tol, atol=tol * scale)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("n,v,d", [(1000, 7, 33), (5, 50, 300), (1, 3, 1), (0, 4, 8),
                                   (4096, 1, 16), (300, 2000, 5)])
def test_index_add_rows_kernel(xp, dtype, n, v, d):
    """Against np.add.at in float64; the same bits on every run (no atomics)."""
    r = rng(3)
    rows = r.integers(0, v, size=n)
    vals = r.normal(size=(n, d)).astype(dtype)
    base = r.normal(size=(v, d)).astype(dtype)
    want = base.astype(np.float64)
    np.add.at(want, rows, vals.astype(np.float64))
    runs = []
    for _ in range(3):
        tgt = dev(xp, base)
        assert ck.index_add_rows(tgt, dev(xp, rows), dev(xp, vals)) is tgt
        runs.append(host(tgt))
    assert all(np.array_equal(runs[0], other) for other in runs[1:])
    tol = TOL[dtype]
    np.testing.assert_allclose(runs[0].astype(np.float64), want, rtol=tol,
                               atol=tol * max(1.0, float(np.abs(want).max())))


@pytest.mark.gpu
def test_index_add_rows_kernel_skips_ids_out_of_range_and_checks_shapes(xp):
    tgt = dev(xp, np.zeros((3, 2), np.float32))
    ck.index_add_rows(tgt, dev(xp, np.array([-1, 0, 3, 0, 2])),
                      dev(xp, np.arange(10, dtype=np.float32).reshape(5, 2)))
    np.testing.assert_array_equal(host(tgt), [[8, 10], [0, 0], [8, 9]])
    with pytest.raises(ValueError, match=r"expected target \(V, D\), rows \(N,\)"):
        ck.index_add_rows(tgt, dev(xp, np.array([0, 1])), dev(xp, np.ones((3, 2), np.float32)))


@pytest.mark.gpu
@pytest.mark.parametrize("index", ["rows", "pairs", "mask", "rows_and_slice"])
def test_scatter_add_on_the_gpu_is_deterministic_and_matches_numpy(xp, index):
    """backend.scatter_add (the indexing backward) through the kernel: np.add.at's result,
    the same bits every run."""
    r = rng(4)
    shape = (40, 6)
    idx = {"rows": (r.integers(0, 40, 500),),
           "pairs": (r.integers(0, 40, 500), r.integers(0, 6, 500)),
           "mask": (r.random(shape) < 0.5,),
           "rows_and_slice": (r.integers(0, 40, 500), slice(1, 4))}[index]
    want = np.zeros(shape)
    vals = r.normal(size=want[idx].shape).astype(np.float32)
    np.add.at(want, idx, vals.astype(np.float64))
    didx = tuple(dev(xp, i) if isinstance(i, np.ndarray) else i for i in idx)
    runs = []
    for _ in range(3):
        tgt = dev(xp, np.zeros(shape, np.float32))
        mm.backend.scatter_add(tgt, didx, dev(xp, vals))
        runs.append(host(tgt))
    assert all(np.array_equal(runs[0], other) for other in runs[1:])
    np.testing.assert_allclose(runs[0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    tgt = dev(xp, np.zeros(shape, np.float32))                   # a scalar value broadcasts
    mm.backend.scatter_add(tgt, didx, np.float32(1.0))
    ones = np.zeros(shape)
    np.add.at(ones, idx, 1.0)
    np.testing.assert_array_equal(host(tgt), ones)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("rows,n", [(5, 8), (3000, 70), (1, 1000), (2049, 1), (0, 4), (7, 0)])
@pytest.mark.parametrize("with_h", [True, False])
def test_column_sums_kernel(xp, dtype, rows, n, with_h):
    """Both sums against float64 NumPy; 3000 rows use the partial-sum pass."""
    r = rng(6)
    g = r.normal(size=(rows, n)).astype(dtype)
    h = r.normal(size=(rows, n)).astype(np.float32 if dtype == np.float16 else dtype)
    gh, gs = ck.column_sums(dev(xp, g), dev(xp, h) if with_h else None)
    assert (gh is None) == (not with_h)
    work = np.float64 if dtype == np.float64 else np.float32
    assert gs.dtype == work and gs.shape == (n,)
    g64 = g.astype(np.float64)
    tol = {np.float64: 1e-12, np.float32: 1e-5, np.float16: 1e-5}[dtype] * max(1, rows) ** 0.5
    np.testing.assert_allclose(host(gs), g64.sum(axis=0), rtol=tol, atol=tol)
    if with_h:
        np.testing.assert_allclose(host(gh), (g64 * h).sum(axis=0), rtol=tol, atol=tol)
    _, none = ck.column_sums(dev(xp, g), dev(xp, h), need_g=False)
    assert none is None
    if rows:
        np.testing.assert_array_equal(host(mm.backend.column_sum(dev(xp, g))),
                                      host(gs).astype(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_kernels_moments_and_ranges(xp, dtype):
    n = 1_000_000
    u = host(ck.random_uniform(123, (n,), dtype))
    assert u.dtype == dtype and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 3e-3 and abs(u.var() - 1 / 12) < 2e-3
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 0.098 * n
    z = host(ck.random_normal(123, (n,), dtype))
    assert abs(z.mean()) < 5e-3 and abs(z.std() - 1) < 5e-3
    assert abs((np.abs(z) < 1).mean() - 0.6827) < 3e-3
    k = host(ck.random_integers(7, -3, 4, (n,)))
    assert k.dtype == np.int64 and k.min() == -3 and k.max() == 3
    assert np.bincount(k + 3).min() > 0.14 * n
    assert not np.array_equal(u[:100], host(ck.random_uniform(124, (100,), dtype)))
    np.testing.assert_array_equal(u[:100], host(ck.random_uniform(123, (100,), dtype)))
    m = host(ck.dropout_mask(123, (n,), dtype, 0.3))
    scale = dtype(1.0) * (1.0 / 0.7)
    np.testing.assert_array_equal(m, (u >= dtype(0.3)).astype(dtype) * scale)
    with pytest.raises(ValueError, match="high"):
        ck.random_integers(1, 5, 5, (3,))


@pytest.mark.gpu
def test_cuda_generator_state_round_trips_and_dropout_mask_matches_random(xp):
    g = mm.backend.generator(GPU)
    g.seed(5)
    state = g.get_state()
    a = host(g.random((3, 4), np.float32))
    mask = host(g.dropout_mask((3, 4), np.float32, 0.5))
    g.set_state(state)
    np.testing.assert_array_equal(host(g.random((3, 4), np.float32)), a)
    r = host(g.random((3, 4), np.float32))          # the draw the mask was made from
    np.testing.assert_array_equal(mask, (r >= 0.5).astype(np.float32) * np.float32(2.0))
    assert g.get_state()["counter"] == state["counter"] + 2


@pytest.mark.gpu
def test_kernels_are_used_on_the_gpu_and_the_switch_turns_them_off(monkeypatch):
    calls = []

    def counted(name, real):
        def kernel(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return kernel

    for name in KERNELS:
        monkeypatch.setattr(ck, name, counted(name, getattr(ck, name)))
    with kernels(True):
        _every_fused_op(GPU)
    assert set(calls) == set(KERNELS)
    calls.clear()
    with kernels(False):
        _every_fused_op(GPU)
    assert calls == []


def _gpt_step(dtype=np.float32, steps=2):
    """Two AdamW steps of a small GPT on the GPU: the losses and the first step's grads."""
    # Initialised on the CPU and moved: with the kernels off, the GPU draws from cuRAND,
    # another stream, and the two runs would start from different weights.
    mm.manual_seed(0)
    with mm.backend.default_device_as("cpu"):
        model = mm.models.GPT(mm.models.GPTConfig(vocab_size=97, block_size=32, n_layer=2,
                                                  n_head=2, n_embd=64, dropout=0.0))
    model.to(GPU)
    opt = model.configure_optimizers(0.1, 1e-3)
    r = rng(5)
    losses, grads = [], None
    for _ in range(steps):
        ids = r.integers(0, 97, size=(4, 33))
        _, loss = model(mm.tensor(ids[:, :-1], device=GPU), mm.tensor(ids[:, 1:], device=GPU))
        loss.backward()
        if grads is None:
            grads = {n: p.grad.numpy() for n, p in model.named_parameters()}
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, grads


@pytest.mark.gpu
def test_gpt_training_step_same_with_kernels_on_and_off():
    with kernels(False):
        losses_off, grads_off = _gpt_step()
    with kernels(True):
        losses_on, grads_on = _gpt_step()
    np.testing.assert_allclose(losses_on[0], losses_off[0], rtol=1e-5)
    np.testing.assert_allclose(losses_on[1], losses_off[1], rtol=1e-4)    # after an AdamW step
    for name, g in grads_off.items():
        np.testing.assert_allclose(grads_on[name], g, rtol=1e-3,
                                   atol=1e-4 * max(1e-6, float(np.abs(g).max())), err_msg=name)
