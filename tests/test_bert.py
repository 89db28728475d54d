"""BERT: config, HF parameter names, init, gradchecks, a hand-written PyTorch reference,
padding invariance, the tied MLM decoder, 3-D masks, save/load, and MLM training.

Device-clean: data is made with NumPy, moved with ``mm.tensor``, read back with ``.numpy()`` /
``.item()`` only, so the file runs on cpu and on the strict 'fake' device.
"""
import dataclasses
import json
import math

import numpy as np
import pytest

import minillm as mm
from minillm.models.bert import (BERT, BertConfig, BertForMaskedLM, BertForPreTraining,
                                 BertForPreTrainingOutput, BertModel)

TINY = dict(vocab_size=13, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=16, max_position_embeddings=8, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)


def tiny(**kw):
    return BertConfig(**{**TINY, **kw})


def batch(seed=0, b=2, t=5, v=13, pad=0):
    """ids (B, T) with [CLS]=1 first, padding at the end of row 0, token types 0/1."""
    r = np.random.default_rng(seed)
    ids = r.integers(2, v, size=(b, t))
    ids[:, 0] = 1
    mask = np.ones((b, t), dtype=np.int64)
    mask[0, t - 2:] = 0
    ids[mask == 0] = pad
    types = np.zeros((b, t), dtype=np.int64)
    types[:, t // 2:] = 1
    types[mask == 0] = 0
    return ids, types, mask


def T(a):
    return mm.tensor(a)


# -- config ----------------------------------------------------------------------------------------
def test_config_defaults_are_bert_base_and_hf_names():
    c = BertConfig(vocab_size=30522)
    assert c.to_dict() == {
        "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
        "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
        "type_vocab_size": 2, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "hidden_act": "gelu",
        "initializer_range": 0.02}
    assert BertConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("kw,fragment", [
    (dict(hidden_size=10, num_attention_heads=3), "divisible"),
    (dict(hidden_act="swish"), "hidden_act"),
    (dict(pad_token_id=13), "pad_token_id"),
    (dict(num_hidden_layers=0), "num_hidden_layers"),
    (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob"),
])
def test_bad_configs_are_clear_errors(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        tiny(**kw)


def _count(cfg):
    h, i, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    n = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * h + 2 * h
    n += L * (4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h)
    return n + h * h + h                                             # + pooler


def test_parameter_count_matches_bert_base():
    """The count formula gives bert-base-uncased's 109,482,240 (HF's BertModel) and agrees
    with the model at a small size."""
    assert _count(BertConfig(vocab_size=30522)) == 109482240
    cfg = BertConfig(vocab_size=37, hidden_size=24, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=40, max_position_embeddings=20)
    assert BERT(cfg).num_parameters() == _count(cfg)


# -- names and init ----------------------------------------------------------------------------
HF_LAYER = ["attention.self.query", "attention.self.key", "attention.self.value",
            "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
            "output.dense", "output.LayerNorm"]


def hf_names(layers, pooler=True, prefix=""):
    mods = ["embeddings.word_embeddings", "embeddings.position_embeddings",
            "embeddings.token_type_embeddings"]
    names = [f"{prefix}{m}.weight" for m in mods]
    names += [f"{prefix}embeddings.LayerNorm.weight", f"{prefix}embeddings.LayerNorm.bias"]
    for i in range(layers):
        for m in HF_LAYER:
            names += [f"{prefix}encoder.layer.{i}.{m}.{w}" for w in ("weight", "bias")]
    if pooler:
        names += [f"{prefix}pooler.dense.weight", f"{prefix}pooler.dense.bias"]
    return names


MLM_HEAD = ["cls.predictions.bias", "cls.predictions.transform.dense.weight",
            "cls.predictions.transform.dense.bias", "cls.predictions.transform.LayerNorm.weight",
            "cls.predictions.transform.LayerNorm.bias"]


def test_parameter_names_are_hugging_face_names():
    assert sorted(BERT(tiny()).state_dict()) == sorted(hf_names(2))
    assert BertModel is BERT
    pre = BertForPreTraining(tiny())
    assert sorted(pre.state_dict()) == sorted(
        hf_names(2, prefix="bert.") + MLM_HEAD + ["cls.seq_relationship.weight",
                                                  "cls.seq_relationship.bias"])
    mlm = BertForMaskedLM(tiny())
    assert sorted(mlm.state_dict()) == sorted(hf_names(2, pooler=False, prefix="bert.") + MLM_HEAD)
    shapes = {k: v.shape for k, v in pre.state_dict().items()}
    assert shapes["bert.encoder.layer.0.intermediate.dense.weight"] == (8, 16)   # (in, out)
    assert shapes["cls.seq_relationship.weight"] == (8, 2)


def test_init_follows_bert():
    cfg = BertConfig(vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=32, pad_token_id=3)
    m = BertForPreTraining(cfg)
    for name, p in m.named_parameters():
        a = p.numpy()
        if name.endswith("LayerNorm.weight"):
            np.testing.assert_array_equal(a, 1.0)
        elif name.endswith("bias"):
            np.testing.assert_array_equal(a, 0.0)
        else:
            if "word_embeddings" in name:
                np.testing.assert_array_equal(a[3], 0.0)                 # the [PAD] row
                a = np.delete(a, 3, axis=0)
            assert abs(a.std() - 0.02) < 0.004, (name, a.std())
            assert abs(a.mean()) < 0.004, name


# -- gradchecks ---------------------------------------------------------------------------------
def test_gradcheck_bert_with_padding_and_token_types(float64):
    m = BERT(tiny())
    ids, types, mask = batch()
    real = T(mask[:, :, None].astype(np.float64))
    ids, types, mask = T(ids), T(types), T(mask)

    def fn(*params):
        # Outputs at padding positions are zeroed: the [PAD] embedding row gets no gradient by
        # design (as in PyTorch), and with the mask nothing else reads it, so 0 = 0 there.
        seq, pooled = m(ids, types, mask)
        return seq * real, pooled
    assert mm.gradcheck(fn, list(m.parameters()))


def test_gradcheck_pretraining_heads_loss(float64):
    m = BertForPreTraining(tiny())
    ids, types, mask = batch(seed=1)
    labels = np.full(ids.shape, -100)
    labels[0, 1], labels[1, 2], labels[1, 4] = 5, 7, 11
    nsp = np.array([0, 1])
    args = dict(token_type_ids=T(types), attention_mask=T(mask), labels=T(labels),
                next_sentence_label=T(nsp))
    ids = T(ids)
    # what the heads add (the encoder is checked above): the MLM transform and bias, the
    # word embeddings (used twice: input and tied decoder), the pooler and the NSP layer
    params = [p for n, p in m.named_parameters()
              if n.startswith(("cls.", "bert.pooler.", "bert.embeddings.word_embeddings"))]
    assert len(params) == 10
    assert mm.gradcheck(lambda *ps: m(ids, **args).loss, params)


# -- a hand-written PyTorch BERT as the reference ------------------------------------------------
def torch_bert(torch, cfg):
    """BertForPreTraining in plain PyTorch, with HF's module names, post-LN, exact GELU and
    HF's additive padding mask (1 - mask) * finfo.min."""
    nn = torch.nn
    h, eps = cfg.hidden_size, cfg.layer_norm_eps

    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(cfg.vocab_size, h, padding_idx=cfg.pad_token_id)
            self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, h)
            self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, h)
            self.LayerNorm = nn.LayerNorm(h, eps=eps)

        def forward(self, ids, types):
            pos = torch.arange(ids.shape[1])[None, :]
            return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(pos)
                                  + self.token_type_embeddings(types))

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)

        def forward(self, x, ext):
            b, t, _ = x.shape
            nh = cfg.num_attention_heads
            d = h // nh
            split = lambda y: y.view(b, t, nh, d).transpose(1, 2)         # noqa: E731
            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = q @ k.transpose(-1, -2) / math.sqrt(d) + ext
            ctx = torch.softmax(scores, dim=-1) @ v
            return ctx.transpose(1, 2).reshape(b, t, h)

    class AddNorm(nn.Module):
        def __init__(self, d_in):
            super().__init__()
            self.dense = nn.Linear(d_in, h)
            self.LayerNorm = nn.LayerNorm(h, eps=eps)

        def forward(self, x, resid):
            return self.LayerNorm(self.dense(x) + resid)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self = SelfAttention()
            self.output = AddNorm(h)

        def forward(self, x, ext):
            return self.output(self.self(x, ext), x)

    class Intermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(h, cfg.intermediate_size)

        def forward(self, x):
            return torch.nn.functional.gelu(self.dense(x))               # exact (erf)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Attention()
            self.intermediate = Intermediate()
            self.output = AddNorm(cfg.intermediate_size)

        def forward(self, x, ext):
            a = self.attention(x, ext)
            return self.output(self.intermediate(a), a)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList([Layer() for _ in range(cfg.num_hidden_layers)])

    class Pooler(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(h, h)

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings, self.encoder, self.pooler = Embeddings(), Encoder(), Pooler()

        def forward(self, ids, types, mask):
            ext = (1.0 - mask[:, None, None, :].double()) * torch.finfo(torch.float64).min
            x = self.embeddings(ids, types)
            for layer in self.encoder.layer:
                x = layer(x, ext)
            return x, torch.tanh(self.pooler.dense(x[:, 0]))

    class Transform(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(h, h)
            self.LayerNorm = nn.LayerNorm(h, eps=eps)

    class Predictions(nn.Module):
        def __init__(self):
            super().__init__()
            self.transform = Transform()
            self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.predictions = Predictions()
            self.seq_relationship = nn.Linear(h, 2)

    class PreTraining(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert, self.cls = Bert(), Heads()

        def forward(self, ids, types, mask):
            seq, pooled = self.bert(ids, types, mask)
            tr = self.cls.predictions.transform
            z = tr.LayerNorm(torch.nn.functional.gelu(tr.dense(seq)))
            logits = z @ self.bert.embeddings.word_embeddings.weight.T + self.cls.predictions.bias
            return seq, pooled, logits, self.cls.seq_relationship(pooled)

    return PreTraining().double()


def _copy_into_torch(torch, model, tmodel):
    mods = dict(tmodel.named_modules())
    sd = {}
    for key, value in model.state_dict().items():
        a = value.numpy()
        owner = key.rsplit(".", 1)[0]
        if isinstance(mods.get(owner), torch.nn.Linear) and key.endswith(".weight"):
            a = a.T                                               # (in, out) -> (out, in)
        sd[key] = torch.tensor(np.ascontiguousarray(a))
    tmodel.load_state_dict(sd, strict=True)                       # same names, all of them


@pytest.mark.torch
def test_against_hand_written_torch_bert(float64):
    torch = pytest.importorskip("torch")
    cfg = BertConfig(vocab_size=23, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=10, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, pad_token_id=0)
    m = BertForPreTraining(cfg)
    with mm.no_grad():                              # non-trivial LayerNorms and biases
        r = np.random.default_rng(5)
        for p in m.parameters():
            p.copy_(mm.tensor(p.numpy() + 0.1 * r.standard_normal(p.shape)))
    tm = torch_bert(torch, cfg)
    _copy_into_torch(torch, m, tm)

    ids, types, mask = batch(seed=3, b=3, t=7, v=23)
    labels = np.full(ids.shape, -100)
    labels[0, 2], labels[1, 1], labels[1, 5], labels[2, 3] = 4, 9, 17, 22
    nsp = np.array([1, 0, 1])
    out = m(T(ids), T(types), T(mask), labels=T(labels), next_sentence_label=T(nsp))
    seq, pooled = m.bert(T(ids), T(types), T(mask))
    out.loss.backward()

    tseq, tpooled, tlogits, tnsp = tm(torch.tensor(ids), torch.tensor(types), torch.tensor(mask))
    F = torch.nn.functional
    tloss = F.cross_entropy(tlogits.reshape(-1, 23), torch.tensor(labels).reshape(-1),
                            ignore_index=-100) + F.cross_entropy(tnsp, torch.tensor(nsp))
    tloss.backward()

    close = dict(rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(seq.numpy(), tseq.detach().numpy(), **close)
    np.testing.assert_allclose(pooled.numpy(), tpooled.detach().numpy(), **close)
    np.testing.assert_allclose(out.prediction_logits.numpy(), tlogits.detach().numpy(), **close)
    np.testing.assert_allclose(out.seq_relationship_logits.numpy(), tnsp.detach().numpy(), **close)
    assert out.loss.item() == pytest.approx(tloss.item(), rel=1e-10)
    tparams = dict(tm.named_parameters())
    mods = dict(tm.named_modules())
    for name, p in m.named_parameters():
        g = tparams[name].grad.numpy()
        if isinstance(mods.get(name.rsplit(".", 1)[0]), torch.nn.Linear) and \
                name.endswith(".weight"):
            g = g.T
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-6, atol=1e-10, err_msg=name)


# -- padding, tying, masks -----------------------------------------------------------------------
def test_padding_tokens_do_not_change_real_positions(float64):
    m = BertForPreTraining(tiny())
    ids, types, mask = batch(seed=2, b=3, t=6)
    mask[1, 3:] = 0
    ids2, types2 = ids.copy(), types.copy()
    pads = mask == 0
    ids2[pads] = np.random.default_rng(9).integers(0, 13, size=pads.sum())
    types2[pads] = 1
    a = m(T(ids), T(types), T(mask))
    b = m(T(ids2), T(types2), T(mask))
    real = mask == 1
    np.testing.assert_allclose(a.prediction_logits.numpy()[real],
                               b.prediction_logits.numpy()[real], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.seq_relationship_logits.numpy(),
                               b.seq_relationship_logits.numpy(), rtol=1e-12, atol=1e-14)
    # and without the mask the padding does matter (the test can fail)
    c = m(T(ids2), T(types2))
    assert not np.allclose(a.prediction_logits.numpy()[real], c.prediction_logits.numpy()[real])


def test_mlm_decoder_is_tied_and_its_gradient_accumulates(float64):
    m = BertForPreTraining(tiny())
    E = m.bert.embeddings.word_embeddings.weight
    assert m.get_output_embeddings() is E and m.get_input_embeddings() is E
    assert sum(p is E for p in m.parameters()) == 1
    assert not any("decoder" in k for k in m.state_dict())
    ids, types, mask = batch(seed=4)
    labels = np.where(mask == 1, ids, -100)
    args = (T(ids), T(types), T(mask))
    m(*args, labels=T(labels)).loss.backward()
    total = E.grad.numpy()

    # the same loss with the decoder reading an untied copy D of E: dE_total = dE + dD
    m.zero_grad()
    D = mm.nn.Parameter(mm.tensor(E.numpy()))
    seq, pooled = m.bert(*args)
    logits = m.cls.predictions(seq, D)
    mm.functional.cross_entropy(logits, T(labels)).backward()
    from_embedding, from_decoder = E.grad.numpy(), D.grad.numpy()
    assert np.abs(from_embedding).max() > 0 and np.abs(from_decoder).max() > 0
    np.testing.assert_allclose(total, from_embedding + from_decoder, rtol=1e-10, atol=1e-14)


def test_attention_mask_3d(float64):
    m = BERT(tiny())
    ids, types, mask = batch(seed=6, b=2, t=6)
    t = ids.shape[1]
    # a (B, T, T) mask that repeats the padding mask gives the same result as the 2-D one
    m3 = np.broadcast_to(mask[:, None, :] == 1, (2, t, t)).copy()
    a, pa = m(T(ids), T(types), T(mask))
    b, pb = m(T(ids), T(types), attention_mask_3d=T(m3))
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pa.numpy(), pb.numpy(), rtol=1e-12, atol=1e-14)
    # a causal 3-D mask: position i never depends on tokens after it (combined with padding)
    causal = np.broadcast_to(np.tril(np.ones((t, t), dtype=bool)), (2, t, t)).copy()
    full = np.ones_like(mask)
    h1, _ = m(T(ids), T(types), T(full), attention_mask_3d=T(causal))
    ids2 = ids.copy()
    ids2[:, 3:] = (ids2[:, 3:] + 1) % 13
    h2, _ = m(T(ids2), T(types), T(full), attention_mask_3d=T(causal))
    np.testing.assert_allclose(h1.numpy()[:, :3], h2.numpy()[:, :3], rtol=1e-12, atol=1e-14)
    assert not np.allclose(h1.numpy()[:, 3:], h2.numpy()[:, 3:])


@pytest.mark.parametrize("call,exc,fragment", [
    (lambda m, ids: m(ids, attention_mask=mm.tensor(np.ones((2, 4)))), ValueError, "(B, T)"),
    (lambda m, ids: m(ids, attention_mask_3d=mm.tensor(np.ones((2, 5, 5)))), TypeError, "bool"),
    (lambda m, ids: m(ids, attention_mask_3d=mm.tensor(np.ones((2, 5, 4), bool))), ValueError,
     "(B, T, T)"),
    (lambda m, ids: m(mm.tensor(np.ones((2, 9), dtype=np.int64))), ValueError,
     "max_position_embeddings"),
    (lambda m, ids: m(ids, token_type_ids=mm.tensor(np.zeros((2, 4), dtype=np.int64))),
     ValueError, "token_type_ids"),
    (lambda m, ids: m(mm.tensor(np.ones((2, 5)))), TypeError, "integers"),
    (lambda m, ids: m(), ValueError, "exactly one"),
], ids=["mask-shape", "3d-float", "3d-shape", "too-long", "types-shape", "float-ids", "no-ids"])
def test_bad_inputs_are_clear_errors(call, exc, fragment):
    m = BERT(tiny())
    ids = mm.tensor(np.ones((2, 5), dtype=np.int64))
    with pytest.raises(exc) as info:
        call(m, ids)
    assert fragment in str(info.value)


def test_outputs_shapes_losses_and_dropout():
    m = BertForPreTraining(tiny(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
    ids, types, mask = batch(seed=7)
    out = m(T(ids), T(types), T(mask))
    assert isinstance(out, BertForPreTrainingOutput)
    assert out.prediction_logits.shape == (2, 5, 13) and out.seq_relationship_logits.shape == (2, 2)
    assert out.loss is None
    labels = np.where(mask == 1, ids, -100)
    out = m(T(ids), T(types), T(mask), labels=T(labels), next_sentence_label=T(np.array([0, 1])))
    assert out.loss.item() == pytest.approx(out.mlm_loss.item() + out.nsp_loss.item(), rel=1e-6)
    # training mode is stochastic (dropout); eval mode is deterministic
    a = m(T(ids), T(types), T(mask)).prediction_logits.numpy()
    b = m(T(ids), T(types), T(mask)).prediction_logits.numpy()
    assert not np.allclose(a, b)
    m.eval()
    a = m(T(ids), T(types), T(mask)).prediction_logits.numpy()
    b = m(T(ids), T(types), T(mask)).prediction_logits.numpy()
    np.testing.assert_array_equal(a, b)
    mlm = BertForMaskedLM(tiny())
    logits, loss = mlm(T(ids), attention_mask=T(mask), labels=T(labels))
    assert logits.shape == (2, 5, 13) and loss.item() > 0
    np.testing.assert_array_equal(mlm(T(ids), attention_mask=T(mask)).numpy(), logits.numpy())
    seq, pooled = mlm.bert(T(ids))
    assert seq.shape == (2, 5, 8) and pooled is None


# -- save / load -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [BERT, BertForPreTraining, BertForMaskedLM])
def test_save_from_pretrained_is_bit_identical(tmp_path, cls):
    m = cls(tiny(pad_token_id=2)).eval()
    m.save_pretrained(tmp_path / "bert")
    cfg = json.loads((tmp_path / "bert" / "config.json").read_text(encoding="utf-8"))
    assert cfg["model_type"] == cls.model_type and cfg["pad_token_id"] == 2
    m2 = cls.from_pretrained(tmp_path / "bert").eval()
    assert m2.config == m.config
    ids, types, mask = batch(seed=8)
    a, b = m(T(ids), T(types), T(mask)), m2(T(ids), T(types), T(mask))
    if cls is BERT:
        pairs = list(zip(a, b))
    elif cls is BertForMaskedLM:
        pairs = [(a, b)]
    else:
        pairs = [(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)]
    for x, y in pairs:
        if x is not None:
            np.testing.assert_array_equal(x.numpy(), y.numpy())
    if cls is BertForPreTraining:            # the tie survives loading
        assert m2.get_output_embeddings() is m2.bert.embeddings.word_embeddings.weight
        # the encoder alone can be saved and reloaded for fine-tuning
        m.bert.save_pretrained(tmp_path / "enc")
        enc = BERT.from_pretrained(tmp_path / "enc").eval()
        np.testing.assert_array_equal(enc(T(ids), T(types), T(mask))[0].numpy(),
                                      m.bert(T(ids), T(types), T(mask))[0].numpy())


# -- training ---------------------------------------------------------------------------------
SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "birds fly over the sea",
             "the sun rises in the east", "my friend reads a book", "she drinks hot green tea",
             "we play chess at night", "he rides a red bike", "the kids eat sweet cake",
             "they sing a happy song"]


def toy_corpus():
    """50 short sentences (10 distinct, each 5 times) and a word-level vocabulary whose
    special tokens are NOT at the usual ids (they come from this 'tokenizer')."""
    words = sorted({w for s in SENTENCES for w in s.split()})
    vocab = {w: i for i, w in enumerate(words)}
    for tok in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        vocab[tok] = len(vocab)
    t = max(len(s.split()) for s in SENTENCES) + 2
    rows = []
    for s in SENTENCES * 5:
        ids = [vocab["[CLS]"]] + [vocab[w] for w in s.split()] + [vocab["[SEP]"]]
        rows.append(ids + [vocab["[PAD]"]] * (t - len(ids)))
    ids = np.array(rows)
    return ids, (ids != vocab["[PAD]"]).astype(np.int64), vocab


def mask_tokens(ids, vocab, rng, p=0.15):
    """Minimal MLM masking: each word (not a special token) is masked with probability p
    (at least one per sentence) and replaced by [MASK]; labels are -100 elsewhere."""
    special = np.isin(ids, [vocab[t] for t in ("[PAD]", "[CLS]", "[SEP]")])
    chosen = (rng.random(ids.shape) < p) & ~special
    for i in range(len(ids)):
        if not chosen[i].any():
            chosen[i, rng.choice(np.flatnonzero(~special[i]))] = True
    return np.where(chosen, vocab["[MASK]"], ids), np.where(chosen, ids, -100)


def test_tiny_bert_learns_masked_tokens():
    ids, mask, vocab = toy_corpus()
    mm.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=16,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     pad_token_id=vocab["[PAD]"])
    m = BertForMaskedLM(cfg)
    opt = mm.optim.Adam(m.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    am = T(mask)
    losses = []
    for step in range(200):
        x, y = mask_tokens(ids, vocab, rng)
        _, loss = m(T(x), attention_mask=am, labels=T(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.25 * np.mean(losses[:5])

    # every word of every distinct sentence, masked alone, is predicted from its context
    m.eval()
    distinct = ids[:10]
    xs, ys = [], []
    for i in range(10):
        for j in np.flatnonzero(mask[i])[1:-1]:
            x = distinct[i].copy()
            x[j] = vocab["[MASK]"]
            xs.append(x)
            ys.append((len(xs) - 1, j, distinct[i, j]))
    with mm.no_grad():
        xs = np.array(xs)
        logits = m(T(xs), attention_mask=T((xs != vocab["[PAD]"]).astype(np.int64)))
    pred = logits.numpy().argmax(-1)
    acc = np.mean([pred[r, j] == y for r, j, y in ys])
    assert acc >= 0.9, acc
