"""Depth networks: the U-Net depth decoder and Monodepth's stereo network (chapters 06, 07)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validate import check_tensor
from .common import check_feature_map, check_image
from .encoders import ResNetEncoder

__all__ = ["DepthDecoder", "default_decoder_channels", "MonodepthNet"]


class _ConvELU(nn.Sequential):
    """Reflection-padded 3x3 convolution followed by ELU (size-preserving)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3), nn.ELU(inplace=True))


def default_decoder_channels(encoder_channels: Sequence[int]) -> tuple[int, ...]:
    """monodepth2's decoder channels ``(16, 32, 64, 128, 256)``, scaled by the encoder's
    ``width / 64`` (``encoder_channels[0]``), at least 4 each: ``(4, 8, 16, 32, 64)`` for
    width 16."""
    scale = encoder_channels[0] / 64
    return tuple(max(4, round(c * scale)) for c in (16, 32, 64, 128, 256))


class DepthDecoder(nn.Module):
    """U-Net decoder with skip connections and multi-scale sigmoid heads (chapters 06, 07).

    Five levels ``i = 4, 3, 2, 1, 0``, each doubling the resolution (Monodepth's ``upconv`` +
    ``iconv``):

    1. upsample by 2 (nearest neighbour),
    2. reflection-padded 3x3 conv to ``decoder_channels[i]`` + ELU,
    3. concatenate the encoder's skip feature of the same size (``features[i - 1]``; none at
       level 0, which is already at full resolution),
    4. reflection-padded 3x3 conv to ``decoder_channels[i]`` + ELU.

    After level ``i`` the map is at scale ``i`` (``H / 2**i``); for every ``i`` in ``scales``
    a reflection-padded 3x3 conv to ``out_channels`` followed by a sigmoid gives that scale's
    output. With ``feed_outputs`` (Monodepth v1's decoder) the output of level ``i + 1``,
    upsampled by 2 (nearest neighbour), is also concatenated in step 3, so each finer output
    starts from the coarser one. (monodepth2 applies step 2 *before* upsampling, which is 4x cheaper there and
    has the same parameters; the order here is Monodepth v1's.)

    Args:
        encoder_channels: the five channel counts of the encoder's features
            (``ResNetEncoder.channels``).
        scales: output scales, a subset of ``0..4``; default ``(0, 1, 2, 3)`` (full, 1/2, 1/4,
            1/8 of the input).
        out_channels: channels of each output (2 for Monodepth's left/right disparities,
            1 for monodepth2's single disparity).
        decoder_channels: channels at levels ``0..4``; default
            :func:`default_decoder_channels` (monodepth2's ``(16, 32, 64, 128, 256)`` for
            width 64, scaled with the encoder width).
        feed_outputs: feed each output into the next finer level (Monodepth v1: without it
            the full-resolution output of a stereo model trained with the left-right term can
            stay stuck at its initial constant; monodepth2's decoder does not feed them).

    Weights: PyTorch's default initialisation (as monodepth2's decoder).

    ``forward(features)``: the encoder's list of 5 maps (shapes as
    :class:`ResNetEncoder` returns them) to ``{s: (B, out_channels, H / 2**s, W / 2**s)}``
    with values in ``(0, 1)``, where ``(H, W)`` is the encoder's input size.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        scales: Sequence[int] = (0, 1, 2, 3),
        out_channels: int = 2,
        decoder_channels: Sequence[int] | None = None,
        feed_outputs: bool = False,
    ) -> None:
        super().__init__()
        enc = [int(c) for c in encoder_channels]
        if len(enc) != 5 or min(enc) < 1:
            raise ValueError(f"encoder_channels must be 5 positive ints, got {tuple(enc)}")
        dec = list(default_decoder_channels(enc) if decoder_channels is None else decoder_channels)
        if len(dec) != 5 or min(dec) < 1:
            raise ValueError(f"decoder_channels must be 5 positive ints, got {tuple(dec)}")
        scales = sorted(set(int(s) for s in scales))
        if not scales or scales[0] < 0 or scales[-1] > 4:
            raise ValueError(f"scales must be a non-empty subset of 0..4, got {scales}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.encoder_channels, self.decoder_channels = enc, dec
        self.scales, self.out_channels = scales, out_channels
        self.feed_outputs = bool(feed_outputs)

        self.upconvs = nn.ModuleList()  # index i: level i (after upsampling)
        self.iconvs = nn.ModuleList()
        for i in range(5):
            in_ch = enc[4] if i == 4 else dec[i + 1]
            self.upconvs.append(_ConvELU(in_ch, dec[i]))
            skip = enc[i - 1] if i > 0 else 0
            fed = out_channels if self.feed_outputs and (i + 1) in scales else 0
            self.iconvs.append(_ConvELU(dec[i] + skip + fed, dec[i]))
        self.heads = nn.ModuleDict(
            {
                str(s): nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dec[s], out_channels, 3))
                for s in scales
            }
        )

    def _check_features(self, features: Sequence[torch.Tensor]) -> None:
        if not isinstance(features, (list, tuple)) or len(features) != 5:
            n = len(features) if isinstance(features, (list, tuple)) else type(features).__name__
            raise ValueError(f"features: expected a list of 5 encoder feature maps, got {n}")
        last = features[4]
        dims = check_feature_map(last, "features[4]", self.encoder_channels[4])
        h, w = last.shape[-2:]
        for i in range(4):
            factor = 2 ** (4 - i)  # features[i] is at 1 / 2**(i + 1), features[4] at 1 / 32
            spec = ("B", self.encoder_channels[i], h * factor, w * factor)
            check_tensor(features[i], f"features[{i}]", spec, dims=dims)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        self._check_features(features)
        outputs: dict[int, torch.Tensor] = {}
        x = features[4]
        for i in range(4, -1, -1):
            x = self.upconvs[i](F.interpolate(x, scale_factor=2.0, mode="nearest"))
            parts = [x]
            if i > 0:
                parts.append(features[i - 1])
            if self.feed_outputs and (i + 1) in outputs:
                parts.append(F.interpolate(outputs[i + 1], scale_factor=2.0, mode="nearest"))
            x = self.iconvs[i](torch.cat(parts, dim=1) if len(parts) > 1 else x)
            if i in self.scales:
                outputs[i] = torch.sigmoid(self.heads[str(i)](x))
        return {s: outputs[s] for s in sorted(outputs)}


class MonodepthNet(nn.Module):
    """Monodepth's (v1) stereo-trained network: ResNet encoder + U-Net decoder predicting
    *both* the left and the right disparity from the *left* image alone (chapter 06).

    ``forward(left)``: ``left (B, 3, H, W)`` with ``H, W`` multiples of 32 returns
    ``{s: (B, 2, H / 2**s, W / 2**s)}`` for ``s`` in ``scales``; channel 0 is the left
    disparity ``d_l`` (a left pixel ``x`` matches the right pixel ``x - d_l``), channel 1 the
    right disparity ``d_r`` (a right pixel ``x`` matches the left pixel ``x + d_r``).

    Values are ``max_disp_fraction * sigmoid(...)`` in ``(0, max_disp_fraction)``, a **fraction
    of the image width** (Monodepth's ``0.3 * sigmoid``), so one network serves every
    resolution. In pixels at scale ``s``::

        w_s = left.shape[-1] // 2**s
        d_pixels = stereo.fraction_to_pixels(disp[s], w_s)

    and depth follows from ``stereo.disparity_to_depth(d_pixels, focal_s, baseline)`` with the
    focal length scaled to that resolution too.

    Args:
        width: encoder width (64: ResNet-18; 16 or 32: small variant for CPUs).
        max_disp_fraction: the largest disparity, as a fraction of the width (0.3 = Monodepth).
        scales: output scales (default full, 1/2, 1/4, 1/8).
        depth: encoder depth, 18 or 34.
        initial_disparity: the disparity (fraction of the width) the untrained network
            predicts, set through the bias of the output convolutions: ``b = logit(initial /
            max_disp_fraction)``. Default 0.01 (4 px at 416 wide, a far scene). ``None`` keeps
            PyTorch's default bias, which starts at ``0.3 * sigmoid(0) = 0.15`` of the width
            (62 px): so far from most true matches that the full-resolution photometric loss
            gives no useful gradient there, and that output can stay stuck while the coarse
            ones learn (measured in chapter 06's training runs).
    """

    def __init__(
        self,
        width: int = 64,
        max_disp_fraction: float = 0.3,
        scales: Sequence[int] = (0, 1, 2, 3),
        depth: int = 18,
        initial_disparity: float | None = 0.01,
    ) -> None:
        super().__init__()
        if not 0 < max_disp_fraction <= 1:
            raise ValueError(f"max_disp_fraction must be in (0, 1], got {max_disp_fraction}")
        if initial_disparity is not None and not 0 < initial_disparity < max_disp_fraction:
            raise ValueError(f"initial_disparity must be in (0, max_disp_fraction), got {initial_disparity}")
        self.max_disp_fraction = float(max_disp_fraction)
        self.encoder = ResNetEncoder(depth=depth, width=width, in_channels=3)
        self.decoder = DepthDecoder(self.encoder.channels, scales=scales, out_channels=2, feed_outputs=True)
        if initial_disparity is not None:
            p = initial_disparity / max_disp_fraction
            with torch.no_grad():
                for head in self.decoder.heads.values():
                    head[1].bias.fill_(math.log(p / (1 - p)))

    @property
    def scales(self) -> list[int]:
        return self.decoder.scales

    def forward(self, left: torch.Tensor) -> dict[int, torch.Tensor]:
        check_image(left, "left", 3)
        sig = self.decoder(self.encoder(left))
        return {s: self.max_disp_fraction * v for s, v in sig.items()}
