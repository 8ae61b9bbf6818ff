"""Checkers of exercise set 04_reptile_step: Reptile's outer step.

Each checker calls the learner's function on known cases under a time limit and raises
``AssertionError`` with a message that names the mistake, or prints what passed.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import time_limit, _fail, _fail_naming_the_mistake


def check_reptile_step(reptile_step: Callable, seconds: float = 10) -> None:
    """Check ``reptile_step(theta, adapted_params, outer_lr) -> new theta`` (Reptile's outer step, 04_reptile).

    ``theta`` and each element of the list ``adapted_params`` are dicts of tensors with the same names;
    the answer is ``theta + outer_lr * (mean over tasks of phi - theta)``, as new tensors.
    """
    name = "reptile_step"
    generator = torch.Generator().manual_seed(0)
    theta = {"hidden.weight": torch.randn(4, 3, generator=generator, dtype=torch.float64),
             "hidden.bias": torch.randn(4, generator=generator, dtype=torch.float64)}
    adapted = [{key: p + torch.randn(p.shape, generator=generator, dtype=torch.float64) for key, p in theta.items()}
               for _ in range(3)]
    originals = ({k: v.clone() for k, v in theta.items()}, [{k: v.clone() for k, v in phi.items()} for phi in adapted])

    def interpolate(target: dict, weight: float) -> dict:
        return {k: theta[k] + weight * (target[k] - theta[k]) for k in theta}

    mean = {k: torch.stack([phi[k] for phi in adapted]).mean(dim=0) for k in theta}
    outer_lr = 0.2
    mistakes = [
        ({k: theta[k] - outer_lr * (mean[k] - theta[k]) for k in theta},
         "theta moves away from the adapted weights: the step is + outer_lr * (mean phi - theta)"),
        (interpolate(adapted[-1], outer_lr), "only the last task's adapted weights were used: average over all tasks"),
        (interpolate(adapted[0], outer_lr), "only the first task's adapted weights were used: average over all tasks"),
        (interpolate(mean, outer_lr * len(adapted)), "the task differences were summed: average them (divide by the number of tasks)"),
        (mean, "returned the mean of the adapted weights: that is the update for outer_lr = 1 only; interpolate with outer_lr"),
        (interpolate(mean, 1 - outer_lr), "the interpolation weights are swapped: theta keeps the weight 1 - outer_lr"),
        ({k: theta[k] - mean[k] for k in theta}, "returned the pseudo-gradient theta - mean phi, not the new theta"),
        ({k: outer_lr * (mean[k] - theta[k]) for k in theta}, "returned only the step: add it to theta"),
    ]
    with time_limit(seconds, name):
        got = reptile_step(theta, adapted, outer_lr)
        if not isinstance(got, dict) or set(got) != set(theta):
            _fail(name, f"should return a dict with the keys of theta {sorted(theta)}, got {type(got).__name__}")
        if any(not torch.equal(theta[k], originals[0][k]) for k in theta):
            _fail(name, "theta was changed in place: return new tensors (theta[name] + ..., not theta[name] += ...)")
        if any(not torch.equal(phi[k], old[k]) for phi, old in zip(adapted, originals[1]) for k in theta):
            _fail(name, "the adapted weights were changed in place: leave them as they are")
        for k in theta:
            if tuple(got[k].shape) != tuple(theta[k].shape):
                _fail(name, f"{k} has shape {tuple(got[k].shape)}, expected {tuple(theta[k].shape)}")
        if not all(torch.allclose(got[k], want, atol=1e-10) for k, want in interpolate(mean, outer_lr).items()):
            _fail_naming_the_mistake(name, lambda wrong: all(torch.allclose(got[k], wrong[k], atol=1e-10) for k in theta),
                                     mistakes, "expected theta + outer_lr * (mean over tasks of phi - theta) for every "
                                               "parameter name")
        single = reptile_step(theta, adapted[1:2], 1.0)
        if not all(torch.allclose(single[k], adapted[1][k], atol=1e-10) for k in theta):
            _fail(name, "with one task and outer_lr = 1 the new theta should be that task's adapted weights")
    print(f"{name}: all checks passed")


class _QuadraticLoss:
    """``L(w, b) = scale/2 ||w - target||^2 + scale/2 b^2``, gradient ``(scale (w - target), scale b)``; a class,
    not a closure, so that the grader can send it to the learner's kernel."""

    def __init__(self, target: torch.Tensor, scale: float) -> None:
        self.target, self.scale = target, scale

    def __call__(self, params: dict) -> torch.Tensor:
        return 0.5 * self.scale * ((params["w"] - self.target).pow(2).sum() + params["b"].pow(2))


def check_joint_training_gradient(joint_training_gradient: Callable, seconds: float = 10) -> None:
    """Check ``joint_training_gradient(theta, support_losses) -> dict``: the gradient at ``theta`` of the mean
    over tasks of the support losses, ``(1/B) sum_i grad L_i(theta)`` (each ``support_losses[i]`` a function of
    a dict of weights returning a scalar), as new tensors with ``theta``'s names."""
    name = "joint_training_gradient"
    generator = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(3, generator=generator, dtype=torch.float64, requires_grad=True),
             "b": torch.randn((), generator=generator, dtype=torch.float64, requires_grad=True)}
    targets = [torch.randn(3, generator=generator, dtype=torch.float64) for _ in range(3)]
    scales = [1.0, 2.0, 5.0]

    losses = [_QuadraticLoss(t, s) for t, s in zip(targets, scales)]
    per_task = [{"w": s * (theta["w"].detach() - t), "b": s * theta["b"].detach()} for t, s in zip(targets, scales)]
    right = {k: torch.stack([g[k] for g in per_task]).mean(0) for k in theta}
    mistakes = [
        ({k: -v for k, v in right.items()}, "the sign is flipped: return the gradient, not the step"),
        ({k: len(losses) * v for k, v in right.items()}, "the task gradients were summed: average them"),
        (per_task[0], "only the first task was used: average over all support losses"),
        (per_task[-1], "only the last task was used: average over all support losses"),
    ]
    with time_limit(seconds, name):
        got = joint_training_gradient(theta, losses)
        if not isinstance(got, dict) or set(got) != set(theta):
            _fail(name, f"should return a dict with the keys of theta {sorted(theta)}, got {type(got).__name__}")
        if any(not torch.allclose(got[k].detach().double(), right[k], atol=1e-10) for k in theta):
            _fail_naming_the_mistake(
                name, lambda wrong: all(torch.allclose(got[k].detach().double(), wrong[k], atol=1e-10) for k in theta),
                mistakes, "expected the mean over tasks of torch.autograd.grad(L_i(theta), theta's tensors)")
        if any(theta[k].grad is not None for k in theta):
            _fail(name, "theta's .grad was written (loss.backward()): use torch.autograd.grad, which leaves it alone")
    print(f"{name}: all checks passed")
