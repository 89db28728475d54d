"""Optimizers, learning-rate schedules and gradient clipping.

    import minillm as mm
    opt = mm.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    sched = mm.optim.get_cosine_schedule_with_warmup(opt, num_warmup_steps=100,
                                                     num_training_steps=2000)
    loss.backward()
    mm.optim.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(); sched.step(); opt.zero_grad()

The update rules are PyTorch's (``torch.optim``), the schedule names and formulas those of
Hugging Face ``transformers``; the tests check both against independent references.
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .clip import clip_grad_norm_, clip_grad_value_
from .lr_scheduler import (ConstantLR, LambdaLR, LRScheduler, StepLR, get_constant_schedule,
                           get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                           get_cosine_with_min_lr_schedule_with_warmup,
                           get_linear_schedule_with_warmup, get_scheduler)
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "clip_grad_norm_", "clip_grad_value_",
           "lr_scheduler", "LRScheduler", "LambdaLR", "StepLR", "ConstantLR",
           "get_constant_schedule", "get_constant_schedule_with_warmup",
           "get_linear_schedule_with_warmup", "get_cosine_schedule_with_warmup",
           "get_cosine_with_min_lr_schedule_with_warmup", "get_scheduler"]
