"""Scaled dot-product attention: the math (plain kernels), the Function, the packed variant."""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..autograd.function import Function
from ..autograd.ops import unbroadcast
from ..autograd.tensor import Tensor
from ..backend import kernels
from .checks import _check_same, _check_tensor
from .softmax import softmax_backward, softmax_forward


# -- attention ------------------------------------------------------------------------------------
def attention_forward(xp, q, k, v, float_mask=None, bool_mask=None, is_causal=False, scale=1.0,
                      drop=None):
    """out = P' v with S = q k^T * scale + mask, P = softmax(S) (rows with every key masked:
    zeros), P' = P * drop (the dropout mask, already scaled by 1 / (1 - p)) or P."""
    s = (q @ xp.swapaxes(k, -1, -2)) * scale
    allowed = bool_mask
    if is_causal:                                     # key j <= query i (top-left aligned)
        causal = xp.tril(xp.ones(s.shape[-2:], dtype=bool))
        allowed = causal if allowed is None else allowed & causal
    if float_mask is not None:
        s = s + float_mask
    p, _ = softmax_forward(xp, s, -1, allowed, guard=True)
    pd = p if drop is None else p * drop
    return pd @ v, (q, k, v, p, pd, drop, scale)


def attention_backward(xp, saved, g):
    """dv = P'^T g;  dP = (g v^T) * drop;  dS = P * (dP - rowsum(dP * P));
    dq = dS k * scale;  dk = dS^T q * scale;  d(float mask) = dS."""
    q, k, v, p, pd, drop, scale = saved
    gv = xp.swapaxes(pd, -1, -2) @ g
    dp = g @ xp.swapaxes(v, -1, -2)
    if drop is not None:
        dp = dp * drop
    ds = softmax_backward(xp, (p, -1), dp)
    return (ds @ k) * scale, (xp.swapaxes(ds, -1, -2) @ q) * scale, gv, ds


class SDPA(Function):
    """softmax(q k^T * scale + mask) v through the kernel table (math: attention_forward /
    attention_backward above); the gradients are summed back over broadcast batch dims."""

    save_inputs = False

    def forward(self, q, k, v, float_mask=None, **options):
        self.kernel = kernels.select("attention", self.xp, q.dtype)
        out, self.saved = self.kernel.forward(self.xp, q, k, v, float_mask, **options)
        self.shapes = (q.shape, k.shape, v.shape, None if float_mask is None else float_mask.shape)
        return out

    def backward(self, g):
        grads = self.kernel.backward(self.xp, self.saved, g)
        return tuple(None if shape is None else unbroadcast(d, shape)
                     for d, shape in zip(grads, self.shapes))


class PackedSelfAttention(SDPA):
    """SDPA on one packed tensor ``qkv`` (3, ..., T, E) (q, k, v stacked on the first axis).

    The same computation as :class:`SDPA`, but the gradient comes back as ONE array laid out
    like ``qkv``: taking ``qkv[0]``, ``qkv[1]``, ``qkv[2]`` as three ops instead would give
    three zero-filled full-size gradients and two additions in the backward pass
    (flash-attn's ``qkvpacked`` functions exist for the same reason).
    """

    def forward(self, qkv, **options):
        self.qkv_like = qkv
        return super().forward(qkv[0], qkv[1], qkv[2], **options)

    def backward(self, g):
        gq, gk, gv, _ = super().backward(g)
        out = self.xp.empty_like(self.qkv_like)
        out[0], out[1], out[2] = gq, gk, gv
        return out


def packed_self_attention(qkv, is_causal=False, dropout_p=0.0, scale=None):
    """Self-attention on packed projections: ``qkv`` (3, ..., T, E) holds q, k and v.

    Equal to ``scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=...,
    dropout_p=...)``, with a cheaper backward (see :class:`PackedSelfAttention`). GPT's
    attention uses it on the (3, B, heads, T, head_dim) view of its fused ``c_attn`` output.
    """
    op = "packed_self_attention"
    _check_tensor(qkv, "qkv", op)
    if qkv.ndim < 3 or qkv.shape[0] != 3:
        raise ValueError(f"{op}: qkv must be (3, ..., T, E) with q, k, v on the first axis, got "
                         f"{qkv.shape}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {dropout_p}")
    scale = 1.0 / math.sqrt(qkv.shape[-1]) if scale is None else float(scale)
    drop = None
    if dropout_p > 0:
        shape = qkv.shape[1:-1] + (qkv.shape[-2],)
        drop = backend.generator(qkv.device).dropout_mask(shape, qkv.dtype, dropout_p)
    return PackedSelfAttention.apply(qkv, is_causal=is_causal, scale=scale, drop=drop)


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0,
                                 scale=None):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + mask) V  (PyTorch's signature).

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev); batch dims
    broadcast. ``attn_mask``: a bool Tensor (True = may attend) or a float Tensor added to
    the scores (differentiable), broadcastable to (..., L, S). ``is_causal`` masks key j > i
    (top-left aligned, as PyTorch). A query row with every key masked outputs zeros.
    Dropout on the attention weights is applied whenever ``dropout_p > 0``.
    """
    op = "scaled_dot_product_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(t, name, op)
        if t.ndim < 2:
            raise ValueError(f"{op}: {name} needs at least 2 dims (..., seq, dim), got {t.shape}")
    _check_same(op, ("q", q), ("k", k), ("v", v),
                ("attn_mask", attn_mask if isinstance(attn_mask, Tensor) and
                 attn_mask.dtype.kind == "f" else None))
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{op}: q and k need the same last dim, got q {q.shape} and k {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{op}: k and v need the same sequence length, got k {k.shape} and "
                         f"v {v.shape}")
    if attn_mask is not None and is_causal:
        raise ValueError(f"{op}: give either attn_mask or is_causal=True, not both")
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise TypeError(f"{op}: attn_mask must be a Tensor (bool or float)")
        if attn_mask.device != q.device:
            raise RuntimeError(f"{op}: attn_mask on {attn_mask.device}, q on {q.device}")
        if attn_mask.dtype.kind not in "bf":
            raise TypeError(f"{op}: attn_mask must be bool or float, got {attn_mask.dtype}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {dropout_p}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    drop = None
    if dropout_p > 0:
        shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
        drop = backend.generator(q.device).dropout_mask(shape, q.dtype, dropout_p)
    if attn_mask is not None and attn_mask.dtype.kind == "f":
        return SDPA.apply(q, k, v, attn_mask, is_causal=is_causal, scale=scale, drop=drop)
    bool_mask = None if attn_mask is None else attn_mask.data
    return SDPA.apply(q, k, v, None, bool_mask=bool_mask, is_causal=is_causal, scale=scale,
                      drop=drop)
