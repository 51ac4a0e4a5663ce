"""What every network of the course shares: the input checks and the parameter count."""

from __future__ import annotations

import torch
import torch.nn as nn

from .._validate import check_tensor

__all__ = ["DIVISOR", "check_image", "check_feature_map", "count_parameters", "network_input_size"]

DIVISOR = 32
"""``H`` and ``W`` of every network input must be multiples of this (five halvings)."""

def check_image(x: object, name: str, channels: int) -> dict[str, int]:
    """Check ``x`` is a ``(B, channels, H, W)`` floating tensor with ``H, W`` multiples of 32.

    Every message names ``name``, what was expected and the received shape (also for a wrong
    dtype, so that the culprit is easy to find among several inputs).
    """
    dims = check_tensor(x, name, ("B", channels, "H", "W"), floating=False)
    assert isinstance(x, torch.Tensor)
    if not x.dtype.is_floating_point:
        raise ValueError(
            f"{name}: expected a floating-point (B, {channels}, H, W) tensor, got dtype "
            f"{x.dtype} with shape {tuple(x.shape)}; convert images with .float() / 255"
        )
    h, w = x.shape[-2:]
    if h <= 0 or w <= 0 or h % DIVISOR or w % DIVISOR:
        raise ValueError(
            f"{name}: expected H and W to be positive multiples of {DIVISOR} (the encoder "
            f"halves the resolution 5 times), got shape {tuple(x.shape)}; resize or crop "
            f"to e.g. ({(max(h, 1) // DIVISOR or 1) * DIVISOR}, "
            f"{(max(w, 1) // DIVISOR or 1) * DIVISOR})"
        )
    return dims


def check_feature_map(x: object, name: str, channels: int) -> dict[str, int]:
    """``(B, channels, h, w)`` floating tensor, any positive ``h, w`` (a feature map)."""
    dims = check_tensor(x, name, ("B", channels, None, None))
    assert isinstance(x, torch.Tensor)
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name}: expected a non-empty feature map, got {tuple(x.shape)}")
    return dims


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (scalars) of ``module``; buffers such as BatchNorm's running
    statistics are not parameters and are not counted.

    With ``trainable_only`` only parameters with ``requires_grad`` count (e.g. after
    freezing an encoder).
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def network_input_size(height: int, width: int) -> tuple[int, int]:
    """The nearest size with both sides multiples of :data:`DIVISOR` (at least one DIVISOR):
    where a network runs an image of another size (predictions are resized back)."""
    return (max(DIVISOR, round(height / DIVISOR) * DIVISOR), max(DIVISOR, round(width / DIVISOR) * DIVISOR))
