"""CLIP (Radford et al., 2021): an image encoder and a text encoder trained to agree.

For a batch of ``n`` (image, text) pairs::

    I = normalize(ViT(images)[:, 0] W_i)             (n, E)  image embeddings, unit length
    T = normalize(mean_t TextTransformer(ids) W_t)   (n, E)  text embeddings (mean over real tokens)
    s = exp(min(log_s, log 100))                     learned temperature 1/tau, kept <= 100
    L = s I T^T                                       (n, n)  row i: image i against every text
    loss = (CE(L, diag) + CE(L^T, diag)) / 2          symmetric InfoNCE: pair i is the right
                                                      answer among the n texts and n images

``log_s`` starts at ``log(1 / 0.07)`` as in CLIP. Zero-shot classification writes each class
as a text prompt ("a photo of the digit 3") and picks, for an image, the prompt whose
embedding is nearest (:meth:`CLIP.classify`).

The text encoder is a small bidirectional Transformer over token ids (the same pre-LN blocks
as :mod:`minillm.models.vision`), with learned positions; padding (``attention_mask`` 0) is
neither attended to nor pooled.
"""
from __future__ import annotations

import dataclasses
import math

from .. import functional as F
from ..autograd import Tensor, arange, zeros
from ..nn import (Embedding, LayerNorm, Linear, Module, ModuleList, Parameter,
                  TransformerEncoderLayer, init)
from .base import Config, PreTrainedModel
from .vision import ViT, ViTConfig

__all__ = ["CLIPConfig", "CLIP", "TextTransformer", "clip_loss", "normalize"]


def normalize(x, eps=1e-8):
    """``x / ||x||`` along the last axis (rows of unit length)."""
    return x / ((x * x).sum(axis=-1, keepdims=True) + eps).sqrt()


def clip_loss(logits):
    """Symmetric InfoNCE of an ``(n, n)`` similarity matrix whose diagonal holds the matching
    pairs: the mean of cross-entropy over rows (image -> text) and over columns (text -> image)."""
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"clip_loss: logits must be a square Tensor (n, n), got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    labels = arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) * 0.5


class TextTransformer(Module):
    """``text(ids (B, T), attention_mask (B, T) or None)`` -> ``(B, width)``: token + learned
    position embeddings, ``layers`` bidirectional pre-LN blocks, LayerNorm, then the mean of
    the states of the real tokens (``attention_mask`` 1)."""

    def __init__(self, vocab_size, context_length, width, layers, heads, dropout=0.0):
        super().__init__()
        self.context_length = context_length
        self.token_embedding = Embedding(vocab_size, width)
        self.positional_embedding = Parameter(zeros((context_length, width)))
        self.blocks = ModuleList([TransformerEncoderLayer(width, heads, 4 * width, dropout,
                                                          "gelu", norm_first=True)
                                  for _ in range(layers)])
        self.ln_final = LayerNorm(width)
        init.normal_(self.token_embedding.weight, std=0.02)
        init.normal_(self.positional_embedding, std=0.01)

    def forward(self, ids, attention_mask=None):
        if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"TextTransformer: ids must be an integer Tensor (B, T), got "
                             f"{getattr(ids, 'shape', type(ids).__name__)}")
        t = ids.shape[1]
        if t > self.context_length:
            raise ValueError(f"TextTransformer: {t} tokens exceed context_length="
                             f"{self.context_length}; cut the texts")
        pad = None if attention_mask is None else attention_mask == 0       # True = padding
        x = self.token_embedding(ids) + self.positional_embedding[:t]
        for block in self.blocks:
            x = block(x, src_key_padding_mask=pad)
        x = self.ln_final(x)
        if attention_mask is None:
            return x.mean(axis=1)
        keep = attention_mask.astype(x.dtype)                                 # (B, T)
        return (x * keep.unsqueeze(-1)).sum(axis=1) / keep.sum(axis=1, keepdims=True)


@dataclasses.dataclass
class CLIPConfig(Config):
    """Sizes of a CLIP: the image tower (a :class:`ViTConfig`'s fields, ``vision_*``), the
    text tower (``vocab_size`` tokens, at most ``context_length``, ``text_*``), the shared
    ``embed_dim``, the starting temperature and the largest logit scale."""

    image_size: int = 8
    patch_size: int = 2
    channels: int = 1
    vision_layers: int = 2
    vision_heads: int = 4
    vision_width: int = 64
    vocab_size: int = 64
    context_length: int = 32
    text_layers: int = 2
    text_heads: int = 4
    text_width: int = 64
    embed_dim: int = 64
    dropout: float = 0.0
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0

    def __post_init__(self):
        self._require_ints("vocab_size", "context_length", "text_layers", "text_heads",
                           "text_width", "embed_dim")
        self._require_divisible("text_width", "text_heads")
        if not (self.init_temperature > 0 and self.max_logit_scale > 1):
            raise ValueError(f"CLIPConfig: init_temperature must be > 0 and max_logit_scale > 1,"
                             f" got {self.init_temperature}, {self.max_logit_scale}")
        self.vision_config()                                  # validates the image tower

    def vision_config(self):
        return ViTConfig(self.image_size, self.patch_size, self.channels, self.vision_layers,
                         self.vision_heads, self.vision_width, self.dropout)


class CLIP(PreTrainedModel):
    """``clip(images, ids, attention_mask=None)`` -> ``logits_per_image (B_img, B_txt)``;
    :func:`clip_loss` of it is the training loss for matching pairs."""

    config_class = CLIPConfig
    model_type = "clip"

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.visual = ViT(c.vision_config())
        self.text = TextTransformer(c.vocab_size, c.context_length, c.text_width,
                                    c.text_layers, c.text_heads, c.dropout)
        self.visual_projection = Linear(c.vision_width, c.embed_dim, bias=False)
        self.text_projection = Linear(c.text_width, c.embed_dim, bias=False)
        self.logit_scale = Parameter(zeros((1,)))
        init.constant_(self.logit_scale, math.log(1.0 / c.init_temperature))

    def encode_image(self, images):
        """Unit-length image embeddings ``(B, embed_dim)``."""
        return normalize(self.visual_projection(self.visual.embed(images)))

    def encode_text(self, ids, attention_mask=None):
        """Unit-length text embeddings ``(B, embed_dim)``."""
        return normalize(self.text_projection(self.text(ids, attention_mask)))

    def scale(self):
        """``exp(log_s)`` with ``log_s`` clamped to ``log(max_logit_scale)`` (CLIP's 100)."""
        return self.logit_scale.clip(max=math.log(self.config.max_logit_scale)).exp()

    def forward(self, images, ids, attention_mask=None):
        image, text = self.encode_image(images), self.encode_text(ids, attention_mask)
        return (image @ text.T) * self.scale()

    def loss(self, images, ids, attention_mask=None):
        """The symmetric InfoNCE loss of a batch of matching (image, text) pairs."""
        return clip_loss(self(images, ids, attention_mask))

    def classify(self, images, ids, attention_mask=None):
        """Zero-shot classification: for each image the index of the nearest text prompt
        (one prompt per class), an integer Tensor ``(B,)``."""
        return (self.encode_image(images) @ self.encode_text(ids, attention_mask).T).argmax(
            axis=-1)
