"""A small PWC-style optical flow network, written in plain PyTorch (chapter 09).

PWC-Net (Sun et al., CVPR 2018) estimates flow coarse to fine: both images go through the same
**feature pyramid**; at each level, from the coarsest, the second image's features are
**warped** towards the first with the flow so far (upsampled from the level above), a **cost
volume** compares each feature vector of the first image with those of the warped second image
within a small search window, and a small **estimator** turns cost volume, features and the
upsampled flow into the flow at that level. A dilated **context network** refines the finest
estimate. TrianFlow (Zhao et al., CVPR 2020) learns its flow with such a network.

Conventions (the course's): flow ``(B, 2, H, W)`` in pixels, ``(du, dv)`` = where each pixel of
the first image moves to in the second (``u`` the column, first); a level ``l`` has ``1 / 2**l``
of the input's resolution and its flow is in pixels of that level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_tensor
from ..warping import flow_warp
from .common import check_image

__all__ = ["correlation_volume", "upsample_flow", "FlowNet"]


def correlation_volume(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int = 4) -> torch.Tensor:
    """Correlation of ``f1`` with ``f2`` shifted by every displacement within
    ``max_displacement`` pixels (chapter 09; PWC-Net's cost volume): ``(B, (2d+1)^2, H, W)``,
    channel ``(dv + d) * (2d + 1) + (du + d)`` holding ``mean_c f1[c, v, u] * f2[c, v + dv, u + du]``
    (zero where ``(u + du, v + dv)`` falls outside ``f2``). A similarity (larger is better), over
    2-D displacements; chapter 05's stereo cost over disparities is
    :func:`lesson_lib.matching.stereo_cost_volume`.

    Args:
        f1, f2: ``(B, C, H, W)`` feature maps of the same shape.
        max_displacement: ``d``, the search range in pixels of this level (4 in PWC-Net).
    """
    dims = check_tensor(f1, "f1", ("B", "C", "H", "W"))
    check_tensor(f2, "f2", ("B", "C", "H", "W"), dims=dims)
    d = int(max_displacement)
    if d < 0:
        raise ValueError(f"max_displacement must be >= 0, got {max_displacement}")
    h, w = f1.shape[-2:]
    padded = F.pad(f2, (d, d, d, d))
    out = []
    for dv in range(2 * d + 1):
        for du in range(2 * d + 1):
            out.append((f1 * padded[:, :, dv : dv + h, du : du + w]).mean(dim=1))
    return torch.stack(out, dim=1)


def upsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Flow resized to ``size`` (bilinear), its ``u`` and ``v`` components multiplied by the
    width and height ratios: pixels of the new resolution."""
    check_tensor(flow, "flow", ("B", 2, "H", "W"))
    h, w = flow.shape[-2:]
    up = F.interpolate(flow, size=tuple(size), mode="bilinear", align_corners=False)
    # two numbers, not torch.tensor([...]): that would be built on the CPU and copied to the device
    return torch.cat([up[:, :1] * (size[1] / w), up[:, 1:] * (size[0] / h)], dim=1)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation), nn.LeakyReLU(0.1))


class _Estimator(nn.Sequential):
    def __init__(self, cin: int, width: int) -> None:
        super().__init__(_conv(cin, 4 * width), _conv(4 * width, 3 * width), _conv(3 * width, 2 * width),
                         _conv(2 * width, width))
        self.out_channels = width


class FlowNet(nn.Module):
    """PWC-style flow: ``forward(image1, image2) -> {level: flow}`` for levels ``finest ..
    coarsest`` (default 2..5: 1/4 to 1/32 of the input), each in that level's pixels, the finest
    refined by the context network; :meth:`flow` gives the finest upsampled to the input size.

    Args:
        width: channels of the pyramid's first level (then ``width * (1, 2, 3, 4, 6)``) and of
            the estimators (``width * (4, 3, 2, 1)``). 16 trains on a CPU.
        max_displacement: the cost volume's search range at every level (4, as PWC-Net and TrianFlow).
        finest: the finest level estimated (2: a quarter of the input's resolution).
        detach_upsampled: pass the coarser level's flow on without gradient (UFlow's
            stop-gradient), so each level's loss trains that level's estimator only.
        normalize_features: before each cost volume, subtract the features' mean and scale each
            pixel's feature vector to length ``sqrt(C)`` (UFlow), so the cost volume holds
            cosine similarities in ``[-1, 1]``; without, randomly initialised features make it
            about ``1e-4`` and the estimators first have to learn to amplify them.

    Input sizes must be multiples of 32 (five halvings).
    """

    LEVELS = 5

    def __init__(self, width: int = 16, max_displacement: int = 4, finest: int = 2, *, detach_upsampled: bool = False,
                 normalize_features: bool = False) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if not 1 <= finest <= self.LEVELS:
            raise ValueError(f"finest must be in 1..{self.LEVELS}, got {finest}")
        self.max_displacement, self.finest = int(max_displacement), int(finest)
        self.detach_upsampled, self.normalize_features = bool(detach_upsampled), bool(normalize_features)
        chans = [width * m for m in (1, 2, 3, 4, 6)]
        self.pyramid = nn.ModuleList()
        cin = 3
        for c in chans:
            self.pyramid.append(nn.Sequential(_conv(cin, c, stride=2), _conv(c, c)))
            cin = c
        n_cost = (2 * self.max_displacement + 1) ** 2
        self.estimators = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        for level in range(self.finest, self.LEVELS + 1):
            extra = 0 if level == self.LEVELS else 2 + width  # upsampled flow and the coarser estimator's features
            est = _Estimator(n_cost + chans[level - 1] + extra, width)
            self.estimators[str(level)] = est
            self.heads[str(level)] = nn.Conv2d(width, 2, 3, padding=1)
        self.context = nn.Sequential(_conv(width + 2, 2 * width), _conv(2 * width, 2 * width, dilation=2),
                                     _conv(2 * width, 2 * width, dilation=4), _conv(2 * width, width, dilation=8),
                                     nn.Conv2d(width, 2, 3, padding=1))

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The pyramid's maps, levels 1..5 (``1 / 2**l`` of the input)."""
        out, x = [], image
        for block in self.pyramid:
            x = block(x)
            out.append(x)
        return out

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> dict[int, torch.Tensor]:
        check_image(image1, "image1", 3)
        check_image(image2, "image2", 3)
        if image2.shape != image1.shape:
            raise ValueError(f"image1 and image2 must have the same shape, got {tuple(image1.shape)} and {tuple(image2.shape)}")
        p1, p2 = self.features(image1), self.features(image2)
        flows: dict[int, torch.Tensor] = {}
        flow = feat = None
        for level in range(self.LEVELS, self.finest - 1, -1):
            f1, f2 = p1[level - 1], p2[level - 1]
            if self.normalize_features:  # zero mean, unit length per pixel before the cost volume (UFlow)
                c1, c2 = f1 - f1.mean(dim=(1, 2, 3), keepdim=True), f2 - f2.mean(dim=(1, 2, 3), keepdim=True)
                f1, f2 = F.normalize(c1, dim=1) * c1.shape[1] ** 0.5, F.normalize(c2, dim=1) * c2.shape[1] ** 0.5
            if flow is None:
                inputs = [correlation_volume(f1, f2, self.max_displacement), f1]
            else:
                flow = upsample_flow(flow.detach() if self.detach_upsampled else flow, f1.shape[-2:])
                feat = F.interpolate(feat, size=f1.shape[-2:], mode="bilinear", align_corners=False)
                warped, _ = flow_warp(f2, flow)
                inputs = [correlation_volume(f1, warped, self.max_displacement), f1, flow, feat]
            feat = self.estimators[str(level)](torch.cat(inputs, dim=1))
            residual = self.heads[str(level)](feat)
            flow = residual if flow is None else flow + residual
            if level == self.finest:
                flow = flow + self.context(torch.cat([feat, flow], dim=1))
            flows[level] = flow
        return flows

    def flow(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        """The finest flow upsampled to the input's size, in input pixels, ``(B, 2, H, W)``."""
        return upsample_flow(self(image1, image2)[self.finest], image1.shape[-2:])
