"""The errata chapter (chapters/errata.md) and its notebook (notebooks/errata.ipynb) follow one format.

* the file starts with ``# 勘误（errata）``; entries are ``## E<k>. <title>`` headings (outside fenced
  code blocks), numbered 1..n without gaps, and they are the only ``##`` headings;
* each entry has at least one ``> 原文（<seed stem>）：「<quote>」`` line, a ``**问题**`` part, a
  ``**更正**`` part and the line ``> 验证：notebooks/errata.ipynb（E<k>）`` with its own number;
* every quote is short and appears verbatim (after collapsing whitespace) in the seed it names, when
  ../shared/seeds is present (skipped otherwise);
* the notebook has a markdown cell starting ``## E<k>`` for every entry, and no other ``## E<k>`` cell.

The checker is tested on small synthetic texts so that each rule can fail. Nothing here touches arrays,
so the file runs unchanged on every test device.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ERRATA_PATH = ROOT / "chapters" / "errata.md"
NOTEBOOK_PATH = ROOT / "notebooks" / "errata.ipynb"
SEED_DIR = ROOT.parent / "shared" / "seeds"

TITLE = "# 勘误（errata）"
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
ENTRY = re.compile(r"^E(\d+)\.\s+\S")
QUOTE = re.compile(r"^> 原文（(\d{3})）：「(.+)」\s*$")
VERIFY = re.compile(r"^> 验证：notebooks/errata\.ipynb（E(\d+)）\s*$")
NB_ENTRY = re.compile(r"^## E(\d+)\b")
MAX_QUOTE_CHARS = 120


def collapse(text: str) -> str:
    return " ".join(text.split())


def load_seeds(seed_dir: Path = SEED_DIR) -> dict[str, str] | None:
    """Seed texts by three-digit stem, whitespace collapsed; None when the folder is absent."""
    if not seed_dir.is_dir():
        return None
    return {f.name[:3]: collapse(f.read_text(encoding="utf-8"))
            for f in sorted(seed_dir.glob("[0-9][0-9][0-9]_*.txt"))}


def split_entries(lines: list[str]) -> tuple[list[str], list[tuple[int, str, list[str]]]]:
    """Problems with the headings, and the entries as (number, title line, body lines)."""
    problems, entries, in_fence = [], [], None
    current = None
    for line in lines:
        fence = FENCE.match(line)
        if fence:
            in_fence = fence.group(1) if in_fence is None else (None if fence.group(1) == in_fence
                                                                else in_fence)
        heading = HEADING.match(line) if in_fence is None and not fence else None
        if heading and len(heading.group(1)) <= 2:
            level, text = len(heading.group(1)), heading.group(2)
            m = ENTRY.match(text)
            if level == 1:
                if line != TITLE or entries or current:
                    problems.append(f"only the title {TITLE!r} may be a '#' heading, found {line!r}")
                continue
            if not m:
                problems.append(f"heading {line!r} is not an entry: write '## E<k>. <short title>'")
                continue
            current = (int(m.group(1)), line, [])
            entries.append(current)
            continue
        if current is not None:
            current[2].append(line)
    return problems, entries


def errata_problems(text: str, seeds: dict[str, str] | None = None,
                    notebook_numbers: list[int] | None = None) -> list[str]:
    """Everything in the errata Markdown that breaks the format (empty list: nothing).

    seeds: seed texts by stem (whitespace collapsed), or None to skip the verbatim check.
    notebook_numbers: the k of each ``## E<k>`` markdown cell of the notebook, or None to skip.
    """
    lines = text.splitlines()
    problems = []
    if not lines or lines[0] != TITLE:
        problems.append(f"the first line must be {TITLE!r}, found {(lines[0] if lines else '')!r}")
    heading_problems, entries = split_entries(lines)
    problems += heading_problems
    if not entries:
        return problems + ["no entries: write '## E1. <short title>' headings"]
    numbers = [k for k, _, _ in entries]
    if numbers != list(range(1, len(entries) + 1)):
        problems.append(f"entries must be numbered E1..E{len(entries)} in order, found "
                        + ", ".join(f"E{k}" for k in numbers))
    for k, head, body in entries:
        quotes = [QUOTE.match(line) for line in body]
        quotes = [m for m in quotes if m]
        if not quotes:
            problems.append(f"E{k}: no '> 原文（<seed stem>）：「<verbatim quote>」' line")
        if not any(line.startswith("**问题**") for line in body):
            problems.append(f"E{k}: no '**问题**' part (what is wrong and why)")
        if not any(line.startswith("**更正**") for line in body):
            problems.append(f"E{k}: no '**更正**' part (the right formula or code)")
        verify = [VERIFY.match(line) for line in body]
        verify = [int(m.group(1)) for m in verify if m]
        if verify != [k]:
            problems.append(f"E{k}: needs exactly one line '> 验证：notebooks/errata.ipynb（E{k}）', "
                            f"found the numbers {verify}")
        for m in quotes:
            stem, quote = m.group(1), collapse(m.group(2))
            if len(quote) > MAX_QUOTE_CHARS:
                problems.append(f"E{k}: quote from {stem} has {len(quote)} characters, keep it under "
                                f"{MAX_QUOTE_CHARS} (a formula or one code line)")
            if seeds is None:
                continue
            if stem not in seeds:
                problems.append(f"E{k}: no seed file {stem}_*.txt (known: {sorted(seeds)})")
            elif quote not in seeds[stem]:
                problems.append(f"E{k}: quote {quote[:40]!r} does not appear verbatim in seed {stem}")
    if notebook_numbers is not None:
        missing = sorted(set(numbers) - set(notebook_numbers))
        extra = sorted(set(notebook_numbers) - set(numbers))
        dup = sorted({k for k in notebook_numbers if notebook_numbers.count(k) > 1})
        if missing:
            problems.append("the notebook has no '## E<k>' markdown cell for "
                            + ", ".join(f"E{k}" for k in missing))
        if extra:
            problems.append("the notebook has '## E<k>' cells for entries the chapter lacks: "
                            + ", ".join(f"E{k}" for k in extra))
        if dup:
            problems.append("the notebook has more than one '## E<k>' cell for "
                            + ", ".join(f"E{k}" for k in dup))
    return problems


def notebook_entry_numbers(nb: dict) -> list[int]:
    """The k of every markdown cell whose source starts with '## E<k>'."""
    out = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        m = NB_ENTRY.match(src.lstrip())
        if m:
            out.append(int(m.group(1)))
    return out


# ------------------------------------------------------------------------ the checker on toy texts

SEEDS = {"000": collapse("loss = -4 and dW = context x p"), "002": "generated_ids = outputs[0]"}


def entry(k, quote="dW = context x p", stem="000", problem=True, fix=True, verify=None):
    parts = [f"## E{k}. title {k}", "", f"> 原文（{stem}）：「{quote}」", ""]
    if problem:
        parts += ["**问题**：wrong.", ""]
    if fix:
        parts += ["**更正**：", "", "$$dW = x^T (p - y)$$", ""]
    parts.append(f"> 验证：notebooks/errata.ipynb（E{k if verify is None else verify}）")
    return "\n".join(parts)


def doc(*entries, title=TITLE):
    return "\n\n".join([title, "intro text"] + list(entries)) + "\n"


GOOD = doc(entry(1), entry(2, quote="generated_ids = outputs[0]", stem="002"))

BAD_CASES = [  # (id, text, notebook numbers, expected fragment of a problem)
    ("title", doc(entry(1), title="# Errata"), [1], "the first line must be"),
    ("gap", doc(entry(1), entry(3)), [1, 3], "numbered E1..E2"),
    ("order", doc(entry(2), entry(1)), [1, 2], "numbered E1..E2"),
    ("start-at-0", doc(entry(0)), [0], "numbered E1..E1"),
    ("other-heading", doc(entry(1)) + "\n## Notes\n", [1], "is not an entry"),
    ("second-title", doc(entry(1)) + "\n# 勘误（errata）\n", [1], "only the title"),
    ("no-quote", doc(entry(1).replace("> 原文", "原文")), [1], "no '> 原文"),
    ("no-problem", doc(entry(1, problem=False)), [1], "no '**问题**'"),
    ("no-fix", doc(entry(1, fix=False)), [1], "no '**更正**'"),
    ("verify-number", doc(entry(1, verify=2)), [1], "needs exactly one line"),
    ("verify-missing", doc(entry(1).split("\n> 验证")[0]), [1], "needs exactly one line"),
    ("not-verbatim", doc(entry(1, quote="dW = p x context")), [1], "does not appear verbatim"),
    ("wrong-seed", doc(entry(1, stem="002")), [1], "does not appear verbatim"),
    ("unknown-seed", doc(entry(1, stem="009")), [1], "no seed file 009"),
    ("long-quote", doc(entry(1, quote="x" * 200)), [1], "keep it under"),
    ("nb-missing", GOOD, [1], "no '## E<k>' markdown cell for E2"),
    ("nb-extra", GOOD, [1, 2, 3], "entries the chapter lacks: E3"),
    ("nb-duplicate", GOOD, [1, 2, 2], "more than one '## E<k>' cell for E2"),
    ("empty", TITLE + "\n", [], "no entries"),
]


def test_checker_accepts_a_good_text():
    assert errata_problems(GOOD, SEEDS, [1, 2]) == []


@pytest.mark.parametrize("text,nb_numbers,fragment", [c[1:] for c in BAD_CASES],
                         ids=[c[0] for c in BAD_CASES])
def test_checker_reports_each_rule(text, nb_numbers, fragment):
    problems = errata_problems(text, SEEDS, nb_numbers)
    assert any(fragment in p for p in problems), problems


def test_checker_ignores_headings_inside_code_fences():
    fenced = "```python\n## E7. not a heading\n# nor this\n```\n\n> 验证"
    text = doc(entry(1).replace("> 验证", fenced))
    assert "## E7" in text
    assert errata_problems(text, SEEDS, [1]) == []


def test_checker_collapses_whitespace_in_quotes():
    seeds = {"000": collapse("a  formula\n  split over lines")}
    assert errata_problems(doc(entry(1, quote="a formula split over lines")), seeds, [1]) == []


def test_notebook_entry_numbers_reads_markdown_cells_only():
    nb = {"cells": [{"cell_type": "markdown", "source": "## E1. first"},
                    {"cell_type": "markdown", "source": ["## E2", ". second"]},
                    {"cell_type": "code", "source": "## E3 in a code cell"},
                    {"cell_type": "markdown", "source": "text\n## E4 not at the start"},
                    {"cell_type": "markdown", "source": "## E10 tenth"}]}
    assert notebook_entry_numbers(nb) == [1, 2, 10]


# ------------------------------------------------------------------------------- the real files

def test_errata_chapter_and_notebook_follow_the_format():
    text = ERRATA_PATH.read_text(encoding="utf-8")
    with open(NOTEBOOK_PATH, encoding="utf-8") as f:
        nb = json.load(f)
    problems = errata_problems(text, None, notebook_entry_numbers(nb))
    assert problems == [], "\n".join(problems)


def test_errata_quotes_appear_in_the_seeds():
    seeds = load_seeds()
    if seeds is None:
        pytest.skip(f"{SEED_DIR} is absent: the quotes cannot be checked")
    problems = errata_problems(ERRATA_PATH.read_text(encoding="utf-8"), seeds)
    assert problems == [], "\n".join(problems)


# chapters whose 勘误 notes correct a seed passage (other chapters' notes explain minillm's own choices)
NOTED_CHAPTERS = ["ch01_background.md", "ch02_concepts.md", "ch04_math.md", "ch09_faq.md"]


def test_errata_links_back_to_the_chapter_notes():
    """The chapters with a 勘误 note about a seed passage are linked from the errata chapter."""
    text = ERRATA_PATH.read_text(encoding="utf-8")
    missing = [name for name in NOTED_CHAPTERS
               if (ROOT / "chapters" / name).exists() and f"({name})" not in text]
    assert missing == [], f"chapters with 勘误 notes not linked from errata.md: {missing}"
