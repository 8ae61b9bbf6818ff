"""The one sampler protocol: every sampler of the course, through the same checks.

``sample(generator)`` gives one item, ``sample_batch(n, generator)`` the same type with a leading
dimension ``n``; every random number comes from ``generator``; the batch moves with ``.to(device)``.
"""
from dataclasses import fields

import pytest
import torch

from course_lib.data.base import ClassDataset
from course_lib.data.batches import Episode, PromptBatch, TensorBatch
from course_lib.data.clinc import load_clinc
from course_lib.data.episodes import EpisodeSampler, MixtureSampler
from course_lib.data.regression import LinearRegressionTasks
from course_lib.data.samplers import TaskSampler
from course_lib.data.sinusoid import SinusoidTasks
from course_lib.meta.metaicl import PromptBatchSampler
from course_lib.meta.transfer import ClassificationSampler


def coded_images(n_classes=6, per_class=20, rotations=False):
    """Images whose pixels encode (class, example), so that different draws differ."""
    values = torch.arange(n_classes * per_class, dtype=torch.float32).view(n_classes, per_class, 1, 1, 1)
    return ClassDataset(values.expand(-1, -1, 1, 3, 3).clone(), [f"c{i}" for i in range(n_classes)], "coded",
                        rotations)


def character_tokenizer(text, add_special_tokens=False):
    """A stand-in tokenizer: one id per character (the samplers only need ``["input_ids"]``)."""
    return {"input_ids": [ord(c) % 101 + 1 for c in text]}


# name -> (a sampler, does sample_batch stack draws of sample (True) or draw the batch vectorised (False)?)
SAMPLERS = {
    "episodes": lambda: (EpisodeSampler(coded_images(rotations=True), n_way=3, k_shot=2, n_query=2), True),
    "mixture of episode samplers": lambda: (MixtureSampler([EpisodeSampler(coded_images(), 3, 1, 2),
                                                            EpisodeSampler(coded_images(8), 3, 1, 2)]), True),
    "sinusoids": lambda: (SinusoidTasks(k_shot=3, n_query=4), True),
    "classification batches": lambda: (ClassificationSampler(coded_images(rotations=True)), False),
    "linear regression tasks": lambda: (LinearRegressionTasks(dim=3, n_points=5, noise_std=0.1), False),
    "regression tasks from a pool": lambda: (LinearRegressionTasks(dim=2, n_points=4, pool_size=3), False),
    "prompt batches": lambda: (PromptBatchSampler(load_clinc("train", source="standin"), character_tokenizer,
                                                  n_way=3, k_shot=1, shuffle_names=True), True),
}


def tensors(item: TensorBatch) -> list[torch.Tensor]:
    return [getattr(item, f.name) for f in fields(item)]


def same(a: TensorBatch, b: TensorBatch) -> bool:
    return type(a) is type(b) and all(torch.equal(x, y) for x, y in zip(tensors(a), tensors(b)))


def unpadded(batch: PromptBatch, row: int) -> PromptBatch:
    """Row ``row`` of a packed prompt batch without its right padding."""
    length = int(batch.attention_mask[row].sum())
    return PromptBatch(*(t[row, :length] for t in tensors(batch)))


@pytest.fixture(params=list(SAMPLERS), scope="module")
def sampler_and_kind(request):
    return SAMPLERS[request.param]()


def test_sample_batch_has_the_leading_dimension_n_and_the_type_of_one_sample(sampler_and_kind):
    sampler, _ = sampler_and_kind
    assert isinstance(sampler, TaskSampler)
    item = sampler.sample(torch.Generator().manual_seed(0))
    for n in (1, 3):
        batch = sampler.sample_batch(n, torch.Generator().manual_seed(0))
        assert type(batch) is type(item)
        for one, many in zip(tensors(item), tensors(batch)):
            assert many.dim() == one.dim() + 1 and many.shape[0] == n


def test_a_seed_fixes_the_batch_and_the_global_random_state_plays_no_part(sampler_and_kind):
    sampler, _ = sampler_and_kind
    torch.manual_seed(1)
    first = sampler.sample_batch(4, torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    again = sampler.sample_batch(4, torch.Generator().manual_seed(7))
    other = sampler.sample_batch(4, torch.Generator().manual_seed(8))
    assert same(first, again), "the same generator seed must give the same batch"
    assert not same(first, other), "another seed must give another batch"
    generator = torch.Generator().manual_seed(7)
    sampler.sample_batch(4, generator)
    assert not same(sampler.sample_batch(4, generator), first), "the generator moves on: the next batch is new"


def test_sample_batch_stacks_draws_of_sample_or_is_a_vectorised_draw_whose_first_item_is_sample(sampler_and_kind):
    sampler, stacks_draws = sampler_and_kind
    batch = sampler.sample_batch(3, torch.Generator().manual_seed(3))
    if stacks_draws:
        generator = torch.Generator().manual_seed(3)
        draws = [sampler.sample(generator) for _ in range(3)]
        rows = [unpadded(batch, i) if isinstance(batch, PromptBatch) else batch[i] for i in range(3)]
        assert all(same(row, draw) for row, draw in zip(rows, draws))
    else:
        one = sampler.sample(torch.Generator().manual_seed(3))
        assert same(one, sampler.sample_batch(1, torch.Generator().manual_seed(3))[0])
        assert not same(one, batch[0]), "a vectorised batch of 3 draws its items in another order than sample"


def test_the_batch_moves_to_a_device_as_a_whole(sampler_and_kind):
    sampler, _ = sampler_and_kind
    batch = sampler.sample_batch(2, torch.Generator().manual_seed(0))
    moved = batch.to("cpu")
    assert same(moved, batch) and all(t.device.type == "cpu" for t in tensors(moved))


def test_an_empty_batch_is_a_clear_error(sampler_and_kind):
    sampler, _ = sampler_and_kind
    with pytest.raises(ValueError, match="at least one item"):
        sampler.sample_batch(0, torch.Generator().manual_seed(0))


def test_batches_index_and_stack_back():
    episodes = [EpisodeSampler(coded_images(), 3, 1, 2).sample(torch.Generator().manual_seed(s)) for s in range(4)]
    batch = Episode.stack(episodes)
    assert batch.support_x.shape == (4, 3, 1, 3, 3) and batch.task.shape == (4, 3)
    assert all(same(batch[i], episode) for i, episode in enumerate(episodes))
    with pytest.raises(ValueError, match="at least one item"):
        Episode.stack([])
    three_way, four_way = EpisodeSampler(coded_images(), 3, 1, 2), EpisodeSampler(coded_images(), 4, 1, 2)
    with pytest.raises(ValueError, match="equal shapes, but support_x has the shapes"):
        MixtureSampler([three_way, four_way]).sample_batch(8, torch.Generator().manual_seed(0))


def test_a_sampler_must_implement_sample():
    class NoSample(TaskSampler):
        pass

    with pytest.raises(TypeError, match="sample"):
        NoSample()
