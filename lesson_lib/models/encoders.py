"""The ResNet encoder, written in the course (no torchvision, no pretrained weights; chapter 06)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import check_image

__all__ = ["BasicBlock", "ResNetEncoder"]

_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    """ResNet's basic block: ``relu(x' + bn(conv3x3(relu(bn(conv3x3(x))))))``, where ``x'`` is
    ``x`` or, when the stride or channel count changes, ``bn(conv1x1(x))`` (chapter 06).

    ``(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity, inplace=True)


class ResNetEncoder(nn.Module):
    """ResNet-18 (or -34) feature extractor, written from scratch, randomly initialised
    (chapters 06, 07, 09).

    Layout (as torchvision's ``resnet18`` without ``avgpool`` and ``fc``): a 7x7 stride-2
    convolution + BatchNorm + ReLU, a 3x3 stride-2 max-pool, then four stages of
    :class:`BasicBlock` (``[2, 2, 2, 2]`` for depth 18, ``[3, 4, 6, 3]`` for 34) with
    ``width * (1, 2, 4, 8)`` channels and strides ``1, 2, 2, 2``.

    Weights: Kaiming-normal (``fan_out``, ReLU) convolutions, BatchNorm ``gamma = 1,
    beta = 0``, as torchvision. **No pretrained weights**: nothing is downloaded, so results
    are below those of papers that start from ImageNet.

    Args:
        depth: 18 or 34.
        width: channels of the stem; 64 is the standard ResNet (11,176,512 parameters for
            depth 18), 16 or 32 the small variant for CPUs.
        in_channels: 3 for one RGB image; ``3 * n`` for ``n`` frames stacked along channels
            (the pose network, :class:`PoseNet`).

    ``forward(x)``: ``x (B, in_channels, H, W)`` with ``H, W`` multiples of 32 returns the list
    of 5 feature maps ``[(B, c0, H/2, W/2), (B, c1, H/4, W/4), (B, c2, H/8, W/8),
    (B, c3, H/16, W/16), (B, c4, H/32, W/32)]`` -- the stem after its ReLU (before the
    max-pool), then the output of each stage -- with ``(c0, ..., c4) = self.channels =
    width * (1, 1, 2, 4, 8)``, e.g. ``[64, 64, 128, 256, 512]``.

    Raises:
        ValueError: unknown depth, non-positive width or channels; in ``forward`` a wrong
            channel count, a non-floating dtype, or ``H`` / ``W`` not multiples of 32 (the
            message names the expectation and the received shape).
    """

    def __init__(self, depth: int = 18, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if depth not in _BLOCKS:
            raise ValueError(f"depth must be one of {sorted(_BLOCKS)}, got {depth}")
        if width < 1 or in_channels < 1:
            raise ValueError(f"width and in_channels must be >= 1, got {width}, {in_channels}")
        self.depth, self.width, self.in_channels = depth, width, in_channels
        self.channels: list[int] = [width, width, 2 * width, 4 * width, 8 * width]

        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        in_ch = width
        for i, (n_blocks, stride) in enumerate(zip(_BLOCKS[depth], (1, 2, 2, 2))):
            out_ch = self.channels[i + 1]
            blocks = [BasicBlock(in_ch, out_ch, stride)]
            blocks += [BasicBlock(out_ch, out_ch) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_image(x, "x", self.in_channels)
        f0 = F.relu(self.bn1(self.conv1(x)), inplace=True)
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]
