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
