"""Student notebooks generated from the solution notebooks, and the check that they are in sync.

``solutions/NN_name.ipynb`` is the single source. In its code cells, each solution region::

    def sample_episode(...):
        ### BEGIN SOLUTION hint: shuffle the indices with torch.randperm
        ...the instructor's code...
        ### END SOLUTION

becomes, at the indentation of the BEGIN line::

        # TODO: shuffle the indices with torch.randperm
        raise NotImplementedError("exercise 1 (sample_episode) is not done yet")

In markdown cells, text between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->`` becomes
``*Your answer here.*``. The exercise notebooks carry no outputs and fixed metadata, so
generating them twice gives the same bytes, and ``stale_exercises`` can compare them with the
files on disk (the drift test in tests/test_exercises.py does that in CI).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import nbformat

BEGIN_CODE = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION\b(?P<hint>.*)$")
END_CODE = re.compile(r"^[ \t]*### END SOLUTION\s*$")
MARKDOWN_MARKER = re.compile(r"<!--\s*(?P<kind>BEGIN|END) SOLUTION\s*-->")
DEFINITION = re.compile(r"^(?P<indent>[ \t]*)(?:async\s+)?(?:def|class)\s+(?P<name>\w+)")

DEFAULT_HINT = "your code here"
MARKDOWN_PLACEHOLDER = "*Your answer here.*"
REGENERATE = "python -m course_lib exercises"

# Every exercise notebook gets this metadata, whatever machine last ran the solution.
NOTEBOOK_METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


class ExerciseMarkupError(ValueError):
    """A solution notebook's BEGIN/END SOLUTION markers do not pair up."""


def _enclosing_definition(lines: list[str], indent: str) -> str | None:
    """Name of the innermost ``def``/``class`` whose body, ending with ``lines``, holds ``indent``.

    Walks up through the blocks that enclose the indentation (``for``, ``if``, ...) until a
    definition opens one of them; returns None at the top level.
    """
    depth = len(indent)
    for line in reversed(lines):
        code = line.lstrip()
        if not code or code.startswith("#") or len(line) - len(code) >= depth:
            continue
        match = DEFINITION.match(line)
        if match:
            return match["name"]
        depth = len(line) - len(code)
    return None


def _hint(text_after_marker: str) -> str:
    """The hint written after ``### BEGIN SOLUTION`` (an optional ``hint:`` prefix dropped)."""
    hint = text_after_marker.strip()
    hint = re.sub(r"^hint:\s*", "", hint, flags=re.IGNORECASE)
    return hint or DEFAULT_HINT


def strip_code_solutions(source: str, where: str, first_exercise: int = 1) -> tuple[str, int]:
    """Replace each BEGIN/END SOLUTION region of a code cell by a TODO and a NotImplementedError.

    Args:
        source: the code cell's source.
        where: names the cell in error messages, e.g. ``"03_maml.ipynb, cell index 7"``.
        first_exercise: number given to the first region, so numbers run through a notebook.

    Returns:
        The new source and the number of regions replaced.

    Raises:
        ExerciseMarkupError: an END without BEGIN, a BEGIN inside a region, or a region left open.
    """
    out: list[str] = []
    begin_line = None  # line number of the open region's BEGIN marker, if a region is open
    exercise = first_exercise
    for number, line in enumerate(source.split("\n"), start=1):
        begin, end = BEGIN_CODE.match(line), END_CODE.match(line)
        if begin and begin_line is not None:
            raise ExerciseMarkupError(
                f"{where}, line {number}: BEGIN SOLUTION inside the region opened on line {begin_line}"
            )
        if begin:
            begin_line = number
            indent = begin["indent"]
            name = _enclosing_definition(out, indent)
            label = f"exercise {exercise} ({name})" if name else f"exercise {exercise}"
            out.append(f"{indent}# TODO: {_hint(begin['hint'])}")
            out.append(f'{indent}raise NotImplementedError("{label} is not done yet")')
            exercise += 1
        elif end:
            if begin_line is None:
                raise ExerciseMarkupError(f"{where}, line {number}: END SOLUTION without a BEGIN SOLUTION")
            begin_line = None
        elif begin_line is None:
            out.append(line)
    if begin_line is not None:
        raise ExerciseMarkupError(f"{where}, line {begin_line}: BEGIN SOLUTION without an END SOLUTION")
    return "\n".join(out), exercise - first_exercise


def strip_markdown_solutions(source: str, where: str) -> str:
    """Replace each ``<!-- BEGIN SOLUTION -->``...``<!-- END SOLUTION -->`` span by a placeholder."""
    out: list[str] = []
    position = 0  # start of the text not yet copied
    open_marker = None
    for marker in MARKDOWN_MARKER.finditer(source):
        if marker["kind"] == "BEGIN":
            if open_marker is not None:
                raise ExerciseMarkupError(f"{where}: BEGIN SOLUTION inside another solution")
            out.append(source[position:marker.start()])
            open_marker = marker
        else:
            if open_marker is None:
                raise ExerciseMarkupError(f"{where}: END SOLUTION without a BEGIN SOLUTION")
            out.append(MARKDOWN_PLACEHOLDER)
            position = marker.end()
            open_marker = None
    if open_marker is not None:
        raise ExerciseMarkupError(f"{where}: BEGIN SOLUTION without an END SOLUTION")
    out.append(source[position:])
    return "".join(out)


def make_exercise(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The student version of a solution notebook (``name`` is used in error messages).

    Solution regions are replaced, outputs and execution counts dropped, cell metadata reduced to
    tags, and notebook metadata fixed; everything else is kept as it is.
    """
    exercise = nbformat.v4.new_notebook(metadata=NOTEBOOK_METADATA)
    next_exercise = 1
    for index, cell in enumerate(solution.cells):
        where = f"{name}, cell index {index}"
        metadata = {"tags": cell.metadata["tags"]} if cell.metadata.get("tags") else {}
        if cell.cell_type == "code":
            source, count = strip_code_solutions(cell.source, where, next_exercise)
            next_exercise += count
            new_cell = nbformat.v4.new_code_cell(source, metadata=metadata)
        elif cell.cell_type == "markdown":
            new_cell = nbformat.v4.new_markdown_cell(strip_markdown_solutions(cell.source, where),
                                                     metadata=metadata)
        else:
            new_cell = nbformat.v4.new_raw_cell(cell.source, metadata=metadata)
        new_cell.id = cell.get("id") or f"cell-{index}"
        exercise.cells.append(new_cell)
    return exercise


def exercise_text(solution_path: Path) -> str:
    """The exact file content of the exercise generated from ``solution_path``."""
    solution = nbformat.read(solution_path, as_version=4)
    return nbformat.writes(make_exercise(solution, solution_path.name), version=4) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a crash never leaves half a file."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp",
                                     delete=False) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def _notebooks(folder: Path) -> list[Path]:
    """The notebooks of a folder, sorted; none if the folder does not exist."""
    return sorted(folder.glob("*.ipynb")) if folder.is_dir() else []


def generate_exercises(solutions_dir: Path, exercises_dir: Path) -> list[Path]:
    """Write ``exercises_dir/NAME.ipynb`` for every ``solutions_dir/NAME.ipynb``; return the paths.

    Raises:
        ExerciseMarkupError: a solution's markers do not pair up (nothing is written for it).
    """
    exercises_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for solution_path in _notebooks(solutions_dir):
        exercise_path = exercises_dir / solution_path.name
        _write_atomically(exercise_path, exercise_text(solution_path))
        written.append(exercise_path)
    return written


def stale_exercises(solutions_dir: Path, exercises_dir: Path) -> list[str]:
    """One message per exercise notebook that is missing, out of date, or has no solution.

    An empty list means the exercises are exactly what ``generate_exercises`` would write.
    A missing folder counts as an empty one.
    """
    solutions = {path.name: path for path in _notebooks(solutions_dir)}
    exercises = {path.name: path for path in _notebooks(exercises_dir)}
    ex, sol = exercises_dir.name, solutions_dir.name
    messages = []
    for name, solution_path in solutions.items():
        try:
            expected = exercise_text(solution_path)
        except ValueError as error:  # markers that do not pair up, or a file that is not a notebook
            messages.append(f"{sol}/{name} cannot be turned into an exercise: {error}")
            continue
        if name not in exercises:
            messages.append(f"{ex}/{name} is missing: run `{REGENERATE}`")
        elif exercises[name].read_text(encoding="utf-8") != expected:
            messages.append(f"{ex}/{name} is out of date with {sol}/{name}: run `{REGENERATE}` "
                            "(edit the solution, never the exercise)")
    for name in sorted(exercises.keys() - solutions.keys()):
        messages.append(f"{ex}/{name} has no solution {sol}/{name}: add the solution or delete it")
    return messages
