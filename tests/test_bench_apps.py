"""``minillm bench text-classification`` and ``bench ner`` in fast mode, and their baselines."""
import json
import os

import pytest

import minillm as mm
from minillm import baselines
from minillm.apps import bench, tasks

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


from test_cli import need_data as need  # noqa: E402  (skip when a dataset is missing)


def test_memorise_tags_takes_the_most_frequent_tag():
    table = baselines.memorise_tags([["A", "b", "A"], ["a", "c"]],
                               [["B-X", "O", "O"], ["B-X", "O"]], lower=True)
    assert table == {"a": "B-X", "b": "O", "c": "O"}
    assert baselines.memorise_tags([["A"], ["A"]], [["O"], ["B-X"]])["A"] == "O"    # tie: first


def test_sst2_trains_without_its_hidden_test_labels():
    need("sst2")
    cfg = tasks.FinetuneConfig(task="classification", dataset="sst2", max_train_examples=8,
                               max_eval_examples=8)
    splits, names = tasks.load_task_data(cfg, log=None)
    assert set(splits) == {"train", "validation"} and names == ["negative", "positive"]


@pytest.mark.parametrize("name, datasets, metric, models", [
    ("text-classification", ("sst2", "clinc150"), "accuracy", 3),
    ("ner", ("peoples_daily_ner", "wnut17"), "f1", 2),
])
def test_fast_benchmark_rows(name, datasets, metric, models, tmp_path):
    need(*datasets)
    lines = []
    result = bench.run_benchmark(name, device=DEVICE, fast=True, progress=False,
                                 output_dir=str(tmp_path), log=lines.append)
    assert len(result["rows"]) == models * len(datasets)
    assert [r["dataset"] for r in result["rows"]] == [d for d in datasets for _ in range(models)]
    for r in result["rows"]:
        assert 0 <= r[metric] <= 1 and r["command"].startswith("minillm ")
    finetuned = [r for r in result["rows"] if r["model"].startswith("BERT")]
    assert len(finetuned) == len(datasets)
    assert all("--output-dir" in r["command"] for r in result["rows"])
    for d in datasets:                  # the baselines come from that dataset's finetune run
        run = json.loads((tmp_path / d / "metrics.json").read_text(encoding="utf-8"))
        assert sorted(run["baselines"]) == sorted(
            r["model"] for r in result["rows"] if r["dataset"] == d and r not in finetuned)
    clinc = [r for r in result["rows"] if r["dataset"] == "clinc150"]
    assert all("in_scope_accuracy" in r for r in clinc)
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert saved["table"] == result["table"] and (tmp_path / f"{name.replace('-', '_')}.png"
                                                  ).is_file()
    assert "fast mode" in bench.format_result(name, result)
    assert mm.get_default_device() == mm.device(DEVICE)
