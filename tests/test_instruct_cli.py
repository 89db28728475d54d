"""`minillm finetune --task instruct`, `minillm evaluate` on an instruction model, and
`minillm chat --prompt`, end to end on tiny files (a few steps: the plumbing, not the quality)."""
from __future__ import annotations

import json

import pytest

from minillm.apps import cli

RECORDS = [{"instruction": f"{city}{day}天气怎么样？", "input": "", "output": f"{city}{day}晴。",
            "task": "weather"} for city in ("北京", "上海", "广州") for day in ("今天", "明天")]
RECORDS += [{"instruction": "计算。", "input": f"{a}+{b}", "output": str(a + b),
             "task": "arithmetic"} for a in range(3) for b in range(3)]
CHATS = [{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},
                       {"role": "user", "content": "北京今天天气怎么样？"},
                       {"role": "assistant", "content": "北京今天晴。"}]}] * 6
TINY = ["--max-steps", "3", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
        "--batch-size", "4", "--no-progress"]


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("instruct")
    train = _jsonl(d / "train.jsonl", RECORDS)
    out = d / "run"
    assert cli.main(["finetune", "--task", "instruct", "--train", str(train),
                     "--output-dir", str(out), *TINY]) == 0
    return d, out


def test_a_run_writes_the_model_with_its_template_and_scores_exact_match(run):
    _, out = run
    for name in ("config.json", "tokenizer.json", "chat_template.json", "task.json",
                 "model.npz"):
        assert (out / "model" / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["task"] == "instruct" and metrics["steps"] == 3
    val = metrics["validation"]
    assert val["n"] == 2 and 0 <= val["exact_match"] <= 1 and set(val["per_task"]) <= \
        {"weather", "arithmetic"}
    preds = json.loads((out / "predictions_validation.json").read_text(encoding="utf-8"))
    assert len(preds) == 2 and {"prediction", "reference", "correct"} <= set(preds[0])


def test_evaluate_reports_exact_match_per_task(run, capsys):
    d, out = run
    test = _jsonl(d / "test.jsonl", RECORDS[:4] + RECORDS[-2:])
    assert cli.main(["evaluate", "--model", str(out), "--file", str(test), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["task"] == "instruct" and got["n"] == 6
    assert got["per_task"]["weather"]["n"] == 4 and got["per_task"]["arithmetic"]["n"] == 2


def test_chat_prompt_prints_the_answer_alone(run, capsys):
    _, out = run
    assert cli.main(["chat", "--model", str(out), "--prompt", "北京今天天气怎么样？",
                     "--max-new-tokens", "5"]) == 0
    printed = capsys.readouterr().out
    from minillm.apps.instruct import load_instruct_model
    from minillm.finetune.instruct import answer
    model, tok, template, _ = load_instruct_model(out)
    expected = answer(model, tok, template, [{"role": "user", "content": "北京今天天气怎么样？"}],
                      5)
    assert printed == expected + "\n"          # the greedy answer alone: no banner, no prompt


def test_chat_transcripts_train_too(tmp_path):
    train = _jsonl(tmp_path / "chats.jsonl", CHATS)
    assert cli.main(["finetune", "--task", "instruct", "--train", str(train),
                     "--output-dir", str(tmp_path / "run"), *TINY]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["steps"] == 3 and "validation" not in metrics   # no Alpaca records to score


BAD = {
    "bert": (["--model-type", "bert"], "drop --model-type bert"),
    "lora": (["--method", "lora"], "--method does not apply to --task instruct"),
    "window": (["--max-length", "8"], "longer than the model's block_size=8"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_what_instruction_tuning_cannot_use_is_a_one_line_error(case, tmp_path, capsys):
    flags, words = BAD[case]
    train = _jsonl(tmp_path / "train.jsonl", RECORDS)
    code = cli.main(["finetune", "--task", "instruct", "--train", str(train), "--output-dir",
                     str(tmp_path / "run"), *TINY, *flags])
    err = capsys.readouterr().err.strip()
    assert code != 0 and words in err and "\n" not in err, err
    assert not (tmp_path / "run" / "model").exists()


def test_a_bad_record_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0], ensure_ascii=False) + "\n"
                   + json.dumps({"instruction": "x"}) + "\n", encoding="utf-8")
    assert cli.main(["finetune", "--task", "instruct", "--train", str(bad), "--output-dir",
                     str(tmp_path / "run"), *TINY]) != 0
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "record 2" in err and "output" in err, err


def test_instruction_tuning_starts_from_a_hugging_face_gpt2(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tk = pytest.importorskip("tokenizers")
    bpe = tk.ByteLevelBPETokenizer()
    texts = [r["instruction"] + r["input"] + r["output"] for r in RECORDS] + ["用户：助手：输入："]
    bpe.train_from_iterator(texts, vocab_size=300, min_frequency=1,
                            special_tokens=["<|endoftext|>"])
    hf_dir = tmp_path / "gpt2"
    hf_dir.mkdir()
    bpe.save_model(str(hf_dir))
    config = transformers.GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=64, n_embd=16,
                                     n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(hf_dir, safe_serialization=True)
    train = _jsonl(tmp_path / "train.jsonl", RECORDS)
    assert cli.main(["finetune", "--task", "instruct", "--train", str(train), "--model",
                     str(hf_dir), "--output-dir", str(tmp_path / "run"), *TINY]) == 0
    info = json.loads((tmp_path / "run" / "model" / "task.json").read_text(encoding="utf-8"))
    assert info["base_model"] == str(hf_dir) and info["block_size"] == 64


PAIRS = [{"prompt": f"{city}今天天气怎么样？", "chosen": f"{city}今天晴。", "rejected": f"{city}今天阴。"}
         for city in ("北京", "上海", "广州")] * 3


def test_dpo_from_an_instruction_model_reports_preference_metrics(run, tmp_path):
    _, sft = run
    prefs = _jsonl(tmp_path / "prefs.jsonl", PAIRS)
    out = tmp_path / "dpo"
    assert cli.main(["finetune", "--task", "dpo", "--train", str(prefs), "--model", str(sft),
                     "--output-dir", str(out), "--max-steps", "3", "--batch-size", "4",
                     "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    p = metrics["preferences"]
    assert metrics["steps"] == 3 and p["n"] == 1 and 0 <= p["reward_accuracy"] <= 1
    assert (out / "model" / "chat_template.json").is_file()
    info = json.loads((out / "model" / "task.json").read_text(encoding="utf-8"))
    assert info["stage"] == "dpo" and info["task"] == "instruct"
    saved = json.loads((out / "model" / "config.json").read_text(encoding="utf-8"))
    assert saved["dropout"] == 0.0      # DPO trains with dropout off (the SFT model had 0.1)


def test_dpo_needs_an_instruction_model(tmp_path, capsys):
    prefs = _jsonl(tmp_path / "prefs.jsonl", PAIRS)
    assert cli.main(["finetune", "--task", "dpo", "--train", str(prefs), "--output-dir",
                     str(tmp_path / "dpo")]) != 0
    assert "--task dpo starts from an instruction model" in capsys.readouterr().err


def test_near_misses_are_wrong_and_close():
    import random
    from minillm.apps.preference import near_miss
    rng = random.Random(0)
    for answer in ("正面", "负面", "42", "北京今天晴，气温 3 到 12 摄氏度。", "March 5, 2024", "晴"):
        wrong = near_miss(answer, rng)
        assert wrong != answer and abs(len(wrong) - len(answer)) <= 1, (answer, wrong)


def test_built_pairs_reject_the_models_own_mistakes_else_a_near_miss(monkeypatch):
    from minillm.apps import preference
    from minillm.finetune import instruct as I
    said = {"北京今天天气怎么样？": "北京今天阴。", "上海今天天气怎么样？": "上海今天晴。"}
    monkeypatch.setattr(I, "answer", lambda m, t, tpl, msgs, n: said[msgs[0]["content"]])
    records = [{"instruction": q, "input": "", "output": q[:2] + "今天晴。", "task": "weather"}
               for q in said]
    pairs = preference.build_pairs(None, None, I.ChatTemplate(), records)
    assert [p["source"] for p in pairs] == ["model", "near miss"]
    assert pairs[0]["rejected"] == "北京今天阴。" and pairs[0]["chosen"] == "北京今天晴。"
    assert pairs[1]["rejected"] != pairs[1]["chosen"]


@pytest.fixture(scope="module")
def generated_run(tmp_path_factory):
    """A tiny instruction model on the built-in set (its window fits every record)."""
    out = tmp_path_factory.mktemp("generated") / "run"
    assert cli.main(["finetune", "--task", "instruct", "--dataset", "instructions",
                     "--max-train-examples", "40", "--max-eval-examples", "6",
                     "--output-dir", str(out), *TINY]) == 0
    return out


def test_grpo_runs_and_reports_held_out_accuracy_before_and_after(generated_run, tmp_path):
    out = tmp_path / "grpo"
    assert cli.main(["finetune", "--task", "grpo", "--dataset", "instructions", "--model",
                     str(generated_run), "--output-dir", str(out), "--max-steps", "2",
                     "--batch-size", "2", "--grpo-group", "3", "--max-eval-examples", "3",
                     "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["steps"] == 2 and m["before"]["test"]["n"] == 3 == m["after"]["test"]["n"]
    assert m["practice_prompts"] == 4000             # fresh problems, none from the splits
    assert set(m["before"]) == {"validation", "test"}
    for r in (m[when][split] for when in ("before", "after") for split in ("validation", "test")):
        assert r["value"] >= r["exact_match"]   # a right value with wrong working still counts
    assert all(0 <= h["reward"] <= 1 and h["kl"] >= 0 for h in m["history"])
    # the SFT model has dropout 0.1; GRPO turns it off, so before the first update the
    # policy is the reference and their KL is 0 (with dropout it was ~0.3: noise)
    assert json.loads((generated_run / "model" / "config.json").read_text(encoding="utf-8"))["dropout"] == 0.1
    assert m["history"][0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert json.loads((out / "model" / "task.json").read_text(encoding="utf-8"))["stage"] == \
        "grpo"


def test_grpo_rows_mask_the_prompt_and_keep_the_answers_eos():
    from minillm.apps.reinforce import batch_arrays
    xs, ys, mask = batch_arrays([([5, 6, 7], [8, 2]), ([5, 6], [9])], pad_id=0)
    assert xs.tolist() == [[5, 6, 7, 8], [5, 6, 0, 0]]
    assert ys.tolist() == [[-100, -100, 8, 2], [-100, 9, -100, -100]]
    assert mask.tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]


DATASET_OPTIONS = {
    "n_per_task=12": {"n_per_task": 12},
    "n_per_task=12, tasks=weather": {"n_per_task": 12, "tasks": "weather"},
    "seed=1,tasks=date_en": {"seed": 1, "tasks": "date_en"},
}


@pytest.mark.parametrize("text", list(DATASET_OPTIONS))
def test_dataset_options_become_the_loaders_arguments(text):
    from minillm.apps import tasks
    cfg = tasks.FinetuneConfig(task="instruct", dataset="instructions", dataset_options=text)
    assert tasks.dataset_kwargs(cfg) == DATASET_OPTIONS[text]


@pytest.mark.parametrize("flags,words", [
    (["--dataset", "instructions", "--dataset-options", "size=3"], "size=3' is not KEY=VALUE"),
    (["--train", "x.jsonl", "--dataset-options", "n_per_task=3"], "go with a built-in"),
])
def test_bad_dataset_options_are_refused_before_anything_is_written(flags, words, tmp_path,
                                                                      capsys):
    assert cli.main(["finetune", "--task", "instruct", *flags, "--output-dir",
                     str(tmp_path / "run")]) != 0
    assert words in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_bench_instruct_runs_every_arm_in_fast_mode(tmp_path):
    from minillm.apps.bench.instruct import ARMS, instruct_pipeline
    result = instruct_pipeline(fast=True, progress=False, output_dir=tmp_path / "instruct",
                               log=lambda *a: None)
    assert [r["arm"] for r in result["rows"]] == list(ARMS)
    for r in result["rows"]:
        assert 0 <= r["test"]["exact_match"] <= 1 and r["test"]["n"] > 0
    for name in ("results.json", "report.md", "instruct.png"):
        assert (tmp_path / "instruct" / name).is_file(), name
    report = (tmp_path / "instruct" / "report.md").read_text(encoding="utf-8")
    assert "fast mode" in report and "nearest-neighbour baseline" in report
    assert set(result["prefix_probe"]) == {"as written", "with 请 in front"}
    assert "| entity F1 |" in report
    probe = ", ".join(f"{k} {v:.3f}" for k, v in result["prefix_probe"].items())
    assert f"Position probe (SFT from pretrained, test): exact match {probe}." in report
    for r in result["rows"][2:5]:               # the tuned arms: entities scored per entity
        assert 0 <= r["test"]["entities"]["f1"] <= 1, r["arm"]
    check = result["sentiment_check"]            # sentiment again, beside the bag of n-grams
    assert check["n"] == 16 and set(check["accuracy"]) == {
        "SFT from scratch", "SFT from pretrained", "SFT + DPO",
        "naive Bayes (character 1+2-grams)", "logistic regression (character 1+2-grams)"}
    assert set(check["table_test"]) == {"naive Bayes (character 1+2-grams)",
                                        "logistic regression (character 1+2-grams)"}
    assert check["only_pretrained_right"] + check["only_scratch_right"] <= 16
    assert "| sentiment, held-out wordings | the table's test | all 16 balanced" in report
    assert f"right where SFT from scratch is wrong {check['only_pretrained_right']} times" \
        in report
    lines = []                     # a second run reads every finished arm back
    again = instruct_pipeline(fast=True, progress=False, output_dir=tmp_path / "instruct",
                              log=lines.append)
    reused = sorted(ln.split("/")[-1] for ln in lines if ln.startswith("reusing"))
    assert reused == ["dpo", "general-peoples_daily_text", "grpo", "sft-pretrained",
                      "sft-scratch"]       # the body and the four tuned arms
    assert again["rows"] == result["rows"]


def test_bench_instruct_arms_are_their_logged_commands(tmp_path):
    """Each arm logs the `minillm finetune` command that makes it; that command, as the
    CLI reads it, has the arm's settings, so the arms can be run side by side by hand and
    the benchmark then reads them back."""
    import shlex
    from minillm.apps import tasks
    from minillm.apps.bench.instruct import instruct_pipeline
    from minillm.apps.bench.quality import differing_settings
    lines = []
    instruct_pipeline(fast=True, progress=False, output_dir=tmp_path / "instruct",
                      log=lines.append)
    commands = {ln.split(":")[0]: ln.split(": ", 1)[1] for ln in lines
                if ": minillm finetune " in ln}
    assert sorted(commands) == ["dpo", "grpo", "sft-pretrained", "sft-scratch"]
    for name, command in commands.items():
        args = cli.build_parser().parse_args(shlex.split(command)[1:])
        kw = cli._dataclass_kwargs(args, tasks.FinetuneConfig)
        if kw.get("model"):
            kw["model"] = cli.resolve_model_dir(kw["model"])
        saved = json.loads((tmp_path / "instruct" / name / "config.json").read_text(
            encoding="utf-8"))["finetune"]
        assert differing_settings(saved, tasks.FinetuneConfig(**kw)) == [], name


def test_the_prefix_probe_moves_every_instruction_and_only_that(monkeypatch):
    from minillm.apps import instruct as app
    seen = []

    def fake(model, tok, template, records, max_new_tokens):
        seen.extend(records)
        return {"exact_match": 0.5, "n": len(records), "per_task": {}, "predictions": []}
    monkeypatch.setattr(app.I, "evaluate_records", fake)
    records = [{"instruction": "把这个数字写成中文。", "input": "12", "output": "十二", "task": "t"}]
    r = app.prefix_probe(None, None, None, records, "请")
    assert seen == [{**records[0], "instruction": "请把这个数字写成中文。"}]
    assert records[0]["instruction"] == "把这个数字写成中文。"          # the caller's are untouched
    assert r == {"exact_match": 0.5, "n": 1, "per_task": {}, "prefix": "请"}


def test_the_sentiment_table_shows_both_test_sets_and_the_standard_error():
    from minillm.apps.bench.instruct import sentiment_table
    rows = [{"arm": "SFT from scratch", "test": {"n": 9, "per_task": {"sentiment": 0.75}}}]
    check = {"n": 100, "accuracy": {"SFT from scratch": 0.8, "bag": 0.5},
             "table_test": {"bag": 0.625}}
    lines = sentiment_table(check, rows).splitlines()
    assert lines[2:] == ["| SFT from scratch | 0.750 | 0.800 ± 0.040 |",
                         "| bag | 0.625 | 0.500 ± 0.050 |"]


def test_the_report_card_says_whether_sft_beats_the_baseline():
    from minillm.apps.bench.instruct import report_card

    def row(arm, em):
        return {"arm": arm, "validation": {"exact_match": em, "n": 1, "per_task": {"a": em}},
                "test": {"exact_match": em, "n": 1, "per_task": {"a": em}}}
    meta = {"version": "x", "device": "cpu", "seed": 0, "fast": False}
    ahead = report_card([row("nn", 0.3), row("few", 0), row("scratch", 0.2), row("pre", 0.4)],
                        meta)
    behind = report_card([row("nn", 0.5), row("few", 0), row("scratch", 0.2), row("pre", 0.4)],
                         meta)
    assert "(pre) is ahead of the nearest-neighbour baseline" in ahead
    assert "(pre) is behind the nearest-neighbour baseline" in behind


def test_dpo_trains_on_fresh_inputs_where_a_task_has_them():
    """On the built-in set, the training records of the generated tasks and of sentiment
    become as many fresh ones (none in any split); entities and weather keep theirs."""
    import types
    from minillm import datasets as D
    from minillm.apps import preference
    cfg = types.SimpleNamespace(dataset="instructions", dataset_options=None)
    train = list(D.load("instructions", "train"))[:60]
    records, fresh = preference._practice(cfg, train)
    assert fresh == {r["task"] for r in train} - {"entities", "weather"}
    assert sorted(r["task"] for r in records) == sorted(r["task"] for r in train)
    used = {r["input"] for s in ("train", "validation", "test")
            for r in D.load("instructions", s)}
    kept = [r for r in records if r["task"] not in fresh]
    assert kept == [r for r in train if r["task"] not in fresh]
    assert not {r["input"] for r in records if r["task"] in fresh} & used
    cfg.dataset = None                              # a file of the user's: used as it is
    assert preference._practice(cfg, train) == (train, set())
