"""LoRA (minillm.finetune.lora): the layer against NumPy, merging, freezing, gradients,
training, adapters on disk, remove_lora + save_pretrained, and every error.

Table-driven over a tiny GPT, a tiny BERT, BertForMaskedLM and the task-head models on both
bodies. Device-clean (data made with NumPy, read back with ``.numpy()``/``.item()``), so the
file also runs on the strict 'fake' device.
"""
import json

import numpy as np
import pytest

import minillm as mm
from minillm.finetune.lora import (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, LoRALinear,
                                   apply_lora, default_target_modules, load_adapters,
                                   lora_modules, lora_parameter_count, merge_lora, remove_lora,
                                   save_adapters, unmerge_lora)
from minillm.models import (BERT, GPT, BertConfig, BertForMaskedLM, GPTConfig, LSTMLM,
                            LSTMLMConfig, ModelForQuestionAnswering,
                            ModelForSequenceClassification, ModelForTokenClassification,
                            load_model)
from minillm.nn import Linear, Module, Sequential

GPT_TINY = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)
BERT_TINY = dict(vocab_size=13, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=16, max_position_embeddings=8, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0, pad_token_id=0)
BODY_CONFIGS = {"gpt": GPTConfig(**GPT_TINY).to_dict(), "bert": BertConfig(**BERT_TINY).to_dict()}
VOCAB = {"gpt": 11, "bert": 13}
HEADS = {"seq": ModelForSequenceClassification, "tok": ModelForTokenClassification,
         "qa": ModelForQuestionAnswering}
HEAD_KW = {"seq": dict(num_labels=3), "tok": dict(num_labels=4), "qa": {}}
HEAD_LAYER = {"seq": "classifier", "tok": "classifier", "qa": "qa_outputs"}

KINDS = ["gpt", "bert", "bert_mlm", "seq-gpt", "seq-bert", "tok-gpt", "tok-bert", "qa-gpt",
         "qa-bert"]


def body_of(kind):
    return "gpt" if kind.endswith("gpt") else "bert"


def head_of(kind):
    return kind.split("-")[0] if "-" in kind else None


def randomize(model, seed, scale=0.1):
    """Non-trivial LayerNorms, biases and heads (init gives 1, 0 and tiny logits)."""
    r = np.random.default_rng(seed)
    with mm.no_grad():
        for p in model.parameters():
            p.copy_(mm.tensor(p.numpy() + scale * r.standard_normal(p.shape).astype(p.dtype)))
    return model


def build(kind, seed=0):
    """A tiny model of ``kind``, the same weights for the same seed, in eval mode."""
    mm.manual_seed(seed)
    if kind == "gpt":
        model = GPT(GPTConfig(**GPT_TINY))
    elif kind == "bert":
        model = BERT(BertConfig(**BERT_TINY))
    elif kind == "bert_mlm":
        model = BertForMaskedLM(BertConfig(**BERT_TINY))
    else:
        cls = HEADS[head_of(kind)]
        model = cls(cls.config_class(base_model_type=body_of(kind),
                                     base_config=BODY_CONFIGS[body_of(kind)],
                                     **HEAD_KW[head_of(kind)]))
    return randomize(model, seed + 100).eval()


def inputs(kind, seed=0):
    r = np.random.default_rng(seed)
    ids = r.integers(1, VOCAB[body_of(kind)], size=(2, 5))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return ids, mask


def run(kind, model, seed=0):
    """The model's outputs as a list of Tensors."""
    ids, mask = inputs(kind, seed)
    ids = mm.tensor(ids)
    if kind == "gpt":
        return [model(ids)]
    if kind == "bert":
        return list(model(ids, attention_mask=mm.tensor(mask)))
    if kind == "bert_mlm":
        return [model(ids, attention_mask=mm.tensor(mask))]
    out = model(ids, attention_mask=mm.tensor(mask))
    return list(out) if isinstance(out, tuple) else [out]


def run_np(kind, model, seed=0):
    with mm.no_grad():
        return [t.numpy() for t in run(kind, model, seed)]


def expected_targets(kind):
    prefix = {"gpt": "", "bert": "", "bert_mlm": "bert."}.get(kind, "base.")
    if body_of(kind) == "gpt":
        names = [f"h.{i}.attn.{p}" for i in range(2) for p in ("c_attn", "c_proj")]
    else:
        names = [f"encoder.layer.{i}.attention.self.{p}" for i in range(2)
                 for p in ("query", "value")]
    return [prefix + n for n in names]


def trainable_of(kind):
    return (HEAD_LAYER[head_of(kind)],) if head_of(kind) else ()


def randomize_lora(model, seed, scale=0.3):
    """Non-zero A and B (B starts at zero, which would hide every mistake in the update)."""
    r = np.random.default_rng(seed)
    with mm.no_grad():
        for m in lora_modules(model).values():
            for p in (m.lora_A, m.lora_B):
                p.copy_(mm.tensor(scale * r.standard_normal(p.shape).astype(p.dtype)))
    return model


def host_state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


# -- the layer -------------------------------------------------------------------------------------
LAYER_CASES = [  # (in, out, r, alpha, bias, x shape)
    (4, 3, 2, 16, True, (5, 4)),
    (4, 3, 1, 1, False, (5, 4)),
    (6, 5, 4, 8, True, (2, 3, 6)),
    (3, 7, 8, 0.5, True, (2, 2, 3)),
]


@pytest.mark.parametrize("n_in,n_out,r,alpha,bias,xshape", LAYER_CASES)
def test_layer_matches_numpy(float64, n_in, n_out, r, alpha, bias, xshape):
    rng = np.random.default_rng(1)
    base = Linear(n_in, n_out, bias=bias)
    layer = LoRALinear.from_linear(base, r=r, alpha=alpha)
    assert layer.weight is base.weight and layer.bias is base.bias        # shared, not copied
    assert (layer.r, layer.alpha, layer.scaling, layer.merged) == (r, alpha, alpha / r, False)
    A = rng.standard_normal((n_in, r))
    B = rng.standard_normal((r, n_out))
    with mm.no_grad():
        layer.lora_A.copy_(mm.tensor(A))
        layer.lora_B.copy_(mm.tensor(B))
    x = rng.standard_normal(xshape)
    W = base.weight.numpy()
    b = base.bias.numpy() if bias else 0.0
    want = x @ W + b + (alpha / r) * x @ A @ B
    np.testing.assert_allclose(layer(mm.tensor(x)).numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.delta_weight().numpy(), (alpha / r) * A @ B, rtol=1e-12,
                               atol=1e-13)
    lin = layer.to_linear()
    assert type(lin) is Linear and lin.weight is not layer.weight
    np.testing.assert_allclose(lin(mm.tensor(x)).numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(base.weight.numpy(), W)             # to_linear changed nothing
    layer.merge()
    assert layer.merged
    np.testing.assert_allclose(base.weight.numpy(), W + (alpha / r) * A @ B, rtol=1e-12,
                               atol=1e-13)
    with mm.no_grad():
        np.testing.assert_allclose(layer(mm.tensor(x)).numpy(), want, rtol=1e-12, atol=1e-12)
    lin = layer.to_linear()                                           # merged: the same weight
    np.testing.assert_allclose(lin(mm.tensor(x)).numpy(), want, rtol=1e-12, atol=1e-12)
    layer.unmerge()
    np.testing.assert_allclose(base.weight.numpy(), W, rtol=0, atol=1e-14)


def test_layer_init_and_freezing():
    base = Linear(50, 7)
    layer = LoRALinear.from_linear(base, r=40, alpha=16)
    A, B = layer.lora_A.numpy(), layer.lora_B.numpy()
    assert A.shape == (50, 40) and B.shape == (40, 7)
    assert A.dtype == base.weight.dtype and layer.lora_A.device == base.weight.device
    bound = 1 / np.sqrt(50)                    # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(in), ..)
    assert np.abs(A).max() <= bound and np.abs(A).max() > 0.9 * bound
    assert abs(A.std() - bound / np.sqrt(3)) < 0.1 * bound
    np.testing.assert_array_equal(B, 0)
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad
    assert list(layer.state_dict()) == ["weight", "bias", "lora_A", "lora_B"]
    direct = LoRALinear(5, 3, r=2, alpha=4)
    assert direct.lora_A.shape == (5, 2) and direct.scaling == 2.0
    assert not direct.weight.requires_grad


def test_layer_gradcheck(float64):
    rng = np.random.default_rng(2)
    layer = LoRALinear.from_linear(Linear(4, 3), r=2, alpha=3)
    with mm.no_grad():
        layer.lora_B.copy_(mm.tensor(rng.standard_normal((2, 3))))
    x = mm.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    assert mm.gradcheck(lambda x, A, B: layer(x), [x, layer.lora_A, layer.lora_B])


def test_dropout_acts_on_lora_branch_only():
    rng = np.random.default_rng(3)
    base = Linear(6, 4)
    layer = LoRALinear.from_linear(base, r=2, dropout=0.5)
    x = mm.tensor(rng.standard_normal((8, 6)).astype(np.float32))
    ref = base(x).numpy()
    np.testing.assert_array_equal(layer(x).numpy(), ref)      # B = 0: dropout changes nothing
    with mm.no_grad():
        layer.lora_B.copy_(mm.tensor(rng.standard_normal((2, 4)).astype(np.float32)))
    y1, y2 = layer(x).numpy(), layer(x).numpy()                 # training: random masks
    assert not np.allclose(y1, y2)
    layer.eval()
    want = x.numpy() @ base.weight.numpy() + base.bias.numpy() \
        + layer.scaling * x.numpy() @ layer.lora_A.numpy() @ layer.lora_B.numpy()
    np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-5, atol=1e-5)


# -- whole models ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_default_targets_and_fresh_model_equals_base(kind):
    model = build(kind)
    before = run_np(kind, model)
    names = apply_lora(model, r=2, alpha=4)
    assert names == expected_targets(kind)
    assert sorted(lora_modules(model)) == sorted(names)
    assert all(type(m) is LoRALinear for m in lora_modules(model).values())
    for a, b in zip(before, run_np(kind, model)):
        np.testing.assert_array_equal(a, b)                    # B = 0: exactly the base model
    sizes = [(8, 24), (8, 8)] if body_of(kind) == "gpt" else [(8, 8), (8, 8)]
    assert lora_parameter_count(model) == 2 * sum(2 * (i + o) for i, o in sizes)


@pytest.mark.parametrize("kind", KINDS)
def test_merge_matches_unmerged_and_numpy(float64, kind):
    model = build(kind)
    apply_lora(model, r=3, alpha=5)
    randomize_lora(model, 7)
    base_state = host_state(model)
    unmerged = run_np(kind, model)
    # independent: a plain model whose target weights are W + (alpha/r) A @ B, made in NumPy
    plain = build(kind)
    merged_state = {k: v for k, v in base_state.items() if "lora_" not in k}
    for n in lora_modules(model):
        merged_state[f"{n}.weight"] = (base_state[f"{n}.weight"] + (5 / 3)
                                       * base_state[f"{n}.lora_A"] @ base_state[f"{n}.lora_B"])
    plain.load_state_dict(merged_state)
    for a, b in zip(unmerged, run_np(kind, plain)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert not np.allclose(unmerged[0], run_np(kind, build(kind))[0])   # the update matters
    merge_lora(model)
    assert all(m.merged for m in lora_modules(model).values())
    for a, b in zip(unmerged, run_np(kind, model)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    unmerge_lora(model)
    for k, v in host_state(model).items():
        np.testing.assert_allclose(v, base_state[k], rtol=0, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("kind", KINDS)
def test_only_lora_and_trainable_get_gradients(kind):
    model = build(kind).train()
    trainable = trainable_of(kind)
    apply_lora(model, r=2, trainable=trainable)
    randomize_lora(model, 1)
    lora_names = {f"{n}.{p}" for n in expected_targets(kind) for p in ("lora_A", "lora_B")}
    head_names = {n for n, _ in model.named_parameters()
                  if any(n.startswith(t + ".") for t in trainable)}
    assert len(head_names) == (2 if trainable else 0)
    want = lora_names | head_names
    assert {n for n, p in model.named_parameters() if p.requires_grad} == want
    rng = np.random.default_rng(0)
    outs = run(kind, model)
    loss = sum((o * mm.tensor(rng.standard_normal(o.shape).astype(np.float32))).sum()
               for o in outs)
    loss.backward()
    for n, p in model.named_parameters():
        if n in want:
            assert p.grad is not None and np.abs(p.grad.numpy()).sum() > 0, n
        else:
            assert p.grad is None, n
    assert model.num_parameters(trainable_only=True) == lora_parameter_count(model) + sum(
        p.size for n, p in model.named_parameters() if n in head_names)


def test_adam_steps_lower_the_loss_and_keep_base_weights():
    rng = np.random.default_rng(4)
    model = Sequential(Linear(6, 16), mm.nn.Tanh(), Linear(16, 3))
    base = host_state(model)
    apply_lora(model, r=2, alpha=2, target_modules=("0", "2"))
    x = rng.standard_normal((32, 6)).astype(np.float32)
    y = np.tanh(x @ rng.standard_normal((6, 3))).astype(np.float32)
    x_t, y_t = mm.tensor(x), mm.tensor(y)
    opt = mm.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    assert len(opt.param_groups[0]["params"]) == 4
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = ((model(x_t) - y_t) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    after = host_state(model)
    for k, v in base.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)              # bit-identical


def test_shared_linear_is_replaced_everywhere():
    class Tied(Module):
        def __init__(self):
            super().__init__()
            self.a = Linear(3, 3)
            self.b = self.a

        def forward(self, x):
            return self.b(self.a(x))

    model = Tied()
    assert apply_lora(model, target_modules="a") == ["a"]
    assert model.a is model.b and isinstance(model.b, LoRALinear)
    remove_lora(model)
    assert model.a is model.b and type(model.a) is Linear


# -- removing, saving, loading ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gpt", "bert", "seq-gpt", "tok-bert", "qa-gpt"])
def test_remove_lora_save_pretrained_round_trip(tmp_path, kind):
    model = build(kind)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    keys = list(model.state_dict())
    apply_lora(model, r=2, alpha=4, trainable=trainable_of(kind))
    randomize_lora(model, 5)
    merge_lora(model)
    merged = run_np(kind, model)
    remove_lora(model)
    assert not lora_modules(model)
    assert all(type(m) is not LoRALinear for m in model.modules())
    assert list(model.state_dict()) == keys
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for a, b in zip(merged, run_np(kind, model)):
        np.testing.assert_array_equal(a, b)
    model.save_pretrained(tmp_path / "merged")
    again = load_model(tmp_path / "merged").eval()
    assert type(again) is type(model)
    for a, b in zip(merged, run_np(kind, again)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_remove_lora_without_merge_gives_the_original_model():
    model = build("gpt")
    base = run_np("gpt", model)
    apply_lora(model, r=2)
    randomize_lora(model, 2)
    assert not np.allclose(run_np("gpt", model)[0], base[0])
    remove_lora(model, merge=False)
    np.testing.assert_array_equal(run_np("gpt", model)[0], base[0])
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("kind,trainable", [("gpt", ()), ("bert", ()),
                                            ("seq-gpt", ("classifier",)),
                                            ("tok-bert", ("classifier",)),
                                            ("qa-bert", ("qa_outputs", "base.pooler"))])
@pytest.mark.parametrize("fresh_has_lora", [False, True])
def test_save_load_adapters_round_trip(tmp_path, kind, trainable, fresh_has_lora):
    model = build(kind)
    names = apply_lora(model, r=2, alpha=3, dropout=0.1, trainable=trainable)
    randomize_lora(model, 9)
    with mm.no_grad():                      # the fine-tuned head differs from a fresh one
        for n, p in model.named_parameters():
            if any(n.startswith(t + ".") for t in trainable):
                p.copy_(mm.tensor(p.numpy() + 0.5))
    want = run_np(kind, model)
    save_adapters(model, tmp_path / "ad")
    cfg = json.loads((tmp_path / "ad" / ADAPTER_CONFIG_NAME).read_text(encoding="utf-8"))
    assert cfg["format"] == "minillm-lora-1"
    assert (cfg["r"], cfg["alpha"], cfg["dropout"]) == (2, 3, 0.1)
    assert cfg["modules"] == names and cfg["trainable"] == list(trainable)
    assert cfg["target_modules"] == list(default_target_modules(model))
    with np.load(tmp_path / "ad" / ADAPTER_WEIGHTS_NAME, allow_pickle=False) as npz:
        stored = set(npz.files)
    heads = {n for n, _ in model.named_parameters()
             if any(n.startswith(t + ".") for t in trainable)}
    assert stored == {f"{n}.{p}" for n in names for p in ("lora_A", "lora_B")} | heads

    fresh = build(kind)
    if fresh_has_lora:
        apply_lora(fresh, r=2, alpha=3, trainable=trainable)
    assert not np.allclose(run_np(kind, fresh)[0], want[0])
    assert load_adapters(fresh, tmp_path / "ad") is fresh
    assert sorted(lora_modules(fresh)) == sorted(names)
    for a, b in zip(want, run_np(kind, fresh)):
        np.testing.assert_array_equal(a, b)
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == \
        {n for n, p in model.named_parameters() if p.requires_grad}


# -- errors ----------------------------------------------------------------------------------------
def _gpt():
    return build("gpt")


def _gpt_lora():
    m = build("gpt")
    apply_lora(m, r=2)
    return m


def _merged_layer():
    layer = LoRALinear.from_linear(Linear(3, 2), r=1)
    layer.merge()
    return layer


def _train_merged():
    layer = _merged_layer()
    layer(mm.tensor(np.ones((1, 3), dtype=np.float32)))


ERRORS = [
    ("r0", lambda: apply_lora(_gpt(), r=0), ValueError, "r (the rank) must be >= 1"),
    ("r_float", lambda: apply_lora(_gpt(), r=2.0), TypeError, "r (the rank) must be an int"),
    ("r_layer", lambda: LoRALinear.from_linear(Linear(2, 2), r=-1), ValueError, "r (the rank)"),
    ("alpha0", lambda: apply_lora(_gpt(), alpha=0), ValueError, "alpha must be > 0"),
    ("alpha_neg", lambda: LoRALinear(2, 2, alpha=-1.0), ValueError, "alpha must be > 0"),
    ("dropout1", lambda: apply_lora(_gpt(), dropout=1.0), ValueError, "dropout must be in [0, 1)"),
    ("dropout_neg", lambda: apply_lora(_gpt(), dropout=-0.1), ValueError, "dropout must be in"),
    ("no_match", lambda: apply_lora(_gpt(), target_modules=("c_att",)), ValueError,
     "'c_att' matches no module of the GPT; its Linear layers are: h.0.attn.c_attn"),
    ("not_linear", lambda: apply_lora(_gpt(), target_modules=("attn",)), TypeError,
     "matches 'h.0.attn', a CausalSelfAttention, not a Linear"),
    ("bad_target", lambda: apply_lora(_gpt(), target_modules=("attn.",)), TypeError,
     "non-empty dotted name"),
    ("twice", lambda: apply_lora(_gpt_lora()), ValueError, "already has LoRA layers"),
    ("trainable_none", lambda: apply_lora(_gpt(), trainable=("classifier",)), ValueError,
     "'classifier' is not the start of any parameter name; names start with: wte, wpe, h"),
    ("no_default", lambda: apply_lora(LSTMLM(LSTMLMConfig(vocab_size=5, embed_dim=4,
                                                           hidden_size=4))),
     ValueError, "no default target_modules for a 'lstm_lm' model"),
    ("wrap_twice", lambda: LoRALinear.from_linear(_merged_layer()), TypeError,
     "already a LoRALinear"),
    ("wrap_other", lambda: LoRALinear.from_linear(mm.nn.LayerNorm(3)), TypeError,
     "expected an nn.Linear, the layer is a LayerNorm"),
    ("merge_twice", lambda: _merged_layer().merge(), RuntimeError, "already merged"),
    ("unmerge_unmerged", lambda: LoRALinear(3, 2).unmerge(), RuntimeError, "is not merged"),
    ("train_merged", _train_merged, RuntimeError, "call unmerge()"),
    ("merge_lora_twice", lambda: merge_lora(merge_lora(_gpt_lora())), RuntimeError,
     "are already merged"),
    ("unmerge_lora", lambda: unmerge_lora(_gpt_lora()), RuntimeError, "are not merged"),
    ("remove_none", lambda: remove_lora(_gpt()), ValueError, "has no LoRA layers"),
    ("save_none", lambda: save_adapters(_gpt(), "unused"), ValueError, "has no LoRA layers"),
]


@pytest.mark.parametrize("name,fn,exc,match", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(name, fn, exc, match):
    with pytest.raises(exc) as info:
        fn()
    assert match in str(info.value)


def _saved(tmp_path, kind="gpt", r=2):
    m = build(kind)
    apply_lora(m, r=r)
    return save_adapters(m, tmp_path / f"ad-{kind}-{r}")


def _rewrite_npz(directory, change):
    path = directory / ADAPTER_WEIGHTS_NAME
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    cfg_path = directory / ADAPTER_CONFIG_NAME
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.pop("sha256")                          # a hand-edited file without the checksum
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    return directory


def _edit_config(directory, **changes):
    cfg_path = directory / ADAPTER_CONFIG_NAME
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update(changes)
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    return directory


def _drop_key(arrays):
    del arrays["h.1.attn.c_proj.lora_B"]


def _reshape_key(arrays):
    arrays["h.0.attn.c_attn.lora_A"] = np.zeros((8, 3), dtype=np.float32)


def _f64(arrays):
    arrays["h.0.attn.c_attn.lora_A"] = arrays["h.0.attn.c_attn.lora_A"].astype(np.float64)


LOAD_ERRORS = [
    ("missing", lambda d: d / "nothing", FileNotFoundError, "adapter_config.json is missing"),
    ("format", lambda d: _edit_config(d, format="peft"), ValueError,
     "has format 'peft', expected 'minillm-lora-1'"),
    ("checksum", lambda d: (d / ADAPTER_WEIGHTS_NAME).write_bytes(
        (d / ADAPTER_WEIGHTS_NAME).read_bytes()[:-1] + b"x") and d, ValueError,
     "does not match"),
    ("missing_key", lambda d: _rewrite_npz(d, _drop_key), ValueError,
     "missing ['h.1.attn.c_proj.lora_B']"),
    ("shape", lambda d: _rewrite_npz(d, _reshape_key), ValueError,
     "'h.0.attn.c_attn.lora_A' in "),
    ("dtype", lambda d: _rewrite_npz(d, _f64), TypeError, "no silent cast"),
    ("targets", lambda d: _edit_config(d, target_modules=["mlp.c_fc"]), ValueError,
     "LoRA layers differ from those in"),
]


@pytest.mark.parametrize("name,prepare,exc,match", LOAD_ERRORS, ids=[e[0] for e in LOAD_ERRORS])
def test_load_adapter_errors(tmp_path, name, prepare, exc, match):
    directory = prepare(_saved(tmp_path))
    model = build("gpt")
    state = host_state(model)
    with pytest.raises(exc) as info:
        load_adapters(model, directory)
    assert match in str(info.value)
    assert not lora_modules(model)                       # left as it was
    for k, v in host_state(model).items():
        np.testing.assert_array_equal(v, state[k])
    assert all(p.requires_grad for p in model.parameters())


def test_load_adapter_model_mismatches(tmp_path):
    with pytest.raises(ValueError, match="adapters of a 'bert' model, this is a 'gpt' model"):
        load_adapters(build("gpt"), _saved(tmp_path, "bert"))
    other_rank = build("gpt")
    apply_lora(other_rank, r=3)
    with pytest.raises(ValueError, match="has r=3, alpha=16, the adapters in .* r=2"):
        load_adapters(other_rank, _saved(tmp_path, "gpt"))
    merged = merge_lora(_gpt_lora())
    with pytest.raises(RuntimeError, match="is merged; unmerge_lora"):
        load_adapters(merged, _saved(tmp_path, "gpt"))
