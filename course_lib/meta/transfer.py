"""Transfer learning: the baseline that meta-learning must beat.

Derived in 02_transfer_learning. Two stages, and neither optimises over tasks:

1. **Pretraining**: ordinary supervised classification of *all* meta-train classes at once
   (548 with rotations on the Omniglot subset) by the conv net with a ``num_classes``-way head,

       min_{theta, W, b}  E_{(x, c)} [ -log softmax(W f_theta(x) + b)_c ].

2. **Adaptation** to a new N-way K-shot task by a rule fixed by hand: the pretraining head is
   thrown away, the support set trains a new N-way head (or the whole network), and the query
   set is predicted with it:

   * :func:`linear_probe`: logistic regression on frozen, L2-normalised features (Tian et al. 2020);
   * :func:`fine_tune_head`: a new linear head trained by a few full-batch SGD steps on frozen
     features from ``W = 0``, the same recipe as
   * :func:`fine_tune`: a copy of the whole network trained by SGD with a new head;
   * :func:`chen_baseline` and :func:`chen_baseline_plus_plus`: the "Baseline" and "Baseline++" of
     Chen et al. 2019 as their code adapts (``methods/baselinefinetune.py``): a freshly initialised
     linear layer (Baseline) or cosine layer (Baseline++, ``backbone.distLinear``) trained on the
     frozen support features for 100 epochs of mini-batches of 4, SGD with learning rate 0.01,
     momentum 0.9, dampening 0.9 and weight decay 0.001 (:data:`CHEN_SGD`).

   All heads are fitted by one loop, :func:`fit_head`. :func:`on_frozen_features` turns a head into
   ``predict(model, episode) -> query logits [N*Q, N]`` for ``evaluate_episodes``
   (``linear_probe_predict``, ``fine_tune_head_predict``, ``chen_baseline_predict``,
   ``chen_baseline_plus_plus_predict``; ``fine_tune_predict`` fine-tunes the whole network). With a
   network from :func:`freeze_batch_norm` none of them is transductive.

**Batch norm.** The course's conv net normalises with the statistics of the batch at hand, also at
test time. A pretrained network is used here the usual transfer-learning way instead:
:func:`freeze_batch_norm` measures the statistics once on meta-train images and fixes them
(inference-mode batch norm). Then an image's features depend on that image alone: the 5 images
of a 1-shot support set and the 75 queries are embedded alike, no query influences another, and
the features of a whole test set can be computed once (:func:`embed_dataset`) and reused by every
episode. The adaptation functions accept a network with batch statistics too; they then embed
the support set and the query set as two separate batches.

References: W.-Y. Chen, Y.-C. Liu, Z. Kira, Y.-C. F. Wang, J.-B. Huang. A Closer Look at Few-shot
Classification. ICLR 2019, arXiv:1904.04232. Y. Tian, Y. Wang, D. Krishnan, J. B. Tenenbaum,
P. Isola. Rethinking Few-Shot Image Classification: a Good Embedding Is All You Need? ECCV 2020,
arXiv:2003.11539.

Example::

    model = pretraining_model(train_classes.num_classes)
    sampler = ClassificationSampler(train_classes)
    train(model, classification_loss, functools.partial(sampler.sample_batch, 64), TrainConfig(steps=600))
    reference_images = sampler.sample_batch(500, torch.Generator().manual_seed(1)).x
    backbone = freeze_batch_norm(model, reference_images)
    evaluate_episodes(functools.partial(linear_probe_predict, backbone), test_episodes)
"""
from __future__ import annotations

import copy
import functools
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import runtime
from ..data.base import ClassDataset
from ..data.batches import Episode, LabelledBatch
from ..data.samplers import TaskSampler, check_batch_size
from ..evaluate import EvalResult, accuracy, predicting
from ..models import ConvNet


class ClassificationSampler(TaskSampler[LabelledBatch]):
    """(image, class) pairs drawn uniformly from all examples of ``dataset``: pretraining batches.

    Class ``c`` has the label ``c`` in every batch: one classification problem over all
    ``dataset.num_classes`` classes, not a stream of episodes. One item of the sampler protocol is one
    labelled example, ``sample(g) -> LabelledBatch(x: [C, H, W], y: [])``; the training loop's batch is
    ``sample_batch(batch_size, g) -> LabelledBatch(x: [B, C, H, W], y: [B])``, as
    ``train(model, classification_loss, partial(sampler.sample_batch, 64), config)``.

    ``sample_batch`` is vectorised: it draws the ``B`` classes first, then one example index per class,
    so a batch of ``B`` is NOT ``B`` stacked calls of ``sample`` (``sample`` is ``sample_batch(1, g)[0]``).
    """

    def __init__(self, dataset: ClassDataset):
        self.dataset = dataset

    def sample(self, generator: torch.Generator) -> LabelledBatch:
        return self.sample_batch(1, generator)[0]

    def sample_batch(self, n: int, generator: torch.Generator) -> LabelledBatch:
        check_batch_size(n)
        classes = torch.randint(self.dataset.num_classes, (n,), generator=generator)
        drawings = torch.randint(self.dataset.examples_per_class, (n,), generator=generator)
        x = torch.cat([self.dataset.examples(c, d[None]) for c, d in zip(classes.tolist(), drawings)])
        return LabelledBatch(x, classes)


def cosine_logits(features: Tensor, weight: Tensor, scale: float, gain: Tensor | None = None) -> Tensor:
    """``scale * g_k * cos(w_k, x)`` for every row: ``[..., n, D]``, ``[..., N, D]`` -> ``[..., n, N]``.

    ``gain: [..., N]`` is the class-wise learnable norm ``g_k`` of Chen et al.'s ``distLinear``
    (weight normalisation, ``w = g v / ||v||``); without it every ``g_k = 1``.
    """
    cosines = F.normalize(features, dim=-1) @ F.normalize(weight, dim=-1).transpose(-2, -1)
    return scale * (cosines if gain is None else cosines * gain.unsqueeze(-2))


def chen_cosine_scale(n_classes: int) -> float:
    """The fixed scale of Chen et al.'s cosine head (``backbone.distLinear``): 2 for at most 200 classes,
    else 10 ("in omniglot, a larger scale factor is required to handle >1000 output classes")."""
    return 2.0 if n_classes <= 200 else 10.0


class CosineClassifier(nn.Module):
    """The "Baseline++" head of Chen et al. 2019: ``logits_k = scale * cos(w_k, f(x))``.

    ``[B, in_features]`` -> ``[B, n_classes]``. With weights and features normalised, a class is a
    *direction* in feature space, and pretraining pulls the features of a class together in angle.
    The fixed ``scale`` sharpens the softmax: cosines in [-1, 1] are too flat for a cross-entropy
    over hundreds of classes (10 is Chen et al.'s value above 200 classes, :func:`chen_cosine_scale`).
    Chen et al.'s layer also learns a norm per class; this pretraining head does not.
    """

    def __init__(self, in_features: int, n_classes: int, scale: float = 10.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, in_features) / in_features ** 0.5)
        self.scale = scale

    def forward(self, features: Tensor) -> Tensor:
        return cosine_logits(features, self.weight, self.scale)


def pretraining_model(num_classes: int, cosine: bool = False, **convnet_kwargs) -> ConvNet:
    """The course's conv net with a ``num_classes``-way head: linear, or cosine with ``cosine=True``."""
    model = ConvNet(n_classes=num_classes, **convnet_kwargs)
    if cosine:
        model.head = CosineClassifier(model.embedding_dim, num_classes)
    return model


def classification_loss(model: nn.Module, batch: LabelledBatch) -> tuple[Tensor, dict[str, Tensor]]:
    """The pretraining objective: the mean cross-entropy of ``model(x): [B, num_classes]`` against ``y``."""
    logits = model(batch.x)
    return F.cross_entropy(logits, batch.y), {"accuracy": accuracy(logits.detach(), batch.y)}


def freeze_batch_norm(model: ConvNet, images: Tensor) -> ConvNet:
    """A copy of ``model`` whose batch norms normalise with fixed statistics of ``images``, in eval mode.

    Batch norm computes ``gamma * (h - mu) / sqrt(var + eps) + beta`` per channel. The course's conv
    net takes ``mu, var`` from the batch at hand; the copy takes them, once and for all, from
    ``images: [M, C, H, W]`` (a few hundred meta-train images: the data the network learnt from).
    ``model`` itself is not changed.
    """
    frozen = copy.deepcopy(model)
    for norm in frozen.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.track_running_stats, norm.momentum = True, None  # momentum None: a plain average
            norm.running_mean = torch.zeros(norm.num_features, device=images.device)
            norm.running_var = torch.ones(norm.num_features, device=images.device)
            norm.num_batches_tracked = torch.tensor(0, device=images.device)
    frozen.train()
    with torch.no_grad():
        frozen.embed(images)  # training mode with running statistics: records mu and var of `images`
    return frozen.eval()


def _has_frozen_batch_norm(model: nn.Module) -> bool:
    return all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@torch.no_grad()
def embed_dataset(model: ConvNet, dataset: ClassDataset) -> ClassDataset:
    """Every example of ``dataset`` embedded once: a ``ClassDataset`` of features ``[classes, examples, D]``.

    Needs a model from :func:`freeze_batch_norm` (with batch statistics, an image's features would
    depend on the batch it came in). An ``EpisodeSampler`` over the result draws, for a given seed,
    exactly the episodes it draws over ``dataset``, with features in place of images.
    """
    if not _has_frozen_batch_norm(model):
        raise ValueError("embed_dataset needs fixed batch-norm statistics: pass freeze_batch_norm(model, images)")
    model.eval()
    device = next(model.parameters()).device
    every_example = torch.arange(dataset.examples_per_class)
    features = torch.stack([model.embed(dataset.examples(c, every_example).to(device)).cpu()
                            for c in range(dataset.num_classes)])
    names = [dataset.class_name(c) for c in range(dataset.num_classes)]
    return ClassDataset(features, names, f"features of: {dataset.source}", real=dataset.real)


@torch.no_grad()
def embed_episode(model: ConvNet, episode: Episode) -> tuple[Tensor, Tensor]:
    """Frozen features ``([N*K, D], [N*Q, D])`` of the support and the query set, embedded as two batches
    with ``model`` in eval mode (fixed statistics if it comes from :func:`freeze_batch_norm`), on its device."""
    with predicting(model, episode) as episode, torch.no_grad():
        return model.embed(episode.support_x), model.embed(episode.query_x)


def linear_logits(features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``W x + b`` for every row: ``[..., n, D]``, ``[..., N, D]``, ``[..., N]`` -> ``[..., n, N]``."""
    return features @ weight.transpose(-2, -1) + bias.unsqueeze(-2)


def fit_head(logits: Callable[..., Tensor], params: Sequence[Tensor], features: Tensor, labels: Tensor,
             optimizer: torch.optim.Optimizer, epochs: int, batch_size: int | None = None,
             generator: torch.Generator | None = None,
             penalty: Callable[[], Tensor] | None = None) -> list[Tensor]:
    """The one loop that fits a new head on frozen features; returns the fitted ``params``, detached.

    ``logits(x, *params) -> [..., b, N]`` is the head on features ``x: [..., b, D]``; ``features:
    [..., n, D]`` and ``labels: [..., n]`` are the support sets, leading dimensions separate episodes.
    Each of ``epochs`` epochs runs over the support set once:

    * ``batch_size=None``: one full-batch step, ``L = 1/n sum_i CE(logits(x_i), y_i) + penalty()``;
    * ``batch_size=B``: a new random order of the ``n`` examples (one per episode, drawn from
      ``generator``), cut into consecutive mini-batches of ``B`` (the last one smaller, as in Chen
      et al.'s loop), one step on each with the mean cross-entropy of the batch.

    The loss sums the episodes' own losses, so each episode's parameters get the gradient of its
    own loss; SGD and Adam update every entry from its own gradient, so a stack of episodes is
    fitted as if one by one (with random orders: the same in distribution, not the same draws).
    ``optimizer`` is built on ``params``; ``features`` is not modified.
    """
    features = features.detach()
    n = features.shape[-2]
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of support examples, got {batch_size}")
    with torch.enable_grad():
        for _ in range(epochs):
            if batch_size is None:
                batches = [(features, labels)]
            else:
                order = torch.rand(*labels.shape, generator=generator).argsort(-1).to(labels.device)
                batches = []
                for start in range(0, n, batch_size):
                    index = order[..., start:start + batch_size]
                    batches.append((features.gather(-2, index.unsqueeze(-1).expand(*index.shape, features.shape[-1])),
                                    labels.gather(-1, index)))
            for x, y in batches:
                scores = logits(x, *params)
                loss = F.cross_entropy(scores.flatten(0, -2), y.flatten(), reduction="sum") / y.shape[-1]
                if penalty is not None:
                    loss = loss + penalty()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return [p.detach() for p in params]


def fit_linear_head(features: Tensor, labels: Tensor, n_way: int, steps: int, lr: float,
                    weight_decay: float = 0.0, optimizer: str = "adam") -> tuple[Tensor, Tensor]:
    """A new N-way linear head ``(W: [..., N, D], b: [..., N])`` fitted on ``features: [..., n, D]``.

    Minimises the regularised multinomial logistic loss, from ``W = 0, b = 0``, full batch,

        L(W, b) = 1/n sum_i CE(W x_i + b, y_i) + weight_decay / 2 * ||W||^2,

    by ``steps`` steps of ``"adam"`` or ``"sgd"`` (momentum 0.9), in :func:`fit_head`. Leading
    dimensions are separate episodes, fitted at once with the result of fitting them one by one.
    ``features`` is not modified.
    """
    features = features.detach()
    weight = features.new_zeros(*features.shape[:-2], n_way, features.shape[-1], requires_grad=True)
    bias = features.new_zeros(*features.shape[:-2], n_way, requires_grad=True)
    if optimizer == "adam":
        step = torch.optim.Adam([weight, bias], lr=lr)
    elif optimizer == "sgd":
        step = torch.optim.SGD([weight, bias], lr=lr, momentum=0.9)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}: choose adam or sgd")
    weight, bias = fit_head(linear_logits, [weight, bias], features, labels, step, steps,
                            penalty=lambda: weight_decay / 2 * weight.pow(2).sum())
    return weight, bias


def linear_probe(support_features: Tensor, support_y: Tensor, query_features: Tensor, n_way: int,
                 steps: int = 100, lr: float = 0.1, weight_decay: float = 1e-3) -> Tensor:
    """Query logits ``[..., N*Q, N]`` of a logistic regression on L2-normalised features (Tian et al.).

    ``z = x / ||x||`` for every feature vector, :func:`fit_linear_head` on the support set
    ``(z_i, y_i)`` with Adam (``steps`` steps, learning rate ``lr``, ``weight_decay``), then
    ``W z + b`` for each query. Shapes: support ``[..., N*K, D]`` and ``[..., N*K]``, query
    ``[..., N*Q, D]``; leading dimensions are episodes.
    """
    support, query = F.normalize(support_features, dim=-1), F.normalize(query_features, dim=-1)
    weight, bias = fit_linear_head(support, support_y, n_way, steps, lr, weight_decay)
    return linear_logits(query, weight, bias)


def fine_tune_head(support_features: Tensor, support_y: Tensor, query_features: Tensor, n_way: int,
                   steps: int = 10, lr: float = 0.01) -> Tensor:
    """Query logits ``[..., N*Q, N]`` of a new linear head trained on frozen, unnormalised features.

    The recipe of :func:`fine_tune` (SGD with momentum 0.9, ``steps`` steps, ``W = 0, b = 0``)
    with the backbone frozen: as its features never change, they are computed once.
    """
    weight, bias = fit_linear_head(support_features, support_y, n_way, steps, lr, optimizer="sgd")
    return linear_logits(query_features, weight, bias)


CHEN_SGD = {"lr": 0.01, "momentum": 0.9, "dampening": 0.9, "weight_decay": 1e-3}
"""The optimizer settings of Chen et al.'s adaptation (``methods/baselinefinetune.py``): ``torch.optim.SGD``."""


def _fresh_linear(shape: tuple[int, ...], fan_in: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """A tensor of ``shape`` drawn like ``nn.Linear``'s default initialisation: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    from ``generator`` (on the CPU, then moved to the device and dtype of ``like``)."""
    bound = fan_in ** -0.5
    return ((2 * torch.rand(shape, generator=generator) - 1) * bound).to(like)


def chen_baseline(support_features: Tensor, support_y: Tensor, query_features: Tensor, n_way: int,
                  epochs: int = 100, batch_size: int = 4, seed: int = 0) -> Tensor:
    """Query logits ``[..., N*Q, N]`` of Chen et al.'s "Baseline": a fresh linear layer on frozen features.

    ``W x + b`` on the raw features, ``W: [N, D], b: [N]`` initialised as ``nn.Linear`` does (uniform
    in ``+-1/sqrt(D)``, from ``torch.Generator().manual_seed(seed)``), then :func:`fit_head`: ``epochs``
    epochs of mini-batches of ``batch_size`` in a random order, ``torch.optim.SGD(**CHEN_SGD)`` (lr 0.01,
    momentum 0.9, dampening 0.9, weight decay 0.001 on every parameter), mean cross-entropy per batch.
    Shapes: support ``[..., N*K, D]`` and ``[..., N*K]``, query ``[..., N*Q, D]``; leading dimensions are
    episodes (each its own initialisation and orders, so a stack differs from one by one in the draws).
    """
    generator = torch.Generator().manual_seed(seed)
    lead, dim = support_features.shape[:-2], support_features.shape[-1]
    weight = _fresh_linear((*lead, n_way, dim), dim, generator, support_features).requires_grad_()
    bias = _fresh_linear((*lead, n_way), dim, generator, support_features).requires_grad_()
    optimizer = torch.optim.SGD([weight, bias], **CHEN_SGD)
    weight, bias = fit_head(linear_logits, [weight, bias], support_features, support_y, optimizer, epochs,
                            batch_size, generator)
    return linear_logits(query_features, weight, bias)


def chen_baseline_plus_plus(support_features: Tensor, support_y: Tensor, query_features: Tensor, n_way: int,
                            epochs: int = 100, batch_size: int = 4, seed: int = 0,
                            scale: float | None = None) -> Tensor:
    """Query logits ``[..., N*Q, N]`` of Chen et al.'s "Baseline++": a fresh cosine layer on frozen features.

    ``logits_k = s * g_k * cos(v_k, x)``, their ``backbone.distLinear``: a linear layer without bias on
    L2-normalised features, weight-normalised (``w_k = g_k v_k / ||v_k||``, ``g_k`` a learnt norm per
    class, initially ``||v_k||``), times a fixed scale ``s = chen_cosine_scale(n_way)`` (2 for a 5-way
    task) unless ``scale`` is given. ``v`` is initialised as ``nn.Linear`` does, from
    ``torch.Generator().manual_seed(seed)``, and ``(v, g)`` are fitted exactly as in
    :func:`chen_baseline`. (Their code divides by ``||x|| + 1e-5``, here ``max(||x||, 1e-12)``.)
    """
    generator = torch.Generator().manual_seed(seed)
    lead, dim = support_features.shape[:-2], support_features.shape[-1]
    direction = _fresh_linear((*lead, n_way, dim), dim, generator, support_features)
    gain = direction.norm(dim=-1).requires_grad_()
    direction.requires_grad_()
    scale = chen_cosine_scale(n_way) if scale is None else scale
    optimizer = torch.optim.SGD([direction, gain], **CHEN_SGD)
    direction, gain = fit_head(lambda x, v, g: cosine_logits(x, v, scale, g), [direction, gain], support_features,
                               support_y, optimizer, epochs, batch_size, generator)
    return cosine_logits(query_features, direction, scale, gain)


def fine_tune(model: ConvNet, support_x: Tensor, support_y: Tensor, n_way: int, steps: int = 10,
              lr: float = 0.01) -> ConvNet:
    """A copy of ``model`` with a new N-way head ``W = 0, b = 0``, every weight trained on the support set.

    ``min_{theta, W, b} 1/n sum_i CE(W f_theta(x_i) + b, y_i)`` by ``steps`` steps of SGD with
    momentum 0.9 from the pretrained ``theta``; ``support_x: [N*K, C, H, W]`` is one batch. The copy
    stays in eval mode, so frozen batch-norm statistics stay fixed while the weights train.
    ``model`` itself is not changed.
    """
    adapted = copy.deepcopy(model).eval()
    adapted.head = nn.Linear(adapted.embedding_dim, n_way).to(support_x.device)
    nn.init.zeros_(adapted.head.weight)
    nn.init.zeros_(adapted.head.bias)
    optimizer = torch.optim.SGD(adapted.parameters(), lr=lr, momentum=0.9)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(adapted(support_x), support_y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return adapted


def on_frozen_features(adapt: Callable[..., Tensor], model: ConvNet, episode: Episode, **adapt_kwargs) -> Tensor:
    """Adapt by ``adapt(support_features, support_y, query_features, n_way, **adapt_kwargs)`` on the
    frozen features of ``model`` (:func:`embed_episode`): query logits ``[N*Q, N]``."""
    support, query = embed_episode(model, episode)
    return adapt(support, episode.support_y, query, episode.n_way, **adapt_kwargs)


# predict(model, episode, **kwargs) -> query logits [N*Q, N] for the evaluation protocol, one per head.
linear_probe_predict = functools.partial(on_frozen_features, linear_probe)
fine_tune_head_predict = functools.partial(on_frozen_features, fine_tune_head)
chen_baseline_predict = functools.partial(on_frozen_features, chen_baseline)
chen_baseline_plus_plus_predict = functools.partial(on_frozen_features, chen_baseline_plus_plus)


def fine_tune_predict(model: ConvNet, episode: Episode, **fine_tune_kwargs) -> Tensor:
    """Adapt by fine-tuning a copy of the whole network: query logits ``[N*Q, N]``."""
    episode = runtime.to_device(episode, runtime.module_device(model))
    adapted = fine_tune(model, episode.support_x, episode.support_y, episode.n_way, **fine_tune_kwargs)
    with torch.no_grad():
        return adapted(episode.query_x)


def evaluate_feature_episodes(adapt: Callable[[Tensor, Tensor, Tensor, int], Tensor],
                              episodes: Sequence[Episode]) -> EvalResult:
    """The course protocol for an adaptation rule on feature episodes, all episodes in one call.

    ``adapt(support_features, support_y, query_features, n_way) -> query logits`` must accept a
    leading episode dimension (as :func:`linear_probe` and :func:`fine_tune_head` do); the result
    equals ``evaluate_episodes`` over the same episodes one at a time.
    """
    batch = Episode.stack(list(episodes))
    logits = adapt(batch.support_x, batch.support_y, batch.query_x, batch.n_way)
    return EvalResult("accuracy", (logits.argmax(-1) == batch.query_y).double().mean(-1).cpu())
