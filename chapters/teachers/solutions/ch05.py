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


def _softmax_attention(q, k, v, causal):
    """softmax(q k^T / sqrt(d), causal mask) v and the probabilities P."""
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.triu(np.ones(s.shape[-2:], dtype=bool), 1), -np.inf, s)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v, p


def causal_self_attention(x, w_qkv, b_qkv, w_proj, b_proj, n_head):
    """Exercise 5.6: fused q|k|v projection, per-head causal attention, merge, c_proj."""
    B, T, C = x.shape
    qkv = (x @ w_qkv + b_qkv).reshape(B, T, 3, n_head, C // n_head).transpose(2, 0, 3, 1, 4)
    y, _ = _softmax_attention(qkv[0], qkv[1], qkv[2], causal=True)     # (B, h, T, hd)
    return y.transpose(0, 2, 1, 3).reshape(B, T, C) @ w_proj + b_proj


def _layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gpt_block(x, params, n_head):
    """Exercise 5.7: x + attn(ln_1(x)), then x + mlp(ln_2(x)) with GPT-2's tanh GELU."""
    p = params
    h = _layer_norm(x, p["ln_1.weight"], p["ln_1.bias"])
    x = x + causal_self_attention(h, p["attn.c_attn.weight"], p["attn.c_attn.bias"],
                                  p["attn.c_proj.weight"], p["attn.c_proj.bias"], n_head)
    h = _layer_norm(x, p["ln_2.weight"], p["ln_2.bias"]) @ p["mlp.c_fc.weight"] + p["mlp.c_fc.bias"]
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))
    return x + h @ p["mlp.c_proj.weight"] + p["mlp.c_proj.bias"]


def attention_backward(q, k, v, grad_out, causal):
    """Exercise 5.8: dv = P^T g, dS = P (dP - rowsum(P dP)), dq = dS k / sqrt(d), dk = dS^T q
    / sqrt(d)."""
    _, p = _softmax_attention(q, k, v, causal)
    dv = np.swapaxes(p, -1, -2) @ grad_out
    dp = grad_out @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True)) / np.sqrt(q.shape[-1])
    return ds @ k, np.swapaxes(ds, -1, -2) @ q, dv
