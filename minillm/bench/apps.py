"""Application benchmarks on labelled public data: intent, sentiment and named entities.

``minillm bench text-classification``: SST-2 (English sentence sentiment; GLUE hides its test
labels, so the validation split is the held-out one) and CLINC150 (150 intents plus
out-of-scope queries; in-scope accuracy and out-of-scope recall, the two numbers of Larson et
al. 2019). Each beside two bag-of-words baselines (word unigrams + bigrams): multinomial naive
Bayes and a logistic regression trained with minillm.

``minillm bench ner``: People's Daily 1998 (PER/LOC/ORG, one tag per character) and WNUT-17
(emerging entities in tweets; six types), entity-level F1 (conlleval). The baseline memorises
the most frequent tag of every training token (``O`` for unseen ones).

The neural rows are one :func:`minillm.tasks.finetune` run each (a 2-layer BERT from
scratch; a byte-level BPE vocabulary for the English sets, characters for Chinese), with its
command stored beside the numbers.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import backend, metrics, tasks
from ..baselines import (BagOfNGrams, MultinomialNB, logreg_predict, memorise_tags,
                         train_bow_logreg)
from .quality import _finish, _header, _logger, cli_flags, new_axes, save_axes
from .qa import _train_bpe

__all__ = ["text_classification", "ner", "MODEL", "MODEL_FAST"]

MODEL = dict(n_layer=2, n_head=4, n_embd=128, num_train_epochs=2.0, batch_size=32)
MODEL_FAST = dict(n_layer=1, n_head=2, n_embd=32, num_train_epochs=1.0, batch_size=8,
                  max_train_examples=64, max_eval_examples=48)
MAX_LENGTH = {"sst2": 64, "clinc150": 32, "peoples_daily_ner": 128, "wnut17": 96}
ENGLISH = ("sst2", "clinc150", "wnut17")
BPE_VOCAB = 8000


def _words(text):
    return tuple(text.lower().split())


def _split_data(task, name, seed, fast, log):
    extra = {k: v for k, v in (MODEL_FAST if fast else {}).items() if k.startswith("max_")}
    cfg = tasks.FinetuneConfig(task=task, dataset=name, seed=seed, progress=False, **extra)
    splits, names = tasks.load_task_data(cfg, log=log)
    return splits, names, "test" if "test" in splits else "validation"


def _tokenizer(name, splits, root, fast):
    """A BPE vocabulary (English) built from the training split, or None (characters)."""
    if name not in ENGLISH:
        return None
    texts = [ex["text"] if "text" in ex else " ".join(ex["tokens"]) for ex in splits["train"]]
    return _train_bpe(texts, 300 if fast else BPE_VOCAB, root / f"{name}-bpe.json")


def _finetune(task, name, root, tok, seed, dev, fast, progress, log):
    kw = {**(MODEL_FAST if fast else MODEL), "max_length": MAX_LENGTH[name], "seed": seed}
    if fast:
        kw["max_length"] = 32
    if tok is not None:
        kw["tokenizer"] = str(tok)
    out = root / name
    command = f"minillm finetune --task {task} --dataset {name} {cli_flags(kw)} --output-dir {out}"
    cfg = tasks.FinetuneConfig(task=task, dataset=name, output_dir=str(out), device=dev,
                               progress=progress, **kw)
    return tasks.finetune(cfg, command=command, log=log), command


def _cls_scores(gold, pred, names):
    macro = metrics.precision_recall_f1(gold, pred, average="macro",
                                        labels=list(range(len(names))))
    return {"accuracy": float(metrics.accuracy(gold, pred)), "macro_f1": float(macro[2]),
            **tasks.out_of_scope_metrics(gold, pred, names)}


def text_classification(device=None, seed=0, fast=False, progress=True, output_dir=None,
                        log=print, datasets=("sst2", "clinc150")):
    """Bag-of-words baselines and a fine-tuned BERT on SST-2 and CLINC150.

    Returns ``rows`` (``[{dataset, model, split, accuracy, macro_f1, in_scope_accuracy?,
    oos_recall?, train_seconds, parameters, command}]``), ``table`` and the common keys.
    """
    say = _logger(log)
    t_start = time.perf_counter()
    dev = str(backend.device(device))
    root = Path(output_dir or "runs/bench/text-classification")
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in datasets:
        splits, names, where = _split_data("classification", name, seed, fast, say)
        y = {s: np.array([ex["label"] for ex in d], dtype=np.int64) for s, d in splits.items()}
        bow = BagOfNGrams((1, 2), min_count=2).fit([_words(ex["text"])
                                                     for ex in splits["train"]])
        X = {s: bow.transform([_words(ex["text"]) for ex in d]) for s, d in splits.items()}
        base = dict(dataset=name, split=where, command="minillm bench text-classification")
        t0 = time.perf_counter()
        nb = MultinomialNB(alpha=1.0).fit(X["train"], y["train"], n_classes=len(names))
        rows.append({**base, "model": "naive Bayes (word 1+2-grams)",
                     **_cls_scores(y[where], nb.predict(X[where]), names),
                     "train_seconds": time.perf_counter() - t0,
                     "parameters": nb.num_parameters})
        with backend.default_device_as(dev):
            lr_model, info = train_bow_logreg(X["train"], y["train"], X["validation"],
                                              y["validation"], epochs=2 if fast else 5,
                                              device=dev, seed=seed, progress=progress)
            pred = logreg_predict(lr_model, X[where], dev)
        rows.append({**base, "model": "logistic regression (word 1+2-grams)",
                     **_cls_scores(y[where], pred, names), "train_seconds": info["train_seconds"],
                     "parameters": int(sum(p.size for p in lr_model.parameters()))})
        res, command = _finetune("classification", name, root,
                                 _tokenizer(name, splits, root, fast), seed, dev, fast,
                                 progress, say)
        r = res[where]
        rows.append({**base, "model": f"BERT {'1x32' if fast else '2x128'} from scratch",
                     "command": command, "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
                     **{k: r[k] for k in ("in_scope_accuracy", "oos_recall") if k in r},
                     "train_seconds": res["train_seconds"], "parameters": res["parameters"]})
        for row in rows[-3:]:
            say(f"{name}: {row['model']}: {where} accuracy {row['accuracy']:.4f}")
    cols = ["dataset", "model", "split", "accuracy", "macro_f1", "in_scope_accuracy",
            "oos_recall", "train_seconds", "parameters"]
    return _done("text-classification", rows, cols, device, seed, fast, t_start, root, say,
                 "accuracy", {"datasets": list(datasets), "model": MODEL,
                              "max_length": MAX_LENGTH, "bpe_vocab": BPE_VOCAB})


def ner(device=None, seed=0, fast=False, progress=True, output_dir=None, log=print,
        datasets=("peoples_daily_ner", "wnut17")):
    """The memorising baseline and a fine-tuned BERT on People's Daily NER and WNUT-17.

    Returns ``rows`` (``[{dataset, model, split, precision, recall, f1, train_seconds,
    parameters, command}]``), ``table`` and the common keys.
    """
    say = _logger(log)
    t_start = time.perf_counter()
    dev = str(backend.device(device))
    root = Path(output_dir or "runs/bench/ner")
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in datasets:
        splits, names, where = _split_data("ner", name, seed, fast, say)
        lower = name in ENGLISH
        t0 = time.perf_counter()
        table = memorise_tags([ex["tokens"] for ex in splits["train"]],
                              [ex["tags"] for ex in splits["train"]], lower)
        gold = [ex["tags"] for ex in splits[where]]
        pred = [[table.get(t.lower() if lower else t, "O") for t in ex["tokens"]]
                for ex in splits[where]]
        m = metrics.ner_f1(gold, pred)
        base = dict(dataset=name, split=where)
        rows.append({**base, "model": "most frequent training tag per token",
                     "command": "minillm bench ner", "precision": m["precision"],
                     "recall": m["recall"], "f1": m["f1"],
                     "train_seconds": time.perf_counter() - t0, "parameters": len(table)})
        res, command = _finetune("ner", name, root, _tokenizer(name, splits, root, fast), seed,
                                 dev, fast, progress, say)
        r = res[where]
        rows.append({**base, "model": f"BERT {'1x32' if fast else '2x128'} from scratch",
                     "command": command, "precision": r["precision"], "recall": r["recall"],
                     "f1": r["f1"], "train_seconds": res["train_seconds"],
                     "parameters": res["parameters"]})
        for row in rows[-2:]:
            say(f"{name}: {row['model']}: {where} entity F1 {row['f1']:.4f}")
    cols = ["dataset", "model", "split", "precision", "recall", "f1", "train_seconds",
            "parameters"]
    return _done("ner", rows, cols, device, seed, fast, t_start, root, say, "f1",
                 {"datasets": list(datasets), "model": MODEL, "max_length": MAX_LENGTH})


def apps_table(rows, cols):
    """``rows`` as a Markdown table over ``cols`` (blank where a row lacks a column)."""
    def cell(v, col):
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.1f}" if col.endswith("seconds") else f"{v:.4f}"
        return f"{v:,}" if isinstance(v, int) else str(v)
    lines = ["| " + " | ".join(c.replace("_", " ") for c in cols) + " |",
             "|" + "|".join("---" if c in ("dataset", "model", "split") else "---:"
                            for c in cols) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c), c) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _done(name, rows, cols, device, seed, fast, t_start, root, say, metric, settings):
    result = _header(name, backend.device(device), seed, fast, settings,
                     {"note": "the baselines in the table are the reference; published "
                              "numbers use far larger pretrained models"})
    result.update(rows=rows, table=apps_table(rows, cols))
    result["total_seconds"] = time.perf_counter() - t_start
    say(result["table"])

    def plot(path):
        fig, ax = new_axes((7, 4))
        labels = [f"{r['dataset']}\n{r['model'].split(' (')[0]}" for r in rows]
        ax.barh(range(len(rows)), [r[metric] for r in rows], color="tab:blue", label=metric)
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(metric)
        save_axes(fig, ax, path, f"minillm bench {name}", "")

    return _finish(result, root, plot, say)
