"""Character-level tokenizer: one token per Unicode character.

The simplest tokenizer: the vocabulary is the set of characters seen in training (plus
special tokens), each character is one token. It works for any script -- Chinese
included, where a character is already a meaningful unit -- and needs no
pre-tokenization. Its weakness is long sequences (one id per character).

Training counts characters and keeps those seen at least ``min_freq`` times, most frequent
first (ties in code-point order), so ids are deterministic. A character outside the
vocabulary becomes ``<unk>``. ``decode(encode(text)) == text`` exactly whenever every
character of ``text`` is in the vocabulary.
"""
from collections import Counter

from ...validation import check_int
from .base import Tokenizer, check_texts, merge_special_tokens, special_tokens_first


class CharTokenizer(Tokenizer):
    """One token per character.

        tok = CharTokenizer.train(["hello world", "你好，世界"])
        tok.encode("hello")          # [ids of h, e, l, l, o]
        tok.decode(tok.encode("你好"))  # '你好'
    """

    DEFAULT_SPECIAL_TOKENS = {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}

    @classmethod
    def train(cls, texts, min_freq=1, vocab_size=None, special_tokens=None):
        """Build the vocabulary from an iterable of strings.

        min_freq: keep characters seen at least this many times.
        vocab_size: optional cap on the vocabulary size (special tokens included).
        special_tokens: ``{name: token}`` overriding ``DEFAULT_SPECIAL_TOKENS`` (a ``None``
            value removes one); names are pad, unk, bos, eos, cls, sep, mask.
        """
        texts = check_texts(texts, "CharTokenizer.train")
        specials = merge_special_tokens(cls.DEFAULT_SPECIAL_TOKENS, special_tokens,
                                        "CharTokenizer.train")
        counts = Counter()
        for t in texts:
            counts.update(t)
        if not counts:
            raise ValueError("CharTokenizer.train: the corpus is empty (no characters); pass "
                             "an iterable of non-empty strings")
        if min_freq < 1:
            raise ValueError(f"CharTokenizer.train: min_freq must be >= 1, got {min_freq}")
        vocab = special_tokens_first(specials)
        vocab += [c for c in _by_frequency(counts, min_freq) if c not in vocab]
        if vocab_size is not None:
            if vocab_size <= len(special_tokens_first(specials)):
                raise ValueError(f"CharTokenizer.train: vocab_size={vocab_size} leaves no room "
                                 f"for characters after the special tokens")
            vocab = vocab[:vocab_size]
        if len(vocab) == len(special_tokens_first(specials)):
            raise ValueError(f"CharTokenizer.train: no character occurs min_freq={min_freq} "
                             f"times; the vocabulary would be empty")
        return cls(vocab, specials)

    def extended(self, texts, min_freq=1):
        """``(tokenizer, added)``: a copy whose vocabulary also holds the characters of
        ``texts`` seen at least ``min_freq`` times that this one lacks. They are appended
        (most frequent first), so every old id keeps its token -- and a model trained with
        this tokenizer keeps its meaning once its embeddings are grown to match
        (``model.resize_token_embeddings(tokenizer.vocab_size)``)."""
        texts = check_texts(texts, "CharTokenizer.extended")
        min_freq = check_int(min_freq, "min_freq", "CharTokenizer.extended")
        counts = Counter()
        for t in texts:
            counts.update(t)
        added = [c for c in _by_frequency(counts, min_freq) if c not in self._token_to_id]
        return type(self)(self._id_to_token + added, self.special_tokens), added

    def _encode_with_offsets(self, text):
        ids, get, unk = [], self._token_to_id.get, self.unk_id
        for ch in text:
            i = get(ch)
            if i is None or i in self._special_ids:
                if unk is None:
                    raise ValueError(f"CharTokenizer.encode: character {ch!r} is not in the "
                                     f"vocabulary and the tokenizer has no unk token")
                i = unk
            ids.append(i)
        return ids, [(k, k + 1) for k in range(len(text))]

    def _decode(self, ids):
        return "".join(self._id_to_token[i] for i in ids)


def _by_frequency(counts, min_freq):
    """The characters of ``counts`` seen at least ``min_freq`` times, most frequent first
    (ties by code point): the order of a trained vocabulary and of its extensions."""
    return sorted((c for c, n in counts.items() if n >= min_freq), key=lambda c: (-counts[c], c))
