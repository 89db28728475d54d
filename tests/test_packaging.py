"""Packaging, README and CLI: what a newcomer touches first must work.

- the README opens with `make demo` / `make test`, and its Quick tour code runs;
- setup.cfg / pyproject.toml declare the metadata, dependencies, extras and the console script;
- every third-party module the tests import is declared as a dependency;
- `python -m minillm info` and `python -m minillm demo --mlp` run, on the test device (the GPT demo,
  `minillm demo`, is tested in test_demo.py).
"""
import ast
import configparser
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
from minillm.apps import cli

ROOT = Path(__file__).resolve().parent.parent
DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


def _read(name):
    return (ROOT / name).read_text(encoding="utf-8")


def _run(*args, timeout=180):
    """Run ``python -m minillm ARGS`` from the repository root; return the CompletedProcess."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "minillm", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout)


# -- README -----------------------------------------------------------------------------
def _code_blocks(markdown, lang):
    return re.findall(rf"^```{lang}\n(.*?)^```", markdown, flags=re.S | re.M)


def test_readme_opens_with_the_two_commands():
    text = _read("README.md")
    first_block = re.search(r"^```\w*\n(.*?)^```", text, flags=re.S | re.M)
    assert first_block, "README has no code block"
    before = text[:first_block.start()]
    assert before.strip().count("\n") <= 2, "the two commands must open the README"
    cmds = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert "make demo" in cmds and "make test" in cmds, cmds
    assert "## 中文简介" in text


def _quick_tour():
    text = _read("README.md")
    m = re.search(r"^## Quick tour\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert m, "README has no '## Quick tour' section"
    blocks = _code_blocks(m.group(1), "python")
    assert blocks, "the Quick tour has no ```python block"
    return blocks[0]


def test_readme_quick_tour_runs(tmp_path, monkeypatch, capsys):
    code = _quick_tour()
    monkeypatch.chdir(tmp_path)            # the example writes mlp.npz into the current folder
    ns = {"__name__": "__readme__"}
    exec(compile(code, "README.md#quick-tour", "exec"), ns)
    assert (tmp_path / "mlp.npz").is_file()
    # The example trains for real: it must learn the task it claims to learn.
    assert ns["acc"] > 0.9, f"Quick tour model reached only {ns['acc']:.3f} accuracy"
    assert "accuracy" in capsys.readouterr().out
    assert str(ns["x"].device) == str(mm.device(DEVICE))   # it ran on the test device


# -- metadata ---------------------------------------------------------------------------
def _setup_cfg():
    cfg = configparser.ConfigParser()
    with open(ROOT / "setup.cfg", encoding="utf-8") as f:
        cfg.read_file(f)
    return cfg


def _lines(value):
    return [s.strip() for s in value.strip().splitlines() if s.strip() and not s.strip().startswith("#")]


def _req_name(req):
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_setup_cfg_metadata():
    cfg = _setup_cfg()
    meta = cfg["metadata"]
    assert meta["name"] == "minillm"
    assert meta["version"].replace(" ", "") == "attr:minillm.__version__"
    assert mm.__version__ == "0.1.0"
    assert meta["long_description"].strip() == "file: README.md"
    assert meta["license"] == "MIT"
    opts = cfg["options"]
    assert opts["python_requires"].replace(" ", "") == ">=3.10"
    assert opts["packages"].strip() == "find:"
    assert "tests" in _lines(cfg["options.packages.find"]["exclude"])
    assert _lines(cfg["options.entry_points"]["console_scripts"]) == ["minillm = minillm.apps.cli:main"]
    pytest_cfg = cfg["tool:pytest"]
    assert pytest_cfg["testpaths"].strip() == "tests"
    assert "-ra" in pytest_cfg["addopts"].split()
    markers = [m.split(":")[0] for m in _lines(pytest_cfg["markers"])]
    assert {"gpu", "torch"} <= set(markers)


def test_setup_cfg_dependencies_and_extras():
    cfg = _setup_cfg()
    install = _lines(cfg["options"]["install_requires"])
    assert "numpy>=1.26" in [r.replace(" ", "") for r in install]
    assert {"numpy", "tqdm", "matplotlib", "snownlp"} <= {_req_name(r) for r in install}
    extras = {k: {_req_name(r) for r in _lines(v)} for k, v in cfg["options.extras_require"].items()}
    assert "cupy-cuda12x" in extras["gpu"]
    assert {"pytest", "hypothesis", "nbclient", "nbformat", "ipykernel"} <= extras["dev"]
    assert "torch" in extras["torch"]
    assert "scikit-learn" in extras["vision"]


def test_make_install_brings_the_extras_the_tests_need():
    """`make install` (and so `make test` and .ci/run) installs dev and vision: the digits
    tests need scikit-learn, and skip only where someone installed without it."""
    line = re.search(r'pip install -e "\.\[([^\]]+)\]"', _read("Makefile")).group(1)
    assert {"dev", "vision"} <= set(line.split(","))


def test_pyproject_has_only_build_system():
    text = _read("pyproject.toml")
    tables = re.findall(r"^\[([^\]]+)\]", text, flags=re.M)
    assert tables == ["build-system"]
    assert re.search(r'setuptools>=64', text) and "wheel" in text
    assert 'build-backend = "setuptools.build_meta"' in text


# Import name -> distribution name, where they differ.
_IMPORT_TO_DIST = {"yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn",
                   "cupy": "cupy-cuda12x", "cupyx": "cupy-cuda12x", "jupyter_client": "nbclient"}


def _third_party_imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_every_module_the_tests_import_is_declared():
    """A fresh `pip install -e .[dev]` must be enough to import every test file."""
    cfg = _setup_cfg()
    declared = {_req_name(r) for r in _lines(cfg["options"]["install_requires"])}
    for v in cfg["options.extras_require"].values():
        declared |= {_req_name(r) for r in _lines(v)}
    local = {p.stem for p in (ROOT / "tests").rglob("*.py")} | {"minillm", "conftest", "tests"}
    missing = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for mod in _third_party_imports(path):
            if mod in sys.stdlib_module_names or mod in local or mod == "__future__":
                continue
            dist = _IMPORT_TO_DIST.get(mod, mod).lower().replace("_", "-")
            if dist not in declared:
                missing.setdefault(dist, []).append(path.name)
    assert not missing, (f"tests import packages that setup.cfg does not declare: {missing}; "
                         "add them to install_requires or an extra (dev, torch, gpu)")


def test_console_script_entry_point():
    try:
        dist = importlib.metadata.distribution("minillm")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("minillm is not pip-installed here (`pip install -e .` registers the command)")
    eps = [ep for ep in dist.entry_points if ep.group == "console_scripts" and ep.name == "minillm"]
    assert eps and eps[0].value == "minillm.apps.cli:main"
    assert eps[0].load() is cli.main


# -- Makefile and CI --------------------------------------------------------------------
def test_ci_runs_the_readme_test_command():
    run = ROOT / ".ci" / "run"
    assert os.access(run, os.X_OK), ".ci/run must be executable"
    text = run.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text
    assert re.search(r"^make test$", text, flags=re.M)
    assert "shared/datasets" in text


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_test_runs_both_devices():
    env = {k: v for k, v in os.environ.items() if k != "TEST_JOBS"}   # the default, not
    out = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, env=env,
                         text=True, encoding="utf-8", timeout=60)    # a caller's TEST_JOBS=1
    assert out.returncode == 0, out.stderr
    assert "MINILLM_TEST_DEVICE=cpu" in out.stdout and "MINILLM_TEST_DEVICE=fake" in out.stdout
    assert "-m pytest" in out.stdout
    assert re.search(r"-j2 --output-sync=target test-cpu test-fake$", out.stdout, flags=re.M)


# -- CLI --------------------------------------------------------------------------------
def test_cli_info():
    out = _run("info")
    assert out.returncode == 0, out.stderr
    assert f"minillm {mm.__version__}" in out.stdout
    devices = re.search(r"^devices: (.*)$", out.stdout, flags=re.M).group(1).split(", ")
    assert "cpu" in devices and "fake" in devices
    assert re.search(r"^default dtype: float32$", out.stdout, flags=re.M)
    assert re.search(r"^cupy: ", out.stdout, flags=re.M)


def test_cli_info_without_cupy():
    """`minillm info` must not crash where CuPy cannot be imported (simulated here)."""
    code = ("import sys; sys.modules['cupy'] = None\n"
            "from minillm.apps.cli import main\nraise SystemExit(main(['info']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         encoding="utf-8", timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^devices: cpu, fake$", out.stdout, flags=re.M)
    assert re.search(r"^cupy: not installed", out.stdout, flags=re.M)


def test_cli_without_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_cli_demo_mlp_subprocess():
    out = _run("demo", "--mlp", "--steps", "30", "--device", DEVICE)
    assert out.returncode == 0, out.stderr
    m = re.search(r"^test accuracy: (\d\.\d+)", out.stdout, flags=re.M)
    assert m, out.stdout
    assert 0.0 <= float(m.group(1)) <= 1.0


def test_demo_learns_the_task():
    """The default MLP demo (300 Adam steps) separates the three spirals well above chance (1/3)."""
    m = cli.run_demo(device=DEVICE, progress=False)
    assert m["steps"] == 300 and m["device"] == str(mm.device(DEVICE))
    assert m["train_accuracy"] > 0.9, m
    assert m["test_accuracy"] > 0.9, m
    assert np.isfinite(m["loss"])


def test_demo_is_deterministic():
    a = cli.run_demo(steps=20, device=DEVICE, seed=3, progress=False)
    b = cli.run_demo(steps=20, device=DEVICE, seed=3, progress=False)
    assert a == b


@pytest.mark.parametrize("argv", [["demo", "--device", "nonsense"], ["demo", "--device", "cuda:99"],
                                  ["demo", "--mlp", "--device", "nonsense"]])
def test_cli_demo_bad_device_is_a_clear_error(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "minillm: error:" in err and "cpu" in err    # names the devices that do exist


def test_cli_demo_rejects_zero_steps(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--mlp", "--steps", "0"])
    assert e.value.code == 2


def test_spirals_are_seeded():
    x1, y1 = cli.make_spirals(seed=5)
    x2, y2 = cli.make_spirals(seed=5)
    assert x1.shape == (600, 2) and x1.dtype == np.float32 and y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert np.bincount(y1).tolist() == [200, 200, 200]


def test_readme_tiny_gpt_runs(tmp_path, monkeypatch, capsys):
    """The README's language-model example trains, saves, reloads and generates, as it says."""
    data = os.environ.get("MINILLM_DATA")
    if not data or not (Path(data) / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip("tinyshakespeare not found in $MINILLM_DATA (make test / CI set it)")
    text = _read("README.md")
    m = re.search(r"^## A tiny GPT on Shakespeare\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert m, "README has no '## A tiny GPT on Shakespeare' section"
    code = _code_blocks(m.group(1), "python")[0]
    monkeypatch.setenv("MINILLM_OFFLINE", "1")           # tests never download
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__readme__"}
    exec(compile(code, "README.md#a-tiny-gpt", "exec"), ns)
    assert ns["loss"].item() < 2.8, "the README promises the loss falls to about 2.5"
    assert (tmp_path / "tiny-gpt" / "config.json").is_file()
    printed = capsys.readouterr().out
    assert "loss after 200 steps" in printed and "ROMEO:" in printed
    assert ns["out"].shape == (1, 6 + 60)


def _readme_commands():
    """Every ``minillm ...`` command line in the bash blocks of README and BENCHMARKS.md
    (continuations joined, comments dropped)."""
    import re
    import shlex
    text = _read("README.md") + _read("BENCHMARKS.md")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line.startswith("minillm "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_every_readme_command_parses():
    """A flag renamed in the CLI but not in README fails here (the commands are parsed, not
    run)."""
    from minillm.apps import cli
    commands = _readme_commands()
    assert len(commands) > 20
    parser = cli.build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"README command does not parse: minillm {' '.join(argv)}") \
                from e
