"""What ``minillm finetune`` chooses when a user gives only a file: the tokenizer, the max
length, the number of epochs, early stopping with the best weights restored, and the
bag-of-n-grams baseline printed beside the model (also by ``minillm evaluate``)."""
import json
import os

import numpy as np
import pytest

from minillm import baselines
from minillm.apps import tasks
from minillm.training import Trainer, TrainerCallback, TrainingArguments

from test_cli import run  # noqa: E402  (minillm argv... in-process)
from test_finetune_tasks import tsv  # noqa: E402  (a tiny polarity TSV)
from test_trainer import args_for, tiny_gpt, windows

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


# -- the choices, as tables ---------------------------------------------------------------------
@pytest.mark.parametrize("texts, kind", [
    (["这本书写得很好，值得一读。", "物流太慢了"], "char"),
    (["the movie was great", "a dull , lifeless film"], "bpe"),
    (["I loved 这部电影 a lot, really a lot"], "bpe"),           # mostly Latin letters
    (["质量不错 ok"], "char"),                                   # mostly Han characters
])
def test_auto_tokenizer_is_characters_for_chinese_and_bpe_otherwise(texts, kind):
    assert tasks.choose_tokenizer(texts) == kind


@pytest.mark.parametrize("lengths, want", [
    ([5] * 100, 16),                         # the floor
    (list(range(1, 101)), 104),              # 98th percentile 98.02, rounded up to 8s
    ([40] * 99 + [1000], 40),                # one outlier does not set the length
    ([900] * 10, 256),                       # the cap
    ([], 16),
])
def test_max_length_from_the_data(lengths, want):
    assert tasks.length_from_data(lengths) == want


@pytest.mark.parametrize("task, n, batch, want", [
    ("classification", 100, 32, 30),     # 4 steps an epoch: capped at 30 epochs
    ("classification", 7500, 32, 13),    # 235 steps an epoch: 13 epochs ~ 3,000 steps
    ("classification", 15100, 32, 7),
    ("classification", 67349, 32, 3),    # a large set: the floor of 3 epochs
    ("ner", 16679, 32, 15),              # People's Daily's windows: 15 epochs ~ 7,500 steps
    ("ner", 3394, 32, 30),
    ("qa", 12609, 32, 8),
])
def test_epochs_from_the_data_size(task, n, batch, want):
    assert tasks.epochs_from_data(n, batch, tasks.TARGET_STEPS[task]) == want


@pytest.mark.parametrize("task, model, given, want", [
    ("classification", None, None, 5e-4),    # a small file loses at 1e-3 (SST-2 7.5k)
    ("ner", None, None, 1e-3),               # People's Daily +7.1 F1 at 1e-3
    ("qa", None, None, 5e-4),
    ("ner", "MODEL", None, 1e-4),            # a pretrained body: small steps
    ("classification", "MODEL", None, 1e-4),
    ("ner", None, 3e-4, 3e-4),               # given: kept
])
def test_learning_rate_default_is_resolved_into_the_config(tmp_path, task, model, given, want):
    if model:
        (tmp_path / model).mkdir()
        model = str(tmp_path / model)
    cfg = tasks.FinetuneConfig(task=task, dataset="sst2", model=model, learning_rate=given)
    assert cfg.learning_rate == want and cfg.to_dict()["learning_rate"] == want


def test_learning_rate_must_be_positive():
    with pytest.raises(tasks.TaskError, match=r"learning_rate must be .*> 0, got 0"):
        tasks.FinetuneConfig(task="ner", dataset="wnut17", learning_rate=0)


# -- the Trainer keeps the best evaluation's weights --------------------------------------------
class Scripted:
    """compute_metrics returning a scripted score per evaluation."""

    def __init__(self, scores):
        self.scores, self.calls = list(scores), 0

    def __call__(self, model, loader):
        self.calls += 1
        return {"score": self.scores[self.calls - 1]}


class Snapshots(TrainerCallback):
    def __init__(self):
        self.weights = {}

    def on_evaluate(self, trainer, state, metrics):
        self.weights[state.global_step] = {k: v.numpy().copy()
                                           for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("scores, best", [([0.1, 0.9, 0.2, 0.3], 2), ([0.1, 0.2, 0.3, 0.4], 4)])
def test_load_best_model_at_end_restores_the_best_evaluation(tmp_path, scores, best):
    snaps = Snapshots()
    model = tiny_gpt()
    args = args_for(tmp_path, max_steps=4, eval_steps=1, save_steps=1, save_total_limit=1,
                    metric_for_best_model="eval_score", greater_is_better=True,
                    load_best_model_at_end=True)
    state = Trainer(model, args, train_dataset=windows(64), eval_dataset=windows(8),
                    compute_metrics=Scripted(scores), callbacks=[snaps]).train()
    assert state.global_step == 4 and state.loaded_best_step == best
    now = {k: v.numpy() for k, v in model.state_dict().items()}
    for k, v in snaps.weights[best].items():
        np.testing.assert_array_equal(now[k], v)
    if best != 4:
        assert any(not np.array_equal(now[k], v) for k, v in snaps.weights[4].items())


def test_load_best_model_at_end_needs_a_checkpoint_at_every_evaluation(tmp_path):
    with pytest.raises(ValueError, match="save_steps .* multiple of eval_steps"):
        args_for(tmp_path, eval_steps=2, save_steps=3, load_best_model_at_end=True)
    with pytest.raises(ValueError, match="load_best_model_at_end"):
        TrainingArguments(str(tmp_path), load_best_model_at_end=True)


# -- baselines ----------------------------------------------------------------------------------
def test_classification_baselines_learn_a_separable_problem():
    good, bad = ["good fine great"] * 10, ["bad awful poor"] * 10
    texts, labels = good + bad, [1] * 10 + [0] * 10
    out = baselines.classification_baselines((texts, labels), (texts, labels),
                                             {"test": ["great film", "awful film"]}, 2, "en",
                                             logreg_epochs=20)
    assert sorted(out) == ["logistic regression (word 1+2-grams)",
                           "naive Bayes (word 1+2-grams)"]
    for r in out.values():
        assert r["predictions"]["test"].tolist() == [1, 0]


def test_ner_baseline_memorises_tags_case_insensitively():
    out = baselines.ner_baseline(([["Paris", "is", "big"]], [["B-LOC", "O", "O"]]),
                                 {"test": [["paris", "Rome"]]})
    (r,) = out.values()
    assert r["predictions"]["test"] == [["B-LOC", "O"]]


# -- the command line on a user's file ----------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("defaults")
    train, test = tsv(root / "train.tsv", 80, 0), tsv(root / "test.tsv", 30, 1)
    out = root / "run"
    rc, text, err = run("finetune", "--task", "classification", "--train", train, "--test",
                        test, "--fast", "--device", DEVICE, "--output-dir", out,
                        "--no-progress")
    assert rc == 0, err
    return root, out, text


def test_defaults_on_an_english_file(run_dir):
    root, out, text = run_dir
    res = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert res["tokenizer"] == "BPETokenizer"
    assert res["max_length"] == 16                 # short sentences: the floor
    assert "max_length 16 from the training texts" in text
    assert "(from the training set's size)" not in text     # --fast sets max_steps
    assert res["best_step"] is not None and "best validation accuracy" in text
    names = sorted(res["baselines"])
    assert names == ["logistic regression (word 1+2-grams)", "naive Bayes (word 1+2-grams)"]
    for b in res["baselines"].values():
        assert 0 <= b["test"]["accuracy"] <= 1 and 0 <= b["validation"]["accuracy"] <= 1
    assert "baseline naive Bayes (word 1+2-grams): test accuracy" in text
    assert "the best baseline" in text
    task = json.loads((out / "model" / "task.json").read_text(encoding="utf-8"))
    assert task["training_data"]["train"] == str(root / "train.tsv")


def test_evaluate_refits_the_baseline_and_can_skip_it(run_dir, tmp_path):
    root, out, _ = run_dir
    rc, text, err = run("evaluate", "--model", out, "--file", root / "test.tsv", "--json",
                        "--max-examples", 16, "--device", DEVICE)    # --fast's test sample
    assert rc == 0, err
    r = json.loads(text)
    res = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert r["accuracy"] == res["test"]["accuracy"]
    for name, b in r["baselines"].items():          # refitted: the same numbers as finetune's
        assert b["accuracy"] == res["baselines"][name]["test"]["accuracy"]
    assert "the best baseline" in err
    rc, text, err = run("evaluate", "--model", out, "--file", root / "test.tsv", "--json",
                        "--no-baseline", "--device", DEVICE)
    assert rc == 0 and "baselines" not in json.loads(text)


def test_evaluate_says_when_the_training_file_is_gone(run_dir, tmp_path):
    root, out, _ = run_dir
    moved = tmp_path / "model"
    task = json.loads((out / "model" / "task.json").read_text(encoding="utf-8"))
    task["training_data"]["train"] = str(tmp_path / "gone.tsv")
    import shutil
    shutil.copytree(out / "model", moved)
    (moved / "task.json").write_text(json.dumps(task), encoding="utf-8")
    rc, text, err = run("evaluate", "--model", moved, "--file", root / "test.tsv", "--json",
                        "--device", DEVICE)
    assert rc == 0, err
    assert "baselines" not in json.loads(text)
    assert "baseline: skipped (the training data cannot be read again" in err


def test_no_baseline_and_chinese_characters(tmp_path):
    rows = ["text\tlabel"] + [f"{w}很好\tpos" for w in "书衣鞋包"] * 6 + \
           [f"{w}太差\tneg" for w in "书衣鞋包"] * 6
    path = tmp_path / "zh.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    rc, text, err = run("finetune", "--task", "classification", "--train", path, "--fast",
                        "--no-baseline", "--device", DEVICE, "--output-dir", tmp_path / "r",
                        "--no-progress")
    assert rc == 0, err
    res = json.loads((tmp_path / "r" / "metrics.json").read_text(encoding="utf-8"))
    assert res["tokenizer"] == "CharTokenizer" and "baselines" not in res
    assert "the best baseline" not in text and "baseline naive" not in text


def test_ner_reports_the_memorising_baseline(tmp_path):
    sent = [("Paris", "B-LOC"), ("is", "O"), ("in", "O"), ("France", "B-LOC")]
    text = "\n\n".join("\n".join(f"{w} {t}" for w, t in sent) for _ in range(12)) + "\n"
    path = tmp_path / "train.conll"
    path.write_text(text, encoding="utf-8")
    rc, out, err = run("finetune", "--task", "ner", "--train", path, "--fast", "--device",
                       DEVICE, "--output-dir", tmp_path / "r", "--no-progress")
    assert rc == 0, err
    res = json.loads((tmp_path / "r" / "metrics.json").read_text(encoding="utf-8"))
    (b,) = res["baselines"].values()
    assert b["validation"]["f1"] == 1.0             # every token was seen with its tag
    assert "baseline most frequent training tag per token: validation f1 1.0000" in out


# -- batches of similar length (group_by_length) ------------------------------------------------
@pytest.mark.parametrize("n, batch", [(103, 8), (64, 8), (5, 8), (1000, 32)])
def test_group_by_length_is_a_permutation_with_little_padding(n, batch):
    from minillm.data import batching
    lengths = np.random.default_rng(1).integers(1, 200, n)
    loader = batching.DataLoader(list(range(n)), batch, shuffle=True, seed=3, lengths=lengths)
    order = loader.order(0)
    assert sorted(order.tolist()) == list(range(n))
    np.testing.assert_array_equal(order, loader.order(0))          # resumable: (seed, epoch)
    if n >= 2 * batch:                         # several batches: each epoch its own order
        assert not np.array_equal(order, loader.order(1))
    batches = [order[i:i + batch] for i in range(0, n, batch)]
    padded = sum(len(b) * lengths[b].max() for b in batches)
    plain = batching.DataLoader(list(range(n)), batch, shuffle=True, seed=3).order(0)
    padded_plain = sum(len(b) * lengths[b].max()
                       for b in (plain[i:i + batch] for i in range(0, n, batch)))
    assert padded <= padded_plain
    if n % batch:                              # the short batch is the last one
        assert len(batches[-1]) == n % batch


def test_dataloader_lengths_must_match():
    from minillm.data import batching
    with pytest.raises(ValueError, match="one length per example"):
        batching.DataLoader([1, 2, 3], 2, shuffle=True, seed=0, lengths=[1, 2])


@pytest.mark.parametrize("pooling, want", [("auto", "mean"), ("cls", "cls"), ("last", "last")])
def test_task_models_pool_the_mean_by_default(pooling, want):
    from minillm.data import CharTokenizer
    cfg = tasks.FinetuneConfig(task="classification", train=__file__, pooling=pooling,
                               n_layer=1, n_head=2, n_embd=16)
    tok = CharTokenizer.train(["abc"], special_tokens=tasks.SPECIALS)
    model = tasks.build_task_model(cfg, tok, ["a", "b"], log=None, max_length=16)
    assert model.pooling == want
