"""Resizing images, shared by every chapter: the pyramid of chapter 05's coarse-to-fine
optimisation and of every network's multi-scale loss (06-11), and the network input size.

Both functions keep the layout ``(B, C, H, W)``. A disparity stored as a *fraction of the width*
(Monodepth's convention) is unchanged by resizing; one in pixels must be multiplied by the width
ratio (:func:`lesson_lib.stereo_opt.upsample_disparity` does that).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import check_tensor

__all__ = ["downsample", "resize"]


def downsample(image: torch.Tensor, scale: int) -> torch.Tensor:
    """The image reduced by ``scale`` (area averaging; size ``round(H / scale), round(W / scale)``).

    Args:
        image: ``(B, C, H, W)`` floating-point.
        scale: a positive integer; 1 returns ``image`` itself.
    """
    check_tensor(image, "image", ("B", "C", "H", "W"))
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    if scale == 1:
        return image
    h, w = image.shape[-2:]
    size = (max(1, round(h / scale)), max(1, round(w / scale)))
    return F.interpolate(image, size=size, mode="area")


def resize(image: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """``image`` ``(B, C, H, W)`` resized to ``size = (h, w)`` (bilinear with antialiasing);
    returned unchanged if it already has that size or ``size`` is None."""
    check_tensor(image, "image", ("B", "C", "H", "W"))
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width) with both >= 1, got {size!r}")
    return F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
