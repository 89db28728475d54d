"""The course scaffolding around the chapters:

* every chapter has ``## 学习目标`` (4-6 goals) before its first numbered section, and ends with
  ``## 本章小结`` and ``## 概念题`` (5-10 numbered questions);
* the teachers' answers (chapters/teachers/answers_chNN.md) answer every question, one numbered
  answer per question;
* the 12-week syllabus (chapters/syllabus.md) names every notebook and every exercise.

The checker is tested on small synthetic chapters, so each rule can fail.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
OUTLINE = json.loads((CHAPTERS / "outline.json").read_text(encoding="utf-8"))


def _section(text, title):
    """The body of the ``## title`` section (up to the next ``## `` heading), or None."""
    m = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    return None if m is None else m.group(1)


def _numbered(body):
    return re.findall(r"^\s*(\d+)\.\s+\S", body or "", flags=re.M)


def _bullets(body):
    return re.findall(r"^\s*(?:[-*]|\d+\.)\s+\S", body or "", flags=re.M)


def scaffolding_problems(chapter_text, answers_text):
    """What the chapter's goals, summary, questions and answers lack (empty list: nothing)."""
    problems = []
    goals = _section(chapter_text, "学习目标")
    first = re.search(r"^## \d+\.1 ", chapter_text, flags=re.M)
    if goals is None:
        problems.append("no '## 学习目标' section")
    else:
        if first and chapter_text.index("## 学习目标") > first.start():
            problems.append("'## 学习目标' must come before the first numbered section")
        if not 4 <= len(_bullets(goals)) <= 6:
            problems.append(f"学习目标 has {len(_bullets(goals))} goals, expected 4-6")
    summary = _section(chapter_text, "本章小结")
    if summary is None or not 5 <= len(_bullets(summary)) <= 8:
        problems.append("'## 本章小结' missing or without 5-8 bullets")
    questions = _numbered(_section(chapter_text, "概念题"))
    if not 5 <= len(questions) <= 10:
        problems.append(f"概念题 has {len(questions)} numbered questions, expected 5-10")
    answers = _numbered(answers_text)
    if answers_text is None:
        problems.append("no answers file for the teachers")
    elif answers != questions:
        problems.append(f"answers numbered {answers}, questions numbered {questions}")
    return problems


GOOD = ("# 1. 标题\n\n引言。\n\n## 学习目标\n\n- a\n- b\n- c\n- d\n\n## 1.1 节\n\n正文。\n\n"
        "## 本章小结\n\n- a\n- b\n- c\n- d\n- e\n\n## 概念题\n\n1. q\n2. q\n3. q\n4. q\n5. q\n")
ANSWERS = "# 第 1 章 概念题参考答案\n\n1. a\n2. a\n3. a\n4. a\n5. a\n"


@pytest.mark.parametrize("chapter, answers, fragment", [
    (GOOD, ANSWERS, None),
    (GOOD.replace("## 学习目标", "## 目标"), ANSWERS, "no '## 学习目标'"),
    (GOOD.replace("- d\n\n## 1.1", "\n## 1.1"), ANSWERS, "3 goals"),
    (GOOD.replace("## 学习目标\n\n- a\n- b\n- c\n- d\n\n## 1.1 节\n\n正文。\n\n",
                  "## 1.1 节\n\n正文。\n\n## 学习目标\n\n- a\n- b\n- c\n- d\n\n"), ANSWERS,
     "before the first numbered section"),
    (GOOD.replace("5. q\n", ""), ANSWERS, "4 numbered questions"),
    (GOOD, ANSWERS.replace("5. a\n", ""), "answers numbered"),
    (GOOD, None, "no answers file"),
])
def test_scaffolding_checker(chapter, answers, fragment):
    problems = scaffolding_problems(chapter, answers)
    if fragment is None:
        assert problems == []
    else:
        assert any(fragment in p for p in problems), problems


@pytest.mark.parametrize("entry", OUTLINE, ids=[e["file"] for e in OUTLINE])
def test_chapter_has_goals_summary_questions_and_answers(entry):
    text = (CHAPTERS / entry["file"]).read_text(encoding="utf-8")
    answers_path = CHAPTERS / "teachers" / f"answers_ch{entry['number']:02d}.md"
    answers = answers_path.read_text(encoding="utf-8") if answers_path.exists() else None
    problems = scaffolding_problems(text, answers)
    assert not problems, f"{entry['file']}: " + "; ".join(problems)


def test_syllabus_names_every_notebook_and_every_exercise():
    from minillm.exercises.grading import CHAPTERS as EXERCISE_CHAPTERS, chapter_exercises
    text = (CHAPTERS / "syllabus.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if p.name not in text]
    assert not missing, f"chapters/syllabus.md does not schedule these notebooks: {missing}"
    weeks = re.findall(r"^\|\s*(?:第\s*)?(\d+)\s*(?:周)?\s*\|", text, flags=re.M)
    assert len(set(weeks)) == 12, f"expected 12 weeks in the syllabus table, found {weeks}"
    ids = [ex.id for chapter in EXERCISE_CHAPTERS for ex in chapter_exercises(chapter)]
    absent = [i for i in ids if not re.search(rf"(?<![\d.]){re.escape(i)}(?![\d])", text)]
    assert not absent, f"chapters/syllabus.md does not schedule these exercises: {absent}"
