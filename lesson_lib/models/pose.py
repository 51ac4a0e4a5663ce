"""Pose networks: ego-motion between a target frame and its sources (chapters 07, 09)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .._validate import check_tensor
from ..pose import ROTATIONS, pose_vector_to_matrix
from .common import check_image
from .encoders import ResNetEncoder

__all__ = ["PoseNet"]


class PoseNet(nn.Module):
    """Pose network for SfMLearner / monodepth2-style training (chapters 07, 09).

    A :class:`ResNetEncoder` on the ``n_frames`` RGB frames stacked along channels
    (``in_channels = 3 * n_frames``), global average pooling of its last feature map, a 1x1
    convolution to ``6 * (n_frames - 1)`` numbers, multiplied by 0.01 so that the initial
    poses are close to the identity (as SfMLearner and monodepth2 do).

    Frame order in the stack: **target first**, then the sources,
    ``torch.cat([target, source_1, ..., source_{n-1}], dim=1)`` (:meth:`stack`).

    ``forward(frames)``: ``frames (B, 3 * n_frames, H, W)`` with ``H, W`` multiples of 32
    returns ``(B, n_frames - 1, 6)``: for source ``k`` the vector ``[tx, ty, tz, r1, r2, r3]``
    (translation first) of ``T_t_to_s_k``, the pose that maps 3-D points from the **target**
    camera's frame into source ``k``'s frame -- what :func:`lesson_lib.warping.rigid_warp`
    needs to reconstruct the target from source ``k``. The rotation part is read according to
    ``rotation`` (``"axis_angle"``: monodepth2's rotation vector, ``"euler"``: SfMLearner's
    angles); :meth:`to_matrices` applies :func:`lesson_lib.pose.pose_vector_to_matrix`.

    Args:
        n_frames: frames per sample (>= 2), e.g. 3 for ``[I_t, I_{t-1}, I_{t+1}]``.
        width: encoder width (64: ResNet-18; 16 or 32: small variant for CPUs).
        rotation: ``"axis_angle"`` or ``"euler"``; how :meth:`to_matrices` reads ``r``.
        depth: encoder depth, 18 or 34.
    """

    def __init__(
        self, n_frames: int = 3, width: int = 64, rotation: str = "axis_angle", depth: int = 18
    ) -> None:
        super().__init__()
        if n_frames < 2:
            raise ValueError(f"n_frames must be >= 2 (a target and a source), got {n_frames}")
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
        self.n_frames, self.rotation = n_frames, rotation
        self.encoder = ResNetEncoder(depth=depth, width=width, in_channels=3 * n_frames)
        self.pose_conv = nn.Conv2d(self.encoder.channels[-1], 6 * (n_frames - 1), 1)
        self.scale = 0.01

    @staticmethod
    def stack(target: torch.Tensor, sources: Sequence[torch.Tensor]) -> torch.Tensor:
        """``torch.cat([target, *sources], dim=1)``: the input layout :meth:`forward` expects."""
        return torch.cat([target, *sources], dim=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        check_image(frames, "frames", 3 * self.n_frames)
        f = self.encoder(frames)[-1]
        pooled = f.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1); mean and 1x1 conv commute
        out = self.scale * self.pose_conv(pooled)
        return out.reshape(frames.shape[0], self.n_frames - 1, 6)

    def to_matrices(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(B, n_frames - 1, 6)`` vectors to ``(B, n_frames - 1, 4, 4)`` poses
        ``T_t_to_s`` with this network's ``rotation`` convention."""
        check_tensor(vectors, "vectors", ("B", self.n_frames - 1, 6))
        b = vectors.shape[0]
        T = pose_vector_to_matrix(vectors.reshape(-1, 6), rotation=self.rotation)
        return T.reshape(b, self.n_frames - 1, 4, 4)
