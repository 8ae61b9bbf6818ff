"""Headline numbers: what a notebook records for the course report.

Introduced in 01_few_shot_problem. A notebook calls :func:`record` for each result worth a
line in the report; the runner (``python -m course_lib run``) sets ``COURSE_REPORT_FILE`` for
each notebook and collects the records into the run's report.
"""
from __future__ import annotations

import json
import os

from .. import runtime
from ..evaluate import EvalResult


def record(name: str, result: EvalResult | float, *, data: str, unit: str = "",
           ci95: float | None = None) -> None:
    """Record a headline number with its 95% CI and the data it was measured on.

    ``result`` is an :class:`EvalResult` (mean and CI are taken from it, and its per-episode values are kept
    as ``values``) or a plain value with an optional ``ci95``. Accuracies are stored in percent. Prints the
    line it records and, when ``COURSE_REPORT_FILE`` is set, appends it there as one JSON line.
    """
    if isinstance(result, EvalResult):
        scale = 100.0 if result.metric == "accuracy" else 1.0
        value, ci95 = scale * result.mean, scale * result.ci95
        unit = unit or ("%" if result.metric == "accuracy" else result.metric)
        episodes = len(result.values)
        values = [round(scale * float(v), 4) for v in result.values]
    else:
        value, episodes, values = float(result), None, None
    entry = {"name": name, "value": round(float(value), 4), "ci95": None if ci95 is None else round(float(ci95), 4),
             "unit": unit, "episodes": episodes, "data": data}
    if values is not None:   # per episode, in the entry's unit: what pairs two results on the same episodes
        entry["values"] = values
    path = os.environ.get("COURSE_REPORT_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
    ci = f" ± {ci95:.2f}" if ci95 is not None else ""
    print(f"[report] {name}: {value:.2f}{ci} {unit} ({data})")


def record_paired_gain(name: str, after: EvalResult, before: EvalResult, *, data: str) -> EvalResult:
    """Record ``after - before`` measured on the same episodes: the mean of the per-episode differences and its
    95% CI (a paired interval, narrower than the two intervals side by side when the episodes' difficulty is
    shared). Accuracies are stored in percentage points. Returns the differences as an :class:`EvalResult`.

    Raises ``ValueError`` when the two results are of different metrics or numbers of episodes: a difference of
    unpaired results is not a paired gain.
    """
    if after.metric != before.metric or len(after.values) != len(before.values):
        raise ValueError(f"a paired gain needs two results on the same episodes; got {len(after.values)} episodes of "
                         f"{after.metric} and {len(before.values)} of {before.metric}")
    gain = EvalResult(after.metric, after.values - before.values)
    record(name, gain, data=data, unit="points" if after.metric == "accuracy" else "")
    return gain


def assert_floor(name: str, result: EvalResult, *, real: float, standin: float, real_data: bool) -> None:
    """Assert that an accuracy is at least its floor, and say which set of floors applied.

    Floors are measured separately on the real data that CI reads (``real``) and on the offline
    stand-in (``standin``), as fractions; ``real_data`` is the evaluation dataset's ``real`` flag.
    Asserted through :func:`assert_result`, so not in a rehearsal.
    """
    floor, kind = (real, "real data") if real_data else (standin, "the offline stand-in")
    holds = result.mean >= floor
    print(f"floor for {name} on {kind}: {100 * floor:.0f}%; measured {result}: {'holds' if holds else 'FAILS'}")
    assert_result(holds, f"{name}: {100 * result.mean:.1f}% is below its floor of {100 * floor:.0f}% on {kind}")


def assert_result(holds: bool, message: str) -> None:
    """Assert what a notebook's training must achieve (``holds``; ``message`` says what failed), e.g.
    ``assert_result(error < 0.35, "the transformer should learn from its context")``.

    A rehearsal of the full profile (``runtime.rehearsing()``) trains a few steps only, so there nothing
    learned can be asserted: it prints that the check was skipped. Checks of what holds whatever the training
    (shapes, identities) stay plain ``assert`` statements.
    """
    if runtime.rehearsing():
        if not holds:
            print(f"not asserted in a rehearsal (a few training steps): {message}")
        return
    assert holds, message
