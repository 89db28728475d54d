"""Evaluation metrics: classification, language modelling, NER, extractive QA and BLEU.

Everything here is plain NumPy/Python and runs on the host. Inputs are Python lists, NumPy
arrays or minillm Tensors; a Tensor is read back explicitly with ``.numpy()`` (never
``np.asarray(tensor)``), so the metrics work whatever device produced the values.

Sections (each function's docstring gives its formula):

* classification -- :func:`accuracy`, :func:`precision_recall_f1`, :func:`classification_report`,
  :func:`confusion_matrix`, :func:`plot_confusion_matrix` (scikit-learn's semantics);
* language modelling -- :func:`perplexity`;
* named entities -- :func:`extract_entities`, :func:`ner_f1` (conlleval / seqeval default mode);
* extractive QA -- :func:`squad_normalize`, :func:`exact_match`, :func:`qa_f1`, :func:`qa_scores`
  (official SQuAD v1.1 script for English, CMRC 2018 script for Chinese);
* translation -- :func:`bleu`, :func:`bleu_details`, :func:`sentence_bleu` (Papineni et al. 2002).
"""
from __future__ import annotations

import math
import numbers
import re
import string
import unicodedata
from collections import Counter

import numpy as np

__all__ = [
    "accuracy", "precision_recall_f1", "classification_report", "format_classification_report",
    "confusion_matrix", "plot_confusion_matrix", "find_cjk_font",
    "perplexity",
    "extract_entities", "ner_f1",
    "squad_normalize", "cmrc_normalize", "mixed_segmentation", "exact_match", "qa_f1", "qa_scores",
    "bleu", "bleu_details", "sentence_bleu",
]


# ---------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------
def _host(x):
    """A host value for ``x``: Tensors are read back with ``.numpy()`` (device-clean)."""
    from .autograd import Tensor
    if isinstance(x, Tensor):
        return x.numpy()
    return x


def _labels(x, name, op):
    """``x`` as a 1-D host array of labels; refuses mixed str/number lists (no silent coercion)."""
    x = _host(x)
    if isinstance(x, str):
        raise TypeError(f"{op}: {name} must be a sequence of labels, got the string {x!r}; "
                        f"pass a list such as list({x!r}) if you mean one label per character")
    if isinstance(x, (list, tuple)):
        kinds = {("str" if isinstance(v, str) else
                  "num" if isinstance(v, (numbers.Number, np.bool_)) else type(v).__name__)
                 for v in x}
        if len(kinds) > 1:
            raise TypeError(f"{op}: {name} mixes label types {sorted(kinds)}; NumPy would turn "
                            f"them all into strings. Use one type for every label")
    a = np.asarray(x)
    if a.dtype == object:
        raise TypeError(f"{op}: {name} must hold numbers or strings, got elements of type "
                        f"{type(a.flat[0]).__name__ if a.size else 'object'}")
    if a.ndim != 1:
        hint = ("; if these are a model's scores (logits or probabilities, one column per "
                "class), take the predicted class first: argmax over the last axis"
                if a.dtype.kind == "f" else "; flatten it (and drop padding) first")
        raise ValueError(f"{op}: {name} must be 1-D (one label per sample), got shape "
                         f"{a.shape}{hint}")
    return a


def _pair(y_true, y_pred, op):
    t, p = _labels(y_true, "y_true", op), _labels(y_pred, "y_pred", op)
    if t.shape != p.shape:
        raise ValueError(f"{op}: y_true has {t.shape[0]} labels but y_pred has {p.shape[0]}; "
                         f"they must be the same length")
    if t.size == 0:
        raise ValueError(f"{op}: empty inputs (0 samples); the metric is undefined")
    if (t.dtype.kind in "US") != (p.dtype.kind in "US"):
        raise TypeError(f"{op}: y_true has dtype {t.dtype} but y_pred has dtype {p.dtype}; "
                        f"labels of different kinds never compare equal. Map both to the same type")
    return t, p


def _label_set(t, p, labels, op):
    if labels is None:
        return np.unique(np.concatenate([t, p]))
    lab = _labels(labels, "labels", op)
    if lab.size == 0:
        raise ValueError(f"{op}: labels is empty; pass None to use every label seen")
    if len(np.unique(lab)) != lab.size:
        raise ValueError(f"{op}: labels contains duplicates: {lab.tolist()}")
    if (lab.dtype.kind in "US") != (t.dtype.kind in "US"):
        raise TypeError(f"{op}: labels has dtype {lab.dtype} but y_true has dtype {t.dtype}")
    return lab


def _check_zero_division(zero_division, op):
    if not (zero_division in (0, 1) or (isinstance(zero_division, float) and
                                        math.isnan(zero_division))):
        raise ValueError(f"{op}: zero_division must be 0.0, 1.0 or float('nan'), "
                         f"got {zero_division!r}")
    return float(zero_division)


def _divide(num, den, zero_division):
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, zero_division, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


# ---------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------
def accuracy(y_true, y_pred, ignore_index=None):
    """Fraction of correct predictions: ``acc = (1/N) * sum_i [y_true_i == y_pred_i]``.

    ``ignore_index`` drops the positions where ``y_true == ignore_index`` (e.g. -100 padding)
    before counting; it is an error if that leaves nothing.
    """
    t, p = _pair(y_true, y_pred, "accuracy")
    if ignore_index is not None:
        keep = t != ignore_index
        t, p = t[keep], p[keep]
        if t.size == 0:
            raise ValueError(f"accuracy: every y_true equals ignore_index={ignore_index!r}; "
                             f"nothing left to score")
    return float(np.mean(t == p))


def _counts(t, p, labels):
    """Per-label true positives, predicted counts (tp+fp) and true counts (tp+fn = support)."""
    tp = np.array([np.sum((t == c) & (p == c)) for c in labels], dtype=np.int64)
    pred = np.array([np.sum(p == c) for c in labels], dtype=np.int64)
    true = np.array([np.sum(t == c) for c in labels], dtype=np.int64)
    return tp, pred, true


def _nanmean(x, weights=None):
    x = np.asarray(x, dtype=np.float64)
    keep = ~np.isnan(x)
    if not keep.any():
        return float("nan")
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[keep]
    if w is None or w.sum() == 0:    # no weight left (no support): the plain mean, as sklearn
        return float(np.mean(x[keep]))
    return float(np.average(x[keep], weights=w))


def precision_recall_f1(y_true, y_pred, average="macro", labels=None, zero_division=0.0):
    """Precision, recall, F1 and support, with scikit-learn's ``precision_recall_fscore_support``
    semantics.

    Per label ``c`` (TP/FP/FN counted one-vs-rest)::

        precision_c = TP_c / (TP_c + FP_c)      recall_c = TP_c / (TP_c + FN_c)
        F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)  (= harmonic mean of precision_c and recall_c)
        support_c = TP_c + FN_c                 (number of true samples of c)

    A 0/0 ratio is set to ``zero_division`` (0.0, 1.0 or nan); F1 only hits it when the label
    is neither true nor predicted anywhere.

    ``average``:

    * ``None``: per-label arrays (in the order of ``labels``; default: sorted labels seen in
      ``y_true`` or ``y_pred``) and the support array;
    * ``"micro"``: sum TP, FP, FN over the labels first, then apply the formulas (with every
      label included this equals the accuracy);
    * ``"macro"``: unweighted mean of the per-label scores (nan entries, possible only with
      ``zero_division=nan``, are left out of the mean);
    * ``"weighted"``: mean weighted by support_c (nan entries left out; when the labels kept
      have no support at all, their plain mean, as scikit-learn does).

    With an average the returned support is ``None`` (as scikit-learn). ``labels`` restricts
    the scores to those labels (samples of other labels count only as FP/FN of the listed ones);
    a listed label absent from both inputs gets zero_division scores and support 0.
    """
    op = "precision_recall_f1"
    if average not in (None, "micro", "macro", "weighted"):
        raise ValueError(f"{op}: average must be None, 'micro', 'macro' or 'weighted', "
                         f"got {average!r}")
    zd = _check_zero_division(zero_division, op)
    t, p = _pair(y_true, y_pred, op)
    lab = _label_set(t, p, labels, op)
    tp, pred, true = _counts(t, p, lab)
    if average == "micro":
        tp, pred, true = tp.sum(), pred.sum(), true.sum()
    precision = _divide(tp, pred, zd)
    recall = _divide(tp, true, zd)
    f1 = _divide(2 * tp, pred + true, zd)
    if average is None:
        return precision, recall, f1, true
    if average == "micro":
        return float(precision), float(recall), float(f1), None
    if average == "weighted":
        return (_nanmean(precision, true), _nanmean(recall, true), _nanmean(f1, true), None)
    return _nanmean(precision), _nanmean(recall), _nanmean(f1), None


def classification_report(y_true, y_pred, labels=None, target_names=None, zero_division=0.0,
                          output="dict", digits=2):
    """Per-label precision/recall/F1/support plus averages, like scikit-learn's report.

    Returns (``output="dict"``) ``{name: {"precision", "recall", "f1-score", "support"}, ...,
    "accuracy": float, "macro avg": {...}, "weighted avg": {...}}``; when ``labels`` leaves out
    some label seen in the data, ``"micro avg"`` replaces ``"accuracy"`` (as scikit-learn does).
    ``output="text"`` returns the same as a fixed-width table (see
    :func:`format_classification_report`). Formulas: see :func:`precision_recall_f1`.
    """
    op = "classification_report"
    if output not in ("dict", "text"):
        raise ValueError(f"{op}: output must be 'dict' or 'text', got {output!r}")
    t, p = _pair(y_true, y_pred, op)
    lab = _label_set(t, p, labels, op)
    if target_names is None:
        names = [str(c) for c in lab.tolist()]
    else:
        names = [str(n) for n in target_names]
        if len(names) != lab.size:
            raise ValueError(f"{op}: {len(names)} target_names for {lab.size} labels "
                             f"{lab.tolist()}")
    P, R, F, S = precision_recall_f1(t, p, None, lab, zero_division)
    report = {}
    for n, pc, rc, fc, sc in zip(names, P, R, F, S):
        report[n] = {"precision": float(pc), "recall": float(rc), "f1-score": float(fc),
                     "support": int(sc)}
    total = int(S.sum())
    seen = np.unique(np.concatenate([t, p]))
    if set(seen.tolist()) <= set(lab.tolist()):
        report["accuracy"] = accuracy(t, p)
    else:
        mp, mr, mf, _ = precision_recall_f1(t, p, "micro", lab, zero_division)
        report["micro avg"] = {"precision": mp, "recall": mr, "f1-score": mf, "support": total}
    for key, avg in (("macro avg", "macro"), ("weighted avg", "weighted")):
        ap, ar, af, _ = precision_recall_f1(t, p, avg, lab, zero_division)
        report[key] = {"precision": ap, "recall": ar, "f1-score": af, "support": total}
    return report if output == "dict" else format_classification_report(report, digits)


def format_classification_report(report, digits=2):
    """The dict from :func:`classification_report` as a fixed-width text table."""
    avgs = ("micro avg", "macro avg", "weighted avg")
    rows = [k for k in report if k != "accuracy" and k not in avgs]
    width = max([len(k) for k in rows] + [len("weighted avg")])
    head = ["precision", "recall", "f1-score", "support"]

    def line(name, r):
        return (f"{name:>{width}}" + "".join(f"{r[h]:>10.{digits}f}" for h in head[:3])
                + f"{r['support']:>10}")

    lines = [" " * width + "".join(f"{h:>10}" for h in head), ""]
    lines += [line(k, report[k]) for k in rows] + [""]
    if "accuracy" in report:
        lines.append(f"{'accuracy':>{width}}" + " " * 20
                     + f"{report['accuracy']:>10.{digits}f}{report['macro avg']['support']:>10}")
    lines += [line(k, report[k]) for k in avgs if k in report]
    return "\n".join(lines) + "\n"


def confusion_matrix(y_true, y_pred, labels=None, normalize=None):
    """Confusion matrix ``C`` with ``C[i, j]`` = number of samples whose true label is
    ``labels[i]`` and predicted label is ``labels[j]`` (rows: truth, columns: prediction,
    as scikit-learn).

    ``labels`` defaults to the sorted labels seen in either input; samples whose true or
    predicted label is not listed are left out. ``normalize``:
    ``"true"``: ``C[i, j] / sum_j C[i, j]`` (rows sum to 1: recall on the diagonal);
    ``"pred"``: ``C[i, j] / sum_i C[i, j]`` (columns sum to 1: precision on the diagonal);
    ``"all"``: ``C / sum C``. An all-zero row/column stays 0. Returns int64 counts, or float64
    when normalized.
    """
    op = "confusion_matrix"
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"{op}: normalize must be None, 'true', 'pred' or 'all', "
                         f"got {normalize!r}")
    t, p = _pair(y_true, y_pred, op)
    lab = _label_set(t, p, labels, op)
    index = {c: i for i, c in enumerate(lab.tolist())}
    cm = np.zeros((lab.size, lab.size), dtype=np.int64)
    for a, b in zip(t.tolist(), p.tolist()):
        if a in index and b in index:
            cm[index[a], index[b]] += 1
    if normalize is None:
        return cm
    if normalize == "true":
        return _divide(cm, cm.sum(axis=1, keepdims=True), 0.0)
    if normalize == "pred":
        return _divide(cm, cm.sum(axis=0, keepdims=True), 0.0)
    return _divide(cm, cm.sum(), 0.0)


_CJK_FONT_NAMES = ("Noto Sans CJK SC", "Noto Sans SC", "Noto Serif CJK SC", "Source Han Sans SC",
                   "Source Han Sans CN", "Source Han Sans", "WenQuanYi Zen Hei",
                   "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC",
                   "Heiti SC", "STHeiti", "Arial Unicode MS", "AR PL UMing CN",
                   "Droid Sans Fallback")


def find_cjk_font():
    """Name of an installed font that can draw Chinese (first of a preference list, else any
    installed font whose name says CJK/Hei/Han/WenQuanYi), or ``None`` if there is none."""
    from matplotlib import font_manager
    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in _CJK_FONT_NAMES:
        if name in installed:
            return name
    for name in sorted(installed):
        if re.search(r"CJK|WenQuanYi|Han Sans|Han Serif|\b(Hei|Ming|Song|Kai)\b", name):
            return name
    return None


def _font_covers(text, family):
    """True when the font matplotlib would pick for ``family`` has a glyph for every char."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font
    path = font_manager.findfont(font_manager.FontProperties(family=family),
                                 fallback_to_default=True)
    charmap = FT2Font(path).get_charmap()
    return all(ord(ch) in charmap or ch.isspace() for ch in text)


def _drawable_labels(labels, title, family, font):
    """``(labels, title)`` with what the fonts ``family`` cannot draw replaced (indices ``#i``,
    the default title) and the title saying so."""
    # Checked even with a CJK font found: a label it cannot draw is shown as its index.
    fallback = False
    shown = []
    for i, lab in enumerate(labels):
        if _font_covers(lab, family):
            shown.append(lab)
        else:
            shown.append(f"#{i}")
            fallback = True
    if not _font_covers(title, family):
        title, fallback = "Confusion matrix", True
    if fallback:
        why = "no CJK font installed" if font is None else f"missing glyphs in {font}"
        title += f"\n(labels shown as indices: {why})"
    return shown, title


def _annotate_cells(ax, cm):
    """Write each cell's value on it, white on the darker half of the colour scale."""
    n = cm.shape[0]
    is_float = cm.dtype.kind == "f"
    finite = cm[np.isfinite(cm)] if is_float else cm
    threshold = (finite.max() + finite.min()) / 2.0 if finite.size else 0
    for i in range(n):
        for j in range(n):
            v = cm[i, j]
            ax.text(j, i, f"{v:.2f}" if is_float else f"{int(v)}", ha="center",
                    va="center", color="white" if v > threshold else "black")


def plot_confusion_matrix(cm, labels, path=None, title="Confusion matrix", cmap="Blues"):
    """Draw a confusion matrix (rows: true label, columns: predicted label) with the value in
    every cell; save it to ``path`` (PNG etc., by extension) when given. Returns the matplotlib
    ``Figure`` (built without pyplot, so no global backend is changed; rendering uses Agg).

    Chinese labels: if :func:`find_cjk_font` finds a CJK font it is used. Otherwise (fallback,
    never silent) every label the default font cannot draw is replaced by its index ``#i``, a
    title it cannot draw is replaced by ``"Confusion matrix"``, and the title says
    ``"(labels shown as indices: no CJK font installed)"`` -- so no missing-glyph boxes and no
    matplotlib warnings.
    """
    import matplotlib
    from matplotlib.figure import Figure

    op = "plot_confusion_matrix"
    cm = np.asarray(_host(cm))
    labels = [str(x) for x in _host(labels)]
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
        raise ValueError(f"{op}: cm must be a square (n, n) matrix with one label per row; got "
                         f"cm of shape {cm.shape} and {len(labels)} labels")
    font = find_cjk_font()
    family = [font] if font else []
    family += list(matplotlib.rcParams["font.sans-serif"])
    rc = {"font.family": "sans-serif", "font.sans-serif": family, "axes.unicode_minus": False}
    with matplotlib.rc_context(rc):
        labels, title = _drawable_labels(labels, title, family, font)
        n = len(labels)
        size = max(4.0, 0.6 * n + 2.0)
        fig = Figure(figsize=(size + 1.0, size))
        ax = fig.add_subplot()
        im = ax.imshow(cm, interpolation="nearest", cmap=cmap)
        fig.colorbar(im, ax=ax)
        ax.set(xticks=np.arange(n), yticks=np.arange(n), xticklabels=labels,
               yticklabels=labels, xlabel="Predicted label", ylabel="True label", title=title)
        for tick in ax.get_xticklabels():
            tick.set_rotation(45)
            tick.set_ha("right")
        _annotate_cells(ax, cm)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
    return fig


# ---------------------------------------------------------------------------------------------
# language modelling
# ---------------------------------------------------------------------------------------------
def _scalar(x, name, op):
    x = _host(x)
    a = np.asarray(x)
    if a.size != 1:
        raise ValueError(f"{op}: {name} must be a single number, got shape {a.shape}")
    v = float(a.reshape(()))
    if math.isnan(v):
        raise ValueError(f"{op}: {name} is nan")
    return v


def perplexity(mean_nll, n_tokens=None):
    """Perplexity ``PPL = exp(mean NLL)`` with the NLL in nats (natural log, as
    ``cross_entropy`` returns it): ``PPL = exp(-(1/N) * sum_t log p(x_t | x_<t))``.

    Call as ``perplexity(mean_nll)`` or ``perplexity(total_nll, n_tokens)`` (then
    ``mean = total / n_tokens``). Overflow gives ``inf`` (explicitly, no warning).
    """
    op = "perplexity"
    v = _scalar(mean_nll, "mean_nll" if n_tokens is None else "total_nll", op)
    if n_tokens is not None:
        n = _scalar(n_tokens, "n_tokens", op)
        if n <= 0 or n != int(n):
            raise ValueError(f"{op}: n_tokens must be a positive integer, got {n_tokens!r}")
        v = v / n
    if v < 0:
        raise ValueError(f"{op}: negative log-likelihood must be >= 0, got {v}; pass the "
                         f"*negative* log-likelihood (the loss), not the log-likelihood")
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


# ---------------------------------------------------------------------------------------------
# named entities (BIO / IOB / IOBES, conlleval rules)
# ---------------------------------------------------------------------------------------------
def _split_tag(tag, op):
    if not isinstance(tag, str):
        raise TypeError(f"{op}: tags must be strings like 'B-PER', 'I-PER' or 'O', got {tag!r}")
    if tag == "O":
        return "O", ""
    prefix, sep, typ = tag.partition("-")
    if prefix not in ("B", "I", "E", "S") or (sep and not typ):
        raise ValueError(f"{op}: bad tag {tag!r}; expected 'O' or '<B|I|E|S>-<TYPE>' "
                         f"(e.g. 'B-PER')")
    return prefix, typ


def _end_of_chunk(prev, tag, prev_type, typ):
    """conlleval's endOfChunk: does a chunk end between the previous and the current token?"""
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev != "O" and prev_type != typ


def _start_of_chunk(prev, tag, prev_type, typ):
    """conlleval's startOfChunk: does a chunk start at the current token?"""
    if tag in ("B", "S"):
        return True
    if prev in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag != "O" and prev_type != typ


def extract_entities(tags):
    """Entities ``(type, start, end)`` (``end`` inclusive, as seqeval) in one tag sequence,
    by conlleval's chunk rules (seqeval's default, non-strict mode):

    * ``B-X`` always starts a chunk; ``I-X`` starts one after ``O``, after ``E-``/``S-``, or
      after a tag of a different type (so ``O I-PER`` is a PER entity and ``I-PER I-LOC`` is
      two entities);
    * a chunk ends before ``O``, ``B-``, ``S-``, a type change, or after ``E-``/``S-``.
    """
    op = "extract_entities"
    tags = _host(tags)
    if isinstance(tags, str):
        raise TypeError(f"{op}: expected a sequence of tags, got the string {tags!r}")
    entities = []
    prev, prev_type, start = "O", "", None
    for i, tag in enumerate(list(tags) + ["O"]):
        cur, typ = _split_tag(tag, op)
        if start is not None and _end_of_chunk(prev, cur, prev_type, typ):
            entities.append((prev_type, start, i - 1))
            start = None
        if _start_of_chunk(prev, cur, prev_type, typ):
            start = i
        prev, prev_type = cur, typ
    return entities


def ner_f1(true_tag_seqs, pred_tag_seqs, zero_division=0.0):
    """Entity-level precision / recall / F1 (conlleval, seqeval default mode).

    An entity is ``(type, start, end)`` from :func:`extract_entities`; it counts as correct
    only if the same triple is in the gold sequence. Micro-averaged over all entities::

        precision = #correct / #predicted    recall = #correct / #gold
        F1 = 2 * precision * recall / (precision + recall)

    (0/0 -> ``zero_division``). Returns ``{"precision", "recall", "f1", "per_type": {type:
    {"precision", "recall", "f1", "support"}}}`` where support is the number of gold entities.
    Inputs are lists of tag sequences (one per sentence), with equal lengths sentence by
    sentence.
    """
    op = "ner_f1"
    zd = _check_zero_division(zero_division, op)
    gold_seqs, pred_seqs = _host(true_tag_seqs), _host(pred_tag_seqs)
    if len(gold_seqs) != len(pred_seqs):
        raise ValueError(f"{op}: {len(gold_seqs)} gold sentences but {len(pred_seqs)} predicted")
    if len(gold_seqs) == 0:
        raise ValueError(f"{op}: empty inputs (0 sentences)")
    if isinstance(gold_seqs[0], str) or isinstance(pred_seqs[0], str):
        raise TypeError(f"{op}: expected a list of tag sequences (one list per sentence), got a "
                        f"flat list of tags; wrap it: ner_f1([tags], [pred_tags])")
    gold, pred = set(), set()
    for k, (g, p) in enumerate(zip(gold_seqs, pred_seqs)):
        if len(g) != len(p):
            raise ValueError(f"{op}: sentence {k} has {len(g)} gold tags but {len(p)} "
                             f"predicted tags")
        gold.update((k,) + e for e in extract_entities(g))
        pred.update((k,) + e for e in extract_entities(p))

    def prf(g, p):
        c = len(g & p)
        pr, rc = _divide(c, len(p), zd), _divide(c, len(g), zd)
        f1 = _divide(2 * c, len(p) + len(g), zd)
        return float(pr), float(rc), float(f1)

    per_type = {}
    for typ in sorted({e[1] for e in gold | pred}):
        g = {e for e in gold if e[1] == typ}
        p = {e for e in pred if e[1] == typ}
        pr, rc, f1 = prf(g, p)
        per_type[typ] = {"precision": pr, "recall": rc, "f1": f1, "support": len(g)}
    pr, rc, f1 = prf(gold, pred)
    return {"precision": pr, "recall": rc, "f1": f1, "per_type": per_type}


# ---------------------------------------------------------------------------------------------
# extractive QA: SQuAD v1.1 (English) and CMRC 2018 (Chinese)
# ---------------------------------------------------------------------------------------------
_PUNCT = set(string.punctuation)


def squad_normalize(text):
    """The official SQuAD v1.1 ``normalize_answer``: lower-case, remove ASCII punctuation,
    remove the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


# The official CMRC 2018 script's list, plus every Unicode punctuation/symbol character
# (the official list misses ASCII . , ? ! ' " ( ) and e.g. ‘ 【 】).
_CMRC_SP = set("-:_*^/\\~`+=，。：？！“”；’《》…·、「」（）－～『』")


def _is_cmrc_punct(ch):
    return ch in _CMRC_SP or ch in _PUNCT or unicodedata.category(ch)[0] in "PS"


def _is_chinese(ch):
    return "\u4e00" <= ch <= "\u9fa5"


def cmrc_normalize(text):
    """Normalization for CMRC 2018 exact match: lower-case, then drop punctuation (Chinese
    and ASCII) and all whitespace."""
    return "".join(ch for ch in text.lower() if not (_is_cmrc_punct(ch) or ch.isspace()))


def mixed_segmentation(text):
    """CMRC 2018 tokens: lower-cased, punctuation removed; every Chinese character
    (U+4E00..U+9FA5) is a token, and each run of other characters is split into words on
    whitespace (``"GPT-2模型"`` -> ``["gpt2", "模", "型"]``).

    Differences from the official ``cmrc2018_evaluate.py`` (documented, deliberate): its
    punctuation list misses ASCII ``. , ? ! ' " ( )`` and some Chinese marks, so here every
    Unicode punctuation/symbol character is removed as well; and its ``nltk.word_tokenize`` of
    the non-Chinese runs is replaced by a whitespace split (no NLTK dependency).
    :func:`cmrc_normalize` also removes internal whitespace, which the official EM keeps."""
    tokens, run = [], []
    for ch in text.lower():
        if _is_cmrc_punct(ch):
            continue
        if _is_chinese(ch):
            tokens.extend("".join(run).split())
            run = []
            tokens.append(ch)
        else:
            run.append(ch)
    tokens.extend("".join(run).split())
    return tokens


def _lcs_len(a, b):
    """Length of the longest common *contiguous* run of tokens (the official CMRC ``find_lcs``)."""
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def _ground_truths(ground_truths, op):
    if isinstance(ground_truths, str):
        ground_truths = [ground_truths]
    ground_truths = list(ground_truths)
    if not ground_truths:
        raise ValueError(f"{op}: no ground-truth answers given")
    for g in ground_truths:
        if not isinstance(g, str):
            raise TypeError(f"{op}: answers must be strings, got {type(g).__name__}")
    return ground_truths


def _check_lang(lang, op):
    if lang not in ("en", "zh"):
        raise ValueError(f"{op}: lang must be 'en' (SQuAD) or 'zh' (CMRC 2018), got {lang!r}")


def exact_match(prediction, ground_truths, lang="en"):
    """1.0 if the normalized prediction equals some normalized ground truth, else 0.0
    (max over ground truths). ``lang="en"``: :func:`squad_normalize`; ``lang="zh"``:
    :func:`cmrc_normalize`."""
    op = "exact_match"
    _check_lang(lang, op)
    if not isinstance(prediction, str):
        raise TypeError(f"{op}: prediction must be a string, got {type(prediction).__name__}")
    norm = squad_normalize if lang == "en" else cmrc_normalize
    p = norm(prediction)
    return float(any(p == norm(g) for g in _ground_truths(ground_truths, op)))


def qa_f1(prediction, ground_truths, lang="en"):
    """Token F1, max over ground truths.

    ``lang="en"`` (SQuAD v1.1): tokens = ``squad_normalize(s).split()``;
    ``common = |Counter(pred) & Counter(gold)|`` (multiset overlap);
    ``P = common/|pred|``, ``R = common/|gold|``, ``F1 = 2PR/(P+R)``, 0 when ``common == 0``
    (so two empty answers score 0, as in v1.1).

    ``lang="zh"`` (CMRC 2018): tokens = :func:`mixed_segmentation`; ``common`` = length of
    the longest common contiguous token run (the official script's ``find_lcs``), same P/R/F1.
    """
    op = "qa_f1"
    _check_lang(lang, op)
    if not isinstance(prediction, str):
        raise TypeError(f"{op}: prediction must be a string, got {type(prediction).__name__}")
    best = 0.0
    for g in _ground_truths(ground_truths, op):
        if lang == "en":
            pt, gt = squad_normalize(prediction).split(), squad_normalize(g).split()
            common = sum((Counter(pt) & Counter(gt)).values())
        else:
            pt, gt = mixed_segmentation(prediction), mixed_segmentation(g)
            common = _lcs_len(gt, pt)
        if common == 0:
            continue
        precision, recall = common / len(pt), common / len(gt)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def qa_scores(predictions, references, lang="en"):
    """Dataset scores in percent: ``{"exact_match": 100 * mean EM, "f1": 100 * mean F1}``.

    ``predictions``: list of answer strings, or dict ``id -> answer``; ``references``: list
    (or dict ``id -> ...``) of ground-truth answer lists (a single string is one answer).
    Every reference needs a prediction (a missing one is an error, not a silent 0).
    """
    op = "qa_scores"
    _check_lang(lang, op)
    if isinstance(predictions, dict) or isinstance(references, dict):
        if not (isinstance(predictions, dict) and isinstance(references, dict)):
            raise TypeError(f"{op}: predictions and references must both be lists or both be "
                            f"dicts keyed by question id")
        missing = [k for k in references if k not in predictions]
        extra = [k for k in predictions if k not in references]
        if missing or extra:
            raise ValueError(f"{op}: ids without a prediction: {missing[:5]} "
                             f"({len(missing)} in all); predictions without a reference: "
                             f"{extra[:5]} ({len(extra)} in all)")
        keys = list(references)
        predictions = [predictions[k] for k in keys]
        references = [references[k] for k in keys]
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{op}: {len(predictions)} predictions for {len(references)} questions")
    if not references:
        raise ValueError(f"{op}: empty inputs (0 questions)")
    em = sum(exact_match(p, r, lang) for p, r in zip(predictions, references))
    f1 = sum(qa_f1(p, r, lang) for p, r in zip(predictions, references))
    n = len(references)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


# ---------------------------------------------------------------------------------------------
# BLEU (Papineni et al. 2002)
# ---------------------------------------------------------------------------------------------
def _tokens(x, what, op):
    if isinstance(x, str):
        raise TypeError(f"{op}: {what} is the string {x[:30]!r}; BLEU works on token lists -- "
                        f"tokenize first (x.split(), or list(x) for characters)")
    return list(x)


def _ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu_details(references, hypotheses, max_n=4, smooth=False):
    """Corpus BLEU with its parts. ``references[i]`` is the list of reference token lists for
    ``hypotheses[i]`` (a token list).

    Clipped n-gram precision, summed over the corpus::

        p_n = sum_i sum_g min(count_hyp_i(g), max_r count_ref_r(g)) / sum_i sum_g count_hyp_i(g)

    brevity penalty with c = total hypothesis length, r = sum of the reference lengths closest
    to each hypothesis length (ties: the shorter)::

        BP = 1 if c > r else exp(1 - r / c)
        BLEU = BP * exp( sum_{n=1..N} (1/N) log p_n )

    BLEU is 0 if some p_n is 0 (or c is 0). ``smooth=True`` applies add-one smoothing to
    n >= 2 (Lin & Och 2004, "BLEU+1"): ``p_n = (clipped + 1) / (total + 1)``.
    Returns ``{"bleu", "precisions", "bp", "hyp_len", "ref_len", "counts", "totals"}``.
    """
    op = "bleu"
    if not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"{op}: max_n must be a positive int, got {max_n!r}")
    refs_all, hyps = list(references), list(hypotheses)
    if len(refs_all) != len(hyps):
        raise ValueError(f"{op}: {len(refs_all)} reference sets for {len(hyps)} hypotheses")
    if not hyps:
        raise ValueError(f"{op}: empty corpus (0 hypotheses)")
    counts, totals = [0] * max_n, [0] * max_n
    c = r = 0
    for i, (refs, hyp) in enumerate(zip(refs_all, hyps)):
        hyp = _tokens(hyp, f"hypotheses[{i}]", op)
        if isinstance(refs, str) or (refs and isinstance(refs[0], str)):
            raise TypeError(f"{op}: references[{i}] must be a list of reference token lists "
                            f"(e.g. [ref.split()]), got {str(refs)[:40]}")
        refs = [_tokens(x, f"references[{i}][{j}]", op) for j, x in enumerate(refs)]
        if not refs:
            raise ValueError(f"{op}: references[{i}] has no reference")
        c += len(hyp)
        r += min((abs(len(x) - len(hyp)), len(x)) for x in refs)[1]
        for n in range(1, max_n + 1):
            h = _ngrams(hyp, n)
            max_ref = Counter()
            for x in refs:
                max_ref |= _ngrams(x, n)
            counts[n - 1] += sum(min(k, max_ref[g]) for g, k in h.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    precisions = []
    for n in range(max_n):
        num, den = counts[n], totals[n]
        if smooth and n >= 1:
            num, den = num + 1, den + 1
        precisions.append(num / den if den else 0.0)
    bp = 0.0 if c == 0 else (1.0 if c > r else math.exp(1 - r / c))
    if c == 0 or min(precisions) == 0:
        score = 0.0
    else:
        score = bp * math.exp(sum(math.log(p) for p in precisions) / max_n)
    return {"bleu": score, "precisions": precisions, "bp": bp, "hyp_len": c, "ref_len": r,
            "counts": counts, "totals": totals}


def bleu(references, hypotheses, max_n=4, smooth=False):
    """Corpus BLEU in [0, 1] (formulas: :func:`bleu_details`)."""
    return bleu_details(references, hypotheses, max_n, smooth)["bleu"]


def sentence_bleu(references, hypothesis, max_n=4, smooth=False):
    """BLEU of one hypothesis (token list) against its references (list of token lists);
    ``smooth=True`` is usually wanted here, since one missing 4-gram gives 0."""
    return bleu([references], [hypothesis], max_n, smooth)
