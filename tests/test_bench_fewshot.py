"""``minillm bench fewshot-intents`` in fast mode (through the CLI), and its pieces: every
learner scored on the same test episodes, the table, the interval, bad options."""
import json
import os

import numpy as np
import pytest

from minillm.apps import cli
from minillm.apps.bench import fewshot

from test_cli import need_data  # noqa: E402  (skip when a dataset is missing)

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    need_data("clinc150")
    out = tmp_path_factory.mktemp("fewshot") / "out"
    code = cli.main(["bench", "fewshot-intents", "--fast", "--no-progress", "--device", DEVICE,
                     "--output-dir", str(out)])
    assert code == 0
    return json.loads((out / "results.json").read_text(encoding="utf-8")), out


def test_every_setting_and_method_is_scored(fast_run):
    result, out = fast_run
    assert result["benchmark"] == "fewshot-intents" and result["fast"] is True
    assert [(r["n_way"], r["k_shot"], r["method"]) for r in result["rows"]] == [
        (n, k, m) for n, k in fewshot.SETTINGS for m in fewshot.METHODS]
    for r in result["rows"]:
        accs = np.array(r["accuracies"])
        assert r["episodes"] == len(accs) == fewshot.FAST["episodes"]
        assert ((0 <= accs) & (accs <= 1)).all()
        assert r["accuracy"] == pytest.approx(accs.mean())
        assert r["ci95"] == pytest.approx(1.96 * accs.std() / np.sqrt(len(accs)))
        # every episode's accuracy is a count of correct queries over N * 15 queries
        assert np.allclose(accs * r["n_way"] * 15, np.round(accs * r["n_way"] * 15))
    for m in fewshot.METHODS:
        assert m in result["table"]
    assert (out / "fewshot_intents.png").is_file()
    assert "fewshot-intents" in result["command"]


def test_the_meta_split_and_history_are_recorded(fast_run):
    result, _ = fast_run
    split = {k: set(v) for k, v in result["meta_split"].items()}
    assert {k: len(v) for k, v in split.items()} == {"train": 90, "validation": 30, "test": 30}
    assert not (split["train"] & split["test"]) and not (split["validation"] & split["test"])
    for name, steps in (("protonet", "protonet_steps"), ("reptile", "reptile_steps")):
        h = result["history"][name]
        assert len(h["loss"]) == fewshot.FAST[steps]
        assert h["val_step"][-1] == fewshot.FAST[steps] and h["best_step"] in h["val_step"]


def test_all_learners_see_the_same_test_episodes():
    pool = {f"i{c}": [f"i{c} text {j}" for j in range(20)] for c in range(12)}
    splits = {"test": pool}
    seen = {}

    def recorder(name):
        def predict(ep):
            seen.setdefault(name, []).append(ep)
            return ep.query_labels                       # always right
        return predict

    s = dict(episodes=3, query=4)
    rows = fewshot._score_settings(splits, {m: recorder(m) for m in ("a", "b")}, s, 0,
                                   lambda *_: None)
    assert seen["a"] == seen["b"] and len(seen["a"]) == 3 * len(fewshot.SETTINGS)
    assert [(ep.n_way, ep.k_shot, ep.q_query) for ep in seen["a"][::3]] == [
        (n, k, 4) for n, k in fewshot.SETTINGS]
    assert all(r["accuracy"] == 1.0 and r["ci95"] == 0.0 for r in rows)


def test_markdown_table():
    rows = [{"setting": st, "method": m, "accuracy": a, "ci95": h}
            for st, m, a, h in [("5-way 1-shot", "A", 0.5, 0.01), ("5-way 5-shot", "A", 0.75, 0.02),
                                ("5-way 1-shot", "B", 0.625, 0.0), ("5-way 5-shot", "B", 1.0, 0.0)]]
    assert fewshot.markdown_table(rows).split("\n") == [
        "| method | 5-way 1-shot | 5-way 5-shot |", "|---|---:|---:|",
        "| A | 50.0 ± 1.0 | 75.0 ± 2.0 |", "| B | 62.5 ± 0.0 | 100.0 ± 0.0 |"]


@pytest.mark.parametrize("argv, message", [
    (["bench", "fewshot-intents", "--fast", "--episodes", "0"], "--episodes must be at least 1"),
    (["bench", "ner", "--fast", "--body", "x"], "--body does not apply to bench ner"),
    (["bench", "ptb-ngram", "--episodes", "5"], "--episodes does not apply to bench ptb-ngram"),
])
def test_bad_options_are_errors(argv, message, capsys, tmp_path):
    assert cli.main(argv + ["--output-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_episodes_below_one_is_an_error_in_the_function_too():
    with pytest.raises(ValueError, match="episodes must be at least 1"):
        fewshot._settings(True, 0, None)
