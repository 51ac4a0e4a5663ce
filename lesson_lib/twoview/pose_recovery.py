"""The pose from an essential matrix (chapter 08, Exercises 8.4 and 8.5): its four ``(R, t)``
hypotheses, cheirality (which points lie in front of both cameras), the choice among the four by
triangulated points, and the angular errors of a recovered pose. Conventions:
:mod:`lesson_lib.twoview`."""

from __future__ import annotations

import torch

from .._validate import float32_geometry, value_checks_enabled
from ._common import (
    F64,
    batch_of,
    camera_rays,
    matrices,
    out_dtype,
    points_and_pose,
    points_pair,
    rank_tolerance,
    ray_midpoints,
    vectors,
)


@float32_geometry
def decompose_essential(E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The four poses an essential matrix allows (chapter 08, Exercise 8.4).

    With the SVD ``E = U diag(1, 1, 0) V^T`` (``U``, ``V`` made rotations by flipping their
    sign, which only flips the sign of ``E``) and ``W`` the rotation by 90 degrees about z,
    ``R`` is ``U W V^T`` or ``U W^T V^T`` and ``t`` is ``+u3`` or ``-u3`` (``u3`` = the left null
    vector of ``E``): ``E`` fixes ``t`` only up to sign (the constraint is homogeneous) and the
    rotation up to the "twisted pair" (a half turn about the baseline). Exactly one of the four
    puts the points in front of both cameras (:func:`recover_pose`).

    Args:
        E: ``(3, 3)`` or ``(B, 3, 3)``, any scale.

    Returns:
        ``(Rs, ts)``: ``(4, 3, 3)`` and ``(4, 3)`` (or ``(B, 4, 3, 3)``, ``(B, 4, 3)``) in the order
        ``(R1, t), (R1, -t), (R2, t), (R2, -t)``, rotations with determinant +1, ``||t|| = 1``;
        ``trace(R1) >= trace(R2)`` and ``t``'s entry of largest magnitude is positive, so the
        order depends on ``E`` only up to its scale and sign (not on the SVD's choices).

    Raises:
        ValueError: ``E`` is zero (no translation: zero baseline) or has rank 1 (its second
            singular value below ``sqrt(eps)`` of the first): not an essential matrix.
    """
    unbatched, b = batch_of(E, "E")
    E_ = matrices(E, "E", b).to(F64)
    if value_checks_enabled() and not bool(torch.isfinite(E_).all()):
        raise ValueError("E contains inf or NaN")
    U, S, Vh = torch.linalg.svd(E_)
    if value_checks_enabled():
        zero = S[:, 0] <= torch.finfo(F64).tiny
        if bool(zero.any()):
            raise ValueError(f"E of batch element {int(zero.nonzero()[0])} is zero: no translation (zero baseline), "
                             "so the pose cannot be recovered from E")
        tol = rank_tolerance(out_dtype(E))
        low = S[:, 1] <= tol * S[:, 0]
        if bool(low.any()):
            k = int(low.nonzero()[0])
            raise ValueError(f"E of batch element {k} has rank 1 (sigma_2 / sigma_1 = {float(S[k, 1] / S[k, 0]):.2g}): "
                             "not an essential matrix")
    U = U * torch.sign(torch.linalg.det(U))[:, None, None]
    Vh = Vh * torch.sign(torch.linalg.det(Vh))[:, None, None]
    # W = [[0, -1, 0], [1, 0, 0], [0, 0, 1]] (a quarter turn about z), built on the device: a
    # tensor from Python numbers would be copied from the host
    W = torch.zeros(3, 3, dtype=F64, device=E_.device)
    W[0, 1].fill_(-1.0)
    W[1, 0].fill_(1.0)
    W[2, 2].fill_(1.0)
    R1, R2 = U @ W @ Vh, U @ W.mT @ Vh
    t = U[:, :, 2]
    # a fixed order (the SVD's own signs and, with two equal singular values, its basis are not
    # unique): t's largest entry positive, the rotation with the larger trace first
    t = t * torch.sign(t.gather(-1, t.abs().argmax(-1, keepdim=True)))
    swap = (torch.diagonal(R2, dim1=-2, dim2=-1).sum(-1) > torch.diagonal(R1, dim1=-2, dim2=-1).sum(-1))[:, None, None]
    R1, R2 = torch.where(swap, R2, R1), torch.where(swap, R1, R2)
    Rs = torch.stack([R1, R1, R2, R2], dim=1).to(out_dtype(E))
    ts = torch.stack([t, -t, t, -t], dim=1).to(out_dtype(E))
    return (Rs[0], ts[0]) if unbatched else (Rs, ts)


@float32_geometry
def in_front(R: torch.Tensor, t: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Cheirality (chapter 08, Exercise 8.5): which points ``X`` ``(N, 3)`` or ``(B, N, 3)``, in
    camera 1's frame, lie in front of **both** cameras: ``z1 > 0`` and ``z2 > 0`` with
    ``X2 = R X1 + t``. Returns ``(N,)`` or ``(B, N)`` bool (strictly in front: a point in a
    camera's own plane, ``z = 0``, is not)."""
    X_, R_, t_, unbatched = points_and_pose(X, "X", R, t)
    z2 = X_ @ R_[:, 2:3, :].mT + t_[:, None, 2:3]
    ok = (X_[..., 2] > 0) & (z2[..., 0] > 0)
    return ok[0] if unbatched else ok


@float32_geometry
def recover_pose(
    E: torch.Tensor,
    p1: torch.Tensor,
    p2: torch.Tensor,
    K1: torch.Tensor,
    K2: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pose ``(R, t)`` from ``E`` and the correspondences, chosen by cheirality (chapter 08).

    Each of the four hypotheses of :func:`decompose_essential` triangulates every correspondence
    (midpoint method); the one that puts the most (``mask``-ed) points in front of both cameras
    (:func:`in_front`) wins, separately for every batch element (kornia issue 2198 was about
    exactly this choice being shared across a batch).

    Args:
        E: ``(3, 3)`` or ``(B, 3, 3)``, ``E = K2^T F K1``.
        p1, p2: ``(N, 2)`` or ``(B, N, 2)`` pixel correspondences.
        K1, K2: intrinsics.
        mask: optional ``(N,)`` or ``(B, N)`` bool: only these correspondences vote (e.g. the
            RANSAC inliers).

    Returns:
        ``(R, t, in_front)``: ``R`` ``(3, 3)`` / ``(B, 3, 3)``, unit ``t`` ``(3,)`` / ``(B, 3)`` with
        ``X2 = R X1 + t`` (the length of the baseline is unknown), and ``(N,)`` / ``(B, N)`` which
        correspondences the chosen pose puts in front of both cameras (all of them, masked or
        not). If no hypothesis puts any voting point in front, ``in_front`` is all False: treat
        that pose as failed.

    Raises:
        ValueError: as :func:`decompose_essential` (zero or rank-1 ``E``) and for bad inputs.
    """
    P1, P2, unbatched = points_pair(p1, p2)
    b, n = P1.shape[:2]
    E_ = matrices(E, "E", b)
    Rs, ts = decompose_essential(E_)  # (B, 4, 3, 3), (B, 4, 3)
    Rs64, ts64 = Rs.to(F64), ts.to(F64)
    K1_, K2_ = matrices(K1, "K1", b).to(F64), matrices(K2, "K2", b).to(F64)
    m = torch.ones(b, n, dtype=torch.bool, device=P1.device) if mask is None else (mask[None] if mask.ndim == 1 else mask)
    if m.shape != (b, n):
        raise ValueError(f"mask: expected shape ({n},) or ({b}, {n}), got {tuple(mask.shape)}")
    rep = lambda x: x.repeat_interleave(4, dim=0)  # noqa: E731  (B*4, ...)
    d1, d2, O2 = camera_rays(rep(P1.to(F64)), rep(P2.to(F64)), rep(K1_), rep(K2_), Rs64.reshape(-1, 3, 3), ts64.reshape(-1, 3))
    X, ok = ray_midpoints(d1, d2, O2)
    front = in_front(Rs64.reshape(-1, 3, 3), ts64.reshape(-1, 3), X) & ok  # (B*4, N)
    front = front.reshape(b, 4, n)
    votes = (front & m[:, None]).sum(-1)  # (B, 4)
    k = votes.argmax(-1)
    bi = torch.arange(b, device=P1.device)
    R, t, chosen = Rs[bi, k], ts[bi, k], front[bi, k]
    chosen = chosen & (votes[bi, k] > 0)[:, None]
    return (R[0], t[0], chosen[0]) if unbatched else (R, t, chosen)


@float32_geometry
def pose_error(
    R: torch.Tensor, t: torch.Tensor, R_true: torch.Tensor, t_true: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation error and translation-direction error in degrees (chapter 08): the angle of
    ``R R_true^T`` and the angle between ``t`` and ``t_true`` (their lengths do not matter: two
    views know the direction only). Shapes as in the module's conventions; returns ``()`` or
    ``(B,)`` each.

    Raises:
        ValueError: ``t`` or ``t_true`` is zero (no direction).
    """
    unbatched, b = batch_of(R, "R")
    R_, Rt_ = matrices(R, "R", b).to(F64), matrices(R_true, "R_true", b).to(F64)
    t_, tt_ = vectors(t, "t", b).to(F64), vectors(t_true, "t_true", b).to(F64)
    for name, v in (("t", t_), ("t_true", tt_)):
        if value_checks_enabled() and bool((v.norm(dim=-1) <= torch.finfo(F64).tiny).any()):
            raise ValueError(f"{name} is zero: it has no direction")
    cos_r = ((torch.diagonal(R_ @ Rt_.mT, dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    cos_t = ((t_ * tt_).sum(-1) / (t_.norm(dim=-1) * tt_.norm(dim=-1))).clamp(-1.0, 1.0)
    rot, tra = torch.rad2deg(torch.arccos(cos_r)), torch.rad2deg(torch.arccos(cos_t))
    out = out_dtype(R)
    rot, tra = rot.to(out), tra.to(out)
    return (rot[0], tra[0]) if unbatched else (rot, tra)
