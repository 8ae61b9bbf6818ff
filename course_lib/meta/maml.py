"""MAML and its variants with ``torch.func``: second order, first order, ANIL, Meta-SGD.

Derived in 03_maml. Model-Agnostic Meta-Learning (Finn, Abbeel, Levine 2017, arXiv:1703.03400)
learns an initialisation ``theta`` from which a few gradient steps on a task's support set give
good predictions on its query set:

    inner loop (per task, ``inner_steps`` times):
        theta' = theta - alpha * grad_theta L_support(theta)
    outer loss (mean over the meta-batch of tasks):
        L_meta(theta) = mean_tasks L_query(theta')

Second-order MAML differentiates ``L_query(theta')`` through the inner steps (the gradient
contains ``I - alpha * Hessian``); first-order MAML treats ``grad L_support`` as a constant;
ANIL (Raghu et al. 2020, arXiv:1909.09157) adapts only the head; Meta-SGD (Li et al. 2017,
arXiv:1707.09835) meta-learns one inner learning rate per parameter entry, ``alpha``.

The inner loop is :func:`course_lib.meta.inner_loop.inner_loop` (shared with Reptile); the network
is evaluated at adapted weights with ``torch.func.functional_call``: assigning weights to a module
(``model.parameters = fast_weights``) changes nothing (see 00_orientation). :meth:`MAML.adapt_to`
adapts to any support loss given as a function of the weights (any model input, any loss).

Two ways to process a meta-batch, with the same result: a readable per-task loop
(``batched=False``, gradients by ``torch.autograd.grad``) and ``torch.func.vmap`` over tasks
(``batched=True``, gradients by ``torch.func.grad``), which on a GPU runs all tasks of the
meta-batch in the same kernels.

Example::

    maml = MAML(ConvNet(n_classes=5), inner_lr=0.4, inner_steps=1)
    history = train(maml, loss, lambda g: sampler.sample_batch(32, g), TrainConfig(steps=60_000))
    result = evaluate_episodes(lambda e: predict(maml, e), test_episodes)
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from .. import runtime
from ..data.batches import Episode
from ..evaluate import one_query_at_a_time, predicting, uses_batch_statistics
from .inner_loop import Gradient, LossOfParams, Params, autograd_gradient, func_gradient, inner_loop, support_loss


class MAML(nn.Module):
    """A network plus the rule that adapts it to a task.

    Args:
        net: the network; its parameters are the initialisation ``theta`` that is meta-learned.
        inner_lr: ``alpha``, the inner-loop step size (Meta-SGD: the initial value of every entry).
        inner_steps: inner gradient steps during meta-training.
        first_order: drop the second-order term (first-order MAML, "FOMAML").
        adapt_head_only: ANIL: adapt only the parameters whose names start with ``head_prefix``.
        adapted_if: any other choice of fast weights, a test on parameter names, e.g. LoRA's
            ``lambda name: "lora_" in name or name.startswith("head.")``. Parameters with
            ``requires_grad=False`` (a frozen pretrained model) are never adapted nor meta-learned.
        meta_sgd: meta-learn a per-parameter inner learning rate (Meta-SGD).
        eval_inner_steps, eval_inner_lr: inner loop at test time (default: as in training; Meta-SGD's
            learned step sizes serve at test too, so it takes no ``eval_inner_lr``).
        task_loss: ``F.cross_entropy`` for classification, ``F.mse_loss`` for regression.
        batched: process a meta-batch with ``torch.func.vmap`` instead of a per-task loop.
        transductive: :meth:`predict` scores all queries of an episode in one pass (with the conv net's
            batch norm, the queries' batch statistics, as MAML's code does); False scores each query in
            its own pass over ``[support set; that query]``
            (:func:`course_lib.evaluate.one_query_at_a_time`), not transductive.
    """

    def __init__(self, net: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1,
                 first_order: bool = False, adapt_head_only: bool = False, meta_sgd: bool = False,
                 eval_inner_steps: int | None = None, eval_inner_lr: float | None = None,
                 task_loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
                 batched: bool = False, head_prefix: str = "head.",
                 adapted_if: Callable[[str], bool] | None = None, transductive: bool = True):
        super().__init__()
        if meta_sgd and eval_inner_lr is not None:
            raise ValueError("Meta-SGD adapts with its learned step sizes at test time too; "
                             f"eval_inner_lr={eval_inner_lr} would be ignored: leave it out")
        self.net = net
        self.inner_lr, self.inner_steps = inner_lr, inner_steps
        self.eval_inner_lr = inner_lr if eval_inner_lr is None else eval_inner_lr
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.first_order, self.task_loss, self.batched = first_order, task_loss, batched
        self.transductive = transductive
        if adapted_if is None:
            adapted_if = (lambda name: name.startswith(head_prefix)) if adapt_head_only else (lambda name: True)
        self.adapted = [name for name, p in net.named_parameters() if p.requires_grad and adapted_if(name)]
        if not self.adapted:
            raise ValueError("no trainable parameter of the network is selected for adaptation"
                             + (f" (none starts with {head_prefix!r})" if adapt_head_only else ""))
        if batched and not first_order and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            raise ValueError("second-order MAML under vmap gets wrong gradients through nn.BatchNorm2d; "
                             "build the network with explicit batch norm, e.g. ConvNet(explicit_batch_norm=True)")
        self.meta_sgd = meta_sgd
        if meta_sgd:
            params = dict(net.named_parameters())
            self.inner_lrs = nn.ParameterList(
                [nn.Parameter(torch.full_like(params[name], inner_lr)) for name in self.adapted])

    def step_sizes(self, training: bool) -> float | dict[str, Tensor]:
        """``alpha``: one number, or (Meta-SGD) the learned tensor of each adapted parameter, by name."""
        if self.meta_sgd:
            return dict(zip(self.adapted, self.inner_lrs))
        return self.inner_lr if training else self.eval_inner_lr

    def support_loss(self, params: Params, support_x: Tensor, support_y: Tensor) -> Tensor:
        """``L_support`` of one task at the weights ``params``: ``task_loss(f(support_x; params), support_y)``."""
        return support_loss(self.net, params, support_x, support_y, self.task_loss)

    def adapt(self, support_x: Tensor, support_y: Tensor, training: bool = True,
              gradient: Gradient = autograd_gradient) -> Params:
        """The adapted weights ``theta'`` for one task (support set ``[N*K, ...]``).

        In training, second-order MAML keeps the graph of each inner step (``create_graph``) so
        that the outer gradient flows through it; first order and evaluation do not.
        """
        return self.adapt_to(partial(self.support_loss, support_x=support_x, support_y=support_y), training,
                             gradient)

    def adapt_to(self, support_loss: LossOfParams, training: bool = True,
                 gradient: Gradient = autograd_gradient, start: Params | None = None) -> Params:
        """``theta'`` for a task given by its support loss as a function of the weights, ``Params -> scalar``.

        Any input and any loss: e.g. a transformer's ``inputs = {"input_ids": ..., "attention_mask": ...}``
        with ``lambda params: F.cross_entropy(functional_call(maml.net, params, (inputs,)), labels)``.
        The inner loop (``inner_steps`` SGD steps, or ``eval_inner_steps`` when not ``training``) and the
        choices of MAML (first/second order, fast weights, Meta-SGD step sizes) are this learner's.
        ``gradient=func_gradient`` lets ``torch.func.vmap`` run it over a meta-batch of tasks. ``start``: the
        weights the inner loop starts from (default the network's own, ``theta``; Proto-MAML's head from the
        support set's prototypes).
        """
        steps = self.inner_steps if training else self.eval_inner_steps
        start = dict(self.net.named_parameters()) if start is None else start
        return inner_loop(start, [support_loss] * steps, self.step_sizes(training),
                          adapted=self.adapted, create_graph=training and not self.first_order,
                          gradient=gradient)[0]

    def _query_loss_of_task(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                            gradient: Gradient = autograd_gradient) -> tuple[Tensor, Tensor]:
        """Query loss and logits ``[N*Q, ...]`` of one task after the inner loop; ``vmap`` maps it over tasks."""
        fast_weights = self.adapt(support_x, support_y, gradient=gradient)
        logits = functional_call(self.net, fast_weights, (query_x,))
        return self.task_loss(logits, query_y), logits

    def meta_loss(self, batch: Episode) -> tuple[Tensor, dict[str, Tensor]]:
        """``L_meta``: the mean query loss after adaptation over a meta-batch ``[B, ...]``."""
        if self.first_order and not self.meta_sgd and not self.batched:
            return self._first_order_meta_loss(batch)
        tasks = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        if self.batched:
            losses, logits = vmap(partial(self._query_loss_of_task, gradient=func_gradient))(*tasks)
        else:
            losses, logits = (torch.stack(result) for result in
                              zip(*(self._query_loss_of_task(*task) for task in zip(*tasks))))
        return losses.mean(), self.metrics(logits, batch.query_y)

    def _first_order_meta_loss(self, batch: Episode) -> tuple[Tensor, dict[str, Tensor]]:
        """First-order MAML, one task's graph at a time.

        First order treats ``d theta' / d theta`` as the identity, so the meta-gradient is the mean
        query gradient at the adapted weights, ``g = mean_tasks grad_theta' L_query(theta')`` (taken
        with respect to ``theta`` through that identity). Each task's ``g`` is taken at once, which
        frees that task's activations (memory of one task, not of the meta-batch). The returned loss
        has the value of ``L_meta`` and the gradient ``g``: ``L_meta + <theta, g> - <theta, g>.detach()``.

        ``g`` is taken here, not by the training loop's backward pass, so its fp16 loss scaling is done
        here too, as in the inner loop: ``grad(S * L_query) / S`` with ``S = runtime.inner_loss_scale()``.
        """
        params = {name: p for name, p in self.net.named_parameters() if p.requires_grad}
        summed = {name: torch.zeros_like(p) for name, p in params.items()}
        scale = runtime.inner_loss_scale()
        losses, logits = [], []
        for task in zip(batch.support_x, batch.support_y, batch.query_x, batch.query_y):
            task_loss, task_logits = self._query_loss_of_task(*task)
            scaled = task_loss if scale is None else scale * task_loss
            for name, g in zip(params, torch.autograd.grad(scaled, list(params.values()))):
                summed[name] += g if scale is None else g / scale
            losses.append(task_loss.detach())
            logits.append(task_logits.detach())
        n_tasks = len(losses)
        surrogate = sum((p * (summed[name] / n_tasks)).sum() for name, p in params.items())
        loss = torch.stack(losses).mean() + surrogate - surrogate.detach()
        return loss, self.metrics(torch.stack(logits), batch.query_y)

    def metrics(self, logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        if self.task_loss is F.cross_entropy:
            return {"accuracy": (logits.argmax(-1) == targets).float().mean()}
        return {}

    def predict(self, episode: Episode) -> Tensor:
        """Query predictions ``[N*Q, ...]`` of one episode after the evaluation inner loop (no outer graph).

        The episode moves to the network's device first. Adapting and scoring run in eval mode (dropout
        off); every submodule's mode is restored after. With ``transductive`` (the default) all queries
        are scored in one batch, so with the conv net's batch norm (batch statistics) each prediction
        depends on the other queries, as in MAML's code. Without, each query is scored in a batch
        ``[support set; that query]`` and sees the support set only; a network without batch
        statistics (the sinusoid MLP) scores every query on its own either way, in one pass.
        """
        with predicting(self, episode) as episode:
            fast_weights = self.adapt(episode.support_x, episode.support_y, training=False)
            with torch.no_grad():
                if self.transductive or not uses_batch_statistics(self.net):
                    return functional_call(self.net, fast_weights, (episode.query_x,))
                return one_query_at_a_time(lambda x: functional_call(self.net, fast_weights, (x,)),
                                           episode.support_x, episode.query_x)[1]


def loss(maml: MAML, batch: Episode) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loop's ``loss_fn``: :meth:`MAML.meta_loss`."""
    return maml.meta_loss(batch)


def predict(maml: MAML, episode: Episode) -> Tensor:
    """The evaluation protocol's ``predict``: :meth:`MAML.predict`."""
    return maml.predict(episode)
