"""Extractive QA sets in SQuAD format: SQuAD v1.1 dev (English) and CMRC 2018 dev (Chinese).

Each example is ``{"id", "title", "context", "question", "answers": {"text": [...],
"answer_start": [...]}}`` (the layout of SQuAD's JSON and of Hugging Face ``datasets``).
Only the official dev files are public and small, so we split them by *article* (all
questions about one article go to the same side): a seeded shuffle of the articles,
80% train / 20% test (``seed=0``); ``split="all"`` is the whole dev file.

CMRC 2018 has upstream quirks that are kept as they are: 193 of its 9,657 answers have
``answer_start = -1`` and 7 more point to the wrong place. ``ds.meta["answers_not_at_start"]``
counts them; ``fix_answer_starts=True`` repairs each with the occurrence of the text in
the context nearest to the recorded offset (``meta`` then counts the repaired ones).
"""
from __future__ import annotations

import functools
import json

from .base import DataFormatError, Dataset, seeded_split
from .download import RemoteFile, fetch
from .registry import register

QA_SPLITS = ("train", "test", "all")
ARTICLE_RATIOS = (80, 0, 20)

SQUAD_FILE = RemoteFile(
    "squad_v1.1", "dev-v1.1.json",
    "https://raw.githubusercontent.com/rajpurkar/SQuAD-explorer/"
    "eee5fdbf62f8613a7812b03419e6b29617b74fd1/dataset/dev-v1.1.json",
    "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9")
CMRC_FILE = RemoteFile(
    "cmrc2018", "cmrc2018_dev.json",
    "https://raw.githubusercontent.com/ymcui/cmrc2018/"
    "c0eb1b6ba219847457e6af3180da722bbeb656af/squad-style-data/cmrc2018_dev.json",
    "e9ff74231f05c230c6fa88b84441ee334d97234cbb610991cd94b82db00c7f1f")


def _need(obj, key, kind, where, path):
    if not isinstance(obj, dict) or key not in obj or not isinstance(obj[key], kind) \
            or isinstance(obj[key], bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataFormatError(path, None, f"{where}: expected a field {key!r} of type {names}")
    return obj[key]


def parse_squad_json(text, path):
    """Parse SQuAD-format JSON into a list of articles, each a list of examples."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
    articles = []
    for a, art in enumerate(_need(doc, "data", list, "top level", path)):
        title = art.get("title", "") if isinstance(art, dict) else ""
        examples = []
        for p, para in enumerate(_need(art, "paragraphs", list, f"data[{a}]", path)):
            where = f"data[{a}].paragraphs[{p}]"
            context = _need(para, "context", str, where, path)
            for q, qa in enumerate(_need(para, "qas", list, where, path)):
                w = f"{where}.qas[{q}]"
                answers = qa.get("answers", []) if isinstance(qa, dict) else []
                if not isinstance(answers, list):
                    raise DataFormatError(path, None, f"{w}: 'answers' must be a list")
                texts, starts = [], []
                for k, ans in enumerate(answers):
                    texts.append(_need(ans, "text", str, f"{w}.answers[{k}]", path))
                    starts.append(_need(ans, "answer_start", int, f"{w}.answers[{k}]", path))
                examples.append({"id": str(_need(qa, "id", (str, int), w, path)),
                                 "title": title, "context": context,
                                 "question": _need(qa, "question", str, w, path),
                                 "answers": {"text": texts, "answer_start": starts}})
        articles.append(examples)
    return articles


def answer_ok(context, text, start):
    """True when ``context[start:start + len(text)] == text``."""
    return start >= 0 and context[start:start + len(text)] == text


def check_answers(examples):
    """How many answers do not sit at their ``answer_start``."""
    return sum(not answer_ok(ex["context"], t, s) for ex in examples
               for t, s in zip(ex["answers"]["text"], ex["answers"]["answer_start"]))


def fix_answer_starts(examples):
    """Repair wrong ``answer_start`` values in place with the occurrence of the answer
    nearest to the recorded offset. Returns ``(repaired, not_found)`` counts."""
    repaired = missing = 0
    for ex in examples:
        ctx, ans = ex["context"], ex["answers"]
        for k, (t, s) in enumerate(zip(ans["text"], ans["answer_start"])):
            if answer_ok(ctx, t, s):
                continue
            hits, i = [], ctx.find(t)
            while t and i >= 0:
                hits.append(i)
                i = ctx.find(t, i + 1)
            if hits:
                ans["answer_start"][k] = min(hits, key=lambda h: abs(h - max(s, 0)))
                repaired += 1
            else:
                missing += 1
    return repaired, missing


@functools.lru_cache(maxsize=None)
def _articles(rf):
    path = fetch(rf)
    with open(path, encoding="utf-8") as f:
        return parse_squad_json(f.read(), path)


def _load_qa(rf, name, split, seed, fix):
    articles = _articles(rf)
    idx = range(len(articles)) if split == "all" else \
        seeded_split(len(articles), seed, ARTICLE_RATIOS)[split]
    examples = [dict(ex, answers={"text": list(ex["answers"]["text"]),
                                  "answer_start": list(ex["answers"]["answer_start"])})
                for i in idx for ex in articles[i]]
    meta = {"articles": len(idx), "answers": sum(len(e["answers"]["text"]) for e in examples),
            "answers_not_at_start": check_answers(examples)}
    if fix:
        meta["repaired"], meta["not_found"] = fix_answer_starts(examples)
        meta["answers_not_at_start"] = check_answers(examples)
    return Dataset(examples, None, name, split, meta)


@register("squad_v1.1", QA_SPLITS, "extractive QA (English)", "download",
          "SQuAD v1.1 dev set, split 80/20 by article", files=(SQUAD_FILE,))
def squad(split="train", seed=0, fix_answer_starts=False):
    """SQuAD v1.1 dev (10,570 questions, 48 articles) as QA examples."""
    return _load_qa(SQUAD_FILE, "squad_v1.1", split, seed, fix_answer_starts)


@register("cmrc2018", QA_SPLITS, "extractive QA (Chinese)", "download",
          "CMRC 2018 dev set (SQuAD format), split 80/20 by article", files=(CMRC_FILE,))
def cmrc2018(split="train", seed=0, fix_answer_starts=False):
    """CMRC 2018 dev (3,219 questions, 848 articles) as QA examples; quirks kept."""
    return _load_qa(CMRC_FILE, "cmrc2018", split, seed, fix_answer_starts)
