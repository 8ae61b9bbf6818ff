"""Datasets as examples grouped by class: the shape every few-shot sampler reads.

Introduced in 01_few_shot_problem. A few-shot dataset is a set of classes, each with a
set of examples; an episode picks classes and examples from it (see ``episodes``).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor


class ClassDataset:
    """Examples grouped by class, optionally with rotated copies as extra classes.

    Args:
        data: ``[n_base_classes, examples_per_class, *example_shape]`` tensor
            (for Omniglot ``[C, 20, 1, 28, 28]`` floats in [0, 1], ink = 1).
        class_names: one name per base class, e.g. ``"Greek/character03"``.
        source: one human sentence that says where the data came from; notebooks print it.
        real: False for an offline stand-in; notebooks then apply the floors measured on it.
        rotations: if True, each base class also appears rotated by 90, 180 and 270 degrees
            as three further classes (the augmentation of the MAML and ProtoNet papers).
            Class ``i`` is base class ``i // 4`` rotated by ``90 * (i % 4)`` degrees.

    The rotated images are computed when an episode asks for them, so rotations cost no memory.
    """

    ROTATIONS = 4

    def __init__(self, data: Tensor, class_names: Sequence[str], source: str, rotations: bool = False,
                 real: bool = True):
        if data.dim() < 2:
            raise ValueError(f"data must be [classes, examples, ...], got shape {tuple(data.shape)}")
        if len(class_names) != data.shape[0]:
            raise ValueError(f"{len(class_names)} class names for {data.shape[0]} classes")
        self.data = data
        self.base_class_names = list(class_names)
        self.source = source
        self.rotations = rotations
        self.real = real

    @classmethod
    def random(cls, n_classes: int, examples_per_class: int = 20, example_shape: Sequence[int] = (1, 28, 28),
               seed: int = 0) -> "ClassDataset":
        """Uniform noise of Omniglot's shape by default, ``[n_classes, examples_per_class, *example_shape]``:
        for measuring what a step costs (FLOPs, memory and time do not depend on the pixels)."""
        data = torch.rand(n_classes, examples_per_class, *example_shape, generator=torch.Generator().manual_seed(seed))
        return cls(data, [f"class{c}" for c in range(n_classes)], source="random images", real=False)

    @property
    def num_base_classes(self) -> int:
        return self.data.shape[0]

    @property
    def num_classes(self) -> int:
        return self.num_base_classes * (self.ROTATIONS if self.rotations else 1)

    @property
    def examples_per_class(self) -> int:
        """Examples in every class (where classes differ in size: in the smallest one)."""
        return self.data.shape[1]

    def class_size(self, class_index: int) -> int:
        """The number of examples of class ``class_index``; samplers draw from ``range(class_size(c))``.

        Here every class has ``examples_per_class``; a dataset with classes of different sizes
        (``data.folder.ImageFolderDataset``) overrides this and :meth:`base_examples`.
        """
        return self.examples_per_class

    def base_examples(self, base_class: int, example_indices: Tensor) -> Tensor:
        """The examples ``example_indices`` of one base class, unrotated: ``[len(example_indices), *example_shape]``."""
        return self.data[base_class, example_indices.to(self.data.device)]   # indices drawn on the host

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[2:])

    def __len__(self) -> int:
        return self.num_classes

    def class_name(self, class_index: int) -> str:
        if not self.rotations:
            return self.base_class_names[class_index]
        base, turns = divmod(class_index, self.ROTATIONS)
        return f"{self.base_class_names[base]} (rot {90 * turns})"

    @property
    def device(self) -> torch.device:
        """Where the examples are (and so the episodes drawn from them)."""
        return self.data.device

    def to(self, device: torch.device | str) -> "ClassDataset":
        """This dataset with its examples on ``device``: on a GPU, episodes are then gathered there, by index
        tensors drawn on the host from the same generator (the same episodes as on the host), and no image
        crosses the bus while training. The class tables stay on the host."""
        moved = copy.copy(self)
        moved.data = self.data.to(device)
        return moved

    def split_examples(self, n_first: int, seed: int = 0) -> tuple["ClassDataset", "ClassDataset"]:
        """The same classes, their examples split in two: ``(first, rest)`` with ``n_first`` and
        ``examples_per_class - n_first`` examples per class, ``data: [C, n_first, ...]`` and ``[C, E - n_first, ...]``.

        Each class's examples are shuffled once by ``seed`` (one permutation per class, drawn on the host),
        so the split is fixed and no example is in both parts: meta-train on ``first``, and ``rest`` holds
        utterances of the meta-train classes that training never saw (08 tells memorised examples from
        memorised classes this way). For datasets whose classes all have ``examples_per_class`` examples.
        """
        if type(self).class_size is not ClassDataset.class_size:
            raise ValueError(f"{type(self).__name__} has classes of different sizes; split_examples needs equal ones")
        if not 0 < n_first < self.examples_per_class:
            raise ValueError(f"n_first must be between 1 and {self.examples_per_class - 1} (each part needs an "
                             f"example per class), got {n_first}")
        generator = torch.Generator().manual_seed(seed)
        order = torch.stack([torch.randperm(self.examples_per_class, generator=generator)
                             for _ in range(self.num_base_classes)])                      # [C, E]
        order = order.to(self.data.device).view(*order.shape, *[1] * len(self.example_shape))
        shuffled = self.data.gather(1, order.expand_as(self.data))
        parts = []
        for data in (shuffled[:, :n_first], shuffled[:, n_first:]):
            part = copy.copy(self)
            part.data = data
            parts.append(part)
        return parts[0], parts[1]

    def examples(self, class_index: int, example_indices: Tensor) -> Tensor:
        """The examples ``example_indices`` of one class: ``[len(example_indices), *example_shape]``."""
        if not 0 <= class_index < self.num_classes:
            raise IndexError(f"class {class_index} out of range for {self.num_classes} classes")
        if not self.rotations:
            return self.base_examples(class_index, example_indices)
        base, turns = divmod(class_index, self.ROTATIONS)
        return torch.rot90(self.base_examples(base, example_indices), turns, dims=(-2, -1))

    def __repr__(self) -> str:
        rot = ", rotations as extra classes" if self.rotations else ""
        return (f"ClassDataset({self.num_classes} classes x {self.examples_per_class} examples"
                f" of shape {self.example_shape}{rot}; {self.source})")
