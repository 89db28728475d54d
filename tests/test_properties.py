"""Property tests (hypothesis): broadcasting, reductions and shape ops on random shapes.

derandomize=True makes every run draw the same examples, so the suite stays deterministic.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import minillm as mm

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: (np.ones_like(a * b), np.ones_like(a * b))),
    "sub": (lambda a, b: a - b, lambda a, b: (np.ones_like(a * b), -np.ones_like(a * b))),
    "mul": (lambda a, b: a * b, lambda a, b: (np.broadcast_to(b, (a * b).shape),
                                             np.broadcast_to(a, (a * b).shape))),
    "div": (lambda a, b: a / b, lambda a, b: (np.broadcast_to(1 / b, (a / b).shape),
                                             np.broadcast_to(-a / b ** 2, (a / b).shape))),
}


def _sum_to(g, shape):
    """Reference un-broadcast: sum over the leading and stretched axes."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, s in enumerate(shape):
        if s == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


@pytest.mark.parametrize("op", sorted(BINARY))
@SETTINGS
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
       seed=st.integers(0, 2 ** 16))
def test_binary_broadcasting_forward_and_backward(op, shapes, seed):
    fn, dfn = BINARY[op]
    rng = np.random.default_rng(seed)
    a_np = rng.uniform(0.5, 2, shapes.input_shapes[0])
    b_np = rng.uniform(0.5, 2, shapes.input_shapes[1])
    a = mm.tensor(a_np, requires_grad=True)
    b = mm.tensor(b_np, requires_grad=True)
    out = fn(a, b)
    assert out.shape == shapes.result_shape
    np.testing.assert_allclose(out.numpy(), fn(a_np, b_np), rtol=1e-6)
    out.sum().backward()
    da, db = dfn(a_np, b_np)
    np.testing.assert_allclose(a.grad.numpy(), _sum_to(da, a_np.shape), rtol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), _sum_to(db, b_np.shape), rtol=1e-5)
    assert a.grad.shape == a.shape and b.grad.shape == b.shape


@SETTINGS
@given(shape=array_shapes(min_dims=1, max_dims=4, max_side=4), data=st.data())
def test_reductions_match_numpy_and_gradients_have_input_shape(shape, data):
    ndim = len(shape)
    axes = data.draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    axis = tuple(axes) if axes else None
    keepdims = data.draw(st.booleans())
    x_np = np.random.default_rng(len(shape)).standard_normal(shape)
    for name in ("sum", "mean", "max"):
        x = mm.tensor(x_np, requires_grad=True)
        out = getattr(x, name)(axis=axis, keepdims=keepdims)
        ref = getattr(x_np, name)(axis=axis, keepdims=keepdims)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6)
        out.sum().backward()
        assert x.grad.shape == x.shape
        if name == "sum":
            np.testing.assert_allclose(x.grad.numpy(), np.ones(shape))


@SETTINGS
@given(shape=array_shapes(min_dims=1, max_dims=4, max_side=4), seed=st.integers(0, 1000))
def test_transpose_reshape_round_trip_and_gradient(shape, seed):
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal(shape)
    perm = tuple(rng.permutation(len(shape)))
    x = mm.tensor(x_np, requires_grad=True)
    y = x.transpose(*perm).reshape(-1)
    np.testing.assert_array_equal(y.numpy(), x_np.transpose(perm).reshape(-1))
    w = rng.standard_normal(y.shape)
    (y * mm.tensor(w, dtype=y.dtype)).sum().backward()
    inv = np.argsort(perm)
    np.testing.assert_allclose(x.grad.numpy(),
                               w.reshape(x_np.transpose(perm).shape).transpose(inv), rtol=1e-6)
