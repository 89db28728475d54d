"""The fine-tuning methods, side by side, on one task: ``minillm bench sentiment-methods``.

The tutorial's central claim is that a pretrained model, fine-tuned, solves a downstream task;
its practical advice ("usually only the last layer is adjusted") and the techniques
practitioners use since (LoRA, distillation, quantization, pruning, prompting) each trade
accuracy for parameters trained, size or labelled data. This benchmark measures all of them
on ``chinese_reviews`` (review sentiment, the project's seeded 80/10/10 split):

1. pretrain a character BERT (masked LM) and a character GPT on People's Daily, both 4 layers
   x 4 heads x 128, block 64, 2,000 steps of 32 windows (reused when ``output_dir`` already
   holds them with the same settings);
2. fine-tune the BERT: every weight; the head only; the first 2 of 4 blocks frozen; layer-wise
   LR decay; LoRA on the attention queries and values; the GPT with every weight;
3. a small BERT (2 x 64) from scratch, with and without distillation from the fine-tuned BERT;
4. the fine-tuned BERT pruned (50%, 80% of its Linear weights) and quantized to int8;
5. no fine-tuning at all: the BERT as a cloze (``{text}总之很[MASK]。`` -> 好/差) and the GPT
   with in-context examples.

Every row is one :func:`minillm.tasks.finetune` / :func:`minillm.tasks.evaluate` call whose
command line is stored beside its numbers. The bag-of-n-grams baselines are in
``minillm bench sentiment``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import backend, datasets, tasks
from .quality import _finish, _header, _logger, cli_flags, new_axes, same_settings, save_axes

__all__ = ["sentiment_methods", "PRETRAIN"]

# the two pretrained bodies (identical but for the objective)
PRETRAIN = dict(dataset="peoples_daily_text", n_layer=4, n_head=4, n_embd=128, block_size=64,
                batch_size=32, max_steps=2000, learning_rate=1e-3, warmup_steps=100,
                dropout=0.1, eval_steps=500, save_steps=500, seed=0)
PRETRAIN_FAST = dict(PRETRAIN, n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4,
                     max_steps=10, warmup_steps=2, eval_steps=5, save_steps=5, eval_batches=2)
# mean pooling for every model: a masked-LM BERT (no next-sentence task, no pooler) never
# learned a [CLS] summary, so a frozen body offers the head nothing at [CLS]
FINETUNE = dict(dataset="chinese_reviews", max_length=64, num_train_epochs=2.0, batch_size=32,
                pooling="mean")
FINETUNE_FAST = dict(FINETUNE, max_length=32, max_train_examples=64, max_eval_examples=32,
                     num_train_epochs=1.0, batch_size=8)
CLOZE_TEMPLATE = "{text}总之很[MASK]。"
VERBALIZER = {"negative": "差", "positive": "好"}
ICL_TEMPLATE = "评论：{text}\n情感：{label}\n"
ICL_SHOTS = 2
ICL_MAX_CHARS = 12          # demonstrations short enough that two fit a 64-character context


def _pretrained(kind, settings, root, device, progress, log):
    """``root/pretrained-<kind>/model``: reused when its config matches ``settings``."""
    out = root / f"pretrained-{kind}"
    cfg = tasks.PretrainConfig(model_type=kind, output_dir=str(out), device=device,
                               progress=progress, **settings)
    done = out / "results.json"
    if done.is_file():
        saved = json.loads((out / "config.json").read_text(encoding="utf-8"))["pretrain"]
        if same_settings(saved, cfg):
            log(f"reusing the pretrained {kind} in {out}")
            return out / "model", json.loads(done.read_text(encoding="utf-8"))
    command = f"minillm pretrain --model-type {kind} {cli_flags(settings)}"
    res = tasks.pretrain(cfg, command=command, log=log)
    return out / "model", res


def _row(name, method, res, command, **extra):
    return {"model": name, "method": method,
            "test_accuracy": res["test"]["accuracy"],
            "val_accuracy": (res.get("validation") or {}).get("accuracy"),
            "trained_parameters": res.get("trainable_parameters"),
            "train_seconds": res.get("train_seconds"), "command": command, **extra}


def _finetune_row(name, root, settings, extra, device, progress, log, rows):
    out = root / name.split(" ")[0]
    kw = {**settings, **extra}
    command = f"minillm finetune --task classification {cli_flags(kw)} --output-dir {out}"
    cfg = tasks.FinetuneConfig(task="classification", output_dir=str(out), device=device,
                               progress=progress, **kw)
    res = tasks.finetune(cfg, command=command, log=log)
    row = _row(name, res["method"], res, command,
               model_bytes=_model_bytes(out / "model"))
    rows.append(row)
    log(f"{name}: test accuracy {row['test_accuracy']:.4f}")
    return out, res


def _model_bytes(model_dir):
    with np.load(Path(model_dir) / "model.npz") as z:
        return int(sum(z[k].nbytes for k in z.files))


def _compressed_row(name, run_dir, quantize, prune, split_n, device, log, rows):
    flags = (f" --quantize {quantize}" if quantize else "") + \
        (f" --prune {prune}" if prune is not None else "")
    command = f"minillm evaluate --model {run_dir} --dataset chinese_reviews{flags}"
    r = tasks.evaluate(run_dir, dataset="chinese_reviews", split="test", device=device,
                       max_examples=split_n, quantize=quantize, prune=prune, log=log)
    rows.append({"model": name, "method": "post-training" + flags,
                 "test_accuracy": r["accuracy"], "val_accuracy": None,
                 "trained_parameters": 0, "train_seconds": 0.0, "command": command,
                 "model_bytes": r["compressed_bytes"], "sparsity": r.get("sparsity")})
    log(f"{name}: test accuracy {r['accuracy']:.4f}, {r['compressed_bytes'] / 1e6:.2f} MB")


def _prompt_rows(bert_dir, gpt_dir, test, train, seed, log, rows):
    from ..finetune import ClozeClassifier, InContextClassifier, select_demonstrations
    from ..models import auto
    texts = [ex["text"] for ex in test]
    labels = [test.label_names[ex["label"]] for ex in test]
    mlm = auto.load_model(bert_dir)
    cloze = ClozeClassifier(mlm, tasks.load_tokenizer(bert_dir), CLOZE_TEMPLATE, VERBALIZER)
    r = cloze.evaluate(texts, labels)
    rows.append({"model": "BERT cloze, zero-shot", "method": f"prompt {CLOZE_TEMPLATE!r}, "
                 f"verbalizer {VERBALIZER}", "test_accuracy": r["accuracy"],
                 "val_accuracy": None, "trained_parameters": 0, "train_seconds": 0.0,
                 "command": "minillm bench sentiment-methods", "model_bytes":
                 _model_bytes(bert_dir), "truncated": cloze.num_truncated})
    log(f"cloze: test accuracy {r['accuracy']:.4f} ({cloze.num_truncated} texts truncated)")
    short = [{"text": ex["text"], "label": train.label_names[ex["label"]]} for ex in train
             if len(ex["text"]) <= ICL_MAX_CHARS]
    demos = select_demonstrations(short, ICL_SHOTS, seed=seed)
    gpt = auto.load_model(gpt_dir)
    icl = InContextClassifier(gpt, tasks.load_tokenizer(gpt_dir), ICL_TEMPLATE, VERBALIZER,
                              demonstrations=demos)
    r = icl.evaluate(texts, labels)
    rows.append({"model": f"GPT in-context, {ICL_SHOTS}-shot", "method":
                 f"prompt {ICL_TEMPLATE!r}, demonstrations {demos}",
                 "test_accuracy": r["accuracy"], "val_accuracy": None,
                 "trained_parameters": 0, "train_seconds": 0.0,
                 "command": "minillm bench sentiment-methods", "model_bytes":
                 _model_bytes(gpt_dir), "truncated": icl.num_truncated,
                 "demonstrations_dropped": icl.demonstrations_dropped})
    log(f"in-context: test accuracy {r['accuracy']:.4f} ({icl.demonstrations_dropped} "
        f"demonstrations dropped, {icl.num_truncated} texts truncated)")


def methods_table(rows):
    """The rows as a Markdown table (a blank where a number does not apply)."""
    def num(v, fmt):
        return "" if v is None else format(v, fmt)
    lines = ["| model | test accuracy | validation accuracy | parameters trained | size (MB) "
             "| train time (s) |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['test_accuracy']:.4f} | "
                     f"{num(r['val_accuracy'], '.4f')} | {num(r['trained_parameters'], ',')} | "
                     f"{num(r['model_bytes'] / 1e6, '.2f')} | "
                     f"{num(r['train_seconds'], '.1f')} |")
    return "\n".join(lines)


def sentiment_methods(device=None, seed=0, fast=False, progress=True, output_dir=None,
                      log=print):
    """Every fine-tuning method on ``chinese_reviews`` (see the module docstring).

    Returns keys: ``rows`` (``[{model, method, test_accuracy, val_accuracy,
    trained_parameters, model_bytes, train_seconds, command}]``), ``table`` (Markdown),
    ``pretrained`` (the two pretraining results), plus the common keys. Without
    ``output_dir`` the runs go to ``runs/bench/sentiment-methods``.
    """
    say = _logger(log)
    t_start = time.perf_counter()
    dev = str(backend.device(device))
    root = Path(output_dir or "runs/bench/sentiment-methods")
    root.mkdir(parents=True, exist_ok=True)
    pre = PRETRAIN_FAST if fast else PRETRAIN
    ft = {**(FINETUNE_FAST if fast else FINETUNE), "seed": seed}
    bert, bert_res = _pretrained("bert", pre, root, dev, progress, say)
    gpt, gpt_res = _pretrained("gpt", pre, root, dev, progress, say)
    rows = []

    def run(name, **extra):
        return _finetune_row(name, root, ft, extra, dev, progress, say, rows)

    full, _ = run("bert-full (BERT, every weight)", model=str(bert))
    run("bert-head (BERT, head only)", model=str(bert), method="head-only",
        learning_rate=1e-3)
    run("bert-freeze2 (BERT, embeddings + blocks 1-2 frozen)", model=str(bert),
        method="freeze", freeze_layers=2 if not fast else 1)
    run("bert-llrd (BERT, layer-wise LR decay 0.8)", model=str(bert), layer_lr_decay=0.8,
        learning_rate=2e-4)
    run("bert-lora (BERT, LoRA r=8 on q, v)", model=str(bert), method="lora", lora_r=8,
        learning_rate=1e-3)
    run("gpt-full (GPT, every weight)", model=str(gpt))
    small = dict(n_layer=2, n_head=2, n_embd=64) if not fast else dict(n_layer=1, n_embd=16)
    run("small-scratch (BERT 2x64 from scratch)", **small, tokenizer=str(bert))
    run("small-distilled (BERT 2x64, distilled from bert-full)", **small,
        teacher=str(full), distill_temperature=2.0, distill_alpha=0.5)
    n_test = ft.get("max_eval_examples")
    for name, q, p in (("bert-full pruned 50%", None, 0.5), ("bert-full pruned 80%", None, 0.8),
                       ("bert-full int8", "int8", None)):
        _compressed_row(name, full, q, p, n_test, dev, say, rows)
    test = datasets.load("chinese_reviews", split="test")
    train = datasets.load("chinese_reviews", split="train")
    if fast:
        test = datasets.Dataset(test.examples[:32], label_names=test.label_names)
    with backend.default_device_as(dev):
        _prompt_rows(bert, gpt, test, train, seed, say, rows)

    result = _header("sentiment-methods", backend.device(device), seed, fast,
                     {"pretrain": pre, "finetune": ft, "cloze_template": CLOZE_TEMPLATE,
                      "verbalizer": VERBALIZER, "icl_template": ICL_TEMPLATE,
                      "icl_shots": ICL_SHOTS},
                     {"note": "the bag-of-n-grams baselines of `minillm bench sentiment` "
                              "(logistic regression 0.8450 test accuracy) are the reference"})
    result.update(rows=rows, table=methods_table(rows),
                  pretrained={"bert": bert_res, "gpt": gpt_res})
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
