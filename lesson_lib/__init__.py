"""lesson_lib: the tested library behind the course *Self-supervised monocular depth
estimation, derived step by step*.

The maths of each chapter is one flat module named after it; what grows by paper or network
lives in sub-packages; the course's tooling stays out of the maths' way. The map:

The maths, by chapter
- :mod:`lesson_lib.stereo`     -- disparity and depth, per pixel and batched (chapter 01)
- :mod:`lesson_lib.camera`     -- intrinsics, projection, back-projection (chapter 02)
- :mod:`lesson_lib.pose`       -- 6-DoF vectors, 4x4 poses, composing and inverting (chapter 02)
- :mod:`lesson_lib.warping`    -- backward warping: bilinear sampling, stereo, rigid and flow warps (chapters 03, 09)
- :mod:`lesson_lib.scenes`     -- tiny ray-cast scenes with exact depth and pose (chapter 03)
- :mod:`lesson_lib.losses`     -- the box filter, SSIM, the photometric error, edge-aware smoothness (chapter 04)
- :mod:`lesson_lib.images`     -- image pyramids and resizing (chapters 05-11)
- :mod:`lesson_lib.matching`   -- cost volumes, census, winner-take-all, the left-right check (chapter 05)
- :mod:`lesson_lib.stereo_opt` -- stereo by optimisation, coarse to fine (chapter 05)
- :mod:`lesson_lib.metrics`    -- depth metrics, median scaling, EPE / bad-pixel rates (chapters 05, 06, 10)
- :mod:`lesson_lib.twoview`    -- epipolar geometry: the 8-point algorithm, RANSAC, pose from E,
  triangulation (chapter 08; chapter 09 trains with it); one package, a module per step
  (``epipolar``, ``eight_point``, ``ransac``, ``pose_recovery``, ``triangulation``)
- :mod:`lesson_lib.trajectory` -- camera trajectories: ATE on snippets (chapter 07); whole drives: chaining motions,
  7-DoF alignment, KITTI's drift errors (chapter 10)
- :mod:`lesson_lib.evaluation` -- the evaluation protocol every method is measured with (06-11)

What grows by paper or network
- :mod:`lesson_lib.models`     -- networks: ``encoders`` (ResNet), ``depth`` (U-Net decoder,
  Monodepth's network), ``pose`` (pose network)
- :mod:`lesson_lib.methods`    -- one module per method (``monodepth``, ``sfmlearner``, ``trianflow``,
  ``monodepth2``) and the registry
- :mod:`lesson_lib.training`   -- the method contract, typed configs, the training loop,
  checkpoints and weights files, random states, logs, distributed set-up, ``syncs`` (the
  host-sync counter: tensor calls that would make a GPU wait, and the lines that make them),
  ``opcount`` (the operations a training step dispatches, counted per phase)
- :mod:`lesson_lib.weights`    -- the trained models shipped with the package
- :mod:`lesson_lib.keyed_random` -- random numbers computed from a key tensor (what a compiled or
  CUDA-graph-captured training step can draw); every sampler also takes a ``torch.Generator``
- :mod:`lesson_lib.data`       -- the data: the Middlebury pair, the synthetic world (appendix A1),
  KITTI raw and folders of your own frames

The course's tooling (:mod:`lesson_lib.course`)
- ``checks`` (one module per chapter and the shared engine), ``plotting``, ``widgets``,
  ``env`` (set-up and environment check), ``student`` (student versions), ``start`` (the
  learner's own copy of the course, opened in JupyterLab), ``notebooks``
  (the notebook runner), ``outputs`` (stored and fresh notebook outputs compared, printed
  numbers within a tolerance: nbval's comparison), ``book`` (the course as a website),
  ``cli`` (``python -m lesson_lib ...``)

Imports only go downwards in this list's layers: the maths use nothing above them; ``data`` and
``models`` use the maths; ``training`` is generic; ``evaluation`` and ``methods`` build on all of
those; ``course`` sits on top. No module imports another module's private names.
"""

__version__ = "0.1.0"
