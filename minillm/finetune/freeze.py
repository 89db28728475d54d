"""Freezing layers and layer-wise learning-rate decay: fine-tune only part of a model.

A pretrained Transformer is a stack: embeddings, then blocks 1..L, then what sits on top
(GPT's final LayerNorm ``ln_f``, BERT's pooler, and the task head). Number the parts by
their *depth*::

    depth 0        embeddings (GPT: wte, wpe; BERT: embeddings.*)
    depth i + 1    block i (GPT: h.i; BERT: encoder.layer.i),  i = 0 .. L-1
    depth L + 1    everything after the blocks: ln_f / pooler and the head

Lower layers learn general features (characters, words, syntax) and upper layers
task-specific ones, so fine-tuning can leave the bottom alone:

* **freezing** sets ``requires_grad = False``: the backward pass gives those weights no
  gradient and the optimizer (which only takes trainable parameters) never moves them.
  :func:`freeze_layers` freezes the embeddings and the first ``k`` blocks;
  :func:`train_head_only` freezes the whole body (a linear probe on frozen features).
* **layer-wise learning-rate decay** (LLRD; Howard & Ruder 2018, Clark et al. 2020) keeps
  every layer trainable but gives the lower ones smaller steps::

      lr(depth) = lr * decay ** (L + 1 - depth)          0 < decay <= 1

  so the head learns at ``lr``, the top block at ``lr * decay``, ..., the embeddings at
  ``lr * decay ** (L + 1)``. :func:`layerwise_lr_groups` returns optimizer parameter groups
  (PyTorch style) that any minillm optimizer and LR scheduler accept::

      groups = layerwise_lr_groups(model, lr=5e-4, decay=0.8, weight_decay=0.01)
      opt = mm.optim.AdamW(groups, lr=5e-4)
      sched = mm.optim.get_linear_schedule_with_warmup(opt, 10, 100)   # keeps the ratios

Works on task-head models (:mod:`minillm.models.heads`, body at ``model.base``), bare
:class:`~minillm.models.GPT` / :class:`~minillm.models.BERT` bodies and BERT with
pretraining heads (:class:`~minillm.models.BertForMaskedLM`, body at ``model.bert``).
In a bare GPT (and in BertForMaskedLM) the LM head's matrix *is* the token embedding
(weight tying), so it has depth 0: freezing the embeddings freezes that matrix too.
"""
from __future__ import annotations

from ..models.bert import BERT
from ..models.gpt import GPT
from ..models.heads import ModelWithHead
from ..nn import Module, Parameter
from ..validation import check_int, check_number

__all__ = ["freeze", "unfreeze", "trainable_parameters", "parameter_summary", "body_layers",
           "freeze_layers", "train_head_only", "layer_depths", "layerwise_lr_groups"]


# -- requires_grad on/off --------------------------------------------------------------------
def _set_requires_grad(target, flag, who):
    """Set ``requires_grad`` on a Module, a Parameter, or a list/tuple of them."""
    if isinstance(target, Module):
        target.requires_grad_(flag)
    elif isinstance(target, Parameter):
        target.requires_grad_(flag)
    elif isinstance(target, (list, tuple)):
        for i, t in enumerate(target):
            if not isinstance(t, (Module, Parameter)):
                raise TypeError(f"{who}: item {i} is a {type(t).__name__}; expected nn.Module or "
                                "nn.Parameter objects (e.g. model.base.h[0])")
            t.requires_grad_(flag)
    else:
        raise TypeError(f"{who}: expected an nn.Module (or a Parameter, or a list of them), got "
                        f"{type(target).__name__}")
    return target


def freeze(module):
    """``requires_grad = False`` for every parameter of ``module`` (a Module, a Parameter or a
    list of them, e.g. ``body_layers(model)[0]``). Returns ``module``."""
    return _set_requires_grad(module, False, "freeze")


def unfreeze(module):
    """``requires_grad = True`` for every parameter of ``module`` (as :func:`freeze`). Returns
    ``module``."""
    return _set_requires_grad(module, True, "unfreeze")


def _check_module(model, who):
    if not isinstance(model, Module):
        raise TypeError(f"{who}: expected a minillm model (nn.Module), got {type(model).__name__}")


def trainable_parameters(model):
    """The number of parameter *elements* with ``requires_grad`` (a shared/tied Parameter
    counts once)."""
    _check_module(model, "trainable_parameters")
    return sum(int(p.size) for p in model.parameters() if p.requires_grad)


def parameter_summary(model):
    """``{"trainable": n, "total": n, "fraction": trainable / total}`` (element counts)."""
    _check_module(model, "parameter_summary")
    total = sum(int(p.size) for p in model.parameters())
    trainable = trainable_parameters(model)
    return {"trainable": trainable, "total": total,
            "fraction": trainable / total if total else 0.0}


# -- the layers of a body --------------------------------------------------------------------
def _body(model, who):
    """``(body, has_head)``: the GPT/BERT body of ``model``, and whether ``model`` has a head
    of its own besides the body."""
    if isinstance(model, (GPT, BERT)):
        return model, False
    if isinstance(model, ModelWithHead):
        return model.base, True
    if isinstance(model, Module) and isinstance(getattr(model, "bert", None), BERT):
        return model.bert, True                       # BertForMaskedLM, BertForPreTraining
    raise TypeError(f"{who}: expected a GPT or BERT body, a task-head model (ModelFor..., body "
                    f"at model.base) or a BERT with pretraining heads (body at model.bert); got "
                    f"{type(model).__name__}, whose layers this function does not know")


def body_layers(model):
    """``(embeddings, blocks, rest)``: lists of the body's modules, bottom to top.

    GPT: ``[wte, wpe]``, ``[h.0, ..., h.{L-1}]``, ``[ln_f]``;
    BERT: ``[embeddings]``, ``[encoder.layer.0, ...]``, ``[pooler]`` (``[]`` without one).
    """
    body, _ = _body(model, "body_layers")
    if isinstance(body, GPT):
        return [body.wte, body.wpe], list(body.h), [body.ln_f]
    rest = [body.pooler] if body.pooler is not None else []
    return [body.embeddings], list(body.encoder.layer), rest


def freeze_layers(model, k):
    """Freeze the embeddings and the first ``k`` blocks (``k`` counts blocks).

    ``k = 0`` freezes nothing; ``k >= 1`` freezes the embeddings and blocks ``0..k-1``;
    ``k = L`` freezes the embeddings and every block (the top of the body and the head stay
    trainable). Only freezes: parameters outside those layers keep their ``requires_grad``
    (so it composes with other methods); :func:`unfreeze` undoes it. Returns ``model``.
    """
    emb, blocks, _ = body_layers(model)
    k = check_int(k, "k (the number of blocks to freeze, embeddings included when k >= 1)",
                  "freeze_layers", low=0)
    if k > len(blocks):
        raise ValueError(f"freeze_layers: k={k} but the model has {len(blocks)} blocks; use "
                         f"0 <= k <= {len(blocks)} (train_head_only freezes the whole body)")
    if k >= 1:
        freeze(emb)
        freeze(blocks[:k])
    return model


def train_head_only(model):
    """Freeze the whole body; the head (everything outside the body) is made trainable.

    For a task-head model the classifier Linear is all that learns (a linear probe on
    frozen features); for BertForMaskedLM the MLM head's transform and bias (its decoder
    matrix is the tied, frozen word embedding). A bare GPT/BERT has no head: an error.
    Returns ``model``.
    """
    body, has_head = _body(model, "train_head_only")
    if not has_head:
        raise ValueError(f"train_head_only: a bare {type(body).__name__} has no head of its own "
                         "(a GPT's LM head is tied to wte); wrap it in a task head first, e.g. "
                         "ModelForSequenceClassification.from_base(body, num_labels=2)")
    body_ids = {id(p) for p in body.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in body_ids)
    return model


# -- layer-wise learning-rate decay ----------------------------------------------------------
def _depths(model, who):
    """``(list of (name, Parameter, depth)), L``, in ``named_parameters`` order."""
    _body(model, who)
    emb, blocks, _ = body_layers(model)
    n = len(blocks)
    depth_of = {}
    for m in emb:
        for p in m.parameters():
            depth_of[id(p)] = 0
    for i, block in enumerate(blocks):
        for p in block.parameters():
            depth_of[id(p)] = i + 1
    return [(name, p, depth_of.get(id(p), n + 1)) for name, p in model.named_parameters()], n


def layer_depths(model):
    """``{parameter name: depth}``: embeddings 0, block i -> i + 1, everything after the
    blocks (ln_f, pooler, the head) -> L + 1. Names are ``model.named_parameters()``'s."""
    items, _ = _depths(model, "layer_depths")
    return {name: d for name, _, d in items}


def layerwise_lr_groups(model, lr, decay=0.8, weight_decay=0.0):
    """Optimizer parameter groups with layer-wise learning-rate decay.

    One group per (depth, decayed or not): ``{"params": [...], "lr": lr * decay ** (L + 1 -
    depth), "weight_decay": wd}``, where ``wd = weight_decay`` for matrices (``ndim >= 2``)
    and 0 for biases and LayerNorm parameters (the Trainer's rule). Only parameters with
    ``requires_grad`` are included, empty groups are left out; groups come in order of
    depth (0 first), the decayed group before the other at each depth, parameters in
    ``named_parameters`` order. Pass them to an optimizer: ``AdamW(groups, lr=lr)``.
    """
    who = "layerwise_lr_groups"
    check_number(lr, "lr", who, low=0.0, low_open=True)
    check_number(decay, "decay", who, low=0.0, high=1.0, low_open=True)
    check_number(weight_decay, "weight_decay", who, low=0.0)
    items, n = _depths(model, who)
    buckets = {}                                  # (depth, decayed?) -> params
    for _, p, d in items:
        if p.requires_grad:
            buckets.setdefault((d, p.ndim >= 2), []).append(p)
    if not buckets:
        raise ValueError(f"{who}: no parameter of {type(model).__name__} requires grad (all "
                         "frozen); unfreeze some layers first")
    groups = []
    for d in range(n + 2):
        for decayed in (True, False):
            params = buckets.get((d, decayed))
            if params:
                groups.append({"params": params, "lr": lr * decay ** (n + 1 - d),
                               "weight_decay": float(weight_decay) if decayed else 0.0})
    return groups
