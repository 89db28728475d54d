"""Chapter 3 exercises (核心算法): AdamW, gradient clipping, the LR schedule, an LSTM cell,
cross-entropy with its gradient, the backward of a broadcasting matmul and one whole training step.

The checks compare the student's function with minillm itself: ``minillm.optim.AdamW`` stepped
several times (its moments read from the optimizer state), ``minillm.optim.clip_grad_norm_``,
``get_cosine_with_min_lr_schedule_with_warmup`` (the schedule the Trainer builds for
``lr_scheduler_type="cosine_with_min_lr"``), ``nn.LSTM`` run for one time step, and
``F.cross_entropy`` with autograd for the gradient. A student's backward (matmul here, attention
in chapter 5) is also plugged into a ``minillm.autograd.Function`` and checked by ``mm.gradcheck``
(:func:`gradcheck_backward`); the training step is compared with the same step done by
``nn.Linear``, ``F.cross_entropy``, ``clip_grad_norm_`` and ``AdamW`` (decay on the matrix only,
as the Trainer groups parameters).
"""
from __future__ import annotations

import numpy as np

import minillm as mm
import minillm.functional as F
from minillm import backend
from minillm.autograd import Function, GradcheckError
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


# -- a student's backward inside a Function, checked by mm.gradcheck (3.6, 5.8) ----------------
def gradcheck_backward(forward, backward, arrays, names, what):
    """``mm.gradcheck`` of a Function whose forward is the grader's ``forward(*arrays)`` (NumPy)
    and whose backward is the student's ``backward(*arrays, grad_out)``, which must return one
    float gradient per input, shaped like it (else :class:`CheckFailed`)."""
    class StudentBackward(Function):
        def forward(self, *inputs):
            self.saved = inputs
            return forward(*inputs)

        def backward(self, g):
            got = _pair(backward(*[a.copy() for a in self.saved], backend.to_host(g).copy()),
                        len(names), what)
            return tuple(as_array(d, f"{n} of {what}", shape=a.shape, dtype_kind="f")
                         .astype(np.float64) for d, n, a in zip(got, names, self.saved))

    tensors = [mm.tensor(a, requires_grad=True) for a in arrays]
    try:
        mm.gradcheck(StudentBackward.apply, tensors)
    except GradcheckError as e:
        message = str(e)
        for i, name in enumerate(names):
            message = message.replace(f"input {i} ", f"input {i} ({name}) ")
        raise CheckFailed(f"mm.gradcheck of a Function whose backward is your {what}: "
                          f"{message}") from None


# -- 3.6 matmul backward with broadcast batch axes ------------------------------------------------
def _matmul_case(shape_a, shape_b):
    def run(student, rng):
        a, b = rng.normal(size=shape_a), rng.normal(size=shape_b)
        ta, tb = mm.tensor(a, requires_grad=True), mm.tensor(b, requires_grad=True)
        out = ta @ tb
        g = rng.normal(size=out.shape)
        (out * mm.tensor(g)).sum().backward()
        what = f"matmul_backward for a {shape_a} @ b {shape_b} -> c {tuple(out.shape)}"
        da, db = _pair(student(a.copy(), b.copy(), g.copy()), 2, what)
        assert_close(as_array(da, f"da of {what}", shape=shape_a, dtype_kind="f"),
                     ta.grad.numpy(), f"da of {what} (compared with minillm's autograd of @)")
        assert_close(as_array(db, f"db of {what}", shape=shape_b, dtype_kind="f"),
                     tb.grad.numpy(), f"db of {what} (compared with minillm's autograd of @)")
        gradcheck_backward(np.matmul, student, (a, b), ("da", "db"), what)
    return run


# -- 3.7 one training step of softmax regression ----------------------------------------------
def _moments(value, what):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise CheckFailed(f"{what} must be a tuple of two arrays (for W and for b)")
    return tuple(value)


def _train_case(N, D, C, steps, lr, weight_decay, max_norm, scale=1.0):
    def run(student, rng):
        W, b = rng.normal(size=(D, C)) * 0.5, rng.normal(size=C) * 0.5
        layer = mm.nn.Linear(D, C)
        layer.load_state_dict({"weight": mm.tensor(W), "bias": mm.tensor(b)})
        opt = AdamW([{"params": [layer.weight], "weight_decay": weight_decay},
                     {"params": [layer.bias], "weight_decay": 0.0}],     # as the Trainer does
                    lr=lr, betas=(0.9, 0.999), eps=1e-8)
        m, v = (np.zeros((D, C)), np.zeros(C)), (np.zeros((D, C)), np.zeros(C))
        for t in range(1, steps + 1):
            x, y = rng.normal(size=(N, D)) * scale, rng.integers(0, C, size=N)
            opt.zero_grad()
            loss = F.cross_entropy(layer(mm.tensor(x)), mm.tensor(y))
            loss.backward()
            norm = clip_grad_norm_(layer.parameters(), max_norm).item()
            opt.step()
            what = (f"step {t} of {steps} (N={N}, D={D}, C={C}, lr={lr}, weight_decay="
                    f"{weight_decay}, max_norm={max_norm}; gradient norm {norm:.3g})")
            got = _pair(student(W.copy(), b.copy(), x.copy(), y.copy(),
                                tuple(a.copy() for a in m), tuple(a.copy() for a in v), t, lr,
                                weight_decay, max_norm), 5, "train_step")
            got_loss, W, b = got[:3]
            m, v = _moments(got[3], f"m after {what}"), _moments(got[4], f"v after {what}")
            assert_close(np.float64(got_loss), np.float64(loss.item()), f"loss of {what}")
            state = [opt.state[p] for p in (layer.weight, layer.bias)]
            for name, mine, key in (("m", m, "exp_avg"), ("v", v, "exp_avg_sq")):
                for part, arr, st in zip(("W", "b"), mine, state):
                    assert_close(arr, backend.to_host(st[key]), f"{name} of {part} after {what}")
            assert_close(W, layer.weight.numpy(), f"W after {what}")
            assert_close(b, layer.bias.numpy(), f"b after {what}")
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


def _matmul_no_sum(a, b, grad_out):
    """The matmul backward without summing over the broadcast batch axes (shapes come out as
    the broadcast shape, not as a's and b's)."""
    return grad_out @ np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2) @ grad_out


def _train_step_variant(decay="decoupled", clip="joint", decay_bias=False):
    """One softmax-regression step with a chosen mistake: ``decay="l2"`` adds weight_decay * W
    to the (clipped) gradient as Adam's L2 penalty does; ``clip="none"`` updates with the
    unclipped gradient (clipping after the update changes nothing); ``clip="each"`` clips dW and
    db separately; ``decay_bias`` decays b too."""
    def step(W, b, x, y, m, v, t, lr, weight_decay, max_norm):
        z = x @ W + b
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        rows = np.arange(len(y))
        dz = np.exp(log_p)
        dz[rows, y] -= 1
        dz /= len(y)
        grads = [x.T @ dz, dz.sum(axis=0)]
        norms = [float(np.sqrt(np.sum(g * g))) for g in grads]
        if clip == "joint":
            coef = min(max_norm / (float(np.hypot(*norms)) + 1e-6), 1.0)
            grads = [g * coef for g in grads]
        elif clip == "each":
            grads = [g * min(max_norm / (n + 1e-6), 1.0) for g, n in zip(grads, norms)]
        params, new_m, new_v = [W, b], [], []
        for i, (p, g) in enumerate(zip(params, grads)):
            wd = weight_decay if i == 0 or decay_bias else 0.0
            if decay == "l2":
                g = g + wd * p
            else:
                p = p * (1 - lr * wd)
            new_m.append(0.9 * m[i] + 0.1 * g)
            new_v.append(0.999 * v[i] + 0.001 * g * g)
            denom = np.sqrt(new_v[i]) / np.sqrt(1 - 0.999 ** t) + 1e-8
            params[i] = p - lr / (1 - 0.9 ** t) * new_m[i] / denom
        return float(-log_p[rows, y].mean()), params[0], params[1], tuple(new_m), tuple(new_v)
    return step


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

_MATMUL_MISTAKES = (
    Misconception("忘了对广播轴求和 (forgot to sum over the broadcast axes)：da、db 的形状成了广播后"
                  "的形状；某个批量轴 (batch axis) 在前向中被广播过，它在反向中就要求和 "
                  "(sum over that axis)，让 da、db 回到 a、b 原来的形状", _matmul_no_sum),
)
_TRAIN_MISTAKES = (
    Misconception("在参数更新之后才裁剪梯度 (clipping after the update)，或者根本没裁剪：AdamW 用的"
                  "还是未裁剪的梯度。顺序应是：求梯度 → 按 (dW, db) 的联合范数裁剪 → AdamW 更新",
                  _train_step_variant(clip="none")),
    Misconception("把 dW 和 db 分别按各自的范数裁剪 (per-tensor clipping)；应把它们看成一个长向量，"
                  "按联合 L2 范数 (joint norm) 统一缩放", _train_step_variant(clip="each")),
    Misconception("把权重衰减当作 L2 正则加进了梯度 (weight decay as L2)，这是 Adam+L2；AdamW 的解耦"
                  "权重衰减 (decoupled weight decay) 直接缩小参数，不经过梯度和 m、v",
                  _train_step_variant(decay="l2")),
    Misconception("对偏置 b 也做了权重衰减 (decayed the bias)；minillm 的 Trainer 只衰减矩阵参数 "
                  "(ndim >= 2)，偏置和 LayerNorm 参数不衰减", _train_step_variant(decay_bias=True)),
)


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
    Exercise("3.6", "matmul_backward",
             "matmul backward with broadcast batch axes: sum over the broadcast axes", (
        Check("2-D: a (3, 4) @ b (4, 5)", _matmul_case((3, 4), (4, 5))),
        Check("same batch axes: (2, 3, 4) @ (2, 4, 5)", _matmul_case((2, 3, 4), (2, 4, 5))),
        Check("a weight shared by the batch: (2, 3, 4) @ (4, 5) (db sums over the batch)",
              _matmul_case((2, 3, 4), (4, 5))),
        Check("broadcast batch axes: (2, 1, 3, 4) @ (5, 4, 6) -> (2, 5, 3, 6)",
              _matmul_case((2, 1, 3, 4), (5, 4, 6))),
    )),
    Exercise("3.7", "train_step",
             "one training step: cross-entropy, gradients, joint-norm clipping, AdamW", (
        Check("3 steps, gradients clipped (max_norm=0.2), weight_decay=0.1",
              _train_case(8, 5, 4, 3, 0.05, 0.1, 0.2)),
        Check("3 steps, gradients below max_norm (no clipping), weight_decay=0.01",
              _train_case(12, 3, 3, 3, 0.01, 0.01, 100.0)),
        Check("2 steps, large inputs and weight_decay=0.5, lr=0.1, max_norm=1",
              _train_case(6, 4, 5, 2, 0.1, 0.5, 1.0, scale=5.0)),
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
    "3.6": ("先不管批量轴：二维时 c = a b 的 da = grad_out 乘 b 的转置，db = a 的转置乘 grad_out；"
            "用 np.swapaxes(x, -1, -2) 转置最后两个轴，批量轴照常广播。",
            "这样得到的 da、db 是广播后的形状。前向里被广播的轴，反向时要求和：先对多出来的前导轴 "
            "sum(axis=0) 直到维数相同，再对原来长度为 1 的轴 sum(axis=k, keepdims=True)。",
            "写一个 unbroadcast(g, shape)：while g.ndim > len(shape): g = g.sum(0)；再对 shape[k] == 1 "
            "且 g.shape[k] != 1 的 k 求和 keepdims；返回 (unbroadcast(grad_out @ b^T, a.shape), "
            "unbroadcast(a^T @ grad_out, b.shape))。"),
    "3.7": ("按顺序写四步：前向 (logits = x @ W + b，平均交叉熵) → 反向 (dW, db) → 联合范数裁剪 → "
            "AdamW；返回的 loss 是更新之前的损失。",
            "dz = (softmax(logits) - onehot(y)) / N；dW = x.T @ dz；db = dz.sum(0)。裁剪系数 "
            "coef = min(max_norm / (sqrt(sum dW**2 + sum db**2) + 1e-6), 1)，dW、db 都乘它。",
            "AdamW 对 W：W = W * (1 - lr * weight_decay)，b 不衰减；两者都做 m = 0.9 m + 0.1 g，"
            "v = 0.999 v + 0.001 g**2，p = p - lr * (m / (1 - 0.9**t)) / (sqrt(v / (1 - 0.999**t)) "
            "+ 1e-8)；返回 (loss, W, b, (mW, mb), (vW, vb))。"),
}
MISCONCEPTIONS = {"3.1": _ADAM_MISTAKES, "3.2": _CLIP_MISTAKES, "3.4": _LSTM_MISTAKES,
                  "3.5": _CE_MISTAKES, "3.6": _MATMUL_MISTAKES, "3.7": _TRAIN_MISTAKES}

EXERCISES = with_hints(EXERCISES, HINTS, MISCONCEPTIONS)
