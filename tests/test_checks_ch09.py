"""Chapter 09's exercise checks accept a correct answer and reject plausible wrong ones.

The answers are written out the way a student might write them (NumPy, loops), independently
of the library and of the wrong versions inside the checks.
"""

import numpy as np
import pytest
import torch

from lesson_lib.course import checks


# -- answers written as a student would ---------------------------------------------------------


def good_cost_volume(f1, f2, d, total=False, du_outer=False, backwards=False, wrap=False):
    a, b = f1.numpy(), f2.numpy()
    n, c, h, w = a.shape
    out = np.zeros((n, (2 * d + 1) ** 2, h, w))
    for dv in range(-d, d + 1):
        for du in range(-d, d + 1):
            k = (du + d) * (2 * d + 1) + (dv + d) if du_outer else (dv + d) * (2 * d + 1) + (du + d)
            sv, su = (-dv, -du) if backwards else (dv, du)
            for v in range(h):
                for u in range(w):
                    vv, uu = v + sv, u + su
                    if wrap:
                        vv, uu = vv % h, uu % w
                    elif not (0 <= vv < h and 0 <= uu < w):
                        continue
                    prod = (a[:, :, v, u] * b[:, :, vv, uu]).sum(1)
                    out[:, k, v, u] = prod if total else prod / c
    return torch.from_numpy(out)


def _bilinear(img, x, y):
    """img (C, H, W) read at (x, y), zeros outside."""
    c, h, w = img.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    val = np.zeros(c)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            wgt = (1 - abs(x - xx)) * (1 - abs(y - yy))
            if 0 <= xx < w and 0 <= yy < h and wgt > 0:
                val += wgt * img[:, yy, xx]
    return val


def good_fb_visible(fw, bw, a1, a2, minus=False, same_pixel=False, absolute_only=False):
    f, g = fw.numpy()[0], bw.numpy()[0]
    _, h, w = f.shape
    out = np.zeros((1, 1, h, w), dtype=bool)
    for v in range(h):
        for u in range(w):
            ff = f[:, v, u]
            bb = g[:, v, u] if same_pixel else _bilinear(g, u + ff[0], v + ff[1])
            diff = ff - bb if minus else ff + bb
            bound = a2 + (0.0 if absolute_only else a1 * (ff @ ff + bb @ bb))
            out[0, 0, v, u] = diff @ diff < bound
    return torch.from_numpy(out)


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


GOOD = {"cost_volume": good_cost_volume, "fb_visible": good_fb_visible, "top": good_top, "scale": good_scale}

WRONG = {
    "cost_volume": [
        lambda *a: good_cost_volume(*a, total=True),  # summed over channels
        lambda *a: good_cost_volume(*a, du_outer=True),  # channel order transposed
        lambda *a: good_cost_volume(*a, backwards=True),  # f2 read at p - d
        lambda *a: good_cost_volume(*a, wrap=True),  # wraps around
    ],
    "fb_visible": [
        lambda *a: good_fb_visible(*a, minus=True),
        lambda *a: good_fb_visible(*a, same_pixel=True),
        lambda *a: good_fb_visible(*a, absolute_only=True),
        lambda fw, bw, a1, a2: good_fb_visible(fw, bw, a2, a1),  # tolerances swapped
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


def _call(name, fn):
    return {"cost_volume": checks.check_cost_volume, "fb_visible": checks.check_fb_visible,
            "top": checks.check_top_correspondences, "scale": checks.check_scale_registration}[name](fn)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_check_accepts_a_correct_answer(name, capsys):
    assert _call(name, GOOD[name]) is True
    assert "[passed]" in capsys.readouterr().out


@pytest.mark.parametrize("name, i", [(n, i) for n in sorted(WRONG) for i in range(len(WRONG[n]))])
def test_check_rejects_a_wrong_answer(name, i):
    with pytest.raises(checks.CheckFailed) as info:
        _call(name, WRONG[name][i])
    assert "wrong on case" in str(info.value) or "raised" in str(info.value) or "shape" in str(info.value)


def test_feedback_names_the_mistake():
    with pytest.raises(checks.CheckFailed, match="average over the channels"):
        checks.check_cost_volume(WRONG["cost_volume"][0])
    with pytest.raises(checks.CheckFailed, match="outer loop"):
        checks.check_cost_volume(WRONG["cost_volume"][1])
    with pytest.raises(checks.CheckFailed, match="pad with zeros"):
        checks.check_cost_volume(WRONG["cost_volume"][3])
    with pytest.raises(checks.CheckFailed, match="comes back"):
        checks.check_fb_visible(WRONG["fb_visible"][0])
    with pytest.raises(checks.CheckFailed, match="flow_warp"):
        checks.check_fb_visible(WRONG["fb_visible"][1])
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
