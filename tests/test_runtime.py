import random

import numpy as np
import pytest
import torch

from course_lib import runtime
from course_lib.models import MLP, ConvNet


def test_unknown_profile_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="unknown profile 'fast': choose one of quick, full"):
        runtime.get_profile("fast")
    monkeypatch.setenv("COURSE_PROFILE", "full")
    assert runtime.get_profile().pick(quick=1, full=2) == 2
    monkeypatch.delenv("COURSE_PROFILE")
    assert runtime.get_profile().is_quick


def test_device_override(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert runtime.get_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            runtime.get_device("cuda")


def test_seeding_reproduces_every_generator():
    def draw():
        generator = runtime.seed_everything(123)
        return random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item()
    assert draw() == draw()


def test_rng_state_round_trip():
    runtime.seed_everything(0)
    state = runtime.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    runtime.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_mixed_precision_is_off_on_cpu_unless_asked():
    cpu = torch.device("cpu")
    assert runtime.amp_dtype(cpu) is None
    dtype = runtime.amp_dtype(cpu, enabled=True)
    assert dtype == torch.bfloat16
    with runtime.autocast(cpu, dtype):
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    assert not runtime.grad_scaler(cpu, dtype).is_enabled()


def test_conv_net_shapes_and_functional_call():
    net = ConvNet(n_classes=5)
    x = torch.rand(10, 1, 28, 28)
    assert net(x).shape == (10, 5) and ConvNet().embed(x).shape == (10, 64)
    params = {k: v + 0.1 for k, v in net.named_parameters()}
    moved = torch.func.functional_call(net, params, (x,))
    assert not torch.allclose(moved, net(x)), "functional_call must use the given weights"
    assert dict(net.named_buffers()) == {}, "batch norm keeps no running statistics (MAML style)"
    assert MLP()(torch.zeros(3, 1)).shape == (3, 1)
    assert sum(p.numel() for p in MLP().parameters()) == 1 * 40 + 40 + 40 * 40 + 40 + 40 + 1


@pytest.mark.parametrize("explicit_batch_norm", [False, True])
def test_conv_block_pools_before_its_relu_and_computes_the_papers_order_bit_for_bit(explicit_batch_norm):
    from course_lib.models import MaxPool2x2, conv_block
    block = conv_block(1, 8, explicit_batch_norm)
    conv, norm, pool, relu = block
    assert isinstance(pool, MaxPool2x2) and isinstance(relu, torch.nn.ReLU)
    papers_order = torch.nn.Sequential(conv, norm, relu, pool)     # the same modules: conv, BN, ReLU, max-pool
    x = (torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.7).float()  # ink: ties
    grads = []
    for net in (block, papers_order):
        out = net(x)
        weight, = torch.autograd.grad(out.pow(2).sum(), conv.weight)
        grads.append((out, weight))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_to_device_moves_every_tensor_of_a_batch_and_leaves_the_rest():
    from course_lib.data.episodes import Episode
    episode = Episode(torch.zeros(2, 1), torch.arange(2), torch.zeros(2, 1), torch.arange(2), torch.arange(2))
    moved = runtime.to_device({"pair": (torch.ones(2), [episode]), "name": "task", "n_way": 5}, "meta")
    assert moved["pair"][0].device.type == "meta" and isinstance(moved["pair"][1], list)
    assert isinstance(moved["pair"][1][0], Episode) and moved["pair"][1][0].query_y.device.type == "meta"
    assert moved["name"] == "task" and moved["n_way"] == 5
    same = torch.ones(2)
    assert runtime.to_device(same, "cpu") is same and runtime.to_device(same, None) is same


def test_module_device_is_where_the_weights_are_and_none_without_weights():
    assert runtime.module_device(torch.nn.Linear(2, 2).to("meta")) == torch.device("meta")
    assert runtime.module_device(torch.nn.Identity()) is None


def test_checkpoints_go_to_course_checkpoints_else_the_courses_own_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CHECKPOINTS", str(tmp_path / "drive"))
    assert runtime.checkpoint_path("03_maml.pt") == tmp_path / "drive" / "03_maml.pt"
    monkeypatch.delenv("COURSE_CHECKPOINTS")
    default = runtime.checkpoint_path("03_maml.pt")
    assert default.parent.name == "checkpoints" and (default.parent.parent / "course_lib").is_dir()
