"""lesson_lib: the tested library behind the course *Self-supervised monocular depth
estimation, derived step by step*.

One module per topic, mirroring the chapters:

- :mod:`lesson_lib.stereo`   -- disparity and depth (chapter 01)
- :mod:`lesson_lib.camera`   -- intrinsics, projection, back-projection (chapter 02)
- :mod:`lesson_lib.pose`     -- 6-DoF vectors, 4x4 poses, composing and inverting (chapter 02)
- :mod:`lesson_lib.warping`  -- backward warping: bilinear sampling, stereo and rigid warps (chapter 03)
- :mod:`lesson_lib.losses`   -- SSIM, the photometric error, edge-aware smoothness (chapter 04)
- :mod:`lesson_lib.scenes`   -- tiny ray-cast scenes with exact depth and pose (chapter 03)
- :mod:`lesson_lib.models`   -- the networks: ResNet-style encoder, depth decoder, pose network (06-09)
- :mod:`lesson_lib.training` -- the one training loop, checkpoints, DDP (06-09)
- :mod:`lesson_lib.data`     -- the data: the Middlebury pair, the synthetic world (appendix A1),
  KITTI raw and folders of your own frames
- :mod:`lesson_lib.plotting` -- the figures every chapter draws alike
- :mod:`lesson_lib.widgets`  -- the interactive explorers
- :mod:`lesson_lib.checks`   -- the exercise checks
- :mod:`lesson_lib.student`  -- student versions of the notebooks (for instructors)
- :mod:`lesson_lib.env`      -- environment report and notebook set-up
"""

__version__ = "0.1.0"
