"""``minillm pretrain --model-type bert``: masked-LM pretraining of a BERT body.

The masked windows are a pure function of (seed, index), so resuming from a checkpoint gives
the bit-identical model an uninterrupted run gives; the pretrained directory starts a
fine-tuning run and loads as a ``BertForMaskedLM``.
"""
import json
import os
import shutil

import numpy as np
import pytest

import minillm as mm
from minillm.apps import cli, tasks
from minillm.data import CharTokenizer

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


from test_cli import run  # noqa: E402  (minillm argv... in-process)


def need_shakespeare():
    from minillm import datasets as D
    for rf in D.get_spec("tinyshakespeare").files:
        if not any(os.path.isfile(p) for p in D.candidate_paths(rf)):
            pytest.skip("tinyshakespeare is not available locally (set MINILLM_DATA)")


@pytest.fixture(scope="module")
def windows():
    text = "the quick brown fox jumps over the lazy dog. " * 40
    tok = CharTokenizer.train([text], special_tokens=tasks.SPECIALS)
    stream = np.asarray(tok.encode(text), dtype=np.int64)
    return tasks._MLMWindows(stream, 16, 400, 7, tok), tok


def test_mlm_windows_are_a_function_of_the_index(windows):
    w, _ = windows
    forward = [w[i] for i in range(20)]
    backward = [w[i] for i in reversed(range(20))][::-1]
    for a, b in zip(forward, backward):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    assert not all(np.array_equal(forward[0]["labels"], f["labels"]) for f in forward[1:])


def test_mlm_windows_mask_like_bert(windows):
    w, tok = windows
    ids = np.stack([w[i]["input_ids"] for i in range(len(w))])
    labels = np.stack([w[i]["labels"] for i in range(len(w))])
    originals = np.stack([w.window(i) for i in range(len(w))])
    assert ids.shape == (400, 16)
    assert (originals[:, 0] == tok.cls_id).all() and (originals[:, -1] == tok.sep_id).all()
    chosen = labels != -100
    assert not chosen[:, [0, -1]].any()                       # [CLS]/[SEP] never predicted
    np.testing.assert_array_equal(labels[chosen], originals[chosen])
    np.testing.assert_array_equal(ids[~chosen], originals[~chosen])
    rate = chosen[:, 1:-1].mean()
    assert 0.13 < rate < 0.17, rate                            # 15% of 5,600 positions
    masked = (ids == tok.mask_id)[chosen].mean()
    assert 0.75 < masked < 0.85, masked                        # 80% of those become [MASK]


@pytest.mark.parametrize("probability", [0.15, 0.4])
def test_mlm_windows_mask_the_share_asked_for(probability):
    text = "the quick brown fox jumps over the lazy dog. " * 40
    tok = CharTokenizer.train([text], special_tokens=tasks.SPECIALS)
    stream = np.asarray(tok.encode(text), dtype=np.int64)
    w = tasks._MLMWindows(stream, 16, 400, 7, tok, probability)
    rate = np.mean([(w[i]["labels"][1:-1] != -100).mean() for i in range(len(w))])
    assert abs(rate - probability) < 0.03, rate


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5])
def test_mlm_probability_out_of_range_is_refused(value):
    with pytest.raises(tasks.TaskError, match="mlm_probability must be in"):
        tasks.PretrainConfig(model_type="bert", mlm_probability=value)


def test_block_size_too_small_for_cls_and_sep(windows):
    _, tok = windows
    with pytest.raises(tasks.TaskError, match="block_size >= 3"):
        tasks._MLMWindows(np.arange(50), 2, 4, 0, tok)


def test_unknown_model_type_is_refused():
    with pytest.raises(tasks.TaskError, match="model_type must be"):
        tasks.PretrainConfig(model_type="lstm")


@pytest.mark.parametrize("model_type", ["bert", "gpt"])
def test_a_bpe_body_has_the_specials_fine_tuning_needs(model_type, tmp_path):
    """A BPE vocabulary learned by ``pretrain`` carries [CLS], [SEP], [MASK] and [PAD]: the
    masked LM trains on it and the body starts a QA fine-tune (which needs [CLS] and [SEP])."""
    need_shakespeare()
    out = tmp_path / "body"
    rc, _, err = run("pretrain", "--model-type", model_type, "--tokenizer", "bpe",
                     "--vocab-size", "300", "--fast", "--device", DEVICE, "--output-dir", out,
                     "--no-progress")
    assert rc == 0, err
    tok = tasks.load_tokenizer(out / "model")
    ids = [tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id]
    assert [tok.id_to_token(i) for i in ids] == ["[CLS]", "[SEP]", "[MASK]", "[PAD]"]
    qa = tmp_path / "qa.json"
    ctx = "ROMEO loves JULIET and the king rules."
    qa.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": ctx, "qas": [
        {"id": str(i), "question": q, "answers": [{"text": a, "answer_start": ctx.index(a)}]}
        for i, (q, a) in enumerate([("who loves?", "ROMEO"), ("who rules?", "the king")] * 4)
    ]}]}]}), encoding="utf-8")
    rc, _, err = run("finetune", "--task", "qa", "--train", qa, "--validation", qa, "--model",
                     out / "model", "--fast", "--device", DEVICE, "--output-dir",
                     tmp_path / "ft", "--no-progress")
    assert rc == 0, err


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    need_shakespeare()
    out = tmp_path_factory.mktemp("bert")
    rc, text, err = run("pretrain", "--model-type", "bert", "--fast", "--device", DEVICE,
                        "--output-dir", out, "--no-progress")
    assert rc == 0, err
    return out, text


def test_bert_pretraining_writes_a_masked_lm(bert_run):
    out, text = bert_run
    assert "BERT (masked LM)" in text
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert np.isfinite(res["val_loss"]) and res["val_loss"] < np.log(res["vocab_size"]) + 0.5
    model = mm.models.load_model(out / "model")
    assert isinstance(model, mm.models.BertForMaskedLM)
    assert "→" in (out / "sample.txt").read_text(encoding="utf-8")


def test_bert_pretraining_resumes_bit_exactly(bert_run, tmp_path):
    out, _ = bert_run
    run_dir = tmp_path / "run"
    shutil.copytree(out, run_dir)
    steps = cli.PRETRAIN_FAST["max_steps"]
    half = cli.PRETRAIN_FAST["save_steps"]
    assert half < steps
    for p in run_dir.glob("checkpoint-*"):
        if p.name != f"checkpoint-{half}":
            shutil.rmtree(p)
    shutil.rmtree(run_dir / "model")
    rc, _, err = run("pretrain", "--model-type", "bert", "--fast", "--device", DEVICE,
                     "--output-dir", run_dir, "--no-progress", "--resume",
                     run_dir / f"checkpoint-{half}")
    assert rc == 0, err
    a = np.load(out / "model" / "model.npz")
    b = np.load(run_dir / "model" / "model.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_finetune_starts_from_the_pretrained_bert(bert_run, tmp_path):
    out, _ = bert_run
    rc, text, err = run("finetune", "--task", "classification", "--train", _tiny_tsv(tmp_path),
                        "--model", out / "model", "--fast", "--device", DEVICE,
                        "--output-dir", tmp_path / "ft", "--no-progress")
    assert rc == 0, err
    assert "BERT body of the bert-for-masked-lm model" in text


def _tiny_tsv(tmp_path):
    rows = ["text\tlabel"] + [f"{w} is good\tpos" if i % 2 else f"{w} is bad\tneg"
                              for i, w in enumerate(["ROMEO", "JULIET", "the king", "a fool"] * 6)]
    p = tmp_path / "tiny.tsv"
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return p


def test_validation_masks_15_percent_whatever_the_training_rate(monkeypatch, tmp_path):
    """Validation losses of runs with different --mlm-probability stay comparable."""
    need_shakespeare()
    made = []
    real = tasks._MLMWindows

    def spy(stream, block_size, n, seed, tok, mlm_probability=0.15):
        made.append((n, mlm_probability))
        return real(stream, block_size, n, seed, tok, mlm_probability)

    monkeypatch.setattr(tasks, "_MLMWindows", spy)
    cfg = tasks.PretrainConfig(model_type="bert", output_dir=str(tmp_path), mlm_probability=0.3,
                               device=DEVICE, progress=False,
                               **{**cli.PRETRAIN_FAST, "max_steps": 2, "save_steps": 2,
                                  "eval_steps": 2})
    tasks.pretrain(cfg, log=lambda *a: None)
    assert made == [(2 * cfg.batch_size, 0.3), (cfg.eval_batches * cfg.batch_size, 0.15)]
    assert tasks.PretrainConfig().mlm_probability == 0.4
