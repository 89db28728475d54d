"""Finding, verifying and (on first use) downloading dataset files.

Every remote file is a :class:`RemoteFile`: a folder, a file name, the canonical URL and
its sha256. :func:`fetch` looks for it, in this order:

1. ``$MINILLM_DATA/<folder>/<file>`` (a folder you fill yourself; CI points it at a copy);
2. ``data_home()/<folder>/<file>`` (the download cache, ``~/.cache/minillm`` or
   ``$MINILLM_CACHE``);
3. a download from the URL into the cache: streamed to a temporary file in the cache
   folder, sha256-checked, then renamed into place (atomic: a half-written file never has
   the final name). ``MINILLM_OFFLINE=1`` turns downloads off.

A file found in 1 or 2 is checked against its sha256 too (once per process). A mismatch
is an error and the file is not used; a corrupt file in the cache is moved aside to
``<file>.corrupt`` so that the next call downloads a fresh copy.
"""
from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .._fileio import make_temp_file, sha256_file

ENV_DATA = "MINILLM_DATA"
ENV_CACHE = "MINILLM_CACHE"
ENV_OFFLINE = "MINILLM_OFFLINE"


class DataFileMissingError(FileNotFoundError):
    """A dataset file is not on disk and cannot be downloaded (offline or network error)."""


class ChecksumError(RuntimeError):
    """A dataset file whose sha256 differs from the recorded one; it is not used."""


@dataclass(frozen=True)
class RemoteFile:
    """One dataset file: where it lives (``folder/filename``), where it comes from, its hash."""

    folder: str
    filename: str
    url: str
    sha256: str


def data_home():
    """The download cache: ``$MINILLM_CACHE`` if set, else ``~/.cache/minillm``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minillm"


def data_dir():
    """``$MINILLM_DATA`` as a Path, or ``None`` when it is not set."""
    env = os.environ.get(ENV_DATA)
    return Path(env).expanduser() if env else None


def offline():
    """True when ``MINILLM_OFFLINE`` is set to 1/true/yes: downloads are refused."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def candidate_paths(rf):
    """Where :func:`fetch` looks for a file, in order (``$MINILLM_DATA`` first if set)."""
    paths = []
    if data_dir() is not None:
        paths.append(data_dir() / rf.folder / rf.filename)
    paths.append(data_home() / rf.folder / rf.filename)
    return paths


_verified = {}


def _check(path, rf, in_cache):
    """Verify ``path`` against ``rf.sha256`` (memoised by path, size and mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    got = _verified.get(key) or sha256_file(path)
    if got == rf.sha256:
        _verified[key] = got
        return path
    msg = (f"checksum mismatch for {path}: sha256 {got}, expected {rf.sha256} "
           f"(the original is at {rf.url}).")
    if in_cache:
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        msg += f" The cached copy was moved to {bad}; the next load downloads it again."
    else:
        msg += " The file was not used; replace it with the original."
    raise ChecksumError(msg)


def _missing_message(rf, reason):
    dirs = candidate_paths(rf)
    lines = [f"dataset file {rf.folder}/{rf.filename} not found ({reason}).",
             "Put the file at one of:"]
    if data_dir() is None:
        lines.append(f"  $MINILLM_DATA/{rf.folder}/{rf.filename}  (MINILLM_DATA is not set)")
    lines += [f"  {p}" for p in dirs]
    lines.append(f"It comes from {rf.url} (sha256 {rf.sha256}).")
    return "\n".join(lines)


def fetch(rf, quiet=False):
    """Path to a verified local copy of ``rf``, downloading it into the cache if needed."""
    data = data_dir()
    if data is not None and (data / rf.folder / rf.filename).is_file():
        return _check(data / rf.folder / rf.filename, rf, in_cache=False)
    cached = data_home() / rf.folder / rf.filename
    if cached.is_file():
        return _check(cached, rf, in_cache=True)
    if offline():
        raise DataFileMissingError(_missing_message(rf, f"{ENV_OFFLINE} is set, no download"))
    try:
        return download(rf.url, cached, rf.sha256, quiet=quiet)
    except ChecksumError:
        raise
    except OSError as e:  # URLError, timeouts, HTTP errors, disk errors
        raise DataFileMissingError(_missing_message(rf, f"download failed: {e}")) from e


def _urlopen(url, timeout):
    """The one network call of minillm (tests replace it to prove they never use it)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - https URLs from the registry


def download(url, dest, sha256, timeout=60, quiet=False):
    """Download ``url`` to ``dest`` atomically, verifying ``sha256``; returns ``dest``.

    The bytes go to a temporary file next to ``dest``; only a file with the right hash is
    renamed to ``dest``. On any failure the temporary file is removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"minillm: downloading {url} -> {dest}", file=sys.stderr)
    fd, tmp = make_temp_file(dest.parent, dest.name + ".", ".part")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as f, _urlopen(url, timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                h.update(chunk)
                f.write(chunk)
        got = h.hexdigest()
        if got != sha256:
            raise ChecksumError(f"checksum mismatch for the download of {url}: sha256 {got}, "
                                f"expected {sha256}; the download was deleted and not used.")
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return dest
