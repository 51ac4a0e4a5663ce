"""Exercise checks of chapter 02 (the pinhole camera and motion)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ... import camera, pose
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_project",
    "check_backproject",
    "check_euler_to_matrix",
    "check_invert_pose",
    "check_scale_intrinsics",
]


def _random_K(g: torch.Generator, b: int) -> torch.Tensor:
    f = torch.rand(b, generator=g) * 400 + 300
    K = torch.zeros(b, 3, 3)
    K[:, 0, 0] = f
    K[:, 1, 1] = f * (0.9 + 0.2 * torch.rand(b, generator=g))  # fx != fy catches swaps
    K[:, 0, 2] = 200 + 20 * torch.rand(b, generator=g)
    K[:, 1, 2] = 60 + 10 * torch.rand(b, generator=g)
    K[:, 2, 2] = 1
    return K


def _ref_project(points, K):
    return camera.project_points(points, K)[0]


def check_project(student_fn: Callable) -> bool:
    """Exercise 2.1: ``fn(points (B, 3, N), K (B, 3, 3)) -> uv (B, 2, N)``."""
    g = seeded_generator(21)
    pts = torch.randn(2, 3, 6, generator=g)
    pts[:, 2] = pts[:, 2].abs() * 5 + 2
    cases = [
        Case("a point on the optical axis", (torch.tensor([[[0.0], [0.0], [4.0]]]), _random_K(g, 1))),
        Case("B=2 random points in front of the camera", (pts, _random_K(g, 2))),
    ]
    mistakes = [
        (lambda P, K: (K.transpose(1, 2) @ P)[:, :2] / (K.transpose(1, 2) @ P)[:, 2:], "K is used as is, not transposed: uvw = K @ P"),
        (lambda P, K: (K @ P)[:, :2], "divide by the third coordinate (the depth) to get pixels"),
        (lambda P, K: ((K @ P)[:, :2] / (K @ P)[:, 2:]).flip(1), "u (the column, x) comes first, then v (the row, y)"),
        (lambda P, K: (torch.linalg.inv(K) @ P)[:, :2] / P[:, 2:], "K maps camera coordinates to pixels; K^-1 goes the other way"),
    ]
    return run_check("Exercise 2.1 (project)", student_fn, _ref_project, cases, mistakes)


def check_backproject(student_fn: Callable) -> bool:
    """Exercise 2.2: ``fn(depth (B, 1, H, W), K (B, 3, 3)) -> points (B, 3, H, W)``."""
    g = seeded_generator(22)
    cases = [
        Case("constant depth 2, 3x4 image", (torch.full((1, 1, 3, 4), 2.0), _random_K(g, 1))),
        Case("random depth, B=2, 5x7 image", (torch.rand(2, 1, 5, 7, generator=g) * 10 + 1, _random_K(g, 2))),
    ]

    def y_with_x_intrinsics(depth, K):
        P = camera.backproject(depth, K)
        _, _, h, w = depth.shape
        v = torch.arange(h, dtype=depth.dtype).view(1, h, 1).expand(1, h, w)
        P[:, 1] = (v - K[:, 0, 2].view(-1, 1, 1)) / K[:, 0, 0].view(-1, 1, 1) * depth[:, 0]
        return P

    def no_depth(depth, K):
        return camera.backproject(torch.ones_like(depth), K)

    def uv_swapped(depth, K):
        P = camera.backproject(depth.transpose(2, 3), K).transpose(2, 3)
        return P if P.shape[2:] == depth.shape[2:] else None

    def with_K(depth, K):
        _, _, h, w = depth.shape
        grid = camera.pixel_grid(h, w).reshape(1, 3, -1)
        return ((K @ grid) * depth.reshape(depth.shape[0], 1, -1)).reshape(-1, 3, h, w)

    mistakes = [
        (y_with_x_intrinsics, "the normalised row coordinate is (v - cy) / fy, not (v - cx) / fx"),
        (no_depth, "multiply the ray K^-1 [u, v, 1] by the depth to reach the 3-D point"),
        (with_K, "pixels to rays needs K^-1, not K"),
        (uv_swapped, "u is the column index (x), v the row index (y)"),
    ]
    return run_check("Exercise 2.2 (backproject)", student_fn, camera.backproject, cases, mistakes, rtol=1e-4, atol=1e-5)


def check_euler_to_matrix(student_fn: Callable) -> bool:
    """Exercise 2.4: ``fn(angles (B, 3) [rx, ry, rz] in radians) -> R = Rx @ Ry @ Rz``."""
    g = seeded_generator(23)
    cases = [
        Case("90 degrees about z only", (torch.tensor([[0.0, 0.0, math.pi / 2]]),)),
        Case("90 degrees about x only", (torch.tensor([[math.pi / 2, 0.0, 0.0]]),)),
        Case("B=4 random angles up to 1 rad", ((torch.rand(4, 3, generator=g) * 2 - 1),)),
    ]

    def reversed_order(a):
        return (
            pose.axis_rotation("z", a[:, 2]) @ pose.axis_rotation("y", a[:, 1]) @ pose.axis_rotation("x", a[:, 0])
        )

    mistakes = [
        (lambda a: pose.euler_to_matrix(a).transpose(1, 2), "your matrix is the transpose (the inverse rotation): check the signs of the sines"),
        (reversed_order, "the order is R = Rx @ Ry @ Rz (z is applied to the point first)"),
        (lambda a: pose.euler_to_matrix(a * math.pi / 180), "the angles are already in radians: do not convert them from degrees"),
        (lambda a: pose.euler_to_matrix(a * 180 / math.pi), "sin and cos take radians, and the angles are already in radians: no conversion"),
        (lambda a: pose.euler_to_matrix(-a), "a positive angle turns counter-clockwise about its axis (right-handed): check the sign"),
    ]
    return run_check("Exercise 2.4 (euler_to_matrix)", student_fn, pose.euler_to_matrix, cases, mistakes, rtol=1e-4, atol=1e-5)


def check_invert_pose(student_fn: Callable) -> bool:
    """Exercise 2.5: ``fn(T (B, 4, 4)) -> T^-1`` for rigid poses."""
    g = seeded_generator(24)
    vec = torch.randn(3, 6, generator=g)
    cases = [
        Case("a pure translation", (pose.pose_vector_to_matrix(torch.tensor([[1.0, -2.0, 3.0, 0, 0, 0]])),)),
        Case("B=3 random rigid poses", (pose.pose_vector_to_matrix(vec),)),
    ]

    def minus_t(T):
        return pose.make_pose(T[:, :3, :3].transpose(1, 2), -T[:, :3, 3])

    mistakes = [
        (minus_t, "the new translation is -R^T t, not -t: the translation must be rotated too"),
        (lambda T: T.transpose(1, 2), "transposing the whole 4x4 only inverts the rotation part"),
        (lambda T: pose.make_pose(T[:, :3, :3], -T[:, :3, 3]), "invert the rotation as well: R^-1 = R^T"),
    ]
    return run_check("Exercise 2.5 (invert_pose)", student_fn, pose.invert_pose, cases, mistakes, rtol=1e-4, atol=1e-5)


def check_scale_intrinsics(student_fn: Callable) -> bool:
    """Exercise 2.3: ``fn(K (B, 3, 3), sx, sy) -> K'`` for an image resized by ``sx``, ``sy``."""
    g = seeded_generator(25)
    cases = [
        Case("halve both sides", (_random_K(g, 1), 0.5, 0.5)),
        Case("KITTI 1242x375 -> 416x128", (_random_K(g, 2), 416 / 1242, 128 / 375)),
        Case("double the width only", (_random_K(g, 1), 2.0, 1.0)),
    ]

    def naive(K, sx, sy):
        K2 = K.clone()
        K2[:, 0] *= sx
        K2[:, 1] *= sy
        return K2

    def swapped(K, sx, sy):
        return camera.scale_intrinsics(K, sy, sx)

    def focal_only(K, sx, sy):
        K2 = K.clone()
        K2[:, 0, 0] *= sx
        K2[:, 1, 1] *= sy
        return K2

    mistakes = [
        (naive, "pixel centres sit at integers, so it is the pixel *edges* (u + 0.5) that scale: cx' = sx*(cx + 0.5) - 0.5"),
        (swapped, "sx scales the width (x: fx, cx), sy the height (y: fy, cy)"),
        (focal_only, "the principal point moves too when the image is resized"),
    ]
    return run_check("Exercise 2.3 (scale_intrinsics)", student_fn, camera.scale_intrinsics, cases, mistakes)
