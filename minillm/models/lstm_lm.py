"""An LSTM language model (Zaremba, Sutskever & Vinyals 2014; Press & Wolf 2017 for tying).

    e_t      = dropout(E[x_t])                       E (V, embed_dim)
    h_t      = LSTM(e_1..e_t)                        num_layers, dropout between layers
    logits_t = dropout(h_t) W + b                    W (hidden, V), or E^T when tied

``model(ids)`` maps ids (B, T) to logits (B, T, V). The recurrent state makes two things
cheap that a Transformer pays for: generation is O(1) per token (``init_cache`` /
``forward_step`` carry the state ``(h, c)``), and truncated back-propagation through time
continues a long text chunk by chunk::

    state = None
    for x, y in chunks:                               # consecutive (B, bptt) pieces
        logits, state = model(x, state, return_state=True)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        state = model.detach_state(state)             # tuple(s.detach() for s in state)

Init (PyTorch's word-language-model example): embedding and output weights U(-0.1, 0.1),
output bias 0, the LSTM its own default U(-1/sqrt(H), 1/sqrt(H)).
"""
from __future__ import annotations

import dataclasses

from .. import functional as F
from ..autograd import Tensor, zeros
from ..nn import Dropout, Embedding, Linear, Parameter, init
from ..nn.rnn import LSTM
from .base import Config, PreTrainedModel

__all__ = ["LSTMLM", "LSTMLMConfig"]


@dataclasses.dataclass
class LSTMLMConfig(Config):
    """``vocab_size``; ``embed_dim`` and ``hidden_size`` (equal when ``tie_weights``);
    ``num_layers``; ``dropout`` (on the embeddings, between LSTM layers, before the output)."""

    vocab_size: int
    embed_dim: int = 200
    hidden_size: int = 200
    num_layers: int = 2
    dropout: float = 0.0
    tie_weights: bool = False


class LSTMLM(PreTrainedModel):
    """Embedding -> dropout -> LSTM -> dropout -> linear (optionally tied to the embedding).

    Parameters: ``embed.weight`` (V, D); ``lstm.*`` (see :class:`minillm.nn.rnn.LSTM`);
    ``head.weight`` (H, V) and ``head.bias`` (V) — or, with ``tie_weights``, only
    ``head_bias`` (V), the output weight being ``embed.weight.T``.
    """

    config_class = LSTMLMConfig
    model_type = "lstm_lm"

    def __init__(self, config):
        super().__init__(config)
        c = config
        if c.tie_weights and c.embed_dim != c.hidden_size:
            raise ValueError(f"LSTMLM: tie_weights needs embed_dim == hidden_size (the output "
                             f"layer reuses the (vocab, embed_dim) embedding as its weight), "
                             f"got embed_dim={c.embed_dim}, hidden_size={c.hidden_size}; set them "
                             "equal or use tie_weights=False")
        self.embed = Embedding(c.vocab_size, c.embed_dim)
        self.drop = Dropout(c.dropout)
        self.lstm = LSTM(c.embed_dim, c.hidden_size, c.num_layers, batch_first=True,
                         dropout=c.dropout)
        if c.tie_weights:
            self.head_bias = Parameter(zeros(c.vocab_size))
        else:
            self.head = Linear(c.hidden_size, c.vocab_size)
        self._init_weights()

    def _init_weights(self):
        init.uniform_(self.embed.weight, -0.1, 0.1)
        if self.config.tie_weights:
            init.zeros_(self.head_bias)
        else:
            init.uniform_(self.head.weight, -0.1, 0.1)
            init.zeros_(self.head.bias)

    def _logits(self, h):
        if self.config.tie_weights:
            return F.linear(h, self.embed.weight.T, self.head_bias)
        return self.head(h)

    def forward(self, ids, state=None, return_state=False):
        """Logits (B, T, V) for ids (B, T), starting from ``state`` ((h, c), each
        (num_layers, B, H); zeros when None). With ``return_state=True`` returns
        ``(logits, state)`` where ``state`` is the LSTM state after the last token."""
        if not isinstance(ids, Tensor) or ids.ndim != 2:
            raise ValueError(f"LSTMLM: ids must be a (B, T) integer Tensor, got "
                             f"{getattr(ids, 'shape', type(ids).__name__)}")
        x = self.drop(self.embed(ids))
        out, state = self.lstm(x, state)
        logits = self._logits(self.drop(out))
        return (logits, state) if return_state else logits

    @staticmethod
    def detach_state(state):
        """The state cut from the graph (for truncated back-propagation through time)."""
        return None if state is None else tuple(s.detach() for s in state)

    # -- generation: the LSTM state is the cache ---------------------------------------------------
    def init_cache(self, batch_size):
        """Zero states ``(h, c)``, each (num_layers, batch_size, hidden_size)."""
        w = self.embed.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        return (zeros(*shape, dtype=w.dtype, device=w.device),
                zeros(*shape, dtype=w.dtype, device=w.device))

    def forward_step(self, ids, cache):
        """Logits for ``ids`` (B, n) continuing from the state ``cache``: O(n) work."""
        return self(ids, cache, return_state=True)
