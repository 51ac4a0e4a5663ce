"""Trajectory evaluation (lesson_lib.trajectory): camera positions and SfMLearner's ATE on
snippets; chaining motions, the 7-DoF (Umeyama) alignment against known similarities, and
KITTI's drift errors on drives with known answers."""

import math

import numpy as np
import pytest
import torch

from lesson_lib.pose import axis_rotation, invert_pose, make_pose
from lesson_lib.trajectory import align_trajectory, chain_poses, drift_errors, trajectory_report, umeyama_alignment


def _drive(n=41, step=1.0, yaw_per_frame=0.0):
    """Camera-to-world poses of a car driving forward (+z) ``step`` m per frame, turning by
    ``yaw_per_frame`` radians about y each frame."""
    poses, P = [], torch.eye(4, dtype=torch.float64)
    for _ in range(n):
        poses.append(P.clone())
        move = make_pose(axis_rotation("y", torch.tensor([yaw_per_frame], dtype=torch.float64)),
                         torch.tensor([[0.0, 0.0, step]], dtype=torch.float64))[0]
        P = P @ move
    return torch.stack(poses)


def _motions(poses):
    """``T_k_to_{k+1} = inv(P_{k+1}) P_k`` of camera-to-world poses."""
    return invert_pose(poses[1:]) @ poses[:-1]


def test_chain_poses_straight_and_turning_drives():
    T = make_pose(torch.eye(3, dtype=torch.float64).expand(4, 3, 3), torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand(4, 3))
    P = chain_poses(T)  # a point 1 m ahead comes 1 m nearer each frame: the camera drives forward
    assert torch.allclose(P[:, :3, 3], torch.tensor([[0.0, 0.0, float(k)] for k in range(5)], dtype=torch.float64))
    turning = _drive(30, 0.7, 0.05)
    assert torch.allclose(chain_poses(_motions(turning)), turning, atol=1e-10)


def test_umeyama_recovers_a_known_similarity():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    R = axis_rotation("y", torch.tensor([0.7], dtype=torch.float64))[0] @ axis_rotation("x", torch.tensor([-0.3], dtype=torch.float64))[0]
    t = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    y = 2.5 * x @ R.T + t
    s, R_, t_ = umeyama_alignment(x, y)
    assert s == pytest.approx(2.5, rel=1e-9) and torch.allclose(R_, R, atol=1e-9) and torch.allclose(t_, t, atol=1e-9)
    s6, R6, _ = umeyama_alignment(x, y, with_scale=False)
    assert s6 == 1.0 and torch.allclose(R6, R, atol=1e-9)  # the rotation does not depend on the scale
    # a mirrored point set: the best proper rotation, never a reflection
    mirrored = x * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    _, Rm, _ = umeyama_alignment(x, mirrored)
    assert float(torch.det(Rm)) == pytest.approx(1.0)


def test_umeyama_refuses_degenerate_and_bad_input():
    with pytest.raises(ValueError, match="coincide"):
        umeyama_alignment(torch.zeros(5, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        umeyama_alignment(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="finite"):
        umeyama_alignment(torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0]]), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="target"):
        umeyama_alignment(torch.zeros(4, 3), torch.zeros(5, 3))


def test_align_trajectory_undoes_scale_rotation_and_offset():
    gt = _drive(30, 0.8, 0.03)
    W = make_pose(axis_rotation("y", torch.tensor([1.1], dtype=torch.float64)), torch.tensor([[5.0, 0.0, -2.0]], dtype=torch.float64))[0]
    pred = W @ gt
    pred[:, :3, 3] *= 0.25  # a monocular prediction in a quarter of the true scale, in another frame
    aligned, s = align_trajectory(pred, gt)
    assert s == pytest.approx(4.0, rel=1e-9) and torch.allclose(aligned, gt, atol=1e-9)


def test_drift_errors_known_answers():
    gt = _drive(41, 1.0)
    assert drift_errors(gt, gt, lengths=(10.0,))["t_err_percent"] == pytest.approx(0.0, abs=1e-9)
    long = gt.clone()
    long[:, :3, 3] *= 1.1  # every step 10 % too long
    r = drift_errors(long, gt, lengths=(10.0, 20.0))
    assert r["t_err_percent"] == pytest.approx(10.0, rel=1e-6)
    assert r["segments"] == 31 + 21 and r["r_err_deg_per_100m"] == pytest.approx(0.0, abs=1e-9)
    # the prediction turns 0.01 rad per metre that the truth drives straight: 0.573 deg per metre
    turned = _drive(41, 1.0, 0.01)
    r = drift_errors(turned, gt, lengths=(10.0,))
    assert r["r_err_deg_per_100m"] == pytest.approx(math.degrees(0.01) * 100, rel=1e-6)
    assert drift_errors(gt[:5], gt[:5], lengths=(10.0,))["segments"] == 0  # no 10 m segment in 4 m


def test_trajectory_report_is_blind_to_one_global_scale_but_not_to_scale_drift():
    gt = _drive(41, 1.0, 0.02)
    third = gt.clone()
    third[:, :3, 3] /= 3.0
    r = trajectory_report(third, gt, lengths=(10.0,))
    assert r["scale"] == pytest.approx(3.0, rel=1e-9) and r["t_err_percent"] < 1e-6 and r["ate_rmse"] < 1e-9
    # steps that shrink along the drive (scale drift): one alignment cannot undo it
    motions = _motions(gt)
    motions[:, :3, 3] *= torch.linspace(1.0, 0.5, motions.shape[0], dtype=torch.float64)[:, None]
    r = trajectory_report(chain_poses(motions), gt, lengths=(10.0,))
    assert r["t_err_percent"] > 5.0 and r["ate_rmse"] > 0.5 and r["path_m"] == pytest.approx(40.0)


def test_drive_motions_from_a_three_frame_predictor_rebuild_the_drive():
    """A predictor that knows the true poses (it reads the frame number off the image): the
    chained motions give back the drive; a batch size smaller than the drive changes nothing."""
    from lesson_lib.evaluation import drive_motions

    gt = _drive(13, 0.9, 0.04)
    frames = torch.arange(13, dtype=torch.float32)[:, None, None, None].expand(13, 3, 2, 4).clone()

    def predict_3(target, sources):
        t = target[:, 0, 0, 0].long()
        s = sources[:, :, 0, 0, 0].long()
        T = invert_pose(gt[s.flatten()]) @ gt[t.repeat_interleave(2)]  # T_t_to_s = inv(P_s) P_t
        return T.reshape(-1, 2, 4, 4).float()

    for bs in (1, 4, 32):
        motions = drive_motions(predict_3, frames, batch_size=bs)
        assert motions.shape == (12, 4, 4)
        assert torch.allclose(chain_poses(motions), gt, atol=1e-5)
    with pytest.raises(ValueError, match="at least 3"):
        drive_motions(predict_3, frames[:2])
    with pytest.raises(ValueError, match="predict gave"):
        drive_motions(lambda t, s: torch.eye(4).expand(t.shape[0], 4, 4), frames)
    with pytest.raises(ValueError, match="sources"):
        drive_motions(predict_3, frames, sources=3)
    # a two-view predictor: every pair (k, k+1), the first one included
    pairs = drive_motions(lambda t, s: predict_3(t, s.expand(-1, 2, -1, -1, -1))[:, :1], frames, sources=1, batch_size=5)
    assert torch.allclose(chain_poses(pairs), gt, atol=1e-5)


def test_window_positions_give_ate5_of_a_drive():
    from lesson_lib.trajectory import ate_snippets
    from lesson_lib.trajectory import window_positions

    gt = _drive(12, 0.8, 0.05)
    w = window_positions(gt, 5)
    assert w.shape == (8, 5, 3) and torch.allclose(w[:, 0], torch.zeros(8, 3, dtype=torch.float64))
    assert torch.allclose(w[0, :, 2], torch.tensor([0.0, 0.8, 1.6, 2.4, 3.2], dtype=torch.float64), atol=0.1)
    half = gt.clone()
    half[:, :3, 3] *= 0.5  # one scale for the whole drive: each window's own scale absorbs it
    err, scale = ate_snippets(w, window_positions(half, 5))
    assert float(err.max()) < 1e-9 and torch.allclose(scale, torch.full_like(scale, 2.0))
    with pytest.raises(ValueError, match="length"):
        window_positions(gt, 13)


# --------------------------------------------------------------------------- snippets (ATE-5)


def _pose(R, c):
    """T_ref_to_cam of a camera with rotation R (ref -> cam) whose centre is c in the ref frame."""
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = R
    T[:3, 3] = -R @ c
    return T


def test_camera_positions_known_answers():
    from lesson_lib.trajectory import camera_positions

    a = 0.7
    Ry = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=torch.float64)
    c1, c2 = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), torch.tensor([0.3, -0.2, 2.5], dtype=torch.float64)
    T = torch.stack([torch.eye(4, dtype=torch.float64), _pose(torch.eye(3, dtype=torch.float64), c1), _pose(Ry, c2)])[None]
    pos = camera_positions(T)
    torch.testing.assert_close(pos[0], torch.stack([torch.zeros(3, dtype=torch.float64), c1, c2]))
    # a camera 1 m forward maps a reference point at z = 5 to z = 4 in its own frame
    p = T[0, 1] @ torch.tensor([0.0, 0.0, 5.0, 1.0], dtype=torch.float64)
    assert float(p[2]) == pytest.approx(4.0)


def _ate_numpy(g, p, convention):
    g, p = np.asarray(g, np.float64), np.asarray(p, np.float64)
    out = []
    for gs, ps in zip(g, p):
        ps = ps - ps[0] + gs[0]
        den = (ps * ps).sum()
        s = (gs * ps).sum() / den if den > 0 else 0.0
        sq = ((s * ps - gs) ** 2).sum()
        out.append(np.sqrt(sq) / len(gs) if convention == "sfmlearner" else np.sqrt(sq / len(gs)))
    return np.array(out)


def test_ate_snippets_known_answers():
    from lesson_lib.trajectory import ate_snippets

    g = torch.tensor([[[0.0, 0, 0], [0, 0, 1], [0.1, 0, 2], [0.3, 0, 3], [0.6, 0, 4]]], dtype=torch.float64)
    err, scale = ate_snippets(g, g / 3)  # right shape, a third of the size: perfect after scaling
    assert float(err) == pytest.approx(0.0, abs=1e-12) and float(scale) == pytest.approx(3.0)
    err, scale = ate_snippets(g, g / 3 + torch.tensor([5.0, -1.0, 2.0], dtype=torch.float64))  # offset removed
    assert float(err) == pytest.approx(0.0, abs=1e-12) and float(scale) == pytest.approx(3.0)
    # no motion predicted: scale 0, the whole trajectory is the error
    err, scale = ate_snippets(g, torch.zeros_like(g))
    assert float(scale) == 0.0 and float(err) == pytest.approx(float(g.square().sum().sqrt()) / 5)
    # two frames at right angles: the best scale is 0, error |g_1| / N = 1 / 2
    g2 = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]], dtype=torch.float64)
    p2 = torch.tensor([[[0.0, 0, 0], [0, 1, 0]]], dtype=torch.float64)
    assert float(ate_snippets(g2, p2)[0]) == pytest.approx(0.5)
    assert float(ate_snippets(g2, p2, convention="rmse")[0]) == pytest.approx(math.sqrt(0.5))


def test_ate_snippets_matches_an_independent_numpy_version():
    from lesson_lib.trajectory import ate_snippets

    rng = np.random.default_rng(0)
    g = rng.normal(size=(16, 5, 3))
    p = 0.4 * g + 0.05 * rng.normal(size=g.shape) + rng.normal(size=(16, 1, 3))
    for conv in ("sfmlearner", "rmse"):
        err, _ = ate_snippets(torch.from_numpy(g), torch.from_numpy(p), convention=conv)
        np.testing.assert_allclose(err.numpy(), _ate_numpy(g, p, conv), rtol=1e-12)
    sfm, _ = ate_snippets(torch.from_numpy(g), torch.from_numpy(p))
    rmse, _ = ate_snippets(torch.from_numpy(g), torch.from_numpy(p), convention="rmse")
    torch.testing.assert_close(rmse, sfm * math.sqrt(5))  # the published convention is sqrt(N) smaller


def test_ate_snippets_bad_input():
    from lesson_lib.trajectory import ate_snippets

    g = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="at least 2 frames"):
        ate_snippets(g[:, :1], g[:, :1])
    with pytest.raises(ValueError, match="pred_positions"):
        ate_snippets(g, g[:, :4])
    bad = g.clone()
    bad[0, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        ate_snippets(g, bad)
    with pytest.raises(ValueError, match="convention"):
        ate_snippets(g, g, convention="kitti")
