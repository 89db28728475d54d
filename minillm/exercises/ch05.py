"""Chapter 5 exercises (项目实践): the data and decoding code of chapters/ch05_practice.md.

Each check compares the student's NumPy function with minillm's own code where it does the
same job (the Collator, minillm.metrics, the sampler's filtering, ``generate``) or with a
brute-force reference written with plain Python loops on small inputs.
"""
from __future__ import annotations

import dataclasses

import numpy as np

import minillm as mm
from minillm.data import Collator
from minillm.models.base import Config, PreTrainedModel, sample_next

from .grading import Check, CheckFailed, Exercise, as_array, assert_close, assert_equal, with_hints


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
}

EXERCISES = with_hints(EXERCISES, HINTS)
