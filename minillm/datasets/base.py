"""The small pieces every loader shares: the Dataset container, errors, seeded splits.

A loader returns plain Python structures: a ``str`` or a ``list`` for text corpora, and a
:class:`Dataset` (a list of dict examples plus ``label_names``) for labelled data.
"""
from __future__ import annotations

import random


class DatasetError(ValueError):
    """A dataset request that cannot be served (unknown name, split or option)."""


class DataFormatError(ValueError):
    """A data file that does not parse; the message names the file and the line."""

    def __init__(self, path, lineno, message):
        self.path, self.lineno = str(path), lineno
        where = f"{path}, line {lineno}" if lineno is not None else f"{path}"
        super().__init__(f"{where}: {message}")


class Dataset:
    """A list of examples (dicts) with the names of its labels.

    ``len(ds)``, ``ds[i]`` (a dict), ``ds[i:j]`` (a list), iteration, and the attributes
    ``examples``, ``label_names`` (``None`` for unlabelled data), ``name``, ``split`` and
    ``meta`` (a dict of counts and notes, e.g. how many duplicates were removed).
    """

    def __init__(self, examples, label_names=None, name=None, split=None, meta=None):
        self.examples = list(examples)
        self.label_names = list(label_names) if label_names is not None else None
        self.name = name
        self.split = split
        self.meta = dict(meta or {})

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        return self.examples[index]

    def __iter__(self):
        return iter(self.examples)

    def __repr__(self):
        labels = f", {len(self.label_names)} labels" if self.label_names is not None else ""
        keys = ", ".join(self.examples[0]) if self.examples else ""
        return (f"Dataset({self.name or 'unnamed'}/{self.split or '-'}: {len(self)} examples"
                f"{labels}; fields: {keys})")

    def label_id(self, name):
        """The integer id of a label name."""
        try:
            return self.label_names.index(name)
        except (AttributeError, ValueError):
            raise DatasetError(f"{name!r} is not a label of {self.name}; labels: "
                               f"{self.label_names}") from None

    def map(self, fn):
        """A new Dataset whose examples are ``fn(example)`` (same labels, name, split)."""
        return Dataset([fn(ex) for ex in self.examples], self.label_names, self.name,
                       self.split, self.meta)


SPLIT_RATIOS = (80, 10, 10)


def split_sizes(n, ratios=SPLIT_RATIOS):
    """Sizes of train/validation/test for ``n`` items: validation and test get
    ``n * ratio // 100`` items each, train gets the rest."""
    n_val = n * ratios[1] // 100
    n_test = n * ratios[2] // 100
    return n - n_val - n_test, n_val, n_test


def seeded_split(n, seed, ratios=SPLIT_RATIOS, sort=True):
    """Split ``range(n)`` into train/validation/test index lists with a seeded shuffle.

    Uses :class:`random.Random` (its shuffle is stable across Python versions). With
    ``sort=True`` each split keeps the original order of its items, which keeps text
    corpora readable; otherwise the shuffled order is kept.
    """
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_train, n_val, _ = split_sizes(n, ratios)
    parts = {"train": order[:n_train], "validation": order[n_train:n_train + n_val],
             "test": order[n_train + n_val:]}
    if sort:
        parts = {k: sorted(v) for k, v in parts.items()}
    return parts


def count_entities(examples, field="tags"):
    """Count BIO entities per type: ``{'PER': 12, ...}`` (a span starts at each ``B-`` tag,
    or at an ``I-`` tag that does not continue an entity of the same type)."""
    counts = {}
    for ex in examples:
        prev = "O"
        for tag in ex[field]:
            if tag.startswith("B-") or (tag.startswith("I-") and prev[2:] != tag[2:]):
                counts[tag[2:]] = counts.get(tag[2:], 0) + 1
            prev = tag
    return dict(sorted(counts.items()))
