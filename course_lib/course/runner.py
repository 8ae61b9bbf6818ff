"""The course's main job: run every lecture notebook in order and write a report.

``python -m course_lib run`` executes ``notebooks/NN_*.ipynb`` one by one, each in a fresh
kernel, on a profile (``quick`` by default: offline, CPU, small). Into a run folder
(``runs/<time>-<profile>/`` unless ``--out`` says otherwise) it writes the executed notebooks,
``report.md`` and ``report.json``: every headline number a notebook recorded (with its 95% CI
and the data it was measured on), and each notebook's run time. A failing notebook is named
with its cell; the notebooks after it still run (each starts in a fresh kernel), and at the end
every failure is listed again and the command exits non-zero.

``python -m course_lib run --rehearse`` rehearses the full profile: every notebook's full-profile code path
with the full configs' shapes, on the CPU (unless ``COURSE_DEVICE`` says otherwise), but each training run
stops after a few steps and each evaluation scores a few episodes (``runtime.rehearsing()``), floors are not
asserted, checkpoints go to a temporary folder that is deleted after the notebook (a rehearsal never leaves or
resumes one), and the hub is not asked (``HF_HUB_OFFLINE=1``: a model not cached here is replaced by the quick
profile's offline one, in one printed line). CI runs it (``tests/test_rehearsal.py``), so a broken full path fails
there rather than on Colab.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import nbformat

from .nbexec import NotebookCellError, execute_notebook
from ..progress import progress_bar
from ..runtime import get_profile, rehearsing

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"


@dataclass
class NotebookRun:
    notebook: str
    status: str = "not run"
    seconds: float = 0.0
    error: str = ""
    results: list[dict] = field(default_factory=list)


def select_notebooks(selection: list[str] | None, folder: Path = NOTEBOOKS) -> list[Path]:
    """The lecture notebooks in teaching order, or those whose name starts with a selection."""
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return found
    chosen = [p for p in found if any(p.stem.startswith(s) for s in selection)]
    unknown = [s for s in selection if not any(p.stem.startswith(s) for p in found)]
    if unknown:
        names = ", ".join(p.stem for p in found)
        raise SystemExit(f"no notebook matches {', '.join(unknown)}; the notebooks are: {names}")
    return chosen


def run_notebook(path: Path, out_dir: Path, env: dict[str, str], timeout: int, rehearse: bool = False) -> NotebookRun:
    """Execute one notebook in a fresh kernel; keep the executed copy and its recorded results.

    ``rehearse``: a rehearsal of the full profile, whose checkpoints go to a temporary folder of its own.
    """
    if rehearse:
        with tempfile.TemporaryDirectory(prefix="course-rehearsal-checkpoints-") as checkpoints:
            return run_notebook(path, out_dir, {**env, "COURSE_CHECKPOINTS": checkpoints}, timeout)
    run = NotebookRun(path.stem)
    records = out_dir / "records" / f"{path.stem}.jsonl"
    records.parent.mkdir(parents=True, exist_ok=True)
    records.unlink(missing_ok=True)
    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    try:
        executed = execute_notebook(nb, cwd=path.parent, timeout=timeout,
                                    env={**env, "COURSE_REPORT_FILE": str(records)})
        nbformat.write(executed, out_dir / "notebooks" / path.name)
        run.status = "passed"
    except NotebookCellError as error:
        if error.notebook is not None:   # kept with its error, for reading
            nbformat.write(error.notebook, out_dir / "notebooks" / path.name)
        run.status = "failed"
        run.error = (f"code cell {error.code_cell_number} (starts with {error.first_line!r}): "
                     f"{error.ename}: {error.evalue}")
    run.seconds = round(time.perf_counter() - started, 1)
    if records.exists():
        run.results = [json.loads(line) for line in records.read_text(encoding="utf-8").splitlines()]
    return run


def format_value(result: dict) -> str:
    ci = f" ± {result['ci95']:.1f}" if result.get("ci95") is not None else ""
    return f"{result['value']:.1f}{ci} {result['unit']}".strip()


def write_report(out_dir: Path, profile: str, runs: list[NotebookRun], rehearse: bool = False,
                 seed: int = 0) -> None:
    """``report.json`` (everything) and ``report.md`` (a table per notebook)."""
    (out_dir / "report.json").write_text(
        json.dumps({"profile": profile, "rehearsal": rehearse, "training_seed": seed,
                    "notebooks": [asdict(r) for r in runs]}, indent=2),
        encoding="utf-8")
    title = (f"# Course run ({profile} profile" + (f", training seed {seed}" if seed else "")
             + (", rehearsal: a few steps, the numbers mean nothing)" if rehearse else ")"))
    lines = [title, "",
             "| notebook | status | time (s) |", "| --- | --- | --- |"]
    lines += [f"| {r.notebook} | {r.status} | {r.seconds:.0f} |" for r in runs]
    lines += ["", "## Headline results", "",
              "| notebook | result | value (95% CI) | episodes | data |", "| --- | --- | --- | --- | --- |"]
    for r in runs:
        lines += [f"| {r.notebook} | {x['name']} | {format_value(x)} | {x.get('episodes') or ''} | {x['data']} |"
                  for x in r.results]
    failed = [r for r in runs if r.status == "failed"]
    if failed:
        lines += ["", "## Failures", ""] + [f"- {r.notebook}: {r.error}" for r in failed]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_course(profile: str | None = None, selection: list[str] | None = None,
               out_dir: Path | None = None, timeout: int = 1800, folder: Path = NOTEBOOKS,
               rehearse: bool = False, seed: int = 0) -> int:
    """Run the notebooks in order and write the report; return 0 if all passed, else 1.

    A failing notebook does not stop the run: the notebooks share no state (each has a fresh kernel and
    loads its own data), so the ones after it are still worth running, and every failure is named.
    ``rehearse``: rehearse the full profile (see the module docstring); the profile must be full or None.
    ``seed``: the notebooks' training seed (``COURSE_SEED``, :func:`course_lib.runtime.training_seed`).
    """
    rehearse = rehearse or rehearsing()   # --rehearse, or COURSE_REHEARSE=1 as for a single notebook
    if rehearse and profile not in (None, "full"):
        raise SystemExit(f"--rehearse rehearses the full profile, not {profile!r}: leave out --profile "
                         "or give --profile full")
    profile = "full" if rehearse else get_profile(profile).name
    notebooks = select_notebooks(selection, folder)
    kind = f"{profile}-rehearsal" if rehearse else profile
    kind += f"-seed{seed}" if seed else ""
    out_dir = out_dir or REPO / "runs" / f"{datetime.now():%Y%m%d-%H%M%S}-{kind}"
    if (out_dir / "notebooks").resolve() == folder.resolve():
        raise SystemExit(f"--out {out_dir} would write the executed notebooks over the stored ones in {folder}: "
                         "choose another folder")
    (out_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    env = {"COURSE_PROFILE": profile, "COURSE_PROGRESS": "0", "COURSE_REHEARSE": "1" if rehearse else "0",
           "COURSE_SEED": str(seed)}
    if rehearse:   # the CPU unless asked otherwise; the hub's cache only, so that a missing model fails at once
        env.update(COURSE_DEVICE=os.environ.get("COURSE_DEVICE", "cpu"), HF_HUB_OFFLINE="1")
    if os.environ.get("COURSE_DATA"):
        env["COURSE_DATA"] = str(Path(os.environ["COURSE_DATA"]).resolve())
    shown = out_dir.relative_to(REPO) if out_dir.is_relative_to(REPO) else out_dir.name
    print(f"running {len(notebooks)} notebook(s) on the {profile} profile"
          f"{' (rehearsal: a few steps of each run, on ' + env['COURSE_DEVICE'] + ')' if rehearse else ''} into {shown}/")
    runs: list[NotebookRun] = []
    bar = progress_bar(notebooks, desc="notebooks", unit="nb")
    for path in bar:
        bar.set_postfix_str(path.stem)
        run = run_notebook(path, out_dir, env, timeout, rehearse)
        runs.append(run)
        bar.write(f"{run.status:>6}  {run.notebook}  {run.seconds:.0f} s"
                  + "".join(f"\n        {x['name']}: {format_value(x)}" for x in run.results))
        write_report(out_dir, profile, runs, rehearse, seed)
    bar.close()
    failed = [run for run in runs if run.status == "failed"]
    if failed:
        print(f"\n{len(failed)} of {len(runs)} notebook(s) FAILED:")
        print("\n".join(f"  {run.notebook}: {run.error}" for run in failed))
        print(f"report: {shown}/report.md")
        return 1
    print(f"all {len(runs)} notebook(s) passed; report: {shown}/report.md")
    return 0
