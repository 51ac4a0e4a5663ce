"""Helpers shared by the two-view modules (chapter 08): input layouts (unbatched inputs as a
batch of one, shapes checked), the dtype results come back in, and the small float64 linear
algebra the 8-point algorithm, RANSAC, triangulation and pose recovery all use (design rows, null
vectors, rank 2, the two rays of a correspondence and their midpoint). Not part of the public
interface: :mod:`lesson_lib.twoview` re-exports what learners call."""

from __future__ import annotations

import math

import torch

from .._validate import check_same_device, check_tensor, value_checks_enabled
from ..camera import intrinsics_inverse

F64 = torch.float64
SAMPLE_SIZE = 8  # correspondences per RANSAC hypothesis (the 8-point algorithm)


def points_pair(p1: torch.Tensor, p2: torch.Tensor, min_points: int = 1) -> tuple[torch.Tensor, torch.Tensor, bool]:
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


def batch_of(M: torch.Tensor, name: str) -> tuple[bool, int]:
    """Whether ``M`` (``(3, 3)`` or ``(B, 3, 3)``) is unbatched, and its batch size."""
    check_tensor(M, name)
    if M.ndim not in (2, 3):
        raise ValueError(f"{name}: expected shape (3, 3) or (B, 3, 3), got {tuple(M.shape)}")
    return M.ndim == 2, 1 if M.ndim == 2 else M.shape[0]


def matrices(M: torch.Tensor, name: str, batch: int) -> torch.Tensor:
    """``(3, 3)`` or ``(B, 3, 3)`` to ``(batch, 3, 3)``."""
    check_tensor(M, name)
    if M.ndim == 2 and M.shape == (3, 3):
        return M[None].expand(batch, 3, 3)
    if M.ndim == 3 and M.shape[1:] == (3, 3) and M.shape[0] in (1, batch):
        return M.expand(batch, 3, 3)
    raise ValueError(f"{name}: expected shape (3, 3) or ({batch}, 3, 3), got {tuple(M.shape)}")


def vectors(t: torch.Tensor, name: str, batch: int) -> torch.Tensor:
    """``(3,)`` or ``(B, 3)`` to ``(batch, 3)``."""
    check_tensor(t, name)
    if t.ndim == 1 and t.shape == (3,):
        return t[None].expand(batch, 3)
    if t.ndim == 2 and t.shape[1] == 3 and t.shape[0] in (1, batch):
        return t.expand(batch, 3)
    raise ValueError(f"{name}: expected shape (3,) or ({batch}, 3), got {tuple(t.shape)}")


def out_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, F64) else torch.float32


def homogeneous(p: torch.Tensor) -> torch.Tensor:
    return torch.cat([p, torch.ones_like(p[..., :1])], dim=-1)


def unit_norm_sign(F: torch.Tensor) -> torch.Tensor:
    """``F / ||F||_F`` with the entry of largest magnitude positive (a fixed representative)."""
    F = F / F.flatten(-2).norm(dim=-1)[..., None, None]
    flat = F.flatten(-2)
    sign = torch.sign(flat.gather(-1, flat.abs().argmax(-1, keepdim=True)))
    return F * sign[..., None]


def points_and_pose(X: torch.Tensor, name: str, R: torch.Tensor, t: torch.Tensor):
    """``X`` ``(N, 3)`` or ``(B, N, 3)`` as a batch, with ``R`` and ``t`` batched to match and in
    its dtype: ``(X (B, N, 3), R (B, 3, 3), t (B, 3), unbatched)``."""
    check_tensor(X, name)
    if X.ndim not in (2, 3) or X.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (N, 3) or (B, N, 3), got {tuple(X.shape)}")
    unbatched = X.ndim == 2
    X_ = X[None] if unbatched else X
    b = X_.shape[0]
    return X_, matrices(R, "R", b).to(X_.dtype), vectors(t, "t", b).to(X_.dtype), unbatched


def apply_affine(T: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 3)`` transforms applied to ``(B, N, 2)`` points (affine: no division)."""
    return p @ T[:, :2, :2].mT + T[:, None, :2, 2]


def design_rows(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    u1, v1 = x1.unbind(-1)
    u2, v2 = x2.unbind(-1)
    one = torch.ones_like(u1)
    return torch.stack([u2 * u1, u2 * v1, u2, v2 * u1, v2 * v1, v2, u1, v1, one], dim=-1)


def null_vectors(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit ``f`` minimising ``||A f||`` for ``A`` ``(..., M, 9)``, M >= 8, and the singular values
    of ``A`` (descending)."""
    if A.shape[-2] > 9:
        A = torch.linalg.qr(A, mode="r")[1]  # same singular values and right vectors, 9 x 9
    _, S, Vh = torch.linalg.svd(A, full_matrices=True)
    return Vh[..., -1, :], S


def rank2(f: torch.Tensor) -> torch.Tensor:
    U, S, Vh = torch.linalg.svd(f.reshape(*f.shape[:-1], 3, 3))
    return (U[..., :, :2] * S[..., None, :2]) @ Vh[..., :2, :]


def rank_tolerance(dtype: torch.dtype) -> float:
    return math.sqrt(torch.finfo(dtype if dtype in (torch.float32, F64) else torch.float32).eps)


def camera_rays(P1: torch.Tensor, P2: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor, R: torch.Tensor, t: torch.Tensor):
    """Float64 rays in camera 1's frame: ``d1 = K1^-1 x1`` from ``O1 = 0`` and
    ``d2 = R^T K2^-1 x2`` from ``O2 = -R^T t`` (the erratum: the second ray passes through
    ``O2`` and ``x2``, not through ``O1``)."""
    d1 = homogeneous(P1) @ intrinsics_inverse(K1, "K1").mT
    d2 = homogeneous(P2) @ intrinsics_inverse(K2, "K2").mT @ R  # rows: (R^T K2^-1 x2)^T
    O2 = -(R.mT @ t[..., None])[..., 0]
    return d1, d2, O2


def ray_midpoints(d1, d2, O2, eps: float = 1e-12):
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
