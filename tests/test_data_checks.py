"""Issue 23: bad training data is refused with one line naming the file (and the line), or,
where it can be repaired, repaired with a count in the log -- never silently; a UTF-8
byte-order mark is accepted. Also the run files' modes (the umask), the special tokens of a
GPT's character vocabulary, and resume falling back past a checkpoint that does not load.

The data cases run through the real command, ``minillm.apps.cli.main`` (test_cli's ``run``).
"""
import json
import os
import re

import numpy as np
import pytest

import minillm as mm
from minillm import datasets as D
from minillm._fileio import atomic_write_text, current_umask, make_temp_dir, make_temp_file
from minillm.apps import tasks
from minillm.training import CheckpointManager, load_checkpoint
from minillm.training import checkpoint as ckpt_mod

from test_cli import DEVICE, run

BOM = "\ufeff"


def squad(start, context="Paris is the capital of France.", answer="Paris", n=1):
    """A SQuAD file's text: ``n`` questions on ``context`` with ``answer`` at ``start``."""
    qas = [{"id": f"q{i}", "question": "Which city?",
            "answers": [{"text": answer, "answer_start": start}]} for i in range(n)]
    return json.dumps({"data": [{"title": "t", "paragraphs": [{"context": context,
                                                               "qas": qas}]}]}, indent=1)


TSV_TWO = "text\tlabel\ngood film\tpos\nbad film\tneg\n"
CONLL_TWO = "EU B-ORG\nrejects O\n\nPeter B-PER\nBlack I-PER\n"

# (id, task, file name, file text, extra options, what the one error line must say)
REFUSED = [
    ("one-class-tsv", "classification", "a.tsv", "text\tlabel\ngood\tpos\nfine\tpos\n", (),
     r"a\.tsv: the label column holds 1 distinct value\(s\) \['pos'\]"),
    ("one-class-csv", "classification", "a.csv", "text,label\ngood,pos\nfine,pos\n", (),
     r"a\.csv: the label column holds 1"),
    ("empty-label-tsv", "classification", "a.tsv", TSV_TWO + "so-so\t\n", (),
     r"a\.tsv, line 4: the label \(column 'label'\) is empty"),
    ("blank-label-csv", "classification", "a.csv", "text,label\ngood,pos\nbad,neg\nmeh,  \n",
     (), r"a\.csv, line 4: the label \(column 'label'\) is empty"),
    ("empty-label-by-index", "classification", "a.tsv", "good\tpos\nbad\t\n",
     ("--no-header", "--text-column", "0", "--label-column", "1"),
     r"a\.tsv, line 2: the label \(column 1\) is empty"),
    ("conll-three-columns", "ner", "a.conll", "EU B-ORG\nNew York B-LOC\n", (),
     r"a\.conll, line 2: 3 columns where line 1 has 2"),
    ("conll-fewer-columns", "ner", "a.conll", "EU NNP B-ORG\n\nrejects O\n", (),
     r"a\.conll, line 3: 2 columns where line 1 has 3"),
    ("conll-same-column", "ner", "a.conll", CONLL_TWO, ("--token-column", "1"),
     r"a\.conll, line 1: the token column \(1\) and the tag column \(-1\) are the same"),
    ("conll-tag-column-not-tags", "ner", "a.conll", CONLL_TWO, ("--tag-column", "0",
                                                                 "--token-column", "1"),
     r"a\.conll, line 1: tag 'EU' is not O, B-TYPE or I-TYPE"),
    ("conll-column-out-of-range", "ner", "a.conll", CONLL_TWO, ("--tag-column", "5"),
     r"a\.conll, line 1: expected a token and a tag column"),
    ("conll-only-O", "ner", "a.conll", "the O\ncat O\n\nsat O\n", (),
     r"a\.conll: the tag column holds 1 distinct value\(s\) \['O'\]"),
    ("squad-start-past-the-end", "qa", "a.json", squad(9999), (),
     r"a\.json, line 10: question 'q0', answer 0 \('Paris'\): answer_start 9999 is "
     r"outside its context \(31 characters\)"),
    ("squad-start-negative", "qa", "a.json", squad(-2), (),                # -1: not located
     r"a\.json, line 10: question 'q0', answer 0 \('Paris'\): answer_start -2 is outside"),
    ("squad-answer-overruns", "qa", "a.json", squad(28, answer="France."), (),
     r"answer_start 28 is outside its context"),
]


@pytest.mark.parametrize("task, name, text, options, message", [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_bad_training_data_is_one_error_line(tmp_path, task, name, text, options, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    rc, _, err = run("finetune", "--task", task, "--train", path, *options, "--fast",
                     "--device", DEVICE, "--output-dir", out, "--no-progress")
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minillm: error: "), err
    assert "Traceback" not in err
    assert str(path) in lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


def test_bad_validation_file_is_named_too(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text(TSV_TWO * 3, encoding="utf-8")
    dev = tmp_path / "dev.tsv"
    dev.write_text("text\tlabel\nok\t\n", encoding="utf-8")
    rc, _, err = run("finetune", "--task", "classification", "--train", train, "--validation",
                     dev, "--fast", "--device", DEVICE, "--output-dir", tmp_path / "run")
    assert rc == 2 and err.strip() == f"minillm: error: {dev}, line 2: the label (column " \
                                      "'label') is empty"
    assert not (tmp_path / "run").exists()


# -- a byte-order mark (Excel's "CSV UTF-8") is accepted by every reader -------------------------
BOM_FILES = [
    ("csv", "a.csv", "text,label\ngood,pos\nbad,neg\n", D.load_csv,
     [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]),
    ("tsv", "a.tsv", TSV_TWO, D.load_tsv,
     [{"text": "good film", "label": 1}, {"text": "bad film", "label": 0}]),
    ("conll", "a.conll", "EU B-ORG\n", D.load_conll, [{"tokens": ["EU"], "tags": ["B-ORG"]}]),
    ("squad", "a.json", squad(0), D.load_squad, None),
    ("alpaca-json", "a.json", '[{"instruction": "Say hi", "output": "hi"}]', D.load_alpaca,
     None),
    ("alpaca-jsonl", "a.jsonl", '{"instruction": "Say hi", "output": "hi"}\n', D.load_alpaca,
     None),
]


@pytest.mark.parametrize("name, text, load, expected", [r[1:] for r in BOM_FILES],
                         ids=[r[0] for r in BOM_FILES])
def test_a_byte_order_mark_is_accepted(tmp_path, name, text, load, expected):
    plain, marked = tmp_path / name, tmp_path / f"bom-{name}"
    plain.write_text(text, encoding="utf-8")
    marked.write_bytes((BOM + text).encode("utf-8"))
    a, b = load(plain), load(marked)
    assert a.examples == b.examples and a.label_names == b.label_names
    if expected is not None:
        assert b.examples == expected


def test_load_text_drops_the_byte_order_mark(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes((BOM + "一行\r\n").encode("utf-8"))
    assert D.load_text(p) == "一行\n"


def test_a_csv_saved_by_excel_trains(tmp_path):
    path = tmp_path / "excel.csv"
    rows = "".join(f"{w} film,{lab}\n" for w, lab in [("good", "pos"), ("bad", "neg")] * 4)
    path.write_bytes((BOM + "text,label\n" + rows).encode("utf-8"))
    rc, text, err = run("finetune", "--task", "classification", "--train", path, "--fast",
                        "--device", DEVICE, "--output-dir", tmp_path / "run", "--no-progress")
    assert rc == 0, err
    info = json.loads((tmp_path / "run" / "model" / "task.json").read_text(encoding="utf-8"))
    assert info["label_names"] == ["neg", "pos"]


# -- repairable: misplaced answer_start values are moved, and counted in the log -------------------
# (answer_start, answer text, the start after the repair, repaired, not found): the context
# is "It is Paris. Paris is the capital of France."; -1 is CMRC 2018's "not located"
REPAIRS = [
    (2, "Paris", 6, 4, 0),            # 'is' at 2: moved to the nearest Paris
    (15, "Paris", 13, 4, 0),
    (-1, "Paris", 6, 4, 0),
    (-1, "London", -1, 0, 4),         # not in the context: left, counted, skipped for training
    (6, "Paris", 6, 0, 0),            # right: nothing to say
]


@pytest.mark.parametrize("start, answer, fixed, repaired, missing", REPAIRS)
def test_misplaced_answer_starts_are_repaired_and_counted(tmp_path, start, answer, fixed,
                                                         repaired, missing):
    context = "It is Paris. Paris is the capital of France."
    path = tmp_path / "a.json"
    path.write_text(squad(start, context=context, answer=answer, n=4), encoding="utf-8")
    assert D.load_squad(path).meta["answers_not_at_start"] == repaired + missing
    lines = []
    cfg = tasks.FinetuneConfig(task="qa", train=str(path), validation=str(path))
    splits, _ = tasks.load_task_data(cfg, log=lines.append)
    assert [e["answers"]["answer_start"] for e in splits["train"]] == [[fixed]] * 4
    said = [m for m in lines if "answer_start" in m]
    assert said == [f"{path}: {repaired} answer_start values did not point at their answer and "
                    f"were moved to its nearest occurrence; {missing} answers do not occur in "
                    "their context"] * 2 * bool(repaired or missing)


def test_repair_count_is_printed_by_the_command(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(squad(2, context="It is Paris. Paris is the capital of France.", n=8),
                    encoding="utf-8")
    rc, text, err = run("finetune", "--task", "qa", "--train", path, "--validation", path,
                        "--fast", "--device", DEVICE, "--output-dir", tmp_path / "run",
                        "--no-progress")
    assert rc == 0, err
    assert "8 answer_start values did not point at their answer" in text


# -- run files follow the umask ------------------------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask, file_mode, dir_mode", [
    (0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700), (0o027, 0o640, 0o750),
])
def test_run_files_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        written = atomic_write_text(tmp_path / "a.json", "{}")
        fd, temp = make_temp_file(tmp_path, ".x.", ".tmp")
        os.close(fd)
        folder = make_temp_dir(".d.", tmp_path)
        model = mm.models.GPT(mm.models.GPTConfig(vocab_size=5, block_size=4, n_layer=1,
                                                  n_head=1, n_embd=4))
        model.save_pretrained(tmp_path / "model")
        saved = CheckpointManager(tmp_path / "ckpt").save(model, trainer_state={"global_step": 1})
        mm.data.CharTokenizer.train(["ab"]).save(tmp_path / "tokenizer.json")
    finally:
        os.umask(old)
    for path in (written, temp, tmp_path / "model" / "config.json", saved / "model.npz",
                 tmp_path / "tokenizer.json"):
        assert os.stat(path).st_mode & 0o777 == file_mode, path
    for path in (folder, tmp_path / "model", saved):
        assert os.stat(path).st_mode & 0o777 == dir_mode, path


# -- a GPT's character vocabulary holds only the special tokens a GPT uses -----------------------
@pytest.mark.parametrize("model_type, specials, absent", [
    ("gpt", ["[PAD]", "[UNK]", "<bos>", "<eos>"], ["[CLS]", "[SEP]", "[MASK]"]),
    ("bert", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<bos>", "<eos>"], []),
])
def test_character_vocabulary_specials(tmp_path, model_type, specials, absent):
    text = tmp_path / "a.txt"
    text.write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    out = tmp_path / "run"
    rc, _, err = run("pretrain", "--train", text, "--model-type", model_type, "--tokenizer",
                     "char", "--block-size", "16", "--fast", "--device", DEVICE,
                     "--output-dir", out, "--no-progress")
    assert rc == 0, err
    tok = tasks.load_tokenizer(out / "model")
    assert sorted(tok.special_tokens.values()) == sorted(specials)
    assert tok.vocab_size == len(specials) + len(set("the cat sat on the mat. "))
    sample = (out / "sample.txt").read_text(encoding="utf-8")
    assert not any(s in sample for s in absent), sample


def test_a_gpt_character_body_fine_tunes_qa_with_bos_and_eos(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("Paris is the capital of France. Which city? " * 30, encoding="utf-8")
    rc, _, err = run("pretrain", "--train", text, "--tokenizer", "char", "--block-size", "16",
                     "--fast", "--device", DEVICE, "--output-dir", tmp_path / "body",
                     "--no-progress")
    assert rc == 0, err
    qa = tmp_path / "qa.json"
    qa.write_text(squad(0, n=8), encoding="utf-8")
    rc, _, err = run("finetune", "--task", "qa", "--train", qa, "--validation", qa, "--model",
                     tmp_path / "body" / "model", "--fast", "--device", DEVICE,
                     "--output-dir", tmp_path / "ft", "--no-progress")
    assert rc == 0, err
    tok = tasks.load_tokenizer(tmp_path / "body" / "model")
    feats = mm.data.prepare_qa_features(D.load_squad(qa).examples[:1], tok, max_length=64,
                                        stride=16)
    ids = feats[0]["input_ids"]
    assert ids[0] == tok.bos_id and list(ids).count(tok.eos_id) == 2


# -- resume falls back past a checkpoint that passes its manifest but does not load ----------------
def _rewrite_weights(path, change):
    """Rewrite ``path/model.npz`` with ``change(arrays)`` applied and update the manifest to
    match, so the checkpoint still passes verification."""
    weights = path / "model.npz"
    with np.load(weights) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    with open(weights, "wb") as f:
        np.savez(f, **arrays)
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["model.npz"] = {"size": weights.stat().st_size,
                                      "sha256": ckpt_mod.sha256_file(weights)}
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _object_array_checkpoint(path):
    """One weight becomes an object array (the file no longer loads with allow_pickle=False)."""
    def change(arrays):
        arrays[next(iter(arrays))] = np.array([{"a": 1}], dtype=object)
    _rewrite_weights(path, change)


UNLOADABLE = [
    ("object-array", _object_array_checkpoint, "Object arrays cannot be loaded"),
    ("manifest-files-not-dicts",
     lambda p: (p / "manifest.json").write_text(json.dumps(
         {**json.loads((p / "manifest.json").read_text(encoding="utf-8")),
          "files": {"model.npz": 1}}), encoding="utf-8"),
     "AttributeError"),
]


@pytest.mark.parametrize("damage, reason", [r[1:] for r in UNLOADABLE],
                         ids=[r[0] for r in UNLOADABLE])
def test_resume_falls_back_past_an_unloadable_checkpoint(tmp_path, damage, reason):
    mm.manual_seed(0)
    model = mm.models.GPT(mm.models.GPTConfig(vocab_size=7, block_size=4, n_layer=1,
                                              n_head=1, n_embd=4))
    mgr = CheckpointManager(tmp_path)
    for step in (1, 2):
        mgr.save(model, trainer_state={"global_step": step})
    ckpt_mod.verify_checkpoint(tmp_path / "checkpoint-2")
    damage(tmp_path / "checkpoint-2")
    with pytest.warns(UserWarning, match=reason):
        latest = mgr.latest()
    assert latest == tmp_path / "checkpoint-1"
    assert mgr.corrupt[0][0] == tmp_path / "checkpoint-2" and reason in mgr.corrupt[0][1]
    assert load_checkpoint(latest, model) == {"global_step": 1}


def test_pretrain_resume_falls_back_past_an_object_array(tmp_path):
    out, argv = _pretrained_run(tmp_path)
    assert (out / "checkpoint-6").is_dir() and (out / "checkpoint-12").is_dir()
    _object_array_checkpoint(out / "checkpoint-12")
    with pytest.warns(UserWarning, match="checkpoint-12/model.npz .*Object arrays"):
        rc, _, err = run(*argv, "--resume")
    assert rc == 0, err
    assert _resumed_steps(out) == list(range(1, 13))                # 7..12 again
    ckpt_mod.check_readable(out / "checkpoint-12")                  # saved anew at step 12


def _wrong_shape_checkpoint(path):
    """One weight gets another shape: the file parses and matches its manifest, but does not
    fit the model."""
    def change(arrays):
        name = next(k for k, v in arrays.items() if v.ndim == 2)
        arrays[name] = np.zeros((arrays[name].shape[0] + 1, arrays[name].shape[1]), np.float32)
    _rewrite_weights(path, change)


def _pretrained_run(tmp_path):
    """A finished fast pretrain run (checkpoints 6 and 12) and the argv that made it."""
    text = tmp_path / "a.txt"
    text.write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    out = tmp_path / "run"
    argv = ("pretrain", "--train", text, "--block-size", "16", "--fast", "--device", DEVICE,
            "--output-dir", out, "--no-progress")
    rc, _, err = run(*argv)
    assert rc == 0, err
    return out, argv


def _resumed_steps(out):
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    return [h["step"] for h in history if "loss" in h]


def test_pretrain_resume_falls_back_past_a_checkpoint_that_does_not_fit(tmp_path):
    out, argv = _pretrained_run(tmp_path)
    _wrong_shape_checkpoint(out / "checkpoint-12")
    ckpt_mod.check_readable(out / "checkpoint-12")            # it parses: only loading fails
    with pytest.warns(UserWarning, match=r"(?s)checkpoint-12 does not fit .*shape mismatch"):
        rc, _, err = run(*argv, "--resume")
    assert rc == 0, err
    assert _resumed_steps(out) == list(range(1, 13))                # 7..12 again
