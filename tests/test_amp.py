"""Mixed precision: the dtype a GPU's compute capability gets, and fp16 loss scaling that reaches the inner
loops of MAML and Reptile.

Every branch runs on a CPU: the capability is passed in (or ``torch.cuda.get_device_capability`` replaced),
and ``torch.autocast("cpu", dtype=torch.float16)`` runs matrix products in fp16 as a GPU would.

The underflow case: sinusoid regression with the course's MLP and the loss ``TINY * MSE`` (``TINY = 1e-8``,
a loss whose gradients are as small as those of a nearly fitted task), with the inner step size ``alpha``
multiplied by ``1 / TINY``, so that in fp32 the inner steps are the usual ones. Under fp16 without scaling
the backward pass rounds ``dL/d output ~ 1e-9`` to 0 (fp16's smallest subnormal is ``6e-8``): every layer's
inner gradient is exactly zero. The meta-gradients of first-order MAML (taken inside its loss function) and
of Reptile (the inner loop's alone) then have exactly-zero layers even where the outer loss is scaled.
"""
from functools import partial

import pytest
import torch
from torch.nn import functional as F

from course_lib import runtime
from course_lib.data.sinusoid import SinusoidTasks
from course_lib.meta.maml import MAML
from course_lib.meta.reptile import Reptile
from course_lib.models import MLP
from course_lib.train import NonFiniteLossError, TrainConfig, train

CPU = torch.device("cpu")
TINY = 1e-8
# The largest relative error (per layer) of a scaled fp16 gradient against the fp32 one. fp16 has a unit
# roundoff of 2^-11 = 4.9e-4, which a forward and a (second-order) backward pass compound; at the gradient
# scaler's initial scale 2^16 the double backward pass of second-order MAML still has subnormal intermediates.
# Measured: 1.6e-2 (second-order MAML, first layer), at most 2e-3 for the others; bf16 gives 4e-2. Without
# scaling the errors are 1 (nothing left).
TOLERANCE = 5e-2


def tiny_mse(predictions, targets):
    return TINY * F.mse_loss(predictions, targets)


def learners():
    """First- and second-order MAML and Reptile (SGD inner loop), each on the same MLP, by name."""
    def net():
        torch.manual_seed(0)
        return MLP()
    return {
        "second-order MAML": MAML(net(), inner_lr=0.01 / TINY, inner_steps=2, task_loss=tiny_mse),
        "first-order MAML": MAML(net(), inner_lr=0.01 / TINY, inner_steps=2, first_order=True, task_loss=tiny_mse),
        "Reptile": Reptile(net(), inner_lr=0.01 / TINY, inner_steps=2, inner_optimizer="sgd", task_loss=tiny_mse),
    }


def sinusoid_batch():
    return SinusoidTasks(k_shot=5, n_query=5).sample_batch(3, torch.Generator().manual_seed(0))


def meta_gradient(learner, batch, dtype, inner_scale, outer_scale):
    """``{name: meta-gradient}`` as the training loop takes it: the meta-loss under ``runtime.autocast`` with
    the inner loops' loss scale ``inner_scale``, its backward scaled by ``outer_scale`` (the gradient
    scaler's job), the gradients divided by it again."""
    learner.zero_grad()
    with runtime.autocast(CPU, dtype, loss_scale=inner_scale):
        loss = learner.meta_loss(batch)[0]
    (outer_scale * loss).backward()
    return {name: p.grad / outer_scale for name, p in learner.net.named_parameters()}


def zero_layers(gradients):
    return [name for name, g in gradients.items() if not g.abs().max() > 0]


def relative_errors(gradients, reference):
    return {name: ((g - reference[name]).norm() / reference[name].norm()).item() for name, g in gradients.items()}


@pytest.mark.parametrize("capability, dtype", [
    ((7, 0), torch.float16),    # V100
    ((7, 5), torch.float16),    # T4, Colab's free GPU: bf16 only emulated
    ((8, 0), torch.bfloat16),   # A100
    ((8, 6), torch.bfloat16),   # RTX 30xx
    ((9, 0), torch.bfloat16),   # H100
])
def test_bf16_only_where_the_gpu_has_it_natively(capability, dtype):
    cuda = torch.device("cuda")
    assert runtime.amp_dtype_for(capability) == dtype
    assert runtime.amp_dtype(cuda, capability=capability) == dtype
    assert runtime.amp_dtype(cuda, enabled=False, capability=capability) is None
    assert runtime.grad_scaler(CPU, dtype).is_enabled() == (dtype == torch.float16)


def test_a_t4_gets_fp16_although_torch_calls_its_bf16_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)   # what a T4 answers
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert runtime.amp_dtype(torch.device("cuda")) == torch.float16


def test_cpu_runs_in_full_precision_unless_mixed_precision_is_forced():
    assert runtime.amp_dtype(CPU) is None
    assert runtime.amp_dtype(CPU, enabled=True) == torch.bfloat16


def test_the_inner_loss_scale_is_set_only_under_fp16_and_only_inside_the_block():
    scale = torch.tensor(1024.0)
    for dtype, inside in [(torch.float16, scale), (torch.bfloat16, None), (None, None)]:
        with runtime.autocast(CPU, dtype, loss_scale=scale):
            assert runtime.inner_loss_scale() is inside
        assert runtime.inner_loss_scale() is None


def test_without_scaling_fp16_inner_gradients_underflow_to_exact_zeros_and_scaling_restores_them():
    batch = sinusoid_batch()
    maml = learners()["first-order MAML"]
    theta = {name: p.detach().clone() for name, p in maml.net.named_parameters()}

    def inner_update(dtype, scale):
        """``theta - theta'`` of the first task, per weight."""
        with runtime.autocast(CPU, dtype, loss_scale=scale):
            adapted = maml.adapt(batch.support_x[0], batch.support_y[0])
        return {name: theta[name] - adapted[name].detach() for name in theta}

    fp32 = inner_update(None, None)
    assert not zero_layers(fp32)
    assert set(zero_layers(inner_update(torch.float16, None))) == set(theta), "the failing baseline"
    scaled = inner_update(torch.float16, torch.tensor(2.0**16))
    assert max(relative_errors(scaled, fp32).values()) < TOLERANCE


@pytest.mark.parametrize("name", ["second-order MAML", "first-order MAML", "Reptile"])
def test_scaled_fp16_meta_gradients_match_fp32_with_no_zero_layer(name):
    batch = sinusoid_batch()
    learner = learners()[name]
    fp32 = meta_gradient(learner, batch, None, None, 1.0)
    assert not zero_layers(fp32)
    scale = runtime.grad_scaler(CPU, torch.float16).scale(torch.ones(()))   # 2^16, as the training loop's
    scaled = meta_gradient(learner, batch, torch.float16, scale, scale)
    assert not zero_layers(scaled)
    errors = relative_errors(scaled, fp32)
    assert max(errors.values()) < TOLERANCE, errors

    unscaled = meta_gradient(learner, batch, torch.float16, None, 1.0)
    assert zero_layers(unscaled), "the failing baseline: without scaling some layer's meta-gradient is zero"
    outer_only = meta_gradient(learner, batch, torch.float16, None, scale)
    assert max(relative_errors(outer_only, fp32).values()) > 0.4, "the scale must reach the inner loop"
    if name != "second-order MAML":   # their meta-gradients are not taken by the outer backward pass
        assert zero_layers(outer_only)


@pytest.mark.parametrize("name", ["second-order MAML", "first-order MAML", "Reptile"])
def test_the_training_loop_scales_the_inner_loop_with_its_gradient_scaler(monkeypatch, name):
    """One SGD step of :func:`train` under fp16, forced on the CPU, moves every layer as the fp32 step does.

    MAML's meta-gradient is ``TINY`` times the usual one, so its step size is ``1e-3 / TINY`` (an update
    of ``1e-8`` would be lost in the fp32 rounding of the weights); Reptile's is ``theta - phi``: ``lr=1``.
    """
    def one_step(amp):
        learner = learners()[name]
        before = [p.detach().clone() for p in learner.parameters()]
        lr = 1.0 if name == "Reptile" else 1e-3 / TINY
        config = TrainConfig(steps=1, lr=lr, optimizer="sgd", amp=amp, progress=False)
        train(learner, lambda model, batch: model.meta_loss(batch), lambda generator: sinusoid_batch(), config)
        return {n: b - p.detach() for (n, p), b in zip(learner.named_parameters(), before)}

    fp32 = one_step(False)
    monkeypatch.setattr(runtime, "amp_dtype", lambda device, enabled=None, capability=None: torch.float16)
    fp16 = one_step(True)
    assert not zero_layers(fp16)
    assert max(relative_errors(fp16, fp32).values()) < TOLERANCE


@pytest.mark.parametrize("batched", [False, True])
def test_vmap_inner_loops_are_scaled_too(batched):
    batch = sinusoid_batch()
    scale = torch.tensor(2.0**16)
    reptile = partial(Reptile, inner_lr=0.01 / TINY, inner_steps=2, inner_optimizer="sgd", task_loss=tiny_mse)
    torch.manual_seed(0)
    learner = reptile(MLP(), batched=batched)
    fp32 = meta_gradient(learner, batch, None, None, 1.0)
    scaled = meta_gradient(learner, batch, torch.float16, scale, scale)
    assert max(relative_errors(scaled, fp32).values()) < TOLERANCE


def force_fp16(monkeypatch):
    """fp16 autocast and an fp16 gradient scaler on the CPU, in :func:`train`; returns the scaler."""
    scaler = runtime.grad_scaler(CPU, torch.float16)
    monkeypatch.setattr(runtime, "amp_dtype", lambda device, enabled=None, capability=None: torch.float16)
    monkeypatch.setattr(runtime, "grad_scaler", lambda device, dtype: scaler)
    return scaler


def test_an_overflow_of_the_scaled_inner_loop_is_skipped_and_the_scale_lowered(monkeypatch):
    # A support loss of 1e3 * MSE: at the initial scale 2^16 its backward pass overflows fp16 (beyond 65504),
    # phi and the loss become non-finite; the scaler skips those steps and halves its scale until none overflows.
    scaler = force_fp16(monkeypatch)
    torch.manual_seed(0)
    reptile = Reptile(MLP(), inner_lr=1e-6, inner_steps=2, inner_optimizer="sgd",
                      task_loss=lambda predictions, targets: 1e3 * F.mse_loss(predictions, targets))
    history = train(reptile, lambda model, batch: model.meta_loss(batch),
                    lambda generator: SinusoidTasks(k_shot=5, n_query=5).sample_batch(2, generator),
                    TrainConfig(steps=30, lr=1.0, optimizer="sgd", log_every=5, progress=False))
    steps, losses = history.series("loss")
    assert steps[-1] == 30 and not torch.tensor(losses[0]).isfinite(), "the first steps overflowed"
    assert torch.tensor(losses[-2:]).isfinite().all(), "and later ones no longer"
    assert 1 < scaler.get_scale() < 2.0**16
    assert all(p.isfinite().all() for p in reptile.parameters())


def test_a_loss_that_stays_non_finite_under_fp16_still_stops_the_run(monkeypatch):
    scaler = force_fp16(monkeypatch)
    torch.manual_seed(0)
    maml = MAML(MLP(), task_loss=lambda predictions, targets: F.mse_loss(predictions, targets) * float("nan"))
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 17"):
        train(maml, lambda model, batch: model.meta_loss(batch),
              lambda generator: SinusoidTasks(k_shot=5, n_query=5).sample_batch(2, generator),
              TrainConfig(steps=30, progress=False))
    assert scaler.get_scale() == 1.0, "16 skipped steps halved 2^16 down to 1"
