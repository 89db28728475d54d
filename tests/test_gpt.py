"""GPT: GPT-2's names and layout, PyTorch reference, gradcheck, causality, KV cache, save/load,
optimizer groups, and a tiny model that overfits 2 KB of text.

Device-clean (data made with NumPy, read back with ``.numpy()``/``.item()``), so the file
also runs on the strict 'fake' device.
"""
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
import minillm.functional as F
from minillm.models.gpt import GPT, GPTConfig, KVCache
from minillm.models import Config

TINY = dict(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)


def rng(seed=0):
    return np.random.default_rng(seed)


def ids_tensor(a):
    return mm.tensor(np.asarray(a, dtype=np.int64))


def close(got, want, rtol=1e-6):
    want = np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(float(np.abs(want).max()),
                                                                      1e-12))


def tiny_gpt(seed=0, randomize=True, **kw):
    mm.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **kw}))
    if randomize:            # non-trivial LayerNorm weights and biases (init sets 1 and 0)
        r = rng(seed + 100)
        with mm.no_grad():
            for p in model.parameters():
                p.copy_(mm.tensor(p.numpy() + 0.1 * r.normal(size=p.shape).astype(p.dtype)))
    return model


# -- layout -------------------------------------------------------------------------------------
GPT2_NAMES = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
              "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
              "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]


def test_gpt2_names_shapes_and_tied_head():
    cfg = GPTConfig(**TINY)
    model = GPT(cfg)
    names = [n for n, _ in model.named_parameters()]
    assert names == (["wte.weight", "wpe.weight"]
                     + [f"h.{i}.{n}" for i in range(2) for n in GPT2_NAMES]
                     + ["ln_f.weight", "ln_f.bias"])
    sd = model.state_dict()
    assert sd["wte.weight"].shape == (11, 8) and sd["wpe.weight"].shape == (6, 8)
    assert sd["h.0.attn.c_attn.weight"].shape == (8, 24)        # (in, out) like GPT-2's Conv1D
    assert sd["h.1.mlp.c_fc.weight"].shape == (8, 32)
    assert sd["h.1.mlp.c_proj.weight"].shape == (32, 8)
    assert not any("head" in n for n in names)                   # tied: no extra parameter
    d, v, b, L = 8, 11, 6, 2
    assert model.num_parameters() == v * d + b * d + L * (12 * d * d + 13 * d) + 2 * d
    no_bias = GPT(GPTConfig(**TINY, bias=False))
    assert not any(n.endswith("bias") for n, _ in no_bias.named_parameters())
    # GPT-2 small has 124,439,808 parameters (with the tied head counted once)
    c = GPTConfig()
    assert c.vocab_size * c.n_embd + c.block_size * c.n_embd + c.n_layer * (
        12 * c.n_embd ** 2 + 13 * c.n_embd) + 2 * c.n_embd == 124_439_808


def test_tied_head_and_logits_shape(float64):
    model = tiny_gpt()
    ids = ids_tensor(rng(1).integers(0, 11, (3, 5)))
    logits = model(ids)
    assert logits.shape == (3, 5, 11)
    # logits = ln_f(x) @ wte^T: a change of wte changes both the embedding and the head
    logits.sum().backward()
    assert model.wte.weight.grad is not None


def test_nanogpt_init_statistics():
    mm.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=4, n_head=4, n_embd=64))
    sd = {n: p.numpy() for n, p in model.state_dict().items()}
    assert abs(sd["wte.weight"].std() - 0.02) < 0.002
    assert abs(sd["h.0.attn.c_attn.weight"].std() - 0.02) < 0.002
    want = 0.02 / math.sqrt(2 * 4)
    assert abs(sd["h.3.mlp.c_proj.weight"].std() - want) < 0.1 * want
    assert abs(sd["h.3.attn.c_proj.weight"].std() - want) < 0.1 * want
    assert (sd["h.0.attn.c_attn.bias"] == 0).all() and (sd["ln_f.weight"] == 1).all()


def test_config_validation_and_strict_keys():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="n_layer must be an int >= 1"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="unknown config keys"):
        GPTConfig.from_dict({**TINY, "n_heads": 2})
    assert isinstance(GPTConfig(), Config) and GPTConfig.from_dict(TINY) == GPTConfig(**TINY)
    with pytest.raises(TypeError, match="expects a GPTConfig"):
        GPT(dict(TINY))


def test_targets_give_the_cross_entropy(float64):
    model = tiny_gpt()
    r = rng(2)
    ids, tgt = ids_tensor(r.integers(0, 11, (2, 6))), ids_tensor(r.integers(0, 11, (2, 6)))
    logits, loss = model(ids, tgt)
    close(loss.item(), F.cross_entropy(model(ids), tgt).item(), 1e-12)
    close(logits.numpy(), model(ids).numpy(), 1e-12)


def test_too_long_sequences_are_clear_errors():
    model = tiny_gpt(randomize=False)
    with pytest.raises(ValueError, match="exceeds block_size=6"):
        model(ids_tensor(np.zeros((1, 7))))
    cache = model.init_cache(1)
    model.forward_step(ids_tensor(np.zeros((1, 4))), cache)
    with pytest.raises(ValueError, match="positions 4..6 exceeds block_size=6"):
        model.forward_step(ids_tensor(np.zeros((1, 3))), cache)
    # generate() crops the context to the last block_size tokens, with or without the cache
    out = model.generate(ids_tensor(np.zeros((1, 4))), 5, do_sample=False, use_cache=False)
    assert out.shape == (1, 9)
    np.testing.assert_array_equal(
        model.generate(ids_tensor(np.zeros((1, 4))), 5, do_sample=False).numpy(), out.numpy())
    with pytest.raises(ValueError, match="integer Tensor"):
        model(mm.zeros(1, 3))


# -- gradients ----------------------------------------------------------------------------------
def test_gpt_gradcheck(float64):
    model = tiny_gpt()
    r = rng(3)
    ids = ids_tensor(r.integers(0, 11, (2, 6)))
    tgt = ids_tensor(r.integers(0, 11, (2, 6)))
    params = list(model.parameters())
    assert mm.gradcheck(lambda *p: model(ids), params)
    # the loss path (cross-entropy itself is checked in test_functional): a few parameters
    assert mm.gradcheck(lambda *p: model(ids[:, :4], tgt[:, :4])[1],
                        [model.wte.weight, model.h[1].mlp.c_proj.bias, model.ln_f.weight])


def _torch_gpt2_logits(torch, p, ids, n_head):
    """A hand-written GPT-2 forward in PyTorch on the parameter dict ``p`` (minillm names,
    Linear weights (in, out) as in GPT-2's Conv1D)."""
    tF = torch.nn.functional
    b, t = ids.shape
    d = p["wte.weight"].shape[1]
    x = p["wte.weight"][ids] + p["wpe.weight"][:t]
    n_layer = len({k.split(".")[1] for k in p if k.startswith("h.")})
    for i in range(n_layer):
        def w(name):
            return p[f"h.{i}.{name}"]
        h = tF.layer_norm(x, (d,), w("ln_1.weight"), w("ln_1.bias"), eps=1e-5)
        q, k, v = (h @ w("attn.c_attn.weight") + w("attn.c_attn.bias")).split(d, dim=2)
        q, k, v = (z.view(b, t, n_head, d // n_head).transpose(1, 2) for z in (q, k, v))
        y = tF.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(b, t, d)
        x = x + y @ w("attn.c_proj.weight") + w("attn.c_proj.bias")
        h = tF.layer_norm(x, (d,), w("ln_2.weight"), w("ln_2.bias"), eps=1e-5)
        h = tF.gelu(h @ w("mlp.c_fc.weight") + w("mlp.c_fc.bias"), approximate="tanh")
        x = x + h @ w("mlp.c_proj.weight") + w("mlp.c_proj.bias")
    x = tF.layer_norm(x, (d,), p["ln_f.weight"], p["ln_f.bias"], eps=1e-5)
    return x @ p["wte.weight"].T                                  # tied head


@pytest.mark.torch
@pytest.mark.parametrize("t_len", [8, 5])
def test_gpt_matches_handwritten_torch_gpt2(float64, t_len):
    torch = pytest.importorskip("torch")
    cfg = dict(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
    model = tiny_gpt(seed=4, **cfg)
    r = rng(5)
    ids_np = r.integers(0, 13, (3, t_len))
    tgt_np = r.integers(0, 13, (3, t_len))
    logits, loss = model(ids_tensor(ids_np), ids_tensor(tgt_np))
    proj = r.normal(size=logits.shape)
    (loss + (logits * mm.tensor(proj)).sum()).backward()

    p = {n: torch.tensor(v.numpy(), requires_grad=True) for n, v in model.state_dict().items()}
    tlogits = _torch_gpt2_logits(torch, p, torch.tensor(ids_np), cfg["n_head"])
    tloss = torch.nn.functional.cross_entropy(tlogits.reshape(-1, 13),
                                              torch.tensor(tgt_np).reshape(-1))
    (tloss + (tlogits * torch.tensor(proj)).sum()).backward()

    close(logits.numpy(), tlogits.detach().numpy())
    close(loss.item(), tloss.item())
    grads = dict(model.named_parameters())
    assert set(grads) == set(p)
    for name, param in grads.items():
        close(param.grad.numpy(), p[name].grad.numpy())


# -- causality and the KV cache -----------------------------------------------------------------
def test_future_tokens_never_change_earlier_logits(float64):
    model = tiny_gpt(seed=6)
    r = rng(6)
    ids = r.integers(0, 11, (2, 6))
    base = model(ids_tensor(ids)).numpy()
    for cut in range(1, 6):
        other = ids.copy()
        other[:, cut:] = (other[:, cut:] + 1 + r.integers(0, 9, other[:, cut:].shape)) % 11
        out = model(ids_tensor(other)).numpy()
        np.testing.assert_allclose(out[:, :cut], base[:, :cut], rtol=0, atol=1e-12)
        assert not np.allclose(out[:, cut], base[:, cut])


@pytest.mark.parametrize("chunks", [[6], [1, 1, 1, 1, 1, 1], [3, 1, 2], [2, 4]])
def test_cached_steps_equal_the_full_forward(float64, chunks):
    model = tiny_gpt(seed=7)
    ids = rng(7).integers(0, 11, (3, 6))
    full = model(ids_tensor(ids)).numpy()
    cache = model.init_cache(3)
    assert isinstance(cache, KVCache)
    parts, start = [], 0
    for n in chunks:
        logits, cache = model.forward_step(ids_tensor(ids[:, start:start + n]), cache)
        assert not logits.requires_grad
        parts.append(logits.numpy())
        start += n
    assert cache.offset == 6
    close(np.concatenate(parts, axis=1), full, 1e-12)


@pytest.mark.parametrize("sampling", [dict(do_sample=False), dict(seed=3),
                                      dict(seed=4, top_k=3, temperature=0.7),
                                      dict(seed=5, top_p=0.8)],
                         ids=["greedy", "sample", "top-k", "top-p"])
def test_kv_cache_generation_equals_recompute(sampling):
    mm.manual_seed(8)
    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=8))
    prompt = ids_tensor(rng(8).integers(0, 11, (3, 4)))
    cached = model.generate(prompt, 10, **sampling).numpy()
    recomputed = model.generate(prompt, 10, use_cache=False, **sampling).numpy()
    np.testing.assert_array_equal(cached, recomputed)
    assert cached.shape == (3, 14)
    np.testing.assert_array_equal(cached[:, :4], prompt.numpy())


def test_save_load_gives_bit_identical_logits(tmp_path):
    model = tiny_gpt(seed=9)
    ids = ids_tensor(rng(9).integers(0, 11, (2, 6)))
    model.save_pretrained(tmp_path / "gpt")
    with np.load(tmp_path / "gpt" / "model.npz") as npz:
        assert "wte.weight" in npz.files and not any("head" in k for k in npz.files)
    loaded = GPT.from_pretrained(tmp_path / "gpt")
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())
    with mm.no_grad():                      # the loaded head is still tied to wte
        loaded.wte.weight.data[...] = 0 * loaded.wte.weight.data
    assert np.abs(loaded(ids).numpy()).max() == 0


# -- training -----------------------------------------------------------------------------------
def test_configure_optimizers_decays_only_2d_weights():
    model = tiny_gpt(randomize=False)
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-3, betas=(0.9, 0.95))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) == 2 + 4 * 2              # wte, wpe, 4 matrices per layer
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert decay["lr"] == 3e-3 and decay["betas"] == (0.9, 0.95)
    assert type(opt).__name__ == "AdamW"


def test_dropout_only_in_training():
    model = tiny_gpt(randomize=False, dropout=0.3)
    ids = ids_tensor(rng(10).integers(0, 11, (2, 6)))
    assert not np.allclose(model(ids).numpy(), model(ids).numpy())
    model.eval()
    np.testing.assert_array_equal(model(ids).numpy(), model(ids).numpy())


_BUILTIN_TEXT = (
    "A language model reads a text one character at a time and learns to guess the next one. "
    "At first every guess is a coin toss over the alphabet; after some steps of gradient "
    "descent the model has seen which letters follow which, which words follow which, and "
    "finally, when it is large enough and the text is small enough, the whole text by heart. "
    "That last stage is called overfitting, and for a test it is exactly what we want: a loss "
    "close to zero proves that the forward pass, the backward pass and the optimizer work "
    "together. Attention lets each position look back at every earlier one; the causal mask "
    "keeps it from peeking at the answer; layer normalisation keeps the activations in range; "
    "and weight tying lets the output layer reuse the embedding table. ")


def _two_kilobytes():
    root = os.environ.get("MINILLM_DATA")
    path = Path(root) / "tinyshakespeare" / "input.txt" if root else None
    if path is not None and path.is_file():
        with open(path, encoding="utf-8") as f:
            return f.read(2000)
    return _BUILTIN_TEXT


def test_tiny_gpt_overfits_two_kilobytes_of_text():
    """Character-level, full batch (the text cut into windows of 64), AdamW: loss < 0.1."""
    text = _two_kilobytes()
    chars = sorted(set(text))
    data = np.array([chars.index(c) for c in text], dtype=np.int64)
    block = 64
    mm.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(chars), block_size=block, n_layer=2, n_head=2,
                          n_embd=32))
    opt = model.configure_optimizers(weight_decay=0.0, learning_rate=5e-3, betas=(0.9, 0.99))
    starts = np.arange(0, len(data) - block - 1, block)
    x = ids_tensor(np.stack([data[s:s + block] for s in starts]))
    y = ids_tensor(np.stack([data[s + 1:s + block + 1] for s in starts]))
    t0 = time.perf_counter()
    first = None
    for step in range(300):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            value = loss.item()
            first = value if first is None else first
            if value < 0.1:
                break
    final = model(x, y)[1].item()
    assert first > 3.0                                  # it started from ~log(vocab)
    assert final < 0.1, f"loss {final:.3f} after {step + 1} steps ({time.perf_counter() - t0:.1f}s)"


def test_generate_past_block_size_crops_the_context_like_nanogpt():
    """With or without the KV cache, tokens beyond block_size come from the cropped window."""
    from minillm.models import GPT, GPTConfig
    mm.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8))
    start = mm.tensor(np.array([[1, 2, 3]]))
    a = m.generate(start, 10, do_sample=False).numpy()
    b = m.generate(start, 10, do_sample=False, use_cache=False).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 13)
    with mm.no_grad():                          # token 12 is predicted from tokens 6..11
        expect = m(mm.tensor(a[:, 6:12])).numpy()[0, -1].argmax()
    assert a[0, 12] == expect
