import pytest
import torch
from torch import nn

from course_lib.models import ConvNet, MaxPool2x2


@pytest.mark.parametrize("size", [(28, 28), (7, 7), (6, 9), (3, 2)])
def test_max_pool_without_gradient_gives_the_values_of_nn_max_pool(size):
    x = torch.randn(3, 4, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast = MaxPool2x2()(x)
    assert fast.shape == (3, 4, size[0] // 2, size[1] // 2)
    assert torch.equal(fast, nn.MaxPool2d(2)(x))


def test_max_pool_with_gradient_is_nn_max_pool_values_and_gradient():
    x = torch.randn(2, 3, 7, 7, generator=torch.Generator().manual_seed(1)).relu().requires_grad_()
    ours = MaxPool2x2()(x)
    (ours_grad,) = torch.autograd.grad(ours.square().sum(), x)
    reference = nn.MaxPool2d(2)(x)
    (reference_grad,) = torch.autograd.grad(reference.square().sum(), x)
    assert torch.equal(ours, reference) and torch.equal(ours_grad, reference_grad)
    assert (ours_grad != 0).sum() <= ours.numel(), "one maximum per window receives the gradient"


def test_conv_net_predicts_the_same_with_and_without_autograd():
    torch.manual_seed(0)
    net, x = ConvNet(n_classes=5), torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        predicted = net(x)
    assert torch.equal(predicted, net(x).detach())
