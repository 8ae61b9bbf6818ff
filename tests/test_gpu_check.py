"""benchmarks/gpu_check.sh: stops at once without a GPU, and its CPU dry run goes through every step."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_check import speed_rows  # noqa: E402

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without CUDA")


@no_gpu
def test_without_a_gpu_it_stops_at_once_with_one_sentence(tmp_path):
    done = subprocess.run([str(SCRIPT), str(tmp_path / "table.md")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no CUDA GPU" in done.stderr and "--cpu-dry-run" in done.stderr
    assert not (tmp_path / "table.md").exists()


@no_gpu
def test_the_speed_benchmark_refuses_cuda_where_there_is_none():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "maml_speed.py"), "--device", "cuda"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "CUDA is not available" in done.stderr


def test_cpu_dry_run_writes_one_table_with_every_step(tmp_path):
    out = tmp_path / "table.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(SCRIPT), "--cpu-dry-run", str(out)], capture_output=True, text=True, timeout=240,
                          env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and not line.startswith("| step")]
    steps = [row.split(" | ")[0].lstrip("| ") for row in rows]
    assert steps[0] == "CUDA tests" and "skipped" in rows[0]          # the cuda tests skip on the CPU
    assert sorted({s for s in steps if s.endswith("meta-step")}) == ["03 meta-step", "04 meta-step", "05 meta-step"]
    assert steps.count("MAML speed") == 2 * 3                         # plain loop, course_lib, higher; 2 orders
    assert all(" | yes | " in row for row in rows), rows
    assert "| **NO** |" not in out.read_text()


def test_a_speed_row_whose_gradient_differs_or_that_failed_is_not_ok():
    printed = "\n".join([
        "second      1  plain-loop            23.76    0.08        0      2.1  same",
        "second      1  course_lib-vmap       15.41    0.13        0      3.0  DIFFERS (2.0e-03)",
        "first       1  higher                   -       -        -        -  CUDA out of memory",
    ])
    rows = speed_rows(printed)
    assert [row.ok for row in rows] == [True, False, False]
    assert "DIFFERS" in rows[1].result and rows[2].result == "CUDA out of memory"
    assert rows[0].seconds == "0.08" and rows[0].what == "plain-loop, second order, 1 inner step(s)"
