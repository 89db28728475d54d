"""Classification without fine-tuning: ``minillm bench prompting``.

GPT-3 (Brown et al. 2020) classified by prompting alone; Zhao et al. (2021, "Calibrate before
use") showed that a small LM mostly answers with the label word it prefers whatever the text,
and that dividing by that preference -- measured on *content-free* inputs such as "N/A" --
recovers much of the accuracy (:mod:`minillm.finetune.prompting`). This benchmark asks
whether minillm's own pretrained bodies can do it: the GPTs of ``bench pretraining-payoff``
(general corpus, and general + the task's unlabelled texts) prompted zero-shot and with
``SHOTS`` demonstrations, each raw and calibrated, against the majority class.

A user cannot tune a prompt on the test set, so neither does the benchmark: for each body and
number of shots the template (from a small table per dataset) and the calibration choice are
the ones with the best accuracy on a validation sample; only that choice is scored on the
test split. The bodies come from (or are trained into) the pretraining-payoff folder beside
the output folder.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ... import backend
from .. import tasks
from ...datasets import load as load_dataset
from .payoff import PAYOFF_DATASETS, _bodies
from .quality import _finish, _header, _logger, new_axes

__all__ = ["prompting_accuracy", "TEMPLATES", "SHOTS"]

# (template, verbalizer) candidates per dataset; each template ends its example with "\n" so
# that demonstrations chain one per line, as the bodies' corpora have one text per line
TEMPLATES = {
    "chinese_reviews": [
        ("{text}，{label}\n", {"negative": "不推荐", "positive": "很推荐"}),
        ("{text}总的来说很{label}\n", {"negative": "差", "positive": "好"}),
        ("评论：{text}\n情感：{label}\n", {"negative": "差", "positive": "好"}),
    ],
    "sst2": [
        ("{text} it was{label}\n", {"negative": " bad", "positive": " good"}),
        ("{text} overall ,{label}\n", {"negative": " awful", "positive": " great"}),
        ("review : {text}\nsentiment :{label}\n", {"negative": " negative",
                                                  "positive": " positive"}),
    ],
}
SHOTS = (0, 2)
DEMO_MAX_CHARS = 24            # demonstrations short enough to leave the query room
VALIDATION_SAMPLE = 500
CONTENT_FREE = ("N/A", "")


def _texts_labels(ds, n=None, seed=0):
    idx = np.arange(len(ds)) if n is None or n >= len(ds) else \
        np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False))
    examples = [ds[int(i)] for i in idx]
    return [ex["text"] for ex in examples], [ds.label_names[ex["label"]] for ex in examples]


def _accuracy(scores, names, gold):
    return float(np.mean([names[i] == g for i, g in zip(scores.argmax(axis=1), gold)]))


def _classifier(body, template, verbalizer, demos):
    """An in-context classifier on ``body`` = ``(GPT, tokenizer)``."""
    from ...finetune import InContextClassifier  # noqa: PLC0415
    return InContextClassifier(*body, template, verbalizer, demonstrations=demos)


def _scores(clf, texts):
    """``(raw, calibrated)`` label scores of ``texts`` (one pass over the model)."""
    raw = clf.raw_scores(texts)
    clf.calibrate(CONTENT_FREE)
    return raw, raw - clf.log_prior


def _demonstrations(train, shots, seed):
    from ...finetune import select_demonstrations  # noqa: PLC0415
    short = [{"text": ex["text"], "label": train.label_names[ex["label"]]} for ex in train
             if len(ex["text"]) <= DEMO_MAX_CHARS]
    return select_demonstrations(short, shots, seed=seed) if shots else []


def _choose(name, body, demos, val, log):
    """The (template, verbalizer, calibrated) with the best validation accuracy, and every
    candidate's validation accuracies."""
    tried, best = [], None
    for template, verbalizer in TEMPLATES[name]:
        clf = _classifier(body, template, verbalizer, demos)
        raw, cal = _scores(clf, val[0])
        for calibrated, s in ((False, raw), (True, cal)):
            acc = _accuracy(s, clf.labels, val[1])
            tried.append(dict(template=template, verbalizer=verbalizer,
                              calibrated=calibrated, validation_accuracy=acc))
            if best is None or acc > best["validation_accuracy"]:
                best = tried[-1]
        log(f"  {template!r}: validation {tried[-2]['validation_accuracy']:.4f} raw, "
            f"{tried[-1]['validation_accuracy']:.4f} calibrated")
    return best, tried


def _row(name, arm, model_dir, shots, val, test, train, seed, log):
    """One body, one number of shots: choose on validation, score on test."""
    from ...models import auto  # noqa: PLC0415
    body = (auto.load_model(model_dir), tasks.load_tokenizer(model_dir))
    demos = _demonstrations(train, shots, seed)
    log(f"{name}, {arm}, {shots}-shot:")
    best, tried = _choose(name, body, demos, val, log)
    clf = _classifier(body, best["template"], best["verbalizer"], demos)
    raw, cal = _scores(clf, test[0])
    s = cal if best["calibrated"] else raw
    pred = np.bincount(s.argmax(axis=1), minlength=len(clf.labels)) / len(test[0])
    row = dict(dataset=name, body=arm, shots=shots, demonstrations=demos,
               template=best["template"], verbalizer=best["verbalizer"],
               calibrated=best["calibrated"],
               validation_accuracy=best["validation_accuracy"],
               test_accuracy=_accuracy(s, clf.labels, test[1]),
               test_accuracy_raw=_accuracy(raw, clf.labels, test[1]),
               test_accuracy_calibrated=_accuracy(cal, clf.labels, test[1]),
               predicted_shares=dict(zip(clf.labels, pred.tolist())),
               demonstrations_dropped=clf.demonstrations_dropped, tried=tried)
    log(f"  chosen {best['template']!r}{' calibrated' if best['calibrated'] else ''}: test "
        f"{row['test_accuracy']:.4f} (raw {row['test_accuracy_raw']:.4f}, calibrated "
        f"{row['test_accuracy_calibrated']:.4f})")
    return row


def prompting_table(rows, majority):
    lines = ["| dataset | body | shots | chosen prompt | calibrated | validation | test | "
             "test raw / calibrated | majority class |",
             "|---|---|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        verb = "/".join(r["verbalizer"].values())
        lines.append(f"| {r['dataset']} | {r['body']} | {r['shots']} | "
                     f"`{r['template']!r}` ({verb}) | {'yes' if r['calibrated'] else 'no'} | "
                     f"{r['validation_accuracy']:.4f} | **{r['test_accuracy']:.4f}** | "
                     f"{r['test_accuracy_raw']:.4f} / {r['test_accuracy_calibrated']:.4f} | "
                     f"{majority[r['dataset']]:.4f} |")
    return "\n".join(lines)


def _plot(rows, majority, path):
    names = list(majority)
    fig, axes = new_axes((5 * len(names), 3.8), ncols=len(names))
    for ax, name in zip(axes, names):
        mine = [r for r in rows if r["dataset"] == name]
        x = np.arange(len(mine))
        ax.bar(x - 0.2, [r["test_accuracy_raw"] for r in mine], 0.4, label="raw",
               color="tab:gray")
        ax.bar(x + 0.2, [r["test_accuracy_calibrated"] for r in mine], 0.4,
               label="calibrated", color="tab:blue")
        ax.axhline(majority[name], color="black", linestyle="--", label="majority class")
        ax.set_xticks(x, [f"{r['body']}\n{r['shots']}-shot" for r in mine], fontsize=7)
        ax.set_ylim(0.3, 1.0)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{name}: prompting, no fine-tuning")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def prompting_accuracy(device=None, seed=0, fast=False, progress=True, output_dir=None,
                       log=print, datasets=("chinese_reviews",), bodies=None):
    """Zero- and few-shot in-context classification with the pretraining-payoff bodies
    (trained into ``bodies`` when missing; default: the ``pretraining-payoff`` folder beside
    ``output_dir``, so ``runs/bench/pretraining-payoff`` for the default output),
    raw and calibrated, the prompt chosen on validation; returns ``rows``, ``majority``
    (the test share of the most frequent class) and ``table``, and writes
    ``results.json`` into ``output_dir``."""
    say = _logger(log)
    unknown = [d for d in datasets if d not in TEMPLATES]
    if unknown:
        raise ValueError(f"prompting: no prompts for {', '.join(unknown)}; choose from "
                         f"{', '.join(TEMPLATES)}")
    t_start = time.perf_counter()
    dev = str(backend.device(device))
    root = Path(output_dir or "runs/bench/prompting")
    body_root = Path(bodies) if bodies else root.parent / "pretraining-payoff"
    rows, majority = [], {}
    n_val, n_test = (16, 24) if fast else (VALIDATION_SAMPLE, None)
    for name in datasets:
        models, _ = _bodies(name, PAYOFF_DATASETS[name], body_root, fast, dev, progress, say)
        split = {s: load_dataset(name, split=s) for s in ("train", "validation", "test")}
        val = _texts_labels(split["validation"], n_val, seed)
        test = _texts_labels(split["test"], n_test, seed)
        majority[name] = max(test[1].count(c) for c in set(test[1])) / len(test[1])
        for arm, model_dir in models.items():
            for shots in SHOTS:
                rows.append(_row(name, arm, model_dir, shots, val, test, split["train"],
                                 seed, say))
    result = _header("prompting", dev, seed, fast,
                     {"datasets": list(datasets), "shots": list(SHOTS), "bodies": str(body_root),
                      "validation_sample": n_val, "content_free": list(CONTENT_FREE)},
                     {"Zhao et al. 2021": "contextual calibration", "target":
                      "chinese_reviews without fine-tuning >= 0.65 (issue 18)"})
    result.update(rows=rows, majority=majority, table=prompting_table(rows, majority),
                  total_seconds=time.perf_counter() - t_start)
    say(result["table"])
    return _finish(result, root, lambda path: _plot(rows, majority, path), say)
