"""Exercise checks of appendix A1 (the synthetic world)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .engine import Case, run_check

__all__ = [
    "check_ray_box",
]


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
