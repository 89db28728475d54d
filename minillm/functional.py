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

The chapters teach the naive compositions; the tests check that both agree.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend
from .backend import cuda_kernels, parallel
from .autograd.function import Function
from .autograd.ops import normalize_axis, relu, sigmoid, stable_sigmoid, tanh, unbroadcast
from .autograd.tensor import Tensor

__all__ = ["linear", "softmax", "log_softmax", "cross_entropy", "nll_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "mse_loss", "gelu", "relu", "sigmoid", "tanh",
           "layer_norm", "dropout", "embedding", "scaled_dot_product_attention",
           "packed_self_attention"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_tensor(x, name, op, floating=True):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    if floating and x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be floating point, got {x.dtype}")


def _check_same(op, *named):
    tensors = [(n, t) for n, t in named if isinstance(t, Tensor)]
    devs = {str(t.device) for _, t in tensors}
    if len(devs) > 1:
        raise RuntimeError(f"{op}: tensors on different devices: "
                           + ", ".join(f"{n} on {t.device}" for n, t in tensors))
    fdt = {t.dtype for _, t in tensors if t.dtype.kind == "f"}
    if len(fdt) > 1:
        raise TypeError(f"{op}: dtype mismatch: "
                        + ", ".join(f"{n} {t.dtype}" for n, t in tensors if t.dtype.kind == "f")
                        + "; convert with .astype()")


def _check_reduction(reduction, op):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


# -- linear ---------------------------------------------------------------------------------------
class Linear(Function):
    def forward(self, x, w, b=None):
        if x.shape[-1] != w.shape[0]:
            raise ValueError(f"input has {x.shape[-1]} features but the weight is "
                             f"{tuple(w.shape)} (in_features, out_features)")
        self.x, self.w, self.has_b = x, w, b is not None
        k, n = w.shape
        rows = math.prod(x.shape[:-1])
        y = x.reshape(rows, k) @ w          # batch dims folded into rows: one 2-D GEMM
        if b is not None:
            y += b
        return y.reshape(x.shape[:-1] + (n,))

    def backward(self, g):
        x, w = self.x, self.w
        k, n = w.shape
        rows = math.prod(x.shape[:-1])
        g2 = g.reshape(rows, n)
        gx = (g2 @ w.T).reshape(x.shape)
        gw = x.reshape(rows, k).T @ g2
        gb = backend.column_sum(g2) if self.has_b else None
        return gx, gw, gb


def linear(x, weight, bias=None):
    """``x @ weight + bias`` with ``weight`` of shape (in_features, out_features)."""
    _check_tensor(x, "x", "linear")
    _check_tensor(weight, "weight", "linear")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (in, out), got shape {weight.shape}")
    if bias is not None and bias.shape != (weight.shape[1],):
        raise ValueError(f"linear: bias shape {bias.shape} != (out_features,) = "
                         f"({weight.shape[1]},)")
    _check_same("linear", ("x", x), ("weight", weight), ("bias", bias))
    return Linear.apply(x, weight, bias)


# -- softmax family -------------------------------------------------------------------------------
def _axis(x, axis, op):
    return normalize_axis(axis, x.ndim, op)[0]


class Softmax(Function):
    """softmax along ``axis``; backward dx = y * (g - sum(g * y)).

    float16 input (mixed precision) is computed in float32 -- a *float32 island*: the sum of
    the exponentials (up to the number of classes) may exceed float16's maximum 65504 and the
    row sums need more than float16's 11 significant bits. The output and the gradient are
    rounded to float16 once at the end (the engine wants a gradient of the input's dtype);
    the saved probabilities stay float32.
    """

    save_inputs = False

    def forward(self, x, axis=-1):
        self.axis, self.dtype = axis, x.dtype
        self.fused = cuda_kernels.use(self.xp) and x.ndim >= 1 and axis in (-1, x.ndim - 1)
        if self.fused:                               # CuPy: one kernel, float32 for float16
            work = np.float32 if x.dtype == np.float16 else x.dtype
            self.y = cuda_kernels.softmax_lastdim(x, out=self.xp.empty(x.shape, dtype=work),
                                                  masked_rows_zero=False)
            return self.y if self.y.dtype == self.dtype else self.y.astype(self.dtype)
        if x.dtype == np.float16:                    # float32 island
            x = x.astype(np.float32)
        e = self.xp.exp(x - backend.row_max(x, axis))
        e /= backend.row_sum(e, axis)
        self.y = e
        return e if e.dtype == self.dtype else e.astype(self.dtype)

    def backward(self, g):
        y = self.y
        if self.fused:
            return cuda_kernels.softmax_backward_lastdim(
                g, y, out=self.xp.empty(y.shape, dtype=self.dtype))
        if g.dtype != y.dtype:
            g = g.astype(y.dtype)
        dx = y * (g - (g * y).sum(axis=self.axis, keepdims=True))
        return dx if dx.dtype == self.dtype else dx.astype(self.dtype)


class LogSoftmax(Function):
    """log softmax along ``axis``; backward dx = g - softmax * sum(g).

    float16 input is computed in float32 (see :class:`Softmax`): x - max - log(sum(exp)) in
    float16 would round log(sum) away next to large logits. Output and gradient are float16.
    """

    save_inputs = False

    def forward(self, x, axis=-1):
        self.axis, self.dtype = axis, x.dtype
        if x.dtype == np.float16:                    # float32 island
            x = x.astype(np.float32)
        z = x - backend.row_max(x, axis)
        z -= self.xp.log(backend.row_sum(self.xp.exp(z), axis))
        self.y = z
        return z if z.dtype == self.dtype else z.astype(self.dtype)

    def backward(self, g):
        y = self.y
        if g.dtype != y.dtype:
            g = g.astype(y.dtype)
        dx = g - self.xp.exp(y) * g.sum(axis=self.axis, keepdims=True)
        return dx if dx.dtype == self.dtype else dx.astype(self.dtype)


def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x) along ``axis``."""
    _check_tensor(x, "x", "softmax")
    return Softmax.apply(x, axis=_axis(x, axis, "softmax"))


def log_softmax(x, axis=-1):
    """log softmax, computed as x - max - log(sum(exp(x - max))) (no log of a tiny number)."""
    _check_tensor(x, "x", "log_softmax")
    return LogSoftmax.apply(x, axis=_axis(x, axis, "log_softmax"))


# -- cross-entropy ------------------------------------------------------------------------------
class CrossEntropy(Function):
    """Fused log-softmax + NLL over the last axis, with ignore_index and label smoothing.

    **float16 logits** (mixed precision) are computed in float32, a *float32 island*: each
    row block is converted to float32 before the max/exp/log-sum-exp, the probabilities are
    kept in float32, and **the loss is returned as float32**. Reasons: next to logits of
    size ~1e4 float16's spacing is 8, so ``lse - z[target]`` would be rounded to a multiple
    of 8; a sum over many tokens overflows float16's maximum 65504; and the loss is then
    multiplied by the loss scale (2**16 by default), which float16 cannot hold. The engine
    only requires a gradient to have its *input's* dtype: the gradient of the logits is
    formed in float32 block by block and rounded to float16 once.
    """

    save_inputs = False

    def forward(self, z, t, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
        xp = self.xp
        c = z.shape[-1]
        z2 = z.reshape(-1, c)
        t1 = t.reshape(-1)
        n = z2.shape[0]
        work = np.dtype(np.float32) if z.dtype == np.float16 else z.dtype   # float32 island
        self.fused = cuda_kernels.use(xp)
        if self.fused:                               # CuPy: p, lse and the row losses, 1 kernel
            p, lse, loss = cuda_kernels.softmax_cross_entropy_forward(z2, t1, ignore_index,
                                                                      label_smoothing)
            valid, tt = t1 != ignore_index, t1
        else:
            # exp(z - max), kept for the backward unnormalised: softmax = p * rsum there, so
            # the forward saves one pass over the logits (a third of them on a 10,000-word
            # vocabulary)
            p = xp.empty(z2.shape, dtype=work)
            lse = xp.empty(n, dtype=work)            # log-sum-exp per row
            rsum = xp.empty(n, dtype=work)           # 1 / sum(exp(z - max)) per row
            ones = xp.ones(c, dtype=work)

            def kernel(_, a, b):
                zb, pb, lb = z2[a:b], p[a:b], lse[a:b]
                if zb.dtype != work:
                    zb = zb.astype(work)
                m = backend.row_max(zb)[:, 0]
                xp.subtract(zb, m[:, None], out=pb)
                xp.exp(pb, out=pb)
                xp.matmul(pb, ones, out=lb)           # row sums (gemv)
                xp.divide(1.0, lb, out=rsum[a:b])
                xp.log(lb, out=lb)
                lb += m

            _blocked(xp, z2, kernel)
            self.rsum = rsum
            valid = t1 != ignore_index
            tt = xp.where(valid, t1, 0)
            rows = xp.arange(n)
            picked = z2[rows, tt]
            if picked.dtype != work:
                picked = picked.astype(work)
            loss = lse - picked                      # -log p[target], picked by indexing
            if label_smoothing:
                zmean = z2.mean(axis=1) if work == z.dtype else z2.mean(axis=1, dtype=work)
                loss = (1 - label_smoothing) * loss + label_smoothing * (lse - zmean)
            loss = xp.where(valid, loss, xp.zeros((), dtype=work))
        self.p, self.tt, self.valid = p, tt, valid
        self.shape, self.t_shape, self.c, self.dtype = z.shape, t.shape, c, z.dtype
        self.ls, self.reduction = label_smoothing, reduction
        if reduction == "mean":
            self.count = valid.sum().astype(work)
            return loss.sum() / self.count
        if reduction == "sum":
            return loss.sum()
        return loss.reshape(t.shape)

    def backward(self, g):
        xp, p = self.xp, self.p
        if self.reduction == "mean":
            coef = (g / self.count) * self.valid
        elif self.reduction == "sum":
            coef = g * self.valid
        else:
            coef = g.reshape(-1) * self.valid
        coef = coef.astype(p.dtype)
        if self.fused:                               # CuPy: coef * (p - onehot), 1 kernel
            return cuda_kernels.softmax_cross_entropy_backward(
                p, self.tt, coef, self.ls, out_dtype=self.dtype).reshape(self.shape), None
        hit = (1 - self.ls) * coef
        tt, smooth = self.tt, self.ls / self.c
        same = p.dtype == self.dtype        # float16 logits: p is float32 (the island)
        gz = xp.empty(p.shape, dtype=self.dtype)
        scale = coef * self.rsum            # p holds exp(z - max): softmax = p * rsum

        def kernel(_, a, b):
            cb, sb = coef[a:b][:, None], scale[a:b][:, None]
            # float16: the block in float32, rounded once at the end (subtracting the one-hot
            # in float16 would cancel catastrophically where p ~ 1)
            tb = xp.multiply(p[a:b], sb, out=gz[a:b]) if same else p[a:b] * sb
            tb[xp.arange(b - a), tt[a:b]] -= hit[a:b]     # - onehot(target), by indexing
            if smooth:
                tb -= smooth * cb
            if not same:
                gz[a:b] = tb

        _blocked(xp, p, kernel)
        return gz.reshape(self.shape), None


def _check_targets(logits, target, op, ignore_index):
    if not isinstance(target, Tensor):
        raise TypeError(f"{op}: target must be an integer Tensor of class indices, got "
                        f"{type(target).__name__}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got {target.dtype} "
                        "(probabilities/one-hot targets are not supported; pass indices)")
    if target.shape != logits.shape[:-1]:
        raise ValueError(
            f"{op}: target shape {target.shape} must equal logits shape without the class axis "
            f"{logits.shape[:-1]} (logits {logits.shape}; classes are the LAST axis — for "
            "PyTorch-style (N, C, d) logits move the class axis last)")
    if target.device != logits.device:
        raise RuntimeError(f"{op}: logits on {logits.device}, target on {target.device}")
    c = logits.shape[-1]
    t = target.data
    if t.size:
        def error():
            bad = backend.to_host(t)
            bad = bad[((bad < 0) | (bad >= c)) & (bad != ignore_index)]
            return IndexError(f"{op}: target values must be in [0, {c}) or ignore_index="
                              f"{ignore_index}; found {bad[:5].tolist()}")
        backend.check((((t < 0) | (t >= c)) & (t != ignore_index)).any(), error)


def cross_entropy(logits, target, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy between ``logits`` (..., C) and integer ``target`` (...).

    ``loss_i = logsumexp(z_i) - z_i[t_i]``; with label smoothing eps the target
    distribution is (1 - eps) onehot + eps / C. Targets equal to ``ignore_index`` add
    nothing and are not counted in the mean (all ignored -> nan, as in PyTorch).
    The class axis is the last one (logits (B, T, V) with targets (B, T) work directly).
    """
    _check_tensor(logits, "logits", "cross_entropy")
    _check_reduction(reduction, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if logits.ndim < 1:
        raise ValueError("cross_entropy: logits need a class axis")
    _check_targets(logits, target, "cross_entropy", ignore_index)
    return CrossEntropy.apply(logits, target, ignore_index=ignore_index,
                              label_smoothing=float(label_smoothing), reduction=reduction)


def nll_loss(log_probs, target, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of integer targets given log-probabilities (..., C)."""
    _check_tensor(log_probs, "log_probs", "nll_loss")
    _check_reduction(reduction, "nll_loss")
    _check_targets(log_probs, target, "nll_loss", ignore_index)
    c = log_probs.shape[-1]
    lp = log_probs.reshape(-1, c)
    t = target.data.reshape(-1)
    valid = t != ignore_index
    xp = log_probs.xp
    picked = lp[xp.arange(lp.shape[0]), xp.where(valid, t, 0)]
    w = Tensor.wrap(valid.astype(log_probs.dtype), log_probs.device)
    loss = -(picked * w)
    if reduction == "mean":
        return loss.sum() / w.sum()
    if reduction == "sum":
        return loss.sum()
    return loss.reshape(target.shape)


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class BinaryCrossEntropy(Function):
    def forward(self, p, y):
        xp = self.xp
        self.p, self.y = p, y
        self.logp = xp.maximum(xp.log(p), -100.0)       # PyTorch clamps the logs at -100
        self.log1mp = xp.maximum(xp.log1p(-p), -100.0)
        return -(y * self.logp + (1 - y) * self.log1mp)

    def backward(self, g):
        xp, p, y = self.xp, self.p, self.y
        gp = g * (p - y) / xp.maximum(p * (1 - p), 1e-12)
        gy = g * (self.log1mp - self.logp) if _is_array(y) else None
        return unbroadcast(gp, p.shape), (None if gy is None else unbroadcast(gy, y.shape))


def _is_array(v):
    return hasattr(v, "shape")


def _check_input_target(op, x, target, reduction, *extra):
    """Shared checks of the elementwise losses: tensors, same shape, device, dtype, reduction."""
    _check_tensor(x, "input", op)
    _check_tensor(target, "target", op)
    _check_reduction(reduction, op)
    if target.shape != x.shape:
        raise ValueError(f"{op}: target shape {target.shape} != input shape {x.shape}")
    _check_same(op, ("input", x), ("target", target), *extra)


def binary_cross_entropy(p, target, reduction="mean"):
    """-(y log p + (1 - y) log(1 - p)) for probabilities ``p`` in [0, 1]."""
    _check_input_target("binary_cross_entropy", p, target, reduction)
    if p.size:
        backend.check(((p.data < 0) | (p.data > 1)).any(), lambda: ValueError(
            "binary_cross_entropy: input values must be probabilities in [0, 1]; for raw "
            "scores use binary_cross_entropy_with_logits"))
    return _reduce(BinaryCrossEntropy.apply(p, target), reduction)


class BCEWithLogits(Function):
    """Stable BCE on logits: (1-y) x + l * softplus(-x), l = 1 + (pos_weight - 1) y."""

    def forward(self, x, y, pw=None):
        xp = self.xp
        self.x, self.y, self.pw = x, y, pw
        sp = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0)     # softplus(-x)
        self.sp = sp
        lw = 1 if pw is None else 1 + (pw - 1) * y
        return (1 - y) * x + lw * sp

    def backward(self, g):
        xp, x, y, pw = self.xp, self.x, self.y, self.pw
        lw = 1 if pw is None else 1 + (pw - 1) * y
        gx = g * ((1 - y) + lw * (stable_sigmoid(xp, x) - 1))
        gy = g * (-x + (0 if pw is None else (pw - 1) * self.sp))
        gpw = None if pw is None else unbroadcast(g * y * self.sp, pw.shape)
        return gx, gy, gpw


def binary_cross_entropy_with_logits(logits, target, pos_weight=None, reduction="mean"):
    """BCE on raw scores, computed stably: max(x,0) - x y + log(1 + exp(-|x|))."""
    _check_input_target("binary_cross_entropy_with_logits", logits, target, reduction,
                        ("pos_weight", pos_weight))
    return _reduce(BCEWithLogits.apply(logits, target, pos_weight), reduction)


def mse_loss(x, target, reduction="mean"):
    """Mean squared error (x - target)^2."""
    _check_tensor(x, "input", "mse_loss")
    _check_reduction(reduction, "mse_loss")
    if isinstance(target, Tensor) and target.shape != x.shape:
        raise ValueError(f"mse_loss: target shape {target.shape} != input shape {x.shape}")
    d = x - target
    return _reduce(d * d, reduction)


# -- activations ----------------------------------------------------------------------------------
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _rows(x):
    """A 2-D (rows, last dim) view of ``x`` for the blocked kernels (0-d -> (1, 1))."""
    return x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)


def _blocked(xp, x2, kernel):
    """Run ``kernel(k, a, b)`` over row blocks of the 2-D ``x2`` (see backend.parallel)."""
    parallel.run_blocks(kernel, parallel.plan_blocks(x2.shape[0], x2.shape[1], xp), x2.shape[1])


class GELU(Function):
    """GELU, forward and backward as fused, cache-blocked kernels.

    tanh form: y = 0.5 x (1 + t), t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3),
    dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2).
    On the CPU the forward keeps s = (1 + t) / 2 (= sigmoid(2u)); with 1 - t^2 = 4 s (1 - s)
    the backward is s + x s (1 - s) 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2): 9 passes instead of
    11, and s (1 - s) keeps its relative accuracy for large negative x, where 1 - t^2 cancels.
    exact form: y = x Phi(x), dy/dx = Phi(x) + x phi(x).
    """

    save_inputs = False

    def forward(self, x, approximate="none"):
        xp = self.xp
        self.x, self.approximate = x, approximate
        if approximate != "tanh":
            self.cdf = 0.5 * backend.erfc(-x * _INV_SQRT_2)     # Phi(x), accurate in both tails
            return x * self.cdf
        x2 = _rows(x)
        self.fused = cuda_kernels.use(xp)
        if self.fused:                               # CuPy: one elementwise kernel
            y, self.t = cuda_kernels.gelu_tanh_forward(x2)
            return y.reshape(x.shape)
        y, t = xp.empty_like(x2), xp.empty_like(x2)
        c1, c0 = 0.044715 * _SQRT_2_OVER_PI, _SQRT_2_OVER_PI

        def kernel(_, a, b):
            xb, tb, yb = x2[a:b], t[a:b], y[a:b]
            xp.multiply(xb, xb, out=tb)
            tb *= c1
            tb += c0
            tb *= xb                                  # u = sqrt(2/pi) (x + 0.044715 x^3)
            xp.tanh(tb, out=tb)
            tb *= 0.5
            tb += 0.5                                 # s = (1 + tanh u) / 2 = sigmoid(2u)
            xp.multiply(xb, tb, out=yb)               # y = x s

        _blocked(xp, x2, kernel)
        self.s = t
        return y.reshape(x.shape)

    def backward(self, g):
        xp, x = self.xp, self.x
        if self.approximate != "tanh":
            pdf = _INV_SQRT_2PI * xp.exp(-0.5 * x * x)
            return g * (self.cdf + x * pdf)
        x2, g2 = _rows(x), _rows(g)
        if self.fused:                               # CuPy: one elementwise kernel
            return cuda_kernels.gelu_tanh_backward(x2, self.t, g2).reshape(x.shape)
        s_ = self.s
        d = xp.empty_like(x2)
        # dy/dx = s + x s (1 - s) 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)   (= the tanh form above)
        c1, c0 = 6 * 0.044715 * _SQRT_2_OVER_PI, 2 * _SQRT_2_OVER_PI

        def kernel(_, a, b):
            xb, sb, db = x2[a:b], s_[a:b], d[a:b]
            ds = sb * sb
            xp.subtract(sb, ds, out=ds)               # s (1 - s)
            xp.multiply(xb, xb, out=db)
            db *= c1
            db += c0
            db *= ds
            db *= xb
            db += sb
            db *= g2[a:b]

        _blocked(xp, x2, kernel)
        return d.reshape(x.shape)


def gelu(x, approximate="none"):
    """GELU: x * Phi(x) (``approximate="none"``, PyTorch's default) or GPT-2's tanh form
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (``approximate="tanh"``)."""
    _check_tensor(x, "x", "gelu")
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(x, approximate=approximate)


# -- layer norm -----------------------------------------------------------------------------------
class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b over the last ``nd`` axes.

    The normalised axes are trailing, so the work is done on a 2-D (rows, N) view, in
    cache-sized row blocks (:mod:`minillm.backend.parallel`); row means are matrix-vector
    products (BLAS gemv: one pass, no temporary). Backward, with xhat = (x - mean) * rstd
    and dxhat = g * w: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
    dw = sum over rows of g * xhat, db = sum over rows of g.

    **float16 input** (mixed precision) is computed in float32, a *float32 island*: each row
    block is converted to float32 for the mean, the variance (a square of 300 already
    exceeds float16's maximum 65504) and the normalisation; xhat and rstd are kept in
    float32 for the backward, which also runs in float32 (the row sums of the scaled
    gradients would overflow float16). The output and the gradients are rounded to float16
    once per block (the engine wants gradients of the inputs' dtypes).
    """

    save_inputs = False

    def forward(self, x, w=None, b=None, nd=1, eps=1e-5):
        xp = self.xp
        n = math.prod(x.shape[x.ndim - nd:])
        x2 = x.reshape(-1, n)
        work = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype   # float32 island
        cast = work != x.dtype
        wv = None if w is None else w.reshape(n)
        bv = None if b is None else b.reshape(n)
        self.fused = cuda_kernels.use(xp)
        if self.fused:                               # CuPy: one kernel (float32 for float16)
            y, xhat, rstd = cuda_kernels.layer_norm_forward(x2, wv, bv, eps)
            self.xhat, self.rstd, self.w, self.has_b = xhat, rstd, wv, b is not None
            self.shape, self.nd = x.shape, nd
            return y.reshape(x.shape)
        if cast:
            wv = None if wv is None else wv.astype(work)
            bv = None if bv is None else bv.astype(work)
        xhat, y = xp.empty(x2.shape, dtype=work), xp.empty_like(x2)
        rstd = xp.empty(x2.shape[0], dtype=work)
        ones = xp.full(n, 1.0 / n, dtype=work)

        def kernel(_, a, b_):
            xb, hb, yb, rb = x2[a:b_], xhat[a:b_], y[a:b_], rstd[a:b_]
            if cast:
                xb, yb = xb.astype(work), xp.empty(hb.shape, dtype=work)
            xp.subtract(xb, (xb @ ones)[:, None], out=hb)
            xp.multiply(hb, hb, out=yb)
            xp.matmul(yb, ones, out=rb)               # biased variance
            rb += eps
            xp.sqrt(rb, out=rb)
            xp.divide(1.0, rb, out=rb)
            hb *= rb[:, None]
            if wv is None:
                yb[...] = hb
            else:
                xp.multiply(hb, wv, out=yb)
            if bv is not None:
                yb += bv
            if cast:
                y[a:b_] = yb                          # float32 -> float16

        _blocked(xp, x2, kernel)
        self.xhat, self.rstd, self.w, self.has_b = xhat, rstd, wv, b is not None
        self.shape, self.nd = x.shape, nd
        return y.reshape(x.shape)

    def backward(self, g):
        xp, xhat, rstd, w = self.xp, self.xhat, self.rstd, self.w
        n = xhat.shape[1]
        g2 = g.reshape(-1, n)
        if self.fused:                               # CuPy: dx in one kernel, dw one reduction
            gx, gw, gb = cuda_kernels.layer_norm_backward(g2, xhat, rstd, w, self.has_b)
            wshape = self.shape[len(self.shape) - self.nd:]
            return (gx.reshape(self.shape), None if gw is None else gw.reshape(wshape),
                    None if gb is None else gb.reshape(wshape))
        work = xhat.dtype                             # float32 for float16 input
        cast = work != g.dtype
        blocks = parallel.plan_blocks(g2.shape[0], n, xp)
        gx = xp.empty_like(g2)
        gw_parts = xp.empty((len(blocks), n), dtype=work) if w is not None else None
        ones = xp.full(n, 1.0 / n, dtype=work)

        def kernel(k, a, b):
            gb, hb, ob = g2[a:b], xhat[a:b], gx[a:b]
            if cast:
                gb, ob = gb.astype(work), xp.empty(hb.shape, dtype=work)
            dxhat = gb * w if w is not None else gb.copy()
            if w is not None:
                gw_parts[k] = xp.einsum("ij,ij->j", gb, hb)     # partial sums of g * xhat
            m = dxhat @ ones
            c = xp.einsum("ij,ij->i", dxhat, hb)
            c *= 1.0 / n
            xp.multiply(hb, c[:, None], out=ob)
            ob += m[:, None]
            xp.subtract(dxhat, ob, out=ob)
            ob *= rstd[a:b][:, None]
            if cast:
                gx[a:b] = ob                          # float32 -> float16

        parallel.run_blocks(kernel, blocks, n)
        wshape = self.shape[len(self.shape) - self.nd:]
        gw = None if w is None else gw_parts.sum(axis=0).reshape(wshape)
        gb = None
        if self.has_b:
            gb = (g2.sum(axis=0, dtype=work) if cast else g2.sum(axis=0)).reshape(wshape)
        if cast:
            gw = None if gw is None else gw.astype(g.dtype)
            gb = None if gb is None else gb.astype(g.dtype)
        return gx.reshape(self.shape), gw, gb


def layer_norm(x, weight, bias, eps=1e-5, normalized_shape=None):
    """LayerNorm over the last ``weight.ndim`` axes: (x - mean) / sqrt(var + eps) * weight + bias.

    ``weight``/``bias`` may be None (then give ``normalized_shape``); var is the biased one.
    """
    _check_tensor(x, "x", "layer_norm")
    if normalized_shape is None:
        if weight is None:
            raise ValueError("layer_norm: give weight or normalized_shape")
        normalized_shape = weight.shape
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) \
        else tuple(normalized_shape)
    nd = len(normalized_shape)
    if x.shape[x.ndim - nd:] != normalized_shape or nd > x.ndim:
        raise ValueError(f"layer_norm: input shape {x.shape} does not end with normalized_shape "
                         f"{normalized_shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != normalized_shape:
            raise ValueError(f"layer_norm: {name} shape {t.shape} != normalized_shape "
                             f"{normalized_shape}")
    _check_same("layer_norm", ("x", x), ("weight", weight), ("bias", bias))
    return LayerNorm.apply(x, weight, bias, nd=nd, eps=eps)


# -- dropout --------------------------------------------------------------------------------------
class Dropout(Function):
    save_inputs = False

    def forward(self, x, mask=None):
        self.mask = mask
        return x * mask

    def backward(self, g):
        return g * self.mask


def dropout(x, p=0.5, training=True):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (training only)."""
    _check_tensor(x, "x", "dropout")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return Dropout.apply(x, mask=backend.generator(x.device).dropout_mask(x.shape, x.dtype, p))


# -- embedding ------------------------------------------------------------------------------------
class Embedding(Function):
    save_inputs = False

    def forward(self, ids, w, padding_idx=None):
        self.ids, self.shape, self.dtype, self.pad = ids, w.shape, w.dtype, padding_idx
        return w[ids]

    def backward(self, g):
        gw = self.xp.zeros(self.shape, dtype=self.dtype)
        backend.index_add_rows(gw, self.ids.reshape(-1), g.reshape(-1, self.shape[1]))
        if self.pad is not None:
            gw[self.pad] = 0
        return None, gw


def embedding(ids, weight, padding_idx=None):
    """Rows of ``weight`` (V, D) picked by integer ``ids`` of any shape -> ids.shape + (D,).

    The backward adds each output row's gradient into its table row (repeated ids add up);
    the ``padding_idx`` row gets no gradient.
    """
    _check_tensor(weight, "weight", "embedding")
    if not isinstance(ids, Tensor) or ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be an integer Tensor, got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, dim), got {weight.shape}")
    if ids.device != weight.device:
        raise RuntimeError(f"embedding: ids on {ids.device}, weight on {weight.device}")
    v = weight.shape[0]
    if ids.size:
        def error():
            bad = backend.to_host(ids.data)
            return IndexError(f"embedding: ids must be in [0, {v}); got values like "
                              f"{bad[(bad < 0) | (bad >= v)][:5].tolist()}")
        backend.check(((ids.data < 0) | (ids.data >= v)).any(), error)
    if padding_idx is not None:
        padding_idx = padding_idx % v
    return Embedding.apply(ids, weight, padding_idx=padding_idx)


# -- attention ------------------------------------------------------------------------------------
_CAUSAL_BIAS = {}


def _causal_bias(xp, L, S, dtype, dev):
    """The additive causal mask (L, S): 0 where key j <= query i, -inf above the diagonal.

    Built once per (device, L, S, dtype) and reused: adding it in place costs one pass over
    the scores, where ``where(tril(ones))`` built two new arrays every call.
    """
    key = (str(dev), L, S, str(dtype))
    bias = _CAUSAL_BIAS.get(key)
    if bias is None:
        if len(_CAUSAL_BIAS) > 64:
            _CAUSAL_BIAS.clear()
        bias = xp.triu(xp.full((L, S), -xp.inf, dtype=dtype), 1)
        _CAUSAL_BIAS[key] = bias
    return bias


def _row_dot(xp, a, b):
    """sum(a * b, axis=-1) without materialising the product (one pass over a and b)."""
    return xp.einsum("...j,...j->...", a, b)


class SDPA(Function):
    """softmax(q k^T * scale + mask) v with the backward through the saved probabilities.

    The scale is folded into q (L x E numbers instead of L x S scores), the causal mask is a
    cached additive bias, and the softmax runs in place on the score buffer. Backward, with
    P the (dropped-out) probabilities and dP = g v^T: dS = P * (dP - rowsum(dP * P)),
    dq = dS k * scale, dk = dS^T (q * scale), dv = P^T g.
    """

    save_inputs = False

    def forward(self, q, k, v, float_mask=None, bool_mask=None, is_causal=False, scale=1.0,
                drop=None, dev=None):
        xp = self.xp
        qs = q * scale
        s = qs @ xp.swapaxes(k, -1, -2)
        L, S = s.shape[-2], s.shape[-1]
        self.float_mask = None
        if is_causal:
            s += _causal_bias(xp, L, S, s.dtype, dev)
        if bool_mask is not None:
            s = xp.where(bool_mask, s, -xp.inf)
        if float_mask is not None:
            s = s + float_mask
            self.float_mask = float_mask.shape
        self.fused = cuda_kernels.use(xp)
        if self.fused:                                # CuPy: softmax in place, one kernel
            p = cuda_kernels.softmax_lastdim(s)       # fully masked rows give zeros, not NaN
        else:
            # the causal mask alone never masks a whole row: no guard needed then
            guard = not is_causal or bool_mask is not None or float_mask is not None
            m = backend.row_max(s)
            if guard:
                m = xp.where(xp.isfinite(m), m, 0)    # fully masked rows give zeros, not NaN
            s -= m
            p = xp.exp(s, out=s)
            den = backend.row_sum(p)
            if guard:
                den = xp.where(den == 0, 1, den)
            p *= 1 / den
        self.p, self.drop = p, drop
        pd = p * drop if drop is not None else p
        self.qs, self.k, self.v, self.pd, self.scale = qs, k, v, pd, scale
        self.q_shape = q.shape
        return pd @ v

    def backward(self, g):
        xp, p, pd = self.xp, self.p, self.pd
        qs, k, v = self.qs, self.k, self.v
        gv = unbroadcast(xp.swapaxes(pd, -1, -2) @ g, v.shape)
        ds = g @ xp.swapaxes(v, -1, -2)              # dP
        if self.drop is not None:
            ds *= self.drop
        if self.fused:                                # CuPy: in place, one kernel
            cuda_kernels.softmax_backward_lastdim(ds, p, out=ds)
        else:
            ds -= _row_dot(xp, ds, p)[..., None]
            ds *= p                                   # dS, the gradient of the scaled scores
        gmask = None if self.float_mask is None else unbroadcast(ds, self.float_mask)
        gk = unbroadcast(xp.swapaxes(ds, -1, -2) @ qs, k.shape)
        gq = ds @ k
        gq *= self.scale
        return unbroadcast(gq, self.q_shape), gk, gv, gmask


class PackedSelfAttention(SDPA):
    """SDPA on one packed tensor ``qkv`` (3, ..., T, E) (q, k, v stacked on the first axis).

    The same computation as :class:`SDPA`, but the gradient comes back as ONE array laid out
    like ``qkv`` (``empty_like`` keeps its memory order): taking ``qkv[0]``, ``qkv[1]``,
    ``qkv[2]`` as three ops instead would give three zero-filled full-size gradients and two
    additions in the backward pass (flash-attn's ``qkvpacked`` functions exist for the same
    reason).
    """

    def forward(self, qkv, **options):
        self.qkv_like = qkv
        return super().forward(qkv[0], qkv[1], qkv[2], **options)

    def backward(self, g):
        gq, gk, gv, _ = super().backward(g)
        out = self.xp.empty_like(self.qkv_like)
        out[0], out[1], out[2] = gq, gk, gv
        return out


def packed_self_attention(qkv, is_causal=False, dropout_p=0.0, scale=None):
    """Self-attention on packed projections: ``qkv`` (3, ..., T, E) holds q, k and v.

    Equal to ``scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=...,
    dropout_p=...)``, with a cheaper backward (see :class:`PackedSelfAttention`). GPT's
    attention uses it on the (3, B, heads, T, head_dim) view of its fused ``c_attn`` output.
    """
    op = "packed_self_attention"
    _check_tensor(qkv, "qkv", op)
    if qkv.ndim < 3 or qkv.shape[0] != 3:
        raise ValueError(f"{op}: qkv must be (3, ..., T, E) with q, k, v on the first axis, got "
                         f"{qkv.shape}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {dropout_p}")
    scale = 1.0 / math.sqrt(qkv.shape[-1]) if scale is None else float(scale)
    drop = None
    if dropout_p > 0:
        shape = qkv.shape[1:-1] + (qkv.shape[-2],)
        drop = backend.generator(qkv.device).dropout_mask(shape, qkv.dtype, dropout_p)
    return PackedSelfAttention.apply(qkv, is_causal=is_causal, scale=scale, drop=drop,
                                     dev=qkv.device)


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0,
                                 scale=None):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + mask) V  (PyTorch's signature).

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev); batch dims
    broadcast. ``attn_mask``: a bool Tensor (True = may attend) or a float Tensor added to
    the scores (differentiable), broadcastable to (..., L, S). ``is_causal`` masks key j > i
    (top-left aligned, as PyTorch). A query row with every key masked outputs zeros.
    Dropout on the attention weights is applied whenever ``dropout_p > 0``.
    """
    op = "scaled_dot_product_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(t, name, op)
        if t.ndim < 2:
            raise ValueError(f"{op}: {name} needs at least 2 dims (..., seq, dim), got {t.shape}")
    _check_same(op, ("q", q), ("k", k), ("v", v),
                ("attn_mask", attn_mask if isinstance(attn_mask, Tensor) and
                 attn_mask.dtype.kind == "f" else None))
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{op}: q and k need the same last dim, got q {q.shape} and k {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{op}: k and v need the same sequence length, got k {k.shape} and "
                         f"v {v.shape}")
    if attn_mask is not None and is_causal:
        raise ValueError(f"{op}: give either attn_mask or is_causal=True, not both")
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise TypeError(f"{op}: attn_mask must be a Tensor (bool or float)")
        if attn_mask.device != q.device:
            raise RuntimeError(f"{op}: attn_mask on {attn_mask.device}, q on {q.device}")
        if attn_mask.dtype.kind not in "bf":
            raise TypeError(f"{op}: attn_mask must be bool or float, got {attn_mask.dtype}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {dropout_p}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    drop = None
    if dropout_p > 0:
        shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
        drop = backend.generator(q.device).dropout_mask(shape, q.dtype, dropout_p)
    if attn_mask is not None and attn_mask.dtype.kind == "f":
        return SDPA.apply(q, k, v, attn_mask, is_causal=is_causal, scale=scale, drop=drop,
                          dev=q.device)
    bool_mask = None if attn_mask is None else attn_mask.data
    return SDPA.apply(q, k, v, None, bool_mask=bool_mask, is_causal=is_causal, scale=scale,
                      drop=drop, dev=q.device)
