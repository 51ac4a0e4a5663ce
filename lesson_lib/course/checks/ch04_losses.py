"""Exercise checks of chapter 04 (photometric losses)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ... import losses
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_ssim_map",
    "check_photometric_map",
    "check_edge_aware_smoothness",
]


def _image_pairs(seed: int) -> list[Case]:
    g = seeded_generator(seed)
    x = torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64)).clamp(0, 1)
    a = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64)
    b = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64)
    return [Case("a grey 6x7 image and a noisy copy", (x, y)), Case("two random colour images, B=2", (a, b))]


def check_ssim_map(student_fn: Callable) -> bool:
    """Exercise 4.1: ``fn(x, y) -> SSIM (B, C, H, W)`` with 3x3 box windows, reflection padding,
    C1 = 0.01**2, C2 = 0.03**2."""

    def zero_pad(x, y):
        box = lambda t: F.avg_pool2d(F.pad(t, (1, 1, 1, 1)), 3, 1)  # noqa: E731
        return _ssim_with(box, x, y, losses.C1, losses.C2)

    def unsquared(x, y):
        return losses.ssim(x, y, c1=0.01, c2=0.03)

    def no_centering(x, y):
        box = losses.box_filter
        mx, my = box(x), box(y)
        return ((2 * mx * my + losses.C1) * (2 * box(x * y) + losses.C2)) / (
            (mx**2 + my**2 + losses.C1) * (box(x * x) + box(y * y) + losses.C2)
        )

    mistakes = [
        (zero_pad, "pad by reflection (F.pad(..., mode='reflect')), not with zeros: borders differ"),
        (unsquared, "C1 = 0.01**2 and C2 = 0.03**2 (the constants are squared)"),
        (no_centering, "variances and covariance subtract the product of the means: E[xy] - mu_x mu_y"),
        (lambda x, y: losses.ssim(x, y)[..., 1:-1, 1:-1], "keep the image size: pad before the 3x3 mean"),
    ]
    return run_check("Exercise 4.1 (ssim_map)", student_fn, losses.ssim, _image_pairs(41), mistakes, rtol=1e-6, atol=1e-9)


def _ssim_with(box, x, y, c1, c2):
    mx, my = box(x), box(y)
    sxx, syy, sxy = box(x * x) - mx**2, box(y * y) - my**2, box(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))


def check_photometric_map(student_fn: Callable) -> bool:
    """Exercise 4.2: ``fn(pred, target) -> (B, 1, H, W)``:
    ``0.85 * clamp((1 - SSIM) / 2, 0, 1) + 0.15 * |pred - target|``, averaged over channels."""

    def swapped(p, t):
        return losses.photometric_error(p, t, alpha=0.15)

    def no_half(p, t):
        return (0.85 * (1 - losses.ssim(p, t)).clamp(0, 1) + 0.15 * (p - t).abs()).mean(1, keepdim=True)

    mistakes = [
        (swapped, "the weights are 0.85 for the SSIM term and 0.15 for L1"),
        (no_half, "the SSIM term is (1 - SSIM) / 2, clamped to [0, 1]"),
        (lambda p, t: 0.85 * ((1 - losses.ssim(p, t)) / 2).clamp(0, 1) + 0.15 * (p - t).abs(), "average over the colour channels: the result is (B, 1, H, W)"),
        (lambda p, t: losses.photometric_error(p, t, alpha=0.0), "the SSIM term is missing"),
    ]
    return run_check("Exercise 4.2 (photometric_map)", student_fn, losses.photometric_error, _image_pairs(42), mistakes, rtol=1e-6, atol=1e-9)


def check_edge_aware_smoothness(student_fn: Callable) -> bool:
    """Exercise 4.3: ``fn(disparity (B, 1, H, W), image (B, C, H, W)) -> scalar``: first-order
    edge-aware smoothness of the mean-normalised disparity (x and y terms averaged, then added)."""
    g = seeded_generator(43)
    cases = [
        Case("a 6x7 disparity and grey image", (torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64) + 0.2, torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64))),
        Case("B=2, colour image", (torch.rand(2, 1, 5, 8, generator=g, dtype=torch.float64) * 3 + 0.5, torch.rand(2, 3, 5, 8, generator=g, dtype=torch.float64))),
    ]

    def per_channel_weights(d, im):
        d = d / (d.mean((2, 3), keepdim=True) + 1e-7)
        wx = torch.exp(-(im[..., :, 1:] - im[..., :, :-1]).abs())
        wy = torch.exp(-(im[..., 1:, :] - im[..., :-1, :]).abs())
        return ((d[..., :, 1:] - d[..., :, :-1]).abs() * wx).mean() + ((d[..., 1:, :] - d[..., :-1, :]).abs() * wy).mean()

    mistakes = [
        (lambda d, im: losses.smoothness(d, im, normalize=False), "divide the disparity by its mean (per image) first"),
        (lambda d, im: losses.smoothness(d, torch.zeros_like(im)), "weight each gradient by exp(-|image gradient|): that is what makes it edge-aware"),
        (_plus_exp, "the weight is exp(-|dI|), smaller across image edges; yours grows there"),
        (per_channel_weights, "average the image gradient over the colour channels before the exponential"),
    ]
    return run_check("Exercise 4.3 (edge_aware_smoothness)", student_fn, losses.smoothness, cases, mistakes, rtol=1e-6, atol=1e-9)


def _plus_exp(d, im):
    d = d / (d.mean((2, 3), keepdim=True) + 1e-7)
    ix = (im[..., :, 1:] - im[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (im[..., 1:, :] - im[..., :-1, :]).abs().mean(1, keepdim=True)
    return ((d[..., :, 1:] - d[..., :, :-1]).abs() * torch.exp(ix)).mean() + ((d[..., 1:, :] - d[..., :-1, :]).abs() * torch.exp(iy)).mean()
