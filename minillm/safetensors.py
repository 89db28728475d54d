"""safetensors: a simple, safe file format for named arrays, read and written with NumPy.

The format (https://github.com/huggingface/safetensors) is three parts::

    N        8 bytes, little-endian unsigned 64-bit: the length of the header
    header   N bytes of UTF-8 JSON: {name: {"dtype": "F32", "shape": [2, 3],
                                            "data_offsets": [begin, end]}, ...,
                                      "__metadata__": {str: str}}      (metadata optional)
    buffer   the raw little-endian bytes of every tensor, row-major (C order)

``data_offsets`` count from the start of the buffer, ``end`` exclusive. Nothing in the file
is executed (unlike pickle), so loading an untrusted file is safe -- as long as the reader
checks every number before it uses it. This reader does, with the rules of the reference
implementation (the Rust ``safetensors`` crate):

* the header length is at most 100 MB and fits in the file;
* the header is UTF-8 JSON, an object, without duplicate keys; every entry has exactly the
  keys ``dtype`` (a known name), ``shape`` (a list of ints >= 0) and ``data_offsets``
  (two ints, ``0 <= begin <= end``); ``__metadata__``, if present, maps str to str;
* ``end - begin == prod(shape) * itemsize`` for each tensor;
* the tensors *tile* the buffer: sorted by offsets, the first starts at 0, each starts where
  the previous one ended (no gap, no overlap), and the last ends at the end of the file.

Any violation raises :class:`SafetensorsError` (a ``ValueError``) naming the tensor and the
field. Arrays are read with ``np.frombuffer`` at validated offsets and copied, so no read
goes out of bounds and the result does not keep the file's bytes alive.

Dtypes: ``F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL``. NumPy has no bfloat16, so
``BF16`` tensors load as **float32** (exactly: bfloat16 is the upper half of a float32);
the writer never produces BF16. The writer follows the reference byte for byte: compact
JSON, ``__metadata__`` first, tensors ordered by dtype (the reference's order, widest
first) then name, the header padded with spaces so the buffer starts at a multiple of 8.

    save_file({"w": np.ones((2, 3), np.float32)}, "model.safetensors", metadata={"format": "np"})
    arrays = load_file("model.safetensors")          # {"w": array(...)}
    lazy = open_file("model.safetensors")            # {"w": LazyArray}: read when loaded

``open_file`` checks the header exactly as ``load_file`` does but reads no tensor yet: a
model's ``load_state_dict`` then reads each one straight into its parameter.
"""
from __future__ import annotations

import functools
import json
import math
import os
import struct

import numpy as np

from ._fileio import atomic_write_bytes
from .lazyarray import LazyArray, read_exactly_into

__all__ = ["SafetensorsError", "load_file", "open_file", "load", "save_file", "save",
           "read_metadata", "DTYPES", "MAX_HEADER_SIZE"]

MAX_HEADER_SIZE = 100_000_000          # the reference's limit on N (100 MB)

#: safetensors dtype name -> little-endian NumPy dtype (BF16 is stored as raw uint16)
DTYPES = {
    "BOOL": np.dtype("|b1"), "U8": np.dtype("|u1"), "I8": np.dtype("|i1"),
    "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "I32": np.dtype("<i4"), "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
}
# the order of the reference's Dtype enum: the writer sorts tensors by it, descending
_DTYPE_RANK = {name: i for i, name in enumerate(
    ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"])}
# NumPy dtype (kind, itemsize) -> safetensors name, for writing
_NAME_OF = {(DTYPES[n].kind, DTYPES[n].itemsize): n for n in DTYPES if n != "BF16"}
_ENTRY_KEYS = ("dtype", "shape", "data_offsets")


class SafetensorsError(ValueError):
    """A safetensors file (or bytes) that breaks the format, or arrays that cannot be saved."""


# -- reading -----------------------------------------------------------------------------------
def _unique_object(pairs):
    """``object_pairs_hook`` for json: a dict, refusing duplicate keys (the JSON spec allows
    them, but two entries for one tensor name are ambiguous)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise SafetensorsError(f"safetensors header: duplicate key {key!r}")
        out[key] = value
    return out


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_header(data):
    """Validate the length prefix and the JSON header of ``data`` (a bytes-like object).

    Returns ``(entries, metadata, buffer_start)`` with ``entries`` a list of
    ``(name, dtype_name, shape, begin, end)`` whose offsets are checked against the file.
    """
    header, n = _read_header_json(data)
    metadata = _pop_metadata(header)
    buffer_len = len(data) - 8 - n
    entries = [_parse_entry(name, info, buffer_len) for name, info in header.items()]
    _check_tiling(entries, buffer_len)
    return entries, metadata, 8 + n


def _read_header_json(data):
    """The header of ``data`` as a dict and its length ``n``, after checking the 8-byte prefix."""
    size = len(data)
    if size < 8:
        raise SafetensorsError(f"safetensors: {size} bytes is too short; a file starts with an "
                               "8-byte header length")
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    if n > MAX_HEADER_SIZE:
        raise SafetensorsError(f"safetensors: header length {n} exceeds the limit of "
                               f"{MAX_HEADER_SIZE} bytes (corrupt file or not safetensors)")
    if 8 + n > size:
        raise SafetensorsError(f"safetensors: header length {n} is larger than the "
                               f"{size - 8} bytes after the length prefix (truncated file?)")
    try:
        text = bytes(data[8:8 + n]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SafetensorsError(f"safetensors: the header is not valid UTF-8 ({e})") from None
    try:
        header = json.loads(text, object_pairs_hook=_unique_object)
    except SafetensorsError:
        raise
    except (ValueError, RecursionError) as e:
        raise SafetensorsError(f"safetensors: the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"safetensors: the header must be a JSON object, got "
                               f"{type(header).__name__}")
    return header, n


def _pop_metadata(header):
    """Remove and return the header's ``__metadata__`` (None, or a dict of strings)."""
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str)
                                                     for v in metadata.values()):
            raise SafetensorsError("safetensors header: __metadata__ must be an object mapping "
                                   "strings to strings")
    return metadata


def _parse_entry(name, info, buffer_len):
    """One tensor's header entry, checked, as ``(name, dtype_name, shape, begin, end)``."""
    where = f"safetensors header, tensor {name!r}"
    if not isinstance(info, dict):
        raise SafetensorsError(f"{where}: expected an object with keys dtype, shape, "
                               f"data_offsets, got {type(info).__name__}")
    missing = [k for k in _ENTRY_KEYS if k not in info]
    extra = sorted(set(info) - set(_ENTRY_KEYS))
    if missing or extra:
        raise SafetensorsError(f"{where}: " + (f"missing keys {missing}" if missing else
                                               f"unknown keys {extra}") +
                               "; an entry has exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    _check_entry_types(where, dtype, shape, offsets)
    begin, end = offsets
    if end < begin:
        raise SafetensorsError(f"{where}: data_offsets end {end} < begin {begin}")
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if end - begin != nbytes:
        raise SafetensorsError(f"{where}: data_offsets span {end - begin} bytes, but "
                               f"{dtype} {shape} needs {nbytes}")
    if end > buffer_len:
        raise SafetensorsError(f"{where}: data_offsets [{begin}, {end}] lie outside the "
                               f"{buffer_len}-byte data buffer (truncated file?)")
    return name, dtype, tuple(shape), begin, end


def _check_entry_types(where, dtype, shape, offsets):
    """An entry's dtype is known, its shape a list of sizes and its offsets two integers."""
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise SafetensorsError(f"{where}: unknown dtype {dtype!r}; supported: "
                               f"{', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise SafetensorsError(f"{where}: shape must be a list of integers >= 0, got "
                               f"{shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(o) and o >= 0 for o in offsets)):
        raise SafetensorsError(f"{where}: data_offsets must be [begin, end], two integers "
                               f">= 0, got {offsets!r}")
    if math.prod(d for d in shape if d) * DTYPES[dtype].itemsize >= 2 ** 63:
        raise SafetensorsError(f"{where}: shape {shape} is too large (its size overflows "
                               "64 bits)")


def _check_tiling(entries, buffer_len):
    """The tensors must tile the buffer exactly (the reference's rule)."""
    position = 0
    for name, _, _, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else "leaves a gap"
            raise SafetensorsError(f"safetensors header, tensor {name!r}: data_offsets "
                                   f"[{begin}, {end}] {kind} (expected begin {position}); the "
                                   "tensors must cover the buffer contiguously")
        position = end
    if position != buffer_len:
        raise SafetensorsError(f"safetensors: the tensors cover {position} bytes, but the data "
                               f"buffer holds {buffer_len} (trailing bytes or truncated "
                               "header)")


def _decode(raw_array, dtype, copy=False):
    """Stored values -> a native NumPy array (BF16, the top 16 bits of a float32, widened)."""
    if dtype == "BF16":
        wide = raw_array.astype(np.uint32)
        wide <<= 16
        return wide.view(np.float32)
    return raw_array.astype(DTYPES[dtype].newbyteorder("="), copy=copy)


def _load_from(data):
    entries, _, start = _parse_header(data)
    out = {}
    for name, dtype, shape, begin, end in entries:
        raw = DTYPES[dtype]
        count = (end - begin) // raw.itemsize
        arr = np.frombuffer(data, dtype=raw, count=count, offset=start + begin).reshape(shape)
        out[name] = _decode(arr, dtype, copy=True)          # native order, owned memory
    return out


def load(data):
    """The arrays of a safetensors file given as ``bytes``: ``{name: np.ndarray}``
    (``BF16`` becomes float32). Raises :class:`SafetensorsError` on any format violation."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"safetensors.load expects bytes, got {type(data).__name__}; use "
                        "load_file for a path")
    return _load_from(memoryview(data).cast("B"))


class _FileBytes:
    """A file seen as a bytes object (``len`` and slices) without reading all of it, so
    :func:`_parse_header` checks a file on disk exactly as it checks bytes in memory."""

    def __init__(self, f):
        self.f = f
        self.size = os.fstat(f.fileno()).st_size

    def __len__(self):
        return self.size

    def __getitem__(self, part):
        start, stop, _ = part.indices(self.size)
        self.f.seek(start)
        return self.f.read(max(stop - start, 0))


def _read_tensor(path, offset, dtype, shape):
    """One tensor of the file, read from disk into a new array."""
    raw = DTYPES[dtype]
    count = math.prod(shape)
    arr = np.fromfile(path, dtype=raw, count=count, offset=offset)
    if arr.size != count:
        raise SafetensorsError(f"{path}: the file ended inside a tensor (changed since "
                               "its header was read?)")
    return _decode(arr.reshape(shape), dtype)


def _read_tensor_into(path, offset, out):
    """One tensor read from disk straight into ``out`` (stored dtype = ``out``'s)."""
    with open(path, "rb") as f:
        f.seek(offset)
        if read_exactly_into(f, out) != out.nbytes:
            raise SafetensorsError(f"{path}: the file ended inside a tensor (changed since "
                                   "its header was read?)")


def _read_bf16_into(path, offset, shape, out):
    """A BF16 tensor widened straight into the float32 array ``out`` (one temporary)."""
    bits = out.view(np.uint32)
    bits[...] = _read_tensor(path, offset, "U16", shape)
    bits <<= 16


def open_file(path):
    """The tensors of the safetensors file ``path`` as ``{name: LazyArray}`` (see
    :mod:`minillm.lazyarray`), checked exactly as :func:`load_file` checks them.

    Only the header is read now; each tensor is read when asked, straight into the
    destination array when the stored dtype is the destination's (``LazyArray.read_into``).
    This is how ``from_pretrained`` loads a model without holding the file in memory.
    """
    with open(path, "rb") as f:
        try:
            entries, _, start = _parse_header(_FileBytes(f))
        except SafetensorsError as e:
            raise SafetensorsError(f"{path}: {e}") from None
    out = {}
    for name, dtype, shape, begin, _ in entries:
        offset = start + begin
        if dtype == "BF16":
            read_into = functools.partial(_read_bf16_into, path, offset, shape)
        else:
            read_into = (functools.partial(_read_tensor_into, path, offset)
                         if DTYPES[dtype].isnative else None)
        out[name] = LazyArray(
            shape, np.float32 if dtype == "BF16" else DTYPES[dtype].newbyteorder("="),
            read=functools.partial(_read_tensor, path, offset, dtype, shape),
            read_into=read_into)
    return out


def load_file(path):
    """The arrays stored in the safetensors file ``path``: ``{name: np.ndarray}``
    (read tensor by tensor: memory holds the arrays, not the file besides)."""
    return {name: lazy.read() for name, lazy in open_file(path).items()}


def read_metadata(path):
    """The ``__metadata__`` dict of a safetensors file (``{}`` without one), after the
    same validation as :func:`load_file`."""
    with open(path, "rb") as f:
        try:
            return dict(_parse_header(_FileBytes(f))[1] or {})
        except SafetensorsError as e:
            raise SafetensorsError(f"{path}: {e}") from None


# -- writing -----------------------------------------------------------------------------------
def _dtype_name(name, arr):
    key = (arr.dtype.kind, arr.dtype.itemsize)
    if key not in _NAME_OF:
        raise SafetensorsError(f"safetensors.save: tensor {name!r} has dtype {arr.dtype}, which "
                               f"safetensors cannot store; convert it to one of float64, "
                               f"float32, float16, (u)int8..64 or bool")
    return _NAME_OF[key]


def save(tensors, metadata=None):
    """Serialize ``{name: np.ndarray}`` (plus optional ``{str: str}`` metadata) to bytes."""
    if not isinstance(tensors, dict):
        raise TypeError(f"safetensors.save expects a dict name -> np.ndarray, got "
                        f"{type(tensors).__name__}")
    if metadata is not None and (not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError("safetensors.save: metadata must be a dict of str -> str (convert "
                        "numbers with str())")
    items = []
    for name, arr in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"safetensors.save: tensor names must be str, got {name!r}")
        if name == "__metadata__":
            raise SafetensorsError("safetensors.save: '__metadata__' is reserved; pass metadata "
                                   "with the metadata= argument")
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"safetensors.save: tensor {name!r} is a {type(arr).__name__}, not "
                            "a np.ndarray (use tensor.numpy() for minillm tensors)")
        dtype = _dtype_name(name, arr)
        arr = np.asarray(arr, dtype=DTYPES[dtype], order="C")     # C order, little-endian
        items.append((name, dtype, arr))
    items.sort(key=lambda it: (-_DTYPE_RANK[it[1]], it[0]))
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, arr in items:
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)                 # the buffer starts 8-byte aligned
    return b"".join([struct.pack("<Q", len(text)), text] + [a.tobytes() for _, _, a in items])


def save_file(tensors, path, metadata=None):
    """Write ``tensors`` to ``path`` atomically (a temporary file in the same folder, fsynced,
    then renamed over ``path``: readers never see half a file)."""
    return atomic_write_bytes(path, save(tensors, metadata))
