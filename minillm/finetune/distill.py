"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
Neural Network"): train a small *student* to imitate a large *teacher*.

A trained teacher's softmax carries more than its argmax: that a "7" looks a bit like a "1"
and not at all like a "3" is visible in the small probabilities of the wrong classes (the
"dark knowledge"). A temperature ``T > 1`` softens both distributions so that those small
probabilities matter in the loss::

    p = softmax(v / T)          the teacher's soft targets (v: teacher logits, a constant)
    q = softmax(z / T)          the student's soft predictions (z: student logits)

    loss = alpha * T^2 * KL(p || q)  +  (1 - alpha) * CE(z, y)
         = alpha * T^2 * sum_c p_c (log p_c - log q_c)  +  (1 - alpha) * (-log softmax(z)_y)

averaged over the counted positions (examples, or tokens whose label is not
``ignore_index``). The KL term is the "soft" loss, the cross-entropy with the true labels
``y`` at temperature 1 the "hard" loss.

**Why T^2.** The gradient of the soft term with respect to a student logit is

    d KL(p || q) / d z_i = (q_i - p_i) / T.

For a temperature that is large compared with the logits (and logits of mean zero),
``softmax(x / T)_i ~ (1 + x_i / T) / C``, so ``q_i - p_i ~ (z_i - v_i) / (C T)`` and the
gradient is ``~ (z_i - v_i) / (C T^2)``: it shrinks like ``1 / T^2``. Multiplying the soft
term by ``T^2`` makes its gradient ``~ (z_i - v_i) / C`` whatever ``T`` is (in this limit
distillation *is* matching the logits with a squared error), so trying another temperature
does not silently re-weight the soft against the hard term: ``alpha`` keeps its meaning.

Three entry points:

* :func:`distillation_loss` -- the equation above, from differentiable ops (``log_softmax``,
  ``exp``, ``sum``, ``cross_entropy``); the teacher logits are detached.
* :class:`DistillationLoss` -- ``compute_loss(model, batch)`` for the
  :class:`~minillm.training.Trainer`: runs the teacher (eval mode, no gradients) and the
  student on the batch without its labels, and returns the distillation loss.
* :func:`distill` -- build that Trainer for a student and train it.
"""
from __future__ import annotations

import numbers
import weakref

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..backend import check
from ..nn import Module
from ..training import Trainer

__all__ = ["distillation_loss", "DistillationLoss", "distill", "IGNORE_INDEX"]

#: label value excluded from both terms (PyTorch's and the task heads' convention)
IGNORE_INDEX = -100
#: the label keys of the task heads' batches: classification / question answering
_QA_KEYS = ("start_positions", "end_positions")


def _check_hyper(temperature, alpha, who):
    for name, v in (("temperature", temperature), ("alpha", alpha)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != v:
            raise TypeError(f"{who}: {name} must be a real number, got {v!r}")
    if temperature <= 0:
        raise ValueError(f"{who}: temperature must be > 0 (1 = the plain softmax, 2-5 is usual "
                         f"for distillation), got {temperature}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"{who}: alpha (the weight of the soft, teacher term) must be in "
                         f"[0, 1], got {alpha}")
    return float(temperature), float(alpha)


def _check_labels(labels, logits, ignore_index):
    """Integer labels of shape ``logits.shape[:-1]`` on the logits' device, values in
    [0, C) or ``ignore_index`` (a value check that runs on the device, see backend.check)."""
    who = "distillation_loss"
    if not isinstance(labels, Tensor):
        raise TypeError(f"{who}: labels must be an integer Tensor of class indices (or None), "
                        f"got {type(labels).__name__}; wrap them with mm.tensor(...)")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{who}: labels must hold integer class indices, got {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"{who}: labels shape {labels.shape} must be the logits shape without "
                         f"the class axis, {logits.shape[:-1]} (logits {logits.shape})")
    if labels.device != logits.device:
        raise RuntimeError(f"{who}: logits on {logits.device}, labels on {labels.device}")
    c = logits.shape[-1]
    bad = ((labels < 0) | (labels >= c)) & (labels != ignore_index)

    def error():
        values = labels.numpy()[bad.numpy()]
        return ValueError(f"{who}: labels must be class ids in [0, {c}) or ignore_index="
                          f"{ignore_index}; found {values[:5].tolist()}")

    check(bad.data.any(), error)       # now on cpu, at the next sync on a GPU


def distillation_loss(student_logits, teacher_logits, labels=None, temperature=2.0, alpha=0.5,
                      ignore_index=IGNORE_INDEX):
    """``alpha * T^2 * KL(softmax(v/T) || softmax(z/T)) + (1 - alpha) * CE(z, labels)``.

    ``student_logits`` z and ``teacher_logits`` v: (N, C) (one prediction per example) or
    (B, L, C) (one per token), same shape, dtype and device. ``labels``: integer Tensor
    (N,) / (B, L); positions whose label is ``ignore_index`` (padding, sub-word
    continuations) are left out of BOTH terms. ``labels=None`` needs ``alpha=1`` (a purely
    soft loss) and then every position counts. The KL is summed over the classes and
    averaged over the counted positions (PyTorch's ``reduction="batchmean"`` per position);
    the cross-entropy is the usual mean over them. If every position is ignored the result
    is nan (as ``cross_entropy``).

    The teacher is a constant: its logits are detached, no gradient reaches it even if
    they require one. Returns a 0-d Tensor. See the module docstring for why the soft term
    is multiplied by ``T^2``.
    """
    who = "distillation_loss"
    T, alpha = _check_hyper(temperature, alpha, who)
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{who}: {name} must be a Tensor, got {type(x).__name__}")
        if x.dtype.kind != "f":
            raise TypeError(f"{who}: {name} must be floating point, got {x.dtype}")
    z, v = student_logits, teacher_logits
    if z.ndim not in (2, 3):
        raise ValueError(f"{who}: logits must be (N, C) or (B, L, C), got student_logits of "
                         f"shape {z.shape}")
    if v.shape != z.shape:
        raise ValueError(f"{who}: student_logits {z.shape} and teacher_logits {v.shape} must "
                         "have the same shape (same examples/tokens and the same classes)")
    if v.device != z.device:
        raise RuntimeError(f"{who}: student_logits on {z.device}, teacher_logits on {v.device}; "
                           "run both models on one device")
    if v.dtype != z.dtype:
        raise TypeError(f"{who}: student_logits are {z.dtype}, teacher_logits {v.dtype}; "
                        "convert one with .astype()")
    if labels is None and alpha < 1:
        raise ValueError(f"{who}: labels=None leaves only the soft term, so alpha must be 1 "
                         f"(got alpha={alpha}); pass labels for the hard cross-entropy term")
    if labels is not None:
        _check_labels(labels, z, ignore_index)

    loss = None
    if alpha > 0:                                   # the soft term
        v = v.detach()                              # the teacher is a constant
        log_p = F.log_softmax(v / T, axis=-1)       # teacher, softened
        log_q = F.log_softmax(z / T, axis=-1)       # student, softened
        kl = (log_p.exp() * (log_p - log_q)).sum(axis=-1)        # KL(p || q) per position
        if labels is None:
            kl = kl.mean()
        else:
            counted = labels != ignore_index
            kl = kl.masked_fill(~counted, 0.0).sum() / counted.sum().astype(kl.dtype)
        loss = (alpha * T * T) * kl
    if alpha < 1:                                   # the hard term, at temperature 1
        ce = F.cross_entropy(z, labels, ignore_index=ignore_index)
        loss = (1 - alpha) * ce if loss is None else loss + (1 - alpha) * ce
    return loss


def _logits_of(out, who, role):
    """The logits a model returned: a tuple of Tensors ((logits,) or (start, end))."""
    if isinstance(out, Tensor):
        return (out,)
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return (logits,)
    start, end = getattr(out, "start_logits", None), getattr(out, "end_logits", None)
    if isinstance(start, Tensor) and isinstance(end, Tensor):
        return (start, end)
    if isinstance(out, (tuple, list)) and out and all(isinstance(o, Tensor) for o in out) \
            and len(out) <= 2:
        return tuple(out)
    raise TypeError(f"{who}: the {role} returned {type(out).__name__}; distillation needs "
                    "logits (a Tensor, an object with .logits, or (start_logits, end_logits) "
                    "for question answering) when called on the batch without labels")


class DistillationLoss:
    """``compute_loss(model, batch)`` for the :class:`~minillm.training.Trainer`: distil
    ``teacher`` into the model being trained (the student).

    ``batch`` is a dict of the task heads' keyword arguments (``input_ids``,
    ``attention_mask``, ``token_type_ids``, and the labels). Each call

    1. takes the labels out of the batch (``labels``; for question answering
       ``start_positions`` / ``end_positions``), so the student does not compute its own loss;
    2. runs the teacher in eval mode under ``no_grad`` on the rest (its previous
       train/eval mode is restored afterwards);
    3. runs the student on the same inputs and returns :func:`distillation_loss` of the two
       logits and the labels.

    Teacher and student may differ in size (layers, width) but must share the inputs (the
    same vocabulary) and the label space: the same number of classes, else a ValueError.
    The teacher's logits are cast to the student's dtype when they differ (e.g. a float32
    teacher and a float16 student under mixed precision).

    Sequence classification (logits (B, C)) and token classification (B, L, C) are
    supported, and so is extractive QA: the start and the end distributions (over the
    positions) are distilled separately and averaged, ``(loss(start) + loss(end)) / 2``,
    like the QA head's own loss. A batch without labels needs ``alpha=1``.

    During :meth:`Trainer.evaluate` the same objective is computed, so ``eval_loss`` is the
    distillation loss; add ``compute_metrics`` for accuracy.
    """

    def __init__(self, teacher, temperature=2.0, alpha=0.5):
        if not isinstance(teacher, Module):
            raise TypeError(f"DistillationLoss: teacher must be a minillm Module (a trained "
                            f"model), got {type(teacher).__name__}")
        self.temperature, self.alpha = _check_hyper(temperature, alpha, "DistillationLoss")
        self.teacher = teacher
        self._checked = weakref.WeakSet()   # students already checked

    def _check_student(self, model):
        if model in self._checked:
            return
        if model is self.teacher:
            raise ValueError("DistillationLoss: the student is the teacher itself; distil into "
                             "a separate (smaller) model")
        shared = {id(p) for p in self.teacher.parameters()} & {id(p) for p in model.parameters()}
        if shared:
            raise ValueError(f"DistillationLoss: the student shares {len(shared)} parameter "
                             "tensors with the teacher, so training it would change the "
                             "teacher too; give the student its own weights (e.g. a copy)")
        counts = [getattr(getattr(m, "config", None), "num_labels", None)
                  for m in (self.teacher, model)]
        if None not in counts and counts[0] != counts[1]:
            raise ValueError(f"DistillationLoss: the teacher has num_labels={counts[0]}, the "
                             f"student num_labels={counts[1]}; distillation needs the same "
                             "label space")
        self._checked.add(model)

    def __call__(self, model, batch):
        who = "DistillationLoss"
        if not isinstance(batch, dict):
            raise TypeError(f"{who}: the batch must be a dict of the model's keyword arguments "
                            f"(input_ids, attention_mask, labels ...), got "
                            f"{type(batch).__name__}")
        self._check_student(model)
        qa = any(k in batch for k in _QA_KEYS)
        label_keys = _QA_KEYS if qa else ("labels",)
        if qa and not all(k in batch for k in _QA_KEYS):
            raise ValueError(f"{who}: a question-answering batch needs both start_positions "
                             "and end_positions")
        inputs = {k: v for k, v in batch.items() if k not in label_keys}
        targets = [batch.get(k) for k in label_keys]

        was_training = self.teacher.training
        self.teacher.eval()
        try:
            with no_grad():
                teacher_out = _logits_of(self.teacher(**inputs), who, "teacher")
        finally:
            self.teacher.train(was_training)
        student_out = _logits_of(model(**inputs), who, "student")

        if len(teacher_out) != len(student_out):
            raise ValueError(f"{who}: the teacher returned {len(teacher_out)} logits tensors, "
                             f"the student {len(student_out)}; both must be the same kind of "
                             "task model")
        if qa != (len(student_out) == 2) and (qa or targets[0] is not None):
            raise ValueError(f"{who}: question-answering models (returning start and end "
                             "logits) are labelled with start_positions/end_positions, the "
                             "other task models with labels; the batch and the models disagree")
        if not qa:
            targets = targets * len(student_out)       # (None, None): unlabelled QA batch
        losses = []
        for z, v, y in zip(student_out, teacher_out, targets):
            if z.shape[-1] != v.shape[-1]:
                raise ValueError(f"{who}: the teacher predicts {v.shape[-1]} classes, the "
                                 f"student {z.shape[-1]}; distillation needs the same label "
                                 "space (num_labels)")
            if v.dtype != z.dtype:
                v = v.astype(z.dtype)
            losses.append(distillation_loss(z, v, y, self.temperature, self.alpha))
        return losses[0] if len(losses) == 1 else (losses[0] + losses[1]) / 2

    def __repr__(self):
        return (f"DistillationLoss(teacher={type(self.teacher).__name__}, "
                f"temperature={self.temperature}, alpha={self.alpha})")


def distill(teacher, student, train_dataset, args, data_collator=None, temperature=2.0,
            alpha=0.5, **trainer_kwargs):
    """Train ``student`` to imitate ``teacher`` on ``train_dataset`` and return the trained
    :class:`~minillm.training.Trainer` (a thin wrapper)::

        trainer = distill(teacher, student, train, TrainingArguments("runs/kd", max_steps=500),
                          collator, temperature=2.0, alpha=0.5, eval_dataset=val)
        trainer.model                     # the student

    ``trainer_kwargs`` go to the Trainer (``eval_dataset``, ``compute_metrics``,
    ``callbacks``, ``optimizers``); the loss is :class:`DistillationLoss`, so
    ``compute_loss`` cannot be given. Only the student's parameters are optimized.
    """
    if "compute_loss" in trainer_kwargs:
        raise TypeError("distill: compute_loss is the DistillationLoss; call Trainer(..., "
                        "compute_loss=DistillationLoss(teacher, ...)) yourself to combine it "
                        "with something else")
    loss = DistillationLoss(teacher, temperature=temperature, alpha=alpha)
    loss._check_student(student)
    trainer = Trainer(student, args, train_dataset=train_dataset, data_collator=data_collator,
                      compute_loss=loss, **trainer_kwargs)
    trainer.train()
    return trainer
