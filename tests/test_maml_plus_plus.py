"""MAML++: the multi-step loss and its annealing, per-layer per-step step sizes and per-step batch norm,
checked against a hand-written unrolled inner loop, finite differences and the official schedule."""
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from course_lib.data.base import ClassDataset
from course_lib.data.batches import Episode
from course_lib.data.episodes import EpisodeSampler
from course_lib.evaluate import uses_batch_statistics
from course_lib.meta import maml
from course_lib.meta.maml import MAML
from course_lib.meta.maml_plus_plus import MAMLPlusPlus, multi_step_loss_weights
from course_lib.models import ConvNet, PerStepBatchNorm2d, set_batch_statistics_in_eval, set_inner_step
from course_lib.train import TrainConfig, train


class TinyNet(nn.Module):
    """4 -> 6 tanh -> 3: smooth and without batch norm, for exact comparisons in float64."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.body(x))


def tasks(n_tasks=2):
    g = torch.Generator().manual_seed(0)
    support_y = torch.arange(3).repeat_interleave(2).repeat(n_tasks, 1)
    return Episode(torch.randn(n_tasks, 6, 4, generator=g, dtype=torch.float64), support_y,
                   torch.randn(n_tasks, 6, 4, generator=g, dtype=torch.float64), support_y.clone(),
                   torch.arange(3).repeat(n_tasks, 1))


def tiny(inner_steps=2, **kwargs):
    torch.manual_seed(0)
    return MAMLPlusPlus(TinyNet().double(), inner_lr=0.3, inner_steps=inner_steps, **kwargs)


def class_images(n_classes=8, examples=6, size=12, noise=0.3):
    g = torch.Generator().manual_seed(0)
    means = torch.rand(n_classes, 1, 1, size, size, generator=g)
    images = means + noise * torch.randn(n_classes, examples, 1, size, size, generator=g)
    return ClassDataset(images, [str(c) for c in range(n_classes)], "noisy class images")


def small_convnet(inner_steps=2):
    torch.manual_seed(0)
    return ConvNet(hidden=8, n_blocks=2, n_classes=3, image_size=12, batch_norm_steps=inner_steps + 1)


def test_loss_weights_follow_the_official_schedule():
    assert multi_step_loss_weights(5, 0.0) == pytest.approx([0.2] * 5)
    # half-way: earlier steps 1/S - 0.5/S = 0.1, the last 1/S + 0.5 * 4/S = 0.6
    assert multi_step_loss_weights(5, 0.5) == pytest.approx([0.1] * 4 + [0.6])
    # near the end the earlier steps stop at 0.03/S and the last one at 1 - 4 * 0.03/S
    assert multi_step_loss_weights(5, 0.99) == pytest.approx([0.006] * 4 + [0.976])
    assert multi_step_loss_weights(5, 1.0) == [0.0] * 4 + [1.0]
    for progress in (0.0, 0.3, 0.7, 0.99):
        assert sum(multi_step_loss_weights(3, progress)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one inner step"):
        multi_step_loss_weights(0, 0.0)


def test_meta_gradient_equals_a_hand_unrolled_inner_loop_with_per_step_step_sizes():
    learner = tiny(inner_steps=2, anneal_steps=4)
    with torch.no_grad():
        for alphas in learner.step_sizes_per_layer:
            alphas.copy_(torch.tensor([0.3, 0.1], dtype=alphas.dtype))
        learner.step_sizes_per_layer[0][1] = 0.2          # one layer's second step differs from the rest
    learner.meta_steps_taken.fill_(2)                     # half-way through the annealing: w = [0.25, 0.75]
    batch = tasks()
    loss, _ = learner.meta_loss(batch)
    learned = [p for p in learner.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, learned)

    theta = dict(learner.net.named_parameters())
    names = list(theta)
    total = 0.0
    for sx, sy, qx, qy in zip(batch.support_x, batch.support_y, batch.query_x, batch.query_y):
        phi, task_loss = theta, 0.0
        for step, weight in enumerate([0.25, 0.75]):
            support = F.cross_entropy(functional_call(learner.net, phi, (sx,)), sy)
            g = torch.autograd.grad(support, list(phi.values()), create_graph=True)
            phi = {n: phi[n] - learner.step_sizes_per_layer[i][step] * g[i] for i, n in enumerate(names)}
            task_loss = task_loss + weight * F.cross_entropy(functional_call(learner.net, phi, (qx,)), qy)
        total = total + task_loss
    expected_loss = total / len(batch.support_x)
    expected = torch.autograd.grad(expected_loss, learned)
    torch.testing.assert_close(loss, expected_loss)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)
    assert int(learner.meta_steps_taken) == 3            # counted for the annealing


def test_step_size_gradient_matches_finite_differences():
    learner = tiny(inner_steps=2, anneal_steps=10)
    batch = tasks()
    alpha = learner.step_sizes_per_layer[2]               # head weight's step sizes, [2]
    (grad,) = torch.autograd.grad(learner.meta_loss(batch)[0], [alpha])
    eps = 1e-6
    for step in range(2):
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                alpha[step] += sign * eps
            learner.meta_steps_taken.zero_()
            values.append(learner.meta_loss(batch)[0].item())
            with torch.no_grad():
                alpha[step] -= sign * eps
        assert grad[step].item() == pytest.approx((values[0] - values[1]) / (2 * eps), rel=1e-5, abs=1e-8)


def test_one_step_after_the_annealing_is_plain_maml():
    torch.manual_seed(0)
    plain = MAML(TinyNet().double(), inner_lr=0.3, inner_steps=1)
    plus = tiny(inner_steps=1, anneal_steps=1)
    plus.net.load_state_dict(plain.net.state_dict())
    batch = tasks()
    torch.testing.assert_close(plus.meta_loss(batch)[0], plain.meta_loss(batch)[0])
    episode = Episode(*(t[0] for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y, batch.task)))
    torch.testing.assert_close(plus.predict(episode), plain.predict(episode))


def test_per_step_batch_norm_has_its_own_weights_and_statistics_for_every_step():
    net = small_convnet(inner_steps=2)
    learner = MAMLPlusPlus(net, inner_lr=0.1, inner_steps=2, anneal_steps=100)
    assert not any("features.0.1" in name for name in learner.adapted)   # batch norm is meta-learned, not adapted
    batch = EpisodeSampler(class_images(), 3, 2, n_query=2).sample_batch(2, torch.Generator().manual_seed(0))
    learner.meta_loss(batch)[0].backward()
    norm = net.features[0][1]
    # every pass moved its own step's running mean: phi_0 (support), phi_1 (support, query), phi_2 (query)
    assert (norm.running_mean != 0).all(dim=1).tolist() == [True, True, True]
    # with the uniform multi-step loss every step's gamma gets a gradient, and each its own
    assert (norm.weight.grad.abs().sum(dim=1) > 0).tolist() == [True, True, True]
    assert not torch.allclose(norm.weight.grad[1], norm.weight.grad[2])


def test_running_statistics_make_prediction_not_transductive_and_batch_statistics_make_it_transductive():
    net = small_convnet(inner_steps=2)
    learner = MAMLPlusPlus(net, inner_lr=0.1, inner_steps=2)
    sampler = EpisodeSampler(class_images(), 3, 2, n_query=2)
    learner.meta_loss(sampler.sample_batch(2, torch.Generator().manual_seed(0)))   # some running statistics
    episode = sampler.sample(torch.Generator().manual_seed(1))
    changed = Episode(episode.support_x, episode.support_y, torch.cat([episode.query_x[:1], 3 + episode.query_x[1:]]),
                      episode.query_y, episode.task)
    assert not uses_batch_statistics(net)
    torch.testing.assert_close(learner.predict(episode)[0], learner.predict(changed)[0])
    set_batch_statistics_in_eval(net, True)
    assert uses_batch_statistics(net)
    assert not torch.allclose(learner.predict(episode)[0], learner.predict(changed)[0])
    before = net.features[0][1].running_mean.clone()
    learner.predict(episode)
    torch.testing.assert_close(net.features[0][1].running_mean, before)   # prediction never updates them


def test_it_learns_noisy_image_classes():
    learner = MAMLPlusPlus(small_convnet(inner_steps=2), inner_lr=0.1, inner_steps=2, anneal_steps=10)
    sampler = EpisodeSampler(class_images(), 3, 2, n_query=2)
    history = train(learner, maml.loss, lambda g: sampler.sample_batch(4, g),
                    TrainConfig(steps=40, lr=3e-3, log_every=5, seed=0, progress=False))
    losses = history.series("loss")[1]
    assert losses[0] > 0.8 * math.log(3) and max(losses[-2:]) < 0.5 * math.log(3)


def test_bad_configurations_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="eval_inner_steps=5"):
        MAMLPlusPlus(TinyNet(), inner_steps=2, eval_inner_steps=5)
    with pytest.raises(ValueError, match="3 inner steps need 4"):
        MAMLPlusPlus(small_convnet(inner_steps=2), inner_steps=3)
    with pytest.raises(ValueError, match="vmap"):
        MAMLPlusPlus(small_convnet(inner_steps=2), inner_steps=2, batched=True)
    with pytest.raises(ValueError, match="meta_sgd"):
        MAMLPlusPlus(TinyNet(), meta_sgd=True)
    with pytest.raises(ValueError, match="inner step 3"):
        set_inner_step(small_convnet(inner_steps=2), 3)


def test_running_statistics_equal_to_the_batchs_give_the_batch_statistics_output():
    norm = PerStepBatchNorm2d(3, n_steps=2)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    x = 2 * torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0)) + 1
    norm.step = 1
    batch_output = norm(x)                                   # training mode: the batch's statistics
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    with torch.no_grad():
        norm.running_mean[1], norm.running_var[1] = mean, var
        norm.running_mean[0].fill_(100.0)                    # another step's statistics must not be used
    norm.eval()
    torch.testing.assert_close(norm(x), batch_output)
    expected = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5) * norm.weight[1][:, None, None] \
        + norm.bias[1][:, None, None]
    torch.testing.assert_close(batch_output, expected)
