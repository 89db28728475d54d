"""Shared test setup.

MINILLM_TEST_DEVICE selects the device every test runs on: ``cpu`` (default), ``fake``
(the strict stand-in that refuses implicit host conversion, proving device-clean code)
or ``cuda``. Tests create data with NumPy, move it with ``mm.tensor`` and read results
back with ``.numpy()`` / ``.item()`` only, so the same test runs on every device.
"""
import os

import numpy as np
import pytest

import minillm as mm

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU with CuPy (skipped elsewhere)")
    config.addinivalue_line("markers", "torch: compares against PyTorch (skipped without it)")


def _cuda_available():
    try:
        return any(d.startswith("cuda") for d in mm.available_devices())
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU/CuPy here (gpu tests run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"minillm test device: {DEVICE} (set MINILLM_TEST_DEVICE=cpu|fake|cuda)"


@pytest.fixture(autouse=True)
def _fresh_defaults():
    """Every test starts on the test device, float32, seed 0, grad mode on."""
    mm.set_default_device(DEVICE)
    mm.set_default_dtype(np.float32)
    mm.manual_seed(0)
    mm.backend.discard_checks()     # a failed device-side check never leaks into the next test
    yield
    mm.backend.discard_checks()
    mm.set_default_device(DEVICE)
    mm.set_default_dtype(np.float32)


@pytest.fixture
def float64():
    """Run the test with float64 as the default dtype."""
    mm.set_default_dtype(np.float64)
    yield np.float64
    mm.set_default_dtype(np.float32)


@pytest.fixture
def device():
    return mm.device(DEVICE)
