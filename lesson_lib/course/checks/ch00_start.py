"""Exercise checks of chapter 00 (start here): the warm-up."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ...data.middlebury import image_to_tensor
from .engine import Case, run_check

__all__ = [
    "check_image_to_tensor",
]


def check_image_to_tensor(student_fn: Callable) -> bool:
    """Exercise 0.1: ``fn(image (H, W, 3) uint8) -> (1, 3, H, W) float32 in [0, 1]``."""
    rng = np.random.default_rng(0)
    cases = [
        Case("a 2x3 image", (rng.integers(0, 256, (2, 3, 3), dtype=np.uint8),)),
        Case("a 5x4 image with pure colours", (np.stack([np.full((5, 4), 255), np.zeros((5, 4)), np.full((5, 4), 51)], -1).astype(np.uint8),)),
    ]
    mistakes = [
        (lambda im: torch.from_numpy(im).permute(2, 0, 1)[None].float(), "divide by 255 to map 0..255 to [0, 1]"),
        (lambda im: torch.from_numpy(im).permute(2, 1, 0)[None].float() / 255, "permute(2, 0, 1) keeps H before W; permute(2, 1, 0) swaps them"),
        (lambda im: torch.from_numpy(im).permute(2, 0, 1).float() / 255, "add the batch dimension in front: (1, 3, H, W)"),
        (lambda im: torch.from_numpy(im[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255, "keep the channel order R, G, B (no BGR flip)"),
    ]
    return run_check("Exercise 0.1 (image_to_tensor)", student_fn, image_to_tensor, cases, mistakes)
