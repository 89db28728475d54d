"""Chapter 7 exercises: moving weights between PyTorch / Hugging Face Transformers and minillm
(chapters/ch07_tools.md, 7.1.1 Hugging Face Transformers and 7.1.3 OpenAI GPT; the head layout
is derived in chapters/ch04_math.md, 4.2.2 multi-head attention).

Fill in each function, then grade your work from the workspace's parent directory with

    minillm exercises check DIR

(or one exercise: `minillm exercises check DIR --exercise 7.2`). Every function takes and
returns NumPy arrays (float64) or dicts of them. Do not call minillm or torch here: the grader
loads your arrays into minillm's Linear layers and GPT attention and compares their outputs.
"""
import numpy as np


def torch_to_minillm_linear(state):
    """Exercise 7.1: convert the state dict of PyTorch nn.Linear layers to minillm's layout.

    state: a dict name -> NumPy array, e.g. {"fc1.weight": (out, in), "fc1.bias": (out,),
    "fc2.weight": ...}. PyTorch's Linear computes y = x @ W.T + b with W of shape
    (out_features, in_features); minillm's Linear computes y = x @ W + b with W of shape
    (in_features, out_features). Return a NEW dict with the same keys: every 2-D weight
    transposed, every 1-D bias unchanged (copied); do not modify `state`.
    Hint (section 7.1.1): a square weight has the same shape either way, so only the values
    tell whether you transposed; GPT-2's Conv1D is already (in, out), BERT's Linear is not.
    """
    raise NotImplementedError("exercise 7.1: torch_to_minillm_linear")


def split_heads(x, n_heads):
    """Exercise 7.2: split the feature axis into attention heads.

    x: (B, T, C) with C divisible by n_heads. Return (B, H, T, C // H) where
        out[b, h, t, :] = x[b, t, h * D:(h + 1) * D],   D = C // H
    (head h owns the h-th block of D consecutive features, as in GPT-2 and BERT).
    Hint (section 4.2.2): reshape to (B, T, H, D), then move the head axis forward with
    transpose; no loops.
    """
    raise NotImplementedError("exercise 7.2: split_heads")


def merge_heads(x):
    """Exercise 7.3: concatenate attention heads back into features (inverse of split_heads).

    x: (B, H, T, D), the per-head attention outputs. Return (B, T, H * D) with
        out[b, t, h * D:(h + 1) * D] = x[b, h, t, :]
    so that merge_heads(split_heads(x, H)) == x. Hint: transpose to (B, T, H, D) first; a
    plain reshape of (B, H, T, D) mixes positions and heads.
    """
    raise NotImplementedError("exercise 7.3: merge_heads")


def split_packed_qkv(c_attn_weight, c_attn_bias, n_heads):
    """Exercise 7.4: unpack GPT-2's fused attention projection into per-head q, k, v.

    c_attn_weight: (d, 3d), c_attn_bias: (3d,): GPT-2's `h.{i}.attn.c_attn` (a Conv1D, so
    y = x @ W + b, no transpose), whose 3d outputs are [q | k | v], each of width d and
    split into n_heads heads of D = d // n_heads consecutive features (exercise 7.2).
    Return a dict with six arrays:
        "q_weight", "k_weight", "v_weight": (n_heads, d, D)   so that x @ q_weight[h] + q_bias[h]
        "q_bias",   "k_bias",   "v_bias":   (n_heads, D)       is the query of head h (etc.)
    Hint (section 4.2.2: multi-head attention and GPT-2's d x 3d c_attn): reshape the weight
    to (d, 3, n_heads, D) and move axes; check yourself with x @ W + b split into thirds and
    heads.
    """
    raise NotImplementedError("exercise 7.4: split_packed_qkv")
