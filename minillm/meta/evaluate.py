"""Scoring few-shot learners: accuracy per episode, and the mean with a 95% interval.

Every learner is a function ``predict(episode) -> (N*Q,) predicted labels``; all are scored
on the same list of test episodes (drawn once, seeded), so their numbers are comparable::

    mean = (1/n) sum_e acc_e,     half-width = 1.96 * std(acc) / sqrt(n)

(``std`` the population standard deviation of the n episode accuracies, as in the few-shot
literature's evaluation code).
"""
from __future__ import annotations

import math

import numpy as np

from .protonet import episode_accuracy

__all__ = ["confidence_interval", "score"]


def confidence_interval(accuracies):
    """``(mean, half_width)`` of the normal-approximation 95% interval of the mean."""
    a = np.asarray(accuracies, dtype=np.float64)
    if a.size == 0:
        raise ValueError("confidence_interval: no accuracies (score at least one episode)")
    return float(a.mean()), float(1.96 * a.std() / math.sqrt(a.size))


def score(predict, episodes):
    """``{"accuracy", "ci95", "episodes", "accuracies"}`` of ``predict`` on ``episodes``."""
    accs = episode_accuracy(predict, episodes)
    mean, half = confidence_interval(accs)
    return {"accuracy": mean, "ci95": half, "episodes": len(episodes),
            "accuracies": [float(x) for x in accs]}
