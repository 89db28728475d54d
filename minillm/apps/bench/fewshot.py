"""``minillm bench fewshot-intents``: few-shot intent classification on CLINC150's held-out
intents, meta-learners beside baselines on the very same test episodes.

The 150 intents are split 90 / 30 / 30 into meta-train / meta-validation / meta-test
(:mod:`minillm.meta.episodes`, seed 0). On the meta-train intents, starting from one seeded
initialisation of a small BERT encoder (or a pretrained body directory, ``body=``):

* a prototypical network (Snell et al. 2017) is trained on 10-way 5-shot episodes;
* Reptile (Nichol et al. 2018) meta-learns the encoder's initialisation.

Both keep the weights that score best on meta-validation episodes. Then, for 5-way 1-shot,
5-way 5-shot and 10-way 5-shot, the same ``episodes`` test episodes (15 queries per class)
score five learners: nearest class centroid on bag-of-words vectors (meta-train vocabulary),
a linear head fitted on the support embeddings of the plain (not meta-trained) encoder and of
the prototypical encoder, the prototypical network, and Reptile fine-tuned on the support
set. Each number is the mean query accuracy over the episodes with its 95% interval,
``1.96 * std / sqrt(n)``.
"""
from __future__ import annotations

import time

from ...backend import manual_seed
from ...meta import (BagOfWordsCentroid, EpisodeSampler, TextEncoder, clinc_meta_splits,
                     linear_head_predict, protonet_predict, reptile_predict, score,
                     train_protonet, train_reptile)
from .quality import _finish, _header, _logger, _on, new_axes

__all__ = ["fewshot_intents", "SETTINGS", "METHODS", "RECIPE"]

#: (N-way, K-shot) of the test episodes
SETTINGS = ((5, 1), (5, 5), (10, 5))
METHODS = ("bag-of-words centroid", "linear head, plain encoder",
           "linear head, protonet encoder", "prototypical network", "Reptile")
RECIPE = dict(episodes=600, query=15, per_class=None, vocab_size=4000, hidden_size=128,
              num_layers=2, num_heads=2, dropout=0.1, max_length=48,
              train_way=10, train_shot=5, train_query=10, protonet_steps=2000, protonet_lr=1e-3,
              reptile_steps=250, inner_steps=5, inner_lr=1e-3, inner_head_lr=1e-2, epsilon=1.0,
              test_steps=10, head_steps=100, head_lr=1e-2, val_episodes=100, eval_every=250)
#: fast mode: 30 texts per intent, a 1-layer 32-wide encoder, a few steps, 5 test episodes
FAST = dict(episodes=5, per_class=30, vocab_size=500, hidden_size=32, num_layers=1,
            protonet_steps=4, reptile_steps=2, inner_steps=2, test_steps=2, head_steps=5,
            val_episodes=2, eval_every=2)
ANCHOR = {"note": "no published number on this meta-split (minillm's own, seeded); the "
                  "bag-of-words centroid and the linear head are the reference",
          "target": "prototypical network ahead of both baselines on 5-way 5-shot, 95% "
                    "intervals apart"}


def _settings(fast, episodes, body):
    s = dict(RECIPE, **(FAST if fast else {}), body=body)
    if episodes is not None:
        if episodes < 1:
            raise ValueError(f"fewshot-intents: episodes must be at least 1, got {episodes}")
        s["episodes"] = int(episodes)
    return s


def _new_encoder(s, train_texts, seed):
    """The starting encoder, the same weights for every learner: seeded fresh, or loaded."""
    manual_seed(seed)
    if s["body"]:
        return TextEncoder.from_pretrained(s["body"], s["max_length"])
    return TextEncoder.from_texts(train_texts, s["vocab_size"], s["hidden_size"],
                                  s["num_layers"], s["num_heads"], s["dropout"],
                                  s["max_length"])


def _meta_train(splits, s, seed, progress, say):
    """``({"plain", "protonet", "reptile"}: encoder, {"protonet", "reptile"}: history)``."""
    train_texts = [t for texts in splits["train"].values() for t in texts]
    train = dict(n_way=s["train_way"], k_shot=s["train_shot"], q_query=s["train_query"])
    val = EpisodeSampler(splits["validation"], 5, 5, s["query"], seed=seed + 1).episodes(
        s["val_episodes"])
    enc = {name: _new_encoder(s, train_texts, seed) for name in ("plain", "protonet", "reptile")}
    say(f"encoder: {type(enc['plain'].body).__name__}, "
        f"{sum(p.size for p in enc['plain'].parameters()):,} parameters, "
        f"{enc['plain'].tokenizer.vocab_size} tokens; meta-validation on 5-way 5-shot")
    say(f"prototypical network: {s['protonet_steps']} episodes of {train['n_way']}-way "
        f"{train['k_shot']}-shot")
    hist = {"protonet": train_protonet(
        enc["protonet"], EpisodeSampler(splits["train"], **train, seed=seed + 2),
        s["protonet_steps"], lr=s["protonet_lr"], val_episodes=val, eval_every=s["eval_every"],
        progress=progress, log=say)}
    say(f"Reptile: {s['reptile_steps']} episodes, {s['inner_steps']} inner steps")
    hist["reptile"] = train_reptile(
        enc["reptile"], EpisodeSampler(splits["train"], **train, seed=seed + 3),
        s["reptile_steps"], s["inner_steps"], s["inner_lr"], s["inner_head_lr"], s["epsilon"],
        val_episodes=val, eval_every=s["eval_every"], test_steps=s["test_steps"],
        progress=progress, log=say)
    return enc, hist


def _learners(enc, bow, s):
    """``{method: predict(episode)}`` in the order of :data:`METHODS`."""
    head = dict(steps=s["head_steps"], lr=s["head_lr"])
    return {
        METHODS[0]: bow.predict,
        METHODS[1]: lambda ep: linear_head_predict(enc["plain"], ep, **head),
        METHODS[2]: lambda ep: linear_head_predict(enc["protonet"], ep, **head),
        METHODS[3]: lambda ep: protonet_predict(enc["protonet"], ep),
        METHODS[4]: lambda ep: reptile_predict(enc["reptile"], ep, s["test_steps"],
                                               s["inner_lr"], s["inner_head_lr"]),
    }


def _score_settings(splits, learners, s, seed, say):
    """One row per (setting, method): the scores on that setting's shared test episodes."""
    rows = []
    for i, (n_way, k_shot) in enumerate(SETTINGS):
        episodes = EpisodeSampler(splits["test"], n_way, k_shot, s["query"],
                                  seed=seed + 100 + i).episodes(s["episodes"])
        for method, predict in learners.items():
            t0 = time.perf_counter()
            r = score(predict, episodes)
            rows.append({"setting": f"{n_way}-way {k_shot}-shot", "n_way": n_way,
                         "k_shot": k_shot, "method": method, **r,
                         "seconds": time.perf_counter() - t0})
            say(f"  {rows[-1]['setting']:<16} {method:<30} {r['accuracy']:.4f} "
                f"+- {r['ci95']:.4f}")
    return rows


def markdown_table(rows):
    """Methods down, settings across: ``accuracy +- half-width`` (percent)."""
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    cell = {(r["method"], r["setting"]): f"{100 * r['accuracy']:.1f} ± {100 * r['ci95']:.1f}"
            for r in rows}
    lines = ["| method | " + " | ".join(settings) + " |",
             "|---|" + "---:|" * len(settings)]
    for method in dict.fromkeys(r["method"] for r in rows):
        lines.append(f"| {method} | " + " | ".join(cell[method, st] for st in settings) + " |")
    return "\n".join(lines)


def _plot(rows, hist, path):
    """Left: accuracy with 95% intervals per setting and method; right: meta-validation
    accuracy during meta-training."""
    fig, (ax, ax2) = new_axes(figsize=(12, 4.5), ncols=2)
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        got = {r["setting"]: r for r in rows if r["method"] == m}
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(settings))]
        ax.bar(xs, [got[st]["accuracy"] for st in settings], width,
               yerr=[got[st]["ci95"] for st in settings], capsize=3, label=m)
    ax.set_xticks(range(len(settings)), settings)
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("query accuracy (95% interval)")
    ax.set_title("CLINC150 meta-test intents")
    ax.legend(fontsize=7, ncol=2, loc="upper center")
    for name, h in hist.items():
        ax2.plot(h["val_step"], h["val_accuracy"], "o-", label=name)
    ax2.set_xlabel("meta-training episode")
    ax2.set_ylabel("meta-validation accuracy (5-way 5-shot)")
    ax2.set_title("meta-training")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def fewshot_intents(device=None, seed=0, fast=False, progress=True, output_dir=None, log=print,
                    episodes=None, body=None):
    """Run the benchmark (see the module docstring). ``episodes``: test episodes per
    setting (default 600; 5 in fast mode); ``body``: a minillm GPT/BERT model directory to
    start every encoder from, instead of a fresh small BERT.

    Returns keys ``rows`` (``[{setting, n_way, k_shot, method, accuracy, ci95, episodes,
    accuracies, seconds}]``), ``table`` (Markdown), ``meta_split`` (the intents of each
    meta-split), ``history`` (meta-training: losses and meta-validation accuracy),
    ``total_seconds``, plus the common keys."""
    say = _logger(log)
    t_start = time.perf_counter()
    s = _settings(fast, episodes, body)
    splits = clinc_meta_splits(per_class=s["per_class"])
    say("fewshot-intents: " + ", ".join(f"{len(v)} meta-{k} intents" for k, v in splits.items())
        + f"; {s['episodes']} test episodes per setting, {s['query']} queries per class")
    with _on(device) as dev:
        enc, hist = _meta_train(splits, s, seed, progress, say)
        bow = BagOfWordsCentroid().fit(t for texts in splits["train"].values() for t in texts)
        rows = _score_settings(splits, _learners(enc, bow, s), s, seed, say)
    result = _header("fewshot-intents", dev, seed, fast, s, ANCHOR)
    result.update(rows=rows, table=markdown_table(rows),
                  meta_split={k: sorted(v) for k, v in splits.items()}, history=hist,
                  total_seconds=time.perf_counter() - t_start)
    say(result["table"])
    return _finish(result, output_dir, lambda path: _plot(rows, hist, path), log)
