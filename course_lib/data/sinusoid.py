"""The sinusoid regression tasks of the MAML paper (Finn et al. 2017, arXiv:1703.03400).

Introduced in 01_few_shot_problem, used in 03_maml. A task is a sine wave
``y = A sin(x - phi)`` with ``A ~ U[0.1, 5]`` and ``phi ~ U[0, pi]``; its examples are
points ``x ~ U[-5, 5]`` with their ``y``. K-shot regression sees K points of a new wave.
"""
from __future__ import annotations

import math

import torch

from .batches import Episode
from .samplers import TaskSampler


class SinusoidTasks(TaskSampler[Episode]):
    """Sinusoid tasks with ``k_shot`` support points and ``n_query`` query points.

    ``sample`` returns an :class:`Episode` with ``support_x``, ``support_y``: ``[k_shot, 1]``,
    ``query_x``, ``query_y``: ``[n_query, 1]`` and ``task = [amplitude, phase]``; ``sample_batch(B, g)``
    stacks ``B`` of them (``[B, k_shot, 1]``, ..., ``task: [B, 2]``).
    """

    amplitude_range = (0.1, 5.0)
    phase_range = (0.0, math.pi)
    x_range = (-5.0, 5.0)

    def __init__(self, k_shot: int, n_query: int):
        if k_shot < 1 or n_query < 1:
            raise ValueError(f"k_shot and n_query must be at least 1, got {k_shot} and {n_query}")
        self.k_shot, self.n_query = k_shot, n_query

    @staticmethod
    def _uniform(low: float, high: float, shape, generator: torch.Generator) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    def sample(self, generator: torch.Generator) -> Episode:
        amplitude = self._uniform(*self.amplitude_range, (), generator)
        phase = self._uniform(*self.phase_range, (), generator)
        x = self._uniform(*self.x_range, (self.k_shot + self.n_query, 1), generator)
        y = amplitude * torch.sin(x - phase)
        k = self.k_shot
        return Episode(x[:k], y[:k], x[k:], y[k:], torch.stack([amplitude, phase]))

    @staticmethod
    def curve(task: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The true function of a task ``[amplitude, phase]`` at points ``x``."""
        return task[0] * torch.sin(x - task[1])
