"""Task recipes behind ``minillm pretrain``, ``finetune``, ``evaluate`` and ``generate``.

The tutorial's loop, one function per step, for three fine-tuning tasks on built-in
datasets or on your own files::

    data (load_task_data) -> features (encode_*) -> model (build_task_model)
        -> Trainer -> metrics (evaluate_features) -> run directory

* ``classification``: text -> label (TSV/CSV files, or e.g. ``chinese_reviews``, ``sst2``,
  ``clinc150``); accuracy and macro/weighted F1.
* ``ner``: words -> BIO tags (CoNLL files, or ``peoples_daily_ner``, ``wnut17``);
  entity-level precision/recall/F1 (conlleval semantics), decoded with a BIO-constrained
  Viterbi so a predicted ``I-X`` never follows ``O``.
* ``qa``: extractive question answering (SQuAD-format JSON, or ``cmrc2018``,
  ``squad_v1.1``); exact match and F1 (character-level for Chinese, as CMRC 2018 scores).

A fine-tuning run directory holds ``config.json`` (the settings and the command),
``tokenizer.json``, ``model/`` (the fine-tuned model: ``config.json``, ``model.npz``,
``tokenizer.json``, ``task.json``; load it with :func:`load_task_model`),
``checkpoint-N/`` (the Trainer's), ``history.json``/``history.csv``, ``loss.png``,
``metrics.json`` and, for classification, ``confusion_matrix.png``.

Without ``model`` a small model is trained from scratch (a 2-layer BERT-style encoder by
default; ``model_type="gpt"`` for a causal one) with a character tokenizer built from the
training texts. With ``model`` the body, and its ``tokenizer.json``, come from a minillm
model directory (e.g. ``runs/demo/pretrained``, written by ``minillm demo``/``pretrain``).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import time
import types
from pathlib import Path

import numpy as np

from .. import backend, baselines, datasets, distributed, metrics
from .._fileio import atomic_write_json
from ..optim.lr_scheduler import SCHEDULER_NAMES
from ..validation import check_int, check_number
from ..autograd import no_grad, tensor
from ..data import (BPETokenizer, CharTokenizer, Collator, MLMCollator, Tokenizer,
                   WordPieceTokenizer)
from .demo import _Windows, is_fast_env
from ..data.collators import (encode_words, postprocess_qa, prepare_qa_features,
                               token_classification_features)
from ..models import BERT, GPT, BertConfig, BertForMaskedLM, GPTConfig
from ..training import Trainer, TrainingArguments, plot_history

__all__ = ["TASKS", "FinetuneConfig", "PretrainConfig", "finetune", "pretrain", "evaluate",
           "load_task_data", "load_task_model", "sample_examples", "build_tokenizer", "encode_classification",
           "encode_ner", "encode_qa", "evaluate_features", "atomic_write_json", "is_fast_env",
           "TaskError"]

TASKS = ("classification", "ner", "qa", "instruct", "dpo", "grpo")
METHODS = ("full", "head-only", "freeze", "lora")
TOKENIZERS = ("auto", "char", "bpe", "wordpiece")
# what --pooling auto means for a task model: the mean of the real tokens, for BERT and GPT
# bodies alike (CLINC150 from scratch: in-scope accuracy 0.888 against 0.797 with [CLS]; a
# masked-LM BERT never trains its [CLS] vector as a summary; BENCHMARKS.md has the ablation)
POOLING_AUTO = "mean"
MAIN_METRIC = {"classification": "accuracy", "ner": "f1", "qa": "f1", "instruct": "exact_match",
               "dpo": "exact_match", "grpo": "exact_match"}
TASK_FILE = "task.json"
TOKENIZER_FILE = "tokenizer.json"
# special tokens every tokenizer built here carries ([CLS] q [SEP] c [SEP] for QA and BERT)
SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]",
            "bos": "<bos>", "eos": "<eos>"}
# a GPT's own: no [CLS]/[SEP]/[MASK], which it never trains on and would then sample; its
# fine-tuning inputs are <bos> text <eos> (QA: <bos> question <eos> context <eos>)
GPT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "bos": "<bos>", "eos": "<eos>"}


class TaskError(ValueError):
    """A task, dataset, file or model that does not fit the requested run."""


def _log(log, msg):
    if log is not None:
        log(msg)


# =============================================================================================
# configs
# =============================================================================================
@dataclasses.dataclass(frozen=True)
class Rule:
    """The valid values of one numeric option: an int or a finite number between ``low`` and
    ``high`` (``None``: no bound; ``low_open``/``high_open`` exclude the bound itself);
    ``optional``: ``None`` is valid too."""

    kind: str                                  # "int" or "number"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False


def _int(low=1, high=None, optional=False):
    return Rule("int", low, high, optional=optional)


def _num(low=None, high=None, low_open=False, high_open=False, optional=False):
    return Rule("number", low, high, low_open, high_open, optional)


SEED_MAX = 2**32 - 1                           # what every random generator accepts
LEARNING_RATE_RULE = _num(0, low_open=True)
FRACTION = _num(0, 1, high_open=True)          # dropout rates, warmup shares: [0, 1)
# option -> rule, checked when a config is made (before any file is read or written); the
# choices, the shares checked with their own words (mlm_probability, min_lr_ratio,
# validation_fraction, layer_lr_decay) and the rules that tie options together are in each
# __post_init__
PRETRAIN_RULES = {
    "extend_vocab": _int(0), "vocab_size": _int(1), "min_freq": _int(1),
    "n_layer": _int(1), "n_head": _int(1), "n_embd": _int(1), "block_size": _int(1),
    "dropout": FRACTION, "max_steps": _int(1), "batch_size": _int(1),
    "learning_rate": LEARNING_RATE_RULE, "warmup_steps": _int(0), "weight_decay": _num(0),
    "max_grad_norm": _num(0, low_open=True, optional=True),
    "eval_steps": _int(1), "eval_batches": _int(1), "save_steps": _int(1, optional=True),
    "save_total_limit": _int(1, optional=True), "sample_tokens": _int(0),
    "top_k": _int(1, optional=True), "seed": _int(0, SEED_MAX),
}
FINETUNE_RULES = {
    "max_train_examples": _int(1, optional=True), "max_eval_examples": _int(1, optional=True),
    "vocab_size": _int(1), "min_freq": _int(1), "n_layer": _int(1), "n_head": _int(1),
    "n_embd": _int(1), "max_length": _int(1, optional=True), "dropout": FRACTION,
    "freeze_layers": _int(0), "lora_r": _int(1),
    "lora_alpha": _num(0, low_open=True), "lora_dropout": FRACTION,
    "distill_temperature": _num(0, low_open=True), "distill_alpha": _num(0, 1),
    "augment": _int(0), "dpo_beta": _num(0, low_open=True), "dpo_nll_weight": _num(0),
    "dpo_positive": _num(0),
    "grpo_group": _int(1), "grpo_beta": _num(0), "doc_stride": _int(0),
    "max_query_length": _int(1), "max_answer_length": _int(1),
    "num_train_epochs": _num(0, low_open=True, optional=True),
    "max_steps": _int(1, optional=True), "batch_size": _int(1), "eval_batch_size": _int(1),
    "learning_rate": _num(0, low_open=True, optional=True), "weight_decay": _num(0),
    "warmup_ratio": FRACTION, "max_grad_norm": _num(0, low_open=True, optional=True),
    "eval_steps": _int(1, optional=True), "save_total_limit": _int(1, optional=True),
    "early_stopping_patience": _int(1, optional=True), "seed": _int(0, SEED_MAX),
}


def check_options(values, rules, error=TaskError, flag=str, say_none=True):
    """Each option of ``values`` (an object with those attributes, or a dict) against its
    :class:`Rule` in ``rules``; the first bad one raises ``error`` naming it as ``flag(name)``
    writes it: ``dropout must be a finite number in [0, 1), got 1.5`` (``say_none``: an
    optional one "must be none or ...")."""
    for name, rule in rules.items():
        value = values[name] if isinstance(values, dict) else getattr(values, name)
        if value is None and rule.optional:
            continue
        need = None
        if rule.optional and say_none:
            bound = _bounds_text(rule)
            need = f"none or {'an int' if rule.kind == 'int' else 'a finite number'} {bound}"
        try:
            if rule.kind == "int":
                check_int(value, flag(name), low=rule.low, high=rule.high, expected=need)
            else:
                check_number(value, flag(name), low=rule.low, high=rule.high, finite=True,
                             low_open=rule.low_open, high_open=rule.high_open, expected=need)
        except ValueError as e:
            raise error(str(e)) from None


def _bounds_text(rule):
    from ..validation import _bounds  # noqa: PLC0415
    return _bounds(rule.low, rule.high, rule.low_open, rule.high_open)


def check_files(cfg, names):
    """The input files named by the options ``names`` of ``cfg`` exist (checked before any
    work: a typo must not cost a run)."""
    for name in names:
        path = getattr(cfg, name)
        if path is not None and not Path(path).is_file():
            what = "is a directory, not a file" if Path(path).is_dir() else "no such file"
            raise FileNotFoundError(f"--{name} {path}: {what}")


def check_choices(cfg, choices):
    """Each option of ``cfg`` named in ``choices`` (name -> the valid values) is one of them."""
    for name, valid in choices.items():
        if getattr(cfg, name) not in valid:
            raise TaskError(f"{name} must be one of {', '.join(valid)}, got "
                            f"{getattr(cfg, name)!r}")


def check_model_size(cfg):
    """A model built from scratch: the heads split the width evenly, and a BPE vocabulary
    holds at least its special and byte tokens."""
    if cfg.n_embd % cfg.n_head:
        fits = [h for h in range(1, min(cfg.n_embd, 16) + 1) if cfg.n_embd % h == 0]
        raise TaskError(f"n_head ({cfg.n_head}) must divide n_embd ({cfg.n_embd}): each "
                        f"attention head gets n_embd / n_head dimensions; e.g. --n-head "
                        f"{', '.join(map(str, fits[-3:]))}")
    least = 256 + len(SPECIALS)
    if cfg.tokenizer == "bpe" and cfg.vocab_size < least:
        raise TaskError(f"vocab_size must be >= {least} with --tokenizer bpe (its "
                        f"{len(SPECIALS)} special tokens and 256 bytes), got {cfg.vocab_size}")


@dataclasses.dataclass
class FinetuneConfig:
    """Every knob of :func:`finetune` (the CLI flags have the same names, with dashes)."""

    task: str
    output_dir: str = "runs/finetune"
    # data: a built-in dataset, or files
    dataset: str | None = None
    dataset_options: str | None = None  # the loader's options, "n_per_task=1500,seed=1"
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    text_column: str = "text"          # TSV/CSV: a header name or a 0-based index ("0")
    label_column: str = "label"
    no_header: bool = False            # TSV/CSV without a header line (columns by index)
    token_column: int = 0              # CoNLL
    tag_column: int = -1
    validation_fraction: float = 0.1   # carved from train when no validation data is given
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    # model
    model: str | None = None           # a minillm model directory to start from
    model_type: str | None = None      # from scratch: "bert" or "gpt" (None: gpt for instruct,
    #                                    bert for the others)
    tokenizer: str = "auto"            # from scratch: auto | char | bpe | wordpiece
    vocab_size: int = 8000             # bpe/wordpiece: the most tokens learned
    min_freq: int = 1                  # char tokenizer: keep characters seen this often
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    max_length: int | None = None      # None: from the training texts' lengths
    pooling: str = "auto"
    dropout: float = 0.1
    # fine-tuning method (minillm.finetune)
    method: str = "full"               # full | head-only | freeze | lora
    freeze_layers: int = 1             # method "freeze": the embeddings + the first k blocks
    layer_lr_decay: float = 1.0        # < 1: the LR of block i is lr * decay^(L - i)
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str | None = None    # comma-separated Linear names; default: q, v (BERT),
    #                                    c_attn, c_proj (GPT)
    teacher: str | None = None         # a fine-tuned model directory to distil from
    distill_temperature: float = 2.0
    distill_alpha: float = 0.5         # weight of the soft (teacher) term
    augment: int = 0                   # classification: EDA copies per training example
    dpo_beta: float = 0.1              # dpo: the KL strength beta of the implicit reward
    dpo_nll_weight: float = 0.0        # dpo: + weight * NLL of the chosen answers (RPO)
    dpo_positive: float = 0.0          # dpo: DPO-Positive's lambda (chosen kept >= reference)
    grpo_group: int = 8                # grpo: answers sampled per prompt
    grpo_beta: float = 0.04            # grpo: weight of the KL penalty to the reference
    # QA windows
    doc_stride: int = 32
    max_query_length: int = 32
    max_answer_length: int = 30
    # training
    num_train_epochs: float | None = None  # None: from the training set's size
    max_steps: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float | None = None  # None: default_learning_rate(task, model), resolved
    #                                     when the config is made, so config.json records it
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    lr_scheduler_type: str = "linear"
    max_grad_norm: float = 1.0
    eval_steps: int | None = None      # None: once per epoch
    save_total_limit: int = 2
    early_stopping_patience: int | None = 3
    baseline: bool = True              # also fit and report the bag-of-n-grams baseline
    seed: int = 0
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        if self.task not in TASKS:
            raise TaskError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if (self.dataset is None) == (self.train is None):
            raise TaskError("give either a built-in dataset (--dataset NAME) or your own "
                            "training file (--train FILE), not both and not neither")
        if self.dataset_options is not None:
            dataset_kwargs(self)                  # a clear error now, before anything is read
        check_files(self, ("train", "validation", "test"))
        if self.dataset is not None and (self.validation or self.test):
            raise TaskError("--validation/--test files go with --train FILE; a built-in "
                            "dataset brings its own splits")
        if self.model_type is None:
            self.model_type = "gpt" if self.task in ("instruct", "dpo", "grpo") else "bert"
        if self.model_type not in ("bert", "gpt"):
            raise TaskError(f"model_type must be 'bert' or 'gpt', got {self.model_type!r}")
        if self.task in ("instruct", "dpo", "grpo"):
            self._check_instruct()
        if self.tokenizer not in TOKENIZERS and not _tokenizer_path(self.tokenizer):
            raise TaskError(f"tokenizer must be one of {', '.join(TOKENIZERS)} or an existing "
                            f"tokenizer.json (or a directory holding one), got "
                            f"{self.tokenizer!r}")
        if not 0 < self.validation_fraction < 1:
            raise TaskError(f"validation_fraction must be in (0, 1), got "
                            f"{self.validation_fraction}")
        check_options(self, FINETUNE_RULES)
        if self.method not in METHODS:
            raise TaskError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        check_choices(self, {"pooling": ("auto", "cls", "mean", "last"),
                             "lr_scheduler_type": SCHEDULER_NAMES})
        if self.model is None:
            check_model_size(self)
        if self.method == "freeze" and self.freeze_layers < 1:
            raise TaskError(f"--method freeze needs --freeze-layers >= 1, got "
                            f"{self.freeze_layers}")
        if not 0 < self.layer_lr_decay <= 1:
            raise TaskError(f"layer_lr_decay must be in (0, 1] (1 = off), got "
                            f"{self.layer_lr_decay}")
        if self.augment and self.task != "classification":
            raise TaskError("--augment (EDA) applies to classification texts only; "
                            f"drop it for --task {self.task}")
        if self.teacher is None and (self.distill_temperature, self.distill_alpha) != (2.0, 0.5):
            raise TaskError("--distill-temperature/--distill-alpha need --teacher DIR (the "
                            "fine-tuned model to distil from)")
        if self.learning_rate is None:
            self.learning_rate = default_learning_rate(self.task, self.model is not None)
        check_options(self, {"learning_rate": LEARNING_RATE_RULE})
        if self.device is not None:
            backend.device(self.device)       # a clear DeviceError now, not after loading data

    def _check_instruct(self):
        """What instruction tuning does not take (yet): said now, not ignored."""
        if self.model_type != "gpt":
            raise TaskError(f"--task {self.task} trains a GPT (a causal LM that answers); drop "
                            "--model-type bert")
        if self.task in ("dpo", "grpo") and self.model is None:
            raise TaskError(f"--task {self.task} starts from an instruction model: --model DIR "
                            "(the run directory of `minillm finetune --task instruct`)")
        if self.task == "grpo" and self.grpo_group < 2:
            raise TaskError(f"grpo_group must be >= 2 (advantages are relative to the group), "
                            f"got {self.grpo_group}")
        if not self.dpo_beta > 0:
            raise TaskError(f"dpo_beta must be > 0, got {self.dpo_beta}")
        if self.task != "dpo" and (self.dpo_beta, self.dpo_nll_weight,
                                   self.dpo_positive) != (0.1, 0.0, 0.0):
            raise TaskError("--dpo-beta/--dpo-nll-weight/--dpo-positive apply to --task dpo; "
                            "drop them")
        for name in ("dpo_nll_weight", "dpo_positive"):
            if getattr(self, name) < 0:
                raise TaskError(f"{name} must be >= 0, got {getattr(self, name)}")
        for flag, value, default in (("--method", self.method, "full"),
                                     ("--teacher", self.teacher, None),
                                     ("--pooling", self.pooling, "auto")):
            if value != default:
                raise TaskError(f"{flag} does not apply to --task {self.task} (full "
                                "fine-tuning of the GPT); drop it")

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PretrainConfig:
    """Every knob of :func:`pretrain`: a character (or BPE) GPT on a text corpus, or with
    ``model_type="bert"`` a BERT trained by masked-language modelling (``mlm_probability``
    of the tokens, 40% by default, with BERT's 80/10/10 corruption; BERT masked 15%, but a
    small model on a small budget learns about twice as fast from 40%: BENCHMARKS.md, "Pretraining
    that learns")."""

    output_dir: str = "runs/pretrain"
    dataset: str | None = "tinyshakespeare"  # one of TEXT_DATASETS
    train: str | None = None                 # your own UTF-8 text file instead
    validation: str | None = None            # default: the dataset's split / last 10% of train
    model: str | None = None                 # continue this pretrained GPT / BERT (masked LM)
    extend_vocab: int = 3                    # with model: add characters seen this often (0: no)
    model_type: str = "gpt"                  # "gpt" (next token) or "bert" (masked LM)
    mlm_probability: float = 0.4             # BERT: the share of tokens masked per window
    tokenizer: str = "char"                  # "char" or "bpe"
    vocab_size: int = 512                    # BPE only
    min_freq: int = 1
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    max_steps: int = 2000
    batch_size: int = 12
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1                # cosine decay ends at learning_rate * this
    warmup_steps: int = 100
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    eval_steps: int = 250
    eval_batches: int = 20
    save_steps: int | None = 500
    save_total_limit: int = 2
    prompt: str = "\n"
    sample_tokens: int = 200
    top_k: int | None = None
    seed: int = 1337
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        if (self.dataset is None) == (self.train is None):
            raise TaskError("give either a built-in text dataset (--dataset NAME) or your own "
                            "text file (--train FILE), not both and not neither")
        if self.dataset is not None and self.dataset not in TEXT_DATASETS:
            raise TaskError(f"pretrain reads a text corpus; dataset must be one of "
                            f"{', '.join(TEXT_DATASETS)}, got {self.dataset!r}")
        check_files(self, ("train", "validation"))
        if self.tokenizer not in ("char", "bpe"):
            raise TaskError(f"tokenizer must be 'char' or 'bpe', got {self.tokenizer!r}")
        if self.model_type not in ("gpt", "bert"):
            raise TaskError(f"model_type must be 'gpt' or 'bert', got {self.model_type!r}")
        if self.model is not None and not Path(self.model).is_dir():
            raise TaskError(f"--model {self.model}: no such model directory (continued "
                            "pretraining starts from the model/ folder of a pretrain run)")
        if self.model is not None:
            self._take_size_from_model()
        check_options(self, PRETRAIN_RULES)
        if self.model is None:
            check_model_size(self)
        if not 0 < self.min_lr_ratio <= 1:
            raise TaskError(f"min_lr_ratio must be in (0, 1], got {self.min_lr_ratio}")
        if not 0 < self.mlm_probability < 1:
            raise TaskError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.device is not None:
            backend.device(self.device)

    def _take_size_from_model(self):
        """With ``model``, the architecture is the saved model's: a size flag that differs from
        both its default and the model is an error; the recorded fields become the model's."""
        for name in ("tokenizer", "vocab_size", "min_freq"):
            if getattr(self, name) != PRETRAIN_DEFAULTS[name]:
                raise TaskError(f"--{name.replace('_', '-')} does not apply with --model "
                                f"{self.model}: continued pretraining keeps the model's own "
                                "tokenizer (--extend-vocab adds characters); drop the flag")
        saved = _saved_size(self.model)
        for name, value in saved.items():
            given, default = getattr(self, name), PRETRAIN_DEFAULTS[name]
            if given != default and given != value:
                raise TaskError(f"--{name.replace('_', '-')} {given} conflicts with --model "
                                f"{self.model}, a {saved['model_type']} with {name} = {value}: "
                                "continued pretraining keeps the model's architecture; drop "
                                "the flag")
            setattr(self, name, value)

    def to_dict(self):
        return dataclasses.asdict(self)


def _saved_size(model_dir):
    """``{model_type, n_layer, n_head, n_embd, dropout}`` of a saved GPT or masked-LM BERT (its
    config.json), in PretrainConfig's names; other models are refused later, on loading."""
    try:
        saved = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TaskError(f"--model {model_dir}: cannot read its config.json ({e})") from e
    if saved.get("model_type") == "gpt":
        return {"model_type": "gpt", "n_layer": saved["n_layer"], "n_head": saved["n_head"],
                "n_embd": saved["n_embd"], "dropout": saved["dropout"]}
    if saved.get("model_type") == "bert-for-masked-lm":
        return {"model_type": "bert", "n_layer": saved["num_hidden_layers"],
                "n_head": saved["num_attention_heads"], "n_embd": saved["hidden_size"],
                "dropout": saved["hidden_dropout_prob"]}
    return {}


PRETRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}


# =============================================================================================
# data
# =============================================================================================
TEXT_DATASETS = ("peoples_daily_text", "tinyshakespeare", "ptb", "english_mix", "chinese_mix")
VALIDATION_MLM_PROBABILITY = 0.15


def _column(spec, no_header):
    """A column given on the command line: a digit string is an index, else a header name."""
    if isinstance(spec, int):
        return spec
    spec = str(spec)
    if spec.lstrip("-").isdigit():
        return int(spec)
    if no_header:
        raise TaskError(f"column {spec!r} is a name but the file has no header (--no-header); "
                        "give a 0-based column index")
    return spec


def _load_file(path, task, cfg, label_names=None, log=print):
    """One user file for ``task``, by extension: .tsv/.txt, .csv; .conll/.bio/.txt; .json.
    A training file (``label_names`` None) needs two classes; repaired QA answer offsets
    are counted in the log."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {p}")
    ext = p.suffix.lower()
    if task == "classification":
        kw = dict(text_col=_column(cfg.text_column, cfg.no_header),
                  label_col=_column(cfg.label_column, cfg.no_header),
                  header=not cfg.no_header, label_names=label_names)
        if ext == ".csv":
            return _two_classes(datasets.load_csv(p, **kw), p, label_names, "label column")
        if ext in (".tsv", ".txt", ".tab"):
            return _two_classes(datasets.load_tsv(p, **kw), p, label_names, "label column")
        raise TaskError(f"{p}: a classification file is .tsv (tab-separated) or .csv, got "
                        f"{ext or 'no extension'}")
    if task == "ner":
        if ext == ".json":
            raise TaskError(f"{p}: an NER file is CoNLL text (one 'token tag' per line, a blank "
                            "line between sentences), not JSON")
        ds = datasets.load_conll(p, token_col=cfg.token_column, tag_col=cfg.tag_column,
                                 label_names=label_names)
        return _two_classes(ds, p, label_names, "tag column")
    if ext != ".json":
        raise TaskError(f"{p}: a QA file is SQuAD-format JSON (.json), got {ext or 'no extension'}")
    ds = datasets.load_squad(p)
    repaired, missing = datasets.qa.fix_answer_starts(ds.examples)
    if repaired or missing:
        _log(log, f"{p}: {repaired} answer_start values did not point at their answer and "
                  f"were moved to its nearest occurrence; {missing} answers do not occur in "
                  "their context")
    return ds


def _two_classes(ds, path, label_names, column):
    """``ds``, unless it is a training file (no ``label_names`` given) with fewer than two
    classes: a classifier of one class learns nothing and scores a perfect accuracy."""
    if label_names is None and len(ds.label_names) < 2:
        raise TaskError(f"{path}: the {column} holds {len(ds.label_names)} distinct value(s) "
                        f"{ds.label_names}; training needs examples of two classes at least")
    return ds


def _carve(ds, fraction, seed):
    """Split a Dataset into (train, validation): a seeded random ``fraction`` for
    validation; QA examples are kept together by context (whole paragraphs move)."""
    ex = ds.examples
    keys = [e.get("context", i) for i, e in enumerate(ex)]
    uniq = list(dict.fromkeys(keys))
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(fraction * len(uniq))))
    if n_val >= len(uniq):
        raise TaskError(f"{ds.name}: too few examples ({len(ex)}) to carve a validation set; "
                        "give a --validation file")
    val_keys = {uniq[i] for i in rng.permutation(len(uniq))[:n_val]}
    tr = [e for e, k in zip(ex, keys) if k not in val_keys]
    va = [e for e, k in zip(ex, keys) if k in val_keys]
    return (datasets.Dataset(tr, ds.label_names, ds.name, "train", ds.meta),
            datasets.Dataset(va, ds.label_names, ds.name, "validation", ds.meta))


def sample_examples(ds, n, seed=0):
    """``n`` examples of ``ds`` (all of it when ``n`` is None): a seeded random sample, kept
    in the split's order. What ``max_train_examples`` / ``max_eval_examples`` /
    ``evaluate(max_examples=...)`` use; call it to see the same examples (baselines, tokenizers).

    Not the first ``n``: splits are often sorted (CLINC150's test split puts every
    out-of-scope query last), and a prefix would silently lose whole classes. Training
    subsets follow the run's seed; evaluation subsets always use seed 0, so ``finetune`` and
    ``evaluate(max_examples=n)`` score the same examples whatever the training seed.
    """
    if n is None or ds is None or len(ds) <= n:
        return ds
    keep = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return datasets.Dataset([ds.examples[i] for i in keep.tolist()], ds.label_names, ds.name,
                            ds.split, ds.meta)


def _check_task_fields(ds, task, where):
    need = {"classification": ("text", "label"), "ner": ("tokens", "tags"),
            "qa": ("context", "question", "answers")}[task]
    if not len(ds):
        raise TaskError(f"{where} has no examples")
    missing = [k for k in need if k not in ds[0]]
    if missing:
        raise TaskError(f"{where} does not look like {task} data: its examples lack "
                        f"{missing} (fields: {sorted(ds[0])})")
    if task == "classification" and any(e["label"] is None for e in ds.examples):
        raise TaskError(f"{where} has unlabelled examples (e.g. GLUE's hidden test labels); "
                        "it cannot be used for training or evaluation")


def dataset_kwargs(cfg) -> dict:
    """``cfg.dataset_options`` ("key=value,key=value") as the built-in loader's keyword
    arguments: ints, floats, true/false or text; unknown keys are an error listing the valid
    ones."""
    if not cfg.dataset_options:
        return {}
    if cfg.dataset is None:
        raise TaskError("--dataset-options go with a built-in --dataset")
    valid = datasets.get_spec(cfg.dataset).options()
    out = {}
    for item in cfg.dataset_options.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in valid:
            raise TaskError(f"--dataset-options: {item.strip()!r} is not KEY=VALUE with a key of "
                            f"{cfg.dataset} ({', '.join(valid) or 'none'})")
        out[key] = _option_value(value)
    return out


def _option_value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def load_task_data(cfg, log=print):
    """``{"train", "validation", "test"?}`` Datasets and ``label_names`` for ``cfg``.

    A built-in dataset uses its own splits (QA sets have train/test only: validation is
    carved from train by paragraph); files are read by extension. Without a validation
    file, ``validation_fraction`` of the training examples is held out (seeded).
    """
    task = cfg.task
    splits = {}
    if cfg.dataset is not None:
        spec = datasets.get_spec(cfg.dataset)
        kw = {"fix_answer_starts": True} if "fix_answer_starts" in spec.options() else {}
        kw.update(dataset_kwargs(cfg))
        for s in ("train", "validation", "test"):
            if s in spec.splits:
                splits[s] = datasets.load(cfg.dataset, split=s, **kw)
        if not isinstance(splits.get("train"), datasets.Dataset):
            raise TaskError(f"dataset {cfg.dataset!r} ({spec.task}) is not a labelled dataset "
                            f"for {task}")
        name = cfg.dataset
    else:
        splits["train"] = _load_file(cfg.train, task, cfg, log=log)
        names = splits["train"].label_names
        if cfg.validation:
            splits["validation"] = _load_file(cfg.validation, task, cfg, names, log)
        if cfg.test:
            splits["test"] = _load_file(cfg.test, task, cfg, names, log)
        name = Path(cfg.train).name
    if task == "classification" and cfg.dataset == "sst2" and "test" in splits:
        del splits["test"]                        # GLUE hides SST-2's test labels
    for s, ds in splits.items():
        _check_task_fields(ds, task, f"{name} ({s})")
    if "validation" not in splits:
        splits["train"], splits["validation"] = _carve(splits["train"], cfg.validation_fraction,
                                                       cfg.seed)
        _log(log, f"validation: {len(splits['validation'])} examples held out from the "
                  f"training data ({cfg.validation_fraction:.0%}, seed {cfg.seed})")
    splits["train"] = sample_examples(splits["train"], cfg.max_train_examples, cfg.seed)
    for s in ("validation", "test"):
        splits[s] = sample_examples(splits.get(s), cfg.max_eval_examples)   # fixed: as evaluate()
    if splits.get("test") is None:
        splits.pop("test", None)
    return splits, splits["train"].label_names


def _placeable(ds, split, log):
    """QA examples whose first answer sits at its ``answer_start`` (after the repair done on
    loading); the others cannot give answer positions for training and are reported."""
    ok = [e for e in ds.examples if e["answers"]["text"]
          and datasets.qa.answer_ok(e["context"], e["answers"]["text"][0],
                                    e["answers"]["answer_start"][0])]
    if len(ok) < len(ds):
        _log(log, f"{split}: {len(ds) - len(ok)} of {len(ds)} questions skipped for training "
                  "(no answer given, or its text does not occur at answer_start)")
    if not ok:
        raise TaskError(f"{split}: no question has its answer in the context")
    return datasets.Dataset(ok, ds.label_names, ds.name, ds.split, ds.meta)


def text_language(texts):
    """'zh' when the texts (the first 200 characters of the first 50) are mostly CJK
    characters, else 'en': what picks characters over subwords, and CMRC's scoring."""
    text = "".join(t[:200] for t in texts[:50])
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    return "zh" if text and cjk / len(text) > 0.3 else "en"


def _lang(examples):
    return text_language([e["context"] for e in examples])


# =============================================================================================
# tokenizer and features
# =============================================================================================
def _texts_for_tokenizer(task, ds):
    if task == "classification":
        return [e["text"] for e in ds]
    if task == "ner":
        return [" ".join(e["tokens"]) for e in ds]
    return [e["context"] for e in ds] + [e["question"] for e in ds]


def choose_tokenizer(texts):
    """The tokenizer kind ``"auto"`` means: characters for Chinese (each character already
    carries meaning, and a Chinese vocabulary of characters is a few thousand), byte-level
    BPE for space-separated scripts (a character model of English must first learn to spell
    words, which a few thousand sentences do not teach; see the ablation in BENCHMARKS.md)."""
    return "char" if text_language(texts) == "zh" else "bpe"


def build_tokenizer(task, train, kind="auto", min_freq=1, vocab_size=8000):
    """A tokenizer trained on the training texts, with [PAD] [UNK] [CLS] [SEP] [MASK].

    ``kind``: "char", "bpe" (byte-level, at most ``vocab_size`` tokens; merging stops at
    pairs seen once, so a small file gets a smaller vocabulary), "wordpiece", or "auto"
    (:func:`choose_tokenizer`)."""
    texts = [t for t in _texts_for_tokenizer(task, train) if t]
    if kind == "auto":
        kind = choose_tokenizer(texts)
    if kind == "char":
        return CharTokenizer.train(texts, min_freq=min_freq, special_tokens=SPECIALS)
    if kind == "bpe":
        return bpe_tokenizer(texts, vocab_size)
    return WordPieceTokenizer.train(texts, vocab_size=vocab_size)


def bpe_tokenizer(texts, vocab_size):
    """A byte-level BPE tokenizer learned from ``texts`` with BERT's special tokens."""
    specials = {**SPECIALS, "bos": None, "eos": None}
    return BPETokenizer.train(texts, vocab_size=vocab_size, special_tokens=specials)


def length_from_data(lengths, quantile=0.98, multiple=8, floor=16, cap=256):
    """``max_length`` read from the tokenized training examples' ``lengths`` (specials
    included): their ``quantile``, rounded up to a ``multiple``, within ``[floor, cap]``.
    Batches are padded to their longest example only, so a short corpus stays fast and a
    long one is cut where few examples are affected."""
    if not len(lengths):
        return floor
    q = float(np.quantile(np.asarray(lengths), quantile))
    return int(min(cap, max(floor, multiple * math.ceil(q / multiple))))


# optimizer steps the default number of epochs aims at, per task. A token task labels every
# token with one of few tags and learns the rare entity types late: People's Daily NER was
# still gaining 2-5 points of validation F1 an epoch at 3,000 steps (the ablation in BENCHMARKS.md)
TARGET_STEPS = {"classification": 3000, "ner": 7500, "qa": 3000, "instruct": 2000, "dpo": 500,
                "grpo": 200}

# the peak learning rate when none is given. From a pretrained model, small steps keep what it
# learned. From scratch, a token task learns faster at 1e-3 (People's Daily NER +7.1 F1, WNUT-17
# a tie), where a small classification file loses at 1e-3 (SST-2 7.5k: -3.7 points): BENCHMARKS.md,
# "Fine-tuning defaults"
LEARNING_RATE_PRETRAINED = 1e-4
LEARNING_RATE_FROM_SCRATCH = {"classification": 5e-4, "ner": 1e-3, "qa": 5e-4, "instruct": 1e-3,
                              "dpo": None, "grpo": None}


def default_learning_rate(task, pretrained):
    """The default peak learning rate of a ``task`` fine-tune, from a pretrained model or not."""
    return LEARNING_RATE_PRETRAINED if pretrained else LEARNING_RATE_FROM_SCRATCH[task]


def epochs_from_data(n_examples, batch_size, target_steps=TARGET_STEPS["classification"], low=3,
                     high=30):
    """``num_train_epochs`` when none is given: enough epochs for about ``target_steps``
    optimizer steps (:data:`TARGET_STEPS` of the task), between ``low`` and ``high`` (early
    stopping on the validation split ends the run sooner when it stops improving)."""
    steps_per_epoch = max(1, math.ceil(n_examples / batch_size))
    return int(min(high, max(low, math.ceil(target_steps / steps_per_epoch))))


def _with_specials(tok, ids, max_length):
    room = max_length - tok.num_special_tokens_to_add()
    return tok.build_inputs_with_special_tokens(list(ids)[:room])


def encode_classification(ds, tok, max_length):
    """``[{"input_ids", "labels"}]``: ``[CLS] text [SEP]`` cut to ``max_length``."""
    return [{"input_ids": _with_specials(tok, tok.encode(e["text"]), max_length),
             "labels": int(e["label"])} for e in ds]


NER_BREAKS = frozenset("。！？；，、,.!?;:：")     # words after which a long sentence is cut


def ner_chunks(words, tags, counts, room):
    """``[(start, end)]`` word ranges of one sentence whose token counts (``counts[i]``:
    the tokens of word ``i``) fit ``room`` each, covering every word once.

    A chunk ends after the last punctuation word that fits, else before the last word that
    fits; never between an entity's words (a word tagged ``I-``), unless one entity alone
    is longer than ``room``. A word longer than ``room`` is a chunk of its own (its tail is
    cut when encoded)."""
    chunks, start = [], 0
    while start < len(words):
        end, used = start, 0
        while end < len(words) and used + counts[end] <= room:
            used += counts[end]
            end += 1
        if end == len(words) or end == start:
            end = max(end, start + 1)
        else:
            cuts = [j for j in range(start + 1, end + 1) if not str(tags[j]).startswith("I-")]
            breaks = [j for j in cuts if words[j - 1] in NER_BREAKS]
            end = (breaks or cuts or [end])[-1]
        chunks.append((start, end))
        start = end
    return chunks


def encode_ner(ds, tok, label_names, max_length):
    """Token-classification features (the first sub-token of each word carries its tag).

    A sentence longer than ``max_length`` tokens is not cut off: it becomes several
    features over consecutive word ranges (:func:`ner_chunks`), each with the
    ``example_index`` and ``word_offset`` that put its predictions back in place."""
    room = max_length - tok.num_special_tokens_to_add()
    feats = []
    for k, ex in enumerate(ds.examples):
        _, word_ids = encode_words(tok, ex["tokens"])
        counts = np.bincount(np.asarray(word_ids, dtype=np.int64), minlength=len(ex["tokens"]))
        for a, b in ner_chunks(ex["tokens"], ex["tags"], counts.tolist(), room):
            part = {"tokens": ex["tokens"][a:b], "tags": ex["tags"][a:b]}
            f = token_classification_features([part], tok, label_names, max_length)[0]
            feats.append({**f, "example_index": k, "word_offset": a})
    return feats


def encode_qa(ds, tok, max_length, stride, max_query_length, with_answers=True):
    """QA windows (see :func:`minillm.data.prepare_qa_features`); without answers for
    evaluation (their positions are not needed, and an unplaced answer is no error there)."""
    ex = ds.examples if with_answers else [
        {k: v for k, v in e.items() if k != "answers"} for e in ds.examples]
    room = max_length - max_query_length - 3
    stride = min(stride, max(0, room - 1))
    return prepare_qa_features(ex, tok, max_length=max_length, stride=stride,
                               max_query_length=max_query_length)


MODEL_FIELDS = ("input_ids", "token_type_ids", "labels", "start_positions", "end_positions")


def _model_inputs(features):
    """Features without the bookkeeping fields (offsets, word ids, example ids)."""
    return [{k: f[k] for k in MODEL_FIELDS if k in f} for f in features]


# =============================================================================================
# models
# =============================================================================================
def _heads():
    from ..models import heads  # noqa: PLC0415  (heads import the bodies)
    return heads


def _head_class(task):
    h = _heads()
    return {"classification": h.ModelForSequenceClassification,
            "ner": h.ModelForTokenClassification,
            "qa": h.ModelForQuestionAnswering}[task]


def _body_positions(body):
    c = body.config
    return getattr(c, "block_size", None) or getattr(c, "max_position_embeddings")


def _load_body(path, log=print):
    """The GPT/BERT body of a minillm model directory (a head model gives its body)."""
    from ..models import auto  # noqa: PLC0415
    model = auto.load_model(path)
    if isinstance(model, (GPT, BERT)):
        return model
    for attr in ("base", "bert"):
        inner = getattr(model, attr, None)
        if isinstance(inner, (GPT, BERT)):
            _log(log, f"using the {type(inner).__name__} body of the {model.model_type} model "
                      f"in {path}")
            return inner
    raise TaskError(f"{path} holds a {model.model_type!r} model; fine-tuning starts from a GPT "
                    "or BERT model directory (e.g. runs/demo/pretrained)")


def _tokenizer_path(spec):
    """``spec`` as a tokenizer file (a ``tokenizer.json``, or a directory holding one), or
    None when it names none."""
    p = Path(spec)
    p = p / TOKENIZER_FILE if p.is_dir() else p
    return p if p.is_file() else None


def load_tokenizer(directory):
    """``tokenizer.json`` of a model directory, with a clear error when it is missing."""
    p = Path(directory) / TOKENIZER_FILE
    if not p.is_file():
        raise TaskError(f"{directory} has no {TOKENIZER_FILE}: a model directory used for "
                        "fine-tuning or generation needs its tokenizer (minillm demo / pretrain "
                        "write it next to config.json and model.npz)")
    return Tokenizer.load(p)


def build_task_model(cfg, tok, label_names, log=print, max_length=None):
    """The head model for ``cfg.task``: on a loaded body (``cfg.model``) or a fresh one
    (with ``max_length`` positions, default ``cfg.max_length`` or 128)."""
    task = cfg.task
    if cfg.model is not None:
        body = _load_body(cfg.model, log)
        vocab = body.config.vocab_size
        if tok.vocab_size > vocab:
            raise TaskError(f"the tokenizer in {cfg.model} has {tok.vocab_size} tokens but the "
                            f"model's vocabulary is {vocab}")
    else:
        limit = max_length or cfg.max_length or 128
        if cfg.model_type == "gpt":
            body = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=limit,
                                 n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                                 dropout=cfg.dropout))
        else:
            body = BERT(_bert_config(cfg, tok.vocab_size, limit))
    kw = {}
    if task == "classification":
        kw = dict(num_labels=len(label_names), label_names=list(label_names),
                  pooling=POOLING_AUTO if cfg.pooling == "auto" else cfg.pooling)
    elif task == "ner":
        kw = dict(num_labels=len(label_names), label_names=list(label_names))
    model = _head_class(task).from_base(body, **kw)
    return model


def data_max_length(task, train, tok, log=print, sample=2000):
    """The ``max_length`` a run without ``--max-length`` uses: :func:`length_from_data` of
    (a seeded sample of ``sample``) training examples tokenized; 128 for QA windows."""
    if task == "qa":
        return 128
    texts = _texts_for_tokenizer(task, sample_examples(train, sample))
    extra = tok.num_special_tokens_to_add()
    lengths = np.array([len(tok.encode(t)) + extra for t in texts])
    n = length_from_data(lengths)
    _log(log, f"max_length {n} from the training texts: {np.mean(lengths <= n):.1%} fit whole "
              f"(median {int(np.median(lengths))} tokens, longest {int(lengths.max())})")
    return n


def _resolve_max_length(cfg, body_positions, from_data=128):
    if cfg.max_length is None:
        return min(from_data, body_positions)
    if cfg.max_length > body_positions:
        raise TaskError(f"max_length={cfg.max_length} exceeds the model's {body_positions} "
                        "positions; lower --max-length")
    return cfg.max_length


def save_task_model(model, tok, task_info, directory):
    """``model/``: the head model (config.json + model.npz), tokenizer.json and task.json."""
    directory = Path(directory)
    model.save_pretrained(directory)
    tok.save(directory / TOKENIZER_FILE)
    atomic_write_json(directory / TASK_FILE, task_info)
    return directory


def task_model_dir(path):
    """The folder of the fine-tuned model ``path`` names: ``path`` itself, or the ``model/``
    of a ``minillm finetune`` run directory; anything else is a TaskError."""
    p = Path(path)
    if not (p / TASK_FILE).is_file() and (p / "model" / TASK_FILE).is_file():
        p = p / "model"
    if not (p / TASK_FILE).is_file():
        raise TaskError(f"{path} is not a fine-tuned model directory (no {TASK_FILE}); give the "
                        "run directory of `minillm finetune` or its model/ folder")
    return p


def _is_instruct(path):
    """Whether ``path`` (a run directory or its model/) holds an instruction-tuned GPT."""
    p = task_model_dir(path)
    return json.loads((p / TASK_FILE).read_text(encoding="utf-8")).get("task") == "instruct"


def load_task_model(path, device=None):
    """``(model, tokenizer, task_info)`` from a fine-tuned model directory (or a run
    directory holding ``model/``)."""
    from ..models import auto  # noqa: PLC0415
    p = task_model_dir(path)
    with open(p / TASK_FILE, encoding="utf-8") as f:
        info = json.load(f)
    model = auto.load_model(p, device=device)
    return model, load_tokenizer(p), info


# =============================================================================================
# evaluation
# =============================================================================================
def _batches(items, size):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _logits_host(x):
    return x.numpy().astype(np.float64)


def evaluate_features(model, task, ds, features, collator, info, batch_size=64):
    """The task's metrics of ``model`` on ``ds`` (encoded as ``features``), plus the
    predictions. Runs in eval mode without gradients."""
    was = model.training
    model.eval()
    try:
        with no_grad():
            if task == "classification":
                return _eval_classification(model, ds, features, collator, info, batch_size)
            if task == "ner":
                return _eval_ner(model, ds, features, collator, info, batch_size)
            return _eval_qa(model, ds, features, collator, info, batch_size)
    finally:
        model.train(was)


def _run(model, feats, collator, batch_size):
    for chunk in _batches(feats, batch_size):
        batch = collator(_model_inputs(chunk))
        batch.pop("labels", None)
        batch.pop("start_positions", None)
        batch.pop("end_positions", None)
        yield chunk, batch, model(**batch)


def _eval_classification(model, ds, feats, collator, info, batch_size):
    preds = []
    for _, _, logits in _run(model, feats, collator, batch_size):
        preds.append(_logits_host(logits).argmax(axis=-1))
    pred = np.concatenate(preds).astype(np.int64)
    gold = np.array([f["labels"] for f in feats], dtype=np.int64)
    out = classification_scores(gold, pred, info["label_names"])
    return out, {"gold": gold.tolist(), "pred": pred.tolist()}


def classification_scores(gold, pred, label_names):
    """Accuracy, macro and weighted F1 (and CLINC150's two numbers when there is ``oos``)."""
    gold, pred = np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    labels = list(range(len(label_names)))
    macro = metrics.precision_recall_f1(gold, pred, average="macro", labels=labels)
    weighted = metrics.precision_recall_f1(gold, pred, average="weighted", labels=labels)
    out = {"accuracy": float(metrics.accuracy(gold, pred)), "macro_f1": float(macro[2]),
           "weighted_f1": float(weighted[2]), "examples": int(len(gold))}
    out.update(out_of_scope_metrics(gold, pred, label_names))
    return out


def _ner_scores(gold, pred):
    r = metrics.ner_f1(gold, pred)
    return {"precision": r["precision"], "recall": r["recall"], "f1": r["f1"],
            "per_type": r["per_type"], "sentences": len(gold)}


def out_of_scope_metrics(gold, pred, label_names, oos_label="oos"):
    """CLINC150's two numbers (Larson et al. 2019) when the labels include ``oos``:
    accuracy on the in-scope examples, and recall of the out-of-scope ones (the fraction of
    them predicted ``oos``); empty when there is no such label."""
    if oos_label not in label_names:
        return {}
    oos = label_names.index(oos_label)
    gold, pred = np.asarray(gold), np.asarray(pred)
    inside = gold != oos
    out = {}
    if inside.any():
        out["in_scope_accuracy"] = float((pred[inside] == gold[inside]).mean())
    if (~inside).any():
        out["oos_recall"] = float((pred[~inside] == oos).mean())
    return out


def _eval_ner(model, ds, feats, collator, info, batch_size):
    """Entity F1 over whole sentences: each feature's tags (BIO-consistent Viterbi over its
    words' first tokens) are put back at its ``word_offset`` in its sentence."""
    heads = _heads()
    names = info["label_names"]
    pred_tags = [["O"] * len(ex["tokens"]) for ex in ds]   # words cut off are predicted O
    for chunk, _, logits in _run(model, feats, collator, batch_size):
        for row, f in zip(_logits_host(logits), chunk):
            first = {}
            for pos, w in enumerate(f["word_ids"]):
                if w is not None and w not in first:
                    first[w] = pos
            order = sorted(first)
            z = row[[first[w] for w in order]]
            z = z - z.max(axis=-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
            ids = heads.bio_viterbi(logp, names) if len(order) else []
            tags = pred_tags[f["example_index"]]
            for w, i in zip(order, ids):
                tags[f["word_offset"] + w] = names[i]
    gold_tags = [list(ex["tags"]) for ex in ds]
    return _ner_scores(gold_tags, pred_tags), {"gold": gold_tags, "pred": pred_tags}


def _eval_qa(model, ds, feats, collator, info, batch_size):
    starts, ends = [], []
    for chunk, _, out in _run(model, feats, collator, batch_size):
        s, e = (_logits_host(out[0]), _logits_host(out[1]))
        for j, f in enumerate(chunk):
            n = len(f["input_ids"])
            starts.append(s[j, :n])
            ends.append(e[j, :n])
    preds = postprocess_qa(ds.examples, feats, starts, ends,
                           max_answer_length=info.get("max_answer_length", 30))
    refs = {e.get("id", i): e["answers"]["text"] for i, e in enumerate(ds.examples)}
    lang = info.get("lang") or _lang(ds.examples)
    scores = metrics.qa_scores(preds, refs, lang=lang)
    return ({"exact_match": scores["exact_match"], "f1": scores["f1"], "lang": lang,
             "questions": len(refs), "windows": len(feats)}, {"pred": preds})


def _features(task, ds, tok, info, with_answers):
    if task == "classification":
        return encode_classification(ds, tok, info["max_length"])
    if task == "ner":
        return encode_ner(ds, tok, info["label_names"], info["max_length"])
    return encode_qa(ds, tok, info["max_length"], info["doc_stride"], info["max_query_length"],
                     with_answers=with_answers)


# =============================================================================================
# finetune
# =============================================================================================
# =============================================================================================
# fine-tuning methods (minillm.finetune)
# =============================================================================================
def _head_names(model):
    return [n for n in ("classifier", "qa_outputs") if hasattr(model, n)]


def apply_method(model, cfg, log=print):
    """Freeze / adapt ``model`` for ``cfg.method``; returns what is trained:
    ``{"method", "trainable_parameters", "trainable_fraction"}``."""
    from .. import finetune as ft  # noqa: PLC0415
    if cfg.method == "head-only":
        ft.train_head_only(model)
    elif cfg.method == "freeze":
        ft.freeze_layers(model, cfg.freeze_layers)
    elif cfg.method == "lora":
        targets = None if not cfg.lora_targets else \
            [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
        ft.apply_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                      target_modules=targets, trainable=_head_names(model))
    if cfg.method != "full" and cfg.model is None:
        _log(log, f"note: --method {cfg.method} without --model keeps randomly initialised "
                  "weights fixed; these methods are meant for a pretrained body")
    summary = ft.parameter_summary(model)
    blocks = "block" if cfg.freeze_layers == 1 else "blocks"
    name = {"freeze": f"freeze (embeddings + {cfg.freeze_layers} {blocks})",
            "lora": f"lora (r={cfg.lora_r}, alpha={cfg.lora_alpha:g})"}.get(cfg.method, cfg.method)
    if cfg.layer_lr_decay < 1:
        name += f", layer-wise LR decay {cfg.layer_lr_decay:g}"
    if cfg.teacher:
        name += f", distilled from {cfg.teacher}"
    _log(log, f"method: {name}; training {summary['trainable']:,} of {summary['total']:,} "
              f"parameters ({100 * summary['fraction']:.2f}%)")
    return {"method": name, "trainable_parameters": summary["trainable"],
            "trainable_fraction": summary["fraction"]}


def _optimizer(model, cfg, lr):
    """None (the Trainer's AdamW) or, with layer-wise LR decay, AdamW over depth groups."""
    if cfg.layer_lr_decay == 1:
        return None
    from ..finetune import layerwise_lr_groups  # noqa: PLC0415
    from ..optim import AdamW  # noqa: PLC0415
    return AdamW(layerwise_lr_groups(model, lr, cfg.layer_lr_decay, cfg.weight_decay), lr=lr)


def _load_teacher(cfg, label_names, dev, log):
    """``(model, tokenizer, info)`` of the teacher, checked against this run's task/labels."""
    model, tok, info = load_task_model(cfg.teacher, device=dev)
    if info["task"] != cfg.task:
        raise TaskError(f"the teacher {cfg.teacher} was fine-tuned for {info['task']}, this run "
                        f"is {cfg.task}")
    if cfg.task != "qa" and list(info["label_names"]) != list(label_names):
        raise TaskError(f"the teacher {cfg.teacher} predicts {info['label_names']}, the data "
                        f"has {label_names}")
    _log(log, f"teacher: {type(model).__name__} from {cfg.teacher}, "
              f"{model.num_parameters():,} parameters")
    return model, tok, info


def _distillation_loss(teacher, cfg):
    if teacher is None:
        return None
    from ..finetune import DistillationLoss  # noqa: PLC0415
    return DistillationLoss(teacher[0], temperature=cfg.distill_temperature,
                            alpha=cfg.distill_alpha)


def augment_classification(ds, copies, seed, log=print):
    """The training split plus ``copies`` EDA variants of every text (same label)."""
    from ..finetune import EDA  # noqa: PLC0415
    eda = EDA(num_aug=copies, seed=seed, alpha_sr=0.0, alpha_ri=0.0)
    examples = eda.augment_dataset(list(ds.examples), text_key="text", keep_original=True)
    _log(log, f"augment: {len(ds)} training texts -> {len(examples)} (EDA random swap and "
              f"deletion, {copies} per text)")
    return datasets.Dataset(examples, label_names=ds.label_names, name=ds.name, split=ds.split,
                            meta=ds.meta)


def _run_device(cfg):
    """``(cfg on its device, the device, the output folder)``: nothing is written yet."""
    dev = backend.device(cfg.device)
    return dataclasses.replace(cfg, device=str(dev)), dev, Path(cfg.output_dir)


def _write_run_config(cfg, command, kind, out):
    """The run directory ``out`` with its ``config.json`` (the command, minillm's version
    and ``cfg`` under ``kind``): written once the data, tokenizer and model are ready and
    just before training, so a run that fails earlier leaves an existing directory as it
    was, and one that fails in training still says what it was."""
    from .. import __version__

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", {"command": command, "minillm": __version__,
                                            kind: cfg.to_dict()})


def _start_run(cfg, command, kind):
    """:func:`_run_device` and :func:`_write_run_config` at once (the GPT recipes)."""
    cfg, dev, out = _run_device(cfg)
    _write_run_config(cfg, command, kind, out)
    return cfg, dev, out


# tasks that tune a GPT as a whole, each in a module of its own: task -> (module, function)
GPT_RECIPES = {"instruct": ("instruct", "finetune_instruct"),
               "dpo": ("preference", "finetune_dpo"), "grpo": ("reinforce", "finetune_grpo")}


def finetune(cfg, command=None, log=print, resume_from_checkpoint=None):
    """Fine-tune (or train from scratch) a model for ``cfg.task``; returns the results dict
    (also ``metrics.json`` in the run directory)."""
    from .. import __version__

    if cfg.task in GPT_RECIPES:                      # instruction, preference, RL tuning
        module, name = GPT_RECIPES[cfg.task]
        recipe = getattr(importlib.import_module(f"minillm.apps.{module}"), name)
        return recipe(cfg, command, log, resume_from_checkpoint)
    t_start = time.perf_counter()
    cfg, dev, out = _run_device(cfg)
    task = cfg.task
    splits, label_names = load_task_data(cfg, log)
    _log(log, "data: " + ", ".join(f"{s} {len(d)}" for s, d in splits.items())
         + (f"; {len(label_names)} labels" if label_names else ""))
    with backend.default_device_as(dev):
        backend.manual_seed(cfg.seed)
        teacher = _load_teacher(cfg, label_names, dev, log) if cfg.teacher else None
        tok = _finetune_tokenizer(cfg, splits["train"], teacher)
        model, max_length = _finetune_model(cfg, tok, splits["train"], label_names, teacher,
                                            log)
        method = apply_method(model, cfg, log)
        info = _task_info(cfg, label_names, max_length, splits["train"])
        baseline_train, train_feats, eval_feats = _task_features(cfg, splits, tok, info, log)
        collator = Collator(pad_id=tok.pad_id, device=dev)
        _log(log, f"model: {type(model).__name__} on a {type(model.base).__name__} body"
                  f"{' from ' + cfg.model if cfg.model else ' from scratch'}, "
                  f"{model.num_parameters():,} parameters; tokenizer {type(tok).__name__} "
                  f"({tok.vocab_size} tokens); max_length {max_length}; "
                  f"{len(train_feats)} training features")
        args, epochs = _training_arguments(cfg, out, len(train_feats), log)
        trainer = _task_trainer(cfg, model, args, (tok, info, collator), splits,
                                (train_feats, eval_feats), teacher)
        _write_run_config(cfg, command, "finetune", out)
        tok.save(out / TOKENIZER_FILE)
        t0 = time.perf_counter()
        state = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        train_seconds = time.perf_counter() - t0
        _log_best(state, MAIN_METRIC[task], log)
        _save_trained(cfg, model, tok, info, out)
        results = {"task": task, "command": command, "minillm": __version__,
                   "device": str(dev), "train_seconds": train_seconds,
                   "steps": trainer.state.global_step, "parameters": model.num_parameters(),
                   **method, "train_examples": len(splits["train"]),
                   "train_features": len(train_feats), "epochs": epochs,
                   "best_step": state.loaded_best_step, "max_length": max_length,
                   "tokenizer": type(tok).__name__, "vocab_size": tok.vocab_size}
        _score_splits(results, cfg, model, splits, eval_feats, collator, info, out)
        if cfg.baseline and task in BASELINE_TASKS:
            results["baselines"] = baseline_results(
                task, baseline_train, splits["validation"], {s: splits[s] for s in eval_feats},
                label_names, cfg.seed, dev)
    plot_history(trainer.state.history, out / "loss.png",
                 title=f"minillm finetune --task {task} ({info['dataset']})")
    results["total_seconds"] = time.perf_counter() - t_start
    atomic_write_json(out / "metrics.json", results)
    _log(log, summary_line(results))
    log_baselines(task, results, results.get("baselines"), log)
    return results


def _task_trainer(cfg, model, args, encoding, splits, features, teacher):
    """The Trainer of a fine-tune: validation metrics at each evaluation, the distillation
    loss with a teacher, the method's optimizer. ``encoding`` is ``(tokenizer, task info,
    collator)``, ``features`` is ``(training features, {split: evaluation features})``."""
    tok, info, collator = encoding
    train_feats, eval_feats = features

    def compute_metrics(m, loader):
        r, _ = evaluate_features(m, cfg.task, splits["validation"], eval_feats["validation"],
                                 collator, info, cfg.eval_batch_size)
        return {k: v for k, v in r.items() if isinstance(v, float)}

    # the Trainer's eval loss needs targets: QA evaluates its loss on windows with answer
    # positions (the metrics use the answer-free windows and all reference answers)
    loss_feats = eval_feats["validation"] if cfg.task != "qa" else _features(
        cfg.task, _placeable(splits["validation"], "validation", None), tok, info, True)
    return Trainer(model, args, train_dataset=_model_inputs(train_feats),
                   eval_dataset=_model_inputs(loss_feats), data_collator=collator,
                   compute_metrics=compute_metrics,
                   compute_loss=_distillation_loss(teacher, cfg),
                   optimizers=(_optimizer(model, cfg, cfg.learning_rate), None))


def _save_trained(cfg, model, tok, info, out):
    """``out/model`` (a LoRA run also keeps its adapters alone in ``out/adapter``, then
    merges them into the saved model)."""
    if cfg.method == "lora":
        from ..finetune import lora  # noqa: PLC0415
        lora.save_adapters(model, out / "adapter")
        lora.remove_lora(model, merge=True)
    save_task_model(model, tok, info, out / "model")


def _task_features(cfg, splits, tok, info, log):
    """``(baseline training split, training features, {split: evaluation features})``: QA
    keeps the training questions whose answer fits a window, EDA copies (``--augment``) join
    the training split after the baseline's copy is taken."""
    if cfg.task == "qa":
        splits["train"] = _placeable(splits["train"], "train", log)
    baseline_train = splits["train"]
    if cfg.augment:
        splits["train"] = augment_classification(splits["train"], cfg.augment, cfg.seed, log)
    train_feats = _features(cfg.task, splits["train"], tok, info, with_answers=True)
    eval_feats = {s: _features(cfg.task, splits[s], tok, info, with_answers=False)
                  for s in ("validation", "test") if s in splits}
    return baseline_train, train_feats, eval_feats


def _finetune_tokenizer(cfg, train, teacher):
    """The run's tokenizer: the pretrained model's, the teacher's (a student reads the
    teacher's token ids), a saved one, or one built from the training split."""
    if cfg.model is not None:
        tok = load_tokenizer(cfg.model)
    elif teacher is not None:
        tok = teacher[1]
    elif _tokenizer_path(cfg.tokenizer):
        tok = Tokenizer.load(_tokenizer_path(cfg.tokenizer))
    else:
        tok = build_tokenizer(cfg.task, train, cfg.tokenizer, cfg.min_freq, cfg.vocab_size)
    if teacher is not None and tok.to_dict() != teacher[1].to_dict():
        raise TaskError(f"the tokenizer of {cfg.model} differs from the teacher's "
                        f"({cfg.teacher}); distillation compares logits over the same "
                        "inputs, so both models must share one tokenizer")
    if cfg.task == "qa" and (tok.cls_id is None or tok.sep_id is None) and \
            (tok.bos_id is None or tok.eos_id is None):
        raise TaskError("QA windows are [CLS] question [SEP] context [SEP] (or <bos> ... "
                        f"<eos>); the tokenizer of {cfg.model} has neither pair")
    return tok


def _finetune_model(cfg, tok, train, label_names, teacher, log):
    """``(task model on the default device, max_length)``: the length wanted (given, or from
    the training texts), within the body's positions and what a teacher read."""
    wanted = cfg.max_length or data_max_length(cfg.task, train, tok, log)
    model = build_task_model(cfg, tok, label_names, log, wanted).to(cfg.device)
    max_length = _resolve_max_length(cfg, _body_positions(model.base), wanted)
    if teacher is not None and cfg.max_length is None:     # read what the teacher read
        max_length = min(max_length, teacher[2]["max_length"])
    if teacher is not None and max_length > _body_positions(teacher[0].base):
        raise TaskError(f"max_length {max_length} exceeds the teacher's "
                        f"{_body_positions(teacher[0].base)} positions; lower --max-length")
    return model, max_length


def _task_info(cfg, label_names, max_length, train):
    """``task.json`` of the model: what evaluating and serving it needs."""
    info = {"task": cfg.task, "label_names": label_names, "max_length": max_length,
            "doc_stride": cfg.doc_stride, "max_query_length": cfg.max_query_length,
            "max_answer_length": cfg.max_answer_length, "base_model": cfg.model,
            "dataset": cfg.dataset or cfg.train, "training_data": _training_data(cfg)}
    if cfg.task == "qa":
        info["lang"] = _lang(train.examples)
    return info


def _training_arguments(cfg, out, n_features, log):
    """``(TrainingArguments, epochs)`` of a head-model fine-tune: the task's main metric
    decides the best evaluation (see :func:`training_arguments`)."""
    args, epochs = training_arguments(cfg, out, n_features, TARGET_STEPS[cfg.task],
                                      f"eval_{MAIN_METRIC[cfg.task]}", greater_is_better=True)
    _log_schedule(cfg, epochs, args.eval_steps, log)
    return args, epochs


def training_arguments(cfg, out, n_features, target_steps, metric, greater_is_better):
    """``(TrainingArguments, epochs)``: epochs from the data size (``target_steps``) unless
    given, evaluation and a checkpoint each epoch (or every ``eval_steps``), early stopping
    on ``metric``, the best evaluation's weights at the end."""
    steps_per_epoch = max(1, math.ceil(n_features / cfg.batch_size))
    eval_steps = cfg.eval_steps or steps_per_epoch
    epochs = cfg.num_train_epochs or epochs_from_data(n_features, cfg.batch_size, target_steps)
    args = TrainingArguments(
        str(out), num_train_epochs=epochs, max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size, learning_rate=cfg.learning_rate,
        warmup_ratio=cfg.warmup_ratio, lr_scheduler_type=cfg.lr_scheduler_type,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        eval_steps=eval_steps, save_steps=eval_steps,
        logging_steps=max(1, min(50, steps_per_epoch // 5)),
        save_total_limit=cfg.save_total_limit,
        early_stopping_patience=cfg.early_stopping_patience,
        metric_for_best_model=metric, greater_is_better=greater_is_better,
        load_best_model_at_end=True, group_by_length=True, seed=cfg.seed, device=cfg.device,
        disable_tqdm=not cfg.progress)
    return args, epochs


def _score_splits(results, cfg, model, splits, eval_feats, collator, info, out):
    """The final model's metrics on each evaluation split, into ``results``; the test
    split's confusion matrix for classification."""
    for s, feats in eval_feats.items():
        r, pred = evaluate_features(model, cfg.task, splits[s], feats, collator, info,
                                    cfg.eval_batch_size)
        results[s] = r
        if cfg.task == "classification" and s == "test":
            _confusion_plot(pred, info["label_names"], out / "confusion_matrix.png")


def _training_data(cfg):
    """What :func:`evaluate` needs to rebuild this run's training split for the baseline."""
    keys = ("dataset", "train", "validation", "text_column", "label_column", "no_header",
            "token_column", "tag_column", "validation_fraction", "max_train_examples", "seed")
    data = {k: getattr(cfg, k) for k in keys}
    for k in ("train", "validation"):
        if data[k] is not None:
            data[k] = str(Path(data[k]).resolve())
    return data


def _evaluation_baselines(info, ds, log):
    """The baselines of a fine-tuned model's task, refitted on its training split (rebuilt
    from ``task.json``) and scored on ``ds``; None (and a note) when that data is gone."""
    spec = info.get("training_data")
    if spec is None:
        _log(log, "baseline: skipped (the model's task.json does not say what it was trained "
                  "on; models fine-tuned before minillm recorded it)")
        return None
    try:
        cfg = FinetuneConfig(task=info["task"], **spec)
        splits, names = load_task_data(cfg, log=None)
    except (OSError, TaskError) as e:
        _log(log, f"baseline: skipped (the training data cannot be read again: {e})")
        return None
    return baseline_results(info["task"], splits["train"], splits["validation"],
                            {"evaluation": ds}, names, spec["seed"])


def _log_schedule(cfg, epochs, eval_steps, log):
    if cfg.max_steps:
        length = f"{cfg.max_steps} steps (--max-steps)"
    else:
        length = f"{epochs:g} epochs" + ("" if cfg.num_train_epochs
                                         else " (from the training set's size)")
    stop = (f"; early stopping after {cfg.early_stopping_patience} evaluations without "
            "improvement" if cfg.early_stopping_patience else "")
    _log(log, f"training: {length}, evaluating every {eval_steps} steps{stop}; the best "
              "evaluation's weights are kept")


def _log_best(state, metric, log):
    step = state.loaded_best_step
    if step is None:
        return
    where = "the last step" if step == state.global_step else f"step {step}"
    _log(log, f"best validation {metric} {state.best_metric:.4f} at {where} of "
              f"{state.global_step}: the saved model has the weights of {where}")


def _confusion_plot(pred, label_names, path):
    if len(label_names) > 30:                 # unreadable; the numbers are in metrics.json
        return
    cm = metrics.confusion_matrix(pred["gold"], pred["pred"], labels=list(range(len(label_names))))
    metrics.plot_confusion_matrix(cm, label_names, path)


def summary_line(results):
    """One line per evaluated split with the task's headline metrics."""
    keys = {"classification": ("accuracy", "macro_f1"), "ner": ("precision", "recall", "f1"),
            "qa": ("exact_match", "f1")}[results["task"]]
    parts = []
    for s in ("validation", "test"):
        if s in results:
            parts.append(f"{s}: " + ", ".join(f"{k} {results[s][k]:.4f}" for k in keys))
    return "; ".join(parts)


# =============================================================================================
# baselines beside the neural model
# =============================================================================================
BASELINE_TASKS = ("classification", "ner")


def baseline_results(task, train, validation, evaluate, label_names, seed=0, device=None):
    """``{baseline name: {split: metrics, "train_seconds", "parameters"}}`` on the Datasets
    ``evaluate`` (``{split: Dataset}``), fitted on ``train`` (``validation`` picks the
    logistic regression's epoch): bag-of-n-grams naive Bayes and logistic regression for
    classification (:func:`minillm.baselines.classification_baselines`), the most frequent
    training tag per token for NER. Empty for QA."""
    if task == "classification":
        lang = text_language([e["text"] for e in train.examples])
        data = {s: ([e["text"] for e in d], [e["label"] for e in d])
                for s, d in {"train": train, "validation": validation, **evaluate}.items()}
        runs = baselines.classification_baselines(
            data["train"], data["validation"], {s: data[s][0] for s in evaluate},
            len(label_names), lang, seed=seed, device=device)

        def score(split, pred):
            return classification_scores(data[split][1], pred, label_names)
    elif task == "ner":
        lang = text_language([" ".join(e["tokens"]) for e in train.examples])
        runs = baselines.ner_baseline(([e["tokens"] for e in train], [e["tags"] for e in train]),
                                      {s: [e["tokens"] for e in d] for s, d in evaluate.items()},
                                      lower=lang != "zh")

        def score(split, pred):
            return _ner_scores([list(e["tags"]) for e in evaluate[split]], pred)
    else:
        return {}
    return {name: {"train_seconds": r["train_seconds"], "parameters": r["parameters"],
                   **{s: score(s, p) for s, p in r["predictions"].items()}}
            for name, r in runs.items()}


def log_baselines(task, model_results, base, log=print, splits=("validation", "test")):
    """One line per baseline and split, and how the model compares with the best one."""
    key = MAIN_METRIC[task]
    for split in splits:
        if split not in model_results or not base:
            continue
        for name, r in base.items():
            _log(log, f"baseline {name}: {split} {key} {r[split][key]:.4f}")
        best_name = max(base, key=lambda n: base[n][split][key])
        mine, best = model_results[split][key], base[best_name][split][key]
        verdict = "beats" if mine > best else ("ties" if mine == best else "loses to")
        _log(log, f"{split}: the model's {key} {mine:.4f} {verdict} the best baseline "
                  f"({best_name}, {best:.4f}) by {abs(mine - best):.4f}")


# =============================================================================================
# evaluate
# =============================================================================================
def evaluate(model_path, dataset=None, split="test", file=None, device=None, batch_size=64,
             max_examples=None, text_column="text", label_column="label", no_header=False,
             token_column=0, tag_column=-1, quantize=None, prune=None, baseline=True,
             log=print):
    """Metrics of a fine-tuned model (``minillm finetune``'s run directory or its ``model/``)
    on a built-in dataset's ``split`` or on a ``file``; returns the metrics dict.

    ``prune=s`` first zeroes the fraction ``s`` of the smallest-magnitude Linear weights
    (global threshold), ``quantize="int8"`` then stores every Linear in int8 with one scale
    per output channel; the task head stays as trained in both. The metrics then include
    ``model_bytes`` before and after and the achieved sparsity.

    ``baseline``: for classification and NER, also refit the bag-of-n-grams baseline on
    the model's training split (as ``finetune`` did) and report it under ``"baselines"``."""
    if (dataset is None) == (file is None):
        raise TaskError("evaluate needs either a built-in dataset (--dataset NAME) or a file "
                        "(--file FILE)")
    if _is_instruct(model_path):
        if quantize or prune:
            raise TaskError("--quantize/--prune are not available for instruction models yet")
        from .instruct import evaluate_instruct  # noqa: PLC0415
        return evaluate_instruct(model_path, dataset, split, file, device, max_examples, log)
    if quantize not in (None, "int8"):
        raise TaskError(f"quantize must be 'int8' (the only scheme), got {quantize!r}")
    if prune is not None and not 0 <= prune < 1:
        raise TaskError(f"prune is the fraction of weights to zero, in [0, 1); got {prune}")
    dev = backend.device(device)
    with backend.default_device_as(dev):
        model, tok, info = load_task_model(model_path, device=dev)
        task = info["task"]
        compression = compress(model, quantize, prune, log)
        if dataset is not None:
            spec = datasets.get_spec(dataset)
            kw = {"fix_answer_starts": True} if "fix_answer_starts" in spec.options() else {}
            ds = datasets.load(dataset, split=split, **kw)
            where = f"{dataset} ({split})"
            if not isinstance(ds, datasets.Dataset):
                raise TaskError(f"dataset {dataset!r} is not a labelled dataset for {task}")
        else:
            columns = types.SimpleNamespace(text_column=text_column, label_column=label_column,
                                            no_header=no_header, token_column=token_column,
                                            tag_column=tag_column)
            ds = _load_file(file, task, columns, info.get("label_names"), log)
            where = str(file)
        _check_task_fields(ds, task, where)
        if task in ("classification", "ner") and ds.label_names != info["label_names"]:
            raise TaskError(f"{where} has labels {ds.label_names}, the model was trained on "
                            f"{info['label_names']}")
        ds = sample_examples(ds, max_examples)
        feats = _features(task, ds, tok, info, with_answers=False)
        collator = Collator(pad_id=tok.pad_id, device=dev)
        r, _ = evaluate_features(model, task, ds, feats, collator, info, batch_size)
        base = _evaluation_baselines(info, ds, log) if baseline and task in BASELINE_TASKS \
            else None
    r = {"task": task, "data": where, **r, **compression}
    if base:
        r["baselines"] = {n: {k: v for k, v in b.items() if k != "evaluation"}
                          | b["evaluation"] for n, b in base.items()}
        log_baselines(task, {"evaluation": r}, base, log, splits=("evaluation",))
    return r


def compress(model, quantize=None, prune=None, log=print):
    """Post-training compression of a task model in place (the head is left alone);
    returns ``{"model_bytes", "compressed_bytes", "sparsity"}`` for what was done."""
    from .. import finetune as ft  # noqa: PLC0415
    if quantize is None and prune is None:
        return {}
    out = {"model_bytes": ft.model_size_bytes(model)}
    head = _head_names(model)
    if prune is not None:
        report = ft.magnitude_prune(model, prune, scope="global", skip=head)
        ft.remove_pruning(model)
        out["sparsity"] = report["sparsity"]
        _log(log, f"pruned {report['pruned']:,} of {report['total']:,} Linear weights "
                  f"(sparsity {report['sparsity']:.3f}, the head excluded)")
    if quantize is not None:
        report = ft.quantize_model(model, skip=head)
        out["quantized_layers"] = len(report["quantized"])
        out["max_abs_weight_error"] = report["max_abs_error"]
        _log(log, f"int8: {len(report['quantized'])} Linear layers, largest weight error "
                  f"{report['max_abs_error']:.2e}")
    out["compressed_bytes"] = ft.model_size_bytes(model)
    _log(log, f"model size {out['model_bytes'] / 1e6:.2f} MB -> "
              f"{out['compressed_bytes'] / 1e6:.2f} MB")
    return out


# =============================================================================================
# pretrain
# =============================================================================================
def _corpus(cfg, log):
    if cfg.dataset is not None:
        spec = datasets.get_spec(cfg.dataset)

        def text_of(split):
            x = datasets.load(cfg.dataset, split=split)
            if isinstance(x, str):
                return x
            if cfg.dataset == "ptb":                     # word tokens with <eos>
                return " ".join(x).replace(" <eos> ", "\n").replace(" <eos>", "\n")
            return "\n".join(x)
        train = text_of("train")
        val = text_of("validation") if "validation" in spec.splits else None
    else:
        train = datasets.load_text(cfg.train)
        val = datasets.load_text(cfg.validation) if cfg.validation else None
    if val is None:
        cut = int(len(train) * 0.9)
        train, val = train[:cut], train[cut:]
        _log(log, "validation: the last 10% of the training text")
    if not train.strip():
        raise TaskError("the training text is empty")
    return train, val


def _bert_config(cfg, vocab_size, positions):
    """A BERT of the run's size (tanh GELU: ~6x cheaper than erf on CPU)."""
    return BertConfig(vocab_size=vocab_size, hidden_size=cfg.n_embd,
                      num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                      intermediate_size=4 * cfg.n_embd, max_position_embeddings=positions,
                      hidden_dropout_prob=cfg.dropout, hidden_act="gelu_new",
                      attention_probs_dropout_prob=cfg.dropout)


class _MLMWindows:
    """``n`` masked-LM examples ``[CLS] w [SEP]`` from windows ``w`` of ``block_size - 2``
    tokens of ``stream``, at starts drawn once from ``seed``.

    Example ``i`` is masked with its own generator, seeded by ``(seed, i)``: the data do not
    depend on the order they are read in, so a resumed run sees exactly the batches an
    uninterrupted run would (a collator masking on the fly would need its generator state
    in every checkpoint), and every evaluation scores the same masked positions.
    """

    def __init__(self, stream, block_size, n, seed, tokenizer, mlm_probability=0.15):
        if block_size < 3:
            raise TaskError(f"BERT pretraining needs block_size >= 3 ([CLS] text [SEP]), got "
                            f"{block_size}")
        self.stream, self.width, self.seed, self.tok = stream, block_size - 2, seed, tokenizer
        rng = np.random.default_rng(seed)
        self.starts = rng.integers(0, len(stream) - self.width, size=n)
        self.masker = MLMCollator(tokenizer, mlm_probability=mlm_probability, seed=0)

    def __len__(self):
        return len(self.starts)

    def window(self, i):
        s = int(self.starts[i])
        return np.concatenate([[self.tok.cls_id], self.stream[s:s + self.width],
                               [self.tok.sep_id]]).astype(np.int64)

    def __getitem__(self, i):
        self.masker.rng = np.random.default_rng((self.seed, int(i)))
        ids, labels = self.masker.mask_tokens(self.window(i)[None])
        return {"input_ids": ids[0], "labels": labels[0]}


def _show(tok, token_id):
    return tok.decode([int(token_id)]).replace("\n", "↵")


def fill_mask_sample(model, tok, windows, n=3):
    """The first ``n`` masked windows with each ``[MASK]``ed token shown as
    ``[original→predicted]``: what the masked LM has learned, in text."""
    lines = []
    dev = next(iter(model.parameters())).device
    model.eval()
    with no_grad():
        for i in range(min(n, len(windows))):
            ex = windows[i]
            ids = np.asarray(ex["input_ids"])
            pred = model(tensor(ids[None], device=dev)).numpy()[0].argmax(-1)
            original = windows.window(i)
            parts = []
            for j in range(1, len(ids) - 1):
                text = _show(tok, original[j])
                parts.append(f"[{text}→{_show(tok, pred[j])}]" if ex["labels"][j] != -100
                             else text)
            lines.append("".join(parts))
    return "\n".join(lines)


def _pretrain_model(cfg, train_text, log):
    """``(model, tokenizer)``: a fresh GPT / BertForMaskedLM of ``cfg``'s size with a
    tokenizer learned from ``train_text``, or, with ``cfg.model``, that pretrained model and
    its own tokenizer (continued, domain-adaptive pretraining: the vocabulary stays, so the
    weights keep their meaning)."""
    if cfg.model is None:
        if cfg.tokenizer == "char":
            specials = SPECIALS if cfg.model_type == "bert" else GPT_SPECIALS
            tok = CharTokenizer.train([train_text], min_freq=cfg.min_freq, special_tokens=specials)
        else:
            tok = BPETokenizer.train(train_text.splitlines(), vocab_size=cfg.vocab_size,
                                     special_tokens=SPECIALS)   # fine-tuning needs [CLS] ...
        if cfg.model_type == "bert":
            return BertForMaskedLM(_bert_config(cfg, tok.vocab_size, cfg.block_size)), tok
        return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=cfg.block_size,
                             n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                             dropout=cfg.dropout)), tok
    from ..models import auto  # noqa: PLC0415
    model = auto.load_model(cfg.model)
    if not isinstance(model, (GPT, BertForMaskedLM)):
        raise TaskError(f"{cfg.model} holds a {model.model_type!r} model; continued "
                        "pretraining takes a GPT or a masked-LM BERT (the model/ folder of "
                        "`minillm pretrain`)")
    positions = _body_positions(model if isinstance(model, GPT) else model.bert)
    if cfg.block_size > positions:
        raise TaskError(f"--block-size {cfg.block_size} exceeds the {positions} positions of "
                        f"{cfg.model}; lower --block-size")
    _log(log, f"continuing {type(model).__name__} from {cfg.model} with its tokenizer")
    tok = load_tokenizer(cfg.model)
    if cfg.extend_vocab:
        tok = extend_vocabulary(model, tok, train_text, cfg.extend_vocab, log)
    return model, tok


def _encode_corpus(cfg, tok, train_text, val_text, log):
    """The token ids of the training and validation texts; each must hold a window."""
    train_ids = np.asarray(tok.encode(train_text), dtype=np.int64)
    val_ids = np.asarray(tok.encode(val_text), dtype=np.int64)
    for name, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < cfg.block_size + 2:
            raise TaskError(f"the {name} text has {len(ids)} tokens, fewer than block_size "
                            f"+ 2 = {cfg.block_size + 2}; use more text or a smaller "
                            "--block-size")
    _log_unknown(tok, train_ids, log)
    return train_ids, val_ids


def _pretrain_windows(cfg, tok, train_ids, val_ids):
    """``(training windows, validation windows, collator)``: next-token windows for a GPT,
    masked windows for a BERT (validation always masks BERT's 15%, so that losses compare
    across runs whatever the training rate)."""
    # one window per example of every step; under `mpiexec -n W` a step's global batch is
    # W x batch_size, so W ranks see exactly the windows one process with W x batch_size does
    n_windows = cfg.max_steps * cfg.batch_size * max(1, distributed.launched_world_size())
    n_val = cfg.eval_batches * cfg.batch_size
    if cfg.model_type == "bert":
        return (_MLMWindows(train_ids, cfg.block_size, n_windows, cfg.seed, tok,
                            cfg.mlm_probability),
                _MLMWindows(val_ids, cfg.block_size, n_val, cfg.seed + 1, tok,
                            VALIDATION_MLM_PROBABILITY),
                Collator(pad_id=tok.pad_id, device=cfg.device))
    return (_Windows(train_ids, cfg.block_size, n_windows, cfg.seed),
            _Windows(val_ids, cfg.block_size, n_val, cfg.seed + 1), None)


def _pretrain_arguments(cfg, out):
    """nanoGPT's recipe: AdamW (beta2 0.99), warmup then cosine decay to a floor, clipping."""
    return TrainingArguments(
        str(out), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_ratio},
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, adam_beta2=0.99,
        max_grad_norm=cfg.max_grad_norm, eval_steps=cfg.eval_steps,
        save_steps=cfg.save_steps, logging_steps=max(1, min(50, cfg.max_steps // 40)),
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, device=cfg.device,
        disable_tqdm=not cfg.progress)


def _pretrain_sample(cfg, model, tok, val):
    """What the model learned, to read: a BERT's guesses at masked validation tokens, a
    GPT's continuation of ``cfg.prompt``."""
    if cfg.model_type == "bert":
        return fill_mask_sample(model, tok, val, n=3)
    prompt = tok.encode(cfg.prompt) or [tok.unk_id]
    ids = model.generate(np.array([prompt], dtype=np.int64), cfg.sample_tokens,
                         top_k=cfg.top_k, seed=cfg.seed)
    return tok.decode(ids.numpy()[0].tolist())


def extend_vocabulary(model, tok, text, min_freq, log=print):
    """Continued pretraining on new text: a character tokenizer learns the characters of
    ``text`` it lacks (seen at least ``min_freq`` times) and the model grows a row for each
    (:meth:`~minillm.models.base.PreTrainedModel.resize_token_embeddings`), so they stop
    being ``[UNK]`` and pretraining can learn them. Returns the tokenizer to use."""
    if not isinstance(tok, CharTokenizer):
        return tok                    # byte-level BPE has no unknown tokens to learn
    bigger, added = tok.extended([text], min_freq=min_freq)
    if not added:
        return tok
    model.resize_token_embeddings(bigger.vocab_size)
    shown = "".join(added[:20]) + ("..." if len(added) > 20 else "")
    _log(log, f"vocabulary: {len(added)} characters of the new text seen at least {min_freq} "
              f"times were [UNK] and are added ({tok.vocab_size} -> {bigger.vocab_size} "
              f"tokens; new rows start at the mean embedding): {shown}")
    return bigger


def _size(model):
    """``layers x heads x width`` of a GPT or BERT."""
    c = model.config
    return (f"{c.n_layer}x{c.n_head}x{c.n_embd}" if isinstance(model, GPT) else
            f"{c.num_hidden_layers}x{c.num_attention_heads}x{c.hidden_size}")


def _log_unknown(tok, ids, log):
    unk = getattr(tok, "unk_id", None)
    share = float(np.mean(ids == unk)) if unk is not None and len(ids) else 0.0
    if share > 0.01:
        _log(log, f"note: {share:.1%} of the training tokens are unknown to the tokenizer "
                  "([UNK]); continued pretraining cannot learn them")


def pretrain(cfg, command=None, log=print, resume_from_checkpoint=None):
    """Pretrain a GPT (next-token) or a BERT (masked LM, ``cfg.model_type="bert"``) on a text
    corpus with the Trainer (cosine LR with warmup, AdamW, gradient clipping); writes
    ``model/`` (with ``tokenizer.json``), history, plots and a sample (GPT: generated text;
    BERT: masked tokens and the model's guesses); returns the results dict (also
    ``results.json``)."""
    from .. import __version__

    t_start = time.perf_counter()
    cfg, dev, out = _run_device(cfg)
    train_text, val_text = _corpus(cfg, log)
    with backend.default_device_as(dev):
        backend.manual_seed(cfg.seed)
        model, tok = _pretrain_model(cfg, train_text, log)
        model.to(dev)
        cfg = dataclasses.replace(cfg, model_type="bert" if isinstance(model, BertForMaskedLM)
                                  else "gpt")
        train_ids, val_ids = _encode_corpus(cfg, tok, train_text, val_text, log)
        train, val, collator = _pretrain_windows(cfg, tok, train_ids, val_ids)
        args = _pretrain_arguments(cfg, out)
        trainer = Trainer(model, args, train_dataset=train, eval_dataset=val,
                          data_collator=collator)
        _write_run_config(cfg, command, "pretrain", out)
        tok.save(out / TOKENIZER_FILE)
        what = "BERT (masked LM)" if cfg.model_type == "bert" else "GPT"
        _log(log, f"{what} {_size(model)}, block {cfg.block_size}, "
                  f"{model.num_parameters():,} parameters; {type(tok).__name__} "
                  f"({tok.vocab_size} tokens); {len(train_ids):,} training tokens; "
                  f"{cfg.max_steps} steps of {cfg.batch_size}")
        t0 = time.perf_counter()
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        seconds = time.perf_counter() - t0
        val_loss = trainer.evaluate()["eval_loss"]
        sample = _pretrain_sample(cfg, model, tok, val)
        model.save_pretrained(out / "model")
        tok.save(out / "model" / TOKENIZER_FILE)
    plot_history(trainer.state.history, out / "loss.png",
                 title=f"minillm pretrain ({cfg.dataset or cfg.train})")
    (out / "sample.txt").write_text(sample, encoding="utf-8")
    results = {"command": command, "minillm": __version__, "device": str(dev),
               "val_loss": val_loss, "val_batches": cfg.eval_batches,
               "train_seconds": seconds, "total_seconds": time.perf_counter() - t_start,
               "steps": trainer.state.global_step, "parameters": model.num_parameters(),
               "train_tokens": int(len(train_ids)), "vocab_size": tok.vocab_size,
               "sample": sample}
    atomic_write_json(out / "results.json", results)
    _log(log, f"validation loss {val_loss:.4f} over {cfg.eval_batches} batches; "
              f"{seconds:.1f} s training; model in {out / 'model'}")
    return results

