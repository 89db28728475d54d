"""GRPO (minillm.finetune.grpo): group-relative advantages and the clipped, KL-penalised
objective against a NumPy transcription of the formula, gradcheck, and its special cases."""
from __future__ import annotations

import numpy as np
import pytest

import minillm as mm
from minillm.finetune import grpo

ADVANTAGE_CASES = {
    "one right of four": ([[1, 0, 0, 0]], [[np.sqrt(3), -1 / np.sqrt(3), -1 / np.sqrt(3),
                                              -1 / np.sqrt(3)]]),
    "all right": ([[1, 1, 1]], [[0, 0, 0]]),
    "all wrong": ([[0, 0]], [[0, 0]]),
    "two groups": ([[1, 0], [0.5, 0.5]], [[1, -1], [0, 0]]),
}


@pytest.mark.parametrize("case", list(ADVANTAGE_CASES))
def test_advantages_are_relative_to_their_own_group(case):
    rewards, want = ADVANTAGE_CASES[case]       # eps = 1e-6 moves the values by < 1e-5
    np.testing.assert_allclose(grpo.group_advantages(rewards), want, atol=1e-5)


def test_advantages_need_groups():
    with pytest.raises(ValueError, match="answers per group >= 2"):
        grpo.group_advantages([1.0, 0.0])


def _reference(logp, old, ref, adv, mask, eps, beta):
    ratio = np.exp(logp - old)
    surrogate = np.minimum(ratio * adv[:, None], np.clip(ratio, 1 - eps, 1 + eps) * adv[:, None])
    kl = np.exp(ref - logp) - (ref - logp) - 1
    per = ((surrogate - beta * kl) * mask).sum(1) / mask.sum(1)
    return -per.mean()


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    logp = -rng.random((3, 5)) * 2
    old = logp + rng.normal(size=(3, 5)) * 0.3          # ratios on both sides of the clip
    ref = logp + rng.normal(size=(3, 5)) * 0.5
    adv = np.array([1.2, -0.7, 0.0])
    mask = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=np.float64)
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("eps,beta", [(0.2, 0.04), (0.1, 0.0), (10.0, 0.5)])
def test_the_loss_matches_the_formula(eps, beta):
    logp, old, ref, adv, mask = _inputs()
    loss, kl = grpo.grpo_loss(mm.tensor(logp), old, ref, adv, mask, eps, beta)
    assert loss.item() == pytest.approx(_reference(logp, old, ref, adv, mask, eps, beta),
                                        rel=1e-10)
    assert kl >= 0


def test_the_loss_gradient_is_checked():
    logp, old, ref, adv, mask = _inputs(1)
    x = mm.tensor(logp, requires_grad=True)
    assert mm.gradcheck(lambda t: grpo.grpo_loss(t, old, ref, adv, mask, 0.2, 0.04)[0], [x])


def test_on_policy_the_gradient_is_the_policy_gradient():
    # rho = 1 (old = current), no KL: dL/dlogp_t = -A_i mask_t / (len_i * B)
    logp, _, _, adv, mask = _inputs(2)
    x = mm.tensor(logp, requires_grad=True)
    loss, _ = grpo.grpo_loss(x, logp, logp, adv, mask, 0.2, 0.0)
    loss.backward()
    want = -adv[:, None] * mask / mask.sum(1, keepdims=True) / 3
    np.testing.assert_allclose(x.grad.numpy(), want, atol=1e-12)


def test_token_logprobs_are_zero_off_the_answer():
    from minillm.models import GPT, GPTConfig
    mm.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8,
                          dropout=0.0))
    ids = mm.tensor(np.array([[1, 2, 3, 4]]))
    targets = mm.tensor(np.array([[-100, 3, 4, -100]]))
    lp = grpo.token_logprobs(model, ids, targets).numpy()
    assert lp[0, 0] == 0 and lp[0, 3] == 0 and (lp[0, 1:3] < 0).all()
