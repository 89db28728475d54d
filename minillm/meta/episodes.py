"""Few-shot episodes: classes split into disjoint meta-splits, N-way K-shot tasks with queries.

Meta-learning trains on many small classification tasks ("episodes") instead of one big one.
An N-way K-shot episode draws N classes, then K labelled *support* examples and Q *query*
examples of each; a learner sees the support set and is scored on the query set. The classes
are split first, so the classes of the test episodes never appear in meta-training::

    splits = clinc_meta_splits()                  # {"train": {intent: [texts]}, ...}
    sampler = EpisodeSampler(splits["test"], n_way=5, k_shot=5, q_query=15, seed=0)
    episode = sampler.sample()
    episode.support        # 25 texts, class-major: support[c*K:(c+1)*K] belong to class c
    episode.query_labels   # (75,) int64 in [0, 5)

The CLINC150 meta-split (:func:`clinc_meta_splits`): the 150 in-scope intents (sorted by name)
are permuted with ``numpy.random.default_rng(0)`` and cut into 90 meta-train, 30
meta-validation and 30 meta-test intents (:data:`META_SPLIT_SIZES`, :data:`META_SPLIT_SEED`).
Each intent keeps all its 150 examples (CLINC150's train, validation and test splits pooled:
the split that matters here is the one over intents); the out-of-scope examples are left out.
"""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["META_SPLIT_SIZES", "META_SPLIT_SEED", "Episode", "EpisodeSampler", "split_classes",
           "clinc_meta_splits"]

#: intents per meta-split of CLINC150 (150 in all)
META_SPLIT_SIZES = {"train": 90, "validation": 30, "test": 30}
#: the seed of the permutation that assigns the intents to the meta-splits
META_SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Episode:
    """One N-way K-shot task. ``classes[c]`` is the name of label ``c``; ``support`` holds
    ``n_way * k_shot`` texts and ``query`` ``n_way * q_query`` texts, both class-major
    (all examples of class 0, then class 1, ...)."""

    classes: tuple
    support: tuple
    query: tuple
    k_shot: int
    q_query: int

    def __post_init__(self):
        n = len(self.classes)
        for what, texts, per_class, name in (("support", self.support, self.k_shot, "k_shot"),
                                             ("query", self.query, self.q_query, "q_query")):
            if len(texts) != n * per_class:
                raise ValueError(f"Episode: {len(texts)} {what} texts, expected {n} x "
                                 f"{per_class} (n_way x {name}, class-major)")

    @property
    def n_way(self):
        return len(self.classes)

    @property
    def support_labels(self):
        """``(N*K,)`` int64: ``[0]*K + [1]*K + ...``"""
        return np.repeat(np.arange(self.n_way), self.k_shot)

    @property
    def query_labels(self):
        """``(N*Q,)`` int64: ``[0]*Q + [1]*Q + ...``"""
        return np.repeat(np.arange(self.n_way), self.q_query)


def split_classes(classes, sizes=None, seed=META_SPLIT_SEED):
    """``{split: sorted class names}``: the sorted ``classes`` permuted with
    ``default_rng(seed)`` and cut into consecutive blocks of ``sizes[split]`` (a dict, in
    order; default :data:`META_SPLIT_SIZES`). The blocks are disjoint by construction."""
    sizes = dict(META_SPLIT_SIZES if sizes is None else sizes)
    classes = sorted(set(classes))
    if sum(sizes.values()) > len(classes) or min(sizes.values(), default=1) < 1:
        raise ValueError(f"split_classes: sizes {sizes} need {sum(sizes.values())} classes "
                         f"(at least 1 per split), there are {len(classes)}")
    order = np.random.default_rng(seed).permutation(len(classes))
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = sorted(classes[i] for i in order[start:start + n])
        start += n
    return out


class EpisodeSampler:
    """Draws :class:`Episode` s from ``texts_by_class`` (``{class name: [texts]}``) with its
    own ``numpy.random.default_rng(seed)``: the same seed gives the same episodes.

    Each episode picks ``n_way`` distinct classes, then ``k_shot + q_query`` distinct
    examples of each without replacement (the first ``k_shot`` are the support set, the rest
    the query set, so the two never share an example)."""

    def __init__(self, texts_by_class, n_way, k_shot, q_query, seed=0):
        self.texts = {c: list(t) for c, t in sorted(texts_by_class.items())}
        self.classes = list(self.texts)
        self.n_way, self.k_shot, self.q_query = int(n_way), int(k_shot), int(q_query)
        self._check()
        self.rng = np.random.default_rng(seed)

    def _check(self):
        who = "EpisodeSampler"
        if self.n_way < 1 or self.k_shot < 1 or self.q_query < 1:
            raise ValueError(f"{who}: n_way, k_shot and q_query must be at least 1, got "
                             f"{self.n_way}, {self.k_shot}, {self.q_query}")
        if self.n_way > len(self.classes):
            raise ValueError(f"{who}: n_way={self.n_way} is more than the {len(self.classes)} "
                             f"classes of this meta-split")
        need = self.k_shot + self.q_query
        for c, texts in self.texts.items():
            if len(texts) < need:
                raise ValueError(f"{who}: k_shot + q_query = {need} is more than the "
                                 f"{len(texts)} examples of class {c!r}")

    def sample(self):
        """The next episode."""
        picked = self.rng.choice(len(self.classes), self.n_way, replace=False)
        classes = tuple(self.classes[i] for i in picked)
        support, query = [], []
        for c in classes:
            texts = self.texts[c]
            rows = self.rng.choice(len(texts), self.k_shot + self.q_query, replace=False)
            support += [texts[i] for i in rows[:self.k_shot]]
            query += [texts[i] for i in rows[self.k_shot:]]
        return Episode(classes, tuple(support), tuple(query), self.k_shot, self.q_query)

    def episodes(self, n):
        """The next ``n`` episodes, as a list."""
        return [self.sample() for _ in range(n)]


def clinc_meta_splits(sizes=None, seed=META_SPLIT_SEED, per_class=None):
    """CLINC150's in-scope intents as meta-splits: ``{split: {intent: [texts]}}``
    (see the module docstring). ``per_class``: keep only the first that many texts of each
    intent (fast mode)."""
    from .. import datasets  # noqa: PLC0415  (reads $MINILLM_DATA or the cache)
    pooled = {}
    for split in ("train", "validation", "test"):
        ds = datasets.load("clinc150", split=split, oos="exclude")
        for ex in ds:
            pooled.setdefault(ds.label_names[ex["label"]], []).append(ex["text"])
    names = split_classes(pooled, sizes, seed)
    return {split: {c: pooled[c][:per_class] for c in intents}
            for split, intents in names.items()}
