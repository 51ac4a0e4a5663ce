"""The evaluation protocol every depth method is measured with (chapters 06-11).

One protocol, one place: the synthetic test split (:data:`TEST_SEQUENCES` worlds of
:data:`TEST_FRAMES` frames: 100 images), ground truth up to :data:`MAX_DEPTH` metres, the seven
metrics of :mod:`lesson_lib.metrics` computed **per image, then averaged**, both in the method's
own scale ("metres", meaningful only for a method with metric depth such as stereo-trained
Monodepth) and after per-image median scaling (the only fair comparison for monocular methods,
whose depth is known up to scale), each without and with the flip post-processing.

Any method plugs in through a *depth predictor*: a function
``predict(image (B,3,H,W), K (B,3,3), baseline (B,), post_processing: bool) -> depth (B,1,H,W)``;
:func:`evaluate_model` builds it from a model and its :class:`~lesson_lib.training.Method`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validate import check_tensor
from .metrics import average_metrics, depth_metrics
from .trajectory import ate_snippets, snippet_trajectory

__all__ = [
    "CROPS",
    "TEST_SEQUENCES",
    "TEST_FRAMES",
    "MAX_DEPTH",
    "DepthPredictor",
    "test_split",
    "evaluate",
    "evaluate_model",
    "model_predictor",
    "per_image_metrics",
    "region_abs_rel",
    "row_baseline",
    "paired_bootstrap",
    "evaluate_poses",
    "chained_poses",
    "mean_motion_poses",
    "evaluate_flow",
    "relative_pose_errors",
    "drive_motions",
    "pose_predictor",
    "evaluate_method",
]

TEST_SEQUENCES, TEST_FRAMES = 20, 5
"""The synthetic test split the course reports: seeds 20000-20019, 5 frames each (100 images)."""

MAX_DEPTH = 80.0
"""Ground truth beyond this many metres is left out, and predictions are clamped to it (KITTI's cap)."""

CROPS = (None, "garg")
"""The evaluated region: None, the whole image (the synthetic splits); "garg", Garg et al.'s crop (KITTI)."""

DepthPredictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]


def _batch_item(batch: Any, key: str, spec: tuple, dims: dict, floating: bool = True) -> torch.Tensor:
    """``batch[key]`` of a batch the DataLoader made from ``dataset``, checked against ``spec``
    (with the batch dimension), so a wrong item fails with a message that names the dataset."""
    if not isinstance(batch, Mapping) or key not in batch:
        have = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ValueError(f"dataset: expected items with {key!r}, got {have}")
    check_tensor(batch[key], f"dataset's {key!r} (batched)", spec, dims=dims, floating=floating)
    return batch[key]


def _stereo_batch(batch: Any) -> tuple[torch.Tensor, ...]:
    """``left (B,3,H,W)``, ``depth (B,1,H,W)``, ``K (B,3,3)`` and ``baseline (B,)`` of a batch."""
    dims: dict = {}
    return (_batch_item(batch, "left", ("B", 3, "H", "W"), dims), _batch_item(batch, "depth", ("B", 1, "H", "W"), dims),
            _batch_item(batch, "K", ("B", 3, 3), dims), _batch_item(batch, "baseline", ("B",), dims))


def _video_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``target (B,3,H,W)``, ``sources (B,S,3,H,W)`` and ``T_t_to_s (B,S,4,4)`` of a batch."""
    dims: dict = {}
    return (_batch_item(batch, "target", ("B", 3, "H", "W"), dims),
            _batch_item(batch, "sources", ("B", "S", 3, "H", "W"), dims),
            _batch_item(batch, "T_t_to_s", ("B", "S", 4, 4), dims))


def test_split(split: str = "test", sequences: int = TEST_SEQUENCES, frames: int = TEST_FRAMES,
               progress: bool = False) -> Any:
    """The stereo dataset of an evaluation split (``"test"``, ``"test_shifted"`` or ``"val"``),
    rendered or read from the cache, without augmentation."""
    from .data.synthetic import StereoDataset, load_split

    if sequences < 1 or frames < 1:
        raise ValueError(f"sequences and frames must be >= 1, got {sequences} and {frames}")
    return StereoDataset(load_split(split, sequences, frames, progress=progress), augment=False)


@torch.no_grad()
def per_image_metrics(
    predict: DepthPredictor,
    dataset: Any,
    *,
    batch_size: int = 8,
    post_processing: Sequence[bool] = (False, True),
    max_depth: float = MAX_DEPTH,
    metric: bool = True,
    device: torch.device | str = "cpu",
    crop: str | None = None,
) -> dict[str, list[dict[str, float]]]:
    """The metrics of every image of ``dataset`` (in its order), ``{label: [row per image]}``,
    with the labels of :func:`evaluate`: what paired comparisons between two models need."""
    from torch.utils.data import DataLoader

    from .metrics import garg_crop_mask

    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows: dict[str, list[dict[str, float]]] = {}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        left, gt, K, baseline = (t.to(device) for t in _stereo_batch(batch))
        mask = None
        if crop == "garg":
            mask = garg_crop_mask(*gt.shape[-2:], device=gt.device).expand(gt.shape[0], 1, *gt.shape[-2:])
        for pp in post_processing:
            depth = predict(left, K, baseline, bool(pp))
            check_tensor(depth, "the depth predict returned", tuple(gt.shape))
            suffix = " + pp" if pp else ""
            if metric:
                rows.setdefault("metres" + suffix, []).extend(
                    depth_metrics(depth, gt, mask, max_depth=max_depth, per_image=True))
            rows.setdefault("median-scaled" + suffix, []).extend(
                depth_metrics(depth, gt, mask, max_depth=max_depth, median_scaling=True, per_image=True)
            )
    order = [f"{kind}{s}" for kind in ("metres", "median-scaled") for s in ("", " + pp")]
    return {k: rows[k] for k in order if k in rows}


def evaluate(
    predict: DepthPredictor,
    dataset: Any,
    *,
    batch_size: int = 8,
    post_processing: Sequence[bool] = (False, True),
    max_depth: float = MAX_DEPTH,
    metric: bool = True,
    device: torch.device | str = "cpu",
    crop: str | None = None,
) -> dict[str, dict[str, float]]:
    """The seven depth metrics of a depth predictor on ``dataset`` (items with ``left``,
    ``depth``, ``K``, ``baseline``), per image then averaged, up to ``max_depth`` metres, over
    the whole image (``crop=None``, the course's synthetic protocol: the world has exact depth
    everywhere) or inside Garg et al.'s crop (``crop="garg"``, KITTI's Eigen protocol: its LiDAR
    covers only the lower part of the image).

    Returns ``{label: metrics}`` with labels ``"metres"`` (only with ``metric``) and
    ``"median-scaled"``, each followed by the same with ``" + pp"`` for
    ``post_processing=True``, in that order.
    """
    rows = per_image_metrics(predict, dataset, batch_size=batch_size, post_processing=post_processing,
                             max_depth=max_depth, metric=metric, device=device, crop=crop)
    return {k: average_metrics(v) for k, v in rows.items()}


def region_abs_rel(
    predict: DepthPredictor,
    dataset: Any,
    region: str = "moving",
    *,
    min_pixels: int = 100,
    batch_size: int = 10,
    max_depth: float = MAX_DEPTH,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The abs rel of a depth predictor on one region of each image, e.g. the moving cars.

    Each image is median-scaled over **all** its valid pixels (truth in (0, ``max_depth``]),
    as in :func:`evaluate`, and the abs rel is then taken over the valid pixels of the item's
    boolean map ``region`` (``"moving"`` in the course's datasets: pixels of objects moving in
    the world), the prediction clamped to ``[1e-3, max_depth]``. Images with fewer than
    ``min_pixels`` such pixels are skipped. Returns one value per kept image, in dataset order.
    """
    from torch.utils.data import DataLoader

    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
    errs: list[float] = []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            if region not in batch:
                raise KeyError(f"the dataset's items have no {region!r} map (they have {sorted(batch)})")
            left, gt, K, baseline = (t.to(device) for t in _stereo_batch(batch))
            _batch_item(batch, region, tuple(gt.shape), {}, floating=False)
            depth = predict(left, K, baseline, False)
            check_tensor(depth, "the depth predict returned", tuple(gt.shape))
            for p, g, r in zip(depth.float(), gt.float(), batch[region].to(device)):
                valid = (g > 0) & (g <= max_depth)
                inside = valid & r.bool()
                if int(inside.sum()) < min_pixels:
                    continue
                if not bool(torch.isfinite(p[valid]).all()) or bool((p[valid] <= 0).any()):
                    raise ValueError("the predicted depth must be finite and positive on the valid pixels")
                scale = g[valid].median() / p[valid].median()
                pred = (p[inside] * scale).clamp(1e-3, max_depth)
                errs.append(float(((pred - g[inside]).abs() / g[inside]).mean()))
    return np.asarray(errs, dtype=np.float64)


def row_baseline(train_depth: Any, statistic: str = "median", max_depth: float = MAX_DEPTH) -> torch.Tensor:
    """The course's trivial depth "predictor": for every pixel, the median (or mean) true depth
    of its image row over training depth maps, whatever the image shows (the road gets nearer
    towards the bottom of every street scene).

    Args:
        train_depth: ``(N, H, W)`` depth maps (array or tensor, metres; 0 = no depth, e.g. sky);
            only depths in ``(0, max_depth]`` count.
        statistic: ``"median"`` (the middle value; the mean of the two middle ones for an even
            count, as ``numpy.median``) or ``"mean"``.

    Returns:
        ``(1, 1, H, 1)`` float32, to broadcast over images of width ``W``; a row with no depth in
        any map gets ``max_depth``.

    Raises:
        ValueError: not ``(N, H, W)``, an unknown statistic, a negative or non-finite depth.
    """
    try:
        depth = torch.as_tensor(train_depth).float()
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"train_depth: expected (N, H, W) depth maps as an array or tensor, got "
                        f"{type(train_depth).__name__} ({e})") from None
    if depth.ndim != 3 or depth.numel() == 0:
        raise ValueError(f"train_depth: expected non-empty (N, H, W) depth maps, got shape {tuple(depth.shape)}")
    if statistic not in ("median", "mean"):
        raise ValueError(f"statistic must be 'median' or 'mean', got {statistic!r}")
    if not bool(torch.isfinite(depth).all()) or bool((depth < 0).any()):
        raise ValueError("train_depth must be finite and >= 0 (0 = no depth)")
    ok = (depth > 0) & (depth <= max_depth)
    by_row = torch.where(ok, depth, torch.nan).permute(1, 0, 2).flatten(1)  # (H, N·W)
    n = ok.permute(1, 0, 2).flatten(1).sum(1)  # depths per row
    if statistic == "median":
        ordered = by_row.sort(dim=1).values  # NaN (no depth) sorts last
        lo, hi = ((n - 1).clamp(min=0) // 2)[:, None], (n // 2).clamp(max=by_row.shape[1] - 1)[:, None]
        value = 0.5 * (ordered.gather(1, lo) + ordered.gather(1, hi))[:, 0]
        value = torch.where(n > 0, value, torch.nan)
    else:
        value = by_row.nansum(1) / n
    return torch.nan_to_num(value, nan=max_depth).view(1, 1, -1, 1)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    groups: Sequence[int] | None = None,
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap interval of ``mean(a) - mean(b)`` for two models scored on the same
    images (``a[i]`` and ``b[i]`` from image ``i``).

    Images of one world are not independent, so with ``groups`` (e.g. the world of each image)
    the differences are first averaged per group and the *groups* are resampled with
    replacement; without, the images are. Percentile interval over ``n_resamples`` resamples
    drawn from a generator seeded with ``seed``.

    Returns ``{"mean": observed difference, "low", "high": the interval, "groups": count}``. An
    interval that excludes 0 says the difference is larger than what the choice of test
    worlds could produce.
    """
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_.ndim != 1 or a_.shape != b_.shape or a_.size == 0:
        raise ValueError(f"a and b must be two non-empty 1-D sequences of equal length, got {a_.shape} and {b_.shape}")
    if not (np.isfinite(a_).all() and np.isfinite(b_).all()):
        raise ValueError("a and b must be finite")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be >= 100, got {n_resamples}")
    diff = a_ - b_
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != diff.shape:
            raise ValueError(f"groups must give one group per image ({diff.size}), got {g.shape}")
        labels = np.unique(g)
        diff = np.array([diff[g == k].mean() for k in labels])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_resamples, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high), "groups": int(diff.size)}


def model_predictor(model: nn.Module, method: Any, clamp: float = 100.0) -> DepthPredictor:
    """The depth predictor of a trained model: ``predict(image, K, baseline, post_processing)``
    calls ``method.predict_depth`` with the flip post-processing flag and the depth clamped to
    ``clamp`` metres (above the metrics' 80 m cap, so the cap, not the clamp, decides). What
    :func:`evaluate`, :func:`per_image_metrics` and :func:`region_abs_rel` take."""
    if not clamp > 0:
        raise ValueError(f"clamp must be > 0, got {clamp}")

    def predict(image: torch.Tensor, K: torch.Tensor, baseline: torch.Tensor, pp: bool) -> torch.Tensor:
        return method.predict_depth(model, image, K, baseline, post_processing=pp, max_depth=clamp)

    return predict


def evaluate_model(
    model: nn.Module,
    method: Any,
    dataset: Any,
    *,
    batch_size: int = 8,
    post_processing: Sequence[bool] = (False, True),
    max_depth: float = MAX_DEPTH,
    crop: str | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate` of a trained model through its method's ``predict_depth`` (predictions
    clamped to ``max(100, max_depth)`` m before the metrics' own cap); the "metres" rows only
    for a method with metric depth."""
    device = next(model.parameters()).device
    predict = model_predictor(model, method, clamp=max(100.0, max_depth))
    return evaluate(predict, dataset, batch_size=batch_size, post_processing=post_processing, max_depth=max_depth,
                    metric=bool(getattr(method, "metric_depth", False)), device=device, crop=crop)


@torch.no_grad()
def evaluate_flow(
    predict_flow: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    dataset: Any,
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """End-point error of a flow predictor against the world's exact flow (chapter 09), on the
    snippets of a video dataset with flow (``target``, ``sources``, ``flow``, ``flow_valid``,
    ``moving``): the flow from the target to the next frame (``sources[:, -1]``).

    ``predict_flow(image1 (B,3,H,W), image2) -> (B, 2, H, W)`` pixels. Returns the EPE over all
    valid pixels, over static and over moving-object pixels (pooled over the dataset), with the
    same for the zero-flow baseline, and the number of pixels of each kind."""
    from torch.utils.data import DataLoader

    from .metrics import flow_epe

    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    sums = {k: 0.0 for k in ("all", "static", "moving", "zero_all", "zero_static", "zero_moving")}
    counts = {"all": 0, "static": 0, "moving": 0}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        dims: dict = {}
        image1 = _batch_item(batch, "target", ("B", 3, "H", "W"), dims).to(device)
        image2 = _batch_item(batch, "sources", ("B", "S", 3, "H", "W"), dims)[:, -1].to(device)
        gt = _batch_item(batch, "flow", ("B", 2, "H", "W"), dims).to(device)
        valid = _batch_item(batch, "flow_valid", ("B", 1, "H", "W"), dims, floating=False).to(device).bool()
        _batch_item(batch, "moving", ("B", 1, "H", "W"), dims, floating=False)
        pred = predict_flow(image1, image2).to(device)
        if pred.shape != gt.shape:
            raise ValueError(f"predict_flow gave {tuple(pred.shape)}, expected {tuple(gt.shape)}")
        moving = batch["moving"].to(device).bool()
        for kind, m in (("all", valid), ("static", valid & ~moving), ("moving", valid & moving)):
            n = int(m.sum())
            if n == 0:
                continue
            counts[kind] += n
            sums[kind] += flow_epe(pred, gt, m) * n
            sums["zero_" + kind] += flow_epe(torch.zeros_like(gt), gt, m) * n
    if counts["all"] == 0:
        raise ValueError("the dataset has no pixel with a valid flow")
    out: dict[str, float] = {}
    for kind, n in counts.items():
        out[f"epe_{kind}"] = sums[kind] / n if n else float("nan")
        out[f"zero_flow_epe_{kind}"] = sums["zero_" + kind] / n if n else float("nan")
        out[f"pixels_{kind}"] = n
    return out


def chained_poses(
    predict_3: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    sources: torch.Tensor,
) -> torch.Tensor:
    """``T_t_to_s (B, 4, 4, 4)`` for 5-frame snippets from a **3-frame** pose predictor, by
    chaining consecutive motions (chapter 07): with frames ``0..4`` (target 2, ``sources`` =
    frames ``[0, 1, 3, 4]``), ``T_2_to_1`` and ``T_2_to_3`` come from the snippet centred on 2,
    ``T_1_to_0`` from the one centred on 1 and ``T_3_to_4`` from the one centred on 3; then
    ``T_2_to_0 = T_1_to_0 · T_2_to_1`` and ``T_2_to_4 = T_3_to_4 · T_2_to_3``.

    ``predict_3(target (B,3,H,W), sources (B,2,3,H,W)) -> (B, 2, 4, 4)`` (sources in frame
    order). Each of the three calls has its own unknown scale; ATE's per-snippet scale then
    absorbs one common factor only, so the chaining is scored as it is."""
    from .pose import compose_poses

    check_tensor(target, "target", ("B", 3, "H", "W"))
    check_tensor(sources, "sources", (target.shape[0], 4, 3, target.shape[-2], target.shape[-1]))
    f0, f1, f3, f4 = sources.unbind(1)
    mid = predict_3(target, torch.stack([f1, f3], 1))  # T_2_to_1, T_2_to_3
    left = predict_3(f1, torch.stack([f0, target], 1))[:, 0]  # T_1_to_0
    right = predict_3(f3, torch.stack([target, f4], 1))[:, 1]  # T_3_to_4
    for name, T in (("mid", mid), ("left", left), ("right", right)):
        if T.shape[-2:] != (4, 4):
            raise ValueError(f"predict_3 must return (B, 2, 4, 4) poses; the {name} call gave {tuple(T.shape)}")
    T_2_to_0 = compose_poses(mid[:, 0], left)  # first 2 -> 1, then 1 -> 0
    T_2_to_4 = compose_poses(mid[:, 1], right)
    return torch.stack([T_2_to_0, mid[:, 0], mid[:, 1], T_2_to_4], dim=1)


def mean_motion_poses(dataset: Any) -> torch.Tensor:
    """The training set's mean motion (chapter 07's second ATE baseline): for every source slot
    of the snippets of ``dataset`` (items with ``T_t_to_s (S, 4, 4)``), the mean axis-angle
    rotation and mean translation of the true ``T_t_to_s``, as ``(S, 4, 4)`` float64. A
    predictor that returns it for every snippet drives "straight on at the average speed"."""
    from .pose import matrix_to_axis_angle, make_pose, axis_angle_to_matrix

    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    dims: dict = {}
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, Mapping) or "T_t_to_s" not in item:
            raise ValueError(f"dataset: expected items with 'T_t_to_s', item {i} is {type(item).__name__}"
                             + (f" with {sorted(item)}" if isinstance(item, Mapping) else ""))
        check_tensor(item["T_t_to_s"], f"dataset item {i}'s 'T_t_to_s'", ("S", 4, 4), dims=dims)
    T = torch.stack([dataset[i]["T_t_to_s"].double() for i in range(len(dataset))])  # (N, S, 4, 4)
    n, n_src = T.shape[:2]
    r = matrix_to_axis_angle(T[..., :3, :3].reshape(-1, 3, 3)).reshape(n, n_src, 3).mean(0)
    t = T[..., :3, 3].mean(0)
    return make_pose(axis_angle_to_matrix(r), t)


def evaluate_poses(
    predict_poses: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    dataset: Any,
    *,
    batch_size: int = 8,
    convention: str = "sfmlearner",
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """ATE of a pose predictor on the snippets of a video dataset (items with ``target``,
    ``sources``, ``T_t_to_s``; target in the middle): mean, standard deviation and count over
    the snippets (:func:`~lesson_lib.trajectory.ate_snippets`, ``convention`` as there).

    ``predict_poses(target (B,3,H,W), sources (B,S,3,H,W)) -> T_t_to_s (B,S,4,4)``; the
    baselines of chapter 07 are predictors too (no motion: identity poses)."""
    from torch.utils.data import DataLoader

    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    errors = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        target, sources, true = (t.to(device) for t in _video_batch(batch))
        true = true.double()
        pred = predict_poses(target, sources).to(device).double()
        if pred.shape != true.shape:
            raise ValueError(f"predict_poses gave {tuple(pred.shape)}, expected {tuple(true.shape)}")
        mid = true.shape[1] // 2
        err, _ = ate_snippets(snippet_trajectory(true, mid), snippet_trajectory(pred, mid), convention=convention)
        errors.append(err)
    e = torch.cat(errors)
    return {"ate_mean": float(e.mean()), "ate_std": float(e.std(unbiased=False)), "snippets": int(e.numel())}


@torch.no_grad()
def relative_pose_errors(
    predict_poses: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    dataset: Any,
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Two-view pose errors of a pose predictor (chapters 08-10) on the snippets of a video
    dataset (``target``, ``sources``, ``T_t_to_s``): for the motion from the target to its last
    source (the next frame), the rotation error and the translation-direction error in degrees
    (:func:`lesson_lib.twoview.pose_error`: the length of ``t`` is not judged, two views do not
    know it).

    ``predict_poses(target, sources) -> T_t_to_s (B, S, 4, 4)``. A predicted translation of zero
    (a pose the method could not determine) counts as a **failure**: its direction error is
    90 degrees (no better than a guess), and the failures are counted. Returns the means and
    the per-pair lists ``rotation_deg``, ``direction_deg`` (for paired comparisons) and
    ``failures``."""
    from torch.utils.data import DataLoader

    from .twoview import pose_error

    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    rot, dirn, failures = [], [], 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        target, sources, true = (t.to(device) for t in _video_batch(batch))
        true = true.double()[:, -1]
        pred = predict_poses(target, sources).to(device).double()
        if pred.shape != batch["T_t_to_s"].shape:
            raise ValueError(f"predict_poses gave {tuple(pred.shape)}, expected {tuple(batch['T_t_to_s'].shape)}")
        pred = pred[:, -1]
        t = pred[:, :3, 3]
        failed = t.norm(dim=1) <= 1e-12
        failures += int(failed.sum())
        safe_t = torch.where(failed[:, None], true[:, :3, 3], t)
        r_err, t_err = pose_error(pred[:, :3, :3], safe_t, true[:, :3, :3], true[:, :3, 3])
        rot += r_err.tolist()
        dirn += torch.where(failed, torch.full_like(t_err, 90.0), t_err).tolist()
    return {"rotation_deg_mean": float(np.mean(rot)), "direction_deg_mean": float(np.mean(dirn)),
            "failures": failures, "pairs": len(rot), "rotation_deg": rot, "direction_deg": dirn}


@torch.no_grad()
def drive_motions(
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    frames: torch.Tensor,
    *,
    sources: int = 2,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The motions ``T_k_to_{k+1} (N - 1, 4, 4)`` between consecutive frames of a whole drive
    ``frames (N, 3, H, W)`` (chapter 10); :func:`lesson_lib.trajectory.chain_poses` turns them
    into a trajectory.

    - ``sources=2``, a **3-frame** predictor ``predict(target (B,3,H,W), sources (B,2,3,H,W)) ->
      (B, 2, 4, 4)`` (sources in frame order): frame ``k``'s snippet ``[k-1, k, k+1]`` gives
      ``T_k_to_{k+1}`` (its second source) for ``k = 1..N-2``; the first motion comes from frame
      1's snippet, inverted (``T_0_to_1 = inv(T_1_to_0)``).
    - ``sources=1``, a **two-view** predictor ``predict(target, sources (B,1,3,H,W)) -> (B, 1, 4,
      4)``: ``T_k_to_{k+1}`` from the pair ``(k, k+1)`` (TrianFlow's pose from F).

    Each call's translation has its own unknown scale: the chained trajectory shows how
    consistent that scale is along the drive."""
    from .pose import invert_pose

    check_tensor(frames, "frames", ("N", 3, "H", "W"))
    if sources not in (1, 2):
        raise ValueError(f"sources must be 1 (pairs) or 2 (3-frame snippets), got {sources}")
    n = frames.shape[0]
    if n < 3:
        raise ValueError(f"a drive needs at least 3 frames, got {n}")
    out = []
    first = 1 if sources == 2 else 0
    for start in range(first, n - 1, batch_size):
        centres = list(range(start, min(start + batch_size, n - 1)))
        target = frames[centres].to(device)
        nxt = frames[[c + 1 for c in centres]]
        src = (torch.stack([frames[[c - 1 for c in centres]], nxt], 1) if sources == 2 else nxt[:, None]).to(device)
        T = predict(target, src).double()
        if T.shape != (len(centres), sources, 4, 4):
            raise ValueError(f"predict gave {tuple(T.shape)}, expected {(len(centres), sources, 4, 4)}")
        if sources == 2 and start == 1:
            out.append(invert_pose(T[:1, 0]))  # T_0_to_1 from T_1_to_0
        out.append(T[:, -1])
    return torch.cat(out).cpu()


def pose_predictor(model: nn.Module, method: Any, K: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``predict(target (B,3,H,W), sources (B,S,3,H,W)) -> T_t_to_s (B,S,4,4)`` of a trained model
    through ``method.predict_poses``, with the images' intrinsics ``K (3, 3)`` (one camera)."""
    if "poses" not in method.predicts:
        raise ValueError(f"a model of {method.name} with this configuration does not predict poses")

    def predict(target: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        return method.predict_poses(model, target, sources, K.to(target.device).expand(target.shape[0], 3, 3))

    return predict


def evaluate_method(
    model: nn.Module,
    method: Any,
    worlds: Sequence[Any],
    *,
    batch_size: int = 8,
    crop: str | None = None,
    motion_worlds: Sequence[Any] = (),
) -> dict[str, Any]:
    """The course's whole protocol for a trained model of any method, on the synthetic
    ``worlds`` of a split (rendered sequences, e.g. :func:`lesson_lib.data.load_split`), chosen by
    what the method says its model predicts (``method.predicts``):

    - ``depth``: :func:`evaluate_model` on every frame (``results``, ``images``, ``depth_seconds``);
    - ``poses``: ATE-5 on 5-frame snippets beside two baselines, no motion and the mean motion
      of ``motion_worlds`` (``ate``; a model whose poses take 3 frames, ``method.pose_frames``,
      is chained, :func:`chained_poses`), and the two-view errors of the target -> next motion
      (``relative_pose``; 3-frame pose models);
    - ``flow``: the EPE of ``method.predict_flow`` on consecutive frames beside zero flow (``flow``).

    Runs on the model's device. A part the worlds are too short for (fewer than 5 frames for
    ATE-5, 3 for the flow) is left out and named in ``skipped``.
    """
    import time

    from .data.synthetic import StereoDataset, VideoDataset

    if not worlds:
        raise ValueError("no worlds to evaluate on")
    device = next(model.parameters()).device
    report: dict[str, Any] = {"method": method.name, "skipped": []}
    predicts = method.predicts
    if "depth" in predicts:
        data = StereoDataset(list(worlds), augment=False)
        t0 = time.perf_counter()
        report["results"] = evaluate_model(model, method, data, batch_size=batch_size, crop=crop)
        report["images"], report["depth_seconds"] = len(data), time.perf_counter() - t0
    if "poses" in predicts:
        frames = method.pose_frames
        if frames not in (3, 5):
            raise ValueError(f"{method.name}: ATE-5 takes pose models of 3 or 5 frames, this one takes {frames}")
        snippets = VideoDataset(list(worlds), 5, flow=False, skip_static=False)
        K = torch.as_tensor(np.asarray(worlds[0].K), dtype=torch.float32)  # a split's worlds share one camera
        predict = pose_predictor(model, method, K)
        if len(snippets) == 0:
            report["skipped"].append("ate: no 5-frame snippet (worlds of fewer than 5 frames)")
        else:
            if frames == 5:
                predict_5 = predict
            else:
                def predict_5(t: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
                    return chained_poses(predict, t, src)

            if not motion_worlds:
                raise ValueError("motion_worlds: training worlds are needed for the mean-motion baseline of ATE-5")
            mean = mean_motion_poses(VideoDataset(list(motion_worlds), 5, flow=False)).float().to(device)
            report["ate"] = {
                "snippet_length": 5, "chained": frames == 3,
                "model": evaluate_poses(predict_5, snippets, device=device),
                "no_motion": evaluate_poses(lambda t, src: torch.eye(4, device=t.device).expand(t.shape[0], 4, 4, 4),
                                            snippets, device=device),
                "mean_motion": evaluate_poses(lambda t, src: mean.expand(t.shape[0], 4, 4, 4), snippets, device=device),
            }
        if frames == 3:
            pairs = VideoDataset(list(worlds), 3, flow=False, skip_static=False)
            if len(pairs):
                report["relative_pose"] = relative_pose_errors(predict, pairs, device=device)
        else:
            report["skipped"].append("relative_pose: measured for 3-frame pose models")
    if "flow" in predicts:
        pairs = VideoDataset(list(worlds), 3, skip_static=False, flow=True)
        if len(pairs) == 0:
            report["skipped"].append("flow: no 3-frame snippet (worlds of fewer than 3 frames)")
        else:
            t0 = time.perf_counter()
            flow = evaluate_flow(lambda a, b: method.predict_flow(model, a, b), pairs, batch_size=batch_size, device=device)
            report["flow"] = {"pairs": len(pairs), **flow, "seconds": time.perf_counter() - t0}
    return report
