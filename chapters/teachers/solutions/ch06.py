"""Chapter 6 exercises: reference solutions (graded by the same checks as student work)."""
import numpy as np


def bio_to_spans(tags):
    """Exercise 6.1: entity spans (type, start, end) of a BIO sequence, end exclusive."""
    spans = []
    kind, start = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, typ = tag.partition("-")
        if kind is not None and (prefix != "I" or typ != kind):   # the open span ends here
            spans.append((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and kind is None):     # a span starts here
            kind, start = typ, i
    return spans


def entity_f1(true_tag_seqs, pred_tag_seqs):
    """Exercise 6.2: entity-level micro precision, recall and F1 (0/0 -> 0)."""
    gold = {(k,) + s for k, tags in enumerate(true_tag_seqs) for s in bio_to_spans(tags)}
    pred = {(k,) + s for k, tags in enumerate(pred_tag_seqs) for s in bio_to_spans(tags)}
    correct = len(gold & pred)
    precision = correct / len(pred) if pred else 0.0
    recall = correct / len(gold) if gold else 0.0
    f1 = 2 * correct / (len(pred) + len(gold)) if gold or pred else 0.0
    return precision, recall, f1


def best_span(start_logits, end_logits, max_answer_len):
    """Exercise 6.3: argmax of start[s] + end[e] over s <= e < s + max_answer_len."""
    n = len(start_logits)
    scores = start_logits[:, None] + end_logits[None, :]
    gap = np.arange(n)[None, :] - np.arange(n)[:, None]        # e - s
    scores = np.where((gap >= 0) & (gap < max_answer_len), scores, -np.inf)
    s, e = np.unravel_index(np.argmax(scores), scores.shape)
    return int(s), int(e)


def bm25_scores(query_terms, docs_terms, k1, b):
    """Exercise 6.4: Okapi BM25 with Lucene's idf, one score per document."""
    vocab = {t: i for i, t in enumerate(sorted({t for d in docs_terms for t in d}))}
    tf = np.zeros((len(docs_terms), len(vocab)))
    for i, d in enumerate(docs_terms):
        np.add.at(tf[i], [vocab[t] for t in d], 1.0)
    n_docs, doc_len = tf.shape[0], tf.sum(axis=1)
    df = (tf > 0).sum(axis=0)
    idf = np.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
    norm = k1 * (1.0 - b + b * doc_len / doc_len.mean())
    den = tf + norm[:, None]                                        # 0 only if k1 = tf = 0
    weight = np.divide(idf * tf * (k1 + 1.0), den, out=np.zeros_like(tf), where=den > 0)
    q = np.zeros(len(vocab))
    for t in query_terms:
        if t in vocab:
            q[vocab[t]] += 1.0
    return weight @ q


def mean_pool(hidden, attention_mask):
    """Exercise 6.5: the mean of the real (mask 1) token vectors of each sequence."""
    m = attention_mask.astype(hidden.dtype)[:, :, None]            # (B, T, 1)
    return (hidden * m).sum(axis=1) / m.sum(axis=1)
