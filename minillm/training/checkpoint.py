"""Training checkpoints: everything needed to resume a run exactly, written atomically.

A checkpoint is a directory ``checkpoint-{step}``::

    config.json          the model config (when the model has one), as save_pretrained writes it
    model.npz            the weights (so ``GPT.from_pretrained(checkpoint_dir)`` works too)
    optimizer.npz        the optimizer's state arrays (``state.{param index}.{name}``)
    optimizer.json       the rest of the optimizer state: parameter groups, scalar state (step)
    scheduler.json       the learning-rate scheduler's counters
    rng_state.json       the state of minillm's random generators (cpu, and the model's device)
    trainer_state.json   step, epoch, batch position within the epoch, best metric, history ...
    scaler.json          mixed precision only: the GradScaler's state (scale, growth tracker ...)
    manifest.json        sha256 and size of every file above (written last)

With mixed precision (``mixed_precision=`` a :class:`~minillm.training.amp.MixedPrecision`),
``model.npz`` holds the **float32 master weights** (not the float16 working copy), so the
checkpoint has the same format as a float32 run's: ``from_pretrained`` loads it as a float32
model, and loading it back into the ``MixedPrecision`` restores the masters exactly and the
float16 model as their rounding, which is what it was (resume stays bit-identical).

Nothing is ever pickled: arrays go to ``.npz`` (read back with ``allow_pickle=False``), the
rest to UTF-8 JSON. :func:`save_checkpoint` writes into a temporary directory next to the
target, fsyncs every file, and renames the directory into place, so a crash in the middle of a
save leaves no partial checkpoint. :func:`load_checkpoint` first checks every file against the
manifest and raises :class:`CheckpointError` naming the bad file before anything is changed.

Every device generator's state is saved (the bit-generator state on CPU and the ``fake``
test device; seed and draw counter on CUDA), so a resumed run draws the same random numbers as
an uninterrupted one; on CPU the result is bit-identical.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np

from .. import backend
from .._fileio import fsync_dir, make_temp_dir, replace_directory, sha256_file
from ..lazyarray import open_npz
from ..validation import check_int

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "verify_checkpoint",
           "CheckpointManager", "MANIFEST_NAME", "CHECKPOINT_PREFIX"]

CHECKPOINT_PREFIX = "checkpoint-"
MANIFEST_NAME = "manifest.json"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.npz"
OPTIMIZER_ARRAYS = "optimizer.npz"
OPTIMIZER_JSON = "optimizer.json"
SCHEDULER_NAME = "scheduler.json"
SCALER_NAME = "scaler.json"
RNG_NAME = "rng_state.json"
TRAINER_STATE_NAME = "trainer_state.json"
FORMAT = "minillm-checkpoint"
FORMAT_VERSION = 1

_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt (the message names the file)."""


# -- small helpers -----------------------------------------------------------------------------
def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint's JSON "
                    "(use numbers, strings, lists and dicts)")


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_json(path, obj):
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default,
                      allow_nan=True)
    _write_bytes(path, text.encode("utf-8"))


def _write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())



def _rng_devices(model):
    devs = {"cpu"}
    if model is not None:
        devs.update(str(p.device) for p in model.parameters())
    devs.update(backend.active_devices())                # every generator in use
    return sorted(devs)


def _optimizer_files(optimizer):
    sd = optimizer.state_dict()
    arrays, scalars = {}, {}
    for idx, entries in sd["state"].items():
        for name, v in entries.items():
            if isinstance(v, np.ndarray):
                arrays[f"state.{idx}.{name}"] = v
            else:
                scalars.setdefault(str(idx), {})[name] = v
    meta = {"class": type(optimizer).__name__, "param_groups": sd["param_groups"],
            "scalar_state": scalars}
    return arrays, meta


def _model_config(model):
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return None
    return {"model_type": getattr(model, "model_type", None), **config.to_dict()}


# -- saving ------------------------------------------------------------------------------------
def save_checkpoint(directory, model, optimizer=None, scheduler=None, trainer_state=None,
                    step=None, mixed_precision=None):
    """Write ``directory/checkpoint-{step}`` atomically and return its path.

    ``step`` defaults to ``trainer_state["global_step"]`` (or 0). An existing checkpoint of the
    same step is replaced only once the new one is complete. ``trainer_state`` is any
    JSON-friendly dict (the :class:`~minillm.training.Trainer` stores step, epoch, batch
    position, best metric and history there). ``mixed_precision``: the
    :class:`~minillm.training.amp.MixedPrecision` wrapping ``model``; then the weights saved
    are its float32 masters and its scaler's state goes to ``scaler.json``.
    """
    trainer_state = dict(trainer_state or {})
    if step is None:
        step = trainer_state.get("global_step", 0)
    step = check_int(step, "step", "save_checkpoint", low=0)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{CHECKPOINT_PREFIX}{step}"
    tmp = make_temp_dir(f".{final.name}.tmp-", directory)
    try:
        files = []
        config = _model_config(model)
        if config is not None:
            _write_json(tmp / CONFIG_NAME, config)
            files.append(CONFIG_NAME)
        weights = (mixed_precision.state_dict() if mixed_precision is not None
                   else model.state_dict())
        _write_npz(tmp / WEIGHTS_NAME, {k: v.numpy() for k, v in weights.items()})
        files.append(WEIGHTS_NAME)
        if mixed_precision is not None:
            _write_json(tmp / SCALER_NAME, {"class": type(mixed_precision.scaler).__name__,
                                            "state": mixed_precision.scaler.state_dict()})
            files.append(SCALER_NAME)
        if optimizer is not None:
            arrays, meta = _optimizer_files(optimizer)
            _write_npz(tmp / OPTIMIZER_ARRAYS, arrays)
            _write_json(tmp / OPTIMIZER_JSON, meta)
            files += [OPTIMIZER_ARRAYS, OPTIMIZER_JSON]
        if scheduler is not None:
            _write_json(tmp / SCHEDULER_NAME, {"class": type(scheduler).__name__,
                                               "state": scheduler.state_dict()})
            files.append(SCHEDULER_NAME)
        rng = {dev: backend.generator(dev).get_state() for dev in _rng_devices(model)}
        _write_json(tmp / RNG_NAME, {"generators": rng})
        files.append(RNG_NAME)
        _write_json(tmp / TRAINER_STATE_NAME, {"global_step": step, **trainer_state})
        files.append(TRAINER_STATE_NAME)
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "step": step,
                    "files": {name: {"sha256": sha256_file(tmp / name),
                                     "size": (tmp / name).stat().st_size} for name in files}}
        _write_json(tmp / MANIFEST_NAME, manifest)
        fsync_dir(tmp)
        replace_directory(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# -- verifying and loading -----------------------------------------------------------------------
def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint file {path} is unreadable: {e}") from e


def verify_checkpoint(directory):
    """Check every file of a checkpoint against its manifest; return the manifest.

    Raises :class:`CheckpointError` naming the first missing, truncated or corrupt file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory} does not exist (or is not a directory)")
    mpath = directory / MANIFEST_NAME
    if not mpath.is_file():
        raise CheckpointError(f"checkpoint {directory} has no {MANIFEST_NAME} (file {mpath} "
                              "is missing): it is incomplete or not a minillm checkpoint")
    manifest = _read_json(mpath)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"checkpoint file {mpath} is not a {FORMAT} manifest")
    for name, info in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing (listed in {mpath})")
        size = path.stat().st_size
        if size != info.get("size"):
            raise CheckpointError(f"checkpoint file {path} is truncated or altered: "
                                  f"{size} bytes, the manifest says {info.get('size')}")
        digest = sha256_file(path)
        if digest != info.get("sha256"):
            raise CheckpointError(f"checkpoint file {path} is corrupt: sha256 {digest} does not "
                                  f"match the manifest's {info.get('sha256')}")
    return manifest


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as e:
        raise CheckpointError(f"checkpoint file {path} is not a readable .npz file: {e}") from e


def check_readable(directory):
    """:func:`verify_checkpoint`, then parse every ``.npz`` and ``.json`` file it lists as
    loading will (``allow_pickle=False``): a file can match its manifest and still not load
    (an object array, a JSON file that is not JSON). Returns the manifest; raises
    :class:`CheckpointError` naming the file and the reason."""
    directory = Path(directory)
    manifest = verify_checkpoint(directory)
    for name in manifest["files"]:
        if name.endswith(".npz"):
            _read_npz(directory / name)
        elif name.endswith(".json"):
            _read_json(directory / name)
    return manifest


def _open_npz(path):
    """``{name: LazyArray}`` of a ``.npz`` file: headers read and checked, values read later."""
    try:
        return open_npz(path)
    except Exception as e:
        raise CheckpointError(f"checkpoint file {path} is not a readable .npz file: {e}") from e


def _optimizer_state_dict(directory):
    arrays = _read_npz(directory / OPTIMIZER_ARRAYS)
    meta = _read_json(directory / OPTIMIZER_JSON)
    state = {}
    for key, scalars in meta.get("scalar_state", {}).items():
        state.setdefault(int(key), {}).update(scalars)
    for key, arr in arrays.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = arr
    return meta, {"state": state, "param_groups": meta["param_groups"]}


def load_checkpoint(directory, model=None, optimizer=None, scheduler=None, restore_rng=True,
                    mixed_precision=None):
    """Restore a checkpoint into ``model``/``optimizer``/``scheduler`` (and the RNGs).

    Every file is verified against the manifest and parsed first; when anything is wrong a
    :class:`CheckpointError` names the file and nothing has been modified. If applying a state
    fails (e.g. the model has other shapes), what was already restored is rolled back.
    Returns the trainer state dict (``{}`` when the checkpoint has none).

    ``mixed_precision``: the :class:`~minillm.training.amp.MixedPrecision` wrapping ``model``
    (which may then be omitted); the float32 weights go into its masters and, rounded, into
    the float16 model, and ``scaler.json`` into its scaler. A checkpoint of a float32 run
    has no ``scaler.json``: the scaler then keeps its state (with a warning).
    """
    if mixed_precision is not None and model is not None and model is not mixed_precision.model:
        raise ValueError("load_checkpoint: model is not the model wrapped by mixed_precision")
    directory = Path(directory)
    manifest = verify_checkpoint(directory)
    parts = _read_checkpoint_parts(directory, set(manifest["files"]), model, optimizer,
                                   scheduler, mixed_precision)
    _apply_checkpoint_parts(directory, parts, model, optimizer, scheduler, restore_rng,
                            mixed_precision)
    return parts["trainer_state"]


def _need_file(directory, listed, name, what):
    """Raise a CheckpointError unless the checkpoint lists file ``name`` (``what`` it holds)."""
    if name not in listed:
        raise CheckpointError(f"checkpoint {directory} holds no {what} (no {name}); it was "
                              f"saved without one")


def _read_checkpoint_parts(directory, listed, model, optimizer, scheduler, mixed_precision):
    """Read and parse every state that will be loaded (nothing is modified yet)."""
    parts = {"weights": None, "optimizer": None, "scheduler": None, "scaler": None}
    if model is not None or mixed_precision is not None:
        _need_file(directory, listed, WEIGHTS_NAME, "model weights")
        parts["weights"] = _open_npz(directory / WEIGHTS_NAME)      # {name: LazyArray}
    if mixed_precision is not None:
        if SCALER_NAME in listed:
            parts["scaler"] = _read_json(directory / SCALER_NAME)["state"]
        else:
            # stacklevel 3: the warning points at load_checkpoint's caller
            warnings.warn(f"checkpoint {directory} has no {SCALER_NAME} (saved without mixed "
                          "precision): the loss scaler keeps its current state", stacklevel=3)
    if optimizer is not None:
        parts["optimizer"] = _read_optimizer_part(directory, listed, optimizer)
    if scheduler is not None:
        _need_file(directory, listed, SCHEDULER_NAME, "scheduler state")
        parts["scheduler"] = _read_json(directory / SCHEDULER_NAME)["state"]
    parts["rng"] = _read_json(directory / RNG_NAME)["generators"] if RNG_NAME in listed else {}
    parts["trainer_state"] = _read_json(directory / TRAINER_STATE_NAME) \
        if TRAINER_STATE_NAME in listed else {}
    return parts


def _read_optimizer_part(directory, listed, optimizer):
    """The saved optimizer state dict, checked to belong to ``optimizer``'s class."""
    _need_file(directory, listed, OPTIMIZER_ARRAYS, "optimizer state")
    _need_file(directory, listed, OPTIMIZER_JSON, "optimizer state")
    meta, opt_sd = _optimizer_state_dict(directory)
    if meta.get("class") != type(optimizer).__name__:
        raise CheckpointError(f"checkpoint file {directory / OPTIMIZER_JSON} holds the state "
                              f"of a {meta.get('class')}, not of a "
                              f"{type(optimizer).__name__}")
    return opt_sd


def _swap_state(obj, state, undo):
    """Load ``state`` into ``obj`` after recording in ``undo`` how to put the old one back."""
    before = obj.state_dict()
    undo.append(lambda: obj.load_state_dict(before))
    obj.load_state_dict(state)


def _apply_checkpoint_parts(directory, parts, model, optimizer, scheduler, restore_rng,
                            mixed_precision):
    """Load the parsed states; if one does not fit, roll back those already loaded.

    The weights come last and need no backup copy: ``load_state_dict`` checks every name,
    shape and dtype before it changes anything, so when they do not fit the model is
    untouched and only the states loaded before them are rolled back. They are read from
    ``model.npz`` one tensor at a time, straight into the parameters."""
    undo = []
    try:
        if optimizer is not None:
            _swap_state(optimizer, parts["optimizer"], undo)
        if scheduler is not None:
            _swap_state(scheduler, parts["scheduler"], undo)
        if mixed_precision is not None and parts["scaler"] is not None:
            _swap_state(mixed_precision.scaler, parts["scaler"], undo)
        if restore_rng:
            _restore_generators(directory, parts["rng"], undo)
        if mixed_precision is not None:
            mixed_precision.load_state_dict(parts["weights"])
        elif model is not None:
            model.load_state_dict(parts["weights"])
    except Exception as e:
        for fn in reversed(undo):
            fn()
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {directory} does not fit what it is loaded into: "
                              f"{type(e).__name__}: {e}") from e


def _restore_generators(directory, rng, undo):
    """Set each saved device generator's state (devices not available are skipped, warned)."""
    for dev, state in rng.items():
        try:
            gen = backend.generator(dev)
        except backend.DeviceError:
            # stacklevel 4: the warning points at load_checkpoint's caller
            warnings.warn(f"checkpoint {directory}: device {dev} is not available, its "
                          "random state is not restored", stacklevel=4)
            continue
        gs = gen.get_state()
        undo.append(lambda gen=gen, gs=gs: gen.set_state(gs))
        gen.set_state(state)


# -- the manager ---------------------------------------------------------------------------------
def _metric_is_better(value, best, greater_is_better):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value > best if greater_is_better else value < best


class CheckpointManager:
    """Save checkpoints under ``output_dir`` and keep the last ``keep_last`` plus the best.

    ``metric`` (e.g. ``"eval_loss"``) is looked up in the ``metrics`` given to :meth:`save`
    and stored with the checkpoint; the best one (``greater_is_better`` decides) is kept even
    when it is older than the last ``keep_last``. Old checkpoints are deleted only after the
    new one is completely written. ``keep_last=None`` keeps everything.
    """

    def __init__(self, output_dir, keep_last=None, keep_best=True, metric="eval_loss",
                 greater_is_better=False):
        if keep_last is not None:
            check_int(keep_last, "keep_last", "CheckpointManager", expected="None or an int >= 1")
        self.output_dir = Path(output_dir)
        self.keep_last = keep_last
        self.keep_best = bool(keep_best)
        self.metric = metric
        self.greater_is_better = bool(greater_is_better)
        self.corrupt = []          # (path, message) of the checkpoints latest() had to skip

    # -- listing ---------------------------------------------------------------------------
    def checkpoints(self):
        """Complete-looking checkpoint directories (``checkpoint-N``), oldest first."""
        if not self.output_dir.is_dir():
            return []
        found = []
        for p in self.output_dir.iterdir():
            m = _CKPT_RE.match(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def _metric_of(self, path):
        try:
            with open(path / TRAINER_STATE_NAME, encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            return None
        return (state.get("metrics") or {}).get(self.metric)

    def best(self):
        """The checkpoint with the best stored metric (None if none has it)."""
        best_path, best_value = None, None
        for p in self.checkpoints():
            v = self._metric_of(p)
            if _metric_is_better(v, best_value, self.greater_is_better):
                best_path, best_value = p, v
        return best_path

    def latest(self):
        """The newest checkpoint that passes verification and whose files parse
        (:func:`check_readable`), or None.

        Others are skipped with a warning naming the reason (and listed in ``self.corrupt``),
        so an interrupted, damaged or unloadable last save falls back to the previous one.
        """
        return self.load_newest(lambda path: path)

    def load_newest(self, load):
        """``load(path)`` of the newest checkpoint that passes :func:`check_readable` and
        that ``load`` accepts, or None. A checkpoint that fails either, for any reason, is
        skipped with a warning naming it and the reason (and listed in ``self.corrupt``), and
        the one before it is tried."""
        self.corrupt = []
        for p in reversed(self.checkpoints()):
            try:
                check_readable(p)
                return load(p)
            except Exception as e:      # noqa: BLE001 - any reason: fall back, and name it
                reason = str(e) if isinstance(e, CheckpointError) else \
                    f"checkpoint {p} cannot be read: {type(e).__name__}: {e}"
                self.corrupt.append((p, reason))
                warnings.warn(f"skipping corrupt checkpoint: {reason}", stacklevel=2)
        return None

    # -- saving ----------------------------------------------------------------------------
    def save(self, model, optimizer=None, scheduler=None, trainer_state=None, metrics=None,
             step=None, mixed_precision=None):
        """Write a checkpoint (see :func:`save_checkpoint`), then rotate; returns its path."""
        state = dict(trainer_state or {})
        if metrics is not None:
            state["metrics"] = dict(metrics)
        path = save_checkpoint(self.output_dir, model, optimizer, scheduler, state, step=step,
                               mixed_precision=mixed_precision)
        self.rotate(protect=path)
        return path

    def rotate(self, protect=None):
        """Delete checkpoints beyond the last ``keep_last`` (never the best, nor ``protect``)."""
        if self.keep_last is None:
            return []
        ckpts = self.checkpoints()
        keep = set(ckpts[-self.keep_last:])
        if self.keep_best:
            best = self.best()
            if best is not None:
                keep.add(best)
        if protect is not None:
            keep.add(Path(protect))
        removed = []
        for p in ckpts:
            if p not in keep:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        return removed
