"""Submitted files as learning platforms deliver them: which exercise set each is, and whose.

A class folder holds one folder per student (``class/ada/01_episodes_and_ci.ipynb``) or the flat files a
platform exports (``class/jdoe_12345_67890_01_episodes_and_ci.ipynb``), with re-upload suffixes such as
``(1)`` or ``-2``. Names are compared normalised (lower case, runs of other characters as ``_``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

COPY_SUFFIX = re.compile(r"(\s*\(\d+\)|-\d+|\s+copy)$")
LMS_STUDENT = re.compile(r"^(?P<student>[a-z0-9]+)(?:_late)?(?:_(?P<id>\d+))?(?:_\d+)*$")


def _normalised(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def match_submission(file_name: str, set_names: list[str]) -> tuple[str, str] | None:
    """``(set name, student)`` for a submitted file's name, or None if it matches no exercise set.

    ``01_episodes_and_ci.ipynb``, ``01_episodes_and_ci (1).ipynb``, ``01_episodes_and_ci-2.ipynb`` and a
    learning platform's ``jdoe_12345_67890_01_episodes_and_ci.ipynb`` all match ``01_episodes_and_ci``;
    the student is what the platform put in front (``jdoe_12345``), or "" when nothing is.
    """
    stem = file_name[:-len(".ipynb")] if file_name.lower().endswith(".ipynb") else file_name
    while COPY_SUFFIX.search(stem):
        stem = COPY_SUFFIX.sub("", stem)
    name = _normalised(stem)
    candidates = [s for s in set_names if name == _normalised(s) or name.endswith("_" + _normalised(s))]
    if not candidates:
        return None
    best = max(candidates, key=len)
    prefix = name[:len(name) - len(_normalised(best))].strip("_")
    lms = LMS_STUDENT.match(prefix)
    student = (f"{lms['student']}_{lms['id']}" if lms['id'] else lms['student']) if lms else prefix
    return best, student


def find_submissions(paths: Iterable[Path]) -> list[tuple[Path, Path]]:
    """The notebooks to grade, each with the folder it was found in: every notebook under each folder, sorted."""
    found: list[tuple[Path, Path]] = []
    for path in paths:
        if path.is_dir():
            found += [(p, path) for p in sorted(path.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
        else:
            found.append((path, path.parent))
    return found


def student_of(path: Path, root: Path, lms_student: str) -> str:
    """The student a file belongs to: its first folder under the class folder, else the platform's prefix,
    else the folder it is in."""
    relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    if len(relative.parts) > 1:
        return relative.parts[0]
    return lms_student or path.parent.resolve().name
