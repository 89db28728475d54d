"""Chapter 8 exercises: efficient fine-tuning and decoding (chapters/ch08_future.md).

Fill in each function, then grade your work with

    minillm exercises check DIR

Every function takes and returns NumPy arrays, Python numbers or lists/tuples of them. Do not
call minillm here: write the formula yourself (the grader compares with minillm.finetune).
"""
import numpy as np  # noqa: F401 - you will need it


def lora_forward(x, W, b, A, B, alpha):
    """Exercise 8.1: a LoRA linear layer (chapter 8.1, Hu et al. 2021).

    x: (..., d_in); W: (d_in, d_out) frozen base weight (minillm's layout: y = x W + b);
    b: (d_out,) or None; A: (d_in, r); B: (r, d_out); alpha: the LoRA alpha (a float).
    Return y = x W + b + (alpha / r) (x A) B, shape (..., d_out), with r = A.shape[1].
    Multiply x A first: (..., r) is small, (d_in, d_out) A B is not needed.
    """
    raise NotImplementedError("exercise 8.1: lora_forward")


def lora_grads(x, W, A, B, alpha, grad_out):
    """Exercise 8.2: the gradients of a LoRA layer's trainable matrices.

    With y = x W + b + s (x A) B, s = alpha / r, and grad_out = dL/dy of shape (..., d_out),
    return (dA, dB) of shapes (d_in, r) and (r, d_out), summed over every leading axis of x:
    dB = s (x A)^T grad_out and dA = s x^T (grad_out B^T). W is frozen: no dW.
    Hint: flatten the leading axes with reshape(-1, d).
    """
    raise NotImplementedError("exercise 8.2: lora_grads")


def quantize_int8(w):
    """Exercise 8.3: symmetric int8 quantization with one scale per output column.

    w: a float (d_in, d_out) weight. For each column j: scale_j = max_i |w_ij| / 127 and
    q_ij = round(w_ij / scale_j) clipped to [-127, 127] (np.rint: halves to even). A column of
    zeros has scale 0 and codes 0 (do not divide by zero). Return (q, scale): q int8 of w's
    shape, scale float (d_out,). Then q * scale is within scale / 2 of w.
    """
    raise NotImplementedError("exercise 8.3: quantize_int8")


def magnitude_prune_masks(weights, sparsity):
    """Exercise 8.4: global magnitude pruning.

    weights: a list of float arrays (one per layer); sparsity: the fraction in [0, 1] to prune.
    Over ALL layers together, prune the k = floor(sparsity * n + 0.5) entries with the smallest
    |w| (n = total number of weights); equal magnitudes are broken by position in the
    concatenation of the flattened layers (earlier first: np.argsort(..., kind="stable")).
    Return a list of bool masks, one per layer and of its shape: True = kept.
    """
    raise NotImplementedError("exercise 8.4: magnitude_prune_masks")


def distillation_loss(student_logits, teacher_logits, labels, temperature, alpha):
    """Exercise 8.5: the knowledge-distillation loss (chapter 8.1.2, Hinton et al. 2015).

    student_logits z, teacher_logits v: (N, C); labels: (N,) ints, -100 = ignore this row.
    p = softmax(v / T), q = softmax(z / T) (T = temperature). Over the N' counted rows:
    loss = alpha * T^2 * mean_rows sum_c p (log p - log q) + (1 - alpha) * mean_rows CE(z, label)
    (the cross-entropy at temperature 1). Return a Python float. Use log-softmax (subtract the max).
    """
    raise NotImplementedError("exercise 8.5: distillation_loss")


def beam_search(log_probs, start, beam_width, max_len, eos_id):
    """Exercise 8.6: beam search with a bigram model.

    log_probs: (V, V) with log_probs[a, b] = log P(next = b | previous = a); start: the first
    (given) token, not part of the output. Each step, extend every alive hypothesis by every
    token, keep the beam_width best candidates by total log-prob (a sum, no length
    normalisation); a kept candidate that ends with eos_id is finished and leaves the beam.
    Stop after max_len tokens or when no hypothesis is alive. Return (sequence, score) of the
    best hypothesis among the finished ones and those alive at max_len: sequence is a list of
    ints (without start, with eos_id if it ended), score its total log-prob (a float).
    beam_width=1 is greedy decoding.
    """
    raise NotImplementedError("exercise 8.6: beam_search")
