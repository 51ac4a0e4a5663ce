"""Exercise checks of chapter 09 (TrianFlow)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ...methods import trianflow
from ...models import flow as flow_models
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_cost_volume",
    "check_fb_visible",
    "check_top_correspondences",
    "check_scale_registration",
]

F64 = torch.float64


# -- 9.1 the cost volume ---------------------------------------------------------------------------


def _ref_cost_volume(f1, f2, d):
    return flow_models.cost_volume(f1, f2, d)


def _cost_variant(f1, f2, d, reduce="mean", swap_order=False, opposite=False, wrap=False):
    h, w = f1.shape[-2:]
    out = []
    for a in range(-d, d + 1):
        for b in range(-d, d + 1):
            dv, du = (b, a) if swap_order else (a, b)
            if opposite:
                dv, du = -dv, -du
            if wrap:
                shifted = torch.roll(f2, shifts=(-dv, -du), dims=(-2, -1))
            else:
                shifted = F.pad(f2, (d, d, d, d))[..., d + dv : d + dv + h, d + du : d + du + w]
            prod = f1 * shifted
            out.append(prod.sum(1) if reduce == "sum" else prod.mean(1))
    return torch.stack(out, dim=1)


def check_cost_volume(student_fn: Callable) -> bool:
    """Exercise 9.1: ``fn(f1 (B, C, H, W), f2, d) -> (B, (2d+1)^2, H, W)``, channel
    ``(dv + d)(2d + 1) + (du + d)`` holding ``mean_c f1[c, v, u] f2[c, v + dv, u + du]`` (0 where
    the shifted position leaves ``f2``)."""
    g = seeded_generator(91)
    f1 = torch.randn(2, 5, 6, 9, generator=g, dtype=F64)
    f2 = torch.randn(2, 5, 6, 9, generator=g, dtype=F64)
    shifted = torch.zeros_like(f1)
    shifted[..., 1:, 2:] = f1[..., :-1, :-2]  # f1 moved one row down and two columns right
    cases = [
        Case("random features, search range 1", (f1, f2, 1)),
        Case("random features, search range 2", (f1, f2, 2)),
        Case("f2 = f1 moved by (du, dv) = (2, 1): the peak is channel (1+2)*5 + (2+2)", (f1, shifted, 2)),
    ]
    mistakes = [
        (lambda a, b, d: _cost_variant(a, b, d, reduce="sum"), "average over the channels (PWC-Net's normalisation), do not sum"),
        (lambda a, b, d: _cost_variant(a, b, d, swap_order=True),
         "order the channels with dv in the outer loop and du in the inner one: (dv + d) * (2d + 1) + (du + d)"),
        (lambda a, b, d: _cost_variant(a, b, d, opposite=True),
         "compare f1 at (u, v) with f2 at (u + du, v + dv): the displacement goes into the second image"),
        (lambda a, b, d: _cost_variant(a, b, d, wrap=True),
         "positions outside f2 count as zero: pad with zeros instead of wrapping around (torch.roll)"),
    ]
    return run_check("Exercise 9.1 (cost_volume)", student_fn, _ref_cost_volume, cases, mistakes, rtol=1e-7, atol=1e-9)


# -- 9.2 forward-backward consistency --------------------------------------------------------------


def _ref_fb_visible(fw, bw, a1, a2):
    return trianflow.visible_mask(fw, bw, a1, a2)


def _fb_variant(fw, bw, a1, a2, minus=False, no_warp=False, no_relative=False, no_bw_norm=False):
    bw_at = bw if no_warp else flow_models.flow_warp(bw, fw)[0]
    diff = fw - bw_at if minus else fw + bw_at
    mag = fw.square().sum(1, keepdim=True) + (0.0 if no_bw_norm else bw_at.square().sum(1, keepdim=True))
    bound = (0.0 if no_relative else a1 * mag) + a2
    return diff.square().sum(1, keepdim=True) < bound


def check_fb_visible(student_fn: Callable) -> bool:
    """Exercise 9.2: ``fn(flow_fw (B, 2, H, W), flow_bw, a1, a2) -> (B, 1, H, W) bool``: visible
    where ``|F_f + F_b<F_f>|^2 < a1 (|F_f|^2 + |F_b<F_f>|^2) + a2`` with ``F_b<F_f>`` the backward
    flow read (bilinearly, zeros outside) where the forward flow points."""
    g = seeded_generator(92)
    h, w = 10, 16
    fw = torch.zeros(1, 2, h, w, dtype=F64)
    fw[:, 0] = 3.0  # everything moves 3 columns right
    fw[:, 1] = torch.linspace(-1.0, 1.0, h, dtype=F64)[:, None]
    bw = torch.zeros_like(fw)
    bw[:, 0] = -3.0
    bw[:, 1] = -torch.linspace(-1.0, 1.0, h, dtype=F64)[:, None]
    bw[..., :, : w // 2] += 1.5  # part of frame 2 disagrees: occluded pixels in frame 1
    noise = 4.0 * torch.randn(1, 2, h, w, generator=g, dtype=F64)
    big = torch.zeros(1, 2, h, 4 * w, dtype=F64)
    big[:, 0] = 12.0  # 12 px to the right, inside for the first 52 columns
    big_bw = -big + 0.9 * torch.randn(1, 2, h, 4 * w, generator=g, dtype=F64)
    cases = [
        Case("a shift with a disagreeing left half of frame 2", (fw, bw, 0.01, 0.5)),
        Case("random flows", (noise, torch.roll(-noise, 1, dims=-1), 0.01, 0.5)),
        Case("large motion, the relative tolerance matters", (big, big_bw, 0.01, 0.5)),
        Case("TrianFlow's tolerances replaced: a1 = 0.05, a2 = 1", (fw, bw, 0.05, 1.0)),
    ]
    mistakes = [
        (lambda a, b, x, y: _fb_variant(a, b, x, y, minus=True),
         "a visible pixel comes back: F_f + F_b<F_f> is zero (the backward flow points the other way), not F_f - F_b"),
        (lambda a, b, x, y: _fb_variant(a, b, x, y, no_warp=True),
         "read the backward flow where the forward flow lands (flow_warp), not at the same pixel"),
        (lambda a, b, x, y: _fb_variant(a, b, x, y, no_relative=True), "the tolerance grows with the motion: a1 (|F_f|^2 + |F_b<F_f>|^2) + a2"),
        (lambda a, b, x, y: _fb_variant(a, b, x, y, no_bw_norm=True), "the relative tolerance uses both flows' squared lengths"),
    ]
    return run_check("Exercise 9.2 (fb_visible)", student_fn, _ref_fb_visible, cases, mistakes, rtol=0, atol=0)


# -- 9.3 the most reliable correspondences ---------------------------------------------------------


def _ref_top(flow, score, fraction):
    """All the top ``fraction`` of pixels whose flow stays inside, best first: (N, 2) p1, (N, 2) p2."""
    h, w = flow.shape[-2:]
    v, u = torch.meshgrid(torch.arange(h, dtype=flow.dtype), torch.arange(w, dtype=flow.dtype), indexing="ij")
    p1 = torch.stack([u, v], -1).reshape(-1, 2)
    p2 = p1 + flow.reshape(2, -1).T
    inside = (p2[:, 0] >= 0) & (p2[:, 0] <= w - 1) & (p2[:, 1] >= 0) & (p2[:, 1] <= h - 1)
    s = score.reshape(-1).masked_fill(~inside, -torch.inf)
    k = max(8, int(round(fraction * h * w)))
    idx = s.topk(k).indices
    return torch.stack([p1[idx], p2[idx]])


def _top_variant(flow, score, fraction, swap=False, minus=False, lowest=False, keep_outside=False):
    h, w = flow.shape[-2:]
    f = -flow if minus else flow  # p2 = p1 - flow
    s = -score if lowest else score
    if keep_outside:
        v, u = torch.meshgrid(torch.arange(h, dtype=flow.dtype), torch.arange(w, dtype=flow.dtype), indexing="ij")
        p1 = torch.stack([u, v], -1).reshape(-1, 2)
        idx = s.reshape(-1).topk(max(8, int(round(fraction * h * w)))).indices
        out = torch.stack([p1[idx], p1[idx] + f.reshape(2, -1).T[idx]])
    else:
        out = _ref_top(f, s, fraction)
    return out.flip(-1) if swap else out


def check_top_correspondences(student_fn: Callable) -> bool:
    """Exercise 9.3: ``fn(flow (2, H, W), score (H, W), fraction) -> (2, N, 2)``: ``[p1, p2]``,
    the pixels ``(u, v)`` of the best-scored ``N = round(fraction · H · W)`` correspondences (at
    least 8) among those whose flow lands inside the image, best first, and where the flow
    takes them (``p2 = p1 + flow``)."""
    g = seeded_generator(93)
    h, w = 8, 12
    flow = 3.0 * torch.randn(2, h, w, generator=g, dtype=F64)
    score = torch.rand(h, w, generator=g, dtype=F64)
    still = torch.zeros(2, h, w, dtype=F64)
    still[0] = 1.5
    cases = [
        Case("random flow, the best fifth", (flow, score, 0.2)),
        Case("random flow, the best half", (flow, score, 0.5)),
        Case("a small image region: at least 8 correspondences", (flow, score, 0.01)),
        Case("everything moves 1.5 px right: the last columns leave the image", (still, score, 0.3)),
    ]
    mistakes = [
        (lambda f, s, q: _top_variant(f, s, q, swap=True), "coordinates are (u, v): the column first, then the row"),
        (lambda f, s, q: _top_variant(f, s, q, minus=True), "p2 = p1 + flow: the flow says where the pixel goes"),
        (lambda f, s, q: _top_variant(f, s, q, lowest=True), "keep the highest scores (most reliable), not the lowest"),
        (lambda f, s, q: _top_variant(f, s, q, keep_outside=True),
         "leave out the pixels whose flow lands outside the image before taking the best"),
    ]
    return run_check("Exercise 9.3 (top_correspondences)", student_fn, _ref_top, cases, mistakes, rtol=1e-9, atol=1e-9)


# -- 9.4 scale registration ------------------------------------------------------------------------


def _ref_register(pred, tri):
    return trianflow.register_depth(pred[None], tri[None], torch.ones_like(pred[None], dtype=torch.bool))[0]


def _register_variant(pred, tri, median_only=False, inverted=False, absolute=False, means=False):
    x = pred / tri
    if median_only:
        return (tri / pred).median()
    if inverted:
        return x.square().sum() / x.sum()
    if absolute:  # least squares of the absolute error |c pred - tri|: far points weigh more
        return (pred * tri).sum() / pred.square().sum()
    if means:
        return tri.mean() / pred.mean()
    return x.sum() / x.square().sum()


def check_scale_registration(student_fn: Callable) -> bool:
    """Exercise 9.4: ``fn(pred (N,), tri (N,)) -> c`` (0-d): the factor that brings the network's
    depths ``pred`` to the triangulated ``tri`` by minimising the point loss's relative error,
    ``sum (1 - c pred / tri)^2``: ``c = sum x / sum x^2`` with ``x = pred / tri``."""
    g = seeded_generator(94)
    tri = 1.0 + 9.0 * torch.rand(101, generator=g, dtype=torch.float32)
    noisy = tri / 2.5 * (1 + 0.05 * torch.randn(101, generator=g))
    wild = noisy.clone()
    wild[::10] *= 3.0  # one point in ten triangulated badly
    cases = [
        Case("exact: pred = tri / 2.5", (tri / 2.5, tri)),
        Case("5 % noise", (noisy, tri)),
        Case("5 % noise and 11 wild points", (wild, tri)),
    ]
    mistakes = [
        (lambda p, t: _register_variant(p, t, median_only=True),
         "the median of tri / pred is where the library starts; the factor minimises sum (1 - c x)^2"),
        (lambda p, t: _register_variant(p, t, inverted=True),
         "c multiplies pred: d/dc sum (1 - c x)^2 = 0 gives c = sum x / sum x^2, not its inverse"),
        (lambda p, t: _register_variant(p, t, absolute=True),
         "the point loss is relative, (1 - c pred / tri)^2: absolute least squares weighs the far points more"),
        (lambda p, t: _register_variant(p, t, means=True), "a ratio of means is not the least-squares factor"),
    ]
    return run_check("Exercise 9.4 (scale_registration)", student_fn, _ref_register, cases, mistakes, rtol=1e-5, atol=1e-6)
