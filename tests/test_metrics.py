"""Depth metrics (lesson_lib.metrics): known answers, an independent NumPy implementation,
per-image averaging, median scaling, and clear errors."""

import math

import numpy as np
import pytest
import torch

from lesson_lib.metrics import METRIC_NAMES, depth_metrics, format_metrics, garg_crop_mask, image_depth_errors


def _numpy_errors(gt, pred):
    """The seven metrics written independently, in NumPy, straight from their definitions."""
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": np.mean(np.abs(gt - pred) / gt),
        "sq_rel": np.mean((gt - pred) ** 2 / gt),
        "rmse": np.sqrt(np.mean((gt - pred) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2)),
        "a1": np.mean(thresh < 1.25),
        "a2": np.mean(thresh < 1.25**2),
        "a3": np.mean(thresh < 1.25**3),
    }


def _gt(seed=0, b=2, h=16, w=24):
    g = torch.Generator().manual_seed(seed)
    return 1.0 + 60.0 * torch.rand(b, 1, h, w, generator=g, dtype=torch.float64)


def test_perfect_prediction_has_zero_error():
    gt = _gt()
    m = depth_metrics(gt.clone(), gt)
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log"):
        assert m[k] == pytest.approx(0.0, abs=1e-12)
    for k in ("a1", "a2", "a3"):
        assert m[k] == 1.0


def test_known_answers_for_a_constant_factor():
    gt = _gt()
    m = depth_metrics(2 * gt, gt, max_depth=200.0)
    assert m["abs_rel"] == pytest.approx(1.0)
    assert m["rmse_log"] == pytest.approx(math.log(2))
    assert m["sq_rel"] == pytest.approx(float(gt.mean(dim=(1, 2, 3)).mean()))
    assert m["rmse"] == pytest.approx(float(gt.square().mean(dim=(1, 2, 3)).sqrt().mean()))
    assert (m["a1"], m["a2"], m["a3"]) == (0.0, 0.0, 0.0)  # 2 > 1.25^3 = 1.953
    m = depth_metrics(1.5 * gt, gt, max_depth=200.0)
    assert (m["a1"], m["a2"], m["a3"]) == (0.0, 1.0, 1.0)  # 1.25 < 1.5 < 1.5625


def test_matches_an_independent_numpy_implementation():
    gt = _gt(1, b=3)
    g = torch.Generator().manual_seed(2)
    pred = gt * torch.exp(0.3 * torch.randn(gt.shape, generator=g, dtype=torch.float64))
    rows = depth_metrics(pred, gt, max_depth=1000.0, per_image=True)
    for b in range(3):
        want = _numpy_errors(gt[b, 0].numpy().ravel(), pred[b, 0].numpy().ravel())
        for k in METRIC_NAMES:
            assert rows[b][k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k


def test_per_image_average_not_pixel_weighted():
    gt = torch.full((2, 1, 4, 4), 10.0)
    pred = gt.clone()
    pred[0] = 20.0  # image 0 entirely wrong (abs rel 1)
    mask = torch.ones_like(gt, dtype=torch.bool)
    mask[1, :, :1, :1] = True
    mask[1, :, 1:, :] = True  # image 1: 13 valid pixels, image 0: 16
    mask[1, :, 0, 1:] = False
    m = depth_metrics(pred, gt, mask)
    assert m["abs_rel"] == pytest.approx(0.5)  # (1 + 0) / 2, not 16 / 29


def test_invalid_ground_truth_is_left_out():
    gt = _gt()
    pred = gt.clone()
    gt_holes = gt.clone()
    gt_holes[:, :, :4] = 0.0  # sky / no LiDAR
    gt_holes[:, :, 4:6] = 500.0  # beyond the cap
    pred[:, :, :6] = 3.0  # wrong there, but those pixels do not count
    assert depth_metrics(pred, gt_holes)["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert depth_metrics(pred, gt)["abs_rel"] > 0.1


def test_median_scaling_removes_a_global_factor():
    gt = _gt(3)
    g = torch.Generator().manual_seed(4)
    noisy = gt * torch.exp(0.1 * torch.randn(gt.shape, generator=g, dtype=torch.float64))
    base = depth_metrics(noisy, gt, max_depth=1000.0, median_scaling=True)
    scaled = depth_metrics(0.01 * noisy, gt, max_depth=1000.0, median_scaling=True)
    for k in METRIC_NAMES:
        assert scaled[k] == pytest.approx(base[k], rel=1e-9)
    assert scaled["scale"] == pytest.approx(100 * base["scale"], rel=1e-9)
    assert depth_metrics(0.01 * noisy, gt, max_depth=1000.0)["abs_rel"] > 0.9


def test_prediction_is_clamped_to_the_range():
    gt = torch.full((1, 1, 2, 2), 10.0)
    pred = torch.zeros(1, 1, 2, 2)  # zero depth: clamped to min_depth, no log(0)
    m = depth_metrics(pred, gt, min_depth=1e-3)
    assert math.isfinite(m["rmse_log"]) and m["abs_rel"] == pytest.approx(1 - 1e-4)


@pytest.mark.parametrize(
    "pred, gt, match",
    [
        (torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 5), "gt"),
        (torch.ones(1, 4, 4), torch.ones(1, 4, 4), "pred"),
        (torch.full((1, 1, 2, 2), float("nan")), torch.ones(1, 1, 2, 2), "NaN"),
        (-torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), ">= 0"),
        (torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "no valid ground-truth"),
    ],
)
def test_bad_input_is_refused(pred, gt, match):
    with pytest.raises(ValueError, match=match):
        depth_metrics(pred, gt)


def test_image_errors_need_valid_pixels():
    with pytest.raises(ValueError, match="no valid pixels"):
        image_depth_errors(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match="> 0"):
        image_depth_errors(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))


def test_garg_crop_covers_the_published_window():
    m = garg_crop_mask(375, 1242)
    rows = m[0, 0].any(1).nonzero().ravel()
    cols = m[0, 0].any(0).nonzero().ravel()
    assert (int(rows[0]), int(rows[-1]) + 1) == (153, 371)
    assert (int(cols[0]), int(cols[-1]) + 1) == (44, 1197)


def test_format_metrics_lists_every_row():
    text = format_metrics({"a": dict.fromkeys(METRIC_NAMES, 0.5), "bb": dict.fromkeys(METRIC_NAMES, 1.0)})
    lines = text.splitlines()
    assert len(lines) == 3 and lines[1].startswith("a ") and "1.0000" in lines[2]


# --------------------------------------------------------------------------- masks against the truth


def test_roc_auc_known_answers():
    from lesson_lib.metrics import roc_auc

    y = torch.tensor([0, 0, 1, 1], dtype=torch.bool)
    assert roc_auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert roc_auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert roc_auc(torch.full((4,), 0.3), y) == 0.5  # all tied: chance
    # by hand: positives 0.35 and 0.8 against negatives 0.1 and 0.4: pairs won 1 + 2 of 4
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), y) == 0.75
    # a tie between a positive and a negative counts one half
    assert roc_auc(torch.tensor([0.1, 0.5, 0.5, 0.9]), y) == pytest.approx(0.875)
    # against a brute-force count over all pairs
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (60,), generator=g).double()
    lab = torch.rand(60, generator=g) < 0.3
    pos, neg = s[lab], s[~lab]
    brute = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean()
    assert roc_auc(s, lab) == pytest.approx(float(brute))
    with pytest.raises(ValueError, match="positives and negatives"):
        roc_auc(torch.rand(4), torch.zeros(4, dtype=torch.bool))


def test_precision_recall_known_answers():
    from lesson_lib.metrics import precision_recall

    r = precision_recall(torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool), torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool))
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    r = precision_recall(torch.zeros(3, dtype=torch.bool), torch.tensor([1, 0, 0], dtype=torch.bool))
    assert math.isnan(r["precision"]) and r["recall"] == 0.0


def test_depth_edges_band_around_a_step():
    from lesson_lib.metrics import depth_edges

    depth = torch.full((1, 1, 9, 12), 20.0)
    depth[..., 5:] = 10.0  # a vertical edge between columns 4 and 5
    for radius, cols in ((0, [4, 5]), (1, [3, 4, 5, 6]), (2, [2, 3, 4, 5, 6, 7])):
        edges = depth_edges(depth, ratio=1.1, radius=radius)
        assert edges.dtype == torch.bool
        assert edges[0, 0].any(0).nonzero().flatten().tolist() == cols
        assert edges[0, 0, :, cols].all()
    # a 5 % jump is not an edge at ratio 1.1, a 20 % one is
    smooth = torch.full((1, 1, 6, 6), 10.0)
    smooth[..., 3:] = 10.5
    assert not depth_edges(smooth, ratio=1.1).any()
    assert depth_edges(smooth, ratio=1.04).any()


def test_depth_edges_ignore_unknown_pixels():
    from lesson_lib.metrics import depth_edges

    depth = torch.full((1, 1, 6, 8), 10.0)
    depth[..., :3, :] = 0.0  # sky: no ground truth, no edge against it
    assert not depth_edges(depth).any()


@pytest.mark.parametrize("kwargs, match", [({"ratio": 1.0}, "ratio"), ({"radius": -1}, "radius"), ({"radius": 1.5}, "radius")])
def test_depth_edges_bad_arguments(kwargs, match):
    from lesson_lib.metrics import depth_edges

    with pytest.raises(ValueError, match=match):
        depth_edges(torch.ones(1, 1, 4, 4), **kwargs)
    with pytest.raises(ValueError, match="depth"):
        depth_edges(torch.ones(4, 4))
