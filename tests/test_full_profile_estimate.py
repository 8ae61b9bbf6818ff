"""The full-profile estimate: a table of every run, FLOPs that scale with the work, hours bounded as documented."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "full_profile_estimate.py"


@pytest.fixture(scope="module")
def estimate():
    spec = importlib.util.spec_from_file_location("full_profile_estimate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def quick_rows():
    """The ``--quick`` table's rows, each as its 7 cells."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Estimate, not a measurement" in done.stdout
    rows = [line for line in done.stdout.splitlines() if re.match(r"^\| 0[3-9] ", line)]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_quick_table_has_a_row_per_run_with_positive_flops_and_ordered_ranges(quick_rows):
    notebooks = [cells[0].split()[0] for cells in quick_rows]
    assert notebooks == ["03"] * 3 + ["04", "05"] + ["06"] * 6 + ["07"] + ["08"] * 6 + ["09"], quick_rows
    for cells in quick_rows:
        assert len(cells) == 7, cells
        gflop, pflop, memory = (float(cell.replace(",", "")) for cell in cells[2:5])
        assert gflop > 0 and pflop > 0 and memory >= 0, cells
        for hours in cells[5:]:
            low, high = (float(h) for h in hours.split(" to "))
            assert 0 < low <= high, cells


def test_every_06_method_gets_the_steps_its_flop_budget_buys(quick_rows):
    """06's rule: steps = budget // FLOPs of one step, for each of its six trained methods (Proto-MAML included)."""
    rows = {cells[0]: cells for cells in quick_rows if cells[0].startswith("06 ")}
    assert "06 first-order Proto-MAML, meta-batch 4" in rows, list(rows)
    for name, cells in rows.items():
        steps, budget = re.fullmatch(r"([\d,]+) \((\S+) FLOPs\)", cells[1]).groups()
        steps, budget, step_flops = int(steps.replace(",", "")), float(budget), 1e9 * float(cells[2])
        assert budget == 4e11, name
        # GFLOP per step is printed to three significant digits: 0.5% either way
        assert steps * step_flops * 0.995 <= budget < (steps + 1) * step_flops * 1.005, name


def test_doubling_the_meta_batch_doubles_maml_step_flops(estimate):
    two, four = (estimate.maml_omniglot_03(quick=True, meta_batch=n) for n in (2, 4))
    assert four.step.flops / two.step.flops == pytest.approx(2.0, rel=0.05)
    assert four.memory_mb > two.memory_mb


def test_hours_are_the_larger_of_arithmetic_and_launch_time_training_plus_evaluation(estimate):
    arithmetic = estimate.Run("a", steps=3600, step=estimate.StepCost(flops=1e12, operators=1, seconds=0.0),
                              memory_mb=0.0)
    assert arithmetic.hours(peak=1e12, utilisation=0.5) == pytest.approx(2.0)   # 2 s a step, 3600 steps
    launches = estimate.Run("b", steps=3600, step=estimate.StepCost(flops=1.0, operators=100_000, seconds=0.0),
                            memory_mb=0.0)
    assert launches.hours(peak=1e12, utilisation=0.5) == pytest.approx(100_000 * estimate.LAUNCH_SECONDS)
    evaluated = estimate.Run("c", steps=3600, step=arithmetic.step, memory_mb=0.0,
                             evaluation=estimate.StepCost(flops=1e12, operators=1, seconds=0.0), evaluations=1800)
    assert evaluated.hours(peak=1e12, utilisation=0.5) == pytest.approx(2.0 + 1.0)  # training + evaluation


def test_validations_follow_the_training_loop(estimate):
    assert estimate.validations(60_000, 30_000) == 2
    assert estimate.validations(100_000, 30_000) == 4   # 30k, 60k, 90k and after the last step
    assert estimate.validations(500, 0) == 1
