"""Learning-rate schedules.

A scheduler sets ``group["lr"]`` of every parameter group of an optimizer from the
group's initial learning rate and a step counter. Call ``scheduler.step()`` once after
each ``optimizer.step()``::

    opt = AdamW(model.parameters(), lr=3e-4)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=100, num_training_steps=1000)
    for batch in batches:
        loss = ...; loss.backward()
        opt.step(); sched.step(); opt.zero_grad()

Every schedule here is written in *closed form*: ``lr_t = initial_lr × factor(t)`` with
``t = scheduler.last_epoch`` (the number of ``step()`` calls so far), so a schedule can
be read off its formula and a resumed run lands on exactly the same values. Creating a
scheduler applies ``factor(0)`` at once (a warmup schedule starts at lr 0).

The ``get_*_schedule*`` factories and :func:`get_scheduler` use the names and formulas of
Hugging Face ``transformers`` (``TrainingArguments(lr_scheduler_type=...)``);
``LambdaLR``, ``StepLR`` and ``ConstantLR`` follow ``torch.optim.lr_scheduler``.
"""
from __future__ import annotations

import functools
import math

from ..validation import check_int, check_number
from .optimizer import Optimizer

__all__ = ["LRScheduler", "LambdaLR", "StepLR", "ConstantLR", "get_constant_schedule",
           "get_constant_schedule_with_warmup", "get_linear_schedule_with_warmup",
           "get_cosine_schedule_with_warmup",
           "get_cosine_with_min_lr_schedule_with_warmup", "get_scheduler", "SCHEDULER_NAMES"]


def _check_int(name, value, low=0):
    """``check_int`` with this module's wording, which torch users know: "an integer"."""
    return check_int(value, name, low=low, expected=f"an integer >= {low}")


class LRScheduler:
    """Base class: ``lr = initial_lr × factor(last_epoch)`` for every parameter group.

    ``last_epoch=-1`` starts a new schedule and records each group's current ``lr`` as
    its ``"initial_lr"``. To resume, load the optimizer's and the scheduler's
    ``state_dict`` (or pass ``last_epoch=n`` to an optimizer whose groups already have
    ``initial_lr``). Subclasses implement :meth:`get_lr` (or just :meth:`lr_factor`).
    """

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} expects a minillm Optimizer, "
                            f"got {type(optimizer).__name__}")
        _check_int("last_epoch", last_epoch, low=-1)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] "
                                   "when resuming a scheduler with last_epoch >= 0; load the "
                                   "optimizer's state_dict first (it stores initial_lr)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self.step()

    def lr_factor(self, step):
        """The multiplier of the initial learning rate after ``step`` scheduler steps."""
        raise NotImplementedError

    def get_lr(self):
        """The learning rate of each group at the current ``last_epoch`` (closed form)."""
        f = self.lr_factor(self.last_epoch)
        return [base_lr * f for base_lr in self.base_lrs]

    def step(self):
        """Advance the schedule by one step and write the new ``lr`` into every group."""
        self.last_epoch += 1
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_last_lr(self):
        """The learning rates (one per group) set by the last :meth:`step`."""
        return list(self._last_lr)

    _NOT_SAVED = ("optimizer", "lr_lambdas")

    def state_dict(self):
        """The scheduler's counters and settings (plain numbers and lists; no functions)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()
                if k not in self._NOT_SAVED}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` and set each group's ``lr`` to the restored value."""
        missing = {"last_epoch", "base_lrs", "_last_lr"} - set(state_dict)
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing key(s) "
                             f"{sorted(missing)}; expected a dict from state_dict()")
        n = len(self.optimizer.param_groups)
        for key in ("base_lrs", "_last_lr"):
            if len(state_dict[key]) != n:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key} has "
                                 f"{len(state_dict[key])} entries but the optimizer has {n} "
                                 "parameter group(s)")
        for k, v in state_dict.items():
            if k not in self._NOT_SAVED:
                setattr(self, k, list(v) if isinstance(v, (list, tuple)) else v)
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def __repr__(self):
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, last_lr={self._last_lr})"


class LambdaLR(LRScheduler):
    """``lr = initial_lr × lr_lambda(step)``; ``lr_lambda`` may be one function per group.

    The functions are code, not state: :meth:`state_dict` leaves them out, so recreate the
    scheduler with the same functions before loading its state.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups) if isinstance(optimizer, Optimizer) else 0
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"expected {n} lr_lambdas (one per parameter group), "
                                 f"got {len(lr_lambda)}")
            lambdas = list(lr_lambda)
        else:
            lambdas = [lr_lambda] * n
        for f in lambdas:
            if not callable(f):
                raise TypeError(f"lr_lambda must be a function of the step, got "
                                f"{type(f).__name__}")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base_lr * f(self.last_epoch) for f, base_lr in zip(self.lr_lambdas, self.base_lrs)]


class StepLR(LRScheduler):
    """Decay by ``gamma`` every ``step_size`` steps.

    ``lr = initial_lr × gamma^(step // step_size)``.
    """

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _check_int("step_size", step_size, low=1)
        self.gamma = check_number(gamma, "gamma", low=0)
        super().__init__(optimizer, last_epoch)

    def lr_factor(self, step):
        return self.gamma ** (step // self.step_size)


class ConstantLR(LRScheduler):
    """``lr = initial_lr × factor`` for the first ``total_iters`` steps, then ``initial_lr``.

    With ``factor=1`` (or ``total_iters=0``) it is the constant schedule.
    """

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        self.factor = check_number(factor, "factor", "ConstantLR", low=0, high=1,
                                   expected="a number between 0 and 1")
        self.total_iters = _check_int("total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def lr_factor(self, step):
        return self.factor if step < self.total_iters else 1.0


# -- Hugging Face transformers' schedules ------------------------------------------------------
# Module-level functions bound with functools.partial (as transformers does), so the
# schedule is a plain, inspectable function of the step.

def _constant_lambda(current_step):
    return 1.0


def _constant_with_warmup_lambda(current_step, *, num_warmup_steps):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1.0, num_warmup_steps))
    return 1.0


def _linear_with_warmup_lambda(current_step, *, num_warmup_steps, num_training_steps):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    return max(0.0, float(num_training_steps - current_step)
               / float(max(1, num_training_steps - num_warmup_steps)))


def _cosine_with_warmup_lambda(current_step, *, num_warmup_steps, num_training_steps,
                               num_cycles):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps
                                                                  - num_warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def _cosine_with_min_lr_lambda(current_step, *, num_warmup_steps, num_training_steps,
                               num_cycles, min_lr_rate):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps
                                                                  - num_warmup_steps))
    factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return factor * (1.0 - min_lr_rate) + min_lr_rate


def get_constant_schedule(optimizer, last_epoch=-1):
    """Constant learning rate: ``factor(s) = 1``."""
    return LambdaLR(optimizer, _constant_lambda, last_epoch=last_epoch)


def get_constant_schedule_with_warmup(optimizer, num_warmup_steps, last_epoch=-1):
    """Linear warmup from 0, then constant: ``factor(s) = s / W`` for ``s < W``, else 1."""
    w = _check_int("num_warmup_steps", num_warmup_steps)
    return LambdaLR(optimizer, functools.partial(_constant_with_warmup_lambda,
                                                 num_warmup_steps=w), last_epoch=last_epoch)


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps,
                                    last_epoch=-1):
    """Linear warmup from 0 to the initial lr over W steps, then linear decay to 0 at step T.

    ``factor(s) = s / W`` for ``s < W``, else ``max(0, (T - s) / (T - W))``.
    """
    w = _check_int("num_warmup_steps", num_warmup_steps)
    t = _check_int("num_training_steps", num_training_steps)
    return LambdaLR(optimizer, functools.partial(_linear_with_warmup_lambda, num_warmup_steps=w,
                                                 num_training_steps=t), last_epoch=last_epoch)


def get_cosine_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps,
                                    num_cycles=0.5, last_epoch=-1):
    """Linear warmup, then cosine decay (half a period by default: from 1 down to 0 at step T).

    ``factor(s) = s / W`` for ``s < W``; otherwise with ``p = (s - W) / (T - W)``:
    ``factor(s) = max(0, ½ (1 + cos(π · num_cycles · 2 · p)))``.
    """
    w = _check_int("num_warmup_steps", num_warmup_steps)
    t = _check_int("num_training_steps", num_training_steps)
    num_cycles = check_number(num_cycles, "num_cycles", low=0)
    return LambdaLR(optimizer, functools.partial(_cosine_with_warmup_lambda, num_warmup_steps=w,
                                                 num_training_steps=t,
                                                 num_cycles=float(num_cycles)),
                    last_epoch=last_epoch)


def get_cosine_with_min_lr_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps,
                                                num_cycles=0.5, min_lr_rate=None, min_lr=None,
                                                last_epoch=-1):
    """Linear warmup, then cosine decay from the initial lr down to a floor (nanoGPT's
    schedule: ``min_lr = lr / 10``). Give the floor as ``min_lr_rate`` (a fraction of the
    initial lr) or ``min_lr`` (absolute; every group must then share one initial lr).

    ``factor(s) = s / W`` for ``s < W``; otherwise with ``p = (s - W) / (T - W)``:
    ``factor(s) = ½ (1 + cos(π · num_cycles · 2 · p)) · (1 - r) + r`` with ``r = min_lr_rate``.
    """
    w = _check_int("num_warmup_steps", num_warmup_steps)
    t = _check_int("num_training_steps", num_training_steps)
    if (min_lr_rate is None) == (min_lr is None):
        raise ValueError("cosine_with_min_lr needs exactly one of min_lr_rate (a fraction of the "
                         "initial lr) and min_lr (an absolute lr)")
    if min_lr is not None:
        lrs = {g.get("initial_lr", g["lr"]) for g in optimizer.param_groups}
        if len(lrs) != 1 or not next(iter(lrs)) > 0:
            raise ValueError(f"min_lr needs one positive initial lr shared by all parameter "
                             f"groups (got {sorted(lrs)}); give min_lr_rate instead")
        min_lr_rate = float(min_lr) / next(iter(lrs))
    min_lr_rate = check_number(min_lr_rate, "min_lr_rate", low=0, high=1)
    return LambdaLR(optimizer, functools.partial(_cosine_with_min_lr_lambda, num_warmup_steps=w,
                                                 num_training_steps=t,
                                                 num_cycles=float(num_cycles),
                                                 min_lr_rate=float(min_lr_rate)),
                    last_epoch=last_epoch)


SCHEDULER_NAMES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_min_lr",
                   "step")


def get_scheduler(name, optimizer, num_warmup_steps=0, num_training_steps=None,
                  scheduler_specific_kwargs=None):
    """A schedule by its Hugging Face name (``TrainingArguments.lr_scheduler_type``).

    ``"constant"``, ``"constant_with_warmup"`` (needs ``num_warmup_steps``), ``"linear"``
    and ``"cosine"`` (need ``num_training_steps``; ``scheduler_specific_kwargs`` may give
    ``num_cycles``), ``"cosine_with_min_lr"`` (``scheduler_specific_kwargs`` gives
    ``min_lr_rate`` or ``min_lr``), and ``"step"`` (:class:`StepLR`; ``scheduler_specific_kwargs`` gives
    ``step_size`` and optionally ``gamma``).
    """
    name = getattr(name, "value", name)          # accept enum members, as transformers does
    kwargs = dict(scheduler_specific_kwargs or {})
    if name not in SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {list(SCHEDULER_NAMES)}")
    if num_warmup_steps is None:
        num_warmup_steps = 0
    if name in ("constant", "step") and num_warmup_steps:
        hint = "'constant_with_warmup'" if name == "constant" else "'linear' or 'cosine'"
        raise ValueError(f"scheduler {name!r} has no warmup, but num_warmup_steps="
                         f"{num_warmup_steps} was given; use {hint} for a warmup")
    if name == "constant":
        if kwargs:
            raise ValueError(f"scheduler 'constant' takes no scheduler_specific_kwargs, "
                             f"got {sorted(kwargs)}")
        return get_constant_schedule(optimizer)
    if name == "step":
        if "step_size" not in kwargs:
            raise ValueError("scheduler 'step' requires scheduler_specific_kwargs="
                             "{'step_size': n} (and optionally 'gamma')")
        return StepLR(optimizer, **kwargs)
    if name == "constant_with_warmup":
        return get_constant_schedule_with_warmup(optimizer, num_warmup_steps, **kwargs)
    if num_training_steps is None:
        raise ValueError(f"{name} requires `num_training_steps`, please provide that argument.")
    if name == "linear":
        return get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps,
                                               **kwargs)
    if name == "cosine_with_min_lr":
        return get_cosine_with_min_lr_schedule_with_warmup(optimizer, num_warmup_steps,
                                                           num_training_steps, **kwargs)
    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps,
                                           **kwargs)
