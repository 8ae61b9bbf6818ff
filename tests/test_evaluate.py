import math

import pytest
import torch

from course_lib.data.episodes import Episode
from course_lib.evaluate import EvalResult, evaluate_episodes, mean_confidence_interval


def test_confidence_interval_matches_the_t_formula():
    values = [0.2, 0.4, 0.6, 0.8]
    mean, half = mean_confidence_interval(values)
    sd = math.sqrt(sum((v - 0.5) ** 2 for v in values) / 3)
    assert mean == pytest.approx(0.5)
    assert half == pytest.approx(3.182446 * sd / 2, rel=1e-6), "t_{0.975, 3} = 3.1824"


def test_confidence_interval_shrinks_like_one_over_sqrt_n():
    generator = torch.Generator().manual_seed(0)
    small = mean_confidence_interval(torch.rand(100, generator=generator))[1]
    large = mean_confidence_interval(torch.rand(10_000, generator=generator))[1]
    assert large == pytest.approx(small / 10, rel=0.15)


def test_confidence_interval_needs_two_values():
    with pytest.raises(ValueError, match="at least 2"):
        mean_confidence_interval([0.5])


def toy_episodes(n=20):
    query_y = torch.arange(4)
    return [Episode(torch.zeros(4, 1), query_y, torch.zeros(4, 1), query_y, torch.arange(4)) for _ in range(n)]


def test_evaluate_scores_each_episode():
    episodes = toy_episodes()
    perfect = evaluate_episodes(lambda e: torch.eye(4), episodes)
    half = evaluate_episodes(lambda e: torch.tensor([0, 1, 0, 0]), episodes)
    assert perfect.mean == 1.0 and half.mean == 0.5 and half.ci95 == 0.0
    assert str(half) == "50.0% ± 0.0% (95% CI, 20 episodes)"
    assert evaluate_episodes(lambda e: e.query_y.float() + 1, episodes, metric="mse").mean == 1.0


def test_evaluate_rejects_bad_requests():
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_episodes(lambda e: e.query_y, toy_episodes(), metric="f1")
    with pytest.raises(ValueError, match="at least 2 episodes"):
        evaluate_episodes(lambda e: e.query_y, toy_episodes(1))


def test_eval_result_formats_regression():
    result = EvalResult("mse", torch.tensor([1.0, 3.0]))
    assert str(result).startswith("mse 2.000 ±")
