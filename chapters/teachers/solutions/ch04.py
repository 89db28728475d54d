"""Chapter 4 exercises: reference solutions (graded by the same checks as student work)."""
import numpy as np


def softmax_backward(p, grad_out):
    """Exercise 4.1: dL/dz = p * (g - sum(g * p))."""
    return p * (grad_out - np.sum(grad_out * p, axis=-1, keepdims=True))


def scaled_dot_product_attention(q, k, v, causal=False):
    """Exercise 4.2: softmax(q k^T / sqrt(d_k)) v, with an optional causal mask."""
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        L, S = scores.shape[-2:]
        scores = np.where(np.tril(np.ones((L, S), dtype=bool)), scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights @ v


def layer_norm_forward_backward(x, gamma, beta, grad_out, eps=1e-5):
    """Exercise 4.3: y and the gradients dx, dgamma, dbeta of a layer norm."""
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    x_hat = (x - mu) * inv_std
    y = gamma * x_hat + beta
    g = gamma * grad_out
    dx = inv_std * (g - g.mean(axis=-1, keepdims=True)
                    - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
    batch_axes = tuple(range(x.ndim - 1))
    return y, dx, (grad_out * x_hat).sum(axis=batch_axes), grad_out.sum(axis=batch_axes)


def sinusoidal_positions(n_positions, d_model):
    """Exercise 4.4: PE[pos, 2i] = sin(w_i pos), PE[pos, 2i+1] = cos(w_i pos)."""
    w = 10000.0 ** (-np.arange(0, d_model, 2) / d_model)
    angle = np.arange(n_positions)[:, None] * w[None, :]
    pe = np.zeros((n_positions, d_model))
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return pe


def mlm_mask(ids, special_mask, vocab_size, mask_id, rng):
    """Exercise 4.5: select 15% of non-special positions; 80% [MASK], 10% random, 10% kept."""
    selected = (rng.random(ids.shape) < 0.15) & ~special_mask
    labels = np.where(selected, ids, -100).astype(np.int64)
    r = rng.random(ids.shape)
    random_tokens = rng.integers(0, vocab_size, size=ids.shape)
    inputs = np.where(selected & (r < 0.8), mask_id, ids)
    inputs = np.where(selected & (r >= 0.8) & (r < 0.9), random_tokens, inputs)
    return inputs.astype(np.int64), labels
