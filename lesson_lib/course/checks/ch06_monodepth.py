"""Exercise checks of chapter 06 (Monodepth)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ... import warping
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_left_right_term",
    "check_post_process",
]


def _lr_term_cases(seed: int) -> list[Case]:
    g = seeded_generator(seed)

    def maps(b, h, w, top):
        return (torch.rand(b, 1, h, w, generator=g, dtype=torch.float64) * top / w,
                torch.rand(b, 1, h, w, generator=g, dtype=torch.float64) * top / w)

    return [
        Case("1x1x5x32 maps, up to 6 px", maps(1, 5, 32, 6.0)),
        Case("B=2, 4x20 maps, up to 3 px", maps(2, 4, 20, 3.0)),
        Case("left and right equal and constant (consistent: 0)", (torch.full((1, 1, 3, 16), 0.125, dtype=torch.float64),) * 2),
    ]


def check_left_right_term(student_fn: Callable) -> bool:
    """Exercise 6.1: ``fn(d_left, d_right) -> scalar``, both ``(B, 1, H, W)`` fractions of the
    width: ``mean|d_l - d_r(x - d_l)| + mean|d_r - d_l(x + d_r)|``, border padding."""
    from ...methods import monodepth

    def warp(src, d, side, pad="border"):
        return warping.stereo_warp(src, d, side, padding_mode=pad)[0]

    def no_pixels(dl, dr):  # fractions used as pixel shifts
        return (dl - warp(dr, dl, "right")).abs().mean() + (dr - warp(dl, dr, "left")).abs().mean()

    def wrong_side(dl, dr):
        w = dl.shape[-1]
        return (dl - warp(dr, dl * w, "left")).abs().mean() + (dr - warp(dl, dr * w, "right")).abs().mean()

    def zero_pad(dl, dr):
        w = dl.shape[-1]
        return (dl - warp(dr, dl * w, "right", "zeros")).abs().mean() + (dr - warp(dl, dr * w, "left", "zeros")).abs().mean()

    def one_way(dl, dr):
        w = dl.shape[-1]
        return (dl - warp(dr, dl * w, "right")).abs().mean()

    mistakes = [
        (no_pixels, "multiply the fractions by the width W to get pixel shifts before sampling"),
        (wrong_side, "d_r is read at x - d_l (the left pixel x matches the right pixel x - d_l), and d_l at x + d_r"),
        (zero_pad, "sample with padding_mode='border', as the paper's sampler does"),
        (one_way, "the term has two halves: left against the sampled right, and right against the sampled left"),
    ]
    return run_check("Exercise 6.1 (left_right_term)", student_fn, monodepth.left_right_consistency, _lr_term_cases(61),
                     mistakes, rtol=1e-6, atol=1e-9)


def check_post_process(student_fn: Callable) -> bool:
    """Exercise 6.2: ``fn(disp, disp_flipped) -> (B, 1, H, W)``: Monodepth's post-processing
    with the ramps ``l = 1 - clip(20 (x - 0.05), 0, 1)`` over ``x`` in ``[0, 1]``."""
    from ...methods import monodepth

    g = seeded_generator(62)
    cases = [
        Case("1x1x4x41 random maps", (torch.rand(1, 1, 4, 41, generator=g, dtype=torch.float64),
                                      torch.rand(1, 1, 4, 41, generator=g, dtype=torch.float64))),
        Case("B=2, 3x100 maps", (torch.rand(2, 1, 3, 100, generator=g, dtype=torch.float64),
                                 torch.rand(2, 1, 3, 100, generator=g, dtype=torch.float64))),
    ]

    def ramps(w, slope=20.0, start=0.05):
        x = torch.linspace(0, 1, w, dtype=torch.float64)
        l = 1 - (slope * (x - start)).clamp(0, 1)
        return l, l.flip(0)

    def no_flip_back(d, df):
        l, r = ramps(d.shape[-1])
        return r * d + l * df + (1 - l - r) * (d + df) / 2

    def swapped(d, df):
        l, r = ramps(d.shape[-1])
        b = df.flip(-1)
        return l * d + r * b + (1 - l - r) * (d + b) / 2

    def average(d, df):
        return (d + df.flip(-1)) / 2

    def ten_percent(d, df):
        l, r = ramps(d.shape[-1], slope=10.0, start=0.0)
        b = df.flip(-1)
        return r * d + l * b + (1 - l - r) * (d + b) / 2

    mistakes = [
        (no_flip_back, "the prediction of the mirrored image is mirrored too: flip it back (along the width) first"),
        (swapped, "on the left edge trust the flipped-back prediction (l multiplies it), on the right edge the plain one"),
        (average, "a plain average keeps the left-edge artefact of the plain prediction: use the ramps at the edges"),
        (ten_percent, "the ramp is 1 up to x = 0.05 and reaches 0 at x = 0.10: l = 1 - clip(20 (x - 0.05), 0, 1)"),
    ]
    return run_check("Exercise 6.2 (post_process)", student_fn, monodepth.post_process, cases, mistakes,
                     rtol=1e-6, atol=1e-9)
