"""notebooks/ch05_build_gpt.ipynb catches a wrong implementation.

The notebook has the learner build attention, multi-head causal self-attention, a GPT block and
an AdamW step, each checked by an ``assert`` against minillm's own implementation. Those checks
must be able to fail: here a copy of the notebook gets a deliberately broken learner attention
(by string replacement in one cell's source), is executed in fast mode exactly as
tests/test_notebooks.py executes notebooks, and must stop with an ``AssertionError`` in the cell
that compares against the library, before any later cell runs. (That the unbroken notebook runs
is tests/test_notebooks.py's job: ``-k build_gpt``.)
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))     # the sibling test_notebooks module
from test_notebooks import DEVICE, ROOT, CellExecutionError, nbformat, run_notebook  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "ch05_build_gpt.ipynb"

# name -> (text in the learner's code, its broken replacement, a text of the cell that must fail)
MUTATIONS = {
    "no-sqrt-d-scale": ("scores = (q @ k.swapaxes(-1, -2)) / math.sqrt(d)",
                        "scores = (q @ k.swapaxes(-1, -2))",
                        "F.scaled_dot_product_attention(q, k, v, attn_mask=mask)"),
    "no-causal-mask": ("y = my_attention(q, k, v, mask=my_causal_mask(T))",
                       "y = my_attention(q, k, v, mask=None)",
                       "value_and_grads(ref_attn, [x_np], proj)"),
}


def _code_cell_with(nb, text):
    """Index of the one code cell whose source contains ``text``."""
    hits = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and text in c.source]
    assert len(hits) == 1, f"expected exactly one code cell containing {text!r}, found {hits}"
    return hits[0]


def _error_cells(nb):
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and any(o.get("output_type") == "error" for o in c.get("outputs", []))]


@pytest.mark.skipif(DEVICE != "cpu", reason="notebooks run on the CPU kernel; cpu run only")
@pytest.mark.parametrize("name", list(MUTATIONS))
def test_broken_attention_fails_the_notebook(name, tmp_path):
    old, new, failing_text = MUTATIONS[name]
    nb = nbformat.read(NOTEBOOK, as_version=4)
    edited = _code_cell_with(nb, old)
    nb.cells[edited].source = nb.cells[edited].source.replace(old, new)
    expected = _code_cell_with(nb, failing_text)
    assert expected > edited

    with pytest.raises(CellExecutionError) as err:
        run_notebook(nb, tmp_path)
    assert err.value.ename == "AssertionError", str(err.value)[-2000:]
    assert "Not equal to tolerance" in err.value.evalue, err.value.evalue
    assert _error_cells(nb) == [expected]
    assert all(not c.get("outputs") for c in nb.cells[expected + 1:] if c.cell_type == "code")
