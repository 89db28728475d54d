"""Freezing (freeze / freeze_layers / train_head_only), parameter counts and layer-wise
learning-rate decay (layer_depths / layerwise_lr_groups) on tiny GPT and BERT models.

Expected values come from independent sources: closed-form parameter counts from the
configs, depths parsed from the parameter names with a regular expression, learning rates
from the formula lr * decay ** (L + 1 - depth). Device-clean (NumPy data, ``.numpy()`` reads).
"""
import re

import numpy as np
import pytest

import minillm as mm
from minillm.finetune.freeze import (body_layers, freeze, freeze_layers, layer_depths,
                                     layerwise_lr_groups, parameter_summary, train_head_only,
                                     trainable_parameters, unfreeze)
from minillm.models import (BERT, GPT, LSTMLM, BertConfig, BertForMaskedLM, GPTConfig,
                            LSTMLMConfig, ModelForQuestionAnswering,
                            ModelForSequenceClassification, ModelForTokenClassification)

V, D, L = 11, 8, 2
GPT_TINY = dict(vocab_size=V, block_size=8, n_layer=L, n_head=2, n_embd=D)
BERT_TINY = dict(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=2,
                 intermediate_size=16, max_position_embeddings=8, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0, pad_token_id=0)
HEADS = {"seq": (ModelForSequenceClassification, dict(num_labels=3, classifier_dropout=0.0)),
         "tok": (ModelForTokenClassification, dict(num_labels=4, classifier_dropout=0.0)),
         "qa": (ModelForQuestionAnswering, {})}


def build(kind):
    """A tiny model by name: 'gpt', 'bert', 'mlm' or '<head>-<body>' (e.g. 'seq-gpt')."""
    mm.manual_seed(0)
    if kind == "gpt":
        return GPT(GPTConfig(**GPT_TINY))
    if kind == "bert":
        return BERT(BertConfig(**BERT_TINY))
    if kind == "mlm":
        return BertForMaskedLM(BertConfig(**BERT_TINY))
    head, body = kind.split("-")
    cls, kw = HEADS[head]
    base = GPT(GPTConfig(**GPT_TINY)) if body == "gpt" else BERT(BertConfig(**BERT_TINY))
    return cls.from_base(base, **kw)


# -- independent references ------------------------------------------------------------------
def gpt_count():
    """GPT-2's parameter count from its layout (head tied to wte)."""
    block = (2 * D + (D * 3 * D + 3 * D) + (D * D + D)                 # ln_1, c_attn, c_proj
             + 2 * D + (D * 4 * D + 4 * D) + (4 * D * D + D))        # ln_2, c_fc, c_proj
    return V * D + 8 * D + L * block + 2 * D


def bert_count(pooler=True):
    lin = lambda i, o: i * o + o                                        # noqa: E731
    emb = V * D + 8 * D + 2 * D + 2 * D
    layer = 3 * lin(D, D) + lin(D, D) + 2 * D + lin(D, 16) + lin(16, D) + 2 * D
    return emb + L * layer + (lin(D, D) if pooler else 0)


HEAD_SIZES = {"seq": D * 3 + 3, "tok": D * 4 + 4, "qa": D * 2 + 2}
MLM_HEAD = (D * D + D) + 2 * D + V                                      # transform + bias

PATTERNS = {  # body prefix, embedding names, block names
    "gpt": (r"^(wte|wpe)\.", r"^h\.(\d+)\."),
    "bert": (r"^embeddings\.", r"^encoder\.layer\.(\d+)\."),
}


def expected_depth(name, body):
    """Depth from the parameter name alone: 0 embeddings, i + 1 block i, L + 1 the rest."""
    name = re.sub(r"^(base|bert)\.", "", name)
    emb, block = PATTERNS[body]
    if re.match(emb, name):
        return 0
    m = re.match(block, name)
    return int(m.group(1)) + 1 if m else L + 1


def body_of(kind):
    return "gpt" if kind.endswith("gpt") else "bert"


ALL_KINDS = ["gpt", "bert", "mlm", "seq-gpt", "seq-bert", "tok-gpt", "tok-bert", "qa-gpt",
             "qa-bert"]
HEAD_KINDS = [k for k in ALL_KINDS if "-" in k]


# -- counts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_counts_match_the_closed_form(kind):
    model = build(kind)
    if kind == "gpt":
        total = gpt_count()
    elif kind == "bert":
        total = bert_count()
    elif kind == "mlm":
        total = bert_count(pooler=False) + MLM_HEAD
    else:
        head, body = kind.split("-")
        total = (gpt_count() if body == "gpt" else bert_count()) + HEAD_SIZES[head]
    assert trainable_parameters(model) == total
    assert parameter_summary(model) == {"trainable": total, "total": total, "fraction": 1.0}
    freeze(model)
    assert parameter_summary(model) == {"trainable": 0, "total": total, "fraction": 0.0}
    assert unfreeze(model) is model and trainable_parameters(model) == total


@pytest.mark.parametrize("kind", HEAD_KINDS + ["mlm"])
def test_train_head_only_leaves_only_the_head(kind):
    model = build(kind)
    assert train_head_only(model) is model
    head = MLM_HEAD if kind == "mlm" else HEAD_SIZES[kind.split("-")[0]]
    s = parameter_summary(model)
    assert s["trainable"] == head and s["fraction"] == pytest.approx(head / s["total"])
    for name, p in model.named_parameters():
        in_body = name.startswith("bert." if kind == "mlm" else "base.")
        assert p.requires_grad == (not in_body), name
    # a frozen head is unfrozen again: "only the head stays trainable"
    freeze(model)
    assert trainable_parameters(train_head_only(model)) == head


def test_freeze_accepts_lists_and_parameters():
    model = build("seq-gpt")
    emb, blocks, rest = body_layers(model)
    freeze(emb + rest)
    freeze(model.classifier.bias)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"base.wte.weight", "base.wpe.weight", "base.ln_f.weight",
                      "base.ln_f.bias", "classifier.bias"}
    unfreeze([model.base.wte])
    assert model.base.wte.weight.requires_grad and not model.base.wpe.weight.requires_grad


# -- layers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_body_layers(kind):
    model = build(kind)
    body = model.base if "-" in kind else model.bert if kind == "mlm" else model
    emb, blocks, rest = body_layers(model)
    assert len(blocks) == L
    if body_of(kind) == "gpt":
        assert emb[0] is body.wte and emb[1] is body.wpe and rest == [body.ln_f]
        assert all(b is body.h[i] for i, b in enumerate(blocks))
    else:
        assert emb == [body.embeddings]
        assert all(b is body.encoder.layer[i] for i, b in enumerate(blocks))
        assert rest == ([] if kind == "mlm" else [body.pooler])


@pytest.mark.parametrize("kind", ["seq-gpt", "seq-bert", "mlm", "gpt"])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_freeze_layers_freezes_embeddings_and_first_k_blocks(kind, k):
    model = build(kind)
    assert freeze_layers(model, k) is model
    for name, p in model.named_parameters():
        d = expected_depth(name, body_of(kind))
        frozen = k >= 1 and d <= k                    # embeddings (0) and blocks 1..k
        assert p.requires_grad == (not frozen), (name, d)
    # freezing k blocks removes exactly those elements from the trainable count
    want = sum(p.size for n, p in model.named_parameters()
               if not (k >= 1 and expected_depth(n, body_of(kind)) <= k))
    assert trainable_parameters(model) == want


@pytest.mark.parametrize("body", ["gpt", "bert"])
def test_only_trainable_parameters_get_gradients_and_move(body):
    model = build(f"seq-{body}")
    freeze_layers(model, 1)
    ids = mm.tensor(np.random.default_rng(0).integers(1, V, size=(3, 5)))
    _, loss = model(ids, labels=mm.tensor(np.array([0, 2, 1])))
    loss.backward()
    before = {n: p.numpy() for n, p in model.named_parameters()}
    opt = mm.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    opt.step()
    for name, p in model.named_parameters():
        frozen = expected_depth(name, body) <= 1
        assert (p.grad is None) == frozen, name
        moved = not np.array_equal(p.numpy(), before[name])
        if frozen:
            assert not moved, name
    assert not np.array_equal(model.classifier.weight.numpy(), before["classifier.weight"])


# -- depths and layer-wise learning rates ----------------------------------------------------
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_layer_depths(kind):
    model = build(kind)
    depths = layer_depths(model)
    assert list(depths) == [n for n, _ in model.named_parameters()]
    assert depths == {n: expected_depth(n, body_of(kind)) for n in depths}
    assert set(depths.values()) == set(range(L + 2))              # ln_f / pooler / head: L + 1


@pytest.mark.parametrize("kind", ["seq-gpt", "seq-bert", "mlm"])
@pytest.mark.parametrize("decay,wd", [(0.5, 0.1), (0.8, 0.0), (1.0, 0.01)])
def test_layerwise_lr_groups_closed_form(kind, decay, wd):
    lr = 1e-3
    model = build(kind)
    freeze(model.base.wpe if kind == "seq-gpt" else model.bert.embeddings.position_embeddings
           if kind == "mlm" else model.base.embeddings.token_type_embeddings)
    groups = layerwise_lr_groups(model, lr, decay=decay, weight_decay=wd)
    where = {}
    for gi, g in enumerate(groups):
        assert set(g) == {"params", "lr", "weight_decay"} and g["params"]
        for p in g["params"]:
            assert id(p) not in where
            where[id(p)] = gi
    names = dict((id(p), n) for n, p in model.named_parameters())
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(where) == trainable                      # all trainable, no frozen one
    for pid, gi in where.items():
        d = expected_depth(names[pid], body_of(kind))
        p = groups[gi]["params"][[id(q) for q in groups[gi]["params"]].index(pid)]
        assert groups[gi]["lr"] == pytest.approx(lr * decay ** (L + 1 - d), rel=1e-15)
        assert groups[gi]["weight_decay"] == (wd if p.ndim >= 2 else 0.0)
    # one group per (depth, matrix or not), in order: depth 0 first, matrices first
    keys = [{(expected_depth(names[id(p)], body_of(kind)), p.ndim < 2) for p in g["params"]}
            for g in groups]
    assert all(len(k) == 1 for k in keys)
    keys = [k.pop() for k in keys]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert set(keys) == {(expected_depth(names[i], body_of(kind)), p.ndim < 2)
                         for i, p in ((id(p), p) for p in model.parameters() if p.requires_grad)}
    # parameters keep named_parameters order inside a group; the result is reproducible
    order = [names[id(p)] for p in model.parameters()]
    for g in groups:
        got = [names[id(p)] for p in g["params"]]
        assert got == sorted(got, key=order.index)
    assert [[id(p) for p in g["params"]] for g in groups] == \
        [[id(p) for p in g["params"]] for g in layerwise_lr_groups(model, lr, decay, wd)]


def test_layerwise_lrs_two_layer_model_exact_values():
    groups = layerwise_lr_groups(build("seq-bert"), 1e-3, decay=0.5)
    assert sorted({g["lr"] for g in groups}) == [1.25e-4, 2.5e-4, 5e-4, 1e-3]
    assert all(g["weight_decay"] == 0.0 for g in groups)
    # empty groups are omitted: with the body frozen only the head's two groups remain
    groups = layerwise_lr_groups(train_head_only(build("seq-bert")), 1e-3, 0.5, 0.1)
    assert [(len(g["params"]), g["lr"], g["weight_decay"]) for g in groups] == \
        [(1, 1e-3, 0.1), (1, 1e-3, 0.0)]


def test_adamw_uses_each_group_lr_and_scheduler_keeps_the_ratios(float64):
    model = build("seq-gpt").to(np.float64)
    lr, decay = 1e-2, 0.5
    groups = layerwise_lr_groups(model, lr, decay=decay)
    opt = mm.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    ids = mm.tensor(np.random.default_rng(1).integers(0, V, size=(4, 6)))
    _, loss = model(ids, labels=mm.tensor(np.array([0, 1, 2, 1])))
    loss.backward()
    before = [[p.numpy() for p in g["params"]] for g in groups]
    grads = [[p.grad.numpy() for p in g["params"]] for g in groups]
    opt.step()
    # Adam's first step is lr * g / (|g| + eps) ~ lr * sign(g): each group moves by its own lr
    for g, b, gr in zip(opt.param_groups, before, grads):
        for p, p0, g0 in zip(g["params"], b, gr):
            big = np.abs(g0) > 1e-5
            if big.any():
                np.testing.assert_allclose(np.abs(p.numpy() - p0)[big], g["lr"], rtol=2e-3)
    # a warmup + linear decay schedule scales every group by the same factor
    base = [g["lr"] for g in groups]
    sched = mm.optim.get_linear_schedule_with_warmup(opt, num_warmup_steps=2,
                                                     num_training_steps=10)
    for t in range(6):
        factor = t / 2 if t < 2 else (10 - t) / 8
        got = [g["lr"] for g in opt.param_groups]
        np.testing.assert_allclose(got, [b * factor for b in base], rtol=1e-12, atol=0)
        assert [g["initial_lr"] for g in opt.param_groups] == base
        opt.step()
        sched.step()


# -- errors ----------------------------------------------------------------------------------------
def lstm():
    return LSTMLM(LSTMLMConfig(vocab_size=V, embed_dim=4, hidden_size=4, num_layers=1))


ERRORS = [
    ("k too large", lambda: freeze_layers(build("seq-gpt"), 3), ValueError, "has 2 blocks"),
    ("k negative", lambda: freeze_layers(build("gpt"), -1), ValueError, "int >= 0"),
    ("k bool", lambda: freeze_layers(build("gpt"), True), ValueError, "int >= 0"),
    ("k float", lambda: freeze_layers(build("gpt"), 1.0), ValueError, "int >= 0"),
    ("unknown model", lambda: body_layers(lstm()), TypeError, "LSTMLM"),
    ("depths unknown", lambda: layer_depths(lstm()), TypeError, "GPT or BERT body"),
    ("head only bare", lambda: train_head_only(build("gpt")), ValueError, "no head"),
    ("freeze str", lambda: freeze("h.0"), TypeError, "nn.Module"),
    ("freeze list", lambda: freeze([build("gpt").wte, 3]), TypeError, "item 1"),
    ("count array", lambda: trainable_parameters(np.zeros(3)), TypeError, "ndarray"),
    ("decay 0", lambda: layerwise_lr_groups(build("gpt"), 1e-3, decay=0.0), ValueError,
     "decay"),
    ("decay > 1", lambda: layerwise_lr_groups(build("gpt"), 1e-3, decay=1.5), ValueError,
     "(0.0, 1.0]"),
    ("lr 0", lambda: layerwise_lr_groups(build("gpt"), 0.0), ValueError, "lr"),
    ("lr str", lambda: layerwise_lr_groups(build("gpt"), "1e-3"), ValueError, "lr"),
    ("wd < 0", lambda: layerwise_lr_groups(build("gpt"), 1e-3, weight_decay=-1), ValueError,
     "weight_decay"),
    ("all frozen", lambda: layerwise_lr_groups(freeze(build("bert")), 1e-3), ValueError,
     "requires grad"),
]


@pytest.mark.parametrize("fn,exc,match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors(fn, exc, match):
    with pytest.raises(exc, match=re.escape(match)):
        fn()
