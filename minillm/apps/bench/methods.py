"""The fine-tuning methods, side by side, on one task: ``minillm bench sentiment-methods``.

The tutorial's central claim is that a pretrained model, fine-tuned, solves a downstream task;
its practical advice ("usually only the last layer is adjusted") and the techniques
practitioners use since (LoRA, distillation, quantization, pruning, prompting) each trade
accuracy for parameters trained, size or labelled data. This benchmark measures all of them
on ``chinese_reviews`` (review sentiment, the project's seeded 80/10/10 split), with the
recipes of ``minillm bench pretraining-payoff``:

1. the bodies: a character GPT and its masked-LM twin, a BERT (same size, 4 x 4 x 128,
   block 128), each pretrained on People's Daily (2,000 steps of 16 windows), then further on
   the reviews' training texts without their labels (domain-adaptive pretraining, 1,000
   steps). They live in the pretraining-payoff folder beside the output folder (``bodies``),
   so the GPT of that benchmark is reused, and are trained there when missing;
2. fine-tune the BERT: every weight; the head only; the embeddings and first 2 of 4 blocks
   frozen; layer-wise LR decay; LoRA on the attention queries and values; the GPT with every
   weight. Every fine-tune has ``finetune``'s defaults (epochs from the data size, validation
   each epoch, early stopping, the best epoch's weights) and reads 128 characters;
3. a small BERT (2 x 64) from scratch, with and without distillation from the fine-tuned BERT;
4. the fine-tuned BERT pruned (50%, 80% of its Linear weights) and quantized to int8;
5. no fine-tuning at all: the BERT as a cloze (``{text}总之很[MASK]。`` -> 好/差) and the GPT
   with in-context examples, each raw and with contextual calibration (Zhao et al. 2021);
6. the reference: the bag-of-n-grams baseline ``finetune`` fits beside the full BERT.

Every row is one :func:`minillm.apps.tasks.finetune` / :func:`minillm.apps.tasks.evaluate` call whose
command line is stored beside its numbers; a fine-tune whose folder already holds a finished
run with the same settings is reused (so an interrupted benchmark resumes where it stopped).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ... import backend, datasets
from .. import tasks
from .payoff import (BODY, BODY_FAST, PAYOFF_DATASETS, _best_baseline, _bodies,
                     finetune_or_reuse)
from .quality import _finish, _header, _logger, new_axes, save_axes

__all__ = ["sentiment_methods", "finetune_rows", "FINETUNE"]

DATASET = "chinese_reviews"
# every fine-tune reads the bodies' context; the rest is finetune's defaults
FINETUNE = dict(dataset=DATASET, max_length=BODY["block_size"], batch_size=32)
FINETUNE_FAST = dict(FINETUNE, max_length=BODY_FAST["block_size"], max_train_examples=64,
                     max_eval_examples=32, max_steps=8, batch_size=8)
CLOZE_TEMPLATE = "{text}总之很[MASK]。"
VERBALIZER = {"negative": "差", "positive": "好"}
ICL_TEMPLATE = "评论：{text}\n情感：{label}\n"
ICL_SHOTS = 2
ICL_MAX_CHARS = 24          # demonstrations short enough to leave the review room in 128
CONTENT_FREE = ("N/A", "")


def finetune_rows(bert, gpt, root, fast):
    """``[(name, extra settings)]``: the fine-tuned rows, in order (the distilled student
    needs the full BERT's run folder, ``root/bert-full``, as its teacher)."""
    small = dict(n_layer=2, n_head=2, n_embd=64) if not fast else dict(n_layer=1, n_embd=16)
    return [
        ("bert-full (BERT, every weight)", dict(model=str(bert), baseline=True)),
        ("bert-head (BERT, head only)", dict(model=str(bert), method="head-only",
                                             learning_rate=1e-3)),
        ("bert-freeze2 (BERT, embeddings + blocks 1-2 frozen)",
         dict(model=str(bert), method="freeze", freeze_layers=2 if not fast else 1)),
        ("bert-llrd (BERT, layer-wise LR decay 0.8)",
         dict(model=str(bert), layer_lr_decay=0.8, learning_rate=2e-4)),
        ("bert-lora (BERT, LoRA r=8 on q, v)", dict(model=str(bert), method="lora", lora_r=8,
                                                    learning_rate=1e-3)),
        ("gpt-full (GPT, every weight)", dict(model=str(gpt))),
        ("small-scratch (BERT 2x64 from scratch)", dict(**small, tokenizer=str(bert))),
        ("small-distilled (BERT 2x64, distilled from bert-full)",
         dict(**small, teacher=str(root / "bert-full"),
              distill_temperature=2.0, distill_alpha=0.5)),
    ]


def _row(name, method, res, command, **extra):
    return {"model": name, "method": method,
            "test_accuracy": res["test"]["accuracy"],
            "val_accuracy": (res.get("validation") or {}).get("accuracy"),
            "trained_parameters": res.get("trainable_parameters"),
            "train_seconds": res.get("train_seconds"), "epochs": res.get("epochs"),
            "best_step": res.get("best_step"), "command": command, **extra}


def finetune_row(name, extra, root, settings, device, progress, log):
    """One fine-tuned row, trained into ``root/<first word of name>`` or reused from there
    when that folder holds a finished run with the same settings: ``(row, results)``."""
    out = root / name.split(" ")[0]
    res, command = finetune_or_reuse("classification", {"baseline": False, **settings, **extra},
                                     out, device, progress, log)
    row = _row(name, res["method"], res, command, model_bytes=_model_bytes(out / "model"))
    log(f"{name}: test accuracy {row['test_accuracy']:.4f}")
    return row, res


def _model_bytes(model_dir):
    with np.load(Path(model_dir) / "model.npz") as z:
        return int(sum(z[k].nbytes for k in z.files))


def _baseline_row(res, command):
    """The bag-of-n-grams baseline ``finetune`` fitted beside a run (the best on
    validation), as a row."""
    name, test = _best_baseline(res, "accuracy")
    base = res["baselines"][name]
    return {"model": f"reference: {name} (the baseline of bert-full)", "method": name,
            "test_accuracy": test, "val_accuracy": base["validation"]["accuracy"],
            "trained_parameters": base.get("parameters"),
            "train_seconds": base.get("train_seconds"), "model_bytes": None, "command": command}


def _compressed_row(name, run_dir, quantize, prune, split_n, device, log):
    flags = (f" --quantize {quantize}" if quantize else "") + \
        (f" --prune {prune}" if prune is not None else "")
    command = f"minillm evaluate --model {run_dir} --dataset {DATASET}{flags} --no-baseline"
    r = tasks.evaluate(run_dir, dataset=DATASET, split="test", device=device,
                       max_examples=split_n, quantize=quantize, prune=prune, baseline=False,
                       log=log)
    log(f"{name}: test accuracy {r['accuracy']:.4f}, {r['compressed_bytes'] / 1e6:.2f} MB")
    return {"model": name, "method": "post-training" + flags,
            "test_accuracy": r["accuracy"], "val_accuracy": None,
            "trained_parameters": 0, "train_seconds": 0.0, "command": command,
            "model_bytes": r["compressed_bytes"], "sparsity": r.get("sparsity")}


def _prompt_row(name, clf, model_dir, test, log, **extra):
    """A prompting row: the calibrated accuracy (Zhao et al. 2021), the raw one beside it."""
    texts, labels = test
    raw = clf.evaluate(texts, labels)["accuracy"]
    clf.calibrate(CONTENT_FREE)
    calibrated = clf.evaluate(texts, labels)["accuracy"]
    log(f"{name}: test accuracy {calibrated:.4f} calibrated, {raw:.4f} raw "
        f"({clf.num_truncated} texts truncated)")
    return {"model": name, "test_accuracy": calibrated, "raw_test_accuracy": raw,
            "val_accuracy": None, "trained_parameters": 0, "train_seconds": 0.0,
            "command": "minillm bench sentiment-methods", "model_bytes": _model_bytes(model_dir),
            "truncated": clf.num_truncated, **extra}


def _prompt_rows(bert_dir, gpt_dir, test, train, seed, log):
    from ...finetune import ClozeClassifier, InContextClassifier, select_demonstrations
    from ...models import auto
    cloze = ClozeClassifier(auto.load_model(bert_dir), tasks.load_tokenizer(bert_dir),
                            CLOZE_TEMPLATE, VERBALIZER)
    rows = [_prompt_row("BERT cloze, zero-shot, calibrated", cloze, bert_dir, test, log,
                        method=f"prompt {CLOZE_TEMPLATE!r}, verbalizer {VERBALIZER}")]
    short = [{"text": ex["text"], "label": train.label_names[ex["label"]]} for ex in train
             if len(ex["text"]) <= ICL_MAX_CHARS]
    demos = select_demonstrations(short, ICL_SHOTS, seed=seed)
    icl = InContextClassifier(auto.load_model(gpt_dir), tasks.load_tokenizer(gpt_dir),
                              ICL_TEMPLATE, VERBALIZER, demonstrations=demos)
    rows.append(_prompt_row(f"GPT in-context, {ICL_SHOTS}-shot, calibrated", icl, gpt_dir,
                            test, log, method=f"prompt {ICL_TEMPLATE!r}, demonstrations "
                            f"{demos}", demonstrations_dropped=icl.demonstrations_dropped))
    return rows


def methods_table(rows):
    """The rows as a Markdown table (a blank where a number does not apply)."""
    def num(v, fmt):
        return "" if v is None else format(v, fmt)
    lines = ["| model | test accuracy | validation accuracy | parameters trained | size (MB) "
             "| train time (s) |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        raw = f" (raw {r['raw_test_accuracy']:.4f})" if "raw_test_accuracy" in r else ""
        size = None if r["model_bytes"] is None else r["model_bytes"] / 1e6
        lines.append(f"| {r['model']} | {r['test_accuracy']:.4f}{raw} | "
                     f"{num(r['val_accuracy'], '.4f')} | {num(r['trained_parameters'], ',')} | "
                     f"{num(size, '.2f')} | {num(r['train_seconds'], '.1f')} |")
    return "\n".join(lines)


def _all_rows(bodies, root, ft, fast, seed, dev, progress, say):
    """Every row of the table, in order (see the module docstring)."""
    bert, gpt = bodies["bert"], bodies["gpt"]
    rows, results = [], {}
    for name, extra in finetune_rows(bert, gpt, root, fast):
        row, results[name.split(" ")[0]] = finetune_row(name, extra, root, ft, dev, progress,
                                                        say)
        rows.append(row)
    full = root / "bert-full"
    n_test = ft.get("max_eval_examples")
    for name, q, p in (("bert-full pruned 50%", None, 0.5), ("bert-full pruned 80%", None, 0.8),
                       ("bert-full int8", "int8", None)):
        rows.append(_compressed_row(name, full, q, p, n_test, dev, say))
    test = datasets.load(DATASET, split="test")
    train = datasets.load(DATASET, split="train")
    examples = test.examples[:32] if fast else test.examples
    texts = ([ex["text"] for ex in examples], [test.label_names[ex["label"]] for ex in examples])
    with backend.default_device_as(dev):
        rows += _prompt_rows(bert, gpt, texts, train, seed, say)
    rows.append(_baseline_row(results["bert-full"], rows[0]["command"]))
    return rows


def sentiment_methods(device=None, seed=0, fast=False, progress=True, output_dir=None,
                      log=print, bodies=None):
    """Every fine-tuning method on ``chinese_reviews`` (see the module docstring).

    Returns keys: ``rows`` (``[{model, method, test_accuracy, val_accuracy,
    trained_parameters, model_bytes, train_seconds, command}]``), ``table`` (Markdown),
    ``pretrained`` (the bodies' pretraining results), plus the common keys. Without
    ``output_dir`` the runs go to ``runs/bench/sentiment-methods``; the bodies come from (or
    are trained into) ``bodies``, by default the ``pretraining-payoff`` folder beside it.
    """
    say = _logger(log)
    t_start = time.perf_counter()
    dev = str(backend.device(device))
    root = Path(output_dir or "runs/bench/sentiment-methods")
    root.mkdir(parents=True, exist_ok=True)
    body_root = Path(bodies) if bodies else root.parent / "pretraining-payoff"
    ft = {**(FINETUNE_FAST if fast else FINETUNE), "seed": seed}
    models, pre = {}, {}
    for kind in ("bert", "gpt"):
        m, pre[kind] = _bodies(DATASET, PAYOFF_DATASETS[DATASET], body_root, fast, dev,
                               progress, say, model_type=kind)
        models[kind] = m["pretrained + domain"]
    rows = _all_rows(models, root, ft, fast, seed, dev, progress, say)
    result = _header("sentiment-methods", backend.device(device), seed, fast,
                     {"bodies": str(body_root), "finetune": ft,
                      "cloze_template": CLOZE_TEMPLATE, "verbalizer": VERBALIZER,
                      "icl_template": ICL_TEMPLATE, "icl_shots": ICL_SHOTS,
                      "content_free": list(CONTENT_FREE)},
                     {"note": "the last row is the bag-of-n-grams baseline finetune fits "
                              "beside the full BERT, on the same split"})
    result.update(rows=rows, table=methods_table(rows), pretrained=pre)
    result["total_seconds"] = time.perf_counter() - t_start
    say(result["table"])

    def plot(path):
        fig, ax = new_axes((7, 4.5))
        for r in rows:
            x = max(r["trained_parameters"] or 0, 1)
            ax.scatter([x], [r["test_accuracy"]], label=r["model"].split(" ")[0])
        ax.set_xscale("log")
        ax.set_xlabel("parameters trained (log scale; none is drawn at 1)")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        save_axes(fig, ax, path, "chinese_reviews: test accuracy vs parameters trained",
                  "test accuracy")

    return _finish(result, root, plot, log)
