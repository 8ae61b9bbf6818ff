"""The main job: notebooks run in order, results are collected, every failure is named and the run goes on."""
import json

import nbformat
import pytest

from course_lib.course.runner import run_course, select_notebooks


def write_notebook(path, *sources):
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources]), path)


RECORD = """
import os
from course_lib.course import report
report.record("answer", 42.0, ci95=1.5, unit="points", data="profile " + os.environ["COURSE_PROFILE"])
"""


def test_run_writes_report_names_every_failure_and_runs_the_rest(tmp_path, capfd):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "00_first.ipynb", RECORD)
    write_notebook(notebooks / "01_broken.ipynb", "x = 1", "assert x == 2, 'x should be 2'")
    write_notebook(notebooks / "02_after.ipynb", RECORD)
    write_notebook(notebooks / "03_broken_too.ipynb", "raise KeyError('missing')")
    out = tmp_path / "run"

    assert run_course("quick", None, out, timeout=60, folder=notebooks) == 1

    report = json.loads((out / "report.json").read_text())
    runs = {r["notebook"]: r for r in report["notebooks"]}
    assert report["profile"] == "quick"
    assert runs["00_first"]["status"] == "passed"
    assert runs["00_first"]["results"][0] == {"name": "answer", "value": 42.0, "ci95": 1.5, "unit": "points",
                                              "episodes": None, "data": "profile quick"}
    assert runs["01_broken"]["status"] == "failed"
    assert "code cell 2" in runs["01_broken"]["error"] and "x should be 2" in runs["01_broken"]["error"]
    assert runs["02_after"]["status"] == "passed", "a failure does not stop the notebooks after it"
    assert runs["03_broken_too"]["status"] == "failed" and "KeyError" in runs["03_broken_too"]["error"]
    markdown = (out / "report.md").read_text()
    assert "| 00_first | answer | 42.0 ± 1.5 points |" in markdown and "01_broken: code cell 2" in markdown
    assert "03_broken_too: code cell 1" in markdown
    assert (out / "notebooks" / "00_first.ipynb").exists()
    assert (out / "notebooks" / "01_broken.ipynb").exists(), "the failed notebook is kept with its error, to read"
    printed, errors = capfd.readouterr()   # file descriptors: what the kernels print reaches them too
    assert "2 of 4 notebook(s) FAILED" in printed
    assert "01_broken: code cell 2" in printed and "03_broken_too: code cell 1" in printed
    assert "without encryption" not in printed + errors, "the kernel's TCP warning reaches the terminal"


def test_selection_and_profile_errors(tmp_path):
    write_notebook(tmp_path / "00_a.ipynb", "")
    write_notebook(tmp_path / "01_b.ipynb", "")
    assert [p.stem for p in select_notebooks(["01"], tmp_path)] == ["01_b"]
    with pytest.raises(SystemExit, match="no notebook matches 07"):
        select_notebooks(["07"], tmp_path)
    with pytest.raises(ValueError, match="unknown profile"):
        run_course("huge", None, tmp_path / "out", folder=tmp_path)


def test_floor_assertion_names_the_floor_set(capsys):
    import torch

    from course_lib.evaluate import EvalResult
    from course_lib.course.report import assert_floor

    result = EvalResult("accuracy", torch.tensor([0.7, 0.8]))
    assert_floor("method", result, real=0.7, standin=0.9, real_data=True)
    assert "floor for method on real data: 70%" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="below its floor of 90% on the offline stand-in"):
        assert_floor("method", result, real=0.7, standin=0.9, real_data=False)


def test_a_paired_gain_is_the_mean_per_episode_difference_and_refuses_unpaired_results(capsys):
    import torch
    from course_lib.course.report import record_paired_gain
    from course_lib.evaluate import EvalResult, mean_confidence_interval
    before = EvalResult("accuracy", torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))
    after = EvalResult("accuracy", torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]))
    gain = record_paired_gain("gain", after, before, data="toy")
    mean, half_width = mean_confidence_interval(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0]))
    assert gain.mean == pytest.approx(mean) and gain.ci95 == pytest.approx(half_width)
    assert f"[report] gain: {100 * mean:.2f} ± {100 * half_width:.2f} points (toy)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="same episodes"):
        record_paired_gain("gain", after, EvalResult("accuracy", torch.zeros(4)), data="toy")
