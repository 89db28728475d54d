"""softmax, masked softmax and log-softmax: the math (plain kernels) and the Functions."""
from __future__ import annotations

from ..autograd.function import Function
from ..autograd.ops import normalize_axis
from ..autograd.tensor import Tensor
from ..backend import kernels
from .checks import _check_tensor


def _axis(x, axis, op):
    return normalize_axis(axis, x.ndim, op)[0]


def softmax_forward(xp, x, axis=-1, allowed=None, guard=False):
    """y = exp(x - max x) / sum(exp(x - max x)), only over ``allowed`` entries if given;
    ``guard``: a row with nothing allowed gives zeros instead of NaN."""
    if allowed is not None:
        x = xp.where(allowed, x, -xp.inf)
    m = x.max(axis=axis, keepdims=True)
    if guard:
        m = xp.where(xp.isfinite(m), m, 0)
    e = xp.exp(x - m)
    total = e.sum(axis=axis, keepdims=True)
    y = e / (xp.where(total == 0, 1, total) if guard else total)
    return y, (y, axis)


def softmax_backward(xp, saved, g):
    """dx = y * (g - sum(g * y))."""
    y, axis = saved
    return y * (g - (g * y).sum(axis=axis, keepdims=True))


def log_softmax_forward(xp, x, axis=-1):
    """z = x - max x - log(sum(exp(x - max x)))  (never the log of a tiny number)."""
    shifted = x - x.max(axis=axis, keepdims=True)
    z = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    return z, (z, axis)


def log_softmax_backward(xp, saved, g):
    """dx = g - softmax(x) * sum(g)."""
    z, axis = saved
    return g - xp.exp(z) * g.sum(axis=axis, keepdims=True)


class Softmax(Function):
    """softmax (or log-softmax) along ``axis`` through the kernel table."""

    save_inputs = False
    op = "softmax"

    def forward(self, x, axis=-1, **options):
        self.kernel = kernels.select(self.op, self.xp, x.dtype)
        out, self.saved = self.kernel.forward(self.xp, x, axis, **options)
        return out

    def backward(self, g):
        return self.kernel.backward(self.xp, self.saved, g)


class LogSoftmax(Softmax):
    op = "log_softmax"


def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x) along ``axis``."""
    _check_tensor(x, "x", "softmax")
    return Softmax.apply(x, axis=_axis(x, axis, "softmax"))


def masked_softmax(scores, allowed=None):
    """Softmax of ``scores`` over the last axis, only over entries where the bool Tensor
    ``allowed`` is True (broadcast); a row with no allowed entry (or only -inf scores) gives
    zeros, not NaN. The backward is the softmax one, zero at the masked entries."""
    _check_tensor(scores, "scores", "masked_softmax")
    if allowed is not None:
        if not isinstance(allowed, Tensor) or allowed.dtype != bool:
            raise TypeError("masked_softmax: allowed must be a bool Tensor (True = keep), got "
                            f"{getattr(allowed, 'dtype', type(allowed).__name__)}")
        if allowed.device != scores.device:
            raise RuntimeError(f"masked_softmax: allowed on {allowed.device}, scores on "
                               f"{scores.device}")
        allowed = allowed.data
    return Softmax.apply(scores, axis=scores.ndim - 1, allowed=allowed, guard=True)


def log_softmax(x, axis=-1):
    """log softmax, computed as x - max - log(sum(exp(x - max))) (no log of a tiny number)."""
    _check_tensor(x, "x", "log_softmax")
    return LogSoftmax.apply(x, axis=_axis(x, axis, "log_softmax"))
