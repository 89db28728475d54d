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


def _continue(tmp_path, model_type, *extra):
    """Pretrain on TEXT, then continue one step at lr 1e-12 on OTHER; returns the two runs."""
    (tmp_path / "a.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "b.txt").write_text(OTHER, encoding="utf-8")
    first = tmp_path / "first"
    rc, _, err = run("pretrain", "--train", tmp_path / "a.txt", "--model-type", model_type,
                     "--fast", "--device", DEVICE, "--output-dir", first, "--no-progress")
    assert rc == 0, err
    again = tmp_path / "again"
    rc, text, err = run("pretrain", "--train", tmp_path / "b.txt", "--model", first / "model",
                        "--fast", "--max-steps", 1, "--learning-rate", 1e-12, "--device",
                        DEVICE, "--output-dir", again, "--no-progress", *extra)
    assert rc == 0, err
    assert f"continuing {first / 'model'}" in text
    cfg = json.loads((again / "model" / "config.json").read_text(encoding="utf-8"))
    assert cfg["model_type"] == json.loads(
        (first / "model" / "config.json").read_text(encoding="utf-8"))["model_type"]
    return first, again, text


def _vocab(run_dir):
    return json.loads((run_dir / "model" / "tokenizer.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("model_type", ["gpt", "bert"])
def test_continued_pretraining_starts_from_the_model(tmp_path, model_type):
    first, again, text = _continue(tmp_path, model_type, "--extend-vocab", 0)
    assert _vocab(again) == _vocab(first)
    before, after = weights(first / "model" / "model.npz"), weights(again / "model" / "model.npz")
    assert before.keys() == after.keys()
    for k in before:                                # one step at lr 1e-12: the same weights
        np.testing.assert_allclose(after[k], before[k], atol=1e-6)
    assert "unknown to the tokenizer" in text       # 'z' and '!' were never seen


@pytest.mark.parametrize("model_type", ["gpt", "bert"])
def test_continued_pretraining_learns_the_new_characters(tmp_path, model_type):
    first, again, text = _continue(tmp_path, model_type)     # --extend-vocab 3, the default
    old, new = _vocab(first), _vocab(again)
    old_tokens = old["vocab"]
    added = new["vocab"][len(old_tokens):]
    assert new["vocab"][:len(old_tokens)] == old_tokens       # every old id keeps its token
    assert sorted(added) == sorted(set(OTHER) - set(TEXT))    # w, z, :, ! (each 40 times)
    assert f"{len(added)} characters of the new text" in text
    assert "unknown to the tokenizer" not in text
    before, after = weights(first / "model" / "model.npz"), weights(again / "model" / "model.npz")
    assert before.keys() == after.keys()
    n = len(old_tokens)
    for k in before:
        if after[k].shape == before[k].shape:
            np.testing.assert_allclose(after[k], before[k], atol=1e-6)
            continue
        assert after[k].shape[0] == n + len(added), k          # embedding rows, MLM bias
        np.testing.assert_allclose(after[k][:n], before[k], atol=1e-6)
        mean = before[k].mean(axis=0)
        for row in after[k][n:]:                               # new rows start at the mean
            np.testing.assert_allclose(row, mean, atol=1e-6)


def test_continued_pretraining_errors(tmp_path):
    rc, _, err = run("pretrain", "--train", __file__, "--model", tmp_path / "none", "--fast",
                     "--output-dir", tmp_path / "x")
    assert rc == 2 and "no such model directory" in err, err
    rc, _, err = run("pretrain", "--train", __file__, "--extend-vocab", -1, "--fast",
                     "--output-dir", tmp_path / "y")
    assert rc == 2 and "extend_vocab must be an int >= 0" in err, err


@pytest.mark.parametrize("flags, message", [
    (("--n-layer", 3), "--n-layer 3 conflicts with --model"),
    (("--model-type", "bert"), "--model-type bert conflicts with --model"),
    (("--tokenizer", "bpe"), "--tokenizer does not apply with --model"),
    (("--vocab-size", 100), "--vocab-size does not apply with --model"),
])
def test_continued_pretraining_refuses_flags_it_would_ignore(tmp_path, flags, message):
    (tmp_path / "a.txt").write_text(TEXT, encoding="utf-8")
    first = tmp_path / "first"
    rc, _, err = run("pretrain", "--train", tmp_path / "a.txt", "--fast", "--device", DEVICE,
                     "--output-dir", first, "--no-progress")
    assert rc == 0, err
    out = tmp_path / "again"
    rc, _, err = run("pretrain", "--train", tmp_path / "a.txt", "--model", first / "model",
                     "--fast", "--output-dir", out, *flags)
    assert rc == 2 and message in err, err
    assert not out.exists()                         # refused before anything is written


def test_continued_pretraining_records_the_models_size(tmp_path):
    first, again, _ = _continue(tmp_path, "gpt", "--extend-vocab", 0, "--n-layer", 1)
    saved = json.loads((again / "config.json").read_text(encoding="utf-8"))["pretrain"]
    model = json.loads((first / "model" / "config.json").read_text(encoding="utf-8"))
    assert (saved["model_type"], saved["n_layer"], saved["n_head"], saved["n_embd"]) == \
        ("gpt", model["n_layer"], model["n_head"], model["n_embd"])
