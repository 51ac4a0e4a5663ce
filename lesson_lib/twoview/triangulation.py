"""Triangulation (chapter 08, Exercise 8.6): 3-D points from two views and their pose, by the
midpoint method and by the linear (DLT) method, and the reprojection error that scores them.
Conventions: :mod:`lesson_lib.twoview`."""

from __future__ import annotations

import math

import torch

from .._validate import check_same_device, check_tensor, float32_geometry, value_checks_enabled
from ._common import F64, camera_rays, matrices, out_dtype, points_pair, ray_midpoints, vectors


def _geometry_inputs(p1, p2, K1, K2, R, t, check_baseline: bool = True):
    P1, P2, unbatched = points_pair(p1, p2)
    b = P1.shape[0]
    K1_, K2_ = matrices(K1, "K1", b).to(F64), matrices(K2, "K2", b).to(F64)
    R_, t_ = matrices(R, "R", b).to(F64), vectors(t, "t", b).to(F64)
    check_same_device(p1=P1, K1=K1_, K2=K2_, R=R_, t=t_)
    if check_baseline and value_checks_enabled():
        zero = t_.norm(dim=-1) <= torch.finfo(F64).tiny
        if bool(zero.any()):
            raise ValueError(f"t of batch element {int(zero.nonzero()[0])} is zero (zero baseline): both rays start at "
                             "the same centre, so depth cannot be triangulated")
    return P1.to(F64), P2.to(F64), K1_, K2_, R_, t_, unbatched, out_dtype(P1)


def _reprojection(X, P1, P2, K1, K2, R, t, ok):
    q1 = X @ K1.mT
    q2 = (X @ R.mT + t[:, None]) @ K2.mT
    tiny = 1e-12
    good = ok & (q1[..., 2].abs() > tiny) & (q2[..., 2].abs() > tiny)
    z1 = torch.where(good, q1[..., 2], torch.ones_like(q1[..., 2]))
    z2 = torch.where(good, q2[..., 2], torch.ones_like(q2[..., 2]))
    e1 = (q1[..., :2] / z1[..., None] - P1).norm(dim=-1)
    e2 = (q2[..., :2] / z2[..., None] - P2).norm(dim=-1)
    return torch.where(good, 0.5 * (e1 + e2), torch.full_like(e1, math.inf))


@float32_geometry
def reprojection_error(
    X: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor, R: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Mean over the two views of the pixel distance between each point ``X`` ``(N, 3)`` or
    ``(B, N, 3)`` (camera 1's frame) projected and its observation (chapter 08): ``(N,)`` or
    ``(B, N)``; ``inf`` for a point in a camera's plane (``z = 0``)."""
    P1, P2, K1_, K2_, R_, t_, unbatched, out = _geometry_inputs(p1, p2, K1, K2, R, t, check_baseline=False)
    check_tensor(X, "X", ("B", "N", 3) if X.ndim == 3 else ("N", 3))
    X_ = (X[None] if X.ndim == 2 else X).to(F64)
    e = _reprojection(X_, P1, P2, K1_, K2_, R_, t_, torch.ones(X_.shape[:2], dtype=torch.bool, device=X_.device)).to(out)
    return e[0] if unbatched else e


@float32_geometry
def triangulate_midpoint(
    p1: torch.Tensor, p2: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor, R: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangulation by the midpoint method (chapter 08, Exercise 8.6).

    In camera 1's frame the first ray leaves ``O1 = 0`` along ``d1 = K1^-1 x1``; the second leaves
    camera 2's centre ``O2 = -R^T t`` along ``d2 = R^T K2^-1 x2``. (Erratum seen in public
    write-ups: the second ray passes through ``O2`` and ``x2``, not through ``O1``.) With noise
    the rays do not meet; the point is the midpoint of their closest points
    ``l1 d1`` and ``O2 + l2 d2``, from the 2x2 normal equations of
    ``min |l1 d1 - O2 - l2 d2|^2``.

    Args:
        p1, p2: ``(N, 2)`` or ``(B, N, 2)`` pixel correspondences.
        K1, K2: intrinsics; ``R``, ``t``: the pose ``X2 = R X1 + t`` (``t`` sets the scale).

    Returns:
        ``(X, error)``: points ``(N, 3)`` or ``(B, N, 3)`` in camera 1's frame, in the unit of
        ``t``, and their reprojection error (:func:`reprojection_error`, pixels). A
        correspondence whose rays are parallel (no parallax) gets ``(0, 0, 0)`` and error ``inf``.

    Raises:
        ValueError: ``t = 0`` (zero baseline), non-finite coordinates, wrong shapes.
    """
    P1, P2, K1_, K2_, R_, t_, unbatched, out = _geometry_inputs(p1, p2, K1, K2, R, t)
    d1, d2, O2 = camera_rays(P1, P2, K1_, K2_, R_, t_)
    X, ok = ray_midpoints(d1, d2, O2)
    err = _reprojection(X, P1, P2, K1_, K2_, R_, t_, ok)
    X, err = X.to(out), err.to(out)
    return (X[0], err[0]) if unbatched else (X, err)


@float32_geometry
def triangulate_dlt(
    p1: torch.Tensor, p2: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor, R: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangulation by the linear (DLT) method (chapter 08; Hartley and Zisserman, section 12.2).

    With the camera matrices ``P1 = K1 [I | 0]`` and ``P2 = K2 [R | t]`` (rows ``P^1, P^2, P^3``),
    each view gives two linear equations in the homogeneous point ``X``:
    ``u P^3 X - P^1 X = 0`` and ``v P^3 X - P^2 X = 0``. ``X`` is the right singular vector of the
    smallest singular value of the 4x4 system (in pixel coordinates, as kornia's
    ``triangulate_points``), divided by its last coordinate.

    Returns and raises as :func:`triangulate_midpoint`; a point the system does not determine
    (at infinity, or on the baseline, where the two rays coincide) gets ``(0, 0, 0)`` and error
    ``inf``.
    """
    P1, P2, K1_, K2_, R_, t_, unbatched, out = _geometry_inputs(p1, p2, K1, K2, R, t)
    b = P1.shape[0]
    C1 = K1_ @ torch.cat([torch.eye(3, dtype=F64, device=P1.device).expand(b, 3, 3), torch.zeros(b, 3, 1, dtype=F64, device=P1.device)], -1)
    C2 = K2_ @ torch.cat([R_, t_[..., None]], -1)
    rows = torch.stack([
        P1[..., 0:1] * C1[:, None, 2] - C1[:, None, 0],
        P1[..., 1:2] * C1[:, None, 2] - C1[:, None, 1],
        P2[..., 0:1] * C2[:, None, 2] - C2[:, None, 0],
        P2[..., 1:2] * C2[:, None, 2] - C2[:, None, 1],
    ], dim=-2)  # (B, N, 4, 4)
    _, S, Vh = torch.linalg.svd(rows)
    Xh = Vh[..., -1, :]
    w = Xh[..., 3]
    # undetermined: the point is at infinity (w = 0), or a whole line of points fits (the two
    # rays coincide: a point on the baseline), where the system has a second null vector
    ok = (w.abs() > 1e-12 * Xh[..., :3].norm(dim=-1)) & (S[..., 2] > 1e-10 * S[..., 0])
    X = Xh[..., :3] / torch.where(ok, w, torch.ones_like(w))[..., None]
    X = torch.where(ok[..., None], X, torch.zeros_like(X))
    err = _reprojection(X, P1, P2, K1_, K2_, R_, t_, ok)
    X, err = X.to(out), err.to(out)
    return (X[0], err[0]) if unbatched else (X, err)
