"""DPO (minillm.finetune.dpo): the loss against its closed form and gradcheck, sequence
log-probabilities against a hand computation, and the pair encoding's masks."""
from __future__ import annotations

import numpy as np
import pytest

import minillm as mm
from minillm.data.tokenizers import CharTokenizer
from minillm.finetune import dpo, instruct as I
from minillm.models import GPT, GPTConfig

T = I.ChatTemplate()


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_the_loss_is_minus_log_sigmoid_of_the_reward_margin(beta):
    rng = np.random.default_rng(0)
    pc, pr, rc, rr = (rng.normal(size=5) * 3 for _ in range(4))
    loss, chosen, rejected = dpo.dpo_loss(*(mm.tensor(a) for a in (pc, pr, rc, rr)), beta)
    margin = beta * ((pc - rc) - (pr - rr))
    assert loss.item() == pytest.approx(np.mean(-np.log(_sigmoid(margin))), rel=1e-10)
    np.testing.assert_allclose(chosen.numpy(), beta * (pc - rc), rtol=1e-12)
    np.testing.assert_allclose(rejected.numpy(), beta * (pr - rr), rtol=1e-12)


def test_the_loss_gradient_is_checked_and_has_the_closed_form():
    rng = np.random.default_rng(1)
    beta = 0.3
    pc, pr = (mm.tensor(rng.normal(size=4), requires_grad=True) for _ in range(2))
    rc, rr = (mm.tensor(rng.normal(size=4)) for _ in range(2))
    assert mm.gradcheck(lambda a, b: dpo.dpo_loss(a, b, rc, rr, beta)[0], [pc, pr])
    pc, pr = (mm.tensor(t.numpy(), requires_grad=True) for t in (pc, pr))   # fresh grads
    loss, _, _ = dpo.dpo_loss(pc, pr, rc, rr, beta)
    loss.backward()
    margin = beta * ((pc.numpy() - rc.numpy()) - (pr.numpy() - rr.numpy()))
    # dL/dlogpi(y_w) = -beta sigmoid(-margin) / B: push the chosen answer up, more when wrong
    np.testing.assert_allclose(pc.grad.numpy(), -beta * _sigmoid(-margin) / 4, rtol=1e-10)
    np.testing.assert_allclose(pr.grad.numpy(), beta * _sigmoid(-margin) / 4, rtol=1e-10)


@pytest.mark.parametrize("beta,positive", [(0.1, 50.0), (0.5, 5.0), (2.0, 0.5)])
def test_dpo_positive_charges_only_the_chosen_answer_falling_below_the_reference(beta,
                                                                                 positive):
    rng = np.random.default_rng(2)
    pc, pr, rc, rr = (rng.normal(size=6) * 3 for _ in range(4))
    loss, _, _ = dpo.dpo_loss(*(mm.tensor(a) for a in (pc, pr, rc, rr)), beta, positive)
    margin = beta * ((pc - rc) - (pr - rr) - positive * np.maximum(0, rc - pc))
    assert loss.item() == pytest.approx(np.mean(-np.log(_sigmoid(margin))), rel=1e-10)
    above = rc + np.abs(pc - rc)                  # every chosen answer at or above the reference
    plain = dpo.dpo_loss(*(mm.tensor(a) for a in (above, pr, rc, rr)), beta)[0].item()
    assert dpo.dpo_loss(*(mm.tensor(a) for a in (above, pr, rc, rr)), beta,
                        positive)[0].item() == pytest.approx(plain, rel=1e-12)
    a, b = (mm.tensor(x + 0.01, requires_grad=True) for x in (pc, pr))  # off the kink
    assert mm.gradcheck(lambda a, b: dpo.dpo_loss(a, b, mm.tensor(rc), mm.tensor(rr), beta,
                                                  positive)[0], [a, b])


def test_a_policy_equal_to_the_reference_has_loss_log_2():
    z = mm.tensor(np.array([-3.0, -1.0]))
    loss, _, _ = dpo.dpo_loss(z, z, z, z, beta=0.1)
    assert loss.item() == pytest.approx(np.log(2))


def _model(tok):
    mm.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2,
                         n_embd=16, dropout=0.0))


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.train(["用户：助手：2+3=56", "北京今天晴阴。"])


def _pairs_with_reference(model, tok):
    pairs = [dpo.encode_pair(tok, T, {"prompt": "2+3", "chosen": "5", "rejected": w})
             for w in ("6", "56")]
    return dpo.reference_logprobs(model, pairs, tok.pad_id)


def test_sequence_logprobs_sum_the_response_tokens_only(tok):
    model = _model(tok)
    pair = dpo.encode_pair(tok, T, {"prompt": "2+3", "chosen": "5", "rejected": "6"})
    x, y = pair["chosen"]
    got = dpo.sequence_logprobs(model, mm.tensor(np.asarray([x])),
                                mm.tensor(np.asarray([y]))).numpy()[0]
    logits = model(mm.tensor(np.asarray([x]))).numpy()[0].astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    kept = [t for t in range(len(y)) if y[t] != I.IGNORE]
    assert [y[t] for t in kept] == tok.encode("5") + [tok.eos_id]
    assert got == pytest.approx(sum(logp[t, y[t]] for t in kept), rel=1e-5)
    # the two answers share the prompt: only the answer tokens differ
    assert pair["chosen"][0][:-2] == pair["rejected"][0][:-2]


def test_reference_logprobs_are_what_the_metrics_start_from(tok):
    model = _model(tok)
    pairs = _pairs_with_reference(model, tok)
    m = dpo.preference_metrics(model, pairs, tok.pad_id)
    # before any training the policy is the reference: zero margins, loss log 2
    assert m["reward_margin"] == pytest.approx(0, abs=1e-6)
    assert m["loss"] == pytest.approx(np.log(2), rel=1e-5)
    assert m["chosen_log_ratio"] == pytest.approx(0, abs=1e-6) and m["n"] == 2
    by = dpo.preference_metrics(model, pairs, tok.pad_id, groups=["a", "b"])["by_group"]
    assert by == {"a": {"reward_accuracy": 0.0, "n": 1}, "b": {"reward_accuracy": 0.0, "n": 1}}


def test_the_nll_term_adds_the_chosen_answers_mean_token_nll(tok):
    model = _model(tok)
    pairs = _pairs_with_reference(model, tok)
    batch = dpo.PairCollator(tok.pad_id)(pairs)
    plain = dpo.make_compute_loss(0.1)(model, batch).item()
    both = dpo.make_compute_loss(0.1, nll_weight=2.0)(model, batch).item()
    chosen = dpo.sequence_logprobs(model, batch["chosen_ids"], batch["chosen_targets"]).numpy()
    tokens = (batch["chosen_targets"].numpy() != I.IGNORE).sum(1)     # "5" and eos: 2 each
    assert tokens.tolist() == [2, 2]
    assert both == pytest.approx(plain - 2.0 * np.mean(chosen / tokens), rel=1e-5)
