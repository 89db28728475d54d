"""Chapter 3 exercises: the pieces of a training step (chapters/ch03_algorithms.md).

Fill in each function, then grade your work from the workspace's parent directory with

    minillm exercises check DIR

(``minillm exercises check DIR --exercise 3.1`` grades one exercise). Arrays are NumPy float64
arrays. Every function is pure: it returns new values and leaves its arguments alone (an
optimizer's state is passed in and returned). Do not call minillm here: the grader compares
with minillm.optim, nn.LSTM and F.cross_entropy with autograd.
"""
import numpy as np


def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """Exercise 3.1: one AdamW step (decoupled weight decay, bias correction).

    param, grad, m, v: arrays of one shape (m, v: the moments after step t - 1, zeros before
    the first step); t: the number of this step, 1, 2, 3, ...
        param <- param * (1 - lr * weight_decay)          (decay first, not through grad)
        m <- beta1 m + (1 - beta1) grad;   v <- beta2 v + (1 - beta2) grad^2
        m_hat = m / (1 - beta1^t);         v_hat = v / (1 - beta2^t)
        param <- param - lr * m_hat / (sqrt(v_hat) + eps)  (eps added AFTER the sqrt)
    Return (param, m, v) as new arrays. Hint: chapter 3.1.4 (Adam, AdamW).
    """
    raise NotImplementedError("exercise 3.1: adam_step")


def clip_grad_norm(grads, max_norm):
    """Exercise 3.2: clip a list of gradients by their joint L2 norm.

    grads: a list of arrays (any shapes). total = sqrt(sum over all arrays of sum(g^2)),
    the norm of all gradients concatenated into one vector. Scale every array by
        coef = min(max_norm / (total + 1e-6), 1)
    (the 1e-6 avoids dividing by zero; PyTorch and minillm use it too).
    Return (clipped, total): a new list of arrays and the float total norm BEFORE clipping.
    Hint: chapter 3.1.4, item 2 (gradient clipping).
    """
    raise NotImplementedError("exercise 3.2: clip_grad_norm")


def lr_at(step, max_lr, warmup_steps, total_steps, min_lr_rate):
    """Exercise 3.3: the learning rate at `step` of linear warmup + cosine decay to a floor.

    W = warmup_steps, T = total_steps, r = min_lr_rate (the floor as a fraction of max_lr);
    0 <= step <= T.
        step < W:  lr = max_lr * step / W                       (starts at 0)
        else:      p = (step - W) / (T - W)
                   lr = max_lr * (r + (1 - r) * (1 + cos(pi * p)) / 2)
    so the rate reaches max_lr at step W and max_lr * r at step T. Return a float.
    Hint: chapter 3.1.4, item 1 (learning-rate schedule).
    """
    raise NotImplementedError("exercise 3.3: lr_at")


def lstm_cell(x, h, c, W, U, b):
    """Exercise 3.4: one step of an LSTM cell for a batch.

    x: (B, I) inputs; h, c: (B, H) the previous hidden and cell states;
    W: (I, 4H), U: (H, 4H), b: (4H,). The columns of W, U and b hold the four gates in the
    order i, f, g, o (PyTorch's order): columns [0:H] input gate, [H:2H] forget gate,
    [2H:3H] candidate g, [3H:4H] output gate. With z = x W + h U + b split that way:
        i = sigmoid(z_i)  f = sigmoid(z_f)  g = tanh(z_g)  o = sigmoid(z_o)
        c_new = f * c + i * g;   h_new = o * tanh(c_new)
    Return (h_new, c_new). Write sigmoid so that it does not overflow for large |z|
    (e.g. sigmoid(z) = (1 + tanh(z / 2)) / 2). Hint: chapter 1.1.2 (the LSTM equations:
    c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t)).
    """
    raise NotImplementedError("exercise 3.4: lstm_cell")


def cross_entropy_with_grad(logits, targets, ignore_index=-100):
    """Exercise 3.5: mean cross-entropy of a batch and its gradient with respect to the logits.

    logits: (N, C) floats; targets: (N,) ints in [0, C), or ignore_index (that row adds
    nothing to the loss and gets a zero gradient). With M the number of kept rows:
        loss = (1/M) sum over kept rows n of (logsumexp(logits[n]) - logits[n, targets[n]])
        dlogits[n] = (softmax(logits[n]) - onehot(targets[n])) / M   for kept rows, else 0
    Use a stable logsumexp (subtract the row max). Return (loss as a float, dlogits (N, C)).
    Hint: chapter 3.1.3 (loss functions: ignore_index, the softmax - onehot gradient).
    """
    raise NotImplementedError("exercise 3.5: cross_entropy_with_grad")
