"""Depth metrics (chapters 06 and 10): the seven numbers every depth paper reports.

For one image, over the pixels with ground truth (``min_depth < gt <= max_depth``), with
``d`` the predicted and ``g`` the true depth and ``n`` pixels::

    abs_rel  = mean(|d - g| / g)
    sq_rel   = mean((d - g)^2 / g)
    rmse     = sqrt(mean((d - g)^2))                 # metres
    rmse_log = sqrt(mean((log d - log g)^2))
    a1, a2, a3 = share of pixels with max(d / g, g / d) < 1.25, 1.25^2, 1.25^3

Each metric is computed **per image** and then averaged over the images (Eigen et al.'s
protocol, which KITTI papers follow); a pixel-weighted average over the whole set would give
images with more ground truth more weight.

*Median scaling*: a monocular network knows depth only up to one unknown factor, so each
prediction is multiplied by ``median(g) / median(d)`` over that image's valid pixels before the
errors are taken. A stereo-trained network (Monodepth) needs no such help: the baseline in
metres fixes its scale, so it is reported both ways, in metres and median-scaled.

The prediction is clamped to ``[min_depth, max_depth]`` after scaling (as the Eigen evaluation
does), so no ``log`` of zero can occur.

Disparity maps (chapter 05) are scored in pixels instead: :func:`epe_bad` gives the end-point
error and the share of pixels off by more than a threshold.

Masks that should find pixels (SfMLearner's explainability, TrianFlow's rigid mask) are scored
against the true pixels with :func:`roc_auc` and :func:`precision_recall`.

Camera motion (chapters 07, 09, 10) is scored in :mod:`lesson_lib.trajectory` (SfMLearner's
ATE-5 on short snippets, whole drives).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from ._validate import check_number, check_same_device, check_tensor

__all__ = [
    "METRIC_NAMES",
    "LOWER_IS_BETTER",
    "depth_metrics",
    "flow_epe",
    "image_depth_errors",
    "average_metrics",
    "garg_crop_mask",
    "depth_edges",
    "format_metrics",
    "epe_bad",
    "roc_auc",
    "precision_recall",
]

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
"""The seven metrics, in the order papers print them."""

LOWER_IS_BETTER = {"abs_rel": True, "sq_rel": True, "rmse": True, "rmse_log": True, "a1": False, "a2": False, "a3": False}


def image_depth_errors(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """The seven metrics of one image from its valid pixels only.

    Args:
        pred, gt: 1-D tensors of the same length: predicted and true depth (> 0) of the valid
            pixels of one image.
    """
    if pred.ndim != 1 or gt.shape != pred.shape:
        raise ValueError(f"pred and gt must be 1-D of the same length, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    if pred.numel() == 0:
        raise ValueError("no valid pixels: cannot compute depth errors of an image without ground truth")
    if not bool((pred > 0).all()) or not bool((gt > 0).all()):
        raise ValueError("pred and gt must be > 0 at the valid pixels (clamp the prediction first)")
    pred, gt = pred.double(), gt.double()
    ratio = torch.maximum(pred / gt, gt / pred)
    diff = pred - gt
    return {
        "abs_rel": float((diff.abs() / gt).mean()),
        "sq_rel": float((diff.square() / gt).mean()),
        "rmse": float(diff.square().mean().sqrt()),
        "rmse_log": float((pred.log() - gt.log()).square().mean().sqrt()),
        "a1": float((ratio < 1.25).double().mean()),
        "a2": float((ratio < 1.25**2).double().mean()),
        "a3": float((ratio < 1.25**3).double().mean()),
    }


def garg_crop_mask(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The crop of Garg et al. used for KITTI's Eigen split (chapter 10): rows
    ``[0.408, 0.992]·H``, columns ``[0.036, 0.964]·W``; ``(1, 1, H, W)`` bool."""
    height, width = check_number(height, "height", integer=True), check_number(width, "width", integer=True)
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} and {width}")
    mask = torch.zeros(1, 1, height, width, dtype=torch.bool, device=device)
    r0, r1 = int(0.40810811 * height), int(0.99189189 * height)
    c0, c1 = int(0.03594771 * width), int(0.96405229 * width)
    mask[..., r0:r1, c0:c1] = True
    return mask


def depth_edges(depth: torch.Tensor, ratio: float = 1.1, radius: int = 2) -> torch.Tensor:
    """Pixels near a depth discontinuity (chapter 06): within ``radius`` pixels (a square
    neighbourhood) of two 4-neighbours whose depths differ by more than the factor ``ratio``.

    Args:
        depth: ``(B, 1, H, W)`` depth in metres, ``<= 0`` where unknown (no edge is drawn to or
            from an unknown pixel).
        ratio: the jump that counts as an edge, ``> 1`` (1.1: a 10 % jump).
        radius: how far the band reaches from the jump, ``>= 0`` pixels.

    Returns:
        ``(B, 1, H, W)`` bool, true near an edge.
    """
    check_tensor(depth, "depth", ("B", 1, "H", "W"))
    if not ratio > 1:
        raise ValueError(f"ratio must be > 1, got {ratio}")
    if radius < 0 or int(radius) != radius:
        raise ValueError(f"radius must be an int >= 0, got {radius}")
    known = depth > 0
    z = depth.clamp(min=1e-6).log()
    limit = math.log(ratio)
    jump = torch.zeros_like(known)
    dx = ((z[..., :, 1:] - z[..., :, :-1]).abs() > limit) & known[..., :, 1:] & known[..., :, :-1]
    dy = ((z[..., 1:, :] - z[..., :-1, :]).abs() > limit) & known[..., 1:, :] & known[..., :-1, :]
    jump[..., :, 1:] |= dx
    jump[..., :, :-1] |= dx
    jump[..., 1:, :] |= dy
    jump[..., :-1, :] |= dy
    if radius == 0:
        return jump
    k = 2 * int(radius) + 1
    return torch.nn.functional.max_pool2d(jump.float(), k, stride=1, padding=int(radius)) > 0


def depth_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    median_scaling: bool = False,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    per_image: bool = False,
) -> dict[str, float] | list[dict[str, float]]:
    """Depth metrics of a batch, per image then averaged (see the module doc).

    Args:
        pred: ``(B, 1, H, W)`` predicted depth in metres (finite, ``>= 0``).
        gt: ``(B, 1, H, W)`` true depth; pixels with ``gt <= min_depth`` (0 = no ground truth,
            e.g. sky) or ``gt > max_depth`` are left out.
        mask: optional ``(B, 1, H, W)`` bool, more pixels to leave out (e.g. a crop).
        median_scaling: multiply each prediction by ``median(gt) / median(pred)`` first.
        min_depth, max_depth: the evaluated range (80 m as in KITTI's evaluation); the
            prediction is clamped to it.
        per_image: return the list of per-image dicts instead of their average.

    Returns:
        ``{"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"}`` (plus ``"scale"``, the
        mean median ratio, with ``median_scaling``).

    Raises:
        ValueError: wrong shapes, non-finite or negative predictions, or an image without any
            valid pixel.
    """
    dims = check_tensor(pred, "pred", ("B", 1, "H", "W"))
    check_tensor(gt, "gt", ("B", 1, "H", "W"), dims=dims)
    check_same_device(pred=pred, gt=gt)
    if mask is not None:
        check_tensor(mask, "mask", (pred.shape[0], 1, pred.shape[2], pred.shape[3]), floating=False)
        check_same_device(pred=pred, mask=mask)
    if not 0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    if not bool(torch.isfinite(pred).all()):
        raise ValueError("pred contains inf or NaN")
    if bool((pred < 0).any()):
        raise ValueError(f"pred must be >= 0 (depth), got minimum {float(pred.min()):.4g}")
    valid = (gt > min_depth) & (gt <= max_depth) & torch.isfinite(gt)
    if mask is not None:
        valid &= mask.bool()
    rows = []
    for b in range(pred.shape[0]):
        m = valid[b, 0]
        if not bool(m.any()):
            raise ValueError(f"image {b} of the batch has no valid ground-truth pixel in ({min_depth}, {max_depth}] m")
        p, g = pred[b, 0][m].double(), gt[b, 0][m].double()
        scale = 1.0
        if median_scaling:
            med = float(p.median())
            if med <= 0:
                raise ValueError(f"image {b}: median predicted depth is {med}, cannot median-scale")
            scale = float(g.median()) / med
            p = p * scale
        row = image_depth_errors(p.clamp(min_depth, max_depth), g)
        if median_scaling:
            row["scale"] = scale
        rows.append(row)
    return rows if per_image else average_metrics(rows)


def average_metrics(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean of per-image metric dicts (each image counts once)."""
    rows = list(rows)
    if not rows:
        raise ValueError("no metrics to average")
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def format_metrics(rows: Mapping[str, Mapping[str, float]], names: Iterable[str] = METRIC_NAMES) -> str:
    """A plain-text table: one row per entry of ``rows`` (label -> metrics), one column per metric."""
    names = list(names)
    width = max([len(str(k)) for k in rows] + [6])
    head = " " * width + "".join(f"{n:>10}" for n in names)
    lines = [head]
    for label, m in rows.items():
        lines.append(f"{label:<{width}}" + "".join(f"{m[n]:>10.4f}" for n in names))
    return "\n".join(lines)


def epe_bad(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    threshold: float = 2.0,
) -> tuple[float, float]:
    """End-point error and bad-``threshold`` share of a disparity map against ground truth
    (chapter 05).

    ``EPE = mean |pred - gt|`` and ``bad = mean(|pred - gt| > threshold)`` (a fraction in
    ``[0, 1]``, not a percentage), both over the pixels where ``valid`` is set (all pixels
    when ``valid`` is None), in float64.

    Args:
        pred, gt: disparities in pixels, any shape, the same for both (``(B, 1, H, W)`` maps).
        valid: optional bool tensor of the same shape: the pixels with ground truth.
        threshold: the error in pixels above which a pixel counts as bad (``>= 0``).

    Returns:
        ``(epe, bad)`` as Python floats.

    Raises:
        ValueError: shapes differ, ``valid`` selects no pixel, ``threshold < 0``, or an
            evaluated pixel is inf or NaN.

    Example:
        >>> epe_bad(torch.tensor([1.0, 2.0, 5.0]), torch.tensor([1.0, 1.0, 2.0]))
        (1.3333333333333333, 0.3333333333333333)
    """
    check_tensor(pred, "pred")
    check_tensor(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    err = (pred.detach() - gt.detach()).abs().double()
    if valid is not None:
        check_tensor(valid, "valid", floating=False)
        if valid.shape != pred.shape:
            raise ValueError(f"valid must have the shape of pred {tuple(pred.shape)}, got {tuple(valid.shape)}")
        err = err[valid.bool()]
    if err.numel() == 0:
        raise ValueError("valid selects no pixel")
    if not bool(torch.isfinite(err).all()):
        raise ValueError("pred or gt contains inf or NaN on the evaluated pixels")
    return float(err.mean()), float((err > threshold).double().mean())


def flow_epe(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """End-point error of optical flow (chapter 09): the mean over the ``valid`` pixels of the
    Euclidean length of ``pred - gt``, in pixels (float64).

    Args:
        pred, gt: ``(B, 2, H, W)`` flows in pixels.
        valid: optional ``(B, 1, H, W)`` bool, the pixels with a true flow.

    Raises:
        ValueError: shapes differ, ``valid`` selects no pixel, or an evaluated pixel is inf or NaN.
    """
    dims = check_tensor(pred, "pred", ("B", 2, "H", "W"))
    check_tensor(gt, "gt", ("B", 2, "H", "W"), dims=dims)
    err = (pred.detach().double() - gt.detach().double()).norm(dim=1, keepdim=True)
    if valid is not None:
        check_tensor(valid, "valid", ("B", 1, "H", "W"), dims=dims, floating=False)
        err = err[valid.bool()]
    if err.numel() == 0:
        raise ValueError("valid selects no pixel")
    if not bool(torch.isfinite(err).all()):
        raise ValueError("pred or gt contains inf or NaN on the evaluated pixels")
    return float(err.mean())


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for finding the ``labels == True`` pixels (any
    shapes, same number of elements): the probability that a random positive scores higher
    than a random negative, ties counting one half (the Mann-Whitney statistic, from the ranks
    of the scores). 1: perfect, 0.5: no better than chance, 0: perfectly inverted.

    Raises ``ValueError`` when there is no positive or no negative, or the scores are not finite.
    """
    s = torch.as_tensor(scores).flatten().double()
    y = torch.as_tensor(labels).flatten().bool()
    if s.numel() != y.numel():
        raise ValueError(f"scores and labels must have the same number of elements, got {s.numel()} and {y.numel()}")
    if not bool(torch.isfinite(s).all()):
        raise ValueError("scores must be finite")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"labels: need positives and negatives, got {n_pos} and {n_neg}")
    sorted_s, order = torch.sort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, s.numel() + 1, dtype=torch.float64)
    # tied scores share their mean rank
    uniq, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall(predicted: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Precision (share of the predicted pixels that are true) and recall (share of the true
    pixels predicted) of a boolean detection; NaN where a ratio has nothing to count."""
    p = torch.as_tensor(predicted).flatten().bool()
    y = torch.as_tensor(labels).flatten().bool()
    if p.numel() != y.numel():
        raise ValueError(f"predicted and labels must have the same number of elements, got {p.numel()} and {y.numel()}")
    tp = int((p & y).sum())
    n_p, n_y = int(p.sum()), int(y.sum())
    return {"precision": tp / n_p if n_p else float("nan"), "recall": tp / n_y if n_y else float("nan"),
            "predicted": n_p, "true": n_y}
