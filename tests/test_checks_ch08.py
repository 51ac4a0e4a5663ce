"""Chapter 08's exercise checks accept a correct answer and reject plausible wrong ones.

As in tests/test_checks.py, the answers here are written out the way a student might write
them, independently of the library and of the hints inside the checks.
"""

import math

import numpy as np
import pytest
import torch

from lesson_lib.course import checks


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


def good_rank2(F, zero=2, rebuild=lambda U, S, V: U @ np.diag(S) @ V, normalise=False):
    U, S, V = np.linalg.svd(F.numpy())  # numpy returns V^T as its third output
    S = S.copy()
    S[zero] = 0.0
    out = rebuild(U, S, V)
    return torch.from_numpy(out / np.linalg.norm(out) if normalise else out)


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
    "rank2": good_rank2,
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
    "rank2": [
        lambda F: good_rank2(F, zero=0),  # the largest singular value zeroed
        lambda F: good_rank2(F, rebuild=lambda U, S, V: U @ np.diag(S) @ V.T),  # V^T transposed again
        lambda F: good_rank2(F, normalise=True),  # scale lost
        lambda F: F - F[2, 2] * torch.eye(3, dtype=F.dtype),  # not the closest rank-2 matrix
        lambda F: good_rank2(F, rebuild=lambda U, S, V: U @ np.diag([(S[0] + S[1]) / 2] * 2 + [0.0]) @ V),  # essential projection
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


def _call(name, fn):
    return {
        "normalising": checks.check_normalising_transform,
        "rank2": checks.check_rank2_projection,
        "in_front": checks.check_in_front,
        "midpoint": checks.check_midpoint,
    }[name](fn)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_check_accepts_a_correct_answer(name, capsys):
    assert _call(name, GOOD[name]) is True
    assert "[passed]" in capsys.readouterr().out


@pytest.mark.parametrize("name, i", [(n, i) for n in sorted(WRONG) for i in range(len(WRONG[n]))])
def test_check_rejects_a_wrong_answer(name, i):
    assert len(WRONG[name]) >= 3
    with pytest.raises(checks.CheckFailed) as info:
        _call(name, WRONG[name][i])
    assert "wrong on case" in str(info.value) or "raised" in str(info.value)


def test_feedback_names_the_mistake():
    with pytest.raises(checks.CheckFailed, match="root-mean-square"):
        checks.check_normalising_transform(WRONG["normalising"][0])
    with pytest.raises(checks.CheckFailed, match="not 1"):
        checks.check_normalising_transform(WRONG["normalising"][1])
    with pytest.raises(checks.CheckFailed, match="isotropic"):
        checks.check_normalising_transform(WRONG["normalising"][4])
    with pytest.raises(checks.CheckFailed, match="smallest singular value"):
        checks.check_rank2_projection(WRONG["rank2"][0])
    with pytest.raises(checks.CheckFailed, match="keep the scale"):
        checks.check_rank2_projection(WRONG["rank2"][2])
    with pytest.raises(checks.CheckFailed, match="essential matrices"):
        checks.check_rank2_projection(WRONG["rank2"][4])
    with pytest.raises(checks.CheckFailed, match="in front of camera 2"):
        checks.check_in_front(WRONG["in_front"][0])
    with pytest.raises(checks.CheckFailed, match="strictly in front"):
        checks.check_in_front(WRONG["in_front"][3])
    with pytest.raises(checks.CheckFailed, match="erratum"):
        checks.check_midpoint(WRONG["midpoint"][0])
    with pytest.raises(checks.CheckFailed, match="rotate the second ray"):
        checks.check_midpoint(WRONG["midpoint"][3])
    with pytest.raises(checks.CheckFailed, match="not the point on the first ray"):
        checks.check_midpoint(WRONG["midpoint"][4])
