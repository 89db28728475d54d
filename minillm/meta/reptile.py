"""Reptile (Nichol, Achiam & Schulman, 2018): a first-order meta-learner of an initialisation.

For each meta-training episode, start from the meta-weights theta, train a copy on the episode
for a few steps (the inner loop) to get W, then move theta towards W::

    W     = Adam^k(theta; L_episode)        (k inner steps on the episode's examples)
    theta = theta + epsilon * (W - theta)   (epsilon annealed linearly to 0)

No second derivatives, no held-out split inside the episode: the update direction itself
pulls theta towards weights that adapt fast to every task. The output layer cannot be
meta-learned across episodes whose labels are permuted and whose N varies, so each episode
gets a fresh N-way linear head initialised at zero (all classes equally likely at the start);
theta is the encoder's weights. At test time the same inner loop adapts a copy of theta and
the fresh head on the support set only, and the query set is scored.
"""
from __future__ import annotations

import time

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import no_grad, tensor
from ..nn import Linear, init
from ..optim import Adam
from ..training.trainer import progress_bar
from .protonet import keep_best

__all__ = ["zero_head", "adapt", "reptile_predict", "train_reptile"]


def zero_head(encoder, n_way):
    """A fresh ``Linear(encoder.hidden_size, n_way)`` with zero weight and bias, on the
    encoder's device and in its dtype."""
    first = next(iter(encoder.parameters()))
    with backend.default_device_as(first.device), backend.default_dtype_as(first.dtype):
        head = Linear(encoder.hidden_size, n_way)
    init.zeros_(head.weight)
    init.zeros_(head.bias)
    return head


def adapt(encoder, head, texts, labels, steps, lr, head_lr=1e-2):
    """``steps`` full-batch Adam steps (beta1 = 0, as in the Reptile paper) of the encoder
    (learning rate ``lr``) and ``head`` (``head_lr``: a zero head must move fast to give the
    encoder a gradient) on ``texts`` with integer ``labels`` (NumPy); returns the last loss."""
    opt = Adam([{"params": list(encoder.parameters()), "lr": lr},
                {"params": list(head.parameters()), "lr": head_lr}], betas=(0.0, 0.999))
    encoder.train()
    y = None
    loss = None
    for _ in range(steps):
        h = encoder(texts)
        y = tensor(labels, device=h.device) if y is None else y
        loss = F.cross_entropy(head(h), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss


def _snapshot(params):
    return [p.data.copy() for p in params]


def _restore(params, values, epsilon=1.0):
    """``p <- theta + epsilon * (p - theta)`` for each parameter (epsilon 1: keep p,
    epsilon 0: back to theta)."""
    with no_grad():
        for p, theta in zip(params, values):
            p.copy_(theta + epsilon * (p.data - theta))


def reptile_predict(encoder, episode, steps=10, lr=1e-3, head_lr=1e-2):
    """Adapt a copy of the encoder and a zero head on the episode's support set, predict its
    queries (NumPy ``(N*Q,)``); the encoder's weights are left as they were."""
    params = list(encoder.parameters())
    theta = _snapshot(params)
    try:
        head = zero_head(encoder, episode.n_way)
        adapt(encoder, head, list(episode.support), episode.support_labels, steps, lr, head_lr)
        encoder.eval()
        with no_grad():
            return head(encoder(list(episode.query))).argmax(axis=-1).numpy()
    finally:
        _restore(params, theta, epsilon=0.0)


def train_reptile(encoder, sampler, steps, inner_steps=5, inner_lr=1e-3, head_lr=1e-2,
                  epsilon=1.0, val_episodes=None, eval_every=100, test_steps=10, progress=True,
                  log=None):
    """Reptile on ``steps`` episodes of ``sampler`` (support and query sets together are the
    episode's training data). The outer step size falls linearly from ``epsilon`` to 0.
    Every ``eval_every`` steps the accuracy of :func:`reptile_predict` (``test_steps`` inner
    steps) on ``val_episodes`` is recorded and the best meta-weights are kept.

    Returns ``{"step", "loss", "val_step", "val_accuracy", "best_step", "seconds"}``."""
    params = list(encoder.parameters())
    hist = {"step": [], "loss": [], "val_step": [], "val_accuracy": [], "best_step": 0}
    best, t0 = (-1.0, None), time.perf_counter()
    bar = progress_bar(steps, "reptile", disable=not progress)
    for step in range(1, steps + 1):
        episode = sampler.sample()
        texts = list(episode.support) + list(episode.query)
        labels = np.concatenate([episode.support_labels, episode.query_labels])
        theta = _snapshot(params)
        head = zero_head(encoder, episode.n_way)
        loss = adapt(encoder, head, texts, labels, inner_steps, inner_lr, head_lr)
        _restore(params, theta, epsilon * (1 - (step - 1) / steps))
        hist["step"].append(step)
        hist["loss"].append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{hist['loss'][-1]:.3f}")
        if val_episodes and (step % eval_every == 0 or step == steps):
            best = keep_best(lambda ep: reptile_predict(encoder, ep, test_steps, inner_lr,
                                                        head_lr),
                             val_episodes, step, hist, best, lambda: _snapshot(params), log,
                             " (Reptile)")
    bar.close()
    if best[1] is not None:
        _restore(params, best[1], epsilon=0.0)
    hist["seconds"] = time.perf_counter() - t0
    return hist
