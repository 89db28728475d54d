"""minillm.safetensors: round trips, byte-for-byte agreement with the reference package,
every validation rule, and a fuzz test (mutated files load or raise SafetensorsError)."""
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from minillm.safetensors import SafetensorsError, load, load_file, read_metadata, save, save_file

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
          np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]
SHAPES = [(), (0,), (3,), (2, 3), (2, 0, 4), (1, 2, 3, 2)]


def _array(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray(rng.standard_normal(shape) * 50).astype(dtype)


def _file(header, buffer=b"", pad=True):
    """Raw safetensors bytes from a header dict (or str) and a buffer."""
    text = (header if isinstance(header, str) else json.dumps(header)).encode("utf-8")
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + buffer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_every_dtype_and_shape(dtype, shape):
    a = _array(dtype, shape)
    out = load(save({"t": a}))["t"]
    assert out.dtype == a.dtype and out.shape == a.shape
    np.testing.assert_array_equal(out, a)
    assert out.flags.writeable and out.flags.c_contiguous


def test_file_round_trip_metadata_and_layout(tmp_path):
    tensors = {"w": _array(np.float32, (3, 4)), "b": _array(np.int64, (5,)),
               "é名": _array(np.float16, (2,)), "flag": np.array([True, False])}
    path = save_file(tensors, tmp_path / "m.safetensors", metadata={"format": "np"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]   # no temp file left
    out = load_file(path)
    assert set(out) == set(tensors)
    for k in tensors:
        np.testing.assert_array_equal(out[k], tensors[k])
    assert read_metadata(path) == {"format": "np"}
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0 and raw[8:8 + n].endswith(b"}" + b" " * (raw[8:8 + n].count(b" ")))


def test_writer_makes_c_contiguous_little_endian():
    base = np.arange(12, dtype=">f4").reshape(3, 4)
    a = base.T                                         # Fortran order, big-endian
    raw = save({"a": a})
    (n,) = struct.unpack("<Q", raw[:8])
    expected = np.ascontiguousarray(a, dtype="<f4").tobytes()
    assert raw[8 + n:] == expected
    np.testing.assert_array_equal(load(raw)["a"], a)


def test_bf16_loads_as_float32():
    values = np.array([1.0, -2.5, 3.140625, 0.0, np.inf], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")           # exact in bfloat16
    raw = _file({"x": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]}}, bits.tobytes())
    out = load(raw)["x"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, values)


def test_save_rejects_bad_input():
    with pytest.raises(TypeError, match="np.ndarray"):
        save({"a": [1, 2]})
    with pytest.raises(TypeError, match="names must be str"):
        save({1: np.zeros(2)})
    with pytest.raises(SafetensorsError, match="complex"):
        save({"c": np.zeros(2, np.complex64)})
    with pytest.raises(SafetensorsError, match="reserved"):
        save({"__metadata__": np.zeros(2)})
    with pytest.raises(TypeError, match="metadata"):
        save({}, metadata={"n": 1})


# -- byte-for-byte against the reference implementation ------------------------------------------
def test_bytes_match_reference_package(tmp_path):
    ref = pytest.importorskip("safetensors.numpy")
    tensors = {f"t{i}_{np.dtype(d).name}": _array(d, SHAPES[i % len(SHAPES)], seed=i)
               for i, d in enumerate(DTYPES)}
    tensors["zz"] = _array(np.float32, (4, 2), seed=99)
    tensors["aa"] = _array(np.float32, (1,), seed=98)
    for meta in (None, {"format": "pt"}):
        assert save(tensors, meta) == ref.save(tensors, metadata=meta)
    # and each reads the other's files
    ref.save_file(tensors, str(tmp_path / "ref.safetensors"))
    ours = load_file(tmp_path / "ref.safetensors")
    theirs = ref.load(save(tensors))
    for k, a in tensors.items():
        np.testing.assert_array_equal(ours[k], a)
        np.testing.assert_array_equal(theirs[k], a)


# -- validation: each malformed file raises SafetensorsError naming the problem -------------------
GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "I8", "shape": [4], "data_offsets": [8, 12]}}
BUF = bytes(range(12))


def _with(name, **changes):
    h = json.loads(json.dumps(GOOD))
    h[name].update(changes)
    return _file(h, BUF)


BAD_FILES = [
    ("short", b"\x01\x00\x00", "too short"),
    ("huge header", struct.pack("<Q", 200_000_000) + b"{}", "exceeds the limit"),
    ("header past end", struct.pack("<Q", 64) + b"{}", "larger than"),
    ("not utf-8", struct.pack("<Q", 7) + b'{"\xff":1}', "UTF-8"),
    ("not json", _file("{nope", b""), "not valid JSON"),
    ("not object", _file("[1, 2]", b""), "JSON object"),
    ("entry not object", _file({"a": 3}), "expected an object"),
    ("missing key", _file({"a": {"dtype": "F32", "shape": [0]}}), "missing keys"),
    ("unknown key", _with("a", extra=1), "unknown keys"),
    ("unknown dtype", _with("a", dtype="F8"), "unknown dtype"),
    ("dtype not str", _with("a", dtype=3), "unknown dtype"),
    ("negative dim", _with("a", shape=[-2]), "shape"),
    ("float dim", _with("a", shape=[2.0]), "shape"),
    ("bool dim", _with("a", shape=[True, 2]), "shape"),
    ("shape not list", _with("a", shape=2), "shape"),
    ("offsets length", _with("a", data_offsets=[0]), "data_offsets"),
    ("negative offset", _with("a", data_offsets=[-8, 0]), "data_offsets"),
    ("end < begin", _with("a", data_offsets=[8, 0]), "end 0 < begin 8"),
    ("size mismatch", _with("a", shape=[3]), "needs 12"),
    ("outside buffer", _file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                             BUF[:4]), "outside"),
    ("overlap", _with("b", data_offsets=[4, 8]), "overlaps"),
    ("gap", _file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, BUF[:8]),
     "gap"),
    ("trailing bytes", _file(GOOD, BUF + b"xx"), "trailing"),
    ("duplicate key", _file('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
                            '"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}',
                            BUF[:8]), "duplicate key 'a'"),
    ("metadata not str", _file({"__metadata__": {"k": 1}}), "__metadata__"),
    ("overflowing shape", _with("a", shape=[0, 2 ** 62, 2 ** 62]), "too large"),
]


@pytest.mark.parametrize("raw, match", [(r, m) for _, r, m in BAD_FILES],
                         ids=[n for n, _, _ in BAD_FILES])
def test_malformed_files_raise(raw, match):
    with pytest.raises(SafetensorsError, match=match):
        load(raw)


def test_malformed_file_error_names_path(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x00")
    with pytest.raises(SafetensorsError, match="bad.safetensors"):
        load_file(p)


def test_good_file_loads():
    out = load(_file(GOOD, BUF))
    np.testing.assert_array_equal(out["b"], np.arange(8, 12, dtype=np.int8))
    np.testing.assert_array_equal(out["a"], np.frombuffer(BUF[:8], "<f4"))


# -- fuzz: mutated valid files either load consistently or raise SafetensorsError ----------------
_VALID = save({"w": _array(np.float32, (2, 3)), "i": _array(np.int16, (4,)),
               "e": np.zeros((0, 2), np.float64), "s": np.array(True)},
              metadata={"k": "v"})
_N = struct.unpack("<Q", _VALID[:8])[0]


def _json_edit(draw):
    header = json.loads(_VALID[8:8 + _N])
    name = draw(st.sampled_from(sorted(header)))
    value = st.one_of(st.integers(-3, 40), st.text(max_size=4), st.none(), st.booleans(),
                      st.lists(st.integers(-2, 40), max_size=3), st.floats(allow_nan=True))
    if name == "__metadata__":
        header[name] = draw(st.one_of(value, st.dictionaries(st.text(max_size=3), value)))
    else:
        key = draw(st.sampled_from(["dtype", "shape", "data_offsets", "other"]))
        if draw(st.booleans()) and key in header[name]:
            del header[name][key]
        else:
            header[name][key] = draw(st.one_of(value, st.sampled_from(
                ["F32", "BF16", "I16", "BOOL", "F64", "U8"])))
    return _file(header, _VALID[8 + _N:], pad=draw(st.booleans()))


@st.composite
def mutated(draw):
    kind = draw(st.sampled_from(["bytes", "truncate", "json", "length"]))
    data = bytearray(_VALID)
    if kind == "bytes":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "truncate":
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    if kind == "length":
        return struct.pack("<Q", draw(st.integers(0, 2 ** 64 - 1))) + bytes(data[8:])
    return _json_edit(draw)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_mutated_files(raw):
    try:
        out = load(raw)
    except SafetensorsError:
        return
    # it loaded: then the file must be well formed -- re-check independently
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    assert set(out) == set(header)
    for name, info in header.items():
        begin, end = info["data_offsets"]
        assert out[name].shape == tuple(info["shape"])
        if info["dtype"] != "BF16":
            assert out[name].nbytes == end - begin
            assert out[name].tobytes() == raw[8 + n + begin:8 + n + end]
