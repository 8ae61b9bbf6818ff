"""The Colab setup cell: the first code cell of every notebook, written from this one template.

On Colab the cell fetches the course (``git clone`` the first time, ``git pull --ff-only`` after), installs
course_lib with the runtime dependencies that ``pyproject.toml`` declares (``pip install -e course``: never
torch, ipykernel, jupyter or the test tools, so Colab's own stay in place), keeps checkpoints on Google Drive
when Drive is mounted or ``USE_DRIVE = True``, and prints one line saying what it did. It can run any number
of times. Elsewhere it does nothing and prints nothing.

The course's address is written once, as ``[project.urls] Repository`` in ``pyproject.toml``; the cell carries
a copy because it runs before the course is on the machine. After changing the template or the address::

    python -m course_lib.course.colab      # rewrites the setup cell of notebooks/ and solutions/, then exercises/

and tests/test_colab.py checks that every notebook's first code cell is this cell.
"""
from __future__ import annotations

import json
from pathlib import Path

from .exercises import generate_exercises

SETUP_CELL_TEMPLATE = '''\
# Setup. On Colab: fetch the course (or update it), install its library, keep checkpoints on Google Drive
# if you wish. Elsewhere this cell does nothing. It is safe to run again.
import importlib
import os
import subprocess
import sys

USE_DRIVE = False  # True: mount Google Drive (Colab asks for access once) and keep checkpoints there
COURSE_URL = "{url}"

if "google.colab" in sys.modules:
    def _run(*command):
        """Run a command quietly; if it fails, show all it printed (pip's errors included)."""
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{{' '.join(command)}} failed (exit {{done.returncode}}):\\n{{done.stdout}}{{done.stderr}}")

    if os.path.isdir(os.path.join("course", ".git")):
        _run("git", "-C", "course", "pull", "--ff-only")
        _fetched = "updated the course (git pull)"
    else:
        _run("git", "clone", COURSE_URL, "course")
        _fetched = f"cloned {{COURSE_URL}} into course/"
    # course_lib and its runtime needs from pyproject.toml; Colab's torch and Jupyter stay as they are.
    _run(sys.executable, "-m", "pip", "install", "-e", "course")
    if os.path.abspath("course") not in sys.path:
        sys.path.insert(0, os.path.abspath("course"))
    importlib.invalidate_caches()

    _drive = "/content/drive"
    if USE_DRIVE and not os.path.isdir(os.path.join(_drive, "MyDrive")):
        from google.colab import drive
        drive.mount(_drive)
    if os.path.isdir(os.path.join(_drive, "MyDrive")):
        os.environ.setdefault("COURSE_CHECKPOINTS", os.path.join(_drive, "MyDrive", "meta-learning-course", "checkpoints"))
        os.makedirs(os.environ["COURSE_CHECKPOINTS"], exist_ok=True)
        _kept = f"checkpoints in {{os.environ['COURSE_CHECKPOINTS']}}"
    else:
        _kept = "checkpoints on this VM only (set USE_DRIVE = True to keep them on Drive)"
    print(f"Colab: {{_fetched}}, installed course_lib (pip install -e course), {{_kept}}")
'''

NOTEBOOK_FOLDERS = ("notebooks", "solutions")


def repository_url(pyproject: Path) -> str:
    """The course's repository address: ``[project.urls] Repository`` of ``pyproject``."""
    import tomllib

    with open(pyproject, "rb") as file:
        urls = tomllib.load(file).get("project", {}).get("urls", {})
    if "Repository" not in urls:
        raise ValueError(f"{pyproject} has no [project.urls] Repository: the setup cell needs the course's address")
    return urls["Repository"]


def setup_cell(url: str) -> str:
    """The setup cell's source for the course at ``url`` (a git address that ``git clone`` accepts)."""
    return SETUP_CELL_TEMPLATE.format(url=url).rstrip("\n")


def first_code_cell(notebook: dict) -> dict:
    """The first code cell of a notebook read as JSON; a notebook without one is an error."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            return cell
    raise ValueError("the notebook has no code cell to hold the setup cell")


def write_setup_cells(repo: Path) -> list[Path]:
    """Make the first code cell of every lecture and solution notebook the setup cell; regenerate exercises.

    Only that cell's source changes (the file is written as nbformat writes it: sorted keys, indent 1), so
    edits to other cells merge. Returns the notebooks whose setup cell changed.
    """
    source = setup_cell(repository_url(repo / "pyproject.toml")).splitlines(keepends=True)
    changed = []
    for folder in NOTEBOOK_FOLDERS:
        for path in sorted((repo / folder).glob("*.ipynb")):
            notebook = json.loads(path.read_text(encoding="utf-8"))
            cell = first_code_cell(notebook)
            if cell["source"] != source:
                cell["source"] = source
                path.write_text(json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                                encoding="utf-8")
                changed.append(path)
    generate_exercises(repo / "solutions", repo / "exercises")
    return changed


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    for written in write_setup_cells(root):
        print(f"setup cell written: {written.relative_to(root)}")
