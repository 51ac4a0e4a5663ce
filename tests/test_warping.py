"""Chapter 03: inverse warping; known answers (identity, linear ramps, integer shifts, an
analytically rendered plane, real stereo data) and kornia as an independent check."""

import math

import kornia
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from lesson_lib import losses, pose, warping
from lesson_lib.camera import pixel_grid
from lesson_lib.data import load_middlebury_motorcycle

F64 = torch.float64


def _K(b=1, fx=200.0, fy=200.0, cx=79.5, cy=59.5, dtype=F64):
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)
    return K.expand(b, 3, 3).clone()


def _eye(b=1):
    return torch.eye(4, dtype=F64).expand(b, 4, 4).clone()


def _smooth_image(b, c, h, w, seed=0):
    """Images in about [0.15, 0.85] made of a few low-frequency sinusoids with random phases."""
    g = torch.Generator().manual_seed(seed)
    v, u = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
    out = torch.full((b, c, h, w), 0.5, dtype=F64)
    for _ in range(3):
        ph = torch.rand(b, c, 1, 1, generator=g, dtype=F64) * 2 * math.pi
        fu, fv = torch.rand(2, b, c, 1, 1, generator=g, dtype=F64) * 0.6 + 0.2
        out = out + 0.1 * torch.sin(fu * u + fv * v + ph)
    return out


def _grid(b, h, w):
    return pixel_grid(h, w, F64)[:2][None].expand(b, 2, h, w).clone()


def _camera_crop():
    """A real image: scikit-image's camera, 64x80 crop with texture, 3 identical channels."""
    img = torch.from_numpy(skdata.camera()[200:264, 200:280].astype(np.float64) / 255.0)
    return img[None, None].expand(1, 3, 64, 80).contiguous()


# 1. identity -------------------------------------------------------------------------------


def test_identity_pose_reproduces_the_source_exactly():
    """T = I: every target pixel lands on itself whatever the (positive) depth."""
    src = _smooth_image(2, 3, 12, 16)
    g = torch.Generator().manual_seed(1)
    depth = torch.rand(2, 1, 12, 16, generator=g, dtype=F64) * 50 + 0.1
    K = _K(2, 20.0, 22.0, 7.3, 5.6)
    warped, valid = warping.rigid_warp(src, depth, _eye(2), K)
    torch.testing.assert_close(warped, src, atol=1e-10, rtol=0)
    assert valid.all()  # the border too, although K K^-1 puts it at -1e-16 or W - 1 + 1e-15
    _, valid32 = warping.rigid_warp(src.float(), depth.float(), _eye(2).float(), K.float())
    assert valid32.all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_zero_disparity_reproduces_the_source(side):
    src = _smooth_image(2, 3, 7, 9)
    warped, valid = warping.stereo_warp(src, torch.zeros(2, 1, 7, 9, dtype=F64), side)
    torch.testing.assert_close(warped, src, atol=1e-12, rtol=0)
    assert valid.all()


# 2. sub-pixel shifts and align_corners ---------------------------------------------------


@pytest.mark.parametrize("align_corners", [True, False])
def test_subpixel_shift_of_a_linear_ramp_is_exact(align_corners):
    """Bilinear interpolation reproduces a linear function exactly, so reading the ramp
    I = 0.1 u + 0.05 v (+ 0.2 c) at u + 0.3 gives I + 0.03: this pins the pixel-centre convention
    (a half-pixel error would give I + 0.08 or I - 0.02)."""
    h, w = 8, 10
    grid = _grid(1, h, w)
    ramp = (0.1 * grid[:, :1] + 0.05 * grid[:, 1:2] + 0.2 * torch.arange(3, dtype=F64)[None, :, None, None])
    uv = grid.clone()
    uv[:, 0] += 0.3
    for out, valid in (
        warping.sample(ramp, uv, align_corners=align_corners),
        warping.bilinear_sample_by_hand(ramp, uv),
    ):
        torch.testing.assert_close(out[..., : w - 1], ramp[..., : w - 1] + 0.03, atol=1e-12, rtol=0)
        assert valid[..., : w - 1].all() and not valid[..., w - 1].any()


def test_align_corners_choices_agree_and_the_classic_mismatch_shifts_the_image():
    """`sample` pairs each align_corners with its own normalisation, so both agree inside the
    image (outside, with reflection padding, they do not: the next test). Normalising
    with x = 2u/(W-1) - 1 but sampling with align_corners=False instead reads the pixel
    u' = ((x+1) W - 1) / 2 = u W/(W-1) - 1/2: a shift from -1/2 px (left edge) to +1/2 px
    (right edge)."""
    img = _camera_crop()
    _, _, h, w = img.shape
    g = torch.Generator().manual_seed(2)
    uv = torch.rand(1, 2, 20, 20, generator=g, dtype=F64)
    uv[:, 0] *= w - 1
    uv[:, 1] *= h - 1
    a, _ = warping.sample(img, uv, align_corners=True)
    b, _ = warping.sample(img, uv, align_corners=False)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)

    grid = warping.normalize_pixels(uv, h, w, align_corners=True)
    wrong = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    err = float((wrong - a).abs().mean())
    assert err > 0.01, f"mismatch changed the image by only {err:.4g} on average"

    x, y = grid[..., 0], grid[..., 1]
    uv_read = torch.stack([((x + 1) * w - 1) / 2, ((y + 1) * h - 1) / 2], dim=1)
    shift = uv_read - uv
    assert float(shift.abs().max()) <= 0.5 + 1e-12
    torch.testing.assert_close(shift[:, 0], uv[:, 0] / (w - 1) - 0.5, atol=1e-12, rtol=0)
    expected, _ = warping.sample(img, uv_read)
    torch.testing.assert_close(wrong, expected, atol=1e-10, rtol=0)
    assert float((wrong - expected).abs().mean()) < 1e-3 * err


def test_padding_outside_the_image_under_both_align_corners():
    """Outside the image the two align_corners choices agree for "zeros" and "border" but not
    for "reflection". Known answers by hand for the row [10, 20, 40, 80] (W = 4; v = 0.5 sits
    between two identical rows): align_corners=True mirrors about the border pixel centres
    u = 0 and u = 3 (u -> -u, u -> 6 - u); False mirrors about the image edges u = -1/2 and
    u = 7/2 (u -> -1 - u, u -> 7 - u) and then clamps to [0, 3], so the half pixel just
    outside each border centre reads the border pixel."""
    img = torch.tensor([10.0, 20.0, 40.0, 80.0], dtype=F64).expand(1, 1, 2, 4).contiguous()
    u = torch.tensor([-2.0, -1.5, -1.0, -0.5, -0.25, 0.0, 1.5, 3.0, 3.25, 3.5, 4.0, 4.5, 5.0], dtype=F64)
    uv = torch.stack([u, torch.full_like(u, 0.5)])[None, :, None, :]
    inside = (u >= 0) & (u <= 3)
    known = {
        #                       -2  -1.5  -1  -0.5 -0.25  0   1.5  3  3.25  3.5  4   4.5  5
        ("reflection", True): [40, 30, 20, 15, 12.5, 10, 30, 80, 70, 60, 40, 30, 20],
        ("reflection", False): [20, 15, 10, 10, 10, 10, 30, 80, 80, 80, 80, 60, 40],
        ("border", True): [10, 10, 10, 10, 10, 10, 30, 80, 80, 80, 80, 80, 80],
        ("zeros", True): [0, 0, 0, 5, 7.5, 10, 30, 80, 60, 40, 0, 0, 0],
    }
    known[("border", False)] = known[("border", True)]
    known[("zeros", False)] = known[("zeros", True)]
    for (padding, align), want in known.items():
        out, valid = warping.sample(img, uv, padding_mode=padding, align_corners=align)
        want = torch.tensor(want, dtype=F64)
        msg = f"{padding}, align_corners={align}"
        torch.testing.assert_close(out[0, 0, 0], want, atol=1e-9, rtol=0, msg=msg)
        assert torch.equal(valid[0, 0, 0], inside)  # outside is invalid whatever is read there
    a = known[("reflection", True)]
    b = known[("reflection", False)]
    differ = [float(x) for x, p, q in zip(u, a, b) if p != q]
    assert differ == [-2.0, -1.5, -1.0, -0.5, -0.25, 3.25, 3.5, 4.0, 4.5, 5.0]  # all of outside


# 3. bilinear by hand ---------------------------------------------------------------------


def test_bilinear_by_hand_matches_grid_sample_including_outside():
    img = _camera_crop()[:, :, :9, :11].expand(2, 3, 9, 11) * torch.tensor([1.0, 0.5], dtype=F64)[:, None, None, None]
    g = torch.Generator().manual_seed(3)
    uv = torch.rand(2, 2, 15, 17, generator=g, dtype=F64)
    uv[:, 0] = uv[:, 0] * 16 - 3  # [-3, 13] for W = 11
    uv[:, 1] = uv[:, 1] * 14 - 3  # [-3, 11] for H = 9
    # exact integers and borders too
    uv[0, :, 0, :5] = torch.tensor([[0.0, 10.0, -1.0, 11.0, 4.0], [0.0, 8.0, 3.0, 2.0, -1.0]], dtype=F64)
    ref, ref_valid = warping.sample(img, uv, padding_mode="zeros")
    out, valid = warping.bilinear_sample_by_hand(img, uv)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    assert torch.equal(valid, ref_valid)
    assert valid.any() and not valid.all()
    assert valid[0, 0, 0, :5].tolist() == [True, True, False, False, False]


# 4. stereo shift -------------------------------------------------------------------------


def test_stereo_integer_shift_both_sides():
    """right[x] = left[x + 3]: the left pixel x matches the right pixel x - 3, so a constant
    disparity 3 rebuilds the left from the right (read at x - d) and the right from the left
    (read at x + d), exactly on pixels whose match exists; the wrong side does not."""
    h, w, d = 6, 12, 3
    g = torch.Generator().manual_seed(4)
    strip = torch.rand(1, 3, h, w + d, generator=g, dtype=F64)
    left, right = strip[..., :w], strip[..., d:]
    disp = torch.full((1, 1, h, w), float(d), dtype=F64)
    x = torch.arange(w)

    rec_left, valid = warping.stereo_warp(right, disp, "right")
    torch.testing.assert_close(rec_left[..., d:], left[..., d:], atol=1e-12, rtol=0)
    assert torch.equal(valid[0, 0, 0], x >= d)

    rec_right, valid = warping.stereo_warp(left, disp, "left")
    torch.testing.assert_close(rec_right[..., : w - d], right[..., : w - d], atol=1e-12, rtol=0)
    assert torch.equal(valid[0, 0, 0], x <= w - 1 - d)

    wrong, _ = warping.stereo_warp(right, disp, "left")  # reads right at x + 3 = left at x + 6
    assert float((wrong[..., : w - d] - left[..., : w - d]).abs().mean()) > 0.1


# 5. a rendered plane ---------------------------------------------------------------------


def _texture(X, Y):
    """A smooth texture on the plane, from metric plane coordinates (periods 0.35 - 1 m)."""
    tau = 2 * math.pi
    return torch.stack(
        [
            0.5 + 0.15 * torch.sin(tau * X / 0.6 + 0.3) + 0.1 * torch.sin(tau * Y / 0.45),
            0.5 + 0.15 * torch.cos(tau * (X + Y) / 0.8) + 0.08 * torch.sin(tau * X / 0.35 + 1.0),
            0.5 + 0.12 * torch.sin(tau * (X - 0.5 * Y) / 1.0) + 0.1 * torch.cos(tau * Y / 0.4),
        ]
    )


def _render_plane(T_t_to_cam, K, h, w, z0=5.0):
    """Exact rendering of the textured plane Z = z0 (target frame) by a camera whose pose is
    T_t_to_cam: the camera centre is -R^T t, the ray of a pixel is R^T K^-1 [u, v, 1]."""
    R, t = T_t_to_cam[0, :3, :3], T_t_to_cam[0, :3, 3]
    rays = R.T @ (torch.linalg.inv(K[0]) @ pixel_grid(h, w, F64).reshape(3, -1))
    centre = -R.T @ t
    lam = (z0 - centre[2]) / rays[2]
    P = centre[:, None] + lam * rays
    return _texture(P[0], P[1]).reshape(3, h, w)[None]


def _plane_setup():
    h, w = 120, 160
    K = _K()
    R = pose.axis_rotation("y", torch.tensor([math.radians(2.0)], dtype=F64))
    T = pose.make_pose(R, torch.tensor([[0.3, 0.05, 0.2]], dtype=F64))
    target = _render_plane(_eye(), K, h, w)
    source = _render_plane(T, K, h, w)
    return target, source, torch.full((1, 1, h, w), 5.0, dtype=F64), T, K


def test_rendered_plane_is_reconstructed_with_the_true_pose():
    target, source, depth, T, K = _plane_setup()
    assert float((source - target).abs().mean()) > 0.05  # the views do differ
    warped, valid = warping.rigid_warp(source, depth, T, K)
    assert valid.float().mean() > 0.6
    err = float((warped - target).abs().mean(1, keepdim=True)[valid].mean())
    # measured 9.5e-4 (bilinear interpolation error only; 89 % of the pixels valid)
    assert err < 2.5e-3, f"mean abs error {err:.3g}"
    bad, bad_valid = warping.rigid_warp(source, depth, pose.invert_pose(T), K)
    err_bad = float((bad - target).abs().mean(1, keepdim=True)[bad_valid].mean())
    # measured 0.143, 150x the true pose's error
    assert err_bad > 5 * err, f"inverted pose: {err_bad:.3g} vs true pose {err:.3g}"


# 6. kornia -------------------------------------------------------------------------------


def test_rigid_warp_matches_kornia_warp_frame_depth():
    b, h, w = 2, 24, 32
    g = torch.Generator().manual_seed(6)
    src = torch.rand(b, 3, h, w, generator=g, dtype=F64)
    depth = torch.rand(b, 1, h, w, generator=g, dtype=F64) * 3 + 2
    vec = torch.randn(b, 6, generator=g, dtype=F64) * torch.tensor([0.2, 0.2, 0.2, 0.05, 0.05, 0.05], dtype=F64)
    T = pose.pose_vector_to_matrix(vec, "axis_angle")
    K = _K(b, 30.0, 31.0, 15.5, 11.5)
    ours, valid = warping.rigid_warp(src, depth, T, K)
    theirs = kornia.geometry.depth.warp_frame_depth(src, depth, src_trans_dst=T, camera_matrix=K)
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)
    assert valid.any() and not valid.all()  # the comparison covers both kinds of pixel


# 7. gradients ----------------------------------------------------------------------------


def _small_setup():
    g = torch.Generator().manual_seed(7)
    src = _smooth_image(1, 2, 5, 6, seed=7)
    depth = torch.rand(1, 1, 5, 6, generator=g, dtype=F64) * 3 + 2
    vec = torch.tensor([[0.15, -0.1, 0.1, 0.03, -0.04, 0.02]], dtype=F64)
    return src, depth, vec, _K(1, 6.0, 6.5, 2.5, 2.0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_gradcheck_stereo_warp_wrt_disparity(side):
    """Disparities in [0.2, 0.8] keep the coordinates off integers, where bilinear has kinks
    (between the border pixel and the zero padding it is still bilinear)."""
    src = _smooth_image(1, 2, 5, 6, seed=8)
    g = torch.Generator().manual_seed(8)
    disp = (torch.rand(1, 1, 5, 6, generator=g, dtype=F64) * 0.6 + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda d: warping.stereo_warp(src, d, side)[0], (disp,))


def test_gradcheck_rigid_warp_wrt_depth_pose_and_image():
    src, depth, vec, K = _small_setup()
    T = pose.pose_vector_to_matrix(vec, "axis_angle")
    uv, _ = warping.rigid_sample_points(depth, T, K)
    frac = uv - uv.round()
    assert float(frac.abs().min()) > 1e-4  # far from bilinear's kinks next to gradcheck's 1e-6 steps
    assert torch.autograd.gradcheck(lambda d: warping.rigid_warp(src, d, T, K)[0], (depth.requires_grad_(),))
    depth = depth.detach()
    assert torch.autograd.gradcheck(
        lambda v: warping.rigid_warp(src, depth, pose.pose_vector_to_matrix(v, "axis_angle"), K)[0],
        (vec.requires_grad_(),),
    )
    assert torch.autograd.gradcheck(lambda s: warping.rigid_warp(s, depth, T, K)[0], (src.requires_grad_(),))


# 8. validity -----------------------------------------------------------------------------


def test_points_behind_the_source_camera_are_invalid():
    """The source camera 10 m ahead of the target, past the plane at 5 m: every point has
    z_s = -5, behind it (and the output stays finite)."""
    depth = torch.full((1, 1, 12, 16), 5.0, dtype=F64)
    T = _eye()
    T[0, 2, 3] = -10.0
    warped, valid = warping.rigid_warp(_smooth_image(1, 3, 12, 16), depth, T, _K(1, 20.0, 20.0, 7.5, 5.5))
    assert not valid.any()
    assert torch.isfinite(warped).all()


def test_non_positive_depth_is_invalid():
    """The source camera 1 m behind the target: depth 3 lands at z_s = 4 inside the image, and
    so would depth 0 (z_s = 1, at the principal point) and depth -0.5 (z_s = 0.5, at
    u_s = 2 cx - u): only the depth test rejects those."""
    depth = torch.full((1, 1, 6, 8), 3.0, dtype=F64)
    depth[0, 0, 1, 2] = 0.0
    depth[0, 0, 4, 5] = -0.5
    T = _eye()
    T[0, 2, 3] = 1.0
    K = _K(1, 10.0, 10.0, 3.5, 2.5)
    uv, _ = warping.rigid_sample_points(depth, T, K)
    torch.testing.assert_close(uv[0, :, 1, 2], torch.tensor([3.5, 2.5], dtype=F64))
    torch.testing.assert_close(uv[0, :, 4, 5], torch.tensor([2.0, 1.0], dtype=F64))
    warped, valid = warping.rigid_warp(_smooth_image(1, 3, 6, 8), depth, T, K)
    assert torch.equal(valid, depth > 0)
    assert torch.isfinite(warped).all()


def test_samples_outside_the_source_are_invalid_and_inside_valid():
    """Translating by tx = 0.51 m at depth 5 m with fx = 200 moves every sample by
    200 * 0.51 / 5 = 20.4 px to the right: valid exactly for u + 20.4 <= W - 1."""
    h, w = 120, 160
    depth = torch.full((1, 1, h, w), 5.0, dtype=F64)
    T = _eye()
    T[0, 0, 3] = 0.51
    uv, _ = warping.rigid_sample_points(depth, T, _K())
    torch.testing.assert_close(uv, _grid(1, h, w) + torch.tensor([20.4, 0.0], dtype=F64)[None, :, None, None])
    _, valid = warping.rigid_warp(_smooth_image(1, 3, h, w), depth, T, _K())
    u = torch.arange(w)
    assert torch.equal(valid[0, 0], (u <= w - 1 - 20.4).expand(h, w))
    _, valid_id = warping.rigid_warp(_smooth_image(1, 3, h, w), depth, _eye(), _K())
    assert valid_id.all()


# 9. real data ----------------------------------------------------------------------------


def test_middlebury_left_is_reconstructed_from_the_right_with_ground_truth():
    """The ground-truth disparity (read the right view at x - d) explains the left view far
    better than the disparity off by one pixel or with its sign flipped (read at x + d)."""
    pair = load_middlebury_motorcycle()

    def err(source, disp, side):
        warped, valid = warping.stereo_warp(source, disp, side)
        return float(losses.photometric_error(warped, pair.left, mask=valid & pair.valid, reduction="mean"))

    e_gt = err(pair.right, pair.disparity, "right")
    e_plus1 = err(pair.right, pair.disparity + 1, "right")
    e_flip = err(pair.right, pair.disparity, "left")
    # measured: ground truth 0.0684, +1 px 0.120 (1.76x), sign flipped 0.292 (4.3x)
    assert e_gt < 0.1
    assert e_plus1 > 1.5 * e_gt, (e_gt, e_plus1)
    assert e_flip > 3 * e_gt, (e_gt, e_flip)
    # the ground truth is the best of nearby shifts (measured -0.5: 0.090, +0.5: 0.083)
    for s in (-1.0, -0.5, 0.5):
        assert err(pair.right, (pair.disparity + s).clamp(min=0), "right") > e_gt


# 10. bad input ---------------------------------------------------------------------------


def test_bad_input():
    img = torch.rand(1, 3, 4, 5)
    depth = torch.ones(1, 1, 4, 5)
    T = torch.eye(4)[None]
    K = torch.tensor([[[4.0, 0, 2.0], [0, 4.0, 1.5], [0, 0, 1]]])
    with pytest.raises(ValueError, match=r"source: expected batch size 1 \(as depth_t\), got 2"):
        warping.rigid_warp(img.expand(2, 3, 4, 5), depth, T, K)
    with pytest.raises(ValueError, match=r"T_t_to_s: expected shape \(B, 4, 4\) with \{'B': 1\}, got \(2, 4, 4\)"):
        warping.rigid_warp(img, depth, T.expand(2, 4, 4), K)
    with pytest.raises(ValueError, match=r"disparity: expected shape \(B, 1, H, W\).*'B': 2.*got \(1, 1, 4, 5\)"):
        warping.stereo_warp(img.expand(2, 3, 4, 5), depth)
    with pytest.raises(ValueError, match=r"depth_t: expected shape \(B, 1, H, W\).*got \(1, 3, 4, 5\)"):
        warping.rigid_warp(img, torch.ones(1, 3, 4, 5), T, K)
    with pytest.raises(ValueError, match=r"K_t: expected shape \(B, 3, 3\).*got \(1, 4, 4\)"):
        warping.rigid_warp(img, depth, T, torch.eye(4)[None])
    with pytest.raises(ValueError, match=r"uv: expected shape \(B, 2, H, W\).*got \(1, 3, 4, 5\)"):
        warping.sample(img, torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"uv: expected shape \(B, 2, H, W\).*got \(1, 3, 4, 5\)"):
        warping.bilinear_sample_by_hand(img, torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="image: expected a floating-point tensor, got dtype torch.uint8"):
        warping.sample(torch.zeros(1, 3, 4, 5, dtype=torch.uint8), torch.zeros(1, 2, 4, 5))
    with pytest.raises(ValueError, match="source: expected a floating-point tensor"):
        warping.stereo_warp(torch.zeros(1, 3, 4, 5, dtype=torch.uint8), depth)
    with pytest.raises(ValueError, match="source: expected a floating-point tensor"):
        warping.rigid_warp(torch.zeros(1, 3, 4, 5, dtype=torch.uint8), depth, T, K)
    with pytest.raises(ValueError, match=r"x - d"):
        warping.stereo_warp(img, -depth)
    for bad in (float("nan"), float("inf")):
        d = depth.clone()
        d[0, 0, 1, 1] = bad
        with pytest.raises(ValueError, match="inf or NaN"):
            warping.rigid_warp(img, d, T, K)
        with pytest.raises(ValueError, match="inf or NaN"):
            warping.stereo_warp(img, d)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        warping.rigid_warp(img, depth, T, K, padding_mode="constant")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        warping.stereo_warp(img, depth, padding_mode="wrap")
    with pytest.raises(ValueError, match="source_side must be 'left' or 'right'"):
        warping.stereo_warp(img, depth, "up")
