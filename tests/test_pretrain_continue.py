"""``minillm pretrain --model DIR``: continued (domain-adaptive) pretraining starts from the
saved weights and keeps the model's tokenizer, for a GPT and for a masked-LM BERT."""
import json
import os

import numpy as np
import pytest

from test_cli import run  # noqa: E402  (minillm argv... in-process)

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")
TEXT = "the cat sat on the mat. the dog sat on the log. a bird sang in the tree.\n" * 40
OTHER = "the cat ran to the tree. the dog ran to the mat. a new word: zebra!\n" * 40


def weights(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("model_type", ["gpt", "bert"])
def test_continued_pretraining_starts_from_the_model(tmp_path, model_type):
    (tmp_path / "a.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "b.txt").write_text(OTHER, encoding="utf-8")
    first = tmp_path / "first"
    rc, _, err = run("pretrain", "--train", tmp_path / "a.txt", "--model-type", model_type,
                     "--fast", "--device", DEVICE, "--output-dir", first, "--no-progress")
    assert rc == 0, err
    again = tmp_path / "again"
    rc, text, err = run("pretrain", "--train", tmp_path / "b.txt", "--model", first / "model",
                        "--fast", "--max-steps", 1, "--learning-rate", 1e-12, "--device",
                        DEVICE, "--output-dir", again, "--no-progress")
    assert rc == 0, err
    assert f"continuing {first / 'model'}" in text
    assert (again / "model" / "tokenizer.json").read_text(encoding="utf-8") == \
        (first / "model" / "tokenizer.json").read_text(encoding="utf-8")
    cfg = json.loads((again / "model" / "config.json").read_text(encoding="utf-8"))
    assert cfg["model_type"] == json.loads(
        (first / "model" / "config.json").read_text(encoding="utf-8"))["model_type"]
    before, after = weights(first / "model" / "model.npz"), weights(again / "model" / "model.npz")
    assert before.keys() == after.keys()
    for k in before:                                # one step at lr 1e-12: the same weights
        np.testing.assert_allclose(after[k], before[k], atol=1e-6)
    assert "unknown to the tokenizer" in text       # 'z' and '!' were never seen


def test_continued_pretraining_errors(tmp_path):
    rc, _, err = run("pretrain", "--train", __file__, "--model", tmp_path / "none", "--fast",
                     "--output-dir", tmp_path / "x")
    assert rc == 2 and "no such model directory" in err, err
