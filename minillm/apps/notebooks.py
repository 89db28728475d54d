"""Run a chapter notebook the way the tests and the companion book do.

The kernel is *this* interpreter (never whatever ``python3`` a Jupyter installation resolves to),
started in a working directory of the caller's choosing, with the caller's environment plus
``MINILLM_FAST=1`` (unless ``fast=False``), this checkout first on ``PYTHONPATH`` and a private
``IPYTHONDIR``. Needs the dev extras (``nbclient``, ``ipykernel``).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNEL_NAME = "minillm-python"
CELL_TIMEOUT_S = 120


def kernel_manager(spec_dir: Path):
    """A Jupyter kernel manager whose only kernel is this interpreter; its connection file
    lies in ``spec_dir`` too (jupyter_client's default leaves a /tmp/tmp*.json per kernel)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    kdir = Path(spec_dir) / KERNEL_NAME
    kdir.mkdir(parents=True, exist_ok=True)
    # --log-level=ERROR: no "running over TCP without encryption" warning per notebook
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                     "--log-level=ERROR"],
            "display_name": "minillm (this interpreter)", "language": "python"}
    (kdir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm,
                         connection_file=str(Path(spec_dir) / "connection.json"))


def run_notebook(nb, workdir, extra_env: dict | None = None, *, fast: bool = True,
                 timeout: float = CELL_TIMEOUT_S):
    """Execute ``nb`` (a NotebookNode, executed in place and returned) in ``workdir``.

    ``timeout`` bounds each cell (seconds). A failing cell raises
    ``nbclient.exceptions.CellExecutionError``.
    """
    import nbclient
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(extra_env or {})
    if fast:
        env["MINILLM_FAST"] = "1"
    else:
        env.pop("MINILLM_FAST", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["IPYTHONDIR"] = str(workdir / ".ipython")
    env["TMPDIR"] = str(workdir / "tmp")     # the notebook's tempfile.mkdtemp folders stay in
    (workdir / "tmp").mkdir(exist_ok=True)   # workdir, not in the system's /tmp, run after run
    env.setdefault("OMP_NUM_THREADS", "1")
    km = kernel_manager(workdir / ".kernels")
    client = nbclient.NotebookClient(nb, km=km, timeout=timeout, kernel_name=KERNEL_NAME,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env)
    return nb
