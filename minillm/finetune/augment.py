"""Text data augmentation: EDA (Wei & Zou 2019, "EDA: Easy Data Augmentation Techniques for
Boosting Performance on Text Classification Tasks"), for English and Chinese.

With little labelled data, new training examples can be made by editing the ones we have
a little, keeping their labels. EDA uses four edits of a sentence of ``l`` units (words):

* **SR**, synonym replacement: pick ``n`` distinct words that have synonyms, replace each
  (every occurrence) by one of its synonyms chosen at random;
* **RI**, random insertion: ``n`` times, take a random word that has synonyms and insert
  one of its synonyms at a random position;
* **RS**, random swap: ``n`` times, swap two random positions;
* **RD**, random deletion: delete each word with probability ``p`` (never all of them).

with ``n = max(1, round(alpha * l))`` for the operation's ``alpha``. :class:`EDA` makes
``num_aug`` new texts per text, each by one operation chosen at random (as in the paper's
experiments: the changes stay small, so the label stays right -- most of the time).

**Units.** ``tokenize="auto"`` splits a text containing whitespace into words (English, or
pre-segmented Chinese such as the People's Daily corpus, "迈向 充满 希望 的 新 世纪") and
joins the result with " "; a text without whitespace is split into characters when it
contains CJK characters (unsegmented Chinese, "今天天气很好") and joined with "", otherwise it
is one word. A callable ``tokenize(text) -> list[str]`` (e.g. a word segmenter) may be
given instead; its units are joined with "" for unsegmented CJK text, else with " ".

**Synonyms.** There is no WordNet offline, so synonyms come from a dict ``word -> [words]``
that you write (or take from a thesaurus), or from :func:`distributional_synonyms`: words
that occur in the same contexts in a corpus (Harris's distributional hypothesis). Beware:
words that share contexts are not only synonyms. **Antonyms share contexts too** --
"这部电影很好" / "这部电影很差", "a good movie" / "a bad movie" -- so a distributional
"synonym" of 好 is often 差. This is what real corpora give: on SST-2 (min_count=5) the
nearest neighbour of "good" is "bad"; on the segmented People's Daily corpus that of 增长
(grow) is 下降 (fall), and with characters 高's is 低, 多's is 少. Function words and
punctuation ("the", 的, "，") come out as neighbours too. For sentiment classification an
antonym is the worst possible edit: SR turns a positive review into a negative one, and
:meth:`EDA.augment_dataset` copies the label "positive" onto it. The augmented set then
teaches the model that "很差" is positive. Inspect the dict before using it, remove antonym
pairs and the words that carry the label (sentiment words), or use only the label-safe
operations (``alpha_sr=alpha_ri=0``: swap and deletion) for such tasks.
"""
from __future__ import annotations

import numbers
from collections import Counter
from collections.abc import Mapping

import numpy as np

from ..validation import check_int, check_number

__all__ = ["EDA", "split_units", "synonym_replacement", "random_insertion", "random_swap",
           "random_deletion", "distributional_synonyms"]

OPERATIONS = ("sr", "ri", "rs", "rd")
_NEED_SYNONYMS = ("EDA needs synonyms for synonym replacement (alpha_sr) and random insertion "
                  "(alpha_ri): pass synonyms={word: [synonym, ...]} (your own dict, or "
                  "distributional_synonyms(corpus) -- check it for antonyms), or set "
                  "alpha_sr=0 and alpha_ri=0 to use only random swap and deletion")


# -- units ----------------------------------------------------------------------------------------
def _is_cjk(ch):
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2FA1F
            or 0xF900 <= o <= 0xFAFF or 0x3040 <= o <= 0x30FF or 0xAC00 <= o <= 0xD7AF)


def _check_tokenize(tokenize, who):
    if tokenize != "auto" and not callable(tokenize):
        raise ValueError(f"{who}: tokenize must be 'auto' (whitespace words, or characters "
                         f"for unsegmented Chinese) or a callable text -> list of str, got "
                         f"{tokenize!r}")


def split_units(text, tokenize="auto"):
    """``(units, sep)``: the units EDA edits and the separator that joins them back.

    "auto": characters (sep "") for unsegmented CJK text (CJK characters and no whitespace),
    otherwise whitespace words (sep " "; a text without whitespace is one word). A callable
    gives the units; the separator follows the same rule ("" for unsegmented CJK text).
    """
    if not isinstance(text, str):
        raise TypeError(f"split_units: text must be a str, got {type(text).__name__}")
    _check_tokenize(tokenize, "split_units")
    stripped = text.strip()
    spaced = any(ch.isspace() for ch in stripped)
    chars = not spaced and any(_is_cjk(ch) for ch in stripped)    # unsegmented CJK text
    sep = "" if chars else " "
    if tokenize == "auto":
        if chars:
            return list(stripped), sep
        return stripped.split(), sep
    units = tokenize(text)
    if not isinstance(units, (list, tuple)) or not all(isinstance(u, str) and u for u in units):
        raise TypeError(f"split_units: tokenize must return a list of non-empty strings, got "
                        f"{units!r:.80}")
    return list(units), sep


# -- argument checks ------------------------------------------------------------------------------
def _rng(rng, who):
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"{who}: rng must be a numpy Generator (np.random.default_rng(seed)) or an "
                    f"int seed, got {type(rng).__name__}")


def _check_units(units, who):
    if isinstance(units, str) or not isinstance(units, (list, tuple)) \
            or not all(isinstance(u, str) for u in units):
        raise TypeError(f"{who}: units must be a list of str (split a text with "
                        f"split_units(text)), got {units!r:.80}")
    return list(units)


def _check_synonyms(synonyms, who):
    """A non-empty Mapping; returns it (entries are checked when looked up)."""
    if synonyms is None:
        raise ValueError(f"{who}: no synonyms. {_NEED_SYNONYMS}")
    if not isinstance(synonyms, Mapping):
        raise TypeError(f"{who}: synonyms must be a dict word -> list of words, got "
                        f"{type(synonyms).__name__}")
    if not synonyms:
        raise ValueError(f"{who}: the synonyms dict is empty. {_NEED_SYNONYMS}")
    return synonyms


def _candidates(word, synonyms, who):
    """The synonyms of ``word`` other than itself (a tuple, maybe empty)."""
    values = synonyms.get(word)
    if values is None:
        return ()
    if isinstance(values, str) or not isinstance(values, (list, tuple)) \
            or not all(isinstance(s, str) and s for s in values):
        raise TypeError(f"{who}: synonyms[{word!r}] must be a list of non-empty strings, got "
                        f"{values!r:.80}")
    return tuple(dict.fromkeys(s for s in values if s != word))


# -- the four operations --------------------------------------------------------------------------
def synonym_replacement(units, n, synonyms, rng):
    """SR: replace ``n`` distinct units that have synonyms (chosen at random), each at every
    position where it occurs, by one random synonym. Fewer if fewer units have synonyms
    (none: an unchanged copy). Returns a new list."""
    who = "synonym_replacement"
    units, n = _check_units(units, who), check_int(n, "n", who, 0)
    synonyms, rng = _check_synonyms(synonyms, who), _rng(rng, who)
    words = [w for w in dict.fromkeys(units) if _candidates(w, synonyms, who)]
    out = list(units)
    for k in rng.permutation(len(words))[:n]:
        word = words[k]
        cands = _candidates(word, synonyms, who)
        new = cands[rng.integers(len(cands))]
        out = [new if old == word else cur for old, cur in zip(units, out)]
    return out


def random_insertion(units, n, synonyms, rng):
    """RI: ``n`` times, insert a random synonym of a random unit that has synonyms at a
    random position (length + n). Units without any synonym: an unchanged copy."""
    who = "random_insertion"
    units, n = _check_units(units, who), check_int(n, "n", who, 0)
    synonyms, rng = _check_synonyms(synonyms, who), _rng(rng, who)
    out = list(units)
    for _ in range(n):
        have = [u for u in out if _candidates(u, synonyms, who)]
        if not have:
            break
        cands = _candidates(have[rng.integers(len(have))], synonyms, who)
        out.insert(int(rng.integers(len(out) + 1)), cands[rng.integers(len(cands))])
    return out


def random_swap(units, n, rng):
    """RS: ``n`` times, swap the units at two distinct random positions (the multiset of
    units is kept). Fewer than 2 units: an unchanged copy."""
    who = "random_swap"
    units, n, rng = _check_units(units, who), check_int(n, "n", who, 0), _rng(rng, who)
    out = list(units)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.choice(len(out), size=2, replace=False)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(units, p, rng):
    """RD: delete each unit with probability ``p``; if that deletes every unit, keep one
    random unit (a text never becomes empty). The order of the kept units is unchanged."""
    who = "random_deletion"
    units, p, rng = _check_units(units, who), check_number(p, "p", who, 0, 1), _rng(rng, who)
    if len(units) <= 1:
        return list(units)
    keep = rng.random(len(units)) >= p
    if not keep.any():
        return [units[rng.integers(len(units))]]
    return [u for u, k in zip(units, keep) if k]


# -- EDA ------------------------------------------------------------------------------------------
class EDA:
    """Easy Data Augmentation: ``EDA(synonyms).augment(text)`` -> ``num_aug`` new texts.

    ``alpha_sr``, ``alpha_ri``, ``alpha_rs``: the fraction of the units changed by synonym
    replacement, random insertion, random swap (``n = max(1, round(alpha * units))``);
    ``p_rd``: the deletion probability. An operation with 0 is off. Each new text is made by
    one operation drawn uniformly among those that are on and can change this text (SR/RI
    need a unit with synonyms, RS/RD at least 2 units); when none can (a one-unit text without
    synonyms) the new texts are the text itself. ``synonyms`` is needed when SR or RI is on
    (see the module docstring on distributional synonyms and antonyms). ``tokenize``: "auto"
    or a callable (see :func:`split_units`). The random generator is seeded once by ``seed``:
    the same seed and the same calls give the same texts.
    """

    def __init__(self, synonyms=None, alpha_sr=0.1, alpha_ri=0.1, alpha_rs=0.1, p_rd=0.1,
                 num_aug=4, tokenize="auto", seed=0):
        who = "EDA"
        self.alpha_sr = check_number(alpha_sr, "alpha_sr", who, 0, 1)
        self.alpha_ri = check_number(alpha_ri, "alpha_ri", who, 0, 1)
        self.alpha_rs = check_number(alpha_rs, "alpha_rs", who, 0, 1)
        self.p_rd = check_number(p_rd, "p_rd", who, 0, 1)
        self.num_aug = check_int(num_aug, "num_aug", who, 1)
        self.seed = check_int(seed, "seed", who, 0)
        _check_tokenize(tokenize, who)
        self.tokenize = tokenize
        if not (self.alpha_sr or self.alpha_ri or self.alpha_rs or self.p_rd):
            raise ValueError("EDA: every operation is off (alpha_sr = alpha_ri = alpha_rs = "
                             "p_rd = 0); set at least one > 0")
        if self.alpha_sr or self.alpha_ri:
            synonyms = _check_synonyms(synonyms, who)
            for word in synonyms:                  # check every entry once, now
                if not isinstance(word, str):
                    raise TypeError(f"EDA: synonyms keys must be words (str), got {word!r}")
                _candidates(word, synonyms, who)
        elif synonyms is not None and not isinstance(synonyms, Mapping):
            raise TypeError(f"EDA: synonyms must be a dict word -> list of words, got "
                            f"{type(synonyms).__name__}")
        self.synonyms = synonyms
        self.rng = np.random.default_rng(self.seed)

    def _n(self, alpha, length):
        return max(1, round(alpha * length))

    def _operations(self, units):
        """The operations that are on and can change ``units``."""
        has_syn = self.synonyms is not None and any(
            _candidates(u, self.synonyms, "EDA") for u in units)
        ok = {"sr": self.alpha_sr > 0 and has_syn, "ri": self.alpha_ri > 0 and has_syn,
              "rs": self.alpha_rs > 0 and len(units) >= 2, "rd": self.p_rd > 0 and len(units) >= 2}
        return [op for op in OPERATIONS if ok[op]]

    def augment(self, text):
        """``num_aug`` augmented versions of ``text`` (a list of str), one operation each."""
        units, sep = split_units(text, self.tokenize)
        if not units:
            raise ValueError(f"EDA.augment: the text {text!r} has no units (empty); remove "
                             "empty texts before augmenting")
        ops = self._operations(units)
        if not ops:
            return [text] * self.num_aug
        length, rng = len(units), self.rng
        out = []
        for _ in range(self.num_aug):
            op = ops[rng.integers(len(ops))]
            if op == "sr":
                new = synonym_replacement(units, self._n(self.alpha_sr, length), self.synonyms, rng)
            elif op == "ri":
                new = random_insertion(units, self._n(self.alpha_ri, length), self.synonyms, rng)
            elif op == "rs":
                new = random_swap(units, self._n(self.alpha_rs, length), rng)
            else:
                new = random_deletion(units, self.p_rd, rng)
            out.append(sep.join(new))
        return out

    def augment_dataset(self, examples, text_key="text", keep_original=True):
        """A new list of examples: for each example (a dict) the original (a copy, if
        ``keep_original``) followed by ``num_aug`` copies whose ``text_key`` is an augmented
        text. The other fields (the label...) are copied unchanged -- which is why an edit
        that flips the meaning (an antonym as "synonym") becomes a wrong label."""
        if isinstance(examples, (str, Mapping)) or not hasattr(examples, "__iter__"):
            raise TypeError(f"EDA.augment_dataset: examples must be a list of dicts, got "
                            f"{type(examples).__name__}")
        out = []
        for i, ex in enumerate(examples):
            if not isinstance(ex, Mapping):
                raise TypeError(f"EDA.augment_dataset: example {i} must be a dict, got "
                                f"{type(ex).__name__}")
            if text_key not in ex or not isinstance(ex[text_key], str):
                raise ValueError(f"EDA.augment_dataset: example {i} needs a str field "
                                 f"{text_key!r} (the text_key); its fields: {sorted(ex)}")
            if keep_original:
                out.append(dict(ex))
            out.extend({**ex, text_key: t} for t in self.augment(ex[text_key]))
        return out

    def __repr__(self):
        return (f"EDA(alpha_sr={self.alpha_sr}, alpha_ri={self.alpha_ri}, alpha_rs="
                f"{self.alpha_rs}, p_rd={self.p_rd}, num_aug={self.num_aug}, seed={self.seed})")


# -- distributional synonyms ----------------------------------------------------------------------
def distributional_synonyms(texts, tokenize="auto", window=2, min_count=5, top_k=5,
                            max_vocab=20000):
    """Words used in similar contexts: ``{word: [up to top_k neighbours, most similar first]}``.

    1. Vocabulary: the units occurring at least ``min_count`` times, the ``max_vocab`` most
       frequent (ties by the word).
    2. Co-occurrence counts ``C[w, c]``: how often vocabulary word ``c`` is within ``window``
       units of ``w`` (on either side, within one text).
    3. PPMI weighting: ``PPMI(w, c) = max(0, log(P(w, c) / (P(w) P(c))))`` with
       ``P(w, c) = C[w, c] / sum C`` and the marginals from the row/column sums. Frequent,
       uninformative contexts (的, "the") get little weight; PMI < 0 is unreliable and cut.
    4. Cosine similarity of the PPMI rows; the ``top_k`` most similar other words with a
       similarity > 0 (words without any are left out of the dict).

    The matrices are dense NumPy arrays: memory ~ 4 V^2 bytes for V vocabulary words (0.4 GB
    at V = 10,000; 1.6 GB at 20,000) and time ~ V^3 for the similarities (V = 5,000: about
    4 s on one CPU core; 20,000: minutes); lower ``max_vocab`` or raise ``min_count`` for a
    big corpus.

    The result is a similarity list, not a thesaurus: antonyms (好/差, good/bad) and
    co-hyponyms (周一/周二) share contexts and come out as "synonyms" -- see the module
    docstring for what that does to labels. Filter the dict before using it for SR/RI.
    """
    who = "distributional_synonyms"
    if isinstance(texts, str) or not hasattr(texts, "__iter__"):
        raise TypeError(f"{who}: texts must be a list of str (a corpus), got "
                        f"{type(texts).__name__}")
    window = check_int(window, "window", who, 1)
    min_count = check_int(min_count, "min_count", who, 1)
    top_k = check_int(top_k, "top_k", who, 1)
    max_vocab = check_int(max_vocab, "max_vocab", who, 2)
    _check_tokenize(tokenize, who)
    docs = _corpus_units(texts, tokenize, who)
    vocab = _frequent_units(docs, min_count, max_vocab, who)
    ppmi = _ppmi(_cooccurrence_counts(docs, vocab, window))
    return _nearest_neighbours(ppmi, vocab, top_k)


def _corpus_units(texts, tokenize, who):
    """Each text split into its units (words or characters), checking that it is a str."""
    docs = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{who}: texts[{i}] must be a str, got {type(t).__name__}")
        docs.append(split_units(t, tokenize)[0])
    return docs


def _frequent_units(docs, min_count, max_vocab, who):
    """Step 1: the units seen ``min_count`` times, the ``max_vocab`` most frequent first."""
    counts = Counter(u for d in docs for u in d)
    vocab = sorted((w for w, c in counts.items() if c >= min_count),
                   key=lambda w: (-counts[w], w))[:max_vocab]
    if len(vocab) < 2:
        raise ValueError(f"{who}: only {len(vocab)} unit(s) occur at least min_count="
                         f"{min_count} times in the {len(docs)} texts; give a bigger corpus "
                         "or a lower min_count")
    return vocab


def _cooccurrence_counts(docs, vocab, window):
    """Step 2: ``C[w, c]``, how often ``c`` is within ``window`` units of ``w`` (symmetric)."""
    index = {w: i for i, w in enumerate(vocab)}
    v = len(vocab)
    # one stream of ids (-1 = out of vocabulary); `window` -1s between texts so that no
    # window spans two texts
    gap = [-1] * window
    ids = np.array([index.get(u, -1) for d in docs for u in d + gap], dtype=np.int64)
    cooc = np.zeros((v, v), dtype=np.float32)          # C[w, c]
    for d in range(1, window + 1):
        w, c = ids[:-d], ids[d:]
        ok = (w >= 0) & (c >= 0)
        pairs, n = np.unique(w[ok] * v + c[ok], return_counts=True)
        cooc.flat[pairs] += n
    cooc += cooc.T                                     # context on the left and on the right
    return cooc


def _ppmi(cooc):
    """Step 3: the positive PMI of a symmetric co-occurrence matrix (``cooc`` is overwritten)."""
    total = float(cooc.sum(dtype=np.float64))
    p_w = (cooc.sum(axis=1, dtype=np.float64) / total).astype(np.float32)   # C is symmetric
    ratio = np.divide(cooc / total, np.outer(p_w, p_w), out=np.ones_like(cooc),
                      where=cooc > 0)                  # P(w, c) / (P(w) P(c)); 1 where C = 0
    return np.maximum(np.log(ratio), 0, out=ratio)


def _nearest_neighbours(ppmi, vocab, top_k):
    """Step 4: each word's ``top_k`` most cosine-similar other words with a similarity > 0."""
    v = len(vocab)
    norms = np.sqrt((ppmi * ppmi).sum(axis=1))
    unit = np.divide(ppmi, norms[:, None], out=np.zeros_like(ppmi), where=norms[:, None] > 0)
    result = {}
    k = min(top_k, v - 1)
    block = max(1, min(v, 2 ** 22 // v))               # rows of similarities at a time
    for start in range(0, v, block):
        sim = unit[start:start + block] @ unit.T       # cosines (rows: words of the block)
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf              # not its own neighbour
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top_sim = np.take_along_axis(sim, top, axis=1)
        order = np.lexsort((top, -top_sim), axis=1)    # most similar first, ties by index
        top = np.take_along_axis(top, order, axis=1)
        top_sim = np.take_along_axis(top_sim, order, axis=1)
        for r in range(sim.shape[0]):
            neighbours = [vocab[j] for j, s in zip(top[r], top_sim[r]) if s > 0]
            if neighbours:
                result[vocab[start + r]] = neighbours
    return result
