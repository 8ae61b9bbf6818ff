"""Exercise notebooks are generated from the solutions, deterministically, and kept in sync."""
import ast
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_lib.course.exercises import (ExerciseMarkupError, generate_exercises, make_exercise,
                                  stale_exercises)

REPO = Path(__file__).resolve().parents[1]

SOLUTION_CODE = '''import torch


def sample_episode(labels, n_way):
    """Pick n_way classes."""
    classes = labels.unique()
    ### BEGIN SOLUTION hint: shuffle the classes with torch.randperm
    order = torch.randperm(len(classes))
    classes = classes[order[:n_way]]
    ### END SOLUTION
    for c in classes:
        ### BEGIN SOLUTION
        print(c)
        ### END SOLUTION
    return classes


### BEGIN SOLUTION
episode = sample_episode(torch.arange(10), 5)
### END SOLUTION
'''

EXERCISE_CODE = '''import torch


def sample_episode(labels, n_way):
    """Pick n_way classes."""
    classes = labels.unique()
    # TODO: shuffle the classes with torch.randperm
    raise NotImplementedError("exercise 1 (sample_episode) is not done yet")
    for c in classes:
        # TODO: your code here
        raise NotImplementedError("exercise 2 (sample_episode) is not done yet")
    return classes


# TODO: your code here
raise NotImplementedError("exercise 3 is not done yet")
'''


def solution_notebook() -> nbformat.NotebookNode:
    """A small solution notebook, as an instructor would leave it after running it."""
    code = new_code_cell(SOLUTION_CODE, execution_count=3, metadata={"tags": ["exercise"], "scrolled": True})
    code.outputs = [new_output("stream", name="stdout", text="tensor(3)\n")]
    question = new_markdown_cell(
        "Why sample classes at random?\n\n<!-- BEGIN SOLUTION -->\nSo every episode is a new task."
        "\n<!-- END SOLUTION -->\n\nAnd why $k$ shots? <!-- BEGIN SOLUTION -->Few.<!-- END SOLUTION -->"
    )
    check = new_code_cell("# SELF-CHECK: sample_episode\nassert len(sample_episode(torch.arange(9), 3)) == 3",
                          execution_count=4)
    nb = new_notebook(cells=[new_markdown_cell("# Episodes"), code, question, check])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python", "version": "3.11.7"}}
    return nb


def test_regions_become_todos_at_their_indentation():
    exercise = make_exercise(solution_notebook(), "01_episodes.ipynb")

    assert exercise.cells[1].source == EXERCISE_CODE
    ast.parse(exercise.cells[1].source)  # still valid Python


def test_everything_outside_the_regions_is_kept():
    solution = solution_notebook()
    exercise = make_exercise(solution, "01_episodes.ipynb")

    assert [c.cell_type for c in exercise.cells] == [c.cell_type for c in solution.cells]
    assert [c.id for c in exercise.cells] == [c.id for c in solution.cells]
    assert exercise.cells[0].source == solution.cells[0].source
    assert exercise.cells[3].source == solution.cells[3].source  # the self-check is untouched
    assert exercise.cells[1].metadata == {"tags": ["exercise"]}
    assert exercise.cells[2].source == ("Why sample classes at random?\n\n*Your answer here.*\n\n"
                                        "And why $k$ shots? *Your answer here.*")
    code_cells = [c for c in exercise.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code_cells)


def test_generation_is_deterministic(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(solution_notebook(), solutions / "01_episodes.ipynb")

    [path] = generate_exercises(solutions, exercises)
    first = path.read_bytes()
    rerun = nbformat.read(solutions / "01_episodes.ipynb", as_version=4)  # run again elsewhere
    rerun.metadata["language_info"]["version"] = "3.12.1"
    rerun.cells[1].execution_count = 7
    nbformat.write(rerun, solutions / "01_episodes.ipynb")
    generate_exercises(solutions, exercises)

    assert path == exercises / "01_episodes.ipynb"
    assert path.read_bytes() == first
    assert first.endswith(b"}\n") and b'\n "cells": [\n  {\n   "cell_type"' in first  # indent 1


@pytest.mark.parametrize("source, problem", [
    ("x = 1\n### BEGIN SOLUTION\nx = 2\n", "line 2: BEGIN SOLUTION without an END SOLUTION"),
    ("### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n### END SOLUTION\n", "line 2: BEGIN SOLUTION inside"),
    ("x = 1\n    ### END SOLUTION\n", "line 2: END SOLUTION without a BEGIN SOLUTION"),
])
def test_markers_that_do_not_pair_up_are_an_error(source, problem):
    nb = new_notebook(cells=[new_markdown_cell("intro"), new_code_cell(source)])

    with pytest.raises(ExerciseMarkupError, match=f"02_maml.ipynb, cell index 1, {problem}"):
        make_exercise(nb, "02_maml.ipynb")


def test_unterminated_markdown_solution_is_an_error():
    nb = new_notebook(cells=[new_markdown_cell("Answer: <!-- BEGIN SOLUTION --> 42")])

    with pytest.raises(ExerciseMarkupError, match="03_x.ipynb, cell index 0: BEGIN SOLUTION without"):
        make_exercise(nb, "03_x.ipynb")


def test_drift_check_reports_missing_outdated_and_orphaned_exercises(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(solution_notebook(), solutions / "01_episodes.ipynb")
    nbformat.write(solution_notebook(), solutions / "02_maml.ipynb")
    generate_exercises(solutions, exercises)
    assert stale_exercises(solutions, exercises) == []

    edited = solution_notebook()
    edited.cells[0].source = "# Episodes, revised"
    nbformat.write(edited, solutions / "01_episodes.ipynb")
    (exercises / "02_maml.ipynb").rename(exercises / "99_old.ipynb")

    assert stale_exercises(solutions, exercises) == [
        "exercises/01_episodes.ipynb is out of date with solutions/01_episodes.ipynb: "
        "run `python -m course_lib exercises` (edit the solution, never the exercise)",
        "exercises/02_maml.ipynb is missing: run `python -m course_lib exercises`",
        "exercises/99_old.ipynb has no solution solutions/99_old.ipynb: add the solution or delete it",
    ]


def test_drift_check_reports_a_broken_solution(tmp_path):
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    nbformat.write(new_notebook(cells=[new_code_cell("### BEGIN SOLUTION\nx = 1")]), solutions / "01_a.ipynb")

    [message] = stale_exercises(solutions, tmp_path / "exercises")

    assert message.startswith(
        "solutions/01_a.ipynb cannot be turned into an exercise: 01_a.ipynb, cell index 0")


def test_exercises_are_up_to_date():
    """The drift test: regenerate with `python -m course_lib exercises` when this fails."""
    assert stale_exercises(REPO / "solutions", REPO / "exercises") == []
