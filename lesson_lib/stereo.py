"""Disparity and depth for a rectified stereo pair (chapter 01).

Conventions (shared by the whole course):

- Rectified pair. A left-image pixel ``(x, y)`` matches the right-image pixel ``(x - d, y)``
  with disparity ``d >= 0`` in pixels.
- Depth ``Z`` is the z-coordinate in the left camera's frame (not the distance along the ray),
  in the unit of the baseline.
- Similar triangles give ``Z = f * B / d``. Middlebury stores disparities of images whose
  principal points differ by ``doffs`` pixels, so there ``Z = f * B / (d + doffs)``.
- Monodepth predicts disparity as a *fraction of the image width*; convert with
  :func:`fraction_to_pixels` before using the formulas here.

All functions are element-wise and accept tensors of any shape (typically ``(B, 1, H, W)``).
"""

from __future__ import annotations

import torch

from ._validate import check_positive, check_tensor

__all__ = [
    "disparity_to_depth",
    "depth_to_disparity",
    "depth_error_from_disparity_error",
    "fraction_to_pixels",
    "pixels_to_fraction",
]


def _check_finite(x: torch.Tensor, name: str, hint: str) -> None:
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name} contains {bad} non-finite values (inf or NaN); {hint}")


def disparity_to_depth(
    disparity: torch.Tensor,
    focal: float,
    baseline: float,
    doffs: float = 0.0,
    min_depth: float = 0.1,
    max_depth: float = 100.0,
) -> torch.Tensor:
    """Depth from disparity, ``Z = f * B / (d + doffs)``, clamped to ``[min_depth, max_depth]``.

    Derived in chapter 01 (similar triangles).

    Args:
        disparity: disparity in pixels, any shape, floating point, finite, ``>= 0``.
        focal: focal length ``f`` in pixels (> 0).
        baseline: baseline ``B`` (> 0); the depth comes out in the same unit.
        doffs: difference of the two principal points' x-coordinates in pixels (Middlebury);
            0 for a pair rectified to a common principal point (KITTI, the synthetic world).
        min_depth, max_depth: the clamp range, in the unit of ``baseline``.

    Returns:
        depth, same shape and dtype as ``disparity``.

    A zero disparity means a point at infinity: it gives ``max_depth``, never ``inf`` or NaN
    (the denominator is clamped to ``f * B / max_depth`` before dividing).

    Raises:
        ValueError: negative disparity (a left pixel ``x`` matches ``x - d`` with ``d >= 0``;
            a negative value usually means the sign convention was flipped), non-finite values
            (mask invalid pixels first: Middlebury marks them ``+inf``), or bad constants.

    Example:
        >>> disparity_to_depth(torch.tensor([10.0, 0.0]), focal=700.0, baseline=0.5)
        tensor([ 35., 100.])
    """
    check_tensor(disparity, "disparity")
    check_positive(focal, "focal")
    check_positive(baseline, "baseline")
    check_positive(min_depth, "min_depth")
    if not max_depth > min_depth:
        raise ValueError(f"max_depth must be > min_depth, got {max_depth} <= {min_depth}")
    _check_finite(disparity, "disparity", "mask invalid pixels before converting")
    if bool((disparity < 0).any()):
        raise ValueError(
            f"disparity must be >= 0 (left x matches right x - d), got minimum "
            f"{float(disparity.min()):.4g}; was the sign convention flipped?"
        )
    fb = focal * baseline
    denom = (disparity + doffs).clamp(min=fb / max_depth)
    return (fb / denom).clamp(min=min_depth, max=max_depth)


def depth_to_disparity(
    depth: torch.Tensor, focal: float, baseline: float, doffs: float = 0.0
) -> torch.Tensor:
    """Disparity in pixels from depth, ``d = f * B / Z - doffs`` (inverse of
    :func:`disparity_to_depth`; chapter 01).

    Args:
        depth: depth in the unit of ``baseline``, any shape, finite and > 0.

    Raises:
        ValueError: depth <= 0 or non-finite (a point on or behind the camera has no
            disparity), or bad constants.
    """
    check_tensor(depth, "depth")
    check_positive(focal, "focal")
    check_positive(baseline, "baseline")
    _check_finite(depth, "depth", "mask invalid pixels before converting")
    if bool((depth <= 0).any()):
        raise ValueError(f"depth must be > 0, got minimum {float(depth.min()):.4g}")
    return focal * baseline / depth - doffs


def depth_error_from_disparity_error(
    depth: torch.Tensor, focal: float, baseline: float, disparity_error: float = 1.0
) -> torch.Tensor:
    """First-order depth error caused by a disparity error: ``dZ = Z**2 / (f * B) * dd``.

    Differentiating ``Z = f B / d`` gives ``|dZ/dd| = f B / d**2 = Z**2 / (f B)``: the error
    grows with the *square* of the distance (chapter 01).
    """
    check_tensor(depth, "depth")
    check_positive(focal, "focal")
    check_positive(baseline, "baseline")
    return depth**2 / (focal * baseline) * disparity_error


def fraction_to_pixels(disparity_fraction: torch.Tensor, width: int) -> torch.Tensor:
    """Disparity as a fraction of the image width (Monodepth's output) to pixels."""
    check_tensor(disparity_fraction, "disparity_fraction")
    check_positive(width, "width")
    return disparity_fraction * width


def pixels_to_fraction(disparity: torch.Tensor, width: int) -> torch.Tensor:
    """Disparity in pixels to a fraction of the image width (Monodepth's convention)."""
    check_tensor(disparity, "disparity")
    check_positive(width, "width")
    return disparity / width
