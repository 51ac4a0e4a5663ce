"""The method contract: what a chapter's method supplies to the :class:`~lesson_lib.training.Trainer`
and to the commands that use its trained model (``train``, ``evaluate``, ``predict``).

A method owns its model (one module, e.g. depth and pose networks together), its loss, its
options and its data; the trainer owns everything else. The course's methods on this contract
are registered in :mod:`lesson_lib.methods` (Monodepth, SfMLearner, TrianFlow, Monodepth2); a new
method is one module with a :class:`Method` subclass plus its registration. What a method declares:

- its **data**: ``data_kind`` (``"stereo"`` pairs or ``"video"`` snippets), the options of its
  datasets (:meth:`Method.data_options`) and how they are built (:meth:`Method.build_datasets`,
  by default from the synthetic world, :mod:`lesson_lib.training.datasets`);
- its **training**: :meth:`Method.build_model`, :meth:`Method.loss` (which receives a
  :class:`StepContext`: the step, a **per-step seeded generator**, the only source of randomness
  a loss should use, the device, and :meth:`StepContext.full_precision` to keep a part of the
  loss out of mixed precision), :meth:`Method.frozen_modules`, :meth:`Method.lr_scales`, and its
  ``stages`` when it trains in several (TrianFlow: flow, then depth);
- what its trained model **predicts** (:attr:`Method.predicts`, a subset of ``{"depth", "poses",
  "flow"}``, which may depend on the configuration: TrianFlow's flow stage predicts flow only),
  each through one predictor of one signature: :meth:`Method.predict_disparity` /
  :meth:`Method.predict_depth`, :meth:`Method.predict_poses` (with ``pose_frames``, the frames one
  prediction takes), :meth:`Method.predict_flow`. A predictor the model does not have raises
  ``NotImplementedError``.

:func:`lesson_lib.training.checkpoints.load_weights_into` loads part of a model from another
run's checkpoint or weights file (called from :meth:`Method.build_model`).
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

from ..keyed_random import KEY_LIMIT, KeyedRandom

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
        key: a 0-d int64 tensor on ``device``, the key of the step's counter-based random
            numbers (:meth:`random`); by default the generator's seed, so it too follows from
            ``(seed, step, rank)`` alone. A captured CUDA graph reads it from a tensor the
            trainer refills before every replay.
    """

    step: int
    generator: torch.Generator
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    key: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.key is None:
            self.key = torch.tensor(self.generator.initial_seed() % KEY_LIMIT, dtype=torch.int64, device=self.device)

    def random(self) -> KeyedRandom:
        """A :class:`~lesson_lib.keyed_random.KeyedRandom` stream on the step's :attr:`key`:
        random numbers computed by tensor operations alone, which ``torch.compile`` traces and a
        CUDA graph captures (a ``torch.Generator``'s draws are host calls). Each call starts the
        stream afresh: call it once per step and draw from what it returns."""
        return KeyedRandom(self.key)

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
    """What a chapter's method supplies to the :class:`~lesson_lib.training.Trainer` and to the
    commands that use its trained model.

    Subclass it:

    - ``name``: identifies the method in checkpoints, weights files and the registry
      (:mod:`lesson_lib.methods`); a checkpoint of another method is refused;
    - ``config_class`` and ``config``: the method's typed options (a dataclass, stored in every
      checkpoint so the model can be rebuilt from its file alone);
    - ``data_kind``, :meth:`data_options`, :meth:`build_datasets`: its training and validation data;
    - :meth:`build_model`: a new, freshly initialised model (called once, after seeding);
    - :meth:`loss`: the training loss of one batch and a few numbers to log;
    - :meth:`validate` (optional): metrics of one validation batch (e.g. depth errors);
    - :meth:`frozen_modules`, :meth:`lr_scales` (optional): sub-networks kept frozen, or trained
      at another learning rate;
    - ``stages`` (optional): the values of ``config.stage`` of a method trained in stages;
    - :attr:`predicts` and the predictors: :meth:`predict_disparity` / :meth:`predict_depth`,
      :meth:`predict_poses`, :meth:`predict_flow`;
    - ``find_unused_parameters`` (optional, default False): passed to DistributedDataParallel,
      for a model whose forward leaves some parameters out of the loss.
    """

    name: ClassVar[str] = "method"
    config_class: ClassVar[type | None] = None
    metric_depth: ClassVar[bool] = False
    """True when the method's depth is in metres (stereo training); False: up to scale."""
    data_kind: ClassVar[str] = "stereo"
    """The training data it needs: ``"stereo"`` (rectified pairs: ``left``, ``right``) or
    ``"video"`` (snippets: ``target``, ``sources``, ``K``); see :mod:`lesson_lib.training.datasets`."""
    stages: ClassVar[tuple[str, ...]] = ()
    """A method trained in stages: the values its ``config.stage`` takes, in training order
    (TrianFlow: ``("flow", "depth")``); empty for a method trained in one go."""

    config: Any = None

    def describe(self) -> str:
        """The method's name as reports print it (with its variant where it has several)."""
        return self.name

    # -- data ------------------------------------------------------------------------------------

    def data_options(self) -> dict[str, Any]:
        """Keyword options for the builder of the method's data
        (:func:`lesson_lib.training.datasets.synthetic_datasets`): e.g. ``{"snippet_length": 5}`` for a
        video method. Default: none."""
        return {}

    def build_datasets(self, data: Any, seed: int) -> tuple[Any, Any]:
        """``(train, val)`` datasets from the synthetic world's options ``data``
        (:class:`~lesson_lib.training.datasets.SyntheticData`), of the method's ``data_kind`` with its
        :meth:`data_options`; ``val`` is None without validation worlds. Override it for other data."""
        from .datasets import synthetic_datasets

        return synthetic_datasets(self.data_kind, data, seed, **self.data_options())

    # -- training --------------------------------------------------------------------------------

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

    def lr_scales(self, model: nn.Module) -> Sequence[tuple[nn.Module, float]]:
        """Sub-modules trained at another learning rate: ``[(module, factor), ...]``, each at
        ``lr · factor`` (its own optimiser group, on the same schedule). Default: none."""
        return ()

    def frozen_modules(self, model: nn.Module) -> Sequence[nn.Module]:
        """Sub-modules of ``model`` that are not trained: the trainer sets ``requires_grad``
        False on their parameters, leaves them out of the optimizer and keeps them in eval mode
        (batch-norm statistics and dropout frozen too). Default: none."""
        return ()

    @property
    def graph_blocker(self) -> str | None:
        """Why this configuration's training step cannot run as one graph (``torch.compile``
        without graph breaks, a captured CUDA graph), naming the option that fixes it; None when
        it can (the default: the step reads no value on the host)."""
        return None

    # -- what a trained model predicts -----------------------------------------------------------

    @property
    def predicts(self) -> frozenset[str]:
        """What a model of this configuration predicts: a subset of ``{"depth", "poses", "flow"}``
        (each has its predictor below; the others raise ``NotImplementedError``). Default: depth."""
        return frozenset({"depth"})

    @property
    def pose_frames(self) -> int | None:
        """Frames one :meth:`predict_poses` call takes (the target and its sources), or None
        where the method has no poses. Longer snippets are chained from predictions of this
        length (:func:`lesson_lib.evaluation.chained_poses`)."""
        return None

    def predict_disparity(self, model: nn.Module, image: torch.Tensor, *, post_processing: bool = False) -> torch.Tensor:
        """``(B, 1, H, W)`` inverse depth of ``image`` ``(B, 3, H, W)`` in the method's own unit."""
        raise NotImplementedError(f"method {self.name!r} does not predict depth")

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
        """``(B, 1, H, W)`` depth of ``image`` (with intrinsics ``K (B, 3, 3)`` and the stereo
        ``baseline (B,)`` in metres where the method needs them): metres if ``metric_depth``,
        else up to an unknown scale."""
        raise NotImplementedError(f"method {self.name!r} does not predict depth")

    def predict_poses(
        self, model: nn.Module, target: torch.Tensor, sources: torch.Tensor, K: torch.Tensor | None = None, *,
        seed: int = 0,
    ) -> torch.Tensor:
        """``T_t_to_s (B, S, 4, 4)`` for ``target (B, 3, H, W)`` and its ``sources
        (B, S, 3, H, W)`` in frame order without the target (``S = pose_frames - 1``):
        ``T_t_to_s[:, j]`` maps a point of the target camera's frame into source ``j``'s frame,
        translation in the depth's unit. ``K (B, 3, 3)``: the images' intrinsics (methods that
        compute poses from geometry need them); ``seed``: for methods that draw samples."""
        raise NotImplementedError(f"method {self.name!r} does not predict poses")

    def predict_flow(self, model: nn.Module, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        """Forward flow ``(B, 2, H, W)`` in pixels from ``image1`` to ``image2`` ``(B, 3, H, W)``."""
        raise NotImplementedError(f"method {self.name!r} does not predict flow")


def method_config_dict(method: object) -> dict[str, Any] | None:
    """The method's own typed configuration (``method.config``, a dataclass) as a dict, kept in
    checkpoints so that a trained model can be rebuilt from its file alone."""
    cfg = getattr(method, "config", None)
    return asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else None


def has_validate(method: object) -> bool:
    """Whether ``method`` overrides :meth:`Method.validate` (has a validation)."""
    fn = getattr(type(method), "validate", None)
    return callable(fn) and fn is not Method.validate
