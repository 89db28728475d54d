"""Weight-only int8 post-training quantization: symmetric, one scale per output channel.

A float32 weight takes 4 bytes; an int8 code takes 1. Post-training quantization stores each
Linear weight as small integers plus a few float scales, after training, without retraining.
minillm's ``Linear.weight`` is ``(in_features, out_features)``, so an output channel ``j`` is
a *column*, and each column gets its own scale (per-channel: a column of large weights does
not cost the other columns their precision)::

    s_j  = max_i |W_ij| / 127                       (symmetric: the code 0 is the value 0)
    q_ij = clip(round(W_ij / s_j), -127, 127)       int8
    W~_ij = q_ij * s_j                              |W_ij - W~_ij| <= s_j / 2

(-128 is not used, so the range is symmetric; a column of zeros gets s_j = 0 and codes 0.)
The error bound is half a quantization step, so one huge outlier in a column makes that
column's step, and error, large: the classic weakness of max-abs ("absmax") scaling.

:class:`QuantizedLinear` keeps ``weight_int8`` and ``weight_scale`` as buffers and computes
``y = (x @ q) * s + b``, the same as ``x @ W~ + b`` because ``s`` scales whole columns: the
integer matrix is cast to the activations' dtype for the matmul (weight-only quantization:
activations stay floating point). It is **inference-only**: it has no Parameters, so an
optimizer finds nothing to train (gradients still flow to its input ``x``).

:func:`quantize_model` swaps a model's Linear layers for QuantizedLinear in place.
**Embeddings are not quantized** (they are a lookup, not a matmul, and GPT's LM head is tied
to the token embedding ``wte``, so quantizing it would need a second, quantized copy); nor are
LayerNorms and biases (tiny). A :class:`~minillm.finetune.prune.PrunedLinear` is quantized
with its mask applied. :func:`save_quantized` / :func:`load_quantized` store the result
(``int8`` stays ``int8`` in the ``.npz``; no pickle).
"""
from __future__ import annotations

import json
import numbers
import shutil
from pathlib import Path

import numpy as np

from .. import backend
from .. import functional as F
from .._fileio import atomic_write_json, make_temp_dir, replace_directory
from ..autograd.tensor import Tensor, tensor, zeros
from ..nn import Linear, Module
from .prune import (PrunedLinear, _check_model, _linear_groups, _one_device, _select_linears,
                    _set_submodule)

__all__ = ["quantize_per_channel", "dequantize", "QuantizedLinear", "quantize_model",
           "model_size_bytes", "save_quantized", "load_quantized"]

QMAX = 127                                  # int8 codes in [-127, 127]
FORMAT = "minillm-int8-weight-only"
WEIGHTS_NAME = "quantized.npz"
META_NAME = "quantization.json"


# -- arrays -----------------------------------------------------------------------------------
def _check_bits(bits, who):
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"{who}: bits must be an int, got {type(bits).__name__} {bits!r}")
    if bits != 8:
        raise ValueError(f"{who}: bits={bits} is not supported; only 8 is supported (int8)")


def _device_array(a, what, who):
    """The device (and so the array module) of a raw NumPy/CuPy/stand-in array."""
    if isinstance(a, Tensor):
        raise TypeError(f"{who}: {what} must be a raw array, got a Tensor; pass tensor.data")
    try:
        return backend.device_of(a)
    except TypeError:
        raise TypeError(f"{who}: {what} must be a NumPy/CuPy array, got "
                        f"{type(a).__name__}") from None


def _axis(axis, ndim, who):
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{who}: axis must be an int, got {type(axis).__name__} {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{who}: axis {axis} is out of range for a {ndim}-D array")
    return int(axis) % ndim


def _channel_shape(ndim, axis):
    """Shape that broadcasts a per-channel vector along ``axis``: (1, ..., -1, ..., 1)."""
    shape = [1] * ndim
    shape[axis] = -1
    return tuple(shape)


def quantize_per_channel(weight_array, bits=8, axis=-1):
    """Symmetric int8 quantization with one scale per channel along ``axis``.

    ``weight_array``: a floating array (NumPy, or CuPy / the stand-in device: the work stays
    on the array's device). ``axis=-1``: for a Linear weight (in, out) one scale per output
    column. Returns ``(q, scale)``: ``q`` int8 of the weight's shape, ``scale`` float32 of
    shape ``(weight.shape[axis],)``, with ``weight ≈ q * scale`` (see :func:`dequantize`).
    """
    who = "quantize_per_channel"
    _check_bits(bits, who)
    dev = _device_array(weight_array, "weight_array", who)
    xp, w = dev.xp, weight_array
    if w.dtype.kind != "f":
        raise TypeError(f"{who}: weight_array must be floating point, got dtype {w.dtype}")
    if w.ndim == 0 or w.size == 0:
        raise ValueError(f"{who}: weight_array must be a non-empty array with at least one "
                         f"dimension, got shape {tuple(w.shape)}")
    ax = _axis(axis, w.ndim, who)
    work = w.astype(np.promote_types(w.dtype, np.float32), copy=False)   # float16 -> float32
    others = tuple(i for i in range(w.ndim) if i != ax)
    amax = xp.abs(work).max(axis=others) if others else xp.abs(work)
    scale = (amax / QMAX).astype(np.float32)                              # s_j
    backend.check(~xp.isfinite(scale).all(), lambda: ValueError(
        f"{who}: the weights contain NaN/Inf (or values too large for a float32 scale); "
        "quantize finite weights"))
    s = scale.astype(work.dtype).reshape(_channel_shape(w.ndim, ax))
    safe = xp.where(s > 0, s, 1)                  # a zero channel: 0 / 1 -> code 0
    r = xp.rint(work / safe)
    r = xp.where(xp.isnan(r), 0, r)     # NaN weights (reported by the check above) -> code 0
    q = xp.clip(r, -QMAX, QMAX).astype(np.int8)
    return q, scale


def dequantize(q, scale, axis=-1):
    """``q * scale`` with ``scale`` broadcast along ``axis``: the float weight that ``q``
    and ``scale`` stand for (dtype of ``scale``, float32 as made by quantize_per_channel)."""
    who = "dequantize"
    dev = _device_array(q, "q", who)
    sdev = _device_array(scale, "scale", who)
    if dev != sdev:
        raise RuntimeError(f"{who}: q is on {dev} and scale on {sdev}; put them on one device")
    if q.dtype != np.int8:
        raise TypeError(f"{who}: q must be int8 codes, got dtype {q.dtype}")
    if scale.dtype.kind != "f":
        raise TypeError(f"{who}: scale must be floating point, got dtype {scale.dtype}")
    if q.ndim == 0:
        raise ValueError(f"{who}: q must have at least one dimension, got a 0-d array")
    ax = _axis(axis, q.ndim, who)
    if scale.shape != (q.shape[ax],):
        raise ValueError(f"{who}: scale must have shape ({q.shape[ax]},) (one per channel "
                         f"along axis {axis} of q {tuple(q.shape)}), got {tuple(scale.shape)}")
    return q.astype(scale.dtype) * scale.reshape(_channel_shape(q.ndim, ax))


# -- the layer --------------------------------------------------------------------------------
def _size(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise TypeError(f"QuantizedLinear: {name} must be a non-negative int, got {value!r}")
    return int(value)


class QuantizedLinear(Module):
    """``y = (x @ weight_int8) * weight_scale + bias``: a Linear with int8 weights.

    Buffers (saved in ``state_dict``, no Parameters: inference only): ``weight_int8``
    (in_features, out_features) int8, ``weight_scale`` (out_features,) float32, ``bias``
    (out_features,) or None. The integer matrix is cast to ``x``'s dtype for the matmul, and
    so are the scale and bias; gradients flow to ``x`` but the layer learns nothing.
    ``QuantizedLinear(in, out)`` makes an all-zero layer (to load a state dict into);
    :meth:`from_linear` quantizes a trained Linear.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = _size(in_features, "in_features")
        self.out_features = _size(out_features, "out_features")
        n, m = self.in_features, self.out_features
        self.register_buffer("weight_int8", zeros(n, m, dtype=np.int8, device=device))
        self.register_buffer("weight_scale", zeros(m, dtype=np.float32, device=device))
        self.register_buffer("bias", zeros(m, dtype=dtype, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear):
        """Quantize a ``Linear`` (or a PrunedLinear, mask applied) into a new layer on its
        device; the bias is copied (its dtype kept)."""
        if type(linear) not in (Linear, PrunedLinear):
            raise TypeError(f"QuantizedLinear.from_linear expects an nn.Linear (or a "
                            f"PrunedLinear), got {type(linear).__name__}")
        w = _effective_weight(linear)
        q, scale = quantize_per_channel(w)
        dev = linear.weight.device
        layer = cls.__new__(cls)
        Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.register_buffer("weight_int8", Tensor.wrap(q, dev))
        layer.register_buffer("weight_scale", Tensor.wrap(scale, dev))
        layer.register_buffer("bias", None if linear.bias is None
                              else tensor(linear.bias.data, device=dev))
        layer.training = linear.training
        return layer

    @classmethod
    def _like(cls, linear):
        """An all-zero QuantizedLinear shaped like ``linear`` (device, bias dtype) to load into."""
        bias = linear.bias
        return cls(linear.in_features, linear.out_features, bias=bias is not None,
                   device=linear.weight.device, dtype=None if bias is None else bias.dtype)

    def dequantized_weight(self):
        """The float weight ``W~ = q * scale`` (in, out) this layer computes with, as a Tensor."""
        w = dequantize(self.weight_int8.data, self.weight_scale.data)
        return Tensor.wrap(w, self.weight_int8.device)

    def forward(self, x):
        if not isinstance(x, Tensor):
            raise TypeError(f"QuantizedLinear: x must be a Tensor, got {type(x).__name__}")
        if x.dtype.kind != "f":
            raise TypeError(f"QuantizedLinear: x must be floating point, got dtype {x.dtype}")
        y = F.linear(x, self.weight_int8.astype(x.dtype))          # x @ q
        y = y * _as(self.weight_scale, x.dtype)                     # column j times s_j
        if self.bias is not None:
            y = y + _as(self.bias, x.dtype)
        return y

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, int8 per-channel")


def _as(t, dtype):
    return t if t.dtype == dtype else t.astype(dtype)


def _effective_weight(linear):
    """The weight a Linear computes with (a PrunedLinear's masked weight), as a raw array."""
    w = linear.weight.data
    mask = getattr(linear, "weight_mask", None)
    return w if mask is None else w * mask.data


# -- whole models -----------------------------------------------------------------------------
def model_size_bytes(model):
    """Bytes of all parameters and buffers of ``model`` (each tensor once, by its dtype's
    itemsize: float32 4, int8 1)."""
    _check_model(model, "model_size_bytes")
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += int(t.size) * t.dtype.itemsize
    return total


def _layer_bytes(layer):
    seen, total = set(), 0
    for t in list(layer.parameters()) + list(layer.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += int(t.size) * t.dtype.itemsize
    return total


def quantize_model(model, modules=None, skip=()):
    """Replace Linear layers of ``model`` by :class:`QuantizedLinear`, in place.

    ``modules``: None (every Linear) or dotted-name suffixes to quantize (``("c_attn",
    "c_fc")``); ``skip``: suffixes to leave in float (``("classifier",)``). Names match whole
    components ('attn.c_proj' matches 'h.0.attn.c_proj'); an entry that matches nothing is an
    error. Embeddings and LayerNorms are never quantized.

    Returns ``{"quantized": [names], "bytes_before": model bytes, "bytes_after": model bytes,
    "linear_bytes_before" / "linear_bytes_after": bytes of the replaced layers only,
    "max_abs_error": max |W - W~| over the quantized weights}`` (one host read).
    """
    who = "quantize_model"
    layers = _select_linears(model, modules, skip, who, allowed=(Linear, PrunedLinear))
    xp = _one_device(layers, who).xp
    bytes_before = model_size_bytes(model)
    lin_before = lin_after = 0
    errors = []
    for name, layer, paths in layers:
        ql = QuantizedLinear.from_linear(layer)
        errors.append(xp.abs(_effective_weight(layer) - ql.dequantized_weight().data).max())
        lin_before += _layer_bytes(layer)
        lin_after += _layer_bytes(ql)
        for p in paths:
            _set_submodule(model, p, ql)
    max_err = float(backend.to_host(xp.stack([e.astype(np.float64) for e in errors]).max()))
    return {"quantized": [name for name, _, _ in layers], "bytes_before": bytes_before,
            "bytes_after": model_size_bytes(model), "linear_bytes_before": lin_before,
            "linear_bytes_after": lin_after, "max_abs_error": max_err}


# -- saving and loading -----------------------------------------------------------------------
def _quantized_names(model):
    return [name for name, m in model.named_modules() if isinstance(m, QuantizedLinear)]


def save_quantized(model, directory):
    """Save a quantized model to ``directory``: ``quantized.npz`` (its whole ``state_dict``;
    int8 codes stay int8) and ``quantization.json`` (format, bits, the quantized layer names).

    The directory is written in a temporary place and swapped in atomically. An existing
    directory is replaced only if it holds nothing but these two files (so a model directory
    is never wiped by mistake). Returns the directory as a Path.
    """
    who = "save_quantized"
    _check_model(model, who)
    names = _quantized_names(model)
    if not names:
        raise ValueError(f"{who}: {type(model).__name__} has no QuantizedLinear layers; "
                         "quantize it first with quantize_model(model)")
    directory = Path(directory)
    if directory.exists():
        if not directory.is_dir():
            raise FileExistsError(f"{who}: {directory} exists and is not a directory")
        other = sorted(p.name for p in directory.iterdir() if p.name not in
                       (WEIGHTS_NAME, META_NAME))
        if other:
            raise FileExistsError(f"{who}: {directory} already holds other files {other[:5]}; "
                                  "save into a new or empty directory")
    meta = {"format": FORMAT, "version": 1, "bits": 8, "axis": -1,
            "model_class": type(model).__name__, "quantized": names}
    arrays = {k: v.numpy() for k, v in model.state_dict().items()}
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(f".{directory.name}.tmp-", directory.parent)
    try:
        with open(tmp / WEIGHTS_NAME, "wb") as f:
            np.savez(f, **arrays)
        atomic_write_json(tmp / META_NAME, meta)
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _read_saved(directory, who):
    directory = Path(directory)
    meta_path, w_path = directory / META_NAME, directory / WEIGHTS_NAME
    for p in (meta_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{who}: {p} is missing (save_quantized writes {META_NAME} "
                                    f"and {WEIGHTS_NAME})")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{who}: {meta_path} is not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{who}: {meta_path} is not a {FORMAT!r} file")
    if meta.get("version") != 1 or meta.get("bits") != 8 or meta.get("axis") != -1:
        raise ValueError(f"{who}: {meta_path} has version/bits/axis "
                         f"{meta.get('version')}/{meta.get('bits')}/{meta.get('axis')}; this "
                         "minillm reads version 1, 8 bits, axis -1")
    names = meta.get("quantized")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{who}: {meta_path} has no valid list of quantized layer names")
    try:
        with np.load(w_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:
        raise ValueError(f"{who}: {w_path} is not a readable weights file ({e})") from e
    for name in names:
        key = f"{name}.weight_int8"
        if key in arrays and arrays[key].dtype != np.int8:
            raise ValueError(f"{who}: {w_path}: {key!r} has dtype {arrays[key].dtype}, "
                             "expected int8 codes")
    return meta, names, arrays


def load_quantized(model_factory_or_model, directory):
    """Load what :func:`save_quantized` wrote into a model of the same architecture.

    ``model_factory_or_model``: an (unquantized, or identically quantized) model, or a
    callable returning a fresh one (e.g. ``lambda: GPT(config)``). The layers named in
    ``quantization.json`` become QuantizedLinear, then the whole saved state is loaded
    (strictly: every key must match). Returns the model.
    """
    who = "load_quantized"
    meta, names, arrays = _read_saved(directory, who)
    model = model_factory_or_model
    if not isinstance(model, Module):
        if not callable(model):
            raise TypeError(f"{who}: expected a model (nn.Module) or a callable returning "
                            f"one, got {type(model).__name__}")
        model = model()
        if not isinstance(model, Module):
            raise TypeError(f"{who}: the model factory returned a {type(model).__name__}, "
                            "not an nn.Module")
    found = {name: (layer, paths) for name, layer, paths
             in _linear_groups(model, (Linear, QuantizedLinear))}
    by_path = {p: (layer, paths) for layer, paths in found.values() for p in paths}
    missing = [n for n in names if n not in by_path]
    if missing:
        raise ValueError(f"{who}: the saved {meta.get('model_class')} quantized layers "
                         f"{missing} that {type(model).__name__} does not have as Linear "
                         f"layers (its Linear layers: {list(found)}); build the same "
                         "architecture as the saved model")
    for name in names:
        layer, paths = by_path[name]
        if isinstance(layer, QuantizedLinear):
            continue
        if type(layer) not in (Linear, PrunedLinear):
            raise TypeError(f"{who}: layer {name!r} is a {type(layer).__name__}; only Linear "
                            "and PrunedLinear layers can be turned into QuantizedLinear")
        ql = QuantizedLinear._like(layer)
        for p in paths:
            _set_submodule(model, p, ql)
        by_path.update({p: (ql, paths) for p in paths})
    model.load_state_dict(arrays)
    return model
