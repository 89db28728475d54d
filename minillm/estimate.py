"""Back-of-the-envelope estimates of a Transformer's size, training compute, memory and time.

Before training a model it pays to know four numbers, all computable from the config alone:

* parameters ``N`` (:func:`parameter_count`), exact for minillm's GPT and BERT. For a GPT with
  ``L`` layers of width ``d``, vocabulary ``V`` and context ``T``::

      N = V d + T d                       token and position embeddings (the head is tied to wte)
        + L (12 d^2 + 2 d)                 per block: c_attn 3d^2, c_proj d^2, c_fc 4d^2,
                                           mlp.c_proj 4d^2, two LayerNorm weights d each
        + d                                ln_f
        (+ L 11 d + d with bias=True: 9d of Linear biases and 2d of LayerNorm biases per block,
         d for ln_f)

* training FLOPs (:func:`training_flops`): ``6 N`` per token (2 N forward, 4 N backward) plus the
  attention scores and weighted sums ``12 L H Q T``; this is nanoGPT's count
  (:func:`transformer_flops_per_token`), which the speed benchmark's MFU uses too;
* training memory (:func:`training_memory`): weights + gradients + optimizer states (Adam keeps two
  moments per parameter, SGD with momentum one buffer) + activations saved for the backward pass;
* training time (:func:`training_time`): ``FLOPs / (peak FLOP/s x MFU)``, where the model FLOPs
  utilisation (MFU) is the fraction of the hardware's peak that the training loop achieves.

The activation term is an approximation (see :func:`activation_bytes`); the other three memory
terms are exact: the tests compare them with the ``nbytes`` of a real model's arrays after an
optimizer step. :func:`describe` prints everything as a small table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .models import BertConfig, GPTConfig
from .validation import check_int, check_number

__all__ = ["DTYPE_BYTES", "OPTIMIZER_STATES", "MemoryEstimate", "parameter_count",
           "transformer_flops_per_token", "flops_per_token", "training_flops", "training_memory", "activation_bytes",
           "training_time", "compute_optimal_tokens", "describe"]

#: bytes per element of the dtypes the estimator knows
DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
#: arrays of optimizer state per trainable parameter
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd_momentum": 1, "sgd": 0}


# -- argument checks -------------------------------------------------------------------------------
def _check_config(config, op):
    if not isinstance(config, (GPTConfig, BertConfig)):
        raise TypeError(f"{op}: config must be a minillm.models GPTConfig or BertConfig, got "
                        f"{type(config).__name__}")


def _check_count(value, name, op, allow_zero=False):
    """An int > 0 (>= 0 with ``allow_zero``): TypeError for a non-int, ValueError if too small."""
    return check_int(value, name, op, low=0 if allow_zero else 1, type_error=True)


def _check_positive(value, name, op):
    """A finite float > 0: TypeError for a non-number, ValueError otherwise."""
    return check_number(value, name, op, low=0, low_open=True, finite=True, type_error=True)


def _dtype_bytes(dtype, op):
    """Bytes per element of ``dtype``: a name (``"float32"``) or a NumPy dtype."""
    try:
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPE_BYTES:
        raise ValueError(f"{op}: unknown dtype {dtype!r}; use one of {sorted(DTYPE_BYTES)}")
    return DTYPE_BYTES[name]


def _seq_len(config, seq_len, op):
    limit = config.block_size if isinstance(config, GPTConfig) else config.max_position_embeddings
    if seq_len is None:
        return limit
    seq_len = _check_count(seq_len, "seq_len", op)
    if seq_len > limit:
        raise ValueError(f"{op}: seq_len {seq_len} exceeds the model's context of {limit} "
                         "positions; shorten it or use a config with a longer context")
    return seq_len


def _shape(config):
    """(layers, heads, width) of a GPT or BERT config."""
    if isinstance(config, GPTConfig):
        return config.n_layer, config.n_head, config.n_embd
    return config.num_hidden_layers, config.num_attention_heads, config.hidden_size


# -- parameters ------------------------------------------------------------------------------------
def parameter_count(config, *, add_pooling_layer=True, mlm_head=False):
    """Exact number of parameters of ``GPT(config)`` or ``BERT(config)``.

    GPT: embeddings ``V d + T d`` (the LM head is ``wte`` itself), ``L`` blocks of
    ``12 d^2 + 2 d`` weights (+ ``11 d`` biases when ``config.bias``), and ``ln_f``.

    BERT (width ``H``, feed-forward ``I``): embeddings ``(V + P + S) H + 2 H``, ``L`` layers of
    ``4 (H^2 + H)`` attention + ``2 H I + I + H`` feed-forward + two LayerNorms ``4 H``, and the
    pooler ``H^2 + H`` (``add_pooling_layer=False`` drops it). ``mlm_head=True`` counts
    ``BertForMaskedLM``: no pooler, plus the head's transform ``H^2 + 3 H`` and output bias ``V``
    (its decoder matrix is the tied word embedding, counted once).
    """
    _check_config(config, "parameter_count")
    if isinstance(config, GPTConfig):
        if mlm_head or not add_pooling_layer:
            raise ValueError("parameter_count: add_pooling_layer/mlm_head are BERT options; "
                             "leave them at their defaults for a GPTConfig")
        d, b = config.n_embd, int(config.bias)
        embeddings = config.vocab_size * d + config.block_size * d
        block = 12 * d * d + 2 * d + b * 11 * d
        return embeddings + config.n_layer * block + d + b * d
    h, i = config.hidden_size, config.intermediate_size
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * h \
        + 2 * h
    layer = 4 * (h * h + h) + (2 * h * i + i + h) + 4 * h
    total = embeddings + config.num_hidden_layers * layer
    if mlm_head:
        return total + (h * h + 3 * h) + config.vocab_size
    return total + (h * h + h if add_pooling_layer else 0)


# -- compute ---------------------------------------------------------------------------------------
def transformer_flops_per_token(n_matmul_params, n_layer, n_head, head_size, context):
    """nanoGPT's ``estimate_mfu`` count of a Transformer's training FLOPs per token::

        flops per token = 6 N + 12 L H Q T

    ``N`` the weights used in matmuls, ``L`` layers, ``H`` heads, ``Q`` the head size, ``T``
    the context: 6 N for the forward (2 N) and backward (4 N) matmuls with the weights,
    12 L H Q T for the attention scores and their weighted sums over the context.
    """
    return 6 * n_matmul_params + 12 * n_layer * n_head * head_size * context


def flops_per_token(config, seq_len=None, *, mlm_head=False):
    """Training FLOPs per token, ``6 N + 12 L H Q T`` (:func:`transformer_flops_per_token`).

    ``N`` counts the weights used in matmuls: for a GPT all parameters except the position
    embeddings (the tied ``wte`` is the output matmul); for BERT all parameters except the
    embedding tables (lookups), plus the tied word embeddings when ``mlm_head`` (the decoder).
    ``T`` is ``seq_len`` (default: the model's full context).
    """
    _check_config(config, "flops_per_token")
    t = _seq_len(config, seq_len, "flops_per_token")
    n_layer, n_head, d = _shape(config)
    n = parameter_count(config, add_pooling_layer=not mlm_head, mlm_head=mlm_head)
    if isinstance(config, GPTConfig):
        n -= config.block_size * d                           # wpe: a lookup
    else:
        n -= (config.max_position_embeddings + config.type_vocab_size) * d
        n -= 0 if mlm_head else config.vocab_size * d        # word embeddings: a lookup
    return transformer_flops_per_token(n, n_layer, n_head, d // n_head, t)


def training_flops(config, tokens, seq_len=None, *, mlm_head=False):
    """FLOPs to train on ``tokens`` tokens: ``tokens x flops_per_token(config, seq_len)``."""
    tokens = _check_count(tokens, "tokens", "training_flops")
    return tokens * flops_per_token(config, seq_len, mlm_head=mlm_head)


def compute_optimal_tokens(n_params, tokens_per_parameter=20):
    """Chinchilla's rule of thumb (Hoffmann et al., 2022): a compute-optimal model of ``N``
    parameters trains on about ``20 N`` tokens."""
    n_params = _check_count(n_params, "n_params", "compute_optimal_tokens")
    return int(round(n_params * _check_positive(tokens_per_parameter, "tokens_per_parameter",
                                                "compute_optimal_tokens")))


def training_time(flops, flops_per_second, mfu=0.4):
    """Seconds to do ``flops`` on hardware with a peak of ``flops_per_second`` at a model FLOPs
    utilisation ``mfu`` (0 < mfu <= 1): ``flops / (flops_per_second x mfu)``."""
    flops = _check_positive(flops, "flops", "training_time")
    peak = _check_positive(flops_per_second, "flops_per_second", "training_time")
    mfu = _check_positive(mfu, "mfu", "training_time")
    if mfu > 1:
        raise ValueError(f"training_time: mfu is a fraction of the peak, 0 < mfu <= 1, got {mfu}")
    return flops / (peak * mfu)


# -- memory ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each part of a training step's memory."""

    weights: int
    gradients: int
    optimizer_states: int
    activations: int

    @property
    def total(self):
        return self.weights + self.gradients + self.optimizer_states + self.activations


def activation_bytes(config, batch_size, seq_len, dtype="float32"):
    """Approximate bytes of the activations kept for the backward pass of one step.

    Korthikanti et al. (2022), "Reducing Activation Recomputation in Large Transformer Models",
    count ``s b h (34 + 5 a s / h)`` bytes per layer for 16-bit activations (``s`` sequence,
    ``b`` batch, ``h`` width, ``a`` heads): about 17 width-sized tensors per token (inputs of
    the LayerNorms, q, k, v, the MLP's 4h-wide hidden layer before and after GELU, dropout masks,
    ...) and 2.5 ``a x s x s`` attention maps (scores, softmax, dropout). We take it as
    ``17 h + 2.5 a s`` *elements* per token and layer, scaled by the dtype's size, and add the
    output layer: logits and their softmax gradient, ``2 V`` elements per token. It ignores
    allocator overheads and temporaries that are freed during the step: an estimate, not a bound.
    """
    op = "activation_bytes"
    _check_config(config, op)
    b = _check_count(batch_size, "batch_size", op)
    s = _seq_len(config, seq_len, op)
    itemsize = _dtype_bytes(dtype, op)
    n_layer, n_head, d = _shape(config)
    per_layer = b * s * (34 * d + 5 * n_head * s) // 2
    logits = 2 * b * s * config.vocab_size
    return (n_layer * per_layer + logits) * itemsize


def training_memory(config, batch_size, seq_len, dtype="float32", optimizer="adamw",
                    trainable=None):
    """Bytes of weights, gradients, optimizer states and activations of one training step.

    ``trainable`` is the number of parameters that get gradients and optimizer states (default:
    all of them; fewer when layers are frozen or with LoRA). Weights, gradients and optimizer
    states are exact for minillm's arrays (each in ``dtype``); activations use
    :func:`activation_bytes`. ``optimizer``: one of ``OPTIMIZER_STATES`` (``"adamw"``/``"adam"``
    keep 2 arrays per parameter, ``"sgd_momentum"`` 1, ``"sgd"`` none).
    """
    op = "training_memory"
    _check_config(config, op)
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"{op}: unknown optimizer {optimizer!r}; use one of "
                         f"{sorted(OPTIMIZER_STATES)}")
    itemsize = _dtype_bytes(dtype, op)
    n = parameter_count(config)
    trainable = n if trainable is None else _check_count(trainable, "trainable", op,
                                                         allow_zero=True)
    if trainable > n:
        raise ValueError(f"{op}: trainable={trainable} exceeds the model's {n} parameters")
    return MemoryEstimate(weights=n * itemsize, gradients=trainable * itemsize,
                          optimizer_states=OPTIMIZER_STATES[optimizer] * trainable * itemsize,
                          activations=activation_bytes(config, batch_size, seq_len, dtype))


# -- report ----------------------------------------------------------------------------------------
def _human(x, unit):
    for prefix in ("", "K", "M", "G", "T", "P", "E"):
        if abs(x) < 1000 or prefix == "E":
            return f"{x:.3g} {prefix}{unit}"
        x /= 1000


def _duration(seconds):
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def describe(config, batch_size, seq_len=None, tokens=None, dtype="float32", optimizer="adamw",
             flops_per_second=None, mfu=0.4):
    """A readable table of :func:`parameter_count`, :func:`training_memory` and, given
    ``tokens``, :func:`training_flops` (and :func:`training_time` given ``flops_per_second``).
    ``tokens=None`` uses Chinchilla's ``20 N``. Returns the table as a string."""
    _check_config(config, "describe")
    seq_len = _seq_len(config, seq_len, "describe")
    n = parameter_count(config)
    mem = training_memory(config, batch_size, seq_len, dtype=dtype, optimizer=optimizer)
    tokens = compute_optimal_tokens(n) if tokens is None else tokens
    flops = training_flops(config, tokens, seq_len)
    rows = [("parameters", f"{n:,}"),
            ("weights", _human(mem.weights, "B")),
            ("gradients", _human(mem.gradients, "B")),
            (f"optimizer states ({optimizer})", _human(mem.optimizer_states, "B")),
            (f"activations (batch {batch_size} x {seq_len}, approx.)",
             _human(mem.activations, "B")),
            ("total memory", _human(mem.total, "B")),
            ("training tokens", f"{tokens:,}"),
            ("training FLOPs", _human(flops, "FLOP"))]
    if flops_per_second is not None:
        rows.append((f"time at {_human(flops_per_second, 'FLOP/s')}, MFU {mfu:.0%}",
                     _duration(training_time(flops, flops_per_second, mfu))))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
