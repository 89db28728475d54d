"""Tests of minillm.nn: Module machinery, state dicts, devices, layers, containers, init.

Device-clean: data is made with NumPy, moved with ``mm.tensor``, read back with
``.numpy()`` / ``.item()`` only, so the file runs on cpu and on the strict 'fake' device.
"""
import math
from collections import OrderedDict

import numpy as np
import pytest

import minillm as mm
from minillm import nn
from minillm.nn import init

from conftest import DEVICE


def rng(seed=0):
    return np.random.default_rng(seed)


class Block(nn.Module):
    """A small nested module: Linear -> LayerNorm, plus a scale parameter and buffers."""

    def __init__(self, d=4):
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.ln = nn.LayerNorm(d)
        self.scale = nn.Parameter(mm.ones(d))
        self.register_buffer("steps", mm.zeros(1))
        self.register_buffer("cache", mm.zeros(d), persistent=False)

    def forward(self, x):
        return self.ln(self.fc(x)) * self.scale


class Net(nn.Module):
    def __init__(self, d=4, n=2):
        super().__init__()
        self.emb = nn.Embedding(10, d)
        self.blocks = nn.ModuleList([Block(d) for _ in range(n)])
        self.head = nn.Linear(d, 3, bias=False)

    def forward(self, ids):
        x = self.emb(ids)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


NET_PARAMS = ["emb.weight",
              "blocks.0.scale", "blocks.0.fc.weight", "blocks.0.fc.bias", "blocks.0.ln.weight",
              "blocks.0.ln.bias",
              "blocks.1.scale", "blocks.1.fc.weight", "blocks.1.fc.bias", "blocks.1.ln.weight",
              "blocks.1.ln.bias",
              "head.weight"]


# -- Parameter ----------------------------------------------------------------------------------
def test_parameter_basics():
    a = rng().standard_normal((2, 3)).astype(np.float32)
    p = nn.Parameter(a)
    assert isinstance(p, mm.Tensor) and p.requires_grad and p.is_leaf
    assert p.device == DEVICE and p.dtype == np.float32
    np.testing.assert_array_equal(p.numpy(), a)
    t = mm.tensor(a)
    q = nn.Parameter(t)
    assert q.data is t.data                     # shares memory, like torch.nn.Parameter(t)
    assert not nn.Parameter(t, requires_grad=False).requires_grad
    assert repr(q).startswith("Parameter containing:\ntensor(")
    with pytest.raises(TypeError, match="floating"):
        nn.Parameter(np.arange(3))


# -- registration and traversal -----------------------------------------------------------------
def test_named_parameters_nested():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == NET_PARAMS
    assert len(list(net.parameters())) == len(NET_PARAMS)
    assert [n for n, _ in net.named_children()] == ["emb", "blocks", "head"]
    assert [n for n, _ in net.named_modules()] == [
        "", "emb", "blocks", "blocks.0", "blocks.0.fc", "blocks.0.ln", "blocks.1", "blocks.1.fc",
        "blocks.1.ln", "head"]
    assert [n for n, _ in net.named_buffers()] == ["blocks.0.steps", "blocks.0.cache",
                                                   "blocks.1.steps", "blocks.1.cache"]
    assert [n for n, _ in net.named_parameters(prefix="model")][0] == "model.emb.weight"
    assert [n for n, _ in net.blocks[0].named_parameters(recurse=False)] == ["scale"]
    assert net.blocks[1].fc.weight is dict(net.named_parameters())["blocks.1.fc.weight"]


def test_tied_parameter_listed_once_but_saved_under_both_names():
    net = Net()
    net.head.weight = nn.Parameter(mm.zeros(4, 3))
    net.blocks[0].fc.weight = net.blocks[1].fc.weight          # tie two weights
    names = [n for n, _ in net.named_parameters()]
    assert "blocks.1.fc.weight" not in names and len(names) == len(NET_PARAMS) - 1
    assert "blocks.1.fc.weight" in net.state_dict()
    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, shared)
    assert len(list(seq.parameters())) == 2 and len(list(seq.modules())) == 2


def test_setattr_getattr_delattr():
    m = nn.Module()
    m.w = nn.Parameter(mm.zeros(2))
    m.sub = nn.Linear(2, 2)
    m.plain = 3
    m.t = mm.zeros(2)                       # a plain Tensor is an ordinary attribute
    assert list(m._parameters) == ["w"] and list(m._modules) == ["sub"]
    assert "t" not in m._parameters and m.plain == 3
    m.w = None                              # a declared-but-absent parameter
    assert m.w is None and [n for n, _ in m.named_parameters()] == ["sub.weight", "sub.bias"]
    with pytest.raises(TypeError, match="parameter 'w'"):
        m.w = mm.zeros(2)
    with pytest.raises(TypeError, match="sub-module 'sub'"):
        m.sub = 5
    m.register_buffer("buf", mm.zeros(1))
    with pytest.raises(TypeError, match="buffer 'buf'"):
        m.buf = np.zeros(1)
    del m.sub
    assert "sub" not in m._modules
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'sub'"):
        m.sub  # noqa: B018
    m.sub = nn.Parameter(mm.zeros(1))       # re-assigning a name moves it between registries
    assert "sub" in m._parameters
    assert "sub" in dir(m)


def test_register_errors():
    class Early(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)       # before super().__init__()

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Early()
    m = nn.Module()
    with pytest.raises(KeyError, match="contain no '.'"):
        m.register_buffer("a.b", mm.zeros(1))
    with pytest.raises(KeyError, match="already has an attribute"):
        m.register_parameter("train", nn.Parameter(mm.zeros(1)))
    with pytest.raises(TypeError, match="nn.Parameter"):
        m.register_parameter("w", mm.zeros(1))
    with pytest.raises(TypeError, match="Module"):
        m.add_module("x", 3)
    with pytest.raises(NotImplementedError, match="forward"):
        m(1)


def test_train_eval_propagate_and_dropout_identity_in_eval():
    net = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Dropout(0.5), nn.ReLU()))
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    x = mm.tensor(rng().standard_normal((8, 4)).astype(np.float32))
    drop = net[1][0]
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())
    net.train()
    assert all(m.training for m in net.modules())
    y = drop(x).numpy()
    kept = y != 0
    assert 0 < kept.sum() < y.size
    np.testing.assert_allclose(y[kept], 2 * x.numpy()[kept], rtol=1e-6)
    with pytest.raises(TypeError, match="bool"):
        net.train("no")


def test_zero_grad_and_requires_grad_():
    lin = nn.Linear(3, 2)
    x = mm.tensor(rng().standard_normal((4, 3)).astype(np.float32))
    lin(x).sum().backward()
    assert lin.weight.grad is not None
    lin.zero_grad(set_to_none=False)
    assert np.all(lin.weight.grad.numpy() == 0)
    lin.zero_grad()
    assert lin.weight.grad is None and lin.bias.grad is None
    lin.requires_grad_(False)
    assert not any(p.requires_grad for p in lin.parameters())


# -- state_dict --------------------------------------------------------------------------------
def test_state_dict_round_trip():
    a, b = Net(), Net()              # different random init (the RNG moved on)
    sd = a.state_dict()
    assert list(sd) == ["emb.weight", "blocks.0.scale", "blocks.0.steps", "blocks.0.fc.weight",
                        "blocks.0.fc.bias", "blocks.0.ln.weight", "blocks.0.ln.bias",
                        "blocks.1.scale", "blocks.1.steps", "blocks.1.fc.weight",
                        "blocks.1.fc.bias", "blocks.1.ln.weight", "blocks.1.ln.bias",
                        "head.weight"]                # non-persistent 'cache' left out
    assert all(not t.requires_grad and type(t) is mm.Tensor for t in sd.values())
    ids = mm.tensor(np.array([[1, 2, 3], [4, 5, 9]]))
    assert not np.allclose(a(ids).numpy(), b(ids).numpy())
    before = [p for p in b.parameters()]
    assert b.load_state_dict(sd) == ([], [])
    np.testing.assert_array_equal(a(ids).numpy(), b(ids).numpy())
    assert all(p is q for p, q in zip(before, b.parameters()))      # copied in place
    b.head.weight.numpy()                                           # still readable
    # values are copies: changing the source afterwards does not change b
    with mm.no_grad():
        a.head.weight.fill_(7.0)
    assert not np.any(b.head.weight.numpy() == 7.0)


def test_load_state_dict_from_numpy_arrays():
    a, b = Net(), Net()
    arrays = {k: v.numpy() for k, v in a.state_dict().items()}
    b.load_state_dict(arrays)
    for (k, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=k)
    assert b.head.weight.device == DEVICE


def _lin_state(**changes):
    sd = {"weight": np.zeros((3, 2), np.float32), "bias": np.zeros(2, np.float32)}
    sd.update(changes)
    return {k: v for k, v in sd.items() if v is not None}


LOAD_ERRORS = [
    ("missing", _lin_state(bias=None), ["missing keys", "'bias'"]),
    ("unexpected", _lin_state(extra=np.zeros(1, np.float32), other=np.zeros(1, np.float32)),
     ["unexpected keys", "'extra', 'other'"]),
    ("shape", _lin_state(weight=np.zeros((4, 2), np.float32)),
     ["shape mismatch for 'weight'", "expects (3, 2)", "has (4, 2)"]),
    ("transposed", _lin_state(weight=np.zeros((2, 3), np.float32)),
     ["shape mismatch for 'weight'", "transposed", "(in_features, out_features)"]),
    ("dtype", _lin_state(bias=np.zeros(2, np.float64)),
     ["dtype mismatch for 'bias'", "float32", "float64", "no silent cast"]),
    ("int into float", _lin_state(bias=np.zeros(2, np.int64)), ["dtype mismatch for 'bias'"]),
]


@pytest.mark.parametrize("case,state,fragments", LOAD_ERRORS, ids=[c[0] for c in LOAD_ERRORS])
def test_load_state_dict_errors(case, state, fragments):
    lin = nn.Linear(3, 2)
    before = lin.weight.numpy()
    with pytest.raises(nn.StateDictError) as e:
        lin.load_state_dict(state)
    msg = str(e.value)
    assert "state_dict for Linear" in msg
    for f in fragments:
        assert f in msg, (f, msg)
    np.testing.assert_array_equal(lin.weight.numpy(), before)     # nothing half-loaded


def test_load_state_dict_lists_every_problem_at_once():
    lin = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    state = {"0.weight": np.zeros((5, 2), np.float32), "1.weight": np.zeros(2, np.float64),
             "1.bias": np.zeros(2, np.float32), "2.weight": np.zeros(1, np.float32)}
    with pytest.raises(nn.StateDictError) as e:
        lin.load_state_dict(state)
    lines = str(e.value).splitlines()
    assert lines[1].startswith("  missing keys") and "'0.bias'" in lines[1]
    assert lines[2].startswith("  unexpected keys") and "'2.weight'" in lines[2]
    assert "shape mismatch for '0.weight'" in lines[3]
    assert "dtype mismatch for '1.weight'" in lines[4]


def test_load_state_dict_non_strict():
    lin = nn.Linear(3, 2)
    w = rng().standard_normal((3, 2)).astype(np.float32)
    res = lin.load_state_dict({"weight": w, "extra": np.zeros(1)}, strict=False)
    missing, unexpected = res
    assert missing == ["bias"] and unexpected == ["extra"] and res.missing_keys == ["bias"]
    np.testing.assert_array_equal(lin.weight.numpy(), w)
    with pytest.raises(nn.StateDictError, match="shape mismatch"):       # shapes still checked
        lin.load_state_dict({"weight": np.zeros((1, 1), np.float32)}, strict=False)
    with pytest.raises(TypeError, match="'weight' is a list"):
        lin.load_state_dict({"weight": [[0.0] * 2] * 3, "bias": np.zeros(2, np.float32)})
    with pytest.raises(TypeError, match="mapping"):
        lin.load_state_dict([("weight", w)])


def test_load_state_dict_integer_buffer():
    m = nn.Module()
    m.register_buffer("pos", mm.tensor(np.arange(4)))
    m.load_state_dict({"pos": np.arange(4, 8, dtype=np.int32)})      # int32 -> int64 is fine
    np.testing.assert_array_equal(m.pos.numpy(), np.arange(4, 8))
    assert m.pos.dtype == np.int64


def test_load_state_dict_refuses_a_narrowing_integer_cast():
    """int64 [1, 300, -200] into an int8 buffer would wrap to [1, 44, 56]: refused."""
    m = nn.Module()
    m.register_buffer("q", mm.tensor(np.zeros(3, np.int8)))
    with pytest.raises(nn.StateDictError, match="dtype mismatch for 'q'"):
        m.load_state_dict({"q": np.array([1, 300, -200], np.int64)})
    np.testing.assert_array_equal(m.q.numpy(), np.zeros(3, np.int8))


# -- devices and dtypes -------------------------------------------------------------------------
def test_to_device_keeps_parameter_identity_values_and_grads():
    net = Block()
    x = mm.tensor(rng().standard_normal((2, 4)).astype(np.float32))
    net(x).sum().backward()
    params = list(net.parameters())
    values = [p.numpy() for p in params]
    grads = [p.grad.numpy() for p in params]
    for dev in ("fake", "cpu", DEVICE):
        assert net.to(dev) is net
        assert [p for p in net.parameters()] == params and all(
            a is b for a, b in zip(net.parameters(), params))
        for p, v, g in zip(params, values, grads):
            assert p.device == dev and p.grad.device == dev
            np.testing.assert_array_equal(p.numpy(), v)
            np.testing.assert_array_equal(p.grad.numpy(), g)
        assert net.steps.device == dev and net.cache.device == dev
        y = net(mm.tensor(x.numpy(), device=dev))       # still computes on the new device
        assert y.device == dev


@pytest.mark.gpu
def test_module_on_cuda_matches_cpu():
    net = Block()
    net.to("cpu")
    x = rng().standard_normal((3, 4)).astype(np.float32)
    ref = net(mm.tensor(x, device="cpu")).numpy()
    w = net.fc.weight
    net.to("cuda")
    assert net.fc.weight is w and w.device == "cuda:0" and net.steps.device == "cuda:0"
    y = net(mm.tensor(x, device="cuda"))
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-6)
    y.sum().backward()
    assert w.grad.device == "cuda:0"
    net.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})   # host -> GPU
    lin = nn.Linear(3, 2, device="cuda")
    assert lin.weight.device == "cuda:0" and abs(lin.weight.numpy()).max() <= 1 / math.sqrt(3)
    net.to("cpu")
    assert w.device == "cpu" and w.grad.device == "cpu"
    np.testing.assert_allclose(net(mm.tensor(x, device="cpu")).numpy(), ref, rtol=1e-6)


def test_to_dtype():
    net = Block()
    net.register_buffer("ids", mm.tensor(np.arange(3)))
    net.to(np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.steps.dtype == np.float64 and net.ids.dtype == np.int64
    net.float()
    assert net.fc.weight.dtype == np.float32
    with pytest.raises(TypeError, match="floating"):
        net.to(dtype=np.int32)
    with pytest.raises(TypeError, match="device"):
        net.to(3.5)


def test_default_dtype_and_explicit_dtype_device(float64):
    for m in (nn.Linear(2, 3), nn.Embedding(4, 2), nn.LayerNorm(3)):
        assert all(p.dtype == np.float64 for p in m.parameters()), m
    mm.set_default_dtype(np.float32)
    assert nn.Linear(2, 3).weight.dtype == np.float32
    lin = nn.Linear(2, 3, dtype=np.float64, device="fake")
    assert lin.weight.dtype == np.float64 and lin.weight.device == "fake"
    ln = nn.LayerNorm(3, device="cpu")
    assert ln.weight.device == "cpu"


# -- layer forwards vs NumPy float64 ------------------------------------------------------------
LINEAR_CASES = [((5, 4), 4, 3, True), ((2, 3, 4), 4, 6, True), ((4,), 4, 2, False),
                ((3, 1), 1, 1, True)]


@pytest.mark.parametrize("xshape,fin,fout,bias", LINEAR_CASES)
def test_linear_forward(float64, xshape, fin, fout, bias):
    lin = nn.Linear(fin, fout, bias=bias)
    assert lin.weight.shape == (fin, fout)
    x = rng(1).standard_normal(xshape)
    ref = x @ lin.weight.numpy() + (lin.bias.numpy() if bias else 0)
    np.testing.assert_allclose(lin(mm.tensor(x)).numpy(), ref, rtol=1e-12, atol=1e-12)
    assert lin.bias is None or lin.bias.shape == (fout,)


def test_linear_default_init_bounds():
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w, b = lin.weight.numpy(), lin.bias.numpy()
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound
    assert abs(w.mean()) < 0.01 * bound


def test_embedding_forward_and_padding(float64):
    emb = nn.Embedding(7, 3, padding_idx=-1)          # normalised to 6, like PyTorch
    assert emb.padding_idx == 6
    table = emb.weight.numpy()
    np.testing.assert_array_equal(table[6], 0.0)
    ids = np.array([[0, 6, 2], [2, 2, 5]])
    out = emb(mm.tensor(ids))
    np.testing.assert_array_equal(out.numpy(), table[ids])
    g = rng().standard_normal((2, 3, 3))
    out.backward(mm.tensor(g))
    ref = np.zeros_like(table)
    np.add.at(ref, ids, g)
    ref[6] = 0.0                                       # the padding row gets no gradient
    np.testing.assert_allclose(emb.weight.grad.numpy(), ref, rtol=1e-12)


def test_embedding_init_statistics():
    w = nn.Embedding(1000, 64, padding_idx=0).weight.numpy()
    assert np.all(w[0] == 0)
    assert abs(w[1:].std() - 1) < 0.01 and abs(w[1:].mean()) < 0.01


def test_embedding_from_pretrained():
    table = rng().standard_normal((5, 3)).astype(np.float32)
    emb = nn.Embedding.from_pretrained(table)
    assert not emb.weight.requires_grad and emb.weight.device == DEVICE
    np.testing.assert_array_equal(emb(mm.tensor(np.array([4, 0]))).numpy(), table[[4, 0]])
    assert nn.Embedding.from_pretrained(mm.tensor(table), freeze=False).weight.requires_grad


LN_CASES = [((4, 5), 5, True, True), ((2, 3, 4), (3, 4), True, True), ((3, 6), 6, False, True),
            ((3, 6), 6, True, False)]


@pytest.mark.parametrize("xshape,norm,affine,bias", LN_CASES)
def test_layer_norm_forward(float64, xshape, norm, affine, bias):
    ln = nn.LayerNorm(norm, eps=1e-5, elementwise_affine=affine, bias=bias)
    nshape = (norm,) if isinstance(norm, int) else norm
    assert ln.normalized_shape == nshape
    r = rng(2)
    if affine:
        with mm.no_grad():
            ln.weight.copy_(mm.tensor(r.standard_normal(nshape)))
            if bias:
                ln.bias.copy_(mm.tensor(r.standard_normal(nshape)))
    else:
        assert ln.weight is None and ln.bias is None and not list(ln.parameters())
    if affine and not bias:
        assert ln.bias is None and [n for n, _ in ln.named_parameters()] == ["weight"]
    x = r.standard_normal(xshape) * 3 + 1
    axes = tuple(range(x.ndim - len(nshape), x.ndim))
    ref = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + 1e-5)
    if affine:
        ref = ref * ln.weight.numpy() + (ln.bias.numpy() if bias else 0)
    np.testing.assert_allclose(ln(mm.tensor(x)).numpy(), ref, rtol=1e-10, atol=1e-12)


ACTIVATIONS = [
    (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.Tanh(), np.tanh),
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (nn.GELU(approximate="tanh"),
     lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
    (nn.Softmax(axis=0), lambda x: np.exp(x) / np.exp(x).sum(0, keepdims=True)),
    (nn.Identity(54, unused=True), lambda x: x),
]


@pytest.mark.parametrize("module,ref", ACTIVATIONS, ids=[type(m).__name__ for m, _ in ACTIVATIONS])
def test_activation_modules(float64, module, ref):
    x = rng(3).standard_normal((4, 5))
    np.testing.assert_allclose(module(mm.tensor(x)).numpy(), ref(x), rtol=1e-10, atol=1e-12)


def test_gelu_exact_matches_erf():
    x = rng(3).standard_normal(50)
    erf = np.vectorize(math.erf)
    y = nn.GELU()(mm.tensor(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(y, 0.5 * x * (1 + erf(x / math.sqrt(2))), rtol=1e-5, atol=1e-6)


# -- gradcheck through layers -------------------------------------------------------------------
def test_gradcheck_linear(float64):
    lin = nn.Linear(4, 3)
    x = mm.tensor(rng().standard_normal((2, 5, 4)), requires_grad=True)
    assert mm.gradcheck(lambda x, w, b: lin(x), [x, lin.weight, lin.bias])


def test_gradcheck_layer_norm(float64):
    ln = nn.LayerNorm((2, 3))
    with mm.no_grad():
        ln.weight.copy_(mm.tensor(rng(1).standard_normal((2, 3))))
        ln.bias.copy_(mm.tensor(rng(2).standard_normal((2, 3))))
    x = mm.tensor(rng().standard_normal((4, 2, 3)), requires_grad=True)
    assert mm.gradcheck(lambda x, w, b: ln(x), [x, ln.weight, ln.bias])


def test_gradcheck_embedding(float64):
    emb = nn.Embedding(6, 3, padding_idx=1)
    ids = mm.tensor(np.array([[0, 1, 5], [5, 5, 2]]))
    assert mm.gradcheck(lambda w: emb(ids) * emb(ids), [emb.weight])


def test_gradcheck_small_network(float64):
    net = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.LayerNorm(4), nn.Linear(4, 2), nn.Tanh())
    x = mm.tensor(rng().standard_normal((3, 3)), requires_grad=True)
    assert mm.gradcheck(lambda x, *ps: net(x), [x, *net.parameters()])


# -- containers ---------------------------------------------------------------------------------
def test_sequential():
    a, b, c = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)
    seq = nn.Sequential(a, b, c)
    x = mm.tensor(rng().standard_normal((5, 3)).astype(np.float32))
    np.testing.assert_array_equal(seq(x).numpy(), c(b(a(x))).numpy())
    assert len(seq) == 3 and list(seq) == [a, b, c]
    assert seq[0] is a and seq[-1] is c
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert [n for n, _ in sub.named_children()] == ["1", "2"]
    named = nn.Sequential(OrderedDict([("fc", a), ("act", b)]))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    assert named.fc is a
    seq.append(nn.Tanh())
    assert len(seq) == 4
    del seq[0]
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"] and seq[0] is b
    with pytest.raises(IndexError, match="out of range"):
        seq[10]  # noqa: B018


def test_module_list():
    layers = nn.ModuleList([nn.Linear(2, 2)])
    layers.append(nn.ReLU()).extend([nn.Linear(2, 2), nn.Tanh()])
    layers += [nn.Identity()]
    assert len(layers) == 5 and isinstance(layers[1], nn.ReLU)
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear", "Tanh", "Identity"]
    assert isinstance(layers[-2:], nn.ModuleList) and len(layers[-2:]) == 2
    assert [n for n, _ in layers.named_parameters()] == ["0.weight", "0.bias", "2.weight",
                                                         "2.bias"]
    layers.insert(0, nn.Sigmoid())
    assert isinstance(layers[0], nn.Sigmoid) and layers[3].weight is not None
    layers[0] = nn.GELU()
    assert isinstance(layers[0], nn.GELU)


def test_module_dict():
    md = nn.ModuleDict({"enc": nn.Linear(2, 3)})
    md["dec"] = nn.Linear(3, 2)
    assert list(md) == ["enc", "dec"] and len(md) == 2 and "dec" in md
    assert [n for n, _ in md.named_parameters()][:2] == ["enc.weight", "enc.bias"]
    assert list(md.keys()) == ["enc", "dec"] and isinstance(list(md.values())[0], nn.Linear)
    assert md.pop("enc").out_features == 3 and list(md) == ["dec"]
    with pytest.raises(KeyError, match="'nope'"):
        md["nope"]  # noqa: B018


BAD_ARGS = [
    (lambda: nn.Linear(-1, 3), ValueError, "in_features"),
    (lambda: nn.Linear(3, -2), ValueError, "out_features"),
    (lambda: nn.Linear(2.5, 3), TypeError, "in_features"),
    (lambda: nn.Embedding(-5, 3), ValueError, "num_embeddings"),
    (lambda: nn.Embedding(5, -3), ValueError, "embedding_dim"),
    (lambda: nn.Embedding(5, 3, padding_idx=5), ValueError, "padding_idx"),
    (lambda: nn.LayerNorm(-4), ValueError, "normalized_shape"),
    (lambda: nn.LayerNorm("4"), TypeError, "normalized_shape"),
    (lambda: nn.LayerNorm(4, eps=0), ValueError, "eps"),
    (lambda: nn.Dropout(1.5), ValueError, "p "),
    (lambda: nn.Dropout(-0.1), ValueError, "p "),
    (lambda: nn.GELU("fast"), ValueError, "approximate"),
    (lambda: nn.Softmax(axis=None), TypeError, "axis"),
    (lambda: nn.ModuleList([nn.ReLU(), 3]), TypeError, "ModuleList.extend: expected an nn.Module"),
    (lambda: nn.ModuleList().append("relu"), TypeError, "ModuleList.append"),
    (lambda: nn.ModuleList(nn.ReLU()), TypeError, "iterable"),
    (lambda: nn.Sequential(nn.ReLU(), np.tanh), TypeError, "Sequential argument 1"),
    (lambda: nn.ModuleDict({"a": 1}), TypeError, "ModuleDict"),
]


@pytest.mark.parametrize("make,exc,fragment", BAD_ARGS, ids=[str(i) for i in range(len(BAD_ARGS))])
def test_bad_arguments(make, exc, fragment):
    with pytest.raises(exc, match=fragment):
        make()


def test_zero_sizes():
    lin = nn.Linear(0, 3)                       # allowed, as in PyTorch
    assert lin.weight.shape == (0, 3) and np.all(np.abs(lin.bias.numpy()) == 0)
    assert nn.Embedding(0, 4).weight.shape == (0, 4)
    lin = nn.Linear(3, 2)
    assert lin(mm.zeros(0, 3)).shape == (0, 2)  # an empty batch


# -- repr ---------------------------------------------------------------------------------------
REPRS = [
    (lambda: nn.Linear(4, 3), "Linear(in_features=4, out_features=3, bias=True)"),
    (lambda: nn.Linear(4, 3, bias=False), "Linear(in_features=4, out_features=3, bias=False)"),
    (lambda: nn.Embedding(10, 3, padding_idx=0), "Embedding(10, 3, padding_idx=0)"),
    (lambda: nn.LayerNorm(8), "LayerNorm((8,), eps=1e-05, elementwise_affine=True)"),
    (lambda: nn.Dropout(0.1), "Dropout(p=0.1)"),
    (lambda: nn.GELU(approximate="tanh"), "GELU(approximate='tanh')"),
    (lambda: nn.ReLU(), "ReLU()"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.Sequential(nn.ReLU(), nn.Dropout(0.5))),
     "Sequential(\n"
     "  (0): Linear(in_features=4, out_features=3, bias=True)\n"
     "  (1): Sequential(\n"
     "    (0): ReLU()\n"
     "    (1): Dropout(p=0.5)\n"
     "  )\n"
     ")"),
    (lambda: nn.ModuleDict({"proj": nn.Identity()}), "ModuleDict(\n  (proj): Identity()\n)"),
]


@pytest.mark.parametrize("make,text", REPRS, ids=[t.split("(")[0] + str(i)
                                                 for i, (_, t) in enumerate(REPRS)])
def test_repr(make, text):
    assert repr(make()) == text


def test_repr_of_custom_module():
    text = repr(Block())
    assert text.startswith("Block(\n  (fc): Linear(in_features=4, out_features=4, bias=True)\n")
    assert text.endswith("  (ln): LayerNorm((4,), eps=1e-05, elementwise_affine=True)\n)")


# -- init ---------------------------------------------------------------------------------------
FANS = [((3, 5), (3, 5)), ((7, 2), (7, 2)), ((2, 3, 5), (6, 10)), ((4, 2, 3, 5), (24, 40))]


@pytest.mark.parametrize("shape,fans", FANS)
def test_fan_in_and_fan_out(shape, fans):
    assert init._calculate_fan_in_and_fan_out(mm.zeros(*shape)) == fans


def test_fan_needs_two_dims():
    with pytest.raises(ValueError, match="at least 2 dims"):
        init._calculate_fan_in_and_fan_out(mm.zeros(4))


GAINS = [("linear", None, 1.0), ("sigmoid", None, 1.0), ("tanh", None, 5 / 3),
         ("relu", None, math.sqrt(2)), ("leaky_relu", None, math.sqrt(2 / (1 + 0.01 ** 2))),
         ("leaky_relu", 0.2, math.sqrt(2 / 1.04)), ("leaky_relu", 0, math.sqrt(2)),
         ("selu", None, 0.75)]


@pytest.mark.parametrize("name,param,gain", GAINS)
def test_calculate_gain(name, param, gain):
    assert init.calculate_gain(name, param) == pytest.approx(gain)


FIN, FOUT = 800, 400          # a (in, out) weight: fan_in = 800, fan_out = 400
INIT_CASES = [
    # (fn, kwargs, uniform bound or None, expected std)
    (init.uniform_, dict(a=-0.5, b=0.5), 0.5, 1 / math.sqrt(12)),
    (init.normal_, dict(mean=0.0, std=0.3), None, 0.3),
    (init.xavier_uniform_, {}, math.sqrt(6 / (FIN + FOUT)), math.sqrt(2 / (FIN + FOUT))),
    (init.xavier_uniform_, dict(gain=2.0), 2 * math.sqrt(6 / (FIN + FOUT)),
     2 * math.sqrt(2 / (FIN + FOUT))),
    (init.xavier_normal_, {}, None, math.sqrt(2 / (FIN + FOUT))),
    (init.kaiming_uniform_, {}, math.sqrt(6 / FIN), math.sqrt(2 / FIN)),
    (init.kaiming_uniform_, dict(mode="fan_out", nonlinearity="relu"), math.sqrt(6 / FOUT),
     math.sqrt(2 / FOUT)),
    (init.kaiming_uniform_, dict(a=math.sqrt(5)), 1 / math.sqrt(FIN), 1 / math.sqrt(3 * FIN)),
    (init.kaiming_normal_, {}, None, math.sqrt(2 / FIN)),
    (init.kaiming_normal_, dict(mode="fan_out", nonlinearity="tanh"), None, 5 / 3 / math.sqrt(FOUT)),
]


@pytest.mark.parametrize("fn,kwargs,bound,std", INIT_CASES,
                         ids=[f"{c[0].__name__}{i}" for i, c in enumerate(INIT_CASES)])
def test_init_statistics(fn, kwargs, bound, std):
    t = mm.zeros(FIN, FOUT)
    assert fn(t, **kwargs) is t
    w = t.numpy()
    assert abs(w.std() - std) < 0.01 * std, (w.std(), std)
    assert abs(w.mean() - kwargs.get("mean", 0.0)) < 0.01 * std + 1e-6
    if bound is not None:
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound


def test_init_is_seeded_in_place_and_outside_the_graph():
    p = nn.Parameter(mm.zeros(3, 4))
    data = p.data
    mm.manual_seed(123)
    init.xavier_uniform_(p)
    first = p.numpy()
    assert p.data is data and p.requires_grad and p.is_leaf and p.grad_fn is None
    mm.manual_seed(123)
    init.xavier_uniform_(p)
    np.testing.assert_array_equal(p.numpy(), first)
    init.constant_(p, 0.25)
    assert np.all(p.numpy() == 0.25)
    init.zeros_(p)
    assert np.all(p.numpy() == 0)
    init.ones_(p)
    assert np.all(p.numpy() == 1)


def test_init_keeps_dtype(float64):
    t = mm.zeros(5, 5)
    init.normal_(t)
    assert t.dtype == np.float64
    h = mm.zeros(5, 5, dtype=np.float16)
    init.uniform_(h, -1, 1)
    assert h.dtype == np.float16 and np.abs(h.numpy()).max() <= 1


INIT_ERRORS = [
    (lambda: init.normal_(mm.tensor(np.arange(4))), TypeError, "floating"),
    (lambda: init.uniform_(np.zeros(3)), TypeError, "expected a Tensor"),
    (lambda: init.kaiming_uniform_(mm.zeros(3, 3), mode="fan_avg"), ValueError, "mode"),
    (lambda: init.kaiming_normal_(mm.zeros(3, 3), nonlinearity="swish"), ValueError, "swish"),
    (lambda: init.xavier_uniform_(mm.zeros(3)), ValueError, "at least 2 dims"),
    (lambda: init.uniform_(mm.zeros(3), 1, 0), ValueError, "a <= b"),
]


@pytest.mark.parametrize("call,exc,fragment", INIT_ERRORS,
                         ids=[str(i) for i in range(len(INIT_ERRORS))])
def test_init_errors(call, exc, fragment):
    with pytest.raises(exc, match=fragment):
        call()


# -- against PyTorch (skipped when it is not installed) ----------------------------------------
def _torch_param(torch, array):
    return torch.nn.Parameter(torch.tensor(array, dtype=torch.float64))


def test_against_torch_linear_layernorm_embedding(float64):
    torch = pytest.importorskip("torch")
    r = rng(5)
    # Linear: our weight is PyTorch's transposed
    lin = nn.Linear(4, 3)
    tlin = torch.nn.Linear(4, 3).double()
    with torch.no_grad():
        tlin.weight.copy_(torch.tensor(lin.weight.numpy().T))
        tlin.bias.copy_(torch.tensor(lin.bias.numpy()))
    # LayerNorm with non-trivial affine parameters
    ln = nn.LayerNorm(3)
    tln = torch.nn.LayerNorm(3).double()
    lw, lb = r.standard_normal(3), r.standard_normal(3)
    ln.load_state_dict({"weight": lw, "bias": lb})
    tln.load_state_dict({"weight": torch.tensor(lw), "bias": torch.tensor(lb)})
    # Embedding with a padding row
    emb = nn.Embedding(6, 4, padding_idx=2)
    temb = torch.nn.Embedding(6, 4, padding_idx=2).double()
    with torch.no_grad():
        temb.weight.copy_(torch.tensor(emb.weight.numpy()))

    ids = np.array([[0, 2, 5], [2, 3, 3]])
    g = r.standard_normal((2, 3, 3))
    x = mm.tensor(ids)
    y = ln(lin(emb(x)))
    y.backward(mm.tensor(g))
    ty = tln(tlin(temb(torch.tensor(ids))))
    ty.backward(torch.tensor(g))

    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-6, atol=1e-12)
    pairs = [(lin.weight, tlin.weight.grad.numpy().T), (lin.bias, tlin.bias.grad.numpy()),
             (ln.weight, tln.weight.grad.numpy()), (ln.bias, tln.bias.grad.numpy()),
             (emb.weight, temb.weight.grad.numpy())]
    for p, ref in pairs:
        np.testing.assert_allclose(p.grad.numpy(), ref, rtol=1e-6, atol=1e-12)


def test_against_torch_init_formulas():
    torch = pytest.importorskip("torch")
    for name in ("linear", "tanh", "relu", "selu"):
        assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    assert init.calculate_gain("leaky_relu", 0.3) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", 0.3))
    # our (in, out) layout gives the fans of PyTorch's (out, in) layout, swapped back
    t = torch.empty(5, 3)          # PyTorch: out=5, in=3
    assert init._calculate_fan_in_and_fan_out(mm.zeros(3, 5)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(t)
