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

from .grading import Check, CheckFailed, Exercise, as_array, assert_close


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
