"""Geometry under mixed precision, and value checks that can be switched off.

1. On CUDA the trainer runs the loss under ``torch.autocast``, where matrix products run in
   half precision. The camera, pose and warping functions keep their maths in float32
   (``lesson_lib._validate.float32_geometry``). CPU autocast with bfloat16 shows the exposure
   and the fix without a GPU: the undecorated functions (``fn.__wrapped__``) move the rigid
   warp's sampling points by pixels, the decorated ones agree with float32.
2. Value checks (finite, non-negative) read tensor data, a host sync on a GPU each time. Inside
   ``value_checks(False)`` (the trainer's training step) the warps and losses make none;
   ``lesson_lib.training.syncs.HostSyncCounter`` counts the calls that would sync.
"""

import threading

import pytest
import torch

from lesson_lib import camera, losses, pose, stereo, warping
from lesson_lib._validate import check_positive, float32_geometry, value_checks, value_checks_enabled
from lesson_lib.training.syncs import HostSyncCounter

BF16 = torch.bfloat16


def _autocast():
    return torch.autocast("cpu", dtype=BF16)


def _scene(b=2, h=128, w=416):
    """A KITTI-sized driving scene: depth 3-43 m (near at the bottom), a small rotation and
    0.9 m of forward motion between the frames, KITTI-like intrinsics."""
    v, u = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    depth = 3.0 + 40.0 * (1 - v) ** 2 * (0.6 + 0.4 * torch.cos(6 * u) ** 2)
    depth = depth.expand(b, 1, h, w).clone()
    K = torch.tensor([[0.58 * w, 0.0, 0.5 * w], [0.0, 1.92 * h, 0.5 * h], [0.0, 0.0, 1.0]])
    K = K.expand(b, 3, 3).clone()
    vec = torch.tensor([[0.0, 0.0, -0.9, 0.01, 0.02, -0.005], [0.05, 0.0, -0.9, -0.01, 0.015, 0.004]])[:b]
    T = pose.pose_vector_to_matrix(vec)
    return depth, T, K


def _max_err(a, b):
    return float((a.double() - b.double()).abs().max())


# 1. float32 geometry under autocast ---------------------------------------------------------


def test_scene_is_as_described():
    depth, T, K = _scene()
    assert abs(float(depth.min()) - 3.0) < 1e-4 and abs(float(depth.max()) - 43.0) < 1e-4
    assert float(T[:, 2, 3].abs().min()) == pytest.approx(0.9)


def test_bf16_matrix_product_moves_the_rigid_warp_by_pixels():
    """The exposure, measured: the chain K R K^-1 [u, v, 1] in bfloat16 (8 significant bits)
    is off by about 1/256 of up to 416 px, and dividing by z spreads it. Both the bare product
    in bf16 and the undecorated function under autocast miss float32 by more than a pixel
    (4.6 px measured on this scene)."""
    depth, T, K = _scene()
    ref, _ = warping.rigid_sample_points(depth, T, K)

    b, _, h, w = depth.shape
    M = K @ T[:, :3, :3] @ torch.linalg.inv(K)
    grid = camera.pixel_grid(h, w).reshape(1, 3, h * w)
    p = (M.to(BF16) @ grid.to(BF16)).float() * depth.reshape(b, 1, -1) + K @ T[:, :3, 3:]
    uv_bf16 = (p[:, :2] / p[:, 2:3]).reshape(b, 2, h, w)
    assert _max_err(uv_bf16, ref) > 1.0

    with _autocast():
        unprotected, _ = warping.rigid_sample_points.__wrapped__(depth, T, K)
    assert _max_err(unprotected, ref) > 1.0


def test_rigid_sample_points_under_autocast_agree_with_float32():
    depth, T, K = _scene()
    ref, ref_front = warping.rigid_sample_points(depth, T, K)
    with _autocast():
        uv, in_front = warping.rigid_sample_points(depth, T, K)
    assert uv.dtype == torch.float32
    assert _max_err(uv, ref) <= 1e-3
    assert torch.equal(in_front, ref_front)


def test_rigid_warp_under_autocast_agrees_with_float32():
    depth, T, K = _scene()
    g = torch.Generator().manual_seed(0)
    source = torch.rand(depth.shape[0], 3, *depth.shape[-2:], generator=g)
    ref, ref_valid = warping.rigid_warp(source, depth, T, K)
    with _autocast():
        warped, valid = warping.rigid_warp(source, depth, T, K)
    assert warped.dtype == torch.float32
    assert _max_err(warped, ref) <= 1e-5
    assert torch.equal(valid, ref_valid)


def test_backproject_and_project_points_under_autocast():
    depth, T, K = _scene()
    points = camera.backproject(depth, K)
    uv, _ = camera.project_points(points.flatten(2), K)

    with _autocast():  # the exposure: without the guard both move by a lot
        bare_points = camera.backproject.__wrapped__(depth, K)
        bare_uv, _ = camera.project_points.__wrapped__(points.flatten(2), K)
    assert _max_err(bare_points, points) > 0.05  # metres (0.27 m measured)
    assert _max_err(bare_uv, uv) > 1.0  # pixels (3 px measured)

    with _autocast():
        got_points = camera.backproject(depth, K)
        got_uv, _ = camera.project_points(points.flatten(2), K)
    assert got_points.dtype == got_uv.dtype == torch.float32
    assert _max_err(got_points, points) <= 1e-5
    assert _max_err(got_uv, uv) <= 1e-3


def test_pose_functions_under_autocast_agree_with_float32():
    vec = torch.tensor([[0.3, -0.2, 0.9, 0.1, -0.05, 0.2], [0.0, 0.1, -0.9, -0.2, 0.3, 0.01]])
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(2, 3, 500, generator=g) * 40
    for rotation in ("euler", "axis_angle"):
        T = pose.pose_vector_to_matrix(vec, rotation)
        ref = [
            T,
            pose.invert_pose(T),
            pose.compose_poses(T, pose.invert_pose(T)),
            pose.transform_points(T, pts),
            pose.matrix_to_pose_vector(T, rotation),
        ]
        with _autocast():
            T2 = pose.pose_vector_to_matrix(vec, rotation)
            got = [
                T2,
                pose.invert_pose(T2),
                pose.compose_poses(T2, pose.invert_pose(T2)),
                pose.transform_points(T2, pts),
                pose.matrix_to_pose_vector(T2, rotation),
            ]
        with _autocast():  # the exposure: 40 m points moved by centimetres
            bare = pose.transform_points.__wrapped__(T, pts)
        assert _max_err(bare, ref[3]) > 0.01
        for r, x in zip(ref, got):
            assert x.dtype == torch.float32
            assert _max_err(x, r) <= 1e-5


def test_half_inputs_become_float32_and_float64_stays_float64():
    depth, T, K = _scene(1, 8, 12)
    uv, _ = warping.rigid_sample_points(depth.to(BF16), T.to(BF16), K.to(BF16))
    assert uv.dtype == torch.float32
    vec = torch.zeros(1, 6, dtype=torch.float16)
    assert pose.pose_vector_to_matrix(vec).dtype == torch.float32
    with _autocast():
        uv64, _ = warping.rigid_sample_points(depth.double(), T.double(), K.double())
        pts64 = camera.backproject(depth.double(), K.double())
    assert uv64.dtype == pts64.dtype == torch.float64


def test_guard_leaves_autocast_on_around_the_call():
    seen = []

    @float32_geometry
    def probe(x):
        seen.append((torch.is_autocast_enabled("cpu"), x.dtype))
        return x @ x

    x = torch.eye(3, dtype=BF16)
    with _autocast():
        assert probe(x).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")
        assert (torch.eye(3) @ torch.eye(3)).dtype == BF16
    assert seen == [(False, torch.float32)]


def test_gradients_flow_under_autocast_and_match_float32():
    """A bf16 pose-network output and a float32 depth map: the warp's gradients under autocast
    reach both and agree with those without autocast (same bf16 pose in both runs)."""
    depth, T, K = _scene(1, 32, 104)
    g = torch.Generator().manual_seed(2)
    source = torch.rand(1, 3, 32, 104, generator=g)
    target = torch.rand(1, 3, 32, 104, generator=g)
    vec0 = torch.tensor([[0.0, 0.0, -0.9, 0.01, 0.02, -0.005]])

    def grads(autocast):
        d = depth.clone().requires_grad_()
        v = vec0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=BF16, enabled=autocast):
            vec = v.to(BF16)  # what a pose network under autocast hands over
            warped, valid = warping.rigid_warp(source, d, pose.pose_vector_to_matrix(vec), K)
            loss = losses.photometric_error(warped, target, alpha=0.0, mask=valid, reduction="mean")
        loss.backward()
        return d.grad, v.grad

    gd, gv = grads(True)
    rd, rv = grads(False)
    assert torch.isfinite(gd).all() and torch.isfinite(gv).all()
    assert float(gd.abs().sum()) > 0 and float(gv.abs().sum()) > 0
    torch.testing.assert_close(gd, rd, atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(gv, rv, atol=1e-6, rtol=1e-4)


def test_gradcheck_through_the_guard():
    """The guard's casts and autocast switch keep the gradient exact (float64, autocast on)."""
    g = torch.Generator().manual_seed(3)
    depth = (torch.rand(1, 1, 4, 5, generator=g, dtype=torch.float64) * 5 + 1).requires_grad_()
    vec = torch.tensor([[0.1, 0.0, 0.2, 0.05, -0.03, 0.02]], dtype=torch.float64, requires_grad=True)
    K = torch.tensor([[[4.0, 0, 2], [0, 4, 1.5], [0, 0, 1]]], dtype=torch.float64)
    with _autocast():
        assert torch.autograd.gradcheck(
            lambda d, v: warping.rigid_sample_points(d, pose.pose_vector_to_matrix(v), K)[0], (depth, vec)
        )


# 2. value checks and host syncs --------------------------------------------------------------


def _training_like_step():
    g = torch.Generator().manual_seed(4)
    left, right = torch.rand(2, 2, 3, 16, 24, generator=g)
    disp = torch.rand(2, 1, 16, 24, generator=g) * 3
    depth = torch.rand(2, 1, 16, 24, generator=g) * 10 + 1
    K = torch.tensor([[20.0, 0, 12], [0, 20, 8], [0, 0, 1]]).expand(2, 3, 3)
    vec = torch.tensor([[0.1, 0, 0.2, 0.01, 0.02, 0.03]] * 2)
    return left, right, disp, depth, K, vec


def _step(left, right, disp, depth, K, vec):
    warped, valid = warping.stereo_warp(right, disp)
    out = [warped, valid, losses.photometric_error(warped, left, mask=valid, reduction="mean")]
    out.append(losses.smoothness(disp, left))
    out.extend(warping.rigid_warp(right, depth, pose.pose_vector_to_matrix(vec), K))
    out.append(stereo.disparity_fraction_to_depth(disp / 24, K[:, 0, 0], torch.tensor([0.5, 0.6])))
    out.append(stereo.depth_to_disparity_fraction(depth, K[:, 0, 0], torch.tensor([0.5, 0.6])))
    return out


def test_counter_sees_host_syncs():
    x = torch.arange(4.0)
    with HostSyncCounter() as c:
        bool((x > 1).any()), float(x.max()), x.sum().item(), x[x > 1]
    assert c.names == ["__bool__", "__float__", "item", "__getitem__"]


def test_no_host_syncs_with_value_checks_off_and_the_same_results():
    inputs = _training_like_step()
    with HostSyncCounter() as on:
        ref = _step(*inputs)
    assert len(on.calls) >= 3  # the checks that run by default
    with value_checks(False), HostSyncCounter() as off:
        got = _step(*inputs)
    assert off.calls == []
    for r, x in zip(ref, got):
        assert torch.equal(r, x)


def test_bad_values_raise_with_checks_on_and_are_not_read_with_checks_off():
    left, right, disp, depth, K, vec = _training_like_step()
    T = pose.pose_vector_to_matrix(vec)
    bad_disp = disp.clone()
    bad_disp[0, 0, 3, 4] = -0.5
    bad_depth = depth.clone()
    bad_depth[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"disparity must be >= 0 .*-0\.5"):
        warping.stereo_warp(right, bad_disp)
    with pytest.raises(ValueError, match="depth_t contains inf or NaN"):
        warping.rigid_warp(right, bad_depth, T, K)
    with pytest.raises(ValueError, match="disparity must be >= 0"):
        stereo.disparity_to_depth(bad_disp, 700.0, 0.5)
    with pytest.raises(ValueError, match="focal_px must be finite and > 0"):
        stereo.disparity_fraction_to_depth(disp, torch.tensor([700.0, -1.0]), 0.5)
    with value_checks(False):
        warping.stereo_warp(right, bad_disp)
        warping.rigid_warp(right, bad_depth, T, K)
        check_positive(torch.tensor(-1.0), "x")  # a tensor's value is not read
        with pytest.raises(ValueError, match="x must be finite and > 0"):
            check_positive(-1.0, "x")  # a Python number is checked for free
        with pytest.raises(ValueError, match=r"disparity: expected shape \(B, 1, H, W\)"):
            warping.stereo_warp(right, disp[:, 0])  # layout checks always run


def test_value_checks_switch_nests_restores_and_is_per_thread():
    assert value_checks_enabled()
    with value_checks(False):
        assert not value_checks_enabled()
        with value_checks(True):
            assert value_checks_enabled()
        assert not value_checks_enabled()
        seen = []
        t = threading.Thread(target=lambda: seen.append(value_checks_enabled()))
        t.start()
        t.join()
        assert seen == [True]  # a new thread starts with checks on
    assert value_checks_enabled()
    with pytest.raises(RuntimeError):
        with value_checks(False):
            raise RuntimeError
    assert value_checks_enabled()
