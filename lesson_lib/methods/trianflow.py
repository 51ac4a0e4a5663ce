"""TrianFlow (Zhao et al., CVPR 2020, "Towards Better Generalization: Joint Depth-Pose Learning
without PoseNet"), chapter 09: optical flow learnt without labels, then depth learnt from the
points the flow lets us triangulate, with the camera's motion from the fundamental matrix
instead of a pose network.

**Stage 1, flow.** The flow network (:class:`~lesson_lib.models.FlowNet`, PWC-style) sees two
consecutive frames and predicts the forward flow ``F_f`` (frame 1 to frame 2) and, with the
frames swapped, the backward flow ``F_b``. Nothing tells it the true flow; the loss rebuilds
each frame from the other through the flow and compares:

    L = sum_levels [ mean_visible pe(I_1, I_2<F_f>) + mean_visible pe(I_2, I_1<F_b>) ]
        + lambda_s · (smooth2(F_f) + smooth2(F_b))                       (finest level, edge-aware)

``pe`` is chapter 04's ``0.85·(1 - SSIM)/2 + 0.15·L1`` (or a soft census distance); each of the
finest ``loss_levels`` levels is compared with the images reduced to its own resolution
(``loss_resolution="level"``, the classical pyramid: a coarse level sees large motions as small
ones) or, with ``"input"``, upsampled to the input (monodepth2's way for depth). The warp reads
the border outside the image and every pixel counts: with pixels whose flow leaves the image
left out, the network learns to send the hard pixels out of the image. **Occlusion** comes from
the forward-backward consistency of the finest flows: a pixel of frame 1 is visible in frame 2
when following ``F_f`` and then ``F_b`` brings it back, ``|F_f + F_b<F_f>|^2 < a1 (|F_f|^2 +
|F_b<F_f>|^2) + a2`` (UnFlow's test, ``a1 = 0.01``, ``a2 = 0.5``); occluded pixels are left
out of the photometric term from step ``occlusion_from_step`` on (before it, every pixel counts:
the first, random flows would exclude most pixels). TrianFlow's score of how reliable a
correspondence is, ``M_s = 1 / (0.1 + D_fb)`` with ``D_fb = |F_f + F_b<F_f>|``, is :func:`fb_score`.

**Stage 2, depth, as the paper defines it** (:func:`paper_depth_loss`, the default). The depth
network predicts the disparity of **both** frames; the pose comes from F (RANSAC on the best
``top_fraction`` of the flow by forward-backward score, ``E = K^T F K``, cheirality;
:func:`pose_from_flow`, no gradient); every pixel gets a soft weight ``visible / (0.1 + D_fb) ×
[D_epi < rigid_threshold] / (1 + D_epi)``; ``samples`` correspondences drawn from the best
``top_fraction`` by that weight are triangulated (midpoint, ``|t| = 1``); each frame's depth is
registered to its points by two factors that carry no gradient (:func:`register_depth`), so the
loss cannot move the depth's overall scale; the loss is ``L_pt = mean (1 - D^/D_tri)^2`` at the
points of both frames, ``L_pj`` (frame 1's registered depth moved into frame 2 against frame 2's,
weighted by the soft weights), edge-aware smoothness of both disparities, and for the flow
network, which trains on (``freeze_flow`` False), the mean epipolar distance of the pixels between
``ransac_threshold`` and ``rigid_threshold``. No photometric term. ``oracle_flow`` replaces the
network's flow by the world's exact flow: an experiment that uses ground truth, to separate "this
loss cannot learn here" from "the learnt flow is not good enough"; ``frame_gap`` 2 pairs a frame
with the one two steps later (twice the baseline).

**Stage 2, the course's first recipe** (``depth_loss="photometric"``, :func:`depth_loss`; the flow
network frozen). For each pair: the pose from F as above, midpoint triangulation of the inliers
(:func:`triangulate_correspondences`), the network's depth of frame 1 aligned to the points by
the ratio of medians then least squares (:func:`align_scale`); the loss: log-depth error at the
triangulated points, the photometric error of the next frame warped with the depth and the
scaled pose on rigid (epipolar distance < ``rigid_threshold``) visible pixels, and smoothness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_same_device, check_tensor
from .. import keyed_random
from ..camera import intrinsics_inverse, resize_intrinsics
from ..keyed_random import RandomSource
from ..images import resize
from ..losses import census_error, photometric_error, smoothness
from ..metrics import depth_metrics, flow_epe
from ..models import DepthDecoder, FlowNet, ResNetEncoder, upsample_flow
from ..training import StepContext, option
from ..warping import flow_warp
from ..training.config import check_choices, check_input_size
from .common import MonocularMethod, unwrap
from .sfmlearner import sigmoid_to_disparity

__all__ = ["TrianFlowConfig", "TrianFlow", "TrianFlowNet", "flow_loss", "fb_consistency", "fb_score", "visible_mask",
           "sample_correspondences", "FlowPose", "pose_from_flow", "triangulate_correspondences",
           "align_scale", "depth_loss", "register_depth", "ray_angle_deg", "move_depth", "paper_depth_loss"]


@dataclass
class TrianFlowConfig:
    """The method's own options; each becomes a command-line option of ``train trianflow``."""

    stage: str = option("flow", "training stage: flow (the flow network, self-supervised) or depth (the depth "
                        "network against triangulated flow, the flow network loaded from --flow-weights)",
                        choices=("flow", "depth"))
    depth_loss: str = option("paper", "depth stage: paper (TrianFlow's: L_pt at the triangulated points of both "
                             "frames, L_pj two-view depth consistency, smoothness; no photometric term) or "
                             "photometric (the course's first recipe: log error at the triangulated points plus "
                             "the next frame warped with the depth, frame 1 only)", choices=("paper", "photometric"))
    freeze_flow: bool = option(False, "depth stage: keep the flow network fixed (the paper trains it on, through the "
                               "epipolar loss and the triangulated points; the photometric recipe always freezes it)")
    frame_gap: int = option(1, "frames between the two images of a pair (1: consecutive frames; 2: twice the "
                            "baseline, 5-frame snippets)", choices=(1, 2))
    oracle_flow: bool = option(False, "depth stage, an EXPERIMENT THAT USES GROUND TRUTH: the world's exact flow "
                               "(and its validity) replaces the flow network's; not self-supervised")
    point_weight: float = option(1.0, "paper depth loss: weight of L_pt = mean (1 - D/D_tri)^2 at the triangulated "
                                 "points of both frames")
    consistency_weight: float = option(0.1, "paper depth loss: weight of L_pj = |1 - z'/D_2(p')|, frame 1's "
                                       "registered depth moved into frame 2 against frame 2's, on rigid visible pixels")
    flow_lr_scale: float = option(0.1, "depth stage: the flow network's learning rate as a share of --lr when it "
                                  "trains on (at 1, the paper's, the course's flow network collapsed within 15 steps "
                                  "at --lr 2e-4: no pixel stayed within 0.5 px of its epipolar line)")
    geometric_weight: float = option(1.0, "paper depth loss: weight of the flow's epipolar loss (its mean distance "
                                     "to the epipolar line between --ransac-threshold and --rigid-threshold)")
    flow_weights: str = option("", "the flow stage's checkpoint or weights file: the depth stage's flow "
                              "network (required unless oracle_flow); the flow stage, given one, starts from it "
                              "(fine-tuning)")
    flow_width: int = option(16, "flow network width (pyramid channels width x (1, 2, 3, 4, 6))")
    max_displacement: int = option(4, "cost-volume search range in pixels of each level")
    normalize_features: bool = option(True, "give each pixel's pyramid features zero mean and unit length before the "
                                      "cost volume (UFlow): the correlations are cosines in [-1, 1] from the first "
                                      "step; without, they start around 1e-4 and the network first has to learn to "
                                      "amplify its features")
    photometric: str = option("ssim", "photometric error: ssim (0.85 SSIM + 0.15 L1, chapter 04) or census "
                              "(soft census transform, 7x7)", choices=("ssim", "census"))
    ssim_weight: float = option(0.85, "weight of the SSIM term in the photometric error (the rest L1)")
    smoothness_weight: float = option(0.1, "edge-aware second-order smoothness of the finest flow")
    occlusion_a1: float = option(0.01, "forward-backward test: relative tolerance a1")
    occlusion_a2: float = option(0.5, "forward-backward test: absolute tolerance a2 (pixels^2)")
    loss_levels: int = option(4, "how many levels, from the finest, enter the photometric term")
    loss_resolution: str = option("level", "where each level's photometric term is computed: level (the images "
                                  "downsampled to the level: coarse levels see coarse structure, so large motions "
                                  "are found) or input (the flow upsampled to the input, monodepth2's way)",
                                  choices=("level", "input"))
    smoothness_order: int = option(2, "order of the edge-aware flow smoothness (1 or 2)", choices=(1, 2))
    occlusion_from_step: int = option(1500, "training steps before the occlusion mask is used (before: every pixel "
                                      "counts); with the mask from the start the random first flows fail the "
                                      "forward-backward test almost everywhere and leave nothing to learn from")
    encoder_width: int = option(16, "depth stage: depth encoder width (64 is ResNet-18)")
    top_fraction: float = option(0.2, "depth stage: share of pixels, best forward-backward score first, the "
                                 "correspondences are drawn from")
    samples: int = option(6000, "depth stage: correspondences drawn per image pair for F")
    ransac_threshold: float = option(0.1, "depth stage: RANSAC inlier threshold (Sampson distance, pixels)")
    ransac_iters: int = option(0, "depth stage: RANSAC samples per image pair. 0: adaptive (1,024 to 4,096 by the "
                               "inlier share, a count the host reads from the GPU); N > 0: exactly N, and every "
                               "draw from the step's key (lesson_lib.keyed_random): no host sync, so --compile "
                               "traces the step as one graph and --cuda-graph can capture it")
    min_parallax_deg: float = option(0.5, "depth stage: triangulated points whose rays meet at a smaller angle "
                                     "are not used")
    rigid_threshold: float = option(0.5, "depth stage: pixels whose flow is farther than this from its epipolar "
                                    "line (Sampson distance, pixels) count as moving: no photometric term")
    triangulation_weight: float = option(1.0, "depth stage: weight of |log D - log(s Z)| at the triangulated points")
    reprojection_weight: float = option(1.0, "depth stage: weight of the photometric error of the next frame "
                                        "warped with the depth and the pose from F, on rigid visible pixels")
    reprojection_ssim_weight: float = option(0.85, "depth stage: weight of SSIM in the reprojection's photometric "
                                             "error (the rest L1); 0: L1 alone, as SfMLearner")
    scale_free: bool = option(False, "depth stage: divide each disparity map by its mean before the loss, so the "
                              "loss cannot move the depth's overall scale (the alignment's scale carries no "
                              "gradient; without this the scale drifts and the disparity saturates)")
    flow_consistency_weight: float = option(0.0, "depth stage: weight of |rigid flow - optical flow| (pixels) on "
                                            "rigid visible pixels, the rigid flow from the depth and the scaled "
                                            "pose from F (TrianFlow's depth-flow consistency)")
    depth_smoothness: str = option("edge1", "depth stage: edge1 (edge-aware first order, TrianFlow's and "
                                   "Monodepth2's) or flat2 (second order, not edge-aware: chapter 07's recipe) "
                                   "smoothness of the mean-normalised disparity", choices=("edge1", "flat2"))
    depth_smoothness_weight: float = option(1e-3, "depth stage: weight of the depth smoothness (divided by 2^scale)")
    input_height: int = option(0, "the network's input height (multiple of 32); 0: the data's own size")
    input_width: int = option(0, "the network's input width (multiple of 32); 0: the data's own size")

    def __post_init__(self) -> None:
        check_choices(self)
        name = type(self).__name__
        if self.flow_width < 1 or self.max_displacement < 1 or self.loss_levels < 1:
            raise ValueError(f"{name}: flow_width, max_displacement and loss_levels must be >= 1")
        for f in ("ssim_weight", "reprojection_ssim_weight"):
            if not 0.0 <= getattr(self, f) <= 1.0:
                raise ValueError(f"{name}.{f} must be in [0, 1], got {getattr(self, f)}")
        if self.oracle_flow and self.stage != "depth":
            raise ValueError(f"{name}: oracle_flow is an option of the depth stage (stage='depth')")
        if isinstance(self.ransac_iters, bool) or not isinstance(self.ransac_iters, int) or self.ransac_iters < 0:
            raise ValueError(f"{name}.ransac_iters must be an integer >= 0 (0: adaptive), got {self.ransac_iters!r}")
        if self.encoder_width < 1 or self.samples < 8 or not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"{name}: encoder_width must be >= 1, samples >= 8 and top_fraction in (0, 1]")
        for f in ("smoothness_weight", "occlusion_a1", "occlusion_a2", "occlusion_from_step", "ransac_threshold",
                  "min_parallax_deg", "rigid_threshold", "triangulation_weight", "reprojection_weight",
                  "flow_consistency_weight", "depth_smoothness_weight", "point_weight", "consistency_weight",
                  "geometric_weight"):
            if not getattr(self, f) >= 0:
                raise ValueError(f"{name}.{f} must be >= 0, got {getattr(self, f)}")
        if not self.flow_lr_scale > 0:
            raise ValueError(f"{name}.flow_lr_scale must be > 0, got {self.flow_lr_scale}")
        check_input_size(self)

    @property
    def input_size(self) -> tuple[int, int] | None:
        return (self.input_height, self.input_width) if self.input_height else None

    @property
    def flow_trains(self) -> bool:
        """Whether the flow network is trained in this stage: always in the flow stage; in the
        depth stage with the paper's loss, unless frozen or replaced by the oracle."""
        if self.stage == "flow":
            return True
        return self.depth_loss == "paper" and not self.freeze_flow and not self.oracle_flow


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
        if cfg.loss_resolution == "input":
            lsize, ms = size, (vis_f, vis_b)
        else:
            lsize = tuple(flows_fw[level].shape[-2:])
            ms = tuple(F.interpolate(v.float(), size=lsize, mode="area") > 0.5 for v in (vis_f, vis_b))
        a1, a2 = resize(image1, lsize), resize(image2, lsize)
        for flows, a, b, vis in ((flows_fw, a1, a2, ms[0]), (flows_bw, a2, a1, ms[1])):
            flow = upsample_flow(flows[level].float(), lsize)
            # border padding, and no "inside" mask: were the pixels whose flow leaves the image left
            # out, the network would learn to send every hard pixel out of the image (measured)
            warped, _ = flow_warp(b, flow, padding_mode="border")
            err = (census_error(warped, a) if cfg.photometric == "census"
                   else photometric_error(warped, a, alpha=cfg.ssim_weight))
            m = (vis if occlusion else torch.ones_like(vis)).to(err.dtype)
            photo = photo + (err * m).sum() / m.sum().clamp(min=1.0)
    smooth = image1.new_zeros(())
    for flows, img in ((flows_fw, image1), (flows_bw, image2)):
        flow = flows[finest].float()
        small = resize(img, tuple(flow.shape[-2:]))
        for c in range(2):
            smooth = smooth + smoothness(flow[:, c : c + 1], small, order=cfg.smoothness_order, normalize=False)
    loss = photo + cfg.smoothness_weight * smooth
    visible = vis_f.float().mean()
    return loss, {"photometric": photo.detach(), "smoothness": smooth.detach(), "visible": visible}


# ---------------------------------------------------------------------------------------------
# Depth stage: correspondences from the flow, pose from F, triangulation, scale alignment


def sample_correspondences(
    flow: torch.Tensor,
    score: torch.Tensor,
    top_fraction: float = 0.2,
    samples: int = 6000,
    generator: RandomSource = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TrianFlow's correspondence sampling: of the pixels whose flow lands inside the image,
    keep the ``top_fraction`` with the highest ``score`` (:func:`fb_score`), then draw
    ``samples`` of them at random (without replacement; all of them if fewer).

    Args:
        flow: ``(B, 2, H, W)`` forward flow in pixels.
        score: ``(B, 1, H, W)``, higher = more reliable.
        generator: the random source (the trainer's per-step generator, or its key as a
            :class:`lesson_lib.keyed_random.KeyedRandom`), on ``flow``'s device.

    Returns:
        ``(p1, p2, index)``: ``(B, N, 2)`` pixel coordinates ``(u, v)`` in frame 1 and where the
        flow takes them in frame 2, and ``(B, N)`` the flat pixel index ``v * W + u`` of each.

    Raises:
        ValueError: bad shapes, ``top_fraction`` outside ``(0, 1]``, fewer than 8 samples.
    """
    from ..camera import pixel_grid

    dims = check_tensor(flow, "flow", ("B", 2, "H", "W"))
    check_tensor(score, "score", ("B", 1, "H", "W"), dims=dims)
    check_same_device(flow=flow, score=score)
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    b, _, h, w = flow.shape
    k = max(8, int(round(top_fraction * h * w)))
    n = min(int(samples), k)
    if n < 8:
        raise ValueError(f"samples must be >= 8 (the 8-point algorithm), got {samples}")
    flow = flow.float()
    grid = pixel_grid(h, w, device=flow.device)[:2].reshape(2, -1).mT  # (HW, 2)
    p2_all = grid[None] + flow.flatten(2).mT
    inside = (p2_all[..., 0] >= 0) & (p2_all[..., 0] <= w - 1) & (p2_all[..., 1] >= 0) & (p2_all[..., 1] <= h - 1)
    s = score.float().flatten(1).masked_fill(~inside, -torch.inf)
    top = s.topk(k, dim=1).indices
    order = keyed_random.rand(generator, (b, k), flow.device).argsort(dim=1)[:, :n]
    index = top.gather(1, order)
    p1 = grid[index]
    p2 = p2_all.gather(1, index[..., None].expand(-1, -1, 2))
    return p1, p2, index


@dataclass
class FlowPose:
    """What :func:`pose_from_flow` found for each batch element (``B`` leading everywhere).

    Attributes:
        R, t: ``(B, 3, 3)``, ``(B, 3)`` the pose ``X2 = R X1 + t`` (frame 1 = target into frame 2,
            the course's ``T_t_to_s``), ``|t| = 1``.
        F: ``(B, 3, 3)`` the fundamental matrix (``x2^T F x1 = 0``).
        p1, p2, index: the sampled correspondences (:func:`sample_correspondences`).
        inliers: ``(B, N)`` RANSAC inliers that the pose also puts in front of both cameras.
        ok: ``(B,)`` a usable pose: F determined (not degenerate: standstill, pure rotation or
            no parallax) and at least 8 points in front.
    """

    R: torch.Tensor
    t: torch.Tensor
    F: torch.Tensor
    p1: torch.Tensor
    p2: torch.Tensor
    index: torch.Tensor
    inliers: torch.Tensor
    ok: torch.Tensor


def pose_from_flow(
    flow_fw: torch.Tensor,
    flow_bw: torch.Tensor | None,
    K: torch.Tensor,
    *,
    score: torch.Tensor | None = None,
    top_fraction: float = 0.2,
    samples: int = 6000,
    threshold: float = 0.1,
    confidence: float = 0.99,
    generator: RandomSource = None,
    ransac_iters: int | None = None,
) -> FlowPose:
    """The relative pose of two frames from their optical flow, without a pose network
    (TrianFlow): correspondences sampled where the forward-backward score is highest
    (:func:`sample_correspondences`), F by RANSAC on the 8-point algorithm
    (:func:`lesson_lib.twoview.ransac_fundamental`, Sampson ``threshold`` in pixels),
    ``E = K^T F K`` and the one of its four poses that puts the most inliers in front of both
    cameras (:func:`lesson_lib.twoview.recover_pose`). The geometry runs in float32 (float64
    inside the solvers) whatever autocast says.

    Args:
        flow_fw, flow_bw: ``(B, 2, H, W)`` forward and backward flow in pixels of ``K``.
        K: ``(B, 3, 3)`` or ``(3, 3)`` intrinsics of both frames.
        score: ``(B, 1, H, W)`` a reliability map to use instead of the forward-backward score
            (then ``flow_bw`` may be None), e.g. the world's static, visible pixels.
        ransac_iters: RANSAC's fixed sample count (``iterations`` of
            :func:`lesson_lib.twoview.ransac_fundamental`); None: adaptive.
    """
    from .. import twoview

    dims = check_tensor(flow_fw, "flow_fw", ("B", 2, "H", "W"))
    if score is None:
        if flow_bw is None:
            raise ValueError("pose_from_flow needs flow_bw (for the forward-backward score) or a score map")
        check_tensor(flow_bw, "flow_bw", ("B", 2, "H", "W"), dims=dims)
    check_same_device(flow_fw=flow_fw, K=K)
    with torch.autocast(flow_fw.device.type, enabled=False):
        ff = flow_fw.float()
        score = fb_score(ff, flow_bw.float()) if score is None else score.float()
        p1, p2, index = sample_correspondences(ff, score, top_fraction, samples, generator)
        b = p1.shape[0]
        Kb = (K[None] if K.ndim == 2 else K).float().expand(b, 3, 3)
        F_, inl, info = twoview.ransac_fundamental(p1, p2, threshold=threshold, confidence=confidence,
                                                  generator=generator, iterations=ransac_iters, return_info=True)
        E = twoview.essential_from_fundamental(F_, Kb, Kb)
        R, t, front = twoview.recover_pose(E, p1, p2, Kb, Kb, mask=inl)
        inliers = inl & front
        ok = ~info.degenerate.to(inliers.device) & (inliers.sum(1) >= 8)
    return FlowPose(R=R, t=t, F=F_, p1=p1, p2=p2, index=index, inliers=inliers, ok=ok)


def ray_angle_deg(p1: torch.Tensor, p2: torch.Tensor, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """The angle in degrees at which the rays of corresponding pixels ``p1``, ``p2`` ``(B, N, 2)``
    meet, for one intrinsics ``K (B, 3, 3)`` and the rotation ``R (B, 3, 3)`` of ``X2 = R X1 + t``:
    both rays in frame 1's orientation (``K^-1 p1`` and ``R^T K^-1 p2``), in float64. Near 0 the
    midpoint triangulation is ill-conditioned (near the focus of expansion, or far away)."""
    dims = check_tensor(p1, "p1", ("B", "N", 2))
    check_tensor(p2, "p2", ("B", "N", 2), dims=dims)
    check_tensor(K, "K", ("B", 3, 3), dims=dims)
    check_tensor(R, "R", ("B", 3, 3), dims=dims)
    kinv = intrinsics_inverse(K.double())

    def ray(p: torch.Tensor) -> torch.Tensor:
        return torch.cat([p.double(), torch.ones_like(p[..., :1], dtype=torch.float64)], -1) @ kinv.mT

    d1, d2 = ray(p1), ray(p2) @ R.double()
    cos = (d1 * d2).sum(-1) / (d1.norm(dim=-1) * d2.norm(dim=-1))
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))).float()


def triangulate_correspondences(
    pose: FlowPose, K: torch.Tensor, min_parallax_deg: float = 0.5, max_error: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth of each sampled correspondence by midpoint triangulation with the pose from F, in
    units of the (unit) baseline, and which depths to trust: RANSAC inliers in front of both
    cameras, whose rays meet at more than ``min_parallax_deg`` degrees (near-parallel rays, near
    the focus of expansion or far away, give wild depths) and reproject within ``max_error``
    pixels. Returns ``(depth (B, N), valid (B, N) bool)``; depth is 0 where not valid."""
    from .. import twoview

    if not isinstance(pose, FlowPose):
        raise TypeError(f"pose: expected a FlowPose (from pose_from_flow), got {type(pose).__name__}")
    dims = check_tensor(pose.p1, "pose.p1", ("B", "N", 2))
    check_tensor(pose.p2, "pose.p2", ("B", "N", 2), dims=dims)
    check_tensor(pose.R, "pose.R", ("B", 3, 3), dims=dims)
    check_tensor(pose.t, "pose.t", ("B", 3), dims=dims)
    check_tensor(pose.inliers, "pose.inliers", ("B", "N"), dims=dims, floating=False)
    check_tensor(pose.ok, "pose.ok", ("B",), dims=dims, floating=False)
    check_tensor(K, "K")
    if K.shape[-2:] != (3, 3) or K.ndim not in (2, 3) or (K.ndim == 3 and K.shape[0] not in (1, dims["B"])):
        raise ValueError(f"K: expected shape (3, 3) or ({dims['B']}, 3, 3), got {tuple(K.shape)}")
    b = pose.p1.shape[0]
    with torch.autocast(pose.p1.device.type, enabled=False):
        Kb = (K[None] if K.ndim == 2 else K).float().expand(b, 3, 3)
        X, err = twoview.triangulate_midpoint(pose.p1, pose.p2, Kb, Kb, pose.R, pose.t)
        parallax = ray_angle_deg(pose.p1, pose.p2, Kb, pose.R)
        valid = pose.inliers & pose.ok[:, None] & (X[..., 2] > 0) & (parallax > min_parallax_deg) & (err < max_error)
        depth = torch.where(valid, X[..., 2], torch.zeros_like(X[..., 2]))
    return depth, valid


def align_scale(pred: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor, outlier_ratio: float = 0.3) -> torch.Tensor:
    """The scale ``s`` per batch element that brings ``reference`` (e.g. triangulated depth, in
    baselines) to ``pred`` (the network's depth): first the ratio of medians, then a least-squares
    refinement ``s = sum(pred·ref) / sum(ref^2)`` over the points within ``outlier_ratio`` relative
    error of the median fit. ``pred``, ``reference``, ``valid``: ``(B, N)``. Returns ``(B,)``
    (1 for an element without valid points); no gradient flows through it."""
    dims = check_tensor(pred, "pred", ("B", "N"))
    check_tensor(reference, "reference", ("B", "N"), dims=dims)
    check_tensor(valid, "valid", ("B", "N"), dims=dims, floating=False)
    pred, ref = pred.detach().float(), reference.detach().float()
    m = valid.bool() & (ref > 0) & (pred > 0)
    nan = torch.full_like(pred, torch.nan)
    s0 = torch.where(m, pred, nan).nanmedian(dim=1).values / torch.where(m, ref, nan).nanmedian(dim=1).values
    s0 = torch.nan_to_num(s0, nan=1.0)  # no valid point
    keep = m & ((pred - s0[:, None] * ref).abs() <= outlier_ratio * pred)
    num, den = (pred * ref * keep).sum(1), (ref.square() * keep).sum(1)
    return torch.where(den > 0, num / den.clamp(min=1e-12), s0)


def depth_loss(
    disps: Mapping[int, torch.Tensor],
    flow_fw: torch.Tensor,
    flow_bw: torch.Tensor,
    image1: torch.Tensor,
    image2: torch.Tensor,
    K: torch.Tensor,
    config: TrianFlowConfig | None = None,
    generator: RandomSource = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The depth stage's loss (TrianFlow's second stage, module doc) for the depth network's
    disparities ``{scale: (B, 1, H/2^s, W/2^s)}`` of ``image1``, given the frozen flow network's
    ``flow_fw`` / ``flow_bw`` ``(B, 2, H, W)`` between ``image1`` and ``image2`` and the
    intrinsics ``K (B, 3, 3)`` of the images' size:

    1. pose from F on the best-scored correspondences (:func:`pose_from_flow`), no pose network;
    2. their triangulated depth ``Z`` (:func:`triangulate_correspondences`, unit baseline);
    3. at each scale, the depth ``D`` (upsampled to the input) read at those pixels, the scale
       ``s`` that brings ``Z`` to it (:func:`align_scale`, no gradient), and
       ``mean |log D - log(s Z)|`` over the trusted points;
    4. ``image2`` warped into ``image1`` with ``D`` and ``(R, s t)``, the photometric error
       (``reprojection_ssim_weight`` SSIM + the rest L1) on pixels that are visible (forward-backward test) and rigid
       (flow within ``rigid_threshold`` pixels of its epipolar line);
    5. with ``flow_consistency_weight`` > 0, the rigid flow of ``D`` and ``(R, s t)`` against
       ``flow_fw`` on the same pixels, ``mean |rigid - flow|_1`` in pixels;
    6. smoothness of the mean-normalised disparity (``depth_smoothness``: edge-aware first order
       or chapter 07's second order), divided by ``2^scale``.

    With ``scale_free`` each disparity is divided by its mean before steps 3-5, so the loss has
    no gradient along the disparity's overall scale (``s`` carries none: without this the scale
    drifts during training).

    Batch elements whose pose is not usable (:attr:`FlowPose.ok` False) contribute only the
    smoothness. Returns ``(loss, logs)``: ``triangulation``, ``reprojection``, ``flow_consistency``,
    ``smoothness``, ``inlier_share``, ``points`` (trusted triangulated points per pair), ``rigid`` (share of
    pixels), ``pose_ok`` (share of pairs)."""
    from .. import twoview
    from ..camera import pixel_grid
    from ..pose import make_pose
    from ..warping import rigid_sample_points, rigid_warp

    cfg = config or TrianFlowConfig()
    dims = check_tensor(image1, "image1", ("B", 3, "H", "W"))
    check_tensor(image2, "image2", ("B", 3, "H", "W"), dims=dims)
    check_tensor(flow_fw, "flow_fw", ("B", 2, "H", "W"), dims=dims)
    check_tensor(flow_bw, "flow_bw", ("B", 2, "H", "W"), dims=dims)
    b, _, h, w = image1.shape
    K = K.float() if K.ndim == 3 else K.float()[None].expand(b, 3, 3)
    with torch.no_grad(), torch.autocast(image1.device.type, enabled=False):
        ff, fb = flow_fw.float(), flow_bw.float()
        pose = pose_from_flow(ff, fb, K, top_fraction=cfg.top_fraction, samples=cfg.samples,
                              threshold=cfg.ransac_threshold, generator=generator,
                              ransac_iters=cfg.ransac_iters or None)
        z, trusted = triangulate_correspondences(pose, K, cfg.min_parallax_deg)
        grid = pixel_grid(h, w, device=ff.device)[:2].reshape(2, -1).mT[None].expand(b, -1, -1)
        epi = twoview.sampson_distance(pose.F, grid, grid + ff.flatten(2).mT).reshape(b, 1, h, w)
        rigid = visible_mask(ff, fb, cfg.occlusion_a1, cfg.occlusion_a2) & (epi < cfg.rigid_threshold)
        rigid = rigid & pose.ok[:, None, None, None]
    tri_sum = photo_sum = smooth_sum = flow_sum = image1.new_zeros(())
    grid_img = grid[:1].mT.reshape(1, 2, h, w)  # the same pixel coordinates (u, v) as an image
    for s_, disp in sorted(disps.items()):
        disp_full = F.interpolate(disp.float(), size=(h, w), mode="bilinear", align_corners=False)
        if cfg.scale_free:
            disp_full = disp_full / disp_full.mean(dim=(1, 2, 3), keepdim=True)
        depth = 1.0 / disp_full
        d_at = depth.flatten(1).gather(1, pose.index)
        scale = align_scale(d_at, z, trusted)
        n = trusted.sum().clamp(min=1)
        log_err = (d_at.clamp(min=1e-6).log() - (scale[:, None] * z).clamp(min=1e-6).log()).abs()
        tri_sum = tri_sum + (log_err * trusted).sum() / n
        T = make_pose(pose.R.float(), scale[:, None] * pose.t.float())
        warped, inside = rigid_warp(image2, depth, T, K, padding_mode="border")
        err = photometric_error(warped, image1, alpha=cfg.reprojection_ssim_weight)
        m = (rigid & inside).to(err.dtype)
        photo_sum = photo_sum + (err * m).sum() / m.sum().clamp(min=1.0)
        if cfg.flow_consistency_weight > 0:
            uv, front = rigid_sample_points(depth, T, K)
            flow_err = (uv - grid_img - ff).abs().sum(dim=1, keepdim=True)
            mf = (rigid & front).to(flow_err.dtype)
            flow_sum = flow_sum + (flow_err * mf).sum() / mf.sum().clamp(min=1.0)
        if cfg.depth_smoothness == "edge1":
            small = resize(image1, tuple(disp.shape[-2:]))
            smooth_sum = smooth_sum + smoothness(disp.float(), small, order=1, normalize=True) / 2**s_
        else:  # no image edges: plain second-order smoothness (chapter 07's recipe)
            flat = torch.zeros_like(disp, dtype=torch.float32)
            smooth_sum = smooth_sum + smoothness(disp.float(), flat, order=2, normalize=True) / 2**s_
    loss = (cfg.triangulation_weight * tri_sum + cfg.reprojection_weight * photo_sum
            + cfg.flow_consistency_weight * flow_sum + cfg.depth_smoothness_weight * smooth_sum)
    logs = {"triangulation": tri_sum.detach(), "reprojection": photo_sum.detach(),
            "flow_consistency": flow_sum.detach(), "smoothness": smooth_sum.detach(),
            "inlier_share": pose.inliers.float().mean(), "points": trusted.float().sum(1).mean(),
            "rigid": rigid.float().mean(), "pose_ok": pose.ok.float().mean()}
    return loss, logs


def register_depth(pred: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """TrianFlow's scale registration: the factor ``c`` per batch element that brings the
    network's depth ``pred`` to the triangulated ``reference`` (in baselines), ``pred · c ≈
    reference``. First the median of ``reference / pred``, then, on the depths so scaled
    (``r_i = c_0 pred_i / reference_i``), the relative least-squares factor
    ``argmin_k sum (1 - k r_i)^2 = sum r_i / sum r_i^2``: at ``c = c_0 k`` the point loss
    ``mean (1 - c pred / reference)^2`` has zero derivative along the depth's overall scale,
    so the loss cannot move that scale (by design: it is unknown). With no point left out the
    product equals ``sum x / sum x^2`` (``x = pred / reference``): the median start cancels and
    only keeps the numbers near 1 (chapter 09, Exercise 9.4). ``(B, N)`` each; returns
    ``(B,)``, 1 for an element without valid points; **no gradient** flows through it."""
    dims = check_tensor(pred, "pred", ("B", "N"))
    check_tensor(reference, "reference", ("B", "N"), dims=dims)
    check_tensor(valid, "valid", ("B", "N"), dims=dims, floating=False)
    pred, ref = pred.detach().float(), reference.detach().float()
    m = valid.bool() & (ref > 0) & (pred > 0)
    ratio = torch.where(m, ref / pred.clamp(min=1e-12), torch.full_like(pred, torch.nan))
    c0 = torch.nan_to_num(ratio.nanmedian(dim=1).values, nan=1.0)
    r = torch.where(m, c0[:, None] * pred / ref.clamp(min=1e-12), torch.zeros_like(pred))
    num, den = r.sum(1), r.square().sum(1)
    return torch.where(den > 0, c0 * num / den.clamp(min=1e-12), c0)


def move_depth(depth: torch.Tensor, R: torch.Tensor, t: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame 1's pixels back-projected with ``depth (B, 1, H, W)`` and moved by ``X2 = R X1 + t``:
    ``(uv (B, 2, H, W) in frame 2, z (B, 1, H, W) their depth in frame 2)``."""
    from ..camera import pixel_grid

    dims = check_tensor(depth, "depth", ("B", 1, "H", "W"))
    check_tensor(R, "R", ("B", 3, 3), dims=dims)
    check_tensor(t, "t", ("B", 3), dims=dims)
    check_tensor(K, "K", ("B", 3, 3), dims=dims)
    b, _, h, w = depth.shape
    M = K @ R @ intrinsics_inverse(K)
    grid = pixel_grid(h, w, depth.dtype, depth.device).reshape(1, 3, h * w)
    p = (M @ grid) * depth.reshape(b, 1, h * w) + K @ t[..., None]
    z = p[:, 2:3]
    uv = p[:, :2] / torch.where(z.abs() > 1e-6, z, torch.full_like(z, 1e-6))
    return uv.reshape(b, 2, h, w), z.reshape(b, 1, h, w)


def paper_depth_loss(
    disp1: torch.Tensor,
    disp2: torch.Tensor,
    flow_fw: torch.Tensor,
    flow_bw: torch.Tensor | None,
    image1: torch.Tensor,
    image2: torch.Tensor,
    K: torch.Tensor,
    config: TrianFlowConfig | None = None,
    generator: RandomSource = None,
    flow_valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TrianFlow's depth stage as the paper defines it, for the full-resolution disparities
    ``disp1``, ``disp2`` ``(B, 1, H, W)`` of both frames, the forward and backward flow
    ``(B, 2, H, W)`` (with gradient when the flow network trains on) and ``K (B, 3, 3)``:

    1. the pose: F by RANSAC on correspondences drawn from the best ``top_fraction`` by the
       forward-backward score, ``E = K^T F K``, cheirality (:func:`pose_from_flow`; no gradient);
    2. soft weights per pixel: ``W = visible / (0.1 + D_fb) × [D_epi < rigid] / (1 + D_epi)``
       (``D_epi`` the Sampson distance to F's epipolar line, ``rigid_threshold``);
    3. ``samples`` correspondences drawn from the best ``top_fraction`` by ``W``, midpoint
       triangulation with ``|t| = 1``; kept where the rays meet at more than
       ``min_parallax_deg`` and the depth exceeds 0.01 in both views;
    4. each frame's depth ``D = 1 / disp`` registered to its triangulated points
       (:func:`register_depth`, no gradient): ``D^ = c D``;
    5. ``L_pt = mean (1 - D^(p) / D_tri)^2`` over the kept points of both frames;
       ``L_pj = sum W |1 - z' / D^_2(p')| / sum W``: every pixel of frame 1 back-projected with
       ``D^_1``, moved by ``[R | t]`` to depth ``z'`` at ``p'``, against frame 2's registered
       depth read there; edge-aware first-order smoothness of the mean-normalised disparity of
       both frames; and for the flow, the mean Sampson distance of the pixels whose distance lies
       between ``ransac_threshold`` and ``rigid_threshold`` (the geometric loss).

    No photometric term. With ``flow_bw`` None, ``flow_valid`` ``(B, 1, H, W)`` says which
    pixels' flow to trust (the oracle experiment: the world's exact flow) and ``D_fb = 0``.
    Returns ``(loss, logs)``: ``points``, ``consistency``, ``smoothness``, ``geometric``,
    ``tri_points`` (kept points per pair), ``rigid`` (share of pixels with ``W > 0``),
    ``pose_ok``, ``scale`` (mean registration factor: the network's depth, in baselines)."""
    from .. import twoview
    from ..camera import pixel_grid
    from ..warping import sample

    cfg = config or TrianFlowConfig()
    dims = check_tensor(image1, "image1", ("B", 3, "H", "W"))
    check_tensor(image2, "image2", ("B", 3, "H", "W"), dims=dims)
    check_tensor(disp1, "disp1", ("B", 1, "H", "W"), dims=dims)
    check_tensor(disp2, "disp2", ("B", 1, "H", "W"), dims=dims)
    check_tensor(flow_fw, "flow_fw", ("B", 2, "H", "W"), dims=dims)
    if flow_bw is None:
        if flow_valid is None:
            raise ValueError("paper_depth_loss needs flow_bw (the forward-backward test) or flow_valid")
        check_tensor(flow_valid, "flow_valid", ("B", 1, "H", "W"), dims=dims, floating=False)
    else:
        check_tensor(flow_bw, "flow_bw", ("B", 2, "H", "W"), dims=dims)
    check_same_device(image1=image1, flow_fw=flow_fw, K=K)
    b, _, h, w = image1.shape
    K = (K.float() if K.ndim == 3 else K.float()[None].expand(b, 3, 3)).contiguous()
    grid = pixel_grid(h, w, device=image1.device)[:2].reshape(2, -1).mT[None].expand(b, -1, -1)
    with torch.autocast(image1.device.type, enabled=False):
        flow = flow_fw.float()
        with torch.no_grad():
            ff = flow.detach()
            if flow_bw is None:
                vis, d_fb = flow_valid.bool(), torch.zeros_like(ff[:, :1])
            else:
                fb = flow_bw.detach().float()
                d_fb, _ = fb_consistency(ff, fb)
                vis = visible_mask(ff, fb, cfg.occlusion_a1, cfg.occlusion_a2)
            fb_weight = vis.float() / (0.1 + d_fb)
            pose = pose_from_flow(ff, None, K, score=fb_weight, top_fraction=cfg.top_fraction, samples=cfg.samples,
                                  threshold=cfg.ransac_threshold, generator=generator,
                                  ransac_iters=cfg.ransac_iters or None)
            R, t = pose.R.float(), pose.t.float()
        p2_all = grid + flow.flatten(2).mT  # with the flow's gradient
        epi = twoview.sampson_distance(pose.F, grid, p2_all).float()  # (B, HW)
        with torch.no_grad():
            e = epi.detach()
            rigid = (e < cfg.rigid_threshold).float() / (1.0 + e)
            weight = (fb_weight.flatten(1) * rigid * pose.ok[:, None].float()).reshape(b, 1, h, w)
            p1, _, index = sample_correspondences(ff, weight, cfg.top_fraction, cfg.samples, generator)
            drawn = weight.flatten(1).gather(1, index) > 0
        p2 = p2_all.gather(1, index[..., None].expand(-1, -1, 2))
        X, _ = twoview.triangulate_midpoint(p1, p2, K, K, R, t)
        X = X.float()
        z1, z2 = X[..., 2], (X @ R.mT + t[:, None])[..., 2]
        with torch.no_grad():
            p2d = p2.detach()
            parallax = ray_angle_deg(p1, p2d, K, R)
            inside = (p2d[..., 0] >= 0) & (p2d[..., 0] <= w - 1) & (p2d[..., 1] >= 0) & (p2d[..., 1] <= h - 1)
            kept = (drawn & pose.ok[:, None] & (parallax > cfg.min_parallax_deg) & inside
                    & (z1.detach() > 0.01) & (z2.detach() > 0.01) & torch.isfinite(X.detach()).all(-1))
        z1s = torch.where(kept, z1, torch.ones_like(z1))
        z2s = torch.where(kept, z2, torch.ones_like(z2))
        depth1, depth2 = 1.0 / disp1.float(), 1.0 / disp2.float()
        at1 = depth1.flatten(1).gather(1, index)
        at2 = sample(depth2, p2d.mT.reshape(b, 2, -1, 1), padding_mode="border")[0].flatten(1)
        c1, c2 = register_depth(at1, z1s, kept), register_depth(at2, z2s, kept)
        n = kept.sum().clamp(min=1)
        l_pt = (((1 - c1[:, None] * at1 / z1s).square() + (1 - c2[:, None] * at2 / z2s).square()) * kept).sum() / n
        reg1, reg2 = c1[:, None, None, None] * depth1, c2[:, None, None, None] * depth2
        uv, z_moved = move_depth(reg1, R, t, K)
        read, lands = sample(reg2, uv, padding_mode="border")
        m = weight * (lands & (z_moved > 0.01)).float()
        l_pj = (m * (1 - z_moved / read.clamp(min=1e-6)).abs()).sum() / m.sum().clamp(min=1e-6)
        smooth = (smoothness(disp1.float(), image1, order=1, normalize=True)
                  + smoothness(disp2.float(), image2, order=1, normalize=True))
        band = ((e > cfg.ransac_threshold) & (e < cfg.rigid_threshold) & vis.flatten(1)).float()
        l_geo = (epi * band).sum() / band.sum().clamp(min=1.0)
    loss = (cfg.point_weight * l_pt + cfg.consistency_weight * l_pj + cfg.depth_smoothness_weight * smooth
            + cfg.geometric_weight * l_geo)
    logs = {"points": l_pt.detach(), "consistency": l_pj.detach(), "smoothness": smooth.detach(),
            "geometric": l_geo.detach(), "tri_points": kept.float().sum(1).mean(), "rigid": (weight > 0).float().mean(),
            "pose_ok": pose.ok.float().mean(), "scale": 0.5 * (c1 + c2).mean()}
    return loss, logs


class TrianFlowNet(nn.Module):
    """TrianFlow's networks in one module: the flow network ``flow`` and, for the depth stage, the
    depth network (``encoder`` + ``decoder``, SfMLearner's disparity ``10·sigmoid + 0.01``)."""

    def __init__(self, config: TrianFlowConfig) -> None:
        super().__init__()
        self.config = config
        self.flow = FlowNet(width=config.flow_width, max_displacement=config.max_displacement,
                            normalize_features=config.normalize_features)
        if config.stage == "depth":
            self.encoder = ResNetEncoder(depth=18, width=config.encoder_width, in_channels=3)
            self.decoder = DepthDecoder(self.encoder.channels, scales=(0, 1, 2, 3), out_channels=1)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, *, with_depth: bool = False) -> Any:
        """Flow stage: the forward and backward flows at every level, ``({level: (B, 2, h, w)},
        {level: ...})``, in one batched pass over both orders. With ``with_depth`` (depth stage):
        ``{"flow_fw", "flow_bw"}`` the finest flows upsampled to the input (with gradient when the
        flow network trains on, :attr:`TrianFlowConfig.flow_trains`; None with the oracle flow),
        ``"disp"`` the disparities of ``image1`` and, with the paper's loss, ``"disp2"`` those of
        ``image2`` (both frames in one pass)."""
        b = image1.shape[0]
        if not with_depth:
            flows = self.flow(torch.cat([image1, image2]), torch.cat([image2, image1]))
            return {k: v[:b] for k, v in flows.items()}, {k: v[b:] for k, v in flows.items()}
        cfg = self.config
        out: dict[str, Any] = {"flow_fw": None, "flow_bw": None}
        if not cfg.oracle_flow:
            with torch.set_grad_enabled(cfg.flow_trains and torch.is_grad_enabled()):
                both = self.flow.flow(torch.cat([image1, image2]), torch.cat([image2, image1]))
            out["flow_fw"], out["flow_bw"] = both[:b], both[b:]
        if cfg.depth_loss == "paper":
            disp = self.depth(torch.cat([image1, image2]))
            out["disp"], out["disp2"] = {k: v[:b] for k, v in disp.items()}, {k: v[b:] for k, v in disp.items()}
        else:
            out["disp"] = self.depth(image1)
        return out

    def depth(self, image: torch.Tensor) -> dict[int, torch.Tensor]:
        """Disparity (inverse depth up to scale) at scales 0..3; depth stage only."""
        if not hasattr(self, "decoder"):
            raise NotImplementedError("this TrianFlow model is a flow-stage model: it has no depth network")
        return {s: sigmoid_to_disparity(v)[0] for s, v in self.decoder(self.encoder(image)).items()}


class TrianFlow(MonocularMethod):
    """TrianFlow for :class:`~lesson_lib.training.Trainer`: batches of
    :class:`~lesson_lib.data.VideoDataset` 3-frame snippets; the pair is the target and the next
    frame (``sources[:, 1]``), whose true flow (and depth) the validation set carries. The flow
    stage trains the flow network; the depth stage loads it from ``flow_weights``, freezes it and
    trains the depth network (:func:`depth_loss`)."""

    name: ClassVar[str] = "trianflow"
    config_class: ClassVar[type] = TrianFlowConfig
    net_class: ClassVar[type[nn.Module]] = TrianFlowNet
    stages: ClassVar[tuple[str, ...]] = ("flow", "depth")

    def __init__(self, config: TrianFlowConfig | None = None) -> None:
        self.config = config or TrianFlowConfig()
        self.load_pretrained = True
        """Whether :meth:`build_model` loads ``flow_weights`` (depth stage); :func:`lesson_lib.methods.load_model`
        turns it off: the file it loads holds every weight."""

    def build_model(self) -> nn.Module:
        from ..training.checkpoints import load_weights_into

        net = TrianFlowNet(self.config)
        cfg = self.config
        if self.load_pretrained and cfg.flow_weights:
            load_weights_into(net.flow, cfg.flow_weights, prefix="flow.", method=self.name)
        elif self.load_pretrained and cfg.stage == "depth" and not cfg.oracle_flow:
            raise ValueError("the depth stage needs the flow stage's weights: give --flow-weights PATH")
        return net

    def frozen_modules(self, model: nn.Module) -> list[nn.Module]:
        return [] if self.config.flow_trains else [self.net(model).flow]

    def lr_scales(self, model: nn.Module) -> list[tuple[nn.Module, float]]:
        cfg = self.config
        return [(self.net(model).flow, cfg.flow_lr_scale)] if cfg.stage == "depth" and cfg.flow_trains else []

    def data_options(self) -> dict[str, Any]:
        """``2 · frame_gap + 1``-frame snippets (the pair: the target and the last source), the
        world's flow to that frame in the validation items (and with ``oracle_flow`` in the
        training items: an experiment that uses ground truth)."""
        gap = self.config.frame_gap
        return {"snippet_length": 2 * gap + 1, "flow_offset": gap, "val_flow": True, "train_flow": self.config.oracle_flow}

    @property
    def predicts(self) -> frozenset[str]:
        """The flow stage's model predicts flow; the depth stage's depth, poses (from its flow and
        F, scaled by its depth) and flow."""
        return frozenset({"flow"}) if self.config.stage == "flow" else frozenset({"depth", "poses", "flow"})

    @property
    def pose_frames(self) -> int | None:
        """Three (the target and its neighbours, each pose from the flow to one of them, a frame
        away: the flow network's training gap); longer snippets are chained from them."""
        return 3 if "poses" in self.predicts else None

    @property
    def graph_blocker(self) -> str | None:
        if self.config.stage == "depth" and not self.config.ransac_iters:
            return ("the depth stage's adaptive RANSAC decides its sample count on the host; "
                    "a fixed count (--ransac-iters, e.g. 1024) reads nothing there")
        return None

    def _inputs(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        for key in ("target", "sources"):
            if key not in batch:
                raise KeyError(f"TrianFlow needs batches with 'target' and 'sources'; {key!r} is missing")
        image1, image2, K = batch["target"], batch["sources"][:, -1], batch.get("K")
        size = self.config.input_size
        if size is not None and K is not None and tuple(image1.shape[-2:]) != tuple(size):
            K = resize_intrinsics(K, tuple(image1.shape[-2:]), size)
        return resize(image1, size), resize(image2, size), K

    def _pair(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._inputs(batch)[:2]

    def loss(self, model: nn.Module, batch: Mapping[str, Any], ctx: StepContext | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        image1, image2, K = self._inputs(batch)
        if self.config.stage == "depth":
            if K is None:
                raise KeyError("TrianFlow's depth stage needs batches with 'K'")
            out = model(image1, image2, with_depth=True)
            if self.config.ransac_iters:  # every draw from the step's key: nothing the host must read
                gen = ctx.random() if ctx is not None else keyed_random.KeyedRandom.from_generator(None,
                                                                                                  image1.device)
            else:
                gen = ctx.generator if ctx is not None else None
            flow_fw, flow_bw, valid = out["flow_fw"], out["flow_bw"], None
            if self.config.oracle_flow:  # ground truth: an experiment, not self-supervision
                for key in ("flow", "flow_valid"):
                    if key not in batch:
                        raise KeyError(f"oracle_flow needs batches with the world's flow; {key!r} is missing")
                size = tuple(image1.shape[-2:])
                flow_fw = upsample_flow(batch["flow"].float(), size)
                valid = F.interpolate(batch["flow_valid"].float(), size=size, mode="nearest") > 0.5
                if self.config.depth_loss != "paper":
                    raise ValueError("oracle_flow is implemented for the paper's depth loss (depth_loss='paper')")
            if self.config.depth_loss == "paper":
                return paper_depth_loss(out["disp"][0], out["disp2"][0], flow_fw, flow_bw, image1, image2, K,
                                        self.config, generator=gen, flow_valid=valid)
            return depth_loss(out["disp"], out["flow_fw"], out["flow_bw"], image1, image2, K, self.config,
                              generator=gen)
        fw, bw = model(image1, image2)
        step = ctx.step if ctx is not None else self.config.occlusion_from_step
        return flow_loss(fw, bw, image1, image2, self.config, occlusion=step >= self.config.occlusion_from_step)

    def predict_disparity(self, model: nn.Module, image: torch.Tensor, *, post_processing: bool = False) -> torch.Tensor:
        """``(B, 1, H, W)`` inverse depth up to scale (depth-stage models; see :class:`MonocularMethod`)."""
        if "depth" not in self.predicts:
            raise NotImplementedError("a model of TrianFlow's flow stage predicts flow, not depth")
        return super().predict_disparity(model, image, post_processing=post_processing)

    @torch.no_grad()
    def predict_flow(self, model: nn.Module, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        """Forward flow ``(B, 2, H, W)`` in pixels of the given images (``image1 -> image2``, ``u``
        first): the images are resized to the network's input size and the flow back (its vectors
        scaled with the size). The model is evaluated in eval mode and left as it was."""
        from ..models import network_input_size

        net = self.net(model)
        dims = check_tensor(image1, "image1", ("B", 3, "H", "W"))
        check_tensor(image2, "image2", ("B", 3, "H", "W"), dims=dims)
        check_same_device(image1=image1, image2=image2, model=next(net.parameters()))
        size = self.config.input_size or network_input_size(*image1.shape[-2:])
        was = net.training
        net.eval()
        try:
            flow = net.flow.flow(resize(image1.float(), size), resize(image2.float(), size))
        finally:
            net.train(was)
        return upsample_flow(flow, tuple(image1.shape[-2:]))

    @torch.no_grad()
    def predict_poses(self, model: nn.Module, target: torch.Tensor, sources: torch.Tensor,
                      K: torch.Tensor | None = None, *, seed: int = 0) -> torch.Tensor:
        """``T_t_to_s (B, S, 4, 4)`` for each source of a snippet (sources in frame order), with
        no pose network: the rotation and the direction of translation from F on the flow
        between the target and the source (:func:`pose_from_flow`), the translation's length from
        the target's predicted depth (the scale that brings the triangulated points to it,
        :func:`align_scale`): translation in the depth's unknown unit, as a pose network's.
        ``K`` ``(B, 3, 3)`` or ``(3, 3)``: the intrinsics of the images' size (needed). A pair
        whose pose is not usable (standstill, no parallax) gets the identity. RANSAC draws from a
        generator seeded with ``seed`` (adaptively, or ``ransac_iters`` samples)."""
        from ..models import network_input_size
        from ..pose import make_pose

        if "poses" not in self.predicts:
            raise NotImplementedError("a model of TrianFlow's flow stage has no depth to scale its poses: use a depth-stage model")
        if K is None:
            raise ValueError("TrianFlow's poses need the images' intrinsics K (B, 3, 3): they come from F and the flow")
        net = self.net(model)
        dims = check_tensor(target, "target", ("B", 3, "H", "W"))
        check_tensor(sources, "sources", ("B", "S", 3, "H", "W"), dims=dims)
        if K.ndim == 2:
            K = K[None].expand(target.shape[0], 3, 3)
        check_tensor(K, "K", (dims["B"], 3, 3))
        check_same_device(target=target, sources=sources, K=K, model=next(net.parameters()))
        size = self.config.input_size or network_input_size(*target.shape[-2:])
        Ks = resize_intrinsics(K.float(), tuple(target.shape[-2:]), size)
        was = net.training
        net.eval()
        try:
            t_img = resize(target.float(), size)
            depth = 1.0 / net.depth(t_img)[0]
            g = torch.Generator(device=target.device).manual_seed(seed)
            out = []
            for j in range(sources.shape[1]):
                s_img = resize(sources[:, j].float(), size)
                both = net.flow.flow(torch.cat([t_img, s_img]), torch.cat([s_img, t_img]))
                b = target.shape[0]
                pose = pose_from_flow(both[:b], both[b:], Ks, top_fraction=self.config.top_fraction,
                                      samples=self.config.samples, threshold=self.config.ransac_threshold, generator=g,
                                      ransac_iters=self.config.ransac_iters or None)
                z, trusted = triangulate_correspondences(pose, Ks, self.config.min_parallax_deg)
                scale = align_scale(depth.flatten(1).gather(1, pose.index), z, trusted)
                T = make_pose(pose.R.float(), scale[:, None] * pose.t.float())
                eye = torch.eye(4, device=T.device).expand_as(T)
                out.append(torch.where(pose.ok[:, None, None], T, eye))
        finally:
            net.train(was)
        return torch.stack(out, dim=1)

    def validate(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, float]:
        if self.config.stage == "depth":
            depth = self.predict_depth(model, batch["target"], batch["K"])
            m = depth_metrics(depth, batch["depth"], median_scaling=True)
            return {"abs_rel_median": m["abs_rel"], "a1_median": m["a1"]}
        flow = self.predict_flow(model, batch["target"], batch["sources"][:, -1])
        valid = batch["flow_valid"].bool()
        return {"epe": flow_epe(flow, batch["flow"], valid),
                "epe_zero_flow": flow_epe(torch.zeros_like(flow), batch["flow"], valid)}
