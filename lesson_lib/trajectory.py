"""Camera trajectories and their errors (chapters 07, 09, 10): short snippets (ATE-5), whole
drives (chaining two-view motions, 7-DoF alignment, KITTI's drift).

Snippets (chapter 07): :func:`camera_positions` reads camera centres off poses,
:func:`snippet_trajectory` expresses a snippet's cameras in its first frame, and
:func:`ate_snippets` is SfMLearner's ATE-5, which judges five frames at a time, each snippet
with its own scale and its first frame exact.

A visual odometry is used over a whole drive, where the errors of consecutive steps add up;
the rest of this module measures that (chapter 10):

- :func:`chain_poses` turns consecutive motions ``T_k_to_{k+1}`` into camera-to-world poses
  ``P_k`` (the first camera is the world): ``P_{k+1} = P_k · inv(T_k_to_{k+1})``, since a point
  ``X_k`` in camera ``k`` is ``X_{k+1} = T X_k`` in camera ``k+1`` and ``P_k X_k`` in the world.
- :func:`umeyama_alignment` finds the similarity ``x -> s R x + t`` (7 degrees of freedom: 3
  rotation, 3 translation, 1 scale) that best maps the predicted camera centres onto the true
  ones in the least-squares sense (Umeyama, PAMI 1991): the one scale a monocular odometry
  cannot know, fixed once for the whole drive instead of once per snippet.
- :func:`drift_errors` is KITTI's odometry measure: for every start frame and every path
  length ``L``, the end frame ``L`` metres further along the true path; the error of the
  relative motion between them, ``E = inv(inv(P_i) P_j) · inv(Q_i) Q_j`` (prediction
  ``P``, truth ``Q``); translation error ``|t(E)| / L`` (reported in %) and rotation error
  ``angle(E) / L`` (reported in degrees per 100 m). KITTI uses lengths 100..800 m; the
  synthetic world's drives are shorter, so the lengths are a parameter.

A snippet's poses are the course's ``T_t_to_s`` ``(B, S, 4, 4)``; a whole drive's are
camera-to-world ``(N, 4, 4)``, float64 inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._validate import check_same_device, check_tensor
from .pose import invert_pose, matrix_to_axis_angle

__all__ = ["camera_positions", "snippet_trajectory", "ate_snippets", "chain_poses", "window_positions",
           "umeyama_alignment", "align_trajectory", "drift_errors", "trajectory_report"]


def camera_positions(T_ref_to_cam: torch.Tensor) -> torch.Tensor:
    """The centres of cameras in a reference camera's frame, ``(B, N, 3)``, from the poses
    ``T_ref_to_cam (B, N, 4, 4)`` that map reference-frame points into each camera's frame
    (the course's ``T_t_to_s`` with the target as reference).

    A camera's centre is the point its pose maps to its own origin: ``R c + t = 0``, so
    ``c = -R^T t`` (chapter 02). The reference camera itself (identity pose) sits at 0.
    """
    check_tensor(T_ref_to_cam, "T_ref_to_cam", ("B", "N", 4, 4))
    R, t = T_ref_to_cam[..., :3, :3], T_ref_to_cam[..., :3, 3:]
    return -(R.transpose(-1, -2) @ t)[..., 0]


def ate_snippets(
    gt_positions: torch.Tensor, pred_positions: torch.Tensor, *, convention: str = "sfmlearner"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute trajectory error of short snippets (SfMLearner's ATE-5; chapters 07, 10).

    For each snippet, with camera positions ``g_k`` (truth) and ``p_k`` (prediction), ``k = 0..N-1``,
    both expressed in the snippet's first camera frame:

    1. align the first frames: ``p_k <- p_k - p_0 + g_0``;
    2. fix the unknown scale of a monocular prediction by least squares,
       ``s = sum_k g_k . p_k / sum_k |p_k|^2`` (0 if the prediction does not move at all);
    3. the error: ``sqrt(sum_k |s p_k - g_k|^2) / N`` with ``convention="sfmlearner"``, the
       formula behind the published ATE-5 figures (``N`` counts the first frame, exact by
       construction, so it is not a root-mean-square), or the true RMSE
       ``sqrt(sum_k |s p_k - g_k|^2 / N)`` with ``convention="rmse"`` (``sqrt(N)`` times larger).

    Translations only: rotations are not scored, and a snippet's drift over its N frames is all
    it sees (chapter 10 compares whole trajectories).

    Args:
        gt_positions, pred_positions: ``(B, N, 3)``, ``N >= 2``, finite.

    Returns:
        ``(errors (B,), scales (B,))`` in the ground truth's unit (metres).
    """
    dims = check_tensor(gt_positions, "gt_positions", ("B", "N", 3))
    check_tensor(pred_positions, "pred_positions", ("B", "N", 3), dims=dims)
    check_same_device(gt_positions=gt_positions, pred_positions=pred_positions)
    if convention not in ("sfmlearner", "rmse"):
        raise ValueError(f"convention must be 'sfmlearner' or 'rmse', got {convention!r}")
    n = gt_positions.shape[1]
    if n < 2:
        raise ValueError(f"a snippet needs at least 2 frames, got {n}")
    if not (bool(torch.isfinite(gt_positions).all()) and bool(torch.isfinite(pred_positions).all())):
        raise ValueError("gt_positions and pred_positions must be finite")
    g = gt_positions.double()
    p = pred_positions.double() - pred_positions[:, :1].double() + g[:, :1]
    num, den = (g * p).sum(dim=(1, 2)), (p * p).sum(dim=(1, 2))
    scale = torch.where(den > 0, num / den.clamp(min=torch.finfo(torch.float64).tiny), torch.zeros_like(num))
    sq = (scale[:, None, None] * p - g).square().sum(dim=(1, 2))
    err = sq.sqrt() / n if convention == "sfmlearner" else (sq / n).sqrt()
    return err.to(gt_positions.dtype), scale.to(gt_positions.dtype)


def snippet_trajectory(T_t_to_s: torch.Tensor, target_index: int) -> torch.Tensor:
    """The camera positions of a whole snippet in its **first** frame's coordinates,
    ``(B, S + 1, 3)`` in frame order, from the poses ``T_t_to_s (B, S, 4, 4)`` of its sources
    (frame order without the target, which sits at ``target_index``): SfMLearner's ATE
    re-expresses every snippet relative to its first frame (chapters 07, 10).

    Camera ``k``'s centre in the target frame is ``c_k = -R^T t`` of ``T_t_to_k``
    (:func:`camera_positions`; the target's own is 0); ``T_t_to_0`` then
    carries it into frame 0's coordinates.
    """
    check = T_t_to_s.ndim == 4 and T_t_to_s.shape[-2:] == (4, 4)
    if not check:
        raise ValueError(f"T_t_to_s: expected shape (B, S, 4, 4), got {tuple(T_t_to_s.shape)}")
    b, n_src = T_t_to_s.shape[:2]
    if not 0 <= target_index <= n_src:
        raise ValueError(f"target_index must be in [0, {n_src}], got {target_index}")
    eye = torch.eye(4, dtype=T_t_to_s.dtype, device=T_t_to_s.device).expand(b, 1, 4, 4)
    T_all = torch.cat([T_t_to_s[:, :target_index], eye, T_t_to_s[:, target_index:]], dim=1)  # (B, S+1, 4, 4)
    centres = camera_positions(T_all)  # in the target frame
    T0 = T_all[:, 0]  # target frame -> frame 0
    return (T0[:, None, :3, :3] @ centres[..., None])[..., 0] + T0[:, None, :3, 3]


def chain_poses(T_k_to_next: torch.Tensor) -> torch.Tensor:
    """Camera-to-world poses ``(N + 1, 4, 4)`` of a drive from its ``N`` consecutive motions
    ``T_k_to_next (N, 4, 4)`` (each maps points of camera ``k`` into camera ``k + 1``); the first
    camera is the world (``P_0 = I``)."""
    check_tensor(T_k_to_next, "T_k_to_next", ("N", 4, 4))
    T = T_k_to_next.double()
    poses = [torch.eye(4, dtype=torch.float64, device=T.device)]
    inv = invert_pose(T)
    for k in range(T.shape[0]):
        poses.append(poses[-1] @ inv[k])
    return torch.stack(poses)


def window_positions(poses: torch.Tensor, length: int = 5) -> torch.Tensor:
    """The camera centres of every window of ``length`` consecutive frames of a drive, each in
    its first camera's coordinates: ``(N - length + 1, length, 3)`` from camera-to-world poses
    ``(N, 4, 4)``. With :func:`ate_snippets` it gives ATE-5 along a drive
    from the same chained motions the whole-drive errors use."""
    check_tensor(poses, "poses", ("N", 4, 4))
    n = poses.shape[0]
    if not 2 <= length <= n:
        raise ValueError(f"length must be in [2, {n}] (the drive's frames), got {length}")
    P = poses.double()
    inv = invert_pose(P)
    starts = torch.arange(n - length + 1)
    rel = inv[starts][:, None] @ P[starts[:, None] + torch.arange(length)]  # (W, length, 4, 4)
    return rel[..., :3, 3]


def umeyama_alignment(source: torch.Tensor, target: torch.Tensor, with_scale: bool = True
                      ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The similarity ``(s, R, t)`` minimising ``sum_k |target_k - (s R source_k + t)|^2``.

    With the centred points ``x_k = source_k - mean``, ``y_k = target_k - mean`` and their
    covariance ``C = (1/N) sum_k y_k x_k^T = U D V^T``: ``R = U S V^T`` with ``S = diag(1, 1,
    det(U V^T))`` (a rotation, never a reflection), ``s = trace(D S) / var(x)``, ``t =
    mean(target) - s R mean(source)``. Without ``with_scale``, ``s = 1`` (6-DoF).

    Args:
        source, target: ``(N, 3)`` corresponding points, ``N >= 2``.

    Raises:
        ValueError: wrong shapes, non-finite points, or a source whose points all coincide (no
            scale or rotation can be found).
    """
    dims = check_tensor(source, "source", ("N", 3))
    check_tensor(target, "target", ("N", 3), dims=dims)
    if source.shape[0] < 2:
        raise ValueError(f"umeyama_alignment needs at least 2 points, got {source.shape[0]}")
    if not (bool(torch.isfinite(source).all()) and bool(torch.isfinite(target).all())):
        raise ValueError("source and target must be finite")
    x, y = source.double(), target.double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    var = float(xc.square().sum(1).mean())
    if var <= 1e-18:
        raise ValueError("the source points all coincide: no alignment is defined (did the prediction not move?)")
    C = yc.T @ xc / x.shape[0]
    U, D, Vh = torch.linalg.svd(C)
    S = torch.eye(3, dtype=torch.float64, device=x.device)
    if float(torch.det(U) * torch.det(Vh)) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vh
    s = float((D * S.diagonal()).sum() / var) if with_scale else 1.0
    t = my - s * R @ mx
    return s, R, t


def align_trajectory(pred: torch.Tensor, gt: torch.Tensor, with_scale: bool = True
                     ) -> tuple[torch.Tensor, float]:
    """The predicted camera-to-world poses ``(N, 4, 4)`` carried by the similarity that best
    aligns their centres with the truth's (:func:`umeyama_alignment`): centres ``s R c + t``,
    orientations ``R · R_k``. Returns ``(aligned poses, s)``."""
    dims = check_tensor(pred, "pred", ("N", 4, 4))
    check_tensor(gt, "gt", ("N", 4, 4), dims=dims)
    s, R, t = umeyama_alignment(pred[:, :3, 3], gt[:, :3, 3], with_scale)
    out = pred.double().clone()
    out[:, :3, :3] = R @ out[:, :3, :3]
    out[:, :3, 3] = s * out[:, :3, 3] @ R.T + t
    return out, s


def _rotation_angle(R: torch.Tensor) -> torch.Tensor:
    return matrix_to_axis_angle(R[None])[0].norm(dim=-1)


def drift_errors(pred: torch.Tensor, gt: torch.Tensor, lengths: Sequence[float] = (5.0, 10.0, 20.0),
                 step: int = 1) -> dict[str, float]:
    """KITTI's odometry errors (see the module doc) of camera-to-world poses ``(N, 4, 4)``
    (the prediction already aligned or in the truth's scale).

    Args:
        lengths: path lengths in metres (KITTI: 100, 200, ..., 800).
        step: every ``step``-th frame is a start frame (KITTI: 10).

    Returns:
        ``{"t_err_percent", "r_err_deg_per_100m", "segments"}``: means over every (start,
        length) segment that fits in the drive; NaN and 0 segments if none fits.
    """
    dims = check_tensor(pred, "pred", ("N", 4, 4))
    check_tensor(gt, "gt", ("N", 4, 4), dims=dims)
    if step < 1 or not lengths or min(lengths) <= 0:
        raise ValueError(f"need step >= 1 and positive lengths, got {step} and {tuple(lengths)}")
    P, Q = pred.double(), gt.double()
    d = torch.cat([Q.new_zeros(1), (Q[1:, :3, 3] - Q[:-1, :3, 3]).norm(dim=1).cumsum(0)])
    invP, invQ = invert_pose(P), invert_pose(Q)
    t_errs, r_errs = [], []
    for i in range(0, P.shape[0], step):
        for L in lengths:
            j = int(torch.searchsorted(d, d[i] + L))
            if j >= P.shape[0]:
                continue
            rel_pred = invP[i] @ P[j]
            rel_gt = invQ[i] @ Q[j]
            E = invert_pose(rel_pred[None])[0] @ rel_gt
            t_errs.append(float(E[:3, 3].norm()) / L)
            r_errs.append(float(_rotation_angle(E[:3, :3])) / L)
    if not t_errs:
        return {"t_err_percent": float("nan"), "r_err_deg_per_100m": float("nan"), "segments": 0}
    return {"t_err_percent": 100.0 * sum(t_errs) / len(t_errs),
            "r_err_deg_per_100m": math.degrees(sum(r_errs) / len(r_errs)) * 100.0, "segments": len(t_errs)}


def trajectory_report(pred: torch.Tensor, gt: torch.Tensor, lengths: Sequence[float] = (5.0, 10.0, 20.0),
                      step: int = 1) -> dict[str, float]:
    """A drive's errors after 7-DoF alignment: KITTI's drift (:func:`drift_errors`), the RMSE
    of the aligned camera centres (the whole drive's ATE, metres), the alignment's scale, and
    the true path length."""
    aligned, s = align_trajectory(pred, gt)
    centre_err = (aligned[:, :3, 3] - gt.double()[:, :3, 3]).norm(dim=1)
    path = float((gt[1:, :3, 3] - gt[:-1, :3, 3]).double().norm(dim=1).sum())
    return {**drift_errors(aligned, gt, lengths, step), "ate_rmse": float(centre_err.square().mean().sqrt()),
            "scale": s, "path_m": path}
