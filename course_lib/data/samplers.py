"""The one task-sampler protocol that every sampler of the course follows.

Introduced in 01_few_shot_problem. A sampler draws items of a :class:`~course_lib.data.batches.TensorBatch`
type and has two methods:

* ``sample(generator)``: ONE item: an episode (:class:`EpisodeSampler`, :class:`MixtureSampler`,
  :class:`SinusoidTasks`), one labelled example (``transfer.ClassificationSampler``), one regression
  task (:class:`LinearRegressionTasks`), one prompt-and-label pair (``metaicl.PromptBatchSampler``);
* ``sample_batch(n, generator)``: ``n`` items as one batch of the same type with a leading dimension
  ``n``: the training loop's ``sample_batch`` is ``functools.partial(sampler.sample_batch, n)``.

Every random number comes from ``generator`` (never from torch's global state), so a seed fixes what
is drawn and the training loop resumes exactly by restoring the generator's state.

:class:`TaskSampler` is the protocol written down: subclasses implement ``sample`` and inherit a
``sample_batch`` that stacks ``n`` draws of ``sample``. A sampler that draws a whole batch at once,
vectorised (the classification batches of 02, the regression tasks of 08), overrides ``sample_batch``
and says so; its ``sample`` is then ``sample_batch(1, generator)[0]``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

import torch

from .batches import TensorBatch

Batch = TypeVar("Batch", bound=TensorBatch)


def check_batch_size(n: int) -> None:
    """A clear error for a batch of fewer than one item."""
    if n < 1:
        raise ValueError(f"a batch needs at least one item, got n={n}")


class TaskSampler(ABC, Generic[Batch]):
    """``sample(generator) -> one item``; ``sample_batch(n, generator) -> n items stacked`` (module docstring)."""

    @abstractmethod
    def sample(self, generator: torch.Generator) -> Batch:
        """One item, every random number drawn from ``generator``."""

    def sample_batch(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` draws of :meth:`sample` stacked along a new first dimension: ``batch[i]`` is draw ``i``."""
        check_batch_size(n)
        items = [self.sample(generator) for _ in range(n)]
        return type(items[0]).stack(items)
