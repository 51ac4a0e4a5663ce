"""Robust estimation of F (chapter 08, Exercise 8.3 writes the plain loop): how many samples
RANSAC needs, the batched LO-RANSAC of :func:`ransac_fundamental` with its :class:`RansacInfo`,
and :func:`homography_share`, which flags data that do not determine F. Conventions:
:mod:`lesson_lib.twoview`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import keyed_random
from .._validate import float32_geometry
from ..keyed_random import RandomSource
from ._common import (
    F64,
    SAMPLE_SIZE,
    apply_affine,
    design_rows,
    homogeneous,
    null_vectors,
    out_dtype,
    points_pair,
    rank2,
    unit_norm_sign,
)
from .eight_point import normalising_transform

DEGENERATE_SHARE = 0.9  # ransac_fundamental flags F as degenerate when a homography explains this share
LO_POINTS = 1024  # ransac_fundamental refits its candidates on at most this many correspondences


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


def _sample(b: int, m: int, n: int, generator: RandomSource, device: torch.device, sync_free: bool) -> torch.Tensor:
    """``(b, m, 8)`` indices, distinct within each sample, from ``generator`` (deterministic).

    Few correspondences (``n <= 64``): the first 8 of a random permutation. Otherwise, without
    ``sync_free``, 8 uniform draws with the samples that repeat an index redrawn (a loop whose
    length the host reads); with ``sync_free``, draw ``r_j`` uniform in ``[0, n - j)`` and take
    the ``r_j``-th index not chosen yet (shift ``r_j`` past each chosen index at or below it,
    in ascending order): distinct by construction, uniform over ordered samples, and a fixed
    number of tensor operations."""
    if n <= 64:
        return keyed_random.rand(generator, (b, m, n), device).argsort(-1)[..., :SAMPLE_SIZE]
    if sync_free:
        bounds = n - torch.arange(SAMPLE_SIZE, device=device)  # n, n - 1, ..., n - 7
        r = (keyed_random.rand(generator, (b, m, SAMPLE_SIZE), device) * bounds).long().minimum(bounds - 1)
        chosen = [r[..., 0]]
        for j in range(1, SAMPLE_SIZE):
            v = r[..., j]
            for taken in torch.stack(chosen, -1).sort(-1).values.unbind(-1):
                v = v + (v >= taken).long()
            chosen.append(v)
        return torch.stack(chosen, -1)
    idx = keyed_random.randint(generator, n, (b, m, SAMPLE_SIZE), device)
    while True:
        s = idx.sort(-1).values
        dup = (s[..., 1:] == s[..., :-1]).any(-1)
        k = int(dup.sum())
        if k == 0:
            return idx
        idx[dup] = keyed_random.randint(generator, n, (k, SAMPLE_SIZE), device)


class _Scorer:
    """Scores many normalised-coordinate models against all correspondences at once.

    With ``x̂ = T x`` (``T`` of scale ``s``) and a model ``F̂`` in normalised coordinates, the
    residual ``r = x̂2^T F̂ x̂1`` equals the pixel one, and its gradient with respect to the pixel
    coordinates is ``s1 (F̂^T x̂2)_{1,2}`` and ``s2 (F̂ x̂1)_{1,2}``: the Sampson distance in pixels
    comes out of the normalised coordinates without forming the pixel ``F``."""

    def __init__(self, x1: torch.Tensor, x2: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, threshold: float):
        self.A = design_rows(x1, x2)  # (B, N, 9)
        self.X1t = homogeneous(x1).mT  # (B, 3, N)
        self.X2t = homogeneous(x2).mT
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
    return rank2(torch.linalg.eigh(M)[1][..., :, 0])


def _polish(
    scorer: _Scorer, A64: torch.Tensor, F: torch.Tensor, iterations: int, weighted: bool, early_stop: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refit ``F`` ``(B, 3, 3)`` on its own inliers, again and again (batched; float64).

    Each round takes the inliers of the current model and solves the 8-point least squares on
    them: unweighted, or with ``weighted`` each correspondence weighted by ``1 / den`` of the
    current model, so that the sum of squared Sampson distances ``sum r^2 / den`` is what is
    minimised. A refit is kept only where it lowers the MSAC cost; an element stops when it
    does not, or after ``iterations`` rounds (without ``early_stop`` all rounds run, the
    stopped elements unchanged: no value read on the host). Returns the model, its cost
    ``(B,)`` and its inliers ``(B, N)``."""
    cost, inl = (x[:, 0] for x in scorer.score(F[:, None]))
    live = inl.sum(-1) >= SAMPLE_SIZE
    for _ in range(iterations):
        if early_stop and not bool(live.any()):
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
    P1, P2, unbatched = points_pair(p1, p2)
    b, n = P1.shape[:2]
    m = torch.ones(b, n, dtype=torch.bool, device=P1.device) if mask is None else mask
    if m.ndim == 1:
        m = m[None]
    if m.shape != (b, n):
        raise ValueError(f"mask: expected shape ({n},) or ({b}, {n}), got {tuple(mask.shape)}")
    T1, T2 = normalising_transform(P1).to(F64), normalising_transform(P2).to(F64)
    x1, x2 = apply_affine(T1, P1.to(F64)), apply_affine(T2, P2.to(F64))
    u1, v1 = x1.unbind(-1)
    u2, v2 = x2.unbind(-1)
    z, o = torch.zeros_like(u1), torch.ones_like(u1)
    rows = torch.cat([
        torch.stack([-u1, -v1, -o, z, z, z, u2 * u1, u2 * v1, u2], -1),
        torch.stack([z, z, z, -u1, -v1, -o, v2 * u1, v2 * v1, v2], -1),
    ], dim=1) * m.repeat(1, 2)[..., None].to(F64)
    h, _ = null_vectors(rows)
    H = torch.linalg.solve_ex(T2, h.reshape(b, 3, 3) @ T1)[0]  # T2 is invertible (a scale > 0)
    q = homogeneous(P1.to(F64)) @ H.mT
    w = q[..., 2:]
    q = q[..., :2] / torch.where(w.abs() < 1e-300, torch.full_like(w, 1e-300), w)
    ok = ((q - P2.to(F64)).norm(dim=-1) <= threshold) & m
    count = m.sum(-1)
    share = torch.where(count >= 4, ok.sum(-1) / count.clamp_min(1), torch.zeros(b, dtype=F64, device=P1.device))
    share = share.to(out_dtype(P1))
    return share[0] if unbatched else share


@float32_geometry
def ransac_fundamental(
    p1: torch.Tensor,
    p2: torch.Tensor,
    threshold: float = 1.0,
    confidence: float = 0.99,
    max_iters: int = 4096,
    generator: RandomSource = None,
    *,
    iterations: int | None = None,
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
    2. **Stop adaptively** (unless ``iterations`` fixes the count). After each round the
       number of samples needed is updated from the best candidate's inlier share ``w`` with
       :func:`ransac_iterations`,
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
        generator: the random source of the samples and of the subset: a ``torch.Generator``
            (``None``: PyTorch's global one) or a :class:`lesson_lib.keyed_random.KeyedRandom`.
            The same generator state gives the same result on the same machine.
        iterations: draw exactly this many samples (in rounds of ``batch_size``) instead of
            stopping adaptively, and run every refit round: no value is read on the host, so
            the estimate can be compiled or captured as a CUDA graph (with a ``KeyedRandom``
            for a compiled step). ``None``: adaptive, between ``min_iters`` and ``max_iters``.
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
    P1, P2, unbatched = points_pair(p1, p2, min_points=SAMPLE_SIZE)
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a finite number > 0 (pixels), got {threshold}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1):
        raise ValueError(f"iterations must be None (adaptive) or an integer >= 1, got {iterations!r}")
    for name, v, low in (("max_iters", max_iters, 1), ("batch_size", batch_size, 1), ("min_iters", min_iters, 0),
                         ("subset", subset, SAMPLE_SIZE), ("candidates", candidates, 1), ("lo_iters", lo_iters, 0),
                         ("refit_iters", refit_iters, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    out = out_dtype(P1)
    work = F64 if P1.dtype == F64 else torch.float32
    b, n = P1.shape[:2]
    dev = P1.device
    T1, T2 = normalising_transform(P1).to(F64), normalising_transform(P2).to(F64)
    x1, x2 = apply_affine(T1, P1.to(F64)), apply_affine(T2, P2.to(F64))
    A64 = design_rows(x1, x2)
    scorer_x1, scorer_x2, s1, s2 = x1.to(work), x2.to(work), T1[:, 0, 0].to(work), T2[:, 0, 0].to(work)
    scorer = _Scorer(scorer_x1, scorer_x2, s1, s2, threshold)

    k_sub, k_lo = min(n, subset), min(n, LO_POINTS)
    perm = keyed_random.randperm(generator, n, dev)
    S, S_lo = perm[:k_sub], perm[:k_lo]
    sub = _Scorer(scorer_x1[:, S], scorer_x2[:, S], s1, s2, threshold)
    pool_F = torch.zeros(b, 0, 3, 3, dtype=F64, device=dev)
    pool_c = torch.zeros(b, 0, dtype=torch.long, device=dev)
    batch_idx = torch.arange(b, device=dev)
    fixed = iterations is not None

    def draw_round(m: int, active: torch.Tensor | None) -> None:
        """Draw ``m`` samples per element, score them, keep the best ``candidates`` in the pool
        (elements where ``active`` is False take none)."""
        nonlocal pool_F, pool_c
        idx = _sample(b, m, n, generator, dev, sync_free=fixed)  # (B, m, 8)
        As = A64[batch_idx[:, None, None], idx]  # (B, m, 8, 9)
        F_h = torch.linalg.qr(As.mT, mode="complete")[0][..., :, -1].reshape(b, m, 3, 3)  # null vectors
        c = sub.inliers(F_h).sum(-1)  # (B, m): inliers among the subset
        if active is not None:
            c = torch.where(active[:, None], c, torch.full_like(c, -1))  # finished elements take no more
        all_F, all_c = torch.cat([pool_F, F_h], 1), torch.cat([pool_c, c], 1)
        order = torch.sort(all_c, dim=1, descending=True, stable=True).indices[:, :candidates]
        pool_F, pool_c = all_F[batch_idx[:, None], order], all_c.gather(1, order)

    def textbook() -> torch.Tensor:
        return ransac_iterations(pool_c[:, 0].clamp_min(0).to(F64) / k_sub, confidence).to(dev)

    if fixed:
        for start in range(0, iterations, batch_size):
            draw_round(min(batch_size, iterations - start), None)
        drawn = torch.full((b,), iterations, dtype=torch.long, device=dev)
        formula = textbook()
        required = torch.full((b,), float(iterations), dtype=F64, device=dev)
    else:
        drawn = torch.zeros(b, dtype=torch.long, device=dev)
        required = torch.full((b,), float(max_iters), dtype=F64, device=dev)
        formula = required.clone()
        active = torch.ones(b, dtype=torch.bool, device=dev)
        while bool(active.any()):
            m = min(batch_size, max_iters - int(drawn[active].max()))
            draw_round(m, active)
            drawn = drawn + active.long() * m
            raw = textbook()
            formula = torch.where(active, raw, formula)
            required = torch.where(active, raw.clamp(min=float(min_iters), max=float(max_iters)), required)
            active = active & (drawn.to(F64) < required)

    # the candidates, refitted together on their inliers; the best by MSAC cost, refitted by
    # Sampson-weighted least squares
    p = pool_F.shape[1]
    rep = lambda x: x.repeat_interleave(p, dim=0)  # noqa: E731
    pool_scorer = _Scorer(rep(scorer_x1[:, S_lo]), rep(scorer_x2[:, S_lo]), rep(s1), rep(s2), threshold)
    F_lo, cost, _ = _polish(pool_scorer, rep(A64[:, S_lo]), rank2(pool_F.reshape(b * p, 9)), lo_iters, weighted=False,
                            early_stop=not fixed)
    best = cost.reshape(b, p).argmin(-1)
    best_F = F_lo.reshape(b, p, 3, 3)[batch_idx, best]
    best_F, _, best_inl = _polish(scorer, A64, best_F, refit_iters, weighted=True, early_stop=not fixed)
    F = unit_norm_sign(T2.mT @ best_F @ T1).to(out)
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
