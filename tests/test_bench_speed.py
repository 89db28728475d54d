"""Speed benchmarks (`minillm bench gpt|lstm|ops`): every benchmark's real code path in fast
mode (tiny sizes) on the test device, the PyTorch references against minillm on the same
weights and batches (so the timings compare like with like), the FLOP and MFU arithmetic
against hand computations, the timing protocol, and the fallback without PyTorch.

minillm runs on the test device (cpu or the strict ``fake`` stand-in); PyTorch on the CPU.
"""
import json
import math
import os
import sys

import numpy as np
import pytest

import minillm as mm
from minillm.apps import bench
from minillm import functional as F
from minillm.apps.bench import speed as S
from minillm.models import GPT, LSTMLM, GPTConfig, LSTMLMConfig
from minillm.nn import init

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")
LIBRARY_KEYS = {"ms_per_step", "ms_per_step_rounds", "ms_per_step_min", "tokens_per_second",
                "achieved_gflops", "peak_gflops", "mfu"}
COMMON_KEYS = {"benchmark", "version", "device", "torch_device", "seed", "fast", "settings",
               "environment", "total_seconds"}
TIMING_KEYS = {"minillm", "torch", "ratio", "ratio_rounds", "loss_minillm", "loss_torch",
               "loss_abs_diff", "losses_agree", "final_loss_minillm", "final_loss_torch"}


def _check_library(block, steps_rounds):
    assert set(block) == LIBRARY_KEYS
    assert len(block["ms_per_step_rounds"]) == steps_rounds
    assert block["ms_per_step"] > 0 and block["tokens_per_second"] > 0
    # MFU is achieved / peak; no upper bound here: in fast mode the peak comes from a 128 x 128
    # product, which a tiny model's step can outrun (PyTorch's MFU read 1.016 once)
    assert block["peak_gflops"] > 0 and block["mfu"] > 0
    assert block["mfu"] == pytest.approx(block["achieved_gflops"] / block["peak_gflops"])


def _written(tmp_path, result):
    on_disk = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert on_disk["benchmark"] == result["benchmark"]
    assert os.path.isfile(result["plot"])
    return on_disk


# -- (a) minillm alone, fast mode ---------------------------------------------------------------
def test_bench_gpt_fast_minillm_alone(tmp_path):
    r = S.bench_gpt(device=DEVICE, fast=True, progress=False, output_dir=tmp_path, log=None)
    assert COMMON_KEYS | TIMING_KEYS | {"parameters", "flops_per_token", "tokens_per_step",
                                        "flops_per_step", "matmul_peak"} <= set(r)
    assert r["benchmark"] == "gpt" and r["fast"] is True and r["device"] == str(mm.device(DEVICE))
    assert r["torch"] is None and r["ratio"] is None and r["torch_device"] is None
    assert r["settings"]["steps"] == 2 and r["settings"]["repeats"] == 2
    _check_library(r["minillm"], 2)
    assert math.isfinite(r["loss_minillm"]) and math.isfinite(r["final_loss_minillm"])
    assert r["tokens_per_step"] == r["settings"]["batch_size"] * r["settings"]["block_size"]
    assert r["flops_per_step"] == r["flops_per_token"] * r["tokens_per_step"]
    _written(tmp_path, r)
    assert "ms/step" in S.format_speed("gpt", r) and "minillm" in S.format_speed("gpt", r)


def test_bench_lstm_fast_minillm_alone(tmp_path):
    r = S.bench_lstm(device=DEVICE, fast=True, progress=False, output_dir=tmp_path, log=None,
                     steps=1, repeats=3)
    assert COMMON_KEYS | {"sizes", "matmul_peak"} <= set(r)
    assert list(r["sizes"]) == ["small", "medium"]
    for block in r["sizes"].values():
        assert TIMING_KEYS <= set(block)
        assert block["torch"] is None
        _check_library(block["minillm"], 3)
        assert block["tokens_per_step"] == (r["settings"]["batch_size"]
                                            * r["settings"]["bptt"])
    assert r["sizes"]["medium"]["settings"]["dropout"] == 0.5
    _written(tmp_path, r)
    assert "small" in S.format_speed("lstm", r) and "medium" in S.format_speed("lstm", r)


def test_bench_ops_fast_minillm_alone(tmp_path):
    r = S.bench_ops(device=DEVICE, fast=True, progress=False, output_dir=tmp_path, log=None)
    assert COMMON_KEYS | {"ops"} <= set(r)
    assert [o["op"] for o in r["ops"]] == ["linear", "sdpa", "layer_norm", "cross_entropy",
                                           "embedding"]
    for o in r["ops"]:
        assert o["minillm_ms"] > 0 and len(o["minillm_ms_rounds"]) == 2
        assert o["torch_ms"] is None and o["ratio"] is None
    assert r["ops"][0]["minillm_gflops"] > 0
    _written(tmp_path, r)
    assert "layer_norm" in S.format_speed("ops", r)


def test_matmul_peak_fast():
    p = S.matmul_peak(DEVICE, fast=True, log=None)
    assert p["n"] == 128 and p["torch"] is None
    assert p["minillm"]["gflops"] > 0 and len(p["minillm"]["gflops_rounds"]) == 2


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="small, medium"):
        S.bench_lstm(sizes="small,bogus", fast=True, log=None)
    with pytest.raises(ValueError, match="size must be one of cpu, gpu"):
        S.bench_gpt(size="tpu", fast=True, log=None)
    with pytest.raises(ValueError, match="compare"):
        S.bench_ops(compare="jax", fast=True, log=None)
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        S.bench_gpt(repeats=0, fast=True, log=None)


# -- (b) the PyTorch references are the same models -----------------------------------------------
def _rel_err(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.torch
@pytest.mark.parametrize("bias", [False, True])
def test_torch_gpt_has_minillm_loss_and_gradients(bias):
    torch = pytest.importorskip("torch")
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=12, dropout=0.0,
                    bias=bias)
    model = GPT(cfg)
    for p in model.parameters():           # larger weights than the init: activations of
        init.normal_(p, mean=1.0 if p.ndim == 1 else 0.0, std=0.5)   # order 1 everywhere
    tmodel = S.torch_gpt(model)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 13, size=(3, 9))
    x, y = ids[:, :-1], ids[:, 1:]
    _, loss = model(mm.tensor(x), mm.tensor(y))
    loss.backward()
    _, tloss = tmodel(torch.from_numpy(x), torch.from_numpy(y))
    tloss.backward()
    assert abs(loss.item() - tloss.item()) < 1e-4
    grads = {n: p.grad for n, p in tmodel.named_parameters()}
    mine = dict(model.named_parameters())
    names = ["wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.1.attn.c_proj.weight",
             "h.0.mlp.c_fc.weight", "h.1.mlp.c_proj.weight", "h.0.ln_1.weight", "ln_f.weight"]
    if bias:
        names += ["h.0.attn.c_attn.bias", "h.1.mlp.c_fc.bias", "ln_f.bias"]
    for name in names:
        g = mine[name].grad.numpy()
        if name.endswith(".weight") and g.ndim == 2 and not name.startswith(("wte", "wpe")):
            g = g.T                                   # minillm (in, out), torch (out, in)
        assert _rel_err(g, grads[name].numpy()) < 1e-4, name


@pytest.mark.torch
def test_torch_lstm_has_minillm_loss_and_gradients_with_a_carried_state():
    torch = pytest.importorskip("torch")
    cfg = LSTMLMConfig(vocab_size=11, embed_dim=5, hidden_size=6, num_layers=2, dropout=0.0)
    model = LSTMLM(cfg)
    tmodel = S.torch_lstm_lm(model)
    frozen = [n for n, p in tmodel.named_parameters() if not p.requires_grad]
    assert frozen == ["lstm.bias_hh_l0", "lstm.bias_hh_l1"]
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 11, size=(3, 2 * 4 + 1))
    windows = [(ids[:, i * 4:(i + 1) * 4], ids[:, i * 4 + 1:(i + 1) * 4 + 1]) for i in (0, 1)]
    # window 1 gives the state; the loss and gradients of window 2 start from it
    _, state = model(mm.tensor(windows[0][0]), return_state=True)
    logits = model(mm.tensor(windows[1][0]), model.detach_state(state))
    loss = F.cross_entropy(logits, mm.tensor(windows[1][1]))
    loss.backward()
    _, tstate = tmodel(torch.from_numpy(windows[0][0]))
    tlogits, _ = tmodel(torch.from_numpy(windows[1][0]), tuple(s.detach() for s in tstate))
    tloss = torch.nn.functional.cross_entropy(tlogits.reshape(-1, 11),
                                              torch.from_numpy(windows[1][1]).reshape(-1))
    tloss.backward()
    assert abs(loss.item() - tloss.item()) < 1e-4
    t = dict(tmodel.named_parameters())
    mine = dict(model.named_parameters())
    pairs = [("embed.weight", "embed.weight", False), ("lstm.weight_ih_l0", None, True),
             ("lstm.weight_hh_l0", None, True), ("lstm.weight_ih_l1", None, True),
             ("lstm.bias_l0", "lstm.bias_ih_l0", False), ("lstm.bias_l1", "lstm.bias_ih_l1", False),
             ("head.weight", None, True), ("head.bias", None, False)]
    for name, tname, transpose in pairs:
        g = mine[name].grad.numpy()
        g = g.T if transpose else g
        assert _rel_err(g, t[tname or name].grad.numpy()) < 1e-4, name
    assert t["lstm.bias_hh_l0"].grad is None


@pytest.mark.torch
def test_bench_gpt_and_lstm_train_like_torch():
    """The whole timed run (warmup + rounds: AdamW / SGD steps, clipping, the carried LSTM
    state) gives the same losses in both libraries when there is no dropout."""
    pytest.importorskip("torch")
    r = S.bench_gpt(device=DEVICE, fast=True, compare="torch", progress=False, log=None)
    want = "cuda:0" if DEVICE.startswith("cuda") else "cpu"        # the matching device
    assert r["torch_device"] == want and r["environment"]["torch_threads"] >= 1
    _check_library(r["torch"], 2)
    assert r["losses_agree"] is True and r["loss_abs_diff"] < 1e-4
    assert abs(r["final_loss_minillm"] - r["final_loss_torch"]) < 1e-4   # after 5 AdamW steps
    per = [m / t for m, t in zip(r["minillm"]["ms_per_step_rounds"],
                                 r["torch"]["ms_per_step_rounds"])]
    assert r["ratio_rounds"] == pytest.approx(per) and r["ratio"] == pytest.approx(np.median(per))
    assert r["matmul_peak"]["torch"]["gflops"] > 0
    assert "ratio minillm/torch" in S.format_speed("gpt", r)

    r = S.bench_lstm(device=DEVICE, sizes="small", fast=True, compare="torch", progress=False,
                     log=None)
    small = r["sizes"]["small"]
    assert small["losses_agree"] is True
    assert abs(small["final_loss_minillm"] - small["final_loss_torch"]) < 1e-4


@pytest.mark.torch
def test_bench_ops_compares_outputs_with_torch():
    pytest.importorskip("torch")
    r = S.bench_ops(device=DEVICE, fast=True, compare="torch", progress=False, log=None)
    for o in r["ops"]:
        assert o["torch_ms"] > 0 and o["ratio"] == pytest.approx(np.median(o["ratio_rounds"]))
        assert o["max_abs_diff"] < 1e-4, o["op"]


# -- (c) FLOPs and MFU by hand ------------------------------------------------------------------
def test_gpt_flops_per_token_by_hand():
    model = GPT(GPTConfig(vocab_size=10, block_size=4, n_layer=2, n_head=2, n_embd=8,
                          bias=False))
    # N without wpe: wte 10*8 = 80; per layer ln_1 8 + c_attn 8*24 = 192 + c_proj 64 + ln_2 8
    # + c_fc 8*32 = 256 + mlp.c_proj 256 = 784, two layers 1568; ln_f 8 -> N = 1656
    # 6 N = 9936; 12 L H Q T = 12 * 2 * 2 * 4 * 4 = 768
    assert S.gpt_flops_per_token(model) == 9936 + 768
    # batch 3 x block 4 = 12 tokens/step -> 128,448 flops; 2 ms/step = 64.224 MFLOP/s,
    # against a 0.5 GFLOP/s peak: MFU 0.128448
    assert S.mfu(10704 * 12, 2.0, 0.5) == pytest.approx(0.128448)
    assert S.mfu(10704 * 12, 2.0, None) is None


def test_lstm_flops_per_token_by_hand():
    model = LSTMLM(LSTMLMConfig(vocab_size=10, embed_dim=3, hidden_size=4, num_layers=2))
    # layer 0: W_ih 3*16 + W_hh 4*16 + b 16 = 128; layer 1: 4*16 + 4*16 + 16 = 144;
    # head 4*10 + 10 = 50; the embedding (30) is not counted -> N = 322, 6 N = 1932
    assert S.lstm_flops_per_token(model) == 1932


# -- protocol ------------------------------------------------------------------------------------
def test_rounds_interleave_the_libraries(monkeypatch):
    monkeypatch.setattr(S, "SETTLE_SECONDS", 0.0)
    calls = []

    def runner(name):
        return S._Runner(lambda: calls.append(name) or len(calls), lambda: calls.append("sync"))

    runners = {"minillm": runner("m"), "torch": runner("t")}
    rounds, last = S._interleaved(runners, steps=2, repeats=2, warmup=1,
                                  bar=S._bar(2, "test", False))
    steps = [c for c in calls if c != "sync"]
    # warmup, then per round: one untimed step after the settling pause + 2 timed, each library
    assert steps == ["m", "t"] + ["m", "m", "m", "t", "t", "t"] * 2
    assert len(rounds["minillm"]) == len(rounds["torch"]) == 2
    assert all(ms > 0 for ms in rounds["minillm"] + rounds["torch"])
    # every timed block is bracketed by synchronisations
    assert calls[-3:] == ["t", "t", "sync"] and calls[-4] == "sync"
    assert S._ratios({"minillm": [2.0, 4.0, 9.0], "torch": [1.0, 1.0, 3.0]}) == (3.0,
                                                                                 [2.0, 4.0, 3.0])


# -- (d) without PyTorch ------------------------------------------------------------------------
def test_without_torch_minillm_alone_with_a_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)        # `import torch` raises ImportError
    said = []
    r = S.bench_gpt(device=DEVICE, fast=True, compare="torch", progress=False, log=said.append)
    assert S.TORCH_MISSING in said
    assert "pip install torch" in S.TORCH_MISSING
    assert r["torch"] is None and r["ratio"] is None and r["loss_torch"] is None
    assert r["minillm"]["ms_per_step"] > 0
    assert S.matmul_peak(DEVICE, fast=True, compare="torch", log=None)["torch"] is None


def test_package_exports():
    assert bench.SPEED_BENCHMARKS["gpt"].fn is S.bench_gpt
    assert set(bench.SPEED_BENCHMARKS) == {"gpt", "lstm", "ops"}
    assert not set(bench.SPEED_BENCHMARKS) & set(bench.BENCHMARKS)
