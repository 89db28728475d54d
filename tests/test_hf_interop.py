"""minillm.models.hf against transformers: tiny random GPT-2 / BERT checkpoints load into
minillm with the same logits (and greedy tokens), minillm models export to checkpoints that
transformers loads, unsupported configs are clear errors, and HF tokenizers map to minillm's."""
import json

import numpy as np
import pytest

import minillm as mm
from minillm.models import BERT, GPT, BertForMaskedLM, GPTConfig, BertConfig
from minillm.models.hf import is_hf_checkpoint, load_hf, load_hf_tokenizer, save_hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

GPT2_TINY = dict(vocab_size=61, n_positions=24, n_embd=16, n_layer=2, n_head=2,
                 bos_token_id=None, eos_token_id=None)
BERT_TINY = dict(vocab_size=53, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=24, type_vocab_size=2)


def _randomize(model, seed):
    """Non-trivial weights everywhere (HF inits LayerNorm to 1/0 and biases to 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def _ids(shape, vocab, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=shape).astype(np.int64)


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2")
    model = _randomize(transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2_TINY)), 1)
    model.save_pretrained(d, safe_serialization=True)
    return model, d


@pytest.fixture(scope="module")
def hf_bert_mlm(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert_mlm")
    model = _randomize(transformers.BertForMaskedLM(transformers.BertConfig(**BERT_TINY)), 2)
    model.save_pretrained(d, safe_serialization=True)
    return model, d


def test_gpt2_logits_and_greedy_tokens(hf_gpt2):
    hf, d = hf_gpt2
    assert is_hf_checkpoint(d)
    model = GPT.from_pretrained(d)
    assert isinstance(model, GPT) and model.config.block_size == 24
    ids = _ids((2, 9), GPT2_TINY["vocab_size"])
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).logits.numpy()
    with mm.no_grad():
        ours = model(mm.tensor(ids)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    with torch.no_grad():
        ref_gen = hf.generate(torch.from_numpy(ids), attention_mask=torch.ones(ids.shape),
                              max_new_tokens=10, do_sample=False, pad_token_id=0).numpy()
    ours_gen = model.generate(mm.tensor(ids), max_new_tokens=10, do_sample=False).numpy()
    np.testing.assert_array_equal(ours_gen, ref_gen)


def test_bert_mlm_logits_with_padding(hf_bert_mlm):
    hf, d = hf_bert_mlm
    model = load_hf(d)
    assert isinstance(model, BertForMaskedLM)
    ids = _ids((2, 7), BERT_TINY["vocab_size"], seed=3)
    types = np.array([[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0]], dtype=np.int64)
    mask = np.array([[1] * 7, [1] * 5 + [0, 0]], dtype=np.int64)
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types),
                 attention_mask=torch.from_numpy(mask)).logits.numpy()
    with mm.no_grad():
        ours = model(mm.tensor(ids), mm.tensor(types), mm.tensor(mask)).numpy()
    np.testing.assert_allclose(ours[mask == 1], ref[mask == 1], atol=1e-4, rtol=0)


def test_bert_model_and_body_from_mlm_checkpoint(tmp_path, hf_bert_mlm):
    hf = _randomize(transformers.BertModel(transformers.BertConfig(**BERT_TINY)), 4)
    hf.save_pretrained(tmp_path / "m", safe_serialization=True)
    model = BERT.from_pretrained(tmp_path / "m")
    ids = _ids((2, 6), BERT_TINY["vocab_size"], seed=5)
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(ids))
    with mm.no_grad():
        seq, pooled = model(mm.tensor(ids))
    np.testing.assert_allclose(seq.numpy(), out.last_hidden_state.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(pooled.numpy(), out.pooler_output.numpy(), atol=1e-4, rtol=0)
    # the encoder alone from a checkpoint with an MLM head: head ignored with a warning
    mlm, d = hf_bert_mlm
    with pytest.warns(UserWarning, match="cls.predictions"):
        body = BERT.from_pretrained(d)
    with torch.no_grad():
        ref = mlm.bert(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
    with mm.no_grad():
        np.testing.assert_allclose(body(mm.tensor(ids))[0].numpy(), ref, atol=1e-4, rtol=0)


def test_export_gpt_loads_in_transformers(tmp_path):
    mm.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=16))
    save_hf(model, tmp_path / "g")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "g").eval()
    ids = _ids((2, 8), 37, seed=6)
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).logits.numpy()
    with mm.no_grad():
        np.testing.assert_allclose(model(mm.tensor(ids)).numpy(), ref, atol=1e-4, rtol=0)
    back = GPT.from_pretrained(tmp_path / "g")         # and back into minillm
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k].numpy(), v.numpy())


def test_export_bert_mlm_loads_in_transformers(tmp_path):
    mm.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**BERT_TINY))
    model.eval()
    save_hf(model, tmp_path / "b")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "b").eval()
    assert type(hf).__name__ == "BertForMaskedLM"
    ids = _ids((2, 5), BERT_TINY["vocab_size"], seed=7)
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids)).logits.numpy()
    with mm.no_grad():
        np.testing.assert_allclose(model(mm.tensor(ids)).numpy(), ref, atol=1e-4, rtol=0)


def _edit_config(src, dst, **changes):
    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (dst / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    return dst


@pytest.mark.parametrize("which, changes, match", [
    ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ("gpt2", {"activation_function": "relu"}, "activation_function"),
    ("gpt2", {"n_inner": 7}, "n_inner"),
    ("gpt2", {"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
    ("gpt2", {"attn_pdrop": 0.3}, "one dropout rate"),
    ("gpt2", {"n_embd": 32}, "do not fit"),
    ("bert", {"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ("bert", {"is_decoder": True}, "is_decoder"),
    ("bert", {"architectures": ["BertForSequenceClassification"]}, "not supported"),
    ("bert", {"model_type": "roberta"}, "not supported"),
])
def test_unsupported_configs_are_clear_errors(tmp_path, hf_gpt2, hf_bert_mlm, which, changes,
                                              match):
    src = (hf_gpt2 if which == "gpt2" else hf_bert_mlm)[1]
    d = _edit_config(src, tmp_path / "x", **changes)
    with pytest.raises(ValueError, match=match):
        load_hf(d)


def test_minillm_directories_are_not_hf(tmp_path):
    mm.manual_seed(0)
    model = BERT(BertConfig(**BERT_TINY))
    model.save_pretrained(tmp_path / "own")            # config says "bert" too, weights in npz
    assert not is_hf_checkpoint(tmp_path / "own")
    assert isinstance(BERT.from_pretrained(tmp_path / "own"), BERT)


# -- tokenizers ----------------------------------------------------------------------------------
TEXTS = ["the quick brown fox jumps over the lazy dog", "Hello, world! hello again",
         "tokenizers split words into pieces", "the fox and the dog are friends"] * 3


def test_gpt2_byte_level_bpe_tokenizer(tmp_path):
    tk = pytest.importorskip("tokenizers")
    bpe = tk.ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS, vocab_size=300, min_frequency=2,
                            special_tokens=["<|endoftext|>"])
    (tmp_path / "j").mkdir()
    bpe.save(str(tmp_path / "j" / "tokenizer.json"))
    (tmp_path / "v").mkdir()
    bpe.save_model(str(tmp_path / "v"))                # vocab.json + merges.txt
    text = "the lazy fox, Hello friends! 世界"
    expected = bpe.encode(text).ids
    for sub in ("j", "v"):
        ours = load_hf_tokenizer(tmp_path / sub)
        assert type(ours).__name__ == "BPETokenizer"
        assert ours.encode(text) == expected
        assert ours.decode(expected) == text


def test_bert_wordpiece_tokenizer(tmp_path):
    tk = pytest.importorskip("tokenizers")
    wp = tk.BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(TEXTS, vocab_size=120, min_frequency=1)
    (tmp_path / "j").mkdir()
    wp.save(str(tmp_path / "j" / "tokenizer.json"))
    (tmp_path / "v").mkdir()
    wp.save_model(str(tmp_path / "v"))                 # vocab.txt
    text = "The Quick fox jumps, hello Pieces!"
    expected = wp.encode(text, add_special_tokens=False).ids
    for sub in ("j", "v"):
        ours = load_hf_tokenizer(tmp_path / sub)
        assert type(ours).__name__ == "WordPieceTokenizer"
        assert ours.encode(text) == expected
