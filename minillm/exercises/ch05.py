"""Chapter 5 exercises (项目实践): the data and decoding code of chapters/ch05_practice.md, and
the GPT of notebooks/ch05_build_gpt.ipynb built piece by piece.

Each check compares the student's NumPy function with minillm's own code where it does the
same job (the Collator, minillm.metrics, the sampler's filtering, ``generate``,
``models.gpt.CausalSelfAttention`` and ``Block`` loaded with the same weights, autograd of
``F.scaled_dot_product_attention`` and ``mm.gradcheck`` of a Function whose backward is the
student's) or with a brute-force reference written with plain Python loops on small inputs.
"""
from __future__ import annotations

import dataclasses

import numpy as np

import minillm as mm
import minillm.functional as F
from minillm.data import Collator
from minillm.models.base import Config, PreTrainedModel, sample_next
from minillm.models.gpt import Block, CausalSelfAttention, GPTConfig

from .ch03 import gradcheck_backward
from .grading import (Check, CheckFailed, Exercise, Misconception, as_array, assert_close,
                      assert_equal, with_hints)


def _pair(got, what):
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailed(f"{what} must return a tuple of two arrays")
    return got


# -- 5.1 next-token windows ----------------------------------------------------------------
def _windows_reference(ids, block_size, stride):
    starts = range(0, len(ids) - block_size, stride)       # needs block_size + 1 tokens
    x = [ids[s:s + block_size] for s in starts]
    y = [ids[s + 1:s + block_size + 1] for s in starts]
    return (np.array(x, dtype=np.int64).reshape(-1, block_size),
            np.array(y, dtype=np.int64).reshape(-1, block_size))


def _windows_case(n, block_size, stride):
    def run(student, rng):
        ids = rng.integers(0, 500, size=n)
        x, y = _pair(student(ids.copy(), block_size, stride), "next_token_windows")
        want_x, want_y = _windows_reference(ids, block_size, stride)
        what = f"next_token_windows(ids of length {n}, block_size={block_size}, stride={stride})"
        x = as_array(x, f"x of {what}", dtype_kind="iu")
        y = as_array(y, f"y of {what}", dtype_kind="iu")
        assert_equal(x, want_x, f"x of {what}")
        assert_equal(y, want_y, f"y of {what}")
    return run


# -- 5.2 padding a batch -------------------------------------------------------------------
def _pad_case(lengths, pad_id, max_length, pad_inside=False):
    def run(student, rng):
        seqs = [rng.integers(5, 100, size=n).tolist() for n in lengths]
        if pad_inside:          # GPT-2 pads with eos: real tokens may equal pad_id
            for s in seqs:
                s[len(s) // 2:] = [pad_id] * (len(s) - len(s) // 2)
        before = [list(s) for s in seqs]
        got = _pair(student(seqs, pad_id, max_length), "pad_batch")
        cut = seqs if max_length is None else [s[:max_length] for s in seqs]
        want = Collator(pad_id=pad_id).pad([{"input_ids": s} for s in cut])
        what = f"pad_batch for lengths {lengths}, pad_id={pad_id}, max_length={max_length}"
        ids = as_array(got[0], f"ids of {what}", dtype_kind="iu")
        mask = as_array(got[1], f"attention_mask of {what}", dtype_kind="iub")
        assert_equal(ids, want["input_ids"], f"ids of {what}")
        assert_equal(mask.astype(np.int64), want["attention_mask"],
                     f"attention_mask of {what} (1 for real tokens, 0 for padding)")
        if seqs != before:
            raise CheckFailed("pad_batch changed the input sequences: return new arrays")
    return run


# -- 5.3 classification metrics ------------------------------------------------------------
def _metrics_case(n, num_classes, absent=None, perfect=False):
    def run(student, rng):
        classes = [c for c in range(num_classes) if c != absent]
        y_true = rng.choice(classes, size=n)
        y_pred = y_true.copy() if perfect else \
            np.where(rng.random(n) < 0.6, y_true, rng.choice(classes, size=n))
        got = student(y_true.copy(), y_pred.copy(), num_classes)
        if not isinstance(got, dict) or set(got) != {"accuracy", "macro_f1", "confusion"}:
            raise CheckFailed("classification_metrics must return a dict with exactly the keys "
                              "'accuracy', 'macro_f1', 'confusion'")
        labels = list(range(num_classes))
        what = f"for {n} samples of {num_classes} classes"
        assert_close(got["accuracy"], mm.metrics.accuracy(y_true, y_pred), f"accuracy {what}",
                     rtol=1e-12)
        _, _, f1, _ = mm.metrics.precision_recall_f1(y_true, y_pred, average="macro",
                                                     labels=labels)
        assert_close(got["macro_f1"], f1, f"macro_f1 {what}" + (
            f" (class {absent} never occurs: its F1 counts as 0)" if absent is not None else ""),
            rtol=1e-12)
        cm = mm.metrics.confusion_matrix(y_true, y_pred, labels=labels)
        confusion = as_array(got["confusion"], f"confusion {what}", dtype_kind="iu")
        assert_equal(confusion, cm, f"confusion {what} (rows: true class, columns: predicted)")
    return run


# -- 5.4 top-k / top-p filtering -----------------------------------------------------------
def _filter_reference(logits, top_k, top_p):
    """Row by row, the definitions (ties with the last kept value are kept)."""
    out = np.array(logits, dtype=np.float64)
    for row in out.reshape(-1, out.shape[-1]):
        if top_k is not None and top_k < row.size:
            kth = sorted(row, reverse=True)[top_k - 1]
            row[row < kth] = -np.inf
        if top_p is not None and top_p < 1:
            p = np.exp(row - row.max())
            p /= p.sum()
            ps = sorted(p, reverse=True)
            threshold, before = ps[0], 0.0
            for q in ps:                    # keep while the mass before this token < top_p
                if before >= top_p:
                    break
                threshold, before = q, before + q
            row[p < threshold] = -np.inf
    return out


def _compare_filtered(got, want, what):
    got = as_array(got, what, shape=want.shape, dtype_kind="f")
    kept = np.isfinite(want)
    if np.any(np.isnan(got)) or np.any(np.isposinf(got)):
        raise CheckFailed(f"{what} contains nan or +inf")
    assert_equal(np.isfinite(got), kept, f"the kept entries of {what} (removed ones are -inf)")
    assert_close(got[kept], want[kept], f"the kept logits of {what} (unchanged values)")


def _filter_case(shape, top_k, top_p, ties=False):
    def run(student, rng):
        logits = rng.normal(size=shape) * 2
        if ties:                            # repeated values straddle the cut
            logits = np.round(logits)
        what = f"top_k_top_p_filter(logits {shape}, top_k={top_k}, top_p={top_p})"
        _compare_filtered(student(logits.copy(), top_k, top_p),
                          _filter_reference(logits, top_k, top_p), what)
    return run


def _shuffled_rows(rng, values, rows):
    """``rows`` random permutations of ``values`` (so the kept tokens move around)."""
    return np.stack([rng.permutation(np.asarray(values, dtype=np.float64)) for _ in range(rows)])


def _filter_ties(student, rng):
    # p of the logits below: 0.681 for 3.0 and 0.092 for each 1.0; both cuts fall in the tie
    logits = _shuffled_rows(rng, [3.0, 1.0, 1.0, 1.0, 0.0, -2.0, -2.0], 4)
    for top_k, top_p in ((2, None), (None, 0.75)):
        what = (f"top_k_top_p_filter(top_k={top_k}, top_p={top_p}) of rows that are "
                "permutations of [3, 1, 1, 1, 0, -2, -2] (the three tied 1.0 are all kept)")
        _compare_filtered(student(logits.copy(), top_k, top_p),
                          _filter_reference(logits, top_k, top_p), what)


def _filter_renormalises(student, rng):
    # p = (0.4, 0.3, 0.2, 0.1): top_k=2 leaves (0.571, 0.429), so top_p=0.5 keeps one token
    # (on the unfiltered p, 0.4 < 0.5 would wrongly keep a second one)
    logits = _shuffled_rows(rng, np.log([0.4, 0.3, 0.2, 0.1]), 3)
    _compare_filtered(student(logits.copy(), 2, 0.5), _filter_reference(logits, 2, 0.5),
                      "top_k_top_p_filter(top_k=2, top_p=0.5) of permutations of "
                      "log(0.4, 0.3, 0.2, 0.1) (top_p acts on the softmax of the top-k survivors)")


def _filter_matches_sampler(student, rng):
    # minillm's sampler, drawn 4000 times: it must draw exactly the tokens you keep
    v, top_k, top_p = 8, 6, 0.7
    logits = rng.normal(size=v) * 0.7
    got = as_array(student(logits[None].copy(), top_k, top_p),
                   f"top_k_top_p_filter(logits (1, {v}), {top_k}, {top_p})", shape=(1, v),
                   dtype_kind="f")
    gen = mm.backend.Generator(mm.backend.device("cpu"), int(rng.integers(2 ** 31)))
    draws = sample_next(np, np.repeat(logits[None], 4000, axis=0), gen, 1.0, top_k, top_p)
    sampled = np.zeros(v, dtype=bool)
    sampled[np.asarray(draws)] = True
    kept = np.isfinite(got[0])
    if not np.array_equal(kept, sampled):
        raise CheckFailed(f"you keep tokens {np.flatnonzero(kept).tolist()}, minillm's sampler "
                          f"(model.generate) draws tokens {np.flatnonzero(sampled).tolist()}")


# -- 5.5 greedy decoding -------------------------------------------------------------------
@dataclasses.dataclass
class _BigramConfig(Config):
    vocab_size: int = 2


class _Bigram(PreTrainedModel):
    """A model whose logits for the next token are row ``ids[t]`` of a table."""

    config_class = _BigramConfig

    def __init__(self, config, table):
        super().__init__(config)
        self.table = mm.nn.Embedding(config.vocab_size, config.vocab_size)
        self.table.load_state_dict({"weight": table})

    def forward(self, ids):
        return self.table(ids)


def _greedy_case(vocab, prompt_len, max_new_tokens, with_eos):
    def run(student, rng):
        table = rng.normal(size=(vocab, vocab))
        prompt = rng.integers(0, vocab, size=prompt_len).tolist()
        eos = None
        if with_eos:        # the token greedy decoding reaches third: it must stop there
            t = prompt[-1]
            for _ in range(3):
                t = int(np.argmax(table[t]))
            eos = t
        model = _Bigram(_BigramConfig(vocab), table)
        want = model.generate(np.array([prompt]), max_new_tokens, do_sample=False, eos_id=eos,
                              use_cache=False).numpy()[0].tolist()
        calls = []

        def next_logits(ids):
            calls.append(list(ids))
            return table[ids[-1]].copy()

        got = student(next_logits, list(prompt), max_new_tokens, eos)
        what = (f"greedy_decode(bigram table {vocab}x{vocab}, prompt of {prompt_len}, "
                f"max_new_tokens={max_new_tokens}, eos_id={eos})")
        if not isinstance(got, list) or not all(isinstance(t, (int, np.integer)) for t in got):
            raise CheckFailed(f"{what} must return a list of int token ids (pick the argmax "
                              "of the logits: an id, not a logit value)")
        assert_equal([int(t) for t in got], want, what)
        if len(calls) != len(want) - prompt_len:
            raise CheckFailed(f"{what} called next_logits_fn {len(calls)} times for "
                              f"{len(want) - prompt_len} new tokens: once per new token")
    return run


def _greedy_uses_history(student, rng):
    # logits that depend on the whole sequence so far, not only its last token
    vocab = 11
    w = rng.normal(size=(3, vocab))
    prompt = rng.integers(0, vocab, size=4).tolist()

    def next_logits(ids):
        feats = np.array([len(ids), sum(ids) % 7, ids[0]], dtype=np.float64)
        return feats @ w

    want = list(prompt)
    for _ in range(6):
        want.append(int(np.argmax(next_logits(want))))
    got = student(next_logits, list(prompt), 6, None)
    if not isinstance(got, list):
        raise CheckFailed(f"greedy_decode must return a list, got {type(got).__name__}")
    assert_equal([int(t) for t in got], want,
                 "greedy_decode with logits computed from the whole sequence (pass the full "
                 "sequence, prompt included, to next_logits_fn)")


# -- 5.6-5.8 the GPT of notebooks/ch05_build_gpt.ipynb, in NumPy ------------------------------
def _np_attention(q, k, v, causal, scale=None):
    """softmax(q k^T * scale + causal mask) v; scale defaults to 1/sqrt(d)."""
    s = q @ np.swapaxes(k, -1, -2) * (scale or 1 / np.sqrt(q.shape[-1]))
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True) @ v


def _np_self_attention(x, w_qkv, b_qkv, w_proj, b_proj, n_head, causal=True, width=False):
    """GPT's fused q|k|v attention; ``width``: scores scaled by 1/sqrt(C), a known mistake."""
    B, T, C = x.shape
    qkv = (x @ w_qkv + b_qkv).reshape(B, T, 3, n_head, C // n_head).transpose(2, 0, 3, 1, 4)
    y = _np_attention(qkv[0], qkv[1], qkv[2], causal, 1 / np.sqrt(C) if width else None)
    return y.transpose(0, 2, 1, 3).reshape(B, T, C) @ w_proj + b_proj


def _np_gelu(x, exact=False):
    if exact:                                   # x Phi(x): PyTorch's default, not GPT-2's
        return 0.5 * x * mm.backend.erfc(-x / np.sqrt(2))
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _np_block(x, p, n_head, post_ln=False, exact_gelu=False):
    """A GPT block in NumPy, or a known wrong one (post-LN, or the erf GELU)."""
    def ln(h, name):
        h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
        return h * p[name + ".weight"] + p[name + ".bias"]

    def attn(h):
        return _np_self_attention(h, *(p[f"attn.c_{n}"] for n in (
            "attn.weight", "attn.bias", "proj.weight", "proj.bias")), n_head)

    def mlp(h):
        h = _np_gelu(h @ p["mlp.c_fc.weight"] + p["mlp.c_fc.bias"], exact_gelu)
        return h @ p["mlp.c_proj.weight"] + p["mlp.c_proj.bias"]

    if post_ln:
        x = ln(x + attn(x), "ln_1")
        return ln(x + mlp(x), "ln_2")
    x = x + attn(ln(x, "ln_1"))
    return x + mlp(ln(x, "ln_2"))


def _gpt_weights(rng, C):
    """Random float64 weights of a Block, keyed as its state_dict."""
    shapes = {"ln_1.weight": (C,), "ln_1.bias": (C,), "attn.c_attn.weight": (C, 3 * C),
              "attn.c_attn.bias": (3 * C,), "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
              "ln_2.weight": (C,), "ln_2.bias": (C,), "mlp.c_fc.weight": (C, 4 * C),
              "mlp.c_fc.bias": (4 * C,), "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,)}
    out = {k: rng.normal(size=s) * (0.2 if k.endswith("bias") else 1 / np.sqrt(s[0]))
           for k, s in shapes.items()}
    for k in ("ln_1.weight", "ln_2.weight"):
        out[k] = 1 + 0.3 * rng.normal(size=C)
    return out


def _minillm_module(cls, state, C, n_head):
    module = cls(GPTConfig(vocab_size=8, block_size=32, n_layer=1, n_head=n_head, n_embd=C))
    module.load_state_dict({k: mm.tensor(v) for k, v in state.items()})
    return module.eval()


def _attn_args(weights):
    return [weights[f"attn.c_{n}"] for n in ("attn.weight", "attn.bias", "proj.weight",
                                             "proj.bias")]


def _self_attention_case(B, T, C, n_head, scale=1.0):
    def run(student, rng):
        x = rng.normal(size=(B, T, C)) * scale
        args = _attn_args(_gpt_weights(rng, C))
        module = _minillm_module(CausalSelfAttention, dict(zip(
            ("c_attn.weight", "c_attn.bias", "c_proj.weight", "c_proj.bias"), args)), C, n_head)
        with mm.no_grad():
            want = module(mm.tensor(x)).numpy()
        got = student(x.copy(), *[a.copy() for a in args], n_head)
        assert_close(as_array(got, "y", dtype_kind="f"), want,
                     f"causal_self_attention for x ({B}, {T}, {C}), n_head={n_head} (compared "
                     "with minillm.models.gpt.CausalSelfAttention, same weights)")
    return run


def _block_case(B, T, C, n_head, scale=1.0):
    def run(student, rng):
        x = rng.normal(size=(B, T, C)) * scale
        weights = _gpt_weights(rng, C)
        with mm.no_grad():
            want = _minillm_module(Block, weights, C, n_head)(mm.tensor(x)).numpy()
        got = student(x.copy(), {k: a.copy() for k, a in weights.items()}, n_head)
        assert_close(as_array(got, "y", dtype_kind="f"), want,
                     f"gpt_block for x ({B}, {T}, {C}), n_head={n_head}, inputs x{scale} "
                     "(compared with minillm.models.gpt.Block, same weights)")
    return run


def _causal_case(block):
    """Changing the tokens from position t0 on never changes an output before t0."""
    def run(student, rng):
        B, T, C, n_head, t0 = 2, 7, 8, 2, 4
        x = rng.normal(size=(B, T, C))
        weights = _gpt_weights(rng, C)
        changed = x.copy()
        changed[:, t0:] = rng.normal(size=(B, T - t0, C)) * 3

        def call(inputs):
            if block:
                return student(inputs.copy(), {k: a.copy() for k, a in weights.items()}, n_head)
            return student(inputs.copy(), *[a.copy() for a in _attn_args(weights)], n_head)

        name = "gpt_block" if block else "causal_self_attention"
        y = as_array(call(x), f"{name}(x)", shape=x.shape, dtype_kind="f")
        y2 = as_array(call(changed), f"{name}(x changed)", shape=x.shape, dtype_kind="f")
        assert_close(y2[:, :t0], y[:, :t0], f"{name} outputs at positions 0..{t0 - 1} after "
                     f"changing the tokens at positions {t0}..{T - 1} (a causal model must "
                     "not look ahead)", rtol=1e-10, atol=1e-12)
        if np.allclose(y2[:, t0:], y[:, t0:]):
            raise CheckFailed(f"{name}: changing the tokens at positions {t0}..{T - 1} did not "
                              "change their outputs")
    return run


def _sdpa_grads(q, k, v, g, causal):
    ts = [mm.tensor(a, requires_grad=True) for a in (q, k, v)]
    (F.scaled_dot_product_attention(*ts, is_causal=causal) * mm.tensor(g)).sum().backward()
    return [t.grad.numpy() for t in ts]


def _attention_backward_case(shape_q, S, dv, causal, scale=1.0):
    def run(student, rng):
        *batch, L, d = shape_q
        q = rng.normal(size=shape_q) * scale
        k, v = rng.normal(size=(*batch, S, d)) * scale, rng.normal(size=(*batch, S, dv))
        g = rng.normal(size=(*batch, L, dv))
        what = (f"attention_backward for q {shape_q}, k {k.shape}, v {v.shape}, "
                f"causal={causal}")
        got = student(q.copy(), k.copy(), v.copy(), g.copy(), causal)
        if not isinstance(got, tuple) or len(got) != 3:
            raise CheckFailed(f"{what} must return a tuple (dq, dk, dv)")
        for name, mine, want in zip(("dq", "dk", "dv"), got, _sdpa_grads(q, k, v, g, causal)):
            assert_close(as_array(mine, f"{name} of {what}", shape=want.shape, dtype_kind="f"),
                         want, f"{name} of {what} (compared with minillm's autograd of "
                         "F.scaled_dot_product_attention)")
        gradcheck_backward(lambda q_, k_, v_: _np_attention(q_, k_, v_, causal),
                           lambda q_, k_, v_, g_: student(q_, k_, v_, g_, causal),
                           (q, k, v), ("dq", "dk", "dv"), what)
    return run


def _attention_backward_wrong(rowsum=True, scaled=True):
    """The attention backward without the softmax's row-sum term, or without 1/sqrt(d)."""
    def wrong(q, k, v, grad_out, causal):
        c = 1 / np.sqrt(q.shape[-1])
        s = q @ np.swapaxes(k, -1, -2) * c
        if causal:
            s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        dp = grad_out @ np.swapaxes(v, -1, -2)
        ds = p * (dp - (p * dp).sum(-1, keepdims=True) if rowsum else dp) * (c if scaled else 1)
        return ds @ k, np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ grad_out
    return wrong


_ATTENTION_MISTAKES = (
    Misconception("忘了因果掩码 (causal mask)：每个位置都看到了后面的词元；分数矩阵中 key 位置 j > "
                  "query 位置 i 的项要设为 -inf 再做 softmax",
                  lambda x, *w: _np_self_attention(x, *w, causal=False)),
    Misconception("缩放用了 1/sqrt(C)（整个 n_embd）而不是每个头的 1/sqrt(head_dim)：多头注意力"
                  "里每个头的 q、k 只有 C / n_head 维", lambda x, *w: _np_self_attention(
                      x, *w, width=True)),
)
_BLOCK_MISTAKES = (
    Misconception("写成了后置层归一化 (post-LN)：在残差相加之后才做 LayerNorm；GPT-2 与 minillm 的"
                  "块是前置层归一化 (pre-LN)：先对 x 做 LayerNorm 再进子层，残差加的是原来的 x",
                  lambda x, p, h: _np_block(x, p, h, post_ln=True)),
    Misconception("用了精确的 GELU (erf 形式)；GPT-2 与 minillm 的 MLP 用 tanh 近似的 GELU "
                  "(approximate=\"tanh\")", lambda x, p, h: _np_block(x, p, h, exact_gelu=True)),
)
_ATTENTION_BACKWARD_MISTAKES = (
    Misconception("softmax 的反向漏了按行求和的那一项 (row-sum term)：dS 不是 P * dP，而是 "
                  "P 乘以 (dP 减去每行 P * dP 的和)", _attention_backward_wrong(rowsum=False)),
    Misconception("反向里漏了缩放因子 1/sqrt(d)：前向的分数是 q k^T / sqrt(d)，所以 dq、dk 也要"
                  "乘 1/sqrt(d) (forgot the scale in the backward)",
                  _attention_backward_wrong(scaled=False)),
)


EXERCISES = [
    Exercise("5.1", "next_token_windows",
             "causal-LM training windows: x = ids[s:s+T], y = ids[s+1:s+T+1]", (
        Check("non-overlapping windows (stride = block_size)", _windows_case(103, 8, 8)),
        Check("overlapping windows (stride < block_size)", _windows_case(50, 10, 3)),
        Check("an exact fit: the last window ends on the last token", _windows_case(33, 8, 4)),
        Check("too few tokens: no window", _windows_case(6, 6, 2)),
    )),
    Exercise("5.2", "pad_batch", "right padding with truncation and the attention mask", (
        Check("ragged batch, no max_length", _pad_case([5, 1, 9, 3], 0, None)),
        Check("truncation to max_length", _pad_case([12, 4, 7], 1, 6)),
        Check("an empty sequence, max_length longer than every sequence",
              _pad_case([0, 3, 2], 2, 10)),
        Check("real tokens equal to pad_id (GPT-2 pads with eos)",
              _pad_case([6, 4, 5], 50, None, pad_inside=True)),
    )),
    Exercise("5.3", "classification_metrics",
             "accuracy, macro F1 and the confusion matrix", (
        Check("3 classes, 60 samples", _metrics_case(60, 3)),
        Check("5 classes, one never occurs", _metrics_case(40, 5, absent=3)),
        Check("perfect predictions", _metrics_case(25, 4, perfect=True)),
    )),
    Exercise("5.4", "top_k_top_p_filter",
             "top-k then top-p (nucleus) filtering of logits, removed entries = -inf", (
        Check("top_k only", _filter_case((4, 10), 3, None)),
        Check("top_p only, tiny top_p keeps the top token", _filter_case((3, 9), None, 0.05)),
        Check("top_k then top_p on a (2, 3, 12) batch", _filter_case((2, 3, 12), 8, 0.6)),
        Check("rounded logits (many ties)", _filter_case((5, 8), 3, 0.5, ties=True)),
        Check("ties at the top-k and the top-p cut are kept", _filter_ties),
        Check("top_p acts on the renormalised top-k distribution", _filter_renormalises),
        Check("no filtering (None, None) and top_k >= vocabulary",
              lambda s, rng: (_filter_case((2, 5), None, None)(s, rng),
                              _filter_case((2, 5), 7, 1.0)(s, rng))),
        Check("the tokens minillm's sampler draws", _filter_matches_sampler),
    )),
    Exercise("5.5", "greedy_decode", "greedy decoding: append argmax(logits) until eos", (
        Check("12 new tokens, no eos", _greedy_case(9, 3, 12, False)),
        Check("stops after emitting eos", _greedy_case(13, 2, 10, True)),
        Check("max_new_tokens = 0 returns the prompt", _greedy_case(5, 4, 0, False)),
        Check("logits computed from the whole sequence", _greedy_uses_history),
    )),
    Exercise("5.6", "causal_self_attention",
             "GPT's multi-head causal self-attention forward (fused qkv, then c_proj)", (
        Check("B=2, T=5, C=8, 2 heads", _self_attention_case(2, 5, 8, 2)),
        Check("B=1, T=6, C=12, 3 heads, inputs x3", _self_attention_case(1, 6, 12, 3, 3.0)),
        Check("one head, one token", _self_attention_case(3, 1, 4, 1)),
        Check("causal: later tokens never change earlier outputs", _causal_case(block=False)),
    )),
    Exercise("5.7", "gpt_block", "a pre-LN GPT block: x + attn(ln_1(x)), then + mlp(ln_2(x))", (
        Check("B=2, T=6, C=8, 2 heads", _block_case(2, 6, 8, 2)),
        Check("B=1, T=5, C=12, 4 heads, inputs x4", _block_case(1, 5, 12, 4, 4.0)),
        Check("causal: later tokens never change earlier outputs", _causal_case(block=True)),
    )),
    Exercise("5.8", "attention_backward",
             "the backward of softmax(q k^T / sqrt(d)) v, with an optional causal mask", (
        Check("q (3, 4), k (5, 4), v (5, 2), not causal",
              _attention_backward_case((3, 4), 5, 2, False)),
        Check("causal, 2 x 2 heads, T=5, d=4", _attention_backward_case((2, 2, 5, 4), 5, 3, True)),
        Check("causal, large scores (a nearly one-hot softmax)",
              _attention_backward_case((1, 6, 8), 6, 4, True, scale=2.5)),
        Check("a batch with L != S, d=16, not causal",
              _attention_backward_case((2, 4, 16), 7, 3, False)),
    )),
]

# 分层提示 (tiered hints): `minillm exercises hint 5.1` shows them one at a time.
HINTS = {
    "5.1": ("窗口起点 s 满足 s + block_size + 1 <= N：starts = np.arange(0, N - block_size, stride)"
            "（N <= block_size 时为空）。",
            "索引矩阵 idx = starts[:, None] + np.arange(block_size)，形状 (n_windows, block_size)。",
            "x = ids[idx]，y = ids[idx + 1]，都 astype(np.int64)；没有窗口时返回 "
            "np.zeros((0, block_size), np.int64)。"),
    "5.2": ("先截断：cut = [list(s[:max_length]) if max_length is not None else list(s) ...]；"
            "lengths = 每个的长度，L = max(lengths, default=0)。",
            "ids = np.full((B, L), pad_id, np.int64)，再逐行写入 ids[b, :len] = cut[b]。",
            "掩码由长度得到，不要用 ids != pad_id：mask = (np.arange(L)[None, :] < "
            "lengths[:, None]).astype(np.int64)。"),
    "5.3": ("混淆矩阵：conf = np.zeros((C, C), np.int64)；np.add.at(conf, (y_true, y_pred), 1)；"
            "accuracy = (y_true == y_pred).mean()。",
            "TP = 对角线 np.diag(conf)；TP + FP = 列和 conf.sum(0)；TP + FN = 行和 conf.sum(1)。",
            "F1_c = 2 TP / (2 TP + FP + FN)，分母为 0 时记 0（np.where 或 np.divide(..., where=)）；"
            "macro_f1 = F1_c 的平均。"),
    "5.4": ("top_k：每行第 k 大的值 kth = np.sort(logits, -1)[..., -k]，保留 logits >= kth[..., None]，"
            "其余设为 -inf。",
            "top_p：对剩下的项算 softmax 得 p，降序排序 sp，cum = np.cumsum(sp, -1)；"
            "保留“之前的累计质量” cum - sp < top_p 的项。",
            "阈值：thr = np.where(kept, sp, np.inf).min(-1, keepdims=True)（被保留的最小概率）；"
            "保留 p >= thr 的项（并列也保留），其余设为 -inf。"),
    "5.5": ("ids = list(prompt_ids)，然后 for _ in range(max_new_tokens) 的普通循环。",
            "每步：logits = next_logits_fn(ids)；tok = int(np.argmax(logits))——下标，不是 logit 的值。",
            "ids.append(tok)；若 eos_id is not None 且 tok == eos_id 就 break；返回 ids。"),
    "5.6": ("先做融合投影 qkv = x @ w_qkv + b_qkv，形状 (B, T, 3C)；列的顺序是 q | k | v，每部分"
            "再按头切开：reshape(B, T, 3, n_head, hd)（hd = C // n_head）。",
            "transpose(2, 0, 3, 1, 4) 得 (3, B, n_head, T, hd)，取出 q、k、v；分数 "
            "s = q @ k.swapaxes(-1, -2) / sqrt(hd)，形状 (B, n_head, T, T)。",
            "因果掩码：np.triu(np.ones((T, T), bool), 1) 处设为 -inf，按最后一轴做稳定的 softmax，"
            "乘 v；再 transpose(0, 2, 1, 3).reshape(B, T, C) 合并各头，最后 @ w_proj + b_proj。"),
    "5.7": ("块的结构是两次“先归一化、再进子层、再加回残差” (pre-LN)：x = x + attn(ln_1(x))；"
            "x = x + mlp(ln_2(x))。注意力部分就是练习 5.6。",
            "LayerNorm：(h - mean) / sqrt(var + 1e-5) * weight + bias，均值和有偏方差都沿最后一轴 "
            "(keepdims=True)。",
            "MLP：gelu(h @ c_fc.weight + c_fc.bias) @ c_proj.weight + c_proj.bias，GELU 用 tanh 近似 "
            "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3)))。"),
    "5.8": ("先重算前向并保存 P：s = q k^T / sqrt(d)（因果时上三角设为 -inf），P = softmax(s)，"
            "out = P v。dv 最简单：dv = P^T @ grad_out。",
            "dP = grad_out @ v^T；softmax 的反向：dS = P * (dP - sum(P * dP, 最后一轴, keepdims))。"
            "被掩码的位置 P = 0，dS 自然为 0。",
            "分数里有 1/sqrt(d)：dq = dS @ k / sqrt(d)，dk = dS^T @ q / sqrt(d)（转置用 "
            "np.swapaxes(x, -1, -2)）；返回 (dq, dk, dv)。"),
}
MISCONCEPTIONS = {"5.6": _ATTENTION_MISTAKES, "5.7": _BLOCK_MISTAKES,
                  "5.8": _ATTENTION_BACKWARD_MISTAKES}

EXERCISES = with_hints(EXERCISES, HINTS, MISCONCEPTIONS)
