"""The data the course uses. Nothing here downloads anything.

- :func:`load_middlebury_motorcycle`: a real rectified stereo pair with ground-truth disparity
  (Middlebury 2014 "Motorcycle", shipped inside scikit-image).
- :func:`read_pfm` / :func:`write_pfm`: the PFM format Middlebury's full-size data uses.
"""

from .middlebury import (
    MiddleburyCalibration,
    StereoPair,
    image_to_tensor,
    load_middlebury_motorcycle,
    read_pfm,
    write_pfm,
)

__all__ = [
    "MiddleburyCalibration",
    "StereoPair",
    "image_to_tensor",
    "load_middlebury_motorcycle",
    "read_pfm",
    "write_pfm",
]
