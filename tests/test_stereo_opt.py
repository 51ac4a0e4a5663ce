"""Chapter 05: the classical matcher (cost volume, winner-take-all, left-right check) and stereo
by optimisation, on small synthetic pairs with known disparity."""

import dataclasses
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from lesson_lib import losses, matching, metrics, stereo_opt, warping
from lesson_lib.stereo_opt import StereoOptions

H, W = 64, 96


def _astronaut(width=W + 24, top=250, left=250):
    """A textured crop of scikit-image's astronaut, ``(1, 3, H, width)`` float32 in [0, 1]."""
    a = skdata.astronaut()[top : top + H, left : left + width].astype(np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def _shifted_pair(d):
    """``right[x] = left[x + d]``: every left pixel ``x`` matches the right pixel ``x - d``."""
    img = _astronaut()
    return img[..., :W].contiguous(), img[..., d : d + W].contiguous()


def _blur(img, k=7, times=2):
    for _ in range(times):
        img = F.avg_pool2d(F.pad(img, (k // 2,) * 4, mode="reflect"), k, stride=1)
    return img


def _two_layer_scene(d_bg=2, d_fg=8, x0=40, x1=70):
    """A textured background at disparity ``d_bg`` with a differently textured foreground
    band (columns ``x0 .. x1 - 1`` of the left image) at ``d_fg``. Returns the pair and both
    ground-truth maps."""
    bg = _astronaut()
    cam = skdata.camera()[200 : 200 + H, 200 : 200 + W + 24].astype(np.float32) / 255.0
    fg = 0.5 * torch.from_numpy(cam)[None, None].expand(1, 3, H, -1) + 0.3 * torch.tensor(
        [1.0, 0.2, 0.2]
    ).view(1, 3, 1, 1)
    left = bg[..., :W].clone()
    left[..., x0:x1] = fg[..., x0:x1]
    right = bg[..., d_bg : d_bg + W].clone()
    xr = torch.arange(W)
    on_fg = ((xr + d_fg) >= x0) & ((xr + d_fg) < x1)
    right[..., on_fg] = fg[..., (xr + d_fg)[on_fg]]
    d_left = torch.full((1, 1, H, W), float(d_bg))
    d_left[..., x0:x1] = d_fg
    d_right = torch.full((1, 1, H, W), float(d_bg))
    d_right[..., on_fg] = d_fg
    return left, right, d_left, d_right


# 1. cost volume and winner-take-all ----------------------------------------------------------


@pytest.mark.parametrize("cost", matching.COSTS)
def test_wta_recovers_a_constant_integer_shift_exactly(cost):
    left, right = _shifted_pair(5)
    vol = matching.stereo_cost_volume(left, right, max_disp=12, window=5, cost=cost)
    assert vol.shape == (1, 13, H, W)
    assert torch.isinf(vol[:, 12, :, :12]).all() and torch.isfinite(vol[:, 12, :, 12:]).all()
    d = matching.winner_take_all(vol, subpixel=False)
    assert d.shape == (1, 1, H, W)
    assert torch.equal(d[..., 2:-2, 14:-2], torch.full_like(d[..., 2:-2, 14:-2], 5.0))
    # the right view's volume: the right pixel x matches the left pixel x + d
    d_r = matching.winner_take_all(
        matching.stereo_cost_volume(left, right, 12, window=5, cost=cost, reference="right"), subpixel=False
    )
    assert torch.equal(d_r[..., 2:-2, 2:-14], torch.full_like(d_r[..., 2:-2, 2:-14], 5.0))


def test_wta_recovers_piecewise_constant_disparity_exactly():
    img = _astronaut()
    left = img[..., :W].contiguous()
    right = torch.cat([img[..., : H // 2, 3 : 3 + W], img[..., H // 2 :, 7 : 7 + W]], dim=2)
    d = matching.winner_take_all(matching.stereo_cost_volume(left, right, 12, window=5), subpixel=False)
    top, bottom = d[..., 2 : H // 2 - 2, 14:-2], d[..., H // 2 + 2 : -2, 14:-2]
    assert torch.equal(top, torch.full_like(top, 3.0))
    assert torch.equal(bottom, torch.full_like(bottom, 7.0))


@pytest.mark.parametrize("cost", ["photometric", "sad"])
def test_parabola_refinement_recovers_a_subpixel_shift(cost):
    smooth = _blur(_astronaut())
    # the right view rebuilt from the left one: right[x] = left[x + 3.4], bilinearly
    right, inside = warping.stereo_warp(smooth, torch.full_like(smooth[:, :1], 3.4), "left")
    left, right = smooth[..., :W], right[..., :W]
    assert inside[..., :W].all()
    vol = matching.stereo_cost_volume(left, right, 8, window=5, cost=cost)
    inner = matching.winner_take_all(vol)[..., 4:-4, 12:-4]
    integer = matching.winner_take_all(vol, subpixel=False)[..., 4:-4, 12:-4]
    assert abs(float(inner.median()) - 3.4) < 0.1
    assert float((inner - 3.4).abs().mean()) < 0.1
    assert float((integer - 3.4).abs().mean()) > 0.3  # the refinement is what gets it there
    assert float((inner - integer).abs().max()) <= 0.5


def test_census_bits_basics():
    img = _astronaut()[..., :W]
    bits = matching.census_bits(img, 5)
    assert bits.shape == (1, 24, H, W) and bits.dtype == torch.bool
    # on a constant image no neighbour is smaller than the centre
    assert not matching.census_bits(torch.full((1, 3, 8, 8), 0.5), 3).any()
    # a pixel brighter than all its neighbours has every bit set, a darker one none
    spot = torch.zeros(1, 1, 5, 5)
    spot[..., 2, 2] = 1.0
    assert matching.census_bits(spot, 3)[0, :, 2, 2].all()
    assert not matching.census_bits(1 - spot, 3)[0, :, 2, 2].any()


def test_stereo_cost_volume_aggregates_with_the_course_box_filter():
    """The per-pixel SAD cost of disparity 0 is |left - right|, averaged over the window by
    :func:`lesson_lib.losses.box_filter`, to the bit."""
    left, right = _shifted_pair(5)
    for window in (3, 5, 9):
        vol = matching.stereo_cost_volume(left, right, 2, window=window, cost="sad")
        expected = losses.box_filter((left - right).abs().mean(1, keepdim=True), window)
        assert torch.equal(vol[:, :1], expected)


# 2. left-right check -------------------------------------------------------------------------


def test_lr_check_on_exact_two_layer_maps_flags_the_occluded_strip():
    _, _, d_left, d_right = _two_layer_scene()
    ok = matching.left_right_check(d_left, d_right)
    flagged = torch.nonzero(~ok[0, 0, 0]).flatten().tolist()
    # columns 0, 1 look outside the right image; 34 .. 39 are hidden behind the foreground
    assert flagged == [0, 1, 34, 35, 36, 37, 38, 39]
    assert (ok == ok[..., :1, :]).all()  # every row alike


def test_lr_check_of_the_matcher_flags_the_occluded_strip():
    left, right, d_gt, _ = _two_layer_scene()
    d_l, d_r, ok = matching.match(left, right, 12, window=5)
    rows = slice(2, -2)
    strip = torch.zeros(W, dtype=torch.bool)
    strip[34:40] = True
    visible = torch.ones(W, dtype=torch.bool)
    visible[:14], visible[31:43], visible[67:73], visible[-3:] = False, False, False, False
    assert float((~ok[..., rows, strip]).float().mean()) > 0.7
    assert float((~ok[..., rows, visible]).float().mean()) < 0.05
    epe, _ = metrics.epe_bad(d_l[..., rows, visible], d_gt[..., rows, visible])
    assert epe < 0.1


def test_fill_inconsistent_takes_the_background_of_the_row():
    d = torch.tensor([[[[5.0, 9.0, 9.0, 2.0, 7.0, 7.0]]]])
    ok = torch.tensor([[[[True, False, False, True, False, True]]]])
    out = matching.fill_inconsistent(d, ok)
    assert out.tolist() == [[[[5.0, 2.0, 2.0, 2.0, 2.0, 7.0]]]]
    # the border: only one side exists; a row with nothing consistent is kept
    d2 = torch.tensor([[[[1.0, 4.0, 3.0], [6.0, 6.0, 6.0]]]])
    ok2 = torch.tensor([[[[False, True, False], [False, False, False]]]])
    assert matching.fill_inconsistent(d2, ok2).tolist() == [[[[4.0, 4.0, 4.0], [6.0, 6.0, 6.0]]]]


def test_one_sided_consistency_allows_occlusions_the_symmetric_one_does_not():
    left, right, d_left, d_right = _two_layer_scene()
    sym = stereo_opt.stereo_losses(left, right, d_left, d_right, left_right_mode="symmetric")
    one = stereo_opt.stereo_losses(left, right, d_left, d_right, left_right_mode="one_sided")
    assert float(sym["consistency"]) > 0.1
    assert float(one["consistency"]) == 0.0
    const = torch.full_like(d_left, 3.0)
    assert float(stereo_opt.stereo_losses(left, right, const, const)["consistency"]) == 0.0


# 3. the optimiser ----------------------------------------------------------------------------


def _slanted_pair():
    """A textured pair whose disparity grows from 3 px (top row) to 6 px (bottom row); the
    right view is rebuilt from a wider left image, so it has no border holes."""
    wide = _astronaut()[..., : W + 8]
    y = torch.arange(H, dtype=torch.float32).view(1, 1, H, 1)
    d = (3.0 + 3.0 * y / (H - 1)).expand(1, 1, H, W + 8).contiguous()
    right, inside = warping.stereo_warp(wide, d, "left")
    assert inside[..., :W].all()
    return wide[..., :W].contiguous(), right[..., :W].contiguous(), d[..., :W].contiguous()


def _smooth_texture(seed, width=W + 24):
    """Uniform noise box-filtered three times and stretched to [0, 1], ``(1, 3, H, width)``:
    texture everywhere, smooth enough that the coarsest scale still sees it."""
    t = torch.rand(1, 3, H, width, generator=torch.Generator().manual_seed(seed))
    for _ in range(3):
        t = losses.box_filter(t, 3)
    return (t - t.amin()) / (t.amax() - t.amin())


def _rows_shifted(d_top, d_bottom, seed=0):
    """``right[x] = left[x + d]`` with ``d = d_top`` in the top half of the rows and
    ``d_bottom`` in the bottom half (exact integer shifts of one texture). Returns the pair and
    the true disparity, the same map for both views."""
    t = _smooth_texture(seed)
    left = t[..., :W]
    right = torch.cat([t[..., : H // 2, d_top : d_top + W], t[..., H // 2 :, d_bottom : d_bottom + W]], dim=2)
    d = torch.full((1, 1, H, W), float(d_top))
    d[..., H // 2 :, :] = float(d_bottom)
    return left.contiguous(), right.contiguous(), d


def _interior(view, margin=4, max_disp=12, band=3):
    """Pixels at least ``margin`` from the image border, ``max_disp + margin`` from the border
    whose matches leave the other view, and ``band`` rows from the middle row (the step)."""
    m = torch.zeros(1, 1, H, W, dtype=torch.bool)
    if view == "left":
        m[..., margin:-margin, max_disp + margin : -margin] = True
    else:
        m[..., margin:-margin, margin : -(max_disp + margin)] = True
    m[..., H // 2 - band : H // 2 + band, :] = False
    return m


# A constant start (max_disp / 2 = 8 px) that is 3 to 5 px from every true disparity below.
FROM_A_CONSTANT = StereoOptions(scales=(4, 2, 1), iters=(40, 30, 20), max_disp=16, init=None)


@pytest.mark.parametrize("d_top, d_bottom", [(5, 5), (3, 8)], ids=["constant", "two-rows-bands"])
def test_optimiser_recovers_known_integer_shifts(d_top, d_bottom):
    """Known answer: both maps within 0.25 px of the true shift at every interior pixel, 0.03 px
    on average (measured on seeds 0-4: at most 0.09 px, 0.010 px on average)."""
    left, right, d = _rows_shifted(d_top, d_bottom)
    res = stereo_opt.optimise_disparity(left, right, options=FROM_A_CONSTANT)
    assert res.disp_left.shape == res.disp_right.shape == (1, 1, H, W)
    for view, disp in (("left", res.disp_left), ("right", res.disp_right)):
        err = (disp - d).abs()[_interior(view)]
        assert float(err.max()) < 0.25, (view, float(err.max()))
        assert float(err.mean()) < 0.03, (view, float(err.mean()))


@pytest.mark.parametrize("init", [None, "wta"])
def test_optimiser_recovers_a_slanted_disparity(init):
    """Known answer off the integer grid: disparity 3 px (top) to 6 px (bottom), a bilinear
    warp of a real image; EPE below 0.3 px over the whole map, borders included."""
    left, right, d = _slanted_pair()
    options = StereoOptions(scales=(2, 1), iters=(100, 100), max_disp=10, init=init)
    res = stereo_opt.optimise_disparity(left, right, options=options)
    epe_l, _ = metrics.epe_bad(res.disp_left, d)
    epe_r, _ = metrics.epe_bad(res.disp_right, d)  # d depends on the row only: same map
    assert epe_l < 0.3 and epe_r < 0.3


def test_history_has_one_entry_per_step_in_order():
    left, right, _ = _slanted_pair()
    seen = []
    options = StereoOptions(scales=(2, 1), iters=(3, 2), max_disp=10)
    res = stereo_opt.optimise_disparity(left, right, options=options, progress=seen.append)
    assert [(e["scale"], e["step"]) for e in res.history] == [(2, 0), (2, 1), (2, 2), (1, 0), (1, 1)]
    assert seen == res.history
    assert {"scale", "step", "loss", "photometric", "smoothness", "consistency", "time_s"} == set(res.history[0])
    assert all(math.isnan(e["consistency"]) for e in res.history)  # weight 0: not computed
    with_term = dataclasses.replace(options, left_right_weight=(0.0, 0.1))
    hist = stereo_opt.optimise_disparity(left, right, options=with_term).history
    assert [math.isnan(e["consistency"]) for e in hist] == [True, True, True, False, False]
    # the total is the weighted sum of the terms
    e = hist[-1]
    assert e["loss"] == pytest.approx(e["photometric"] + 0.2 * e["smoothness"] + 0.1 * e["consistency"], rel=1e-6)


def test_optimise_disparity_is_optimise_scale_at_one_scale():
    left, right, d = _slanted_pair()
    options = StereoOptions(scales=(1,), iters=5, init=d, left_right_weight=0.05)
    whole = stereo_opt.optimise_disparity(left, right, options=options)
    one = stereo_opt.optimise_scale(left, right, d, d, options)
    assert torch.equal(whole.disp_left, one.disp_left) and torch.equal(whole.disp_right, one.disp_right)
    assert [e["loss"] for e in whole.history] == [e["loss"] for e in one.history]


def test_optimiser_is_deterministic_with_a_seed():
    left, right, _ = _slanted_pair()
    options = StereoOptions(scales=(2,), iters=10, max_disp=10, init_noise=0.5, left_right_weight=0.05, seed=3)
    a = stereo_opt.optimise_disparity(left, right, options=options)
    b = stereo_opt.optimise_disparity(left, right, options=options)
    c = stereo_opt.optimise_disparity(left, right, options=dataclasses.replace(options, seed=4))
    assert torch.equal(a.disp_left, b.disp_left) and torch.equal(a.disp_right, b.disp_right)
    assert not torch.equal(a.disp_left, c.disp_left)
    g = torch.Generator().manual_seed(3)
    d = stereo_opt.optimise_disparity(left, right, options=dataclasses.replace(options, seed=0), generator=g)
    assert torch.equal(a.disp_left, d.disp_left)


def test_optimiser_with_zero_iterations_returns_its_start():
    left, right, d = _slanted_pair()
    options = StereoOptions(scales=(2,), iters=0, init=d, left_right_fill=False)
    res = stereo_opt.optimise_disparity(left, right, options=options)
    assert res.history == []
    torch.testing.assert_close(res.disp_left, d, atol=0.05, rtol=0)  # down to 1/2 and back up
    const = stereo_opt.optimise_disparity(
        left, right, options=StereoOptions(scales=(1,), iters=0, init="constant", init_value=4.5)
    )
    assert torch.equal(const.disp_left, torch.full_like(d, 4.5))


def test_upsample_disparity_scales_the_values():
    d = torch.full((1, 1, 4, 6), 2.5)
    up = stereo_opt.upsample_disparity(d, (8, 12))
    torch.testing.assert_close(up, torch.full((1, 1, 8, 12), 5.0))


# 4. the options --------------------------------------------------------------------------------


def test_options_defaults_and_normalisation():
    o = StereoOptions()
    assert (o.scales, o.iters, o.learning_rate, o.smoothness_weight, o.left_right_weight) == (
        (4, 2, 1), (300, 150, 40), 0.1, 0.2, 0.0
    )
    assert (o.max_disp, o.init, o.left_right_fill, o.left_right_threshold, o.left_right_mode) == (
        64, "wta", True, 1.0, "symmetric"
    )
    assert all(f.metadata["help"] for f in dataclasses.fields(StereoOptions))
    assert not any(re.search(r"(^|_)lr(_|$)", f.name) for f in dataclasses.fields(StereoOptions))
    o = StereoOptions(scales=[2, 1], iters=[5, 6], learning_rate=[0.2, 0.1])
    assert o.scales == (2, 1) and o.iters == (5, 6)
    assert o.for_scale(1) == {"scale": 1, "iters": 6, "learning_rate": 0.1, "smoothness_weight": 0.2, "left_right_weight": 0.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.iters = 3


_T = torch.ones(1, 1, 4, 4)

BAD_OPTIONS = [
    ("scales", ()),
    ("scales", (4, 0)),
    ("scales", (2.0, 1)),
    ("scales", 2),
    ("iters", (10, 10)),  # three scales by default
    ("iters", -1),
    ("iters", 1.5),
    ("iters", True),
    ("learning_rate", 0.0),
    ("learning_rate", (0.1, -0.1, 0.1)),
    ("learning_rate", float("nan")),
    ("smoothness_weight", -0.1),
    ("smoothness_weight", "0.2"),
    ("left_right_weight", -1.0),
    ("left_right_weight", (0.0, 0.1)),
    ("max_disp", -4),
    ("max_disp", float("inf")),
    ("init", "oracle"),
    ("init", 3),
    ("init", (_T,)),
    ("init", torch.full((1, 1, 4, 4), float("nan"))),
    ("left_right_fill", "yes"),
    ("occlusion_mask", 1),
    ("left_right_threshold", -1.0),
    ("left_right_mode", "both"),
    ("edge_gain", -1.0),
    ("final_learning_rate_ratio", 0.0),
    ("final_learning_rate_ratio", 1.5),
    ("alpha", 1.2),
    ("init_value", -1.0),
    ("init_window", 4),
    ("init_census_window", 0),
    ("init_noise", -0.1),
    ("seed", 1.5),
]


@pytest.mark.parametrize("name, value", BAD_OPTIONS, ids=[f"{n}={v!r}"[:40] for n, v in BAD_OPTIONS])
def test_options_reject_a_bad_value_naming_the_field(name, value):
    with pytest.raises(ValueError, match=re.escape(f"StereoOptions.{name}")):
        StereoOptions(**{name: value})
    with pytest.raises(ValueError, match=re.escape(f"StereoOptions.{name}")):  # variants are checked too
        dataclasses.replace(StereoOptions(), **{name: value})


# 5. metrics ----------------------------------------------------------------------------------


def test_epe_bad_known_numbers():
    pred = torch.tensor([[[[1.0, 2.0, 5.0, 0.0]]]])
    gt = torch.tensor([[[[1.0, 1.0, 2.0, 0.0]]]])
    valid = torch.tensor([[[[True, True, True, False]]]])
    epe, bad = metrics.epe_bad(pred, gt, valid)
    assert epe == pytest.approx(4.0 / 3.0) and bad == pytest.approx(1.0 / 3.0)
    epe, bad = metrics.epe_bad(pred, gt)  # all four pixels
    assert epe == pytest.approx(1.0) and bad == pytest.approx(0.25)
    assert metrics.epe_bad(pred, gt, valid, threshold=0.5)[1] == pytest.approx(2.0 / 3.0)


# 6. bad input --------------------------------------------------------------------------------


def test_bad_input_raises():
    left, right = _shifted_pair(5)
    with pytest.raises(ValueError, match="max_disp"):
        matching.stereo_cost_volume(left, right, -1)
    with pytest.raises(ValueError, match="max_disp"):
        matching.stereo_cost_volume(left, right, W)
    with pytest.raises(ValueError, match="right"):
        matching.stereo_cost_volume(left, right[..., :-6], 8)
    with pytest.raises(ValueError, match="window"):
        matching.stereo_cost_volume(left, right, 8, window=4)
    with pytest.raises(ValueError, match="cost"):
        matching.stereo_cost_volume(left, right, 8, cost="ncc")
    with pytest.raises(ValueError, match="reference"):
        matching.stereo_cost_volume(left, right, 8, reference="middle")
    with pytest.raises(ValueError, match="disp_right"):
        matching.left_right_check(torch.ones(1, 1, 4, 5), torch.ones(1, 1, 4, 6))
    with pytest.raises(ValueError, match="right"):
        stereo_opt.optimise_disparity(left, right[..., :-6])
    with pytest.raises(ValueError, match="init left"):  # a start map of the wrong batch size
        stereo_opt.optimise_disparity(left, right, options=StereoOptions(init=torch.ones(2, 1, 8, 8)))
    with pytest.raises(TypeError, match="StereoOptions"):
        stereo_opt.optimise_disparity(left, right, options={"iters": 3})
    with pytest.raises(ValueError, match="left_right_mode"):
        stereo_opt.stereo_losses(left, right, left[:, :1], left[:, :1], left_right_mode="both")
    with pytest.raises(ValueError, match="same shape"):
        metrics.epe_bad(torch.ones(1, 1, 4, 5), torch.ones(1, 1, 4, 6))
    with pytest.raises(ValueError, match="no pixel"):
        metrics.epe_bad(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.bool))
