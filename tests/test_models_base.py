"""The shared model base: config strictness, atomic save/load, generation and sampling."""
import dataclasses
import json

import numpy as np
import pytest

import minillm as mm
from minillm import nn
from minillm.models import Config, PreTrainedModel


@dataclasses.dataclass
class BigramConfig(Config):
    vocab_size: int
    scale: float = 1.0


class Bigram(PreTrainedModel):
    """logits[t] = table[ids[t]]: the smallest causal LM, with a trivial cache."""

    config_class = BigramConfig
    model_type = "test-bigram"

    def __init__(self, config):
        super().__init__(config)
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(self, ids):
        return self.table(ids) * self.config.scale

    def init_cache(self, batch_size):
        return {"steps": 0}

    def forward_step(self, ids, cache):
        cache["steps"] += ids.shape[1]
        return self(ids), cache


def _model(v=7, seed=0):
    mm.manual_seed(seed)
    return Bigram(BigramConfig(vocab_size=v))


def test_greedy_is_argmax_and_cache_matches_recompute():
    m = _model()
    ids = mm.tensor(np.array([[1, 2], [3, 4]]))
    out = m.generate(ids, 5, do_sample=False).numpy()
    table = m.table.weight.numpy()
    for row in out:
        for a, b in zip(row[1:], row[2:]):
            assert b == table[a].argmax()
    np.testing.assert_array_equal(out, m.generate(ids, 5, do_sample=False, use_cache=False).numpy())
    np.testing.assert_array_equal(
        m.generate(ids, 5, seed=3).numpy(), m.generate(ids, 5, seed=3, use_cache=False).numpy())


def test_seeded_sampling_is_reproducible_and_filters_work():
    m = _model()
    ids = mm.tensor(np.zeros((4, 1), dtype=np.int64))
    a = m.generate(ids, 6, seed=11).numpy()
    np.testing.assert_array_equal(a, m.generate(ids, 6, seed=11).numpy())
    greedy = m.generate(ids, 6, do_sample=False).numpy()
    np.testing.assert_array_equal(m.generate(ids, 6, top_k=1, seed=1).numpy(), greedy)
    np.testing.assert_array_equal(m.generate(ids, 6, top_p=1e-9, seed=1).numpy(), greedy)


@pytest.mark.parametrize("top_k,top_p", [(None, None), (3, None), (None, 0.6)])
def test_sampling_frequencies_follow_the_filtered_softmax(top_k, top_p):
    m = _model(v=5)
    n = 20000
    ids = mm.tensor(np.full((n, 1), 2, dtype=np.int64))
    got = m.generate(ids, 1, seed=5, top_k=top_k, top_p=top_p, temperature=0.8).numpy()[:, 1]
    z = m.table.weight.numpy()[2].astype(np.float64) / 0.8
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p)
    keep = np.ones(5, bool)
    if top_k:
        keep[order[top_k:]] = False
    if top_p:
        cum = np.cumsum(p[order]) - p[order]
        keep[order[cum >= top_p]] = False
    q = np.where(keep, p, 0)
    q /= q.sum()
    freq = np.bincount(got, minlength=5) / n
    np.testing.assert_allclose(freq, q, atol=0.015)
    assert (freq[~keep] == 0).all()


def test_eos_stops_sequences():
    m = _model()
    table = m.table.weight.numpy()
    start = 1
    eos = int(table[start].argmax())
    out = m.generate(mm.tensor(np.array([[start]])), 10, do_sample=False, eos_id=eos).numpy()
    assert out.shape == (1, 2) and out[0, 1] == eos


def test_save_load_round_trip_is_bit_identical(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    assert cfg == {"model_type": "test-bigram", "vocab_size": 7, "scale": 1.0}
    m2 = Bigram.from_pretrained(tmp_path / "m")
    ids = mm.tensor(np.array([[1, 2, 3]]))
    np.testing.assert_array_equal(m(ids).numpy(), m2(ids).numpy())
    m.save_pretrained(tmp_path / "m")                     # overwrite in place works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_failed_save_keeps_the_previous_model(tmp_path, monkeypatch):
    m = _model()
    m.save_pretrained(tmp_path / "m")
    before = (tmp_path / "m" / "model.npz").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        _model(seed=1).save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]      # no temp dirs left


@pytest.mark.parametrize("damage,exc,fragment", [
    (lambda d: (d / "model.npz").write_bytes(b"not a zip"), ValueError, "not a readable weights"),
    (lambda d: (d / "config.json").unlink(), FileNotFoundError, "config.json is missing"),
    (lambda d: (d / "config.json").write_text('{"model_type": "gpt", "vocab_size": 7}',
                                              encoding="utf-8"), ValueError, "holds a 'gpt' model"),
    (lambda d: (d / "config.json").write_text(
        '{"model_type": "test-bigram", "vocab_size": 7, "n_head": 2}', encoding="utf-8"),
     ValueError, "unknown config keys ['n_head']"),
    (lambda d: (d / "config.json").write_text('{"model_type": "test-bigram", "vocab_size": 8}',
                                              encoding="utf-8"), Exception, "table.weight"),
], ids=["corrupt-weights", "no-config", "wrong-type", "unknown-key", "shape-mismatch"])
def test_damaged_model_directories_are_clear_errors(tmp_path, damage, exc, fragment):
    _model().save_pretrained(tmp_path / "m")
    damage(tmp_path / "m")
    with pytest.raises(exc) as info:
        Bigram.from_pretrained(tmp_path / "m")
    assert fragment in str(info.value)


def test_from_pretrained_keeps_float64_weights(tmp_path):
    mm.set_default_dtype(np.float64)
    m = _model()
    mm.set_default_dtype(np.float32)
    m.save_pretrained(tmp_path / "m")
    assert Bigram.from_pretrained(tmp_path / "m").table.weight.dtype == np.float64


# -- resize_token_embeddings: new tokens for continued pretraining -------------------------------
def _gpt():
    from minillm.models.gpt import GPT, GPTConfig
    return GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))


def _bert_mlm():
    from minillm.models.bert import BertConfig, BertForMaskedLM
    return BertForMaskedLM(BertConfig(vocab_size=11, hidden_size=8, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=16,
                                      max_position_embeddings=8))


@pytest.mark.parametrize("make", [_gpt, _bert_mlm], ids=["gpt", "bert-mlm"])
def test_resize_token_embeddings_keeps_what_was_learned(make, tmp_path):
    mm.manual_seed(0)
    model = make().eval()
    ids = mm.tensor(np.array([[1, 4, 2, 10, 3]], dtype=np.int64))
    before = model(ids).numpy()
    table = model.get_input_embeddings().numpy().copy()
    assert model.resize_token_embeddings(15) is model
    after = model(ids).numpy()
    assert after.shape == before.shape[:-1] + (15,) and model.config.vocab_size == 15
    np.testing.assert_allclose(after[..., :11], before, rtol=1e-5, atol=1e-6)  # old tokens
    grown = model.get_input_embeddings().numpy()
    np.testing.assert_array_equal(grown[:11], table)
    np.testing.assert_allclose(grown[11:], np.tile(table.mean(axis=0), (4, 1)), rtol=1e-6)
    # the new rows are learned weights: they get gradients and survive a save/load
    model.train()
    loss = model(mm.tensor(np.array([[12, 13, 14]], dtype=np.int64))).sum()
    loss.backward()
    assert np.abs(model.get_input_embeddings().grad.numpy()[12:]).sum() > 0
    model.save_pretrained(tmp_path / "m")
    again = type(model).from_pretrained(tmp_path / "m").eval()
    np.testing.assert_array_equal(again(ids).numpy(), model.eval()(ids).numpy())


@pytest.mark.parametrize("size", [10, 11.0, True])
def test_resize_token_embeddings_refuses_to_shrink_or_odd_sizes(size):
    with pytest.raises(ValueError, match="new_num_tokens must be an int >= the current"):
        _gpt().resize_token_embeddings(size)


def _with_dropout(make, p=0.5):
    """``make()`` with every dropout of its config at ``p``."""
    model = make()
    fields = {f: p for f, v in model.config.to_dict().items() if "dropout" in f}
    return type(model)(dataclasses.replace(model.config, **fields)), sorted(fields)


@pytest.mark.parametrize("make", [_gpt, _bert_mlm], ids=["gpt", "bert-mlm"])
def test_disable_dropout_makes_training_mode_deterministic(make):
    mm.manual_seed(0)
    model, fields = _with_dropout(make)
    assert fields, "the config names no dropout"
    ids = mm.tensor(np.array([[1, 4, 2, 10, 3]], dtype=np.int64))
    model.train()
    assert not np.array_equal(model(ids).numpy(), model(ids).numpy())   # dropout is on
    expected = model.eval()(ids).numpy()
    assert model.train().disable_dropout() is model and model.training
    np.testing.assert_array_equal(model(ids).numpy(), model(ids).numpy())
    np.testing.assert_allclose(model(ids).numpy(), expected, rtol=1e-6, atol=1e-6)
    assert all(model.config.to_dict()[f] == 0.0 for f in fields)
