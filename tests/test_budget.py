"""The line budget of the library (a learner reads it): no function over 60 lines, no core module
over 600, and the core's total size recorded.

Code over budget that predates the budget is listed in ``tests/budget.json`` with its size. A
listed size must equal the real one: code may shrink (then the number is lowered in the same
commit) but never grow, and an entry leaves the list once the code fits. So the list only
ratchets down. The core's total line count is recorded too; changing the core means changing
that number in the same commit, so a reviewer sees every line the core gains.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minillm"
BUDGET_FILE = Path(__file__).with_name("budget.json")
MAX_FUNCTION_LINES = 60
MAX_CORE_MODULE_LINES = 600
CORE = ("backend", "autograd", "functional", "nn", "optim", "models")


def function_sizes(source, module):
    """``{"module::Qualified.name": lines}`` of every function in ``source``, nested ones and
    methods included (a name defined twice keeps its longest body)."""
    sizes = {}

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    key = f"{module}::{name}"
                    sizes[key] = max(sizes.get(key, 0), child.end_lineno - child.lineno + 1)
                walk(child, name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(source), "")
    return sizes


def budget_problems(sizes, recorded, limit, what):
    """One line per breach: a size over ``limit`` not recorded, a recorded size that differs
    from the real one, or a recorded entry that is gone or now fits."""
    problems = []
    for name, n in sorted(sizes.items()):
        if n > limit and name not in recorded:
            problems.append(f"{what} {name} has {n} lines, over the budget of {limit}: split it")
    for name, was in sorted(recorded.items()):
        n = sizes.get(name)
        if n is None:
            problems.append(f"{what} {name} is gone: remove it from {BUDGET_FILE.name}")
        elif n <= limit:
            problems.append(f"{what} {name} now fits ({n} lines): remove it from "
                            f"{BUDGET_FILE.name}")
        elif n > was:
            problems.append(f"{what} {name} grew from {was} to {n} lines: split it instead")
        elif n < was:
            problems.append(f"{what} {name} shrank from {was} to {n} lines: record {n} in "
                            f"{BUDGET_FILE.name}")
    return problems


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _name(path):
    return path.relative_to(ROOT).as_posix()


def _is_core(path):
    part = path.relative_to(PACKAGE).parts[0]
    return part.removesuffix(".py") in CORE


def _lines(path):
    return len(path.read_text(encoding="utf-8").splitlines())


BUDGET = json.loads(BUDGET_FILE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("sizes, recorded, want", [
    ({"m::f": 60}, {}, []),                                          # at the limit: fine
    ({"m::f": 61}, {}, ["m::f has 61 lines, over the budget of 60: split it"]),
    ({"m::f": 80}, {"m::f": 80}, []),                                # recorded, unchanged
    ({"m::f": 81}, {"m::f": 80}, ["m::f grew from 80 to 81 lines"]),
    ({"m::f": 70}, {"m::f": 80}, ["m::f shrank from 80 to 70 lines: record 70"]),
    ({"m::f": 50}, {"m::f": 80}, ["m::f now fits (50 lines): remove it"]),
    ({}, {"m::f": 80}, ["m::f is gone: remove it"]),
])
def test_budget_problems_table(sizes, recorded, want):
    got = budget_problems(sizes, recorded, 60, "function")
    assert len(got) == len(want)
    for line, fragment in zip(got, want):
        assert fragment in line


def test_function_sizes_qualify_methods_and_nested_functions():
    source = ("def f():\n    def g():\n        return 1\n    return g\n\n"
              "class A:\n    def m(self):\n        x = 1\n        return x\n")
    assert function_sizes(source, "m") == {"m::f": 4, "m::f.g": 2, "m::A.m": 3}


def test_no_function_over_budget():
    sizes = {}
    for path in _modules():
        sizes.update(function_sizes(path.read_text(encoding="utf-8"), _name(path)))
    problems = budget_problems(sizes, BUDGET["functions"], MAX_FUNCTION_LINES, "function")
    assert not problems, "\n".join(problems)


def test_no_core_module_over_budget():
    sizes = {_name(p): _lines(p) for p in _modules() if _is_core(p)}
    problems = budget_problems(sizes, BUDGET["core_modules"], MAX_CORE_MODULE_LINES, "module")
    assert not problems, "\n".join(problems)


def test_core_total_is_recorded():
    total = sum(_lines(p) for p in _modules() if _is_core(p))
    assert total == BUDGET["core_total_lines"], (
        f"the core ({', '.join(CORE)}) has {total} lines, {BUDGET_FILE.name} records "
        f"{BUDGET['core_total_lines']}: set core_total_lines to {total} in the same commit "
        "(growth is a reviewed decision, never a side effect)")
