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


# A batch of rigs: disparity fraction <-> depth, one focal length and baseline per image ------


def _loop_disparity_fraction_to_depth(disp, K, baseline, min_depth=0.1, max_depth=100.0):
    """The per-image float64-constant loop that lesson_lib.methods.monodepth used before the
    batched version (kept here as the reference)."""
    b = torch.as_tensor(baseline, dtype=torch.float64).flatten().expand(disp.shape[0])
    W = disp.shape[-1]
    return torch.cat(
        [
            stereo.disparity_to_depth(
                stereo.fraction_to_pixels(disp[i : i + 1], W), float(K[i, 0, 0]), float(b[i]),
                min_depth=min_depth, max_depth=max_depth,
            )
            for i in range(disp.shape[0])
        ]
    )


def _loop_depth_to_disparity_fraction(depth, K, baseline):
    b = torch.as_tensor(baseline, dtype=torch.float64).flatten().expand(depth.shape[0])
    W = depth.shape[-1]
    out = torch.zeros_like(depth)
    for i in range(depth.shape[0]):
        known = depth[i] > 0
        d = stereo.depth_to_disparity(depth[i][known], float(K[i, 0, 0]), float(b[i]))
        out[i][known] = stereo.pixels_to_fraction(d, W)
    return out


def _rigs():
    g = torch.Generator().manual_seed(0)
    K = torch.zeros(3, 3, 3)
    K[:, 0, 0] = torch.tensor([241.3, 720.0, 96.5])
    K[:, 1, 1], K[:, 2, 2] = K[:, 0, 0], 1.0
    baseline = torch.tensor([0.54, 0.3, 1.2], dtype=torch.float64)
    disp = torch.rand(3, 1, 24, 40, generator=g) * 0.3
    disp[:, :, 0, :5] = torch.tensor([0.0, 1e-6, 1e-3, 0.5, 1.0])  # max_depth, near it, min_depth
    depth = torch.rand(3, 1, 24, 40, generator=g) * 80 + 0.5
    depth[:, :, 0, :4] = torch.tensor([0.0, -2.0, float("nan"), 1e-3])  # unknown, and very near
    return disp, depth, K, baseline


def test_batched_disparity_fraction_to_depth_matches_the_per_image_loop():
    disp, _, K, baseline = _rigs()
    ref = _loop_disparity_fraction_to_depth(disp, K, baseline, min_depth=6.0, max_depth=80.0)
    got = stereo.disparity_fraction_to_depth(disp, K[:, 0, 0], baseline, min_depth=6.0, max_depth=80.0)
    assert got.dtype == torch.float32 and got.shape == disp.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=0)
    assert float(got.max()) == 80.0 and float(got.min()) == 6.0
    # numbers for all images; a one-element tensor
    torch.testing.assert_close(
        stereo.disparity_fraction_to_depth(disp, 241.3, 0.54),
        _loop_disparity_fraction_to_depth(disp, K[:1].expand(3, 3, 3), 0.54), rtol=1e-5, atol=0,
    )
    torch.testing.assert_close(
        stereo.disparity_fraction_to_depth(disp, torch.tensor([241.3]), 0.54),
        stereo.disparity_fraction_to_depth(disp, 241.3, 0.54), rtol=1e-6, atol=0,
    )


def test_batched_depth_to_disparity_fraction_matches_the_per_image_loop():
    _, depth, K, baseline = _rigs()
    ref = _loop_depth_to_disparity_fraction(depth, K, baseline)
    got = stereo.depth_to_disparity_fraction(depth, K[:, 0, 0], baseline)
    assert got.dtype == torch.float32 and got.shape == depth.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=0)
    assert (got[:, :, 0, :3] == 0).all()  # Z = 0, Z < 0, NaN: unknown, infinitely far
    # +inf is unknown too (the loop raised on it)
    inf = depth.clone()
    inf[:, :, 5, 5] = float("inf")
    out = stereo.depth_to_disparity_fraction(inf, K[:, 0, 0], baseline)
    assert (out[:, :, 5, 5] == 0).all() and torch.isfinite(out).all()


def test_batched_round_trip_and_gradient_at_unknown_pixels():
    _, depth, K, baseline = _rigs()
    depth = depth.double().requires_grad_()
    frac = stereo.depth_to_disparity_fraction(depth, K[:, 0, 0], baseline)
    back = stereo.disparity_fraction_to_depth(frac, K[:, 0, 0], baseline, min_depth=1e-3, max_depth=1e3)
    known = torch.isfinite(depth) & (depth > 0)
    torch.testing.assert_close(back[known], depth[known])
    assert (back[~known] == 1e3).all()  # disparity 0: max_depth
    frac.sum().backward()
    assert torch.isfinite(depth.grad).all() and (depth.grad[~known] == 0).all()


def test_batched_conversions_reject_bad_rigs():
    disp, depth, K, baseline = _rigs()
    with pytest.raises(ValueError, match=r"focal_px: expected a number or a tensor of shape \(3,\)"):
        stereo.disparity_fraction_to_depth(disp, K[:2, 0, 0], baseline)
    with pytest.raises(ValueError, match=r"baseline_m: expected .* got shape \(3, 1\)"):
        stereo.depth_to_disparity_fraction(depth, 700.0, baseline[:, None])
    with pytest.raises(ValueError, match="baseline_m must be finite and > 0"):
        stereo.depth_to_disparity_fraction(depth, K[:, 0, 0], torch.tensor([0.5, 0.0, 0.5]))
    with pytest.raises(ValueError, match="focal_px must be finite and > 0"):
        stereo.disparity_fraction_to_depth(disp, -1.0, 0.5)
    with pytest.raises(ValueError, match=r"disp_fraction must be >= 0"):
        stereo.disparity_fraction_to_depth(-disp, 700.0, 0.5)
    with pytest.raises(ValueError, match=r"disp_fraction: expected shape \(B, 1, H, W\)"):
        stereo.disparity_fraction_to_depth(disp[:, 0], 700.0, 0.5)
