"""Fast CPU kernels of the fused ops: the same math as the plain versions in
:mod:`minillm.functional`, written for speed on NumPy (and the stand-in device).

The tricks, each proven equal to the plain version by the tests:

* work in cache-sized row blocks, threaded (:mod:`.parallel`), writing into preallocated
  buffers with ``out=`` instead of making a temporary per expression;
* row sums and means as matrix-vector products (BLAS gemv: one pass, no temporary);
* cross-entropy keeps ``exp(z - max)`` unnormalised plus ``1 / sum`` per row (one pass less);
* tanh-GELU keeps ``s = (1 + tanh u) / 2`` (fewer passes, accurate for large negative x);
* exact GELU sums :mod:`.special`'s erfc series per row block in reused ``out=`` buffers
  (the plain version makes a full-size temporary for each of the series' terms);
* attention folds the scale into q, adds a cached causal bias, and runs the softmax in place.

Measurements and the alternatives that were tried are in PERFORMANCE.md.
"""
from __future__ import annotations

import math

from . import parallel, row_max, row_sum, special
from .kernels import Kernel, register

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def blocked(xp, x2, kernel):
    """Run ``kernel(k, a, b)`` over the row blocks of the 2-D ``x2`` (see :mod:`.parallel`)."""
    parallel.run_blocks(kernel, parallel.plan_blocks(x2.shape[0], x2.shape[1], xp), x2.shape[1])


def _rows(x):
    """A 2-D (rows, last dim) view of ``x`` (0-d -> (1, 1))."""
    return x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)


# -- cross-entropy -------------------------------------------------------------------------------
def cross_entropy_forward(xp, z, t, label_smoothing=0.0):
    n, c = z.shape
    p = xp.empty(z.shape, dtype=z.dtype)            # exp(z - max), normalised in the backward
    lse = xp.empty(n, dtype=z.dtype)
    rsum = xp.empty(n, dtype=z.dtype)               # 1 / sum(exp(z - max))
    ones = xp.ones(c, dtype=z.dtype)

    def kernel(_, a, b):
        pb, lb = p[a:b], lse[a:b]
        m = row_max(z[a:b])[:, 0]
        xp.subtract(z[a:b], m[:, None], out=pb)
        xp.exp(pb, out=pb)
        xp.matmul(pb, ones, out=lb)                 # row sums (gemv)
        xp.divide(1.0, lb, out=rsum[a:b])
        xp.log(lb, out=lb)
        lb += m

    blocked(xp, z, kernel)
    loss = lse - z[xp.arange(n), t]
    if label_smoothing:
        loss = (1 - label_smoothing) * loss + label_smoothing * (lse - z.mean(axis=1))
    return loss, (p, rsum, t, label_smoothing)


def cross_entropy_backward(xp, saved, coef):
    p, rsum, t, eps = saved
    hit, smooth, scale = (1 - eps) * coef, eps / p.shape[1], coef * rsum
    gz = xp.empty_like(p)

    def kernel(_, a, b):
        gb = xp.multiply(p[a:b], scale[a:b][:, None], out=gz[a:b])   # softmax * coef
        gb[xp.arange(b - a), t[a:b]] -= hit[a:b]                    # - onehot(target)
        if smooth:
            gb -= smooth * coef[a:b][:, None]

    blocked(xp, p, kernel)
    return gz


# -- GELU, tanh form -------------------------------------------------------------------------------
def gelu_tanh_forward(xp, x):
    x2 = _rows(x)
    y, s = xp.empty_like(x2), xp.empty_like(x2)
    c1, c0 = 0.044715 * _SQRT_2_OVER_PI, _SQRT_2_OVER_PI

    def kernel(_, a, b):
        xb, sb = x2[a:b], s[a:b]
        xp.multiply(xb, xb, out=sb)
        sb *= c1
        sb += c0
        sb *= xb                                    # u = sqrt(2/pi) (x + 0.044715 x^3)
        xp.tanh(sb, out=sb)
        sb *= 0.5
        sb += 0.5                                   # s = (1 + tanh u) / 2
        xp.multiply(xb, sb, out=y[a:b])             # y = x s

    blocked(xp, x2, kernel)
    return y.reshape(x.shape), (x, s)


def gelu_tanh_backward(xp, saved, g):
    x, s = saved
    x2, g2 = _rows(x), _rows(g)
    d = xp.empty_like(x2)
    # with 1 - tanh(u)^2 = 4 s (1 - s): dy/dx = s + x s (1 - s) 2 sqrt(2/pi) (1 + 3 a x^2)
    c1, c0 = 6 * 0.044715 * _SQRT_2_OVER_PI, 2 * _SQRT_2_OVER_PI

    def kernel(_, a, b):
        xb, sb, db = x2[a:b], s[a:b], d[a:b]
        ds = sb * sb
        xp.subtract(sb, ds, out=ds)                 # s (1 - s)
        xp.multiply(xb, xb, out=db)
        db *= c1
        db += c0
        db *= ds
        db *= xb
        db += sb
        db *= g2[a:b]

    blocked(xp, x2, kernel)
    return d.reshape(x.shape)


# -- GELU, exact form ------------------------------------------------------------------------------
def _erfc_nonneg(xp, t):
    """``erfc(t)`` for ``t >= 0``, written over ``t``: ``exp(-t^2) erfcx(t)`` with erfcx's
    Chebyshev series in ``u = (t - K) / (t + K)`` summed by Clenshaw's recurrence
    ``b1, b2 = 2 u b1 - b2 + c_k, b1`` in three rotating buffers (:mod:`.special`)."""
    if getattr(xp, "__name__", "") == "cupy":       # CUDA kernels off: CuPy's own erfc
        return special.erfc(xp, t)
    c = special.erfcx_coefficients(t.dtype)
    u = t - special.K
    u /= t + special.K
    two_u = 2.0 * u
    b1, b2, new = xp.zeros_like(t), xp.zeros_like(t), xp.empty_like(t)
    for ck in c[:0:-1]:
        xp.multiply(two_u, b1, out=new)
        new -= b2
        new += ck
        b1, b2, new = new, b1, b2
    xp.multiply(u, b1, out=new)                     # erfcx = u b1 - b2 + c_0
    new -= b2
    new += c[0]
    xp.multiply(t, t, out=t)
    xp.negative(t, out=t)
    xp.exp(t, out=t)
    t *= new
    return t


def gelu_forward(xp, x):
    x2 = _rows(x)
    y, cdf = xp.empty_like(x2), xp.empty_like(x2)

    def kernel(_, a, b):
        xb, pb = x2[a:b], cdf[a:b]
        t = xp.abs(xb)
        t *= _INV_SQRT_2
        half = _erfc_nonneg(xp, t)                  # erfc(|x| / sqrt 2)
        half *= 0.5
        pb[...] = xp.where(xb <= 0, half, 1 - half)  # Phi(x) = erfc(-x / sqrt 2) / 2
        xp.multiply(xb, pb, out=y[a:b])             # y = x Phi(x)

    blocked(xp, x2, kernel)
    return y.reshape(x.shape), (x, cdf.reshape(x.shape))


def gelu_backward(xp, saved, g):
    x, cdf = saved
    x2, p2, g2 = _rows(x), _rows(cdf), _rows(g)
    d = xp.empty_like(x2)

    def kernel(_, a, b):
        xb, db = x2[a:b], d[a:b]
        xp.multiply(xb, xb, out=db)
        db *= -0.5
        xp.exp(db, out=db)
        db *= _INV_SQRT_2PI                         # phi(x)
        db *= xb
        db += p2[a:b]
        db *= g2[a:b]                               # g (Phi(x) + x phi(x))

    blocked(xp, x2, kernel)
    return d.reshape(x.shape)


# -- layer norm ----------------------------------------------------------------------------------
def layer_norm_forward(xp, x, w=None, b=None, eps=1e-5):
    n = x.shape[1]
    xhat, y = xp.empty_like(x), xp.empty_like(x)
    rstd = xp.empty(x.shape[0], dtype=x.dtype)
    mean_of = xp.full(n, 1.0 / n, dtype=x.dtype)    # row means as gemv

    def kernel(_, a, b_):
        xb, hb, yb, rb = x[a:b_], xhat[a:b_], y[a:b_], rstd[a:b_]
        xp.subtract(xb, (xb @ mean_of)[:, None], out=hb)
        xp.multiply(hb, hb, out=yb)
        xp.matmul(yb, mean_of, out=rb)              # biased variance
        rb += eps
        xp.sqrt(rb, out=rb)
        xp.divide(1.0, rb, out=rb)
        hb *= rb[:, None]
        if w is None:
            yb[...] = hb
        else:
            xp.multiply(hb, w, out=yb)
        if b is not None:
            yb += b

    blocked(xp, x, kernel)
    return y, (xhat, rstd, w, b is not None)


def layer_norm_backward(xp, saved, g):
    xhat, rstd, w, has_b = saved
    n = xhat.shape[1]
    blocks = parallel.plan_blocks(g.shape[0], n, xp)
    gx = xp.empty_like(g)
    gw_parts = xp.empty((len(blocks), n), dtype=g.dtype) if w is not None else None
    mean_of = xp.full(n, 1.0 / n, dtype=g.dtype)

    def kernel(k, a, b):
        gb, hb, ob = g[a:b], xhat[a:b], gx[a:b]
        dxhat = gb * w if w is not None else gb.copy()
        if w is not None:
            gw_parts[k] = xp.einsum("ij,ij->j", gb, hb)     # partial sums of g * xhat
        c = xp.einsum("ij,ij->i", dxhat, hb)
        c *= 1.0 / n
        xp.multiply(hb, c[:, None], out=ob)
        ob += (dxhat @ mean_of)[:, None]
        xp.subtract(dxhat, ob, out=ob)
        ob *= rstd[a:b][:, None]

    parallel.run_blocks(kernel, blocks, n)
    gw = None if w is None else gw_parts.sum(axis=0)
    return gx, gw, (g.sum(axis=0) if has_b else None)


# -- attention -----------------------------------------------------------------------------------
_CAUSAL_BIAS = {}


def causal_bias(xp, L, S, dtype, where=None):
    """The additive causal mask (L, S): 0 where key j <= query i, -inf above; built once per
    (array module, device ``where``, L, S, dtype) and reused."""
    key = (id(xp), where, L, S, str(dtype))
    bias = _CAUSAL_BIAS.get(key)
    if bias is None:
        if len(_CAUSAL_BIAS) > 64:
            _CAUSAL_BIAS.clear()
        bias = _CAUSAL_BIAS[key] = xp.triu(xp.full((L, S), -xp.inf, dtype=dtype), 1)
    return bias


def attention_scores(xp, q, k, float_mask=None, bool_mask=None, is_causal=False, scale=1.0,
                     where=None):
    """``(q * scale, S)``: the scaled queries and the masked scores S = (q * scale) k^T + mask
    (the scale on L x E numbers, not L x S scores; the causal mask as a cached bias). Shared
    with the CUDA kernel, which differs only in its softmax."""
    qs = q * scale
    s = qs @ xp.swapaxes(k, -1, -2)
    if is_causal:
        s += causal_bias(xp, s.shape[-2], s.shape[-1], s.dtype, where)
    if bool_mask is not None:
        s = xp.where(bool_mask, s, -xp.inf)
    if float_mask is not None:
        s = s + float_mask
    return qs, s


def attention_forward(xp, q, k, v, float_mask=None, bool_mask=None, is_causal=False, scale=1.0,
                      drop=None):
    qs, s = attention_scores(xp, q, k, float_mask, bool_mask, is_causal, scale)
    guard = not is_causal or bool_mask is not None or float_mask is not None
    m = row_max(s)
    if guard:                                       # (causal alone never masks a whole row)
        m = xp.where(xp.isfinite(m), m, 0)          # fully masked rows give zeros, not NaN
    s -= m
    p = xp.exp(s, out=s)                            # the softmax, in place
    den = row_sum(p)
    if guard:
        den = xp.where(den == 0, 1, den)
    p *= 1 / den
    pd = p * drop if drop is not None else p
    return pd @ v, (qs, k, v, p, pd, drop, scale)


def softmax_backward_in_place(xp, ds, p):
    """dP -> dS = P * (dP - rowsum(dP * P)), overwriting ``ds``."""
    ds -= xp.einsum("...j,...j->...", ds, p)[..., None]
    ds *= p


def attention_backward(xp, saved, g, softmax_backward=softmax_backward_in_place):
    """dv = P'^T g, dS from dP = (g v^T) * drop, dq = dS k * scale, dk = dS^T (q * scale);
    ``softmax_backward(xp, ds, p)`` turns dP into dS in place (the CUDA kernel passes its own)."""
    qs, k, v, p, pd, drop, scale = saved
    gv = xp.swapaxes(pd, -1, -2) @ g
    ds = g @ xp.swapaxes(v, -1, -2)                 # dP
    if drop is not None:
        ds *= drop
    softmax_backward(xp, ds, p)                     # dS, the gradient of the scores
    gk = xp.swapaxes(ds, -1, -2) @ qs
    gq = ds @ k
    gq *= scale
    return gq, gk, gv, ds


register("cross_entropy", "cpu", Kernel(cross_entropy_forward, cross_entropy_backward,
                                        keep_float32=True))
register("gelu", "cpu", Kernel(gelu_forward, gelu_backward))
register("gelu_tanh", "cpu", Kernel(gelu_tanh_forward, gelu_tanh_backward, float16=True))
register("layer_norm", "cpu", Kernel(layer_norm_forward, layer_norm_backward))
register("attention", "cpu", Kernel(attention_forward, attention_backward, float16=True))
