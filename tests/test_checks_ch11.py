"""Chapter 11's exercise checks accept a correct answer and reject plausible wrong ones.

The answers are written out the way a student might write them (NumPy loops), independently of
the library and of the wrong versions inside the checks.
"""

import numpy as np
import pytest
import torch

from lesson_lib.course import checks

from _check_harness import exercises


def good_min(errors, valid, average=False, largest=False, all_sources=False, inf_for_unseen=False):
    e, v = errors.numpy(), valid.numpy()
    b, s, h, w = e.shape
    out = np.zeros((b, 1, h, w))
    for i in range(b):
        for y in range(h):
            for x in range(w):
                seen = [e[i, j, y, x] for j in range(s) if all_sources or v[i, j, y, x]]
                if not seen:
                    out[i, 0, y, x] = np.inf if inf_for_unseen else 0.0
                elif average:
                    out[i, 0, y, x] = np.mean(seen)
                else:
                    out[i, 0, y, x] = max(seen) if largest else min(seen)
    return torch.from_numpy(out)


def good_automask(reproj, identity, flipped=False, each_source=False, mean_identity=False, chosen_source=False):
    r, i = reproj.numpy(), identity.numpy()
    b, s, h, w = r.shape
    out = np.zeros((b, 1, h, w), dtype=bool)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                rs, ids = r[n, :, y, x], i[n, :, y, x]
                if each_source:
                    out[n, 0, y, x] = any(rs[j] < ids[j] for j in range(s))
                    continue
                ident = ids.mean() if mean_identity else (ids[rs.argmin()] if chosen_source else ids.min())
                out[n, 0, y, x] = rs.min() > ident if flipped else rs.min() < ident
    return torch.from_numpy(out)


GOOD = {"min_reprojection": good_min, "automask": good_automask}

WRONG = {
    "min_reprojection": [lambda e, v, w=w: good_min(e, v, **{w: True})
                         for w in ("average", "largest", "all_sources", "inf_for_unseen")],
    "automask": [lambda r, i, w=w: good_automask(r, i, **{w: True})
                 for w in ("flipped", "each_source", "mean_identity", "chosen_source")],
}

EXERCISES = exercises({"min_reprojection": checks.check_min_reprojection, "automask": checks.check_automask},
                      GOOD, WRONG)  # run by tests/test_checks.py's harness


def test_hints_name_the_mistake():
    with pytest.raises(checks.CheckFailed, match="SfMLearner's loss"):
        checks.check_min_reprojection(lambda e, v: good_min(e, v, average=True))
    with pytest.raises(checks.CheckFailed, match="reprojection < identity"):
        checks.check_automask(lambda r, i: good_automask(r, i, flipped=True))


def test_unfinished_exercises_are_reported_not_failed(capsys):
    def todo(*args):
        raise NotImplementedError()

    assert checks.check_min_reprojection(todo) is False and checks.check_automask(todo) is False
    assert capsys.readouterr().out.count("not implemented yet") == 2
