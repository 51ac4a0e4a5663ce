"""TrianFlow (Zhao et al., CVPR 2020, "Towards Better Generalization: Joint Depth-Pose Learning
without PoseNet"), chapter 09: its first stage, optical flow learnt without labels.

The flow network (:class:`~lesson_lib.models.FlowNet`, PWC-style) sees two consecutive frames
and predicts the forward flow ``F_f`` (frame 1 to frame 2) and, with the frames swapped, the
backward flow ``F_b``. Nothing tells it the true flow; the loss rebuilds each frame from the
other through the flow and compares:

    L = sum_levels [ mean_{visible, inside} pe(I_1, I_2<F_f>) + mean_{visible, inside} pe(I_2, I_1<F_b>) ]
        + lambda_s · (smooth2(F_f) + smooth2(F_b))                       (finest level, edge-aware)

``pe`` is chapter 04's ``0.85·(1 - SSIM)/2 + 0.15·L1``; the finest ``loss_levels`` levels' flows
are upsampled to the input's resolution before warping (as monodepth2 does for depth). The warp
reads the border outside the image and every pixel counts: with pixels whose flow leaves the
image left out, the network learns to send the hard pixels out of the image. **Occlusion** comes from the
forward-backward consistency of the finest flows: a pixel of frame 1 is visible in frame 2
when following ``F_f`` and then ``F_b`` brings it back, ``|F_f + F_b<F_f>|^2 < a1 (|F_f|^2 +
|F_b<F_f>|^2) + a2`` (UnFlow's test, ``a1 = 0.01``, ``a2 = 0.5``); occluded pixels are left
out of the photometric term, from step ``occlusion_from_step`` on (before it, every pixel counts:
the first, random flows would exclude most pixels). TrianFlow's score of how reliable a correspondence is,
``M_s = 1 / (0.1 + D_fb)`` with ``D_fb = |F_f + F_b<F_f>|``, is :func:`fb_score`.

The second stage (depth trained against triangulated points, pose from the fundamental matrix)
builds on this module and chapter 08's :mod:`lesson_lib.twoview`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .._validate import check_same_device, check_tensor
from ..images import resize
from ..losses import photometric_error, smoothness
from ..metrics import flow_epe
from ..models import FlowNet, flow_warp, upsample_flow
from ..training import Method, StepContext, option
from ..training.config import check_choices, check_input_size

__all__ = ["TrianFlowConfig", "TrianFlow", "flow_loss", "fb_consistency", "fb_score", "predict_flow"]


@dataclass
class TrianFlowConfig:
    """The method's own options; each becomes a command-line option of ``train trianflow``."""

    stage: str = option("flow", "training stage: flow (the flow network, self-supervised)", choices=("flow",))
    flow_width: int = option(16, "flow network width (pyramid channels width x (1, 2, 3, 4, 6))")
    max_displacement: int = option(4, "cost-volume search range in pixels of each level")
    ssim_weight: float = option(0.85, "weight of the SSIM term in the photometric error (the rest L1)")
    smoothness_weight: float = option(0.1, "edge-aware second-order smoothness of the finest flow")
    occlusion_a1: float = option(0.01, "forward-backward test: relative tolerance a1")
    occlusion_a2: float = option(0.5, "forward-backward test: absolute tolerance a2 (pixels^2)")
    loss_levels: int = option(4, "how many levels, from the finest, enter the photometric term")
    occlusion_from_step: int = option(0, "training steps before the occlusion mask is used (before: every pixel that "
                                      "stays inside counts); with the mask from the start the random first flows "
                                      "exclude most pixels and the network never recovers them")
    input_height: int = option(0, "the network's input height (multiple of 32); 0: the data's own size")
    input_width: int = option(0, "the network's input width (multiple of 32); 0: the data's own size")

    def __post_init__(self) -> None:
        check_choices(self)
        name = type(self).__name__
        if self.flow_width < 1 or self.max_displacement < 1 or self.loss_levels < 1:
            raise ValueError(f"{name}: flow_width, max_displacement and loss_levels must be >= 1")
        if not 0.0 <= self.ssim_weight <= 1.0:
            raise ValueError(f"{name}.ssim_weight must be in [0, 1], got {self.ssim_weight}")
        for f in ("smoothness_weight", "occlusion_a1", "occlusion_a2", "occlusion_from_step"):
            if not getattr(self, f) >= 0:
                raise ValueError(f"{name}.{f} must be >= 0, got {getattr(self, f)}")
        check_input_size(self)

    @property
    def input_size(self) -> tuple[int, int] | None:
        return (self.input_height, self.input_width) if self.input_height else None


def fb_consistency(flow_fw: torch.Tensor, flow_bw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(D_fb (B, 1, H, W), bw_at_fw (B, 2, H, W))``: the backward flow read where the forward
    flow points, and the length of ``F_f + F_b<F_f>`` (0 for a pixel that comes back exactly).
    Where ``F_f`` leaves the image, ``F_b<F_f>`` reads zeros."""
    dims = check_tensor(flow_fw, "flow_fw", ("B", 2, "H", "W"))
    check_tensor(flow_bw, "flow_bw", ("B", 2, "H", "W"), dims=dims)
    bw_at_fw, _ = flow_warp(flow_bw, flow_fw)
    return (flow_fw + bw_at_fw).norm(dim=1, keepdim=True), bw_at_fw


def visible_mask(flow_fw: torch.Tensor, flow_bw: torch.Tensor, a1: float = 0.01, a2: float = 0.5) -> torch.Tensor:
    """Pixels of frame 1 judged visible in frame 2 (not occluded) by the forward-backward test
    ``|F_f + F_b<F_f>|^2 < a1 (|F_f|^2 + |F_b<F_f>|^2) + a2``; ``(B, 1, H, W)`` bool."""
    d, bw = fb_consistency(flow_fw, flow_bw)
    bound = a1 * (flow_fw.square().sum(1, keepdim=True) + bw.square().sum(1, keepdim=True)) + a2
    return d.square() < bound


def fb_score(flow_fw: torch.Tensor, flow_bw: torch.Tensor) -> torch.Tensor:
    """TrianFlow's reliability score of each forward correspondence, ``M_s = 1 / (0.1 + D_fb)``
    (at most 10, for a pixel whose forward and backward flows agree exactly)."""
    d, _ = fb_consistency(flow_fw, flow_bw)
    return 1.0 / (0.1 + d)


def flow_loss(
    flows_fw: Mapping[int, torch.Tensor],
    flows_bw: Mapping[int, torch.Tensor],
    image1: torch.Tensor,
    image2: torch.Tensor,
    config: TrianFlowConfig | None = None,
    occlusion: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The flow stage's loss (module doc) from the networks' level outputs ``{level: flow}``
    (each in its level's pixels) for both directions. With ``occlusion=False`` every pixel that
    stays inside counts (the warm-up). Returns ``(loss, {"photometric", "smoothness",
    "visible"})`` with detached terms (``visible``: share of frame-1 pixels the
    forward-backward test keeps, whether or not the mask is used)."""
    cfg = config or TrianFlowConfig()
    dims = check_tensor(image1, "image1", ("B", 3, "H", "W"))
    check_tensor(image2, "image2", ("B", 3, "H", "W"), dims=dims)
    size = tuple(image1.shape[-2:])
    finest = min(flows_fw)
    with torch.no_grad():
        ff, fb = upsample_flow(flows_fw[finest].float(), size), upsample_flow(flows_bw[finest].float(), size)
        vis_f = visible_mask(ff, fb, cfg.occlusion_a1, cfg.occlusion_a2)
        vis_b = visible_mask(fb, ff, cfg.occlusion_a1, cfg.occlusion_a2)
    photo = image1.new_zeros(())
    for level in sorted(flows_fw)[: cfg.loss_levels]:
        for flows, a, b, vis in ((flows_fw, image1, image2, vis_f), (flows_bw, image2, image1, vis_b)):
            flow = upsample_flow(flows[level].float(), size)
            # border padding, and no "inside" mask: were the pixels whose flow leaves the image left
            # out, the network would learn to send every hard pixel out of the image (measured)
            warped, _ = flow_warp(b, flow, padding_mode="border")
            err = photometric_error(warped, a, alpha=cfg.ssim_weight)
            m = (vis if occlusion else torch.ones_like(vis)).to(err.dtype)
            photo = photo + (err * m).sum() / m.sum().clamp(min=1.0)
    smooth = image1.new_zeros(())
    for flows, img in ((flows_fw, image1), (flows_bw, image2)):
        flow = flows[finest].float()
        small = resize(img, tuple(flow.shape[-2:]))
        for c in range(2):
            smooth = smooth + smoothness(flow[:, c : c + 1], small, order=2, normalize=False)
    loss = photo + cfg.smoothness_weight * smooth
    visible = vis_f.float().mean()
    return loss, {"photometric": photo.detach(), "smoothness": smooth.detach(), "visible": visible}


class TrianFlowNet(nn.Module):
    """TrianFlow's networks in one module; in the flow stage, the flow network alone."""

    def __init__(self, config: TrianFlowConfig) -> None:
        super().__init__()
        self.config = config
        self.flow = FlowNet(width=config.flow_width, max_displacement=config.max_displacement)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """Forward and backward flows at every level (one batched pass over both orders)."""
        b = image1.shape[0]
        flows = self.flow(torch.cat([image1, image2]), torch.cat([image2, image1]))
        return {k: v[:b] for k, v in flows.items()}, {k: v[b:] for k, v in flows.items()}


def _net(model: nn.Module) -> TrianFlowNet:
    net = model.module if hasattr(model, "module") else model  # DistributedDataParallel wraps it
    if not isinstance(net, TrianFlowNet):
        raise TypeError(f"expected a TrianFlowNet (methods.load_model of TrianFlow weights), got {type(net).__name__}")
    return net


@torch.no_grad()
def predict_flow(model: nn.Module, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
    """Forward flow ``(B, 2, H, W)`` in pixels of the given images (``image1 -> image2``, ``u``
    first): the images are resized to the network's input size and the flow back (its vectors
    scaled with the size). The model is evaluated in eval mode and left as it was."""
    net = _net(model)
    dims = check_tensor(image1, "image1", ("B", 3, "H", "W"))
    check_tensor(image2, "image2", ("B", 3, "H", "W"), dims=dims)
    check_same_device(image1=image1, image2=image2, model=next(net.parameters()))
    from ..models import network_input_size

    size = net.config.input_size or network_input_size(*image1.shape[-2:])
    was = net.training
    net.eval()
    try:
        flow = net.flow.flow(resize(image1.float(), size), resize(image2.float(), size))
    finally:
        net.train(was)
    return upsample_flow(flow, tuple(image1.shape[-2:]))


class TrianFlow(Method):
    """TrianFlow for :class:`~lesson_lib.training.Trainer` (flow stage): batches of
    :class:`~lesson_lib.data.VideoDataset` 3-frame snippets; the pair is the target and the next
    frame (``sources[:, 1]``), whose true flow the validation set carries."""

    name: ClassVar[str] = "trianflow"
    config_class: ClassVar[type] = TrianFlowConfig
    metric_depth: ClassVar[bool] = False
    data_kind: ClassVar[str] = "video_flow"

    def __init__(self, config: TrianFlowConfig | None = None) -> None:
        self.config = config or TrianFlowConfig()

    def build_model(self) -> nn.Module:
        return TrianFlowNet(self.config)

    def _pair(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        for key in ("target", "sources"):
            if key not in batch:
                raise KeyError(f"TrianFlow needs batches with 'target' and 'sources'; {key!r} is missing")
        image1, image2 = batch["target"], batch["sources"][:, -1]
        size = self.config.input_size
        return resize(image1, size), resize(image2, size)

    def loss(self, model: nn.Module, batch: Mapping[str, Any], ctx: StepContext | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        image1, image2 = self._pair(batch)
        fw, bw = model(image1, image2)
        step = ctx.step if ctx is not None else self.config.occlusion_from_step
        return flow_loss(fw, bw, image1, image2, self.config, occlusion=step >= self.config.occlusion_from_step)

    def validate(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, float]:
        flow = predict_flow(model, batch["target"], batch["sources"][:, -1])
        valid = batch["flow_valid"].bool()
        return {"epe": flow_epe(flow, batch["flow"], valid),
                "epe_zero_flow": flow_epe(torch.zeros_like(flow), batch["flow"], valid)}
