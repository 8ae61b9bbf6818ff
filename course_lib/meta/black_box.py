"""Black-box meta-learning: a sequence model reads an episode's (image embedding, label) pairs, then the query.

Derived in 08_in_context_learning, section 0. Santoro, Bartunov, Botvinick, Wierstra and Lillicrap, "Meta-Learning
with Memory-Augmented Neural Networks" (MANN), ICML 2016; Mishra, Rohaninejad, Chen and Abbeel, "A Simple Neural
Attentive Meta-Learner" (SNAIL), ICLR 2018; Stanford CS330, homework 1.

A conv net ``f_phi`` embeds every image; an episode becomes, for each query ``x_q``, the sequence

    (f_phi(x_1), y_1), ..., (f_phi(x_S), y_S), (f_phi(x_q), unknown)

that the sequence model ``M_theta`` (here :class:`~course_lib.meta.icl.InContextClassifier`: one token per pair, a
small causal GPT-2) reads, with the class probabilities read out at the query's position,

    p(y_q = k | S, x_q) = softmax_k M_theta((f_phi(x_i), y_i)_{i=1..S}, f_phi(x_q)).

Meta-training minimises the query cross-entropy over episodes with respect to ``phi`` and ``theta`` together
(end to end), ``L(phi, theta) = E_episodes [-log p(y_q | S, x_q)]`` (:func:`course_lib.meta.icl.classification_loss`
is that loss for this model too). There is no inner loop: adaptation to an episode is the forward pass.

Santoro et al. feed each image with the *previous* step's label, ``(x_t, y_{t-1})``; this module, like CS330's
homework, puts each label with its own image and "unknown" with the query. For a query at the end of the sequence
the two carry the same information: causal attention at the query sees every support image and every support
label in either layout, only the label sits one token later.

Example::

    from course_lib.meta import black_box, icl
    model = black_box.BlackBoxClassifier(ConvNet(hidden=32),
                                         icl.InContextClassifier(32, n_way=5, max_support=5, n_layer=2))
    history = train(model, icl.classification_loss, partial(sampler.sample_batch, 16), config)
    result = evaluate_episodes(partial(black_box.predict, model), test_episodes)   # not transductive
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.batches import Episode
from ..evaluate import one_query_at_a_time, predicting, uses_batch_statistics
from .icl import InContextClassifier


class BlackBoxClassifier(nn.Module):
    """An image encoder followed by an in-context classifier over the embeddings, trained end to end.

    ``forward(support_x [B, S, C, H, W], support_y [B, S], query_x [B, Q, C, H, W]) -> logits [B, Q, n_way]``: the
    ``B * (S + Q)`` images go through ``encoder`` (``[n, C, H, W] -> [n, D]``) in ONE pass, then
    ``sequence_model`` (input dimension ``D``) scores each query in its own sequence, support first. With a batch
    norm that uses batch statistics (the course's conv net) the queries' embeddings depend on the whole batch, as
    in ProtoNet's training; :func:`predict` scores each query without the others.
    """

    def __init__(self, encoder: nn.Module, sequence_model: InContextClassifier):
        super().__init__()
        self.encoder, self.sequence_model = encoder, sequence_model
        self.n_way = sequence_model.n_way

    def check_embedding(self, embeddings: Tensor) -> None:
        """Refuse, in one sentence, an encoder whose embeddings ``[..., D]`` the sequence model cannot read."""
        expected = self.sequence_model.read_in.in_features
        if embeddings.shape[-1] != expected:
            raise ValueError(f"the encoder gives {embeddings.shape[-1]} features per image but the sequence model "
                             f"was built for input_dim={expected}")

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        n_tasks, n_support = support_y.shape
        images = torch.cat([support_x, query_x], dim=1).flatten(0, 1)           # [B*(S + Q), C, H, W]
        embeddings = self.encoder(images).unflatten(0, (n_tasks, -1))            # [B, S + Q, D]
        self.check_embedding(embeddings)
        return self.sequence_model(embeddings[:, :n_support], support_y, embeddings[:, n_support:])


@torch.no_grad()
def predict(model: BlackBoxClassifier, episode: Episode, transductive: bool = False) -> Tensor:
    """Query logits ``[Q, N]`` for ONE episode (``support_x: [S, C, H, W]``), labels as given, for
    ``evaluate_episodes(functools.partial(black_box.predict, model), episodes)``. In eval mode, modes restored.

    ``transductive=False`` (the default): query ``i`` goes through the encoder in its own batch
    ``[support set; query i]`` (:func:`course_lib.evaluate.one_query_at_a_time`, as ``protonet.predict(...,
    transductive=False)`` does), and its sequence is built from that pass's support embeddings: a query sees the
    support set and nothing else. ``transductive=True``: one pass over all images of the episode, where the
    encoder's batch statistics let the queries inform each other. An encoder without batch statistics gives the
    same logits either way.
    """
    with predicting(model, episode) as episode:
        if transductive or not uses_batch_statistics(model.encoder):
            return model(episode.support_x[None], episode.support_y[None], episode.query_x[None])[0]
        support, query = one_query_at_a_time(model.encoder, episode.support_x, episode.query_x)  # [Q, S, D], [Q, D]
        model.check_embedding(query)
        support_y = episode.support_y.expand(len(query), -1)                                     # [Q, S]
        return model.sequence_model(support, support_y, query[:, None])[:, 0]                    # [Q, 1, N] -> [Q, N]
