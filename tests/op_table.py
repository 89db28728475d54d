"""One table of ops: each row drives forward-vs-NumPy, gradcheck, float32, device parity and
the PyTorch reference (tests/test_ops_table.py).

A row gives the minillm call, an independent NumPy float64 reference, the torch call
(used only when PyTorch is installed), the float input shapes and domains, and optional
constant (integer/bool) inputs. Float inputs come first, constants after them, in every
callable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import minillm as mm
import minillm.functional as F


@dataclass
class OpCase:
    name: str
    fn: Callable                      # minillm: (*floats, *consts) -> Tensor
    ref: Callable                     # numpy float64: (*floats, *consts) -> ndarray
    shapes: list                      # shapes of the float inputs
    torch: Callable | None = None     # torch: (*floats, *consts) -> torch.Tensor
    domains: list | None = None       # per float input: "normal" | "pos" | "prob" | "wide"
    consts: Callable | None = None    # rng -> list of numpy arrays (int/bool), not differentiated
    grad: bool = True                 # run gradcheck
    rtol32: float = 2e-5
    torch_nograd: tuple = ()         # float inputs torch cannot differentiate
    tags: tuple = field(default_factory=tuple)

    def __str__(self):
        return self.name


def make_inputs(case, rng):
    doms = case.domains or ["normal"] * len(case.shapes)
    out = []
    for shape, dom in zip(case.shapes, doms):
        if dom == "pos":
            a = rng.uniform(0.5, 2.0, shape)
        elif dom == "prob":
            a = rng.uniform(0.05, 0.95, shape)
        elif dom == "wide":
            a = rng.standard_normal(shape) * 4
        else:
            a = rng.standard_normal(shape)
        out.append(a)
    consts = case.consts(rng) if case.consts else []
    return out, consts


# -- NumPy references (float64, written independently of minillm) --------------------------------
def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis=-1):
    return np.log(np_softmax(x, axis))


def np_cross_entropy(z, t, ignore_index=-100, ls=0.0, reduction="mean"):
    c = z.shape[-1]
    lp = np_log_softmax(z.reshape(-1, c))
    t1 = t.reshape(-1)
    losses = []
    for i, ti in enumerate(t1):
        if ti == ignore_index:
            losses.append(0.0)
            continue
        q = np.full(c, ls / c)
        q[ti] += 1 - ls
        losses.append(-(q * lp[i]).sum())
    losses = np.array(losses)
    n = (t1 != ignore_index).sum()
    if reduction == "mean":
        return np.asarray(losses.sum() / n)
    if reduction == "sum":
        return np.asarray(losses.sum())
    return losses.reshape(t.shape)


def np_layer_norm(x, w, b, nd, eps=1e-5):
    axes = tuple(range(x.ndim - nd, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * w + b if w is not None else y


_erf = np.vectorize(math.erf)


def np_gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def np_sdpa(q, k, v, mask=None, causal=False):
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    L, S = s.shape[-2:]
    if causal:
        s = np.where(np.tril(np.ones((L, S), bool)), s, -np.inf)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask
    return np_softmax(s) @ v


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_bce_logits(x, y, pw=None):
    p = np_sigmoid(x)
    pw = 1.0 if pw is None else pw
    return np.mean(-(pw * y * np.log(p) + (1 - y) * np.log(1 - p)))


def _ints(shape, hi, seed_off=0):
    return lambda rng: [rng.integers(0, hi, shape)]


def _targets_with_ignore(rng):
    t = rng.integers(0, 7, (6,))
    t[[1, 4]] = -100
    return [t]


def _bool_mask(rng):
    m = rng.random((1, 4, 6)) > 0.3
    m[..., 0] = True                     # no fully masked row in the table
    return [m]


# -- torch helpers (imported lazily by the test) ------------------------------------------------
def _tF():
    import torch.nn.functional as tF
    return tF


def _torch():
    import torch
    return torch


CASES = [
    # arithmetic and broadcasting
    OpCase("add", lambda a, b: a + b, lambda a, b: a + b, [(3, 4), (4,)], lambda a, b: a + b),
    OpCase("add_scalar", lambda a: 2.5 + a, lambda a: 2.5 + a, [(3, 4)], lambda a: 2.5 + a),
    OpCase("sub_broadcast", lambda a, b: a - b, lambda a, b: a - b, [(2, 1, 4), (3, 4)],
           lambda a, b: a - b),
    OpCase("rsub_scalar", lambda a: 1.0 - a, lambda a: 1.0 - a, [(5,)], lambda a: 1.0 - a),
    OpCase("mul_broadcast", lambda a, b: a * b, lambda a, b: a * b, [(3, 1), (1, 4)],
           lambda a, b: a * b),
    OpCase("div", lambda a, b: a / b, lambda a, b: a / b, [(3, 4), (3, 4)], lambda a, b: a / b,
           domains=["normal", "pos"]),
    OpCase("rdiv_scalar", lambda a: 3.0 / a, lambda a: 3.0 / a, [(4,)], lambda a: 3.0 / a,
           domains=["pos"]),
    OpCase("neg", lambda a: -a, lambda a: -a, [(2, 3)], lambda a: -a),
    OpCase("pow_scalar", lambda a: a ** 3, lambda a: a ** 3, [(2, 3)], lambda a: a ** 3),
    OpCase("pow_frac", lambda a: a ** 0.5, lambda a: a ** 0.5, [(2, 3)], lambda a: a ** 0.5,
           domains=["pos"]),
    OpCase("pow_tensor", lambda a, b: a ** b, lambda a, b: a ** b, [(2, 3), (3,)],
           lambda a, b: a ** b, domains=["pos", "normal"]),
    OpCase("rpow_scalar", lambda a: 2.0 ** a, lambda a: 2.0 ** a, [(4,)], lambda a: 2.0 ** a),
    OpCase("maximum", lambda a, b: mm.maximum(a, b), np.maximum, [(3, 4), (4,)],
           lambda a, b: _torch().maximum(a, b)),
    # matmul
    OpCase("matmul_2d", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4, 5)],
           lambda a, b: a @ b),
    OpCase("matmul_batched_broadcast", lambda a, b: a @ b, lambda a, b: a @ b,
           [(2, 1, 3, 4), (5, 4, 2)], lambda a, b: a @ b),
    OpCase("matmul_nd_by_2d", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (4, 5)],
           lambda a, b: a @ b),
    OpCase("matmul_vec_mat", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (2, 4, 3)],
           lambda a, b: a @ b),
    OpCase("matmul_mat_vec", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (4,)],
           lambda a, b: a @ b),
    OpCase("matmul_dot", lambda a, b: a @ b, lambda a, b: np.asarray(a @ b), [(4,), (4,)],
           lambda a, b: a @ b),
    # elementwise
    OpCase("exp", lambda a: a.exp(), np.exp, [(3, 4)], lambda a: a.exp()),
    OpCase("log", lambda a: a.log(), np.log, [(3, 4)], lambda a: a.log(), domains=["pos"]),
    OpCase("sqrt", lambda a: a.sqrt(), np.sqrt, [(3, 4)], lambda a: a.sqrt(), domains=["pos"]),
    OpCase("tanh", lambda a: a.tanh(), np.tanh, [(3, 4)], lambda a: a.tanh(), domains=["wide"]),
    OpCase("sigmoid", lambda a: a.sigmoid(), np_sigmoid, [(3, 4)], lambda a: a.sigmoid(),
           domains=["wide"]),
    OpCase("relu", lambda a: a.relu(), lambda a: np.maximum(a, 0), [(3, 4)], lambda a: a.relu()),
    OpCase("abs", lambda a: a.abs(), np.abs, [(3, 4)], lambda a: a.abs()),
    OpCase("clip", lambda a: a.clip(-0.5, 0.7), lambda a: np.clip(a, -0.5, 0.7), [(4, 5)],
           lambda a: a.clamp(-0.5, 0.7)),
    # reductions
    OpCase("sum_all", lambda a: a.sum(), lambda a: np.asarray(a.sum()), [(3, 4)],
           lambda a: a.sum()),
    OpCase("sum_axis", lambda a: a.sum(axis=1), lambda a: a.sum(axis=1), [(2, 3, 4)],
           lambda a: a.sum(dim=1)),
    OpCase("sum_axes_keepdims", lambda a: a.sum(axis=(0, 2), keepdims=True),
           lambda a: a.sum(axis=(0, 2), keepdims=True), [(2, 3, 4)],
           lambda a: a.sum(dim=(0, 2), keepdim=True)),
    OpCase("mean_axis", lambda a: a.mean(axis=-1), lambda a: a.mean(axis=-1), [(2, 3, 4)],
           lambda a: a.mean(dim=-1)),
    OpCase("max_axis", lambda a: a.max(axis=1), lambda a: a.max(axis=1), [(3, 5)],
           lambda a: a.amax(dim=1)),
    OpCase("max_all", lambda a: a.max(), lambda a: np.asarray(a.max()), [(3, 5)],
           lambda a: a.amax()),
    OpCase("min_axes_keepdims", lambda a: a.min(axis=(0, 1), keepdims=True),
           lambda a: a.min(axis=(0, 1), keepdims=True), [(2, 3, 4)],
           lambda a: a.amin(dim=(0, 1), keepdim=True)),
    OpCase("var", lambda a: a.var(axis=1), lambda a: a.var(axis=1), [(3, 5)],
           lambda a: a.var(dim=1, correction=0)),
    OpCase("var_unbiased_all", lambda a: a.var(ddof=1), lambda a: np.asarray(a.var(ddof=1)),
           [(3, 5)], lambda a: a.var(correction=1)),
    # shapes
    OpCase("reshape", lambda a: a.reshape(4, -1), lambda a: a.reshape(4, -1), [(2, 3, 4)],
           lambda a: a.reshape(4, -1)),
    OpCase("transpose", lambda a: a.transpose(2, 0, 1), lambda a: a.transpose(2, 0, 1),
           [(2, 3, 4)], lambda a: a.permute(2, 0, 1)),
    OpCase("T", lambda a: a.T, lambda a: a.T, [(3, 4)], lambda a: a.T),
    OpCase("swapaxes", lambda a: a.swapaxes(0, -1), lambda a: a.swapaxes(0, -1), [(2, 3, 4)],
           lambda a: a.transpose(0, -1)),
    OpCase("expand", lambda a: a.expand(2, 3, 4), lambda a: np.broadcast_to(a, (2, 3, 4)),
           [(3, 1)], lambda a: a.expand(2, 3, 4)),
    OpCase("squeeze_unsqueeze", lambda a: a.squeeze(1).unsqueeze(0),
           lambda a: a.squeeze(1)[None], [(3, 1, 4)], lambda a: a.squeeze(1).unsqueeze(0)),
    # indexing
    OpCase("getitem_basic", lambda a: a[1:, ::2, -1], lambda a: a[1:, ::2, -1], [(3, 5, 4)],
           lambda a: a[1:, ::2, -1]),
    OpCase("getitem_none_ellipsis", lambda a: a[None, ..., 1], lambda a: a[None, ..., 1],
           [(3, 4)], lambda a: a[None, ..., 1]),
    OpCase("getitem_int_array_repeats", lambda a, i: a[i], lambda a, i: a[i], [(5, 3)],
           lambda a, i: a[i], consts=lambda rng: [np.array([0, 2, 2, 4, 0])]),
    OpCase("getitem_pairs", lambda a, i, j: a[i, j], lambda a, i, j: a[i, j], [(4, 5)],
           lambda a, i, j: a[i, j],
           consts=lambda rng: [np.array([0, 1, 1, 3]), np.array([4, 0, 0, 2])]),
    OpCase("getitem_bool_mask", lambda a, m: a[m], lambda a, m: a[m], [(3, 4)],
           lambda a, m: a[m], consts=lambda rng: [rng.random((3, 4)) > 0.5]),
    # joining, splitting, selection
    OpCase("concatenate", lambda a, b: mm.concatenate([a, b], axis=1),
           lambda a, b: np.concatenate([a, b], axis=1), [(2, 3), (2, 5)],
           lambda a, b: _torch().cat([a, b], dim=1)),
    OpCase("stack", lambda a, b: mm.stack([a, b], axis=-1), lambda a, b: np.stack([a, b], -1),
           [(2, 3), (2, 3)], lambda a, b: _torch().stack([a, b], dim=-1)),
    OpCase("split_middle", lambda a: mm.split(a, [1, 3], axis=1)[1],
           lambda a: np.split(a, [1, 3], axis=1)[1], [(2, 5)],
           lambda a: _torch().split(a, [1, 2, 2], dim=1)[1]),
    OpCase("where", lambda a, b, c: mm.where(c, a, b), lambda a, b, c: np.where(c, a, b),
           [(3, 4), (4,)], lambda a, b, c: _torch().where(c, a, b),
           consts=lambda rng: [rng.random((3, 4)) > 0.5]),
    OpCase("masked_fill", lambda a, m: a.masked_fill(m, -2.0), lambda a, m: np.where(m, -2.0, a),
           [(3, 4)], lambda a, m: a.masked_fill(m, -2.0),
           consts=lambda rng: [rng.random((4,)) > 0.5]),
    # softmax family and losses
    OpCase("softmax", lambda a: F.softmax(a, axis=-1), np_softmax, [(3, 5)],
           lambda a: _tF().softmax(a, dim=-1), domains=["wide"]),
    OpCase("softmax_axis0", lambda a: F.softmax(a, axis=0), lambda a: np_softmax(a, 0),
           [(3, 5)], lambda a: _tF().softmax(a, dim=0)),
    OpCase("log_softmax", lambda a: F.log_softmax(a), np_log_softmax, [(3, 5)],
           lambda a: _tF().log_softmax(a, dim=-1), domains=["wide"]),
    OpCase("cross_entropy", lambda z, t: F.cross_entropy(z, t), np_cross_entropy, [(6, 7)],
           lambda z, t: _tF().cross_entropy(z, t), consts=_ints((6,), 7)),
    OpCase("cross_entropy_ignore_smooth",
           lambda z, t: F.cross_entropy(z, t, label_smoothing=0.1),
           lambda z, t: np_cross_entropy(z, t, ls=0.1), [(6, 7)],
           lambda z, t: _tF().cross_entropy(z, t, label_smoothing=0.1),
           consts=_targets_with_ignore),
    OpCase("cross_entropy_sum_3d", lambda z, t: F.cross_entropy(z, t, reduction="sum"),
           lambda z, t: np_cross_entropy(z, t, reduction="sum"), [(2, 3, 5)],
           lambda z, t: _tF().cross_entropy(z.permute(0, 2, 1), t, reduction="sum"),
           consts=_ints((2, 3), 5)),
    OpCase("cross_entropy_none", lambda z, t: F.cross_entropy(z, t, reduction="none"),
           lambda z, t: np_cross_entropy(z, t, reduction="none"), [(6, 7)],
           lambda z, t: _tF().cross_entropy(z, t, reduction="none"), consts=_targets_with_ignore),
    OpCase("nll_loss", lambda z, t: F.nll_loss(F.log_softmax(z), t),
           lambda z, t: np_cross_entropy(z, t), [(6, 7)],
           lambda z, t: _tF().nll_loss(_tF().log_softmax(z, -1), t), consts=_targets_with_ignore),
    OpCase("binary_cross_entropy", lambda p, y: F.binary_cross_entropy(p, y),
           lambda p, y: np.asarray(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))),
           [(3, 4), (3, 4)], lambda p, y: _tF().binary_cross_entropy(p, y),
           domains=["prob", "prob"]),
    OpCase("bce_with_logits_pos_weight",
           lambda x, y, w: F.binary_cross_entropy_with_logits(x, y, pos_weight=w),
           lambda x, y, w: np.asarray(np_bce_logits(x, y, w)), [(3, 4), (3, 4), (4,)],
           lambda x, y, w: _tF().binary_cross_entropy_with_logits(x, y, pos_weight=w),
           domains=["wide", "prob", "pos"], torch_nograd=(2,)),
    OpCase("mse_loss", lambda a, b: F.mse_loss(a, b), lambda a, b: np.asarray(((a - b) ** 2).mean()),
           [(3, 4), (3, 4)], lambda a, b: _tF().mse_loss(a, b)),
    # activations and normalisation
    OpCase("gelu_exact", lambda a: F.gelu(a), np_gelu, [(4, 5)], lambda a: _tF().gelu(a),
           domains=["wide"]),
    OpCase("gelu_tanh", lambda a: F.gelu(a, approximate="tanh"),
           lambda a: np_gelu(a, "tanh"), [(4, 5)],
           lambda a: _tF().gelu(a, approximate="tanh"), domains=["wide"]),
    OpCase("layer_norm", lambda x, w, b: F.layer_norm(x, w, b),
           lambda x, w, b: np_layer_norm(x, w, b, 1), [(2, 3, 6), (6,), (6,)],
           lambda x, w, b: _tF().layer_norm(x, (6,), w, b), domains=["wide", "normal", "normal"]),
    OpCase("layer_norm_2d_shape", lambda x, w, b: F.layer_norm(x, w, b, eps=1e-3),
           lambda x, w, b: np_layer_norm(x, w, b, 2, 1e-3), [(2, 3, 4), (3, 4), (3, 4)],
           lambda x, w, b: _tF().layer_norm(x, (3, 4), w, b, eps=1e-3)),
    OpCase("layer_norm_no_affine", lambda x: F.layer_norm(x, None, None, normalized_shape=5),
           lambda x: np_layer_norm(x, None, None, 1), [(3, 5)],
           lambda x: _tF().layer_norm(x, (5,))),
    OpCase("linear", lambda x, w, b: F.linear(x, w, b), lambda x, w, b: x @ w + b,
           [(2, 3, 4), (4, 5), (5,)], lambda x, w, b: _tF().linear(x, w.T, b)),
    OpCase("embedding", lambda w, i: F.embedding(i, w), lambda w, i: w[i], [(7, 3)],
           lambda w, i: _tF().embedding(i, w), consts=lambda rng: [np.array([[1, 6, 1], [0, 1, 3]])]),
    # attention
    OpCase("sdpa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v), np_sdpa,
           [(2, 4, 3), (2, 6, 3), (2, 6, 5)],
           lambda q, k, v: _tF().scaled_dot_product_attention(q, k, v)),
    OpCase("sdpa_causal_heads", lambda q, k, v: F.scaled_dot_product_attention(q, k, v,
                                                                               is_causal=True),
           lambda q, k, v: np_sdpa(q, k, v, causal=True), [(2, 2, 5, 3)] * 3,
           lambda q, k, v: _tF().scaled_dot_product_attention(q, k, v, is_causal=True)),
    OpCase("sdpa_bool_mask", lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v,
                                                                               attn_mask=m),
           lambda q, k, v, m: np_sdpa(q, k, v, mask=m), [(2, 4, 3), (2, 6, 3), (2, 6, 3)],
           lambda q, k, v, m: _tF().scaled_dot_product_attention(q, k, v, attn_mask=m),
           consts=_bool_mask),
    OpCase("sdpa_float_mask", lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v,
                                                                                attn_mask=m),
           lambda q, k, v, m: np_sdpa(q, k, v, mask=m), [(2, 4, 3), (2, 6, 3), (2, 6, 3), (4, 6)],
           lambda q, k, v, m: _tF().scaled_dot_product_attention(q, k, v, attn_mask=m)),
]

CASES_BY_NAME = {c.name: c for c in CASES}
assert len(CASES_BY_NAME) == len(CASES), "duplicate op-table names"
