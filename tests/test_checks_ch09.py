"""Chapter 09's exercise checks accept a correct answer and reject plausible wrong ones.

The answers are written out the way a student might write them (NumPy, loops), independently
of the library and of the wrong versions inside the checks.
"""

import numpy as np
import pytest
import torch

from lesson_lib.course import checks

from _check_harness import exercises


# -- answers written as a student would ---------------------------------------------------------


def good_ray_angle(p1, p2, K, R, unrotated=False, forward=False, pixels=False, radians=False):
    """Angle between the two rays, point by point, in NumPy."""
    a, b = p1.numpy().astype(np.float64), p2.numpy().astype(np.float64)
    kinv = np.eye(3) if pixels else np.linalg.inv(K.numpy().astype(np.float64))
    r = R.numpy().astype(np.float64)
    out = []
    for x, y in zip(a, b):
        d1 = kinv @ np.array([x[0], x[1], 1.0])
        d2 = kinv @ np.array([y[0], y[1], 1.0])
        if not unrotated:
            d2 = (r if forward else r.T) @ d2
        c = np.clip(d1 @ d2 / (np.linalg.norm(d1) * np.linalg.norm(d2)), -1.0, 1.0)
        out.append(np.arccos(c) if radians else np.degrees(np.arccos(c)))
    return torch.tensor(out)


def good_move_depth(depth, R, t, K, transposed=False, minus=False, pixels=False, no_divide=False, old_z=False):
    """Each pixel back-projected, moved and projected, in a loop."""
    d = depth.numpy().astype(np.float64)
    r, tt, k = R.numpy().astype(np.float64), t.numpy().astype(np.float64), K.numpy().astype(np.float64)
    if transposed:
        r = r.T
    kinv = np.eye(3) if pixels else np.linalg.inv(k)
    h, w = d.shape
    uv, z = np.zeros((2, h, w)), np.zeros((h, w))
    for v in range(h):
        for u in range(w):
            X = d[v, u] * (kinv @ np.array([u, v, 1.0]))
            X2 = r @ X + (-tt if minus else tt)
            q = k @ X2
            uv[:, v, u] = q[:2] if no_divide else q[:2] / q[2]
            z[v, u] = d[v, u] if old_z else X2[2]
    return torch.from_numpy(uv), torch.from_numpy(z)


def good_top(flow, score, fraction, vu=False, backwards=False, worst=False, outside_too=False):
    f, s = flow.numpy(), score.numpy()
    _, h, w = f.shape
    rows = []
    for v in range(h):
        for u in range(w):
            du, dv = f[:, v, u]
            if backwards:
                du, dv = -du, -dv
            x, y = u + du, v + dv
            if outside_too or (0 <= x <= w - 1 and 0 <= y <= h - 1):
                rows.append((s[v, u], u, v, x, y))
    rows.sort(key=lambda r: r[0], reverse=not worst)
    n = max(8, int(round(fraction * h * w)))
    rows = rows[:n]
    p1 = np.array([[r[2], r[1]] if vu else [r[1], r[2]] for r in rows], dtype=np.float64)
    p2 = np.array([[r[4], r[3]] if vu else [r[3], r[4]] for r in rows], dtype=np.float64)
    return torch.from_numpy(np.stack([p1, p2]))


@np.errstate(invalid="ignore")  # a wrong answer may reject every point: NaN
def good_scale(pred, tri, median_only=False, inverted=False, absolute=False, means=False):
    """The derivative of sum (1 - c x_i)^2 set to zero, in a loop (x = pred / tri)."""
    p, t = pred.numpy().astype(np.float64), tri.numpy().astype(np.float64)
    if median_only:
        return torch.tensor(float(np.median(t / p)))
    if means:
        return torch.tensor(t.mean() / p.mean())
    if absolute:
        return torch.tensor(sum(a * b for a, b in zip(p, t)) / sum(a * a for a in p))
    sx = sxx = 0.0
    for a, b in zip(p, t):
        sx += a / b
        sxx += (a / b) ** 2
    return torch.tensor(sxx / sx if inverted else sx / sxx)


GOOD = {"ray_angle": good_ray_angle, "move_depth": good_move_depth, "top": good_top, "scale": good_scale}

WRONG = {
    "ray_angle": [
        lambda *a: good_ray_angle(*a, unrotated=True),
        lambda *a: good_ray_angle(*a, forward=True),
        lambda *a: good_ray_angle(*a, pixels=True),
        lambda *a: good_ray_angle(*a, radians=True),
        lambda p1, p2, K, R: good_ray_angle(p1 + 0.5, p2 + 0.5, K, R),  # pixel corners, not centres
    ],
    "move_depth": [
        lambda *a: good_move_depth(*a, transposed=True),
        lambda *a: good_move_depth(*a, minus=True),
        lambda *a: good_move_depth(*a, pixels=True),
        lambda *a: good_move_depth(*a, no_divide=True),
        lambda *a: good_move_depth(*a, old_z=True),
        lambda d, R, t, K: tuple(x.flip(-1) for x in good_move_depth(d, R, t, K)),  # u and v mixed up
    ],
    "top": [
        lambda *a: good_top(*a, vu=True),
        lambda *a: good_top(*a, backwards=True),
        lambda *a: good_top(*a, worst=True),
        lambda *a: good_top(*a, outside_too=True),
        lambda f, s, q: good_top(f, s, q)[:, :-1],  # one correspondence short
    ],
    "scale": [
        lambda *a: good_scale(*a, median_only=True),
        lambda *a: good_scale(*a, inverted=True),
        lambda *a: good_scale(*a, absolute=True),
        lambda *a: good_scale(*a, means=True),
    ],
}


EXERCISES = exercises({"ray_angle": checks.check_ray_angle, "move_depth": checks.check_move_depth,
                       "top": checks.check_top_correspondences, "scale": checks.check_scale_registration},
                      GOOD, WRONG, rejection="wrong on case|raised|shape")  # run by tests/test_checks.py's harness


def test_feedback_names_the_mistake():
    with pytest.raises(checks.CheckFailed, match="camera 1's orientation"):
        checks.check_ray_angle(WRONG["ray_angle"][0])
    with pytest.raises(checks.CheckFailed, match="not R"):
        checks.check_ray_angle(WRONG["ray_angle"][1])
    with pytest.raises(checks.CheckFailed, match="K\\^-1"):
        checks.check_ray_angle(WRONG["ray_angle"][2])
    with pytest.raises(checks.CheckFailed, match="radians"):
        checks.check_ray_angle(WRONG["ray_angle"][3])
    with pytest.raises(checks.CheckFailed, match="not R\\^T"):
        checks.check_move_depth(WRONG["move_depth"][0])
    with pytest.raises(checks.CheckFailed, match="add t"):
        checks.check_move_depth(WRONG["move_depth"][1])
    with pytest.raises(checks.CheckFailed, match="back-project"):
        checks.check_move_depth(WRONG["move_depth"][2])
    with pytest.raises(checks.CheckFailed, match="third entry \\(z'\\)"):
        checks.check_move_depth(WRONG["move_depth"][3])
    with pytest.raises(checks.CheckFailed, match="moved point's depth"):
        checks.check_move_depth(WRONG["move_depth"][4])
    with pytest.raises(checks.CheckFailed, match=r"\(u, v\)"):
        checks.check_top_correspondences(WRONG["top"][0])
    with pytest.raises(checks.CheckFailed, match="highest"):
        checks.check_top_correspondences(WRONG["top"][2])
    with pytest.raises(checks.CheckFailed, match="outside the image"):
        checks.check_top_correspondences(WRONG["top"][3])
    with pytest.raises(checks.CheckFailed, match="median"):
        checks.check_scale_registration(WRONG["scale"][0])
    with pytest.raises(checks.CheckFailed, match="not its inverse"):
        checks.check_scale_registration(WRONG["scale"][1])
    with pytest.raises(checks.CheckFailed, match="relative"):
        checks.check_scale_registration(WRONG["scale"][2])
