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

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_number, check_same_device, check_tensor, value_checks_enabled
from ..images import downsample, resize
from ..losses import photometric_error, smoothness, ssim_from_means, window_mean3
from ..metrics import depth_metrics
from ..models import MonodepthNet, network_input_size
from ..stereo import disparity_fraction_to_depth, fraction_to_pixels
from ..training import Method, NetworkOptions, StepContext, option
from ..warping import horizontal_sample, stereo_warp

__all__ = [
    "MonodepthConfig",
    "Monodepth",
    "monodepth_loss",
    "monodepth_loss_per_scale",
    "packed_monodepth_loss",
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
    loss_layout: str = option("auto", "how the loss visits the scales (the same loss to float32 rounding): "
                              "packed, all scales at once (few large operations: a GPU's choice); per_scale, one "
                              "after another (faster on a CPU); auto: packed on a GPU, per_scale on the CPU",
                              choices=("auto", "packed", "per_scale"))

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

    ``config.loss_layout`` chooses how: :func:`packed_monodepth_loss` computes the paper's loss
    (variants ``lr`` and ``no_lr``, each scale compared with the images reduced to it) on all
    scales at once, a step of a few large operations (on a GPU, few kernel launches: 769
    operations forward and backward at 128x416 against 3,126 scale by scale and view by view);
    :func:`monodepth_loss_per_scale` computes the same numbers scale by scale, as the module doc
    writes them, and serves the other options; on a CPU it is the faster one (the packed loss's
    gathers cost more there). ``auto``: packed on a GPU, per scale on the CPU.

    Args:
        disparities: ``{s: (B, 2, H / 2**s, W / 2**s)}`` from :class:`MonodepthNet`, fractions
            of the width (channel 0 left-aligned, channel 1 right-aligned).
        left, right: ``(B, 3, H, W)`` the rectified pair in ``[0, 1]``.
        config: the variant and weights (default :class:`MonodepthConfig()`).

    Returns:
        ``(loss, {"appearance", "smoothness", "left_right"})``; the terms are detached.
    """
    cfg = config or MonodepthConfig()
    packed = cfg.loss_layout == "packed" or (cfg.loss_layout == "auto" and left.device.type != "cpu")
    if packed and _packable(disparities, left, cfg):
        return packed_monodepth_loss(disparities, left, right, cfg)
    return monodepth_loss_per_scale(disparities, left, right, cfg)


def monodepth_loss_per_scale(
    disparities: Mapping[int, torch.Tensor],
    left: torch.Tensor,
    right: torch.Tensor,
    config: MonodepthConfig | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Monodepth's training loss (see the module doc) and its terms summed over scales, one
    scale after another; arguments and result as :func:`monodepth_loss`."""
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


def _packable(disparities: Mapping[int, torch.Tensor], left: torch.Tensor, cfg: MonodepthConfig) -> bool:
    """Whether :func:`packed_monodepth_loss` computes this loss: the paper's comparison at each
    scale (not ``naive``, not ``upsample``), every scale present with at least 2 x 2 pixels and
    the size ``downsample`` gives."""
    if cfg.variant == "naive" or cfg.multiscale != "downsample" or left.ndim != 4:
        return False
    H, W = left.shape[-2:]
    for s in cfg.scales:
        d = disparities.get(s)
        if d is None or d.ndim != 4 or d.shape[-2] < 2 or d.shape[-1] < 2 or H % d.shape[-2]:
            return False
        f = H // d.shape[-2]
        if tuple(d.shape[-2:]) != (max(1, round(H / f)), max(1, round(W / f))):
            return False
    return True


@functools.lru_cache(maxsize=8)
def _layout(sizes: tuple[tuple[int, int, int], ...], device: str, dtype: torch.dtype) -> dict[str, Any]:
    """Index maps of the scales' pixels laid end to end, row by row (scale ``sizes[0]``'s first,
    ``sizes = ((s, h, w), ...)``): for each pixel its column, its row's first index, its scale's
    width and the weights of the terms; the neighbours the smoothness differences use; and a
    canvas on which the scales are stacked, each framed by its own one-pixel reflection, for
    SSIM's 3 x 3 windows (the interior map reads the windows' means back).

    Built on ``device`` from sizes alone (cached per sizes, device and dtype; under
    ``torch.compile`` traced as device-side constants: nothing is copied from the host)."""
    dev = torch.device(device)
    wc = max(w for _, _, w in sizes) + 2
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("col", "row0", "width", "w_mean", "nbr_x", "w_x", "nbr_y",
                                                             "w_y", "canvas", "interior")}
    offset, top = 0, 0
    for s, h, w in sizes:
        n = h * w
        flat = torch.arange(n, device=dev)
        r, c = flat // w, flat % w
        ones = torch.ones(n, dtype=dtype, device=dev)
        has_x, has_y = (c < w - 1).to(dtype), (r < h - 1).to(dtype)
        parts["col"].append(c.to(dtype))
        parts["row0"].append((offset + r * w).to(dtype))
        parts["width"].append(ones * w)
        parts["w_mean"].append(ones / n)
        parts["nbr_x"].append(offset + flat + (c < w - 1).long())
        parts["w_x"].append(has_x / (h * (w - 1) * 2**s))
        parts["nbr_y"].append(offset + flat + w * (r < h - 1).long())
        parts["w_y"].append(has_y / ((h - 1) * w * 2**s))
        # the canvas rows of this scale: rows -1..h and columns -1..w, reflected into the scale
        rr = (torch.arange(-1, h + 1, device=dev)).abs()
        rr = torch.where(rr > h - 1, 2 * (h - 1) - rr, rr)
        cc = (torch.arange(-1, wc - 1, device=dev)).abs().clamp(max=w)  # columns past w + 1 are never read
        cc = torch.where(cc > w - 1, 2 * (w - 1) - cc, cc)
        parts["canvas"].append((offset + rr[:, None] * w + cc[None, :]).flatten())
        parts["interior"].append((top + r) * (wc - 2) + c)  # the window-mean grid: (rows - 2, wc - 2)
        offset += n
        top += h + 2
    lay: dict[str, Any] = {k: torch.cat(v) for k, v in parts.items()}
    lay["hi"], lay["hi0"] = lay["width"] - 1, lay["width"] - 2
    lay["canvas_size"] = (top, wc)
    return lay


def _sample_rows(source: torch.Tensor, shift: torch.Tensor, lay: dict[str, Any]) -> torch.Tensor:
    """:func:`~lesson_lib.warping.horizontal_sample` with border padding for pixels laid end to
    end (``source (N2, C, N)``, ``shift (N2, 1, N)`` in pixels of each pixel's own scale): each
    pixel reads its row at ``x + shift``, clamped to the row (the border), linearly."""
    u = torch.minimum((lay["col"] + shift).clamp(min=0), lay["hi"])
    i0 = torch.minimum(u.detach().floor(), lay["hi0"])
    frac = u - i0
    idx0 = (lay["row0"] + i0).long().expand(-1, source.shape[1], -1)
    v0 = source.gather(2, idx0)
    v1 = source.gather(2, idx0 + 1)
    return torch.lerp(v0, v1, frac)


def packed_monodepth_loss(
    disparities: Mapping[int, torch.Tensor],
    left: torch.Tensor,
    right: torch.Tensor,
    config: MonodepthConfig | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`monodepth_loss_per_scale` with every scale at once: the scales' pixels are laid
    end to end (``(2B, C, N)``, both views stacked along the batch), so the warp, SSIM, L1, the
    smoothness and the left-right term each run once for all scales, with index maps that keep
    every scale's borders (the warp clamps to its own rows, SSIM's windows see its own
    reflection, the smoothness differences stay inside it) and weights that make each term the
    sum over scales of per-scale means. Equal to the per-scale loss to float32 rounding (tested)."""
    cfg = config or MonodepthConfig()
    dims = check_tensor(left, "left", ("B", 3, "H", "W"))
    check_tensor(right, "right", ("B", 3, "H", "W"), dims=dims)
    check_same_device(left=left, right=right)
    b = left.shape[0]
    for s in cfg.scales:
        if s not in disparities:
            raise ValueError(f"disparities: no disparity at scale {s}; the network gave scales {sorted(disparities)}")
        check_tensor(disparities[s], f"disparities[{s}]", (b, 2, None, None))
    if not _packable(disparities, left, cfg):
        raise ValueError("packed_monodepth_loss computes the paper's per-scale comparison (config: variant lr or "
                         "no_lr, multiscale 'downsample'; disparities of at least 2 x 2 at the sizes the images "
                         "reduce to): use monodepth_loss")
    H = left.shape[-2]
    dtype = torch.float64 if disparities[cfg.scales[0]].dtype == torch.float64 else torch.float32  # float64 for tests
    own = [disparities[s].to(dtype) for s in cfg.scales]
    for s, d in zip(cfg.scales, own):
        check_tensor(d, f"disparities[{s}]", (b, 2, None, None))
        if value_checks_enabled() and not bool((torch.isfinite(d) & (d >= 0)).all()):
            raise ValueError(f"disparities[{s}] must be finite and >= 0 (left x matches right x - d)")
    sizes = tuple((s, d.shape[-2], d.shape[-1]) for s, d in zip(cfg.scales, own))
    lay = _layout(sizes, str(left.device), dtype)
    images = torch.cat([left, right])  # (2B, 3, H, W): [left views; right views]
    targets = torch.cat([downsample(images, H // h).flatten(2) for _, h, _ in sizes], dim=2)  # (2B, 3, N)
    D = torch.cat([d.flatten(2) for d in own], dim=2)  # (B, 2, N)
    d = torch.cat([D[:, :1], D[:, 1:]])  # (2B, 1, N): d_l for the left views, d_r for the right
    # the left view reads the right image (and d_r) at x - d_l, the right view the left at x + d_r
    shift = torch.cat([-D[:, :1], D[:, 1:]]) * lay["width"]
    warped = _sample_rows(torch.cat([targets, d], dim=1).roll(b, dims=0), shift, lay)
    pred = warped[:, :3]
    per_pixel = (pred - targets).abs().mean(1)  # (2B, N)
    if cfg.alpha > 0:
        x, y = pred, targets
        stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (2B, 15, N)
        canvas = stats.index_select(2, lay["canvas"]).unflatten(2, lay["canvas_size"])
        means = window_mean3(canvas).flatten(2).index_select(2, lay["interior"])
        dssim = ((1 - ssim_from_means(*means.split(3, dim=1))) / 2).clamp(0, 1).mean(1)
        per_pixel = cfg.alpha * dssim + (1 - cfg.alpha) * per_pixel
    # each scale's mean over both views counted twice (the per-scale loss's factor 2): 1 / (B n_s)
    ap_sum = (per_pixel * lay["w_mean"]).sum() / b
    grad_img_x = (targets.index_select(2, lay["nbr_x"]) - targets).abs().mean(1)
    grad_img_y = (targets.index_select(2, lay["nbr_y"]) - targets).abs().mean(1)
    dd = d[:, 0]
    gx = (dd.index_select(1, lay["nbr_x"]) - dd).abs() * torch.exp(-grad_img_x)
    gy = (dd.index_select(1, lay["nbr_y"]) - dd).abs() * torch.exp(-grad_img_y)
    sm_sum = ((gx * lay["w_x"]).sum() + (gy * lay["w_y"]).sum()) / b
    zero = left.new_zeros(())
    lr_sum = ((d - warped[:, 3:]).abs()[:, 0] * lay["w_mean"]).sum() / b if cfg.variant == "lr" else zero
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
