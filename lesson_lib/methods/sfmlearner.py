"""SfMLearner (Zhou et al., CVPR 2017): depth and ego-motion from monocular video (chapter 07).

Two networks learn together from snippets of ordinary video, a target frame ``I_t`` and its
sources ``I_s`` (the frames before and after it), with no depth and no pose labels:

- the **depth network** (the course's encoder-decoder, :class:`~lesson_lib.models.DepthDecoder`)
  sees the target alone and predicts a disparity at four scales, ``disp = 10·sigmoid + 0.01``
  (SfMLearner's range), depth ``D = 1 / disp`` (known only up to scale: monocular);
- the **pose and explainability network** (:class:`~lesson_lib.models.PoseExpNet`) sees the
  stacked snippet and predicts ``T_t_to_s`` for every source (target-frame points into the
  source's frame, SfMLearner's Euler ``R = Rx·Ry·Rz``) and an explainability mask ``E_s`` per
  source and scale.

The loss, at each scale ``s = 0..3`` (images reduced to that scale by area averaging,
intrinsics scaled with the half-pixel rule), summed over scales::

    L_s = sum_sources mean_valid(E_s · |I_t - I_s<p>|)                       view synthesis (L1)
        + lambda_e · sum_sources mean(-log E_s)                              explainability regulariser
        + lambda_s / 2^s · smooth2(disp_s)                                    second-order smoothness

``I_s<p>`` is the source read where each target pixel lands with the predicted depth and pose
(chapter 03's :func:`~lesson_lib.warping.rigid_warp`); pixels that land outside the source do
not count. Without the regulariser the mask could explain every pixel away (``E = 0`` zeroes the
view-synthesis term): ``-log E`` pulls it towards "explainable" (``lambda_e = 0.2`` in the paper;
the authors' later default is 0). The smoothness is second order (``|d_xx| + |d_yy|``, not
edge-aware: :func:`~lesson_lib.losses.smoothness` with a flat image), weight ``0.5 / 2^s``;
SfMLearner's own version adds the cross derivatives.

Three options change the paper's loss (defaults: the paper's): ``photometric="ssim"`` compares
with chapter 04's ``0.85·(1 - SSIM)/2 + 0.15·L1`` instead of L1 alone; ``multiscale="upsample"`` warps at
full resolution with every scale's disparity (and mask) upsampled, as monodepth2 does, instead of
comparing each scale with images reduced to it (on the synthetic world's road the blurred
coarse scales prefer "far" to the true depth); ``smoothness_normalize=True`` divides the
disparity by its mean in the smoothness term (Wang et al., CVPR 2018), so the loss no longer
rewards shrinking the disparity towards its floor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_same_device, check_tensor
from ..camera import resize_intrinsics, scale_intrinsics
from ..images import downsample, resize
from ..losses import photometric_error, smoothness
from ..metrics import depth_metrics
from ..models import DepthDecoder, PoseExpNet, ResNetEncoder, explainability, network_input_size
from ..training import NetworkOptions, StepContext, option
from ..warping import rigid_warp
from .common import MonocularMethod

__all__ = ["SfMLearnerConfig", "SfMLearnerNet", "SfMLearner", "sfmlearner_loss", "snippet_poses", "scale_views",
           "sigmoid_to_disparity"]

MIN_DISP, DISP_RANGE = 0.01, 10.0
"""SfMLearner's disparity range: ``disp = 10·sigmoid + 0.01``, depth in ``(1/10.01, 100)``."""


@dataclass
class SfMLearnerConfig(NetworkOptions):
    """The method's own options; each becomes a command-line option of ``train sfmlearner``."""

    encoder_width: int = option(16, "depth encoder width: 64 is ResNet-18; 16 trains on a CPU")
    encoder_depth: int = option(18, "depth encoder depth (18 or 34)", choices=(18, 34))
    pose_width: int = option(16, "pose network width: 16 is the paper's (16..256 channels); 8 a quarter of its "
                             "parameters (the course's CPU models)", choices=(4, 8, 16))
    n_sources: int = option(2, "source frames per snippet (2: 3-frame snippets, 4: 5-frame)", choices=(2, 4))
    mask: bool = option(True, "predict the explainability mask and weight the view synthesis with it")
    explainability_weight: float = option(0.2, "weight of -log(mask), the regulariser towards 'explainable'")
    smoothness_weight: float = option(0.5, "second-order smoothness weight at full scale (divided by 2^s)")
    scales: tuple[int, ...] = option((0, 1, 2, 3), "output scales the loss is summed over")
    multiscale: str = option("downsample", "downsample: compare each scale with the images reduced to it "
                             "(paper); upsample: warp at full resolution with every scale's disparity "
                             "upsampled (monodepth2)", choices=("downsample", "upsample"))
    smoothness_normalize: bool = option(False, "divide the disparity by its mean in the smoothness term "
                                        "(Wang et al. 2018), so the loss does not reward shrinking it")
    photometric: str = option("l1", "l1: the paper's |I_t - I_s<p>|; ssim: 0.85·(1 - SSIM)/2 + 0.15·L1 "
                              "(chapter 04's error, as Monodepth)", choices=("l1", "ssim"))
    input_height: int = option(0, "the networks' input height (multiple of 32); 0: the data's own size")
    input_width: int = option(0, "the networks' input width (multiple of 32); 0: the data's own size")

    def __post_init__(self) -> None:
        self.check_network_options(nonnegative=("explainability_weight", "smoothness_weight"))


def sigmoid_to_disparity(sigmoid_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SfMLearner's ``disp = 10·sigmoid + 0.01`` and ``depth = 1 / disp`` from the decoder's
    sigmoid output; returns ``(disp, depth)``. (Not stereo's ``Z = f·B / d``,
    :func:`lesson_lib.stereo.disparity_to_depth`: here "disparity" is inverse depth up to scale.)"""
    disp = DISP_RANGE * sigmoid_output + MIN_DISP
    return disp, 1.0 / disp


class SfMLearnerNet(nn.Module):
    """The two networks of SfMLearner in one module (so one optimizer and one DDP wrapper
    serve both): ``depth_net`` (encoder + decoder, one channel) and ``pose_net``
    (:class:`PoseExpNet`).

    ``forward(target, sources)``: ``target (B, 3, H, W)``, ``sources (B, S, 3, H, W)``;
    returns ``{"disp": {s: (B, 1, H/2^s, W/2^s)}, "poses": (B, S, 6), "logits": {s: ...} or None}``.
    """

    def __init__(self, config: SfMLearnerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ResNetEncoder(depth=config.encoder_depth, width=config.encoder_width, in_channels=3)
        self.decoder = DepthDecoder(self.encoder.channels, scales=(0, 1, 2, 3), out_channels=1)
        self.pose_net = PoseExpNet(n_sources=config.n_sources, explainability=config.mask, width=config.pose_width)

    def depth(self, target: torch.Tensor) -> dict[int, torch.Tensor]:
        """SfMLearner's disparity ``10·sigmoid + 0.01`` at every scale."""
        return {s: sigmoid_to_disparity(v)[0] for s, v in self.decoder(self.encoder(target)).items()}

    def forward(self, target: torch.Tensor, sources: torch.Tensor) -> dict[str, Any]:
        check_tensor(sources, "sources", (target.shape[0], self.pose_net.n_sources, 3, target.shape[-2], target.shape[-1]))
        poses, logits = self.pose_net(torch.cat([target, sources.flatten(1, 2)], dim=1))
        return {"disp": self.depth(target), "poses": poses, "logits": logits}


def snippet_poses(
    outputs: Mapping[str, Any], target: torch.Tensor, sources: torch.Tensor, K: torch.Tensor,
    T_t_to_s: torch.Tensor | None = None,
) -> torch.Tensor:
    """Checks a snippet's shapes and returns its ``T_t_to_s`` ``(B, S, 4, 4)``: the given poses,
    or ``outputs["poses"]`` ``(B, S, 6)`` read with SfMLearner's Euler angles (float32)."""
    from ..pose import pose_vector_to_matrix

    dims = check_tensor(target, "target", ("B", 3, "H", "W"))
    check_tensor(sources, "sources", ("B", "S", 3, "H", "W"), dims=dims)
    check_tensor(K, "K", ("B", 3, 3), dims=dims)
    b, n_src = sources.shape[:2]
    if T_t_to_s is None:
        T_t_to_s = pose_vector_to_matrix(outputs["poses"].reshape(-1, 6).float(), rotation="euler").reshape(b, n_src, 4, 4)
    check_tensor(T_t_to_s, "T_t_to_s", ("B", "S", 4, 4), dims=dims)
    return T_t_to_s


def scale_views(
    outputs: Mapping[str, Any], s: int, target: torch.Tensor, sources: torch.Tensor, K: torch.Tensor,
    full_res: bool,
) -> tuple[torch.Tensor, ...]:
    """What the loss compares at output scale ``s``: ``(own, depth, target, sources, K)``.

    ``own`` is the network's disparity at that scale ``(B, 1, h_s, w_s)`` (float32, for the
    smoothness term); ``depth = 1 / disp`` at the resolution the warp runs at: the scale's own
    (SfMLearner) or, with ``full_res``, the disparity upsampled to the input size (Monodepth2);
    the target ``(B, 3, h, w)``, sources ``(B, S, 3, h, w)`` and ``K`` ``(B, 3, 3)`` at that
    resolution."""
    dims = check_tensor(target, "target", ("B", 3, "H", "W"))
    check_tensor(sources, "sources", ("B", None, 3, "H", "W"), dims=dims)
    disps = outputs.get("disp") if isinstance(outputs, Mapping) else None
    if not isinstance(disps, Mapping) or s not in disps:
        held = sorted(disps) if isinstance(disps, Mapping) else "none"
        raise ValueError(f"outputs: no disparity at scale s={s!r} (outputs['disp'] holds scales {held})")
    b, n_src = sources.shape[:2]
    H, W = target.shape[-2:]
    own = disps[s].float()
    check_tensor(own, f"disp[{s}]", (b, 1, None, None))
    disp = own
    if full_res and s > 0:
        disp = F.interpolate(own, size=(H, W), mode="bilinear", align_corners=False)
    h, w = disp.shape[-2:]
    factor = H // h
    tgt = downsample(target, factor)
    src = downsample(sources.flatten(0, 1), factor).reshape(b, n_src, 3, h, w)
    return own, 1.0 / disp, tgt, src, scale_intrinsics(K, w / W, h / H)


def sfmlearner_loss(
    outputs: Mapping[str, Any],
    target: torch.Tensor,
    sources: torch.Tensor,
    K: torch.Tensor,
    config: SfMLearnerConfig | None = None,
    T_t_to_s: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SfMLearner's loss (see the module doc) and its terms summed over scales.

    Args:
        outputs: :class:`SfMLearnerNet`'s output (``disp``, ``poses``, ``logits``).
        target: ``(B, 3, H, W)``; sources: ``(B, S, 3, H, W)``; K: ``(B, 3, 3)`` at ``(H, W)``.
        T_t_to_s: ``(B, S, 4, 4)`` poses to use instead of the predicted ones (e.g. the truth,
            to study depth alone); default: ``outputs["poses"]`` read with Euler angles.

    Returns:
        ``(loss, {"view_synthesis", "explainability", "smoothness", "mask_mean"})``, detached terms.
    """
    cfg = config or SfMLearnerConfig()
    T_t_to_s = snippet_poses(outputs, target, sources, K, T_t_to_s)
    b, n_src = sources.shape[:2]
    H, W = target.shape[-2:]
    logits = outputs.get("logits") if cfg.mask else None
    zero = target.new_zeros(())
    vs_sum, ex_sum, sm_sum, mask_sum = zero, zero, zero, zero
    for s in cfg.scales:
        own, depth, tgt, src, K_s = scale_views(outputs, s, target, sources, K,
                                                full_res=cfg.multiscale == "upsample")
        h, w = depth.shape[-2:]
        mask = explainability(logits[s].float()) if logits is not None else None  # (B, S, 1, h_s, w_s)
        if mask is not None and mask.shape[-2:] != (h, w):
            mask = F.interpolate(mask.flatten(0, 1), size=(h, w), mode="bilinear",
                                 align_corners=False).reshape(b, n_src, 1, h, w)
        for j in range(n_src):
            warped, valid = rigid_warp(src[:, j], depth, T_t_to_s[:, j], K_s)
            if cfg.photometric == "ssim":
                err = photometric_error(warped, tgt, alpha=0.85)
            else:
                err = (warped - tgt).abs().mean(dim=1, keepdim=True)
            weight = valid.to(err.dtype)
            if mask is not None:
                err = err * mask[:, j]
            vs_sum = vs_sum + (err * weight).sum() / weight.sum().clamp(min=1.0)
            if mask is not None:
                # cross-entropy towards "explainable": -log softmax(logits)[1]
                ex_sum = ex_sum - torch.log_softmax(logits[s][:, j].float(), dim=1)[:, 1].mean()
                mask_sum = mask_sum + mask[:, j].mean().detach() / (n_src * len(cfg.scales))
        flat = torch.zeros_like(own)  # no image edges: plain (not edge-aware) second-order smoothness
        sm_sum = sm_sum + smoothness(own, flat, order=2, normalize=cfg.smoothness_normalize) / 2**s
    loss = vs_sum + cfg.smoothness_weight * sm_sum
    if logits is not None:
        loss = loss + cfg.explainability_weight * ex_sum
    terms = {"view_synthesis": vs_sum.detach(), "explainability": ex_sum.detach(), "smoothness": sm_sum.detach(),
             "mask_mean": mask_sum if logits is not None else zero + 1.0}
    return loss, terms


class SfMLearner(MonocularMethod):
    """SfMLearner for :class:`~lesson_lib.training.Trainer`: batches of
    :class:`~lesson_lib.data.VideoDataset` (``target``, ``sources``, ``K``; for validation
    ``depth``). Depth is known only up to scale: evaluate it median-scaled."""

    name: ClassVar[str] = "sfmlearner"
    config_class: ClassVar[type] = SfMLearnerConfig
    net_class: ClassVar[type[nn.Module]] = SfMLearnerNet
    predicts: ClassVar[frozenset[str]] = frozenset({"depth", "poses"})

    def __init__(self, config: SfMLearnerConfig | None = None) -> None:
        self.config = config or SfMLearnerConfig()

    def data_options(self) -> dict[str, Any]:
        return {"snippet_length": 1 + self.config.n_sources}

    @property
    def pose_frames(self) -> int:
        """The target and its ``n_sources`` sources: the pose network sees the whole snippet."""
        return 1 + self.config.n_sources

    def build_model(self) -> nn.Module:
        return SfMLearnerNet(self.config)

    def network_inputs(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(target, sources, K)`` of a batch at the network's input size (``config.input_size``:
        images resized, intrinsics scaled with them)."""
        for key in ("target", "sources", "K"):
            if key not in batch:
                raise KeyError(f"{self.name} needs batches with 'target', 'sources' and 'K'; {key!r} is missing")
        target, sources, K = batch["target"], batch["sources"], batch["K"]
        size = self.config.input_size
        if size is not None and tuple(target.shape[-2:]) != tuple(size):
            b, n = sources.shape[:2]
            K = resize_intrinsics(K, tuple(target.shape[-2:]), size)
            target = resize(target, size)
            sources = resize(sources.flatten(0, 1), size).reshape(b, n, 3, *size)
        return target, sources, K

    def loss(
        self, model: nn.Module, batch: Mapping[str, Any], ctx: StepContext | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        target, sources, K = self.network_inputs(batch)
        return sfmlearner_loss(model(target, sources), target, sources, K, self.config)

    def _pose_inputs(self, net: SfMLearnerNet, target: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """The stacked snippet ``(B, 3·(1 + S), h, w)`` at the network's input size, checked."""
        dims = check_tensor(target, "target", ("B", 3, "H", "W"))
        check_tensor(sources, "sources", ("B", net.pose_net.n_sources, 3, "H", "W"), dims=dims)
        check_same_device(target=target, sources=sources, model=next(net.parameters()))
        size = self.config.input_size or network_input_size(*target.shape[-2:])
        b, n = sources.shape[:2]
        target, sources = target.float(), sources.float()
        if tuple(target.shape[-2:]) != tuple(size):
            target = resize(target, size)
            sources = resize(sources.flatten(0, 1), size).reshape(b, n, 3, *size)
        return torch.cat([target, sources.flatten(1, 2)], dim=1)

    @torch.no_grad()
    def _pose_outputs(self, net: SfMLearnerNet, target: torch.Tensor, sources: torch.Tensor) -> tuple[Any, Any, torch.Tensor]:
        """The pose network's ``(poses, logits)`` for a snippet, in eval mode (left as it was), and
        its stacked input."""
        x = self._pose_inputs(net, target, sources)
        was = net.training
        net.eval()
        try:
            poses, logits = net.pose_net(x)
        finally:
            net.train(was)
        return poses, logits, x

    @torch.no_grad()
    def predict_poses(
        self, model: nn.Module, target: torch.Tensor, sources: torch.Tensor, K: torch.Tensor | None = None, *,
        seed: int = 0,
    ) -> torch.Tensor:
        """``T_t_to_s (B, S, 4, 4)`` from the pose network, for each source of a snippet (sources in
        the dataset's order: frame order without the target; for a 3-frame snippet ``[I_{t-1},
        I_{t+1}]``), translation in the depth network's unknown scale. The images are resized to
        the network's input size; ``K`` and ``seed`` are not needed. The model runs in eval mode
        and is left as it was."""
        net = self.net(model)
        poses, _, _ = self._pose_outputs(net, target, sources)
        return net.pose_net.to_matrices(poses)

    @torch.no_grad()
    def predict_masks(self, model: nn.Module, target: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """The explainability mask at the network's input size, ``(B, S, 1, h, w)`` in ``[0, 1]``
        (1: explainable), for each source of a snippet; all ones for a model without the mask."""
        _, logits, x = self._pose_outputs(self.net(model), target, sources)
        b, n = sources.shape[:2]
        if logits is None:
            return x.new_ones(b, n, 1, *x.shape[-2:])
        return explainability(logits[0])

    def validate(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, float]:
        depth = self.predict_depth(model, batch["target"], batch["K"])
        m = depth_metrics(depth, batch["depth"], median_scaling=True)
        return {"abs_rel_median": m["abs_rel"], "a1_median": m["a1"]}
