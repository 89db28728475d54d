"""Training curves: loss (train and eval) and the learning-rate schedule, as a PNG.

Uses matplotlib's non-interactive Agg backend through an explicit ``Figure`` (no pyplot
state, no display needed, no warnings). Labels are English here; Chinese labels and the
CJK-font question belong to :mod:`minillm.training.metrics`.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_history"]


def _load(history):
    if isinstance(history, (str, Path)):
        with open(history, encoding="utf-8") as f:
            history = json.load(f)
    if not isinstance(history, (list, tuple)) or not all(isinstance(e, dict) for e in history):
        raise TypeError("plot_history: history must be a list of dicts (Trainer.state.history) "
                        "or the path of a history.json")
    return list(history)


def _series(history, key):
    pts = [(e["step"], e[key]) for e in history if key in e and "step" in e
           and e[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_history(history, path, title=None):
    """Draw train/eval loss (left) and learning rate (right) against the step; save to ``path``.

    ``history`` is ``trainer.state.history`` or a ``history.json`` path. Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    history = _load(history)
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax_loss, ax_lr = fig.subplots(1, 2)
    for key, label, style in (("loss", "train loss", "-"), ("eval_loss", "eval loss", "o-")):
        x, y = _series(history, key)
        if x:
            ax_loss.plot(x, y, style, label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Loss")
    if ax_loss.get_legend_handles_labels()[0]:
        ax_loss.legend()
    x, y = _series(history, "learning_rate")
    if x:
        ax_lr.plot(x, y, color="tab:green")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("Learning-rate schedule")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path
