"""Byte-level byte-pair encoding (BPE), as in GPT-2.

**Bytes, not characters.** Text is first encoded to UTF-8, so the base vocabulary is the
256 byte values: every string -- Chinese, emoji, control characters -- can be encoded
and decoded exactly, and no ``<unk>`` token is ever needed. For storage each byte is shown
as a printable character (``pretokenize.bytes_to_unicode``: the space byte is ``Ġ``).

**Pre-tokenization.** Text is cut into words with GPT-2's pattern
(``pretokenize.gpt2_split``) so merges never cross word boundaries: ``" the"`` (with its
leading space) is one word, ``"'s"`` another.

**Training.** Start with every word split into single bytes. Count every adjacent pair
of symbols over the corpus (weighted by word frequency), merge the most frequent pair
``(a, b)`` into a new symbol ``ab`` everywhere, and repeat until the vocabulary has
``vocab_size`` tokens (or ``num_merges`` merges were made, or the best pair occurs fewer
than ``min_frequency`` times). Counts are updated incrementally (``pairs.PairCounts``:
only the words containing the merged pair are revisited) and the best pair comes from a
max-heap with lazy deletion: a heap entry whose count is out of date is re-pushed with
the current count when it surfaces. Ties are broken by the smaller pair of ids, and the
ids follow Hugging Face's trainer (special tokens, then the 256 byte symbols in
code-point order, then merges in order), so training is deterministic -- and gives the
same merges as ``tokenizers.ByteLevelBPETokenizer`` on the same texts.

**Encoding** a word applies the learned merges by *rank*: repeatedly merge the adjacent
pair with the lowest rank (the earliest learned merge), leftmost first, until no pair has
a rank. A heap over the pair positions makes this O(n log n) even for long words (a run
of 10,000 spaces is one "word"). Results are cached per word.

``save_vocab(folder)`` writes GPT-2's two files, ``vocab.json`` and ``merges.txt``;
``BPETokenizer.from_files`` reads them (files written by GPT-2 or by Hugging Face
``tokenizers`` give the same ids as those libraries).
"""
import heapq
import json
import os
from collections import Counter

from .base import Tokenizer, check_special_tokens, check_texts, merge_special_tokens, \
    special_tokens_first
from .pairs import PairCounts
from .pretokenize import bytes_to_unicode, gpt2_spans

_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}
_CACHE_LIMIT = 100_000          # words kept in the per-tokenizer encoding cache


def _to_byte_chars(text):
    """The byte-level string of ``text``: one printable stand-in character per UTF-8 byte."""
    return "".join(_BYTE_TO_CHAR[b] for b in text.encode("utf-8"))


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style); see the module docstring for the algorithm.

        tok = BPETokenizer.train(lines, vocab_size=256 + 1 + 500)
        ids = tok.encode("Hello, 世界 🙂")
        tok.decode(ids)               # 'Hello, 世界 🙂' -- exact for any text
        tok.save_vocab("out/")        # out/vocab.json, out/merges.txt
    """

    # GPT-2's single special token serves as begin, end and padding.
    DEFAULT_SPECIAL_TOKENS = {"bos": "<|endoftext|>", "eos": "<|endoftext|>",
                              "pad": "<|endoftext|>"}

    def __init__(self, vocab, merges, special_tokens=None):
        """``vocab``: token strings in byte-level form, id = position; ``merges``: pairs
        ``(a, b)`` of token strings (or ``"a b"`` lines), in the order they were learned."""
        super().__init__(vocab, special_tokens)
        special_strings = set(self.special_tokens.values())
        self._token_bytes = []
        for i, tok in enumerate(self._id_to_token):
            if tok in special_strings:
                self._token_bytes.append(None)
                continue
            bad = [c for c in tok if c not in _CHAR_TO_BYTE]
            if bad:
                raise ValueError(f"BPETokenizer: token {tok!r} (id {i}) is not a byte-level "
                                 f"token (character {bad[0]!r} is no byte symbol); declare it "
                                 f"in special_tokens if it is a special token")
            self._token_bytes.append(bytes(_CHAR_TO_BYTE[c] for c in tok))
        missing = [b for b in range(256) if _BYTE_TO_CHAR[b] not in self._token_to_id]
        if missing:
            raise ValueError(f"BPETokenizer: the vocabulary lacks {len(missing)} of the 256 "
                             f"byte symbols (e.g. byte {missing[0]}: "
                             f"{_BYTE_TO_CHAR[missing[0]]!r}); a byte-level vocabulary needs "
                             f"all of them")
        self._byte_id = [self._token_to_id[_BYTE_TO_CHAR[b]] for b in range(256)]
        self.merges = []
        self._ranks = {}                  # (id_a, id_b) -> (rank, id of the merged token)
        for rank, m in enumerate(merges):
            a, b = m.split(" ") if isinstance(m, str) else m
            if a + b in special_strings:
                raise ValueError(f"BPETokenizer: merge {rank} ({a!r}, {b!r}) spells the special "
                                 f"token {a + b!r}; choose special tokens that cannot occur "
                                 f"inside one pre-token, such as '<|name|>'")
            ids = [self._token_to_id.get(t) for t in (a, b, a + b)]
            if None in ids:
                missing_tok = (a, b, a + b)[ids.index(None)]
                raise ValueError(f"BPETokenizer: merge {rank} ({a!r}, {b!r}) uses the token "
                                 f"{missing_tok!r}, which is not in the vocabulary")
            self.merges.append((a, b))
            self._ranks.setdefault((ids[0], ids[1]), (rank, ids[2]))
        self._cache = {}

    # ----------------------------------------------------------------- training
    @classmethod
    def train(cls, texts, vocab_size=None, num_merges=None, min_frequency=2,
              special_tokens=None):
        """Learn merges from an iterable of strings.

        vocab_size: stop when the vocabulary (special tokens + 256 bytes + merged tokens)
            has this many tokens; num_merges: or after this many merges (give one or both).
        min_frequency: stop when the most frequent pair occurs fewer times than this.
        special_tokens: ``{name: token}`` overriding ``DEFAULT_SPECIAL_TOKENS``.
        """
        where = "BPETokenizer.train"
        texts = check_texts(texts, where)
        specials = merge_special_tokens(cls.DEFAULT_SPECIAL_TOKENS, special_tokens, where)
        if vocab_size is None and num_merges is None:
            raise ValueError(f"{where}: give vocab_size (e.g. 256 + 1000) or num_merges")
        word_counts = Counter()
        for t in texts:
            for s, e in gpt2_spans(t):
                word_counts[t[s:e]] += 1
        if not word_counts:
            raise ValueError(f"{where}: the corpus is empty (no text to learn merges from)")
        vocab = special_tokens_first(specials)
        vocab += sorted(c for c in _BYTE_TO_CHAR.values() if c not in vocab)
        if vocab_size is not None and vocab_size < len(vocab):
            raise ValueError(f"{where}: vocab_size={vocab_size} is smaller than the "
                             f"{len(vocab)} special and byte tokens it must hold")
        token_to_id = {t: i for i, t in enumerate(vocab)}
        byte_id = [token_to_id[_BYTE_TO_CHAR[b]] for b in range(256)]
        words = sorted(word_counts)                     # a fixed order: deterministic ids
        stats = PairCounts([[byte_id[b] for b in w.encode("utf-8")] for w in words],
                           [word_counts[w] for w in words])
        heap = [(-c, p) for p, c in stats.pair_counts.items()]
        heapq.heapify(heap)
        merges = []
        while heap:
            if vocab_size is not None and len(vocab) >= vocab_size:
                break
            if num_merges is not None and len(merges) >= num_merges:
                break
            neg, pair = heapq.heappop(heap)
            count = stats.pair_counts.get(pair, 0)
            if count != -neg:                           # stale entry: re-push the true count
                if count > 0:
                    heapq.heappush(heap, (-count, pair))
                continue
            if count < min_frequency:
                break
            new_token = vocab[pair[0]] + vocab[pair[1]]
            new_id = token_to_id.get(new_token)
            if new_id is None:                          # (two merges can spell one token)
                new_id = len(vocab)
                vocab.append(new_token)
                token_to_id[new_token] = new_id
            merges.append((vocab[pair[0]], vocab[pair[1]]))
            for p, change in stats.merge(pair, new_id).items():
                if change > 0:
                    heapq.heappush(heap, (-stats.pair_counts[p], p))
        return cls(vocab, merges, specials)

    # ----------------------------------------------------------------- encoding
    def _bpe(self, word):
        """Ids of one pre-token (a str), applying merges lowest rank first."""
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        ids = [self._byte_id[b] for b in word.encode("utf-8")]
        ranks = self._ranks
        if len(ids) > 1:
            # A doubly linked list over the symbols plus a heap of (rank, position).
            n = len(ids)
            nxt = list(range(1, n + 1))
            prv = list(range(-1, n - 1))
            heap = []
            for i in range(n - 1):
                r = ranks.get((ids[i], ids[i + 1]))
                if r is not None:
                    heap.append((r[0], i, ids[i], ids[i + 1]))
            heapq.heapify(heap)
            while heap:
                rank, i, a, b = heapq.heappop(heap)
                j = nxt[i]
                if ids[i] != a or j >= n or ids[j] != b:
                    continue                            # out of date: a neighbour merged
                ids[i] = ranks[(a, b)][1]               # merge j into i
                ids[j] = None
                nxt[i] = nxt[j]
                if nxt[j] < n:
                    prv[nxt[j]] = i
                for left, right in ((prv[i], i), (i, nxt[i])):
                    if left >= 0 and right < n:
                        r = ranks.get((ids[left], ids[right]))
                        if r is not None:
                            heapq.heappush(heap, (r[0], left, ids[left], ids[right]))
            ids = [t for t in ids if t is not None]
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def _encode(self, text):
        out = []
        for s, e in gpt2_spans(text):
            out += self._bpe(text[s:e])
        return out

    def _encode_with_offsets(self, text):
        ids, offsets = [], []
        for s, e in gpt2_spans(text):
            word = text[s:e]
            byte_to_char = [k for k, ch in enumerate(word) for _ in range(len(ch.encode("utf-8")))]
            pos = 0
            for t in self._bpe(word):
                n = len(self._token_bytes[t])
                offsets.append((s + byte_to_char[pos], s + byte_to_char[pos + n - 1] + 1))
                ids.append(t)
                pos += n
        return ids, offsets

    def _decode(self, ids):
        # A slice of a full encoding may cut a character's bytes: those become U+FFFD.
        return b"".join(self._token_bytes[i] for i in ids).decode("utf-8", errors="replace")

    # ----------------------------------------------------------------- files
    def _config(self):
        return {"merges": [f"{a} {b}" for a, b in self.merges]}

    @classmethod
    def _from_config(cls, vocab, special_tokens, config):
        return cls(vocab, config["merges"], special_tokens)

    def save_vocab(self, folder):
        """Write GPT-2's ``vocab.json`` ({token: id}) and ``merges.txt`` into ``folder``;
        returns the two paths."""
        os.makedirs(folder, exist_ok=True)
        vocab_path = os.path.join(folder, "vocab.json")
        merges_path = os.path.join(folder, "merges.txt")
        with open(vocab_path, "w", encoding="utf-8") as f:
            json.dump(self.get_vocab(), f, ensure_ascii=False)
        with open(merges_path, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            f.writelines(f"{a} {b}\n" for a, b in self.merges)
        return vocab_path, merges_path

    @classmethod
    def from_files(cls, vocab_json, merges_txt, special_tokens=None):
        """Load GPT-2-style ``vocab.json`` + ``merges.txt`` (from GPT-2, Hugging Face
        ``tokenizers`` or ``save_vocab``). ``special_tokens`` defaults to those of
        ``DEFAULT_SPECIAL_TOKENS`` that are in the vocabulary (GPT-2's ``<|endoftext|>``)."""
        with open(vocab_json, encoding="utf-8") as f:
            table = json.load(f)
        if not isinstance(table, dict) or not table:
            raise ValueError(f"{vocab_json}: expected a non-empty JSON object token -> id")
        vocab = [None] * len(table)
        for tok, i in table.items():
            if not isinstance(i, int) or not 0 <= i < len(table) or vocab[i] is not None:
                raise ValueError(f"{vocab_json}: token {tok!r} has id {i!r}; ids must be the "
                                 f"distinct integers 0..{len(table) - 1}")
            vocab[i] = tok
        merges = []
        with open(merges_txt, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line or (lineno == 1 and line.startswith("#version")):
                    continue
                parts = line.split(" ")
                if len(parts) != 2:
                    raise ValueError(f"{merges_txt}, line {lineno}: expected two tokens "
                                     f"separated by one space, got {line!r}")
                merges.append(tuple(parts))
        if special_tokens is None:
            special_tokens = {k: v for k, v in cls.DEFAULT_SPECIAL_TOKENS.items() if v in table}
        check_special_tokens(special_tokens, "BPETokenizer.from_files")
        return cls(vocab, merges, special_tokens)
