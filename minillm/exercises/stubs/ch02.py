"""Chapter 2 exercises: language models, tokenization and embeddings (chapters/ch02_concepts.md).

Fill in each function, then grade your work from the workspace's parent directory with

    minillm exercises check DIR

(``minillm exercises check DIR --exercise 2.1`` grades one exercise). Arrays are NumPy arrays
(float64 where they hold real numbers). Do not call minillm here: the point is to write the
algorithm yourself (the grader compares with minillm's tokenizers, n-gram model and autograd).
"""
import numpy as np


def bpe_merge_step(word_counts):
    """Exercise 2.1: one step of byte-pair-encoding training.

    word_counts: a dict {word: count}; each word is a tuple of symbols (strings), e.g.
        {("l", "o", "w"): 5, ("l", "o", "w", "e", "r"): 2}.
    1. Count every adjacent pair of symbols, weighted by the word's count (a pair that occurs
       twice in a word counts twice: ("a", "a", "a") holds ("a", "a") two times).
    2. best_pair = the most frequent pair; ties go to the SMALLEST pair in Python's tuple
       order, i.e. min() over the tied pairs.
    3. Merge best_pair everywhere: scan each word left to right and replace a, b (adjacent)
       by the one symbol a + b; ("a", "a", "a") with the pair ("a", "a") becomes ("aa", "a").
       Two words that become the same tuple add their counts.
    Return (best_pair, new_word_counts), new_word_counts a new dict (leave the input alone).
    Hint (chapter 2.1.4, tokenization: BPE): collections.Counter counts the pairs.
    """
    raise NotImplementedError("exercise 2.1: bpe_merge_step")


def bigram_probs(ids, vocab_size, k):
    """Exercise 2.2: an add-k smoothed bigram model from one token stream.

    ids: int array (N,) of token ids in [0, vocab_size). Count the bigrams c(h, w) over the
    N - 1 adjacent pairs (ids[t-1], ids[t]); c(h) = sum_w c(h, w). Return P, float64
    (vocab_size, vocab_size), with

        P[h, w] = (c(h, w) + k) / (c(h) + k * vocab_size)

    (every row sums to 1; a context never seen gets the uniform row 1 / vocab_size).
    Hint (chapter 2.1.2, statistical language models: add-k smoothing):
    np.add.at(counts, (ids[:-1], ids[1:]), 1) counts all pairs at once, no Python loop.
    """
    raise NotImplementedError("exercise 2.2: bigram_probs")


def masked_perplexity(log_probs, mask):
    """Exercise 2.3: perplexity of a padded batch.

    log_probs: float64 (B, T), log p(x_t | x_<t) (natural log) of each position;
    mask: bool (B, T), True at real tokens and False at padding. Padding positions may hold
    any value (even -inf or nan): select the real tokens, do not multiply by the mask.
    Return the float exp(-(1/N) * sum of log_probs over the real tokens), N = number of real
    tokens. An all-False mask has no tokens: raise ValueError saying so.
    Hint (chapter 2.1.1, perplexity): boolean indexing log_probs[mask] picks the real tokens.
    """
    raise NotImplementedError("exercise 2.3: masked_perplexity")


def embedding_backward(ids, grad_out, vocab_size):
    """Exercise 2.4: the gradient of an embedding lookup with respect to its table.

    The forward pass is out = W[ids] with W (vocab_size, D), ids an int array of any shape,
    out of shape ids.shape + (D,). grad_out = dL/dout has that shape. Return dW, float64
    (vocab_size, D): row v is the sum of grad_out over every position where ids == v (zero
    for ids that do not occur). Ids REPEAT: W[ids] += g silently drops repeats, use
    np.add.at (chapter 2.1.5, word embeddings: a lookup is a one-hot row times W).
    """
    raise NotImplementedError("exercise 2.4: embedding_backward")


def wordpiece_tokenize(word, vocab):
    """Exercise 2.5: BERT's WordPiece split of one word, greedy longest match first.

    word: a str (one lower-case word, no spaces); vocab: a set of strings; pieces that
    continue a word are written with the prefix "##" ("playing" -> ["play", "##ing"]).
    From position 0, take the longest prefix word[0:end] in vocab; then from that end the
    longest "##" + word[start:end] in vocab; and so on. If at some position no piece
    matches, the WHOLE word is unknown: return ["[UNK]"]. Return the list of pieces (str).
    Hint (chapter 2.1.4, tokenization: WordPiece).
    """
    raise NotImplementedError("exercise 2.5: wordpiece_tokenize")
