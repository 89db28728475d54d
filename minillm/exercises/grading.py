"""The grader: exercises, their checks, workspaces of stubs, and a score table.

An exercise is one function a student writes in a workspace file (``DIR/ch04.py``). Each
exercise has a few *checks*: small functions that call the student's function on random inputs
(drawn from a seeded generator) and compare the result with an independent reference — minillm's
own implementation (autograd for gradients), a closed form in NumPy, or central differences —
raising :class:`CheckFailed` with a message that says what was expected. A check never imports
the reference solution it grades against: the solutions are graded by the same checks, which is
how the tests prove the checks right (solutions score full marks, untouched stubs score zero).

An exercise's score is ``points * passed / len(checks)``; a stub that raises
``NotImplementedError`` fails every check, so it scores zero.

Workspace layout (written by :func:`init_workspace`, never overwriting a file)::

    DIR/minillm_exercises.json   {"format": 1, "chapters": ["ch04", ...], "seed": 0}
    DIR/ch04.py                  the stubs: one function per exercise, each with its task in
                                 the docstring and ``raise NotImplementedError`` as its body
    DIR/.minillm_hints.json      how many hints of each exercise were shown
                                 (``minillm exercises hint ID``; written on demand)

The reference solutions live in the repository (``chapters/teachers/solutions/``), not in the
installed package. A workspace file that reads them (in any form the parser can see) is refused
before it runs: every exercise of it scores zero. When a check fails and the
student's function returns exactly what a known wrong variant returns (an exercise's
``misconceptions``), the failure message names that mistake, in Chinese.

All student functions take and return NumPy arrays (float64 where they are floating point), so
the exercises run the same on every machine; the grader computes its references on the CPU in
float64 whatever the default device is.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import json
import os
import signal
import sys
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

MANIFEST = "minillm_exercises.json"
HINTS_FILE = ".minillm_hints.json"
SOLUTIONS_IN_REPO = "chapters/teachers/solutions"
FORMAT = 1
CHAPTERS = ("ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08")
DEFAULT_TIMEOUT_S = 30.0


class ExerciseError(Exception):
    """A workspace or a request the grader cannot use (the message says how to fix it)."""


class CheckFailed(AssertionError):
    """A check's verdict: the student's function did not behave as the reference does."""


# ------------------------------------------------------------------------------ definitions
@dataclass(frozen=True)
class Check:
    """One test of an exercise: ``run(student_function, rng)`` raises :class:`CheckFailed`."""

    description: str
    run: Callable[[Callable, np.random.Generator], None]


@dataclass(frozen=True)
class Misconception:
    """A known wrong answer: ``wrong`` has the exercise's signature and makes the mistake.

    When a check fails and the student's function returned what ``wrong`` returns on every
    call the check made, the failure message names the mistake (``message``, in Chinese).
    """

    message: str
    wrong: Callable


@dataclass(frozen=True)
class Exercise:
    """One function to write: its id ("4.1"), name in the workspace file, title and checks.

    ``hints``: 2-3 tiered hints in Chinese, from a nudge to nearly the formula
    (``minillm exercises hint ID`` shows the next one); ``misconceptions``: known mistakes the
    grader recognises (see :class:`Misconception`).
    """

    id: str
    name: str
    title: str
    checks: tuple[Check, ...]
    points: float = 1.0
    hints: tuple[str, ...] = ()
    misconceptions: tuple[Misconception, ...] = ()

    def __post_init__(self):
        if not self.checks:
            raise ValueError(f"exercise {self.id} ({self.name}) has no checks")


@dataclass
class CheckResult:
    description: str
    passed: bool
    message: str = ""


@dataclass
class ExerciseResult:
    chapter: str
    exercise: Exercise
    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.checks)

    @property
    def score(self) -> float:
        return self.exercise.points * self.passed / len(self.exercise.checks)

    @property
    def first_failure(self) -> str:
        return next((c.message for c in self.checks if not c.passed), "")

    def as_dict(self) -> dict:
        return {"chapter": self.chapter, "id": self.exercise.id, "name": self.exercise.name,
                "title": self.exercise.title, "points": self.exercise.points,
                "score": self.score, "passed": self.passed, "checks": len(self.exercise.checks),
                "seconds": round(self.seconds, 3),
                "results": [{"check": c.description, "passed": c.passed, "message": c.message}
                            for c in self.checks]}


def chapter_exercises(chapter: str) -> list[Exercise]:
    """The exercises of one chapter ("ch04"), in order."""
    chapter = normalize_chapter(chapter)
    module = importlib.import_module(f"minillm.exercises.{chapter}")
    return list(module.EXERCISES)


def normalize_chapter(chapter: str) -> str:
    """"ch04", "4" or "04" -> "ch04"; anything else is an :class:`ExerciseError`."""
    text = str(chapter).strip().lower()
    if text.startswith("ch"):
        text = text[2:]
    if text.isdigit() and f"ch{int(text):02d}" in CHAPTERS:
        return f"ch{int(text):02d}"
    raise ExerciseError(f"no exercises for chapter {chapter!r}: choose one of "
                        f"{', '.join(CHAPTERS)} (or 'all')")


def parse_chapters(spec: str) -> list[str]:
    """"all", "ch04" or a comma list "ch02,ch05" -> chapter names, in course order."""
    if str(spec).strip().lower() == "all":
        return list(CHAPTERS)
    names = [normalize_chapter(s) for s in str(spec).split(",") if s.strip()]
    if not names:
        raise ExerciseError("no chapter given: write e.g. ch04, ch02,ch05 or all")
    return sorted(set(names), key=CHAPTERS.index)


def _package_file(kind: str, chapter: str) -> Path:
    return Path(__file__).resolve().parent / kind / f"{chapter}.py"


def stub_source(chapter: str) -> str:
    """The text of a chapter's stub file (what a student starts from)."""
    return _package_file("stubs", normalize_chapter(chapter)).read_text(encoding="utf-8")


def solutions_dir() -> Path:
    """Where the reference solutions are: ``$MINILLM_SOLUTIONS``, else the repository's
    ``chapters/teachers/solutions`` beside the package (a clone or an editable install).

    They are not part of the installed package: teachers take them from the repository.
    """
    env = os.environ.get("MINILLM_SOLUTIONS")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / SOLUTIONS_IN_REPO
    if not folder.is_dir():
        raise ExerciseError(f"the reference solutions are not installed with minillm (looked in "
                            f"{folder}): teachers find them in the repository at "
                            f"{SOLUTIONS_IN_REPO}/; set MINILLM_SOLUTIONS to that folder")
    return folder


def solution_source(chapter: str) -> str:
    """The text of a chapter's reference solutions (for teachers; graded by the same checks)."""
    path = solutions_dir() / f"{normalize_chapter(chapter)}.py"
    if not path.is_file():
        raise ExerciseError(f"{path} is missing: the solutions folder must hold one file per "
                            f"chapter ({', '.join(CHAPTERS)})")
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ workspaces
def read_manifest(directory) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ExerciseError(f"{directory} is not an exercise workspace ({MANIFEST} not found): "
                            "create one with `minillm exercises init ch04 DIR`")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except json.JSONDecodeError as e:
        raise ExerciseError(f"{path} is not valid JSON ({e}); recreate the workspace with "
                            "`minillm exercises init` in a new directory") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExerciseError(f"{path}: unknown workspace format {manifest.get('format')!r} "
                            f"(this minillm writes format {FORMAT})")
    chapters = manifest.get("chapters")
    if not isinstance(chapters, list) or not chapters:
        raise ExerciseError(f"{path}: 'chapters' must be a non-empty list such as [\"ch04\"]")
    manifest["chapters"] = [normalize_chapter(c) for c in chapters]
    return manifest


def init_workspace(chapters, directory, *, solutions: bool = False) -> list[Path]:
    """Write the stub files of ``chapters`` (a spec or a list) into ``directory``.

    Never overwrites: a chapter file that exists (it may hold a student's work) is an error.
    ``solutions=True`` writes the reference solutions instead of the stubs (teachers, tests).
    Adding chapters to an existing workspace extends its manifest. Returns the files written.
    """
    names = parse_chapters(chapters) if isinstance(chapters, str) else \
        sorted({normalize_chapter(c) for c in chapters}, key=CHAPTERS.index)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ExerciseError(f"{directory} exists and is not a directory")
    manifest_path = directory / MANIFEST
    manifest = read_manifest(directory) if manifest_path.is_file() else \
        {"format": FORMAT, "chapters": [], "seed": 0}
    clashes = [directory / f"{c}.py" for c in names if (directory / f"{c}.py").exists()]
    if clashes:
        raise ExerciseError(f"{', '.join(map(str, clashes))} already exist(s) and may hold your "
                            "work: nothing was written. Choose another directory, or move the "
                            "file away first")
    texts = {c: solution_source(c) if solutions else stub_source(c) for c in names}
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for c, text in texts.items():
        path = directory / f"{c}.py"
        _write_atomic(path, text)
        written.append(path)
    manifest["chapters"] = sorted(set(manifest["chapters"]) | set(names), key=CHAPTERS.index)
    _write_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return written


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def load_student_module(path: Path):
    """Import a workspace file under a private name (fresh each time: edits are picked up)."""
    name = f"_minillm_exercise_{path.stem}_{zlib.crc32(str(path.resolve()).encode()):08x}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.pop(name, None)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ grading
class _Timeout(BaseException):
    """Raised inside a check that ran past its time (a BaseException, so `except Exception`
    in student code does not swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds):
    usable = (seconds and hasattr(signal, "SIGALRM")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _describe_exception(e: BaseException, student_file: Path | None) -> str:
    if isinstance(e, NotImplementedError):
        return "not implemented yet (the stub still raises NotImplementedError)"
    where = ""
    if student_file is not None:
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if Path(f.filename).resolve() == student_file.resolve()]
        if frames:
            where = f" at {student_file.name} line {frames[-1].lineno}"
    return f"raised {type(e).__name__}{where}: {e}"


def check_seed(base_seed: int, exercise_id: str, index: int) -> int:
    """The seed of one check: fixed by the workspace seed, the exercise and the check."""
    return zlib.crc32(f"{base_seed}:{exercise_id}:{index}".encode())


def grade_exercise(chapter, exercise: Exercise, function, *, seed: int = 0,
                   timeout: float | None = DEFAULT_TIMEOUT_S,
                   student_file: Path | None = None) -> ExerciseResult:
    """Run every check of ``exercise`` on ``function`` (None: missing from the file)."""
    import minillm as mm  # noqa: PLC0415 - the grader's references run on the CPU in float64

    result = ExerciseResult(chapter, exercise)
    start = time.perf_counter()
    for i, check in enumerate(exercise.checks):
        if function is None:
            result.checks.append(CheckResult(check.description, False,
                                             f"function {exercise.name}() not found in the "
                                             "workspace file (keep the stub's name)"))
            continue
        rng = np.random.default_rng(check_seed(seed, exercise.id, i))
        try:
            with mm.backend.default_device_as("cpu"), \
                    mm.backend.default_dtype_as(np.float64), _time_limit(timeout):
                check.run(function, rng)
        except CheckFailed as e:
            message = str(e)
            mistake = _diagnose(exercise, check, function, seed, i, timeout)
            if mistake:
                message = f"常见错误 (misconception): {mistake} | {message}"
            result.checks.append(CheckResult(check.description, False, message))
        except _Timeout:
            result.checks.append(CheckResult(check.description, False,
                                             f"took longer than {timeout:g} s (an endless "
                                             "loop, or a Python loop over a big array?)"))
        except Exception as e:                      # noqa: BLE001 - student code may raise anything
            result.checks.append(CheckResult(check.description, False,
                                             _describe_exception(e, student_file)))
        else:
            result.checks.append(CheckResult(check.description, True))
    result.seconds = time.perf_counter() - start
    return result


def _same(a, b) -> bool:
    """Whether two results are equal (arrays to 1e-9 relative), recursing into containers."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        x, y = np.asarray(a), np.asarray(b)
        return x.shape == y.shape and bool(np.allclose(x, y, rtol=1e-9, atol=1e-12,
                                                       equal_nan=True))
    except (TypeError, ValueError):
        return a == b


def _diagnose(exercise: Exercise, check: Check, function, seed: int, index: int,
              timeout) -> str:
    """The message of the misconception whose wrong answer the student's function reproduces
    on every call of the failed check (rerun with the same inputs), or ""."""
    import copy  # noqa: PLC0415
    import minillm as mm  # noqa: PLC0415

    for m in exercise.misconceptions:
        calls = []

        def both(*args, _m=m, **kwargs):
            want = _m.wrong(*copy.deepcopy(args), **copy.deepcopy(kwargs))
            got = function(*args, **kwargs)
            calls.append(_same(got, want))
            return got

        rng = np.random.default_rng(check_seed(seed, exercise.id, index))
        try:
            with mm.backend.default_device_as("cpu"), \
                    mm.backend.default_dtype_as(np.float64), _time_limit(timeout):
                check.run(both, rng)
        except (Exception, _Timeout):              # noqa: BLE001 - the check fails again
            pass
        if calls and all(calls):
            return m.message
    return ""


# ------------------------------------------------------------------------------ solutions import
def solutions_import(source: str) -> str:
    """Why a workspace file is refused: it reads the reference solutions ("" if it does not).

    Parses the file (never runs it): the function ``solution_source`` / ``solutions_dir``, the
    old module path ``minillm.exercises.solutions`` in any import, and any text naming
    ``teachers/solutions`` or ``exercises.solutions`` (a path put on sys.path, an importlib
    string, MINILLM_SOLUTIONS).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = None
    for node in ast.walk(tree) if tree is not None else ():
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Name) and node.id in _SOLUTION_FUNCTIONS or \
                isinstance(node, ast.Attribute) and node.attr in _SOLUTION_FUNCTIONS:
            return f"line {node.lineno} uses {getattr(node, 'id', None) or node.attr}"
        if any(n.startswith("minillm.exercises.solutions") for n in names):
            return f"line {node.lineno} imports minillm.exercises.solutions"
    for lineno, line in enumerate(source.splitlines(), 1):
        flat = line.replace("\\", "/")
        if any(text in flat for text in _SOLUTION_TEXTS):
            return f"line {lineno} names the reference solutions"
    return ""


_SOLUTION_FUNCTIONS = ("solution_source", "solutions_dir")
_SOLUTION_TEXTS = ("exercises.solutions", "exercises/solutions", "teachers/solutions",
                   "teachers.solutions", "MINILLM_SOLUTIONS")


def check_workspace(directory, *, exercise: str | None = None, seed: int | None = None,
                    timeout: float | None = DEFAULT_TIMEOUT_S) -> list[ExerciseResult]:
    """Grade every exercise of a workspace (or the one whose id/name is ``exercise``)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    seed = manifest.get("seed", 0) if seed is None else seed
    results, matched = [], False
    for chapter in manifest["chapters"]:
        exercises = chapter_exercises(chapter)
        if exercise is not None:
            exercises = [e for e in exercises if exercise in (e.id, e.name)]
            if not exercises:
                continue
        matched = True
        path = directory / f"{chapter}.py"
        module, problem = None, None
        if not path.is_file():
            problem = (f"{path.name} is missing: recreate it with `minillm exercises init "
                       f"{chapter} {directory}`")
        elif why := solutions_import(path.read_text(encoding="utf-8", errors="replace")):
            problem = (f"{path.name} 被拒绝评分 (refused): {why} — 导入参考答案不算你的作业，"
                       "请自己实现这些函数 (write the functions yourself)")
        else:
            try:
                module = load_student_module(path)
            except Exception as e:                  # noqa: BLE001 - SyntaxError, ImportError, ...
                problem = f"{path.name} does not import: {type(e).__name__}: {e}"
        for ex in exercises:
            if problem is not None:
                r = ExerciseResult(chapter, ex, [CheckResult(c.description, False, problem)
                                                 for c in ex.checks])
            else:
                fn = getattr(module, ex.name, None)
                r = grade_exercise(chapter, ex, fn if callable(fn) else None, seed=seed,
                                   timeout=timeout, student_file=path)
            results.append(r)
    if exercise is not None and not matched:
        raise ExerciseError(f"no exercise {exercise!r} in this workspace's chapters "
                            f"({', '.join(manifest['chapters'])}); use an id such as 4.1 or a "
                            "function name from the workspace file")
    return results


def format_report(results: list[ExerciseResult], *, verbose: bool = False) -> str:
    """A score table, one row per exercise, and the total."""
    rows = [("exercise", "function", "checks", "score", "first problem")]
    for r in results:
        msg = r.first_failure
        if len(msg) > 90 and not verbose:
            msg = msg[:87] + "..."
        rows.append((r.exercise.id, r.exercise.name, f"{r.passed}/{len(r.exercise.checks)}",
                     f"{r.score:.2f}/{r.exercise.points:g}", msg))
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4]
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 13)
    if verbose:
        for r in results:
            for c in r.checks:
                if not c.passed:
                    lines.append(f"{r.exercise.id} {r.exercise.name}: {c.description}: "
                                 f"{c.message}")
    total = sum(r.score for r in results)
    points = sum(r.exercise.points for r in results)
    lines.append(f"total {total:.2f} / {points:g}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ check helpers
def as_array(value, what: str, shape=None, dtype_kind: str | None = None) -> np.ndarray:
    """The student's result as a NumPy array with the expected shape (else CheckFailed)."""
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        raise CheckFailed(f"{what} must be a NumPy array, got a {type(value).__name__} "
                          "(return .numpy() of it, or compute with NumPy)")
    arr = np.asarray(value)
    if arr.dtype == object:
        raise CheckFailed(f"{what} must be a numeric array, got {type(value).__name__}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise CheckFailed(f"{what} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if dtype_kind is not None and arr.dtype.kind not in dtype_kind:
        raise CheckFailed(f"{what} has dtype {arr.dtype}, expected kind {dtype_kind!r} "
                          "(f: float, i/u: integer, b: bool)")
    return arr


def assert_close(actual, expected, what: str, *, rtol: float = 1e-7, atol: float = 1e-9) -> None:
    """CheckFailed unless ``actual`` matches ``expected`` (shape and values)."""
    expected = np.asarray(expected)
    arr = as_array(actual, what, shape=expected.shape)
    if not np.all(np.isfinite(arr)) and np.all(np.isfinite(expected)):
        raise CheckFailed(f"{what} contains nan or inf")
    if not np.allclose(arr, expected, rtol=rtol, atol=atol):
        err = np.abs(arr.astype(np.float64) - expected.astype(np.float64))
        k = np.unravel_index(int(np.argmax(err)), err.shape) if err.ndim else ()
        raise CheckFailed(f"{what} is wrong: largest error {float(err.max()):.3g} at index "
                          f"{tuple(int(i) for i in k)} (got {float(arr[k]):.6g}, expected "
                          f"{float(expected[k]):.6g})")


def assert_equal(actual, expected, what: str) -> None:
    """CheckFailed unless ``actual == expected`` (arrays compared element-wise)."""
    if isinstance(expected, np.ndarray):
        arr = as_array(actual, what, shape=expected.shape)
        if not np.array_equal(arr, expected):
            bad = int(np.sum(arr != expected))
            raise CheckFailed(f"{what} differs from the expected value in {bad} of "
                              f"{expected.size} entries")
    elif actual != expected:
        raise CheckFailed(f"{what} is {actual!r}, expected {expected!r}")


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray,
                       eps: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar function of a float64 array (for gradient checks)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = float(f(x))
        flat[i] = old - eps
        down = float(f(x))
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


# ------------------------------------------------------------------------------ hints
def find_exercise(key: str) -> tuple[str, Exercise]:
    """(chapter, exercise) of an id ("4.2") or a function name, over every chapter."""
    for chapter in CHAPTERS:
        for e in chapter_exercises(chapter):
            if str(key).strip() in (e.id, e.name):
                return chapter, e
    raise ExerciseError(f"no exercise {key!r}: use an id such as 4.2 or a function name "
                        "(`minillm exercises list` shows them)")


def _read_hint_counts(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            counts = json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}
    return counts if isinstance(counts, dict) else {}


def take_hints(directory, key: str | None, *, all_hints: bool = False,
               reset: bool = False) -> list[tuple[int, str]]:
    """The hints to show for exercise ``key`` as (number from 1, text) pairs.

    Normally the next hint only: the count of hints already shown is kept per exercise in
    ``DIR/.minillm_hints.json`` (once all are shown, the last one repeats). ``all_hints``: every
    hint, the count untouched. ``reset``: forget the count (of ``key``, or of every exercise
    when ``key`` is None) and return nothing.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ExerciseError(f"{directory} is not a directory (give the workspace with "
                            "--workspace DIR)")
    path = directory / HINTS_FILE
    counts = _read_hint_counts(path)
    exercise = find_exercise(key)[1] if key is not None else None
    if reset:
        if exercise is None:
            counts = {}
        else:
            counts.pop(exercise.id, None)
        _write_atomic(path, json.dumps(counts, indent=2) + "\n")
        return []
    if exercise is None:
        raise ExerciseError("which exercise? e.g. `minillm exercises hint 4.2`")
    if not exercise.hints:
        raise ExerciseError(f"exercise {exercise.id} has no hints")
    hints = list(enumerate(exercise.hints, 1))
    if all_hints:
        return hints
    shown = counts.get(exercise.id, 0)
    shown = shown if isinstance(shown, int) and shown >= 0 else 0
    counts[exercise.id] = min(shown + 1, len(hints))
    _write_atomic(path, json.dumps(counts, indent=2) + "\n")
    return [hints[counts[exercise.id] - 1]]


def with_hints(exercises, hints: dict, misconceptions: dict | None = None) -> list[Exercise]:
    """``exercises`` with their ``hints`` (id -> 2-3 strings) and ``misconceptions`` set."""
    import dataclasses  # noqa: PLC0415
    misconceptions = misconceptions or {}
    return [dataclasses.replace(e, hints=tuple(hints.get(e.id, e.hints)),
                                misconceptions=tuple(misconceptions.get(e.id, e.misconceptions)))
            for e in exercises]
