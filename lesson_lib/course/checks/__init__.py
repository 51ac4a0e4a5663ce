"""Exercise checks: each notebook exercise is followed by a cell that calls one of these.

How a check behaves (chapter 00 explains it to students):

- **Correct**: prints what was tested and returns ``True``.
- **Wrong**: raises :class:`CheckFailed` (an ``AssertionError``) whose message says which case
  failed, which element, what was expected and what came back, plus a hint when the answer
  matches a known mistake (a forgotten ``doffs``, a transposed matrix, degrees for radians...).
- **Not done yet** (the exercise still raises ``NotImplementedError``, as in the student
  version): prints "not implemented yet" and returns ``False``, so *Run All* goes on through
  the chapter (later cells use the library's reference implementation, never the student's).
  Under nbgrader (``NBGRADER_EXECUTION`` is ``autograde`` or ``validate``), or with
  ``LESSON_LIB_STRICT_CHECKS=1``, an unfinished exercise raises :class:`ExerciseNotDone`
  instead, so it scores zero.
"""

from .engine import CheckFailed, ExerciseNotDone, grading_mode
from .solutions import solution
from .ch00_start import check_image_to_tensor
from .ch01_stereo import (
    check_disparity_to_depth,
    check_depth_uncertainty,
    check_middlebury_depth,
)
from .ch02_camera import (
    check_project,
    check_backproject,
    check_euler_to_matrix,
    check_invert_pose,
    check_scale_intrinsics,
)
from .ch03_warping import (
    check_bilinear_at,
    check_normalize_coords,
    check_stereo_sampling_grid,
)
from .ch04_losses import (
    check_ssim_map,
    check_photometric_map,
    check_edge_aware_smoothness,
)
from .ch05_stereo_opt import (
    check_lr_consistency,
    check_wta_subpixel,
)
from .ch06_monodepth import (
    check_left_right_term,
    check_post_process,
)
from .ch07_sfmlearner import (
    check_source_pixels,
    check_explainability_loss,
    check_ate_alignment,
)
from .ch08_twoview import (
    check_normalising_transform,
    check_eight_point,
    check_ransac,
    check_four_poses,
    check_in_front,
    check_midpoint,
)
from .ch09_trianflow import (
    check_ray_angle,
    check_move_depth,
    check_top_correspondences,
    check_scale_registration,
)
from .ch10_evaluation import (
    check_depth_errors,
    check_median_scale,
    check_umeyama,
)
from .ch11_beyond import (
    check_min_reprojection,
    check_automask,
)
from .a1_world import check_ray_box

__all__ = [
    "solution",
    "CheckFailed",
    "ExerciseNotDone",
    "grading_mode",
    "check_image_to_tensor",
    "check_disparity_to_depth",
    "check_depth_uncertainty",
    "check_middlebury_depth",
    "check_project",
    "check_backproject",
    "check_euler_to_matrix",
    "check_invert_pose",
    "check_scale_intrinsics",
    "check_bilinear_at",
    "check_normalize_coords",
    "check_stereo_sampling_grid",
    "check_ssim_map",
    "check_photometric_map",
    "check_edge_aware_smoothness",
    "check_lr_consistency",
    "check_wta_subpixel",
    "check_left_right_term",
    "check_post_process",
    "check_source_pixels",
    "check_explainability_loss",
    "check_ate_alignment",
    "check_normalising_transform",
    "check_eight_point",
    "check_ransac",
    "check_four_poses",
    "check_in_front",
    "check_midpoint",
    "check_ray_angle",
    "check_move_depth",
    "check_top_correspondences",
    "check_scale_registration",
    "check_depth_errors",
    "check_median_scale",
    "check_umeyama",
    "check_min_reprojection",
    "check_automask",
    "check_ray_box",
]
