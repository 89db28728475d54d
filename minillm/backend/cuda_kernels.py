"""Fused CUDA kernels (CuPy) for the ops that dominate a GPT training step on a GPU.

On a GPU the generic code of :mod:`minillm.functional` runs every NumPy-style expression as
its own CuPy kernel: ``exp(x - x.max())`` alone is a reduction, a subtraction and an
exponential, three passes over device memory with a temporary array each. The functions
here do the same math in one kernel per op (or per pass that needs a whole row):

* :func:`gelu_tanh_forward` / :func:`gelu_tanh_backward` (ElementwiseKernel):
  y = x/2 (1 + t), t = tanh(sqrt(2/pi) (x + 0.044715 x^3)) and its derivative;
* :func:`layer_norm_forward` (RawKernel, per row): xhat = (x - mean) rstd, y = xhat w + b;
  :func:`layer_norm_backward`: dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
  (RawKernel, per row), dw = sum over rows of g xhat (:func:`column_sums`);
* :func:`softmax_cross_entropy_forward` (RawKernel, per row): p = softmax(z), lse and the
  row loss lse - z[t]; :func:`softmax_cross_entropy_backward` (ElementwiseKernel):
  dz = coef (p - onehot(t)), the one-hot subtracted by index;
* :func:`softmax_lastdim` / :func:`softmax_backward_lastdim` (RawKernel, per row): the
  attention softmax p = exp(s - max) / sum exp(s - max), in place, and ds = p (dp - sum(dp p));
* :func:`column_sums` (RawKernel): the column sums of a (rows, N) array and, with a second
  array, of the product of the two (the LayerNorm weight gradient, Linear bias gradients),
  read row by row in coalesced 32-column tiles (CuPy's generic axis-0 reduction reads
  down the columns, several times slower);
* :func:`random_uniform`, :func:`random_normal`, :func:`random_integers`,
  :func:`dropout_mask` (ElementwiseKernel): counter-based random numbers, element i of a draw
  made from ``splitmix64(key + (i + 1) * golden)`` with one 64-bit ``key`` per draw: no
  generator state to set up (a cuRAND RandomState initialises one XORWOW state per thread
  for every draw, which cost more than the draw), and the dropout mask
  ``(u >= p) / (1 - p)`` in the same single pass;
* :func:`index_add_rows` (RawKernel): the embedding backward ``W[ids[i]] += G[i]`` summed
  in a fixed order (ids sorted, each run of equal ids added up by one thread per column), so
  it is deterministic: an atomic scatter-add sums in whatever order the threads arrive, and
  two identical runs (a resumed one and an uninterrupted one) would drift apart by rounding.

The row kernels (``cupy.RawKernel``) give each row to one thread block: its threads
stride over the row, and the row's max/sum is a block reduction (warp shuffles, then one
value per warp through shared memory). Arithmetic is in ``float`` for float16 and float32
data and in ``double`` for float64 data (so float16 input is computed in float32, the same
*float32 island* as the generic code, and rounded once on store).

Everything here takes and returns CuPy arrays and never moves data to the host. The
kernels are compiled on first use (CuPy caches the binaries on disk) and cached here per
dtype. Only :mod:`minillm.backend` knows about CuPy; this module asks it for the module.

**Kill switch**: set ``MINILLM_CUDA_KERNELS=0`` to use the generic CuPy code instead (read at
every call, so it can be flipped at run time, e.g. to check a suspected kernel bug).
:func:`use` is what :mod:`minillm.functional` asks; :func:`available` says whether the
kernels can run at all here.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .cuda_sources import HELPERS as _HELPERS, RNG as _RNG, SOURCES as _SOURCES

__all__ = ["enabled", "available", "use", "gelu_tanh_forward", "gelu_tanh_backward",
           "layer_norm_forward", "layer_norm_backward", "softmax_cross_entropy_forward",
           "softmax_cross_entropy_backward", "softmax_lastdim", "softmax_backward_lastdim",
           "index_add_rows", "column_sums", "random_uniform", "random_normal",
           "random_integers", "dropout_mask"]

ENV = "MINILLM_CUDA_KERNELS"
#: Threads per block of the row kernels (at most; fewer for short rows). 256 threads can
#: never run out of registers (255 per thread x 256 < 65536), whatever the compiler does.
MAX_THREADS = 256

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def enabled():
    """False when the environment variable ``MINILLM_CUDA_KERNELS`` is ``"0"`` (kill switch)."""
    return os.environ.get(ENV, "1").strip() != "0"


def _cp():
    from . import _import_cupy  # the one place that imports CuPy
    cp = _import_cupy()
    if cp is None:
        raise RuntimeError("minillm.backend.cuda_kernels needs CuPy and a CUDA GPU")
    return cp


def available():
    """True when the fused kernels can be used here: CuPy imports, a GPU answers, and the
    kill switch ``MINILLM_CUDA_KERNELS=0`` is not set."""
    if not enabled():
        return False
    from . import _import_cupy
    return _import_cupy() is not None


def use(xp):
    """Should an op whose arrays live in the array module ``xp`` call the fused kernels?
    Only for CuPy (never for NumPy or the stand-in device) and only while enabled."""
    from . import is_cupy
    return is_cupy(xp) and enabled()


# -- types ----------------------------------------------------------------------------------------
# Storage types of the kernels' pointers: float16 is passed as its 16 bits (unsigned short) and
# converted with the PTX instructions that cuda_fp16.h uses, so no header is needed.
_CTYPE = {np.dtype(np.float16): "unsigned short", np.dtype(np.float32): "float",
          np.dtype(np.float64): "double"}


def _ctype(dtype):
    try:
        return _CTYPE[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"cuda_kernels: float16/float32/float64 arrays only, got {dtype}") from None


def _work(dtype):
    """The dtype the arithmetic is done in: float32 for float16 data, else the data's own."""
    dtype = np.dtype(dtype)
    _ctype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _acc(dtype):
    return "double" if np.dtype(dtype) == np.float64 else "float"


# -- raw row kernels (their CUDA source is in cuda_sources.py) -----------------------------------

_kernels = {}


def _raw(kind, acc, x="float", y="float", o="float"):
    """The RawKernel ``kind`` for these C types (built once, compiled by CuPy on first launch)."""
    key = (kind, acc, x, y, o)
    k = _kernels.get(key)
    if k is None:
        code = (f"typedef {acc} acc_t;\ntypedef {x} x_t;\ntypedef {y} y_t;\ntypedef {o} o_t;\n"
                + _HELPERS + _SOURCES[kind])
        k = _kernels[key] = _cp().RawKernel(code, f"minillm_{kind}")
    return k


def _threads(n_cols):
    """Threads per block for rows of ``n_cols``: a multiple of 32, at most MAX_THREADS."""
    return min(MAX_THREADS, max(32, -(-n_cols // 32) * 32))


def _launch(kernel, n_rows, n_cols, args):
    if n_rows >= 2 ** 31 or n_cols >= 2 ** 31:
        raise ValueError(f"cuda_kernels: {n_rows} rows of {n_cols} exceed the kernels' int32 "
                         f"range; set {ENV}=0")
    kernel((int(n_rows),), (_threads(n_cols),), args)


def _contiguous(a):
    """RawKernels see raw pointers: C-contiguous data (a copy only when ``a`` is a view)."""
    return a if a.flags.c_contiguous else _cp().ascontiguousarray(a)


def _on(a):
    """``with _on(a):`` launches on the GPU that holds ``a`` (CuPy runs on the current one)."""
    return a.device


def _scalar(dtype, v):
    return np.float64(v) if np.dtype(dtype) == np.float64 else np.float32(v)


def _rows_cols(a, op):
    if a.ndim < 1:
        raise ValueError(f"cuda_kernels.{op}: needs at least one axis, got a 0-d array")
    n_cols = a.shape[-1]
    return (a.size // n_cols if n_cols else 0), n_cols


# -- softmax over the last axis (attention) -------------------------------------------------------
def softmax_lastdim(s, out=None, masked_rows_zero=True):
    """``p = exp(s - max(s)) / sum(exp(s - max(s)))`` over the last axis, ONE kernel.

    With ``out=None`` the result overwrites ``s`` (the attention scores: the caller has
    already added the causal -inf bias or the mask). With ``masked_rows_zero`` a row with
    every entry -inf gives zeros (a fully masked query) instead of NaN. ``out`` may have
    another float dtype than ``s`` (float16 scores -> float32 probabilities). Computed in
    float32 for float16 data.
    """
    cp = _cp()
    out = s if out is None else out
    if out.shape != s.shape:
        raise ValueError(f"softmax_lastdim: out shape {out.shape} != input shape {s.shape}")
    n_rows, n_cols = _rows_cols(s, "softmax_lastdim")
    if n_rows == 0 or n_cols == 0:
        return out
    with _on(s):
        src = _contiguous(s)
        dst = out if out.flags.c_contiguous else cp.empty(out.shape, out.dtype)
        k = _raw("softmax_fwd", _acc(s.dtype), _ctype(s.dtype), _ctype(dst.dtype))
        _launch(k, n_rows, n_cols, (src, dst, np.int32(n_cols), np.int32(bool(masked_rows_zero))))
        if dst is not out:
            out[...] = dst
    return out


def softmax_backward_lastdim(dp, p, out=None):
    """``ds = p * (dp - rowsum(dp * p))`` over the last axis (the softmax backward), ONE kernel.

    ``out=None`` allocates ``ds`` with ``dp``'s dtype; ``out=dp`` works in place. ``p`` may
    have another float dtype than ``dp`` (float32 probabilities, float16 gradients) and
    fewer (broadcast) batch dims (attention whose v has more batch dims than q and k).
    """
    cp = _cp()
    if dp.shape != p.shape:
        p = cp.broadcast_to(p, dp.shape)
    if out is not None and out.shape != dp.shape:
        raise ValueError(f"softmax_backward_lastdim: out shape {out.shape} != {dp.shape}")
    with _on(dp):
        out = cp.empty(dp.shape, dtype=dp.dtype) if out is None else out
        n_rows, n_cols = _rows_cols(dp, "softmax_backward_lastdim")
        if n_rows == 0 or n_cols == 0:
            return out
        g, pc = _contiguous(dp), _contiguous(p)
        dst = out if out.flags.c_contiguous else cp.empty(out.shape, out.dtype)
        acc = "double" if np.float64 in (dp.dtype, p.dtype) else "float"
        k = _raw("softmax_bwd", acc, _ctype(dp.dtype), _ctype(p.dtype), _ctype(dst.dtype))
        _launch(k, n_rows, n_cols, (g, pc, dst, np.int32(n_cols)))
        if dst is not out:
            out[...] = dst
    return out


# -- softmax + cross-entropy ----------------------------------------------------------------------
def softmax_cross_entropy_forward(z2, t, ignore_index=-100, label_smoothing=0.0):
    """Rows of logits ``z2`` (n, C) and targets ``t`` (n,) -> ``(p, lse, loss)``, ONE kernel.

    ``p = softmax(z)`` (kept for the backward), ``lse = max z + log(sum exp(z - max z))``
    and the per-row loss ``lse - z[t]`` (with label smoothing eps:
    ``(1 - eps) (lse - z[t]) + eps (lse - mean z)``), 0 where ``t == ignore_index`` and NaN
    for a target outside [0, C) (the caller's device check reports it). All three are
    float32 for float16 logits (the float32 island), else the logits' dtype.
    """
    cp = _cp()
    n, c = z2.shape
    work = _work(z2.dtype)
    with _on(z2):
        p = cp.empty((n, c), dtype=work)
        lse = cp.empty(n, dtype=work)
        loss = cp.empty(n, dtype=work)
        if n == 0:
            return p, lse, loss
        if c == 0:
            raise ValueError("softmax_cross_entropy_forward: logits need at least one class")
        tt = t if (t.dtype == np.int64 and t.flags.c_contiguous) else \
            cp.ascontiguousarray(t, dtype=np.int64)
        k = _raw("xent_fwd", _acc(work), _ctype(z2.dtype))
        _launch(k, n, c, (_contiguous(z2), tt.reshape(n), p, lse, loss, np.int32(c),
                          np.int64(ignore_index), _scalar(work, label_smoothing),
                          _scalar(work, 1.0 - label_smoothing)))
    return p, lse, loss


_XENT_BWD = {}


def softmax_cross_entropy_backward(p, t, coef, label_smoothing=0.0, out_dtype=None):
    """``dz[r, j] = coef[r] * (p[r, j] - (1 - eps) [j == t[r]] - eps / C)``, ONE kernel.

    The gradient of the cross-entropy rows (coef = the row's weight: g / count for a mean,
    0 for ignored rows), subtracting at the target column by its index, never through a
    one-hot matrix. Computed in ``p``'s dtype (float32 for float16 logits) and stored as
    ``out_dtype`` (default ``p.dtype``) once.
    """
    cp = _cp()
    kernel = _XENT_BWD.get("k")
    if kernel is None:
        kernel = _XENT_BWD["k"] = cp.ElementwiseKernel(
            "P p, raw L t, raw W coef, int64 ncols, float64 hit_scale, float64 smooth",
            "D dz",
            """
            const long long row = i / ncols;
            const long long col = i - row * ncols;
            const P c = (P)coef[row];
            P v = p * c;
            if (col == (long long)t[row]) v -= (P)hit_scale * c;
            if (smooth != 0) v -= (P)smooth * c;
            dz = (D)v;
            """,
            "minillm_xent_bwd")
    n, c = p.shape
    with _on(p):
        dz = cp.empty((n, c), dtype=p.dtype if out_dtype is None else out_dtype)
        if dz.size:
            kernel(p, t.reshape(n), coef.reshape(n), c, 1.0 - label_smoothing,
                   label_smoothing / c, dz)
    return dz


# -- GELU (tanh form) -----------------------------------------------------------------------------
_GELU = {}


def _gelu_kernels(acc):
    ks = _GELU.get(acc)
    if ks is None:
        cp = _cp()
        c1, c0 = repr(_GELU_A * _SQRT_2_OVER_PI), repr(_SQRT_2_OVER_PI)
        c1b = repr(3 * _GELU_A * _SQRT_2_OVER_PI)
        fwd = cp.ElementwiseKernel(
            "T x", "T y, T t",
            f"""
            typedef {acc} acc_t;
            const acc_t v = (acc_t)x;
            const acc_t th = tanh((v * v * (acc_t){c1} + (acc_t){c0}) * v);
            t = (T)th;
            y = (T)((th + (acc_t)1) * v * (acc_t)0.5);
            """,
            f"minillm_gelu_tanh_fwd_{acc}")
        bwd = cp.ElementwiseKernel(
            "T x, T t, G g", "T dx",
            f"""
            typedef {acc} acc_t;
            const acc_t v = (acc_t)x, th = (acc_t)t;
            const acc_t d = ((v * v * (acc_t){c1b} + (acc_t){c0}) * v * ((acc_t)1 - th * th)
                             + th + (acc_t)1) * (acc_t)0.5;
            dx = (T)(d * (acc_t)g);
            """,
            f"minillm_gelu_tanh_bwd_{acc}")
        ks = _GELU[acc] = (fwd, bwd)
    return ks


def gelu_tanh_forward(x):
    """``y = x/2 (1 + t)``, ``t = tanh(sqrt(2/pi) (x + 0.044715 x^3))`` -> ``(y, t)``, ONE
    kernel (t is kept for the backward). Computed in float32 for float16 input."""
    cp = _cp()
    fwd, _ = _gelu_kernels(_acc(_work(x.dtype)))
    with _on(x):
        y = cp.empty(x.shape, dtype=x.dtype)
        t = cp.empty(x.shape, dtype=x.dtype)
        if x.size:
            fwd(x, y, t)
    return y, t


def gelu_tanh_backward(x, t, g):
    """``dx = g (1/2 (1 + t) + 1/2 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))``, ONE
    kernel, with ``t`` from :func:`gelu_tanh_forward`. Computed in float32 for float16."""
    cp = _cp()
    _, bwd = _gelu_kernels(_acc(_work(x.dtype)))
    with _on(x):
        dx = cp.empty(x.shape, dtype=x.dtype)
        if x.size:
            bwd(x, t, g, dx)
    return dx


# -- LayerNorm ------------------------------------------------------------------------------------
def layer_norm_forward(x2, w, b, eps):
    """LayerNorm of the rows of ``x2`` (rows, N) -> ``(y, xhat, rstd)``, ONE kernel.

    ``mean = sum(x) / N``, ``var = sum((x - mean)^2) / N`` (biased),
    ``rstd = 1 / sqrt(var + eps)``, ``xhat = (x - mean) * rstd``, ``y = xhat * w + b``
    (``w``/``b`` of shape (N,) or None). ``y`` has x2's dtype; ``xhat`` and ``rstd`` (kept
    for the backward) are float32 for float16 input, else x2's dtype.
    """
    cp = _cp()
    n_rows, n = x2.shape
    work = _work(x2.dtype)
    with _on(x2):
        y = cp.empty((n_rows, n), dtype=x2.dtype)
        xhat = cp.empty((n_rows, n), dtype=work)
        rstd = cp.empty(n_rows, dtype=work)
        if n_rows == 0:
            return y, xhat, rstd
        xc = _contiguous(x2)
        wc = xc if w is None else _contiguous(w.astype(x2.dtype, copy=False)).reshape(n)
        bc = xc if b is None else _contiguous(b.astype(x2.dtype, copy=False)).reshape(n)
        k = _raw("layer_norm_fwd", _acc(work), _ctype(x2.dtype))
        _launch(k, n_rows, n, (xc, wc, bc, y, xhat, rstd, np.int32(n),
                               _scalar(work, 1.0 / n if n else 0.0), _scalar(work, eps),
                               np.int32(w is not None), np.int32(b is not None)))
    return y, xhat, rstd


def layer_norm_backward(g2, xhat, rstd, w, need_bias=True):
    """LayerNorm backward on rows -> ``(dx, dw, db)``.

    ``dxhat = g * w``; ``dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``
    (ONE row kernel); ``dw = sum over rows of g * xhat`` and ``db = sum over rows of g``
    (both from one :func:`column_sums`; dw None when ``w`` is None, db None unless
    ``need_bias``). Sums in xhat's
    dtype (float32 for float16), results in ``g2``'s dtype.
    """
    cp = _cp()
    n_rows, n = g2.shape
    work = xhat.dtype
    with _on(g2):
        dx = cp.empty((n_rows, n), dtype=g2.dtype)
        if n_rows == 0:
            dw = None if w is None else cp.zeros(n, dtype=g2.dtype)
            db = cp.zeros(n, dtype=g2.dtype) if need_bias else None
            return dx, dw, db
        gc, hc = _contiguous(g2), _contiguous(xhat)
        wc = gc if w is None else _contiguous(w.astype(g2.dtype, copy=False)).reshape(n)
        k = _raw("layer_norm_bwd", _acc(work), _ctype(g2.dtype))
        _launch(k, n_rows, n, (gc, hc, _contiguous(rstd), wc, dx, np.int32(n),
                               _scalar(work, 1.0 / n if n else 0.0), np.int32(w is not None)))
        dw, db = column_sums(gc, None if w is None else hc, need_g=need_bias)
        dw = None if dw is None else dw.astype(g2.dtype, copy=False)
        db = None if db is None else db.astype(g2.dtype, copy=False)
    return dx, dw, db


# -- embedding backward ---------------------------------------------------------------------------
ELEMENTWISE_THREADS = 256


def index_add_rows(target, rows, values):
    """``target[rows[i]] += values[i]`` in place, deterministically (the embedding backward).

    ``target`` (V, D), ``rows`` (N,) integer ids, ``values`` (N, D). The ids are sorted
    (``argsort``), then one kernel sums each run of equal ids column by column in sorted
    order: the same inputs give the same bits on every run, unlike an atomic scatter-add.
    Ids outside [0, V) are skipped (the embedding's device check reports them). Sums in
    float32 for float16 values, else in the values' dtype.
    """
    cp = _cp()
    if target.ndim != 2 or rows.ndim != 1 or values.shape != (rows.shape[0], target.shape[1]):
        raise ValueError(f"index_add_rows: expected target (V, D), rows (N,), values (N, D); "
                         f"got {target.shape}, {rows.shape}, {values.shape}")
    n, d = values.shape
    if n == 0 or d == 0:
        return target
    if n * d >= 2 ** 62 or d >= 2 ** 31:
        raise ValueError(f"cuda_kernels.index_add_rows: {n} x {d} is too large; set {ENV}=0")
    with _on(target):
        r64 = rows.astype(np.int64, copy=False)
        order = cp.argsort(r64)
        r = r64[order]
        dst = target if target.flags.c_contiguous else cp.ascontiguousarray(target)
        acc = "double" if np.float64 in (values.dtype, target.dtype) else "float"
        k = _raw("index_add_rows", acc, _ctype(values.dtype), _ctype(dst.dtype))
        total = n * d
        blocks = -(-total // ELEMENTWISE_THREADS)
        k((int(blocks),), (ELEMENTWISE_THREADS,),
          (r, order, _contiguous(values), dst, np.int64(n), np.int32(d),
           np.int64(target.shape[0])))
        if dst is not target:
            target[...] = dst
    return target


# -- column sums (LayerNorm weight, Linear bias gradients) ---------------------------------------
COLUMN_TILE = (32, 8)
MAX_ROW_BLOCKS = 256


def column_sums(g2, h2=None, need_g=True):
    """Column sums of ``g2`` (rows, N) -> ``(sum_rows(g2 * h2), sum_rows(g2))``.

    The first is None without ``h2`` (same shape as ``g2``), the second None unless
    ``need_g``. Two launches of one kernel: partial sums of up to 256 row blocks, then the
    sum of the partials; every element is read once, in coalesced rows. Sums in float32 for
    float16 data (float64 for float64), returned in that working dtype; deterministic.
    """
    cp = _cp()
    n_rows, n = g2.shape
    acc_dtype = np.dtype(np.float64) if np.float64 in (
        g2.dtype, None if h2 is None else h2.dtype) else np.dtype(np.float32)
    with _on(g2):
        if n == 0 or n_rows == 0:
            z = cp.zeros(n, dtype=acc_dtype)
            return (None if h2 is None else z), (z.copy() if need_g else None)
        if n >= 2 ** 31:
            raise ValueError(f"cuda_kernels.column_sums: {n} columns exceed int32; set {ENV}=0")
        if h2 is not None and h2.shape != g2.shape:
            raise ValueError(f"column_sums: h2 {h2.shape} != g2 {g2.shape}")
        acc = _acc(acc_dtype)
        gx, tx = -(-n // COLUMN_TILE[0]), COLUMN_TILE
        blocks = int(min(MAX_ROW_BLOCKS, -(-n_rows // COLUMN_TILE[1])))
        gc = _contiguous(g2)
        hc = gc if h2 is None else _contiguous(h2)
        part_gh = cp.empty((blocks, n), dtype=acc_dtype) if h2 is not None else None
        part_g = cp.empty((blocks, n), dtype=acc_dtype) if need_g else None
        # the kernel skips an output it is told not to write, but still takes a pointer
        k = _raw("column_sums", acc, _ctype(gc.dtype), _ctype(hc.dtype))
        k((gx, blocks), tx, (gc, hc, part_gh if part_gh is not None else part_g,
                             part_g if part_g is not None else part_gh, np.int64(n_rows),
                             np.int32(n), np.int32(h2 is not None), np.int32(bool(need_g))))
        out = []
        k2 = _raw("column_sums", acc, _ctype(acc_dtype), _ctype(acc_dtype))
        for part in (part_gh, part_g):
            if part is None:
                out.append(None)
                continue
            if blocks == 1:
                out.append(part.reshape(n))
                continue
            total = cp.empty((1, n), dtype=acc_dtype)
            k2((gx, 1), tx, (part, part, total, total, np.int64(blocks), np.int32(n),
                             np.int32(0), np.int32(1)))
            out.append(total.reshape(n))
    return out[0], out[1]


# -- random numbers: splitmix64 on (key, i); the device code is cuda_sources.RNG
_RNG_KERNELS = {}


def _rng_kernel(name):
    k = _RNG_KERNELS.get(name)
    if k is not None:
        return k
    cp = _cp()
    if name == "uniform":
        k = cp.ElementwiseKernel(
            "uint64 key", "T y",
            """
            const unsigned long long n = (unsigned long long)i;
            if (sizeof(T) == 8) y = (T)minillm_u53(key, n); else y = (T)minillm_u24(key, n);
            """, "minillm_random_uniform", preamble=_RNG)
    elif name == "normal":                        # Box-Muller on draws 2i and 2i + 1
        k = cp.ElementwiseKernel(
            "uint64 key", "T y",
            """
            const unsigned long long n = 2ULL * (unsigned long long)i;
            if (sizeof(T) == 8) {
                const double u1 = 1.0 - minillm_u53(key, n), u2 = minillm_u53(key, n + 1ULL);
                y = (T)(sqrt(-2.0 * log(u1)) * cospi(2.0 * u2));
            } else {
                const float u1 = 1.0f - minillm_u24(key, n), u2 = minillm_u24(key, n + 1ULL);
                y = (T)(sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
            }
            """, "minillm_random_normal", preamble=_RNG)
    elif name == "integers":
        k = cp.ElementwiseKernel(
            "uint64 key, int64 low, uint64 span", "T y",
            "y = (T)(low + (long long)(minillm_mix(key, (unsigned long long)i) % span));",
            "minillm_random_integers", preamble=_RNG)
    elif name == "dropout":
        k = cp.ElementwiseKernel(
            "uint64 key, float64 p, float64 scale", "T m",
            """
            const unsigned long long n = (unsigned long long)i;
            if (sizeof(T) == 8) m = minillm_u53(key, n) >= p ? (T)scale : (T)0;
            else m = minillm_u24(key, n) >= (float)p ? (T)(float)scale : (T)0;
            """, "minillm_dropout_mask", preamble=_RNG)
    else:
        raise KeyError(name)
    _RNG_KERNELS[name] = k
    return k


def _draw(op, kind, key, shape, dtype, *args, floats_only=True):
    """Allocate ``shape`` of ``dtype`` and fill it with the random kernel ``kind`` for the
    64-bit ``key`` (extra kernel inputs ``args`` go between the key and the output)."""
    dtype = np.dtype(dtype)
    if floats_only and dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: float32 or float64, got {dtype}")
    y = _cp().empty(shape, dtype=dtype)
    if y.size:
        _rng_kernel(kind)(np.uint64(int(key) & 0xFFFFFFFFFFFFFFFF), *args, y)
    return y


def random_uniform(key, shape, dtype):
    """Uniform floats in [0, 1) of ``shape``: element i is the top 24 (float32) or 53
    (float64) bits of ``splitmix64(key, i)`` over 2^24 or 2^53. float32/float64 only."""
    return _draw("random_uniform", "uniform", key, shape, dtype)


def random_normal(key, shape, dtype):
    """Standard normal floats (Box-Muller on uniforms 2i, 2i + 1 of ``key``)."""
    return _draw("random_normal", "normal", key, shape, dtype)


def random_integers(key, low, high, shape, dtype=np.int64):
    """Integers uniform in [low, high): ``low + splitmix64(key, i) mod (high - low)`` (the
    modulo bias is below (high - low) / 2^64)."""
    low, high = int(low), int(high)
    if high <= low:
        raise ValueError(f"random_integers: high ({high}) must be > low ({low})")
    return _draw("random_integers", "integers", key, shape, dtype, np.int64(low),
                 np.uint64(high - low), floats_only=False)


def dropout_mask(key, shape, dtype, p):
    """The inverted-dropout mask in ONE kernel: ``1/(1-p)`` where the uniform draw i of
    ``key`` is ``>= p``, else 0; equal to ``(random_uniform(key, shape, dtype) >= p) *
    (1/(1-p))`` in ``dtype`` (float32 or float64)."""
    return _draw("dropout_mask", "dropout", key, shape, dtype, np.float64(p),
                 np.float64(1.0 / (1.0 - p)))
