"""Training seeds: the notebooks' headline results rerun with other seeds, on the same test episodes.

Every interval a notebook prints covers its test episodes for *one* trained model. A second training seed (other
initial weights, another order of training tasks) moves the number too, and by how much the episode interval does
not say. ``python -m course_lib seeds --seeds 0 1 2 --notebooks 02 03 04 05 06`` runs the notebooks once per seed
(``COURSE_SEED``, read by :func:`course_lib.runtime.training_seed`; the test episodes keep their fixed seeds), each
into ``OUT/seed-N/`` as ``python -m course_lib run`` would, then writes ``OUT/seeds.md`` and ``OUT/seeds.json``:

* for every result recorded under every seed: the value per seed with its episode interval, the mean over seeds,
  and the spread between seeds (their standard deviation and range);
* for each pair of results compared (:data:`PAIRS`): per seed, the paired difference over the episodes both
  scored, with its episode interval; over seeds, the mean of those differences and its 95% interval from the
  seeds alone (Student's t with ``seeds - 1`` degrees of freedom: wide with 3 seeds, and honest about it).

Pairing needs the same episodes: the course draws each split's test episodes as one fixed sequence
(``fixed_episodes(..., seed=0)``), and a notebook that scores fewer episodes scores the first ones, so two results
are paired over their common first episodes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from ..evaluate import mean_confidence_interval

# (first, second): the second minus the first, each the start of a result's name (06's names end in its budget,
# which differs between profiles). Both on the same fixed 5-way 1-shot test episodes: 02's probe against 05's
# ProtoNet and 04's Reptile (all three not transductive), 06's methods at equal training FLOPs, and 03's MAML
# against MAML++ (an exact name is not also the start of a longer one: "MAML++" is not "MAML++, per-step ...").
PAIRS: tuple[tuple[str, str], ...] = (
    ("Omniglot 5-way 1-shot, pretrained + linear probe", "ProtoNet, 5-way 1-shot, not transductive"),
    ("Omniglot 5-way 1-shot, pretrained + linear probe", "Omniglot 5-way 1-shot, Reptile (non-transductive)"),
    ("Omniglot 5-way 1-shot, transfer + linear probe,", "Omniglot 5-way 1-shot, ProtoNet,"),
    ("Omniglot 5-way 1-shot, transfer + linear probe,", "Omniglot 5-way 1-shot, Reptile,"),
    ("Omniglot 5-way 1-shot, MAML,", "Omniglot 5-way 1-shot, Proto-MAML,"),
    ("Omniglot 5-way 1-shot, MAML (second order)", "Omniglot 5-way 1-shot, MAML++"),   # 03, both transductive
)


def _mean_and_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t interval (:func:`course_lib.evaluate.mean_confidence_interval`;
    None for a single value)."""
    if len(values) < 2:
        return float(values[0]), None
    return mean_confidence_interval(values)


def results_by_name(report: dict) -> dict[str, dict]:
    """The recorded results of one run's ``report.json``, by name."""
    return {result["name"]: result for run in report["notebooks"] for result in run["results"]}


def summarise(reports: dict[int, dict]) -> list[dict]:
    """One row per result recorded under every seed of ``reports`` (``{seed: report.json}``), in the order of the
    first seed's report: ``per_seed`` values and episode intervals, ``mean`` over seeds, ``seed_std`` (ddof 1) and
    ``seed_range`` (max - min)."""
    by_seed = {seed: results_by_name(report) for seed, report in reports.items()}
    first = by_seed[min(by_seed)]
    rows = []
    for name, result in first.items():
        if not all(name in results for results in by_seed.values()):
            continue
        values = [by_seed[seed][name]["value"] for seed in sorted(by_seed)]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        rows.append({"name": name, "unit": result["unit"], "episodes": result.get("episodes"),
                     "per_seed": {seed: {"value": by_seed[seed][name]["value"], "ci95": by_seed[seed][name]["ci95"]}
                                  for seed in sorted(by_seed)},
                     "mean": mean, "seed_std": std, "seed_range": max(values) - min(values)})
    return rows


def _named(results: dict[str, dict], start: str) -> dict | None:
    """The result named ``start`` exactly, else the one whose name starts with ``start``; None if there is none;
    two that start with it (and none named exactly) are an error."""
    if start in results:
        return results[start]
    found = [result for name, result in results.items() if name.startswith(start)]
    if len(found) > 1:
        raise ValueError(f"{start!r} starts {len(found)} results' names: {[r['name'] for r in found]}")
    return found[0] if found else None


def paired(reports: dict[int, dict], first: str, second: str) -> dict | None:
    """``second - first`` per seed over their common first episodes (mean and episode interval), and over seeds
    (mean and seed interval); ``first`` and ``second`` are the starts of the results' names. None when a seed
    lacks either result or its per-episode values."""
    per_seed = {}
    for seed in sorted(reports):
        results = results_by_name(reports[seed])
        a, b = (_named(results, start) or {} for start in (first, second))
        first_name, second_name = a.get("name", first), b.get("name", second)
        a, b = a.get("values"), b.get("values")
        if not a or not b:
            return None
        n = min(len(a), len(b))
        mean, half = _mean_and_interval([y - x for x, y in zip(a[:n], b[:n])])
        per_seed[seed] = {"difference": mean, "ci95": half, "episodes": n}
    mean, half = _mean_and_interval([row["difference"] for row in per_seed.values()])
    return {"first": first_name, "second": second_name, "per_seed": per_seed, "mean": mean, "seed_ci95": half}


def _interval(value: float, half: float | None) -> str:
    return f"{value:.1f}" if half is None else f"{value:.1f} ± {half:.1f}"


def format_markdown(rows: list[dict], pairs: list[dict], seeds: Sequence[int], profile: str) -> str:
    """``seeds.md``: the spread between seeds, then the paired comparisons."""
    seeds = sorted(seeds)
    lines = [f"# Training seeds ({profile} profile): {', '.join(map(str, seeds))}", "",
             "Each value: one training seed, with its 95% interval over the test episodes (the same episodes for every "
             "seed). Spread: the standard deviation of the values between seeds, and their range.", "",
             "| result | " + " | ".join(f"seed {s}" for s in seeds) + " | mean over seeds | spread between seeds |",
             "| --- | " + " | ".join("---" for _ in seeds) + " | --- | --- |"]
    for row in rows:
        cells = [_interval(row["per_seed"][s]["value"], row["per_seed"][s]["ci95"]) for s in seeds]
        spread = "" if row["seed_std"] is None else f"sd {row['seed_std']:.2f}, range {row['seed_range']:.2f}"
        lines.append(f"| {row['name']} ({row['unit']}) | " + " | ".join(cells) + f" | {row['mean']:.2f} | {spread} |")
    if pairs:
        lines += ["", "## Paired differences (second minus first, points)", "",
                  "Per seed: the mean difference over the episodes both scored, with its 95% episode interval. "
                  "Over seeds: the mean of the per-seed differences, with a 95% interval from the seeds alone "
                  f"(t with {len(seeds) - 1} degrees of freedom).", "",
                  "| second minus first | " + " | ".join(f"seed {s}" for s in seeds) + " | over seeds |",
                  "| --- | " + " | ".join("---" for _ in seeds) + " | --- |"]
        for pair in pairs:
            cells = [_interval(pair["per_seed"][s]["difference"], pair["per_seed"][s]["ci95"])
                     + f" ({pair['per_seed'][s]['episodes']} ep.)" for s in seeds]
            lines.append(f"| {pair['second']} minus {pair['first']} | " + " | ".join(cells)
                         + f" | {_interval(pair['mean'], pair['seed_ci95'])} |")
    return "\n".join(lines) + "\n"


def write_seed_report(out_dir: Path, reports: dict[int, dict], pairs: Sequence[tuple[str, str]] = PAIRS) -> str:
    """Write ``seeds.json`` and ``seeds.md`` for ``reports`` (``{seed: report.json}``) into ``out_dir``; return the
    markdown."""
    rows = summarise(reports)
    compared = [p for p in (paired(reports, first, second) for first, second in pairs) if p is not None]
    profile = next(iter(reports.values()))["profile"]
    markdown = format_markdown(rows, compared, list(reports), profile)
    (out_dir / "seeds.json").write_text(json.dumps({"profile": profile, "seeds": sorted(reports), "results": rows,
                                                    "paired": compared}, indent=2), encoding="utf-8")
    (out_dir / "seeds.md").write_text(markdown, encoding="utf-8")
    return markdown


def _finished(run_dir: Path, seed: int, notebooks: list[str]) -> bool:
    """Whether ``run_dir`` holds a run with training seed ``seed`` in which all of ``notebooks`` passed."""
    try:
        report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    passed = {run["notebook"] for run in report["notebooks"] if run["status"] == "passed"}
    return report.get("training_seed", 0) == seed and not report.get("rehearsal") and set(notebooks) <= passed


def run_seeds(seeds: Sequence[int], selection: list[str] | None, out_dir: Path, timeout: int = 1800,
              pairs: Sequence[tuple[str, str]] = PAIRS, folder: Path | None = None) -> int:
    """Run the selected notebooks (of ``folder``, default the course's) once per training seed into
    ``out_dir/seed-N`` and write the seed report; return 0 if every run passed, else 1 (the report then covers
    the results recorded under every seed). A seed whose folder already holds a finished run of these notebooks
    with that seed (all passed) is kept, not rerun: an interrupted command resumes, and seed 0 can come from a
    plain ``python -m course_lib run --out OUT/seed-0``."""
    from .runner import NOTEBOOKS, run_course, select_notebooks

    if len(set(seeds)) < 2:
        raise SystemExit(f"--seeds needs at least two different seeds to measure a spread, got {list(seeds)}")
    status = 0
    for seed in seeds:
        if _finished(out_dir / f"seed-{seed}", seed, [path.stem for path in select_notebooks(selection, folder or NOTEBOOKS)]):
            print(f"seed {seed}: kept the finished run in {out_dir.name}/seed-{seed}/")
            continue
        status |= run_course(selection=selection, out_dir=out_dir / f"seed-{seed}", timeout=timeout,
                             folder=folder or NOTEBOOKS, seed=seed)
    reports = {seed: json.loads((out_dir / f"seed-{seed}" / "report.json").read_text(encoding="utf-8"))
               for seed in seeds}
    print(write_seed_report(out_dir, reports, pairs))
    return status
