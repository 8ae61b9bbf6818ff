"""Training seeds: notebooks rerun per seed, the spread between seeds, and paired differences over seeds."""
import json
import math

import nbformat
import pytest
from scipy import stats

from course_lib import runtime
from course_lib.course.seeds import format_markdown, paired, run_seeds, summarise


def report(seed, results):
    return {"profile": "quick", "training_seed": seed, "notebooks": [{"notebook": "05_x", "results": results}]}


def result(name, values):
    return {"name": name, "value": sum(values) / len(values), "ci95": 1.0, "unit": "%", "episodes": len(values),
            "data": "d", "values": values}


def test_an_exact_name_is_paired_even_when_a_longer_name_starts_with_it():
    reports = {seed: report(seed, [result("MAML", [50.0, 60.0]), result("MAML++", [60.0, 80.0]),
                                   result("MAML++, running statistics", [20.0, 20.0])]) for seed in (0, 1)}
    pair = paired(reports, "MAML", "MAML++")
    assert (pair["first"], pair["second"]) == ("MAML", "MAML++")
    assert pair["mean"] == pytest.approx(15.0)
    with pytest.raises(ValueError, match="starts 2 results"):
        paired(reports, "MAML+", "MAML")


def test_the_spread_between_seeds_and_a_paired_difference_over_common_episodes():
    reports = {
        0: report(0, [result("probe", [50.0, 60.0, 70.0, 80.0]), result("proto", [60.0, 60.0, 90.0])]),
        1: report(1, [result("probe", [40.0, 60.0, 70.0, 90.0]), result("proto", [50.0, 80.0, 80.0]),
                      result("only in seed 1", [1.0, 2.0])]),
        2: report(2, [result("probe", [50.0, 50.0, 70.0, 70.0]), result("proto", [70.0, 60.0, 80.0])]),
    }
    rows = {row["name"]: row for row in summarise(reports)}
    assert set(rows) == {"probe", "proto"}, "a result missing under one seed has no spread"
    values = [65.0, 65.0, 60.0]
    assert rows["probe"]["mean"] == pytest.approx(sum(values) / 3)
    assert rows["probe"]["seed_std"] == pytest.approx(math.sqrt(25 / 3))   # deviations 5/3, 5/3, -10/3; ddof 1
    assert rows["probe"]["seed_range"] == pytest.approx(5.0)

    pair = paired(reports, "probe", "proto")
    differences = {0: [10.0, 0.0, 20.0], 1: [10.0, 20.0, 10.0], 2: [20.0, 10.0, 10.0]}   # the first 3 episodes
    for seed, d in differences.items():
        mean = sum(d) / 3
        half = stats.t.ppf(0.975, 2) * math.sqrt(sum((x - mean) ** 2 for x in d) / 2) / math.sqrt(3)
        assert pair["per_seed"][seed]["difference"] == pytest.approx(mean)
        assert pair["per_seed"][seed]["ci95"] == pytest.approx(half)
        assert pair["per_seed"][seed]["episodes"] == 3
    means = [10.0, 40 / 3, 40 / 3]
    grand = sum(means) / 3
    assert pair["mean"] == pytest.approx(grand)
    assert pair["seed_ci95"] == pytest.approx(
        stats.t.ppf(0.975, 2) * math.sqrt(sum((m - grand) ** 2 for m in means) / 2) / math.sqrt(3))
    assert paired(reports, "probe", "only in seed 1") is None
    assert paired(reports, "prob", "prot") == pair, "a result is named by the start of its name"
    with pytest.raises(ValueError, match="starts 2 results"):
        paired(reports, "pro", "probe")

    markdown = format_markdown(list(rows.values()), [pair], [0, 1, 2], "quick")
    assert "| probe (%) | 65.0 ± 1.0 | 65.0 ± 1.0 | 60.0 ± 1.0 | 63.33 | sd 2.89, range 5.00 |" in markdown
    assert "| proto minus probe | 10.0 ± 24.8 (3 ep.)" in markdown


def test_the_training_seed_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("COURSE_SEED", raising=False)
    assert runtime.training_seed() == 0
    monkeypatch.setenv("COURSE_SEED", "2")
    assert runtime.training_seed() == 2
    monkeypatch.setenv("COURSE_SEED", "-1")
    with pytest.raises(ValueError, match="whole number"):
        runtime.training_seed()


SEEDED = """
import torch
from course_lib import runtime
from course_lib.course import report
from course_lib.evaluate import EvalResult
torch.manual_seed(runtime.training_seed())
report.record("noisy", EvalResult("accuracy", torch.rand(5)), data="d")
report.record("fixed", EvalResult("accuracy", torch.full((5,), 0.5)), data="d")
"""


def test_run_seeds_runs_each_seed_and_writes_the_summary(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SEEDED)]), notebooks / "00_seeded.ipynb")
    assert run_seeds([0, 1], None, tmp_path / "out", timeout=60, pairs=[("fixed", "noisy")], folder=notebooks) == 0
    runs = {seed: json.loads((tmp_path / "out" / f"seed-{seed}" / "report.json").read_text()) for seed in (0, 1)}
    assert [runs[seed]["training_seed"] for seed in (0, 1)] == [0, 1]
    summary = json.loads((tmp_path / "out" / "seeds.json").read_text())
    rows = {row["name"]: row for row in summary["results"]}
    assert rows["fixed"]["seed_std"] == 0, "a result that does not depend on the seed has no spread"
    assert rows["noisy"]["seed_std"] > 0, "the kernels saw different training seeds"
    assert summary["paired"][0]["per_seed"]["0"]["episodes"] == 5
    assert "noisy minus fixed" in (tmp_path / "out" / "seeds.md").read_text()
    written = (tmp_path / "out" / "seed-1" / "report.json").stat().st_mtime_ns
    assert run_seeds([0, 1], None, tmp_path / "out", timeout=60, pairs=[("fixed", "noisy")], folder=notebooks) == 0
    assert (tmp_path / "out" / "seed-1" / "report.json").stat().st_mtime_ns == written, "finished seeds are kept"


def test_one_seed_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="at least two different seeds"):
        run_seeds([1, 1], None, tmp_path)


def test_another_training_seed_keeps_its_own_checkpoint(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CHECKPOINTS", str(tmp_path))
    monkeypatch.delenv("COURSE_SEED", raising=False)
    assert runtime.checkpoint_path("03_maml_omniglot.pt") == tmp_path / "03_maml_omniglot.pt"
    monkeypatch.setenv("COURSE_SEED", "1")
    assert runtime.checkpoint_path("03_maml_omniglot.pt") == tmp_path / "03_maml_omniglot-seed1.pt"
