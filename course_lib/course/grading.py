"""The instructor's grader: run a student's exercise notebook in a sandbox, then check their functions itself.

A self-check cell of a solution notebook is a code cell that starts ``# SELF-CHECK: <name>``, optionally
``(N points)`` (default 1), and calls one checker of the set's module with the student's functions::

    # SELF-CHECK: episode sampler (2 points)
    checks.check_episode_sampler(sample_episode)

The grader reads every solution and imports every checker before any student code runs. For each
submission it runs the notebook top to bottom in a fresh sandboxed kernel (``sandbox``; the student's own
self-check cells are skipped), then calls the *grader's* checker, in the grader's process, with stand-ins
for the student's functions that run them in the student's kernel on the checker's inputs (``remote``).
The verdict is therefore computed here, from data, and nothing the notebook does to its kernel (patched
``checks``, exception hooks, input transformers, printed scores) changes it. A checker may award part of
the points (``checks.base.PartialCredit``). Hidden checks live in the instructor's folder only
(``--hidden DIR``: ``DIR/<set>.py`` with functions ``check_*`` whose parameters name the student's
functions, and an optional ``POINTS = {"check_x": 2}``). Written answers (the markdown cells that hold a
solution in the solution notebook) are collected for grading by hand.

Outcomes: ``graded`` (a score, however broken the notebook), ``error`` (the grader could not run it: an
infrastructure problem, never a 0), ``not graded`` (grading was stopped), ``unmatched`` (no solution has
the file's name).

Example::

    report = grade_notebook(Path("submissions/ada/01_episodes_and_ci.ipynb"), Path("solutions"))
    print(report.format_table())
"""
from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import io
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import nbformat

from .checks.base import PartialCredit
from .nbexec import DEAD_KERNEL_ERROR, TIMEOUT_ERROR, KernelLaunch, execute_notebook
from .remote import StudentKernel
from .sandbox import children, kill_process_tree, kill_stray_children, launcher_prefix, scrubbed_environment
from .submissions import match_submission

CHECK_LINE = re.compile(r"^#\s*SELF-CHECK:\s*(?P<name>.+?)\s*(?:\((?P<points>\d+(?:\.\d+)?)\s*points?\))?\s*$")
CHECKS_IMPORT = re.compile(r"^from\s+course_lib\.course\.checks\s+import\s+(?P<module>\w+)\s+as\s+checks\s*$", re.M)
SKIPPED_CHECK = "# (this self-check is run by the grader itself, after the notebook)"
GRADED, ERROR, NOT_GRADED, UNMATCHED = "graded", "error", "not graded", "unmatched"
DEFAULT_MEMORY_BYTES = 4 * 2 ** 30


class GraderError(RuntimeError):
    """The grader itself could not run a submission (kernel start, files): reported as ERROR, never FAIL."""


class CheckResult(NamedTuple):
    """One check's outcome: its name, the points it gave out of ``points``, and the full message."""

    name: str
    passed: bool
    message: str = ""
    points: float = 1.0
    earned: float = 0.0
    hidden: bool = False

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "PARTIAL" if self.earned > 0 else "FAIL"


@dataclass
class GradeReport:
    """The outcome of one submission: its checks, its written answers, and where it came from."""

    notebook: str
    checks: list[CheckResult]
    student: str = ""
    exercise_set: str = ""
    status: str = GRADED
    message: str = ""
    answers: list[str] = field(default_factory=list)
    executed: nbformat.NotebookNode | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(check.passed for check in self.checks)

    @property
    def total(self) -> int:
        return len(self.checks)

    @property
    def earned(self) -> float:
        return sum(check.earned for check in self.checks)

    @property
    def points(self) -> float:
        return sum(check.points for check in self.checks)

    @property
    def score(self) -> float:
        """The fraction of the points earned (0.0 when there are no checks)."""
        return self.earned / self.points if self.points else 0.0

    def format_table(self) -> str:
        """A plain-text table: one row per check (verdict, points, the full message), then the score line."""
        lines = [self.notebook]
        if self.status != GRADED:
            lines.append(f"  {self.status.upper()}: {self.message}")
            return "\n".join(lines)
        rows = [("check", "result", "points", "message")]
        rows += [(c.name, c.verdict, f"{_number(c.earned)}/{_number(c.points)}", c.message) for c in self.checks]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for name, verdict, points, message in rows:
            first, *more = message.split("\n") if message else [""]
            lines.append(f"  {name:<{widths[0]}}  {verdict:<{widths[1]}}  {points:<{widths[2]}}  {first}".rstrip())
            lines += [" " * (8 + sum(widths)) + line for line in more]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"score: {_number(self.earned)}/{_number(self.points)} ({self.score:.0%})")
        return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:g}"


# --- what the solutions say -------------------------------------------------------------------

@dataclass
class Check:
    """One check of an exercise set: a grader-side checker and the student functions it is given."""

    name: str
    points: float
    checker: Callable
    functions: list[str]
    options: dict = field(default_factory=dict)
    hidden: bool = False

    def run(self, kernel: StudentKernel) -> CheckResult:
        """Call the checker with stand-ins for the student's functions; the verdict is the checker's."""
        output = io.StringIO()
        try:
            with _thread_output(output):
                self.checker(*(kernel.function(name) for name in self.functions), **self.options)
        except PartialCredit as partial:
            earned = round(partial.fraction * self.points, 6)
            return CheckResult(self.name, False, str(partial), self.points, earned, self.hidden)
        except AssertionError as failure:
            return CheckResult(self.name, False, str(failure) or "AssertionError", self.points, 0.0, self.hidden)
        except Exception as error:  # the checker choked on what the student's function returned
            message = f"{type(error).__name__}: {error} (while checking what your functions returned)"
            return CheckResult(self.name, False, message, self.points, 0.0, self.hidden)
        return CheckResult(self.name, True, "", self.points, self.points, self.hidden)


@dataclass
class ExerciseSet:
    """A solution notebook read once: its checks, its written-answer cells, and its file name."""

    name: str
    checks: list[Check]
    answer_cells: list[str]  # ids of the markdown cells that hold a solution

    @property
    def points(self) -> float:
        return sum(check.points for check in self.checks)


def check_name(cell: nbformat.NotebookNode) -> str | None:
    """The check's name if ``cell`` is a self-check cell, else None."""
    if cell.get("cell_type") != "code":
        return None
    match = CHECK_LINE.match(cell.source.lstrip().split("\n")[0])
    return match["name"] if match else None


def _parse_check(cell: nbformat.NotebookNode, module, where: str) -> Check:
    """The :class:`Check` a self-check cell declares: ``checks.check_x(function_name, option=constant)``."""
    header = CHECK_LINE.match(cell.source.lstrip().split("\n")[0])
    calls = [node.value for node in ast.parse(cell.source).body
             if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
    if len(calls) != 1 or not (isinstance(calls[0].func, ast.Attribute) and isinstance(calls[0].func.value, ast.Name)
                               and calls[0].func.value.id == "checks"):
        raise ValueError(f"{where}: a self-check cell must make exactly one call `checks.check_...(function)`")
    call = calls[0]
    if module is None:
        raise ValueError(f"{where}: the notebook never imports `from course_lib.course.checks import ... as checks`")
    checker = getattr(module, call.func.attr, None)
    if not callable(checker):
        raise ValueError(f"{where}: {module.__name__} has no checker {call.func.attr}")
    if not all(isinstance(arg, ast.Name) for arg in call.args):
        raise ValueError(f"{where}: pass the student's functions by name, e.g. checks.{call.func.attr}(my_function)")
    options = {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
    points = float(header["points"]) if header["points"] else 1.0
    return Check(header["name"], points, checker, [arg.id for arg in call.args], options)


def _hidden_checks(path: Path) -> list[Check]:
    """The instructor's hidden checks in ``path`` (a Python file; see the module docstring)."""
    spec = importlib.util.spec_from_file_location(f"course_hidden_checks_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    points = getattr(module, "POINTS", {})
    checks = []
    for name, function in inspect.getmembers(module, inspect.isfunction):
        if name.startswith("check_") and function.__module__ == module.__name__:
            parameters = [p.name for p in inspect.signature(function).parameters.values() if p.default is p.empty]
            label = "hidden: " + name.removeprefix("check_").replace("_", " ")
            checks.append(Check(label, float(points.get(name, 1)), function, parameters, hidden=True))
    return checks


def load_exercise_set(solution_path: Path, hidden_dir: Path | None = None) -> ExerciseSet:
    """Read a solution notebook (and its hidden checks) into an :class:`ExerciseSet`.

    Raises:
        ValueError: a self-check cell that does not follow the protocol, or two with the same name.
    """
    solution = nbformat.read(solution_path, as_version=4)
    code = "\n".join(cell.source for cell in solution.cells if cell.cell_type == "code")
    imported = CHECKS_IMPORT.search(code)
    module = importlib.import_module(f"course_lib.course.checks.{imported['module']}") if imported else None
    checks: list[Check] = []
    for index, cell in enumerate(solution.cells):
        if check_name(cell) is not None:
            check = _parse_check(cell, module, f"{solution_path.name}, cell index {index}")
            if any(c.name == check.name for c in checks):
                raise ValueError(f"{solution_path.name} has two self-check cells named {check.name!r}")
            checks.append(check)
    if hidden_dir is not None and (hidden_dir / f"{solution_path.stem}.py").is_file():
        checks += _hidden_checks(hidden_dir / f"{solution_path.stem}.py")
    answers = [cell.get("id", "") for cell in solution.cells
               if cell.cell_type == "markdown" and "BEGIN SOLUTION" in cell.source]
    return ExerciseSet(solution_path.name, checks, answers)


# --- capturing what the checkers print, per grading thread --------------------------------------

class _ThreadLocalStdout(io.TextIOBase):
    """sys.stdout that sends a thread's writes to that thread's buffer while one is set."""

    def __init__(self, fallback) -> None:
        self.fallback, self.local = fallback, threading.local()

    def write(self, text: str) -> int:
        target = getattr(self.local, "buffer", None)
        return (target or self.fallback).write(text)

    def flush(self) -> None:
        self.fallback.flush()


@contextlib.contextmanager
def _thread_output(buffer: io.StringIO):
    if not isinstance(sys.stdout, _ThreadLocalStdout):
        sys.stdout = _ThreadLocalStdout(sys.stdout)
    previous = getattr(sys.stdout.local, "buffer", None)
    sys.stdout.local.buffer = buffer
    try:
        yield
    finally:
        sys.stdout.local.buffer = previous


# --- running one submission ---------------------------------------------------------------------

@dataclass
class Sandbox:
    """How submissions run: ``mode`` (see ``sandbox``), memory per kernel, seconds per cell and per notebook."""

    mode: str = "process"
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    timeout: int = 120
    budget: float | None = 900
    read_only: list[Path] = field(default_factory=list)
    kernels: set[int] = field(default_factory=set)  # the kernels running now, by process id
    spared: set[int] = field(default_factory=children)  # processes that were children before grading began
    lock: threading.Lock = field(default_factory=threading.Lock)

    def kill_all(self) -> None:
        """Kill every running kernel's process tree (Ctrl-C, SIGTERM)."""
        with self.lock:
            pids = list(self.kernels)
        for pid in pids:
            kill_process_tree(pid)


def _student_copy(text: str, exercise_set: ExerciseSet) -> nbformat.NotebookNode:
    """The notebook to run: the student's, with its self-check cells skipped (the grader checks itself)."""
    nb = nbformat.reads(text, as_version=4)
    for cell in nb.cells:
        if check_name(cell) is not None:
            cell.source = cell.source.lstrip().split("\n")[0] + "\n" + SKIPPED_CHECK
    return nb


def _written_answers(nb: nbformat.NotebookNode, exercise_set: ExerciseSet) -> list[str]:
    by_id = {cell.get("id"): cell for cell in nb.cells if cell.cell_type == "markdown"}
    return [by_id[cell_id].source if cell_id in by_id else "(the cell with this answer was deleted)"
            for cell_id in exercise_set.answer_cells]


def _why_not_checked(cells: list[nbformat.NotebookNode], budget: float | None) -> str:
    """Why the grader could not call the student's functions: what stopped the notebook's last run cell."""
    code = [cell for cell in cells if cell.cell_type == "code"]
    ran = [number for number, cell in enumerate(code, start=1) if cell.execution_count is not None]
    if ran:
        errors = [out for out in code[ran[-1] - 1].get("outputs", []) if out.output_type == "error"]
        if any(out.ename == DEAD_KERNEL_ERROR for out in errors):
            return f"not checked: the kernel died in code cell {ran[-1]}"
        if any(out.ename == TIMEOUT_ERROR and "ignored the interrupt" in out.evalue for out in errors):
            return f"not checked: code cell {ran[-1]} did not finish and ignored the interrupt"
    return f"not checked: the notebook ran past its budget of {budget:g} s" if budget else "not checked"


def run_submission(text: str, exercise_set: ExerciseSet, sandbox: Sandbox, log: Path,
                   stopped: threading.Event | None = None) -> GradeReport:
    """Run one student's notebook (its file's text) in the sandbox and grade it; never raises for the student.

    Raises:
        GraderError: the grader could not start or talk to the kernel.
    """
    stopped = stopped or threading.Event()
    report = GradeReport(exercise_set.name, [], exercise_set=exercise_set.name)
    try:
        nb = _student_copy(text, exercise_set)
    except Exception as error:  # a student's file can be anything
        report.checks = [CheckResult(c.name, False, f"could not read notebook: {type(error).__name__}: {error}",
                                     c.points, 0.0, c.hidden) for c in exercise_set.checks]
        return report
    report.answers = _written_answers(nb, exercise_set)
    results: list[CheckResult] = []

    async def check_functions(client) -> None:
        kernel = StudentKernel(client, asyncio.get_running_loop(), channel, sandbox.timeout)
        for check in exercise_set.checks:
            if stopped.is_set():
                return
            results.append(await asyncio.to_thread(check.run, kernel))

    def started(pid: int) -> None:
        with sandbox.lock:
            sandbox.kernels.add(pid)
        if stopped.is_set():  # stopped while this kernel was starting
            kill_process_tree(pid)

    def ended(pid: int) -> None:
        kill_process_tree(pid)
        with sandbox.lock:
            sandbox.kernels.discard(pid)

    with tempfile.TemporaryDirectory(prefix="course-grade-") as folder, open(log, "ab") as output:
        work, home, channel = Path(folder) / "work", Path(folder) / "home", Path(folder) / "channel"
        for path in (work, home, channel):
            path.mkdir()
        launch = KernelLaunch(prefix=launcher_prefix(sandbox.memory_bytes, sandbox.mode, sandbox.read_only),
                              env=scrubbed_environment(home), output=output, on_start=started, on_end=ended)
        try:
            executed = execute_notebook(nb, cwd=work, timeout=sandbox.timeout, allow_errors=True, launch=launch,
                                        budget=sandbox.budget, after=check_functions)
        except Exception as error:
            if stopped.is_set():
                return GradeReport(exercise_set.name, [], exercise_set=exercise_set.name, status=NOT_GRADED,
                                   message="grading was stopped")
            raise GraderError(f"could not run the notebook: {type(error).__name__}: {error}") from error
        finally:
            kill_stray_children(sandbox.spared, spare_kernels=True)
    if stopped.is_set():
        return GradeReport(exercise_set.name, [], exercise_set=exercise_set.name, status=NOT_GRADED,
                           message="grading was stopped while this notebook ran")
    report.executed = executed
    if len(results) < len(exercise_set.checks):
        why = _why_not_checked(executed.cells, sandbox.budget)
        results += [CheckResult(c.name, False, why, c.points, 0.0, c.hidden) for c in exercise_set.checks[len(results):]]
    report.checks = results
    return report


def grade_notebook(path: Path, solutions_dir: Path, *, timeout: int = 120, sandbox: Sandbox | None = None,
                   hidden_dir: Path | None = None) -> GradeReport:
    """Grade one notebook against the solution of the same (normalised) name, in a sandbox.

    Raises:
        FileNotFoundError: there is no solution notebook to grade against.
        GraderError: the grader could not run it (never for anything the student's notebook does).
    """
    sets = {p.stem: p for p in sorted(solutions_dir.glob("*.ipynb"))}
    matched = match_submission(path.name, list(sets))
    if matched is None:
        raise FileNotFoundError(f"no solution {solutions_dir.name}/{path.name} to grade {path} against")
    exercise_set = load_exercise_set(sets[matched[0]], hidden_dir)
    sandbox = sandbox or Sandbox(timeout=timeout)
    sandbox.spared = children()
    with tempfile.TemporaryDirectory(prefix="course-grade-log-") as logs:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            text = f"unreadable: {error}"
        report = run_submission(text, exercise_set, sandbox, Path(logs) / "kernel.log")
    report.notebook, report.student = str(path), matched[1] or path.parent.name
    return report
