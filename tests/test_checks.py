"""The exercise checkers accept correct solutions and name the typical mistakes."""
import pytest
import torch

from course_lib.checks import check_confidence_interval, check_episode_sampler, check_nearest_neighbour
from course_lib.data.episodes import Episode, EpisodeSampler
from course_lib.evaluate import mean_confidence_interval


def reference_sampler(dataset, n_way, k_shot, n_query, generator):
    return EpisodeSampler(dataset, n_way, k_shot, n_query).sample(generator)


def sorted_labels_sampler(dataset, n_way, k_shot, n_query, generator):
    episode = reference_sampler(dataset, n_way, k_shot, n_query, generator)
    order = episode.task.argsort().argsort()  # relabel so label 0 is the smallest class
    return Episode(episode.support_x, order[episode.support_y], episode.query_x, order[episode.query_y],
                   episode.task.sort().values)


def overlapping_sampler(dataset, n_way, k_shot, n_query, generator):
    episode = reference_sampler(dataset, n_way, k_shot, n_query, generator)
    query_x = episode.query_x.clone()
    query_x[0] = episode.support_x[0]
    return Episode(episode.support_x, episode.support_y, query_x, episode.query_y, episode.task)


def test_correct_solutions_pass(capsys):
    check_episode_sampler(reference_sampler)
    check_confidence_interval(mean_confidence_interval)
    check_nearest_neighbour(lambda e: e.support_y[torch.cdist(e.query_x.flatten(1), e.support_x.flatten(1)).argmin(1)])
    assert capsys.readouterr().out.count("all checks passed") == 3


@pytest.mark.parametrize("sampler, message", [
    (sorted_labels_sampler, "assign labels in random order"),
    (overlapping_sampler, "must be disjoint"),
    (lambda d, n, k, q, g: reference_sampler(d, n, k, q, torch.Generator().manual_seed(5)), "hardly vary"),
])
def test_sampler_mistakes_are_named(sampler, message):
    with pytest.raises(AssertionError, match=message):
        check_episode_sampler(sampler)


@pytest.mark.parametrize("interval, message", [
    (lambda v: (v.mean().item(), 1.959964 * v.std().item() / len(v) ** 0.5), "normal quantile"),
    (lambda v: (v.mean().item(), 2 * mean_confidence_interval(v)[1]), "not the full width"),
    (lambda v: v.mean().item(), "should return a tuple"),
])
def test_interval_mistakes_are_named(interval, message):
    with pytest.raises(AssertionError, match=message):
        check_confidence_interval(interval)


def test_nearest_neighbour_index_instead_of_label_is_named():
    def returns_index(e):
        return torch.cdist(e.query_x.flatten(1), e.support_x.flatten(1)).argmin(1)
    with pytest.raises(AssertionError, match="support \\*label\\*"):
        check_nearest_neighbour(returns_index)


def test_endless_student_code_is_stopped():
    def endless(*args):
        while True:
            pass
    with pytest.raises(AssertionError, match="took longer than 0.5 s"):
        check_episode_sampler(endless, seconds=0.5)
