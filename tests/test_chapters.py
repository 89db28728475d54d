"""The chapters follow the tutorial's outline (chapters/outline.json, parsed from seed 004).

For every chapter of the outline (all nine are written; a missing file fails with its name):

* its first line is the chapter heading ``# N. 标题``;
* its headings (lines starting with ``#`` outside fenced code blocks) contain every outline heading,
  in order, promoted by one level and with the exact text: ``# 1. 背景介绍``, ``## 1.1 ...``,
  ``### 1.1.1 ...``; extra headings may sit between them;
* every outline section ends with a ``> 代码：`` line (the minillm modules and the notebook for that
  section): each leaf heading (a ``###`` subsection, or a ``##`` section without subsections) is
  followed by one before the next outline heading; a ``##`` section with subsections is covered by
  its subsections' lines;
* every notebook it names (``notebooks/*.ipynb``) exists, and every ``minillm.x.y`` name it quotes
  resolves to a module or attribute.

outline.json itself is checked for internal consistency and, when ../shared/seeds is present,
against a fresh parse of 004's headings. The checker is tested on small synthetic chapters so each
rule can fail.
"""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_DIR = ROOT / "chapters"
OUTLINE_PATH = CHAPTER_DIR / "outline.json"
SEED_DIR = ROOT.parent / "shared" / "seeds"
SLUGS = ["background", "concepts", "algorithms", "math", "practice", "applications", "tools",
         "future", "faq"]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
CODE_LINE = "> 代码："
NOTEBOOK_REF = re.compile(r"notebooks/[A-Za-z0-9_.-]+\.ipynb")
MINILLM_NAME = re.compile(r"\bminillm(?:\.[A-Za-z_][A-Za-z0-9_]*)+", re.ASCII)
# numbered headings of the seed: "## 1. 背景介绍", "### 1.1 ...", "#### 1.1.1 ..."
SEED_HEADING = re.compile(r"^(#{2,4})\s+(\d+(?:\.\d+)*)\.?\s+(.+?)\s*$")


def load_outline():
    with open(OUTLINE_PATH, encoding="utf-8") as f:
        return json.load(f)


OUTLINE = load_outline()


# ----------------------------------------------------------------------------------------- helpers

def outline_headings(chapter) -> list[tuple[int, str]]:
    """The chapter's outline as (level, text) headings, promoted by one level from the seed."""
    out = [(1, f"{chapter['number']}. {chapter['title']}")]
    for sec in chapter["sections"]:
        out.append((2, f"{sec['number']} {sec['title']}"))
        out += [(3, f"{sub['number']} {sub['title']}") for sub in sec["subsections"]]
    return out


def parse_headings(lines) -> list[tuple[int, int, str]]:
    """(line index, level, text) of the Markdown headings outside fenced code blocks."""
    found, in_fence = [], None
    for i, line in enumerate(lines):
        fence = FENCE.match(line)
        if fence:
            if in_fence is None:
                in_fence = fence.group(1)
            elif fence.group(1) == in_fence:
                in_fence = None
            continue
        if in_fence is None:
            m = HEADING.match(line)
            if m:
                found.append((i, len(m.group(1)), m.group(2)))
    return found


def _resolves(name: str) -> bool:
    """True if a dotted minillm name is a module, or an attribute reached from one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def chapter_problems(text: str, chapter, root: Path = ROOT) -> list[str]:
    """Everything in a chapter's Markdown that breaks the conventions (empty list: nothing)."""
    problems = []
    lines = text.splitlines()
    expected = outline_headings(chapter)
    first = f"# {expected[0][1]}"
    if not lines or lines[0] != first:
        problems.append(f"first line must be the chapter heading {first!r}, found "
                        f"{(lines[0] if lines else '')!r}")
    headings = parse_headings(lines)
    top = [t for _, lvl, t in headings if lvl == 1]
    if len(top) > 1:
        problems.append("only the chapter heading may be a level-1 '#' heading; found "
                        + ", ".join(repr(t) for t in top))

    # outline headings, in order, as a subsequence of the file's headings
    positions = []          # line index of each outline heading found
    j = 0
    for level, title in expected:
        while j < len(headings) and (headings[j][1], headings[j][2]) != (level, title):
            j += 1
        if j == len(headings):
            want = "#" * level + " " + title
            same_text = [(i, lvl) for i, lvl, t in headings if t == title]
            number = title.split(" ", 1)[0]
            same_number = [t for _, lvl, t in headings if t.split(" ", 1)[0] == number]
            if same_text and any(lvl != level for _, lvl in same_text):
                why = f"found at level {same_text[0][1]} instead of {level}"
            elif same_text:
                why = "found, but out of order"
            elif same_number:
                why = f"changed to {same_number[0]!r}; keep the outline's exact text"
            else:
                why = "missing"
            problems.append(f"outline heading {want!r}: {why}")
            return problems
        positions.append(headings[j][0])
        j += 1

    # each outline section is closed by a '> 代码：' line: a leaf (a ### subsection, or a ## section
    # without subsections) has one before the next outline heading; a ## section with subsections
    # is covered by its subsections' lines (its introduction needs none of its own)
    bounds = positions[1:] + [len(lines)]
    levels = [lvl for lvl, _ in expected] + [1]
    for k, ((level, title), start, end) in enumerate(zip(expected, positions, bounds)):
        if level == 1 or levels[k + 1] > level:
            continue
        if not any(line.startswith(CODE_LINE) for line in lines[start + 1:end]):
            problems.append(f"section {'#' * level} {title!r} has no '{CODE_LINE}' line before the "
                            "next outline heading (name the minillm module(s) and the notebook)")

    problems += text_problems(lines)
    for ref in sorted(set(NOTEBOOK_REF.findall(text))):
        if not (root / ref).is_file():
            problems.append(f"names {ref}, which does not exist")
    for name in sorted(set(MINILLM_NAME.findall(text))):
        if not _resolves(name):
            problems.append(f"names {name}, which is neither a minillm module nor an attribute of one")
    return problems


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def text_problems(lines) -> list[str]:
    """Damage that a formula takes when written through a non-raw Python string: a control
    character (``"\\beta"`` written as ``"\beta"`` is a backspace and ``eta``), or an inline
    formula cut in two by a newline (``"\\rho"`` read back as a line break), which leaves a
    line with an odd number of ``$`` outside code."""
    problems, fenced = [], False
    for i, line in enumerate(lines, 1):
        if CONTROL.search(line):
            problems.append(f"line {i} holds a control character "
                            f"{CONTROL.search(line).group()!r}: a backslash lost in a formula?")
        fenced = fenced != line.lstrip().startswith("```")
        plain = re.sub(r"`[^`]*`", "", line.replace("\\$", "")).replace("$$", "")
        if not fenced and not line.lstrip().startswith("```") and plain.count("$") % 2:
            problems.append(f"line {i} has an odd number of '$': an inline formula cut in two?")
    return problems


def parse_seed_outline(text: str) -> list[dict]:
    """004's numbered headings as outline.json's structure (files named from SLUGS)."""
    chapters = []
    for line in text.splitlines():
        m = SEED_HEADING.match(line)
        if not m:
            continue
        level, number, title = len(m.group(1)), m.group(2), m.group(3).strip()
        if level == 2:
            n = int(number)
            chapters.append({"number": n, "file": f"ch{n:02d}_{SLUGS[n - 1]}.md", "title": title,
                             "sections": []})
        elif level == 3:
            chapters[-1]["sections"].append({"number": number, "title": title, "subsections": []})
        else:
            chapters[-1]["sections"][-1]["subsections"].append({"number": number, "title": title})
    return chapters


# ------------------------------------------------------------------------------- outline.json

def test_outline_is_consistent():
    assert [c["number"] for c in OUTLINE] == list(range(1, 10))
    for c in OUTLINE:
        n = c["number"]
        assert c["file"] == f"ch{n:02d}_{SLUGS[n - 1]}.md"
        assert c["title"] and c["title"] == c["title"].strip()
        assert c["sections"], f"chapter {n} has no sections"
        for k, sec in enumerate(c["sections"], 1):
            assert sec["number"] == f"{n}.{k}" and sec["title"] == sec["title"].strip()
            for j, sub in enumerate(sec["subsections"], 1):
                assert sub["number"] == f"{n}.{k}.{j}" and sub["title"] == sub["title"].strip()


def test_outline_matches_seed_004():
    seeds = sorted(SEED_DIR.glob("004_*.txt")) if SEED_DIR.is_dir() else []
    if not seeds:
        pytest.skip(f"seed 004 not found under {SEED_DIR}")
    parsed = parse_seed_outline(seeds[0].read_text(encoding="utf-8"))
    assert parsed == OUTLINE


def test_no_stray_chapter_files():
    names = {c["file"] for c in OUTLINE}
    stray = [p.name for p in CHAPTER_DIR.glob("ch[0-9][0-9]_*.md") if p.name not in names]
    assert not stray, f"chapter files not in outline.json (rename them to {sorted(names)}): {stray}"


# ------------------------------------------------------------------------ the checker can fail

TOY = {"number": 7, "file": "ch07_tools.md", "title": "工具", "sections": [
    {"number": "7.1", "title": "开源工具包", "subsections": [
        {"number": "7.1.1", "title": "Hugging Face Transformers"},
        {"number": "7.1.2", "title": "Fairseq"}]},
    {"number": "7.2", "title": "资源", "subsections": []}]}
CODE = "> 代码：minillm.models.gpt（GPT）· 笔记本：notebooks/{nb}"
GOOD = """# 7. 工具
引言。
## 7.1 开源工具包
{code}
### 7.1.1 Hugging Face Transformers
正文，公式 $p(x)$。
```python
# 7.1.2 Fairseq  (a comment in a code block is not a heading)
```
{code}
### 7.1.2 Fairseq
#### 额外的小节
{code}
## 7.2 资源
{code}
"""


def _toy(tmp_path, text=GOOD, nb="toy.ipynb"):
    (tmp_path / "notebooks").mkdir(exist_ok=True)
    (tmp_path / "notebooks" / "toy.ipynb").write_text("{}", encoding="utf-8")
    return chapter_problems(text.replace("{code}", CODE.replace("{nb}", nb)), TOY, root=tmp_path)


def test_checker_accepts_a_good_chapter(tmp_path):
    assert _toy(tmp_path) == []


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace("# 7. 工具", "# 7 工具", 1), "first line"),
    (lambda t: "\n" + t, "first line"),
    (lambda t: t.replace("### 7.1.1 Hugging", "## 7.1.1 Hugging"), "found at level 2 instead of 3"),
    (lambda t: t.replace("## 7.2 资源", "## 7.2 资源推荐"), "changed to '7.2 资源推荐'"),
    (lambda t: t.replace("### 7.1.2 Fairseq\n", ""), "'### 7.1.2 Fairseq': missing"),
    (lambda t: t.replace("## 7.2 资源\n", "") + "## 7.2 资源\n", "has no '> 代码：' line"),
    (lambda t: t.replace("### 7.1.1 Hugging Face Transformers\n", "")
     .replace("#### 额外的小节", "### 7.1.1 Hugging Face Transformers"), "out of order"),
    (lambda t: t.replace("正文", "# 另一个一级标题\n正文"), "level-1"),
    (lambda t: t.replace("Fairseq\n#### 额外的小节\n{code}", "Fairseq\n#### 额外的小节\n"),
     "'7.1.2 Fairseq' has no '> 代码：'"),
    (lambda t: t.replace("正文", "损失 $\\beta$ 与 \x08eta"), "control character '\\x08'"),
    (lambda t: t.replace("正文", "截断 $\\min(\nho A$"), "odd number of '$'"),
], ids=["bad-first-line", "blank-first-line", "wrong-level", "changed-text", "missing",
        "no-code-line", "out-of-order", "second-h1", "subsection-without-code-line",
        "control-character", "formula-cut-by-a-newline"])
def test_checker_catches(tmp_path, edit, expected):
    problems = _toy(tmp_path, edit(GOOD))
    assert any(expected in p for p in problems), problems


def test_section_introduction_needs_no_code_line_of_its_own(tmp_path):
    text = GOOD.replace("## 7.1 开源工具包\n{code}", "## 7.1 开源工具包\n引言")
    assert _toy(tmp_path, text) == []


def test_checker_ignores_headings_in_code_blocks(tmp_path):
    # the only '### 7.1.2 Fairseq' is inside a fence: the outline heading counts as missing
    text = GOOD.replace("### 7.1.2 Fairseq\n", "").replace("# 7.1.2 Fairseq  (a", "### 7.1.2 Fairseq\n(a")
    assert any("'### 7.1.2 Fairseq': missing" in p for p in _toy(tmp_path, text))


def test_checker_catches_missing_notebook_and_unknown_names(tmp_path):
    problems = _toy(tmp_path, nb="nope.ipynb")
    assert problems == ["names notebooks/nope.ipynb, which does not exist"]
    problems = _toy(tmp_path, GOOD + "见 minillm.models.no_such_thing。\n")
    assert problems == ["names minillm.models.no_such_thing, which is neither a minillm module "
                        "nor an attribute of one"]


# ------------------------------------------------------------------------------ the chapters

@pytest.mark.parametrize("chapter", OUTLINE, ids=[c["file"] for c in OUTLINE])
def test_chapter_follows_outline(chapter):
    path = CHAPTER_DIR / chapter["file"]
    assert path.is_file(), f"chapters/{chapter['file']} is missing"
    problems = chapter_problems(path.read_text(encoding="utf-8"), chapter)
    assert not problems, f"chapters/{chapter['file']}:\n  " + "\n  ".join(problems)
