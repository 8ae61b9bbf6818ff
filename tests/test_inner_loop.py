"""The one inner loop: hand-written functional steps, any input and loss, the same under vmap, its graph."""
import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from course_lib.meta.inner_loop import autograd_gradient, func_gradient, inner_loop
from course_lib.meta.maml import MAML


class TinyTextClassifier(nn.Module):
    """A transformer's interface in miniature: ``{"input_ids": [n, L], "attention_mask": [n, L]}`` -> ``[n, C]``."""

    def __init__(self, vocab=11, dim=6, n_classes=3):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, inputs):
        mask = inputs["attention_mask"].unsqueeze(-1).to(self.head.weight.dtype)
        pooled = (self.embedding(inputs["input_ids"]) * mask).sum(-2) / mask.sum(-2)
        return self.head(torch.tanh(pooled))


def text_tasks(n_tasks=3, n=6, length=5, seed=0):
    """Token ids, masks (the last tokens of some rows padded out) and labels ``[B, n, ...]``."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 11, (n_tasks, n, length), generator=generator)
    lengths = torch.randint(2, length + 1, (n_tasks, n, 1), generator=generator)
    mask = (torch.arange(length) < lengths).long()
    return {"input_ids": ids, "attention_mask": mask}, torch.randint(0, 3, (n_tasks, n), generator=generator)


def text_net():
    torch.manual_seed(0)
    return TinyTextClassifier().double()


def cross_entropy_of(net, inputs, labels):
    return lambda params: F.cross_entropy(functional_call(net, params, (inputs,)), labels)


def task(inputs, labels, t):
    return {k: v[t] for k, v in inputs.items()}, labels[t]


def test_adapt_to_a_callers_loss_of_dict_inputs_is_the_hand_written_functional_sgd_step():
    net = text_net()
    inputs, labels = task(*text_tasks(), 0)
    query_inputs, query_labels = task(*text_tasks(seed=1), 0)
    loss = cross_entropy_of(net, inputs, labels)
    maml = MAML(net, inner_lr=0.3, inner_steps=2)
    theta = dict(net.named_parameters())

    def by_hand(create_graph):
        fast = theta
        for _ in range(2):
            grads = torch.autograd.grad(loss(fast), list(fast.values()), create_graph=create_graph)
            fast = {n: p - 0.3 * g for (n, p), g in zip(fast.items(), grads)}
        return fast

    expected = by_hand(create_graph=False)
    adapted = maml.adapt_to(loss, training=False)
    assert adapted.keys() == theta.keys()
    assert all(torch.allclose(adapted[n], expected[n], atol=1e-12) for n in theta)
    assert not all(torch.equal(adapted[n], theta[n]) for n in theta)

    # In training the outer gradient flows through both steps (second order), as through the hand-written ones.
    query_loss = cross_entropy_of(net, query_inputs, query_labels)
    ours = torch.autograd.grad(query_loss(maml.adapt_to(loss)), list(theta.values()))
    theirs = torch.autograd.grad(query_loss(by_hand(create_graph=True)), list(theta.values()))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("update, create_graph", [("sgd", True), ("sgd", False), ("adam", False)])
def test_vmap_with_func_gradient_equals_the_per_task_loop(update, create_graph):
    """Dict inputs, two steps on different mini-batches, per-parameter step sizes, the head alone adapted."""
    net = text_net()
    inputs, labels = text_tasks(n_tasks=3, n=6)
    theta = dict(net.named_parameters())
    step_size = {"head.weight": torch.full_like(theta["head.weight"], 0.2), "head.bias": torch.tensor(0.5).double()}

    def adapted_of_task(inputs, labels, gradient):
        losses = [cross_entropy_of(net, {k: v[rows] for k, v in inputs.items()}, labels[rows])
                  for rows in (slice(0, 3), slice(3, 6))]
        phi, last_loss = inner_loop(theta, losses, step_size, adapted=["head.weight", "head.bias"], update=update,
                                    create_graph=create_graph, gradient=gradient)
        return phi, last_loss

    per_task = [adapted_of_task(*task(inputs, labels, t), autograd_gradient) for t in range(3)]
    batched, batched_loss = vmap(lambda x, y: adapted_of_task(x, y, func_gradient))(inputs, labels)
    for name in theta:
        assert torch.allclose(batched[name], torch.stack([phi[name] for phi, _ in per_task]), atol=1e-12), name
    assert torch.allclose(batched_loss, torch.stack([loss for _, loss in per_task]), atol=1e-12)
    assert torch.equal(batched["embedding.weight"][0], theta["embedding.weight"]), "not adapted: left as it was"

    outer = [torch.autograd.grad(sum((phi["head.weight"] ** 2).sum() for phi in adapted), theta["head.weight"])[0]
             for adapted in ([phi for phi, _ in per_task], [{"head.weight": batched["head.weight"]}])]
    assert torch.allclose(outer[0], outer[1], atol=1e-12)


def test_without_create_graph_the_adapted_weights_move_with_theta_one_to_one():
    """First order: d phi / d theta = I (each step's gradient a constant); second order adds the Hessian term."""
    net = text_net()
    inputs, labels = task(*text_tasks(), 0)
    theta = dict(net.named_parameters())
    direction = {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype)
                 for n, p in theta.items()}

    def pulled_back(create_graph):
        phi, _ = inner_loop(theta, [cross_entropy_of(net, inputs, labels)] * 3, 0.5, create_graph=create_graph)
        return torch.autograd.grad(sum((phi[n] * direction[n]).sum() for n in theta), list(theta.values()))

    assert all(torch.equal(g, direction[n]) for n, g in zip(theta, pulled_back(create_graph=False)))
    assert not all(torch.allclose(g, direction[n]) for n, g in zip(theta, pulled_back(create_graph=True)))


def test_no_steps_leave_the_weights_and_bad_requests_are_named():
    net = text_net()
    theta = dict(net.named_parameters())
    phi, loss = inner_loop(theta, [], 0.1)
    assert all(phi[n] is theta[n] for n in theta) and torch.isnan(loss)
    with pytest.raises(ValueError, match="unknown inner update 'rmsprop'"):
        inner_loop(theta, [], 0.1, update="rmsprop")
    with pytest.raises(ValueError, match=r"adapted weights \['classifier.weight'\] are not among the params"):
        inner_loop(theta, [], 0.1, adapted=["classifier.weight"])
    with pytest.raises(ValueError, match="step sizes are given for"):
        inner_loop(theta, [], {"head.weight": 0.1}, adapted=["head.weight", "head.bias"])
