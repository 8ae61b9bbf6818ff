"""Episodes: the N-way K-shot tasks that few-shot learning trains and tests on.

Introduced in 01_few_shot_problem. An episode (a *task*) has a support set, from which a
learner adapts, and a query set, on which the adapted learner is scored:

* pick ``n_way`` classes at random and give them the labels ``0 .. n_way-1`` in random order;
* per class, pick ``k_shot + n_query`` distinct examples: ``k_shot`` go to the support set,
  ``n_query`` to the query set.

Both samplers here follow the course's one sampler protocol (:mod:`course_lib.data.samplers`):
``sample(generator) -> Episode`` (:class:`~course_lib.data.batches.Episode`) and
``sample_batch(meta_batch_size, generator) -> Episode`` with a leading task dimension, so the
training loop, :func:`fixed_episodes` and the evaluation protocol work with any of them.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .. import runtime
from .base import ClassDataset
from .batches import Episode
from .samplers import TaskSampler


class EpisodeSampler(TaskSampler[Episode]):
    """N-way K-shot episodes with ``n_query`` queries per class from a :class:`ClassDataset`.

    Classes may differ in size: each class draws its examples from its own ``dataset.class_size(c)``.
    """

    def __init__(self, dataset: ClassDataset, n_way: int, k_shot: int, n_query: int):
        if n_way < 2:
            raise ValueError(f"n_way must be at least 2 (a task must choose between classes), got {n_way}")
        if k_shot < 1:
            raise ValueError(f"k_shot must be at least 1 (the support set needs an example per class), got {k_shot}")
        if n_query < 1:
            raise ValueError(f"n_query must be at least 1 (the query set scores the learner), got {n_query}")
        if n_way > dataset.num_classes:
            raise ValueError(f"n_way={n_way} is more than the {dataset.num_classes} classes of this dataset")
        if k_shot + n_query > dataset.examples_per_class:
            smallest = min(range(dataset.num_classes), key=dataset.class_size)
            raise ValueError(
                f"k_shot + n_query = {k_shot + n_query} examples per class were asked for, but the smallest "
                f"class, {dataset.class_name(smallest)!r}, has only {dataset.class_size(smallest)}")
        self.dataset, self.n_way, self.k_shot, self.n_query = dataset, n_way, k_shot, n_query

    def choose_classes(self, generator: torch.Generator) -> Tensor:
        """The episode's classes ``[n_way]``, class ``classes[c]`` labelled ``c``: ``n_way`` distinct classes
        in random order, so a class has a random label in every episode."""
        return torch.randperm(self.dataset.num_classes, generator=generator)[: self.n_way]

    def sample(self, generator: torch.Generator) -> Episode:
        classes = self.choose_classes(generator)
        support, query = [], []
        for c in classes.tolist():
            picked = torch.randperm(self.dataset.class_size(c), generator=generator)
            examples = self.dataset.examples(c, picked[: self.k_shot + self.n_query])
            support.append(examples[: self.k_shot])
            query.append(examples[self.k_shot:])
        labels = torch.arange(self.n_way, device=self.dataset.device)   # where the examples are
        return Episode(
            support_x=torch.cat(support),
            support_y=labels.repeat_interleave(self.k_shot),
            query_x=torch.cat(query),
            query_y=labels.repeat_interleave(self.n_query),
            task=classes,
        )


class FixedLabelEpisodeSampler(EpisodeSampler):
    """Episodes in which every class keeps ONE label for good: the shortcut that random labels rule out (08).

    The classes are dealt once into ``n_way`` groups (a random order fixed by ``seed``, then class
    ``order[i]`` joins group ``i mod n_way``); an episode takes one class of each group, and the class of
    group ``c`` is labelled ``c``. So an episode still has ``n_way`` distinct labels, and a class's label
    never changes: a learner can score well by recognising the class and ignoring its context. Needs at
    least ``n_way`` classes (one per group); examples are drawn as in :class:`EpisodeSampler`.
    """

    def __init__(self, dataset: ClassDataset, n_way: int, k_shot: int, n_query: int, seed: int = 0):
        super().__init__(dataset, n_way, k_shot, n_query)
        order = torch.randperm(dataset.num_classes, generator=torch.Generator().manual_seed(seed))
        self.groups = [order[c::n_way] for c in range(n_way)]                 # group c: the classes labelled c
        self.label_of = torch.empty(dataset.num_classes, dtype=torch.long)
        for c, group in enumerate(self.groups):
            self.label_of[group] = c

    def choose_classes(self, generator: torch.Generator) -> Tensor:
        """One class of each group, group ``c``'s at position ``c`` (so labelled ``c``): ``[n_way]``."""
        return torch.cat([group[torch.randint(len(group), (1,), generator=generator)] for group in self.groups])


class MixtureSampler(TaskSampler[Episode]):
    """Each task from one of several samplers, picked uniformly at random for every task.

    For tasks within one group of classes, the group drawn anew each time: 15-way episodes within
    one CLINC150 domain, ``MixtureSampler([EpisodeSampler(d, 15, 1, 5) for d in domains])``.
    """

    def __init__(self, samplers: Sequence[TaskSampler[Episode]]):
        if not samplers:
            raise ValueError("MixtureSampler needs at least one sampler")
        self.samplers = list(samplers)

    def sample(self, generator: torch.Generator) -> Episode:
        which = int(torch.randint(len(self.samplers), (1,), generator=generator))
        return self.samplers[which].sample(generator)


def fixed_episodes(sampler: TaskSampler[Episode], num_episodes: int, seed: int = 0) -> list[Episode]:
    """The same ``num_episodes`` tasks every time for a given seed: the evaluation set.

    Every method is scored on one such list, so their numbers are comparable. A rehearsal of the full profile
    (``runtime.rehearsing()``) draws only the first ``runtime.REHEARSAL_EPISODES`` of them.
    """
    generator = torch.Generator().manual_seed(seed)
    return [sampler.sample(generator) for _ in range(runtime.rehearsal_cap(num_episodes, runtime.REHEARSAL_EPISODES))]
