"""Stereo by optimisation: disparity maps as the only parameters, no network (chapter 05).

The left and right disparity maps of one rectified pair are optimised directly with Adam,
with the losses of chapter 04 and nothing else:

- **Photometric**: the left image rebuilt from the right with ``d_L`` (read the right image at
  ``x - d_L``) must look like the left image, and the right image rebuilt from the left with
  ``d_R`` (read at ``x + d_R``) like the right one: :func:`lesson_lib.losses.photometric_error`
  (SSIM + L1, ``alpha = 0.85``) averaged over the pixels whose sample falls inside the image.
- **Smoothness**: edge-aware, :func:`lesson_lib.losses.smoothness` of each map with its own
  image (disparity may jump where the image has an edge).
- **Left-right consistency** (optional): ``|d_L(x) - d_R(x - d_L(x))|``, the right map read
  where each left pixel lands (:func:`lesson_lib.warping.stereo_warp`), and the same from the
  right view. Both maps must describe the same scene: where one is wrong the other pulls it
  back.

The photometric error only "sees" a pixel or two around the current estimate, so the maps are
optimised **coarse to fine**: on images downscaled by 8 (disparities of a few pixels), then
the result, upsampled and scaled, starts the optimisation at scale 4, 2 and 1. Disparity is
parametrised as ``softplus(raw)``, so it stays ``> 0`` (the course's sign convention).

All the randomness there is (an optional jitter of the start) comes from the ``seed``; on the
CPU two runs with the same arguments give the same maps.
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
from .matching import cost_volume, epe_bad, winner_take_all
from .warping import stereo_warp

__all__ = [
    "StereoResult",
    "downsample",
    "upsample_disparity",
    "stereo_losses",
    "optimise_disparity",
    "epe_bad",
]


class StereoResult(NamedTuple):
    """What :func:`optimise_disparity` returns (unpacks as ``d_left, d_right, history``).

    Attributes:
        disp_left, disp_right: ``(B, 1, H, W)`` full-resolution disparities in pixels.
        history: one dict per Adam step: ``scale``, ``step``, ``loss``, ``photometric``,
            ``smoothness``, ``consistency`` (floats; ``consistency`` is computed, and logged,
            even when its weight is 0) and ``time_s`` since the start.
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


def _inv_softplus(d: torch.Tensor) -> torch.Tensor:
    d = d.clamp(min=1e-3)
    return d + torch.log(-torch.expm1(-d))  # log(exp(d) - 1), stable for large d


def stereo_losses(
    left: torch.Tensor,
    right: torch.Tensor,
    disp_left: torch.Tensor,
    disp_right: torch.Tensor,
    alpha: float = 0.85,
) -> dict[str, torch.Tensor]:
    """The three loss terms of one scale, unweighted, averaged over both views (chapter 05).

    Returns:
        ``photometric`` (the rebuilt views against the real ones over valid warp pixels),
        ``smoothness`` (edge-aware, mean-normalised) and ``consistency`` (mean left-right
        disagreement in pixels of this resolution over the pixels whose match is inside).
    """
    rec_l, ok_l = stereo_warp(right, disp_left, "right")
    rec_r, ok_r = stereo_warp(left, disp_right, "left")
    photo = 0.5 * (
        losses.photometric_error(rec_l, left, alpha, mask=ok_l, reduction="mean")
        + losses.photometric_error(rec_r, right, alpha, mask=ok_r, reduction="mean")
    )
    smooth = 0.5 * (losses.smoothness(disp_left, left) + losses.smoothness(disp_right, right))
    dr_at_l, _ = stereo_warp(disp_right, disp_left, "right")
    dl_at_r, _ = stereo_warp(disp_left, disp_right, "left")
    consist = 0.5 * (
        losses.masked_mean((disp_left - dr_at_l).abs(), ok_l)
        + losses.masked_mean((disp_right - dl_at_r).abs(), ok_r)
    )
    return {"photometric": photo, "smoothness": smooth, "consistency": consist}


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
    scale: int,
    width: int,
    max_disp: int,
    init,
    init_value: float | None,
    init_window: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start of the coarsest scale, in its pixels."""
    size = tuple(left_s.shape[-2:])
    ratio = size[1] / width
    if init is None or init == "constant":
        value = max_disp / 2 if init_value is None else init_value
        d = torch.full_like(left_s[:, :1], value * ratio)
        return d, d.clone()
    if isinstance(init, str):
        if init != "wta":
            raise ValueError(f"init must be None, 'constant', 'wta', a tensor or a pair of tensors, got {init!r}")
        md = min(math.ceil(max_disp * ratio), size[1] - 1)
        kw = dict(window=init_window, cost="census", census_window=3)
        d_l = winner_take_all(cost_volume(left_s, right_s, md, reference="left", **kw))
        d_r = winner_take_all(cost_volume(left_s, right_s, md, reference="right", **kw))
        return d_l, d_r
    pair = (init, init) if isinstance(init, torch.Tensor) else tuple(init)
    if len(pair) != 2:
        raise ValueError("init: expected a tensor or a pair (left, right) of tensors")
    out = []
    for name, t in zip(("init left", "init right"), pair):
        check_tensor(t, name, (left_s.shape[0], 1, None, None))
        out.append(upsample_disparity(t.detach().to(left_s), size).clamp(min=0))
    return out[0], out[1]


def optimise_disparity(
    left: torch.Tensor,
    right: torch.Tensor,
    scales: Sequence[int] = (8, 4, 2),
    iters: int | Sequence[int] = (150, 100, 60),
    lr: float | Sequence[float] = (0.05, 0.1, 0.2),
    smoothness_weight: float | Sequence[float] = 0.05,
    lr_weight: float | Sequence[float] = 0.05,
    max_disp: int = 64,
    init=None,
    init_value: float | None = None,
    init_window: int = 3,
    init_noise: float = 0.0,
    alpha: float = 0.85,
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
        lr: Adam's learning rate per scale, in pixels of that scale (roughly the largest step
            a disparity takes per iteration).
        smoothness_weight: weight of the edge-aware smoothness (per scale or one number).
        lr_weight: weight of the left-right consistency term (0 switches it off).
        max_disp: largest disparity expected, in full-resolution pixels; sets the constant
            start (``max_disp / 2`` unless ``init_value``) and the range of the ``"wta"`` start.
        init: how the coarsest scale starts: ``None`` (or ``"constant"``) a constant map,
            ``"wta"`` the winner-take-all of that scale's census cost volume
            (:mod:`lesson_lib.matching`, window ``init_window``), or a full-resolution tensor
            ``(B, 1, H', W')`` in its own pixels (or a pair for left and right), resized.
        init_noise: standard deviation (pixels of the coarsest scale) of a Gaussian jitter
            added to the start, drawn from ``generator`` or from ``seed``.
        alpha: SSIM weight of the photometric error.
        progress: ``True`` prints one line per scale; a callable receives every history entry.

    Returns:
        :class:`StereoResult` ``(disp_left, disp_right, history)``, full resolution, detached.

    Raises:
        ValueError: bad shapes, ``max_disp < 0``, scales not positive integers, a per-scale
            list of the wrong length, negative weights or non-positive learning rates.
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
    cw_l = _per_scale(lr_weight, n, "lr_weight")
    if any(int(i) != i or i < 0 for i in iters_l):
        raise ValueError(f"iters must be integers >= 0, got {iters_l}")
    if any(not v > 0 for v in lr_l):
        raise ValueError(f"lr must be > 0, got {lr_l}")
    if any(not v >= 0 for v in sw_l + cw_l):
        raise ValueError("smoothness_weight and lr_weight must be >= 0")
    if init_noise < 0:
        raise ValueError(f"init_noise must be >= 0, got {init_noise}")
    gen = generator if generator is not None else torch.Generator(device=left.device).manual_seed(seed)

    h, w = left.shape[-2:]
    history: list[dict] = []
    t0 = time.perf_counter()
    d_l = d_r = None
    for k, (s, n_it, lr_s, sw, cw) in enumerate(zip(scales, iters_l, lr_l, sw_l, cw_l)):
        left_s, right_s = downsample(left, s), downsample(right, s)
        size = tuple(left_s.shape[-2:])
        if k == 0:
            with torch.no_grad():
                d_l, d_r = _initial_maps(left_s, right_s, s, w, max_disp, init, init_value, init_window)
                if init_noise > 0:
                    d_l = (d_l + init_noise * torch.randn(d_l.shape, generator=gen, device=d_l.device)).clamp(min=0)
                    d_r = (d_r + init_noise * torch.randn(d_r.shape, generator=gen, device=d_r.device)).clamp(min=0)
        else:
            d_l, d_r = upsample_disparity(d_l, size), upsample_disparity(d_r, size)
        raw_l = _inv_softplus(d_l.detach()).requires_grad_(True)
        raw_r = _inv_softplus(d_r.detach()).requires_grad_(True)
        opt = torch.optim.Adam([raw_l, raw_r], lr=lr_s)
        for step in range(int(n_it)):
            dl, dr = F.softplus(raw_l), F.softplus(raw_r)
            terms = stereo_losses(left_s, right_s, dl, dr, alpha)
            loss = terms["photometric"] + sw * terms["smoothness"]
            if cw > 0:
                loss = loss + cw * terms["consistency"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            entry = {"scale": s, "step": step, "loss": float(loss.detach())}
            entry.update({name: float(v.detach()) for name, v in terms.items()})
            entry["time_s"] = time.perf_counter() - t0
            history.append(entry)
            if callable(progress):
                progress(entry)
        with torch.no_grad():
            d_l, d_r = F.softplus(raw_l), F.softplus(raw_r)
        if progress is True and history:
            e = history[-1]
            print(
                f"scale 1/{s} ({size[1]}x{size[0]}): {int(n_it)} steps, loss {e['loss']:.4f} "
                f"(photometric {e['photometric']:.4f}, consistency {e['consistency']:.3f} px), "
                f"{e['time_s']:.1f} s"
            )
    with torch.no_grad():
        d_l, d_r = upsample_disparity(d_l, (h, w)), upsample_disparity(d_r, (h, w))
    return StereoResult(d_l.detach(), d_r.detach(), history)
