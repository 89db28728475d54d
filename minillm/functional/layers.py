"""The layers' functions: linear, GELU, layer norm, dropout and embedding."""
from __future__ import annotations

import math

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..backend import kernels
from .checks import _check_same, _check_tensor


# -- linear ---------------------------------------------------------------------------------------
class Linear(Function):
    def forward(self, x, w, b=None):
        if x.shape[-1] != w.shape[0]:
            raise ValueError(f"input has {x.shape[-1]} features but the weight is "
                             f"{tuple(w.shape)} (in_features, out_features)")
        self.x, self.w, self.has_b = x, w, b is not None
        k, n = w.shape
        rows = math.prod(x.shape[:-1])
        y = x.reshape(rows, k) @ w          # batch dims folded into rows: one 2-D GEMM
        if b is not None:
            y += b
        return y.reshape(x.shape[:-1] + (n,))

    def backward(self, g):
        x, w = self.x, self.w
        k, n = w.shape
        rows = math.prod(x.shape[:-1])
        g2 = g.reshape(rows, n)
        gx = (g2 @ w.T).reshape(x.shape)
        gw = x.reshape(rows, k).T @ g2
        gb = backend.column_sum(g2) if self.has_b else None
        return gx, gw, gb


def linear(x, weight, bias=None):
    """``x @ weight + bias`` with ``weight`` of shape (in_features, out_features)."""
    _check_tensor(x, "x", "linear")
    _check_tensor(weight, "weight", "linear")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (in, out), got shape {weight.shape}")
    if bias is not None and bias.shape != (weight.shape[1],):
        raise ValueError(f"linear: bias shape {bias.shape} != (out_features,) = "
                         f"({weight.shape[1]},)")
    _check_same("linear", ("x", x), ("weight", weight), ("bias", bias))
    return Linear.apply(x, weight, bias)


# -- activations ----------------------------------------------------------------------------------
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GELU(Function):
    """GELU through the kernel table (``gelu`` exact, or ``gelu_tanh``)."""

    save_inputs = False

    def forward(self, x, approximate="none"):
        op = "gelu_tanh" if approximate == "tanh" else "gelu"
        self.kernel = kernels.select(op, self.xp, x.dtype)
        y, self.saved = self.kernel.forward(self.xp, x)
        return y

    def backward(self, g):
        return self.kernel.backward(self.xp, self.saved, g)


def gelu_forward(xp, x):
    """y = x Phi(x), Phi the standard normal CDF, via erfc (accurate in both tails)."""
    cdf = 0.5 * backend.erfc(-x * _INV_SQRT_2)
    return x * cdf, (x, cdf)


def gelu_backward(xp, saved, g):
    """dy/dx = Phi(x) + x phi(x), phi the standard normal density."""
    x, cdf = saved
    pdf = _INV_SQRT_2PI * xp.exp(-0.5 * x * x)
    return g * (cdf + x * pdf)


def gelu_tanh_forward(xp, x):
    """GPT-2's form: y = x/2 (1 + t), t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3)."""
    t = xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
    return 0.5 * x * (1 + t), (x, t)


def gelu_tanh_backward(xp, saved, g):
    """dy/dx = (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    x, t = saved
    du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
    return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)


def gelu(x, approximate="none"):
    """GELU: x * Phi(x) (``approximate="none"``, PyTorch's default) or GPT-2's tanh form
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (``approximate="tanh"``)."""
    _check_tensor(x, "x", "gelu")
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(x, approximate=approximate)


# -- layer norm -----------------------------------------------------------------------------------
def layer_norm_forward(xp, x, w=None, b=None, eps=1e-5):
    """Rows of x (R, N): xhat = (x - mean) / sqrt(var + eps) (biased var), y = xhat * w + b."""
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    rstd = 1 / xp.sqrt(var + eps)
    xhat = (x - mean) * rstd
    y = xhat if w is None else xhat * w
    return (y if b is None else y + b), (xhat, rstd[:, 0], w, b is not None)


def layer_norm_backward(xp, saved, g):
    """With dxhat = g * w: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
    dw = sum over rows of g * xhat, db = sum over rows of g."""
    xhat, rstd, w, has_b = saved
    dxhat = g if w is None else g * w
    dx = rstd[:, None] * (dxhat - dxhat.mean(axis=1, keepdims=True)
                          - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
    dw = None if w is None else (g * xhat).sum(axis=0)
    return dx, dw, (g.sum(axis=0) if has_b else None)


class LayerNorm(Function):
    """LayerNorm over the last ``nd`` axes, through the kernel table on a 2-D (rows, N) view.

    float16 input (mixed precision) is normalised in float32 (the float32 island: a square
    of 300 already exceeds float16's maximum 65504); output and gradients are float16.
    """

    save_inputs = False

    def forward(self, x, w=None, b=None, nd=1, eps=1e-5):
        n = math.prod(x.shape[x.ndim - nd:])
        self.kernel = kernels.select("layer_norm", self.xp, x.dtype)
        flat = (None if a is None else a.reshape(n) for a in (w, b))
        y, self.saved = self.kernel.forward(self.xp, x.reshape(-1, n), *flat, eps=eps)
        self.shape, self.wshape, self.n = x.shape, x.shape[x.ndim - nd:], n
        return y.reshape(x.shape)

    def backward(self, g):
        gx, gw, gb = self.kernel.backward(self.xp, self.saved, g.reshape(-1, self.n))
        return (gx.reshape(self.shape), None if gw is None else gw.reshape(self.wshape),
                None if gb is None else gb.reshape(self.wshape))


def layer_norm(x, weight, bias, eps=1e-5, normalized_shape=None):
    """LayerNorm over the last ``weight.ndim`` axes: (x - mean) / sqrt(var + eps) * weight + bias.

    ``weight``/``bias`` may be None (then give ``normalized_shape``); var is the biased one.
    """
    _check_tensor(x, "x", "layer_norm")
    if normalized_shape is None:
        if weight is None:
            raise ValueError("layer_norm: give weight or normalized_shape")
        normalized_shape = weight.shape
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) \
        else tuple(normalized_shape)
    nd = len(normalized_shape)
    if x.shape[x.ndim - nd:] != normalized_shape or nd > x.ndim:
        raise ValueError(f"layer_norm: input shape {x.shape} does not end with normalized_shape "
                         f"{normalized_shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != normalized_shape:
            raise ValueError(f"layer_norm: {name} shape {t.shape} != normalized_shape "
                             f"{normalized_shape}")
    _check_same("layer_norm", ("x", x), ("weight", weight), ("bias", bias))
    return LayerNorm.apply(x, weight, bias, nd=nd, eps=eps)


# -- dropout --------------------------------------------------------------------------------------
class Dropout(Function):
    save_inputs = False

    def forward(self, x, mask=None):
        self.mask = mask
        return x * mask

    def backward(self, g):
        return g * self.mask


def dropout(x, p=0.5, training=True):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (training only)."""
    _check_tensor(x, "x", "dropout")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return Dropout.apply(x, mask=backend.generator(x.device).dropout_mask(x.shape, x.dtype, p))


# -- embedding ------------------------------------------------------------------------------------
class Embedding(Function):
    save_inputs = False

    def forward(self, ids, w, padding_idx=None):
        self.ids, self.shape, self.dtype, self.pad = ids, w.shape, w.dtype, padding_idx
        return w[ids]

    def backward(self, g):
        gw = self.xp.zeros(self.shape, dtype=self.dtype)
        backend.index_add_rows(gw, self.ids.reshape(-1), g.reshape(-1, self.shape[1]))
        if self.pad is not None:
            gw[self.pad] = 0
        return None, gw


def embedding(ids, weight, padding_idx=None):
    """Rows of ``weight`` (V, D) picked by integer ``ids`` of any shape -> ids.shape + (D,).

    The backward adds each output row's gradient into its table row (repeated ids add up);
    the ``padding_idx`` row gets no gradient.
    """
    _check_tensor(weight, "weight", "embedding")
    if not isinstance(ids, Tensor) or ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be an integer Tensor, got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, dim), got {weight.shape}")
    if ids.device != weight.device:
        raise RuntimeError(f"embedding: ids on {ids.device}, weight on {weight.device}")
    v = weight.shape[0]
    if ids.size:
        def error():
            bad = backend.to_host(ids.data)
            return IndexError(f"embedding: ids must be in [0, {v}); got values like "
                              f"{bad[(bad < 0) | (bad >= v)][:5].tolist()}")
        backend.check(((ids.data < 0) | (ids.data >= v)).any(), error)
    if padding_idx is not None:
        padding_idx = padding_idx % v
    return Embedding.apply(ids, weight, padding_idx=padding_idx)
