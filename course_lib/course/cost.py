"""What a training step costs: its floating-point operations, the memory autograd holds for the backward
pass, and time.

Used in 03_maml, 04_reptile and 06_head_to_head to compare algorithms on the same batch.
:func:`training_flops` counts a step's work in a unit that depends on the shapes alone, not on the machine,
so that 06 can give every method the same budget and get the same numbers anywhere.
A CPU process's peak resident memory never goes down, so it cannot tell apart two methods
measured one after the other in one notebook; :func:`peak_saved_megabytes` counts what each
method makes autograd keep instead, which means the same on every device.
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .. import runtime


def training_flops(loss_fn: Callable[[nn.Module, Any], object], model: nn.Module, batch: Any) -> int:
    """Floating-point operations of one training step: ``loss_fn(model, batch)`` and its backward pass.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` from the shapes of the matrix products and
    convolutions the step runs (a multiply-add counts 2: ``y = x W^T`` with ``x: [B, in]`` costs
    ``2 * B * in * out``, and its backward about twice that, one product for the gradient of ``W`` and one
    for that of ``x``), inner loops included: MAML's support-set gradients, their second-order backward,
    Reptile's inner steps. Element-wise and memory-bound work (batch norm, ReLU, pooling, the optimizer's
    update) and data loading are not counted.

    ``loss_fn`` is the training loop's (``loss`` or ``(loss, metrics)``). The step runs once, on the CPU, on a
    copy of ``model``, with the global random state restored afterwards: ``model``, its gradients and the
    random numbers a later training run draws are untouched. The count depends only on shapes, so it is
    the same on every machine.
    """
    counted = copy.deepcopy(model).cpu().train()
    with torch.random.fork_rng(devices=[]), FlopCounterMode(display=False) as counter:
        output = loss_fn(counted, runtime.to_device(batch, "cpu"))
        loss = output[0] if isinstance(output, tuple) else output
        loss.backward()
    return counter.get_total_flops()

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
