"""Prototypical Networks: prototypes, distances, the linear-head equivalence, and learning on real Omniglot."""
from functools import partial

import pytest
import torch
from torch.nn import functional as F

from course_lib.data import load_omniglot
from course_lib.data.episodes import Episode, EpisodeSampler, fixed_episodes
from course_lib.evaluate import evaluate_episodes
from course_lib.meta import protonet
from course_lib.models import ConvNet
from course_lib.train import TrainConfig, train


def test_prototypes_are_class_means_on_a_hand_case():
    embeddings = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [10.0, 10.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 2, 1, 2])
    want = torch.tensor([[2.0, 1.0], [10.0, 10.0], [0.0, 3.0]])
    assert torch.equal(protonet.prototypes(embeddings, labels, n_way=3), want)


def test_prototypes_of_a_meta_batch_are_computed_per_task():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(4, 6, 3, generator=generator)
    labels = torch.stack([torch.randperm(6, generator=generator) % 3 for _ in range(4)])
    batched = protonet.prototypes(embeddings, labels, 3)
    for task in range(4):
        assert torch.allclose(batched[task], protonet.prototypes(embeddings[task], labels[task], 3))


def test_squared_euclidean_matches_a_loop():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=generator), torch.randn(3, 5, generator=generator)
    loop = torch.tensor([[sum((a[i, d] - b[j, d]) ** 2 for d in range(5)) for j in range(3)] for i in range(7)])
    assert torch.allclose(protonet.squared_euclidean(a, b), loop, atol=1e-5)


def test_cosine_similarity_matches_torch():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=generator), torch.randn(3, 5, generator=generator)
    want = F.cosine_similarity(a[:, None], b[None], dim=-1)
    assert torch.allclose(protonet.cosine_similarity(a, b), want, atol=1e-6)


@pytest.mark.parametrize("distance", protonet.DISTANCES)
def test_a_query_equal_to_a_prototype_gets_its_class(distance):
    protos = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    logits = protonet.logits_from_prototypes(protos[[3, 0, 4]], protos, distance)
    assert logits.argmax(dim=1).tolist() == [3, 0, 4]


def test_unknown_distance_is_refused():
    with pytest.raises(ValueError, match="choose one of euclidean, cosine"):
        protonet.logits_from_prototypes(torch.zeros(2, 3), torch.zeros(2, 3), "manhattan")


def test_euclidean_protonet_is_a_linear_head():
    generator = torch.Generator().manual_seed(0)
    support, labels = torch.randn(20, 64, generator=generator), torch.arange(5).repeat(4)
    query = torch.randn(30, 64, generator=generator)
    protos = protonet.prototypes(support, labels, 5)
    weight, bias = protonet.linear_head(protos)
    linear = query @ weight.T + bias
    euclidean = protonet.logits_from_prototypes(query, protos)
    # they differ by -||f(x)||^2, the same for every class of a query: the softmax is the same
    assert torch.allclose(linear - euclidean, query.pow(2).sum(1, keepdim=True).expand(-1, 5), atol=1e-3)
    assert torch.allclose(linear.softmax(1), euclidean.softmax(1), atol=1e-5)


def tiny_batch(n_tasks=2, n_way=3, k_shot=2, n_query=4):
    generator = torch.Generator().manual_seed(0)
    return Episode(torch.rand(n_tasks, n_way * k_shot, 1, 28, 28, generator=generator),
                   torch.arange(n_way).repeat_interleave(k_shot).repeat(n_tasks, 1),
                   torch.rand(n_tasks, n_way * n_query, 1, 28, 28, generator=generator),
                   torch.arange(n_way).repeat_interleave(n_query).repeat(n_tasks, 1),
                   torch.zeros(n_tasks, n_way))


@pytest.mark.parametrize("distance", protonet.DISTANCES)
def test_loss_is_the_query_cross_entropy_of_one_forward_pass(distance):
    torch.manual_seed(0)
    model, batch = ConvNet(), tiny_batch()
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    loss, metrics = protonet.loss(model, batch, distance=distance)
    assert calls == [2 * (6 + 12)], "all images of all tasks should be embedded in one forward pass"
    embeddings = model(torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)).view(2, 18, -1)
    want, correct = 0.0, 0
    for task in range(2):
        protos = protonet.prototypes(embeddings[task, :6], batch.support_y[task], 3)
        logits = protonet.logits_from_prototypes(embeddings[task, 6:], protos, distance)
        want += F.cross_entropy(logits, batch.query_y[task]) / 2
        correct += (logits.argmax(-1) == batch.query_y[task]).sum().item()
    assert torch.allclose(loss, want, atol=1e-5)
    assert metrics["accuracy"] == pytest.approx(correct / 24), "accuracy over every query of the meta-batch"
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_predict_gives_query_logits_of_one_episode_without_gradients():
    torch.manual_seed(0)
    model, episode = ConvNet(), tiny_batch()[0]
    logits = protonet.predict(model, episode)
    assert logits.shape == (12, 3) and not logits.requires_grad
    with torch.no_grad():
        batched = protonet.episode_logits(model, episode.support_x[None], episode.support_y[None],
                                          episode.query_x[None])[0]
    assert torch.allclose(logits, batched)


@pytest.mark.parametrize("distance", protonet.DISTANCES)
def test_non_transductive_predict_embeds_each_query_with_the_support_only(distance):
    torch.manual_seed(0)
    model, episode = ConvNet().double(), tiny_batch()[0]
    episode = Episode(episode.support_x.double(), episode.support_y, episode.query_x.double(), episode.query_y,
                      episode.task)
    logits = protonet.predict(model, episode, distance=distance, transductive=False)
    assert logits.shape == (12, 3) and not logits.requires_grad
    # Query 0 against the prototypes of the pass [support set; query 0], by hand:
    with torch.no_grad():
        alone = model(torch.cat([episode.support_x, episode.query_x[:1]])).float()   # predict scores in float32
    protos = protonet.prototypes(alone[:6], episode.support_y, n_way=3)
    want = protonet.logits_from_prototypes(alone[6:], protos, distance)[0]
    assert torch.allclose(logits[0], want, atol=1e-6)
    # Other queries do not move it; in the transductive default they do.
    others = torch.rand(episode.query_x[4:].shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    changed = Episode(episode.support_x, episode.support_y, torch.cat([episode.query_x[:4], others]),
                      episode.query_y, episode.task)
    assert torch.allclose(protonet.predict(model, changed, distance=distance, transductive=False)[:4],
                          logits[:4], atol=1e-12)
    assert not torch.allclose(protonet.predict(model, changed, distance=distance)[:4],
                              protonet.predict(model, episode, distance=distance)[:4])
    # On fixed embeddings (no batch norm) the two are the same.
    embedded = Episode(episode.support_x.flatten(1), episode.support_y, episode.query_x.flatten(1),
                       episode.query_y, episode.task)
    assert torch.equal(protonet.predict(torch.nn.Identity(), embedded, distance=distance, transductive=False),
                       protonet.predict(torch.nn.Identity(), embedded, distance=distance))


def test_a_channels_last_network_computes_the_same_logits_and_gradients():
    """Notebook 05 stores its conv net channels-last (about twice as fast on a CPU): the same function."""
    torch.manual_seed(0)
    model = ConvNet().double()
    channels_last = ConvNet().double().to(memory_format=torch.channels_last)
    channels_last.load_state_dict(model.state_dict())
    assert channels_last.features[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    batch = tiny_batch()
    batch = Episode(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y, batch.task)
    grads = []
    for net in (model, channels_last):
        loss, _ = protonet.loss(net, batch)
        loss.backward()
        grads.append([p.grad for name, p in net.named_parameters() if not name.endswith("0.bias")])
    # (a convolution's bias before batch norm has a gradient of zero: only rounding, left out)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(*grads))
    for transductive in (True, False):
        assert torch.allclose(protonet.predict(channels_last, batch[0], transductive=transductive),
                              protonet.predict(model, batch[0], transductive=transductive), rtol=1e-9, atol=1e-9)


def test_predict_scores_with_dropout_off_and_restores_the_mode():
    torch.manual_seed(0)
    model, episode = torch.nn.Sequential(ConvNet(), torch.nn.Dropout(0.5)), tiny_batch()[0]
    model.train()
    first, second = protonet.predict(model, episode), protonet.predict(model, episode)
    assert torch.equal(first, second), "dropout must be off when scoring"
    assert model.training and model[1].training, "predict leaves the model in the mode it found it in"


def test_protonet_learns_real_omniglot(course_data):
    """A short meta-training run on the real subset, scored on held-out alphabets (5-way 1-shot)."""
    train_classes = load_omniglot("train", source="real")
    test_classes = load_omniglot("test", source="real")
    sampler = EpisodeSampler(train_classes, n_way=40, k_shot=1, n_query=2)   # the notebook's quick profile
    torch.manual_seed(0)
    model = ConvNet().to(memory_format=torch.channels_last)                   # as the notebook stores it
    config = TrainConfig(steps=100, lr=1e-3, log_every=50, progress=False)
    train(model, protonet.loss, lambda generator: sampler.sample_batch(1, generator), config)
    episodes = fixed_episodes(EpisodeSampler(test_classes, n_way=5, k_shot=1, n_query=15), 100, seed=0)
    result = evaluate_episodes(partial(protonet.predict, model), episodes)
    assert result.mean >= 0.80, f"ProtoNet after 100 steps: {result} on held-out 5-way 1-shot (chance 20%)"
