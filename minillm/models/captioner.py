"""A prefix captioner (LLaVA-style): image features as the first "tokens" of a GPT.

The image encoder is frozen; a projection ``W_p`` maps each of its output states (the class
token and the patches) into the GPT's embedding space, and the GPT reads them as a prefix::

    v = ViT(image)                              (P, d_v)   frozen, P = patches + 1
    x = [v W_p + b_p ; wte[c_0 .. c_{T-1}]] + wpe[0 .. P+T-1]
    logits = GPT blocks (causal) on x           (P + T, V)
    loss = CE over the caption positions only: position P + t predicts c_{t+1};
           the P prefix positions predict nothing (their labels are -100)

Training goes in LLaVA's two stages: the projection alone (GPT and image encoder frozen),
then the projection and the GPT together (:meth:`PrefixCaptioner.set_stage`). Before them the
GPT may learn the captions' language from text alone: ``captioner(None, ids, targets)`` puts
an all-zero prefix in front, so the caption tokens already sit at the positions
``P .. P+T-1`` they will have behind an image (a GPT trained on captions at positions
``0 .. T-1`` does not read them at ``P ..`` without relearning its position embeddings).
"""
from __future__ import annotations

from .. import functional as F
from ..autograd import Tensor, arange, concatenate, full, no_grad, zeros
from ..nn import Linear, Module
from .gpt import GPT
from .vision import ViT

__all__ = ["PrefixCaptioner", "prefix_labels"]


def prefix_labels(targets, prefix_length, ignore_index=-100):
    """``targets (B, T)`` -> ``(B, P + T)``: ``ignore_index`` at the ``P`` prefix positions,
    then the caption targets, so a loss over all positions counts caption tokens only."""
    ignore = full((targets.shape[0], prefix_length), ignore_index, device=targets.device)
    return concatenate([ignore.astype(targets.dtype), targets], axis=1)


class PrefixCaptioner(Module):
    """``captioner(images, ids)`` -> logits ``(B, P + T, V)``; with ``targets (B, T)`` (-100 =
    ignore) -> ``(logits, loss)``, the loss over caption positions only."""

    def __init__(self, vision, gpt):
        super().__init__()
        if not isinstance(vision, ViT) or not isinstance(gpt, GPT):
            raise TypeError(f"PrefixCaptioner: needs a ViT and a GPT, got "
                            f"{type(vision).__name__} and {type(gpt).__name__}")
        self.vision, self.gpt = vision, gpt
        self.prefix_length = vision.config.num_patches + 1
        self.projection = Linear(vision.config.n_embd, gpt.config.n_embd)
        for p in self.vision.parameters():
            p.requires_grad = False
        self.stage = 2

    def set_stage(self, stage):
        """Stage 1: only the projection learns. Stage 2: the projection and the GPT. The
        image encoder stays frozen in both."""
        if stage not in (1, 2):
            raise ValueError(f"PrefixCaptioner.set_stage: stage must be 1 or 2, got {stage!r}")
        for p in self.gpt.parameters():
            p.requires_grad = stage == 2
        self.stage = stage
        return self

    def prefix(self, images, batch_size=None):
        """The projected image states ``(B, P, n_embd)`` (the encoder runs without gradients);
        zeros for ``images=None`` (text-only training)."""
        if images is None:
            w = self.projection.weight
            return zeros((batch_size, self.prefix_length, self.gpt.config.n_embd),
                         dtype=w.dtype, device=w.device)
        with no_grad():
            v = self.vision(images)
        return self.projection(v)

    def forward(self, images, ids, targets=None):
        if not isinstance(ids, Tensor) or ids.ndim != 2 or (
                images is not None and ids.shape[0] != images.shape[0]):
            raise ValueError(f"PrefixCaptioner: ids must be an integer Tensor (B, T) with the "
                             f"images' batch size, got {getattr(ids, 'shape', type(ids).__name__)}"
                             f" for images {getattr(images, 'shape', None)}")
        prefix = self.prefix(images, ids.shape[0])
        n = self.prefix_length + ids.shape[1]
        if n > self.gpt.config.block_size:
            raise ValueError(f"PrefixCaptioner: prefix {self.prefix_length} + {ids.shape[1]} "
                             f"tokens exceed the GPT's block_size={self.gpt.config.block_size}")
        g = self.gpt
        x = concatenate([prefix, g.wte(ids)], axis=1) + g.wpe(arange(n, device=ids.device))
        x = g.drop(x)
        for i, block in enumerate(g.h):
            x = block(x, None, i)
        logits = F.linear(g.ln_f(x), g.wte.weight.T)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits, prefix_labels(targets, self.prefix_length))

    @no_grad()
    def generate(self, images, bos_id, max_new_tokens):
        """Greedy captions: ``(B, max_new_tokens)`` token ids after ``bos_id`` (cut them at
        the end-of-sequence token when decoding)."""
        b = images.shape[0]
        ids = full((b, 1), bos_id, device=self.projection.weight.device).astype("int64")
        for _ in range(max_new_tokens):
            nxt = self(images, ids)[:, -1].argmax(axis=-1).astype("int64")
            ids = concatenate([ids, nxt.reshape(b, 1)], axis=1)
        return ids[:, 1:]
