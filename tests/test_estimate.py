"""minillm.estimate: parameter counts against built models, memory against real arrays' nbytes,
FLOPs against nanoGPT's formula written out here independently, and the input checks."""
from __future__ import annotations

import numpy as np
import pytest

import minillm as mm
from minillm.estimate import (MemoryEstimate, activation_bytes, compute_optimal_tokens, describe,
                              flops_per_token, parameter_count, training_flops, training_memory,
                              training_time)
from minillm.models import BERT, GPT, BertConfig, BertForMaskedLM, GPTConfig

GPT_CONFIGS = {
    "tiny": dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8),
    "no-bias": dict(vocab_size=17, block_size=5, n_layer=3, n_head=4, n_embd=12, bias=False),
    "one-layer": dict(vocab_size=7, block_size=16, n_layer=1, n_head=1, n_embd=4),
}
BERT_CONFIGS = {
    "tiny": dict(vocab_size=13, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=16, max_position_embeddings=12),
    "wide-ffn": dict(vocab_size=9, hidden_size=6, num_hidden_layers=1, num_attention_heads=3,
                     intermediate_size=30, max_position_embeddings=7, type_vocab_size=3),
}


def _n(model):
    return sum(p.size for p in model.parameters())


@pytest.mark.parametrize("name", GPT_CONFIGS)
def test_gpt_parameter_count_matches_model(name):
    config = GPTConfig(**GPT_CONFIGS[name])
    assert parameter_count(config) == _n(GPT(config))


@pytest.mark.parametrize("name", BERT_CONFIGS)
@pytest.mark.parametrize("pooler", [True, False])
def test_bert_parameter_count_matches_model(name, pooler):
    config = BertConfig(**BERT_CONFIGS[name])
    assert parameter_count(config, add_pooling_layer=pooler) == _n(BERT(config, pooler))


@pytest.mark.parametrize("name", BERT_CONFIGS)
def test_bert_mlm_parameter_count_counts_tied_decoder_once(name):
    config = BertConfig(**BERT_CONFIGS[name])
    assert parameter_count(config, mlm_head=True) == _n(BertForMaskedLM(config))


@pytest.mark.parametrize("config, expected", [
    (GPTConfig(), 124_439_808),                                     # GPT-2 small, as published
    (GPTConfig(n_layer=24, n_head=16, n_embd=1024), 354_823_168),   # GPT-2 medium
    (BertConfig(vocab_size=30522), 109_482_240),                    # bert-base-uncased
])
def test_known_sizes(config, expected):
    assert parameter_count(config) == expected


def _nanogpt_flops(n_params, n_layer, n_head, d, t):
    return 6 * n_params + 12 * n_layer * n_head * (d // n_head) * t


@pytest.mark.parametrize("name", GPT_CONFIGS)
def test_gpt_flops_is_nanogpts_count(name):
    cfg = GPT_CONFIGS[name]
    config = GPTConfig(**cfg)
    n_no_wpe = _n(GPT(config)) - cfg["block_size"] * cfg["n_embd"]
    want = _nanogpt_flops(n_no_wpe, cfg["n_layer"], cfg["n_head"], cfg["n_embd"],
                          cfg["block_size"])
    assert flops_per_token(config) == want
    short = cfg["block_size"] // 2
    want_short = _nanogpt_flops(n_no_wpe, cfg["n_layer"], cfg["n_head"], cfg["n_embd"], short)
    assert flops_per_token(config, short) == want_short
    assert training_flops(config, 1000, short) == 1000 * want_short


def test_gpt_flops_agrees_with_speed_benchmark():
    from minillm.apps.bench.speed import gpt_flops_per_token
    config = GPTConfig(**GPT_CONFIGS["no-bias"])
    assert flops_per_token(config) == gpt_flops_per_token(GPT(config))


@pytest.mark.parametrize("mlm", [False, True])
def test_bert_flops_counts_matmul_weights(mlm):
    cfg = BERT_CONFIGS["tiny"]
    config = BertConfig(**cfg)
    model = BertForMaskedLM(config) if mlm else BERT(config)
    tables = ("word_embeddings", "position_embeddings", "token_type_embeddings")
    n = sum(p.size for name, p in model.named_parameters()
            if not any(t in name for t in tables))
    if mlm:                                        # the decoder matmul reuses the word embeddings
        n += cfg["vocab_size"] * cfg["hidden_size"]
    want = _nanogpt_flops(n, cfg["num_hidden_layers"], cfg["num_attention_heads"],
                          cfg["hidden_size"], 10)
    assert flops_per_token(config, 10, mlm_head=mlm) == want


def _state_nbytes(optimizer):
    return sum(v.nbytes for state in optimizer.state.values() for v in state.values()
               if hasattr(v, "nbytes"))


@pytest.mark.parametrize("opt_name, make", [
    ("adamw", lambda ps: mm.optim.AdamW(ps, lr=1e-3)),
    ("adam", lambda ps: mm.optim.Adam(ps, lr=1e-3)),
    ("sgd_momentum", lambda ps: mm.optim.SGD(ps, lr=1e-2, momentum=0.9)),
    ("sgd", lambda ps: mm.optim.SGD(ps, lr=1e-2)),
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_memory_matches_real_arrays(opt_name, make, dtype):
    if dtype == "float64":
        mm.set_default_dtype(np.float64)
    cfg = GPT_CONFIGS["tiny"]
    config = GPTConfig(**cfg)
    mm.manual_seed(0)
    model = GPT(config)
    optimizer = make(model.parameters())
    ids = np.random.default_rng(0).integers(0, cfg["vocab_size"], size=(2, 8))
    _, loss = model(mm.tensor(ids), mm.tensor(ids))
    loss.backward()
    optimizer.step()
    est = training_memory(config, batch_size=2, seq_len=8, dtype=dtype, optimizer=opt_name)
    assert est.weights == sum(p.data.nbytes for p in model.parameters())
    assert est.gradients == sum(p.grad.data.nbytes for p in model.parameters())
    assert est.optimizer_states == _state_nbytes(optimizer)
    assert est.total == est.weights + est.gradients + est.optimizer_states + est.activations


def test_memory_with_frozen_parameters():
    config = GPTConfig(**GPT_CONFIGS["tiny"])
    model = GPT(config)
    model.wte.weight.requires_grad = False
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = mm.optim.AdamW(trainable, lr=1e-3)
    ids = np.zeros((1, 4), dtype=np.int64)
    model(mm.tensor(ids), mm.tensor(ids))[1].backward()
    optimizer.step()
    n_trainable = sum(p.size for p in trainable)
    est = training_memory(config, 1, 4, trainable=n_trainable)
    assert est.gradients == sum(p.grad.data.nbytes for p in trainable)
    assert est.optimizer_states == _state_nbytes(optimizer)
    assert est.weights == sum(p.data.nbytes for p in model.parameters())


def test_activation_formula():
    config = GPTConfig(vocab_size=100, block_size=32, n_layer=3, n_head=4, n_embd=16)
    b, s = 2, 32
    per_layer = s * b * 16 * (34 + 5 * 4 * s / 16) / 2        # Korthikanti, in elements
    want = (3 * per_layer + 2 * b * s * 100) * 4
    assert activation_bytes(config, b, s) == want
    assert activation_bytes(config, 2 * b, s) == 2 * want
    assert activation_bytes(config, b, s, dtype="float16") == want // 2


@pytest.mark.parametrize("flops, peak, mfu, seconds", [
    (1e18, 1e15, 1.0, 1000.0), (1e18, 1e15, 0.5, 2000.0), (6e12, 2e11, 0.3, 100.0)])
def test_training_time(flops, peak, mfu, seconds):
    assert training_time(flops, peak, mfu) == pytest.approx(seconds)


def test_chinchilla_and_describe():
    assert compute_optimal_tokens(1_000_000) == 20_000_000
    assert compute_optimal_tokens(10, tokens_per_parameter=2.5) == 25
    config = GPTConfig(**GPT_CONFIGS["tiny"])
    text = describe(config, batch_size=2, tokens=1000, flops_per_second=1e9, mfu=0.5)
    n = parameter_count(config)
    assert f"{n:,}" in text
    assert "optimizer states (adamw)" in text and "time at" in text
    assert "training tokens" in text and "1,000" in text
    assert isinstance(training_memory(config, 1, 8), MemoryEstimate)


@pytest.mark.parametrize("call, error, match", [
    (lambda c: parameter_count({"n_layer": 2}), TypeError, "GPTConfig or BertConfig"),
    (lambda c: parameter_count(c, mlm_head=True), ValueError, "BERT options"),
    (lambda c: training_memory(c, -1, 4), ValueError, "batch_size"),
    (lambda c: training_memory(c, 2, 0), ValueError, "seq_len"),
    (lambda c: training_memory(c, 2, 9), ValueError, "exceeds the model's context"),
    (lambda c: training_memory(c, 2, 4, dtype="int8"), ValueError, "unknown dtype"),
    (lambda c: training_memory(c, 2, 4, optimizer="lion"), ValueError, "unknown optimizer"),
    (lambda c: training_memory(c, 2, 4, trainable=10**9), ValueError, "exceeds"),
    (lambda c: training_memory(c, 2.5, 4), TypeError, "batch_size must be an int"),
    (lambda c: training_flops(c, -5), ValueError, "tokens"),
    (lambda c: training_time(1e9, 1e9, mfu=1.5), ValueError, "mfu"),
    (lambda c: training_time(1e9, 0, mfu=0.5), ValueError, "flops_per_second"),
    (lambda c: training_time(-1.0, 1e9), ValueError, "flops"),
])
def test_bad_inputs(call, error, match):
    config = GPTConfig(**GPT_CONFIGS["tiny"])
    with pytest.raises(error, match=match):
        call(config)


def test_training_time_accepts_huge_int_flops():
    # a Chinchilla-sized FLOP count is a Python int far beyond int64
    flops = training_flops(GPTConfig(n_layer=48, n_head=25, n_embd=1600), 10**13)
    assert training_time(flops, 1e14, 0.5) == pytest.approx(flops / 5e13)
