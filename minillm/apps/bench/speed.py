"""Speed benchmarks: how long a training step takes with minillm, beside PyTorch if asked.

* :func:`bench_gpt` - nanoGPT's GPT configurations, one full AdamW training step.
* :func:`bench_lstm` - the PTB LSTMs of Zaremba et al. (2014), one truncated-BPTT SGD step.
* :func:`bench_ops` - forward + backward of single ops (matmul, attention, LayerNorm,
  cross-entropy, embedding) at the shapes of the GPT configuration.
* :func:`matmul_peak` - the float32 matmul throughput of the device, the MFU denominator.

The three benchmarks take ``device=None, compare=None, steps=None, repeats=None,
warmup=None, seed=0, fast=False, progress=True, output_dir=None, log=print`` (and ``size``,
or ``sizes`` for the LSTM) and return a JSON-able dict; given ``output_dir`` they write
``results.json`` (atomically, UTF-8) and a PNG bar chart of the ms per step there;
:func:`format_speed` turns a result into a table.

``compare="torch"`` adds a PyTorch eager reference written here (:func:`torch_gpt`,
:func:`torch_lstm_lm`) that starts from a copy of minillm's initial weights and trains on the
same batches, on the matching device (``cuda`` when minillm runs on CUDA, else ``cpu``), in
float32; its optimizer is nanoGPT's (AdamW, fused on CUDA) or plain SGD. Before timing,
both libraries compute the loss of the first batch in eval mode (dropout off):
``loss_minillm``, ``loss_torch`` and ``loss_abs_diff`` show that the two models are the
same function. Without PyTorch the benchmarks show minillm alone
(``"torch": None``). On the CPU both libraries use the threads their BLAS is given
(``OMP_NUM_THREADS`` and friends, recorded in ``environment`` with ``torch_threads``).

Timing protocol (same process, same machine, so ratios are meaningful): ``warmup`` untimed
steps for each library, then ``repeats`` rounds; each round times ``steps`` consecutive
steps of minillm and then ``steps`` steps of PyTorch (interleaved, so drift in the
machine's speed hits both), synchronising the device before each clock read. Reported: the
median ms/step of each library over the rounds, the per-round ratios minillm / torch and
their median ``ratio``, tokens/s and the model FLOPs utilisation (MFU)::

    tokens/s = tokens per step / (median ms per step / 1000)
    MFU      = flops per step / (median ms per step / 1000) / peak flops/s

with the peak measured by :func:`matmul_peak` for the same library and device (so the MFU
says how close each library gets to its own dense-matmul speed). Flops per token are
nanoGPT's count for the GPT (:func:`gpt_flops_per_token`) and ``6 N`` for the LSTM
(:func:`lstm_flops_per_token`).

``fast=True`` shrinks the models and the counts (2 steps, 2 rounds, 1 warmup unless given)
so the tests run the real code path in seconds; its numbers are not comparable.
"""
from __future__ import annotations

import itertools
import os
import statistics
import time
from typing import Callable, NamedTuple

import numpy as np

from ... import backend
from ... import functional as F
from ...autograd import no_grad, tensor
from ...estimate import transformer_flops_per_token
from ...models import GPT, LSTMLM, GPTConfig
from ...models.lstm_lm import LSTMLMConfig
from ...optim import SGD, clip_grad_norm_
from .quality import (_bar, _finish, _logger, _on, new_axes, recipe_size, save_axes,
                      zaremba_init_)

__all__ = ["SPEED_BENCHMARKS", "SpeedBenchmark", "bench_gpt", "bench_lstm", "bench_ops",
           "matmul_peak", "format_speed", "gpt_flops_per_token", "lstm_flops_per_token", "mfu",
           "torch_gpt", "torch_lstm_lm", "GPT_SIZES", "LSTM_SIZES", "TORCH_MISSING"]

# -- configurations ----------------------------------------------------------------------------
#: nanoGPT's configurations: ``cpu`` is its README's CPU run of train_shakespeare_char
#: (4 x 4 x 128, block 64, batch 12, no dropout), ``gpu`` its config/train_shakespeare_char.py.
GPT_SIZES = {
    "cpu": dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0,
                bias=False, batch_size=12),
    "gpu": dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2,
                bias=False, batch_size=64),
}
GPT_FAST = dict(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0,
                bias=False, batch_size=2)
GPT_TRAINING = dict(learning_rate=1e-3, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0)

#: Zaremba, Sutskever & Vinyals (2014): "small" (no dropout) and "medium" (dropout 0.5).
LSTM_SIZES = {
    "small": dict(embed_dim=200, hidden_size=200, num_layers=2, dropout=0.0, init_scale=0.1),
    "medium": dict(embed_dim=650, hidden_size=650, num_layers=2, dropout=0.5, init_scale=0.05),
}
LSTM_FAST = {
    "small": dict(embed_dim=8, hidden_size=8, num_layers=2, dropout=0.0, init_scale=0.1),
    "medium": dict(embed_dim=12, hidden_size=12, num_layers=2, dropout=0.5, init_scale=0.05),
}
LSTM_TRAINING = dict(vocab_size=10000, bptt=35, batch_size=20, learning_rate=1.0,
                     max_grad_norm=5.0)
LSTM_TRAINING_FAST = dict(LSTM_TRAINING, vocab_size=50, bptt=5, batch_size=2)

DEFAULT_COUNTS = {"gpt": (10, 5, 3), "lstm": (10, 5, 3), "ops": (20, 5, 3)}  # steps, rounds, warmup
FAST_COUNTS = (2, 2, 1)
N_BATCHES = 8                 # distinct batches (or BPTT windows), cycled through
LOSS_TOLERANCE = 1e-4         # |loss_minillm - loss_torch| <= this * max(1, |loss|): "agree"
TORCH_MISSING = "PyTorch is not installed (pip install torch): showing minillm alone"


# -- shared helpers ----------------------------------------------------------------------------
def _counts(kind, fast, steps, repeats, warmup):
    """``(steps, repeats, warmup)``: the given values, else the defaults (fast: 2, 2, 1)."""
    defaults = FAST_COUNTS if fast else DEFAULT_COUNTS[kind]
    given = (steps, repeats, warmup)
    steps, repeats, warmup = (d if v is None else v for d, v in zip(defaults, given))
    for name, value, low in (("steps", steps, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return steps, repeats, warmup


def _check_compare(compare):
    if compare not in (None, "torch"):
        raise ValueError(f"compare must be None or 'torch', got {compare!r}")


def _import_torch(compare, dev, say):
    """The ``torch`` module when a comparison is asked for and possible, else None (with a
    message saying why)."""
    if compare is None:
        return None
    try:
        import torch  # noqa: PLC0415 - optional dependency
    except ImportError:
        say(TORCH_MISSING)
        return None
    if dev.type == "cuda" and not torch.cuda.is_available():
        say("this PyTorch build has no CUDA (install a CUDA build of torch): showing minillm "
            "alone")
        return None
    return torch


def _torch_device(dev):
    """The PyTorch device matching minillm's ``dev``: ``cuda:N`` for CUDA, else ``cpu``."""
    return f"cuda:{dev.index}" if dev.type == "cuda" else "cpu"


def _blas_info():
    """NumPy's BLAS as ``"name version"`` (None where NumPy cannot tell)."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy, or an unusual build: the info is optional
        return None


def _environment(dev, torch):
    """Threads and versions: what a reader needs to compare two runs."""
    env = {"cpu_count": os.cpu_count(), "numpy": np.__version__, "numpy_blas": _blas_info(),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
           "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS")}
    if dev.type == "cuda":
        env["cupy"] = backend.cupy_status()
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        if dev.type == "cuda":
            env["torch_cuda_device"] = torch.cuda.get_device_name(dev.index)
            env["torch_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return env


def _header(name, dev, tdev, seed, fast, settings, env):
    from ... import __version__
    return {"benchmark": name, "version": __version__, "device": str(dev),
            "torch_device": tdev, "seed": seed, "fast": bool(fast), "settings": settings,
            "environment": env}


def _median(values):
    return float(statistics.median(values))


# -- FLOPs and MFU -----------------------------------------------------------------------------
def gpt_flops_per_token(model):
    """nanoGPT's count of the training FLOPs per token of a GPT,
    :func:`minillm.estimate.transformer_flops_per_token` with ``N`` the parameters without the
    position embeddings (the tied ``wte`` counts once, as the output matmul) and ``T`` the
    block size."""
    c = model.config
    return transformer_flops_per_token(model.num_parameters() - model.wpe.weight.size,
                                       c.n_layer, c.n_head, c.n_embd // c.n_head, c.block_size)


def lstm_flops_per_token(model):
    """``6 N`` training FLOPs per token of an :class:`~minillm.models.LSTMLM`, with ``N`` the
    LSTM weights and biases plus the decoder (output) weight and bias: each of these is
    used once per token in a multiply-add (2 flops forward, 4 backward). The embedding
    table is excluded: a lookup is not a matmul (with tied weights its matrix is counted
    once, as the decoder)."""
    n = sum(p.size for name, p in model.named_parameters() if not name.startswith("embed."))
    if model.config.tie_weights:
        n += model.embed.weight.size
    return 6 * n


def mfu(flops_per_step, ms_per_step, peak_gflops):
    """Model FLOPs utilisation: ``flops_per_step / (ms_per_step / 1000) / (peak_gflops *
    1e9)``, the fraction of the measured peak the training step achieves (None without a
    peak)."""
    if not peak_gflops or not ms_per_step:
        return None
    return flops_per_step / (ms_per_step / 1000.0) / (peak_gflops * 1e9)


# -- matmul peak -------------------------------------------------------------------------------
def _peak_defaults(dev, fast, n, repeats):
    if n is None:
        n = 128 if fast else (4096 if dev.type == "cuda" else 1024)
    if repeats is None:
        repeats = 2 if fast else 5
    return n, repeats


def _gflops_rounds(matmul, sync, n, repeats, inner):
    """GFLOP/s of ``repeats`` rounds of ``inner`` products (2 n^3 flops each), after three
    untimed products (the first products also start the library's threads, and another
    library's BLAS threads may still be spinning from the previous measurement)."""
    for _ in range(3):
        matmul()
    sync()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            matmul()
        sync()
        rates.append(2.0 * n ** 3 * inner / (time.perf_counter() - t0) / 1e9)
    return rates


def _peaks(dev, torch, tdev, n, repeats):
    """``{"n", "repeats", "minillm": {...}, "torch": {...} or None}`` (see matmul_peak)."""
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), dtype=np.float32)
    b_np = rng.standard_normal((n, n), dtype=np.float32)
    inner = 10 if dev.type == "cuda" else 3          # a GPU product takes milliseconds
    a, b = backend.to_device(a_np, dev), backend.to_device(b_np, dev)
    rates = _gflops_rounds(lambda: a @ b, lambda: backend.synchronize(dev), n, repeats, inner)
    module = dev.xp.__name__.split(".")[0]
    out = {"n": n, "repeats": repeats, "products_per_round": inner,
           "minillm": {"library": module, "gflops": _median(rates), "gflops_rounds": rates},
           "torch": None}
    if torch is not None:
        ta, tb = torch.from_numpy(a_np).to(tdev), torch.from_numpy(b_np).to(tdev)
        rates = _gflops_rounds(lambda: ta @ tb, _torch_sync(torch, tdev), n, repeats, inner)
        out["torch"] = {"library": "torch", "gflops": _median(rates), "gflops_rounds": rates}
    return out


def matmul_peak(device=None, n=None, repeats=None, compare=None, fast=False, log=print):
    """The float32 matmul throughput of ``device``: the median GFLOP/s over ``repeats``
    rounds of products of two random ``n x n`` matrices (``2 n^3`` flops each; on CUDA a
    round is 10 products), for the device's array library (NumPy, CuPy) and, with
    ``compare="torch"``, for PyTorch on the matching device. ``n`` defaults to 1024 on
    the CPU (a fraction of a second per product), 4096 on CUDA, 128 in ``fast`` mode.

    Returns ``{"n", "repeats", "products_per_round", "minillm": {"library", "gflops",
    "gflops_rounds"}, "torch": the same or None}``; the MFU denominators of the benchmarks.
    """
    _check_compare(compare)
    dev = backend.device(device)
    n, repeats = _peak_defaults(dev, fast, n, repeats)
    torch = _import_torch(compare, dev, _logger(log))
    return _peaks(dev, torch, _torch_device(dev), n, repeats)


# -- the PyTorch reference models ------------------------------------------------------------------
_TORCH_CLASSES = {}


def _torch_attention_class(nn, TF):
    """nanoGPT's attention as a torch module class (built on first use: torch is optional)."""

    class CausalSelfAttention(nn.Module):
        """nanoGPT's attention: fused c_attn (d -> 3d), torch's SDPA with is_causal."""

        def __init__(self, c):
            super().__init__()
            self.n_head, self.dropout = c.n_head, c.dropout
            self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
            self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
            self.resid_dropout = nn.Dropout(c.dropout)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.c_attn(x).split(d, dim=2)
            q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)
                       for z in (q, k, v))
            y = TF.scaled_dot_product_attention(
                q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0.0,
                is_causal=True)
            y = y.transpose(1, 2).contiguous().view(b, t, d)
            return self.resid_dropout(self.c_proj(y))

    return CausalSelfAttention


def _torch_block_class(nn, TF):
    """nanoGPT's transformer block (pre-LN attention and GELU MLP) as a torch module class."""
    attention_class = _torch_attention_class(nn, TF)

    class MLP(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
            self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)
            self.dropout = nn.Dropout(c.dropout)

        def forward(self, x):
            return self.dropout(self.c_proj(TF.gelu(self.c_fc(x), approximate="tanh")))

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.ln_1 = nn.LayerNorm(c.n_embd, bias=c.bias)
            self.attn = attention_class(c)
            self.ln_2 = nn.LayerNorm(c.n_embd, bias=c.bias)
            self.mlp = MLP(c)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    return Block


def _torch_gpt_class(torch, nn, TF):
    """nanoGPT's GPT as a torch module class, with minillm's parameter names."""
    block_class = _torch_block_class(nn, TF)

    class TorchGPT(nn.Module):
        """nanoGPT's model with minillm's parameter names (no ``transformer.`` prefix); the
        head is tied to ``wte`` (nanoGPT's ``lm_head.weight = wte.weight``)."""

        def __init__(self, c):
            super().__init__()
            self.config = c
            self.wte = nn.Embedding(c.vocab_size, c.n_embd)
            self.wpe = nn.Embedding(c.block_size, c.n_embd)
            self.drop = nn.Dropout(c.dropout)
            self.h = nn.ModuleList([block_class(c) for _ in range(c.n_layer)])
            self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)

        def forward(self, ids, targets=None):
            pos = torch.arange(ids.shape[1], device=ids.device)
            x = self.drop(self.wte(ids) + self.wpe(pos))
            for block in self.h:
                x = block(x)
            logits = TF.linear(self.ln_f(x), self.wte.weight)
            if targets is None:
                return logits
            loss = TF.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
            return logits, loss

    return TorchGPT


def _torch_lstm_class(nn):
    """minillm's LSTMLM as a torch module class (``nn.LSTM`` inside)."""

    class TorchLSTMLM(nn.Module):
        """Embedding -> dropout -> nn.LSTM -> dropout -> Linear, as minillm's LSTMLM."""

        def __init__(self, c):
            super().__init__()
            self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
            self.drop = nn.Dropout(c.dropout)
            self.lstm = nn.LSTM(c.embed_dim, c.hidden_size, c.num_layers, batch_first=True,
                                dropout=c.dropout if c.num_layers > 1 else 0.0)
            self.head = nn.Linear(c.hidden_size, c.vocab_size)

        def forward(self, ids, state=None):
            out, state = self.lstm(self.drop(self.embed(ids)), state)
            return self.head(self.drop(out)), state

    return TorchLSTMLM


def _torch_classes():
    """The reference modules (defined once, on first use, so torch stays optional)."""
    if _TORCH_CLASSES:
        return _TORCH_CLASSES
    import torch  # noqa: PLC0415
    import torch.nn.functional as TF  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    _TORCH_CLASSES.update(gpt=_torch_gpt_class(torch, nn, TF), lstm=_torch_lstm_class(nn))
    return _TORCH_CLASSES


def _load_into_torch(tmodel, arrays):
    """Copy ``{torch parameter name: host array}`` into ``tmodel``; the names and shapes must
    match its ``named_parameters()`` exactly."""
    import torch  # noqa: PLC0415
    params = dict(tmodel.named_parameters())
    if set(params) != set(arrays):
        raise RuntimeError(f"weight copy to PyTorch: names differ; only minillm: "
                           f"{sorted(set(arrays) - set(params))}, only torch: "
                           f"{sorted(set(params) - set(arrays))}")
    with torch.no_grad():
        for name, p in params.items():
            a = np.ascontiguousarray(arrays[name], dtype=np.float32)
            if tuple(p.shape) != a.shape:
                raise RuntimeError(f"weight copy to PyTorch: {name} is {tuple(p.shape)} in "
                                   f"torch, {a.shape} from minillm")
            p.copy_(torch.from_numpy(a))
    return tmodel


def torch_gpt(model, device="cpu"):
    """A PyTorch nanoGPT with the configuration and the current weights of the minillm
    :class:`~minillm.models.GPT` ``model``, float32 on ``device``. Parameter names are the
    same; minillm's ``Linear.weight`` is ``(in, out)``, torch's ``(out, in)``: transposed."""
    import torch  # noqa: PLC0415
    tmodel = _torch_classes()["gpt"](model.config)
    arrays = {}
    for name, p in model.named_parameters():
        a = p.numpy()
        if a.ndim == 2 and not name.startswith(("wte.", "wpe.")):
            a = a.T
        arrays[name] = a
    return _load_into_torch(tmodel, arrays).to(device=device, dtype=torch.float32)


def torch_lstm_lm(model, device="cpu"):
    """A PyTorch LSTM language model with the configuration and the current weights of the
    minillm :class:`~minillm.models.LSTMLM` ``model`` (untied), float32 on ``device``.

    minillm's ``lstm.weight_ih_l{k}`` (in, 4H) / ``weight_hh_l{k}`` (H, 4H) are transposed
    (same gate order i, f, g, o); its one ``bias_l{k}`` goes to ``bias_ih_l{k}`` and torch's
    second bias ``bias_hh_l{k}`` is zero and frozen (``requires_grad=False``), so both models
    have the same function and the same trainable parameters. ``head.weight`` is transposed.
    """
    import torch  # noqa: PLC0415
    if model.config.tie_weights:
        raise ValueError("torch_lstm_lm: tied weights are not supported (the benchmark's "
                         "Zaremba models are untied)")
    tmodel = _torch_classes()["lstm"](model.config)
    arrays = {}
    for name, p in model.named_parameters():
        a = p.numpy()
        if name.startswith("lstm.bias_l"):
            k = name[len("lstm.bias_l"):]
            arrays[f"lstm.bias_ih_l{k}"] = a
            arrays[f"lstm.bias_hh_l{k}"] = np.zeros_like(a)
        elif name.startswith("lstm.weight_") or name == "head.weight":
            arrays[name] = a.T
        else:
            arrays[name] = a
    _load_into_torch(tmodel, arrays)
    for name, p in tmodel.named_parameters():
        if name.startswith("lstm.bias_hh_l"):
            p.requires_grad_(False)
    return tmodel.to(device=device, dtype=torch.float32)


def _torch_sync(torch, tdev):
    if tdev.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def _torch_adamw(torch, tmodel, tdev, weight_decay, learning_rate, betas):
    """nanoGPT's ``configure_optimizers``: decay on the 2-D parameters, fused on CUDA."""
    params = [p for p in tmodel.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    extra = {"fused": True} if tdev.startswith("cuda") else {}
    return torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), **extra)


# -- timing ------------------------------------------------------------------------------------
class _Runner(NamedTuple):
    """One library's side: ``step()`` does one training step and returns its loss (not read,
    so nothing synchronises); ``sync()`` waits for the device."""

    step: Callable
    sync: Callable


def _time_steps(runner, steps):
    """``(ms per step, last loss)`` of ``steps`` consecutive steps, synchronised at both ends."""
    runner.sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = runner.step()
    runner.sync()
    return 1000.0 * (time.perf_counter() - t0) / steps, loss


#: Idle time before each timed block. After a call, OpenBLAS's worker threads busy-wait for
#: about 0.1 s (2^28 cycles, its default THREAD_TIMEOUT) and PyTorch's OpenMP threads spin
#: briefly too: without a pause the library timed next shares the cores with the previous
#: library's spinning threads. Measured on the GPT CPU config at 2 threads: PyTorch 38.8
#: ms/step right after NumPy's round, 31.0 ms alone.
SETTLE_SECONDS = 0.25


def _interleaved(runners, steps, repeats, warmup, bar):
    """``warmup`` untimed steps each, then ``repeats`` rounds of ``steps`` timed steps of each
    runner in turn, each timed block after :data:`SETTLE_SECONDS` of idle time and one
    untimed step. Returns ``({name: [ms per step of each round]}, {name: last loss})``."""
    last = {}
    for name, runner in runners.items():
        for _ in range(warmup):
            last[name] = runner.step()
        runner.sync()
    rounds = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            if len(runners) > 1:
                time.sleep(SETTLE_SECONDS)
                runner.step()
            ms, last[name] = _time_steps(runner, steps)
            rounds[name].append(ms)
        bar.set_postfix(**{f"{name}_ms": f"{r[-1]:.1f}" for name, r in rounds.items()})
        bar.update()
    return rounds, last


def _library_summary(rounds, tokens_per_step, flops_per_step, peak):
    ms = _median(rounds)
    gflops = peak["gflops"] if peak else None
    return {"ms_per_step": ms, "ms_per_step_rounds": rounds, "ms_per_step_min": min(rounds),
            "tokens_per_second": tokens_per_step / (ms / 1000.0),
            "achieved_gflops": flops_per_step / (ms / 1000.0) / 1e9,
            "peak_gflops": gflops, "mfu": mfu(flops_per_step, ms, gflops)}


def _ratios(rounds):
    """Per-round ratios minillm / torch and their median (None without torch)."""
    if "torch" not in rounds:
        return None, None
    per = [m / t for m, t in zip(rounds["minillm"], rounds["torch"])]
    return _median(per), per


def _loss_check(loss_minillm, loss_torch):
    if loss_torch is None:
        return {"loss_minillm": loss_minillm, "loss_torch": None, "loss_abs_diff": None,
                "losses_agree": None}
    diff = abs(loss_minillm - loss_torch)
    return {"loss_minillm": loss_minillm, "loss_torch": loss_torch, "loss_abs_diff": diff,
            "losses_agree": bool(diff <= LOSS_TOLERANCE * max(1.0, abs(loss_torch)))}


def _timed_comparison(runners, first_losses, steps, repeats, warmup, bar, tokens_per_step,
                      flops_per_step, peaks, say, label):
    """Time the runners and summarise: the block shared by the GPT and LSTM results."""
    check = _loss_check(*first_losses)
    if check["losses_agree"] is False:
        say(f"warning: {label}: first-batch losses differ (minillm {check['loss_minillm']:.6f}, "
            f"torch {check['loss_torch']:.6f}): the comparison is not like for like")
    rounds, last = _interleaved(runners, steps, repeats, warmup, bar)
    out = {"minillm": _library_summary(rounds["minillm"], tokens_per_step, flops_per_step,
                                       peaks["minillm"]),
           "torch": None}
    if "torch" in rounds:
        out["torch"] = _library_summary(rounds["torch"], tokens_per_step, flops_per_step,
                                        peaks["torch"])
    out["ratio"], out["ratio_rounds"] = _ratios(rounds)
    out.update(check)
    out["final_loss_minillm"] = last["minillm"].item()
    out["final_loss_torch"] = last["torch"].item() if "torch" in last else None
    return out


def _bar_plot(path, groups, series, title, ylabel, logy=False):
    """Grouped bars: ``series`` is ``{label: [value per group]}`` (None: no bar)."""
    fig, ax = new_axes((max(4.0, 1.2 * len(groups) + 2), 4))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + i * width for g, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=label)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels(groups)
    return save_axes(fig, ax, path, title, ylabel, logy)


# == 1. GPT ===================================================================================
def _gpt_size(size, dev):
    return recipe_size(size, dev, GPT_SIZES)


def _gpt_settings(size, fast):
    s = dict(GPT_FAST if fast else GPT_SIZES[size])
    s.update(GPT_TRAINING, size=size)
    return s


def _gpt_config(s):
    return GPTConfig(vocab_size=s["vocab_size"], block_size=s["block_size"],
                     n_layer=s["n_layer"], n_head=s["n_head"], n_embd=s["n_embd"],
                     dropout=s["dropout"], bias=s["bias"])


def _gpt_batches(s, seed, n_batches):
    """``n_batches`` host batches ``(x, y)`` of random token ids, y = x shifted by one."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, s["vocab_size"], size=(n_batches, s["batch_size"],
                                                 s["block_size"] + 1), dtype=np.int64)
    return [(np.ascontiguousarray(b[:, :-1]), np.ascontiguousarray(b[:, 1:])) for b in ids]


def _minillm_gpt_runner(model, opt, batches, grad_clip, dev):
    params = list(model.parameters())
    cycle = itertools.cycle(batches)

    def step():
        x, y = next(cycle)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(params, grad_clip)
        opt.step()
        return loss

    return _Runner(step, lambda: backend.synchronize(dev))


def _torch_gpt_runner(torch, tmodel, opt, batches, grad_clip, tdev):
    params = list(tmodel.parameters())
    cycle = itertools.cycle(batches)

    def step():
        x, y = next(cycle)
        _, loss = tmodel(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        return loss

    return _Runner(step, _torch_sync(torch, tdev))


def _eval_loss_minillm(model, *inputs):
    model.eval()
    try:
        with no_grad():
            out = model(*inputs)
    finally:
        model.train()
    return out


def _eval_loss_torch(torch, tmodel, *inputs):
    tmodel.eval()
    try:
        with torch.no_grad():
            out = tmodel(*inputs)
    finally:
        tmodel.train()
    return out


def _gpt_minillm_side(s, dev, seed, host_batches):
    """The seeded minillm GPT with its AdamW and runner on the device batches, and its
    first-batch eval loss: ``(model, runner, first_loss)``."""
    backend.manual_seed(seed)
    model = GPT(_gpt_config(s)).to(dev)
    opt = model.configure_optimizers(s["weight_decay"], s["learning_rate"], s["betas"])
    batches = [(tensor(x, device=dev), tensor(y, device=dev)) for x, y in host_batches]
    runner = _minillm_gpt_runner(model, opt, batches, s["grad_clip"], dev)
    return model, runner, _eval_loss_minillm(model, *batches[0])[1].item()


def _gpt_torch_side(torch, model, host_batches, s, seed, tdev):
    """The PyTorch copy of ``model`` with nanoGPT's AdamW (named in ``s``) and its runner on
    the same batches, and its first-batch eval loss: ``(runner, first_loss)``."""
    torch.manual_seed(seed)
    tmodel = torch_gpt(model, tdev)
    topt = _torch_adamw(torch, tmodel, tdev, s["weight_decay"], s["learning_rate"], s["betas"])
    tbatches = [(torch.from_numpy(x).to(tdev), torch.from_numpy(y).to(tdev))
                for x, y in host_batches]
    first = _eval_loss_torch(torch, tmodel, *tbatches[0])[1].item()
    runner = _torch_gpt_runner(torch, tmodel, topt, tbatches, s["grad_clip"], tdev)
    s["torch_optimizer"] = "AdamW" + (" (fused)" if tdev.startswith("cuda") else "")
    return runner, first


def _gpt_timing(model, runners, first, s, dev, torch, tdev, fast, progress, say):
    """Measure the matmul peaks, then time the runners. Returns ``(timing, sizes)``: the
    summary of :func:`_timed_comparison` and the model's counts with the peaks."""
    n, peak_repeats = _peak_defaults(dev, fast, None, None)
    peaks = _peaks(dev, torch, tdev, n, peak_repeats)
    tokens_per_step = s["batch_size"] * s["block_size"]
    flops_per_token = gpt_flops_per_token(model)
    steps, repeats, warmup = s["steps"], s["repeats"], s["warmup"]
    say(f"bench gpt: {s['n_layer']} layers, {s['n_head']} heads, {s['n_embd']} dims, block "
        f"{s['block_size']}, batch {s['batch_size']}, {model.num_parameters():,} parameters "
        f"on {dev}{' vs torch on ' + tdev if torch is not None else ''}; {repeats} rounds of "
        f"{steps} steps after {warmup} warmup")
    bar = _bar(repeats, "bench gpt", progress)
    try:
        timing = _timed_comparison(runners, first, steps, repeats, warmup, bar,
                                   tokens_per_step, flops_per_token * tokens_per_step, peaks,
                                   say, "gpt")
    finally:
        bar.close()
    sizes = {"parameters": int(model.num_parameters()), "flops_per_token": int(flops_per_token),
             "tokens_per_step": tokens_per_step,
             "flops_per_step": int(flops_per_token * tokens_per_step), "matmul_peak": peaks}
    return timing, sizes


def _plot_gpt(result, dev, path):
    """The ms per step of each library, as bars."""
    _bar_plot(path, [f"GPT ({result['settings']['size']})"],
              {lib: [result[lib]["ms_per_step"] if result[lib] else None]
               for lib in ("minillm", "torch")},
              f"GPT training step on {dev}", "ms / step")


def bench_gpt(device=None, size=None, compare=None, steps=None, repeats=None, warmup=None,
              seed=0, fast=False, progress=True, output_dir=None, log=print):
    """Training-step speed of nanoGPT's GPT (:data:`GPT_SIZES`).

    ``size="cpu"``: 4 layers, 4 heads, 128 dims, block 64, batch 12, vocabulary 65, no
    dropout, no biases (nanoGPT's CPU run); ``size="gpu"``: 6 x 6 x 384, block 256, batch
    64, dropout 0.2 (its train_shakespeare_char config). Default: ``gpu`` on CUDA, else
    ``cpu``. A step: forward and loss, zero_grad, backward, clip the gradient norm at 1.0,
    AdamW (lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on 2-D weights:
    ``model.configure_optimizers``). Data: :data:`N_BATCHES` batches of seeded random token
    ids, made on the device before timing and cycled through, the same for both libraries.
    Counts default to 10 steps x 5 rounds after 3 warmup steps.

    Returns keys: ``minillm`` and ``torch`` (``{ms_per_step, ms_per_step_rounds,
    ms_per_step_min, tokens_per_second, achieved_gflops, peak_gflops, mfu}``; ``torch`` None
    without a comparison), ``ratio`` (median of the per-round minillm / torch ratios),
    ``ratio_rounds``, ``loss_minillm``/``loss_torch``/``loss_abs_diff``/``losses_agree``
    (first batch, eval mode, before training), ``final_loss_minillm``/``final_loss_torch``
    (the last timed step's training loss), ``parameters``, ``flops_per_token`` (nanoGPT's,
    :func:`gpt_flops_per_token`), ``tokens_per_step``, ``flops_per_step``, ``matmul_peak``,
    ``total_seconds`` and the common ``benchmark``, ``version``, ``device``,
    ``torch_device``, ``seed``, ``fast``, ``settings``, ``environment``.
    """
    say = _logger(log)
    t_start = time.perf_counter()
    _check_compare(compare)
    steps, repeats, warmup = _counts("gpt", fast, steps, repeats, warmup)
    with _on(device) as dev:
        s = _gpt_settings(_gpt_size(size, dev), fast)
        s.update(steps=steps, repeats=repeats, warmup=warmup, n_batches=N_BATCHES)
        torch = _import_torch(compare, dev, say)
        tdev = _torch_device(dev) if torch is not None else None
        host_batches = _gpt_batches(s, seed, N_BATCHES)
        model, runner, loss = _gpt_minillm_side(s, dev, seed, host_batches)
        runners, first = {"minillm": runner}, [loss, None]
        if torch is not None:
            runners["torch"], first[1] = _gpt_torch_side(torch, model, host_batches, s, seed,
                                                         tdev)
        timing, sizes = _gpt_timing(model, runners, first, s, dev, torch, tdev, fast, progress,
                                    say)
    result = _header("gpt", dev, tdev, seed, fast, s, _environment(dev, torch))
    result.update(timing)
    result.update(sizes, total_seconds=time.perf_counter() - t_start)
    return _finish(result, output_dir, lambda path: _plot_gpt(result, dev, path), log)


# == 2. LSTM ==================================================================================
def _parse_sizes(sizes):
    if isinstance(sizes, str):
        sizes = [x.strip() for x in sizes.split(",") if x.strip()]
    sizes = list(sizes)
    bad = [x for x in sizes if x not in LSTM_SIZES]
    if bad or not sizes:
        raise ValueError(f"sizes must be a non-empty list of {', '.join(LSTM_SIZES)}, got "
                         f"{bad or sizes!r}")
    return list(dict.fromkeys(sizes))


def _lstm_windows(s, seed, n_windows):
    """``n_windows`` consecutive BPTT windows ``(x, y)`` of one random token stream per row."""
    rng = np.random.default_rng(seed)
    bptt = s["bptt"]
    ids = rng.integers(0, s["vocab_size"], size=(s["batch_size"], n_windows * bptt + 1),
                       dtype=np.int64)
    return [(np.ascontiguousarray(ids[:, i * bptt:(i + 1) * bptt]),
             np.ascontiguousarray(ids[:, i * bptt + 1:(i + 1) * bptt + 1]))
            for i in range(n_windows)]


def _minillm_lstm_runner(model, opt, windows, s, dev):
    """Zaremba's step (as quality.ptb_lstm): the state carried over and detached, the mean
    token loss times the BPTT length back-propagated, the gradient norm clipped, SGD."""
    params = list(model.parameters())
    cycle = itertools.cycle(windows)
    state = [None]

    def step():
        x, y = next(cycle)
        logits, st = model(x, state[0], return_state=True)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        (loss * s["bptt"]).backward()
        clip_grad_norm_(params, s["max_grad_norm"])
        opt.step()
        state[0] = model.detach_state(st)
        return loss

    return _Runner(step, lambda: backend.synchronize(dev))


def _torch_lstm_runner(torch, tmodel, opt, windows, s, tdev):
    params = [p for p in tmodel.parameters() if p.requires_grad]
    cycle = itertools.cycle(windows)
    state = [None]
    TF = torch.nn.functional

    def step():
        x, y = next(cycle)
        logits, st = tmodel(x, state[0])
        loss = TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        (loss * s["bptt"]).backward()
        torch.nn.utils.clip_grad_norm_(params, s["max_grad_norm"])
        opt.step()
        state[0] = tuple(z.detach() for z in st)
        return loss

    return _Runner(step, _torch_sync(torch, tdev))


def _bench_lstm_size(name, s, dev, torch, tdev, seed, counts, peaks, bar, say):
    """One size of :func:`bench_lstm`: its settings, timings and loss check."""
    steps, repeats, warmup = counts
    windows = _lstm_windows(s, seed, N_BATCHES)
    backend.manual_seed(seed)
    cfg = LSTMLMConfig(vocab_size=s["vocab_size"], embed_dim=s["embed_dim"],
                       hidden_size=s["hidden_size"], num_layers=s["num_layers"],
                       dropout=s["dropout"], tie_weights=False)
    model = zaremba_init_(LSTMLM(cfg).to(dev), s["init_scale"])
    x0, y0 = (tensor(a, device=dev) for a in windows[0])
    first = [F.cross_entropy(_eval_loss_minillm(model, x0), y0).item(), None]
    dwindows = [(tensor(x, device=dev), tensor(y, device=dev)) for x, y in windows]
    runners = {"minillm": _minillm_lstm_runner(model, SGD(model.parameters(),
                                                          lr=s["learning_rate"]),
                                               dwindows, s, dev)}
    if torch is not None:
        torch.manual_seed(seed)
        tmodel = torch_lstm_lm(model, tdev)
        twindows = [(torch.from_numpy(x).to(tdev), torch.from_numpy(y).to(tdev))
                    for x, y in windows]
        logits, _ = _eval_loss_torch(torch, tmodel, twindows[0][0])
        first[1] = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), twindows[0][1].reshape(-1)).item()
        topt = torch.optim.SGD([p for p in tmodel.parameters() if p.requires_grad],
                               lr=s["learning_rate"])
        runners["torch"] = _torch_lstm_runner(torch, tmodel, topt, twindows, s, tdev)
    tokens_per_step = s["batch_size"] * s["bptt"]
    flops_per_token = lstm_flops_per_token(model)
    say(f"bench lstm {name}: {s['num_layers']} x LSTM({s['hidden_size']}), vocab "
        f"{s['vocab_size']}, dropout {s['dropout']}, {model.num_parameters():,} parameters, "
        f"batch {s['batch_size']} x bptt {s['bptt']}")
    out = {"settings": s, "parameters": int(model.num_parameters()),
           "flops_per_token": int(flops_per_token), "tokens_per_step": tokens_per_step,
           "flops_per_step": int(flops_per_token * tokens_per_step)}
    out.update(_timed_comparison(runners, first, steps, repeats, warmup, bar, tokens_per_step,
                                 flops_per_token * tokens_per_step, peaks, say, f"lstm {name}"))
    return out


def bench_lstm(device=None, sizes=("small", "medium"), compare=None, steps=None, repeats=None,
               warmup=None, seed=0, fast=False, progress=True, output_dir=None, log=print):
    """Training-step speed of the PTB word LSTMs of Zaremba et al. (2014) (:data:`LSTM_SIZES`).

    ``small``: 2 layers x 200 hidden units (embedding 200), no dropout, init U(-0.1, 0.1);
    ``medium``: 2 x 650, dropout 0.5, init U(-0.05, 0.05); vocabulary 10,000, batch 20, BPTT
    35. A step (as :func:`minillm.apps.bench.quality.ptb_lstm`): forward over one BPTT window
    from the carried state, cross-entropy (the token mean times the BPTT length
    back-propagated, their loss scale), backward, gradient norm clipped at 5, SGD lr 1.0,
    the state detached for the next window. Data: :data:`N_BATCHES` consecutive windows of
    a seeded random token stream, the same for both libraries. ``sizes``: names or a comma
    list ("small,medium").

    Flops: ``6 N`` per token with ``N`` the LSTM and decoder weights and biases (embedding
    lookups excluded, :func:`lstm_flops_per_token`); MFU against :func:`matmul_peak`.

    Returns keys: ``sizes`` (``{name: {settings, parameters, flops_per_token,
    tokens_per_step, flops_per_step, minillm, torch, ratio, ratio_rounds, loss_minillm,
    loss_torch, loss_abs_diff, losses_agree, final_loss_minillm, final_loss_torch}}``, the
    same per-library blocks as :func:`bench_gpt`), ``matmul_peak``, ``total_seconds`` and
    the common keys.
    """
    say = _logger(log)
    t_start = time.perf_counter()
    _check_compare(compare)
    sizes = _parse_sizes(sizes)
    counts = _counts("lstm", fast, steps, repeats, warmup)
    common = dict(LSTM_TRAINING_FAST if fast else LSTM_TRAINING)
    settings = dict(common, sizes=sizes, steps=counts[0], repeats=counts[1], warmup=counts[2],
                    n_batches=N_BATCHES, loss_scale="token mean x bptt (Zaremba et al.)")
    with _on(device) as dev:
        torch = _import_torch(compare, dev, say)
        tdev = _torch_device(dev) if torch is not None else None
        n, peak_repeats = _peak_defaults(dev, fast, None, None)
        peaks = _peaks(dev, torch, tdev, n, peak_repeats)
        per_size = {}
        bar = _bar(counts[1] * len(sizes), "bench lstm", progress)
        try:
            for name in sizes:
                s = dict(common, size=name, **(LSTM_FAST if fast else LSTM_SIZES)[name])
                per_size[name] = _bench_lstm_size(name, s, dev, torch, tdev, seed, counts,
                                                  peaks, bar, say)
        finally:
            bar.close()
    result = _header("lstm", dev, tdev, seed, fast, settings, _environment(dev, torch))
    result.update(sizes=per_size, matmul_peak=peaks, total_seconds=time.perf_counter() - t_start)

    def plot(path):
        _bar_plot(path, sizes, {lib: [per_size[k][lib]["ms_per_step"] if per_size[k][lib]
                                      else None for k in sizes] for lib in ("minillm", "torch")},
                  f"Zaremba LSTM training step on {dev}", "ms / step")

    return _finish(result, output_dir, plot, log)


# == 3. single ops ============================================================================
class _OpCase(NamedTuple):
    """One op: a description of the shapes, the host inputs (the float ones get gradients),
    the minillm call ``minillm(inputs)`` and the torch call ``torch(TF, inputs)`` on the
    inputs moved to each library's device, and the forward + backward flops (None: not a
    matmul-type op)."""

    name: str
    shapes: str
    inputs: dict
    minillm: Callable
    torch: Callable
    flops: int | None


def _op_cases(s, seed):
    """The ops of a GPT step at the configuration ``s`` (bias-free, as nanoGPT's)."""
    rng = np.random.default_rng(seed)
    b, t, d, h, v = s["batch_size"], s["block_size"], s["n_embd"], s["n_head"], s["vocab_size"]
    q = d // h

    def randn(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    return [
        _OpCase("linear", f"x ({b}, {t}, {d}) @ W ({d}, {4 * d})",
                {"x": randn(b, t, d), "w": randn(d, 4 * d) * 0.02},
                lambda a: F.linear(a["x"], a["w"]),
                lambda TF, a: TF.linear(a["x"], a["w"].t()),   # nn.Linear's (out, in) layout
                3 * 2 * b * t * d * 4 * d),
        _OpCase("sdpa", f"q, k, v ({b}, {h}, {t}, {q}), causal",
                {"q": randn(b, h, t, q), "k": randn(b, h, t, q), "v": randn(b, h, t, q)},
                lambda a: F.scaled_dot_product_attention(a["q"], a["k"], a["v"], is_causal=True),
                lambda TF, a: TF.scaled_dot_product_attention(a["q"], a["k"], a["v"],
                                                              is_causal=True),
                3 * 4 * b * h * t * t * q),
        _OpCase("layer_norm", f"x ({b}, {t}, {d}), weight ({d},)",
                {"x": randn(b, t, d), "weight": 1.0 + 0.1 * randn(d)},
                lambda a: F.layer_norm(a["x"], a["weight"], None),
                lambda TF, a: TF.layer_norm(a["x"], (d,), a["weight"], None),
                None),
        _OpCase("cross_entropy", f"logits ({b * t}, {v}), targets ({b * t},)",
                {"logits": randn(b * t, v), "targets": rng.integers(0, v, b * t)},
                lambda a: F.cross_entropy(a["logits"], a["targets"]),
                lambda TF, a: TF.cross_entropy(a["logits"], a["targets"]),
                None),
        _OpCase("embedding", f"ids ({b}, {t}) into weight ({v}, {d})",
                {"ids": rng.integers(0, v, (b, t)), "weight": randn(v, d) * 0.02},
                lambda a: F.embedding(a["ids"], a["weight"]),
                lambda TF, a: TF.embedding(a["ids"], a["weight"]),
                None),
    ]


def _op_runner_minillm(case, dev, grad_host):
    inputs = {k: tensor(a, requires_grad=a.dtype.kind == "f", device=dev)
              for k, a in case.inputs.items()}
    leaves = [x for x in inputs.values() if x.requires_grad]
    grad = None if grad_host is None else tensor(grad_host, device=dev)

    def step():
        for x in leaves:
            x.grad = None
        out = case.minillm(inputs)
        out.backward(grad)
        return out

    return _Runner(step, lambda: backend.synchronize(dev))


def _op_runner_torch(torch, case, tdev, grad_host):
    inputs = {k: torch.from_numpy(np.ascontiguousarray(a)).to(tdev)
              .requires_grad_(a.dtype.kind == "f") for k, a in case.inputs.items()}
    leaves = [x for x in inputs.values() if x.requires_grad]
    grad = None if grad_host is None else torch.from_numpy(grad_host).to(tdev)
    TF = torch.nn.functional

    def step():
        for x in leaves:
            x.grad = None
        out = case.torch(TF, inputs)
        out.backward(grad)
        return out

    return _Runner(step, _torch_sync(torch, tdev))


def bench_ops(device=None, size=None, compare=None, steps=None, repeats=None, warmup=None,
              seed=0, fast=False, progress=True, output_dir=None, log=print):
    """Forward + backward time of single ops at the shapes of the GPT configuration ``size``
    (as :func:`bench_gpt`; B batch, T block, d width, h heads, V vocabulary):

    * ``linear``: x (B, T, d) @ W (d, 4d), the MLP's first matmul (flops 3 x 2 B T d 4d);
    * ``sdpa``: causal scaled dot-product attention of q, k, v (B, h, T, d/h) (flops
      3 x 4 B h T^2 (d/h), counting the full T x T scores as nanoGPT does);
    * ``layer_norm``: over d of x (B, T, d), with a weight and no bias;
    * ``cross_entropy``: mean over B T rows of V logits;
    * ``embedding``: the lookup of (B, T) ids into the (V, d) table and its scatter-add
      backward.

    A timed call: the gradients reset, the op, ``backward`` (with a fixed random output
    gradient, or none for the scalar loss). Same protocol as the training benchmarks, per op
    (counts default to 20 calls x 5 rounds after 3 warmup calls).

    Returns keys: ``ops`` (a list of ``{op, shapes, minillm_ms, torch_ms, ratio,
    minillm_ms_rounds, torch_ms_rounds, ratio_rounds, flops, minillm_gflops, torch_gflops,
    max_abs_diff}``, ``max_abs_diff`` the largest difference of the forward outputs of the
    two libraries), ``total_seconds`` and the common keys.
    """
    say = _logger(log)
    t_start = time.perf_counter()
    _check_compare(compare)
    steps, repeats, warmup = _counts("ops", fast, steps, repeats, warmup)
    with _on(device) as dev:
        s = _gpt_settings(_gpt_size(size, dev), fast)
        s.update(steps=steps, repeats=repeats, warmup=warmup)
        torch = _import_torch(compare, dev, say)
        tdev = _torch_device(dev) if torch is not None else None
        cases = _op_cases(s, seed)
        rng = np.random.default_rng([seed, 1])
        say(f"bench ops: shapes of the GPT '{s['size']}' configuration on {dev}"
            f"{' vs torch on ' + tdev if torch is not None else ''}")
        bar = _bar(repeats * len(cases), "bench ops", progress)
        rows = []
        try:
            for case in cases:
                rows.append(_bench_op(case, dev, torch, tdev, rng, steps, repeats, warmup, bar))
        finally:
            bar.close()
    result = _header("ops", dev, tdev, seed, fast, s, _environment(dev, torch))
    result.update(ops=rows, total_seconds=time.perf_counter() - t_start)

    def plot(path):
        _bar_plot(path, [r["op"] for r in rows],
                  {"minillm": [r["minillm_ms"] for r in rows],
                   "torch": [r["torch_ms"] for r in rows]},
                  f"forward + backward per op on {dev}", "ms / call", logy=True)

    return _finish(result, output_dir, plot, log)


def _bench_op(case, dev, torch, tdev, rng, steps, repeats, warmup, bar):
    """Time one op (see :func:`bench_ops`) and compare the forward outputs."""
    with no_grad():
        probe = case.minillm({k: tensor(a, device=dev) for k, a in case.inputs.items()})
    grad = None if probe.shape == () else rng.standard_normal(probe.shape, dtype=np.float32)
    runners = {"minillm": _op_runner_minillm(case, dev, grad)}
    if torch is not None:
        runners["torch"] = _op_runner_torch(torch, case, tdev, grad)
    rounds, last = _interleaved(runners, steps, repeats, warmup, bar)
    row = {"op": case.name, "shapes": case.shapes, "minillm_ms": _median(rounds["minillm"]),
           "torch_ms": None, "minillm_ms_rounds": rounds["minillm"], "torch_ms_rounds": None,
           "flops": case.flops, "minillm_gflops": None, "torch_gflops": None,
           "max_abs_diff": None}
    row["ratio"], row["ratio_rounds"] = _ratios(rounds)
    if torch is not None:
        row.update(torch_ms=_median(rounds["torch"]), torch_ms_rounds=rounds["torch"])
        diff = np.abs(last["minillm"].numpy() - last["torch"].detach().cpu().numpy())
        row["max_abs_diff"] = float(diff.max()) if diff.size else 0.0
    if case.flops:
        for lib in ("minillm", "torch"):
            if row[f"{lib}_ms"]:
                row[f"{lib}_gflops"] = case.flops / (row[f"{lib}_ms"] / 1000.0) / 1e9
    return row


# == registry and summaries ===================================================================
class SpeedBenchmark(NamedTuple):
    """A registered speed benchmark: the function and a one-line description."""

    fn: Callable
    description: str


SPEED_BENCHMARKS = {
    "gpt": SpeedBenchmark(bench_gpt, "training-step speed of nanoGPT's GPT (cpu: 4x4x128, "
                          "block 64, batch 12; gpu: 6x6x384, block 256, batch 64), ms/step, "
                          "tokens/s, MFU"),
    "lstm": SpeedBenchmark(bench_lstm, "training-step speed of Zaremba's PTB LSTMs (small "
                           "2x200, medium 2x650; batch 20, BPTT 35)"),
    "ops": SpeedBenchmark(bench_ops, "forward+backward time of matmul, attention, LayerNorm, "
                          "cross-entropy, embedding at the GPT's shapes"),
}


def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def _pct(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def _library_rows(block, peaks):
    lines = [f"    {'library':<8} {'ms/step':>9} {'tokens/s':>10} {'GFLOP/s':>9} {'MFU':>7} "
             f"{'matmul peak GFLOP/s':>20}"]
    for lib in ("minillm", "torch"):
        r = block[lib]
        if r is None:
            continue
        lines.append(f"    {lib:<8} {r['ms_per_step']:>9.2f} {r['tokens_per_second']:>10,.0f} "
                     f"{r['achieved_gflops']:>9.2f} {_pct(r['mfu']):>7} "
                     f"{_fmt(peaks[lib] and peaks[lib]['gflops'], '.1f'):>20}")
    if block["ratio"] is not None:
        lines.append(f"    ratio minillm/torch {block['ratio']:.2f} (rounds "
                     f"{min(block['ratio_rounds']):.2f}-{max(block['ratio_rounds']):.2f}); "
                     f"first-batch loss (eval) minillm {block['loss_minillm']:.5f}, torch "
                     f"{block['loss_torch']:.5f}, |diff| {block['loss_abs_diff']:.1e}")
    return lines


def _env_line(result):
    env = result["environment"]
    parts = [f"cpu_count {env.get('cpu_count')}",
             f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS') or 'unset'}"]
    if "torch_threads" in env:
        parts.append(f"torch threads {env['torch_threads']}")
    if env.get("numpy_blas"):
        parts.append(f"BLAS {env['numpy_blas']}")
    return "  environment: " + ", ".join(parts)


def format_speed(name, result):
    """A readable table of the speed ``result`` of benchmark ``name`` (gpt, lstm, ops)."""
    fast = " [fast mode: not comparable]" if result.get("fast") else ""
    s = result["settings"]
    vs = f" vs torch on {result['torch_device']}" if result.get("torch_device") else ""
    head = f"bench {name} (minillm {result.get('version')} on {result.get('device')}{vs}){fast}"
    counts = f"{s['repeats']} rounds x {s['steps']} steps, {s['warmup']} warmup"
    if name == "gpt":
        lines = [head, f"  GPT '{s['size']}': {s['n_layer']} layers, {s['n_head']} heads, "
                       f"{s['n_embd']} dims, block {s['block_size']}, batch {s['batch_size']}, "
                       f"dropout {s['dropout']}, {result['parameters']:,} parameters; {counts}"]
        lines += _library_rows(result, result["matmul_peak"])
    elif name == "lstm":
        lines = [head, f"  vocab {s['vocab_size']}, batch {s['batch_size']}, bptt {s['bptt']}; "
                       f"{counts}"]
        for size, block in result["sizes"].items():
            b = block["settings"]
            lines.append(f"  {size}: {b['num_layers']} x LSTM({b['hidden_size']}), dropout "
                         f"{b['dropout']}, {block['parameters']:,} parameters")
            lines += _library_rows(block, result["matmul_peak"])
    elif name == "ops":
        lines = [head, f"  shapes of GPT '{s['size']}' (forward + backward per call); "
                       f"{counts.replace('steps', 'calls')}",
                 f"    {'op':<14} {'minillm ms':>10} {'torch ms':>9} {'ratio':>6} "
                 f"{'max|diff|':>9}  shapes"]
        for r in result["ops"]:
            lines.append(f"    {r['op']:<14} {r['minillm_ms']:>10.3f} "
                         f"{_fmt(r['torch_ms'], '.3f'):>9} {_fmt(r['ratio'], '.2f'):>6} "
                         f"{_fmt(r['max_abs_diff'], '.1e'):>9}  {r['shapes']}")
    else:
        raise KeyError(f"unknown speed benchmark {name!r}; choose one of "
                       f"{', '.join(SPEED_BENCHMARKS)}")
    lines.append(_env_line(result))
    return "\n".join(lines)

