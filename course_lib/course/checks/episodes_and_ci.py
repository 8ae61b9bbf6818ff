"""Checkers of exercise set 01_episodes_and_ci: the episode sampler, the 95% confidence interval, the pixel 1-NN baseline.

Each checker calls the learner's function on known cases under a time limit and raises
``AssertionError`` with a message that names the mistake, or prints what passed.
"""
from __future__ import annotations

from typing import Callable

import torch

from ...data.base import ClassDataset
from ...data.episodes import Episode
from ...evaluate import mean_confidence_interval
from .base import time_limit, _fail, _partial


def _coded_dataset(n_classes: int = 10, per_class: int = 20) -> ClassDataset:
    """A dataset whose examples are numbers: class ``c``, example ``i`` holds ``c * 100 + i``."""
    values = (torch.arange(n_classes)[:, None] * 100 + torch.arange(per_class)[None]).float()
    return ClassDataset(values[..., None], [f"class {c}" for c in range(n_classes)], "coded numbers")


def check_episode_sampler(sample_episode: Callable, seconds: float = 10) -> None:
    """Check ``sample_episode(dataset, n_way, k_shot, n_query, generator) -> Episode``."""
    name = "sample_episode"
    dataset = _coded_dataset()
    with time_limit(seconds, name):
        episode = sample_episode(dataset, 5, 2, 3, torch.Generator().manual_seed(0))
        if not isinstance(episode, Episode):
            _fail(name, f"should return an Episode, got {type(episode).__name__}")
        for field, shape in [("support_x", (10, 1)), ("support_y", (10,)), ("query_x", (15, 1)), ("query_y", (15,))]:
            got = tuple(getattr(episode, field).shape)
            if got != shape:
                _fail(name, f"{field} should have shape {shape} for 5-way 2-shot with 3 queries, got {got}")
        for field in ("support_y", "query_y"):
            if getattr(episode, field).dtype != torch.long:
                _fail(name, f"{field} should hold integer labels (torch.long), got {getattr(episode, field).dtype}")
        if episode.support_y.bincount(minlength=5).tolist() != [2] * 5:
            _fail(name, f"support labels should be 0..4 with 2 examples each, got {episode.support_y.tolist()}")
        if episode.query_y.bincount(minlength=5).tolist() != [3] * 5:
            _fail(name, f"query labels should be 0..4 with 3 examples each, got {episode.query_y.tolist()}")
        support, query = set(episode.support_x.flatten().tolist()), set(episode.query_x.flatten().tolist())
        if len(support) < 10 or len(query) < 15:
            _fail(name, "an example appears twice: draw examples without replacement (torch.randperm)")
        if support & query:
            _fail(name, f"support and query share examples {sorted(support & query)[:3]}: they must be disjoint")
        for x, y, part in [(episode.support_x, episode.support_y, "support"), (episode.query_x, episode.query_y, "query")]:
            classes = (x.flatten() // 100).long()
            for label in range(5):
                if classes[y == label].unique().numel() != 1:
                    _fail(name, f"{part} examples with label {label} come from several classes")
        label_orders = set()
        generator = torch.Generator().manual_seed(1)
        for _ in range(20):
            e = sample_episode(dataset, 5, 1, 1, generator)
            label_orders.add(tuple((e.support_x.flatten()[e.support_y.argsort()] // 100).long().tolist()))
        if len(label_orders) < 15:
            _fail(name, "the classes chosen (or the labels they get) hardly vary between episodes: "
                        "pick classes at random in every call, using the generator")
        if all(list(order) == sorted(order) for order in label_orders):
            _fail(name, "label 0 always goes to the smallest class index: assign labels in random order")
        again = sample_episode(dataset, 5, 2, 3, torch.Generator().manual_seed(0))
        if not torch.equal(again.support_x, episode.support_x):
            _fail(name, "the same generator seed gave a different episode: draw all randomness from `generator`")
    print(f"{name}: all checks passed")


# The named mistakes of a 95% interval's half-width, as functions of the values (float64, 1-D).
def _t_quantile(n: int) -> float:
    from scipy import stats
    return float(stats.t.ppf(0.975, n - 1))


INTERVAL_MISTAKES = [
    (lambda v: _t_quantile(len(v)) * v.std().item(),
     "you forgot to divide by sqrt(n): the half-width is t * sd / sqrt(n), the standard error of the mean"),
    (lambda v: 1.959964 * v.std().item() / len(v) ** 0.5,
     "you used 1.96 (the normal quantile); with few values use Student's t with n-1 degrees of freedom"),
    (lambda v: _t_quantile(len(v)) * v.std(unbiased=False).item() / len(v) ** 0.5,
     "use the sample standard deviation (divide by n-1)"),
    (lambda v: 2 * _t_quantile(len(v)) * v.std().item() / len(v) ** 0.5,
     "return the half-width, not the full width of the interval"),
    (lambda v: _t_quantile(len(v)) * v.std().item() / len(v),
     "you divided by n: the standard error of the mean is sd / sqrt(n)"),
]


def check_confidence_interval(confidence_interval: Callable, seconds: float = 10) -> None:
    """Check ``confidence_interval(values) -> (mean, half_width)`` of a 95% t-interval.

    A mistake is named only if it explains every case (with 4 values, forgetting sqrt(n) = 2 looks like
    returning the full width; the 600-value case tells them apart). A right mean with a wrong half-width
    earns half the points.
    """
    name = "confidence_interval"
    cases = [torch.tensor([0.2, 0.4, 0.6, 0.8]), torch.rand(600, generator=torch.Generator().manual_seed(0))]
    answers = []
    with time_limit(seconds, name):
        for values in cases:
            got = confidence_interval(values)
            if not (isinstance(got, tuple) and len(got) == 2):
                _fail(name, f"should return a tuple (mean, half_width), got {got!r}")
            mean, half = (float(v) for v in got)
            want_mean, want_half = mean_confidence_interval(values)
            if abs(mean - want_mean) > 1e-6:
                _fail(name, f"the mean of {len(values)} values should be {want_mean:.4f}, got {mean:.4f}")
            answers.append((values.double(), half, want_half))
    wrong = [(v, half, want) for v, half, want in answers if abs(half - want) > 1e-4 * max(1.0, want)]
    if not wrong:
        print(f"{name}: all checks passed")
        return
    explained = [hint for mistake, hint in INTERVAL_MISTAKES
                 if all(abs(half - mistake(v)) < 1e-4 * max(1.0, half) for v, half, _ in answers)]
    hint = explained[0] if explained else "half_width = t_{0.975, n-1} * sd / sqrt(n)"
    values, half, want = wrong[0]
    _partial(name, 0.5, f"the mean is right, but for {len(values)} values the half-width should be {want:.5f}, "
                        f"got {half:.5f}: {hint}")


def check_nearest_neighbour(predict: Callable[[Episode], torch.Tensor], seconds: float = 10) -> None:
    """Check ``predict(episode) -> query labels [N*Q]`` of a 1-nearest-neighbour classifier."""
    name = "nearest_neighbour_predict"
    support_x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    query_x = torch.tensor([[1.0, 1.0], [9.0, 2.0], [1.0, 8.0], [6.0, 0.0]])
    support_y = torch.tensor([2, 0, 1])
    episode = Episode(support_x, support_y, query_x, torch.tensor([2, 0, 1, 0]), torch.arange(3))
    with time_limit(seconds, name):
        got = predict(episode)
        if got.shape != (4,):
            _fail(name, f"should return one label per query ([4] here), got shape {tuple(got.shape)}")
        if got.tolist() != [2, 0, 1, 0]:
            _fail(name, f"on a known 2-D case the labels should be [2, 0, 1, 0], got {got.tolist()}: "
                        "return the support *label* of the nearest support example, not its index")
        images = Episode(support_x.view(3, 1, 1, 2), support_y, query_x.view(4, 1, 1, 2),
                         torch.tensor([2, 0, 1, 0]), torch.arange(3))
        if predict(images).tolist() != [2, 0, 1, 0]:
            _fail(name, "images [n, C, H, W] should be flattened to vectors before measuring distances")
    print(f"{name}: all checks passed")
