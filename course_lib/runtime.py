"""Where and how the course runs: device, seeds, profiles, mixed precision.

Introduced in 00_orientation. Notebooks never call ``.cuda()``: they ask this module.
"""
from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
import random
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

T = TypeVar("T")

PROFILES = ("quick", "full")


def get_device(name: str | None = None) -> torch.device:
    """The device to run on: ``name``, else ``$COURSE_DEVICE``, else cuda, then mps, then cpu.

    Under ``torchrun`` (``$LOCAL_RANK`` set) a CUDA device without an index is ``cuda:$LOCAL_RANK``: one GPU
    per process, so a notebook run as a script on several GPUs puts each process's model on its own GPU.
    """
    name = name or os.environ.get("COURSE_DEVICE")
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available here")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and all GPUs); return a fresh torch generator seeded alike."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global random state, as tensors and plain Python values (loadable with weights_only)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class Profile:
    """A run profile: ``quick`` (CPU, offline, small) or ``full`` (GPU, real data, paper scale).

    A profile changes sizes and step counts, never the algorithm::

        steps = profile.pick(quick=300, full=60_000)

    ``rehearse``: a rehearsal of the full profile (see :func:`rehearsing`): ``pick`` still answers ``full``.
    """

    name: str
    rehearse: bool = False

    def pick(self, *, quick: T, full: T) -> T:
        return quick if self.name == "quick" else full

    @property
    def is_quick(self) -> bool:
        return self.name == "quick"


# A rehearsal (``python -m course_lib run --rehearse``) runs the full profile's code path with its shapes, on
# the CPU, but every training run stops after REHEARSAL_STEPS steps, every evaluation set holds its first
# REHEARSAL_EPISODES episodes, and a timing repeats its step once: a broken full path fails in CI rather than an
# hour into a Colab session.
REHEARSAL_STEPS = 2
REHEARSAL_EPISODES = 3
REHEARSAL_REPEATS = 1


def rehearsing() -> bool:
    """Whether this process rehearses the full profile: ``$COURSE_REHEARSE`` is ``1`` (the runner's
    ``--rehearse`` sets it for each notebook's kernel); unset or ``0``: no.

    The one switch read by the training loop (stop after ``REHEARSAL_STEPS``), ``fixed_episodes`` (the first
    ``REHEARSAL_EPISODES``), the cost timings (``REHEARSAL_REPEATS``), the report's floors (not asserted after
    a few steps) and the hub loader (the quick profile's offline model when a hub model cannot be loaded),
    all through :func:`rehearsal_cap` where a count is cut.
    """
    value = os.environ.get("COURSE_REHEARSE", "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"COURSE_REHEARSE={value!r}: set it to 1 to rehearse the full profile, or 0 (or unset it)")
    return value == "1"


def rehearsal_cap(count: int, few: int) -> int:
    """``count``, or under a rehearsal (:func:`rehearsing`) at most ``few`` of them: the one rule by which a
    rehearsal cuts steps, episodes and repeats."""
    return min(count, few) if rehearsing() else count


def training_seed() -> int:
    """The seed of a notebook's headline training runs (their initial weights and the order of their training
    tasks): ``$COURSE_SEED``, default 0. ``python -m course_lib seeds`` reruns notebooks with other seeds;
    evaluation episodes keep their own fixed seeds, so every training seed is scored on the same episodes."""
    value = os.environ.get("COURSE_SEED", "").strip() or "0"
    if not value.isdigit():
        raise ValueError(f"COURSE_SEED={value!r}: a training seed is a whole number >= 0 (unset: 0)")
    return int(value)


def checkpoint_path(name: str) -> Path:
    """Where a long run keeps its checkpoint ``name``: ``$COURSE_CHECKPOINTS/name``, else the course's own
    ``checkpoints/`` folder (ignored by git). On Colab the setup cell can point ``COURSE_CHECKPOINTS`` at
    Google Drive, so a run survives a recycled VM. Under a training seed other than 0 (:func:`training_seed`)
    the name carries it: ``03_maml_omniglot-seed1.pt``."""
    folder = os.environ.get("COURSE_CHECKPOINTS")
    if training_seed():   # another training seed is another run: it must not resume seed 0's checkpoint
        name = f"{Path(name).stem}-seed{training_seed()}{Path(name).suffix}"
    return (Path(folder).expanduser() if folder else Path(__file__).resolve().parents[1] / "checkpoints") / name


def get_profile(name: str | None = None) -> Profile:
    """The profile ``name``, else ``$COURSE_PROFILE``, else ``quick``; an unknown name is an error.

    Under a rehearsal (:func:`rehearsing`) the profile is ``full`` with ``rehearse=True``; a rehearsal of the
    quick profile is an error (the quick profile is what CI runs anyway).
    """
    rehearse = rehearsing()
    name = name or os.environ.get("COURSE_PROFILE") or ("full" if rehearse else "quick")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    if rehearse and name != "full":
        raise ValueError(f"COURSE_REHEARSE=1 rehearses the full profile, not {name!r}: "
                         "set COURSE_PROFILE=full, or unset COURSE_REHEARSE")
    return Profile(name, rehearse)


# The first CUDA compute capability with native bf16 arithmetic: Ampere (A100 8.0, RTX 30xx 8.6, L4 8.9),
# Hopper (H100 9.0) and later. Older GPUs (V100 7.0, T4 7.5, Colab's free GPU) emulate bf16 slowly, although
# ``torch.cuda.is_bf16_supported()`` answers True on them, so they train in fp16 with loss scaling.
NATIVE_BF16_CAPABILITY = (8, 0)


def amp_dtype_for(capability: tuple[int, int]) -> torch.dtype:
    """The autocast dtype for a CUDA GPU of compute capability ``(major, minor)``: bf16 where it is native
    (``>= NATIVE_BF16_CAPABILITY``), else fp16 (which needs loss scaling, see :func:`grad_scaler`)."""
    return torch.bfloat16 if tuple(capability) >= NATIVE_BF16_CAPABILITY else torch.float16


def amp_dtype(device: torch.device, enabled: bool | None = None,
              capability: tuple[int, int] | None = None) -> torch.dtype | None:
    """The autocast dtype for ``device``, or None for full precision (fp32).

    ``enabled=None`` means: on for CUDA, off elsewhere. On CUDA the GPU's compute capability decides
    (:func:`amp_dtype_for`; ``capability`` overrides the one ``torch.cuda.get_device_capability`` reports).
    ``enabled=True`` on a CPU gives bf16 (slow, but it exercises the mixed-precision path).
    """
    if enabled is None:
        enabled = device.type == "cuda"
    if not enabled:
        return None
    if device.type == "cuda":
        return amp_dtype_for(capability or torch.cuda.get_device_capability(device))
    return torch.bfloat16


_inner_loss_scale: contextvars.ContextVar[Tensor | float | None] = contextvars.ContextVar(
    "inner_loss_scale", default=None)


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None,
             loss_scale: Tensor | float | None = None) -> Iterator[None]:
    """A mixed-precision context for ``dtype`` (from :func:`amp_dtype`), or a no-op for None.

    ``loss_scale``: under fp16, the factor ``S`` by which inner loops scale their support losses inside
    the block (see :func:`inner_loss_scale`); the training loop passes its gradient scaler's current scale.
    """
    if dtype is None:
        yield
        return
    token = _inner_loss_scale.set(loss_scale if dtype == torch.float16 else None)
    try:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
    finally:
        _inner_loss_scale.reset(token)


def inner_loss_scale() -> Tensor | float | None:
    """The factor ``S`` that an inner loop multiplies its support loss by before taking its gradient (and
    divides the gradient by after): set by :func:`autocast` under fp16, None (no scaling) otherwise.

    Under fp16 a small loss's gradient underflows to exact zeros inside the backward pass (fp16's smallest
    subnormal is ``6e-8``); ``grad(S * L) / S`` is the same gradient with the intermediate values ``S`` times
    larger. bf16 and fp32 have fp32's exponent range and need no scaling.
    """
    return _inner_loss_scale.get()


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A gradient scaler that is active only for fp16, where small gradients would underflow."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def map_tensors(batch: T, fn: Callable[[Tensor], Tensor], other: Callable[[Any], Any] = lambda value: value) -> T:
    """``batch`` rebuilt with ``fn(t)`` in place of every tensor ``t``: a tensor, a dataclass of tensors (episodes
    and the other batch types), a tuple, list or dict of them, nested; anything else goes through ``other``."""
    if isinstance(batch, Tensor):
        return fn(batch)
    if is_dataclass(batch) and not isinstance(batch, type):
        return replace(batch, **{f.name: map_tensors(getattr(batch, f.name), fn, other)
                                 for f in fields(batch) if f.init})
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_tensors(item, fn, other) for item in batch)
    if isinstance(batch, dict):
        return type(batch)((key, map_tensors(value, fn, other)) for key, value in batch.items())
    return other(batch)


def to_device(batch: T, device: torch.device | str | None) -> T:
    """``batch`` with every tensor on ``device`` (None: unchanged), through :func:`map_tensors`; anything else
    with ``.to`` is moved by it.

    From the CPU to a CUDA GPU the tensors go through pinned (page-locked) memory with
    ``non_blocking=True``: the copy runs asynchronously and the host goes on queueing work. A tensor
    already on ``device`` is returned as it is (no copy).
    """
    if device is None:
        return batch
    device = torch.device(device)

    def move(tensor: Tensor) -> Tensor:
        if device.type == "cuda" and tensor.device.type == "cpu" and torch.cuda.is_available():
            tensor = tensor.pin_memory()
        return tensor.to(device, non_blocking=True)

    return map_tensors(batch, move, other=lambda value: value.to(device) if hasattr(value, "to") else value)


def module_device(module: nn.Module) -> torch.device | None:
    """The device of ``module``'s first parameter or buffer; None for a module without tensors."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return None


def describe(device: torch.device, profile: Profile) -> str:
    """One line for a notebook's setup cell."""
    extra = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    rehearsal = (f" (rehearsal: {REHEARSAL_STEPS} steps per training run, {REHEARSAL_EPISODES} episodes per "
                 "evaluation; numbers mean nothing)") if profile.rehearse else ""
    seed = f" | training seed {training_seed()}" if training_seed() else ""
    return f"device: {device.type}{extra} | profile: {profile.name}{rehearsal}{seed} | torch {torch.__version__}"
