"""Unstructured magnitude pruning (minillm.finetune.prune), checked against NumPy.

Device-clean: data is made with NumPy, moved with ``mm.tensor`` and read back with
``.numpy()`` / ``.item()`` only, so the file also runs on the strict 'fake' device.
"""
import math

import numpy as np
import pytest

import minillm as mm
from minillm import nn
from minillm.finetune.prune import PrunedLinear, magnitude_prune, remove_pruning, sparsity
from minillm.models import BertConfig, ModelForSequenceClassification

SHAPES = [(6, 5), (5, 7), (7, 3)]


def mlp(scales=(1.0, 1.0, 1.0), seed=0, bias=True):
    """Linear-ReLU-Linear-ReLU-Linear with N(0, scale^2) weights of distinct magnitudes."""
    mm.manual_seed(seed)
    layers = [nn.Linear(i, o, bias=bias) for i, o in SHAPES]
    r = np.random.default_rng(seed)
    with mm.no_grad():
        for lin, s in zip(layers, scales):
            lin.weight.copy_(mm.tensor((s * r.standard_normal(lin.weight.shape))
                                       .astype(np.float32)))
            if bias:
                lin.bias.copy_(mm.tensor(r.standard_normal(lin.bias.shape).astype(np.float32)))
    return nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])


LINEARS = ["0", "2", "4"]


def weights(model):
    return [model[int(n)].weight.numpy() for n in LINEARS]


def masks(model):
    return [model[int(n)].weight_mask.numpy() for n in LINEARS]


def np_forward(ws, bs, x):
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(zip(ws, bs)):
        h = h @ w.astype(np.float64) + b.astype(np.float64)
        if i < len(ws) - 1:
            h = np.maximum(h, 0)
    return h


def _x(seed=1, n=4):
    return np.random.default_rng(seed).standard_normal((n, SHAPES[0][0])).astype(np.float32)


def expected_masks(ws, s, scope, dead=None):
    """NumPy reference: zero the round(s * n) smallest |w| (already dead first), stable order."""
    dead = dead or [np.zeros(w.shape, bool) for w in ws]
    scores = [np.where(d, -1.0, np.abs(w).astype(np.float64)).ravel() for w, d in zip(ws, dead)]
    out = []
    if scope == "global":
        flat = np.concatenate(scores)
        k = math.floor(s * flat.size + 0.5)
        keep = np.ones(flat.size)
        keep[np.argsort(flat, kind="stable")[:k]] = 0
        off = np.cumsum([0] + [w.size for w in ws])
        return [keep[off[i]:off[i + 1]].reshape(w.shape) for i, w in enumerate(ws)]
    for w, sc in zip(ws, scores):
        keep = np.ones(sc.size)
        keep[np.argsort(sc, kind="stable")[:math.floor(s * sc.size + 0.5)]] = 0
        out.append(keep.reshape(w.shape))
    return out


PRUNE_CASES = [(s, scope) for scope in ("global", "layer") for s in (0.0, 0.1, 0.37, 0.5, 0.9)]


@pytest.mark.parametrize("s,scope", PRUNE_CASES, ids=[f"{sc}-{s}" for s, sc in PRUNE_CASES])
def test_prunes_exactly_the_smallest_weights(s, scope):
    model = mlp(scales=(1.0, 0.3, 2.0))
    ws = weights(model)
    params = [model[int(n)].weight for n in LINEARS]
    r = magnitude_prune(model, s, scope=scope)
    want = expected_masks(ws, s, scope)
    for n, got, m in zip(LINEARS, masks(model), want):
        assert isinstance(model[int(n)], PrunedLinear)
        np.testing.assert_array_equal(got, m)
        assert model[int(n)].weight_mask.dtype == np.float32
    total = sum(w.size for w in ws)
    if scope == "global":
        assert r["pruned"] == math.floor(s * total + 0.5)
    else:
        assert r["pruned"] == sum(math.floor(s * w.size + 0.5) for w in ws)
        for n, w in zip(LINEARS, ws):
            assert r["layers"][n] == math.floor(s * w.size + 0.5) / w.size
    assert r["total"] == total and r["sparsity"] == r["pruned"] / total
    assert sparsity(model) == r["sparsity"]
    assert r["layers"] == {n: float(np.mean(m == 0)) for n, m in zip(LINEARS, want)}
    # same Parameter objects, pruned weights zeroed, the others untouched
    for n, p, w, m in zip(LINEARS, params, ws, want):
        assert model[int(n)].weight is p
        np.testing.assert_array_equal(p.numpy(), w * m)


def test_ties_are_broken_by_position():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    r = np.random.default_rng(2)
    ws = [r.choice([-1.0, 0.5, 1.0], size=s).astype(np.float32) for s in ((3, 4), (4, 2))]
    with mm.no_grad():
        for lin, w in zip(model, ws):
            lin.weight.copy_(mm.tensor(w))
    magnitude_prune(model, 0.45)
    for lin, m in zip(model, expected_masks(ws, 0.45, "global")):
        np.testing.assert_array_equal(lin.weight_mask.numpy(), m)


def test_output_uses_the_masked_weight():
    model = mlp()
    x = _x()
    magnitude_prune(model, 0.5)
    ws = [w * m for w, m in zip(weights(model), masks(model))]
    bs = [model[int(n)].bias.numpy() for n in LINEARS]
    np.testing.assert_allclose(model(mm.tensor(x)).numpy(), np_forward(ws, bs, x),
                               rtol=1e-5, atol=1e-5)
    # even if the raw weight drifts off zero, the masked entries contribute nothing
    with mm.no_grad():
        w0 = model[0].weight
        w0.copy_(mm.tensor(w0.numpy() + 5.0 * (masks(model)[0] == 0)))
    np.testing.assert_allclose(model(mm.tensor(x)).numpy(), np_forward(ws, bs, x),
                               rtol=1e-5, atol=1e-5)


def _loss(model, x, g):
    return (model(mm.tensor(x)) * mm.tensor(g)).sum()


def test_pruned_weights_get_zero_gradient_and_others_match_an_unpruned_model():
    model = mlp(seed=3)
    magnitude_prune(model, 0.6, scope="layer")
    ms = masks(model)
    # an unpruned model holding the same effective weights
    ref = mlp(seed=3)
    with mm.no_grad():
        for n, m in zip(LINEARS, ms):
            ref[int(n)].weight.copy_(mm.tensor(ref[int(n)].weight.numpy() * m))
    x = _x(4, n=5)
    g = np.random.default_rng(5).standard_normal((5, SHAPES[-1][1])).astype(np.float32)
    _loss(model, x, g).backward()
    _loss(ref, x, g).backward()
    for n, m in zip(LINEARS, ms):
        got, want = model[int(n)].weight.grad.numpy(), ref[int(n)].weight.grad.numpy()
        assert np.all(got[m == 0] == 0)
        np.testing.assert_allclose(got, want * m, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model[int(n)].bias.grad.numpy(),
                                   ref[int(n)].bias.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert model[0].weight_mask.grad is None


def test_pruned_linear_gradcheck(float64):
    lin = nn.Linear(4, 3)
    pl = PrunedLinear.from_linear(lin)
    pl.weight_mask.copy_(mm.tensor((np.arange(12).reshape(4, 3) % 3 != 0).astype(np.float64)))
    x = mm.tensor(np.random.default_rng(6).standard_normal((2, 4)), requires_grad=True)
    assert mm.gradcheck(lambda x, w, b: mm.functional.linear(x, w * pl.weight_mask, b),
                        (x, pl.weight, pl.bias))


@pytest.mark.parametrize("existing_optimizer", [False, True], ids=["fresh", "with_momentum"])
def test_adamw_step_keeps_pruned_weights_at_zero(existing_optimizer):
    model = mlp(seed=7)
    x = _x(8)
    g = np.random.default_rng(9).standard_normal((4, SHAPES[-1][1])).astype(np.float32)
    opt = mm.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    if existing_optimizer:                     # momentum from before the pruning
        for _ in range(2):
            opt.zero_grad()
            _loss(model, x, g).backward()
            opt.step()
    magnitude_prune(model, 0.5)
    if not existing_optimizer:
        opt = mm.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    before, mask_before = [w.copy() for w in weights(model)], masks(model)
    for _ in range(3):
        opt.zero_grad()
        _loss(model, x, g).backward()
        opt.step()
    for w_old, w, m, m_old in zip(before, weights(model), masks(model), mask_before):
        np.testing.assert_array_equal(m, m_old)           # the mask is not trained
        assert not np.array_equal(w[m == 1], w_old[m == 1])   # the others did train
        if existing_optimizer:    # old momentum moves raw pruned weights; the mask hides them
            assert np.any(w[m == 0] != 0)
        else:                     # zero grad, zero moments, decay of zero: exactly zero
            assert np.all(w[m == 0] == 0)
    # the effective weight W * M is what the model computes with: pruned entries are zero
    ws = [w * m for w, m in zip(weights(model), masks(model))]
    bs = [model[int(n)].bias.numpy() for n in LINEARS]
    np.testing.assert_allclose(model(mm.tensor(x)).numpy(), np_forward(ws, bs, x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_cumulative_pruning_keeps_old_zeros(scope):
    model = mlp(seed=10)
    magnitude_prune(model, 0.3, scope=scope)
    first = masks(model)
    # the optimizer may move pruned raw weights off zero; they must stay pruned anyway
    with mm.no_grad():
        for n, m in zip(LINEARS, first):
            w = model[int(n)].weight
            w.copy_(mm.tensor(w.numpy() + 100.0 * (m == 0)))
    ws = weights(model)
    r = magnitude_prune(model, 0.6, scope=scope)
    second = masks(model)
    want = expected_masks(ws, 0.6, scope, dead=[m == 0 for m in first])
    for a, b, m in zip(first, second, want):
        assert np.all(b[a == 0] == 0)
        np.testing.assert_array_equal(b, m)
    total = sum(w.size for w in ws)
    if scope == "global":
        assert r["pruned"] == math.floor(0.6 * total + 0.5)
    with pytest.raises(ValueError, match="pruning is cumulative and never revives weights"):
        magnitude_prune(model, 0.2, scope=scope)
    for a, b in zip(second, masks(model)):              # the refused call changed nothing
        np.testing.assert_array_equal(a, b)


def test_global_and_layer_scope_differ_on_layers_of_different_scales():
    scales = (1.0, 0.01, 1.0)             # the middle layer's weights are 100x smaller
    ws = weights(mlp(scales=scales))
    r_global = magnitude_prune(mlp(scales=scales), 0.3, scope="global")
    r_layer = magnitude_prune(mlp(scales=scales), 0.3, scope="layer")
    for r, scope in ((r_global, "global"), (r_layer, "layer")):
        want = expected_masks(ws, 0.3, scope)
        assert r["layers"] == {n: float(np.mean(m == 0)) for n, m in zip(LINEARS, want)}
    # global: 26 of 86 weights, nearly all from the small layer (35 weights)
    assert r_global["pruned"] == 26 and r_global["layers"]["2"] >= 24 / 35
    assert r_global["layers"]["0"] <= 2 / 30 and r_global["layers"]["4"] <= 2 / 21
    # layer: 30% of each
    assert r_layer["layers"] == {"0": 9 / 30, "2": 11 / 35, "4": 6 / 21}


def test_modules_and_skip_select_layers():
    model = mlp()
    r = magnitude_prune(model, 0.5, modules=("0", "4"), skip=("4",))
    assert list(r["layers"]) == ["0"]
    assert isinstance(model[0], PrunedLinear) and type(model[2]) is nn.Linear
    assert type(model[4]) is nn.Linear
    assert r["total"] == 30 and r["pruned"] == 15


def test_head_model_skip_classifier_and_state_dict_keys():
    cfg = ModelForSequenceClassification.config_class(
        base_model_type="bert", num_labels=3,
        base_config=BertConfig(vocab_size=13, hidden_size=8, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=16,
                               max_position_embeddings=8).to_dict())
    model = ModelForSequenceClassification(cfg).eval()
    keys = set(model.state_dict())
    linear = {n: m.weight.numpy().size for n, m in model.named_modules()
              if type(m) is nn.Linear and n != "classifier"}
    r = magnitude_prune(model, 0.25, skip=("classifier",))
    assert type(model.classifier) is nn.Linear
    assert list(r["layers"]) == list(linear) and r["total"] == sum(linear.values())
    assert set(model.state_dict()) == keys | {f"{n}.weight_mask" for n in linear}
    ids = mm.tensor(np.random.default_rng(3).integers(1, 13, size=(2, 5)))
    with mm.no_grad():
        before = model(ids).numpy()
    assert remove_pruning(model) == list(linear)
    assert set(model.state_dict()) == keys
    with mm.no_grad():
        np.testing.assert_allclose(model(ids).numpy(), before, rtol=1e-6, atol=1e-6)


def test_remove_pruning_preserves_outputs_and_bakes_the_mask_in():
    model = mlp(seed=11)
    params = list(model.parameters())
    magnitude_prune(model, 0.4)
    ms = masks(model)
    with mm.no_grad():                     # a drifted raw weight: the mask must be baked in
        w = model[2].weight
        w.copy_(mm.tensor(w.numpy() + 3.0 * (ms[1] == 0)))
    x = _x(12)
    y = model(mm.tensor(x)).numpy()
    assert remove_pruning(model) == LINEARS
    for n, m in zip(LINEARS, ms):
        layer = model[int(n)]
        assert type(layer) is nn.Linear and not hasattr(layer, "weight_mask")
        np.testing.assert_array_equal(layer.weight.numpy()[m == 0], 0)
    assert all(a is b for a, b in zip(model.parameters(), params))
    np.testing.assert_array_equal(model(mm.tensor(x)).numpy(), y)
    assert sparsity(model) == 0.0
    with pytest.raises(ValueError, match="has no PrunedLinear layers"):
        remove_pruning(model)


def test_from_linear_shares_parameters():
    lin = nn.Linear(4, 3, bias=False)
    pl = PrunedLinear.from_linear(lin)
    assert pl.weight is lin.weight and pl.bias is None
    assert list(pl.state_dict()) == ["weight", "weight_mask"]
    np.testing.assert_array_equal(pl.weight_mask.numpy(), np.ones((4, 3), np.float32))
    x = _x(13)[:, :4]
    np.testing.assert_array_equal(pl(mm.tensor(x)).numpy(), lin(mm.tensor(x)).numpy())
    fresh = PrunedLinear(4, 3)
    assert fresh.weight_mask.shape == (4, 3) and len(list(fresh.parameters())) == 2


ERROR_CASES = [
    ("negative", dict(sparsity=-0.1), ValueError, r"sparsity must be in \[0, 1\)"),
    ("one", dict(sparsity=1.0), ValueError, r"sparsity must be in \[0, 1\)"),
    ("nan", dict(sparsity=float("nan")), ValueError, r"sparsity must be in \[0, 1\)"),
    ("string", dict(sparsity="0.5"), TypeError, "sparsity must be a number"),
    ("bool", dict(sparsity=True), TypeError, "sparsity must be a number"),
    ("scope", dict(sparsity=0.5, scope="row"), ValueError,
     r"scope must be one of \['global', 'layer'\], got 'row'"),
    ("modules", dict(sparsity=0.5, modules=("9",)), ValueError,
     r"modules entries \['9'\] match no Linear layer; the Linear layers are \['0', '2', '4'\]"),
    ("skip", dict(sparsity=0.5, skip=("x",)), ValueError, r"skip entries \['x'\] match no"),
    ("skip_str", dict(sparsity=0.5, skip="0"), TypeError, r"write skip=\('0',\)"),
    ("all_skipped", dict(sparsity=0.5, skip=("0", "2", "4")), ValueError,
     "every Linear layer was left out"),
]


@pytest.mark.parametrize("name,kw,exc,match", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors(name, kw, exc, match):
    model = mlp()
    with pytest.raises(exc, match=match):
        magnitude_prune(model, **kw)
    assert all(type(model[int(n)]) is nn.Linear for n in LINEARS)   # nothing changed


def test_errors_on_models():
    with pytest.raises(ValueError, match="has no Linear layers"):
        magnitude_prune(nn.Sequential(nn.Embedding(4, 3), nn.LayerNorm(3)), 0.5)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        magnitude_prune([nn.Linear(2, 2)], 0.5)
    with pytest.raises(ValueError, match="cannot be replaced in place"):
        magnitude_prune(nn.Linear(2, 2), 0.5)
    with pytest.raises(TypeError, match="expects an nn.Linear; it is already a PrunedLinear"):
        PrunedLinear.from_linear(PrunedLinear(2, 2))
    with pytest.raises(TypeError, match="expects an nn.Linear; got LayerNorm"):
        PrunedLinear.from_linear(nn.LayerNorm(2))

    class Adapter(nn.Linear):
        pass

    with pytest.raises(TypeError, match="layer '0' is a Adapter, a subclass of Linear"):
        magnitude_prune(nn.Sequential(Adapter(2, 2)), 0.5)
    with pytest.raises(ValueError, match="has no PrunedLinear layers"):
        remove_pruning(mlp())
    assert sparsity(mlp()) == 0.0
