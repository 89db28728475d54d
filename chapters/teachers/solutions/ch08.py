"""Chapter 8 exercises: reference solutions (graded by the same checks as student work)."""
import numpy as np


def lora_forward(x, W, b, A, B, alpha):
    """Exercise 8.1: y = x W + b + (alpha / r) (x A) B."""
    y = x @ W + (alpha / A.shape[1]) * ((x @ A) @ B)
    return y if b is None else y + b


def lora_grads(x, W, A, B, alpha, grad_out):
    """Exercise 8.2: dA = s x^T (g B^T), dB = s (x A)^T g."""
    s = alpha / A.shape[1]
    x2, g2 = x.reshape(-1, x.shape[-1]), grad_out.reshape(-1, grad_out.shape[-1])
    return s * x2.T @ (g2 @ B.T), s * (x2 @ A).T @ g2


def quantize_int8(w):
    """Exercise 8.3: q = clip(rint(w / s), -127, 127) with s = max |w| / 127 per column."""
    scale = np.abs(w).max(axis=0) / 127.0
    q = np.clip(np.rint(w / np.where(scale > 0, scale, 1.0)), -127, 127).astype(np.int8)
    return q, scale


def magnitude_prune_masks(weights, sparsity):
    """Exercise 8.4: drop the k smallest |w| over all layers (stable ties)."""
    flat = np.concatenate([np.abs(w).reshape(-1) for w in weights])
    k = min(flat.size, int(np.floor(sparsity * flat.size + 0.5)))
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:k]] = False
    sizes = np.cumsum([0] + [w.size for w in weights])
    return [keep[a:b].reshape(w.shape) for a, b, w in zip(sizes[:-1], sizes[1:], weights)]


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def distillation_loss(student_logits, teacher_logits, labels, temperature, alpha):
    """Exercise 8.5: alpha T^2 KL(p || q) + (1 - alpha) CE over the counted rows."""
    T, rows = temperature, labels != -100
    z, v, y = student_logits[rows], teacher_logits[rows], labels[rows]
    log_p, log_q = _log_softmax(v / T), _log_softmax(z / T)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1).mean()
    ce = -_log_softmax(z)[np.arange(len(y)), y].mean()
    return float(alpha * T * T * kl + (1 - alpha) * ce)


def beam_search(log_probs, start, beam_width, max_len, eos_id):
    """Exercise 8.6: keep the beam_width best extensions per step; eos finishes a hypothesis."""
    V = log_probs.shape[1]
    alive, finished = [([], 0.0)], []
    for _ in range(max_len):
        if not alive:
            break
        scores = np.array([s + log_probs[seq[-1] if seq else start] for seq, s in alive])
        best = np.argsort(-scores.reshape(-1), kind="stable")[:beam_width]
        alive_next = []
        for flat in best:
            i, token = divmod(int(flat), V)
            hyp = (alive[i][0] + [token], float(scores[i, token]))
            (finished if token == eos_id else alive_next).append(hyp)
        alive = alive_next
    return max(finished + alive, key=lambda h: h[1])


def response_mask(ids, roles, eos_id):
    """Exercise 8.7: x = ids[:-1]; y[t] = ids[t+1] if it is an answer token or eos, else -100."""
    keep = (roles == 1) | (ids == eos_id)
    return ids[:-1], np.where(keep[1:], ids[1:], -100)


def dpo_loss_and_grads(pc, pr, rc, rr, beta):
    """Exercise 8.8: mean -log sigmoid(m), m = beta ((pc - rc) - (pr - rr))."""
    m = beta * ((pc - rc) - (pr - rr))
    s = 1.0 / (1.0 + np.exp(m))
    return float(np.logaddexp(0.0, -m).mean()), -beta * s / len(pc), beta * s / len(pc)


def group_advantages(rewards):
    """Exercise 8.9: (r - row mean) / (row std + 1e-6)."""
    r = rewards
    return (r - r.mean(axis=1, keepdims=True)) / (r.std(axis=1, keepdims=True) + 1e-6)


def prototypical_loss(support, support_labels, query, query_labels, n_way):
    """Exercise 8.10: c_k = class means, p = softmax(-||q - c_k||^2), loss = mean -log p(y)."""
    counts = np.bincount(support_labels, minlength=n_way).astype(np.float64)
    onehot = np.eye(n_way)[support_labels]                     # (S, N)
    c = onehot.T @ support / counts[:, None]                   # (N, D) prototypes
    diff = query[:, None, :] - c[None, :, :]                   # (M, N, D)
    logits = -(diff ** 2).sum(axis=-1)
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    m = len(query_labels)
    loss = -log_p[np.arange(m), query_labels].mean()
    g = np.exp(log_p)
    g[np.arange(m), query_labels] -= 1.0
    g /= m                                                     # d loss / d logits (rows sum to 0)
    d_query = 2 * g @ c
    d_c = 2 * (g.T @ query - g.sum(axis=0)[:, None] * c)
    return float(loss), (d_c / counts[:, None])[support_labels], d_query


def patch_embed(images, patch_size, weight, bias):
    """Exercise 8.11: (B, C, H, W) -> row-major P x P patches, each (C, P, P) flattened, @ W + b."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by patch_size={p}")
    x = images.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p) @ weight + bias
