"""Reference solutions of the exercises (graded by the same checks as student work)."""
