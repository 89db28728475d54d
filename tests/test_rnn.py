"""nn.RNN and nn.LSTM: gradchecks, the naive per-step cells, PyTorch parity, states, dropout.

Device-clean: data is made with NumPy, moved with ``mm.tensor`` and read back with
``.numpy()`` only, so the file runs on cpu and on the strict 'fake' device.
"""
import numpy as np
import pytest

import minillm as mm
from minillm.nn.rnn import LSTM, RNN, lstm_cell, rnn_cell


def rng(seed=0):
    return np.random.default_rng(seed)


def _t(a, grad=False):
    return mm.tensor(np.asarray(a), requires_grad=grad)


def _inputs(T, B, I, H, L, batch_first, seed=0, cell=False):
    r = rng(seed)
    x = r.standard_normal((B, T, I) if batch_first else (T, B, I))
    h0 = r.standard_normal((L, B, H))
    c0 = r.standard_normal((L, B, H)) if cell else None
    return x, h0, c0


# -- gradchecks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_lstm_gradcheck_multilayer(float64, batch_first, with_state):
    T, B, I, H, L = 3, 2, 3, 2, 2
    lstm = LSTM(I, H, num_layers=L, batch_first=batch_first)
    x, h0, c0 = _inputs(T, B, I, H, L, batch_first, cell=True)
    x = _t(x, True)
    if with_state:
        h0, c0 = _t(h0, True), _t(c0, True)

        def fn(x, h0, c0, *params):
            out, (h, c) = lstm(x, (h0, c0))
            return out, h, c
        inputs = [x, h0, c0, *lstm.parameters()]
    else:
        def fn(x, *params):
            out, (h, c) = lstm(x)
            return out, h, c
        inputs = [x, *lstm.parameters()]
    assert mm.gradcheck(fn, inputs)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_rnn_gradcheck_multilayer(float64, nonlinearity, batch_first):
    T, B, I, H, L = 3, 2, 3, 3, 2
    mm.manual_seed(1)
    rnn = RNN(I, H, num_layers=L, nonlinearity=nonlinearity, batch_first=batch_first)
    x, h0, _ = _inputs(T, B, I, H, L, batch_first)
    x, h0 = _t(x, True), _t(h0, True)

    def fn(x, h0, *params):
        return rnn(x, h0)
    assert mm.gradcheck(fn, [x, h0, *rnn.parameters()])


def test_lstm_gradcheck_without_bias_and_unbatched(float64):
    lstm = LSTM(2, 3, num_layers=2, bias=False)
    assert [n for n, _ in lstm.named_parameters()] == [
        "weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"]
    r = rng(3)
    x = _t(r.standard_normal((4, 2)), True)                  # unbatched (T, input_size)
    h0, c0 = _t(r.standard_normal((2, 3)), True), _t(r.standard_normal((2, 3)), True)

    def fn(x, h0, c0, *params):
        out, (h, c) = lstm(x, (h0, c0))
        assert out.shape == (4, 3) and h.shape == (2, 3) and c.shape == (2, 3)
        return out, h, c
    assert mm.gradcheck(fn, [x, h0, c0, *lstm.parameters()])


def test_single_step_sequence(float64):
    lstm = LSTM(2, 2)
    x = _t(rng(4).standard_normal((1, 3, 2)), True)

    def fn(x, *params):
        out, (h, c) = lstm(x)
        return out, h, c
    assert mm.gradcheck(fn, [x, *lstm.parameters()])


# -- the fused layers equal the naive per-step compositions ------------------------------------
def _naive_lstm(lstm, x, h0, c0):
    """Time-major multi-layer LSTM from lstm_cell (no dropout)."""
    hs, cs = [], []
    for k in range(lstm.num_layers):
        w_ih, w_hh, b = lstm.layer_weights(k)
        h, c = h0[k], c0[k]
        outs = []
        for t in range(x.shape[0]):
            h, c = lstm_cell(x[t], h, c, w_ih, w_hh, b)
            outs.append(h)
        x = mm.stack(outs)
        hs.append(h)
        cs.append(c)
    return x, mm.stack(hs), mm.stack(cs)


def test_fused_lstm_matches_naive_cells_values_and_grads(float64):
    T, B, I, H, L = 5, 3, 4, 3, 2
    lstm = LSTM(I, H, num_layers=L)
    x, h0, c0 = _inputs(T, B, I, H, L, False, seed=5, cell=True)
    r = rng(6)
    proj = [r.standard_normal((T, B, H)), r.standard_normal((L, B, H)),
            r.standard_normal((L, B, H))]
    results = []
    for run in (lambda a, b, c: lstm(a, (b, c)), None):
        xs, hs, cs = _t(x, True), _t(h0, True), _t(c0, True)
        if run is None:
            out, h, c = _naive_lstm(lstm, xs, hs, cs)
        else:
            out, (h, c) = run(xs, hs, cs)
        lstm.zero_grad()
        loss = sum((o * _t(p)).sum() for o, p in zip((out, h, c), proj))
        loss.backward()
        results.append([out.numpy(), h.numpy(), c.numpy(), xs.grad.numpy(), hs.grad.numpy(),
                         cs.grad.numpy()] + [p.grad.numpy() for p in lstm.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_fused_rnn_matches_naive_cells(float64):
    T, B, I, H = 4, 2, 3, 3
    rnn = RNN(I, H, nonlinearity="relu")
    x = rng(7).standard_normal((T, B, I))
    xs = _t(x, True)
    out, h = rnn(xs)
    (out * out).sum().backward()
    fused = [out.numpy(), h.numpy(), xs.grad.numpy()] + [p.grad.numpy() for p in rnn.parameters()]
    rnn.zero_grad()
    xs = _t(x, True)
    w_ih, w_hh, b = rnn.layer_weights(0)
    hh = mm.zeros(B, H)
    outs = []
    for t in range(T):
        hh = rnn_cell(xs[t], hh, w_ih, w_hh, b, "relu")
        outs.append(hh)
    out2 = mm.stack(outs)
    (out2 * out2).sum().backward()
    naive = [out2.numpy(), hh.numpy()[None], xs.grad.numpy()] + \
        [p.grad.numpy() for p in rnn.parameters()]
    for a, b in zip(fused, naive):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_lstm_forward_matches_numpy_reference():
    """Values checked against a plain NumPy loop written from the equations (float32)."""
    T, B, I, H = 6, 2, 3, 4
    lstm = LSTM(I, H)
    x = rng(8).standard_normal((T, B, I)).astype(np.float32)
    out, (h_n, c_n) = lstm(_t(x))
    assert out.dtype == np.float32 and h_n.dtype == np.float32
    w_ih, w_hh, b = (p.numpy().astype(np.float64) for p in lstm.layer_weights(0))
    sig = lambda z: 1 / (1 + np.exp(-z))   # noqa: E731
    h, c = np.zeros((B, H)), np.zeros((B, H))
    ref = []
    for t in range(T):
        z = x[t] @ w_ih + h @ w_hh + b
        zi, zf, zg, zo = np.split(z, 4, axis=1)
        i, f, g, o = sig(zi), sig(zf), np.tanh(zg), sig(zo)
        c = f * c + i * g
        h = o * np.tanh(c)
        ref.append(h)
    np.testing.assert_allclose(out.numpy(), np.stack(ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n.numpy()[0], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_n.numpy()[0], c, rtol=1e-5, atol=1e-6)


# -- PyTorch parity --------------------------------------------------------------------------------
def _port(ours, theirs, torch, split=0.3):
    """Copy our weights into a torch RNN/LSTM: transpose, and split our one bias in two."""
    with torch.no_grad():
        for k in range(ours.num_layers):
            w_ih, w_hh, b = ours.layer_weights(k)
            getattr(theirs, f"weight_ih_l{k}").copy_(torch.tensor(w_ih.numpy().T))
            getattr(theirs, f"weight_hh_l{k}").copy_(torch.tensor(w_hh.numpy().T))
            if b is not None:
                getattr(theirs, f"bias_ih_l{k}").copy_(torch.tensor(split * b.numpy()))
                getattr(theirs, f"bias_hh_l{k}").copy_(torch.tensor((1 - split) * b.numpy()))


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["lstm", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_pytorch_values_and_gradients(float64, kind, batch_first, bias):
    torch = pytest.importorskip("torch")
    T, B, I, H, L = 5, 3, 4, 6, 2
    if kind == "lstm":
        ours = LSTM(I, H, num_layers=L, bias=bias, batch_first=batch_first)
        theirs = torch.nn.LSTM(I, H, num_layers=L, bias=bias, batch_first=batch_first,
                               dtype=torch.float64)
    else:
        nl = kind.split("_")[1]
        ours = RNN(I, H, num_layers=L, nonlinearity=nl, bias=bias, batch_first=batch_first)
        theirs = torch.nn.RNN(I, H, num_layers=L, nonlinearity=nl, bias=bias,
                              batch_first=batch_first, dtype=torch.float64)
    _port(ours, theirs, torch)
    x, h0, c0 = _inputs(T, B, I, H, L, batch_first, seed=9, cell=True)
    r = rng(10)
    proj_out = r.standard_normal((B, T, H) if batch_first else (T, B, H))
    proj_h, proj_c = r.standard_normal((L, B, H)), r.standard_normal((L, B, H))

    xs, hs, cs = _t(x, True), _t(h0, True), _t(c0, True)
    xt, ht, ct = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    if kind == "lstm":
        out, (h, c) = ours(xs, (hs, cs))
        out_t, (h_t, c_t) = theirs(xt, (ht, ct))
        loss = (out * _t(proj_out)).sum() + (h * _t(proj_h)).sum() + (c * _t(proj_c)).sum()
        loss_t = (out_t * torch.tensor(proj_out)).sum() + (h_t * torch.tensor(proj_h)).sum() \
            + (c_t * torch.tensor(proj_c)).sum()
        _close(c.numpy(), c_t.detach().numpy())
    else:
        out, h = ours(xs, hs)
        out_t, h_t = theirs(xt, ht)
        loss = (out * _t(proj_out)).sum() + (h * _t(proj_h)).sum()
        loss_t = (out_t * torch.tensor(proj_out)).sum() + (h_t * torch.tensor(proj_h)).sum()
    _close(out.numpy(), out_t.detach().numpy())
    _close(h.numpy(), h_t.detach().numpy())
    loss.backward()
    loss_t.backward()
    _close(xs.grad.numpy(), xt.grad.numpy())
    _close(hs.grad.numpy(), ht.grad.numpy())
    if kind == "lstm":
        _close(cs.grad.numpy(), ct.grad.numpy())
    for k in range(L):
        w_ih, w_hh, b = ours.layer_weights(k)
        _close(w_ih.grad.numpy(), getattr(theirs, f"weight_ih_l{k}").grad.numpy().T)
        _close(w_hh.grad.numpy(), getattr(theirs, f"weight_hh_l{k}").grad.numpy().T)
        if bias:
            _close(b.grad.numpy(), getattr(theirs, f"bias_ih_l{k}").grad.numpy())
            _close(b.grad.numpy(), getattr(theirs, f"bias_hh_l{k}").grad.numpy())


@pytest.mark.torch
def test_lstm_without_initial_state_matches_pytorch(float64):
    torch = pytest.importorskip("torch")
    ours = LSTM(3, 4, num_layers=3)
    theirs = torch.nn.LSTM(3, 4, num_layers=3, dtype=torch.float64)
    _port(ours, theirs, torch)
    x = rng(11).standard_normal((7, 2, 3))
    out, (h, c) = ours(_t(x))
    out_t, (h_t, c_t) = theirs(torch.tensor(x))
    for a, b in ((out, out_t), (h, h_t), (c, c_t)):
        _close(a.numpy(), b.detach().numpy())


# -- shapes, states, modes -------------------------------------------------------------------------
def test_shapes_names_and_init():
    lstm = LSTM(5, 8, num_layers=2, batch_first=True)
    assert [(n, p.shape) for n, p in lstm.named_parameters()] == [
        ("weight_ih_l0", (5, 32)), ("weight_hh_l0", (8, 32)), ("bias_l0", (32,)),
        ("weight_ih_l1", (8, 32)), ("weight_hh_l1", (8, 32)), ("bias_l1", (32,))]
    bound = 1 / np.sqrt(8)
    for p in lstm.parameters():
        v = p.numpy()
        assert p.dtype == np.float32 and np.abs(v).max() <= bound and np.abs(v).max() > bound / 2
    out, (h, c) = lstm(mm.randn(4, 6, 5))
    assert out.shape == (4, 6, 8) and h.shape == (2, 4, 8) and c.shape == (2, 4, 8)
    np.testing.assert_array_equal(out.numpy()[:, -1], h.numpy()[-1])
    rnn = RNN(5, 7, num_layers=3)
    assert [(n, p.shape) for n, p in rnn.named_parameters()][:3] == [
        ("weight_ih_l0", (5, 7)), ("weight_hh_l0", (7, 7)), ("bias_l0", (7,))]
    out, h = rnn(mm.randn(6, 4, 5))
    assert out.shape == (6, 4, 7) and h.shape == (3, 4, 7)
    assert "num_layers=3" in repr(rnn) and "batch_first=True" in repr(lstm)


def test_float32_throughout():
    lstm = LSTM(3, 4, num_layers=2)
    x = mm.tensor(rng(12).standard_normal((5, 2, 3)).astype(np.float32), requires_grad=True)
    out, (h, c) = lstm(x)
    (out.sum() + h.sum() + c.sum()).backward()
    assert out.dtype == h.dtype == c.dtype == np.float32
    assert x.grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in lstm.parameters())


def test_frozen_weights_get_no_gradient_and_the_input_gradient_is_unchanged():
    lstm = LSTM(3, 4, num_layers=2)
    x = rng(16).standard_normal((5, 2, 3)).astype(np.float32)
    grads = []
    for frozen in (False, True):
        lstm.zero_grad()
        lstm.requires_grad_(not frozen)
        xs = _t(x, True)
        out, (h, c) = lstm(xs)
        (out.sum() + c.sum()).backward()
        grads.append(xs.grad.numpy())
    assert all(p.grad is None for p in lstm.parameters())
    np.testing.assert_array_equal(grads[0], grads[1])


def test_state_carried_across_chunks_equals_one_pass():
    """Running a sequence in two chunks with the state carried equals one pass; with the
    detach pattern (truncated BPTT) gradients stop at the chunk boundary."""
    lstm = LSTM(3, 5, num_layers=2, batch_first=True)
    x = rng(13).standard_normal((2, 9, 3)).astype(np.float32)
    full, (h, c) = lstm(_t(x))
    a, state = lstm(_t(x[:, :4]))
    state = tuple(s.detach() for s in state)
    assert not any(s.requires_grad for s in state)
    xb = _t(x[:, 4:], True)
    b, (h2, c2) = lstm(xb, state)
    np.testing.assert_allclose(np.concatenate([a.numpy(), b.numpy()], axis=1), full.numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h2.numpy(), h.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c2.numpy(), c.numpy(), rtol=1e-5, atol=1e-6)
    b.sum().backward()
    assert xb.grad is not None and lstm.weight_ih_l0.grad is not None
    rnn = RNN(3, 4, batch_first=True)
    full, h = rnn(_t(x))
    a, state = rnn(_t(x[:, :4]))
    b, h2 = rnn(_t(x[:, 4:]), state.detach())
    np.testing.assert_allclose(h2.numpy(), h.numpy(), rtol=1e-5, atol=1e-6)


def test_dropout_between_layers_only_and_only_in_training():
    x = _t(rng(14).standard_normal((6, 3, 4)).astype(np.float32))
    one = LSTM(4, 5, num_layers=1, dropout=0.5)          # a single layer: nothing to drop
    a, _ = one(x)
    one.eval()
    b, _ = one(x)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    two = LSTM(4, 5, num_layers=2, dropout=0.5)
    two.eval()
    e1, _ = two(x)
    e2, _ = two(x)
    np.testing.assert_array_equal(e1.numpy(), e2.numpy())     # eval: deterministic
    two.train()
    t1, _ = two(x)
    assert not np.allclose(t1.numpy(), e1.numpy())
    # the first layer's output is never dropped: layer 0 alone is unaffected by the mode
    w = {k: v for k, v in two.state_dict().items() if k.endswith("l0")}
    first = LSTM(4, 5)
    first.load_state_dict({k: w[k] for k in w})
    f1, (h1, _) = first(x)
    _, (h_tr, _) = two(x)
    np.testing.assert_allclose(h_tr.numpy()[0], h1.numpy()[0], rtol=1e-6)


def test_port_from_pytorch_state_dict_layout():
    """The documented porting recipe: transpose weights, bias = b_ih + b_hh."""
    r = rng(15)
    H, I = 3, 2
    sd = {"weight_ih_l0": r.standard_normal((4 * H, I)),
          "weight_hh_l0": r.standard_normal((4 * H, H)),
          "bias_ih_l0": r.standard_normal(4 * H), "bias_hh_l0": r.standard_normal(4 * H)}
    lstm = LSTM(I, H)
    lstm.load_state_dict({"weight_ih_l0": sd["weight_ih_l0"].T.astype(np.float32),
                          "weight_hh_l0": sd["weight_hh_l0"].T.astype(np.float32),
                          "bias_l0": (sd["bias_ih_l0"] + sd["bias_hh_l0"]).astype(np.float32)})
    np.testing.assert_allclose(lstm.bias_l0.numpy(), sd["bias_ih_l0"] + sd["bias_hh_l0"],
                               rtol=1e-6)


@pytest.mark.parametrize("make,call,exc,fragment", [
    (lambda: LSTM(3, 4), lambda m: m(mm.randn(5, 2, 2)), ValueError, "input_size=3"),
    (lambda: LSTM(3, 4), lambda m: m(mm.randn(5)), ValueError, "does not match"),
    (lambda: LSTM(3, 4), lambda m: m(mm.randn(0, 2, 3)), ValueError, "empty"),
    (lambda: LSTM(3, 4), lambda m: m(mm.randn(5, 2, 3), mm.zeros(1, 2, 4)), TypeError,
     "tuple (h_0, c_0)"),
    (lambda: LSTM(3, 4, num_layers=2), lambda m: m(mm.randn(5, 2, 3), (mm.zeros(1, 2, 4),
                                                                         mm.zeros(1, 2, 4))),
     ValueError, "expected (2, 2, 4)"),
    (lambda: LSTM(3, 4), lambda m: m(mm.randn(5, 2, 3, dtype=np.float64)), TypeError,
     "float64"),
    (lambda: RNN(3, 4), lambda m: m(mm.randn(5, 2, 3), mm.zeros(1, 3, 4)), ValueError,
     "expected (1, 2, 4)"),
    (lambda: RNN(3, 4, nonlinearity="sigmoid"), None, ValueError, "nonlinearity"),
    (lambda: LSTM(3, 4, dropout=1.5), None, ValueError, "dropout"),
    (lambda: LSTM(3, 0), None, ValueError, "hidden_size"),
    (lambda: LSTM(3, 4, num_layers=0), None, ValueError, "num_layers"),
], ids=["input-size", "1-d", "empty", "state-not-tuple", "state-layers", "dtype", "rnn-state",
        "nonlinearity", "dropout", "hidden", "layers"])
def test_bad_input_is_a_clear_error(make, call, exc, fragment):
    with pytest.raises(exc) as info:
        m = make()
        call(m)
    assert fragment in str(info.value)
