"""Exercise checks of chapter 05 (stereo by optimisation)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ... import matching
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_lr_consistency",
    "check_wta_subpixel",
]


def _read_right(disp_left, disp_right, sign=-1.0, rounding=False, clamp=False):
    """``d_R`` read at ``x + sign * d_L`` by linear interpolation (or rounding) along the row,
    with the inside mask ``0 <= x + sign * d_L <= W - 1`` (all True with ``clamp``)."""
    w = disp_left.shape[-1]
    x = torch.arange(w, dtype=disp_left.dtype).view(1, 1, 1, w)
    xs = x + sign * disp_left
    inside = (xs >= 0) & (xs <= w - 1)
    if rounding:
        return disp_right.gather(-1, xs.round().clamp(0, w - 1).long()), inside | clamp
    x0 = xs.floor().clamp(0, max(w - 2, 0))
    a = (xs.clamp(0, w - 1) if clamp else xs) - x0
    i0 = x0.long()
    i1 = (i0 + 1).clamp(max=w - 1)
    back = (1 - a) * disp_right.gather(-1, i0) + a * disp_right.gather(-1, i1)
    return back, inside | clamp


def _lr_with(disp_left, disp_right, threshold, sign=-1.0, rounding=False, clamp=False, strict=False, one_sided=False):
    back, inside = _read_right(disp_left, disp_right, sign, rounding, clamp)
    gap = disp_left - back if one_sided else (disp_left - back).abs()
    return inside & ((gap < threshold) if strict else (gap <= threshold))


def _ref_lr_check(disp_left, disp_right, threshold):
    return matching.left_right_check(disp_left, disp_right, threshold)


def _two_layer_maps(w: int = 17, d_bg: float = 2.0, d_fg: float = 6.0, x0: int = 8, x1: int = 13):
    """Exact left and right disparities of a foreground band (left columns ``x0 .. x1 - 1``)
    at ``d_fg`` in front of a background at ``d_bg``, two rows."""
    x = torch.arange(w, dtype=torch.float64)
    d_left = torch.where((x >= x0) & (x < x1), d_fg, d_bg)
    d_right = torch.where((x + d_fg >= x0) & (x + d_fg < x1), d_fg, d_bg)
    return d_left.view(1, 1, 1, w).expand(1, 1, 2, w).clone(), d_right.view(1, 1, 1, w).expand(1, 1, 2, w).clone()


def _lr_cases(seed: int) -> list[Case]:
    g = seeded_generator(seed)
    d_l, d_r = _two_layer_maps()
    # quarter-pixel maps, W - 1 = 16: every read and every gap is exact in float64, and three
    # gaps are exactly 1 px (consistent at threshold 1, not with a strict <)
    q = seeded_generator(0)
    quarter_l = (torch.randint(8, 17, (1, 1, 2, 17), generator=q) / 4).double()
    quarter_r = (torch.randint(8, 17, (1, 1, 2, 17), generator=q) / 4).double()
    rough_l = torch.rand(2, 1, 3, 17, generator=g, dtype=torch.float64) * 6
    rough_r = torch.rand(2, 1, 3, 17, generator=g, dtype=torch.float64) * 6
    smooth_r = torch.linspace(0, 8, 17, dtype=torch.float64).view(1, 1, 1, 17).expand(1, 1, 2, 17).contiguous()
    smooth_l = torch.full((1, 1, 2, 17), 2.6, dtype=torch.float64)
    return [
        Case("a foreground band in front of a background (exact maps, threshold 1)", (d_l, d_r, 1.0)),
        Case("quarter-pixel maps with gaps of exactly 1 px (threshold 1)", (quarter_l, quarter_r, 1.0)),
        Case("random fractional maps, B=2 (threshold 0.5)", (rough_l, rough_r, 0.5)),
        Case("a right map that grows along the row, read between pixels (threshold 0.2)", (smooth_l, smooth_r, 0.2)),
    ]


def check_lr_consistency(student_fn: Callable) -> bool:
    """Exercise 5.1: ``fn(disp_left, disp_right, threshold) -> (B, 1, H, W) bool``: True where
    the left pixel's match ``x - d_L(x)`` lies inside the right image (``0 <= x - d_L <= W - 1``)
    and ``|d_L(x) - d_R(x - d_L(x))| <= threshold``, with ``d_R`` read by linear interpolation
    along the row."""
    mistakes = [
        (lambda a, b, t: _lr_with(a, b, t, sign=1.0), "the left pixel x matches the right pixel x - d_L(x): read d_R there, not at x + d_L"),
        (lambda a, b, t: _lr_with(b, a, t), "read the *right* map at x - d_L(x) and compare it with d_L(x), not the other way round"),
        (lambda a, b, t: _lr_with(a, b, t, strict=True), "a gap equal to the threshold still counts as consistent: use <= threshold"),
        (lambda a, b, t: _lr_with(a, b, t, clamp=True), "a left pixel whose match x - d_L falls outside the right image (x - d_L < 0) has no partner: mark it inconsistent"),
        (lambda a, b, t: _lr_with(a, b, t, rounding=True), "read d_R between pixels by linear interpolation, not at the nearest pixel"),
        (lambda a, b, t: _lr_with(a, b, t, one_sided=True), "compare the size of the gap: |d_L(x) - d_R(x - d_L(x))|"),
        (lambda a, b, t: ~_ref_lr_check(a, b, t), "your mask is inverted: True marks the *consistent* pixels"),
    ]
    return run_check("Exercise 5.1 (lr_consistency)", student_fn, _ref_lr_check, _lr_cases(52), mistakes)


def _ref_wta_subpixel(volume):
    return matching.winner_take_all(volume, subpixel=True)


def _wta_with(volume, offset_fn, handle_ends=True):
    """Winner-take-all plus ``offset_fn(c_minus, c_zero, c_plus)``; the known mistakes vary it."""
    n = volume.shape[1]
    best = volume.argmin(1, keepdim=True)
    cm = volume.gather(1, (best - 1).clamp(min=0))
    c0 = volume.gather(1, best)
    cp = volume.gather(1, (best + 1).clamp(max=n - 1))
    offset = offset_fn(cm, c0, cp)
    if handle_ends:
        offset = torch.where((best > 0) & (best < n - 1), offset, torch.zeros_like(offset))
    return best.to(volume.dtype) + offset


def _parabola_cases(seed: int) -> list[Case]:
    g = seeded_generator(seed)
    d = torch.arange(6, dtype=torch.float64).view(1, 6, 1, 1)
    parabola = torch.cat([(d - 2.3) ** 2, 0.5 * (d - 3.8) ** 2 + 0.1], dim=3)  # minima at 2.3 and 3.8
    ends = torch.tensor([[0.1, 0.4, 0.6, 0.9], [0.9, 0.7, 0.5, 0.2]], dtype=torch.float64).T.reshape(1, 4, 1, 2)
    return [
        Case("one pixel, costs [0.9, 0.4, 0.2, 0.5, 0.8]", (torch.tensor([0.9, 0.4, 0.2, 0.5, 0.8], dtype=torch.float64).view(1, 5, 1, 1),)),
        Case("two pixels whose costs are exact parabolas (minima at 2.3 and 3.8)", (parabola,)),
        Case("winners at the ends of the range (d = 0 and d = D - 1)", (ends,)),
        Case("random costs, B=2, 7 disparities, 3x4 pixels", (torch.rand(2, 7, 3, 4, generator=g, dtype=torch.float64),)),
    ]


def check_wta_subpixel(student_fn: Callable) -> bool:
    """Exercise 5.2: ``fn(volume (B, D, H, W)) -> disparity (B, 1, H, W)``: the winner-take-all
    ``d* = argmin_d C[d]`` plus the minimum of the parabola through ``C[d*-1], C[d*], C[d*+1]``,
    ``(C[d*-1] - C[d*+1]) / (2 (C[d*-1] - 2 C[d*] + C[d*+1]))``; winners at either end of the
    range keep ``d*``. Costs are finite here."""
    mistakes = [
        (lambda v: _wta_with(v, lambda m, z, p: (p - m) / (2 * (m - 2 * z + p))), "the sign is flipped: the minimum moves towards the *cheaper* neighbour, offset = (C[d-1] - C[d+1]) / (2 curvature)"),
        (lambda v: _wta_with(v, lambda m, z, p: (m - p) / (m - 2 * z + p)), "the denominator has a factor 2: offset = (C[d-1] - C[d+1]) / (2 (C[d-1] - 2 C[d] + C[d+1]))"),
        (lambda v: _wta_with(v, lambda m, z, p: (m - p) / (2 * (m - 2 * z + p)), handle_ends=False), "at d* = 0 or d* = D - 1 one neighbour is missing: keep d* there (no parabola)"),
        (lambda v: v.argmin(1, keepdim=True).to(v.dtype), "that is the integer winner only: add the parabola's sub-pixel offset"),
        (lambda v: _wta_with(-v, lambda m, z, p: (p - m) / (2 * (m - 2 * z + p))), "the winner is the disparity of *lowest* cost (argmin), not the highest"),
        (lambda v: _wta_with(v, lambda m, z, p: (m - p) / (2 * (m + p))), "the curvature is C[d-1] - 2 C[d] + C[d+1] (a second difference)"),
    ]
    return run_check("Exercise 5.2 (wta_subpixel)", student_fn, _ref_wta_subpixel, _parabola_cases(51), mistakes, rtol=1e-6, atol=1e-9)
