"""Exercise checks of chapter 03 (inverse warping)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ... import camera, warping
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_bilinear_at",
    "check_normalize_coords",
    "check_stereo_sampling_grid",
]


def _ref_bilinear_at(image, u, v):
    uv = torch.tensor([[[[u]], [[v]]]], dtype=image.dtype)
    return warping.sample(image[None], uv)[0][0, :, 0, 0]


def check_bilinear_at(student_fn: Callable) -> bool:
    """Exercise 3.1: ``fn(image (C, H, W), u, v) -> (C,)`` bilinear value at column ``u``, row
    ``v`` (pixel centres at integers; the point is inside the image)."""
    g = seeded_generator(31)
    img = torch.rand(2, 5, 7, generator=g, dtype=torch.float64)
    cases = [
        Case("a pixel centre (u=3, v=2)", (img, 3.0, 2.0)),
        Case("between four pixels (u=2.25, v=1.6)", (img, 2.25, 1.6)),
        Case("near the last column (u=5.9, v=3.3)", (img, 5.9, 3.3)),
        Case("3 channels (u=0.7, v=0.2)", (torch.rand(3, 4, 4, generator=g, dtype=torch.float64), 0.7, 0.2)),
    ]
    mistakes = [
        (lambda im, u, v: _ref_bilinear_at(im, v, u), "u is the column (last index), v the row: image[:, v, u]"),
        (lambda im, u, v: im[:, round(v), round(u)], "that is the nearest pixel; weight the four neighbours by their distances"),
        (lambda im, u, v: _ref_bilinear_at(im, u - 0.5, v - 0.5), "pixel centres sit at integer coordinates: no half-pixel offset"),
        (lambda im, u, v: _ref_bilinear_at(im, math.floor(u) + 1 - (u - math.floor(u)), math.floor(v) + 1 - (v - math.floor(v))), "the weight of the left neighbour is 1 - a, where a = u - floor(u); yours are swapped"),
    ]
    return run_check("Exercise 3.1 (bilinear_at)", student_fn, _ref_bilinear_at, cases, mistakes, rtol=1e-6, atol=1e-9)


def _ref_normalize(u, size, align_corners):
    uv = torch.stack([torch.as_tensor(u, dtype=torch.float64), torch.zeros_like(torch.as_tensor(u, dtype=torch.float64))])
    return warping.normalize_pixels(uv[None, :, None], 2, size, align_corners)[0, 0, ..., 0]


def check_normalize_coords(student_fn: Callable) -> bool:
    """Exercise 3.2: ``fn(u, size, align_corners) -> x`` in grid_sample's ``[-1, 1]`` convention."""
    u = torch.tensor([0.0, 0.5, 3.0, 415.0, 207.5], dtype=torch.float64)
    cases = [
        Case("W=416, align_corners=True", (u, 416, True)),
        Case("W=416, align_corners=False", (u, 416, False)),
        Case("W=8, align_corners=False", (torch.tensor([0.0, 7.0, -0.5, 7.5], dtype=torch.float64), 8, False)),
        Case("W=8, align_corners=True", (torch.tensor([0.0, 7.0, 3.5], dtype=torch.float64), 8, True)),
    ]
    mistakes = [
        (lambda u, n, ac: 2 * u / (n - 1) - 1, "with align_corners=False, -1 and 1 are the image *edges*: x = (2u + 1) / W - 1"),
        (lambda u, n, ac: (2 * u + 1) / n - 1, "with align_corners=True, -1 and 1 are the centres of the corner pixels: x = 2u / (W - 1) - 1"),
        (lambda u, n, ac: 2 * u / n - 1, "neither convention: check where u = 0 and u = W - 1 must land"),
        (lambda u, n, ac: (2 * u + 1) / n - 1 if ac else 2 * u / (n - 1) - 1, "the two formulas are swapped: align_corners=True puts the corner pixel centres at -1 and 1"),
    ]
    return run_check("Exercise 3.2 (normalize_coords)", student_fn, _ref_normalize, cases, mistakes, rtol=1e-9, atol=1e-12)


def _ref_stereo_grid(disparity):
    b, _, h, w = disparity.shape
    grid = camera.pixel_grid(h, w, disparity.dtype)[:2][None].expand(b, 2, h, w).clone()
    grid[:, 0] -= disparity[:, 0]
    return grid


def _shift_rows(d):
    g2 = _ref_stereo_grid(d)
    g2[:, 0] += d[:, 0]
    g2[:, 1] -= d[:, 0]
    return g2


def check_stereo_sampling_grid(student_fn: Callable) -> bool:
    """Exercise 3.3: ``fn(disparity (B, 1, H, W)) -> uv (B, 2, H, W)``: where to read the right
    image to rebuild the left one."""
    g = seeded_generator(33)
    cases = [
        Case("constant disparity 2 on a 3x4 map", (torch.full((1, 1, 3, 4), 2.0),)),
        Case("random disparities, B=2, 4x6", (torch.rand(2, 1, 4, 6, generator=g) * 5,)),
    ]

    def plus(d):
        g2 = _ref_stereo_grid(d)
        g2[:, 0] += 2 * d[:, 0]
        return g2

    mistakes = [
        (plus, "the left pixel x matches the right pixel x - d, not x + d"),
        (lambda d: _ref_stereo_grid(d).flip(1), "channel 0 is u (the column), channel 1 is v (the row)"),
        (lambda d: _ref_stereo_grid(d) + 0.5, "pixel centres sit at integer coordinates: no +0.5"),
        (_shift_rows, "the disparity moves the column u; the row v stays the same"),
    ]
    return run_check("Exercise 3.3 (stereo_sampling_grid)", student_fn, _ref_stereo_grid, cases, mistakes)
