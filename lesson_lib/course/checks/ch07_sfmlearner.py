"""Exercise checks of chapter 07 (SfMLearner)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ... import pose, trajectory, warping
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_source_pixels",
    "check_explainability_loss",
    "check_ate_alignment",
]

F64 = torch.float64


def _ref_source_pixels(depth, T, K):
    uv, _ = warping.rigid_sample_points(depth[None, None], T[None], K[None])
    return uv[0]


def _grid_variant(depth, T, K, offset=0.0, invert=False, transpose=False, no_kinv=False, depth_late=False):
    """Known wrong ways to compute where target pixels land in the source."""
    h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=depth.dtype) + offset, torch.arange(w, dtype=depth.dtype) + offset,
                          indexing="ij")
    p = torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)
    T = torch.linalg.inv(T) if invert else T
    R, t = T[:3, :3], T[:3, 3:]
    R = R.T if transpose else R
    rays = p if no_kinv else torch.linalg.inv(K) @ p
    X = rays * depth.reshape(1, -1)
    q = K @ (R @ (rays if depth_late else X) + t)
    if depth_late:
        q = q * depth.reshape(1, -1)
    return (q[:2] / q[2:]).reshape(2, h, w)


def check_source_pixels(student_fn: Callable) -> bool:
    """Exercise 7.1: ``fn(depth (H, W), T_t_to_s (4, 4), K (3, 3)) -> uv (2, H, W)``: the column
    ``u`` and row ``v`` in the source image where each target pixel lands, ``K T_t_to_s D K^-1 p``
    (pixel centres at integers)."""
    g = seeded_generator(71)
    K = torch.tensor([[80.0, 0.0, 15.5], [0.0, 78.0, 7.5], [0.0, 0.0, 1.0]], dtype=F64)
    depth = 4.0 + 20.0 * torch.rand(16, 32, generator=g, dtype=F64)
    forward = pose.pose_vector_to_matrix(torch.tensor([[0.02, -0.01, -0.8, 0.01, 0.03, -0.005]], dtype=F64))[0]
    turn = pose.pose_vector_to_matrix(torch.tensor([[0.3, 0.05, 0.5, -0.02, -0.08, 0.04]], dtype=F64))[0]
    cases = [
        Case("no motion: every pixel stays where it is", (depth, torch.eye(4, dtype=F64), K)),
        Case("forward 0.8 m, a small rotation", (depth, forward, K)),
        Case("sideways and backwards while turning", (depth, turn, K)),
        Case("a plane at 10 m, the turn", (torch.full((16, 32), 10.0, dtype=F64), turn, K)),
    ]
    mistakes = [
        (lambda d, T, K: _grid_variant(d, T, K, invert=True),
         "that is the pose the other way round: T_t_to_s maps target-frame points into the source frame, use it as it is"),
        (lambda d, T, K: _grid_variant(d, T, K, transpose=True), "R, not R^T: the point moves by X_s = R X_t + t"),
        (lambda d, T, K: _grid_variant(d, T, K, offset=0.5), "pixel centres sit at integer coordinates: no half-pixel offset"),
        (lambda d, T, K: _grid_variant(d, T, K, no_kinv=True), "back-project with K^-1 before applying the depth and the pose"),
        (lambda d, T, K: _grid_variant(d, T, K, depth_late=True),
         "scale the ray by the depth before moving it: the translation must act on the 3-D point D K^-1 p"),
        (lambda d, T, K: _ref_source_pixels(d, T, K).flip(0), "channel 0 is u (the column), channel 1 is v (the row)"),
    ]
    return run_check("Exercise 7.1 (source_pixels)", student_fn, _ref_source_pixels, cases, mistakes, rtol=1e-7, atol=1e-6)


def _ref_explainability_loss(err, logits, valid, weight):
    mask = torch.softmax(logits, dim=1)[:, 1]  # (S, H, W): the "explainable" channel
    v = valid.to(err.dtype)
    synthesis = ((mask * err * v).sum(dim=(1, 2)) / v.sum(dim=(1, 2)).clamp(min=1.0)).sum()
    regulariser = -torch.log_softmax(logits, dim=1)[:, 1].mean(dim=(1, 2)).sum()
    return synthesis + weight * regulariser


def _wrong_loss(err, logits, valid, weight, channel=1, reg="ok", over_all=False):
    mask = torch.softmax(logits, dim=1)[:, channel]
    v = torch.ones_like(err) if over_all else valid.to(err.dtype)
    synthesis = ((mask * err * v).sum(dim=(1, 2)) / v.sum(dim=(1, 2)).clamp(min=1.0)).sum()
    logp = torch.log_softmax(logits, dim=1)
    regulariser = {"ok": -logp[:, 1], "none": torch.zeros_like(err), "flipped": logp[:, 1], "other": -logp[:, 0],
                   "sigmoid": -torch.nn.functional.logsigmoid(logits[:, 1])}[reg].mean(dim=(1, 2)).sum()
    return synthesis + weight * regulariser


def check_explainability_loss(student_fn: Callable) -> bool:
    """Exercise 7.2: ``fn(err (S, H, W), logits (S, 2, H, W), valid (S, H, W) bool, weight) ->
    scalar``: for each source the mean over its **valid** pixels of ``E · err`` (``E``: the
    softmax's channel 1, "explainable"), summed over sources, plus ``weight`` times the
    cross-entropy towards "explainable", ``mean(-log E)`` per source, summed over sources."""
    g = seeded_generator(72)
    err = torch.rand(2, 6, 9, generator=g, dtype=F64)
    logits = 2.0 * torch.randn(2, 2, 6, 9, generator=g, dtype=F64)
    valid = torch.rand(2, 6, 9, generator=g) > 0.3
    cases = [
        Case("two sources, weight 0.2", (err, logits, valid, 0.2)),
        Case("two sources, no regulariser (weight 0)", (err, logits, valid, 0.0)),
        Case("one source, every pixel valid, weight 1", (err[:1], logits[:1], torch.ones(1, 6, 9, dtype=torch.bool), 1.0)),
        Case("a confident mask, weight 0.05", (err, 6.0 * logits, valid, 0.05)),
    ]
    mistakes = [
        (lambda *a: _wrong_loss(*a, channel=0), "the mask is the softmax's channel 1 ('explainable'), not channel 0"),
        (lambda *a: _wrong_loss(*a, reg="none"), "add the regulariser: weight * mean(-log E) for each source"),
        (lambda *a: _wrong_loss(*a, reg="flipped"), "the cross-entropy towards 'explainable' is -log E (it falls as E -> 1), not +log E"),
        (lambda *a: _wrong_loss(*a, reg="other"), "the regulariser pulls towards 'explainable': -log of channel 1, not channel 0"),
        (lambda *a: _wrong_loss(*a, reg="sigmoid"), "E is the softmax over the two logits (sigmoid(l1 - l0)), not sigmoid(l1) alone"),
        (lambda *a: _wrong_loss(*a, over_all=True), "average E * err over the valid pixels only (those that land inside the source)"),
    ]
    return run_check("Exercise 7.2 (explainability_loss)", student_fn, _ref_explainability_loss, cases, mistakes,
                     rtol=1e-7, atol=1e-9)


def _ref_ate(gt, pred):
    err, scale = trajectory.ate_snippets(gt[None], pred[None])
    return torch.stack([err[0], scale[0]])


def _wrong_ate(gt, pred, align=True, scale_rule="ls", rmse=False):
    p = pred - pred[:1] + gt[:1] if align else pred
    if scale_rule == "ls":
        s = (gt * p).sum() / (p * p).sum()
    elif scale_rule == "inverse":
        s = (p * p).sum() / (gt * p).sum()
    elif scale_rule == "norms":
        s = gt.norm() / p.norm()
    else:
        s = torch.ones((), dtype=gt.dtype)
    sq = (s * p - gt).square().sum()
    n = gt.shape[0]
    return torch.stack([(sq / n).sqrt() if rmse else sq.sqrt() / n, s])


def check_ate_alignment(student_fn: Callable) -> bool:
    """Exercise 7.3: ``fn(gt (N, 3), pred (N, 3)) -> (2,)`` tensor ``[error, scale]``: SfMLearner's
    ATE of one snippet, positions in its first camera's frame: align the first frames
    (``p_k - p_0 + g_0``), the least-squares scale ``s = sum g.p / sum p.p``, and
    ``sqrt(sum_k |s p_k - g_k|^2) / N``."""
    g = seeded_generator(73)
    straight = torch.tensor([[0.0, 0, 0], [0, 0, 0.9], [0, 0, 1.9], [0, 0, 3.0], [0, 0.01, 4.2]], dtype=F64)
    turn = torch.cumsum(torch.cat([torch.zeros(1, 3, dtype=F64), torch.rand(4, 3, generator=g, dtype=F64) * torch.tensor([0.4, 0.02, 1.0], dtype=F64)]), 0)
    noisy = turn * 0.3 + 0.05 * torch.randn(5, 3, generator=g, dtype=F64) + torch.tensor([0.2, -0.1, 0.3], dtype=F64)
    cases = [
        Case("a prediction at half the scale", (straight, 0.5 * straight)),
        Case("a turning drive, noisy prediction with its first frame off the origin", (turn, noisy)),
        Case("a 3-frame snippet", (turn[:3], noisy[:3] * 2.0)),
    ]
    mistakes = [
        (lambda a, b: _wrong_ate(a, b, align=False), "first move the prediction so its first frame sits on the truth's: p_k - p_0 + g_0"),
        (lambda a, b: _wrong_ate(a, b, scale_rule="inverse"), "the least-squares scale is sum(g.p) / sum(p.p); yours is its inverse"),
        (lambda a, b: _wrong_ate(a, b, scale_rule="norms"), "the scale minimises sum |s p - g|^2: s = sum(g.p) / sum(p.p), not a ratio of norms"),
        (lambda a, b: _wrong_ate(a, b, scale_rule="none"), "fix the unknown scale of the prediction first (s = sum(g.p) / sum(p.p))"),
        (lambda a, b: _wrong_ate(a, b, rmse=True), "SfMLearner divides the root of the sum by N: sqrt(sum |s p - g|^2) / N, not a root-mean-square"),
    ]
    return run_check("Exercise 7.3 (ate_alignment)", student_fn, _ref_ate, cases, mistakes, rtol=1e-7, atol=1e-10)
