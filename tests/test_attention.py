"""Multi-head attention, positional encodings and Transformer layers.

Checked against PyTorch (values and gradients, float64, weights copied), by gradcheck at
tiny sizes, against formulas written out in NumPy, and by properties (causality, relative
positions of RoPE). Device-clean: data is made with NumPy, moved with ``mm.tensor`` and read
back with ``.numpy()`` only, so the file also runs on the strict 'fake' device.
"""
import math

import numpy as np
import pytest

import minillm as mm
import minillm.functional as F
from minillm.nn.attention import (LearnedPositionalEmbedding, MultiHeadAttention, RotaryEmbedding,
                                  SinusoidalPositionalEncoding, apply_rotary, causal_mask,
                                  masked_softmax)
from minillm.nn.transformer import (TransformerDecoder, TransformerDecoderLayer,
                                    TransformerEncoder, TransformerEncoderLayer)


def rng(seed=0):
    return np.random.default_rng(seed)


def t(a, requires_grad=False):
    return mm.tensor(np.asarray(a), requires_grad=requires_grad)


def close(got, want, rtol=1e-6):
    """Equal to ``rtol`` relative to the largest magnitude of ``want``."""
    want = np.asarray(want, dtype=np.float64)
    scale = max(float(np.abs(want).max()), 1e-12) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


# -- masked softmax and the causal mask ---------------------------------------------------------
def test_causal_mask_values():
    np.testing.assert_array_equal(causal_mask(3).numpy(), np.tril(np.ones((3, 3), bool)))
    # two new queries after 3 cached positions see keys 0..3 and 0..4
    np.testing.assert_array_equal(causal_mask(2, 5, offset=3).numpy(),
                                  [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


def test_masked_softmax_matches_softmax_and_gives_zero_rows(float64):
    s = rng().normal(size=(2, 3, 4))
    allowed = np.ones((3, 4), bool)
    allowed[1] = False                       # a row with nothing allowed
    allowed[2, :2] = False
    got = masked_softmax(t(s), t(allowed)).numpy()
    ref = np.where(allowed, np.exp(s), 0)
    ref = ref / np.where(ref.sum(-1, keepdims=True) == 0, 1, ref.sum(-1, keepdims=True))
    close(got, ref, 1e-12)
    assert (got[:, 1] == 0).all()
    x = t(s, requires_grad=True)
    assert mm.gradcheck(lambda a: masked_softmax(a, t(allowed)), [x])


# -- MultiHeadAttention -------------------------------------------------------------------------
def _mha(e=8, h=2, kdim=None, vdim=None, bias=True, seed=0):
    mm.manual_seed(seed)
    m = MultiHeadAttention(e, h, bias=bias, kdim=kdim, vdim=vdim)
    r = rng(seed + 1)
    with mm.no_grad():          # random biases too (the default init zeroes them)
        for p in m.parameters():
            p.copy_(t(r.normal(size=p.shape) * 0.5))
    return m


def test_mha_names_shapes_and_init():
    m = MultiHeadAttention(8, 2, kdim=5, vdim=3)
    assert [n for n, _ in m.named_parameters()] == [
        "q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight",
        "v_proj.bias", "out_proj.weight", "out_proj.bias"]
    assert m.k_proj.weight.shape == (5, 8) and m.v_proj.weight.shape == (3, 8)
    assert (m.q_proj.bias.numpy() == 0).all() and (m.out_proj.bias.numpy() == 0).all()
    bound = math.sqrt(6 / (8 + 8))             # Xavier-uniform
    assert np.abs(m.q_proj.weight.numpy()).max() <= bound
    assert [n for n, _ in MultiHeadAttention(4, 2, bias=False).named_parameters()] == [
        "q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight"]
    x = mm.randn(2, 5, 8)
    out, w = m(x, mm.randn(2, 7, 5), mm.randn(2, 7, 3))
    assert out.shape == (2, 5, 8) and w.shape == (2, 5, 7)
    np.testing.assert_allclose(w.numpy().sum(-1), 1, rtol=1e-5)
    out, w = m(x, mm.randn(2, 7, 5), mm.randn(2, 7, 3), average_attn_weights=False)
    assert w.shape == (2, 2, 5, 7)
    assert m(x, mm.randn(2, 7, 5), mm.randn(2, 7, 3), need_weights=False)[1] is None


# Each case: (name, kdim, vdim, S, mask builder) -> kwargs for minillm and for torch.
def _masks(kind, b, h, tq, s, r):
    """minillm kwargs and the PyTorch kwargs that mean the same masking."""
    if kind == "none":
        return {}, {}
    if kind == "causal":
        m = ~np.tril(np.ones((tq, s), bool))
        return {"is_causal": True}, {"attn_mask": m, "is_causal": True}
    if kind == "bool_mask":
        m = r.random((tq, s)) < 0.4
        m[:, 0] = False                          # every query keeps a key (torch gives NaN else)
        return {"attn_mask": m}, {"attn_mask": m}
    if kind == "float_mask":
        m = r.normal(size=(tq, s))
        return {"attn_mask": m}, {"attn_mask": m}
    if kind == "mask_3d":
        m = r.random((b * h, tq, s)) < 0.4
        m[..., 1] = False
        return {"attn_mask": m}, {"attn_mask": m}
    if kind == "padding":
        p = np.zeros((b, s), bool)
        p[0, -2:] = True
        p[1, -1:] = True
        return {"key_padding_mask": p}, {"key_padding_mask": p}
    if kind == "padding+causal":
        p = np.zeros((b, s), bool)
        p[1, -2:] = True
        m = ~np.tril(np.ones((tq, s), bool))
        return ({"key_padding_mask": p, "is_causal": True},
                {"key_padding_mask": p, "attn_mask": m, "is_causal": True})
    if kind == "float_mask+padding":
        p = np.zeros((b, s), bool)
        p[0, 2:] = True
        m = r.normal(size=(tq, s))
        # PyTorch wants both masks of one type: its float padding mask is -inf at pads
        return ({"attn_mask": m, "key_padding_mask": p},
                {"attn_mask": m, "key_padding_mask": np.where(p, -np.inf, 0.0)})
    raise ValueError(kind)


MHA_CASES = [
    ("self", None, None, "none"), ("self", None, None, "causal"),
    ("self", None, None, "bool_mask"), ("self", None, None, "float_mask"),
    ("self", None, None, "mask_3d"), ("self", None, None, "padding"),
    ("self", None, None, "padding+causal"), ("self", None, None, "float_mask+padding"),
    ("cross", None, None, "none"), ("cross", None, None, "padding"),
    ("cross", 5, 3, "bool_mask"), ("cross", 5, 3, "float_mask"),
]


@pytest.mark.torch
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "fused"])
@pytest.mark.parametrize("kind,kdim,vdim,masks", MHA_CASES,
                         ids=[f"{c[0]}-{c[3]}" + ("-kvdim" if c[1] else "") for c in MHA_CASES])
def test_mha_matches_torch_values_and_gradients(float64, kind, kdim, vdim, masks, need_weights):
    torch = pytest.importorskip("torch")
    b, h, e, tq = 2, 2, 8, 4
    s = tq if kind == "self" else 6
    r = rng(3)
    m = _mha(e, h, kdim, vdim)
    q_np = r.normal(size=(b, tq, e))
    k_np = q_np if kind == "self" else r.normal(size=(b, s, kdim or e))
    v_np = q_np if kind == "self" else r.normal(size=(b, s, vdim or e))
    mine, theirs = _masks(masks, b, h, tq, s, r)
    float_mask = mine.get("attn_mask") if masks.startswith("float") else None

    # minillm
    q = t(q_np, True)
    k = q if kind == "self" else t(k_np, True)
    v = q if kind == "self" else t(v_np, True)
    kw = {key: (t(val, key == "attn_mask" and float_mask is not None)
                if isinstance(val, np.ndarray) else val) for key, val in mine.items()}
    out, w = m(q, k, v, need_weights=need_weights, **kw)
    proj = r.normal(size=out.shape)
    loss = (out * t(proj)).sum()
    if w is not None:
        wproj = r.normal(size=w.shape)
        loss = loss + (w * t(wproj)).sum()
    loss.backward()

    # torch, weights copied: in_proj_weight rows = [W_q; W_k; W_v] (out, in) = minillm's .T
    tm = torch.nn.MultiheadAttention(e, h, batch_first=True, kdim=kdim, vdim=vdim,
                                     dtype=torch.float64)
    sd = {n: p.numpy() for n, p in m.state_dict().items()}
    with torch.no_grad():
        if kdim is None:
            tm.in_proj_weight.copy_(torch.tensor(np.concatenate(
                [sd["q_proj.weight"].T, sd["k_proj.weight"].T, sd["v_proj.weight"].T])))
        else:
            tm.q_proj_weight.copy_(torch.tensor(sd["q_proj.weight"].T))
            tm.k_proj_weight.copy_(torch.tensor(sd["k_proj.weight"].T))
            tm.v_proj_weight.copy_(torch.tensor(sd["v_proj.weight"].T))
        tm.in_proj_bias.copy_(torch.tensor(np.concatenate(
            [sd["q_proj.bias"], sd["k_proj.bias"], sd["v_proj.bias"]])))
        tm.out_proj.weight.copy_(torch.tensor(sd["out_proj.weight"].T))
        tm.out_proj.bias.copy_(torch.tensor(sd["out_proj.bias"]))
    tq_ = torch.tensor(q_np, requires_grad=True)
    tk_ = tq_ if kind == "self" else torch.tensor(k_np, requires_grad=True)
    tv_ = tq_ if kind == "self" else torch.tensor(v_np, requires_grad=True)
    tkw = {key: (torch.tensor(val, requires_grad=key == "attn_mask" and float_mask is not None)
                 if isinstance(val, np.ndarray) else val) for key, val in theirs.items()}
    tout, tw = tm(tq_, tk_, tv_, need_weights=need_weights, **tkw)
    tloss = (tout * torch.tensor(proj)).sum()
    if tw is not None:
        tloss = tloss + (tw * torch.tensor(wproj)).sum()
    tloss.backward()

    close(out.numpy(), tout.detach().numpy())
    if need_weights:
        close(w.numpy(), tw.detach().numpy())
    close(q.grad.numpy(), tq_.grad.numpy())
    if kind != "self":
        close(k.grad.numpy(), tk_.grad.numpy())
        close(v.grad.numpy(), tv_.grad.numpy())
    if float_mask is not None:
        close(kw["attn_mask"].grad.numpy(), tkw["attn_mask"].grad.numpy())
    g = {n: p.grad.numpy() for n, p in m.named_parameters()}
    if kdim is None:
        tg = tm.in_proj_weight.grad.numpy()
        close(g["q_proj.weight"], tg[:e].T)
        close(g["k_proj.weight"], tg[e:2 * e].T)
        close(g["v_proj.weight"], tg[2 * e:].T)
    else:
        close(g["q_proj.weight"], tm.q_proj_weight.grad.numpy().T)
        close(g["k_proj.weight"], tm.k_proj_weight.grad.numpy().T)
        close(g["v_proj.weight"], tm.v_proj_weight.grad.numpy().T)
    tb = tm.in_proj_bias.grad.numpy()
    close(np.concatenate([g["q_proj.bias"], g["k_proj.bias"], g["v_proj.bias"]]), tb)
    close(g["out_proj.weight"], tm.out_proj.weight.grad.numpy().T)
    close(g["out_proj.bias"], tm.out_proj.bias.grad.numpy())


@pytest.mark.parametrize("masks", ["none", "causal", "bool_mask", "float_mask", "mask_3d",
                                   "padding", "padding+causal", "float_mask+padding"])
def test_fused_path_equals_explicit_weights_path(float64, masks):
    b, h, e, tq = 2, 2, 8, 5
    r = rng(4)
    m = _mha(e, h)
    x = t(r.normal(size=(b, tq, e)))
    mine, _ = _masks(masks, b, h, tq, tq, r)
    kw = {k: t(v) if isinstance(v, np.ndarray) else v for k, v in mine.items()}
    fused, none = m(x, x, x, need_weights=False, **kw)
    explicit, w = m(x, x, x, **kw)
    assert none is None
    close(fused.numpy(), explicit.numpy(), 1e-12)
    # the head-averaged weights are the per-head ones averaged
    per_head = m(x, x, x, average_attn_weights=False, **kw)[1].numpy()
    close(w.numpy(), per_head.mean(axis=1), 1e-12)


def test_4d_mask_per_batch_and_head(float64):
    b, h, e, tq = 2, 2, 4, 3
    r = rng(5)
    m = _mha(e, h)
    x = t(r.normal(size=(b, tq, e)))
    mask4 = r.random((b, h, tq, tq)) < 0.5
    mask4[..., 0] = False
    a = m(x, x, x, attn_mask=t(mask4), average_attn_weights=False)
    c = m(x, x, x, attn_mask=t(mask4.reshape(b * h, tq, tq)), average_attn_weights=False)
    close(a[0].numpy(), c[0].numpy(), 1e-12)
    assert (a[1].numpy()[mask4] == 0).all()                   # blocked entries get no weight


def test_fully_masked_query_gives_zeros_not_nan(float64):
    m = _mha(4, 2)
    x = t(rng(6).normal(size=(1, 3, 4)))
    mask = np.zeros((3, 3), bool)
    mask[1] = True                                          # query 1 may attend nothing
    for need in (True, False):
        out, w = m(x, x, x, attn_mask=t(mask), need_weights=need)
        o = out.numpy()
        assert np.isfinite(o).all()
        close(o[0, 1], m.out_proj.bias.numpy(), 1e-12)       # zero heads -> only the out bias
        if need:
            assert (w.numpy()[0, 1] == 0).all()


def test_unbatched_inputs(float64):
    m = _mha(4, 2)
    x = rng(7).normal(size=(3, 4))
    out, w = m(t(x), t(x), t(x), key_padding_mask=t(np.array([False, False, True])))
    ref, rw = m(t(x[None]), t(x[None]), t(x[None]),
                key_padding_mask=t(np.array([[False, False, True]])))
    assert out.shape == (3, 4) and w.shape == (3, 3)
    close(out.numpy(), ref.numpy()[0], 1e-12)
    close(w.numpy(), rw.numpy()[0], 1e-12)


GRAD_CASES = ["self", "self-causal", "self-bool-mask", "self-float-mask", "self-padding",
              "cross", "cross-padding"]


@pytest.mark.parametrize("case", GRAD_CASES)
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "fused"])
def test_mha_gradcheck(float64, case, need_weights):
    b, h, e, tq = 2, 2, 4, 3
    s = tq if case.startswith("self") else 4
    r = rng(8)
    m = _mha(e, h, kdim=None if case.startswith("self") else 3,
             vdim=None if case.startswith("self") else 5)
    x = t(r.normal(size=(b, tq, e)), True)
    mem_k = t(r.normal(size=(b, s, 3)), True) if case.startswith("cross") else None
    mem_v = t(r.normal(size=(b, s, 5)), True) if case.startswith("cross") else None
    kw = {}
    extra = []
    if case.endswith("causal"):
        kw["is_causal"] = True
    if case.endswith("bool-mask"):
        mask = r.random((tq, s)) < 0.5
        mask[:, 0] = False
        kw["attn_mask"] = t(mask)
    if case.endswith("float-mask"):
        kw["attn_mask"] = t(r.normal(size=(tq, s)), True)
        extra.append(kw["attn_mask"])
    if case.endswith("padding"):
        p = np.zeros((b, s), bool)
        p[0, -1] = True
        kw["key_padding_mask"] = t(p)
    params = list(m.parameters())

    def f(*inputs):
        kk, vv = (x, x) if mem_k is None else (mem_k, mem_v)
        out, w = m(x, kk, vv, need_weights=need_weights, **kw)
        return (out, w) if w is not None else out

    inputs = [x] + ([mem_k, mem_v] if mem_k is not None else []) + extra + params
    assert mm.gradcheck(f, inputs)


def test_mha_attention_dropout_trains_and_is_identity_in_eval(float64):
    mm.manual_seed(0)
    m = MultiHeadAttention(8, 2, dropout=0.5)
    x = mm.randn(2, 6, 8)
    a = m(x, x, x)[0].numpy()
    b = m(x, x, x)[0].numpy()
    assert not np.allclose(a, b)                   # a new dropout mask per call
    c = m(x, x, x, need_weights=False)[0].numpy()
    assert not np.allclose(a, c)
    m.eval()
    close(m(x, x, x)[0].numpy(), m(x, x, x, need_weights=False)[0].numpy(), 1e-12)


@pytest.mark.parametrize("call,exc,fragment", [
    (lambda m, x: m(x, x, x, attn_mask=mm.ones(3, 4, dtype=bool)), ValueError,
     "attn_mask must be"),
    (lambda m, x: m(x, x, x, attn_mask=mm.ones(3, 3, dtype=np.int64)), TypeError,
     "must be bool (True = not allowed)"),
    (lambda m, x: m(x, x, x, attn_mask=np.ones((3, 3), bool)), TypeError,
     "must be a bool or float"),
    (lambda m, x: m(x, x, x, key_padding_mask=mm.ones(3, 2, dtype=bool)), ValueError,
     "key_padding_mask must be (B, S)"),
    (lambda m, x: m(x, mm.randn(2, 3, 5), x), ValueError, "batch-first"),
    (lambda m, x: m(x, mm.randn(1, 3, 4), mm.randn(1, 3, 4)), ValueError, "batch sizes differ"),
    (lambda m, x: m(x, x, mm.randn(2, 4, 4)), ValueError, "same length S"),
    (lambda m, x: MultiHeadAttention(6, 4), ValueError, "divisible by num_heads"),
], ids=["mask-shape", "mask-dtype", "mask-not-tensor", "kpm-shape", "kdim", "batch", "kv-len",
        "heads"])
def test_mha_bad_inputs_are_clear_errors(call, exc, fragment):
    m = MultiHeadAttention(4, 2)
    x = mm.randn(2, 3, 4)
    with pytest.raises(exc) as info:
        call(m, x)
    assert fragment in str(info.value)


# -- positional encodings -----------------------------------------------------------------------
@pytest.mark.parametrize("d", [6, 7])
def test_sinusoidal_values_follow_the_formula(float64, d):
    pe = SinusoidalPositionalEncoding(d, max_len=50)
    got = pe(mm.zeros(1, 50, d)).numpy()[0]
    for pos in (0, 1, 17, 49):
        for i in range(d):
            angle = pos / 10000 ** ((i - i % 2) / d)
            want = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert abs(got[pos, i] - want) < 1e-12
    x = rng(0).normal(size=(2, 5, d))
    close(pe(t(x), offset=7).numpy(), x + got[7:12], 1e-12)
    assert list(pe.state_dict()) == [] and list(pe.parameters()) == []


def test_sinusoidal_gradcheck_and_max_len(float64):
    pe = SinusoidalPositionalEncoding(4, max_len=8)
    x = t(rng(1).normal(size=(2, 3, 4)), True)
    assert mm.gradcheck(lambda a: pe(a, offset=2) * pe(a), [x])
    with pytest.raises(ValueError, match="exceed max_len=8"):
        pe(mm.zeros(1, 5, 4), offset=4)
    with pytest.raises(ValueError, match="d_model=4"):
        pe(mm.zeros(1, 5, 3))


def test_learned_positional_embedding(float64):
    lp = LearnedPositionalEmbedding(10, 4)
    assert [n for n, _ in lp.named_parameters()] == ["weight"]
    assert abs(lp.weight.numpy().std() - 0.02) < 0.01
    x = rng(2).normal(size=(2, 3, 4))
    close(lp(t(x), offset=5).numpy(), x + lp.weight.numpy()[5:8], 1e-12)
    xt = t(x, True)
    assert mm.gradcheck(lambda a, w: lp(a, offset=5) * lp(a), [xt, lp.weight])
    with pytest.raises(ValueError, match="exceed max_len=10"):
        lp(mm.zeros(1, 4, 4), offset=7)


def _rope_reference(x, positions, base=10000.0):
    """RoPE in the rotate-half layout as complex numbers:
    z_i = x_i + j x_{i + d/2},  z_i *= exp(j m theta_i)."""
    d = x.shape[-1]
    theta = base ** (-2.0 * np.arange(d // 2) / d)
    z = x[..., : d // 2] + 1j * x[..., d // 2:]
    z = z * np.exp(1j * positions[:, None] * theta[None, :])
    return np.concatenate([z.real, z.imag], axis=-1)


def test_rotary_matches_complex_rotation_and_offsets(float64):
    r = rng(3)
    rope = RotaryEmbedding(8, base=100)
    q, k = r.normal(size=(2, 2, 5, 8)), r.normal(size=(2, 2, 5, 8))
    rq, rk = rope.apply_rotary(t(q), t(k), offset=3)
    close(rq.numpy(), _rope_reference(q, np.arange(3, 8), 100.0), 1e-12)
    close(rk.numpy(), _rope_reference(k, np.arange(3, 8), 100.0), 1e-12)
    # rotating the tail with an offset == the tail of rotating the whole sequence
    whole = rope(t(q), t(k))[0].numpy()
    tail = rope(t(q[:, :, 2:]), t(k[:, :, 2:]), offset=2)[0].numpy()
    close(tail, whole[:, :, 2:], 1e-12)
    # the norm is kept and position 0 is not rotated
    close(np.linalg.norm(rq.numpy(), axis=-1), np.linalg.norm(q, axis=-1), 1e-12)
    close(rope(t(q), t(k))[0].numpy()[:, :, 0], q[:, :, 0], 1e-12)


def test_rotary_scores_depend_on_relative_position_only(float64):
    rope = RotaryEmbedding(6)
    r = rng(4)
    q, k = r.normal(size=(1, 6)), r.normal(size=(1, 6))

    def score(m, n):
        cq, sq = rope.cos_sin(1, m)
        ck, sk = rope.cos_sin(1, n)
        qq = apply_rotary(t(q), cq, sq).numpy()
        kk = apply_rotary(t(k), ck, sk).numpy()
        return float((qq * kk).sum())

    assert abs(score(5, 2) - score(13, 10)) < 1e-10
    assert abs(score(0, 0) - float((q * k).sum())) < 1e-12
    assert abs(score(5, 2) - score(2, 5)) > 1e-6


def test_rotary_gradcheck(float64):
    rope = RotaryEmbedding(4)
    r = rng(5)
    q, k = t(r.normal(size=(2, 3, 4)), True), t(r.normal(size=(2, 3, 4)), True)
    assert mm.gradcheck(lambda a, b: rope.apply_rotary(a, b, offset=2), [q, k])
    with pytest.raises(ValueError, match="head_dim must be even"):
        RotaryEmbedding(5)
    with pytest.raises(ValueError, match="same length T"):
        rope.apply_rotary(mm.zeros(3, 4), mm.zeros(2, 4))


def test_rope_causal_attention_ignores_future_tokens(float64):
    """q, k from a projection, rotated, causal attention: outputs at i never see x[j > i]."""
    r = rng(6)
    b, h, tlen, d = 2, 2, 6, 4
    wq, wk, wv = (t(r.normal(size=(h * d, h * d))) for _ in range(3))
    rope = RotaryEmbedding(d)

    def attend(x):
        def heads(w):
            return (t(x) @ w).reshape(b, tlen, h, d).transpose(0, 2, 1, 3)
        q, k = rope.apply_rotary(heads(wq), heads(wk))
        return F.scaled_dot_product_attention(q, k, heads(wv), is_causal=True).numpy()

    x = r.normal(size=(b, tlen, h * d))
    base = attend(x)
    for cut in range(1, tlen):
        x2 = x.copy()
        x2[:, cut:] = r.normal(size=x2[:, cut:].shape)
        out = attend(x2)
        np.testing.assert_allclose(out[:, :, :cut], base[:, :, :cut], rtol=0, atol=1e-12)
        assert not np.allclose(out[:, :, cut:], base[:, :, cut:])


# -- Transformer layers -------------------------------------------------------------------------
LAYER_CASES = [(False, "relu"), (True, "relu"), (False, "gelu"), (True, "gelu")]
LAYER_IDS = ["post-LN-relu", "pre-LN-relu", "post-LN-gelu", "pre-LN-gelu"]


def _randomize(module, seed):
    r = rng(seed)
    with mm.no_grad():
        for p in module.parameters():
            p.copy_(t(p.numpy() + 0.1 * r.normal(size=p.shape)))
    return module


def test_layer_names_follow_pytorch():
    enc = TransformerEncoderLayer(8, 2, 16)
    assert [n for n, _ in enc.named_parameters()] == [
        "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight",
        "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
        "self_attn.out_proj.weight", "self_attn.out_proj.bias", "linear1.weight", "linear1.bias",
        "linear2.weight", "linear2.bias", "norm1.weight", "norm1.bias", "norm2.weight",
        "norm2.bias"]
    dec = TransformerDecoderLayer(8, 2, 16, bias=False)
    names = [n for n, _ in dec.named_modules()]
    for sub in ("self_attn", "multihead_attn", "linear1", "linear2", "norm1", "norm2", "norm3",
                "dropout", "dropout1", "dropout2", "dropout3"):
        assert sub in names
    assert not any(n.endswith("bias") for n, _ in dec.named_parameters())
    with pytest.raises(ValueError, match="activation must be"):
        TransformerEncoderLayer(8, 2, activation="swish")


@pytest.mark.parametrize("norm_first,activation", LAYER_CASES, ids=LAYER_IDS)
def test_encoder_layer_gradcheck(float64, norm_first, activation):
    mm.manual_seed(1)
    layer = _randomize(TransformerEncoderLayer(4, 2, 6, dropout=0.0, activation=activation,
                                               norm_first=norm_first), 1)
    r = rng(7)
    x = t(r.normal(size=(2, 3, 4)), True)
    kpm = t(np.array([[False, False, True], [False, False, False]]))
    assert mm.gradcheck(lambda a, *p: layer(a, src_key_padding_mask=kpm, is_causal=True),
                        [x] + list(layer.parameters()))


@pytest.mark.parametrize("norm_first,activation", LAYER_CASES, ids=LAYER_IDS)
def test_decoder_layer_gradcheck(float64, norm_first, activation):
    mm.manual_seed(2)
    layer = _randomize(TransformerDecoderLayer(4, 2, 6, dropout=0.0, activation=activation,
                                               norm_first=norm_first), 2)
    r = rng(8)
    x = t(r.normal(size=(2, 3, 4)), True)
    mem = t(r.normal(size=(2, 4, 4)), True)
    mkpm = t(np.array([[False, False, False, True], [False, False, False, False]]))
    assert mm.gradcheck(lambda a, b, *p: layer(a, b, tgt_is_causal=True,
                                               memory_key_padding_mask=mkpm),
                        [x, mem] + list(layer.parameters()))


def _copy_layer_to_torch(layer, tl, torch):
    """Copy a minillm encoder/decoder layer into a PyTorch one (Linear weights transposed)."""
    sd = {n: p.numpy() for n, p in layer.state_dict().items()}
    with torch.no_grad():
        for attn in ("self_attn", "multihead_attn"):
            if f"{attn}.q_proj.weight" not in sd:
                continue
            ta = getattr(tl, attn)
            ta.in_proj_weight.copy_(torch.tensor(np.concatenate(
                [sd[f"{attn}.{p}_proj.weight"].T for p in "qkv"])))
            ta.in_proj_bias.copy_(torch.tensor(np.concatenate(
                [sd[f"{attn}.{p}_proj.bias"] for p in "qkv"])))
            ta.out_proj.weight.copy_(torch.tensor(sd[f"{attn}.out_proj.weight"].T))
            ta.out_proj.bias.copy_(torch.tensor(sd[f"{attn}.out_proj.bias"]))
        for name in ("linear1", "linear2"):
            getattr(tl, name).weight.copy_(torch.tensor(sd[f"{name}.weight"].T))
            getattr(tl, name).bias.copy_(torch.tensor(sd[f"{name}.bias"]))
        for name in ("norm1", "norm2", "norm3"):
            if f"{name}.weight" in sd:
                getattr(tl, name).weight.copy_(torch.tensor(sd[f"{name}.weight"]))
                getattr(tl, name).bias.copy_(torch.tensor(sd[f"{name}.bias"]))


@pytest.mark.torch
@pytest.mark.parametrize("norm_first,activation", LAYER_CASES, ids=LAYER_IDS)
def test_layers_match_torch(float64, norm_first, activation):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    r = rng(9)
    d, nhead, ff, b, tt, s = 8, 2, 12, 2, 5, 6
    x_np, mem_np = r.normal(size=(b, tt, d)), r.normal(size=(b, s, d))
    kpm_np = np.zeros((b, s), bool)
    kpm_np[0, -2:] = True
    causal = ~np.tril(np.ones((tt, tt), bool))
    for kind in ("encoder", "decoder"):
        cls = TransformerEncoderLayer if kind == "encoder" else TransformerDecoderLayer
        tcls = torch.nn.TransformerEncoderLayer if kind == "encoder" \
            else torch.nn.TransformerDecoderLayer
        layer = _randomize(cls(d, nhead, ff, dropout=0.0, activation=activation,
                               norm_first=norm_first), 3)
        tl = tcls(d, nhead, ff, dropout=0.0, activation=activation, norm_first=norm_first,
                  batch_first=True, dtype=torch.float64)
        _copy_layer_to_torch(layer, tl, torch)
        x, tx = t(x_np, True), torch.tensor(x_np, requires_grad=True)
        if kind == "encoder":
            out = layer(x, is_causal=True)
            tout = tl(tx, src_mask=torch.tensor(causal), is_causal=True)
        else:
            mem, tmem = t(mem_np, True), torch.tensor(mem_np, requires_grad=True)
            out = layer(x, mem, tgt_is_causal=True, memory_key_padding_mask=t(kpm_np))
            tout = tl(tx, tmem, tgt_mask=torch.tensor(causal), tgt_is_causal=True,
                      memory_key_padding_mask=torch.tensor(kpm_np))
        proj = r.normal(size=out.shape)
        (out * t(proj)).sum().backward()
        (tout * torch.tensor(proj)).sum().backward()
        close(out.numpy(), tout.detach().numpy())
        close(x.grad.numpy(), tx.grad.numpy())
        if kind == "decoder":
            close(mem.grad.numpy(), tmem.grad.numpy())
        tg = dict(tl.named_parameters())
        for n, p in layer.named_parameters():
            if n.startswith(("linear", "norm")) or n.endswith("out_proj.bias"):
                want = tg[n].grad.numpy()
                close(p.grad.numpy(), want.T if want.ndim == 2 else want)
            if n.endswith("out_proj.weight"):
                close(p.grad.numpy(), tg[n].grad.numpy().T)


def test_decoder_layer_with_tgt_is_causal_ignores_future_tokens(float64):
    mm.manual_seed(3)
    for norm_first in (False, True):
        layer = TransformerDecoderLayer(8, 2, 16, dropout=0.0, norm_first=norm_first).eval()
        r = rng(10)
        x, mem = r.normal(size=(2, 6, 8)), t(r.normal(size=(2, 4, 8)))
        base = layer(t(x), mem, tgt_is_causal=True).numpy()
        for cut in range(1, 6):
            x2 = x.copy()
            x2[:, cut:] = r.normal(size=x2[:, cut:].shape)
            out = layer(t(x2), mem, tgt_is_causal=True).numpy()
            np.testing.assert_allclose(out[:, :cut], base[:, :cut], rtol=0, atol=1e-12)
            assert not np.allclose(out[:, cut:], base[:, cut:])
        # without the causal mask the past does see the future
        out = layer(t(x2), mem).numpy()
        assert not np.allclose(out[:, :cut], layer(t(x), mem).numpy()[:, :cut])


def test_stacks(float64):
    mm.manual_seed(4)
    enc = TransformerEncoder(2, 8, 2, 16, dropout=0.0, norm_first=True, norm=True)
    dec = TransformerDecoder(3, 8, 2, 16, dropout=0.0)
    assert len(enc.layers) == 2 and enc.norm is not None and dec.norm is None
    assert "layers.1.self_attn.q_proj.weight" in dict(enc.named_parameters())
    # layers are initialised independently (PyTorch's deepcopy gives equal layers)
    w0, w1 = enc.layers[0].linear1.weight.numpy(), enc.layers[1].linear1.weight.numpy()
    assert not np.allclose(w0, w1)
    r = rng(11)
    src = t(r.normal(size=(2, 5, 8)))
    tgt = t(r.normal(size=(2, 4, 8)))
    kpm = t(np.array([[False] * 4 + [True], [False] * 5]))
    mem = enc(src, src_key_padding_mask=kpm)
    out = dec(tgt, mem, tgt_is_causal=True, memory_key_padding_mask=kpm)
    assert out.shape == (2, 4, 8)
    # the stack is its layers applied in turn, then the norm
    x = src
    for layer in enc.layers:
        x = layer(x, src_key_padding_mask=kpm)
    close(mem.numpy(), enc.norm(x).numpy(), 1e-12)
    with pytest.raises(ValueError, match="num_layers"):
        TransformerEncoder(0, 8, 2)


@pytest.mark.parametrize("causal,p", [(True, 0.0), (False, 0.0), (True, 0.3)])
def test_packed_self_attention_equals_sdpa_on_the_slices(float64, causal, p):
    rng = np.random.default_rng(5)
    # GPT's layout: (B, T, 3, h, E) viewed as (3, B, h, T, E), strided
    packed = rng.standard_normal((2, 4, 3, 2, 3)).transpose(2, 0, 3, 1, 4)
    a = mm.tensor(packed, requires_grad=True)
    b = mm.tensor(packed.copy(), requires_grad=True)
    r = mm.tensor(rng.standard_normal((2, 2, 4, 3)))
    mm.manual_seed(7)
    ya = F.packed_self_attention(a, is_causal=causal, dropout_p=p)
    mm.manual_seed(7)
    yb = F.scaled_dot_product_attention(b[0], b[1], b[2], is_causal=causal, dropout_p=p)
    np.testing.assert_allclose(ya.numpy(), yb.numpy(), rtol=1e-12, atol=1e-12)
    (ya * r).sum().backward()
    (yb * r).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-12, atol=1e-12)
    if p == 0.0:
        assert mm.gradcheck(lambda t: F.packed_self_attention(t, is_causal=causal),
                            [mm.tensor(packed, requires_grad=True)])


@pytest.mark.parametrize("shape", [(2, 4, 3), (3, 4), (4, 2, 4, 3)])
def test_packed_self_attention_rejects_a_bad_layout(shape):
    with pytest.raises(ValueError, match=r"qkv must be \(3, \.\.\., T, E\)"):
        F.packed_self_attention(mm.zeros(shape))
