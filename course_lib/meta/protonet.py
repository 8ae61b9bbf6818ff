"""Prototypical Networks: classify a query by its distance to each class's mean embedding.

Derived in 05_protonet. Snell, Swersky and Zemel, "Prototypical Networks for Few-shot Learning",
NeurIPS 2017, arXiv:1703.05175.

An embedding network ``f_phi`` (the 4-block ``ConvNet`` without a head) maps every image to a
vector. Per episode, the prototype of class ``k`` is the mean embedded support example of ``k``,

    c_k = 1/|S_k| * sum_{(x_i, y_i) in S, y_i = k} f_phi(x_i),

and a query ``x`` gets the class probabilities

    p(y = k | x) = softmax_k(-d(f_phi(x), c_k)),   d = squared Euclidean distance,

or, with ``distance="cosine"``, ``softmax_k(scale * cos(f_phi(x), c_k))``. Meta-training
minimises the cross-entropy ``-log p(y = y_q | x_q)`` over the query set of each episode; the
support set is used only through the prototypes, so there is no inner loop.

Example::

    from functools import partial
    from course_lib.meta import protonet
    model = ConvNet()                     # no head: forward returns the 64-d embedding
    history = train(model, protonet.loss, lambda g: sampler.sample_batch(1, g), config)
    result = evaluate_episodes(partial(protonet.predict, model), test_episodes)
    cosine_loss = partial(protonet.loss, distance="cosine")   # and partial(protonet.predict, ...)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data.batches import Episode
from ..evaluate import one_query_at_a_time, predicting, uses_batch_statistics

DISTANCES = ("euclidean", "cosine")

# Cosine similarities lie in [-1, 1]: unscaled, the softmax over them stays nearly uniform and the
# loss cannot approach 0. A fixed scale of 10 lets it (a learnable scale, as in TADAM, Oreshkin et al.
# 2018, would have to live in the model that the training loop optimises; a constant keeps the model
# a plain ConvNet).
COSINE_SCALE = 10.0


def prototypes(embeddings: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """The mean embedding of each class: ``c_k = mean of {f(x_i) : y_i = k}``.

    Args:
        embeddings: ``[..., N*K, D]`` embedded support examples (any leading task dimensions).
        labels: ``[..., N*K]`` their labels in ``0 .. n_way-1``.
        n_way: the number of classes ``N``.

    Returns ``[..., N, D]``, row ``k`` the prototype of class ``k``. Written as a matrix product,
    ``one_hot.T @ embeddings`` sums each class's rows, then dividing by the counts averages them.
    """
    one_hot = F.one_hot(labels, n_way).to(embeddings.dtype)            # [..., N*K, N]
    sums = one_hot.transpose(-2, -1) @ embeddings                      # [..., N, D]
    return sums / one_hot.sum(dim=-2).unsqueeze(-1)


def squared_euclidean(a: Tensor, b: Tensor) -> Tensor:
    """All squared distances ``||a_i - b_j||^2``: ``[..., M, D]`` and ``[..., N, D]`` -> ``[..., M, N]``.

    Squared, not the distance itself: it is what the ProtoNet paper uses (a Bregman divergence, for
    which the mean is the best single representative of a class) and what makes ProtoNet a linear
    classifier (see :func:`linear_head`).
    """
    return (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(dim=-1)


def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """All cosines ``a_i . b_j / (||a_i|| ||b_j||)``: ``[..., M, D]`` and ``[..., N, D]`` -> ``[..., M, N]``."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-2, -1)


def logits_from_prototypes(query: Tensor, protos: Tensor, distance: str = "euclidean",
                           scale: float = COSINE_SCALE) -> Tensor:
    """Query logits ``[..., N*Q, N]`` from query embeddings ``[..., N*Q, D]`` and prototypes ``[..., N, D]``:
    ``-||f(x) - c_k||^2`` (``"euclidean"``) or ``scale * cos(f(x), c_k)`` (``"cosine"``)."""
    if distance == "euclidean":
        return -squared_euclidean(query, protos)
    if distance == "cosine":
        return scale * cosine_similarity(query, protos)
    raise ValueError(f"unknown distance {distance!r}: choose one of {', '.join(DISTANCES)}")


def linear_head(protos: Tensor) -> tuple[Tensor, Tensor]:
    """The linear layer that Euclidean ProtoNet equals: weights ``W = 2 c_k`` ``[N, D]``, biases
    ``b_k = -||c_k||^2`` ``[N]``.

    ``-||f(x) - c_k||^2 = 2 c_k . f(x) - ||c_k||^2 - ||f(x)||^2``; the last term is the same for
    every class, so ``W f(x) + b`` gives the same softmax (Snell et al. 2017, section 2.4).
    """
    return 2 * protos, -protos.pow(2).sum(dim=-1)


def episode_logits(model: nn.Module, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                   distance: str = "euclidean", scale: float = COSINE_SCALE, n_way: int | None = None) -> Tensor:
    """Query logits ``[B, N*Q, N]`` for a meta-batch of ``B`` episodes.

    Args:
        model: the embedding network, ``[n, C, H, W]`` -> ``[n, D]``.
        support_x: ``[B, N*K, C, H, W]``, support_y: ``[B, N*K]``, query_x: ``[B, N*Q, C, H, W]``.
        n_way: ``N``; None reads it from the labels (``max + 1``), which on a GPU is a host sync: the
            training loss takes it from its caller to avoid that.

    All ``B * (N*K + N*Q)`` images go through the network in ONE forward pass. With the course's
    batch norm (batch statistics, never running ones) the support and query images of the batch
    are normalised together: a query's embedding depends a little on the other images of its
    episode, so :func:`predict` is transductive by default. The paper's code does the same in
    training but evaluates in ``model.eval()`` with running statistics (jakesnell/prototypical-networks),
    one image independent of the others; ``predict(..., transductive=False)`` is the course's
    non-transductive alternative.
    """
    n_tasks, n_support = support_y.shape
    n_way = n_way or int(support_y.max()) + 1
    images = torch.cat([support_x, query_x], dim=1).flatten(0, 1)    # [B*(N*K + N*Q), C, H, W]
    embeddings = model(images).float().unflatten(0, (n_tasks, -1))   # [B, N*K + N*Q, D], float32 under AMP too
    protos = prototypes(embeddings[:, :n_support], support_y, n_way)  # [B, N, D]
    return logits_from_prototypes(embeddings[:, n_support:], protos, distance, scale)


def loss(model: nn.Module, batch: Episode, distance: str = "euclidean",
         scale: float = COSINE_SCALE, n_way: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loss: mean query cross-entropy over a meta-batch, and the query accuracy.

    ``batch`` is an :class:`Episode` with a leading task dimension (``support_x: [B, N*K, C, H, W]``).
    Use it as ``train(model, protonet.loss, ...)``; for the cosine variant pass
    ``functools.partial(protonet.loss, distance="cosine")``; on a GPU pass ``n_way`` too
    (``partial(protonet.loss, n_way=60)``), so that no step waits to read it from the labels.
    """
    logits = episode_logits(model, batch.support_x, batch.support_y, batch.query_x, distance, scale, n_way)
    query_loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
    accuracy = (logits.argmax(dim=-1) == batch.query_y).float().mean()
    return query_loss, {"accuracy": accuracy}


@torch.no_grad()
def predict(model: nn.Module, episode: Episode, distance: str = "euclidean",
            scale: float = COSINE_SCALE, transductive: bool = True) -> Tensor:
    """Query logits ``[N*Q, N]`` for ONE episode (``support_x: [N*K, C, H, W]``), for
    ``evaluate_episodes(functools.partial(protonet.predict, model), episodes)``.

    The episode moves to the model's device first (a model without weights, e.g. ``nn.Identity()`` on
    precomputed embeddings, takes it where it is). In eval mode (dropout off), modes restored after.

    ``transductive=True`` (the default): support and queries in one pass (:func:`episode_logits`); with
    the conv net's batch norm (batch statistics) a query's embedding depends on the other queries.
    ``transductive=False``: each query ``i`` goes through the network in its own batch
    ``[support set; query i]`` (:func:`course_lib.evaluate.one_query_at_a_time`); the prototypes
    ``c_k^(i)`` come from that pass's support embeddings and query ``i`` is scored against them, so it
    sees the support set only. A model without batch statistics gives the same logits either way.
    """
    with predicting(model, episode) as episode:
        if transductive or not uses_batch_statistics(model):
            return episode_logits(model, episode.support_x[None], episode.support_y[None], episode.query_x[None],
                                  distance, scale)[0]
        n_way = episode.n_way
        support, query = one_query_at_a_time(lambda x: model(x).float(), episode.support_x, episode.query_x)
        protos = prototypes(support, episode.support_y, n_way)                  # [N*Q, N, D], one set per query
        return logits_from_prototypes(query[:, None], protos, distance, scale)[:, 0]   # [N*Q, 1, N] -> [N*Q, N]
