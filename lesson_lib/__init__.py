"""lesson_lib: the tested library behind the course *Self-supervised monocular depth
estimation, derived step by step*.

One module per topic, mirroring the chapters:

- :mod:`lesson_lib.stereo`   -- disparity and depth (chapter 01)
- :mod:`lesson_lib.camera`   -- intrinsics, projection, back-projection (chapter 02)
- :mod:`lesson_lib.pose`     -- 6-DoF vectors, 4x4 poses, composing and inverting (chapter 02)
- :mod:`lesson_lib.data`     -- the data the course ships (the Middlebury pair, ...)
- :mod:`lesson_lib.plotting` -- the figures every chapter draws alike
- :mod:`lesson_lib.widgets`  -- the interactive explorers
- :mod:`lesson_lib.checks`   -- the exercise checks
- :mod:`lesson_lib.student`  -- student versions of the notebooks (for instructors)
- :mod:`lesson_lib.env`      -- environment report and notebook set-up
"""

__version__ = "0.1.0"
