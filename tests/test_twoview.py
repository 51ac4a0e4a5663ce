"""Chapter 08: two-view geometry. Known answers (noiseless scenes, the real Middlebury pair with
its known pose), stated tolerances under noise and outliers, kornia (and OpenCV, where
installed) as independent checks, the four hypotheses against the cheirality rule, batched
against per-item calls, and degenerate input."""

import math

import kornia
import numpy as np
import pytest
import torch
from kornia.geometry import epipolar as kep

from lesson_lib import pose, twoview as tv
from lesson_lib._validate import value_checks
from lesson_lib.data import load_middlebury_motorcycle

F64 = torch.float64
K_A = torch.tensor([[500.0, 0.0, 319.5], [0.0, 510.0, 239.5], [0.0, 0.0, 1.0]], dtype=F64)
K_B = torch.tensor([[620.0, 0.0, 300.0], [0.0, 615.0, 250.0], [0.0, 0.0, 1.0]], dtype=F64)

# (axis-angle, t): sideways with a turn, forward (a driving car), backward and down
POSES = [
    ([0.05, -0.1, 0.03], [0.3, -0.1, 1.0]),
    ([0.0, 0.07, 0.0], [0.02, 0.0, -0.8]),
    ([-0.1, 0.2, 0.05], [-1.0, 0.2, 0.3]),
]


def _pose(i):
    aa, t = POSES[i]
    return pose.axis_angle_to_matrix(torch.tensor([aa], dtype=F64))[0], torch.tensor(t, dtype=F64)


def _points(n, seed, near=4.0, far=14.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: torch.rand(n, generator=g, dtype=F64) * (hi - lo) + lo  # noqa: E731
    return torch.stack([r(-4.0, 4.0), r(-3.0, 3.0), r(near, far)], -1)


def _scene(i=0, n=300, seed=0, K1=K_A, K2=K_B):
    """Exact correspondences of random points in front of both cameras of pose i."""
    R, t = _pose(i)
    X = _points(4 * n, seed)
    X = X[tv.in_front(R, t, X)][:n]
    assert len(X) == n
    p1, p2 = tv.project_pair(X, K1, K2, R, t)
    return p1, p2, X, R, t


def _noisy(p1, p2, noise, outliers, seed, F=None):
    """Add Gaussian pixel noise and replace a share of p2 by outliers: uniform over a 640x480
    image, or, given the true ``F``, moved 20-200 px off the epipolar line (so that no outlier is
    an inlier by chance)."""
    g = torch.Generator().manual_seed(seed)
    q1 = p1 + noise * torch.randn(p1.shape, generator=g, dtype=F64)
    q2 = p2 + noise * torch.randn(p2.shape, generator=g, dtype=F64)
    out = torch.rand(len(p1), generator=g) < outliers
    k = int(out.sum())
    if F is not None:
        normal = tv.epipolar_lines(F, p1[out])[:, :2]
        sign = torch.where(torch.rand(k, generator=g) < 0.5, -1.0, 1.0).to(F64)
        q2[out] = q2[out] + (sign * (torch.rand(k, generator=g, dtype=F64) * 180 + 20))[:, None] * normal
    else:
        q2[out] = torch.rand(k, 2, generator=g, dtype=F64) * torch.tensor([640.0, 480.0], dtype=F64)
    return q1, q2, out


def _same_up_to_scale(A, B, atol):
    a, b = A / A.norm(), B / B.norm()
    assert min(float((a - b).abs().max()), float((a + b).abs().max())) < atol


def _true_F(R, t, K1=K_A, K2=K_B):
    return tv.fundamental_from_essential(tv.essential_from_pose(R, t), K1, K2)


# 1. conventions -----------------------------------------------------------------------------


def test_the_constraint_holds_for_the_stated_pose_direction_only():
    """x2^T F x1 = 0 with F = K2^-T [t]_x R K1^-1 for X2 = R X1 + t; the inverse pose (the other
    direction) violates it by many pixels."""
    p1, p2, X, R, t = _scene(0)
    F = _true_F(R, t)
    assert float(tv.sampson_distance(F, p1, p2).max()) < 1e-9
    R_inv, t_inv = R.mT, -(R.mT @ t)
    assert float(tv.sampson_distance(_true_F(R_inv, t_inv), p1, p2).median()) > 1.0
    x1, x2 = torch.cat([p1, torch.ones(len(p1), 1, dtype=F64)], 1), torch.cat([p2, torch.ones(len(p2), 1, dtype=F64)], 1)
    assert float((x2 @ F * x1).sum(-1).abs().max()) < 1e-12  # the residual itself, row by row
    E = tv.essential_from_fundamental(F, K_A, K_B)
    _same_up_to_scale(E, tv.cross_matrix(t) @ R, 1e-12)
    assert torch.allclose(tv.cross_matrix(t) @ X[0], torch.linalg.cross(t, X[0]))


def test_normalising_transform_known_answer():
    """Points (0, 0), (4, 0), (0, 3), (4, 3): centroid (2, 1.5), every distance 2.5, so
    s = sqrt(2) / 2.5 and the normalised points sit at mean distance sqrt(2) around 0."""
    p = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0], [4.0, 3.0]], dtype=F64)
    T = tv.normalising_transform(p)
    s = math.sqrt(2) / 2.5
    torch.testing.assert_close(T, torch.tensor([[s, 0, -2 * s], [0, s, -1.5 * s], [0, 0, 1]], dtype=F64))
    g = torch.Generator().manual_seed(0)
    q = torch.rand(2, 50, 2, generator=g, dtype=F64) * torch.tensor([700.0, 30.0], dtype=F64) + 100
    Tq = tv.normalising_transform(q)
    x = q @ Tq[:, :2, :2].mT + Tq[:, None, :2, 2]
    torch.testing.assert_close(x.mean(1), torch.zeros(2, 2, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(x.norm(dim=-1).mean(1), torch.full((2,), math.sqrt(2), dtype=F64))
    assert Tq[0, 0, 0] == Tq[0, 1, 1]  # isotropic, although the spread is not


def test_the_real_rectified_pair_gives_its_known_pose():
    """Middlebury: correspondences from the ground-truth disparity (the left pixel x matches the
    right pixel x - d, pixel centres at integers); the true pose is R = I and t along -x, and the
    right camera's principal point is shifted by doffs. F is rectified: x2^T F x1 ~ v1 - v2."""
    pair = load_middlebury_motorcycle()
    c = pair.calibration
    g = torch.Generator().manual_seed(0)
    v, u = pair.valid[0, 0].nonzero().T
    pick = torch.randperm(len(u), generator=g)[:3000]
    v, u = v[pick].to(F64), u[pick].to(F64)
    d = pair.disparity[0, 0][v.long(), u.long()].to(F64)
    p1, p2 = torch.stack([u, v], -1), torch.stack([u - d, v], -1)
    K1 = c.K_tensor(F64)[0]
    K2 = K1.clone()
    K2[0, 2] += c.doffs
    F = tv.fundamental_8point(p1, p2)
    _same_up_to_scale(F, torch.tensor([[0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]], dtype=F64), 1e-3)
    R, t, front = tv.recover_pose(tv.essential_from_fundamental(F, K1, K2), p1, p2, K1, K2)
    rot, tdir = tv.pose_error(R, t, torch.eye(3, dtype=F64), torch.tensor([-1.0, 0.0, 0.0], dtype=F64))
    assert float(rot) < 0.05 and float(tdir) < 0.2, (rot, tdir)
    assert float(front.double().mean()) > 0.99
    # with the known baseline the triangulated depth is the ground truth's f B / (d + doffs)
    X, err = tv.triangulate_dlt(p1, p2, K1, K2, torch.eye(3, dtype=F64), torch.tensor([-c.baseline, 0.0, 0.0], dtype=F64))
    torch.testing.assert_close(X[:, 2], c.focal * c.baseline / (d + c.doffs), rtol=1e-9, atol=0)
    assert float(err.max()) < 1e-6


# 2. noiseless scenes are recovered exactly -----------------------------------------------------


@pytest.mark.parametrize("i", range(len(POSES)))
def test_noiseless_scene_recovered_exactly(i):
    p1, p2, X, R, t = _scene(i, n=60, seed=i)
    F = tv.fundamental_8point(p1, p2)
    _same_up_to_scale(F, _true_F(R, t), 1e-9)
    assert abs(float(torch.linalg.det(F))) < 1e-12 and abs(float(F.norm()) - 1) < 1e-12
    E = tv.essential_from_fundamental(F, K_A, K_B)
    R_est, t_est, front = tv.recover_pose(E, p1, p2, K_A, K_B)
    torch.testing.assert_close(R_est, R, atol=1e-9, rtol=0)
    torch.testing.assert_close(t_est, t / t.norm(), atol=1e-9, rtol=0)
    assert front.all()
    for triangulate in (tv.triangulate_midpoint, tv.triangulate_dlt):
        X_est, err = triangulate(p1, p2, K_A, K_B, R, t)
        torch.testing.assert_close(X_est, X, atol=1e-8, rtol=0)
        assert float(err.max()) < 1e-7
        X_unit, _ = triangulate(p1, p2, K_A, K_B, R_est, t_est)  # unit t: the scene shrinks by |t|
        torch.testing.assert_close(X_unit * t.norm(), X, atol=1e-7, rtol=0)
    F_r, inl = tv.ransac_fundamental(p1, p2, generator=torch.Generator().manual_seed(0))
    assert inl.all()
    _same_up_to_scale(F_r, _true_F(R, t), 1e-9)


def test_epipoles_and_epipolar_lines():
    """e1 is camera 2's centre seen from camera 1, K1 (-R^T t); e2 = K2 t; every epipolar line
    goes through the matching point and through the epipole; distances are in pixels."""
    p1, p2, X, R, t = _scene(1, n=40)
    F = tv.fundamental_8point(p1, p2)
    e1, e2 = tv.epipoles(F)
    want1, want2 = K_A @ -(R.mT @ t), K_B @ t
    torch.testing.assert_close(e1[:2] / e1[2], want1[:2] / want1[2], atol=1e-7, rtol=0)
    torch.testing.assert_close(e2[:2] / e2[2], want2[:2] / want2[2], atol=1e-7, rtol=0)
    l2, l1 = tv.epipolar_lines(F, p1, in_image=2), tv.epipolar_lines(F, p2, in_image=1)
    h = lambda p: torch.cat([p, torch.ones(len(p), 1, dtype=F64)], 1)  # noqa: E731
    assert float((l2 * h(p2)).sum(-1).abs().max()) < 1e-9
    assert float((l1 * h(p1)).sum(-1).abs().max()) < 1e-9
    assert float((l2 @ e2).abs().max()) < 1e-9 and float((l1 @ e1).abs().max()) < 1e-9
    shifted = h(p2 + torch.tensor([0.0, 3.0], dtype=F64))  # 3 px down: distance 3 |b|
    torch.testing.assert_close((l2 * shifted).sum(-1).abs(), 3 * l2[:, 1].abs(), atol=1e-9, rtol=0)


# 3. noise and outliers ---------------------------------------------------------------------


def test_eight_point_with_noise_and_the_value_of_normalising():
    """0.5 px noise, no outliers, 300 points, four scenes: the normalised 8-point algorithm's F
    has a Sampson error within 3 % of the true F's, the pose is within 0.2 deg (rotation) and
    1 deg (translation direction); without normalising, the Sampson error and the mean
    translation error are larger, and the system's condition number sigma_1 / sigma_8 is
    over 1,000 times larger (about 1.2e5 against 55)."""
    errors = {True: [], False: []}
    for seed in range(4):
        p1, p2, X, R, t = _scene(0, n=300, seed=seed)
        q1, q2, _ = _noisy(p1, p2, 0.5, 0.0, seed)
        rms_true = float(tv.sampson_distance(_true_F(R, t), q1, q2).square().mean().sqrt())
        rms = {}
        for normalise in (True, False):
            F = tv.fundamental_8point(q1, q2, normalise=normalise)
            R_e, t_e, _ = tv.recover_pose(tv.essential_from_fundamental(F, K_A, K_B), q1, q2, K_A, K_B)
            errors[normalise].append([float(x) for x in tv.pose_error(R_e, t_e, R, t)])
            rms[normalise] = float(tv.sampson_distance(F, q1, q2).square().mean().sqrt())
        assert rms[True] < 1.03 * rms_true and rms[False] > rms[True]
    good = np.array(errors[True])
    assert good[:, 0].max() < 0.2 and good[:, 1].max() < 1.0, good
    assert np.array(errors[False]).mean(0)[1] > good.mean(0)[1]
    A_pix = tv.epipolar_design_matrix(q1, q2)
    T1, T2 = tv.normalising_transform(q1), tv.normalising_transform(q2)
    n1 = q1 @ T1[:2, :2].T + T1[:2, 2]
    n2 = q2 @ T2[:2, :2].T + T2[:2, 2]
    cond = lambda A: float(torch.linalg.svdvals(A)[0] / torch.linalg.svdvals(A)[7])  # noqa: E731
    assert cond(A_pix) > 1000 * cond(tv.epipolar_design_matrix(n1, n2))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_ransac_with_noise_and_30_percent_outliers(dtype):
    """2,000 correspondences, 0.5 px noise, 30 % uniform outliers, threshold 1 px: at least
    90 % of the true inliers are found and at most 1 % of the outliers accepted; the Sampson
    error over the true inliers is within 5 % of the 8-point fit to the true inliers alone;
    rotation within 0.5 deg, translation direction within 3 deg."""
    for seed in range(2):
        p1, p2, X, R, t = _scene(0, n=2000, seed=seed)
        q1, q2, out = _noisy(p1, p2, 0.5, 0.3, seed)
        F, inl, info = tv.ransac_fundamental(q1.to(dtype), q2.to(dtype), threshold=1.0,
                                             generator=torch.Generator().manual_seed(seed), return_info=True)
        assert F.dtype == dtype and inl.dtype == torch.bool
        assert float((inl & ~out).sum() / (~out).sum()) > 0.9
        assert float((inl & out).sum() / out.sum()) < 0.01
        F = F.to(F64)
        best = tv.fundamental_8point(q1[~out], q2[~out])
        rms = lambda M: float(tv.sampson_distance(M, q1[~out], q2[~out]).square().mean().sqrt())  # noqa: E731
        assert rms(F) < 1.05 * rms(best)
        R_e, t_e, front = tv.recover_pose(tv.essential_from_fundamental(F, K_A, K_B), q1, q2, K_A, K_B, mask=inl)
        rot, tdir = tv.pose_error(R_e, t_e, R, t)
        assert float(rot) < 0.5 and float(tdir) < 3.0, (rot, tdir)
        assert not bool(info.degenerate) and int(info.hypotheses) <= 4096


def test_ransac_is_deterministic_given_a_generator_and_adapts_its_iterations():
    p1, p2, X, R, t = _scene(0, n=500)
    q1, q2, out = _noisy(p1, p2, 0.5, 0.3, 1)
    a = tv.ransac_fundamental(q1, q2, generator=torch.Generator().manual_seed(7), return_info=True)
    b = tv.ransac_fundamental(q1, q2, generator=torch.Generator().manual_seed(7), return_info=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.manual_seed(3)
    c = tv.ransac_fundamental(q1, q2)
    torch.manual_seed(3)
    d = tv.ransac_fundamental(q1, q2)  # the global generator, seeded
    assert torch.equal(c[0], d[0])
    info = a[2]
    # the stop: the formula at the best sample's inlier share, at least min_iters (1024 by
    # default), reached in whole rounds of 256
    assert float(info.required) == min(max(float(info.formula), 1024.0), 4096.0)
    assert int(info.hypotheses) >= float(info.required) and int(info.hypotheses) - 256 < float(info.required)
    # without the floor, clean data stops after one round; a cap is respected; more outliers
    # need more samples
    _, _, clean = tv.ransac_fundamental(p1, p2, min_iters=0, generator=torch.Generator().manual_seed(0), return_info=True)
    assert int(clean.hypotheses) == 256 and float(clean.formula) == 1.0 and float(clean.inlier_share) == 1.0
    _, _, floor = tv.ransac_fundamental(p1, p2, generator=torch.Generator().manual_seed(0), return_info=True)
    assert int(floor.hypotheses) == 1024
    _, _, capped = tv.ransac_fundamental(q1, q2, max_iters=10, generator=torch.Generator().manual_seed(0), return_info=True)
    assert int(capped.hypotheses) == 10
    _, _, some = tv.ransac_fundamental(q1, q2, min_iters=0, generator=torch.Generator().manual_seed(0), return_info=True)
    r1, r2, _ = _noisy(p1, p2, 0.0, 0.6, 2)
    _, _, many = tv.ransac_fundamental(r1, r2, min_iters=0, generator=torch.Generator().manual_seed(0), return_info=True)
    assert int(many.hypotheses) > int(some.hypotheses)


def test_ransac_iterations_formula():
    """k = log(1 - p) / log(1 - w^8): 78 samples for w = 0.7, 1177 for w = 0.5 (p = 0.99)."""
    k = tv.ransac_iterations(torch.tensor([0.7, 0.5, 1.0, 0.0]), 0.99)
    assert k[:3].tolist() == [78.0, 1177.0, 1.0] and math.isinf(float(k[3]))
    assert float(tv.ransac_iterations(0.5, 0.99, sample_size=7)) == 588.0


# 4. kornia (and OpenCV) agree -----------------------------------------------------------------


def test_eight_point_agrees_with_kornia_find_fundamental():
    p1, p2, X, R, t = _scene(2, n=200, seed=3)
    q1, q2, _ = _noisy(p1, p2, 0.7, 0.0, 3)
    ours = tv.fundamental_8point(torch.stack([q1, p1]), torch.stack([q2, p2]))
    theirs = kep.find_fundamental(torch.stack([q1, p1]), torch.stack([q2, p2]), method="8POINT")
    for b in range(2):
        _same_up_to_scale(ours[b], theirs[b], 1e-8)


def test_decompose_essential_agrees_with_kornia_and_gives_proper_rotations():
    p1, p2, X, R, t = _scene(0)
    E = 3.7 * tv.essential_from_pose(R, t)
    Rs, ts = tv.decompose_essential(E)
    R1, R2, tk = kep.decompose_essential_matrix(E)
    theirs = [(R1, tk[:, 0]), (R1, -tk[:, 0]), (R2, tk[:, 0]), (R2, -tk[:, 0])]
    for k in range(4):
        assert any(torch.allclose(Rs[k], Rk, atol=1e-10) and torch.allclose(ts[k], tt, atol=1e-10) for Rk, tt in theirs)
        torch.testing.assert_close(Rs[k] @ Rs[k].mT, torch.eye(3, dtype=F64), atol=1e-12, rtol=0)
        assert abs(float(torch.linalg.det(Rs[k])) - 1) < 1e-12 and abs(float(ts[k].norm()) - 1) < 1e-12
        _same_up_to_scale(tv.cross_matrix(ts[k]) @ Rs[k], E, 1e-10)  # every hypothesis factors E
    Rs2, ts2 = tv.decompose_essential(-0.01 * E)  # the order does not depend on E's scale or sign
    torch.testing.assert_close(Rs2, Rs, atol=1e-10, rtol=0)
    torch.testing.assert_close(ts2, ts, atol=1e-10, rtol=0)


def test_dlt_agrees_with_kornia_triangulate_points():
    p1, p2, X, R, t = _scene(1, n=100, seed=2)
    q1, q2, _ = _noisy(p1, p2, 1.0, 0.0, 2)
    ours, _ = tv.triangulate_dlt(q1, q2, K_A, K_B, R, t)
    P1 = K_A @ torch.cat([torch.eye(3, dtype=F64), torch.zeros(3, 1, dtype=F64)], 1)
    P2 = K_B @ torch.cat([R, t[:, None]], 1)
    theirs = kep.triangulate_points(P1[None], P2[None], q1[None], q2[None], solver="svd")[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-8)
    assert float((ours - X).norm(dim=-1).median()) > 1e-3  # the noise did move them


def test_kornia_issue_2198_chooses_per_element_on_the_pinned_kornia():
    """Kornia issue 2198: `motion_from_essential_choose_solution` used to give every batch
    element the hypothesis index chosen for element 0. Here element 1's E is element 0's
    negated, which moves the true pose to another index of kornia's four. On kornia 0.9.0 each
    element gets its own, correct choice (the bug no longer holds), and so does ours."""
    assert kornia.__version__.startswith("0.9")
    p1, p2, X, R, t = _scene(0, n=50)
    E0 = tv.essential_from_pose(R, t)
    E = torch.stack([E0, -E0])
    Rk, tk = kep.motion_from_essential(E)
    right = [[k for k in range(4) if float(sum(tv.pose_error(Rk[b, k], tk[b, k, :, 0], R, t))) < 1e-6] for b in range(2)]
    assert len(right[0]) == len(right[1]) == 1 and right[0] != right[1]  # the elements need different indices
    K = torch.stack([K_A, K_A])
    q1, q2 = tv.project_pair(X, K_A, K_A, R, t)
    R_out, t_out, _, count = kep.motion_from_essential_choose_solution(E, K, K, torch.stack([q1, q1]), torch.stack([q2, q2]))
    for b in range(2):
        assert float(sum(tv.pose_error(R_out[b], t_out[b, :, 0], R, t))) < 1e-6, f"kornia chose wrongly for element {b}"
        assert int(count[b]) == 50
    R_o, t_o, front = tv.recover_pose(E, torch.stack([q1, q1]), torch.stack([q2, q2]), K_A, K_A)
    for b in range(2):
        assert float(sum(tv.pose_error(R_o[b], t_o[b], R, t))) < 1e-6 and front[b].all()


def test_agrees_with_opencv_where_installed():
    """OpenCV is not a requirement; where it is installed, its 8-point F and recoverPose
    (R, t from camera 1 to camera 2, unit t) agree with ours."""
    cv2 = pytest.importorskip("cv2")
    p1, p2, X, R, t = _scene(0, n=200, seed=5, K2=K_A)
    q1, q2, _ = _noisy(p1, p2, 0.5, 0.0, 5)
    F_cv, _ = cv2.findFundamentalMat(q1.numpy(), q2.numpy(), cv2.FM_8POINT)
    _same_up_to_scale(tv.fundamental_8point(q1, q2), torch.from_numpy(F_cv), 1e-6)
    E = tv.essential_from_pose(R, t)
    _, R_cv, t_cv, _ = cv2.recoverPose(E.numpy(), q1.numpy(), q2.numpy(), K_A.numpy())
    R_o, t_o, _ = tv.recover_pose(E, q1, q2, K_A, K_A)
    torch.testing.assert_close(R_o, torch.from_numpy(R_cv), atol=1e-6, rtol=0)
    torch.testing.assert_close(t_o, torch.from_numpy(t_cv[:, 0]), atol=1e-6, rtol=0)


# 5. the four hypotheses and cheirality --------------------------------------------------------


def test_all_four_hypotheses_against_the_cheirality_rule():
    """Exactly one hypothesis puts every point in front of both cameras. Flipping t alone puts
    every point behind both; the twisted pair (the other R) puts them in front of one camera
    and behind the other. recover_pose picks the right one whatever the scale and sign of E."""
    p1, p2, X, R, t = _scene(0, n=80)
    E = tv.essential_from_pose(R, t)
    Rs, ts = tv.decompose_essential(E)
    patterns = []
    for k in range(4):
        Xk, _ = tv.triangulate_midpoint(p1, p2, K_A, K_B, Rs[k], ts[k])
        z1 = Xk[:, 2]
        z2 = (Xk @ Rs[k].mT + ts[k])[:, 2]
        front = tv.in_front(Rs[k], ts[k], Xk)
        assert torch.equal(front, (z1 > 0) & (z2 > 0))
        patterns.append((bool((z1 > 0).all()), bool((z2 > 0).all()), bool((z1 < 0).all()), bool((z2 < 0).all())))
    assert sorted(patterns) == sorted([(True, True, False, False), (False, False, True, True),
                                       (True, False, False, True), (False, True, True, False)])
    right = patterns.index((True, True, False, False))
    assert patterns[right ^ 1] == (False, False, True, True)  # (R, -t): behind both
    torch.testing.assert_close(Rs[right], R, atol=1e-10, rtol=0)
    for scale in (1.0, -1.0, 1e-3, -250.0):
        R_e, t_e, front = tv.recover_pose(scale * E, p1, p2, K_A, K_B)
        torch.testing.assert_close(R_e, R, atol=1e-9, rtol=0)
        torch.testing.assert_close(t_e, t / t.norm(), atol=1e-9, rtol=0)
        assert front.all()


def test_in_front_is_strict_and_uses_the_pose_direction():
    R, t = _pose(1)  # t_z = -0.8: camera 2 is 0.8 in front of camera 1 along its axis
    X = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, -1.0]], dtype=F64)
    z2 = (X @ R.mT + t)[:, 2]
    assert torch.equal(tv.in_front(R, t, X), (X[:, 2] > 0) & (z2 > 0))
    assert tv.in_front(R, t, X).tolist() == [False, True, False, False]


def test_recover_pose_uses_only_the_mask_to_vote():
    p1, p2, X, R, t = _scene(0, n=100)
    q2 = p2.clone()
    q2[:70] = p2[:70].flip(0)  # 70 scrambled matches outvote the 30 good ones
    E = tv.essential_from_pose(R, t)
    mask = torch.zeros(100, dtype=torch.bool)
    mask[70:] = True
    R_m, t_m, front = tv.recover_pose(E, p1, q2, K_A, K_B, mask=mask)
    torch.testing.assert_close(R_m, R, atol=1e-9, rtol=0)
    assert front[70:].all()


# 6. batched equals per-item ----------------------------------------------------------------


def test_batched_calls_equal_per_item_calls():
    scenes = [_scene(i, n=120, seed=10 + i) for i in range(3)]
    noisy = [_noisy(s[0], s[1], 0.5, 0.3, i) for i, s in enumerate(scenes)]
    exact = [_noisy(s[0], s[1], 0.0, 0.3, i, F=_true_F(s[3], s[4])) for i, s in enumerate(scenes)]
    C1, C2 = torch.stack([q[0] for q in exact]), torch.stack([q[1] for q in exact])
    P1, P2 = torch.stack([q[0] for q in noisy]), torch.stack([q[1] for q in noisy])
    Rb, tb = torch.stack([s[3] for s in scenes]), torch.stack([s[4] for s in scenes])
    K1b, K2b = torch.stack([K_A, K_B, K_A]), torch.stack([K_B, K_A, K_B])
    clean = [~q[2] for q in noisy]
    Fb = tv.fundamental_8point(torch.stack([p[c][:60] for p, c in zip(P1, clean)]), torch.stack([p[c][:60] for p, c in zip(P2, clean)]))
    Eb = tv.essential_from_fundamental(Fb, K1b, K2b)
    Rs_b, ts_b = tv.decompose_essential(Eb)
    Rp_b, tp_b, fr_b = tv.recover_pose(Eb, P1, P2, K1b, K2b)
    Xm_b, em_b = tv.triangulate_midpoint(P1, P2, K1b, K2b, Rb, tb)
    Xd_b, ed_b = tv.triangulate_dlt(P1, P2, K1b, K2b, Rb, tb)
    sd_b = tv.sampson_distance(Fb, P1, P2)
    Fr_b, inl_b = tv.ransac_fundamental(C1, C2, generator=torch.Generator().manual_seed(0))
    for i in range(3):
        c = clean[i]
        tight = dict(atol=1e-10, rtol=1e-10)
        F = tv.fundamental_8point(P1[i][c][:60], P2[i][c][:60])
        torch.testing.assert_close(Fb[i], F, **tight)
        E = tv.essential_from_fundamental(F, K1b[i], K2b[i])
        torch.testing.assert_close(Eb[i], E, **tight)
        Rs, ts = tv.decompose_essential(E)
        torch.testing.assert_close(Rs_b[i], Rs, **tight)
        torch.testing.assert_close(ts_b[i], ts, **tight)
        R_p, t_p, fr = tv.recover_pose(E, P1[i], P2[i], K1b[i], K2b[i])
        torch.testing.assert_close(Rp_b[i], R_p, **tight)
        assert torch.equal(fr_b[i], fr)
        for fn, Xb, eb in ((tv.triangulate_midpoint, Xm_b, em_b), (tv.triangulate_dlt, Xd_b, ed_b)):
            X, e = fn(P1[i], P2[i], K1b[i], K2b[i], Rb[i], tb[i])
            torch.testing.assert_close(Xb[i], X, **tight)
            torch.testing.assert_close(eb[i], e, **tight)
        torch.testing.assert_close(sd_b[i], tv.sampson_distance(F, P1[i], P2[i]), **tight)
        # RANSAC draws other samples per item, but without noise and with outliers far from
        # their epipolar lines each element converges to the same inliers and F as its own call
        Fr, inl = tv.ransac_fundamental(C1[i], C2[i], generator=torch.Generator().manual_seed(100 + i))
        assert torch.equal(inl_b[i], inl) and torch.equal(inl, ~exact[i][2])
        torch.testing.assert_close(Fr_b[i], Fr, atol=1e-9, rtol=0)
    # an unbatched K, R, t is shared by the whole batch
    Xs, _ = tv.triangulate_dlt(P1, P2, K_A, K_B, Rb[0], tb[0])
    torch.testing.assert_close(Xs[1], tv.triangulate_dlt(P1[1], P2[1], K_A, K_B, Rb[0], tb[0])[0])


# 7. degenerate and bad input ---------------------------------------------------------------


def test_too_few_points_and_non_finite_coordinates_raise():
    p1, p2, X, R, t = _scene(0, n=20)
    for fn in (tv.fundamental_8point, tv.ransac_fundamental):
        with pytest.raises(ValueError, match="at least 8 correspondences, got 7"):
            fn(p1[:7], p2[:7])
    bad = p2.clone()
    bad[5, 1] = float("nan")
    calls = [tv.fundamental_8point, tv.ransac_fundamental, lambda a, b: tv.sampson_distance(torch.eye(3, dtype=F64), a, b)]
    for fn in calls:
        with pytest.raises(ValueError, match="p2 has 1 non-finite correspondence.*point 5 of batch element 0"):
            fn(p1, bad)
    with pytest.raises(ValueError, match="point 3 of batch element 1"):
        b2 = torch.stack([p2, p2]).clone()
        b2[1, 3, 0] = float("inf")
        tv.triangulate_dlt(torch.stack([p1, p1]), b2, K_A, K_B, R, t)


def test_shapes_are_checked_with_clear_messages():
    p1, p2, X, R, t = _scene(0, n=20)
    with pytest.raises(ValueError, match=r"p1: expected shape \(N, 2\) or \(B, N, 2\), got \(20, 3\)"):
        tv.fundamental_8point(torch.cat([p1, p1[:, :1]], 1), p2)
    with pytest.raises(ValueError, match=r"same shape, got \(20, 2\) and \(19, 2\)"):
        tv.ransac_fundamental(p1, p2[:19])
    with pytest.raises(ValueError, match=r"K2: expected shape \(3, 3\) or \(1, 3, 3\), got \(4, 4\)"):
        tv.triangulate_midpoint(p1, p2, K_A, torch.eye(4, dtype=F64), R, t)
    with pytest.raises(ValueError, match=r"t: expected shape \(3,\) or \(1, 3\), got \(3, 1\)"):
        tv.triangulate_midpoint(p1, p2, K_A, K_B, R, t[:, None])
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        tv.fundamental_8point(p1.numpy(), p2)
    with pytest.raises(ValueError, match="threshold must be a finite number > 0"):
        tv.ransac_fundamental(p1, p2, threshold=0.0)
    with pytest.raises(ValueError, match=r"confidence must lie in \(0, 1\)"):
        tv.ransac_fundamental(p1, p2, confidence=1.0)
    with pytest.raises(ValueError, match="max_iters must be an integer >= 1"):
        tv.ransac_fundamental(p1, p2, max_iters=0)


def test_coincident_and_collinear_points_raise():
    p1, p2, X, R, t = _scene(0, n=20)
    with pytest.raises(ValueError, match="all points of batch element 0 coincide"):
        tv.fundamental_8point(torch.full_like(p1, 3.0), p2)
    line = torch.stack([torch.linspace(0, 600, 20, dtype=F64), torch.linspace(10, 400, 20, dtype=F64)], -1)
    with pytest.raises(ValueError, match="points of image 1 of batch element 0 lie on one line"):
        tv.fundamental_8point(line, p2)


def test_a_plane_or_a_pure_rotation_raises_exactly_and_is_flagged_with_noise():
    """A homography maps p1 to p2: exact data makes the 8-point system rank-deficient (error);
    noisy data does not, and RANSAC's info flags it (a homography explains the inliers), while a
    general scene is not flagged."""
    R, t = _pose(0)
    X = _points(300, 4)
    plane = X.clone()
    plane[:, 2] = 9.0 + 0.3 * plane[:, 0]  # a slanted wall
    cases = {"plane": tv.project_pair(plane, K_A, K_B, R, t), "rotation": tv.project_pair(X, K_A, K_B, R, torch.zeros(3, dtype=F64))}
    for name, (p1, p2) in cases.items():
        with pytest.raises(ValueError, match="do not determine F .*one plane or a pure rotation"):
            tv.fundamental_8point(p1, p2)
        q1, q2, _ = _noisy(p1, p2, 0.5, 0.0, 1)
        F, inl, info = tv.ransac_fundamental(q1, q2, generator=torch.Generator().manual_seed(0), return_info=True)
        assert bool(info.degenerate) and float(info.planar_share) > 0.95, name
        assert torch.isfinite(F).all()
        assert float(tv.homography_share(q1, q2, threshold=2.0)) > 0.9
    p1, p2, *_ = _scene(0, n=300)
    q1, q2, _ = _noisy(p1, p2, 0.5, 0.0, 1)
    _, _, info = tv.ransac_fundamental(q1, q2, generator=torch.Generator().manual_seed(0), return_info=True)
    assert not bool(info.degenerate) and float(info.planar_share) < 0.5


def test_zero_baseline_and_bad_essential_matrices_raise():
    p1, p2, X, R, t = _scene(0, n=20)
    with pytest.raises(ValueError, match="zero baseline"):
        tv.triangulate_midpoint(p1, p2, K_A, K_B, R, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="zero baseline"):
        tv.triangulate_dlt(p1, p2, K_A, K_B, R, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="E of batch element 0 is zero"):
        tv.decompose_essential(torch.zeros(3, 3, dtype=F64))
    with pytest.raises(ValueError, match="has rank 1"):
        tv.recover_pose(torch.outer(t, t), p1, p2, K_A, K_B)
    with pytest.raises(ValueError, match="t_true is zero"):
        tv.pose_error(R, t, R, torch.zeros(3, dtype=F64))


def test_parallel_rays_give_a_flagged_point_never_nan():
    """A correspondence without parallax (rays parallel) cannot be triangulated: its point is
    (0, 0, 0), in front of no camera, with reprojection error inf; the others are unaffected."""
    p1, p2, X, R, t = _scene(1, n=10)  # forward motion
    e1, e2 = tv.epipoles(_true_F(R, t))
    q1, q2 = p1.clone(), p2.clone()
    q1[0], q2[0] = e1[:2] / e1[2], e2[:2] / e2[2]  # a point on the baseline: both rays along it
    for fn in (tv.triangulate_midpoint, tv.triangulate_dlt):
        Xq, err = fn(q1, q2, K_A, K_B, R, t)
        assert not torch.isnan(Xq).any() and not torch.isnan(err).any()
        assert Xq[0].tolist() == [0.0, 0.0, 0.0] and math.isinf(float(err[0]))
        assert not tv.in_front(R, t, Xq)[0]
        torch.testing.assert_close(Xq[1:], X[1:], atol=1e-8, rtol=0)


def test_without_value_checks_nothing_reads_the_data():
    """Inside value_checks(False) (the trainer's step) the NaN check is skipped: the output is then
    not finite, as documented; valid data gives the same result."""
    p1, p2, X, R, t = _scene(0, n=30)
    with value_checks(False):
        F = tv.fundamental_8point(p1, p2)
    torch.testing.assert_close(F, tv.fundamental_8point(p1, p2))


# 8. dtypes and devices ---------------------------------------------------------------------


def test_float32_and_autocast_keep_float32_results():
    p1, p2, X, R, t = _scene(0, n=200)
    q1, q2 = p1.float(), p2.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F = tv.fundamental_8point(q1, q2)
        Xd, err = tv.triangulate_dlt(q1, q2, K_A.float(), K_B.float(), R.float(), t.float())
    assert F.dtype == torch.float32 and Xd.dtype == torch.float32
    _same_up_to_scale(F.double(), _true_F(R, t), 1e-4)
    torch.testing.assert_close(Xd.double(), X, atol=2e-3, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    p1, p2, X, R, t = _scene(0, n=500)
    q1, q2, out = _noisy(p1, p2, 0.0, 0.3, 0, F=_true_F(R, t))  # exact, outliers far from their lines
    F_cpu, inl_cpu = tv.ransac_fundamental(q1.float(), q2.float(), generator=torch.Generator().manual_seed(0))
    F_gpu, inl_gpu = tv.ransac_fundamental(q1.float().cuda(), q2.float().cuda(), generator=torch.Generator().manual_seed(0))
    assert F_gpu.device.type == "cuda"
    assert torch.equal(inl_gpu.cpu(), ~out) and torch.equal(inl_cpu, ~out)
    _same_up_to_scale(F_gpu.cpu().double(), F_cpu.double(), 1e-4)
    Xg, _ = tv.triangulate_dlt(q1.cuda(), q2.cuda(), K_A.cuda(), K_B.cuda(), R.cuda(), t.cuda())
    torch.testing.assert_close(Xg.cpu(), tv.triangulate_dlt(q1, q2, K_A, K_B, R, t)[0])
