import pytest
import torch

from course_lib.data.base import ClassDataset
from course_lib.data.episodes import EpisodeSampler, MixtureSampler, fixed_episodes
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
