"""Meta-batches across processes and GPUs: the tasks of one meta-batch split over the ranks of torch.distributed.

Used by the one training loop (:func:`course_lib.train.train`); run any training script under
``torchrun --nproc_per_node N script.py`` (or ``torchrun --nproc_per_node N -m course_lib train ...``) and
nothing else changes. How a step of ``W`` processes equals a step of one process:

* every rank draws the SAME meta-batch of ``B`` tasks from the same seeded generator and keeps its
  share, the contiguous tasks ``[r*B//W, (r+1)*B//W)`` (:func:`share_of_batch`). Drawing a batch is cheap
  next to adapting to it, and this keeps one generator stream whatever ``W`` is: the tasks of a step
  are those of the single-process run, and a checkpoint resumes under any number of processes;
* every loss of the course is a mean over the meta-batch, ``L = 1/B sum_tau L_tau``, so with
  ``n_r`` tasks on rank ``r`` the meta-gradient is ``grad L = sum_r (n_r / B) grad L_r``: each rank
  weights its gradient by its share and one ``all_reduce`` sums them (:func:`all_reduce_gradients`),
  before clipping and the optimizer step, which every rank then takes alike; the logged loss and
  metrics are the same weighted sums (:func:`all_reduce_mean`);
* every rank starts from rank 0's weights (:func:`broadcast_from_main`) or from the checkpoint;
  only rank 0 writes checkpoints and shows the progress bar.

Where ``WORLD_SIZE`` (set by torchrun) is above 1 and no process group exists yet, :func:`process_group`
creates one from torchrun's environment (``env://``): NCCL for a CUDA model, else gloo. Under torchrun
each process must put its model on its own GPU, ``runtime.get_device()`` (``cuda:$LOCAL_RANK``).
"""
from __future__ import annotations

import atexit
import io
import os
from dataclasses import dataclass
from typing import Any, Iterable, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from . import runtime

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` in ``0..world_size-1`` (1 process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and shows progress (rank 0)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def world_size_from_env() -> int:
    """``$WORLD_SIZE`` as torchrun sets it; 1 where it is not set."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={text!r} is not a number of processes; torchrun sets it for you") from None


def is_main_process() -> bool:
    """Whether this process is rank 0 (of the process group, else of torchrun's ``$RANK``): the one that
    prints and saves."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def process_group(device: torch.device) -> Ranks:
    """This process's :class:`Ranks`: of the existing process group, else of one created from torchrun's
    environment where ``WORLD_SIZE`` > 1 (NCCL for ``device`` on CUDA, else gloo; destroyed at exit), else
    rank 0 of 1."""
    if not dist.is_available():
        return Ranks()
    if not dist.is_initialized():
        if world_size_from_env() <= 1:
            return Ranks()
        missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start "
                               "the script with torchrun --nproc_per_node N, which sets them all")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
        atexit.register(_destroy)
    return Ranks(dist.get_rank(), dist.get_world_size())


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def batch_size(batch: Any) -> int | None:
    """The leading dimension shared by every tensor of ``batch`` (a tensor, a dataclass of tensors, a tuple,
    list or dict of them); None where it holds no tensor. Tensors of different leading sizes are a ValueError."""
    sizes = {t.shape[0] if t.dim() else None for t in _tensors(batch)}
    if None in sizes or len(sizes) > 1:
        raise ValueError("cannot split this batch over processes: its tensors do not share a leading task "
                         f"dimension (leading sizes {sorted(sizes, key=str)}); give every tensor the shape [B, ...]")
    return sizes.pop() if sizes else None


def share_of_batch(batch: T, ranks: Ranks) -> tuple[T, float]:
    """``(share, n_r / B)``: the tasks ``[r*B//W, (r+1)*B//W)`` of a batch of ``B`` (leading dimension),
    for rank ``r`` of ``W``, and the fraction of the batch they are. One process keeps the whole batch."""
    if not ranks.is_distributed:
        return batch, 1.0
    size = batch_size(batch)
    if size is None or size < ranks.world_size:
        raise ValueError(f"a meta-batch of {size} tasks cannot be split over {ranks.world_size} processes: "
                         f"draw at least {ranks.world_size} tasks per step, or start fewer processes")
    lo, hi = ranks.rank * size // ranks.world_size, (ranks.rank + 1) * size // ranks.world_size
    return _slice(batch, lo, hi), (hi - lo) / size


def _tensors(batch: Any) -> list[Tensor]:
    found: list[Tensor] = []
    runtime.map_tensors(batch, lambda tensor: found.append(tensor) or tensor)
    return found


def _slice(batch: Any, lo: int, hi: int) -> Any:
    return runtime.map_tensors(batch, lambda tensor: tensor[lo:hi])


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter], share: float) -> None:
    """``p.grad <- sum_r share_r * p.grad_r`` for every trainable parameter, in one flat ``all_reduce``
    (a parameter a rank's loss did not reach counts as a zero gradient there)."""
    params = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(share)
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g)
        offset += g.numel()


def all_reduce_mean(values: dict[str, Tensor | float], share: float, device: torch.device) -> dict[str, Tensor]:
    """``{name: sum_r share_r * value_r}``: the loss and metrics of the whole meta-batch, as 0-d tensors
    on ``device`` (float64, no host sync); every rank must report the same names."""
    stacked = torch.stack([torch.as_tensor(v, device=device).detach().to(torch.float64).reshape(())
                           for v in values.values()]) * share
    dist.all_reduce(stacked)
    return dict(zip(values, stacked.unbind()))


def broadcast_from_main(tensors: Iterable[Tensor], ranks: Ranks) -> None:
    """Overwrite ``tensors`` (a model's parameters and buffers) in place with rank 0's, so that every rank
    starts from the same weights however it initialised them."""
    if ranks.is_distributed:
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor, src=0)


def main_decides(decision: bool, device: torch.device) -> bool:
    """Rank 0's ``decision`` on every rank (e.g. whether the time budget is spent, by rank 0's clock), so that
    all ranks stop at the same step."""
    flag = torch.tensor([float(decision)], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def barrier(ranks: Ranks) -> None:
    """Wait until every rank is here (nothing to wait for in one process)."""
    if ranks.is_distributed:
        dist.barrier()


def gather_objects(obj: Any, ranks: Ranks) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` for one process). ``obj`` is
    tensors and plain Python values (a random state): sent as ``torch.save`` bytes, read back with
    ``weights_only=True``."""
    if not ranks.is_distributed:
        return [obj]
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    gathered = [None] * ranks.world_size
    dist.all_gather_object(gathered, buffer.getvalue())
    return [torch.load(io.BytesIO(data), weights_only=True) for data in gathered]
