"""Chapter 5 exercises: the data pipeline and decoding code of chapters/ch05_practice.md.

Fill in each function, then grade your work from the workspace's parent directory with

    minillm exercises check DIR

(add ``--exercise 5.2`` to grade one exercise). Use NumPy and the standard library only: the
grader compares your results with minillm's own code (the Collator, minillm.metrics, the
sampler of ``model.generate``) and with brute-force references.
"""
import numpy as np


def next_token_windows(ids, block_size, stride):
    """Exercise 5.1: cut a token stream into training windows for causal-LM pretraining.

    ids: 1-D int array of length N. Windows start at s = 0, stride, 2 * stride, ... and
    x = ids[s : s + block_size], y = ids[s + 1 : s + block_size + 1] (the target is the input
    shifted left by one). Keep only complete windows, i.e. those with s + block_size + 1 <= N:
    a last incomplete window is dropped (with too few tokens there is no window at all).
    Return (x, y), int64 arrays of shape (n_windows, block_size) ((0, block_size) if none).
    Hint (chapter 5.1.1, random_windows): build the index matrix
    starts[:, None] + np.arange(block_size) and index ids with it; no Python loop needed.
    """
    raise NotImplementedError("exercise 5.1: next_token_windows")


def pad_batch(sequences, pad_id, max_length=None):
    """Exercise 5.2: right-pad a batch of token-id lists into a matrix, with truncation.

    sequences: a list of B lists of int ids (some may be empty). First cut every sequence to
    its first max_length ids (when max_length is not None), then pad on the right with pad_id
    to L = the longest (cut) sequence. Return (ids, attention_mask), both int64 (B, L):
    attention_mask is 1 at real tokens and 0 at padding. Build the mask from the LENGTHS, not
    from ids != pad_id: a real token may equal pad_id (GPT-2 pads with its eos token).
    Do not modify the input lists. Hint (chapter 5.2.1, Collator): np.full((B, L), pad_id),
    then compare np.arange(L) with the lengths to get the mask.
    """
    raise NotImplementedError("exercise 5.2: pad_batch")


def classification_metrics(y_true, y_pred, num_classes):
    """Exercise 5.3: accuracy, macro-averaged F1 and the confusion matrix.

    y_true, y_pred: int arrays (N,) of class ids in 0..num_classes-1.
    Return {"accuracy": float, "macro_f1": float, "confusion": int64 array (C, C)} with
    confusion[i, j] = number of samples of true class i predicted as j, and
    F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c) per class (0 when the class is neither true nor
    predicted anywhere: 0/0 counts as 0), macro_f1 = the mean of F1_c over all C classes.
    Hint (chapter 5.2.3): np.add.at (or np.bincount of y_true * C + y_pred) fills the
    confusion matrix; TP is its diagonal, TP + FP its column sums, TP + FN its row sums.
    """
    raise NotImplementedError("exercise 5.3: classification_metrics")


def top_k_top_p_filter(logits, top_k, top_p):
    """Exercise 5.4: the top-k and top-p (nucleus) filtering used when sampling text.

    logits: float array (..., V); filter each row over the last axis; top_k: int >= 1 or None;
    top_p: float in (0, 1] or None. Return a new array of the same shape: kept entries keep
    their original logit, removed entries are -inf. Steps, in this order:
    1. top_k: keep the entries >= the k-th largest logit of the row (ties with it are kept);
    2. top_p: p = softmax of what is left after step 1; sort p in descending order and keep
       a token while the probability mass BEFORE it is < top_p (so the top token is always
       kept: the smallest set whose mass reaches top_p); every token whose p equals the
       smallest kept probability is kept too (ties at the cut).
    None (or top_k >= V, top_p = 1) means no filtering for that step.
    Hint (chapter 5.1.4, generate): np.sort, np.cumsum and a threshold value per row compared
    with keepdims=True broadcasting; no loop over rows.
    """
    raise NotImplementedError("exercise 5.4: top_k_top_p_filter")


def greedy_decode(next_logits_fn, prompt_ids, max_new_tokens, eos_id):
    """Exercise 5.5: greedy decoding: repeatedly append the most likely next token.

    next_logits_fn(ids) takes the whole sequence so far (a list of ints, prompt included)
    and returns the logits of the next token, a float array (V,). prompt_ids: a list of ints.
    At each of at most max_new_tokens steps append int(argmax(logits)): the INDEX of the
    largest logit (a token id), not the logit value itself. Stop right after appending
    eos_id (when eos_id is not None). Return the full sequence as a new list of ints
    (prompt + new tokens, eos included). Call next_logits_fn once per new token.
    Hint (chapter 5.1.4, generate(do_sample=False)): a plain for loop with a break.
    """
    raise NotImplementedError("exercise 5.5: greedy_decode")
