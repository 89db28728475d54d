"""Small file helpers shared by dataset downloads, model saving and checkpoints.

No minillm imports: any layer may use it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

__all__ = ["sha256_file", "fsync_dir", "replace_directory"]


def sha256_file(path):
    """Hex sha256 of a file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path):
    """Flush a directory entry (a rename into it) to disk; a no-op where it cannot be done."""
    if os.name != "posix":           # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_directory(tmp, final):
    """Swap the complete directory ``tmp`` in as ``final`` (same parent), replacing any old one.

    The old directory is renamed aside first and deleted only after the new one is in place,
    so an interruption leaves either the old or the new version, never a mixture.
    """
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
