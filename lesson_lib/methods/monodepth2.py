"""Monodepth2 (Godard et al., ICCV 2019): three changes to SfMLearner-style training (chapter 11).

The networks are SfMLearner's (chapter 07) without the explainability mask: a depth network on
the target (``disp = 10·sigmoid + 0.01``, depth ``1 / disp`` up to scale) and a pose network
on the stacked snippet (``T_t_to_s`` per source). The photometric error is chapter 04's
``pe = 0.85·(1 - SSIM)/2 + 0.15·L1`` and the smoothness is edge-aware and first order on the
mean-normalised disparity, weight ``1e-3 / 2^s``. What Monodepth2 changes is *which pixels* and
*which errors* the loss averages:

1. **Per-pixel minimum reprojection.** A target pixel hidden in one source (occluded, or out of
   its view) is usually visible in the other. Averaging the two errors punishes the right depth
   for the hidden source's mismatch; taking the minimum over the sources keeps the source that
   sees the pixel::

       reproj(p) = min_s pe(I_t, I_s<p>)(p)        instead of   mean_s pe(I_t, I_s<p>)(p)

2. **Auto-masking.** A pixel that does not move relative to the camera (a car ahead at the
   camera's speed, a standing camera, the sky) looks the same in every frame: the *identity*
   reprojection, the source read in place without any warp, already matches it. For such a
   pixel the loss is best satisfied by infinite depth (no parallax), which is wrong for the car.
   Monodepth2 keeps only the pixels where warping beats not warping::

       mu(p) = [ reproj(p) < min_s pe(I_t, I_s)(p) ]

   (with the average reprojection of variant ``automask``, both sides are averaged over the
   sources instead). It is a hard mask, recomputed each step, with no parameters.

3. **Full-resolution multi-scale.** Every scale's disparity is upsampled to the input
   resolution before warping, so every scale is judged by the same full-resolution images
   (SfMLearner compared each scale with images reduced to it).

Each change is an option (``min_reprojection``, ``automask``, ``full_res``; all on by default);
the ablation's rows (:data:`VARIANTS`) are ``baseline`` (average reprojection, no mask, images
reduced to each scale), ``min_reprojection``, ``automask`` and ``full_res`` (each adds one change
to the baseline) and ``full`` (all three). Departures from the paper,
for a CPU: SfMLearner's stacked pose network with Euler angles (Monodepth2 runs a ResNet pose
encoder on each pair, axis-angle), the course's small encoder, ties broken by a fixed ``1e-5``
added to the identity error instead of random noise (so a step depends only on its inputs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .._validate import check_tensor
from ..images import downsample
from ..losses import photometric_error, smoothness
from ..training import NetworkOptions, StepContext, option
from ..warping import rigid_warp
from .sfmlearner import SfMLearner, SfMLearnerConfig, SfMLearnerNet, scale_views, snippet_poses

__all__ = ["VARIANTS", "Monodepth2Config", "Monodepth2", "monodepth2_loss", "min_reprojection", "automask"]

VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "baseline": (False, False, False),
    "min_reprojection": (True, False, False),
    "automask": (False, True, False),
    "full_res": (False, False, True),
    "full": (True, True, True),
}
"""The rows of Monodepth2's ablation: ``name -> (min_reprojection, automask, full_res)``;
:meth:`Monodepth2Config.variant` names a configuration by them."""

IDENTITY_TIE = 1e-5
"""Added to the identity error so a pixel whose warp is exactly as good as no warp is kept."""


@dataclass
class Monodepth2Config(NetworkOptions):
    """The method's own options; each becomes a command-line option of ``train monodepth2``."""

    min_reprojection: bool = option(True, "per-pixel minimum of the reprojection errors over the sources "
                                    "(instead of their average)")
    automask: bool = option(True, "auto-masking: keep only the pixels where the warp beats the identity reprojection")
    full_res: bool = option(True, "full-resolution multi-scale: warp every scale's disparity upsampled to the input "
                            "size (instead of comparing with images reduced to each scale)")
    encoder_width: int = option(16, "depth encoder width: 64 is ResNet-18; 16 trains on a CPU")
    encoder_depth: int = option(18, "depth encoder depth (18 or 34)", choices=(18, 34))
    pose_width: int = option(8, "pose network width (SfMLearner's network: 16 is the paper's, 8 a quarter of its "
                             "parameters)", choices=(4, 8, 16))
    n_sources: int = option(2, "source frames per snippet (2: 3-frame snippets, 4: 5-frame)", choices=(2, 4))
    ssim_weight: float = option(0.85, "weight of (1 - SSIM)/2 in the photometric error (the rest: L1)")
    smoothness: str = option("edge1", "edge1: Monodepth2's edge-aware first-order smoothness; flat2: chapter 07's "
                             "second-order one, not edge-aware", choices=("edge1", "flat2"))
    smoothness_weight: float = option(1e-3, "smoothness weight at full scale (divided by 2^s), on the mean-normalised "
                                      "disparity")
    scales: tuple[int, ...] = option((0, 1, 2, 3), "output scales the loss is summed over")
    input_height: int = option(0, "the networks' input height (multiple of 32); 0: the data's own size")
    input_width: int = option(0, "the networks' input width (multiple of 32); 0: the data's own size")

    def __post_init__(self) -> None:
        self.check_network_options(nonnegative=("smoothness_weight",))
        if not 0.0 <= self.ssim_weight <= 1.0:
            raise ValueError(f"Monodepth2Config.ssim_weight must be in [0, 1], got {self.ssim_weight}")

    @classmethod
    def from_variant(cls, name: str, **options: Any) -> Monodepth2Config:
        """The configuration of an ablation row of :data:`VARIANTS` (other options as keywords)."""
        if name not in VARIANTS:
            raise ValueError(f"unknown Monodepth2 variant {name!r}; the ablation's rows: {', '.join(VARIANTS)}")
        return cls(**dict(zip(("min_reprojection", "automask", "full_res"), VARIANTS[name])), **options)

    @property
    def variant(self) -> str:
        """The ablation row this configuration is (:data:`VARIANTS`), e.g. ``"full"``, or the
        changes it makes, joined by ``+`` (``"automask+full_res"``)."""
        flags = (self.min_reprojection, self.automask, self.full_res)
        for name, row in VARIANTS.items():
            if row == flags:
                return name
        return "+".join(n for n, on in zip(("min_reprojection", "automask", "full_res"), flags) if on)

    def network_config(self) -> SfMLearnerConfig:
        """SfMLearner's options for the same networks, without the explainability mask."""
        return SfMLearnerConfig(encoder_width=self.encoder_width, encoder_depth=self.encoder_depth,
                                pose_width=self.pose_width, n_sources=self.n_sources, mask=False,
                                input_height=self.input_height, input_width=self.input_width)


def min_reprojection(errors: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-pixel minimum of the reprojection errors over the sources.

    Args:
        errors: ``(B, S, H, W)`` one error map per source.
        valid: ``(B, S, H, W)`` bool, where each source's warp lands inside its image (None: all).

    Returns:
        ``(error (B, 1, H, W), source (B, 1, H, W) int64)``: the smallest error among the valid
        sources and the index of the source that gave it; pixels no source sees get error 0 and
        source -1.
    """
    check_tensor(errors, "errors", ("B", "S", "H", "W"))
    if valid is None:
        valid = torch.ones_like(errors, dtype=torch.bool)
    check_tensor(valid, "valid", tuple(errors.shape), floating=False)
    if valid.dtype != torch.bool:
        raise ValueError(f"valid: expected a bool tensor, got dtype {valid.dtype}")
    masked = torch.where(valid, errors, torch.full_like(errors, float("inf")))
    best, index = masked.min(dim=1, keepdim=True)
    seen = valid.any(dim=1, keepdim=True)
    return torch.where(seen, best, torch.zeros_like(best)), torch.where(seen, index, torch.full_like(index, -1))


def automask(reprojection: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """Monodepth2's auto-mask: ``reprojection < identity + 1e-5``, ``(B, 1, H, W)`` bool.

    Args:
        reprojection: ``(B, 1, H, W)`` the error with the warp (minimum or mean over sources).
        identity: ``(B, 1, H, W)`` the error without any warp, reduced over the sources the same way.
    """
    dims = check_tensor(reprojection, "reprojection", ("B", 1, "H", "W"))
    check_tensor(identity, "identity", ("B", 1, "H", "W"), dims=dims)
    return reprojection < identity + IDENTITY_TIE


def monodepth2_loss(
    outputs: Mapping[str, Any],
    target: torch.Tensor,
    sources: torch.Tensor,
    K: torch.Tensor,
    config: Monodepth2Config | None = None,
    T_t_to_s: torch.Tensor | None = None,
    return_maps: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Monodepth2's loss (see the module doc) for one batch, summed over scales.

    Args:
        outputs: :class:`~lesson_lib.methods.sfmlearner.SfMLearnerNet`'s output (``disp``, ``poses``).
        target: ``(B, 3, H, W)``; sources: ``(B, S, 3, H, W)``; K: ``(B, 3, 3)`` at ``(H, W)``.
        T_t_to_s: ``(B, S, 4, 4)`` poses to use instead of the predicted ones (e.g. the truth).
        return_maps: also return, at scale 0, ``"automask"`` ``(B, 1, H, W)`` bool (all True
            without auto-masking), ``"source"`` ``(B, 1, H, W)`` the source the minimum chose
            (-1 where none sees the pixel, or without the minimum), ``"reprojection"`` and
            ``"identity"`` error maps.

    Returns:
        ``(loss, terms)``: ``terms`` holds the detached ``"reprojection"`` and ``"smoothness"``
        (summed over scales) and ``"automask_mean"`` (fraction of pixels kept at scale 0).
    """
    cfg = config or Monodepth2Config()
    T_t_to_s = snippet_poses(outputs, target, sources, K, T_t_to_s)
    b, n_src = sources.shape[:2]
    H, W = target.shape[-2:]
    alpha = cfg.ssim_weight
    zero = target.new_zeros(())
    rep_sum, sm_sum, kept0 = zero, zero, zero
    maps: dict[str, torch.Tensor] = {}
    identity_cache: dict[int, torch.Tensor] = {}
    for s in cfg.scales:
        own, depth, tgt, src, K_s = scale_views(outputs, s, target, sources, K, full_res=cfg.full_res)
        factor = H // depth.shape[-2]
        errs, valids = [], []
        for j in range(n_src):
            warped, valid = rigid_warp(src[:, j], depth, T_t_to_s[:, j], K_s)
            errs.append(photometric_error(warped, tgt, alpha=alpha)[:, 0])
            valids.append(valid[:, 0].bool())
        err, ok = torch.stack(errs, dim=1), torch.stack(valids, dim=1)  # (B, S, h, w)
        if cfg.min_reprojection:
            reproj, chosen = min_reprojection(err, ok)
            seen = ok.any(dim=1, keepdim=True)
        else:  # the average over the sources that see the pixel
            okf = ok.to(err.dtype)
            reproj = (err * okf).sum(1, keepdim=True) / okf.sum(1, keepdim=True).clamp(min=1.0)
            chosen = torch.full_like(reproj, -1, dtype=torch.long)
            seen = ok.any(dim=1, keepdim=True)
        keep = seen
        value = reproj
        if cfg.automask:
            if factor not in identity_cache:
                with torch.no_grad():
                    ident = torch.stack([photometric_error(src[:, j], tgt, alpha=alpha)[:, 0] for j in range(n_src)], 1)
                    identity_cache[factor] = (ident.min(1, keepdim=True)[0] if cfg.min_reprojection
                                              else ident.mean(1, keepdim=True))
            identity = identity_cache[factor]
            keep = keep & automask(reproj.detach(), identity)
            # a masked pixel counts with its identity error, a constant (no gradient): the loss is
            # the mean of min(reprojection, identity), so masking a pixel never lowers it
            value = torch.where(keep, reproj, identity)
        seenf = seen.to(reproj.dtype)
        rep_sum = rep_sum + (value * seenf).sum() / seenf.sum().clamp(min=1.0)
        if s == 0:
            kept0 = keep.to(reproj.dtype).mean().detach()
            if return_maps:
                maps = {"automask": keep if cfg.automask else torch.ones_like(keep), "source": chosen,
                        "reprojection": reproj.detach(),
                        "identity": identity_cache[factor] if cfg.automask else torch.full_like(reproj, float("nan"))}
        if cfg.smoothness == "edge1":
            own_img = downsample(target, H // own.shape[-2])
            sm_sum = sm_sum + smoothness(own, own_img, order=1, normalize=True) / 2**s
        else:  # no image edges: plain second-order smoothness (chapter 07's recipe)
            sm_sum = sm_sum + smoothness(own, torch.zeros_like(own), order=2, normalize=True) / 2**s
    loss = rep_sum + cfg.smoothness_weight * sm_sum
    terms: dict[str, Any] = {"reprojection": rep_sum.detach(), "smoothness": sm_sum.detach(), "automask_mean": kept0}
    if return_maps:
        terms.update(maps)
    return loss, terms


class Monodepth2(SfMLearner):
    """Monodepth2 for :class:`~lesson_lib.training.Trainer`: SfMLearner's networks (no mask),
    Monodepth2's loss (:func:`monodepth2_loss`), the same batches (``target``, ``sources``,
    ``K``; for validation ``depth``). Depth is known only up to scale: evaluate it median-scaled."""

    name: ClassVar[str] = "monodepth2"
    config_class: ClassVar[type] = Monodepth2Config

    def describe(self) -> str:
        """The name and the variant, e.g. ``"monodepth2 (full)"``."""
        variant = self.config.variant
        return f"{self.name} ({variant})" if variant else self.name

    def __init__(self, config: Monodepth2Config | None = None) -> None:
        self.config = config or Monodepth2Config()

    def build_model(self) -> nn.Module:
        return SfMLearnerNet(self.config.network_config())

    def loss(
        self, model: nn.Module, batch: Mapping[str, Any], ctx: StepContext | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        target, sources, K = self.network_inputs(batch)
        return monodepth2_loss(model(target, sources), target, sources, K, self.config)

    @torch.no_grad()
    def loss_maps(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The loss's maps at full scale for a batch (at the network's input size): the
        auto-mask, the source the minimum chose, the reprojection and identity errors, and the
        disparity (see :func:`monodepth2_loss`); the model runs in eval mode and is left as it was."""
        was = model.training
        model.eval()
        try:
            target, sources, K = self.network_inputs(batch)
            outputs = model(target, sources)
            _, terms = monodepth2_loss(outputs, target, sources, K, self.config, return_maps=True)
        finally:
            model.train(was)
        return {k: terms[k] for k in ("automask", "source", "reprojection", "identity")} | {"disp": outputs["disp"][0]}
