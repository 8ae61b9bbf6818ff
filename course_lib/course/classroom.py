"""Grading a whole class folder: match files to solutions, grade N at once, survive Ctrl-C, resume.

``grade_class`` reads every solution, checker and submission before any student code runs, grades each
submission in its own sandboxed kernel (``grading.run_submission``), ``jobs`` at a time, and records each
result in the gradebook (``gradebook``) as soon as it is known. After every notebook the course files and
the submissions are compared with the bytes read at the start and restored if student code changed them.
Ctrl-C or SIGTERM kills the running kernels, records their notebooks as NOT GRADED (never 0) and stops.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .gradebook import Gradebook
from .grading import (ERROR, GRADED, NOT_GRADED, UNMATCHED, ExerciseSet, GradeReport, GraderError, Sandbox,
                      load_exercise_set, run_submission)
from .sandbox import ProtectedFiles, become_subreaper, children, kill_stray_children
from .submissions import find_submissions, match_submission, student_of

LIBRARY = Path(__file__).resolve().parents[1]  # course_lib/


class GradingStopped(BaseException):
    """SIGTERM arrived: stop like Ctrl-C does."""


@dataclass
class ClassResult:
    """What a class run produced: a report per file, and whether it was stopped before the end."""

    reports: list[GradeReport] = field(default_factory=list)
    stopped: bool = False

    @property
    def all_graded(self) -> bool:
        return not self.stopped and all(report.status == GRADED for report in self.reports)


@dataclass
class _Submission:
    path: Path
    text: str
    digest: str
    student: str
    exercise_set: ExerciseSet | None


def _read(path: Path) -> tuple[str, str]:
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"unreadable: {error}", ""
    return data.decode("utf-8", errors="replace"), hashlib.sha256(data).hexdigest()


def grade_class(paths: Iterable[Path], solutions_dir: Path, out: Path | None = None, *, sandbox: Sandbox | None = None,
                jobs: int = 1, resume: bool = False, hidden_dir: Path | None = None,
                on_report: Callable[[GradeReport], None] | None = None) -> ClassResult:
    """Grade every notebook under ``paths`` (files or class folders) against ``solutions_dir``.

    Args:
        out: the gradebook folder (``gradebook``); None writes nothing (logs go to a temporary folder).
        sandbox: the limits each notebook runs under.
        jobs: notebooks graded at once (one kernel each).
        resume: keep ``out``'s finished results and grade only the rest.
        hidden_dir: the instructor's hidden checks (``grading``).
        on_report: called with each report as it is recorded (the command line prints it).

    Raises:
        ValueError: a solution notebook breaks the self-check protocol (before anything is graded).
    """
    sandbox = sandbox or Sandbox()
    sandbox.spared = children()
    solutions = {path.stem: path for path in sorted(solutions_dir.glob("*.ipynb"))}
    sets: dict[str, ExerciseSet] = {}
    submissions: list[_Submission] = []
    for path, root in find_submissions(paths):
        text, digest = _read(path)
        matched = match_submission(path.name, list(solutions))
        exercise_set = None
        if matched is not None:
            if matched[0] not in sets:
                sets[matched[0]] = load_exercise_set(solutions[matched[0]], hidden_dir)
            exercise_set = sets[matched[0]]
        submissions.append(_Submission(path, text, digest, student_of(path, root, matched[1] if matched else ""),
                                       exercise_set))
    protected = ProtectedFiles([*solutions_dir.glob("*.ipynb"), *LIBRARY.rglob("*.py"),
                                *((hidden_dir.glob("*.py")) if hidden_dir else []),
                                *(s.path for s in submissions)])
    become_subreaper()
    gradebook = Gradebook(out, {s.name: s.points for s in sets.values()}, resume) if out is not None else None
    result = ClassResult()
    stopped = threading.Event()
    lock = threading.Lock()
    logs = tempfile.TemporaryDirectory(prefix="course-grade-logs-")

    # Files are checked when a report is recorded. With several notebooks graded at once, the one that changed a
    # file may still be running then, so the note goes on the report being recorded and on every notebook still
    # running (``running``, which a report leaves before it is recorded): the culprit's report always carries it.
    running: dict[concurrent.futures.Future, _Submission] = {}
    pending_notes: dict[Path, list[str]] = {}

    def record(report: GradeReport, submission: _Submission) -> None:
        with lock:
            report.notebook, report.student = str(submission.path), submission.student
            report.notes.extend(pending_notes.pop(submission.path, []))
            restored = protected.restore()
            if restored:
                note = ("student code changed course files while this notebook ran, restored: " +
                        ", ".join(path.name for path in restored))
                report.notes.append(note)
                for other in running.values():
                    pending_notes.setdefault(other.path, []).append(note)
            result.reports.append(report)
            if gradebook is not None:
                gradebook.record(report, submission.path, submission.digest)
            if on_report is not None:
                on_report(report)

    def grade(submission: _Submission) -> GradeReport:
        exercise_set = submission.exercise_set
        if gradebook is not None:
            log = gradebook.feedback_path(submission.student, exercise_set.name, ".log")
        else:
            log = Path(logs.name) / f"{hashlib.sha1(str(submission.path).encode()).hexdigest()}.log"
        try:
            return run_submission(submission.text, exercise_set, sandbox, log, stopped)
        except GraderError as error:
            status = NOT_GRADED if stopped.is_set() else ERROR
            return GradeReport(str(submission.path), [], exercise_set=exercise_set.name, status=status,
                               message=str(error))

    todo = []
    for submission in submissions:
        if gradebook is not None and gradebook.is_finished(submission.path, submission.digest):
            continue
        if submission.exercise_set is None:
            record(GradeReport(str(submission.path), [], status=UNMATCHED,
                               message=f"no solution in {solutions_dir.name}/ matches this file's name"), submission)
        else:
            todo.append(submission)

    previous_term = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None

    def on_term(signum, frame):
        raise GradingStopped()

    if previous_term is not None:
        signal.signal(signal.SIGTERM, on_term)
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="grade")
    running.update({executor.submit(grade, submission): submission for submission in todo})
    try:
        while running:
            done, _ = concurrent.futures.wait(running, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                record(future.result(), running.pop(future))
    except (KeyboardInterrupt, GradingStopped):
        stopped.set()
        result.stopped = True
        for future in running:
            future.cancel()
        sandbox.kill_all()
        for future, submission in running.items():
            if not future.cancelled():
                concurrent.futures.wait([future], timeout=60)
            record(GradeReport(str(submission.path), [], exercise_set=submission.exercise_set.name,
                               status=NOT_GRADED, message="grading was stopped before this notebook finished"),
                   submission)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        kill_stray_children(sandbox.spared, spare_kernels=False)
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        logs.cleanup()
    return result
