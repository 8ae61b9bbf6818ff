"""The one evaluation protocol: a metric per held-out episode, then mean and 95% CI.

Introduced in 01_few_shot_problem. Every method of the course is scored by
:func:`evaluate_episodes` on the same fixed list of held-out episodes, so numbers compare.

For per-episode scores ``s_1..s_n`` the reported number is the mean ``m`` with the half-width
of a 95% confidence interval, ``t_{0.975, n-1} * sd / sqrt(n)`` (``sd`` with ``n-1`` in the
denominator; for ``n`` in the hundreds ``t`` is about 1.96).

Transduction. A network whose batch norm normalises with the statistics of the batch it is given
(the course's conv net, in eval mode too) makes a query's prediction depend on whatever else is in
its batch. Scoring all queries of an episode in one pass is then *transductive*: the queries inform
each other. :func:`one_query_at_a_time` is the course's one non-transductive pass, used by
``MAML.predict``, ``protonet.predict`` and ``Reptile.predict`` alike: each query goes through the
network in its own batch ``[support set; that query]`` (as openai/supervised-reptile evaluates), so
it sees the support set and nothing else. :func:`uses_batch_statistics` says whether a network needs it.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import vmap

from . import runtime
from .data.batches import Episode
from .models import ExplicitBatchNorm2d, PerStepBatchNorm2d
from .progress import progress_bar


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode (dropout off), then restore every submodule's own mode.

    Every prediction of the course runs inside it. The conv net's batch norm keeps no running
    statistics, so it normalises with the statistics of the batch it is given in either mode.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def predicting(model: nn.Module, episode: Episode) -> Iterator[Episode]:
    """The block of a ``predict``: ``model`` in :func:`eval_mode`, and ``episode`` on the model's device.

    A model without weights (``nn.Identity()`` on precomputed embeddings) takes the episode where it is.
    Every ``predict`` of the library runs in it::

        with predicting(model, episode) as episode:
            return model(episode.query_x)
    """
    with eval_mode(model):
        yield runtime.to_device(episode, runtime.module_device(model))


def uses_batch_statistics(model: nn.Module) -> bool:
    """Whether ``model`` in eval mode normalises with the statistics of its batch (so one pass over
    many queries is transductive): an :class:`~course_lib.models.ExplicitBatchNorm2d`, or a built-in
    batch norm without running statistics (``track_running_stats=False``), or MAML++'s per-step batch norm
    told to (``batch_statistics_in_eval``). A batch norm with running statistics uses them in eval mode, and
    each image is then normalised on its own."""
    return any(isinstance(m, ExplicitBatchNorm2d)
               or (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None)
               or (isinstance(m, PerStepBatchNorm2d) and m.batch_statistics_in_eval)
               for m in model.modules())


def one_query_at_a_time(forward: Callable[[Tensor], Tensor], support_x: Tensor, query_x: Tensor,
                        vectorised: bool | None = None) -> tuple[Tensor, Tensor]:
    """The non-transductive pass: ``forward`` on one batch ``[support set; query i]`` per query.

    Args:
        forward: the network as a function of a batch, ``[n, ...] -> [n, ...]`` (e.g.
            ``lambda x: functional_call(net, fast_weights, (x,))`` or an embedding network).
        support_x: ``[N*K, ...]``, the support set of one episode; query_x: ``[N*Q, ...]``, its queries.
        vectorised: ``torch.func.vmap`` over the queries (one batched pass) instead of a loop; the two
            give the same outputs. None picks vmap on CUDA and the loop elsewhere: on a CPU the loop
            measured about twice as fast for the conv net (5-way 1-shot, 75 queries), four times for a
            channels-last one (each pass is compute-bound there, and vmap's batched batch norm folds the
            queries into the channels: copies, and the channels-last layout lost).

    Returns ``(support_outputs [N*Q, N*K, ...], query_outputs [N*Q, ...])``: row ``i`` is what the
    network gives the support set and query ``i`` in query ``i``'s pass. Batch norm computes its
    statistics per pass, so query ``i``'s output depends on the support set and on query ``i``
    alone. The cost is ``N*Q`` passes of ``N*K + 1`` images instead of one pass of ``N*K + N*Q``
    (5-way 1-shot with 75 queries: 450 images instead of 80).
    """
    if vectorised is None:
        vectorised = query_x.device.type == "cuda"

    def with_the_support(query: Tensor) -> tuple[Tensor, Tensor]:
        outputs = forward(torch.cat([support_x, query[None]]))       # [N*K + 1, ...]
        return outputs[:-1], outputs[-1]

    if vectorised:
        return vmap(with_the_support)(query_x)
    per_query = [with_the_support(query) for query in query_x]
    return torch.stack([s for s, _ in per_query]), torch.stack([q for _, q in per_query])


def mean_confidence_interval(values: Sequence[float] | Tensor, confidence: float = 0.95) -> tuple[float, float]:
    """``(mean, half_width)`` of a ``confidence`` interval for the mean of ``values``.

    Uses Student's t with ``n - 1`` degrees of freedom; needs at least two values.
    """
    from scipy import stats   # here, not at the top: it costs a second of every ``import course_lib``

    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = x.numel()
    if n < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {n}")
    sem = x.std(unbiased=True).item() / math.sqrt(n)
    return x.mean().item(), float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sem


@dataclass
class EvalResult:
    """Per-episode scores and their summary: ``mean`` +- ``ci95`` over ``len(values)`` episodes."""

    metric: str
    values: Tensor

    @property
    def mean(self) -> float:
        return mean_confidence_interval(self.values)[0]

    @property
    def ci95(self) -> float:
        return mean_confidence_interval(self.values)[1]

    def as_metrics(self) -> dict[str, float]:
        """``{metric: mean, metric_ci95: half_width}``: what a ``validate`` callback of the
        training loop returns, so the history holds the CI for :func:`plots.plot_validation`."""
        return {self.metric: self.mean, f"{self.metric}_ci95": self.ci95}

    def __str__(self) -> str:
        n = len(self.values)
        if self.metric == "accuracy":
            return f"{100 * self.mean:.1f}% ± {100 * self.ci95:.1f}% (95% CI, {n} episodes)"
        return f"{self.metric} {self.mean:.3f} ± {self.ci95:.3f} (95% CI, {n} episodes)"


def accuracy(predictions: Tensor, targets: Tensor) -> float:
    """Fraction correct; ``predictions`` are logits ``[n, n_way]`` or labels ``[n]``."""
    if predictions.dim() == targets.dim() + 1:
        predictions = predictions.argmax(-1)
    return (predictions == targets).float().mean().item()


def mse(predictions: Tensor, targets: Tensor) -> float:
    """Mean squared error over the query points."""
    return (predictions.float() - targets.float()).pow(2).mean().item()


METRICS: dict[str, Callable[[Tensor, Tensor], float]] = {"accuracy": accuracy, "mse": mse}


def evaluate_episodes(predict: Callable[[Episode], Tensor], episodes: Sequence[Episode],
                      metric: str = "accuracy", device: torch.device | str | None = None,
                      progress: bool = False, desc: str = "evaluating") -> EvalResult:
    """Score a method on fixed episodes.

    Args:
        predict: a method as a function of one episode that adapts on its support set and returns
            predictions for its query set (logits ``[N*Q, N]`` or labels ``[N*Q]`` for classification,
            values ``[N*Q, 1]`` for regression).
        episodes: the fixed held-out episodes (see ``fixed_episodes``).
        metric: ``"accuracy"`` or ``"mse"``.
        device: where each episode goes before ``predict`` sees it (``runtime.to_device``: from pinned
            memory, asynchronously, on CUDA). None leaves the episodes where they are: every ``predict``
            of the library moves its episode to its own model's device, so ``maml.predict`` or
            ``partial(protonet.predict, model)`` need no device; a function of your own that calls a
            model on a GPU, e.g. ``lambda e: model(e.query_x)``, is given ``device=device``.

    Each prediction is scored against the query labels on the prediction's device.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    if len(episodes) < 2:
        raise ValueError("evaluation needs at least 2 episodes for a confidence interval")
    score = METRICS[metric]
    values = []
    for episode in progress_bar(episodes, desc=desc, disable=not progress):
        episode = runtime.to_device(episode, device)
        predictions = predict(episode).detach()
        values.append(score(predictions, episode.query_y.to(predictions.device)))
    return EvalResult(metric, torch.tensor(values, dtype=torch.float64))
