"""The CUDA entries of the kernel table: the fused ops' math as one CUDA kernel per pass.

Adapters from the kernel interface (``forward(xp, ...) -> (out, saved)``,
``backward(xp, saved, grad)``) to the raw kernels of :mod:`.cuda_kernels`. They handle
float16 themselves (float32 arithmetic inside the kernel, no float32 copy of the input).
"""
from __future__ import annotations

import numpy as np

from . import cuda_kernels as ck
from . import fast_cpu
from .kernels import Kernel, register


def softmax_forward(xp, x, axis=-1, allowed=None, guard=False):
    if allowed is not None:
        x = xp.where(allowed, x, -xp.inf)
    last = xp.moveaxis(x, axis, -1)
    work = np.promote_types(x.dtype, np.float32)    # float32 for float16, else x's own
    y = ck.softmax_lastdim(last, out=xp.empty(last.shape, dtype=work), masked_rows_zero=guard)
    y = xp.moveaxis(y, -1, axis)
    return y.astype(x.dtype, copy=False), (y, axis, x.dtype)


def softmax_backward(xp, saved, g):
    y, axis, dtype = saved
    dx = ck.softmax_backward_lastdim(xp.moveaxis(g, axis, -1), xp.moveaxis(y, axis, -1),
                                     out=None)
    return xp.moveaxis(dx, -1, axis).astype(dtype, copy=False)


def cross_entropy_forward(xp, z, t, label_smoothing=0.0):
    p, _, loss = ck.softmax_cross_entropy_forward(z, t, -1, label_smoothing)
    return loss, (p, t, label_smoothing, z.dtype)


def cross_entropy_backward(xp, saved, coef):
    p, t, eps, dtype = saved
    return ck.softmax_cross_entropy_backward(p, t, coef.astype(p.dtype), eps, out_dtype=dtype)


def gelu_tanh_forward(xp, x):
    y, t = ck.gelu_tanh_forward(x)
    return y, (x, t)


def gelu_tanh_backward(xp, saved, g):
    x, t = saved
    return ck.gelu_tanh_backward(x, t, g)


def layer_norm_forward(xp, x, w=None, b=None, eps=1e-5):
    y, xhat, rstd = ck.layer_norm_forward(x, w, b, eps)
    return y, (xhat, rstd, w, b is not None)


def layer_norm_backward(xp, saved, g):
    xhat, rstd, w, has_b = saved
    return ck.layer_norm_backward(g, xhat, rstd, w, has_b)


def attention_forward(xp, q, k, v, float_mask=None, bool_mask=None, is_causal=False, scale=1.0,
                      drop=None):
    where = getattr(getattr(q, "device", None), "id", None)
    qs, s = fast_cpu.attention_scores(xp, q, k, float_mask, bool_mask, is_causal, scale, where)
    p = ck.softmax_lastdim(s)                      # in place; fully masked rows give zeros
    pd = p * drop if drop is not None else p
    return pd @ v, (qs, k, v, p, pd, drop, scale)


def _softmax_backward_kernel(xp, ds, p):
    ck.softmax_backward_lastdim(ds, p, out=ds)


def attention_backward(xp, saved, g):
    return fast_cpu.attention_backward(xp, saved, g, _softmax_backward_kernel)


register("softmax", "cuda", Kernel(softmax_forward, softmax_backward, float16=True))
register("cross_entropy", "cuda", Kernel(cross_entropy_forward, cross_entropy_backward,
                                         float16=True, keep_float32=True))
register("gelu_tanh", "cuda", Kernel(gelu_tanh_forward, gelu_tanh_backward, float16=True))
register("layer_norm", "cuda", Kernel(layer_norm_forward, layer_norm_backward, float16=True))
register("attention", "cuda", Kernel(attention_forward, attention_backward, float16=True))
