"""Bag-of-n-grams baselines: what a neural model must beat on the same split.

* :class:`BagOfNGrams` turns texts (strings: character n-grams; tuples of words: word
  n-grams) into sparse counts (:class:`SparseCounts`).
* :class:`MultinomialNB`: naive Bayes with add-alpha smoothing, fitted in one pass.
* :func:`train_bow_logreg`: logistic regression on those features, trained with minillm.
* :func:`memorise_tags`: for NER, each token's most frequent training tag.

:func:`classification_baselines` and :func:`ner_baseline` run them on a task's splits; this
is what ``minillm finetune`` and ``minillm evaluate`` print beside the neural model, and what
the benchmarks report.
"""
from __future__ import annotations

import collections
import time
from typing import NamedTuple

import numpy as np

from . import backend
from . import functional as F
from .autograd import no_grad, tensor
from .nn import Linear, Module, init
from .optim import Adam
from .training.trainer import progress_bar

__all__ = ["SparseCounts", "BagOfNGrams", "MultinomialNB", "train_bow_logreg", "memorise_tags",
           "bow_features", "classification_baselines", "ner_baseline"]


class SparseCounts(NamedTuple):
    """Rows of feature counts in CSR form: row ``i`` has features
    ``indices[indptr[i]:indptr[i+1]]`` with counts ``values[...]``."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_features: int

    @property
    def n_rows(self):
        return len(self.indptr) - 1

    def rows(self, idx):
        """The rows ``idx`` as a new :class:`SparseCounts`."""
        idx = np.asarray(idx, dtype=np.int64)
        lengths = self.indptr[idx + 1] - self.indptr[idx]
        take = np.concatenate([np.arange(self.indptr[i], self.indptr[i + 1]) for i in idx]) \
            if len(idx) else np.zeros(0, dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return SparseCounts(indptr, self.indices[take], self.values[take], self.n_features)

    def dense(self, binary=False, dtype=np.float32):
        """A dense ``(n_rows, n_features)`` array (counts, or 0/1 with ``binary``)."""
        out = np.zeros((self.n_rows, self.n_features), dtype=dtype)
        row = np.repeat(np.arange(self.n_rows), np.diff(self.indptr))
        out[row, self.indices] = 1 if binary else self.values
        return out


class BagOfNGrams:
    """Character n-gram counts (default unigrams and bigrams) over a vocabulary of the
    n-grams seen at least ``min_count`` times in the texts given to :meth:`fit`."""

    def __init__(self, ns=(1, 2), min_count=2):
        self.ns, self.min_count = tuple(ns), int(min_count)
        self.vocab = None

    def ngrams(self, text):
        """The character n-grams of ``text`` in order, all orders in ``ns``."""
        return [text[i:i + n] for n in self.ns for i in range(len(text) - n + 1)]

    def fit(self, texts):
        counts = collections.Counter(g for t in texts for g in self.ngrams(t))
        self.vocab = {g: i for i, g in enumerate(sorted(g for g, c in counts.items()
                                                        if c >= self.min_count))}
        return self

    def transform(self, texts):
        """:class:`SparseCounts` of ``texts`` (n-grams outside the vocabulary are dropped)."""
        if self.vocab is None:
            raise RuntimeError("BagOfNGrams: call fit(texts) first")
        indptr, indices, values = [0], [], []
        for t in texts:
            c = collections.Counter(self.vocab[g] for g in self.ngrams(t) if g in self.vocab)
            keys = sorted(c)
            indices += keys
            values += [c[k] for k in keys]
            indptr.append(len(indices))
        return SparseCounts(np.array(indptr, dtype=np.int64), np.array(indices, dtype=np.int64),
                            np.array(values, dtype=np.float64), len(self.vocab))


class MultinomialNB:
    """Multinomial naive Bayes with add-``alpha`` (Laplace for 1) smoothing::

        log P(c | x) = log P(c) + sum_f x_f log P(f | c) - log Z
        P(c) = N_c / N,   P(f | c) = (count(f, c) + alpha) / (sum_f' count(f', c) + alpha |F|)
    """

    def __init__(self, alpha=1.0):
        self.alpha = float(alpha)

    def fit(self, X, y, n_classes=None):
        y = np.asarray(y, dtype=np.int64)
        k = int(n_classes or y.max() + 1)
        row = np.repeat(np.arange(X.n_rows), np.diff(X.indptr))
        counts = np.zeros((k, X.n_features))
        np.add.at(counts, (y[row], X.indices), X.values)
        # a class absent from training gets the prior log 0 = -inf: it is never predicted
        with np.errstate(divide="ignore"):
            self.class_log_prior_ = np.log(np.bincount(y, minlength=k) / len(y))
        smoothed = counts + self.alpha
        self.feature_log_prob_ = np.log(smoothed / smoothed.sum(axis=1, keepdims=True))
        return self

    def joint_log_likelihood(self, X):
        """``log P(c) + sum_f x_f log P(f | c)``, shape ``(n_rows, n_classes)``."""
        per_entry = X.values[:, None] * self.feature_log_prob_.T[X.indices]     # (nnz, k)
        row = np.repeat(np.arange(X.n_rows), np.diff(X.indptr))
        out = np.zeros((X.n_rows, len(self.class_log_prior_)))
        np.add.at(out, row, per_entry)
        return out + self.class_log_prior_

    def predict_log_proba(self, X):
        jll = self.joint_log_likelihood(X)
        m = jll.max(axis=1, keepdims=True)
        return jll - (m + np.log(np.exp(jll - m).sum(axis=1, keepdims=True)))

    def predict(self, X):
        return self.joint_log_likelihood(X).argmax(axis=1)

    @property
    def num_parameters(self):
        return int(self.feature_log_prob_.size + self.class_log_prior_.size)


class _LogReg(Module):
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = Linear(n_features, n_classes)
        init.zeros_(self.linear.weight)
        init.zeros_(self.linear.bias)

    def forward(self, x):
        return self.linear(x)


def _bow_batches(X, y, batch_size, binary, device, order):
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        rows = X.rows(idx)
        x = rows.dense(binary=binary) if binary else np.log1p(rows.dense())
        yield (tensor(x, device=device), tensor(np.asarray(y)[idx], dtype=np.int64,
                                                 device=device))


def _bow_eval(model, X, y, batch_size, binary, device):
    correct, total = 0, None
    model.eval()
    with no_grad():
        for x, t in _bow_batches(X, y, batch_size, binary, device, np.arange(X.n_rows)):
            logits = model(x)
            part = F.cross_entropy(logits, t, reduction="sum")
            total = part if total is None else total + part
            correct += int((logits.numpy().argmax(axis=-1) == t.numpy()).sum())
    model.train()
    return correct / max(1, X.n_rows), total.item() / max(1, X.n_rows)


def train_bow_logreg(X_train, y_train, X_val, y_val, epochs=5, batch_size=64, lr=1e-3,
                     weight_decay=1e-4, binary=True, device=None, seed=0, progress=False,
                     n_classes=None):
    """Logistic regression ``softmax(x W + b)`` on bag-of-n-gram features (0/1 with
    ``binary``, else ``log(1 + count)``), trained with minillm (``Linear``, cross-entropy,
    Adam with L2 ``weight_decay``), weights starting at 0. After each epoch the validation
    accuracy is measured; the weights of the best epoch are kept. ``n_classes``: default
    one more than the largest label seen.

    Returns ``(model, info)``; ``info`` has ``best_epoch``, ``val_accuracy``, ``epochs``
    (``[{epoch, train_loss, val_loss, val_accuracy}]``), ``history`` and ``train_seconds``.
    """
    dev = backend.device(device)
    backend.manual_seed(seed)
    k = n_classes or int(max(np.max(y_train), np.max(y_val))) + 1
    model = _LogReg(X_train.n_features, k).to(dev)
    opt = Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    best, best_state, rows, history, step = -1.0, None, [], [], 0
    seconds = 0.0
    n_batches = -(-X_train.n_rows // batch_size)
    for epoch in range(1, epochs + 1):
        bar = progress_bar(n_batches, f"bow logreg epoch {epoch}/{epochs}",
                           disable=not progress)
        t0 = time.perf_counter()
        total, count = None, 0
        try:
            for x, t in _bow_batches(X_train, y_train, batch_size, binary, dev,
                                     rng.permutation(X_train.n_rows)):
                loss = F.cross_entropy(model(x), t)
                opt.zero_grad()
                loss.backward()
                opt.step()
                part = loss.detach() * t.shape[0]
                total = part if total is None else total + part
                count += t.shape[0]
                step += 1
                bar.update()
            train_loss = total.item() / count
        finally:
            bar.close()
        seconds += time.perf_counter() - t0
        val_acc, val_loss = _bow_eval(model, X_val, y_val, 256, binary, dev)
        history += [{"step": step, "loss": train_loss}, {"step": step, "eval_loss": val_loss}]
        rows.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                     "val_accuracy": val_acc})
        if val_acc > best:
            best, best_epoch = val_acc, epoch
            best_state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    model.load_state_dict({k: tensor(v, device=dev) for k, v in best_state.items()})
    return model, {"best_epoch": best_epoch, "val_accuracy": best, "epochs": rows,
                   "history": history, "train_seconds": seconds}



def memorise_tags(train_tokens, train_tags, lower=False):
    """``token -> its most frequent training tag`` (ties: the tag seen first)."""
    counts = collections.defaultdict(collections.Counter)
    for toks, tags in zip(train_tokens, train_tags):
        for t, g in zip(toks, tags):
            counts[t.lower() if lower else t][g] += 1
    return {t: c.most_common(1)[0][0] for t, c in counts.items()}




# -- the baselines of a task's splits ------------------------------------------------------------
def _units(text, lang):
    """What the n-grams are made of: characters for Chinese, lowercased words otherwise."""
    return text if lang == "zh" else tuple(text.lower().split())


def bow_features(train_texts, other_texts, lang, min_count=2):
    """``(BagOfNGrams, X_train, {name: X})``: 1+2-grams of characters (Chinese) or of
    lowercased words, kept when seen ``min_count`` times in the training texts."""
    bow = BagOfNGrams((1, 2), min_count).fit([_units(t, lang) for t in train_texts])
    X = {k: bow.transform([_units(t, lang) for t in v]) for k, v in other_texts.items()}
    return bow, bow.transform([_units(t, lang) for t in train_texts]), X


def logreg_predict(model, X, device=None, batch_size=256):
    """Class predictions of a :func:`train_bow_logreg` model (binary features)."""
    preds = []
    model.eval()
    with no_grad():
        for x, _ in _bow_batches(X, np.zeros(X.n_rows, np.int64), batch_size, True, device,
                                 np.arange(X.n_rows)):
            preds.append(model(x).numpy().argmax(axis=-1))
    return np.concatenate(preds) if preds else np.zeros(0, np.int64)


def classification_baselines(train, validation, evaluate, n_classes, lang, seed=0,
                             device=None, logreg_epochs=5, progress=False):
    """Naive Bayes and logistic regression on bag-of-n-gram features.

    ``train``/``validation``: ``(texts, labels)``; the validation split picks the logistic
    regression's epoch. ``evaluate``: ``{split: texts}`` to predict. Returns
    ``{model name: {"predictions": {split: int array}, "train_seconds", "parameters"}}``.
    """
    unit = "character" if lang == "zh" else "word"
    t0 = time.perf_counter()
    bow, X_train, X = bow_features(train[0], {"validation": validation[0], **evaluate}, lang)
    y_train = np.asarray(train[1], dtype=np.int64)
    nb = MultinomialNB(alpha=1.0).fit(X_train, y_train, n_classes=n_classes)
    out = {f"naive Bayes ({unit} 1+2-grams)": {
        "predictions": {s: nb.predict(X[s]) for s in evaluate},
        "train_seconds": time.perf_counter() - t0, "parameters": nb.num_parameters}}
    if logreg_epochs:
        with backend.default_device_as(device):
            model, info = train_bow_logreg(X_train, y_train, X["validation"],
                                           np.asarray(validation[1], dtype=np.int64),
                                           epochs=logreg_epochs, device=device, seed=seed,
                                           progress=progress, n_classes=n_classes)
            preds = {s: logreg_predict(model, X[s], device) for s in evaluate}
        out[f"logistic regression ({unit} 1+2-grams)"] = {
            "predictions": preds, "train_seconds": info["train_seconds"],
            "parameters": int(sum(p.size for p in model.parameters()))}
    return out


def ner_baseline(train, evaluate, lower=True):
    """Each token's most frequent training tag (``O`` for unseen tokens).

    ``train``: ``(token lists, tag lists)``; ``evaluate``: ``{split: token lists}``. Returns
    ``{model name: {"predictions": {split: tag lists}, "train_seconds", "parameters"}}``."""
    t0 = time.perf_counter()
    table = memorise_tags(train[0], train[1], lower)
    key = str.lower if lower else (lambda t: t)
    preds = {s: [[table.get(key(t), "O") for t in toks] for toks in v]
             for s, v in evaluate.items()}
    return {"most frequent training tag per token": {
        "predictions": preds, "train_seconds": time.perf_counter() - t0,
        "parameters": len(table)}}
