"""Chapter 04: SSIM, the photometric error and edge-aware smoothness; formulas computed by hand,
SSIM's factors, and kornia as an independent check."""

import math

import kornia
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from lesson_lib import losses

F64 = torch.float64


def _rand(*shape, seed=0, lo=0.1, hi=0.9):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=F64) * (hi - lo) + lo


def _camera(h=128, w=160, top=0, left=0):
    """A real image: scikit-image's camera, cropped, 3 identical channels, float64 in [0, 1]."""
    img = torch.from_numpy(skdata.camera()[top : top + h, left : left + w].astype(np.float64) / 255.0)
    return img[None, None].expand(1, 3, h, w).contiguous()


def _ssim_by_kornia_box(x, y, c1=0.01**2, c2=0.03**2):
    """SSIM written out with kornia's 3x3 box filter over reflection padding."""

    def mu(t):
        return kornia.filters.box_blur(t, (3, 3), border_type="reflect")

    mx, my = mu(x), mu(y)
    sxx, syy, sxy = mu(x * x) - mx * mx, mu(y * y) - my * my, mu(x * y) - mx * my
    return (2 * mx * my + c1) * (2 * sxy + c2) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


# 0. the box filter ----------------------------------------------------------------------


def _avg_pool_reference(x, window):
    """``F.avg_pool2d`` over the reflection-padded input: in one 2-D pass for the 3x3 window
    (what SSIM's fast path reproduces), separably (rows, then columns) for the larger ones."""
    r = window // 2
    padded = F.pad(x, (r, r, r, r), mode="reflect")
    if window == 3:
        return F.avg_pool2d(padded, 3, stride=1)
    return F.avg_pool2d(F.avg_pool2d(padded, (1, window), stride=1), (window, 1), stride=1)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("window", [3, 5, 9])
def test_box_filter_equals_avg_pool2d_over_reflection_padding_to_the_bit(window, dtype):
    g = torch.Generator().manual_seed(window)
    x = torch.rand(2, 3, 17, 23, generator=g, dtype=dtype)
    grad = torch.rand(2, 3, 17, 23, generator=g, dtype=dtype)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, ref = losses.box_filter(a, window), _avg_pool_reference(b, window)
    assert ours.shape == x.shape
    assert torch.equal(ours, ref)
    ours.backward(grad)
    ref.backward(grad)
    if window == 3:  # the custom backward too, to the bit
        assert torch.equal(a.grad, b.grad)
    else:  # the padding's backward adds up the reflected gradients in another order
        torch.testing.assert_close(a.grad, b.grad)
    # the separable passes give the 2-D window mean (up to rounding)
    r = window // 2
    two_d = F.avg_pool2d(F.pad(x, (r, r, r, r), mode="reflect"), window, stride=1)
    torch.testing.assert_close(ours.detach(), two_d)


def test_box_filter_known_values_and_borders():
    # a single bright pixel spreads 1 / window**2 over its window
    x = torch.zeros(1, 1, 11, 11, dtype=F64)
    x[..., 5, 5] = 1.0
    for window in (3, 5, 9):
        r = window // 2
        expected = torch.zeros_like(x)
        expected[..., 5 - r : 6 + r, 5 - r : 6 + r] = 1.0 / window**2
        torch.testing.assert_close(losses.box_filter(x, window), expected, atol=1e-15, rtol=0)
    # reflection: a ramp along x stays a ramp inside and folds back at the border
    ramp = torch.arange(6, dtype=F64).expand(1, 1, 4, 6)
    row = losses.box_filter(ramp, 3)[0, 0, 0].tolist()
    assert row == pytest.approx([(1 + 0 + 1) / 3, 1, 2, 3, 4, (4 + 5 + 4) / 3])
    assert losses.box_filter(x, 1) is x
    # sides too short to reflect are padded by replication
    thin = torch.rand(1, 2, 1, 7, dtype=F64)
    torch.testing.assert_close(losses.box_filter(thin, 3)[..., 1:-1], F.avg_pool1d(thin[:, :, 0], 3, 1)[:, :, None])
    for bad in (0, 2, 4, -3, 3.0, True):
        with pytest.raises(ValueError, match="window"):
            losses.box_filter(x, bad)


# 1. SSIM ---------------------------------------------------------------------------------


def test_ssim_matches_kornia_box_construction_and_is_one_for_equal_images():
    x, y = _rand(2, 3, 9, 11, seed=1), _rand(2, 3, 9, 11, seed=2)
    torch.testing.assert_close(losses.ssim(x, y), _ssim_by_kornia_box(x, y), atol=1e-10, rtol=0)
    torch.testing.assert_close(losses.ssim(x, x), torch.ones_like(x), atol=1e-12, rtol=0)
    assert float(losses.ssim(x, y).mean()) < 0.5  # unrelated noise is far from 1


def test_ssim_stays_close_to_kornias_gaussian_window_ssim():
    """kornia.metrics.ssim weights its window with a Gaussian (sigma 1.5, here cut to 3x3)
    instead of a box, so the maps differ slightly: on the camera image against a noisy copy the mean absolute
    difference measured 0.0107 (both maps average about 0.335)."""
    x = _camera()
    g = torch.Generator().manual_seed(0)
    y = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=F64)).clamp(0, 1)
    ours, theirs = losses.ssim(x, y), kornia.metrics.ssim(x, y, 3)
    diff = float((ours - theirs).abs().mean())
    assert 1e-3 < diff < 0.02, diff
    assert abs(float(ours.mean()) - float(theirs.mean())) < 0.01


# 2. SSIM's factors -----------------------------------------------------------------------


def _zero_mean_texture(h, w):
    """1.0 * p(u) with p = [-2, 1, 1] repeating: every 3x3 box mean is 0, also at the reflected
    borders, when W = 1 (mod 3) (left border: p0 + 2 p1 = 0; right: p[W-1] + 2 p[W-2] = 0)."""
    assert w % 3 == 1
    p = torch.tensor([-2.0, 1.0, 1.0], dtype=F64)[torch.arange(w) % 3]
    return p.expand(1, 1, h, w).clone()


def test_ssim_components_multiply_to_ssim():
    x, y = _rand(2, 3, 8, 9, seed=3), _rand(2, 3, 8, 9, seed=4)
    lum, con, struct = losses.ssim_components(x, y)
    torch.testing.assert_close(lum * con * struct, losses.ssim(x, y), atol=1e-12, rtol=0)
    lum, con, struct = losses.ssim_components(x, 0.7 * x + 0.1)
    torch.testing.assert_close(lum * con * struct, losses.ssim(x, 0.7 * x + 0.1), atol=1e-12, rtol=0)


def test_luminance_is_one_for_equal_local_means():
    x = _rand(1, 3, 7, 10, seed=5)
    t = 0.05 * _zero_mean_texture(7, 10)
    torch.testing.assert_close(losses.box_filter(t), torch.zeros_like(t), atol=1e-15, rtol=0)
    lum, _, struct = losses.ssim_components(x, x + t)
    torch.testing.assert_close(lum, torch.ones_like(lum), atol=1e-12, rtol=0)
    assert float(struct.min()) < 0.95  # the images do differ
    lum_shift, _, _ = losses.ssim_components(x, x + 0.2)
    assert float(lum_shift.max()) < 1 - 1e-3


def test_contrast_depends_only_on_variances_and_structure_only_on_correlation():
    """x = 0.5 + t and y = 0.5 + k t for a zero-mean texture t: the variances are s^2 and
    k^2 s^2, so contrast = (2 k s^2 + C2) / ((1 + k^2) s^2 + C2) < 1 for k != 1, while the
    structure stays 1 for every k > 0. Negating the texture (same variance) keeps the contrast
    and turns the structure to about -1."""
    t = 0.1 * _zero_mean_texture(6, 10).expand(1, 3, 6, 10)
    x = 0.5 + t
    s2 = losses.box_filter(t * t)
    for k in (0.5, 2.0):
        _, con, struct = losses.ssim_components(x, 0.5 + k * t)
        expected = (2 * k * s2 + losses.C2) / ((1 + k * k) * s2 + losses.C2)
        torch.testing.assert_close(con, expected, atol=1e-12, rtol=0)
        assert float(con.max()) < 0.9
        torch.testing.assert_close(struct, torch.ones_like(struct), atol=1e-12, rtol=0)
        _, con_neg, struct_neg = losses.ssim_components(x, 0.5 - k * t)
        torch.testing.assert_close(con_neg, con, atol=1e-12, rtol=0)
        assert float(struct_neg.max()) < -0.9


def test_structure_is_one_for_an_increasing_affine_map():
    x = _camera(32, 40, top=200, left=200)  # the man's coat and the tripod: textured
    lum, con, struct = losses.ssim_components(x, 0.6 * x + 0.2)
    _, _, sxx, _, _ = losses._moments(x, x)
    textured = sxx > 1e-4
    assert textured.float().mean() > 0.5
    torch.testing.assert_close(struct[textured], torch.ones_like(struct[textured]), atol=1e-9, rtol=0)
    # a decreasing map: (s_xy + C3) / (s_x s_y + C3) = (C3 - s_x^2) / (C3 + s_x^2)
    _, _, struct_dec = losses.ssim_components(x, 1 - x)
    c3 = losses.C2 / 2
    expected = (c3 - sxx) / (c3 + sxx)
    torch.testing.assert_close(struct_dec[textured], expected[textured], atol=1e-9, rtol=0)
    assert float(struct_dec[sxx > 1e-2].max()) < -0.9


# 3. gradients ----------------------------------------------------------------------------


def test_gradcheck_ssim_and_photometric_error():
    x, y = _rand(1, 2, 5, 6, seed=6).requires_grad_(), _rand(1, 2, 5, 6, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(losses.ssim, (x, y))
    assert torch.autograd.gradcheck(losses.photometric_error, (x, y))
    mask = torch.rand(1, 1, 5, 6, generator=torch.Generator().manual_seed(8)) > 0.3
    assert torch.autograd.gradcheck(lambda a, b: losses.photometric_error(a, b, mask=mask, reduction="mean"), (x, y))


# 4. photometric error --------------------------------------------------------------------


def test_photometric_error_formula():
    a, b = _rand(2, 3, 8, 9, seed=9), _rand(2, 3, 8, 9, seed=10)
    assert float(losses.photometric_error(a, a).abs().max()) < 1e-12
    err = losses.photometric_error(a, b)
    assert err.shape == (2, 1, 8, 9)
    dssim = ((1 - losses.ssim(a, b)) / 2).clamp(0, 1).mean(1, keepdim=True)
    l1 = (a - b).abs().mean(1, keepdim=True)
    torch.testing.assert_close(err, 0.85 * dssim + 0.15 * l1, atol=1e-12, rtol=0)
    torch.testing.assert_close(losses.photometric_error(a, b, alpha=0.0), l1, atol=1e-15, rtol=0)
    torch.testing.assert_close(losses.photometric_error(a, b, alpha=1.0), dssim, atol=1e-15, rtol=0)
    half = losses.photometric_error(a, b, alpha=0.5, reduction="mean")
    torch.testing.assert_close(half, (0.5 * dssim + 0.5 * l1).mean(), atol=1e-14, rtol=0)


def test_photometric_error_mask():
    a, b = _rand(2, 3, 8, 9, seed=11), _rand(2, 3, 8, 9, seed=12)
    mask = torch.rand(2, 1, 8, 9, generator=torch.Generator().manual_seed(13)) > 0.5
    full = losses.photometric_error(a, b)
    mean = losses.photometric_error(a, b, mask=mask, reduction="mean")
    torch.testing.assert_close(mean, full[mask].mean(), atol=1e-14, rtol=0)
    none = losses.photometric_error(a, b, mask=mask)
    assert none.shape == (2, 1, 8, 9)
    torch.testing.assert_close(none, full * mask, atol=0, rtol=0)
    # an empty mask: 0, not NaN, and a finite gradient
    a.requires_grad_()
    empty = losses.photometric_error(a, b, mask=torch.zeros_like(mask), reduction="mean")
    assert float(empty.detach()) == 0.0
    empty.backward()
    assert torch.isfinite(a.grad).all() and float(a.grad.abs().max()) == 0.0


# 5. smoothness ---------------------------------------------------------------------------


def test_smoothness_matches_kornia():
    d, img = _rand(2, 1, 7, 9, seed=14), _rand(2, 3, 7, 9, seed=15)
    ref = kornia.losses.inverse_depth_smoothness_loss(d / (d.mean((2, 3), keepdim=True) + 1e-7), img)
    torch.testing.assert_close(losses.smoothness(d, img), ref, atol=1e-10, rtol=0)
    ref_raw = kornia.losses.inverse_depth_smoothness_loss(d, img)
    torch.testing.assert_close(losses.smoothness(d, img, normalize=False), ref_raw, atol=1e-10, rtol=0)


def test_smoothness_scale_invariance_and_constant_disparity():
    d, img = _rand(2, 1, 7, 9, seed=16), _rand(2, 3, 7, 9, seed=17)
    base = losses.smoothness(d, img)
    assert float(base) > 0.05
    torch.testing.assert_close(losses.smoothness(5 * d, img), base, atol=0, rtol=1e-6)  # up to the 1e-7 guard
    raw = losses.smoothness(d, img, normalize=False)
    torch.testing.assert_close(losses.smoothness(5 * d, img, normalize=False), 5 * raw)  # linear without it
    const = torch.full_like(d, 3.7)
    for order in (1, 2):
        assert float(losses.smoothness(const, img, order=order)) == 0.0


@pytest.mark.parametrize("order, ratio", [(1, math.exp(-0.6)), (2, math.exp(-0.3))])
def test_smoothness_is_edge_aware(order, ratio):
    """The same disparity step (between columns 3 and 4) costs exp(-0.6) times as much where
    the image also steps by 0.6 there as where the image is flat. Second order: the curvature
    at columns 3 and 4 is weighted by the mean of the two image gradients around it, (0 + 0.6)/2."""
    h, w = 6, 10
    x = torch.arange(w, dtype=F64).expand(1, 1, h, w)

    def step(at, lo, hi):
        return torch.where(x >= at, torch.tensor(hi, dtype=F64), torch.tensor(lo, dtype=F64))

    d = step(4, 1.0, 2.0)
    img_edge_here = step(4, 0.2, 0.8).expand(1, 3, h, w)
    img_edge_elsewhere = step(7, 0.2, 0.8).expand(1, 3, h, w)  # flat at the disparity step
    at_edge = float(losses.smoothness(d, img_edge_here, order=order))
    in_flat = float(losses.smoothness(d, img_edge_elsewhere, order=order))
    assert at_edge < in_flat
    assert at_edge / in_flat == pytest.approx(ratio, rel=1e-12)


def test_second_order_is_zero_for_a_plane():
    v, u = torch.meshgrid(torch.arange(7, dtype=F64), torch.arange(9, dtype=F64), indexing="ij")
    d = (1 + 0.1 * u + 0.05 * v).expand(2, 1, 7, 9)
    img = _rand(2, 3, 7, 9, seed=18)
    assert float(losses.smoothness(d, img, order=2)) < 1e-14
    assert float(losses.smoothness(d, img, order=1)) > 1e-2


def test_smoothness_map_layout():
    """Rows [1, 2, 4] on a flat image: forward differences 1, 2 sit at columns 0, 1 (none
    exists at the last column); the second difference 4 + 1 - 2*2 = 1 sits at the centre."""
    d = torch.tensor([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]], dtype=F64).expand(1, 1, 2, 3)
    img = torch.full((1, 3, 2, 3), 0.5, dtype=F64)
    first = losses.smoothness(d, img, normalize=False, reduction="none")
    assert first[0, 0].tolist() == [[1.0, 2.0, 0.0], [1.0, 2.0, 0.0]]
    second = losses.smoothness(d, img, order=2, normalize=False, reduction="none")
    assert second[0, 0].tolist() == [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    col = d.transpose(2, 3).contiguous()  # the same along y
    assert losses.smoothness(col, img.transpose(2, 3), normalize=False, reduction="none")[0, 0].tolist() == [
        [1.0, 1.0],
        [2.0, 2.0],
        [0.0, 0.0],
    ]


@pytest.mark.parametrize("order", [1, 2])
def test_smoothness_map_sums_to_the_reduced_value(order):
    """On a square image the x and y terms have the same count B * H * (W - order), so the map's
    sum is that count times the reduced loss (mean_x + mean_y)."""
    n = 8
    d, img = _rand(2, 1, n, n, seed=19), _rand(2, 3, n, n, seed=20)
    loss_map = losses.smoothness(d, img, order=order, reduction="none")
    assert loss_map.shape == (2, 1, n, n)
    reduced = losses.smoothness(d, img, order=order)
    torch.testing.assert_close(loss_map.sum(), 2 * n * (n - order) * reduced, atol=1e-12, rtol=0)


@pytest.mark.parametrize("order", [1, 2])
def test_smoothness_ignores_disparity_outside_the_mask(order):
    """Disparity outside the mask changes neither the reduced loss nor the map: differences need
    all their pixels valid, and normalisation divides by the mean over the mask."""
    d, img = _rand(2, 1, 9, 9, seed=21), _rand(2, 3, 9, 9, seed=22)
    mask = torch.zeros(2, 1, 9, 9, dtype=torch.bool)
    mask[..., 2:7, 1:6] = True
    changed = torch.where(mask, d, 10 * _rand(2, 1, 9, 9, seed=23))
    for normalize in (True, False):
        for reduction in ("mean", "none"):
            a = losses.smoothness(d, img, order, normalize, mask, reduction)
            b = losses.smoothness(changed, img, order, normalize, mask, reduction)
            torch.testing.assert_close(a, b, atol=1e-14, rtol=0)
        assert float(losses.smoothness(d, img, order, normalize)) != float(
            losses.smoothness(changed, img, order, normalize)
        )
    full = torch.ones_like(mask)
    torch.testing.assert_close(losses.smoothness(d, img, order, mask=full), losses.smoothness(d, img, order))


# 6. bad input ----------------------------------------------------------------------------


def test_bad_input():
    a = torch.rand(1, 3, 5, 6)
    with pytest.raises(ValueError, match=r"target: expected shape \(B, C, H, W\).*got \(1, 3, 5, 7\)"):
        losses.photometric_error(a, torch.rand(1, 3, 5, 7))
    with pytest.raises(ValueError, match=r"y: expected shape \(B, C, H, W\).*'C': 3.*got \(1, 1, 5, 6\)"):
        losses.ssim(a, torch.rand(1, 1, 5, 6))
    with pytest.raises(ValueError, match="pred: expected a floating-point tensor"):
        losses.photometric_error(a.to(torch.uint8), a)
    with pytest.raises(ValueError, match="disparity: expected a floating-point tensor"):
        losses.smoothness(torch.ones(1, 1, 5, 6, dtype=torch.int64), a)
    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
            losses.photometric_error(a, a, alpha=alpha)
    with pytest.raises(ValueError, match="reduction must be 'none' or 'mean', got 'sum'"):
        losses.photometric_error(a, a, reduction="sum")
    with pytest.raises(ValueError, match="reduction must be 'none' or 'mean', got 'sum'"):
        losses.smoothness(torch.ones(1, 1, 5, 6), a, reduction="sum")
    with pytest.raises(ValueError, match=r"mask: expected shape \(1, 1, 5, 6\).*got \(1, 3, 5, 6\)"):
        losses.photometric_error(a, a, mask=torch.ones(1, 3, 5, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask: expected shape \(1, 1, 5, 6\).*got \(1, 1, 5, 5\)"):
        losses.smoothness(torch.ones(1, 1, 5, 6), a, mask=torch.ones(1, 1, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="order must be 1 or 2, got 3"):
        losses.smoothness(torch.ones(1, 1, 5, 6), a, order=3)
    with pytest.raises(ValueError, match=r"image: expected shape \(B, \*, H, W\).*got \(1, 3, 5, 7\)"):
        losses.smoothness(torch.ones(1, 1, 5, 6), torch.rand(1, 3, 5, 7))


def test_census_transform_against_a_loop_and_its_invariances():
    from lesson_lib.losses import census_error, census_transform

    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 3, 6, 7, generator=g, dtype=torch.float64)
    t = census_transform(img, window=3)
    assert t.shape == (1, 8, 6, 7)
    grey = 255.0 * img.mean(1)[0]
    k = 0
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            if dv == 0 and du == 0:
                continue
            for v in range(6):
                for u in range(7):
                    n = grey[min(max(v + dv, 0), 5), min(max(u + du, 0), 6)] - grey[v, u]  # border read
                    assert float(t[0, k, v, u]) == pytest.approx(float(n / (0.81 + n * n) ** 0.5))
            k += 1
    assert float(census_error(img, img).abs().max()) == 0.0
    # a brightness offset changes no difference between neighbours: the census is blind to it
    assert float(census_error(img, img + 0.1).abs().max()) < 1e-12
    shifted = torch.roll(img, 1, dims=-1)
    e = census_error(img, shifted)
    assert e.shape == (1, 1, 6, 7) and float(e.mean()) > 0.1 and float(e.max()) < 1.0
    with pytest.raises(ValueError, match="odd"):
        census_transform(img, window=4)
    with pytest.raises(ValueError):
        census_error(img, img[..., :5])
