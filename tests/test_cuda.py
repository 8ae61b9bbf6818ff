"""The training core on a CUDA GPU: a MAML meta-step, ProtoNet, the training loop under mixed precision, and
evaluation. Marked ``cuda``: skipped where CUDA is absent; ``benchmarks/gpu_check.sh`` runs them on a GPU
(``python -m pytest -m cuda tests/test_cuda.py``).

Each test compares the GPU with the CPU on the same weights and tasks, so a kernel or a device mix-up that
changes the numbers fails, not only one that raises.
"""
import copy
from dataclasses import replace

import pytest
import torch

from course_lib import MAML, ConvNet, EpisodeSampler, TrainConfig, evaluate_episodes, fixed_episodes, protonet, train
from course_lib.data.base import ClassDataset
from course_lib.data.episodes import Episode

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]

CUDA = torch.device("cuda")


def blob_dataset(n_classes: int = 12, per_class: int = 20, side: int = 28) -> ClassDataset:
    """Each class a bright square at its own place on a noisy background: learnable in a few steps."""
    generator = torch.Generator().manual_seed(0)
    data = 0.1 * torch.rand(n_classes, per_class, 1, side, side, generator=generator)
    for c in range(n_classes):
        row, col = divmod(c, 4)
        data[c, :, :, 2 + 6 * row:7 + 6 * row, 2 + 6 * col:7 + 6 * col] += 0.9
    return ClassDataset(data, [f"blob{c}" for c in range(n_classes)], source="synthetic blobs (tests/test_cuda.py)")


def episodes(n: int, seed: int) -> list[Episode]:
    return fixed_episodes(EpisodeSampler(blob_dataset(), n_way=5, k_shot=1, n_query=5), num_episodes=n, seed=seed)


def meta_batch(tasks: int = 4) -> Episode:
    sampler = EpisodeSampler(blob_dataset(), n_way=5, k_shot=1, n_query=5)
    return sampler.sample_batch(tasks, torch.Generator().manual_seed(1))


def in_double(batch: Episode) -> Episode:
    """The batch with float64 inputs (labels stay integers), for a CPU-vs-GPU comparison free of rounding."""
    return replace(batch, support_x=batch.support_x.double(), query_x=batch.query_x.double())


def gradients(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten().cpu() for p in module.parameters() if p.grad is not None])


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
@pytest.mark.parametrize("batched", [False, True], ids=["per-task", "vmap"])
def test_maml_meta_gradient_on_cuda_equals_the_cpu_one(first_order, batched):
    torch.manual_seed(0)
    cpu = MAML(ConvNet(n_classes=5, explicit_batch_norm=batched), inner_lr=0.4, inner_steps=2,
               first_order=first_order, batched=batched).double()
    gpu = copy.deepcopy(cpu).to(CUDA)
    batch = in_double(meta_batch())
    for learner, device in ((cpu, "cpu"), (gpu, CUDA)):
        loss, _ = learner.meta_loss(batch.to(device))
        loss.backward()
    on_cpu, on_gpu = gradients(cpu), gradients(gpu)
    assert on_gpu.abs().sum() > 0
    assert ((on_gpu - on_cpu).norm() / on_cpu.norm()).item() < 1e-6


def test_protonet_loss_and_gradient_on_cuda_equal_the_cpu_ones():
    torch.manual_seed(0)
    cpu = ConvNet().double()
    gpu = copy.deepcopy(cpu).to(CUDA)
    batch = in_double(meta_batch(1))
    losses = []
    for net, device in ((cpu, "cpu"), (gpu, CUDA)):
        loss, _ = protonet.loss(net, batch.to(device))
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-9)
    assert ((gradients(gpu) - gradients(cpu)).norm() / gradients(cpu).norm()).item() < 1e-6


def test_training_loop_with_mixed_precision_learns_on_cuda_and_evaluation_follows_the_model():
    """A few hundred ProtoNet steps under autocast (the dtype ``runtime`` picks for this GPU) learn the blobs."""
    torch.manual_seed(0)
    model = ConvNet().to(CUDA)
    sampler = EpisodeSampler(blob_dataset(), n_way=5, k_shot=1, n_query=5)
    history = train(model, protonet.loss, lambda g: sampler.sample_batch(1, g),
                    TrainConfig(steps=150, lr=1e-3, amp=True, progress=False, log_every=10))
    assert all(torch.isfinite(torch.tensor(value)) for row in history.rows for value in row.values())
    assert next(model.parameters()).device.type == "cuda"
    result = evaluate_episodes(lambda episode: protonet.predict(model, episode), episodes(50, seed=2))
    assert result.mean > 0.9, result            # chance is 0.2


def test_maml_trains_and_predicts_on_cuda_under_mixed_precision():
    torch.manual_seed(0)
    maml = MAML(ConvNet(n_classes=5), inner_lr=0.4, inner_steps=1).to(CUDA)
    sampler = EpisodeSampler(blob_dataset(), n_way=5, k_shot=1, n_query=5)
    before = evaluate_episodes(maml.predict, episodes(30, seed=2)).mean
    train(maml, MAML.meta_loss, lambda g: sampler.sample_batch(4, g),
          TrainConfig(steps=100, lr=1e-3, amp=True, progress=False, log_every=10))
    after = evaluate_episodes(maml.predict, episodes(30, seed=2))
    assert after.mean > max(0.8, before), (before, after)
