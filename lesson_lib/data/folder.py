"""A folder of your own frames, for running trained models on them.

:class:`ImageFolder` reads every image in one folder (natural file-name order, so
``frame2.png`` comes before ``frame10.png``), converts it to the course's ``(3, H, W)`` float32
layout in ``[0, 1]``, optionally resizes it, and pairs it with intrinsics ``K`` valid for the
returned image: either yours, scaled from the original size, or a guess from an assumed field of
view. :meth:`ImageFolder.snippet` cuts video-style snippets ``{"target", "sources", "K"}`` out of
the frame sequence, the same layout as the course's video datasets minus poses and depth.

The helpers :func:`read_image`, :func:`resize_image` and :func:`guess_intrinsics` are shared with
the KITTI loaders (:mod:`lesson_lib.data.kitti`).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..camera import resize_intrinsics

__all__ = ["ImageFolder", "read_image", "resize_image", "guess_intrinsics", "as_intrinsics"]

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def read_image(path: str | Path, what: str = "image") -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` float32 array in ``[0, 1]``.

    Conversions: greyscale is repeated into 3 channels; an alpha channel (RGBA, LA, PA) is
    dropped (not composited); palette and CMYK images are converted to RGB; 16-bit greyscale
    (PIL modes ``I;16`` / ``I``) is divided by 65535. A JPEG's EXIF orientation is applied, so the
    array is the image as a viewer shows it (intrinsics you pass in must refer to that upright
    image).

    Args:
        path: the image file.
        what: how error messages call the file (e.g. ``"left colour image of frame 5"``).

    Raises:
        FileNotFoundError: no file at ``path`` (the message names ``what`` and the path).
        ValueError: the file is not a decodable image (corrupt or truncated), or has a pixel
            format with no defined range (32-bit float); the message names the path.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing {what}: no file at {path}")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in _SIXTEEN_BIT_MODES:
                grey = np.asarray(im).astype(np.float32) / 65535.0
                arr = np.repeat(np.clip(grey, 0.0, 1.0)[:, :, None], 3, axis=2)
            elif mode == "F":
                raise ValueError("32-bit float images have no defined [0, 1] range")
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8).astype(np.float32) / 255.0
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(
            f"{what} {path} could not be read as an image ({type(exc).__name__}: {exc}); "
            "the file is corrupt, truncated or not an image"
        ) from exc
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) == 0:
        raise ValueError(f"{what} {path}: expected an (H, W, 3) image, decoded shape {arr.shape}")
    return np.ascontiguousarray(arr)


def resize_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` float image to ``(height, width, 3)`` float32 in ``[0, 1]``.

    Bilinear (``skimage.transform.resize``, ``order=1``) with a Gaussian pre-filter when
    shrinking (``anti_aliasing=True``). scikit-image maps pixel *edges* onto pixel edges, which is
    the half-pixel rule that :func:`lesson_lib.camera.resize_intrinsics` assumes, so resize the
    intrinsics with that function. Returns the input unchanged (as float32) when the size
    already matches.
    """
    from skimage.transform import resize

    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"img: expected an (H, W, 3) array, got shape {img.shape}")
    if img.shape[:2] == (height, width):
        return img.astype(np.float32, copy=False)
    out = resize(img, (height, width), order=1, anti_aliasing=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def guess_intrinsics(height: int, width: int, hfov_degrees: float = 60.0) -> torch.Tensor:
    """Guessed ``(3, 3)`` float32 intrinsics of an unknown camera.

    Assumes square pixels, a horizontal field of view of ``hfov_degrees`` and the principal
    point at the image centre: ``fx = fy = (W / 2) / tan(hfov / 2)``,
    ``cx = (W - 1) / 2``, ``cy = (H - 1) / 2`` (pixel centres at integers).

    A wrong guess of the field of view scales the focal length, and a depth network trained on
    another camera then predicts depth off by roughly that factor: use the result for relative
    depth (shapes, ordering) only. For reference, KITTI's colour cameras (``fx`` = 721.5 px over
    1242 px) have about 81 degrees of horizontal field of view, typical phone main cameras
    65-75 degrees.
    """
    if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
        raise ValueError(f"height and width must be positive ints, got {height!r}, {width!r}")
    height, width = int(height), int(width)
    if not (0.0 < float(hfov_degrees) < 180.0):
        raise ValueError(f"hfov_degrees must be in (0, 180), got {hfov_degrees}")
    f = (width / 2.0) / math.tan(math.radians(float(hfov_degrees)) / 2.0)
    return torch.tensor(
        [[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]],
        dtype=torch.float32,
    )


def as_intrinsics(K: object, name: str = "K") -> torch.Tensor:
    """Check and convert intrinsics (array, tensor or nested list) to a ``(3, 3)`` float64
    tensor: finite, ``fx, fy > 0`` and last row ``[0, 0, 1]``; ``ValueError`` otherwise."""
    try:
        if isinstance(K, torch.Tensor):
            t = K.detach().to("cpu", torch.float64)
        else:
            t = torch.from_numpy(np.array(K, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a (3, 3) matrix of numbers, got {K!r}") from exc
    if t.shape != (3, 3):
        raise ValueError(f"{name}: expected shape (3, 3), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or not (t[0, 0] > 0 and t[1, 1] > 0):
        raise ValueError(f"{name}: expected finite intrinsics with fx, fy > 0, got {t.tolist()}")
    if not torch.equal(t[2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)):
        raise ValueError(f"{name}: the last row must be [0, 0, 1], got {t[2].tolist()}")
    return t


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def _to_chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def _check_size(height: int | None, width: int | None) -> tuple[int, int] | None:
    if height is None and width is None:
        return None
    if height is None or width is None:
        raise ValueError(f"give both height and width or neither, got height={height}, width={width}")
    if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
        raise ValueError(f"height and width must be positive ints, got {height!r}, {width!r}")
    return int(height), int(width)


class ImageFolder(Dataset):
    """Your own frames from one folder, as the course's tensors.

    Files whose extension (case-insensitive) is in ``extensions`` are taken, hidden files
    (names starting with ``.``) skipped, and sorted in natural order of their names
    (``frame2`` before ``frame10``); for :meth:`snippet` that order must be the time order.

    Intrinsics:

    - ``K`` given: ``(3, 3)`` in pixels of the ORIGINAL image (as stored, after EXIF
      orientation); each item's ``K`` is it resized to the output size with
      :func:`lesson_lib.camera.resize_intrinsics` (half-pixel rule).
    - ``K=None``: guessed by :func:`guess_intrinsics` from a horizontal field of view of
      ``hfov_degrees`` (60 by default): ``fx = fy = (W / 2) / tan(hfov / 2)`` and the principal
      point at the image centre, then resized like a given ``K`` (which gives the same formula
      at the output size when the aspect ratio is kept). The guess is only good for relative
      depth; KITTI's camera, for comparison, has about 81 degrees.

    Args:
        path: the folder.
        K: optional ``(3, 3)`` intrinsics of the original images.
        height, width: output size (both or neither; ``None`` keeps each image's size).
        extensions: file-name endings to take.
        hfov_degrees: assumed horizontal field of view when ``K`` is None.

    Items ``dataset[i]``: ``{"image": (3, H, W) float32 in [0, 1], "K": (3, 3) float32,
    "path": str}`` (tensors, ready to batch). The attribute ``dataset.K`` is the given ``K`` of
    the original images as a ``(3, 3)`` float64 NumPy array, like every ``K`` attribute in the
    course (``None`` when it is guessed per image).

    Raises:
        FileNotFoundError: the folder does not exist, or holds no file with one of
            ``extensions`` (the message names the folder and the extensions).
        ValueError: a bad ``K``, size or field of view; when reading, a corrupt image (the
            message names its path).
    """

    def __init__(
        self,
        path: str | Path,
        K: object | None = None,
        height: int | None = None,
        width: int | None = None,
        extensions: Sequence[str] = DEFAULT_EXTENSIONS,
        hfov_degrees: float = 60.0,
    ) -> None:
        self.folder = Path(path)
        if isinstance(extensions, str):
            extensions = (extensions,)
        self.extensions = tuple(
            (e if e.startswith(".") else "." + e).lower() for e in extensions
        )
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no image folder at {self.folder}")
        self.paths = sorted(
            (
                p
                for p in self.folder.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in self.extensions
            ),
            key=lambda p: _natural_key(p.name),
        )
        if not self.paths:
            raise FileNotFoundError(
                f"no images in folder {self.folder}: expected files ending in "
                f"{', '.join(self.extensions)}"
            )
        # a copy: a float64 tensor passed in is not converted, and must not be shared
        self.K = None if K is None else as_intrinsics(K).numpy().copy()
        self.size = _check_size(height, width)
        if not (0.0 < float(hfov_degrees) < 180.0):
            raise ValueError(f"hfov_degrees must be in (0, 180), got {hfov_degrees}")
        self.hfov_degrees = float(hfov_degrees)

    def __len__(self) -> int:
        return len(self.paths)

    def _index(self, i: int) -> int:
        n = len(self.paths)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"frame {i} out of range: the folder {self.folder} has {n} images")
        return j

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.paths[i]
        img = read_image(path, what=f"frame {i} of the image folder")
        h0, w0 = img.shape[:2]
        K0 = (
            torch.from_numpy(self.K)
            if self.K is not None
            else guess_intrinsics(h0, w0, self.hfov_degrees).to(torch.float64)
        )
        if self.size is not None:
            img = resize_image(img, *self.size)
            K0 = resize_intrinsics(K0, (h0, w0), self.size)
        return _to_chw(img), K0.to(torch.float32)

    def __getitem__(self, i: int) -> dict[str, object]:
        j = self._index(i)
        image, K = self._load(j)
        return {"image": image, "K": K, "path": str(self.paths[j])}

    def snippet(self, i: int, length: int = 3) -> dict[str, object]:
        """A video-style snippet centred on frame ``i``: ``length`` (odd, >= 3) consecutive
        frames ``i - r .. i + r`` with ``r = length // 2``.

        Returns ``{"target": (3, H, W), "sources": (length - 1, 3, H, W) in time order without
        the target, "K": (3, 3) (the target's), "path": str (the target's file)}``; no poses and
        no depth (your frames have none).

        Raises:
            ValueError: ``length`` not odd and >= 3, or the frames have different sizes (pass
                ``height`` and ``width``).
            IndexError: the snippet would reach outside the folder's frames.
        """
        if not (isinstance(length, int) and length >= 3 and length % 2 == 1):
            raise ValueError(f"length must be an odd int >= 3, got {length!r}")
        j = self._index(i)
        r = length // 2
        n = len(self.paths)
        if j - r < 0 or j + r >= n:
            raise IndexError(
                f"a snippet of length {length} centred on frame {j} needs frames {j - r}..{j + r}, "
                f"but the folder {self.folder} has frames 0..{n - 1}"
            )
        target, K = self._load(j)
        sources = [self._load(k)[0] for k in range(j - r, j + r + 1) if k != j]
        for k, s in zip([k for k in range(j - r, j + r + 1) if k != j], sources):
            if s.shape != target.shape:
                raise ValueError(
                    f"frames of one snippet must have one size: {self.paths[k]} is "
                    f"{tuple(s.shape[1:])}, {self.paths[j]} is {tuple(target.shape[1:])} "
                    "(pass height and width to resize them)"
                )
        return {"target": target, "sources": torch.stack(sources), "K": K, "path": str(self.paths[j])}
