"""minillm.retrieval: BM25 and TF-IDF scores against straightforward per-document Python
implementations, ranking and ties, the analyzers (English, Chinese, mixed, callables),
recall@k by hand, and the errors.

Retrieval is host-side text processing (NumPy only), so these tests touch no device.
"""
import math
from collections import Counter

import numpy as np
import pytest

from minillm.retrieval import BM25, TfidfRetriever, analyze, get_analyzer, recall_at_k

CORPUS = [
    "The cat sat on the mat.",
    "A dog chased the cat; the cat ran.",
    "Dogs and cats are pets.",
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply on Monday.",
    "The cat, the cat, the cat!",
    "",                                            # an empty document: length 0
]
QUERIES = ["cat", "the cat", "dog cat mat", "fox", "markets on monday", "cat cat",
           "unknown words only", "THE MAT."]


def toks(text):
    """An independent English tokenizer: lower-case, split on anything not a letter/digit."""
    out, cur = [], ""
    for ch in text.lower():
        if ch.isalnum():
            cur += ch
        elif cur:
            out.append(cur)
            cur = ""
    return out + ([cur] if cur else [])


def bm25_reference(corpus, query, k1, b):
    """BM25 by the textbook formula, one document at a time."""
    docs = [toks(d) for d in corpus]
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    out = []
    for d in docs:
        tf = Counter(d)
        s = 0.0
        for t in toks(query):                          # repeated query terms count each time
            df = sum(t in set(x) for x in docs)
            if df == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            f = tf[t]
            if f == 0:                                 # (0/0 when k1 = 0)
                continue
            s += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return np.array(out)


def tfidf_reference(corpus, query):
    """Sublinear TF-IDF cosine with a dense term x document matrix."""
    docs = [toks(d) for d in corpus]
    vocab = sorted({t for d in docs for t in d})
    n = len(docs)
    df = np.array([sum(t in d for d in docs) for t in vocab], dtype=float)
    idf = np.log((1 + n) / (1 + df)) + 1

    def vec(words):
        c = Counter(words)
        tf = np.array([c[t] for t in vocab], dtype=float)
        return np.where(tf > 0, 1 + np.log(np.maximum(tf, 1)), 0.0) * idf

    D = np.array([vec(d) for d in docs])
    q = vec(toks(query))
    norms = np.linalg.norm(D, axis=1) * np.linalg.norm(q)
    dots = D @ q
    return np.divide(dots, norms, out=np.zeros(n), where=norms > 0)


# -- scores against the references -----------------------------------------------------------
@pytest.mark.parametrize("k1,b", [(1.5, 0.75), (1.2, 0.75), (0.0, 0.75), (2.0, 0.0), (1.5, 1.0)])
@pytest.mark.parametrize("query", QUERIES)
def test_bm25_scores_match_the_formula(k1, b, query):
    got = BM25(k1=k1, b=b).fit(CORPUS).scores(query)
    np.testing.assert_allclose(got, bm25_reference(CORPUS, query, k1, b), rtol=1e-12, atol=1e-12)
    assert got.dtype == np.float64 and got.shape == (len(CORPUS),)


def test_bm25_idf_and_average_length_by_hand():
    r = BM25().fit(["a b", "a c c", "d"])
    assert r.avgdl == pytest.approx(2.0)
    idf_a = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))      # a is in 2 of 3 documents
    assert r.idf[r.vocabulary["a"]] == pytest.approx(idf_a, rel=1e-14)
    # "c" twice in a document of length 3: idf * 2 * 2.5 / (2 + 1.5 * (0.25 + 0.75 * 1.5))
    idf_c = math.log(1 + 2.5 / 1.5)
    want = idf_c * 2 * 2.5 / (2 + 1.5 * (0.25 + 0.75 * 3 / 2))
    assert r.scores("c")[1] == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("query", QUERIES)
def test_tfidf_scores_match_dense_cosine(query):
    got = TfidfRetriever().fit(CORPUS).scores(query)
    np.testing.assert_allclose(got, tfidf_reference(CORPUS, query), rtol=1e-12, atol=1e-12)
    assert np.all((got >= 0) & (got <= 1 + 1e-12))


def test_tfidf_document_equal_to_the_query_scores_one():
    r = TfidfRetriever().fit(["red green", "green blue blue", "red"])
    assert r.scores("green blue blue")[1] == pytest.approx(1.0, rel=1e-12)


def test_bm25_random_corpus_against_reference():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    corpus = [" ".join(rng.choice(words, size=rng.integers(1, 25))) for _ in range(60)]
    r = BM25(k1=1.5, b=0.75).fit(corpus)
    for _ in range(5):
        q = " ".join(rng.choice(words, size=4))
        np.testing.assert_allclose(r.scores(q), bm25_reference(corpus, q, 1.5, 0.75),
                                   rtol=1e-12, atol=1e-12)


# -- ranking -----------------------------------------------------------------------------------
def test_search_ranks_by_score_then_index():
    corpus = ["apple pie", "banana", "apple pie", "apple", "cherry", "apple pie"]
    r = BM25().fit(corpus)
    s = r.scores("apple pie")
    hits = r.search("apple pie", k=4)
    assert [d for d, _ in hits] == [0, 2, 5, 3]          # three equal scores in index order
    assert [v for _, v in hits] == pytest.approx([s[0], s[2], s[5], s[3]])
    assert s[0] == s[2] == s[5] > s[3] > 0
    # zero scores (no shared term) come last, also by index; k > N gives all N
    full = r.search("apple pie", k=100)
    assert [d for d, _ in full] == [0, 2, 5, 3, 1, 4]
    assert full[-1][1] == 0.0 and full[-2][1] == 0.0


@pytest.mark.parametrize("k", [1, 3, 7, 50, 200])
def test_search_top_k_equals_a_full_stable_sort(k):
    rng = np.random.default_rng(1)
    words = [f"t{i}" for i in range(6)]                  # few words: many tied scores
    corpus = [" ".join(rng.choice(words, size=3)) for _ in range(120)]
    r = BM25().fit(corpus)
    for q in ("t0", "t1 t2", "t3 t3 t5"):
        s = r.scores(q)
        order = sorted(range(len(s)), key=lambda i: (-s[i], i))[:k]
        assert [d for d, _ in r.search(q, k)] == order


def test_search_batch_equals_search():
    r = TfidfRetriever().fit(CORPUS)
    assert r.search_batch(QUERIES, k=3) == [r.search(q, k=3) for q in QUERIES]


def test_repeated_query_terms_count_each_time():
    r = BM25().fit(CORPUS)
    np.testing.assert_allclose(r.scores("cat cat"), 2 * r.scores("cat"), rtol=1e-12)


# -- analyzers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [
    ("The Cat sat, on THE mat!", ["the", "cat", "sat", "on", "the", "mat"]),
    ("Super Bowl 50 (NFL) in 2016.", ["super", "bowl", "50", "nfl", "in", "2016"]),
    ("Éléonore's café", ["éléonore", "s", "café"]),
    ("北京大学", ["北", "京", "大", "学", "北京", "京大", "大学"]),
    ("我爱北京。你呢？", ["我", "爱", "北", "京", "我爱", "爱北", "北京", "你", "呢", "你呢"]),
    ("2008年北京奥运会 Olympics", ["2008", "年", "北", "京", "奥", "运", "会", "年北", "北京",
                               "京奥", "奥运", "运会", "olympics"]),
    ("", []),
    ("?!", []),
])
def test_auto_analyzer(text, want):
    assert analyze(text) == want


def test_word_and_char_analyzers():
    assert analyze("Hello, 北京!", "word") == ["hello", "北京"]
    assert analyze("Ab c", "char") == ["a", "b", "ab", "c"]


def test_callable_analyzer_is_used_for_documents_and_queries():
    split = str.split                                   # case-sensitive whitespace tokens
    r = BM25(analyzer=split).fit(["Cat dog", "cat", "DOG dog"])
    assert r.search("cat", 1)[0][0] == 1 and r.scores("Cat")[1] == 0.0
    assert get_analyzer(split) is split


def test_chinese_retrieval_finds_the_paragraph():
    docs = ["北京是中国的首都，有故宫和长城。", "上海是中国最大的城市，位于长江口。",
            "广州位于珠江三角洲，以粤菜闻名。"]
    for retriever in (BM25(), TfidfRetriever()):
        retriever.fit(docs)
        assert retriever.search("中国的首都是哪里？", 1)[0][0] == 0
        assert retriever.search("珠江三角洲的城市", 1)[0][0] == 2
        assert retriever.search("长江口", 1)[0][0] == 1


# -- recall@k ----------------------------------------------------------------------------------
def test_recall_at_k_by_hand():
    r = BM25().fit(CORPUS)
    queries = ["cat", "fox", "markets", "pets"]
    ranks = {q: [d for d, _ in r.search(q, len(CORPUS))] for q in queries}
    gold = [ranks["cat"][2], 3, [0, ranks["markets"][0]], {ranks["pets"][1], ranks["pets"][4]}]
    # rank of the first gold document: 2, 0 (fox is only in doc 3), 0, 1
    assert ranks["fox"][0] == 3
    got = recall_at_k(r, queries, gold, ks=(1, 2, 3))
    assert got == {1: 0.5, 2: 0.75, 3: 1.0}
    assert recall_at_k(r, queries, gold, ks=[5]) == {5: 1.0}


def test_recall_at_k_counts_misses():
    r = BM25().fit(["a", "b", "c", "d"])
    assert recall_at_k(r, ["a", "b", "a"], [0, 2, 3], ks=(1, 4)) == {1: pytest.approx(1 / 3),
                                                                     4: 1.0}


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("call,err,match", [
    (lambda: BM25().fit([]), ValueError, "empty collection"),
    (lambda: BM25().fit("one string"), TypeError, "list of document strings"),
    (lambda: BM25().fit(["ok", 3]), TypeError, "document 1 must be a str"),
    (lambda: BM25().fit(["?!", ""]), ValueError, "nothing to index"),
    (lambda: BM25().scores("cat"), RuntimeError, "not fitted"),
    (lambda: TfidfRetriever().search("cat", 2), RuntimeError, "call .fit"),
    (lambda: BM25().fit(CORPUS).search("cat", 0), ValueError, "k must be >= 1"),
    (lambda: BM25().fit(CORPUS).search("cat", 1.5), TypeError, "k must be an int"),
    (lambda: BM25().fit(CORPUS).search("cat", True), TypeError, "k must be an int"),
    (lambda: BM25().fit(CORPUS).search_batch(["cat"], -1), ValueError, "k must be >= 1"),
    (lambda: BM25().fit(CORPUS).search_batch("cat", 1), TypeError, "list of query strings"),
    (lambda: BM25().fit(CORPUS).scores("..."), ValueError, "no tokens"),
    (lambda: BM25().fit(CORPUS).scores(None), TypeError, "query must be a str"),
    (lambda: BM25(analyzer="words"), ValueError, "analyzer must be one of"),
    (lambda: BM25(analyzer=lambda t: t).fit(["ab"]), TypeError, "must return a list of str"),
    (lambda: BM25(k1=-1), ValueError, "k1 must be >= 0"),
    (lambda: BM25(b=1.5), ValueError, "b must be in"),
    (lambda: BM25(b="0.5"), TypeError, "b must be a number"),
    (lambda: recall_at_k(BM25().fit(CORPUS), ["cat"], [0, 1]), ValueError, "1 queries but 2"),
    (lambda: recall_at_k(BM25().fit(CORPUS), ["cat"], [7]), ValueError, "not a document"),
    (lambda: recall_at_k(BM25().fit(CORPUS), ["cat"], [set()]), ValueError, "non-empty"),
    (lambda: recall_at_k(BM25().fit(CORPUS), ["cat"], ["0"]), ValueError, "not a document"),
    (lambda: recall_at_k(BM25().fit(CORPUS), ["cat"], [0], ks=(0,)), ValueError, "k must"),
    (lambda: recall_at_k(BM25().fit(CORPUS), [], []), ValueError, "no queries"),
])
def test_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_unknown_query_terms_score_zero_everywhere():
    for r in (BM25(), TfidfRetriever()):
        r.fit(CORPUS)
        assert not r.scores("zebra giraffe").any()
        assert [d for d, _ in r.search("zebra", 3)] == [0, 1, 2]
