"""The executor runs notebooks in a kernel of this Python; the grader scores self-checks robustly.

Every test that runs a notebook starts a kernel (about a second), so each notebook here packs
several cases.
"""
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_lib.course import nbexec
from course_lib.course.grading import grade_notebook, grade_paths
from course_lib.course.nbexec import NotebookCellError, execute_notebook


def write_notebook(path: Path, *sources: str) -> Path:
    """A notebook of code cells (a source starting with "md:" is a markdown cell)."""
    cells = [new_markdown_cell(s[3:]) if s.startswith("md:") else new_code_cell(s) for s in sources]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=cells), path)
    return path


def check(name: str, body: str) -> str:
    return f"# SELF-CHECK: {name}\n{body}"


# --- the executor ---------------------------------------------------------------------------

def test_executor_uses_this_python_the_folder_and_env_then_names_the_failing_cell(tmp_path, monkeypatch):
    # A registered "python3" kernel pointing at another interpreter must not be used.
    fake_spec = tmp_path / "jupyter" / "kernels" / "python3"
    fake_spec.mkdir(parents=True)
    (fake_spec / "kernel.json").write_text(
        '{"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],'
        ' "display_name": "Other Python", "language": "python"}')
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = new_notebook(cells=[
        new_code_cell(f"import os, sys\nassert sys.executable == {sys.executable!r}, sys.executable\n"
                      f"assert os.getcwd() == {str(tmp_path)!r}\nassert os.environ['COURSE_X'] == '1'"),
        new_markdown_cell("text"),
        new_code_cell("\n\nratio = 1 / 0"),
    ])

    with pytest.raises(NotebookCellError) as raised:
        execute_notebook(nb, cwd=tmp_path, timeout=30, env={"COURSE_X": "1"})

    error = raised.value
    assert (error.code_cell_number, error.cell_index, error.ename) == (2, 2, "ZeroDivisionError")
    assert error.first_line == "ratio = 1 / 0"
    assert str(error).startswith("code cell 2 (cell index 2) failed with ZeroDivisionError: division by zero")
    assert nb.cells[0].outputs == [] and nb.cells[0].execution_count is None  # input left alone


# --- the grader -----------------------------------------------------------------------------

@pytest.fixture
def solutions(tmp_path) -> Path:
    """A solution notebook with five self-checks."""
    write_notebook(
        tmp_path / "solutions" / "01_episodes.ipynb",
        "md:# Episodes",
        "def add(a, b):\n    return a + b\n\ndef n_classes(labels):\n    return len(set(labels))",
        check("add", "assert add(2, 3) == 5"),
        check("add floats", "assert add(0.5, 0.25) == 0.75"),
        check("n_classes", "assert n_classes([1, 1, 2]) == 2, 'n_classes: count each class once'"),
        "def sample_episode(labels):\n    return labels",
        check("sample_episode", "assert sample_episode([1]) == [1]"),
        check("summary", "print('all done')"),
    )
    return tmp_path / "solutions"


def test_grader_scores_passing_failing_stubbed_and_missing_checks(tmp_path, solutions):
    student = write_notebook(
        tmp_path / "ada" / "01_episodes.ipynb",
        "md:# Episodes",
        "def add(a, b):\n    return a + b\n\ndef n_classes(labels):\n    return len(labels)",
        check("add", "assert add(2, 3) == 5"),
        check("add floats", "assert add(0.5, 0.25) == 0.75"),
        check("n_classes", "pass  # the student edited the check: the original one runs anyway"),
        "def sample_episode(labels):\n    # TODO: your code here\n"
        "    raise NotImplementedError('exercise 2 (sample_episode) is not done yet')",
        check("sample_episode", "assert sample_episode([1]) == [1]"),
    )

    report = grade_notebook(student, solutions, timeout=30)

    assert (report.passed, report.total, report.score) == (2, 5, 0.4)
    assert report.format_table() == "\n".join([
        str(student),
        "  check           result  message",
        "  add             PASS",
        "  add floats      PASS",
        "  n_classes       FAIL    AssertionError: n_classes: count each class once",
        "  sample_episode  FAIL    NotImplementedError: exercise 2 (sample_episode) is not done yet",
        "  summary         FAIL    check cell missing",
        "score: 2/5 (40%)",
    ])


def test_endless_loop_times_out_and_grading_goes_on(tmp_path, solutions):
    student = write_notebook(
        tmp_path / "ada" / "01_episodes.ipynb",
        "def add(a, b):\n    while True:\n        pass",
        check("add", "assert add(2, 3) == 5"),
        "def n_classes(labels):\n    return len(set(labels))",
        check("n_classes", ""),
    )

    report = grade_notebook(student, solutions, timeout=5)

    assert report.checks[0] == ("add", False, "CellTimeoutError: the cell did not finish within 5 s "
                                              "and was interrupted")
    assert report.checks[2] == ("n_classes", True, "")


def test_checks_after_an_uninterruptible_cell_are_not_run(tmp_path, solutions, monkeypatch):
    monkeypatch.setattr(nbexec, "INTERRUPT_GRACE_SECONDS", 1)
    student = write_notebook(
        tmp_path / "ada" / "01_episodes.ipynb",
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        check("add", ""),
    )

    report = grade_notebook(student, solutions, timeout=2)

    assert report.checks[0] == ("add", False, "not run: an earlier cell timed out")


def test_a_dying_kernel_fails_the_remaining_checks(tmp_path, solutions):
    student = write_notebook(
        tmp_path / "ada" / "01_episodes.ipynb",
        "def add(a, b):\n    return a + b",
        check("add", ""),
        "import os\nos._exit(1)",
        check("add floats", ""),
    )

    report = grade_notebook(student, solutions, timeout=30)

    assert report.checks[:2] == [("add", True, ""),
                                 ("add floats", False, "not run: the kernel died in an earlier cell")]


def test_grading_a_class_folder_survives_a_corrupt_notebook(tmp_path, solutions):
    (tmp_path / "class" / "ada").mkdir(parents=True)
    (tmp_path / "class" / "ada" / "01_episodes.ipynb").write_text('{"cells": [', encoding="utf-8")
    write_notebook(
        tmp_path / "class" / "bob" / "01_episodes.ipynb",
        "def add(a, b):\n    return a + b\n\ndef n_classes(labels):\n    return len(set(labels))\n\n"
        "def sample_episode(labels):\n    return labels",
        *(check(name, "") for name in ["add", "add floats", "n_classes", "sample_episode", "summary"]),
    )

    ada, bob = grade_paths([tmp_path / "class"], solutions, timeout=30)

    assert ada.notebook.endswith("ada/01_episodes.ipynb") and ada.passed == 0 and ada.total == 5
    assert all(message.startswith("could not read notebook") for _, _, message in ada.checks)
    assert bob.format_table().endswith("score: 5/5 (100%)")


def test_grading_refuses_notebooks_without_a_solution(tmp_path, solutions):
    stray = write_notebook(tmp_path / "ada" / "07_unknown.ipynb", "x = 1")

    with pytest.raises(FileNotFoundError, match="no solution in solutions/ for: 07_unknown.ipynb"):
        grade_paths([stray], solutions)
