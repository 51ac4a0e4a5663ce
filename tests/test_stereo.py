"""Chapter 01: disparity <-> depth, with known answers and bad input."""

import pytest
import torch

from lesson_lib import stereo
from lesson_lib.data import load_middlebury_motorcycle


def test_known_values_kitti_like():
    d = torch.tensor([10.0, 54.0, 721.0 * 0.54])
    z = stereo.disparity_to_depth(d, focal=721.0, baseline=0.54)
    torch.testing.assert_close(z, torch.tensor([721 * 0.54 / 10, 721 * 0.54 / 54, 1.0]))


def test_doffs_is_added_to_disparity():
    z = stereo.disparity_to_depth(torch.tensor([9.0]), focal=100.0, baseline=1.0, doffs=1.0)
    torch.testing.assert_close(z, torch.tensor([10.0]))


def test_zero_disparity_gives_max_depth_not_nan():
    d = torch.zeros(2, 1, 3, 3, requires_grad=True)
    z = stereo.disparity_to_depth(d, 721.0, 0.54, max_depth=80.0)
    assert torch.all(z == 80.0)
    z.sum().backward()
    assert torch.isfinite(d.grad).all()


def test_clamped_to_min_depth():
    z = stereo.disparity_to_depth(torch.tensor([1e6]), 721.0, 0.54, min_depth=0.5)
    assert float(z) == 0.5


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_negative_or_non_finite_disparity_raises(bad):
    with pytest.raises(ValueError, match="disparity"):
        stereo.disparity_to_depth(torch.tensor([1.0, bad]), 721.0, 0.54)


def test_bad_constants_and_dtype_raise():
    d = torch.ones(3)
    with pytest.raises(ValueError, match="focal"):
        stereo.disparity_to_depth(d, 0.0, 0.54)
    with pytest.raises(ValueError, match="baseline"):
        stereo.disparity_to_depth(d, 721.0, -0.5)
    with pytest.raises(ValueError, match="max_depth"):
        stereo.disparity_to_depth(d, 721.0, 0.5, min_depth=10.0, max_depth=1.0)
    with pytest.raises(ValueError, match="floating-point"):
        stereo.disparity_to_depth(torch.ones(3, dtype=torch.int64), 721.0, 0.54)
    with pytest.raises(TypeError, match="torch.Tensor"):
        stereo.disparity_to_depth([1.0, 2.0], 721.0, 0.54)


def test_round_trip_depth_disparity():
    z = torch.linspace(1.0, 80.0, 50, dtype=torch.float64)
    d = stereo.depth_to_disparity(z, 721.0, 0.54, doffs=3.0)
    back = stereo.disparity_to_depth(d, 721.0, 0.54, doffs=3.0, max_depth=1e3)
    torch.testing.assert_close(back, z)


def test_depth_to_disparity_rejects_non_positive_depth():
    with pytest.raises(ValueError, match="depth must be > 0"):
        stereo.depth_to_disparity(torch.tensor([1.0, 0.0]), 721.0, 0.54)


def test_depth_error_matches_finite_difference():
    """dZ = Z^2 dd / (f B) is the first-order change of Z = f B / d."""
    f, b, dd = 721.0, 0.54, 1e-3
    z = torch.tensor([2.0, 10.0, 50.0], dtype=torch.float64)
    d = f * b / z
    exact = f * b / (d - dd) - z
    torch.testing.assert_close(stereo.depth_error_from_disparity_error(z, f, b, dd), exact, rtol=1e-3, atol=0)


def test_fraction_pixels_round_trip():
    frac = torch.tensor([0.01, 0.3])
    px = stereo.fraction_to_pixels(frac, 416)
    torch.testing.assert_close(px, torch.tensor([4.16, 124.8]))
    torch.testing.assert_close(stereo.pixels_to_fraction(px, 416), frac)


def test_real_pair_depth_within_documented_range():
    pair = load_middlebury_motorcycle()
    c = pair.calibration
    z = stereo.disparity_to_depth(pair.disparity[pair.valid], c.focal, c.baseline, c.doffs)
    assert 2.1 <= float(z.min()) < 2.2
    assert 4.9 < float(z.max()) <= 5.05
