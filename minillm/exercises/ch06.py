"""Chapter 6 exercises (实际应用场景): the small algorithms behind the applications of
chapters/ch06_applications.md, written by hand.

* 6.1 BIO tags -> entity spans and 6.2 entity-level F1 are checked against
  :func:`minillm.metrics.extract_entities` / :func:`minillm.metrics.ner_f1` (conlleval's rules);
* 6.3 the best answer span against a brute-force search over all (start, end) pairs and
  minillm's QA post-processing (:func:`minillm.data.collators.postprocess_qa`);
* 6.4 BM25 against :class:`minillm.retrieval.BM25`;
* 6.5 mean pooling against the pooling of
  :class:`minillm.models.heads.ModelForSequenceClassification` and a per-row loop.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import minillm as mm
from minillm.data.collators import postprocess_qa
from minillm.metrics import extract_entities, ner_f1
from minillm.models.heads import ModelForSequenceClassification
from minillm.retrieval import BM25

from .grading import Check, CheckFailed, Exercise, as_array, assert_close, assert_equal, with_hints

_BIO = ("O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")


def _random_tags(rng, n):
    return [str(t) for t in rng.choice(_BIO, size=n)]


# -- 6.1 BIO -> spans ----------------------------------------------------------------------
def _spans_reference(tags):
    # minillm's ends are inclusive (seqeval's convention); the exercise's are exclusive
    return [(t, s, e + 1) for t, s, e in extract_entities(tags)]


def _as_spans(got, what):
    if not isinstance(got, (list, tuple)):
        raise CheckFailed(f"{what} must be a list of (type, start, end) tuples, got "
                          f"{type(got).__name__}")
    spans = []
    for item in got:
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise CheckFailed(f"{what}: every span must be a tuple (type, start, end), got "
                              f"{item!r}")
        spans.append(tuple(item))
    return spans


def _check_spans(student, tags):
    got = _as_spans(student(list(tags)), f"bio_to_spans({tags})")
    assert_equal(got, _spans_reference(tags), f"bio_to_spans({tags})")


def _spans_fixed(student, rng):
    for tags in (["B-PER", "I-PER", "O", "B-LOC"],
                 ["B-PER", "B-PER", "I-PER", "I-PER"],          # B- always starts a new entity
                 ["O", "I-PER", "I-PER", "O", "I-LOC"],         # an I- without a B- starts one
                 ["B-PER", "I-LOC", "I-LOC", "B-ORG", "I-PER"],  # a type change starts one
                 ["I-ORG"]):
        _check_spans(student, tags)


def _spans_random(student, rng):
    for n in (1, 7, 20, 40):
        _check_spans(student, _random_tags(rng, n))


def _spans_empty(student, rng):
    for tags in ([], ["O"], ["O", "O", "O"]):
        _check_spans(student, tags)


# -- 6.2 entity F1 -------------------------------------------------------------------------
def _noisy_copy(rng, tags, p):
    return [str(rng.choice(_BIO)) if rng.random() < p else t for t in tags]


def _check_f1(student, gold, pred, what):
    ref = ner_f1(gold, pred)
    want = np.array([ref["precision"], ref["recall"], ref["f1"]])
    got = student([list(g) for g in gold], [list(p) for p in pred])
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise CheckFailed(f"entity_f1 must return a tuple (precision, recall, f1), got {got!r}")
    assert_close(np.array([float(v) for v in got]), want,
                 f"(precision, recall, f1) for {what}", rtol=1e-12, atol=1e-12)


def _f1_random(student, rng):
    gold = [_random_tags(rng, int(n)) for n in rng.integers(3, 15, size=8)]
    pred = [_noisy_copy(rng, g, 0.25) for g in gold]
    _check_f1(student, gold, pred, "8 sentences, 25% of predicted tags replaced at random")


def _f1_boundaries(student, rng):
    # right type, wrong boundary: not correct; an extra I- token changes the entity
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "I-ORG"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "I-ORG"]]
    _check_f1(student, gold, pred, f"gold {gold}, predicted {pred}")
    gold = [["B-PER", "I-PER", "I-PER", "O"]]
    pred = [["B-PER", "I-PER", "B-PER", "O"]]
    _check_f1(student, gold, pred, f"gold {gold}, predicted {pred}")


def _f1_zero_division(student, rng):
    gold = [_random_tags(rng, 10) + ["B-PER"], ["O", "B-LOC"]]
    nothing = [["O"] * len(g) for g in gold]
    _check_f1(student, gold, nothing, "no predicted entity (precision 0/0 -> 0)")
    _check_f1(student, nothing, gold, "no gold entity (recall 0/0 -> 0)")
    _check_f1(student, nothing, nothing, "no entity at all (every 0/0 -> 0)")


# -- 6.3 best span -------------------------------------------------------------------------
def _span_brute_force(s_log, e_log, max_len):
    best, arg = -np.inf, None
    for s in range(len(s_log)):
        for e in range(s, min(s + max_len, len(e_log))):
            if s_log[s] + e_log[e] > best:
                best, arg = s_log[s] + e_log[e], (s, e)
    return arg


def _span_postprocess(s_log, e_log, max_len):
    # one feature whose token i covers character i of the context "ABC...": the answer text
    # then tells which tokens minillm's QA post-processing chose
    n = len(s_log)
    context = "".join(chr(65 + i) for i in range(n))
    feature = {"offsets": [(i, i + 1) for i in range(n)], "example_index": 0}
    text = postprocess_qa([{"id": "q", "context": context}], [feature], s_log[None],
                          e_log[None], max_answer_length=max_len)["q"]
    start = context.index(text)
    return start, start + len(text) - 1


def _as_span(got, what):
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(f"{what} must return a tuple (start, end), got {got!r}")
    for v in got:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise CheckFailed(f"{what}: start and end must be ints, got {got!r}")
    return int(got[0]), int(got[1])


def _span_case(n, max_len):
    def run(student, rng):
        s_log, e_log = rng.normal(size=n) * 2, rng.normal(size=n) * 2
        what = f"best_span for T={n}, max_answer_len={max_len}"
        want = _span_brute_force(s_log, e_log, max_len)
        if want != _span_postprocess(s_log, e_log, max_len):
            raise RuntimeError("the brute force and postprocess_qa disagree")
        assert_equal(_as_span(student(s_log.copy(), e_log.copy(), max_len), what), want, what)
    return run


def _span_constraints(student, rng):
    n = 10
    s_log, e_log = rng.normal(size=n), rng.normal(size=n)
    s_log[7], e_log[2] = 10.0, 10.0           # the unconstrained best has end < start
    s_log[1], e_log[6] = 6.0, 6.0             # the best allowed pair is 5 tokens long ...
    for max_len in (8, 3, 1):                 # ... too long for 3 and 1
        what = f"best_span with the best (start, end) pair forbidden, max_answer_len={max_len}"
        assert_equal(_as_span(student(s_log.copy(), e_log.copy(), max_len), what),
                     _span_brute_force(s_log, e_log, max_len), what)


def _span_ties_and_one_token(student, rng):
    for n, max_len in ((9, 3), (6, 6), (1, 5)):
        s_log = rng.integers(0, 3, size=n).astype(np.float64)
        e_log = rng.integers(0, 3, size=n).astype(np.float64)
        what = f"best_span for integer logits with ties {s_log}, {e_log}, max_len={max_len} " \
               "(smallest start, then smallest end)"
        assert_equal(_as_span(student(s_log.copy(), e_log.copy(), max_len), what),
                     _span_brute_force(s_log, e_log, max_len), what)


# -- 6.4 BM25 ------------------------------------------------------------------------------
def _bm25_reference(query, docs, k1, b):
    bm25 = BM25(k1=k1, b=b, analyzer=str.split).fit([" ".join(d) for d in docs])
    return bm25.scores(" ".join(query))


def _bm25_case(k1, b, n_docs, with_empty):
    def run(student, rng):
        words = [f"w{i}" for i in range(8)]
        docs = [[str(w) for w in rng.choice(words, size=int(rng.integers(1, 12)))]
                for _ in range(n_docs)]
        docs[0] = docs[0] + ["w0"] * 4                          # a saturated term frequency
        if with_empty:
            docs[-1] = []
        query = [str(w) for w in rng.choice(words, size=3)] + ["w0", "w0", "unseen"]
        want = _bm25_reference(query, docs, k1, b)
        got = student(list(query), [list(d) for d in docs], k1, b)
        assert_close(got, want, f"bm25_scores for {n_docs} documents, k1={k1}, b={b}",
                     rtol=1e-10, atol=1e-12)
    return run


# -- 6.5 mean pooling ----------------------------------------------------------------------
def _pool_reference(hidden, mask):
    owner = SimpleNamespace(pooling="mean")   # pool() only reads self.pooling
    return ModelForSequenceClassification.pool(owner, mm.tensor(hidden), None,
                                               mm.tensor(mask.astype(bool))).numpy()


def _pool_case(b, t, h, padding):
    def run(student, rng):
        hidden = rng.normal(size=(b, t, h))
        lengths = rng.integers(1, t + 1, size=b)
        lengths[0] = 1
        pos = np.arange(t)[None, :]
        real = pos >= t - lengths[:, None] if padding == "left" else pos < lengths[:, None]
        hidden[~real] = 1e3 * rng.normal(size=(int((~real).sum()), h))   # padding must not count
        mask = real.astype(np.int64)
        want = _pool_reference(hidden, mask)
        loop = np.stack([hidden[i, real[i]].mean(axis=0) for i in range(b)])
        if not np.allclose(want, loop, rtol=1e-12, atol=1e-12):
            raise RuntimeError("minillm's mean pooling and the per-row loop disagree")
        assert_close(student(hidden.copy(), mask.copy()), want,
                     f"mean_pool for hidden {(b, t, h)} with {padding} padding")
    return run


def _pool_no_padding(student, rng):
    hidden = rng.normal(size=(2, 4, 3))
    mask = np.ones((2, 4), dtype=np.int64)
    got = as_array(student(hidden.copy(), mask), "mean_pool without padding", shape=(2, 3))
    assert_close(got, hidden.mean(axis=1), "mean_pool without padding (a plain mean over T)")


EXERCISES = [
    Exercise("6.1", "bio_to_spans", "BIO tags -> entity spans (type, start, end), end exclusive", (
        Check("fixed sequences: B- starts, stray I-, type changes", _spans_fixed),
        Check("random BIO sequences (conlleval rules)", _spans_random),
        Check("empty and all-O sequences have no entity", _spans_empty),
    )),
    Exercise("6.2", "entity_f1", "entity-level micro precision, recall and F1 for NER", (
        Check("random gold tags and noisy predictions", _f1_random),
        Check("a wrong boundary is a wrong entity", _f1_boundaries),
        Check("no predicted / no gold entities: 0/0 -> 0", _f1_zero_division),
    )),
    Exercise("6.3", "best_span", "the best QA answer span: max start + end logits, "
             "start <= end < start + max_answer_len", (
        Check("random logits, T=12, max_answer_len=4", _span_case(12, 4)),
        Check("random logits, T=20, max_answer_len=30", _span_case(20, 30)),
        Check("the best unconstrained pair is forbidden", _span_constraints),
        Check("ties and a one-token context", _span_ties_and_one_token),
    )),
    Exercise("6.4", "bm25_scores", "Okapi BM25 scores with Lucene's idf", (
        Check("6 documents, k1=1.5, b=0.75", _bm25_case(1.5, 0.75, 6, False)),
        Check("an empty document, k1=1.2, b=0 (no length normalisation)",
              _bm25_case(1.2, 0.0, 5, True)),
        Check("k1=0 (presence only), b=1", _bm25_case(0.0, 1.0, 4, False)),
    )),
    Exercise("6.5", "mean_pool", "mean pooling of token vectors under an attention mask", (
        Check("right padding (B=4, T=6, H=5)", _pool_case(4, 6, 5, "right")),
        Check("left padding (B=3, T=7, H=2)", _pool_case(3, 7, 2, "left")),
        Check("no padding: the plain mean", _pool_no_padding),
    )),
]

# 分层提示 (tiered hints): `minillm exercises hint 6.1` shows them one at a time.
HINTS = {
    "6.1": ("只遍历一遍标签，记住当前打开的实体 (type, start)；在末尾追加一个哨兵 \"O\"，"
            "这样最后一个实体也会被关闭。",
            "遇到 \"O\"、任何 \"B-\"、或类型不同的 \"I-\" 时，先关闭打开的实体：append((type, start, i))。",
            "然后：\"B-X\" 总是打开新实体 (X, i)；\"I-X\" 若当前打开的不是 X 类型，也打开新实体 (X, i)；"
            "\"O\" 不打开任何实体。"),
    "6.2": ("把每句的实体变成带句子编号 k 的集合：{(k, type, start, end) for span in bio_to_spans(...)}，"
            "真值和预测各一个集合。",
            "correct = 两个集合交集的大小；predicted、gold = 各自的大小。",
            "precision = correct / predicted，recall = correct / gold，"
            "f1 = 2 correct / (predicted + gold)，分母为 0 时为 0.0；都转成 float。"),
    "6.3": ("构造 (T, T) 分数矩阵 scores = start[:, None] + end[None, :]，scores[s, e] 是片段 (s, e) 的分数。",
            "禁止的位置：e < s 或 e >= s + max_answer_len。用 d = np.arange(T)[None, :] - "
            "np.arange(T)[:, None] 得 e - s，把 d < 0 或 d >= max_answer_len 的地方设为 -inf。",
            "np.argmax 在行优先 (row-major) 下正好给出最小 start、再最小 end；"
            "s, e = np.unravel_index(np.argmax(scores), scores.shape)，返回 (int(s), int(e))。"),
    "6.4": ("建词表 V（文档中出现的所有词），词频矩阵 tf (N, V)；|d| = tf.sum(1)，avgdl = |d| 的均值；"
            "n(t) = (tf > 0).sum(0)。",
            "idf(t) = log(1 + (N - n(t) + 0.5) / (n(t) + 0.5))；每项权重 "
            "w = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))。",
            "查询变成计数向量 q (V,)（只数出现在 V 中的词，重复的词累加），分数 = w @ q。"),
    "6.5": ("把掩码变成浮点并扩展到 (B, T, 1)：m = attention_mask[..., None].astype(float)，这样能与 hidden 广播。",
            "分子：(hidden * m).sum(axis=1)，形状 (B, H)。",
            "分母：m.sum(axis=1)，形状 (B, 1)；pooled = 分子 / 分母。"),
}

EXERCISES = with_hints(EXERCISES, HINTS)
