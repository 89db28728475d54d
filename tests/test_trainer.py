"""The Trainer: exact resume, history files, plots, early stopping, rotation, validation."""
import csv
import json
import math
import warnings

import numpy as np
import pytest

import minillm as mm
from minillm.training import (Trainer, TrainerCallback, TrainingArguments, load_checkpoint,
                              plot_history)

TEXT = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
        "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles "
        "and by opposing end them. ") * 3
CHARS = sorted(set(TEXT))
IDS = np.array([CHARS.index(c) for c in TEXT], dtype=np.int64)
BLOCK = 8


def windows(n, seed=0, as_dict=False):
    """``n`` random (x, y) windows of the text (a list dataset)."""
    starts = np.random.default_rng(seed).integers(0, len(IDS) - BLOCK - 1, n)
    out = []
    for s in starts:
        x, y = IDS[s:s + BLOCK], IDS[s + 1:s + 1 + BLOCK]
        out.append({"ids": x, "targets": y} if as_dict else (x, y))
    return out


def tiny_gpt(seed=0, dropout=0.1):
    mm.manual_seed(seed)
    return mm.models.GPT(mm.models.GPTConfig(vocab_size=len(CHARS), block_size=BLOCK, n_layer=1,
                                             n_head=2, n_embd=16, dropout=dropout, bias=True))


def args_for(out, **kw):
    base = dict(output_dir=str(out), max_steps=20, per_device_train_batch_size=8,
                per_device_eval_batch_size=16, learning_rate=3e-3, warmup_steps=3,
                lr_scheduler_type="cosine", weight_decay=0.1, max_grad_norm=0.5,
                gradient_accumulation_steps=2, save_steps=3, logging_steps=1, seed=7,
                disable_tqdm=True)
    base.update(kw)
    return TrainingArguments(**base)


class Interrupt(Exception):
    pass


class CrashAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, trainer, state, path):
        if state.global_step == self.step:
            raise Interrupt(f"simulated crash after saving {path}")


def _params(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


# 200 windows, batches of 8, accumulation 2: 25 micro-batches = 13 steps per epoch (the last
# step of an epoch has one micro-batch). Interrupt mid-epoch (9) and at the epoch's end (13).
@pytest.mark.parametrize("k, save_steps", [(9, 3), (13, 13)])
def test_resume_is_bit_identical(tmp_path, k, save_steps):
    train = windows(200)
    full_model = tiny_gpt()
    full = Trainer(full_model, args_for(tmp_path / "full", save_steps=save_steps),
                   train_dataset=train)
    full.train()

    model = tiny_gpt()
    interrupted = Trainer(model, args_for(tmp_path / "run", save_steps=save_steps,
                                          save_total_limit=2),
                          train_dataset=train, callbacks=[CrashAt(k)])
    with pytest.raises(Interrupt):
        interrupted.train()
    assert interrupted.state.global_step == k

    # a new process: new model (another init), new optimizer, scheduler and RNG state
    resumed_model = tiny_gpt(seed=123)
    mm.manual_seed(999)
    resumed = Trainer(resumed_model, args_for(tmp_path / "run", save_steps=save_steps,
                                              save_total_limit=2),
                      train_dataset=train)
    state = resumed.train(resume_from_checkpoint=True)
    assert state.global_step == 20

    # Bit-identical on every device: on a GPU too, since the embedding and indexing
    # backwards sum in a fixed order there (no atomic scatter-add).
    def same(x, y, what):
        assert np.array_equal(x, y), what

    a, b = _params(full_model), _params(resumed_model)
    assert a.keys() == b.keys()
    for name in a:
        same(a[name], b[name], name)
    sa, sb = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        for key, v in sa["state"][i].items():
            same(np.asarray(v), np.asarray(sb["state"][i][key]), (i, key))
    same(np.array([h["loss"] for h in full.state.history]),
         np.array([h["loss"] for h in state.history]), "loss history")
    assert len(state.history) == 20
    assert full.state.history == state.history
    with open(tmp_path / "run" / "history.json", encoding="utf-8") as f:
        assert json.load(f) == full.state.history
    # rotation: the last two checkpoints survive
    names = sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("check"))
    assert len(names) == 2 and "checkpoint-20" in names


class StartScale(TrainerCallback):
    """Start the loss scale at ``scale`` in a fresh run (not in a resumed one)."""

    def __init__(self, scale):
        self.scale = scale

    def on_train_begin(self, trainer, state):
        if state.global_step == 0:
            trainer.mixed_precision.scaler.update(new_scale=self.scale)


def test_fp16_resume_is_bit_identical(tmp_path):
    """fp16=True: interrupted at step 9 and resumed, the run ends bit-identical (cpu/fake).

    The loss scale starts at 2**20, so the first steps overflow and are skipped (the
    scheduler waits too): the skip path, the scale and the skip count go through the
    checkpoint as well. dropout=0: the random generators draw float32/float64 only.
    """
    train = windows(200)

    def run(out, model, callbacks=()):
        return Trainer(model, args_for(out, fp16=True, save_total_limit=2),
                       train_dataset=train, callbacks=[StartScale(2.0 ** 20), *callbacks])

    full_model = tiny_gpt(dropout=0.0)
    full = run(tmp_path / "full", full_model)
    full.train()
    hist = full.state.history
    assert hist[0]["skipped_steps"] == 1 and hist[-1]["skipped_steps"] >= 2
    assert hist[-1]["skipped_steps"] < 10 and hist[-1]["loss_scale"] < 2.0 ** 20
    assert hist[0]["learning_rate"] == hist[1]["learning_rate"] == 0.0   # warmup waited

    interrupted = run(tmp_path / "run", tiny_gpt(dropout=0.0), [CrashAt(9)])
    with pytest.raises(Interrupt):
        interrupted.train()
    resumed_model = tiny_gpt(seed=123, dropout=0.0)
    mm.manual_seed(999)
    resumed = run(tmp_path / "run", resumed_model)
    state = resumed.train(resume_from_checkpoint=True)
    assert state.global_step == 20

    assert full.state.history == state.history
    assert resumed.mixed_precision.scaler.state_dict() == full.mixed_precision.scaler.state_dict()
    for name, a in _params(full_model).items():                 # the float16 model
        assert a.dtype == np.float16 and np.array_equal(a, _params(resumed_model)[name]), name
    a, b = full.mixed_precision.state_dict(), resumed.mixed_precision.state_dict()
    for name in a:                                              # the float32 masters
        assert np.array_equal(a[name].numpy(), b[name].numpy()), name
    sa, sb = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    for i in sa["state"]:
        for key, v in sa["state"][i].items():
            assert np.array_equal(np.asarray(v), np.asarray(sb["state"][i][key])), (i, key)


def test_history_files_plot_and_eval(tmp_path):
    train, val = windows(64, seed=1, as_dict=True), windows(24, seed=2, as_dict=True)
    model = tiny_gpt(dropout=0.0)
    args = args_for(tmp_path, max_steps=6, eval_steps=3, save_steps=3, logging_steps=2,
                    gradient_accumulation_steps=1)
    trainer = Trainer(model, args, train_dataset=train, eval_dataset=val)
    trainer.train()
    hist = trainer.state.history
    train_logs = [h for h in hist if "loss" in h]
    evals = [h for h in hist if "eval_loss" in h]
    assert [h["step"] for h in train_logs] == [2, 4, 6]
    assert [h["step"] for h in evals] == [3, 6]
    assert all(math.isclose(h["eval_perplexity"], math.exp(h["eval_loss"])) for h in evals)
    assert train_logs[-1]["tokens_seen"] == 6 * 8 * BLOCK
    with open(tmp_path / "history.json", encoding="utf-8") as f:
        assert json.load(f) == hist
    with open(tmp_path / "history.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(hist) and "eval_loss" in rows[0] and "learning_rate" in rows[0]
    m = trainer.evaluate()
    assert m["eval_loss"] == pytest.approx(evals[-1]["eval_loss"], rel=1e-6)
    png = tmp_path / "curves.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_history(hist, png)
        plot_history(tmp_path / "history.json", tmp_path / "again.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the best checkpoint is tracked via the eval metric
    assert trainer.state.best_step in (3, 6)
    load_checkpoint(tmp_path / f"checkpoint-{trainer.state.best_step}", tiny_gpt())


def test_early_stopping(tmp_path):
    calls = []

    class Hooks(TrainerCallback):
        def on_step_end(self, trainer, state, logs=None):
            calls.append(("step", state.global_step))

        def on_evaluate(self, trainer, state, metrics):
            calls.append(("eval", state.global_step))

        def on_save(self, trainer, state, path):
            calls.append(("save", state.global_step))

    args = args_for(tmp_path, max_steps=50, eval_steps=1, save_steps=None,
                    early_stopping_patience=2, metric_for_best_model="eval_const")
    trainer = Trainer(tiny_gpt(), args, train_dataset=windows(64), eval_dataset=windows(8),
                      compute_metrics=lambda model, loader: {"const": 1.0}, callbacks=[Hooks()])
    state = trainer.train()
    assert state.global_step == 3                 # best at 1, no improvement at 2 and 3
    assert calls[:3] == [("step", 1), ("eval", 1), ("step", 2)]
    assert calls[-1] == ("save", 3)               # the final checkpoint


def test_gradient_accumulation_matches_big_batch(tmp_path):
    data = windows(32)
    results = []
    for bs, gas in ((8, 1), (4, 2)):
        model = tiny_gpt(dropout=0.0)
        t = Trainer(model, args_for(tmp_path / f"{bs}", max_steps=4, max_grad_norm=None,
                                    per_device_train_batch_size=bs,
                                    gradient_accumulation_steps=gas, save_steps=None),
                    train_dataset=data)
        t.train()
        results.append(_params(model))
    # float32 sums in another order: Adam's step (about lr whatever the gradient's size) can
    # flip the sign of a parameter within ~1e-6 of zero (seen on an H100), so atol is 5e-6;
    # a wrong accumulation moves parameters by about lr = 3e-3 per step.
    for name in results[0]:
        np.testing.assert_allclose(results[0][name], results[1][name], rtol=2e-4, atol=5e-6)


def test_no_weight_decay_on_biases_and_norms(tmp_path):
    t = Trainer(tiny_gpt(), args_for(tmp_path, weight_decay=0.3), train_dataset=windows(16))
    opt = t.create_optimizer()
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.3 and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim < 2 for p in no_decay["params"])


def test_loss_contract_error(tmp_path):
    class LogitsOnly(mm.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = mm.nn.Linear(2, 2)

        def forward(self, x, y):
            return self.lin(x)

    data = [(np.ones(2, np.float32), np.zeros(2, np.float32))] * 4
    t = Trainer(LogitsOnly(), args_for(tmp_path, max_steps=1), train_dataset=data)
    with pytest.raises(TypeError, match="compute_loss"):
        t.train()
    ok = Trainer(LogitsOnly(), args_for(tmp_path / "ok", max_steps=2, save_steps=None),
                 train_dataset=data,
                 compute_loss=lambda m, b: ((m(*b) - b[1]) ** 2).mean())
    assert ok.train().global_step == 2


def test_resume_without_checkpoint_is_clear(tmp_path):
    t = Trainer(tiny_gpt(), args_for(tmp_path), train_dataset=windows(16))
    with pytest.raises(ValueError, match="no valid checkpoint"):
        t.train(resume_from_checkpoint=True)


@pytest.mark.parametrize("kw, match", [
    ({"max_steps": 0}, "max_steps"),
    ({"max_steps": -1, "num_train_epochs": 0}, "num_train_epochs"),
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
    ({"gradient_accumulation_steps": 1.5}, "gradient_accumulation_steps"),
    ({"warmup_ratio": 1.0}, "warmup_ratio"),
    ({"lr_scheduler_type": "cosinus"}, "lr_scheduler_type"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"adam_beta2": 1.0}, "adam_beta2"),
    ({"max_grad_norm": 0}, "max_grad_norm"),
    ({"save_total_limit": 0}, "save_total_limit"),
    ({"early_stopping_patience": 2, "eval_steps": None}, "eval_steps"),
    ({"seed": True}, "seed"),
])
def test_argument_validation(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        args_for(tmp_path, **kw)


def test_trainer_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="TrainingArguments"):
        Trainer(tiny_gpt(), {"output_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="eval_dataset"):
        Trainer(tiny_gpt(), args_for(tmp_path, eval_steps=1, early_stopping_patience=1),
                train_dataset=windows(8))
    with pytest.raises(TypeError, match="train_dataset"):
        Trainer(tiny_gpt(), args_for(tmp_path), train_dataset=5)


def test_device_argument_and_tuple_batches(tmp_path):
    from conftest import DEVICE
    other = "cpu" if DEVICE != "cpu" else "fake"
    mm.set_default_device(other)               # the Trainer's device wins over the default
    model = tiny_gpt(dropout=0.0)
    t = Trainer(model, args_for(tmp_path, max_steps=2, device=DEVICE, save_steps=None),
                train_dataset=windows(16), eval_dataset=windows(8))
    t.train()
    assert all(p.device == DEVICE for p in model.parameters())
    assert mm.get_default_device() == other
    assert math.isfinite(t.evaluate()["eval_loss"])
