"""Stereo by optimisation: disparity maps as the only parameters, no network (chapter 05).

The left and right disparity maps of one rectified pair are optimised directly with Adam,
with the losses of chapter 04 and nothing else:

- **Photometric**: the left image rebuilt from the right with ``d_L`` (read the right image at
  ``x - d_L``) must look like the left image, and the right image rebuilt from the left with
  ``d_R`` (read at ``x + d_R``) like the right one: :func:`lesson_lib.losses.photometric_error`
  (SSIM + L1, ``alpha = 0.85``) averaged over the pixels whose sample falls inside the image.
- **Smoothness**: edge-aware, :func:`lesson_lib.losses.smoothness` of each map with its own
  image (disparity may jump where the image has an edge). ``edge_gain`` multiplies the image
  before its gradients are taken, so ``exp(-edge_gain |dI|)`` decides how much an edge
  relaxes the smoothness.
- **Left-right consistency**, optional, in two forms:

  - a loss term ``|d_L(x) - d_R(x - d_L(x))|`` (the right map read where each left pixel
    lands, with :func:`lesson_lib.warping.stereo_warp`), and the same from the right view;
    ``lr_consistency_mode="one_sided"`` penalises only ``d_L(x) > d_R(x - d_L(x))``, the
    physically impossible case (a pixel may be hidden behind a nearer one in the other view,
    but never be nearer than what the other view sees there);
  - the left-right *check* (:func:`lesson_lib.matching.left_right_check`) at the end of every
    scale, the last one included (``lr_fill``): pixels whose two maps disagree by more than
    ``lr_threshold`` are occluded or wrong, and take the background disparity of their row
    (:func:`lesson_lib.matching.fill_inconsistent`), so the next scale starts from there;
    optionally they are also left out of the photometric term while optimising
    (``occlusion_mask``).

On the Middlebury "Motorcycle" pair (measured) the check-and-fill is what makes the
left-right consistency pay: the loss term alone, symmetric or one-sided, does not improve the
maps, because in occlusions the symmetric term pulls the hidden background towards the
foreground.

The photometric error only "sees" a pixel or two around the current estimate, so the maps are
optimised **coarse to fine**: on images downscaled by the first factor of ``scales``, then
the result, upsampled and scaled, starts the optimisation at the next one. Disparity is
parametrised as ``softplus(raw)``, so it stays ``> 0`` (the course's sign convention).

The coarsest scale starts from a constant, from the winner-take-all of that scale's census cost
volume (:mod:`lesson_lib.matching`), or from maps you pass. All the randomness there is (an
optional jitter of the start) comes from the ``seed``; on the CPU two runs with the same
arguments give the same maps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import losses
from ._validate import check_same_device, check_tensor
from .matching import cost_volume, epe_bad, fill_inconsistent, left_right_check, winner_take_all
from .warping import stereo_warp

__all__ = [
    "StereoResult",
    "downsample",
    "upsample_disparity",
    "check_and_fill",
    "stereo_losses",
    "optimise_disparity",
    "epe_bad",
]

LR_MODES = ("symmetric", "one_sided")
INITS = ("constant", "wta", "wta_fill")


class StereoResult(NamedTuple):
    """What :func:`optimise_disparity` returns (unpacks as ``d_left, d_right, history``).

    Attributes:
        disp_left, disp_right: ``(B, 1, H, W)`` full-resolution disparities in pixels.
        history: one dict per Adam step: ``scale``, ``step``, ``loss`` (the weighted total),
            ``photometric``, ``smoothness``, ``consistency`` (unweighted; ``consistency`` is
            computed only when its weight is > 0, else NaN) and ``time_s`` since the start.
    """

    disp_left: torch.Tensor
    disp_right: torch.Tensor
    history: list[dict]


def downsample(image: torch.Tensor, scale: int) -> torch.Tensor:
    """The image reduced by ``scale`` (area averaging; size ``round(H / scale), round(W / scale)``)."""
    if scale == 1:
        return image
    h, w = image.shape[-2:]
    size = (max(1, round(h / scale)), max(1, round(w / scale)))
    return F.interpolate(image, size=size, mode="area")


def upsample_disparity(disparity: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A disparity map resized bilinearly to ``size`` and multiplied by the width ratio, so it
    stays in pixels of the new resolution."""
    if tuple(disparity.shape[-2:]) == tuple(size):
        return disparity
    factor = size[1] / disparity.shape[-1]
    up = F.interpolate(disparity, size=size, mode="bilinear", align_corners=False)
    return up * factor


def check_and_fill(
    disp_left: torch.Tensor, disp_right: torch.Tensor, threshold: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps with their left-right-inconsistent pixels replaced by the background of their
    row (:func:`lesson_lib.matching.left_right_check` and
    :func:`lesson_lib.matching.fill_inconsistent`; the right view is checked mirrored)."""
    ok_l = left_right_check(disp_left, disp_right, threshold)
    ok_r = left_right_check(disp_right.flip(-1), disp_left.flip(-1), threshold).flip(-1)
    return fill_inconsistent(disp_left, ok_l), fill_inconsistent(disp_right, ok_r)


def _inv_softplus(d: torch.Tensor) -> torch.Tensor:
    d = d.clamp(min=1e-3)
    return d + torch.log(-torch.expm1(-d))  # log(exp(d) - 1), stable for large d


def _per_sample_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return ((values * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3)).clamp(min=1.0)).mean()


def stereo_losses(
    left: torch.Tensor,
    right: torch.Tensor,
    disp_left: torch.Tensor,
    disp_right: torch.Tensor,
    alpha: float = 0.85,
    edge_gain: float = 1.0,
    consistency: bool = True,
    lr_consistency_mode: str = "symmetric",
    occlusion_threshold: float | None = None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one scale, unweighted, averaged over both views (chapter 05).

    The right view is handled as a mirrored left view (mirroring turns "read the left image at
    ``x + d``" into "read at ``x - d``"), so both views go through one batched warp.

    Args:
        left, right: ``(B, C, H, W)``; disp_left, disp_right: ``(B, 1, H, W)`` in pixels.
        consistency: compute the left-right term (two more warps).
        occlusion_threshold: when set, pixels whose left-right disagreement exceeds it (in
            pixels) are left out of the photometric term.

    Returns:
        ``photometric`` (the rebuilt views against the real ones over valid warp pixels),
        ``smoothness`` (edge-aware, mean-normalised) and, with ``consistency``,
        ``consistency`` (mean left-right disagreement in pixels of this resolution over the
        pixels whose match is inside the other view).
    """
    if lr_consistency_mode not in LR_MODES:
        raise ValueError(f"lr_consistency_mode must be one of {LR_MODES}, got {lr_consistency_mode!r}")
    targets = torch.cat([left, right.flip(-1)])
    sources = torch.cat([right, left.flip(-1)])
    disp = torch.cat([disp_left, disp_right.flip(-1)])
    rec, inside = stereo_warp(sources, disp, "right")
    out = {}
    mask = inside
    if consistency or occlusion_threshold is not None:
        other = torch.cat([disp_right, disp_left.flip(-1)])
        other_here, _ = stereo_warp(other, disp, "right")
        gap = disp - other_here
        if occlusion_threshold is not None:
            mask = inside & (gap.detach().abs() <= occlusion_threshold)
        if consistency:
            gap = gap.abs() if lr_consistency_mode == "symmetric" else gap.clamp(min=0)
            out["consistency"] = _per_sample_mean(gap, inside)
    photo = losses.photometric_error(rec, targets, alpha)
    out["photometric"] = _per_sample_mean(photo, mask)
    out["smoothness"] = losses.smoothness(disp, targets * edge_gain)
    return out


def _per_scale(value, n: int, name: str) -> list:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{name}: expected one value per scale ({n}), got {len(values)}")
    return values


def _initial_maps(
    left_s: torch.Tensor,
    right_s: torch.Tensor,
    width: int,
    max_disp: float,
    init,
    init_value: float | None,
    init_window: int,
    init_census_window: int,
    lr_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start of the coarsest scale, in its pixels."""
    size = tuple(left_s.shape[-2:])
    ratio = size[1] / width
    if init is None or (isinstance(init, str) and init == "constant"):
        value = max_disp / 2 if init_value is None else init_value
        d = torch.full_like(left_s[:, :1], value * ratio)
        return d, d.clone()
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"init must be None, one of {INITS}, a tensor or a pair of tensors, got {init!r}")
        md = max(0, min(math.ceil(max_disp * ratio), size[1] - 1))
        kw = dict(window=init_window, cost="census", census_window=init_census_window)
        d_l = winner_take_all(cost_volume(left_s, right_s, md, reference="left", **kw))
        d_r = winner_take_all(cost_volume(left_s, right_s, md, reference="right", **kw))
        if init == "wta_fill":
            d_l, d_r = check_and_fill(d_l, d_r, lr_threshold)
        return d_l, d_r
    pair = (init, init) if isinstance(init, torch.Tensor) else tuple(init)
    if len(pair) != 2:
        raise ValueError("init: expected a tensor or a pair (left, right) of tensors")
    out = []
    for name, t in zip(("init left", "init right"), pair):
        check_tensor(t, name, (left_s.shape[0], 1, None, None))
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains inf or NaN")
        out.append(upsample_disparity(t.detach().to(left_s), size).clamp(min=0))
    return out[0], out[1]


def optimise_disparity(
    left: torch.Tensor,
    right: torch.Tensor,
    scales: Sequence[int] = (4, 2, 1),
    iters: int | Sequence[int] = (300, 150, 40),
    lr: float | Sequence[float] = 0.1,
    smoothness_weight: float | Sequence[float] = 0.2,
    lr_consistency_weight: float | Sequence[float] = 0.0,
    max_disp: float = 64,
    init="wta",
    *,
    lr_fill: bool = True,
    lr_threshold: float = 1.0,
    lr_consistency_mode: str = "symmetric",
    occlusion_mask: bool = False,
    edge_gain: float = 10.0,
    final_lr_ratio: float = 0.1,
    alpha: float = 0.85,
    init_value: float | None = None,
    init_window: int = 5,
    init_census_window: int = 5,
    init_noise: float = 0.0,
    seed: int = 0,
    generator: torch.Generator | None = None,
    progress: bool | Callable[[dict], None] = False,
) -> StereoResult:
    """Optimise the left and right disparity maps of a rectified pair directly (chapter 05).

    Args:
        left, right: ``(B, C, H, W)`` rectified pair in ``[0, 1]``.
        scales: downscale factors, coarsest first (e.g. ``(8, 4, 2, 1)``); each scale starts
            from the previous one's maps, upsampled bilinearly and multiplied by the size
            ratio. When the last scale is not 1 the result is upsampled to full resolution the
            same way.
        iters: Adam steps per scale (one number for all scales, or one per scale).
        lr: Adam's learning rate per scale (one number or one per scale), in pixels of that
            scale: roughly the largest step a disparity takes per iteration. It decays along a
            cosine to ``lr * final_lr_ratio`` within each scale.
        smoothness_weight: weight of the edge-aware smoothness (per scale or one number).
        lr_consistency_weight: weight of the left-right consistency *loss term* (0: off).
        max_disp: largest disparity expected, in full-resolution pixels; sets the constant
            start (``max_disp / 2`` unless ``init_value``) and the range of the ``"wta"`` start.
        init: how the coarsest scale starts: ``None`` or ``"constant"`` (a constant map),
            ``"wta"`` (winner-take-all with parabola refinement of that scale's census cost
            volume, window ``init_window``, census square ``init_census_window``),
            ``"wta_fill"`` (the same, then the left-right check and background fill), or a
            tensor ``(B, 1, H', W')`` in its own pixels (or a pair for left and right),
            resized to the coarsest scale.
        lr_fill: at the end of every scale (the last one included), replace the pixels that
            fail the left-right check (disagreement > ``lr_threshold`` pixels of that scale)
            by the background of their row (:func:`check_and_fill`).
        lr_consistency_mode: ``"symmetric"`` (``|d_L - d_R(x - d_L)|``) or ``"one_sided"``
            (only ``d_L > d_R(x - d_L)`` is penalised).
        occlusion_mask: leave the pixels that currently fail the left-right check out of the
            photometric term.
        edge_gain: the image is multiplied by it before :func:`lesson_lib.losses.smoothness`
            takes its gradients (sharper edge-awareness).
        alpha: SSIM weight of the photometric error.
        init_noise: standard deviation (pixels of the coarsest scale) of a Gaussian jitter
            added to the start, drawn from ``generator`` or from ``seed``.
        progress: ``True`` prints one line per scale; a callable receives every history entry.

    Returns:
        :class:`StereoResult` ``(disp_left, disp_right, history)``, full resolution, detached.

    Raises:
        ValueError: bad shapes, ``max_disp < 0``, scales not positive integers, a per-scale
            list of the wrong length, negative weights, non-positive learning rates, an unknown
            ``init`` or ``lr_consistency_mode``.
    """
    dims = check_tensor(left, "left", ("B", "C", "H", "W"))
    check_tensor(right, "right", ("B", "C", "H", "W"), dims=dims)
    check_same_device(left=left, right=right)
    if isinstance(max_disp, bool) or not isinstance(max_disp, (int, float)) or not max_disp >= 0:
        raise ValueError(f"max_disp must be >= 0, got {max_disp!r}")
    scales = list(scales)
    if not scales or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of integers >= 1, got {scales!r}")
    n = len(scales)
    iters_l = _per_scale(iters, n, "iters")
    lr_l = _per_scale(lr, n, "lr")
    sw_l = _per_scale(smoothness_weight, n, "smoothness_weight")
    cw_l = _per_scale(lr_consistency_weight, n, "lr_consistency_weight")
    if any(isinstance(i, bool) or int(i) != i or i < 0 for i in iters_l):
        raise ValueError(f"iters must be integers >= 0, got {iters_l}")
    if any(not v > 0 for v in lr_l):
        raise ValueError(f"lr must be > 0, got {lr_l}")
    if any(not v >= 0 for v in sw_l + cw_l):
        raise ValueError("smoothness_weight and lr_consistency_weight must be >= 0")
    if lr_consistency_mode not in LR_MODES:
        raise ValueError(f"lr_consistency_mode must be one of {LR_MODES}, got {lr_consistency_mode!r}")
    if not lr_threshold >= 0:
        raise ValueError(f"lr_threshold must be >= 0, got {lr_threshold}")
    if not 0 < final_lr_ratio <= 1:
        raise ValueError(f"final_lr_ratio must be in (0, 1], got {final_lr_ratio}")
    if not init_noise >= 0:
        raise ValueError(f"init_noise must be >= 0, got {init_noise}")
    gen = generator if generator is not None else torch.Generator(device=left.device).manual_seed(seed)

    h, w = left.shape[-2:]
    history: list[dict] = []
    t0 = time.perf_counter()
    d_l = d_r = None
    occ = lr_threshold if occlusion_mask else None
    for k, (s, n_it, lr_s, sw, cw) in enumerate(zip(scales, iters_l, lr_l, sw_l, cw_l)):
        left_s, right_s = downsample(left, s), downsample(right, s)
        size = tuple(left_s.shape[-2:])
        with torch.no_grad():
            if k == 0:
                d_l, d_r = _initial_maps(
                    left_s, right_s, w, max_disp, init, init_value, init_window, init_census_window, lr_threshold
                )
                if init_noise > 0:
                    d_l = (d_l + init_noise * torch.randn(d_l.shape, generator=gen, device=d_l.device)).clamp(min=0)
                    d_r = (d_r + init_noise * torch.randn(d_r.shape, generator=gen, device=d_r.device)).clamp(min=0)
            else:
                d_l, d_r = upsample_disparity(d_l, size), upsample_disparity(d_r, size)
        raw = _inv_softplus(torch.cat([d_l, d_r])).requires_grad_(True)
        opt = torch.optim.Adam([raw], lr=lr_s)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(int(n_it), 1), eta_min=lr_s * final_lr_ratio)
        bsz = left.shape[0]
        for step in range(int(n_it)):
            d = F.softplus(raw)
            terms = stereo_losses(
                left_s, right_s, d[:bsz], d[bsz:], alpha, edge_gain, cw > 0, lr_consistency_mode, occ
            )
            loss = terms["photometric"] + sw * terms["smoothness"]
            if cw > 0:
                loss = loss + cw * terms["consistency"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            entry = {"scale": s, "step": step, "loss": float(loss.detach())}
            for name in ("photometric", "smoothness", "consistency"):
                entry[name] = float(terms[name].detach()) if name in terms else float("nan")
            entry["time_s"] = time.perf_counter() - t0
            history.append(entry)
            if callable(progress):
                progress(entry)
        with torch.no_grad():
            d = F.softplus(raw) if int(n_it) > 0 else torch.cat([d_l, d_r])
            d_l, d_r = d[:bsz], d[bsz:]
            if lr_fill:
                d_l, d_r = check_and_fill(d_l, d_r, lr_threshold)
        if progress is True:
            last = history[-1] if history and history[-1]["scale"] == s else None
            msg = f"scale 1/{s} ({size[1]}x{size[0]}): {int(n_it)} steps"
            if last is not None:
                msg += f", loss {last['loss']:.4f} (photometric {last['photometric']:.4f})"
            print(msg + f", {time.perf_counter() - t0:.1f} s")
    with torch.no_grad():
        d_l, d_r = upsample_disparity(d_l, (h, w)), upsample_disparity(d_r, (h, w))
    return StereoResult(d_l.detach().clone(), d_r.detach().clone(), history)
