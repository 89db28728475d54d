"""Stochastic gradient descent, with momentum, dampening, Nesterov momentum and weight decay."""
from __future__ import annotations

from .optimizer import Optimizer, _check_number, required

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent (PyTorch's ``torch.optim.SGD`` update rule).

    For each parameter :math:`\theta` with gradient :math:`g_t` at step :math:`t`
    (learning rate :math:`\gamma`, momentum :math:`\mu`, dampening :math:`\tau`,
    weight decay :math:`\lambda`)::

        g_t = g_t + λ θ_{t-1}                        (if λ ≠ 0: L2 penalty in the gradient)
        if μ ≠ 0:
            b_t = g_t                                 (t = 1: the buffer starts as a copy of g)
            b_t = μ b_{t-1} + (1 - τ) g_t             (t > 1)
            g_t = g_t + μ b_t   if nesterov  else  b_t
        θ_t = θ_{t-1} - γ g_t

    Nesterov momentum needs ``momentum > 0`` and ``dampening == 0``.

    State per parameter: ``momentum_buffer`` (only when ``momentum != 0``).
    """

    def __init__(self, params, lr=required, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _validate_group(self, group, where=""):
        super()._validate_group(group, where)
        _check_number("momentum value", group["momentum"], where=where)
        _check_number("dampening value", group["dampening"], where=where)
        _check_number("weight_decay value", group["weight_decay"], where=where)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"Nesterov momentum requires a momentum and zero dampening{where} "
                             f"(got momentum={group['momentum']}, "
                             f"dampening={group['dampening']})")

    def _update(self, p, grad, state, group):
        xp = p.xp
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        d_p, owned = grad, False             # ``owned``: d_p is a scratch array we may overwrite
        if wd != 0:
            d_p = xp.multiply(p.data, wd)     # g + λθ (never modify p.grad itself)
            d_p += grad
            owned = True
        if mu != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                # the first buffer is a copy of the gradient (a scratch d_p can be kept as is)
                buf = state["momentum_buffer"] = d_p if owned else d_p.copy()
            else:
                buf *= mu
                if group["dampening"] != 0:
                    buf += (1 - group["dampening"]) * d_p
                else:
                    buf += d_p
            if group["nesterov"]:
                nest = xp.multiply(buf, mu)   # g + μ b
                nest += d_p
                d_p, owned = nest, True
            else:
                d_p, owned = buf, False
        if owned:
            d_p *= lr
            p.data -= d_p
        else:
            p.data -= lr * d_p
