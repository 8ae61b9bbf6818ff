"""MAML++: three of the fixes of Antoniou, Edwards and Storkey, "How to train your MAML", ICLR 2019.

Derived in 03_maml. arXiv:1810.09502; official code AntreasAntoniou/HowToTrainYourMAMLPytorch
(``few_shot_learning_system.py``, ``inner_loop_optimizers.py``, ``meta_neural_network_architectures.py``).
MAML with ``S`` inner steps, ``phi_0 = theta``, ``phi_t = phi_{t-1} - alpha_t * grad L_support(phi_{t-1})``,
changed in three places:

* **Multi-step loss** (MSL): the outer loss counts the query loss after *every* inner step, not only the last,

      L_meta(theta) = mean_tasks sum_{t=1..S} w_t L_query(phi_t),

  so every step gets a gradient of its own, not only through the ``S``-fold product of the last step's
  backward pass (the paper's cure for MAML's unstable training). The weights start uniform, ``w_t = 1/S``,
  and move linearly over ``anneal_steps`` meta-steps to the last step: each earlier ``w_t`` falls to
  ``0.03/S`` and ``w_S`` takes the rest; after that only the last step counts (``w_S = 1``), as in the
  official ``get_per_step_loss_importance_vector`` (there over the first 10 of 100 epochs).
* **Learned per-layer per-step step sizes** (LSLR): one step size ``alpha_t^(l)`` for each adapted tensor ``l``
  and step ``t``, ``S`` numbers per tensor, all starting at ``inner_lr`` and meta-learned by the outer
  optimiser with ``theta`` (Meta-SGD learns one per entry and shares it across steps).
* **Per-step batch norm**: the network's batch norm is :class:`course_lib.models.PerStepBatchNorm2d`
  (``ConvNet(batch_norm_steps=S + 1)``): the pass at ``phi_t`` uses its own ``gamma_t, beta_t`` (meta-learned,
  not adapted in the inner loop, as in the official code) and its own running statistics, collected in
  meta-training; with them a prediction in eval mode normalises each image on its own (not transductive, in
  one pass). The official code normalises with the batch's statistics in every pass (transductive); that is
  ``models.PerStepBatchNorm2d.batch_statistics_in_eval``.

Not here: derivative-order annealing and the cosine schedule of the outer learning rate (MAML++'s other fixes).
The inner loop is :func:`course_lib.meta.inner_loop.inner_loop`, taken one step at a time so that every
``phi_t`` is kept; everything else (first/second order, meta-batches, predict, transductive or not) is MAML's.

Example::

    net = ConvNet(n_classes=5, batch_norm_steps=3 + 1)
    maml_pp = MAMLPlusPlus(net, inner_lr=0.1, inner_steps=3, anneal_steps=30)
    history = train(maml_pp, maml.loss, lambda g: sampler.sample_batch(4, g), TrainConfig(steps=300))
    result = evaluate_episodes(maml_pp.predict, test_episodes)
"""
from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..data.batches import Episode
from ..models import per_step_norms, set_inner_step
from .inner_loop import Gradient, LossOfParams, Params, autograd_gradient, inner_loop
from .maml import MAML

MINIMUM_EARLY_WEIGHT = 0.03   # the official code's floor for the earlier steps' weights, times 1/S


def multi_step_loss_weights(n_steps: int, progress: float) -> list[float]:
    """``[w_1, ..., w_S]`` of the multi-step loss after a fraction ``progress`` of the annealing (0 at the start).

    ``w_t = max(1/S - progress/S, 0.03/S)`` for ``t < S`` and ``w_S = min(1/S + progress (S-1)/S, 1 - (S-1) 0.03/S)``
    (they sum to 1); from ``progress >= 1`` only the last step counts, ``[0, ..., 0, 1]``.
    """
    if n_steps < 1:
        raise ValueError(f"the multi-step loss needs at least one inner step, got {n_steps}")
    if progress >= 1:
        return [0.0] * (n_steps - 1) + [1.0]
    floor = MINIMUM_EARLY_WEIGHT / n_steps
    early = max(1 / n_steps - progress / n_steps, floor)
    last = min(1 / n_steps + progress * (n_steps - 1) / n_steps, 1 - (n_steps - 1) * floor)
    return [early] * (n_steps - 1) + [last]


class MAMLPlusPlus(MAML):
    """MAML with the multi-step loss, learned per-layer per-step step sizes and per-step batch norm.

    Args:
        net: the network; with batch norm, :class:`~course_lib.models.PerStepBatchNorm2d` built for
            ``inner_steps + 1`` steps (``ConvNet(batch_norm_steps=inner_steps + 1)``), whose weights are not adapted.
        inner_lr: the initial value of every step size ``alpha_t^(l)``.
        inner_steps: ``S``, the same in meta-training and at test (each step has its own step sizes and
            batch norm, so a test cannot take more).
        anneal_steps: meta-steps over which the multi-step loss moves from uniform weights to the last step.
        **maml_kwargs: as :class:`course_lib.meta.maml.MAML` (``first_order``, ``transductive``, ``task_loss``, ...).
    """

    def __init__(self, net: nn.Module, inner_lr: float = 0.1, inner_steps: int = 5, anneal_steps: int = 1000,
                 **maml_kwargs):
        for option in ("meta_sgd", "eval_inner_lr", "adapt_head_only", "adapted_if"):
            if maml_kwargs.get(option):
                raise ValueError(f"MAMLPlusPlus learns its own step sizes and fast weights; {option} is not an option")
        eval_steps = maml_kwargs.pop("eval_inner_steps", None)
        if eval_steps not in (None, inner_steps):
            raise ValueError(f"MAML++ has step sizes and batch norm for its {inner_steps} inner steps only; "
                             f"eval_inner_steps={eval_steps} is not possible")
        norms = per_step_norms(net)
        for name, module in norms.items():
            if module.n_steps != inner_steps + 1:
                raise ValueError(f"batch norm {name!r} has {module.n_steps} steps; {inner_steps} inner steps need "
                                 f"{inner_steps + 1} (one per phi_t, t = 0 .. {inner_steps})")
        if norms and maml_kwargs.get("batched"):
            raise ValueError("per-step batch norm updates its running statistics in place, which torch.func.vmap "
                             "cannot do: use batched=False")
        super().__init__(net, inner_lr=inner_lr, inner_steps=inner_steps,
                         adapted_if=lambda name: name.rpartition(".")[0] not in norms, **maml_kwargs)
        params = dict(net.named_parameters())
        self.step_sizes_per_layer = nn.ParameterList(
            [nn.Parameter(params[name].new_full((inner_steps,), inner_lr)) for name in self.adapted])
        self.anneal_steps = anneal_steps
        self.register_buffer("meta_steps_taken", torch.zeros((), dtype=torch.long))

    def step_sizes_at(self, step: int) -> dict[str, Tensor]:
        """``alpha_t^(l)`` of inner step ``t = step + 1`` for every adapted tensor ``l``, by name (0-d tensors)."""
        return {name: alphas[step] for name, alphas in zip(self.adapted, self.step_sizes_per_layer)}

    def loss_weights(self) -> list[float]:
        """The multi-step loss's ``[w_1, ..., w_S]`` at the current meta-step."""
        return multi_step_loss_weights(self.inner_steps, int(self.meta_steps_taken) / max(self.anneal_steps, 1))

    def at_step(self, step: int, loss_of: LossOfParams) -> LossOfParams:
        """``loss_of`` run with the batch norm of inner step ``step`` (the pass at ``phi_step``)."""
        def loss_at_step(params: Params) -> Tensor:
            set_inner_step(self.net, step)
            return loss_of(params)
        return loss_at_step

    def trajectory(self, support_loss: LossOfParams, training: bool = True,
                   gradient: Gradient = autograd_gradient) -> list[Params]:
        """``[phi_1, ..., phi_S]``: the inner loop one step at a time, each with its step sizes and batch norm."""
        weights, path = dict(self.net.named_parameters()), []
        for step in range(self.inner_steps):
            weights = inner_loop(weights, [self.at_step(step, support_loss)], self.step_sizes_at(step),
                                 adapted=self.adapted, create_graph=training and not self.first_order,
                                 gradient=gradient)[0]
            path.append(weights)
        return path

    def adapt_to(self, support_loss: LossOfParams, training: bool = True,
                 gradient: Gradient = autograd_gradient, start: Params | None = None) -> Params:
        """``phi_S``, and the network left at the batch norm of step ``S`` for the query pass that follows."""
        if start is not None:
            raise ValueError("MAML++ starts its inner loop at theta")
        adapted = self.trajectory(support_loss, training, gradient)[-1]
        set_inner_step(self.net, self.inner_steps)
        return adapted

    def _query_loss_of_task(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                            gradient: Gradient = autograd_gradient) -> tuple[Tensor, Tensor]:
        """``sum_t w_t L_query(phi_t)`` of one task (steps of weight 0 skipped) and the logits at ``phi_S``."""
        path = self.trajectory(partial(self.support_loss, support_x=support_x, support_y=support_y),
                               gradient=gradient)
        total = 0.0
        for step, (weight, weights) in enumerate(zip(self.loss_weights(), path), start=1):
            if weight > 0:
                set_inner_step(self.net, step)
                logits = functional_call(self.net, weights, (query_x,))
                total = total + weight * self.task_loss(logits, query_y)
        return total, logits

    def meta_loss(self, batch: Episode) -> tuple[Tensor, dict[str, Tensor]]:
        """MAML's meta-loss with the multi-step loss; counts the meta-step for the annealing."""
        result = super().meta_loss(batch)
        self.meta_steps_taken += 1
        return result
