"""Arrays that stay in their file until they are needed: how checkpoints load lean.

Loading a checkpoint the simple way reads the whole file into memory, converts every array,
then copies each into the model's parameters: at the peak the weights are in memory two or
three times. A :class:`LazyArray` holds only what a loader needs to *check* an array (its
``shape`` and ``dtype``) and a function that reads the numbers. A loader can then check every
name, shape and dtype first, and afterwards read the arrays one at a time straight into the
parameters they belong to, so memory grows by the model's size and little more::

    arrays = open_npz("model.npz")       # {name: LazyArray}: only the headers are read
    model.load_state_dict(arrays)        # checks everything, then reads tensor by tensor

``read()`` returns a new NumPy array. ``read_into(out)`` fills an existing host array: from
the file without any copy in between when the bytes on disk already have ``out``'s dtype and
layout, else through one temporary array of this tensor. ``astype`` and ``T`` are lazy as
well: the conversion or transpose happens when the tensor is read. ``np.asarray(lazy)`` reads
it, so code written for NumPy arrays also works.

No minillm imports: any layer may use it.
"""
from __future__ import annotations

import functools
import io
import math
import struct
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["LazyArray", "assign", "read_exactly_into", "open_npz"]

CHUNK_BYTES = 1 << 20            # how much read_exactly_into reads at a time from a non-file


class LazyArray:
    """An array of ``shape`` and ``dtype`` whose values ``read()`` returns when asked.

    ``read_into(out)``, when given, fills a C-contiguous host array of exactly this shape
    and dtype straight from the file; without it (or for another ``out``) the values are
    read into a temporary array and assigned.
    """

    def __init__(self, shape, dtype, read, read_into=None):
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self._read, self._read_into = read, read_into

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def read(self):
        """The values, as a new NumPy array."""
        return self._read()

    def read_into(self, out):
        """Fill the host array ``out`` (same shape) with the values."""
        direct = (self._read_into is not None and isinstance(out, np.ndarray)
                  and out.shape == self.shape and out.dtype == self.dtype
                  and out.flags.c_contiguous)
        if direct:
            self._read_into(out)
        else:
            assign(out, self._read())

    def astype(self, dtype, copy=True):
        """These values converted to ``dtype`` (lazily; ``self`` if it is already)."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        # read_into assigns the stored values into ``out``, which converts them on the way:
        # one temporary array (the stored values), not two
        return LazyArray(self.shape, dtype, read=lambda: self._read().astype(dtype),
                         read_into=lambda out: assign(out, self._read()))

    @property
    def T(self):
        """The transpose (lazily)."""
        return LazyArray(self.shape[::-1], self.dtype, read=lambda: self._read().T)

    def __array__(self, dtype=None, copy=None):
        values = self._read()
        return values if dtype is None else values.astype(dtype, copy=False)

    def __repr__(self):
        return f"LazyArray(shape={self.shape}, dtype={self.dtype})"


def assign(out, values, tile=256):
    """``out[...] = values``; a transposed matrix is copied in ``tile x tile`` blocks.

    Copying ``a.T`` into a row-major array reads ``a`` down its columns: every element comes
    from another cache line, and a large matrix copies several times slower than it could.
    A 256 x 256 block of both arrays fits in the cache, so block by block each line read is
    used in full (the classic "cache-blocked transpose").
    """
    if values.ndim != 2 or values.flags.c_contiguous or not values.flags.f_contiguous:
        out[...] = values
        return
    rows, cols = values.shape
    for i in range(0, rows, tile):
        for j in range(0, cols, tile):
            out[i:i + tile, j:j + tile] = values[i:i + tile, j:j + tile]


def read_exactly_into(stream, out):
    """Read ``out.nbytes`` bytes from the binary ``stream`` into the C-contiguous array
    ``out``; returns the number of bytes read (less only at the end of the stream)."""
    if out.size == 0:
        return 0
    view = memoryview(out).cast("B")
    got = 0
    # a file reads straight into the array; other streams (a zip member, whose readinto
    # would read everything into one bytes object first) in chunks of CHUNK_BYTES
    direct = isinstance(stream, (io.BufferedReader, io.FileIO))
    while got < len(view):
        if direct:
            n = stream.readinto(view[got:])
        else:
            chunk = stream.read(min(CHUNK_BYTES, len(view) - got))
            n = len(chunk)
            view[got:got + n] = chunk
        if not n:
            break
        got += n
    return got


_NPY_HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0,
                       (2, 0): npy_format.read_array_header_2_0}
_LOCAL_HEADER = struct.Struct("<4s22xHH")      # a zip member's local header: 30 bytes


def _stored_npy(f, info):
    """``(shape, dtype, data_offset, header_crc)`` of an uncompressed ``.npy`` zip member,
    or None when it cannot be read in place (compressed, Fortran order, a rare version)."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    f.seek(info.header_offset)
    magic, name_len, extra_len = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    if magic != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"{info.filename}: bad local file header")
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    f.seek(start)
    version = npy_format.read_magic(f)
    if version not in _NPY_HEADER_READERS:
        return None
    shape, fortran, dtype = _NPY_HEADER_READERS[version](f)
    if fortran or dtype.hasobject or not dtype.isnative:
        return None
    data_offset = f.tell()
    if data_offset - start + math.prod(shape) * dtype.itemsize != info.file_size:
        raise zipfile.BadZipFile(f"{info.filename}: the .npy header does not match its size")
    f.seek(start)
    return shape, dtype, data_offset, zlib.crc32(f.read(data_offset - start))


def _read_stored_into(path, offset, header_crc, info, out):
    """Read a member's values into ``out`` and check the zip's CRC-32 of the member."""
    with open(path, "rb") as f:
        f.seek(offset)
        got = read_exactly_into(f, out)
    crc = zlib.crc32(memoryview(out).cast("B"), header_crc) if out.size else header_crc
    if got != out.nbytes or crc != info.CRC:
        raise zipfile.BadZipFile(f"{path}: {info.filename} is truncated or corrupt (CRC-32 "
                                 "mismatch)")


def _read_stored(path, offset, header_crc, info, shape, dtype):
    out = np.empty(shape, dtype)
    _read_stored_into(path, offset, header_crc, info, out)
    return out


def _read_npz_array(path, name):
    with np.load(path, allow_pickle=False) as npz:
        return npz[name]


def open_npz(path):
    """The arrays of the ``.npz`` file ``path`` as ``{name: LazyArray}``.

    Only the small ``.npy`` header of each member (shape, dtype, order) is read now. An
    uncompressed member (what ``np.savez`` writes) is then read straight from its place in the
    file, its CRC-32 checked as ``np.load`` checks it; any other member is read by
    ``np.load(..., allow_pickle=False)`` when asked. Errors in the zip or a header raise here.
    """
    out = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-len(".npy")]
            stored = _stored_npy(f, info)
            if stored is None:
                with np.load(path, allow_pickle=False) as npz:
                    a = npz[name]
                out[name] = LazyArray(a.shape, a.dtype, functools.partial(_read_npz_array,
                                                                          path, name))
                continue
            shape, dtype, offset, header_crc = stored
            args = (path, offset, header_crc, info)
            out[name] = LazyArray(shape, dtype,
                                  read=functools.partial(_read_stored, *args, shape, dtype),
                                  read_into=functools.partial(_read_stored_into, *args))
    return out
