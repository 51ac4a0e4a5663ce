"""Two-view geometry: the epipolar constraint, the normalised 8-point algorithm, RANSAC, the
four ``(R, t)`` hypotheses, cheirality and triangulation (chapter 08; chapter 09 trains with it).

Conventions (each is tested in ``tests/test_twoview.py``):

- **Correspondences.** ``p1``, ``p2`` are pixel coordinates ``(N, 2)`` or batched ``(B, N, 2)``,
  ``(u, v)`` = (column, row), pixel centres at integers (as everywhere in the course): row ``i``
  of ``p1`` and of ``p2`` show the same 3-D point in view 1 and view 2.
- **Fundamental matrix.** ``x2^T F x1 = 0`` for the homogeneous pixels ``x = (u, v, 1)``.
  Returned with unit Frobenius norm (it is defined up to scale) and rank 2.
- **Essential matrix.** ``E = K2^T F K1``, so ``x̂2^T E x̂1 = 0`` for the normalised camera
  coordinates ``x̂ = K^-1 x``; ``E = [t]_x R`` for the pose below.
- **Relative pose.** ``(R, t)`` maps camera-1 coordinates into camera 2: ``X2 = R X1 + t``.
  This is the course's ``T_t_to_s`` (COURSE.md) with view 1 as the target and view 2 as the
  source; the centre of camera 2 in camera-1 coordinates is ``O2 = -R^T t``. ``t`` recovered
  from ``E`` has unit length: two views fix the direction of the baseline, not its length.
  ``R`` is ``(3, 3)`` or ``(B, 3, 3)``, ``t`` is ``(3,)`` or ``(B, 3)``.
- **Intrinsics.** ``K1``, ``K2`` ``(3, 3)`` or ``(B, 3, 3)`` in pixels (an unbatched ``K`` is
  shared by every batch element).
- **Triangulated points** are in camera 1's frame, ``(N, 3)`` or ``(B, N, 3)``, in the unit of
  ``t``: multiply by the true baseline length to get metres.
- **Sampson distance** (:func:`sampson_distance`) is in pixels: the first-order distance of a
  correspondence from the nearest one that satisfies the constraint exactly.

Degenerate input never gives a silent NaN:

- fewer than 8 correspondences, non-finite coordinates, all points at one place or on one
  line: ``ValueError`` naming the batch element;
- all points on one plane, or a pure rotation (zero baseline), where a homography maps ``p1`` to
  ``p2`` and F is not determined: :func:`fundamental_8point` raises ``ValueError`` when the
  8-point system is exactly rank-deficient; with noise the system is not exactly degenerate, and
  :func:`ransac_fundamental` ``(..., return_info=True)`` flags it (``info.degenerate``, from
  :func:`homography_share`);
- a zero essential matrix (no translation) or one of rank 1: :func:`decompose_essential` raises;
- ``t = 0`` in triangulation raises; a single correspondence whose two rays are parallel (no
  parallax) gets the point ``(0, 0, 0)`` (in front of no camera) and reprojection error ``inf``.

The value checks (finite coordinates) read the data; they are skipped inside
:func:`lesson_lib._validate.value_checks` ``(False)``, where non-finite input gives non-finite
output. Small linear systems are solved in float64 whatever the input dtype; results come back in
the input's dtype (float32 at least, also under ``torch.autocast``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._validate import check_same_device, check_tensor, float32_geometry, value_checks_enabled
from .pose import cross_matrix

__all__ = [
    "cross_matrix",
    "essential_from_pose",
    "fundamental_from_essential",
    "essential_from_fundamental",
    "project_pair",
    "normalising_transform",
    "epipolar_design_matrix",
    "enforce_rank2",
    "fundamental_8point",
    "sampson_distance",
    "epipolar_lines",
    "epipoles",
    "ransac_iterations",
    "RansacInfo",
    "ransac_fundamental",
    "homography_share",
    "decompose_essential",
    "in_front",
    "recover_pose",
    "triangulate_midpoint",
    "triangulate_dlt",
    "reprojection_error",
    "pose_error",
]

F64 = torch.float64
SAMPLE_SIZE = 8  # correspondences per RANSAC hypothesis (the 8-point algorithm)
DEGENERATE_SHARE = 0.9  # ransac_fundamental flags F as degenerate when a homography explains this share
LO_POINTS = 1024  # ransac_fundamental refits its candidates on at most this many correspondences


# --------------------------------------------------------------------------------------------
# Input layouts


def _points_pair(p1: torch.Tensor, p2: torch.Tensor, min_points: int = 1) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(N, 2)`` or ``(B, N, 2)`` pairs to ``(B, N, 2)``; True when the input was unbatched."""
    for name, p in (("p1", p1), ("p2", p2)):
        check_tensor(p, name)
        if p.ndim not in (2, 3) or p.shape[-1] != 2:
            raise ValueError(f"{name}: expected shape (N, 2) or (B, N, 2), got {tuple(p.shape)}")
    if p1.shape != p2.shape:
        raise ValueError(f"p1 and p2 must have the same shape, got {tuple(p1.shape)} and {tuple(p2.shape)}")
    check_same_device(p1=p1, p2=p2)
    unbatched = p1.ndim == 2
    if unbatched:
        p1, p2 = p1[None], p2[None]
    n = p1.shape[1]
    if n < min_points:
        raise ValueError(f"need at least {min_points} correspondences, got {n}")
    if value_checks_enabled():
        for name, p in (("p1", p1), ("p2", p2)):
            bad = ~torch.isfinite(p).all(-1)
            if bool(bad.any()):
                b, i = (int(x) for x in bad.nonzero()[0])
                raise ValueError(
                    f"{name} has {int(bad.sum())} non-finite correspondence(s); the first is point {i} of batch "
                    f"element {b}: {p[b, i].tolist()}. Remove them (or mask them) first"
                )
    return p1, p2, unbatched


def _batch_of(M: torch.Tensor, name: str) -> tuple[bool, int]:
    """Whether ``M`` (``(3, 3)`` or ``(B, 3, 3)``) is unbatched, and its batch size."""
    check_tensor(M, name)
    if M.ndim not in (2, 3):
        raise ValueError(f"{name}: expected shape (3, 3) or (B, 3, 3), got {tuple(M.shape)}")
    return M.ndim == 2, 1 if M.ndim == 2 else M.shape[0]


def _matrices(M: torch.Tensor, name: str, batch: int) -> torch.Tensor:
    """``(3, 3)`` or ``(B, 3, 3)`` to ``(batch, 3, 3)``."""
    check_tensor(M, name)
    if M.ndim == 2 and M.shape == (3, 3):
        return M[None].expand(batch, 3, 3)
    if M.ndim == 3 and M.shape[1:] == (3, 3) and M.shape[0] in (1, batch):
        return M.expand(batch, 3, 3)
    raise ValueError(f"{name}: expected shape (3, 3) or ({batch}, 3, 3), got {tuple(M.shape)}")


def _vectors(t: torch.Tensor, name: str, batch: int) -> torch.Tensor:
    """``(3,)`` or ``(B, 3)`` to ``(batch, 3)``."""
    check_tensor(t, name)
    if t.ndim == 1 and t.shape == (3,):
        return t[None].expand(batch, 3)
    if t.ndim == 2 and t.shape[1] == 3 and t.shape[0] in (1, batch):
        return t.expand(batch, 3)
    raise ValueError(f"{name}: expected shape (3,) or ({batch}, 3), got {tuple(t.shape)}")


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, F64) else torch.float32


def _homogeneous(p: torch.Tensor) -> torch.Tensor:
    return torch.cat([p, torch.ones_like(p[..., :1])], dim=-1)


def _unit_norm_sign(F: torch.Tensor) -> torch.Tensor:
    """``F / ||F||_F`` with the entry of largest magnitude positive (a fixed representative)."""
    F = F / F.flatten(-2).norm(dim=-1)[..., None, None]
    flat = F.flatten(-2)
    sign = torch.sign(flat.gather(-1, flat.abs().argmax(-1, keepdim=True)))
    return F * sign[..., None]


# --------------------------------------------------------------------------------------------
# The constraint


@float32_geometry
def essential_from_pose(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``E = [t]_x R`` for the pose ``X2 = R X1 + t`` (chapter 08): ``(3, 3)`` or ``(B, 3, 3)``.

    The coplanarity of the two rays and the baseline: ``X2``, ``R X1`` and ``t`` lie in one
    plane, so ``X2 . (t x R X1) = 0``, i.e. ``x̂2^T [t]_x R x̂1 = 0`` for any scaling of the rays.
    """
    unbatched, b = _batch_of(R, "R")
    E = cross_matrix(_vectors(t, "t", b)) @ _matrices(R, "R", b)
    return E[0] if unbatched else E


@float32_geometry
def fundamental_from_essential(E: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor) -> torch.Tensor:
    """``F = K2^-T E K1^-1`` (pixels from normalised coordinates; chapter 08), not rescaled."""
    unbatched, b = _batch_of(E, "E")
    E_ = _matrices(E, "E", b)
    F = torch.linalg.inv(_matrices(K2, "K2", b)).to(E_.dtype).mT @ E_ @ torch.linalg.inv(_matrices(K1, "K1", b)).to(E_.dtype)
    return F[0] if unbatched else F


@float32_geometry
def essential_from_fundamental(F: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor) -> torch.Tensor:
    """``E = K2^T F K1`` (chapter 08): ``(3, 3)`` or ``(B, 3, 3)``, with the scale of ``F``.

    Not projected onto the essential matrices (two equal singular values, one zero):
    :func:`decompose_essential` does that implicitly by using only ``E``'s singular vectors.
    """
    unbatched, b = _batch_of(F, "F")
    F_ = _matrices(F, "F", b)
    E = _matrices(K2, "K2", b).to(F_.dtype).mT @ F_ @ _matrices(K1, "K1", b).to(F_.dtype)
    return E[0] if unbatched else E


def _points_and_pose(X: torch.Tensor, name: str, R: torch.Tensor, t: torch.Tensor):
    """``X`` ``(N, 3)`` or ``(B, N, 3)`` as a batch, with ``R`` and ``t`` batched to match and in
    its dtype: ``(X (B, N, 3), R (B, 3, 3), t (B, 3), unbatched)``."""
    check_tensor(X, name)
    if X.ndim not in (2, 3) or X.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (N, 3) or (B, N, 3), got {tuple(X.shape)}")
    unbatched = X.ndim == 2
    X_ = X[None] if unbatched else X
    b = X_.shape[0]
    return X_, _matrices(R, "R", b).to(X_.dtype), _vectors(t, "t", b).to(X_.dtype), unbatched


@float32_geometry
def project_pair(
    X1: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor, R: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel correspondences of 3-D points: ``X1`` ``(N, 3)`` or ``(B, N, 3)`` in camera 1
    projected into both views, ``x1 ~ K1 X1`` and ``x2 ~ K2 (R X1 + t)`` (chapter 08).

    Returns ``(p1, p2)``, each of ``X1``'s layout with 2 coordinates. Points must be in front of
    both cameras (``z > 0``), else ``ValueError``.
    """
    X, R_, t_, unbatched = _points_and_pose(X1, "X1", R, t)
    b = X.shape[0]
    X2 = X @ R_.mT + t_[:, None]
    if value_checks_enabled() and not bool(((X[..., 2] > 0) & (X2[..., 2] > 0)).all()):
        raise ValueError("project_pair: every point must be in front of both cameras (z > 0)")
    p1 = X @ _matrices(K1, "K1", b).to(X.dtype).mT
    p2 = X2 @ _matrices(K2, "K2", b).to(X.dtype).mT
    p1, p2 = p1[..., :2] / p1[..., 2:], p2[..., :2] / p2[..., 2:]
    return (p1[0], p2[0]) if unbatched else (p1, p2)


# --------------------------------------------------------------------------------------------
# The normalised 8-point algorithm


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
    T[:, 2, 2] = 1.0
    T = T.to(_out_dtype(points))
    return T[0] if unbatched else T


def _apply(T: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 3)`` transforms applied to ``(B, N, 2)`` points (affine: no division)."""
    return p @ T[:, :2, :2].mT + T[:, None, :2, 2]


def _design(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    u1, v1 = x1.unbind(-1)
    u2, v2 = x2.unbind(-1)
    one = torch.ones_like(u1)
    return torch.stack([u2 * u1, u2 * v1, u2, v2 * u1, v2 * v1, v2, u1, v1, one], dim=-1)


@float32_geometry
def epipolar_design_matrix(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """The 8-point algorithm's matrix ``A`` ``(N, 9)`` or ``(B, N, 9)`` (chapter 08): row ``i`` is
    ``[u2 u1, u2 v1, u2, v2 u1, v2 v1, v2, u1, v1, 1]``, so ``A f = 0`` for ``f = F.flatten()``
    (row-major) is the constraint ``x2^T F x1 = 0`` of every correspondence."""
    a, b, unbatched = _points_pair(p1, p2)
    A = _design(a, b)
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
    return ((U * S[..., None, :]) @ Vh).to(_out_dtype(F))


def _null_vectors(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit ``f`` minimising ``||A f||`` for ``A`` ``(..., M, 9)``, M >= 8, and the singular values
    of ``A`` (descending)."""
    if A.shape[-2] > 9:
        A = torch.linalg.qr(A, mode="r")[1]  # same singular values and right vectors, 9 x 9
    _, S, Vh = torch.linalg.svd(A, full_matrices=True)
    return Vh[..., -1, :], S


def _rank2(f: torch.Tensor) -> torch.Tensor:
    U, S, Vh = torch.linalg.svd(f.reshape(*f.shape[:-1], 3, 3))
    return (U[..., :, :2] * S[..., None, :2]) @ Vh[..., :2, :]


def _rank_tolerance(dtype: torch.dtype) -> float:
    return math.sqrt(torch.finfo(dtype if dtype in (torch.float32, F64) else torch.float32).eps)


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
    P1, P2, unbatched = _points_pair(p1, p2, min_points=SAMPLE_SIZE)
    out = _out_dtype(P1)
    tol = _rank_tolerance(P1.dtype)
    T1, T2 = normalising_transform(P1).to(F64), normalising_transform(P2).to(F64)
    x1, x2 = _apply(T1, P1.to(F64)), _apply(T2, P2.to(F64))
    if value_checks_enabled():
        _check_not_collinear(x1, "1", tol)
        _check_not_collinear(x2, "2", tol)
    f, S = _null_vectors(_design(x1, x2))
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
        F = T2.mT @ _rank2(f) @ T1
    else:
        f, _ = _null_vectors(_design(P1.to(F64), P2.to(F64)))
        F = _rank2(f)
    F = _unit_norm_sign(F).to(out)
    return F[0] if unbatched else F


# --------------------------------------------------------------------------------------------
# Distances, lines, epipoles


@float32_geometry
def sampson_distance(F: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Sampson distance in pixels ``(N,)`` or ``(B, N)`` of each correspondence to ``F``
    (chapter 08): with ``r = x2^T F x1``,

        d = |r| / sqrt((F x1)_1^2 + (F x1)_2^2 + (F^T x2)_1^2 + (F^T x2)_2^2),

    the first-order distance (in the 4-D space of ``(u1, v1, u2, v2)``) to the nearest
    correspondence that satisfies the constraint exactly. Independent of the scale of ``F``.
    """
    P1, P2, unbatched = _points_pair(p1, p2)
    F_ = _matrices(F, "F", P1.shape[0]).to(F64)
    x1, x2 = _homogeneous(P1.to(F64)), _homogeneous(P2.to(F64))
    Fx1, Ftx2 = x1 @ F_.mT, x2 @ F_
    r = (x2 * Fx1).sum(-1)
    den = Fx1[..., :2].square().sum(-1) + Ftx2[..., :2].square().sum(-1)
    d = (r.abs() / den.sqrt().clamp_min(torch.finfo(F64).tiny)).to(_out_dtype(P1))
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
    F_ = _matrices(F, "F", P.shape[0]).to(F64)
    x = _homogeneous(P.to(F64))
    lines = x @ F_.mT if in_image == 2 else x @ F_
    lines = lines / lines[..., :2].norm(dim=-1, keepdim=True).clamp_min(torch.finfo(F64).tiny)
    lines = lines.to(_out_dtype(P))
    return lines[0] if unbatched else lines


@float32_geometry
def epipoles(F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The epipoles ``(e1, e2)`` of ``F`` as homogeneous unit vectors ``(3,)`` or ``(B, 3)``
    (chapter 08): ``F e1 = 0`` (in image 1: the image of camera 2's centre) and ``F^T e2 = 0``
    (in image 2). Divide by the last coordinate for pixels; it is 0 for an epipole at infinity
    (a rectified pair's, whose epipolar lines are parallel)."""
    unbatched, b = _batch_of(F, "F")
    F_ = _matrices(F, "F", b).to(F64)
    U, _, Vh = torch.linalg.svd(F_)
    e1, e2 = Vh[:, -1], U[:, :, -1]
    e1 = e1 * torch.where(e1[:, 2:] < 0, -1.0, 1.0)
    e2 = e2 * torch.where(e2[:, 2:] < 0, -1.0, 1.0)
    e1, e2 = e1.to(_out_dtype(F)), e2.to(_out_dtype(F))
    return (e1[0], e2[0]) if unbatched else (e1, e2)


# --------------------------------------------------------------------------------------------
# RANSAC


def ransac_iterations(
    inlier_share: float | torch.Tensor, confidence: float = 0.99, sample_size: int = SAMPLE_SIZE
) -> torch.Tensor:
    """How many random samples RANSAC must draw so that, with probability ``confidence``, at
    least one holds only inliers (chapter 08)::

        k = log(1 - confidence) / log(1 - w^s)

    for the inlier share ``w`` and ``s`` correspondences per sample. Returns ``ceil(k)`` as a
    float tensor: 1 for ``w = 1``, ``inf`` for ``w = 0``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    w = torch.as_tensor(inlier_share, dtype=F64).clamp(0.0, 1.0)
    good = w.pow(sample_size)
    k = math.log(1.0 - confidence) / torch.log1p(-good.clamp(max=1.0 - 1e-16))
    k = torch.where(good <= 0, torch.full_like(k, math.inf), torch.ceil(k))
    return torch.where(good >= 1.0 - 1e-16, torch.ones_like(k), k)


@dataclass
class RansacInfo:
    """What :func:`ransac_fundamental` did, per batch element (``(B,)`` tensors, or 0-d for an
    unbatched call).

    Attributes:
        hypotheses: samples drawn (and models scored).
        required: the samples asked for when sampling stopped: :func:`ransac_iterations` at
            the best sample model's inlier share (on the scoring subset), clamped to
            ``[min_iters, max_iters]``; sampling stops once ``hypotheses >= required``, in
            whole rounds of ``batch_size``.
        formula: :func:`ransac_iterations` at that share, unclamped (what the textbook rule
            alone would have drawn).
        inlier_share: share of the correspondences that are inliers of the returned ``F``.
        planar_share: share of those inliers that one homography maps to within twice the
            threshold (:func:`homography_share`): close to 1 for a planar scene, a pure
            rotation, or a baseline too short for any parallax.
        degenerate: ``planar_share >= 0.9``: F is not determined by the data (a family of
            matrices fits it as well) and a pose from it is meaningless.
    """

    hypotheses: torch.Tensor
    required: torch.Tensor
    formula: torch.Tensor
    inlier_share: torch.Tensor
    planar_share: torch.Tensor
    degenerate: torch.Tensor


def _sample(b: int, m: int, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``(b, m, 8)`` indices, distinct within each sample, from ``generator`` (deterministic)."""
    gdev = generator.device if generator is not None else device
    if n <= 64:
        idx = torch.rand(b, m, n, generator=generator, device=gdev).argsort(-1)[..., :SAMPLE_SIZE]
        return idx.to(device)
    idx = torch.randint(n, (b, m, SAMPLE_SIZE), generator=generator, device=gdev)
    while True:
        s = idx.sort(-1).values
        dup = (s[..., 1:] == s[..., :-1]).any(-1)
        k = int(dup.sum())
        if k == 0:
            return idx.to(device)
        idx[dup] = torch.randint(n, (k, SAMPLE_SIZE), generator=generator, device=gdev)


class _Scorer:
    """Scores many normalised-coordinate models against all correspondences at once.

    With ``x̂ = T x`` (``T`` of scale ``s``) and a model ``F̂`` in normalised coordinates, the
    residual ``r = x̂2^T F̂ x̂1`` equals the pixel one, and its gradient with respect to the pixel
    coordinates is ``s1 (F̂^T x̂2)_{1,2}`` and ``s2 (F̂ x̂1)_{1,2}``: the Sampson distance in pixels
    comes out of the normalised coordinates without forming the pixel ``F``."""

    def __init__(self, x1: torch.Tensor, x2: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, threshold: float):
        self.A = _design(x1, x2)  # (B, N, 9)
        self.X1t = _homogeneous(x1).mT  # (B, 3, N)
        self.X2t = _homogeneous(x2).mT
        self.s1, self.s2 = s1, s2
        self.thr2 = threshold * threshold

    def residuals(self, F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``F`` ``(B, M, 3, 3)`` -> ``r^2`` and the Sampson denominator ``(B, M, N)`` in pixels."""
        b, m = F.shape[:2]
        F = F.to(self.A.dtype)
        r = F.reshape(b, m, 9) @ self.A.mT
        g2 = (F[:, :, :2, :].reshape(b, 2 * m, 3) @ self.X1t).reshape(b, m, 2, -1)
        g1 = (F[:, :, :, :2].mT.reshape(b, 2 * m, 3) @ self.X2t).reshape(b, m, 2, -1)
        den = self.s2[:, None, None] ** 2 * g2.square().sum(2) + self.s1[:, None, None] ** 2 * g1.square().sum(2)
        return r.square(), den

    def inliers(self, F: torch.Tensor) -> torch.Tensor:
        r2, den = self.residuals(F)
        return r2 <= self.thr2 * den

    def score(self, F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MSAC cost ``sum_i min(d_i^2, threshold^2) / threshold^2`` ``(B, M)`` (lower is better:
        an inlier costs its squared Sampson distance, an outlier a constant) and the inliers."""
        r2, den = self.residuals(F)
        inl = r2 <= self.thr2 * den
        d2 = torch.where(inl, r2 / (self.thr2 * den).clamp_min(torch.finfo(den.dtype).tiny), torch.ones_like(r2))
        return d2.sum(-1).to(F64), inl


def _weighted_fit(A: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Rank-2 ``F̂`` ``(B, 3, 3)`` minimising ``sum_i w_i (a_i . f)^2``: the eigenvector of the
    smallest eigenvalue of ``A^T W A`` (float64; on normalised coordinates ``A`` is well
    conditioned, so the normal equations lose nothing that matters)."""
    M = (A * weights[..., None]).mT @ A
    return _rank2(torch.linalg.eigh(M)[1][..., :, 0])


def _polish(
    scorer: _Scorer, A64: torch.Tensor, F: torch.Tensor, iterations: int, weighted: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refit ``F`` ``(B, 3, 3)`` on its own inliers, again and again (batched; float64).

    Each round takes the inliers of the current model and solves the 8-point least squares on
    them: unweighted, or with ``weighted`` each correspondence weighted by ``1 / den`` of the
    current model, so that the sum of squared Sampson distances ``sum r^2 / den`` is what is
    minimised. A refit is kept only where it lowers the MSAC cost; an element stops when it
    does not, or after ``iterations`` rounds. Returns the model, its cost ``(B,)`` and its
    inliers ``(B, N)``."""
    cost, inl = (x[:, 0] for x in scorer.score(F[:, None]))
    live = inl.sum(-1) >= SAMPLE_SIZE
    for _ in range(iterations):
        if not bool(live.any()):
            break
        w = inl.to(F64)
        if weighted:
            _, den = scorer.residuals(F[:, None])
            den = den[:, 0].to(F64)
            w = w / den.clamp_min(1e-12 * den.amax(-1, keepdim=True).clamp_min(1e-300))
            w = w / w.amax(-1, keepdim=True).clamp_min(1e-300)
        F_new = _weighted_fit(A64, w)
        cost_new, inl_new = (x[:, 0] for x in scorer.score(F_new[:, None]))
        take = live & (cost_new < cost * (1 - 1e-9)) & (inl_new.sum(-1) >= SAMPLE_SIZE)
        F = torch.where(take[:, None, None], F_new, F)
        cost = torch.where(take, cost_new, cost)
        inl = torch.where(take[:, None], inl_new, inl)
        live = take
    return F, cost, inl


@float32_geometry
def homography_share(
    p1: torch.Tensor, p2: torch.Tensor, threshold: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """How much of the data one homography explains: the share of the (``mask``-ed)
    correspondences that the least-squares homography ``H`` (normalised DLT, fitted to them)
    maps to within ``threshold`` pixels, ``||p2 - H(p1)|| <= threshold`` (chapter 08).

    Close to 1 where F is not determined: all points on one plane, a pure rotation, or a
    baseline so short that no point shows parallax. Returns ``()`` or ``(B,)``; 0 for an element
    with fewer than 4 masked correspondences.
    """
    P1, P2, unbatched = _points_pair(p1, p2)
    b, n = P1.shape[:2]
    m = torch.ones(b, n, dtype=torch.bool, device=P1.device) if mask is None else mask
    if m.ndim == 1:
        m = m[None]
    if m.shape != (b, n):
        raise ValueError(f"mask: expected shape ({n},) or ({b}, {n}), got {tuple(mask.shape)}")
    T1, T2 = normalising_transform(P1).to(F64), normalising_transform(P2).to(F64)
    x1, x2 = _apply(T1, P1.to(F64)), _apply(T2, P2.to(F64))
    u1, v1 = x1.unbind(-1)
    u2, v2 = x2.unbind(-1)
    z, o = torch.zeros_like(u1), torch.ones_like(u1)
    rows = torch.cat([
        torch.stack([-u1, -v1, -o, z, z, z, u2 * u1, u2 * v1, u2], -1),
        torch.stack([z, z, z, -u1, -v1, -o, v2 * u1, v2 * v1, v2], -1),
    ], dim=1) * m.repeat(1, 2)[..., None].to(F64)
    h, _ = _null_vectors(rows)
    H = torch.linalg.solve(T2, h.reshape(b, 3, 3) @ T1)
    q = _homogeneous(P1.to(F64)) @ H.mT
    w = q[..., 2:]
    q = q[..., :2] / torch.where(w.abs() < 1e-300, torch.full_like(w, 1e-300), w)
    ok = ((q - P2.to(F64)).norm(dim=-1) <= threshold) & m
    count = m.sum(-1)
    share = torch.where(count >= 4, ok.sum(-1) / count.clamp_min(1), torch.zeros(b, dtype=F64, device=P1.device))
    share = share.to(_out_dtype(P1))
    return share[0] if unbatched else share


@float32_geometry
def ransac_fundamental(
    p1: torch.Tensor,
    p2: torch.Tensor,
    threshold: float = 1.0,
    confidence: float = 0.99,
    max_iters: int = 4096,
    generator: torch.Generator | None = None,
    *,
    batch_size: int = 256,
    min_iters: int = 1024,
    subset: int = 256,
    candidates: int = 16,
    lo_iters: int = 20,
    refit_iters: int = 10,
    return_info: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, RansacInfo]:
    """Robust F from correspondences with outliers: RANSAC on the 8-point algorithm (chapter 08;
    Exercise 8.3 writes its plain loop).

    1. **Sample and score, in batches.** Each round draws ``batch_size`` samples of 8 distinct
       correspondences per batch element, solves every sample's (Hartley-normalised) 8-point
       system at once, and counts each model's inliers (Sampson distance ``<= threshold``) on a
       fixed random ``subset`` of the correspondences, all models at once (no Python loop per
       hypothesis). The ``candidates`` models with the most inliers so far are kept.
    2. **Stop adaptively.** After each round the number of samples needed is updated from the
       best candidate's inlier share ``w`` with :func:`ransac_iterations`,
       ``log(1 - confidence) / log(1 - w^8)``, but at least ``min_iters`` and at most
       ``max_iters``. The floor is there because the formula counts all-inlier samples, and
       with noise most all-inlier 8-point samples give a model from which no refit finds the
       right F (chapter 08 measures about 1 % on the synthetic drive). An element
       stops once it has drawn enough; finished elements are frozen, so the others do not
       change their result.
    3. **Refit the candidates** (LO-RANSAC, Chum et al. 2003): each candidate is refitted by
       least squares on its inliers, again and again (``lo_iters`` rounds at most, on up to
       1,024 of the correspondences), and the one with the lowest MSAC cost
       (``sum min(d^2, threshold^2)``) wins.
    4. **Polish** it on all correspondences by Sampson-weighted least squares (``refit_iters``
       rounds, each kept only where it lowers the MSAC cost). The inliers are those of the
       returned F.

    Args:
        p1, p2: ``(N, 2)`` or ``(B, N, 2)`` pixel correspondences, ``N >= 8``.
        threshold: inlier threshold on the Sampson distance, in pixels (TrianFlow uses 0.1 on
            flow correspondences; 1.0 suits matches with about half a pixel of noise).
        confidence: probability of having drawn at least one all-inlier sample, in ``(0, 1)``.
        max_iters: at most this many samples per element.
        generator: the random source of the samples and of the subset (``None``: PyTorch's
            global generator). The same generator state gives the same result on the same
            machine.
        batch_size: samples drawn and scored together per round.
        min_iters: at least this many samples per element (0: the formula alone).
        subset: how many correspondences score the samples (all of them when ``N`` is smaller).
        candidates: how many of the best sample models are refitted.
        lo_iters: refit rounds per candidate (0: the best sample's model as it is).
        refit_iters: rounds of the final Sampson-weighted refit (0: none).
        return_info: also return a :class:`RansacInfo`.

    Returns:
        ``(F, inliers)``: ``F`` ``(3, 3)`` or ``(B, 3, 3)`` (rank 2, unit norm, largest entry
        positive) and the inlier mask ``(N,)`` or ``(B, N)`` bool; with ``return_info``, also
        the :class:`RansacInfo`, whose ``degenerate`` flag marks an F the data does not
        determine (planar scene, pure rotation, no parallax).

    Raises:
        ValueError: fewer than 8 correspondences, non-finite coordinates, all points of an
            image at one place, or a bad setting.
    """
    P1, P2, unbatched = _points_pair(p1, p2, min_points=SAMPLE_SIZE)
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a finite number > 0 (pixels), got {threshold}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    for name, v, low in (("max_iters", max_iters, 1), ("batch_size", batch_size, 1), ("min_iters", min_iters, 0),
                         ("subset", subset, SAMPLE_SIZE), ("candidates", candidates, 1), ("lo_iters", lo_iters, 0),
                         ("refit_iters", refit_iters, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    out = _out_dtype(P1)
    work = F64 if P1.dtype == F64 else torch.float32
    b, n = P1.shape[:2]
    dev = P1.device
    T1, T2 = normalising_transform(P1).to(F64), normalising_transform(P2).to(F64)
    x1, x2 = _apply(T1, P1.to(F64)), _apply(T2, P2.to(F64))
    A64 = _design(x1, x2)
    scorer_x1, scorer_x2, s1, s2 = x1.to(work), x2.to(work), T1[:, 0, 0].to(work), T2[:, 0, 0].to(work)
    scorer = _Scorer(scorer_x1, scorer_x2, s1, s2, threshold)

    gdev = generator.device if generator is not None else dev
    k_sub, k_lo = min(n, subset), min(n, LO_POINTS)
    perm = torch.randperm(n, generator=generator, device=gdev).to(dev)
    S, S_lo = perm[:k_sub], perm[:k_lo]
    sub = _Scorer(scorer_x1[:, S], scorer_x2[:, S], s1, s2, threshold)
    pool_F = torch.zeros(b, 0, 3, 3, dtype=F64, device=dev)
    pool_c = torch.zeros(b, 0, dtype=torch.long, device=dev)
    drawn = torch.zeros(b, dtype=torch.long, device=dev)
    required = torch.full((b,), float(max_iters), dtype=F64, device=dev)
    formula = required.clone()
    active = torch.ones(b, dtype=torch.bool, device=dev)
    batch_idx = torch.arange(b, device=dev)
    while bool(active.any()):
        m = min(batch_size, max_iters - int(drawn[active].max()))
        idx = _sample(b, m, n, generator, dev)  # (B, m, 8)
        As = A64[batch_idx[:, None, None], idx]  # (B, m, 8, 9)
        F_h = torch.linalg.qr(As.mT, mode="complete")[0][..., :, -1].reshape(b, m, 3, 3)  # null vectors
        c = sub.inliers(F_h).sum(-1)  # (B, m): inliers among the subset
        c = torch.where(active[:, None], c, torch.full_like(c, -1))  # finished elements take no more
        all_F, all_c = torch.cat([pool_F, F_h], 1), torch.cat([pool_c, c], 1)
        order = torch.sort(all_c, dim=1, descending=True, stable=True).indices[:, :candidates]
        pool_F, pool_c = all_F[batch_idx[:, None], order], all_c.gather(1, order)
        drawn = drawn + active.long() * m
        raw = ransac_iterations(pool_c[:, 0].clamp_min(0).to(F64) / k_sub, confidence).to(dev)
        formula = torch.where(active, raw, formula)
        required = torch.where(active, raw.clamp(min=float(min_iters), max=float(max_iters)), required)
        active = active & (drawn.to(F64) < required)

    # the candidates, refitted together on their inliers; the best by MSAC cost, refitted by
    # Sampson-weighted least squares
    p = pool_F.shape[1]
    rep = lambda x: x.repeat_interleave(p, dim=0)  # noqa: E731
    pool_scorer = _Scorer(rep(scorer_x1[:, S_lo]), rep(scorer_x2[:, S_lo]), rep(s1), rep(s2), threshold)
    F_lo, cost, _ = _polish(pool_scorer, rep(A64[:, S_lo]), _rank2(pool_F.reshape(b * p, 9)), lo_iters, weighted=False)
    best = cost.reshape(b, p).argmin(-1)
    best_F = F_lo.reshape(b, p, 3, 3)[batch_idx, best]
    best_F, _, best_inl = _polish(scorer, A64, best_F, refit_iters, weighted=True)
    F = _unit_norm_sign(T2.mT @ best_F @ T1).to(out)
    inliers = best_inl
    if unbatched:
        F, inliers = F[0], inliers[0]
    if not return_info:
        return F, inliers
    planar = homography_share(P1, P2, 2.0 * threshold, mask=best_inl).to(F64)
    info = RansacInfo(
        hypotheses=drawn,
        required=required,
        formula=formula,
        inlier_share=best_inl.sum(-1).to(F64) / n,
        planar_share=planar,
        degenerate=planar >= DEGENERATE_SHARE,
    )
    if unbatched:
        info = RansacInfo(*(getattr(info, k)[0] for k in ("hypotheses", "required", "formula", "inlier_share", "planar_share",
                                                          "degenerate")))
    return F, inliers, info


# --------------------------------------------------------------------------------------------
# Pose from E


_W = ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))


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
    unbatched, b = _batch_of(E, "E")
    E_ = _matrices(E, "E", b).to(F64)
    if value_checks_enabled() and not bool(torch.isfinite(E_).all()):
        raise ValueError("E contains inf or NaN")
    U, S, Vh = torch.linalg.svd(E_)
    if value_checks_enabled():
        zero = S[:, 0] <= torch.finfo(F64).tiny
        if bool(zero.any()):
            raise ValueError(f"E of batch element {int(zero.nonzero()[0])} is zero: no translation (zero baseline), "
                             "so the pose cannot be recovered from E")
        tol = _rank_tolerance(_out_dtype(E))
        low = S[:, 1] <= tol * S[:, 0]
        if bool(low.any()):
            k = int(low.nonzero()[0])
            raise ValueError(f"E of batch element {k} has rank 1 (sigma_2 / sigma_1 = {float(S[k, 1] / S[k, 0]):.2g}): "
                             "not an essential matrix")
    U = U * torch.sign(torch.linalg.det(U))[:, None, None]
    Vh = Vh * torch.sign(torch.linalg.det(Vh))[:, None, None]
    W = torch.tensor(_W, dtype=F64, device=E_.device)
    R1, R2 = U @ W @ Vh, U @ W.mT @ Vh
    t = U[:, :, 2]
    # a fixed order (the SVD's own signs and, with two equal singular values, its basis are not
    # unique): t's largest entry positive, the rotation with the larger trace first
    t = t * torch.sign(t.gather(-1, t.abs().argmax(-1, keepdim=True)))
    swap = (torch.diagonal(R2, dim1=-2, dim2=-1).sum(-1) > torch.diagonal(R1, dim1=-2, dim2=-1).sum(-1))[:, None, None]
    R1, R2 = torch.where(swap, R2, R1), torch.where(swap, R1, R2)
    Rs = torch.stack([R1, R1, R2, R2], dim=1).to(_out_dtype(E))
    ts = torch.stack([t, -t, t, -t], dim=1).to(_out_dtype(E))
    return (Rs[0], ts[0]) if unbatched else (Rs, ts)


@float32_geometry
def in_front(R: torch.Tensor, t: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Cheirality (chapter 08, Exercise 8.5): which points ``X`` ``(N, 3)`` or ``(B, N, 3)``, in
    camera 1's frame, lie in front of **both** cameras: ``z1 > 0`` and ``z2 > 0`` with
    ``X2 = R X1 + t``. Returns ``(N,)`` or ``(B, N)`` bool (strictly in front: a point in a
    camera's own plane, ``z = 0``, is not)."""
    X_, R_, t_, unbatched = _points_and_pose(X, "X", R, t)
    z2 = X_ @ R_[:, 2:3, :].mT + t_[:, None, 2:3]
    ok = (X_[..., 2] > 0) & (z2[..., 0] > 0)
    return ok[0] if unbatched else ok


def _rays(P1: torch.Tensor, P2: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor, R: torch.Tensor, t: torch.Tensor):
    """Float64 rays in camera 1's frame: ``d1 = K1^-1 x1`` from ``O1 = 0`` and
    ``d2 = R^T K2^-1 x2`` from ``O2 = -R^T t`` (the erratum: the second ray passes through
    ``O2`` and ``x2``, not through ``O1``)."""
    d1 = _homogeneous(P1) @ torch.linalg.inv(K1).mT
    d2 = _homogeneous(P2) @ torch.linalg.inv(K2).mT @ R  # rows: (R^T K2^-1 x2)^T
    O2 = -(R.mT @ t[..., None])[..., 0]
    return d1, d2, O2


def _geometry_inputs(p1, p2, K1, K2, R, t, check_baseline: bool = True):
    P1, P2, unbatched = _points_pair(p1, p2)
    b = P1.shape[0]
    K1_, K2_ = _matrices(K1, "K1", b).to(F64), _matrices(K2, "K2", b).to(F64)
    R_, t_ = _matrices(R, "R", b).to(F64), _vectors(t, "t", b).to(F64)
    check_same_device(p1=P1, K1=K1_, K2=K2_, R=R_, t=t_)
    if check_baseline and value_checks_enabled():
        zero = t_.norm(dim=-1) <= torch.finfo(F64).tiny
        if bool(zero.any()):
            raise ValueError(f"t of batch element {int(zero.nonzero()[0])} is zero (zero baseline): both rays start at "
                             "the same centre, so depth cannot be triangulated")
    return P1.to(F64), P2.to(F64), K1_, K2_, R_, t_, unbatched, _out_dtype(P1)


def _midpoint(d1, d2, O2, eps: float = 1e-12):
    """Midpoints ``(B, N, 3)`` of the closest points of the rays ``l1 d1`` and ``O2 + l2 d2``, the
    two depths along them, and where the rays are not parallel."""
    a, bb, c = (d1 * d1).sum(-1), (d1 * d2).sum(-1), (d2 * d2).sum(-1)
    p, q = (d1 * O2[:, None]).sum(-1), (d2 * O2[:, None]).sum(-1)
    det = a * c - bb * bb  # = |d1 x d2|^2
    ok = det > eps * a * c
    det = torch.where(ok, det, torch.ones_like(det))
    # minimise |l1 d1 - O2 - l2 d2|^2:  [a, -bb; bb, -c] [l1, l2] = [p, q]
    l1 = (c * p - bb * q) / det
    l2 = (bb * p - a * q) / det
    X = 0.5 * (l1[..., None] * d1 + O2[:, None] + l2[..., None] * d2)
    return torch.where(ok[..., None], X, torch.zeros_like(X)), ok


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
    d1, d2, O2 = _rays(P1, P2, K1_, K2_, R_, t_)
    X, ok = _midpoint(d1, d2, O2)
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
    P1, P2, unbatched = _points_pair(p1, p2)
    b, n = P1.shape[:2]
    E_ = _matrices(E, "E", b)
    Rs, ts = decompose_essential(E_)  # (B, 4, 3, 3), (B, 4, 3)
    Rs64, ts64 = Rs.to(F64), ts.to(F64)
    K1_, K2_ = _matrices(K1, "K1", b).to(F64), _matrices(K2, "K2", b).to(F64)
    m = torch.ones(b, n, dtype=torch.bool, device=P1.device) if mask is None else (mask[None] if mask.ndim == 1 else mask)
    if m.shape != (b, n):
        raise ValueError(f"mask: expected shape ({n},) or ({b}, {n}), got {tuple(mask.shape)}")
    rep = lambda x: x.repeat_interleave(4, dim=0)  # noqa: E731  (B*4, ...)
    d1, d2, O2 = _rays(rep(P1.to(F64)), rep(P2.to(F64)), rep(K1_), rep(K2_), Rs64.reshape(-1, 3, 3), ts64.reshape(-1, 3))
    X, ok = _midpoint(d1, d2, O2)
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
    unbatched, b = _batch_of(R, "R")
    R_, Rt_ = _matrices(R, "R", b).to(F64), _matrices(R_true, "R_true", b).to(F64)
    t_, tt_ = _vectors(t, "t", b).to(F64), _vectors(t_true, "t_true", b).to(F64)
    for name, v in (("t", t_), ("t_true", tt_)):
        if value_checks_enabled() and bool((v.norm(dim=-1) <= torch.finfo(F64).tiny).any()):
            raise ValueError(f"{name} is zero: it has no direction")
    cos_r = ((torch.diagonal(R_ @ Rt_.mT, dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    cos_t = ((t_ * tt_).sum(-1) / (t_.norm(dim=-1) * tt_.norm(dim=-1))).clamp(-1.0, 1.0)
    rot, tra = torch.rad2deg(torch.arccos(cos_r)), torch.rad2deg(torch.arccos(cos_t))
    out = _out_dtype(R)
    rot, tra = rot.to(out), tra.to(out)
    return (rot[0], tra[0]) if unbatched else (rot, tra)
