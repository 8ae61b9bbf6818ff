"""Checkers of exercise set 05_prototypes_and_distances: prototypes, squared Euclidean distances, ProtoNet's logits.

Each checker calls the learner's function on known cases under a time limit and raises
``AssertionError`` with a message that names the mistake, or prints what passed.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import time_limit, _fail


def _hand_embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    """Six 2-D embeddings of 3 classes, labels in shuffled order and unequal counts (1, 2 and 3 shots)."""
    embeddings = torch.tensor([[1.0, 0.0], [4.0, 4.0], [0.0, 6.0], [3.0, 2.0], [2.0, 3.0], [6.0, 2.0]])
    labels = torch.tensor([0, 2, 1, 2, 1, 2])
    return embeddings, labels


def check_prototypes(prototypes: Callable, seconds: float = 10) -> None:
    """Check ``prototypes(embeddings [N*K, D], labels [N*K], n_way) -> [N, D]`` class means."""
    name = "prototypes"
    embeddings, labels = _hand_embeddings()
    want = torch.tensor([[1.0, 0.0], [1.0, 4.5], [13 / 3, 8 / 3]])
    with time_limit(seconds, name):
        got = prototypes(embeddings, labels, 3)
        if not isinstance(got, torch.Tensor):
            _fail(name, f"should return a tensor [n_way, D], got {type(got).__name__}")
        if tuple(got.shape) != (3, 2):
            _fail(name, f"should return one row per class, [n_way, D] = (3, 2) here, got {tuple(got.shape)}")
        if not torch.allclose(got.float(), want, atol=1e-5):
            counts = labels.bincount(minlength=3)[:, None].float()
            if torch.allclose(got.float(), want * counts, atol=1e-5):
                hint = "you summed the embeddings of each class: divide by the number of examples of that class"
            elif torch.allclose(got.float(), want * counts / 2, atol=1e-5):
                hint = ("you divided every class's sum by the same number (N*K / n_way): "
                        "classes may have different numbers of examples, divide by each class's own count")
            elif torch.allclose(got.float(), embeddings.mean(0).expand(3, -1), atol=1e-5):
                hint = "every row is the mean of the whole support set: average only the examples with label k"
            elif any(torch.allclose(got.float(), grouped, atol=1e-5)
                     for grouped in (embeddings.view(3, 2, 2).mean(1), embeddings.view(2, 3, 2).mean(0))):
                hint = ("you reshaped the support set as if it were grouped by class: its order is not guaranteed, "
                        "select the examples of class k with the labels (labels == k)")
            else:
                hint = "row k should be the mean of the embeddings whose label is k"
            _fail(name, f"on a hand case (labels {labels.tolist()}) the prototypes should be "
                        f"{[[round(v, 3) for v in row] for row in want.tolist()]}, got "
                        f"{[[round(v, 3) for v in row] for row in got.float().tolist()]}: {hint}")
        generator = torch.Generator().manual_seed(0)
        support = torch.randn(20, 64, generator=generator, requires_grad=True)
        labels = torch.randperm(20, generator=generator) % 5
        got = prototypes(support, labels, 5)
        want = torch.stack([support[labels == k].mean(0) for k in range(5)])
        if tuple(got.shape) != (5, 64) or not torch.allclose(got, want, atol=1e-5):
            _fail(name, "a 5-way 4-shot support set of 64-d embeddings gave wrong prototypes: "
                        "check that you average over examples (dim 0), not over features")
        if not got.requires_grad:
            _fail(name, "the prototypes lost their gradient: meta-training backpropagates through them, so use "
                        "torch operations only (no .numpy(), .item(), .tolist() or torch.no_grad())")
    print(f"{name}: all checks passed")


def check_squared_euclidean(squared_euclidean: Callable, seconds: float = 10) -> None:
    """Check ``squared_euclidean(a [M, D], b [N, D]) -> [M, N]`` of squared distances ``||a_i - b_j||^2``."""
    name = "squared_euclidean"
    a = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [3.0, 0.0, 4.0], [1.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    want = torch.tensor([[0.0, 1.0], [9.0, 8.0], [25.0, 20.0], [3.0, 2.0]])
    with time_limit(seconds, name):
        got = squared_euclidean(a, b)
        if not isinstance(got, torch.Tensor):
            _fail(name, f"should return a tensor [M, N], got {type(got).__name__}")
        if tuple(got.shape) == (2, 4):
            _fail(name, "the result is transposed: row i should hold the distances of a[i] (the queries) "
                        "to every row of b (the prototypes), shape [M, N] = (4, 2) here")
        if tuple(got.shape) != (4, 2):
            _fail(name, f"for a [4, 3] and b [2, 3] the result should be [4, 2], got {tuple(got.shape)}: "
                        "compare every row of a with every row of b, summing over the D features")
        got = got.float()
        if not torch.allclose(got, want, atol=1e-4):
            if torch.allclose(got, want.sqrt(), atol=1e-4):
                hint = ("you returned the Euclidean distance (torch.cdist, or a square root); ProtoNet uses its "
                        "square ||a_i - b_j||^2: that is what makes it a linear classifier")
            elif torch.allclose(got, -want, atol=1e-4):
                hint = "you returned minus the distance: return the distance; the logits are its negative"
            elif torch.allclose(got, want / 3, atol=1e-4):
                hint = "you averaged over the D features: sum the squared differences instead"
            else:
                hint = "entry (i, j) should be sum over d of (a[i, d] - b[j, d])**2"
            _fail(name, f"on a hand case the squared distances should be {want.tolist()}, got {got.tolist()}: {hint}")
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(75, 64, generator=generator, requires_grad=True)
        b = torch.randn(5, 64, generator=generator)
        got = squared_euclidean(a, b)
        if not torch.allclose(got, ((a[:, None] - b[None]) ** 2).sum(-1), rtol=1e-4, atol=1e-3):
            _fail(name, "75 queries against 5 prototypes in 64-d gave wrong distances: the hand case passed, "
                        "so look for a loop or a shape that only works for small inputs")
        if not got.requires_grad:
            _fail(name, "the distances lost their gradient: use torch operations only (no .numpy() or .item())")
    print(f"{name}: all checks passed")


def check_protonet_logits(protonet_logits: Callable, seconds: float = 10) -> None:
    """Check ``protonet_logits(support [N*K, D], support_y [N*K], query [N*Q, D], n_way) -> [N*Q, N]``,
    the logits ``-||f(x) - c_k||^2`` of Prototypical Networks (up to a constant per query, which
    leaves the softmax unchanged: the linear-head form ``2 c_k . f(x) - ||c_k||^2`` passes too)."""
    name = "protonet_logits"
    support, support_y = _hand_embeddings()
    query = torch.tensor([[1.0, 1.0], [1.0, 4.0], [4.0, 3.0]])
    protos = torch.tensor([[1.0, 0.0], [1.0, 4.5], [13 / 3, 8 / 3]])
    want = -((query[:, None] - protos[None]) ** 2).sum(-1)
    with time_limit(seconds, name):
        got = protonet_logits(support, support_y, query, 3)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (3, 3):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            _fail(name, f"should return logits [N*Q, n_way] = (3, 3) here, got {shape}")
        got = got.float()
        if not torch.allclose(got.log_softmax(1), want.log_softmax(1), atol=1e-4):
            if torch.allclose(got, -want, atol=1e-4):
                hint = "you returned the distances: a larger logit must mean a closer prototype, so negate them"
            elif torch.allclose(got, -(-want).sqrt(), atol=1e-4):
                hint = "you used the Euclidean distance; ProtoNet uses the squared distance"
            else:
                hint = "compute the prototypes of the support set, then minus the squared distances to them"
            _fail(name, f"on a hand case the logits should be "
                        f"{[[round(v, 3) for v in row] for row in want.tolist()]}, got "
                        f"{[[round(v, 3) for v in row] for row in got.tolist()]}: {hint}")
        if got.argmax(1).tolist() != [0, 1, 2]:
            _fail(name, "each query should be closest to its own class's prototype here")
    print(f"{name}: all checks passed")
