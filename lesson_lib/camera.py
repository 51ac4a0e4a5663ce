"""The pinhole camera: intrinsics, projection and back-projection (chapter 02).

Conventions (shared by the whole course):

- ``u`` is the column (x, to the right), ``v`` the row (y, down). Pixel *centres* sit at
  integer coordinates ``0 .. W-1``, so the image covers ``[-0.5, W - 0.5]`` horizontally.
- Camera frame: x right, y down, z forward (out of the lens). Depth is the z-coordinate.
- ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixels; batched as ``(B, 3, 3)``.
- Point sets are stored as columns: ``(B, 3, N)`` so that ``K @ points`` projects them.

Projection:       ``z [u, v, 1]^T = K [X, Y, Z]^T``
Back-projection:  ``[X, Y, Z]^T = Z * K^-1 [u, v, 1]^T``  -- needs the depth ``Z``.

Precision: :func:`backproject` and :func:`project_points` always compute in float32 (float64
for float64 inputs), also inside ``torch.autocast``, where a matrix product would otherwise run
in bfloat16 or float16 and move points by pixels (:func:`lesson_lib._validate.float32_geometry`).
"""

from __future__ import annotations

import torch

from ._validate import check_number, check_same_device, check_tensor, float32_geometry, value_checks_enabled

__all__ = [
    "intrinsics_matrix",
    "intrinsics_inverse",
    "scale_intrinsics",
    "resize_intrinsics",
    "crop_intrinsics",
    "pixel_grid",
    "backproject",
    "project_points",
]


def intrinsics_matrix(
    fx: float, fy: float, cx: float, cy: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The ``(3, 3)`` intrinsic matrix (add a batch dimension with ``K[None]``; chapter 02).

    ``fx, fy, cx, cy`` are numbers in pixels (a one-element tensor is read as its number)."""
    fx, fy, cx, cy = (check_number(v, n) for v, n in ((fx, "fx"), (fy, "fy"), (cx, "cx"), (cy, "cy")))
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def _check_K(K: torch.Tensor, name: str = "K") -> None:
    check_tensor(K, name)
    if K.ndim < 2 or K.shape[-2:] != (3, 3):
        raise ValueError(f"{name}: expected shape (..., 3, 3), got {tuple(K.shape)}")


def intrinsics_inverse(K: torch.Tensor, name: str = "K") -> torch.Tensor:
    """``K^-1`` by ``inv_ex``: ``linalg.inv`` checks for a singular matrix by reading its result
    on the host (a sync inside a training step); here the check runs only while value checks
    are on, and names ``name``. ``K``: ``(..., 3, 3)``."""
    _check_K(K, name)
    K_inv, info = torch.linalg.inv_ex(K)
    if value_checks_enabled() and bool((info != 0).any()):
        raise ValueError(f"{name} is singular (not an intrinsic matrix)")
    return K_inv


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics of the image resized by factors ``sx`` (width) and ``sy`` (height).

    With pixel centres at integer coordinates, a pixel edge ``u + 0.5`` scales by ``s``, so
    ``u' + 0.5 = s (u + 0.5)``: hence ``fx' = sx fx`` and ``cx' = sx (cx + 0.5) - 0.5``
    (likewise for y). Scaling ``cx`` alone, ``cx' = sx cx``, is off by ``(sx - 1) / 2``
    pixels: a quarter of a pixel when halving the image (chapter 02).

    Args:
        K: ``(..., 3, 3)`` intrinsics in pixels.
        sx, sy: new width / old width and new height / old height.
    """
    _check_K(K)
    if not (sx > 0 and sy > 0):
        raise ValueError(f"scale factors must be > 0, got sx={sx}, sy={sy}")
    K2 = K.clone()
    K2[..., 0, :] = K[..., 0, :] * sx
    K2[..., 1, :] = K[..., 1, :] * sy
    K2[..., 0, 2] = sx * (K[..., 0, 2] + 0.5) - 0.5
    K2[..., 1, 2] = sy * (K[..., 1, 2] + 0.5) - 0.5
    return K2


def resize_intrinsics(
    K: torch.Tensor, old_size: tuple[int, int], new_size: tuple[int, int]
) -> torch.Tensor:
    """Intrinsics after resizing an image from ``old_size = (H, W)`` to ``new_size = (H', W')``."""
    (h0, w0), (h1, w1) = old_size, new_size
    if min(h0, w0, h1, w1) <= 0:
        raise ValueError(f"sizes must be positive, got {old_size} -> {new_size}")
    return scale_intrinsics(K, w1 / w0, h1 / h0)


def crop_intrinsics(K: torch.Tensor, top: float, left: float) -> torch.Tensor:
    """Intrinsics after cropping ``top`` rows and ``left`` columns off the image.

    Cropping moves the origin, not the scale: ``cx' = cx - left``, ``cy' = cy - top``.
    """
    _check_K(K)
    K2 = K.clone()
    K2[..., 0, 2] = K[..., 0, 2] - left
    K2[..., 1, 2] = K[..., 1, 2] - top
    return K2


def pixel_grid(
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Homogeneous pixel coordinates ``(3, H, W)``: rows ``u`` (column index), ``v`` (row
    index), ``1``. Pixel centres at integers, as everywhere in the course."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([u, v, torch.ones_like(u)])


@float32_geometry
def backproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Back-project every pixel to a 3-D point in the camera frame (chapter 02).

    ``P(u, v) = depth(u, v) * K^-1 [u, v, 1]^T``.

    Args:
        depth: ``(B, 1, H, W)`` z-depth.
        K: ``(B, 3, 3)`` intrinsics in pixels.

    Returns:
        points ``(B, 3, H, W)``: X, Y, Z in the camera frame (use ``.flatten(2)`` for
        ``(B, 3, H*W)`` columns), float32 or float64 (``depth``'s dtype, at least float32;
        computed without autocast).

    Example:
        >>> K = intrinsics_matrix(100.0, 100.0, 1.0, 1.0)[None]
        >>> backproject(torch.full((1, 1, 3, 3), 2.0), K)[0, :, 1, 1]
        tensor([0., 0., 2.])
    """
    dims = check_tensor(depth, "depth", ("B", 1, "H", "W"))
    check_tensor(K, "K", ("B", 3, 3), dims=dims)
    check_same_device(depth=depth, K=K)
    b, _, h, w = depth.shape
    grid = pixel_grid(h, w, depth.dtype, depth.device).reshape(1, 3, h * w)
    rays = torch.linalg.inv(K.to(depth.dtype)) @ grid  # (B, 3, H*W), z = 1
    return (rays * depth.reshape(b, 1, h * w)).reshape(b, 3, h, w)


@float32_geometry
def project_points(
    points: torch.Tensor, K: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera-frame points to pixels: ``z [u, v, 1]^T = K P`` (chapter 02).

    Args:
        points: ``(B, 3, N)`` points in the camera frame (columns).
        K: ``(B, 3, 3)`` intrinsics in pixels.
        eps: points with ``z <= eps`` are on or behind the camera.

    Returns:
        ``(uv, valid)``: ``uv`` is ``(B, 2, N)`` pixel coordinates, finite everywhere (``z`` is
        clamped to ``eps`` before dividing), float32 or float64 (``points``' dtype, at least
        float32; computed without autocast); ``valid`` is ``(B, 1, N)`` bool, False for points
        with ``z <= eps`` whose ``uv`` means nothing.
    """
    dims = check_tensor(points, "points", ("B", 3, "N"))
    check_tensor(K, "K", ("B", 3, 3), dims=dims)
    check_same_device(points=points, K=K)
    p = K.to(points.dtype) @ points
    z = p[:, 2:3]
    valid = z > eps
    return p[:, :2] / z.clamp(min=eps), valid
