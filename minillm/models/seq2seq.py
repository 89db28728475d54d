"""An encoder-decoder Transformer (Vaswani et al., 2017) for sequence-to-sequence tasks.

    memory = Encoder(src_embed(src) * sqrt(d) + PE)                       bidirectional
    logits = Decoder(tgt_embed(tgt_in) * sqrt(d) + PE, memory) @ W_out    causal + cross-attention

Training uses teacher forcing: the decoder reads the gold target shifted right
(``tgt_in = [bos, y_1, ..., y_{n-1}]``) and predicts ``[y_1, ..., y_n]`` at every position in
one pass. Inference decodes one token at a time, greedily (:meth:`greedy_decode`) or with
beam search (:meth:`beam_search`); both recompute the decoder over the prefix at every
step (no cache: simple, O(L^2) work per sequence, fine for short outputs).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd.function import no_grad
from ..autograd.tensor import Tensor, tensor
from ..nn import Dropout, Embedding, Linear, init
from ..nn.attention import SinusoidalPositionalEncoding
from ..nn.transformer import TransformerDecoder, TransformerEncoder
from ..validation import check_int
from .base import Config, PreTrainedModel

__all__ = ["Seq2SeqConfig", "Seq2SeqTransformer"]


@dataclasses.dataclass
class Seq2SeqConfig(Config):
    """Sizes of a :class:`Seq2SeqTransformer`.

    ``share_embeddings``: one table for source and target tokens (needs equal vocabularies);
    ``tie_output``: the output layer is the target embedding table (logits = x E_tgt^T, as in
    the paper); ``norm_first``: pre-LN layers (then each stack ends with a LayerNorm);
    ``max_len``: the longest source or target the sinusoidal positions cover.
    """

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 128
    nhead: int = 4
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    dim_feedforward: int = 512
    dropout: float = 0.1
    activation: str = "relu"
    norm_first: bool = False
    max_len: int = 512
    share_embeddings: bool = False
    tie_output: bool = True

    def __post_init__(self):
        self._require_ints("src_vocab_size", "tgt_vocab_size", "d_model", "nhead",
                           "num_encoder_layers", "num_decoder_layers", "dim_feedforward", "max_len")
        self._require_divisible("d_model", "nhead")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError("Seq2SeqConfig: share_embeddings needs src_vocab_size == "
                             f"tgt_vocab_size, got {self.src_vocab_size} and {self.tgt_vocab_size}")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"Seq2SeqConfig: activation must be 'relu' or 'gelu', got "
                             f"{self.activation!r}")


class Seq2SeqTransformer(PreTrainedModel):
    """Encoder-decoder Transformer: ``model(src (B, S), tgt_in (B, T))`` -> ``(B, T, V_tgt)``.

    Sub-modules: ``src_embed``, ``tgt_embed`` (the same module when ``share_embeddings``),
    ``pos_encoding`` (sinusoidal), ``encoder``, ``decoder`` (the stacks of
    :mod:`minillm.nn.transformer`) and ``lm_head`` (absent when ``tie_output``).
    Padding masks are bool ``(B, S)`` / ``(B, T)``, True at padding positions.
    """

    config_class = Seq2SeqConfig
    model_type = "seq2seq"

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.src_embed = Embedding(c.src_vocab_size, c.d_model)
        self.tgt_embed = self.src_embed if c.share_embeddings else \
            Embedding(c.tgt_vocab_size, c.d_model)
        self.pos_encoding = SinusoidalPositionalEncoding(c.d_model, c.max_len)
        self.dropout = Dropout(c.dropout)
        stack = dict(d_model=c.d_model, nhead=c.nhead, dim_feedforward=c.dim_feedforward,
                     dropout=c.dropout, activation=c.activation, norm_first=c.norm_first,
                     norm=True if c.norm_first else None)
        self.encoder = TransformerEncoder(c.num_encoder_layers, **stack)
        self.decoder = TransformerDecoder(c.num_decoder_layers, **stack)
        if not c.tie_output:
            self.lm_head = Linear(c.d_model, c.tgt_vocab_size)
        # embeddings ~ N(0, 1/d): times sqrt(d) they enter with unit variance, and a tied
        # output layer starts with logits of order 1
        for emb in {id(e): e for e in (self.src_embed, self.tgt_embed)}.values():
            init.normal_(emb.weight, std=c.d_model ** -0.5)

    def _embed(self, table, ids):
        if not isinstance(ids, Tensor) or ids.dtype.kind not in "iu" or ids.ndim != 2:
            raise ValueError(f"Seq2SeqTransformer: token ids must be an integer Tensor (B, L), got "
                             f"{getattr(ids, 'shape', type(ids).__name__)}")
        x = table(ids) * math.sqrt(self.config.d_model)
        return self.dropout(self.pos_encoding(x))

    def encode(self, src, src_key_padding_mask=None):
        """The encoder output ``memory`` (B, S, d_model)."""
        return self.encoder(self._embed(self.src_embed, src),
                            src_key_padding_mask=src_key_padding_mask)

    def decode(self, tgt_in, memory, memory_key_padding_mask=None, tgt_key_padding_mask=None):
        """Logits (B, T, V_tgt) for the target prefix ``tgt_in`` given ``memory``."""
        y = self.decoder(self._embed(self.tgt_embed, tgt_in), memory,
                         tgt_key_padding_mask=tgt_key_padding_mask,
                         memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=True)
        if self.config.tie_output:
            return F.linear(y, self.tgt_embed.weight.T)
        return self.lm_head(y)

    def forward(self, src, tgt_in, src_key_padding_mask=None, tgt_key_padding_mask=None):
        """Teacher forcing: logits for every position of ``tgt_in`` in one pass."""
        memory = self.encode(src, src_key_padding_mask)
        return self.decode(tgt_in, memory, src_key_padding_mask, tgt_key_padding_mask)

    # -- inference ------------------------------------------------------------------------------
    def _check_decode_args(self, max_len, bos_id, eos_id):
        v = self.config.tgt_vocab_size
        check_int(max_len, "max_len")
        if max_len + 1 > self.config.max_len:
            raise ValueError(f"max_len + 1 = {max_len + 1} target positions exceed the model's "
                             f"max_len={self.config.max_len}")
        for name, i in (("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= i < v:
                raise ValueError(f"{name} must be a target token id in [0, {v}), got {i}")

    @no_grad()
    def greedy_decode(self, src, max_len, bos_id, eos_id, src_key_padding_mask=None):
        """Most likely next token at each step: ``(B, 1 + n)`` ids starting with ``bos_id``,
        ``n <= max_len``; after its ``eos_id`` a sequence keeps producing ``eos_id``."""
        self._check_decode_args(max_len, bos_id, eos_id)
        was_training = self.training
        self.eval()
        try:
            memory = self.encode(src, src_key_padding_mask)
            xp = memory.xp
            out = xp.full((src.shape[0], 1), bos_id, dtype=np.int64)
            finished = xp.zeros(src.shape[0], dtype=bool)
            for _ in range(max_len):
                logits = self.decode(Tensor.wrap(out, memory.device), memory,
                                     src_key_padding_mask)
                nxt = logits.data[:, -1].argmax(axis=-1).astype(np.int64)
                nxt = xp.where(finished, eos_id, nxt)
                finished = finished | (nxt == eos_id)
                out = xp.concatenate([out, nxt[:, None]], axis=1)
                if bool(backend.to_host(finished.all())):
                    break
        finally:
            self.train(was_training)
        return Tensor.wrap(out, memory.device)

    @no_grad()
    def beam_search(self, src, beam_size, max_len, bos_id, eos_id, length_penalty=1.0,
                    src_key_padding_mask=None, return_scores=False):
        """Beam search: the best ``(B, 1 + n)`` ids per source (``bos_id`` first; sequences
        shorter than the longest are padded with ``eos_id``).

        A hypothesis ``y_1 .. y_n`` (its last token ``eos_id``, or ``n = max_len``) scores
        ``sum_i log p(y_i | y_<i, src) / n ** length_penalty`` (0: the raw log-probability,
        which favours short outputs; 1: the mean per token). Each step extends the
        ``beam_size`` best live prefixes by every token; candidates ending in ``eos_id`` move
        to the finished list, the best ``beam_size`` others stay live. A source is done when it
        has ``beam_size`` finished hypotheses and no live prefix can still beat the worst of
        them (an exact bound, so a beam as large as the search space is exhaustive search).
        ``return_scores=True`` also returns the host array of the chosen scores.
        """
        self._check_decode_args(max_len, bos_id, eos_id)
        beam_size = check_int(beam_size, "beam_size", "beam_search")
        b = src.shape[0]
        was_training = self.training
        self.eval()
        try:
            memory = self.encode(src, src_key_padding_mask)
            dev = memory.device
            best, best_scores = self._search_beams(memory, src_key_padding_mask, b, beam_size,
                                                   max_len, bos_id, eos_id,
                                                   float(length_penalty))
        finally:
            self.train(was_training)
        width = max(len(t) for t in best)
        out = np.full((b, width), eos_id, dtype=np.int64)
        for i, t in enumerate(best):
            out[i, :len(t)] = t
        out = tensor(out, device=dev)
        return (out, best_scores) if return_scores else out

    def _search_beams(self, memory, src_key_padding_mask, b, k, max_len, bos_id, eos_id, lp):
        """The search over the encoded sources: ``(best token arrays, their scores)``."""
        v = self.config.tgt_vocab_size
        dev = memory.device
        rows = tensor(np.repeat(np.arange(b), k), device=dev)      # each source k times
        memory = memory[rows]
        kpm = None if src_key_padding_mask is None else src_key_padding_mask[rows]
        seqs = np.full((b, k, 1), bos_id, dtype=np.int64)            # host bookkeeping
        scores = np.full((b, k), -np.inf)
        scores[:, 0] = 0.0                                           # one live beam at first
        finished = [[] for _ in range(b)]                            # (norm score, tokens)
        done = np.zeros(b, dtype=bool)
        for step in range(1, max_len + 1):
            ids = tensor(seqs.reshape(b * k, -1), device=dev)
            logp = F.log_softmax(self.decode(ids, memory, kpm)[:, -1], axis=-1).numpy()
            cand = (scores[:, :, None] + logp.reshape(b, k, v).astype(np.float64))
            cand = cand.reshape(b, k * v)
            seqs, scores = self._beam_step(cand, seqs, finished, done, step, max_len, eos_id, lp)
            if done.all():
                break
        return self._best_hypotheses(seqs, scores, finished, done, lp)

    def _beam_step(self, cand, seqs, finished, done, step, max_len, eos_id, lp):
        """Extend each unfinished source's beams by its best candidates ``cand`` (B, k * V):
        those ending in ``eos_id`` join ``finished``, the k best others stay live. Updates
        ``finished`` and ``done``; returns the new ``(seqs, scores)``."""
        b, k = seqs.shape[:2]
        v = self.config.tgt_vocab_size
        new_seqs, new_scores = seqs.copy(), np.full((b, k), -np.inf)
        new_seqs = np.concatenate([new_seqs, np.full((b, k, 1), eos_id)], axis=2)
        for i in range(b):
            if done[i]:
                continue
            live = 0
            for flat in np.argsort(-cand[i], kind="stable"):
                s = cand[i, flat]
                if s == -np.inf or live == k:
                    break
                beam, tok = divmod(int(flat), v)
                tokens = np.append(seqs[i, beam], tok)
                if tok == eos_id:
                    finished[i].append((s / step ** lp, tokens))
                else:
                    new_seqs[i, live], new_scores[i, live] = tokens, s
                    live += 1
            done[i] = self._beam_done(finished[i], new_scores[i], k, step, max_len, lp)
        return new_seqs, new_scores

    @staticmethod
    def _best_hypotheses(seqs, scores, finished, done, lp):
        """Per source, the best-scoring finished hypothesis or (if not done) live prefix."""
        b, k = scores.shape
        best, best_scores = [], np.empty(b)
        n = seqs.shape[2] - 1                     # tokens generated by the live prefixes
        for i in range(b):
            # live prefixes that reached max_len are complete hypotheses too
            pool = finished[i] + [(scores[i, j] / n ** lp, seqs[i, j]) for j in range(k)
                                  if not done[i] and scores[i, j] > -np.inf]
            score, tokens = max(pool, key=lambda h: h[0])
            best.append(tokens)
            best_scores[i] = score
        return best, best_scores

    @staticmethod
    def _beam_done(finished, live_scores, k, step, max_len, lp):
        """True when ``k`` hypotheses are finished and no live prefix can beat the k-th best."""
        if len(finished) < k:
            return False
        kth = sorted((s for s, _ in finished), reverse=True)[k - 1]
        best_live = live_scores.max()
        if best_live == -np.inf:
            return True
        # a live sum can only decrease; its best normalised value over lengths step+1..max_len
        length = max_len if lp > 0 else step + 1
        return best_live / length ** lp <= kth
