"""The networks, one module per family self-supervised depth and pose: a ResNet encoder, a U-Net depth decoder,
Monodepth's stereo network and a pose network (chapters 06, 07 and 09).

Everything is written from scratch in plain PyTorch (no torchvision) and starts from random
weights: **no pretrained (ImageNet) weights exist here and nothing is ever downloaded**. The
published Monodepth / monodepth2 numbers use an ImageNet-pretrained encoder; training from
scratch converges more slowly and to somewhat worse depth.

Conventions (shared by the whole course):

- Images are ``(B, C, H, W)`` floating-point tensors, RGB in ``[0, 1]``, with ``H`` and ``W``
  divisible by 32 (the encoder halves the resolution five times; the decoder doubles it back
  and must meet every skip connection at exactly the same size).
- *Scale* ``s`` means ``1 / 2**s`` of the **input** resolution: scale 0 is full resolution,
  scale 3 is ``(H / 8, W / 8)``. Multi-scale outputs are dicts ``{s: tensor}``.
- Disparities from :class:`MonodepthNet` are a *fraction of the image width* (Monodepth's
  convention, chapter 06); :func:`lesson_lib.stereo.fraction_to_pixels` with the width *at
  that scale* turns them into pixels.
- Pose vectors from :class:`PoseNet` are ``[tx, ty, tz, r1, r2, r3]`` (translation first) and
  map target-frame points into each source frame, ``T_t_to_s``, as
  :func:`lesson_lib.pose.pose_vector_to_matrix` and :func:`lesson_lib.warping.rigid_warp`
  expect (chapters 07 and 09).
- ``width`` sets the encoder's channels ``width * (1, 1, 2, 4, 8)``: 64 is the standard
  ResNet-18 (11.2 M parameters); 16 or 32 is the small variant for CPUs (16 times or 4 times
  fewer parameters).

- :mod:`~lesson_lib.models.common`   -- input checks, ``DIVISOR``, :func:`count_parameters`
- :mod:`~lesson_lib.models.encoders` -- :class:`ResNetEncoder` (ResNet-18/34 written in the course)
- :mod:`~lesson_lib.models.depth`    -- :class:`DepthDecoder`, :class:`MonodepthNet`
- :mod:`~lesson_lib.models.pose`     -- :class:`PoseNet`, SfMLearner's :class:`PoseExpNet` and its mask
- :mod:`~lesson_lib.models.flow`     -- :class:`FlowNet` (PWC-style), :func:`correlation_volume`
"""

from .common import DIVISOR, count_parameters, network_input_size
from .depth import DepthDecoder, MonodepthNet, default_decoder_channels
from .encoders import BasicBlock, ResNetEncoder
from .flow import FlowNet, correlation_volume, upsample_flow
from .pose import PoseExpNet, PoseNet, explainability

__all__ = [
    "DIVISOR",
    "BasicBlock",
    "ResNetEncoder",
    "DepthDecoder",
    "default_decoder_channels",
    "MonodepthNet",
    "PoseNet",
    "PoseExpNet",
    "explainability",
    "FlowNet",
    "correlation_volume",
    "upsample_flow",
    "count_parameters",
    "network_input_size",
]
