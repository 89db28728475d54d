"""A feed-forward neural language model (Bengio, Ducharme, Vincent & Jauvin, 2003).

The next word is predicted from the previous ``context_size`` (= n - 1) words only::

    x      = [C(w_{t-n+2}); ...; C(w_t)]          concatenated embeddings, (n-1) * embed_dim
    hidden = tanh(x H + d)
    logits = hidden U + b  (+ x W with direct_connections)
    P(w_{t+1} | w_{t-n+2..t}) = softmax(logits)

``model(ids)`` gives logits (B, T, V) for every position t of ids (B, T), like the other
language models: position t sees tokens ``t - context_size + 1 .. t``. Positions before the
start of the sequence are filled with a learned "beginning" embedding (an extra row,
index ``vocab_size``, of the embedding table), so every position gets a prediction.
"""
from __future__ import annotations

import dataclasses

from .. import backend
from .. import functional as F
from ..autograd import Tensor
from ..nn import Dropout, Embedding, Linear
from .base import Config, PreTrainedModel

__all__ = ["FeedForwardLM", "FeedForwardLMConfig"]


@dataclasses.dataclass
class FeedForwardLMConfig(Config):
    """``context_size`` previous words (n - 1), each embedded in ``embed_dim``; one tanh
    layer of ``hidden_size``; ``direct_connections`` adds Bengio's linear path x W."""

    vocab_size: int
    context_size: int = 3
    embed_dim: int = 32
    hidden_size: int = 64
    direct_connections: bool = False
    dropout: float = 0.0


class FeedForwardLM(PreTrainedModel):
    """Bengio et al.'s neural probabilistic language model.

    Parameters: ``embed.weight`` (V + 1, D) (the last row: "before the start"),
    ``hidden.weight`` ((n-1) D, hidden), ``hidden.bias``, ``out.weight`` (hidden, V),
    ``out.bias`` and, with ``direct_connections``, ``direct.weight`` ((n-1) D, V).
    """

    config_class = FeedForwardLMConfig
    model_type = "ffnn_lm"

    def __init__(self, config):
        super().__init__(config)
        c = config
        if c.context_size < 1:
            raise ValueError(f"FeedForwardLM: context_size must be >= 1, got {c.context_size}")
        self.embed = Embedding(c.vocab_size + 1, c.embed_dim)
        n_in = c.context_size * c.embed_dim
        self.hidden = Linear(n_in, c.hidden_size)
        self.out = Linear(c.hidden_size, c.vocab_size)
        if c.direct_connections:
            self.direct = Linear(n_in, c.vocab_size, bias=False)
        self.drop = Dropout(c.dropout)

    def _context_size(self):
        return self.config.context_size           # generate() needs only this many tokens

    def windows(self, ids):
        """The ids each position sees: (B, T) -> (B, T, context_size), oldest first, with
        ``vocab_size`` ("before the start") where the window reaches before position 0."""
        n1 = self.config.context_size
        xp = ids.xp
        B, T = ids.shape
        pad = xp.full((B, n1 - 1), self.config.vocab_size, dtype=ids.dtype)
        padded = xp.concatenate([pad, ids.data], axis=1)          # (B, T + n1 - 1)
        # row t: padded positions t .. t+n1-1, i.e. the ids t-n1+1 .. t
        idx = xp.arange(T)[:, None] + xp.arange(n1)[None, :]
        return Tensor.wrap(padded[:, idx], ids.device)

    def forward(self, ids):
        """Logits (B, T, V) for ids (B, T)."""
        if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"FeedForwardLM: ids must be a (B, T) integer Tensor, got "
                             f"{getattr(ids, 'shape', type(ids).__name__)}")
        V = self.config.vocab_size
        if ids.size:
            backend.check(((ids.data < 0) | (ids.data >= V)).any(),
                          lambda: IndexError(f"FeedForwardLM: token ids must be in [0, {V})"))
        B, T = ids.shape
        x = self.embed(self.windows(ids))                          # (B, T, n-1, D)
        x = x.reshape(B, T, -1)                                     # concatenated
        x = self.drop(x)
        h = F.tanh(self.hidden(x))
        logits = self.out(self.drop(h))
        if self.config.direct_connections:
            logits = logits + self.direct(x)
        return logits
