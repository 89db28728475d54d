"""Prototypical networks (Snell, Swersky & Zemel, 2017).

Embed the support set with an encoder f, average each class's embeddings into a prototype,
and classify a query by a softmax over its negative squared Euclidean distances to them::

    c_k        = (1 / K) sum_{i: y_i = k} f(x_i)                  (prototypes, (N, D))
    d(q, c_k)  = ||f(q) - c_k||^2                                 (distances, (M, N))
    p(y=k | q) = exp(-d(q, c_k)) / sum_k' exp(-d(q, c_k'))
    J          = -(1 / M) sum_q log p(y_q | q)                    (the episode's loss)

:func:`train_protonet` minimises J over episodes of the meta-train classes with AdamW and
keeps the weights that score best on meta-validation episodes.
"""
from __future__ import annotations

import time

import numpy as np

from .. import functional as F
from ..autograd import no_grad, tensor
from ..optim import AdamW
from ..training.trainer import progress_bar

__all__ = ["prototypes", "squared_distances", "prototypical_logits", "prototypical_loss",
           "episode_embeddings", "protonet_predict", "train_protonet", "episode_accuracy"]


def prototypes(support):
    """``(N, K, D)`` support embeddings -> ``(N, D)`` class means."""
    return support.mean(axis=1)


def squared_distances(x, c):
    """``(M, D)``, ``(N, D)`` -> ``(M, N)``: ``||x_m - c_n||^2``."""
    diff = x.unsqueeze(1) - c.unsqueeze(0)                 # (M, N, D)
    return (diff * diff).sum(axis=-1)


def prototypical_logits(support, query):
    """``-d(query, prototypes(support))``: ``(N, K, D)``, ``(M, D)`` -> ``(M, N)``."""
    return -squared_distances(query, prototypes(support))


def prototypical_loss(support, query, query_labels):
    """The episode loss J: cross-entropy of the softmax over negative squared distances.
    ``query_labels``: ``(M,)`` class indices in ``[0, N)``."""
    return F.cross_entropy(prototypical_logits(support, query), query_labels)


def episode_embeddings(encoder, episode):
    """``(support (N, K, D), query (N*Q, D))``: the episode's texts embedded in one batch."""
    emb = encoder(list(episode.support) + list(episode.query))
    n_support = episode.n_way * episode.k_shot
    support = emb[:n_support].reshape(episode.n_way, episode.k_shot, emb.shape[-1])
    return support, emb[n_support:]


def _labels(episode, dev):
    return tensor(episode.query_labels, device=dev)


def protonet_predict(encoder, episode):
    """The predicted class of each query of ``episode`` (NumPy ``(N*Q,)``), in eval mode."""
    encoder.eval()
    with no_grad():
        support, query = episode_embeddings(encoder, episode)
        return prototypical_logits(support, query).argmax(axis=-1).numpy()


def episode_accuracy(predict, episodes):
    """The query accuracy of ``predict(episode)`` on each episode, as a NumPy array."""
    return np.array([float((predict(ep) == ep.query_labels).mean()) for ep in episodes])


def train_protonet(encoder, sampler, steps, lr=1e-3, weight_decay=0.01, val_episodes=None,
                   eval_every=100, progress=True, log=None):
    """Minimise the prototypical loss on ``steps`` episodes drawn from ``sampler`` (AdamW).
    Every ``eval_every`` steps (and at the end) the mean accuracy on ``val_episodes`` is
    measured and the best weights are kept (loaded back at the end).

    Returns a history ``{"step", "loss", "val_step", "val_accuracy", "best_step",
    "seconds"}`` (``loss``: the training loss of every step)."""
    opt = AdamW(encoder.parameters(), lr=lr, weight_decay=weight_decay)
    hist = {"step": [], "loss": [], "val_step": [], "val_accuracy": [], "best_step": 0}
    best, t0 = (-1.0, None), time.perf_counter()
    bar = progress_bar(steps, "protonet", disable=not progress)
    for step in range(1, steps + 1):
        encoder.train()
        episode = sampler.sample()
        support, query = episode_embeddings(encoder, episode)
        loss = prototypical_loss(support, query, _labels(episode, query.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist["step"].append(step)
        hist["loss"].append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{hist['loss'][-1]:.3f}")
        if val_episodes and (step % eval_every == 0 or step == steps):
            best = keep_best(lambda ep: protonet_predict(encoder, ep), val_episodes, step,
                             hist, best, lambda: {k: v.numpy().copy()
                                                  for k, v in encoder.state_dict().items()}, log)
    bar.close()
    if best[1] is not None:
        encoder.load_state_dict(best[1])
    hist["seconds"] = time.perf_counter() - t0
    return hist


def keep_best(predict, episodes, step, hist, best, snapshot, log=None, name=""):
    """Record the mean accuracy of ``predict`` on the validation ``episodes`` at ``step`` in
    ``hist``; returns ``(accuracy, snapshot())`` when it beats ``best[0]``, else ``best``."""
    acc = float(episode_accuracy(predict, episodes).mean())
    hist["val_step"].append(step)
    hist["val_accuracy"].append(acc)
    if log is not None:
        log(f"  step {step}: meta-validation accuracy {acc:.4f}{name}")
    if acc > best[0]:
        hist["best_step"] = step
        return acc, snapshot()
    return best
