"""What the monocular methods share: their depth inference, written once.

SfMLearner, Monodepth2 and TrianFlow each have a depth network whose ``depth(image)`` returns a
disparity (inverse depth, up to scale) at every scale. :class:`MonocularMethod` gives them the
contract's :meth:`~lesson_lib.training.Method.predict_disparity` and
:meth:`~lesson_lib.training.Method.predict_depth` from it: resize to the size the network was
trained at, evaluate in eval mode, resize back, ``depth = 1 / disp`` up to an unknown scale.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_same_device, check_tensor
from ..images import resize
from ..models import network_input_size
from ..training import Method

__all__ = ["MonocularMethod", "monocular_disparity", "unwrap"]


def unwrap(model: nn.Module, net_class: type[nn.Module], method: str) -> Any:
    """``model`` without its DistributedDataParallel wrapper, checked to be a ``net_class``."""
    net = model.module if hasattr(model, "module") else model
    if not isinstance(net, net_class):
        raise TypeError(f"model: expected a {net_class.__name__} (methods.load_model of {method} weights), "
                        f"got {type(net).__name__}")
    return net


@torch.no_grad()
def monocular_disparity(
    net: nn.Module, image: torch.Tensor, input_size: tuple[int, int] | None = None, *, post_processing: bool = False
) -> torch.Tensor:
    """The full-scale disparity ``net.depth(x)[0]`` of a monocular depth network for ``image
    (B, 3, H, W)``: resized to ``input_size`` (None: the nearest size the network takes), with
    ``post_processing`` averaged with the mirrored image's prediction flipped back, and resized
    back to ``(H, W)``. The network runs in eval mode and is left as it was."""
    check_tensor(image, "image", ("B", 3, "H", "W"))
    check_same_device(image=image, model=next(net.parameters()))
    was_training = net.training
    net.eval()
    try:
        size = input_size or network_input_size(*image.shape[-2:])
        x = resize(image.float(), size)
        disp = net.depth(x)[0]
        if post_processing:
            disp = 0.5 * (disp + net.depth(x.flip(-1))[0].flip(-1))
        if tuple(disp.shape[-2:]) != tuple(image.shape[-2:]):
            disp = F.interpolate(disp, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)
    finally:
        net.train(was_training)
    return disp


class MonocularMethod(Method):
    """A method whose network (a ``net_class`` with ``depth(image) -> {scale: disparity}``)
    predicts depth up to scale from one image, at its configuration's ``input_size``."""

    net_class: ClassVar[type[nn.Module]] = nn.Module
    metric_depth: ClassVar[bool] = False
    data_kind: ClassVar[str] = "video"

    def net(self, model: nn.Module) -> Any:
        """The method's network inside ``model`` (unwrapped from DistributedDataParallel)."""
        return unwrap(model, self.net_class, self.name)

    def predict_disparity(self, model: nn.Module, image: torch.Tensor, *, post_processing: bool = False) -> torch.Tensor:
        """``(B, 1, H, W)`` inverse depth up to scale; ``post_processing`` averages with the
        mirrored image's prediction, flipped back (:func:`monocular_disparity`)."""
        return monocular_disparity(self.net(model), image, self.config.input_size, post_processing=post_processing)

    def predict_depth(
        self,
        model: nn.Module,
        image: torch.Tensor,
        K: torch.Tensor | None = None,
        baseline: torch.Tensor | None = None,
        *,
        post_processing: bool = False,
        max_depth: float = 100.0,
    ) -> torch.Tensor:
        """Depth ``1 / disp`` up to an unknown scale (median-scale it before comparing); ``K``
        and ``baseline`` are not needed."""
        return (1.0 / self.predict_disparity(model, image, post_processing=post_processing)).clamp(max=max_depth)
