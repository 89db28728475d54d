"""The ``minillm demo`` pipeline: pretrain a small GPT on Chinese text, fine-tune it for
sentiment, and compare it with an LSTM trained from scratch.

    from minillm.apps import demo
    results = demo.run_demo(demo.DemoConfig(output_dir="runs/demo"))    # or DemoConfig.fast()

Steps (each a function below, usable on its own):

1. :func:`build_char_tokenizer` - a character tokenizer over the People's Daily training text
   (``peoples_daily_text``), characters seen at least ``min_freq`` times (a few thousand).
2. :func:`pretrain_gpt` - a small character-level :class:`~minillm.models.GPT` trained with the
   :class:`~minillm.training.Trainer` on random windows of the corpus; validation loss and
   samples (``generate`` with ``top_k``) before and after.
3. :func:`train_classifier` with :class:`GPTClassifier` - the pretrained GPT body, mean pooling
   over the non-padding positions, ``Linear(n_embd, 2)`` (a
   :class:`~minillm.models.ModelForSequenceClassification`); fine-tuned on ``chinese_reviews``
   (texts truncated to ``max_len`` characters), test accuracy.
4. :func:`train_classifier` with :class:`LSTMClassifier` - embedding -> LSTM -> mean pooling ->
   ``Linear(hidden, 2)``, from scratch on the same data and tokenizer, test accuracy.
5. :func:`write_report` - ``report.md`` and ``results.json`` with the measured numbers.

Everything is written under ``output_dir`` (see :data:`OUTPUT_FILES`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import no_grad, tensor
from ..data import CharTokenizer, Collator
from ..models import GPT, GPTConfig, ModelForSequenceClassification, SequenceClassificationConfig
from ..nn import LSTM, Embedding, Linear, Module
from ..training import Trainer, TrainingArguments, plot_history

__all__ = ["DemoConfig", "OUTPUT_FILES", "run_demo", "build_char_tokenizer", "pretrain_gpt",
           "GPTClassifier", "LSTMClassifier", "encode_reviews", "train_classifier",
           "evaluate_accuracy", "sample_text", "write_report", "is_fast_env"]

# The files and folders run_demo leaves in output_dir.
OUTPUT_FILES = (
    "tokenizer.json",                      # the CharTokenizer
    "pretrained/config.json",              # the pretrained GPT (save_pretrained) with its
    "pretrained/model.npz",                # tokenizer: a model directory for `minillm finetune
    "pretrained/tokenizer.json",           # --model` and `minillm generate --model`
    "pretrain/history.json",               # Trainer output: history + final checkpoint
    "pretrain/history.csv",
    "pretrain_loss.png",
    "gpt-classifier/history.json",         # fine-tuned GPT classifier (checkpoint-N/ inside)
    "gpt-classifier/history.csv",
    "gpt_classifier_loss.png",
    "lstm-classifier/history.json",        # LSTM baseline (checkpoint-N/ inside)
    "lstm-classifier/history.csv",
    "lstm_classifier_loss.png",
    "results.json",
    "report.md",
)

PROMPTS = ("中国", "经济", "人民")


def is_fast_env():
    """True when ``MINILLM_FAST`` is set to a true value (1, true, yes)."""
    return os.environ.get("MINILLM_FAST", "").strip().lower() in ("1", "true", "yes", "on")


@dataclasses.dataclass
class DemoConfig:
    """Every knob of the demo. The defaults run in a few minutes on 2 CPU cores."""

    output_dir: str = "runs/demo"
    device: str | None = None
    seed: int = 0
    # tokenizer
    min_freq: int = 5
    # pretraining
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    pretrain_steps: int = 1500
    pretrain_batch_size: int = 16
    pretrain_lr: float = 2e-3
    pretrain_eval_steps: int = 500
    eval_windows: int = 64
    sample_tokens: int = 40
    top_k: int = 20
    # classifiers
    max_len: int = 64
    finetune_steps: int = 400
    finetune_batch_size: int = 32
    finetune_lr: float = 5e-4
    lstm_steps: int | None = None          # None: the same as finetune_steps
    lstm_hidden: int = 128
    lstm_lr: float = 3e-3
    classifier_eval_steps: int = 200
    max_train_examples: int | None = None  # None: the whole training split
    max_eval_examples: int | None = None   # None: the whole validation / test split
    max_pretrain_chars: int | None = None  # None: the whole training text
    fast: bool = False
    progress: bool = True

    @classmethod
    def fast_config(cls, **overrides):
        """Tiny sizes and a few steps: the whole pipeline in seconds (tests, MINILLM_FAST=1)."""
        kw = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, pretrain_steps=8,
                  pretrain_batch_size=4, pretrain_eval_steps=4, eval_windows=8, sample_tokens=8,
                  max_len=32, finetune_steps=6, finetune_batch_size=8, lstm_hidden=32,
                  classifier_eval_steps=3, max_train_examples=96, max_eval_examples=64,
                  max_pretrain_chars=60_000, min_freq=3, fast=True)
        kw.update(overrides)
        return cls(**kw)


def _log(msg):
    print(msg, flush=True)


# -- 1. tokenizer ---------------------------------------------------------------------------
# Only the special tokens a GPT uses: <pad> <unk> <bos> <eos>. No [CLS]/[SEP]/[MASK]: the
# model never trains on them and would then sample them. Fine-tuning still covers every
# task of `minillm finetune` (a GPT's QA windows are <bos> question <eos> context <eos>).
def build_char_tokenizer(texts, min_freq=5):
    """A :class:`CharTokenizer` over ``texts``, keeping characters seen ``min_freq`` times
    (special tokens: <pad> <unk> <bos> <eos>)."""
    if isinstance(texts, str):
        texts = [texts]
    return CharTokenizer.train(texts, min_freq=min_freq)


# -- 2. pretraining -------------------------------------------------------------------------
class _Windows:
    """``n`` training windows ``{"ids", "targets"}`` of ``block_size`` tokens from ``stream``,
    at starts drawn once from ``seed`` (so the dataset is fixed; the Trainer shuffles it)."""

    def __init__(self, stream, block_size, n, seed):
        self.stream, self.block = stream, block_size
        rng = np.random.default_rng(seed)
        self.starts = rng.integers(0, len(stream) - block_size - 1, size=n)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        s = int(self.starts[i])
        return {"ids": self.stream[s:s + self.block],
                "targets": self.stream[s + 1:s + 1 + self.block]}


def sample_text(model, tokenizer, prompts=PROMPTS, max_new_tokens=40, top_k=20, seed=0):
    """Continue each prompt with ``model.generate`` (top-k sampling); returns the strings."""
    dev = next(iter(model.parameters())).device
    out = []
    for j, p in enumerate(prompts):
        ids = tensor(np.array([tokenizer.encode(p)], dtype=np.int64), device=dev)
        gen = model.generate(ids, max_new_tokens, top_k=top_k, seed=seed + j)
        out.append(tokenizer.decode(gen.numpy()[0].tolist()).replace("\n", " / "))
    return out


def pretrain_gpt(cfg, tokenizer, train_text, val_text):
    """Pretrain a character GPT; returns ``(model, info)`` with losses, samples and timing."""
    out = Path(cfg.output_dir)
    train_ids = np.asarray(tokenizer.encode(train_text), dtype=np.int64)
    val_ids = np.asarray(tokenizer.encode(val_text), dtype=np.int64)
    gcfg = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=cfg.block_size,
                     n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=0.0)
    backend.manual_seed(cfg.seed)
    model = GPT(gcfg).to(cfg.device)
    train = _Windows(train_ids, cfg.block_size, cfg.pretrain_steps * cfg.pretrain_batch_size,
                     cfg.seed)
    val = _Windows(val_ids, cfg.block_size, cfg.eval_windows, cfg.seed + 1)
    args = TrainingArguments(str(out / "pretrain"), max_steps=cfg.pretrain_steps,
                             per_device_train_batch_size=cfg.pretrain_batch_size,
                             per_device_eval_batch_size=cfg.pretrain_batch_size * 2,
                             learning_rate=cfg.pretrain_lr, lr_scheduler_type="cosine",
                             warmup_steps=max(1, cfg.pretrain_steps // 20), weight_decay=0.1,
                             adam_beta2=0.99, eval_steps=cfg.pretrain_eval_steps,
                             save_steps=None, logging_steps=max(1, cfg.pretrain_steps // 60),
                             save_total_limit=1, seed=cfg.seed, device=cfg.device,
                             disable_tqdm=not cfg.progress)
    trainer = Trainer(model, args, train_dataset=train, eval_dataset=val)
    _log(f"GPT: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} dims, block "
         f"{cfg.block_size}, {model.num_parameters():,} parameters; {len(train_ids):,} training "
         f"tokens, {cfg.pretrain_steps} steps of {cfg.pretrain_batch_size} windows")
    loss_before = trainer.evaluate()["eval_loss"]
    samples_before = sample_text(model, tokenizer, max_new_tokens=cfg.sample_tokens,
                                 top_k=cfg.top_k, seed=cfg.seed)
    _log(f"validation loss before pretraining: {loss_before:.4f} "
         f"(uniform guess: ln {tokenizer.vocab_size} = {np.log(tokenizer.vocab_size):.4f})")
    for s in samples_before:
        _log(f"  sample before: {s}")
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    loss_after = trainer.state.last_eval["eval_loss"]
    samples_after = sample_text(model, tokenizer, max_new_tokens=cfg.sample_tokens,
                                top_k=cfg.top_k, seed=cfg.seed)
    _log(f"validation loss after pretraining: {loss_after:.4f} "
         f"(perplexity {np.exp(loss_after):.1f}), {seconds:.1f} s")
    for s in samples_after:
        _log(f"  sample after: {s}")
    model.save_pretrained(out / "pretrained")
    tokenizer.save(out / "pretrained" / "tokenizer.json")
    plot_history(trainer.state.history, out / "pretrain_loss.png",
                 title="GPT pretraining on People's Daily (characters)")
    info = {"val_loss_before": loss_before, "val_loss_after": loss_after,
            "samples_before": samples_before, "samples_after": samples_after,
            "train_seconds": seconds, "steps": cfg.pretrain_steps,
            "parameters": model.num_parameters(), "train_tokens": int(len(train_ids))}
    return model, info


# -- 3./4. classifiers ----------------------------------------------------------------------
def _masked_mean(h, attention_mask):
    """Mean of ``h`` (B, T, C) over the positions where ``attention_mask`` (B, T) is 1."""
    m = attention_mask.astype(h.dtype).unsqueeze(-1)           # (B, T, 1)
    return (h * m).sum(axis=1) / m.sum(axis=1).clip(min=1.0)


class GPTClassifier(ModelForSequenceClassification):
    """A pretrained :class:`GPT` body + mean pooling over real tokens + ``Linear(n_embd, n)``:
    :class:`~minillm.models.ModelForSequenceClassification` with ``pooling="mean"``, no
    classifier dropout, and the Linear layer's own init for the head (see :meth:`_new_head`).

    ``forward(input_ids, attention_mask, labels=None)`` returns logits ``(B, n_classes)`` or
    ``(logits, loss)``. With right padding the causal attention never lets a real token see a
    pad, so pooling over ``attention_mask`` is exact. The body is ``self.base``, the head
    ``self.classifier``.
    """

    def __init__(self, gpt, num_classes=2):
        config = SequenceClassificationConfig(base_model_type="gpt",
                                              base_config=gpt.config.to_dict(),
                                              num_labels=num_classes, pooling="mean",
                                              classifier_dropout=0.0)
        super().__init__(config, base=gpt)

    def _new_head(self, out_features):
        """``Linear(n_embd, out_features)`` with Linear's default U(+-1/sqrt(n_embd)) init (not
        N(0, 0.02^2)): the demo's head has always started so, and its results stay the same."""
        return Linear(self.hidden_size, out_features)

    def forward(self, input_ids, attention_mask, labels=None):
        """The head model's forward, with ``labels`` third (the demo's call order)."""
        return super().forward(input_ids, attention_mask, labels=labels)


class LSTMClassifier(Module):
    """Embedding -> LSTM -> mean pooling over real tokens -> ``Linear(hidden, n)``."""

    def __init__(self, vocab_size, embed_dim=128, hidden_size=128, num_classes=2):
        super().__init__()
        self.embed = Embedding(vocab_size, embed_dim)
        self.lstm = LSTM(embed_dim, hidden_size, batch_first=True)
        self.score = Linear(hidden_size, num_classes)

    def forward(self, input_ids, attention_mask, labels=None):
        # Embedding rows start as N(0, 1); scaled by 0.1 the LSTM gates start unsaturated
        h, _ = self.lstm(self.embed(input_ids) * 0.1)
        logits = self.score(_masked_mean(h, attention_mask))
        if labels is None:
            return logits
        return logits, F.cross_entropy(logits, labels)


def encode_reviews(dataset, tokenizer, max_len, limit=None):
    """``[{"input_ids", "labels"}]`` from a ``chinese_reviews`` split, texts cut to
    ``max_len`` characters (empty texts become one ``<unk>``)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    out = []
    for i in range(n):
        ex = dataset[i]
        ids = tokenizer.encode(ex["text"][:max_len]) or [tokenizer.unk_id]
        out.append({"input_ids": ids, "labels": int(ex["label"])})
    return out


def evaluate_accuracy(model, examples, collator, batch_size=128):
    """Accuracy of ``model`` (argmax of its logits) on encoded ``examples``."""
    was = model.training
    model.eval()
    correct = 0
    try:
        with no_grad():
            for i in range(0, len(examples), batch_size):
                batch = collator(examples[i:i + batch_size])
                logits = model(batch["input_ids"], batch["attention_mask"])
                pred = logits.numpy().argmax(axis=-1)
                correct += int((pred == batch["labels"].numpy()).sum())
    finally:
        model.train(was)
    return correct / max(1, len(examples))


def train_classifier(model, name, cfg, train, val, test, collator, steps, lr, title):
    """Train ``model`` with the Trainer (output ``output_dir/name``); returns info with the
    validation and test accuracy and the training time."""
    out = Path(cfg.output_dir)

    def compute_metrics(m, loader):
        return {"accuracy": evaluate_accuracy(m, loader.dataset, collator)}

    args = TrainingArguments(str(out / name), max_steps=steps,
                             per_device_train_batch_size=cfg.finetune_batch_size,
                             per_device_eval_batch_size=128, learning_rate=lr,
                             lr_scheduler_type="cosine", warmup_steps=max(1, steps // 10),
                             weight_decay=0.01, eval_steps=cfg.classifier_eval_steps,
                             save_steps=None, logging_steps=max(1, steps // 50),
                             save_total_limit=1, seed=cfg.seed, device=cfg.device,
                             metric_for_best_model="eval_accuracy", greater_is_better=True,
                             disable_tqdm=not cfg.progress)
    trainer = Trainer(model, args, train_dataset=train, eval_dataset=val, data_collator=collator,
                      compute_metrics=compute_metrics)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    val_acc = trainer.state.last_eval["eval_accuracy"]
    test_acc = evaluate_accuracy(model, test, collator)
    plot_history(trainer.state.history, out / f"{name.replace('-', '_')}_loss.png", title=title)
    n_params = sum(p.size for p in model.parameters())
    _log(f"{name}: validation accuracy {val_acc:.4f}, test accuracy {test_acc:.4f}, "
         f"{seconds:.1f} s")
    return {"val_accuracy": val_acc, "test_accuracy": test_acc, "train_seconds": seconds,
            "steps": steps, "parameters": int(n_params)}


# -- 5. report ------------------------------------------------------------------------------
def _table(results):
    rows = [("model", "test accuracy", "train time (s)")]
    rows += [(k, f"{v['test_accuracy']:.4f}", f"{v['train_seconds']:.1f}")
             for k, v in results["classifiers"].items()]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    return [f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}" for r in rows]


def write_report(results, path, command):
    """Write ``report.md``: the command, the settings and the measured numbers."""
    p, c = results["pretrain"], results["config"]
    lines = [
        "# minillm demo report", "",
        f"Command: `{command}`", "",
        f"Device: {results['device']}; seed {c['seed']}; total wall time "
        f"{results['total_seconds']:.1f} s; minillm {results['version']}.", "",
        "## 1. Pretraining (People's Daily 1998, characters)", "",
        f"- tokenizer: CharTokenizer, min_freq {c['min_freq']}, vocabulary "
        f"{results['vocab_size']} (tokenizer.json)",
        f"- GPT: n_layer {c['n_layer']}, n_head {c['n_head']}, n_embd {c['n_embd']}, block "
        f"{c['block_size']}, {p['parameters']:,} parameters; {p['steps']} steps of "
        f"{c['pretrain_batch_size']} windows, {p['train_seconds']:.1f} s",
        f"- validation loss: {p['val_loss_before']:.4f} before, {p['val_loss_after']:.4f} after",
        "", "Samples (top_k sampling) before:", "",
    ]
    lines += [f"    {s}" for s in p["samples_before"]]
    lines += ["", "after:", ""] + [f"    {s}" for s in p["samples_after"]]
    lines += ["", "## 2. Sentiment classification (chinese_reviews)", "",
              f"Texts truncated to {c['max_len']} characters; {results['n_train']} training, "
              f"{results['n_val']} validation, {results['n_test']} test examples.", "",
              "| model | steps | parameters | validation accuracy | test accuracy | "
              "train time (s) |", "|---|---:|---:|---:|---:|---:|"]
    for k, v in results["classifiers"].items():
        lines.append(f"| {k} | {v['steps']} | {v['parameters']:,} | {v['val_accuracy']:.4f} | "
                     f"{v['test_accuracy']:.4f} | {v['train_seconds']:.1f} |")
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in OUTPUT_FILES if "/" not in f)
              + ", `pretrained/`, `pretrain/`, `gpt-classifier/`, `lstm-classifier/` "
              "(Trainer histories and final checkpoints).", ""]
    Path(path).write_text("\n".join(lines), encoding="utf-8")
    return path


# -- the whole pipeline -----------------------------------------------------------------------
def run_demo(cfg=None, command=None):
    """Run the five steps with ``cfg`` (a :class:`DemoConfig`); returns the results dict
    (also written to ``output_dir/results.json``)."""
    from .. import __version__

    cfg = cfg or DemoConfig()
    t_start = time.perf_counter()
    dev = backend.device(cfg.device)
    cfg = dataclasses.replace(cfg, device=str(dev))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with backend.default_device_as(dev):
        backend.manual_seed(cfg.seed)
        _log(f"== 1. tokenizer: People's Daily (peoples_daily_text), device {dev}")
        train_text, val_text = _pretraining_texts(cfg)
        tok = build_char_tokenizer(train_text, cfg.min_freq)
        tok.save(out / "tokenizer.json")
        _log(f"CharTokenizer: {tok.vocab_size} tokens (characters seen >= {cfg.min_freq} times)")

        _log("== 2. pretraining a character-level GPT")
        gpt, pre = pretrain_gpt(cfg, tok, train_text, val_text)

        _log("== 3. fine-tuning the GPT as a sentiment classifier (chinese_reviews)")
        train, val, test = _review_splits(cfg, tok)
        collator = Collator(pad_id=tok.pad_id, device=dev)
        classifiers = _train_classifiers(cfg, gpt, tok.vocab_size, train, val, test, collator)

    results = {"version": __version__, "device": str(dev), "config": dataclasses.asdict(cfg),
               "vocab_size": tok.vocab_size, "n_train": len(train), "n_val": len(val),
               "n_test": len(test), "pretrain": pre, "classifiers": classifiers}
    results["total_seconds"] = time.perf_counter() - t_start
    results["command"] = command or "minillm demo"
    _save_results(results, out)
    return results


def _pretraining_texts(cfg):
    """The People's Daily training and validation text, cut to ``cfg.max_pretrain_chars``."""
    from .. import datasets

    train_text = "\n".join(datasets.load("peoples_daily_text", split="train"))
    val_text = "\n".join(datasets.load("peoples_daily_text", split="validation"))
    if cfg.max_pretrain_chars is not None:
        train_text = train_text[:cfg.max_pretrain_chars]
        val_text = val_text[:max(cfg.max_pretrain_chars // 8,
                                 (cfg.block_size + 1) * (cfg.eval_windows + 1))]
    return train_text, val_text


def _review_splits(cfg, tok):
    """The encoded ``chinese_reviews`` train, validation and test splits."""
    from .. import datasets

    train = encode_reviews(datasets.load("chinese_reviews", split="train"), tok, cfg.max_len,
                           cfg.max_train_examples)
    val = encode_reviews(datasets.load("chinese_reviews", split="validation"), tok,
                         cfg.max_len, cfg.max_eval_examples)
    test = encode_reviews(datasets.load("chinese_reviews", split="test"), tok, cfg.max_len,
                          cfg.max_eval_examples)
    return train, val, test


def _train_classifiers(cfg, gpt, vocab_size, train, val, test, collator):
    """Steps 3 and 4: fine-tune the GPT classifier, train the LSTM; their infos by name."""
    dev = backend.device(cfg.device)
    backend.manual_seed(cfg.seed)
    gpt_clf = GPTClassifier(gpt).to(dev)
    classifiers = {"GPT (pretrained) + mean-pool head": train_classifier(
        gpt_clf, "gpt-classifier", cfg, train, val, test, collator, cfg.finetune_steps,
        cfg.finetune_lr, "GPT fine-tuned for sentiment")}

    _log("== 4. LSTM baseline from scratch")
    backend.manual_seed(cfg.seed)
    lstm = LSTMClassifier(vocab_size, embed_dim=cfg.n_embd, hidden_size=cfg.lstm_hidden)
    lstm = lstm.to(dev)
    lstm_steps = cfg.lstm_steps or cfg.finetune_steps
    classifiers["LSTM (from scratch)"] = train_classifier(
        lstm, "lstm-classifier", cfg, train, val, test, collator, lstm_steps, cfg.lstm_lr,
        "LSTM sentiment baseline")
    return classifiers


def _save_results(results, out):
    """Step 5: print the table, write ``results.json`` and ``report.md`` into ``out``."""
    _log("== 5. results")
    for line in _table(results):
        _log(line)
    with open(out / "results.json", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, ensure_ascii=False)
    write_report(results, out / "report.md", results["command"])
    _log(f"total time {results['total_seconds']:.1f} s; report: {out / 'report.md'}")


def command_line(argv=None):
    """The command as typed (for the report)."""
    argv = sys.argv[1:] if argv is None else argv
    return "minillm " + " ".join(shlex.quote(a) for a in argv)
