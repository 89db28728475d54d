"""``Parameter`` and ``Module``: the building blocks every layer and model is made of.

A :class:`Module` owns named :class:`Parameter` tensors (learned), buffers (state that is
saved but not learned, e.g. a causal mask) and sub-modules. Assigning them as attributes
registers them, so ``model.parameters()`` finds every weight of a nested model::

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 8)          # registered as sub-module "fc"
            self.scale = nn.Parameter(mm.ones(8))

        def forward(self, x):
            return self.fc(x) * self.scale

    [name for name, _ in MLP().named_parameters()]   # ['scale', 'fc.weight', 'fc.bias']

The API follows PyTorch's ``torch.nn.Module`` (names, call shapes, ``state_dict`` keys).
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Mapping

import numpy as np

from .. import backend
from ..autograd.function import no_grad
from ..autograd.tensor import Tensor, tensor as _tensor
from ..lazyarray import LazyArray

__all__ = ["Parameter", "Module", "IncompatibleKeys", "StateDictError"]


class Parameter(Tensor):
    """A Tensor that is a learned weight of a Module (``requires_grad=True`` by default).

    ``Parameter(t)`` shares the data of Tensor ``t`` (like PyTorch); ``Parameter(array)``
    copies a NumPy array (or list) to the default device, keeping a NumPy array's dtype.
    Assigning a Parameter as an attribute of a Module registers it.
    """

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            src = data.detach()
        else:
            src = _tensor(data)
        if src.dtype.kind != "f":
            raise TypeError(f"Parameter: a learned weight must be a floating tensor, got dtype "
                            f"{src.dtype}; convert it first (e.g. array.astype(np.float32))")
        self.data, self.grad, self.requires_grad = src.data, None, bool(requires_grad)
        self._ctx, self._version, self._device = None, 0, src._device

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


#: What ``load_state_dict`` returns: the keys it could not match (a tuple, so it unpacks).
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class StateDictError(RuntimeError):
    """``load_state_dict`` found missing/unexpected keys or mis-shaped/mis-typed values."""


def _check_name(kind, name, owner):
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a string, got {type(name).__name__}")
    if name == "" or "." in name:
        raise KeyError(f"{kind} name {name!r} is invalid: it must be non-empty and contain no '.'")
    if hasattr(owner, name) and not any(name in d for d in
                                        (owner._parameters, owner._buffers, owner._modules)):
        raise KeyError(f"cannot register {kind} {name!r}: {type(owner).__name__} already has "
                       "an attribute with that name")


def _add_indent(text, spaces):
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    pad = " " * spaces
    return lines[0] + "\n" + "\n".join(pad + line for line in lines[1:])


class Module:
    """Base class of all layers and models.

    Subclasses call ``super().__init__()`` first, create their parameters and sub-modules
    as attributes, and define ``forward``; calling the module (``m(x)``) runs ``forward``.
    ``training`` is True after construction; ``eval()`` / ``train()`` set it recursively
    (it changes what Dropout does).
    """

    def __init__(self):
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent_buffers"] = set()
        d["_modules"] = OrderedDict()

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward(); a subclass of "
                                  "nn.Module must define forward(self, ...)")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- registration -------------------------------------------------------------------------
    def _require_init(self, what):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call: call "
                                 f"super().__init__() first in {type(self).__name__}.__init__")

    def register_parameter(self, name, param):
        """Add a Parameter (or ``None``, a declared-but-absent one like ``bias=False``)."""
        self._require_init("parameters")
        _check_name("parameter", name, self)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot register {type(param).__name__} as parameter {name!r}: "
                            "wrap it as nn.Parameter(tensor) (or use register_buffer for "
                            "state that is not learned)")
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Add a Tensor that is state but not a learned weight (moved by ``to()``).

        ``persistent=False`` keeps it out of ``state_dict()`` (e.g. a mask that is rebuilt).
        """
        self._require_init("buffers")
        _check_name("buffer", name, self)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"buffer {name!r} must be a Tensor or None, got "
                            f"{type(tensor).__name__}")
        if isinstance(tensor, Parameter):
            raise TypeError(f"buffer {name!r} is a Parameter; use register_parameter (or "
                            "assign it as an attribute) for learned weights")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name, module):
        """Add a sub-module (or ``None``) under ``name``."""
        self._require_init("sub-modules")
        _check_name("module", name, self)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not an nn.Module (sub-module {name!r})")
        self._modules[name] = module

    register_module = add_module

    def _forget(self, name, *dicts):
        for d in dicts:
            if name in d:
                del d[name]

    def __setattr__(self, name, value):
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            self._require_init("parameters")
            self._forget(name, d, self._buffers, self._modules)
            self._non_persistent_buffers.discard(name)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} of "
                                f"{type(self).__name__} (an nn.Parameter or None is expected)")
            params[name] = None
        elif isinstance(value, Module):
            self._require_init("sub-modules")
            self._forget(name, d, params, self._buffers)
            self._non_persistent_buffers.discard(name)
            self._modules[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as sub-module {name!r} of "
                                f"{type(self).__name__} (an nn.Module or None is expected)")
            self._modules[name] = None
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} of "
                                f"{type(self).__name__} (a Tensor or None is expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the registries.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            r = d.get(registry)
            if r is not None and name in r:
                return r[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # -- traversal ----------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """``(name, module)`` for this module ('') and every descendant, depth first."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            sub = f"{prefix}.{name}" if prefix else name
            yield from m.named_modules(memo, sub, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        """``(name, module)`` for the direct sub-modules."""
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, registry, prefix, recurse, remove_duplicate=True):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for mod_prefix, m in mods:
            for name, t in getattr(m, registry).items():
                if t is None or (remove_duplicate and id(t) in seen):
                    continue
                seen.add(id(t))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), t

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """``(dotted name, Parameter)`` pairs; a Parameter shared by two layers appears once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        """Call ``fn(module)`` on every sub-module (children first) and then on self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # -- modes --------------------------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode on self and all sub-modules."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode): mode must be a bool, got {type(mode).__name__}")
        self.training = mode
        for m in self.children():
            m.train(mode)
        return self

    def eval(self):
        """Evaluation mode: ``train(False)`` (Dropout becomes the identity)."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Freeze (``False``) or unfreeze every parameter; returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Drop every parameter's gradient (``set_to_none=False`` fills it with zeros instead)."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data.fill(0)
                p.grad.mark_modified()

    # -- devices and dtypes -------------------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move every parameter and buffer to ``device`` and/or cast floating ones to ``dtype``.

        In place: the same Parameter objects get new arrays (and their ``.grad`` too), so an
        optimizer created before the move keeps working. ``model.to(np.float64)`` is short
        for ``model.to(dtype=np.float64)``. Returns self.
        """
        if device is not None and not isinstance(device, (str, backend.Device)):
            if dtype is not None:
                raise TypeError(f"to(): {device!r} is not a device ('cpu', 'cuda:0', 'fake')")
            device, dtype = None, device
        dev = backend.device(device) if device is not None else None
        if dtype is not None:
            try:
                dtype = np.dtype(dtype)
            except TypeError:
                raise TypeError(f"to(): expected a device ('cpu', 'cuda:0', 'fake') or a "
                                f"floating dtype, got {dtype!r}") from None
            if dtype.kind != "f":
                raise TypeError(f"Module.to() only casts to floating dtypes, got {dtype}")
        seen = set()
        for m in self.modules():
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))
                _move_(t, dev, dtype)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    # -- saving and loading -------------------------------------------------------------------
    def _state_items(self, prefix=""):
        """(key, tensor) for every parameter and persistent buffer, duplicates included."""
        for mod_prefix, m in self.named_modules(prefix=prefix, remove_duplicate=False):
            dot = mod_prefix + "." if mod_prefix else ""
            for name, p in m._parameters.items():
                if p is not None:
                    yield dot + name, p
            for name, b in m._buffers.items():
                if b is not None and name not in m._non_persistent_buffers:
                    yield dot + name, b

    def state_dict(self, prefix=""):
        """An ordered dict ``dotted name -> detached Tensor`` of parameters and persistent buffers.

        The tensors share memory with the module (no copy); ``.numpy()`` them to save.
        A Parameter shared by two layers (tied weights) appears under both names, as in PyTorch.
        """
        out = OrderedDict()
        for key, t in self._state_items(prefix):
            out[key] = t.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values from ``state_dict`` (Tensors or NumPy arrays) into the parameters and buffers.

        Values are copied into the existing tensors, on their device. Values may also be
        :class:`~minillm.lazyarray.LazyArray` s (arrays still in a checkpoint file): they are
        read one at a time, straight into their tensor, so loading needs no second copy of
        the model in memory (a read error part-way leaves the tensors before it loaded).
        Every key is checked before anything is copied; one error lists all problems: missing
        keys, unexpected keys (only when ``strict``), shape mismatches and floating dtype
        mismatches (never cast silently: convert the values, or the model with
        ``model.to(dtype=...)``, first).
        Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict expects a mapping name -> Tensor/array, got "
                            f"{type(state_dict).__name__}")
        own = OrderedDict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        problems, sources = [], {}
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            src = _source_array(key, value)
            if tuple(src.shape) != target.shape:
                hint = ""
                if src.ndim == 2 and tuple(src.shape) == target.shape[::-1]:
                    hint = (" (transposed? minillm's Linear weight is (in_features, "
                            "out_features): use weight.T when porting from PyTorch)")
                problems.append(f"  shape mismatch for {key!r}: the module expects "
                                f"{target.shape}, the state dict has {tuple(src.shape)}{hint}")
            elif not _dtype_ok(src.dtype, target.dtype):
                problems.append(f"  dtype mismatch for {key!r}: the module has {target.dtype}, "
                                f"the state dict has {src.dtype} (no silent cast: convert the "
                                f"value, e.g. array.astype(np.{target.dtype}), or the model, "
                                f"e.g. model.to(dtype=np.{src.dtype}))")
            else:
                sources[key] = src
        if strict:
            if missing:
                problems.insert(0, "  missing keys (in the module, not in the state dict): "
                                + ", ".join(map(repr, missing)))
            if unexpected:
                problems.insert(1 if missing else 0,
                                "  unexpected keys (in the state dict, not in the module): "
                                + ", ".join(map(repr, unexpected)))
        if problems:
            raise StateDictError(f"error(s) in loading state_dict for {type(self).__name__}:\n"
                                 + "\n".join(problems))
        with no_grad():
            for key, src in sources.items():
                copy_into(own[key], src)
        return IncompatibleKeys(missing, unexpected)

    # -- printing -----------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside ``Name(...)`` for a leaf layer, e.g. ``in_features=4, ...``."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        children = [f"({name}): {_add_indent(repr(m), 2)}" for name, m in self._modules.items()]
        body = lines + children
        if not body:
            return f"{type(self).__name__}()"
        if len(lines) == 1 and not children:
            return f"{type(self).__name__}({extra})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(body) + "\n)"


def _move_(t, dev, dtype):
    """Give Tensor ``t`` (and its grad) arrays on ``dev`` / of ``dtype``, keeping the object."""
    floating = t.dtype.kind == "f"
    cast = dtype if floating and dtype is not None and dtype != t.dtype else None
    target = dev if dev is not None and dev != t.device else None
    if cast is None and target is None:
        return
    with no_grad():
        for holder in (t, t.grad):
            if holder is None:
                continue
            moved = holder.to(device=target, dtype=cast)
            holder.data, holder._device = moved.data, moved.device
            holder.mark_modified()


def copy_into(target, src):
    """``target.data[...] = src`` for a Tensor ``target`` and an array or LazyArray ``src``
    (moved to ``target``'s device explicitly). A LazyArray is read straight into a host
    tensor, or read on the host and sent to the device: one tensor at a time, so the host
    never holds the whole model twice."""
    if isinstance(src, LazyArray) and target.device.type == "cpu":
        src.read_into(target.data)                   # from the file into the parameter
    else:
        host_or_device = src.read() if isinstance(src, LazyArray) else src
        target.data[...] = _on_device(host_or_device, target.device)
    target.mark_modified()


def _source_array(key, value):
    """The array behind a state-dict value: a Tensor's data, a NumPy/device array, or a
    LazyArray (still in its file)."""
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, LazyArray):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    try:
        backend.device_of(value)          # a CuPy or stand-in device array
        return value
    except TypeError:
        raise TypeError(f"load_state_dict: the value for {key!r} is a {type(value).__name__}; "
                        "expected a Tensor or a NumPy array") from None


def _on_device(array, dev):
    """``array`` as an array on ``dev`` (an explicit transfer when it lives elsewhere)."""
    src = backend.device_of(array)
    if src == dev:
        return array
    return backend.to_device(backend.to_host(array), dev)


def _dtype_ok(src, dst):
    """Floating values must match exactly; integer buffers accept integers that fit without
    wrapping (int8 -> int64 yes, int64 -> int8 no: 300 would silently become 44)."""
    if src == dst:
        return True
    if src.kind == "f" or dst.kind == "f":
        return False
    return bool(np.can_cast(src, dst, casting="safe"))
