"""Chapter 3 exercises: reference solutions (graded by the same checks as student work)."""
import math

import numpy as np


def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """Exercise 3.1: AdamW with decoupled weight decay and bias correction."""
    param = param * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def clip_grad_norm(grads, max_norm):
    """Exercise 3.2: scale all gradients by min(max_norm / (total + 1e-6), 1)."""
    total = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
    coef = min(max_norm / (total + 1e-6), 1.0)
    return [g * coef for g in grads], total


def lr_at(step, max_lr, warmup_steps, total_steps, min_lr_rate):
    """Exercise 3.3: linear warmup, then cosine decay from max_lr to max_lr * min_lr_rate."""
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    p = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max_lr * (min_lr_rate + (1 - min_lr_rate) * 0.5 * (1 + math.cos(math.pi * p)))


def lstm_cell(x, h, c, W, U, b):
    """Exercise 3.4: gates i, f, g, o from z = x W + h U + b."""
    z = x @ W + h @ U + b
    zi, zf, zg, zo = np.split(z, 4, axis=-1)

    def sigmoid(a):
        return 0.5 * (1 + np.tanh(0.5 * a))

    c_new = sigmoid(zf) * c + sigmoid(zi) * np.tanh(zg)
    return sigmoid(zo) * np.tanh(c_new), c_new


def cross_entropy_with_grad(logits, targets, ignore_index=-100):
    """Exercise 3.5: mean of logsumexp(z) - z[y] over kept rows; grad (softmax - onehot) / M."""
    keep = targets != ignore_index
    M = int(keep.sum())
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.flatnonzero(keep)
    loss = -log_probs[rows, targets[rows]].sum() / M
    grad = np.exp(log_probs)
    grad[rows, targets[rows]] -= 1
    grad *= keep[:, None] / M
    return float(loss), grad


def _unbroadcast(g, shape):
    """Sum ``g`` over the axes that broadcasting added or stretched, back to ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def matmul_backward(a, b, grad_out):
    """Exercise 3.6: da = g b^T, db = a^T g, each summed back to its operand's shape."""
    da = grad_out @ np.swapaxes(b, -1, -2)
    db = np.swapaxes(a, -1, -2) @ grad_out
    return _unbroadcast(da, a.shape), _unbroadcast(db, b.shape)


def train_step(W, b, x, y, m, v, t, lr, weight_decay, max_norm):
    """Exercise 3.7: cross-entropy, gradients, joint-norm clipping, AdamW (decay on W only)."""
    z = x @ W + b
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    loss = float(-log_p[rows, y].mean())
    dz = np.exp(log_p)
    dz[rows, y] -= 1
    dz /= len(y)
    (dW, db), _ = clip_grad_norm([x.T @ dz, dz.sum(axis=0)], max_norm)
    W, mW, vW = adam_step(W, dW, m[0], v[0], t, lr, 0.9, 0.999, 1e-8, weight_decay)
    b, mb, vb = adam_step(b, db, m[1], v[1], t, lr, 0.9, 0.999, 1e-8, 0.0)    # no decay on b
    return loss, W, b, (mW, mb), (vW, vb)
