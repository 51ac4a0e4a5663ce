"""Inverse (backward) warping: synthesise the target view by sampling the source (chapter 03).

Backward mapping: for every *target* pixel ``p_t`` we compute where it lands in the source,
``p_s``, and read the source image there by bilinear interpolation. The interpolation happens
in the **source** image, and every target pixel gets exactly one value (no holes, unlike
forward splatting).

Conventions (shared by the whole course):

- Pixel centres at integer coordinates ``0 .. W-1`` (``u`` column, ``v`` row).
- ``grid_sample`` wants coordinates in ``[-1, 1]``. With ``align_corners=True`` the centres of
  the corner pixels are at -1 and 1: ``x = 2u / (W - 1) - 1``. With ``align_corners=False``
  the *edges* of the image are at -1 and 1: ``x = (2u + 1) / W - 1``. :func:`sample` always
  uses the normalisation that matches the ``align_corners`` it passes, so both give the same
  result inside the image (``0 <= u <= W-1``) and, with ``"zeros"`` or ``"border"`` padding,
  outside it too; mixing them shifts the image by up to half a pixel. With ``"reflection"``
  padding the two differ outside the image: ``align_corners=True`` mirrors about the border
  pixel's *centre* (``u = -1`` reads ``u = 1``), ``False`` about the image's *edge*
  ``u = -1/2`` (``u = -1`` reads ``u = 0``) and reads the border pixel itself for
  ``-1/2 <= u <= 0``.
- A sample is *valid* when it lies inside the source, ``0 <= u <= W-1`` and
  ``0 <= v <= H-1`` (all four neighbours exist; up to 1e-3 px of slack, so that rounding does
  not invalidate the border of an identity warp), and, for the rigid warp, the point is in
  front of the source camera and the target depth is positive.
- Stereo: the left pixel ``x`` matches the right pixel ``x - d`` (``d >= 0`` in pixels).
- Pose: ``T_t_to_s`` maps target-frame points into the source frame; the target is
  reconstructed by sampling the source at ``p_s ~ K_s T_t_to_s D_t(p_t) K_t^-1 p_t``.

Precision and speed on a GPU:

- Every function here computes in float32 (float64 for float64 inputs), also inside
  ``torch.autocast``, where the rigid warp's matrix product would otherwise run in bfloat16 or
  float16 and move the sampling points by several pixels; half-precision inputs are cast to
  float32 and the results are float32 (:func:`lesson_lib._validate.float32_geometry`).
- The checks for non-finite depth and for negative or non-finite disparity read the data (a
  host sync on a GPU); they are skipped inside :func:`lesson_lib._validate.value_checks`
  ``(False)``, which the trainer uses around its training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import check_number, check_same_device, check_tensor, float32_geometry, value_checks_enabled
from .camera import intrinsics_inverse, pixel_grid

__all__ = [
    "normalize_pixels",
    "sample",
    "bilinear_sample_by_hand",
    "stereo_warp",
    "horizontal_sample",
    "rigid_warp",
    "rigid_sample_points",
    "forward_warp_stereo",
    "flow_warp",
]

_PADDING = ("zeros", "border", "reflection")


@float32_geometry
def normalize_pixels(uv: torch.Tensor, height: int, width: int, align_corners: bool) -> torch.Tensor:
    """Pixel coordinates ``(B, 2, H, W)`` to ``grid_sample``'s ``(B, H, W, 2)`` in ``[-1, 1]``,
    with the normalisation that matches ``align_corners`` (chapter 03)."""
    check_tensor(uv, "uv", ("B", 2, "H", "W"))
    height, width = check_number(height, "height", integer=True), check_number(width, "width", integer=True)
    u, v = uv[:, 0], uv[:, 1]
    if align_corners:
        x = u * (2.0 / max(width - 1, 1)) - 1.0
        y = v * (2.0 / max(height - 1, 1)) - 1.0
    else:
        x = (2.0 * u + 1.0) / width - 1.0
        y = (2.0 * v + 1.0) / height - 1.0
    return torch.stack([x, y], dim=-1)


_INSIDE_TOL = 1e-3  # pixels: rounding in K R K^-1 puts an identity warp's border at -1e-16 or W-1+1e-6


def _inside(uv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    u, v = uv[:, 0:1], uv[:, 1:2]
    tol = _INSIDE_TOL
    return (u >= -tol) & (u <= width - 1 + tol) & (v >= -tol) & (v <= height - 1 + tol)


@float32_geometry
def sample(
    image: torch.Tensor,
    uv: torch.Tensor,
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinearly sample ``image`` at pixel coordinates ``uv`` (chapter 03).

    Args:
        image: ``(B, C, Hs, Ws)`` source image.
        uv: ``(B, 2, H, W)`` where to read, in source pixels (``u`` first).
        padding_mode: what is read outside the source: ``"zeros"``, ``"border"`` or
            ``"reflection"`` (as ``grid_sample``).
        align_corners: passed to ``grid_sample`` together with the matching normalisation.
            Inside the source (``0 <= u <= Ws-1``, ``0 <= v <= Hs-1``) the result is the same
            either way (up to rounding), and outside too with ``"zeros"`` or ``"border"``.
            With ``"reflection"`` the two differ outside: ``True`` mirrors about the centre of
            the border pixel, ``u -> -u`` and ``u -> 2 (Ws-1) - u`` (``u = -1`` reads column 1,
            as ``numpy.pad(mode="reflect")``); ``False`` mirrors about the image's edge,
            ``u -> -1 - u`` and ``u -> 2 Ws - 1 - u`` (``u = -1`` reads column 0, as
            ``numpy.pad(mode="symmetric")``), and then clamps to ``[0, Ws-1]``, so every
            ``u`` within half a pixel outside the border pixel's centre reads that pixel.
            For a row ``[10, 20, 40, 80]`` at ``u = -0.5``: 15 with ``True``, 10 with
            ``False``. The valid mask is False there either way.

    Returns:
        ``(warped (B, C, H, W), valid (B, 1, H, W) bool)``.
    """
    dims = check_tensor(image, "image", ("B", "C", "Hs", "Ws"))
    check_tensor(uv, "uv", ("B", 2, "H", "W"), dims=dims)
    check_same_device(image=image, uv=uv)
    if padding_mode not in _PADDING:
        raise ValueError(f"padding_mode must be one of {_PADDING}, got {padding_mode!r}")
    hs, ws = image.shape[-2:]
    grid = normalize_pixels(uv.to(image.dtype), hs, ws, align_corners)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)
    return warped, _inside(uv, hs, ws)


@float32_geometry
def bilinear_sample_by_hand(image: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear interpolation written out (for teaching; chapter 03). Same contract as
    :func:`sample` with ``padding_mode="zeros"``: neighbours outside the image count as 0.

    With ``u0 = floor(u)``, ``a = u - u0`` (and likewise ``v0``, ``b``), the value is
    ``(1-a)(1-b) I[v0, u0] + a(1-b) I[v0, u0+1] + (1-a) b I[v0+1, u0] + a b I[v0+1, u0+1]``.
    """
    dims = check_tensor(image, "image", ("B", "C", "Hs", "Ws"))
    check_tensor(uv, "uv", ("B", 2, "H", "W"), dims=dims)
    b, c, hs, ws = image.shape
    u, v = uv[:, 0].to(image.dtype), uv[:, 1].to(image.dtype)
    u0, v0 = torch.floor(u), torch.floor(v)
    a, bb = u - u0, v - v0
    flat = image.reshape(b, c, hs * ws)
    out = torch.zeros(b, c, *u.shape[1:], dtype=image.dtype, device=image.device)
    for du, dv, w in ((0, 0, (1 - a) * (1 - bb)), (1, 0, a * (1 - bb)), (0, 1, (1 - a) * bb), (1, 1, a * bb)):
        ui, vi = (u0 + du).long(), (v0 + dv).long()
        inside = (ui >= 0) & (ui < ws) & (vi >= 0) & (vi < hs)
        idx = (vi.clamp(0, hs - 1) * ws + ui.clamp(0, ws - 1)).reshape(b, 1, -1).expand(b, c, -1)
        vals = torch.gather(flat, 2, idx).reshape(b, c, *u.shape[1:])
        out = out + vals * (w * inside)[:, None]
    return out, _inside(uv, hs, ws)


@float32_geometry
def stereo_warp(
    source: torch.Tensor,
    disparity: torch.Tensor,
    source_side: str = "right",
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruct one view of a rectified pair from the other with a disparity map (chapter 03).

    Args:
        source: ``(B, C, H, W)`` the image to read from.
        disparity: ``(B, 1, H, W)`` disparity *of the target view*, in pixels, ``>= 0``.
        source_side: ``"right"`` to reconstruct the left image (read the right one at
            ``x - d``), or ``"left"`` to reconstruct the right image (read the left at ``x + d``).

    Returns:
        ``(warped (B, C, H, W), valid (B, 1, H, W))``.

    Raises:
        ValueError: on negative or non-finite disparity (the sign convention is ``x - d``).
            A value check: skipped inside :func:`lesson_lib._validate.value_checks`
            ``(False)``, which the trainer uses in its training step (no host sync there).
    """
    dims = check_tensor(source, "source", ("B", "C", "H", "W"))
    check_tensor(disparity, "disparity", ("B", 1, "H", "W"), dims=dims)
    check_same_device(source=source, disparity=disparity)
    if source_side not in ("left", "right"):
        raise ValueError(f"source_side must be 'left' or 'right', got {source_side!r}")
    if value_checks_enabled():
        if not bool(torch.isfinite(disparity).all()):
            raise ValueError("disparity contains inf or NaN; mask invalid pixels first")
        if bool((disparity < 0).any()):
            raise ValueError(
                f"disparity must be >= 0 (left x matches right x - d), got minimum {float(disparity.min()):.4g}"
            )
    shift = -disparity if source_side == "right" else disparity
    return horizontal_sample(source, shift, padding_mode, align_corners)


@float32_geometry
def horizontal_sample(
    source: torch.Tensor,
    shift: torch.Tensor,
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read each pixel ``(u, v)`` of ``source`` at ``(u + shift, v)``: the sampling behind
    :func:`stereo_warp` (``shift = -d`` reads the right image, ``+d`` the left), with a shift of
    either sign, so both views of a pair can be warped in one call by stacking them along the
    batch (chapter 06's loss does). Same values as :func:`sample` with ``uv = (u + shift, v)``,
    built with a few operations: the grid is normalised directly, without a pixel grid.

    Args:
        source: ``(B, C, H, W)``; shift: ``(B, 1, H, W)`` in pixels, any sign.

    Returns:
        ``(warped (B, C, H, W), valid (B, 1, H, W))``: valid where ``u + shift`` lies inside
        the source (as :func:`sample`).
    """
    dims = check_tensor(source, "source", ("B", "C", "H", "W"))
    check_tensor(shift, "shift", ("B", 1, "H", "W"), dims=dims)
    check_same_device(source=source, shift=shift)
    if padding_mode not in _PADDING:
        raise ValueError(f"padding_mode must be one of {_PADDING}, got {padding_mode!r}")
    _, _, h, w = source.shape
    u = torch.arange(w, dtype=source.dtype, device=source.device) + shift.to(source.dtype)[:, 0]  # (B, H, W)
    v = torch.arange(h, dtype=source.dtype, device=source.device)[:, None]  # (H, 1)
    if align_corners:
        x = u * (2.0 / max(w - 1, 1)) - 1.0
        y = v * (2.0 / max(h - 1, 1)) - 1.0
    else:
        x = (2.0 * u + 1.0) / w - 1.0
        y = (2.0 * v + 1.0) / h - 1.0
    grid = torch.stack([x, y.expand_as(x)], dim=-1)
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)
    valid = (u >= -_INSIDE_TOL) & (u <= w - 1 + _INSIDE_TOL)
    return warped, valid[:, None]


@float32_geometry
def rigid_sample_points(
    depth_t: torch.Tensor,
    T_t_to_s: torch.Tensor,
    K_t: torch.Tensor,
    K_s: torch.Tensor | None = None,
    eps: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each target pixel lands in the source: ``p_s ~ K_s T_t_to_s D_t K_t^-1 p_t``.

    The whole chain is one 3x3 matrix and one vector per batch element:
    ``z_s [u_s, v_s, 1]^T = (K_s R K_t^-1) [u, v, 1]^T * D_t + K_s t``, so a depth map costs one
    batched matrix product (chapter 03).

    Returns:
        ``(uv_s (B, 2, H, W), in_front (B, 1, H, W))``: source pixel coordinates (finite
        everywhere; float32, or float64 for a float64 ``depth_t``, also under autocast) and
        whether the point lies in front of the source camera with positive target depth.

    Raises:
        ValueError: ``depth_t`` contains inf or NaN. A value check: skipped inside
            :func:`lesson_lib._validate.value_checks` ``(False)``, which the trainer uses in
            its training step (no host sync there).
    """
    dims = check_tensor(depth_t, "depth_t", ("B", 1, "H", "W"))
    check_tensor(T_t_to_s, "T_t_to_s", ("B", 4, 4), dims=dims)
    check_tensor(K_t, "K_t", ("B", 3, 3), dims=dims)
    K_s = K_t if K_s is None else K_s
    check_tensor(K_s, "K_s", ("B", 3, 3), dims=dims)
    check_same_device(depth_t=depth_t, T_t_to_s=T_t_to_s, K_t=K_t, K_s=K_s)
    if value_checks_enabled() and not bool(torch.isfinite(depth_t).all()):
        raise ValueError("depth_t contains inf or NaN; mask invalid pixels (e.g. set them to 0) first")
    b, _, h, w = depth_t.shape
    dt = depth_t.dtype
    K_s, K_t, T = K_s.to(dt), K_t.to(dt), T_t_to_s.to(dt)
    K_t_inv = intrinsics_inverse(K_t, "K_t")
    M = K_s @ T[:, :3, :3] @ K_t_inv  # (B, 3, 3)
    k = K_s @ T[:, :3, 3:]  # (B, 3, 1)
    grid = pixel_grid(h, w, dt, depth_t.device).reshape(1, 3, h * w)
    p = (M @ grid) * depth_t.reshape(b, 1, h * w) + k  # (B, 3, H*W) homogeneous source pixels
    z = p[:, 2:3]
    in_front = (z > eps) & (depth_t.reshape(b, 1, h * w) > 0)
    uv = p[:, :2] / z.clamp(min=eps)
    return uv.reshape(b, 2, h, w), in_front.reshape(b, 1, h, w)


@float32_geometry
def rigid_warp(
    source: torch.Tensor,
    depth_t: torch.Tensor,
    T_t_to_s: torch.Tensor,
    K_t: torch.Tensor,
    K_s: torch.Tensor | None = None,
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthesise the target view from the source with the target's depth and the pose
    ``T_t_to_s`` (chapter 03).

    Args:
        source: ``(B, C, Hs, Ws)`` source image.
        depth_t: ``(B, 1, H, W)`` target z-depth; pixels with depth ``<= 0`` are invalid.
        T_t_to_s: ``(B, 4, 4)`` maps target-frame points into the source frame.
        K_t: ``(B, 3, 3)`` target intrinsics; ``K_s`` the source's (default: the same).

    Returns:
        ``(warped (B, C, H, W), valid (B, 1, H, W))``: valid where the target depth is
        positive, the point is in front of the source camera, and it projects inside it.
        The sampling points are computed in float32 (float64) also under autocast.

    Raises:
        ValueError: ``depth_t`` contains inf or NaN. A value check: skipped inside
            :func:`lesson_lib._validate.value_checks` ``(False)``, which the trainer uses in
            its training step (no host sync there).
    """
    check_tensor(source, "source", ("B", "C", None, None))
    uv, in_front = rigid_sample_points(depth_t, T_t_to_s, K_t, K_s)
    if source.shape[0] != uv.shape[0]:
        raise ValueError(f"source: expected batch size {uv.shape[0]} (as depth_t), got {source.shape[0]}")
    warped, inside = sample(source, uv, padding_mode, align_corners)
    return warped, inside & in_front


@float32_geometry
def forward_warp_stereo(
    left: torch.Tensor, disparity: torch.Tensor, valid: torch.Tensor | None = None, tolerance: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward mapping (splatting) of the left view into the right one, nearest pixel, with a
    z-buffer: where several left pixels land on one right pixel the nearest (largest disparity)
    wins (chapter 03). Not differentiable in the positions; it shows why the course warps
    *backwards*.

    Args:
        left: ``(B, C, H, W)``; disparity: ``(B, 1, H, W)`` left disparity in pixels;
        valid: optional ``(B, 1, H, W)`` pixels to splat.
        tolerance: disparity margin (pixels) below the z-buffer's winner for a left pixel to
            count as hidden.

    Returns:
        ``(right_estimate (B, C, H, W), filled (B, 1, H, W), occluded (B, 1, H, W))``:
        the splatted right view (0 in holes), which right pixels received a value, and which
        *left* pixels are hidden in the right view (another left pixel with a larger disparity
        lands on the same right pixel).
    """
    dims = check_tensor(left, "left", ("B", "C", "H", "W"))
    check_tensor(disparity, "disparity", ("B", 1, "H", "W"), dims=dims)
    b, c, h, w = left.shape
    valid = torch.ones_like(disparity, dtype=torch.bool) if valid is None else valid.bool()
    x = pixel_grid(h, w, disparity.dtype, disparity.device)[0][None, None]
    xr = torch.round(x - disparity).long()
    ok = valid & (xr >= 0) & (xr < w) & torch.isfinite(disparity)
    rows = torch.arange(h, device=left.device).view(1, 1, h, 1)
    idx = torch.where(ok, rows * w + xr.clamp(0, w - 1), torch.full_like(xr, h * w))  # h*w = discard
    idx = idx.reshape(b, -1)
    d = torch.where(ok, disparity, torch.full_like(disparity, -1.0)).reshape(b, -1)
    zbuf = torch.full((b, h * w + 1), -1.0, dtype=d.dtype, device=d.device).scatter_reduce(1, idx, d, "amax")
    best = zbuf.gather(1, idx)
    winner = ok.reshape(b, -1) & (d >= best - 1e-6)
    occluded = (ok.reshape(b, -1) & (d < best - tolerance)).reshape(b, 1, h, w)
    widx = torch.where(winner, idx, torch.full_like(idx, h * w))
    out = torch.zeros(b, c, h * w + 1, dtype=left.dtype, device=left.device)
    out = out.scatter_reduce(2, widx[:, None].expand(b, c, -1), left.reshape(b, c, -1), "mean", include_self=False)
    filled = torch.zeros(b, h * w + 1, dtype=torch.bool, device=left.device).scatter(1, widx, True)
    return out[..., : h * w].reshape(b, c, h, w), filled[:, : h * w].reshape(b, 1, h, w), occluded


def flow_warp(image: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``image`` (the second frame) where each pixel of the first frame moves to:
    ``warped[p] = image[p + flow[p]]`` (bilinear; chapter 03's backward warp, used with optical
    flow in chapter 09). ``padding_mode`` says what is read outside (as :func:`sample`).

    Args:
        image: ``(B, C, H, W)`` the second frame (or its features, or another flow field).
        flow: ``(B, 2, H, W)`` in pixels, ``(du, dv)`` from the first frame to the second.

    Returns ``(warped (B, C, H, W), valid (B, 1, H, W))``: valid where ``p + flow`` lies inside."""
    dims = check_tensor(image, "image", ("B", "C", "H", "W"))
    check_tensor(flow, "flow", ("B", 2, "H", "W"), dims=dims)
    grid = pixel_grid(*flow.shape[-2:], dtype=flow.dtype, device=flow.device)[:2]
    return sample(image, grid[None] + flow, padding_mode, True)
