"""Neural-network building blocks: ``Module``, ``Parameter``, layers, containers, ``init``.

    import minillm as mm
    from minillm import nn

    model = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Dropout(0.1), nn.Linear(16, 2))
    y = model(mm.randn(8, 4))                 # (8, 2)
    [n for n, _ in model.named_parameters()]  # ['0.weight', '0.bias', '3.weight', '3.bias']

Names and call shapes follow PyTorch's ``torch.nn``, except that ``Linear.weight`` is
``(in_features, out_features)`` (``y = x @ W + b``).
"""
from . import init
from .containers import ModuleDict, ModuleList, Sequential
from .layers import (GELU, Dropout, Embedding, Identity, LayerNorm, Linear, ReLU, Sigmoid,
                     Softmax, Tanh)
from .module import IncompatibleKeys, Module, Parameter, StateDictError
from .rnn import LSTM, RNN, lstm_cell, rnn_cell
from .attention import (LearnedPositionalEmbedding, MultiHeadAttention, RotaryEmbedding,
                        SinusoidalPositionalEncoding, causal_mask)
from .transformer import (TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                          TransformerEncoderLayer)

__all__ = ["Module", "Parameter", "IncompatibleKeys", "StateDictError", "Linear", "Embedding",
           "LayerNorm", "Dropout", "ReLU", "GELU", "Tanh", "Sigmoid", "Softmax", "Identity",
           "Sequential", "ModuleList", "ModuleDict", "init", "RNN", "LSTM", "lstm_cell", "rnn_cell",
           "MultiHeadAttention", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding",
           "RotaryEmbedding", "causal_mask", "TransformerEncoderLayer", "TransformerDecoderLayer",
           "TransformerEncoder", "TransformerDecoder"]
