"""The one inner loop of the course: ``params -> adapted params``, shared by MAML and Reptile.

Derived in 03_maml (SGD steps, second and first order, ANIL, Meta-SGD) and 04_reptile (mini-batches,
Adam). Starting from the weights ``theta`` (a dict ``Params`` of name -> tensor, the shapes of the
network's parameters), the loop takes one step per entry of ``step_losses``; step ``t`` sees its own
loss ``L_t(params) -> scalar`` (the support set, or a mini-batch of it, any model and any loss):

    phi_0 = theta
    g_t   = grad_phi L_t(phi_{t-1})                 (only the adapted entries of phi move)
    SGD:  phi_t = phi_{t-1} - alpha * g_t
    Adam: m_t = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2,   m_0 = v_0 = 0 (per task)
          phi_t = phi_{t-1} - alpha * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

``alpha`` is one number, or one tensor per adapted parameter (Meta-SGD: the shape of that parameter,
meta-learned). Adam's defaults ``betas=(0, 0.999)`` are those of the official Reptile code
(github.com/openai/supervised-reptile).

How the result depends on ``theta`` (what the outer loop differentiates):
  * ``create_graph=True``: through every step, Hessian terms included (second-order MAML);
  * ``create_graph=False``: each ``g_t`` is a constant, so ``d phi / d theta`` is the identity (first-order
    MAML; Reptile, whose ``theta`` comes in detached, builds no graph at all).

Shapes: every tensor of ``Params`` has its parameter's shape (the same for ``phi``, the moments and a
Meta-SGD ``alpha``); under ``vmap`` over a meta-batch of ``B`` tasks the results gain a leading ``[B]``.

The gradient is taken by a function given as an argument, so the same loop runs one task at a time and
under ``torch.func.vmap`` over a meta-batch of tasks:
  * :func:`autograd_gradient`: ``torch.autograd.grad``, for a per-task loop;
  * :func:`func_gradient`: ``torch.func.grad_and_value``, which composes with ``vmap``.

Mixed precision. Under fp16 autocast the backward pass of a small support loss underflows: entries of
``g_t`` become exact zeros (fp16's smallest subnormal is ``6e-8``) and a layer may not move at all. Inside
``runtime.autocast(device, torch.float16, loss_scale=S)`` (the training loop passes its gradient scaler's
current scale) every step therefore takes

    g_t = grad_phi (S * L_t(phi_{t-1})) / S

the same gradient, with every intermediate value of the backward pass ``S`` times larger; the division is
done on the fp32 gradient of the fp32 weights, so it loses nothing. Scaling rather than an fp32 inner loop:
the inner loop is where MAML and Reptile spend their compute (all of Reptile's), so fp32 there would give
up most of what fp16 buys. It stays right to second order: the outer backward pass through ``g_t`` sees
``S`` divided out again. An overflow (``S * L_t``'s backward beyond fp16's 65504) makes ``phi`` and the
query loss non-finite; the training loop then leaves the step to its scaler, which skips it and halves
``S``, as for an overflow of the outer gradient. bf16 and fp32 need no scaling (``S`` is then None).

Example (one task, three SGD steps on the support set; ``net`` any module, its input a tensor or a dict)::

    loss = lambda params: support_loss(net, params, support_x, support_y, F.cross_entropy)
    fast_weights, last_loss = inner_loop(dict(net.named_parameters()), [loss] * 3, step_size=0.4)
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

from .. import runtime

Params = dict[str, Tensor]
LossOfParams = Callable[[Params], Tensor]
Gradient = Callable[[LossOfParams, Params, bool], tuple[Params, Tensor]]
StepSize = float | Tensor | Mapping[str, float | Tensor]

UPDATE_RULES = ("sgd", "adam")


def support_loss(net: nn.Module, params: Params, support_x: Tensor | Mapping[str, Tensor], support_y: Tensor,
                 task_loss: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``L_support(params) = task_loss(f(support_x; params), support_y)``, the network run at ``params``.

    ``torch.func.functional_call`` evaluates the network at the given weights: assigning weights to the
    module (``model.parameters = fast_weights``) would change nothing (00_orientation).
    """
    return task_loss(functional_call(net, params, (support_x,)), support_y)


def autograd_gradient(loss_of: LossOfParams, params: Params, create_graph: bool) -> tuple[Params, Tensor]:
    """``(grad_params loss_of(params), loss_of(params))`` with ``torch.autograd.grad``, one task at a time.

    With ``create_graph`` the gradient keeps its graph (second order); without, it is taken at detached
    copies of ``params``, a constant. Gradients are on even where the caller turned them off (prediction).
    """
    with torch.enable_grad():
        if not create_graph:
            params = {name: p.detach().requires_grad_() for name, p in params.items()}
        loss = loss_of(params)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return dict(zip(params, grads)), loss.detach()


def func_gradient(loss_of: LossOfParams, params: Params, create_graph: bool) -> tuple[Params, Tensor]:
    """The same with ``torch.func.grad_and_value``, which works under ``torch.func.vmap``.

    Its gradient stays differentiable for the outer backward pass unless ``create_graph=False`` detaches it.
    """
    grads, loss = grad_and_value(loss_of)(params)
    if not create_graph:
        grads = {name: g.detach() for name, g in grads.items()}
    return grads, loss.detach()


def inner_loop(params: Params, step_losses: Sequence[LossOfParams], step_size: StepSize,
               adapted: Sequence[str] | None = None, update: str = "sgd", create_graph: bool = False,
               gradient: Gradient = autograd_gradient, betas: tuple[float, float] = (0.0, 0.999),
               eps: float = 1e-8) -> tuple[Params, Tensor]:
    """``phi = U(theta)``: one SGD or Adam step per loss in ``step_losses`` (see the module docstring).

    Args:
        params: ``theta``, every weight the losses need (name -> tensor); it is not changed.
        step_losses: ``L_t(params) -> scalar`` for each step ``t``; ``[loss] * k`` for ``k`` steps on one set.
        step_size: ``alpha``: a number, or (Meta-SGD) a dict from each adapted name to a tensor of its shape.
        adapted: the names that move (the fast weights); the others stay as given. Default: all.
        update: ``"sgd"`` or ``"adam"`` (state zero at the start of every call, i.e. of every task).
        create_graph: keep the graph through the steps (second-order MAML).
        gradient: :func:`autograd_gradient` (per task) or :func:`func_gradient` (under ``vmap``).

    Returns:
        the adapted weights (the keys of ``params``) and the loss of the last step (NaN without steps).
    """
    if update not in UPDATE_RULES:
        raise ValueError(f"unknown inner update {update!r}: choose one of {', '.join(UPDATE_RULES)}")
    names = list(params) if adapted is None else list(adapted)
    missing = [name for name in names if name not in params]
    if missing:
        raise ValueError(f"adapted weights {missing} are not among the params {sorted(params)}")
    if isinstance(step_size, Mapping) and set(step_size) != set(names):
        raise ValueError(f"step sizes are given for {sorted(step_size)}, the adapted weights are {sorted(names)}")
    alpha = {name: step_size[name] if isinstance(step_size, Mapping) else step_size for name in names}
    fast = {name: params[name] for name in names}
    frozen = {name: p for name, p in params.items() if name not in fast}
    if update == "adam":
        moments = ({n: torch.zeros_like(p) for n, p in fast.items()}, {n: torch.zeros_like(p) for n, p in fast.items()})
    loss = torch.full((), float("nan"), device=next(iter(params.values())).device)
    scale = runtime.inner_loss_scale()   # S under fp16 autocast, else None (see the module docstring)
    for step, step_loss in enumerate(step_losses, start=1):
        if scale is None:
            grads, loss = gradient(lambda weights: step_loss({**frozen, **weights}), fast, create_graph)
        else:
            grads, loss = gradient(lambda weights: scale * step_loss({**frozen, **weights}), fast, create_graph)
            grads, loss = {n: g / scale for n, g in grads.items()}, loss / scale
        if update == "sgd":
            fast = {n: p - alpha[n] * grads[n] for n, p in fast.items()}
        else:
            fast, moments = adam_step(fast, grads, moments, step, alpha, betas, eps)
    return {**params, **fast}, loss


def adam_step(params: Params, grads: Params, moments: tuple[Params, Params], step: int,
              alpha: Mapping[str, float | Tensor], betas: tuple[float, float],
              eps: float) -> tuple[Params, tuple[Params, Params]]:
    """Adam's step ``t = step`` (from 1): the moments ``(m, v)`` updated and
    ``phi - alpha * m_hat / (sqrt(v_hat) + eps)``, with the bias corrections ``m_hat = m / (1 - b1^t)``,
    ``v_hat = v / (1 - b2^t)``."""
    beta1, beta2 = betas
    m = {n: beta1 * moments[0][n] + (1 - beta1) * g for n, g in grads.items()}
    v = {n: beta2 * moments[1][n] + (1 - beta2) * g * g for n, g in grads.items()}
    new = {n: p - alpha[n] * (m[n] / (1 - beta1 ** step)) / ((v[n] / (1 - beta2 ** step)).sqrt() + eps)
           for n, p in params.items()}
    return new, (m, v)
