"""The instructor's grader: run a student's exercise notebook and score its self-check cells.

A self-check cell is a code cell whose first line is ``# SELF-CHECK: <check name>``; each is worth
one point. The checks that count are those of the matching solution notebook (the same file name
in ``solutions/``), and they run as the solution writes them: a student who deletes a check cell
loses its point, and one who edits a check cell still runs the original check.

A student's notebook can be broken in any way (not JSON, a cell that raises, an endless loop,
``os._exit``): each becomes failed checks with a one-line message, never an exception.

Example::

    report = grade_notebook(Path("submissions/ada/01_few_shot.ipynb"), Path("solutions"))
    print(report.format_table())
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nbformat

from .nbexec import DEAD_KERNEL_ERROR, TIMEOUT_ERROR, execute_notebook

CHECK_LINE = re.compile(r"^#\s*SELF-CHECK:\s*(?P<name>.+?)\s*$")
MAX_MESSAGE = 160  # characters of an error message shown in the table


class CheckResult(NamedTuple):
    """The outcome of one self-check: its name, whether it passed, and why not."""

    name: str
    passed: bool
    message: str = ""


@dataclass
class GradeReport:
    """The graded checks of one student notebook."""

    notebook: str
    checks: list[CheckResult]

    @property
    def passed(self) -> int:
        return sum(check.passed for check in self.checks)

    @property
    def total(self) -> int:
        return len(self.checks)

    @property
    def score(self) -> float:
        """The fraction of checks passed (0.0 when there are no checks)."""
        return self.passed / self.total if self.total else 0.0

    def format_table(self) -> str:
        """A plain-text table: one row per check (PASS/FAIL and why), then the score line."""
        rows = [("check", "result", "message")]
        rows += [(c.name, "PASS" if c.passed else "FAIL", c.message) for c in self.checks]
        name_width = max(len(row[0]) for row in rows)
        lines = [self.notebook]
        for name, result, message in rows:
            lines.append(f"  {name:<{name_width}}  {result:<6}  {message}".rstrip())
        lines.append(f"score: {self.passed}/{self.total} ({self.score:.0%})")
        return "\n".join(lines)


def check_name(cell: nbformat.NotebookNode) -> str | None:
    """The check's name if ``cell`` is a self-check cell, else None."""
    if cell.get("cell_type") != "code":
        return None
    match = CHECK_LINE.match(cell.source.lstrip().split("\n")[0])
    return match["name"] if match else None


def expected_checks(solution: nbformat.NotebookNode, name: str) -> dict[str, str]:
    """The self-checks of a solution notebook, in order: check name -> the check cell's source."""
    checks: dict[str, str] = {}
    for cell in solution.cells:
        check = check_name(cell)
        if check in checks:
            raise ValueError(f"{name} has two self-check cells named {check!r}")
        if check is not None:
            checks[check] = cell.source
    return checks


def _one_line(text: str) -> str:
    line = text.strip().split("\n")[0]
    return line if len(line) <= MAX_MESSAGE else line[:MAX_MESSAGE - 3] + "..."


def _error_message(cell: nbformat.NotebookNode) -> str | None:
    """``"Name: message"`` of the cell's first error output, or None if it has none."""
    for output in cell.outputs:
        if output.output_type == "error":
            evalue = _one_line(output.get("evalue", ""))
            return f"{output.ename}: {evalue}" if evalue else output.ename
    return None


def _why_not_run(cells: list[nbformat.NotebookNode], index: int) -> str:
    """Why the cell at ``index`` was never executed: the error that stopped the kernel before it."""
    for cell in reversed(cells[:index]):
        if cell.cell_type != "code":
            continue
        names = {output.get("ename") for output in cell.outputs if output.output_type == "error"}
        if TIMEOUT_ERROR in names:
            return "not run: an earlier cell timed out"
        if DEAD_KERNEL_ERROR in names:
            return "not run: the kernel died in an earlier cell"
    return "not run"


def _grade_check(cells: list[nbformat.NotebookNode], name: str) -> CheckResult:
    """Grade one expected check against the executed student notebook's cells."""
    index = next((i for i, cell in enumerate(cells) if check_name(cell) == name), None)
    if index is None:
        return CheckResult(name, False, "check cell missing")
    cell = cells[index]
    if cell.execution_count is None:
        return CheckResult(name, False, _why_not_run(cells, index))
    error = _error_message(cell)
    return CheckResult(name, error is None, error or "")


def _all_failed(notebook: str, checks: Iterable[str], message: str) -> GradeReport:
    return GradeReport(notebook, [CheckResult(name, False, _one_line(message)) for name in checks])


def grade_notebook(path: Path, solutions_dir: Path, *, timeout: int = 120) -> GradeReport:
    """Execute a student's notebook in a fresh kernel and grade its self-checks.

    Args:
        path: the student's notebook; it runs in its own folder, and the file is not modified.
        solutions_dir: the folder holding the solution notebook of the same name.
        timeout: seconds each cell may run before it is interrupted and counted as failed.

    Raises:
        FileNotFoundError: there is no solution notebook to grade against (an instructor's
            mistake; nothing about the student's notebook raises).
    """
    solution_path = solutions_dir / path.name
    if not solution_path.is_file():
        raise FileNotFoundError(f"no solution {solutions_dir.name}/{path.name} to grade {path} against")
    checks = expected_checks(nbformat.read(solution_path, as_version=4), solution_path.name)
    # A student's file can fail in any way, so any exception means "could not read/run it".
    try:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if check_name(cell) in checks:
                cell.source = checks[check_name(cell)]
    except Exception as error:
        return _all_failed(str(path), checks, f"could not read notebook: {error}")
    try:
        executed = execute_notebook(nb, cwd=path.parent, timeout=timeout, allow_errors=True)
    except Exception as error:
        return _all_failed(str(path), checks, f"could not run notebook: {error}")
    return GradeReport(str(path), [_grade_check(executed.cells, name) for name in checks])


def find_submissions(paths: Iterable[Path]) -> list[Path]:
    """The notebooks to grade: each file as given, and every notebook inside each folder, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            found.append(path)
    return found


def grade_paths(paths: Iterable[Path], solutions_dir: Path, timeout: int = 120) -> list[GradeReport]:
    """Grade every submitted notebook under ``paths`` (files or folders, e.g. a whole class).

    Raises:
        FileNotFoundError: before grading anything, if a notebook has no matching solution.
    """
    submissions = find_submissions(paths)
    unmatched = sorted({p.name for p in submissions if not (solutions_dir / p.name).is_file()})
    if unmatched:
        raise FileNotFoundError(f"no solution in {solutions_dir.name}/ for: {', '.join(unmatched)}")
    return [grade_notebook(path, solutions_dir, timeout=timeout) for path in submissions]
