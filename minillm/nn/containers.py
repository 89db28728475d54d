"""Containers: ``Sequential``, ``ModuleList``, ``ModuleDict`` (PyTorch's behaviour and names).

Their sub-modules are registered under their index (``"0"``, ``"1"``, ...) or key, so a
parameter of the second layer of ``self.layers`` is named ``layers.1.weight``.
"""
from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Mapping

from .module import Module

__all__ = ["Sequential", "ModuleList", "ModuleDict"]


def _check_module(value, where):
    if not isinstance(value, Module):
        raise TypeError(f"{where}: expected an nn.Module, got {type(value).__name__} {value!r}")
    return value


def _index(i, n, where):
    if isinstance(i, bool) or not isinstance(i, numbers.Integral):
        raise TypeError(f"{where} indices must be ints or slices, got {type(i).__name__}")
    if not -n <= i < n:
        raise IndexError(f"{where} index {i} is out of range for length {n}")
    return int(i) % n


class _IndexedModules(Module):
    """Shared list behaviour: modules stored under the keys '0', '1', ... in order."""

    def _values(self):
        return list(self._modules.values())

    def _renumber(self, modules):
        self._modules.clear()
        for i, m in enumerate(modules):
            self._modules[str(i)] = m

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(self._values()[idx])
        return self._values()[_index(idx, len(self), type(self).__name__)]

    def __setitem__(self, idx, module):
        i = _index(idx, len(self), type(self).__name__)
        key = list(self._modules)[i]
        self._modules[key] = _check_module(module, f"{type(self).__name__}[{idx}] = ...")

    def __delitem__(self, idx):
        mods = self._values()
        if isinstance(idx, slice):
            del mods[idx]
        else:
            del mods[_index(idx, len(self), type(self).__name__)]
        self._renumber(mods)

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        self._modules[str(len(self))] = _check_module(module, f"{type(self).__name__}.append")
        return self

    def extend(self, modules):
        """Append every module of an iterable; returns self."""
        for m in modules:
            _check_module(m, f"{type(self).__name__}.extend")
            self._modules[str(len(self))] = m
        return self

    def insert(self, index, module):
        """Insert ``module`` before position ``index``."""
        mods = self._values()
        mods.insert(index, _check_module(module, f"{type(self).__name__}.insert"))
        self._renumber(mods)

    def __iadd__(self, modules):
        return self.extend(modules)

    def __dir__(self):
        return [k for k in super().__dir__() if not k.isdigit()]


class Sequential(_IndexedModules):
    """A chain of modules: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    Built from positional modules (named '0', '1', ...) or from one ``OrderedDict``
    ``name -> module`` (named by its keys). Supports ``len``, iteration, ``seq[i]`` and
    ``seq[i:j]`` (a new Sequential of the same modules), ``append``.
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], Mapping):
            for name, m in args[0].items():
                self.add_module(name, _check_module(m, f"Sequential[{name!r}]"))
        else:
            for i, m in enumerate(args):
                self.add_module(str(i), _check_module(m, f"Sequential argument {i}"))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(_IndexedModules):
    """A list of modules whose parameters are registered (a plain list's would not be).

    ``ModuleList([Linear(4, 4) for _ in range(3)])``; supports ``append``, ``extend``,
    ``insert``, indexing, slicing (a new ModuleList), ``len`` and iteration. It has no
    ``forward``: loop over it in the owner's forward.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            if isinstance(modules, Module) and not isinstance(modules, ModuleList):
                raise TypeError("ModuleList(modules): modules must be an iterable of nn.Module, "
                                f"got a single {type(modules).__name__}; wrap it in a list")
            self.extend(modules)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(); iterate over it instead")


class ModuleDict(Module):
    """A dict ``name -> module`` whose modules are registered (insertion order kept).

    Supports ``md[key]``, ``md[key] = module``, ``del md[key]``, ``in``, ``len``, iteration
    over keys, ``keys()``, ``values()``, ``items()``, ``update()``, ``pop()`` and ``clear()``.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        try:
            return self._modules[key]
        except KeyError:
            raise KeyError(f"ModuleDict has no module {key!r}; keys: {list(self._modules)}") \
                from None

    def __setitem__(self, key, module):
        self.add_module(key, _check_module(module, f"ModuleDict[{key!r}] = ..."))

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        """Add modules from a mapping or an iterable of ``(key, module)`` pairs."""
        items = modules.items() if isinstance(modules, Mapping) else modules
        for pair in items:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"ModuleDict.update expects a mapping or (key, module) pairs, "
                                f"got element {pair!r}")
            self[pair[0]] = pair[1]

    def pop(self, key):
        m = self[key]
        del self._modules[key]
        return m

    def clear(self):
        self._modules.clear()

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward(); look modules up by key instead")
