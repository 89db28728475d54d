"""The op table (tests/op_table.py) drives five checks per op:

1. forward in float64 equals an independent NumPy reference (rtol 1e-10);
2. gradcheck: analytic gradients equal central differences (float64);
3. float32 in -> float32 out (no silent upcast), values close to the reference;
4. the strict stand-in device gives the same values and gradients as the CPU;
5. PyTorch (when installed) gives the same values and gradients to rtol 1e-6 (float64).
"""
import zlib

import numpy as np
import pytest

import minillm as mm
from op_table import CASES, make_inputs

ids = [c.name for c in CASES]


def _rng(case):
    return np.random.default_rng(zlib.crc32(case.name.encode("utf-8")))


def _run(case, floats, consts, device=None, requires_grad=False, dtype=None, proj_seed=1):
    """Forward on ``device``, then backward of <r, out>; returns (out, grads)."""
    ts = [mm.tensor(a, dtype=dtype, device=device, requires_grad=requires_grad) for a in floats]
    cs = [mm.tensor(c, device=device) for c in consts]
    out = case.fn(*ts, *cs)
    grads = None
    if requires_grad:
        r = np.random.default_rng(proj_seed).standard_normal(out.shape)
        (out * mm.tensor(r, dtype=out.dtype, device=out.device)).sum().backward()
        grads = [t.grad.numpy() if t.grad is not None else np.zeros(t.shape) for t in ts]
    return out, grads


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_forward_matches_numpy(case, float64):
    floats, consts = make_inputs(case, _rng(case))
    out, _ = _run(case, floats, consts)
    ref = np.asarray(case.ref(*floats, *consts))
    assert out.dtype == np.float64
    assert out.shape == ref.shape, f"{case.name}: shape {out.shape} vs reference {ref.shape}"
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if c.grad], ids=[c.name for c in CASES if c.grad])
def test_gradcheck(case, float64):
    floats, consts = make_inputs(case, _rng(case))
    ts = [mm.tensor(a, requires_grad=True) for a in floats]
    cs = [mm.tensor(c) for c in consts]
    assert mm.gradcheck(lambda *f: case.fn(*f, *cs), ts, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_float32_stays_float32(case):
    floats, consts = make_inputs(case, _rng(case))
    out, grads = _run(case, floats, consts, requires_grad=True, dtype=np.float32)
    assert out.dtype == np.float32, f"{case.name} upcast float32 input to {out.dtype}"
    ref = np.asarray(case.ref(*floats, *consts))
    np.testing.assert_allclose(out.numpy(), ref, rtol=case.rtol32, atol=1e-5)
    for g in grads:
        assert g.dtype == np.float32


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_stand_in_device_parity(case, float64):
    floats, consts = make_inputs(case, _rng(case))
    out_c, g_c = _run(case, floats, consts, device="cpu", requires_grad=True)
    out_f, g_f = _run(case, floats, consts, device="fake", requires_grad=True)
    assert out_f.device == "fake" and out_c.device == "cpu"
    np.testing.assert_allclose(out_f.numpy(), out_c.numpy(), rtol=1e-13, atol=1e-15)
    for a, b in zip(g_f, g_c):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.torch
@pytest.mark.parametrize("case", [c for c in CASES if c.torch], ids=[c.name for c in CASES if c.torch])
def test_matches_pytorch(case, float64):
    torch = pytest.importorskip("torch")
    floats, consts = make_inputs(case, _rng(case))
    out, grads = _run(case, floats, consts, requires_grad=True)

    tf = [torch.tensor(a, dtype=torch.float64, requires_grad=i not in case.torch_nograd)
          for i, a in enumerate(floats)]
    tc = [torch.tensor(c) for c in consts]
    tout = case.torch(*tf, *tc)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-6, atol=1e-10)
    r = np.random.default_rng(1).standard_normal(tuple(tout.shape))
    (tout * torch.tensor(r)).sum().backward()
    for i, (g, t) in enumerate(zip(grads, tf)):
        if i in case.torch_nograd:
            continue
        tg = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        np.testing.assert_allclose(g, tg, rtol=1e-6, atol=1e-10,
                                   err_msg=f"{case.name}: gradient of input {i}")


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_cuda_matches_cpu(case, float64):
    """The real GPU (CuPy) gives the CPU's values and gradients (float64)."""
    floats, consts = make_inputs(case, _rng(case))
    out_c, g_c = _run(case, floats, consts, device="cpu", requires_grad=True)
    out_g, g_g = _run(case, floats, consts, device="cuda", requires_grad=True)
    assert out_g.device == "cuda:0"
    np.testing.assert_allclose(out_g.numpy(), out_c.numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip(g_g, g_c):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
