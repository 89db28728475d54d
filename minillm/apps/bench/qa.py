"""Question answering with retrieval: open-domain QA (retrieve, then read) and KB QA.

Reading comprehension gives the model the paragraph that holds the answer. Open-domain QA
does not: the system must first *find* the paragraph in a collection (a retriever: BM25 or
TF-IDF, :mod:`minillm.retrieval`), then *read* it with an extractive QA model (a reader: a
BERT with a start/end head, fine-tuned with :func:`minillm.apps.tasks.finetune`) -- DrQA's
"retrieve then read" pipeline (Chen et al. 2017), here on a small scale.

* :func:`open_domain_qa` -- SQuAD v1.1 (English) or CMRC 2018 (Chinese). minillm splits each
  dev file 80/20 *by article*; the paragraphs of the test articles are the collection, and
  each test question is answered from the paragraphs BM25 ranks highest. Rows: the reader
  given the gold paragraph (the reading-comprehension upper bound), BM25 top-1 + reader,
  BM25 top-5 + reader; and the retrievers' recall@1/5/20.
* :func:`kb_qa` -- the generated ``kb_qa`` set: the sentences of a small knowledge base are
  the collection; a question's top-k facts, joined, are its context; a reader fine-tuned on
  the training questions (with *their* retrieved facts as context) answers the test ones.
  One-hop questions need one fact; two-hop questions ("In which country was X born?") need a
  bridge fact that shares no word with the question, which one round of lexical retrieval
  rarely finds (the result says how often).

**Reading k paragraphs.** Each (question, paragraph) pair is encoded as its own QA example
(``[CLS] question [SEP] paragraph-window [SEP]``, the windows of
:func:`minillm.apps.tasks.encode_qa`) and scored by the reader. The answer is the span with the
highest ``start_logit + end_logit`` over every window of every retrieved paragraph: the
paragraphs are treated as the windows of one long document, so
:func:`minillm.data.postprocess_qa` -- which already picks the best span across the windows
of a long context -- makes the choice (the window offsets are shifted into the joined text).
The raw logits are compared, not per-paragraph probabilities: a softmax inside each
paragraph would give every paragraph's best span a high probability, even where the
paragraph is unrelated (Clark & Gardner 2018 discuss this). The retrieval score does not
enter the choice.

Both benchmarks take ``device=None, seed=0, fast=False, progress=True, output_dir=None,
log=print`` like :mod:`minillm.apps.bench.quality` and return a JSON-able dict (also written to
``output_dir/results.json`` with a PNG). ``fast=True`` runs the same code on tiny subsets
and a tiny model in seconds.
"""
from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from ... import backend, datasets, metrics
from .. import tasks
from ..._fileio import atomic_write_json
from ...autograd import no_grad
from ...data import Collator
from ...data.collators import postprocess_qa
from ...retrieval import BM25, TfidfRetriever, analyze, recall_at_k
from .quality import _finish, _header, _logger, cli_flags, new_axes, same_settings

__all__ = ["open_domain_qa", "kb_qa", "read_passages", "paragraph_collection",
           "answer_span", "READER", "KB_READER", "format_qa_result", "qa_table"]

ODQA_DATASETS = ("squad_v1.1", "cmrc2018")
RECALL_KS = (1, 5, 20)
CURVE_KS = tuple(range(1, 21))          # the recall curve: recall@1..20
READ_KS = (1, 5)
JOIN = "\n\n"                 # between paragraphs joined for postprocess_qa (never inside a span)

# the reader trained when none is given: a small BERT from scratch; the window is fixed,
# the epochs are `finetune`'s default (from the data size, early stopping on validation F1)
READER = {
    "squad_v1.1": dict(tokenizer="bpe", vocab_size=8000, n_layer=2, n_head=4, n_embd=128,
                       max_length=192, max_query_length=32, doc_stride=48, batch_size=32,
                       max_eval_examples=300),
    "cmrc2018": dict(tokenizer="char", n_layer=2, n_head=4, n_embd=128, max_length=256,
                     max_query_length=32, doc_stride=32, batch_size=32, max_eval_examples=300),
}
READER_FAST = dict(n_layer=1, n_head=2, n_embd=16, max_length=64, max_query_length=16,
                   doc_stride=16, max_steps=2, batch_size=8, max_train_examples=32,
                   max_eval_examples=8)
BPE_FAST_VOCAB = 400
FAST_QUESTIONS = 6


# -- helpers shared by both benchmarks ----------------------------------------------------------
def paragraph_collection(examples):
    """``(documents, gold)``: the distinct contexts of ``examples`` in order of first use,
    and for each example the index of its context in ``documents``."""
    index = {}
    gold = [index.setdefault(e["context"], len(index)) for e in examples]
    return list(index), gold


def answer_span(context, answer):
    """Character offset of the first occurrence of ``answer`` in ``context`` as a whole
    word (not inside a longer word or number), or -1 when there is none."""
    m = re.search(r"(?<!\w)" + re.escape(answer) + r"(?!\w)", context)
    return m.start() if m else -1


def read_passages(model, tok, info, questions, doc_lists, documents, batch_size=64,
                  cache=None):
    """The reader's answer to each question from its passages: ``[str]``.

    ``questions[i]`` is answered from ``documents[d]`` for ``d`` in ``doc_lists[i]`` (the
    best span over all of them, by raw start + end logits; see the module docstring).
    ``cache`` (a dict) keeps the windows and logits of each ``(i, d)`` pair, so that reading
    the same pair again (top-1 is part of top-5) costs nothing."""
    cache = {} if cache is None else cache
    todo = sorted({(i, d) for i, ds in enumerate(doc_lists) for d in ds} - cache.keys())
    if todo:
        pseudo = datasets.Dataset([{"id": f"{i}:{d}", "question": questions[i],
                                    "context": documents[d]} for i, d in todo])
        feats = tasks.encode_qa(pseudo, tok, info["max_length"], info["doc_stride"],
                                info["max_query_length"], with_answers=False)
        collator = Collator(pad_id=tok.pad_id, device=backend.device(
            next(iter(model.parameters())).device))
        for (i, d) in todo:
            cache[(i, d)] = []
        was = model.training
        model.eval()
        try:
            with no_grad():
                for chunk, _, out in tasks._run(model, feats, collator, batch_size):
                    s, e = tasks._logits_host(out[0]), tasks._logits_host(out[1])
                    for j, f in enumerate(chunk):
                        n = len(f["input_ids"])
                        cache[todo[f["example_index"]]].append((f["offsets"], s[j, :n],
                                                                 e[j, :n]))
        finally:
            model.train(was)
    joined, feats, starts, ends = [], [], [], []
    for i, ds in enumerate(doc_lists):
        pos = 0
        for d in ds:
            for offsets, s, e in cache[(i, d)]:
                feats.append({"example_index": i, "offsets": [
                    None if o is None else (o[0] + pos, o[1] + pos) for o in offsets]})
                starts.append(s)
                ends.append(e)
            pos += len(documents[d]) + len(JOIN)
        joined.append({"id": i, "context": JOIN.join(documents[d] for d in ds)})
    preds = postprocess_qa(joined, feats, starts, ends,
                           max_answer_length=info.get("max_answer_length", 30))
    return [preds[i] for i in range(len(questions))]


def _scores(preds, refs, lang):
    if not refs:
        return {"exact_match": None, "f1": None, "questions": 0}
    s = metrics.qa_scores(list(preds), [list(r) for r in refs], lang=lang)
    return {"exact_match": s["exact_match"], "f1": s["f1"], "questions": len(refs)}


def _reusable(run_dir, cfg):
    """True when ``run_dir`` holds a finished fine-tuning run with the settings of ``cfg``."""
    try:
        saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["finetune"]
        done = (run_dir / "metrics.json").is_file() and (run_dir / "model").is_dir()
    except (OSError, KeyError, ValueError):
        return False
    return done and same_settings(saved, cfg)


def _train_bpe(texts, vocab_size, path):
    """A byte-level BPE tokenizer with BERT's special tokens, saved to ``path``.

    (BPE rather than ``finetune --tokenizer wordpiece``: minillm's WordPiece trainer merges
    rare pairs first and leaves frequent words like "the" as single characters on SQuAD.)"""
    tasks.bpe_tokenizer(texts, vocab_size).save(path)
    return path


def _finetune_reader(run_dir, settings, texts, data, device, seed, progress, say):
    """Fine-tune (or reuse) a QA reader in ``run_dir``; ``data`` is ``{"dataset": name}``
    or ``{"train": file, "validation": file}``. Returns ``(model_dir, summary)``."""
    s = dict(settings)
    if s.get("tokenizer") == "bpe":
        run_dir.mkdir(parents=True, exist_ok=True)
        s["tokenizer"] = str(_train_bpe(texts, s.pop("vocab_size"),
                                        run_dir.parent / f"{run_dir.name}-tokenizer.json"))
    else:
        s.pop("vocab_size", None)
    cfg = tasks.FinetuneConfig(task="qa", output_dir=str(run_dir), device=str(device),
                               progress=progress, seed=seed, **data, **s)
    command = f"minillm finetune --task qa {cli_flags(data)} {cli_flags(s)} --seed {seed} " \
              f"--output-dir {run_dir}"
    if _reusable(run_dir, cfg):
        say(f"reusing the reader in {run_dir} (same settings)")
        res = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        reused = True
    else:
        say(f"fine-tuning the reader: {command}")
        res = tasks.finetune(cfg, command=command, log=say)
        reused = False
    summary = {"path": str(run_dir / "model"), "trained_here": True, "reused": reused,
               "command": command, "settings": s, "train_seconds": res.get("train_seconds"),
               "steps": res.get("steps"), "parameters": res.get("parameters"),
               "train_examples": res.get("train_examples"),
               "train_features": res.get("train_features"),
               "validation": res.get("validation")}
    return run_dir / "model", summary


def _load_reader(path, say):
    model, tok, info = tasks.load_task_model(path)
    if info.get("task") != "qa":
        raise ValueError(f"reader={path!r} is a {info.get('task')!r} model; give a QA model "
                         "directory (minillm finetune --task qa)")
    say(f"reader: {type(model.base).__name__} {model.num_parameters():,} parameters from {path}")
    return model, tok, info


@contextlib.contextmanager
def _run_root(output_dir, name):
    if output_dir is not None:
        root = Path(output_dir)
        root.mkdir(parents=True, exist_ok=True)
        yield root
    else:
        with tempfile.TemporaryDirectory(prefix=f"minillm-{name}-") as d:
            yield Path(d)


def qa_table(rows):
    """The rows as a Markdown table."""
    def num(v):
        return "" if v is None else f"{v:.2f}"
    lines = ["| setting | EM | F1 | retrieval recall | questions |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        rec = r.get("retrieval_recall")
        lines.append(f"| {r['setting']} | {num(r['exact_match'])} | {num(r['f1'])} | "
                     f"{'' if rec is None else f'{rec:.3f}'} | {r['questions']} |")
    return "\n".join(lines)


# == open-domain QA ===========================================================================
def _odqa_check(dataset, max_questions, reader):
    """Refuse bad arguments before any work; returns ``reader`` as a model directory (or
    None)."""
    if dataset not in ODQA_DATASETS:
        raise ValueError(f"open_domain_qa: dataset must be one of {', '.join(ODQA_DATASETS)}, "
                         f"got {dataset!r}")
    if max_questions is not None and (isinstance(max_questions, bool)
                                      or not isinstance(max_questions, int) or max_questions < 1):
        raise ValueError(f"open_domain_qa: max_questions must be None or an int >= 1, got "
                         f"{max_questions!r}")
    if reader is not None:                  # refused before any work when it is no model
        reader = tasks.task_model_dir(reader)
    return reader


def _odqa_questions(dataset, fast, max_questions, say):
    """The test split as a collection and its questions: ``{"documents", "gold",
    "questions", "refs", "lang", "n_read", "n_recall"}``."""
    test = datasets.load(dataset, split="test", fix_answer_starts=True)
    documents, gold = paragraph_collection(test.examples)
    questions = [e["question"] for e in test.examples]
    n_read = FAST_QUESTIONS if fast else (max_questions or len(questions))
    n_read = min(n_read, len(questions))
    say(f"open-domain QA on {dataset}: {len(documents)} paragraphs from {test.meta['articles']} "
        f"test articles, {len(questions)} test questions ({n_read} read)")
    return {"documents": documents, "gold": gold, "questions": questions,
            "refs": [e["answers"]["text"] for e in test.examples],
            "lang": "zh" if dataset == "cmrc2018" else "en", "n_read": n_read,
            "n_recall": n_read if fast else len(questions)}


def _odqa_retrieve(qs, say):
    """BM25 and TF-IDF recall@1..20 over the questions, and BM25's top paragraphs for the
    questions read: ``{"curves", "retrieval", "top", "seconds"}``."""
    t0 = time.perf_counter()
    documents, questions, n_recall = qs["documents"], qs["questions"], qs["n_recall"]
    retrievers = {"bm25": BM25(k1=1.5, b=0.75).fit(documents),
                  "tfidf": TfidfRetriever().fit(documents)}
    curves = {name: recall_at_k(r, questions[:n_recall], qs["gold"][:n_recall], ks=CURVE_KS)
              for name, r in retrievers.items()}
    retrieval = {name: {f"recall@{k}": c[k] for k in RECALL_KS} for name, c in curves.items()}
    top = [[d for d, _ in hits] for hits in
           retrievers["bm25"].search_batch(questions[:qs["n_read"]], max(READ_KS))]
    seconds = time.perf_counter() - t0
    for name, r in retrieval.items():
        say(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    return {"curves": curves, "retrieval": retrieval, "top": top, "seconds": seconds}


def _odqa_settings(dataset, max_questions, batch_size):
    """The settings recorded in an open-domain QA result."""
    return {"dataset": dataset, "collection": "the distinct paragraphs of the test "
            "articles (80/20 split by article, seed 0)", "bm25": {"k1": 1.5, "b": 0.75},
            "tfidf": "cosine of (1 + log tf) * smoothed idf", "analyzer": "auto",
            "read_k": list(READ_KS), "span_choice": "max start+end logit over all windows "
            "of the k paragraphs", "max_questions": max_questions,
            "batch_size": batch_size}


def _odqa_reader(dataset, reader, root, settings, dev, fast, seed, progress, say):
    """The given reader, or one fine-tuned on the train split in ``root`` (its settings go
    into ``settings``). Returns ``(model, tok, info, reader_info)``."""
    if reader is None:
        train = datasets.load(dataset, split="train", fix_answer_starts=True)
        rs = {**READER[dataset], **(READER_FAST if fast else {})}
        if fast and rs["tokenizer"] == "bpe":
            rs["vocab_size"] = BPE_FAST_VOCAB
        # the tokenizer learns from the examples the reader will train on
        seen = tasks.sample_examples(train, rs.get("max_train_examples"), seed).examples
        texts = list(dict.fromkeys(e["context"] for e in seen)) + \
            [e["question"] for e in seen]
        model_dir, reader_info = _finetune_reader(
            root / f"reader-{dataset}", rs, texts, {"dataset": dataset}, dev, seed,
            progress, say)
        settings["reader"] = rs
    else:
        model_dir = Path(reader)
        reader_info = {"path": str(model_dir), "trained_here": False}
    model, tok, info = _load_reader(model_dir, say)
    model.to(dev)
    reader_info["parameters"] = model.num_parameters()
    return model, tok, info, reader_info


def _odqa_read(model, tok, info, qs, top, batch_size):
    """The reader's answers from the gold paragraph and from BM25's top k (k in
    :data:`READ_KS`): ``({"gold": [..], "top1": [..], ..}, seconds)``."""
    t0 = time.perf_counter()
    n_read = qs["n_read"]
    cache = {}
    lists = {"gold": [[g] for g in qs["gold"][:n_read]]}
    lists.update({f"top{k}": [t[:k] for t in top] for k in READ_KS})
    preds = {name: read_passages(model, tok, info, qs["questions"][:n_read], dl,
                                 qs["documents"], batch_size, cache)
             for name, dl in lists.items()}
    return preds, time.perf_counter() - t0


def _odqa_rows(preds, qs, top, say):
    """The table rows (gold paragraph, then BM25 top-k + reader), each logged."""
    n_read, gold, refs, lang = qs["n_read"], qs["gold"], qs["refs"], qs["lang"]
    rows = [{"setting": "reader, gold paragraph (reading comprehension)", "k": None,
             **_scores(preds["gold"], refs[:n_read], lang), "retrieval_recall": None}]
    for k in READ_KS:
        hit = float(np.mean([g in t[:k] for g, t in zip(gold[:n_read], top)]))
        rows.append({"setting": f"BM25 top-{k} + reader", "k": k,
                     **_scores(preds[f"top{k}"], refs[:n_read], lang), "retrieval_recall": hit})
    for r in rows:
        say(f"{r['setting']}: EM {r['exact_match']:.2f}, F1 {r['f1']:.2f}")
    return rows


def _plot_odqa(result, path):
    """Recall@k of both retrievers beside the reader's F1 at each setting."""
    rows = result["rows"]
    fig, ax = new_axes((6, 4))
    for name, label in (("bm25", "BM25"), ("tfidf", "TF-IDF")):
        ax.plot(CURVE_KS, result["recall_curve"][name], "o-", ms=3, label=label)
    for r in rows[1:]:
        ax.plot([r["k"]], [r["f1"] / 100], "s", ms=7, label=f"{r['setting']}: F1 / 100")
    ax.axhline(rows[0]["f1"] / 100, color="grey", ls=":", label="reader, gold paragraph: "
               "F1 / 100")
    ax.set_xlabel("k (paragraphs retrieved)")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("recall@k (gold paragraph in the top k)")
    ax.set_title(f"Open-domain QA on {result['dataset']} ({result['n_documents']} paragraphs)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def open_domain_qa(device=None, seed=0, fast=False, progress=True, output_dir=None, log=print,
                   dataset="squad_v1.1", reader=None, max_questions=None, batch_size=64):
    """Retrieve-then-read on ``dataset`` (``"squad_v1.1"`` or ``"cmrc2018"``).

    The collection is every distinct paragraph of the test articles; each test question's
    gold document is its own paragraph. BM25 (k1=1.5, b=0.75) and TF-IDF (cosine) rank the
    collection for every question (recall@1/5/20 for both, and recall@1..20 in the plot);
    the reader answers from BM25's top 1 and top 5, and from the gold paragraph.

    ``reader``: a fine-tuned QA model directory (``minillm finetune --task qa``); None
    fine-tunes a small BERT from scratch on the train split first (:data:`READER`; written to
    ``output_dir/reader-<dataset>`` and reused on the next run when the settings match;
    without ``output_dir`` it lives in a temporary folder, deleted at the end).
    ``max_questions``: read only the first that many test questions (retrieval recall uses
    all of them). EM/F1 are SQuAD's (CMRC 2018: character-level F1, as its scorer).

    Returns keys: ``dataset``, ``n_documents``, ``n_questions`` (read), ``retrieval``
    (``{"bm25": {"recall@1": ..}, "tfidf": {..}}`` over ``retrieval_questions``),
    ``recall_curve`` (k = 1..20), ``rows`` (``[{setting, k, exact_match, f1,
    retrieval_recall, questions}]``: gold paragraph, BM25 top-1, BM25 top-5), ``table``
    (Markdown), ``reader`` (path, how it was trained, its validation scores),
    ``examples`` (a few questions with the predictions), ``retrieval_seconds``,
    ``read_seconds``, ``total_seconds``, plus the common ``benchmark``, ``version``,
    ``device``, ``seed``, ``fast``, ``settings``, ``anchor``.
    """
    reader = _odqa_check(dataset, max_questions, reader)
    say = _logger(log)
    t_start = time.perf_counter()
    dev = backend.device(device)
    qs = _odqa_questions(dataset, fast, max_questions, say)
    ret = _odqa_retrieve(qs, say)
    top, n_read = ret["top"], qs["n_read"]
    settings = _odqa_settings(dataset, max_questions, batch_size)
    with _run_root(output_dir, "odqa") as root, backend.default_device_as(dev), \
            backend.default_dtype_as(np.float32):
        model, tok, info, reader_info = _odqa_reader(dataset, reader, root, settings, dev, fast,
                                                     seed, progress, say)
        preds, read_seconds = _odqa_read(model, tok, info, qs, top, batch_size)
    rows = _odqa_rows(preds, qs, top, say)
    examples = [{"question": qs["questions"][i], "answers": qs["refs"][i][:3],
                 **{name: preds[name][i] for name in preds},
                 "bm25_top5": top[i], "gold_paragraph": qs["gold"][i]}
                for i in range(min(5, n_read))]
    result = _header("open-domain-qa", dev, seed, fast, settings,
                     {"note": "no published number for this collection (the paragraphs of "
                              "minillm's test articles); the gold-paragraph row is the "
                              "reader's upper bound, the retrieval rows measure the loss"})
    result.update(dataset=dataset, lang=qs["lang"], n_documents=len(qs["documents"]),
                  n_questions=n_read, retrieval_questions=qs["n_recall"],
                  retrieval=ret["retrieval"],
                  recall_curve={name: [c[k] for k in CURVE_KS]
                                for name, c in ret["curves"].items()},
                  rows=rows, table=qa_table(rows), reader=reader_info, examples=examples,
                  retrieval_seconds=ret["seconds"], read_seconds=read_seconds)
    result["total_seconds"] = time.perf_counter() - t_start
    say(result["table"])
    return _finish(result, output_dir, lambda path: _plot_odqa(result, path), log)


# == knowledge-base QA ========================================================================
KB_READER = dict(tokenizer="bpe", vocab_size=1200, n_layer=2, n_head=4, n_embd=128,
                 max_length=96, max_query_length=24, doc_stride=32, num_train_epochs=40.0,
                 batch_size=16)
KB_READER_FAST = dict(n_layer=1, n_head=2, n_embd=16, max_steps=2, batch_size=8,
                      max_train_examples=32, max_eval_examples=8, vocab_size=BPE_FAST_VOCAB)
KB_FAST_QUESTIONS = 16


def _retrieve_facts(bm25, facts, question, k, rounds):
    """Fact ids for ``question``: BM25's top ``k``. With ``rounds=2`` each of them is then
    *followed*: its words that are not in the question (for "X was born in Krusta." asked
    "In which country was X born?": "krusta") are searched again and the best fact not yet
    retrieved is added, so a bridge entity can bring in its own facts (up to ``2k`` facts)."""
    first = [d for d, _ in bm25.search(question, k)]
    if rounds == 1:
        return first
    asked = set(analyze(question))
    got = list(first)
    for d in first:
        new_words = [t for t in analyze(facts[d]) if t not in asked]
        if new_words:
            hits = bm25.search(" ".join(new_words), len(got) + 1)
            got += [h for h, _ in hits if h not in got][:1]
    return got


def _supporting_facts(kb, where, q):
    """Indices of the KB triples a question needs (one for one hop, two for two hops);
    ``where`` maps ``(entity, relation)`` to the triple's index."""
    if q["hops"] == 1:
        return [where[(q["subject"], q["relation"])]]
    r1, r2 = q["relation"].split("/")
    i = where[(q["subject"], r1)]
    return [i, where[(kb[i][2], r2)]]


def _kb_examples(ds, bm25, facts, k, rounds):
    """SQuAD-style examples: context = the retrieved facts joined; the answer placed at its
    first whole-word occurrence, or at -1 when the context does not contain it."""
    out = []
    for q in ds.examples:
        ids = _retrieve_facts(bm25, facts, q["question"], k, rounds)
        ctx = " ".join(facts[i] for i in ids)
        out.append({"id": q["id"], "title": "kb_qa", "question": q["question"], "context": ctx,
                    "answers": {"text": [q["answer"]],
                                "answer_start": [answer_span(ctx, q["answer"])]},
                    "hops": q["hops"], "fact_ids": ids})
    return out


def _squad_json(examples, path):
    """Write examples as one SQuAD-format article (what ``finetune --train FILE`` reads)."""
    paras = [{"context": e["context"], "qas": [{"id": e["id"], "question": e["question"],
                                                "answers": [{"text": t, "answer_start": s}
                                                            for t, s in zip(
                                                                e["answers"]["text"],
                                                                e["answers"]["answer_start"])]}]}
             for e in examples]
    atomic_write_json(path, {"version": "minillm-kb_qa", "data": [{"title": "kb_qa",
                                                                    "paragraphs": paras}]})
    return path


def _kb_retrieval_stats(examples, questions, kb):
    """Answer recall (the context contains the answer) and supporting-fact recall (every
    needed fact retrieved), overall and by hops."""
    where = {(e, r): i for i, (e, r, _) in enumerate(kb)}
    def rates(sel):
        if not sel:
            return {"answer_in_context": None, "facts_retrieved": None, "questions": 0}
        ans = [examples[i]["answers"]["answer_start"][0] >= 0 for i in sel]
        sup = [set(_supporting_facts(kb, where, questions[i])) <= set(examples[i]["fact_ids"])
               for i in sel]
        return {"answer_in_context": float(np.mean(ans)), "facts_retrieved": float(np.mean(sup)),
                "questions": len(sel)}
    every = list(range(len(examples)))
    relations = sorted({q["relation"] for q in questions})
    return {"all": rates(every),
            "one_hop": rates([i for i in every if questions[i]["hops"] == 1]),
            "two_hop": rates([i for i in every if questions[i]["hops"] == 2]),
            "by_relation": {r: rates([i for i in every if questions[i]["relation"] == r])
                            for r in relations}}


def _by_hops(preds, questions, setting):
    refs = [[q["answer"]] for q in questions]
    row = {"setting": setting, **_scores(preds, refs, "en")}
    for name, h in (("one_hop", 1), ("two_hop", 2)):
        sel = [i for i, q in enumerate(questions) if q["hops"] == h]
        s = _scores([preds[i] for i in sel], [refs[i] for i in sel], "en")
        row[name] = s
    return row


def kb_table(rows):
    def num(v):
        return "" if v is None else f"{v:.1f}"
    lines = ["| setting | EM | F1 | one-hop EM | one-hop F1 | two-hop EM | two-hop F1 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {num(r['exact_match'])} | {num(r['f1'])} | "
                     f"{num(r['one_hop']['exact_match'])} | {num(r['one_hop']['f1'])} | "
                     f"{num(r['two_hop']['exact_match'])} | {num(r['two_hop']['f1'])} |")
    return "\n".join(lines)


def _kb_check(k, rounds):
    """Refuse a bad ``k`` or ``rounds`` before any work."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"kb_qa: k (facts per question) must be an int >= 1, got {k!r}")
    if rounds not in (1, 2):
        raise ValueError(f"kb_qa: rounds must be 1 or 2, got {rounds!r}")


def _kb_splits(fast):
    """The ``kb_qa`` splits (the test split cut to :data:`KB_FAST_QUESTIONS` in fast mode)."""
    splits = {s: datasets.load("kb_qa", split=s) for s in ("train", "validation", "test")}
    if fast:
        splits["test"] = datasets.Dataset(splits["test"].examples[:KB_FAST_QUESTIONS], None,
                                          "kb_qa", "test", splits["test"].meta)
    return splits


def _kb_retrieval(splits, k, rounds, say):
    """Retrieve every question's facts and measure the retrieval (each split logged).

    Returns ``{"kb", "facts", "examples", "questions", "retrieval", "by_rounds",
    "not_in_context"}``."""
    kb, facts = splits["train"].meta["kb"], splits["train"].meta["facts"]
    bm25 = BM25().fit(facts)
    examples = {s: _kb_examples(d, bm25, facts, k, rounds) for s, d in splits.items()}
    questions = {s: d.examples for s, d in splits.items()}
    retrieval = {s: _kb_retrieval_stats(examples[s], questions[s], kb) for s in ("train", "test")}
    by_rounds = {str(n): _kb_retrieval_stats(_kb_examples(splits["test"], bm25, facts, k, n),
                                             questions["test"], kb) for n in (1, 2)}
    not_in_context = {s: sum(e["answers"]["answer_start"][0] < 0 for e in ex)
                      for s, ex in examples.items()}
    say(f"kb_qa: {len(facts)} facts; {', '.join(f'{s} {len(d)}' for s, d in splits.items())} "
        f"questions; top-{k} facts, {rounds} round(s)")
    for s, r in retrieval.items():
        say(f"{s}: answer in context " + ", ".join(
            f"{h} {r[h]['answer_in_context']:.3f}" for h in ("all", "one_hop", "two_hop")
            if r[h]["questions"])
            + f"; {not_in_context[s]} questions without their answer in the context")
    return {"kb": kb, "facts": facts, "examples": examples,
            "questions": questions, "retrieval": retrieval, "by_rounds": by_rounds,
            "not_in_context": not_in_context}


def _kb_reader(reader, root, ret, settings, dev, fast, seed, progress, say):
    """The given reader, or one fine-tuned in ``root`` on the training questions with their
    retrieved facts (written there as SQuAD files; its settings go into ``settings``).
    Returns ``(model, tok, info, reader_info)``."""
    if reader is None:
        data_dir = root / "kb_qa-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        examples = ret["examples"]
        data = {"train": str(_squad_json(examples["train"], data_dir / "train.json")),
                "validation": str(_squad_json(examples["validation"],
                                              data_dir / "validation.json"))}
        rs = {**KB_READER, **(KB_READER_FAST if fast else {})}
        texts = ret["facts"] + [q["question"] for q in ret["questions"]["train"]]
        model_dir, reader_info = _finetune_reader(root / "reader-kb_qa", rs, texts, data,
                                                  dev, seed, progress, say)
        settings["reader"] = rs
    else:
        model_dir = Path(reader)
        reader_info = {"path": str(model_dir), "trained_here": False}
    model, tok, info = _load_reader(model_dir, say)
    model.to(dev)
    return model, tok, info, reader_info


def _kb_read(model, tok, info, examples, dev, batch_size):
    """The reader's answer to each test question from its retrieved facts."""
    test_ds = datasets.Dataset(examples, None, "kb_qa", "test")
    feats = tasks.encode_qa(test_ds, tok, info["max_length"], info["doc_stride"],
                            info["max_query_length"], with_answers=False)
    collator = Collator(pad_id=tok.pad_id, device=dev)
    _, pred = tasks.evaluate_features(model, "qa", test_ds, feats, collator, info, batch_size)
    return [pred["pred"][e["id"]] for e in examples]


def _kb_rows(ret, reader_preds, k, rounds, say):
    """The rule baseline's row (the object of the top-1 fact) and the reader's, each logged,
    and the first 6 test questions with both answers. Returns ``(rows, examples)``."""
    examples, questions = ret["examples"]["test"], ret["questions"]["test"]
    rule = [ret["kb"][e["fact_ids"][0]][2] for e in examples]
    rows = [_by_hops(rule, questions, "rule: object of the top-1 fact"),
            _by_hops(reader_preds, questions, f"reader, BM25 top-{k} facts"
                     + (" (2 rounds)" if rounds == 2 else ""))]
    for r in rows:
        say(f"{r['setting']}: EM {r['exact_match']:.1f}, F1 {r['f1']:.1f}")
    ex = [{"question": q["question"], "answer": q["answer"], "hops": q["hops"],
           "context": e["context"], "rule": rule[i], "reader": reader_preds[i]}
          for i, (q, e) in enumerate(zip(questions, examples)) if i < 6]
    return rows, ex


def _plot_kb(result, k, path):
    """Test answer recall of the top-``k`` facts beside each row's exact match, by hops."""
    rows = result["rows"]
    fig, ax = new_axes((6.5, 4))
    groups = ("all", "one_hop", "two_hop")
    x = np.arange(len(groups))
    width = 0.8 / (len(rows) + 1)
    rec = [result["retrieval"]["test"][g]["answer_in_context"] for g in groups]
    ax.bar(x - 0.4 + width / 2, [100 * (v or 0) for v in rec], width,
           label=f"answer in top-{k} facts (%)")
    for j, r in enumerate(rows, start=1):
        vals = [r["exact_match"], r["one_hop"]["exact_match"], r["two_hop"]["exact_match"]]
        ax.bar(x - 0.4 + width * (j + 0.5), [v or 0 for v in vals], width,
               label=f"{r['setting']}: EM")
    ax.set_xticks(x)
    ax.set_xticklabels(["all", "one-hop", "two-hop"])
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.set_title("kb_qa: retrieve facts (BM25), then read")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def kb_qa(device=None, seed=0, fast=False, progress=True, output_dir=None, log=print, k=3,
          rounds=1, reader=None, batch_size=64):
    """Retrieval-augmented QA over the ``kb_qa`` knowledge base (see the module docstring).

    The collection is ``ds.meta["facts"]`` (one sentence per KB triple, 464 of them); a
    question's context is its BM25 top-``k`` facts joined with spaces (``rounds=2``: each of
    them followed by one more search, see :func:`_retrieve_facts`). A reader
    (``reader=`` a QA model directory, or None: a small BERT fine-tuned from scratch on the
    training questions, :data:`KB_READER`) answers the test questions from their contexts.
    A question whose answer is not in its context cannot be a training example (it has no
    span); such questions are counted (``not_in_context``) and still scored at test time.

    Rule baseline: the object of the top-1 fact's triple (right for one-hop questions when
    BM25 ranks the asked-about fact first; a two-hop answer is never the object of the fact
    about the question's subject).

    Returns keys: ``retrieval`` (per split ``train``/``test``, for the ``rounds`` used:
    ``{all, one_hop, two_hop}`` each ``{answer_in_context, facts_retrieved, questions}``, and
    ``by_relation``: the same per question relation),
    ``test_retrieval_by_rounds`` (``{"1": .., "2": ..}``: the test split retrieved both ways),
    ``not_in_context`` (counts per split), ``rows`` (rule baseline and reader: ``{setting,
    exact_match, f1, questions, one_hop: {...}, two_hop: {...}}``), ``table``, ``reader``,
    ``n_facts``, ``n_train``, ``n_test``, ``examples``, ``total_seconds``, plus the common keys.
    """
    _kb_check(k, rounds)
    say = _logger(log)
    t_start = time.perf_counter()
    dev = backend.device(device)
    splits = _kb_splits(fast)
    ret = _kb_retrieval(splits, k, rounds, say)
    settings = {"k": k, "rounds": rounds, "bm25": {"k1": 1.5, "b": 0.75}, "analyzer": "auto",
                "context": "the retrieved facts joined with spaces", "kb_seed": 0,
                "batch_size": batch_size}
    with _run_root(output_dir, "kbqa") as root, backend.default_device_as(dev), \
            backend.default_dtype_as(np.float32):
        model, tok, info, reader_info = _kb_reader(reader, root, ret, settings, dev, fast, seed,
                                                   progress, say)
        reader_preds = _kb_read(model, tok, info, ret["examples"]["test"], dev, batch_size)
    rows, ex = _kb_rows(ret, reader_preds, k, rounds, say)
    result = _header("kb-qa", dev, seed, fast, settings,
                     {"note": "generated data: no published number; the rule baseline is the "
                              "reference"})
    result.update(n_facts=len(ret["facts"]), n_train=len(splits["train"]),
                  n_test=len(splits["test"]), retrieval=ret["retrieval"],
                  test_retrieval_by_rounds=ret["by_rounds"],
                  not_in_context=ret["not_in_context"], rows=rows, table=kb_table(rows),
                  reader=reader_info, examples=ex)
    result["total_seconds"] = time.perf_counter() - t_start
    say(result["table"])
    return _finish(result, output_dir, lambda path: _plot_kb(result, k, path), log)


def format_qa_result(name, result):
    """A short summary of an ``open-domain-qa`` or ``kb-qa`` result."""
    fast = " [fast mode: not comparable]" if result.get("fast") else ""
    head = f"{name} (minillm {result.get('version')}, {result.get('device')}){fast}"
    if result["benchmark"] == "open-domain-qa":
        rec = "; ".join(f"{n}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items())
                        for n, r in result["retrieval"].items())
        return "\n".join([head, f"  {result['dataset']}: {result['n_documents']} paragraphs, "
                          f"{result['n_questions']} questions", f"  {rec}", result["table"]])
    return "\n".join([head, f"  {result['n_facts']} facts, {result['n_test']} test questions",
                      result["table"]])
