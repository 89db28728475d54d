"""Direct preference optimization (DPO; Rafailov et al. 2023).

RLHF (InstructGPT) fits a reward model to human preferences and then maximises that reward with
reinforcement learning, held near the SFT model by a KL penalty. DPO shows that the optimum of
that problem has a closed form, pi*(y|x) proportional to pi_ref(y|x) exp(r(x, y) / beta), so the
reward is implicit in the policy: r(x, y) = beta log(pi(y|x) / pi_ref(y|x)) + const. Putting it
into the Bradley-Terry preference model gives a plain classification loss on pairs (x, y_w
preferred to y_l), with no sampling and no separate reward model:

    L = -log sigmoid( beta [ (log pi(y_w|x) - log pi_ref(y_w|x))
                            - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

``log pi(y|x)`` is the sum of the log-probabilities of the response tokens (the prompt's are
masked out exactly as in SFT, :mod:`.instruct`). The reference ``pi_ref`` is the frozen SFT
model: its log-probabilities are computed once, before training.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import no_grad, tensor
from . import instruct as I


def sequence_logprobs(model, ids, targets):
    """``log pi(y|x)`` per row: the sum over positions whose target is not -100 of the log
    probability of that target. ``ids`` and ``targets`` are (B, T) next-token pairs."""
    logits = model(ids)
    nll = F.cross_entropy(logits, targets, reduction="none")         # 0 where ignored
    return -nll.sum(axis=-1)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1,
             positive=0.0):
    """``(mean loss, chosen rewards, rejected rewards)``: the rewards are the implicit
    ``beta (log pi - log pi_ref)`` of each response (Tensors of shape (B,)).

    ``positive`` > 0 is DPO-Positive (Pal et al. 2024): when the two answers differ in a
    token or two, plain DPO can widen the margin by lowering *both* likelihoods; the term
    ``- positive * max(0, log pi_ref(y_w|x) - log pi(y_w|x))`` inside the sigmoid charges
    every nat the chosen answer loses against the reference."""
    ref_chosen, ref_rejected = (r.astype(policy_chosen.dtype) for r in (ref_chosen,
                                                                          ref_rejected))
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    margin = chosen - rejected
    if positive:
        margin = margin - beta * positive * F.relu(ref_chosen - policy_chosen)
    ones = tensor(np.ones(margin.shape, dtype=margin.dtype), device=margin.device)
    loss = F.binary_cross_entropy_with_logits(margin, ones)         # -log sigmoid(margin)
    return loss, chosen.detach(), rejected.detach()


def encode_pair(tok, template, record):
    """``{"chosen": (x, y), "rejected": (x, y)}`` of a preference record ``{"prompt",
    "chosen", "rejected"}``: the prompt is one user turn, each answer an assistant turn."""
    out = {}
    for side in ("chosen", "rejected"):
        messages = [{"role": "user", "content": record["prompt"]},
                    {"role": "assistant", "content": record[side]}]
        out[side] = I.shift_for_lm(*I.encode_conversation(tok, template, messages))
    return out


class PairCollator:
    """Pairs -> ``{"chosen_ids", "chosen_targets", "rejected_ids", "rejected_targets",
    "ref_chosen", "ref_rejected"}`` tensors (the reference log-probabilities, once computed,
    travel with the pair)."""

    def __init__(self, pad_id, device=None):
        self.pad_id, self.device = pad_id, device

    def __call__(self, pairs):
        batch = {}
        for side in ("chosen", "rejected"):
            xs, ys = I.pad_batch([p[side] for p in pairs], self.pad_id)
            batch[f"{side}_ids"] = tensor(xs, device=self.device)
            batch[f"{side}_targets"] = tensor(ys, device=self.device)
        for side in ("chosen", "rejected"):
            if f"ref_{side}" in pairs[0]:
                batch[f"ref_{side}"] = tensor(np.asarray([p[f"ref_{side}"] for p in pairs]),
                                              device=self.device)
        return batch


def _logprobs(model, batch, side):
    return sequence_logprobs(model, batch[f"{side}_ids"], batch[f"{side}_targets"])


def reference_logprobs(model, pairs, pad_id, batch_size=32, device=None):
    """Add ``ref_chosen`` / ``ref_rejected`` (floats) to each pair: the frozen model's
    ``log pi_ref`` of both answers, computed once."""
    collate = PairCollator(pad_id, device)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start:start + batch_size]
                batch = collate(chunk)
                for side in ("chosen", "rejected"):
                    values = _logprobs(model, batch, side).numpy()
                    for p, v in zip(chunk, values):
                        p[f"ref_{side}"] = float(v)
    finally:
        model.train(was_training)
    return pairs


def make_compute_loss(beta, nll_weight=0.0, positive=0.0):
    """A Trainer ``compute_loss(model, batch)``: the DPO loss of the batch, plus
    ``nll_weight`` times the chosen answers' mean per-token negative log-likelihood (the
    "DPO + NLL" of Pang et al. 2024, RPO): DPO alone only ranks the pair, and can lower the
    chosen answer's likelihood as long as the rejected one falls faster."""
    def compute_loss(model, batch):
        chosen = _logprobs(model, batch, "chosen")
        loss, _, _ = dpo_loss(chosen, _logprobs(model, batch, "rejected"),
                              batch["ref_chosen"], batch["ref_rejected"], beta, positive)
        if nll_weight:
            xp = chosen.xp
            tokens = (batch["chosen_targets"].data != I.IGNORE).sum(axis=1)
            per_token = chosen / tensor(xp.maximum(tokens, 1).astype(chosen.dtype),
                                        device=chosen.device)
            loss = loss - nll_weight * per_token.mean()
        return loss
    return compute_loss


def preference_metrics(model, pairs, pad_id, beta=0.1, batch_size=32, device=None,
                       groups=None) -> dict:
    """On pairs that carry reference log-probabilities: reward accuracy (the chosen answer's
    implicit reward is the higher), the mean reward margin, the (plain) DPO loss, and the
    mean log-ratio ``log pi - log pi_ref`` of the chosen answers (a sample estimate of how far
    the policy moved from the reference on them, in nats per answer). ``groups``: one name
    per pair (its task, say): adds ``by_group``, the reward accuracy and count per name."""
    collate = PairCollator(pad_id, device)
    margins, ratios, losses = [], [], []
    was_training = model.training
    model.eval()
    with no_grad():
        for start in range(0, len(pairs), batch_size):
            b = collate(pairs[start:start + batch_size])
            pc, pr = _logprobs(model, b, "chosen"), _logprobs(model, b, "rejected")
            loss, rc, rr = dpo_loss(pc, pr, b["ref_chosen"], b["ref_rejected"], beta)
            margins += (rc - rr).numpy().tolist()
            ratios += (pc.numpy() - b["ref_chosen"].numpy()).tolist()
            losses.append(loss.item() * len(pc.numpy()))
    model.train(was_training)
    m = np.asarray(margins)
    out = {"reward_accuracy": float((m > 0).mean()), "reward_margin": float(m.mean()),
           "loss": float(np.sum(losses) / len(m)), "chosen_log_ratio": float(np.mean(ratios)),
           "n": len(m)}
    if groups is not None:
        names = np.asarray(groups)
        out["by_group"] = {g: {"reward_accuracy": float((m[names == g] > 0).mean()),
                               "n": int((names == g).sum())} for g in sorted(set(groups))}
    return out
