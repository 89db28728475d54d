"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019)."""
from __future__ import annotations

from .optimizer import Optimizer, _check_number

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    r"""Adam: per-coordinate step sizes from running moments of the gradient.

    PyTorch's ``torch.optim.Adam`` update rule. For each parameter θ with gradient
    :math:`g_t` at step t = 1, 2, ... (learning rate γ, betas β₁ β₂, weight decay λ)::

        g_t = g_t + λ θ_{t-1}                       (if λ ≠ 0: L2 penalty in the gradient)
        m_t = β₁ m_{t-1} + (1 - β₁) g_t             (exp_avg,    starts at 0)
        v_t = β₂ v_{t-1} + (1 - β₂) g_t²            (exp_avg_sq, starts at 0)
        m̂_t = m_t / (1 - β₁ᵗ)                       (bias corrections)
        v̂_t = v_t / (1 - β₂ᵗ)
        θ_t = θ_{t-1} - γ m̂_t / (√v̂_t + ε)

    As in PyTorch, ε is added *after* dividing √v_t by √(1 - β₂ᵗ), i.e.
    ``θ -= (γ / (1 - β₁ᵗ)) · m / (√v / √(1 - β₂ᵗ) + ε)``.

    State per parameter: ``step`` (int), ``exp_avg``, ``exp_avg_sq``.
    """

    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _validate_group(self, group, where=""):
        super()._validate_group(group, where)
        _check_number("epsilon value", group["eps"], where=where)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas{where} must be a pair (beta1, beta2), got {betas!r}")
        for i, b in enumerate(betas):
            _check_number(f"beta parameter at index {i}", b, high=1.0, high_open=True,
                          where=where)
        _check_number("weight_decay value", group["weight_decay"], where=where)

    def _update(self, p, grad, state, group):
        xp = p.xp
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t = state["step"]
        if wd != 0:
            if self.decoupled_weight_decay:
                p.data *= 1 - lr * wd          # AdamW: θ = θ (1 - γλ); g is untouched
            else:
                g = xp.multiply(p.data, wd)    # Adam: g = g + λθ
                g += grad
                grad = g
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        tmp = xp.multiply(grad, 1 - beta1)     # the one scratch array of the step
        exp_avg *= beta1
        exp_avg += tmp                         # m = β₁ m + (1 - β₁) g
        xp.multiply(grad, grad, out=tmp)
        tmp *= 1 - beta2
        exp_avg_sq *= beta2
        exp_avg_sq += tmp                      # v = β₂ v + (1 - β₂) g²

        bias_correction1 = 1 - beta1 ** t      # host floats: no device round trip
        bias_correction2 = 1 - beta2 ** t
        step_size = lr / bias_correction1
        xp.sqrt(exp_avg_sq, out=tmp)
        tmp /= bias_correction2 ** 0.5
        tmp += eps                             # denom = √v / √(1 - β₂ᵗ) + ε
        xp.divide(exp_avg, tmp, out=tmp)
        tmp *= step_size
        p.data -= tmp                          # θ -= γ/(1 - β₁ᵗ) · m / denom


class AdamW(Adam):
    r"""Adam with decoupled weight decay (PyTorch's ``torch.optim.AdamW`` update rule).

    Weight decay shrinks the parameter directly instead of entering the gradient, so it
    is not rescaled by the adaptive denominator::

        θ_{t-1} ← θ_{t-1} (1 - γ λ)                  (before the Adam step; λ = weight_decay)
        then the Adam update above with λ = 0 in the gradient.

    The default ``weight_decay=1e-2`` follows PyTorch. Exclude biases and LayerNorm
    weights from decay with a second parameter group ``{"params": ..., "weight_decay": 0}``.
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
