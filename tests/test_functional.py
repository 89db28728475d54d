"""Fused ops agree with their naive compositions; dropout; attention masks; loss edge cases."""
import math

import numpy as np
import pytest

import minillm as mm
import minillm.functional as F


def _t(a, grad=True):
    return mm.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# naive compositions of primitive ops, as the chapters teach them
def naive_softmax(x):
    e = (x - x.max(axis=-1, keepdims=True)).exp()
    return e / e.sum(axis=-1, keepdims=True)


def naive_cross_entropy(z, t_np):
    """log-softmax, then the mean of -log p[target] via a one-hot mask (teaching version)."""
    logp = naive_softmax(z).log()
    onehot = np.eye(z.shape[-1])[t_np]
    return -(logp * mm.tensor(onehot)).sum() / len(t_np)


def naive_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / (var + eps).sqrt() * w + b


def naive_attention(q, k, v, mask_np):
    s = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
    s = s.masked_fill(mm.tensor(~mask_np), -1e30)
    return naive_softmax(s) @ v


def naive_gelu_tanh(x):
    return 0.5 * x * (1 + (math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)).tanh())


CASES = [
    ("softmax", lambda x: F.softmax(x), naive_softmax, [(4, 6)]),
    ("cross_entropy", lambda z: F.cross_entropy(z, mm.tensor(np.array([0, 3, 5, 1]))),
     lambda z: naive_cross_entropy(z, np.array([0, 3, 5, 1])), [(4, 6)]),
    ("layer_norm", lambda x, w, b: F.layer_norm(x, w, b), naive_layer_norm, [(3, 8), (8,), (8,)]),
    ("attention", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
     lambda q, k, v: naive_attention(q, k, v, np.tril(np.ones((5, 5), bool))), [(2, 5, 4)] * 3),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), naive_gelu_tanh, [(3, 5)]),
]


@pytest.mark.parametrize("name,fused,naive,shapes", CASES, ids=[c[0] for c in CASES])
def test_fused_equals_naive(name, fused, naive, shapes, float64):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in shapes]
    outs, grads = [], []
    for fn in (fused, naive):
        ts = [_t(a) for a in arrays]
        out = fn(*ts)
        out.backward(mm.tensor(np.ones(out.shape)))
        outs.append(out.numpy())
        grads.append([t.grad.numpy() for t in ts])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_dropout_scaling_mask_and_modes(float64):
    x = _t(np.ones((200, 50)))
    assert F.dropout(x, 0.3, training=False) is x and F.dropout(x, 0.0) is x
    y = F.dropout(x, 0.3)
    yv = y.numpy()
    kept = yv != 0
    np.testing.assert_allclose(yv[kept], 1 / 0.7)
    assert abs(kept.mean() - 0.7) < 0.01
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), yv)     # d/dx (x * m / (1-p)) = m / (1-p)
    assert (F.dropout(x, 1.0).numpy() == 0).all()
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        F.dropout(x, 1.5)


def test_dropout_is_seeded_and_gradchecks_with_a_fixed_seed(float64):
    x = _t(np.random.default_rng(1).standard_normal((4, 5)))

    def f(t):
        mm.manual_seed(7)            # same mask on every call -> a deterministic function
        return F.dropout(t, 0.4) * t
    np.testing.assert_array_equal(f(x).numpy(), f(x).numpy())
    assert mm.gradcheck(f, [x])


def test_attention_dropout_gradcheck_with_fixed_seed(float64):
    rng = np.random.default_rng(2)
    q, k, v = (_t(rng.standard_normal((2, 3, 4))) for _ in range(3))

    def f(q, k, v):
        mm.manual_seed(3)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.3, is_causal=True)
    assert mm.gradcheck(f, [q, k, v])


def test_attention_fully_masked_row_gives_zeros_not_nan(float64):
    rng = np.random.default_rng(0)
    q, k, v = (_t(rng.standard_normal((3, 4))) for _ in range(3))
    mask = np.ones((3, 3), bool)
    mask[1] = False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mm.tensor(mask))
    assert np.all(out.numpy()[1] == 0) and np.isfinite(out.numpy()).all()
    out.sum().backward()
    assert all(np.isfinite(t.grad.numpy()).all() for t in (q, k, v))


def test_attention_weights_rows_sum_to_one_under_causal_mask(float64):
    rng = np.random.default_rng(0)
    q, k = _t(rng.standard_normal((5, 4))), _t(rng.standard_normal((5, 4)))
    eye = mm.tensor(np.eye(5))
    w = F.scaled_dot_product_attention(q, k, eye, is_causal=True).numpy()   # V = I returns P
    np.testing.assert_allclose(w.sum(-1), 1.0)
    assert np.all(np.triu(w, 1) == 0)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_cross_entropy_all_ignored_is_nan_like_pytorch(float64):
    z = _t(np.zeros((2, 3)))
    loss = F.cross_entropy(z, mm.tensor(np.array([-100, -100])))
    assert math.isnan(loss.item())


def test_embedding_padding_and_repeats(float64):
    w = _t(np.arange(12.0).reshape(4, 3))
    ids = mm.tensor(np.array([[1, 1, 0], [3, 1, 0]]))
    out = F.embedding(ids, w, padding_idx=0)
    np.testing.assert_array_equal(out.numpy()[1, 0], [9.0, 10.0, 11.0])
    out.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy()[:, 0], [0.0, 3.0, 0.0, 1.0])


def test_cross_entropy_gradient_is_softmax_minus_onehot(float64):
    rng = np.random.default_rng(0)
    z = _t(rng.standard_normal((3, 5)))
    t = np.array([4, 0, 2])
    F.cross_entropy(z, mm.tensor(t), reduction="sum").backward()
    p = np.exp(z.numpy()) / np.exp(z.numpy()).sum(-1, keepdims=True)
    np.testing.assert_allclose(z.grad.numpy(), p - np.eye(5)[t], rtol=1e-12)
