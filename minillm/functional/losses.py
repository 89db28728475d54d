"""Losses: cross-entropy (fused with the log-softmax), NLL, binary cross-entropy, MSE."""
from __future__ import annotations

from .. import backend
from ..autograd.function import Function
from ..autograd.ops import stable_sigmoid, unbroadcast
from ..autograd.tensor import Tensor
from ..backend import kernels
from .checks import _check_reduction, _check_same, _check_tensor


def cross_entropy_forward(xp, z, t, label_smoothing=0.0):
    """Row losses of logits z (N, C) and targets t (N,): lse_i - z_i[t_i], lse_i =
    log sum_c exp(z_ic); with smoothing eps: (1 - eps) of that + eps (lse_i - mean_c z_ic)."""
    m = z.max(axis=1, keepdims=True)
    lse = (m + xp.log(xp.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    loss = lse - z[xp.arange(len(t)), t]               # the target logit, picked by indexing
    if label_smoothing:
        loss = (1 - label_smoothing) * loss + label_smoothing * (lse - z.mean(axis=1))
    return loss, (xp.exp(z - lse[:, None]), t, label_smoothing)


def cross_entropy_backward(xp, saved, coef):
    """dz_i = coef_i (softmax(z_i) - (1 - eps) onehot(t_i) - eps / C), never a one-hot matrix."""
    p, t, eps = saved
    dz = p * coef[:, None]
    dz[xp.arange(len(t)), t] -= (1 - eps) * coef
    if eps:
        dz -= (eps / p.shape[1]) * coef[:, None]
    return dz


class CrossEntropy(Function):
    """Log-softmax and the negative log-likelihood in one op over the last axis.

    Targets equal to ``ignore_index`` add nothing; ``reduction`` sums, averages over the
    counted targets, or keeps the per-target losses. float16 logits: the loss is float32
    (see the float32 island in backend/kernels.py), the gradient float16.
    """

    save_inputs = False

    def forward(self, z, t, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
        xp, t1 = self.xp, t.reshape(-1)
        self.kernel = kernels.select("cross_entropy", xp, z.dtype)
        self.valid = t1 != ignore_index
        loss, self.saved = self.kernel.forward(xp, z.reshape(-1, z.shape[-1]),
                                               xp.where(self.valid, t1, 0), label_smoothing)
        loss = xp.where(self.valid, loss, xp.zeros((), dtype=loss.dtype))
        self.shape, self.reduction, self.work = z.shape, reduction, loss.dtype
        if reduction == "mean":
            self.count = self.valid.sum().astype(loss.dtype)
            return loss.sum() / self.count
        return loss.sum() if reduction == "sum" else loss.reshape(t.shape)

    def backward(self, g):
        if self.reduction == "mean":
            coef = (g / self.count) * self.valid
        else:
            coef = (g if self.reduction == "sum" else g.reshape(-1)) * self.valid
        dz = self.kernel.backward(self.xp, self.saved, coef.astype(self.work))
        return dz.reshape(self.shape), None


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
