"""Numerical gradient checking: analytic backward vs central differences in float64."""
from __future__ import annotations

import numpy as np

from .. import backend
from .function import no_grad
from .tensor import Tensor

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with the numerical one."""


def _outputs(out):
    outs = out if isinstance(out, (tuple, list)) else (out,)
    outs = [o for o in outs if isinstance(o, Tensor) and o.dtype.kind == "f"]
    if not outs:
        raise TypeError("gradcheck: fn must return a floating Tensor (or a tuple with some)")
    return outs


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, raise_exception=True):
    """Check ``fn``'s gradients w.r.t. every input with ``requires_grad=True``.

    The outputs are reduced to a scalar through a fixed random projection
    ``L = sum_k <r_k, out_k>`` (so every output element and every upstream-gradient
    entry is exercised, not just ``sum``), the analytic gradient of ``L`` comes from
    ``backward``, and the numerical one from central differences
    ``(L(x + eps e_i) - L(x - eps e_i)) / (2 eps)`` for every element ``i``.
    An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.

    ``fn`` must be deterministic (no dropout) and the checked inputs float64. On failure
    raises :class:`GradcheckError` naming the input, the worst index and both values
    (or returns False when ``raise_exception=False``). Returns True on success.
    """
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    checked = _checked_inputs(inputs)
    rng = np.random.default_rng(seed)
    outs = _outputs(fn(*inputs))
    projections = [rng.standard_normal(o.shape) for o in outs]
    analytic = _analytic_grads(inputs, checked, outs, projections)
    for i in checked:
        numeric = _numeric_grad(fn, inputs, inputs[i], projections, eps)
        msg = _mismatch(i, inputs[i].shape, analytic[i], numeric, atol, rtol)
        if msg is not None:
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True


def _checked_inputs(inputs):
    """Indices of the inputs requiring grad; each must be float64 and at least one exist."""
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; central differences need "
                            "float64 (use .double() or mm.set_default_dtype(np.float64))")
    return checked


def _analytic_grads(inputs, checked, outs, projections):
    """``{input index: dL/dx}`` from ``backward`` of ``L = sum_k <r_k, out_k>`` (host float64)."""
    proj_dev = [backend.to_device(r, o.device, dtype=o.dtype) for r, o in zip(projections, outs)]
    for i in checked:
        inputs[i].grad = None
    loss = None
    for o, r in zip(outs, proj_dev):
        if not o.requires_grad:
            continue
        term = (o * Tensor._make(r, o.device, False)).sum()
        loss = term if loss is None else loss + term
    analytic = {}
    if loss is not None:
        loss.backward()
    for i in checked:
        g = inputs[i].grad
        analytic[i] = np.zeros(inputs[i].shape) if g is None else g.numpy().astype(np.float64)
    return analytic


def _numeric_grad(fn, inputs, t, projections, eps):
    """dL/dt by central differences, one element of input ``t`` at a time (restored after)."""
    def scalar_loss():
        with no_grad():
            res = _outputs(fn(*inputs))
        return float(sum(np.sum(backend.to_host(o.data).astype(np.float64) * r)
                         for o, r in zip(res, projections)))

    host = backend.to_host(t.data).copy()
    numeric = np.zeros_like(host)
    for idx in np.ndindex(*host.shape):
        orig = host[idx]
        t.data[idx] = orig + eps
        lp = scalar_loss()
        t.data[idx] = orig - eps
        lm = scalar_loss()
        t.data[idx] = orig
        numeric[idx] = (lp - lm) / (2 * eps)
    return numeric


def _mismatch(i, shape, a, numeric, atol, rtol):
    """The failure message for input ``i`` if analytic ``a`` and ``numeric`` differ, else None."""
    err = np.abs(a - numeric)
    bad = err > atol + rtol * np.abs(numeric)
    if not bad.any():
        return None
    worst = np.unravel_index(np.argmax(np.where(bad, err, -1)), err.shape)
    return (f"gradcheck failed for input {i} (shape {shape}): {int(bad.sum())} of "
            f"{bad.size} elements differ; worst at index {tuple(int(w) for w in worst)}: "
            f"analytic {a[worst]:.10g} vs numeric {numeric[worst]:.10g} "
            f"(|diff| {err[worst]:.3g} > atol {atol} + rtol {rtol} * |numeric|)")
