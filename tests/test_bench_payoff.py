"""``minillm bench pretraining-payoff`` in fast mode: its learners, curves, reuse and CLI."""
import json
import os

import pytest

from minillm.apps import bench, cli
from minillm.apps.bench import payoff

from test_cli import need_data as need  # noqa: E402  (skip when a dataset is missing)

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    need("chinese_reviews", "peoples_daily_text")
    root = tmp_path_factory.mktemp("payoff")
    lines = []
    result = bench.run_benchmark("pretraining-payoff", device=DEVICE, fast=True,
                                 progress=False, output_dir=str(root), log=lines.append)
    return result, root, lines


def test_every_learner_at_every_size_and_seed(fast_run):
    result, root, _ = fast_run
    points = result["points"]["chinese_reviews"]
    for n in payoff.LABELS_FAST:                      # fast: 2 seeds at both sizes
        for arm in payoff.ARMS:
            seeds = sorted(p["seed"] for p in points if p["arm"] == arm and p["labels"] == n)
            assert seeds == [0, 1], (arm, n)
    for p in points:
        assert 0 <= p["value"] <= 1 and p["command"].startswith("minillm finetune")
    curves = result["curves"]["chinese_reviews"]
    assert [c["labels"] for c in curves["from scratch"]] == list(payoff.LABELS_FAST)
    saved = json.loads((root / "results.json").read_text(encoding="utf-8"))
    assert saved["table"] == result["table"]
    assert (root / "pretraining_payoff.png").is_file()


def test_learners_differ_only_in_their_start(fast_run):
    """The pretrained learners start from the bodies; the scratch one has their size."""
    result, root, _ = fast_run
    cmds = {p["arm"]: p["command"] for p in result["points"]["chinese_reviews"]
            if p["labels"] == 16 and p["seed"] == 0}
    general = root / "general-peoples_daily_text" / "model"
    assert f"--model {general}" in cmds["pretrained"]
    assert f"--model {root / 'chinese_reviews' / 'domain' / 'model'}" in cmds[
        "pretrained + domain"]
    assert "--model " not in cmds["from scratch"] and "--model-type gpt" in cmds["from scratch"]
    domain = json.loads((root / "chinese_reviews" / "domain" / "config.json")
                        .read_text(encoding="utf-8"))["pretrain"]
    assert domain["model"] == str(general) and domain["dataset"] is None


def test_domain_corpus_is_the_training_split_without_labels(fast_run):
    from minillm import datasets
    _, root, _ = fast_run
    text = (root / "chinese_reviews" / "unlabelled-train.txt").read_text(encoding="utf-8")
    train = datasets.load("chinese_reviews", split="train")
    assert text.count("\n") == len(train)
    test = datasets.load("chinese_reviews", split="test")
    unseen = [ex["text"] for ex in test.examples[:50]
              if ex["text"] not in {e["text"] for e in train.examples}]
    lines = set(text.splitlines())
    assert unseen and not any(t in lines for t in unseen)


def test_a_second_run_reuses_every_finished_run(fast_run, tmp_path):
    _, root, _ = fast_run
    lines = []
    bench.run_benchmark("pretraining-payoff", device=DEVICE, fast=True, progress=False,
                        output_dir=str(root), log=lines.append)
    reused = [ln for ln in lines if ln.startswith("reusing")]
    assert len(reused) == 2 + 2 * 2 * 3           # two bodies; 2 sizes x 2 seeds x 3 learners


@pytest.mark.parametrize("points, expected", [
    ([dict(arm=a, labels=10, value=v) for a, v in zip(payoff.ARMS, (0.5, 0.6, 0.7, 0.8))],
     {"from scratch": (0.5, 0.0), "bag of n-grams": (0.8, 0.0)}),
    ([dict(arm=a, labels=10, value=v) for a in payoff.ARMS for v in (0.4, 0.6)],
     {"pretrained": (0.5, 0.1)}),
])
def test_curves_average_over_seeds(points, expected):
    c = payoff.curves(points)
    for arm, (mean, std) in expected.items():
        assert c[arm][0]["mean"] == pytest.approx(mean) and c[arm][0]["std"] == pytest.approx(std)


@pytest.mark.parametrize("argv, message", [
    (["--labels", "100,abc"], "neither a positive count"),
    (["--labels", "0"], "neither a positive count"),
    (["--seeds", "0"], "--seeds must be at least 1"),
])
def test_cli_rejects_bad_options(argv, message, capsys):
    try:
        status = cli.main(["bench", "pretraining-payoff", "--fast", *argv])
    except SystemExit as e:                        # argparse's own usage error
        status = e.code
    assert status != 0 and message in capsys.readouterr().err


def test_payoff_options_belong_to_payoff_only(capsys):
    assert cli.main(["bench", "sentiment", "--labels", "100"]) != 0
    assert "does not apply to bench sentiment" in capsys.readouterr().err


def test_unknown_dataset_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        payoff.pretraining_payoff(fast=True, output_dir=str(tmp_path), datasets=("imdb",))
    assert not any(tmp_path.iterdir())


def test_a_finished_run_with_other_settings_is_never_overwritten(fast_run, tmp_path):
    import shutil
    from minillm.apps import tasks
    _, root, _ = fast_run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    cfg = json.loads((copy / "general-peoples_daily_text" / "config.json").read_text(
        encoding="utf-8"))
    cfg["pretrain"]["max_steps"] += 1
    (copy / "general-peoples_daily_text" / "config.json").write_text(json.dumps(cfg),
                                                                     encoding="utf-8")
    before = (copy / "general-peoples_daily_text" / "model" / "model.npz").read_bytes()
    with pytest.raises(tasks.TaskError, match=r"other settings \(max_steps\)"):
        bench.run_benchmark("pretraining-payoff", device=DEVICE, fast=True, progress=False,
                            output_dir=str(copy), log=None)
    assert (copy / "general-peoples_daily_text" / "model" / "model.npz").read_bytes() == before


@pytest.mark.parametrize("where,expected", [("test", ("nb", 0.7)), ("validation", ("nb", 0.9))])
def test_best_baseline_is_chosen_on_validation_and_scored_where_the_learners_are(where,
                                                                                 expected):
    res = {"baselines": {"nb": {"validation": {"accuracy": 0.9}, "test": {"accuracy": 0.7}},
                         "lr": {"validation": {"accuracy": 0.8}, "test": {"accuracy": 0.95}}}}
    if where == "validation":                       # SST-2: no test labels
        for b in res["baselines"].values():
            del b["test"]
    assert payoff._best_baseline(res, "accuracy", where) == expected


def _saved(path, fast, names):
    path.write_text(json.dumps({
        "fast": fast, "device": "cpu", "settings": {"labels": [100, None], "seeds": 3},
        "points": {n: [f"{n} point"] for n in names}, "curves": {n: f"{n} curve" for n in names},
        "pretraining": {n: f"{n} bodies" for n in names}}), encoding="utf-8")


@pytest.mark.parametrize("saved_fast, saved_names, kept", [
    (False, ("chinese_reviews", "peoples_daily_ner"), ["peoples_daily_ner"]),  # other: kept
    (False, ("chinese_reviews",), []),          # the dataset measured now replaces its old self
    (True, ("peoples_daily_ner",), []),         # a fast-mode index never mixes with a full one
])
def test_results_json_keeps_the_datasets_an_earlier_call_measured(tmp_path, saved_fast,
                                                                  saved_names, kept):
    _saved(tmp_path / "results.json", saved_fast, saved_names)
    points, curves, pre = {"chinese_reviews": ["new"]}, {"chinese_reviews": "new"}, {}
    measured = {"chinese_reviews": {"labels": [300], "seeds": 1, "device": "cpu"}}
    payoff._keep_earlier(tmp_path / "results.json", False, points, curves, pre, measured,
                         lambda *_: None)
    assert points["chinese_reviews"] == ["new"] and sorted(points) == ["chinese_reviews", *kept]
    for name in kept:
        assert points[name] == [f"{name} point"] and curves[name] == f"{name} curve"
        assert measured[name] == {"labels": [100, None], "seeds": 3, "device": "cpu"}
