"""The build-it notebooks' checks can fail.

A build-it notebook has the learner write a piece of minillm (an autograd engine, a backward
rule, ...) and checks it against the library and against central differences with ``assert``s.
Those checks are only worth something if a wrong implementation stops the notebook: each test
here copies a notebook, swaps one of the learner's implementations for a deliberately wrong one
(a string replacement in the cell source), runs the copy in fast mode like tests/test_notebooks.py
does, and expects a ``CellExecutionError`` that names the failed check.

Tests of ``notebooks/ch03_build_autograd.ipynb`` are the functions ``test_build_autograd_*``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the dev extras: pip install -e .[dev]")
pytest.importorskip("nbclient", reason="nbclient is in the dev extras: pip install -e .[dev]")
pytest.importorskip("ipykernel", reason="ipykernel is in the dev extras: pip install -e .[dev]")

from nbclient.exceptions import CellExecutionError  # noqa: E402

from test_notebooks import DEVICE, run_notebook  # noqa: E402  (tests/ is on sys.path under pytest)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"

cpu_only = pytest.mark.skipif(DEVICE != "cpu", reason="notebooks run on the CPU kernel whatever "
                              "MINILLM_TEST_DEVICE says; they are executed in the cpu run only")


def sabotaged(name: str, old: str, new: str):
    """``notebooks/<name>`` with ``old`` (found exactly once, in a code cell) replaced by ``new``."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
    assert len(hits) == 1 and hits[0].source.count(old) == 1, (
        f"{name}: expected {old!r} exactly once in one code cell (did the notebook change? "
        "update this test's replacement)")
    hits[0].source = hits[0].source.replace(old, new)
    return nb


def assert_fails_at(nb, workdir: Path, check: str):
    """Run ``nb`` in fast mode; it must stop with an AssertionError whose message names ``check``."""
    with pytest.raises(CellExecutionError) as info:
        run_notebook(nb, workdir)
    text = str(info.value)
    assert "AssertionError" in text, text[-2000:]
    assert check in text, text[-2000:]


# --------------------------------------------------------------- notebooks/ch03_build_autograd.ipynb

AUTOGRAD_NB = "ch03_build_autograd.ipynb"

AUTOGRAD_SABOTAGE = {
    # forget the coupling through the normaliser: dx = y * g
    "softmax": ("return y * (g - (g * y).sum(axis=-1, keepdims=True))",
                "return y * g",
                "softmax backward vs minillm.functional.softmax_backward"),
    # drop the term that comes from dividing by the standard deviation
    "layer_norm": ("- xhat * (dxhat * xhat).mean(axis=1, keepdims=True)",
                   "- 0.0",
                   "layer norm backward dx vs minillm.functional.layer_norm_backward"),
}


@cpu_only
@pytest.mark.parametrize("piece", sorted(AUTOGRAD_SABOTAGE))
def test_build_autograd_wrong_backward_fails_the_notebook(piece, tmp_path):
    old, new, check = AUTOGRAD_SABOTAGE[piece]
    nb = sabotaged(AUTOGRAD_NB, old, new)
    assert_fails_at(nb, tmp_path, check)
    # the cells before the sabotaged one ran (the failure is that check, not an earlier error)
    first_failed = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                        and any(o.get("output_type") == "error" for o in c.get("outputs", [])))
    assert new in nb.cells[first_failed].source


def test_build_autograd_sabotage_targets_are_the_learners_code():
    """Each replaced string is the learner's implementation, present exactly once (cheap)."""
    for piece, (old, new, check) in AUTOGRAD_SABOTAGE.items():
        nb = sabotaged(AUTOGRAD_NB, old, new)
        cell = next(c for c in nb.cells if c.cell_type == "code" and new in c.source)
        assert f"def my_{piece}_backward" in cell.source
        assert f'err_msg="{check}"' in cell.source
