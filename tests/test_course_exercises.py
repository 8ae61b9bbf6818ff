"""The real exercise notebooks: the generated student version fails its checks, the solution passes them.

This is also where CI runs the solution notebooks: every cell of each solution must run without an error (nbval's
job for the lecture notebooks; solutions store no outputs to compare, so a second execution by nbval would only
repeat this one)."""
from pathlib import Path

import pytest

from course_lib.course.grading import grade_notebook

REPO = Path(__file__).resolve().parents[1]
EXERCISE_SETS = sorted(p.name for p in (REPO / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("name", EXERCISE_SETS)
def test_grader_scores_the_stubs_zero_and_the_solution_full(name):
    solved = grade_notebook(REPO / "solutions" / name, REPO / "solutions")
    assert solved.score == 1.0, solved.format_table()
    errors = [f"{cell.source[:60]!r}: {out.ename}: {out.evalue}" for cell in solved.executed.cells
              if cell.cell_type == "code" for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, f"cells of the solution that fail: {errors}"
    unsolved = grade_notebook(REPO / "exercises" / name, REPO / "solutions")
    assert unsolved.passed == 0, unsolved.format_table()
    assert all("NotImplementedError" in check.message for check in unsolved.checks), unsolved.format_table()
