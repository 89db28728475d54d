"""Checkpoints: round trip (model, optimizer, scheduler, RNG, trainer state), atomic writes,
corruption detection, CheckpointManager rotation and fallback to the last valid checkpoint."""
import json
import os

import numpy as np
import pytest

import minillm as mm
from minillm import backend
from minillm.training import (CheckpointError, CheckpointManager, load_checkpoint,
                              save_checkpoint, verify_checkpoint)
from minillm.training import checkpoint as ckpt_mod

from conftest import DEVICE


def _model(seed=0):
    mm.manual_seed(seed)
    return mm.models.GPT(mm.models.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2,
                                             n_embd=8, dropout=0.1, bias=True))


def _setup(seed=0):
    model = _model(seed)
    opt = mm.optim.AdamW(model.parameters(), lr=1e-2)
    sched = mm.optim.get_cosine_schedule_with_warmup(opt, 2, 10)
    return model, opt, sched


def _train_steps(model, opt, sched, n):
    rng = np.random.default_rng(1)
    for _ in range(n):
        x = mm.tensor(rng.integers(0, 11, (2, 8)))
        y = mm.tensor(rng.integers(0, 11, (2, 8)))
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def _params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _opt_arrays(opt):
    sd = opt.state_dict()
    return {(i, k): v for i, s in sd["state"].items() for k, v in s.items()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])), k


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched = _setup()
    _train_steps(model, opt, sched, 3)
    gen = backend.generator(DEVICE)
    gen.random((5,))                                   # move the RNG away from its seed
    path = save_checkpoint(tmp_path, model, opt, sched,
                           trainer_state={"global_step": 3, "epoch": 1, "batch_in_epoch": 4,
                                          "history": [{"step": 1, "loss": 2.5}]})
    assert path == tmp_path / "checkpoint-3"
    names = sorted(os.listdir(path))
    assert names == sorted(["config.json", "model.npz", "optimizer.npz", "optimizer.json",
                            "scheduler.json", "rng_state.json", "trainer_state.json",
                            "manifest.json"])
    expected_next = backend.to_host(gen.random((4,)))
    saved_params, saved_opt = _params(model), _opt_arrays(opt)
    saved_lr = sched.get_last_lr()

    model2, opt2, sched2 = _setup(seed=5)              # different init, fresh state
    gen.random((7,))
    state = load_checkpoint(path, model2, opt2, sched2)
    _assert_same_state(_params(model2), saved_params)
    _assert_same_state(_opt_arrays(opt2), saved_opt)
    assert sched2.get_last_lr() == saved_lr and sched2.last_epoch == sched.last_epoch
    assert [g["lr"] for g in opt2.param_groups] == saved_lr
    assert np.array_equal(backend.to_host(gen.random((4,))), expected_next)
    assert state["global_step"] == 3 and state["epoch"] == 1 and state["batch_in_epoch"] == 4
    assert state["history"] == [{"step": 1, "loss": 2.5}]
    # the checkpoint is also a model directory
    again = mm.models.GPT.from_pretrained(path, device=DEVICE)
    _assert_same_state(_params(again), saved_params)
    # and training (with dropout) continues identically from both, given the same RNG state
    rng_state = gen.get_state()
    _train_steps(model, opt, sched, 2)
    gen.set_state(rng_state)
    _train_steps(model2, opt2, sched2, 2)
    _assert_same_state(_params(model2), _params(model))


def test_no_pickle_in_checkpoint(tmp_path):
    model, opt, sched = _setup()
    _train_steps(model, opt, sched, 1)
    path = save_checkpoint(tmp_path, model, opt, sched, step=1)
    for name in ("model.npz", "optimizer.npz"):
        with np.load(path / name, allow_pickle=False) as npz:
            for k in npz.files:
                assert npz[k].dtype != object
    for name in ("optimizer.json", "scheduler.json", "rng_state.json", "manifest.json"):
        with open(path / name, encoding="utf-8") as f:
            json.load(f)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_corrupt_file_is_named_and_nothing_changes(tmp_path, damage):
    model, opt, sched = _setup()
    _train_steps(model, opt, sched, 2)
    path = save_checkpoint(tmp_path, model, opt, sched, step=2)
    target = path / ("optimizer.npz" if damage == "delete" else "model.npz")
    if damage == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[:len(data) // 2])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        target.unlink()
    model2, opt2, sched2 = _setup(seed=3)
    _train_steps(model2, opt2, sched2, 1)
    before_p, before_o, before_lr = _params(model2), _opt_arrays(opt2), sched2.get_last_lr()
    with pytest.raises(CheckpointError, match=target.name):
        load_checkpoint(path, model2, opt2, sched2)
    _assert_same_state(_params(model2), before_p)
    _assert_same_state(_opt_arrays(opt2), before_o)
    assert sched2.get_last_lr() == before_lr


def test_missing_manifest_and_missing_dir(tmp_path):
    model, opt, sched = _setup()
    path = save_checkpoint(tmp_path, model, step=0)
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest.json"):
        verify_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "checkpoint-99", model)


def test_mismatched_model_rolls_back(tmp_path):
    model, opt, sched = _setup()
    _train_steps(model, opt, sched, 1)
    path = save_checkpoint(tmp_path, model, opt, sched, step=1)
    other = mm.models.GPT(mm.models.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2,
                                              n_embd=12, dropout=0.1))
    before = _params(other)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path, other)
    _assert_same_state(_params(other), before)


def test_failure_while_saving_leaves_previous_intact(tmp_path, monkeypatch):
    model, opt, sched = _setup()
    mgr = CheckpointManager(tmp_path, keep_last=1)
    first = mgr.save(model, opt, sched, {"global_step": 1})
    _train_steps(model, opt, sched, 1)
    real = ckpt_mod._write_json
    calls = []

    def failing(path, obj):
        calls.append(path)
        if path.name == "scheduler.json":
            raise OSError("disk full (simulated)")
        return real(path, obj)

    monkeypatch.setattr(ckpt_mod, "_write_json", failing)
    with pytest.raises(OSError, match="disk full"):
        mgr.save(model, opt, sched, {"global_step": 2})
    assert calls, "the monkeypatched writer was not used"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1"]      # no partial dir, no temp dir
    assert mgr.latest() == first
    verify_checkpoint(first)


def test_latest_skips_corrupt_newest(tmp_path):
    model, opt, sched = _setup()
    mgr = CheckpointManager(tmp_path, keep_last=3)
    for step in (1, 2, 3):
        _train_steps(model, opt, sched, 1)
        mgr.save(model, opt, sched, {"global_step": step})
    assert mgr.latest() == tmp_path / "checkpoint-3"
    w = tmp_path / "checkpoint-3" / "model.npz"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.warns(UserWarning, match="model.npz"):
        latest = mgr.latest()
    assert latest == tmp_path / "checkpoint-2"
    assert mgr.corrupt and mgr.corrupt[0][0] == tmp_path / "checkpoint-3"
    load_checkpoint(latest, model, opt, sched)                   # the previous one works


def test_rotation_keeps_last_n_and_best(tmp_path):
    model = _model()
    mgr = CheckpointManager(tmp_path, keep_last=2, metric="eval_loss")
    losses = {1: 3.0, 2: 1.0, 3: 2.0, 4: 2.5, 5: 2.2}
    for step, loss in losses.items():
        mgr.save(model, trainer_state={"global_step": step}, metrics={"eval_loss": loss})
    assert [p.name for p in mgr.checkpoints()] == ["checkpoint-2", "checkpoint-4",
                                                  "checkpoint-5"]
    assert mgr.best() == tmp_path / "checkpoint-2"
    hi = CheckpointManager(tmp_path / "hi", keep_last=1, metric="acc", greater_is_better=True)
    for step, acc in {1: 0.5, 2: 0.9, 3: 0.7}.items():
        hi.save(model, trainer_state={"global_step": step}, metrics={"acc": acc})
    assert [p.name for p in hi.checkpoints()] == ["checkpoint-2", "checkpoint-3"]
    nobest = CheckpointManager(tmp_path / "nb", keep_last=1, keep_best=False)
    for step in (1, 2, 3):
        nobest.save(model, trainer_state={"global_step": step}, metrics={"eval_loss": -step})
    assert [p.name for p in nobest.checkpoints()] == ["checkpoint-3"]


def test_resave_same_step_replaces_atomically(tmp_path):
    model = _model()
    save_checkpoint(tmp_path, model, step=4)
    with mm.no_grad():
        for p in model.parameters():
            p.data = p.data * 0 + 1
    path = save_checkpoint(tmp_path, model, step=4)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4"]
    m2 = _model(seed=9)
    load_checkpoint(path, m2)
    assert all(np.all(v.numpy() == 1) for v in m2.state_dict().values())


def test_argument_errors(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path, model, step=-1)
    path = save_checkpoint(tmp_path, model, step=0)
    opt = mm.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match="optimizer"):
        load_checkpoint(path, model, opt)


# -- mixed precision ------------------------------------------------------------------------------
def _mp_setup(seed=0, **scaler_kw):
    """A float16 GPT with float32 masters (dropout 0: the generators draw float32/64 only)."""
    from minillm.training import GradScaler, MixedPrecision
    mm.manual_seed(seed)
    model = mm.models.GPT(mm.models.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2,
                                              n_embd=8, dropout=0.0, bias=True))
    opt = mm.optim.AdamW(model.parameters(), lr=1e-2)
    sched = mm.optim.get_cosine_schedule_with_warmup(opt, 2, 10)
    return model, opt, sched, MixedPrecision(model, opt, GradScaler(**scaler_kw))


def _mp_train_steps(model, mp, sched, n):
    rng = np.random.default_rng(1)
    for _ in range(n):
        x = mm.tensor(rng.integers(0, 11, (2, 8)))
        y = mm.tensor(rng.integers(0, 11, (2, 8)))
        mp.backward(model(x, y)[1])
        mp.step(max_grad_norm=1.0)
        sched.step()


def _masters(mp):
    return {k: v.numpy().copy() for k, v in mp.state_dict().items()}


def test_mixed_precision_round_trip(tmp_path):
    model, opt, sched, mp = _mp_setup(init_scale=2.0 ** 10, growth_interval=2)
    _mp_train_steps(model, mp, sched, 3)
    assert mp.get_scale() == 2.0 ** 11                          # the scaler state moved
    path = save_checkpoint(tmp_path, model, opt, sched, step=3, mixed_precision=mp)
    assert "scaler.json" in os.listdir(path)
    saved, saved_opt, saved_scaler = _masters(mp), _opt_arrays(opt), mp.scaler.state_dict()
    with np.load(path / "model.npz", allow_pickle=False) as npz:   # the float32 masters
        _assert_same_state({k: npz[k] for k in npz.files}, saved)
        assert all(npz[k].dtype == np.float32 for k in npz.files)

    model2, opt2, sched2, mp2 = _mp_setup(seed=5)
    load_checkpoint(path, model2, opt2, sched2, mixed_precision=mp2)
    _assert_same_state(_masters(mp2), saved)
    _assert_same_state(_params(model2), _params(model))         # float16 = rounded masters
    assert all(v.dtype == np.float16 for v in _params(model2).values())
    _assert_same_state(_opt_arrays(opt2), saved_opt)
    assert mp2.scaler.state_dict() == saved_scaler
    # both go on identically
    _mp_train_steps(model, mp, sched, 2)
    _mp_train_steps(model2, mp2, sched2, 2)
    _assert_same_state(_masters(mp2), _masters(mp))
    # a float32 model reads the same checkpoint
    plain = _model(seed=7)
    load_checkpoint(path, plain)
    _assert_same_state(_params(plain), saved)


def test_mixed_precision_load_rolls_back_and_accepts_float32_checkpoints(tmp_path):
    model, opt, sched, mp = _mp_setup(init_scale=4.0)
    before, scaler_before = _masters(mp), mp.scaler.state_dict()
    half_before = _params(model)
    other = mm.models.GPT(mm.models.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2,
                                              n_embd=12, dropout=0.0))
    path = save_checkpoint(tmp_path / "other", other, step=1)
    with pytest.warns(UserWarning, match="scaler.json"), \
            pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path, mixed_precision=mp)
    _assert_same_state(_masters(mp), before)
    _assert_same_state(_params(model), half_before)
    assert mp.scaler.state_dict() == scaler_before
    # a float32 run's checkpoint (no scaler.json): the masters load, the scaler stays
    f32 = _model(seed=3)
    path = save_checkpoint(tmp_path / "f32", f32, step=1)
    with pytest.warns(UserWarning, match="scaler.json"):
        load_checkpoint(path, model, mixed_precision=mp)
    _assert_same_state(_masters(mp), _params(f32))
    assert mp.scaler.state_dict() == scaler_before
    with pytest.raises(ValueError, match="not the model wrapped"):
        load_checkpoint(path, f32, mixed_precision=mp)
