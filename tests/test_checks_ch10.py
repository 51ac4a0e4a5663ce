"""Chapter 10's exercise checks accept a correct answer and reject plausible wrong ones.

The answers are written out the way a student might write them (NumPy), independently of the
library and of the wrong versions inside the checks.
"""

import numpy as np
import pytest
import torch

from lesson_lib.course import checks

from _check_harness import exercises


def good_errors(pred, gt, rel_pred=False, no_sqrt=False, log10=False, one_sided=False, mean_ratio=False):
    d, g = pred.numpy(), gt.numpy()
    ref = d if rel_pred else g
    ratio = d / g if one_sided else np.maximum(d / g, g / d)
    log = np.log10 if log10 else np.log
    mse = np.mean((d - g) ** 2)
    out = [np.mean(np.abs(d - g) / ref), np.mean((d - g) ** 2 / g), mse if no_sqrt else np.sqrt(mse),
           np.sqrt(np.mean((log(d) - log(g)) ** 2))]
    if mean_ratio:  # a wrong threshold: the mean ratio instead of the share of pixels
        out += [float(np.mean(ratio) < 1.25 ** k) for k in (1, 2, 3)]
    else:
        out += [np.mean(ratio < 1.25 ** k) for k in (1, 2, 3)]
    return torch.tensor(out, dtype=torch.float64)


def good_median(pred, gt, max_depth, mean=False, inverted=False, everywhere=False, no_cap=False):
    p, g = pred.numpy(), gt.numpy()
    if everywhere:
        v = np.ones_like(g, dtype=bool)
    else:
        v = (g > 0) if no_cap else (g > 0) & (g <= max_depth)
    stat = np.mean if mean else np.median
    s = stat(g[v]) / stat(p[v])
    return torch.from_numpy(p / s if inverted else p * s)


def good_umeyama(source, target, no_fix=False, transposed=False, spread=False, t_no_scale=False, no_centre=False):
    x, y = source.numpy(), target.numpy()
    mx, my = (np.zeros(3), np.zeros(3)) if no_centre else (x.mean(0), y.mean(0))
    xc, yc = x - mx, y - my
    C = sum(np.outer(b, a) for a, b in zip(xc, yc)) / len(x)
    U, D, Vt = np.linalg.svd(C)
    S = np.eye(3)
    if not no_fix and np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    if transposed:
        R = R.T
    var = np.mean(np.sum(xc**2, axis=1))
    s = np.sqrt(np.mean(np.sum(yc**2, axis=1)) / var) if spread else np.trace(np.diag(D) @ S) / var
    t = my - (R @ mx if t_no_scale else s * R @ mx)
    return s, R, t


GOOD = {"depth_errors": good_errors, "median_scale": good_median, "umeyama": good_umeyama}

WRONG = {
    "depth_errors": [lambda p, g, w=w: good_errors(p, g, **{w: True})
                     for w in ("rel_pred", "no_sqrt", "log10", "one_sided", "mean_ratio")],
    "median_scale": [lambda p, g, m, w=w: good_median(p, g, m, **{w: True})
                     for w in ("mean", "inverted", "everywhere", "no_cap")],
    "umeyama": [lambda a, b, w=w: good_umeyama(a, b, **{w: True})
                for w in ("no_fix", "transposed", "spread", "t_no_scale", "no_centre")],
}

EXERCISES = exercises({"depth_errors": checks.check_depth_errors, "median_scale": checks.check_median_scale,
                       "umeyama": checks.check_umeyama}, GOOD, WRONG)  # run by tests/test_checks.py's harness


def test_hints_name_the_mistake():
    with pytest.raises(checks.CheckFailed, match="TRUE depth"):
        checks.check_depth_errors(lambda p, g: good_errors(p, g, rel_pred=True))
    with pytest.raises(checks.CheckFailed, match="MULTIPLIED"):
        checks.check_median_scale(lambda p, g, m: good_median(p, g, m, inverted=True))
    with pytest.raises(checks.CheckFailed, match="reflection"):
        checks.check_umeyama(lambda a, b: good_umeyama(a, b, no_fix=True))


def test_unfinished_exercises_are_reported_not_failed(capsys):
    def todo(*args):
        raise NotImplementedError()

    for check in (checks.check_depth_errors, checks.check_median_scale, checks.check_umeyama):
        assert check(todo) is False
    assert capsys.readouterr().out.count("not implemented yet") == 3
