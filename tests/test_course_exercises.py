"""The real exercise notebooks: the generated student version fails its checks, the solution passes them."""
from pathlib import Path

import pytest

from course_lib.course.grading import grade_notebook

REPO = Path(__file__).resolve().parents[1]
EXERCISE_SETS = sorted(p.name for p in (REPO / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("name", EXERCISE_SETS)
def test_grader_scores_the_stubs_zero_and_the_solution_full(name):
    solved = grade_notebook(REPO / "solutions" / name, REPO / "solutions")
    assert solved.score == 1.0, solved.format_table()
    unsolved = grade_notebook(REPO / "exercises" / name, REPO / "solutions")
    assert unsolved.passed == 0, unsolved.format_table()
    assert all("NotImplementedError" in check.message for check in unsolved.checks), unsolved.format_table()
