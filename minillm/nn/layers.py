"""Basic layers: Linear, Embedding, LayerNorm, Dropout, activations, Identity.

Names and constructor arguments follow PyTorch, with one deliberate difference:
``Linear.weight`` is ``(in_features, out_features)`` so the forward pass reads like the
equation ``y = x W + b`` (port PyTorch weights by transposing them).

Parameters are created with the default dtype (``mm.get_default_dtype()``) and on the
default device unless ``dtype=`` / ``device=`` are given.
"""
from __future__ import annotations

import math
import numbers

from .. import functional as F
from ..autograd.function import no_grad
from ..autograd.tensor import Tensor, empty, tensor
from . import init
from ..validation import check_int, check_number
from .module import Module, Parameter

__all__ = ["Linear", "Embedding", "LayerNorm", "Dropout", "ReLU", "GELU", "Tanh", "Sigmoid",
           "Softmax", "Identity"]


def _size(value, name, layer):
    """A size argument: an int >= 0 (TypeError for a non-int, ValueError for a negative one)."""
    return check_int(value, name, layer, low=0, type_error=True)


class Linear(Module):
    """Affine map ``y = x @ weight + bias``.

    Shapes: x ``(*, in_features)`` -> y ``(*, out_features)``; ``weight`` is
    ``(in_features, out_features)``, ``bias`` is ``(out_features,)``.
    Init (PyTorch's default): weight and bias ~ U(-1/sqrt(in_features), 1/sqrt(in_features)).
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = _size(in_features, "in_features", "Linear")
        self.out_features = _size(out_features, "out_features", "Linear")
        self.weight = Parameter(empty(self.in_features, self.out_features, dtype=dtype,
                                      device=device))
        if bias:
            self.bias = Parameter(empty(self.out_features, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @classmethod
    def sharing(cls, linear):
        """A ``cls`` layer holding ``linear``'s own weight and bias Parameters (no new random
        weights): how a wrapper such as LoRA or pruning swaps a layer's class, and how its
        removal swaps it back, while optimizers and state-dict keys keep the same tensors."""
        layer = cls.__new__(cls)
        Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight = linear.weight
        if linear.bias is None:
            layer.register_parameter("bias", None)
        else:
            layer.bias = linear.bias
        layer.training = linear.training
        return layer

    def reset_parameters(self):
        # Equal to PyTorch's kaiming_uniform_(W, a=sqrt(5)): gain sqrt(1/3) * sqrt(3/fan_in).
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table: ``ids`` (any shape, integers) -> ``weight[ids]`` of shape ``ids.shape + (dim,)``.

    Init: weight ~ N(0, 1); the ``padding_idx`` row (if given) is zero and gets no gradient.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, device=None, dtype=None,
                 _weight=None):
        super().__init__()
        self.num_embeddings = _size(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = _size(embedding_dim, "embedding_dim", "Embedding")
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
                raise TypeError(f"Embedding: padding_idx must be an int or None, got "
                                f"{type(padding_idx).__name__}")
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx must be within num_embeddings "
                                 f"[{-self.num_embeddings}, {self.num_embeddings}), got "
                                 f"{padding_idx}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        if _weight is None:
            self.weight = Parameter(empty(self.num_embeddings, self.embedding_dim, dtype=dtype,
                                          device=device))
            self.reset_parameters()
        else:                       # from_pretrained: use the given table as is
            if _weight.shape != (self.num_embeddings, self.embedding_dim):
                raise ValueError(f"Embedding: _weight has shape {_weight.shape}, expected "
                                 f"{(self.num_embeddings, self.embedding_dim)}")
            self.weight = Parameter(_weight)

    def reset_parameters(self):
        init.normal_(self.weight)
        self._zero_padding_row()

    def _zero_padding_row(self):
        if self.padding_idx is not None:
            with no_grad():
                self.weight.data[self.padding_idx] = 0.0
                self.weight.mark_modified()

    def forward(self, ids):
        return F.embedding(ids, self.weight, self.padding_idx)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding whose weight is (a copy of) the 2-D ``embeddings`` Tensor/array."""
        # a copy: on the tensor's device, or the default device for an array
        table = tensor(embeddings,
                       device=embeddings.device if isinstance(embeddings, Tensor) else None)
        if table.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D "
                             f"(num_embeddings, embedding_dim), got shape {table.shape}")
        emb = cls(table.shape[0], table.shape[1], padding_idx=padding_idx, _weight=table)
        emb.weight.requires_grad = not freeze
        return emb

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s if self.padding_idx is None else s + f", padding_idx={self.padding_idx}"


class LayerNorm(Module):
    """Layer normalization (Ba et al., 2016) over the last ``len(normalized_shape)`` dims.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` (biased variance). ``weight``
    starts at ones and ``bias`` at zeros; ``elementwise_affine=False`` has neither and
    ``bias=False`` only the weight.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral) and \
                not isinstance(normalized_shape, bool):
            normalized_shape = (normalized_shape,)
        if not isinstance(normalized_shape, (tuple, list)) or not normalized_shape:
            raise TypeError(f"LayerNorm: normalized_shape must be an int or a non-empty tuple "
                            f"of ints, got {normalized_shape!r}")
        self.normalized_shape = tuple(_size(s, "normalized_shape", "LayerNorm")
                                      for s in normalized_shape)
        if not eps > 0:
            raise ValueError(f"LayerNorm: eps must be > 0, got {eps}")
        self.eps = eps
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = Parameter(empty(self.normalized_shape, dtype=dtype, device=device))
            if bias:
                self.bias = Parameter(empty(self.normalized_shape, dtype=dtype, device=device))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps,
                            normalized_shape=self.normalized_shape)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class Dropout(Module):
    """During training, zero each element with probability ``p`` and scale the rest by
    ``1 / (1 - p)`` (inverted dropout, Srivastava et al., 2014); the identity in ``eval()``."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = check_number(p, "p (the probability of zeroing an element)", "Dropout", 0, 1)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


# -- activations as modules -----------------------------------------------------------------------
class ReLU(Module):
    """max(0, x)."""

    def forward(self, x):
        return F.relu(x)


class GELU(Module):
    """x * Phi(x) (``approximate='none'``) or GPT-2's tanh approximation (``'tanh'``)."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, x):
        return F.sigmoid(x)


class Softmax(Module):
    """softmax along ``axis`` (NumPy's name for PyTorch's ``dim``)."""

    def __init__(self, axis=-1):
        super().__init__()
        self.axis = check_int(axis, "axis", "Softmax", low=None, type_error=True)

    def forward(self, x):
        return F.softmax(x, axis=self.axis)

    def extra_repr(self):
        return f"axis={self.axis}"


class Identity(Module):
    """Returns its input unchanged (a placeholder, e.g. for a removed layer)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x
