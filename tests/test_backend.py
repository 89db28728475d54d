"""Backend: devices, the strict stand-in array, RNG, dtype, scatter-add, row reductions, erfc."""
import math
import subprocess
import sys

import numpy as np
import pytest

import minillm as mm
from minillm import backend
from minillm.backend import StrictArray, strict_numpy


@pytest.mark.parametrize("conversion", [
    lambda a: np.asarray(a), lambda a: float(a.sum()), lambda a: int(a[0, 0]),
    lambda a: bool(a[0, 0] > 0), lambda a: str(a), lambda a: print(a), lambda a: a.tolist(),
    lambda a: list(a), lambda a: a.item(), lambda a: f"{a:.3f}", lambda a: range(10)[a[0, 0]],
], ids=["asarray", "float", "int", "bool", "str", "print", "tolist", "iter", "item", "format",
        "index"])
def test_strict_array_refuses_implicit_conversion(conversion):
    a = strict_numpy.asarray(np.ones((2, 2)))
    with pytest.raises(TypeError):
        conversion(a)


def test_strict_array_stays_on_device_and_converts_explicitly():
    a = strict_numpy.asarray(np.arange(6.0).reshape(2, 3))
    for b in (a + 1, np.exp(a), a @ a.T, a.sum(axis=0), a.max(), a[0], strict_numpy.where(a > 2, a, 0),
              np.concatenate([a, a]), a.reshape(3, 2), -a):
        assert type(b) is StrictArray
    assert "values hidden" in repr(a)
    before = backend.TRANSFERS["to_host"]
    np.testing.assert_array_equal(a.get(), np.arange(6.0).reshape(2, 3))
    assert backend.TRANSFERS["to_host"] == before + 1
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        a + np.ones(3)


def test_device_values_and_parsing():
    assert mm.device("cpu") == "cpu" and str(mm.device("fake")) == "fake"
    assert mm.device(mm.device("cpu")) is mm.device("cpu")
    assert {"cpu", "fake"} <= set(mm.available_devices())
    with pytest.raises(backend.DeviceError, match="unknown device type 'gpu'"):
        mm.device("gpu")
    with pytest.raises(backend.DeviceError, match="only CUDA devices take an index"):
        mm.device("cpu:1")
    t = mm.tensor([1.0], device="fake")
    assert t.device == "fake" and t.xp is strict_numpy


@pytest.mark.skipif(any(d.startswith("cuda") for d in mm.available_devices()),
                    reason="this machine has a GPU")
def test_missing_cuda_is_a_clear_error_listing_devices():
    with pytest.raises(backend.DeviceError) as e:
        mm.tensor([1.0], device="cuda")
    msg = str(e.value)
    assert "Available devices: ['cpu', 'fake']" in msg and "cupy-cuda12x" in msg


def test_import_does_not_import_cupy():
    code = "import sys, minillm; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_seeded_generators_are_reproducible_and_cpu_matches_fake():
    mm.manual_seed(123)
    a = mm.randn(3, 4, device="cpu").numpy()
    b = mm.randn(3, 4, device="fake").numpy()
    mm.manual_seed(123)
    np.testing.assert_array_equal(mm.randn(3, 4, device="cpu").numpy(), a)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(mm.randn(3, 4, device="cpu").numpy(), a)
    with pytest.raises(TypeError):
        mm.manual_seed(1.5)


def test_generator_state_round_trip():
    g = backend.generator("cpu")
    state = g.get_state()
    x = g.random((5,))
    g.set_state(state)
    np.testing.assert_array_equal(g.random((5,)), x)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_uniform_draws_stay_below_one_in_every_float_dtype(device, dtype):
    """float16 is drawn as float32: rounded to nearest, draws in [1 - 2^-12, 1) became 1.0
    (about 240 of these 10^6); they are rounded down to multiples of 2^-11 instead."""
    mm.manual_seed(3)
    u = mm.rand(1_000_000, dtype=dtype, device=device).numpy()
    assert u.dtype == dtype and u.min() >= 0 and u.max() < 1
    assert abs(float(u.mean(dtype=np.float64)) - 0.5) < 2e-3
    if dtype == np.float16:
        assert np.array_equal(u, np.floor(u.astype(np.float64) * 2048) / 2048)
        assert len(np.unique(u)) == 2048


def test_default_dtype_switch():
    assert mm.randn(2).dtype == np.float32 and mm.tensor([1.0]).dtype == np.float32
    mm.set_default_dtype(np.float64)
    assert mm.randn(2).dtype == np.float64 and mm.zeros(2).dtype == np.float64
    assert mm.tensor([1]).dtype == np.int64 and mm.tensor(np.ones(2, np.float32)).dtype == np.float32
    with pytest.raises(TypeError, match="floating"):
        mm.set_default_dtype(np.int32)


@pytest.mark.parametrize("dev", ["cpu", "fake"])
def test_scatter_add_helpers_match_a_loop(dev):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 7, 50)
    vals = rng.standard_normal((50, 3))
    expect = np.zeros((7, 3))
    for r, v in zip(rows, vals):
        expect[r] += v
    for fn in (backend.scatter_add, backend.index_add_rows):
        target = backend.to_device(np.zeros((7, 3)), dev)
        fn(target, backend.to_device(rows, dev), backend.to_device(vals, dev))
        np.testing.assert_allclose(backend.to_host(target), expect, rtol=1e-12)


def _rows(kind, dtype):
    """Row tables for the last-axis reductions: (rows, columns) data with a given twist."""
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((6, 64)) * 5).astype(dtype)
    if kind == "nan":
        a[1, 7] = np.nan
        a[4, 0] = np.nan
    elif kind == "inf":
        a[0] = -np.inf                        # a fully masked row
        a[2, :40] = -np.inf                   # a causal-style row
        a[3, 5] = np.inf
    elif kind == "ties":
        a[:] = np.round(a)                    # repeated maxima
    elif kind == "strided":
        a = np.asfortranarray(np.concatenate([a, a], axis=1))[:, ::3]
    elif kind == "batched":
        a = a.reshape(2, 3, 4, 16)
    elif kind == "short":
        a = a[:, :1]
    elif kind == "no rows":
        a = a[:0]
    return a


@pytest.mark.parametrize("dev", ["cpu", "fake"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("kind", ["plain", "nan", "inf", "ties", "strided", "batched", "short",
                                  "no rows"])
def test_row_max_and_row_sum_equal_numpy_reductions(dev, dtype, kind):
    a = _rows(kind, dtype)
    got_max = backend.row_max(backend.to_device(a, dev))
    got_sum = backend.row_sum(backend.to_device(a, dev))
    want_max, want_sum = a.max(axis=-1, keepdims=True), a.sum(axis=-1, keepdims=True)
    for got, want in ((got_max, want_max), (got_sum, want_sum)):
        got = backend.to_host(got)
        assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(backend.to_host(got_max), want_max)   # a max is exact
    rtol = {np.float16: 2e-3, np.float32: 1e-5, np.float64: 1e-13}[dtype]
    got_sum = backend.to_host(got_sum).astype(np.float64)
    scale = np.abs(a.astype(np.float64)).sum(axis=-1, keepdims=True)    # per row
    with np.errstate(invalid="ignore"):
        ok = ((got_sum == want_sum) | (np.isnan(got_sum) & np.isnan(want_sum))
              | (np.abs(got_sum - want_sum) <= rtol * scale))
    assert ok.all(), (got_sum[~ok], want_sum[~ok])


@pytest.mark.parametrize("dev", ["cpu", "fake"])
def test_row_max_of_an_empty_row_is_numpys_error(dev):
    with pytest.raises(ValueError):
        backend.row_max(backend.to_device(np.ones((3, 0), np.float32), dev))


def test_erfc_matches_math_erfc():
    x = np.concatenate([np.linspace(-6, 26, 4001), [0.0, 1e-12, -1e-12]])
    got = backend.erfc(x)
    ref = np.array([math.erfc(v) for v in x])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
    x32 = x.astype(np.float32)
    got32 = backend.erfc(x32)
    assert got32.dtype == np.float32
    ref32 = np.array([math.erfc(float(v)) for v in x32])
    tiny = ref32 < 1e-30                      # below float32's normal range
    np.testing.assert_allclose(got32[~tiny], ref32[~tiny], rtol=1e-5, atol=0)


@pytest.mark.gpu
def test_cuda_generator_state_round_trip_and_seeding():
    g = backend.generator("cuda")
    mm.manual_seed(5)
    a = backend.to_host(g.random((6,)))
    state = g.get_state()
    b = backend.to_host(g.normal((6,)))
    g.set_state(state)
    np.testing.assert_array_equal(backend.to_host(g.normal((6,))), b)
    mm.manual_seed(5)
    np.testing.assert_array_equal(backend.to_host(g.random((6,))), a)
    assert not np.array_equal(backend.to_host(g.random((6,))), a)   # the stream moves on
