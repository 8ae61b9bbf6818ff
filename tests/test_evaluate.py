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


@pytest.mark.parametrize("explicit_batch_norm", [False, True])
def test_one_query_at_a_time_is_a_pass_over_the_support_and_that_query(explicit_batch_norm):
    from course_lib.evaluate import one_query_at_a_time
    from course_lib.models import ConvNet

    torch.manual_seed(0)
    net = ConvNet(hidden=4, n_blocks=2, image_size=12, explicit_batch_norm=explicit_batch_norm).double().eval()
    support_x, query_x = torch.rand(4, 1, 12, 12, dtype=torch.float64), torch.rand(5, 1, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        support, query = one_query_at_a_time(net, support_x, query_x, vectorised=False)
        assert support.shape == (5, 4, 36) and query.shape == (5, 36)
        for i in range(5):
            alone = net(torch.cat([support_x, query_x[i:i + 1]]))
            assert torch.allclose(support[i], alone[:4]) and torch.allclose(query[i], alone[4])
        # torch.func.vmap over the queries (CUDA's choice) gives the loop's outputs
        vmapped = one_query_at_a_time(net, support_x, query_x, vectorised=True)
        assert torch.allclose(vmapped[0], support, atol=1e-12) and torch.allclose(vmapped[1], query, atol=1e-12)
        # the support set's outputs differ between passes: batch statistics include the query
        assert not torch.allclose(support[0], support[1])
        assert not torch.allclose(net(torch.cat([support_x, query_x]))[4:], query), "one pass is transductive"


def test_uses_batch_statistics_tells_batch_norm_without_running_statistics():
    from course_lib.evaluate import uses_batch_statistics
    from course_lib.models import MLP, ConvNet

    assert uses_batch_statistics(ConvNet()) and uses_batch_statistics(ConvNet(explicit_batch_norm=True))
    assert not uses_batch_statistics(MLP())
    assert not uses_batch_statistics(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)))
