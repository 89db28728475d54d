"""RMSprop: divide the gradient by a running root-mean-square of recent gradients."""
from __future__ import annotations

from .optimizer import Optimizer, _check_number

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""RMSprop (Hinton's lecture 6e; PyTorch's ``torch.optim.RMSprop`` update rule).

    For each parameter :math:`\theta` with gradient :math:`g_t` (learning rate γ,
    smoothing constant α, momentum μ, weight decay λ)::

        g_t  = g_t + λ θ_{t-1}                       (if λ ≠ 0)
        v_t  = α v_{t-1} + (1 - α) g_t²              (square_avg, starts at 0)
        ṽ_t  = v_t
        if centered:
            ḡ_t = α ḡ_{t-1} + (1 - α) g_t            (grad_avg, starts at 0)
            ṽ_t = v_t - ḡ_t²                          (a variance estimate)
        if μ > 0:
            b_t = μ b_{t-1} + g_t / (√ṽ_t + ε)        (momentum_buffer, starts at 0)
            θ_t = θ_{t-1} - γ b_t
        else:
            θ_t = θ_{t-1} - γ g_t / (√ṽ_t + ε)

    State per parameter: ``step``, ``square_avg``, ``momentum_buffer`` (μ > 0) and
    ``grad_avg`` (centered).
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered)
        super().__init__(params, defaults)

    def _validate_group(self, group, where=""):
        super()._validate_group(group, where)
        _check_number("epsilon value", group["eps"], where=where)
        _check_number("momentum value", group["momentum"], where=where)
        _check_number("weight_decay value", group["weight_decay"], where=where)
        _check_number("alpha value", group["alpha"], high=1.0, where=where)

    def _update(self, p, grad, state, group):
        xp = p.xp
        alpha, eps, mu, wd = group["alpha"], group["eps"], group["momentum"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
            if mu > 0:
                state["momentum_buffer"] = xp.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        if wd != 0:
            g = xp.multiply(p.data, wd)        # g + λθ
            g += grad
            grad = g
        square_avg = state["square_avg"]
        tmp = xp.multiply(grad, grad)          # the one scratch array of the step
        tmp *= 1 - alpha
        square_avg *= alpha
        square_avg += tmp                      # v = α v + (1 - α) g²
        if group["centered"]:
            grad_avg = state["grad_avg"]
            xp.multiply(grad, 1 - alpha, out=tmp)
            grad_avg *= alpha
            grad_avg += tmp                    # ḡ = α ḡ + (1 - α) g
            xp.multiply(grad_avg, grad_avg, out=tmp)
            xp.subtract(square_avg, tmp, out=tmp)
            xp.sqrt(tmp, out=tmp)              # √(v - ḡ²)
        else:
            xp.sqrt(square_avg, out=tmp)       # √v
        tmp += eps
        xp.divide(grad, tmp, out=tmp)          # g / (√ṽ + ε)
        if mu > 0:
            buf = state["momentum_buffer"]
            buf *= mu
            buf += tmp                         # b = μ b + g / (√ṽ + ε)
            xp.multiply(buf, group["lr"], out=tmp)
        else:
            tmp *= group["lr"]
        p.data -= tmp
