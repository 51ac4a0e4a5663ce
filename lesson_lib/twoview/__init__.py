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
  This is the course's ``T_t_to_s`` (README.md, Conventions) with view 1 as the target and view 2 as the
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

The package, one module per step of the chapter (all public names are importable from here):

- :mod:`~lesson_lib.twoview.epipolar`      -- E and F from a pose and from each other, a synthetic
  pair of views (:func:`project_pair`), Sampson distance, epipolar lines, epipoles
- :mod:`~lesson_lib.twoview.eight_point`   -- Hartley's normalisation, the design matrix, rank 2,
  the normalised 8-point algorithm
- :mod:`~lesson_lib.twoview.ransac`        -- RANSAC's sample count, :func:`ransac_fundamental`,
  :func:`homography_share`
- :mod:`~lesson_lib.twoview.pose_recovery` -- the four poses of E, cheirality, :func:`recover_pose`,
  :func:`pose_error`
- :mod:`~lesson_lib.twoview.triangulation` -- midpoint and DLT triangulation, reprojection error
"""

from __future__ import annotations

from ..pose import cross_matrix
from .eight_point import enforce_rank2, epipolar_design_matrix, fundamental_8point, normalising_transform
from .epipolar import (
    epipolar_lines,
    epipoles,
    essential_from_fundamental,
    essential_from_pose,
    fundamental_from_essential,
    project_pair,
    sampson_distance,
)
from .pose_recovery import decompose_essential, in_front, pose_error, recover_pose
from .ransac import RansacInfo, homography_share, ransac_fundamental, ransac_iterations
from .triangulation import reprojection_error, triangulate_dlt, triangulate_midpoint

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
