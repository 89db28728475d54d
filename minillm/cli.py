"""The ``minillm`` command (also ``python -m minillm``).

Subcommands:

``minillm info``   versions, the devices usable here, the default dtype, whether CuPy is installed.
``minillm demo``   pretrains a small character-level GPT on Chinese text (People's Daily), fine-tunes
                  it as a sentiment classifier (chinese_reviews), compares it with an LSTM baseline
                  and leaves the tokenizer, models, histories, plots and ``report.md`` in
                  ``runs/demo/`` (see :mod:`minillm.demo`). ``--fast`` (or ``MINILLM_FAST=1``) runs
                  it at tiny sizes in seconds; ``--mlp`` runs the old 2-layer MLP demo on spirals.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

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
    from minillm import demo

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


# -- entry point ------------------------------------------------------------------------
def _dataset_error():
    from minillm.datasets.base import DatasetError  # noqa: PLC0415
    return DatasetError


def build_parser():
    p = argparse.ArgumentParser(prog="minillm", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"minillm {mm.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("info", help="versions, devices and defaults of this installation")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("demo", help="pretrain a small GPT on Chinese text and fine-tune it for "
                                     "sentiment (--mlp: the old MLP demo)")
    s.add_argument("--output-dir", default="runs/demo",
                   help="where the tokenizer, models, histories, plots and report.md go "
                        "(default runs/demo)")
    s.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N or fake (default: the default device, cpu)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--fast", action="store_true",
                   help="tiny sizes and a few steps: runs in seconds (also MINILLM_FAST=1)")
    s.add_argument("--pretrain-steps", type=int, default=None,
                   help="GPT pretraining steps (default 1500; 8 with --fast)")
    s.add_argument("--finetune-steps", type=int, default=None,
                   help="classifier training steps, GPT and LSTM (default 400; 6 with --fast)")
    s.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    g = s.add_argument_group("the old MLP demo (--mlp)")
    g.add_argument("--mlp", action="store_true",
                   help="train the 2-layer MLP on 3-class spirals instead (seconds)")
    g.add_argument("--steps", type=int, default=None, help="MLP training steps (default 300)")
    g.add_argument("--hidden", type=int, default=64, help="MLP hidden units (default 64)")
    g.add_argument("--lr", type=float, default=1e-2, help="MLP Adam learning rate (default 0.01)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv=None):
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    for name in ("steps", "pretrain_steps", "finetune_steps"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if getattr(args, "steps", None) is not None and not getattr(args, "mlp", True):
        parser.error("--steps belongs to the MLP demo: use --mlp --steps N, or "
                     "--pretrain-steps / --finetune-steps for the GPT demo")
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if args.func is cmd_demo:
            return cmd_demo(args, argv)
        return args.func(args)
    except (mm.backend.DeviceError, _dataset_error()) as e:
        print(f"minillm: error: {e}", file=sys.stderr)
        return 2
