"""A small Hugging-Face-style Trainer: the training loop, evaluation, checkpoints, resume.

    from minillm.training import Trainer, TrainingArguments
    args = TrainingArguments("out", max_steps=200, per_device_train_batch_size=12,
                             learning_rate=1e-3, warmup_steps=20, lr_scheduler_type="cosine",
                             weight_decay=0.1, eval_steps=50, save_steps=50, logging_steps=10)
    trainer = Trainer(model, args, train_dataset=train, eval_dataset=val)
    trainer.train()                              # trainer.train(resume_from_checkpoint=True)
    trainer.evaluate()                           # {"eval_loss": ..., "eval_perplexity": ...}

**The batch contract.** The datasets yield examples that the ``data_collator`` (default:
:func:`minillm.data.default_collate`) turns into a batch. The default loss calls
``model(**batch)`` for a dict batch (its keys must be arguments of the model's ``forward``,
e.g. ``{"ids": x, "targets": y}`` for GPT, ``{"input_ids": ..., "labels": ...}`` for BERT) and
``model(*batch)`` for a tuple batch (e.g. ``(x, y)`` windows for GPT/LSTMLM). The model must
return its loss: a 0-d Tensor, an object with ``.loss``, or a tuple whose last item is the
loss (``(logits, loss)``). Anything else: pass ``compute_loss(model, batch) -> loss``.
Tokens per second are counted from ``input_ids`` / ``ids`` / ``x`` (or the first item of a
tuple batch) when present.

**One step** is one optimizer update: ``gradient_accumulation_steps`` micro-batches, each loss
divided by the number of micro-batches of the step, ``backward``, gradient clipping to
``max_grad_norm``, ``optimizer.step()``, ``scheduler.step()``. An epoch whose batch count is not
a multiple of the accumulation ends with a shorter step.

**Resume.** A checkpoint stores the model, optimizer, scheduler, random generators and the data
position (epoch and micro-batch index within it). The DataLoader's order depends only on
``(seed, epoch)``, so the resumed run skips the consumed batches without loading them and, on
CPU, ends with bit-identical parameters to an uninterrupted run.

**Mixed precision** (``fp16=True``): the float32 model is wrapped by a
:class:`~minillm.training.amp.MixedPrecision` when training starts (after the optimizer is
made): the model computes in float16, the optimizer steps float32 master weights, and the
loss is scaled dynamically (:class:`~minillm.training.amp.GradScaler`, PyTorch's defaults).
A step whose gradients overflowed is skipped, and so is the scheduler's step then (as in
Hugging Face). The log entries gain ``loss_scale`` and ``skipped_steps`` (so far);
checkpoints hold the float32 masters (``model.npz``) and the scaler state (``scaler.json``),
so resume stays exact. After training, ``trainer.mixed_precision.state_dict()`` gives the
float32 weights. bfloat16 (``bf16=True``) is not available: NumPy and CuPy lack the dtype.

**Data parallel** (``data_parallel``, :mod:`minillm.distributed`): launched as
``mpiexec -n W python train.py``, every process (rank) holds the whole model. All ranks draw
the same shuffled order (seeded by ``seed``); each global batch of ``W *
per_device_train_batch_size`` examples is cut into ``W`` consecutive shards, rank ``r``
computes the loss and gradients of shard ``r``, and the gradients are averaged over the
ranks (weighted by shard size, so a short last batch counts each example once) after
``backward`` and before clipping: clipping and the optimizer see the gradient of the global
batch, and the ranks take identical steps.
With a loss that is a mean over examples, W ranks with batch b reproduce one process with
batch ``W*b`` (to rounding). Rank 0's weights are broadcast when training starts. Logged
losses and token counts are those of the global batch. Evaluation runs on every rank over
the whole eval set (the weights are identical, so are the metrics, and any
``compute_metrics`` works unchanged; it costs W-fold evaluation compute). Only rank 0 writes
checkpoints, the history and shows the progress bar; on resume every rank loads the same
checkpoint (``output_dir`` must be on a file system all ranks see). Dropout noise on rank
``r`` at step ``t`` is drawn from the seed ``(seed, r, t)``, so shards get independent noise
and resume stays exact.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import numbers
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .. import backend, distributed
from .._fileio import atomic_write_text
from ..autograd import Tensor, no_grad
from ..data import DataLoader, default_collate
from ..optim import AdamW, clip_grad_norm_, get_scheduler
from ..optim.lr_scheduler import SCHEDULER_NAMES
from .amp import BFLOAT16_UNAVAILABLE, GradScaler, MixedPrecision
from .checkpoint import CHECKPOINT_PREFIX, CheckpointManager, load_checkpoint

__all__ = ["TrainingArguments", "Trainer", "TrainerState", "TrainerCallback",
           "EarlyStoppingCallback", "default_compute_loss", "TrainingDivergedError"]

_LM_TYPES = ("gpt", "lstm_lm", "ffnn_lm", "ngram", "seq2seq", "bert-for-masked-lm")
_TOKEN_KEYS = ("input_ids", "ids", "x")


class TrainingDivergedError(FloatingPointError):
    """Training produced a loss, a gradient norm or weights that are not finite (NaN or
    infinite): the run stopped at that step, before the update; its checkpoints (all saved
    from finite weights) are kept."""


def _is_int(v, low=None):
    return (not isinstance(v, bool) and isinstance(v, numbers.Integral)
            and (low is None or v >= low))


def _is_real(v):
    return not isinstance(v, bool) and isinstance(v, numbers.Real) and not math.isnan(v)


@dataclasses.dataclass
class TrainingArguments:
    """The knobs of :class:`Trainer`, with Hugging Face ``transformers``' names and meanings.

    Training length: ``max_steps`` (> 0) wins over ``num_train_epochs`` (may be fractional).
    ``warmup_steps`` (> 0) wins over ``warmup_ratio`` (a fraction of the total steps).
    ``weight_decay`` applies to matrices only (parameters with ``ndim >= 2``), never to biases
    and norm weights. ``eval_steps``/``save_steps``/``logging_steps`` are in optimizer steps
    (``None`` turns periodic evaluation/saving off); a final checkpoint is always written.
    ``save_total_limit`` keeps the last N checkpoints plus the best by
    ``metric_for_best_model``. ``early_stopping_patience``: stop after that many evaluations
    without improvement (needs ``eval_steps`` and an eval dataset). ``load_best_model_at_end``:
    after training, load the weights of the checkpoint with the best ``metric_for_best_model``
    (``save_steps`` must then be a multiple of ``eval_steps``, so every evaluation that
    could be the best has its checkpoint). ``group_by_length``: batches of training examples
    of similar length (the length of each example's first field, e.g. ``input_ids``), for
    less padding. ``fp16``: mixed precision
    (float16 compute, float32 master weights, dynamic loss scaling; needs a float32 model).
    ``bf16`` exists for Hugging Face compatibility only: ``True`` raises (no bfloat16 dtype in
    NumPy/CuPy).
    ``data_parallel``: ``"mpi"`` or ``"nccl"`` trains data-parallel over the processes that
    ``mpiexec`` started (see the module docstring); ``"auto"`` (default) means ``"mpi"`` when
    the process was launched by ``mpiexec`` with more than one process, else off; ``None``:
    off (each process trains on its own).
    """

    output_dir: str
    num_train_epochs: float = 3.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    learning_rate: float = 5e-5
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    lr_scheduler_type: str = "linear"
    lr_scheduler_kwargs: dict | None = None
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0
    gradient_accumulation_steps: int = 1
    eval_steps: int | None = None
    save_steps: int | None = 500
    logging_steps: int = 500
    save_total_limit: int | None = None
    seed: int = 42
    early_stopping_patience: int | None = None
    metric_for_best_model: str = "eval_loss"
    greater_is_better: bool = False
    load_best_model_at_end: bool = False
    group_by_length: bool = False
    dataloader_drop_last: bool = False
    device: str | None = None
    disable_tqdm: bool = False
    fp16: bool = False
    bf16: bool = False
    data_parallel: str | None = "auto"

    def __post_init__(self):
        def bad(name, want):
            raise ValueError(f"TrainingArguments: {name} must be {want}, got "
                             f"{getattr(self, name)!r}")

        if not isinstance(self.output_dir, (str, os.PathLike)) or not str(self.output_dir):
            bad("output_dir", "a non-empty path")
        if not _is_int(self.max_steps) or (self.max_steps < 1 and self.max_steps != -1):
            bad("max_steps", "an int >= 1, or -1 to train for num_train_epochs")
        if self.max_steps == -1 and not (_is_real(self.num_train_epochs)
                                         and self.num_train_epochs > 0):
            bad("num_train_epochs", "a number > 0 (or set max_steps)")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "logging_steps"):
            if not _is_int(getattr(self, name), 1):
                bad(name, "an int >= 1")
        for name in ("eval_steps", "save_steps", "save_total_limit", "early_stopping_patience"):
            v = getattr(self, name)
            if v is not None and not _is_int(v, 1):
                bad(name, "None or an int >= 1")
        if not _is_real(self.learning_rate) or self.learning_rate < 0:
            bad("learning_rate", "a number >= 0")
        if not _is_int(self.warmup_steps, 0):
            bad("warmup_steps", "an int >= 0")
        if not _is_real(self.warmup_ratio) or not 0 <= self.warmup_ratio < 1:
            bad("warmup_ratio", "a number in [0, 1)")
        if self.lr_scheduler_type not in SCHEDULER_NAMES:
            bad("lr_scheduler_type", f"one of {list(SCHEDULER_NAMES)}")
        if self.lr_scheduler_kwargs is not None and not isinstance(self.lr_scheduler_kwargs, dict):
            bad("lr_scheduler_kwargs", "None or a dict such as {'min_lr_rate': 0.1}")
        if not _is_real(self.weight_decay) or self.weight_decay < 0:
            bad("weight_decay", "a number >= 0")
        for name in ("adam_beta1", "adam_beta2"):
            v = getattr(self, name)
            if not _is_real(v) or not 0 <= v < 1:
                bad(name, "a number in [0, 1)")
        if not _is_real(self.adam_epsilon) or self.adam_epsilon <= 0:
            bad("adam_epsilon", "a number > 0")
        if self.max_grad_norm is not None and (not _is_real(self.max_grad_norm)
                                               or self.max_grad_norm <= 0):
            bad("max_grad_norm", "None (no clipping) or a number > 0")
        if not _is_int(self.seed, 0):
            bad("seed", "an int >= 0")
        if self.early_stopping_patience is not None and self.eval_steps is None:
            raise ValueError("TrainingArguments: early_stopping_patience needs evaluations; "
                             "set eval_steps too")
        self._check_best_model_args()
        if not isinstance(self.metric_for_best_model, str) or not self.metric_for_best_model:
            bad("metric_for_best_model", "a metric name such as 'eval_loss'")
        if self.device is not None:
            backend.device(self.device)              # raises a clear DeviceError
        for name in ("fp16", "bf16"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "True or False")
        if self.bf16:
            raise ValueError(f"TrainingArguments: bf16=True: {BFLOAT16_UNAVAILABLE}")
        if self.data_parallel not in (None, "auto", *distributed.BACKENDS):
            bad("data_parallel", f"None, 'auto' or one of {list(distributed.BACKENDS)}")
        self.output_dir = str(self.output_dir)

    def _check_best_model_args(self):
        if self.load_best_model_at_end and (self.eval_steps is None or self.save_steps is None
                                            or self.save_steps % self.eval_steps):
            raise ValueError(f"TrainingArguments: load_best_model_at_end needs evaluations and a "
                             f"checkpoint at each: save_steps ({self.save_steps}) must be a "
                             f"multiple of eval_steps ({self.eval_steps})")

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainerState:
    """Where training stands; saved in every checkpoint's ``trainer_state.json``.

    ``epoch`` is the current epoch, ``batch_in_epoch`` the number of micro-batches of it already
    consumed. ``should_stop`` is not saved: a callback sets it to end training after the step.
    """

    global_step: int = 0
    max_steps: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    loaded_best_step: int | None = None
    patience_counter: int = 0
    log_loss_sum: float = 0.0
    log_loss_count: int = 0
    last_eval: dict | None = None
    history: list = dataclasses.field(default_factory=list)
    should_stop: bool = False

    _NOT_SAVED = ("should_stop",)

    def to_dict(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in self._NOT_SAVED}

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names and k not in cls._NOT_SAVED})


class TrainerCallback:
    """Hooks into the loop; override the ones you need. Set ``state.should_stop = True`` to end
    training after the current step. ``trainer`` gives access to model, optimizer, args."""

    def on_train_begin(self, trainer, state):
        pass

    def on_step_end(self, trainer, state, logs=None):
        pass

    def on_evaluate(self, trainer, state, metrics):
        pass

    def on_save(self, trainer, state, path):
        pass

    def on_train_end(self, trainer, state):
        pass


class EarlyStoppingCallback(TrainerCallback):
    """Stop when ``metric`` has not improved for ``patience`` evaluations in a row.

    The counter lives in ``state.patience_counter`` so it survives a resume.
    """

    def __init__(self, patience, metric="eval_loss", greater_is_better=False, threshold=0.0):
        self.patience, self.metric = patience, metric
        self.greater_is_better, self.threshold = greater_is_better, threshold

    def on_evaluate(self, trainer, state, metrics):
        value = metrics.get(self.metric)
        if value is None:
            raise KeyError(f"EarlyStoppingCallback: metric {self.metric!r} is not among the "
                           f"evaluation metrics {sorted(metrics)}")
        best = state.best_metric
        improved = best is None or (value > best + self.threshold if self.greater_is_better
                                    else value < best - self.threshold)
        if improved:
            state.patience_counter = 0
        else:
            state.patience_counter += 1
            if state.patience_counter >= self.patience:
                state.should_stop = True


def _count_tokens(batch):
    if isinstance(batch, dict):
        t = next((batch[k] for k in _TOKEN_KEYS if k in batch), None)
    elif isinstance(batch, (tuple, list)) and batch:
        t = batch[0]
    else:
        t = batch
    return int(np.prod(t.shape)) if isinstance(t, Tensor) and t.dtype.kind in "iu" else 0


def _extract_loss(out):
    loss = getattr(out, "loss", None)
    if loss is None and isinstance(out, Tensor) and out.ndim == 0:
        loss = out
    if loss is None and isinstance(out, (tuple, list)) and out:
        loss = out[-1]
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        raise TypeError(
            "Trainer: the model did not return a loss (got "
            f"{type(out).__name__}). The default loss expects the model to return a 0-d loss "
            "Tensor, (logits, loss) or an object with .loss when called with the batch "
            "(dict -> model(**batch), tuple -> model(*batch)); include the targets/labels in "
            "the batch or pass compute_loss(model, batch) -> loss to the Trainer")
    return loss


def default_compute_loss(model, batch):
    """``model(**batch)`` (dict) or ``model(*batch)`` (tuple), then take the loss from the result."""
    if isinstance(batch, dict):
        out = model(**batch)
    elif isinstance(batch, (tuple, list)):
        out = model(*batch)
    else:
        raise TypeError(f"Trainer: a batch must be a dict or a tuple, got {type(batch).__name__}; "
                        "write a data_collator that returns one, or pass compute_loss")
    return _extract_loss(out)


class Trainer:
    """Train ``model`` on ``train_dataset`` with ``args`` (see the module docstring).

    ``optimizers=(optimizer, scheduler)`` replaces the default AdamW (decay on ``ndim >= 2``
    parameters only) and the ``args.lr_scheduler_type`` schedule. ``compute_metrics(model,
    eval_dataloader) -> dict`` adds metrics to :meth:`evaluate` (called in eval mode, without
    gradients; keys get the ``eval_`` prefix). ``callbacks`` are :class:`TrainerCallback`
    objects.
    """

    def __init__(self, model, args, train_dataset=None, eval_dataset=None, data_collator=None,
                 compute_loss=None, compute_metrics=None, callbacks=None,
                 optimizers=(None, None)):
        if not isinstance(args, TrainingArguments):
            raise TypeError(f"Trainer: args must be a TrainingArguments, got "
                            f"{type(args).__name__}")
        for name, ds in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            if ds is not None and not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
                raise TypeError(f"Trainer: {name} must support len() and [i] (a Dataset or a "
                                f"list of examples), got {type(ds).__name__}")
        if args.early_stopping_patience is not None and eval_dataset is None:
            raise ValueError("Trainer: early_stopping_patience needs an eval_dataset")
        self.model = model
        self.args = args
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.data_collator = data_collator if data_collator is not None else default_collate
        self.compute_loss = compute_loss if compute_loss is not None else default_compute_loss
        self.compute_metrics = compute_metrics
        self.callbacks = list(callbacks or [])
        if args.early_stopping_patience is not None:
            self.callbacks.append(EarlyStoppingCallback(args.early_stopping_patience,
                                                        args.metric_for_best_model,
                                                        args.greater_is_better))
        self.optimizer, self.lr_scheduler = optimizers
        self.mixed_precision = None              # made by train() when args.fp16
        if args.fp16:
            dtypes = sorted({str(p.dtype) for p in model.parameters()})
            if dtypes and dtypes != ["float32"]:
                raise ValueError(
                    f"Trainer: fp16=True needs a float32 model (mixed precision keeps float32 "
                    f"master weights and computes in float16), but the model's parameters are "
                    f"{', '.join(dtypes)}; convert it with model.float(), or train without fp16")
        self.state = TrainerState()
        self.output_dir = Path(args.output_dir)
        self._saved_now = set()                  # checkpoints written by the last train()
        self.checkpoints = CheckpointManager(args.output_dir, keep_last=args.save_total_limit,
                                             metric=args.metric_for_best_model,
                                             greater_is_better=args.greater_is_better)
        if args.device is not None:
            model.to(args.device)
        mode = args.data_parallel
        if mode == "auto":
            mode = "mpi" if distributed.launched_world_size() > 1 else None
        self.dist = distributed.init(mode) if mode is not None else None   # a Group or None
        self.is_main = self.dist is None or self.dist.is_main()

    # -- building blocks ---------------------------------------------------------------------
    @property
    def device(self):
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else backend.get_default_device()

    def get_train_dataloader(self):
        if self.train_dataset is None:
            raise ValueError("Trainer.train needs a train_dataset")
        lengths = None
        if self.args.group_by_length:
            lengths = [len(_first_field(self.train_dataset[i]))
                       for i in range(len(self.train_dataset))]
        return DataLoader(self.train_dataset, self.args.per_device_train_batch_size,
                          shuffle=True, seed=self.args.seed,
                          drop_last=self.args.dataloader_drop_last, collate_fn=self.data_collator,
                          lengths=lengths)

    def get_eval_dataloader(self, eval_dataset=None):
        ds = eval_dataset if eval_dataset is not None else self.eval_dataset
        if ds is None:
            raise ValueError("Trainer.evaluate needs an eval_dataset (given to the Trainer or "
                             "to evaluate())")
        return DataLoader(ds, self.args.per_device_eval_batch_size, shuffle=False,
                          collate_fn=self.data_collator)

    def create_optimizer(self):
        """AdamW with two groups: weight decay on matrices, none on biases/norm weights."""
        if self.optimizer is None:
            a = self.args
            params = [p for p in self.model.parameters() if p.requires_grad]
            decay = [p for p in params if p.ndim >= 2]
            no_decay = [p for p in params if p.ndim < 2]
            groups = [g for g in ({"params": decay, "weight_decay": a.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
            self.optimizer = AdamW(groups, lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2),
                                   eps=a.adam_epsilon, weight_decay=a.weight_decay)
        return self.optimizer

    def create_scheduler(self, num_training_steps):
        if self.lr_scheduler is None:
            a = self.args
            warmup = a.warmup_steps if a.warmup_steps > 0 else math.ceil(a.warmup_ratio
                                                                          * num_training_steps)
            self.lr_scheduler = get_scheduler(a.lr_scheduler_type, self.optimizer,
                                              num_warmup_steps=warmup,
                                              num_training_steps=num_training_steps,
                                              scheduler_specific_kwargs=a.lr_scheduler_kwargs)
        return self.lr_scheduler

    def create_mixed_precision(self):
        """With ``args.fp16``: wrap the model and the optimizer in a
        :class:`~minillm.training.amp.MixedPrecision` (once; call after create_optimizer)."""
        if self.args.fp16 and self.mixed_precision is None:
            self.mixed_precision = MixedPrecision(self.model, self.optimizer, GradScaler())
        mp = self.mixed_precision
        if mp is not None and (mp.model is not self.model or mp.optimizer is not self.optimizer):
            raise RuntimeError("Trainer: the model or optimizer was replaced after mixed "
                               "precision was set up; make a new Trainer")
        return mp

    def _call(self, hook, *args, **kwargs):
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, self.state, *args, **kwargs)

    # -- history -----------------------------------------------------------------------------
    def _log(self, entry):
        self.state.history.append(entry)
        self.save_history()

    def save_history(self):
        """Write ``history.json`` and ``history.csv`` into ``output_dir`` (atomically; on
        rank 0 only when data-parallel)."""
        if not self.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        history = self.state.history
        atomic_write_text(self.output_dir / "history.json",
                           json.dumps(history, indent=2, ensure_ascii=False))
        columns = []
        for entry in history:
            columns += [k for k in entry if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.output_dir / "history.csv", buf.getvalue())

    # -- evaluation --------------------------------------------------------------------------
    def _is_lm(self):
        flag = getattr(self.model, "is_language_model", None)
        return bool(flag) if flag is not None else \
            getattr(self.model, "model_type", None) in _LM_TYPES

    def evaluate(self, eval_dataset=None):
        """Mean eval loss (weighted by batch size), perplexity for language models, plus
        ``compute_metrics``. Logged to the history when called during training."""
        with backend.default_device_as(self.args.device):
            return self._evaluate(eval_dataset)

    def _evaluate(self, eval_dataset=None):
        loader = self.get_eval_dataloader(eval_dataset)
        was_training = self.model.training
        self.model.eval()
        total, count = None, 0
        try:
            with no_grad():
                for batch in loader:
                    loss = self.compute_loss(self.model, batch)
                    n = _batch_size(batch)
                    part = loss.detach() * float(n)
                    total = part if total is None else total + part
                    count += n
                extra = self.compute_metrics(self.model, loader) if self.compute_metrics else {}
        finally:
            self.model.train(was_training)
        eval_loss = total.item() / count
        metrics = {"eval_loss": eval_loss}
        if self._is_lm():
            metrics["eval_perplexity"] = math.exp(eval_loss) if eval_loss < 700 else math.inf
        for k, v in (extra or {}).items():
            metrics[k if k.startswith("eval_") else f"eval_{k}"] = v
        return metrics

    def _evaluate_during_training(self, epoch_progress):
        metrics = self.evaluate()
        s = self.state
        self._log({"step": s.global_step, "epoch": epoch_progress, **metrics})
        self._call("on_evaluate", metrics)       # early stopping compares with the old best
        name = self.args.metric_for_best_model
        value = metrics.get(name)
        if value is not None:
            better = s.best_metric is None or (value > s.best_metric if self.args.greater_is_better
                                               else value < s.best_metric)
            if better:
                s.best_metric, s.best_step = value, s.global_step
        s.last_eval = {"step": s.global_step, **metrics}
        return metrics

    # -- saving ------------------------------------------------------------------------------
    def _save(self):
        s = self.state
        metrics = None
        if s.last_eval is not None and s.last_eval.get("step") == s.global_step:
            metrics = {k: v for k, v in s.last_eval.items() if k != "step"}
        self._check_weights()
        if not self.is_main:                     # data parallel: rank 0 writes, others wait
            return None
        path = self.checkpoints.save(self.model, self.optimizer, self.lr_scheduler,
                                     trainer_state=s.to_dict(), metrics=metrics,
                                     step=s.global_step, mixed_precision=self.mixed_precision)
        self._saved_now.add(Path(path))
        self._call("on_save", path)
        return path

    # -- the loop ----------------------------------------------------------------------------
    def train(self, resume_from_checkpoint=None):
        """Train; ``resume_from_checkpoint``: ``True`` (the newest valid checkpoint in
        ``output_dir``) or a checkpoint path. Returns the :class:`TrainerState`.

        With ``args.device`` set, batches are created on that device (it is the default
        device while training runs)."""
        with backend.default_device_as(self.args.device):
            return self._train(resume_from_checkpoint)

    def _train(self, resume_from_checkpoint=None):
        """The loop, as nanoGPT's: for each epoch, for each (accumulated) batch, one
        training step; evaluation and checkpoints on their schedules; the best weights at
        the end when asked."""
        args = self.args
        self.model.train()
        loader = self.get_train_dataloader()
        n_batches, n_epochs, total_steps = self._plan(loader)
        self._sync_initial_weights()
        self.create_optimizer()
        self.create_scheduler(total_steps)
        mp = self.create_mixed_precision()
        s = self._start_state(resume_from_checkpoint, total_steps, mp)
        self._saved_now = set()                  # checkpoints this call wrote
        self._call("on_train_begin")
        bar = _Progress(total_steps, s, disable=args.disable_tqdm or not self.is_main)
        try:
            while s.epoch < n_epochs and s.global_step < total_steps and not s.should_stop:
                batches = self._epoch_batches(loader, s.epoch)
                while s.batch_in_epoch < len(batches) and s.global_step < total_steps:
                    self._train_step(loader, batches, mp, bar)
                    if s.should_stop:
                        break
                if s.batch_in_epoch >= len(batches):
                    s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            self._finish_training(n_batches)
        finally:
            bar.close()
        if args.load_best_model_at_end:
            self._load_best()
        self.save_history()
        self._call("on_train_end")
        return s

    def _world(self):
        """``(world size, rank)``: ``(1, 0)`` without data parallelism."""
        return (self.dist.world_size, self.dist.rank) if self.dist is not None else (1, 0)

    def _plan(self, loader):
        """``(batches per epoch, epochs, optimizer steps)`` of this run."""
        args = self.args
        world, _ = self._world()
        bs = loader.batch_size                   # per rank; a global batch has world * bs
        n_data = len(loader.dataset)
        n_batches = n_data // (world * bs) if loader.drop_last else -(-n_data // (world * bs))
        if n_batches == 0:
            raise ValueError(f"Trainer: the training set ({len(self.train_dataset)} examples) "
                             f"gives no batch of {args.per_device_train_batch_size}"
                             f"{f' x {world} ranks' if world > 1 else ''} "
                             "(dataloader_drop_last=True); use a smaller batch size")
        steps_per_epoch = -(-n_batches // args.gradient_accumulation_steps)
        if args.max_steps > 0:
            return n_batches, -(-args.max_steps // steps_per_epoch), args.max_steps
        total_steps = max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
        return n_batches, math.ceil(args.num_train_epochs), total_steps

    def _sync_initial_weights(self):
        if self.dist is not None:                # every rank starts from rank 0's weights
            self.dist.broadcast_([t for t in (*self.model.parameters(),
                                              *self.model.buffers()) if t.dtype.kind == "f"])

    def _start_state(self, resume_from_checkpoint, total_steps, mp):
        """A fresh :class:`TrainerState` (seeded), or the one of the checkpoint resumed from
        (its weights, optimizer, schedule and RNGs loaded)."""
        path = resume_from_checkpoint
        if path is None or path is False:
            backend.manual_seed(self.args.seed)
            self.state = TrainerState()
        else:
            ts = (self._resume_newest(mp) if path is True else
                  load_checkpoint(path, self.model, self.optimizer, self.lr_scheduler,
                                  mixed_precision=mp))
            self.state = TrainerState.from_dict(ts)
        self.state.max_steps, self.state.should_stop = total_steps, False
        return self.state

    def _resume_newest(self, mp):
        """The trainer state of the newest checkpoint that loads. One that fails for any
        reason -- damaged, unreadable, or not fitting this model (other shapes) -- is skipped
        with a warning naming it and the reason, and the one before it is tried (the weights
        load last, so a refused checkpoint leaves the model as it was)."""
        ts = self.checkpoints.load_newest(lambda path: load_checkpoint(
            path, self.model, self.optimizer, self.lr_scheduler, mixed_precision=mp))
        if ts is None:
            raise ValueError(f"Trainer.train(resume_from_checkpoint=True): no valid "
                             f"checkpoint in {self.output_dir}")
        return ts

    def _epoch_batches(self, loader, epoch):
        """The global batches of ``epoch``: lists of example indices, in the same order on
        every rank."""
        world, _ = self._world()
        gbs = world * loader.batch_size
        order = loader.order(epoch)
        stop = len(order) - len(order) % gbs if loader.drop_last else len(order)
        return [order[i:i + gbs] for i in range(0, stop, gbs)]

    def _train_step(self, loader, batches, mp, bar):
        """One optimizer step: forward and backward over the next (accumulated) batches,
        the update, then logging, evaluation and saving when they are due."""
        s, args = self.state, self.args
        group = batches[s.batch_in_epoch:s.batch_in_epoch + args.gradient_accumulation_steps]
        lr = self.optimizer.param_groups[0]["lr"]
        world, rank = self._world()
        if world > 1:                            # dropout noise of (rank, step): resume-exact
            backend.manual_seed(_rank_step_seed(args.seed, rank, s.global_step))
        loss, tokens = self._forward_backward(loader, group, mp)
        if mp is None and not math.isfinite(loss):   # (fp16's loss scaler skips such steps)
            self._diverged("the training loss", loss)
        grad_norm = self._optimizer_step(mp)
        s.batch_in_epoch += len(group)
        s.tokens_seen += tokens
        s.global_step += 1
        s.log_loss_sum += loss
        s.log_loss_count += 1
        epoch_progress = s.epoch + s.batch_in_epoch / len(batches)
        logs = self._step_logs(lr, epoch_progress, grad_norm, mp)
        bar.step(loss, lr, s.tokens_seen)
        self._call("on_step_end", logs=logs)
        if args.eval_steps is not None and self.eval_dataset is not None \
                and s.global_step % args.eval_steps == 0:
            self._evaluate_during_training(epoch_progress)
        if args.save_steps is not None and s.global_step % args.save_steps == 0:
            self._save()

    def _forward_backward(self, loader, group, mp):
        """Accumulate the gradients of the mean loss over ``group`` (global batches; this
        rank reads its shard of each): ``(mean loss, tokens)``, summed over the ranks."""
        world, rank = self._world()
        bs = loader.batch_size
        step_loss, tokens = None, 0
        for chunk in group:
            idx = chunk[rank * bs:(rank + 1) * bs]      # this rank's shard
            if len(idx) == 0:                    # a short last batch may leave a rank idle
                continue
            batch = loader.collate_fn([loader.dataset[int(i)] for i in idx])
            loss = self.compute_loss(self.model, batch)
            # shard weight n_r * W / N: the mean over ranks of weight * shard-mean loss is the
            # mean loss of the global batch (weight 1 for full ones)
            weight = len(idx) * world / len(chunk)
            if weight != 1.0:
                loss = loss * weight
            if mp is not None:
                mp.backward(loss / float(len(group)))   # scaled; fp32 accumulation
            else:
                (loss / float(len(group))).backward()
            d = loss.detach()
            step_loss = d if step_loss is None else step_loss + d
            tokens += _count_tokens(batch)
        loss_value = step_loss.item() / len(group) if step_loss is not None else 0.0
        if self.dist is not None:                # average the gradients before clipping
            self._allreduce_grads()
            loss_value, tokens = self.dist.allreduce_sum([loss_value, tokens])
            loss_value, tokens = loss_value / world, int(tokens)
        return loss_value, tokens

    def _optimizer_step(self, mp):
        """Clip, update, advance the schedule, clear the gradients: the gradient norm (or
        None without clipping)."""
        grad_norm = None
        if mp is not None:
            grad_norm = mp.step(max_grad_norm=self.args.max_grad_norm)
            stepped = not mp.last_step_skipped
        else:
            if self.args.max_grad_norm is not None:
                grad_norm = clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
                if not math.isfinite(grad_norm.item()):
                    self._diverged("the gradient norm", grad_norm.item())
            self.optimizer.step()
            stepped = True
        if stepped:                              # no schedule step for a skipped fp16 step
            self.lr_scheduler.step()
        self.optimizer.zero_grad()
        return grad_norm

    def _step_logs(self, lr, epoch_progress, grad_norm, mp):
        """The log record of this step when one is due (every ``logging_steps`` and at the
        last step: the mean loss since the last record), else None."""
        s = self.state
        if s.global_step % self.args.logging_steps and s.global_step != s.max_steps:
            return None
        logs = {"step": s.global_step, "epoch": epoch_progress,
                "loss": s.log_loss_sum / s.log_loss_count, "learning_rate": lr,
                "tokens_seen": s.tokens_seen}
        if grad_norm is not None:
            logs["grad_norm"] = grad_norm.item()
        if mp is not None:
            logs["loss_scale"] = mp.get_scale()
            logs["skipped_steps"] = mp.skipped_steps
        s.log_loss_sum, s.log_loss_count = 0.0, 0
        self._log(logs)
        return logs

    def _diverged(self, what, value, step=None):
        """Stop a run whose loss or gradients stopped being finite: clear the gradients,
        keep the history so far, raise :class:`TrainingDivergedError` naming the step and
        the last good checkpoint to go back to. A checkpoint this run just wrote of the
        weights that gave the non-finite loss or gradient is deleted, so that a resume
        starts from the one before."""
        self.optimizer.zero_grad()
        self.save_history()
        bad = self.output_dir / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        if step is None and bad in getattr(self, "_saved_now", ()) and self.is_main:
            shutil.rmtree(bad, ignore_errors=True)
        done = self.checkpoints.checkpoints()
        kept = (f"the last good checkpoint is {done[-1]}" if done
                else "no checkpoint had been saved yet")
        raise TrainingDivergedError(
            f"training diverged at step {step or self.state.global_step + 1}: {what} is {value}; "
            f"{kept}; lower the learning rate, add warmup or clip the gradients (max_grad_norm)")

    def _check_weights(self):
        """Refuse to checkpoint weights that are not finite (a diverged step)."""
        for name, p in self.model.named_parameters():
            if not bool(backend.to_host(p.xp.isfinite(p.data).all())):
                self._diverged(f"the weight {name}", "not finite", self.state.global_step)

    def _finish_training(self, n_batches):
        """A last evaluation and checkpoint unless the schedule just made them; on several
        ranks, wait until every file is written."""
        s, args = self.state, self.args
        if s.last_eval is None or s.last_eval.get("step") != s.global_step:
            if self.eval_dataset is not None and args.eval_steps is not None:
                self._evaluate_during_training(s.epoch + s.batch_in_epoch / n_batches)
        if args.save_steps is None or s.global_step % args.save_steps != 0:
            self._save()
        if self.dist is not None:                # the files are complete when train() returns
            self.dist.barrier()

    def _load_best(self):
        """Load the weights of this run's best evaluation (``load_best_model_at_end``) from
        its checkpoint; the optimizer and the RNGs stay as they are. Sets
        ``state.loaded_best_step``. (``state.best_step``, not the best checkpoint found in
        ``output_dir``, which could be another run's.)"""
        s = self.state
        s.loaded_best_step = s.best_step
        if s.best_step is not None and s.best_step != s.global_step:
            load_checkpoint(self.output_dir / f"{CHECKPOINT_PREFIX}{s.best_step}", self.model,
                            restore_rng=False)

    def _allreduce_grads(self):
        """Data parallel: average the gradients of the optimizer's parameters (the float32
        masters under fp16) over the ranks. A parameter without a gradient on this rank
        (an idle rank, an unused branch) counts as zero if another rank has one; one that
        has none anywhere keeps ``None`` (the optimizer then skips it everywhere)."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        has = self.dist.allreduce_sum([p.grad is not None for p in params])
        used = [p for p, h in zip(params, has) if h > 0]
        for p in used:
            if p.grad is None:
                p.grad = Tensor.wrap(p.xp.zeros_like(p.data), p._device)
        self.dist.allreduce_mean_([p.grad.data for p in used])
        for p in used:
            p.grad.mark_modified()


def _rank_step_seed(seed, rank, step):
    """A generator seed for (seed, rank, step): independent streams per rank and step."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def _first_field(example):
    """An example's first field (``input_ids`` of a dict, the first item of a tuple)."""
    if isinstance(example, dict):
        return next(iter(example.values()))
    return example[0] if isinstance(example, (tuple, list)) else example


def _batch_size(batch):
    first = next(iter(batch.values())) if isinstance(batch, dict) else \
        (batch[0] if isinstance(batch, (tuple, list)) else batch)
    return first.shape[0] if hasattr(first, "shape") and first.shape else len(first)


class _Progress:
    """The training progress bar: the step's loss, the learning rate and tokens per second
    since this run (or resume) started."""

    def __init__(self, total_steps, state, disable):
        self.bar = progress_bar(total_steps, "train", initial=state.global_step,
                                disable=disable)
        self.t0, self.tokens0 = time.perf_counter(), state.tokens_seen

    def step(self, loss, lr, tokens_seen):
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}",
                             tok_s=f"{(tokens_seen - self.tokens0) / elapsed:.0f}")

    def close(self):
        self.bar.close()


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def progress_bar(total, desc="train", initial=0, disable=False):
    """A tqdm bar (``tqdm.auto``), or a silent stand-in when ``disable``."""
    if disable:
        return _NoBar()
    from tqdm.auto import tqdm  # noqa: PLC0415 - only when a bar is wanted
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)
