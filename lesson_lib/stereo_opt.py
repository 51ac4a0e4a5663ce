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
    ``left_right_mode="one_sided"`` penalises only ``d_L(x) > d_R(x - d_L(x))``, the
    physically impossible case (a pixel may be hidden behind a nearer one in the other view,
    but never be nearer than what the other view sees there);
  - the left-right *check* (:func:`lesson_lib.matching.left_right_check`) at the end of every
    scale, the last one included (``left_right_fill``): pixels whose two maps disagree by more
    than ``left_right_threshold`` are occluded or wrong, and take the background disparity of their row
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
options give the same maps.

Every knob lives in one :class:`StereoOptions`, which checks its values when it is made;
:func:`optimise_disparity` runs the scales, :func:`optimise_scale` one of them::

    options = StereoOptions(iters=(150, 80, 20), left_right_weight=0.05)
    d_left, d_right, history = optimise_disparity(left, right, options=options)
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

import torch
import torch.nn.functional as F

from . import losses
from ._validate import check_number, check_same_device, check_tensor
from .images import downsample
from .matching import fill_inconsistent, left_right_check, stereo_cost_volume, winner_take_all
from .warping import stereo_warp

__all__ = [
    "LEFT_RIGHT_MODES",
    "INITS",
    "StereoOptions",
    "StereoResult",
    "upsample_disparity",
    "check_and_fill",
    "stereo_losses",
    "optimise_scale",
    "optimise_disparity",
]

LEFT_RIGHT_MODES = ("symmetric", "one_sided")
"""How the left-right consistency term penalises a disagreement (see the module doc)."""
INITS = ("constant", "wta", "wta_fill")
"""The named starts of the coarsest scale (:attr:`StereoOptions.init`)."""


PerScale = Union[float, Sequence[float]]
"""One number for every scale, or a sequence with one number per scale."""


def _option(default: Any, help: str) -> Any:
    """A dataclass field whose documentation travels with it (``fields(...)[i].metadata["help"]``)."""
    return field(default=default, metadata={"help": help})


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_odd_window(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1 and value % 2 == 1


@dataclass(frozen=True)
class StereoOptions:
    """Every setting of :func:`optimise_disparity` (chapter 05), checked when it is made.

    The defaults are the library's: three scales ``(4, 2, 1)`` with ``(300, 150, 40)`` Adam
    steps, learning rate 0.1 (an upper bound on a disparity's step per iteration, in pixels: Adam moves
    the softplus parameter, and the disparity follows by its derivative, < 1), smoothness weight 0.2, no left-right loss term but the
    left-right check and fill after every scale, a winner-take-all start. Each field's
    documentation is also in ``dataclasses.fields(StereoOptions)[i].metadata["help"]``. The
    object is frozen: make a variant with ``dataclasses.replace(options, iters=20)``, which
    checks again.

    ``iters``, ``learning_rate``, ``smoothness_weight`` and ``left_right_weight`` take one number
    for all scales or one per scale (stored as a tuple); :meth:`for_scale` reads them for one
    scale.

    Raises:
        ValueError: a bad value; the message names the field (``StereoOptions.iters ...``).
    """

    scales: tuple[int, ...] = _option(
        (4, 2, 1),
        "downscale factors, coarsest first (e.g. (8, 4, 2, 1)); each scale starts from the previous "
        "one's maps, upsampled bilinearly and multiplied by the size ratio; when the last is not 1 "
        "the result is upsampled to full resolution the same way",
    )
    iters: int | Sequence[int] = _option((300, 150, 40), "Adam steps per scale (one number or one per scale)")
    learning_rate: PerScale = _option(
        0.1,
        "Adam's learning rate per scale, in pixels of that scale: an upper bound on a disparity's step "
        "per iteration (Adam moves the softplus parameter; the disparity follows by softplus' slope, < 1); it decays along a cosine to learning_rate * final_learning_rate_ratio "
        "within each scale",
    )
    smoothness_weight: PerScale = _option(0.2, "weight of the edge-aware smoothness (per scale or one number)")
    left_right_weight: PerScale = _option(
        0.0, "weight of the left-right consistency loss term (per scale or one number; 0: off)"
    )
    max_disp: float = _option(
        64,
        "largest disparity expected, in full-resolution pixels; sets the constant start (max_disp / 2 "
        "unless init_value) and the range of the 'wta' start",
    )
    init: Any = _option(
        "wta",
        "how the coarsest scale starts: None or 'constant' (a constant map), 'wta' (winner-take-all with "
        "parabola refinement of that scale's census cost volume), 'wta_fill' (the same, then the "
        "left-right check and fill), or a tensor (B, 1, H', W') in its own pixels (or a pair for left "
        "and right), resized to the coarsest scale",
    )
    left_right_fill: bool = _option(
        True,
        "at the end of every scale (the last one included), replace the pixels that fail the "
        "left-right check by the background of their row (check_and_fill)",
    )
    left_right_threshold: float = _option(
        1.0, "largest left-right disagreement, in pixels of the scale, that still passes the check"
    )
    left_right_mode: str = _option(
        "symmetric",
        "the left-right loss term: 'symmetric' (|d_L - d_R(x - d_L)|) or 'one_sided' (only "
        "d_L > d_R(x - d_L) is penalised)",
    )
    occlusion_mask: bool = _option(
        False, "leave the pixels that currently fail the left-right check out of the photometric term"
    )
    edge_gain: float = _option(
        10.0, "the image is multiplied by it before the smoothness takes its gradients (sharper edge-awareness)"
    )
    final_learning_rate_ratio: float = _option(
        0.1, "the learning rate at the end of each scale, as a fraction of its start, in (0, 1]"
    )
    alpha: float = _option(0.85, "SSIM weight of the photometric error, in [0, 1]")
    init_value: float | None = _option(
        None, "the constant start in full-resolution pixels (None: max_disp / 2)"
    )
    init_window: int = _option(5, "window (odd) of the cost volume of the 'wta' start")
    init_census_window: int = _option(5, "census square (odd) of the cost volume of the 'wta' start")
    init_noise: float = _option(
        0.0,
        "standard deviation (pixels of the coarsest scale) of a Gaussian jitter added to the start, "
        "drawn from the generator passed to optimise_disparity, else from seed",
    )
    seed: int = _option(0, "seed of the jitter of the start when no generator is passed")

    def __post_init__(self) -> None:
        def fail(name: str, must: str) -> None:
            raise ValueError(f"StereoOptions.{name} must be {must}, got {getattr(self, name)!r}")

        def store(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # frozen: normalising happens here only

        if isinstance(self.scales, (str, bytes)) or not isinstance(self.scales, Sequence):
            fail("scales", "a non-empty sequence of integers >= 1")
        store("scales", tuple(self.scales))
        if not self.scales or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.scales):
            fail("scales", "a non-empty sequence of integers >= 1")
        n = len(self.scales)
        for name in ("iters", "learning_rate", "smoothness_weight", "left_right_weight"):
            value = getattr(self, name)
            if _is_number(value):
                values = [value]
            elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
                store(name, tuple(value))
                values = list(value)
                if len(values) != n:
                    raise ValueError(
                        f"StereoOptions.{name}: expected one value per scale ({n}), got {len(values)}"
                    )
            else:
                fail(name, "a number or a sequence of one number per scale")
            if any(not _is_number(v) or not math.isfinite(v) for v in values):
                fail(name, "finite numbers")
            if name == "iters" and any(int(v) != v or v < 0 for v in values):
                fail(name, "integers >= 0")
            if name == "learning_rate" and any(not v > 0 for v in values):
                fail(name, "> 0")
            if name.endswith("weight") and any(not v >= 0 for v in values):
                fail(name, ">= 0")
        if not _is_number(self.max_disp) or not 0 <= self.max_disp < math.inf:
            fail("max_disp", "a finite number >= 0")
        self._check_init()
        for name in ("left_right_fill", "occlusion_mask"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "True or False")
        if not _is_number(self.left_right_threshold) or not self.left_right_threshold >= 0:
            fail("left_right_threshold", ">= 0")
        if self.left_right_mode not in LEFT_RIGHT_MODES:
            fail("left_right_mode", f"one of {LEFT_RIGHT_MODES}")
        if not _is_number(self.edge_gain) or not 0 <= self.edge_gain < math.inf:
            fail("edge_gain", "a finite number >= 0")
        if not _is_number(self.final_learning_rate_ratio) or not 0 < self.final_learning_rate_ratio <= 1:
            fail("final_learning_rate_ratio", "in (0, 1]")
        if not _is_number(self.alpha) or not 0 <= self.alpha <= 1:
            fail("alpha", "in [0, 1]")
        if self.init_value is not None and (not _is_number(self.init_value) or not 0 <= self.init_value < math.inf):
            fail("init_value", "None or a finite number >= 0")
        for name in ("init_window", "init_census_window"):
            if not _is_odd_window(getattr(self, name)):
                fail(name, "an odd integer >= 1")
        if not _is_number(self.init_noise) or not 0 <= self.init_noise < math.inf:
            fail("init_noise", "a finite number >= 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            fail("seed", "an integer")

    def _check_init(self) -> None:
        init = self.init
        if init is None or isinstance(init, torch.Tensor):
            maps = [] if init is None else [init]
        elif isinstance(init, str):
            if init not in INITS:
                raise ValueError(
                    f"StereoOptions.init must be None, one of {INITS}, a tensor or a pair of tensors, got {init!r}"
                )
            maps = []
        elif isinstance(init, Sequence):
            maps = list(init)
            if len(maps) != 2 or not all(isinstance(t, torch.Tensor) for t in maps):
                raise ValueError("StereoOptions.init: expected a tensor or a pair (left, right) of tensors")
            object.__setattr__(self, "init", tuple(maps))
        else:
            raise ValueError(
                f"StereoOptions.init must be None, one of {INITS}, a tensor or a pair of tensors, "
                f"got {type(init).__name__}"
            )
        for t in maps:
            if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
                raise ValueError("StereoOptions.init: the start maps must be floating point, without inf or NaN")

    def for_scale(self, index: int) -> dict[str, float]:
        """The per-scale settings of scale number ``index`` (0: the coarsest): ``scale`` (its
        factor), ``iters``, ``learning_rate``, ``smoothness_weight``, ``left_right_weight``."""
        out: dict[str, float] = {"scale": self.scales[index]}
        for name in ("iters", "learning_rate", "smoothness_weight", "left_right_weight"):
            value = getattr(self, name)
            out[name] = value[index] if isinstance(value, tuple) else value
        return out


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


def upsample_disparity(disparity: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A disparity map resized bilinearly to ``size`` and multiplied by the width ratio, so it
    stays in pixels of the new resolution.

    Args:
        disparity: ``(B, 1, H, W)`` in pixels.
        size: the new ``(height, width)``.
    """
    check_tensor(disparity, "disparity", ("B", 1, "H", "W"))
    if len(size) != 2 or any(check_number(s, "size", integer=True) < 1 for s in size):
        raise ValueError(f"size: expected (height, width) >= 1, got {size!r}")
    size = (int(size[0]), int(size[1]))
    if tuple(disparity.shape[-2:]) == size:
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


def _check_views(left: torch.Tensor, right: torch.Tensor, disp_left: torch.Tensor, disp_right: torch.Tensor) -> None:
    dims = check_tensor(left, "left", ("B", "C", "H", "W"))
    check_tensor(right, "right", ("B", "C", "H", "W"), dims=dims)
    check_tensor(disp_left, "disp_left", ("B", 1, "H", "W"), dims=dims)
    check_tensor(disp_right, "disp_right", ("B", 1, "H", "W"), dims=dims)
    check_same_device(left=left, right=right, disp_left=disp_left, disp_right=disp_right)


def stereo_losses(
    left: torch.Tensor,
    right: torch.Tensor,
    disp_left: torch.Tensor,
    disp_right: torch.Tensor,
    alpha: float = 0.85,
    edge_gain: float = 1.0,
    consistency: bool = True,
    left_right_mode: str = "symmetric",
    occlusion_threshold: float | None = None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one scale, unweighted, averaged over both views (chapter 05).

    The right view is handled as a mirrored left view (mirroring turns "read the left image at
    ``x + d``" into "read at ``x - d``"), so both views go through one batched warp.

    Args:
        left, right: ``(B, C, H, W)``; disp_left, disp_right: ``(B, 1, H, W)`` in pixels.
        consistency: compute the left-right term (two more warps).
        left_right_mode: ``"symmetric"`` (``|d_L - d_R(x - d_L)|``) or ``"one_sided"`` (only
            ``d_L > d_R(x - d_L)`` counts).
        occlusion_threshold: when set, pixels whose left-right disagreement exceeds it (in
            pixels) are left out of the photometric term.

    Returns:
        ``photometric`` (the rebuilt views against the real ones over valid warp pixels),
        ``smoothness`` (edge-aware, mean-normalised) and, with ``consistency``,
        ``consistency`` (mean left-right disagreement in pixels of this resolution over the
        pixels whose match is inside the other view).
    """
    if left_right_mode not in LEFT_RIGHT_MODES:
        raise ValueError(f"left_right_mode must be one of {LEFT_RIGHT_MODES}, got {left_right_mode!r}")
    _check_views(left, right, disp_left, disp_right)
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
            gap = gap.abs() if left_right_mode == "symmetric" else gap.clamp(min=0)
            out["consistency"] = _per_sample_mean(gap, inside)
    photo = losses.photometric_error(rec, targets, alpha)
    out["photometric"] = _per_sample_mean(photo, mask)
    out["smoothness"] = losses.smoothness(disp, targets * edge_gain)
    return out


def _initial_maps(
    left_s: torch.Tensor, right_s: torch.Tensor, width: int, options: StereoOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start of the coarsest scale, in its pixels (``width``: the full-resolution width)."""
    size = tuple(left_s.shape[-2:])
    ratio = size[1] / width
    init = options.init
    if init is None or (isinstance(init, str) and init == "constant"):
        value = options.max_disp / 2 if options.init_value is None else options.init_value
        d = torch.full_like(left_s[:, :1], value * ratio)
        return d, d.clone()
    if isinstance(init, str):  # "wta" or "wta_fill"
        md = max(0, min(math.ceil(options.max_disp * ratio), size[1] - 1))
        kw = dict(window=options.init_window, cost="census", census_window=options.init_census_window)
        d_l = winner_take_all(stereo_cost_volume(left_s, right_s, md, reference="left", **kw))
        d_r = winner_take_all(stereo_cost_volume(left_s, right_s, md, reference="right", **kw))
        if init == "wta_fill":
            d_l, d_r = check_and_fill(d_l, d_r, options.left_right_threshold)
        return d_l, d_r
    pair = (init, init) if isinstance(init, torch.Tensor) else init
    out = []
    for name, t in zip(("init left", "init right"), pair):
        check_tensor(t, name, (left_s.shape[0], 1, None, None))
        out.append(upsample_disparity(t.detach().to(left_s), size).clamp(min=0))
    return out[0], out[1]


def optimise_scale(
    left: torch.Tensor,
    right: torch.Tensor,
    disp_left: torch.Tensor,
    disp_right: torch.Tensor,
    options: StereoOptions | None = None,
    index: int = 0,
    *,
    start_time: float | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> StereoResult:
    """One scale of the coarse-to-fine optimisation (chapter 05).

    Both maps, parametrised as ``softplus(raw)``, take ``iters`` Adam steps on the loss
    ``photometric + smoothness_weight * smoothness (+ left_right_weight * consistency)`` of
    :func:`stereo_losses`, with the learning rate decaying along a cosine from
    ``learning_rate`` to ``learning_rate * final_learning_rate_ratio``. With
    ``options.left_right_fill`` the maps then go through :func:`check_and_fill`.

    Args:
        left, right: ``(B, C, h, w)`` the rectified pair at this scale, in ``[0, 1]``.
        disp_left, disp_right: ``(B, 1, h, w)`` the start, in pixels of this scale (``>= 0``).
        options: the settings (default :class:`StereoOptions`); ``index`` picks the per-scale
            ones (:meth:`StereoOptions.for_scale`; 0 is the coarsest scale).
        start_time: ``time.perf_counter()`` at the start of the whole run (``time_s`` of the
            history counts from it); default: now.
        on_step: called with every history entry as it is made.

    Returns:
        :class:`StereoResult` ``(disp_left, disp_right, history)`` at this scale's resolution,
        detached; ``history`` holds this scale's steps only.
    """
    _check_views(left, right, disp_left, disp_right)
    options = StereoOptions() if options is None else options
    settings = options.for_scale(index)
    scale, n_it, rate = settings["scale"], int(settings["iters"]), settings["learning_rate"]
    sw, cw = settings["smoothness_weight"], settings["left_right_weight"]
    t0 = time.perf_counter() if start_time is None else start_time
    occ = options.left_right_threshold if options.occlusion_mask else None
    bsz = left.shape[0]
    history: list[dict] = []
    raw = _inv_softplus(torch.cat([disp_left, disp_right])).requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, max(n_it, 1), eta_min=rate * options.final_learning_rate_ratio
    )
    for step in range(n_it):
        d = F.softplus(raw)
        terms = stereo_losses(
            left, right, d[:bsz], d[bsz:], options.alpha, options.edge_gain, cw > 0, options.left_right_mode, occ
        )
        loss = terms["photometric"] + sw * terms["smoothness"]
        if cw > 0:
            loss = loss + cw * terms["consistency"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        entry = {"scale": scale, "step": step, "loss": float(loss.detach())}
        for name in ("photometric", "smoothness", "consistency"):
            entry[name] = float(terms[name].detach()) if name in terms else float("nan")
        entry["time_s"] = time.perf_counter() - t0
        history.append(entry)
        if on_step is not None:
            on_step(entry)
    with torch.no_grad():
        d = F.softplus(raw) if n_it > 0 else torch.cat([disp_left, disp_right])
        d_l, d_r = d[:bsz], d[bsz:]
        if options.left_right_fill:
            d_l, d_r = check_and_fill(d_l, d_r, options.left_right_threshold)
    return StereoResult(d_l.detach(), d_r.detach(), history)


def optimise_disparity(
    left: torch.Tensor,
    right: torch.Tensor,
    options: StereoOptions | None = None,
    *,
    generator: torch.Generator | None = None,
    progress: bool | Callable[[dict], None] = False,
) -> StereoResult:
    """Optimise the left and right disparity maps of a rectified pair directly (chapter 05).

    The coarsest scale starts from ``options.init`` (plus the optional jitter
    ``options.init_noise``); every scale runs :func:`optimise_scale` on the pair downscaled by
    its factor (:func:`lesson_lib.images.downsample`) and hands its maps, upsampled (:func:`upsample_disparity`),
    to the next one.

    Args:
        left, right: ``(B, C, H, W)`` rectified pair in ``[0, 1]``.
        options: every setting (:class:`StereoOptions`; default: its defaults).
        generator: draws the jitter of the start; default a CPU or CUDA generator seeded with
            ``options.seed``.
        progress: ``True`` prints one line per scale; a callable receives every history entry.

    Returns:
        :class:`StereoResult` ``(disp_left, disp_right, history)``, full resolution, detached.

    Raises:
        ValueError: bad shapes or devices, a start map of the wrong batch size (bad settings
            are rejected earlier, by :class:`StereoOptions`).

    Example::

        options = StereoOptions(scales=(2, 1), iters=(100, 50), max_disp=16)
        d_left, d_right, history = optimise_disparity(left, right, options=options)
    """
    options = StereoOptions() if options is None else options
    if not isinstance(options, StereoOptions):
        raise TypeError(f"options: expected a StereoOptions, got {type(options).__name__}")
    dims = check_tensor(left, "left", ("B", "C", "H", "W"))
    check_tensor(right, "right", ("B", "C", "H", "W"), dims=dims)
    check_same_device(left=left, right=right)
    gen = generator if generator is not None else torch.Generator(device=left.device).manual_seed(options.seed)
    on_step = progress if callable(progress) else None

    h, w = left.shape[-2:]
    history: list[dict] = []
    t0 = time.perf_counter()
    d_l = d_r = None
    for k, s in enumerate(options.scales):
        left_s, right_s = downsample(left, s), downsample(right, s)
        size = tuple(left_s.shape[-2:])
        with torch.no_grad():
            if k == 0:
                d_l, d_r = _initial_maps(left_s, right_s, w, options)
                noise = options.init_noise
                if noise > 0:
                    d_l = (d_l + noise * torch.randn(d_l.shape, generator=gen, device=d_l.device)).clamp(min=0)
                    d_r = (d_r + noise * torch.randn(d_r.shape, generator=gen, device=d_r.device)).clamp(min=0)
            else:
                d_l, d_r = upsample_disparity(d_l, size), upsample_disparity(d_r, size)
        d_l, d_r, steps = optimise_scale(left_s, right_s, d_l, d_r, options, k, start_time=t0, on_step=on_step)
        history.extend(steps)
        if progress is True:
            msg = f"scale 1/{s} ({size[1]}x{size[0]}): {len(steps)} steps"
            if steps:
                msg += f", loss {steps[-1]['loss']:.4f} (photometric {steps[-1]['photometric']:.4f})"
            print(msg + f", {time.perf_counter() - t0:.1f} s")
    with torch.no_grad():
        d_l, d_r = upsample_disparity(d_l, (h, w)), upsample_disparity(d_r, (h, w))
    return StereoResult(d_l.detach().clone(), d_r.detach().clone(), history)
