"""Command line of the course.

    python -m course_lib run [--profile quick|full] [--notebooks 00 01 ...] [--out DIR]
    python -m course_lib exercises [--check]
    python -m course_lib grade SUBMISSION.ipynb [MORE.ipynb ...] [--timeout SECONDS]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .course.runner import REPO, run_course


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib", description="The meta-learning course.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="execute the lecture notebooks in order and write a report")
    run.add_argument("--profile", default=None, help="quick (default; CPU, offline) or full (GPU, paper scale)")
    run.add_argument("--notebooks", nargs="+", metavar="NN", help="only notebooks whose names start with these")
    run.add_argument("--out", type=Path, help="run folder (default: runs/<time>-<profile>/)")
    run.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")

    exercises = commands.add_parser("exercises", help="generate exercises/ from solutions/")
    exercises.add_argument("--check", action="store_true", help="only report exercises that are out of date")

    grade = commands.add_parser("grade", help="grade students' exercise notebooks")
    grade.add_argument("paths", nargs="+", type=Path, help="notebooks, or folders of notebooks")
    grade.add_argument("--solutions", type=Path, default=REPO / "solutions", help="the solutions folder")
    grade.add_argument("--timeout", type=int, default=120, help="seconds allowed per cell")

    args = parser.parse_args(argv)
    if args.command == "run":
        return run_course(args.profile, args.notebooks, args.out, args.timeout)
    if args.command == "exercises":
        from .course.exercises import generate_exercises, stale_exercises
        if args.check:
            problems = stale_exercises(REPO / "solutions", REPO / "exercises")
            print("\n".join(problems) if problems else "exercises are up to date")
            return 1 if problems else 0
        try:
            written = generate_exercises(REPO / "solutions", REPO / "exercises")
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for path in written:
            print(f"wrote {path.relative_to(REPO)}")
        return 0
    from .course.grading import grade_paths
    try:
        reports = grade_paths(args.paths, args.solutions, args.timeout)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for report in reports:
        print(report.format_table() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
