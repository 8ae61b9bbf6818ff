"""An estimate, not a measurement: each full-profile training run's time and memory on a T4 and an A100.

    python benchmarks/full_profile_estimate.py            # the notebooks' full-profile shapes (a few minutes, CPU)
    python benchmarks/full_profile_estimate.py --quick    # the quick-profile shapes, for the tests (seconds)

For every long training run of notebooks 03-09 it builds ONE training step as the notebook's full profile does
(the library's learner, loss and sampler; random images of Omniglot's shape, the real or stand-in CLINC150 texts,
which decide the token counts) and, on the CPU:

* counts the step's floating-point operations, forward and backward, with ``torch.utils.flop_counter.FlopCounterMode``
  (matrix products and convolutions; element-wise work is not counted), and the operators it dispatches;
* measures the memory the step holds: what autograd saves for the backward pass
  (:func:`course_lib.course.cost.peak_saved_megabytes`), plus the weights, their gradients and the optimizer's state
  (Adam: two numbers per trainable weight; plain SGD: none), in fp32;
* does the same for one evaluation episode (its inner loop included) and multiplies: steps x step, plus
  (validations x validation episodes + test episodes) x episode.

Hours on a GPU = max(FLOPs / (peak x utilisation), operators x launch cost), one bound from arithmetic, one from
PyTorch's eager per-operator overhead, which rules for the small networks of this course (a 40-unit MLP, a 64-channel
conv net on 28 x 28 images). The peaks are NVIDIA's datasheet numbers for the dtype ``runtime`` picks (T4: fp16
autocast, A100: bf16 autocast); the utilisations and the launch cost are assumptions (see ``ASSUMPTIONS``).
``benchmarks/gpu_check.sh`` measures the real thing on the day a GPU is lent, and replaces this table.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from course_lib.course.cost import peak_saved_megabytes
from course_lib.data.base import ClassDataset
from course_lib.data.episodes import EpisodeSampler
from course_lib.data.regression import LinearRegressionTasks
from course_lib.data.sinusoid import SinusoidTasks
from course_lib.meta import black_box, icl, maml, metaicl, protonet, reptile, transfer
from course_lib.meta.maml import MAML
from course_lib.meta.maml_plus_plus import MAMLPlusPlus
from course_lib.meta.proto_maml import ProtoMAML
from course_lib.meta.reptile import Reptile
from course_lib.models import MLP, ConvNet

T4_FP16_PEAK = 65e12      # FLOP/s, FP16 tensor cores (NVIDIA T4 datasheet); FP32: 8.1e12
A100_BF16_PEAK = 312e12   # FLOP/s, BF16 tensor cores (NVIDIA A100 datasheet); FP32: 19.5e12
UTILISATIONS = (0.30, 0.10)   # the optimistic and the pessimistic end of the range
LAUNCH_SECONDS = 10e-6        # eager PyTorch's cost of one dispatched operator on a GPU (CPU-side, 5-20 us)
ASSUMPTIONS = (
    "Estimate, not a measurement. Hours = max(FLOPs / (peak x utilisation), operators x 10 us), as a range from "
    "30% to 10% utilisation. Peaks from NVIDIA's datasheets for the autocast dtype `runtime` picks: T4 65 TFLOP/s "
    "FP16 tensor cores (8.1 FP32), A100 312 TFLOP/s BF16 tensor cores (19.5 FP32). Small 64-channel convolutions "
    "and 256-wide transformers reach a small fraction of peak (10-30% is typical for such layers; this CPU reached "
    "{cpu_gflops:.0f} GFLOP/s on the counted steps); 10 us is eager PyTorch's per-operator launch overhead, which "
    "bounds the tiny sinusoid and linear-regression steps. FLOPs: matrix products and convolutions, forward and "
    "backward (torch.utils.flop_counter). Memory: fp32, what autograd saves (peak) + weights + gradients + "
    "optimizer state; autocast halves the activations, and CUDA adds its context (~0.3-0.5 GB) and allocator slack. "
    "Not counted: drawing episodes, the training loop's Python, logging and checkpoint writes, so a row whose two "
    "ends agree (launch-bound) is a lower bound. 06 trains each method for 1e15 FLOPs (its full-profile budget)."
)


@dataclass
class StepCost:
    """What one call costs: FLOPs, dispatched operators, seconds on this CPU."""

    flops: float
    operators: int
    seconds: float


@dataclass
class Run:
    """One full-profile training run: its step, its evaluation, and how many of each."""

    name: str
    steps: int
    step: StepCost
    memory_mb: float
    evaluation: StepCost = field(default_factory=lambda: StepCost(0.0, 0, 0.0))
    evaluations: int = 0                 # episodes (or forward passes) of evaluation in the whole run
    steps_text: str = ""

    @property
    def total_flops(self) -> float:
        return self.steps * self.step.flops + self.evaluations * self.evaluation.flops

    def hours(self, peak: float, utilisation: float) -> float:
        """max(arithmetic time, launch time), training plus evaluation."""
        def seconds(cost: StepCost) -> float:
            return max(cost.flops / (peak * utilisation), cost.operators * LAUNCH_SECONDS)
        return (self.steps * seconds(self.step) + self.evaluations * seconds(self.evaluation)) / 3600


class OperatorCounter(TorchDispatchMode):
    """Counts the aten operators dispatched: on a GPU each is (about) one kernel launch."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count(compute: Callable[[], object]) -> StepCost:
    """FLOPs, operators and CPU seconds of ``compute()``."""
    flops, operators = FlopCounterMode(display=False), OperatorCounter()
    started = time.perf_counter()
    with flops, operators:
        compute()
    return StepCost(float(flops.get_total_flops()), operators.count, time.perf_counter() - started)


def training_step(model: nn.Module, loss_fn: Callable, batch) -> Callable[[], None]:
    """The training loop's step: the loss (a tensor or ``(loss, metrics)``), then its backward pass."""
    def step():
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        (loss[0] if isinstance(loss, tuple) else loss).backward()
    return step


def state_megabytes(model: nn.Module, optimizer_slots: int) -> float:
    """Weights, plus gradients and ``optimizer_slots`` numbers of optimizer state per trainable weight."""
    every = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return (every + (1 + optimizer_slots) * trainable) / 2**20


def measure(name: str, steps: int, model: nn.Module, loss_fn: Callable, batch, optimizer_slots: int,
            evaluate: Callable[[], object] | None = None, evaluations: int = 0, per_task_twin: nn.Module | None = None,
            **run) -> Run:
    """One run's row: its step counted and measured, its evaluation counted.

    ``per_task_twin``: for MAML's vmap path, the same learner on the per-task path. The vmap step gives the
    operators (the launches); the twin gives the FLOPs and the memory, the same products task by task: the flop
    counter charges vmap's grouped convolution backward once per task for every task (it grows with the square of
    the meta-batch), and the saved-tensor hooks that measure memory do not run under ``torch.func.grad``.
    """
    counted = []
    for learner in [model] + ([per_task_twin] if per_task_twin is not None else []):
        step = training_step(learner, loss_fn, batch)
        step()                                                   # warm-up: lazy initialisation is not counted
        counted.append(count(step))
        learner.zero_grad(set_to_none=True)
    cost = StepCost(counted[-1].flops, counted[0].operators, counted[-1].seconds)
    activations = peak_saved_megabytes(lambda: loss_fn(per_task_twin or model, batch))
    evaluation = count(evaluate) if evaluate is not None else StepCost(0.0, 0, 0.0)
    return Run(name, steps, cost, activations + state_megabytes(model, optimizer_slots), evaluation, evaluations,
               **run)


def validations(steps: int, eval_every: int) -> int:
    """How often ``train`` validates: every ``eval_every`` steps and after the last (0: only after the last)."""
    return 1 if not eval_every else steps // eval_every + (steps % eval_every != 0)


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def pick(quick: bool, *, quick_value, full_value):
    return quick_value if quick else full_value


# --- one function per run: the notebook's profile.pick(full=...) values ---------------------------------------------

def maml_sinusoid_03(quick: bool) -> Run:
    """03: MAML on K=10 sinusoids, 70,000 steps of 25 tasks; the notebook trains five such runs (second and first
    order, ANIL, Meta-SGD, pretrained) and ten short ones (ANIL's and Meta-SGD's step sizes, scored on 300 validation
    tasks), each at most this step's cost."""
    steps, meta_batch, sweep_steps = pick(quick, quick_value=(700, 10, 200), full_value=(70_000, 25, 10_000))
    torch.manual_seed(0)
    learner = MAML(MLP(), inner_lr=0.01, inner_steps=1, task_loss=F.mse_loss)
    tasks = SinusoidTasks(k_shot=10, n_query=10)
    test_task = tasks.sample(generator())
    return measure("03 MAML sinusoid, 5 runs (2nd order, 1st order, ANIL, Meta-SGD, pretrained) + 10 step-size runs",
                   5 * steps + 10 * sweep_steps, learner,
                   maml.loss, tasks.sample_batch(meta_batch, generator()), optimizer_slots=2,
                   evaluate=lambda: learner.predict(test_task),
                   evaluations=5 * (300 * validations(steps, steps // 2)) + 10 * 300 + 600 * (1 + 2 + 5 + 10) + 4 * 600,
                   steps_text=f"5 x {steps:,} + 10 x {sweep_steps:,}")


def maml_omniglot_03(quick: bool, meta_batch: int | None = None) -> Run:
    """03: second-order MAML, Omniglot 5-way 1-shot, 60,000 steps of 32 tasks with 1 query per class (as MAML's code),
    15 queries per class at validation and test; 1 inner step (3 at test);
    on CUDA the full profile runs the tasks together (vmap, explicit batch norm): its operators are counted on that
    path, its FLOPs and memory on the per-task path (the same products; see :func:`measure`)."""
    steps = pick(quick, quick_value=300, full_value=60_000)
    meta_batch = meta_batch or pick(quick, quick_value=4, full_value=32)
    batched = not quick
    torch.manual_seed(0)
    learner = MAML(ConvNet(n_classes=5, explicit_batch_norm=batched), inner_lr=0.4, inner_steps=1,
                   eval_inner_steps=3, batched=batched)
    per_task = MAML(ConvNet(n_classes=5), inner_lr=0.4, inner_steps=1) if batched else None
    omniglot = ClassDataset.random(100)
    episode = EpisodeSampler(omniglot, 5, 1, 15).sample(generator())
    n_val = pick(quick, quick_value=50, full_value=600)
    return measure(f"03 MAML Omniglot 5-way 1-shot, 2nd order, meta-batch {meta_batch}", steps, learner, maml.loss,
                   EpisodeSampler(omniglot, 5, 1, 1).sample_batch(meta_batch, generator()), optimizer_slots=2,
                   evaluate=lambda: learner.predict(episode),
                   evaluations=n_val * validations(steps, steps // 2) + 600, per_task_twin=per_task)


def maml_plus_plus_omniglot_03(quick: bool) -> Run:
    """03: MAML++, Omniglot 5-way 1-shot, 50,000 steps of 8 tasks with 1 query per class and 5 inner steps (the
    quick profile: 100 steps of 4 tasks, 3 inner steps), per task (its per-step running statistics are updated in
    place, which vmap cannot do); 600 test episodes scored with batch statistics and 600 with running statistics."""
    steps, meta_batch, inner_steps = pick(quick, quick_value=(100, 4, 3), full_value=(50_000, 8, 5))
    torch.manual_seed(0)
    learner = MAMLPlusPlus(ConvNet(n_classes=5, batch_norm_steps=inner_steps + 1), inner_lr=0.1,
                           inner_steps=inner_steps, anneal_steps=steps // 10)
    omniglot = ClassDataset.random(100)
    episode = EpisodeSampler(omniglot, 5, 1, 15).sample(generator())
    n_test = pick(quick, quick_value=200 + 50, full_value=600 + 600)
    return measure(f"03 MAML++ Omniglot 5-way 1-shot, {inner_steps} inner steps, meta-batch {meta_batch}", steps,
                   learner, maml.loss, EpisodeSampler(omniglot, 5, 1, 1).sample_batch(meta_batch, generator()),
                   optimizer_slots=2, evaluate=lambda: learner.predict(episode), evaluations=n_test)


def reptile_omniglot_04(quick: bool) -> Run:
    """04: Reptile, Omniglot 5-way 1-shot (10-shot training tasks), 100,000 steps of 5 tasks, 5 inner Adam steps of
    10 images, outer SGD; evaluation: 50 inner steps, each of 15 queries per class in its own batch."""
    steps, meta_batch = pick(quick, quick_value=(100, 3), full_value=(100_000, 5))
    torch.manual_seed(0)
    learner = Reptile(ConvNet(n_classes=5), inner_lr=1e-3, inner_steps=5, inner_batch_size=10,
                      eval_inner_steps=pick(quick, quick_value=5, full_value=50), eval_inner_batch_size=5)
    omniglot = ClassDataset.random(100)
    episode = EpisodeSampler(omniglot, 5, 1, n_query=pick(quick, quick_value=1, full_value=15)).sample(generator())
    n_val = pick(quick, quick_value=50, full_value=600)
    return measure(f"04 Reptile Omniglot 5-way 1-shot, meta-batch {meta_batch}", steps, learner, reptile.loss,
                   EpisodeSampler(omniglot, 5, 10, n_query=1).sample_batch(meta_batch, generator()), optimizer_slots=0,
                   evaluate=lambda: learner.predict(episode),
                   evaluations=n_val * validations(steps, pick(quick, quick_value=steps // 2, full_value=20_000)) + 600)


def protonet_omniglot_05(quick: bool) -> Run:
    """05: ProtoNet, one 60-way 1-shot episode of 5 queries per class a step, 20,000 steps; validation on 600
    5-way 1-shot episodes every 1,000 steps."""
    steps, n_way, n_query = pick(quick, quick_value=(500, 40, 2), full_value=(20_000, 60, 5))
    torch.manual_seed(0)
    model = ConvNet()
    omniglot = ClassDataset.random(100)
    episode = EpisodeSampler(omniglot, 5, 1, 15).sample(generator())
    n_val = pick(quick, quick_value=100, full_value=600)
    return measure(f"05 ProtoNet Omniglot {n_way}-way 1-shot", steps, model, partial(protonet.loss, n_way=n_way),
                   EpisodeSampler(omniglot, n_way, 1, n_query).sample_batch(1, generator()), optimizer_slots=2,
                   evaluate=partial(protonet.predict, model, episode),
                   evaluations=n_val * validations(steps, pick(quick, quick_value=250, full_value=1000)) + 600)


def head_to_head_06(quick: bool) -> list[Run]:
    """06: every method for the same training FLOPs (1e15 in the full profile, 4e11 in the quick one): its steps are
    the budget divided by its step's FLOPs, counted as the notebook counts them (``cost.training_flops``); then the
    test episodes."""
    from course_lib.course.cost import training_flops
    budget = pick(quick, quick_value=4e11, full_value=1e15)
    n_test = pick(quick, quick_value=100, full_value=600)
    omniglot = ClassDataset.random(100)
    test_episode = EpisodeSampler(omniglot, 5, 1, 15).sample(generator())
    episodes = EpisodeSampler(omniglot, 5, 1, n_query=15)
    torch.manual_seed(0)
    pretrained = transfer.pretraining_model(omniglot.num_classes)
    learners = [
        ("transfer (pretraining, 64 images)", pretrained, transfer.classification_loss,
         transfer.ClassificationSampler(omniglot).sample_batch(64, generator()), 2,
         partial(transfer.linear_probe_predict, pretrained, test_episode))]
    for name, learner in [
            ("MAML", MAML(ConvNet(n_classes=5), inner_lr=0.4, inner_steps=1, eval_inner_steps=3)),
            ("first-order MAML", MAML(ConvNet(n_classes=5), inner_lr=0.4, inner_steps=1, eval_inner_steps=3,
                                      first_order=True)),
            ("first-order Proto-MAML", ProtoMAML(ConvNet(n_classes=5), inner_lr=0.02, inner_steps=1, eval_inner_steps=3,
                                                 first_order=True))]:
        learners.append((f"{name}, meta-batch 4", learner, maml.loss, episodes.sample_batch(4, generator()), 2,
                         partial(learner.predict, test_episode)))
    learner = Reptile(ConvNet(n_classes=5), inner_lr=3e-3, inner_steps=5, inner_batch_size=10, eval_inner_steps=5,
                      eval_inner_batch_size=5, transductive=True)
    learners.append(("Reptile, meta-batch 3", learner, reptile.loss,
                     EpisodeSampler(omniglot, 5, 10, n_query=1).sample_batch(3, generator()), 0,
                     partial(learner.predict, test_episode)))
    embedding = ConvNet()
    learners.append(("ProtoNet 40-way", embedding, partial(protonet.loss, n_way=40),
                     EpisodeSampler(omniglot, 40, 1, n_query=2).sample_batch(1, generator()), 2,
                     partial(protonet.predict, embedding, test_episode)))
    runs = []
    for name, model, loss_fn, batch, slots, evaluate in learners:
        steps = max(1, int(budget // training_flops(loss_fn, model, batch)))
        runs.append(measure(f"06 {name}", steps, model, loss_fn, batch, slots, evaluate=evaluate, evaluations=n_test,
                            steps_text=f"{steps:,} ({budget:.0e} FLOPs)"))
    return runs


def maml_lora_07(quick: bool) -> Run:
    """07: first-order MAML over LoRA adapters of MiniLM (and a zero head), 2,000 steps of 2 CLINC150 5-way 1-shot
    tasks of 5 queries, 3 inner steps; 600 test episodes before and after."""
    from course_lib.data import load_clinc
    from course_lib.text import SentenceEncoder
    from course_lib.text.lora import UtteranceClassifier, is_fast_weight, with_lora
    steps = pick(quick, quick_value=15, full_value=2000)
    train_split, test_split = load_clinc("train"), load_clinc("test")
    encoder = SentenceEncoder(device="cpu")
    lora_encoder = with_lora(encoder.model)
    torch.manual_seed(0)

    def learner(texts):
        classifier = UtteranceClassifier(lora_encoder, encoder.tokenizer, texts, n_way=5)
        return MAML(classifier, inner_lr=1.0, inner_steps=3, first_order=True, adapted_if=is_fast_weight)

    train_learner, test_learner = learner(train_split.texts), learner(test_split.texts)
    episode = EpisodeSampler(test_split, n_way=5, k_shot=1, n_query=15).sample(generator())
    return measure("07 MAML over LoRA (MiniLM), meta-batch 2", steps, train_learner, maml.loss,
                   EpisodeSampler(train_split, n_way=5, k_shot=1, n_query=5).sample_batch(2, generator()),
                   optimizer_slots=2, evaluate=lambda: test_learner.predict(episode),
                   evaluations=2 * pick(quick, quick_value=20, full_value=600))


def in_context_08(quick: bool) -> list[Run]:
    """08's long runs, as its ``profile.pick(..., full=...)`` calls set them:

    * the in-context regressor: a GPT-2-style transformer (12 layers, width 256, 8 heads) learning linear regression
      in context, d=20, 41 points, 500,000 steps of 64 tasks; tested on 1,000 tasks in one pass;
    * the task-diversity sweep: four fresh transformers (8 layers, width 128, 2 heads), d=8, 16 points, one per
      pool of training tasks (4, 32, 256, fresh), 50,000 steps of 64 tasks each; each tested on 1,000 tasks of its
      pool and 1,000 new ones;
    * the in-context classifier on 384-d sentence vectors (3 layers, width 128; 5-way 1-shot, one query): 5,000
      steps of 64 transformed episodes at input scale 100, 1,000 at scale 1, and 5,000 for each of the 1, 16 and
      256 transforms of the sweep; tested on 600 held-out and 600 meta-train episodes of 15 queries per class, 2 x
      100 validation episodes and 2 x 200 per arm of the sweep;
    * the fixed-label classifier: 2,000 steps of 32 episodes; tested on 3 x 200 episodes;
    * section 0, on Omniglot 5-way 1-shot (one query per class in training): the black-box learner (ConvNet(hidden=64)
      and a 4-layer, width-128 in-context classifier) and ProtoNet on the same conv net, 20,000 steps of 32
      episodes each; the black box tested on 2 x 600 episodes of 15 queries per class, ProtoNet on 600, each query
      in its own batch with the support set.

    Random vectors of the embeddings' shape stand in for the sentence vectors (the cost depends on the shapes only).
    Not counted: MAML's linear model (3 x 1,000 + 5,000 steps of a 21-weight model) and ProtoNet (no training).
    """
    def regressor_run(name, dim, n_points, size, steps, test_passes, steps_text):
        tasks = LinearRegressionTasks(dim, n_points)
        torch.manual_seed(0)
        regressor = icl.InContextRegressor(dim, n_points, **size)
        test_tasks = tasks.sample_batch(1000, generator())

        def evaluate():
            with torch.no_grad():
                regressor.eval()
                regressor(test_tasks.x, test_tasks.y)
                regressor.train()
        return measure(f"08 {name}, {size['n_layer']} layers x {size['n_embd']}, 64 tasks", steps, regressor,
                       icl.regression_loss, tasks.sample_batch(64, generator()), optimizer_slots=2,
                       evaluate=evaluate, evaluations=test_passes, steps_text=steps_text)

    dim, n_points = pick(quick, quick_value=(3, 7), full_value=(20, 41))
    steps = pick(quick, quick_value=600, full_value=500_000)
    regression = regressor_run("in-context regression", dim, n_points,
                               pick(quick, quick_value=dict(n_layer=3, n_embd=64, n_head=4),
                                    full_value=dict(n_layer=12, n_embd=256, n_head=8)), steps, 1, f"{steps:,}")
    dim, n_points = pick(quick, quick_value=(3, 7), full_value=(8, 16))
    steps = pick(quick, quick_value=200, full_value=50_000)
    diversity = regressor_run("task-diversity sweep, 4 pools", dim, n_points,
                              pick(quick, quick_value=dict(n_layer=3, n_embd=64, n_head=4),
                                   full_value=dict(n_layer=8, n_embd=128, n_head=2)), 4 * steps, 4 * 2,
                              f"4 x {steps:,}")

    vectors = ClassDataset.random(90, 100, example_shape=(384,))   # 90 meta-train intents, 100 utterances each
    transformed = icl.SignedPermutationEpisodes(EpisodeSampler(vectors, 5, 1, n_query=1), dim=384, n_transforms=None)
    test_episode = EpisodeSampler(vectors, 5, 1, n_query=15).sample(generator())
    size = dict(n_layer=1, n_embd=128, n_head=1)   # both profiles: the size chosen on the validation domain
    torch.manual_seed(0)
    classifier = icl.InContextClassifier(384, n_way=5, max_support=5, input_scale=30.0, initializer_range=0.1, **size)
    shape = f"{size['n_layer']} layer x {size['n_embd']}"
    main_steps, unscaled_steps, fixed_steps = pick(quick, quick_value=(800, 50, 200), full_value=(5_000, 1_000, 2_000))
    sweep_steps = pick(quick, quick_value=300, full_value=5_000)
    swept = pick(quick, quick_value=3, full_value=4)   # the sweep's arms, each a model of its own
    runs = [regression, diversity]
    for name, batch_size, steps, evaluations, steps_text in [
            (f"in-context classifier, {shape}, 64 episodes", 64, main_steps + unscaled_steps + swept * sweep_steps,
             2 * 600 + 2 * 100 + swept * 2 * 200,
             f"{main_steps:,} + {unscaled_steps:,} + {swept} x {sweep_steps:,}"),
            (f"fixed-label classifier, {shape}, 32 episodes", 32, fixed_steps, 3 * 200, f"{fixed_steps:,}")]:
        runs.append(measure(f"08 {name}", steps, classifier, icl.classification_loss,
                            transformed.sample_batch(batch_size, generator()), optimizer_slots=2,
                            evaluate=partial(icl.classification_predict, classifier, test_episode),
                            evaluations=evaluations, steps_text=steps_text))

    steps, batch_size, hidden = pick(quick, quick_value=(200, 24, 16), full_value=(20_000, 32, 64))
    size = pick(quick, quick_value=dict(n_layer=2, n_embd=64), full_value=dict(n_layer=4, n_embd=128))
    n_queries, n_test = pick(quick, quick_value=(3, 200), full_value=(15, 600))
    omniglot = ClassDataset.random(100)
    batch = EpisodeSampler(omniglot, 5, 1, 1).sample_batch(batch_size, generator())
    test_episode = EpisodeSampler(omniglot, 5, 1, n_queries).sample(generator())
    torch.manual_seed(0)
    learner = black_box.BlackBoxClassifier(ConvNet(hidden=hidden), icl.InContextClassifier(
        hidden, n_way=5, max_support=5, **size))
    runs.append(measure(f"08 black-box learner, ConvNet({hidden}) + {size['n_layer']} layers x {size['n_embd']}, "
                        f"{batch_size} episodes", steps, learner, icl.classification_loss, batch, optimizer_slots=2,
                        evaluate=partial(black_box.predict, learner, test_episode), evaluations=2 * n_test))
    embedding = ConvNet(hidden=hidden)
    runs.append(measure(f"08 ProtoNet, ConvNet({hidden}), {batch_size} episodes", steps, embedding,
                        partial(protonet.loss, n_way=5), batch, optimizer_slots=2,
                        evaluate=partial(protonet.predict, embedding, test_episode, transductive=False),
                        evaluations=n_test))
    return runs


def metaicl_09(quick: bool) -> Run:
    """09: MetaICL, LoRA rank 8 on SmolLM2-135M's attention (q_proj, v_proj), 5,000 steps of 8 CLINC150 3-way 1-shot
    prompts, and its multi-task 0-shot control, the same steps on the same episodes' queries alone (counted at
    MetaICL's cost: an upper bound); 12 evaluations of 500 episodes of one query, scored by label likelihood (7 arms
    of the pretrained model, 4 of MetaICL's, 1 of the control's; the channel arm's cost counted as direct's). The
    weights are random here, of SmolLM2-135M's shapes (LlamaConfig below; FLOPs and memory depend on the shapes
    only), and the tokenizer is the offline word-piece tokenizer of the rehearsal: about as many tokens per English
    prompt as SmolLM2's byte-pair encoding. ``--quick`` counts a small offline LM instead (10 steps of 4 prompts, 40
    episodes): it checks the code path, not SmolLM2's cost."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from course_lib.data import load_clinc
    from course_lib.text.causal_lm import small_causal_lm
    from course_lib.text.lora import with_lora
    steps, batch_size = pick(quick, quick_value=(10, 4), full_value=(5_000, 8))
    splits = [load_clinc(split) for split in ("train", "val", "test")]
    _, tokenizer = small_causal_lm([t for ds in splits for t in (*ds.texts, *ds.label_names)])
    smollm2_135m = LlamaConfig(vocab_size=max(49152, tokenizer.vocab_size), hidden_size=576, intermediate_size=1536,
                               num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                               tie_word_embeddings=True, use_cache=False)
    torch.manual_seed(0)
    if quick:   # the shapes of the quick profile's SmolLM2 are the full one's; a small LM keeps --quick quick
        model = small_causal_lm([t for ds in splits for t in (*ds.texts, *ds.label_names)])[0]
    else:
        model = with_lora(LlamaForCausalLM(smollm2_135m), rank=8, target_modules=metaicl.LLAMA_ATTENTION)
    train_intents, test_intents = splits[0], splits[2]
    episode = EpisodeSampler(test_intents, 3, 1, n_query=1).sample(generator())
    sampler = metaicl.PromptBatchSampler(train_intents, tokenizer, n_way=3, k_shot=1)

    def evaluate():
        with torch.no_grad():
            metaicl.predict(model.eval(), tokenizer, test_intents, episode)
        model.train()
    n_episodes = pick(quick, quick_value=40, full_value=500)
    return measure(f"09 MetaICL and multi-task 0-shot, {'small LM' if quick else 'SmolLM2-135M + LoRA'}, "
                   f"{batch_size} prompts", 2 * steps, model, metaicl.loss, sampler.sample_batch(batch_size, generator()),
                   optimizer_slots=2, evaluate=evaluate, evaluations=12 * n_episodes, steps_text=f"2 x {steps:,}")


RUNS: list[Callable[[bool], Run | list[Run]]] = [
    maml_sinusoid_03, maml_omniglot_03, maml_plus_plus_omniglot_03, reptile_omniglot_04, protonet_omniglot_05, head_to_head_06, maml_lora_07,
    in_context_08, metaicl_09]


def number(x: float) -> str:
    """Three significant digits, without an exponent from 100 up: 0.00996, 20.9, 1,880."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def hours_range(run: Run, peak: float) -> str:
    low, high = (run.hours(peak, utilisation) for utilisation in UTILISATIONS)
    return f"{low:.2g} to {high:.2g}"   # not "-": a small value prints as 3.5e-05


def markdown(runs: list[Run], quick: bool) -> str:
    counted_flops = sum(run.step.flops + run.evaluation.flops for run in runs)
    counted_seconds = sum(run.step.seconds + run.evaluation.seconds for run in runs)
    caption = ASSUMPTIONS.format(cpu_gflops=counted_flops / counted_seconds / 1e9)
    title = "Full-profile runs: estimated time and memory" + (" (--quick: quick-profile shapes)" if quick else "")
    lines = [f"**{title}.** {caption}", "",
             "| run | steps | GFLOP per step | total PFLOP | memory per step (MB) | T4 hours | A100 hours |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        lines.append(f"| {run.name} | {run.steps_text or f'{run.steps:,}'} | {number(run.step.flops / 1e9)} "
                     f"| {number(run.total_flops / 1e15)} | {number(run.memory_mb)} | {hours_range(run, T4_FP16_PEAK)} "
                     f"| {hours_range(run, A100_BF16_PEAK)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the notebooks' quick-profile shapes (for the tests)")
    args = parser.parse_args(argv)
    runs: list[Run] = []
    for build in RUNS:
        built = build(args.quick)
        runs += built if isinstance(built, list) else [built]
        print(f"counted {build.__name__}", file=sys.stderr, flush=True)
    print(markdown(runs, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
