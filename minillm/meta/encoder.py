"""A text encoder for metric-based few-shot learning: texts -> one vector each.

    f(x) = mean over the real tokens t of h_t,    h = Body(tokenize(x))

``Body`` is a minillm Transformer: a small BERT (bidirectional, post-LN blocks of
:mod:`minillm.models.bert`) trained from scratch with a byte-level BPE tokenizer learned on
the meta-train texts (:meth:`TextEncoder.from_texts`), or the GPT/BERT body of a minillm model
directory with its own ``tokenizer.json`` (:meth:`TextEncoder.from_pretrained`; a head model,
e.g. one written by ``minillm finetune``, gives its body).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..autograd import tensor
from ..data import BPETokenizer, Tokenizer
from ..models import BERT, GPT, BertConfig
from ..nn import Module

__all__ = ["TextEncoder"]

#: special tokens of the tokenizer built by :meth:`TextEncoder.from_texts`
SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]",
            "bos": None, "eos": None}


class TextEncoder(Module):
    """``encoder(texts)`` -> ``(len(texts), hidden_size)``: the mean of the body's final
    token states over the real (not padding) tokens. Texts longer than ``max_length``
    tokens are cut."""

    def __init__(self, tokenizer, body, max_length=48):
        super().__init__()
        if not isinstance(body, (BERT, GPT)):
            raise TypeError(f"TextEncoder: the body must be a minillm BERT or GPT, got "
                            f"{type(body).__name__}")
        self.tokenizer, self.body, self.max_length = tokenizer, body, int(max_length)
        cfg = body.config
        self.hidden_size = cfg.n_embd if isinstance(body, GPT) else cfg.hidden_size

    @classmethod
    def from_texts(cls, texts, vocab_size=4000, hidden_size=128, num_layers=2, num_heads=2,
                   dropout=0.1, max_length=48):
        """A fresh BERT body (``num_layers`` x ``hidden_size``, feed-forward 4x) and a BPE
        tokenizer of at most ``vocab_size`` tokens learned from ``texts``."""
        tok = BPETokenizer.train(list(texts), vocab_size=vocab_size, special_tokens=SPECIALS)
        cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         intermediate_size=4 * hidden_size, max_position_embeddings=max_length,
                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                         pad_token_id=tok.pad_id)
        return cls(tok, BERT(cfg, add_pooling_layer=False), max_length)

    @classmethod
    def from_pretrained(cls, directory, max_length=48):
        """The body of the minillm model in ``directory`` (``config.json``, ``model.npz``,
        ``tokenizer.json``), kept as it is: fine-tuned by whatever trains the encoder."""
        from ..models.auto import load_model  # noqa: PLC0415
        model = load_model(directory)
        body = next((m for m in (model, getattr(model, "base", None),
                                 getattr(model, "bert", None)) if isinstance(m, (BERT, GPT))),
                    None)
        if body is None:
            raise ValueError(f"TextEncoder.from_pretrained: {directory} holds a "
                             f"{type(model).__name__}, not a GPT or BERT body")
        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"TextEncoder.from_pretrained: {directory} has no "
                                    "tokenizer.json (minillm pretrain writes it beside the model)")
        cfg = body.config
        positions = getattr(cfg, "block_size", None) or cfg.max_position_embeddings
        return cls(Tokenizer.load(path), body, min(max_length, positions))

    def forward(self, texts):
        dev = next(iter(self.body.parameters())).device
        batch = self.tokenizer.encode_batch(list(texts), truncation=True,
                                            max_length=self.max_length, return_tensors="np")
        ids = tensor(batch["input_ids"], device=dev)
        if isinstance(self.body, GPT):                     # right padding: causal states of
            states = self.body.hidden_states(ids)          # real tokens never see a pad
        else:
            states, _ = self.body(ids, attention_mask=tensor(batch["attention_mask"], device=dev))
        real = tensor(batch["attention_mask"][..., None].astype(np.float64), device=dev,
                      dtype=states.dtype)
        return (states * real).sum(axis=1) / real.sum(axis=1)
