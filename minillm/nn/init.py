"""Weight initialisation (``nn.init``), with PyTorch's names and formulas.

Every function fills a floating Tensor **in place**, outside the autograd graph, with
numbers from the random generator of the tensor's own device
(``backend.generator(t.device)``, seeded by ``mm.manual_seed``), and returns the tensor.

Fans. minillm's ``Linear.weight`` is stored as ``(in_features, out_features)`` so that
``y = x @ W + b`` — the transpose of PyTorch's ``(out, in)``. Accordingly, for a 2-D
tensor **fan_in = shape[0] and fan_out = shape[1]**. For a tensor with more dims, the
last two dims are read as ``(in, out)`` and both fans are multiplied by the product of
the leading dims (the "receptive field"). With this convention ``xavier_*`` and
``kaiming_*`` give a minillm weight exactly the distribution PyTorch gives the
transposed weight.

* Xavier/Glorot (Glorot & Bengio, 2010): ``std = gain * sqrt(2 / (fan_in + fan_out))``.
* Kaiming/He (He et al., 2015): ``std = gain / sqrt(fan)``, ``fan`` = fan_in or fan_out.
* A uniform distribution U(-a, a) has ``std = a / sqrt(3)``, which is how the ``*_uniform_``
  variants turn the std into a bound.

Loading skips all of this: inside ``with skip_init():`` every function here returns its
tensor untouched (see :func:`skip_init`).
"""
from __future__ import annotations

import contextlib
import contextvars
import math

import numpy as np

from .. import backend
from ..autograd.function import no_grad
from ..autograd.tensor import Tensor

__all__ = ["skip_init", "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]


_SKIPPING = contextvars.ContextVar("minillm_skip_init", default=False)


@contextlib.contextmanager
def skip_init():
    """Build models without drawing their random initial weights::

        with nn.init.skip_init():
            model = GPT(config)           # parameters allocated, all zeros, nothing drawn
        model.load_state_dict(weights)    # ... because they are overwritten right here

    A layer's constructor allocates its parameters and then initialises them (``Linear``
    draws U(-1/sqrt(in), 1/sqrt(in)), ``GPT`` draws N(0, 0.02^2) ...). When the very next
    step is to load a checkpoint, those random numbers are thrown away: for GPT-2 small that
    is 124 million draws, most of the time a load took. Inside this block every function of
    ``nn.init`` returns its tensor untouched, so the parameters stay as allocated (zeros,
    which the operating system hands out lazily: no memory is touched until the weights are
    written). Two consequences a learner should know: a model built here is *not* usable
    until every parameter is loaded (``from_pretrained`` loads strictly, so it is), and the
    random generator does not advance, so the draws after a load differ from those after
    building a fresh model. Outside the block, initialisation is exactly as before.
    """
    token = _SKIPPING.set(True)
    try:
        yield
    finally:
        _SKIPPING.reset(token)


def _skipping():
    return _SKIPPING.get()


def _check(t, op):
    if not isinstance(t, Tensor):
        raise TypeError(f"nn.init.{op}: expected a Tensor, got {type(t).__name__}")
    if t.dtype.kind != "f":
        raise TypeError(f"nn.init.{op}: the tensor must be floating, got {t.dtype}")


def _fill_(t, array):
    """Copy a device array into ``t`` in place (under no_grad: not part of any graph)."""
    with no_grad():
        t.copy_(Tensor.wrap(array.astype(t.dtype, copy=False), t.device))
    return t


def _draw_dtype(t):
    # NumPy's generator draws float32 or float64 only; float16 tensors draw float32 and cast.
    return np.float64 if t.dtype == np.float64 else np.float32


def uniform_(t, a=0.0, b=1.0):
    """Fill ``t`` with U(a, b)."""
    _check(t, "uniform_")
    if not a <= b:
        raise ValueError(f"nn.init.uniform_: need a <= b, got a={a}, b={b}")
    if _skipping():
        return t
    u = backend.generator(t.device).random(t.shape, _draw_dtype(t))
    return _fill_(t, a + (b - a) * u)


def normal_(t, mean=0.0, std=1.0):
    """Fill ``t`` with N(mean, std^2)."""
    _check(t, "normal_")
    if std < 0:
        raise ValueError(f"nn.init.normal_: std must be >= 0, got {std}")
    if _skipping():
        return t
    z = backend.generator(t.device).normal(t.shape, _draw_dtype(t))
    return _fill_(t, mean + std * z)


def constant_(t, val):
    """Fill ``t`` with the value ``val``."""
    _check(t, "constant_")
    if _skipping():
        return t
    with no_grad():
        t.fill_(val)
    return t


def zeros_(t):
    return constant_(t, 0.0)


def ones_(t):
    return constant_(t, 1.0)


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity (PyTorch's table).

    linear/identity/sigmoid: 1; tanh: 5/3; relu: sqrt(2);
    leaky_relu: sqrt(2 / (1 + slope^2)) with ``param`` = negative slope (default 0.01); selu: 3/4.
    """
    if nonlinearity in ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"calculate_gain: negative slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; expected one of "
                     "'linear', 'identity', 'sigmoid', 'tanh', 'relu', 'leaky_relu', 'selu'")


def _calculate_fan_in_and_fan_out(t):
    """``(fan_in, fan_out)`` of a weight laid out as ``(..., in, out)`` (see the module docstring).

    2-D ``(in, out)``: ``(shape[0], shape[1])``. More dims: the last two times the product of
    the leading dims. Fewer than 2 dims: an error (a bias has no fan).
    """
    shape = tuple(t.shape)
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dims, got shape "
                         f"{shape}")
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _calculate_correct_fan(t, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    return fan_in if mode == "fan_in" else fan_out


def _xavier_std(t, gain, op):
    _check(t, op)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    if fan_in + fan_out == 0:
        return None
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def xavier_uniform_(t, gain=1.0):
    """Glorot uniform: U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    std = _xavier_std(t, gain, "xavier_uniform_")
    if std is None:
        return t
    a = math.sqrt(3.0) * std
    return uniform_(t, -a, a)


def xavier_normal_(t, gain=1.0):
    """Glorot normal: N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    std = _xavier_std(t, gain, "xavier_normal_")
    if std is None:
        return t
    return normal_(t, 0.0, std)


def _kaiming_std(t, a, mode, nonlinearity, op):
    _check(t, op)
    fan = _calculate_correct_fan(t, mode)
    if fan == 0:
        return None
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(t, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """He uniform: U(-b, b) with ``b = gain * sqrt(3 / fan)``; ``a`` is leaky_relu's slope."""
    std = _kaiming_std(t, a, mode, nonlinearity, "kaiming_uniform_")
    if std is None:
        return t
    bound = math.sqrt(3.0) * std
    return uniform_(t, -bound, bound)


def kaiming_normal_(t, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """He normal: N(0, std^2) with ``std = gain / sqrt(fan)``; ``a`` is leaky_relu's slope."""
    std = _kaiming_std(t, a, mode, nonlinearity, "kaiming_normal_")
    if std is None:
        return t
    return normal_(t, 0.0, std)
