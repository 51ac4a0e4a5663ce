"""Networks for self-supervised depth and pose: a ResNet encoder, a U-Net depth decoder,
Monodepth's stereo network and a pose network (chapters 06, 07 and 09).

Everything is written from scratch in plain PyTorch (no torchvision) and starts from random
weights: **no pretrained (ImageNet) weights exist here and nothing is ever downloaded**. The
published Monodepth / monodepth2 numbers use an ImageNet-pretrained encoder; training from
scratch converges more slowly and to somewhat worse depth.

Conventions (shared by the whole course):

- Images are ``(B, C, H, W)`` floating-point tensors, RGB in ``[0, 1]``, with ``H`` and ``W``
  divisible by 32 (the encoder halves the resolution five times; the decoder doubles it back
  and must meet every skip connection at exactly the same size).
- *Scale* ``s`` means ``1 / 2**s`` of the **input** resolution: scale 0 is full resolution,
  scale 3 is ``(H / 8, W / 8)``. Multi-scale outputs are dicts ``{s: tensor}``.
- Disparities from :class:`MonodepthNet` are a *fraction of the image width* (Monodepth's
  convention, chapter 06); :func:`lesson_lib.stereo.fraction_to_pixels` with the width *at
  that scale* turns them into pixels.
- Pose vectors from :class:`PoseNet` are ``[tx, ty, tz, r1, r2, r3]`` (translation first) and
  map target-frame points into each source frame, ``T_t_to_s``, as
  :func:`lesson_lib.pose.pose_vector_to_matrix` and :func:`lesson_lib.warping.rigid_warp`
  expect (chapters 07 and 09).
- ``width`` sets the encoder's channels ``width * (1, 1, 2, 4, 8)``: 64 is the standard
  ResNet-18 (11.2 M parameters); 16 or 32 is the small variant for CPUs (16 times or 4 times
  fewer parameters).
"""

from __future__ import annotations

import math

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._validate import check_tensor
from .pose import _ROTATIONS, pose_vector_to_matrix

__all__ = [
    "DIVISOR",
    "BasicBlock",
    "ResNetEncoder",
    "DepthDecoder",
    "default_decoder_channels",
    "MonodepthNet",
    "PoseNet",
    "count_parameters",
]

DIVISOR = 32
"""``H`` and ``W`` of every network input must be multiples of this (five halvings)."""

_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _check_image(x: object, name: str, channels: int) -> dict[str, int]:
    """Check ``x`` is a ``(B, channels, H, W)`` floating tensor with ``H, W`` multiples of 32.

    Every message names ``name``, what was expected and the received shape (also for a wrong
    dtype, so that the culprit is easy to find among several inputs).
    """
    dims = check_tensor(x, name, ("B", channels, "H", "W"), floating=False)
    assert isinstance(x, torch.Tensor)
    if not x.dtype.is_floating_point:
        raise ValueError(
            f"{name}: expected a floating-point (B, {channels}, H, W) tensor, got dtype "
            f"{x.dtype} with shape {tuple(x.shape)}; convert images with .float() / 255"
        )
    h, w = x.shape[-2:]
    if h <= 0 or w <= 0 or h % DIVISOR or w % DIVISOR:
        raise ValueError(
            f"{name}: expected H and W to be positive multiples of {DIVISOR} (the encoder "
            f"halves the resolution 5 times), got shape {tuple(x.shape)}; resize or crop "
            f"to e.g. ({(max(h, 1) // DIVISOR or 1) * DIVISOR}, "
            f"{(max(w, 1) // DIVISOR or 1) * DIVISOR})"
        )
    return dims


def _check_image_like(x: object, name: str, channels: int) -> dict[str, int]:
    """``(B, channels, h, w)`` floating tensor, any positive ``h, w`` (a feature map)."""
    dims = check_tensor(x, name, ("B", channels, None, None))
    assert isinstance(x, torch.Tensor)
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name}: expected a non-empty feature map, got {tuple(x.shape)}")
    return dims


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (scalars) of ``module``; buffers such as BatchNorm's running
    statistics are not parameters and are not counted.

    With ``trainable_only`` only parameters with ``requires_grad`` count (e.g. after
    freezing an encoder).
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


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
        _check_image(x, "x", self.in_channels)
        f0 = F.relu(self.bn1(self.conv1(x)), inplace=True)
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]


# --------------------------------------------------------------------------------------------
# Depth decoder
# --------------------------------------------------------------------------------------------


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
        dims = _check_image_like(last, "features[4]", self.encoder_channels[4])
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
        return dict(sorted(outputs.items()))


# --------------------------------------------------------------------------------------------
# Full networks
# --------------------------------------------------------------------------------------------


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
        _check_image(left, "left", 3)
        sig = self.decoder(self.encoder(left))
        return {s: self.max_disp_fraction * v for s, v in sig.items()}


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
        if rotation not in _ROTATIONS:
            raise ValueError(f"rotation must be one of {_ROTATIONS}, got {rotation!r}")
        self.n_frames, self.rotation = n_frames, rotation
        self.encoder = ResNetEncoder(depth=depth, width=width, in_channels=3 * n_frames)
        self.pose_conv = nn.Conv2d(self.encoder.channels[-1], 6 * (n_frames - 1), 1)
        self.scale = 0.01

    @staticmethod
    def stack(target: torch.Tensor, sources: Sequence[torch.Tensor]) -> torch.Tensor:
        """``torch.cat([target, *sources], dim=1)``: the input layout :meth:`forward` expects."""
        return torch.cat([target, *sources], dim=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        _check_image(frames, "frames", 3 * self.n_frames)
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
