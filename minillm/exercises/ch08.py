"""Chapter 8 exercises (效率与少样本): LoRA, int8 quantization, pruning, distillation, beam search,
instruction tuning (the response-only loss mask, DPO, GRPO advantages), meta-learning (the
prototypical-network loss) and multimodal models (a ViT patch embedding).

The references are minillm's own implementations in :mod:`minillm.finetune` (LoRALinear with
autograd, quantize_per_channel, magnitude_prune, distillation_loss), closed forms, and exhaustive
search for beam search on a tiny vocabulary; :mod:`minillm.finetune.instruct` (on conversations
encoded with a CharTokenizer), ``dpo_loss`` with autograd (and ``mm.gradcheck`` of a Function
whose backward is the student's gradient) and ``grpo.group_advantages`` for 8.7-8.9; :func:`minillm.meta.prototypical_loss` with autograd
and central differences of an independent NumPy loss for 8.10; a loop over patches and
minillm's ViT patch embedding (``patchify`` + ``Linear``, with the weight's rows reordered) for
8.11.
"""
from __future__ import annotations

import itertools

import numpy as np

import minillm as mm
from minillm import nn
from minillm import backend
from minillm.autograd import Function, GradcheckError
from minillm.data.tokenizers import CharTokenizer
from minillm.finetune import LoRALinear, distillation_loss, magnitude_prune, quantize_per_channel
from minillm.finetune.dpo import dpo_loss
from minillm.finetune.grpo import group_advantages as grpo_group_advantages
from minillm.finetune.instruct import IGNORE, ChatTemplate, encode_conversation, shift_for_lm
from minillm.meta import prototypical_loss as meta_prototypical_loss
from minillm.models.vision import patchify

from .grading import (Check, CheckFailed, Exercise, Misconception, as_array, assert_close,
                      assert_equal, numerical_gradient, with_hints)


# -- 8.1 / 8.2 LoRA ---------------------------------------------------------------------------
def _lora_layer(W, b, A, B, alpha):
    layer = LoRALinear(W.shape[0], W.shape[1], bias=b is not None, r=A.shape[1], alpha=alpha)
    layer.weight.data[...] = W
    if b is not None:
        layer.bias.data[...] = b
    layer.lora_A.data[...] = A
    layer.lora_B.data[...] = B
    return layer


def _lora_inputs(rng, batch, d_in, d_out, r, bias=True):
    x = rng.normal(size=(*batch, d_in))
    W = rng.normal(size=(d_in, d_out)) / np.sqrt(d_in)
    b = rng.normal(size=d_out) if bias else None
    A = rng.normal(size=(d_in, r)) / np.sqrt(d_in)
    B = rng.normal(size=(r, d_out))                    # nonzero, so the update matters
    return x, W, b, A, B


def _lora_forward_case(batch, d_in, d_out, r, alpha, bias=True):
    def run(student, rng):
        x, W, b, A, B = _lora_inputs(rng, batch, d_in, d_out, r, bias)
        want = _lora_layer(W, b, A, B, alpha)(mm.tensor(x)).numpy()
        assert_close(student(x.copy(), W.copy(), None if b is None else b.copy(), A.copy(),
                             B.copy(), alpha), want,
                     f"lora_forward for x {x.shape}, r={r}, alpha={alpha}, bias={bias}")
    return run


def _lora_grads_case(batch, d_in, d_out, r, alpha):
    def run(student, rng):
        x, W, b, A, B = _lora_inputs(rng, batch, d_in, d_out, r)
        g = rng.normal(size=(*batch, d_out))
        layer = _lora_layer(W, b, A, B, alpha)
        (layer(mm.tensor(x)) * mm.tensor(g)).sum().backward()
        got = student(x.copy(), W.copy(), A.copy(), B.copy(), alpha, g.copy())
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailed("lora_grads must return a tuple (dA, dB)")
        assert_close(got[0], layer.lora_A.grad.numpy(), f"dA for x {x.shape}, r={r}")
        assert_close(got[1], layer.lora_B.grad.numpy(), f"dB for x {x.shape}, r={r}")
    return run


def _lora_forward_unscaled(x, W, b, A, B, alpha):
    """A known mistake: the low-rank update added without the alpha / r scale."""
    y = x @ W + (x @ A) @ B
    return y if b is None else y + b


def _lora_grads_unscaled(x, W, A, B, alpha, grad_out):
    """A known mistake: dA and dB without the alpha / r scale."""
    x2, g2 = x.reshape(-1, x.shape[-1]), grad_out.reshape(-1, grad_out.shape[-1])
    return x2.T @ (g2 @ B.T), (x2 @ A).T @ g2


_LORA_SCALE = ("忘了 LoRA 的缩放 alpha / r (the alpha/r scale)：低秩增量 x A B 要乘 s = alpha / r "
               "（r = A.shape[1]）；minillm 的 LoRALinear 与 PEFT 都这样做，换 r 时不必重调学习率")
_LORA_MISTAKES = {
    "8.1": (Misconception(_LORA_SCALE, _lora_forward_unscaled),),
    "8.2": (Misconception(_LORA_SCALE + "；梯度 dA、dB 同样要乘 s", _lora_grads_unscaled),),
}


# -- 8.3 int8 quantization -------------------------------------------------------------------
def _quantize_case(shape, zero_column=False):
    def run(student, rng):
        w = rng.normal(size=shape) * rng.uniform(0.1, 3.0, size=shape[-1])
        if zero_column:
            w[:, 1] = 0.0
        got = student(w.copy())
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailed("quantize_int8 must return a tuple (q, scale)")
        q = as_array(got[0], "q", shape=w.shape)
        if q.dtype != np.int8:
            raise CheckFailed(f"q must have dtype int8, got {q.dtype}")
        _, ref_scale = quantize_per_channel(w, bits=8, axis=-1)
        scale = as_array(got[1], "scale", shape=(w.shape[-1],))
        assert_close(scale, np.asarray(ref_scale, dtype=np.float64), "scale (max |w| / 127 per "
                     "output column)", rtol=1e-6, atol=0)
        exact = np.abs(w).max(0) / 127.0                 # the float64 scale
        safe = np.where(exact > 0, exact, 1.0)
        want = np.clip(np.rint(w / safe), -127, 127).astype(np.int8)
        assert_equal(q, want, "q = round(w / scale) clipped to [-127, 127]")
        if np.abs(q.astype(np.float64) * exact - w).max() > exact.max() / 2 + 1e-12:
            raise CheckFailed("dequantized weights q * scale are off by more than scale / 2")
    return run


# -- 8.4 magnitude pruning ------------------------------------------------------------------
def _prune_case(shapes, sparsity, ties=False):
    def run(student, rng):
        weights = [rng.normal(size=s) for s in shapes]
        if ties:                              # many equal magnitudes: ties break by position
            weights = [np.round(w * 2) / 2 for w in weights]
        model = nn.Module()
        for i, w in enumerate(weights):
            layer = nn.Linear(*w.shape)
            layer.weight.data[...] = w
            model.add_module(f"fc{i}", layer)
        magnitude_prune(model, sparsity)
        want = [getattr(model, f"fc{i}").weight_mask.numpy() != 0 for i in range(len(shapes))]
        got = student([w.copy() for w in weights], sparsity)
        if not isinstance(got, list) or len(got) != len(weights):
            raise CheckFailed(f"magnitude_prune_masks must return a list of {len(weights)} masks")
        for i, (g, m) in enumerate(zip(got, want)):
            g = as_array(g, f"mask {i}", shape=m.shape, dtype_kind="b")
            assert_equal(g, m, f"mask {i} (sparsity {sparsity}, shapes {shapes})")
    return run


# -- 8.5 distillation loss ------------------------------------------------------------------
def _distill_case(n, c, T, alpha, ignored=0):
    def run(student, rng):
        z = rng.normal(size=(n, c)) * 2
        v = rng.normal(size=(n, c)) * 2
        labels = rng.integers(0, c, size=n)
        labels[:ignored] = -100
        want = distillation_loss(mm.tensor(z), mm.tensor(v), mm.tensor(labels),
                                 temperature=T, alpha=alpha).item()
        got = student(z.copy(), v.copy(), labels.copy(), T, alpha)
        assert_close(np.float64(got), np.float64(want),
                     f"distillation loss (N={n}, C={c}, T={T}, alpha={alpha}, "
                     f"{ignored} ignored labels)")
    return run


# -- 8.6 beam search ------------------------------------------------------------------------
def _table(rng, V):
    logits = rng.normal(size=(V, V)) * 1.5
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def _exhaustive(table, start, max_len, eos):
    V = table.shape[0]
    best, best_score = None, -np.inf
    for length in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=length):
            if eos in seq[:-1] or (length < max_len and seq[-1] != eos):
                continue
            prev, score = start, 0.0
            for t in seq:
                score += table[prev, t]
                prev = t
            if score > best_score:
                best, best_score = list(seq), score
    return best, best_score


def _check_result(got, want_seq, want_score, what):
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailed("beam_search must return a tuple (sequence, score)")
    seq = [int(t) for t in got[0]]
    if seq != want_seq:
        raise CheckFailed(f"{what}: got sequence {seq}, expected {want_seq}")
    assert_close(np.float64(got[1]), np.float64(want_score), f"{what}: the score")


def _beam_exhaustive(student, rng):
    V, L, eos = 4, 3, 0
    table = _table(rng, V)
    seq, score = _exhaustive(table, 1, L, eos)
    _check_result(student(table.copy(), 1, V ** L, L, eos), seq, score,
                  "a beam as wide as every hypothesis is exhaustive search")


def _beam_greedy(student, rng):
    V, L, eos = 6, 5, 0
    table = _table(rng, V)
    seq, score, prev = [], 0.0, 2
    for _ in range(L):
        t = int(np.argmax(table[prev]))
        seq.append(t)
        score += table[prev, t]
        prev = t
        if t == eos:
            break
    _check_result(student(table.copy(), 2, 1, L, eos), seq, score,
                  "beam_width=1 is greedy decoding")


def _beam_beats_greedy(student, rng):
    # from start 0: greedy takes 1 (log 0.6) then is stuck with 0.34; 2 (log 0.4) then 0.99
    p = np.full((4, 4), 1e-3)
    p[0, 1], p[0, 2] = 0.6, 0.398
    p[1, 3], p[1, 1], p[1, 2] = 0.34, 0.33, 0.328
    p[2, 3] = 0.997
    p[3, 3] = 0.997
    table = np.log(p / p.sum(1, keepdims=True))
    seq, score = _exhaustive(table, 0, 2, eos=3)
    assert seq == [2, 3]
    _check_result(student(table.copy(), 0, 2, 2, 3), seq, score,
                  "beam_width=2 finds the path greedy misses")


# -- 8.7 the response-only loss mask of instruction tuning ----------------------------------------
_TEMPLATE = ChatTemplate()
_CHATS = {
    "alpaca": [{"role": "user", "content": "把这个日期写成英文。\n输入：2024-03-05"},
               {"role": "assistant", "content": "March 5, 2024"}],
    "short": [{"role": "user", "content": "谢谢"}, {"role": "assistant", "content": "好的"}],
    "multi": [{"role": "system", "content": "你是助手。"},
              {"role": "user", "content": "今天北京天气怎么样？"},
              {"role": "assistant", "content": "北京今天晴。"},
              {"role": "user", "content": "谢谢"},
              {"role": "assistant", "content": "好的"}],
}


def _char_tokenizer():
    texts = [m["content"] for chat in _CHATS.values() for m in chat]
    return CharTokenizer.train(texts + [_TEMPLATE.system + _TEMPLATE.user + _TEMPLATE.input +
                                        _TEMPLATE.assistant + _TEMPLATE.separator])


def _roles(tok, messages):
    """Per token: 1 for the text of a response, 0 for the rest (eos included)."""
    roles = []
    for text, is_response in _TEMPLATE.pieces(messages):
        roles += [int(is_response)] * len(tok.encode(text)) + ([0] if is_response else [])
    return np.asarray(roles, dtype=np.int64)


def _mask_case(name):
    def run(student, rng):
        tok = _char_tokenizer()
        ids, labels = encode_conversation(tok, _TEMPLATE, _CHATS[name])
        want_x, want_y = (np.asarray(a, dtype=np.int64) for a in shift_for_lm(ids, labels))
        roles = _roles(tok, _CHATS[name])
        got = student(np.asarray(ids, dtype=np.int64), roles, tok.eos_id)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailed("response_mask must return a tuple (x, y)")
        x = as_array(got[0], "x", shape=want_x.shape, dtype_kind="iu")
        y = as_array(got[1], "y", shape=want_y.shape, dtype_kind="iu")
        assert_equal(x, want_x, f"x (the inputs) of the {name!r} conversation")
        assert_equal(y, want_y, f"y (the targets, -100 outside the answers) of the {name!r} "
                                "conversation")
    return run


def _mask_without_eos(ids, roles, eos_id):
    """A known mistake: the eos that closes an answer is not a target."""
    return ids[:-1], np.where(roles[1:] == 1, ids[1:], IGNORE)


def _mask_unshifted(ids, roles, eos_id):
    """A known mistake: the labels are not shifted (position t "predicts" its own token)."""
    keep = (roles == 1) | (ids == eos_id)
    return ids[:-1], np.where(keep[:-1], ids[:-1], IGNORE)


# -- 8.8 the DPO loss and its gradients ---------------------------------------------------------
def _dpo_reference(pc, pr, rc, rr, beta):
    tc, tr = mm.tensor(pc, requires_grad=True), mm.tensor(pr, requires_grad=True)
    loss, _, _ = dpo_loss(tc, tr, mm.tensor(rc), mm.tensor(rr), beta)
    loss.backward()
    return loss.item(), tc.grad.numpy(), tr.grad.numpy()


def _dpo_inputs(rng, n):
    rc, rr = -rng.uniform(5, 30, size=n), -rng.uniform(5, 30, size=n)
    return rc + rng.normal(size=n) * 3, rr + rng.normal(size=n) * 3, rc, rr


def _dpo_student(student, pc, pr, rc, rr, beta):
    got = student(pc.copy(), pr.copy(), rc.copy(), rr.copy(), beta)
    if not isinstance(got, tuple) or len(got) != 3:
        raise CheckFailed("dpo_loss_and_grads must return a tuple (loss, d_pc, d_pr)")
    return got


def _dpo_case(n, beta):
    def run(student, rng):
        pc, pr, rc, rr = _dpo_inputs(rng, n)
        loss, d_pc, d_pr = _dpo_student(student, pc, pr, rc, rr, beta)
        want = _dpo_reference(pc, pr, rc, rr, beta)
        what = f"(batch {n}, beta={beta})"
        assert_close(np.float64(loss), np.float64(want[0]), f"the mean DPO loss {what}")
        assert_close(as_array(d_pc, "d_pc", dtype_kind="f"), want[1], f"d_pc {what}")
        assert_close(as_array(d_pr, "d_pr", dtype_kind="f"), want[2], f"d_pr {what}")
    return run


def _dpo_gradcheck(student, rng):
    n, beta = 4, 0.5
    pc, pr, rc, rr = _dpo_inputs(rng, n)

    class StudentDPO(Function):
        def forward(self, a, b):
            self.saved = (backend.to_host(a).copy(), backend.to_host(b).copy())
            margin = beta * ((self.saved[0] - rc) - (self.saved[1] - rr))
            return np.asarray(np.logaddexp(0.0, -margin).mean())

        def backward(self, g):
            _, d_pc, d_pr = _dpo_student(student, *self.saved, rc, rr, beta)
            g = float(np.asarray(backend.to_host(g)))
            return tuple(g * as_array(d, name, shape=(n,), dtype_kind="f").astype(np.float64)
                         for d, name in ((d_pc, "d_pc"), (d_pr, "d_pr")))

    try:
        mm.gradcheck(StudentDPO.apply, [mm.tensor(pc, requires_grad=True),
                                        mm.tensor(pr, requires_grad=True)])
    except GradcheckError as e:
        raise CheckFailed(f"mm.gradcheck of a Function whose backward is your d_pc, d_pr: {e}") \
            from None


def _dpo_wrong(sign, use_beta):
    def wrong(pc, pr, rc, rr, beta):
        b = beta if use_beta else 1.0
        margin = sign * b * ((pc - rc) - (pr - rr))
        s = 1.0 / (1.0 + np.exp(margin))                 # sigmoid(-margin)
        return (float(np.logaddexp(0.0, -margin).mean()), -sign * b * s / len(pc),
                sign * b * s / len(pc))
    return wrong


# -- 8.9 GRPO group advantages ------------------------------------------------------------------
def _adv_case(shape, kind):
    def run(student, rng):
        if kind == "binary":                     # verifiable 0/1 rewards; rows 0, 1 all equal
            r = (rng.random(size=shape) < 0.5).astype(np.float64)
            r[0], r[1] = 0.0, 1.0
        else:
            r = rng.normal(size=shape) * 2 + rng.normal(size=(shape[0], 1)) * 5
        want = grpo_group_advantages(r)
        got = as_array(student(r.copy()), "advantages", shape=shape, dtype_kind="f")
        assert_close(got, want, f"advantages of {shape[0]} groups of {shape[1]} {kind} rewards")
        if kind == "binary" and np.any(got[:2] != 0):
            raise CheckFailed("a group whose rewards are all equal must get zero advantages")
    return run


def _adv_global(rewards):
    """A known mistake: one mean and std over all groups instead of per group."""
    return (rewards - rewards.mean()) / (rewards.std() + 1e-6)


def _adv_uncentred(rewards):
    """A known mistake: divided by the group std without subtracting the group mean."""
    return rewards / (rewards.std(axis=1, keepdims=True) + 1e-6)


_INSTRUCT_MISTAKES = {
    "8.7": (Misconception("把结束回答的 eos 也屏蔽成了 -100：模型学不到在哪里停止（stop），"
                          "生成时会一直写下去；每段回答之后的 eos 也是要预测的目标 (target)",
                          _mask_without_eos),
            Misconception("标签没有右移一位 (shift)：位置 t 的目标应是第 t+1 个词 ids[t+1]，"
                          "是否屏蔽也要看第 t+1 个词是不是回答，而不是看 ids[t] 自己",
                          _mask_unshifted)),
    "8.8": (Misconception("DPO 的符号反了 (sign flipped)：间隔 (margin) 是被选回答 (chosen) 的"
                          "对数比减去被拒回答 (rejected) 的，损失 -log sigmoid(margin) 应让"
                          "chosen 的概率上升", _dpo_wrong(-1.0, True)),
            Misconception("忘了乘 beta：间隔 (margin) 与梯度都要乘 beta，它控制策略可以离"
                          "参考模型 (reference) 多远", _dpo_wrong(1.0, False))),
    "8.9": (Misconception("用了所有组的全局均值和标准差 (global mean/std)：GRPO 的基线是每组"
                          "自己的均值，每一行单独做标准化 (axis=1)", _adv_global),
            Misconception("只除以标准差而没有减去组内均值 (centring)：优势 (advantage) 应是奖励"
                          "相对本组平均水平的高低，有正有负", _adv_uncentred)),
}


# -- 8.10 the prototypical-network loss -----------------------------------------------------------
def _proto_inputs(rng, n_way, k_shot, n_query, dim):
    """Support embeddings in a shuffled order (the labels say which class each row is), and
    queries near their class's centre, so the loss is neither tiny nor huge."""
    centres = rng.normal(size=(n_way, dim))
    labels = rng.permutation(np.repeat(np.arange(n_way), k_shot))
    support = centres[labels] + 0.7 * rng.normal(size=(len(labels), dim))
    q_labels = rng.integers(0, n_way, size=n_query)
    query = centres[q_labels] + 0.7 * rng.normal(size=(n_query, dim))
    return support, labels, query, q_labels


def _proto_student(student, support, labels, query, q_labels, n_way):
    got = student(support.copy(), labels.copy(), query.copy(), q_labels.copy(), n_way)
    if not isinstance(got, tuple) or len(got) != 3:
        raise CheckFailed("prototypical_loss must return a tuple (loss, d_support, d_query)")
    return got


def _proto_case(n_way, k_shot, n_query, dim):
    def run(student, rng):
        support, labels, query, q_labels = _proto_inputs(rng, n_way, k_shot, n_query, dim)
        loss, d_s, d_q = _proto_student(student, support, labels, query, q_labels, n_way)
        s = mm.tensor(support, requires_grad=True)
        q = mm.tensor(query, requires_grad=True)
        order = np.argsort(labels, kind="stable")           # class-major (N, K, D) for minillm
        grouped = s[mm.tensor(order)].reshape(n_way, k_shot, dim)
        want = meta_prototypical_loss(grouped, q, mm.tensor(q_labels))
        want.backward()
        what = f"({n_way}-way {k_shot}-shot, {n_query} queries, D={dim})"
        assert_close(np.float64(loss), np.float64(want.item()), f"the mean loss {what}")
        assert_close(as_array(d_s, "d_support", dtype_kind="f"), s.grad.numpy(),
                     f"d_support {what}")
        assert_close(as_array(d_q, "d_query", dtype_kind="f"), q.grad.numpy(), f"d_query {what}")
    return run


def _proto_numpy_loss(support, labels, query, q_labels, n_way):
    """The loss written out once more in NumPy, a prototype per class by a loop."""
    c = np.stack([support[labels == k].mean(axis=0) for k in range(n_way)])
    logits = -((query[:, None, :] - c[None, :, :]) ** 2).sum(axis=-1)
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(q_labels)), q_labels].mean()


def _proto_numerical(student, rng):
    n_way, k_shot, n_query, dim = 3, 2, 5, 3
    support, labels, query, q_labels = _proto_inputs(rng, n_way, k_shot, n_query, dim)
    _, d_s, d_q = _proto_student(student, support, labels, query, q_labels, n_way)
    num_s = numerical_gradient(lambda x: _proto_numpy_loss(x, labels, query, q_labels, n_way),
                               support)
    num_q = numerical_gradient(lambda x: _proto_numpy_loss(support, labels, x, q_labels, n_way),
                               query)
    assert_close(as_array(d_s, "d_support", dtype_kind="f"), num_s,
                 "d_support against central differences", rtol=1e-5, atol=1e-7)
    assert_close(as_array(d_q, "d_query", dtype_kind="f"), num_q,
                 "d_query against central differences", rtol=1e-5, atol=1e-7)


def _proto_wrong(power):
    """A known mistake: distances not squared (power 0.5: plain Euclidean distance)."""
    def wrong(support, support_labels, query, query_labels, n_way):
        c = np.stack([support[support_labels == k].mean(axis=0) for k in range(n_way)])
        diff = query[:, None, :] - c[None, :, :]
        sq = (diff ** 2).sum(axis=-1)
        dist = sq ** power
        logits = -dist - (-dist).max(axis=1, keepdims=True)
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        m = len(query_labels)
        loss = -np.log(p[np.arange(m), query_labels]).mean()
        g = p.copy()
        g[np.arange(m), query_labels] -= 1.0
        g /= m                                                # d loss / d logits
        dd = -g * power * sq ** (power - 1)                   # d loss / d squared distance
        d_q = 2 * (dd[:, :, None] * diff).sum(axis=1)
        d_c = -2 * (dd[:, :, None] * diff).sum(axis=0)
        counts = np.bincount(support_labels, minlength=n_way)
        return float(loss), d_c[support_labels] / counts[support_labels][:, None], d_q
    return wrong


# -- 8.11 the patch embedding of a ViT ------------------------------------------------------------
def _patch_loop(images, p, weight, bias):
    """Patch by patch: row-major over the grid, each patch flattened (channel, row, column)."""
    b, c, h, w = images.shape
    out = []
    for i in range(0, h, p):
        for j in range(0, w, p):
            out.append(images[:, :, i:i + p, j:j + p].reshape(b, -1) @ weight + bias)
    return np.stack(out, axis=1)


def _patch_inputs(rng, b, c, h, w, p, d):
    images = rng.normal(size=(b, c, h, w))
    return images, rng.normal(size=(c * p * p, d)) / p, rng.normal(size=d)


def _patch_case(b, c, h, w, p, d):
    def run(student, rng):
        images, weight, bias = _patch_inputs(rng, b, c, h, w, p, d)
        want = _patch_loop(images, p, weight, bias)
        got = student(images.copy(), p, weight.copy(), bias.copy())
        assert_close(as_array(got, "the patch embeddings", shape=want.shape, dtype_kind="f"),
                     want, f"patch_embed of images {images.shape} with P={p}")
    return run


def _patch_minillm(student, rng):
    b, c, h, w, p, d = 2, 3, 6, 4, 2, 5
    images, weight, bias = _patch_inputs(rng, b, c, h, w, p, d)
    # minillm's ViT takes (B, H, W, C) images and flattens a patch (row, column, channel):
    # the same linear map, with the weight's rows in that order
    rows = weight.reshape(c, p, p, d).transpose(1, 2, 0, 3).reshape(p * p * c, d)
    layer = nn.Linear(p * p * c, d)
    layer.weight.data[...] = rows
    layer.bias.data[...] = bias
    want = layer(patchify(mm.tensor(images.transpose(0, 2, 3, 1)), p)).numpy()
    got = student(images.copy(), p, weight.copy(), bias.copy())
    assert_close(as_array(got, "the patch embeddings", shape=want.shape, dtype_kind="f"), want,
                 "patch_embed against minillm's ViT patch embedding (patchify + Linear)")


def _patch_refuses(student, rng):
    images, weight, bias = _patch_inputs(rng, 1, 1, 5, 4, 2, 3)
    try:
        student(images, 2, weight, bias)
    except ValueError:
        return
    except Exception as e:                              # noqa: BLE001 - student code
        raise CheckFailed(f"a 5x4 image with P=2 must raise ValueError, got "
                          f"{type(e).__name__}: {e}") from None
    raise CheckFailed("a 5x4 image with P=2 must raise ValueError (5 is not divisible by 2), "
                      "not return patches that drop a row")


def _patch_channel_last(images, patch_size, weight, bias):
    """A known mistake: each patch flattened (row, column, channel), as minillm's ViT does on
    (B, H, W, C) images, instead of the (channel, row, column) this exercise documents."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.transpose(0, 2, 3, 1).reshape(b, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // p) * (w // p), p * p * c)
    return x @ weight + bias


def _patch_column_major(images, patch_size, weight, bias):
    """A known mistake: the patches taken column by column instead of row by row."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p).transpose(0, 4, 2, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p) @ weight + bias


_META_MISTAKES = {
    "8.10": (Misconception("距离没有平方 (not squared)：原型网络的 logit 是负的平方欧氏距离 "
                           "-||f(q) - c_k||^2（Snell 等 2017 对应于高斯/布雷格曼散度的解释），"
                           "不是负的欧氏距离 -||f(q) - c_k||", _proto_wrong(0.5)),),
    "8.11": (Misconception("每个块的展平顺序不对：本题的图像是 (B, C, H, W)，块内按 (通道, 行, 列) "
                           "展平，与 PyTorch 的 Conv2d 权重 reshape 后一致；(行, 列, 通道) 是 "
                           "minillm 的 ViT 对 (B, H, W, C) 图像用的顺序", _patch_channel_last),
             Misconception("块的顺序不对：块按行优先 (row-major) 排列，先走完第一行的各块，"
                           "再到下一行，不是一列一列地取", _patch_column_major)),
}

EXERCISES = [
    Exercise("8.1", "lora_forward", "a LoRA layer: y = x W + b + (alpha / r) x A B", (
        Check("a (5, 8) batch, r=2", _lora_forward_case((5,), 8, 6, 2, 16.0)),
        Check("a (2, 3, 8) batch, r=4, no bias", _lora_forward_case((2, 3), 8, 5, 4, 8.0, False)),
    )),
    Exercise("8.2", "lora_grads", "the LoRA gradients dA and dB (W frozen)", (
        Check("a (5, 8) batch, r=2", _lora_grads_case((5,), 8, 6, 2, 16.0)),
        Check("a (2, 3, 8) batch, r=3", _lora_grads_case((2, 3), 8, 5, 3, 4.0)),
    )),
    Exercise("8.3", "quantize_int8", "symmetric int8 quantization, one scale per output column", (
        Check("a (16, 8) weight", _quantize_case((16, 8))),
        Check("a (7, 5) weight with an all-zero column", _quantize_case((7, 5), True)),
    )),
    Exercise("8.4", "magnitude_prune_masks", "global magnitude pruning masks", (
        Check("two layers, sparsity 0.5", _prune_case([(6, 4), (4, 3)], 0.5)),
        Check("three layers, sparsity 0.8", _prune_case([(5, 5), (5, 2), (3, 7)], 0.8)),
        Check("ties break by position", _prune_case([(6, 6), (6, 2)], 0.3, ties=True)),
    )),
    Exercise("8.5", "distillation_loss",
             "alpha T^2 KL(teacher || student at T) + (1 - alpha) CE", (
        Check("N=6, C=5, T=2, alpha=0.5", _distill_case(6, 5, 2.0, 0.5)),
        Check("N=8, C=3, T=4, alpha=0.9, two ignored labels", _distill_case(8, 3, 4.0, 0.9, 2)),
        Check("alpha=0: plain cross-entropy", _distill_case(5, 4, 3.0, 0.0, 1)),
    )),
    Exercise("8.6", "beam_search", "beam search over a bigram log-prob table", (
        Check("exhaustive when the beam holds every hypothesis", _beam_exhaustive),
        Check("greedy when beam_width=1", _beam_greedy),
        Check("beam 2 beats greedy on a trap", _beam_beats_greedy),
    )),
    Exercise("8.7", "response_mask", "next-token pairs (x, y) with y = -100 outside the answers", (
        Check("one Alpaca-style turn", _mask_case("alpaca")),
        Check("a short answer", _mask_case("short")),
        Check("system prompt and two answers", _mask_case("multi")),
    )),
    Exercise("8.8", "dpo_loss_and_grads", "the mean DPO loss and d loss / d policy log-probs", (
        Check("batch 5, beta=0.1", _dpo_case(5, 0.1)),
        Check("batch 8, beta=2.0", _dpo_case(8, 2.0)),
        Check("mm.gradcheck of your gradients", _dpo_gradcheck),
    )),
    Exercise("8.9", "group_advantages", "GRPO advantages: (r - group mean) / (group std + 1e-6)", (
        Check("4 groups of 8 real rewards", _adv_case((4, 8), "real")),
        Check("6 groups of 4 0/1 rewards, two all-equal", _adv_case((6, 4), "binary")),
        Check("3 groups of 2", _adv_case((3, 2), "real")),
    )),
    Exercise("8.10", "prototypical_loss",
             "the prototypical-network loss and its gradients (Snell et al. 2017)", (
        Check("5-way 3-shot, shuffled support, 7 queries", _proto_case(5, 3, 7, 4)),
        Check("3-way 1-shot: the prototype is the example", _proto_case(3, 1, 6, 5)),
        Check("gradients against central differences", _proto_numerical),
    )),
    Exercise("8.11", "patch_embed", "ViT patch embedding: (B, C, H, W) -> (B, N, D)", (
        Check("2 grey 4x4 images, P=2", _patch_case(2, 1, 4, 4, 2, 3)),
        Check("3 RGB 6x9 images, P=3", _patch_case(3, 3, 6, 9, 3, 4)),
        Check("the same map as minillm's ViT patch embedding", _patch_minillm),
        Check("an image size not divisible by P is a ValueError", _patch_refuses),
    )),
]

# 分层提示 (tiered hints): `minillm exercises hint 8.1` shows them one at a time.
HINTS = {
    "8.1": ("LoRA 的输出 = 基础线性层的输出 + 缩放后的低秩增量，缩放 s = alpha / r。",
            "先算 x @ A（形状 (..., r)，很小），再乘 B；不需要 A @ B。",
            "y = x @ W + s * ((x @ A) @ B)，b 不为 None 时再加 b。"),
    "8.2": ("先把前导轴展平：x2 = x.reshape(-1, d_in)，g2 = grad_out.reshape(-1, d_out)。",
            "y 对 B 的路径是 s * (x A) B：dB = s * (x2 @ A).T @ g2。",
            "对 A 的路径是 s * x A (B)：dA = s * x2.T @ (g2 @ B.T)；返回 (dA, dB)。"),
    "8.3": ("每列一个 scale：scale = np.abs(w).max(axis=0) / 127。",
            "除以 scale 前把 0 换成 1 以免除零：safe = np.where(scale > 0, scale, 1.0)。",
            "q = np.clip(np.rint(w / safe), -127, 127).astype(np.int8)；返回 (q, scale)。"),
    "8.4": ("把所有层的 |w| 展平并拼接成一个向量 flat，n = flat.size，k = int(np.floor(sparsity * n + 0.5))。",
            "order = np.argsort(flat, kind=\"stable\")；order[:k] 是要剪掉的位置（并列时靠前的先剪）。",
            "keep = np.ones(n, bool)；keep[order[:k]] = False；再按各层大小切回去 reshape 成各层形状。"),
    "8.5": ("先只保留 labels != -100 的行；稳定的 log_softmax(x) = x - max - log(sum(exp(x - max)))。",
            "log_p = log_softmax(v / T)（教师），log_q = log_softmax(z / T)（学生）；"
            "KL = (exp(log_p) * (log_p - log_q)).sum(-1).mean()。",
            "CE = -log_softmax(z)[行号, labels].mean()（温度 1）；"
            "loss = alpha * T**2 * KL + (1 - alpha) * CE，返回 float。"),
    "8.6": ("维护两个列表：alive = [([], 0.0)]（序列, 总分）和 finished；循环最多 max_len 步，alive 为空就停。",
            "每步：scores[i] = alive[i] 的分数 + log_probs[上一个词]（空序列的上一个词是 start），"
            "形状 (len(alive), V)；用 np.argsort(-scores.reshape(-1), kind=\"stable\")"
            "[:beam_width] 取最好的。",
            "divmod(flat, V) 得 (假设 i, 词 token)；新假设以 eos_id 结尾就放进 finished，否则进入下一轮 alive；"
            "最后返回 max(finished + alive, key=分数)。"),
    "8.7": ("输入 x 是 ids 去掉最后一个词；位置 t 的目标 (target) 是下一个词 ids[t+1]，所以 y 与 x 等长。",
            "目标词 ids[t+1] 属于回答时才计入损失：它是回答正文 (roles == 1)，或者是结束回答的 eos "
            "（ids == eos_id）；其余位置填 -100。",
            "keep = (roles == 1) | (ids == eos_id)；x = ids[:-1]；"
            "y = np.where(keep[1:], ids[1:], -100)；返回 (x, y)。"),
    "8.8": ("每对的隐式奖励差 (margin) m = beta * ((pc - rc) - (pr - rr))；损失是 -log sigmoid(m) "
            "对批次取平均。",
            "数值稳定地写：-log sigmoid(m) = np.logaddexp(0, -m)；它对 m 的导数是 -sigmoid(-m)。",
            "s = 1 / (1 + np.exp(m))（即 sigmoid(-m)），B = len(pc)：d_pc = -beta * s / B，"
            "d_pr = beta * s / B；返回 (float(loss), d_pc, d_pr)。"),
    "8.9": ("每一行是同一个提示 (prompt) 的一组回答：均值和标准差都沿 axis=1 计算，"
            "用 keepdims=True 保持形状以便广播。",
            "标准差用总体标准差 (population std，np.std 的默认 ddof=0)；全相等的组 std = 0，"
            "分子也是 0，加上 1e-6 后优势为 0。",
            "mean = r.mean(axis=1, keepdims=True)；std = r.std(axis=1, keepdims=True)；"
            "返回 (r - mean) / (std + 1e-6)。"),
    "8.10": ("原型 c_k 是标签为 k 的支持样本嵌入的平均：c[k] = support[support_labels == k].mean(0)；"
             "logits = -(查询到各原型的平方距离)，形状 (M, N)；损失是对 logits 做 softmax 后"
             "真实类别的负对数概率的平均（log-softmax 先减行最大值）。",
             "G = (softmax(logits) - onehot(query_labels)) / M 是损失对 logits 的梯度；"
             "logit[m, k] = -||q_m - c_k||^2 对 q_m 的导数是 -2 (q_m - c_k)，对 c_k 的是 2 (q_m - c_k)。",
             "因为 G 的每行和为 0：d_query = 2 G @ c；d_c = 2 (G.T @ query - G.sum(0)[:, None] * c)；"
             "每个支持样本分到它所在类的 d_c 除以该类样本数：d_support = (d_c / counts[:, None])[support_labels]。"),
    "8.11": ("先检查 H、W 都能被 P 整除，否则 raise ValueError；块数 N = (H/P)(W/P)。",
             "images.reshape(B, C, H/P, P, W/P, P) 把每个空间轴拆成 (第几个块, 块内位置)；"
             "再用 transpose 把两个“第几个块”的轴放到通道前面。",
             "x = images.reshape(B, C, H//P, P, W//P, P).transpose(0, 2, 4, 1, 3, 5)"
             ".reshape(B, N, C*P*P)；返回 x @ weight + bias。"),
}

EXERCISES = with_hints(EXERCISES, HINTS, {**_LORA_MISTAKES, **_INSTRUCT_MISTAKES,
                                          **_META_MISTAKES})
