"""Value checks on GPU-like devices are queued and made at the next sync (backend.check), so a
training step moves nothing between host and device (counted on the stand-in device)."""
import numpy as np
import pytest

import minillm as mm
import minillm.functional as F
from minillm import backend
from minillm.backend import TRANSFERS
from minillm.models import (GPT, LSTMLM, BertConfig, GPTConfig, LSTMLMConfig,
                            ModelForQuestionAnswering, ModelForSequenceClassification,
                            ModelForTokenClassification)
from minillm.optim import AdamW, clip_grad_norm_


def fake(a):
    return mm.tensor(np.asarray(a), device="fake")


def test_check_is_immediate_on_cpu():
    with pytest.raises(IndexError, match="bad ids"):
        backend.check(np.array(True), lambda: IndexError("bad ids"))
    backend.check(np.array(False), lambda: IndexError("never"))
    assert backend.pending_checks() == 0


def test_check_is_queued_on_a_device_and_made_at_the_next_transfer():
    # -1 is a valid NumPy/CuPy index (the last row), so nothing fails in the op itself: only
    # the queued check can report it, at the next sync
    ids, table = fake([1, -1, 2]), mm.zeros((4, 2), device="fake")
    before = dict(TRANSFERS)
    out = F.embedding(ids, table)
    assert backend.pending_checks() == 1 and TRANSFERS == before
    with pytest.raises(IndexError, match=r"ids must be in \[0, 4\); got values like \[-1\]"):
        out.numpy()
    assert backend.pending_checks() == 0


def test_many_checks_cost_one_transfer_and_the_first_failure_is_raised():
    for i in range(5):
        backend.check(fake(i == 3).data, lambda i=i: ValueError(f"check {i} failed"))
    assert backend.pending_checks() == 5
    before = TRANSFERS["to_host"]
    with pytest.raises(ValueError, match="check 3 failed"):
        backend.flush_checks()
    assert TRANSFERS["to_host"] == before + 1
    assert backend.pending_checks() == 0
    backend.flush_checks()                               # nothing left: no transfer
    assert TRANSFERS["to_host"] == before + 1


def test_passing_checks_raise_nothing_at_the_sync():
    backend.check(fake(False).data, lambda: ValueError("no"))
    assert fake([1.5]).item() == 1.5


def test_an_op_failing_on_bad_values_reports_the_queued_check():
    # out-of-range target: the fake device's NumPy indexing fails inside the op; the queued
    # check's message (what a user can act on) is raised instead of NumPy's
    with pytest.raises(IndexError, match=r"target values must be in \[0, 3\)"):
        F.cross_entropy(mm.zeros((2, 3), device="fake"), fake([0, 3]))


# -- whole training steps: no host<->device transfer --------------------------------------
def _gpt_step():
    mm.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8,
                          dropout=0.1)).to("fake")
    x = fake(np.random.default_rng(0).integers(0, 11, (3, 8)))
    return model, lambda: model(x, x)[1]


def _lstm_step():
    mm.manual_seed(0)
    model = LSTMLM(LSTMLMConfig(vocab_size=11, embed_dim=6, hidden_size=6, dropout=0.1)).to("fake")
    x = fake(np.random.default_rng(0).integers(0, 11, (3, 5)))
    return model, lambda: F.cross_entropy(model(x), x)


def _head_step(cls, **labels):
    def build():
        mm.manual_seed(0)
        body = BertConfig(vocab_size=13, hidden_size=8, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=16,
                          max_position_embeddings=8).to_dict()
        model = cls(cls.config_class(base_model_type="bert", base_config=body,
                                     **({"num_labels": 3} if cls is not
                                        ModelForQuestionAnswering else {}))).to("fake")
        ids = fake(np.random.default_rng(0).integers(1, 13, (2, 6)))
        mask = fake([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
        kw = {k: fake(v) for k, v in labels.items()}
        return model, lambda: model(ids, attention_mask=mask, **kw)[-1]
    return build


STEPS = {
    "gpt": _gpt_step,
    "lstm": _lstm_step,
    "bert-classification": _head_step(ModelForSequenceClassification, labels=[0, 2]),
    "bert-ner": _head_step(ModelForTokenClassification,
                           labels=[[0, 1, 2, 0, 1, 2], [1, 2, 0, -100, -100, -100]]),
    "bert-qa": _head_step(ModelForQuestionAnswering, start_positions=[1, 0],
                          end_positions=[3, 2]),
}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_a_training_step_moves_nothing_between_host_and_device(name):
    model, loss_fn = STEPS[name]()
    model.train()
    opt = AdamW(model.parameters(), lr=1e-3)
    loss_fn()                                   # first call: lazily built buffers, if any
    before = dict(TRANSFERS)
    for _ in range(2):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    assert TRANSFERS == before, f"{name}: a training step moved data: {before} -> {TRANSFERS}"
    assert np.isfinite(loss.item())             # the one sync, after the steps (checks pass)
