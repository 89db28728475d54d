"""WordPiece, the subword tokenizer of BERT.

**Basic tokenization** (BERT's ``BasicTokenizer``) turns text into words:

1. drop NUL, U+FFFD and control characters; every whitespace character separates words;
2. every CJK ideograph is a word by itself (Chinese BERT works on characters);
3. optionally lower-case each character and strip accents (NFD, then drop combining
   marks, category Mn) -- ``lowercase=True``, as in ``bert-base-uncased``; BERT
   lower-cases a whole word, we lower-case character by character, which differs only for
   the Greek final sigma;
4. every punctuation character (ASCII symbols and Unicode ``P*``) is a word by itself.

**WordPiece** then splits each word greedily, longest match first: take the longest
prefix of the word that is in the vocabulary, then the longest vocabulary entry that
continues it, written with the ``##`` prefix (``"playing" -> play ##ing``), and so on. If
some part cannot be matched, the *whole word* becomes ``[UNK]``; so does a word longer than
``max_input_chars_per_word`` characters.

**Decoding** joins ``##`` pieces to the piece before them and everything else with one
space. The exact contract: if no word became ``[UNK]``,
``decode(encode(text)) == normalize(text)``, where ``normalize`` joins the basic-tokenized
words with single spaces (``"Hello, World!" -> "hello , world !"``, ``"我爱你" -> "我 爱 你"``).
Text that is already normalized -- lower-case, single spaces, punctuation and CJK
characters separated by spaces -- round-trips exactly.

**Training** (``WordPieceTokenizer.train``) starts from all characters (``##``-prefixed
when not word-initial) and repeatedly merges the adjacent pair with the highest
likelihood score, as described in Hugging Face's course on WordPiece::

    score(a, b) = count(a b) / (count(a) * count(b))

i.e. the pair whose parts appear together most often relative to how often they appear
at all. (The original WordPiece maximises the language-model likelihood gain; this ratio
is its usual approximation. Hugging Face's ``WordPieceTrainer`` instead uses BPE's raw
pair frequency.) Counts are kept incrementally (``pairs.PairCounts``). A merge changes
``count(a)`` and ``count(b)``, which *raises* the score of every other pair containing
``a`` or ``b``; so, unlike BPE, after each merge we push fresh heap entries for all pairs
whose score changed and skip entries whose score is out of date. Ties go to the smaller
pair of ids (ids follow sorted token order), so training is deterministic.
"""
import heapq
import unicodedata
from collections import Counter

from .base import Tokenizer, check_special_tokens, check_texts, merge_special_tokens, \
    special_tokens_first
from .pairs import PairCounts
from .pretokenize import is_cjk

PREFIX = "##"


def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


class WordPieceTokenizer(Tokenizer):
    """BERT's WordPiece tokenizer; see the module docstring for the algorithm.

        tok = WordPieceTokenizer.train(lines, vocab_size=1000)
        tok.tokenize("Unaffable!")        # e.g. ['un', '##aff', '##able', '!']
        tok.encode("hi", add_special_tokens=True)   # [CLS] hi [SEP]
        tok.save_vocab_txt("vocab.txt"); WordPieceTokenizer.from_vocab_txt("vocab.txt")
    """

    DEFAULT_SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]",
                              "mask": "[MASK]"}

    def __init__(self, vocab, special_tokens=None, lowercase=True, strip_accents=None,
                 max_input_chars_per_word=100):
        """strip_accents: ``None`` follows ``lowercase`` (BERT's rule)."""
        super().__init__(vocab, special_tokens)
        self.lowercase = bool(lowercase)
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        if not isinstance(max_input_chars_per_word, int) or max_input_chars_per_word < 1:
            raise ValueError(f"WordPieceTokenizer: max_input_chars_per_word must be a positive "
                             f"int, got {max_input_chars_per_word!r}")
        self.max_input_chars_per_word = max_input_chars_per_word

    # ----------------------------------------------------------------- basic tokenization
    def _normalize_char(self, ch):
        if self.lowercase:
            ch = ch.lower()
        if self.strip_accents:
            ch = "".join(c for c in unicodedata.normalize("NFD", ch)
                         if unicodedata.category(c) != "Mn")
        return ch

    def basic_words(self, text):
        """Basic tokenization: a list of ``(word, origin)`` where ``word`` is the normalized
        word and ``origin[k]`` the index in ``text`` of the character that ``word[k]`` came from."""
        words, chars, origin = [], [], []

        def flush():
            if chars:
                words.append(("".join(chars), list(origin)))
                chars.clear()
                origin.clear()

        for k, ch in enumerate(text):
            if ch == "\x00" or ch == "\ufffd" or _is_control(ch):
                continue
            if _is_whitespace(ch):
                flush()
            elif is_cjk(ch):
                flush()
                words.append((ch, [k]))
            else:
                for c in self._normalize_char(ch):
                    if _is_punctuation(c):
                        flush()
                        words.append((c, [k]))
                    else:
                        chars.append(c)
                        origin.append(k)
        flush()
        return words

    def normalize(self, text):
        """The basic-tokenized words joined by single spaces: what ``decode(encode(text))``
        returns when no word is ``[UNK]``."""
        return " ".join(w for w, _ in self.basic_words(text))

    # ----------------------------------------------------------------- WordPiece
    def _wordpiece(self, word):
        """Greedy longest-match-first split of one word: ``[(id, start, end)]`` or None."""
        if len(word) > self.max_input_chars_per_word:
            return None
        pieces, start, n, get = [], 0, len(word), self._token_to_id.get
        while start < n:
            for end in range(n, start, -1):
                sub = word[start:end] if start == 0 else PREFIX + word[start:end]
                i = get(sub)
                if i is not None and i not in self._special_ids:
                    pieces.append((i, start, end))
                    start = end
                    break
            else:
                return None
        return pieces

    def _encode_with_offsets(self, text):
        ids, offsets = [], []
        for word, origin in self.basic_words(text):
            pieces = self._wordpiece(word)
            if pieces is None:
                if self.unk_id is None:
                    raise ValueError(f"WordPieceTokenizer.encode: word {word!r} cannot be "
                                     f"split into vocabulary pieces and there is no unk token")
                ids.append(self.unk_id)
                offsets.append((origin[0], origin[-1] + 1))
                continue
            for i, s, e in pieces:
                ids.append(i)
                offsets.append((origin[s], origin[e - 1] + 1))
        return ids, offsets

    def _decode(self, ids):
        return self._join([self._id_to_token[i] for i in ids])

    @staticmethod
    def _join(tokens):
        out = []
        for t in tokens:
            if t.startswith(PREFIX) and len(t) > len(PREFIX):
                out.append(t[len(PREFIX):])
            else:
                if out:
                    out.append(" ")
                out.append(t)
        return "".join(out)

    def decode(self, ids, skip_special_tokens=False):
        """Join ``##`` pieces to the previous piece, other tokens (special tokens included)
        with one space; see the module docstring for the round-trip contract."""
        ids = self._checked_ids(ids)
        tokens = [self._id_to_token[i] for i in ids
                  if not (skip_special_tokens and i in self._special_ids)]
        return self._join(tokens)

    # ----------------------------------------------------------------- training
    @classmethod
    def train(cls, texts, vocab_size, min_frequency=1, special_tokens=None, lowercase=True,
              strip_accents=None, max_input_chars_per_word=100):
        """Learn a WordPiece vocabulary of (at most) ``vocab_size`` tokens from an iterable of
        strings with likelihood-scored merges (module docstring). A pair must occur at least
        ``min_frequency`` times to be merged."""
        where = "WordPieceTokenizer.train"
        texts = check_texts(texts, where)
        specials = merge_special_tokens(cls.DEFAULT_SPECIAL_TOKENS, special_tokens, where)
        tok = cls(special_tokens_first(specials) or ["[UNK]"], {}, lowercase, strip_accents,
                  max_input_chars_per_word)                     # only for basic_words
        counts = Counter()
        for t in texts:
            counts.update(w for w, _ in tok.basic_words(t))
        if not counts:
            raise ValueError(f"{where}: the corpus is empty (no words after basic "
                             f"tokenization)")
        words = sorted(counts)
        split = [[w[0]] + [PREFIX + c for c in w[1:]] for w in words]
        vocab = special_tokens_first(specials)
        vocab += sorted({s for w in split for s in w} - set(vocab))
        if vocab_size < len(vocab):
            raise ValueError(f"{where}: vocab_size={vocab_size} is smaller than the "
                             f"{len(vocab)} special tokens and characters of the corpus")
        token_to_id = {t: i for i, t in enumerate(vocab)}
        stats = PairCounts([[token_to_id[s] for s in w] for w in split],
                           [counts[w] for w in words])

        def entry(p):
            c = stats.pair_counts[p]
            return (-c / (stats.symbol_counts[p[0]] * stats.symbol_counts[p[1]]), p)

        heap = [entry(p) for p, c in stats.pair_counts.items() if c >= min_frequency]
        heapq.heapify(heap)
        while heap and len(vocab) < vocab_size:
            neg, pair = heapq.heappop(heap)
            if stats.pair_counts.get(pair, 0) < min_frequency or entry(pair)[0] != neg:
                continue                       # gone, or a fresher entry is in the heap
            a, b = vocab[pair[0]], vocab[pair[1]]
            new_token = a + b[len(PREFIX):]
            new_id = token_to_id.get(new_token)
            if new_id is None:
                new_id = len(vocab)
                vocab.append(new_token)
                token_to_id[new_token] = new_id
            touched = set(stats.merge(pair, new_id))
            for s in (*pair, new_id):          # symbol counts changed: so did these scores
                live = {p for p in stats.pairs_with[s] if p in stats.pair_counts}
                stats.pairs_with[s] = live
                touched |= live
            for p in sorted(touched):
                if stats.pair_counts.get(p, 0) >= min_frequency:
                    heapq.heappush(heap, entry(p))
        return cls(vocab, specials, lowercase, strip_accents, max_input_chars_per_word)

    # ----------------------------------------------------------------- files
    def _config(self):
        return {"lowercase": self.lowercase, "strip_accents": self.strip_accents,
                "max_input_chars_per_word": self.max_input_chars_per_word}

    def save_vocab_txt(self, path):
        """Write BERT's ``vocab.txt``: one token per line, line number = id."""
        bad = [t for t in self._id_to_token if "\n" in t or "\r" in t]
        if bad:
            raise ValueError(f"WordPieceTokenizer.save_vocab_txt: token {bad[0]!r} contains a "
                             f"line break and cannot be written one per line")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(t + "\n" for t in self._id_to_token)

    @classmethod
    def from_vocab_txt(cls, path, special_tokens=None, lowercase=True, strip_accents=None,
                       max_input_chars_per_word=100):
        """Read BERT's ``vocab.txt``. ``special_tokens`` defaults to those of
        ``[PAD] [UNK] [CLS] [SEP] [MASK]`` present in the file."""
        with open(path, encoding="utf-8", newline="") as f:
            vocab = [line.rstrip("\r\n") for line in f]
        empty = [k + 1 for k, t in enumerate(vocab) if not t]
        if empty:
            raise ValueError(f"{path}: line {empty[0]} is empty; vocab.txt has one token per "
                             f"line")
        if special_tokens is None:
            present = set(vocab)
            special_tokens = {k: v for k, v in cls.DEFAULT_SPECIAL_TOKENS.items() if v in present}
        check_special_tokens(special_tokens, "WordPieceTokenizer.from_vocab_txt")
        return cls(vocab, special_tokens, lowercase, strip_accents, max_input_chars_per_word)
