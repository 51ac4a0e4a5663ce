"""The data the course uses. Nothing here downloads anything.

- :func:`load_middlebury_motorcycle`: a real rectified stereo pair with ground-truth disparity
  (Middlebury 2014 "Motorcycle", shipped inside scikit-image).
- :func:`read_pfm` / :func:`write_pfm`: the PFM format Middlebury's full-size data uses.
- The synthetic driving world (appendix A1): :func:`render_sequence`, :func:`load_sequence`
  (cached in the folder :func:`~lesson_lib.data.synthetic.default_cache_dir` names), :func:`load_split`, and the datasets :class:`StereoDataset`
  and :class:`VideoDataset`.
- For users who have it, KITTI raw (:class:`KittiStereo`, :class:`KittiVideo`) and a folder of
  one's own frames (:class:`ImageFolder`), with the same item keys for the shared fields.
"""

from .synthetic import (
    StereoDataset,
    VideoDataset,
    WorldSequence,
    load_sequence,
    load_split,
    render_sequence,
)
from .world import CameraConfig, MotionConfig, StreetConfig
from .folder import ImageFolder
from .kitti import KittiCalibration, KittiStereo, KittiVideo, read_split_file
from .middlebury import (
    MiddleburyCalibration,
    StereoPair,
    image_to_tensor,
    load_middlebury_motorcycle,
    read_pfm,
    write_pfm,
)

__all__ = [
    "ImageFolder",
    "KittiCalibration",
    "KittiStereo",
    "KittiVideo",
    "read_split_file",
    "CameraConfig",
    "MotionConfig",
    "StreetConfig",
    "WorldSequence",
    "StereoDataset",
    "VideoDataset",
    "load_sequence",
    "load_split",
    "render_sequence",
    "MiddleburyCalibration",
    "StereoPair",
    "image_to_tensor",
    "load_middlebury_motorcycle",
    "read_pfm",
    "write_pfm",
]
