"""Transfer-learning baselines: the probe, Chen et al.'s Baseline and Baseline++, fine-tuning a copy, frozen batch norm,
and pretraining on real Omniglot."""
from functools import lru_cache, partial

import pytest
import torch
from torch.nn import functional as F

from course_lib.data import ClassDataset, load_omniglot
from course_lib.data.batches import Episode
from course_lib.data.episodes import EpisodeSampler, fixed_episodes
from course_lib.evaluate import evaluate_episodes
from course_lib.meta import transfer
from course_lib.train import TrainConfig, train


def separable_episode(n_way=5, k_shot=3, n_query=4, dim=16, seed=0):
    """Features of class ``k`` point along axis ``k`` (times a random length), plus small noise."""
    generator = torch.Generator().manual_seed(seed)

    def features(per_class):
        labels = torch.randperm(n_way, generator=generator).repeat_interleave(per_class)
        x = 0.1 * torch.rand(len(labels), dim, generator=generator)
        x[torch.arange(len(labels)), labels] += 1 + 4 * torch.rand(len(labels), generator=generator)
        return x, labels

    (support_x, support_y), (query_x, query_y) = features(k_shot), features(n_query)
    return Episode(support_x, support_y, query_x, query_y, torch.arange(n_way))


def image_dataset(n_classes=8, per_class=20, seed=0):
    images = torch.rand(n_classes, per_class, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return ClassDataset(images, [f"class {c}" for c in range(n_classes)], "random images")


def small_model(num_classes=8):
    torch.manual_seed(0)
    return transfer.pretraining_model(num_classes, hidden=8)


@pytest.mark.parametrize("adapt", [transfer.linear_probe, transfer.fine_tune_head])
def test_linear_heads_separate_linearly_separable_features(adapt):
    episode = separable_episode()
    for x, y in [(episode.support_x, episode.support_y), (episode.query_x, episode.query_y)]:
        logits = adapt(episode.support_x, episode.support_y, x, 5)
        assert logits.shape == (len(y), 5)
        assert torch.equal(logits.argmax(1), y)


def test_linear_probe_does_not_modify_its_inputs_and_ignores_feature_length():
    episode = separable_episode()
    support, query = episode.support_x.clone(), episode.query_x.clone()
    logits = transfer.linear_probe(episode.support_x, episode.support_y, episode.query_x, 5)
    assert torch.equal(episode.support_x, support) and torch.equal(episode.query_x, query)
    rescaled = transfer.linear_probe(3 * episode.support_x, episode.support_y, 0.5 * episode.query_x, 5)
    assert torch.allclose(logits, rescaled, atol=1e-5), "features are L2-normalised first"


@pytest.mark.parametrize("adapt", [transfer.linear_probe, transfer.fine_tune_head])
def test_a_stack_of_episodes_is_fitted_as_if_one_by_one(adapt):
    episodes = [separable_episode(seed=s) for s in range(3)]
    stacked = adapt(torch.stack([e.support_x for e in episodes]), torch.stack([e.support_y for e in episodes]),
                    torch.stack([e.query_x for e in episodes]), 5)
    for logits, e in zip(stacked, episodes):
        assert torch.allclose(logits, adapt(e.support_x, e.support_y, e.query_x, 5), atol=1e-4)


def test_evaluate_feature_episodes_equals_the_protocol_one_episode_at_a_time():
    generator = torch.Generator().manual_seed(0)
    episodes = []
    for seed in range(4):
        e = separable_episode(seed=seed, dim=6)
        noisy_query = e.query_x + torch.randn(e.query_x.shape, generator=generator)   # some queries fail
        episodes.append(Episode(e.support_x, e.support_y, noisy_query, e.query_y, e.task))
    together = transfer.evaluate_feature_episodes(transfer.linear_probe, episodes)
    one_by_one = evaluate_episodes(lambda e: transfer.linear_probe(e.support_x, e.support_y, e.query_x, 5), episodes)
    assert torch.allclose(together.values, one_by_one.values) and together.values.std() > 0


def test_fine_tuning_adapts_a_copy_and_leaves_the_pretrained_model_alone():
    model = transfer.freeze_batch_norm(small_model(), image_dataset().data[:, 0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    episode = EpisodeSampler(image_dataset(seed=1), 5, 1, 3).sample(torch.Generator().manual_seed(0))
    adapted = transfer.fine_tune(model, episode.support_x, episode.support_y, 5)
    for predict in (transfer.fine_tune_predict, transfer.fine_tune_head_predict, transfer.linear_probe_predict,
                    transfer.chen_baseline_predict, transfer.chen_baseline_plus_plus_predict):
        assert predict(model, episode).shape == (15, 5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the pretrained weights and statistics are unchanged"
    assert adapted.head.out_features == 5 and model.head.out_features == 8
    moved = [not torch.equal(a, b) for a, b in zip(adapted.features.parameters(), model.features.parameters())]
    assert any(moved), "the copy's backbone was trained"
    assert torch.equal(adapted.features[0][1].running_mean, model.features[0][1].running_mean), \
        "frozen batch-norm statistics stay fixed during fine-tuning"


def test_frozen_batch_norm_embeds_each_image_on_its_own():
    model = small_model()
    images = image_dataset().data[:, 0]                  # [8, 1, 28, 28]
    frozen = transfer.freeze_batch_norm(model, images)
    with torch.no_grad():
        together = frozen.embed(images)
        alone = torch.cat([frozen.embed(image[None]) for image in images])
        batch_statistics = torch.cat([model.embed(images[:4]), model.embed(images[4:])])
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(model.embed(images).detach(), batch_statistics.detach(), atol=1e-3), \
        "the original model still normalises with the batch at hand"


def test_probing_an_episode_leaves_the_model_in_its_mode_with_dropout_off():
    frozen = transfer.freeze_batch_norm(small_model(), image_dataset().data[:, 0]).train()
    frozen.head = torch.nn.Dropout(0.5)                   # unused by embed: the mode must still come back
    episode = fixed_episodes(EpisodeSampler(image_dataset(), 3, 1, 2), 1)[0]
    first = transfer.linear_probe_predict(frozen, episode, steps=5)
    assert frozen.training and frozen.head.training, "predicting must not leave the model in eval mode"
    assert torch.equal(first, transfer.linear_probe_predict(frozen, episode, steps=5))


def test_embedded_dataset_gives_the_same_episodes_with_features():
    images = image_dataset()
    frozen = transfer.freeze_batch_norm(small_model(), images.data[:, 0])
    features = transfer.embed_dataset(frozen, images)
    assert features.data.shape == (8, 20, frozen.embedding_dim) and features.real == images.real
    sampler_args = (5, 2, 3)
    for on_images, on_features in zip(fixed_episodes(EpisodeSampler(images, *sampler_args), 3, seed=4),
                                      fixed_episodes(EpisodeSampler(features, *sampler_args), 3, seed=4)):
        assert torch.equal(on_images.task, on_features.task)
        support, query = transfer.embed_episode(frozen, on_images)
        assert torch.allclose(support, on_features.support_x, atol=1e-5)
        assert torch.allclose(query, on_features.query_x, atol=1e-5)


def test_embed_dataset_refuses_batch_statistics():
    with pytest.raises(ValueError, match="freeze_batch_norm"):
        transfer.embed_dataset(small_model(), image_dataset())


def test_classification_sampler_is_seeded_and_labels_are_dataset_classes():
    dataset = ClassDataset(torch.arange(6 * 20, dtype=torch.float32).view(6, 20, 1, 1, 1),
                           [f"c{i}" for i in range(6)], "coded", rotations=True)
    sampler = transfer.ClassificationSampler(dataset)
    batch = sampler.sample_batch(50, torch.Generator().manual_seed(0))
    again = sampler.sample_batch(50, torch.Generator().manual_seed(0))
    assert batch.x.shape == (50, 1, 1, 1) and torch.equal(batch.x, again.x) and torch.equal(batch.y, again.y)
    assert batch.y.max() < 24 and len(batch.y.unique()) > 15, "24 classes: 6 characters in 4 rotations"
    assert torch.equal((batch.x.flatten() // 20).long(), batch.y // 4), "label c is base class c // 4"
    one = sampler.sample(torch.Generator().manual_seed(3))
    assert one.x.shape == (1, 1, 1) and one.y.shape == () and int(one.x.flatten() // 20) == int(one.y) // 4


def test_classification_batches_keep_the_stream_of_the_stored_pretraining_runs():
    # sample_batch is vectorised: all B classes, then one example index per class (the stream that
    # notebooks 02 and 06 were run with); a batch of one is what sample draws.
    dataset = ClassDataset(torch.arange(6 * 20, dtype=torch.float32).view(6, 20, 1, 1, 1),
                           [f"c{i}" for i in range(6)], "coded")
    sampler = transfer.ClassificationSampler(dataset)
    generator = torch.Generator().manual_seed(0)
    classes, drawings = torch.randint(6, (8,), generator=generator), torch.randint(20, (8,), generator=generator)
    batch = sampler.sample_batch(8, torch.Generator().manual_seed(0))
    assert torch.equal(batch.y, classes) and torch.equal(batch.x.flatten(), (20 * classes + drawings).float())
    one = sampler.sample(torch.Generator().manual_seed(5))
    first = sampler.sample_batch(1, torch.Generator().manual_seed(5))[0]
    assert torch.equal(one.x, first.x) and torch.equal(one.y, first.y)


def test_cosine_head_logits_are_scaled_cosines():
    model = transfer.pretraining_model(8, cosine=True, hidden=8)
    head = model.head
    features = torch.randn(4, model.embedding_dim)
    logits = head(features)
    assert logits.shape == (4, 8) and logits.abs().max() <= head.scale + 1e-5
    assert torch.allclose(logits, head(10 * features), atol=1e-5)
    assert torch.allclose(logits, head.scale * F.cosine_similarity(features[:, None], head.weight[None], dim=-1),
                          atol=1e-5)


CHEN_HEADS = [transfer.chen_baseline, transfer.chen_baseline_plus_plus]


@pytest.mark.parametrize("adapt", CHEN_HEADS)
def test_chen_heads_separate_linearly_separable_features(adapt):
    episode = separable_episode(k_shot=1)
    assert torch.equal(adapt(episode.support_x, episode.support_y, episode.query_x, 5).argmax(1), episode.query_y)


@pytest.mark.parametrize("adapt", CHEN_HEADS)
@pytest.mark.parametrize("k_shot, batch_sizes", [(1, [4, 1]), (2, [4, 4, 2])])
def test_chen_heads_take_100_epochs_of_batches_of_4_with_their_sgd_settings(adapt, k_shot, batch_sizes,
                                                                           monkeypatch):
    steps, settings, seen_batches = [], [], []
    sgd_step = torch.optim.SGD.step

    def recording_step(optimizer, *args, **kwargs):
        steps.append(1)
        settings.append({key: optimizer.param_groups[0][key] for key in transfer.CHEN_SGD} |
                        {"nesterov": optimizer.param_groups[0]["nesterov"],
                         "parameters": sum(p.numel() for p in optimizer.param_groups[0]["params"])})
        return sgd_step(optimizer, *args, **kwargs)

    cross_entropy = F.cross_entropy

    def recording_cross_entropy(scores, targets, **kwargs):
        seen_batches.append(len(targets))
        return cross_entropy(scores, targets, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    monkeypatch.setattr(transfer.F, "cross_entropy", recording_cross_entropy)
    episode = separable_episode(k_shot=k_shot)
    adapt(episode.support_x, episode.support_y, episode.query_x, 5)
    assert len(steps) == 100 * len(batch_sizes), "100 epochs, one step per mini-batch"
    assert seen_batches == 100 * batch_sizes, "consecutive batches of 4 of each epoch, the last one smaller"
    expected = {"lr": 0.01, "momentum": 0.9, "dampening": 0.9, "weight_decay": 0.001, "nesterov": False,
                "parameters": 5 * 16 + 5}          # W and b, or the cosine head's directions and class norms
    assert all(s == expected for s in settings), settings[0]


@pytest.mark.parametrize("adapt", CHEN_HEADS)
def test_chen_heads_are_deterministic_given_the_seed(adapt):
    episode = separable_episode(k_shot=2)
    args = episode.support_x, episode.support_y, episode.query_x, 5
    assert torch.equal(adapt(*args, seed=3), adapt(*args, seed=3))
    assert not torch.allclose(adapt(*args, seed=3), adapt(*args, seed=4)), "the seed sets the initialisation and order"
    torch.manual_seed(0)
    first = adapt(*args)
    torch.manual_seed(1)
    assert torch.equal(first, adapt(*args)), "the global torch seed plays no part"


def chen_replica(cosine, support, support_y, query, n_way=5, seed=0):
    """Chen et al.'s ``BaselineFinetune.set_forward_adaptation`` line by line, with nn modules: a fresh
    ``nn.Linear`` (Baseline) or ``distLinear`` (Baseline++: weight norm, features / (||x|| + 1e-5), scale 2),
    their SGD, 100 epochs of a random permutation cut into batches of 4; the draws taken from a generator
    in the order the library takes them, so the two must agree to rounding."""
    generator = torch.Generator().manual_seed(seed)
    dim, n = support.shape[-1], len(support_y)
    layer = torch.nn.Linear(dim, n_way, bias=not cosine)
    with torch.no_grad():
        layer.weight.copy_((2 * torch.rand((n_way, dim), generator=generator) - 1) / dim ** 0.5)
        if not cosine:
            layer.bias.copy_((2 * torch.rand((n_way,), generator=generator) - 1) / dim ** 0.5)
    if cosine:
        layer = torch.nn.utils.parametrizations.weight_norm(layer, "weight", dim=0)

    def scores(z):
        return 2 * layer(z / (z.norm(dim=1, keepdim=True) + 1e-5)) if cosine else layer(z)

    optimizer = torch.optim.SGD(layer.parameters(), lr=0.01, momentum=0.9, dampening=0.9, weight_decay=0.001)
    for _ in range(100):
        rand_id = torch.rand(n, generator=generator).argsort()
        for i in range(0, n, 4):
            optimizer.zero_grad()
            selected = rand_id[i:min(i + 4, n)]
            F.cross_entropy(scores(support[selected]), support_y[selected]).backward()
            optimizer.step()
    with torch.no_grad():
        return scores(query)


@pytest.mark.parametrize("cosine, adapt", [(False, transfer.chen_baseline), (True, transfer.chen_baseline_plus_plus)])
def test_chen_heads_match_a_line_by_line_replica_of_their_code(cosine, adapt):
    episode = separable_episode(k_shot=3)
    args = episode.support_x, episode.support_y, episode.query_x
    ours, theirs = adapt(*args, 5, seed=2), chen_replica(cosine, *args, seed=2)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    assert not torch.allclose(theirs, chen_replica(cosine, *args, seed=3), atol=1e-2), "the draws matter"


def test_chen_cosine_scale_follows_their_rule():
    assert [transfer.chen_cosine_scale(n) for n in (5, 200, 201, 548)] == [2.0, 2.0, 10.0, 10.0]


def test_baseline_plus_plus_logits_are_the_scale_times_class_norm_times_cosine(monkeypatch):
    fitted = []
    fit_head = transfer.fit_head

    def recording_fit_head(*args, **kwargs):
        fitted.append(fit_head(*args, **kwargs))
        return fitted[-1]

    monkeypatch.setattr(transfer, "fit_head", recording_fit_head)
    episode = separable_episode(k_shot=2)
    logits = transfer.chen_baseline_plus_plus(episode.support_x, episode.support_y, episode.query_x, 5)
    (direction, gain), = fitted
    assert direction.shape == (5, 16) and gain.shape == (5,)
    assert not torch.allclose(gain, direction.norm(dim=-1)), "the class norms are learnt apart from the directions"
    cosines = F.cosine_similarity(episode.query_x[:, None], direction[None], dim=-1)
    assert torch.allclose(logits, 2.0 * gain * cosines, atol=1e-5), "scale 2 for a 5-way head"
    longer = transfer.chen_baseline_plus_plus(episode.support_x, episode.support_y, 7 * episode.query_x, 5)
    assert torch.allclose(logits, longer, atol=1e-5), "a query's length does not matter, only its direction"
    rescaled = transfer.chen_baseline_plus_plus(episode.support_x, episode.support_y, episode.query_x, 5, scale=10)
    assert not torch.allclose(rescaled, logits)


def test_fit_head_refuses_an_empty_batch():
    episode = separable_episode()
    weight = torch.zeros(5, 16, requires_grad=True)
    with pytest.raises(ValueError, match="batch_size"):
        transfer.fit_head(lambda x, w: x @ w.T, [weight], episode.support_x, episode.support_y,
                          torch.optim.SGD([weight], lr=0.1), 1, batch_size=0)


@lru_cache(maxsize=None)
def pretrain_on_real_omniglot(steps=150):
    """A short pretraining on every meta-train class of the real Omniglot subset (shared by two tests)."""
    train_classes = load_omniglot("train", source="real")
    torch.manual_seed(0)
    model = transfer.pretraining_model(train_classes.num_classes)
    config = TrainConfig(steps=steps, lr=3e-3, log_every=10, progress=False)
    sampler = transfer.ClassificationSampler(train_classes)
    history = train(model, transfer.classification_loss, partial(sampler.sample_batch, 64), config)
    reference = sampler.sample_batch(500, torch.Generator().manual_seed(0)).x
    return train_classes, history, transfer.freeze_batch_norm(model, reference)


def test_pretraining_loss_falls_on_real_data(course_data):
    train_classes, history, _ = pretrain_on_real_omniglot()
    _, losses = history.series("loss")
    chance = torch.log(torch.tensor(float(train_classes.num_classes))).item()
    assert train_classes.num_classes == 548
    assert losses[0] == pytest.approx(chance, abs=0.3), "an untrained head is near-uniform over the classes"
    assert losses[-1] < chance - 1.0, f"loss {losses[-1]:.2f} after training, {chance:.2f} at chance"


def test_short_pretraining_then_linear_probe_beats_chance_on_held_out_alphabets(course_data):
    _, _, backbone = pretrain_on_real_omniglot()
    test_features = transfer.embed_dataset(backbone, load_omniglot("test", source="real"))
    episodes = fixed_episodes(EpisodeSampler(test_features, 5, 1, n_query=15), 300, seed=0)
    result = transfer.evaluate_feature_episodes(transfer.linear_probe, episodes)
    assert result.mean > 0.70, f"5-way 1-shot linear probe after a short pretraining: {result} (chance 20%)"
    image_episodes = fixed_episodes(EpisodeSampler(load_omniglot("test", source="real"), 5, 1, n_query=15), 5, seed=0)
    one_by_one = evaluate_episodes(partial(transfer.linear_probe_predict, backbone), image_episodes)
    assert torch.allclose(one_by_one.values, result.values[:5]), "features computed once give the per-episode result"
