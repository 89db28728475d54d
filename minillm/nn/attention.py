"""Multi-head attention and positional encodings.

* :class:`MultiHeadAttention` (Vaswani et al., 2017)::

      head_i = softmax(Q_i K_i^T / sqrt(d_head) + mask) V_i
      Q = query W_q,  K = key W_k,  V = value W_v   (split into heads i = 1..h)
      MultiHead(query, key, value) = concat(head_1, ..., head_h) W_o

* positions: :class:`SinusoidalPositionalEncoding` (fixed, Vaswani et al.),
  :class:`LearnedPositionalEmbedding` (a trained table, GPT/BERT) and
  :class:`RotaryEmbedding` (RoPE, Su et al., 2021: rotate queries and keys).

Everything is **batch-first**: sequences are ``(B, T, E)`` (batch, time, features), as
everywhere in minillm (PyTorch's ``batch_first=True``).

**One mask convention** inside minillm: a bool mask is True where a query **may** attend a
key (as ``F.scaled_dot_product_attention`` and :func:`causal_mask`); a float mask is added to
the scores (``-inf`` = blocked). :class:`MultiHeadAttention` keeps PyTorch's opposite bool
convention at its boundary (True = NOT allowed) and converts it once, on entry.

The pieces every attention in minillm is built from (``MultiHeadAttention``, GPT's
``CausalSelfAttention``, BERT's ``BertSelfAttention``): :func:`split_heads`, :func:`attention`
(softmax(q k^T / sqrt(d) + mask) v for all heads at once) and :func:`merge_heads`.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd.ops import concatenate
from ..autograd.tensor import Tensor, arange, empty, tensor, zeros
from . import init
from ..validation import check_int, check_number
from .layers import Linear
from .module import Module, Parameter

__all__ = ["MultiHeadAttention", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding",
           "RotaryEmbedding", "apply_rotary", "causal_mask", "masked_softmax", "attention",
           "split_heads", "merge_heads"]

masked_softmax = F.masked_softmax


def causal_mask(q_len, k_len=None, offset=0, device=None):
    """Bool ``(q_len, k_len)`` mask, **True where attention is allowed**: key ``j <= offset + i``.

    Query ``i`` sits at position ``offset + i`` (``offset`` = tokens already in a KV cache),
    so it sees every key up to its own position. ``offset=0`` and ``k_len == q_len`` is the
    usual lower-triangular mask. This is the convention of ``F.scaled_dot_product_attention``;
    for :class:`MultiHeadAttention` (True = blocked) pass ``~causal_mask(...)``.
    """
    k_len = q_len + offset if k_len is None else k_len
    rows = arange(offset, offset + q_len, device=device).reshape(q_len, 1)
    cols = arange(k_len, device=device).reshape(1, k_len)
    return cols <= rows


def split_heads(x, num_heads, parts=1):
    """(B, T, parts * E) -> (B, heads, T, E / heads), or (parts, B, heads, T, E / heads) for
    ``parts`` > 1 (GPT's fused q|k|v projection: ``q, k, v = split_heads(qkv, h, parts=3)``)."""
    b, t, e = x.shape
    d = e // (parts * num_heads)
    if parts == 1:
        return x.reshape(b, t, num_heads, d).transpose(0, 2, 1, 3)
    return x.reshape(b, t, parts, num_heads, d).transpose(2, 0, 3, 1, 4)


def merge_heads(x):
    """(B, heads, T, d) -> (B, T, heads * d): the heads concatenated again."""
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def attention(q, k, v, mask=None, dropout_p=0.0, need_weights=False):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + mask) V for every head at once.

    ``q`` (B, h, T, d), ``k`` and ``v`` (B, h, S, d) -> ``(output (B, h, T, d), weights)``.
    ``mask`` (broadcast to (B, h, T, S)): bool, True = may attend, or float, added to the
    scores. A query with every key masked outputs zeros. ``dropout_p`` drops attention
    weights (pass 0.0 in eval mode). ``need_weights=False`` runs the fused op (one Function
    with a hand-derived backward, fast kernels) and returns ``weights=None``;
    ``need_weights=True`` computes the same thing step by step and returns the weights
    (after dropout, as PyTorch).
    """
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))    # (B, h, T, S)
    allowed = None
    if mask is not None and mask.dtype.kind == "b":
        allowed = mask
    elif mask is not None:
        scores = scores + mask
    weights = F.dropout(F.masked_softmax(scores, allowed), dropout_p)
    return weights @ v, weights


class MultiHeadAttention(Module):
    """Multi-head attention (batch-first), PyTorch's ``nn.MultiheadAttention`` semantics.

    ``mha(query, key, value)`` with query ``(B, T, embed_dim)``, key ``(B, S, kdim)``, value
    ``(B, S, vdim)`` returns ``(output (B, T, embed_dim), weights)``. Self-attention is
    ``mha(x, x, x)``; cross-attention ``mha(x, memory, memory)``. Unbatched ``(T, E)`` inputs
    work too (the outputs then have no batch axis).

    Masks (PyTorch's ``nn.MultiheadAttention`` convention — **True = NOT allowed**):

    * ``attn_mask``: bool (True = this query may not attend this key) or float (added to the
      scores, differentiable), of shape ``(T, S)``, ``(B * num_heads, T, S)`` or
      ``(B, num_heads, T, S)`` (size-1 axes broadcast);
    * ``key_padding_mask``: ``(B, S)``, bool True = padding (ignored), or float (added);
    * ``is_causal=True``: query ``i`` may not attend key ``j > i`` (top-left aligned). In
      minillm this *applies* the causal mask and combines with the other masks (in PyTorch
      it is only a hint that ``attn_mask`` already is causal).

    The masks are converted once, on entry, to minillm's one convention (bool True = may
    attend) and combined into one mask for :func:`attention`. A query with every key masked
    outputs zeros (PyTorch gives NaN).

    Weights: ``need_weights=True`` computes the attention step by step and returns the
    probabilities averaged over heads ``(B, T, S)`` or per head ``(B, num_heads, T, S)``
    (``average_attn_weights=False``); as in PyTorch they are the probabilities after dropout.
    ``need_weights=False`` runs the fused op and returns ``(output, None)`` (faster).

    Parameters: ``q_proj``, ``k_proj``, ``v_proj`` (``Linear(kdim|vdim|embed_dim, embed_dim)``)
    and ``out_proj`` (``Linear(embed_dim, embed_dim)``). Porting from PyTorch:
    ``q_proj.weight = in_proj_weight[:E].T``, ``k_proj.weight = in_proj_weight[E:2E].T``,
    ``v_proj.weight = in_proj_weight[2E:].T``, ``out_proj.weight = out_proj.weight.T``.
    Init as PyTorch: Xavier-uniform projections of q, k, v, zero biases.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, kdim=None, vdim=None):
        super().__init__()
        who = "MultiHeadAttention"
        self.embed_dim = check_int(embed_dim, "embed_dim", who)
        self.num_heads = check_int(num_heads, "num_heads", who)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim ({embed_dim}) must be divisible by "
                             f"num_heads ({num_heads})")
        self.dropout = check_number(dropout, "dropout", who, 0, 1, high_open=True,
                                    type_error=True)
        self.head_dim = self.embed_dim // self.num_heads
        self.kdim = self.embed_dim if kdim is None else check_int(kdim, "kdim", who)
        self.vdim = self.embed_dim if vdim is None else check_int(vdim, "vdim", who)
        self.q_proj = Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.k_proj = Linear(self.kdim, self.embed_dim, bias=bias)
        self.v_proj = Linear(self.vdim, self.embed_dim, bias=bias)
        self.out_proj = Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self):
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            init.xavier_uniform_(proj.weight)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if proj.bias is not None:
                init.zeros_(proj.bias)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"

    # -- inputs and masks ----------------------------------------------------------------------
    def _check_inputs(self, query, key, value):
        for name, t, dim in (("query", query, self.embed_dim), ("key", key, self.kdim),
                             ("value", value, self.vdim)):
            if not isinstance(t, Tensor):
                raise TypeError(f"MultiHeadAttention: {name} must be a Tensor, got "
                                f"{type(t).__name__}")
            if t.ndim != query.ndim or t.ndim not in (2, 3) or t.shape[-1] != dim:
                raise ValueError(
                    f"MultiHeadAttention: {name} must be batch-first (B, L, {dim}) (or unbatched "
                    f"(L, {dim}) like the others); got query {query.shape}, key {key.shape}, "
                    f"value {value.shape}")
        if query.ndim == 3 and not query.shape[0] == key.shape[0] == value.shape[0]:
            raise ValueError(f"MultiHeadAttention: batch sizes differ: query {query.shape}, "
                             f"key {key.shape}, value {value.shape}")
        if key.shape[-2] != value.shape[-2]:
            raise ValueError(f"MultiHeadAttention: key and value need the same length S, got key "
                             f"{key.shape} and value {value.shape}")

    def _mask_4d(self, mask, name, b, t, s):
        """``mask`` as a (B|1, heads|1, T, S) Tensor (accepting (T, S) and (B*heads, T, S))."""
        if not isinstance(mask, Tensor):
            raise TypeError(f"MultiHeadAttention: {name} must be a bool or float Tensor, got "
                            f"{type(mask).__name__}")
        if mask.dtype.kind not in "bf":
            raise TypeError(f"MultiHeadAttention: {name} must be bool (True = not allowed) or "
                            f"float (added to the scores), got {mask.dtype}")
        h = self.num_heads
        if name == "key_padding_mask":
            if mask.shape != (b, s):
                raise ValueError(f"MultiHeadAttention: key_padding_mask must be (B, S) = "
                                 f"{(b, s)}, got {mask.shape}")
            return mask.reshape(b, 1, 1, s)
        if mask.ndim == 2 and mask.shape == (t, s):
            return mask.reshape(1, 1, t, s)
        if mask.ndim == 3 and mask.shape == (b * h, t, s):
            return mask.reshape(b, h, t, s)
        if mask.ndim == 4 and mask.shape[2:] == (t, s) and mask.shape[0] in (1, b) \
                and mask.shape[1] in (1, h):
            return mask
        raise ValueError(f"MultiHeadAttention: attn_mask must be (T, S) = {(t, s)}, "
                         f"(B * num_heads, T, S) = {(b * h, t, s)} or (B, num_heads, T, S) = "
                         f"{(b, h, t, s)}; got {mask.shape}")

    def _one_mask(self, attn_mask, key_padding_mask, is_causal, b, t, s, device):
        """The masks as ONE mask in minillm's convention: bool True = may attend (PyTorch's
        bool masks, True = not allowed, are inverted here), or float added to the scores
        (-inf where a bool mask blocks, when a float mask is given too); None if no mask."""
        allowed, bias = None, None
        if is_causal:
            allowed = causal_mask(t, s, device=device).reshape(1, 1, t, s)
        for name, mask in (("attn_mask", attn_mask), ("key_padding_mask", key_padding_mask)):
            if mask is None:
                continue
            m = self._mask_4d(mask, name, b, t, s)
            if m.device != device:
                raise RuntimeError(f"MultiHeadAttention: {name} is on {m.device}, the inputs "
                                   f"on {device}")
            if m.dtype.kind == "b":
                allowed = ~m if allowed is None else allowed & ~m
            else:
                bias = m if bias is None else bias + m
        if bias is None or allowed is None:
            return bias if allowed is None else allowed
        return bias + zeros(allowed.shape, dtype=bias.dtype, device=device).masked_fill(
            ~allowed, -math.inf)

    # -- forward ------------------------------------------------------------------------------
    def forward(self, query, key, value, attn_mask=None, key_padding_mask=None, is_causal=False,
                need_weights=True, average_attn_weights=True):
        self._check_inputs(query, key, value)
        if query.ndim == 2:                      # unbatched: add a batch axis of 1
            kpm = None if key_padding_mask is None else key_padding_mask.reshape(1, -1)
            out, w = self.forward(query.reshape(1, *query.shape), key.reshape(1, *key.shape),
                                  value.reshape(1, *value.shape), attn_mask, kpm, is_causal,
                                  need_weights, average_attn_weights)
            return out.reshape(out.shape[1:]), (None if w is None else w.reshape(w.shape[1:]))
        b, t, s = query.shape[0], query.shape[1], key.shape[1]
        mask = self._one_mask(attn_mask, key_padding_mask, is_causal, b, t, s, query.device)
        q = split_heads(self.q_proj(query), self.num_heads)        # (B, h, T, d)
        k = split_heads(self.k_proj(key), self.num_heads)          # (B, h, S, d)
        v = split_heads(self.v_proj(value), self.num_heads)        # (B, h, S, d)
        heads, weights = attention(q, k, v, mask, self.dropout if self.training else 0.0,
                                   need_weights)
        out = self.out_proj(merge_heads(heads))
        if weights is not None and average_attn_weights:
            weights = weights.mean(axis=1)
        return out, weights


# -- positional encodings ------------------------------------------------------------------------
def _check_positions(x, offset, max_len, where):
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError(f"{where}: x must be a Tensor (..., T, d_model), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    t = x.shape[-2]
    offset = check_int(offset, "offset", where, low=0)
    if offset + t > max_len:
        raise ValueError(f"{where}: positions [{offset}, {offset + t}) exceed max_len={max_len}; "
                         "build the encoding with a larger max_len")
    return t


class SinusoidalPositionalEncoding(Module):
    """Fixed sinusoidal positions (Vaswani et al., 2017), added to the input.

    ``PE[pos, 2i] = sin(pos / 10000^(2i / d_model))``,
    ``PE[pos, 2i+1] = cos(pos / 10000^(2i / d_model))``.
    ``forward(x, offset=0)`` returns ``x + PE[offset : offset + T]`` for ``x`` of shape
    ``(..., T, d_model)`` (``offset``: the position of the first token, e.g. when decoding
    one token at a time). No parameters; the table ``pe`` is a non-persistent buffer
    (recomputed, so it is not saved in checkpoints).
    """

    def __init__(self, d_model, max_len=5000):
        super().__init__()
        self.d_model = check_int(d_model, "d_model", "SinusoidalPositionalEncoding")
        self.max_len = check_int(max_len, "max_len", "SinusoidalPositionalEncoding")
        pos = np.arange(self.max_len, dtype=np.float64)[:, None]
        two_i = np.arange(0, self.d_model, 2, dtype=np.float64)
        angle = pos / 10000.0 ** (two_i / self.d_model)             # (max_len, ceil(d/2))
        pe = np.zeros((self.max_len, self.d_model))
        pe[:, 0::2] = np.sin(angle)
        pe[:, 1::2] = np.cos(angle[:, : self.d_model // 2])
        self.register_buffer("pe", tensor(pe.astype(backend.get_default_dtype())),
                             persistent=False)

    def forward(self, x, offset=0):
        t = _check_positions(x, offset, self.max_len, "SinusoidalPositionalEncoding")
        if x.shape[-1] != self.d_model:
            raise ValueError(f"SinusoidalPositionalEncoding: x has {x.shape[-1]} features, "
                             f"expected d_model={self.d_model}")
        pe = self.pe[offset:offset + t]
        if pe.dtype != x.dtype:
            pe = pe.astype(x.dtype)
        return x + pe

    def extra_repr(self):
        return f"d_model={self.d_model}, max_len={self.max_len}"


class LearnedPositionalEmbedding(Module):
    """A trained table of position vectors (GPT, BERT), added to the input.

    ``weight`` is ``(max_len, d_model)``, initialised N(0, 0.02^2) (GPT-2/BERT's init);
    ``forward(x, offset=0)`` returns ``x + weight[offset : offset + T]`` for ``x`` of shape
    ``(..., T, d_model)``.
    """

    def __init__(self, max_len, d_model):
        super().__init__()
        self.max_len = check_int(max_len, "max_len", "LearnedPositionalEmbedding")
        self.d_model = check_int(d_model, "d_model", "LearnedPositionalEmbedding")
        self.weight = Parameter(empty(self.max_len, self.d_model))
        init.normal_(self.weight, std=0.02)

    def forward(self, x, offset=0):
        t = _check_positions(x, offset, self.max_len, "LearnedPositionalEmbedding")
        if x.shape[-1] != self.d_model:
            raise ValueError(f"LearnedPositionalEmbedding: x has {x.shape[-1]} features, "
                             f"expected d_model={self.d_model}")
        return x + self.weight[offset:offset + t]

    def extra_repr(self):
        return f"max_len={self.max_len}, d_model={self.d_model}"


def _rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis."""
    half = x.shape[-1] // 2
    return concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rotary(x, cos, sin):
    """Rotate ``x`` (..., T, d) by the angles whose cos/sin are ``(T, d)``:
    ``x * cos + rotate_half(x) * sin`` (rotate-half pairing: dims ``i`` and ``i + d/2``)."""
    return x * cos + _rotate_half(x) * sin


class RotaryEmbedding(Module):
    """Rotary position embedding, RoPE (Su et al., 2021), in the rotate-half layout.

    Each pair of dims ``(i, i + d/2)`` of a query/key at position ``m`` is rotated by the angle
    ``m * theta_i``, ``theta_i = base^(-2i / d)``::

        x'[i]       = x[i] cos(m theta_i) - x[i + d/2] sin(m theta_i)
        x'[i + d/2] = x[i + d/2] cos(m theta_i) + x[i] sin(m theta_i)

    so ``<q'_m, k'_n>`` depends on ``m - n`` only. This is the GPT-NeoX / LLaMA (Hugging Face)
    layout; the paper's interleaved layout pairs ``(2i, 2i + 1)`` instead (the same thing up to
    a fixed permutation of the head dims). ``apply_rotary(q, k, offset=0)`` rotates ``q`` and
    ``k`` of shape ``(..., T, head_dim)`` for positions ``offset .. offset + T - 1`` (with a KV
    cache, ``offset`` = the number of cached tokens) and returns ``(q, k)``. No parameters:
    the angles are computed on the inputs' device in float64, then cast to their dtype.
    """

    def __init__(self, head_dim, base=10000):
        super().__init__()
        self.head_dim = check_int(head_dim, "head_dim", "RotaryEmbedding", low=2)
        if self.head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be even, got {head_dim}")
        if not base > 0:
            raise ValueError(f"RotaryEmbedding: base must be > 0, got {base}")
        self.base = float(base)

    def cos_sin(self, seq_len, offset=0, device=None, dtype=None):
        """``cos, sin`` Tensors ``(seq_len, head_dim)`` for positions ``offset ..``."""
        half = self.head_dim // 2
        pos = arange(offset, offset + seq_len, device=device).astype(np.float64)
        inv_freq = self.base ** (arange(half, device=device).astype(np.float64)
                                 * (-2.0 / self.head_dim))
        angle = pos.reshape(seq_len, 1) * inv_freq.reshape(1, half)      # m * theta_i
        angle = concatenate([angle, angle], axis=-1).data              # (T, d): both halves
        dev = backend.device_of(angle)
        xp, dtype = dev.xp, np.dtype(dtype or backend.get_default_dtype())
        return (Tensor.wrap(xp.cos(angle).astype(dtype), dev),
                Tensor.wrap(xp.sin(angle).astype(dtype), dev))

    def apply_rotary(self, q, k, offset=0):
        for name, t in (("q", q), ("k", k)):
            if not isinstance(t, Tensor) or t.ndim < 2 or t.shape[-1] != self.head_dim:
                raise ValueError(f"RotaryEmbedding: {name} must be a Tensor (..., T, "
                                 f"{self.head_dim}), got {getattr(t, 'shape', type(t).__name__)}")
        if q.shape[-2] != k.shape[-2]:
            raise ValueError(f"RotaryEmbedding: q and k need the same length T (rotate the new "
                             f"keys before caching them), got q {q.shape} and k {k.shape}")
        offset = check_int(offset, "offset", "RotaryEmbedding", low=0)
        cos, sin = self.cos_sin(q.shape[-2], offset, q.device, q.dtype)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    forward = apply_rotary

    def extra_repr(self):
        return f"head_dim={self.head_dim}, base={self.base:g}"
