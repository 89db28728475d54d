"""Chapter 4 exercises: the formulas of chapter 4 (chapters/ch04_math.md), by hand in NumPy.

Fill in each function, then grade your work from the workspace's parent directory with

    minillm exercises check DIR

Every function takes and returns NumPy float64 arrays. Do not call minillm here: the point is
to write the formula yourself (the grader compares with minillm's implementation).
"""
import numpy as np  # noqa: F401 - you will need it


def softmax_backward(p, grad_out):
    """Exercise 4.1: the gradient of a softmax with respect to its logits.

    p: the softmax output, shape (..., C), softmax taken over the last axis.
    grad_out: dL/dp, the same shape.
    Return dL/dz, the same shape. Hint (chapter 4.2.1, where the Jacobian diag(p) - p p^T
    appears; chapter 3.1.3 gives the resulting backward): with that Jacobian,
    dL/dz = p * (grad_out - sum(grad_out * p over the last axis)). No loops needed.
    """
    raise NotImplementedError("exercise 4.1: softmax_backward")


def scaled_dot_product_attention(q, k, v, causal=False):
    """Exercise 4.2: softmax(q k^T / sqrt(d_k)) v over the last two axes.

    q: (..., L, d_k); k: (..., S, d_k); v: (..., S, d_v); leading axes are batch/head axes.
    causal=True: query i may only attend to keys j <= i (set the other scores to -inf before
    the softmax). Return (..., L, d_v). Use a numerically stable softmax (subtract the max).
    """
    raise NotImplementedError("exercise 4.2: scaled_dot_product_attention")


def layer_norm_forward_backward(x, gamma, beta, grad_out, eps=1e-5):
    """Exercise 4.3: layer normalization over the last axis, forward and backward.

    x: (..., d); gamma, beta: (d,); grad_out: dL/dy, the shape of x.
    Forward: mu = mean(x), var = mean((x - mu)^2) (the biased variance, over the last axis),
    x_hat = (x - mu) / sqrt(var + eps), y = gamma * x_hat + beta.
    Return the tuple (y, dx, dgamma, dbeta): dx has the shape of x; dgamma, dbeta are (d,),
    summed over all leading (batch) axes. Hint (chapter 4.1.3): with g = gamma * grad_out,
    dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps), means over the last axis.
    """
    raise NotImplementedError("exercise 4.3: layer_norm_forward_backward")


def sinusoidal_positions(n_positions, d_model):
    """Exercise 4.4: the sinusoidal positional-encoding table of the original Transformer.

    Return PE of shape (n_positions, d_model), float64, with w_i = 10000^(-2i / d_model):
    PE[pos, 2i] = sin(w_i * pos) and PE[pos, 2i+1] = cos(w_i * pos), for pos = 0..n-1.
    An odd d_model has one more sin column than cos columns (the last column is a sin).
    Hint (chapter 4.2.3): build the (n_positions, ceil(d_model / 2)) angle table
    pos[:, None] * w[None, :] with broadcasting, then fill the even and odd columns.
    """
    raise NotImplementedError("exercise 4.4: sinusoidal_positions")


def mlm_mask(ids, special_mask, vocab_size, mask_id, rng):
    """Exercise 4.5: BERT's masked-language-model corruption of a batch of token ids.

    ids: int array (B, T); special_mask: bool array (B, T), True at special tokens
    ([CLS], [SEP], padding) that must never be selected; rng: a np.random.Generator, your
    only source of randomness. Return NEW arrays (inputs, labels), both int64 (B, T):
    - each non-special position is selected independently with probability 0.15;
    - labels = the original id at selected positions, -100 everywhere else;
    - a selected position's input becomes mask_id with probability 0.8, a random token drawn
      uniformly from 0..vocab_size-1 with probability 0.1 (it may equal the original), and
      stays unchanged otherwise (0.1); unselected inputs are unchanged.
    Do not modify ids in place. Hint (chapter 4.3.1): draw rng.random(ids.shape) twice (one
    for "selected?", one for "which of the three?") and combine boolean masks; no loops.
    """
    raise NotImplementedError("exercise 4.5: mlm_mask")
