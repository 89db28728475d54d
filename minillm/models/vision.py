"""ViT (Dosovitskiy et al., 2021): an image encoder made of the Transformer blocks text uses.

An image ``(H, W, C)`` is cut into ``N = (H/p)(W/p)`` patches of ``p x p`` pixels, each
flattened to a vector of ``p*p*C`` numbers; then, with a learned class token ``x_cls`` and
learned position embeddings ``E_pos``::

    z_0 = [x_cls ; x_1 W_E ; ... ; x_N W_E] + E_pos      patch embedding: a Linear on patches
    z_l = TransformerBlock(z_{l-1})                       pre-LN, bidirectional (no causal mask)
    h   = LN(z_L)                                         (B, N + 1, n_embd)
    y   = h[:, 0]                                         the class token's state: the image

The blocks are minillm's :class:`~minillm.nn.TransformerEncoderLayer` with ``norm_first=True``
and GELU: ``x + MSA(LN(x))`` then ``x + MLP(LN(x))``, GPT-2's block without the causal mask.
"""
from __future__ import annotations

import dataclasses

from ..autograd import Tensor, concatenate, zeros
from ..nn import LayerNorm, Linear, ModuleList, Parameter, TransformerEncoderLayer, init
from .base import Config, PreTrainedModel

__all__ = ["ViTConfig", "ViT", "patchify"]


def patchify(images, patch_size):
    """``images (B, H, W, C)`` -> patches ``(B, N, p*p*C)``, row by row; each patch is its
    ``p x p x C`` pixels flattened in (row, column, channel) order."""
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"patchify: images must be a Tensor (B, H, W, C), got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    b, h, w, c = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"patchify: image size {h}x{w} is not divisible by patch_size={p}")
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


@dataclasses.dataclass
class ViTConfig(Config):
    """Sizes of a ViT: ``image_size`` x ``image_size`` images of ``channels`` channels, cut
    into patches of ``patch_size``; ``n_layer`` blocks of ``n_head`` heads over ``n_embd``
    features (MLP 4x wide), ``dropout`` in the blocks."""

    image_size: int = 8
    patch_size: int = 2
    channels: int = 1
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0

    def __post_init__(self):
        self._require_ints("image_size", "patch_size", "channels", "n_layer", "n_head",
                           "n_embd")
        self._require_divisible("image_size", "patch_size")
        self._require_divisible("n_embd", "n_head")
        self._require_probabilities("dropout")

    @property
    def num_patches(self):
        return (self.image_size // self.patch_size) ** 2


class ViT(PreTrainedModel):
    """``vit(images (B, H, W, C))`` -> hidden states ``(B, N + 1, n_embd)`` (class token
    first); :meth:`embed` gives the class token's state ``(B, n_embd)``. Grey images
    ``(B, H, W)`` get a channel axis."""

    config_class = ViTConfig
    model_type = "vit"

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.patch_embed = Linear(c.patch_size * c.patch_size * c.channels, c.n_embd)
        self.cls_token = Parameter(zeros((1, 1, c.n_embd)))
        self.pos_embed = Parameter(zeros((1, c.num_patches + 1, c.n_embd)))
        self.blocks = ModuleList([
            TransformerEncoderLayer(c.n_embd, c.n_head, 4 * c.n_embd, c.dropout, "gelu",
                                    norm_first=True) for _ in range(c.n_layer)])
        self.ln_f = LayerNorm(c.n_embd)
        init.normal_(self.cls_token, std=0.02)
        init.normal_(self.pos_embed, std=0.02)

    def _check_images(self, images):
        c = self.config
        if isinstance(images, Tensor) and images.ndim == 3 and c.channels == 1:
            images = images.reshape(*images.shape, 1)
        want = (c.image_size, c.image_size, c.channels)
        if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"ViT: images must be a Tensor (B, {want[0]}, {want[1]}, {want[2]}),"
                             f" got {getattr(images, 'shape', type(images).__name__)}")
        return images

    def forward(self, images):
        x = self.patch_embed(patchify(self._check_images(images), self.config.patch_size))
        cls = self.cls_token.expand(x.shape[0], 1, x.shape[2])
        z = concatenate([cls, x], axis=1) + self.pos_embed
        for block in self.blocks:
            z = block(z)
        return self.ln_f(z)

    def embed(self, images):
        """The image's vector: the final state of the class token, ``(B, n_embd)``."""
        return self(images)[:, 0]

