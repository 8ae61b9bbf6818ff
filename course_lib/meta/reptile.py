"""Reptile: train on a task, then move the initialisation toward the trained weights.

Derived in 04_reptile. Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms",
2018, arXiv:1803.02999 (official code: github.com/openai/supervised-reptile).

Reptile learns an initialisation ``theta``. For each task ``tau`` of a meta-batch of ``B`` tasks:

    inner loop: phi_tau = U^k_tau(theta)
        k = ``inner_steps`` steps of SGD or Adam (step size ``inner_lr``) on mini-batches of
        ``inner_batch_size`` examples of the task's support set, starting from theta;
    outer update (step size epsilon = ``outer_lr``):
        theta <- theta - epsilon * g,   g = theta - mean_tau phi_tau   (the pseudo-gradient)

With epsilon = 1 the new theta is the mean of the adapted weights. No gradient flows through the
inner loop (no second-order graph, unlike MAML). To use the course's one training loop,
:meth:`Reptile.meta_loss` returns the surrogate

    L(theta) = 1/2 sum_p || theta_p - stopgrad(mean_tau phi_tau,p) ||^2,

whose gradient with respect to theta is exactly ``g``; ``TrainConfig(optimizer="sgd", lr=epsilon)``
then performs the update above (Adam on ``g`` is the paper's alternative).

Shapes: one task has ``support_x: [N*K, C, H, W]`` (or ``[K, 1]`` for sinusoids); a meta-batch
has a leading ``[B]``; the inner loop's mini-batches are ``[inner_steps, inner_batch_size, ...]``.

The inner loop is :func:`course_lib.meta.inner_loop.inner_loop` (shared with MAML, its Adam rule
included). Two ways to run a meta-batch's inner loops, with the same result: one task after the
other with ``torch.autograd.grad`` (``batched=False``), or all tasks together with
``torch.func.vmap`` over ``torch.func.grad_and_value`` (``batched=True``).

Evaluation (:meth:`Reptile.predict`) is non-transductive by default. The conv net's batch norm
always uses the statistics of the batch it is given, so predicting the whole query set in one
batch lets the queries inform each other (transduction). As in the official code, each query is
instead classified in a batch made of the support set plus that one query
(:func:`course_lib.evaluate.one_query_at_a_time`, which MAML and ProtoNet use too). Nichol et al. report
95.4% (non-transductive) and 97.7% (transductive) on Omniglot 5-way 1-shot.

Example, the official 5-way 1-shot Omniglot command (``--inner-batch 10 --inner-iters 5 --meta-batch 5
--meta-iters 100000 --eval-iters 50 --learning-rate 0.001 --train-shots 10``, meta step 1 -> 0)::

    reptile = Reptile(ConvNet(n_classes=5), inner_lr=1e-3, inner_steps=5, inner_batch_size=10,
                      eval_inner_steps=50)
    sample = lambda g: EpisodeSampler(train_classes, 5, 10, 1).sample_batch(5, g)
    config = TrainConfig(steps=100_000, optimizer="sgd", lr=1.0, lr_linear_decay=True)
    history = train(reptile, loss, sample, config)
    result = evaluate_episodes(lambda e: predict(reptile, e), test_episodes)
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from ..data.batches import Episode
from ..evaluate import one_query_at_a_time, predicting, uses_batch_statistics
from .inner_loop import UPDATE_RULES, Gradient, Params, autograd_gradient, func_gradient, inner_loop, support_loss


class Reptile(nn.Module):
    """A network plus the inner loop that adapts it to a task.

    Args:
        net: the network; its parameters are the initialisation ``theta``.
        inner_lr: the inner loop's step size.
        inner_steps: ``k``, the inner loop's steps in meta-training.
        inner_batch_size: examples per inner step, drawn as in the official code: passes over the
            support set in fresh random orders; None uses the whole support set in every step.
        inner_optimizer: ``"adam"`` (the official code's choice, with ``betas=(0, 0.999)``) or
            ``"sgd"``. The Adam state starts at zero for every task.
        eval_inner_steps, eval_inner_lr, eval_inner_batch_size: the inner loop at test time
            (default: as in training; the paper uses more steps at test time).
        task_loss: ``F.cross_entropy`` for classification, ``F.mse_loss`` for regression.
        batched: run a meta-batch's inner loops together with ``torch.func.vmap``.
        transductive: predict the whole query set in one batch (see the module docstring).
    """

    def __init__(self, net: nn.Module, inner_lr: float = 1e-3, inner_steps: int = 5,
                 inner_batch_size: int | None = None, inner_optimizer: str = "adam",
                 eval_inner_steps: int | None = None, eval_inner_lr: float | None = None,
                 eval_inner_batch_size: int | None = None,
                 task_loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
                 batched: bool = False, transductive: bool = False,
                 betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8):
        super().__init__()
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1 (with none, theta - phi is 0), got {inner_steps}")
        if inner_optimizer not in UPDATE_RULES:
            raise ValueError(f"unknown inner optimizer {inner_optimizer!r}: "
                             f"choose one of {', '.join(UPDATE_RULES)}")
        self.net = net
        self.inner_lr, self.inner_steps, self.inner_batch_size = inner_lr, inner_steps, inner_batch_size
        self.eval_inner_lr = inner_lr if eval_inner_lr is None else eval_inner_lr
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.eval_inner_batch_size = inner_batch_size if eval_inner_batch_size is None else eval_inner_batch_size
        self.inner_optimizer, self.betas, self.eps = inner_optimizer, betas, eps
        self.task_loss, self.batched, self.transductive = task_loss, batched, transductive

    def initial_params(self) -> Params:
        """``theta`` as a dict of tensors detached from the module: the inner loop builds no graph to it."""
        return {name: p.detach() for name, p in self.net.named_parameters()}

    def inner_batches(self, n_examples: int, training: bool, generator: torch.Generator | None = None) -> Tensor:
        """Indices ``[steps, batch_size]`` of the inner loop's mini-batches of a support set.

        Successive passes over the ``n_examples`` in fresh random orders, cut into mini-batches
        (a mini-batch may span two passes), as ``_mini_batches`` of the official code.
        """
        steps = self.inner_steps if training else self.eval_inner_steps
        batch_size = self.inner_batch_size if training else self.eval_inner_batch_size
        if batch_size is None:
            return torch.arange(n_examples).expand(steps, n_examples)
        passes = max(1, math.ceil(steps * batch_size / n_examples))
        order = torch.cat([torch.randperm(n_examples, generator=generator) for _ in range(passes)])
        return order[: steps * batch_size].view(steps, batch_size)

    def train_on_mini_batches(self, theta: Params, batches_x: Tensor, batches_y: Tensor, lr: float,
                              gradient: Gradient = autograd_gradient) -> tuple[Params, Tensor]:
        """``phi = U^k(theta)``: one SGD or Adam step per mini-batch, ``batches_x: [k, batch_size, ...]``.

        Also returns the support loss of the last step, a training diagnostic.
        """
        step_losses = [partial(support_loss, self.net, support_x=batches_x[step], support_y=batches_y[step],
                               task_loss=self.task_loss) for step in range(batches_x.shape[0])]
        return inner_loop(theta, step_losses, lr, update=self.inner_optimizer, gradient=gradient,
                          betas=self.betas, eps=self.eps)

    def adapt(self, support_x: Tensor, support_y: Tensor, training: bool = True,
              generator: torch.Generator | None = None) -> Params:
        """The adapted weights ``phi`` (``fast_weights``) for one task's support set ``[N*K, ...]``."""
        order = self.inner_batches(support_x.shape[0], training, generator).to(support_x.device)
        lr = self.inner_lr if training else self.eval_inner_lr
        return self.train_on_mini_batches(self.initial_params(), support_x[order], support_y[order], lr)[0]

    def adapt_batch(self, support_x: Tensor, support_y: Tensor) -> tuple[Params, Tensor]:
        """Adapted weights of a meta-batch, each ``[B, *shape]``, from ``support_x: [B, N*K, ...]``,
        and each task's support loss at the last inner step ``[B]``.

        The mini-batch orders are drawn first, so the per-task loop and ``vmap`` see the same data.
        """
        n_tasks, n_examples = support_y.shape[:2]
        order = torch.stack([self.inner_batches(n_examples, True) for _ in range(n_tasks)]).to(support_x.device)
        tasks = torch.arange(n_tasks, device=support_x.device)[:, None, None]
        batches_x, batches_y = support_x[tasks, order], support_y[tasks, order]    # [B, k, batch_size, ...]
        train = partial(self.train_on_mini_batches, self.initial_params(), lr=self.inner_lr)
        if self.batched:
            return vmap(partial(train, gradient=func_gradient))(batches_x, batches_y)
        per_task = [train(batches_x[t], batches_y[t]) for t in range(n_tasks)]
        adapted = {name: torch.stack([phi[name] for phi, _ in per_task]) for name in per_task[0][0]}
        return adapted, torch.stack([loss for _, loss in per_task])

    def meta_loss(self, batch: Episode) -> tuple[Tensor, dict[str, Tensor]]:
        """The surrogate ``1/2 sum_p ||theta_p - mean_tau phi_tau,p||^2`` of a meta-batch ``[B, ...]``.

        Its gradient is the pseudo-gradient ``theta - mean_tau phi_tau``. The metric ``inner_loss`` is
        the support loss at the last inner step, averaged over tasks. The query set is not used.
        """
        adapted, inner_losses = self.adapt_batch(batch.support_x, batch.support_y)
        surrogate = sum(0.5 * (theta - adapted[name].mean(dim=0)).pow(2).sum()
                        for name, theta in self.net.named_parameters())
        return surrogate, {"inner_loss": inner_losses.mean()}

    def predict(self, episode: Episode) -> Tensor:
        """Query predictions ``[N*Q, ...]`` of one episode after the evaluation inner loop.

        Adapting and scoring run in eval mode (dropout off; every submodule's mode is restored after).
        Mini-batch orders come from a fixed seed, so evaluation is deterministic. Non-transductive
        unless ``transductive=True`` (a network without batch norm predicts every query in one
        batch: without batch statistics that is not transductive). The episode moves to the network's
        device first.
        """
        with predicting(self, episode) as episode:
            fast_weights = self.adapt(episode.support_x, episode.support_y, training=False,
                                      generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                if self.transductive or not uses_batch_statistics(self.net):
                    return functional_call(self.net, fast_weights, (episode.query_x,))
                return one_query_at_a_time(lambda x: functional_call(self.net, fast_weights, (x,)),
                                           episode.support_x, episode.query_x)[1]


def loss(reptile: Reptile, batch: Episode) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loop's ``loss_fn``: :meth:`Reptile.meta_loss` (train with ``optimizer="sgd"``)."""
    return reptile.meta_loss(batch)


def predict(reptile: Reptile, episode: Episode) -> Tensor:
    """The evaluation protocol's ``predict``: :meth:`Reptile.predict`."""
    return reptile.predict(episode)
