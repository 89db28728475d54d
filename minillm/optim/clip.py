"""Gradient clipping: rescale (or clamp) gradients before the optimizer step.

:func:`clip_grad_norm_` works entirely on the device: the total norm, the scale factor
and the rescaling are array operations, so a training step on a GPU never waits for a
value to come back to the host (only ``error_if_nonfinite=True`` has to look at it).
"""
from __future__ import annotations

import math

from .. import backend
from ..autograd import Tensor
from ..validation import check_number

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters, fn):
    """The gradient tensors of ``parameters`` (a Tensor or an iterable), skipping ``None``."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = []
    for i, p in enumerate(parameters):
        if not isinstance(p, Tensor):
            raise TypeError(f"{fn}: parameter {i} is a {type(p).__name__}, expected a Tensor")
        if p.grad is not None:
            grads.append(p.grad)
    devices = {str(g.device) for g in grads}
    if len(devices) > 1:
        raise RuntimeError(f"{fn}: gradients live on several devices ({sorted(devices)}); "
                           "clip the parameters of each device separately")
    return grads


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    r"""Rescale all gradients together so that their joint norm is at most ``max_norm``.

    With :math:`g` the concatenation of every gradient::

        total = ‖g‖_p = (Σ_i |g_i|^p)^(1/p)          (p = norm_type; p = inf: max_i |g_i|)
        coef  = min(max_norm / (total + 1e-6), 1)
        g_i  ← coef · g_i                              (every gradient)

    The direction of the update is kept; only its length is limited. Gradients are
    replaced out of place (``p.grad.data = p.grad.data * coef``). Returns the total norm
    *before* clipping as a 0-d Tensor on the gradients' device (log it with ``.item()``).
    """
    fn = "clip_grad_norm_"
    max_norm = check_number(max_norm, "max_norm", fn, low=0)
    if isinstance(norm_type, str) and norm_type.lower() == "inf":
        norm_type = math.inf
    norm_type = check_number(norm_type, "norm_type", fn, low=0, low_open=True,
                             expected="a number > 0 or 'inf'")
    grads = _grads(parameters, fn)
    if not grads:
        dev = backend.get_default_device()
        return Tensor.wrap(dev.xp.zeros((), dtype=backend.get_default_dtype()), dev)
    dev = grads[0].device
    xp = dev.xp
    with dev:
        if norm_type == math.inf:
            total = xp.abs(grads[0].data).max()
            for g in grads[1:]:
                total = xp.maximum(total, xp.abs(g.data).max())
        else:
            total = None
            for g in grads:
                a = g.data
                if norm_type == 2.0:
                    flat = a.reshape(-1)
                    part = xp.dot(flat, flat)          # Σ g², without a g² temporary
                elif norm_type == 1.0:
                    part = xp.abs(a).sum()
                else:
                    part = (xp.abs(a) ** norm_type).sum()
                total = part if total is None else total + part
            total = total ** (1.0 / norm_type)
        total = xp.asarray(total)                      # a 0-d device array
        if error_if_nonfinite and not bool(backend.to_host(xp.isfinite(total))):
            raise RuntimeError(
                f"The total norm of order {norm_type} for gradients from `parameters` is "
                "non-finite, so it cannot be clipped. To disable this error and scale the "
                "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
        coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
        for g in grads:
            g.data = g.data * xp.asarray(coef, dtype=g.data.dtype)
            g.mark_modified()
    return Tensor.wrap(total, dev)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to ``[-clip_value, clip_value]`` (out of place)."""
    fn = "clip_grad_value_"
    clip_value = check_number(clip_value, "clip_value", fn, low=0)
    for g in _grads(parameters, fn):
        with g.device:
            g.data = g.xp.clip(g.data, -clip_value, clip_value)
            g.mark_modified()
