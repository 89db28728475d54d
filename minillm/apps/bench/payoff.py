"""Does pretraining pay? ``minillm bench pretraining-payoff``: learning curves.

The tutorial's argument is "pretrain on plain text, then fine-tune on a few labels". This
benchmark measures it the way ULMFiT (Howard & Ruder 2018) and domain-adaptive pretraining
(Gururangan et al. 2020) did: the test metric against the number of labelled training
examples, for four learners that see the same labelled subset:

- **from scratch**: the body's architecture with random weights, fine-tuned on the labels;
- **pretrained**: the body pretrained on a general corpus (``minillm pretrain``), fine-tuned;
- **pretrained + domain**: that body pretrained further on the task's own training texts
  *without their labels* (``minillm pretrain --model``), then fine-tuned;
- **bag of n-grams**: the baseline ``minillm finetune`` fits beside every run (logistic
  regression on word or character 1+2-grams).

Every fine-tune is one :func:`minillm.apps.tasks.finetune` call with the defaults a user gets
(epochs from the data, early stopping, the best evaluation's weights); only the architecture,
the max length (the body's context) and the number of evaluations are fixed, so that the four
learners differ in their starting weights alone. Small sizes repeat over several seeds (each
seed draws its own labelled subset); the plot shows the mean and the spread.

Splits stay clean: the general corpora are the pretraining splits of their datasets, the
domain corpus is the task's training split, and no validation or test text is pretrained on.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ... import backend, datasets
from .. import tasks
from .quality import _finish, _header, _logger, cli_flags, differing_settings, new_axes

__all__ = ["pretraining_payoff", "arm_label", "finetune_or_reuse", "PAYOFF_DATASETS", "BODY",
           "DOMAIN", "LABELS", "ARMS"]

# the task, its metric and the general corpus its body is pretrained on
PAYOFF_DATASETS = {
    "chinese_reviews": dict(task="classification", metric="accuracy",
                            corpus="peoples_daily_text"),
    "peoples_daily_ner": dict(task="ner", metric="f1", corpus="peoples_daily_text"),
    "sst2": dict(task="classification", metric="accuracy", corpus="ptb"),
}
# one body for every learner: a character GPT, 4 x 4 x 128, reading 128 characters
BODY = dict(model_type="gpt", n_layer=4, n_head=4, n_embd=128, block_size=128,
            batch_size=16, max_steps=2000, learning_rate=1e-3, warmup_steps=100,
            dropout=0.1, eval_steps=500, save_steps=500, seed=0)
BODY_FAST = dict(BODY, n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4,
                 max_steps=6, warmup_steps=2, eval_steps=3, save_steps=3, eval_batches=2)
# domain-adaptive pretraining: the general body, further on the task's unlabelled texts
DOMAIN = dict(max_steps=1000, learning_rate=5e-4, warmup_steps=50, eval_steps=500,
              save_steps=500)
DOMAIN_FAST = dict(max_steps=4, learning_rate=5e-4, warmup_steps=1, eval_steps=2,
                   save_steps=2, eval_batches=2)
LABELS = (100, 300, 1000, 3000, None)          # None: every labelled training example
LABELS_FAST = (16, 32)
SEEDS = 3                                      # seeds at the small sizes (<= SMALL labels)
SMALL = 300
EVALUATIONS = 8                                # validation passes per fine-tune (at most)
ARMS = ("from scratch", "pretrained", "pretrained + domain", "bag of n-grams")
# what the baseline arm is, per task, in the plot's legend
BASELINE_LABEL = {"classification": "bag of n-grams", "ner": "most frequent tag per token"}
ARM_STYLE = {"from scratch": ("tab:gray", "o"), "pretrained": ("tab:blue", "s"),
             "pretrained + domain": ("tab:red", "^"), "bag of n-grams": ("black", "x")}


def _pretrain(out, settings, device, progress, log):
    """``out/model`` of a ``minillm pretrain`` run with ``settings``; reused when ``out``
    already holds a finished run with the same settings."""
    cfg = tasks.PretrainConfig(output_dir=str(out), device=device, progress=progress,
                               **settings)
    done = out / "results.json"
    if done.is_file():
        _check_same(out, "pretrain", cfg)
        log(f"reusing the pretrained body in {out}")
        return out / "model", json.loads(done.read_text(encoding="utf-8"))
    command = f"minillm pretrain {cli_flags(settings)} --output-dir {out}"
    return out / "model", tasks.pretrain(cfg, command=command, log=log)


def _check_same(out, kind, cfg):
    """A finished run in ``out`` is reused only with the settings of ``cfg``; with others it
    is an error, never a new run written over it (its models may start other runs)."""
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))[kind]
    unused = (("mlm_probability",) if saved.get("model_type") == "gpt" else ()) + \
        (("extend_vocab",) if kind == "pretrain" and saved.get("model") is None else ())
    differ = differing_settings(saved, cfg, ignore=unused)
    if differ:
        raise tasks.TaskError(
            f"{out} holds a finished run with other settings ({', '.join(differ)}); this "
            "benchmark's runs depend on it, so it is not overwritten: give another "
            "--output-dir, or delete the folder to train it again")


def task_texts(name):
    """The training split of dataset ``name`` as plain text, one example per line, without
    its labels: the domain corpus (NER sentences are their tokens joined)."""
    ds = datasets.load(name, split="train")
    if "text" in ds.examples[0]:
        lines = [ex["text"] for ex in ds]
    else:
        spaced = [" ".join(ex["tokens"]) for ex in ds]
        lines = spaced if tasks.text_language(spaced) == "en" else \
            ["".join(ex["tokens"]) for ex in ds]
    return "\n".join(line.replace("\n", " ") for line in lines) + "\n"


def _bodies(name, spec, root, fast, device, progress, log, model_type="gpt"):
    """``{arm: model dir}``: the general body (shared by every dataset on that corpus) and
    the domain-adapted one of dataset ``name``; ``model_type="bert"`` gives the masked-LM
    twins of the GPT bodies (same size, corpus and steps), in folders named ``...-bert``."""
    body = dict(BODY_FAST if fast else BODY, dataset=spec["corpus"], model_type=model_type)
    tail = "" if model_type == "gpt" else f"-{model_type}"
    general, g_res = _pretrain(root / f"general-{spec['corpus']}{tail}", body, device,
                               progress, log)
    corpus = root / name / "unlabelled-train.txt"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_text(task_texts(name), encoding="utf-8")
    domain = dict(DOMAIN_FAST if fast else DOMAIN, dataset=None, train=str(corpus),
                  model=str(general), model_type=model_type, batch_size=body["batch_size"],
                  block_size=body["block_size"], dropout=body["dropout"], seed=body["seed"])
    if fast:
        domain["eval_batches"] = 2
    adapted, d_res = _pretrain(root / name / f"domain{tail}", domain, device, progress, log)
    return ({"pretrained": general, "pretrained + domain": adapted},
            {"general": g_res, "domain": d_res})


def _eval_steps(n, batch_size, fast, task):
    """Validation every epoch, but at most :data:`EVALUATIONS` times in the run."""
    per_epoch = max(1, math.ceil(n / batch_size))
    total = per_epoch * tasks.epochs_from_data(n, batch_size, tasks.TARGET_STEPS[task])
    return 1 if fast else max(per_epoch, math.ceil(total / EVALUATIONS))


def _finetune_settings(spec, arm, model_dir, n, seed, fast):
    """The ``finetune`` settings of one learner: the body's size and context for every arm,
    the body's character vocabulary kind for the one from scratch."""
    body = BODY_FAST if fast else BODY
    kw = dict(max_length=body["block_size"], seed=seed, batch_size=8 if fast else 32,
              baseline=arm == "from scratch")
    if model_dir is None:
        kw.update(model_type=body["model_type"], n_layer=body["n_layer"],
                  n_head=body["n_head"], n_embd=body["n_embd"], tokenizer="char")
    else:
        kw["model"] = str(model_dir)
    if n is not None:
        kw["max_train_examples"] = n
    if fast:
        kw.update(max_eval_examples=24, max_steps=4)
    return kw


def _finetune(name, spec, arm, model_dir, n, n_train, seed, root, fast, device, progress,
              log):
    """One fine-tune on ``n_train`` labelled examples (``n``: the requested size, None for
    all), reused when its folder holds a finished run with the same settings:
    ``(results, command)``."""
    kw = dict(dataset=name, **_finetune_settings(spec, arm, model_dir, n, seed, fast))
    kw["eval_steps"] = _eval_steps(n_train, kw["batch_size"], fast, spec["task"])
    out = root / name / arm.replace(" + ", "+").replace(" ", "-") / f"{n or 'all'}-seed{seed}"
    return finetune_or_reuse(spec["task"], kw, out, device, progress, log)


def finetune_or_reuse(task, settings, out, device, progress, log):
    """``(results, command)`` of ``minillm finetune --task task`` with ``settings`` (its
    ``baseline`` key included) into ``out``: read back when ``out`` holds a finished run with
    the same settings (one with other settings is an error), else trained."""
    cfg = tasks.FinetuneConfig(task=task, output_dir=str(out), device=device,
                               progress=progress, **settings)
    flags = cli_flags({k: v for k, v in settings.items() if k != "baseline"})
    command = (f"minillm finetune --task {task} {flags}"
               f"{'' if cfg.baseline else ' --no-baseline'} --output-dir {out}")
    done = out / "metrics.json"
    if done.is_file():
        _check_same(out, "finetune", cfg)
        log(f"reusing {out}")
        return json.loads(done.read_text(encoding="utf-8")), command
    return tasks.finetune(cfg, command=command, log=log), command


def _best_baseline(res, metric, where="test"):
    """The baseline with the best validation ``metric`` (chosen on validation, as a user
    would) and its score on split ``where`` (the split the neural learners report: test, or
    validation for a dataset without test labels such as SST-2): ``(name, metric)``."""
    base = res["baselines"]
    name = max(base, key=lambda b: base[b]["validation"][metric])
    return name, base[name][where][metric]


def _points(name, spec, bodies, labels, seeds, root, fast, device, progress, log):
    """``[{arm, labels, seed, value, command}]`` for every size, seed and learner."""
    points = []
    available = len(datasets.load(name, split="train"))
    for n in labels:
        for seed in range(seeds if n is not None and n <= (32 if fast else SMALL) else 1):
            for arm in ARMS[:3]:
                res, command = _finetune(name, spec, arm, bodies.get(arm), n,
                                         min(n or available, available), seed, root, fast,
                                         device, progress, log)
                where = "test" if "test" in res else "validation"
                value = res[where][spec["metric"]]
                points.append(dict(arm=arm, labels=res["train_examples"], seed=seed,
                                   value=value, split=where, command=command,
                                   best_step=res.get("best_step"), steps=res["steps"]))
                log(f"{name}, {res['train_examples']} labels, seed {seed}, {arm}: "
                    f"{where} {spec['metric']} {value:.4f}")
                if arm == "from scratch":
                    b_name, b_value = _best_baseline(res, spec["metric"], where)
                    points.append(dict(arm="bag of n-grams", labels=res["train_examples"],
                                       seed=seed, value=b_value, split=where,
                                       command=command + "  (its baseline)", model=b_name))
    return points


def curves(points):
    """``{arm: [{labels, mean, std, n_seeds}]}``: the points averaged over seeds."""
    out = {}
    for arm in ARMS:
        sizes = sorted({p["labels"] for p in points if p["arm"] == arm})
        out[arm] = []
        for n in sizes:
            v = np.array([p["value"] for p in points if p["arm"] == arm and p["labels"] == n])
            out[arm].append(dict(labels=n, mean=float(v.mean()), std=float(v.std()),
                                 n_seeds=len(v)))
    return out


def payoff_table(all_curves, metrics):
    """A Markdown table: one row per dataset and size, one column per learner
    (mean ± standard deviation over seeds)."""
    lines = ["| dataset | labels | " + " | ".join(ARMS) + " | seeds |",
             "|---|---:|" + "---:|" * len(ARMS) + "---:|"]
    for name, c in all_curves.items():
        for i, point in enumerate(c["from scratch"]):
            cells = []
            for arm in ARMS:
                p = c[arm][i]
                cells.append(f"{p['mean']:.4f}" + (f" ± {p['std']:.4f}" if p["n_seeds"] > 1
                                                  else ""))
            lines.append(f"| {name} ({metrics[name]}) | {point['labels']:,} | "
                         + " | ".join(cells) + f" | {point['n_seeds']} |")
    return "\n".join(lines)


def arm_label(dataset, arm):
    """How a plot or a table names ``arm`` of ``dataset``: the baseline arm by what it is for
    that dataset's task (a tag memory for NER), every other arm by its own name."""
    return BASELINE_LABEL[PAYOFF_DATASETS[dataset]["task"]] if arm == "bag of n-grams" else arm


def _plot(all_curves, metrics, path):
    fig, axes = new_axes((5.5 * len(all_curves), 4), ncols=len(all_curves))
    for ax, (name, c) in zip(axes, all_curves.items()):
        for arm, pts in c.items():
            color, marker = ARM_STYLE[arm]
            x = [p["labels"] for p in pts]
            ax.errorbar(x, [p["mean"] for p in pts], yerr=[p["std"] for p in pts],
                        label=arm_label(name, arm),
                        color=color, marker=marker, capsize=3,
                        linestyle="--" if arm == "bag of n-grams" else "-")
        ax.set_xscale("log")
        sizes = sorted({p["labels"] for pts in c.values() for p in pts})
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("labelled training examples (log scale)")
        ax.set_ylabel(f"test {metrics[name]}")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("minillm bench pretraining-payoff")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _keep_earlier(saved_path, fast, points, all_curves, pre, measured, log):
    """Keep in ``results.json`` the datasets an earlier call measured in the same folder and
    this one did not (each dataset with the sizes and seeds of its latest call), so that one
    folder holds every curve: the points come from the finished run folders beside it."""
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    if bool(saved.get("fast")) != bool(fast):
        return
    earlier = saved["settings"].get("measured") or {
        n: dict(labels=saved["settings"]["labels"], seeds=saved["settings"]["seeds"],
                device=saved["device"]) for n in saved["points"]}
    for name in saved["points"]:
        if name not in points:
            points[name], all_curves[name] = saved["points"][name], saved["curves"][name]
            pre[name], measured[name] = saved["pretraining"][name], earlier[name]
            log(f"keeping {name} from the earlier results.json (labels "
                f"{','.join(str(n or 'all') for n in earlier[name]['labels'])})")


def pretraining_payoff(device=None, seed=0, fast=False, progress=True, output_dir=None,
                       log=print, datasets=("chinese_reviews",), labels=None, seeds=None):
    """Learning curves of a from-scratch, a pretrained and a domain-adapted body and the
    bag-of-n-grams baseline on ``datasets`` (keys of :data:`PAYOFF_DATASETS`), at ``labels``
    labelled examples (None in the list: all of them), ``seeds`` seeds at the small sizes.

    Returns ``points`` (every run with its command), ``curves`` (``{dataset: {arm:
    [{labels, mean, std, n_seeds}]}}``), ``pretraining`` (the bodies' results), ``table``
    and the common keys; writes ``results.json`` and the plot into ``output_dir``, keeping
    there the datasets an earlier call measured and this one did not
    (``settings["measured"]`` says with which sizes and seeds each was measured).
    """
    say = _logger(log)
    unknown = [d for d in datasets if d not in PAYOFF_DATASETS]
    if unknown:
        raise ValueError(f"pretraining-payoff: unknown dataset(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(PAYOFF_DATASETS)}")
    t_start = time.perf_counter()
    dev = str(backend.device(device))
    root = Path(output_dir or "runs/bench/pretraining-payoff")
    labels = tuple(labels or (LABELS_FAST if fast else LABELS))
    seeds = seeds or (2 if fast else SEEDS)
    points, all_curves, pre = {}, {}, {}
    for name in datasets:
        spec = PAYOFF_DATASETS[name]
        bodies, pre[name] = _bodies(name, spec, root, fast, dev, progress, say)
        points[name] = _points(name, spec, bodies, labels, seeds, root, fast, dev, progress,
                               say)
        all_curves[name] = curves(points[name])
    measured = {n: dict(labels=list(labels), seeds=seeds, device=dev) for n in datasets}
    _keep_earlier(root / "results.json", fast, points, all_curves, pre, measured, say)
    metrics = {n: PAYOFF_DATASETS[n]["metric"] for n in all_curves}
    result = _header("pretraining-payoff", dev, seed, fast,
                     {"body": BODY_FAST if fast else BODY, "domain": DOMAIN_FAST if fast
                      else DOMAIN, "labels": list(labels), "seeds": seeds,
                      "datasets": list(datasets), "measured": measured},
                     {"ULMFiT (Howard & Ruder 2018)": "with 100 labels, matches from-scratch "
                      "training on 10-20x more", "target": "pretrained wins at every size; "
                      ">= +5 points at <= 1,000 labels"})
    result.update(points=points, curves=all_curves, pretraining=pre,
                  table=payoff_table(all_curves, metrics),
                  total_seconds=time.perf_counter() - t_start)
    say(result["table"])
    return _finish(result, root, lambda path: _plot(all_curves, metrics, path), say)
