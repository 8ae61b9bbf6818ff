import pytest
import torch

from course_lib.course.cost import median_seconds, peak_saved_megabytes


def test_freed_graphs_stop_counting_and_kept_graphs_add_up():
    weight = torch.randn(256, 256, requires_grad=True)
    one_product = peak_saved_megabytes(lambda: (torch.randn(1024, 256) @ weight).sum())
    # each product saves its 1 MB input; a dropped graph is freed before the next one is built
    assert one_product == pytest.approx(1.0, rel=0.01)
    assert peak_saved_megabytes(lambda: [(torch.randn(1024, 256) @ weight).sum() for _ in range(4)]) \
        == pytest.approx(4.0, rel=0.01)

    def dropped_each_time():
        for _ in range(4):
            (torch.randn(1024, 256) @ weight).sum()
    assert peak_saved_megabytes(dropped_each_time) == pytest.approx(1.0, rel=0.01)
    with torch.no_grad():
        assert peak_saved_megabytes(lambda: (torch.randn(1024, 256) @ weight).sum()) == 0.0


def test_median_seconds_skips_the_warm_up():
    calls = []

    def step():
        calls.append(None)
        if len(calls) == 1:
            time_wasted = sum(range(3_000_000))  # a slow first call, like a warm-up
            assert time_wasted
    assert median_seconds(step, repeats=3) < 0.05
    assert len(calls) == 4
