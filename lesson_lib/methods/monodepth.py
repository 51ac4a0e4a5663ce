"""Monodepth (Godard et al., CVPR 2017): depth from one image, trained on stereo pairs (chapter 06).

The network (:class:`~lesson_lib.models.MonodepthNet`) sees only the **left** image and predicts
two disparity maps, as fractions of the image width, at four scales ``s = 0..3`` (full, 1/2,
1/4, 1/8):

- ``d_l`` (channel 0), aligned with the left image: left pixel ``x`` matches right ``x - d_l``;
- ``d_r`` (channel 1), aligned with the right image: right pixel ``x`` matches left ``x + d_r``.

The loss of the paper, at each scale ``s`` (images reduced to that scale by area averaging,
disparity in pixels ``d · w_s``), summed over the scales::

    C_s = C_ap(left, right_sampled_at_x-d_l) + C_ap(right, left_sampled_at_x+d_r)   appearance
        + 0.1 / 2^s · (smooth(d_l, left) + smooth(d_r, right))                      smoothness
        + 1.0 · (|d_l - d_r(x - d_l)| + |d_r - d_l(x + d_r)|)                        left-right

with ``C_ap = 0.85 · (1 - SSIM) / 2 + 0.15 · |·|`` (chapter 04's :func:`photometric_error`)
and the first-order edge-aware smoothness of the raw disparity fraction (not mean-normalised,
as in the paper). Reconstructions read the other image with border padding, as the paper's
sampler does. **Multi-scale choice**: like the paper, each scale is compared with the images
*downsampled* to that scale (``multiscale="downsample"``); monodepth2's alternative, upsampling
every disparity to full resolution before warping (``multiscale="upsample"``), is available to
compare.

Variants (``MonodepthConfig.variant``) for the ablation:

- ``"lr"``: the full loss above (Monodepth);
- ``"no_lr"``: both appearance terms and the smoothness, no left-right term;
- ``"naive"``: one disparity only (channel 0) used to rebuild the *right* image from the left
  (``right ≈ left(x + d)``), the paper's "naive" baseline: its disparity is aligned with the
  right image, not with the input, so at test time it is off at every depth edge.

Stereo training gives depth in metres: the reconstruction is only right when the disparity in
pixels is the true one, and ``Z = f·B / d`` with the rig's known baseline ``B`` fixes the
scale (no median scaling is needed, unlike the monocular methods of chapters 07 and 09).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_number, check_same_device, check_tensor, value_checks_enabled
from ..images import downsample, resize
from ..losses import photometric_error, smoothness
from ..metrics import depth_metrics
from ..models import MonodepthNet, network_input_size
from ..stereo import disparity_fraction_to_depth, fraction_to_pixels
from ..training import Method, NetworkOptions, StepContext, option
from ..warping import horizontal_sample, stereo_warp

__all__ = [
    "MonodepthConfig",
    "Monodepth",
    "monodepth_loss",
    "left_right_consistency",
    "post_process_weights",
    "post_process",
    "network_disparity",
    "VARIANTS",
]

VARIANTS = ("lr", "no_lr", "naive")


@dataclass
class MonodepthConfig(NetworkOptions):
    """The method's own options (the network and the loss); each becomes a command-line option
    of ``python -m lesson_lib train monodepth``."""

    variant: str = option("lr", "lr: the paper's loss; no_lr: without left-right consistency; "
                          "naive: one disparity, rebuild the right image only", choices=VARIANTS)
    encoder_width: int = option(16, "encoder width: 64 is ResNet-18; 16 trains on a CPU")
    encoder_depth: int = option(18, "encoder depth (18 or 34)", choices=(18, 34))
    max_disp_fraction: float = option(0.3, "largest disparity as a fraction of the width (0.3 * sigmoid)")
    initial_disparity: float = option(0.01, "disparity (fraction of the width) of the untrained network; "
                                      "0: PyTorch's default bias (0.15)")
    alpha: float = option(0.85, "weight of SSIM in the appearance term (the rest is L1)")
    smoothness_weight: float = option(0.1, "edge-aware smoothness weight at full scale (divided by 2^s)")
    left_right_weight: float = option(1.0, "left-right consistency weight (variant lr only)")
    scales: tuple[int, ...] = option((0, 1, 2, 3), "output scales the loss is summed over")
    multiscale: str = option("downsample", "downsample: compare at each scale (paper); upsample: "
                             "upsample disparities to full resolution first (monodepth2)",
                             choices=("downsample", "upsample"))
    input_height: int = option(0, "the network's input height (multiple of 32); images are resized "
                               "to it; 0: the data's own size")
    input_width: int = option(0, "the network's input width (multiple of 32); 0: the data's own size")

    def __post_init__(self) -> None:
        self.check_network_options(nonnegative=("smoothness_weight", "left_right_weight"))
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"MonodepthConfig.alpha must be in [0, 1], got {self.alpha}")

    LEGACY_NAMES: ClassVar[dict[str, str]] = {"lr_weight": "left_right_weight"}
    """Old field names still read from weights files written before the rename."""


# --------------------------------------------------------------------------------------------
# The loss


def left_right_consistency(d_left: torch.Tensor, d_right: torch.Tensor) -> torch.Tensor:
    """Monodepth's left-right term for one scale: ``mean|d_l - d_r(x - d_l)| + mean|d_r - d_l(x + d_r)|``.

    Args:
        d_left, d_right: ``(B, 1, h, w)`` disparities as fractions of the width ``w``.

    The right disparity map is *sampled at the left map's match* (chapter 03's stereo warp
    applied to a disparity map instead of an image): where the two views agree, the left
    disparity at ``x`` equals the right disparity at ``x - d_l``.
    """
    dims = check_tensor(d_left, "d_left", ("B", 1, "H", "W"))
    check_tensor(d_right, "d_right", ("B", 1, "H", "W"), dims=dims)
    w = d_left.shape[-1]
    r_at_l, _ = stereo_warp(d_right, fraction_to_pixels(d_left, w), "right", padding_mode="border")
    l_at_r, _ = stereo_warp(d_left, fraction_to_pixels(d_right, w), "left", padding_mode="border")
    return (d_left - r_at_l).abs().mean() + (d_right - l_at_r).abs().mean()


def monodepth_loss(
    disparities: Mapping[int, torch.Tensor],
    left: torch.Tensor,
    right: torch.Tensor,
    config: MonodepthConfig | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Monodepth's training loss (see the module doc) and its terms summed over scales.

    Args:
        disparities: ``{s: (B, 2, H / 2**s, W / 2**s)}`` from :class:`MonodepthNet`, fractions
            of the width (channel 0 left-aligned, channel 1 right-aligned).
        left, right: ``(B, 3, H, W)`` the rectified pair in ``[0, 1]``.
        config: the variant and weights (default :class:`MonodepthConfig()`).

    Returns:
        ``(loss, {"appearance", "smoothness", "left_right"})``; the terms are detached.
    """
    cfg = config or MonodepthConfig()
    dims = check_tensor(left, "left", ("B", 3, "H", "W"))
    check_tensor(right, "right", ("B", 3, "H", "W"), dims=dims)
    check_same_device(left=left, right=right)
    if not disparities:
        raise ValueError("disparities is empty: expected {scale: (B, 2, h, w)}")
    H, W = left.shape[-2:]
    b = left.shape[0]
    # Both views at once: every term of the loss comes in a left and a right version of the same
    # shape, so the two are stacked along the batch ([left views; right views], 2B) and each
    # scale costs one warp, one SSIM and one smoothness call instead of two of each (on a GPU
    # a step of few large kernels instead of many small ones). A mean over the stacked batch is
    # the average of the two views' means, hence the factors 2.
    images = torch.cat([left, right])  # targets (2B, 3, H, W)
    zero = left.new_zeros(())
    ap_sum, sm_sum, lr_sum = zero, zero, zero
    for s in cfg.scales:
        if s not in disparities:
            raise ValueError(f"no disparity at scale {s}; the network gave scales {sorted(disparities)}")
        own = disparities[s].float()
        check_tensor(own, f"disparities[{s}]", (b, 2, None, None))
        if value_checks_enabled() and not bool((torch.isfinite(own) & (own >= 0)).all()):
            raise ValueError(f"disparities[{s}] must be finite and >= 0 (left x matches right x - d)")
        factor = H // own.shape[-2]
        # the smoothness always sees the disparity at its own scale with the images reduced to it
        # (monodepth2 does the same when it upsamples for the reconstruction)
        images_own = downsample(images, factor)  # area averaging, as chapter 05
        disp = own
        if cfg.multiscale == "upsample" and s > 0:
            disp = F.interpolate(own, size=(H, W), mode="bilinear", align_corners=False)
        h, w = disp.shape[-2:]
        targets = images_own if h == own.shape[-2] else images
        if cfg.variant == "naive":
            # one disparity, aligned with the right image: rebuild the right image from the left
            right_est, _ = stereo_warp(targets[:b], fraction_to_pixels(disp[:, :1], w), "left", padding_mode="border")
            ap = photometric_error(right_est, targets[b:], cfg.alpha, reduction="mean")
            sm = smoothness(own[:, :1], images_own[b:], normalize=False)
            ap_sum, sm_sum = ap_sum + ap, sm_sum + sm / 2**s
            continue
        d = torch.cat([disp[:, :1], disp[:, 1:2]])  # (2B, 1, h, w): d_l for the left views, d_r for the right
        # the left view reads the right image (and d_r) at x - d_l, the right view the left at x + d_r;
        # the disparity rides along as a fourth channel: the left-right term samples it at the same points
        sources = torch.cat([targets, d], dim=1).roll(b, dims=0)  # [right, d_r; left, d_l]
        shift = fraction_to_pixels(torch.cat([-disp[:, :1], disp[:, 1:2]]), w)
        warped, _ = horizontal_sample(sources, shift, padding_mode="border")
        ap = 2 * photometric_error(warped[:, :3], targets, cfg.alpha, reduction="mean")
        own_both = torch.cat([own[:, :1], own[:, 1:2]])
        sm = 2 * smoothness(own_both, images_own, normalize=False)
        lr = 2 * (d - warped[:, 3:]).abs().mean() if cfg.variant == "lr" else zero
        ap_sum = ap_sum + ap
        sm_sum = sm_sum + sm / 2**s
        lr_sum = lr_sum + lr
    loss = ap_sum + cfg.smoothness_weight * sm_sum
    if cfg.variant == "lr":
        loss = loss + cfg.left_right_weight * lr_sum
    return loss, {"appearance": ap_sum.detach(), "smoothness": sm_sum.detach(), "left_right": lr_sum.detach()}


# --------------------------------------------------------------------------------------------
# Inference: post-processing and depth


def post_process_weights(width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """The two ramps of Monodepth's post-processing, each ``(1, 1, 1, width)``.

    With ``x = u / (W - 1)`` in ``[0, 1]``: ``l = 1 - clip(20·(x - 0.05), 0, 1)`` is 1 on the
    left 5 % of the image, falls linearly to 0 at 10 %, and is 0 beyond; ``r`` is its mirror.
    """
    width = check_number(width, "width", integer=True)
    if width < 2:
        raise ValueError(f"width must be >= 2, got {width}")
    x = torch.linspace(0, 1, width, device=device, dtype=dtype)
    l_mask = 1 - (20 * (x - 0.05)).clamp(0, 1)
    return l_mask.view(1, 1, 1, width), l_mask.flip(-1).view(1, 1, 1, width)


def post_process(disp: torch.Tensor, disp_flipped: torch.Tensor) -> torch.Tensor:
    """Blend a prediction with the prediction of the mirrored image (Monodepth's post-processing).

    Args:
        disp: ``(B, 1, H, W)`` left disparity of the image.
        disp_flipped: ``(B, 1, H, W)`` left disparity predicted for the horizontally mirrored
            image, *as the network gave it* (still mirrored; it is flipped back here).

    The left edge of a left image holds pixels the right camera never saw (disocclusions):
    the network has nothing to match there and its disparity ramps up falsely. In the mirrored
    image those pixels are on the right edge, where predictions are sound. So the result takes
    the mirrored prediction on the left 5 % of the image, the plain one on the right 5 %, blends
    linearly over the next 5 % and averages the two everywhere else::

        out = r · d + l · d_flip_back + (1 - l - r) · (d + d_flip_back) / 2
    """
    dims = check_tensor(disp, "disp", ("B", 1, "H", "W"))
    check_tensor(disp_flipped, "disp_flipped", ("B", 1, "H", "W"), dims=dims)
    check_same_device(disp=disp, disp_flipped=disp_flipped)
    back = disp_flipped.flip(-1)
    l_mask, r_mask = post_process_weights(disp.shape[-1], disp.device, disp.dtype)
    mean = 0.5 * (disp + back)
    return r_mask * disp + l_mask * back + (1 - l_mask - r_mask) * mean


@torch.no_grad()
def network_disparity(
    model: nn.Module,
    image: torch.Tensor,
    post_processing: bool = False,
    size: tuple[int, int] | None = None,
    channel: int = 0,
) -> torch.Tensor:
    """Left disparity of ``image`` as a **fraction of the width**, ``(B, 1, H, W)``.

    The network runs at ``size`` (the size it was trained at: ``config.input_size``), or by
    default at the nearest size whose sides are multiples of 32, and the result is resized
    back to the image's size (a fraction of the width does not change with the width; the
    images of a rig resized by different factors in x and y keep their disparity fractions
    too). With ``post_processing``
    the mirrored image is predicted too and the two are blended (:func:`post_process`).
    """
    check_tensor(image, "image", ("B", 3, "H", "W"))
    param = next(model.parameters())
    if image.device != param.device:
        raise ValueError(f"image is on {image.device} but the model on {param.device}")
    was_training = model.training
    model.eval()
    try:
        x = resize(image.to(param.dtype), size or network_input_size(*image.shape[-2:]))
        disp = model(x)[0][:, channel : channel + 1]
        if post_processing:
            disp = post_process(disp, model(x.flip(-1))[0][:, channel : channel + 1])
        if tuple(disp.shape[-2:]) != tuple(image.shape[-2:]):
            disp = F.interpolate(disp, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)
    finally:
        model.train(was_training)
    return disp.float()


# --------------------------------------------------------------------------------------------
# The method for the trainer


class Monodepth(Method):
    """Monodepth for :class:`~lesson_lib.training.Trainer`: batches of
    :class:`~lesson_lib.data.StereoDataset` (``left``, ``right``, and for validation ``depth``,
    ``K``, ``baseline``). Depth comes out in metres (the rig's baseline fixes the scale)."""

    name: ClassVar[str] = "monodepth"
    config_class: ClassVar[type] = MonodepthConfig
    metric_depth: ClassVar[bool] = True

    def describe(self) -> str:
        """The name and the variant, e.g. ``"monodepth (lr)"``."""
        return f"{self.name} ({self.config.variant})"

    def __init__(self, config: MonodepthConfig | None = None) -> None:
        self.config = config or MonodepthConfig()

    def build_model(self) -> nn.Module:
        c = self.config
        return MonodepthNet(width=c.encoder_width, max_disp_fraction=c.max_disp_fraction, scales=(0, 1, 2, 3),
                            depth=c.encoder_depth, initial_disparity=c.initial_disparity or None)

    def loss(
        self, model: nn.Module, batch: Mapping[str, Any], ctx: StepContext | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        for key in ("left", "right"):
            if key not in batch:
                raise KeyError(f"Monodepth needs batches with 'left' and 'right' images; {key!r} is missing")
        size = self.config.input_size
        left, right = resize(batch["left"], size), resize(batch["right"], size)
        loss, terms = monodepth_loss(model(left), left, right, self.config)
        return loss, terms

    def predict_disparity(self, model: nn.Module, image: torch.Tensor, *, post_processing: bool = False) -> torch.Tensor:
        """Left disparity as a fraction of the width (:func:`network_disparity` at the trained size)."""
        return network_disparity(model, image, post_processing=post_processing, size=self.config.input_size)

    def predict_depth(
        self,
        model: nn.Module,
        image: torch.Tensor,
        K: torch.Tensor | None = None,
        baseline: torch.Tensor | None = None,
        *,
        post_processing: bool = False,
        max_depth: float = 100.0,
    ) -> torch.Tensor:
        """Depth in metres, ``Z = f_x · B / (d · W)``; needs the rig's ``baseline``."""
        if K is None or baseline is None:
            raise ValueError("Monodepth's depth needs the intrinsics K (its focal length) and the stereo baseline "
                             "(metres) of the rig it was trained on")
        disp = self.predict_disparity(model, image, post_processing=post_processing)
        focal = K[:, 0, 0].to(disp.device)
        return disparity_fraction_to_depth(disp, focal, torch.as_tensor(baseline).to(disp.device), max_depth=max_depth)

    def validate(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, float]:
        depth = self.predict_depth(model, batch["left"], batch["K"], batch["baseline"])
        m = depth_metrics(depth, batch["depth"])
        m["abs_rel_median"] = depth_metrics(depth, batch["depth"], median_scaling=True)["abs_rel"]
        return m
