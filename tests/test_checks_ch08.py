"""Chapter 08's exercise checks accept a correct answer and reject plausible wrong ones.

As in tests/test_checks.py, the answers here are written out the way a student might write
them, independently of the library and of the hints inside the checks.
"""

import math

import numpy as np
import pytest
import torch

from lesson_lib.course import checks

from _check_harness import exercises


# -- answers written as a student would ---------------------------------------------------------


def good_T(points, rms=False, scale=math.sqrt(2), centre=True, sign=-1.0, per_axis=False):
    """Hartley's normalising transform; the keywords make the known wrong versions."""
    p = points.numpy()
    c = p.mean(0)
    d = np.linalg.norm(p - c, axis=1)
    s = scale / (np.sqrt((d**2).mean()) if rms else d.mean())
    sx, sy = (scale / np.abs(p - c).mean(0)) if per_axis else (s, s)
    c = c if centre else np.zeros(2)
    return torch.tensor([[sx, 0, sign * sx * c[0]], [0, sy, sign * sy * c[1]], [0, 0, 1]])


def good_eight_point(p1, p2, normalise=True, rank2=True, undo=True, transpose=False, largest=False):
    """The normalised 8-point algorithm in NumPy; the keywords make the known wrong versions."""
    a, b = p1.numpy(), p2.numpy()

    def T(p):
        c = p.mean(0)
        s = math.sqrt(2) / np.linalg.norm(p - c, axis=1).mean()
        return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]]) if normalise else np.eye(3)

    T1, T2 = T(a), T(b)
    x1 = np.c_[a, np.ones(len(a))] @ T1.T
    x2 = np.c_[b, np.ones(len(b))] @ T2.T
    A = np.einsum("ni,nj->nij", x2, x1).reshape(len(a), 9)  # row: x2_i x1_j, f = F row by row
    _, _, V = np.linalg.svd(A)
    F = (V[0] if largest else V[-1]).reshape(3, 3)
    if rank2:
        U, S, W = np.linalg.svd(F)
        F = U @ np.diag([S[0], S[1], 0.0]) @ W
    F = T2.T @ F @ T1 if undo else F
    return torch.from_numpy(F.T if transpose else F) * -2.5  # any scale and sign


def good_ransac(p1, p2, threshold, confidence, generator, w_power=8, fixed=None, with_replacement=False, keep_last=False):
    """The RANSAC loop as a student writes it; the keywords make the known wrong versions."""
    from lesson_lib import twoview

    n, drawn, best = len(p1), 0, (None, None, -1)
    needed = fixed if fixed is not None else float("inf")
    while drawn < needed and drawn < 5000:
        if with_replacement:
            idx = torch.randint(0, n, (8,), generator=generator)
        else:
            idx = torch.randperm(n, generator=generator)[:8]
        F = twoview.fundamental_8point(p1[idx], p2[idx])
        inliers = twoview.sampson_distance(F, p1, p2) <= threshold
        drawn += 1
        if inliers.sum() > best[2] or keep_last:
            best = (F, inliers, int(inliers.sum()))
            w = best[2] / n
            if fixed is None:
                needed = 1 if w == 1 else math.log(1 - confidence) / math.log(1 - w**w_power)
    return best[0], best[1], drawn


def good_four_poses(E, fix=True, same_W=False, t_from_V=False, swap_order=True):
    U, _, Vt = np.linalg.svd(E.numpy())
    if fix:
        U = U if np.linalg.det(U) > 0 else -U
        Vt = Vt if np.linalg.det(Vt) > 0 else -Vt
    W = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    Ra, Rb = U @ W @ Vt, U @ (W if same_W else W.T) @ Vt
    t = Vt[2] if t_from_V else U[:, 2]
    poses = [(Rb, -t), (Ra, t), (Rb, t), (Ra, -t)] if swap_order else [(Ra, t), (Ra, -t), (Rb, t), (Rb, -t)]
    return torch.tensor(np.array([r for r, _ in poses])), torch.tensor(np.array([2.0 * x for _, x in poses]))  # any order, any length of t


def good_in_front(R, t, X, strict=True, use_t=True, transpose=True, both=True):
    X2 = X @ (R.T if transpose else R) + (t if use_t else 0.0)
    if strict:
        return (X[:, 2] > 0) & (X2[:, 2] > 0) if both else X2[:, 2] > 0
    return (X[:, 2] >= 0) & (X2[:, 2] >= 0)


def good_midpoint(p1, p2, K1, K2, R, t, centre2=None, rotate=True, which="mid"):
    """By the 2x2 normal equations, written with NumPy, one point at a time."""
    K1i, K2i = np.linalg.inv(K1.numpy()), np.linalg.inv(K2.numpy())
    R, t = R.numpy(), t.numpy()
    O2 = -R.T @ t if centre2 is None else centre2(R, t)
    out = []
    for (u1, v1), (u2, v2) in zip(p1.numpy(), p2.numpy()):
        d1 = K1i @ np.array([u1, v1, 1.0])
        d2 = K2i @ np.array([u2, v2, 1.0])
        d2 = R.T @ d2 if rotate else d2
        A = np.array([[d1 @ d1, -d1 @ d2], [d1 @ d2, -d2 @ d2]])
        l1, l2 = np.linalg.solve(A, np.array([d1 @ O2, d2 @ O2]))
        a, b = l1 * d1, O2 + l2 * d2
        out.append({"mid": (a + b) / 2, "first": a, "second": b}[which])
    return torch.tensor(np.array(out))


GOOD = {
    "normalising": good_T,
    "eight_point": good_eight_point,
    "ransac": good_ransac,
    "four_poses": good_four_poses,
    "in_front": good_in_front,
    "midpoint": good_midpoint,
}

WRONG = {
    "normalising": [
        lambda p: good_T(p, rms=True),  # root-mean-square distance
        lambda p: good_T(p, scale=1.0),  # mean distance 1
        lambda p: good_T(p, sign=1.0),  # +s c
        lambda p: good_T(p, centre=False),  # no translation
        lambda p: good_T(p, per_axis=True),  # a scale per axis
        lambda p: good_T(p)[[1, 0, 2]][:, [1, 0, 2]],  # u and v swapped
    ],
    "eight_point": [
        lambda a, b: good_eight_point(a, b, normalise=False),  # pixel coordinates
        lambda a, b: good_eight_point(a, b, rank2=False),  # rank 3
        lambda a, b: good_eight_point(a, b, undo=False),  # F_n returned
        lambda a, b: good_eight_point(a, b, transpose=True),  # F^T
        lambda a, b: good_eight_point(a, b, largest=True),  # the wrong singular vector
    ],
    "ransac": [
        lambda *a: good_ransac(*a, w_power=1),  # w, not w^8
        lambda *a: good_ransac(*a, fixed=100),  # a fixed number of samples
        lambda *a: good_ransac(*a, with_replacement=True),  # a sample may repeat a correspondence
        lambda *a: good_ransac(*a, keep_last=True),  # the last model, not the best
    ],
    "four_poses": [
        lambda E: good_four_poses(E, fix=False),  # reflections
        lambda E: good_four_poses(E, same_W=True),  # no twisted pair
        lambda E: good_four_poses(E, t_from_V=True),  # t from V
        lambda E: good_four_poses(E, swap_order=False)[0], # rotations only
    ],
    "in_front": [
        lambda R, t, X: X[:, 2] > 0,  # camera 1 only
        lambda R, t, X: good_in_front(R, t, X, both=False),  # camera 2 only
        lambda R, t, X: good_in_front(R, t, X, transpose=False),  # X @ R
        lambda R, t, X: good_in_front(R, t, X, strict=False),  # >=
        lambda R, t, X: good_in_front(R, t, X, use_t=False),  # t forgotten
        lambda R, t, X: good_in_front(R.T, -R.T @ t, X),  # the inverse pose
    ],
    "midpoint": [
        lambda *a: good_midpoint(*a, centre2=lambda R, t: np.zeros(3)),  # the erratum: second ray through O1
        lambda *a: good_midpoint(*a, centre2=lambda R, t: t),  # O2 = t
        lambda *a: good_midpoint(*a, centre2=lambda R, t: -t),  # O2 = -t
        lambda *a: good_midpoint(*a, rotate=False),  # direction not rotated
        lambda *a: good_midpoint(*a, which="first"),  # the closest point on ray 1
        lambda *a: good_midpoint(*a)[:, [1, 0, 2]],  # x and y swapped
    ],
}


EXERCISES = exercises({  # run by tests/test_checks.py's harness
    "normalising": checks.check_normalising_transform,
    "eight_point": checks.check_eight_point,
    "ransac": checks.check_ransac,
    "four_poses": checks.check_four_poses,
    "in_front": checks.check_in_front,
    "midpoint": checks.check_midpoint,
}, GOOD, WRONG)


def test_feedback_names_the_mistake():
    with pytest.raises(checks.CheckFailed, match="root-mean-square"):
        checks.check_normalising_transform(WRONG["normalising"][0])
    with pytest.raises(checks.CheckFailed, match="not 1"):
        checks.check_normalising_transform(WRONG["normalising"][1])
    with pytest.raises(checks.CheckFailed, match="isotropic"):
        checks.check_normalising_transform(WRONG["normalising"][4])
    with pytest.raises(checks.CheckFailed, match="normalise each image"):
        checks.check_eight_point(WRONG["eight_point"][0])
    with pytest.raises(checks.CheckFailed, match="rank 2"):
        checks.check_eight_point(WRONG["eight_point"][1])
    with pytest.raises(checks.CheckFailed, match="F transposed"):
        checks.check_eight_point(WRONG["eight_point"][3])
    with pytest.raises(checks.CheckFailed, match="w\\^8, not w"):
        checks.check_ransac(WRONG["ransac"][0])
    with pytest.raises(checks.CheckFailed, match="distinct|do not determine F"):
        checks.check_ransac(WRONG["ransac"][2])
    with pytest.raises(checks.CheckFailed, match="twisted pair"):
        checks.check_four_poses(WRONG["four_poses"][1])
    with pytest.raises(checks.CheckFailed, match="left null space"):
        checks.check_four_poses(WRONG["four_poses"][2])
    with pytest.raises(checks.CheckFailed, match="in front of camera 2"):
        checks.check_in_front(WRONG["in_front"][0])
    with pytest.raises(checks.CheckFailed, match="strictly in front"):
        checks.check_in_front(WRONG["in_front"][3])
    with pytest.raises(checks.CheckFailed, match="passes through O2 and x2"):
        checks.check_midpoint(WRONG["midpoint"][0])
    with pytest.raises(checks.CheckFailed, match="rotate the second ray"):
        checks.check_midpoint(WRONG["midpoint"][3])
    with pytest.raises(checks.CheckFailed, match="not the point on the first ray"):
        checks.check_midpoint(WRONG["midpoint"][4])
