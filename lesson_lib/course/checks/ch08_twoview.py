"""Exercise checks of chapter 08 (two-view geometry)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ... import pose, twoview
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_normalising_transform",
    "check_rank2_projection",
    "check_in_front",
    "check_midpoint",
]

F64 = torch.float64


def _T(points, scale_of, centre=True, sign=-1.0):
    """A normalising transform built from a chosen scale rule (for the known mistakes)."""
    c = points.mean(0) if centre else torch.zeros(2, dtype=points.dtype)
    s = scale_of(points - points.mean(0))
    return torch.tensor([[s, 0.0, sign * s * c[0]], [0.0, s, sign * s * c[1]], [0.0, 0.0, 1.0]], dtype=points.dtype)


def _per_axis(points):
    c = points.mean(0)
    s = math.sqrt(2) / (points - c).abs().mean(0)
    return torch.tensor([[s[0], 0.0, -s[0] * c[0]], [0.0, s[1], -s[1] * c[1]], [0.0, 0.0, 1.0]], dtype=points.dtype)


def check_normalising_transform(student_fn: Callable) -> bool:
    """Exercise 8.1: ``fn(points (N, 2)) -> T (3, 3)``, Hartley's normalisation: the centroid to
    the origin, the **mean** distance from it ``sqrt(2)``, the same scale on both axes."""
    g = seeded_generator(81)
    wide = torch.rand(40, 2, generator=g, dtype=F64) * torch.tensor([700.0, 60.0], dtype=F64) + torch.tensor([20.0, 200.0], dtype=F64)
    skewed = torch.cat([torch.rand(30, 2, generator=g, dtype=F64) * 20, torch.tensor([[400.0, 300.0], [380.0, 10.0]], dtype=F64)])
    cases = [
        Case("four corners of a 4 x 3 rectangle", (torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0], [4.0, 3.0]], dtype=F64),)),
        Case("40 points in a wide band of a 741 x 500 image", (wide,)),
        Case("a cluster and two far points", (skewed,)),
    ]
    mean_d = lambda q: math.sqrt(2) / float(q.norm(dim=1).mean())  # noqa: E731
    mistakes = [
        (lambda p: _T(p, lambda q: math.sqrt(2) / float(q.norm(dim=1).square().mean().sqrt())),
         "that scales the root-mean-square distance to sqrt(2); Hartley's rule (and this course's) uses the mean distance"),
        (lambda p: _T(p, lambda q: 1.0 / float(q.norm(dim=1).mean())), "the mean distance must become sqrt(2), not 1"),
        (lambda p: _T(p, mean_d, sign=1.0), "the translation moves the centroid to the origin: -s * c, not +s * c"),
        (lambda p: _T(p, mean_d, centre=False), "subtract the centroid: the last column is (-s c_u, -s c_v, 1)"),
        (lambda p: _T(p, lambda q: math.sqrt(2) / float(q.std(0).mean())), "the scale comes from the mean distance to the centroid, not the standard deviation"),
        (lambda p: torch.linalg.inv(twoview.normalising_transform(p)), "that is the inverse: T maps pixels to normalised points"),
        (_per_axis, "use one scale for both axes (isotropic): s = sqrt(2) / mean distance to the centroid"),
    ]
    return run_check("Exercise 8.1 (normalising_transform)", student_fn, twoview.normalising_transform, cases, mistakes,
                     rtol=1e-7, atol=1e-9)


def _rank2_wrong(F, which):
    U, S, Vh = torch.linalg.svd(F)
    if which == "largest":
        S = torch.stack([torch.zeros_like(S[0]), S[1], S[2]])
    elif which == "V":
        S = torch.stack([S[0], S[1], torch.zeros_like(S[2])])
        return U @ torch.diag(S) @ Vh.mT
    elif which == "equal":
        m = (S[0] + S[1]) / 2
        S = torch.stack([m, m, torch.zeros_like(m)])
    elif which == "unit":
        S = torch.stack([S[0], S[1], torch.zeros_like(S[2])])
        out = U @ torch.diag(S) @ Vh
        return out / out.norm()
    return U @ torch.diag(S) @ Vh


def check_rank2_projection(student_fn: Callable) -> bool:
    """Exercise 8.2: ``fn(F (3, 3)) -> (3, 3)``, the closest rank-2 matrix in the Frobenius norm
    (the scale of ``F`` is kept)."""
    g = seeded_generator(82)
    F_true = twoview.fundamental_from_essential(
        twoview.essential_from_pose(pose.axis_angle_to_matrix(torch.tensor([[0.02, -0.05, 0.01]], dtype=F64))[0],
                                    torch.tensor([0.3, 0.0, 1.0], dtype=F64)),
        torch.tensor([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]], dtype=F64),
        torch.tensor([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]], dtype=F64),
    )
    noisy = F_true / F_true.norm() + 1e-3 * torch.randn(3, 3, generator=g, dtype=F64)
    cases = [
        Case("diag(3, 2, 1)", (torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=F64)),)),
        Case("a random full-rank matrix", (torch.randn(3, 3, generator=g, dtype=F64) * 4,)),
        Case("an 8-point estimate with noise (nearly rank 2)", (noisy,)),
    ]
    mistakes = [
        (lambda F: _rank2_wrong(F, "largest"), "zero the smallest singular value (the last of torch.linalg.svd's), not the largest"),
        (lambda F: _rank2_wrong(F, "V"), "torch.linalg.svd returns V^T (Vh): rebuild with U @ diag(S) @ Vh, not Vh transposed"),
        (lambda F: _rank2_wrong(F, "equal"), "that is the projection onto essential matrices (two equal singular values); for F keep s1 and s2"),
        (lambda F: _rank2_wrong(F, "unit"), "keep the scale: do not divide by the norm"),
        (lambda F: torch.cat([F[:2], torch.zeros_like(F[2:])]), "zeroing a row gives rank 2 but not the closest rank-2 matrix: use the SVD"),
    ]
    return run_check("Exercise 8.2 (rank2_projection)", student_fn, twoview.enforce_rank2, cases, mistakes, rtol=1e-7, atol=1e-10)


def check_in_front(student_fn: Callable) -> bool:
    """Exercise 8.3: ``fn(R (3, 3), t (3,), X (N, 3)) -> (N,) bool``: which points (camera 1's
    frame) lie strictly in front of both cameras, with ``X2 = R X1 + t``."""
    g = seeded_generator(83)
    R = pose.axis_angle_to_matrix(torch.tensor([[0.0, 0.6, 0.0]], dtype=F64))[0]  # 34 deg about y
    t = torch.tensor([-2.0, 0.0, 0.5], dtype=F64)
    X = torch.cat([
        torch.rand(30, 3, generator=g, dtype=F64) * torch.tensor([12.0, 4.0, 12.0], dtype=F64) - torch.tensor([6.0, 2.0, 4.0], dtype=F64),
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1e-9], [0.0, 0.0, -1e-9]], dtype=F64),
    ])
    eye = torch.eye(3, dtype=F64)
    cases = [
        Case("identity rotation, camera 2 one unit right; one point in the cameras' plane (z = 0)",
             (eye, torch.tensor([-1.0, 0.0, 0.0], dtype=F64), torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0], [5.0, 0.0, 0.0]], dtype=F64))),
        Case("a 34-degree turn and a sideways step, 33 points", (R, t, X)),
        Case("camera 2 three units ahead (forward motion); one point in camera 2's plane",
             (eye, torch.tensor([0.0, 0.0, -3.0], dtype=F64), torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 4.0], [1.0, 1.0, 3.0]], dtype=F64))),
    ]
    mistakes = [
        (lambda R, t, X: X[:, 2] > 0, "the point must also be in front of camera 2: z2 = (R X + t)_z > 0"),
        (lambda R, t, X: (X @ R.T + t)[:, 2] > 0, "the point must also be in front of camera 1: z1 = X_z > 0"),
        (lambda R, t, X: (X[:, 2] > 0) & ((X @ R + t)[:, 2] > 0), "X2 = R X1 + t: with points as rows that is X @ R.T + t, not X @ R"),
        (lambda R, t, X: (X[:, 2] > 0) & (((X - t) @ R)[:, 2] > 0), "that maps camera-2 points into camera 1; camera 2's coordinates are R X + t"),
        (lambda R, t, X: (X[:, 2] >= 0) & ((X @ R.T + t)[:, 2] >= 0), "strictly in front: a point in a camera's plane (z = 0) is not in front of it"),
        (lambda R, t, X: (X[:, 2] > 0) & ((X @ R.T)[:, 2] > 0), "add t: X2 = R X1 + t"),
    ]
    return run_check("Exercise 8.3 (in_front)", student_fn, twoview.in_front, cases, mistakes)


def _midpoint_ref(p1, p2, K1, K2, R, t):
    return twoview.triangulate_midpoint(p1, p2, K1, K2, R, t)[0]


def _midpoint_variant(p1, p2, K1, K2, R, t, origin2="right", rotate=True, point="mid"):
    """Midpoint triangulation with the known mistakes switched on (for the hints)."""
    h = lambda p: torch.cat([p, torch.ones(len(p), 1, dtype=p.dtype)], 1)  # noqa: E731
    d1 = h(p1) @ torch.linalg.inv(K1).T
    d2 = h(p2) @ torch.linalg.inv(K2).T
    if rotate == "R":
        d2 = d2 @ R.T
    elif rotate:
        d2 = d2 @ R
    O2 = {"right": -(R.T @ t), "zero": torch.zeros(3, dtype=t.dtype), "t": t, "-t": -t}[origin2]
    a, b, c = (d1 * d1).sum(1), (d1 * d2).sum(1), (d2 * d2).sum(1)
    p, q = d1 @ O2, d2 @ O2
    det = a * c - b * b
    l1, l2 = (c * p - b * q) / det, (b * p - a * q) / det
    P1, P2 = l1[:, None] * d1, O2 + l2[:, None] * d2
    return {"mid": (P1 + P2) / 2, "first": P1, "second": P2}[point]


def check_midpoint(student_fn: Callable) -> bool:
    """Exercise 8.4: ``fn(p1 (N, 2), p2 (N, 2), K1, K2, R, t) -> X (N, 3)``: midpoint
    triangulation in camera 1's frame, with ``X2 = R X1 + t``."""
    g = seeded_generator(84)
    K1 = torch.tensor([[500.0, 0, 319.5], [0, 500, 239.5], [0, 0, 1]], dtype=F64)
    K2 = torch.tensor([[620.0, 0, 300.0], [0, 610, 250.0], [0, 0, 1]], dtype=F64)
    R = pose.axis_angle_to_matrix(torch.tensor([[0.05, -0.2, 0.03]], dtype=F64))[0]
    t = torch.tensor([0.6, -0.1, 0.2], dtype=F64)
    X = torch.rand(12, 3, generator=g, dtype=F64) * torch.tensor([4.0, 3.0, 6.0], dtype=F64) + torch.tensor([-2.0, -1.5, 4.0], dtype=F64)
    p1, p2 = twoview.project_pair(X, K1, K2, R, t)
    q1 = p1 + 1.5 * torch.randn(p1.shape, generator=g, dtype=F64)
    q2 = p2 + 1.5 * torch.randn(p2.shape, generator=g, dtype=F64)
    R0 = torch.eye(3, dtype=F64)
    t0 = torch.tensor([-0.5, 0.0, 0.0], dtype=F64)
    X0 = torch.tensor([[0.2, 0.1, 3.0], [-1.0, 0.5, 6.0]], dtype=F64)
    s1, s2 = twoview.project_pair(X0, K1, K1, R0, t0)
    cases = [
        Case("a rectified pair, exact correspondences", (s1, s2, K1, K1, R0, t0)),
        Case("a general pose and two cameras, exact correspondences", (p1, p2, K1, K2, R, t)),
        Case("the same with 1.5 px of noise (the rays miss each other)", (q1, q2, K1, K2, R, t)),
    ]
    mistakes = [
        (lambda *a: _midpoint_variant(*a, origin2="zero"),
         "the second ray starts at camera 2's centre O2 = -R^T t, not at camera 1's (a known erratum: it passes through O2 and x2)"),
        (lambda *a: _midpoint_variant(*a, origin2="t"), "camera 2's centre in camera 1's frame is O2 = -R^T t, not t"),
        (lambda *a: _midpoint_variant(*a, origin2="-t"), "camera 2's centre in camera 1's frame is O2 = -R^T t: rotate -t by R^T"),
        (lambda *a: _midpoint_variant(*a, rotate=False), "rotate the second ray's direction into camera 1's frame: R^T K2^-1 x2"),
        (lambda *a: _midpoint_variant(*a, rotate="R"), "directions go from camera 2 to camera 1 with R^T, not R"),
        (lambda *a: _midpoint_variant(*a, point="first"), "return the midpoint of the two closest points, not the point on the first ray"),
        (lambda *a: _midpoint_variant(*a, point="second"), "return the midpoint of the two closest points, not the point on the second ray"),
    ]
    return run_check("Exercise 8.4 (midpoint)", student_fn, _midpoint_ref, cases, mistakes, rtol=1e-6, atol=1e-8)
