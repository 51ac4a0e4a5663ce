"""Exercise checks: each notebook exercise is followed by a cell that calls one of these.

How a check behaves (chapter 00 explains it to students):

- **Correct**: prints what was tested and returns ``True``.
- **Wrong**: raises :class:`CheckFailed` (an ``AssertionError``) whose message says which case
  failed, which element, what was expected and what came back, plus a hint when the answer
  matches a known mistake (a forgotten ``doffs``, a transposed matrix, degrees for radians...).
- **Not done yet** (the exercise still raises ``NotImplementedError``, as in the student
  version): prints "not implemented yet" and returns ``False``, so *Run All* goes on through
  the chapter (later cells use the library's reference implementation, never the student's).
  Under nbgrader (``NBGRADER_EXECUTION`` is ``autograde`` or ``validate``), or with
  ``LESSON_LIB_STRICT_CHECKS=1``, an unfinished exercise raises :class:`ExerciseNotDone`
  instead, so it scores zero.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import camera, losses, matching, pose, stereo, warping
from .data.middlebury import MiddleburyCalibration, image_to_tensor

__all__ = [
    "CheckFailed",
    "check_image_to_tensor",
    "ExerciseNotDone",
    "check_disparity_to_depth",
    "check_depth_uncertainty",
    "check_middlebury_depth",
    "check_project",
    "check_backproject",
    "check_euler_to_matrix",
    "check_invert_pose",
    "check_scale_intrinsics",
    "check_bilinear_at",
    "check_normalize_coords",
    "check_stereo_sampling_grid",
    "check_ssim_map",
    "check_photometric_map",
    "check_edge_aware_smoothness",
    "check_lr_consistency",
    "check_wta_subpixel",
    "check_ray_box",
]


class CheckFailed(AssertionError):
    """A student's answer is wrong; the message says how."""


class ExerciseNotDone(AssertionError):
    """Raised instead of a friendly notice when grading and the exercise is not done."""


def grading_mode() -> bool:
    """True under nbgrader's autograde / validate runs or with LESSON_LIB_STRICT_CHECKS=1."""
    return os.environ.get("NBGRADER_EXECUTION", "").lower() in {"autograde", "validate"} or (
        os.environ.get("LESSON_LIB_STRICT_CHECKS") == "1"
    )


@dataclass
class Case:
    """One input for a student's function and a human-readable description of it."""

    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)


Mistake = tuple[Callable[..., Any], str]


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(np.asarray(x))


def _flat(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (tuple, list)) else [x]


def _index(flat_i: int, shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat_i, tuple(shape))) if shape else ()


def _describe_mismatch(got: Any, want: Any, rtol: float, atol: float) -> str | None:
    """Return None if ``got`` matches ``want``, else a sentence saying how it differs."""
    gots, wants = _flat(got), _flat(want)
    if len(gots) != len(wants):
        return f"expected {len(wants)} returned value(s), got {len(gots)}"
    for k, (g, w) in enumerate(zip(gots, wants)):
        what = f"returned value {k}: " if len(wants) > 1 else ""
        if g is None:
            return f"{what}got None (did you forget to `return` the result?)"
        try:
            g = _as_tensor(g)
        except (TypeError, ValueError, RuntimeError):
            return f"{what}expected an array/tensor, got {type(g).__name__}"
        w = _as_tensor(w)
        if tuple(g.shape) != tuple(w.shape):
            hint = ""
            if sorted(g.shape) == sorted(w.shape):
                hint = " (the same sizes in another order: transposed or permuted?)"
            return f"{what}expected shape {tuple(w.shape)}, got {tuple(g.shape)}{hint}"
        if w.dtype == torch.bool:
            if g.dtype != torch.bool:
                return f"{what}expected a boolean mask, got dtype {g.dtype}"
            diff = (g != w).flatten()
            if bool(diff.any()):
                i = int(diff.nonzero()[0])
                return (
                    f"{what}{int(diff.sum())} of {diff.numel()} mask entries differ; first at "
                    f"index {_index(i, w.shape)}: expected {bool(w.flatten()[i])}, "
                    f"got {bool(g.flatten()[i])}"
                )
            continue
        g, w = g.double(), w.double()
        same_inf = torch.isinf(w) & (g == w)  # an expected infinity ("no hit") matched exactly
        nonfinite = ~torch.isfinite(g) & ~same_inf
        if bool(nonfinite.any()):
            i = int(nonfinite.flatten().nonzero()[0])
            return (
                f"{what}{int(nonfinite.sum())} entries are inf or NaN, first at index "
                f"{_index(i, g.shape)} (expected {float(w.flatten()[i]):.6g})"
            )
        bad = ~torch.isclose(g, w, rtol=rtol, atol=atol) & ~same_inf
        if bool(bad.any()):
            i = int(bad.flatten().nonzero()[0])
            return (
                f"{what}{int(bad.sum())} of {bad.numel()} entries are off; first at index "
                f"{_index(i, w.shape)}: expected {float(w.flatten()[i]):.6g}, "
                f"got {float(g.flatten()[i]):.6g}"
            )
    return None


def _constant_ratio_hint(got: Any, want: Any) -> str | None:
    try:
        g, w = _as_tensor(_flat(got)[0]).double(), _as_tensor(_flat(want)[0]).double()
    except (TypeError, ValueError, RuntimeError):
        return None
    if g.shape != w.shape or not bool((w.abs() > 1e-9).all()) or g.numel() < 2:
        return None
    ratio = g / w
    if bool(torch.isfinite(ratio).all()) and float(ratio.std()) < 1e-6 * float(ratio.abs().mean()):
        return f"your values are all {float(ratio.mean()):.6g} times the expected ones"
    return None


def run_check(
    exercise: str,
    student_fn: Callable[..., Any],
    reference_fn: Callable[..., Any],
    cases: Sequence[Case],
    mistakes: Sequence[Mistake] = (),
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> bool:
    """Run ``student_fn`` on every case, compare with ``reference_fn`` and give feedback.

    ``mistakes`` are known wrong implementations with a hint each: when the student's output
    matches one of them on a failing case, that hint is added to the message.
    Returns True when all cases pass; False (with a notice) when the exercise is not done
    yet; raises :class:`CheckFailed` otherwise.
    """
    if not callable(student_fn):
        raise CheckFailed(f"{exercise}: expected a function, got {type(student_fn).__name__}")
    for n, case in enumerate(cases, start=1):
        try:
            got = student_fn(*case.args, **case.kwargs)
        except NotImplementedError:
            if grading_mode():
                raise ExerciseNotDone(f"{exercise}: not implemented yet") from None
            print(
                f"[not implemented yet] {exercise}: fill in the exercise cell above (replace "
                f"`raise NotImplementedError()`), run it, then run this check again."
            )
            return False
        except Exception as exc:
            raise CheckFailed(
                f"{exercise}: your function raised {type(exc).__name__}: {exc}\n"
                f"  on case {n} of {len(cases)}: {case.label}"
            ) from exc
        want = reference_fn(*case.args, **case.kwargs)
        problem = _describe_mismatch(got, want, rtol, atol)
        if problem is None:
            continue
        hints = []
        for wrong_fn, hint in mistakes:
            try:
                with np.errstate(all="ignore"):
                    wrong = wrong_fn(*case.args, **case.kwargs)
            except Exception:
                continue
            if _describe_mismatch(got, wrong, rtol, atol) is None:
                hints.append(hint)
        if not hints:
            ratio = _constant_ratio_hint(got, want)
            if ratio:
                hints.append(ratio + " (a unit or a factor is off)")
        msg = f"{exercise}: wrong on case {n} of {len(cases)} ({case.label}):\n  {problem}"
        if hints:
            msg += "\n  Hint: " + "\n  Hint: ".join(hints)
        raise CheckFailed(msg)
    print(f"[passed] {exercise}: all {len(cases)} cases match the reference.")
    return True


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Chapter 00: the warm-up
# ---------------------------------------------------------------------------------------------


def check_image_to_tensor(student_fn: Callable) -> bool:
    """Exercise 0.1: ``fn(image (H, W, 3) uint8) -> (1, 3, H, W) float32 in [0, 1]``."""
    rng = np.random.default_rng(0)
    cases = [
        Case("a 2x3 image", (rng.integers(0, 256, (2, 3, 3), dtype=np.uint8),)),
        Case("a 5x4 image with pure colours", (np.stack([np.full((5, 4), 255), np.zeros((5, 4)), np.full((5, 4), 51)], -1).astype(np.uint8),)),
    ]
    mistakes = [
        (lambda im: torch.from_numpy(im).permute(2, 0, 1)[None].float(), "divide by 255 to map 0..255 to [0, 1]"),
        (lambda im: torch.from_numpy(im).permute(2, 1, 0)[None].float() / 255, "permute(2, 0, 1) keeps H before W; permute(2, 1, 0) swaps them"),
        (lambda im: torch.from_numpy(im).permute(2, 0, 1).float() / 255, "add the batch dimension in front: (1, 3, H, W)"),
        (lambda im: torch.from_numpy(im[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255, "keep the channel order R, G, B (no BGR flip)"),
    ]
    return run_check("Exercise 0.1 (image_to_tensor)", student_fn, image_to_tensor, cases, mistakes)


# ---------------------------------------------------------------------------------------------
# Chapter 01: stereo
# ---------------------------------------------------------------------------------------------


def _ref_disparity_to_depth(d, focal, baseline, doffs):
    return stereo.disparity_to_depth(d, focal, baseline, doffs, min_depth=1e-9, max_depth=1e12)


def check_disparity_to_depth(student_fn: Callable) -> bool:
    """Exercise 1.1: ``fn(disparity, focal, baseline, doffs) -> depth``, ``Z = f B / (d + doffs)``."""
    g = _gen(1)
    cases = [
        Case("KITTI-like: f=721 px, B=0.54 m, doffs=0", (torch.tensor([1.0, 10.0, 54.0, 100.0]), 721.0, 0.54, 0.0)),
        Case("Middlebury: f=995 px, B=0.193 m, doffs=31.1 px", (torch.rand(2, 1, 3, 4, generator=g) * 60 + 5, 994.978, 0.193001, 31.086)),
        Case("f=500 px, B=0.1 m, doffs=2 px", (torch.tensor([0.5, 3.0, 8.0]), 500.0, 0.1, 2.0)),
    ]
    mistakes = [
        (lambda d, f, b, o: f * b / d, "you left out doffs: Z = f*B / (d + doffs)"),
        (lambda d, f, b, o: f * b / (d - o), "doffs is added to the disparity, not subtracted"),
        (lambda d, f, b, o: f * b / d + o, "doffs belongs in the denominator, with d (it is in pixels)"),
        (lambda d, f, b, o: (d + o) / (f * b), "that is 1/Z: depth is f*B divided by the disparity"),
        (lambda d, f, b, o: f * b * 1000 / (d + o), "B is in metres here; depth should come out in metres"),
    ]
    return run_check("Exercise 1.1 (disparity_to_depth)", student_fn, _ref_disparity_to_depth, cases, mistakes)


def _ref_depth_uncertainty(Z, focal, baseline, disparity_error):
    return stereo.depth_error_from_disparity_error(Z, focal, baseline, disparity_error)


def check_depth_uncertainty(student_fn: Callable) -> bool:
    """Exercise 1.2: ``fn(depth, focal, baseline, disparity_error) -> dZ = Z**2 dd / (f B)``."""
    cases = [
        Case("f=721 px, B=0.54 m, 1 px", (torch.tensor([2.0, 10.0, 40.0, 80.0]), 721.0, 0.54, 1.0)),
        Case("f=995 px, B=0.193 m, 0.25 px", (torch.tensor([2.1, 3.5, 5.0]), 994.978, 0.193001, 0.25)),
        Case("f=300 px, B=2.0 m, 0.5 px", (torch.tensor([[1.0, 50.0], [100.0, 7.0]]), 300.0, 2.0, 0.5)),
    ]
    mistakes = [
        (lambda z, f, b, e: z * e / (f * b), "the error grows with Z squared: differentiate Z = f*B/d and substitute d = f*B/Z"),
        (lambda z, f, b, e: z**2 * e * f / b, "f and B both sit in the denominator: dZ = Z^2 dd / (f*B)"),
        (lambda z, f, b, e: f * b * e / z**2, "that is the disparity change for a depth change; invert the roles"),
        (lambda z, f, b, e: -(z**2) * e / (f * b), "report the size of the error (positive)"),
    ]
    return run_check("Exercise 1.2 (depth_uncertainty)", student_fn, _ref_depth_uncertainty, cases, mistakes)


def _ref_middlebury_depth(disparity: np.ndarray, calib: MiddleburyCalibration):
    valid = np.isfinite(disparity)
    d = np.where(valid, disparity, 0.0)
    depth = np.where(valid, calib.focal * calib.baseline / (d + calib.doffs), 0.0)
    return torch.from_numpy(depth), torch.from_numpy(valid)


def check_middlebury_depth(student_fn: Callable, disparity: np.ndarray) -> bool:
    """Exercise 1.3: ``fn(disparity, calib) -> (depth, valid)`` on Middlebury's raw disparity
    (``+inf`` = no ground truth): depth in metres, 0 where invalid, and the boolean mask."""
    calib = MiddleburyCalibration()
    tiny = np.array([[10.0, np.inf], [0.0, 40.0]], dtype=np.float32)
    cases = [
        Case("a 2x2 map with one +inf", (tiny, calib)),
        Case("the real Motorcycle disparity (500x741)", (np.asarray(disparity), calib)),
    ]

    def no_doffs(d, c):
        v = np.isfinite(d)
        return np.where(v, c.focal * c.baseline / np.where(v, d, 1.0), 0.0), v

    def millimetres(d, c):
        z, v = _ref_middlebury_depth(d, c)
        return z * 1000, v

    def inf_kept_valid(d, c):
        z = c.focal * c.baseline / (d + c.doffs)
        return z, np.ones_like(d, dtype=bool)

    mistakes = [
        (no_doffs, "Middlebury's disparities need doffs: Z = f*B / (d + doffs)"),
        (millimetres, "give the depth in metres (the baseline is 0.193 m)"),
        (inf_kept_valid, "+inf marks pixels without ground truth: they are not valid (and f*B/inf = 0 is not a depth)"),
    ]
    return run_check("Exercise 1.3 (middlebury_depth)", student_fn, _ref_middlebury_depth, cases, mistakes, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Chapter 02: camera and motion
# ---------------------------------------------------------------------------------------------


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
    g = _gen(21)
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
    g = _gen(22)
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
    g = _gen(23)
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
    g = _gen(24)
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
    g = _gen(25)
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


# ---------------------------------------------------------------------------------------------
# Chapter 03: inverse warping
# ---------------------------------------------------------------------------------------------


def _ref_bilinear_at(image, u, v):
    uv = torch.tensor([[[[u]], [[v]]]], dtype=image.dtype)
    return warping.sample(image[None], uv)[0][0, :, 0, 0]


def check_bilinear_at(student_fn: Callable) -> bool:
    """Exercise 3.1: ``fn(image (C, H, W), u, v) -> (C,)`` bilinear value at column ``u``, row
    ``v`` (pixel centres at integers; the point is inside the image)."""
    g = _gen(31)
    img = torch.rand(2, 5, 7, generator=g, dtype=torch.float64)
    cases = [
        Case("a pixel centre (u=3, v=2)", (img, 3.0, 2.0)),
        Case("between four pixels (u=2.25, v=1.6)", (img, 2.25, 1.6)),
        Case("near the last column (u=5.9, v=3.3)", (img, 5.9, 3.3)),
        Case("3 channels (u=0.7, v=0.2)", (torch.rand(3, 4, 4, generator=g, dtype=torch.float64), 0.7, 0.2)),
    ]
    mistakes = [
        (lambda im, u, v: _ref_bilinear_at(im, v, u), "u is the column (last index), v the row: image[:, v, u]"),
        (lambda im, u, v: im[:, round(v), round(u)], "that is the nearest pixel; weight the four neighbours by their distances"),
        (lambda im, u, v: _ref_bilinear_at(im, u - 0.5, v - 0.5), "pixel centres sit at integer coordinates: no half-pixel offset"),
        (lambda im, u, v: _ref_bilinear_at(im, math.floor(u) + 1 - (u - math.floor(u)), math.floor(v) + 1 - (v - math.floor(v))), "the weight of the left neighbour is 1 - a, where a = u - floor(u); yours are swapped"),
    ]
    return run_check("Exercise 3.1 (bilinear_at)", student_fn, _ref_bilinear_at, cases, mistakes, rtol=1e-6, atol=1e-9)


def _ref_normalize(u, size, align_corners):
    uv = torch.stack([torch.as_tensor(u, dtype=torch.float64), torch.zeros_like(torch.as_tensor(u, dtype=torch.float64))])
    return warping.normalize_pixels(uv[None, :, None], 2, size, align_corners)[0, 0, ..., 0]


def check_normalize_coords(student_fn: Callable) -> bool:
    """Exercise 3.2: ``fn(u, size, align_corners) -> x`` in grid_sample's ``[-1, 1]`` convention."""
    u = torch.tensor([0.0, 0.5, 3.0, 415.0, 207.5], dtype=torch.float64)
    cases = [
        Case("W=416, align_corners=True", (u, 416, True)),
        Case("W=416, align_corners=False", (u, 416, False)),
        Case("W=8, align_corners=False", (torch.tensor([0.0, 7.0, -0.5, 7.5], dtype=torch.float64), 8, False)),
        Case("W=8, align_corners=True", (torch.tensor([0.0, 7.0, 3.5], dtype=torch.float64), 8, True)),
    ]
    mistakes = [
        (lambda u, n, ac: 2 * u / (n - 1) - 1, "with align_corners=False, -1 and 1 are the image *edges*: x = (2u + 1) / W - 1"),
        (lambda u, n, ac: (2 * u + 1) / n - 1, "with align_corners=True, -1 and 1 are the centres of the corner pixels: x = 2u / (W - 1) - 1"),
        (lambda u, n, ac: 2 * u / n - 1, "neither convention: check where u = 0 and u = W - 1 must land"),
        (lambda u, n, ac: (2 * u + 1) / n - 1 if ac else 2 * u / (n - 1) - 1, "the two formulas are swapped: align_corners=True puts the corner pixel centres at -1 and 1"),
    ]
    return run_check("Exercise 3.2 (normalize_coords)", student_fn, _ref_normalize, cases, mistakes, rtol=1e-9, atol=1e-12)


def _ref_stereo_grid(disparity):
    b, _, h, w = disparity.shape
    grid = camera.pixel_grid(h, w, disparity.dtype)[:2][None].expand(b, 2, h, w).clone()
    grid[:, 0] -= disparity[:, 0]
    return grid


def _shift_rows(d):
    g2 = _ref_stereo_grid(d)
    g2[:, 0] += d[:, 0]
    g2[:, 1] -= d[:, 0]
    return g2


def check_stereo_sampling_grid(student_fn: Callable) -> bool:
    """Exercise 3.3: ``fn(disparity (B, 1, H, W)) -> uv (B, 2, H, W)``: where to read the right
    image to rebuild the left one."""
    g = _gen(33)
    cases = [
        Case("constant disparity 2 on a 3x4 map", (torch.full((1, 1, 3, 4), 2.0),)),
        Case("random disparities, B=2, 4x6", (torch.rand(2, 1, 4, 6, generator=g) * 5,)),
    ]

    def plus(d):
        g2 = _ref_stereo_grid(d)
        g2[:, 0] += 2 * d[:, 0]
        return g2

    mistakes = [
        (plus, "the left pixel x matches the right pixel x - d, not x + d"),
        (lambda d: _ref_stereo_grid(d).flip(1), "channel 0 is u (the column), channel 1 is v (the row)"),
        (lambda d: _ref_stereo_grid(d) + 0.5, "pixel centres sit at integer coordinates: no +0.5"),
        (_shift_rows, "the disparity moves the column u; the row v stays the same"),
    ]
    return run_check("Exercise 3.3 (stereo_sampling_grid)", student_fn, _ref_stereo_grid, cases, mistakes)


# ---------------------------------------------------------------------------------------------
# Chapter 04: photometric losses
# ---------------------------------------------------------------------------------------------


def _image_pairs(seed: int) -> list[Case]:
    g = _gen(seed)
    x = torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64)).clamp(0, 1)
    a = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64)
    b = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64)
    return [Case("a grey 6x7 image and a noisy copy", (x, y)), Case("two random colour images, B=2", (a, b))]


def check_ssim_map(student_fn: Callable) -> bool:
    """Exercise 4.1: ``fn(x, y) -> SSIM (B, C, H, W)`` with 3x3 box windows, reflection padding,
    C1 = 0.01**2, C2 = 0.03**2."""

    def zero_pad(x, y):
        box = lambda t: F.avg_pool2d(F.pad(t, (1, 1, 1, 1)), 3, 1)  # noqa: E731
        return _ssim_with(box, x, y, losses.C1, losses.C2)

    def unsquared(x, y):
        return losses.ssim(x, y, c1=0.01, c2=0.03)

    def no_centering(x, y):
        box = losses.box_filter3
        mx, my = box(x), box(y)
        return ((2 * mx * my + losses.C1) * (2 * box(x * y) + losses.C2)) / (
            (mx**2 + my**2 + losses.C1) * (box(x * x) + box(y * y) + losses.C2)
        )

    mistakes = [
        (zero_pad, "pad by reflection (F.pad(..., mode='reflect')), not with zeros: borders differ"),
        (unsquared, "C1 = 0.01**2 and C2 = 0.03**2 (the constants are squared)"),
        (no_centering, "variances and covariance subtract the product of the means: E[xy] - mu_x mu_y"),
        (lambda x, y: losses.ssim(x, y)[..., 1:-1, 1:-1], "keep the image size: pad before the 3x3 mean"),
    ]
    return run_check("Exercise 4.1 (ssim_map)", student_fn, losses.ssim, _image_pairs(41), mistakes, rtol=1e-6, atol=1e-9)


def _ssim_with(box, x, y, c1, c2):
    mx, my = box(x), box(y)
    sxx, syy, sxy = box(x * x) - mx**2, box(y * y) - my**2, box(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))


def check_photometric_map(student_fn: Callable) -> bool:
    """Exercise 4.2: ``fn(pred, target) -> (B, 1, H, W)``:
    ``0.85 * clamp((1 - SSIM) / 2, 0, 1) + 0.15 * |pred - target|``, averaged over channels."""

    def swapped(p, t):
        return losses.photometric_error(p, t, alpha=0.15)

    def no_half(p, t):
        return (0.85 * (1 - losses.ssim(p, t)).clamp(0, 1) + 0.15 * (p - t).abs()).mean(1, keepdim=True)

    mistakes = [
        (swapped, "the weights are 0.85 for the SSIM term and 0.15 for L1"),
        (no_half, "the SSIM term is (1 - SSIM) / 2, clamped to [0, 1]"),
        (lambda p, t: 0.85 * ((1 - losses.ssim(p, t)) / 2).clamp(0, 1) + 0.15 * (p - t).abs(), "average over the colour channels: the result is (B, 1, H, W)"),
        (lambda p, t: losses.photometric_error(p, t, alpha=0.0), "the SSIM term is missing"),
    ]
    return run_check("Exercise 4.2 (photometric_map)", student_fn, losses.photometric_error, _image_pairs(42), mistakes, rtol=1e-6, atol=1e-9)


def check_edge_aware_smoothness(student_fn: Callable) -> bool:
    """Exercise 4.3: ``fn(disparity (B, 1, H, W), image (B, C, H, W)) -> scalar``: first-order
    edge-aware smoothness of the mean-normalised disparity (x and y terms averaged, then added)."""
    g = _gen(43)
    cases = [
        Case("a 6x7 disparity and grey image", (torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64) + 0.2, torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64))),
        Case("B=2, colour image", (torch.rand(2, 1, 5, 8, generator=g, dtype=torch.float64) * 3 + 0.5, torch.rand(2, 3, 5, 8, generator=g, dtype=torch.float64))),
    ]

    def per_channel_weights(d, im):
        d = d / (d.mean((2, 3), keepdim=True) + 1e-7)
        wx = torch.exp(-(im[..., :, 1:] - im[..., :, :-1]).abs())
        wy = torch.exp(-(im[..., 1:, :] - im[..., :-1, :]).abs())
        return ((d[..., :, 1:] - d[..., :, :-1]).abs() * wx).mean() + ((d[..., 1:, :] - d[..., :-1, :]).abs() * wy).mean()

    mistakes = [
        (lambda d, im: losses.smoothness(d, im, normalize=False), "divide the disparity by its mean (per image) first"),
        (lambda d, im: losses.smoothness(d, torch.zeros_like(im)), "weight each gradient by exp(-|image gradient|): that is what makes it edge-aware"),
        (_plus_exp, "the weight is exp(-|dI|), smaller across image edges; yours grows there"),
        (per_channel_weights, "average the image gradient over the colour channels before the exponential"),
    ]
    return run_check("Exercise 4.3 (edge_aware_smoothness)", student_fn, losses.smoothness, cases, mistakes, rtol=1e-6, atol=1e-9)


def _plus_exp(d, im):
    d = d / (d.mean((2, 3), keepdim=True) + 1e-7)
    ix = (im[..., :, 1:] - im[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (im[..., 1:, :] - im[..., :-1, :]).abs().mean(1, keepdim=True)
    return ((d[..., :, 1:] - d[..., :, :-1]).abs() * torch.exp(ix)).mean() + ((d[..., 1:, :] - d[..., :-1, :]).abs() * torch.exp(iy)).mean()


# ---------------------------------------------------------------------------------------------
# Chapter 05: stereo by optimisation
# ---------------------------------------------------------------------------------------------


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
    g = _gen(seed)
    d_l, d_r = _two_layer_maps()
    # quarter-pixel maps, W - 1 = 16: every read and every gap is exact in float64, and three
    # gaps are exactly 1 px (consistent at threshold 1, not with a strict <)
    q = _gen(0)
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
    g = _gen(seed)
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


# ---------------------------------------------------------------------------------------------
# Appendix A1: the synthetic world
# ---------------------------------------------------------------------------------------------


def _ref_ray_box(origin, direction, lo, hi):
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (np.asarray(lo, float) - origin) / direction
        t1 = (np.asarray(hi, float) - origin) / direction
    near = np.nanmax(np.minimum(t0, t1))
    far = np.nanmin(np.maximum(t0, t1))
    return torch.tensor(near if (far >= near and far > 0 and near > 0) else math.inf, dtype=torch.float64)


def check_ray_box(student_fn: Callable) -> bool:
    """Exercise A1.1: ``fn(origin (3,), direction (3,), lo (3,), hi (3,)) -> t`` where the ray
    ``origin + t * direction`` enters the box, or ``inf`` when it misses it (or the box is
    behind the origin). Directions have no zero components here."""
    o = np.zeros(3)
    cases = [
        Case("straight ahead into a box", (o, np.array([0.01, 0.02, 1.0]), np.array([-1.0, -1.0, 5.0]), np.array([1.0, 1.0, 7.0]))),
        Case("a ray going left (negative x) into a box on the left", (o, np.array([-1.0, 0.05, 0.5]), np.array([-6.0, -1.0, 1.0]), np.array([-4.0, 1.0, 4.0]))),
        Case("a box entered through its side face", (o, np.array([0.3, 0.01, 1.0]), np.array([1.0, -1.0, 2.0]), np.array([2.0, 1.0, 9.0]))),
        Case("a miss (passes beside the box)", (o, np.array([0.5, 0.01, 1.0]), np.array([-3.0, -1.0, 5.0]), np.array([-2.0, 1.0, 6.0]))),
        Case("a box behind the camera", (o, np.array([0.01, 0.01, 1.0]), np.array([-1.0, -1.0, -6.0]), np.array([1.0, 1.0, -4.0]))),
    ]

    def exit_distance(o_, d, lo, hi):
        t0, t1 = (lo - o_) / d, (hi - o_) / d
        near, far = np.minimum(t0, t1).max(), np.maximum(t0, t1).min()
        return torch.tensor(far if far >= near and near > 0 else math.inf, dtype=torch.float64)

    def no_swap(o_, d, lo, hi):
        t0, t1 = (lo - o_) / d, (hi - o_) / d
        near, far = t0.max(), t1.min()
        return torch.tensor(near if far >= near and near > 0 else math.inf, dtype=torch.float64)

    def min_of_near(o_, d, lo, hi):
        t0, t1 = (lo - o_) / d, (hi - o_) / d
        near, far = np.minimum(t0, t1).min(), np.maximum(t0, t1).min()
        return torch.tensor(near if far >= near and near > 0 else math.inf, dtype=torch.float64)

    def behind_too(o_, d, lo, hi):
        t0, t1 = (lo - o_) / d, (hi - o_) / d
        near, far = np.minimum(t0, t1).max(), np.maximum(t0, t1).min()
        return torch.tensor(near if far >= near else math.inf, dtype=torch.float64)

    mistakes = [
        (exit_distance, "that is where the ray leaves the box; it enters at the largest of the per-axis near distances"),
        (no_swap, "when the direction is negative along an axis, (lo - o)/d is the far distance: take min and max of the two per axis"),
        (min_of_near, "the ray is inside the box only once it is inside all three slabs: enter at the *largest* near distance"),
        (behind_too, "a box behind the origin (negative distances) is not hit"),
    ]
    return run_check("Exercise A1.1 (ray_box)", student_fn, _ref_ray_box, cases, mistakes, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Chapter 06: Monodepth
# ---------------------------------------------------------------------------------------------


def _lr_term_cases(seed: int) -> list[Case]:
    g = _gen(seed)

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
    from . import monodepth

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
    from . import monodepth

    g = _gen(62)
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
