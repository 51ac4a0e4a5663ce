"""Tiny scenes with exact depth and pose, rendered by ray casting (chapter 03).

A textured plane is the simplest scene whose every view can be rendered exactly: cast the ray of
each pixel, intersect it with the plane, and read the texture where it hits. Chapter 03 uses it
to check the rigid warp against a known answer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import check_tensor
from .camera import pixel_grid
from .warping import sample

__all__ = ["render_plane"]


def render_plane(
    texture: torch.Tensor,
    K: torch.Tensor,
    T_cam_to_world: torch.Tensor,
    height: int,
    width: int,
    plane_z: float = 5.0,
    extent: tuple[float, float] = (8.0, 6.0),
    supersample: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the plane ``Z_world = plane_z`` carrying ``texture`` as seen by one camera.

    The texture covers ``extent = (width_m, height_m)`` metres centred on the world z-axis
    (x right, y down, like the camera frame of a camera at the world origin); outside it the
    texture's border colour continues.

    Args:
        texture: ``(1, C, Ht, Wt)`` in ``[0, 1]``.
        K: ``(1, 3, 3)`` intrinsics of the rendered image.
        T_cam_to_world: ``(1, 4, 4)`` maps camera-frame points into the world frame.
        height, width: image size.
        supersample: rays per pixel along each axis (averaged), against aliasing.

    Returns:
        ``(image (1, C, H, W), depth (1, 1, H, W))``: the z-depth in the camera frame at each
        pixel centre, 0 where the ray misses the plane (points away from it).
    """
    check_tensor(texture, "texture", (1, None, None, None))
    check_tensor(K, "K", (1, 3, 3))
    check_tensor(T_cam_to_world, "T_cam_to_world", (1, 4, 4))
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    dt = texture.dtype
    R, t = T_cam_to_world[0, :3, :3].to(dt), T_cam_to_world[0, :3, 3].to(dt)
    K_inv = torch.linalg.inv(K[0].to(dt))

    def cast(uv1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rays_cam = K_inv @ uv1.reshape(3, -1)  # z = 1 in the camera frame
        rays = R @ rays_cam
        lam = (plane_z - t[2]) / rays[2]
        hit = lam > 0
        pts = t[:, None] + rays * lam
        tu = (pts[0] / extent[0] + 0.5) * (texture.shape[-1] - 1)
        tv = (pts[1] / extent[1] + 0.5) * (texture.shape[-2] - 1)
        return torch.stack([tu, tv]), torch.where(hit, lam, torch.zeros_like(lam))

    s = supersample
    fine = pixel_grid(height * s, width * s, dt, texture.device)
    fine[:2] = (fine[:2] + 0.5) / s - 0.5  # sub-pixel ray positions, centred on each pixel
    tuv, _ = cast(fine)
    img, _ = sample(texture, tuv.reshape(1, 2, height * s, width * s), padding_mode="border")
    img = F.avg_pool2d(img, s) if s > 1 else img
    _, depth = cast(pixel_grid(height, width, dt, texture.device))
    return img, depth.reshape(1, 1, height, width)
