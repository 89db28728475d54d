"""Permutation language modelling (XLNet, Yang et al., 2019) on the BERT encoder.

An autoregressive LM factorizes ``p(x) = prod_t p(x_t | x_<t)`` in the order 1..T and so
sees only left context. XLNet keeps the autoregressive objective but samples a
*factorization order* ``z`` (a random permutation of the positions) per sequence:

    max  E_z [ sum_{t > T-K} log p(x_{z_t} | x_{z_<t}) ]

The positions are not moved: each token keeps its position embedding, and the order is
imposed with attention masks. Only the last ``K = num_predict`` steps of ``z`` are
predicted ("partial prediction": they have the most context). With ``rank(i)`` = the step
at which position ``i`` comes in ``z``:

* content stream ``h``: ``i`` may attend to ``j`` iff ``rank(j) <= rank(i)``. ``h_i`` encodes
  ``x_i`` and what comes before it in ``z`` (the token itself included).
* query stream ``g``: ``i`` may attend to ``j`` iff ``rank(j) < rank(i)``. It starts from a
  learnable query vector ``w`` plus position (no token), so the prediction of ``x_i`` knows
  *where* it predicts but never *what* is there.

Two-stream attention, layer by layer, with the SAME layer weights for both streams::

    h^l = Layer(query=h^{l-1}, keys/values=h^{l-1}, mask=content)
    g^l = Layer(query=g^{l-1}, keys/values=h^{l-1}, mask=query)
    logits_i = MLM-head(g^L_i)          (decoder tied to the word embeddings)

so ``g_i`` depends only on tokens strictly earlier in ``z``. Here the layers are BERT's
(:class:`~minillm.models.bert.BertLayer` with ``key_value_states``), the query vector is
a token's word-embedding row (e.g. the tokenizer's [MASK]) or a Parameter you pass.

Simplifications against XLNet (documented, on purpose): absolute position embeddings instead
of relative ones; no segment recurrence / memory (Transformer-XL); the non-target context
follows the permutation strictly (XLNet lets all non-target tokens see each other); a
target that comes first in ``z`` sees no token at all (its attention output is zero, its
prediction uses position only). Padding (``attention_mask`` 0) is put after every real token
in ``z``, is never a target and is never attended to.
"""
from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, full, tensor
from ..validation import check_int
from .bert import extended_attention_mask

__all__ = ["PLMMasks", "PLMOutput", "sample_factorization_order", "factorization_masks",
           "two_stream_encode", "plm_forward", "plm_loss"]


@dataclasses.dataclass
class PLMMasks:
    """A factorization order and the masks it implies (all on the model's device).

    ``order`` (B, T): ``order[b, t]`` = the position predicted at step t (``z_t``);
    ``rank`` (B, T): ``rank[b, i]`` = the step of position i (the inverse permutation);
    ``content_mask``/``query_mask`` (B, T, T) bool, [b, i, j] True = i may attend to j;
    ``target_mask`` (B, T) bool: the positions to predict (the last K real steps of z).
    """

    order: Tensor
    rank: Tensor
    content_mask: Tensor
    query_mask: Tensor
    target_mask: Tensor


@dataclasses.dataclass
class PLMOutput:
    """What :func:`plm_forward` returns: the mean loss over targets, the query-stream
    logits (B, T, V) (only target rows are trained), the labels (-100 off target) and masks."""

    loss: Tensor
    logits: Tensor
    labels: Tensor
    masks: PLMMasks


def _real(attention_mask, batch, length, dev):
    """(B, T) bool device array: True at real tokens."""
    if attention_mask is None:
        return dev.xp.ones((batch, length), dtype=bool)
    if not isinstance(attention_mask, Tensor):
        attention_mask = tensor(np.asarray(attention_mask), device=dev)
    if attention_mask.shape != (batch, length):
        raise ValueError(f"plm: attention_mask must have shape {(batch, length)}, got "
                         f"{attention_mask.shape}")
    return attention_mask.data != 0


def sample_factorization_order(batch_size, length, seed=None, attention_mask=None, device=None):
    """A random permutation of the positions per sequence: ``order`` (B, T) int64.

    Real tokens come in a uniformly random order, padding after them (by position). Drawn on
    the device from a private generator seeded with ``seed`` (same orders for the same seed),
    or from the device's generator (``mm.manual_seed``) when ``seed`` is None.
    """
    dev = backend.device(device if device is not None else
                         (attention_mask.device if isinstance(attention_mask, Tensor) else None))
    gen = backend.generator(dev) if seed is None else backend.Generator(dev, seed)
    xp = dev.xp
    keys = gen.random((batch_size, length), np.float64)               # in [0, 1)
    pad_keys = 1.0 + xp.arange(length, dtype=np.float64)[None, :]     # after every real token
    keys = xp.where(_real(attention_mask, batch_size, length, dev), keys, pad_keys)
    return Tensor.wrap(xp.argsort(keys, axis=1).astype(np.int64), dev)


def factorization_masks(order, num_predict, attention_mask=None):
    """The content/query masks and target positions of a factorization ``order`` (B, T).

    ``content[b, i, j] = rank(j) <= rank(i)``, ``query[b, i, j] = rank(j) < rank(i)``, both
    also requiring j to be a real token; the targets are the last ``num_predict`` real
    tokens of ``z`` (padding, wherever it sits in ``z``, is skipped).
    """
    if not isinstance(order, Tensor):
        order = tensor(np.asarray(order, dtype=np.int64),
                       device=attention_mask.device if isinstance(attention_mask, Tensor) else None)
    if order.ndim != 2 or order.dtype.kind not in "iu":
        raise ValueError(f"plm: order must be an integer (B, T) permutation, got {order.shape} "
                         f"{order.dtype}")
    dev, xp = order.device, order.xp
    b, t = order.shape
    rank = xp.argsort(order.data, axis=1).astype(np.int64)           # inverse permutation
    if not bool(backend.to_host((xp.sort(order.data, axis=1) ==
                                 xp.arange(t)[None, :]).all())):
        raise ValueError("plm: each row of order must be a permutation of 0..T-1")
    real = _real(attention_mask, b, t, dev)
    n_real = real.sum(axis=1)
    num_predict = check_int(num_predict, "num_predict", "plm", expected="a positive int")
    fewest = int(backend.to_host(n_real.min()))
    if num_predict > fewest:
        raise ValueError(f"plm: num_predict={num_predict} but a sequence has only {fewest} real "
                         "tokens")
    ri, rj = rank[:, :, None], rank[:, None, :]
    key_ok = real[:, None, :]
    content = (rj <= ri) & key_ok
    query = (rj < ri) & key_ok
    # the step of each real token counting real tokens only (padding may sit anywhere in z)
    real_steps = xp.cumsum(xp.take_along_axis(real, order.data, axis=1), axis=1) - 1
    real_rank = xp.take_along_axis(real_steps, rank, axis=1)
    target = real & (real_rank >= (n_real - num_predict)[:, None])
    make = lambda a: Tensor.wrap(a, dev)                     # noqa: E731
    return PLMMasks(make(order.data), make(rank), make(content), make(query), make(target))


def two_stream_encode(bert, input_ids, masks, query, token_type_ids=None):
    """Run the content and query streams through ``bert``'s layers; returns ``(h, g)`` (B, T, H).

    ``query``: an int token id whose word embedding is the query vector ``w``, or a Tensor (H,).
    ``h`` equals ``bert(input_ids, attention_mask_3d=masks.content_mask)[0]``.
    """
    emb = bert.embeddings
    dev = emb.word_embeddings.weight.device
    h = emb(input_ids, token_type_ids)
    b, t, d = h.shape
    if isinstance(query, Tensor):
        if query.shape != (d,):
            raise ValueError(f"plm: a query vector must have shape ({d},), got {query.shape}")
        g = emb(token_type_ids=token_type_ids, inputs_embeds=query.reshape(1, 1, d).expand(b, t, d))
    elif isinstance(query, numbers.Integral) and not isinstance(query, bool):
        g = emb(full((b, t), int(query), device=dev), token_type_ids)
    else:
        raise TypeError("plm: query must be a token id (e.g. the tokenizer's [MASK]) or a "
                        f"Tensor of shape ({d},), got {type(query).__name__}")
    content = extended_attention_mask(None, masks.content_mask, b, t, dev)
    qmask = extended_attention_mask(None, masks.query_mask, b, t, dev)
    for layer in bert.encoder.layer:
        g, h = layer(g, qmask, key_value_states=h), layer(h, content)
    return h, g


def _parts(model):
    bert = getattr(model, "bert", None)
    head = getattr(getattr(model, "cls", None), "predictions", None)
    if bert is None or head is None:
        raise TypeError(f"plm: model must be a BertForMaskedLM or BertForPreTraining (with .bert "
                        f"and .cls.predictions), got {type(model).__name__}")
    return bert, head


def plm_forward(model, input_ids, *, num_predict, query, seed=None, token_type_ids=None,
                attention_mask=None, order=None):
    """The permutation-LM forward pass: sample ``z``, run two streams, predict the targets.

    ``order`` (B, T) fixes the factorization order instead of sampling it with ``seed``.
    Returns a :class:`PLMOutput`; ``loss`` = mean over targets of ``-log p(x_i | x_{z<rank(i)})``.
    """
    bert, head = _parts(model)
    dev = bert.embeddings.word_embeddings.weight.device
    if not isinstance(input_ids, Tensor):
        input_ids = tensor(np.asarray(input_ids, dtype=np.int64), device=dev)
    if input_ids.ndim != 2:
        raise ValueError(f"plm: input_ids must be (B, T), got {input_ids.shape}")
    b, t = input_ids.shape
    if attention_mask is not None and not isinstance(attention_mask, Tensor):
        attention_mask = tensor(np.asarray(attention_mask), device=dev)
    if order is None:
        order = sample_factorization_order(b, t, seed, attention_mask, device=dev)
    elif not isinstance(order, Tensor):
        order = tensor(np.asarray(order, dtype=np.int64), device=dev)
    if order.shape != (b, t):
        raise ValueError(f"plm: order has shape {order.shape}, input_ids {(b, t)}")
    masks = factorization_masks(order, num_predict, attention_mask)
    _, g = two_stream_encode(bert, input_ids, masks, query, token_type_ids)
    logits = head(g, bert.embeddings.word_embeddings.weight)
    labels = Tensor.wrap(dev.xp.where(masks.target_mask.data, input_ids.data, -100), dev)
    loss = F.cross_entropy(logits, labels, ignore_index=-100)
    return PLMOutput(loss, logits, labels, masks)


def plm_loss(model, input_ids, *, num_predict, query, seed=None, token_type_ids=None,
             attention_mask=None):
    """The permutation-LM loss (a scalar Tensor); see :func:`plm_forward` for the arguments."""
    return plm_forward(model, input_ids, num_predict=num_predict, query=query, seed=seed,
                       token_type_ids=token_type_ids, attention_mask=attention_mask).loss
