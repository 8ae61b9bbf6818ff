"""The same second-order MAML written with the ``higher`` library, for comparison.

Derived in 03_maml. ``higher`` (Grefenstette et al. 2019, arXiv:1910.01727) wraps a module and an
optimizer so that optimizer steps become differentiable. Learners meet it in much public code; two
of its defaults are traps (both shown in 03_maml):

* ``copy_initial_weights=True`` (its default) starts the inner loop from a *copy* of the weights,
  so the meta-gradient never reaches the model's own parameters: it must be ``False`` for MAML;
* ``track_higher_grads=False`` (its first-order mode) builds no graph back to the initial weights,
  so ``loss.backward()`` leaves no gradient on them at all.
"""
from __future__ import annotations

from typing import Callable

import higher
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data.batches import Episode


def meta_loss(net: nn.Module, batch: Episode, inner_lr: float, inner_steps: int,
              task_loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> Tensor:
    """Second-order MAML's meta-loss over a meta-batch ``[B, ...]``, with ``higher``.

    Same equations as ``course_lib.meta.maml.MAML.meta_loss``: ``inner_steps`` steps of plain SGD
    with step size ``inner_lr`` on each task's support set, then the mean query loss.
    """
    inner_optimizer = torch.optim.SGD(net.parameters(), lr=inner_lr)
    losses = []
    for task in range(batch.support_x.shape[0]):
        with higher.innerloop_ctx(net, inner_optimizer, copy_initial_weights=False) as (fast_net, diff_optimizer):
            for _ in range(inner_steps):
                diff_optimizer.step(task_loss(fast_net(batch.support_x[task]), batch.support_y[task]))
            losses.append(task_loss(fast_net(batch.query_x[task]), batch.query_y[task]))
    return torch.stack(losses).mean()
