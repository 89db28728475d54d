"""``minillm bench prompting`` in fast mode: prompts chosen on validation, raw and calibrated
test accuracy beside the majority class, and its CLI."""
import json
import os

import numpy as np
import pytest

from minillm.apps import bench, cli
from minillm.apps.bench import prompting

from test_cli import need_data as need  # noqa: E402  (skip when a dataset is missing)

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    need("chinese_reviews", "peoples_daily_text")
    root = tmp_path_factory.mktemp("prompting")
    result = bench.run_benchmark("prompting", device=DEVICE, fast=True, progress=False,
                                 output_dir=str(root / "out"), bodies=str(root / "bodies"),
                                 log=lambda *_: None)
    return result, root


def test_every_body_and_number_of_shots_is_scored(fast_run):
    result, root = fast_run
    rows = result["rows"]
    assert [(r["body"], r["shots"]) for r in rows] == [
        (body, shots) for body in ("pretrained", "pretrained + domain")
        for shots in prompting.SHOTS]
    for r in rows:
        assert len(r["demonstrations"]) == r["shots"]
        assert r["test_accuracy"] == (r["test_accuracy_calibrated"] if r["calibrated"]
                                      else r["test_accuracy_raw"])
        assert abs(sum(r["predicted_shares"].values()) - 1) < 1e-9
    assert 0.5 <= result["majority"]["chinese_reviews"] <= 1
    saved = json.loads((root / "out" / "results.json").read_text(encoding="utf-8"))
    assert saved["table"] == result["table"] and "majority class" in saved["table"]
    assert (root / "out" / "prompting.png").is_file()
    assert (root / "bodies" / "chinese_reviews" / "domain" / "model").is_dir()


def test_the_prompt_is_chosen_on_validation_not_test(fast_run):
    for r in fast_run[0]["rows"]:
        tried = r["tried"]
        assert len(tried) == 2 * len(prompting.TEMPLATES["chinese_reviews"])
        best = max(t["validation_accuracy"] for t in tried)
        assert r["validation_accuracy"] == best
        first = next(t for t in tried if t["validation_accuracy"] == best)
        assert (r["template"], r["calibrated"]) == (first["template"], first["calibrated"])


def test_accuracy_and_samples_are_what_they_say():
    scores = np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert prompting._accuracy(scores, ["neg", "pos"], ["pos", "pos", "pos"]) == 2 / 3

    class Split(list):
        label_names = ["neg", "pos"]
    ds = Split({"text": str(i), "label": i % 2} for i in range(10))
    texts, labels = prompting._texts_labels(ds, 4, seed=0)
    assert len(texts) == 4 and texts == sorted(texts, key=int)        # kept in file order
    assert labels == [ds.label_names[int(t) % 2] for t in texts]
    assert prompting._texts_labels(ds, None)[0] == [str(i) for i in range(10)]


def test_unknown_dataset_and_misplaced_options_are_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="no prompts for peoples_daily_ner"):
        prompting.prompting_accuracy(fast=True, output_dir=str(tmp_path),
                            datasets=("peoples_daily_ner",))
    assert cli.main(["bench", "ner", "--fast", "--bodies", str(tmp_path)]) == 2
    assert "--bodies does not apply to bench ner" in capsys.readouterr().err
