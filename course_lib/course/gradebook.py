"""The grader's files, written as each notebook finishes, so an interrupted run loses nothing and can resume.

    OUT/results.jsonl                        one JSON object per graded file:
                                             student, notebook, file, sha256, status, earned, points, checks
                                             (name, verdict, points, earned, full message, hidden), notes
    OUT/grades.csv                           a row per student: a column per exercise set (points earned, or
                                             ERROR / NOT GRADED), total, out_of, and files not graded
    OUT/feedback/STUDENT/NOTEBOOK.md         each check's verdict, points and full message; written answers
    OUT/feedback/STUDENT/NOTEBOOK.ipynb      the executed notebook
    OUT/feedback/STUDENT/NOTEBOOK.log        what the student's kernel process printed (never the terminal)

With several files for one student and set (a re-upload, a "(1)" copy), the most recently modified counts.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path

import nbformat

from .grading import GRADED, GradeReport


def safe_name(text: str) -> str:
    """``text`` as one harmless path component."""
    name = re.sub(r"[^\w.-]+", "_", text).strip("._") or "unknown"
    return name[:100]


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)


def feedback_markdown(report: GradeReport, source: str) -> str:
    """The feedback page of one submission: verdicts with their full messages, then the written answers."""
    lines = [f"# {report.exercise_set}: {report.student}", "", f"File: `{source}`", ""]
    if report.status != GRADED:
        lines += [f"**{report.status.upper()}**: {report.message}", ""]
        return "\n".join(lines)
    lines += [f"**Score: {report.earned:g}/{report.points:g} ({report.score:.0%})**", ""]
    for check in report.checks:
        lines += [f"## {check.name}: {check.verdict} ({check.earned:g}/{check.points:g})", ""]
        if check.message:
            lines += ["```text", check.message, "```", ""]
    lines += [f"Note: {note}" for note in report.notes]
    if report.answers:
        lines += ["", "## Written answers (graded by hand)", ""]
        for number, answer in enumerate(report.answers, start=1):
            lines += [f"### Answer cell {number}", "", answer, ""]
    return "\n".join(lines) + "\n"


def report_record(report: GradeReport, source: Path, digest: str) -> dict:
    """The results.jsonl line of one submission."""
    try:
        modified = source.stat().st_mtime
    except OSError:
        modified = 0.0
    return {"student": report.student, "notebook": report.exercise_set, "file": str(source), "sha256": digest,
            "modified": modified, "status": report.status, "message": report.message,
            "earned": report.earned, "points": report.points, "notes": report.notes,
            "checks": [{"name": c.name, "verdict": c.verdict, "points": c.points, "earned": c.earned,
                        "message": c.message, "hidden": c.hidden} for c in report.checks]}


class Gradebook:
    """The output folder of one grading run (see the module docstring).

    Args:
        out: the folder.
        set_points: exercise set file name -> its points, for the columns and ``out_of``.
        resume: keep the results already in ``out`` (finished files are not graded again); otherwise
            start afresh.
    """

    def __init__(self, out: Path, set_points: dict[str, float], resume: bool = False) -> None:
        self.out, self.set_points = out, set_points
        self.results = out / "results.jsonl"
        out.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        if resume and self.results.is_file():
            for line in self.results.read_text(encoding="utf-8").splitlines():
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill: that file is graded again
                    continue
        else:
            self.results.write_text("", encoding="utf-8")
        self._write_csv()

    def is_finished(self, source: Path, digest: str) -> bool:
        """Whether this exact file (path and content) already has a final result (graded or unmatched)."""
        return any(r["file"] == str(source) and r["sha256"] == digest and r["status"] in (GRADED, "unmatched")
                   for r in self.records)

    def feedback_path(self, student: str, exercise_set: str, suffix: str) -> Path:
        folder = self.out / "feedback" / safe_name(student)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / (safe_name(Path(exercise_set).stem) + suffix)

    def record(self, report: GradeReport, source: Path, digest: str) -> None:
        """Write the submission's feedback files, append its result, rewrite grades.csv."""
        if report.exercise_set:
            _write_atomically(self.feedback_path(report.student, report.exercise_set, ".md"),
                              feedback_markdown(report, str(source)))
            if report.executed is not None:
                _write_atomically(self.feedback_path(report.student, report.exercise_set, ".ipynb"),
                                  nbformat.writes(report.executed))
        self.records.append(report_record(report, source, digest))
        # Both files are rewritten from memory, so whatever student code did to them in between is undone.
        _write_atomically(self.results, "".join(json.dumps(record) + "\n" for record in self.records))
        self._write_csv()

    def _write_csv(self) -> None:
        sets = sorted(self.set_points)
        chosen: dict[tuple[str, str], dict] = {}
        students: dict[str, list[str]] = {}
        for record in self.records:
            students.setdefault(record["student"], [])
            if record["status"] == "unmatched" or not record["notebook"]:
                students[record["student"]].append(f"{Path(record['file']).name} (no solution)")
                continue
            key = (record["student"], record["notebook"])
            old = chosen.get(key)
            if old is None or old["file"] == record["file"] or record["modified"] >= old["modified"]:
                chosen[key] = record
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["student", *(Path(s).stem for s in sets), "total", "out_of", "not_graded"])
        for student in sorted(students):
            cells, total, problems = [], 0.0, list(students[student])
            for exercise_set in sets:
                record = chosen.get((student, exercise_set))
                if record is None:
                    cells.append("")
                elif record["status"] == GRADED:
                    cells.append(f"{record['earned']:g}")
                    total += record["earned"]
                else:
                    cells.append(record["status"].upper())
                    problems.append(f"{Path(record['file']).name} ({record['status']})")
            writer.writerow([student, *cells, f"{total:g}", f"{sum(self.set_points.values()):g}",
                             "; ".join(problems)])
        _write_atomically(self.out / "grades.csv", buffer.getvalue())
