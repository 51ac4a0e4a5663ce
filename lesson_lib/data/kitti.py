"""KITTI raw: stereo pairs and video snippets with LiDAR depth and OXTS poses.

The course never downloads KITTI; these loaders serve readers who have the raw data
(https://www.cvlibs.net/datasets/kitti/raw_data.php, the "synced+rectified" drives and each
date's calibration zip). They return the same dict items as the course's synthetic world
datasets, so a model trained on one runs on the other.

Layout (``ROOT`` is the folder you pass as ``root``)::

    ROOT/2011_09_26/calib_cam_to_cam.txt       P_rect_0x, R_rect_00, S_rect_0x, ...
    ROOT/2011_09_26/calib_velo_to_cam.txt      R, T: velodyne -> unrectified camera 0
    ROOT/2011_09_26/calib_imu_to_velo.txt      R, T: IMU (OXTS) -> velodyne
    ROOT/2011_09_26/2011_09_26_drive_0001_sync/
        image_02/data/0000000000.png           left colour camera (rectified)
        image_03/data/0000000000.png           right colour camera (rectified)
        oxts/data/0000000000.txt               30 numbers: lat, lon, alt, roll, pitch, yaw, ...
        velodyne_points/data/0000000000.bin    float32 x, y, z, reflectance; N x 4

Frames are chosen by split files in the one-line-per-frame format of monodepth2
(``2011_09_26/2011_09_26_drive_0001_sync 0000000005 l``: drive folder, frame index, side).
The course does not ship any split lists -- neither Eigen et al.'s test split nor Zhou et al.'s
training split ("eigen_zhou"): bring your own split files (e.g. monodepth2's
``splits/eigen/test_files.txt``). monodepth2 also expects the images converted to JPEG; for
such a copy pass ``img_ext=".jpg"``.

Conventions, as in the rest of the course: ``K`` is ``(3, 3)`` in pixels with pixel centres at
integer coordinates; camera x right, y down, z forward; depth is the z-coordinate (not the
distance along the ray); ``T_a_to_b`` is a ``4 x 4`` pose mapping points from frame ``a`` to
frame ``b``. The depth maps are Eigen-style projected raw LiDAR (sparse, about 5 % of pixels
at full resolution), not KITTI's later "annotated depth" benchmark maps.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..camera import resize_intrinsics
from ..pose import axis_rotation, invert_pose, make_pose
from .folder import read_image, resize_image

__all__ = [
    "EARTH_RADIUS",
    "read_calib_file",
    "KittiCalibration",
    "read_velodyne",
    "velodyne_to_depth",
    "read_oxts",
    "oxts_to_poses",
    "oxts_to_camera_poses",
    "read_split_file",
    "KittiStereo",
    "KittiVideo",
]

EARTH_RADIUS = 6378137.0  # [m], the WGS84 equatorial radius the KITTI devkit uses
CAMERA_FOLDERS = {2: "image_02", 3: "image_03"}
CAMERA_NAMES = {2: "left colour image (image_02)", 3: "right colour image (image_03)"}
OXTS_FIELDS = 30


# --------------------------------------------------------------------------- calibration


def read_calib_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read a KITTI calibration file: lines ``key: v1 v2 ...`` to ``{key: float64 array}``.

    Lines whose values are not all numbers (``calib_time: 09-Jan-2012 13:57:47``) are
    skipped; blank lines too. Value counts are not checked here (see
    :meth:`KittiCalibration.from_date_folder`).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a non-blank line without ``':'`` (the message names the path and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no KITTI calibration file at {path}")
    out: dict[str, np.ndarray] = {}
    text = path.read_bytes().decode("utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep or not key.strip():
            raise ValueError(
                f"{path}, line {lineno}: expected 'key: value value ...', got {line[:80]!r}"
            )
        try:
            out[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            continue  # a non-numeric entry such as calib_time
    return out


def _need(calib: dict[str, np.ndarray], key: str, n: int, path: Path) -> np.ndarray:
    if key not in calib:
        raise ValueError(f"{path}: key {key!r} is missing or not numeric (expected {n} numbers)")
    v = calib[key]
    if v.size != n:
        raise ValueError(f"{path}: key {key!r} has {v.size} numbers, expected {n}")
    if not np.isfinite(v).all():
        raise ValueError(f"{path}: key {key!r} holds non-finite values {v.tolist()}")
    return v


def _rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(4, 4)`` float64 pose ``[[R, t], [0, 1]]`` (:func:`lesson_lib.pose.make_pose`)."""
    R_t = torch.from_numpy(np.asarray(R, dtype=np.float64).reshape(1, 3, 3))
    t_t = torch.from_numpy(np.asarray(t, dtype=np.float64).reshape(1, 3))
    return make_pose(R_t, t_t)[0].numpy()


def _inv_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid ``(..., 4, 4)`` float64 poses (:func:`lesson_lib.pose.invert_pose`)."""
    T = np.asarray(T, dtype=np.float64)
    return invert_pose(torch.from_numpy(T.reshape(-1, 4, 4))).numpy().reshape(T.shape)


def _missing_calibration(what: str, path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"missing {what} calibration: no file at {path} (KITTI raw layout: "
        f"<date>/{path.name}, here {path.parent.name}/{path.name}, from the date's "
        f"{path.parent.name}_calib.zip)"
    )


@dataclass(frozen=True, eq=False)
class KittiCalibration:
    """The calibration of one KITTI raw date, seen from rectified colour camera ``cam``.

    Attributes:
        cam: 2 (left colour camera) or 3 (right colour camera).
        K: ``(3, 3)`` float64 intrinsics of rectified camera ``cam``: ``P_rect_0{cam}[:3, :3]``.
        K_cam2, K_cam3: the same for both colour cameras.
        baseline: distance between the colour cameras in metres,
            ``(P_rect_02[0, 3] - P_rect_03[0, 3]) / fx`` (about 0.53 m; KITTI's often quoted
            0.54 m is the grey pair's).
        T_velo_to_cam: ``(4, 4)`` velodyne -> rectified camera ``cam``:
            ``T_offset @ R_rect_00 @ Tr_velo_to_cam``, where ``T_offset`` translates by
            ``K^-1 P_rect_0{cam}[:, 3]`` (essentially ``(P[0, 3] / fx, 0, 0)``: camera ``cam``'s
            offset from the rectified reference camera 0). Then ``K @ T_velo_to_cam[:3]`` equals
            ``P_rect_0{cam} @ R_rect_00 @ Tr_velo_to_cam``, the projection KITTI's depth-map
            generation (devkit, monodepth2) uses.
        T_imu_to_velo: ``(4, 4)`` IMU (OXTS) -> velodyne.
        image_size: ``(H, W)`` of the rectified images, from ``S_rect_0{cam}``.
        date_folder: the folder the files were read from.
    """

    cam: int
    K: np.ndarray
    K_cam2: np.ndarray
    K_cam3: np.ndarray
    baseline: float
    T_velo_to_cam: np.ndarray
    T_imu_to_velo: np.ndarray
    image_size: tuple[int, int]
    date_folder: Path

    @property
    def T_imu_to_cam(self) -> np.ndarray:
        """``(4, 4)`` IMU -> rectified camera ``cam``: ``T_velo_to_cam @ T_imu_to_velo``."""
        return self.T_velo_to_cam @ self.T_imu_to_velo

    @classmethod
    def from_date_folder(cls, path: str | Path, cam: int = 2) -> KittiCalibration:
        """Read ``calib_cam_to_cam.txt``, ``calib_velo_to_cam.txt`` and
        ``calib_imu_to_velo.txt`` from a date folder (``ROOT/2011_09_26``).

        Raises:
            FileNotFoundError: one of the three files is missing (the message names its path).
            ValueError: ``cam`` is not 2 or 3; a malformed line; a needed key missing or with
                the wrong number of values (the message names the path and the key); a
                non-positive baseline.
        """
        if cam not in CAMERA_FOLDERS:
            raise ValueError(f"cam must be 2 or 3 (the colour cameras), got {cam!r}")
        folder = Path(path)
        files = {
            "camera": folder / "calib_cam_to_cam.txt",
            "velodyne-to-camera": folder / "calib_velo_to_cam.txt",
            "IMU-to-velodyne": folder / "calib_imu_to_velo.txt",
        }
        for what, p in files.items():
            if not p.is_file():
                raise _missing_calibration(what, p)
        c2c_path, v2c_path, i2v_path = files.values()
        c2c = read_calib_file(c2c_path)
        v2c = read_calib_file(v2c_path)
        i2v = read_calib_file(i2v_path)

        P = {c: _need(c2c, f"P_rect_0{c}", 12, c2c_path).reshape(3, 4) for c in (2, 3)}
        for c, Pc in P.items():
            Kc = Pc[:, :3]
            if not (Kc[0, 0] > 0 and Kc[1, 1] > 0 and np.allclose(Kc[2], [0.0, 0.0, 1.0])):
                raise ValueError(
                    f"{c2c_path}: key 'P_rect_0{c}' does not hold a rectified projection "
                    f"K [I | t] (expected fx, fy > 0 and third row [0, 0, 1, *]), got {Pc.tolist()}"
                )
        R_rect = _need(c2c, "R_rect_00", 9, c2c_path).reshape(3, 3)
        S = _need(c2c, f"S_rect_0{cam}", 2, c2c_path)
        width, height = int(round(S[0])), int(round(S[1]))
        if width <= 0 or height <= 0:
            raise ValueError(f"{c2c_path}: key 'S_rect_0{cam}' must be a positive size, got {S}")
        Tr = _rigid(_need(v2c, "R", 9, v2c_path), _need(v2c, "T", 3, v2c_path))
        T_imu_to_velo = _rigid(_need(i2v, "R", 9, i2v_path), _need(i2v, "T", 3, i2v_path))

        fx = P[2][0, 0]
        baseline = float((P[2][0, 3] - P[3][0, 3]) / fx)
        if not baseline > 0:
            raise ValueError(
                f"{c2c_path}: P_rect_02[0, 3] - P_rect_03[0, 3] must be > 0 (camera 3 lies to the "
                f"right of camera 2), got baseline {baseline} m"
            )
        K = P[cam][:, :3].copy()
        T_offset = np.eye(4)
        T_offset[:3, 3] = np.linalg.solve(K, P[cam][:, 3])
        T_rect = np.eye(4)
        T_rect[:3, :3] = R_rect
        return cls(
            cam=cam,
            K=K,
            K_cam2=P[2][:, :3].copy(),
            K_cam3=P[3][:, :3].copy(),
            baseline=baseline,
            T_velo_to_cam=T_offset @ T_rect @ Tr,
            T_imu_to_velo=T_imu_to_velo,
            image_size=(height, width),
            date_folder=folder,
        )


# --------------------------------------------------------------------------- LiDAR depth


def read_velodyne(path: str | Path) -> np.ndarray:
    """Read a velodyne scan: ``(N, 4)`` float32 x, y, z (metres, velodyne frame: x forward,
    y left, z up) and reflectance.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the size is not a multiple of 16 bytes (4 float32 per point).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing velodyne scan: no file at {path}")
    size = path.stat().st_size
    if size % 16:
        raise ValueError(
            f"velodyne scan {path}: {size} bytes is not a multiple of 16 (4 float32 per point: "
            "x, y, z, reflectance); the file is truncated or not a KITTI velodyne scan"
        )
    return np.fromfile(path, dtype="<f4").reshape(-1, 4).astype(np.float32, copy=False)


def velodyne_to_depth(
    points: np.ndarray,
    T_velo_to_cam: np.ndarray,
    K: np.ndarray,
    height: int,
    width: int,
) -> np.ndarray:
    """Project LiDAR points into a sparse ``(height, width)`` float32 depth map (metres).

    1. ``p_cam = T_velo_to_cam @ [x, y, z, 1]``; keep points with depth ``z_cam > 0`` (depth is
       the forward coordinate, not the distance along the ray).
    2. ``[u, v] = (K p_cam)[:2] / z_cam`` and round to the nearest pixel,
       ``floor(u + 0.5)`` (pixel centres at integers; monodepth2 subtracts 1 more, a legacy
       of MATLAB's 1-based indices that this course does not copy).
    3. Keep pixels inside the image; where several points land on one pixel keep the NEAREST
       (smallest depth): the farther ones are hidden behind it, seen only because the LiDAR
       sits elsewhere than the camera.

    Pixels without a point are 0 (no ground truth). Project with the ``K`` of the image you
    compare with (a resized ``K`` gives the depth map of the resized image directly).

    Args:
        points: ``(N, 4)`` (or ``(N, 3)``) velodyne points; a fourth column is ignored.
        T_velo_to_cam: ``(4, 4)`` velodyne -> camera.
        K: ``(3, 3)`` intrinsics in pixels.
        height, width: size of the depth map.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] not in (3, 4):
        raise ValueError(f"points: expected shape (N, 4) or (N, 3), got {pts.shape}")
    T = np.asarray(T_velo_to_cam, dtype=np.float64)
    Km = np.asarray(K, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_velo_to_cam: expected shape (4, 4), got {T.shape}")
    if Km.shape != (3, 3):
        raise ValueError(f"K: expected shape (3, 3), got {Km.shape}")
    if not (isinstance(height, numbers.Integral) and isinstance(width, numbers.Integral)
            and height > 0 and width > 0):
        raise ValueError(f"height and width must be positive ints, got {height!r}, {width!r}")
    xyz = pts[:, :3] @ T[:3, :3].T + T[:3, 3]
    z = xyz[:, 2]
    keep = np.isfinite(xyz).all(axis=1) & (z > 0)
    xyz, z = xyz[keep], z[keep]
    uvw = xyz @ Km.T
    u = np.floor(uvw[:, 0] / z + 0.5)
    v = np.floor(uvw[:, 1] / z + 0.5)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    flat = v[inside].astype(np.int64) * int(width) + u[inside].astype(np.int64)
    depth = np.full(int(height) * int(width), np.inf)
    np.minimum.at(depth, flat, z[inside])
    depth[np.isinf(depth)] = 0.0
    return depth.reshape(int(height), int(width)).astype(np.float32)


# --------------------------------------------------------------------------- OXTS poses


def read_oxts(path: str | Path) -> np.ndarray:
    """Read one OXTS file: ``(30,)`` float64 (lat, lon in degrees, alt in metres, roll, pitch,
    yaw in radians, then velocities, accelerations, angular rates and accuracies).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not exactly 30 numbers (the message names the path).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing OXTS record: no file at {path}")
    fields = path.read_bytes().decode("utf-8", errors="replace").split()
    try:
        values = np.array([float(f) for f in fields], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"OXTS record {path}: expected {OXTS_FIELDS} numbers ({exc})") from exc
    if values.size != OXTS_FIELDS or not np.isfinite(values[:6]).all():
        raise ValueError(
            f"OXTS record {path}: expected {OXTS_FIELDS} numbers (lat, lon, alt, roll, pitch, "
            f"yaw, ...), found {values.size}"
        )
    return values


def _rot(axis: str, a: np.ndarray) -> np.ndarray:
    """``(F, 3, 3)`` float64 rotations about ``axis`` (:func:`lesson_lib.pose.axis_rotation`)."""
    return axis_rotation(axis, torch.from_numpy(np.asarray(a, dtype=np.float64).reshape(-1))).numpy()


def oxts_to_poses(oxts: np.ndarray) -> np.ndarray:
    """IMU-to-world poses ``(F, 4, 4)`` float64 from OXTS records ``(F, 30)`` (the first six
    columns are used), as the KITTI devkit's ``convertOxtsToPose``.

    World: a local Mercator frame, x east, y north, z up, in metres, with the scale
    ``s = cos(lat0 * pi / 180)`` of the first record's latitude:
    ``x = s * lon * pi * er / 180``, ``y = s * er * log(tan((90 + lat) * pi / 360))``,
    ``z = alt``, ``er = 6378137``. IMU frame: x forward, y left, z up; its orientation is
    ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (yaw 0 = east, counter-clockwise positive). Finally every
    pose is expressed relative to the first one, so ``poses[0]`` is the identity.
    """
    o = np.asarray(oxts, dtype=np.float64)
    if o.ndim != 2 or o.shape[0] < 1 or o.shape[1] < 6:
        raise ValueError(f"oxts: expected shape (F, 30) with F >= 1, got {o.shape}")
    lat, lon, alt, roll, pitch, yaw = o[:, :6].T
    scale = math.cos(lat[0] * math.pi / 180.0)
    x = scale * lon * math.pi * EARTH_RADIUS / 180.0
    y = scale * EARTH_RADIUS * np.log(np.tan((90.0 + lat) * math.pi / 360.0))
    T = np.zeros((o.shape[0], 4, 4))
    T[:, :3, :3] = _rot("z", yaw) @ _rot("y", pitch) @ _rot("x", roll)
    t = np.stack([x, y, alt], axis=-1)
    T[:, :3, 3] = t - t[0]  # subtract first: Mercator coordinates are ~1e6 m, steps ~1 m
    T[:, 3, 3] = 1.0
    out = _inv_rigid(T[0]) @ T
    out[0] = np.eye(4)  # exactly, not R0^T R0 up to rounding
    return out


def oxts_to_camera_poses(oxts: np.ndarray, T_imu_to_cam: np.ndarray) -> np.ndarray:
    """Camera-to-world poses ``(F, 4, 4)``: ``T_cam_to_world = T_imu_to_world @
    inv(T_imu_to_cam)``. The pose from frame ``t``'s camera to frame ``s``'s is then
    ``T_t_to_s = inv(T_cam_to_world[s]) @ T_cam_to_world[t]``."""
    T = np.asarray(T_imu_to_cam, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_imu_to_cam: expected shape (4, 4), got {T.shape}")
    return oxts_to_poses(oxts) @ _inv_rigid(T)


# --------------------------------------------------------------------------- split files


def read_split_file(path: str | Path) -> list[tuple[str, int, str]]:
    """Read a split file: one frame per line, ``<date>/<drive> <frame index> <l|r>``, e.g.
    ``2011_09_26/2011_09_26_drive_0001_sync 0000000005 l``; returns ``[(folder, index,
    side)]``. Blank lines are skipped. The course ships no split lists (see the module
    docstring): bring your own.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a malformed line (the message names the file and the line number), or no
            frames at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no split file at {path}")
    fmt = "'<date>/<drive> <frame index> <l|r>' (e.g. '2011_09_26/2011_09_26_drive_0001_sync 0000000005 l')"
    items: list[tuple[str, int, str]] = []
    text = path.read_bytes().decode("utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        bad = f"{path}, line {lineno}: expected {fmt}, got {line[:120]!r}"
        if len(parts) != 3:
            raise ValueError(bad)
        folder, index, side = parts
        folder = folder.strip("/")
        if len(Path(folder).parts) != 2:
            raise ValueError(bad + " (the folder must be <date>/<drive>)")
        if not index.isdigit():
            raise ValueError(bad + " (the frame index must be a non-negative integer)")
        if side not in ("l", "r"):
            raise ValueError(bad + " (the side must be 'l' or 'r')")
        items.append((folder, int(index), side))
    if not items:
        raise ValueError(f"split file {path} lists no frames (expected lines {fmt})")
    return items


# --------------------------------------------------------------------------- datasets


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _to_chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class _KittiRaw(Dataset):
    """What the stereo and video datasets share: paths, calibration cache, loading."""

    def __init__(
        self,
        root: str | Path,
        split_file: str | Path,
        height: int,
        width: int,
        img_ext: str,
        load_depth: bool,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"no KITTI raw root folder at {self.root} (expected <root>/<date>/<drive>/..., "
                "e.g. <root>/2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000000.png)"
            )
        if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            raise ValueError(f"height and width must be positive ints, got {height!r}, {width!r}")
        self.split_file = Path(split_file)
        self.items = read_split_file(split_file)
        self.height, self.width = int(height), int(width)
        self.img_ext = img_ext if img_ext.startswith(".") else "." + img_ext
        self.load_depth = bool(load_depth)
        self._calibrations: dict[tuple[str, int], KittiCalibration] = {}

    def __len__(self) -> int:
        return len(self.items)

    # -- paths ------------------------------------------------------------------------------

    def _path(self, folder: str, kind: str, index: int, cam: int = 2) -> tuple[Path, str]:
        """``(full path, description)`` of one file of frame ``index`` in ``folder``."""
        name = f"{index:010d}"
        if kind == "image":
            rel = f"{CAMERA_FOLDERS[cam]}/data/{name}{self.img_ext}"
            what = CAMERA_NAMES[cam]
        elif kind == "velodyne":
            rel, what = f"velodyne_points/data/{name}.bin", "velodyne scan"
        elif kind == "oxts":
            rel, what = f"oxts/data/{name}.txt", "OXTS record"
        else:  # pragma: no cover - internal
            raise ValueError(kind)
        desc = f"{what} of frame {index} in {folder}"
        return self.root / folder / rel, desc

    def _require(self, folder: str, kind: str, index: int, cam: int = 2) -> Path:
        path, desc = self._path(folder, kind, index, cam)
        if not path.is_file():
            date, drive = Path(folder).parts
            rel = path.relative_to(self.root / folder).as_posix()
            note = (
                " -- frame indices start at 0: the snippet reaches before the drive's first frame"
                if index < 0
                else ""
            )
            raise FileNotFoundError(
                f"missing {desc}: no file at {path} (KITTI raw layout: "
                f"<date>/<drive>/{rel}, here {date}/{drive}/{rel}){note}"
            )
        return path

    # -- loading ----------------------------------------------------------------------------

    def calibration(self, folder: str, cam: int = 2) -> KittiCalibration:
        """The (cached) calibration of ``folder``'s date, seen from colour camera ``cam``."""
        date = Path(folder).parts[0]
        key = (date, cam)
        if key not in self._calibrations:
            self._calibrations[key] = KittiCalibration.from_date_folder(self.root / date, cam)
        return self._calibrations[key]

    def _image(self, folder: str, index: int, cam: int) -> torch.Tensor:
        path = self._require(folder, "image", index, cam)
        _, desc = self._path(folder, "image", index, cam)
        img = read_image(path, what=desc)
        calib = self.calibration(folder, cam)
        if img.shape[:2] != calib.image_size:
            h, w = calib.image_size
            raise ValueError(
                f"{desc} {path} is {img.shape[0]}x{img.shape[1]} (HxW), but "
                f"{calib.date_folder / 'calib_cam_to_cam.txt'} gives S_rect_0{cam} = {w} {h}: "
                "the calibration does not belong to these images"
            )
        return _to_chw(resize_image(img, self.height, self.width))

    def _K(self, folder: str, cam: int) -> torch.Tensor:
        calib = self.calibration(folder, cam)
        K = torch.from_numpy(calib.K)
        return resize_intrinsics(K, calib.image_size, (self.height, self.width)).to(torch.float32)

    def _depth(self, folder: str, index: int, cam: int, K: torch.Tensor) -> torch.Tensor:
        if not self.load_depth:
            return torch.zeros(1, self.height, self.width)
        points = read_velodyne(self._require(folder, "velodyne", index))
        calib = self.calibration(folder, cam)
        depth = velodyne_to_depth(
            points, calib.T_velo_to_cam, K.double().numpy(), self.height, self.width
        )
        return torch.from_numpy(depth)[None]

    def _files(self, i: int) -> list[tuple[str, str, int, int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_files(self) -> None:
        """Check that every file the items need exists and every date's calibration parses;
        raise the first problem (``FileNotFoundError`` naming the path, or the calibration's
        ``ValueError``). Does not decode images."""
        seen: set[tuple[str, str, int, int]] = set()
        for i in range(len(self.items)):
            for f in self._files(i):
                if f not in seen:
                    seen.add(f)
                    folder, kind, index, cam = f
                    if kind == "calib":
                        self.calibration(folder, cam)
                    else:
                        self._require(folder, kind, index, cam)


class KittiStereo(_KittiRaw):
    """Rectified KITTI raw stereo pairs with projected LiDAR depth.

    Items ``dataset[i]`` for the split line ``(folder, index, side)``::

        {"left": (3, H, W) float32 in [0, 1], "right": (3, H, W),
         "K": (3, 3) float32 of the "left" image at the output size,
         "baseline": () float32, metres (> 0),
         "depth": (1, H, W) float32 z-depth of the "left" camera in metres, 0 = no ground truth,
         "swapped": () bool, "T_left_to_right": (4, 4) float32}

    Sides:

    - ``"l"``: ``left`` = ``image_02``, ``right`` = ``image_03``, ``K`` and ``depth`` of
      camera 2, ``swapped`` False. ``T_left_to_right`` translates by about
      ``(-baseline, 0, 0)``: a point at column ``x`` of ``left`` appears at ``x - d`` in
      ``right``, the course's usual direction.
    - ``"r"``: the pair is swapped: ``left`` = ``image_03``, ``right`` = ``image_02``, ``K`` and
      ``depth`` of camera 3, ``swapped`` True. The "right" camera then sits to the LEFT of the
      "left" one: a point at ``x`` in ``left`` appears at ``x + d`` in ``right``,
      ``T_left_to_right`` translates by about ``(+baseline, 0, 0)``, while ``baseline`` stays a
      positive distance. Code that assumes the usual direction must handle it (e.g. mirror
      both images horizontally, which restores it, with ``cx' = W - 1 - cx``) or skip ``"r"``
      lines.

    Images are resized from the rectified size (``S_rect``) to ``(height, width)`` with
    ``skimage.transform.resize(anti_aliasing=True)``, and ``K`` with
    :func:`lesson_lib.camera.resize_intrinsics`. The depth is made by projecting the LiDAR
    points directly with the resized ``K`` into the ``(height, width)`` grid (nearest point per
    pixel; :func:`velodyne_to_depth`), not by resampling a full-resolution map: resampling a
    sparse map would lose most points or mix depths across edges. Published KITTI numbers
    compare at the full resolution; for those, call :func:`velodyne_to_depth` with
    ``calibration(folder).K`` and the original size.

    Args:
        root: the KITTI raw root (holding the date folders).
        split_file: a split file (:func:`read_split_file`).
        height, width: output size (default 128 x 416, the course's).
        img_ext: image file ending (``".png"`` as downloaded; ``".jpg"`` for monodepth2's copy).
        load_depth: False skips the velodyne files; ``depth`` is then all 0.
        check_files: check at construction that every needed file exists (see
            :meth:`check_files`), so a missing file fails at once, not in a worker mid-epoch.

    Raises:
        FileNotFoundError: a missing root, split, calibration, image or velodyne file; the
            message names the full path and what it should be, e.g. ``missing left colour
            image (image_02) of frame 5 in 2011_09_26/2011_09_26_drive_0001_sync: no file at
            ... (KITTI raw layout: <date>/<drive>/image_02/data/0000000005.png, ...)``.
        ValueError: a malformed split or calibration file, a corrupt image, a velodyne file
            whose size is not a multiple of 16 bytes, an image whose size is not ``S_rect``'s.
    """

    def __init__(
        self,
        root: str | Path,
        split_file: str | Path,
        height: int = 128,
        width: int = 416,
        img_ext: str = ".png",
        load_depth: bool = True,
        check_files: bool = True,
    ) -> None:
        super().__init__(root, split_file, height, width, img_ext, load_depth)
        if check_files:
            self.check_files()

    def _files(self, i: int) -> list[tuple[str, str, int, int]]:
        folder, index, _ = self.items[i]
        files = [(folder, "calib", 0, 2), (folder, "calib", 0, 3)]
        files += [(folder, "image", index, 2), (folder, "image", index, 3)]
        if self.load_depth:
            files.append((folder, "velodyne", index, 2))
        return files

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        folder, index, side = self.items[i]
        cam_l, cam_r = (2, 3) if side == "l" else (3, 2)
        left = self._image(folder, index, cam_l)
        right = self._image(folder, index, cam_r)
        K = self._K(folder, cam_l)
        calib_l, calib_r = self.calibration(folder, cam_l), self.calibration(folder, cam_r)
        T_lr = calib_r.T_velo_to_cam @ _inv_rigid(calib_l.T_velo_to_cam)
        return {
            "left": left,
            "right": right,
            "K": K,
            "baseline": torch.tensor(calib_l.baseline, dtype=torch.float32),
            "depth": self._depth(folder, index, cam_l, K),
            "swapped": torch.tensor(side == "r"),
            "T_left_to_right": torch.from_numpy(T_lr).to(torch.float32),
        }


class KittiVideo(_KittiRaw):
    """KITTI raw video snippets with projected LiDAR depth and OXTS poses.

    The split line ``(folder, index, side)`` names the snippet's centre, the target: the
    snippet is frames ``index - r .. index + r`` with ``r = snippet_length // 2`` (``index - 1,
    index, index + 1`` for length 3; ``+-2`` for 5) of camera 2 (side ``"l"``) or camera 3
    (``"r"``). Items::

        {"target": (3, H, W) float32 in [0, 1],
         "sources": (S, 3, H, W), S = snippet_length - 1, in time order without the target,
         "K": (3, 3) float32 at the output size,
         "depth": (1, H, W) float32 z-depth of the target in metres, 0 where unknown,
         "T_t_to_s": (S, 4, 4) float32, ground-truth poses target camera -> source camera,
         "has_pose": () bool}

    ``T_t_to_s`` comes from the OXTS records (:func:`oxts_to_camera_poses`):
    ``T_t_to_s = inv(T_cam_s_to_world) @ T_cam_t_to_world``. A static point at depth 10 m in
    front of the target is at about 9 m in the next frame's camera when the car drives 1 m
    forward. With ``load_poses=False`` no OXTS file is read, ``T_t_to_s`` is all zeros (not the
    identity, so an accidental use shows) and ``has_pose`` False. OXTS poses are good to a few
    centimetres and are not the pose network's target: use them to check its scale and
    direction.

    Images, ``K`` and ``depth`` are made as in :class:`KittiStereo`.

    Args:
        root, split_file, height, width, img_ext, load_depth, check_files: as in
            :class:`KittiStereo`.
        snippet_length: odd, >= 3.
        load_poses: False skips the OXTS files.

    Raises:
        FileNotFoundError: as in :class:`KittiStereo`, and a missing neighbouring frame or OXTS
            record (the message names the missing path; frames before 0 are reported as such).
        ValueError: as in :class:`KittiStereo`; an OXTS file without 30 numbers; a bad
            ``snippet_length``.
    """

    def __init__(
        self,
        root: str | Path,
        split_file: str | Path,
        snippet_length: int = 3,
        height: int = 128,
        width: int = 416,
        img_ext: str = ".png",
        load_depth: bool = True,
        load_poses: bool = True,
        check_files: bool = True,
    ) -> None:
        if not (_is_int(snippet_length) and snippet_length >= 3 and snippet_length % 2 == 1):
            raise ValueError(f"snippet_length must be an odd int >= 3, got {snippet_length!r}")
        super().__init__(root, split_file, height, width, img_ext, load_depth)
        self.snippet_length = int(snippet_length)
        self.load_poses = bool(load_poses)
        if check_files:
            self.check_files()

    def source_frames(self, index: int) -> list[int]:
        """Frame indices of the sources of the snippet centred on ``index``, in time order."""
        r = self.snippet_length // 2
        return [index + k for k in range(-r, r + 1) if k != 0]

    def _files(self, i: int) -> list[tuple[str, str, int, int]]:
        folder, index, side = self.items[i]
        cam = 2 if side == "l" else 3
        frames = [index, *self.source_frames(index)]
        files = [(folder, "calib", 0, cam)]
        files += [(folder, "image", f, cam) for f in frames]
        if self.load_depth:
            files.append((folder, "velodyne", index, 2))
        if self.load_poses:
            files += [(folder, "oxts", f, 2) for f in frames]
        return files

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        folder, index, side = self.items[i]
        cam = 2 if side == "l" else 3
        frames = self.source_frames(index)
        # Check every file of the snippet before decoding any, so a missing neighbour is named.
        for f in [index, *frames]:
            self._require(folder, "image", f, cam)
        target = self._image(folder, index, cam)
        sources = torch.stack([self._image(folder, f, cam) for f in frames])
        K = self._K(folder, cam)
        S = len(frames)
        if self.load_poses:
            oxts = np.stack([read_oxts(self._require(folder, "oxts", f)) for f in [index, *frames]])
            T_cam_to_world = oxts_to_camera_poses(oxts, self.calibration(folder, cam).T_imu_to_cam)
            T_t_to_s = _inv_rigid(T_cam_to_world[1:]) @ T_cam_to_world[0]
            poses = torch.from_numpy(T_t_to_s).to(torch.float32)
        else:
            poses = torch.zeros(S, 4, 4)
        return {
            "target": target,
            "sources": sources,
            "K": K,
            "depth": self._depth(folder, index, cam, K),
            "T_t_to_s": poses,
            "has_pose": torch.tensor(self.load_poses),
        }
