"""N-gram language models with add-k and interpolated Kneser–Ney smoothing.

An n-gram model predicts a word from the previous ``n - 1`` words, ``P(w | h)``, from counts.

**Add-k** (Laplace for k = 1), on the order-n counts only::

    P(w | h) = (c(h w) + k) / (c(h) + k |V|)                   c(h) = sum_w c(h w)

**Interpolated Kneser–Ney** (Kneser & Ney 1995; Chen & Goodman 1998), one discount ``d``::

    P_k(w | h) = max(c_k(h w) - d, 0) / c_k(h)  +  d N1+(h .) / c_k(h) * P_{k-1}(w | h')
    P_0(w)     = 1 / |V|                                   (the recursion ends in the uniform)

where ``h'`` is ``h`` without its first word, ``c_k(h) = sum_w c_k(h w)``, ``N1+(h .)`` is the
number of distinct words seen after ``h``, and the counts are raw counts at the highest order
but *continuation counts* ``c_k(g) = N1+(. g)`` (the number of distinct words seen before
``g``) at every lower order. A context never seen (``c_k(h) = 0``) backs off entirely to
``P_{k-1}``. Every level sums to 1 over the vocabulary, so the model does too. Words not in
the training vocabulary are scored as ``<unk>``, which gets its mass from the uniform level.

Data. ``fit`` takes either one token stream (a list of strings) or a list of sentences (a
list of lists of strings). Each sequence is padded on the left with ``n - 1`` ``<s>``; each
sentence also ends with ``</s>``, which is predicted like a word. ``<s>`` is only context:
it is never predicted (its probability is 0 in :meth:`NGramLM.next_distribution`).

Counting is vectorised: tokens become integer ids; an n-gram is keyed by one integer
``rank(suffix) * |ids| + first_id`` (its (n-1)-suffix's index in the sorted table of the order
below, so keys stay small for any n); ``np.unique`` counts them and ``np.searchsorted`` looks
them up. Fitting the Penn Treebank training set (~930k tokens) takes about a second.
"""
from __future__ import annotations

import math

import numpy as np

from ..validation import check_int

__all__ = ["NGramLM", "BOS", "EOS", "UNK"]

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def _is_sentences(data):
    if isinstance(data, str):
        raise TypeError("NGramLM: expected a list of tokens or a list of sentences (lists of "
                        "tokens), got a str; split the text into tokens first (e.g. "
                        "text.split())")
    if not data:
        return False
    first = data[0]
    if isinstance(first, str):
        return False
    if isinstance(first, (list, tuple)):
        return True
    raise TypeError(f"NGramLM: tokens must be strings, got {type(first).__name__}")


class NGramLM:
    """An n-gram language model: ``NGramLM(n, smoothing="kneser_ney"|"add_k", k=1.0,
    discount=0.75)``; ``fit`` it, then ``prob``/``logprob``/``perplexity``/``sample``.

    ``vocab`` (after fitting) lists the words by id: ``<s>``, ``<unk>``, (``</s>`` when fitted
    on sentences), then the training words in sorted order.
    """

    def __init__(self, n, smoothing="kneser_ney", k=1.0, discount=0.75):
        n = check_int(n, "n (the order)", "NGramLM")
        if smoothing not in ("add_k", "kneser_ney"):
            raise ValueError(f"NGramLM: smoothing must be 'add_k' or 'kneser_ney', got "
                             f"{smoothing!r}")
        if smoothing == "add_k" and not k > 0:
            raise ValueError(f"NGramLM: add-k smoothing needs k > 0, got {k}")
        if smoothing == "kneser_ney" and not 0 < discount <= 1:
            raise ValueError(f"NGramLM: the Kneser-Ney discount must be in (0, 1], got "
                             f"{discount}")
        self.n, self.smoothing, self.k, self.discount = n, smoothing, float(k), float(discount)
        self.vocab = None

    # -- encoding -----------------------------------------------------------------------------
    def _check_fitted(self):
        if self.vocab is None:
            raise RuntimeError("NGramLM: call fit(tokens) before using the model")

    def _ids(self, words):
        get, unk = self.stoi.get, self.stoi[UNK]
        return np.fromiter((get(w, unk) for w in words), dtype=np.int64, count=len(words))

    def _sequences(self, data):
        """Data -> (padded words, sequence number per position, is-sentences)."""
        if not isinstance(data, (str, list, tuple)):
            data = list(data)                          # a generator, an array, ...
        sentences = _is_sentences(data)
        seqs = [list(s) + [EOS] for s in data] if sentences else [list(data)]
        pad = [BOS] * (self.n - 1)
        lengths = np.array([len(s) + self.n - 1 for s in seqs], dtype=np.int64)
        words = [w for s in seqs for w in pad + s]
        return words, np.repeat(np.arange(len(seqs)), lengths), sentences

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, data):
        """Count the n-grams of ``data``: a list of tokens or a list of sentences."""
        words, seq_no, sentences = self._sequences(data)
        specials = [BOS, UNK] + ([EOS] if sentences else [])
        others = sorted(set(words) - set(specials))
        self.vocab = specials + others
        self.stoi = {w: i for i, w in enumerate(self.vocab)}
        self.V = len(self.vocab)                       # the key radix
        self.n_predictable = self.V - 1                # every word but <s>
        ids = self._ids(words)
        self._count(ids, seq_no)
        return self

    def _count(self, ids, seq_no):
        n, V, N = self.n, self.V, len(ids)
        bos = self.stoi[BOS]
        self.keys, self.raw, self.cont = [None] * (n + 1), [None] * (n + 1), [None] * (n + 1)
        self.prefix = [None] * (n + 1)
        self.keys[0] = np.zeros(1, dtype=np.int64)     # order 0: the empty n-gram
        rank_prev = np.zeros(N + 1, dtype=np.int64)    # rank of the (k-1)-gram starting at i
        for k in range(1, n + 1):
            m = N - k + 1                              # windows of length k
            valid = seq_no[:m] == seq_no[k - 1:]       # inside one sequence
            start = np.flatnonzero(valid)
            key = rank_prev[start + 1] * V + ids[start]     # rank(suffix) * V + first word
            uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
            counts = np.bincount(inv, minlength=len(uniq))
            first = start[first]                       # a position of each distinct k-gram
            predicts = ids[first + k - 1] != bos       # <s> is context only, never predicted
            self.keys[k] = uniq
            self.raw[k] = np.where(predicts, counts, 0)
            self.prefix[k] = rank_prev[first]          # rank of its (k-1)-prefix (the context)
            if k >= 2:                                 # continuation counts of order k-1:
                suffix = uniq // V                     # distinct words before each suffix
                self.cont[k - 1] = np.bincount(suffix[predicts],
                                               minlength=len(self.keys[k - 1]))
            rank = np.full(N + 1, -1, dtype=np.int64)
            rank[start] = inv
            rank_prev = rank
        self.cont[n] = self.raw[n]                     # the top order uses raw counts
        # per context (indexed by the rank of the (k-1)-gram): totals and distinct followers
        self.ctx_raw, self.ctx_kn, self.ctx_types = [None], [None], [None]
        for k in range(1, n + 1):
            size = len(self.keys[k - 1])
            self.ctx_raw.append(np.bincount(self.prefix[k], weights=self.raw[k], minlength=size))
            self.ctx_kn.append(np.bincount(self.prefix[k], weights=self.cont[k], minlength=size))
            self.ctx_types.append(np.bincount(self.prefix[k], weights=self.cont[k] > 0,
                                              minlength=size))

    # -- lookup -------------------------------------------------------------------------------
    def _find(self, k, key):
        """Ranks of ``key`` in the order-k table (-1 where absent)."""
        table = self.keys[k]
        pos = np.minimum(np.searchsorted(table, key), len(table) - 1)
        return np.where((key >= 0) & (table[pos] == key), pos, -1)

    def _cond_probs(self, ctx, w):
        """P(w[r] | ctx[r]) for rows r: ``ctx`` (R, m) ids with m <= n - 1, ``w`` (R,) ids."""
        R, m = ctx.shape
        V, d = self.V, self.discount
        rg = self._find(1, w)                          # rank of the n-gram (h_suffix, w)
        rh = np.zeros(R, dtype=np.int64)               # rank of the context suffix h
        p = np.full(R, 1.0 / self.n_predictable)       # order 0: uniform
        if self.smoothing == "kneser_ney":
            for k in range(1, m + 2):
                if k > 1:
                    first = ctx[:, m - k + 1]
                    rg = np.where(rg >= 0, self._find(k, rg * V + first), -1)
                    rh = np.where(rh >= 0, self._find(k - 1, rh * V + first), -1)
                counts = self.cont[k] if k < self.n else self.raw[k]
                c = np.where(rg >= 0, counts[np.maximum(rg, 0)], 0)
                ok = rh >= 0
                total = np.where(ok, self.ctx_kn[k][np.maximum(rh, 0)], 0)
                types = np.where(ok, self.ctx_types[k][np.maximum(rh, 0)], 0)
                seen = total > 0
                safe = np.where(seen, total, 1)
                p = np.where(seen, np.maximum(c - d, 0) / safe + d * types / safe * p, p)
            return p
        for k in range(2, m + 2):                      # add-k: walk up to the top order
            first = ctx[:, m - k + 1]
            rg = np.where(rg >= 0, self._find(k, rg * V + first), -1)
            rh = np.where(rh >= 0, self._find(k - 1, rh * V + first), -1)
        c = np.where(rg >= 0, self.raw[m + 1][np.maximum(rg, 0)], 0)
        total = np.where(rh >= 0, self.ctx_raw[m + 1][np.maximum(rh, 0)], 0)
        return (c + self.k) / (total + self.k * self.n_predictable)

    def _context_ids(self, context):
        if isinstance(context, str):
            raise TypeError("NGramLM: context must be a list of tokens, got a str")
        context = list(context)[-(self.n - 1):] if self.n > 1 else []
        return self._ids(context)

    # -- the public API ----------------------------------------------------------------------
    def prob(self, word, context=()):
        """P(word | context). ``context`` is a list of tokens; its last ``n - 1`` are used. A
        shorter context is used as given (a lower-order estimate); pass ``<s>`` tokens for
        the start of a sentence. Unknown words are scored as ``<unk>``."""
        self._check_fitted()
        if word == BOS:
            return 0.0
        ctx = self._context_ids(context)
        return float(self._cond_probs(ctx[None, :], self._ids([word]))[0])

    def logprob(self, word, context=()):
        """Natural log of :meth:`prob`."""
        p = self.prob(word, context)
        return math.log(p) if p > 0 else -math.inf

    def next_distribution(self, context=()):
        """P(. | context) over ``self.vocab`` as a float64 array that sums to 1 (``<s>``: 0)."""
        self._check_fitted()
        ctx = self._context_ids(context)
        words = np.arange(self.V)
        p = self._cond_probs(np.broadcast_to(ctx, (self.V, len(ctx))), words)
        p[self.stoi[BOS]] = 0.0
        return p

    def token_logprobs(self, data):
        """Log-probability of every predicted token of ``data`` (tokens or sentences; each
        sequence padded with ``<s>`` like in :meth:`fit`, sentences scored with ``</s>``)."""
        self._check_fitted()
        words, seq_no, _ = self._sequences(data)
        ids = self._ids(words)
        n = self.n
        pos = np.arange(len(ids))
        targets = pos[(pos - (n - 1) >= 0)]
        targets = targets[seq_no[targets] == seq_no[targets - (n - 1)]]   # real tokens only
        ctx = ids[targets[:, None] + np.arange(-(n - 1), 0)[None, :]]
        return np.log(self._cond_probs(ctx, ids[targets]))

    def perplexity(self, data):
        """exp(- mean log P(token | context)) over every predicted token of ``data``."""
        lp = self.token_logprobs(data)
        if lp.size == 0:
            raise ValueError("NGramLM.perplexity: no tokens to score")
        return float(np.exp(-lp.mean()))

    def sample(self, context=(), length=20, seed=None):
        """Draw up to ``length`` tokens after ``context`` (a shorter context is padded with
        ``<s>``, i.e. a sentence start); stops after ``</s>``. Returns the new tokens."""
        self._check_fitted()
        rng = np.random.default_rng(seed)
        history = [BOS] * (self.n - 1) + list(context)
        out = []
        for _ in range(length):
            p = self.next_distribution(history)
            w = self.vocab[int(rng.choice(self.V, p=p))]
            out.append(w)
            history.append(w)
            if w == EOS:
                break
        return out

    def __repr__(self):
        extra = f"k={self.k}" if self.smoothing == "add_k" else f"discount={self.discount}"
        size = "unfitted" if self.vocab is None else f"vocab={self.V}"
        return f"NGramLM(n={self.n}, smoothing={self.smoothing!r}, {extra}, {size})"
