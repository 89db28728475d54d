"""The plain kernels in minillm.functional (the math a learner reads) and the fast ones in the
backend compute the same thing:

1. every op of the op table gives the same values and gradients (float64, rtol 1e-10) with the
   fast kernels and under ``mm.use_reference_kernels()``, and the plain kernels pass gradcheck;
2. float16 inputs (the float32 island) give the same results both ways;
3. a GPT trained for a few steps has the same losses both ways (float32, 1e-5);
4. the switch works as a call, a context manager and an environment variable.
"""
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

import minillm as mm
import minillm.functional as F
from minillm.backend import kernels
from op_table import CASES, make_inputs

FUSED = ("softmax", "cross_entropy", "nll_loss", "gelu", "layer_norm", "sdpa", "attention")
FUSED_CASES = [c for c in CASES if c.name.startswith(FUSED)]


def _forward_backward(case, floats, consts, dtype=np.float64):
    ts = [mm.tensor(a, dtype=dtype, requires_grad=True) for a in floats]
    out = case.fn(*ts, *[mm.tensor(c) for c in consts])
    r = np.random.default_rng(1).standard_normal(out.shape)
    (out * mm.tensor(r, dtype=out.dtype)).sum().backward()
    return out.numpy(), [np.zeros(t.shape) if t.grad is None else t.grad.numpy() for t in ts]


def _both_ways(case, dtype=np.float64):
    floats, consts = make_inputs(case, np.random.default_rng(zlib.crc32(case.name.encode())))
    fast = _forward_backward(case, floats, consts, dtype)
    with mm.use_reference_kernels():
        plain = _forward_backward(case, floats, consts, dtype)
    return fast, plain


def test_every_fused_op_has_a_plain_kernel_and_the_fast_ones_are_registered():
    t = kernels.table()
    assert t["reference"] == ["attention", "cross_entropy", "gelu", "gelu_tanh", "layer_norm",
                              "log_softmax", "softmax"]
    assert set(t["cpu"]) <= set(t["reference"]) and set(t["cuda"]) <= set(t["reference"])
    assert {"attention", "cross_entropy", "layer_norm", "gelu", "gelu_tanh"} <= set(t["cpu"])
    assert len(FUSED_CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plain_and_fast_kernels_agree_in_float64(case, float64):
    (out_f, grads_f), (out_p, grads_p) = _both_ways(case)
    np.testing.assert_allclose(out_p, out_f, rtol=1e-10, atol=1e-12)
    for gp, gf in zip(grads_p, grads_f):
        np.testing.assert_allclose(gp, gf, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in FUSED_CASES if c.grad],
                         ids=[c.name for c in FUSED_CASES if c.grad])
def test_plain_kernels_pass_gradcheck(case, float64):
    floats, consts = make_inputs(case, np.random.default_rng(zlib.crc32(case.name.encode())))
    ts = [mm.tensor(a, requires_grad=True) for a in floats]
    cs = [mm.tensor(c) for c in consts]
    with mm.use_reference_kernels():
        assert mm.gradcheck(lambda *f: case.fn(*f, *cs), ts, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case", [c for c in FUSED_CASES if c.name != "nll_loss"],
                         ids=[c.name for c in FUSED_CASES if c.name != "nll_loss"])
def test_float16_the_same_both_ways(case):
    (out_f, grads_f), (out_p, grads_p) = _both_ways(case, np.float16)
    np.testing.assert_allclose(out_p.astype(np.float32), out_f.astype(np.float32),
                               rtol=2e-3, atol=2e-3)
    for gp, gf in zip(grads_p, grads_f):
        assert gp.dtype == gf.dtype
        np.testing.assert_allclose(gp.astype(np.float32), gf.astype(np.float32),
                                   rtol=5e-3, atol=5e-3)


def _gpt_losses(steps=15):
    mm.manual_seed(0)
    cfg = mm.models.GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32,
                              dropout=0.1)
    model = mm.models.GPT(cfg)
    opt = mm.optim.AdamW(model.parameters(), lr=3e-3)
    starts = np.random.default_rng(0).integers(0, 40, size=(steps, 4, 1))
    data = (starts + np.arange(17)) % 40             # counting sequences: learnable
    losses = []
    for batch in data:
        ids, targets = mm.tensor(batch[:, :-1]), mm.tensor(batch[:, 1:])
        _, loss = model(ids, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return losses


def test_gpt_training_losses_equal_with_plain_and_fast_kernels():
    fast = _gpt_losses()
    with mm.use_reference_kernels():
        plain = _gpt_losses()
    assert fast[-1] < fast[0]                      # it learns
    np.testing.assert_allclose(plain, fast, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_gelu_fast_kernel_is_bitwise_the_plain_one(dtype):
    """Same operations in the same order, only in block buffers: equal bits, not just close,
    across the erfc series' range, both tails, signed zeros and rows over several blocks."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 700)) * 4).astype(dtype)
    x[0, :8] = [0.0, -0.0, 40.0, -40.0, 1e-30, -1e-30, 8.0, -8.0]
    g = rng.standard_normal(x.shape).astype(dtype)
    fast, plain = kernels.select("gelu", np, dtype), kernels._TABLE["reference"]["gelu"]
    assert fast is kernels._TABLE["cpu"]["gelu"]
    (y_f, s_f), (y_p, s_p) = fast.forward(np, x), plain.forward(np, x)
    assert y_f.dtype == dtype and np.array_equal(y_f, y_p) and np.array_equal(s_f[1], s_p[1])
    assert np.array_equal(fast.backward(np, s_f, g), plain.backward(np, s_p, g))


def test_the_switch_as_call_context_manager_and_environment():
    assert not kernels.reference_kernels_on()
    with mm.use_reference_kernels():
        assert kernels.reference_kernels_on()
        with mm.use_reference_kernels(False):
            assert not kernels.reference_kernels_on()
        assert kernels.reference_kernels_on()
    assert not kernels.reference_kernels_on()
    mm.use_reference_kernels()
    try:
        assert kernels.select("layer_norm", np, np.float32) is kernels._TABLE["reference"][
            "layer_norm"]
    finally:
        mm.use_reference_kernels(False)
    assert kernels.select("layer_norm", np, np.float32) is kernels._TABLE["cpu"]["layer_norm"]
    code = "from minillm.backend import kernels; print(kernels.reference_kernels_on())"
    env = dict(os.environ, MINILLM_REFERENCE_KERNELS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"


def test_masked_softmax_rows_with_nothing_allowed_are_zero():
    s = mm.tensor([[1.0, 2.0, 3.0], [0.5, 0.1, 0.2]], requires_grad=True)
    allowed = mm.tensor([[True, False, True], [False, False, False]])
    for reference in (False, True):
        with mm.use_reference_kernels(reference):
            p = F.masked_softmax(s, allowed)
        e = np.exp([1.0 - 3.0, 3.0 - 3.0])
        np.testing.assert_allclose(p.numpy(), [[e[0] / e.sum(), 0, e[1] / e.sum()], [0, 0, 0]])


def test_kernel_kind_must_be_known():
    with pytest.raises(ValueError, match="kernel kind"):
        kernels.register("softmax", "tpu", kernels._TABLE["reference"]["softmax"])


# -- the CUDA adapters, on the CPU: cuda_kernels' raw kernels emulated with NumPy ----------------
def _softmax_rows(s, guard=True):
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0) if guard else m
    e = np.exp(s - m)
    den = e.sum(axis=-1, keepdims=True)
    return e / np.where(den == 0, 1, den) if guard else e / den


class _EmulatedCudaKernels:
    """The raw kernels' contracts (see backend/cuda_kernels.py), computed with NumPy."""

    @staticmethod
    def softmax_lastdim(s, out=None, masked_rows_zero=True):
        out = s if out is None else out
        out[...] = _softmax_rows(s.astype(out.dtype), masked_rows_zero)
        return out

    @staticmethod
    def softmax_backward_lastdim(dp, p, out=None):
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
        if out is None:
            return ds.astype(dp.dtype)
        out[...] = ds
        return out

    @staticmethod
    def softmax_cross_entropy_forward(z2, t, ignore_index=-100, label_smoothing=0.0):
        loss, (p, _, _) = F.cross_entropy_forward(np, z2, np.where(t == ignore_index, 0, t),
                                                  label_smoothing)
        return p, None, np.where(t == ignore_index, 0, loss)

    @staticmethod
    def softmax_cross_entropy_backward(p, t, coef, label_smoothing=0.0, out_dtype=None):
        return F.cross_entropy_backward(np, (p, t, label_smoothing), coef).astype(out_dtype)

    @staticmethod
    def gelu_tanh_forward(x):
        y, (_, t) = F.gelu_tanh_forward(np, x)
        return y, t

    @staticmethod
    def gelu_tanh_backward(x, t, g):
        return F.gelu_tanh_backward(np, (x, t), g)

    @staticmethod
    def layer_norm_forward(x2, w, b, eps):
        y, (xhat, rstd, _, _) = F.layer_norm_forward(np, x2, w, b, eps)
        return y, xhat, rstd

    @staticmethod
    def layer_norm_backward(g2, xhat, rstd, w, need_bias=True):
        return F.layer_norm_backward(np, (xhat, rstd, w, need_bias), g2)


@pytest.mark.parametrize("case", FUSED_CASES, ids=[c.name for c in FUSED_CASES])
def test_cuda_adapters_pass_the_right_arrays(case, float64, monkeypatch):
    from minillm.backend import cuda_fast
    if mm.get_default_device() != mm.device("cpu"):
        pytest.skip("the emulated kernels are NumPy: CPU only")
    (out_cpu, grads_cpu), _ = _both_ways(case)
    monkeypatch.setattr(cuda_fast, "ck", _EmulatedCudaKernels)
    monkeypatch.setattr(kernels, "device_kind", lambda xp: "cuda")
    (out_cuda, grads_cuda), _ = _both_ways(case)
    np.testing.assert_allclose(out_cuda, out_cpu, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads_cuda, grads_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("allowed, error", [
    (np.ones((2, 3), dtype=bool), "bool Tensor"),
    ([[1, 0, 1], [1, 1, 1]], "bool Tensor"),
])
def test_masked_softmax_wants_a_bool_tensor(allowed, error):
    with pytest.raises(TypeError, match=error):
        F.masked_softmax(mm.tensor(np.zeros((2, 3))), allowed)
    with pytest.raises(TypeError, match=error):
        F.masked_softmax(mm.tensor(np.zeros((2, 3))), mm.tensor(np.zeros((2, 3))))
