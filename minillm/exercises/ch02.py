"""Chapter 2 exercises (核心概念): tokenization, n-gram models, perplexity and embeddings.

The checks compare the student's function with minillm's own implementations: the first merge
of ``BPETokenizer.train`` (its tie rule -- the smaller pair of ids -- is Python's tuple order
for single ASCII letters), ``NGramLM(2, "add_k")``, ``minillm.metrics.perplexity``, autograd of
``F.embedding`` and ``WordPieceTokenizer.tokenize``; plus small cases worked out by hand.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

import minillm as mm
import minillm.functional as F
from minillm.data.tokenizers.bpe import BPETokenizer
from minillm.data.tokenizers.wordpiece import WordPieceTokenizer
from minillm.metrics import perplexity
from minillm.models.ngram import UNK, NGramLM

from .grading import (Check, CheckFailed, Exercise, Misconception, as_array, assert_close,
                      assert_equal, with_hints)


def _random_words(rng, n_words, alphabet, max_len):
    """``n_words`` distinct random lower-case words (length >= 2) over ``alphabet``."""
    words = set()
    while len(words) < n_words:
        n = int(rng.integers(2, max_len + 1))
        words.add("".join(rng.choice(list(alphabet), size=n)))
    return sorted(words)


# -- 2.1 one BPE merge ---------------------------------------------------------------------
def _check_merge_result(result, expected_pair, expected_counts, what):
    if not isinstance(result, tuple) or len(result) != 2:
        raise CheckFailed(f"{what}: return a tuple (best_pair, new_word_counts), got "
                          f"{type(result).__name__}")
    pair, counts = result
    if not isinstance(pair, tuple):
        raise CheckFailed(f"{what}: best_pair must be a tuple of two symbols, got {pair!r}")
    assert_equal(pair, expected_pair, f"{what}: best_pair")
    if not isinstance(counts, dict):
        raise CheckFailed(f"{what}: new_word_counts must be a dict, got "
                          f"{type(counts).__name__}")
    wrong = sorted((w for w in set(counts) | set(expected_counts)
                    if counts.get(w) != expected_counts.get(w)), key=str)
    if wrong:
        w = wrong[0]
        raise CheckFailed(f"{what}: new_word_counts is wrong for {len(wrong)} word(s), e.g. "
                          f"{w!r}: got {counts.get(w)!r}, expected {expected_counts.get(w)!r}")


def _bpe_against_trainer(n_words, alphabet, max_len):
    def run(student, rng):
        words = _random_words(rng, n_words, alphabet, max_len)
        freq = {w: int(rng.integers(1, 6)) for w in words}
        texts = [w for w in words for _ in range(freq[w])]
        tok = BPETokenizer.train(texts, num_merges=1, min_frequency=1)
        expected_counts = Counter()
        for w in words:
            expected_counts[tuple(tok.tokenize(w))] += freq[w]
        word_counts = {tuple(w): freq[w] for w in words}
        given = dict(word_counts)
        result = student(word_counts)
        if word_counts != given:
            raise CheckFailed("bpe_merge_step changed its input dict: build a new one")
        _check_merge_result(result, tuple(tok.merges[0]), dict(expected_counts),
                            f"{n_words} random words over {alphabet!r} (minillm's BPE trainer)")
    return run


def _bpe_by_hand(student, rng):
    # Sennrich et al.'s example: (e, s) and (s, t) both occur 9 times; the tie goes to (e, s)
    corpus = {("l", "o", "w"): 5, ("l", "o", "w", "e", "r"): 2,
              ("n", "e", "w", "e", "s", "t"): 6, ("w", "i", "d", "e", "s", "t"): 3}
    expected = {("l", "o", "w"): 5, ("l", "o", "w", "e", "r"): 2,
                ("n", "e", "w", "es", "t"): 6, ("w", "i", "d", "es", "t"): 3}
    _check_merge_result(student(corpus), ("e", "s"), expected,
                        "low/lower/newest/widest (a tie between (e, s) and (s, t))")


def _bpe_multichar_and_collisions(student, rng):
    # multi-character symbols, a merge that makes two words equal, overlapping pairs
    corpus = {("a", "b", "c"): 3, ("ab", "c"): 2, ("a", "b", "a", "b"): 1, ("x", "y"): 1,
              ("b", "b", "b"): 1}
    expected = {("ab", "c"): 5, ("ab", "ab"): 1, ("x", "y"): 1, ("b", "b", "b"): 1}
    _check_merge_result(student(corpus), ("a", "b"), expected,
                        "symbols longer than one character, words that merge into one")
    corpus = {("a", "a", "a"): 4, ("b", "a"): 3}
    _check_merge_result(student(corpus), ("a", "a"), {("aa", "a"): 4, ("b", "a"): 3},
                        "('a','a','a') holds the pair twice and merges left to right")


# -- 2.2 add-k bigram probabilities ----------------------------------------------------------
def _bigram_case(n_seen, n_tokens, k):
    def run(student, rng):
        # ids 0 .. n_seen-1 all occur; the last id never does (NGramLM's <unk> plays it)
        V = n_seen + 1
        ids = np.concatenate([rng.permutation(n_seen), rng.integers(0, n_seen, n_tokens)])
        names = [f"w{i}" for i in range(n_seen)] + [UNK]
        lm = NGramLM(2, smoothing="add_k", k=k).fit([names[i] for i in ids])
        order = [lm.stoi[w] for w in names]
        want = np.stack([lm.next_distribution([names[h]])[order] for h in range(V)])
        got = as_array(student(ids.copy(), V, k), "P", shape=(V, V), dtype_kind="f")
        assert_close(got, want, f"P for {len(ids)} tokens, vocab_size={V}, k={k} "
                                "(compared with NGramLM(2, 'add_k'))")
    return run


# -- 2.3 perplexity with a padding mask ------------------------------------------------------
def _perplexity_case(B, T, pad_value):
    def run(student, rng):
        lengths = rng.integers(1, T + 1, size=B)
        lengths[0] = T
        mask = np.arange(T)[None, :] < lengths[:, None]
        log_probs = np.log(rng.uniform(0.01, 1.0, size=(B, T)))
        log_probs[~mask] = pad_value
        want = perplexity(-float(log_probs[mask].sum()), int(mask.sum()))
        got = student(log_probs.copy(), mask.copy())
        assert_close(np.asarray(got, dtype=np.float64), np.float64(want),
                     f"perplexity of a ({B}, {T}) batch with padding = {pad_value}")
    return run


def _perplexity_empty_mask(student, rng):
    log_probs = np.log(rng.uniform(0.1, 1.0, size=(2, 3)))
    try:
        got = student(log_probs, np.zeros((2, 3), dtype=bool))
    except ValueError:
        return
    raise CheckFailed(f"an all-False mask has no tokens to score: expected ValueError, got "
                      f"{got!r}")


def _perplexity_over_padding(log_probs, mask):
    """A known mistake: the mean runs over every position, padding included (padding counted
    as log p = 0)."""
    if not mask.any():
        raise ValueError("no real tokens")
    return float(np.exp(-np.where(mask, log_probs, 0.0).sum() / mask.size))


_PERPLEXITY_MISTAKES = (
    Misconception("平均时把填充位置 (padding) 也算进了分母 (averaged over padding too)：应只对 "
                  "mask 为 True 的真实词元取平均，分母是真实词元的个数 mask.sum()，不是 B * T",
                  _perplexity_over_padding),
)


# -- 2.4 embedding backward --------------------------------------------------------------------
def _embedding_case(ids_shape, V, D):
    def run(student, rng):
        ids = rng.integers(0, V, size=ids_shape)
        ids.reshape(-1)[:2] = 1                         # a repeated id, always
        g = rng.normal(size=ids_shape + (D,))
        W = mm.tensor(rng.normal(size=(V, D)), requires_grad=True)
        (F.embedding(mm.tensor(ids), W) * mm.tensor(g)).sum().backward()
        assert_close(student(ids.copy(), g.copy(), V), W.grad.numpy(),
                     f"dW for ids {ids_shape} (repeats included), vocab_size={V}, D={D}")
    return run


# -- 2.5 WordPiece --------------------------------------------------------------------------
def _wordpiece_random(student, rng):
    alphabet = "abcd"
    starts = set(_random_words(rng, 12, alphabet, 4)) | {"a", "b", "c"}
    conts = {"##" + w for w in _random_words(rng, 10, alphabet, 3)} | {"##a", "##b", "##c"}
    vocab = sorted(starts | conts)
    tok = WordPieceTokenizer(["[UNK]"] + vocab, special_tokens={"unk": "[UNK]"})
    words = _random_words(rng, 25, alphabet, 9)
    for w in words:
        want = tok.tokenize(w)
        got = student(w, set(vocab) | {"[UNK]"})
        if not isinstance(got, list):
            raise CheckFailed(f"wordpiece_tokenize must return a list of str, got "
                              f"{type(got).__name__}")
        assert_equal(got, want, f"wordpiece_tokenize({w!r}) (compared with "
                                "WordPieceTokenizer)")


def _wordpiece_by_hand(student, rng):
    vocab = {"[UNK]", "un", "unaff", "##aff", "##able", "##a", "##ble", "play", "##ing",
             "p", "##l"}
    cases = [("unaffable", ["unaff", "##able"]),       # longest first: unaff, not un
             ("playing", ["play", "##ing"]),
             ("pl", ["p", "##l"]),
             ("playx", ["[UNK]"]),                     # x matches nothing: the whole word
             ("ing", ["[UNK]"])]                       # "##ing" cannot start a word
    for word, want in cases:
        assert_equal(student(word, set(vocab)), want, f"wordpiece_tokenize({word!r})")


EXERCISES = [
    Exercise("2.1", "bpe_merge_step",
             "one BPE training step: count weighted pairs, merge the most frequent", (
        Check("6 random words, first merge of minillm's BPE trainer",
              _bpe_against_trainer(6, "abc", 5)),
        Check("30 random words, first merge of minillm's BPE trainer",
              _bpe_against_trainer(30, "abcdef", 7)),
        Check("low/lower/newest/widest with a tie", _bpe_by_hand),
        Check("multi-character symbols, colliding and overlapping words",
              _bpe_multichar_and_collisions),
    )),
    Exercise("2.2", "bigram_probs",
             "add-k smoothed bigram probabilities (c(h w) + k) / (c(h) + k |V|)", (
        Check("40 tokens, vocab 6, k = 1 (Laplace)", _bigram_case(5, 35, 1.0)),
        Check("300 tokens, vocab 12, k = 0.1", _bigram_case(11, 289, 0.1)),
    )),
    Exercise("2.3", "masked_perplexity", "perplexity exp(-mean log p) over non-padding tokens", (
        Check("a (4, 9) batch, padding holds 0", _perplexity_case(4, 9, 0.0)),
        Check("a (3, 20) batch, padding holds -inf", _perplexity_case(3, 20, -np.inf)),
        Check("an all-padding batch raises ValueError", _perplexity_empty_mask),
    )),
    Exercise("2.4", "embedding_backward",
             "embedding backward: scatter-add grad rows into the table (repeated ids add)", (
        Check("ids (12,), vocab 5", _embedding_case((12,), 5, 3)),
        Check("ids (2, 7), vocab 10 (some rows unused)", _embedding_case((2, 7), 10, 4)),
    )),
    Exercise("2.5", "wordpiece_tokenize",
             "WordPiece: greedy longest-match-first with ## continuations and [UNK]", (
        Check("25 random words against WordPieceTokenizer", _wordpiece_random),
        Check("hand-made cases (longest match, [UNK] for the whole word)", _wordpiece_by_hand),
    )),
]

# 分层提示 (tiered hints): `minillm exercises hint 2.1` shows them one at a time.
HINTS = {
    "2.1": ("先统计：遍历每个词的相邻位置 (word[j], word[j+1])，按词的次数加权计数；"
            "collections.Counter 很合适。注意 (\"a\", \"a\", \"a\") 里 (\"a\", \"a\") 出现两次。",
            "选最优对：best = max(计数)，并列时取 min(所有计数等于 best 的 pair)。",
            "合并：对每个词用 while 循环从左到右扫描，若 w[j], w[j+1] == best_pair 就输出 "
            "w[j] + w[j+1] 并 j += 2，否则输出 w[j] 并 j += 1；新字典里用 "
            "new[tuple(out)] = new.get(tuple(out), 0) + count 合并相同的词。"),
    "2.2": ("先数出二元计数矩阵 counts[h, w]：相邻对是 (ids[t-1], ids[t])，共 N-1 对。",
            "np.add.at(counts, (ids[:-1], ids[1:]), 1) 一次数完所有对，不需要 Python 循环；"
            "c(h) = counts.sum(axis=1)。",
            "P[h, w] = (c(h, w) + k) / (c(h) + k * vocab_size)，用 keepdims=True 让分母广播。"),
    "2.3": ("布尔索引 (boolean indexing) log_probs[mask] 只取出真实词元，填充处的 nan/-inf "
            "不会参与计算。",
            "N = mask.sum()；N == 0 时 raise ValueError(\"... no real tokens ...\")。",
            "困惑度 = exp(-(1/N) * sum(log_probs[mask]))，返回 float(...)。"),
    "2.4": ("一次查表相当于 one-hot 行向量乘以 W，所以 dW 的第 v 行是所有 ids == v 的位置上 "
            "grad_out 的和。",
            "把 ids 展平为 (M,)、grad_out 展平为 (M, D)：ids.reshape(-1)，grad_out.reshape(-1, D)。",
            "dW = np.zeros((vocab_size, D)); np.add.at(dW, flat_ids, flat_grad)。不要写 "
            "dW[ids] += g：重复的 id 只会被加一次。"),
    "2.5": ("维护 start = 0；每一步在 word[start:] 里找能在 vocab 中找到的最长片段。",
            "从 end = len(word) 往下试到 start + 1：piece = word[start:end]，start > 0 时 "
            "piece = \"##\" + piece；第一个在 vocab 里的就是最长匹配。",
            "若某个 start 一个片段都没找到，立即 return [\"[UNK]\"]（整个词未知）；"
            "否则把片段加入结果，start = end，直到 start == len(word)。"),
}

EXERCISES = with_hints(EXERCISES, HINTS, {"2.3": _PERPLEXITY_MISTAKES})
