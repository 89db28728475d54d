"""Course exercises: stubs a student fills in, and a grader that scores them.

    minillm exercises list                 # the chapters and their exercises
    minillm exercises init ch04 work/      # a workspace of stubs (never overwrites a file)
    minillm exercises check work/          # per-exercise score table
    minillm exercises hint 4.2             # the next hint of exercise 4.2 (--all: every hint)

Each chapter's exercises live in ``minillm/exercises/chNN.py`` (the checks), with the student's
starting file in ``stubs/chNN.py``. The reference solutions are not shipped in the package:
teachers find them in the repository, ``chapters/teachers/solutions/chNN.py``. See
:mod:`minillm.exercises.grading` for how a check is written and scored.
"""
from .grading import (CHAPTERS, Check, CheckFailed, Exercise, ExerciseError, ExerciseResult,
                      Misconception, assert_close, assert_equal, as_array, chapter_exercises,
                      check_workspace, find_exercise, format_report, grade_exercise,
                      init_workspace, numerical_gradient, parse_chapters, read_manifest,
                      solution_source, solutions_dir, solutions_import, stub_source, take_hints)

__all__ = ["CHAPTERS", "Check", "CheckFailed", "Exercise", "ExerciseError", "ExerciseResult",
           "Misconception", "find_exercise", "solutions_dir", "solutions_import", "take_hints", "assert_close",
           "assert_equal", "as_array", "chapter_exercises", "check_workspace",
           "format_report", "grade_exercise", "init_workspace", "numerical_gradient",
           "parse_chapters", "read_manifest", "solution_source", "stub_source"]
