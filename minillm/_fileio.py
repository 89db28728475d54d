"""Small file helpers shared by dataset downloads, model saving and checkpoints.

No minillm imports: any layer may use it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["sha256_file", "fsync_dir", "replace_directory", "atomic_write_text",
           "atomic_write_json", "json_default", "current_umask", "make_temp_file",
           "make_temp_dir"]


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


def current_umask():
    """The process's umask: from ``/proc/self/status`` where Linux shows it, else by setting
    it and putting it back (a moment in which another thread's new file would be private)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def make_temp_file(dir, prefix, suffix):
    """``tempfile.mkstemp`` (returns ``(fd, path)``), but the file gets the mode ``open``
    would give it, 0666 less the umask, not mkstemp's private 0600: a file renamed into
    place later must look like any other file the user writes."""
    fd, path = tempfile.mkstemp(dir=dir, prefix=prefix, suffix=suffix)
    os.chmod(path, 0o666 & ~current_umask())
    return fd, path


def make_temp_dir(prefix, dir):
    """``tempfile.mkdtemp``, but the folder gets mode 0777 less the umask, not 0700 (see
    :func:`make_temp_file`). Returns its path as a ``Path``."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    os.chmod(path, 0o777 & ~current_umask())
    return path


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


def atomic_write(path, write, text=False):
    """Call ``write(f)`` on a temporary file in ``path``'s folder (binary, or UTF-8 text with
    ``text``), fsync it, then rename it over ``path``: readers see the old file or the new
    one, never half of one. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp_file(path.parent, f".{path.name}.", ".tmp")
    try:
        with (os.fdopen(fd, "w", encoding="utf-8", newline="") if text
              else os.fdopen(fd, "wb")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text), text=True)


def atomic_write_bytes(path, data):
    """Write ``data`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def json_default(obj):
    """``json.dump``'s ``default`` for NumPy scalars/arrays and paths."""
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):      # NumPy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def atomic_write_json(path, obj):
    """:func:`atomic_write_text` of ``obj`` as indented UTF-8 JSON (non-ASCII kept)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False,
                                              default=json_default))
