"""What a training step costs: the memory autograd holds for the backward pass, and time.

Used in 03_maml, 04_reptile and 06_head_to_head to compare algorithms on the same batch.
A CPU process's peak resident memory never goes down, so it cannot tell apart two methods
measured one after the other in one notebook; :func:`peak_saved_megabytes` counts what each
method makes autograd keep instead, which means the same on every device.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from .. import runtime


def peak_saved_megabytes(compute: Callable[[], object]) -> float:
    """Peak megabytes of distinct tensor storage that autograd holds for backward passes while
    ``compute()`` runs: activations saved by the forward pass and, for second-order MAML, the
    graph of every inner step. A storage saved twice counts once; one that is freed (an inner
    step whose graph is dropped) stops counting.
    """
    references: dict[int, int] = {}
    held = {"now": 0, "peak": 0}

    class Saved:
        def __init__(self, tensor: torch.Tensor):
            self.tensor, self.key = tensor, tensor.untyped_storage().data_ptr()
            if references.get(self.key, 0) == 0:
                held["now"] += tensor.untyped_storage().nbytes()
                held["peak"] = max(held["peak"], held["now"])
            references[self.key] = references.get(self.key, 0) + 1

        def __del__(self):
            references[self.key] -= 1
            if references[self.key] == 0:
                held["now"] -= self.tensor.untyped_storage().nbytes()

    with torch.autograd.graph.saved_tensors_hooks(Saved, lambda saved: saved.tensor):
        compute()
    return held["peak"] / 2**20


def median_seconds(step: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``step()`` over ``repeats`` calls after ``warmup`` calls (a rehearsal of the
    full profile times one call, without warmup: ``runtime.REHEARSAL_REPEATS``)."""
    for _ in range(runtime.rehearsal_cap(warmup, 0)):
        step()
    times = []
    for _ in range(runtime.rehearsal_cap(repeats, runtime.REHEARSAL_REPEATS)):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
