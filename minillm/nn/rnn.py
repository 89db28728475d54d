"""Recurrent layers: ``RNN`` (Elman) and ``LSTM`` (Hochreiter & Schmidhuber, 1997).

Shapes follow PyTorch: input ``(T, B, input_size)`` (``(B, T, input_size)`` with
``batch_first=True``, ``(T, input_size)`` unbatched); states ``(num_layers, B, H)``.

Equations of one LSTM layer (gate order i, f, g, o, as PyTorch; ``x_t`` a row vector)::

    z_t = x_t W_ih + h_{t-1} W_hh + b              W_ih (input, 4H), W_hh (H, 4H), b (4H)
    i = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_g)   o = sigmoid(z_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

and of an Elman RNN layer: ``h_t = tanh(x_t W_ih + h_{t-1} W_hh + b)`` (or relu).

Parameters per layer k: ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_l{k}``. PyTorch stores
the transposed weights and TWO biases (``b_ih`` and ``b_hh``) that are always added
together; port a PyTorch layer with ``weight_ih = weight_ih_l{k}.T``,
``weight_hh = weight_hh_l{k}.T`` and ``bias = bias_ih_l{k} + bias_hh_l{k}`` (one bias gives
the same function with one parameter vector less).

Efficiency. Each layer runs its whole sequence as ONE fused :class:`~minillm.Function`
(:class:`LSTMLayer`, :class:`RNNLayer`):

* forward: one GEMM ``X (T*B, in) @ W_ih`` for the input projections of every time step,
  then per step one GEMM ``h_{t-1} @ W_hh`` and a few elementwise passes over (B, 4H);
* backward: back-propagation through time over the saved gate activations. The step loop
  only carries ``dh`` and ``dc`` and writes the pre-activation gradients ``dZ (T, B, 4H)``;
  ``dW_ih = X^T dZ``, ``dW_hh = H_prev^T dZ``, ``db = sum(dZ)`` and ``dX = dZ W_ih^T`` are
  single big GEMMs after the loop (no per-step parameter-gradient buffers).

The naive per-step compositions of primitive ops, :func:`lstm_cell` and :func:`rnn_cell`,
are kept for teaching; the tests check that both give the same values and gradients.

Truncated back-propagation through time (stateful training): carry the final state to the
next chunk and cut the graph, so the next backward stops at the chunk boundary::

    state = None
    for x, y in chunks:                        # consecutive pieces of long sequences
        out, state = lstm(x, state)
        loss = criterion(out, y)
        loss.backward()
        state = tuple(s.detach() for s in state)   # (for nn.RNN: state = state.detach())
"""
from __future__ import annotations

import math

from .. import backend
from .. import functional as F
from ..autograd.function import Function
from ..autograd.ops import sigmoid, stack, tanh, relu
from ..autograd.tensor import Tensor, empty
from . import init
from ..validation import check_int, check_number
from .module import Module, Parameter

__all__ = ["RNN", "LSTM", "LSTMLayer", "RNNLayer", "lstm_cell", "rnn_cell"]


# -- the fused layers ---------------------------------------------------------------------------
class LSTMLayer(Function):
    """One LSTM layer over a whole sequence (time-major).

    ``forward(x (T, B, in), w_ih (in, 4H), w_hh (H, 4H), b (4H) or None, h0 (B, H) or None,
    c0 (B, H) or None)`` returns ONE array ``(T + 1, B, H)``: rows ``0..T-1`` are the hidden
    states ``h_1..h_T`` (the layer's output, ``h_n`` is row ``T-1``) and row ``T`` is the final
    cell state ``c_T``. Packing them keeps the op a single node with a single output.

    Sigmoids are computed as ``sigmoid(a) = tanh(a / 2) / 2 + 1/2``, so one ``tanh`` call
    covers all four gates and nothing overflows.
    """

    def forward(self, x, w_ih, w_hh, b=None, h0=None, c0=None):
        xp = self.xp
        T, B, _ = x.shape
        H = w_hh.shape[0]
        dt = x.dtype
        h0 = xp.zeros((B, H), dtype=dt) if h0 is None else h0
        c0 = xp.zeros((B, H), dtype=dt) if c0 is None else c0
        # scale / shift per gate column: sigmoid for i, f, o; tanh for g
        half = xp.full((4, H), 0.5, dtype=dt)
        half[2] = 1.0
        half = half.reshape(4 * H)
        shift = 1.0 - half                       # 0.5 for i, f, o; 0 for g
        # 1. input projections of all T steps: one GEMM
        x2 = x.reshape(T * B, -1)
        gates = x2 @ w_ih
        if b is not None:
            gates += b
        gates = gates.reshape(T, B, 4 * H)
        out = xp.empty((T + 1, B, H), dtype=dt)  # h_1..h_T, then c_T
        cs = xp.empty((T + 1, B, H), dtype=dt)   # c_0..c_T
        tanh_c = xp.empty((T, B, H), dtype=dt)   # tanh(c_1)..tanh(c_T)
        cs[0] = c0
        h = h0
        for t in range(T):
            z = gates[t]                         # (B, 4H), becomes the gate activations
            z += h @ w_hh                        # 2. one recurrent GEMM per step
            z *= half
            xp.tanh(z, out=z)
            z *= half
            z += shift                           # [i, f, g, o] = [sig, sig, tanh, sig](z)
            z4 = z.reshape(B, 4, H)
            i, f, g, o = z4[:, 0], z4[:, 1], z4[:, 2], z4[:, 3]
            c = cs[t + 1]
            xp.multiply(f, cs[t], out=c)
            c += i * g                           # c_t = f * c_{t-1} + i * g
            xp.tanh(c, out=tanh_c[t])
            xp.multiply(o, tanh_c[t], out=out[t])    # h_t = o * tanh(c_t)
            h = out[t]
        out[T] = cs[T]
        self.x2, self.w_ih, self.w_hh, self.h0, self.has_b = x2, w_ih, w_hh, h0, b is not None
        self.gates, self.cs, self.tanh_c, self.out = gates, cs, tanh_c, out
        self.x_shape = x.shape
        return out

    def backward(self, grad):
        """Back-propagation through time. With ``dh_t`` the total gradient at ``h_t`` (from
        the output and from step t + 1) and ``dc`` the one at ``c_t``::

            dc    += dh_t * o * (1 - tanh(c_t)^2)
            dz_i   = dc * g * i (1 - i)          dz_f = dc * c_{t-1} * f (1 - f)
            dz_g   = dc * i * (1 - g^2)          dz_o = dh_t * tanh(c_t) * o (1 - o)
            dc_{t-1} = dc * f                    dh_{t-1} = dz_t W_hh^T

        The factors after ``dc`` / ``dh_t`` are computed for all steps at once before the
        loop; after it, ``dW_ih = X^T dZ``, ``dW_hh = [h_0..h_{T-1}]^T dZ``, ``db = sum dZ``
        and ``dX = dZ W_ih^T`` are one GEMM each. (``dz_t W_hh^T`` is computed as
        ``(W_hh dz_t^T)^T``, the same product in a shape OpenBLAS runs about twice as fast
        for a small batch; cuBLAS runs both alike.)
        """
        xp = self.xp
        gates, cs, tanh_c, out = self.gates, self.cs, self.tanh_c, self.out
        T, B, H4 = gates.shape
        H = H4 // 4
        g4 = gates.reshape(T, B, 4, H)
        i, f, g, o = g4[:, :, 0], g4[:, :, 1], g4[:, :, 2], g4[:, :, 3]
        # Local derivatives of all steps at once: dz_{i,f,g} = dc * K_{i,f,g}, dz_o = dh * K_o
        dz = xp.empty((T, B, 4, H), dtype=gates.dtype)
        dz[:, :, 0] = g * i * (1 - i)            # d c / d z_i
        dz[:, :, 1] = cs[:-1] * f * (1 - f)      # d c / d z_f
        dz[:, :, 2] = i * (1 - g * g)            # d c / d z_g
        dz[:, :, 3] = tanh_c * o * (1 - o)       # d h / d z_o
        kc = o * (1 - tanh_c * tanh_c)           # d h / d c
        dh = xp.zeros((B, H), dtype=gates.dtype)
        dc = grad[T].copy()                      # gradient arriving at c_T
        w_hh = self.w_hh
        for t in range(T - 1, -1, -1):           # back-propagation through time
            dh_t = grad[t] + dh                  # from the output and from step t + 1
            dc += dh_t * kc[t]
            dzt = dz[t]
            dzt[:, :3] *= dc[:, None, :]
            dzt[:, 3] *= dh_t
            dc *= f[t]                           # -> d c_{t-1}
            dh = (w_hh @ dzt.reshape(B, H4).T).T     # -> d h_{t-1} = dz_t W_hh^T
        return _input_and_weight_grads(self, dz.reshape(T * B, H4), out[:T - 1]) + (dh, dc)


class RNNLayer(Function):
    """One Elman RNN layer over a whole sequence (time-major): ``h_t = act(x_t W_ih + h_{t-1}
    W_hh + b)``. Returns the hidden states ``(T, B, H)`` (``h_n`` is the last row)."""

    def forward(self, x, w_ih, w_hh, b=None, h0=None, nonlinearity="tanh"):
        xp = self.xp
        T, B, _ = x.shape
        H = w_hh.shape[0]
        h0 = xp.zeros((B, H), dtype=x.dtype) if h0 is None else h0
        x2 = x.reshape(T * B, -1)
        hs = x2 @ w_ih                           # all input projections: one GEMM
        if b is not None:
            hs += b
        hs = hs.reshape(T, B, H)
        h = h0
        for t in range(T):
            z = hs[t]
            z += h @ w_hh
            if nonlinearity == "tanh":
                xp.tanh(z, out=z)
            else:
                xp.maximum(z, 0, out=z)
            h = z
        self.x2, self.w_ih, self.w_hh, self.h0, self.hs = x2, w_ih, w_hh, h0, hs
        self.has_b, self.nonlinearity, self.x_shape = b is not None, nonlinearity, x.shape
        return hs

    def backward(self, grad):
        xp, hs = self.xp, self.hs
        T, B, H = hs.shape
        if self.nonlinearity == "tanh":
            dz = 1 - hs * hs                     # local derivative, all steps at once
        else:
            dz = (hs > 0).astype(hs.dtype)
        dh = xp.zeros((B, H), dtype=hs.dtype)
        w_hh = self.w_hh
        for t in range(T - 1, -1, -1):          # dz_t = (dy_t + dh_t) * act'(z_t)
            dz[t] *= grad[t] + dh
            dh = (w_hh @ dz[t].T).T              # dh_{t-1} = dz_t W_hh^T (see LSTMLayer)
        return _input_and_weight_grads(self, dz.reshape(T * B, H), hs[:T - 1]) + (dh,)


def _input_and_weight_grads(fn, dz2, h_prev):
    """``(dX, dW_ih, dW_hh, db)`` from the pre-activation gradients ``dz2`` (T*B, G*H) of all
    steps, one GEMM each; ``h_prev`` holds h_1..h_{T-1} (h_0 is ``fn.h0``). Gradients of
    inputs that do not require one (a frozen weight, the first layer's data) are skipped."""
    B = fn.h0.shape[0]
    needs = [getattr(t, "requires_grad", False) for t in fn.inputs[:4]]
    dx = (dz2 @ fn.w_ih.T).reshape(fn.x_shape) if needs[0] else None
    dw_ih = fn.x2.T @ dz2 if needs[1] else None
    dw_hh = None
    if needs[2]:
        dw_hh = fn.h0.T @ dz2[:B]
        if h_prev.shape[0]:
            dw_hh += h_prev.reshape(-1, h_prev.shape[-1]).T @ dz2[B:]
    db = backend.column_sum(dz2) if fn.has_b and needs[3] else None
    return dx, dw_ih, dw_hh, db


# -- the naive versions, for teaching and testing -------------------------------------------------
def lstm_cell(x, h, c, w_ih, w_hh, b=None):
    """One LSTM step from primitive ops (autograd does the backward). Returns ``(h, c)``."""
    z = x @ w_ih + h @ w_hh
    if b is not None:
        z = z + b
    zi, zf, zg, zo = z.split(4, axis=-1)
    i, f, g, o = sigmoid(zi), sigmoid(zf), tanh(zg), sigmoid(zo)
    c = f * c + i * g
    return o * tanh(c), c


def rnn_cell(x, h, w_ih, w_hh, b=None, nonlinearity="tanh"):
    """One Elman RNN step from primitive ops: ``act(x W_ih + h W_hh + b)``."""
    z = x @ w_ih + h @ w_hh
    if b is not None:
        z = z + b
    return tanh(z) if nonlinearity == "tanh" else relu(z)


# -- the modules ----------------------------------------------------------------------------------
class _RecurrentBase(Module):
    """Parameters, input/state checks and the layer loop shared by RNN and LSTM."""

    _gates = 1

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        self.input_size = check_int(input_size, "input_size", name, type_error=True)
        self.hidden_size = check_int(hidden_size, "hidden_size", name, type_error=True)
        self.num_layers = check_int(num_layers, "num_layers", name, type_error=True)
        self.dropout = check_number(dropout, "dropout (applied between layers)", name, 0, 1)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        H, G = self.hidden_size, self._gates
        for k in range(self.num_layers):
            n_in = self.input_size if k == 0 else H
            setattr(self, f"weight_ih_l{k}", Parameter(empty(n_in, G * H, dtype=dtype,
                                                             device=device)))
            setattr(self, f"weight_hh_l{k}", Parameter(empty(H, G * H, dtype=dtype,
                                                             device=device)))
            if self.bias:
                setattr(self, f"bias_l{k}", Parameter(empty(G * H, dtype=dtype, device=device)))
            else:
                self.register_parameter(f"bias_l{k}", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)), PyTorch's default (PyTorch's
        effective bias ``b_ih + b_hh`` is the sum of two such draws; ours is one)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def layer_weights(self, k):
        """``(weight_ih, weight_hh, bias or None)`` of layer ``k``."""
        return (getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
                getattr(self, f"bias_l{k}"))

    # -- checks ---------------------------------------------------------------------------------
    def _time_major(self, input):
        """Input -> (T, B, input_size) time-major, and whether it was batched."""
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        w = self.weight_ih_l0
        if input.dtype != w.dtype:
            raise TypeError(f"{name}: input is {input.dtype} but the weights are {w.dtype}; "
                            f"convert one of them (input.astype(...) or module.to(dtype=...))")
        if input.ndim not in (2, 3) or input.shape[-1] != self.input_size:
            layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(f"{name}: input of shape {input.shape} does not match {layout} "
                             f"(or unbatched (T, input_size)) with input_size={self.input_size}")
        if input.ndim == 2:
            x, batched = input.unsqueeze(1), False
        else:
            x = input.swapaxes(0, 1) if self.batch_first else input
            batched = True
        if x.shape[0] == 0:
            raise ValueError(f"{name}: the input sequence is empty (shape {input.shape})")
        return x, batched

    def _state(self, s, what, batch, batched, dtype):
        """Check an initial state and return it as (num_layers, B, H)."""
        name = type(self).__name__
        if not isinstance(s, Tensor):
            raise TypeError(f"{name}: the initial {what} must be a Tensor, got "
                            f"{type(s).__name__}")
        want = (self.num_layers, batch, self.hidden_size) if batched else \
            (self.num_layers, self.hidden_size)
        if s.shape != want:
            raise ValueError(f"{name}: the initial {what} has shape {s.shape}, expected {want} "
                             "(num_layers, batch, hidden_size) (batch_first does not apply to "
                             "states, as in PyTorch)")
        if s.dtype != dtype:
            raise TypeError(f"{name}: the initial {what} is {s.dtype}, the input {dtype}")
        return s if batched else s.unsqueeze(1)

    def _between_layers(self, y, k):
        """Dropout on the output of every layer but the last (training mode only)."""
        if k < self.num_layers - 1 and self.dropout > 0:
            return F.dropout(y, self.dropout, self.training)
        return y

    def _output(self, y, batched):
        if not batched:
            return y.squeeze(1)
        return y.swapaxes(0, 1) if self.batch_first else y

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s


class LSTM(_RecurrentBase):
    """Multi-layer LSTM: ``output, (h_n, c_n) = lstm(input, (h_0, c_0))``.

    ``input`` (T, B, input_size) (``(B, T, input_size)`` with ``batch_first``, or unbatched
    ``(T, input_size)``); ``h_0``/``c_0`` (num_layers, B, H), zeros when omitted.
    Returns ``output`` (T, B, H) (the last layer's h_t, batch-first if asked) and the final
    states ``h_n``, ``c_n`` (num_layers, B, H). ``dropout`` is applied to the output of every
    layer except the last, in training mode. Parameters per layer ``k``:
    ``weight_ih_l{k}`` (in, 4H), ``weight_hh_l{k}`` (H, 4H), ``bias_l{k}`` (4H), gates i, f, g, o
    (see the module docstring for the equations and for porting PyTorch weights).
    """

    _gates = 4

    def forward(self, input, hx=None):
        x, batched = self._time_major(input)
        T, B = x.shape[0], x.shape[1]
        h0 = c0 = None
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("LSTM: the initial state must be a tuple (h_0, c_0), got "
                                f"{type(hx).__name__}")
            h0 = self._state(hx[0], "hidden state h_0", B, batched, x.dtype)
            c0 = self._state(hx[1], "cell state c_0", B, batched, x.dtype)
        hs, cs = [], []
        for k in range(self.num_layers):
            w_ih, w_hh, b = self.layer_weights(k)
            y = LSTMLayer.apply(x, w_ih, w_hh, b, None if h0 is None else h0[k],
                                None if c0 is None else c0[k])
            hs.append(y[T - 1])
            cs.append(y[T])
            x = self._between_layers(y[:T], k)
        h_n, c_n = stack(hs), stack(cs)
        if not batched:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return self._output(x, batched), (h_n, c_n)


class RNN(_RecurrentBase):
    """Multi-layer Elman RNN: ``output, h_n = rnn(input, h_0)`` with
    ``h_t = tanh(x_t W_ih + h_{t-1} W_hh + b)`` (``nonlinearity='relu'``: max(0, .)).

    Shapes as :class:`LSTM` (without the cell state); parameters per layer ``k``:
    ``weight_ih_l{k}`` (in, H), ``weight_hh_l{k}`` (H, H), ``bias_l{k}`` (H).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        x, batched = self._time_major(input)
        T, B = x.shape[0], x.shape[1]
        h0 = None if hx is None else self._state(hx, "hidden state h_0", B, batched, x.dtype)
        hs = []
        for k in range(self.num_layers):
            w_ih, w_hh, b = self.layer_weights(k)
            y = RNNLayer.apply(x, w_ih, w_hh, b, None if h0 is None else h0[k],
                               nonlinearity=self.nonlinearity)
            hs.append(y[T - 1])
            x = self._between_layers(y, k)
        h_n = stack(hs)
        if not batched:
            h_n = h_n.squeeze(1)
        return self._output(x, batched), h_n

    def extra_repr(self):
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else s + ", nonlinearity='relu'"
