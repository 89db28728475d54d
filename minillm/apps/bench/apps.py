"""Application benchmarks on labelled public data: intent, sentiment and named entities.

``minillm bench text-classification``: SST-2 (English sentence sentiment; GLUE hides its test
labels, so the validation split is the held-out one) and CLINC150 (150 intents plus
out-of-scope queries; in-scope accuracy and out-of-scope recall, the two numbers of Larson et
al. 2019). Each beside two bag-of-words baselines (word unigrams + bigrams): multinomial naive
Bayes and a logistic regression trained with minillm.

``minillm bench ner``: People's Daily 1998 (PER/LOC/ORG, one tag per character) and WNUT-17
(emerging entities in tweets; six types), entity-level F1 (conlleval). The baseline memorises
the most frequent tag of every training token (``O`` for unseen ones).

Each dataset is one :func:`minillm.apps.tasks.finetune` run with its default recipe (a 2-layer
BERT from scratch; BPE for the English sets, characters for Chinese; max length, epochs and
early stopping from the data), which also fits and reports the baselines on the same split;
its command is stored beside the numbers.
"""
from __future__ import annotations

import time
from pathlib import Path

from ... import backend
from .. import tasks
from .quality import _finish, _header, _logger, cli_flags, new_axes, save_axes

__all__ = ["text_classification", "ner", "MODEL", "MODEL_FAST"]

# The model size; everything else (tokenizer, max_length, epochs, early stopping, pooling) is
# what `minillm finetune` chooses by default, so these rows measure the defaults.
MODEL = dict(n_layer=2, n_head=4, n_embd=128, batch_size=32)
MODEL_FAST = dict(n_layer=1, n_head=2, n_embd=32, batch_size=8, max_steps=8, eval_steps=4,
                  max_train_examples=64, max_eval_examples=48)
CLS_KEYS = ("accuracy", "macro_f1", "in_scope_accuracy", "oos_recall")
NER_KEYS = ("precision", "recall", "f1")


def _finetune(task, name, root, seed, dev, fast, progress, log):
    kw = {**(MODEL_FAST if fast else MODEL), "seed": seed}
    out = root / name
    command = f"minillm finetune --task {task} --dataset {name} {cli_flags(kw)} --output-dir {out}"
    cfg = tasks.FinetuneConfig(task=task, dataset=name, output_dir=str(out), device=dev,
                               progress=progress, **kw)
    return tasks.finetune(cfg, command=command, log=log), command


def _rows(name, res, command, keys, fast):
    """The baselines' rows and the fine-tuned model's row of one ``finetune`` result, on its
    held-out split (test, or validation where the test labels are hidden)."""
    where = "test" if "test" in res else "validation"
    base = dict(dataset=name, split=where)
    rows = [{**base, "model": b_name, "command": command + "  (its baseline)",
             **{k: b[where][k] for k in keys if k in b[where]},
             "train_seconds": b["train_seconds"], "parameters": b["parameters"]}
            for b_name, b in res["baselines"].items()]
    size = "1x32" if fast else "2x128"
    rows.append({**base, "model": f"BERT {size} from scratch ({res['tokenizer']}, "
                 f"{res['epochs']:g} epochs max, best step {res['best_step']})",
                 "command": command, **{k: res[where][k] for k in keys if k in res[where]},
                 "train_seconds": res["train_seconds"], "parameters": res["parameters"]})
    return rows


def _app(task, bench_name, keys, metric, device, seed, fast, progress, output_dir, log,
         datasets):
    say = _logger(log)
    t_start = time.perf_counter()
    dev = str(backend.device(device))
    root = Path(output_dir or f"runs/bench/{bench_name}")
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in datasets:
        res, command = _finetune(task, name, root, seed, dev, fast, progress, say)
        rows += _rows(name, res, command, keys, fast)
        for row in rows[-len(res["baselines"]) - 1:]:
            say(f"{name}: {row['model']}: {row['split']} {metric} {row[metric]:.4f}")
    cols = ["dataset", "model", "split", *keys, "train_seconds", "parameters"]
    return _done(bench_name, rows, cols, device, seed, fast, t_start, root, say, metric,
                 {"datasets": list(datasets), "model": MODEL_FAST if fast else MODEL})


def text_classification(device=None, seed=0, fast=False, progress=True, output_dir=None,
                        log=print, datasets=("sst2", "clinc150")):
    """SST-2 and CLINC150: ``minillm finetune``'s defaults (a 2 x 128 BERT from scratch)
    beside its bag-of-words baselines (word 1+2-gram naive Bayes and logistic regression).

    Returns ``rows`` (``[{dataset, model, split, accuracy, macro_f1, in_scope_accuracy?,
    oos_recall?, train_seconds, parameters, command}]``), ``table`` and the common keys.
    """
    return _app("classification", "text-classification", CLS_KEYS, "accuracy", device, seed,
                fast, progress, output_dir, log, datasets)


def ner(device=None, seed=0, fast=False, progress=True, output_dir=None, log=print,
        datasets=("peoples_daily_ner", "wnut17")):
    """People's Daily NER and WNUT-17: ``minillm finetune``'s defaults beside the memorising
    baseline (each token's most frequent training tag).

    Returns ``rows`` (``[{dataset, model, split, precision, recall, f1, train_seconds,
    parameters, command}]``), ``table`` and the common keys.
    """
    return _app("ner", "ner", NER_KEYS, "f1", device, seed, fast, progress, output_dir, log,
                datasets)


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
