import pytest
import torch

from course_lib.data.base import ClassDataset
from course_lib.data.episodes import EpisodeSampler, FixedLabelEpisodeSampler, MixtureSampler, fixed_episodes
from course_lib.data.sinusoid import SinusoidTasks


def labelled_dataset(n_classes=12, per_class=20, rotations=False):
    """Each example's single value encodes (class, example) so tests can see what was picked."""
    values = torch.arange(n_classes * per_class, dtype=torch.float32).view(n_classes, per_class, 1)
    return ClassDataset(values, [f"c{i}" for i in range(n_classes)], "test data", rotations)


def test_episode_shapes_labels_and_disjoint_sets():
    sampler = EpisodeSampler(labelled_dataset(), n_way=5, k_shot=3, n_query=4)
    episode = sampler.sample(torch.Generator().manual_seed(0))
    assert episode.support_x.shape == (15, 1) and episode.query_x.shape == (20, 1)
    assert episode.support_y.bincount().tolist() == [3] * 5
    assert episode.query_y.bincount().tolist() == [4] * 5
    support, query = set(episode.support_x.flatten().tolist()), set(episode.query_x.flatten().tolist())
    assert len(support) == 15 and len(query) == 20 and not support & query
    for x, y in [(episode.support_x, episode.support_y), (episode.query_x, episode.query_y)]:
        true_class = (x.flatten() // 20).long()
        assert torch.equal(true_class, episode.task[y]), "every example carries its class's label"


def test_labels_are_assigned_in_random_order():
    sampler = EpisodeSampler(labelled_dataset(), n_way=5, k_shot=1, n_query=1)
    generator = torch.Generator().manual_seed(1)
    orders = {tuple(sampler.sample(generator).task.tolist()) for _ in range(50)}
    assert len(orders) == 50, "class-to-label assignment must vary between episodes"
    assert any(list(o) != sorted(o) for o in orders)


def test_rotated_classes_are_rotations():
    images = torch.rand(3, 20, 1, 4, 4)
    ds = ClassDataset(images, ["a", "b", "c"], "test", rotations=True)
    assert ds.num_classes == 12
    idx = torch.arange(5)
    assert torch.equal(ds.examples(5, idx), torch.rot90(images[1, idx], 1, dims=(-2, -1)))
    assert ds.class_name(6) == "b (rot 180)"


def test_meta_batch_and_fixed_episodes_are_reproducible():
    sampler = EpisodeSampler(labelled_dataset(), n_way=3, k_shot=2, n_query=2)
    batch = sampler.sample_batch(4, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (4, 6, 1) and batch[2].query_y.shape == (6,)
    first, again, other = (fixed_episodes(sampler, 5, seed=s) for s in (7, 7, 8))
    assert all(torch.equal(a.support_x, b.support_x) for a, b in zip(first, again))
    assert not all(torch.equal(a.support_x, b.support_x) for a, b in zip(first, other))


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_way=13, k_shot=1, n_query=1), "more than the 12 classes"),
    (dict(n_way=5, k_shot=15, n_query=6), "only 20"),
    (dict(n_way=1, k_shot=1, n_query=1), "n_way must be at least 2"),
    (dict(n_way=5, k_shot=0, n_query=1), "k_shot must be at least 1"),
    (dict(n_way=5, k_shot=1, n_query=0), "n_query must be at least 1"),
])
def test_impossible_requests_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(labelled_dataset(), **kwargs)


def test_sinusoid_tasks_follow_the_maml_family():
    tasks = SinusoidTasks(k_shot=10, n_query=5)
    batch = tasks.sample_batch(2000, torch.Generator().manual_seed(0))
    amplitude, phase = batch.task[:, 0], batch.task[:, 1]
    assert 0.1 <= amplitude.min() and amplitude.max() <= 5.0 and 0 <= phase.min() and phase.max() <= torch.pi
    assert abs(amplitude.mean().item() - 2.55) < 0.15, "A ~ U[0.1, 5]"
    assert batch.support_x.abs().max() <= 5.0 and batch.support_x.shape == (2000, 10, 1)
    expected = amplitude[:, None, None] * torch.sin(batch.query_x - phase[:, None, None])
    assert torch.allclose(batch.query_y, expected)


def test_a_mixture_draws_each_task_within_one_group_and_uses_every_group():
    groups = [ClassDataset(torch.full((4, 6, 1), float(g)), [f"{g}/{c}" for c in range(4)], "coded") for g in range(3)]
    mixture = MixtureSampler([EpisodeSampler(group, n_way=3, k_shot=1, n_query=2) for group in groups])
    episodes = fixed_episodes(mixture, 30, seed=0)
    group_of_task = [int(e.support_x[0]) for e in episodes]
    assert all(torch.all(e.support_x == g) and torch.all(e.query_x == g) for e, g in zip(episodes, group_of_task))
    assert set(group_of_task) == {0, 1, 2}
    again = fixed_episodes(mixture, 30, seed=0)
    assert all(torch.equal(a.support_x, b.support_x) and torch.equal(a.task, b.task) for a, b in zip(episodes, again))
    with pytest.raises(ValueError, match="at least one sampler"):
        MixtureSampler([])


def test_split_examples_parts_hold_each_class_examples_once_and_a_seed_fixes_them():
    dataset = labelled_dataset(n_classes=6, per_class=10)
    first, rest = dataset.split_examples(7, seed=3)
    assert first.data.shape == (6, 7, 1) and rest.data.shape == (6, 3, 1)
    for c in range(6):
        values = first.data[c].flatten().tolist() + rest.data[c].flatten().tolist()
        assert sorted(values) == list(range(10 * c, 10 * c + 10)), "every example of class c once, none of another"
    assert first.data[:, :, 0].tolist() != dataset.data[:, :7, 0].tolist(), "shuffled, not the first seven"
    again, _ = dataset.split_examples(7, seed=3)
    other, _ = dataset.split_examples(7, seed=4)
    assert torch.equal(again.data, first.data) and not torch.equal(other.data, first.data)
    assert first.base_class_names == dataset.base_class_names and torch.equal(dataset.data, labelled_dataset(6, 10).data)
    episode = EpisodeSampler(rest, 3, 1, 2).sample(torch.Generator().manual_seed(0))
    assert set(episode.query_x.flatten().tolist()) <= set(rest.data.flatten().tolist())


@pytest.mark.parametrize("n_first", [0, 10])
def test_split_examples_refuses_an_empty_part(n_first):
    with pytest.raises(ValueError, match="each part needs an example per class"):
        labelled_dataset(per_class=10).split_examples(n_first)


def test_fixed_label_episodes_give_each_class_one_label_for_good_and_n_way_distinct_labels():
    dataset = labelled_dataset(n_classes=12, per_class=20)
    sampler = FixedLabelEpisodeSampler(dataset, n_way=4, k_shot=2, n_query=3, seed=0)
    generator = torch.Generator().manual_seed(0)
    label_seen, classes_seen = {}, set()
    for _ in range(200):
        episode = sampler.sample(generator)
        assert episode.support_y.bincount().tolist() == [2] * 4 and episode.query_y.bincount().tolist() == [3] * 4
        for x, y in [(episode.support_x, episode.support_y), (episode.query_x, episode.query_y)]:
            for c, label in zip((x.flatten() // 20).long().tolist(), y.tolist()):
                assert label_seen.setdefault(c, label) == label, f"class {c} changed its label"
        classes_seen.update(episode.task.tolist())
    assert classes_seen == set(range(12)), "every class appears"
    assert sorted(list(label_seen.values()).count(label) for label in range(4)) == [3, 3, 3, 3]
    random_labels = EpisodeSampler(dataset, 4, 2, 3)
    labels = {}
    for _ in range(50):
        episode = random_labels.sample(generator)
        for c, label in zip(episode.task.tolist(), range(4)):
            labels.setdefault(c, set()).add(label)
    assert max(len(s) for s in labels.values()) > 1, "EpisodeSampler, unlike it, changes a class's label"
