"""Device-correct training and evaluation: a tensor left on the wrong device fails on a CPU-only machine too.

How: a stand-in accelerator. :class:`OnDevice` tensors hold their data on the CPU but report the ``meta``
device, and :class:`StandInAccelerator` (a ``TorchDispatchMode``, which sees every aten operation, those of
autograd's backward pass and of the optimizer included) runs each operation on the CPU data, refusing one
that mixes a tensor of the stand-in device with a host tensor, as CUDA refuses a CPU tensor. A factory asked
for ``device=meta`` (``torch.zeros(..., device=x.device)``, ``tensor.to(device)``) makes ``OnDevice`` tensors;
one that names no device makes host tensors. ``.item()`` and ``.cpu()`` work as on a GPU (a host sync).

Why not the alternatives: the ``meta`` device itself has no values (``loss.item()``, the NaN guard, the
number of classes read from the labels all fail); a check that only the CPU is used cannot tell a tensor
on the host from one on the device; ``torch.set_default_device`` catches factories without a device but not
an explicit ``device="cpu"`` default, the bug this test is for.
"""
import importlib
from functools import partial

import pytest
import torch
from torch.utils._pytree import tree_flatten, tree_map

from course_lib import runtime
from course_lib.data.base import ClassDataset
from course_lib.data.episodes import EpisodeSampler, fixed_episodes
from course_lib.evaluate import evaluate_episodes
from course_lib.meta import maml, protonet
from course_lib.models import ConvNet
from course_lib.train import TrainConfig, train

train_module = importlib.import_module("course_lib.train")   # the module: course_lib.train is also the function

DEVICE = torch.device("meta")


class OnDevice(torch.Tensor):
    """A tensor on the stand-in accelerator: it reports ``DEVICE``; ``elem`` holds its values on the CPU."""

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(), dtype=elem.dtype,
                                                   storage_offset=elem.storage_offset(), device=DEVICE,
                                                   requires_grad=elem.requires_grad)

    def __init__(self, elem: torch.Tensor):
        self.elem = elem

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError("OnDevice tensors work only inside StandInAccelerator()")


class StandInAccelerator(torch.utils._python_dispatch.TorchDispatchMode):
    """Run every operation on the CPU values; refuse one that mixes the stand-in device with the host.

    ``host_reads`` counts the host syncs a GPU would make: a value read from the device (``.item()``,
    ``bool(t)``, ``float(t)``) or a copy from the device to the host (``.cpu()``).
    """

    def __init__(self):
        super().__init__()
        self.host_reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on_device = [t for t in tensors if isinstance(t, OnDevice)]
        scalars_mix = torch.Tag.pointwise in func.tags   # as on CUDA: a CPU scalar in an elementwise operation
        on_host = [t for t in tensors if not isinstance(t, OnDevice) and (t.dim() > 0 or not scalars_mix)]
        if on_device and on_host:
            raise RuntimeError(f"{func}: a host tensor of shape {list(on_host[0].shape)} meets tensors on the "
                               f"device: a tensor was left on the wrong device")
        to_device = kwargs.get("device") is not None and torch.device(kwargs["device"]) == DEVICE
        if to_device:
            kwargs = {**kwargs, "device": torch.device("cpu")}
        result = func(*tree_map(lambda t: t.elem if isinstance(t, OnDevice) else t, args),
                      **tree_map(lambda t: t.elem if isinstance(t, OnDevice) else t, kwargs))
        moved_to_host = kwargs.get("device") is not None and not to_device
        self.host_reads += bool(on_device) and (moved_to_host or func is torch.ops.aten._local_scalar_dense.default)
        if (on_device or to_device) and not moved_to_host and func is not torch.ops.aten._local_scalar_dense.default:
            return tree_map(lambda t: OnDevice(t) if isinstance(t, torch.Tensor) else t, result)
        return result


def omniglot_like_episodes(n_classes=6):
    images = torch.rand(n_classes, 4, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    return EpisodeSampler(ClassDataset(images, [str(c) for c in range(n_classes)], "random"), 3, 1, 2)


def test_the_stand_in_accelerator_refuses_a_host_tensor_that_meets_the_device():
    with StandInAccelerator():
        on_device = torch.ones(3).to(DEVICE)
        assert on_device.device == DEVICE and (on_device + torch.zeros(3, device=on_device.device)).sum().item() == 3
        assert (on_device * torch.tensor(2.0)).cpu().tolist() == [2.0, 2.0, 2.0], "CPU scalars mix, as on CUDA"
        with pytest.raises(RuntimeError, match="left on the wrong device"):
            on_device + torch.zeros(3)
        with pytest.raises(RuntimeError, match="left on the wrong device"):
            torch.stack([on_device.sum(), torch.tensor(1.0)])
        with pytest.raises(RuntimeError, match="left on the wrong device"):
            evaluate_episodes(lambda e: e.query_y.to(DEVICE) + e.query_y, fixed_episodes(omniglot_like_episodes(), 2))


@pytest.mark.parametrize("method", ["maml", "protonet"])
def test_meta_training_and_evaluation_keep_every_tensor_on_the_model_device(method):
    """A few steps of :func:`train` with validation, then :func:`evaluate_episodes` without a device: the
    sampler and the fixed episodes stay on the host, the model lives on the stand-in accelerator."""
    sampler = omniglot_like_episodes()
    episodes = fixed_episodes(sampler, 3, seed=1)
    with StandInAccelerator():
        torch.manual_seed(0)
        if method == "maml":
            model = maml.MAML(ConvNet(hidden=4, n_blocks=2, n_classes=3, image_size=12), inner_lr=0.4).to(DEVICE)
            loss_fn, predict = maml.loss, model.predict
        else:
            model = ConvNet(hidden=4, n_blocks=2, image_size=12).to(DEVICE)
            loss_fn, predict = protonet.loss, partial(protonet.predict, model)
        assert runtime.module_device(model) == DEVICE
        history = train(model, loss_fn, lambda generator: sampler.sample_batch(2, generator),
                        TrainConfig(steps=3, log_every=1, eval_every=2, progress=False),
                        validate=lambda m: evaluate_episodes(predict, episodes).as_metrics())
        result = evaluate_episodes(predict, episodes)
    assert history.last("step") == 3 and len(history.series("val_accuracy")[0]) == 2
    assert 0 <= result.mean <= 1 and result.values.device.type == "cpu"
    assert all(isinstance(p, OnDevice) for p in model.parameters())


@pytest.mark.parametrize("method", ["maml", "protonet"])
def test_on_a_gpu_the_loop_reads_the_device_once_per_logged_step(monkeypatch, method):
    """With the checks on the device (as on CUDA: a fused optimizer skips a flagged step), 6 steps logged every
    3 read the device twice: the losses, metrics and flags of a window in one transfer. Checked per step, the
    NaN guard alone would read it at every step."""
    monkeypatch.setattr(train_module, "checks_on_device", lambda device: True)
    optimizer_module = importlib.import_module("torch.optim.optimizer")   # the fused kernels run on the CPU data
    supported = optimizer_module._get_fused_kernels_supported_devices()
    monkeypatch.setattr(optimizer_module, "_get_fused_kernels_supported_devices", lambda: [*supported, "meta"])
    with StandInAccelerator() as accelerator:
        dataset = omniglot_like_episodes().dataset.to(DEVICE)   # the images live on the device, as in the full profile
        sampler = EpisodeSampler(dataset, 3, 1, 2)
        accelerator.host_reads = 0
        torch.manual_seed(0)
        if method == "maml":
            model = maml.MAML(ConvNet(hidden=4, n_blocks=2, n_classes=3, image_size=12), inner_lr=0.4).to(DEVICE)
            loss_fn = maml.loss
        else:
            model = ConvNet(hidden=4, n_blocks=2, image_size=12).to(DEVICE)
            loss_fn = partial(protonet.loss, n_way=3)   # not read from the labels at every step
        history = train(model, loss_fn, lambda generator: sampler.sample_batch(2, generator),
                        TrainConfig(steps=6, log_every=3, progress=False))
    assert accelerator.host_reads == 2
    assert [row["step"] for row in history.rows] == [3, 6] and all(0 <= row["accuracy"] <= 1 for row in history.rows)


def test_a_dataset_on_the_device_gives_the_same_episodes_there():
    sampler = omniglot_like_episodes()
    host_episodes = fixed_episodes(sampler, 3, seed=1)
    with StandInAccelerator():
        dataset = sampler.dataset.to(DEVICE)
        assert dataset.device == DEVICE and sampler.dataset.device.type == "cpu", "the host copy stays"
        on_device = fixed_episodes(EpisodeSampler(dataset, 3, 1, 2), 3, seed=1)
        assert all(isinstance(t, OnDevice) for e in on_device for t in (e.support_x, e.support_y, e.query_x, e.query_y))
        for host, device in zip(host_episodes, on_device):
            assert torch.equal(host.query_x, device.query_x.cpu()) and torch.equal(host.support_y, device.support_y.cpu())


def test_evaluation_leaves_episodes_on_their_device_or_moves_them_where_it_is_told():
    host_episodes = fixed_episodes(omniglot_like_episodes(), 2)

    def predict_on_device(episode):
        assert episode.support_x.device == DEVICE and episode.query_y.device == DEVICE
        return episode.query_y
    with StandInAccelerator():
        on_device = [runtime.to_device(e, DEVICE) for e in host_episodes]
        assert evaluate_episodes(predict_on_device, on_device).mean == 1.0, "no default device sends them back"
        assert evaluate_episodes(predict_on_device, host_episodes, device=DEVICE).mean == 1.0
