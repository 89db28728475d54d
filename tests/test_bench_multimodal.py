"""``minillm bench multimodal`` in fast mode (through the CLI): every number has its baseline,
the held-out pairs are recorded, the plot and results.json are written."""
import importlib.util
import json
import os

import pytest

from minillm.apps import cli
from minillm.apps.bench.multimodal import FAST, _row, markdown_table

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("scikit-learn is not installed (the digits come from it): "
                    "pip install scikit-learn, or minillm[vision]")
    out = tmp_path_factory.mktemp("multimodal") / "out"
    code = cli.main(["bench", "multimodal", "--fast", "--no-progress", "--device", DEVICE,
                     "--output-dir", str(out)])
    assert code == 0
    return json.loads((out / "results.json").read_text(encoding="utf-8")), out


def test_every_number_has_a_baseline(fast_run):
    result, out = fast_run
    assert result["benchmark"] == "multimodal" and result["fast"] is True
    rows = result["rows"]
    tasks = {r["task"] for r in rows}
    assert tasks == {"digits", "shapes", "shapes, held-out pairs", "captions",
                     "captions, held-out pairs"}
    for r in rows:
        assert r["baseline"] and 0 <= r["value"] <= 1 and 0 <= r["baseline_value"] <= 1
        assert r["metric"] in result["table"]
    metrics = {r["metric"] for r in rows}
    for lang in ("en", "zh"):
        assert f"zero-shot test accuracy ({lang} prompt)" in metrics
        assert f"recall@1 image to text ({lang}, 27 held-out captions)" in metrics
    zero_shot = [r for r in rows if r["metric"].startswith("zero-shot")]
    assert all(r["baseline"] == "chance" and r["baseline_value"] == 0.1 for r in zero_shot)
    captions = [r for r in rows if r["task"] == "captions"]
    assert {r["model"] for r in captions} == {"prefix captioner, stage 1",
                                              "prefix captioner, stage 2"}
    assert {r["metric"] for r in captions} == {"exact match (en)", "shape (en)", "colour (en)",
                                               "position (en)"}
    assert (out / "multimodal.png").is_file() and "multimodal" in result["command"]


def test_history_and_held_out_pairs_are_recorded(fast_run):
    result, _ = fast_run
    assert result["held_out"] == [["circle", "yellow"], ["square", "blue"],
                                  ["triangle", "green"]]
    h = result["history"]
    for key, steps in (("clip_digits", "digits_steps"), ("clip_shapes", "shapes_steps"),
                       ("lm", "lm_steps"), ("stage1", "stage1_steps"),
                       ("stage2", "stage2_steps")):
        assert len(h[key]) == FAST[steps], key
    assert len(result["samples"]["heldout"]) == FAST["shapes_n"]


def test_markdown_table():
    rows = [_row("digits", "accuracy", "CLIP", 0.95, "chance", 0.1)]
    assert markdown_table(rows).split("\n")[2] == (
        "| digits | accuracy | CLIP | 0.950 | chance | 0.100 |")
