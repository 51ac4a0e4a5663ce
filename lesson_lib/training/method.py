"""The method contract: what a chapter's method supplies to the :class:`~lesson_lib.training.Trainer`.

A method owns its model (one module, e.g. depth and pose networks together), its loss and its
options; the trainer owns everything else. Four methods are planned on this contract: Monodepth
(stereo, chapter 06), SfMLearner (video, 07), TrianFlow (two stages, flow then depth, 09) and
Monodepth2 (11). What the contract offers them:

- the loss receives a :class:`StepContext`: the step, a **per-step seeded generator** (the only
  source of randomness a loss should use: sampling correspondences, RANSAC hypotheses, ...; the
  global generators are left alone), the device, and :meth:`StepContext.full_precision` to keep a
  part of the loss out of mixed precision (8-point solves, SVDs, triangulation);
- :meth:`Method.frozen_modules`: sub-networks that are not trained (e.g. TrianFlow's flow network
  in its depth stage); the trainer keeps them in eval mode and out of the optimizer;
- :func:`lesson_lib.training.checkpoints.load_weights_into` loads part of a model from another
  run's checkpoint or weights file (called from :meth:`Method.build_model`);
- inference for every depth method in one shape, so evaluation and ``predict`` work for all:
  :meth:`Method.predict_disparity` and :meth:`Method.predict_depth`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

__all__ = ["Method", "StepContext", "step_generator", "method_config_dict", "has_validate"]


def step_generator(seed: int, step: int, rank: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from ``(seed, step, rank)`` alone (NumPy's SeedSequence
    mixes the three), so a resumed run draws exactly what an uninterrupted one drew."""
    state = int(np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=torch.device(device)).manual_seed(state)


@dataclass
class StepContext:
    """What the trainer tells a method's :meth:`Method.loss` about the current step.

    Attributes:
        step: optimizer steps done before this one (0 for the first step of a run).
        generator: seeded from ``(seed, step, rank)`` (:func:`step_generator`), on ``device``.
        device: where the batch and the model are.
        autocast_dtype: the mixed-precision type the loss runs under, or None (float32).
    """

    step: int
    generator: torch.Generator
    device: torch.device
    autocast_dtype: torch.dtype | None = None

    @contextlib.contextmanager
    def full_precision(self) -> Iterator[None]:
        """Autocast off for the enclosed code (a no-op without mixed precision). Tensors made
        before keep their dtype: call ``.float()`` on them inside."""
        if self.autocast_dtype is None:
            yield
            return
        with torch.autocast(self.device.type, enabled=False):
            yield


class Method(ABC):
    """What a chapter's method supplies to the :class:`~lesson_lib.training.Trainer`.

    Subclass it (or write any object with the same attributes):

    - ``name``: identifies the method in checkpoints, weights files and the registry
      (:mod:`lesson_lib.methods`); a checkpoint of another method is refused;
    - ``config_class`` and ``config``: the method's typed options (a dataclass, stored in every
      checkpoint so the model can be rebuilt from its file alone);
    - :meth:`build_model`: a new, freshly initialised model (called once, after seeding);
    - :meth:`loss`: the training loss of one batch and a few numbers to log;
    - :meth:`validate` (optional): metrics of one validation batch (e.g. depth errors);
    - :meth:`frozen_modules` (optional): sub-networks kept frozen and in eval mode;
    - :meth:`predict_disparity` / :meth:`predict_depth` (depth methods): inference;
    - ``find_unused_parameters`` (optional, default False): passed to DistributedDataParallel,
      for a model whose forward leaves some parameters out of the loss.
    """

    name: ClassVar[str] = "method"
    config_class: ClassVar[type | None] = None
    metric_depth: ClassVar[bool] = False
    """True when the method's depth is in metres (stereo training); False: up to scale."""

    config: Any = None

    @abstractmethod
    def build_model(self) -> nn.Module:
        """Return the model to train (on the CPU; the trainer moves it)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, Any]]:
        """Return ``(loss, logs)`` for one training batch (already on the device).

        ``loss`` is a scalar tensor to minimise; ``logs`` maps names to numbers (scalar tensors,
        best left on the device: the trainer reads them only every ``log_every`` steps) written
        to ``log.csv``. Call the model as ``model(...)`` so that distributed training averages
        the gradients. Draw random numbers only from ``ctx.generator``.
        """

    def validate(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """Metrics of one validation batch, each a mean over the batch's samples.

        The trainer averages them over the validation set, weighting each batch by its size.
        Not overriding it means the method has no validation.
        """
        return {}

    def data_options(self) -> dict[str, Any]:
        """Keyword options for the builder of the method's training data (its ``data_kind``):
        e.g. ``{"snippet_length": 5}`` for a video method. Default: none."""
        return {}

    def lr_scales(self, model: nn.Module) -> Sequence[tuple[nn.Module, float]]:
        """Sub-modules trained at another learning rate: ``[(module, factor), ...]``, each at
        ``lr · factor`` (its own optimiser group, on the same schedule). Default: none."""
        return ()

    def frozen_modules(self, model: nn.Module) -> Sequence[nn.Module]:
        """Sub-modules of ``model`` that are not trained: the trainer sets ``requires_grad``
        False on their parameters, leaves them out of the optimizer and keeps them in eval mode
        (batch-norm statistics and dropout frozen too). Default: none."""
        return ()

    def predict_disparity(self, model: nn.Module, image: torch.Tensor, *, post_processing: bool = False) -> torch.Tensor:
        """``(B, 1, H, W)`` inverse depth of ``image`` ``(B, 3, H, W)`` in the method's own unit."""
        raise NotImplementedError(f"method {self.name!r} does not predict depth")

    def predict_depth(
        self,
        model: nn.Module,
        image: torch.Tensor,
        K: torch.Tensor,
        baseline: torch.Tensor | None = None,
        *,
        post_processing: bool = False,
        max_depth: float = 100.0,
    ) -> torch.Tensor:
        """``(B, 1, H, W)`` depth of ``image`` with intrinsics ``K (B, 3, 3)`` (and the stereo
        ``baseline (B,)`` in metres where the method needs it): metres if ``metric_depth``,
        else up to an unknown scale."""
        raise NotImplementedError(f"method {self.name!r} does not predict depth")


def method_config_dict(method: object) -> dict[str, Any] | None:
    """The method's own typed configuration (``method.config``, a dataclass) as a dict, kept in
    checkpoints so that a trained model can be rebuilt from its file alone."""
    cfg = getattr(method, "config", None)
    return asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else None


def has_validate(method: object) -> bool:
    """Whether ``method`` overrides :meth:`Method.validate` (has a validation)."""
    fn = getattr(type(method), "validate", None)
    return callable(fn) and fn is not Method.validate
