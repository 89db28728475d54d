"""Chapter 6 exercises: the small algorithms behind the applications of chapter 6
(chapters/ch06_applications.md): text classification, named entities, question answering.

Fill in each function, then grade your work from the workspace's parent directory with

    minillm exercises check DIR

(or one exercise: `minillm exercises check DIR --exercise 6.3`). Arrays are NumPy arrays
(float64 where they hold real numbers); tags and terms are Python strings. Do not call minillm
here: the grader compares your functions with minillm's metrics, QA post-processing, BM25
retriever and pooling.
"""
import numpy as np


def bio_to_spans(tags):
    """Exercise 6.1: the entities of one BIO tag sequence, as (type, start, end) spans.

    tags: a list of str, each "O", "B-<TYPE>" or "I-<TYPE>" (e.g. ["B-PER", "I-PER", "O"]).
    Return a list of tuples (type, start, end), in order of start, with `end` EXCLUSIVE
    (tags[start:end] is the entity): [("PER", 0, 2)] for the example.
    Rules (conlleval / seqeval's default mode, section 6.2.2 on tagging schemes):
      * "B-X" always starts a new entity of type X;
      * "I-X" continues the open entity if it has type X, otherwise it STARTS one (so
        ["O", "I-PER"] holds ("PER", 1, 2) and ["I-PER", "I-LOC"] holds two entities);
      * an entity ends before "O", before any "B-", and before an "I-" of another type.
    Hint: walk the tags once, appending a sentinel "O" so the last entity gets closed.
    """
    raise NotImplementedError("exercise 6.1: bio_to_spans")


def entity_f1(true_tag_seqs, pred_tag_seqs):
    """Exercise 6.2: entity-level micro precision, recall and F1 for NER (section 6.2.3).

    true_tag_seqs, pred_tag_seqs: lists of sentences, each a list of BIO tags; sentence k
    has the same length in both. An entity (sentence k, type, start, end) predicted counts
    as correct only if exactly the same entity is in the gold tags (use bio_to_spans).
    Over all sentences: precision = #correct / #predicted, recall = #correct / #gold,
    F1 = 2 * precision * recall / (precision + recall) = 2 #correct / (#predicted + #gold).
    A 0/0 is 0.0. Return the tuple (precision, recall, f1) of Python floats.
    """
    raise NotImplementedError("exercise 6.2: entity_f1")


def best_span(start_logits, end_logits, max_answer_len):
    """Exercise 6.3: the best answer span of extractive QA (section 6.3.1, reading comprehension).

    start_logits, end_logits: (T,) float arrays, one score per token for "the answer starts
    here" / "ends here". Return (start, end) as Python ints maximising
        start_logits[start] + end_logits[end]   subject to   start <= end < start + max_answer_len
    (`end` INCLUSIVE). Ties: the smallest start, then the smallest end (what np.argmax over a
    row-major (start, end) score matrix gives).
    Hint: build the (T, T) matrix start[:, None] + end[None, :], set the forbidden pairs to
    -inf (np.triu/np.tril or an index difference), then np.argmax + np.unravel_index.
    """
    raise NotImplementedError("exercise 6.3: best_span")


def bm25_scores(query_terms, docs_terms, k1, b):
    """Exercise 6.4: Okapi BM25 scores of every document for a query (section 6.3.2,
    open-domain QA: retrieve, then read).

    query_terms: a list of str (a term repeated in the query counts each time);
    docs_terms: a list of N documents, each a list of str (at least one is non-empty).
    Return a float64 array (N,) with
        score(d) = sum over query terms t of  idf(t) * tf(t, d) * (k1 + 1)
                                              / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
        idf(t)   = log(1 + (N - n(t) + 0.5) / (n(t) + 0.5))      (Lucene's idf, never negative)
    tf(t, d): occurrences of t in d; |d|: len(d); avgdl: mean |d| over the N documents;
    n(t): the number of documents containing t. A term found in no document adds 0.
    Hint: a (N, V) term-frequency matrix over the vocabulary V of the documents makes every
    step a NumPy expression; the query is then a count vector q (V,) and the scores W @ q.
    """
    raise NotImplementedError("exercise 6.4: bm25_scores")


def mean_pool(hidden, attention_mask):
    """Exercise 6.5: a sentence vector by mean pooling, for text classification (section 6.1).

    hidden: (B, T, H) float array, the encoder's output for B padded sequences;
    attention_mask: (B, T) array of 0/1 (1: a real token, 0: padding); every row has at
    least one 1. Return (B, H): the mean of hidden[b, t] over the real tokens t of row b
        pooled[b] = sum_t m[b, t] hidden[b, t] / sum_t m[b, t]
    Padding must not change the result. Hint: broadcast the mask to (B, T, 1).
    """
    raise NotImplementedError("exercise 6.5: mean_pool")
