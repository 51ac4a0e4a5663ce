"""Exercise checks of chapter 10 (evaluation)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ... import metrics, trajectory
from ...pose import axis_rotation
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_depth_errors",
    "check_median_scale",
    "check_umeyama",
]

F64 = torch.float64


# -- 10.1 the seven metrics ------------------------------------------------------------------------


def _ref_errors(pred, gt):
    e = metrics.image_depth_errors(pred, gt)
    return torch.tensor([e[k] for k in metrics.METRIC_NAMES], dtype=F64)


def _errors_variant(pred, gt, rel_to_pred=False, no_sqrt=False, log10=False, one_sided=False, sq_abs=False,
                    both_to_pred=False):
    p, g = pred.double(), gt.double()
    d = p - g
    ref = p if rel_to_pred or both_to_pred else g
    ratio = p / g if one_sided else torch.maximum(p / g, g / p)
    log = torch.log10 if log10 else torch.log
    rmse = d.square().mean() if no_sqrt else d.square().mean().sqrt()
    out = [(d.abs() / ref).mean(), (d.square() / (1.0 if sq_abs else (p if both_to_pred else g))).mean(), rmse,
           (log(p) - log(g)).square().mean().sqrt()]
    out += [(ratio < 1.25**k).double().mean() for k in (1, 2, 3)]
    return torch.stack(out)


def check_depth_errors(student_fn: Callable) -> bool:
    """Exercise 10.1: ``fn(pred (N,), gt (N,)) -> (7,)``, the seven metrics of one image's valid
    pixels in the order ``abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3``."""
    g = seeded_generator(101)
    gt = 2.0 + 60.0 * torch.rand(400, generator=g, dtype=F64)
    noisy = gt * torch.exp(0.3 * torch.randn(400, generator=g, dtype=F64))
    far = gt * 1.6
    near = 0.7 * gt
    cases = [
        Case("log-normal errors of 30 % on 400 pixels", (noisy, gt)),
        Case("everything 1.6 times too far (every ratio is 1.6)", (far, gt)),
        Case("everything at 0.7 of the truth (ratio 1/0.7 = 1.43)", (near, gt)),
    ]
    mistakes = [
        (lambda p, t: _errors_variant(p, t, rel_to_pred=True), "relative errors divide by the TRUE depth g, not the prediction"),
        (lambda p, t: _errors_variant(p, t, both_to_pred=True), "relative errors divide by the TRUE depth g, not the prediction"),
        (lambda p, t: _errors_variant(p, t, no_sqrt=True), "RMSE is the square ROOT of the mean squared error"),
        (lambda p, t: _errors_variant(p, t, log10=True), "RMSE log uses the natural logarithm"),
        (lambda p, t: _errors_variant(p, t, one_sided=True),
         "the threshold accuracy uses max(d/g, g/d): too near counts as much as too far"),
        (lambda p, t: _errors_variant(p, t, sq_abs=True), "sq rel divides the squared error by g"),
    ]
    return run_check("Exercise 10.1 (depth_errors)", student_fn, _ref_errors, cases, mistakes, rtol=1e-7, atol=1e-9)


# -- 10.2 median scaling ---------------------------------------------------------------------------


def _ref_median_scale(pred, gt, max_depth):
    valid = (gt > 0) & (gt <= max_depth)
    return pred * gt[valid].median() / pred[valid].median()


def _median_variant(pred, gt, max_depth, mean=False, inverted=False, all_pixels=False):
    valid = torch.ones_like(gt, dtype=torch.bool) if all_pixels else (gt > 0) & (gt <= max_depth)
    stat = (lambda x: x.mean()) if mean else (lambda x: x.median())
    s = stat(gt[valid]) / stat(pred[valid])
    return pred / s if inverted else pred * s


def check_median_scale(student_fn: Callable) -> bool:
    """Exercise 10.2: ``fn(pred (H, W), gt (H, W), max_depth) -> (H, W)``: the prediction times
    ``median(gt) / median(pred)``, both medians over the pixels with ``0 < gt <= max_depth``.
    (Every case has an odd number of such pixels, so every definition of the median agrees.)"""
    g = seeded_generator(102)
    gt = 3.0 + 90.0 * torch.rand(9, 13, generator=g, dtype=F64)
    gt[0, :5] = 0.0  # sky: no ground truth
    gt.view(-1)[torch.randperm(gt.numel(), generator=g)[:6]] = 0.0
    for band in ((0.0, 50.0), (50.0, 80.0)):  # odd count up to 50 m, even count in (50, 80]: both caps odd
        inside = ((gt > band[0]) & (gt <= band[1])).flatten()
        if int(inside.sum()) % 2 == (0 if band[0] == 0.0 else 1):
            gt.view(-1)[int(inside.nonzero()[0])] = 0.0
    pred = 0.05 * gt.clamp(min=1.0) * torch.exp(0.2 * torch.randn(9, 13, generator=g, dtype=F64))
    small = torch.tensor([[4.0, 0.0, 10.0, 13.0], [20.0, 95.0, 8.0, 0.0]], dtype=F64)
    small_pred = torch.tensor([[1.0, 5.0, 2.0, 2.5], [3.0, 0.5, 9.0, 7.0]], dtype=F64)
    cases = [
        Case("a 9 x 13 map in a twentieth of the true scale, sky and holes at 0, depths up to 93 m", (pred, gt, 80.0)),
        Case("the same with the cap at 50 m", (pred, gt, 50.0)),
        Case("a 2 x 4 map: two pixels without truth, one beyond the cap", (small_pred, small, 80.0)),
    ]
    mistakes = [
        (lambda p, t, m: _median_variant(p, t, m, mean=True), "use medians (robust to the far outliers), not means"),
        (lambda p, t, m: _median_variant(p, t, m, inverted=True), "the factor is median(gt) / median(pred): the prediction is MULTIPLIED by it"),
        (lambda p, t, m: _median_variant(p, t, m, all_pixels=True),
         "take both medians over the valid pixels only (0 < gt <= max_depth)"),
    ]
    return run_check("Exercise 10.2 (median_scale)", student_fn, _ref_median_scale, cases, mistakes, rtol=1e-9, atol=1e-12)


# -- 10.3 the 7-DoF alignment ----------------------------------------------------------------------


def _ref_umeyama(source, target):
    s, R, t = trajectory.umeyama_alignment(source, target)
    return torch.tensor(s, dtype=F64), R, t


def _umeyama_variant(source, target, no_reflection_fix=False, transposed=False, norm_ratio=False, t_unscaled=False):
    x, y = source.double(), target.double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    C = yc.T @ xc / x.shape[0]
    U, D, Vh = torch.linalg.svd(C)
    S = torch.eye(3, dtype=F64)
    if not no_reflection_fix and float(torch.det(U) * torch.det(Vh)) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vh
    if transposed:
        R = R.T
    var = xc.square().sum(1).mean()
    s = (yc.square().sum(1).mean() / var).sqrt() if norm_ratio else (D * S.diagonal()).sum() / var
    t = my - (R @ mx if t_unscaled else s * R @ mx)
    return s, R, t


def check_umeyama(student_fn: Callable) -> bool:
    """Exercise 10.3: ``fn(source (N, 3), target (N, 3)) -> (s, R, t)``: the similarity with
    ``target ≈ s R source + t`` in the least-squares sense (``R`` a rotation, ``det R = +1``)."""
    g = seeded_generator(103)
    x = torch.randn(30, 3, generator=g, dtype=F64)
    R = axis_rotation("y", torch.tensor([0.6], dtype=F64))[0] @ axis_rotation("x", torch.tensor([0.25], dtype=F64))[0]
    t = torch.tensor([2.0, -1.0, 4.0], dtype=F64)
    exact = 3.0 * x @ R.T + t
    noisy = exact + 0.2 * torch.randn(30, 3, generator=g, dtype=F64)
    mirrored = x * torch.tensor([1.0, 1.0, -1.0], dtype=F64) + 0.05 * torch.randn(30, 3, generator=g, dtype=F64)
    cases = [
        Case("an exact similarity: s = 3, a rotation about y and x, t = (2, -1, 4)", (x, exact)),
        Case("the same with noise", (x, noisy)),
        Case("a mirror image: no rotation reproduces it, the best one is still a rotation", (x, mirrored)),
    ]
    mistakes = [
        (lambda a, b: _umeyama_variant(a, b, no_reflection_fix=True),
         "when det(U) det(V) < 0 flip the sign of the last singular direction (S = diag(1, 1, -1)): R must not be a reflection"),
        (lambda a, b: _umeyama_variant(a, b, transposed=True), "with C = sum y x^T = U D V^T, R = U S V^T (not its transpose)"),
        (lambda a, b: _umeyama_variant(a, b, norm_ratio=True),
         "the scale is trace(D S) / var(source): the ratio of spreads ignores how well the shapes agree"),
        (lambda a, b: _umeyama_variant(a, b, t_unscaled=True), "t = mean(target) - s R mean(source): the scale too"),
    ]
    return run_check("Exercise 10.3 (umeyama)", student_fn, _ref_umeyama, cases, mistakes, rtol=1e-7, atol=1e-9)
