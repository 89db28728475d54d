"""Group relative policy optimization (GRPO; Shao et al. 2024, DeepSeekMath).

Reinforcement learning with a *verifiable* reward: for a prompt q the policy samples a group of
G answers o_1..o_G, a program scores each (r_i = 1 if the arithmetic is right, else 0), and
each answer's advantage is its reward relative to its own group,

    A_i = (r_i - mean(r)) / (std(r) + eps),

so no value network (critic) is needed: the group is the baseline. Every token t of answer i
then gets the PPO-style clipped objective with a KL penalty to the frozen reference model,

    J = mean_i mean_t [ min(rho A_i, clip(rho, 1 - e, 1 + e) A_i) - beta KL_t ],
    rho = pi(o_t) / pi_old(o_t),    KL_t = pi_ref/pi - log(pi_ref/pi) - 1   (>= 0, unbiased),

and the loss is -J. A group whose answers all get the same reward has zero advantages and
teaches nothing (except through the KL term). With one update per batch of samples the ratio
rho is 1 at the update and the gradient is the plain policy gradient A_i grad log pi.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Tensor, tensor
from ..autograd.ops import minimum


def group_advantages(rewards, eps=1e-6):
    """``(P, G)`` rewards of P groups of G answers -> advantages of the same shape
    (NumPy, float64): each row centred on its mean and divided by its std + eps."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must be (groups, answers per group >= 2), got {r.shape}")
    return (r - r.mean(axis=1, keepdims=True)) / (r.std(axis=1, keepdims=True) + eps)


def token_logprobs(model, ids, targets):
    """``log pi(target_t | ids_<=t)`` for every position, (B, T); 0 where the target is
    -100 (prompt and padding)."""
    return -F.cross_entropy(model(ids), targets, reduction="none")


def grpo_loss(logp, logp_old, logp_ref, advantages, mask, clip_eps=0.2, beta=0.04):
    """``(loss, mean KL)``: -J of the module docstring. ``logp`` (B, T) is a Tensor with
    gradients; ``logp_old``, ``logp_ref`` (B, T), ``advantages`` (B,) and ``mask`` (B, T, 1
    on answer tokens) are arrays or constant Tensors."""
    xp = logp.xp
    const = lambda a: a.data if isinstance(a, Tensor) else xp.asarray(a)  # noqa: E731
    old, ref, m = (const(a).astype(logp.dtype) for a in (logp_old, logp_ref, mask))
    adv = const(advantages).astype(logp.dtype)[:, None]
    ratio = (logp - tensor(old, device=logp.device)).exp()
    clipped = ratio.clip(1 - clip_eps, 1 + clip_eps)
    surrogate = minimum(ratio * tensor(adv, device=logp.device),
                        clipped * tensor(adv, device=logp.device))
    log_ref_ratio = tensor(ref, device=logp.device) - logp                 # log(pi_ref / pi)
    kl = log_ref_ratio.exp() - log_ref_ratio - 1.0
    per_token = (surrogate - beta * kl) * tensor(m, device=logp.device)
    lengths = tensor(xp.maximum(m.sum(axis=1), 1), device=logp.device)
    per_answer = per_token.sum(axis=1) / lengths                            # mean over tokens
    mean_kl = float(((kl.detach() * tensor(m, device=logp.device)).sum(axis=1) / lengths)
                    .mean().item())
    return -per_answer.mean(), mean_kl
