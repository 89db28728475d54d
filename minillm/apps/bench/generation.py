"""Application benchmarks for generation: seq2seq "translation" and code completion.

* :func:`translation` - for each generated seq2seq set (``dates``: ``"2024-03-05" ->
  "March 5, 2024"``, ``zh_numerals``: ``"1234" -> "一千二百三十四"``) a small encoder-decoder
  Transformer (:class:`~minillm.models.seq2seq.Seq2SeqTransformer`) is trained on character
  tokens, the checkpoint with the best validation exact match is kept, and the test split is
  decoded greedily and with beam search. Beside it, a non-neural baseline: the nearest
  neighbour in the training set by character-bigram overlap (a "translation memory").
* :func:`code_completion` - a character GPT (nanoGPT's CPU size, 4 layers x 4 heads x 128)
  trained on the Python standard library's own source files, split by file. It is scored by
  loss (nats and bits per character), against a Kneser-Ney character n-gram on the same test
  text, and on a completion task: given the context and the first half of a line, complete
  the line greedily (exact match of the line and character accuracy).

Both follow :mod:`minillm.apps.bench.quality`: ``fn(device=None, seed=0, fast=False,
progress=True, output_dir=None, log=print, ...)`` returns a JSON-able dict (the common
``benchmark``, ``version``, ``device``, ``seed``, ``fast``, ``settings``, ``anchor`` keys plus
the measured numbers) and, given ``output_dir``, writes ``results.json`` and a PNG plot.
``fast=True`` runs the same code on tiny models and data subsets (for the tests).

Metrics used here:

* **exact match** (sequence accuracy): the fraction of outputs equal to the reference
  string, character for character (the generated sets have one correct answer each).
* **corpus BLEU** (:func:`minillm.metrics.bleu`, 4-grams, no smoothing), in [0, 1]: on
  *words* for English targets (``re.findall(r"\\w+|[^\\w\\s]")``: words and punctuation
  marks, so ``"March 5, 2024"`` is 4 tokens, as sacreBLEU's 13a tokenizer splits it) and on
  *characters* for Chinese targets (no spaces between Chinese words).
* **bits per character** = loss in nats / ln 2; perplexity = exp(loss in nats).
"""
from __future__ import annotations

import hashlib
import math
import re
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

from ... import backend
from ... import functional as F
from ...autograd import no_grad, tensor
from ...data.collators import pad_sequences
from ...data.tokenizers import CharTokenizer
from ...metrics import bleu_details
from ...models import GPT, GPTConfig, NGramLM
from ...models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from ...optim import AdamW, clip_grad_norm_
from .quality import (_bar, _estimate_loss, _finish, _header, _logger, _on, _set_lr, nanogpt_lr,
                      nanogpt_train_loop, new_axes, save_axes)

__all__ = ["translation", "code_completion", "format_generation", "bleu_tokens",
           "translation_scores", "NearestNeighbour", "char_bigram_counts", "stdlib_files",
           "stdlib_fingerprint", "split_files", "completion_lines", "completion_scores",
           "markdown_table", "TRANSLATION_SETS", "STDLIB_EXCLUDE"]

IGNORE_INDEX = -100


# == shared helpers ===========================================================================
def _frac(num, den):
    return float(num) / den if den else 0.0


def _copy_state(model):
    """The model's weights as host arrays (to keep the best checkpoint)."""
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _load_state(model, state, dev):
    model.load_state_dict({k: tensor(v, device=dev) for k, v in state.items()})


def markdown_table(rows, columns):
    """``rows`` (dicts) as a Markdown table; ``columns`` is ``[(key, header, format)]``
    where ``format`` is a format spec (``".4f"``), ``"%"`` (a fraction shown x100 with one
    decimal) or ``""``; a missing or ``None`` value shows as ``-``."""
    def cell(v, fmt):
        if v is None:
            return "-"
        if fmt == "%":
            return f"{100.0 * v:.1f}"
        return format(v, fmt) if fmt else str(v)
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" if not f else "---:" for _, _, f in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(cell(r.get(k), f) for k, _, f in columns) + " |")
    return "\n".join(lines)


# == 1. translation: metrics =================================================================
_WORD_RE = re.compile(r"\w+|[^\w\s]")
BLEU_UNITS = ("words", "characters")


def bleu_tokens(text, unit):
    """The BLEU tokens of ``text``: ``unit="words"`` gives words and punctuation marks
    (``"March 5, 2024"`` -> ``["March", "5", ",", "2024"]``); ``unit="characters"`` gives
    every non-space character (for Chinese)."""
    if not isinstance(text, str):
        raise TypeError(f"bleu_tokens: text must be a str, got {type(text).__name__}")
    if unit == "words":
        return _WORD_RE.findall(text)
    if unit == "characters":
        return [c for c in text if not c.isspace()]
    raise ValueError(f"bleu_tokens: unit must be one of {BLEU_UNITS}, got {unit!r}")


def translation_scores(references, hypotheses, unit):
    """Exact match and corpus BLEU of ``hypotheses`` against one reference string each.

    ``exact_match = mean(h == r)``; ``bleu`` is :func:`minillm.metrics.bleu` (4-gram corpus
    BLEU in [0, 1]) on :func:`bleu_tokens` with ``unit``. Returns ``{"exact_match", "bleu",
    "bleu_precisions", "brevity_penalty", "bleu_unit"}``.
    """
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"translation_scores: need as many hypotheses as references (and at "
                         f"least one), got {len(hypotheses)} and {len(references)}")
    for what, xs in (("references", references), ("hypotheses", hypotheses)):
        bad = [i for i, x in enumerate(xs) if not isinstance(x, str)]
        if bad:
            raise TypeError(f"translation_scores: {what}[{bad[0]}] is a "
                            f"{type(xs[bad[0]]).__name__}; pass strings")
    em = sum(h == r for h, r in zip(hypotheses, references)) / len(references)
    d = bleu_details([[bleu_tokens(r, unit)] for r in references],
                     [bleu_tokens(h, unit) for h in hypotheses])
    return {"exact_match": float(em), "bleu": float(d["bleu"]),
            "bleu_precisions": [float(p) for p in d["precisions"]],
            "brevity_penalty": float(d["bp"]), "bleu_unit": unit}


# == 1. translation: the nearest-neighbour baseline ==========================================
_START, _END = "\x02", "\x03"       # boundary marks: "7" still has the bigrams ^7 and 7$


def _bigrams(text):
    t = _START + text + _END
    return [t[i:i + 2] for i in range(len(t) - 1)]


def char_bigram_counts(texts, vocab=None):
    """Character-bigram counts of ``texts`` (each padded with a start and an end mark).

    ``vocab`` maps bigram -> column; when None it is built from ``texts`` (sorted bigrams).
    Returns ``(counts (n, |vocab|) int32, totals (n,), vocab)``; ``totals`` counts every
    bigram of a text, including those outside ``vocab``.
    """
    grams = [_bigrams(t) for t in texts]
    if vocab is None:
        vocab = {g: i for i, g in enumerate(sorted({g for gs in grams for g in gs}))}
    rows = [i for i, gs in enumerate(grams) for g in gs if g in vocab]
    cols = [vocab[g] for gs in grams for g in gs if g in vocab]
    counts = np.zeros((len(texts), len(vocab)), dtype=np.int32)
    np.add.at(counts, (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)), 1)
    totals = np.array([len(gs) for gs in grams], dtype=np.int64)
    return counts, totals, vocab


class NearestNeighbour:
    """Translate by lookup: a source seen in training gets its training target; any other
    gets the target of the most similar training source, by the Dice overlap of their
    character-bigram multisets::

        sim(a, b) = 2 sum_g min(c_a(g), c_b(g)) / (|a| + |b|)       |a| = bigrams in a

    (1 for identical strings; ties go to the earlier training pair). No parameters are
    learned: the "model" is the training set.

    The overlap of every query with every training source is computed without a loop over
    pairs: ``min(x, y) = sum_{t >= 1} [x >= t][y >= t]`` for counts ``x, y >= 0``, so

        overlap = sum_{t=1..max count} (Q >= t) @ (C >= t)^T

    a few matrix products of 0/1 matrices (exact in float32 for these small integers).
    """

    def fit(self, sources, targets):
        sources, targets = list(sources), list(targets)
        if len(sources) != len(targets) or not sources:
            raise ValueError(f"NearestNeighbour.fit: need as many targets as sources (and at "
                             f"least one), got {len(sources)} and {len(targets)}")
        self.sources, self.targets = sources, targets
        self.counts, self.totals, self.vocab = char_bigram_counts(sources)
        self.max_count = int(self.counts.max()) if self.counts.size else 0
        self.index = {}
        for i, s in enumerate(sources):
            self.index.setdefault(s, i)             # the first pair with that source
        return self

    def _check_fitted(self):
        if not hasattr(self, "counts"):
            raise RuntimeError("NearestNeighbour: call fit(sources, targets) first")

    def similarity(self, queries):
        """``(len(queries), n_train)`` float64 Dice similarities."""
        self._check_fitted()
        q, q_tot, _ = char_bigram_counts(list(queries), self.vocab)
        overlap = np.zeros((len(q), len(self.sources)), dtype=np.float32)
        for t in range(1, self.max_count + 1):
            overlap += (q >= t).astype(np.float32) @ (self.counts >= t).astype(np.float32).T
        return 2.0 * overlap.astype(np.float64) / (q_tot[:, None] + self.totals[None, :])

    def neighbours(self, queries, chunk=1024):
        """The index of the chosen training pair for each query (exact source first)."""
        queries = list(queries)
        out = np.empty(len(queries), dtype=np.int64)
        for i in range(0, len(queries), chunk):
            out[i:i + chunk] = self.similarity(queries[i:i + chunk]).argmax(axis=1)
        for i, s in enumerate(queries):
            j = self.index.get(s)
            if j is not None:
                out[i] = j
        return out

    def predict(self, queries):
        """The target of each query's neighbour."""
        return [self.targets[j] for j in self.neighbours(queries)]


# == 1. translation: the Transformer ==========================================================
TRANSLATION_SETS = {"dates": "words", "zh_numerals": "characters"}     # dataset -> BLEU unit

SEQ2SEQ = dict(d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
               dim_feedforward=256, dropout=0.1, max_len=64, batch_size=64, max_steps=3000,
               learning_rate=1e-3, warmup_steps=200, min_lr=1e-4, weight_decay=0.01,
               grad_clip=1.0, eval_interval=500, beam_size=4, length_penalty=1.0,
               decode_margin=4, decode_batch=250, log_interval=50, n_examples=5)
SEQ2SEQ_FAST = dict(SEQ2SEQ, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                    dim_feedforward=32, batch_size=16, max_steps=12, warmup_steps=2,
                    eval_interval=6, decode_batch=16, log_interval=4, n_train=96, n_val=24,
                    n_test=24)


def _encode_pairs(pairs, src_tok, tgt_tok):
    """Padded id arrays of ``pairs``: ``src`` (pad), ``tgt_in = [bos, y]`` (pad) and
    ``tgt_out = [y, eos]`` (-100, ignored by the loss), with the lengths."""
    src = [src_tok.encode(p["source"]) for p in pairs]
    tgt = [tgt_tok.encode(p["target"]) for p in pairs]
    return {"src": pad_sequences(src, src_tok.pad_id),
            "src_len": np.array([len(s) for s in src], dtype=np.int64),
            "tgt_in": pad_sequences([[tgt_tok.bos_id] + t for t in tgt], tgt_tok.pad_id),
            "tgt_out": pad_sequences([t + [tgt_tok.eos_id] for t in tgt], IGNORE_INDEX),
            "tgt_len": np.array([len(t) + 1 for t in tgt], dtype=np.int64)}


def _batch(enc, idx, dev, pad_id):
    """Tensors for the examples ``idx``, cut to the longest source/target among them."""
    s, t = int(enc["src_len"][idx].max()), int(enc["tgt_len"][idx].max())
    src = enc["src"][idx, :s]
    return (tensor(src, device=dev), tensor(src == pad_id, device=dev),
            tensor(enc["tgt_in"][idx, :t], device=dev),
            tensor(enc["tgt_out"][idx, :t], device=dev))


def _teacher_forced_loss(model, enc, dev, pad_id, batch_size):
    """Mean cross-entropy per target token (``eos`` included) over all pairs of ``enc``."""
    total, count = None, 0
    was = model.training
    model.eval()
    try:
        with no_grad():
            for i in range(0, len(enc["src"]), batch_size):
                idx = np.arange(i, min(i + batch_size, len(enc["src"])))
                src, kpm, tin, tout = _batch(enc, idx, dev, pad_id)
                part = F.cross_entropy(model(src, tin, src_key_padding_mask=kpm), tout,
                                       ignore_index=IGNORE_INDEX, reduction="sum")
                total = part if total is None else total + part
                count += int(enc["tgt_len"][idx].sum())
    finally:
        model.train(was)
    return total.item() / count


def _strings(tgt_tok, rows):
    """Decoded outputs: drop the leading ``bos``, stop at the first ``eos`` (other special
    tokens stay visible as their strings, so they count as errors)."""
    out = []
    for row in rows:
        ids = row[1:].tolist()
        if tgt_tok.eos_id in ids:
            ids = ids[:ids.index(tgt_tok.eos_id)]
        out.append(tgt_tok.decode(ids))
    return out


def _decode(model, enc, dev, src_tok, tgt_tok, max_len, batch_size, beam_size=None,
            length_penalty=1.0):
    """Greedy (``beam_size=None``) or beam-search outputs for every source of ``enc``."""
    out = []
    for i in range(0, len(enc["src"]), batch_size):
        idx = np.arange(i, min(i + batch_size, len(enc["src"])))
        src_np = enc["src"][idx, :int(enc["src_len"][idx].max())]
        src, kpm = tensor(src_np, device=dev), tensor(src_np == src_tok.pad_id, device=dev)
        if beam_size is None:
            ids = model.greedy_decode(src, max_len, tgt_tok.bos_id, tgt_tok.eos_id,
                                      src_key_padding_mask=kpm)
        else:
            ids = model.beam_search(src, beam_size, max_len, tgt_tok.bos_id, tgt_tok.eos_id,
                                    length_penalty=length_penalty, src_key_padding_mask=kpm)
        out += _strings(tgt_tok, ids.numpy())
    return out


def _seq2seq_data(name, splits, s):
    """Character tokenizers and padded encodings of ``splits``, checked against ``max_len``.

    Returns ``{"splits", "encs", "src_tok", "tgt_tok", "max_decode"}``."""
    src_tok = CharTokenizer.train([p["source"] for p in splits["train"]])
    tgt_tok = CharTokenizer.train([p["target"] for p in splits["train"]])
    encs = {sp: _encode_pairs(pairs, src_tok, tgt_tok) for sp, pairs in splits.items()}
    longest = max(encs["train"]["src"].shape[1], encs["train"]["tgt_in"].shape[1])
    if longest + s["decode_margin"] + 1 > s["max_len"]:
        raise ValueError(f"translation: {name} has sequences of {longest} tokens; max_len="
                         f"{s['max_len']} positions are too few")
    max_decode = int(encs["train"]["tgt_len"].max()) + s["decode_margin"]
    return {"splits": splits, "encs": encs, "src_tok": src_tok, "tgt_tok": tgt_tok,
            "max_decode": max_decode}


def _seq2seq_model(d, s, dev, seed):
    """A seeded :class:`Seq2SeqTransformer` of ``s``'s sizes and its AdamW (weight decay on
    the 2-D weights only)."""
    backend.manual_seed(seed)
    cfg = Seq2SeqConfig(src_vocab_size=d["src_tok"].vocab_size,
                        tgt_vocab_size=d["tgt_tok"].vocab_size,
                        d_model=s["d_model"], nhead=s["nhead"],
                        num_encoder_layers=s["num_encoder_layers"],
                        num_decoder_layers=s["num_decoder_layers"],
                        dim_feedforward=s["dim_feedforward"], dropout=s["dropout"],
                        max_len=s["max_len"])
    model = Seq2SeqTransformer(cfg).to(dev)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = AdamW([{"params": decay, "weight_decay": s["weight_decay"]},
                 {"params": no_decay, "weight_decay": 0.0}], lr=s["learning_rate"])
    return model, opt


def _seq2seq_step(model, opt, enc, idx, lr, s, dev, pad_id):
    """One AdamW step at learning rate ``lr`` on the pairs ``idx`` of ``enc`` (teacher
    forcing, gradient norm clipped); returns the loss tensor."""
    _set_lr(opt, lr)
    src, kpm, tin, tout = _batch(enc, idx, dev, pad_id)
    loss = F.cross_entropy(model(src, tin, src_key_padding_mask=kpm), tout,
                           ignore_index=IGNORE_INDEX)
    opt.zero_grad()
    loss.backward()
    clip_grad_norm_(model.parameters(), s["grad_clip"])
    opt.step()
    return loss


def _seq2seq_evaluate(name, step, model, d, s, dev, say, log):
    """Validation loss and greedy exact match at ``step``, recorded in ``log``; returns the
    score ``(exact match, loss)``."""
    t0 = time.perf_counter()
    val_loss = _teacher_forced_loss(model, d["encs"]["validation"], dev, d["src_tok"].pad_id,
                                    s["decode_batch"])
    hyp = _decode(model, d["encs"]["validation"], dev, d["src_tok"], d["tgt_tok"],
                  d["max_decode"], s["decode_batch"])
    em = _frac(sum(h == p["target"] for h, p in zip(hyp, d["splits"]["validation"])), len(hyp))
    log["evals"].append({"step": step, "val_loss": val_loss, "val_exact_match": em})
    log["history"].append({"step": step, "eval_loss": val_loss})
    say(f"{name} step {step}: validation loss {val_loss:.4f}, exact match {em:.4f}")
    log["eval_seconds"] += time.perf_counter() - t0
    return em, val_loss


def _seq2seq_loop(name, model, opt, d, s, dev, seed, progress, say):
    """``max_steps`` steps on shuffled batches (reshuffled when the epoch runs out), evaluated
    every ``eval_interval`` steps and at the end. Returns ``log`` (``history``, ``evals``,
    ``train_seconds``, ``eval_seconds``, ``best``, ``best_step``, ``best_state``)."""
    rng = np.random.default_rng(seed)
    n_train = len(d["encs"]["train"]["src"])
    order, pos = rng.permutation(n_train), 0
    log = {"history": [], "evals": [], "train_seconds": 0.0, "eval_seconds": 0.0,
           "best": (-1.0, math.inf), "best_step": None, "best_state": None}
    bar = _bar(s["max_steps"], f"translation {name}", progress)
    model.train()
    try:
        for step in range(s["max_steps"]):
            t0 = time.perf_counter()
            if pos + s["batch_size"] > n_train:
                order, pos = rng.permutation(n_train), 0
            idx = order[pos:pos + s["batch_size"]]
            pos += s["batch_size"]
            lr = nanogpt_lr(step, s["learning_rate"], s["warmup_steps"], s["max_steps"],
                            s["min_lr"])
            loss = _seq2seq_step(model, opt, d["encs"]["train"], idx, lr, s, dev,
                                 d["src_tok"].pad_id)
            last = step == s["max_steps"] - 1
            if step % s["log_interval"] == 0 or last:
                lossf = loss.item()
                log["history"].append({"step": step, "loss": lossf, "learning_rate": lr})
                bar.set_postfix(loss=f"{lossf:.4f}", lr=f"{lr:.2e}")
            log["train_seconds"] += time.perf_counter() - t0
            bar.update()
            if (step + 1) % s["eval_interval"] == 0 or last:
                score = _seq2seq_evaluate(name, step + 1, model, d, s, dev, say, log)
                best = log["best"]
                if score[0] > best[0] or (score[0] == best[0] and score[1] < best[1]):
                    log.update(best=score, best_step=step + 1, best_state=_copy_state(model))
    finally:
        bar.close()
    return log


def _train_seq2seq(name, splits, s, dev, seed, progress, say):
    """Train on ``splits["train"]``; keep the step with the best validation exact match
    (greedy; ties: the lower validation loss). Returns ``(model, toks, encs, info)``."""
    d = _seq2seq_data(name, splits, s)
    model, opt = _seq2seq_model(d, s, dev, seed)
    n_params = int(sum(p.size for p in model.parameters()))
    say(f"{name}: {len(splits['train'])} train / {len(splits['validation'])} validation / "
        f"{len(splits['test'])} test pairs; vocab {d['src_tok'].vocab_size} -> "
        f"{d['tgt_tok'].vocab_size}; Transformer {s['num_encoder_layers']}+"
        f"{s['num_decoder_layers']} layers x {s['d_model']}, {n_params:,} parameters; "
        f"{s['max_steps']} steps of {s['batch_size']} on {dev}")
    log = _seq2seq_loop(name, model, opt, d, s, dev, seed, progress, say)
    best = log["best"]
    _load_state(model, log["best_state"], dev)
    say(f"{name}: kept step {log['best_step']} (validation exact match {best[0]:.4f})")
    info = {"parameters": n_params, "train_seconds": log["train_seconds"],
            "eval_seconds": log["eval_seconds"], "best_step": log["best_step"],
            "val_exact_match": best[0], "val_loss": best[1], "evals": log["evals"],
            "history": log["history"], "max_decode": d["max_decode"],
            "src_vocab_size": d["src_tok"].vocab_size, "tgt_vocab_size": d["tgt_tok"].vocab_size}
    return model, (d["src_tok"], d["tgt_tok"]), d["encs"], info


def _translation_settings(datasets, fast):
    """The checked dataset names (a tuple) and the settings of a run."""
    if isinstance(datasets, str):
        datasets = (datasets,)
    unknown = [d for d in datasets if d not in TRANSLATION_SETS]
    if unknown or not datasets:
        raise ValueError(f"translation: datasets must be among {sorted(TRANSLATION_SETS)}, got "
                         f"{list(datasets)}")
    s = dict(SEQ2SEQ_FAST if fast else SEQ2SEQ)
    s["datasets"] = list(datasets)
    return datasets, s


def _translation_splits(name, s, fast):
    """The train, validation and test pairs of ``name`` (the first ``n_train``, ``n_val``,
    ``n_test`` in fast mode)."""
    from ... import datasets as data

    splits = {sp: list(data.load(name, split=sp)) for sp in ("train", "validation", "test")}
    if fast:
        splits = {sp: splits[sp][:s[key]] for sp, key in
                  (("train", "n_train"), ("validation", "n_val"), ("test", "n_test"))}
    return splits


def _nearest_neighbour_run(splits):
    """Fit :class:`NearestNeighbour` on the training pairs; its test predictions, validation
    exact match and timings (``pred``, ``val_em``, ``fit_seconds``, ``seconds``)."""
    t0 = time.perf_counter()
    memory = NearestNeighbour().fit([p["source"] for p in splits["train"]],
                                    [p["target"] for p in splits["train"]])
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = memory.predict([p["source"] for p in splits["test"]])
    seconds = time.perf_counter() - t0
    val = memory.predict([p["source"] for p in splits["validation"]])
    val_em = _frac(sum(h == p["target"] for h, p in zip(val, splits["validation"])), len(val))
    return {"pred": pred, "val_em": val_em, "fit_seconds": fit_seconds, "seconds": seconds}


def _decode_test(model, toks, encs, info, s, dev):
    """Greedy and beam-search outputs on the test split, with their decoding times."""
    src_tok, tgt_tok = toks
    preds, seconds = {}, {}
    for kind, beam in (("greedy", None), ("beam", s["beam_size"])):
        t0 = time.perf_counter()
        preds[kind] = _decode(model, encs["test"], dev, src_tok, tgt_tok, info["max_decode"],
                              s["decode_batch"], beam, s["length_penalty"])
        seconds[kind] = time.perf_counter() - t0
    return preds, seconds


def _translation_rows(name, unit, scores, info, nn, seconds, s, say):
    """The three table rows of one dataset: nearest neighbour, greedy, beam (each logged)."""
    labels = {"nearest_neighbour": "nearest neighbour (char bigrams)",
              "greedy": "Transformer, greedy", "beam": f"Transformer, beam {s['beam_size']}"}
    rows = []
    for kind in ("nearest_neighbour", "greedy", "beam"):
        neural = kind != "nearest_neighbour"
        rows.append({"dataset": name, "model": labels[kind],
                     "exact_match": scores[kind]["exact_match"],
                     "bleu": scores[kind]["bleu"], "bleu_unit": unit,
                     "val_exact_match": info["val_exact_match"] if neural else nn["val_em"],
                     "train_seconds": info["train_seconds"] if neural else nn["fit_seconds"],
                     "parameters": info["parameters"] if neural else None,
                     "decode_seconds": seconds[kind] if neural else nn["seconds"]})
        say(f"{name} test, {labels[kind]}: exact match "
            f"{scores[kind]['exact_match']:.4f}, BLEU ({unit}) {scores[kind]['bleu']:.4f}")
    return rows


def _translation_examples(srcs, refs, preds, seed, s, say):
    """``n_examples`` test pairs drawn with ``default_rng([seed, 5])``, with every output
    (each logged)."""
    pick = np.sort(np.random.default_rng([seed, 5]).choice(
        len(refs), size=min(s["n_examples"], len(refs)), replace=False))
    examples = [{"source": srcs[i], "reference": refs[i], "greedy": preds["greedy"][i],
                 "beam": preds["beam"][i], "nearest_neighbour": preds["nearest_neighbour"][i]}
                for i in pick]
    for e in examples:
        say(f"  {e['source']} -> greedy {e['greedy']!r}, beam {e['beam']!r}, "
            f"nearest neighbour {e['nearest_neighbour']!r} (reference "
            f"{e['reference']!r})")
    return examples


def _translation_dataset(name, s, dev, seed, fast, progress, say):
    """One dataset: the nearest neighbour, the Transformer trained and decoded, the scores.
    Returns ``(rows, details)``."""
    unit = TRANSLATION_SETS[name]
    splits = _translation_splits(name, s, fast)
    refs = [p["target"] for p in splits["test"]]
    srcs = [p["source"] for p in splits["test"]]
    nn = _nearest_neighbour_run(splits)
    model, toks, encs, info = _train_seq2seq(name, splits, s, dev, seed, progress, say)
    preds, seconds = _decode_test(model, toks, encs, info, s, dev)
    preds["nearest_neighbour"] = nn["pred"]
    scores = {k: translation_scores(refs, v, unit) for k, v in preds.items()}
    rows = _translation_rows(name, unit, scores, info, nn, seconds, s, say)
    examples = _translation_examples(srcs, refs, preds, seed, s, say)
    details = {
        "bleu_unit": unit, "n_train": len(splits["train"]),
        "n_val": len(splits["validation"]), "n_test": len(refs),
        "src_vocab_size": info["src_vocab_size"], "tgt_vocab_size": info["tgt_vocab_size"],
        "max_decode_len": info["max_decode"], "best_step": info["best_step"],
        "val_exact_match": info["val_exact_match"], "val_loss": info["val_loss"],
        "nearest_neighbour_val_exact_match": nn["val_em"],
        "eval_seconds": info["eval_seconds"], "evals": info["evals"],
        "history": info["history"], "scores": scores, "examples": examples,
        "references": refs, "predictions": preds}
    return rows, details


def _plot_translation(details, path):
    """Training and validation loss, and validation exact match, of every dataset."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax_loss, ax_em = fig.subplots(1, 2)
    for i, (name, d) in enumerate(details.items()):
        tr = [h for h in d["history"] if "loss" in h]
        steps = [e["step"] for e in d["evals"]]
        ax_loss.plot([h["step"] for h in tr], [h["loss"] for h in tr], "-", color=f"C{i}",
                     label=f"{name} train")
        ax_loss.plot(steps, [e["val_loss"] for e in d["evals"]], "o--", color=f"C{i}",
                     label=f"{name} validation")
        ax_em.plot(steps, [e["val_exact_match"] for e in d["evals"]], "o-", color=f"C{i}",
                   label=name)
    ax_em.set_ylim(-0.02, 1.02)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy (nats per token)")
    ax_loss.set_title("Loss")
    ax_loss.legend()
    ax_em.set_xlabel("step")
    ax_em.set_ylabel("exact match (greedy)")
    ax_em.set_title("Validation exact match")
    ax_em.legend()
    fig.suptitle("Seq2seq Transformer on generated translation sets, minillm")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def translation(device=None, seed=0, fast=False, progress=True, output_dir=None, log=print,
                datasets=("dates", "zh_numerals")):
    """Seq2seq "translation" on the generated sets: a Transformer beside a nearest neighbour.

    For each dataset in ``datasets`` (``dates``, ``zh_numerals``; 8,000 / 1,000 / 1,000
    pairs): character tokenizers built from the training split (source and target apart);
    :class:`Seq2SeqTransformer` with :data:`SEQ2SEQ` sizes (2 + 2 post-LN layers, d_model 64,
    4 heads, FFN 256, dropout 0.1, tied output), teacher forcing, AdamW (lr 1e-3, 200 warmup
    steps, cosine to 1e-4), batches of 64 pairs, 3,000 steps, gradient norm clipped at 1. Every
    500 steps the validation loss and greedy exact match are measured; the weights of the
    best evaluation are kept (model selection by validation). On the test split: exact match
    and corpus BLEU (:func:`translation_scores`; words for English targets, characters for
    Chinese) with greedy decoding, with beam search (beam 4, length penalty 1: mean log-prob
    per token), and for :class:`NearestNeighbour` (character bigrams).

    Returns keys: ``rows`` (``[{dataset, model, exact_match, bleu, bleu_unit,
    train_seconds, parameters, decode_seconds}]``; ``parameters`` is None for the nearest
    neighbour, which stores the ``n_train`` pairs), ``table`` (Markdown), ``datasets``
    (per dataset: sizes, vocabularies, ``best_step``, ``val_exact_match``, ``evals``,
    ``history``, ``examples`` (5 test pairs: source, reference, greedy, beam,
    nearest_neighbour), ``references`` and ``predictions`` (every test output of each
    model), ``bleu_unit``), ``total_seconds``, plus the common keys.
    """
    say = _logger(log)
    t_start = time.perf_counter()
    datasets, s = _translation_settings(datasets, fast)
    rows, details = [], {}
    with _on(device) as dev:
        for name in datasets:
            rows_i, details[name] = _translation_dataset(name, s, dev, seed, fast, progress, say)
            rows += rows_i

    table = markdown_table(rows, [("dataset", "dataset", ""), ("model", "model", ""),
                                  ("exact_match", "exact match (%)", "%"),
                                  ("bleu", "BLEU (x100)", "%"), ("bleu_unit", "BLEU on", ""),
                                  ("train_seconds", "train (s)", ".1f"),
                                  ("parameters", "parameters", ",")])
    result = _header("translation", dev, seed, fast, s,
                     {"note": "no published number: the generated sets are minillm's own; the "
                              "nearest-neighbour rows are the reference. A program gives the "
                              "answers, so a perfect model reaches exact match 1.0"})
    result.update(rows=rows, table=table, datasets=details)
    result["total_seconds"] = time.perf_counter() - t_start
    say(table)
    return _finish(result, output_dir, lambda path: _plot_translation(details, path), log)


# == 2. code completion: the corpus ===========================================================
STDLIB_EXCLUDE = ("test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages",
                  "__pycache__")


def stdlib_files(root=None):
    """The standard library's own Python sources: sorted ``[(relative path, size in bytes)]``.

    ``root`` defaults to ``sysconfig.get_paths()["stdlib"]``. Taken: the top-level ``*.py``
    files and every ``*.py`` inside the top-level packages (folders with an
    ``__init__.py``), skipping any folder named in :data:`STDLIB_EXCLUDE` (test suites,
    IDLE, lib2to3, installed packages).
    """
    root = Path(sysconfig.get_paths()["stdlib"] if root is None else root)
    if not root.is_dir():
        raise ValueError(f"stdlib_files: {root} is not a directory")
    out = [(p.name, p.stat().st_size) for p in root.glob("*.py") if p.is_file()]
    for pkg in root.iterdir():
        if not pkg.is_dir() or pkg.name in STDLIB_EXCLUDE or not (pkg / "__init__.py").is_file():
            continue
        for p in pkg.rglob("*.py"):
            rel = p.relative_to(root)
            if p.is_file() and not any(part in STDLIB_EXCLUDE for part in rel.parts[:-1]):
                out.append((rel.as_posix(), p.stat().st_size))
    if not out:
        raise ValueError(f"stdlib_files: no Python files found under {root}")
    return sorted(out)


def stdlib_fingerprint(files):
    """sha256 (hex) of the sorted ``(path, size)`` list, one ``path<TAB>size`` line each:
    equal fingerprints mean the same file list with the same sizes."""
    text = "".join(f"{p}\t{n}\n" for p, n in sorted(files))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_files(paths, seed=0, fractions=(0.9, 0.05, 0.05)):
    """Split ``paths`` BY FILE into ``{"train", "validation", "test"}`` lists.

    The paths are sorted, then shuffled with ``numpy.random.default_rng(seed)``;
    validation and test take ``round(fraction * n)`` files each (at least 1), train the
    rest. Each list keeps the shuffled order (which decides what a size cap keeps).
    """
    paths = sorted(paths)
    if len(paths) < 3:
        raise ValueError(f"split_files: need at least 3 files to split, got {len(paths)}")
    if len(fractions) != 3 or not math.isclose(sum(fractions), 1.0) or min(fractions) <= 0:
        raise ValueError(f"split_files: fractions must be 3 positive numbers summing to 1, got "
                         f"{fractions}")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = max(1, round(fractions[1] * len(paths)))
    n_test = max(1, round(fractions[2] * len(paths)))
    shuffled = [paths[i] for i in order]
    return {"validation": shuffled[:n_val], "test": shuffled[n_val:n_val + n_test],
            "train": shuffled[n_val + n_test:]}


def _read_capped(root, paths, cap):
    """``[(path, text)]`` of ``paths`` in order until ``cap`` characters (the last file cut
    at a line end within the cap); each text ends with a newline."""
    out, total = [], 0
    for p in paths:
        if total >= cap:
            break
        with open(Path(root) / p, encoding="utf-8") as f:
            text = f.read()
        if not text.endswith("\n"):
            text += "\n"
        if total + len(text) > cap:
            cut = text.rfind("\n", 0, cap - total)
            text = text[:cut + 1]
            if not text:
                break
        out.append((p, text))
        total += len(text)
    return out


def _char_ids(text, tok):
    """Ids of every character of ``text`` (``unk`` outside the vocabulary), vectorised:
    code points are looked up in the sorted code points of the vocabulary."""
    chars = [c for c in tok.get_vocab() if len(c) == 1 and tok.token_to_id(c)
             not in tok.all_special_ids]
    cps = np.array([ord(c) for c in chars], dtype=np.int64)
    ids = np.array([tok.token_to_id(c) for c in chars], dtype=np.int64)
    order = np.argsort(cps)
    cps, ids = cps[order], ids[order]
    x = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    pos = np.minimum(np.searchsorted(cps, x), len(cps) - 1)
    return np.where(cps[pos] == x, ids[pos], tok.unk_id)


# == 2. code completion: the line-completion task ============================================
def completion_lines(files, n, seed=0, min_context=128, min_chars=10):
    """Lines to complete, drawn from ``files`` (``[(path, text)]``).

    A candidate line starts at least ``min_context`` characters into its file, has at least
    ``min_chars`` non-space characters and ends with a newline. It is split after its
    indentation plus half of the rest: ``split = indent + len(rest) // 2``. ``n`` candidates
    are drawn without replacement (``numpy.random.default_rng(seed)``), in file order.
    Returns ``[{"file", "start", "split", "prefix", "reference"}]``: ``prefix`` is the
    line's first half, ``reference`` the rest of the line (without the newline); the model's
    input is ``text[:split]`` of that file.
    """
    cands = []
    for fi, (path, text) in enumerate(files):
        start = 0
        for line in text.splitlines(keepends=True):
            body = line[:-1] if line.endswith("\n") else None
            if (body is not None and start >= min_context and "\r" not in body
                    and sum(not c.isspace() for c in body) >= min_chars):
                indent = len(body) - len(body.lstrip())
                split = start + indent + (len(body) - indent) // 2
                cands.append((fi, start, split, start + len(body)))
            start += len(line)
    if not cands:
        raise ValueError("completion_lines: no line qualifies (the files are too short)")
    pick = np.sort(np.random.default_rng(seed).choice(len(cands), size=min(n, len(cands)),
                                                      replace=False))
    out = []
    for k in pick:
        fi, start, split, end = cands[k]
        text = files[fi][1]
        out.append({"file": files[fi][0], "start": start, "split": split,
                    "prefix": text[start:split], "reference": text[split:end]})
    return out


def completion_scores(references, completions):
    """Exact match and character accuracy of line completions.

    ``completions[i]`` is the generated continuation as a sequence of tokens (characters;
    a string works), up to its first newline included. Exact match: the completion is
    ``reference + "\\n"`` (the line is finished and nothing else is added). Character
    accuracy: over all reference characters, the fraction where the completion has the
    same character at the same position. Returns ``{"exact_match", "char_accuracy",
    "n_lines", "n_chars"}``.
    """
    references, completions = list(references), list(completions)
    if len(references) != len(completions) or not references:
        raise ValueError(f"completion_scores: need as many completions as references (and at "
                         f"least one), got {len(completions)} and {len(references)}")
    exact = correct = chars = 0
    for ref, gen in zip(references, completions):
        gen = list(gen)
        exact += gen[:len(ref) + 1] == list(ref) + ["\n"]
        correct += sum(g == r for g, r in zip(gen, ref))
        chars += len(ref)
    return {"exact_match": _frac(exact, len(references)), "char_accuracy": _frac(correct, chars),
            "n_lines": len(references), "n_chars": chars}


def _cut_line(tokens):
    """The tokens up to and including the first newline."""
    return tokens[:tokens.index("\n") + 1] if "\n" in tokens else tokens


# == 2. code completion: the models ===========================================================
CODE = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.0, bias=False,
            batch_size=16, max_iters=3000, learning_rate=1e-3, betas=(0.9, 0.99),
            weight_decay=0.1, warmup_iters=100, min_lr=1e-4, grad_clip=1.0,
            eval_interval=500, eval_iters=20, log_interval=20, train_cap=3_500_000,
            eval_cap=1_000_000, eval_batch=64, ngram_orders=(4, 6, 8, 10), n_lines=200,
            min_context=128, min_chars=10, gen_batch=50, n_samples=3, sample_chars=120,
            temperature=0.8, top_k=40, top_p=0.95)
CODE_FAST = dict(CODE, n_layer=1, n_head=2, n_embd=16, block_size=32, batch_size=4,
                 max_iters=8, warmup_iters=2, eval_interval=4, eval_iters=2, log_interval=2,
                 train_cap=40_000, eval_cap=8_000, eval_batch=16, ngram_orders=(2, 3),
                 n_lines=6, gen_batch=4, sample_chars=16)


def _text_loss(model, ids, block, batch, dev):
    """Mean loss (nats) of predicting ``ids[1:]``: the text is cut into consecutive windows
    of ``block`` characters, each predicted within its window (as in training). Returns
    ``(mean loss, characters scored)``."""
    n_win = (len(ids) - 1) // block
    total, count = None, 0
    with no_grad():
        was = model.training
        model.eval()
        try:
            offs = np.arange(block)
            for i in range(0, n_win, batch):
                starts = np.arange(i, min(i + batch, n_win)) * block
                x = tensor(ids[starts[:, None] + offs], device=dev)
                y = tensor(ids[starts[:, None] + offs + 1], device=dev)
                part = F.cross_entropy(model(x), y, reduction="sum")
                total = part if total is None else total + part
                count += y.shape[0] * block
            rest = len(ids) - 1 - n_win * block
            if rest > 0:                                   # the last, shorter window
                x = tensor(ids[None, n_win * block:-1], device=dev)
                y = tensor(ids[None, n_win * block + 1:], device=dev)
                part = F.cross_entropy(model(x), y, reduction="sum")
                total = part if total is None else total + part
                count += rest
        finally:
            model.train(was)
    return total.item() / count, count


def _gpt_complete(model, prompts, refs, newline_id, itos, batch, dev):
    """Greedy completions (token strings) of equal-length prompts, in batches of similar
    reference length; each runs up to ``len(reference) + 1`` new tokens or a newline."""
    order = np.argsort([len(r) for r in refs], kind="stable")
    out = [None] * len(prompts)
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        steps = max(len(refs[j]) for j in idx) + 1
        x = tensor(np.stack([prompts[j] for j in idx]), device=dev)
        gen = model.generate(x, steps, do_sample=False, eos_id=newline_id).numpy()
        for row, j in zip(gen[:, x.shape[1]:], idx):
            out[j] = _cut_line([itos[t] for t in row[:len(refs[j]) + 1].tolist()])
    return out


def _ngram_complete(lm, prompt_tokens, refs):
    """Greedy completions from the n-gram: the argmax of ``next_distribution`` each step."""
    out = []
    for toks, ref in zip(prompt_tokens, refs):
        hist, gen = list(toks), []
        for _ in range(len(ref) + 1):
            w = lm.vocab[int(np.argmax(lm.next_distribution(hist[-(lm.n - 1):] if lm.n > 1
                                                              else [])))]
            gen.append(w)
            hist.append(w)
            if w == "\n":
                break
        out.append(gen)
    return out


def _code_corpus(s, seed, say):
    """The stdlib files split by file, read (capped), and turned into character ids.

    Adds ``vocab_size`` and the character counts to ``s``; returns ``{"root", "files",
    "file_counts", "texts", "tok", "ids", "itos"}``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files(root)
    parts = split_files(list(dict(files)), seed)
    texts = {"train": _read_capped(root, parts["train"], s["train_cap"]),
             "validation": _read_capped(root, parts["validation"], s["eval_cap"]),
             "test": _read_capped(root, parts["test"], s["eval_cap"])}
    joined = {sp: "".join(t for _, t in v) for sp, v in texts.items()}
    tok = CharTokenizer.train([joined["train"]],
                              special_tokens={"pad": None, "bos": None, "eos": None})
    ids = {sp: _char_ids(t, tok) for sp, t in joined.items()}
    itos = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    s.update(vocab_size=tok.vocab_size, train_chars=len(joined["train"]),
             val_chars=len(joined["validation"]), test_chars=len(joined["test"]))
    file_counts = {"total": len(files), **{sp: len(v) for sp, v in parts.items()},
                   **{f"{sp}_used": len(v) for sp, v in texts.items()}}
    say(f"code-completion: {len(files)} stdlib files ({root}, Python "
        f"{sys.version.split()[0]}) -> {file_counts['train']} train / "
        f"{file_counts['validation']} validation / {file_counts['test']} test files; using "
        f"{s['train_chars']:,} training characters (cap {s['train_cap']:,}), vocab "
        f"{tok.vocab_size}")
    return {"root": root, "files": files, "file_counts": file_counts, "texts": texts,
            "tok": tok, "ids": ids, "itos": itos}


def _code_ngram(corpus, s, say):
    """Kneser-Ney n-grams of every order in ``ngram_orders``; the one with the best validation
    perplexity is scored on the test text. Returns ``(best model, summary dict)``."""
    itos = corpus["itos"]
    tokens = {sp: [itos[i] for i in v.tolist()] for sp, v in corpus["ids"].items()}
    ngram_rows, best_lm, best_row = [], None, None
    for n in s["ngram_orders"]:
        t0 = time.perf_counter()
        lm = NGramLM(n, smoothing="kneser_ney").fit(tokens["train"])
        fit_seconds = time.perf_counter() - t0
        val_lp = lm.token_logprobs(tokens["validation"])[1:]
        row = {"order": n, "val_perplexity": float(np.exp(-val_lp.mean())),
               "fit_seconds": fit_seconds}
        ngram_rows.append(row)
        say(f"{n}-gram (Kneser-Ney): validation perplexity {row['val_perplexity']:.3f} "
            f"(fit {fit_seconds:.1f} s)")
        if best_row is None or row["val_perplexity"] < best_row["val_perplexity"]:
            best_lm, best_row = lm, row
    test_lp = best_lm.token_logprobs(tokens["test"])[1:]       # the same characters as the GPT
    test_loss = float(-test_lp.mean())
    ngram = {"order": best_lm.n, "orders": ngram_rows,
             "val_perplexity": best_row["val_perplexity"], "test_loss": test_loss,
             "test_bpc": test_loss / math.log(2), "test_perplexity": math.exp(test_loss),
             "chars_scored": int(test_lp.size), "fit_seconds": best_row["fit_seconds"]}
    return best_lm, ngram


def _code_gpt_train(corpus, s, dev, seed, progress, say):
    """Build the seeded GPT and train it with nanoGPT's loop, estimating the validation loss
    every ``eval_interval`` steps and at the end. Returns ``(model, log)``."""
    train_ids = tensor(corpus["ids"]["train"], device=dev)
    val_ids = tensor(corpus["ids"]["validation"], device=dev)
    backend.manual_seed(seed)
    cfg = GPTConfig(vocab_size=corpus["tok"].vocab_size, block_size=s["block_size"],
                    n_layer=s["n_layer"], n_head=s["n_head"], n_embd=s["n_embd"],
                    dropout=s["dropout"], bias=s["bias"])
    model = GPT(cfg).to(dev)
    n_params = model.num_parameters()
    opt = model.configure_optimizers(s["weight_decay"], s["learning_rate"], s["betas"])
    rng = np.random.default_rng(seed)
    eval_rng = np.random.default_rng([seed, 1])
    say(f"GPT {s['n_layer']}x{s['n_head']}x{s['n_embd']}, block {s['block_size']}, "
        f"{n_params:,} parameters; {s['max_iters']} steps of {s['batch_size']} windows "
        f"on {dev}")
    log = {"parameters": n_params, "history": [], "eval_history": []}

    def estimate(it):
        va = _estimate_loss(model, val_ids, s["eval_iters"], s["block_size"],
                            s["batch_size"], eval_rng)
        log["eval_history"].append({"iter": it, "val_loss": va})
        log["history"].append({"step": it, "eval_loss": va})
        say(f"step {it}: validation loss {va:.4f} ({s['eval_iters']} random batches)")

    def lr_at(it):
        return nanogpt_lr(it, s["learning_rate"], s["warmup_iters"], s["max_iters"],
                          s["min_lr"])

    log["train_seconds"] = nanogpt_train_loop(model, opt, train_ids, s, lr_at, rng,
                                              _bar(s["max_iters"], "code-completion", progress),
                                              log["history"], estimate)
    estimate(s["max_iters"])
    return model, log


def _code_gpt_losses(model, corpus, ngram, s, dev, say):
    """The GPT's loss on the whole validation and test texts (logged beside the n-gram's).
    Returns ``{"val_loss", "test_loss", "test_scored", "eval_seconds"}``."""
    ids = corpus["ids"]
    t0 = time.perf_counter()
    val_loss, _ = _text_loss(model, ids["validation"], s["block_size"], s["eval_batch"], dev)
    test_loss, test_scored = _text_loss(model, ids["test"], s["block_size"], s["eval_batch"],
                                        dev)
    eval_seconds = time.perf_counter() - t0
    say(f"GPT: validation loss {val_loss:.4f}, test loss {test_loss:.4f} nats/char "
        f"({test_loss / math.log(2):.3f} bits/char); {ngram['order']}-gram test "
        f"{ngram['test_loss']:.4f} nats/char ({ngram['test_bpc']:.3f} bits/char)")
    return {"val_loss": val_loss, "test_loss": test_loss, "test_scored": test_scored,
            "eval_seconds": eval_seconds}


def _code_prompts(corpus, s, seed):
    """The test lines to complete and each one's prompt: the ``block_size`` character ids
    before its split point. Returns ``(lines, prompts)``."""
    lines = completion_lines(corpus["texts"]["test"], s["n_lines"], seed, s["min_context"],
                             s["min_chars"])
    by_file = dict(corpus["texts"]["test"])
    block = s["block_size"]
    if any(ln["split"] < block for ln in lines):
        raise ValueError(f"code_completion: block_size={block} is longer than the "
                         f"min_context={s['min_context']} that lines are chosen with")
    prompts = [_char_ids(by_file[ln["file"]][ln["split"] - block:ln["split"]], corpus["tok"])
               for ln in lines]
    return lines, prompts


def _code_completions(model, lm, corpus, lines, prompts, s, dev, say):
    """Greedy line completions by the GPT and the n-gram, scored by :func:`completion_scores`
    (with timings and 5 examples)."""
    itos = corpus["itos"]
    refs = [ln["reference"] for ln in lines]
    newline = corpus["tok"].token_to_id("\n")
    t0 = time.perf_counter()
    gpt_gen = _gpt_complete(model, prompts, refs, newline, itos, s["gen_batch"], dev)
    gpt_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    ng_gen = _ngram_complete(lm, [[itos[i] for i in p.tolist()] for p in prompts], refs)
    ng_seconds = time.perf_counter() - t0
    comp = {"n_lines": len(lines), "gpt": completion_scores(refs, gpt_gen),
            "ngram": completion_scores(refs, ng_gen)}
    comp["gpt"]["seconds"], comp["ngram"]["seconds"] = gpt_seconds, ng_seconds
    comp["examples"] = [{"file": ln["file"], "prefix": ln["prefix"],
                         "reference": ln["reference"], "gpt": "".join(g).rstrip("\n"),
                         "ngram": "".join(h).rstrip("\n")}
                        for ln, g, h in list(zip(lines, gpt_gen, ng_gen))[:5]]
    say(f"completion of {len(lines)} lines: GPT exact {comp['gpt']['exact_match']:.3f}, "
        f"char accuracy {comp['gpt']['char_accuracy']:.3f}; n-gram exact "
        f"{comp['ngram']['exact_match']:.3f}, char accuracy "
        f"{comp['ngram']['char_accuracy']:.3f}")
    return comp


def _code_samples(model, corpus, lines, prompts, s, seed, dev):
    """Sampled continuations (temperature, top-k, top-p) of the first ``n_samples`` prompts."""
    itos, by_file, block = corpus["itos"], dict(corpus["texts"]["test"]), s["block_size"]
    k = min(s["n_samples"], len(lines))
    x = tensor(np.stack(prompts[:k]), device=dev)
    gen = model.generate(x, s["sample_chars"], temperature=s["temperature"],
                         top_k=s["top_k"], top_p=s["top_p"], seed=seed).numpy()
    samples = []
    for ln, row in zip(lines[:k], gen[:, block:]):
        text = by_file[ln["file"]]
        samples.append({"file": ln["file"], "prompt_tail": text[ln["split"] - 60:ln["split"]],
                        "reference": text[ln["split"]:ln["split"] + s["sample_chars"]],
                        "sample": "".join(itos[t] for t in row.tolist())})
    return samples


def _code_rows(s, gpt, losses, ngram, comp):
    """The table rows (GPT, then the n-gram) and the Markdown table."""
    test_loss = losses["test_loss"]
    rows = [{"model": f"GPT {s['n_layer']}x{s['n_head']}x{s['n_embd']} (char)",
             "test_loss": test_loss, "test_bpc": test_loss / math.log(2),
             "test_perplexity": math.exp(test_loss),
             "completion_exact_match": comp["gpt"]["exact_match"],
             "completion_char_accuracy": comp["gpt"]["char_accuracy"],
             "train_seconds": gpt["train_seconds"], "parameters": int(gpt["parameters"])},
            {"model": f"Kneser-Ney {ngram['order']}-gram (char)",
             "test_loss": ngram["test_loss"], "test_bpc": ngram["test_bpc"],
             "test_perplexity": ngram["test_perplexity"],
             "completion_exact_match": comp["ngram"]["exact_match"],
             "completion_char_accuracy": comp["ngram"]["char_accuracy"],
             "train_seconds": ngram["fit_seconds"], "parameters": None}]
    table = markdown_table(rows, [("model", "model", ""), ("test_loss", "test nats/char", ".4f"),
                                  ("test_bpc", "test bits/char", ".3f"),
                                  ("test_perplexity", "test perplexity", ".3f"),
                                  ("completion_exact_match", "line exact match (%)", "%"),
                                  ("completion_char_accuracy", "char accuracy (%)", "%"),
                                  ("train_seconds", "train (s)", ".1f"),
                                  ("parameters", "parameters", ",")])
    return rows, table


def _code_result(dev, seed, fast, s, corpus, gpt, losses, ngram, extra):
    """The result dict of :func:`code_completion` (``extra``: completion, samples, rows,
    table)."""
    val_loss, test_loss = losses["val_loss"], losses["test_loss"]
    train_seconds = gpt["train_seconds"]
    result = _header("code-completion", dev, seed, fast, s,
                     {"note": "no published number: the corpus is this interpreter's standard "
                              "library (see python_version and stdlib_sha256); the Kneser-Ney "
                              "n-gram row is the reference"})
    result.update(
        python_version=sys.version.split()[0], stdlib=str(corpus["root"]),
        stdlib_sha256=stdlib_fingerprint(corpus["files"]), files=corpus["file_counts"],
        train_chars=s["train_chars"], val_chars=s["val_chars"], test_chars=s["test_chars"],
        vocab_size=corpus["tok"].vocab_size, parameters=int(gpt["parameters"]),
        train_seconds=train_seconds, eval_seconds=losses["eval_seconds"],
        ms_per_iter=1000.0 * train_seconds / max(1, s["max_iters"]),
        val_loss=val_loss, test_loss=test_loss, val_bpc=val_loss / math.log(2),
        test_bpc=test_loss / math.log(2), test_perplexity=math.exp(test_loss),
        test_chars_scored=losses["test_scored"], ngram=ngram, completion=extra["completion"],
        samples=extra["samples"], rows=extra["rows"], table=extra["table"],
        history=gpt["history"], eval_history=gpt["eval_history"])
    return result


def _plot_code(gpt, ngram, test_loss, path):
    """The GPT's training and validation losses beside the test losses of both models."""
    history, eval_history = gpt["history"], gpt["eval_history"]
    fig, ax = new_axes()
    tr = [h for h in history if "loss" in h]
    ax.plot([h["step"] for h in tr], [h["loss"] for h in tr], "-", label="GPT train")
    ax.plot([e["iter"] for e in eval_history], [e["val_loss"] for e in eval_history], "o-",
            label="GPT validation (estimate)")
    ax.axhline(ngram["test_loss"], color="tab:red", linestyle="--",
               label=f"Kneser-Ney {ngram['order']}-gram, test")
    ax.axhline(test_loss, color="tab:green", linestyle=":", label="GPT, test")
    ax.set_xlabel("step")
    save_axes(fig, ax, path, "Character GPT on the Python standard library, minillm",
              "nats per character")


def code_completion(device=None, seed=0, fast=False, progress=True, output_dir=None,
                    log=print):
    """A character GPT trained on the Python standard library's sources, and code completion.

    Corpus: :func:`stdlib_files` of this interpreter (``sysconfig``'s stdlib folder), split
    by file with :func:`split_files` (seeded, 90/5/5). The training text is the training
    files in shuffled order, capped at 3.5 million characters (``train_cap``); validation
    and test texts are capped at 1 million (``eval_cap``). The result records the Python
    version, the file counts and :func:`stdlib_fingerprint`, so a reader can tell which
    standard library was used. Vocabulary: the characters of the (capped) training text plus
    ``<unk>``.

    GPT: nanoGPT's CPU size (4 layers, 4 heads, 128 dims, no biases, no dropout), block 128,
    batches of 16 random windows, 3,000 AdamW steps (lr 1e-3, betas (0.9, 0.99), weight decay
    0.1 on 2-D weights, 100 warmup steps, cosine to 1e-4), gradient norm clipped at 1.
    Losses on the whole validation and test texts (consecutive 128-character windows).

    Baseline: :class:`NGramLM` (interpolated Kneser-Ney) on the same characters (``<unk>``
    alike), the order chosen by validation perplexity among ``ngram_orders``; scored on the
    same predicted characters of the test text.

    Completion: 200 test lines (:func:`completion_lines`: >= 10 non-space characters, >=
    128 characters of context in their file); the model reads the 128 characters before the
    split point (context plus the line's first half) and completes greedily; scored by
    :func:`completion_scores`, for the GPT and the n-gram. Plus 3 samples (temperature 0.8,
    top-k 40, top-p 0.95) from the first 3 prompts.

    Returns keys: ``python_version``, ``stdlib``, ``stdlib_sha256``, ``files`` (counts:
    total, train, validation, test, train_used, validation_used, test_used),
    ``train_chars``, ``val_chars``, ``test_chars``, ``vocab_size``, ``parameters``,
    ``train_seconds``, ``ms_per_iter``, ``val_loss``, ``test_loss`` (nats per character),
    ``val_bpc``, ``test_bpc``, ``test_perplexity``, ``ngram`` (``order``, ``orders``,
    ``val_perplexity``, ``test_perplexity``, ``test_loss``, ``test_bpc``), ``completion``
    (``n_lines``, ``gpt`` and ``ngram`` scores, ``examples``), ``samples``, ``rows``,
    ``table``, ``history``, ``eval_history``, ``total_seconds``, plus the common keys.
    """
    say = _logger(log)
    t_start = time.perf_counter()
    s = dict(CODE_FAST if fast else CODE)
    corpus = _code_corpus(s, seed, say)
    lm, ngram = _code_ngram(corpus, s, say)            # the baseline (host, counting)
    with _on(device) as dev:
        model, gpt = _code_gpt_train(corpus, s, dev, seed, progress, say)
        losses = _code_gpt_losses(model, corpus, ngram, s, dev, say)
        lines, prompts = _code_prompts(corpus, s, seed)
        comp = _code_completions(model, lm, corpus, lines, prompts, s, dev, say)
        samples = _code_samples(model, corpus, lines, prompts, s, seed, dev)
    rows, table = _code_rows(s, gpt, losses, ngram, comp)
    result = _code_result(dev, seed, fast, s, corpus, gpt, losses, ngram,
                          {"completion": comp, "samples": samples, "rows": rows, "table": table})
    result["total_seconds"] = time.perf_counter() - t_start
    say(table)
    return _finish(result, output_dir,
                   lambda path: _plot_code(gpt, ngram, losses["test_loss"], path), log)


# == summaries ================================================================================
def format_generation(name, result):
    """A short human-readable summary of a ``translation`` or ``code-completion`` result."""
    if name not in ("translation", "code-completion"):
        raise KeyError(f"format_generation: unknown benchmark {name!r}; choose 'translation' "
                       f"or 'code-completion'")
    fast = " [fast mode: not comparable]" if result.get("fast") else ""
    lines = [f"{name} (minillm {result.get('version')}, {result.get('device')}){fast}"]
    if name == "code-completion":
        f = result["files"]
        lines.append(f"  Python {result['python_version']} stdlib ({f['total']} files, sha256 "
                     f"{result['stdlib_sha256'][:12]}...): {f['train_used']}/{f['train']} train "
                     f"files used ({result['train_chars']:,} characters), {f['test_used']} test "
                     f"files ({result['test_chars']:,} characters)")
    lines.append(result["table"])
    lines.append("  anchor: " + "; ".join(f"{k}: {v}" for k, v in result["anchor"].items()))
    return "\n".join(lines)
