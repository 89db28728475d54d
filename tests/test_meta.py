"""minillm.meta: episode sampling, the prototypical loss (closed form and gradcheck), the
few-shot baselines and Reptile on hand-made toys, and the CLINC150 meta-split."""
import os

import numpy as np
import pytest

import minillm as mm
from minillm import meta
from minillm.meta import reptile
from minillm.nn import Module, Parameter

from test_cli import need_data  # noqa: E402  (skip when a dataset is missing)

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


def _pool(n_classes=6, per_class=8):
    """``{"c0": ["c0-0", "c0-1", ...], ...}``: every text names its class and is unique."""
    return {f"c{c}": [f"c{c}-{i}" for i in range(per_class)] for c in range(n_classes)}


# -- meta-splits ---------------------------------------------------------------------------
def test_split_classes_is_disjoint_sized_and_seeded():
    classes = [f"intent{i:03d}" for i in range(20)]
    sizes = {"train": 10, "validation": 5, "test": 5}
    s = meta.split_classes(classes, sizes, seed=3)
    assert {k: len(v) for k, v in s.items()} == sizes
    assert set(s["train"]) | set(s["validation"]) | set(s["test"]) == set(classes)
    assert not set(s["train"]) & set(s["test"]) and not set(s["validation"]) & set(s["test"])
    assert not set(s["train"]) & set(s["validation"])
    assert s == meta.split_classes(list(reversed(classes)), sizes, seed=3)   # order-free
    assert s != meta.split_classes(classes, sizes, seed=4)


@pytest.mark.parametrize("sizes", [{"train": 15, "test": 6}, {"train": 5, "test": 0}])
def test_split_classes_refuses_impossible_sizes(sizes):
    with pytest.raises(ValueError, match="split_classes: sizes"):
        meta.split_classes([str(i) for i in range(20)], sizes)


def test_clinc_meta_split_has_no_intent_leak():
    need_data("clinc150")
    splits = meta.clinc_meta_splits()
    names = {k: set(v) for k, v in splits.items()}
    assert {k: len(v) for k, v in names.items()} == meta.META_SPLIT_SIZES
    assert not names["train"] & names["validation"]
    assert not names["train"] & names["test"] and not names["validation"] & names["test"]
    assert len(names["train"] | names["validation"] | names["test"]) == 150
    assert "oos" not in names["train"] | names["validation"] | names["test"]
    assert {len(t) for v in splits.values() for t in v.values()} == {150}
    again = meta.clinc_meta_splits()
    assert {k: sorted(v) for k, v in again.items()} == {k: sorted(v) for k, v in names.items()}


def test_the_dataset_card_lists_the_meta_split():
    need_data("clinc150")
    from pathlib import Path
    card = (Path(__file__).resolve().parents[1] / "datasets" / "clinc150.md").read_text(
        encoding="utf-8")
    splits = meta.clinc_meta_splits()
    for split in ("validation", "test"):
        line = next(x for x in card.splitlines() if x.startswith(f"- **meta-{split} (30):**"))
        assert line.split(":**")[1].strip() == ", ".join(sorted(splits[split])), split


# -- episodes ------------------------------------------------------------------------------
@pytest.mark.parametrize("n_way, k_shot, q_query", [(2, 1, 1), (5, 1, 3), (6, 3, 5), (3, 7, 1)])
def test_episode_shape_classes_and_disjoint_sets(n_way, k_shot, q_query):
    pool = _pool()
    ep = meta.EpisodeSampler(pool, n_way, k_shot, q_query, seed=0).sample()
    assert ep.n_way == n_way and len(set(ep.classes)) == n_way
    assert set(ep.classes) <= set(pool)
    assert len(ep.support) == n_way * k_shot and len(ep.query) == n_way * q_query
    assert not set(ep.support) & set(ep.query)                       # never the same example
    assert len(set(ep.support)) == len(ep.support) and len(set(ep.query)) == len(ep.query)
    for texts, labels in ((ep.support, ep.support_labels), (ep.query, ep.query_labels)):
        assert [t.split("-")[0] for t in texts] == [ep.classes[y] for y in labels]
    assert np.bincount(ep.support_labels).tolist() == [k_shot] * n_way
    assert np.bincount(ep.query_labels).tolist() == [q_query] * n_way


def test_episodes_are_seeded():
    pool = _pool(10, 20)
    a = meta.EpisodeSampler(pool, 5, 2, 3, seed=7).episodes(4)
    b = meta.EpisodeSampler(pool, 5, 2, 3, seed=7).episodes(4)
    c = meta.EpisodeSampler(pool, 5, 2, 3, seed=8).episodes(4)
    assert a == b and a != c
    assert len({ep.classes for ep in a}) > 1          # successive episodes differ


def test_an_episode_checks_its_sizes():
    with pytest.raises(ValueError, match="Episode: 3 query texts, expected 2 x 2"):
        meta.Episode(("A", "B"), ("a", "b"), ("a1", "a2", "b1"), k_shot=1, q_query=2)


@pytest.mark.parametrize("n_way, k_shot, q_query, message", [
    (7, 1, 1, "n_way=7 is more than the 6 classes"),
    (2, 5, 4, r"k_shot \+ q_query = 9 is more than the 8 examples of class 'c0'"),
    (2, 0, 1, "must be at least 1"),
    (0, 1, 1, "must be at least 1"),
])
def test_bad_episode_arguments_are_one_line_errors(n_way, k_shot, q_query, message):
    with pytest.raises(ValueError, match=message):
        meta.EpisodeSampler(_pool(), n_way, k_shot, q_query)


# -- the prototypical loss -----------------------------------------------------------------
def _closed_form(support, query, labels):
    """The loss, logits and gradients of a prototypical episode, by hand in NumPy (loops)."""
    n, k, _ = support.shape
    m = len(query)
    c = np.stack([support[j].sum(axis=0) / k for j in range(n)])
    z = np.array([[-np.sum((query[i] - c[j]) ** 2) for j in range(n)] for i in range(m)])
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.mean([np.log(p[i, labels[i]]) for i in range(m)])
    g = p.copy()
    g[np.arange(m), labels] -= 1
    g /= m                                                  # dJ/dz
    grad_q = np.stack([sum(g[i, j] * -2 * (query[i] - c[j]) for j in range(n))
                       for i in range(m)])
    grad_c = np.stack([sum(g[i, j] * 2 * (query[i] - c[j]) for i in range(m))
                       for j in range(n)])
    grad_s = np.repeat(grad_c[:, None, :] / k, k, axis=1)
    return loss, z, grad_q, grad_s


def test_prototypical_loss_matches_the_closed_form(float64):
    rng = np.random.default_rng(0)
    support_np, query_np = rng.standard_normal((3, 2, 4)), rng.standard_normal((5, 4))
    labels = np.array([0, 2, 1, 1, 0])
    support = mm.tensor(support_np, requires_grad=True)
    query = mm.tensor(query_np, requires_grad=True)
    loss = meta.prototypical_loss(support, query, mm.tensor(labels))
    loss.backward()
    want_loss, want_z, grad_q, grad_s = _closed_form(support_np, query_np, labels)
    assert loss.item() == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(meta.prototypical_logits(support, query).numpy(), want_z,
                               rtol=1e-12)
    np.testing.assert_allclose(query.grad.numpy(), grad_q, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(support.grad.numpy(), grad_s, rtol=1e-10, atol=1e-12)


def test_prototypical_loss_on_a_tiny_case_by_hand():
    # prototypes (0, 0) and (2, 0); the query (1.5, 0) is 2.25 from one and 0.25 from the other
    support = mm.tensor([[[0.0, 1.0], [0.0, -1.0]], [[2.0, 0.0], [2.0, 0.0]]])
    query = mm.tensor([[1.5, 0.0]])
    logits = meta.prototypical_logits(support, query).numpy()
    np.testing.assert_allclose(logits, [[-2.25, -0.25]], rtol=1e-6)
    want = -np.log(np.exp(-0.25) / (np.exp(-2.25) + np.exp(-0.25)))
    assert meta.prototypical_loss(support, query, mm.tensor([1])).item() == \
        pytest.approx(want, rel=1e-6)


def test_prototypical_loss_gradcheck(float64):
    rng = np.random.default_rng(1)
    support = mm.tensor(rng.standard_normal((3, 2, 5)), requires_grad=True)
    query = mm.tensor(rng.standard_normal((4, 5)), requires_grad=True)
    labels = mm.tensor(np.array([2, 0, 1, 2]))
    assert mm.gradcheck(lambda s, q: meta.prototypical_loss(s, q, labels), [support, query])


# -- toy encoder and baselines ----------------------------------------------------------------
class ToyEncoder(Module):
    """Each known text has its own trainable vector (rows of one table)."""

    def __init__(self, vectors):
        super().__init__()
        self.index = {t: i for i, t in enumerate(vectors)}
        self.table = Parameter(mm.tensor(np.array(list(vectors.values()), dtype=np.float32)))
        self.hidden_size = self.table.shape[1]

    def forward(self, texts):
        return self.table[mm.tensor(np.array([self.index[t] for t in texts]))]


def _toy_episode():
    support = ("a1", "a2", "b1", "b2")
    query = ("a3", "a4", "b3", "b4")
    return meta.Episode(("A", "B"), support, query, k_shot=2, q_query=2)


def _toy_encoder():
    """Class A near (1, 0), class B near (0, 1); a4 sits nearer B's centroid, b4 nearer A's."""
    v = {"a1": [1.0, 0.2], "a2": [1.0, -0.2], "a3": [0.9, 0.0], "a4": [0.3, 0.9],
         "b1": [0.0, 1.0], "b2": [0.2, 1.0], "b3": [0.1, 0.8], "b4": [0.8, 0.3]}
    return ToyEncoder(v)


@pytest.mark.parametrize("support, query, want", [
    ([[[0, 0], [2, 0]], [[10, 10], [10, 12]]], [[1, 0], [9, 11], [6, 6]], [0, 1, 1]),
    ([[[0.0]], [[1.0]], [[3.0]]], [[0.4], [0.6], [2.1], [-5.0]], [0, 1, 2, 0]),
    ([[[0.0]], [[2.0]]], [[1.0]], [0]),                         # a tie goes to the lower index
])
def test_nearest_centroid_table(support, query, want):
    got = meta.nearest_centroid(np.array(support, float), np.array(query, float))
    assert got.tolist() == want


def test_bag_of_words_centroid_uses_only_the_meta_train_vocabulary():
    bow = meta.BagOfWordsCentroid().fit(["play some jazz music", "what is the weather today",
                                         "will it rain"])
    ep = meta.Episode(("music", "weather"),
                      ("play jazz", "play music", "weather today", "will it rain"),
                      ("some jazz please", "is it the weather"), 2, 1)
    assert bow.predict(ep).tolist() == [0, 1]
    unknown = bow.vectors(["xyzzy plugh", "PLAY Jazz"])
    assert unknown[0].sum() == 0                           # no meta-train word: all zeros
    assert np.linalg.norm(unknown[1]) == pytest.approx(1.0)  # lowercased, unit length


def test_linear_head_learns_the_support_set_and_leaves_the_encoder_alone():
    enc = _toy_encoder()
    before = enc.table.numpy().copy()
    ep = _toy_episode()
    support_ep = meta.Episode(ep.classes, ep.support, ep.support, 2, 2)
    assert meta.linear_head_predict(enc, support_ep, steps=50, lr=0.1).tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(enc.table.numpy(), before)


def test_protonet_predict_on_the_toy():
    ep = _toy_episode()
    # prototypes (1, 0) and (0.1, 1): a4 (0.3, 0.9) goes to B, b4 (0.8, 0.3) to A
    assert meta.protonet_predict(_toy_encoder(), ep).tolist() == [0, 1, 1, 0]


def test_protonet_training_separates_the_toy_classes():
    pool = {c: [f"{c}{i}" for i in range(6)] for c in "ABCD"}
    rng = np.random.default_rng(0)
    enc = ToyEncoder({t: rng.standard_normal(4) for texts in pool.values() for t in texts})
    sampler = meta.EpisodeSampler(pool, 4, 2, 3, seed=0)
    val = meta.EpisodeSampler(pool, 4, 2, 3, seed=1).episodes(5)
    hist = meta.train_protonet(enc, sampler, 60, lr=0.05, val_episodes=val, eval_every=20,
                               progress=False)
    assert hist["val_step"] == [20, 40, 60] and hist["best_step"] in (20, 40, 60)
    assert hist["val_accuracy"][-1] == 1.0 > hist["val_accuracy"][0] - 1.0
    assert np.mean(hist["loss"][-10:]) < 0.5 * np.mean(hist["loss"][:10])


# -- Reptile -------------------------------------------------------------------------------
@pytest.mark.parametrize("epsilon, want", [(0.0, 1.0), (0.5, 2.0), (1.0, 3.0)])
def test_reptile_outer_step_interpolates(epsilon, want):
    enc = ToyEncoder({"x": [1.0, 1.0]})
    theta = reptile._snapshot(list(enc.parameters()))
    with mm.no_grad():
        enc.table.copy_(mm.tensor(np.full((1, 2), 3.0, dtype=np.float32)))
    reptile._restore(list(enc.parameters()), theta, epsilon)
    np.testing.assert_allclose(enc.table.numpy(), np.full((1, 2), want))


def test_reptile_predict_adapts_a_copy():
    enc = _toy_encoder()
    before = enc.table.numpy().copy()
    ep = _toy_episode()
    pred = meta.reptile_predict(enc, ep, steps=30, lr=0.05, head_lr=0.1)
    assert pred[0] == 0 and pred[2] == 1
    np.testing.assert_array_equal(enc.table.numpy(), before)


def test_train_reptile_moves_the_meta_weights_by_epsilon():
    pool = {c: [f"{c}{i}" for i in range(4)] for c in "AB"}
    rng = np.random.default_rng(0)
    enc = ToyEncoder({t: rng.standard_normal(3) for texts in pool.values() for t in texts})
    start = enc.table.numpy().copy()
    hist = meta.train_reptile(enc, meta.EpisodeSampler(pool, 2, 1, 1, seed=0), 3,
                              inner_steps=2, epsilon=0.0, progress=False)
    np.testing.assert_array_equal(enc.table.numpy(), start)     # epsilon 0: theta stays
    assert len(hist["loss"]) == 3 and hist["val_step"] == []
    meta.train_reptile(enc, meta.EpisodeSampler(pool, 2, 1, 1, seed=0), 3, inner_steps=2,
                       epsilon=1.0, progress=False)
    assert not np.allclose(enc.table.numpy(), start)


# -- the text encoder and the interval ----------------------------------------------------------
def test_text_encoder_mean_pools_real_tokens_only(tmp_path):
    texts = ["set an alarm", "what is the weather like in paris today", "play music"]
    enc = meta.TextEncoder.from_texts(texts * 3, vocab_size=300, hidden_size=16, num_layers=1,
                                      num_heads=2)
    enc.eval()
    with mm.no_grad():
        batch = enc(texts).numpy()
        alone = enc([texts[0]]).numpy()
    assert batch.shape == (3, 16)
    np.testing.assert_allclose(batch[0], alone[0], rtol=1e-4, atol=1e-5)   # padding ignored
    body = mm.models.BERT(enc.body.config)            # BERT directories carry a pooler
    body.load_state_dict(enc.body.state_dict(), strict=False)
    body.save_pretrained(tmp_path)
    enc.tokenizer.save(tmp_path / "tokenizer.json")
    again = meta.TextEncoder.from_pretrained(tmp_path)
    again.eval()
    with mm.no_grad():
        np.testing.assert_allclose(again(texts).numpy(), batch, rtol=1e-5, atol=1e-6)


def test_text_encoder_from_a_gpt_body(tmp_path):
    from minillm.data import CharTokenizer
    tok = CharTokenizer.train(["abc de"], special_tokens={"pad": "[PAD]", "unk": "[UNK]"})
    gpt = mm.models.GPT(mm.models.GPTConfig(vocab_size=tok.vocab_size, block_size=8,
                                            n_layer=1, n_head=2, n_embd=8, dropout=0.0))
    gpt.save_pretrained(tmp_path)
    tok.save(tmp_path / "tokenizer.json")
    enc = meta.TextEncoder.from_pretrained(tmp_path)
    assert enc.max_length == 8 and enc.hidden_size == 8
    with mm.no_grad():
        out = enc(["abc", "de ed abcde"]).numpy()                # cut at 8 tokens
        alone = enc(["abc"]).numpy()
    np.testing.assert_allclose(out[0], alone[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("accs, mean, half", [
    ([1.0, 0.0], 0.5, 1.96 * 0.5 / np.sqrt(2)),
    ([0.6, 0.6, 0.6], 0.6, 0.0),
    ([0.2, 0.4, 0.6, 0.8], 0.5, 1.96 * np.sqrt(0.05) / 2),
])
def test_confidence_interval_table(accs, mean, half):
    got = meta.confidence_interval(accs)
    assert got == (pytest.approx(mean), pytest.approx(half))


def test_score_is_per_episode_accuracy():
    ep = _toy_episode()
    eps = [ep, meta.Episode(ep.classes, ep.support, ("a3", "b3"), 2, 1)]
    r = meta.score(lambda e: e.query_labels if len(e.query) == 2 else np.zeros(4, int), eps)
    assert r["accuracies"] == [0.5, 1.0]
    assert r["episodes"] == 2 and r["accuracy"] == 0.75
    with pytest.raises(ValueError, match="no accuracies"):
        meta.confidence_interval([])
