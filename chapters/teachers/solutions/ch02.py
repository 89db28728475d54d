"""Chapter 2 exercises: reference solutions (graded by the same checks as student work)."""
from collections import Counter

import numpy as np


def bpe_merge_step(word_counts):
    """Exercise 2.1: count weighted adjacent pairs, merge the most frequent (ties: smallest)."""
    pairs = Counter()
    for word, n in word_counts.items():
        for pair in zip(word[:-1], word[1:]):
            pairs[pair] += n
    best = max(pairs.values())
    best_pair = min(p for p, c in pairs.items() if c == best)
    a, b = best_pair
    merged = Counter()
    for word, n in word_counts.items():
        out, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                out.append(a + b)
                i += 2
            else:
                out.append(word[i])
                i += 1
        merged[tuple(out)] += n
    return best_pair, dict(merged)


def bigram_probs(ids, vocab_size, k):
    """Exercise 2.2: P[h, w] = (c(h, w) + k) / (c(h) + k V)."""
    counts = np.zeros((vocab_size, vocab_size))
    np.add.at(counts, (ids[:-1], ids[1:]), 1.0)
    return (counts + k) / (counts.sum(axis=1, keepdims=True) + k * vocab_size)


def masked_perplexity(log_probs, mask):
    """Exercise 2.3: exp(-mean log p) over the real tokens."""
    real = log_probs[mask]
    if real.size == 0:
        raise ValueError("masked_perplexity: the mask selects no tokens")
    return float(np.exp(-real.mean()))


def embedding_backward(ids, grad_out, vocab_size):
    """Exercise 2.4: dW[v] = sum of grad_out where ids == v (repeats add up)."""
    dW = np.zeros((vocab_size, grad_out.shape[-1]))
    np.add.at(dW, ids.reshape(-1), grad_out.reshape(-1, grad_out.shape[-1]))
    return dW


def wordpiece_tokenize(word, vocab):
    """Exercise 2.5: greedy longest-match-first with "##" continuations; [UNK] if stuck."""
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            return ["[UNK]"]
    return pieces
