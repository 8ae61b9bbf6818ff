"""Black-box meta-learning: a conv encoder and an in-context classifier read image episodes as sequences."""
import math
from dataclasses import replace
from functools import partial

import pytest
import torch

from course_lib.data.base import ClassDataset
from course_lib.data.episodes import EpisodeSampler, fixed_episodes
from course_lib.evaluate import evaluate_episodes
from course_lib.meta import black_box, icl
from course_lib.models import ConvNet
from course_lib.train import TrainConfig, train


def tiny_model(n_way=3, k_shot=1, seed=0, input_scale=1.0):
    """A 2-block conv net on 8x8 images (embedding 8 x 2 x 2 = 32) and a 1-layer in-context classifier."""
    torch.manual_seed(seed)
    encoder = ConvNet(hidden=8, n_blocks=2, image_size=8)
    sequence_model = icl.InContextClassifier(encoder.embedding_dim, n_way=n_way, max_support=n_way * k_shot,
                                             n_layer=1, n_embd=16, n_head=2, input_scale=input_scale)
    return black_box.BlackBoxClassifier(encoder, sequence_model)


def pattern_classes(n_classes=30, seed=0):
    """Classes of 8x8 images: a fixed random binary pattern per class plus pixel noise, ``[n_classes, 10, 1, 8, 8]``."""
    generator = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(n_classes, 1, 1, 8, 8, generator=generator) > 0.5).float()
    data = patterns + 0.3 * torch.randn(n_classes, 10, 1, 8, 8, generator=generator)
    return ClassDataset(data, [f"pattern{c}" for c in range(n_classes)], source="random patterns", real=False)


def image_episode(n_way=3, k_shot=1, n_query=2, seed=0):
    return EpisodeSampler(pattern_classes(), n_way, k_shot, n_query).sample(torch.Generator().manual_seed(seed))


def test_logits_per_query_for_a_meta_batch_and_for_one_episode():
    model = tiny_model()
    batch = EpisodeSampler(pattern_classes(), 3, 1, 2).sample_batch(4, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (4, 3, 1, 8, 8)
    assert model(batch.support_x, batch.support_y, batch.query_x).shape == (4, 6, 3)
    assert black_box.predict(model, batch[0]).shape == (6, 3)
    loss, metrics = icl.classification_loss(model, batch)       # the in-context loss takes image episodes too
    assert loss.shape == () and 0 <= metrics["accuracy"] <= 1


def test_the_querys_own_label_never_reaches_its_logits_and_the_support_labels_do():
    model = tiny_model()
    episode = image_episode()
    logits = black_box.predict(model, episode)
    other_query_labels = replace(episode, query_y=(episode.query_y + 1) % 3)
    assert torch.equal(black_box.predict(model, other_query_labels), logits)
    other_support_labels = replace(episode, support_y=episode.support_y.flip(0))
    assert not torch.allclose(black_box.predict(model, other_support_labels), logits, atol=1e-4)


def test_without_transduction_a_query_sees_the_support_set_and_nothing_else():
    model = tiny_model()
    episode = image_episode(n_query=2)
    moved = episode.query_x.clone()
    moved[1:] = torch.rand_like(moved[1:])                        # every query but the first changes
    other_queries = replace(episode, query_x=moved)
    alone = black_box.predict(model, episode)
    assert torch.allclose(black_box.predict(model, other_queries)[0], alone[0], atol=1e-5)
    with torch.no_grad():                                          # the same as the episode of that one query
        one_query = model.eval()(episode.support_x[None], episode.support_y[None], episode.query_x[None, :1])[0, 0]
    assert torch.allclose(one_query, alone[0], atol=1e-5)
    # in one pass the encoder's batch statistics carry the other queries into the first one's logits
    together = black_box.predict(model, episode, transductive=True)
    assert not torch.allclose(black_box.predict(model, other_queries, transductive=True)[0], together[0], atol=1e-4)


def test_relabelling_the_support_set_permutes_the_logits_once_the_label_weights_are_permuted_too():
    # Nothing ties the learned label embedding E and read-out R to one another, so a model with fixed weights is
    # equivariant to a relabelling only approximately, after training. Exactly: labels enter through E and leave
    # through R alone, so relabelling c -> pi(c) with E and R's rows moved to match permutes the logits.
    model = tiny_model()
    episode = image_episode()
    pi = torch.tensor([2, 0, 1])                                   # label c becomes pi[c]
    relabelled = replace(episode, support_y=pi[episode.support_y])
    permuted = tiny_model()
    unknown = torch.tensor([3])                                    # the query's "unknown" row stays where it is
    with torch.no_grad():
        permuted.sequence_model.label_embedding.weight[torch.cat([pi, unknown])] = \
            model.sequence_model.label_embedding.weight
        permuted.sequence_model.read_out.weight[pi] = model.sequence_model.read_out.weight
        permuted.sequence_model.read_out.bias[pi] = model.sequence_model.read_out.bias
    logits = black_box.predict(model, episode)                     # [Q, 3]
    assert torch.allclose(black_box.predict(permuted, relabelled)[:, pi], logits, atol=1e-5)
    assert not torch.allclose(black_box.predict(model, relabelled)[:, pi], logits, atol=1e-3)


def test_an_encoder_whose_embedding_the_sequence_model_cannot_read_is_refused():
    encoder = ConvNet(hidden=8, n_blocks=2, image_size=8)          # 32 features
    model = black_box.BlackBoxClassifier(encoder, icl.InContextClassifier(16, n_way=3, max_support=3, n_layer=1,
                                                                          n_embd=16, n_head=2))
    with pytest.raises(ValueError, match="32 features.*input_dim=16"):
        black_box.predict(model, image_episode())


def test_a_tiny_black_box_learner_trained_end_to_end_falls_below_the_chance_loss_and_beats_chance_on_new_classes():
    # 3-way 1-shot episodes of 200 random 8x8 patterns, 200 new ones at test; the encoder, a linear map of the
    # pixels, trains with the sequence model. Measured (2 CPU cores, about 3 s), initialisation seeds 0, 1, 2: final
    # training loss 0.36, 0.71, 0.87 (ln 3 = 1.10, the chance loss), test accuracy 74%, 52%, 54% (chance 33%). With
    # a 2-block conv encoder most seeds were still on the ln 3 plateau after 300 steps: the plateau 08 shows.
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32))
    model = black_box.BlackBoxClassifier(encoder, icl.InContextClassifier(32, n_way=3, max_support=3, n_layer=1,
                                                                          n_embd=16, n_head=2))
    sampler = EpisodeSampler(pattern_classes(200, seed=0), n_way=3, k_shot=1, n_query=2)
    history = train(model, icl.classification_loss, partial(sampler.sample_batch, 16),
                    TrainConfig(steps=400, lr=3e-3, log_every=25, progress=False))
    assert history.last("loss") < 0.85 * math.log(3)
    test = fixed_episodes(EpisodeSampler(pattern_classes(200, seed=1), 3, 1, 5), 50, seed=0)
    assert evaluate_episodes(partial(black_box.predict, model), test).mean > 0.45
