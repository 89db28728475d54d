"""Weight-only int8 quantization (minillm.finetune.quantize), checked against NumPy.

Device-clean: data is made with NumPy, moved with ``mm.tensor`` and read back with
``.numpy()`` only, so the file also runs on the strict 'fake' device.
"""
import json

import numpy as np
import pytest

import minillm as mm
from minillm import nn
from minillm.finetune.prune import PrunedLinear
from minillm.finetune.quantize import (QuantizedLinear, dequantize, load_quantized,
                                       model_size_bytes, quantize_model, quantize_per_channel,
                                       save_quantized)
from minillm.models import GPT, BertConfig, GPTConfig, ModelForSequenceClassification

GPT_SMALL = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=32)
BERT_SMALL = dict(vocab_size=13, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=8, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, pad_token_id=0)


def host(array):
    """A raw (device) array back on the host, explicitly."""
    return mm.tensor(array).numpy()


def np_quantize(w, axis=-1):
    """Independent reference: s = max|W| / 127 per channel (float32), q = clip(round(W/s))."""
    w = np.asarray(w)
    ax = axis % w.ndim
    others = tuple(i for i in range(w.ndim) if i != ax)
    s = (np.abs(w).max(axis=others) / 127).astype(np.float32)
    shape = [1] * w.ndim
    shape[ax] = -1
    sb = s.astype(w.dtype).reshape(shape)
    q = np.where(sb > 0, np.round(w / np.where(sb > 0, sb, 1)), 0)
    return np.clip(q, -127, 127).astype(np.int8), s


def _weights(kind, seed=0):
    r = np.random.default_rng(seed)
    w = r.standard_normal((16, 6)).astype(np.float32)
    if kind == "zero_column":
        w[:, 2] = 0.0
    elif kind == "outlier":
        w[5, 3] = 1000.0                       # one huge outlier: its column's step is ~7.9
    elif kind == "float64":
        w = w.astype(np.float64)
    elif kind == "negative_max":
        w[:, 1] = -np.abs(w[:, 1])
        w[0, 1] = -50.0
    elif kind == "tiny":
        w = w * 1e-6
    elif kind == "3d_axis0":
        w = r.standard_normal((4, 3, 5)).astype(np.float32)
    return w


WEIGHT_CASES = [("gaussian", -1), ("zero_column", -1), ("outlier", -1), ("float64", -1),
                ("negative_max", -1), ("tiny", -1), ("gaussian", 0), ("3d_axis0", 0)]


@pytest.mark.filterwarnings("error::RuntimeWarning")       # no 0/0 for a zero column
@pytest.mark.parametrize("kind,axis", WEIGHT_CASES, ids=[f"{k}-axis{a}" for k, a in WEIGHT_CASES])
def test_quantize_per_channel_matches_numpy_and_error_bound(kind, axis):
    w = _weights(kind)
    q_dev, s_dev = quantize_per_channel(mm.tensor(w).data, axis=axis)
    q, s = host(q_dev), host(s_dev)
    q_ref, s_ref = np_quantize(w, axis)
    assert q.dtype == np.int8 and q.shape == w.shape
    assert s.dtype == np.float32 and s.shape == (w.shape[axis],)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(q, q_ref)
    assert np.abs(q.astype(np.int64)).max() <= 127
    # the largest |w| of every non-zero channel gets the code +-127
    qa = np.moveaxis(np.abs(q.astype(np.int64)), axis, 0).reshape(w.shape[axis], -1)
    np.testing.assert_array_equal(qa.max(axis=1)[s > 0], 127)
    # |W - q s| <= s / 2 elementwise (plus float rounding of the product q * s)
    shape = [1] * w.ndim
    shape[axis] = -1
    sb = s.astype(np.float64).reshape(shape)
    w_hat = host(dequantize(q_dev, s_dev, axis=axis)).astype(np.float64)
    err = np.abs(w.astype(np.float64) - w_hat)
    assert np.all(err <= sb / 2 * (1 + 1e-6) + 1e-7 * np.abs(w))
    if kind == "zero_column":
        assert s[2] == 0 and np.all(q[:, 2] == 0) and np.all(w_hat[:, 2] == 0)
    if kind == "outlier":   # the outlier is exact to float rounding; its column is coarse
        assert abs(w_hat[5, 3] - 1000.0) < 1e-3 and s[3] == np.float32(1000.0 / 127)
        assert np.sum(q[:, 3] != 0) <= 2     # the other (small) entries round to ~0


def test_dequantize_is_q_times_scale():
    r = np.random.default_rng(1)
    q = r.integers(-127, 128, size=(5, 4)).astype(np.int8)
    s0 = r.random(5).astype(np.float32)
    s1 = r.random(4).astype(np.float32)
    got0 = host(dequantize(mm.tensor(q).data, mm.tensor(s0).data, axis=0))
    got1 = host(dequantize(mm.tensor(q).data, mm.tensor(s1).data))
    np.testing.assert_array_equal(got0, q.astype(np.float32) * s0[:, None])
    np.testing.assert_array_equal(got1, q.astype(np.float32) * s1[None, :])
    assert got1.dtype == np.float32


# -- the layer ----------------------------------------------------------------------------------
def _linear(n_in, n_out, seed, bias=True):
    mm.manual_seed(seed)
    lin = nn.Linear(n_in, n_out, bias=bias)
    r = np.random.default_rng(seed)
    with mm.no_grad():
        lin.weight.copy_(mm.tensor(r.standard_normal((n_in, n_out)).astype(np.float32)))
        if bias:
            lin.bias.copy_(mm.tensor(r.standard_normal(n_out).astype(np.float32)))
    return lin


@pytest.mark.parametrize("bias", [True, False])
def test_quantized_linear_matches_numpy_dequantized_matmul(bias):
    lin = _linear(12, 7, seed=3, bias=bias)
    w = lin.weight.numpy()
    ql = QuantizedLinear.from_linear(lin)
    q_ref, s_ref = np_quantize(w)
    np.testing.assert_array_equal(ql.weight_int8.numpy(), q_ref)
    np.testing.assert_array_equal(ql.weight_scale.numpy(), s_ref)
    assert ql.weight_int8.shape == (12, 7) and ql.weight_int8.dtype == np.int8
    assert ql.weight_scale.shape == (7,) and ql.weight_scale.dtype == np.float32
    assert (ql.bias is None) == (not bias)
    x = np.random.default_rng(4).standard_normal((3, 5, 12)).astype(np.float32)
    want = x.astype(np.float64) @ (q_ref.astype(np.float64) * s_ref.astype(np.float64))
    if bias:
        want = want + lin.bias.numpy().astype(np.float64)
    got = ql(mm.tensor(x)).numpy()
    assert got.dtype == np.float32 and got.shape == (3, 5, 7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ql.dequantized_weight().numpy(),
                                  q_ref.astype(np.float32) * s_ref)
    # close to the float layer: |x (W - W~)| <= sum_i |x_i| s_j / 2
    bound = np.abs(x) @ np.broadcast_to(s_ref / 2, (12, 7))
    assert np.all(np.abs(got - lin(mm.tensor(x)).numpy()) <= bound + 1e-4)


def test_float64_layer_computes_in_float64(float64):
    lin = _linear(5, 3, seed=14)
    ql = QuantizedLinear.from_linear(lin)
    assert ql.weight_scale.dtype == np.float32 and ql.bias.dtype == np.float64
    q, s = np_quantize(lin.weight.numpy())
    x = np.random.default_rng(15).standard_normal((4, 5))
    got = ql(mm.tensor(x)).numpy()
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, x @ (q * s.astype(np.float64)) + lin.bias.numpy(),
                               rtol=1e-12, atol=1e-12)


def test_quantized_linear_is_inference_only_but_passes_gradients_to_x():
    lin = _linear(6, 4, seed=5)
    ql = QuantizedLinear.from_linear(lin)
    assert list(ql.parameters()) == []
    assert sorted(ql.state_dict()) == ["bias", "weight_int8", "weight_scale"]
    x = mm.tensor(np.random.default_rng(6).standard_normal((2, 6)).astype(np.float32),
                  requires_grad=True)
    g = np.random.default_rng(7).standard_normal((2, 4)).astype(np.float32)
    (ql(x) * mm.tensor(g)).sum().backward()
    w_hat = ql.dequantized_weight().numpy()
    np.testing.assert_allclose(x.grad.numpy(), g @ w_hat.T, rtol=1e-5, atol=1e-6)


def test_quantized_linear_of_a_pruned_linear_uses_the_mask():
    lin = _linear(8, 5, seed=8)
    pl = PrunedLinear.from_linear(lin)
    mask = (np.random.default_rng(9).random((8, 5)) > 0.5).astype(np.float32)
    pl.weight_mask.copy_(mm.tensor(mask))
    ql = QuantizedLinear.from_linear(pl)
    q_ref, s_ref = np_quantize(lin.weight.numpy() * mask)
    np.testing.assert_array_equal(ql.weight_int8.numpy(), q_ref)
    np.testing.assert_array_equal(ql.weight_scale.numpy(), s_ref)
    assert np.all(ql.weight_int8.numpy()[mask == 0] == 0)


def test_quantized_linear_state_dict_keeps_int8_through_load_state_dict():
    src = QuantizedLinear.from_linear(_linear(6, 3, seed=10))
    dst = QuantizedLinear(6, 3)
    assert dst.weight_int8.dtype == np.int8 and np.all(dst.weight_int8.numpy() == 0)
    dst.load_state_dict({k: v.numpy() for k, v in src.state_dict().items()})
    for k, v in src.state_dict().items():
        assert dst.state_dict()[k].dtype == v.dtype
        np.testing.assert_array_equal(dst.state_dict()[k].numpy(), v.numpy())


# -- whole models -------------------------------------------------------------------------------
def _randomize(model, seed, scale=0.05):
    r = np.random.default_rng(seed)
    with mm.no_grad():
        for p in model.parameters():
            p.copy_(mm.tensor(p.numpy() + scale * r.standard_normal(p.shape).astype(p.dtype)))
    return model.eval()


def gpt_lm(seed=0):
    mm.manual_seed(seed)
    return _randomize(GPT(GPTConfig(**GPT_SMALL)), seed + 100)


def bert_classifier(seed=0):
    mm.manual_seed(seed)
    cfg = ModelForSequenceClassification.config_class(
        base_model_type="bert", base_config=BertConfig(**BERT_SMALL).to_dict(), num_labels=3)
    return _randomize(ModelForSequenceClassification(cfg), seed + 100)


def _inputs(model, seed=0):
    r = np.random.default_rng(seed)
    if isinstance(model, GPT):
        return (mm.tensor(r.integers(0, 11, size=(3, 8))),)
    return (mm.tensor(r.integers(1, 13, size=(4, 8))),)


def _output(model, inputs):
    with mm.no_grad():
        return model(*inputs).numpy().astype(np.float64)


def _linear_names(model):
    return [n for n, m in model.named_modules() if type(m) is nn.Linear]


MODEL_CASES = [("gpt", gpt_lm, (), 1e-2), ("bert_seq", bert_classifier, (), 1e-2),
               ("bert_seq_skip_head", bert_classifier, ("classifier",), 1e-2)]


@pytest.mark.parametrize("name,build,skip,tol", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_quantize_model_keeps_outputs_close_and_shrinks_weights(name, build, skip, tol):
    """Measured relative error ||y_q - y|| / ||y|| (seeded, float32): 6.1e-3 (GPT logits),
    5.7e-3 (BERT classifier logits), 4.4e-3 (BERT, head kept in float); asserted < 1e-2."""
    model = build()
    inputs = _inputs(model)
    y = _output(model, inputs)
    linear = {n: m for n, m in model.named_modules() if type(m) is nn.Linear}
    expect = [n for n in linear if not any(n == s or n.endswith("." + s) for s in skip)]
    weights = {n: linear[n].weight.numpy() for n in expect}
    r = quantize_model(model, skip=skip)
    assert r["quantized"] == expect
    assert all(isinstance(dict(model.named_modules())[n], QuantizedLinear) for n in expect)
    assert _linear_names(model) == [n for n in linear if n not in expect]
    # the report's error is the largest |W - W~| over the layers, from NumPy
    want_err = 0.0
    for w in weights.values():
        q, s = np_quantize(w)
        want_err = max(want_err, np.abs(w - q.astype(np.float32) * s).max())
    assert r["max_abs_error"] == pytest.approx(want_err, rel=1e-6)
    y_q = _output(model, inputs)
    rel = np.linalg.norm(y_q - y) / np.linalg.norm(y)
    assert 0 < rel < tol, rel
    # sizes: float32 weights (4 bytes each) -> int8 codes + one float32 scale per column
    w_before = sum(4 * w.size for w in weights.values())
    w_after = sum(w.size + 4 * w.shape[1] for w in weights.values())
    assert w_after < w_before / 3
    assert r["bytes_before"] - r["bytes_after"] == w_before - w_after
    assert r["linear_bytes_before"] - r["linear_bytes_after"] == w_before - w_after
    assert r["bytes_after"] == model_size_bytes(model)


def test_quantize_model_selects_by_name_suffix():
    model = gpt_lm()
    r = quantize_model(model, modules=("attn.c_proj", "c_fc"))
    assert r["quantized"] == ["h.0.attn.c_proj", "h.0.mlp.c_fc", "h.1.attn.c_proj", "h.1.mlp.c_fc"]
    assert _linear_names(model) == ["h.0.attn.c_attn", "h.0.mlp.c_proj", "h.1.attn.c_attn",
                                    "h.1.mlp.c_proj"]


def test_shared_linear_is_replaced_everywhere():
    shared = _linear(4, 4, seed=11)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    x = mm.tensor(np.random.default_rng(12).standard_normal((2, 4)).astype(np.float32))
    r = quantize_model(model)
    assert r["quantized"] == ["0"]
    assert model[0] is model[2] and isinstance(model[0], QuantizedLinear)
    w = model[0].dequantized_weight().numpy().astype(np.float64)
    b = model[0].bias.numpy().astype(np.float64)
    h = x.numpy() @ w + b
    h = np.maximum(h, 0)
    np.testing.assert_allclose(model(x).numpy(), h @ w + b, rtol=1e-4, atol=1e-5)


def test_model_size_bytes_counts_itemsize_and_shared_tensors_once():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)                               # 12 + 3 floats
            self.b = nn.Linear(4, 3, bias=False)
            self.b.weight = self.a.weight                          # tied: counted once
            self.register_buffer("codes", mm.tensor(np.zeros((5, 2), np.int8)))   # 10 bytes
            self.register_buffer("steps", mm.tensor(np.zeros(3, np.int64)))       # 24 bytes

    assert model_size_bytes(M()) == 4 * 15 + 10 + 24
    m64 = nn.Linear(2, 2).to(np.float64)
    assert model_size_bytes(m64) == 8 * 6


# -- saving and loading -------------------------------------------------------------------------
@pytest.mark.parametrize("build", [gpt_lm, bert_classifier], ids=["gpt", "bert_seq"])
def test_save_load_round_trip_is_bit_exact(tmp_path, build):
    model = build()
    skip = ("classifier",) if build is bert_classifier else ()
    r = quantize_model(model, skip=skip)
    inputs = _inputs(model)
    y = _output(model, inputs)
    out = save_quantized(model, tmp_path / "q")
    assert sorted(p.name for p in out.iterdir()) == ["quantization.json", "quantized.npz"]
    assert [p.name for p in tmp_path.iterdir()] == ["q"]            # no temporary left over
    meta = json.loads((out / "quantization.json").read_text(encoding="utf-8"))
    assert meta["quantized"] == r["quantized"] and meta["bits"] == 8
    with np.load(out / "quantized.npz", allow_pickle=False) as npz:
        for name in r["quantized"]:
            assert npz[f"{name}.weight_int8"].dtype == np.int8
            assert npz[f"{name}.weight_scale"].dtype == np.float32
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    fresh = build(seed=7)                           # different weights, same architecture
    for loaded in (load_quantized(lambda: build(seed=7), out), load_quantized(fresh, out)):
        assert sorted(loaded.state_dict()) == sorted(state)
        for k, v in loaded.state_dict().items():
            assert v.dtype == state[k].dtype, k
            np.testing.assert_array_equal(v.numpy(), state[k], err_msg=k)
        np.testing.assert_array_equal(_output(loaded, inputs), y)
    assert fresh is not model and isinstance(fresh.h[0].attn.c_attn if build is gpt_lm
                                             else fresh.base.pooler.dense, QuantizedLinear)
    # saving again over the same directory replaces it
    save_quantized(load_quantized(lambda: build(seed=7), out), out)
    np.testing.assert_array_equal(_output(load_quantized(lambda: build(seed=8), out), inputs), y)


def test_load_quantized_errors(tmp_path):
    model = gpt_lm()
    quantize_model(model)
    out = save_quantized(model, tmp_path / "q")
    with pytest.raises(ValueError, match=r"does not have as Linear layers"):
        load_quantized(bert_classifier, out)
    with pytest.raises(TypeError, match=r"model \(nn.Module\) or a callable"):
        load_quantized("GPT", out)
    with pytest.raises(TypeError, match="factory returned a int"):
        load_quantized(lambda: 3, out)
    with pytest.raises(FileNotFoundError, match="quantization.json is missing"):
        load_quantized(gpt_lm, tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileExistsError, match="already holds other files"):
        save_quantized(model, tmp_path / "other")
    assert (tmp_path / "other" / "config.json").exists()
    with pytest.raises(ValueError, match="no QuantizedLinear layers"):
        save_quantized(gpt_lm(), tmp_path / "q2")
    # an int8 buffer written as int64 is refused, not wrapped around
    with np.load(out / "quantized.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["h.0.attn.c_attn.weight_int8"] = arrays["h.0.attn.c_attn.weight_int8"].astype(np.int64)
    np.savez(out / "quantized.npz", **arrays)
    with pytest.raises(ValueError, match="expected int8 codes"):
        load_quantized(gpt_lm, out)
    (out / "quantization.json").write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(ValueError, match="is not a 'minillm-int8-weight-only' file"):
        load_quantized(gpt_lm, out)


# -- errors -------------------------------------------------------------------------------------
def _w():
    return mm.tensor(np.ones((3, 2), np.float32)).data


ERROR_CASES = [
    ("bits", lambda: quantize_per_channel(_w(), bits=4), ValueError,
     r"bits=4 is not supported; only 8 is supported"),
    ("bits_type", lambda: quantize_per_channel(_w(), bits="8"), TypeError, "bits must be an int"),
    ("tensor", lambda: quantize_per_channel(mm.tensor(np.ones((3, 2), np.float32))), TypeError,
     "pass tensor.data"),
    ("int_weight", lambda: quantize_per_channel(mm.tensor(np.ones((3, 2), np.int64)).data),
     TypeError, "must be floating point"),
    ("empty", lambda: quantize_per_channel(mm.tensor(np.ones((0, 2), np.float32)).data),
     ValueError, "non-empty"),
    ("axis", lambda: quantize_per_channel(_w(), axis=2), ValueError, "axis 2 is out of range"),
    ("dequantize_dtype", lambda: dequantize(_w(), mm.tensor(np.ones(2, np.float32)).data),
     TypeError, "q must be int8"),
    ("dequantize_shape", lambda: dequantize(mm.tensor(np.ones((3, 2), np.int8)).data,
                                            mm.tensor(np.ones(3, np.float32)).data),
     ValueError, r"scale must have shape \(2,\)"),
    ("modules_no_match", lambda: quantize_model(gpt_lm(), modules=("c_atn",)), ValueError,
     r"modules entries \['c_atn'\] match no Linear layer"),
    ("skip_no_match", lambda: quantize_model(gpt_lm(), skip=("classifer",)), ValueError,
     r"skip entries \['classifer'\] match no Linear layer"),
    ("modules_str", lambda: quantize_model(gpt_lm(), modules="c_attn"), TypeError,
     r"write modules=\('c_attn',\)"),
    ("no_linear", lambda: quantize_model(nn.Sequential(nn.Embedding(5, 4), nn.LayerNorm(4))),
     ValueError, "has no Linear layers"),
    ("all_skipped", lambda: quantize_model(nn.Sequential(nn.Linear(2, 2)), skip=("0",)),
     ValueError, "every Linear layer was left out"),
    ("not_a_model", lambda: quantize_model(nn.Linear(2, 2).weight), TypeError,
     "model must be an nn.Module"),
    ("root_linear", lambda: quantize_model(nn.Linear(2, 2)), ValueError,
     r"wrap it, e.g. nn.Sequential\(layer\)"),
    ("from_other", lambda: QuantizedLinear.from_linear(nn.LayerNorm(3)), TypeError,
     "expects an nn.Linear"),
    ("int_input", lambda: QuantizedLinear(3, 2)(mm.tensor(np.ones((1, 3), np.int64))), TypeError,
     "x must be floating point"),
]


@pytest.mark.parametrize("name,fn,exc,match", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors(name, fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


def test_quantizing_twice_is_an_error_and_nan_weights_are_refused():
    model = gpt_lm()
    quantize_model(model)
    with pytest.raises(ValueError, match="has no Linear layers"):
        quantize_model(model)
    w = np.ones((3, 2), np.float32)
    w[1, 1] = np.nan
    with pytest.raises(ValueError, match="contain NaN/Inf"):
        quantize_per_channel(mm.tensor(w).data)
        mm.backend.flush_checks()        # on a device the check is made at the next sync
