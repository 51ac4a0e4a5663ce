"""Exercise checks of chapter 11 (Monodepth2's changes)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...methods import monodepth2
from .engine import Case, run_check, seeded_generator

__all__ = ["check_min_reprojection", "check_automask"]

F64 = torch.float64


# -- 11.1 the per-pixel minimum --------------------------------------------------------------------


def _ref_min(errors, valid):
    return monodepth2.min_reprojection(errors, valid)[0]


def _min_variant(errors, valid, mean=False, maximum=False, ignore_valid=False, inf_left=False):
    if ignore_valid:
        valid = torch.ones_like(valid)
    if mean:
        v = valid.to(errors.dtype)
        return (errors * v).sum(1, keepdim=True) / v.sum(1, keepdim=True).clamp(min=1.0)
    fill = float("-inf") if maximum else float("inf")
    masked = torch.where(valid, errors, torch.full_like(errors, fill))
    best = masked.amax(1, keepdim=True) if maximum else masked.amin(1, keepdim=True)
    if inf_left:
        return best
    return torch.where(valid.any(1, keepdim=True), best, torch.zeros_like(best))


def check_min_reprojection(student_fn: Callable) -> bool:
    """Exercise 11.1: ``fn(errors (B, S, H, W), valid (B, S, H, W) bool) -> (B, 1, H, W)``: the
    smallest error among the sources whose warp lands inside their image; 0 where none does."""
    g = seeded_generator(111)
    e = torch.rand(2, 2, 5, 7, generator=g, dtype=F64)
    all_valid = torch.ones_like(e, dtype=torch.bool)
    some = torch.rand(2, 2, 5, 7, generator=g) > 0.3
    some[0, :, 0, :3] = False  # a few pixels no source sees
    e4 = torch.rand(1, 4, 6, 6, generator=g, dtype=F64)
    v4 = torch.rand(1, 4, 6, 6, generator=g) > 0.5
    cases = [
        Case("two sources, every warp inside", (e, all_valid)),
        Case("two sources, some warps outside, a few pixels seen by none", (e, some)),
        Case("four sources (5-frame snippets)", (e4, v4)),
    ]
    mistakes = [
        (lambda a, b: _min_variant(a, b, mean=True), "take the minimum over the sources, not their average (that is SfMLearner's loss)"),
        (lambda a, b: _min_variant(a, b, maximum=True), "the MINIMUM: the source that sees the pixel matches it best"),
        (lambda a, b: _min_variant(a, b, ignore_valid=True), "leave out the sources whose warp lands outside their image (valid False)"),
        (lambda a, b: _min_variant(a, b, inf_left=True), "a pixel no source sees gets 0 (it must not count), not infinity"),
    ]
    return run_check("Exercise 11.1 (min_reprojection)", student_fn, _ref_min, cases, mistakes, rtol=0, atol=0)


# -- 11.2 the auto-mask ----------------------------------------------------------------------------


def _ref_automask(reproj, identity):
    return monodepth2.automask(reproj.min(1, keepdim=True)[0], identity.min(1, keepdim=True)[0])


def _auto_variant(reproj, identity, reversed_=False, per_source_any=False, mean_identity=False, same_source=False):
    r = reproj.min(1, keepdim=True)[0]
    i = identity.mean(1, keepdim=True) if mean_identity else identity.min(1, keepdim=True)[0]
    if per_source_any:
        return (reproj < identity).any(1, keepdim=True)
    if same_source:
        j = reproj.argmin(1, keepdim=True)
        i = identity.gather(1, j)
    return r > i if reversed_ else r < i


def check_automask(student_fn: Callable) -> bool:
    """Exercise 11.2: ``fn(reprojection (B, S, H, W), identity (B, S, H, W)) -> (B, 1, H, W) bool``:
    keep a pixel when its smallest reprojection error (with the warp) is below its smallest
    identity error (the sources read in place, without a warp)."""
    g = seeded_generator(112)
    r = torch.rand(2, 2, 6, 8, generator=g, dtype=F64)
    i = torch.rand(2, 2, 6, 8, generator=g, dtype=F64)
    still = r.clone()
    still[:, :, :3] = i[:, :, :3] + 0.2  # the top half "moves with the camera": no warp beats no warp
    r3 = torch.rand(1, 4, 5, 5, generator=g, dtype=F64)
    i3 = torch.rand(1, 4, 5, 5, generator=g, dtype=F64)
    cases = [
        Case("random errors, two sources", (r, i)),
        Case("the top half moves with the camera (every warped error above the identity errors)", (still, i)),
        Case("four sources", (r3, i3)),
    ]
    mistakes = [
        (lambda a, b: _auto_variant(a, b, reversed_=True), "keep the pixels where the warp does BETTER than no warp: reprojection < identity"),
        (lambda a, b: _auto_variant(a, b, per_source_any=True), "compare the minima over the sources, not each source with itself"),
        (lambda a, b: _auto_variant(a, b, mean_identity=True), "take the minimum of the identity errors too (as of the reprojection errors)"),
        (lambda a, b: _auto_variant(a, b, same_source=True), "the identity side is the minimum over ALL sources, not the chosen source's"),
    ]
    return run_check("Exercise 11.2 (automask)", student_fn, _ref_automask, cases, mistakes, rtol=0, atol=0)
