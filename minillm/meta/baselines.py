"""Few-shot baselines, scored on the same episodes as the meta-learners.

* :class:`BagOfWordsCentroid` -- nearest class centroid on bag-of-words vectors: the
  vocabulary is the lowercased words of the meta-train texts (fixed before any test episode);
  each text is a binary word vector scaled to unit length; a query goes to the class whose
  support mean is nearest in squared Euclidean distance. Nothing is learned but the means of
  the episode's own support set.
* :func:`linear_head_predict` -- a fresh linear classifier ``softmax(f(x) W + b)`` trained
  by Adam on the support embeddings of a frozen encoder ``f`` (meta-trained or not), from
  zero weights, with a little weight decay.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import no_grad, tensor
from ..baselines import BagOfNGrams
from ..optim import AdamW
from .reptile import zero_head

__all__ = ["nearest_centroid", "BagOfWordsCentroid", "linear_head_predict"]


def nearest_centroid(support, query):
    """NumPy: ``support (N, K, D)``, ``query (M, D)`` -> ``(M,)`` index of the nearest class
    mean in squared Euclidean distance (ties go to the lower index)."""
    centroids = support.mean(axis=1)
    d = ((query[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=-1)
    return d.argmin(axis=-1)


def _words(text):
    return tuple(text.lower().split())


class BagOfWordsCentroid:
    """``BagOfWordsCentroid().fit(meta_train_texts).predict(episode)``: see the module
    docstring. Words outside the meta-train vocabulary are dropped."""

    def __init__(self):
        self.bow = BagOfNGrams(ns=(1,), min_count=1)

    def fit(self, texts):
        self.bow.fit([_words(t) for t in texts])
        return self

    def vectors(self, texts):
        """``(len(texts), V)`` binary word vectors divided by their L2 norm (a text with no
        known word stays all zeros)."""
        x = self.bow.transform([_words(t) for t in texts]).dense(binary=True, dtype=np.float64)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm > 0, norm, 1.0)

    def predict(self, episode):
        support = self.vectors(episode.support).reshape(episode.n_way, episode.k_shot, -1)
        return nearest_centroid(support, self.vectors(episode.query))


def linear_head_predict(encoder, episode, steps=100, lr=1e-2, weight_decay=1e-3):
    """Train a zero-initialised ``Linear(D, N)`` on the frozen encoder's support embeddings
    (``steps`` full-batch AdamW steps on the cross-entropy), predict the queries (NumPy
    ``(N*Q,)``). The encoder is only read."""
    encoder.eval()
    with no_grad():
        support = encoder(list(episode.support))
        query = encoder(list(episode.query))
    head = zero_head(encoder, episode.n_way)
    y = tensor(episode.support_labels, device=support.device)
    opt = AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(head(support), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with no_grad():
        return head(query).argmax(axis=-1).numpy()
