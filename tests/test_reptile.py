"""Reptile does what the paper says: its surrogate's gradient, its outer step, its analysis, its evaluation."""
import time

import pytest
import torch
from torch.func import functional_call, grad
from torch.nn import functional as F

from course_lib.data import load_omniglot
from course_lib.data.base import ClassDataset
from course_lib.data.episodes import Episode, EpisodeSampler, fixed_episodes
from course_lib.data.sinusoid import SinusoidTasks
from course_lib.evaluate import evaluate_episodes
from course_lib.meta import reptile
from course_lib.meta.maml import MAML
from course_lib.meta.reptile import Reptile
from course_lib.models import MLP, ConvNet
from course_lib.train import TrainConfig, train


def image_tasks(meta_batch_size=3, n_way=3, k_shot=2, n_query=2, size=12, dtype=torch.float64):
    images = torch.rand(8, 6, 1, size, size, generator=torch.Generator().manual_seed(0))
    sampler = EpisodeSampler(ClassDataset(images, [str(i) for i in range(8)], "random"), n_way, k_shot, n_query)
    batch = sampler.sample_batch(meta_batch_size, torch.Generator().manual_seed(1))
    return Episode(batch.support_x.to(dtype), batch.support_y, batch.query_x.to(dtype), batch.query_y, batch.task)


def small_convnet(n_way=3, dtype=torch.float64):
    torch.manual_seed(0)
    return ConvNet(hidden=4, n_blocks=2, n_classes=n_way, image_size=12).to(dtype)


def sine_tasks(meta_batch_size=3, k_shot=10):
    batch = SinusoidTasks(k_shot, 5).sample_batch(meta_batch_size, torch.Generator().manual_seed(0))
    return Episode(batch.support_x.double(), batch.support_y.double(), batch.query_x.double(),
                   batch.query_y.double(), batch.task)


def sine_mlp():
    torch.manual_seed(0)
    return MLP().double()


def flat(params):
    return torch.cat([p.flatten() for p in params.values()])


def relative_difference(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_surrogate_gradient_is_exactly_the_pseudo_gradient():
    batch, net = image_tasks(), small_convnet()
    learner = Reptile(net, inner_lr=0.01, inner_steps=3)
    theta = learner.initial_params()
    adapted, inner_losses = learner.adapt_batch(batch.support_x, batch.support_y)
    loss, metrics = reptile.loss(learner, batch)
    loss.backward()
    for name, p in net.named_parameters():
        assert torch.equal(p.grad, theta[name] - adapted[name].mean(dim=0)), name
    assert inner_losses.shape == (3,) and metrics["inner_loss"] == pytest.approx(inner_losses.mean().item())


def test_sgd_outer_step_moves_theta_toward_the_adapted_weights():
    batch, net = image_tasks(dtype=torch.float32), small_convnet(dtype=torch.float32)
    learner = Reptile(net, inner_lr=0.01, inner_steps=3)
    theta = flat(learner.initial_params())
    adapted, _ = learner.adapt_batch(batch.support_x, batch.support_y)
    mean_phi = flat({n: p.mean(dim=0) for n, p in adapted.items()})
    train(learner, reptile.loss, lambda g: batch, TrainConfig(steps=1, optimizer="sgd", lr=0.25, progress=False))
    new_theta = flat(learner.initial_params())
    assert torch.allclose(new_theta, theta + 0.25 * (mean_phi - theta), atol=1e-6)
    before, after = (theta - mean_phi).norm().item(), (new_theta - mean_phi).norm().item()
    assert after < before and after == pytest.approx(0.75 * before, rel=1e-4)


def test_one_inner_sgd_step_gives_the_gradient_of_the_joint_loss():
    """k = 1: theta - phi = alpha * grad L_tau(theta), so the mean pseudo-gradient is alpha times the
    gradient of the mean support loss (MAML with no inner step, scored on the support set)."""
    batch, net = image_tasks(), small_convnet()
    alpha = 0.1
    learner = Reptile(net, inner_lr=alpha, inner_steps=1, inner_optimizer="sgd")
    theta = learner.initial_params()
    adapted, _ = learner.adapt_batch(batch.support_x, batch.support_y)
    pseudo_gradient = flat({n: theta[n] - adapted[n].mean(dim=0) for n in theta})

    on_support = Episode(batch.support_x, batch.support_y, batch.support_x, batch.support_y, batch.task)
    MAML(net, inner_steps=0).meta_loss(on_support)[0].backward()
    joint_gradient = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert relative_difference(pseudo_gradient, alpha * joint_gradient) < 1e-12


def test_two_inner_steps_match_the_papers_taylor_expansion():
    """k = 2 plain SGD: (theta - phi) / alpha = g1_bar + g2_bar - alpha * H2_bar g1_bar + O(alpha^2)."""
    batch, net = sine_tasks(meta_batch_size=1), sine_mlp()
    x, y = batch.support_x[0], batch.support_y[0]
    first, second = (x[:5], y[:5]), (x[5:], y[5:])
    theta = {n: p.detach() for n, p in net.named_parameters()}

    def loss_on(data):
        return lambda params: F.mse_loss(functional_call(net, params, (data[0],)), data[1])

    g1, g2 = grad(loss_on(first))(theta), grad(loss_on(second))(theta)
    leaves = {n: p.clone().requires_grad_() for n, p in theta.items()}
    g2_graph = torch.autograd.grad(loss_on(second)(leaves), list(leaves.values()), create_graph=True)
    h2_g1 = dict(zip(theta, torch.autograd.grad(g2_graph, list(leaves.values()), grad_outputs=list(g1.values()))))
    errors = {}
    for alpha in (0.002, 0.001):
        learner = Reptile(net, inner_lr=alpha, inner_steps=2, inner_optimizer="sgd", task_loss=F.mse_loss)
        phi = learner.train_on_mini_batches(theta, torch.stack([first[0], second[0]]),
                                            torch.stack([first[1], second[1]]), alpha)[0]
        reptile_gradient = flat({n: (theta[n] - phi[n]) / alpha for n in theta})
        first_order = flat({n: g1[n] + g2[n] for n in theta})
        taylor = flat({n: g1[n] + g2[n] - alpha * h2_g1[n] for n in theta})
        errors[alpha] = ((reptile_gradient - first_order).norm().item(), (reptile_gradient - taylor).norm().item())
    first_order_ratio = errors[0.002][0] / errors[0.001][0]
    taylor_ratio = errors[0.002][1] / errors[0.001][1]
    assert 1.9 < first_order_ratio < 2.1, "dropping the Hessian term leaves an O(alpha) error"
    assert 3.8 < taylor_ratio < 4.2, "with the Hessian term the error is O(alpha^2)"


@pytest.mark.parametrize("inner_optimizer, tolerance", [("sgd", 1e-12), ("adam", 1e-6)])
def test_batched_vmap_path_equals_per_task_loop(inner_optimizer, tolerance):
    batch, net = image_tasks(k_shot=3), small_convnet()
    grads = []
    for batched in (False, True):
        learner = Reptile(net, inner_lr=0.01, inner_steps=4, inner_batch_size=4, inner_optimizer=inner_optimizer,
                          batched=batched)
        torch.manual_seed(7)   # the same mini-batch orders for both paths
        net.zero_grad()
        learner.meta_loss(batch)[0].backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert relative_difference(grads[1], grads[0]) < tolerance


def test_inner_adam_is_torch_adam_with_fresh_state():
    batch, net = sine_tasks(meta_batch_size=1), sine_mlp()
    learner = Reptile(net, inner_lr=0.01, inner_steps=4, task_loss=F.mse_loss)
    phi = learner.adapt(batch.support_x[0], batch.support_y[0])

    optimizer = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    for _ in range(4):
        optimizer.zero_grad()
        F.mse_loss(net(batch.support_x[0]), batch.support_y[0]).backward()
        optimizer.step()
    assert relative_difference(flat(phi), flat(dict(net.named_parameters())).detach()) < 1e-12


def test_mini_batches_are_passes_over_the_support_set_in_random_orders():
    learner = Reptile(MLP(), inner_steps=4, inner_batch_size=3)
    order = learner.inner_batches(5, training=True, generator=torch.Generator().manual_seed(0)).flatten()
    assert order.shape == (12,)
    assert sorted(order[:5].tolist()) == sorted(order[5:10].tolist()) == [0, 1, 2, 3, 4]
    full = Reptile(MLP(), inner_steps=2).inner_batches(5, training=True)
    assert full.tolist() == [[0, 1, 2, 3, 4]] * 2
    with pytest.raises(ValueError, match="unknown inner optimizer"):
        Reptile(MLP(), inner_optimizer="rmsprop")
    with pytest.raises(ValueError, match="inner_steps must be at least 1"):
        Reptile(MLP(), inner_steps=0)


def test_predict_is_non_transductive_and_leaves_the_model_alone():
    batch, net = image_tasks(n_query=3), small_convnet()
    before = [p.clone() for p in net.parameters()]
    learner = Reptile(net, inner_lr=0.01, inner_steps=1, eval_inner_steps=5)
    episode = batch[0]
    logits = learner.predict(episode)
    assert logits.shape == (9, 3) and not logits.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(logits, learner.predict(episode)), "evaluation must be deterministic"

    # A query's prediction does not depend on the other queries ...
    fewer = Episode(episode.support_x, episode.support_y, episode.query_x[:4], episode.query_y[:4], episode.task)
    assert torch.allclose(learner.predict(fewer), logits[:4], atol=1e-12)
    # ... it is the last row of a forward pass over [support set; that query] (Reptile's own loop before
    # course_lib.evaluate.one_query_at_a_time was shared with MAML and ProtoNet: the same numbers) ...
    fast_weights = learner.adapt(episode.support_x, episode.support_y, training=False,
                                 generator=torch.Generator().manual_seed(0))
    one_by_one = torch.stack([functional_call(net, fast_weights, (torch.cat([episode.support_x, q[None]]),))[-1]
                              for q in episode.query_x])
    assert torch.allclose(logits, one_by_one, atol=1e-12)
    # ... whereas a transductive prediction changes with the company a query keeps.
    learner.transductive = True
    assert not torch.allclose(learner.predict(fewer), learner.predict(episode)[:4])


def test_reptile_learns_omniglot_5_way_1_shot(course_data):
    """Short meta-training on the real Omniglot subset, then held-out 5-way 1-shot episodes (non-transductive)."""
    started = time.perf_counter()
    train_classes, test_classes = load_omniglot("train", source="real"), load_omniglot("test", source="real")
    torch.manual_seed(0)
    learner = Reptile(ConvNet(n_classes=5), inner_lr=3e-3, inner_steps=5, inner_batch_size=5, eval_inner_steps=5)
    sampler = EpisodeSampler(train_classes, 5, 5, 1)
    train(learner, reptile.loss, lambda g: sampler.sample_batch(3, g),
          TrainConfig(steps=100, optimizer="sgd", lr=1.0, progress=False))
    episodes = fixed_episodes(EpisodeSampler(test_classes, 5, 1, n_query=1), 100, seed=0)
    result = evaluate_episodes(learner.predict, episodes)
    print(f"Reptile after 100 meta-steps: {result}; {time.perf_counter() - started:.1f} s")
    assert result.mean > 0.50, f"chance is 20%, 100 meta-steps measured 63% on this machine; got {result}"


def test_predict_runs_in_eval_mode_and_restores_every_mode():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 40), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(40, 1)).double()
    net[0].eval()                                   # a mixed state, to be restored as it was
    episode = sine_tasks(meta_batch_size=1)[0]
    learner = Reptile(net, inner_lr=0.01, inner_optimizer="sgd", eval_inner_steps=3, task_loss=F.mse_loss)
    modes = [m.training for m in learner.modules()]
    first, second = learner.predict(episode), learner.predict(episode)
    assert torch.equal(first, second), "dropout must be off while adapting and scoring at test time"
    assert [m.training for m in learner.modules()] == modes
    adapted = [learner.adapt(episode.support_x, episode.support_y, training=False,
                             generator=torch.Generator().manual_seed(0))["0.weight"] for _ in range(2)]
    assert not torch.equal(*adapted), "in training mode dropout is on (the check above could fail)"
