"""Task heads (sequence / token classification, QA) on GPT and BERT bodies, BIO Viterbi
decoding, the model-type registry and load_model.

Device-clean (data made with NumPy, read back with ``.numpy()``/``.item()``), so the file
also runs on the strict 'fake' device.
"""
import itertools
import json

import numpy as np
import pytest

import minillm as mm
from minillm.models import (BERT, GPT, LSTMLM, MODEL_TYPES, BertConfig, BertForMaskedLM,
                            GPTConfig, LSTMLMConfig, ModelForQuestionAnswering,
                            ModelForSequenceClassification, ModelForTokenClassification,
                            PreTrainedModel, QuestionAnsweringConfig, SequenceClassificationConfig,
                            TokenClassificationConfig, bio_transition_mask, bio_viterbi,
                            load_model, model_class)
from minillm.models.heads import PAD_LOGIT, is_bio

GPT_TINY = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)
BERT_TINY = dict(vocab_size=13, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=16, max_position_embeddings=8, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0, pad_token_id=0)
BODY_CONFIGS = {"gpt": GPTConfig(**GPT_TINY).to_dict(), "bert": BertConfig(**BERT_TINY).to_dict()}
VOCAB = {"gpt": 11, "bert": 13}
NER = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]

HEADS = {"seq": ModelForSequenceClassification, "tok": ModelForTokenClassification,
         "qa": ModelForQuestionAnswering}
HEAD_KW = {"seq": dict(num_labels=3), "tok": dict(num_labels=5, label_names=NER), "qa": {}}


def T(a):
    return mm.tensor(np.asarray(a))


def randomize(model, seed, scale=0.1):
    """Non-trivial LayerNorms, biases and heads (init gives 1, 0 and tiny logits)."""
    r = np.random.default_rng(seed)
    with mm.no_grad():
        for p in model.parameters():
            p.copy_(mm.tensor(p.numpy() + scale * r.standard_normal(p.shape).astype(p.dtype)))
    return model


def make(head, body, seed=0, **kw):
    """A head model on a fresh tiny body, randomized, in eval mode (no dropout)."""
    cls = HEADS[head]
    mm.manual_seed(seed)
    cfg = cls.config_class(base_model_type=body, base_config=BODY_CONFIGS[body],
                           **{**HEAD_KW[head], **kw})
    return randomize(cls(cfg), seed + 100).eval()


def batch(body, lengths=(5, 3, 1), t=5, seed=0):
    """Right-padded ids (B, T) (padding holds random ids: it must not matter) and the mask."""
    r = np.random.default_rng(seed)
    ids = r.integers(1, VOCAB[body], size=(len(lengths), t))
    mask = (np.arange(t)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    return ids, mask


def call(model, ids, mask, **kw):
    return model(T(ids), attention_mask=None if mask is None else T(mask), **kw)


def np_cross_entropy(logits, target, ignore_index=-100):
    """Mean cross-entropy in NumPy (float64), ignoring ``ignore_index``."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1, logits.shape[-1])
    t = np.asarray(target).reshape(-1)
    keep = t != ignore_index
    z, t = z[keep], t[keep]
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(len(t)), t]))


# -- shapes ----------------------------------------------------------------------------------------
SHAPE_CASES = ([("seq", body, dict(pooling=p)) for body in ("gpt", "bert")
                for p in ("auto", "cls", "mean", "last")]
               + [("tok", body, {}) for body in ("gpt", "bert")]
               + [("qa", body, {}) for body in ("gpt", "bert")])


@pytest.mark.parametrize("head,body,kw", SHAPE_CASES,
                         ids=[f"{h}-{b}-{k.get('pooling', '')}" for h, b, k in SHAPE_CASES])
def test_output_shapes_and_loss_is_last(head, body, kw):
    model = make(head, body, **kw)
    ids, mask = batch(body)
    b, t = ids.shape
    assert model.base.model_type == body and isinstance(model.base, (GPT, BERT))
    if head == "seq":
        logits = call(model, ids, mask)
        assert logits.shape == (b, 3)
        want = kw["pooling"] if kw["pooling"] != "auto" else {"gpt": "mean", "bert": "cls"}[body]
        assert model.pooling == want
        out = call(model, ids, mask, labels=T([0, 2, 1]))
    elif head == "tok":
        logits = call(model, ids, mask)
        assert logits.shape == (b, t, 5)
        out = call(model, ids, mask, labels=T(np.where(mask == 1, ids % 5, -100)))
    else:
        start, end = call(model, ids, mask)
        assert start.shape == end.shape == (b, t)
        out = call(model, ids, mask, start_positions=T([1, 0, 0]), end_positions=T([3, 2, 0]))
        assert len(out) == 3
    assert isinstance(out, tuple) and out[-1].shape == () and np.isfinite(out[-1].item())
    # no mask = every token real; works too
    no_mask = call(model, ids, None)
    assert (no_mask[0] if head == "qa" else no_mask).shape[0] == b


POOL_CASES = list(itertools.product(["gpt", "bert"], ["auto", "cls", "mean", "last"]))


@pytest.mark.parametrize("body,pooling", POOL_CASES, ids=[f"{b}-{p}" for b, p in POOL_CASES])
def test_pooling_by_hand(float64, body, pooling):
    """logits = pool(h) W + b with pool computed in NumPy from the body's outputs."""
    model = make("seq", body, seed=15, pooling=pooling)
    ids, mask = batch(body, lengths=(5, 3, 1), seed=15)
    if body == "gpt":
        h, pooled = model.base.hidden_states(T(ids)).numpy(), None
    else:
        h, pooled = (x.numpy() for x in model.base(T(ids), attention_mask=T(mask)))
    how = model.pooling
    if how == "cls":
        vec = pooled if body == "bert" else h[:, 0]
        if body == "bert":       # BERT's pooler: tanh(W_p h[:, 0] + b_p)
            d = model.base.pooler.dense
            np.testing.assert_allclose(
                vec, np.tanh(h[:, 0] @ d.weight.numpy() + d.bias.numpy()), rtol=1e-12)
    elif how == "mean":
        vec = np.stack([h[b, :n].mean(axis=0) for b, n in enumerate((5, 3, 1))])
    else:
        vec = np.stack([h[b, n - 1] for b, n in enumerate((5, 3, 1))])
    want = vec @ model.classifier.weight.numpy() + model.classifier.bias.numpy()
    np.testing.assert_allclose(call(model, ids, mask).numpy(), want, rtol=1e-10, atol=1e-12)


def test_head_layers_and_init():
    for head, name, width in [("seq", "classifier", 3), ("tok", "classifier", 5),
                              ("qa", "qa_outputs", 2)]:
        cls = HEADS[head]
        mm.manual_seed(0)
        model = cls(cls.config_class(base_model_type="gpt",
                                     base_config=dict(BODY_CONFIGS["gpt"], n_embd=64, n_head=2),
                                     **HEAD_KW[head]))
        layer = getattr(model, name)
        assert layer.weight.shape == (64, width)
        np.testing.assert_array_equal(layer.bias.numpy(), 0.0)
        assert abs(layer.weight.numpy().std() - 0.02) < 0.006
        assert isinstance(model.dropout, mm.nn.Dropout)
        assert model.dropout.p == cls.config_class.__dataclass_fields__[
            "classifier_dropout"].default
    # BERT bodies are built with their pooler
    assert make("tok", "bert").base.pooler is not None


# -- losses against NumPy -----------------------------------------------------------------------
@pytest.mark.parametrize("body", ["gpt", "bert"])
def test_losses_equal_numpy_cross_entropy(float64, body):
    ids, mask = batch(body, seed=1)
    seq = make("seq", body, seed=1, pooling="mean")
    labels = np.array([2, 0, 1])
    logits, loss = call(seq, ids, mask, labels=T(labels))
    assert loss.item() == pytest.approx(np_cross_entropy(logits.numpy(), labels), rel=1e-12)

    tok = make("tok", body, seed=2)
    tags = np.where(mask == 1, np.random.default_rng(2).integers(0, 5, ids.shape), -100)
    tags[0, 1] = -100                                     # an ignored real position too
    logits, loss = call(tok, ids, mask, labels=T(tags))
    want = np_cross_entropy(logits.numpy(), tags)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    assert want != pytest.approx(np_cross_entropy(logits.numpy(), np.where(tags < 0, 0, tags)))


@pytest.mark.parametrize("body", ["gpt", "bert"])
def test_qa_loss_is_the_mean_of_two_cross_entropies_over_real_tokens(float64, body):
    ids, mask = batch(body, seed=3)
    model = make("qa", body, seed=3)
    sp, ep = np.array([1, 2, 0]), np.array([4, 2, 0])
    start, end, loss = call(model, ids, mask, start_positions=T(sp), end_positions=T(ep))
    s, e = start.numpy(), end.numpy()
    np.testing.assert_array_equal(s[mask == 0], PAD_LOGIT)
    np.testing.assert_array_equal(e[mask == 0], PAD_LOGIT)
    # an independent CE that only ever sees the real positions of each row
    ce = [np.mean([np_cross_entropy(x[b, mask[b] == 1][None], [p[b]]) for b in range(3)])
          for x, p in ((s, sp), (e, ep))]
    assert loss.item() == pytest.approx((ce[0] + ce[1]) / 2, rel=1e-12)
    # without the mask the padding positions do take probability (the check can fail)
    _, _, unmasked = call(model, ids, None, start_positions=T(sp), end_positions=T(ep))
    assert unmasked.item() != pytest.approx(loss.item(), rel=1e-6)
    # and the real positions hold the head's raw logits
    if body == "gpt":
        h = model.base.hidden_states(T(ids))
    else:
        h, _ = model.base(T(ids), attention_mask=T(mask))
    raw = model.qa_outputs(h).numpy()
    np.testing.assert_allclose(s[mask == 1], raw[..., 0][mask == 1], rtol=1e-12)
    np.testing.assert_allclose(e[mask == 1], raw[..., 1][mask == 1], rtol=1e-12)


# -- gradients ----------------------------------------------------------------------------------
def _checked_params(model, head, body):
    layer = model.qa_outputs if head == "qa" else model.classifier
    extra = ([model.base.ln_f.weight] if body == "gpt"
             else [model.base.encoder.layer[1].output.LayerNorm.bias, model.base.pooler.dense.bias])
    return [layer.weight, layer.bias] + extra


GRAD_CASES = [("seq", "gpt", "mean"), ("seq", "gpt", "last"), ("seq", "gpt", "cls"),
              ("seq", "bert", "cls"), ("seq", "bert", "mean"), ("seq", "bert", "last"),
              ("tok", "gpt", None), ("tok", "bert", None),
              ("qa", "gpt", None), ("qa", "bert", None)]


@pytest.mark.parametrize("head,body,pooling", GRAD_CASES,
                         ids=[f"{h}-{b}-{p or ''}" for h, b, p in GRAD_CASES])
def test_gradcheck_head_losses(float64, head, body, pooling):
    model = make(head, body, seed=4, **({"pooling": pooling} if pooling else {}))
    ids, mask = batch(body, lengths=(4, 2), t=4, seed=4)
    if head == "seq":
        kw = dict(labels=T([1, 2]))
    elif head == "tok":
        kw = dict(labels=T(np.where(mask == 1, ids % 5, -100)))
    else:
        kw = dict(start_positions=T([1, 0]), end_positions=T([2, 1]))
    params = _checked_params(model, head, body)
    assert mm.gradcheck(lambda *p: call(model, ids, mask, **kw)[-1], params)


# -- padding invariance ----------------------------------------------------------------------------
PAD_CASES = ([("seq", body, p) for body in ("gpt", "bert") for p in ("cls", "mean", "last")]
             + [(h, body, None) for h in ("tok", "qa") for body in ("gpt", "bert")])


@pytest.mark.parametrize("head,body,pooling", PAD_CASES,
                         ids=[f"{h}-{b}-{p or ''}" for h, b, p in PAD_CASES])
def test_more_right_padding_changes_nothing(head, body, pooling):
    model = make(head, body, seed=5, **({"pooling": pooling} if pooling else {}))
    ids, mask = batch(body, lengths=(5, 3, 1), t=5, seed=5)
    r = np.random.default_rng(6)
    long_ids = np.concatenate([ids, r.integers(1, VOCAB[body], (3, 3))], axis=1)   # T = 8
    long_mask = np.concatenate([mask, np.zeros((3, 3), np.int64)], axis=1)
    short, long = call(model, ids, mask), call(model, long_ids, long_mask)
    if head == "seq":
        np.testing.assert_allclose(long.numpy(), short.numpy(), rtol=1e-5, atol=1e-5)
        if pooling != "cls":           # the mask matters: without it the padding is pooled
            assert not np.allclose(call(model, long_ids, None).numpy(), short.numpy(),
                                   atol=1e-3)
    else:
        pairs = [(long, short)] if head == "tok" else list(zip(long, short))
        for a, b in pairs:
            a, b = a.numpy()[:, :5], b.numpy()
            np.testing.assert_allclose(a[mask == 1], b[mask == 1], rtol=1e-5, atol=1e-5)
    # each sequence alone, unpadded, gives the same outputs as inside the padded batch
    for i, n in enumerate((5, 3, 1)):
        alone = call(model, ids[i:i + 1, :n], None)
        if head == "seq":
            np.testing.assert_allclose(alone.numpy()[0], short.numpy()[i], rtol=1e-5, atol=1e-5)
        elif head == "tok":
            np.testing.assert_allclose(alone.numpy()[0], short.numpy()[i, :n], rtol=1e-5,
                                       atol=1e-5)
        else:
            for a, b in zip(alone, short):
                np.testing.assert_allclose(a.numpy()[0], b.numpy()[i, :n], rtol=1e-5, atol=1e-5)


def test_bert_body_uses_token_types():
    model = make("qa", "bert", seed=7)
    ids, mask = batch("bert", seed=7)
    types = np.zeros_like(ids)
    types[:, 2:] = 1
    a, _ = call(model, ids, mask)
    b, _ = call(model, ids, mask, token_type_ids=T(types))
    assert not np.allclose(a.numpy()[mask == 1], b.numpy()[mask == 1])


# -- from_base -------------------------------------------------------------------------------------
@pytest.mark.parametrize("head,body", list(itertools.product(HEADS, ["gpt", "bert"])))
def test_from_base_shares_the_body(head, body):
    cfg = GPTConfig(**GPT_TINY) if body == "gpt" else BertConfig(**BERT_TINY)
    base = randomize(GPT(cfg) if body == "gpt" else BERT(cfg), 8).eval()
    model = HEADS[head].from_base(base, **HEAD_KW[head]).eval()
    assert model.base is base
    assert type(model).model_type == head_type(head)
    assert model.config.base_model_type == body and model.config.base_config == cfg.to_dict()
    ids = {id(p) for p in model.parameters()}
    assert all(id(p) in ids for p in base.parameters())
    head_layer = model.qa_outputs if head == "qa" else model.classifier
    assert head_layer.weight.device == next(iter(base.parameters())).device
    ids_, mask = batch(body, seed=8)
    before = call(model, ids_, mask)[0].numpy()
    with mm.no_grad():                                   # a change in the body shows up
        p = base.ln_f.bias if body == "gpt" else base.embeddings.LayerNorm.bias
        p.copy_(mm.tensor(p.numpy() + 0.5))
    after = call(model, ids_, mask)[0].numpy()
    assert not np.allclose(before, after)


def head_type(head):
    return {"seq": "sequence_classification", "tok": "token_classification",
            "qa": "question_answering"}[head]


def test_from_base_follows_the_body_dtype():
    with mm.backend.default_dtype_as(np.float64):
        base = GPT(GPTConfig(**GPT_TINY))
    model = ModelForSequenceClassification.from_base(base, num_labels=2)
    assert model.classifier.weight.dtype == np.float64
    assert model.classifier.weight.device == base.wte.weight.device
    assert mm.get_default_dtype() == np.float32                     # restored


@pytest.mark.parametrize("base,fragment", [
    (lambda: BertForMaskedLM(BertConfig(**BERT_TINY)), "model.bert"),
    (lambda: LSTMLM(LSTMLMConfig(vocab_size=5, embed_dim=4, hidden_size=4)), "lstm_lm"),
    (lambda: mm.nn.Linear(2, 2), "Linear"),
], ids=["bert-mlm", "lstm", "not-a-model"])
def test_from_base_rejects_other_models(base, fragment):
    with pytest.raises(TypeError, match="must be one of the bodies") as info:
        ModelForSequenceClassification.from_base(base(), num_labels=2)
    assert fragment in str(info.value)


def test_bert_body_without_pooler_uses_cls_vector_and_round_trips(tmp_path):
    mm.manual_seed(9)
    mlm = BertForMaskedLM(BertConfig(**BERT_TINY))
    model = randomize(ModelForSequenceClassification.from_base(mlm.bert, num_labels=3), 9).eval()
    assert model.base.pooler is None and model.pooling == "cls"
    ids, mask = batch("bert", seed=9)
    logits = call(model, ids, mask)
    seq, _ = model.base(T(ids), attention_mask=T(mask))
    want = model.classifier(seq[:, 0])
    np.testing.assert_allclose(logits.numpy(), want.numpy(), rtol=1e-6)
    model.save_pretrained(tmp_path / "clf")
    loaded = load_model(tmp_path / "clf").eval()
    assert loaded.base.pooler is None
    np.testing.assert_array_equal(call(loaded, ids, mask).numpy(), logits.numpy())
    # a state dict that lacks only part of the pooler is still an error
    sd = make("seq", "bert").state_dict()
    del sd["base.pooler.dense.bias"]
    with pytest.raises(Exception, match="missing keys"):
        make("seq", "bert").load_state_dict(sd)


# -- save / load and the registry --------------------------------------------------------------
@pytest.mark.parametrize("head,body", list(itertools.product(HEADS, ["gpt", "bert"])))
def test_save_and_load_model_round_trip(tmp_path, head, body):
    kw = dict(pooling="last") if head == "seq" else {}
    model = make(head, body, seed=10, **kw)
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    assert cfg["model_type"] == head_type(head) and cfg["base_model_type"] == body
    loaded = load_model(tmp_path / "m").eval()
    assert type(loaded) is HEADS[head] and loaded.config == model.config
    ids, mask = batch(body, seed=10)
    a, b = call(model, ids, mask), call(loaded, ids, mask)
    for x, y in (zip(a, b) if head == "qa" else [(a, b)]):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_load_model_loads_plain_bodies_and_keeps_dtype(tmp_path):
    with mm.backend.default_dtype_as(np.float64):
        gpt = GPT(GPTConfig(**GPT_TINY))
    gpt.save_pretrained(tmp_path / "gpt")
    loaded = load_model(tmp_path / "gpt")
    assert type(loaded) is GPT and loaded.wte.weight.dtype == np.float64
    assert load_model(tmp_path / "gpt", dtype=np.float32).wte.weight.dtype == np.float32


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def test_model_types_lists_every_model_class():
    found = {c.model_type: c for c in _all_subclasses(PreTrainedModel)
             if c.__module__.startswith("minillm.") and "model_type" in c.__dict__}
    assert MODEL_TYPES == found
    for name, cls in MODEL_TYPES.items():
        assert model_class(name) is cls and cls.model_type == name
    assert {"gpt", "bert", "lstm_lm", "seq2seq", "sequence_classification",
            "token_classification", "question_answering"} <= set(MODEL_TYPES)


@pytest.mark.parametrize("setup,exc,fragments", [
    (lambda d: d / "nothing", FileNotFoundError, ["nothing", "config.json", "model.npz"]),
    (lambda d: (d / "empty").mkdir() or d / "empty", FileNotFoundError,
     ["config.json is missing", "model.npz"]),
    (lambda d: _dir_with(d, {"vocab_size": 3}), ValueError, ["no model_type", "'gpt'"]),
    (lambda d: _dir_with(d, {"model_type": "gpt5"}), ValueError,
     ["unknown model_type 'gpt5'", "'question_answering'"]),
    (lambda d: _dir_with(d, "{not json"), ValueError, ["not readable JSON"]),
], ids=["missing-dir", "no-config", "no-type", "unknown-type", "bad-json"])
def test_load_model_errors(tmp_path, setup, exc, fragments):
    with pytest.raises(exc) as info:
        load_model(setup(tmp_path))
    for f in fragments:
        assert f in str(info.value)


def _dir_with(root, cfg):
    d = root / "m"
    d.mkdir()
    text = cfg if isinstance(cfg, str) else json.dumps(cfg)
    (d / "config.json").write_text(text, encoding="utf-8")
    return d


def test_model_class_unknown_type():
    with pytest.raises(ValueError, match=r"unknown model_type 'bart'; known types: \[.*'gpt'"):
        model_class("bart")


# -- config validation -------------------------------------------------------------------------
GPT_CFG = BODY_CONFIGS["gpt"]
CONFIG_ERRORS = [
    (SequenceClassificationConfig, dict(num_labels=2, pooling="max"), "pooling must be one of"),
    (SequenceClassificationConfig, dict(num_labels=0), "num_labels must be an int >= 1"),
    (TokenClassificationConfig, dict(num_labels=True), "num_labels must be an int >= 1"),
    (SequenceClassificationConfig, dict(num_labels=3, label_names=["a", "b"]),
     "label_names has 2 names but num_labels is 3"),
    (TokenClassificationConfig, dict(num_labels=2, label_names=["O", "O"]), "unique"),
    (TokenClassificationConfig, dict(num_labels=2, label_names=["O", 1]), "list of strings"),
    (SequenceClassificationConfig, dict(num_labels=2, classifier_dropout=1.0),
     "classifier_dropout"),
    (QuestionAnsweringConfig, dict(base_model_type="lstm_lm"), "unknown base_model_type"),
    (QuestionAnsweringConfig, dict(base_config=dict(GPT_CFG, n_embd=9)),
     "not a valid GPTConfig"),
    (QuestionAnsweringConfig, dict(base_config=dict(GPT_CFG, hidden_size=9)),
     "unknown config keys"),
    (QuestionAnsweringConfig, dict(base_config=[1, 2]), "as a dict"),
]


@pytest.mark.parametrize("cls,kw,fragment", CONFIG_ERRORS,
                         ids=[f"{c.__name__[:5]}-{f[:20]}" for c, _, f in CONFIG_ERRORS])
def test_config_errors(cls, kw, fragment):
    args = dict(base_model_type="gpt", base_config=GPT_CFG)
    with pytest.raises(ValueError) as info:
        cls(**{**args, **kw})
    assert fragment in str(info.value)


def test_configs_round_trip_and_accept_config_objects():
    cfg = TokenClassificationConfig(base_model_type="bert", base_config=BertConfig(**BERT_TINY),
                                    num_labels=5, label_names=tuple(NER))
    assert cfg.base_config == BODY_CONFIGS["bert"] and cfg.label_names == NER
    d = json.loads(json.dumps(cfg.to_dict()))
    assert TokenClassificationConfig.from_dict(d) == cfg
    assert cfg.body_config() == BertConfig(**BERT_TINY)


# -- input errors --------------------------------------------------------------------------------
def _seq(body="gpt"):
    return make("seq", body)


INPUT_ERRORS = [
    (lambda: call(_seq(), *batch("gpt"), labels=T([0, 3, 1])), ValueError,
     "[0, num_labels=3)"),
    (lambda: call(_seq(), *batch("gpt"), labels=T([0, 1])), ValueError, "shape (3,)"),
    (lambda: call(_seq(), *batch("gpt"), labels=T([0.0, 1.0, 2.0])), TypeError, "integers"),
    (lambda: call(make("tok", "bert"), *batch("bert"), labels=T(np.full((3, 5), 5))),
     ValueError, "[0, num_labels=5) or -100"),
    (lambda: call(make("qa", "gpt"), *batch("gpt"), start_positions=T([0, 3, 0]),
                  end_positions=T([0, 0, 0])), ValueError, "at real tokens"),
    (lambda: call(make("qa", "bert"), *batch("bert"), start_positions=T([0, 0, 0])),
     ValueError, "give both"),
    (lambda: call(_seq(), batch("gpt")[0], np.full((3, 5), 2)), ValueError, "0 (padding) and 1"),
    (lambda: call(_seq("bert"), batch("bert")[0], np.zeros((3, 5), np.int64)), ValueError,
     "no real token"),
    (lambda: call(_seq(), batch("gpt")[0], batch("gpt")[1][:, ::-1].copy()), ValueError,
     "RIGHT padding"),
    (lambda: call(_seq(), batch("gpt")[0], np.ones((3, 4), np.int64)), ValueError,
     "shape of input_ids"),
    (lambda: call(_seq(), np.ones((2, 9), np.int64), None), ValueError, "block_size=8"),
    (lambda: call(_seq("bert"), np.ones((2, 9), np.int64), None), ValueError,
     "max_position_embeddings"),
    (lambda: call(_seq(), np.ones(4, np.int64), None), ValueError, "(B, T)"),
]


@pytest.mark.parametrize("fn,exc,fragment", INPUT_ERRORS,
                         ids=["label-range", "label-shape", "label-float", "token-label-range",
                              "qa-on-padding", "qa-one-position", "mask-values", "mask-empty",
                              "gpt-left-padding", "mask-shape", "gpt-too-long", "bert-too-long",
                              "ids-1d"])
def test_bad_inputs_are_clear_errors(fn, exc, fragment):
    with pytest.raises(exc) as info:
        fn()
        mm.backend.flush_checks()    # value checks on a GPU-like device report at the next sync
    assert fragment in str(info.value)


# -- BIO decoding ----------------------------------------------------------------------------------
def valid_bio(tags):
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            return False
        prev = tag
    return True


def test_bio_transition_mask_by_hand():
    start, allowed = bio_transition_mask(NER)
    np.testing.assert_array_equal(start, [True, True, False, True, False])
    want = np.array([
        # O   B-P  I-P  B-L  I-L       (next)
        [1, 1, 0, 1, 0],              # after O
        [1, 1, 1, 1, 0],              # after B-PER
        [1, 1, 1, 1, 0],              # after I-PER
        [1, 1, 0, 1, 1],              # after B-LOC
        [1, 1, 0, 1, 1],              # after I-LOC
    ], dtype=bool)
    np.testing.assert_array_equal(allowed, want)
    for a, b in itertools.product(range(5), repeat=2):
        opening = [f"B-{NER[a][2:]}"] if NER[a].startswith("I-") else []   # a valid start
        assert allowed[a, b] == valid_bio(opening + [NER[a], NER[b]])


LABEL_ORDERS = [NER, ["I-LOC", "B-LOC", "O", "I-PER", "B-PER"], ["B-X", "I-X", "O"]]


@pytest.mark.parametrize("names", LABEL_ORDERS, ids=["ner", "shuffled", "one-type"])
def test_viterbi_equals_brute_force_over_valid_sequences(names):
    r = np.random.default_rng(11)
    n = len(names)
    seqs = [s for s in itertools.product(range(n), repeat=4)
            if valid_bio([names[i] for i in s])]
    differs = 0
    for _ in range(40):
        scores = r.normal(size=(4, n)) * 2
        path = bio_viterbi(scores, names)
        best = max(seqs, key=lambda s: scores[np.arange(4), s].sum())
        assert tuple(path) == best
        differs += tuple(scores.argmax(axis=1)) != best
    assert differs > 0                       # the constraint mattered in some trials


@pytest.mark.parametrize("names", LABEL_ORDERS, ids=["ner", "shuffled", "one-type"])
def test_viterbi_never_emits_an_invalid_inside_tag(names):
    r = np.random.default_rng(12)
    inside = [i for i, n in enumerate(names) if n.startswith("I-")]
    for t_len in (1, 2, 5, 17):
        for _ in range(20):
            scores = r.normal(size=(t_len, len(names)))
            scores[:, inside] += 1.5                    # tempt it with I- tags everywhere
            path = bio_viterbi(scores, names)
            assert len(path) == t_len and valid_bio([names[i] for i in path])
    assert bio_viterbi(np.zeros((0, len(names))), names) == []


@pytest.mark.parametrize("names,scores,fragment", [
    (["I-X"], np.zeros((2, 1)), "no valid tag sequence"),
    (NER, np.zeros((3, 4)), "(T, L)"),
    (["a", "b"], np.zeros((3, 2)), "not BIO"),
    (NER, np.full((2, 5), np.nan), "NaN"),
])
def test_viterbi_errors(names, scores, fragment):
    with pytest.raises(ValueError) as info:
        bio_viterbi(scores, names)
    assert fragment in str(info.value)


@pytest.mark.parametrize("names,bio", [
    (NER, True), (["O", "B-X"], True), (["O"], False), (["B-", "O"], False),
    (["S-X", "B-X", "O"], False), (["pos", "neg"], False), (None, False),
])
def test_is_bio(names, bio):
    assert is_bio(names) is bio


@pytest.mark.parametrize("label_names", [NER, None, ["A", "B", "C", "D", "E"]],
                         ids=["bio", "none", "plain"])
def test_decode(label_names):
    model = make("tok", "gpt", seed=13, label_names=label_names)
    ids, mask = batch("gpt", lengths=(5, 3, 1), seed=13)
    r = np.random.default_rng(13)
    logits = r.normal(size=(3, 5, 5))
    logits[:, :, [2, 4]] += 2.0                     # argmax would emit I- tags after O/at start
    out = model.decode(T(logits), T(mask))
    assert [len(o) for o in out] == [5, 3, 1]
    for b, n in enumerate((5, 3, 1)):
        if label_names == NER:
            lp = logits[b, :n] - np.log(np.exp(logits[b, :n]).sum(axis=1, keepdims=True))
            assert out[b] == bio_viterbi(lp, NER)
            assert valid_bio([NER[i] for i in out[b]])
        else:
            assert out[b] == logits[b, :n].argmax(axis=1).tolist()
    if label_names == NER:
        assert any(not valid_bio([NER[i] for i in logits[b, :n].argmax(axis=1)])
                   for b, n in enumerate((5, 3, 1)))
    # model logits (a Tensor on the device) and no mask work too
    real = model.decode(call(model, ids, None))
    assert [len(o) for o in real] == [5, 5, 5]
    with pytest.raises(ValueError, match="num_labels=5"):
        model.decode(np.zeros((3, 5, 4)))


# -- GPT.hidden_states -----------------------------------------------------------------------------
def test_gpt_hidden_states_feed_the_tied_head(float64):
    mm.manual_seed(14)
    gpt = randomize(GPT(GPTConfig(**GPT_TINY)), 14)
    ids = T(np.random.default_rng(14).integers(0, 11, (2, 6)))
    h = gpt.hidden_states(ids)
    assert h.shape == (2, 6, 8)
    np.testing.assert_allclose((h @ gpt.wte.weight.T).numpy(), gpt(ids).numpy(), rtol=1e-12,
                               atol=1e-12)
    with pytest.raises(ValueError, match="exceeds block_size=8"):
        gpt.hidden_states(T(np.zeros((1, 9), np.int64)))
