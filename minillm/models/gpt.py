"""GPT: a decoder-only Transformer language model with GPT-2's layout and parameter names.

    x_0 = wte[ids] + wpe[positions]                               token + position embeddings
    x_l = x_{l-1} + attn(ln_1(x_{l-1}))                           causal self-attention (pre-LN)
    x_l = x_l + mlp(ln_2(x_l)),  mlp(x) = c_proj(gelu_tanh(c_fc(x)))
    logits = ln_f(x_L) @ wte^T                                    the head is tied to wte

Parameter names are GPT-2's (``wte``, ``wpe``, ``h.{i}.ln_1``, ``h.{i}.attn.c_attn``,
``h.{i}.attn.c_proj``, ``h.{i}.ln_2``, ``h.{i}.mlp.c_fc``, ``h.{i}.mlp.c_proj``, ``ln_f``) and
minillm's ``Linear.weight`` is ``(in, out)`` like GPT-2's ``Conv1D``, so the weights of a
Hugging Face GPT-2 checkpoint map onto it by name, untransposed (drop the ``transformer.``
prefix, the ``attn.bias``/``attn.masked_bias`` mask buffers and the tied ``lm_head.weight``). Initialisation follows nanoGPT: N(0, 0.02^2) weights and embeddings, zero
biases, and the residual projections (``c_proj``) scaled by ``1/sqrt(2 n_layer)``.

Generation uses a KV cache (:class:`KVCache`): each layer's keys and values for the
positions seen so far, so a new token costs one position of work instead of the whole
context (see :meth:`GPT.forward_step`; :meth:`PreTrainedModel.generate` drives it).
"""
from __future__ import annotations

import dataclasses
import math

from .. import functional as F
from ..autograd.function import no_grad
from ..autograd.tensor import Tensor, arange, zeros
from ..backend.kernels import reference_kernels_on
from ..nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, init
from ..nn.attention import causal_mask, merge_heads, split_heads
from ..optim import AdamW
from .base import Config, PreTrainedModel

__all__ = ["GPTConfig", "GPT", "KVCache"]


@dataclasses.dataclass
class GPTConfig(Config):
    """Sizes of a GPT. Defaults: GPT-2 small (124M parameters).

    ``vocab_size`` tokens, ``block_size`` the longest context, ``n_layer`` blocks of
    ``n_head`` heads over ``n_embd`` features (``n_embd % n_head == 0``), ``dropout`` on the
    embeddings, attention weights and residual branches, ``bias`` in Linear and LayerNorm.
    """

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self):
        self._require_ints("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
        self._require_divisible("n_embd", "n_head")
        self._require_probabilities("dropout")


class KVCache:
    """Keys and values of every layer for the positions seen so far (inference only).

    ``keys[l]`` / ``values[l]`` are preallocated ``(B, n_head, block_size, head_dim)`` Tensors;
    positions ``[0, offset)`` are filled. A layer stores its new keys/values with
    :meth:`update`; the model advances ``offset`` once all layers have run.
    """

    def __init__(self, n_layer, batch_size, n_head, block_size, head_dim, dtype, device):
        shape = (batch_size, n_head, block_size, head_dim)
        self.keys = [zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.values = [zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.batch_size, self.block_size = batch_size, block_size
        self.offset = 0

    def update(self, layer, k, v):
        """Write ``k``, ``v`` (B, n_head, n, head_dim) at positions ``[offset, offset + n)``
        and return all keys and values of the layer so far, ``(B, n_head, offset + n, hd)``."""
        end = self.offset + k.shape[2]
        self.keys[layer][:, :, self.offset:end] = k
        self.values[layer][:, :, self.offset:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class CausalSelfAttention(Module):
    """Multi-head causal self-attention with GPT-2's fused ``c_attn`` (d -> 3d: q | k | v)."""

    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x, cache=None, layer=0):
        t = x.shape[1]
        qkv = split_heads(self.c_attn(x), self.n_head, parts=3)    # (3, B, h, T, hd)
        p = self.dropout if self.training else 0.0
        if cache is None and not reference_kernels_on():   # one fused op, gradient packed as qkv
            y = F.packed_self_attention(qkv, is_causal=True, dropout_p=p)
        else:                                 # the same computation, as the equations read
            q, k, v = qkv[0], qkv[1], qkv[2]
            if cache is not None:             # generation: T new queries after cache.offset
                k, v = cache.update(layer, k, v)
            mask = causal_mask(t, k.shape[2], offset=0 if cache is None else cache.offset,
                               device=x.device)           # key j <= query i
            att = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(k.shape[-1]))
            y = F.dropout(F.masked_softmax(att, mask), p) @ v
        return self.resid_dropout(self.c_proj(merge_heads(y)))


class MLP(Module):
    """Position-wise feed-forward: c_proj(gelu_tanh(c_fc(x))), 4x wide."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(Module):
    """One pre-LN Transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(PreTrainedModel):
    """GPT-2-style language model: ``model(ids (B, T))`` -> logits ``(B, T, vocab_size)``.

    ``model(ids, targets)`` returns ``(logits, loss)`` with ``loss`` the mean cross-entropy of
    ``targets`` (B, T) (entries equal to -100 are ignored). ``T`` may not exceed
    ``config.block_size``. The output head is ``wte`` itself (weight tying: no extra parameter).
    """

    config_class = GPTConfig
    model_type = "gpt"

    def __init__(self, config):
        super().__init__(config)
        self.wte = Embedding(config.vocab_size, config.n_embd)
        self.wpe = Embedding(config.block_size, config.n_embd)
        self.drop = Dropout(config.dropout)
        self.h = ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, bias=config.bias)
        self.reset_parameters()

    def reset_parameters(self):
        """nanoGPT's init: N(0, 0.02^2) for weights and embeddings, zero biases, LayerNorm
        (1, 0), and N(0, (0.02 / sqrt(2 n_layer))^2) for the residual projections c_proj."""
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                init.normal_(p, std=0.02 / math.sqrt(2 * self.config.n_layer))
            elif name.startswith(("wte", "wpe")) or name.endswith(("c_attn.weight",
                                                                  "c_fc.weight")):
                init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                init.zeros_(p)
            else:                                        # LayerNorm weights
                init.ones_(p)

    def get_input_embeddings(self):
        """The token-embedding Parameter ``wte`` (V, n_embd), also the LM head (tied)."""
        return self.wte.weight

    def _check_ids(self, ids, offset=0):
        if not isinstance(ids, Tensor) or ids.dtype.kind not in "iu" or ids.ndim != 2:
            raise ValueError(f"GPT: ids must be an integer Tensor (B, T), got "
                             f"{getattr(ids, 'shape', type(ids).__name__)} "
                             f"{getattr(ids, 'dtype', '')}")
        t = ids.shape[1]
        if offset + t > self.config.block_size:
            where = f"positions {offset}..{offset + t - 1}" if offset else f"length {t}"
            raise ValueError(f"GPT: sequence {where} exceeds block_size="
                             f"{self.config.block_size}; crop the context to the last "
                             f"{self.config.block_size} tokens (generate() without a cache does "
                             "this) or build the model with a larger block_size")
        return t

    def forward(self, ids, targets=None):
        t = self._check_ids(ids)
        logits = self._logits(ids, arange(t, device=ids.device), cache=None)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits, targets)

    def hidden_states(self, ids):
        """The final hidden states ``ln_f(x_L)``, shape ``(B, T, n_embd)``, for ``ids`` (B, T)
        at positions ``0..T-1`` (no cache): what the LM head reads, and what task heads
        (:mod:`minillm.models.heads`) put their classifiers on."""
        t = self._check_ids(ids)
        return self._hidden_states(ids, arange(t, device=ids.device), cache=None)

    def _hidden_states(self, ids, positions, cache):
        x = self.drop(self.wte(ids) + self.wpe(positions))
        for i, block in enumerate(self.h):
            x = block(x, cache, i)
        return self.ln_f(x)

    def _logits(self, ids, positions, cache):
        x = self._hidden_states(ids, positions, cache)
        return F.linear(x, self.wte.weight.T)            # tied head: logits = x wte^T

    # -- generation with a KV cache --------------------------------------------------------
    def init_cache(self, batch_size):
        """An empty :class:`KVCache` for ``batch_size`` sequences of up to ``block_size``."""
        c = self.config
        w = self.wte.weight
        return KVCache(c.n_layer, batch_size, c.n_head, c.block_size, c.n_embd // c.n_head,
                       w.dtype, w.device)

    @no_grad()
    def forward_step(self, ids, cache):
        """Logits ``(B, n, V)`` for the new tokens ``ids (B, n)`` that continue the sequences
        in ``cache``; stores their keys/values and returns ``(logits, cache)``. Each new
        position attends to every cached position and to the new ones up to itself.
        Inference only (runs under ``no_grad``)."""
        t = self._check_ids(ids, cache.offset)
        if ids.shape[0] != cache.batch_size:
            raise ValueError(f"GPT.forward_step: ids have batch size {ids.shape[0]}, the cache "
                             f"was made for {cache.batch_size}")
        positions = arange(cache.offset, cache.offset + t, device=ids.device)
        logits = self._logits(ids, positions, cache)
        cache.offset += t
        return logits, cache

    # -- training ----------------------------------------------------------------------------
    def configure_optimizers(self, weight_decay, learning_rate, betas=(0.9, 0.95)):
        """AdamW with weight decay on the 2-D weights (matmuls, embeddings) only, not on
        biases and LayerNorm parameters (nanoGPT's rule)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return AdamW(groups, lr=learning_rate, betas=tuple(betas))
