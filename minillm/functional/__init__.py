"""Neural-network functions on Tensors: activations, softmax, losses, normalisation, attention.

``import minillm.functional as F``. The ops that dominate a language model's step are
*fused*: one Function with a hand-derived backward instead of a chain of primitives.

* ``softmax`` / ``log_softmax``:  dx = y * (g - sum(g * y))   /   dx = g - softmax * sum(g)
* ``cross_entropy``: log-softmax and the negative log-likelihood in one pass, picking the
  target logit by integer indexing (never a one-hot matrix); d logits = softmax - onehot.
* ``layer_norm``: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
* ``scaled_dot_product_attention``: softmax(q k^T * scale + mask) v, backward through the
  saved attention probabilities.
* ``gelu`` (exact via erfc, or the tanh approximation of GPT-2), ``embedding`` (backward by
  a sorted scatter-add into the table), ``linear`` (batch dims folded into one matmul).

Each fused op is written twice. Its *plain kernels* here (``softmax_forward`` /
``softmax_backward``, ``cross_entropy_forward`` / ``..._backward``, ...) are its equations on
arrays: the version to read. The backend's kernel table may run a faster kernel of the same
math on the device (``minillm/backend/fast_cpu.py``, ``cuda_fast.py``);
``mm.use_reference_kernels()`` runs everything on the plain ones, and the tests prove both
agree. The chapters build the naive compositions from primitives; the tests check those too.

Modules: ``softmax`` (softmax family), ``losses``, ``layers`` (linear, GELU, layer norm,
dropout, embedding), ``attention``; ``checks`` holds the argument checks.
"""
from __future__ import annotations

from ..autograd.ops import relu, sigmoid, tanh
from ..backend import kernels
# the Functions (Softmax, CrossEntropy, LayerNorm, SDPA, ...) are importable from here too
from .attention import (PackedSelfAttention, SDPA, attention_backward,  # noqa: F401
                        attention_forward, packed_self_attention, scaled_dot_product_attention)
from .layers import (GELU, Dropout, Embedding, LayerNorm, Linear, dropout,  # noqa: F401
                     embedding, gelu, gelu_backward, gelu_forward, gelu_tanh_backward,
                     gelu_tanh_forward, layer_norm, layer_norm_backward, layer_norm_forward,
                     linear)
from .losses import (BCEWithLogits, BinaryCrossEntropy, CrossEntropy,  # noqa: F401
                     binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy,
                     cross_entropy_backward, cross_entropy_forward, mse_loss, nll_loss)
from .softmax import (LogSoftmax, Softmax, log_softmax, log_softmax_backward,  # noqa: F401
                      log_softmax_forward, masked_softmax, softmax, softmax_backward,
                      softmax_forward)

__all__ = ["linear", "softmax", "log_softmax", "cross_entropy", "nll_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "mse_loss", "gelu", "relu", "sigmoid", "tanh",
           "layer_norm", "dropout", "embedding", "scaled_dot_product_attention",
           "packed_self_attention", "masked_softmax"]


# -- the plain kernels, registered as every fused op's reference -----------------------------------
for _op, _forward, _backward, _options in (
        ("softmax", softmax_forward, softmax_backward, {}),
        ("log_softmax", log_softmax_forward, log_softmax_backward, {}),
        ("cross_entropy", cross_entropy_forward, cross_entropy_backward, {"keep_float32": True}),
        ("gelu", gelu_forward, gelu_backward, {"float16": True}),
        ("gelu_tanh", gelu_tanh_forward, gelu_tanh_backward, {"float16": True}),
        ("layer_norm", layer_norm_forward, layer_norm_backward, {}),
        ("attention", attention_forward, attention_backward, {"float16": True})):
    kernels.register(_op, "reference", kernels.Kernel(_forward, _backward, **_options))
