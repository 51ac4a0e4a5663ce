"""The Middlebury 2014 "Motorcycle" pair shipped inside scikit-image (chapters 00-02).

Facts (checked on scikit-image 0.26): images ``(500, 741, 3)`` uint8, downscaled by 4 from the
benchmark; disparity ``(500, 741)`` float32 in pixels, ``+inf`` where there is no ground truth
(about 7 % of pixels); the left pixel at ``x`` matches the right pixel at ``x - d``.
Calibration for the downscaled images: f = 994.978 px, cx = 311.193 px, cy = 254.877 px,
doffs = 31.086 px, baseline = 193.001 mm, so ``Z = f B / (d + doffs)`` lies in 2.1 - 5.0 m.

Source: D. Scharstein, H. Hirschmueller, Y. Kitajima, G. Krathwohl, N. Nesic, X. Wang and
P. Westling, "High-resolution stereo datasets with subpixel-accurate ground truth", GCPR 2014.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..camera import intrinsics_matrix
from ..stereo import disparity_to_depth

EXPECTED_SHAPE = (500, 741)


@dataclass(frozen=True)
class MiddleburyCalibration:
    """Calibration of a Middlebury pair. Lengths in metres, the rest in pixels."""

    focal: float = 994.978
    cx: float = 311.193
    cy: float = 254.877
    doffs: float = 31.086
    baseline: float = 0.193001

    @property
    def K(self) -> np.ndarray:
        """Left camera intrinsics ``(3, 3)`` float64, a NumPy array as every ``K`` of
        :mod:`lesson_lib.data` (:meth:`K_tensor` gives the batched tensor the course's functions take)."""
        return intrinsics_matrix(self.focal, self.focal, self.cx, self.cy, dtype=torch.float64).numpy()

    def K_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Left camera intrinsics as a tensor ``(1, 3, 3)`` of ``dtype`` (a batch of one)."""
        return intrinsics_matrix(self.focal, self.focal, self.cx, self.cy, dtype=dtype)[None]


@dataclass
class StereoPair:
    """A rectified stereo pair with ground truth, in the course's layouts.

    Attributes:
        left, right: ``(1, 3, H, W)`` float32 in ``[0, 1]``.
        disparity: ``(1, 1, H, W)`` float32 left disparity in pixels; 0 where not ``valid``.
        valid: ``(1, 1, H, W)`` bool, True where ground truth exists.
        calibration: focal, principal point, ``doffs`` and baseline.
        source: where the data came from (for figure captions).
    """

    left: torch.Tensor
    right: torch.Tensor
    disparity: torch.Tensor
    valid: torch.Tensor
    calibration: MiddleburyCalibration
    source: str

    def depth(self, min_depth: float = 0.5, max_depth: float = 20.0) -> torch.Tensor:
        """Ground-truth depth ``(1, 1, H, W)`` in metres, ``f B / (d + doffs)``; 0 where not
        ``valid`` (use the mask: 0 is not a depth)."""
        c = self.calibration
        z = disparity_to_depth(
            self.disparity, c.focal, c.baseline, c.doffs, min_depth=min_depth, max_depth=max_depth
        )
        return torch.where(self.valid, z, torch.zeros_like(z))

    def to(self, device: torch.device | str) -> StereoPair:
        """The same pair on another device."""
        return StereoPair(
            self.left.to(device),
            self.right.to(device),
            self.disparity.to(device),
            self.valid.to(device),
            self.calibration,
            self.source,
        )


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """An ``(H, W, 3)`` uint8 image array to the course's ``(1, 3, H, W)`` float32 in ``[0, 1]``
    (chapter 00, Exercise 0.1)."""
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        got = (getattr(img, "shape", None), getattr(img, "dtype", type(img).__name__))
        raise ValueError(f"image: expected an (H, W, 3) uint8 array, got shape {got[0]} dtype {got[1]}")
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


def load_middlebury_motorcycle() -> StereoPair:
    """Load the Middlebury 2014 "Motorcycle" pair from scikit-image (chapter 01).

    Invalid ground truth (``+inf`` in the file) becomes ``valid = False`` and disparity 0, so
    no ``inf`` reaches later arithmetic.

    Raises:
        FileNotFoundError: scikit-image's copy of the data is missing or unreadable (the
            message names scikit-image's data folder and the files expected there).
        ValueError: the data does not have the documented shapes and types.
    """
    import skimage
    from skimage import data as skdata

    folder = Path(skimage.__file__).parent / "data"
    expected = "motorcycle_left.png, motorcycle_right.png and motorcycle_disp.npz"
    try:
        left, right, disp = skdata.stereo_motorcycle()
    except Exception as exc:  # missing or corrupt files inside the scikit-image install
        raise FileNotFoundError(
            f"could not load the Middlebury pair from scikit-image's data folder {folder} "
            f"(expected {expected}; reinstall scikit-image>=0.26): {exc}"
        ) from exc
    for name, arr, shape, dtype in (
        ("left image", left, (*EXPECTED_SHAPE, 3), np.uint8),
        ("right image", right, (*EXPECTED_SHAPE, 3), np.uint8),
        ("disparity", disp, EXPECTED_SHAPE, np.float32),
    ):
        if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
            got = (getattr(arr, "shape", None), getattr(arr, "dtype", type(arr).__name__))
            raise ValueError(
                f"Middlebury {name} from {folder}: expected shape {shape} dtype "
                f"{np.dtype(dtype)}, got shape {got[0]} dtype {got[1]}"
            )
    finite = np.isfinite(disp)
    if np.isnan(disp).any():
        raise ValueError(f"Middlebury disparity from {folder} contains NaN (invalid is +inf)")
    if finite.mean() < 0.5 or (disp[finite] <= 0).any():
        raise ValueError(f"Middlebury disparity from {folder} looks corrupt")
    d = torch.from_numpy(np.where(finite, disp, 0.0).astype(np.float32))[None, None]
    return StereoPair(
        left=image_to_tensor(left),
        right=image_to_tensor(right),
        disparity=d,
        valid=torch.from_numpy(finite)[None, None],
        calibration=MiddleburyCalibration(),
        source="Middlebury 2014 'Motorcycle' (Scharstein et al., GCPR 2014), via scikit-image",
    )


_PFM_HEADER = re.compile(rb"^(PF|Pf)\s+(\d+)\s+(\d+)\s+(-?[0-9.eE+-]+)\s", re.ASCII)


def read_pfm(path: str | Path) -> np.ndarray:
    """Read a PFM file (Middlebury's format for disparities): ``(H, W)`` or ``(H, W, 3)``
    float32, rows top to bottom (the file stores them bottom to top).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a PFM file, or truncated (the message names the path and what was
            expected).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PFM file at {path}")
    raw = path.read_bytes()
    m = _PFM_HEADER.match(raw)
    if m is None:
        raise ValueError(
            f"{path} is not a PFM file: expected a header 'PF' or 'Pf', width, height, scale"
        )
    channels = 3 if m.group(1) == b"PF" else 1
    w, h, scale = int(m.group(2)), int(m.group(3)), float(m.group(4))
    if w <= 0 or h <= 0 or scale == 0:
        raise ValueError(f"{path}: bad PFM header (width {w}, height {h}, scale {scale})")
    need = w * h * channels * 4
    body = raw[m.end() :]
    if len(body) < need:
        raise ValueError(
            f"{path} is truncated: expected {need} bytes of pixel data for {w}x{h}x{channels}, "
            f"found {len(body)}"
        )
    dtype = "<f4" if scale < 0 else ">f4"
    arr = np.frombuffer(body[:need], dtype=dtype).astype(np.float32)
    arr = arr.reshape(h, w, channels) if channels == 3 else arr.reshape(h, w)
    return np.ascontiguousarray(arr[::-1])


def write_pfm(path: str | Path, array: np.ndarray) -> None:
    """Write ``(H, W)`` or ``(H, W, 3)`` float data as little-endian PFM."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"expected shape (H, W) or (H, W, 3), got {a.shape}")
    kind = b"PF" if a.ndim == 3 else b"Pf"
    header = kind + b"\n%d %d\n-1.0\n" % (a.shape[1], a.shape[0])
    Path(path).write_bytes(header + np.ascontiguousarray(a[::-1]).astype("<f4").tobytes())
