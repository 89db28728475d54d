"""The course exercises and their grader (minillm.exercises, `minillm exercises`).

Both directions, for every chapter: the reference solutions score full marks (with two seeds of
random inputs), the untouched stubs score zero, and each exercise's checks catch a slightly wrong
answer (the solution's result perturbed). Then the grader's own behaviour: files it refuses to
overwrite, a file that does not import, a missing function, an exception with its line, an
endless loop, a Tensor instead of an array, and the CLI's exit statuses.
"""
from __future__ import annotations

import ast
import importlib
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minillm.apps import cli
from minillm import exercises as ex
from minillm.exercises import grading


def _defined(chapter):
    try:
        importlib.import_module(f"minillm.exercises.{chapter}")
    except ModuleNotFoundError:
        return False
    return True


CHAPTERS = list(ex.CHAPTERS)


def _need(chapter):
    if not _defined(chapter):
        pytest.fail(f"minillm/exercises/{chapter}.py is missing: every chapter 2-8 has exercises")


def _functions(source):
    return {n.name: n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}


# ------------------------------------------------------------------------- per chapter
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_three_to_eleven_exercises_with_stub_and_solution(chapter):
    _need(chapter)
    exercises = ex.chapter_exercises(chapter)
    number = int(chapter[2:])
    assert 3 <= len(exercises) <= 11, f"{chapter} has {len(exercises)} exercises, expected 3-11"
    assert [e.id for e in exercises] == [f"{number}.{k}" for k in range(1, len(exercises) + 1)]
    stubs, solutions = _functions(ex.stub_source(chapter)), _functions(ex.solution_source(chapter))
    for e in exercises:
        assert e.name in stubs, f"stubs/{chapter}.py has no function {e.name}"
        assert e.name in solutions, f"solutions/{chapter}.py has no function {e.name}"
        doc = ast.get_docstring(stubs[e.name])
        assert doc and f"Exercise {e.id}" in doc, \
            f"the stub {e.name} needs a docstring that starts with 'Exercise {e.id}: ...'"
        assert len(e.checks) >= 2, f"{e.id} {e.name}: at least two checks"
        stub_args = [a.arg for a in stubs[e.name].args.args]
        solution_args = [a.arg for a in solutions[e.name].args.args]
        assert stub_args == solution_args, f"{e.name}: the stub and the solution differ in " \
                                           f"arguments ({stub_args} vs {solution_args})"
    assert set(stubs) == {e.name for e in exercises}, "every stub function is an exercise"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_solutions_score_full_marks(chapter, tmp_path):
    _need(chapter)
    ex.init_workspace(chapter, tmp_path, solutions=True)
    for seed in (0, 1):
        results = ex.check_workspace(tmp_path, seed=seed)
        failed = [f"{r.exercise.id} {r.exercise.name}: {r.first_failure}" for r in results
                  if r.passed != len(r.exercise.checks)]
        assert not failed, f"seed {seed}: " + "; ".join(failed)
        assert sum(r.score for r in results) == sum(r.exercise.points for r in results)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_untouched_stubs_score_zero(chapter, tmp_path):
    _need(chapter)
    ex.init_workspace(chapter, tmp_path)
    results = ex.check_workspace(tmp_path)
    assert results and all(r.score == 0 for r in results)
    assert all("NotImplementedError" in r.first_failure for r in results)


def perturb(value):
    """A slightly wrong version of a correct result (each check set must notice)."""
    if isinstance(value, np.ndarray):
        out = value.copy()
        flat = out.reshape(-1)
        if flat.size == 0:
            return np.zeros(out.shape[:-1] + (out.shape[-1] + 1,)) if out.ndim else out + 1
        if out.dtype.kind == "b":
            flat[0] = ~flat[0]
        elif out.dtype.kind in "iu":
            flat[0] += 1
        else:                                   # the first finite entry (-inf marks removed)
            finite = np.flatnonzero(np.isfinite(flat))
            i = int(finite[0]) if finite.size else 0
            flat[i] = 0.0 if not finite.size else flat[i] + 1e-3 * (1 + abs(float(flat[i])))
        return out
    if isinstance(value, (bool, np.bool_)):
        return not value
    if isinstance(value, (int, np.integer)):
        return value + 1
    if isinstance(value, (float, np.floating)):
        return value + 1e-3 * (1 + abs(float(value)))
    if isinstance(value, str):
        return value + "#"
    if isinstance(value, tuple):
        return (perturb(value[0]),) + value[1:] if value else (0,)
    if isinstance(value, list):
        return [perturb(value[0])] + value[1:] if value else [0]
    if isinstance(value, dict):
        if not value:
            return {"#": 0}
        k = next(iter(value))
        return {**value, k: perturb(value[k])}
    raise TypeError(f"perturb() does not know {type(value).__name__}: return arrays, numbers, "
                    "strings, or tuples/lists/dicts of them")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_checks_catch_a_slightly_wrong_answer(chapter, tmp_path):
    _need(chapter)
    ex.init_workspace(chapter, tmp_path, solutions=True)
    module = grading.load_student_module(tmp_path / f"{chapter}.py")
    for e in ex.chapter_exercises(chapter):
        right = getattr(module, e.name)

        def wrong(*args, _right=right, **kwargs):
            return perturb(_right(*args, **kwargs))

        r = ex.grade_exercise(chapter, e, wrong)
        assert r.passed < len(e.checks), f"{e.id} {e.name}: a perturbed answer passed every check"


# ------------------------------------------------------------------------- the grader
BROKEN = {
    "syntax": ("def softmax_backward(p, grad_out)\n    return p\n", "does not import: SyntaxError"),
    "missing": ("import numpy as np\n", "not found in the workspace file"),
    "raises": ("def softmax_backward(p, grad_out):\n    x = 1\n    return p[99, 99]\n",
               "raised IndexError at ch04.py line 3"),
    "loops": ("def softmax_backward(p, grad_out):\n    while True:\n        pass\n",
              "took longer than 0.3 s"),
    "tensor": ("import minillm as mm\ndef softmax_backward(p, grad_out):\n"
               "    return mm.tensor(p)\n", "must be a NumPy array"),
    "shape": ("def softmax_backward(p, grad_out):\n    return p[..., :1]\n", "has shape"),
    "wrong": ("def softmax_backward(p, grad_out):\n    return p * grad_out\n", "is wrong: largest"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_grader_reports_what_went_wrong(case, tmp_path):
    source, message = BROKEN[case]
    ex.init_workspace("ch04", tmp_path)
    (tmp_path / "ch04.py").write_text(source, encoding="utf-8")
    (r,) = ex.check_workspace(tmp_path, exercise="4.1", timeout=0.3)
    assert r.score == 0
    assert message in r.first_failure, r.first_failure


def test_partial_credit_counts_checks(tmp_path):
    # right for 2-d input only: the (2, 3, 5) batch check fails, the others pass
    ex.init_workspace("ch04", tmp_path)
    (tmp_path / "ch04.py").write_text(textwrap.dedent("""
        import numpy as np
        def softmax_backward(p, grad_out):
            if p.ndim != 2:
                raise ValueError("2-d only")
            return p * (grad_out - (grad_out * p).sum(1, keepdims=True))
    """), encoding="utf-8")
    (r,) = ex.check_workspace(tmp_path, exercise="softmax_backward")
    assert (r.passed, len(r.exercise.checks)) == (2, 3)
    assert r.score == pytest.approx(2 / 3)
    assert "ValueError" in r.first_failure and "2-d only" in r.first_failure


def test_init_never_overwrites_and_extends_the_manifest(tmp_path):
    ex.init_workspace("ch04", tmp_path)
    (tmp_path / "ch04.py").write_text("# my work\n", encoding="utf-8")
    with pytest.raises(ex.ExerciseError, match="may hold your work"):
        ex.init_workspace("ch04", tmp_path)
    assert (tmp_path / "ch04.py").read_text(encoding="utf-8") == "# my work\n"
    if _defined("ch02"):
        ex.init_workspace("ch02", tmp_path)
        manifest = json.loads((tmp_path / grading.MANIFEST).read_text(encoding="utf-8"))
        assert manifest["chapters"] == ["ch02", "ch04"]


@pytest.mark.parametrize("spec, expected", [
    ("ch04", ["ch04"]), ("4", ["ch04"]), ("CH05,ch02", ["ch02", "ch05"]),
    ("ch04,ch04", ["ch04"]), ("all", list(grading.CHAPTERS)),
])
def test_parse_chapters(spec, expected):
    assert ex.parse_chapters(spec) == expected


@pytest.mark.parametrize("spec", ["ch01", "ch09", "chapter4", "", ","])
def test_parse_chapters_rejects(spec):
    with pytest.raises(ex.ExerciseError, match="ch02|no chapter"):
        ex.parse_chapters(spec)


@pytest.mark.parametrize("content, message", [
    (None, "not an exercise workspace"),
    ("{oops", "not valid JSON"),
    ('{"format": 99, "chapters": ["ch04"]}', "unknown workspace format"),
    ('{"format": 1, "chapters": []}', "non-empty list"),
])
def test_bad_workspaces_are_explained(tmp_path, content, message):
    if content is not None:
        (tmp_path / grading.MANIFEST).write_text(content, encoding="utf-8")
    with pytest.raises(ex.ExerciseError, match=message):
        ex.check_workspace(tmp_path)


def test_check_unknown_exercise_and_missing_file(tmp_path):
    ex.init_workspace("ch04", tmp_path)
    with pytest.raises(ex.ExerciseError, match="no exercise '9.9'"):
        ex.check_workspace(tmp_path, exercise="9.9")
    (tmp_path / "ch04.py").unlink()
    results = ex.check_workspace(tmp_path)
    assert all(r.score == 0 and "ch04.py is missing" in r.first_failure for r in results)


def test_helpers_fail_with_clear_messages():
    with pytest.raises(ex.CheckFailed, match=r"shape \(2,\), expected \(3,\)"):
        ex.assert_close(np.zeros(2), np.zeros(3), "x")
    with pytest.raises(ex.CheckFailed, match="largest error 0.5 at index \\(1,\\)"):
        ex.assert_close(np.array([0.0, 0.5]), np.zeros(2), "x")
    with pytest.raises(ex.CheckFailed, match="nan or inf"):
        ex.assert_close(np.array([np.nan]), np.zeros(1), "x")
    with pytest.raises(ex.CheckFailed, match="in 1 of 3 entries"):
        ex.assert_equal(np.array([1, 2, 4]), np.array([1, 2, 3]), "ids")
    ex.assert_close(np.ones(3) + 1e-12, np.ones(3), "x")
    g = ex.numerical_gradient(lambda x: float((x ** 3).sum()), np.array([1.0, -2.0]))
    np.testing.assert_allclose(g, [3.0, 12.0], rtol=1e-8)


def test_cli_init_check_and_exit_status(tmp_path, capsys):
    stubs, solved = tmp_path / "stubs", tmp_path / "solved"
    assert cli.main(["exercises", "init", "ch04", str(stubs)]) == 0
    assert cli.main(["exercises", "check", str(stubs)]) == 1
    out = capsys.readouterr().out
    assert "4.1" in out and "0/3" in out and "total 0.00 / 2" in out.replace("/ 2.0", "/ 2") \
        or "total 0.00" in out
    assert cli.main(["exercises", "init", "ch04", str(solved), "--solutions"]) == 0
    capsys.readouterr()
    assert cli.main(["exercises", "check", str(solved), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data and all(d["passed"] == d["checks"] for d in data)
    assert cli.main(["exercises", "init", "ch04", str(stubs)]) == 2
    assert "may hold your work" in capsys.readouterr().err
    assert cli.main(["exercises", "check", str(tmp_path / "nowhere")]) == 2
    assert "not an exercise workspace" in capsys.readouterr().err


def test_cli_list(capsys):
    assert cli.main(["exercises", "list", "ch04", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in listing["ch04"]][:2] == ["4.1", "4.2"]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_text_lists_its_exercises(chapter):
    _need(chapter)
    from pathlib import Path
    (path,) = sorted((Path(__file__).resolve().parents[1] / "chapters").glob(f"{chapter}_*.md"))
    text = path.read_text(encoding="utf-8")
    assert f"minillm exercises init {chapter} " in text, f"{path.name}: no init command"
    for e in ex.chapter_exercises(chapter):
        assert f"| {e.id} | `{e.name}` |" in text, f"{path.name} does not list {e.id} {e.name}"


# ------------------------------------------------------------------------- statements and hints
def _has_chinese(text):
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_stubs_state_the_task_in_chinese_and_hints_hold_the_formulas(chapter):
    _need(chapter)
    stubs = _functions(ex.stub_source(chapter))
    for e in ex.chapter_exercises(chapter):
        doc = ast.get_docstring(stubs[e.name])
        assert _has_chinese(doc), f"{e.id}: the stub's statement must be in Chinese"
        assert not re.search(r"\bHint\b", doc), \
            f"{e.id}: hints belong in Exercise.hints, not in the stub"
        assert isinstance(e.hints, tuple) and 2 <= len(e.hints) <= 3, \
            f"{e.id}: 2-3 tiered hints expected, got {len(e.hints)}"
        assert all(isinstance(h, str) and _has_chinese(h) for h in e.hints), e.id


def test_the_adamw_formula_moved_from_the_stub_to_the_hints():
    (adam,) = [e for e in ex.chapter_exercises("ch03") if e.id == "3.1"]
    doc = ast.get_docstring(_functions(ex.stub_source("ch03"))["adam_step"])
    assert "1 - lr * weight_decay" not in doc and "m_hat" not in doc
    assert "1 - lr * weight_decay" in adam.hints[-1] + adam.hints[-2]


def test_cli_hint_shows_the_next_hint_then_all(tmp_path, capsys):
    (e,) = [e for e in ex.chapter_exercises("ch04") if e.id == "4.2"]
    hint = ["exercises", "hint", "4.2", "--workspace", str(tmp_path)]
    assert cli.main(hint) == 0
    out = capsys.readouterr().out
    assert e.hints[0] in out and e.hints[1] not in out and "提示 1/" in out
    assert cli.main(hint) == 0
    out = capsys.readouterr().out
    assert e.hints[1] in out and e.hints[0] not in out and "提示 2/" in out
    counts = json.loads((tmp_path / grading.HINTS_FILE).read_text(encoding="utf-8"))
    assert counts == {"4.2": 2}
    assert cli.main(hint + ["--all"]) == 0
    out = capsys.readouterr().out
    assert all(h in out for h in e.hints)
    for _ in range(len(e.hints) + 1):                  # past the last hint: the last repeats
        cli.main(hint)
    assert e.hints[-1] in capsys.readouterr().out.splitlines()[-2]
    assert cli.main(hint + ["--reset"]) == 0
    capsys.readouterr()
    assert cli.main(["exercises", "hint", "adam_step", "--workspace", str(tmp_path)]) == 0
    assert "3.1" in capsys.readouterr().out             # by function name, a counter of its own
    assert cli.main(hint) == 0
    assert "提示 1/" in capsys.readouterr().out
    assert cli.main(["exercises", "hint", "9.9", "--workspace", str(tmp_path)]) == 2
    assert "no exercise '9.9'" in capsys.readouterr().err


# ------------------------------------------------------------------------- solutions import
SOLUTION_IMPORTS = {
    "from_star": "from minillm.exercises.solutions.ch03 import *\n",
    "from_names": "from minillm.exercises.solutions.ch03 import adam_step, lr_at\n",
    "from_package": "from minillm.exercises.solutions import ch03\nadam_step = ch03.adam_step\n",
    "import_as": "import minillm.exercises.solutions.ch03 as s\nadam_step = s.adam_step\n",
    "from_exercises": "from minillm.exercises import solutions\n",
    "nested": "def adam_step(*a):\n    from minillm.exercises.solutions import ch03\n"
              "    return ch03.adam_step(*a)\n",
    "importlib": "import importlib\n"
                 "_m = importlib.import_module('minillm.exercises.solutions.ch03')\n"
                 "globals().update(vars(_m))\n",
    "attribute": "import minillm.exercises\nimport importlib\n"
                 "importlib.import_module('minillm.exercises' + '.solutions')\n"
                 "adam_step = minillm.exercises.solutions.ch03.adam_step\n",
    "solution_source": "from minillm.exercises import solution_source\n"
                       "exec(solution_source('ch03'))\n",
    "repo_path": "import sys\nsys.path.insert(0, '../chapters/teachers/solutions')\n"
                 "from ch03 import *\n",
    "windows_path": "exec(open(r'..\\chapters\\teachers\\solutions\\ch03.py').read())\n",
    "env": "import os\nexec(open(os.environ['MINILLM_SOLUTIONS'] + '/ch03.py').read())\n",
}


@pytest.mark.parametrize("form", list(SOLUTION_IMPORTS))
def test_importing_the_solutions_scores_zero(form, tmp_path):
    ex.init_workspace("ch03", tmp_path)
    (tmp_path / "ch03.py").write_text(SOLUTION_IMPORTS[form], encoding="utf-8")
    results = ex.check_workspace(tmp_path)
    assert results and all(r.score == 0 for r in results)
    message = results[0].first_failure
    assert "refused" in message and "\n" not in message, message
    assert all(r.first_failure == message for r in results)


def test_copied_solution_code_is_graded_and_no_file_is_run_when_refused(tmp_path):
    ex.init_workspace("ch03", tmp_path, solutions=True)   # copies the code: graded normally
    assert all(r.passed == len(r.exercise.checks) for r in ex.check_workspace(tmp_path))
    marker = tmp_path / "ran"
    (tmp_path / "ch03.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n" + SOLUTION_IMPORTS["from_star"], encoding="utf-8")
    ex.check_workspace(tmp_path)
    assert not marker.exists(), "a refused file must not be executed"
    assert ex.solutions_import("import numpy as np\n# solutions of my own\n") == ""


def test_the_solutions_are_not_in_the_installed_package(monkeypatch, tmp_path):
    import minillm
    package = Path(minillm.__file__).parent
    assert not (package / "exercises" / "solutions").exists()
    assert ex.solutions_dir().as_posix().endswith("chapters/teachers/solutions")
    monkeypatch.setenv("MINILLM_SOLUTIONS", str(tmp_path / "nowhere"))
    with pytest.raises(ex.ExerciseError, match="not installed with minillm.*MINILLM_SOLUTIONS"):
        ex.init_workspace("ch03", tmp_path / "w", solutions=True)
    assert not (tmp_path / "w").exists(), "nothing is written when the solutions are missing"


# ------------------------------------------------------------------------- misconceptions
# one softmax-regression training step; CLIP and DECAY are filled in with a mistake each
_TRAIN_STEP = """
import numpy as np
def train_step(W, b, x, y, m, v, t, lr, weight_decay, max_norm):
    z = x @ W + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(y)
    loss = -np.log(p[np.arange(n), y]).mean()
    p[np.arange(n), y] -= 1
    grads = [x.T @ p / n, p.sum(0) / n]
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))
    CLIP
    params, new_m, new_v = [W, b], [], []
    for i in range(2):
        DECAY
        new_m.append(0.9 * m[i] + 0.1 * grads[i])
        new_v.append(0.999 * v[i] + 0.001 * grads[i] ** 2)
        m_hat, v_hat = new_m[i] / (1 - 0.9 ** t), new_v[i] / (1 - 0.999 ** t)
        params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    return loss, params[0], params[1], tuple(new_m), tuple(new_v)
"""
_JOINT_CLIP = "grads = [g * min(1.0, max_norm / (norm + 1e-6)) for g in grads]"
_DECOUPLED_W = "params[i] = params[i] * (1 - lr * weight_decay * (i == 0))"


def _train_step(clip=_JOINT_CLIP, decay=_DECOUPLED_W):
    return _TRAIN_STEP.replace("CLIP", clip).replace("DECAY", decay)


# one GPT block; LN_ATTN and LN_MLP place the LayerNorms, GELU is the activation
_GPT_BLOCK = """
import numpy as np
def _ln(x, p, name):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p[name + ".weight"] + p[name + ".bias"]
def _attn(x, p, n_head):
    B, T, C = x.shape
    qkv = x @ p["attn.c_attn.weight"] + p["attn.c_attn.bias"]
    q, k, v = (a.reshape(B, T, n_head, -1).transpose(0, 2, 1, 3)
               for a in np.split(qkv, 3, axis=-1))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(C // n_head)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    y = ((w / w.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return y @ p["attn.c_proj.weight"] + p["attn.c_proj.bias"]
def _mlp(x, p):
    h = x @ p["mlp.c_fc.weight"] + p["mlp.c_fc.bias"]
    h = GELU
    return h @ p["mlp.c_proj.weight"] + p["mlp.c_proj.bias"]
def gpt_block(x, params, n_head):
    p = params
    LN_ATTN
    LN_MLP
    return x
"""
_TANH_GELU = "0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))"
_PRE_LN = ("x = x + _attn(_ln(x, p, 'ln_1'), p, n_head)", "x = x + _mlp(_ln(x, p, 'ln_2'), p)")


def _gpt_block(ln=_PRE_LN, gelu=_TANH_GELU):
    return (_GPT_BLOCK.replace("LN_ATTN", ln[0]).replace("LN_MLP", ln[1])
            .replace("GELU", gelu))


# key: the exercise id, optionally followed by a word naming the mistake ("3.7 l2")
MISCONCEPTIONS = {
    "2.3": ("""
        import numpy as np
        def masked_perplexity(log_probs, mask):
            if not mask.any():
                raise ValueError("no real tokens")
            total = np.where(mask, log_probs, 0.0).sum()     # padding counted as log p = 0 ...
            return float(np.exp(-total / log_probs.size))    # ... and in the denominator
    """, "填充位置"),
    "3.1": ("""
        import numpy as np
        def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay):
            grad = grad + weight_decay * param              # L2 in the gradient: not AdamW
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            step = lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
            return param - step, m, v
    """, "L2"),
    "3.2": ("""
        import numpy as np
        def clip_grad_norm(grads, max_norm):
            norm = np.sqrt(sum((g ** 2).sum() for g in grads))
            out = [g * min(1.0, max_norm / (norm + 1e-6)) for g in grads]
            return out, float(np.sqrt(sum((g ** 2).sum() for g in out)))   # after clipping
    """, "裁剪之后的范数"),
    "3.4": ("""
        import numpy as np
        def lstm_cell(x, h, c, W, U, b):
            z = x @ W + h @ U + b
            H = h.shape[1]
            s = lambda a: 1 / (1 + np.exp(-np.clip(a, -500, 500)))
            i, f, o = s(z[:, :H]), s(z[:, H:2 * H]), s(z[:, 2 * H:3 * H])   # i, f, o, g
            g = np.tanh(z[:, 3 * H:])
            c_new = f * c + i * g
            return o * np.tanh(c_new), c_new
    """, "门的顺序错了"),
    "3.5": ("""
        import numpy as np
        def cross_entropy_with_grad(logits, targets, ignore_index=-100):
            N = len(targets)                                 # divides by N, not by the kept M
            z = logits - logits.max(1, keepdims=True)
            p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
            loss, grad = 0.0, p.copy()
            for n in range(N):
                if targets[n] == ignore_index:
                    grad[n] = 0
                else:
                    loss -= np.log(p[n, targets[n]])
                    grad[n, targets[n]] -= 1
            return loss / N, grad / N
    """, "全部行数 N"),
    "3.6": ("""
        import numpy as np
        def matmul_backward(a, b, grad_out):
            da = grad_out @ np.swapaxes(b, -1, -2)          # the broadcast shape: no sum over
            db = np.swapaxes(a, -1, -2) @ grad_out          # the broadcast batch axes
            return da, db
    """, "广播轴求和"),
    "3.7": (_train_step(clip="pass"), "更新之后才裁剪"),            # no clipping at all
    "3.7 each": (_train_step(clip="grads = [g * min(1.0, max_norm / (np.sqrt((g ** 2).sum()) "
                             "+ 1e-6)) for g in grads]"), "per-tensor"),
    "3.7 l2": (_train_step(decay="grads[i] = grads[i] + weight_decay * (i == 0) * params[i]"),
               "weight decay as L2"),
    "3.7 bias": (_train_step(decay="params[i] = params[i] * (1 - lr * weight_decay)"),
                 "偏置 b 也做了权重衰减"),
    "4.2": ("""
        import numpy as np
        def scaled_dot_product_attention(q, k, v, causal=False):
            s = np.einsum("...ld,...sd->...ls", q, k)        # no 1/sqrt(d_k)
            if causal:
                s = s + np.triu(np.full(s.shape[-2:], -np.inf), 1)
            e = np.exp(s - s.max(-1, keepdims=True))
            return np.einsum("...ls,...sd->...ld", e / e.sum(-1, keepdims=True), v)
    """, "sqrt(d_k)"),
    "5.6": ("""
        import numpy as np
        def causal_self_attention(x, w_qkv, b_qkv, w_proj, b_proj, n_head):
            B, T, C = x.shape
            q, k, v = np.split(x @ w_qkv + b_qkv, 3, axis=-1)
            heads = lambda a: a.reshape(B, T, n_head, -1).transpose(0, 2, 1, 3)
            q, k, v = heads(q), heads(k), heads(v)
            s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(C // n_head)      # no causal mask
            w = np.exp(s - s.max(-1, keepdims=True))
            y = (w / w.sum(-1, keepdims=True)) @ v
            return y.transpose(0, 2, 1, 3).reshape(B, T, C) @ w_proj + b_proj
    """, "因果掩码"),
    "5.6 width": ("""
        import numpy as np
        def causal_self_attention(x, w_qkv, b_qkv, w_proj, b_proj, n_head):
            B, T, C = x.shape
            q, k, v = np.split(x @ w_qkv + b_qkv, 3, axis=-1)
            heads = lambda a: a.reshape(B, T, n_head, -1).transpose(0, 2, 1, 3)
            q, k, v = heads(q), heads(k), heads(v)
            s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(C)               # sqrt of all of C
            s[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] = -np.inf
            w = np.exp(s - s.max(-1, keepdims=True))
            y = (w / w.sum(-1, keepdims=True)) @ v
            return y.transpose(0, 2, 1, 3).reshape(B, T, C) @ w_proj + b_proj
    """, "head_dim"),
    "5.7": (_gpt_block(ln=("x = _ln(x + _attn(x, p, n_head), p, 'ln_1')",
                           "x = _ln(x + _mlp(x, p), p, 'ln_2')")), "post-LN"),
    "5.7 gelu": (_gpt_block(gelu="h * 0.5 * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))")
                 .replace("import numpy as np", "import math\nimport numpy as np"), "GELU"),
    "5.8": ("""
        import numpy as np
        def attention_backward(q, k, v, grad_out, causal):
            d = q.shape[-1]
            s = q @ np.swapaxes(k, -1, -2) / np.sqrt(d)
            if causal:
                s = s + np.triu(np.full(s.shape[-2:], -np.inf), 1)
            p = np.exp(s - s.max(-1, keepdims=True))
            p = p / p.sum(-1, keepdims=True)
            ds = p * (grad_out @ np.swapaxes(v, -1, -2)) / np.sqrt(d)   # no row-sum term
            return ds @ k, np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ grad_out
    """, "row-sum"),
    "5.8 scale": ("""
        import numpy as np
        def attention_backward(q, k, v, grad_out, causal):
            s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
            if causal:
                s = s + np.triu(np.full(s.shape[-2:], -np.inf), 1)
            p = np.exp(s - s.max(-1, keepdims=True))
            p = p / p.sum(-1, keepdims=True)
            dp = grad_out @ np.swapaxes(v, -1, -2)
            ds = p * (dp - (p * dp).sum(-1, keepdims=True))             # 1/sqrt(d) forgotten
            return ds @ k, np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ grad_out
    """, "1/sqrt(d)"),
    "8.1": ("""
        import numpy as np
        def lora_forward(x, W, b, A, B, alpha):
            y = x @ W + x @ A @ B                            # no alpha / r
            return y if b is None else y + b
    """, "alpha / r"),
    "8.2": ("""
        import numpy as np
        def lora_grads(x, W, A, B, alpha, grad_out):
            x2, g2 = x.reshape(-1, x.shape[-1]), grad_out.reshape(-1, grad_out.shape[-1])
            return x2.T @ (g2 @ B.T), (x2 @ A).T @ g2        # no alpha / r
    """, "alpha / r"),
    "8.7 eos": ("""
        import numpy as np
        def response_mask(ids, roles, eos_id):
            return ids[:-1], np.where(roles[1:] == 1, ids[1:], -100)   # the eos is masked
    """, "eos"),
    "8.7 shift": ("""
        import numpy as np
        def response_mask(ids, roles, eos_id):
            keep = (roles == 1) | (ids == eos_id)
            return ids[:-1], np.where(keep[:-1], ids[:-1], -100)       # labels not shifted
    """, "shift"),
    "8.8 sign": ("""
        import numpy as np
        def dpo_loss_and_grads(pc, pr, rc, rr, beta):
            m = beta * ((pr - rr) - (pc - rc))                         # rejected minus chosen
            s = 1.0 / (1.0 + np.exp(m))
            return float(np.logaddexp(0.0, -m).mean()), beta * s / len(pc), -beta * s / len(pc)
    """, "符号反了"),
    "8.8 beta": ("""
        import numpy as np
        def dpo_loss_and_grads(pc, pr, rc, rr, beta):
            m = (pc - rc) - (pr - rr)                                  # no beta
            s = 1.0 / (1.0 + np.exp(m))
            return float(np.logaddexp(0.0, -m).mean()), -s / len(pc), s / len(pc)
    """, "beta"),
    "8.9 global": ("""
        import numpy as np
        def group_advantages(rewards):
            return (rewards - rewards.mean()) / (rewards.std() + 1e-6)   # not per group
    """, "global mean/std"),
    "8.9 centre": ("""
        import numpy as np
        def group_advantages(rewards):
            return rewards / (rewards.std(axis=1, keepdims=True) + 1e-6)  # not centred
    """, "centring"),
    "8.10 squared": ("""
        import numpy as np
        def prototypical_loss(support, support_labels, query, query_labels, n_way):
            counts = np.bincount(support_labels, minlength=n_way)
            c = np.stack([support[support_labels == k].mean(0) for k in range(n_way)])
            diff = query[:, None, :] - c[None]
            sq = (diff ** 2).sum(-1)
            dist = np.sqrt(sq)                                  # not squared
            z = -dist - (-dist).max(1, keepdims=True)
            p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
            m = len(query_labels)
            loss = -np.log(p[np.arange(m), query_labels]).mean()
            g = p.copy()
            g[np.arange(m), query_labels] -= 1
            dd = -(g / m) * 0.5 / np.sqrt(sq)
            d_q = 2 * (dd[..., None] * diff).sum(1)
            d_c = -2 * (dd[..., None] * diff).sum(0)
            return float(loss), d_c[support_labels] / counts[support_labels][:, None], d_q
    """, "不是负的欧氏距离"),
    "8.11 order": ("""
        def patch_embed(images, patch_size, weight, bias):
            b, c, h, w = images.shape
            p = patch_size
            if h % p or w % p:
                raise ValueError("not divisible")
            x = images.transpose(0, 2, 3, 1).reshape(b, h // p, p, w // p, p, c)
            x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * c)   # (row, col, channel)
            return x @ weight + bias
    """, "展平顺序"),
    "8.11 columns": ("""
        def patch_embed(images, patch_size, weight, bias):
            b, c, h, w = images.shape
            p = patch_size
            if h % p or w % p:
                raise ValueError("not divisible")
            x = images.reshape(b, c, h // p, p, w // p, p).transpose(0, 4, 2, 1, 3, 5)
            return x.reshape(b, -1, c * p * p) @ weight + bias              # column by column
    """, "行优先"),
}


@pytest.mark.parametrize("key", list(MISCONCEPTIONS))
def test_a_known_mistake_is_named(key, tmp_path):
    source, words = MISCONCEPTIONS[key]
    exercise_id = key.split()[0]
    chapter = f"ch{int(exercise_id.split('.')[0]):02d}"
    ex.init_workspace(chapter, tmp_path)
    (tmp_path / f"{chapter}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    (r,) = ex.check_workspace(tmp_path, exercise=exercise_id)
    assert r.score < r.exercise.points
    assert "常见错误" in r.first_failure and words in r.first_failure, r.first_failure


@pytest.mark.parametrize("chapter, exercise_id, source", [
    ("ch03", "3.7", _train_step()), ("ch05", "5.7", _gpt_block())])
def test_the_templates_score_full_marks_without_a_mistake(chapter, exercise_id, source, tmp_path):
    # so each misconception above differs from a right answer in its one mistake only
    ex.init_workspace(chapter, tmp_path)
    (tmp_path / f"{chapter}.py").write_text(source, encoding="utf-8")
    (r,) = ex.check_workspace(tmp_path, exercise=exercise_id)
    assert r.passed == len(r.exercise.checks), r.first_failure


def test_an_unrelated_mistake_is_not_named(tmp_path):
    ex.init_workspace("ch03", tmp_path)
    (tmp_path / "ch03.py").write_text(textwrap.dedent("""
        import numpy as np
        def clip_grad_norm(grads, max_norm):
            return [g * 0.5 for g in grads], 1.0
    """), encoding="utf-8")
    (r,) = ex.check_workspace(tmp_path, exercise="3.2")
    assert r.score == 0 and "常见错误" not in r.first_failure
