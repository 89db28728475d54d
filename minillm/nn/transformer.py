"""Transformer encoder and decoder layers and stacks (Vaswani et al., 2017), batch-first.

One encoder layer, in the two common layouts::

    post-LN (the paper, BERT; norm_first=False):   x = LN1(x + SelfAttn(x))
                                                   x = LN2(x + FFN(x))
    pre-LN (GPT-2, most LLMs; norm_first=True):    x = x + SelfAttn(LN1(x))
                                                   x = x + FFN(LN2(x))

with ``FFN(x) = linear2(dropout(activation(linear1(x))))``. A decoder layer adds
cross-attention to the encoder output ``memory`` between the two (``LN3`` after/before the
FFN). Names, arguments and mask conventions follow PyTorch's ``nn.TransformerEncoderLayer`` /
``nn.TransformerDecoderLayer`` (with ``batch_first=True``): a bool mask is True where attention
is NOT allowed, a float mask is added (see :class:`~minillm.nn.attention.MultiHeadAttention`).
"""
from __future__ import annotations

from .. import functional as F
from ..validation import check_int
from .attention import MultiHeadAttention
from .containers import ModuleList
from .layers import Dropout, LayerNorm, Linear
from .module import Module

__all__ = ["TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
           "TransformerDecoder"]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation(activation, layer):
    if callable(activation):
        return activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{layer}: activation must be 'relu', 'gelu' or a callable, got "
                         f"{activation!r}")
    return _ACTIVATIONS[activation]


class TransformerEncoderLayer(Module):
    """Self-attention + feed-forward, each with a residual connection and a LayerNorm.

    Sub-modules (PyTorch's names): ``self_attn``, ``linear1``, ``dropout``, ``linear2``,
    ``norm1``, ``norm2``, ``dropout1``, ``dropout2``.
    ``forward(src (B, T, d_model), src_mask=None, src_key_padding_mask=None, is_causal=False)``.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, norm_first=False, bias=True):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation, "TransformerEncoderLayer")
        self.activation_name = activation if isinstance(activation, str) else \
            getattr(activation, "__name__", "custom")
        self.norm_first = bool(norm_first)

    def extra_repr(self):
        return f"activation={self.activation_name!r}, norm_first={self.norm_first}"

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           is_causal=is_causal, need_weights=False)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerDecoderLayer(Module):
    """Masked self-attention, cross-attention to ``memory``, feed-forward; residuals + LayerNorms.

    Sub-modules (PyTorch's names): ``self_attn``, ``multihead_attn`` (the cross-attention),
    ``linear1``, ``dropout``, ``linear2``, ``norm1``, ``norm2``, ``norm3``, ``dropout1``,
    ``dropout2``, ``dropout3``. ``forward(tgt (B, T, d_model), memory (B, S, d_model),
    tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
    tgt_is_causal=False, memory_is_causal=False)``; ``tgt_is_causal=True`` applies the causal
    mask to the self-attention (a position never sees later ones).
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, norm_first=False, bias=True):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias)
        self.multihead_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = _activation(activation, "TransformerDecoderLayer")
        self.activation_name = activation if isinstance(activation, str) else \
            getattr(activation, "__name__", "custom")
        self.norm_first = bool(norm_first)

    def extra_repr(self):
        return f"activation={self.activation_name!r}, norm_first={self.norm_first}"

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask,
                                    memory_is_causal)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask,
                                               memory_is_causal))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           is_causal=is_causal, need_weights=False)[0]
        return self.dropout1(x)

    def _mha_block(self, x, memory, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(x, memory, memory, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, is_causal=is_causal,
                                need_weights=False)[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))


def _final_norm(norm, d_model, eps, bias, where):
    """``norm``: None (no final norm), True (a fresh LayerNorm) or a Module."""
    if norm is None or norm is False:
        return None
    if norm is True:
        return LayerNorm(d_model, eps=eps, bias=bias)
    if isinstance(norm, Module):
        return norm
    raise TypeError(f"{where}: norm must be None, True or a Module, got {type(norm).__name__}")


class TransformerEncoder(Module):
    """A stack of ``num_layers`` :class:`TransformerEncoderLayer` (fresh, independently
    initialised layers built from the same arguments) and an optional final ``norm``.

    ``TransformerEncoder(num_layers, d_model, nhead, dim_feedforward=2048, dropout=0.1,
    activation="relu", layer_norm_eps=1e-5, norm_first=False, bias=True, norm=None)``:
    ``norm`` is None, True (a ``LayerNorm(d_model)`` after the last layer — what a pre-LN stack
    needs) or any Module. Sub-modules: ``layers.{i}``, ``norm``.
    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=False)`` (PyTorch's names).
    """

    def __init__(self, num_layers, d_model, nhead, dim_feedforward=2048, dropout=0.1,
                 activation="relu", layer_norm_eps=1e-5, norm_first=False, bias=True, norm=None):
        super().__init__()
        self.num_layers = check_int(num_layers, "num_layers", "TransformerEncoder")
        self.layers = ModuleList([
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation,
                                    layer_norm_eps, norm_first, bias)
            for _ in range(self.num_layers)])
        self.norm = _final_norm(norm, d_model, layer_norm_eps, bias, "TransformerEncoder")

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=is_causal)
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(Module):
    """A stack of ``num_layers`` :class:`TransformerDecoderLayer` and an optional final ``norm``
    (arguments as :class:`TransformerEncoder`). Sub-modules: ``layers.{i}``, ``norm``.
    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)``.
    """

    def __init__(self, num_layers, d_model, nhead, dim_feedforward=2048, dropout=0.1,
                 activation="relu", layer_norm_eps=1e-5, norm_first=False, bias=True, norm=None):
        super().__init__()
        self.num_layers = check_int(num_layers, "num_layers", "TransformerDecoder")
        self.layers = ModuleList([
            TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation,
                                    layer_norm_eps, norm_first, bias)
            for _ in range(self.num_layers)])
        self.norm = _final_norm(norm, d_model, layer_norm_eps, bias, "TransformerDecoder")

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        return x if self.norm is None else self.norm(x)
