"""Where and how the course runs: device, seeds, profiles, mixed precision.

Introduced in 00_orientation. Notebooks never call ``.cuda()``: they ask this module.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")

PROFILES = ("quick", "full")


def get_device(name: str | None = None) -> torch.device:
    """The device to run on: ``name``, else ``$COURSE_DEVICE``, else cuda, then mps, then cpu."""
    name = name or os.environ.get("COURSE_DEVICE")
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
    """

    name: str

    def pick(self, *, quick: T, full: T) -> T:
        return quick if self.name == "quick" else full

    @property
    def is_quick(self) -> bool:
        return self.name == "quick"


def get_profile(name: str | None = None) -> Profile:
    """The profile ``name``, else ``$COURSE_PROFILE``, else ``quick``; an unknown name is an error."""
    name = name or os.environ.get("COURSE_PROFILE") or "quick"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return Profile(name)


def amp_dtype(device: torch.device, enabled: bool | None = None) -> torch.dtype | None:
    """The autocast dtype for ``device``, or None for full precision.

    ``enabled=None`` means: on for CUDA (bf16 where the GPU supports it, else fp16), off elsewhere.
    ``enabled=True`` on a CPU gives bf16 (slow, but it exercises the mixed-precision path).
    """
    if enabled is None:
        enabled = device.type == "cuda"
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A mixed-precision context for ``dtype`` (from :func:`amp_dtype`), or a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A gradient scaler that is active only for fp16, where small gradients would underflow."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def describe(device: torch.device, profile: Profile) -> str:
    """One line for a notebook's setup cell."""
    extra = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return f"device: {device.type}{extra} | profile: {profile.name} | torch {torch.__version__}"
