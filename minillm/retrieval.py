"""Sparse retrieval: BM25 and TF-IDF over an inverted index, on NumPy.

Retrieval is the first half of open-domain QA ("retrieve, then read"): given a question,
find the few passages of a large collection that are likely to hold its answer, so that a
reader model only has to look at those. Both retrievers here score a document by the query
terms it contains, weighting rare terms more (inverse document frequency)::

    bm25 = BM25(k1=1.5, b=0.75).fit(paragraphs)
    bm25.search("Which NFL team won Super Bowl 50?", k=5)    # [(doc_index, score), ...]
    recall_at_k(bm25, questions, gold_paragraph_ids, ks=(1, 5, 20))

**BM25** (Robertson & Zaragoza 2009; the idf is Lucene's, which is never negative). For a
query ``q`` (its terms, repeated terms counted each time) and a document ``d``::

    score(q, d) = sum_{t in q}  idf(t) * tf(t, d) * (k1 + 1)
                                / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = log(1 + (N - n(t) + 0.5) / (n(t) + 0.5))

``tf(t, d)``: how often ``t`` occurs in ``d``; ``|d|``: the number of tokens of ``d``;
``avgdl``: the mean of ``|d|`` over the collection; ``N``: the number of documents;
``n(t)``: how many of them contain ``t``. ``k1`` controls how fast repeated occurrences
saturate (``k1 = 0``: presence only), ``b`` how much long documents are penalised
(``b = 0``: not at all). The factor ``(k1 + 1)`` (kept from Robertson's formula, dropped by
Lucene >= 8) scales every score alike and does not change the ranking.

**TF-IDF** (the vector-space model, with scikit-learn's smoothed idf and DrQA's sublinear
term frequency): documents and the query become vectors with weights
``w(t, x) = (1 + log tf(t, x)) * idf(t)``, ``idf(t) = log((1 + N) / (1 + n(t))) + 1``, and
the score is their cosine (in ``[0, 1]``).

**Tokens** (``analyzer``): ``"auto"`` (default) lower-cases the text and takes its words
(runs of letters and digits; punctuation is dropped); inside a run of Chinese (CJK)
characters, which has no spaces to find words with, it takes every character and every
pair of adjacent characters (unigrams + bigrams: a cheap stand-in for a word segmenter).
``"word"``: lower-cased ``\\w+`` runs only; ``"char"``: characters + bigrams everywhere; or
any callable ``text -> list of str``. No stop words are removed: idf already makes frequent
words count little.

**Index**: a vocabulary ``term -> id`` and, per term, its *postings*: the ids of the
documents containing it and its frequency in each, stored for all terms in three flat arrays
(``indptr``, ``doc_ids``, ``tfs``, the CSR layout of a sparse term x document matrix). The
part of each posting's weight that does not depend on the query is computed once in
:meth:`fit`; a query then gathers the postings of its few terms and adds them up per
document with ``np.bincount``: no Python loop over documents.

**Ranking**: :meth:`search` returns the ``min(k, N)`` best documents by score, highest
first; equal scores (also zero: documents sharing no term with the query) are ordered by
document index, so results are deterministic.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = ["BM25", "TfidfRetriever", "recall_at_k", "analyze", "get_analyzer", "ANALYZERS"]

ANALYZERS = ("auto", "word", "char")

# CJK ideographs (the ranges BERT's tokenizer treats as single-character words)
_CJK = ("\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ceaf"
        "\U0002f800-\U0002fa1f")
_AUTO_RE = re.compile(f"[{_CJK}]+|[^\\W{_CJK}]+")      # a CJK run, or a word without CJK
_CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD_RE = re.compile(r"\w+")


def _chars_and_bigrams(run):
    """``"北京大学"`` -> ``["北", "京", "大", "学", "北京", "京大", "大学"]``."""
    return list(run) + [run[i:i + 2] for i in range(len(run) - 1)]


def _auto(text):
    out = []
    for m in _AUTO_RE.finditer(text.lower()):
        run = m.group()
        if _CJK_RUN.fullmatch(run):
            out += _chars_and_bigrams(run)
        else:
            out.append(run)
    return out


def _word(text):
    return _WORD_RE.findall(text.lower())


def _char(text):
    out = []
    for run in _WORD_RE.findall(text.lower()):
        out += _chars_and_bigrams(run)
    return out


_BUILTIN = {"auto": _auto, "word": _word, "char": _char}


def get_analyzer(analyzer):
    """The tokenizing function for ``analyzer`` (a name in :data:`ANALYZERS` or a callable)."""
    if callable(analyzer):
        return analyzer
    if isinstance(analyzer, str) and analyzer in _BUILTIN:
        return _BUILTIN[analyzer]
    raise ValueError(f"analyzer must be one of {', '.join(map(repr, ANALYZERS))} or a callable "
                     f"text -> list of str, got {analyzer!r}")


def analyze(text, analyzer="auto"):
    """The index terms of ``text`` under ``analyzer`` (see the module docstring)."""
    return _terms(get_analyzer(analyzer), text, "text")


def _terms(fn, text, what):
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    terms = fn(text)
    if not isinstance(terms, (list, tuple)) or not all(isinstance(t, str) for t in terms):
        raise TypeError(f"the analyzer must return a list of str; for {what} {text[:40]!r} it "
                        f"returned {type(terms).__name__}"
                        + ("" if not isinstance(terms, (list, tuple)) else " with non-str items"))
    return terms


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int >= 1, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1 (the number of documents to return), got {k}")
    return int(k)


def top_k(scores, k):
    """Indices of the ``k`` largest ``scores``, highest first, ties by lower index."""
    n = len(scores)
    neg = -np.asarray(scores, dtype=np.float64)
    if k < n:
        kth = np.partition(neg, k - 1)[k - 1]
        cand = np.flatnonzero(neg <= kth)             # everything at least as good (ties too)
    else:
        cand = np.arange(n)
    order = cand[np.lexsort((cand, neg[cand]))]       # by score, then by index
    return order[:k]


class _SparseRetriever:
    """The inverted index and the query-time machinery shared by BM25 and TF-IDF."""

    def __init__(self, analyzer="auto"):
        self.analyzer = analyzer
        self._analyze = get_analyzer(analyzer)
        self.vocabulary = None

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, documents):
        """Index ``documents`` (a sequence of str); returns ``self``."""
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise TypeError(f"fit expects a list of document strings, got "
                            f"{type(documents).__name__}")
        if len(documents) == 0:
            raise ValueError("fit got an empty collection: give at least one document")
        vocab, term_ids, doc_of = {}, [], []
        for i, doc in enumerate(documents):
            ids = [vocab.setdefault(t, len(vocab))
                   for t in _terms(self._analyze, doc, f"document {i}")]
            term_ids.append(np.asarray(ids, dtype=np.int64))
            doc_of.append(np.full(len(ids), i, dtype=np.int64))
        n_docs, n_terms = len(documents), len(vocab)
        if n_terms == 0:
            raise ValueError(f"none of the {n_docs} documents has a single token under "
                             f"analyzer={self.analyzer!r}: nothing to index")
        terms, docs = np.concatenate(term_ids), np.concatenate(doc_of)
        # one posting per distinct (term, document) pair, sorted by term then document
        pairs, tfs = np.unique(terms * n_docs + docs, return_counts=True)
        post_term, self.doc_ids = pairs // n_docs, pairs % n_docs
        self.tfs = tfs.astype(np.float64)
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(post_term,
                                                                 minlength=n_terms))])
        self.vocabulary = vocab
        self.n_docs = n_docs
        self.doc_len = np.bincount(docs, minlength=n_docs).astype(np.float64)
        self.doc_freq = np.diff(self.indptr).astype(np.float64)
        self._post_term = post_term
        self._index()
        return self

    def _index(self):
        raise NotImplementedError

    # -- querying ---------------------------------------------------------------------------
    def _query_terms(self, query):
        """``(term ids, counts)`` of the query's terms that are in the vocabulary."""
        if self.vocabulary is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call .fit(documents) "
                               "before querying")
        terms = _terms(self._analyze, query, "the query")
        if not terms:
            raise ValueError(f"the query {query!r} has no tokens under analyzer="
                             f"{self.analyzer!r}; nothing to search for")
        ids = [self.vocabulary[t] for t in terms if t in self.vocabulary]
        uniq, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
        return uniq, counts.astype(np.float64)

    def _gather(self, term_ids):
        """Posting positions of ``term_ids`` and, for each, which query term it belongs to."""
        lo, hi = self.indptr[term_ids], self.indptr[term_ids + 1]
        lengths = hi - lo
        owner = np.repeat(np.arange(len(term_ids)), lengths)
        # positions lo[j], lo[j] + 1, ..., hi[j] - 1 for every term j, without a loop:
        # a running count minus where term j's run starts in it, plus lo[j]
        run_start = np.cumsum(lengths) - lengths
        return np.repeat(lo - run_start, lengths) + np.arange(lengths.sum()), owner

    def scores(self, query):
        """The score of every document for ``query``: a float64 array of length N."""
        raise NotImplementedError

    def search(self, query, k=10):
        """The ``min(k, N)`` best documents: ``[(doc_index, score)]``, best first (equal
        scores by lower document index)."""
        k = _check_k(k)
        s = self.scores(query)
        return [(int(i), float(s[i])) for i in top_k(s, k)]

    def search_batch(self, queries, k=10):
        """:meth:`search` for each query of a list: a list of result lists."""
        if isinstance(queries, str) or not isinstance(queries, Sequence):
            raise TypeError(f"search_batch expects a list of query strings, got "
                            f"{type(queries).__name__}")
        k = _check_k(k)
        return [self.search(q, k) for q in queries]

    def __repr__(self):
        state = f"{self.n_docs} documents, {len(self.vocabulary)} terms" \
            if self.vocabulary is not None else "not fitted"
        return f"{type(self).__name__}({self._params()}analyzer={self.analyzer!r}; {state})"

    def _params(self):
        return ""


class BM25(_SparseRetriever):
    """Okapi BM25 ranking (see the module docstring for the formula)."""

    def __init__(self, k1=1.5, b=0.75, analyzer="auto"):
        for name, v in (("k1", k1), ("b", b)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"BM25: {name} must be a number, got {v!r}")
        if k1 < 0:
            raise ValueError(f"BM25: k1 must be >= 0, got {k1}")
        if not 0 <= b <= 1:
            raise ValueError(f"BM25: b must be in [0, 1], got {b}")
        super().__init__(analyzer)
        self.k1, self.b = float(k1), float(b)

    def _params(self):
        return f"k1={self.k1:g}, b={self.b:g}, "

    def _index(self):
        n, df = self.n_docs, self.doc_freq
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5))
        self.avgdl = self.doc_len.mean()
        norm = self.k1 * (1.0 - self.b + self.b * self.doc_len / self.avgdl)
        tf = self.tfs
        # everything but the query: idf(t) tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl))
        self.weights = self.idf[self._post_term] * tf * (self.k1 + 1.0) / \
            (tf + norm[self.doc_ids])

    def scores(self, query):
        term_ids, counts = self._query_terms(query)
        if len(term_ids) == 0:                           # no query term in the vocabulary
            return np.zeros(self.n_docs)
        pos, owner = self._gather(term_ids)
        return np.bincount(self.doc_ids[pos], weights=self.weights[pos] * counts[owner],
                           minlength=self.n_docs)


class TfidfRetriever(_SparseRetriever):
    """Cosine similarity of sublinear TF-IDF vectors (see the module docstring)."""

    def _index(self):
        self.idf = np.log((1.0 + self.n_docs) / (1.0 + self.doc_freq)) + 1.0
        self.weights = (1.0 + np.log(self.tfs)) * self.idf[self._post_term]
        self.doc_norm = np.sqrt(np.bincount(self.doc_ids, weights=self.weights ** 2,
                                            minlength=self.n_docs))

    def scores(self, query):
        term_ids, counts = self._query_terms(query)
        if len(term_ids) == 0:                           # no query term in the vocabulary
            return np.zeros(self.n_docs)
        q = (1.0 + np.log(counts)) * self.idf[term_ids]
        pos, owner = self._gather(term_ids)
        dot = np.bincount(self.doc_ids[pos], weights=self.weights[pos] * q[owner],
                          minlength=self.n_docs)
        norm = self.doc_norm * np.sqrt((q ** 2).sum())
        return np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0)


def recall_at_k(retriever, queries, gold_doc_ids, ks=(1, 5, 20)):
    """``{k: fraction of queries with a gold document among the top k}`` for each ``k``.

    ``gold_doc_ids[i]``: the relevant document of query ``i`` (an int) or a collection of
    them (any one counts). ``retriever`` is fitted (:class:`BM25`, :class:`TfidfRetriever`
    or anything with ``search_batch`` and ``n_docs``)."""
    if isinstance(queries, str) or not isinstance(queries, Sequence):
        raise TypeError(f"queries must be a list of str, got {type(queries).__name__}")
    if len(queries) != len(gold_doc_ids):
        raise ValueError(f"recall_at_k: {len(queries)} queries but {len(gold_doc_ids)} gold "
                         "entries; give one gold document id (or a set of them) per query")
    if len(queries) == 0:
        raise ValueError("recall_at_k: no queries")
    ks = [_check_k(k) for k in (ks if isinstance(ks, (list, tuple)) else [ks])]
    if not ks:
        raise ValueError("recall_at_k: ks is empty; give e.g. ks=(1, 5, 20)")
    golds = []
    for i, g in enumerate(gold_doc_ids):
        ids = set(g) if isinstance(g, (list, tuple, set, frozenset)) else {g}
        if not ids or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool)
                              and 0 <= x < retriever.n_docs for x in ids):
            raise ValueError(f"recall_at_k: gold_doc_ids[{i}] = {g!r} is not a document index "
                             f"(or a non-empty set of them) in [0, {retriever.n_docs})")
        golds.append(ids)
    results = retriever.search_batch(list(queries), max(ks))
    # rank of the first gold document of each query (inf: not retrieved)
    first = np.array([next((r for r, (d, _) in enumerate(res) if d in g), np.inf)
                      for res, g in zip(results, golds)])
    return {k: float((first < k).mean()) for k in ks}
