"""`minillm finetune --task instruct`: supervised instruction tuning of a GPT, and its evaluation.

The data is the built-in ``instructions`` set, or the user's files: Alpaca records
(``instruction``, ``input``, ``output``) or chat transcripts (``messages``), JSON or JSONL. The
model starts from a minillm GPT directory, a Hugging Face GPT-2 directory, or from scratch (a
small GPT with a character tokenizer built from the training texts). Training is next-token
cross-entropy on the response tokens only (:mod:`minillm.finetune.instruct`); after training
the model answers the validation and test instructions greedily and is scored by exact match,
overall and per task. The run directory's ``model/`` holds the GPT, ``tokenizer.json``,
``chat_template.json`` and ``task.json``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from .. import backend
from .. import datasets as D
from .._fileio import atomic_write_json
from ..data.tokenizers import CharTokenizer
from ..finetune import instruct as I
from ..models import GPT, GPTConfig
from ..models import hf
from ..training import Trainer, TrainingArguments, plot_history
from . import tasks

SPLITS = ("train", "validation", "test")
MAX_NEW_TOKENS = 64


def read_instruction_file(path):
    """Alpaca records or chat transcripts from ``path``, JSON or JSONL, as a Dataset (the
    first record decides which: a list of messages, or a ``messages`` field, is a chat)."""
    from ..datasets.instruct_files import read_records
    _, records = read_records(path)
    first = records[0][1]
    is_chat = isinstance(first, list) or (isinstance(first, dict) and "messages" in first)
    return D.load_chat(path) if is_chat else D.load_alpaca(path)


def load_splits(cfg, log=print) -> dict[str, list[dict]]:
    """``{split: [record]}`` from the built-in dataset or the files of ``cfg``; held-out
    validation and the ``max_*_examples`` samples as every other task makes them
    (:func:`tasks._carve`, :func:`tasks.sample_examples`)."""
    if cfg.dataset is not None:
        opts = tasks.dataset_kwargs(cfg)
        splits = {s: D.load(cfg.dataset, s, **opts) for s in SPLITS}
    else:
        splits = {"train": read_instruction_file(cfg.train)}
        if cfg.validation:
            splits["validation"] = read_instruction_file(cfg.validation)
        else:
            splits["train"], splits["validation"] = tasks._carve(
                splits["train"], cfg.validation_fraction, cfg.seed)
            tasks._log(log, f"validation: {len(splits['validation'])} records held out of "
                            f"--train (--validation-fraction {cfg.validation_fraction})")
        if cfg.test:
            splits["test"] = read_instruction_file(cfg.test)
    splits["train"] = tasks.sample_examples(splits["train"], cfg.max_train_examples, cfg.seed)
    for s in ("validation", "test"):                 # fixed samples, as evaluate() draws them
        if s in splits:
            splits[s] = tasks.sample_examples(splits[s], cfg.max_eval_examples)
    return {s: list(ds) for s, ds in splits.items()}


def record_texts(template, records):
    """Every text the model reads or writes for ``records`` (to build a tokenizer)."""
    out = [template.system + template.user + template.input + template.assistant +
           template.separator]
    for r in records:
        messages = r["messages"] if "messages" in r else I.record_messages(template, r)
        out += [m["content"] for m in messages]
    return out


def _pretrained(cfg, texts, log):
    """``(model, tokenizer)`` from ``cfg.model``: a minillm GPT or a Hugging Face GPT-2
    directory. A character tokenizer gains the training texts' new characters (appended, the
    embeddings grown to match); other tokenizers are byte-level and need none."""
    if hf.is_hf_checkpoint(cfg.model):
        model, tok = hf.load_hf(cfg.model), hf.load_hf_tokenizer(cfg.model)
    else:
        model, tok = tasks._load_body(cfg.model, log), tasks.load_tokenizer(cfg.model)
    if not isinstance(model, GPT):
        raise tasks.TaskError(f"{cfg.model} holds a {type(model).__name__}; instruction tuning "
                              "starts from a GPT (causal language model) directory")
    if isinstance(tok, CharTokenizer):
        tok, added = tok.extended(texts)
        if added:
            model.resize_token_embeddings(tok.vocab_size)
            tasks._log(log, f"tokenizer: {len(added)} new characters from the instructions "
                            f"appended ({''.join(added[:20])}...), embeddings grown to "
                            f"{tok.vocab_size}")
    return model, tok


def _from_scratch(cfg, texts, lengths, log):
    """A small GPT and a character tokenizer built from the training texts; the window is
    ``cfg.max_length`` or the longest training record rounded up to a multiple of 8."""
    tok = CharTokenizer.train(texts, min_freq=cfg.min_freq)
    block = cfg.max_length or int(8 * math.ceil(max(lengths) / 8))
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout))
    tasks._log(log, f"from scratch: GPT {cfg.n_layer} x {cfg.n_head} x {cfg.n_embd}, "
                    f"block_size {block}; character tokenizer ({tok.vocab_size} tokens)")
    return model, tok


def build(cfg, template, splits, log=print):
    """``(model on cfg.device, tokenizer, {split: encoded rows})``."""
    texts = record_texts(template, splits["train"])
    if cfg.model is not None:
        model, tok = _pretrained(cfg, texts, log)
    else:
        every = [r for records in splits.values() for r in records]
        probe = CharTokenizer.train(record_texts(template, every))
        lengths = [len(I.encode_conversation(probe, template, _messages(template, r))[0]) - 1
                   for r in every]                  # the window fits every split's records
        model, tok = _from_scratch(cfg, texts, lengths, log)
    block = model.config.block_size
    rows = {s: I.encode_records(tok, template, r, block, where=f"{s} records")
            for s, r in splits.items()}
    return model.to(cfg.device), tok, rows


def _messages(template, record):
    return record["messages"] if "messages" in record else I.record_messages(template, record)


def _arguments(cfg, out, n_rows, target_steps=None):
    """``(TrainingArguments, epochs)`` of the GPT recipes: the fine-tuning schedule of every
    task, with the best validation *loss* kept."""
    return tasks.training_arguments(cfg, out, n_rows,
                                    target_steps or tasks.TARGET_STEPS["instruct"],
                                    metric="eval_loss", greater_is_better=False)


def save_model(model, tok, template, info, directory) -> Path:
    """``model/``: the GPT, ``tokenizer.json``, ``chat_template.json``, ``task.json``."""
    directory = Path(directory)
    model.save_pretrained(directory)
    tok.save(directory / tasks.TOKENIZER_FILE)
    template.save(directory)
    atomic_write_json(directory / tasks.TASK_FILE, info)
    return directory


def _scored(splits) -> dict:
    """``{split: Alpaca records}`` of the evaluation splits that have any."""
    out = {s: [r for r in splits.get(s, []) if "instruction" in r] for s in ("validation",
                                                                             "test")}
    return {s: r for s, r in out.items() if r}


def score(model, tok, template, splits, cfg, out=None) -> dict:
    """Exact match of greedy answers on the evaluation splits holding Alpaca records."""
    results = {}
    for s, records in _scored(splits).items():
        r = I.evaluate_records(model, tok, template, records, MAX_NEW_TOKENS,
                               progress=cfg.progress)
        predictions = r.pop("predictions")
        r.update(entity_f1(predictions))
        if out is not None:
            atomic_write_json(Path(out) / f"predictions_{s}.json", predictions)
        results[s] = r
    return results


def entity_f1(predictions) -> dict:
    """``{"entities": precision, recall, F1}`` of the typed entities listed by the answers of
    the entities task (:func:`minillm.datasets.instructions.entity_scores`); ``{}`` when
    ``predictions`` hold none. Exact match asks for a sentence's whole list; this scores
    each entity."""
    pairs = [(p["prediction"], p["reference"]) for p in predictions
             if p.get("task") == "entities"]
    return {"entities": D.instructions.entity_scores(pairs)} if pairs else {}


def finetune_instruct(cfg, command=None, log=print, resume_from_checkpoint=None) -> dict:
    """Instruction-tune a GPT (``cfg.task == "instruct"``); returns the results dict (also
    ``metrics.json``): the best validation loss, exact match on validation/test per task."""
    from .. import __version__
    t_start = time.perf_counter()
    cfg, dev, out = tasks._start_run(cfg, command, "finetune")
    template = I.ChatTemplate()
    splits = load_splits(cfg, log)
    tasks._log(log, "data: " + ", ".join(f"{s} {len(r)}" for s, r in splits.items()))
    with backend.default_device_as(dev):
        backend.manual_seed(cfg.seed)
        model, tok, rows = build(cfg, template, splits, log)
        tok.save(out / tasks.TOKENIZER_FILE)
        pad = tok.pad_id if tok.pad_id is not None else tok.eos_id
        args, epochs = _arguments(cfg, out, len(rows["train"]))
        trainer = Trainer(model, args, train_dataset=rows["train"],
                          eval_dataset=rows["validation"], data_collator=I.SFTCollator(pad, dev))
        tasks._log(log, f"model: GPT{' from ' + cfg.model if cfg.model else ' from scratch'}, "
                        f"{model.num_parameters():,} parameters; {len(rows['train'])} training "
                        "records; loss on the response tokens only")
        tasks._log_schedule(cfg, epochs, args.eval_steps, log)
        t0 = time.perf_counter()
        state = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        train_seconds = time.perf_counter() - t0
        info = {"task": "instruct", "block_size": model.config.block_size,
                "base_model": cfg.model, "dataset": cfg.dataset or cfg.train,
                "template": template.name}
        save_model(model, tok, template, info, out / "model")
        results = {"task": "instruct", "command": command, "minillm": __version__,
                   "device": str(dev), "train_seconds": train_seconds,
                   "steps": trainer.state.global_step, "parameters": model.num_parameters(),
                   "train_examples": len(splits["train"]), "epochs": epochs,
                   "best_step": state.loaded_best_step, "base_model": cfg.model,
                   "vocab_size": tok.vocab_size, "block_size": model.config.block_size}
        results.update(score(model, tok, template, splits, cfg, out))
        if cfg.baseline:
            results["baselines"] = {s: nearest_neighbour_baseline(splits["train"], r)
                                    for s, r in _scored(splits).items()}
    plot_history(trainer.state.history, out / "loss.png",
                 title=f"minillm finetune --task instruct ({cfg.dataset or cfg.train})")
    results["total_seconds"] = time.perf_counter() - t_start
    atomic_write_json(out / "metrics.json", results)
    tasks._log(log, summary(results))
    return results


def summary(results) -> str:
    """One line per evaluated split: exact match overall and per task, and the
    nearest-neighbour baseline's beside it when it was measured."""
    lines = []
    for s in ("validation", "test"):
        if s in results:
            lines.append(f"{s}: exact match " + _scores(results[s]))
            base = results.get("baselines", {}).get(s)
            if base:
                lines.append(f"  nearest-neighbour baseline: {_scores(base)}")
    return "\n".join(lines) or "no Alpaca-style evaluation records: exact match not measured"


def _scores(r) -> str:
    per = ", ".join(f"{t} {m['exact_match']:.3f}" for t, m in r["per_task"].items())
    ents = r.get("entities")
    return f"{r['exact_match']:.4f} on {r['n']}" + (f" ({per})" if per else "") + \
        (f"; entity F1 {ents['f1']:.3f}" if ents else "")


def load_instruct_model(directory, device=None):
    """``(model, tokenizer, template, task info)`` of an instruction-tuned model directory
    (a run directory's ``model/`` or the run directory itself)."""
    from ..models import auto
    directory = Path(directory)
    if not (directory / I.TEMPLATE_FILE).is_file() and (directory / "model").is_dir():
        directory = directory / "model"
    template = I.ChatTemplate.load(directory)
    model = auto.load_model(directory, device=device)
    info = json.loads((directory / tasks.TASK_FILE).read_text(encoding="utf-8")) \
        if (directory / tasks.TASK_FILE).is_file() else {"task": "instruct"}
    return model, tasks.load_tokenizer(directory), template, info


def evaluate_instruct(model_path, dataset=None, split="test", file=None, device=None,
                      max_examples=None, log=print, progress=True) -> dict:
    """Exact match (overall and per task) of an instruction model's greedy answers."""
    if (dataset is None) == (file is None):
        raise tasks.TaskError("give --dataset NAME (with --split) or --file FILE, not both")
    records = D.load(dataset, split) if dataset else read_instruction_file(file)
    records = [r for r in tasks.sample_examples(records, max_examples) if "instruction" in r]
    if not records:
        raise tasks.TaskError("no Alpaca-style records (instruction, input, output) to score")
    dev = backend.device(device)
    with backend.default_device_as(dev):
        model, tok, template, _ = load_instruct_model(model_path, dev)
        r = I.evaluate_records(model, tok, template, records, MAX_NEW_TOKENS, progress)
    r.update(entity_f1(r.pop("predictions")))
    result = {"task": "instruct", "data": dataset or file, "split": split if dataset else None,
              **r}
    tasks._log(log, summary({"test": r}))
    return result


def nearest_neighbour_baseline(train, records) -> dict:
    """The baseline every instruction model is shown beside: answer each record with the
    output of the most similar training record (BM25 over instruction + input, characters
    and bigrams). It solves what memorising the training answers solves, and nothing more."""
    from ..retrieval import BM25
    pool = [r for r in train if "instruction" in r]
    if not pool:
        raise tasks.TaskError("the baseline needs Alpaca-style training records")
    bm25 = BM25().fit([r["instruction"] + "\n" + r.get("input", "") for r in pool])
    outcomes = []
    for r in records:
        hits = bm25.search(r["instruction"] + "\n" + r.get("input", ""), k=1)
        pred = pool[hits[0][0]]["output"] if hits else ""
        outcomes.append((r.get("task"), I.exact_match(pred, r["output"])))
    return I.exact_match_scores(outcomes)


def prefix_probe(model, tok, template, records, prefix="请") -> dict:
    """Exact match when ``prefix`` is put in front of every instruction: a model that
    follows the instruction barely notices; one that learned to copy from fixed positions
    (a GPT with absolute position embeddings trained on a few fixed wordings) collapses,
    because every input character moves by ``len(prefix)`` positions."""
    moved = [{**r, "instruction": prefix + r["instruction"]} for r in records]
    r = I.evaluate_records(model, tok, template, moved, MAX_NEW_TOKENS)
    r.pop("predictions")
    return {**r, "prefix": prefix}
