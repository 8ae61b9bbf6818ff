"""The GPU check: CUDA tests, one full-profile meta-step of each algorithm, the MAML speed table; one markdown table.

    benchmarks/gpu_check.sh [OUT.md]              # on a CUDA machine, at most 8 minutes (default gpu_check.md)
    benchmarks/gpu_check.sh --cpu-dry-run [OUT.md]  # the same steps at tiny sizes on the CPU (CI tests this)

Rows of the table, in order:
1. ``pytest -m cuda tests/test_cuda.py``: passed/failed/skipped counts (on a GPU a skip is a failure).
2. One meta-step of each notebook's full-profile configuration (the shapes of 03, 04, 05; 06 reuses them) through
   the one training loop (``course_lib.train``, with the mixed precision ``runtime`` picks for the device):
   seconds per step after a warm-up step and peak memory (``torch.cuda.max_memory_allocated``; on the CPU dry
   run, the process's peak resident memory). Inputs are random images of Omniglot's shape: speed and memory do
   not depend on the pixels. The text notebooks (07-09) are not here: their full profile loads hub models.
3. ``benchmarks/maml_speed.py --device cuda``: per-task loop (course_lib), vmap (course_lib-vmap), the plain
   loop and higher, second and first order, 1 and 5 inner steps; each row's meta-gradient is checked against
   the plain loop's before it is timed.
The script exits non-zero if any row failed; the table is written either way.
"""
from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F

from course_lib import MAML, ConvNet, EpisodeSampler, MLP, Reptile, SinusoidTasks, TrainConfig, protonet, train
from course_lib.data.base import ClassDataset
from course_lib.meta import maml as maml_module
from course_lib.meta import reptile as reptile_module

REPO = Path(__file__).resolve().parents[1]
SPEED_ROW = re.compile(r"^(?P<order>second|first)\s+(?P<inner>\d+)\s+(?P<variant>\S+)\s+(?P<rest>.*)$")


@dataclass
class Row:
    step: str
    what: str
    ok: bool
    result: str
    seconds: str = ""
    memory_mb: str = ""


@dataclass
class MetaStep:
    """One notebook's full-profile learner, loss and batch sampler, at full (or dry-run) sizes."""

    notebook: str
    what: str
    build: Callable[[], tuple[torch.nn.Module, Callable, Callable[[torch.Generator], object], TrainConfig]]


def meta_steps(dry_run: bool) -> list[MetaStep]:
    """The notebooks' full-profile configurations; ``dry_run`` shrinks the meta-batch, ways and inner steps."""
    omniglot = ClassDataset.random(100)
    maml_tasks, sine_tasks, reptile_tasks = (2, 2, 2) if dry_run else (32, 25, 5)
    reptile_steps, proto_way = (2, 10) if dry_run else (5, 60)

    def maml_omniglot(first_order: bool, batched: bool):
        def build():
            learner = MAML(ConvNet(n_classes=5, explicit_batch_norm=batched), inner_lr=0.4, inner_steps=1,
                           first_order=first_order, batched=batched)
            sampler = EpisodeSampler(omniglot, 5, 1, 15)
            return learner, maml_module.loss, lambda g: sampler.sample_batch(maml_tasks, g), TrainConfig(steps=1)
        return build

    def maml_sinusoid():
        learner = MAML(MLP(), inner_lr=0.01, inner_steps=1, task_loss=F.mse_loss)
        sinusoids = SinusoidTasks(k_shot=10, n_query=10)
        return learner, maml_module.loss, lambda g: sinusoids.sample_batch(sine_tasks, g), TrainConfig(steps=1)

    def reptile_omniglot():
        learner = Reptile(ConvNet(n_classes=5), inner_lr=1e-3, inner_steps=reptile_steps, inner_batch_size=10)
        sampler = EpisodeSampler(omniglot, 5, 10, n_query=1)
        return (learner, reptile_module.loss, lambda g: sampler.sample_batch(reptile_tasks, g),
                TrainConfig(steps=1, optimizer="sgd", lr=1.0))

    def protonet_omniglot():
        sampler = EpisodeSampler(omniglot, proto_way, 1, n_query=5)
        return ConvNet(), protonet.loss, lambda g: sampler.sample_batch(1, g), TrainConfig(steps=1)

    return [
        MetaStep("03", f"MAML sinusoid, K=10, meta-batch {sine_tasks}", maml_sinusoid),
        MetaStep("03", f"MAML Omniglot 5-way 1-shot, second order, per-task loop, meta-batch {maml_tasks}",
                 maml_omniglot(False, False)),
        MetaStep("03", f"MAML Omniglot 5-way 1-shot, second order, vmap, meta-batch {maml_tasks}",
                 maml_omniglot(False, True)),
        MetaStep("03", f"first-order MAML Omniglot 5-way 1-shot, meta-batch {maml_tasks}", maml_omniglot(True, False)),
        MetaStep("04", f"Reptile Omniglot 5-way 10-shot, {reptile_steps} Adam steps, meta-batch {reptile_tasks}",
                 reptile_omniglot),
        MetaStep("05", f"ProtoNet Omniglot {proto_way}-way 1-shot, 5 queries", protonet_omniglot),
    ]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_meta_step(step: MetaStep, device: torch.device, timed_steps: int) -> Row:
    """A warm-up step, then ``timed_steps`` steps of the training loop; seconds per step and peak memory."""
    name = f"{step.notebook} meta-step"
    try:
        model, loss_fn, sample, config = step.build()
        model = model.to(device)
        train(model, loss_fn, sample, replace(config, steps=1, progress=False, log_every=1))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        history = train(model, loss_fn, sample, replace(config, steps=timed_steps, progress=False, log_every=1))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - started) / timed_steps
        loss = history.last("loss")
    except Exception as error:  # a row of the table says what broke; the other rows still run
        return Row(name, step.what, False, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}")
    finite = torch.isfinite(torch.tensor(loss)).item()
    return Row(name, step.what, finite, f"loss {loss:.3f}" if finite else f"non-finite loss {loss}",
               f"{seconds:.3f}", f"{peak_memory_mb(device):.0f}")


def cuda_tests(dry_run: bool) -> Row:
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
    counts = dict((word, int(n)) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", summary))
    ok = done.returncode == 0 and (dry_run or (counts.get("passed", 0) > 0 and "skipped" not in counts))
    if not ok and done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-2000:], file=sys.stderr)
    return Row("CUDA tests", "pytest -m cuda tests/test_cuda.py", ok, f"{summary} ({seconds:.0f} s in all)")


def speed_rows(printed: str) -> list[Row]:
    """The rows of ``maml_speed.py``'s table; a row whose gradient differs from the plain loop's, or that
    failed, is not ok."""
    rows = []
    for line in printed.splitlines():
        match = SPEED_ROW.match(line)
        if not match:
            continue
        # tasks/s, s/step, peak MB, GFLOP/s, then the gradient verdict; or four dashes and the error
        fields = match["rest"].split(maxsplit=4)
        what = f"{match['variant']}, {match['order']} order, {match['inner']} inner step(s)"
        if fields[0] == "-":
            rows.append(Row("MAML speed", what, False, fields[-1][:120]))
            continue
        tasks_per_s, seconds, memory, _, verdict = fields
        rows.append(Row("MAML speed", what, verdict == "same", f"{tasks_per_s} tasks/s, gradient {verdict}",
                        seconds, memory))
    return rows


def speed_table(dry_run: bool, device: str) -> list[Row]:
    # The plain loop always runs first: it is the reference every other variant's gradient is checked against.
    variants = ["course_lib", "higher"] if dry_run else ["course_lib", "course_lib-vmap", "plain-loop", "higher"]
    command = [sys.executable, str(REPO / "benchmarks" / "maml_speed.py"), "--device", device,
               "--variants", *variants, *["--smoke"] * dry_run]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    rows = speed_rows(done.stdout)
    if done.returncode != 0 or not rows:
        reason = (done.stderr.strip().splitlines() or ["no rows printed"])[-1]
        rows.append(Row("MAML speed", "benchmarks/maml_speed.py", False, reason[:160]))
    return rows


def markdown(rows: list[Row], header: str) -> str:
    lines = [header, "", "Peak MB: `torch.cuda.max_memory_allocated` on CUDA (meta-steps: since the warm-up step; speed rows: "
             "above the memory before the first step); on the CPU the process's peak resident memory.", "",
             "| step | what | ok | result | s/step | peak MB |", "|---|---|---|---|---:|---:|"]
    for row in rows:
        cells = [row.step, row.what, "yes" if row.ok else "**NO**", row.result, row.seconds, row.memory_mb]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", default="gpu_check.md", help="the markdown file to write")
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same steps at tiny sizes on the CPU")
    args = parser.parse_args(argv)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible to torch here; run it on a GPU machine, "
              "or use --cpu-dry-run to test the script on the CPU.", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    where = "CPU dry run (tiny sizes)" if args.cpu_dry_run else torch.cuda.get_device_name(device)
    started = time.perf_counter()

    def write(rows: list[Row]) -> None:
        """Rewrite the table after every step, so a run cut short by the time limit still leaves its rows."""
        header = (f"GPU check on {where}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s "
                  f"(benchmarks/gpu_check.sh)")
        Path(args.out).write_text(markdown(rows, header))

    rows = [cuda_tests(args.cpu_dry_run)]
    write(rows)
    for step in meta_steps(args.cpu_dry_run):
        rows.append(run_meta_step(step, device, timed_steps=1 if args.cpu_dry_run else 3))
        write(rows)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rows += speed_table(args.cpu_dry_run, device.type)
    write(rows)
    failed = [row for row in rows if not row.ok]
    print(f"gpu_check: wrote {args.out}: {len(rows) - len(failed)} of {len(rows)} rows ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
