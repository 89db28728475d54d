"""Collators and feature builders: padding, BERT's MLM and NSP data, token-classification
label alignment, and SQuAD-style QA features (windows over long contexts) with their
post-processing.

Tokenizers are used through a small interface: ``encode(text, add_special_tokens=False)
-> list[int]``, ``encode_with_offsets(text) -> (ids, offsets)`` with character spans
``(start, end)``, ``decode(ids)``, ``vocab_size`` and the special ids ``pad_id, unk_id,
cls_id, sep_id, mask_id, bos_id, eos_id`` (``None`` when absent).
"""
from __future__ import annotations

import random
from bisect import bisect_left, bisect_right

import numpy as np

from ..autograd import Tensor
from .batching import _seed_from_global, _to_tensor, collate_field

__all__ = ["Collator", "pad_collate", "pad_sequences", "MLMCollator", "nsp_pairs",
           "encode_pair", "special_ids", "encode_words", "align_labels_with_tokens",
           "token_classification_features", "prepare_qa_features", "postprocess_qa"]

IGNORE_INDEX = -100
SPECIAL_NAMES = ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id", "bos_id", "eos_id")


def special_ids(tokenizer):
    """The set of the tokenizer's special token ids (those that are not ``None``)."""
    return {getattr(tokenizer, n) for n in SPECIAL_NAMES if getattr(tokenizer, n, None) is not None}


_special_ids_of = special_ids  # MLMCollator's argument `special_ids` shadows the function


def pad_sequences(seqs, pad_value, length=None, side="right"):
    """A ``(len(seqs), length)`` int64 array with each sequence padded by ``pad_value``
    (``length`` defaults to the longest sequence; a longer sequence is an error)."""
    lengths = [len(s) for s in seqs]
    length = max(lengths, default=0) if length is None else length
    if lengths and max(lengths) > length:
        raise ValueError(f"a sequence of length {max(lengths)} does not fit in {length}; "
                         "truncate it when encoding")
    out = np.full((len(seqs), length), pad_value, dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            if side == "right":
                out[i, :len(s)] = s
            else:
                out[i, length - len(s):] = s
    return out


class Collator:
    """Pad a batch of token-id examples into tensors.

    Examples are dicts with ``input_ids`` (a list of ids) or bare id lists. The result
    has ``input_ids`` padded with ``pad_id`` to the longest sequence of the batch (or to
    ``pad_to``, rounded up to ``pad_to_multiple_of``), ``attention_mask`` (1 = token,
    0 = padding, int64), per-token ``labels`` padded with ``label_pad_id`` (-100, ignored
    by ``cross_entropy``; a scalar label per example is stacked instead),
    ``token_type_ids`` padded with 0 and ``special_tokens_mask`` with 1. ``labels`` of
    another length (seq2seq targets) are padded to their own longest. Other fields:
    numbers become tensors, anything else (strings, offsets) stays a list.
    """

    PAD_FIELDS = {"token_type_ids": 0, "special_tokens_mask": 1}

    def __init__(self, pad_id=None, tokenizer=None, label_pad_id=IGNORE_INDEX, pad_to=None,
                 pad_to_multiple_of=None, padding_side="right", device=None):
        if pad_id is None and tokenizer is not None:
            pad_id = getattr(tokenizer, "pad_id", None)
        if pad_id is None:
            raise ValueError("Collator needs a pad_id: pass pad_id=... or a tokenizer that has "
                             "one (a GPT-2 style tokenizer without padding often uses eos_id)")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.pad_id, self.label_pad_id = int(pad_id), label_pad_id
        self.pad_to, self.multiple = pad_to, pad_to_multiple_of
        self.side, self.device = padding_side, device

    def _length(self, seqs):
        n = max((len(s) for s in seqs), default=0)
        if self.pad_to is not None:
            if n > self.pad_to:
                raise ValueError(f"a sequence of length {n} is longer than pad_to={self.pad_to}; "
                                 "truncate it when encoding")
            n = self.pad_to
        if self.multiple:
            n = -(-n // self.multiple) * self.multiple
        return n

    def pad(self, batch):
        """The padded batch as NumPy arrays / lists (no tensors yet)."""
        if not batch:
            raise ValueError("cannot collate an empty batch")
        batch = [ex if isinstance(ex, dict) else {"input_ids": ex} for ex in batch]
        if any("input_ids" not in ex for ex in batch):
            raise ValueError("every example needs an 'input_ids' field")
        ids = [list(ex["input_ids"]) for ex in batch]
        length = self._length(ids)
        out = {"input_ids": pad_sequences(ids, self.pad_id, length, self.side),
               "attention_mask": pad_sequences([[1] * len(s) for s in ids], 0, length, self.side)}
        for key in batch[0]:
            if key in ("input_ids", "attention_mask"):
                continue
            values = [ex.get(key) for ex in batch]
            sequences = all(isinstance(v, (list, tuple, np.ndarray)) for v in values)
            per_token = sequences and all(len(v) == len(s) for v, s in zip(values, ids))
            if key == "labels" and sequences:
                # token labels share the input length; other label sequences (seq2seq
                # targets) are padded to their own longest
                n = length if per_token else self._length(values)
                out[key] = pad_sequences(values, self.label_pad_id, n, self.side)
            elif key in self.PAD_FIELDS and per_token:
                out[key] = pad_sequences(values, self.PAD_FIELDS[key], length, self.side)
            else:
                out[key] = values
        return out

    def __call__(self, batch):
        out = self.pad(batch)
        return {k: _to_tensor(v, self.device) if isinstance(v, np.ndarray)
                else collate_field(v, self.device, strict=False) for k, v in out.items()}


def pad_collate(batch, pad_id=0, label_pad_id=IGNORE_INDEX):
    """``Collator(pad_id, label_pad_id=label_pad_id)(batch)`` as a function."""
    return Collator(pad_id, label_pad_id=label_pad_id)(batch)


# -- BERT pretraining data ----------------------------------------------------------------
class MLMCollator(Collator):
    """Pad a batch and apply BERT's masked-language-model corruption.

    Each non-special, non-padding position is chosen with probability
    ``mlm_probability`` (15%); a chosen token becomes ``mask_id`` with probability
    ``mask_prob`` (80%), a random non-special token with ``random_prob`` (10%), and stays
    unchanged otherwise (10%). ``labels`` hold the original id at chosen positions and
    -100 elsewhere. The corruption is drawn from the collator's own seeded generator, so
    a given ``seed`` gives the same sequence of batches.
    """

    def __init__(self, tokenizer=None, mlm_probability=0.15, mask_prob=0.8, random_prob=0.1,
                 seed=None, pad_id=None, mask_id=None, vocab_size=None, special_ids=None,
                 **collator_kw):
        super().__init__(pad_id, tokenizer, **collator_kw)
        self.mask_id = mask_id if mask_id is not None else getattr(tokenizer, "mask_id", None)
        self.vocab_size = vocab_size if vocab_size is not None else \
            getattr(tokenizer, "vocab_size", None)
        if self.mask_id is None or self.vocab_size is None:
            raise ValueError("MLMCollator needs mask_id and vocab_size (pass a tokenizer that "
                             "has a mask token, or mask_id=..., vocab_size=...)")
        if not (0 < mlm_probability < 1 and 0 <= mask_prob and 0 <= random_prob
                and mask_prob + random_prob <= 1):
            raise ValueError(f"bad probabilities: mlm_probability={mlm_probability}, "
                             f"mask_prob={mask_prob}, random_prob={random_prob}")
        specials = set(special_ids) if special_ids is not None else \
            (_special_ids_of(tokenizer) if tokenizer is not None else set())
        self.special = np.array(sorted(specials | {self.pad_id, self.mask_id}), dtype=np.int64)
        self.random_pool = np.setdiff1d(np.arange(self.vocab_size), self.special)
        self.p, self.mask_prob, self.random_prob = mlm_probability, mask_prob, random_prob
        self.rng = np.random.default_rng(_seed_from_global() if seed is None else seed)

    def mask_tokens(self, input_ids, attention_mask=None):
        """``(corrupted_ids, labels)`` for a NumPy id array (the core of the collator)."""
        ids = np.array(input_ids, dtype=np.int64)
        candidate = ~np.isin(ids, self.special)
        if attention_mask is not None:
            candidate &= np.asarray(attention_mask).astype(bool)
        chosen = (self.rng.random(ids.shape) < self.p) & candidate
        labels = np.where(chosen, ids, IGNORE_INDEX)
        r = self.rng.random(ids.shape)
        to_mask = chosen & (r < self.mask_prob)
        to_random = chosen & (r >= self.mask_prob) & (r < self.mask_prob + self.random_prob)
        ids[to_mask] = self.mask_id
        ids[to_random] = self.random_pool[self.rng.integers(0, len(self.random_pool),
                                                            int(to_random.sum()))]
        return ids, labels

    def pad(self, batch):
        out = super().pad(batch)
        out["input_ids"], out["labels"] = self.mask_tokens(out["input_ids"], out["attention_mask"])
        return out


def _encode(tokenizer, text):
    return list(text) if not isinstance(text, str) else tokenizer.encode(text)


def encode_pair(tokenizer, a, b=None, max_length=None):
    """``[CLS] a [SEP] b [SEP]`` with ``token_type_ids`` 0 for a and 1 for b.

    ``a``/``b`` are strings (encoded with ``tokenizer``) or id lists. With ``max_length``
    the longer side is cut one token at a time until the pair fits (BERT's rule).
    """
    cls_id, sep_id = getattr(tokenizer, "cls_id", None), getattr(tokenizer, "sep_id", None)
    if cls_id is None or sep_id is None:
        raise ValueError("encode_pair needs a tokenizer with cls_id and sep_id")
    ids_a = _encode(tokenizer, a)
    ids_b = _encode(tokenizer, b) if b is not None else []
    extra = 3 if b is not None else 2
    if max_length is not None:
        if max_length <= extra:
            raise ValueError(f"max_length={max_length} leaves no room for tokens")
        while len(ids_a) + len(ids_b) > max_length - extra:
            if len(ids_a) >= len(ids_b):
                ids_a = ids_a[:-1]
            else:
                ids_b = ids_b[:-1]
    ids = [cls_id] + ids_a + [sep_id]
    types = [0] * len(ids)
    if b is not None:
        ids += ids_b + [sep_id]
        types += [1] * (len(ids_b) + 1)
    return {"input_ids": ids, "token_type_ids": types}


def nsp_pairs(documents, seed=None):
    """Sentence pairs for next-sentence prediction, BERT-style.

    ``documents`` is a list of documents, each a list of sentences (strings or id lists).
    For every sentence that has a successor, ``b`` is that successor with probability 1/2
    (IsNext) and otherwise a random sentence of another document (NotNext). Returns
    dicts ``{"a", "b", "is_next", "next_sentence_label"}`` with BERT's label convention
    (0 = IsNext, 1 = NotNext). Seeded with :class:`random.Random`.
    """
    docs = [d for d in documents if len(d)]
    if len(docs) < 2:
        raise ValueError("nsp_pairs needs at least two non-empty documents (NotNext sentences "
                         "come from another document)")
    rng = random.Random(_seed_from_global() if seed is None else seed)
    pairs = []
    for d, doc in enumerate(docs):
        for i in range(len(doc) - 1):
            if rng.random() < 0.5:
                b, is_next = doc[i + 1], True
            else:
                other = rng.randrange(len(docs) - 1)
                other += other >= d
                b, is_next = rng.choice(docs[other]), False
            pairs.append({"a": doc[i], "b": b, "is_next": is_next,
                          "next_sentence_label": 0 if is_next else 1})
    return pairs


# -- token classification -----------------------------------------------------------------
def _wrap_special(tokenizer, ids, word_ids):
    first = getattr(tokenizer, "cls_id", None)
    last = getattr(tokenizer, "sep_id", None)
    if first is None or last is None:
        first, last = getattr(tokenizer, "bos_id", None), getattr(tokenizer, "eos_id", None)
    pre = [first] if first is not None else []
    post = [last] if last is not None else []
    return pre + ids + post, [None] * len(pre) + word_ids + [None] * len(post)


def encode_words(tokenizer, words, method="offsets", add_special_tokens=False):
    """Encode pre-split words; returns ``(ids, word_ids)`` with ``word_ids[i]`` the index of
    the word token ``i`` belongs to (``None`` for special tokens).

    ``method="offsets"``: encode ``" ".join(words)`` once with ``encode_with_offsets`` and
    map each token to the word holding its first non-space character (the context of a
    byte-level BPE stays as in running text); tokens made only of the spaces inserted
    between words (a character tokenizer's space tokens) are dropped, since they are not
    part of the data. ``method="per_word"``: encode every word on its own. Every word must
    get at least one token.
    """
    words = list(words)
    if method == "per_word":
        ids, word_ids = [], []
        for w, word in enumerate(words):
            piece = tokenizer.encode(word)
            if not piece:
                raise ValueError(f"word {w} ({word!r}) was encoded to no tokens")
            ids += piece
            word_ids += [w] * len(piece)
    elif method == "offsets":
        text = " ".join(words)
        owner = np.full(len(text), -1, dtype=np.int64)
        pos = 0
        for w, word in enumerate(words):
            owner[pos:pos + len(word)] = w
            pos += len(word) + 1
        all_ids, offsets = tokenizer.encode_with_offsets(text)
        ids, word_ids = [], []
        for i, (start, end) in zip(all_ids, offsets):
            hit = np.flatnonzero(owner[start:end] >= 0) if end > start else []
            if len(hit):  # tokens made only of the joining spaces are dropped
                ids.append(i)
                word_ids.append(int(owner[start + hit[0]]))
        missing = sorted(set(range(len(words))) - {w for w in word_ids if w is not None})
        if missing:
            raise ValueError(f"words {missing[:5]} (e.g. {words[missing[0]]!r}) start no token "
                             "in the tokenizer's offsets; try method='per_word'")
    else:
        raise ValueError(f"method must be 'offsets' or 'per_word', got {method!r}")
    if add_special_tokens:
        ids, word_ids = _wrap_special(tokenizer, ids, word_ids)
    return ids, word_ids


def align_labels_with_tokens(word_labels, word_ids, label_all_tokens=False, label_names=None,
                             b_to_i=None, ignore_index=IGNORE_INDEX):
    """Labels per token from labels per word.

    The first token of a word gets the word's label; the following tokens get
    ``ignore_index`` (-100), or with ``label_all_tokens=True`` a copy of the label in
    which ``B-X`` becomes ``I-X`` (given string labels with ``label_names``, or an
    explicit ``b_to_i`` id mapping). Special tokens (``word_id is None``) get
    ``ignore_index``. String labels need ``label_names`` to become ids.
    """
    def to_id(label):
        if isinstance(label, str):
            if label_names is None:
                raise ValueError(f"label {label!r} is a string: pass label_names to map it "
                                 "to an id")
            try:
                return label_names.index(label)
            except ValueError:
                raise ValueError(f"label {label!r} is not in label_names {label_names}") from None
        return int(label)

    def inside(label):
        if isinstance(label, str) and label.startswith("B-") and label_names is not None \
                and "I-" + label[2:] in label_names:
            return to_id("I-" + label[2:])
        lab = to_id(label)
        return b_to_i.get(lab, lab) if b_to_i else lab

    out, prev = [], None
    for w in word_ids:
        if w is None:
            out.append(ignore_index)
        elif w != prev:
            out.append(to_id(word_labels[w]))
        else:
            out.append(inside(word_labels[w]) if label_all_tokens else ignore_index)
        prev = w
    return out


def token_classification_features(examples, tokenizer, label_names, max_length=None,
                                  label_all_tokens=False, method="offsets",
                                  add_special_tokens=True):
    """``{"input_ids", "labels", "word_ids"}`` per ``{"tokens", "tags"}`` example (e.g.
    ``peoples_daily_ner`` or ``wnut17``), cut to ``max_length`` tokens (the special end
    token is kept)."""
    feats = []
    for ex in examples:
        ids, word_ids = encode_words(tokenizer, ex["tokens"], method, add_special_tokens)
        labels = align_labels_with_tokens(ex["tags"], word_ids, label_all_tokens, label_names)
        if max_length is not None and len(ids) > max_length:
            keep_last = add_special_tokens and word_ids[-1] is None
            cut = max_length - 1 if keep_last else max_length
            ids = ids[:cut] + (ids[-1:] if keep_last else [])
            labels = labels[:cut] + (labels[-1:] if keep_last else [])
            word_ids = word_ids[:cut] + (word_ids[-1:] if keep_last else [])
        feats.append({"input_ids": ids, "labels": labels, "word_ids": word_ids})
    return feats


# -- extractive QA ------------------------------------------------------------------------
def _answer_span(ex, index):
    ans = ex.get("answers") or {}
    texts, starts = ans.get("text") or [], ans.get("answer_start") or []
    if not texts:
        return None
    text, start = texts[0], starts[0]
    if start < 0 or ex["context"][start:start + len(text)] != text:
        raise ValueError(f"example {ex.get('id', index)!r}: answer {text!r} is not at "
                         f"answer_start={start} of its context (an upstream quirk of e.g. "
                         "CMRC 2018); load the dataset with fix_answer_starts=True or drop it")
    return start, start + len(text)


def prepare_qa_features(examples, tokenizer, max_length=384, stride=128, max_query_length=64):
    """Training/evaluation features for extractive QA (BERT on SQuAD).

    Each example becomes one or more windows ``[CLS] question [SEP] context-part [SEP]``
    of at most ``max_length`` tokens; consecutive windows share ``stride`` context tokens
    (Hugging Face's meaning of ``stride``). A feature is a dict with ``input_ids``,
    ``token_type_ids``, ``offsets`` (the character span of each context token in the
    context, ``None`` elsewhere), ``example_index``, ``example_id``, and, when the example
    has an answer, ``start_positions``/``end_positions``: the token positions of the first
    answer, or 0 (the ``[CLS]`` token) when the answer is not entirely inside the window.
    """
    cls_id, sep_id = getattr(tokenizer, "cls_id", None), getattr(tokenizer, "sep_id", None)
    if cls_id is None or sep_id is None:     # a GPT's vocabulary: <bos> q <eos> c <eos>
        cls_id, sep_id = getattr(tokenizer, "bos_id", None), getattr(tokenizer, "eos_id", None)
    if cls_id is None or sep_id is None:
        raise ValueError("prepare_qa_features needs a tokenizer with cls_id and sep_id (or "
                         "bos_id and eos_id)")
    features = []
    for index, ex in enumerate(examples):
        q_ids = list(tokenizer.encode(ex["question"]))[:max_query_length]
        ids, offsets = tokenizer.encode_with_offsets(ex["context"])
        pairs = [(i, (int(s), int(e))) for i, (s, e) in zip(ids, offsets) if e > s]
        ctx_ids = [i for i, _ in pairs]
        ctx_offsets = [o for _, o in pairs]
        room = max_length - len(q_ids) - 3
        if room < 1:
            raise ValueError(f"max_length={max_length} leaves no room for the context after a "
                             f"question of {len(q_ids)} tokens; raise max_length or lower "
                             "max_query_length")
        if not 0 <= stride < room:
            raise ValueError(f"stride={stride} must be in [0, {room}) (the context room of a "
                             f"window: max_length - question - 3)")
        span = _answer_span(ex, index)
        if span is not None:
            ends = [e for _, e in ctx_offsets]
            starts = [s for s, _ in ctx_offsets]
            tok_start = bisect_right(ends, span[0])        # first token ending after the start
            tok_end = bisect_left(starts, span[1]) - 1      # last token starting before the end
        n, first, head = len(ctx_ids), 0, len(q_ids) + 2
        while True:
            last = min(first + room, n)
            feat = {"input_ids": [cls_id] + q_ids + [sep_id] + ctx_ids[first:last] + [sep_id],
                    "token_type_ids": [0] * head + [1] * (last - first + 1),
                    "offsets": [None] * head + ctx_offsets[first:last] + [None],
                    "example_index": index, "example_id": ex.get("id", index)}
            if span is not None:
                inside = first <= tok_start and tok_end < last and tok_start <= tok_end
                feat["start_positions"] = head + tok_start - first if inside else 0
                feat["end_positions"] = head + tok_end - first if inside else 0
            features.append(feat)
            if last >= n:
                break
            first = last - stride
    return features


def _rows(logits, count, what):
    if isinstance(logits, Tensor):
        logits = logits.numpy()
    if isinstance(logits, np.ndarray):
        if logits.ndim != 2 or logits.shape[0] != count:
            raise ValueError(f"{what} must have one row per feature ({count}), got shape "
                             f"{logits.shape}")
        return logits
    if len(logits) != count:
        raise ValueError(f"{what} has {len(logits)} rows for {count} features")
    return [r.numpy() if isinstance(r, Tensor) else np.asarray(r) for r in logits]


def postprocess_qa(examples, features, start_logits, end_logits, max_answer_length=30):
    """Map start/end logits back to answer texts: ``{example_id: text}``.

    For each example, every window is searched for the span ``(s, e)`` of context tokens
    with ``s <= e < s + max_answer_length`` maximising ``start_logits[s] + end_logits[e]``;
    the best span over all windows wins and its text is cut from the context with the
    token offsets. Logit rows may be longer than a feature (padding); extra columns and
    non-context positions are ignored.
    """
    start_logits = _rows(start_logits, len(features), "start_logits")
    end_logits = _rows(end_logits, len(features), "end_logits")
    best = {}
    for f, feat in enumerate(features):
        offs = feat["offsets"]
        ctx = np.array([i for i, o in enumerate(offs) if o is not None], dtype=np.int64)
        if not len(ctx):
            continue
        s_log = np.asarray(start_logits[f], dtype=np.float64)[ctx]
        e_log = np.asarray(end_logits[f], dtype=np.float64)[ctx]
        scores = s_log[:, None] + e_log[None, :]
        gap = ctx[None, :] - ctx[:, None]            # token distance e - s
        scores[(gap < 0) | (gap >= max_answer_length)] = -np.inf
        i, j = np.unravel_index(np.argmax(scores), scores.shape)
        score = scores[i, j]
        k = feat["example_index"]
        if np.isfinite(score) and (k not in best or score > best[k][0]):
            best[k] = (score, offs[ctx[i]][0], offs[ctx[j]][1])
    out = {}
    for k, ex in enumerate(examples):
        key = ex.get("id", k)
        out[key] = ex["context"][best[k][1]:best[k][2]] if k in best else ""
    return out
