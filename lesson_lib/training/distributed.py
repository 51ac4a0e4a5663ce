"""Where a run computes: the device, and the place of this process in a ``torchrun`` launch."""

from __future__ import annotations

import os

import torch

__all__ = ["pick_device", "resolve_device", "distributed_env"]


def pick_device(prefer: str | None = None) -> torch.device:
    """``cuda`` when a GPU is present (or ``prefer`` names a device), else ``cpu``.

    Raises:
        ValueError: ``prefer`` names CUDA but no CUDA GPU is visible (with what to do instead).
    """
    if prefer is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(prefer)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {prefer!r} asked for, but no CUDA GPU is visible; use 'cpu' or 'auto'")
    return device


def distributed_env() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment; ``(0, 0, 1)`` without."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, local, world


def resolve_device(name: str, local_rank: int, distributed: bool) -> torch.device:
    """The device of this process: ``name`` ("auto", "cpu", "cuda"), and under torchrun the
    process's own GPU. Raises ``RuntimeError`` for "cuda" without a visible GPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TrainConfig.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    device = pick_device(None if name == "auto" else name)
    if device.type == "cuda":
        if distributed:
            device = torch.device("cuda", local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device
