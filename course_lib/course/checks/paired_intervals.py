"""Checkers of exercise set 06_paired_intervals: is the difference between two methods real?

Each checker calls the learner's function on known cases under a time limit and raises
``AssertionError`` with a message that names the mistake, or prints what passed.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import time_limit, _fail, _fail_naming_the_mistake


def _t_quantile(n: int) -> float:
    from scipy import stats
    return float(stats.t.ppf(0.975, n - 1))


def _accuracies(generator: torch.Generator, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-episode accuracies of two methods that share most of their variation (hard episodes are hard for
    both): ``b = a + 0.03 + small noise``, clipped to [0, 1]."""
    difficulty = torch.rand(n, generator=generator, dtype=torch.float64)
    a = (0.4 + 0.5 * difficulty + 0.05 * torch.randn(n, generator=generator, dtype=torch.float64)).clamp(0, 1)
    b = (a + 0.03 + 0.04 * torch.randn(n, generator=generator, dtype=torch.float64)).clamp(0, 1)
    return a, b


def check_paired_difference(paired_difference: Callable, seconds: float = 10) -> None:
    """Check ``paired_difference(a [n], b [n]) -> (mean, half_width)``: the mean of ``b - a`` over the same
    episodes and the half-width of its 95% interval, Student's t with ``n - 1`` degrees of freedom on the
    per-episode differences: ``t_{0.975, n-1} * std(b - a, ddof=1) / sqrt(n)``."""
    name = "paired_difference"
    generator = torch.Generator().manual_seed(0)
    a, b = _accuracies(generator)
    originals = a.clone(), b.clone()
    n = len(a)
    d = b - a
    mean, t = d.mean().item(), _t_quantile(n)
    right = t * d.std().item() / n ** 0.5
    unpaired = t * (a.var() / n + b.var() / n).sqrt().item()
    sorted_d = b.sort().values - a.sort().values
    mistakes = [
        (unpaired, "that is the unpaired interval, sqrt(var(a)/n + var(b)/n): pair the episodes, take the "
                   "interval of the per-episode differences b - a"),
        (t * a.std().item() / n ** 0.5 + t * b.std().item() / n ** 0.5,
         "adding the two methods' half-widths ignores that they were measured on the same episodes"),
        (1.959964 * d.std().item() / n ** 0.5, "use Student's t with n - 1 degrees of freedom, not the normal quantile"),
        (t * d.std(correction=0).item() / n ** 0.5, "the standard deviation of a sample divides by n - 1 (ddof=1)"),
        (t * d.std().item(), "divide the standard deviation by sqrt(n): the interval is for the mean difference"),
        (t * sorted_d.std().item() / n ** 0.5, "do not sort the accuracies: the pairs are episode by episode"),
    ]
    with time_limit(seconds, name):
        got = paired_difference(a, b)
        if not (isinstance(got, tuple) and len(got) == 2):
            _fail(name, "should return a tuple (mean difference, half-width)")
        if not (torch.equal(a, originals[0]) and torch.equal(b, originals[1])):
            _fail(name, "the inputs were changed in place (a sort() in place breaks the pairs, too)")
        got_mean, got_half = (float(v) for v in got)
        if abs(got_mean + mean) < 1e-9 and abs(mean) > 1e-6:
            _fail(name, "the difference is b - a (the second method minus the first), not a - b")
        if abs(got_mean - mean) > 1e-9:
            _fail(name, f"the mean difference should be mean(b - a) = {mean:.4f}, got {got_mean:.4f}")
        if abs(got_half - right) > 1e-9:
            _fail_naming_the_mistake(name, lambda wrong: abs(got_half - wrong) < 1e-9, mistakes,
                                     "expected t_{0.975, n-1} * std(b - a, ddof=1) / sqrt(n)")
        if got_half >= unpaired:
            _fail(name, "with shared episode difficulty, the paired interval should be narrower than the unpaired one")
        try:
            paired_difference(a, b[:-1])
        except (ValueError, AssertionError, RuntimeError, IndexError):
            pass
        else:
            _fail(name, "a and b of different lengths cannot be paired: raise a ValueError")
    print(f"{name}: all checks passed")
