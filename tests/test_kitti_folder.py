"""lesson_lib.data.kitti and lesson_lib.data.folder on a tiny fake KITTI raw tree built here.

The fake tree has the real layout and realistic calibration (KITTI's 2011_09_26 values, scaled
to 60 x 200 images), a car driving 1 m per frame along a fixed heading (with pitch and roll, so
the rotation order matters), and velodyne scans of a wall 10 m in front of camera 2. Every
expected value is computed here independently of the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.transform import resize

from lesson_lib.camera import resize_intrinsics
from lesson_lib.data.folder import ImageFolder, guess_intrinsics, read_image
from lesson_lib.data.kitti import (
    KittiCalibration,
    KittiStereo,
    KittiVideo,
    oxts_to_camera_poses,
    oxts_to_poses,
    read_calib_file,
    read_oxts,
    read_split_file,
    read_velodyne,
    velodyne_to_depth,
)

DATE = "2011_09_26"
DRIVE = "2011_09_26_drive_0001_sync"
FOLDER = f"{DATE}/{DRIVE}"
N_FRAMES = 5
H0, W0 = 60, 200
SX, SY = W0 / 1242, H0 / 375
FX, FY = 721.5377 * SX, 721.5377 * SY
CX, CY = SX * (609.5593 + 0.5) - 0.5, SY * (172.854 + 0.5) - 0.5
P02_X, P03_X = 44.85728 * SX, -333.6 * SX
BASELINE = (44.85728 + 333.6) / 721.5377  # 0.5245 m: the scale cancels
R_VELO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
T_VELO = np.array([-4.069766e-03, -7.631618e-02, -2.717806e-01])
T_IMU = np.array([-8.086759e-01, 3.195559e-01, -7.997231e-01])
LAT0, LON0, ALT0 = 49.011, 8.4227, 112.9
ROLL, PITCH, YAW = 0.02, 0.05, 0.3
ER = 6378137.0
WALL = 10.0


def _fmt(values) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(values, dtype=np.float64).ravel())


def _rigid(R, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _velo_to_cam(p_x: float) -> np.ndarray:
    """Velodyne -> rectified camera with x offset ``p_x`` (P[0, 3]), built by hand: R_rect is
    the identity here, so it is the offset (P[0, 3] / fx, 0, 0) after [R_VELO | T_VELO]."""
    return _rigid(np.eye(3), [p_x / FX, 0.0, 0.0]) @ _rigid(R_VELO, T_VELO)


T_VELO_TO_CAM2 = _velo_to_cam(P02_X)
T_VELO_TO_CAM3 = _velo_to_cam(P03_X)
K2 = np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])


def _cam_to_cam_text(width=W0, height=H0, p02=None) -> str:
    P02 = [[FX, 0, CX, P02_X], [0, FY, CY, 0], [0, 0, 1, 0]] if p02 is None else p02
    P03 = [[FX, 0, CX, P03_X], [0, FY, CY, 0], [0, 0, 1, 0]]
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    for c in range(4):
        lines += [f"S_rect_0{c}: {_fmt([width, height])}", f"R_rect_0{c}: {_fmt(np.eye(3))}"]
    lines += [f"P_rect_02: {_fmt(P02)}", f"P_rect_03: {_fmt(P03)}"]
    return "\n".join(lines) + "\n"


def _oxts_line(k: int) -> str:
    """Frame k of a car driving 1 m per frame along its own x axis (heading YAW, nose PITCH
    down, rolled by ROLL): inverse Mercator of the expected metric positions."""
    d = k * np.array(
        [math.cos(YAW) * math.cos(PITCH), math.sin(YAW) * math.cos(PITCH), -math.sin(PITCH)]
    )
    s = math.cos(LAT0 * math.pi / 180)
    mx0 = s * LON0 * math.pi * ER / 180
    my0 = s * ER * math.log(math.tan((90 + LAT0) * math.pi / 360))
    lon = (mx0 + d[0]) * 180 / (s * math.pi * ER)
    lat = 360 / math.pi * math.atan(math.exp((my0 + d[1]) / (s * ER))) - 90
    floats = [lat, lon, ALT0 + d[2], ROLL, PITCH, YAW] + [0.0] * 19
    return " ".join(f"{v:.12f}" for v in floats) + " 4 10 4 4 4\n"


def _wall_points() -> np.ndarray:
    """Velodyne points of a wall at z = 10 in camera 2's frame, plus points behind it (z = -5)
    that must never show up, as (N, 4) float32."""
    xs, ys = np.meshgrid(np.linspace(-6, 6, 121), np.linspace(-1.5, 1.5, 31))
    front = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, WALL), np.ones(xs.size)])
    back = np.stack([xs.ravel() / 2, ys.ravel(), np.full(xs.size, -5.0), np.ones(xs.size)])
    cam = np.concatenate([front, back], axis=1)
    velo = np.linalg.inv(T_VELO_TO_CAM2) @ cam
    pts = np.concatenate([velo[:3].T, np.full((cam.shape[1], 1), 0.5)], axis=1)
    return pts.astype(np.float32)


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture
def kitti(tmp_path):
    """A fake KITTI raw root with one drive of N_FRAMES frames; returns (root, images) where
    images[(cam, k)] is the uint8 array written for camera cam, frame k."""
    root = tmp_path / "kitti_raw"
    date = root / DATE
    drive = date / DRIVE
    date.mkdir(parents=True)
    (date / "calib_cam_to_cam.txt").write_text(_cam_to_cam_text())
    (date / "calib_velo_to_cam.txt").write_text(
        f"calib_time: 15-Mar-2012 11:37:16\nR: {_fmt(R_VELO)}\nT: {_fmt(T_VELO)}\n"
        "delta_f: 0.000000e+00 0.000000e+00\ndelta_c: 0.000000e+00 0.000000e+00\n"
    )
    (date / "calib_imu_to_velo.txt").write_text(
        f"calib_time: 25-May-2012 16:47:16\nR: {_fmt(np.eye(3))}\nT: {_fmt(T_IMU)}\n"
    )
    rng = np.random.default_rng(0)
    images = {}
    for k in range(N_FRAMES):
        name = f"{k:010d}"
        for cam in (2, 3):
            img = rng.integers(0, 256, (H0, W0, 3), dtype=np.uint8)
            images[(cam, k)] = img
            _png(drive / f"image_0{cam}" / "data" / f"{name}.png", img)
        (drive / "oxts" / "data").mkdir(parents=True, exist_ok=True)
        (drive / "oxts" / "data" / f"{name}.txt").write_text(_oxts_line(k))
        (drive / "velodyne_points" / "data").mkdir(parents=True, exist_ok=True)
        _wall_points().tofile(drive / "velodyne_points" / "data" / f"{name}.bin")
    return root, images


def _split(tmp_path: Path, *lines: str) -> Path:
    p = tmp_path / "split.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def _expected_image(img: np.ndarray, h: int, w: int) -> torch.Tensor:
    out = resize(img.astype(np.float64) / 255.0, (h, w), order=1, anti_aliasing=True)
    return torch.from_numpy(out.transpose(2, 0, 1)).float()


# --------------------------------------------------------------------------- calibration


def test_read_calib_file_values_and_skips_text(kitti):
    root, _ = kitti
    c = read_calib_file(root / DATE / "calib_cam_to_cam.txt")
    assert "calib_time" not in c  # not numeric
    assert c["corner_dist"].tolist() == pytest.approx([0.0995])
    P = c["P_rect_02"].reshape(3, 4)
    assert P[0, 0] == pytest.approx(FX) and P[1, 1] == pytest.approx(FY)
    assert P[0, 2] == pytest.approx(CX) and P[1, 2] == pytest.approx(CY)
    assert P[0, 3] == pytest.approx(P02_X)
    assert c["S_rect_02"].tolist() == [200.0, 60.0]


def test_calibration_from_fake_date_folder(kitti):
    root, _ = kitti
    cal = KittiCalibration.from_date_folder(root / DATE)
    assert cal.cam == 2 and cal.image_size == (H0, W0)
    np.testing.assert_allclose(cal.K, K2, rtol=1e-10)
    np.testing.assert_allclose(cal.K_cam3, K2, rtol=1e-10)
    assert cal.baseline == pytest.approx(BASELINE, rel=1e-9)
    assert 0.50 < cal.baseline < 0.56  # the ~0.54 m KITTI rig
    np.testing.assert_allclose(cal.T_velo_to_cam, T_VELO_TO_CAM2, atol=1e-10)
    np.testing.assert_allclose(cal.T_imu_to_cam, T_VELO_TO_CAM2 @ _rigid(np.eye(3), T_IMU), atol=1e-10)
    cal3 = KittiCalibration.from_date_folder(root / DATE, cam=3)
    np.testing.assert_allclose(cal3.T_velo_to_cam, T_VELO_TO_CAM3, atol=1e-10)
    assert cal3.baseline == pytest.approx(BASELINE, rel=1e-9)


REAL_CAM_TO_CAM = """calib_time: 09-Jan-2012 13:57:47
corner_dist: 9.950000e-02
S_rect_02: 1.242000e+03 3.750000e+02
R_rect_00: 9.999239e-01 9.837760e-03 -7.445048e-03 -9.869795e-03 9.999421e-01 -4.278459e-03 7.402527e-03 4.351614e-03 9.999631e-01
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
S_rect_03: 1.242000e+03 3.750000e+02
P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03
"""
REAL_VELO_TO_CAM = """calib_time: 15-Mar-2012 11:37:16
R: 7.533745e-03 -9.999714e-01 -6.166020e-04 1.480249e-02 7.280733e-04 -9.998902e-01 9.998621e-01 7.523790e-03 1.480755e-02
T: -4.069766e-03 -7.631618e-02 -2.717806e-01
"""
REAL_IMU_TO_VELO = """calib_time: 25-May-2012 16:47:16
R: 9.999976e-01 7.553071e-04 -2.035826e-03 -7.854027e-04 9.998898e-01 -1.482298e-02 2.024406e-03 1.482454e-02 9.998881e-01
T: -8.086759e-01 3.195559e-01 -7.997231e-01
"""


def test_real_calibration_projection_equals_P_rect(tmp_path):
    """With KITTI's own numbers: K, baseline, and K @ T_velo_to_cam reproducing the projection
    P_rect_0x @ R_rect_00 @ Tr_velo_to_cam of KITTI's depth-map generation (full P, including
    its small y and z offsets; the rotations are not exact permutations here)."""
    d = tmp_path / DATE
    d.mkdir()
    (d / "calib_cam_to_cam.txt").write_text(REAL_CAM_TO_CAM)
    (d / "calib_velo_to_cam.txt").write_text(REAL_VELO_TO_CAM)
    (d / "calib_imu_to_velo.txt").write_text(REAL_IMU_TO_VELO)
    c = read_calib_file(d / "calib_cam_to_cam.txt")
    R_rect = np.eye(4)
    R_rect[:3, :3] = c["R_rect_00"].reshape(3, 3)
    v = read_calib_file(d / "calib_velo_to_cam.txt")
    Tr = _rigid(v["R"].reshape(3, 3), v["T"])
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.uniform([2, -10, -2], [60, 10, 2], (50, 3)), np.ones((50, 1))], 1)
    for cam in (2, 3):
        cal = KittiCalibration.from_date_folder(d, cam=cam)
        P = c[f"P_rect_0{cam}"].reshape(3, 4)
        assert cal.K[0, 0] == pytest.approx(721.5377) and cal.K[0, 2] == pytest.approx(609.5593)
        assert cal.K[1, 2] == pytest.approx(172.854) and cal.image_size == (375, 1242)
        mine = cal.K @ (cal.T_velo_to_cam @ pts.T)[:3]
        theirs = P @ R_rect @ Tr @ pts.T
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-8)
        assert cal.baseline == pytest.approx((44.85728 + 339.5242) / 721.5377, rel=1e-9)
        assert abs(cal.baseline - 0.54) < 0.02


def test_calibration_errors_name_path_and_key(kitti):
    root, _ = kitti
    c2c = root / DATE / "calib_cam_to_cam.txt"
    text = c2c.read_text()
    # wrong number of values for a needed key
    short = [" ".join(l.split()[:-1]) if l.startswith("P_rect_02:") else l for l in text.splitlines()]
    c2c.write_text("\n".join(short) + "\n")
    with pytest.raises(ValueError) as e:
        KittiCalibration.from_date_folder(root / DATE)
    assert str(c2c) in str(e.value) and "P_rect_02" in str(e.value) and "11" in str(e.value)
    # a needed key missing
    c2c.write_text("\n".join(l for l in text.splitlines() if not l.startswith("R_rect_00")))
    with pytest.raises(ValueError, match="R_rect_00") as e:
        KittiCalibration.from_date_folder(root / DATE)
    assert str(c2c) in str(e.value)
    # a line without ':'
    c2c.write_text(text + "this line has no separator\n")
    with pytest.raises(ValueError) as e:
        read_calib_file(c2c)
    assert str(c2c) in str(e.value) and f"line {len(text.splitlines()) + 1}" in str(e.value)
    # a missing file
    (root / DATE / "calib_imu_to_velo.txt").unlink()
    c2c.write_text(text)
    with pytest.raises(FileNotFoundError) as e:
        KittiCalibration.from_date_folder(root / DATE)
    assert str(root / DATE / "calib_imu_to_velo.txt") in str(e.value)
    with pytest.raises(FileNotFoundError, match="calib_imu_to_velo"):
        read_calib_file(root / DATE / "calib_imu_to_velo.txt")


# --------------------------------------------------------------------------- LiDAR depth


def test_velodyne_depth_of_the_wall_is_z_not_range(kitti):
    root, _ = kitti
    pts = read_velodyne(root / FOLDER / "velodyne_points" / "data" / "0000000000.bin")
    assert pts.shape == (2 * 121 * 31, 4) and pts.dtype == np.float32
    depth = velodyne_to_depth(pts, T_VELO_TO_CAM2, K2, H0, W0)
    assert depth.shape == (H0, W0) and depth.dtype == np.float32
    covered = depth > 0
    assert covered.sum() > 500
    # every covered pixel is the wall's z = 10, also far off-axis (range there is ~11.7 m);
    # the points behind the camera (z = -5) left no trace (no negative and no 5 m values)
    np.testing.assert_allclose(depth[covered], WALL, atol=1e-4)
    assert depth.min() == 0.0
    # the wall's edge at x = +6 m lands where the pinhole model says
    u_edge = round(FX * 6.0 / WALL + CX)
    cols = np.nonzero(covered.any(axis=0))[0]
    assert cols.max() == u_edge and cols.min() == round(FX * -6.0 / WALL + CX)


def test_velodyne_nearest_point_wins_in_either_order():
    K = np.array([[100.0, 0, 20.0], [0, 100.0, 10.0], [0, 0, 1]])
    far, near = [0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 5.0, 1.0]
    for order in ([far, near], [near, far], [far, near, far]):
        d = velodyne_to_depth(np.array(order), np.eye(4), K, 21, 41)
        assert d[10, 20] == pytest.approx(5.0)
        assert (d > 0).sum() == 1


def test_velodyne_rounding_bounds_and_behind_camera():
    K = np.array([[10.0, 0, 0.0], [0, 10.0, 0.0], [0, 0, 1]])
    z = 2.0
    # u = 10 x / z: want u = 3.4 -> col 3, 3.6 -> col 4, -0.4 -> col 0, -0.6 -> outside, 4.6 -> outside (W=5)
    us = {3.4: 3, 3.6: 4, -0.4: 0}
    for u, col in us.items():
        d = velodyne_to_depth(np.array([[u * z / 10, 0.0, z, 0.0]]), np.eye(4), K, 3, 5)
        assert d[0, col] == pytest.approx(z) and (d > 0).sum() == 1, (u, d)
    for u in (-0.6, 4.6):
        d = velodyne_to_depth(np.array([[u * z / 10, 0.0, z, 0.0]]), np.eye(4), K, 3, 5)
        assert (d == 0).all()
    # behind the camera: would project to (1, 1) if z < 0 were kept
    d = velodyne_to_depth(np.array([[-0.2, -0.2, -2.0, 0.0]]), np.eye(4), K, 3, 5)
    assert (d == 0).all()


def test_velodyne_bin_size_must_be_multiple_of_16(tmp_path):
    p = tmp_path / "0000000000.bin"
    p.write_bytes(b"\x00" * 17)
    with pytest.raises(ValueError) as e:
        read_velodyne(p)
    assert str(p) in str(e.value) and "16" in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        read_velodyne(tmp_path / "missing.bin")


# --------------------------------------------------------------------------- OXTS poses


def test_fake_oxts_really_moves_one_metre_per_frame(kitti):
    """Independent of the Mercator code: haversine distance on the sphere plus altitude."""
    root, _ = kitti
    o = np.stack([read_oxts(root / FOLDER / "oxts" / "data" / f"{k:010d}.txt") for k in range(2)])
    lat1, lon1, lat2, lon2 = np.radians([o[0, 0], o[0, 1], o[1, 0], o[1, 1]])
    a = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    horizontal = 2 * ER * math.asin(math.sqrt(a))
    assert math.hypot(horizontal, o[1, 2] - o[0, 2]) == pytest.approx(1.0, abs=1e-4)


def test_oxts_to_poses_relative_motion_is_forward(kitti):
    root, _ = kitti
    o = np.stack([read_oxts(root / FOLDER / "oxts" / "data" / f"{k:010d}.txt") for k in range(N_FRAMES)])
    assert o.shape == (N_FRAMES, 30)
    T = oxts_to_poses(o)
    assert T.shape == (N_FRAMES, 4, 4)
    np.testing.assert_allclose(T[0], np.eye(4), atol=1e-12)
    for k in range(N_FRAMES - 1):
        rel = np.linalg.inv(T[k]) @ T[k + 1]  # IMU k+1 -> IMU k
        np.testing.assert_allclose(rel[:3, :3], np.eye(3), atol=1e-6)
        np.testing.assert_allclose(rel[:3, 3], [1.0, 0.0, 0.0], atol=1e-3)  # IMU x = forward


def test_oxts_rotation_is_Rz_Ry_Rx_relative_to_first():
    o = np.zeros((3, 30))
    o[:, 0], o[:, 1] = LAT0, LON0
    o[1, 3:6] = [0.0, 0.0, 0.1]  # yaw only
    o[2, 3:6] = [0.2, -0.3, 0.4]  # roll, pitch, yaw
    T = oxts_to_poses(o)
    c, s = math.cos(0.1), math.sin(0.1)
    np.testing.assert_allclose(T[1, :3, :3], [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-12)
    from lesson_lib.pose import axis_rotation

    a = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    R = (axis_rotation("z", a(0.4)) @ axis_rotation("y", a(-0.3)) @ axis_rotation("x", a(0.2)))[0]
    np.testing.assert_allclose(T[2, :3, :3], R.numpy(), atol=1e-12)
    # a first frame with a heading: the result is relative, so poses[0] is the identity and
    # the others are rotated back by it
    o[:, 5] += 1.0
    T2 = oxts_to_poses(o)
    np.testing.assert_allclose(T2[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(T2[1, :3, :3], T[1, :3, :3], atol=1e-12)


def test_camera_poses_direction_convention(kitti):
    """T_t_to_s with s = t + 1: a static point 10 m ahead of the target is 9 m ahead of the
    next camera."""
    root, _ = kitti
    o = np.stack([read_oxts(root / FOLDER / "oxts" / "data" / f"{k:010d}.txt") for k in range(2)])
    cal = KittiCalibration.from_date_folder(root / DATE)
    Tcw = oxts_to_camera_poses(o, cal.T_imu_to_cam)
    T_t_to_s = np.linalg.inv(Tcw[1]) @ Tcw[0]
    np.testing.assert_allclose(T_t_to_s @ [0, 0, 10, 1], [0, 0, 9, 1], atol=1e-3)
    np.testing.assert_allclose(T_t_to_s[:3, :3], np.eye(3), atol=1e-3)


# --------------------------------------------------------------------------- split files


def test_read_split_file(tmp_path):
    p = _split(tmp_path, f"{FOLDER} 0000000005 l", "", f"{FOLDER}/ 473 r")
    assert read_split_file(p) == [(FOLDER, 5, "l"), (FOLDER, 473, "r")]


@pytest.mark.parametrize(
    "bad",
    [
        f"{FOLDER} 5",  # no side
        f"{FOLDER} five l",  # not an index
        f"{FOLDER} -1 l",  # negative
        f"{FOLDER} 5 x",  # bad side
        f"{DRIVE} 5 l",  # no date folder
        f"{FOLDER} 5 l extra",
    ],
)
def test_read_split_file_bad_lines(tmp_path, bad):
    p = _split(tmp_path, f"{FOLDER} 1 l", bad)
    with pytest.raises(ValueError) as e:
        read_split_file(p)
    assert str(p) in str(e.value) and "line 2" in str(e.value)


def test_read_split_file_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_split_file(tmp_path / "nope.txt")
    p = _split(tmp_path, "")
    with pytest.raises(ValueError, match="no frames"):
        read_split_file(p)


# --------------------------------------------------------------------------- datasets


H1, W1 = 32, 104  # not a uniform scaling of 60 x 200: sx != sy


def test_kitti_stereo_left_side(kitti, tmp_path):
    root, images = kitti
    ds = KittiStereo(root, _split(tmp_path, f"{FOLDER} 1 l"), height=H1, width=W1)
    assert len(ds) == 1
    it = ds[0]
    assert set(it) >= {"left", "right", "K", "baseline", "depth"}
    for k in ("left", "right"):
        assert it[k].shape == (3, H1, W1) and it[k].dtype == torch.float32
        assert 0.0 <= float(it[k].min()) and float(it[k].max()) <= 1.0
    torch.testing.assert_close(it["left"], _expected_image(images[(2, 1)], H1, W1), atol=1e-5, rtol=0)
    torch.testing.assert_close(it["right"], _expected_image(images[(3, 1)], H1, W1), atol=1e-5, rtol=0)
    K_expected = resize_intrinsics(torch.from_numpy(K2), (H0, W0), (H1, W1)).float()
    assert it["K"].shape == (3, 3) and it["K"].dtype == torch.float32
    torch.testing.assert_close(it["K"], K_expected)
    assert it["baseline"].dtype == torch.float32 and it["baseline"].ndim == 0
    assert float(it["baseline"]) == pytest.approx(BASELINE, rel=1e-6)
    assert it["depth"].shape == (1, H1, W1) and it["depth"].dtype == torch.float32
    # the depth map is the wall projected with the RESIZED K into the output grid
    expected = velodyne_to_depth(_wall_points(), T_VELO_TO_CAM2, K_expected.double().numpy(), H1, W1)
    np.testing.assert_allclose(it["depth"][0].numpy(), expected, atol=1e-4)
    u, v = round(float(K_expected[0, 2])), round(float(K_expected[1, 2]))
    assert float(it["depth"][0, v, u]) == pytest.approx(WALL, abs=1e-4)
    assert not bool(it["swapped"])
    assert float(it["T_left_to_right"][0, 3]) == pytest.approx(-BASELINE, rel=1e-5)
    torch.testing.assert_close(it["T_left_to_right"][:3, :3], torch.eye(3))


def test_kitti_stereo_right_side_is_swapped(kitti, tmp_path):
    root, images = kitti
    ds = KittiStereo(root, _split(tmp_path, f"{FOLDER} 2 r"), height=H1, width=W1)
    it = ds[0]
    torch.testing.assert_close(it["left"], _expected_image(images[(3, 2)], H1, W1), atol=1e-5, rtol=0)
    torch.testing.assert_close(it["right"], _expected_image(images[(2, 2)], H1, W1), atol=1e-5, rtol=0)
    assert bool(it["swapped"]) and it["swapped"].dtype == torch.bool
    assert float(it["T_left_to_right"][0, 3]) == pytest.approx(+BASELINE, rel=1e-5)
    K_expected = resize_intrinsics(torch.from_numpy(K2), (H0, W0), (H1, W1))
    expected = velodyne_to_depth(_wall_points(), T_VELO_TO_CAM3, K_expected.numpy(), H1, W1)
    np.testing.assert_allclose(it["depth"][0].numpy(), expected, atol=1e-4)
    left_depth = KittiStereo(root, _split(tmp_path, f"{FOLDER} 2 l"), height=H1, width=W1)[0]["depth"]
    # camera 3 sits 0.52 m to the right: the wall appears shifted LEFT by about fx b / z pixels
    cols = lambda d: np.nonzero((d[0] > 0).any(0).numpy())[0]  # noqa: E731
    shift = float(K_expected[0, 0]) * BASELINE / WALL
    assert cols(it["depth"]).min() == pytest.approx(cols(left_depth).min() - shift, abs=1)


def test_kitti_stereo_without_depth_needs_no_velodyne(kitti, tmp_path):
    root, _ = kitti
    for k in range(N_FRAMES):
        (root / FOLDER / "velodyne_points" / "data" / f"{k:010d}.bin").unlink()
    it = KittiStereo(root, _split(tmp_path, f"{FOLDER} 1 l"), H1, W1, load_depth=False)[0]
    assert it["depth"].shape == (1, H1, W1) and (it["depth"] == 0).all()


def test_kitti_video_snippet(kitti, tmp_path):
    root, images = kitti
    ds = KittiVideo(root, _split(tmp_path, f"{FOLDER} 1 l", f"{FOLDER} 2 l"), 3, H1, W1)
    it = ds[0]
    assert set(it) == {"target", "sources", "K", "depth", "T_t_to_s", "has_pose"}
    assert it["target"].shape == (3, H1, W1) and it["sources"].shape == (2, 3, H1, W1)
    assert it["sources"].dtype == torch.float32 and it["T_t_to_s"].dtype == torch.float32
    torch.testing.assert_close(it["target"], _expected_image(images[(2, 1)], H1, W1), atol=1e-5, rtol=0)
    torch.testing.assert_close(it["sources"][0], _expected_image(images[(2, 0)], H1, W1), atol=1e-5, rtol=0)
    torch.testing.assert_close(it["sources"][1], _expected_image(images[(2, 2)], H1, W1), atol=1e-5, rtol=0)
    torch.testing.assert_close(it["K"], resize_intrinsics(torch.from_numpy(K2), (H0, W0), (H1, W1)).float())
    assert it["depth"].shape == (1, H1, W1) and float(it["depth"].max()) == pytest.approx(WALL, abs=1e-4)
    assert it["has_pose"].dtype == torch.bool and bool(it["has_pose"])
    T = it["T_t_to_s"]
    assert T.shape == (2, 4, 4)
    p = torch.tensor([0.0, 0.0, 10.0, 1.0])
    # source 0 is the previous frame (1 m behind): the point is 11 m ahead of it; source 1
    # is the next frame: 9 m
    torch.testing.assert_close(T[0] @ p, torch.tensor([0.0, 0.0, 11.0, 1.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(T[1] @ p, torch.tensor([0.0, 0.0, 9.0, 1.0]), atol=1e-3, rtol=0)
    for s in range(2):
        torch.testing.assert_close(T[s, :3, :3], torch.eye(3), atol=1e-3, rtol=0)
        assert float(T[s, :3, 3].norm()) == pytest.approx(1.0, abs=1e-3)
    # length 5 at frame 2: sources are frames 0, 1, 3, 4 in time order, 2, 1, -1, -2 m away
    it5 = KittiVideo(root, _split(tmp_path, f"{FOLDER} 2 l"), 5, H1, W1)[0]
    assert it5["sources"].shape == (4, 3, H1, W1)
    torch.testing.assert_close(it5["sources"][3], _expected_image(images[(2, 4)], H1, W1), atol=1e-5, rtol=0)
    z = (it5["T_t_to_s"] @ p)[:, 2]
    torch.testing.assert_close(z, torch.tensor([12.0, 11.0, 9.0, 8.0]), atol=2e-3, rtol=0)


def test_kitti_video_without_poses(kitti, tmp_path):
    root, images = kitti
    for k in range(N_FRAMES):
        (root / FOLDER / "oxts" / "data" / f"{k:010d}.txt").unlink()
    it = KittiVideo(root, _split(tmp_path, f"{FOLDER} 1 r"), 3, H1, W1, load_poses=False)[0]
    assert not bool(it["has_pose"])
    assert it["T_t_to_s"].shape == (2, 4, 4) and (it["T_t_to_s"] == 0).all()
    torch.testing.assert_close(it["target"], _expected_image(images[(3, 1)], H1, W1), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- dataset errors


MISSING = [
    ("stereo", f"{FOLDER}/image_02/data/0000000001.png", "left colour image"),
    ("stereo", f"{FOLDER}/image_03/data/0000000001.png", "right colour image"),
    ("stereo", f"{FOLDER}/velodyne_points/data/0000000001.bin", "velodyne scan"),
    ("stereo", f"{DATE}/calib_velo_to_cam.txt", "velodyne-to-camera calibration"),
    ("video", f"{FOLDER}/image_02/data/0000000002.png", "left colour image"),
    ("video", f"{FOLDER}/oxts/data/0000000000.txt", "OXTS record"),
    ("video", f"{FOLDER}/velodyne_points/data/0000000001.bin", "velodyne scan"),
    ("video", f"{DATE}/calib_cam_to_cam.txt", "camera calibration"),
]


def _make(kind, root, split, check_files):
    cls = KittiStereo if kind == "stereo" else KittiVideo
    return cls(root, split, height=H1, width=W1, check_files=check_files)


@pytest.mark.parametrize("check_files", [True, False])
@pytest.mark.parametrize("kind,rel,what", MISSING)
def test_missing_files_name_path_and_role(kitti, tmp_path, kind, rel, what, check_files):
    root, _ = kitti
    (root / rel).unlink()
    split = _split(tmp_path, f"{FOLDER} 1 l")
    with pytest.raises(FileNotFoundError) as e:
        _make(kind, root, split, check_files)[0]
    msg = str(e.value)
    assert str(root / rel) in msg and what in msg
    if "/data/" in rel:
        assert "KITTI raw layout" in msg and "frame" in msg


def test_missing_neighbour_frames(kitti, tmp_path):
    root, _ = kitti
    last = N_FRAMES - 1
    for line, missing in ((f"{FOLDER} {last} l", f"{last + 1:010d}.png"), (f"{FOLDER} 0 l", "-000000001.png")):
        ds = KittiVideo(root, _split(tmp_path, line), 3, H1, W1, check_files=False)
        with pytest.raises(FileNotFoundError) as e:
            ds[0]
        assert str(root / FOLDER / "image_02" / "data" / missing) in str(e.value)
        with pytest.raises(FileNotFoundError, match=missing):
            KittiVideo(root, _split(tmp_path, line), 3, H1, W1)
    with pytest.raises(FileNotFoundError, match="starts? at 0"):
        KittiVideo(root, _split(tmp_path, f"{FOLDER} 0 l"), 3, H1, W1)
    with pytest.raises(ValueError, match="odd"):
        KittiVideo(root, _split(tmp_path, f"{FOLDER} 2 l"), 4, H1, W1)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_png_names_path(kitti, tmp_path, damage):
    root, _ = kitti
    p = root / FOLDER / "image_03" / "data" / "0000000001.png"
    raw = p.read_bytes()
    p.write_bytes(b"this is not a png" if damage == "garbage" else raw[: len(raw) // 2])
    ds = KittiStereo(root, _split(tmp_path, f"{FOLDER} 1 l"), H1, W1)
    with pytest.raises(ValueError) as e:
        ds[0]
    assert str(p) in str(e.value)


def test_truncated_velodyne_and_bad_oxts_name_path(kitti, tmp_path):
    root, _ = kitti
    v = root / FOLDER / "velodyne_points" / "data" / "0000000001.bin"
    v.write_bytes(v.read_bytes()[:-3])
    with pytest.raises(ValueError) as e:
        KittiStereo(root, _split(tmp_path, f"{FOLDER} 1 l"), H1, W1)[0]
    assert str(v) in str(e.value) and "multiple of 16" in str(e.value)
    o = root / FOLDER / "oxts" / "data" / "0000000002.txt"
    o.write_text(" ".join(o.read_text().split()[:29]))
    with pytest.raises(ValueError) as e:
        KittiVideo(root, _split(tmp_path, f"{FOLDER} 1 l"), 3, H1, W1, load_depth=False)[0]
    assert str(o) in str(e.value) and "30" in str(e.value)


def test_image_size_must_match_calibration(kitti, tmp_path):
    root, _ = kitti
    (root / DATE / "calib_cam_to_cam.txt").write_text(_cam_to_cam_text(width=1242, height=375))
    with pytest.raises(ValueError) as e:
        KittiStereo(root, _split(tmp_path, f"{FOLDER} 1 l"), H1, W1)[0]
    assert "S_rect_02" in str(e.value) and "0000000001.png" in str(e.value)


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="no KITTI raw root"):
        KittiStereo(tmp_path / "nowhere", _split(tmp_path, f"{FOLDER} 1 l"))


# --------------------------------------------------------------------------- ImageFolder


def _frames(folder: Path, names, h=40, w=80, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrs = {}
    for n in names:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        _png(folder / n, a)
        arrs[n] = a
    return arrs


def test_image_folder_natural_order_and_given_K(tmp_path):
    arrs = _frames(tmp_path / "f", ["frame_10.png", "frame_2.PNG", "frame_1.png"])
    (tmp_path / "f" / "notes.txt").write_text("not an image")
    K = np.array([[50.0, 0, 39.5], [0, 60.0, 19.5], [0, 0, 1]])
    ds = ImageFolder(tmp_path / "f", K=K, height=20, width=30)
    assert len(ds) == 3
    # the attribute is the original K as NumPy (as every K attribute); items carry tensors
    assert isinstance(ds.K, np.ndarray) and ds.K.dtype == np.float64
    np.testing.assert_array_equal(ds.K, K)
    given = torch.from_numpy(K.copy())
    held = ImageFolder(tmp_path / "f", K=given).K
    given[0, 0] = 1.0  # the caller's tensor changes later: the folder's K does not
    assert isinstance(held, np.ndarray) and held[0, 0] == 50.0
    assert ImageFolder(tmp_path / "f").K is None
    assert [Path(ds[i]["path"]).name for i in range(3)] == ["frame_1.png", "frame_2.PNG", "frame_10.png"]
    it = ds[1]
    assert it["image"].shape == (3, 20, 30) and it["image"].dtype == torch.float32
    torch.testing.assert_close(it["image"], _expected_image(arrs["frame_2.PNG"], 20, 30), atol=1e-5, rtol=0)
    assert it["K"].dtype == torch.float32
    torch.testing.assert_close(it["K"], resize_intrinsics(torch.from_numpy(K), (40, 80), (20, 30)).float())
    # without resizing the given K comes back unchanged, the image as stored
    it = ImageFolder(tmp_path / "f", K=torch.from_numpy(K))[2]
    torch.testing.assert_close(it["K"], torch.from_numpy(K).float())
    torch.testing.assert_close(it["image"], torch.from_numpy(arrs["frame_10.png"]).permute(2, 0, 1).float() / 255)


def test_image_folder_guessed_K_from_hfov(tmp_path):
    _frames(tmp_path / "f", ["a.png"], h=60, w=200)
    _frames(tmp_path / "g", ["a.jpg"], h=120, w=400)
    f200 = (200 / 2) / math.tan(math.radians(30.0))
    expected = torch.tensor([[f200, 0, 99.5], [0, f200, 29.5], [0, 0, 1]])
    torch.testing.assert_close(ImageFolder(tmp_path / "f")[0]["K"], expected)
    # guessed at 400 x 120 then resized to 200 x 60: the same formula at the output size
    torch.testing.assert_close(ImageFolder(tmp_path / "g", height=60, width=200)[0]["K"], expected)
    K90 = ImageFolder(tmp_path / "f", hfov_degrees=90.0)[0]["K"]
    assert float(K90[0, 0]) == pytest.approx(100.0) and float(K90[1, 1]) == pytest.approx(100.0)
    torch.testing.assert_close(guess_intrinsics(60, 200), expected)
    # KITTI's camera: fx = 721.5 px over 1242 px is about 81 degrees
    assert 2 * math.degrees(math.atan(621 / 721.5377)) == pytest.approx(81.4, abs=0.1)


def test_image_folder_converts_grey_rgba_and_16_bit(tmp_path):
    d = tmp_path / "f"
    d.mkdir()
    grey = np.arange(40 * 80, dtype=np.uint32).reshape(40, 80) % 256
    Image.fromarray(grey.astype(np.uint8), mode="L").save(d / "0_grey.png")
    rgba = np.random.default_rng(3).integers(0, 256, (40, 80, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: the colour must survive (alpha dropped, not composited)
    Image.fromarray(rgba, mode="RGBA").save(d / "1_rgba.png")
    g16 = np.full((40, 80), 65535, dtype=np.uint16)
    g16[:, :40] = 32768
    Image.fromarray(g16).save(d / "2_grey16.png")
    ds = ImageFolder(d)
    g = ds[0]["image"]
    assert g.shape == (3, 40, 80)
    for c in range(3):
        torch.testing.assert_close(g[c], torch.from_numpy(grey).float() / 255)
    r = ds[1]["image"]
    assert r.shape == (3, 40, 80)
    torch.testing.assert_close(r, torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float() / 255)
    s = ds[2]["image"]
    assert s.shape == (3, 40, 80)
    assert float(s[:, :, 50].min()) == pytest.approx(1.0) and float(s[1, 0, 0]) == pytest.approx(0.5, abs=1e-4)


def test_image_folder_snippet(tmp_path):
    arrs = _frames(tmp_path / "f", [f"{k:03d}.png" for k in range(5)])
    ds = ImageFolder(tmp_path / "f", height=20, width=40)
    sn = ds.snippet(2, 5)
    assert set(sn) >= {"target", "sources", "K"} and "T_t_to_s" not in sn and "depth" not in sn
    assert sn["target"].shape == (3, 20, 40) and sn["sources"].shape == (4, 3, 20, 40)
    torch.testing.assert_close(sn["target"], _expected_image(arrs["002.png"], 20, 40), atol=1e-5, rtol=0)
    for s, k in enumerate([0, 1, 3, 4]):
        torch.testing.assert_close(sn["sources"][s], _expected_image(arrs[f"{k:03d}.png"], 20, 40), atol=1e-5, rtol=0)
    torch.testing.assert_close(sn["K"], ds[2]["K"])
    assert ds.snippet(1)["sources"].shape == (2, 3, 20, 40)
    with pytest.raises(IndexError, match="frames -1..1"):
        ds.snippet(0, 3)
    with pytest.raises(ValueError, match="odd"):
        ds.snippet(2, 4)


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        ImageFolder(empty)
    assert str(empty) in str(e.value) and ".png" in str(e.value) and ".jpg" in str(e.value)
    (empty / "readme.txt").write_text("x")
    (empty / "clip.mp4").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"\.jpeg"):
        ImageFolder(empty)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere")
    _frames(tmp_path / "f", ["a.png", "b.png"])
    (tmp_path / "f" / "c.png").write_bytes(b"\x89PNG garbage")
    ds = ImageFolder(tmp_path / "f")
    with pytest.raises(ValueError) as e:
        ds[2]
    assert str(tmp_path / "f" / "c.png") in str(e.value)
    with pytest.raises(ValueError, match="last row"):
        ImageFolder(tmp_path / "f", K=np.eye(3) * 2)
    with pytest.raises(ValueError, match="both height and width"):
        ImageFolder(tmp_path / "f", height=20)
    with pytest.raises(FileNotFoundError, match="missing frame"):
        read_image(tmp_path / "f" / "zzz.png", what="frame 9")


# --------------------------------------------------------------------------- evaluate --kitti


def test_evaluate_command_on_kitti_with_the_garg_crop(kitti, tmp_path, capsys):
    """``evaluate --kitti ROOT --split-file FILE`` scores the frames of the split with chapter
    10's protocol (Garg crop by default) and writes what the library computes directly."""
    import json

    from lesson_lib import methods, weights
    from lesson_lib.course.cli import main
    from lesson_lib.evaluation import evaluate_model

    root, _ = kitti
    split = _split(tmp_path, f"{FOLDER} 1 l", f"{FOLDER} 2 l", f"{FOLDER} 3 r")
    path = weights.path("monodepth_lr.pt")
    size = ["--height", str(H0), "--width", str(W0)]
    out = tmp_path / "kitti.json"
    assert main(["evaluate", str(path), "--kitti", str(root), "--split-file", str(split), *size, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["images"] == 3 and report["crop"] == "garg" and report["size"] == [H0, W0]
    model, method, _ = methods.load_model(path)
    data = KittiStereo(root, split, height=H0, width=W0)
    want = evaluate_model(model, method, data, crop="garg")
    assert list(report["results"]) == list(want) == ["metres", "metres + pp", "median-scaled", "median-scaled + pp"]
    for label, row in want.items():
        assert report["results"][label] == pytest.approx(row, rel=1e-6)
    whole = tmp_path / "whole.json"
    assert main(["evaluate", str(path), "--kitti", str(root), "--split-file", str(split), *size, "--crop", "none",
                 "--json", str(whole)]) == 0
    whole_res = json.loads(whole.read_text())["results"]
    assert whole_res == {k: pytest.approx(v, rel=1e-6) for k, v in evaluate_model(model, method, data).items()}
    assert whole_res["metres"]["abs_rel"] != pytest.approx(report["results"]["metres"]["abs_rel"], rel=1e-6)
    capsys.readouterr()
    # errors: one line naming what is wrong, exit status 2
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(path), "--kitti", str(root)])
    assert exc.value.code == 2 and "--split-file" in capsys.readouterr().err
    assert main(["evaluate", str(path), "--kitti", str(tmp_path / "nowhere"), "--split-file", str(split), *size]) == 2
    assert "nowhere" in capsys.readouterr().err
