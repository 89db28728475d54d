"""The permutation-LM objective (XLNet's idea) on the BERT encoder: masks for a hand-written
order, the sampler, two-stream attention (no target sees itself or anything later in z),
a gradcheck, and a tiny model that learns with plm_loss.

Device-clean: NumPy in, ``.numpy()`` / ``.item()`` out; runs on cpu and on 'fake'.
"""
import numpy as np
import pytest

import minillm as mm
from minillm.models.bert import BertConfig, BertForMaskedLM, BertForPreTraining
from minillm.models.plm import (factorization_masks, plm_forward, plm_loss,
                                sample_factorization_order, two_stream_encode)

TINY = dict(vocab_size=13, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=16, max_position_embeddings=8, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)
MASK_ID = 4                               # the tokenizer's [MASK] in these tests


def T(a):
    return mm.tensor(a)


# -- (a) masks for a hand-written permutation ----------------------------------------------------
# z = (2, 0, 3, 1): position 2 comes first, then 0, then 3, then 1. rank = (1, 3, 0, 2).
ORDER = [[2, 0, 3, 1]]
CONTENT = [[1, 0, 1, 0],         # position 0 (step 1) sees 2 and itself
           [1, 1, 1, 1],         # position 1 (step 3, last) sees everything
           [0, 0, 1, 0],         # position 2 (step 0, first) sees only itself
           [1, 0, 1, 1]]         # position 3 (step 2) sees 2, 0 and itself
QUERY = [[0, 0, 1, 0],           # the same without the diagonal: never itself
         [1, 0, 1, 1],
         [0, 0, 0, 0],
         [1, 0, 1, 0]]


def test_masks_of_a_hand_written_permutation():
    m = factorization_masks(T(np.array(ORDER)), num_predict=2)
    np.testing.assert_array_equal(m.rank.numpy(), [[1, 3, 0, 2]])
    np.testing.assert_array_equal(m.content_mask.numpy(), np.array([CONTENT], dtype=bool))
    np.testing.assert_array_equal(m.query_mask.numpy(), np.array([QUERY], dtype=bool))
    # the last K = 2 steps of z are positions 3 and 1
    np.testing.assert_array_equal(m.target_mask.numpy(), [[False, True, False, True]])
    np.testing.assert_array_equal(factorization_masks(T(np.array(ORDER)), 1).target_mask.numpy(),
                                  [[False, True, False, False]])


def test_masks_with_padding_anywhere_in_the_order():
    # the same real order as above with a padding position 4 put FIRST in z: it is never a
    # target, never attended to, and does not shift the targets
    order = T(np.array([[4, 2, 0, 3, 1]]))
    am = T(np.array([[1, 1, 1, 1, 0]]))
    m = factorization_masks(order, 2, attention_mask=am)
    c, q = m.content_mask.numpy()[0], m.query_mask.numpy()[0]
    np.testing.assert_array_equal(c[:4, :4], np.array(CONTENT, dtype=bool))
    np.testing.assert_array_equal(q[:4, :4], np.array(QUERY, dtype=bool))
    assert not c[:, 4].any() and not q[:, 4].any()
    np.testing.assert_array_equal(m.target_mask.numpy(), [[False, True, False, True, False]])


def test_sampled_orders_are_seeded_uniform_permutations_with_padding_last():
    am = np.ones((4, 6), dtype=np.int64)
    am[1, 4:] = 0
    a = sample_factorization_order(4, 6, seed=3, attention_mask=T(am)).numpy()
    np.testing.assert_array_equal(a, sample_factorization_order(4, 6, seed=3,
                                                                attention_mask=T(am)).numpy())
    assert not np.array_equal(a, sample_factorization_order(4, 6, seed=4,
                                                            attention_mask=T(am)).numpy())
    for row in a:
        np.testing.assert_array_equal(np.sort(row), np.arange(6))
    np.testing.assert_array_equal(a[1, 4:], [4, 5])                  # padding after real tokens
    # every order of 3 positions is equally likely
    z = sample_factorization_order(6000, 3, seed=0).numpy()
    codes = z[:, 0] * 9 + z[:, 1] * 3 + z[:, 2]
    _, counts = np.unique(codes, return_counts=True)
    assert len(counts) == 6
    np.testing.assert_allclose(counts / 6000, 1 / 6, atol=0.02)


# -- (b) two-stream attention: what a prediction may depend on ---------------------------------
def _model(cls=BertForMaskedLM):
    mm.manual_seed(1)
    m = cls(BertConfig(**TINY))
    with mm.no_grad():                           # non-trivial LayerNorms and biases
        r = np.random.default_rng(2)
        for p in m.parameters():
            p.copy_(mm.tensor(p.numpy() + 0.3 * r.standard_normal(p.shape)))
    return m.eval()


@pytest.mark.parametrize("query", ["token", "vector"])
def test_prediction_never_depends_on_its_own_token_or_later_ones(float64, query):
    m = _model()
    q = MASK_ID if query == "token" else mm.nn.Parameter(mm.randn(8))
    r = np.random.default_rng(0)
    ids = r.integers(5, 13, size=(3, 7))
    out = plm_forward(m, T(ids), num_predict=3, query=q, seed=11)
    logits = out.logits.numpy()
    rank, target = out.masks.rank.numpy(), out.masks.target_mask.numpy()
    assert target.sum() == 9
    checked = 0
    for b in range(3):
        for i in np.flatnonzero(target[b]):
            # change the target itself and every token at or after it in z
            later = rank[b] >= rank[b, i]
            ids2 = ids.copy()
            ids2[b, later] = 5 + (ids2[b, later] - 5 + 1 + r.integers(0, 7, later.sum())) % 8
            out2 = plm_forward(m, T(ids2), num_predict=3, query=q, seed=11)
            np.testing.assert_array_equal(out2.masks.order.numpy(), out.masks.order.numpy())
            np.testing.assert_allclose(out2.logits.numpy()[b, i], logits[b, i],
                                       rtol=1e-12, atol=1e-12)
            # ... while changing one token earlier in z does change the prediction
            earlier = np.flatnonzero(rank[b] < rank[b, i])
            ids3 = ids.copy()
            ids3[b, earlier[-1]] = 5 + (ids3[b, earlier[-1]] - 5 + 3) % 8
            out3 = plm_forward(m, T(ids3), num_predict=3, query=q, seed=11)
            assert np.abs(out3.logits.numpy()[b, i] - logits[b, i]).max() > 1e-6
            checked += 1
    assert checked == 9


def test_content_stream_is_bert_with_the_content_mask(float64):
    m = _model(BertForPreTraining)
    ids = np.random.default_rng(1).integers(5, 13, size=(2, 6))
    masks = factorization_masks(sample_factorization_order(2, 6, seed=5), 2)
    h, g = two_stream_encode(m.bert, T(ids), masks, MASK_ID)
    ref, _ = m.bert(T(ids), attention_mask_3d=masks.content_mask)
    np.testing.assert_allclose(h.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)
    # the content stream at i does see x_i (unlike the query stream)
    ids2 = ids.copy()
    first = masks.order.numpy()[:, 0]
    ids2[np.arange(2), first] = 5 + (ids2[np.arange(2), first] - 5 + 1) % 8
    h2, g2 = two_stream_encode(m.bert, T(ids2), masks, MASK_ID)
    for b in range(2):
        assert np.abs(h2.numpy()[b, first[b]] - h.numpy()[b, first[b]]).max() > 1e-6
        np.testing.assert_allclose(g2.numpy()[b, first[b]], g.numpy()[b, first[b]], rtol=1e-12,
                                   atol=1e-12)


def test_padding_is_never_a_target_and_never_seen(float64):
    m = _model()
    ids = np.random.default_rng(3).integers(5, 13, size=(2, 7))
    am = np.ones((2, 7), dtype=np.int64)
    am[0, 4:] = 0
    out = plm_forward(m, T(ids), num_predict=2, query=MASK_ID, seed=2, attention_mask=T(am))
    labels = out.labels.numpy()
    assert (labels[am == 0] == -100).all() and ((labels != -100).sum(axis=1) == 2).all()
    ids2 = ids.copy()
    ids2[0, 4:] = 7
    out2 = plm_forward(m, T(ids2), num_predict=2, query=MASK_ID, seed=2, attention_mask=T(am))
    real = am == 1
    np.testing.assert_allclose(out2.logits.numpy()[real], out.logits.numpy()[real], rtol=1e-12,
                               atol=1e-12)
    assert out2.loss.item() == pytest.approx(out.loss.item(), rel=1e-12)


def test_gradcheck_plm_loss(float64):
    m = _model()
    qv = mm.nn.Parameter(mm.randn(8) * 0.5)
    ids = T(np.random.default_rng(4).integers(5, 13, size=(2, 5)))
    layer = m.bert.encoder.layer[1]
    params = [qv, layer.attention.self.query.weight, layer.attention.self.key.weight,
              layer.output.LayerNorm.weight, m.bert.embeddings.word_embeddings.weight,
              m.cls.predictions.transform.dense.weight]
    assert mm.gradcheck(lambda *ps: plm_loss(m, ids, num_predict=2, query=qv, seed=7), params)


@pytest.mark.parametrize("kw,exc,fragment", [
    (dict(num_predict=8), ValueError, "only 6 real tokens"),
    (dict(num_predict=0), ValueError, "positive int"),
    (dict(query="[MASK]"), TypeError, "token id"),
    (dict(query=np.zeros(8)), TypeError, "token id"),
    (dict(order=np.array([[0, 0, 1, 2, 3, 4]] * 2)), ValueError, "permutation"),
], ids=["too-many-targets", "no-targets", "query-str", "query-array", "not-a-permutation"])
def test_bad_arguments_are_clear_errors(kw, exc, fragment):
    m = BertForMaskedLM(BertConfig(**TINY))
    args = dict(num_predict=2, query=MASK_ID, seed=0)
    args.update(kw)
    with pytest.raises(exc) as info:
        plm_forward(m, T(np.full((2, 6), 5)), **args)
    assert fragment in str(info.value)
    with pytest.raises(TypeError, match="BertForMaskedLM"):
        plm_loss(m.bert, T(np.full((2, 6), 5)), num_predict=2, query=MASK_ID)


# -- (c) training --------------------------------------------------------------------------------
def test_tiny_model_learns_with_plm_loss():
    """Windows of a repetitive text: every token is predictable from the tokens before it in
    any order (its neighbours and position give the phase), so the loss must fall far."""
    words = "the quick brown fox jumps over the lazy dog and runs home".split()
    vocab = {w: i for i, w in enumerate(sorted(set(words)))}
    mask_id = len(vocab)                                             # the [MASK] token
    stream = np.array([vocab[w] for w in words] * 12)
    length, n = 8, 48
    starts = np.random.default_rng(0).integers(0, len(stream) - length, size=n)
    ids = T(np.stack([stream[s:s + length] for s in starts]))
    mm.manual_seed(0)
    m = BertForMaskedLM(BertConfig(vocab_size=mask_id + 1, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=length, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, pad_token_id=None,
                                   hidden_act="gelu_new"))    # tanh GELU: cheaper on CPU
    qv = mm.nn.Parameter(mm.randn(32) * 0.02)                        # a learnable query vector

    def eval_loss():
        with mm.no_grad():
            return plm_loss(m, ids, num_predict=3, query=qv, seed=12345).item()

    before = eval_loss()
    opt = mm.optim.Adam(list(m.parameters()) + [qv], lr=3e-3)
    for step in range(150):
        loss = plm_loss(m, ids, num_predict=3, query=qv, seed=step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert before > 2.0
    assert after < 0.3 * before, (before, after)
