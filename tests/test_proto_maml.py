"""Proto-MAML starts every task at ProtoNet's classifier, differentiates through that start, and learns."""
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from course_lib.data.base import ClassDataset
from course_lib.data.batches import Episode
from course_lib.data.episodes import EpisodeSampler
from course_lib.meta import maml, protonet
from course_lib.meta.proto_maml import ProtoMAML
from course_lib.models import ConvNet
from course_lib.train import TrainConfig, train


class TinyNet(nn.Module):
    """A 4 -> 6 tanh embedding and a linear head: smooth, no batch norm, for finite differences in float64."""

    def __init__(self, n_way=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.head = nn.Linear(6, n_way)

    def forward(self, x):
        return self.head(self.body(x))


def feature_tasks(n_tasks=2, n_way=3, k_shot=2, n_query=2):
    g = torch.Generator().manual_seed(0)
    support_y = torch.arange(n_way).repeat_interleave(k_shot).repeat(n_tasks, 1)
    query_y = torch.arange(n_way).repeat_interleave(n_query).repeat(n_tasks, 1)
    return Episode(torch.randn(n_tasks, n_way * k_shot, 4, generator=g, dtype=torch.float64), support_y,
                   torch.randn(n_tasks, n_way * n_query, 4, generator=g, dtype=torch.float64), query_y,
                   torch.arange(n_way).repeat(n_tasks, 1))


def class_images(n_classes=8, examples=6, size=12, noise=0.3):
    """Each class a random image plus noise per drawing: episodes that a network can learn to solve."""
    g = torch.Generator().manual_seed(0)
    means = torch.rand(n_classes, 1, 1, size, size, generator=g)
    images = means + noise * torch.randn(n_classes, examples, 1, size, size, generator=g)
    return ClassDataset(images, [str(c) for c in range(n_classes)], "noisy class images")


def small_convnet(n_way=3, **kwargs):
    torch.manual_seed(0)
    return ConvNet(hidden=8, n_blocks=2, n_classes=n_way, image_size=12, **kwargs)


def test_without_inner_steps_its_logits_are_protonets_up_to_a_per_query_constant():
    net = small_convnet()
    episode = EpisodeSampler(class_images(), 3, 2, n_query=4).sample(torch.Generator().manual_seed(1))
    proto_maml = ProtoMAML(net, inner_steps=0)
    logits = proto_maml.predict(episode)
    with torch.no_grad():   # ProtoNet on the same embedding: support and queries embedded as Proto-MAML does
        support, query = net.embed(episode.support_x), net.embed(episode.query_x)
        protonet_logits = protonet.logits_from_prototypes(query, protonet.prototypes(support, episode.support_y, 3))
    # W_k f + b_k = -||f - c_k||^2 + ||f||^2: the same for every class, so the same softmax and the same argmax
    torch.testing.assert_close(logits, protonet_logits + query.pow(2).sum(-1, keepdim=True), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logits.softmax(-1), protonet_logits.softmax(-1), rtol=1e-4, atol=1e-5)
    assert torch.equal(logits.argmax(-1), protonet_logits.argmax(-1))


def test_the_inner_loop_moves_the_head_away_from_the_prototypes():
    torch.manual_seed(0)
    proto_maml = ProtoMAML(TinyNet().double(), inner_lr=0.5, inner_steps=1)
    task = feature_tasks()[0]
    start = proto_maml.initial_weights(task.support_x, task.support_y)
    adapted = proto_maml.adapt(task.support_x, task.support_y, training=False)
    assert not torch.allclose(adapted["head.weight"], start["head.weight"])
    assert not torch.allclose(adapted["body.0.weight"], start["body.0.weight"])


def directional_finite_difference(net, meta_loss_of, direction, eps=1e-5):
    """(L(theta + eps d) - L(theta - eps d)) / (2 eps) for the trainable weights theta of `net`."""
    params = {name: p.detach() for name, p in net.named_parameters() if p.requires_grad}

    def at(step):
        shifted, offset = {}, 0
        for name, p in params.items():
            shifted[name] = p + step * direction[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        return meta_loss_of(shifted).item()

    return (at(eps) - at(-eps)) / (2 * eps)


def reference_meta_loss(net, batch, theta, inner_lr, first_order_at=None, prototypes_at=None):
    """The Proto-MAML meta-loss written out for TinyNet, one SGD step per task, at the weights `theta` (values only,
    for finite differences).

    The inner gradient is taken at the start ``phi_0(theta)`` (so its change with theta is the second-order term),
    or, with `first_order_at`, at the start of those weights, a constant (first order). `prototypes_at` fixes the
    weights that embed the support set for the prototypes (default: `theta`, the path Proto-MAML differentiates)."""
    losses = []
    for sx, sy, qx, qy in zip(batch.support_x, batch.support_y, batch.query_x, batch.query_y):
        def start_at(weights, embedding_weights):
            embedded = torch.tanh(sx @ embedding_weights["body.0.weight"].T + embedding_weights["body.0.bias"])
            protos = torch.stack([embedded[sy == k].mean(0) for k in range(3)])
            return {**weights, "head.weight": 2 * protos, "head.bias": -(protos ** 2).sum(-1)}

        def support_gradient(phi):
            """grad_phi L_support(phi): each entry of phi on its own, the others held fixed."""
            phi = {n: w.detach().requires_grad_() for n, w in phi.items()}
            with torch.enable_grad():
                support = F.cross_entropy(functional_call(net, phi, (sx,)), sy)
                return dict(zip(phi, torch.autograd.grad(support, list(phi.values()))))

        start = start_at(theta, theta if prototypes_at is None else prototypes_at)
        grads = support_gradient(start if first_order_at is None else start_at(first_order_at, first_order_at))
        fast = {n: w - inner_lr * grads[n] for n, w in start.items()}
        losses.append(F.cross_entropy(functional_call(net, fast, (qx,)), qy))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_finite_differences_through_the_prototype_initialisation(first_order):
    torch.manual_seed(0)
    net = TinyNet().double()
    batch = feature_tasks()
    proto_maml = ProtoMAML(net, inner_lr=0.5, inner_steps=1, first_order=first_order)
    proto_maml.meta_loss(batch)[0].backward()
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == ["head.weight", "head.bias"]
    gradient = torch.cat([p.grad.flatten() for p in net.parameters() if p.requires_grad])
    direction = torch.randn(gradient.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    theta = {n: p.detach() for n, p in net.named_parameters()}
    constants = theta if first_order else None   # first order: inner gradients fixed at theta
    full = directional_finite_difference(
        net, lambda shifted: reference_meta_loss(net, batch, {**theta, **shifted}, 0.5, constants), direction)
    assert full == pytest.approx((gradient @ direction).item(), rel=1e-6)
    # the path through the prototypes matters: with the initialisation held fixed the derivative is another number
    fixed_start = directional_finite_difference(
        net, lambda shifted: reference_meta_loss(net, batch, {**theta, **shifted}, 0.5, constants, theta), direction)
    assert abs(fixed_start - full) > 1e-3 * abs(full)


def test_batched_vmap_path_equals_per_task_loop():
    batch = EpisodeSampler(class_images(), 3, 2, n_query=2).sample_batch(3, torch.Generator().manual_seed(1))
    gradients = []
    for batched in (False, True):
        net = small_convnet(explicit_batch_norm=True).double()
        proto_maml = ProtoMAML(net, inner_lr=0.4, inner_steps=2, first_order=True, batched=batched)
        double = Episode(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y, batch.task)
        proto_maml.meta_loss(double)[0].backward()
        gradients.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.requires_grad]))
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-7, atol=1e-9)


def test_it_meta_trains_on_a_tiny_task_family():
    data = class_images(n_classes=12)
    sampler = EpisodeSampler(data, 3, 1, n_query=3)
    held_out = sampler.sample_batch(16, torch.Generator().manual_seed(99))
    proto_maml = ProtoMAML(small_convnet(), inner_lr=0.1, inner_steps=1, first_order=True)
    before = maml.loss(proto_maml, held_out)[0].item()
    train(proto_maml, maml.loss, lambda g: sampler.sample_batch(4, g),
          TrainConfig(steps=40, lr=3e-3, log_every=40, seed=0, progress=False))
    after = maml.loss(proto_maml, held_out)[0].item()
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("net, message", [
    (ConvNet(hidden=4, n_blocks=2, image_size=12), "nn.Linear named 'head'.*Identity"),
    (nn.Sequential(nn.Linear(4, 3)), "nn.Linear named 'head'.*no such module"),
    (type("NoBias", (TinyNet,), {})(), None),
])
def test_a_network_without_a_linear_head_is_refused(net, message):
    if message is None:
        net.head = nn.Linear(6, 3, bias=False)
        message = "needs a bias"
    with pytest.raises(ValueError, match=message):
        ProtoMAML(net)


def test_a_head_that_is_not_the_last_layer_is_refused():
    class HeadThenSoftmax(TinyNet):
        def forward(self, x):
            return self.head(self.body(x)).log_softmax(-1)

    proto_maml = ProtoMAML(HeadThenSoftmax().double())
    with pytest.raises(ValueError, match="last layer"):
        proto_maml.meta_loss(feature_tasks())
