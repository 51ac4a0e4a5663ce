"""Every exercise check accepts a correct answer and rejects plausible wrong ones.

The wrong answers here are written out independently of the hints inside the checks, the way a
student might get them wrong; each must be rejected with a CheckFailed. This file holds the
answers of chapters 00-06 and the one harness that runs every chapter's table of exercises
(``EXERCISES``; chapters 07-11 keep theirs in ``tests/test_checks_chNN.py``, the plumbing is
``tests/_check_harness.py``).
"""

import importlib
import inspect
import math
import pkgutil
import re

import numpy as np
import pytest
import torch

from lesson_lib.course import checks
from lesson_lib.data import load_middlebury_motorcycle

import test_checks_ch07 as ch07
import test_checks_ch08 as ch08
import test_checks_ch09 as ch09
import test_checks_ch10 as ch10
import test_checks_ch11 as ch11
from _check_harness import exercises


@pytest.fixture(scope="module")
def raw_disparity():
    from skimage import data

    return data.stereo_motorcycle()[2]


# -- reference answers written as a student would -------------------------------------------------


def good_image(img):
    return torch.tensor(img, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0) / 255.0


def good_d2z(d, f, b, doffs):
    return f * b / (d + doffs)


def good_uncertainty(z, f, b, dd):
    return z**2 * dd / (f * b)


def good_middlebury(disp, c):
    valid = np.isfinite(disp)
    depth = np.zeros(disp.shape, dtype=np.float64)
    depth[valid] = c.focal * c.baseline / (disp[valid] + c.doffs)
    return depth, valid


def good_project(P, K):
    p = K @ P
    return p[:, :2] / p[:, 2:3]


def good_backproject(depth, K):
    b, _, h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=depth.dtype), torch.arange(w, dtype=depth.dtype), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)
    rays = torch.linalg.inv(K) @ pix
    return (rays * depth.reshape(b, 1, -1)).reshape(b, 3, h, w)


def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def good_euler(angles):
    return torch.stack([_rx(float(a[0])) @ _ry(float(a[1])) @ _rz(float(a[2])) for a in angles])


def good_invert(T):
    return torch.linalg.inv(T)


def good_scale(K, sx, sy):
    K2 = K.clone()
    K2[:, 0, 0] *= sx
    K2[:, 1, 1] *= sy
    K2[:, 0, 2] = (K[:, 0, 2] + 0.5) * sx - 0.5
    K2[:, 1, 2] = (K[:, 1, 2] + 0.5) * sy - 0.5
    return K2


def good_bilinear(im, u, v):
    u0, v0 = math.floor(u), math.floor(v)
    a, b = u - u0, v - v0
    return (1 - a) * (1 - b) * im[:, v0, u0] + a * (1 - b) * im[:, v0, u0 + 1] + (1 - a) * b * im[:, v0 + 1, u0] + a * b * im[:, v0 + 1, u0 + 1]


def good_normalize(u, n, align_corners):
    return 2 * u / (n - 1) - 1 if align_corners else (2 * u + 1) / n - 1


def good_stereo_grid(d):
    b, _, h, w = d.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=d.dtype), torch.arange(w, dtype=d.dtype), indexing="ij")
    return torch.stack([u.expand(b, h, w) - d[:, 0], v.expand(b, h, w)], 1)


def _box(t, mode="reflect"):
    return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(t, (1, 1, 1, 1), mode=mode), 3, 1)


def good_ssim(x, y, c1=0.01**2, c2=0.03**2, mode="reflect"):
    mx, my = _box(x, mode), _box(y, mode)
    sxx, syy, sxy = _box(x * x, mode) - mx**2, _box(y * y, mode) - my**2, _box(x * y, mode) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))


def good_photometric(p, t):
    return (0.85 * ((1 - good_ssim(p, t)) / 2).clamp(0, 1) + 0.15 * (p - t).abs()).mean(1, keepdim=True)


def good_smoothness(d, im, sign=-1.0, normalize=True):
    if normalize:
        d = d / (d.mean((2, 3), keepdim=True) + 1e-7)
    wx = torch.exp(sign * (im[..., :, 1:] - im[..., :, :-1]).abs().mean(1, keepdim=True))
    wy = torch.exp(sign * (im[..., 1:, :] - im[..., :-1, :]).abs().mean(1, keepdim=True))
    return ((d[..., :, 1:] - d[..., :, :-1]).abs() * wx).mean() + ((d[..., 1:, :] - d[..., :-1, :]).abs() * wy).mean()


def good_ray_box(o, d, lo, hi):
    t0, t1 = (lo - o) / d, (hi - o) / d
    near, far = np.minimum(t0, t1).max(), np.maximum(t0, t1).min()
    return float(near) if far >= near and near > 0 else float("inf")


def good_wta(vol):
    n = vol.shape[1]
    best = vol.argmin(1, keepdim=True)
    c0 = vol.gather(1, best)
    cm = vol.gather(1, (best - 1).clamp(min=0))
    cp = vol.gather(1, (best + 1).clamp(max=n - 1))
    interior = (best > 0) & (best < n - 1)
    curv = torch.where(interior, cm - 2 * c0 + cp, torch.ones_like(c0))
    return best.to(vol.dtype) + torch.where(interior, (cm - cp) / (2 * curv), torch.zeros_like(c0))


def wta_no_ends(vol):
    """A wrong answer: neighbours clamped at the ends of the range, parabola applied there too."""
    n = vol.shape[1]
    best = vol.argmin(1, keepdim=True)
    c0 = vol.gather(1, best)
    cm = vol.gather(1, (best - 1).clamp(min=0))
    cp = vol.gather(1, (best + 1).clamp(max=n - 1))
    return best.to(vol.dtype) + (cm - cp) / (2 * (cm - 2 * c0 + cp))


def good_lr(d_l, d_r, tau, sign=-1.0, strict=False, rounding=False, inside_test=True, absolute=True):
    """Linear interpolation by hand; the keywords make the known wrong versions."""
    w = d_l.shape[-1]
    xs = torch.arange(w, dtype=d_l.dtype).view(1, 1, 1, w) + sign * d_l
    inside = (xs >= 0) & (xs <= w - 1)
    if rounding:
        back = d_r.gather(-1, xs.round().long().clamp(0, w - 1))
    else:
        xc = xs.clamp(0, w - 1)
        x0 = xc.floor().clamp(max=w - 2)
        a = xc - x0
        back = (1 - a) * d_r.gather(-1, x0.long()) + a * d_r.gather(-1, x0.long() + 1)
    gap = (d_l - back).abs() if absolute else d_l - back
    ok = gap < tau if strict else gap <= tau
    return ok & inside if inside_test else ok


def good_lr_with_warp(d_l, d_r, tau):
    from lesson_lib import warping

    back, inside = warping.stereo_warp(d_r, d_l, "right")
    return inside & ((d_l - back).abs() <= tau)


# -- wrong answers -------------------------------------------------------------------------------


def _read_at(src, x_new):
    """src (B, 1, H, W) read at columns x_new (B, 1, H, W), linear, border padding; by hand."""
    w = src.shape[-1]
    x = x_new.clamp(0, w - 1)
    x0 = x.floor().clamp(max=w - 2).long()
    t = x - x0
    a = torch.gather(src, -1, x0)
    b = torch.gather(src, -1, x0 + 1)
    return a * (1 - t) + b * t


def good_lr_term(dl, dr, power=1, side=1.0, to_pixels=True):
    w = dl.shape[-1]
    scale = w if to_pixels else 1.0
    cols = torch.arange(w, dtype=dl.dtype).expand_as(dl)
    r_at_l = _read_at(dr, cols - side * dl * scale)
    l_at_r = _read_at(dl, cols + side * dr * scale)
    return (dl - r_at_l).abs().pow(power).mean() + (dr - l_at_r).abs().pow(power).mean()


def _zero_pad_lr(dl, dr):
    w = dl.shape[-1]
    cols = torch.arange(w, dtype=dl.dtype).expand_as(dl)
    xs_l, xs_r = cols - dl * w, cols + dr * w
    inside_l = ((xs_l >= 0) & (xs_l <= w - 1)).to(dl.dtype)
    inside_r = ((xs_r >= 0) & (xs_r <= w - 1)).to(dl.dtype)
    return (dl - _read_at(dr, xs_l) * inside_l).abs().mean() + (dr - _read_at(dl, xs_r) * inside_r).abs().mean()


def good_post_process(d, df, x_of=lambda w, dt: torch.arange(w, dtype=dt) / (w - 1), start=0.05, flip_back=True, swap=False):
    w = d.shape[-1]
    x = x_of(w, d.dtype)
    l = 1 - torch.clamp(20 * (x - start), 0, 1)
    r = torch.flip(l, [0])
    if swap:
        l, r = r, l
    b = torch.flip(df, [-1]) if flip_back else df
    return r * d + l * b + (1 - l - r) * (d + b) / 2

WRONG = {
    "image": [
        lambda im: torch.tensor(im, dtype=torch.float32).permute(2, 0, 1)[None],  # no / 255
        lambda im: torch.tensor(im, dtype=torch.float32).permute(2, 1, 0)[None] / 255,  # H and W swapped
        lambda im: torch.tensor(im, dtype=torch.float32)[None] / 255,  # channels last
        lambda im: torch.tensor(im, dtype=torch.float32).permute(2, 0, 1)[None] / 256,  # off scale
        lambda im: torch.tensor(im[..., ::-1].copy(), dtype=torch.float32).permute(2, 0, 1)[None] / 255,  # BGR
    ],
    "d2z": [
        lambda d, f, b, o: f * b / d,  # missing doffs
        lambda d, f, b, o: f / (b * d + o),  # focal and baseline in the wrong places
        lambda d, f, b, o: f * b * 1000 / (d + o),  # baseline in millimetres
        lambda d, f, b, o: f * b / (d - o),  # doffs subtracted
    ],
    "uncertainty": [
        lambda z, f, b, dd: z * dd / (f * b),  # linear in Z
        lambda z, f, b, dd: z**2 * dd * f / b,  # f and B swapped
        lambda z, f, b, dd: z**2 / (f * b),  # error size ignored
    ],
    "middlebury": [
        lambda d, c: (c.focal * c.baseline / (d + c.doffs), ~np.isnan(d)),  # trusts "NaN = invalid": inf kept valid
        lambda d, c: (np.where(np.isfinite(d), c.focal * c.baseline / np.maximum(d, 1e-3), 0.0), np.isfinite(d)),  # no doffs
        lambda d, c: (np.where(np.isfinite(d), c.focal * c.baseline * 1000 / (d + c.doffs), 0.0), np.isfinite(d)),  # mm
        lambda d, c: (np.where(np.isfinite(d), c.focal * c.baseline / (d + c.doffs), np.nan), np.isfinite(d)),  # NaN
        lambda d, c: (np.where(np.isfinite(d), c.focal * c.baseline / (d + c.doffs), 0.0), np.ones(d.shape, bool)),  # mask
    ],
    "project": [
        lambda P, K: (K.transpose(1, 2) @ P)[:, :2] / P[:, 2:3],  # transposed K
        lambda P, K: (K @ P)[:, :2],  # no division
        lambda P, K: good_project(P, K)[:, [1, 0]],  # u and v swapped
        lambda P, K: good_project(P, K) + 0.5,  # half-pixel offset
        lambda P, K: good_project(P, K).transpose(1, 2),  # (B, N, 2) layout
    ],
    "backproject": [
        lambda D, K: good_backproject(D, K) / D,  # a ray, not a point
        lambda D, K: good_backproject(D, K.transpose(1, 2)),  # transposed K
        lambda D, K: good_backproject(D, K) - 0.5 * D / K[:, :1, :1, None].expand(-1, 3, 1, 1),  # half pixel
        lambda D, K: torch.stack([good_backproject(D, K)[:, i] for i in (1, 0, 2)], 1),  # x/y swapped
    ],
    "euler": [
        lambda a: good_euler(a).transpose(1, 2),  # transposed rotation
        lambda a: torch.stack([_rz(float(x[2])) @ _ry(float(x[1])) @ _rx(float(x[0])) for x in a]),  # order
        lambda a: good_euler(a * 180 / math.pi),  # degrees for radians
        lambda a: good_euler(torch.stack([a[:, 2], a[:, 1], a[:, 0]], 1)),  # [rz, ry, rx] order of inputs
    ],
    "invert": [
        lambda T: torch.cat([torch.cat([T[:, :3, :3].transpose(1, 2), -T[:, :3, 3:]], 2), T[:, 3:]], 1),  # -t
        lambda T: T.transpose(1, 2),  # transpose
        lambda T: torch.cat([torch.cat([T[:, :3, :3], -T[:, :3, 3:]], 2), T[:, 3:]], 1),  # R kept
    ],
    "scale": [
        lambda K, sx, sy: K * torch.tensor([[sx], [sy], [1.0]]),  # cx * s: half-pixel error
        lambda K, sx, sy: good_scale(K, sy, sx),  # swapped
        lambda K, sx, sy: good_scale(K, 1 / sx, 1 / sy),  # inverse factors
        lambda K, sx, sy: torch.cat([K[:, :2] * torch.tensor([[[sx], [sy]]]).squeeze(-1)[..., None], K[:, 2:]], 1),
    ],
    "bilinear": [
        lambda im, u, v: good_bilinear(im, v, u) if max(u, v) < min(im.shape[1:]) - 1 else im[:, 0, 0] * 0,  # u/v swapped
        lambda im, u, v: im[:, round(v), round(u)],  # nearest neighbour
        lambda im, u, v: good_bilinear(im, max(u - 0.5, 0.0), max(v - 0.5, 0.0)),  # half-pixel offset
    ],
    "normalize": [
        lambda u, n, ac: 2 * u / (n - 1) - 1,  # ignores align_corners
        lambda u, n, ac: 2 * u / n - 1,  # neither
        lambda u, n, ac: good_normalize(u, n, not ac),  # swapped
        lambda u, n, ac: good_normalize(u + 0.5, n, ac),  # half pixel
    ],
    "stereo_grid": [
        lambda d: good_stereo_grid(-d),  # x + d
        lambda d: good_stereo_grid(d)[:, [1, 0]],  # v first
        lambda d: good_stereo_grid(d) - 0.5,  # half pixel
        lambda d: good_stereo_grid(torch.zeros_like(d)),  # disparity ignored
    ],
    "ssim": [
        lambda x, y: good_ssim(x, y, mode="constant"),  # zero padding
        lambda x, y: good_ssim(x, y, c1=0.01, c2=0.03),  # constants not squared
        lambda x, y: good_ssim(x, y, c1=0.0, c2=0.0),  # no constants
        lambda x, y: good_ssim(x, y, mode="replicate"),  # replicate padding
    ],
    "photometric": [
        lambda p, t: (0.15 * ((1 - good_ssim(p, t)) / 2).clamp(0, 1) + 0.85 * (p - t).abs()).mean(1, keepdim=True),
        lambda p, t: (0.85 * (1 - good_ssim(p, t)) + 0.15 * (p - t).abs()).mean(1, keepdim=True),
        lambda p, t: 0.85 * ((1 - good_ssim(p, t)) / 2).clamp(0, 1) + 0.15 * (p - t).abs(),
        lambda p, t: (p - t).abs().mean(1, keepdim=True),
    ],
    "smoothness": [
        lambda d, im: good_smoothness(d, im, normalize=False),
        lambda d, im: good_smoothness(d, im, sign=0.0),  # not edge-aware
        lambda d, im: good_smoothness(d, im, sign=1.0),  # exp(+|dI|)
        lambda d, im: good_smoothness(d, im) / 2,  # x and y averaged instead of added
    ],
    "ray_box": [
        lambda o, d, lo, hi: float(np.maximum((lo - o) / d, (hi - o) / d).min()),  # exit, no miss test
        lambda o, d, lo, hi: good_ray_box(o, np.abs(d), lo, hi),  # ignores the sign of the direction
        lambda o, d, lo, hi: float(np.minimum((lo - o) / d, (hi - o) / d).max()),  # never reports a miss
        lambda o, d, lo, hi: good_ray_box(o, d, lo - 0.5, hi + 0.5),  # box half a metre too big
    ],
    "lr_term": [
        lambda dl, dr: good_lr_term(dl, dr, power=2),  # squared differences
        lambda dl, dr: good_lr_term(dl, dr, side=-1.0),  # d_r read at x + d_l, d_l at x - d_r
        lambda dl, dr: good_lr_term(dl, dr, to_pixels=False),  # fractions used as pixels
        _zero_pad_lr,  # zero padding outside the image
        lambda dl, dr: (dl - _read_at(dr, torch.arange(dl.shape[-1], dtype=dl.dtype) - dl * dl.shape[-1])).abs().mean(),  # one half only
    ],
    "post_process": [
        lambda d, df: good_post_process(d, df, flip_back=False),  # mirrored prediction not flipped back
        lambda d, df: good_post_process(d, df, swap=True),  # ramps swapped
        lambda d, df: good_post_process(d, df, x_of=lambda w, dt: torch.arange(w, dtype=dt) / w),  # x = u / W
        lambda d, df: good_post_process(d, df, start=0.0),  # ramp without the 5 % plateau
        lambda d, df: (d + torch.flip(df, [-1])) / 2,  # plain average
    ],
    "wta": [
        lambda v: good_wta(-v),  # argmax
        lambda v: 2 * v.argmin(1, keepdim=True).to(v.dtype) - good_wta(v),  # offset sign flipped
        lambda v: v.argmin(1, keepdim=True).to(v.dtype),  # no sub-pixel refinement
        lambda v: good_wta(v) + 0.5,  # half a pixel off
        lambda v: v.argmin(1, keepdim=True).to(v.dtype) + 2 * (good_wta(v) - v.argmin(1, keepdim=True).to(v.dtype)),  # no factor 2
        lambda v: good_wta(v)[:, 0],  # (B, H, W): channel dimension dropped
        lambda v: wta_no_ends(v),  # the parabola also at d = 0 and d = D - 1
    ],
    "lr": [
        lambda a, b, t: good_lr(a, b, t, sign=1.0),  # d_R read at x + d_L
        lambda a, b, t: good_lr(a, b, t, strict=True),  # < instead of <=
        lambda a, b, t: good_lr(a, b, t, rounding=True),  # nearest pixel, not linear
        lambda a, b, t: good_lr(a, b, t, inside_test=False),  # matches outside the image kept
        lambda a, b, t: good_lr(a, b, t, absolute=False),  # one-sided gap
        lambda a, b, t: good_lr(a, b, t + 0.5),  # threshold off by half a pixel
        lambda a, b, t: good_lr(b, a, t),  # the roles of the two maps swapped
        lambda a, b, t: ~good_lr(a, b, t),  # inconsistent pixels marked True
        lambda a, b, t: good_lr(a, b, t).float(),  # not a boolean mask
    ],
}


CHECKS = {
    "image": checks.check_image_to_tensor,
    "d2z": checks.check_disparity_to_depth,
    "uncertainty": checks.check_depth_uncertainty,
    "middlebury": checks.check_middlebury_depth,
    "project": checks.check_project,
    "backproject": checks.check_backproject,
    "euler": checks.check_euler_to_matrix,
    "invert": checks.check_invert_pose,
    "scale": checks.check_scale_intrinsics,
    "bilinear": checks.check_bilinear_at,
    "normalize": checks.check_normalize_coords,
    "stereo_grid": checks.check_stereo_sampling_grid,
    "ssim": checks.check_ssim_map,
    "photometric": checks.check_photometric_map,
    "smoothness": checks.check_edge_aware_smoothness,
    "ray_box": checks.check_ray_box,
    "wta": checks.check_wta_subpixel,
    "lr": checks.check_lr_consistency,
    "lr_term": checks.check_left_right_term,
    "post_process": checks.check_post_process,
}

GOOD = {
    "image": good_image,
    "d2z": good_d2z,
    "uncertainty": good_uncertainty,
    "middlebury": good_middlebury,
    "project": good_project,
    "backproject": good_backproject,
    "euler": good_euler,
    "invert": good_invert,
    "scale": good_scale,
    "bilinear": good_bilinear,
    "normalize": good_normalize,
    "stereo_grid": good_stereo_grid,
    "ssim": good_ssim,
    "photometric": good_photometric,
    "smoothness": good_smoothness,
    "ray_box": good_ray_box,
    "wta": good_wta,
    "lr": (good_lr, good_lr_with_warp),  # by hand, and with the library's stereo warp
    "lr_term": good_lr_term,
    "post_process": good_post_process,
}

EXERCISES = exercises(CHECKS, GOOD, WRONG, per_exercise={"middlebury": {"needs": ("raw_disparity",)}})


# -- the harness: every chapter's table (chapters 00-06 above, 07-11 in their own files) ----------

TABLES = {"00-06": EXERCISES, "07": ch07.EXERCISES, "08": ch08.EXERCISES, "09": ch09.EXERCISES,
          "10": ch10.EXERCISES, "11": ch11.EXERCISES}
RIGHT_CASES = [pytest.param(ex, right, id=f"{ch}-{name}" + (f"-{k}" if len(ex.right) > 1 else ""))
               for ch, table in TABLES.items() for name, ex in table.items() for k, right in enumerate(ex.right)]
WRONG_CASES = [pytest.param(ex, wrong, id=f"{ch}-{name}-{k}")
               for ch, table in TABLES.items() for name, ex in table.items() for k, wrong in enumerate(ex.wrong)]


@pytest.mark.parametrize("exercise, answer", RIGHT_CASES)
def test_check_accepts_a_right_answer(exercise, answer, request, capsys):
    assert exercise.check(answer, *(request.getfixturevalue(n) for n in exercise.needs)) is True
    assert "[passed]" in capsys.readouterr().out


@pytest.mark.parametrize("exercise, answer", WRONG_CASES)
def test_check_rejects_a_wrong_answer(exercise, answer, request):
    with pytest.raises(checks.CheckFailed) as info:
        exercise.check(answer, *(request.getfixturevalue(n) for n in exercise.needs))
    assert re.search(exercise.rejection, str(info.value)), str(info.value)


@pytest.mark.parametrize("chapter", sorted(TABLES))
def test_every_exercise_has_a_right_answer_and_three_wrong_ones(chapter):
    for name, ex in TABLES[chapter].items():
        assert ex.right and len(ex.wrong) >= 3, f"chapter {chapter}, {name}: {len(ex.right)} right, {len(ex.wrong)} wrong"


def test_feedback_names_the_element_and_the_mistake():
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_disparity_to_depth(WRONG["d2z"][0])
    msg = str(info.value)
    assert "expected" in msg and "got" in msg and "index" in msg
    assert "doffs" in msg
    with pytest.raises(checks.CheckFailed, match="pixel \\*edges\\*"):
        checks.check_scale_intrinsics(WRONG["scale"][0])
    with pytest.raises(checks.CheckFailed, match="radians"):
        checks.check_euler_to_matrix(WRONG["euler"][2])
    with pytest.raises(checks.CheckFailed, match="transposed or permuted"):
        checks.check_project(WRONG["project"][4])
    with pytest.raises(checks.CheckFailed, match="inf or NaN"):
        checks.check_middlebury_depth(WRONG["middlebury"][3], load_middlebury_motorcycle().disparity[0, 0].numpy())


def _not_done(*args):
    raise NotImplementedError()


def test_unfinished_exercise_reports_and_returns_false(monkeypatch, capsys):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("LESSON_LIB_STRICT_CHECKS", raising=False)
    assert checks.check_project(_not_done) is False
    assert "not implemented yet" in capsys.readouterr().out


@pytest.mark.parametrize("var, value", [("NBGRADER_EXECUTION", "autograde"), ("NBGRADER_EXECUTION", "validate"), ("LESSON_LIB_STRICT_CHECKS", "1")])
def test_unfinished_exercise_fails_when_grading(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(checks.ExerciseNotDone, match="not implemented yet"):
        checks.check_invert_pose(_not_done)


def test_student_exception_and_non_function_and_none():
    def broken(P, K):
        return P @ K  # shape error

    with pytest.raises(checks.CheckFailed, match="your function raised RuntimeError"):
        checks.check_project(broken)
    with pytest.raises(checks.CheckFailed, match="expected a function"):
        checks.check_project(42)
    with pytest.raises(checks.CheckFailed, match="forget to `return`"):
        checks.check_project(lambda P, K: None)


@pytest.mark.parametrize(
    "check",
    [checks.check_wta_subpixel, checks.check_lr_consistency, checks.check_left_right_term, checks.check_post_process,
     checks.check_source_pixels, checks.check_explainability_loss, checks.check_ate_alignment,
     checks.check_normalising_transform, checks.check_eight_point, checks.check_ransac, checks.check_four_poses,
     checks.check_in_front, checks.check_midpoint],
)
def test_later_chapter_stubs_report_not_done_and_fail_when_grading(check, monkeypatch, capsys):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("LESSON_LIB_STRICT_CHECKS", raising=False)
    assert check(_not_done) is False
    assert "not implemented yet" in capsys.readouterr().out
    monkeypatch.setenv("LESSON_LIB_STRICT_CHECKS", "1")
    with pytest.raises(checks.ExerciseNotDone, match="not implemented yet"):
        check(_not_done)


def test_chapter05_feedback_names_the_mistake():
    with pytest.raises(checks.CheckFailed, match="flipped"):
        checks.check_wta_subpixel(WRONG["wta"][1])
    with pytest.raises(checks.CheckFailed, match="one neighbour is missing"):
        checks.check_wta_subpixel(WRONG["wta"][6])
    with pytest.raises(checks.CheckFailed, match="not at x \\+ d_L"):
        checks.check_lr_consistency(WRONG["lr"][0])
    with pytest.raises(checks.CheckFailed, match="<= threshold"):
        checks.check_lr_consistency(WRONG["lr"][1])
    with pytest.raises(checks.CheckFailed, match="linear interpolation"):
        checks.check_lr_consistency(WRONG["lr"][2])
    with pytest.raises(checks.CheckFailed, match="outside the right image"):
        checks.check_lr_consistency(WRONG["lr"][3])
    with pytest.raises(checks.CheckFailed, match="boolean mask"):
        checks.check_lr_consistency(WRONG["lr"][8])


def test_chapter06_feedback_names_the_mistake():
    with pytest.raises(checks.CheckFailed, match="multiply the fractions by the width"):
        checks.check_left_right_term(WRONG["lr_term"][2])
    with pytest.raises(checks.CheckFailed, match="x - d_l"):
        checks.check_left_right_term(WRONG["lr_term"][1])
    with pytest.raises(checks.CheckFailed, match="flip it back"):
        checks.check_post_process(WRONG["post_process"][0])
    with pytest.raises(checks.CheckFailed, match="left edge trust the flipped-back"):
        checks.check_post_process(WRONG["post_process"][1])


def test_every_check_is_exported_by_the_package():
    """A check defined in any chapter module is in the package's ``__all__`` and reachable
    as ``checks.check_...``, so notebooks need only ``from lesson_lib.course import checks``."""
    found = {}
    for info in pkgutil.walk_packages(checks.__path__, prefix=checks.__name__ + "."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("check_") and inspect.isfunction(obj) and obj.__module__ == module.__name__:
                found[name] = obj
    assert len(found) >= 20
    missing = sorted(set(found) - set(checks.__all__))
    assert not missing, f"checks not listed in lesson_lib.course.checks.__all__: {missing}"
    for name, fn in found.items():
        assert getattr(checks, name, None) is fn, f"lesson_lib.course.checks.{name} is not the function of its chapter module"
    assert {"CheckFailed", "ExerciseNotDone", "grading_mode"} <= set(checks.__all__)
    assert all(hasattr(checks, name) for name in checks.__all__)
