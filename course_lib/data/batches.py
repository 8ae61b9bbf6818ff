"""The batch types of the course: dataclasses of tensors that the samplers return and the losses read.

Introduced in 01_few_shot_problem. A sampler's ``sample(generator)`` returns ONE item (one task, one
labelled example, one prompt) and ``sample_batch(n, generator)`` returns the same type with a leading
dimension ``n`` (see :mod:`course_lib.data.samplers`). Every type here is a :class:`TensorBatch`:

* ``batch.to(device)``: every tensor on ``device`` (the training loop calls it on every batch);
* ``batch[i]``: item ``i`` of a batch (the leading dimension indexed away);
* ``Type.stack(items)``: items of equal shapes stacked along a new leading dimension.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence, TypeVar

import torch
from torch import Tensor

Batch = TypeVar("Batch", bound="TensorBatch")


class TensorBatch:
    """A dataclass of tensors that moves, is indexed and is stacked as a whole."""

    def to(self: Batch, device: torch.device | str) -> Batch:
        return type(self)(*(getattr(self, f.name).to(device) for f in fields(self)))

    def __getitem__(self: Batch, index: int) -> Batch:
        """Item ``index`` of a batch: every field indexed along its leading dimension."""
        return type(self)(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def stack(cls: type[Batch], items: Sequence[Batch]) -> Batch:
        """``items`` of equal shapes as one batch: every field ``torch.stack``-ed along a new first dimension."""
        if not items:
            raise ValueError(f"{cls.__name__}.stack needs at least one item")
        for f in fields(cls):
            shapes = {tuple(getattr(item, f.name).shape) for item in items}
            if len(shapes) > 1:
                raise ValueError(f"{cls.__name__}.stack needs items of equal shapes, but {f.name} has the shapes "
                                 f"{sorted(shapes)} (e.g. tasks of different n_way, k_shot or n_query)")
        return cls(*(torch.stack([getattr(item, f.name) for item in items]) for f in fields(cls)))


@dataclass
class Episode(TensorBatch):
    """One task, or a meta-batch of tasks stacked along a leading dimension ``B``.

    Shapes for one N-way K-shot task with Q queries per class (images ``[C, H, W]``):
        support_x: ``[N*K, C, H, W]``, support_y: ``[N*K]`` (labels 0..N-1)
        query_x:   ``[N*Q, C, H, W]``, query_y:   ``[N*Q]``
        task: what defines the task, e.g. the dataset class of each label ``[N]``,
              or a sinusoid's ``[amplitude, phase]``.
    A meta-batch puts ``B`` in front of every shape: ``support_x: [B, N*K, C, H, W]`` and so on.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    task: Tensor

    @property
    def n_way(self) -> int:
        """N, the classes of a classification episode (labels 0..N-1, read from ``support_y``; on a GPU
        this reads the device once). A meta-batch gives the largest N of its tasks."""
        return int(self.support_y.max()) + 1


@dataclass
class LabelledBatch(TensorBatch):
    """Ordinary supervised learning: images ``x: [B, C, H, W]`` and their classes ``y: [B]``
    (one example: ``x: [C, H, W]``, ``y: []``). Transfer learning's pretraining batches (02)."""

    x: Tensor
    y: Tensor


@dataclass
class RegressionBatch(TensorBatch):
    """Linear regression tasks ``y_i = w . x_i + eps_i`` (08): ``x: [B, n, d]``, ``w: [B, d]``, ``y: [B, n]``
    (one task: ``x: [n, d]``, ``w: [d]``, ``y: [n]``)."""

    x: Tensor
    w: Tensor
    y: Tensor


@dataclass
class PromptBatch(TensorBatch):
    """Prompt-and-label pairs packed for a causal LM (09, :func:`~course_lib.text.prompting.pack_pairs`):
    ``input_ids``, ``attention_mask``, ``label_mask``, all ``[B, T]``, right-padded with 0 to the longest
    pair (one pair: ``[T]``, no padding). ``label_mask`` is 1 on the label's tokens only."""

    input_ids: Tensor
    attention_mask: Tensor
    label_mask: Tensor
