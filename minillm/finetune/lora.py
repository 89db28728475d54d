"""LoRA: low-rank adaptation of Linear layers (Hu et al., 2021).

Full fine-tuning updates every weight ``W`` of a pretrained model. LoRA freezes ``W`` and
learns a low-rank update instead. With minillm's ``(in_features, out_features)`` layout::

    W' = W + (alpha / r) * A @ B          A: (in_features, r),  B: (r, out_features)
    y  = x @ W + b + (alpha / r) * dropout(x) @ A @ B

``r`` (the rank) is small (4, 8, 16), so ``A`` and ``B`` hold ``r * (in + out)`` numbers
instead of ``in * out``. ``A`` starts like a Linear weight (U(-1/sqrt(in), 1/sqrt(in)),
PyTorch's kaiming_uniform with a=sqrt(5)) and ``B`` at zero, as in the reference
implementation (peft): the adapted model starts out computing exactly what the base model
computes, and training moves it away from there. ``scaling = alpha / r`` keeps the size of
the update comparable when ``r`` changes. Dropout (if any) acts on the input of the
low-rank branch only.

After training, ``A @ B`` can be *merged* into ``W`` (:meth:`LoRALinear.merge`): inference
then costs exactly what the base model costs. :func:`remove_lora` merges and puts plain
``Linear`` layers back, so ``model.save_pretrained(dir)`` writes an ordinary model. Or keep
the adapters apart: :func:`save_adapters` writes only ``A``, ``B`` (and the parameters named
in ``trainable``, e.g. a task head), a few hundred KB instead of the whole model, and
:func:`load_adapters` puts them onto a fresh copy of the base model::

    model = ModelForSequenceClassification.from_base(GPT.from_pretrained("runs/gpt"),
                                                     num_labels=2)
    apply_lora(model, r=8, alpha=16, trainable=("classifier",))   # everything else frozen
    ...train (the Trainer's optimizer only sees the parameters that require grad)...
    save_adapters(model, "runs/lora")
    remove_lora(model)                  # merged plain Linears again
    model.save_pretrained("runs/merged")

Which layers: by default the attention projections, as in the paper (GPT: ``attn.c_attn``
(the packed q|k|v) and ``attn.c_proj``; BERT: ``attention.self.query`` and
``attention.self.value``); ``target_modules`` names others, matched as suffixes of the
dotted module names (``"c_fc"`` matches ``"h.0.mlp.c_fc"``).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from .. import functional as F
from .._fileio import atomic_write, atomic_write_json, fsync_dir, sha256_file
from ..autograd import empty, is_grad_enabled, no_grad, tensor
from ..nn import Linear, Module, Parameter, init
from ..validation import check_int, check_number

__all__ = ["LoRALinear", "apply_lora", "lora_modules", "merge_lora", "unmerge_lora",
           "remove_lora", "save_adapters", "load_adapters", "lora_parameter_count",
           "default_target_modules", "DEFAULT_TARGET_MODULES", "ADAPTER_CONFIG_NAME",
           "ADAPTER_WEIGHTS_NAME", "ADAPTER_FORMAT"]

#: default layers to adapt, per body family (the attention projections, as in the paper)
DEFAULT_TARGET_MODULES = {
    "gpt": ("attn.c_attn", "attn.c_proj"),
    "bert": ("attention.self.query", "attention.self.value"),
}
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.npz"
ADAPTER_FORMAT = "minillm-lora-1"

_RECORD = "_lora_record"      # what apply_lora remembers on the model (see _record)


def _check_hparams(r, alpha, dropout, who):
    """TypeError for a value of the wrong type, ValueError for one out of range."""
    r = check_int(r, "r (the rank)", who, type_error=True)
    alpha = check_number(alpha, "alpha", who, low=0, low_open=True, type_error=True,
                         expected="> 0 (the update is scaled by alpha / r)")
    dropout = check_number(dropout, "dropout", who, 0, 1, high_open=True, type_error=True)
    return r, alpha, dropout


# -- the layer -----------------------------------------------------------------------------------
class LoRALinear(Linear):
    """A Linear layer with a trainable low-rank update: ``y = x W + b + s * dropout(x) A B``.

    ``weight`` and ``bias`` are the frozen base weights (state-dict keys unchanged); ``lora_A``
    (in_features, r) and ``lora_B`` (r, out_features) are the new parameters; ``scaling`` is
    ``s = alpha / r``. Build one around an existing layer with :meth:`from_linear` (it shares
    that layer's weight and bias), or from scratch with ``LoRALinear(in, out, r=..., ...)``.

    ``merge()`` adds ``s A B`` into ``weight`` (then ``forward`` is the plain linear map),
    ``unmerge()`` takes it out again. A merged layer cannot be trained: its forward pass has
    no path to ``A`` and ``B``, so calling it in training mode with gradients on (and LoRA
    parameters that require grad) is an error; use ``eval()`` or ``mm.no_grad()`` for
    inference, or ``unmerge()`` to train on.
    """

    def __init__(self, in_features, out_features, bias=True, r=8, alpha=16, dropout=0.0,
                 device=None, dtype=None):
        r, alpha, dropout = _check_hparams(r, alpha, dropout, "LoRALinear")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._add_lora(r, alpha, dropout)

    @classmethod
    def from_linear(cls, linear, r=8, alpha=16, dropout=0.0):
        """Wrap ``linear``: share its ``weight``/``bias`` Parameters, freeze them, add A and B."""
        if not isinstance(linear, Linear) or isinstance(linear, LoRALinear):
            what = "is already a LoRALinear" if isinstance(linear, LoRALinear) \
                else f"is a {type(linear).__name__}"
            raise TypeError(f"LoRALinear.from_linear: expected an nn.Linear, the layer {what}")
        r, alpha, dropout = _check_hparams(r, alpha, dropout, "LoRALinear.from_linear")
        self = cls.sharing(linear)                     # the same Parameter objects: shared
        self._add_lora(r, alpha, dropout)
        return self

    def _add_lora(self, r, alpha, dropout):
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.scaling = alpha / r
        self.merged = False
        w = self.weight
        # what remove_lora() gives back to the base weights
        self._base_requires_grad = (w.requires_grad,
                                    None if self.bias is None else self.bias.requires_grad)
        self.lora_A = Parameter(empty(self.in_features, r, dtype=w.dtype, device=w.device))
        self.lora_B = Parameter(empty(r, self.out_features, dtype=w.dtype, device=w.device))
        self.reset_lora_parameters()
        w.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def reset_lora_parameters(self):
        """A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform, a=sqrt(5)), B = 0: W' = W at start."""
        if self.merged:
            raise RuntimeError("LoRALinear.reset_lora_parameters: the layer is merged; "
                               "unmerge() it first (its weight still holds the old update)")
        init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        init.zeros_(self.lora_B)

    def delta_weight(self):
        """The update ``scaling * A @ B`` (in_features, out_features), differentiable."""
        return self.scaling * (self.lora_A @ self.lora_B)

    def merge(self):
        """``weight += scaling * A @ B`` in place; forward is then the plain linear map."""
        if self.merged:
            raise RuntimeError("LoRALinear.merge: the layer is already merged (its weight holds "
                               "W + scaling * A @ B); merging twice would add the update twice")
        with no_grad():
            self.weight.add_(self.delta_weight())
        self.merged = True
        return self

    def unmerge(self):
        """``weight -= scaling * A @ B`` in place: the base weight back (up to float rounding)."""
        if not self.merged:
            raise RuntimeError("LoRALinear.unmerge: the layer is not merged (its weight is the "
                               "base weight W); unmerge only after merge()")
        with no_grad():
            self.weight.add_(self.delta_weight(), alpha=-1.0)
        self.merged = False
        return self

    def forward(self, x):
        if self.merged:
            if self.training and is_grad_enabled() and (self.lora_A.requires_grad
                                                        or self.lora_B.requires_grad):
                raise RuntimeError("LoRALinear: the layer is merged, so training it would not "
                                   "reach lora_A / lora_B; call unmerge() (or unmerge_lora("
                                   "model)) to train, or use model.eval() / mm.no_grad() for "
                                   "inference")
            return F.linear(x, self.weight, self.bias)
        # x @ W + b  +  scaling * dropout(x) @ A @ B   (A first: the (*, r) product is small)
        h = F.linear(F.dropout(x, self.dropout, self.training), self.lora_A)
        return F.linear(x, self.weight, self.bias) + F.linear(self.scaling * h, self.lora_B)

    def to_linear(self):
        """A new plain ``Linear`` holding copies of the merged weight ``W + scaling * A @ B``
        and of the bias; this layer is left as it is."""
        w = self.weight
        with no_grad():
            merged = w if self.merged else w + self.delta_weight()
            out = Linear.__new__(Linear)
            Module.__init__(out)
            out.in_features, out.out_features = self.in_features, self.out_features
            out.weight = Parameter(tensor(merged, device=w.device))
            if self.bias is None:
                out.register_parameter("bias", None)
            else:
                out.bias = Parameter(tensor(self.bias, device=w.device))
        out.training = self.training
        return out

    def _plain_linear(self):
        """A plain Linear sharing this layer's weight and bias Parameters (for remove_lora)."""
        return Linear.sharing(self)

    def extra_repr(self):
        return (super().extra_repr() + f", r={self.r}, alpha={self.alpha:g}, "
                f"dropout={self.dropout:g}, merged={self.merged}")


# -- whole models --------------------------------------------------------------------------------
def _as_names(value, what, who):
    """A str or an iterable of non-empty strs -> tuple of str (a str is one name)."""
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise TypeError(f"{who}: {what} must be a name or a list of names, got "
                        f"{type(value).__name__}") from None
    for n in names:
        if not isinstance(n, str) or not n or n.startswith(".") or n.endswith("."):
            raise TypeError(f"{who}: every entry of {what} must be a non-empty dotted name "
                            f"(e.g. 'attn.c_attn'), got {n!r}")
    return names


def _is_suffix(name, target):
    """``target`` names the module ``name``: equal, or a suffix made of whole components."""
    return name == target or name.endswith("." + target)


def _is_prefix(prefix, name):
    return name == prefix or name.startswith(prefix + ".")


def _family(model):
    """"gpt" or "bert" for a GPT/BERT body, a model built on one (``.base``, ``.bert``, a head's
    ``config.base_model_type``), or None."""
    candidates = [getattr(model, "model_type", None),
                  getattr(getattr(model, "config", None), "base_model_type", None)]
    for attr in ("base", "bert"):
        sub = model._modules.get(attr) if isinstance(model, Module) else None
        candidates.append(getattr(sub, "model_type", None))
    for t in candidates:
        if t == "gpt":
            return "gpt"
        if isinstance(t, str) and t.startswith("bert"):
            return "bert"
    return None


def _linear_patterns(model):
    """The model's Linear layer names (many: with layer numbers folded, 'h.{i}.attn.c_attn')."""
    names = [n for n, m in model.named_modules() if isinstance(m, Linear) and n]
    if len(names) > 10:
        names = dict.fromkeys(re.sub(r"(^|\.)\d+(?=\.|$)", r"\1{i}", n) for n in names)
    return ", ".join(names) if names else "(none)"


def default_target_modules(model):
    """The target_modules :func:`apply_lora` uses for ``model`` when none are given."""
    fam = _family(model)
    if fam is None:
        kind = getattr(model, "model_type", type(model).__name__)
        raise ValueError(f"apply_lora: no default target_modules for a {kind!r} model (defaults "
                         f"exist for GPT and BERT bodies and the models built on them: "
                         f"{DEFAULT_TARGET_MODULES}); pass target_modules=... naming its Linear "
                         f"layers: {_linear_patterns(model)}")
    return DEFAULT_TARGET_MODULES[fam]


def lora_modules(model):
    """``{dotted name: LoRALinear}`` for every LoRA layer of ``model`` (each once)."""
    if not isinstance(model, Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def _require_lora(model, who):
    mods = lora_modules(model)
    if not mods:
        raise ValueError(f"{who}: the model has no LoRA layers; add them with apply_lora(model) "
                         "(or load_adapters(model, directory))")
    return mods


def _replace(model, new_by_id):
    """Put ``new_by_id[id(old)]`` wherever ``old`` is a sub-module (every place, for shared ones)."""
    for _, parent in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in new_by_id:
                parent._modules[child_name] = new_by_id[id(child)]


def _match_targets(model, targets, who):
    """``{dotted name: Linear}`` of the modules the ``targets`` suffixes name (each must hit)."""
    modules = [(n, m) for n, m in model.named_modules() if n]
    matched = {}
    for t in targets:
        hits = [(n, m) for n, m in modules if _is_suffix(n, t)]
        if not hits:
            raise ValueError(f"{who}: target_modules entry {t!r} matches no module of the "
                             f"{type(model).__name__}; its Linear layers are: "
                             f"{_linear_patterns(model)}")
        for n, m in hits:
            if not isinstance(m, Linear):
                raise TypeError(f"{who}: target_modules entry {t!r} matches {n!r}, a "
                                f"{type(m).__name__}, not a Linear; LoRA adapts Linear layers: "
                                f"{_linear_patterns(model)}")
            matched[n] = m
    return matched


def _check_trainable(params, trainable, who):
    """Every ``trainable`` entry must start at least one of the named ``params``."""
    for t in trainable:
        if not any(_is_prefix(t, n) for n, _ in params):
            tops = ", ".join(dict.fromkeys(n.split(".")[0] for n, _ in params))
            raise ValueError(f"{who}: trainable entry {t!r} is not the start of any parameter "
                             f"name; names start with: {tops}")


def apply_lora(model, r=8, alpha=16, dropout=0.0, target_modules=None, trainable=()):
    """Replace the target Linear layers of ``model`` by :class:`LoRALinear` (in place).

    ``target_modules``: names matched as suffixes of dotted module names (``"c_attn"``
    matches ``"base.h.0.attn.c_attn"``); each entry must match at least one module and every
    match must be a Linear. Default: :func:`default_target_modules`. Afterwards only the LoRA
    parameters and those whose dotted names start with an entry of ``trainable`` (e.g.
    ``("classifier",)`` for a task head) require grad; :func:`remove_lora` restores the
    previous flags. Returns the list of replaced module names.
    """
    who = "apply_lora"
    if not isinstance(model, Module):
        raise TypeError(f"{who}: expected an nn.Module, got {type(model).__name__}")
    r, alpha, dropout = _check_hparams(r, alpha, dropout, who)
    existing = lora_modules(model)
    if existing:
        raise ValueError(f"{who}: the model already has LoRA layers ({', '.join(existing)}); "
                         "apply LoRA once (remove_lora(model) first to start over)")
    targets = default_target_modules(model) if target_modules is None \
        else _as_names(target_modules, "target_modules", who)
    trainable = _as_names(trainable, "trainable", who)
    if not targets:
        raise ValueError(f"{who}: target_modules is empty; name the Linear layers to adapt: "
                         f"{_linear_patterns(model)}")

    matched = _match_targets(model, targets, who)
    params = list(model.named_parameters())
    _check_trainable(params, trainable, who)

    requires_grad = {n: p.requires_grad for n, p in params}
    new_by_id = {}
    for m in matched.values():
        if id(m) not in new_by_id:
            new_by_id[id(m)] = LoRALinear.from_linear(m, r=r, alpha=alpha, dropout=dropout)
    _replace(model, new_by_id)

    lora_params = {id(p) for m in new_by_id.values() for p in (m.lora_A, m.lora_B)}
    for n, p in model.named_parameters():
        p.requires_grad_(id(p) in lora_params or any(_is_prefix(t, n) for t in trainable))
    names = list(lora_modules(model))
    object.__setattr__(model, _RECORD, {"target_modules": list(targets),
                                        "trainable": list(trainable), "modules": names,
                                        "requires_grad": requires_grad})
    return names


def merge_lora(model):
    """Merge every LoRA layer (``W += scaling * A @ B``); none may be merged already."""
    mods = _require_lora(model, "merge_lora")
    done = [n for n, m in mods.items() if m.merged]
    if done:
        raise RuntimeError(f"merge_lora: layers {done} are already merged; merging twice would "
                           "add their update twice (unmerge_lora(model) first)")
    for m in mods.values():
        m.merge()
    return model


def unmerge_lora(model):
    """Undo :func:`merge_lora` (``W -= scaling * A @ B``); every LoRA layer must be merged."""
    mods = _require_lora(model, "unmerge_lora")
    todo = [n for n, m in mods.items() if not m.merged]
    if todo:
        raise RuntimeError(f"unmerge_lora: layers {todo} are not merged; unmerge only after "
                           "merge_lora(model)")
    for m in mods.values():
        m.unmerge()
    return model


def remove_lora(model, merge=True):
    """Replace every LoRALinear by a plain Linear holding the merged weight (``merge=True``)
    or the original weight (``merge=False``), and restore the ``requires_grad`` flags that
    :func:`apply_lora` changed. The Linear shares the Parameter objects (no copy). Returns
    the model; ``model.save_pretrained(dir)`` then writes an ordinary model."""
    mods = _require_lora(model, "remove_lora")
    if not isinstance(merge, bool):
        raise TypeError(f"remove_lora: merge must be a bool, got {type(merge).__name__}")
    if "" in mods:
        raise ValueError("remove_lora: the model itself is a LoRALinear; use its to_linear()")
    new_by_id = {}
    for m in mods.values():
        if merge and not m.merged:
            m.merge()
        elif not merge and m.merged:
            m.unmerge()
        w_flag, b_flag = m._base_requires_grad
        m.weight.requires_grad_(w_flag)
        if m.bias is not None:
            m.bias.requires_grad_(b_flag)
        new_by_id[id(m)] = m._plain_linear()
    _replace(model, new_by_id)
    record = model.__dict__.pop(_RECORD, None)
    if record is not None:
        for n, p in model.named_parameters():
            if n in record["requires_grad"]:
                p.requires_grad_(record["requires_grad"][n])
    return model


def lora_parameter_count(model):
    """The number of LoRA numbers (elements of every A and B) in ``model``."""
    return sum(m.lora_A.size + m.lora_B.size for m in lora_modules(model).values())


# -- adapters on disk ----------------------------------------------------------------------------
def _uniform(mods, who):
    """The (r, alpha, dropout) shared by all LoRA layers."""
    hp = {(m.r, m.alpha, m.dropout) for m in mods.values()}
    if len(hp) != 1:
        raise ValueError(f"{who}: the LoRA layers differ in (r, alpha, dropout): {sorted(hp)}; "
                         "the adapter format stores one setting for all layers")
    return hp.pop()


def _trainable_params(model, trainable, lora_ids):
    return {n: p for n, p in model.named_parameters()
            if id(p) not in lora_ids and any(_is_prefix(t, n) for t in trainable)}


def _atomic_savez(path, arrays):
    """``np.savez`` through a temporary file in the same folder, fsynced, renamed over ``path``."""
    atomic_write(path, lambda f: np.savez(f, **arrays))
    fsync_dir(path.parent)


def save_adapters(model, directory):
    """Write the LoRA weights (and the ``trainable`` parameters) of ``model`` to ``directory``.

    ``adapter_model.npz``: ``{name}.lora_A`` / ``{name}.lora_B`` per LoRA layer plus the
    trainable parameters under their state-dict names (host arrays, no pickle);
    ``adapter_config.json``: r, alpha, dropout, target_modules, trainable, modules, format
    (and the model type and the weights' sha256, checked on loading). Each file is written
    atomically (temporary file + rename), the weights first. Returns the directory.
    """
    who = "save_adapters"
    mods = _require_lora(model, who)
    r, alpha, dropout = _uniform(mods, who)
    names = list(mods)
    record = model.__dict__.get(_RECORD)
    if record is not None and record["modules"] == names:
        targets, trainable = record["target_modules"], record["trainable"]
    else:                                    # LoRA layers placed by hand: name them exactly
        targets, trainable = names, []
    lora_ids = {id(p) for m in mods.values() for p in (m.lora_A, m.lora_B)}
    arrays = {}
    for n, m in mods.items():
        arrays[f"{n}.lora_A"] = m.lora_A.numpy()
        arrays[f"{n}.lora_B"] = m.lora_B.numpy()
    for n, p in _trainable_params(model, trainable, lora_ids).items():
        arrays[n] = p.numpy()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / ADAPTER_WEIGHTS_NAME
    _atomic_savez(weights, arrays)
    atomic_write_json(directory / ADAPTER_CONFIG_NAME, {
        "format": ADAPTER_FORMAT, "r": r, "alpha": alpha, "dropout": dropout,
        "target_modules": list(targets), "trainable": list(trainable), "modules": names,
        "model_type": getattr(model, "model_type", type(model).__name__),
        "sha256": sha256_file(weights)})
    return directory


_CONFIG_KEYS = ("format", "r", "alpha", "dropout", "target_modules", "trainable", "modules")


def _read_adapters(directory, who):
    directory = Path(directory)
    cfg_path, w_path = directory / ADAPTER_CONFIG_NAME, directory / ADAPTER_WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{who}: {p} is missing (an adapter directory written by "
                                    f"save_adapters holds {ADAPTER_CONFIG_NAME} and "
                                    f"{ADAPTER_WEIGHTS_NAME})")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{who}: {cfg_path} is not readable JSON ({e})") from e
    if not isinstance(cfg, dict) or cfg.get("format") != ADAPTER_FORMAT:
        found = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise ValueError(f"{who}: {cfg_path} has format {found!r}, expected "
                         f"{ADAPTER_FORMAT!r} (written by minillm's save_adapters)")
    missing = [k for k in _CONFIG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{who}: {cfg_path} lacks the keys {missing}")
    if "sha256" in cfg and sha256_file(w_path) != cfg["sha256"]:
        raise ValueError(f"{who}: {w_path} does not match {cfg_path} (sha256 differs: the file "
                         "was changed or a save was interrupted); save the adapters again")
    try:
        with np.load(w_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:
        raise ValueError(f"{who}: {w_path} is not a readable adapter weights file ({e})") from e
    return cfg, arrays, w_path


def load_adapters(model, directory):
    """Load adapters written by :func:`save_adapters` into ``model`` and return it.

    A model without LoRA layers gets them first (``apply_lora`` with the saved r, alpha,
    dropout, target_modules and trainable); a model with LoRA layers must have the saved
    ones, with the same r and alpha, unmerged. Every key, shape and dtype is checked before
    anything is copied; a problem is an error naming the key and the file (a model that got
    its LoRA layers here gets them removed again).
    """
    who = "load_adapters"
    if not isinstance(model, Module):
        raise TypeError(f"{who}: expected an nn.Module, got {type(model).__name__}")
    cfg, arrays, w_path = _read_adapters(directory, who)
    kind = getattr(model, "model_type", None)
    if kind is not None and cfg.get("model_type", kind) != kind:
        raise ValueError(f"{who}: {w_path.parent} holds adapters of a {cfg['model_type']!r} "
                         f"model, this is a {kind!r} model")
    applied = not lora_modules(model)
    if applied:
        try:
            apply_lora(model, r=cfg["r"], alpha=cfg["alpha"], dropout=cfg["dropout"],
                       target_modules=cfg["target_modules"], trainable=cfg["trainable"])
        except (TypeError, ValueError) as e:
            raise type(e)(f"{who}: the LoRA config saved with {w_path} does not fit the "
                          f"model: {e}") from e
    try:
        _load_arrays(model, cfg, arrays, w_path, who)
    except BaseException:
        if applied:
            remove_lora(model, merge=False)
        raise
    return model


def _load_arrays(model, cfg, arrays, w_path, who):
    mods = lora_modules(model)
    if sorted(mods) != sorted(cfg["modules"]):
        raise ValueError(f"{who}: the model's LoRA layers differ from those in {w_path}: only "
                         f"in the model: {sorted(set(mods) - set(cfg['modules']))}, only in the "
                         f"file: {sorted(set(cfg['modules']) - set(mods))}")
    for n, m in mods.items():
        if m.r != cfg["r"] or m.alpha != float(cfg["alpha"]):
            raise ValueError(f"{who}: LoRA layer {n!r} has r={m.r}, alpha={m.alpha:g}, the "
                             f"adapters in {w_path} r={cfg['r']}, alpha={cfg['alpha']:g}")
        if m.merged:
            raise RuntimeError(f"{who}: LoRA layer {n!r} is merged; unmerge_lora(model) before "
                               "loading new adapters (the merged weight holds the old update)")
    targets = {}
    for n, m in mods.items():
        targets[f"{n}.lora_A"], targets[f"{n}.lora_B"] = m.lora_A, m.lora_B
    lora_ids = {id(p) for p in targets.values()}
    targets.update(_trainable_params(model, cfg["trainable"], lora_ids))
    missing = [k for k in targets if k not in arrays]
    unexpected = [k for k in arrays if k not in targets]
    if missing or unexpected:
        raise ValueError(f"{who}: the keys of {w_path} do not fit the model: missing "
                         f"{missing}, unexpected {unexpected}")
    for k, p in targets.items():
        a = arrays[k]
        if tuple(a.shape) != p.shape:
            raise ValueError(f"{who}: {k!r} in {w_path} has shape {tuple(a.shape)}, the model "
                             f"expects {p.shape}")
        if a.dtype != p.dtype:
            raise TypeError(f"{who}: {k!r} in {w_path} is {a.dtype}, the model's parameter is "
                            f"{p.dtype} (no silent cast: convert the model first, e.g. "
                            f"model.to(dtype=np.{a.dtype}))")
    with no_grad():
        for k, p in targets.items():
            p.copy_(tensor(arrays[k], device=p.device))
