"""Exercise checks of chapter 08 (two-view geometry)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ... import pose, twoview
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_normalising_transform",
    "check_eight_point",
    "check_ransac",
    "check_four_poses",
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


def _unit(F: torch.Tensor) -> torch.Tensor:
    """``F`` up to scale and sign: unit Frobenius norm, its entry of largest magnitude positive."""
    F = torch.as_tensor(F, dtype=F64)
    F = F / F.norm()
    flat = F.flatten()
    return F * torch.sign(flat[flat.abs().argmax()])


def _eight_point_variant(p1, p2, normalise=True, rank2=True, undo=True, swap=False, vector="last", undo_T=False):
    """The normalised 8-point algorithm with the known mistakes switched on (for the hints)."""
    h = lambda p: torch.cat([p, torch.ones(len(p), 1, dtype=p.dtype)], 1)  # noqa: E731
    if swap:
        p1, p2 = p2, p1
    T1 = twoview.normalising_transform(p1) if normalise else torch.eye(3, dtype=F64)
    T2 = twoview.normalising_transform(p2) if normalise else torch.eye(3, dtype=F64)
    x1, x2 = h(p1) @ T1.T, h(p2) @ T2.T
    A = torch.stack([x2[:, 0] * x1[:, 0], x2[:, 0] * x1[:, 1], x2[:, 0], x2[:, 1] * x1[:, 0], x2[:, 1] * x1[:, 1],
                     x2[:, 1], x1[:, 0], x1[:, 1], torch.ones_like(x1[:, 0])], 1)
    Vh = torch.linalg.svd(A).Vh
    Fn = (Vh[-1] if vector == "last" else Vh[0]).reshape(3, 3)
    if rank2:
        U, S, Vh3 = torch.linalg.svd(Fn)
        Fn = U @ torch.diag(torch.stack([S[0], S[1], torch.zeros_like(S[2])])) @ Vh3
    if not undo:
        return Fn
    return T2 @ Fn @ T1.T if undo_T else T2.T @ Fn @ T1


def check_eight_point(student_fn: Callable) -> bool:
    """Exercise 8.2: ``fn(p1 (N, 2), p2 (N, 2)) -> F (3, 3)``, the normalised 8-point algorithm
    with the rank-2 projection, ``x2^T F x1 = 0``; compared up to scale and sign."""
    g = seeded_generator(82)
    K = torch.tensor([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]], dtype=F64)
    R = pose.axis_angle_to_matrix(torch.tensor([[0.02, -0.05, 0.01]], dtype=F64))[0]
    t = torch.tensor([0.3, 0.0, 1.0], dtype=F64)
    X = torch.rand(60, 3, generator=g, dtype=F64) * torch.tensor([8.0, 4.0, 12.0], dtype=F64) + torch.tensor([-4.0, -2.0, 4.0], dtype=F64)
    p1, p2 = twoview.project_pair(X, K, K, R, t)
    q1 = p1 + 0.5 * torch.randn(p1.shape, generator=g, dtype=F64)
    q2 = p2 + 0.5 * torch.randn(p2.shape, generator=g, dtype=F64)
    R2 = pose.axis_angle_to_matrix(torch.tensor([[0.0, 0.3, 0.0]], dtype=F64))[0]
    s1, s2 = twoview.project_pair(X[:20], K, K, R2, torch.tensor([-1.0, 0.1, 0.2], dtype=F64))
    s1 = s1 + 1.0 * torch.randn(s1.shape, generator=g, dtype=F64)
    s2 = s2 + 1.0 * torch.randn(s2.shape, generator=g, dtype=F64)
    cases = [
        Case("60 exact correspondences of a forward motion", (p1, p2)),
        Case("the same with 0.5 px of noise (the least-squares solution has rank 3)", (q1, q2)),
        Case("20 correspondences of a sideways step and a turn, 1 px of noise", (s1, s2)),
    ]
    mistakes = [
        (lambda a, b: _eight_point_variant(a, b, normalise=False), "normalise each image's points first (exercise 8.1), then undo it"),
        (lambda a, b: _eight_point_variant(a, b, rank2=False), "project the least-squares F to rank 2 (zero its smallest singular value)"),
        (lambda a, b: _eight_point_variant(a, b, undo=False), "undo the normalisation: F = T2^T F_n T1, back in pixels"),
        (lambda a, b: _eight_point_variant(a, b, undo_T=True), "undo the normalisation with F = T2^T F_n T1 (x2^T F x1 = (T2 x2)^T F_n (T1 x1))"),
        (lambda a, b: _eight_point_variant(a, b, swap=True), "that is F transposed: the rows of A are (u2 u1, u2 v1, u2, v2 u1, v2 v1, v2, u1, v1, 1) for x2^T F x1"),
        (lambda a, b: _eight_point_variant(a, b, vector="first"), "f is the right singular vector of the smallest singular value: the last row of Vh"),
    ]
    return run_check("Exercise 8.2 (eight_point)", lambda a, b: _unit(student_fn(a, b)),
                     lambda a, b: _unit(twoview.fundamental_8point(a, b)), cases,
                     [(lambda a, b, f=f: _unit(f(a, b)), hint) for f, hint in mistakes], rtol=1e-6, atol=1e-9)


def _ransac_variant(p1, p2, threshold, confidence, generator, power=True, k_from="best", adaptive=True,
                    draw="randperm", log_of="1-c", keep="best"):
    """The exercise's RANSAC loop with the known mistakes switched on (for the hints)."""
    n = len(p1)
    best_F, best_inl, best_count, k, drawn = None, None, -1, math.inf, 0
    while drawn < min(k, 5000):
        idx = torch.randperm(n, generator=generator)[:8] if draw == "randperm" else torch.randint(n, (8,), generator=generator)
        F = twoview.fundamental_8point(p1[idx], p2[idx])
        inl = twoview.sampson_distance(F, p1, p2) <= threshold
        drawn += 1
        count = int(inl.sum())
        better = count > best_count
        if better or keep == "last":
            best_F, best_inl, best_count = F, inl, max(count, best_count) if keep == "best" else count
        if adaptive and (better or k_from == "current"):
            w = (count if k_from == "current" else best_count) / n
            good = w**8 if power else w
            top = math.log(1 - confidence) if log_of == "1-c" else math.log(confidence)
            k = 1 if good >= 1 else (math.inf if good <= 0 else math.ceil(top / math.log(1 - good)))
    return best_F, best_inl, drawn


def check_ransac(student_fn: Callable) -> bool:
    """Exercise 8.3: ``fn(p1, p2, threshold, confidence, generator) -> (F, inliers, samples)``,
    the RANSAC loop: samples of 8 drawn with ``torch.randperm(N, generator=generator)[:8]``, each
    fitted by ``twoview.fundamental_8point``, scored by the count of Sampson distances
    ``<= threshold``; the best model kept (strictly more inliers replace it) and, after each
    improvement, the number of samples needed ``k = log(1 - confidence) / log(1 - w^8)`` for its
    inlier share ``w``; stop once ``k`` (or 5,000) samples are drawn. Each case is run with a
    fresh generator of the same seed, so a correct loop draws the same samples as the reference."""
    g = seeded_generator(85)
    K = torch.tensor([[450.0, 0, 300], [0, 450, 200], [0, 0, 1]], dtype=F64)
    R = pose.axis_angle_to_matrix(torch.tensor([[0.0, 0.08, 0.0]], dtype=F64))[0]
    X = torch.rand(150, 3, generator=g, dtype=F64) * torch.tensor([10.0, 5.0, 15.0], dtype=F64) + torch.tensor([-5.0, -2.5, 4.0], dtype=F64)

    def scene(t, outliers, noise):
        p1, p2 = twoview.project_pair(X, K, K, R, torch.tensor(t, dtype=F64))
        p1 = p1 + noise * torch.randn(p1.shape, generator=g, dtype=F64)
        p2 = p2 + noise * torch.randn(p2.shape, generator=g, dtype=F64)
        bad = torch.randperm(len(X), generator=g)[: int(outliers * len(X))]
        p2[bad] = torch.rand(len(bad), 2, generator=g, dtype=F64) * torch.tensor([600.0, 400.0], dtype=F64)
        return p1, p2

    cases = [
        Case("150 correspondences, 30 % outliers, no noise", (*scene([0.2, 0.0, -1.0], 0.3, 0.0), 1.0, 0.99, 1)),
        Case("150 correspondences, 40 % outliers, 0.3 px of noise", (*scene([0.5, 0.1, -0.8], 0.4, 0.3), 1.0, 0.99, 2)),
        Case("150 exact correspondences, no outliers (one sample is enough)", (*scene([-0.6, 0.0, -0.5], 0.0, 0.0), 1.0, 0.99, 3)),
    ]

    def seeded(fn):
        def run(p1, p2, thr, conf, seed):
            F, inliers, samples = fn(p1, p2, thr, conf, torch.Generator().manual_seed(seed))
            return _unit(F), inliers, samples  # F up to scale and sign: the learner's own eight_point may scale it differently

        return run

    mistakes = [
        (lambda *a: _ransac_variant(*a, power=False), "a sample is all inliers with probability w^8, not w: k = log(1 - confidence) / log(1 - w**8)"),
        (lambda *a: _ransac_variant(*a, k_from="current"), "compute k from the best model's inlier share, and only when a model improves on the best"),
        (lambda *a: _ransac_variant(*a, adaptive=False), "stop once k samples are drawn: update k from the best inlier share after each improvement"),
        (lambda *a: _ransac_variant(*a, draw="randint"), "draw 8 distinct correspondences with torch.randperm(N, generator=generator)[:8]"),
        (lambda *a: _ransac_variant(*a, log_of="c"), "k = log(1 - confidence) / log(1 - w^8): the probability of failing is 1 - confidence"),
        (lambda *a: _ransac_variant(*a, keep="last"), "keep the model with the most inliers, not the last one drawn"),
    ]
    return run_check("Exercise 8.3 (ransac)", seeded(student_fn), seeded(_ransac_variant), cases,
                     [(seeded(f), hint) for f, hint in mistakes], rtol=1e-9, atol=1e-12)


def _canonical_poses(Rs, ts):
    """Four (R, t) in a fixed order (trace of R, then t's sign), t at unit length: the order of
    the hypotheses, and the length of t, are not part of the answer."""
    Rs = torch.as_tensor(Rs, dtype=F64)
    ts = torch.as_tensor(ts, dtype=F64).reshape(-1, 3)
    ts = ts / ts.norm(dim=1, keepdim=True)
    k = int(ts[0].abs().argmax())
    order = sorted(range(len(Rs)), key=lambda i: (-round(float(torch.diagonal(Rs[i]).sum()), 6), -float(ts[i, k])))
    return Rs[order], ts[order]


def _four_poses_variant(E, fix_det=True, both_W=False, t_from="U", Vh_T=False):
    U, S, Vh = torch.linalg.svd(E)
    if fix_det:
        U = U * torch.sign(torch.linalg.det(U))
        Vh = Vh * torch.sign(torch.linalg.det(Vh))
    W = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=E.dtype)
    V_T = Vh.T if Vh_T else Vh
    R1, R2 = U @ W @ V_T, U @ (W if both_W else W.T) @ V_T
    t = U[:, 2] if t_from == "U" else Vh[2]
    return torch.stack([R1, R1, R2, R2]), torch.stack([t, -t, t, -t])


def check_four_poses(student_fn: Callable) -> bool:
    """Exercise 8.4: ``fn(E (3, 3)) -> (Rs (4, 3, 3), ts (4, 3))``, the four poses an essential
    matrix allows; compared in a fixed order, with ``t`` at unit length."""
    cases = []
    for label, aa, t in (("a turn about y and a step forward", [0.0, 0.3, 0.0], [0.1, 0.0, -1.0]),
                         ("a general small motion", [0.05, -0.1, 0.02], [0.6, -0.2, 0.3]),
                         ("a sideways step, no rotation", [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0])):
        R = pose.axis_angle_to_matrix(torch.tensor([aa], dtype=F64))[0]
        E = twoview.essential_from_pose(R, torch.tensor(t, dtype=F64))
        cases.append(Case(label, (E,)))
        cases.append(Case(label + ", E negated and scaled by 3", (-3.0 * E,)))

    def canon(fn):
        return lambda E: _canonical_poses(*fn(E))

    mistakes = [
        (lambda E: _four_poses_variant(E, fix_det=False), "make U and V rotations (flip the sign of one with determinant -1): otherwise R can be a reflection"),
        (lambda E: _four_poses_variant(E, both_W=True), "the second rotation is U W^T V^T (the twisted pair), not U W V^T again"),
        (lambda E: _four_poses_variant(E, t_from="V"), "t spans E's left null space: the last column of U, not of V"),
        (lambda E: _four_poses_variant(E, Vh_T=True), "torch.linalg.svd returns V^T (Vh): R = U W Vh, not U W Vh^T"),
    ]
    return run_check("Exercise 8.4 (four_poses)", canon(student_fn), canon(twoview.decompose_essential), cases,
                     [(canon(f), hint) for f, hint in mistakes], rtol=1e-7, atol=1e-9)


def check_in_front(student_fn: Callable) -> bool:
    """Exercise 8.5: ``fn(R (3, 3), t (3,), X (N, 3)) -> (N,) bool``: which points (camera 1's
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
    return run_check("Exercise 8.5 (in_front)", student_fn, twoview.in_front, cases, mistakes)


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
    """Exercise 8.6: ``fn(p1 (N, 2), p2 (N, 2), K1, K2, R, t) -> X (N, 3)``: midpoint
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
         "the second ray starts at camera 2's centre O2 = -R^T t, not at camera 1's: it passes through O2 and x2"),
        (lambda *a: _midpoint_variant(*a, origin2="t"), "camera 2's centre in camera 1's frame is O2 = -R^T t, not t"),
        (lambda *a: _midpoint_variant(*a, origin2="-t"), "camera 2's centre in camera 1's frame is O2 = -R^T t: rotate -t by R^T"),
        (lambda *a: _midpoint_variant(*a, rotate=False), "rotate the second ray's direction into camera 1's frame: R^T K2^-1 x2"),
        (lambda *a: _midpoint_variant(*a, rotate="R"), "directions go from camera 2 to camera 1 with R^T, not R"),
        (lambda *a: _midpoint_variant(*a, point="first"), "return the midpoint of the two closest points, not the point on the first ray"),
        (lambda *a: _midpoint_variant(*a, point="second"), "return the midpoint of the two closest points, not the point on the second ray"),
    ]
    return run_check("Exercise 8.6 (midpoint)", student_fn, _midpoint_ref, cases, mistakes, rtol=1e-6, atol=1e-8)
