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

The single-pair functions are element-wise and accept tensors of any shape (typically
``(B, 1, H, W)``) with one focal length and baseline; :func:`disparity_fraction_to_depth` and
:func:`depth_to_disparity_fraction` take ``(B, 1, H, W)`` maps with one focal length and
baseline per image (a batch of rigs), with the same maths and no loop over the batch.

The checks of the *values* (non-negative, finite, positive) read the data, a host sync on a
GPU; they are skipped inside :func:`lesson_lib._validate.value_checks` ``(False)``, which the
trainer uses in its training step. Shape and dtype checks always run.
"""

from __future__ import annotations

import torch

from ._validate import check_positive, check_tensor, value_checks_enabled

__all__ = [
    "disparity_to_depth",
    "depth_to_disparity",
    "depth_error_from_disparity_error",
    "fraction_to_pixels",
    "pixels_to_fraction",
    "disparity_fraction_to_depth",
    "depth_to_disparity_fraction",
]


def _check_finite(x: torch.Tensor, name: str, hint: str) -> None:
    if not value_checks_enabled():
        return
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
            (mask invalid pixels first: Middlebury marks them ``+inf``), or bad constants. The
            disparity's values are not checked inside
            :func:`lesson_lib._validate.value_checks` ``(False)`` (the trainer's training
            step), to spare the host syncs.

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
    _check_disparity_values(disparity, "disparity")
    return _depth_from_disparity(disparity, focal * baseline, doffs, min_depth, max_depth)


def _check_disparity_values(disparity: torch.Tensor, name: str) -> None:
    _check_finite(disparity, name, "mask invalid pixels before converting")
    if value_checks_enabled() and bool((disparity < 0).any()):
        raise ValueError(
            f"{name} must be >= 0 (left x matches right x - d), got minimum "
            f"{float(disparity.min()):.4g}; was the sign convention flipped?"
        )


def _depth_from_disparity(
    disparity: torch.Tensor,
    fb: float | torch.Tensor,
    doffs: float,
    min_depth: float,
    max_depth: float,
) -> torch.Tensor:
    """``Z = fb / (d + doffs)`` clamped, with ``fb = f * B`` a number or a tensor that
    broadcasts against ``disparity`` (one per image)."""
    denom = torch.clamp(disparity + doffs, min=fb / max_depth)
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
            disparity), or bad constants. The depth's values are not checked inside
            :func:`lesson_lib._validate.value_checks` ``(False)`` (the trainer's training
            step), to spare the host syncs. For maps with unknown pixels use
            :func:`depth_to_disparity_fraction`, which gives them disparity 0.
    """
    check_tensor(depth, "depth")
    check_positive(focal, "focal")
    check_positive(baseline, "baseline")
    _check_finite(depth, "depth", "mask invalid pixels before converting")
    if value_checks_enabled() and bool((depth <= 0).any()):
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


# --------------------------------------------------------------------------------------------
# A batch of rigs: one focal length and baseline per image


def _per_image(value: float | torch.Tensor, name: str, like: torch.Tensor) -> float | torch.Tensor:
    """A number, or a ``(B,)`` / one-element tensor reshaped to ``(B, 1, 1, 1)`` on ``like``'s
    device in ``like``'s dtype (at least float32)."""
    if not isinstance(value, torch.Tensor):
        check_positive(value, name)
        return float(value)
    batch = like.shape[0]
    check_tensor(value, name, floating=False)
    if value.ndim > 1 or value.numel() not in (1, batch):
        raise ValueError(
            f"{name}: expected a number or a tensor of shape ({batch},) (one per image), "
            f"got shape {tuple(value.shape)}"
        )
    check_positive(value, name)  # a value check: skipped inside value_checks(False)
    dtype = torch.promote_types(like.dtype, torch.float32)
    return value.to(device=like.device, dtype=dtype).reshape(-1, 1, 1, 1)


def disparity_fraction_to_depth(
    disp_fraction: torch.Tensor,
    focal_px: float | torch.Tensor,
    baseline_m: float | torch.Tensor,
    min_depth: float = 0.1,
    max_depth: float = 100.0,
) -> torch.Tensor:
    """Metric depth from Monodepth's disparity (a fraction of the image width), one rig per
    image: ``Z = f * B / (d * W)``, clamped to ``[min_depth, max_depth]`` (chapters 01, 06).

    The maths of :func:`disparity_to_depth` (``d * W`` pixels via :func:`fraction_to_pixels`,
    a zero disparity gives ``max_depth``), for the whole batch at once: no loop, and no
    host sync when value checks are off.

    Args:
        disp_fraction: ``(B, 1, H, W)`` disparity as a fraction of the width ``W``, finite,
            ``>= 0``.
        focal_px: ``f_x`` in pixels at this resolution, a number or ``(B,)`` (e.g.
            ``K[:, 0, 0]``), > 0.
        baseline_m: the baseline in metres, a number or ``(B,)``, > 0; the depth comes out
            in metres.
        min_depth, max_depth: the clamp range in metres.

    Returns:
        ``(B, 1, H, W)`` depth in ``disp_fraction``'s dtype and on its device.

    Raises:
        ValueError: wrong shapes, negative or non-finite disparity, or constants that are not
            finite and > 0. The tensors' values are not checked inside
            :func:`lesson_lib._validate.value_checks` ``(False)`` (the trainer's training
            step), to spare the host syncs.

    Example:
        >>> disp = torch.full((2, 1, 1, 4), 0.25)  # one pixel of disparity in a 4-pixel row
        >>> disparity_fraction_to_depth(disp, torch.tensor([700.0, 350.0]), 0.1)[:, 0, 0, 0]
        tensor([70., 35.])
    """
    check_tensor(disp_fraction, "disp_fraction", ("B", 1, "H", "W"))
    f = _per_image(focal_px, "focal_px", disp_fraction)
    b = _per_image(baseline_m, "baseline_m", disp_fraction)
    check_positive(min_depth, "min_depth")
    if not max_depth > min_depth:
        raise ValueError(f"max_depth must be > min_depth, got {max_depth} <= {min_depth}")
    _check_disparity_values(disp_fraction, "disp_fraction")
    disparity = fraction_to_pixels(disp_fraction, disp_fraction.shape[-1])
    depth = _depth_from_disparity(disparity, f * b, 0.0, min_depth, max_depth)
    return depth.to(disp_fraction.dtype)


def depth_to_disparity_fraction(
    depth: torch.Tensor,
    focal_px: float | torch.Tensor,
    baseline_m: float | torch.Tensor,
) -> torch.Tensor:
    """The disparity, as a fraction of the width, of a depth map, one rig per image:
    ``f * B / (Z * W)`` (inverse of :func:`disparity_fraction_to_depth`; chapters 01, 06).

    Pixels without a depth (``Z <= 0``, inf or NaN: the synthetic world's sky, a LiDAR map's
    holes) are infinitely far and get disparity 0. The maths of :func:`depth_to_disparity`
    for the whole batch at once (no loop, no host sync when value checks are off); the
    gradient is finite everywhere (zero at unknown pixels).

    Args:
        depth: ``(B, 1, H, W)`` z-depth in metres.
        focal_px: ``f_x`` in pixels at this resolution, a number or ``(B,)``, > 0.
        baseline_m: the baseline in metres, a number or ``(B,)``, > 0.

    Returns:
        ``(B, 1, H, W)`` disparity fraction in ``depth``'s dtype and on its device.

    Raises:
        ValueError: wrong shapes, or constants that are not finite and > 0 (a tensor's values
            are not checked inside :func:`lesson_lib._validate.value_checks` ``(False)``).

    Example:
        >>> depth = torch.tensor([[[[35.0, 0.0]]]])
        >>> depth_to_disparity_fraction(depth, 700.0, 0.5)  # 10 px of a 2-pixel-wide row
        tensor([[[[5., 0.]]]])
    """
    check_tensor(depth, "depth", ("B", 1, "H", "W"))
    f = _per_image(focal_px, "focal_px", depth)
    b = _per_image(baseline_m, "baseline_m", depth)
    known = torch.isfinite(depth) & (depth > 0)
    safe = torch.where(known, depth, torch.ones_like(depth))
    disparity = pixels_to_fraction((f * b) / safe, depth.shape[-1])
    return torch.where(known, disparity, torch.zeros_like(disparity)).to(depth.dtype)
