"""`minillm finetune --task grpo`: reinforcement learning with a verifiable reward.

Starting from an instruction model, each step takes ``batch_size`` arithmetic prompts, samples a
group of ``grpo_group`` answers to each (temperature 1), rewards an answer 1 when
:func:`minillm.datasets.check_arithmetic` accepts it and 0 otherwise, and takes one AdamW step
on the GRPO loss (:mod:`minillm.finetune.grpo`) with a KL penalty to the frozen starting model.
The policy has dropout off: with it, the "old" log-probabilities and the ones differentiated
would come from two different random networks, so the ratio and the KL would be noise
(measured: a KL of 0.27 to the reference after 30 steps, with the reward flat).
The prompts are fresh problems asked with the seen wordings: on the SFT training prompts the
model knows the answers by heart, all of a group's answers earn the same reward and the
group-relative advantage is zero. Accuracy of greedy answers is measured before and after, on
the validation split's arithmetic (wordings seen in SFT) and the test split's (held-out
wordings).
"""
from __future__ import annotations

import time

import numpy as np

from .. import backend
from .. import datasets as D
from .._fileio import atomic_write_json
from ..autograd import no_grad, tensor
from ..datasets.instructions import practice_records
from ..finetune import grpo
from ..finetune import instruct as I
from ..optim import clip_grad_norm_
from ..training import plot_history
from . import instruct, tasks

TASK = "arithmetic"
PRACTICE = 4000      # fresh problems to practise on (without --max-train-examples)


def sample_answers(model, tok, template, record, group, max_new_tokens, seed):
    """``(prompt ids, [answer ids])``: ``group`` answers sampled at temperature 1; each
    answer keeps its closing eos when it produced one (stopping is part of the answer)."""
    prompt = template.user_text(record["instruction"], record.get("input", ""))
    ids = I.prompt_ids(tok, template, [{"role": "user", "content": prompt}])
    room = min(max_new_tokens, model.config.block_size - len(ids))
    out = model.generate(np.tile(np.asarray(ids, dtype=np.int64), (group, 1)), room,
                         temperature=1.0, eos_id=tok.eos_id, seed=seed).numpy()
    answers = []
    for row in out[:, len(ids):].tolist():
        cut = row.index(tok.eos_id) + 1 if tok.eos_id in row else len(row)
        answers.append(row[:cut])
    return ids, answers


def rollout(model, tok, template, records, group, max_new_tokens, seed):
    """Rows ``(prompt ids, answer ids)``, rewards (P, G) and the answers' text."""
    rows, rewards, texts = [], [], []
    for i, r in enumerate(records):
        ids, answers = sample_answers(model, tok, template, r, group, max_new_tokens, seed + i)
        said = [tok.decode([t for t in a if t != tok.eos_id]) for a in answers]
        rewards.append([float(D.check_arithmetic(r, s)) for s in said])
        rows += [(ids, a) for a in answers]
        texts += said
    return rows, np.asarray(rewards), texts


def batch_arrays(rows, pad_id):
    """``(ids, targets, mask)`` (B, T) for next-token log-probabilities of the answers:
    targets are the answer tokens, -100 on the prompt and the padding; mask marks them."""
    pairs = []
    for prompt, answer in rows:
        seq = prompt + answer
        labels = [I.IGNORE] * len(prompt) + answer
        pairs.append(I.shift_for_lm(seq, labels))
    xs, ys = I.pad_batch(pairs, pad_id)
    return xs, ys, (ys != I.IGNORE).astype(np.float64)


def _step(model, ref, optimizer, rows, rewards, cfg, pad):
    """One GRPO update; ``(loss, mean KL)``."""
    xs, ys, mask = batch_arrays(rows, pad)
    ids, targets = tensor(xs), tensor(ys)
    adv = grpo.group_advantages(rewards).reshape(-1)
    with no_grad():
        old = grpo.token_logprobs(model, ids, targets).numpy()
        ref_lp = grpo.token_logprobs(ref, ids, targets).numpy()
    loss, kl = grpo.grpo_loss(grpo.token_logprobs(model, ids, targets), old, ref_lp, adv, mask,
                              beta=cfg.grpo_beta)
    optimizer.zero_grad()
    loss.backward()
    clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    return loss.item(), kl


def _arithmetic(cfg, split):
    """The arithmetic records of ``split``; GRPO's training prompts from the built-in set are
    fresh problems, in no split (:func:`minillm.datasets.instructions.practice_records`)."""
    if split == "train" and cfg.train is None and (cfg.dataset or "instructions") == "instructions":
        options = tasks.dataset_kwargs(cfg)
        return practice_records(TASK, cfg.max_train_examples or PRACTICE, **options)
    ds = D.load(cfg.dataset or "instructions", split, **tasks.dataset_kwargs(cfg))
    records = D.Dataset([r for r in ds if r.get("task") == TASK], name=ds.name, split=split)
    if split == "train":
        return list(tasks.sample_examples(records, cfg.max_train_examples, cfg.seed))
    return list(tasks.sample_examples(records, cfg.max_eval_examples))   # fixed, as evaluate


def _accuracy(model, tok, template, records, progress):
    """Greedy answers' exact match (the working too, when answers are worked) and
    ``value``: the share whose value the reward accepts (what GRPO optimises)."""
    r = I.evaluate_records(model, tok, template, records, instruct.MAX_NEW_TOKENS, progress)
    value = [D.check_arithmetic(rec, p["prediction"]) for rec, p in zip(records, r["predictions"])]
    return {"exact_match": r["exact_match"], "value": float(np.mean(value)) if value else
            float("nan"), "n": r["n"]}


def _accuracies(scores) -> str:
    return "; ".join(f"{s} ({'seen' if s == 'validation' else 'held-out'} wordings) "
                     f"{r['exact_match']:.4f} (value right {r['value']:.4f}) on {r['n']}"
                     for s, r in scores.items())


def finetune_grpo(cfg, command=None, log=print, resume_from_checkpoint=None) -> dict:
    """GRPO on the arithmetic task from an instruction model (``cfg.model``)."""
    from .. import __version__
    if resume_from_checkpoint:
        raise tasks.TaskError("--resume is not available for --task grpo (runs are short)")
    t_start = time.perf_counter()
    cfg, dev, out = tasks._start_run(cfg, command, "finetune")
    with backend.default_device_as(dev):
        backend.manual_seed(cfg.seed)
        model, tok, template, info = instruct.load_instruct_model(cfg.model, dev)
        model.disable_dropout()     # rho = pi / pi_old must be 1 at the update, not noise
        ref = instruct.load_instruct_model(cfg.model, dev)[0].eval()
        train = _arithmetic(cfg, "train")
        evals = {s: _arithmetic(cfg, s) for s in ("validation", "test")}
        before = {s: _accuracy(model, tok, template, r, cfg.progress) for s, r in evals.items()}
        tasks._log(log, "arithmetic before GRPO: " + _accuracies(before))
        optimizer = model.configure_optimizers(0.0, cfg.learning_rate)
        pad = tok.pad_id if tok.pad_id is not None else tok.eos_id
        history = _train(cfg, model, ref, optimizer, tok, template, train, pad, log)
        after = {s: _accuracy(model, tok, template, r, cfg.progress) for s, r in evals.items()}
        instruct.save_model(model, tok, template, {**info, "stage": "grpo",
                                                   "base_model": cfg.model}, out / "model")
    results = {"task": "grpo", "command": command, "minillm": __version__, "device": str(dev),
               "steps": len(history), "group": cfg.grpo_group, "beta": cfg.grpo_beta,
               "prompts_per_step": cfg.batch_size, "base_model": cfg.model,
               "practice_prompts": len(train),
               "before": before, "after": after,
               "reward_first": history[0]["reward"] if history else None,
               "reward_last": float(np.mean([h["reward"] for h in history[-10:]]))
               if history else None, "history": history,
               "total_seconds": time.perf_counter() - t_start}
    atomic_write_json(out / "metrics.json", results)
    plot_history(history, out / "loss.png", title="minillm finetune --task grpo")
    tasks._log(log, f"arithmetic after GRPO ({len(history)} steps): " + _accuracies(after))
    return results


def _train(cfg, model, ref, optimizer, tok, template, train, pad, log):
    """The GRPO loop: sample, score, one update per step; returns the history."""
    from tqdm.auto import tqdm
    rng = np.random.default_rng(cfg.seed)
    steps = cfg.max_steps or tasks.TARGET_STEPS["grpo"]
    history = []
    for step in tqdm(range(1, steps + 1), desc="grpo", unit="step", disable=not cfg.progress):
        chosen = [train[i] for i in rng.choice(len(train), cfg.batch_size, replace=False)]
        rows, rewards, _ = rollout(model, tok, template, chosen, cfg.grpo_group,
                                   instruct.MAX_NEW_TOKENS, cfg.seed * 100003 + step * 1009)
        loss, kl = _step(model, ref, optimizer, rows, rewards, cfg, pad)
        history.append({"step": step, "loss": loss, "reward": float(rewards.mean()),
                        "kl": kl, "learning_rate": cfg.learning_rate})
        if step % max(1, steps // 10) == 0:
            tasks._log(log, f"step {step}: reward {np.mean([h['reward'] for h in history[-10:]]):.3f}"
                            f", KL {kl:.4f}")
    return history
