"""Chapter 7 exercises: reference solutions (graded by the same checks as student work)."""
import numpy as np


def torch_to_minillm_linear(state):
    """Exercise 7.1: transpose every 2-D weight (out, in) -> (in, out); biases unchanged."""
    return {name: (np.ascontiguousarray(a.T) if a.ndim == 2 else a.copy())
            for name, a in state.items()}


def split_heads(x, n_heads):
    """Exercise 7.2: (B, T, C) -> (B, H, T, C / H)."""
    b, t, c = x.shape
    return x.reshape(b, t, n_heads, c // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """Exercise 7.3: (B, H, T, D) -> (B, T, H * D), the inverse of split_heads."""
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def split_packed_qkv(c_attn_weight, c_attn_bias, n_heads):
    """Exercise 7.4: GPT-2's packed c_attn (d, 3d) | (3d,) -> per-head q, k, v projections."""
    d = c_attn_weight.shape[0]
    hd = d // n_heads
    w = c_attn_weight.reshape(d, 3, n_heads, hd).transpose(1, 2, 0, 3)    # (3, H, d, hd)
    bias = c_attn_bias.reshape(3, n_heads, hd)                             # (3, H, hd)
    return {"q_weight": w[0].copy(), "k_weight": w[1].copy(), "v_weight": w[2].copy(),
            "q_bias": bias[0].copy(), "k_bias": bias[1].copy(), "v_bias": bias[2].copy()}
