"""Exercise checks of chapter 01 (stereo: from disparity to depth)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ... import stereo
from ...data.middlebury import MiddleburyCalibration
from .engine import Case, run_check, seeded_generator

__all__ = [
    "check_disparity_to_depth",
    "check_depth_uncertainty",
    "check_middlebury_depth",
]


def _ref_disparity_to_depth(d, focal, baseline, doffs):
    return stereo.disparity_to_depth(d, focal, baseline, doffs, min_depth=1e-9, max_depth=1e12)


def check_disparity_to_depth(student_fn: Callable) -> bool:
    """Exercise 1.1: ``fn(disparity, focal, baseline, doffs) -> depth``, ``Z = f B / (d + doffs)``."""
    g = seeded_generator(1)
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
