import pytest
import torch
from torch import nn

from course_lib.course.cost import median_seconds, peak_saved_megabytes, training_flops
from course_lib.data.batches import Episode
from course_lib.meta import maml
from course_lib.meta.maml import MAML


def summed_output(model, x):
    return model(x).sum()


def test_training_flops_of_linear_layers_by_hand():
    batch, n_in, hidden, n_out = 5, 7, 4, 3
    x = torch.randn(batch, n_in)
    forward = 2 * batch * n_in * n_out                    # y = x W^T: one multiply-add per (row, in, out)
    # the backward pass computes the weight's gradient (one product as large as the forward); the input's is
    # not needed: x does not require a gradient
    assert training_flops(summed_output, nn.Linear(n_in, n_out), x) == forward + forward
    # behind another layer the input's gradient is needed too: that layer's backward is twice its forward
    first, second = 2 * batch * n_in * hidden, 2 * batch * hidden * n_out
    two_layers = nn.Sequential(nn.Linear(n_in, hidden), nn.Linear(hidden, n_out))
    assert training_flops(summed_output, two_layers, x) == (first + first) + (second + 2 * second)


def test_training_flops_count_maml_inner_loops_and_their_second_order_backward():
    tasks, n_support, n_query, n_in, n_way = 2, 6, 9, 4, 3
    batch = Episode(support_x=torch.randn(tasks, n_support, n_in), support_y=torch.randint(0, n_way, (tasks, n_support)),
                    query_x=torch.randn(tasks, n_query, n_in), query_y=torch.randint(0, n_way, (tasks, n_query)),
                    task=torch.zeros(tasks))
    per_support, per_query = 2 * n_support * n_in * n_way, 2 * n_query * n_in * n_way   # one product's flops

    def counted(inner_steps, first_order):
        learner = MAML(nn.Linear(n_in, n_way), inner_lr=0.1, inner_steps=inner_steps, first_order=first_order)
        return training_flops(maml.loss, learner, batch) / tasks
    # first order: each inner step a forward and a weight gradient on the support set; then the query's
    assert counted(1, first_order=True) == 2 * per_support + 2 * per_query
    assert counted(2, first_order=True) == 4 * per_support + 2 * per_query
    # second order: the outer backward also goes back through each inner gradient (two products a step)
    assert counted(1, first_order=False) == 4 * per_support + 2 * per_query
    assert counted(2, first_order=False) == 8 * per_support + 2 * per_query


def test_training_flops_leave_the_model_and_the_random_state_as_they_were():
    model = nn.Sequential(nn.Linear(7, 4), nn.Dropout(0.5), nn.Linear(4, 3)).eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    x = torch.randn(5, 7)
    torch.manual_seed(0)
    untouched = torch.rand(3)
    torch.manual_seed(0)
    assert training_flops(summed_output, model, x) > 0   # the step's dropout draws from the global generator
    assert torch.equal(torch.rand(3), untouched)
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())
    assert not model.training                             # counted in training mode, on a copy


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
