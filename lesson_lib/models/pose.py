"""Pose networks: ego-motion between a target frame and its sources (chapters 07, 09)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .._validate import check_tensor
from ..pose import ROTATIONS, pose_vector_to_matrix
from .common import check_image
from .encoders import ResNetEncoder

__all__ = ["PoseNet", "PoseExpNet", "explainability"]


class PoseNet(nn.Module):
    """Pose network for SfMLearner / monodepth2-style training (chapters 07, 09).

    A :class:`ResNetEncoder` on the ``n_frames`` RGB frames stacked along channels
    (``in_channels = 3 * n_frames``), global average pooling of its last feature map, a 1x1
    convolution to ``6 * (n_frames - 1)`` numbers, multiplied by 0.01 so that the initial
    poses are close to the identity (as SfMLearner and monodepth2 do).

    Frame order in the stack: **target first**, then the sources,
    ``torch.cat([target, source_1, ..., source_{n-1}], dim=1)`` (:meth:`stack`).

    ``width`` divides every layer's channels by ``16 / width``: 16 is the paper's network
    (2.6 M parameters with the mask branch), 8 a quarter of its parameters (the course's CPU
    models), 4 a sixteenth.

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


def _conv(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), nn.ReLU(inplace=True))


def _upconv(cin: int, cout: int) -> nn.Sequential:
    # a 3x3 transposed convolution that exactly doubles the size
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1), nn.ReLU(inplace=True))


class PoseExpNet(nn.Module):
    """SfMLearner's pose and explainability network (Zhou et al., CVPR 2017; chapter 07).

    The target and its ``n_sources`` source frames, stacked on channels target first
    (:meth:`PoseNet.stack`), go through seven stride-2 convolutions (16, 32, 64, 128, 256, 256,
    256 channels; kernels 7, 5, 3, 3, 3, 3, 3; ReLU). A 1x1 convolution turns the last map into
    6 numbers per source, averaged over the image and multiplied by 0.01 (small initial
    motions): ``[tx, ty, tz, rx, ry, rz]`` of ``T_t_to_s`` with SfMLearner's Euler angles
    ``R = Rx·Ry·Rz`` (:func:`lesson_lib.pose.pose_vector_to_matrix` with ``rotation="euler"``).

    The explainability branch (optional) decodes the fifth map back up with five 3x3 transposed
    convolutions (256, 128, 64, 32, 16 channels) and predicts, at the scales 3, 2, 1, 0 (1/8 to
    full resolution), **two logits per source**; :func:`explainability` turns them into the
    mask, the softmax's "explainable" channel (index 1), which equals ``sigmoid(l1 - l0)``.

    ``width`` divides every layer's channels by ``16 / width``: 16 is the paper's network
    (2.6 M parameters with the mask branch), 8 a quarter of its parameters (the course's CPU
    models), 4 a sixteenth.

    ``forward(frames)``: ``frames (B, 3 * (1 + n_sources), H, W)``, ``H, W`` multiples of 32,
    returns ``(poses (B, n_sources, 6), logits)`` with ``logits = {s: (B, n_sources, 2, H/2^s,
    W/2^s)}``, or ``None`` without the branch.
    """

    ENCODER = ((16, 7), (32, 5), (64, 3), (128, 3), (256, 3), (256, 3), (256, 3))
    DECODER = (256, 128, 64, 32, 16)

    def __init__(self, n_sources: int = 2, explainability: bool = True, width: int = 16) -> None:
        super().__init__()
        if n_sources < 1:
            raise ValueError(f"n_sources must be >= 1, got {n_sources}")
        if width < 1 or width > 16 or 16 % width:
            raise ValueError(f"width must divide 16 (16: the paper's channels; 8 or 4: narrower), got {width}")
        self.n_sources, self.scale, self.width = n_sources, 0.01, width
        k = 16 // width  # every layer's channels divided by k
        chans = [3 * (1 + n_sources)] + [c // k for c, _ in self.ENCODER]
        self.encoder = nn.ModuleList(_conv(chans[i], chans[i + 1], k, 2) for i, (_, k) in enumerate(self.ENCODER))
        self.pose_pred = nn.Conv2d(chans[-1], 6 * n_sources, 1)
        self.explainability = explainability
        if explainability:
            decoder = [c // k for c in self.DECODER]
            dec = [chans[5], *decoder]
            self.upconvs = nn.ModuleList(_upconv(dec[i], dec[i + 1]) for i in range(len(decoder)))
            # masks after the 2nd..5th up-convolution: scales 3, 2, 1, 0
            self.mask_heads = nn.ModuleDict({str(s): nn.Conv2d(decoder[4 - s], 2 * n_sources, 3, padding=1)
                                             for s in range(4)})

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor] | None]:
        check_image(frames, "frames", 3 * (1 + self.n_sources))
        feats, x = [], frames
        for conv in self.encoder:
            x = conv(x)
            feats.append(x)
        b = frames.shape[0]
        poses = self.scale * self.pose_pred(x).mean(dim=(2, 3)).reshape(b, self.n_sources, 6)
        if not self.explainability:
            return poses, None
        logits, y = {}, feats[4]
        for i, up in enumerate(self.upconvs):
            y = up(y)
            s = 4 - i
            if s <= 3:
                out = self.mask_heads[str(s)](y)
                logits[s] = out.reshape(b, self.n_sources, 2, *out.shape[-2:])
        return poses, logits

    def to_matrices(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(B, n_sources, 6)`` to ``(B, n_sources, 4, 4)`` poses ``T_t_to_s`` (Euler ``Rx·Ry·Rz``)."""
        check_tensor(vectors, "vectors", ("B", self.n_sources, 6))
        b = vectors.shape[0]
        return pose_vector_to_matrix(vectors.reshape(-1, 6), rotation="euler").reshape(b, self.n_sources, 4, 4)


def explainability(logits: torch.Tensor) -> torch.Tensor:
    """The explainability mask from two logits per source, ``(B, S, 2, h, w) -> (B, S, 1, h, w)``:
    the softmax's channel 1 ("explainable"), which is ``sigmoid(l1 - l0)``: the second logit
    adds nothing a single sigmoid channel could not express (chapter 07)."""
    check_tensor(logits, "logits", ("B", "S", 2, "H", "W"))
    return torch.softmax(logits, dim=2)[:, :, 1:2]
