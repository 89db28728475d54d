"""Chapter 5 exercises: reference solutions (graded by the same checks as student work)."""
import numpy as np


def next_token_windows(ids, block_size, stride):
    """Exercise 5.1: complete windows x = ids[s:s+T], y = ids[s+1:s+T+1], s = 0, stride, ..."""
    ids = np.asarray(ids, dtype=np.int64)
    starts = np.arange(0, len(ids) - block_size, stride)
    index = starts[:, None] + np.arange(block_size)
    return ids[index], ids[index + 1]


def pad_batch(sequences, pad_id, max_length=None):
    """Exercise 5.2: truncate, right-pad with pad_id, mask 1 = token, 0 = padding."""
    cut = [list(s) if max_length is None else list(s)[:max_length] for s in sequences]
    lengths = np.array([len(s) for s in cut], dtype=np.int64)
    width = int(lengths.max(initial=0))
    mask = (np.arange(width) < lengths[:, None]).astype(np.int64)
    ids = np.full((len(cut), width), pad_id, dtype=np.int64)
    ids[mask.astype(bool)] = np.fromiter((t for s in cut for t in s), dtype=np.int64,
                                         count=int(lengths.sum()))
    return ids, mask


def classification_metrics(y_true, y_pred, num_classes):
    """Exercise 5.3: accuracy, macro F1 (0/0 -> 0) and the confusion matrix."""
    confusion = np.bincount(y_true * num_classes + y_pred,
                            minlength=num_classes * num_classes).reshape(num_classes, -1)
    tp = np.diag(confusion)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)      # 2 TP + FP + FN
    f1 = np.divide(2 * tp, denominator, out=np.zeros(num_classes), where=denominator > 0)
    return {"accuracy": float(np.mean(y_true == y_pred)), "macro_f1": float(f1.mean()),
            "confusion": confusion.astype(np.int64)}


def top_k_top_p_filter(logits, top_k, top_p):
    """Exercise 5.4: top-k, then top-p on the renormalised rest; removed entries -> -inf."""
    out = np.array(logits, dtype=np.float64)
    if top_k is not None and top_k < out.shape[-1]:
        kth = -np.sort(-out, axis=-1)[..., top_k - 1:top_k]
        out = np.where(out < kth, -np.inf, out)
    if top_p is not None and top_p < 1:
        p = np.exp(out - out.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        ps = -np.sort(-p, axis=-1)
        kept = np.cumsum(ps, axis=-1) - ps < top_p            # mass before the token < top_p
        threshold = np.where(kept, ps, np.inf).min(axis=-1, keepdims=True)
        out = np.where(p < threshold, -np.inf, out)
    return out


def greedy_decode(next_logits_fn, prompt_ids, max_new_tokens, eos_id):
    """Exercise 5.5: append argmax(logits) until max_new_tokens or eos_id."""
    ids = list(prompt_ids)
    for _ in range(max_new_tokens):
        ids.append(int(np.argmax(next_logits_fn(ids))))
        if eos_id is not None and ids[-1] == eos_id:
            break
    return ids
