"""`minillm finetune --task dpo`: preference tuning of an instruction model with DPO.

The pairs come from the user's file (``prompt``, ``chosen``, ``rejected``; JSON or JSONL) or
are built from an instruction dataset with the SFT model itself: the chosen answer is the right
one, the rejected answer is what the model actually said when that was wrong, or else a near
miss of the right answer (one digit changed, the other sentiment label, a character dropped).
On the built-in set the pairs of the generated tasks and of sentiment come from fresh inputs (in
no split): there the model makes real mistakes, where on its training prompts it has memorised
the answers and only near misses are left.
The frozen reference is the starting model; its log-probabilities are computed once. The
policy trains with dropout off (as TRL's DPO trainer does by default): with dropout, its
log-probabilities would be noisy against the reference's, and the log-ratios with them. After
training: reward accuracy, margin and the chosen answers' log-ratio to the reference on the
validation pairs, and exact match on the instruction splits, beside the starting model's.
"""
from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

from .. import backend
from .. import datasets as D
from .._fileio import atomic_write_json
from ..datasets.instructions import PRACTICE_TASKS, practice_records
from ..finetune import dpo
from ..finetune import instruct as I
from ..training import Trainer, plot_history
from . import instruct, tasks

LABELS = {"正面": "负面", "负面": "正面"}


def near_miss(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer close to ``answer``: a digit changed, the other sentiment
    label, or one character dropped (an answer of one character gets another character)."""
    if answer in LABELS:
        return LABELS[answer]
    digits = [i for i, c in enumerate(answer) if c.isdigit()]
    if digits:
        i = rng.choice(digits)
        new = rng.choice([d for d in "0123456789" if d != answer[i]])
        return answer[:i] + new + answer[i + 1:]
    if len(answer) > 1:
        i = rng.randrange(len(answer))
        return answer[:i] + answer[i + 1:]
    return answer + answer


def build_pairs(model, tok, template, records, seed=0, progress=False) -> list[dict]:
    """Preference records from Alpaca records: ``{"prompt", "chosen", "rejected", "task",
    "source"}`` with ``source`` "model" (the SFT model's own wrong answer) or "near miss"."""
    from tqdm.auto import tqdm
    rng = random.Random(seed)
    pairs = []
    for r in tqdm(records, desc="building pairs", unit="record", disable=not progress):
        prompt = template.user_text(r["instruction"], r.get("input", ""))
        said = I.answer(model, tok, template, [{"role": "user", "content": prompt}],
                        instruct.MAX_NEW_TOKENS)
        wrong = not I.exact_match(said, r["output"]) and said.strip()
        rejected = said.strip() if wrong else near_miss(r["output"], rng)
        pairs.append({"prompt": prompt, "chosen": r["output"], "rejected": rejected,
                      "task": r.get("task", "all"), "source": "model" if wrong else "near miss"})
    return pairs


def load_pairs(cfg, model, tok, template, log=print) -> dict:
    """``{"train": pairs, "validation": pairs}`` and the instruction splits (for exact match)
    when the data is an instruction dataset."""
    if cfg.dataset is None:
        records = D.load_preferences(cfg.train)
        train, val = tasks._carve(records, cfg.validation_fraction, cfg.seed) \
            if not cfg.validation else (records, D.load_preferences(cfg.validation))
        return {"train": list(train), "validation": list(val)}, {}
    splits = instruct.load_splits(cfg, log)
    train, fresh = _practice(cfg, splits["train"])
    pairs = {s: build_pairs(model, tok, template, records, cfg.seed + i, cfg.progress)
             for i, (s, records) in enumerate((("train", train),
                                               ("validation", splits["validation"])))}
    made = sum(p["source"] == "model" for p in pairs["train"])
    tasks._log(log, f"pairs: {len(pairs['train'])} train ({made} rejected answers are the "
                    f"model's own mistakes, the rest near misses; fresh inputs for "
                    f"{', '.join(sorted(fresh))}), {len(pairs['validation'])} validation")
    return pairs, splits


def _practice(cfg, train):
    """``(records, tasks)``: on the built-in set, the training records of each task with fresh
    inputs are replaced by as many fresh ones (:func:`~minillm.datasets.instructions.
    practice_records`): on them the model makes the mistakes it has to unlearn, while on its
    training prompts it mostly answers right and only near misses are left."""
    if cfg.dataset != "instructions":
        return train, set()
    options = tasks.dataset_kwargs(cfg)
    counts = Counter(r["task"] for r in train if r.get("task") in PRACTICE_TASKS)
    fresh = [r for task, n in sorted(counts.items())
             for r in practice_records(task, n, **options)]
    return [r for r in train if r.get("task") not in counts] + fresh, set(counts)


def _encode(tok, template, pairs, block_size):
    """Encoded pairs; a pair longer than the window is an error naming it."""
    out = []
    for i, p in enumerate(pairs):
        e = dpo.encode_pair(tok, template, p)
        longest = max(len(e["chosen"][0]), len(e["rejected"][0]))
        if longest > block_size:
            raise tasks.TaskError(f"preference pair {i} takes {longest + 1} tokens, more than "
                                  f"the model's window of {block_size}: shorten it")
        out.append(e)
    return out


def finetune_dpo(cfg, command=None, log=print, resume_from_checkpoint=None) -> dict:
    """DPO on top of an instruction model (``cfg.model``); returns the results dict (also
    ``metrics.json``): the preference metrics on validation pairs, and exact match before
    and after when the pairs come from an instruction dataset."""
    from .. import __version__
    t_start = time.perf_counter()
    cfg, dev, out = tasks._start_run(cfg, command, "finetune")
    with backend.default_device_as(dev):
        backend.manual_seed(cfg.seed)
        model, tok, template, info = instruct.load_instruct_model(cfg.model, dev)
        model.disable_dropout()     # the policy/reference log-ratios must not be dropout noise
        pairs, splits = load_pairs(cfg, model, tok, template, log)
        before = instruct.score(model, tok, template, splits, cfg) if splits else {}
        pad = tok.pad_id if tok.pad_id is not None else tok.eos_id
        encoded = {s: _encode(tok, template, p, model.config.block_size)
                   for s, p in pairs.items()}
        for rows in encoded.values():           # the reference is the starting model, frozen
            dpo.reference_logprobs(model, rows, pad, cfg.eval_batch_size, dev)
        model.is_language_model = False         # the eval loss is DPO's, not a perplexity
        args, epochs = instruct._arguments(cfg, out, len(encoded["train"]),
                                           tasks.TARGET_STEPS["dpo"])
        trainer = Trainer(model, args, train_dataset=encoded["train"],
                          eval_dataset=encoded["validation"],
                          data_collator=dpo.PairCollator(pad, dev),
                          compute_loss=dpo.make_compute_loss(cfg.dpo_beta,
                                                             cfg.dpo_nll_weight,
                                                             cfg.dpo_positive))
        t0 = time.perf_counter()
        state = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        results = {"task": "dpo", "command": command, "minillm": __version__,
                   "device": str(dev), "train_seconds": time.perf_counter() - t0,
                   "steps": trainer.state.global_step, "best_step": state.loaded_best_step,
                   "beta": cfg.dpo_beta, "nll_weight": cfg.dpo_nll_weight,
                   "positive": cfg.dpo_positive,
                   "train_pairs": len(encoded["train"]),
                   "epochs": epochs, "base_model": cfg.model,
                   "preferences": dpo.preference_metrics(
                       model, encoded["validation"], pad, cfg.dpo_beta, cfg.eval_batch_size,
                       dev, [_group(p) for p in pairs["validation"]])}
        results["before"] = before
        results.update(instruct.score(model, tok, template, splits, cfg, out) if splits else {})
        instruct.save_model(model, tok, template, {**info, "stage": "dpo",
                                                   "base_model": cfg.model}, out / "model")
    atomic_write_json(out / "pairs.json", pairs)
    plot_history(trainer.state.history, out / "loss.png", title="minillm finetune --task dpo")
    results["total_seconds"] = time.perf_counter() - t_start
    atomic_write_json(out / "metrics.json", results)
    tasks._log(log, dpo_summary(results))
    return results


def _group(pair) -> str:
    """The group a validation pair's reward accuracy is reported in: its task, and whether
    the rejected answer is the model's own (built-in pairs)."""
    task = pair.get("task", "all")
    return f"{task}, {pair['source']}" if "source" in pair else task


def dpo_summary(results) -> str:
    p = results["preferences"]
    lines = [f"validation pairs: reward accuracy {p['reward_accuracy']:.3f}, margin "
             f"{p['reward_margin']:.3f}, chosen log-ratio to the reference "
             f"{p['chosen_log_ratio']:.3f} nats ({p['n']} pairs)"]
    if len(p.get("by_group", {})) > 1:
        lines.append("  reward accuracy by group: " + "; ".join(
            f"{g} {v['reward_accuracy']:.2f} ({v['n']})" for g, v in p["by_group"].items()))
    for s in ("validation", "test"):
        if s in results and s in results.get("before", {}):
            lines.append(f"{s}: exact match {results['before'][s]['exact_match']:.4f} before "
                         f"DPO -> {results[s]['exact_match']:.4f} after")
    return "\n".join(lines)
