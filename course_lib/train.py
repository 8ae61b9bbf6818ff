"""The one meta-training loop of the course.

Introduced in 01_few_shot_problem; every algorithm of the course trains through :func:`train`.
An algorithm supplies only ``loss_fn(model, batch)``: the loss whose gradient is its outer
update (for MAML the query loss after adaptation, for ProtoNet the query cross-entropy, for
Reptile a surrogate whose gradient is the pseudo-gradient). The loop does the rest:

* sample a batch from a seeded generator, move it to the device;
* forward under mixed precision (on GPU), backward with a gradient scaler (fp16 only);
* gradient clipping, optimizer step, learning-rate schedule;
* a guard that stops with a clear message when the loss is NaN or infinite;
* periodic validation on fixed episodes and a metrics history (loss, lr, wall time,
  peak memory, validation scores) for plots;
* atomic checkpoints every ``checkpoint_every`` steps and exact resume: model, optimizer,
  scheduler, scaler, every random state and the step, so an interrupted run (a Colab
  disconnect) continues as if it had never stopped.
"""
from __future__ import annotations

import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import runtime
from .progress import progress_bar


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops rather than corrupting the weights."""


@dataclass
class TrainConfig:
    """How to train. Sizes come from the notebook's profile; the algorithm never changes.

    ``lr_step_size``/``lr_gamma``: multiply the learning rate by ``lr_gamma`` every
    ``lr_step_size`` steps (ProtoNet's "halve every 2,000 episodes"); None keeps it constant.
    ``lr_linear_decay``: instead, decrease it linearly from ``lr`` to 0 over ``steps``,
    ``lr_t = lr * (1 - t / steps)`` (Reptile's annealed meta step size).
    ``amp``: None = mixed precision on CUDA only; True forces it (bf16 on CPU), False disables.
    ``max_seconds``: stop early once training has taken this long (equal wall-clock budgets for a
    comparison of methods, 06_head_to_head); the history says how many steps were done.
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


@dataclass
class History:
    """Rows of metrics, one per logged step (``step``, ``loss``, ``lr``, ``time_s``,
    ``peak_memory_mb``, anything ``loss_fn`` reports, and ``val_*`` where validated)."""

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


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    choices = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    if config.optimizer not in choices:
        raise ValueError(f"unknown optimizer {config.optimizer!r}: choose one of {', '.join(choices)}")
    return choices[config.optimizer](params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.lr_linear_decay:
        if config.lr_step_size:
            raise ValueError("choose one learning-rate schedule: lr_step_size or lr_linear_decay, not both")
        return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0,
                                                 total_iters=config.steps)
    step_size = config.lr_step_size or config.steps + 1
    gamma = config.lr_gamma if config.lr_step_size else 1.0
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a checkpoint cannot run code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _split_output(output: Tensor | tuple[Tensor, dict[str, float]]) -> tuple[Tensor, dict[str, float]]:
    return output if isinstance(output, tuple) else (output, {})


def train(model: nn.Module,
          loss_fn: Callable[[nn.Module, Any], Tensor | tuple[Tensor, dict[str, float]]],
          sample_batch: Callable[[torch.Generator], Any],
          config: TrainConfig,
          validate: Callable[[nn.Module], dict[str, float]] | None = None) -> History:
    """Meta-train ``model`` for ``config.steps`` steps and return the metrics history.

    Args:
        model: the learner's parameters as a module, already on its device (for Meta-SGD it
            holds the network and the learned inner learning rates).
        loss_fn: ``loss_fn(model, batch)`` -> the loss to minimise, or ``(loss, metrics)``.
        sample_batch: ``sample_batch(generator)`` -> a batch (anything with ``.to(device)``);
            it must draw all its randomness from ``generator`` for exact resume.
        config: see :class:`TrainConfig`.
        validate: ``validate(model)`` -> metrics on fixed validation episodes, logged as
            ``val_<name>`` every ``config.eval_every`` steps and after the last step.

    With ``config.checkpoint_path`` set, an existing checkpoint there is resumed from.
    """
    device = next(model.parameters()).device
    dtype = runtime.amp_dtype(device, config.amp)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    scheduler = make_scheduler(optimizer, config)
    scaler = runtime.grad_scaler(device, dtype)
    generator = runtime.seed_everything(config.seed)
    history, start, elapsed = History(), 0, 0.0

    checkpoint_path = Path(config.checkpoint_path) if config.checkpoint_path else None
    if checkpoint_path is not None and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        generator.set_state(state["generator"])
        runtime.set_rng_state(state["rng"])
        history, start, elapsed = History(state["history"]), state["step"], state["elapsed"]

    def checkpoint(step: int) -> None:
        save_checkpoint(checkpoint_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "generator": generator.get_state(), "rng": runtime.rng_state(),
            "history": history.rows, "step": step, "elapsed": elapsed,
        })

    model.train()
    window: list[dict[str, float]] = []
    started = time.perf_counter() - elapsed
    bar = progress_bar(range(start, config.steps), desc=config.desc, initial=start,
                       total=config.steps, disable=not config.progress)
    for step in bar:
        batch = sample_batch(generator)
        batch = batch.to(device) if hasattr(batch, "to") else batch
        with runtime.autocast(device, dtype):
            loss, metrics = _split_output(loss_fn(model, batch))
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at step {step + 1}: lower the learning rate, "
                "set grad_clip, or check the inputs; checkpoints written so far are intact")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        window.append({"loss": loss.item(), **{k: float(v) for k, v in metrics.items()}})

        done = step + 1
        elapsed = time.perf_counter() - started
        out_of_time = config.max_seconds is not None and elapsed >= config.max_seconds
        last = done == config.steps or out_of_time
        if done % config.log_every == 0 or last:
            row = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            row.update(step=done, lr=scheduler.get_last_lr()[0], time_s=elapsed,
                       peak_memory_mb=peak_memory_mb(device))
            if validate is not None and ((config.eval_every and done % config.eval_every == 0) or last):
                row.update({f"val_{k}": float(v) for k, v in validate(model).items()})
                model.train()
            history.rows.append(row)
            window = []
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k == "loss" or k.startswith("val_")})
        if checkpoint_path is not None and config.checkpoint_every and (
                done % config.checkpoint_every == 0 or last):
            checkpoint(done)
        if out_of_time:
            break
    bar.close()
    return history


def steps_per_second(history: History) -> float:
    """Training throughput over the whole run (steps per wall-clock second)."""
    steps, times = history.series("time_s")
    return steps[-1] / times[-1] if times and times[-1] > 0 else math.nan
