"""The optimizer base class: parameter groups, per-parameter state, state dicts.

An optimizer holds a list of *parameter groups*. Each group is a dict with the key
``"params"`` (a list of tensors) and one value for every option of the optimizer
(``lr``, ``weight_decay`` ...); options missing from a group fall back to the defaults
given to the constructor. Learning-rate schedulers change ``group["lr"]``::

    opt = AdamW([{"params": decay, "weight_decay": 0.1},
                 {"params": no_decay, "weight_decay": 0.0}], lr=3e-4)

Per-parameter state (momentum buffers, moving averages, step counts) lives in
``opt.state[p]``, a dict, with arrays on the parameter's own device. ``step()`` updates
``p.data`` in place under :func:`minillm.no_grad` and calls ``p.mark_modified()``, so a graph
that saved the old values refuses to backpropagate through them.

``state_dict()`` returns only host values (``np.ndarray``, int, float, lists): it can be
written with ``json`` + ``np.savez`` and never needs pickle. Parameters are numbered in
the order of the groups, as in PyTorch.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend
from ..autograd import Tensor, enable_grad, no_grad

__all__ = ["Optimizer", "required"]


class _Required:
    """Marker for an option without a default value (e.g. SGD's ``lr``)."""

    def __repr__(self):
        return "<required>"


required = _Required()

# Keys a parameter group may carry besides "params" and the optimizer's options:
# "initial_lr" is written by learning-rate schedulers, "name" is a free label.
_EXTRA_GROUP_KEYS = ("initial_lr", "name")


def _check_number(name, value, low=0.0, high=None, high_open=False, where=""):
    """Raise a clear ``ValueError`` unless ``low <= value (<|<=) high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"Invalid {name}{where}: {value!r} (expected a real number)")
    if value < low or (high is not None and (value >= high if high_open else value > high)):
        bound = f"[{low}, {high})" if high_open else (f"[{low}, {high}]" if high is not None
                                                     else f">= {low}")
        raise ValueError(f"Invalid {name}{where}: {value} (must be {bound})")


def _param_list(params, gi):
    """Group ``gi``'s parameters as a non-empty list (one Tensor, or a list/tuple; no set)."""
    if isinstance(params, Tensor):
        params = [params]
    elif isinstance(params, (set, frozenset)):
        raise TypeError(f"parameter group {gi}: parameters must be given in a deterministic "
                        "order (a list or tuple), not a set")
    else:
        params = list(params)
    if not params:
        raise ValueError(f"parameter group {gi} has an empty parameter list")
    return params


def _check_group_params(params, gi):
    """Each parameter is a trainable floating-point leaf Tensor, once; returns their ids."""
    seen = set()
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"parameter group {gi}: item {i} is a {type(p).__name__}, "
                            "but an optimizer can only optimize minillm Tensors")
        if not p.requires_grad:
            raise ValueError(
                f"parameter group {gi}: parameter {i} (shape {p.shape}) does not require "
                "grad, so it would never be updated; create it with requires_grad=True "
                "(or leave frozen parameters out of the optimizer)")
        if not p.is_leaf:
            raise ValueError(f"parameter group {gi}: parameter {i} (shape {p.shape}) is not "
                             "a leaf tensor (it is the result of an operation); an "
                             "optimizer can only update leaves")
        if p.dtype.kind != "f":
            raise TypeError(f"parameter group {gi}: parameter {i} has dtype {p.dtype}; "
                            "only floating-point tensors can be optimized")
        if id(p) in seen:
            raise ValueError(f"parameter group {gi}: parameter {i} (shape {p.shape}) "
                             "appears twice in the group")
        seen.add(id(p))
    return seen


class Optimizer:
    """Base class of all optimizers.

    Subclasses pass their ``defaults`` (a dict of option -> default value) to
    ``__init__``, may override :meth:`_validate_group` to check a group's options, and
    implement :meth:`_update(p, grad, state, group)`, the update of one parameter.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}            # parameter (Tensor) -> dict of its state
        self._state_device = {}    # parameter -> device its state arrays live on
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Tensors or dicts, but got a single Tensor; wrap it in a list: [p]")
        if isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters must be given in a deterministic order "
                            "(a list, a tuple or model.parameters()), not a set")
        if isinstance(params, dict):
            raise TypeError("params must be an iterable of Tensors or of parameter-group dicts; "
                            "got one dict: wrap it in a list, [{'params': ...}]")
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # -- parameter groups ----------------------------------------------------------------
    def add_param_group(self, param_group):
        """Add a group ``{"params": [...], option: value, ...}``; missing options use the defaults.

        Useful to start training new layers (e.g. when unfreezing) with their own options.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("a parameter group needs a 'params' key with the list of tensors")
        gi = len(self.param_groups)
        params = _param_list(param_group["params"], gi)
        seen = _check_group_params(params, gi)
        # ``id`` sets, never ``p in list``: Tensor.__eq__ is elementwise.
        for gj, other in enumerate(self.param_groups):
            if any(id(q) in seen for q in other["params"]):
                raise ValueError(f"some parameters appear in more than one parameter group "
                                 f"(groups {gj} and {gi}); each parameter may be in one group")
        group = self._group_options(param_group, params, gi)
        self._validate_group(group, where="" if gi == 0 else f" in parameter group {gi}")
        self.param_groups.append(group)

    def _group_options(self, param_group, params, gi):
        """The group dict: ``params``, every option (given or default) and the extra keys."""
        unknown = sorted(set(param_group) - set(self.defaults) - {"params"}
                         - set(_EXTRA_GROUP_KEYS))
        if unknown:
            raise ValueError(f"parameter group {gi}: unknown option(s) {unknown} for "
                             f"{type(self).__name__}; its options are {sorted(self.defaults)}")
        group = {"params": params}
        for name, default in self.defaults.items():
            value = param_group.get(name, default)
            if value is required:
                raise ValueError(f"parameter group {gi} does not specify the required option "
                                 f"{name!r} and the optimizer has no default for it")
            group[name] = value
        for name in _EXTRA_GROUP_KEYS:
            if name in param_group:
                group[name] = param_group[name]
        return group

    def _validate_group(self, group, where=""):
        """Check a group's options (``lr`` here; subclasses add theirs). ``where``: its name."""
        _check_number("learning rate", group["lr"], where=where)

    # -- the step ------------------------------------------------------------------------
    def zero_grad(self, set_to_none=True):
        """Forget the gradients: ``p.grad = None`` (default) or fill them with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data.fill(0)
                    p.grad.mark_modified()

    def step(self, closure=None):
        """Update every parameter that has a gradient; parameters with ``grad is None`` are skipped.

        ``closure``, if given, re-evaluates the model and returns the loss (it runs with
        grad mode on, before the update); its result is returned.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state.get(p)
                    if state is None:
                        state = self.state[p] = {}
                        self._state_device[p] = p._device
                    elif self._state_device.get(p) != p._device:
                        self._follow_device(p, state)     # the model was moved with .to()
                    with p.device:            # CuPy allocates on the *current* GPU
                        self._update(p, p.grad.data, state, group)
                    p.mark_modified()
        return loss

    def _follow_device(self, p, state):
        """Move ``p``'s state arrays to the device ``p`` now lives on (explicit copies)."""
        for name, v in state.items():
            if hasattr(v, "shape"):
                state[name] = backend.to_device(backend.to_host(v), p._device)
        self._state_device[p] = p._device

    def _update(self, p, grad, state, group):  # pragma: no cover - abstract
        """Update ``p.data`` in place from the raw gradient array ``grad``."""
        raise NotImplementedError

    # -- saving and loading ---------------------------------------------------------------
    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """The optimizer's state as host values (arrays copied to ``np.ndarray``).

        ``{"state": {index: {name: np.ndarray | int | float}},
        "param_groups": [{option: value, ..., "params": [index, ...]}]}``
        """
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: (list(v) if isinstance(v, tuple) else v)
                      for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index[id(p)] = len(index)
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {}
        for p in self._params():
            s = self.state.get(p)
            if not s:
                continue
            state[index[id(p)]] = {name: _to_host_copy(v) for name, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a :meth:`state_dict` (also one read back from JSON/npz) into this optimizer.

        The groups must match this optimizer's groups in number and size and every saved
        array must have its parameter's shape. Group options (``lr`` ...) are taken from
        ``state_dict``; arrays are copied to each parameter's device and dtype.
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict \
                or "param_groups" not in state_dict:
            raise ValueError("load_state_dict expects a dict with keys 'state' and "
                             "'param_groups', as returned by Optimizer.state_dict()")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter group(s), "
                             f"but the optimizer has {len(self.param_groups)}")
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            n_saved = len(saved.get("params", ()))
            if n_saved != len(group["params"]):
                raise ValueError(f"parameter group {gi} has {n_saved} parameter(s) in the loaded "
                                 f"state dict, but {len(group['params'])} in the optimizer")
        params = {}                              # saved index -> parameter
        for saved, group in zip(saved_groups, self.param_groups):
            for i, p in zip(saved["params"], group["params"]):
                params[int(i)] = p
        new_state = {}
        for key, entries in state_dict["state"].items():
            try:
                p = params[int(key)]
            except (KeyError, ValueError):
                raise ValueError(f"loaded state dict has state for parameter {key!r}, which is "
                                 "not in any of its parameter groups") from None
            new_state[p] = {name: _to_param_device(v, p, name, key) for name, v in entries.items()}
        new_groups = []
        for saved, group in zip(saved_groups, self.param_groups):
            g = {k: (tuple(v) if isinstance(v, list) else v)
                 for k, v in saved.items() if k != "params"}
            g["params"] = group["params"]
            new_groups.append(g)
        for gi, g in enumerate(new_groups):
            missing = sorted(set(self.defaults) - set(g))
            if missing:
                raise ValueError(f"loaded parameter group {gi} lacks the option(s) {missing} of "
                                 f"{type(self).__name__}; was the state dict saved from another "
                                 "optimizer?")
            self._validate_group(g, where=f" in loaded parameter group {gi}")
        self.state = new_state
        self._state_device = {p: p._device for p in new_state}
        self.param_groups = new_groups

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(group):
                if k != "params":
                    lines.append(f"    {k}: {group[k]}")
        lines.append(")")
        return "\n".join(lines)


def _to_host_copy(value):
    """A state value as a host value that does not share memory with the live state."""
    if isinstance(value, (bool, numbers.Number)) and not isinstance(value, np.generic):
        return value
    if isinstance(value, np.generic):
        return value.item()
    host = backend.to_host(value)
    return host.copy() if host is value else host


def _to_param_device(value, p, name, key):
    """A loaded state value moved to ``p``'s device; arrays must have ``p``'s shape."""
    if isinstance(value, (bool, numbers.Number)) and not isinstance(value, np.generic):
        return value
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0
                                         and name == "step"):
        return value.item()
    if isinstance(value, Tensor):
        value = value.numpy()
    elif not isinstance(value, np.ndarray):
        try:
            value = backend.to_host(value)
        except TypeError:
            raise TypeError(f"state {name!r} of parameter {key}: expected an array or a number, "
                            f"got {type(value).__name__}") from None
    if tuple(value.shape) != p.shape:
        raise ValueError(f"state {name!r} of parameter {key} has shape {tuple(value.shape)}, "
                         f"but the parameter has shape {p.shape}")
    # np.array copies: the optimizer must not update the caller's arrays in place.
    return backend.to_device(np.array(value, dtype=p.dtype), p.device)
