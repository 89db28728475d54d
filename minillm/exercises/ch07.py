"""Chapter 7 exercises (工具和资源推荐): moving weights between PyTorch / Hugging Face
Transformers and minillm (chapters/ch07_tools.md).

Every check loads the student's arrays into minillm modules and compares what they compute:

* 7.1 converted PyTorch ``nn.Linear`` weights are loaded into :class:`minillm.nn.Linear` layers
  (``load_state_dict``), whose outputs must equal PyTorch's formula ``x @ W.T + b`` in NumPy;
* 7.2 / 7.3 splitting and merging attention heads: the student's function replaces one step
  of multi-head attention (minillm's ``F.scaled_dot_product_attention`` per head), and the
  result must equal minillm's GPT-2 attention layer (``CausalSelfAttention``) with the same
  weights; plus a closed form with a loop over heads;
* 7.4 unpacking GPT-2's fused ``c_attn`` into per-head q, k, v projections, checked the same
  way against the GPT-2 attention layer and against the slices of ``x @ W + b``.
"""
from __future__ import annotations

import numpy as np

import minillm as mm
import minillm.functional as F
from minillm.models.gpt import CausalSelfAttention, GPTConfig

from .grading import Check, CheckFailed, Exercise, as_array, assert_close, with_hints


# -- 7.1 PyTorch Linear -> minillm Linear ---------------------------------------------------
class _Net(mm.nn.Module):
    """Three minillm Linear layers (the last without bias): 4 -> 6 -> 6 -> 2."""

    def __init__(self):
        super().__init__()
        self.fc1 = mm.nn.Linear(4, 6)
        self.fc2 = mm.nn.Linear(6, 6)                 # square: only the values show a transpose
        self.fc3 = mm.nn.Linear(6, 2, bias=False)

    def forward(self, x):
        return self.fc3(self.fc2(self.fc1(x)))


def _load(module, converted, what):
    if not isinstance(converted, dict):
        raise CheckFailed(f"{what} must return a dict name -> array, got "
                          f"{type(converted).__name__}")
    arrays = {k: as_array(v, f"{what}[{k!r}]", dtype_kind="f") for k, v in converted.items()}
    try:
        module.load_state_dict(arrays)
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise CheckFailed(f"minillm's load_state_dict refused the converted weights: {e}") \
            from None


def _linear_one_layer(student, rng):
    w, b = rng.normal(size=(3, 5)), rng.normal(size=3)          # PyTorch: (out, in)
    x = rng.normal(size=(7, 5))
    layer = mm.nn.Linear(5, 3)
    _load(layer, student({"weight": w.copy(), "bias": b.copy()}), "torch_to_minillm_linear")
    with mm.no_grad():
        got = layer(mm.tensor(x)).numpy()
    assert_close(got, x @ w.T + b, "minillm Linear(5, 3) output with the converted weights "
                 "(expected PyTorch's x @ W.T + b)")


def _linear_three_layers(student, rng):
    state = {"fc1.weight": rng.normal(size=(6, 4)), "fc1.bias": rng.normal(size=6),
             "fc2.weight": rng.normal(size=(6, 6)), "fc2.bias": rng.normal(size=6),
             "fc3.weight": rng.normal(size=(2, 6))}
    x = rng.normal(size=(2, 3, 4))
    net = _Net()
    _load(net, student({k: v.copy() for k, v in state.items()}), "torch_to_minillm_linear")
    with mm.no_grad():
        got = net(mm.tensor(x)).numpy()
    h = x @ state["fc1.weight"].T + state["fc1.bias"]
    h = h @ state["fc2.weight"].T + state["fc2.bias"]
    assert_close(got, h @ state["fc3.weight"].T, "output of fc3(fc2(fc1(x))) with the converted "
                 "weights (fc2 is square 6x6, fc3 has no bias)")


def _linear_input_untouched(student, rng):
    state = {"a.weight": rng.normal(size=(3, 3)), "a.bias": rng.normal(size=3),
             "b.weight": rng.normal(size=(2, 3))}
    before = {k: v.copy() for k, v in state.items()}
    got = student(state)
    if not isinstance(got, dict) or list(got) != list(before):
        raise CheckFailed(f"torch_to_minillm_linear must return a dict with the same keys in "
                          f"the same order {list(before)}, got "
                          f"{list(got) if isinstance(got, dict) else type(got).__name__}")
    if list(state) != list(before) or any(not np.array_equal(state[k], before[k])
                                          for k in before):
        raise CheckFailed("torch_to_minillm_linear modified its input dict or arrays: build "
                          "and return a new dict")
    assert_close(got["a.weight"], before["a.weight"].T, "converted 'a.weight' (square 3x3)")
    assert_close(got["a.bias"], before["a.bias"], "converted 'a.bias' (unchanged)")


# -- GPT-2 attention, the reference of 7.2-7.4 ----------------------------------------------
def _attention_layer(rng, d, n_head):
    """minillm's GPT-2 attention with random weights and biases, and those arrays."""
    attn = CausalSelfAttention(GPTConfig(vocab_size=8, block_size=16, n_layer=1,
                                         n_head=n_head, n_embd=d))
    weights = {"c_attn.weight": rng.normal(size=(d, 3 * d)) / np.sqrt(d),
               "c_attn.bias": rng.normal(size=3 * d),
               "c_proj.weight": rng.normal(size=(d, d)) / np.sqrt(d),
               "c_proj.bias": rng.normal(size=d)}
    attn.load_state_dict(weights)
    attn.eval()
    return attn, weights


def _layer_output(attn, x):
    with mm.no_grad():
        return attn(mm.tensor(x)).numpy()


def _split_loop(x, n_heads):
    d = x.shape[-1] // n_heads
    return np.stack([x[..., h * d:(h + 1) * d] for h in range(n_heads)], axis=1)


def _merge_loop(y):
    return np.concatenate([y[:, h] for h in range(y.shape[1])], axis=-1)


def _heads_attention(q, k, v):
    """Causal attention of every head at once, (B, H, T, D) each: minillm's sdpa."""
    return F.scaled_dot_product_attention(mm.tensor(q), mm.tensor(k), mm.tensor(v),
                                          is_causal=True).numpy()


def _attention_case(b, t, d, n_head, split, merge, what):
    """Attention computed with ``split``/``merge`` vs minillm's GPT-2 attention layer."""
    def run(student, rng):
        attn, w = _attention_layer(rng, d, n_head)
        x = rng.normal(size=(b, t, d))
        qkv = x @ w["c_attn.weight"] + w["c_attn.bias"]
        heads = [split(student, qkv[..., i * d:(i + 1) * d], n_head) for i in range(3)]
        y = merge(student, _heads_attention(*heads))
        got = as_array(y, what, shape=(b, t, d)) @ w["c_proj.weight"] + w["c_proj.bias"]
        assert_close(got, _layer_output(attn, x),
                     f"GPT-2 attention (B={b}, T={t}, d={d}, {n_head} heads) computed with "
                     f"your {what}")
    return run


def _student_split(student, x, n_head):
    return as_array(student(x.copy(), n_head), f"split_heads(x of {x.shape}, {n_head})",
                    shape=(x.shape[0], n_head, x.shape[1], x.shape[2] // n_head))


def _loop_split(student, x, n_head):
    return _split_loop(x, n_head)


def _student_merge(student, y):
    return student(y.copy())


def _loop_merge(student, y):
    return _merge_loop(y)


# -- 7.2 split_heads ----------------------------------------------------------------------
def _split_closed_form(student, rng):
    for shape, h in (((2, 5, 12), 3), ((1, 4, 6), 1), ((3, 2, 4), 4)):
        x = rng.normal(size=shape)
        assert_close(student(x.copy(), h), _split_loop(x, h),
                     f"split_heads(x of shape {shape}, n_heads={h})")


# -- 7.3 merge_heads ----------------------------------------------------------------------
def _merge_closed_form(student, rng):
    for shape in ((2, 3, 5, 4), (1, 1, 4, 6), (3, 4, 2, 1)):
        y = rng.normal(size=shape)
        assert_close(student(y.copy()), _merge_loop(y), f"merge_heads(x of shape {shape})")


# -- 7.4 split_packed_qkv -----------------------------------------------------------------
_QKV_KEYS = ("q_weight", "k_weight", "v_weight", "q_bias", "k_bias", "v_bias")


def _unpacked(student, w, b, n_head):
    d = w.shape[0]
    got = student(w.copy(), b.copy(), n_head)
    what = f"split_packed_qkv(c_attn {w.shape}, n_heads={n_head})"
    if not isinstance(got, dict) or set(got) != set(_QKV_KEYS):
        raise CheckFailed(f"{what} must return a dict with the keys {list(_QKV_KEYS)}, got "
                          f"{sorted(got) if isinstance(got, dict) else type(got).__name__}")
    out = {}
    for key in _QKV_KEYS:
        shape = (n_head, d, d // n_head) if key.endswith("weight") else (n_head, d // n_head)
        out[key] = as_array(got[key], f"{what}[{key!r}]", shape=shape)
    return out


def _qkv_attention_case(b, t, d, n_head):
    def run(student, rng):
        attn, w = _attention_layer(rng, d, n_head)
        p = _unpacked(student, w["c_attn.weight"], w["c_attn.bias"], n_head)
        x = rng.normal(size=(b, t, d))
        q, k, v = (np.einsum("btc,hce->bhte", x, p[f"{n}_weight"]) + p[f"{n}_bias"][:, None]
                   for n in "qkv")
        y = _merge_loop(_heads_attention(q, k, v)) @ w["c_proj.weight"] + w["c_proj.bias"]
        assert_close(y, _layer_output(attn, x),
                     f"GPT-2 attention (d={d}, {n_head} heads) computed per head from your "
                     "q, k, v weights")
    return run


def _qkv_slices(student, rng):
    d, n_head = 8, 4
    hd = d // n_head
    w, b = rng.normal(size=(d, 3 * d)), rng.normal(size=3 * d)
    p = _unpacked(student, w, b, n_head)
    x = rng.normal(size=(3, d))
    packed = x @ w + b
    for i, n in enumerate("qkv"):
        for h in range(n_head):
            cols = slice(i * d + h * hd, i * d + (h + 1) * hd)
            assert_close(x @ p[f"{n}_weight"][h] + p[f"{n}_bias"][h], packed[:, cols],
                         f"x @ {n}_weight[{h}] + {n}_bias[{h}] (expected columns "
                         f"{cols.start}:{cols.stop} of x @ c_attn_weight + c_attn_bias)")


EXERCISES = [
    Exercise("7.1", "torch_to_minillm_linear",
             "PyTorch nn.Linear weights (out, in) -> minillm Linear (in, out)", (
        Check("one Linear(5, 3) layer", _linear_one_layer),
        Check("three layers: a square weight, a layer without bias", _linear_three_layers),
        Check("a new dict, the input untouched", _linear_input_untouched),
    )),
    Exercise("7.2", "split_heads", "split features into heads: (B, T, C) -> (B, H, T, C/H)", (
        Check("GPT-2 attention, 2 heads", _attention_case(2, 5, 8, 2, _student_split,
                                                          _loop_merge, "split_heads")),
        Check("GPT-2 attention, 4 heads", _attention_case(1, 6, 12, 4, _student_split,
                                                          _loop_merge, "split_heads")),
        Check("closed form, 1 to 4 heads", _split_closed_form),
    )),
    Exercise("7.3", "merge_heads", "concatenate heads: (B, H, T, D) -> (B, T, H*D)", (
        Check("GPT-2 attention, 2 heads", _attention_case(2, 5, 8, 2, _loop_split,
                                                          _student_merge, "merge_heads")),
        Check("GPT-2 attention, 3 heads", _attention_case(1, 4, 9, 3, _loop_split,
                                                          _student_merge, "merge_heads")),
        Check("closed form, 1 to 4 heads", _merge_closed_form),
    )),
    Exercise("7.4", "split_packed_qkv",
             "GPT-2's packed c_attn (d, 3d) -> per-head q, k, v weights and biases", (
        Check("GPT-2 attention, d=8, 2 heads", _qkv_attention_case(2, 5, 8, 2)),
        Check("GPT-2 attention, d=12, 3 heads", _qkv_attention_case(1, 6, 12, 3)),
        Check("the columns of x @ W + b per head", _qkv_slices),
    )),
]

# 分层提示 (tiered hints): `minillm exercises hint 7.1` shows them one at a time.
HINTS = {
    "7.1": ("PyTorch 的 Linear 计算 y = x @ W.T + b，minillm 计算 y = x @ W + b：两者的 W 互为转置。",
            "遍历 state.items()：二维数组（权重）转置，一维数组（偏置）原样复制。",
            "new[k] = v.T.copy() if v.ndim == 2 else v.copy()；方阵权重转置前后形状相同，"
            "只有数值能说明你转置了没有。"),
    "7.2": ("头 h 的特征是 x[b, t, h*D:(h+1)*D]，D = C // n_heads。",
            "先 reshape 成 (B, T, H, D)：最后一个轴按连续的 D 个一段拆开。",
            "再 transpose(0, 2, 1, 3) 把头轴移到前面，得到 (B, H, T, D)。"),
    "7.3": ("out[b, t, h*D:(h+1)*D] = x[b, h, t, :]：直接 reshape (B, H, T, D) 会把位置和头混在一起。",
            "先 transpose(0, 2, 1, 3) 得到 (B, T, H, D)。",
            "再 reshape(B, T, H * D)（transpose 之后 reshape 会自动复制成连续内存）。"),
    "7.4": ("权重的 3d 列依次是 q、k、v 三段，每段 d 列又分成 n_heads 个头，每头 D 列："
            "列下标 = part * d + h * D + j。",
            "W.reshape(d, 3, n_heads, D)，偏置 b.reshape(3, n_heads, D)。",
            "权重 transpose(1, 2, 0, 3) 得到 (3, n_heads, d, D)，第 0/1/2 个分别是 q/k/v_weight；"
            "偏置按第一个轴取 [0]、[1]、[2] 得 (n_heads, D)。"),
}

EXERCISES = with_hints(EXERCISES, HINTS)
