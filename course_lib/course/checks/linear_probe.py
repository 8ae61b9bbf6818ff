"""Checkers of exercise set 02_linear_probe: the linear probe on frozen features.

Each checker calls the learner's function on known cases under a time limit and raises
``AssertionError`` with a message that names the mistake, or prints what passed.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import time_limit, _fail, _fail_naming_the_mistake


def _direction_clusters(n_way: int, per_class: int, dim: int,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative features separable by direction: class ``k`` points mostly along axis ``k``, with a
    random length per example; labels in shuffled order (a support set need not be sorted by label)."""
    labels = torch.randperm(n_way * per_class, generator=generator) % n_way
    x = 0.2 * torch.rand(len(labels), dim, generator=generator)
    x[torch.arange(len(labels)), labels] += 1.0
    return x * (0.5 + 4 * torch.rand(len(labels), 1, generator=generator)), labels


def check_linear_probe(linear_probe: Callable, seconds: float = 30) -> None:
    """Check ``linear_probe(support_features [N*K, D], support_y [N*K], query_features [N*Q, D], n_way)
    -> query logits [N*Q, n_way]`` of a logistic regression fitted on L2-normalised support features.

    The learner's function is called with the global torch seed reset each time, so a probe that
    starts from random weights gives the same fit on the same support set.
    """
    name = "linear_probe"
    generator = torch.Generator().manual_seed(0)
    support, support_y = _direction_clusters(5, 3, 16, generator)
    query, query_y = _direction_clusters(5, 4, 16, generator)
    originals = support.clone(), query.clone()

    def probe(support_features, labels, query_features, n_way):
        torch.manual_seed(0)
        logits = linear_probe(support_features, labels, query_features, n_way)
        return logits.detach().float() if isinstance(logits, torch.Tensor) else logits

    with time_limit(seconds, name):
        got = probe(support, support_y, query, 5)
        if not isinstance(got, torch.Tensor):
            _fail(name, f"should return a tensor of query logits [N*Q, n_way], got {type(got).__name__}")
        if not (torch.equal(support, originals[0]) and torch.equal(query, originals[1])):
            _fail(name, "the features passed in were changed: normalise into new tensors (F.normalize(x, dim=-1) "
                        "or x / x.norm(dim=-1, keepdim=True)); `x /= ...` overwrites the caller's features")
        if tuple(got.shape) == (20,):
            _fail(name, "returned one value per query (labels?): return the logits [N*Q, n_way] = (20, 5) here; "
                        "the evaluation takes their argmax")
        if tuple(got.shape) == (5, 20):
            _fail(name, "returned [n_way, N*Q] = (5, 20): the logits are transposed, one row per query is expected")
        if tuple(got.shape) != (20, 5):
            _fail(name, f"should return logits [N*Q, n_way] = (20, 5) for 20 queries of a 5-way task, "
                        f"got {tuple(got.shape)}")
        if not torch.equal(probe(support, support_y, support, 5).argmax(1), support_y):
            _fail(name, "does not fit linearly separable features: the fitted head should classify every support "
                        "example correctly. Use support_y as the targets (the support set is not sorted by label) "
                        "and minimise the cross-entropy long enough (e.g. 100 steps of Adam with lr 0.1)")
        rescaled = probe(3 * support, support_y, 0.5 * query, 5)
        if not torch.allclose(rescaled, got, rtol=1e-2, atol=0.05):
            _fail(name, "the logits changed when the features were rescaled (support x3, queries x0.5): "
                        "L2-normalise every feature vector, z = x / ||x|| over the last dimension, "
                        "before fitting and before predicting")
        alone = probe(support, support_y, query[:2], 5)
        if not torch.allclose(alone, got[:2], rtol=1e-2, atol=0.05):
            _fail(name, "the logits of the first two queries changed when the other queries were left out: "
                        "fit on the support set only, and normalise each query on its own (x.norm() without dim=-1 "
                        "divides by the norm of the whole matrix)")
        if not torch.equal(got.argmax(1), query_y):
            _fail(name, "fits the support set but misclassifies queries of a linearly separable task: "
                        "predict with the fitted weights on the normalised query features, W z + b")
        support3, support3_y = _direction_clusters(3, 5, 8, generator)
        query3, query3_y = _direction_clusters(3, 4, 8, generator)
        got3 = probe(support3, support3_y, query3, 3)
        if tuple(got3.shape) != (12, 3):
            _fail(name, f"for a 3-way task with 12 queries the logits should be (12, 3), got {tuple(got3.shape)}: "
                        "use n_way and the shapes of the inputs, not fixed sizes")
        if not torch.equal(got3.argmax(1), query3_y):
            _fail(name, "misclassifies a linearly separable 3-way 5-shot task in 8 dimensions")
    print(f"{name}: all checks passed")


def check_cosine_logits(cosine_logits: Callable, seconds: float = 10) -> None:
    """Check ``cosine_logits(features [n, D], weight [N, D], scale) -> [n, N]``, the head of Baseline++
    (Chen et al. 2019): ``scale * cos(w_k, x)``, each feature row and each class row normalised to unit length."""
    name = "cosine_logits"
    generator = torch.Generator().manual_seed(0)
    features = 3 * torch.rand(6, 4, generator=generator, dtype=torch.float64) + 0.1
    weight = torch.randn(3, 4, generator=generator, dtype=torch.float64) * torch.tensor([[0.5], [2.0], [7.0]])
    originals = features.clone(), weight.clone()
    scale = 2.0

    def unit(x, dim=-1):
        return x / x.norm(dim=dim, keepdim=True)

    right = scale * unit(features) @ unit(weight).T
    mistakes = [
        (scale * unit(features) @ weight.T, "normalise the class weights too: each row w_k of weight to unit length"),
        (scale * features @ unit(weight).T, "normalise the features too: each row x to unit length"),
        (scale * features @ weight.T, "that is a linear head: divide by the lengths of x and of w_k (a cosine)"),
        (unit(features) @ unit(weight).T, "multiply the cosines by scale"),
        (scale * unit(features, 0) @ unit(weight, 0).T, "normalise each row (dim=-1), not each column"),
        (-scale * torch.cdist(unit(features), unit(weight)), "a cosine, not a distance between the unit vectors"),
    ]
    with time_limit(seconds, name):
        got = cosine_logits(features, weight, scale)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (6, 3):
            _fail(name, f"should return a tensor [n, N] = [6, 3], got "
                        f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        if not (torch.equal(features, originals[0]) and torch.equal(weight, originals[1])):
            _fail(name, "the inputs were changed in place: build new tensors (x / x.norm(...), not x /= ...)")
        if not torch.allclose(got.double(), right, atol=1e-6):
            _fail_naming_the_mistake(name, lambda wrong: torch.allclose(got.double(), wrong, atol=1e-6), mistakes,
                                     "expected scale * (x / ||x||) @ (w / ||w||).T, one row per feature, one column per class")
        if not torch.allclose(cosine_logits(5 * features, 0.1 * weight, scale).double(), right, atol=1e-6):
            _fail(name, "the logits changed when x and w were rescaled: a cosine ignores lengths")
        batched = cosine_logits(torch.stack([features, 2 * features]), torch.stack([weight, weight.flip(0)]), scale)
        if not (isinstance(batched, torch.Tensor) and tuple(batched.shape) == (2, 6, 3)
                and torch.allclose(batched.double(), torch.stack([right, right.flip(1)]), atol=1e-6)):
            _fail(name, "with a leading episode dimension (x [E, n, D], weight [E, N, D]) the logits should be "
                        "[E, n, N], episode by episode: transpose the last two dimensions (.transpose(-2, -1)), not .T")
    print(f"{name}: all checks passed")
