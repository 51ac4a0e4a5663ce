"""Chapter 02: intrinsics, projection, back-projection; kornia as an independent check."""

import kornia
import pytest
import torch

from lesson_lib import camera


def _K(b=1, dtype=torch.float64):
    K = torch.tensor([[700.0, 0, 210.3], [0, 690.0, 63.7], [0, 0, 1]], dtype=dtype)
    return K.expand(b, 3, 3).clone()


def test_project_of_backproject_is_identity():
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(2, 1, 6, 9, generator=g, dtype=torch.float64) * 50 + 1
    K = _K(2)
    P = camera.backproject(depth, K)
    uv, valid = camera.project_points(P.flatten(2), K)
    grid = camera.pixel_grid(6, 9, torch.float64)[:2].reshape(1, 2, -1)
    torch.testing.assert_close(uv, grid.expand(2, 2, -1))
    assert valid.all()
    torch.testing.assert_close(P[:, 2:], depth)


def test_principal_point_is_on_the_optical_axis():
    K = _K()
    uv, _ = camera.project_points(torch.tensor([[[0.0], [0.0], [5.0]]], dtype=torch.float64), K)
    torch.testing.assert_close(uv[0, :, 0], K[0, :2, 2])


def test_matches_kornia_project_and_unproject():
    g = torch.Generator().manual_seed(1)
    P = torch.randn(1, 3, 100, generator=g, dtype=torch.float64)
    P[:, 2] = P[:, 2].abs() + 1
    K = _K()
    uv, _ = camera.project_points(P, K)
    ref = kornia.geometry.camera.project_points(P[0].T, K[0])
    torch.testing.assert_close(uv[0].T, ref)
    depth = torch.rand(1, 1, 4, 5, generator=g, dtype=torch.float64) + 1
    ours = camera.backproject(depth, K)
    theirs = kornia.geometry.depth.depth_to_3d_v2(depth[0], K)[0]  # (H, W, 3)
    torch.testing.assert_close(ours[0].permute(1, 2, 0), theirs)


def test_points_behind_camera_are_invalid_and_finite():
    P = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [2.0, 0.0, -3.0]]])
    uv, valid = camera.project_points(P, _K(dtype=torch.float32))
    assert valid[0, 0].tolist() == [True, False, False]
    assert torch.isfinite(uv).all()


def _blob(h, w, u0, v0, sigma):
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.exp(-((u - u0) ** 2 + (v - v0) ** 2) / (2 * sigma**2))


def _centroid(img):
    v, u = torch.meshgrid(torch.arange(img.shape[0], dtype=img.dtype), torch.arange(img.shape[1], dtype=img.dtype), indexing="ij")
    return float((img * u).sum() / img.sum()), float((img * v).sum() / img.sum())


def test_scale_intrinsics_matches_real_downsampling():
    """Project a point, render a blob there, halve the image by 2x2 averaging: the blob's new
    centre is where the scaled K projects the point (this pins the half-pixel convention)."""
    K = _K()
    P = torch.tensor([[[0.3], [-0.05], [4.0]]], dtype=torch.float64)
    uv, _ = camera.project_points(P, K)
    img = _blob(128, 416, float(uv[0, 0, 0]), float(uv[0, 1, 0]), sigma=4.0)
    small = img.reshape(64, 2, 208, 2).mean(dim=(1, 3))
    uv_small, _ = camera.project_points(P, camera.scale_intrinsics(K, 0.5, 0.5))
    cu, cv = _centroid(small)
    assert abs(cu - float(uv_small[0, 0, 0])) < 1e-3
    assert abs(cv - float(uv_small[0, 1, 0])) < 1e-3
    # the naive rule (cx * s) misses by a quarter pixel here
    assert abs(cu - (0.5 * float(uv[0, 0, 0]))) > 0.2


def test_resize_and_crop_intrinsics():
    K = _K()
    K2 = camera.resize_intrinsics(K, (375, 1242), (128, 416))
    torch.testing.assert_close(K2, camera.scale_intrinsics(K, 416 / 1242, 128 / 375))
    K3 = camera.crop_intrinsics(K, top=10, left=20)
    assert float(K3[0, 0, 2]) == pytest.approx(190.3) and float(K3[0, 1, 2]) == pytest.approx(53.7)
    assert torch.equal(K3[0, :2, :2], K[0, :2, :2])


def test_intrinsics_matrix_layout():
    K = camera.intrinsics_matrix(1.0, 2.0, 3.0, 4.0)
    assert K.tolist() == [[1.0, 0.0, 3.0], [0.0, 2.0, 4.0], [0.0, 0.0, 1.0]]


def test_wrong_shapes_name_expected_and_received():
    K = _K(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"depth: expected shape \(B, 1, H, W\).*got \(1, 3, 4, 4\)"):
        camera.backproject(torch.ones(1, 3, 4, 4), K)
    with pytest.raises(ValueError, match=r"K: expected shape \(B, 3, 3\)"):
        camera.backproject(torch.ones(2, 1, 4, 4), K)  # batch mismatch
    with pytest.raises(ValueError, match=r"points: expected shape \(B, 3, N\)"):
        camera.project_points(torch.ones(1, 4, 2), K)
    with pytest.raises(ValueError, match="floating-point"):
        camera.project_points(torch.ones(1, 3, 2, dtype=torch.int32), K)
    with pytest.raises(ValueError, match="scale factors"):
        camera.scale_intrinsics(K, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        camera.scale_intrinsics(torch.ones(4, 4), 1.0, 1.0)


def test_device_mismatch_is_reported():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match="one device"):
        camera.backproject(torch.ones(1, 1, 2, 2), _K(dtype=torch.float32).cuda())
