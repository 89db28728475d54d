"""Chapter 3 exercises (核心算法): AdamW, gradient clipping, the LR schedule, an LSTM cell and
cross-entropy with its gradient.

The checks compare the student's function with minillm itself: ``minillm.optim.AdamW`` stepped
several times (its moments read from the optimizer state), ``minillm.optim.clip_grad_norm_``,
``get_cosine_with_min_lr_schedule_with_warmup`` (the schedule the Trainer builds for
``lr_scheduler_type="cosine_with_min_lr"``), ``nn.LSTM`` run for one time step, and
``F.cross_entropy`` with autograd for the gradient.
"""
from __future__ import annotations

import numpy as np

import minillm as mm
import minillm.functional as F
from minillm import backend
from minillm.optim import AdamW, clip_grad_norm_
from minillm.optim.lr_scheduler import get_cosine_with_min_lr_schedule_with_warmup

from .grading import Check, CheckFailed, Exercise, Misconception, as_array, assert_close, with_hints


def _pair(result, n, what):
    if not isinstance(result, tuple) or len(result) != n:
        raise CheckFailed(f"{what} must return a tuple of {n} values, got "
                          f"{type(result).__name__}")
    return result


# -- 3.1 AdamW ----------------------------------------------------------------------------------
def _adam_case(shape, steps, lr, betas, eps, weight_decay, grad_scale=1.0):
    def run(student, rng):
        theta = rng.normal(size=shape)
        p = mm.nn.Parameter(mm.tensor(theta))
        opt = AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        param, m, v = theta.copy(), np.zeros(shape), np.zeros(shape)
        for t in range(1, steps + 1):
            g = rng.normal(size=shape) * grad_scale
            p.grad = mm.tensor(g)
            opt.step()
            state = opt.state[p]
            what = (f"step {t} of {steps} (lr={lr}, betas={betas}, eps={eps}, "
                    f"weight_decay={weight_decay})")
            param, m, v = _pair(student(param.copy(), g.copy(), m.copy(), v.copy(), t, lr,
                                        betas[0], betas[1], eps, weight_decay), 3, "adam_step")
            assert_close(m, backend.to_host(state["exp_avg"]), f"m after {what}")
            assert_close(v, backend.to_host(state["exp_avg_sq"]), f"v after {what}")
            assert_close(param, p.numpy(), f"param after {what}")
    return run


# -- 3.2 gradient clipping ----------------------------------------------------------------------
def _clip_case(shapes, max_norm, scale):
    def run(student, rng):
        grads = [rng.normal(size=s) * scale for s in shapes]
        params = [mm.nn.Parameter(mm.tensor(np.zeros(s))) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = mm.tensor(g)
        total = clip_grad_norm_(params, max_norm).item()
        clipped, got_total = _pair(student([g.copy() for g in grads], max_norm), 2,
                                   "clip_grad_norm")
        what = f"{len(shapes)} gradients, norm {total:.3g}, max_norm={max_norm}"
        assert_close(np.float64(got_total), np.float64(total), f"total norm ({what})")
        if not isinstance(clipped, list) or len(clipped) != len(shapes):
            raise CheckFailed(f"the clipped gradients must be a list of {len(shapes)} arrays")
        for i, (c, p) in enumerate(zip(clipped, params)):
            assert_close(c, p.grad.numpy(), f"clipped gradient {i} ({what})")
    return run


# -- 3.3 warmup + cosine ------------------------------------------------------------------------
def _lr_case(max_lr, warmup, total, min_lr_rate):
    def run(student, rng):
        p = mm.nn.Parameter(mm.tensor(np.zeros(1)))
        opt = AdamW([p], lr=max_lr)
        sched = get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total,
                                                            min_lr_rate=min_lr_rate)
        for step in range(total + 1):
            want = opt.param_groups[0]["lr"]
            got = student(step, max_lr, warmup, total, min_lr_rate)
            assert_close(np.float64(got), np.float64(want),
                         f"lr_at(step={step}, max_lr={max_lr}, warmup_steps={warmup}, "
                         f"total_steps={total}, min_lr_rate={min_lr_rate})", atol=1e-15)
            sched.step()
    return run


# -- 3.4 LSTM cell ----------------------------------------------------------------------------
def _lstm_case(B, I, H, scale):
    def run(student, rng):
        x = rng.normal(size=(B, I)) * scale
        h, c = rng.normal(size=(B, H)), rng.normal(size=(B, H))
        W, U, b = (rng.normal(size=(I, 4 * H)), rng.normal(size=(H, 4 * H)),
                   rng.normal(size=4 * H))
        lstm = mm.nn.LSTM(I, H)
        lstm.load_state_dict({"weight_ih_l0": mm.tensor(W), "weight_hh_l0": mm.tensor(U),
                              "bias_l0": mm.tensor(b)})
        with mm.no_grad():
            _, (h_n, c_n) = lstm(mm.tensor(x[None]), (mm.tensor(h[None]), mm.tensor(c[None])))
        h_new, c_new = _pair(student(x.copy(), h.copy(), c.copy(), W.copy(), U.copy(),
                                     b.copy()), 2, "lstm_cell")
        what = f"B={B}, I={I}, H={H}, inputs x{scale} (compared with nn.LSTM)"
        assert_close(c_new, c_n.numpy()[0], f"c_new for {what}")
        assert_close(h_new, h_n.numpy()[0], f"h_new for {what}")
    return run


# -- 3.5 cross-entropy and its gradient ----------------------------------------------------------
def _ce_case(N, C, scale, n_ignored, ignore_index=-100):
    def run(student, rng):
        logits = rng.normal(size=(N, C)) * scale
        targets = rng.integers(0, C, size=N)
        targets[rng.permutation(N)[:n_ignored]] = ignore_index
        z = mm.tensor(logits, requires_grad=True)
        loss = F.cross_entropy(z, mm.tensor(targets), ignore_index=ignore_index)
        loss.backward()
        got_loss, got_grad = _pair(student(logits.copy(), targets.copy(), ignore_index), 2,
                                   "cross_entropy_with_grad")
        what = f"N={N}, C={C}, logits x{scale}, {n_ignored} targets = {ignore_index}"
        assert_close(np.float64(got_loss), np.float64(loss.item()), f"loss ({what})")
        assert_close(as_array(got_grad, "dlogits", dtype_kind="f"), z.grad.numpy(),
                     f"dlogits ({what})")
    return run


# -- known mistakes (the grader names them when a student's answer reproduces one) ----------------
def _adam_l2(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """Adam with L2 regularisation: the decay goes into the gradient (not AdamW)."""
    grad = grad + weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def _clip_norm_after(grads, max_norm):
    """Clips right, but returns the norm of the CLIPPED gradients."""
    total = float(np.sqrt(sum(float(np.sum(g ** 2)) for g in grads)))
    coef = min(max_norm / (total + 1e-6), 1.0)
    clipped = [g * coef for g in grads]
    return clipped, float(np.sqrt(sum(float(np.sum(g ** 2)) for g in clipped)))


def _lstm_gate_order(order):
    """An LSTM cell that reads the four column blocks in ``order`` instead of i, f, g, o."""
    def wrong(x, h, c, W, U, b):
        z = x @ W + h @ U + b
        blocks = dict(zip(order, np.split(z, 4, axis=-1)))
        sig = lambda a: (1 + np.tanh(a / 2)) / 2          # noqa: E731
        i, f, g, o = sig(blocks["i"]), sig(blocks["f"]), np.tanh(blocks["g"]), sig(blocks["o"])
        c_new = f * c + i * g
        return o * np.tanh(c_new), c_new
    return wrong


def _ce_mean_over_all_rows(logits, targets, ignore_index=-100):
    """Cross-entropy that divides by N (every row) instead of M (the rows not ignored)."""
    keep = targets != ignore_index
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.flatnonzero(keep)
    n = len(targets)
    grad = np.exp(log_p)
    grad[rows, targets[rows]] -= 1
    grad[~keep] = 0
    return float(-log_p[rows, targets[rows]].sum() / n), grad / n


_CE_MISTAKES = (
    Misconception("平均时除以了全部行数 N (mean over all rows)，被忽略的行 (ignore_index) 也算进了"
                  "分母；应除以保留的行数 M，损失和梯度都是", _ce_mean_over_all_rows),
)
_ADAM_MISTAKES = (
    Misconception("把权重衰减当作 L2 正则加进了梯度 (grad + weight_decay * param)，这是 Adam+L2，"
                  "不是 AdamW 的解耦权重衰减 (decoupled weight decay)：应先做 "
                  "param *= 1 - lr * weight_decay，梯度保持不变", _adam_l2),
)
_CLIP_MISTAKES = (
    Misconception("返回的是裁剪之后的范数 (norm after clipping)；应返回裁剪之前的总范数 "
                  "(total norm BEFORE clipping)，训练日志靠它发现梯度爆炸", _clip_norm_after),
)
_LSTM_MISTAKES = tuple(
    Misconception(f"门的顺序错了 (gate order)：你按 {', '.join(order)} 切分了 z 的列，PyTorch 与 "
                  "minillm 的顺序是 i, f, g, o（输入门、遗忘门、候选值、输出门）",
                  _lstm_gate_order(order))
    for order in (("i", "f", "o", "g"), ("i", "g", "f", "o"), ("f", "i", "g", "o")))


EXERCISES = [
    Exercise("3.1", "adam_step", "AdamW step: decoupled weight decay and bias correction", (
        Check("5 steps of a (6,) parameter, weight_decay=0.1",
              _adam_case((6,), 5, 1e-2, (0.9, 0.999), 1e-8, 0.1)),
        Check("3 steps of a (3, 4) parameter, no decay, betas (0.8, 0.99)",
              _adam_case((3, 4), 3, 0.1, (0.8, 0.99), 1e-8, 0.0)),
        Check("tiny gradients: eps goes after the bias-corrected sqrt",
              _adam_case((5,), 4, 1e-3, (0.9, 0.999), 1e-8, 0.01, grad_scale=1e-8)),
    )),
    Exercise("3.2", "clip_grad_norm", "clip gradients by their joint L2 norm", (
        Check("three gradients above max_norm (clipped)",
              _clip_case([(3, 4), (5,), (2, 2, 2)], 1.0, 1.0)),
        Check("two gradients below max_norm (unchanged)", _clip_case([(4,), (2, 3)], 5.0, 0.1)),
        Check("all-zero gradients (norm 0, no division by zero)",
              _clip_case([(3,), (2, 2)], 1.0, 0.0)),
    )),
    Exercise("3.3", "lr_at", "learning rate: linear warmup, then cosine decay to a floor", (
        Check("W=10, T=100, floor 10%", _lr_case(3e-4, 10, 100, 0.1)),
        Check("W=7, T=30, floor 0", _lr_case(1.0, 7, 30, 0.0)),
        Check("no warmup, T=20, floor 50%", _lr_case(0.5, 0, 20, 0.5)),
    )),
    Exercise("3.4", "lstm_cell", "one LSTM step, gates i, f, g, o", (
        Check("B=3, I=4, H=5", _lstm_case(3, 4, 5, 1.0)),
        Check("B=1, I=2, H=3, large inputs (saturated gates)", _lstm_case(1, 2, 3, 30.0)),
    )),
    Exercise("3.5", "cross_entropy_with_grad",
             "cross-entropy mean over non-ignored targets, and dlogits = (softmax - onehot)/M", (
        Check("N=6, C=5, no ignored targets", _ce_case(6, 5, 1.0, 0)),
        Check("N=10, C=7, 4 ignored targets", _ce_case(10, 7, 1.0, 4)),
        Check("logits x50 (stable logsumexp), ignore_index=-1 with 2 ignored",
              _ce_case(8, 4, 50.0, 2, ignore_index=-1)),
    )),
]

# 分层提示 (tiered hints): `minillm exercises hint 3.1` shows them one at a time.
HINTS = {
    "3.1": ("AdamW 的权重衰减是“解耦”的：直接作用在参数上，不经过梯度，也不进入 m 和 v。",
            "顺序：先 param = param * (1 - lr * weight_decay)；再 m = beta1*m + (1-beta1)*grad，"
            "v = beta2*v + (1-beta2)*grad**2。",
            "偏差修正 m_hat = m / (1 - beta1**t)，v_hat = v / (1 - beta2**t)；"
            "最后 param = param - lr * m_hat / (np.sqrt(v_hat) + eps)（eps 加在开方之后）。"),
    "3.2": ("先算总范数：所有数组的平方和加起来再开方，即把它们拼成一个向量的 L2 范数。",
            "total = sqrt(sum(np.sum(g**2) for g in grads))；系数 "
            "coef = min(max_norm / (total + 1e-6), 1.0)。",
            "clipped = [g * coef for g in grads]；返回 (clipped, float(total))——total 是裁剪之前的范数。"),
    "3.3": ("分两段：step < W（W = warmup_steps）时线性预热，之后余弦衰减。",
            "预热段：lr = max_lr * step / W（第 0 步为 0）。余弦段的进度 "
            "p = (step - W) / (T - W)，T = total_steps，p 从 0 走到 1。",
            "余弦段：lr = max_lr * (r + (1 - r) * (1 + cos(pi * p)) / 2)，r = min_lr_rate。"),
    "3.4": ("先算 z = x @ W + h @ U + b，形状 (B, 4H)，再按列切成四块 z_i, z_f, z_g, z_o"
            "（顺序 i, f, g, o）。",
            "i = sigmoid(z_i)，f = sigmoid(z_f)，g = tanh(z_g)，o = sigmoid(z_o)；"
            "稳定的 sigmoid(z) = (1 + tanh(z / 2)) / 2。",
            "c_new = f * c + i * g；h_new = o * tanh(c_new)；返回 (h_new, c_new)。"),
    "3.5": ("先找出保留的行 keep = targets != ignore_index，M = keep.sum()。",
            "稳定的 logsumexp：m = max(z, 行)，lse = m + log(sum(exp(z - m)))；每行损失是 "
            "lse - z[n, targets[n]]，对保留行取平均。",
            "梯度：dlogits[n] = (softmax(z[n]) - onehot(targets[n])) / M（保留行），被忽略的行为 0。"),
}
MISCONCEPTIONS = {"3.1": _ADAM_MISTAKES, "3.2": _CLIP_MISTAKES, "3.4": _LSTM_MISTAKES,
                  "3.5": _CE_MISTAKES}

EXERCISES = with_hints(EXERCISES, HINTS, MISCONCEPTIONS)
