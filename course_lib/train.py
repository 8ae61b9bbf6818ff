"""The one meta-training loop of the course.

Introduced in 01_few_shot_problem; every algorithm of the course trains through :func:`train`.
An algorithm supplies only ``loss_fn(model, batch)``: the loss whose gradient is its outer
update (for MAML the query loss after adaptation, for ProtoNet the query cross-entropy, for
Reptile a surrogate whose gradient is the pseudo-gradient). The loop does the rest:

* sample a batch from a seeded generator, move it to the model's device (``runtime.to_device``:
  asynchronously, from pinned memory, on CUDA);
* forward under mixed precision (on GPU: bf16 where native, else fp16, see ``runtime.amp_dtype``), backward
  with a gradient scaler (fp16 only) whose current scale also scales the inner loops' support losses
  (``runtime.autocast(..., loss_scale=...)``, see ``meta.inner_loop``);
* gradient clipping, optimizer step, learning-rate schedule;
* guards that stop with a clear message, and never take the optimizer step, when the loss or a gradient
  is NaN or infinite (under fp16 loss scaling the scaler skips a step whose gradients overflowed
  instead, as it is designed to, and so a step whose loss overflowed in a scaled inner loop while
  its scale is above 1), and that never write a checkpoint whose weights are not finite;
* at most one host sync per logged step on a GPU: losses, metrics and the guards' flags stay on the
  device until the loop logs, validates or saves, and a fused optimizer skips a flagged step on the
  device (see :func:`checks_on_device`); on a CPU, where nothing is asynchronous, each step is checked
  as it comes;
* validation on fixed episodes, in eval mode, every ``eval_every`` steps and after the last step,
  and a metrics history (loss, lr, wall time, peak memory, validation scores) for plots;
* atomic checkpoints every ``checkpoint_every`` steps and exact resume, so an interrupted run
  (a Colab disconnect) continues as if it had never stopped;
* under a rehearsal of the full profile (``runtime.rehearsing()``), a stop after ``runtime.REHEARSAL_STEPS``
  steps of the call, as ``max_seconds`` stops: the last row (validation, checkpoint) records it;
* under torchrun (``torch.distributed``), the tasks of each meta-batch split across the processes, the
  meta-gradients, loss and metrics averaged over them, and rank 0 alone writing checkpoints and showing
  progress: a step of ``N`` processes is the single-process step (see :mod:`course_lib.distributed`).

A checkpoint holds the model, optimizer, scheduler and scaler states, every random state, the
step, the elapsed time, the history with the unfinished logging window, the run's configuration
(every :class:`TrainConfig` field but those in ``RESUMABLE_CHANGES``) and a digest of the model's
parameter and buffer names, shapes and dtypes. A resume refuses, with
:class:`CheckpointMismatchError`, a checkpoint written with another configuration or for another
model, and with :class:`~course_lib.data.sources.CorruptFileError` a truncated or corrupt file.
"""
from __future__ import annotations

import hashlib
import math
import re
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from . import distributed, runtime
from .data.sources import describe_path, read_torch_file, save_atomically
from .evaluate import eval_mode
from .progress import progress_bar


class NonFiniteError(RuntimeError):
    """The loss, a gradient or the weights became NaN or infinite: training stops rather than corrupting them."""


class NonFiniteLossError(NonFiniteError):
    """The loss became NaN or infinite."""


class CheckpointMismatchError(ValueError):
    """The checkpoint to resume was written by another run: another configuration or another model."""


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}

# The TrainConfig fields a resume may change: where and how often to save, when to stop for time, how
# the run shows. They do not change the weights a run computes (``max_seconds`` decides only where a run
# stops, and its last row records that: resume with more time to go on). Every other field is stored in the
# checkpoint and must match, ``log_every`` and ``eval_every`` included: ``log_every`` decides which
# losses a history row averages (the stored unfinished window belongs to it), and ``validate`` may
# draw from the global random state, so when it runs can change the weights too.
RESUMABLE_CHANGES = ("checkpoint_path", "checkpoint_every", "max_seconds", "progress", "desc")


@dataclass
class TrainConfig:
    """How to train. Sizes come from the notebook's profile; the algorithm never changes.

    ``lr_step_size``/``lr_gamma``: multiply the learning rate by ``lr_gamma`` every
    ``lr_step_size`` steps (ProtoNet's "halve every 2,000 episodes"); None keeps it constant.
    ``lr_linear_decay``: instead, decrease it linearly from ``lr`` to 0 over ``steps``,
    ``lr_t = lr * (1 - t / steps)`` (Reptile's annealed meta step size).
    ``eval_every``: validate every that many steps (0: only after the last step).
    ``checkpoint_every``: save to ``checkpoint_path`` every that many steps and after the last
    (0: never save; an existing checkpoint there is still resumed from).
    ``amp``: None = mixed precision on CUDA only (bf16 on GPUs of compute capability 8.0 or more, else
    fp16 with loss scaling); True forces it (bf16 on CPU), False disables.
    ``max_seconds``: stop early once training has taken this long (a time limit for a session); the history
    says how many steps were done. A comparison of methods budgets steps or FLOPs instead (06_head_to_head):
    seconds depend on the machine.

    An impossible configuration is a ``ValueError`` when it is built, not a surprise mid-run.
    """

    steps: int
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_step_size: int | None = None
    lr_gamma: float = 0.5
    lr_linear_decay: bool = False
    grad_clip: float | None = None
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0
    checkpoint_path: str | Path | None = None
    amp: bool | None = None
    seed: int = 0
    max_seconds: float | None = None
    progress: bool = True
    desc: str = "meta-training"

    def __post_init__(self) -> None:
        problems = [message for impossible, message in [
            (self.steps < 1, f"steps={self.steps}: train for 1 step or more"),
            (self.log_every < 1, f"log_every={self.log_every}: log every 1 step or more"),
            (self.eval_every < 0,
             f"eval_every={self.eval_every}: validate every 1 step or more, or 0 for only after the last step"),
            (self.checkpoint_every < 0,
             f"checkpoint_every={self.checkpoint_every}: save every 1 step or more, or 0 for never"),
            (self.checkpoint_every > 0 and not self.checkpoint_path,
             f"checkpoint_every={self.checkpoint_every} needs a checkpoint_path to save to"),
            (self.optimizer not in OPTIMIZERS,
             f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}"),
            (self.lr_step_size is not None and self.lr_step_size < 1,
             f"lr_step_size={self.lr_step_size}: decay every 1 step or more, or None for a constant rate"),
            (bool(self.lr_step_size) and self.lr_linear_decay,
             f"lr_step_size={self.lr_step_size} and lr_linear_decay=True: choose one learning-rate "
             "schedule: lr_step_size or lr_linear_decay, not both"),
            (self.max_seconds is not None and self.max_seconds <= 0,
             f"max_seconds={self.max_seconds}: give a positive time budget, or None for no limit"),
            (self.grad_clip is not None and self.grad_clip <= 0,
             f"grad_clip={self.grad_clip}: clip to a positive norm, or None for no clipping"),
        ] if impossible]
        if problems:
            raise ValueError("impossible TrainConfig: " + "; ".join(problems))


@dataclass
class History:
    """Rows of metrics, one per logged step (``step``, ``loss``, ``lr``, ``time_s``,
    ``peak_memory_mb``, anything ``loss_fn`` reports, and ``val_*`` where validated); a validation
    step that is not a logging step has a row of its own, with ``step`` and ``val_*`` only."""

    rows: list[dict[str, float]] = field(default_factory=list)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of the rows that have ``key``: ready for a plot."""
        rows = [r for r in self.rows if key in r]
        return [int(r["step"]) for r in rows], [r[key] for r in rows]

    def last(self, key: str) -> float:
        return self.series(key)[1][-1]


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: allocated tensors on CUDA, the process's resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def checks_on_device(device: torch.device) -> bool:
    """Whether the loop checks each step on the device and reads the answers once per logged step: on CUDA.

    A GPU runs ahead of the host; reading a value (``loss.item()``, ``bool(t.isfinite().all())``) makes
    the host wait until the GPU has caught up, and then the GPU waits for the host's next launches. So on
    CUDA the optimizer is fused and given the step's "non-finite" flag as ``found_inf``: it skips a
    non-finite step on the device itself (the mechanism torch's GradScaler uses), and the loop reads the
    window's losses, metrics and flags in one transfer when it logs, validates or saves. On a CPU every
    operation is synchronous, a check costs nothing, and the loop checks each step as it comes.
    """
    return device.type == "cuda"


def make_optimizer(params, config: TrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer``; ``fused``: one kernel per step that can skip a flagged step."""
    return OPTIMIZERS[config.optimizer](params, lr=config.lr, weight_decay=config.weight_decay,
                                        **({"fused": True} if fused else {}))


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.lr_linear_decay:
        return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0,
                                                 total_iters=config.steps)
    step_size = config.lr_step_size or config.steps + 1
    gamma = config.lr_gamma if config.lr_step_size else 1.0
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (it cannot run code); a truncated or corrupt
    file is a ``CorruptFileError`` that names it."""
    return read_torch_file(Path(path), "checkpoint", "delete it to start over, or choose another checkpoint_path")


def run_config(config: TrainConfig) -> dict[str, Any]:
    """The fields of ``config`` that a resume must match: all but ``RESUMABLE_CHANGES``."""
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name not in RESUMABLE_CHANGES}


def model_layout(state_dict: dict[str, Tensor]) -> dict[str, str]:
    """``{name: "shape dtype"}`` of every parameter and buffer, e.g. ``{"net.0.weight": "[16, 1] float32"}``."""
    return {name: f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}" for name, t in state_dict.items()}


def model_digest(model: nn.Module) -> str:
    """A sha256 digest of :func:`model_layout`: equal for models with the same architecture."""
    layout = sorted(model_layout(model.state_dict()).items())
    return hashlib.sha256(repr(layout).encode()).hexdigest()


def check_resumable(state: Any, config: TrainConfig, model: nn.Module, path: Path) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` was saved by this run: the same
    configuration (see :func:`run_config`) and a model of the same layout."""
    if not isinstance(state, dict) or "config" not in state:
        differences = ["it holds no training configuration (not saved by train(), or by an older course_lib)"]
    else:
        saved, wanted = state["config"], run_config(config)
        differences = [f"{key}: {saved.get(key)!r} -> {wanted.get(key)!r}"
                       for key in {**saved, **wanted} if saved.get(key) != wanted.get(key)]
        if state.get("model_digest") != model_digest(model):
            differences += _layout_differences(model_layout(state["model"]), model_layout(model.state_dict()))
    if differences:
        raise CheckpointMismatchError(
            f"the checkpoint {describe_path(path)} was saved by a different run (saved -> now): "
            f"{'; '.join(differences)}. "
            "Resume it with the settings and model it was saved with, or start over: delete the file or "
            "choose another checkpoint_path")


def _layout_differences(saved: dict[str, str], wanted: dict[str, str], shown: int = 3) -> list[str]:
    differences = [f"model {name}: {saved.get(name, 'absent')} -> {wanted.get(name, 'absent')}"
                   for name in {**saved, **wanted} if saved.get(name) != wanted.get(name)]
    more = [f"and {len(differences) - shown} more model tensors"] if len(differences) > shown else []
    return differences[:shown] + more


def finite_flag(tensors: Iterable[Tensor | None]) -> Tensor:
    """A 0-d bool tensor (on the tensors' device: no host sync): whether every floating-point tensor of
    ``tensors`` (Nones skipped) is free of NaN and inf."""
    checks = [t.detach().isfinite().all() for t in tensors if t is not None and t.is_floating_point()]
    return torch.stack(checks).all() if checks else torch.tensor(True)


def all_finite(tensors: Iterable[Tensor | None]) -> bool:
    """:func:`finite_flag`, read on the host."""
    return bool(finite_flag(tensors))


def step_is_finite(loss: Tensor, model: nn.Module, loss_scale: Tensor | None) -> Tensor:
    """A 0-d bool tensor on the loss's device (no host sync): whether the step may be taken.

    Without loss scaling (``loss_scale`` None): the loss and every gradient are finite. With fp16 loss
    scaling: the loss is finite or the scale is above 1 (an inner loop's scaled support loss may have
    overflowed; the scaler then skips the step, whose gradients are non-finite too, and halves its scale).
    """
    if loss_scale is not None:
        return finite_flag([loss]) | (loss_scale > 1)
    return finite_flag([loss, *(p.grad for p in model.parameters())])


def non_finite_error(step: int, loss: float) -> NonFiniteError:
    """The error that stops a run whose step ``step`` was not finite: the loss, or else a gradient."""
    if not math.isfinite(loss):
        return NonFiniteLossError(
            f"the loss became {loss} at step {step}: lower the learning rate, "
            "set grad_clip, or check the inputs; checkpoints written so far are intact")
    return NonFiniteError(
        f"gradients became non-finite at step {step} although the loss was finite: look for an operation "
        "whose derivative is infinite where it is evaluated (sqrt or log at 0, a division by 0) or lower "
        "the learning rate; the step was not taken, and checkpoints written so far are intact")


def read_window(window: list[dict[str, Any]], device: torch.device) -> list[dict[str, float]]:
    """The logging window with every tensor value read to a Python float, in ONE host transfer.

    ``window`` holds one row per step (``{"loss": 0-d tensor, metric: tensor or float, ...}``; the
    key ``"finite"``, where present, is the step's :func:`step_is_finite` flag, read as 1.0 or 0.0).
    """
    tensors = [v for row in window for v in row.values() if isinstance(v, Tensor)]
    if not tensors:
        return window
    dtype = torch.float32 if device.type == "mps" else torch.float64   # float64: exact for every float32
    values = iter(torch.stack([t.detach().to(device, dtype).reshape(()) for t in tensors]).cpu().tolist())
    return [{k: next(values) if isinstance(v, Tensor) else float(v) for k, v in row.items()} for row in window]


def check_window(window: list[dict[str, float]], last_step: int) -> list[dict[str, float]]:
    """Raise :func:`non_finite_error` for the first step of ``window`` (rows up to ``last_step``) whose
    ``finite`` flag is 0; return the rows without their flags."""
    first = last_step - len(window) + 1
    for step, row in enumerate(window, start=first):
        if row.get("finite", 1.0) == 0.0:
            raise non_finite_error(step, row["loss"])
    return [{k: v for k, v in row.items() if k != "finite"} for row in window]


def _split_output(output: Tensor | tuple[Tensor, dict[str, float]]) -> tuple[Tensor, dict[str, float]]:
    return output if isinstance(output, tuple) else (output, {})


def _mean(window: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over the steps of a logging window."""
    return {k: sum(w[k] for w in window) / len(window) for k in window[0]}


def _validation_metrics(model: nn.Module, validate: Callable[[nn.Module], dict[str, float]]) -> dict[str, float]:
    """``val_<name>`` metrics of ``validate(model)``, run in eval mode; the model's modes are restored after."""
    with eval_mode(model):
        return {f"val_{k}": float(v) for k, v in validate(model).items()}


def train(model: nn.Module,
          loss_fn: Callable[[nn.Module, Any], Tensor | tuple[Tensor, dict[str, Tensor | float]]],
          sample_batch: Callable[[torch.Generator], Any],
          config: TrainConfig,
          validate: Callable[[nn.Module], dict[str, float]] | None = None) -> History:
    """Meta-train ``model`` for ``config.steps`` steps and return the metrics history.

    Args:
        model: the learner's parameters as a module, already on its device (for Meta-SGD it
            holds the network and the learned inner learning rates).
        loss_fn: ``loss_fn(model, batch)`` -> the loss to minimise, or ``(loss, metrics)`` (0-d tensors, read
            on the host only when the loop logs, or floats).
        sample_batch: ``sample_batch(generator)`` -> a batch (a tensor, a batch dataclass, a tuple or
            dict of them, or anything with ``.to(device)``: see ``runtime.to_device``);
            it must draw all its randomness from ``generator`` for exact resume.
        config: see :class:`TrainConfig`.
        validate: ``validate(model)`` -> metrics on fixed validation episodes, logged as
            ``val_<name>`` every ``config.eval_every`` steps and after the last step; it runs
            in eval mode.

    With ``config.checkpoint_path`` set, an existing checkpoint there is resumed from; it must
    have been saved by a run with the same configuration and model (see the module docstring).

    Under torchrun every process calls ``train`` with its model on its own device
    (``runtime.get_device()``); ``loss_fn`` must be a mean over the batch's leading (task)
    dimension, as every loss of the course is, and the checkpoint path must be one that every process
    can read (rank 0 writes it; on several machines, a shared file system). ``validate`` runs on every
    rank, on the same weights.
    """
    device = next(model.parameters()).device
    ranks = distributed.process_group(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed shapes every step: let cuDNN pick its fastest kernels
    dtype = runtime.amp_dtype(device, config.amp)
    on_device_checks = checks_on_device(device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config, fused=on_device_checks)
    scheduler = make_scheduler(optimizer, config)
    scaler = runtime.grad_scaler(device, dtype)
    generator = runtime.seed_everything(config.seed)
    history, window, start, elapsed = History(), [], 0, 0.0

    checkpoint_path = Path(config.checkpoint_path) if config.checkpoint_path else None
    if checkpoint_path is not None and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        check_resumable(state, config, model, checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        generator.set_state(state["generator"])
        rank_rng = state.get("rank_rng", [])   # each rank's own global random state, where the run had as many
        runtime.set_rng_state(rank_rng[ranks.rank] if len(rank_rng) == ranks.world_size else state["rng"])
        history, window = History(state["history"]), state["window"]
        start, elapsed = state["step"], state["elapsed"]
    else:
        distributed.broadcast_from_main(model.state_dict().values(), ranks)

    def checkpoint(step: int) -> None:
        if not all_finite(model.state_dict().values()):
            raise NonFiniteError(f"the weights became non-finite at step {step} and were not saved: "
                                 f"{describe_path(checkpoint_path)} keeps the last good checkpoint, if any; "
                                 "lower the learning rate or set grad_clip")
        rank_rng = distributed.gather_objects(runtime.rng_state(), ranks)
        if ranks.is_main:   # the ranks hold the same weights and states: rank 0 writes them
            save_atomically({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "generator": generator.get_state(), "rng": rank_rng[0],
                **({"rank_rng": rank_rng} if ranks.is_distributed else {}),
                "history": history.rows, "window": window, "step": step, "elapsed": elapsed,
                "config": run_config(config), "model_digest": model_digest(model),
            }, checkpoint_path)
        distributed.barrier(ranks)   # no rank goes on (and may resume) before the file is there

    model.train()
    started = time.perf_counter() - elapsed
    stop = start + runtime.rehearsal_cap(config.steps - start, runtime.REHEARSAL_STEPS)   # a rehearsal: a few
    bar = progress_bar(range(start, stop), desc=config.desc, initial=start,
                       total=config.steps, disable=not config.progress or not ranks.is_main)
    for step in bar:
        done = step + 1
        batch, share = distributed.share_of_batch(sample_batch(generator), ranks)  # every rank draws the same batch
        batch = runtime.to_device(batch, device)
        inner_scale = scaler.scale(torch.ones((), device=device)) if scaler.is_enabled() else None  # no sync
        with runtime.autocast(device, dtype, loss_scale=inner_scale):
            loss, metrics = _split_output(loss_fn(model, batch))
        if ranks.is_distributed:   # the whole meta-batch's loss and metrics, so that every rank stops alike
            metrics = distributed.all_reduce_mean({"loss": loss, **metrics}, share, device)
            batch_loss = metrics.pop("loss")
        else:
            batch_loss = loss
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if ranks.is_distributed:
            distributed.all_reduce_gradients(model.parameters(), share)
        finite = step_is_finite(batch_loss, model, inner_scale)
        if on_device_checks:
            if not scaler.is_enabled():   # the fused optimizer skips the step on the device where it is not finite
                optimizer.found_inf = (~finite).float()   # (an fp16 scaler hands it its own overflow flag)
        elif not finite:                  # on a CPU: stop before the optimizer step
            raise non_finite_error(done, batch_loss.item())
        if config.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        with warnings.catch_warnings():   # torch warns when a scaler skipped the first step: harmless here
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            scheduler.step()
        window.append({"loss": batch_loss.detach(), **{k: v.detach() if isinstance(v, Tensor) else v for k, v in metrics.items()},
                       **({"finite": finite} if on_device_checks else {})})

        elapsed = time.perf_counter() - started
        out_of_time = config.max_seconds is not None and elapsed >= config.max_seconds
        if config.max_seconds is not None and ranks.is_distributed:   # rank 0's clock decides for all
            out_of_time = distributed.main_decides(out_of_time, device)
        last = done == stop or out_of_time
        log_now = done % config.log_every == 0 or last
        validate_now = validate is not None and ((config.eval_every and done % config.eval_every == 0) or last)
        save_now = bool(config.checkpoint_every) and (done % config.checkpoint_every == 0 or last)
        if log_now or validate_now or save_now:   # the one host sync: read (and check) the steps so far
            window = check_window(read_window(window, device), done)
        if log_now or validate_now:
            row = {"step": done}
            if log_now:
                row.update(_mean(window), lr=scheduler.get_last_lr()[0], time_s=elapsed,
                           peak_memory_mb=peak_memory_mb(device))
                window = []
            if validate_now:
                row.update(_validation_metrics(model, validate))
            history.rows.append(row)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k == "loss" or k.startswith("val_")})
        if save_now:
            checkpoint(done)
        if out_of_time:
            break
    bar.close()
    return history


def steps_per_second(history: History) -> float:
    """Training throughput over the whole run (steps per wall-clock second)."""
    steps, times = history.series("time_s")
    return steps[-1] / times[-1] if times and times[-1] > 0 else math.nan
