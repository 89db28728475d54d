"""``minillm bench load``: how fast a full-size checkpoint loads and how much memory it takes,
minillm beside Hugging Face ``transformers``.

For each shape - GPT-2 small (124M parameters) and BERT-base (110M, with its MLM head), and
with ``large=True`` GPT-2 large (774M) - a checkpoint with random weights is written on the
spot in Hugging Face's format (``config.json`` + ``model.safetensors``, float32): by
``transformers`` when it is installed, else by minillm's ``save_hf``. Then each library loads
it ``repeats`` times (``GPT.from_pretrained`` / ``BertForMaskedLM.from_pretrained``,
``transformers``' ``GPT2LMHeadModel`` / ``BertForMaskedLM``), **each load in a fresh Python
process**, so that one load's memory cannot hide in another's. In that process::

    time          wall-clock seconds of the from_pretrained call alone (imports excluded)
    growth        peak resident set during the load - resident set just before it
                  (VmHWM and VmRSS of /proc/self/status; the peak is reset after the imports
                  by writing 5 to /proc/self/clear_refs, so it is the load's own peak)
    memory ratio  growth / the weights' bytes (parameters x 4 for float32)

A memory ratio of 1.0 means the weights were held once; 2.0, that the whole model was in
memory twice at some moment. Resident memory counts the pages a process has touched:
``transformers`` maps the file into memory and its weights are read from the page cache
when first used, so its ratio right after loading can be well below 1. Reported per shape
and library: the median time and growth over the repeats, and the ratio minillm /
transformers of the median times. Memory is measured on Linux only (None elsewhere).

``fast=True`` loads tiny models of the same kinds once (the code path, in seconds; the numbers
are not comparable). ``libraries`` and ``saver`` let the tests run without ``transformers``.
"""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ...backend import default_device_as
from ...models import GPT, GPTConfig
from ...models.bert import BertConfig, BertForMaskedLM
from ...models.hf import save_hf
from ...nn.init import skip_init
from .quality import _finish, _header, _logger

__all__ = ["load_benchmark", "SHAPES", "FAST_SHAPES", "TARGETS", "format_load"]

#: Hugging Face configs of the shapes: (kind, config keys)
SHAPES = {
    "gpt2-small": ("gpt2", {}),
    "bert-base": ("bert", {}),
    "gpt2-large": ("gpt2", {"n_layer": 36, "n_head": 20, "n_embd": 1280}),
}
FAST_SHAPES = {
    "gpt2-small": ("gpt2", {"n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 1000,
                            "n_positions": 128, "bos_token_id": 0, "eos_token_id": 0}),
    "bert-base": ("bert", {"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 64,
                           "intermediate_size": 256, "vocab_size": 1000,
                           "max_position_embeddings": 128}),
    "gpt2-large": ("gpt2", {"n_layer": 3, "n_head": 2, "n_embd": 64, "vocab_size": 1000,
                            "n_positions": 128, "bos_token_id": 0, "eos_token_id": 0}),
}
#: the goals of issue 24: seconds (or the ratio to transformers) and the memory ratio
TARGETS = {"gpt2-small": {"seconds": 1.0, "time_ratio": 2.0, "memory_ratio": 1.3},
           "bert-base": {"seconds": 1.0, "memory_ratio": 1.3},
           "gpt2-large": {"memory_ratio": 1.3}}

# The code each measuring process runs: imports, then one timed load. argv: library, kind,
# directory, device. Prints one JSON line.
_CHILD = r"""
import json, sys, time

def status(field):
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None

library, kind, directory, device = sys.argv[1:5]
if library == "transformers":
    import transformers
    cls = transformers.GPT2LMHeadModel if kind == "gpt2" else transformers.BertForMaskedLM
    load = lambda: cls.from_pretrained(directory)
else:
    from minillm.models import GPT
    from minillm.models.bert import BertForMaskedLM
    cls = GPT if kind == "gpt2" else BertForMaskedLM
    load = lambda: cls.from_pretrained(directory, device=device)
try:                                    # the peak from here on: the load's, not the imports'
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
except OSError:
    pass
before = status("VmRSS")
start = time.perf_counter()
model = load()
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_before": before, "rss_peak": status("VmHWM")}))
"""


def _transformers():
    try:
        import transformers  # noqa: F401, PLC0415
        return True
    except ImportError:
        return False


def _write_with_transformers(kind, keys, directory):
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415
    torch.manual_seed(0)
    if kind == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**keys))
    else:
        model = transformers.BertForMaskedLM(transformers.BertConfig(**keys))
    model.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def _write_with_minillm(kind, keys, directory):
    if kind == "gpt2":
        cfg = {"vocab_size": 50257, "n_positions": 1024, "n_layer": 12, "n_head": 12,
               "n_embd": 768, **keys}                  # transformers' GPT2Config defaults
        config, cls = GPTConfig(vocab_size=cfg["vocab_size"], block_size=cfg["n_positions"],
                                n_layer=cfg["n_layer"], n_head=cfg["n_head"],
                                n_embd=cfg["n_embd"]), GPT
    else:
        config, cls = BertConfig(**{"vocab_size": 30522, **keys}), BertForMaskedLM
    with skip_init(), default_device_as("cpu"):     # random weights, drawn fast
        model = cls(config)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape, dtype=np.float32) * np.float32(0.02)
    save_hf(model, directory)
    return model.num_parameters()


def _measure(library, kind, directory, device):
    """One load in a fresh process: ``{"seconds", "rss_before", "rss_peak"}``."""
    out = subprocess.run([sys.executable, "-c", _CHILD, library, kind, str(directory),
                          str(device or "cpu")], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench load: {library} could not load {directory}:\n"
                           f"{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(runs, weights_bytes):
    seconds = [r["seconds"] for r in runs]
    growth = [r["rss_peak"] - r["rss_before"] for r in runs
              if r["rss_peak"] is not None and r["rss_before"] is not None]
    median_growth = float(statistics.median(growth)) if growth else None
    return {"seconds": float(statistics.median(seconds)), "seconds_all": seconds,
            "rss_before_bytes": runs[0]["rss_before"], "rss_growth_bytes": median_growth,
            "memory_ratio": None if median_growth is None else median_growth / weights_bytes}


def _meets(name, block):
    """Whether minillm's numbers for shape ``name`` reach :data:`TARGETS`."""
    goal, mine = TARGETS[name], block["minillm"]
    ok = mine["memory_ratio"] is None or mine["memory_ratio"] <= goal["memory_ratio"]
    if "seconds" in goal:
        fast_enough = mine["seconds"] <= goal["seconds"]
        if "time_ratio" in goal and block["time_ratio"] is not None:
            fast_enough = fast_enough or block["time_ratio"] <= goal["time_ratio"]
        ok = ok and fast_enough
    return ok


def _bench_shape(name, kind, keys, libraries, saver, device, repeats, work, say):
    directory = work / name
    writer = _write_with_transformers if saver == "transformers" else _write_with_minillm
    parameters = writer(kind, keys, directory)
    weights_bytes = 4 * parameters
    block = {"kind": kind, "config": keys, "parameters": parameters,
             "weights_bytes": weights_bytes, "saved_by": saver,
             "file_bytes": (directory / "model.safetensors").stat().st_size}
    for library in libraries:
        runs = [_measure(library, kind, directory, device if library == "minillm" else "cpu")
                for _ in range(repeats)]
        block[library] = _summary(runs, weights_bytes)
        say(f"  {name} {library}: {block[library]['seconds']:.2f} s, memory ratio "
            f"{_fmt(block[library]['memory_ratio'], '.2f')}")
    for library in ("minillm", "transformers"):
        block.setdefault(library, None)
    both = block["minillm"] and block["transformers"]
    block["time_ratio"] = (block["minillm"]["seconds"] / block["transformers"]["seconds"]
                           if both else None)
    block["meets_targets"] = _meets(name, block) if block["minillm"] else None
    shutil.rmtree(directory, ignore_errors=True)
    return block


def load_benchmark(device=None, seed=0, fast=False, progress=True, output_dir=None, log=print,
                   large=False, repeats=None, libraries=None, saver=None):
    """Time and peak memory of loading GPT-2 small / BERT-base (and GPT-2 large with
    ``large``) checkpoints, minillm beside transformers; see the module docstring."""
    say = _logger(log)
    has_tf = _transformers()
    libraries = tuple(libraries or (("minillm", "transformers") if has_tf else ("minillm",)))
    saver = saver or ("transformers" if has_tf else "minillm")
    repeats = repeats or (1 if fast else 3)
    shapes = FAST_SHAPES if fast else SHAPES
    names = [n for n in shapes if large or n != "gpt2-large"]
    settings = {"repeats": repeats, "shapes": names, "libraries": list(libraries),
                "saver": saver, "targets": TARGETS}
    result = _header("load", device or "cpu", seed, fast, settings, anchor=TARGETS)
    base = Path(output_dir) if output_dir is not None else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-load-", dir=base) as work:
        result["shapes"] = {name: _bench_shape(name, *shapes[name], libraries, saver, device,
                                               repeats, Path(work), say) for name in names}
    result["table"] = format_load(result)
    say(result["table"])
    return _finish(result, output_dir, None, log)


def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def format_load(result):
    """The results as a table: seconds and memory ratio per shape and library."""
    lines = [f"  {'checkpoint':<11} {'parameters':>12} {'library':<13} {'seconds':>8} "
             f"{'growth MB':>10} {'memory ratio':>12}"]
    for name, block in result["shapes"].items():
        for library in ("minillm", "transformers"):
            r = block[library]
            if r is None:
                continue
            growth = None if r["rss_growth_bytes"] is None else r["rss_growth_bytes"] / 1e6
            lines.append(f"  {name:<11} {block['parameters']:>12,} {library:<13} "
                         f"{r['seconds']:>8.2f} {_fmt(growth, '.0f'):>10} "
                         f"{_fmt(r['memory_ratio'], '.2f'):>12}")
        if block["time_ratio"] is not None:
            lines.append(f"  {name:<11} time minillm / transformers: {block['time_ratio']:.2f}; "
                         f"targets met: {block['meets_targets']}")
    return "\n".join(lines)
