"""A command line that never loses a run (issue 23): every failure a user can cause -- a bad
option, a missing file or model, a directory holding another run, a diverged run, a full or
read-only disk, Ctrl-C -- ends in ONE line on stderr (``minillm: error: ...``), exit status 2
(130 for Ctrl-C), no traceback, and leaves the output directory byte for byte as it was.

Every case runs through the real entry point, ``cli.main([...])``, in-process, at ``--fast``
size on a tiny corpus.
"""
import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
from minillm.apps import cli, tasks
from minillm.training import Trainer

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")
WORDS = "the cat sat on a mat and a dog ran far away from home".split()


# -- fixtures: a corpus, a labelled file, one finished pretrain run -------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """``{name: path}``: corpus.txt, train.tsv, a pretrain run, the same with NaN weights,
    the same with every checkpoint damaged, and a plain file."""
    root = tmp_path_factory.mktemp("cli_errors")
    rng = np.random.default_rng(0)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS, 12)) for _ in range(300)),
                      encoding="utf-8")
    tsv = root / "train.tsv"
    rows = [f"{'good fine nice' if i % 2 else 'bad poor awful'} {WORDS[i % 9]}\t"
            f"{'pos' if i % 2 else 'neg'}" for i in range(40)]
    tsv.write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    run = root / "run"
    code = main("pretrain", "--fast", "--train", corpus, "--output-dir", run, "--no-progress",
                "--device", DEVICE, "--seed", 1)
    assert code == 0
    return {"corpus": corpus, "tsv": tsv, "run": run, "nan_run": _nan_copy(run, root),
            "corrupt_run": _corrupt_copy(run, root), "file": corpus, "root": root}


def main(*argv):
    """``cli.main`` on ``argv`` (argparse's own exits become their status)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    mm.set_default_device(DEVICE)
    return code


def _nan_copy(run, root):
    """A copy of ``run`` whose model weights are all NaN (what a diverged run used to save)."""
    bad = root / "nan_run"
    shutil.copytree(run / "model", bad)
    weights = np.load(bad / "model.npz")
    np.savez(bad / "model.npz", **{k: np.full_like(weights[k], np.nan) for k in weights.files})
    return bad


def _corrupt_copy(run, root):
    """A copy of ``run`` in which every checkpoint's weights file is cut short."""
    bad = root / "corrupt_run"
    shutil.copytree(run, bad)
    for ckpt in bad.glob("checkpoint-*"):
        npz = ckpt / "model.npz"
        npz.write_bytes(npz.read_bytes()[:100])
    return bad


def snapshot(path):
    """``{relative path: bytes}`` of every file under ``path`` (None if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


# -- the table: arguments -> the words of the one-line error ---------------------------------
# {out}: the output directory of the case, prepared as OUT says; other {names}: `data` paths
PRE = ("pretrain", "--fast", "--train", "{corpus}", "--no-progress", "--output-dir", "{out}")
FT = ("finetune", "--task", "classification", "--train", "{tsv}", "--fast", "--no-progress",
      "--output-dir", "{out}")
GEN = ("generate", "--model", "{run}", "--output-dir", "{out}")


@dataclasses.dataclass
class Case:
    argv: tuple
    words: str                 # what the error line must say
    out: str = "fresh"         # fresh (absent), empty, run (a copy of the finished run)
    code: int = 2


CASES = {
    # 1. a directory holding another run, --resume, --overwrite
    "reused output dir": Case(PRE + ("--seed", 2), "holds another run", "run"),
    "reused dir, finetune": Case(FT, "holds another run", "run"),
    "resume other settings": Case(PRE + ("--seed", 2, "--resume"),
                                  "made with other settings: seed 1 (now 2)", "run"),
    "resume a run of another kind": Case(FT + ("--resume",), "holds a pretrain run", "run"),
    "resume empty dir": Case(PRE + ("--resume",), "no checkpoint in", "empty"),
    "resume every ckpt corrupt": Case(PRE[:-1] + ("{corrupt_run}", "--seed", 1, "--resume"),
                                      "every checkpoint in", "run"),
    "resume missing ckpt": Case(PRE + ("--resume", "{root}/checkpoint-9"),
                                "not a usable checkpoint", "run"),
    "resume and overwrite": Case(PRE + ("--resume", "--overwrite"), "give one of them", "run"),
    "typo in --train, overwrite": Case(("pretrain", "--fast", "--train", "{root}/nope.txt",
                                        "--output-dir", "{out}", "--overwrite"),
                                       "--train", "run"),
    "typo in finetune --train": Case(FT[:4] + ("{root}/nope.tsv",) + FT[5:] + ("--overwrite",),
                                     "no such file", "run"),
    "output dir is a file": Case(PRE[:-1] + ("{file}",), "is a file"),
    # 2. divergence
    "diverged run": Case(PRE + ("--max-steps", 30, "--learning-rate", 1e6, "--max-grad-norm",
                                1e30, "--warmup-steps", 0), "training diverged at step"),
    "infinite learning rate": Case(PRE + ("--learning-rate", "inf"), "learning_rate"),
    "generate from NaN weights": Case(("generate", "--model", "{nan_run}", "--max-new-tokens",
                                       3), "not finite"),
    "generate temperature nan": Case(GEN + ("--temperature", "nan"), "--temperature"),
    # 3. option values: pretrain
    "pretrain seed abc": Case(PRE + ("--seed", "abc"), "invalid int value: 'abc'"),
    "pretrain unknown option": Case(PRE + ("--n-heads", 2), "unrecognized arguments"),
    "pretrain dropout 1.5": Case(PRE + ("--dropout", 1.5), "dropout must be"),
    "pretrain seed -1": Case(PRE + ("--seed", -1), "seed must be"),
    "pretrain n-head 3": Case(PRE + ("--n-head", 3), "must divide n_embd"),
    "pretrain save-steps 0": Case(PRE + ("--save-steps", 0), "save_steps must be"),
    "pretrain weight-decay nan": Case(PRE + ("--weight-decay", "nan"), "weight_decay must be"),
    "pretrain bpe vocab 3": Case(PRE + ("--tokenizer", "bpe", "--vocab-size", 3),
                                 "vocab_size must be >= 263"),
    "pretrain top-k 0": Case(PRE + ("--top-k", 0), "top_k must be"),
    "pretrain max-steps 0": Case(PRE + ("--max-steps", 0), "max_steps must be"),
    "pretrain warmup -1": Case(PRE + ("--warmup-steps", -1), "warmup_steps must be"),
    "pretrain max-grad-norm 0": Case(PRE + ("--max-grad-norm", 0), "max_grad_norm must be"),
    "pretrain min-lr-ratio 0": Case(PRE + ("--min-lr-ratio", 0), "min_lr_ratio must be"),
    "pretrain block-size 0": Case(PRE + ("--block-size", 0), "block_size must be"),
    "pretrain eval-batches 0": Case(PRE + ("--eval-batches", 0), "eval_batches must be"),
    "pretrain sample-tokens -1": Case(PRE + ("--sample-tokens", -1), "sample_tokens must be"),
    "pretrain missing model": Case(PRE + ("--model", "{root}/none"), "no such model directory"),
    # 3. option values: finetune
    "finetune dropout 1.5": Case(FT + ("--dropout", 1.5), "dropout must be"),
    "finetune seed -1": Case(FT + ("--seed", -1), "seed must be"),
    "finetune scheduler foo": Case(FT + ("--lr-scheduler-type", "foo"),
                                   "lr_scheduler_type must be one of"),
    "finetune n-head 3": Case(FT + ("--n-head", 3), "must divide n_embd"),
    "finetune warmup-ratio 5": Case(FT + ("--warmup-ratio", 5), "warmup_ratio must be"),
    "finetune weight-decay nan": Case(FT + ("--weight-decay", "nan"), "weight_decay must be"),
    "finetune bpe vocab 3": Case(FT + ("--tokenizer", "bpe", "--vocab-size", 3),
                                 "vocab_size must be >= 263"),
    "finetune learning-rate -1": Case(FT + ("--learning-rate", -1), "learning_rate must be"),
    "finetune epochs 0": Case(FT + ("--num-train-epochs", 0), "num_train_epochs must be"),
    "finetune eval-steps 0": Case(FT + ("--eval-steps", 0), "eval_steps must be"),
    "finetune lora-r 0": Case(FT + ("--method", "lora", "--lora-r", 0), "lora_r must be"),
    "finetune distill-alpha 2": Case(FT + ("--teacher", "{run}", "--distill-alpha", 2),
                                     "distill_alpha must be"),
    "finetune patience 0": Case(FT + ("--early-stopping-patience", 0),
                                "early_stopping_patience must be"),
    "finetune save-total-limit 0": Case(FT + ("--save-total-limit", 0),
                                        "save_total_limit must be"),
    "finetune max-length 0": Case(FT + ("--max-length", 0), "max_length must be"),
    "finetune missing model": Case(FT + ("--model", "{root}/none"), "no such model directory"),
    # 3. option values: generate, evaluate, chat, demo
    "generate top-k 0": Case(GEN + ("--top-k", 0), "--top-k must be"),
    "generate top-p 2": Case(GEN + ("--top-p", 2), "--top-p must be"),
    "generate temperature -1": Case(GEN + ("--temperature", -1), "--temperature must be"),
    "generate max-new-tokens -1": Case(GEN + ("--max-new-tokens", -1), "--max-new-tokens"),
    "generate num-samples 0": Case(GEN + ("--num-samples", 0), "--num-samples must be"),
    "generate missing model": Case(("generate", "--model", "{root}/none"),
                                   "no such model directory"),
    "evaluate max-examples 0": Case(("evaluate", "--model", "{run}", "--dataset", "sst2",
                                     "--max-examples", 0, "--output-dir", "{out}"),
                                    "--max-examples must be"),
    "evaluate prune 1": Case(("evaluate", "--model", "{run}", "--dataset", "sst2", "--prune",
                              1), "--prune must be"),
    "chat temperature nan": Case(("chat", "--model", "{run}", "--temperature", "nan",
                                  "--prompt", "hi"), "--temperature must be"),
    "chat port 70000": Case(("chat", "--model", "{run}", "--web", "--port", 70000), "--port"),
    "demo hidden 0": Case(("demo", "--mlp", "--hidden", 0, "--output-dir", "{out}"),
                          "--hidden must be"),
    "demo lr nan": Case(("demo", "--mlp", "--lr", "nan", "--output-dir", "{out}"),
                        "--lr must be"),
}


def _prepare(case, data, tmp_path):
    """The case's output directory, and its arguments with every {name} filled in."""
    out = tmp_path / "out"
    if case.out == "run":
        shutil.copytree(data["run"], out)
    elif case.out == "empty":
        out.mkdir()
    names = {**{k: str(v) for k, v in data.items()}, "out": str(out)}
    return out, [str(a).format(**names) for a in case.argv]


def check_failure(capsys, code, want_code, words):
    """Exit status, exactly one stderr line that says ``words``, no traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == want_code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("minillm: error: ") and words in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", list(CASES))
def test_a_failure_is_one_line_and_changes_nothing(name, data, tmp_path, capsys):
    case = CASES[name]
    out, argv = _prepare(case, data, tmp_path)
    watched = [out, data["run"], data["corrupt_run"]]
    before = [snapshot(p) for p in watched]
    code = main(*argv)
    check_failure(capsys, code, case.code, case.words)
    assert [snapshot(p) for p in watched] == before


# -- disk full, read-only, Ctrl-C: the run directory survives --------------------------------
def _raise(error):
    def fail(*args, **kwargs):
        raise error
    return fail


@pytest.mark.parametrize("error, words", [
    (OSError(errno.ENOSPC, "No space left on device", "config.json"), "No space left"),
    (OSError(errno.EROFS, "Read-only file system", "config.json"), "read-only"),
    (OSError(errno.EACCES, "Permission denied", "config.json"), "permissions"),
])
def test_a_failed_write_keeps_the_run_it_would_replace(error, words, data, tmp_path,
                                                       monkeypatch, capsys):
    out, argv = _prepare(Case(PRE + ("--overwrite", "--seed", 2), "", "run"), data, tmp_path)
    before = snapshot(out)
    monkeypatch.setattr(tasks, "atomic_write_json", _raise(error))
    check_failure(capsys, main(*argv), 2, words)
    assert snapshot(out) == before


def test_ctrl_c_before_training_keeps_the_old_run(data, tmp_path, monkeypatch, capsys):
    out, argv = _prepare(Case(PRE + ("--overwrite",), "", "run"), data, tmp_path)
    before = snapshot(out)
    monkeypatch.setattr(Trainer, "train", _raise(KeyboardInterrupt()))
    check_failure(capsys, main(*argv), 130, "interrupted (Ctrl-C) before the first checkpoint")
    assert snapshot(out) == before


def test_ctrl_c_in_training_keeps_the_last_checkpoint(data, tmp_path, monkeypatch, capsys):
    step = Trainer._train_step

    def interrupted_at_8(self, *args):
        if self.state.global_step == 8:
            raise KeyboardInterrupt
        return step(self, *args)
    monkeypatch.setattr(Trainer, "_train_step", interrupted_at_8)
    out = tmp_path / "out"
    code = main(*[str(a).format(corpus=data["corpus"], out=out) for a in PRE])
    check_failure(capsys, code, 130, f"the last checkpoint is {out / 'checkpoint-6'}")
    assert (out / "checkpoint-6" / "model.npz").is_file()
    monkeypatch.undo()
    code = main(*[str(a).format(corpus=data["corpus"], out=out) for a in PRE], "--resume")
    assert code == 0, capsys.readouterr().err
    assert (out / "model" / "model.npz").is_file()


# -- a diverged run keeps its last good checkpoint ------------------------------------------
def test_divergence_stops_at_the_step_and_keeps_finite_checkpoints(data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [str(a).format(corpus=data["corpus"], out=out) for a in PRE]
    code = main(*argv, "--max-steps", 30, "--learning-rate", 1e6, "--max-grad-norm", 1e30,
                "--warmup-steps", 0, "--save-steps", 1)
    check_failure(capsys, code, 2, "the last good checkpoint is")
    assert not (out / "model").exists()
    kept = sorted(out.glob("checkpoint-*"))
    assert kept
    for ckpt in kept:
        weights = np.load(ckpt / "model.npz")
        assert all(np.isfinite(weights[k]).all() for k in weights.files), ckpt


# -- what works: --overwrite, a run directory as --model, temperature 0 ---------------------
def test_overwrite_replaces_the_old_run(data, tmp_path, capsys):
    out, argv = _prepare(Case(PRE + ("--overwrite", "--seed", 2, "--max-steps", 3,
                                     "--save-steps", 3), "", "run"), data, tmp_path)
    assert main(*argv) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["pretrain"]["seed"] == 2
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    assert not list(out.glob(".minillm-replaced-*"))


@pytest.mark.parametrize("argv", [
    ("generate", "--model", "{run}", "--max-new-tokens", 4, "--temperature", 0),
    ("pretrain", "--fast", "--train", "{corpus}", "--model", "{run}", "--max-steps", 2,
     "--no-progress", "--output-dir", "{out}"),
    ("finetune", "--task", "classification", "--train", "{tsv}", "--model", "{run}", "--fast",
     "--max-steps", 2, "--no-progress", "--no-baseline", "--output-dir", "{out}"),
])
def test_a_run_directory_is_a_model_directory(argv, data, tmp_path, capsys):
    _, args = _prepare(Case(argv, ""), data, tmp_path)
    assert main(*args) == 0, capsys.readouterr().err


def test_generate_temperature_0_is_greedy(data, capsys):
    base = ("generate", "--model", data["run"], "--max-new-tokens", 8, "--prompt", "the")
    assert main(*base, "--temperature", 0, "--seed", 1) == 0
    cold = capsys.readouterr().out
    assert main(*base, "--greedy", "--seed", 2) == 0
    assert capsys.readouterr().out == cold


def test_debug_shows_the_traceback(data, tmp_path):
    with pytest.raises(tasks.TaskError, match="dropout"):
        cli.main(["--debug", "pretrain", "--train", str(data["corpus"]), "--dropout", "1.5",
                  "--output-dir", str(tmp_path / "x")])


# -- the Trainer underneath: a non-finite loss or gradient stops the run at its step ---------
def _tiny_trainer(out, compute_loss, **kw):
    mm.manual_seed(0)
    model = mm.models.GPT(mm.models.GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1,
                                              n_embd=8))
    rng = np.random.default_rng(0)
    data = [{"input_ids": rng.integers(0, 5, 4)} for _ in range(16)]
    args = mm.training.TrainingArguments(str(out), max_steps=6, per_device_train_batch_size=4,
                                         save_steps=2, disable_tqdm=True, **kw)
    return mm.training.Trainer(model, args, train_dataset=data, compute_loss=compute_loss)


def _loss_turning(bad, at_step):
    """A language-model loss that becomes ``bad(loss)`` from optimizer step ``at_step`` on."""
    calls = []

    def loss(model, batch):
        calls.append(1)
        ids = batch["input_ids"]
        value = mm.functional.cross_entropy(model(ids).reshape(-1, 5), ids.reshape(-1))
        return bad(value) if len(calls) >= at_step else value
    return loss


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bad, what", [
    (lambda loss: loss * float("nan"), "the training loss is nan"),
    (lambda loss: (loss * 0.0).sqrt(), "the gradient norm is"),      # d sqrt(x)/dx at 0
])
def test_the_trainer_stops_at_the_first_non_finite_step(bad, what, tmp_path):
    """Step 5 diverges: checkpoint-4 (the weights it started from) goes, checkpoint-2 stays."""
    trainer = _tiny_trainer(tmp_path, _loss_turning(bad, at_step=5))
    with pytest.raises(mm.training.TrainingDivergedError,
                       match=f"diverged at step 5: {what}.*last good checkpoint is .*checkpoint-2"):
        trainer.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
