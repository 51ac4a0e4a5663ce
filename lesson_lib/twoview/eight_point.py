"""The normalised 8-point algorithm (chapter 08, Exercises 8.1 and 8.2): Hartley's normalisation,
the design matrix of the epipolar constraint, the rank-2 projection and the fit of F from eight or
more correspondences. Conventions: :mod:`lesson_lib.twoview`."""

from __future__ import annotations

import math

import torch

from .._validate import check_tensor, float32_geometry, value_checks_enabled
from ._common import (
    F64,
    SAMPLE_SIZE,
    apply_affine,
    design_rows,
    null_vectors,
    out_dtype,
    points_pair,
    rank2,
    rank_tolerance,
    unit_norm_sign,
)


@float32_geometry
def normalising_transform(points: torch.Tensor) -> torch.Tensor:
    """Hartley's normalisation ``T`` ``(3, 3)`` or ``(B, 3, 3)`` of pixel points ``(N, 2)`` or
    ``(B, N, 2)`` (chapter 08, Exercise 8.1): ``T x`` moves the centroid to the origin and
    scales isotropically so that the **mean** distance from it is ``sqrt(2)``::

        s = sqrt(2) / mean_i ||p_i - c||,   T = [[s, 0, -s c_u], [0, s, -s c_v], [0, 0, 1]]

    Raises:
        ValueError: all points of an element coincide (no scale exists).
    """
    check_tensor(points, "points")
    if points.ndim not in (2, 3) or points.shape[-1] != 2:
        raise ValueError(f"points: expected shape (N, 2) or (B, N, 2), got {tuple(points.shape)}")
    unbatched = points.ndim == 2
    p = (points[None] if unbatched else points).to(F64)
    c = p.mean(1)
    d = (p - c[:, None]).norm(dim=-1).mean(1)
    if value_checks_enabled() and bool((d <= 1e-12 * (1 + c.abs().amax(-1))).any()):
        b = int((d <= 1e-12 * (1 + c.abs().amax(-1))).nonzero()[0])
        raise ValueError(f"all points of batch element {b} coincide: no normalising scale exists")
    s = math.sqrt(2.0) / d.clamp_min(torch.finfo(F64).tiny)
    T = torch.zeros(p.shape[0], 3, 3, dtype=F64, device=p.device)
    T[:, 0, 0] = T[:, 1, 1] = s
    T[:, :2, 2] = -s[:, None] * c
    T[:, 2, 2].fill_(1.0)  # fill_: an assigned Python number would be a tensor copied to the device
    T = T.to(out_dtype(points))
    return T[0] if unbatched else T


@float32_geometry
def epipolar_design_matrix(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """The 8-point algorithm's matrix ``A`` ``(N, 9)`` or ``(B, N, 9)`` (chapter 08): row ``i`` is
    ``[u2 u1, u2 v1, u2, v2 u1, v2 v1, v2, u1, v1, 1]``, so ``A f = 0`` for ``f = F.flatten()``
    (row-major) is the constraint ``x2^T F x1 = 0`` of every correspondence."""
    a, b, unbatched = points_pair(p1, p2)
    A = design_rows(a, b)
    return A[0] if unbatched else A


@float32_geometry
def enforce_rank2(F: torch.Tensor) -> torch.Tensor:
    """The closest rank-2 matrix to ``F`` in the Frobenius norm (chapter 08, part of Exercise 8.2):
    ``U diag(s1, s2, 0) V^T`` from the SVD ``F = U diag(s1, s2, s3) V^T``; the scale is kept.

    A fundamental matrix has rank 2 because all epipolar lines meet in the epipole: ``F e1 = 0``.
    """
    check_tensor(F, "F")
    if F.ndim < 2 or F.shape[-2:] != (3, 3):
        raise ValueError(f"F: expected shape (..., 3, 3), got {tuple(F.shape)}")
    U, S, Vh = torch.linalg.svd(F.to(F64))
    S = torch.cat([S[..., :2], torch.zeros_like(S[..., 2:])], dim=-1)
    return ((U * S[..., None, :]) @ Vh).to(out_dtype(F))


def _check_not_collinear(x: torch.Tensor, which: str, tol: float) -> None:
    """``x`` ``(B, N, 2)`` normalised points (centroid 0): raise if one element's lie on a line."""
    S = torch.linalg.svdvals(x)  # (B, 2): spreads along the two principal axes
    bad = S[:, 1] <= tol * S[:, 0]
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise ValueError(
            f"the points of image {which} of batch element {b} lie on one line (spread ratio "
            f"{float(S[b, 1] / S[b, 0]):.2g}): the 8-point algorithm cannot determine F"
        )


@float32_geometry
def fundamental_8point(p1: torch.Tensor, p2: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """The fundamental matrix from ``N >= 8`` correspondences (chapter 08, Exercise 8.2): Hartley's normalised
    8-point algorithm.

    1. Normalise each image's points with :func:`normalising_transform` (``T1``, ``T2``).
    2. Stack one row of :func:`epipolar_design_matrix` per correspondence; ``f`` is the right
       singular vector of the smallest singular value (the least-squares solution of
       ``A f = 0``, ``||f|| = 1``).
    3. Enforce rank 2 (:func:`enforce_rank2`), then undo the normalisation:
       ``F = T2^T F_n T1``.

    Args:
        p1, p2: ``(N, 2)`` or ``(B, N, 2)`` pixel correspondences, ``x2^T F x1 = 0``.
        normalise: skip step 1 with ``False`` (for the chapter's comparison: pixel coordinates
            make ``A`` badly conditioned, and the result is worse with noise).

    Returns:
        ``F`` ``(3, 3)`` or ``(B, 3, 3)``, rank 2, unit Frobenius norm, its largest entry positive.

    Raises:
        ValueError: fewer than 8 correspondences; non-finite coordinates; the points of an
            image coincide or lie on one line; or the system is rank-deficient (its second
            smallest singular value below ``sqrt(eps)`` of the largest, on normalised
            coordinates): points on one plane or a pure rotation, where a homography maps
            ``p1`` to ``p2`` and a family of F fits. Noisy data is not exactly degenerate and
            passes this test: :func:`ransac_fundamental` ``(..., return_info=True)`` and
            :func:`homography_share` measure how close to degenerate it is.
    """
    P1, P2, unbatched = points_pair(p1, p2, min_points=SAMPLE_SIZE)
    out = out_dtype(P1)
    tol = rank_tolerance(P1.dtype)
    T1, T2 = normalising_transform(P1).to(F64), normalising_transform(P2).to(F64)
    x1, x2 = apply_affine(T1, P1.to(F64)), apply_affine(T2, P2.to(F64))
    if value_checks_enabled():
        _check_not_collinear(x1, "1", tol)
        _check_not_collinear(x2, "2", tol)
    f, S = null_vectors(design_rows(x1, x2))
    if value_checks_enabled():
        bad = S[:, 7] <= tol * S[:, 0]
        if bool(bad.any()):
            b = int(bad.nonzero()[0])
            raise ValueError(
                f"the correspondences of batch element {b} do not determine F (8-point system rank-deficient: "
                f"sigma_8 / sigma_1 = {float(S[b, 7] / S[b, 0]):.2g}): all points on one plane or a pure rotation "
                f"(zero baseline), where a homography maps p1 to p2"
            )
    if normalise:
        F = T2.mT @ rank2(f) @ T1
    else:
        f, _ = null_vectors(design_rows(P1.to(F64), P2.to(F64)))
        F = rank2(f)
    F = unit_norm_sign(F).to(out)
    return F[0] if unbatched else F
