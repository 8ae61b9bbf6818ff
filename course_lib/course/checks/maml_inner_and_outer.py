"""Checkers of exercise set 03_maml_inner_and_outer: MAML's functional inner update and its meta-loss.

Each checker calls the learner's function on known cases under a time limit and raises
``AssertionError`` with a message that names the mistake, or prints what passed.
"""
from __future__ import annotations

from typing import Callable

import torch

from ...data.episodes import Episode
from .base import time_limit, _fail, _fail_naming_the_mistake


def _sinusoid_meta_batch(tasks: int = 3):
    """A tiny float64 regression problem for the MAML checks: an MLP and a few sinusoid tasks."""
    from ...data.sinusoid import SinusoidTasks
    from ...models import MLP

    torch.manual_seed(0)
    net = MLP((1, 8, 8, 1)).double()
    batch = SinusoidTasks(k_shot=5, n_query=5).sample_batch(tasks, torch.Generator().manual_seed(0))
    batch = Episode(batch.support_x.double(), batch.support_y.double(), batch.query_x.double(),
                    batch.query_y.double(), batch.task)
    return net, batch


def _reference_meta_loss(net, batch, inner_lr, inner_steps, first_order):
    from ...meta.maml import MAML

    return MAML(net, inner_lr=inner_lr, inner_steps=inner_steps, first_order=first_order,
                task_loss=torch.nn.functional.mse_loss).meta_loss(batch)[0]


def _evaluate_at(net, params, x):
    return torch.func.functional_call(net, params, (x,))


def _gradient(net, loss) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, net.parameters())])


def check_inner_update(inner_update: Callable, seconds: float = 10) -> None:
    """Check ``inner_update(net, params, support_x, support_y, inner_lr, loss_fn, create_graph) -> params``."""
    name = "inner_update"
    mse = torch.nn.functional.mse_loss
    net, batch = _sinusoid_meta_batch(1)
    task = batch[0]
    params = dict(net.named_parameters())
    before = {k: v.detach().clone() for k, v in params.items()}
    with time_limit(seconds, name):
        adapted = inner_update(net, params, task.support_x, task.support_y, 0.1, mse, True)
        if not isinstance(adapted, dict) or set(adapted) != set(params):
            _fail(name, f"should return a dict with the keys {sorted(params)}, got {type(adapted).__name__}")
        if any(not torch.equal(before[k], params[k]) for k in params):
            _fail(name, "the network's parameters changed: build new tensors, do not update params in place")
        if adapted is params:
            _fail(name, "returned the same dict it was given: return a new dict of new tensors")
        from ...meta.maml import MAML
        expected = MAML(net, inner_lr=0.1, task_loss=mse).adapt(task.support_x, task.support_y)
        for key in params:
            if adapted[key].shape != params[key].shape:
                _fail(name, f"{key} has shape {tuple(adapted[key].shape)}, expected {tuple(params[key].shape)}")
            if not torch.allclose(adapted[key], expected[key], atol=1e-10):
                step = adapted[key] - params[key]
                hint = (" (the step has the wrong sign: subtract the gradient)"
                        if torch.allclose(step, -(expected[key] - params[key]), atol=1e-10) else
                        ": theta' = theta - inner_lr * gradient of the support loss at params")
                _fail(name, f"adapted {key} is wrong{hint}")
        query_loss = mse(_evaluate_at(net, adapted, task.query_x), task.query_y)
        if not query_loss.requires_grad:
            _fail(name, "the adapted weights are cut off from the graph (detached?): no gradient can reach theta")
        second = _gradient(net, query_loss)
        want = _gradient(net, mse(_evaluate_at(net, expected, task.query_x), task.query_y))
        if not torch.allclose(second, want, rtol=1e-6, atol=1e-10):
            _fail(name, "with create_graph=True the outer gradient must flow through the inner step: pass "
                        "create_graph=create_graph to torch.autograd.grad (the Hessian term is missing)")
        first_params = dict(net.named_parameters())
        first = inner_update(net, first_params, task.support_x, task.support_y, 0.1, mse, False)
        first_gradient = _gradient(net, mse(_evaluate_at(net, first, task.query_x), task.query_y))
        if torch.allclose(first_gradient, second, rtol=1e-6, atol=1e-10):
            _fail(name, "create_graph=False should give the first-order gradient, but the Hessian term is still there")
    print(f"{name}: all checks passed")


def check_maml_meta_loss(maml_meta_loss: Callable, seconds: float = 20) -> None:
    """Check ``maml_meta_loss(net, batch, inner_lr, inner_steps, loss_fn, first_order) -> scalar``."""
    name = "maml_meta_loss"
    mse = torch.nn.functional.mse_loss
    net, batch = _sinusoid_meta_batch(3)
    with time_limit(seconds, name):
        for steps, first_order in [(1, False), (2, False), (2, True)]:
            loss = maml_meta_loss(net, batch, 0.05, steps, mse, first_order)
            if not torch.is_tensor(loss) or loss.dim() != 0:
                _fail(name, f"should return a scalar tensor, got {loss!r}")
            want = _reference_meta_loss(net, batch, 0.05, steps, first_order)
            order = "first" if first_order else "second"
            if not torch.allclose(loss, want, rtol=1e-8):
                single = _reference_meta_loss(net, Episode(*(t[:1] for t in (batch.support_x, batch.support_y,
                                                  batch.query_x, batch.query_y)), batch.task[:1]), 0.05, steps, first_order)
                hint = ("it equals the loss of the first task only: average over all tasks"
                        if torch.allclose(loss, single, rtol=1e-8) else
                        f"with {steps} inner step(s) the mean query loss after adaptation should be {want.item():.6f}")
                _fail(name, f"{order} order, {steps} inner step(s): got {loss.item():.6f}; {hint}")
            if not torch.allclose(_gradient(net, loss), _gradient(net, want), rtol=1e-6, atol=1e-10):
                _fail(name, f"{order} order, {steps} inner step(s): the value is right but the meta-gradient is not: "
                            "check create_graph=not first_order in the inner updates")
    print(f"{name}: all checks passed")


def check_prototype_head(prototype_head: Callable, seconds: float = 10) -> None:
    """Check ``prototype_head(support_embeddings [N*K, D], support_y [N*K], n_way) -> (weight [N, D], bias [N])``,
    Proto-MAML's head (Triantafillou et al. 2020): ``w_k = 2 c_k``, ``b_k = -||c_k||^2`` with ``c_k`` the mean
    embedding of class ``k``, so that ``w_k . f + b_k = -||f - c_k||^2 + ||f||^2``: ProtoNet's classifier."""
    name = "prototype_head"
    generator = torch.Generator().manual_seed(0)
    n_way, k_shot, dim = 3, 2, 4
    labels = torch.randperm(n_way * k_shot, generator=generator) % n_way     # support sets need not be sorted
    embeddings = torch.randn(n_way * k_shot, dim, generator=generator, dtype=torch.float64) + 2 * labels[:, None]
    originals = embeddings.clone(), labels.clone()
    centres = torch.stack([embeddings[labels == k].mean(0) for k in range(n_way)])
    sums = torch.stack([embeddings[labels == k].sum(0) for k in range(n_way)])
    sorted_centres = torch.stack([embeddings[k * k_shot:(k + 1) * k_shot].mean(0) for k in range(n_way)])
    mistakes = [
        ((centres, -centres.pow(2).sum(1)), "the weight is 2 c_k: -||f - c||^2 = 2 c.f - ||c||^2 - ||f||^2"),
        ((2 * centres, centres.pow(2).sum(1)), "the bias is -||c_k||^2 (minus the squared length)"),
        ((2 * centres, -centres.norm(dim=1)), "the bias is -||c_k||^2: the squared length, not the length"),
        ((2 * centres, torch.zeros(n_way, dtype=torch.float64)),
         "the bias -||c_k||^2 is needed: without it the head prefers prototypes of large norm"),
        ((2 * sums, -sums.pow(2).sum(1)), "c_k is the mean of the class's embeddings, not their sum"),
        ((2 * sorted_centres, -sorted_centres.pow(2).sum(1)),
         "the support set is not sorted by label: pick the rows of class k with support_y == k"),
    ]
    with time_limit(seconds, name):
        got = prototype_head(embeddings, labels, n_way)
        if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)):
            _fail(name, "should return a tuple (weight [N, D], bias [N])")
        weight, bias = (t.double() for t in got)
        if tuple(weight.shape) != (n_way, dim) or tuple(bias.shape) != (n_way,):
            _fail(name, f"expected weight [{n_way}, {dim}] and bias [{n_way}], got {tuple(weight.shape)} "
                        f"and {tuple(bias.shape)}")
        if not (torch.equal(embeddings, originals[0]) and torch.equal(labels, originals[1])):
            _fail(name, "the inputs were changed in place")
        if not (torch.allclose(weight, 2 * centres, atol=1e-8) and torch.allclose(bias, -centres.pow(2).sum(1), atol=1e-8)):
            _fail_naming_the_mistake(
                name, lambda wrong: torch.allclose(weight, wrong[0], atol=1e-8) and torch.allclose(bias, wrong[1], atol=1e-8),
                mistakes, "expected weight = 2 c_k and bias = -||c_k||^2, c_k the mean embedding of class k")
    print(f"{name}: all checks passed")
