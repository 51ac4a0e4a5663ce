"""The epipolar constraint (chapter 08): essential and fundamental matrices from a pose and from
each other, a synthetic pair of views of known 3-D points (:func:`project_pair`), and what a
fundamental matrix says about a correspondence: its Sampson distance, epipolar lines and the
epipoles. Conventions: :mod:`lesson_lib.twoview`."""

from __future__ import annotations

import torch

from .._validate import check_tensor, float32_geometry, value_checks_enabled
from ..pose import cross_matrix
from ._common import F64, batch_of, homogeneous, matrices, out_dtype, points_and_pose, points_pair, vectors


@float32_geometry
def essential_from_pose(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``E = [t]_x R`` for the pose ``X2 = R X1 + t`` (chapter 08): ``(3, 3)`` or ``(B, 3, 3)``.

    The coplanarity of the two rays and the baseline: ``X2``, ``R X1`` and ``t`` lie in one
    plane, so ``X2 . (t x R X1) = 0``, i.e. ``x̂2^T [t]_x R x̂1 = 0`` for any scaling of the rays.
    """
    unbatched, b = batch_of(R, "R")
    E = cross_matrix(vectors(t, "t", b)) @ matrices(R, "R", b)
    return E[0] if unbatched else E


@float32_geometry
def fundamental_from_essential(E: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor) -> torch.Tensor:
    """``F = K2^-T E K1^-1`` (pixels from normalised coordinates; chapter 08), not rescaled."""
    unbatched, b = batch_of(E, "E")
    E_ = matrices(E, "E", b)
    F = torch.linalg.inv(matrices(K2, "K2", b)).to(E_.dtype).mT @ E_ @ torch.linalg.inv(matrices(K1, "K1", b)).to(E_.dtype)
    return F[0] if unbatched else F


@float32_geometry
def essential_from_fundamental(F: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor) -> torch.Tensor:
    """``E = K2^T F K1`` (chapter 08): ``(3, 3)`` or ``(B, 3, 3)``, with the scale of ``F``.

    Not projected onto the essential matrices (two equal singular values, one zero):
    :func:`decompose_essential` does that implicitly by using only ``E``'s singular vectors.
    """
    unbatched, b = batch_of(F, "F")
    F_ = matrices(F, "F", b)
    E = matrices(K2, "K2", b).to(F_.dtype).mT @ F_ @ matrices(K1, "K1", b).to(F_.dtype)
    return E[0] if unbatched else E


@float32_geometry
def project_pair(
    X1: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor, R: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel correspondences of 3-D points: ``X1`` ``(N, 3)`` or ``(B, N, 3)`` in camera 1
    projected into both views, ``x1 ~ K1 X1`` and ``x2 ~ K2 (R X1 + t)`` (chapter 08).

    Returns ``(p1, p2)``, each of ``X1``'s layout with 2 coordinates. Points must be in front of
    both cameras (``z > 0``), else ``ValueError``.
    """
    X, R_, t_, unbatched = points_and_pose(X1, "X1", R, t)
    b = X.shape[0]
    X2 = X @ R_.mT + t_[:, None]
    if value_checks_enabled() and not bool(((X[..., 2] > 0) & (X2[..., 2] > 0)).all()):
        raise ValueError("project_pair: every point must be in front of both cameras (z > 0)")
    p1 = X @ matrices(K1, "K1", b).to(X.dtype).mT
    p2 = X2 @ matrices(K2, "K2", b).to(X.dtype).mT
    p1, p2 = p1[..., :2] / p1[..., 2:], p2[..., :2] / p2[..., 2:]
    return (p1[0], p2[0]) if unbatched else (p1, p2)


@float32_geometry
def sampson_distance(F: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Sampson distance in pixels ``(N,)`` or ``(B, N)`` of each correspondence to ``F``
    (chapter 08): with ``r = x2^T F x1``,

        d = |r| / sqrt((F x1)_1^2 + (F x1)_2^2 + (F^T x2)_1^2 + (F^T x2)_2^2),

    the first-order distance (in the 4-D space of ``(u1, v1, u2, v2)``) to the nearest
    correspondence that satisfies the constraint exactly. Independent of the scale of ``F``.
    """
    P1, P2, unbatched = points_pair(p1, p2)
    F_ = matrices(F, "F", P1.shape[0]).to(F64)
    x1, x2 = homogeneous(P1.to(F64)), homogeneous(P2.to(F64))
    Fx1, Ftx2 = x1 @ F_.mT, x2 @ F_
    r = (x2 * Fx1).sum(-1)
    den = Fx1[..., :2].square().sum(-1) + Ftx2[..., :2].square().sum(-1)
    d = (r.abs() / den.sqrt().clamp_min(torch.finfo(F64).tiny)).to(out_dtype(P1))
    return d[0] if unbatched else d


@float32_geometry
def epipolar_lines(F: torch.Tensor, points: torch.Tensor, in_image: int = 2) -> torch.Tensor:
    """Epipolar lines ``(N, 3)`` or ``(B, N, 3)`` of ``points`` (chapter 08): with ``in_image=2``,
    ``points`` are in image 1 and the lines ``l2 = F x1`` in image 2; with ``in_image=1`` the
    points are in image 2 and the lines ``l1 = F^T x2`` in image 1. A line ``(a, b, c)`` holds
    the pixels with ``a u + b v + c = 0``, scaled so that ``a^2 + b^2 = 1``: then ``a u + b v + c``
    is the signed distance in pixels of ``(u, v)`` from it."""
    if in_image not in (1, 2):
        raise ValueError(f"in_image must be 1 or 2, got {in_image}")
    check_tensor(points, "points")
    if points.ndim not in (2, 3) or points.shape[-1] != 2:
        raise ValueError(f"points: expected shape (N, 2) or (B, N, 2), got {tuple(points.shape)}")
    unbatched = points.ndim == 2
    P = points[None] if unbatched else points
    F_ = matrices(F, "F", P.shape[0]).to(F64)
    x = homogeneous(P.to(F64))
    lines = x @ F_.mT if in_image == 2 else x @ F_
    lines = lines / lines[..., :2].norm(dim=-1, keepdim=True).clamp_min(torch.finfo(F64).tiny)
    lines = lines.to(out_dtype(P))
    return lines[0] if unbatched else lines


@float32_geometry
def epipoles(F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The epipoles ``(e1, e2)`` of ``F`` as homogeneous unit vectors ``(3,)`` or ``(B, 3)``
    (chapter 08): ``F e1 = 0`` (in image 1: the image of camera 2's centre) and ``F^T e2 = 0``
    (in image 2). Divide by the last coordinate for pixels; it is 0 for an epipole at infinity
    (a rectified pair's, whose epipolar lines are parallel)."""
    unbatched, b = batch_of(F, "F")
    F_ = matrices(F, "F", b).to(F64)
    U, _, Vh = torch.linalg.svd(F_)
    e1, e2 = Vh[:, -1], U[:, :, -1]
    e1 = e1 * torch.where(e1[:, 2:] < 0, -1.0, 1.0)
    e2 = e2 * torch.where(e2[:, 2:] < 0, -1.0, 1.0)
    e1, e2 = e1.to(out_dtype(F)), e2.to(out_dtype(F))
    return (e1[0], e2[0]) if unbatched else (e1, e2)
