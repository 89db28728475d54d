"""Chapter 4 exercises (数学模型和公式): the formulas of chapters/ch04_math.md, written by hand.

Each check compares the student's NumPy function with minillm's own implementation (autograd
for gradients, ``F.layer_norm``, ``nn.SinusoidalPositionalEncoding``) on random float64 inputs,
or with a closed form: the rotation property of sinusoidal positions, and for the random MLM
corruption its exact rules plus its rates on 200k tokens (within 5 standard errors).
"""
from __future__ import annotations

import numpy as np

import minillm as mm
import minillm.functional as F

from .grading import (Check, CheckFailed, Exercise, Misconception, as_array, assert_close,
                      assert_equal, with_hints)


# -- 4.1 softmax backward ------------------------------------------------------------------
def _softmax_grad_reference(z, g):
    t = mm.tensor(z, requires_grad=True)
    (F.softmax(t, axis=-1) * mm.tensor(g)).sum().backward()
    return t.grad.numpy()


def _softmax_backward_case(shape, scale):
    def run(student, rng):
        z = rng.normal(size=shape) * scale
        g = rng.normal(size=shape)
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        assert_close(student(p.copy(), g.copy()), _softmax_grad_reference(z, g),
                     f"softmax_backward(p, grad_out) for shape {shape}")
    return run


def _softmax_backward_one_hot(student, rng):
    # a (nearly) one-hot p: the gradient must vanish in every direction
    z = np.array([[50.0, 0.0, 0.0, 0.0]])
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    g = rng.normal(size=z.shape)
    got = np.asarray(student(p, g))
    if np.abs(got).max() > 1e-10:
        raise CheckFailed("softmax_backward of a saturated softmax (p one-hot) must be ~0, got "
                          f"max |dz| = {np.abs(got).max():.3g}")


# -- 4.2 scaled dot-product attention ------------------------------------------------------
def _attention_case(shape_q, shape_k, causal):
    def run(student, rng):
        *batch, L, E = shape_q
        S = shape_k[-2]
        q = rng.normal(size=shape_q)
        k = rng.normal(size=(*batch, S, E))
        v = rng.normal(size=(*batch, S, shape_k[-1]))
        want = F.scaled_dot_product_attention(mm.tensor(q), mm.tensor(k), mm.tensor(v),
                                              is_causal=causal).numpy()
        assert_close(student(q.copy(), k.copy(), v.copy(), causal=causal), want,
                     f"attention for q {shape_q}, k/v {(*batch, S, E)}, causal={causal}")
    return run


def _attention_not_scaled_by_width(student, rng):
    # multi-head callers pass per-head q, k: the scale is 1/sqrt(d_k) of the last axis
    q = rng.normal(size=(3, 16)) * 3
    k = rng.normal(size=(5, 16)) * 3
    v = rng.normal(size=(5, 2))
    want = F.scaled_dot_product_attention(mm.tensor(q), mm.tensor(k), mm.tensor(v)).numpy()
    got = np.asarray(student(q, k, v, causal=False))
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-7, atol=1e-9):
        raise CheckFailed("with d_k = 16 the scores must be divided by sqrt(16) = 4 (check "
                          "the scale, and that softmax runs over the keys axis)")



def _attention_unscaled(q, k, v, causal=False):
    """Attention without the 1/sqrt(d_k) scale (a known mistake)."""
    scores = q @ np.swapaxes(k, -1, -2)
    if causal:
        L, S = scores.shape[-2:]
        scores = np.where(np.triu(np.ones((L, S), bool), k=1), -np.inf, scores)
    w = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (w / w.sum(axis=-1, keepdims=True)) @ v


_ATTENTION_MISTAKES = (
    Misconception("忘了把分数除以 sqrt(d_k)（缩放点积 (scaled dot-product)）：d_k 大时分数方差大，"
                  "softmax 饱和", _attention_unscaled),
)


# -- 4.3 layer norm forward and backward ---------------------------------------------------
def _layer_norm_reference(x, gamma, beta, g, eps):
    xt, gt, bt = (mm.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    y = F.layer_norm(xt, gt, bt, eps=eps)
    (y * mm.tensor(g)).sum().backward()
    return y.numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


def _layer_norm_case(shape, shift, scale, eps):
    def run(student, rng):
        x = rng.normal(size=shape) * scale + shift
        gamma = 1.0 + 0.5 * rng.normal(size=shape[-1])
        beta = rng.normal(size=shape[-1])
        g = rng.normal(size=shape)
        got = student(x.copy(), gamma.copy(), beta.copy(), g.copy(), eps=eps)
        if not isinstance(got, tuple) or len(got) != 4:
            raise CheckFailed("layer_norm_forward_backward must return a tuple "
                              "(y, dx, dgamma, dbeta)")
        want = _layer_norm_reference(x, gamma, beta, g, eps)
        for name, a, b in zip(("y", "dx", "dgamma", "dbeta"), got, want):
            # dx of a row with a large mean loses a few digits to cancellation in any formula
            assert_close(a, b, f"{name} for x of shape {shape} (mean {shift}, scale {scale}, "
                               f"eps={eps})", rtol=1e-7, atol=1e-9 * (1 + abs(shift)))
    return run


# -- 4.4 sinusoidal positional encoding ----------------------------------------------------
def _sinusoidal_case(n_positions, d_model):
    def run(student, rng):
        want = mm.nn.SinusoidalPositionalEncoding(d_model, max_len=n_positions).pe.numpy()
        assert_close(student(n_positions, d_model), want,
                     f"sinusoidal_positions({n_positions}, {d_model})", rtol=1e-10, atol=1e-12)
    return run


def _sinusoidal_rotation(student, rng):
    # closed form: each pair (2i, 2i+1) rotates by the angle w_i * k when pos moves by k
    n, d = 40, 12
    pe = as_array(student(n, d), f"sinusoidal_positions({n}, {d})", shape=(n, d),
                  dtype_kind="f")
    w = 10000.0 ** (-np.arange(0, d, 2) / d)
    k = int(rng.integers(1, 10))
    s, c = pe[:-k, 0::2], pe[:-k, 1::2]
    rot_s = np.cos(w * k) * s + np.sin(w * k) * c
    rot_c = -np.sin(w * k) * s + np.cos(w * k) * c
    assert_close(pe[k:, 0::2], rot_s, f"PE[pos + {k}, 2i] (must equal the rotation of "
                                      "PE[pos] by w_i k; w_i = 10000^(-2i/d))", atol=1e-10)
    assert_close(pe[k:, 1::2], rot_c, f"PE[pos + {k}, 2i+1]", atol=1e-10)
    assert_close(pe[0], np.tile([0.0, 1.0], d // 2), "PE[0] (sin 0 = 0, cos 0 = 1)",
                 atol=1e-12)


# -- 4.5 BERT's MLM corruption -------------------------------------------------------------
def _mlm_inputs(rng, shape, vocab_size, n_special):
    """Ids of shape ``shape`` in [n_special, vocab): [CLS]-like special at position 0, a
    [SEP]-like one after a random length and padding (id 0) after it."""
    b, t = shape
    ids = rng.integers(n_special, vocab_size, size=shape)
    lengths = rng.integers(t // 2, t + 1, size=b)
    pos = np.arange(t)
    ids[:, 0] = 1                                                   # [CLS]
    ids = np.where(pos == lengths[:, None] - 1, 2, ids)             # [SEP]
    ids = np.where(pos >= lengths[:, None], 0, ids)                 # [PAD]
    special = (pos == 0) | (pos >= lengths[:, None] - 1)
    return ids, special


def _mlm_result(student, ids, special, vocab_size, mask_id, rng):
    before = ids.copy()
    got = student(ids, special, vocab_size, mask_id, rng)
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailed("mlm_mask must return a tuple (inputs, labels)")
    inputs = as_array(got[0], "inputs", shape=ids.shape, dtype_kind="iu")
    labels = as_array(got[1], "labels", shape=ids.shape, dtype_kind="iu")
    if not np.array_equal(ids, before):
        raise CheckFailed("mlm_mask changed its argument ids in place: return new arrays")
    return inputs, labels


def _mlm_rules(student, rng):
    vocab, mask_id = 50, 4
    ids, special = _mlm_inputs(rng, (16, 24), vocab, 5)
    inputs, labels = _mlm_result(student, ids, special, vocab, mask_id, rng)
    selected = labels != -100
    if np.any(selected & special):
        raise CheckFailed(f"{int(np.sum(selected & special))} special positions (special_mask "
                          "True) were selected: special tokens are never selected")
    assert_equal(labels[selected], ids[selected],
                 "labels at the selected positions (must be the ORIGINAL ids)")
    assert_equal(inputs[~selected], ids[~selected],
                 "inputs at unselected positions (must be unchanged)")
    if inputs.min() < 0 or inputs.max() >= vocab:
        raise CheckFailed(f"inputs must be token ids in [0, vocab_size={vocab}), got values "
                          f"from {inputs.min()} to {inputs.max()}")
    if not selected.any():
        raise CheckFailed("no position was selected in 16 x 24 tokens: select each non-special "
                          "position with probability 0.15")


def _mlm_all_special(student, rng):
    ids = rng.integers(0, 30, size=(3, 7))
    special = np.ones(ids.shape, dtype=bool)
    inputs, labels = _mlm_result(student, ids, special, 30, 3, rng)
    assert_equal(labels, np.full(ids.shape, -100, dtype=labels.dtype),
                 "labels when every position is special (nothing may be selected)")
    assert_equal(inputs, ids, "inputs when every position is special (unchanged)")


def _mlm_rates(student, rng):
    # 200k tokens; every rate within 5 standard errors of its expected value
    vocab, mask_id = 1000, 4
    ids, special = _mlm_inputs(rng, (1000, 200), vocab, 5)
    inputs, labels = _mlm_result(student, ids, special, vocab, mask_id, rng)
    selected = labels != -100
    n = int(np.sum(~special))
    m = int(np.sum(selected))

    def rate(name, count, total, p):
        se = np.sqrt(p * (1 - p) / total)
        if abs(count / total - p) > 5 * se:
            raise CheckFailed(f"{name}: {count / total:.4f} of {total}, expected {p:.4f} "
                              f"(+- {5 * se:.4f})")

    rate("selected fraction of the non-special positions", m, n, 0.15)
    if m == 0:
        return
    to_mask = inputs[selected] == mask_id
    same = inputs[selected] == ids[selected]
    # a random token is uniform over the vocabulary: it may equal [MASK] or the original
    rate("selected positions that became mask_id", int(to_mask.sum()), m, 0.8 + 0.1 / vocab)
    rate("selected positions left unchanged", int(same.sum()), m, 0.1 + 0.1 / vocab)
    rate("selected positions replaced by another (random) token",
         int(np.sum(~to_mask & ~same)), m, 0.1 * (1 - 2 / vocab))
    randoms = inputs[selected][~to_mask & ~same]
    if randoms.size and len(np.unique(randoms)) < min(200, randoms.size // 10):
        raise CheckFailed(f"only {len(np.unique(randoms))} distinct random replacement tokens "
                          f"in {randoms.size}: draw them uniformly from [0, vocab_size)")

EXERCISES = [
    Exercise("4.1", "softmax_backward", "softmax backward: dz = p * (g - sum(g * p))", (
        Check("a (4, 7) batch", _softmax_backward_case((4, 7), 1.0)),
        Check("a (2, 3, 5) batch with large logits", _softmax_backward_case((2, 3, 5), 20.0)),
        Check("a saturated (one-hot) softmax", _softmax_backward_one_hot),
    )),
    Exercise("4.2", "scaled_dot_product_attention",
             "scaled dot-product attention softmax(Q K^T / sqrt(d_k)) V, optional causal mask", (
        Check("one sequence, no mask", _attention_case((4, 8), (6, 8), False)),
        Check("a batch of heads, causal", _attention_case((2, 3, 5, 4), (2, 3, 5, 6), True)),
        Check("the scale is 1/sqrt(d_k)", _attention_not_scaled_by_width),
    )),
    Exercise("4.3", "layer_norm_forward_backward",
             "layer norm y = gamma * (x - mu) / sqrt(var + eps) + beta and its gradients", (
        Check("a (4, 8) batch", _layer_norm_case((4, 8), 0.0, 1.0, 1e-5)),
        Check("a (2, 3, 6) batch, rows with a large mean and scale",
              _layer_norm_case((2, 3, 6), 30.0, 5.0, 1e-5)),
        Check("tiny variance: eps matters", _layer_norm_case((3, 5), 1.0, 1e-3, 1e-5)),
    )),
    Exercise("4.4", "sinusoidal_positions",
             "sinusoidal positions PE[pos, 2i] = sin(w_i pos), PE[pos, 2i+1] = cos(w_i pos)", (
        Check("64 positions, d_model = 16", _sinusoidal_case(64, 16)),
        Check("an odd d_model = 7", _sinusoidal_case(10, 7)),
        Check("the rotation property PE[pos + k] = R_k PE[pos]", _sinusoidal_rotation),
    )),
    Exercise("4.5", "mlm_mask", "BERT's MLM corruption: 15% selected, 80/10/10 mask/random/keep", (
        Check("the rules: labels, special tokens, unselected positions", _mlm_rules),
        Check("every position special: nothing selected", _mlm_all_special),
        Check("the rates on 200k tokens", _mlm_rates),
    )),
]

# 分层提示 (tiered hints): `minillm exercises hint 4.1` shows them one at a time.
HINTS = {
    "4.1": ("softmax 的雅可比矩阵是 diag(p) - p p^T；dL/dz = J^T grad_out，但不需要真的构造 J。",
            "把 (diag(p) - p p^T) grad_out 展开：第一项是 p * grad_out，第二项是 p 乘以标量 "
            "sum(grad_out * p)。",
            "合起来：dL/dz = p * (grad_out - (grad_out * p).sum(axis=-1, keepdims=True))。"),
    "4.2": ("分数矩阵 scores = q @ k 的转置（最后两个轴交换：np.swapaxes(k, -1, -2)），再除以 "
            "sqrt(d_k)，形状 (..., L, S)。",
            "因果掩码：mask = np.triu(np.ones((L, S), bool), k=1) 标出 j > i 的位置，"
            "scores = np.where(mask, -np.inf, scores)。",
            "稳定的 softmax：减去每行最大值再 exp，除以行和（axis=-1, keepdims=True）；"
            "最后返回 weights @ v。"),
    "4.3": ("前向：mu = x.mean(-1, keepdims=True)，var = ((x - mu)**2).mean(-1, keepdims=True)，"
            "x_hat = (x - mu) / sqrt(var + eps)，y = gamma * x_hat + beta。",
            "参数梯度：dbeta = grad_out 对前导轴求和，dgamma = (grad_out * x_hat) 对前导轴求和；"
            "可以 reshape(-1, d) 后 sum(axis=0)。",
            "输入梯度：令 g = gamma * grad_out，dx = (g - mean(g) - x_hat * mean(g * x_hat)) "
            "/ sqrt(var + eps)，均值沿最后一个轴 (keepdims=True)。"),
    "4.4": ("频率 w_i = 10000 ** (-2i / d_model)，i = 0, 1, ..., ceil(d_model / 2) - 1。",
            "角度表 angles = pos[:, None] * w[None, :]，形状 (n_positions, ceil(d_model / 2))，"
            "pos = np.arange(n_positions)。",
            "PE[:, 0::2] = sin(angles)；PE[:, 1::2] = cos(angles[:, :d_model // 2])"
            "（d_model 为奇数时 cos 列少一列）。"),
    "4.5": ("先抽第一个随机数组 u1 = rng.random(ids.shape)：selected = (u1 < 0.15) & ~special_mask；"
            "labels = np.where(selected, ids, -100)。",
            "再抽 u2 = rng.random(ids.shape) 决定三选一：u2 < 0.8 换成 mask_id，"
            "0.8 <= u2 < 0.9 换成随机词，其余不变（都只在 selected 处）。",
            "随机词：rng.integers(0, vocab_size, size=ids.shape)；inputs = ids.copy() 后用布尔掩码"
            "赋值；两个结果都 astype(np.int64)。"),
}

EXERCISES = with_hints(EXERCISES, HINTS, {"4.2": _ATTENTION_MISTAKES})
