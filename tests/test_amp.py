"""Mixed precision: GradScaler, float32 master weights, float32 islands, the Trainer's fp16.

Every test runs on the test device (cpu or the strict 'fake' stand-in); the transfer count
is checked on 'fake' in both runs. The numbers of float16 these tests rely on: max 65504,
smallest subnormal 2**-24 ~ 6e-8, spacing 2**-10 next to 1 and 8 next to 1e4.
"""
import json
import math

import numpy as np
import pytest

import minillm as mm
import minillm.functional as F
from minillm import backend
from minillm.training import (GradScaler, MixedPrecision, Trainer, TrainingArguments,
                              load_checkpoint)
from minillm.training.amp import half_dtype

from conftest import DEVICE


class Weights(mm.nn.Module):
    """One float32 weight vector; forward returns ``fn(w)``."""

    def __init__(self, values, fn):
        super().__init__()
        self.w = mm.nn.Parameter(mm.tensor(np.asarray(values, dtype=np.float32)))
        self.fn = fn

    def forward(self):
        return self.fn(self.w)


def _grad(p):
    return p.grad.numpy()


# -- bfloat16 / dtype ---------------------------------------------------------------------------
def test_bfloat16_is_a_clear_error():
    for name in ("bfloat16", "bf16"):
        with pytest.raises(ValueError, match="NumPy and CuPy.*no bfloat16.*float16"):
            half_dtype(name)
    with pytest.raises(ValueError, match="no bfloat16"):
        TrainingArguments("out", bf16=True)
    model = Weights([1.0], lambda w: w.sum())
    with pytest.raises(ValueError, match="no bfloat16"):
        MixedPrecision(model, mm.optim.SGD(model.parameters(), lr=0.1), dtype="bfloat16")
    assert half_dtype("fp16") == np.float16 and half_dtype(np.float16) == np.float16
    with pytest.raises(ValueError, match="float16"):
        half_dtype("float32")


def test_mixed_precision_needs_a_float32_model_and_its_optimizer():
    model = Weights([1.0, 2.0], lambda w: w.sum()).to(np.float64)
    with pytest.raises(ValueError, match="float32 model.*float64.*model.float()"):
        MixedPrecision(model, mm.optim.SGD(model.parameters(), lr=0.1))
    model = Weights([1.0, 2.0], lambda w: w.sum())
    other = Weights([1.0], lambda w: w.sum())
    with pytest.raises(ValueError, match="none of the model's parameters"):
        MixedPrecision(model, mm.optim.SGD(other.parameters(), lr=0.1))
    mp = MixedPrecision(model, mm.optim.SGD(model.parameters(), lr=0.1))
    assert model.w.dtype == np.float16 and mp.master_of(model.w).dtype == np.float32
    with pytest.raises(ValueError, match="already.*float16"):           # no double wrap
        MixedPrecision(model, mm.optim.SGD(mp.master_parameters(), lr=0.1))


# -- GradScaler ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_scaler_skips_the_step_on_inf_or_nan_and_halves_the_scale(bad):
    p = mm.nn.Parameter(mm.tensor(np.array([1.0, 2.0, 3.0], dtype=np.float32)))
    opt = mm.optim.SGD([p], lr=0.1)
    scaler = GradScaler(init_scale=8.0, growth_interval=1)    # growth would double a clean step
    p.grad = mm.tensor(np.array([8.0, bad, 8.0], dtype=np.float32))
    assert scaler.step(opt) is None
    scaler.update()
    np.testing.assert_array_equal(p.numpy(), [1.0, 2.0, 3.0])        # untouched
    assert scaler.get_scale() == 4.0 and scaler.skipped_steps == 1 and scaler.last_step_skipped
    # the next, clean step is taken (gradients divided by the new scale 4) and grows the scale
    p.grad = mm.tensor(np.array([4.0, 4.0, 4.0], dtype=np.float32))
    scaler.step(opt)
    scaler.update()
    np.testing.assert_allclose(p.numpy(), [0.9, 1.9, 2.9], rtol=1e-6)
    assert scaler.get_scale() == 8.0 and scaler.skipped_steps == 1
    assert not scaler.last_step_skipped


def test_scaled_step_equals_the_unscaled_step_exactly():
    """Scaling by a power of two and unscaling is exact: same update as without a scaler."""
    x = np.array([0.3, -1.7, 2.5, 1e-3], dtype=np.float32)
    results = []
    for scaler in (GradScaler(enabled=False), GradScaler(init_scale=2.0 ** 16)):
        p = mm.nn.Parameter(mm.tensor(x))
        opt = mm.optim.AdamW([p], lr=1e-2)
        for _ in range(3):
            scaler.scale((p * p * p).sum()).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
        results.append(p.numpy())
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], x)


def test_scaler_grows_after_growth_interval_clean_steps():
    p = mm.nn.Parameter(mm.tensor(np.ones(2, dtype=np.float32)))
    opt = mm.optim.SGD([p], lr=0.0)
    scaler = GradScaler(init_scale=4.0, growth_factor=2.0, growth_interval=3)

    def step(value):
        p.grad = mm.tensor(np.full(2, value, dtype=np.float32))
        scaler.step(opt)
        scaler.update()
        return scaler.get_scale()

    assert [step(1.0) for _ in range(3)] == [4.0, 4.0, 8.0]       # doubled after 3 clean
    assert [step(1.0) for _ in range(2)] == [8.0, 8.0]
    assert step(np.inf) == 4.0                                     # overflow: tracker reset
    assert [step(1.0) for _ in range(3)] == [4.0, 4.0, 8.0]
    assert scaler.skipped_steps == 1


def test_scaler_state_dict_round_trip_through_json():
    p = mm.nn.Parameter(mm.tensor(np.ones(2, dtype=np.float32)))
    opt = mm.optim.SGD([p], lr=0.0)
    scaler = GradScaler(init_scale=2.0 ** 10, growth_interval=4)
    for value in (1.0, np.nan, 1.0, 1.0):
        p.grad = mm.tensor(np.full(2, value, dtype=np.float32))
        scaler.step(opt)
        scaler.update()
    sd = json.loads(json.dumps(scaler.state_dict()))               # plain numbers only
    assert sd["scale"] == 2.0 ** 9 and sd["_growth_tracker"] == 2 and sd["skipped_steps"] == 1
    other = GradScaler()
    other.load_state_dict(sd)
    assert other.state_dict() == scaler.state_dict()
    for s in (scaler, other):                                       # and they go on alike
        for _ in range(2):
            p.grad = mm.tensor(np.ones(2, dtype=np.float32))
            s.step(opt)
            s.update()
    assert other.get_scale() == scaler.get_scale() == 2.0 ** 10
    with pytest.raises(ValueError, match="lacks"):
        other.load_state_dict({"scale": 1.0})
    with pytest.raises(ValueError, match="scale"):
        other.load_state_dict({**sd, "scale": -1.0})


def test_scaler_misuse_is_reported():
    p = mm.nn.Parameter(mm.tensor(np.ones(2, dtype=np.float32)))
    opt = mm.optim.SGD([p], lr=0.1)
    scaler = GradScaler()
    with pytest.raises(RuntimeError, match="no inf checks"):
        scaler.update()
    p.grad = mm.tensor(np.ones(2, dtype=np.float32))
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.step(opt)
    scaler.update()
    half = mm.nn.Parameter(mm.tensor(np.ones(2, dtype=np.float16)))
    half.grad = mm.tensor(np.ones(2, dtype=np.float16))
    with pytest.raises(ValueError, match="unscale float16 gradients.*MixedPrecision"):
        scaler.unscale_(mm.optim.SGD([half], lr=0.1))
    for kw in ({"init_scale": 0.0}, {"growth_factor": 1.0}, {"backoff_factor": 1.0},
               {"growth_interval": 0}):
        with pytest.raises(ValueError):
            GradScaler(**kw)


# -- master weights and loss scaling --------------------------------------------------------------
def test_small_updates_accumulate_in_the_float32_masters():
    """lr * grad = 1e-4 per step: below half of float16's spacing next to 1 (2**-11)."""
    assert np.float16(1) + np.float16(1e-4) == np.float16(1)
    steps, lr = 20, 1e-4
    loss_fn = lambda w: w.astype(np.float32).sum()        # noqa: E731  d loss / d w = 1

    # pure float16: the model's own float16 weights are updated, and nothing moves
    pure = Weights(np.ones(4), loss_fn).to(np.float16)
    opt = mm.optim.SGD(pure.parameters(), lr=lr)
    for _ in range(steps):
        pure().backward()
        opt.step()
        opt.zero_grad()
    np.testing.assert_array_equal(pure.w.numpy(), np.ones(4, dtype=np.float16))

    # mixed precision: the float32 masters take every update. The first step overflows:
    # its float16 gradient is 1 * 2**16 > 65504, so it is skipped and the scale halved.
    model = Weights(np.ones(4), loss_fn)
    mp = MixedPrecision(model, mm.optim.SGD(model.parameters(), lr=lr))
    for _ in range(steps):
        mp.backward(model())
        mp.step()
    assert mp.skipped_steps == 1 and mp.get_scale() == 2.0 ** 15
    master = mp.master_of(model.w).numpy()
    assert master.dtype == np.float32
    np.testing.assert_allclose(master, 1 - (steps - 1) * lr, rtol=1e-6)
    assert model.w.dtype == np.float16                       # the working copy follows
    np.testing.assert_array_equal(model.w.numpy(), master.astype(np.float16))
    assert model.w.numpy()[0] < 1


def test_loss_scaling_saves_a_gradient_that_underflows_in_float16():
    """d loss / d w = 2**-12 * 2**-14 = 2**-26 ~ 1.5e-8, below float16's smallest subnormal
    2**-24 ~ 6e-8: without scaling it is 0 in the float16 backward; scaled by 2**16 it is
    2**-10 there, and exactly 2**-26 once unscaled in float32."""
    a = np.float16(2.0 ** -12)

    def loss_fn(w):                       # float16 product, float32 loss (as cross_entropy)
        return (w * a).astype(np.float32).sum() * 2.0 ** -14

    grads = {}
    for name, scaler in (("unscaled", GradScaler(enabled=False)),
                         ("scaled", GradScaler(init_scale=2.0 ** 16))):
        model = Weights([1.0, -3.0], loss_fn)
        mp = MixedPrecision(model, mm.optim.SGD(model.parameters(), lr=1.0), scaler)
        mp.backward(model())
        scaler.unscale_(mp.optimizer)
        grads[name] = _grad(mp.master_of(model.w))
    np.testing.assert_array_equal(grads["unscaled"], [0.0, 0.0])
    np.testing.assert_array_equal(grads["scaled"], np.full(2, 2.0 ** -26, dtype=np.float32))


def test_gradient_accumulation_is_float32_and_state_dict_is_float32():
    model = Weights([1.0, 2.0, 3.0], lambda w: (w * w).astype(np.float32).sum())
    mp = MixedPrecision(model, mm.optim.SGD(model.parameters(), lr=0.0),
                        GradScaler(init_scale=2.0 ** 8))
    for _ in range(3):
        mp.backward(model())
        assert model.w.grad is None                        # moved to the master, as float32
    g = _grad(mp.master_of(model.w))
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g / mp.get_scale(), [6.0, 12.0, 18.0])
    mp.step()
    sd = mp.state_dict()
    assert list(sd) == ["w"] and sd["w"].dtype == np.float32
    # a float32 state goes into the masters exactly and, rounded, into the float16 model
    value = np.array([1.0001, 2.0, 3.0], dtype=np.float32)
    mp.load_state_dict({"w": value})
    np.testing.assert_array_equal(mp.master_of(model.w).numpy(), value)
    np.testing.assert_array_equal(model.w.numpy(), value.astype(np.float16))
    with pytest.raises(mm.nn.StateDictError, match="float32"):
        mp.load_state_dict({"w": value.astype(np.float64)})


def _tiny_gpt(seed=0):
    mm.manual_seed(seed)
    return mm.models.GPT(mm.models.GPTConfig(vocab_size=32, block_size=16, n_layer=1,
                                             n_head=2, n_embd=32, dropout=0.0, bias=True))


def _count_batches(n, seed=0):
    """(x, y) batches of a learnable sequence: y = x + 1 (mod 32)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = rng.integers(0, 32, (16, 1))
        seq = (start + np.arange(17)) % 32
        out.append((seq[:, :-1], seq[:, 1:]))
    return out


def test_fp16_gpt_training_tracks_float32():
    """30 AdamW steps of a small GPT in float32 and in mixed precision, same data and init.

    Tolerance: the mean loss of the last 5 steps within 0.05 (the loss falls from ~3.5 to
    ~1.4). float16 rounds activations and weights to ~3 digits (relative 5e-4), so the two
    trajectories drift apart by a little each step; measured, the gap is ~0.01. A broken
    master-weight copy or unscaling leaves the loss near 3.5 or diverges.
    """
    batches = _count_batches(30)
    curves = {}
    for fp16 in (False, True):
        model = _tiny_gpt()
        opt = model.configure_optimizers(0.0, 3e-3)
        mp = MixedPrecision(model, opt) if fp16 else None
        losses = []
        for x, y in batches:
            logits, loss = model(mm.tensor(x), mm.tensor(y))
            assert logits.dtype == (np.float16 if fp16 else np.float32)
            assert loss.dtype == np.float32
            if fp16:
                mp.backward(loss)
                mp.step(max_grad_norm=1.0)
            else:
                loss.backward()
                mm.optim.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad()
            losses.append(loss.item())
        curves[fp16] = losses
        if fp16:
            assert mp.skipped_steps == 0 and mp.get_scale() == 2.0 ** 16
    end32, end16 = np.mean(curves[False][-5:]), np.mean(curves[True][-5:])
    assert abs(curves[True][0] - curves[False][0]) < 0.01     # same model, float16 rounding
    assert end32 < 0.6 * curves[False][0]                      # it learns
    assert abs(end16 - end32) < 0.05, (end16, end32)


# -- float32 islands in the functional kernels ---------------------------------------------------
def _ref_log_softmax(z):
    z = z.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def _pure_fp16_cross_entropy(z, t):
    """What the kernel computed before the island: everything in float16."""
    z = z.astype(np.float16)
    m = z.max(axis=1)
    lse = np.log(np.exp(z - m[:, None]).sum(axis=1)) + m
    return (lse - z[np.arange(len(t)), t]).mean()


def test_cross_entropy_float16_logits_near_1e4():
    """Logits ~1e4 (float16 spacing 8 there): the loss log(sum exp) is a small number next
    to a big one; float16 rounds ``lse`` to a multiple of 8, the float32 island keeps it."""
    rng = np.random.default_rng(0)
    z = (10000 + 8 * rng.integers(-1, 2, (64, 5))).astype(np.float16)      # representable
    t = rng.integers(0, 5, 64)
    ref_lp = _ref_log_softmax(z)
    ref = -ref_lp[np.arange(64), t].mean()
    assert abs(_pure_fp16_cross_entropy(z, t) - ref) > 0.5            # the old way: wrong
    logits = mm.tensor(z, requires_grad=True)
    loss = F.cross_entropy(logits, mm.tensor(t))
    assert loss.dtype == np.float32                                   # documented choice
    assert abs(loss.item() - ref) < 2e-3
    loss.backward()
    assert logits.grad.dtype == np.float16
    onehot = np.eye(5)[t]
    np.testing.assert_allclose(_grad(logits), (np.exp(ref_lp) - onehot) / 64, atol=2e-5)


def test_cross_entropy_float16_sum_beyond_65504():
    """A summed loss over many tokens exceeds float16's range; the island's float32 does not."""
    n, c = 60000, 4
    z = np.zeros((n, c), dtype=np.float16)
    t = np.zeros(n, dtype=np.int64)
    with np.errstate(over="ignore"):
        assert np.isinf(np.sum(np.full(n, np.log(4), dtype=np.float16)))   # 83177 > 65504
    loss = F.cross_entropy(mm.tensor(z), mm.tensor(t), reduction="sum")
    np.testing.assert_allclose(loss.item(), n * np.log(4), rtol=1e-5)


def test_softmax_family_float16_many_classes():
    """70000 equal logits: the sum of exp is 70000 > 65504 (inf in float16, so softmax 0)."""
    c = 70000
    x = np.zeros((2, c), dtype=np.float16)
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(x).sum(axis=-1, dtype=np.float16)).all()  # the pure-fp16 way
    y = F.softmax(mm.tensor(x)).numpy()
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64).sum(axis=-1), 1.0, rtol=5e-3)
    lp = F.log_softmax(mm.tensor(x)).numpy()
    assert lp.dtype == np.float16
    np.testing.assert_allclose(lp, -np.log(c), rtol=1e-3)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_family_float16_matches_float64(fn):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(8, 50)) * 4).astype(np.float16)
    g = rng.normal(size=(8, 50)).astype(np.float16)
    xt = mm.tensor(x, requires_grad=True)
    y = getattr(F, fn)(xt)
    y.backward(mm.tensor(g))
    lp = _ref_log_softmax(x)
    p = np.exp(lp)
    g64 = g.astype(np.float64)
    if fn == "softmax":
        ref_y, ref_g = p, p * (g64 - (g64 * p).sum(-1, keepdims=True))
    else:
        ref_y, ref_g = lp, g64 - p * g64.sum(-1, keepdims=True)
    assert y.dtype == np.float16 and xt.grad.dtype == np.float16
    # float16 precision: relative 2**-11 ~ 5e-4 of the magnitudes involved
    np.testing.assert_allclose(y.numpy(), ref_y, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(_grad(xt), ref_g, rtol=2e-3, atol=2e-3)


def test_layer_norm_float16_large_activations():
    """Activations of size ~1000 (a residual stream can get there): their squares (~1e5)
    overflow float16, so a float16 variance is inf; the island computes it in float32."""
    rng = np.random.default_rng(2)
    x = (1000 + 400 * rng.normal(size=(16, 64))).astype(np.float16)
    w = (1 + 0.1 * rng.normal(size=64)).astype(np.float16)
    b = (0.1 * rng.normal(size=64)).astype(np.float16)
    g = rng.normal(size=(16, 64)).astype(np.float16)
    with np.errstate(over="ignore"):
        centered = x - x.mean(axis=1, keepdims=True, dtype=np.float16)
        assert np.isinf((centered * centered).mean(axis=1, dtype=np.float16)).any()  # old way

    x64, w64, g64 = x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)
    mu = x64.mean(1, keepdims=True)
    rstd = 1 / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    xhat = (x64 - mu) * rstd
    ref_y = xhat * w64 + b
    dxhat = g64 * w64
    ref_gx = rstd * (dxhat - dxhat.mean(1, keepdims=True)
                     - xhat * (dxhat * xhat).mean(1, keepdims=True))

    xt, wt, bt = (mm.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.layer_norm(xt, wt, bt)
    y.backward(mm.tensor(g))
    assert y.dtype == xt.grad.dtype == wt.grad.dtype == bt.grad.dtype == np.float16
    np.testing.assert_allclose(y.numpy(), ref_y, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(_grad(xt), ref_gx, rtol=5e-3, atol=1e-5)
    np.testing.assert_allclose(_grad(wt), (g64 * xhat).sum(0), rtol=5e-3, atol=5e-3)
    np.testing.assert_allclose(_grad(bt), g64.sum(0), rtol=2e-3, atol=2e-3)


# -- device transfers ---------------------------------------------------------------------------
def test_a_mixed_precision_step_reads_the_device_once():
    """On the strict 'fake' device (in every test run): a whole mixed-precision step --
    forward (with its queued input checks), mp.backward, mp.step -- reads the device exactly
    once: the inf/NaN flag, with the queued checks in the same read."""
    with backend.default_device_as("fake"):
        model = _tiny_gpt()
        mp = MixedPrecision(model, model.configure_optimizers(0.1, 1e-3))
        batches = [(mm.tensor(x), mm.tensor(y)) for x, y in _count_batches(3, seed=3)]
        for x, y in batches:
            before = backend.TRANSFERS["to_host"]
            _, loss = model(x, y)
            mp.backward(loss)
            assert backend.TRANSFERS["to_host"] == before
            assert backend.pending_checks() > 0        # the ids/targets checks, queued
            mp.step(max_grad_norm=1.0)
            assert backend.TRANSFERS["to_host"] - before == 1
            assert backend.pending_checks() == 0
        assert model.wte.weight.device == "fake" and not mp.last_step_skipped


# -- the Trainer --------------------------------------------------------------------------------
def _windows(n, seed=0):
    """``n`` (x, y) windows of the sequence y = x + 1 (mod 32): a list dataset."""
    starts = np.random.default_rng(seed).integers(0, 32, n)
    seqs = (starts[:, None] + np.arange(17)) % 32
    return [(s[:-1], s[1:]) for s in seqs]


def _args(out, **kw):
    base = dict(output_dir=str(out), max_steps=6, per_device_train_batch_size=8,
                learning_rate=3e-3, warmup_steps=2, lr_scheduler_type="cosine",
                weight_decay=0.1, max_grad_norm=1.0, gradient_accumulation_steps=2,
                save_steps=3, logging_steps=1, seed=3, disable_tqdm=True, fp16=True)
    base.update(kw)
    return TrainingArguments(**base)


def test_trainer_fp16_end_to_end(tmp_path):
    train = _windows(48)
    model = _tiny_gpt()
    trainer = Trainer(model, _args(tmp_path), train_dataset=train, eval_dataset=train[:16])
    state = trainer.train()
    mp = trainer.mixed_precision
    assert isinstance(mp, MixedPrecision) and trainer.optimizer is mp.optimizer
    assert model.wte.weight.dtype == np.float16
    assert all(p.dtype == np.float32 for g in trainer.optimizer.param_groups
               for p in g["params"])
    hist = state.history
    assert len(hist) == 6 and all(h["loss_scale"] == 2.0 ** 16 and h["skipped_steps"] == 0
                                  for h in hist)
    assert hist[-1]["loss"] < hist[0]["loss"] and math.isfinite(hist[-1]["grad_norm"])
    assert math.isfinite(trainer.evaluate(train[:16])["eval_loss"])
    ckpt = tmp_path / "checkpoint-6"
    assert (ckpt / "scaler.json").is_file()
    with np.load(ckpt / "model.npz") as npz:                  # the float32 masters
        assert npz["wte.weight"].dtype == np.float32
        np.testing.assert_array_equal(npz["wte.weight"],
                                      mp.master_of(model.wte.weight).numpy())
    # a float32 model from the checkpoint; and the checkpoint back into a new fp16 setup
    again = mm.models.GPT.from_pretrained(ckpt, device=DEVICE)
    assert again.wte.weight.dtype == np.float32
    model2 = _tiny_gpt(seed=5)
    mp2 = MixedPrecision(model2, model2.configure_optimizers(0.1, 1e-3))
    mp2.scaler.update(new_scale=2.0)
    load_checkpoint(ckpt, mixed_precision=mp2)
    assert mp2.get_scale() == 2.0 ** 16
    for (k, a), (_, b) in zip(mp.state_dict().items(), mp2.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    np.testing.assert_array_equal(model2.wte.weight.numpy(), model.wte.weight.numpy())


def test_trainer_fp16_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="fp16 must be True or False"):
        TrainingArguments(str(tmp_path), fp16="yes")
    model = _tiny_gpt().to(np.float64)
    with pytest.raises(ValueError, match="fp16=True needs a float32 model.*float64"):
        Trainer(model, _args(tmp_path), train_dataset=_windows(8))


def test_dropout_draws_float16_masks():
    """The device generators draw float16 (NumPy/CuPy draw float32 only: drawn and cast)."""
    x = mm.ones((64, 64), dtype=np.float16)
    y = mm.functional.dropout(x, 0.5, training=True)
    assert y.dtype == np.float16
    kept = (y.numpy() != 0).mean()
    assert 0.4 < kept < 0.6 and set(np.unique(y.numpy())) <= {0.0, 2.0}
    z = mm.functional.scaled_dot_product_attention(x[None, :8, :4], x[None, :8, :4],
                                                   x[None, :8, :4], dropout_p=0.5)
    assert z.dtype == np.float16
