"""Bad input gives a clear error that names the op, the shapes/dtypes/devices and the fix."""
import numpy as np
import pytest

import minillm as mm
import minillm.functional as F


def _f(*shape):
    return mm.tensor(np.ones(shape, dtype=np.float32))


def _i(*vals):
    return mm.tensor(np.array(vals))


def _char_tokenizer():
    from minillm.data import CharTokenizer
    return CharTokenizer.train(["abc"])


BAD = [
    ("add shapes", lambda: _f(2, 3) + _f(4), ValueError, ["Add", "(2, 3)", "(4,)"]),
    ("matmul inner", lambda: _f(2, 3) @ _f(4, 5), ValueError, ["MatMul", "(2, 3) @ (4, 5)"]),
    ("matmul scalar", lambda: mm.matmul(_f(3), 2.0), TypeError, ["matmul", "scalars"]),
    ("reshape", lambda: _f(2, 3).reshape(4, 2), ValueError, ["Reshape", "(2, 3)"]),
    ("bad axis", lambda: _f(2, 3).sum(axis=2), ValueError, ["axis 2 is out of range", "2 dims"]),
    ("squeeze non-1", lambda: _f(2, 3).squeeze(0), ValueError, ["squeeze", "size 2"]),
    ("split uneven", lambda: _f(5, 2).split(2), ValueError, ["split", "size 5", "2 equal"]),
    ("stack shapes", lambda: mm.stack([_f(2), _f(3)]), ValueError, ["stack", "same shape"]),
    ("concat dtypes", lambda: mm.concatenate([_f(2), mm.tensor(np.ones(2))]), TypeError,
     ["concatenate", "dtype mismatch"]),
    ("where cond", lambda: mm.where(_f(2), _f(2), 0.0), TypeError, ["where", "bool"]),
    ("host array on fake", lambda: mm.tensor([1.0], device="fake") + np.ones(1), TypeError,
     ["host", "fake"]),
    ("ce target dtype", lambda: F.cross_entropy(_f(2, 3), _f(2)), TypeError,
     ["cross_entropy", "integer class indices"]),
    ("ce target shape", lambda: F.cross_entropy(_f(2, 3, 4), _i(0, 1)), ValueError,
     ["target shape (2,)", "(2, 3)", "LAST axis"]),
    ("ce target range", lambda: F.cross_entropy(_f(2, 3), _i(0, 3)), IndexError,
     ["[0, 3)", "[3]"]),
    ("ce negative target", lambda: F.cross_entropy(_f(2, 3), _i(-1, 0)), IndexError, ["[-1]"]),
    ("ce reduction", lambda: F.cross_entropy(_f(2, 3), _i(0, 1), reduction="avg"), ValueError,
     ["reduction", "'avg'"]),
    ("embedding range", lambda: F.embedding(_i(0, 5), _f(4, 2)), IndexError, ["[0, 4)", "[5]"]),
    ("embedding float ids", lambda: F.embedding(_f(2), _f(4, 2)), TypeError, ["integer"]),
    ("layer_norm shape", lambda: F.layer_norm(_f(2, 3), _f(4), _f(4)), ValueError,
     ["layer_norm", "(2, 3)", "(4,)"]),
    ("linear features", lambda: F.linear(_f(2, 3), _f(4, 5)), ValueError,
     ["Linear", "3 features", "(4, 5)"]),
    ("sdpa dims", lambda: F.scaled_dot_product_attention(_f(2, 3), _f(2, 4), _f(2, 4)),
     ValueError, ["same last dim"]),
    ("sdpa mask+causal", lambda: F.scaled_dot_product_attention(
        _f(2, 3), _f(2, 3), _f(2, 3), attn_mask=mm.tensor(np.ones((2, 2), bool)), is_causal=True),
     ValueError, ["either attn_mask or is_causal"]),
    ("bce range", lambda: F.binary_cross_entropy(_f(2) * 2, _f(2)), ValueError, ["[0, 1]"]),
    ("gelu mode", lambda: F.gelu(_f(2), approximate="fast"), ValueError, ["'none' or 'tanh'"]),
    ("item size", lambda: _f(2).item(), ValueError, ["exactly one element", "(2,)"]),
    ("gradcheck float32", lambda: mm.gradcheck(lambda x: x * 2,
                                               [mm.tensor([1.0], requires_grad=True)]),
     TypeError, ["float64"]),
    ("tensor of strings", lambda: mm.tensor(["a"]), TypeError, ["cannot make a tensor"]),
    ("negative shape", lambda: mm.zeros(2, -1), ValueError, ["non-negative"]),
    # mistakes the tutorial's code makes: scores where labels or ids are expected
    ("accuracy on logits", lambda: mm.metrics.accuracy(np.array([0, 1]), np.ones((2, 3))),
     ValueError, ["accuracy", "(2, 3)", "argmax over the last axis"]),
    ("accuracy on 2-d labels", lambda: mm.metrics.accuracy(np.zeros((2, 3), int),
                                                           np.zeros((2, 3), int)),
     ValueError, ["flatten it"]),
    ("decode logits", lambda: _char_tokenizer().decode(np.ones((4, 3))), TypeError,
     ["decode", "floating point", "logits", "argmax"]),
    ("decode 2-d ids", lambda: _char_tokenizer().decode(np.ones((2, 3), dtype=np.int64)),
     ValueError, ["decode_batch"]),
]


@pytest.mark.parametrize("name,call,exc,fragments", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clear_error(name, call, exc, fragments):
    with pytest.raises(exc) as info:
        call()
        mm.backend.flush_checks()    # value checks on a GPU-like device report at the next sync
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{name}: {frag!r} not in error message {msg!r}"


def test_gradcheck_failure_names_input_index_and_values(float64):
    class WrongSquare(mm.Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, g):
            return g * self.x          # should be 2 x

    x = mm.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    with pytest.raises(mm.GradcheckError) as info:
        mm.gradcheck(lambda t: WrongSquare.apply(t), [x])
    msg = str(info.value)
    assert "input 0" in msg and "index (" in msg and "analytic" in msg and "numeric" in msg

