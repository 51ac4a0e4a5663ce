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

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_same_device, check_tensor
from .losses import photometric_error, smoothness
from .metrics import depth_metrics
from .models import MonodepthNet
from .stereo import depth_to_disparity, disparity_to_depth, fraction_to_pixels, pixels_to_fraction
from .stereo_opt import downsample
from .training import CheckpointError, Method, _field, load_checkpoint, save_checkpoint
from .warping import stereo_warp

__all__ = [
    "MonodepthConfig",
    "Monodepth",
    "monodepth_loss",
    "left_right_consistency",
    "post_process_weights",
    "post_process",
    "predict_disparity",
    "disparity_fraction_to_depth",
    "depth_to_disparity_fraction",
    "load_model",
    "resize_images",
    "evaluate",
    "export_weights",
    "WEIGHTS_FORMAT",
]

VARIANTS = ("lr", "no_lr", "naive")


@dataclass
class MonodepthConfig:
    """The method's own options (the network and the loss); each becomes a command-line option
    of ``python -m lesson_lib train monodepth``."""

    variant: str = _field("lr", "lr: the paper's loss; no_lr: without left-right consistency; "
                          "naive: one disparity, rebuild the right image only", choices=VARIANTS)
    encoder_width: int = _field(16, "encoder width: 64 is ResNet-18; 16 trains on a CPU")
    encoder_depth: int = _field(18, "encoder depth (18 or 34)", choices=(18, 34))
    max_disp_fraction: float = _field(0.3, "largest disparity as a fraction of the width (0.3 * sigmoid)")
    initial_disparity: float = _field(0.01, "disparity (fraction of the width) of the untrained network; "
                                      "0: PyTorch's default bias (0.15)")
    alpha: float = _field(0.85, "weight of SSIM in the appearance term (the rest is L1)")
    smoothness_weight: float = _field(0.1, "edge-aware smoothness weight at full scale (divided by 2^s)")
    lr_weight: float = _field(1.0, "left-right consistency weight (variant lr only)")
    scales: tuple[int, ...] = _field((0, 1, 2, 3), "output scales the loss is summed over")
    multiscale: str = _field("downsample", "downsample: compare at each scale (paper); upsample: "
                             "upsample disparities to full resolution first (monodepth2)",
                             choices=("downsample", "upsample"))
    input_height: int = _field(0, "the network's input height (multiple of 32); images are resized "
                               "to it; 0: the data's own size")
    input_width: int = _field(0, "the network's input width (multiple of 32); 0: the data's own size")

    def __post_init__(self) -> None:
        self.scales = tuple(int(s) for s in self.scales)
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise ValueError(f"MonodepthConfig.{f.name} must be one of {choices}, got {getattr(self, f.name)!r}")
        if self.encoder_width < 1:
            raise ValueError(f"MonodepthConfig.encoder_width must be >= 1, got {self.encoder_width}")
        if (self.input_height == 0) != (self.input_width == 0):
            raise ValueError("MonodepthConfig: give both input_height and input_width, or neither")
        for name in ("input_height", "input_width"):
            v = getattr(self, name)
            if v < 0 or v % 32:
                raise ValueError(f"MonodepthConfig.{name} must be 0 or a positive multiple of 32, got {v}")
        if not self.scales or list(self.scales) != sorted(set(self.scales)) or self.scales[0] != 0 or self.scales[-1] > 3:
            raise ValueError(f"MonodepthConfig.scales must be increasing, start at 0 and stay <= 3, got {self.scales}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"MonodepthConfig.alpha must be in [0, 1], got {self.alpha}")
        for name in ("smoothness_weight", "lr_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"MonodepthConfig.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def input_size(self) -> tuple[int, int] | None:
        """``(height, width)`` the network runs at, or None for the data's own size."""
        return (self.input_height, self.input_width) if self.input_height else None


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
    zero = left.new_zeros(())
    ap_sum, sm_sum, lr_sum = zero, zero, zero
    for s in cfg.scales:
        if s not in disparities:
            raise ValueError(f"no disparity at scale {s}; the network gave scales {sorted(disparities)}")
        disp = disparities[s].float()
        check_tensor(disp, f"disparities[{s}]", (left.shape[0], 2, None, None))
        if cfg.multiscale == "upsample" and s > 0:
            disp = F.interpolate(disp, size=(H, W), mode="bilinear", align_corners=False)
        h, w = disp.shape[-2:]
        L, R = downsample(left, H // h), downsample(right, H // h)  # area averaging, as chapter 05
        d_l, d_r = disp[:, :1], disp[:, 1:2]
        if cfg.variant == "naive":
            right_est, _ = stereo_warp(L, fraction_to_pixels(d_l, w), "left", padding_mode="border")
            ap = photometric_error(right_est, R, cfg.alpha, reduction="mean")
            sm = smoothness(d_l, R, normalize=False)
            lr = zero
        else:
            left_est, _ = stereo_warp(R, fraction_to_pixels(d_l, w), "right", padding_mode="border")
            right_est, _ = stereo_warp(L, fraction_to_pixels(d_r, w), "left", padding_mode="border")
            ap = photometric_error(left_est, L, cfg.alpha, reduction="mean") + photometric_error(
                right_est, R, cfg.alpha, reduction="mean"
            )
            sm = smoothness(d_l, L, normalize=False) + smoothness(d_r, R, normalize=False)
            lr = left_right_consistency(d_l, d_r) if cfg.variant == "lr" else zero
        ap_sum = ap_sum + ap
        sm_sum = sm_sum + sm / 2**s
        lr_sum = lr_sum + lr
    loss = ap_sum + cfg.smoothness_weight * sm_sum
    if cfg.variant == "lr":
        loss = loss + cfg.lr_weight * lr_sum
    return loss, {"appearance": ap_sum.detach(), "smoothness": sm_sum.detach(), "left_right": lr_sum.detach()}


# --------------------------------------------------------------------------------------------
# Inference: post-processing and depth


def post_process_weights(width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """The two ramps of Monodepth's post-processing, each ``(1, 1, 1, width)``.

    With ``x = u / (W - 1)`` in ``[0, 1]``: ``l = 1 - clip(20·(x - 0.05), 0, 1)`` is 1 on the
    left 5 % of the image, falls linearly to 0 at 10 %, and is 0 beyond; ``r`` is its mirror.
    """
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


def resize_images(image: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """``image`` resized to ``size`` (bilinear with antialiasing); unchanged if already that size
    or ``size`` is None. A disparity *fraction* of the width needs no change under resizing."""
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def _network_size(image: torch.Tensor, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        return tuple(size)
    h, w = image.shape[-2:]
    return (max(32, round(h / 32) * 32), max(32, round(w / 32) * 32))


@torch.no_grad()
def predict_disparity(
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
        x = resize_images(image.to(param.dtype), _network_size(image, size))
        disp = model(x)[0][:, channel : channel + 1]
        if post_processing:
            disp = post_process(disp, model(x.flip(-1))[0][:, channel : channel + 1])
        if tuple(disp.shape[-2:]) != tuple(image.shape[-2:]):
            disp = F.interpolate(disp, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)
    finally:
        model.train(was_training)
    return disp.float()


def disparity_fraction_to_depth(
    disp: torch.Tensor, K: torch.Tensor, baseline: torch.Tensor | float, min_depth: float = 0.1, max_depth: float = 100.0
) -> torch.Tensor:
    """Metric depth ``Z = f_x · B / (d · W)`` from a disparity fraction, per image.

    Args:
        disp: ``(B, 1, H, W)`` disparity as a fraction of the width ``W``.
        K: ``(B, 3, 3)`` intrinsics at this resolution; ``baseline``: ``(B,)`` or a number, metres.
    """
    check_tensor(disp, "disp", ("B", 1, "H", "W"))
    check_tensor(K, "K", (disp.shape[0], 3, 3))
    b = torch.as_tensor(baseline, dtype=torch.float64).flatten()
    if b.numel() == 1:
        b = b.expand(disp.shape[0])
    if b.numel() != disp.shape[0]:
        raise ValueError(f"baseline must be one number or one per image ({disp.shape[0]}), got {b.numel()}")
    W = disp.shape[-1]
    return torch.cat(
        [
            disparity_to_depth(fraction_to_pixels(disp[i : i + 1], W), float(K[i, 0, 0]), float(b[i]), min_depth=min_depth, max_depth=max_depth)
            for i in range(disp.shape[0])
        ]
    )


def depth_to_disparity_fraction(
    depth: torch.Tensor, K: torch.Tensor, baseline: torch.Tensor | float
) -> torch.Tensor:
    """The true disparity, as a fraction of the width, of a ground-truth depth map:
    ``f_x · B / (Z · W)`` per image; pixels without depth (``Z <= 0``, e.g. the synthetic
    world's sky) are infinitely far and get 0.

    Args:
        depth: ``(B, 1, H, W)`` z-depth in metres (0 where unknown).
        K: ``(B, 3, 3)`` intrinsics at this resolution; ``baseline``: ``(B,)`` or a number, metres.
    """
    check_tensor(depth, "depth", ("B", 1, "H", "W"))
    check_tensor(K, "K", (depth.shape[0], 3, 3))
    b = torch.as_tensor(baseline, dtype=torch.float64).flatten()
    if b.numel() == 1:
        b = b.expand(depth.shape[0])
    if b.numel() != depth.shape[0]:
        raise ValueError(f"baseline must be one number or one per image ({depth.shape[0]}), got {b.numel()}")
    W = depth.shape[-1]
    out = torch.zeros_like(depth)
    for i in range(depth.shape[0]):
        known = depth[i] > 0
        d = depth_to_disparity(depth[i][known], float(K[i, 0, 0]), float(b[i]))
        out[i][known] = pixels_to_fraction(d, W)
    return out


# --------------------------------------------------------------------------------------------
# The method for the trainer


class Monodepth(Method):
    """Monodepth for :class:`~lesson_lib.training.Trainer`: batches of
    :class:`~lesson_lib.data.StereoDataset` (``left``, ``right``, and for validation ``depth``,
    ``K``, ``baseline``)."""

    name = "monodepth"

    def __init__(self, config: MonodepthConfig | None = None) -> None:
        self.config = config or MonodepthConfig()

    def build_model(self) -> nn.Module:
        c = self.config
        return MonodepthNet(width=c.encoder_width, max_disp_fraction=c.max_disp_fraction, scales=(0, 1, 2, 3),
                            depth=c.encoder_depth, initial_disparity=c.initial_disparity or None)

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        for key in ("left", "right"):
            if key not in batch:
                raise KeyError(f"Monodepth needs batches with 'left' and 'right' images; {key!r} is missing")
        size = self.config.input_size
        left, right = resize_images(batch["left"], size), resize_images(batch["right"], size)
        loss, terms = monodepth_loss(model(left), left, right, self.config)
        return loss, terms

    def validate(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, float]:
        disp = predict_disparity(model, batch["left"], size=self.config.input_size)
        depth = disparity_fraction_to_depth(disp, batch["K"], batch["baseline"])
        m = depth_metrics(depth, batch["depth"])
        m["abs_rel_median"] = depth_metrics(depth, batch["depth"], median_scaling=True)["abs_rel"]
        return m


# --------------------------------------------------------------------------------------------
# Weights


WEIGHTS_FORMAT = 1
"""Format of the small weights files (:func:`export_weights`)."""


def export_weights(
    checkpoint: str | os.PathLike, out: str | os.PathLike, *, half: bool = True, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write the model of a training checkpoint as a small weights file (no optimizer state;
    float16 with ``half``, which halves the size): ``{"format_version", "method",
    "method_config", "model", "meta"}``. Returns the path."""
    state = load_checkpoint(checkpoint, required=("method", "model", "method_config"))
    model = {k: (v.half() if half and v.is_floating_point() else v) for k, v in state["model"].items()}
    info = {"step": state.get("step"), "train_config": state.get("config"), "elapsed_s": state.get("elapsed")}
    info.update(meta or {})
    return save_checkpoint(
        out,
        {"format_version": 1, "weights_format": WEIGHTS_FORMAT, "method": state["method"],
         "method_config": state["method_config"], "model": model, "meta": info},
    )


def load_model(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[MonodepthNet, MonodepthConfig, dict[str, Any]]:
    """A trained Monodepth network from a training checkpoint (``latest.pt``) or a weights
    file (:func:`export_weights`), in eval mode on ``device``, in float32.

    Returns ``(model, config, meta)``.

    Raises:
        CheckpointNotFoundError / CheckpointError: missing, corrupt, of another method, or not
            matching the network its configuration describes (the message names the path).
    """
    state = load_checkpoint(path, required=("method", "model", "method_config"), method="monodepth")
    raw = state["method_config"]
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: method_config is a {type(raw).__name__}, not a dict")
    known = {f.name for f in dataclasses.fields(MonodepthConfig)}
    try:
        config = MonodepthConfig(**{k: v for k, v in raw.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid method_config: {exc}") from exc
    model = Monodepth(config).build_model()
    load_checkpoint(path, model, required=("method", "model", "method_config"), method="monodepth")
    model = model.float().to(device).eval()
    meta = dict(state.get("meta") or {})
    return model, config, meta



# --------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    config: MonodepthConfig,
    dataset: Any,
    batch_size: int = 8,
    post_processing: tuple[bool, ...] = (False, True),
    max_depth: float = 80.0,
) -> dict[str, dict[str, float]]:
    """The seven depth metrics of ``model`` on a stereo dataset (items with ``left``, ``depth``,
    ``K``, ``baseline``), per image then averaged, up to ``max_depth`` metres.

    Returns ``{label: metrics}`` for ``"metres"`` (the network's own scale, from the baseline)
    and ``"median-scaled"``, each without and with the flip post-processing (``" + pp"``).
    """
    from torch.utils.data import DataLoader

    from .metrics import average_metrics

    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    device = next(model.parameters()).device
    rows: dict[str, list[dict[str, float]]] = {}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        left, gt = batch["left"].to(device), batch["depth"].to(device)
        for pp in post_processing:
            disp = predict_disparity(model, left, post_processing=pp, size=config.input_size)
            depth = disparity_fraction_to_depth(disp, batch["K"], batch["baseline"], max_depth=max(100.0, max_depth))
            suffix = " + pp" if pp else ""
            rows.setdefault("metres" + suffix, []).extend(depth_metrics(depth, gt, max_depth=max_depth, per_image=True))
            rows.setdefault("median-scaled" + suffix, []).extend(
                depth_metrics(depth, gt, max_depth=max_depth, median_scaling=True, per_image=True)
            )
    order = [f"{kind}{s}" for kind in ("metres", "median-scaled") for s in ("", " + pp")]
    return {k: average_metrics(rows[k]) for k in order if k in rows}
