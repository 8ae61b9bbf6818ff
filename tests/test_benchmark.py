"""The speed benchmark runs end to end in its smoke mode, and every variant computes the same meta-gradient."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "maml_speed.py"


def test_benchmark_smoke_mode_checks_gradients_and_prints_a_table():
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--variants", "course_lib", "higher"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("second", "first"))]
    assert len(rows) == 2 * 3, done.stdout  # the plain loop (the reference) and the two variants
    assert all(line.rstrip().endswith("same") for line in rows), done.stdout
    assert "episodes/s" in done.stdout
