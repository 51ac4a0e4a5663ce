"""Chapter 07's exercise checks accept a correct answer and reject plausible wrong ones.

The answers are written out the way a student might write them (NumPy, loops), independently
of the library and of the wrong versions inside the checks.
"""

import numpy as np
import pytest
import torch

from lesson_lib.course import checks

from _check_harness import exercises


# -- answers written as a student would ---------------------------------------------------------


def good_source_pixels(depth, T, K, inverse_pose=False, transpose=False, half=0.0, swap=False, no_depth=False):
    d, T, K = depth.numpy(), T.numpy(), K.numpy()
    if inverse_pose:
        T = np.linalg.inv(T)
    R, t = T[:3, :3], T[:3, 3]
    R = R.T if transpose else R
    h, w = d.shape
    out = np.zeros((2, h, w))
    Ki = np.linalg.inv(K)
    for v in range(h):
        for u in range(w):
            X = Ki @ np.array([u + half, v + half, 1.0]) * (1.0 if no_depth else d[v, u])
            q = K @ (R @ X + t)
            out[:, v, u] = q[:2] / q[2]
    return torch.from_numpy(out[::-1].copy() if swap else out)


def good_explainability_loss(err, logits, valid, weight, channel=1, reg_sign=-1.0, all_pixels=False, no_reg=False):
    e, lg, ok = err.numpy(), logits.numpy(), valid.numpy()
    total = 0.0
    for s in range(e.shape[0]):
        z = lg[s] - lg[s].max(axis=0, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=0, keepdims=True)
        E = p[channel]
        use = np.ones_like(ok[s]) if all_pixels else ok[s]
        total += (E * e[s])[use].mean()
        if not no_reg:
            total += weight * reg_sign * np.log(p[1]).mean()
    return torch.tensor(total)


def good_ate(gt, pred, align=True, inverse=False, rmse=False, unscaled=False):
    g, p = gt.numpy(), pred.numpy()
    if align:
        p = p - p[0] + g[0]
    s = (g * p).sum() / (p * p).sum()
    s = 1.0 / s if inverse else (1.0 if unscaled else s)
    sq = ((s * p - g) ** 2).sum()
    n = len(g)
    return torch.tensor([np.sqrt(sq / n) if rmse else np.sqrt(sq) / n, s])


GOOD = {"source_pixels": good_source_pixels, "explainability_loss": good_explainability_loss, "ate": good_ate}

WRONG = {
    "source_pixels": [
        lambda *a: good_source_pixels(*a, inverse_pose=True),  # T_s_to_t
        lambda *a: good_source_pixels(*a, transpose=True),  # R^T
        lambda *a: good_source_pixels(*a, half=0.5),  # pixel centres at +0.5
        lambda *a: good_source_pixels(*a, swap=True),  # (v, u)
        lambda *a: good_source_pixels(*a, no_depth=True),  # depth forgotten: every point at 1 m
    ],
    "explainability_loss": [
        lambda *a: good_explainability_loss(*a, channel=0),  # the other channel
        lambda *a: good_explainability_loss(*a, reg_sign=1.0),  # +log E
        lambda *a: good_explainability_loss(*a, all_pixels=True),  # invalid pixels counted
        lambda *a: good_explainability_loss(*a, no_reg=True),  # regulariser forgotten
        lambda err, lg, v, w: good_explainability_loss(err, lg, v, w) + 0.1,  # off by a constant
    ],
    "ate": [
        lambda g, p: good_ate(g, p, align=False),
        lambda g, p: good_ate(g, p, inverse=True),
        lambda g, p: good_ate(g, p, rmse=True),
        lambda g, p: good_ate(g, p, unscaled=True),
        lambda g, p: good_ate(g, p).flip(0),  # [scale, error]
    ],
}


EXERCISES = exercises({"source_pixels": checks.check_source_pixels, "explainability_loss": checks.check_explainability_loss,
                       "ate": checks.check_ate_alignment}, GOOD, WRONG)  # run by tests/test_checks.py's harness


def test_feedback_names_the_mistake():
    with pytest.raises(checks.CheckFailed, match="other way round"):
        checks.check_source_pixels(WRONG["source_pixels"][0])
    with pytest.raises(checks.CheckFailed, match="half-pixel"):
        checks.check_source_pixels(WRONG["source_pixels"][2])
    with pytest.raises(checks.CheckFailed, match="channel 1"):
        checks.check_explainability_loss(WRONG["explainability_loss"][0])
    with pytest.raises(checks.CheckFailed, match=r"not \+log E"):
        checks.check_explainability_loss(WRONG["explainability_loss"][1])
    with pytest.raises(checks.CheckFailed, match="valid pixels"):
        checks.check_explainability_loss(WRONG["explainability_loss"][2])
    with pytest.raises(checks.CheckFailed, match="first frame"):
        checks.check_ate_alignment(WRONG["ate"][0])
    with pytest.raises(checks.CheckFailed, match="inverse"):
        checks.check_ate_alignment(WRONG["ate"][1])
    with pytest.raises(checks.CheckFailed, match="root-mean-square"):
        checks.check_ate_alignment(WRONG["ate"][2])

