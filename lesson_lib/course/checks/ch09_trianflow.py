"""Exercise checks of chapter 09 (TrianFlow)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...methods import trianflow
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_ray_angle",
    "check_move_depth",
    "check_top_correspondences",
    "check_scale_registration",
]

F64 = torch.float64


# -- 9.1 the angle between the rays -----------------------------------------------------------------


def _ray_variant(p1, p2, K, R, no_rotation=False, rotate_forward=False, no_kinv=False, radians=False):
    kinv = torch.eye(3, dtype=F64) if no_kinv else torch.linalg.inv(K.double())

    def ray(p):
        return torch.cat([p.double(), torch.ones_like(p[:, :1], dtype=F64)], 1) @ kinv.T

    d1, d2 = ray(p1), ray(p2)
    if not no_rotation:
        d2 = d2 @ R.double().T if rotate_forward else d2 @ R.double()  # rows: (R d)^T = d^T R^T; (R^T d)^T = d^T R
    cos = ((d1 * d2).sum(1) / (d1.norm(dim=1) * d2.norm(dim=1))).clamp(-1.0, 1.0)
    angle = torch.arccos(cos)
    return angle if radians else torch.rad2deg(angle)


def _ref_ray_angle(p1, p2, K, R):
    return trianflow.ray_angle_deg(p1[None], p2[None], K[None], R[None])[0]


def check_ray_angle(student_fn: Callable) -> bool:
    """Exercise 9.1: ``fn(p1 (N, 2), p2 (N, 2), K (3, 3), R (3, 3)) -> (N,)`` degrees: the angle
    between the ray through ``p1`` in camera 1 and the ray through ``p2`` in camera 2, both
    expressed in camera 1's orientation (``K^-1 p1`` and ``R^T K^-1 p2`` for ``X2 = R X1 + t``)."""
    from ...pose import axis_angle_to_matrix

    g = seeded_generator(91)
    K = torch.tensor([[240.0, 0.0, 208.0], [0.0, 240.0, 64.0], [0.0, 0.0, 1.0]], dtype=F64)
    K_off = torch.tensor([[180.0, 0.0, 150.0], [0.0, 200.0, 70.0], [0.0, 0.0, 1.0]], dtype=F64)
    p1 = torch.stack([416 * torch.rand(40, generator=g, dtype=F64), 128 * torch.rand(40, generator=g, dtype=F64)], 1)
    p2 = p1 + 6.0 * torch.randn(40, 2, generator=g, dtype=F64)
    R = axis_angle_to_matrix(torch.tensor([[0.02, -0.09, 0.03]], dtype=F64))[0]
    eye = torch.eye(3, dtype=F64)
    cases = [
        Case("no rotation: the rays of p1 and p2 through one camera", (p1, p2, K, eye)),
        Case("a turn of about 5.6 degrees", (p1, p2, K, R)),
        Case("the same pixel in both views under the turn: the angle is the rotation's", (p1, p1.clone(), K, R)),
        Case("another camera (fx != fy)", (p1, p2, K_off, R)),
    ]
    mistakes = [
        (lambda a, b, k, r: _ray_variant(a, b, k, r, no_rotation=True),
         "the ray of p2 lives in camera 2: turn it into camera 1's orientation (R^T K^-1 p2) before comparing"),
        (lambda a, b, k, r: _ray_variant(a, b, k, r, rotate_forward=True),
         "X2 = R X1 + t: a direction of camera 2 goes back to camera 1 with R^T, not R"),
        (lambda a, b, k, r: _ray_variant(a, b, k, r, no_kinv=True),
         "pixels are not directions: the ray through p is K^-1 [u, v, 1]"),
        (lambda a, b, k, r: _ray_variant(a, b, k, r, radians=True), "return degrees (torch.rad2deg), not radians"),
    ]
    return run_check("Exercise 9.1 (ray_angle)", student_fn, _ref_ray_angle, cases, mistakes, rtol=1e-4, atol=1e-4)


# -- 9.2 where frame 1's depth lands in frame 2 -------------------------------------------------------


def _move_variant(depth, R, t, K, transposed=False, minus_t=False, no_kinv=False, no_divide=False, z_unmoved=False):
    from ...camera import pixel_grid

    h, w = depth.shape
    Rm = R.double().T if transposed else R.double()
    kinv = torch.eye(3, dtype=F64) if no_kinv else torch.linalg.inv(K.double())
    X = (kinv @ pixel_grid(h, w, F64).reshape(3, -1)) * depth.double().reshape(1, -1)
    X2 = Rm @ X + (-1.0 if minus_t else 1.0) * t.double()[:, None]
    q = K.double() @ X2
    uv = q[:2] if no_divide else q[:2] / q[2:]
    z = depth.double().reshape(-1) if z_unmoved else X2[2]
    return uv.reshape(2, h, w), z.reshape(h, w)


def _ref_move_depth(depth, R, t, K):
    uv, z = trianflow.move_depth(depth.double()[None, None], R.double()[None], t.double()[None], K.double()[None])
    return uv[0], z[0, 0]


def check_move_depth(student_fn: Callable) -> bool:
    """Exercise 9.2: ``fn(depth (H, W), R (3, 3), t (3,), K (3, 3)) -> (uv (2, H, W), z (H, W))``:
    every pixel of frame 1 back-projected with its depth, moved by ``X2 = R X1 + t``: where it
    lands in frame 2 (pixels) and its depth there (the ``z'`` of TrianFlow's ``L_pj``)."""
    from ...pose import axis_angle_to_matrix

    g = seeded_generator(92)
    K = torch.tensor([[60.0, 0.0, 31.5], [0.0, 55.0, 19.5], [0.0, 0.0, 1.0]], dtype=F64)
    depth = 4.0 + 16.0 * torch.rand(6, 9, generator=g, dtype=F64)
    R = axis_angle_to_matrix(torch.tensor([[0.03, -0.08, 0.02]], dtype=F64))[0]
    t = torch.tensor([0.2, -0.05, -1.0], dtype=F64)
    eye, zero = torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64)
    cases = [
        Case("no motion: every pixel stays, its depth too", (depth, eye, zero, K)),
        Case("a step forward, no rotation", (depth, eye, t, K)),
        Case("a step and a turn", (depth, R, t, K)),
        Case("a sideways step at one depth", (torch.full((6, 9), 5.0, dtype=F64), eye, torch.tensor([0.5, 0.0, 0.0], dtype=F64), K)),
    ]
    mistakes = [
        (lambda d, r, tt, k: _move_variant(d, r, tt, k, transposed=True), "X2 = R X1 + t: multiply by R, not R^T"),
        (lambda d, r, tt, k: _move_variant(d, r, tt, k, minus_t=True), "add t (X2 = R X1 + t); subtracting it moves the camera the other way"),
        (lambda d, r, tt, k: _move_variant(d, r, tt, k, no_kinv=True),
         "back-project with K^-1: the point is D K^-1 [u, v, 1], not D [u, v, 1]"),
        (lambda d, r, tt, k: _move_variant(d, r, tt, k, no_divide=True), "divide K X2 by its third entry (z') to get pixels"),
        (lambda d, r, tt, k: _move_variant(d, r, tt, k, z_unmoved=True),
         "z' is the moved point's depth (the third entry of R X1 + t), not frame 1's depth"),
    ]
    return run_check("Exercise 9.2 (move_depth)", student_fn, _ref_move_depth, cases, mistakes, rtol=1e-6, atol=1e-8)


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
