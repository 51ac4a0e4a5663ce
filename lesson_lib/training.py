"""The one training loop of the course (chapters 06 Monodepth, 07 SfMLearner, 09 TrianFlow).

A *method* supplies the model and the loss; the :class:`Trainer` does the rest, the same way
for every chapter:

- data: a fresh ``DataLoader`` per epoch whose order depends only on ``(seed, epoch)`` (a
  seeded :class:`~torch.utils.data.DistributedSampler`, also in a single process), so a run
  resumed in the middle of an epoch skips the batches already done and sees the same batches
  as an uninterrupted run;
- optimisation: Adam (AdamW with ``weight_decay > 0``), step decay of the learning rate at
  fractions of the run, optional gradient clipping; on CUDA mixed precision (bf16, or fp16 with
  a ``GradScaler``) and channels-last memory; on the CPU always float32;
- bookkeeping in ``out_dir``: ``log.csv`` (step, epoch, lr, loss, the method's log values,
  time), ``val.csv`` (the method's validation metrics averaged over the validation set),
  TensorBoard events when ``torch.utils.tensorboard`` imports, and checkpoints written
  atomically (``latest.pt``, optionally ``step_N.pt``) that hold everything needed to resume
  bit for bit (model, optimizer, scheduler, scaler, step, configuration, random states);
- several processes under ``torchrun``: DistributedDataParallel, one shard of every epoch per
  process, only rank 0 logs, shows progress and saves.

Configuration is typed: :class:`TrainConfig` (and a method's own dataclass) become
command-line options with :func:`config_to_argparse` / :func:`config_from_args`.

A minimal method::

    class Regression(Method):
        name = "regression"

        def build_model(self):
            return nn.Linear(4, 1)

        def loss(self, model, batch):
            err = (model(batch["x"]) - batch["y"]).square().mean()
            return err, {"mse": err.item()}

    Trainer(Regression(), TrainConfig(epochs=5, out_dir="runs/reg"), dataset).fit()

``loss`` must call the model through ``model(...)`` (its ``forward``): under torchrun ``model``
is the DistributedDataParallel wrapper, whose forward arms the gradient averaging. A method with
several networks (depth and pose) puts them in one module whose forward returns what the loss
needs. ``validate`` receives the unwrapped model in eval mode, without gradients.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import math
import os
import random
import sys
import time
import types
import typing
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .env import pick_device, seed_everything

__all__ = [
    "CHECKPOINT_KEYS",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointNotFoundError",
    "EpochSampler",
    "Method",
    "TrainConfig",
    "Trainer",
    "config_from_args",
    "config_to_argparse",
    "config_to_argv",
    "distributed_env",
    "load_checkpoint",
    "move_to",
    "read_log",
    "save_checkpoint",
    "train_worker",
]

CHECKPOINT_VERSION = 1
"""Format of the checkpoints written by :class:`Trainer`; raised when their layout changes."""

CHECKPOINT_KEYS = (
    "format_version",
    "method",
    "step",
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "config",
    "rng",
)
"""The keys every training checkpoint holds (:func:`load_checkpoint` checks them)."""

_RESERVED_LOG_KEYS = ("step", "epoch", "lr", "loss", "time")


# --------------------------------------------------------------------------------------------
# The method


class Method(ABC):
    """What a chapter's method supplies to the :class:`Trainer`.

    Subclass it (or write any object with the same attributes):

    - ``name``: identifies the method in checkpoints (a checkpoint of another method is refused);
    - :meth:`build_model`: a new, freshly initialised model (called once, after seeding);
    - :meth:`loss`: the training loss of one batch and a few numbers to log;
    - :meth:`validate` (optional): metrics of one validation batch (e.g. depth errors);
    - ``find_unused_parameters`` (optional, default False): passed to DistributedDataParallel,
      for a model whose forward leaves some parameters out of the loss.
    """

    name: str = "method"

    @abstractmethod
    def build_model(self) -> nn.Module:
        """Return the model to train (on the CPU; the trainer moves it)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Return ``(loss, logs)`` for one training batch (already on the device).

        ``loss`` is a scalar tensor to minimise; ``logs`` maps names to numbers (floats or
        scalar tensors) written to ``log.csv`` every ``log_every`` steps. Call the model as
        ``model(...)`` so that distributed training averages the gradients.
        """

    def validate(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """Metrics of one validation batch, each a mean over the batch's samples.

        The trainer averages them over the validation set, weighting each batch by its size.
        Not overriding it means the method has no validation.
        """
        return {}


def _method_config(method: object) -> dict[str, Any] | None:
    """The method's own typed configuration (``method.config``, a dataclass) as a dict, kept in
    checkpoints so that a trained model can be rebuilt from its file alone."""
    cfg = getattr(method, "config", None)
    return asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else None


def _has_validate(method: object) -> bool:
    fn = getattr(type(method), "validate", None)
    return callable(fn) and fn is not Method.validate


# --------------------------------------------------------------------------------------------
# Configuration and the command line


def _field(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its command-line help (and e.g. ``choices``) in the metadata."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class TrainConfig:
    """Everything the training loop needs besides the method and the data.

    Each field is a command-line option (``--batch-size 8``, ``--amp/--no-amp``, ...) through
    :func:`config_to_argparse`. The length of the run is ``steps`` optimizer steps, or
    ``epochs`` passes over the training set when ``steps`` is 0; ``milestones`` are fractions
    of that length, so the schedule scales with it.
    """

    epochs: int = _field(20, "passes over the training set (used when --steps is 0)")
    steps: int = _field(0, "optimizer steps of the whole run; 0: epochs x batches per epoch")
    batch_size: int = _field(8, "samples per step (per process under torchrun)")
    lr: float = _field(1e-4, "learning rate of Adam")
    weight_decay: float = _field(0.0, "decoupled weight decay (AdamW); 0: plain Adam")
    milestones: tuple[float, ...] = _field(
        (0.75,), "step decay: fractions of the run after which the learning rate is multiplied by gamma"
    )
    gamma: float = _field(0.1, "factor of the learning rate at each milestone")
    grad_clip: float = _field(0.0, "clip the gradient norm to this value; 0: no clipping")
    seed: int = _field(0, "seed of the initialisation, the data order and all random draws")
    device: str = _field("auto", "where to train; auto: CUDA if present", choices=("auto", "cpu", "cuda"))
    amp: bool = _field(True, "mixed precision on CUDA (ignored on the CPU, which trains in float32)")
    amp_dtype: str = _field(
        "auto", "mixed-precision type; auto: bf16 where supported, else fp16", choices=("auto", "bf16", "fp16")
    )
    channels_last: bool = _field(True, "channels-last memory format for the model and 4-D inputs (CUDA only)")
    deterministic: bool = _field(False, "deterministic algorithms (slower on CUDA; the CPU is always deterministic)")
    num_workers: int = _field(0, "data-loading worker processes")
    log_every: int = _field(10, "write a row of log.csv every N steps (and at the last step)")
    validate_every: int = _field(0, "validate every N steps and at the end; 0: only at the end")
    checkpoint_every: int = _field(1000, "write latest.pt every N steps (and at the end); 0: only at the end")
    keep_checkpoints: bool = _field(False, "also keep step_N.pt at every checkpoint")
    out_dir: str = _field("runs/run", "folder of the logs and checkpoints")
    resume: bool = _field(False, "continue from OUT_DIR/latest.pt if it exists")
    overwrite: bool = _field(False, "start afresh even if OUT_DIR already holds a run")
    stop_at_step: int = _field(
        0, "stop with a checkpoint at this step without changing the schedule (resume later); 0: run to the end"
    )
    progress: bool = _field(True, "show a progress bar (terminal or notebook; rank 0 only)")
    tensorboard: bool = _field(True, "also write TensorBoard events to OUT_DIR if TensorBoard is installed")

    def __post_init__(self) -> None:
        self.milestones = tuple(float(m) for m in self.milestones)
        for name in ("epochs", "steps", "num_workers", "validate_every", "checkpoint_every", "stop_at_step"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.steps == 0 and self.epochs == 0:
            raise ValueError("TrainConfig: one of epochs and steps must be > 0")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be finite and > 0, got {self.lr}")
        if not self.gamma > 0:
            raise ValueError(f"TrainConfig.gamma must be > 0, got {self.gamma}")
        for name in ("weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"TrainConfig.milestones must be increasing fractions in (0, 1), got {self.milestones}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise ValueError(f"TrainConfig.{f.name} must be one of {choices}, got {getattr(self, f.name)!r}")


# Fields whose change between an interrupted run and its resumption changes the trajectory.
_TRAJECTORY_FIELDS = ("epochs", "steps", "batch_size", "lr", "weight_decay", "milestones", "gamma", "grad_clip", "seed")


class _BoolFlag(argparse.Action):
    """``--name`` sets True, ``--no-name`` sets False."""

    def __init__(self, option_strings, dest, default=None, required=False, help=None):
        name = option_strings[0][2:]
        super().__init__([f"--{name}", f"--no-{name}"], dest, nargs=0, default=default, required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no-"))

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _none_or(kind: type) -> typing.Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _cli_spec(name: str, tp: Any) -> dict[str, Any]:
    """argparse keyword arguments (type, nargs, action, choices) for a field of type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    optional = False
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            optional, tp = True, rest[0]
            origin, args = typing.get_origin(tp), typing.get_args(tp)
    scalar = (int, float, str)
    if tp is bool and not optional:
        return {"action": _BoolFlag}
    if tp in scalar:
        return {"type": _none_or(tp) if optional else tp}
    if origin is typing.Literal and len({type(a) for a in args}) == 1 and type(args[0]) in scalar:
        return {"type": type(args[0]), "choices": args}
    if origin is tuple and not optional:
        if len(args) == 2 and args[1] is Ellipsis and args[0] in scalar:
            return {"type": args[0], "nargs": "*"}
        if args and len(set(args)) == 1 and args[0] in scalar:
            return {"type": args[0], "nargs": len(args)}
    raise TypeError(
        f"field {name!r} of type {tp!r} cannot be a command-line option (supported: int, float, str, "
        "bool, X | None, Literal, tuple[X, ...], tuple[X, X]); add metadata={'cli': False} to skip it"
    )


def _cli_fields(cls: type) -> Iterator[tuple[dataclasses.Field, Any]]:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.init and f.metadata.get("cli", True):
            yield f, hints[f.name]


def _option_name(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def _dest(prefix: str, name: str) -> str:
    return (prefix + name).replace("-", "_")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "(none)"
    return str(value)


def config_to_argparse(
    parser: argparse.ArgumentParser, cls: type, prefix: str = ""
) -> argparse.ArgumentParser:
    """Add one command-line option per field of the dataclass ``cls`` to ``parser``.

    ``lr: float`` becomes ``--{prefix}lr`` (underscores as dashes), a ``bool`` becomes the pair
    ``--flag`` / ``--no-flag``, ``tuple[float, ...]`` takes any number of values and
    ``tuple[int, int]`` exactly two, ``X | None`` also accepts ``none``. The help text is the
    field's ``metadata["help"]`` with its default; ``metadata["choices"]`` restricts the
    values; ``metadata={"cli": False}`` leaves a field out. Fields without a default become
    required options. Options are grouped under the class name; returns ``parser``.

    Raises:
        TypeError: ``cls`` is not a dataclass, or a field has a type no option can express.
    """
    specs = [(f, _cli_spec(f.name, tp)) for f, tp in _cli_fields(cls)]  # raises before adding any
    group = parser.add_argument_group(f"{cls.__name__} options")
    for f, kwargs in specs:
        if "choices" in f.metadata:
            kwargs["choices"] = tuple(f.metadata["choices"])
        default = _default(f)
        help_text = str(f.metadata.get("help", ""))
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
            help_text = f"{help_text} (default: {_show(default)})".strip()
        group.add_argument(
            _option_name(prefix, f.name), dest=_dest(prefix, f.name), help=help_text.replace("%", "%%"), **kwargs
        )
    return parser


def config_from_args(cls: type, namespace: argparse.Namespace, prefix: str = "") -> Any:
    """Build a ``cls`` instance from the options :func:`config_to_argparse` added.

    Fields left out of the command line (``metadata={"cli": False}``) keep their defaults;
    lists become tuples. Raises ``ValueError`` if ``namespace`` lacks one of the options (the
    parser was built with another class or prefix), and whatever ``cls`` raises on bad values.
    """
    values = {}
    for f, _ in _cli_fields(cls):
        dest = _dest(prefix, f.name)
        if not hasattr(namespace, dest):
            option = _option_name(prefix, f.name)
            raise ValueError(f"the parsed arguments hold no {option} (for {cls.__name__}.{f.name})")
        value = getattr(namespace, dest)
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def config_to_argv(config: Any, prefix: str = "", *, only_changed: bool = False) -> list[str]:
    """The command-line arguments that :func:`config_from_args` turns back into ``config``.

    With ``only_changed`` the fields equal to their defaults are left out. Useful to launch a
    configured run in another process (``torchrun ... script.py *config_to_argv(cfg)``).
    """
    argv: list[str] = []
    for f, _ in _cli_fields(type(config)):
        value = getattr(config, f.name)
        if only_changed and value == _default(f):
            continue
        option = _option_name(prefix, f.name)
        if isinstance(value, bool):
            argv.append(option if value else "--no-" + option[2:])
        elif isinstance(value, (tuple, list)):
            argv += [option, *map(str, value)]
        else:
            argv.append(f"{option}={'none' if value is None else value}")
    return argv


# --------------------------------------------------------------------------------------------
# Checkpoints


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, incomplete or of another method or model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint file at the given path (both a ``CheckpointError`` and a ``FileNotFoundError``)."""


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not possible on every platform (Windows)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to ``path`` atomically; returns the path.

    The bytes go to a temporary file in the same folder, which is flushed, ``fsync``-ed and
    then renamed over ``path`` (``os.replace``): a crash or a full disk while writing leaves
    the previous file at ``path`` intact and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def _shape_problem(model: nn.Module, saved: Mapping[str, Any]) -> str | None:
    """A description of the first difference between ``model``'s and the saved state, or None."""
    own = model.state_dict()
    for name, tensor in own.items():
        if name in saved:
            other = saved[name]
            if not isinstance(other, torch.Tensor):
                return f"entry {name!r} is a {type(other).__name__}, not a tensor"
            if tuple(other.shape) != tuple(tensor.shape):
                return (
                    f"parameter {name!r} has shape {tuple(other.shape)} in the checkpoint "
                    f"but {tuple(tensor.shape)} in the model"
                )
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing:
        return f"the checkpoint lacks the model's parameter {missing[0]!r} ({len(missing)} missing)"
    if unexpected:
        return f"the checkpoint has parameter {unexpected[0]!r} the model lacks ({len(unexpected)} unexpected)"
    return None


def _first_error_line(exc: BaseException) -> str:
    """The informative line of a ``torch.load`` error (weights_only errors start with advice)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else "")
    return line[:300]


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    method: str | Method | None = None,
    required: Iterable[str] = CHECKPOINT_KEYS,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`save_checkpoint`; returns its state.

    Loads with ``torch.load(..., weights_only=True)`` (tensors and plain Python values only).
    Checks, in order: the file exists and is a readable torch checkpoint holding a dict; its
    ``format_version`` is :data:`CHECKPOINT_VERSION`; it has all ``required`` keys; its method
    name is ``method``'s (when given); its ``model`` entry matches ``model``'s parameter names
    and shapes (when given), and then loads those weights into ``model``.

    Raises:
        CheckpointNotFoundError: no file at ``path`` (also a ``FileNotFoundError``).
        CheckpointError: any other problem; the message names ``path`` (and the first
            mismatching parameter).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"no checkpoint file at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, a pickle of forbidden objects, ...
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (corrupt, truncated, or holding objects "
            f"weights_only loading refuses): {type(exc).__name__}: {_first_error_line(exc)}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    version = state.get("format_version")
    if "format_version" in state and version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this lesson_lib reads version {CHECKPOINT_VERSION}"
        )
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a complete training checkpoint: missing keys {missing}")
    if method is not None:
        want = method if isinstance(method, str) else method.name
        if state.get("method") != want:
            raise CheckpointError(f"{path} is a checkpoint of method {state.get('method')!r}, not of {want!r}")
    if model is not None:
        saved = state.get("model")
        if not isinstance(saved, Mapping):
            raise CheckpointError(f"{path} has no model state dict (entry 'model' is {type(saved).__name__})")
        if saved and all(k.startswith("module.") for k in saved):  # saved from a DDP wrapper
            saved = {k[len("module.") :]: v for k, v in saved.items()}
        problem = _shape_problem(model, saved)
        if problem is not None:
            raise CheckpointError(f"{path} does not fit the model: {problem}")
        model.load_state_dict(saved)
    return state


# --------------------------------------------------------------------------------------------
# Random states


def _rng_state() -> dict[str, Any]:
    """Python's, NumPy's and PyTorch's random states, as tensors and plain values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    npst = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npst["bit_generator"],
            "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
            "has_gauss": npst["has_gauss"],
            "gauss": npst["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _seed_worker(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a data-loading worker from the seed torch gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# --------------------------------------------------------------------------------------------
# Data


class EpochSampler(DistributedSampler):
    """This process's share of a shuffled epoch, starting at sample ``start`` of that share.

    The order of epoch ``e`` depends only on ``(seed, e)`` (a permutation drawn from a
    generator seeded with ``seed + e``, set with :meth:`set_epoch`); process ``rank`` of
    ``num_replicas`` takes every ``num_replicas``-th index (the set is padded by repetition to
    a multiple of ``num_replicas``). ``start`` skips the samples already used when a run is
    resumed in the middle of an epoch, without loading them.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        *,
        seed: int = 0,
        shuffle: bool = True,
        start: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start must be in [0, {self.num_samples}], got {start}")
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


class _ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order (validation: every sample exactly once)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = range(rank, n, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def move_to(batch: Any, device: torch.device | str, *, channels_last: bool = False) -> Any:
    """``batch`` with every tensor moved to ``device`` (``non_blocking``), recursing into
    dicts, lists, tuples and named tuples; other values are returned as they are. With
    ``channels_last``, 4-D tensors get the channels-last memory format."""
    if isinstance(batch, torch.Tensor):
        if channels_last and batch.ndim == 4:
            return batch.to(device, non_blocking=True, memory_format=torch.channels_last)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device, channels_last=channels_last) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to(v, device, channels_last=channels_last) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device, channels_last=channels_last) for v in batch)
    return batch


def _batch_len(batch: Any) -> int:
    """Number of samples in a collated batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for v in values:
        n = _batch_len(v)
        if n:
            return n
    return 0


# --------------------------------------------------------------------------------------------
# Logs


class _CsvLog:
    """A CSV file with the columns ``first``, then the keys seen so far, then ``last``; a key
    that appears later rewrites the file with the wider header."""

    def __init__(self, path: Path, first: Sequence[str], last: Sequence[str] = ("time",)) -> None:
        self.path, self.first, self.last = path, list(first), list(last)
        self.columns = self.first + self.last
        if path.is_file():
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                self.columns = header

    def write(self, row: Mapping[str, Any]) -> None:
        new = [k for k in row if k not in self.columns]
        if new:
            rows = _read_rows(self.path)
            self.columns = self.columns[: len(self.columns) - len(self.last)] + new + self.last
            self._rewrite(rows)
        exists = self.path.is_file() and self.path.stat().st_size > 0
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            if not exists:
                writer.writeheader()
            writer.writerow(dict(row))

    def truncate_after(self, step: int) -> None:
        """Drop the rows after ``step`` (written after the checkpoint a run resumes from)."""
        if self.path.is_file():
            self._rewrite([r for r in _read_rows(self.path) if int(float(r["step"])) <= step])

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_log(path: str | os.PathLike) -> dict[str, list[float]]:
    """The columns of a ``log.csv`` or ``val.csv`` as lists of floats (NaN for empty cells),
    ready to plot: ``log = read_log("runs/x/log.csv"); plt.plot(log["step"], log["loss"])``."""
    rows = _read_rows(Path(path))
    if not rows:
        return {}
    return {k: [float(r[k]) if r.get(k) not in (None, "") else math.nan for r in rows] for k in rows[0]}


def _tensorboard_writer(out_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # TensorBoard is optional
        return None
    return SummaryWriter(log_dir=str(out_dir))


# --------------------------------------------------------------------------------------------
# Distributed set-up


def distributed_env() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment; ``(0, 0, 1)`` without."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, local, world


def _resolve_device(name: str, local_rank: int, distributed: bool) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TrainConfig.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    device = pick_device(None if name == "auto" else name)
    if device.type == "cuda":
        if distributed:
            device = torch.device("cuda", local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


# --------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """Train ``method``'s model on ``train_dataset`` as ``config`` says; see the module doc.

    Construction seeds everything, builds the model, optimizer (Adam/AdamW), learning-rate
    schedule (``MultiStepLR`` at ``milestones`` x total steps) and ``GradScaler``, and, under
    torchrun (``WORLD_SIZE > 1``), joins the process group (NCCL on CUDA, Gloo on the CPU) and
    wraps the model in DistributedDataParallel. :meth:`fit` then trains (resuming from
    ``out_dir/latest.pt`` with ``config.resume``) and ends the process group it joined.

    Attributes:
        model: the trained module itself (unwrapped), on ``device``.
        train_model: what ``method.loss`` receives: ``model`` or its DDP wrapper.
        step: optimizer steps done; ``total_steps``, ``steps_per_epoch``: the run's length.
        rank, world_size, is_main: the process's place (``is_main``: rank 0, which writes).
    """

    def __init__(
        self, method: Method, config: TrainConfig, train_dataset: Dataset, val_dataset: Dataset | None = None
    ) -> None:
        for attr in ("name", "build_model", "loss"):
            if not hasattr(method, attr):
                raise TypeError(f"method {method!r} lacks {attr!r} (see lesson_lib.training.Method)")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.method, self.config = method, config
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.out_dir = Path(config.out_dir)

        self.rank, self.local_rank, self.world_size = distributed_env()
        self.distributed = self.world_size > 1
        self.is_main = self.rank == 0
        self.device = _resolve_device(config.device, self.local_rank, self.distributed)
        self._owns_group = False
        if self.distributed and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            self._owns_group = True
        if self.distributed:
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
            self.is_main = self.rank == 0

        cuda = self.device.type == "cuda"
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif cuda:
            torch.backends.cudnn.benchmark = True
        self.amp_dtype: torch.dtype | None = None
        if cuda and config.amp:
            bf16 = config.amp_dtype == "bf16" or (config.amp_dtype == "auto" and torch.cuda.is_bf16_supported())
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.channels_last = cuda and config.channels_last

        n = len(train_dataset)
        self.steps_per_epoch = math.ceil(n / self.world_size) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"train_dataset has {n} samples: too few for one batch of {config.batch_size} "
                f"per process ({self.world_size} processes)"
            )
        self.total_steps = config.steps or config.epochs * self.steps_per_epoch
        if val_dataset is not None and not _has_validate(method):
            warnings.warn(f"method {method.name!r} has no validate(): val_dataset is ignored", stacklevel=2)

        seed_everything(config.seed)  # the same initial weights in every process
        model = method.build_model()
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"{type(method).__name__}.build_model() must return an nn.Module, got {type(model).__name__}"
            )
        memory = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory)
        seed_everything(config.seed + self.rank)  # dropout and augmentation differ between processes
        if self.distributed:
            ids = [self.device.index] if cuda else None
            unused = bool(getattr(method, "find_unused_parameters", False))
            self.train_model: nn.Module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=unused
            )
        else:
            self.train_model = self.model

        params = [p for p in self.model.parameters() if p.requires_grad]
        if config.weight_decay > 0:
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(
                params, lr=config.lr, weight_decay=config.weight_decay
            )
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr)
        milestones = sorted({max(1, round(m * self.total_steps)) for m in config.milestones})
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, gamma=config.gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self.step = 0
        self._elapsed = 0.0  # seconds of training before this fit() (resumed runs)
        self._t0 = time.perf_counter()
        self._snapshot: tuple[int, dict[str, Any]] | None = None  # (step, random states) at a step's start
        self._updating = False
        self._log: _CsvLog | None = None
        self._val_log: _CsvLog | None = None
        self._tb: Any = None
        self._bar: Any = None

    # -- public helpers ----------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds spent training, over all resumptions of the run."""
        return self._elapsed + (time.perf_counter() - self._t0)

    def checkpoint_state(self, rng: Any = None) -> dict[str, Any]:
        """Everything :meth:`fit` needs to continue from the current step (see CHECKPOINT_KEYS).

        ``rng``: the random states of every process (a list); by default this process's now.
        """
        return {
            "format_version": CHECKPOINT_VERSION,
            "method": self.method.name,
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "config": asdict(self.config),
            "rng": rng if rng is not None else [_rng_state()],
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.world_size,
            "elapsed": self.elapsed,
            "torch_version": str(torch.__version__),
            "method_config": _method_config(self.method),
        }

    def save(self, rng: dict[str, Any] | None = None) -> None:
        """Write ``out_dir/latest.pt`` (and ``step_N.pt`` with ``keep_checkpoints``).

        Every process must call it (it gathers their random states); only rank 0 writes,
        between two barriers.
        """
        mine = rng if rng is not None else _rng_state()
        states = [mine]
        if self.distributed:
            states = [None] * self.world_size
            dist.all_gather_object(states, mine)
        if self.is_main:
            state = self.checkpoint_state(states)
            save_checkpoint(self.out_dir / "latest.pt", state)
            if self.config.keep_checkpoints:
                save_checkpoint(self.out_dir / f"step_{self.step}.pt", state)
        if self.distributed:
            dist.barrier()

    def validate(self) -> dict[str, float]:
        """The method's validation metrics averaged over ``val_dataset`` (every process
        computes a shard; the averages are over all samples). Float32, no gradients."""
        if self.val_dataset is None or not _has_validate(self.method):
            return {}
        loader = DataLoader(
            self.val_dataset,
            batch_size=self.config.batch_size,
            sampler=_ShardSampler(len(self.val_dataset), self.rank, self.world_size),
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.config.seed),
            worker_init_fn=_seed_worker,
        )
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    n = _batch_len(batch) or 1
                    batch = move_to(batch, self.device, channels_last=self.channels_last)
                    for k, v in self.method.validate(self.model, batch).items():
                        sums[k] = sums.get(k, 0.0) + float(v) * n
                        counts[k] = counts.get(k, 0) + n
        finally:
            self.model.train(was_training)
        if self.distributed:
            parts: list[Any] = [None] * self.world_size
            dist.all_gather_object(parts, (sums, counts))
            sums, counts = {}, {}
            for s, c in parts:
                for k in s:
                    sums[k] = sums.get(k, 0.0) + s[k]
                    counts[k] = counts.get(k, 0) + c[k]
        return {k: sums[k] / counts[k] for k in sums}

    # -- fit -----------------------------------------------------------------------------------

    def fit(self) -> nn.Module:
        """Train to ``total_steps`` (or ``stop_at_step``); returns the (unwrapped) model.

        With ``config.resume`` it continues from ``out_dir/latest.pt`` if that exists: weights,
        optimizer, schedule, scaler, random states and the position in the data, so the rest of
        the run is the one an uninterrupted run would have had; the rows of ``log.csv`` and
        ``val.csv`` written after that checkpoint are dropped. Without ``resume`` (or
        ``overwrite``) an ``out_dir`` that already holds a checkpoint is refused. On Ctrl-C
        (KeyboardInterrupt, single process) the state of the last completed step is saved.
        """
        try:
            self._start()
            self._loop()
        except KeyboardInterrupt:
            self._save_on_interrupt()
            raise
        finally:
            self._close()
        return self.model

    def _start(self) -> None:
        cfg, latest = self.config, self.out_dir / "latest.pt"
        if latest.is_file() and not (cfg.resume or cfg.overwrite):
            raise FileExistsError(
                f"{self.out_dir} already holds a run ({latest}): set resume=True (--resume) to continue it, "
                "overwrite=True (--overwrite) to start afresh, or choose another out_dir"
            )
        if self.distributed:
            dist.barrier()  # every process has looked before rank 0 writes anything
        resumed = cfg.resume and latest.is_file()
        if resumed:
            self._restore(latest)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            log_path, val_path = self.out_dir / "log.csv", self.out_dir / "val.csv"
            if not resumed:  # a fresh run (or overwrite): nothing of an earlier run may remain
                for p in [self.out_dir / "latest.pt", log_path, val_path, *self.out_dir.glob("step_*.pt")]:
                    p.unlink(missing_ok=True)
            self._log = _CsvLog(log_path, ("step", "epoch", "lr", "loss"))
            self._val_log = _CsvLog(val_path, ("step", "epoch"))
            if resumed:
                self._log.truncate_after(self.step)
                self._val_log.truncate_after(self.step)
            if cfg.tensorboard:
                self._tb = _tensorboard_writer(self.out_dir)
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.total_steps,
                initial=self.step,
                desc=str(self.method.name),
                unit="step",
                dynamic_ncols=True,
                disable=None if cfg.progress else True,  # None: off when stderr is not a terminal
            )
        if self.distributed:
            dist.barrier()
        self._t0 = time.perf_counter()

    def _restore(self, latest: Path) -> None:
        state = load_checkpoint(latest, self.model, method=self.method.name, map_location="cpu")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self._elapsed = float(state.get("elapsed", 0.0))
        rng = state["rng"]
        if isinstance(rng, list) and len(rng) == self.world_size:
            _set_rng_state(rng[self.rank])
        else:
            warnings.warn(
                f"{latest}: saved by {len(rng)} processes, resumed by {self.world_size}: "
                "the random states are not restored",
                stacklevel=3,
            )
        changed = [k for k in _TRAJECTORY_FIELDS if state["config"].get(k) != getattr(self.config, k)]
        if state.get("steps_per_epoch", self.steps_per_epoch) != self.steps_per_epoch:
            changed.append("steps_per_epoch")
        if changed and self.is_main:
            warnings.warn(
                f"resuming {latest} with changed settings {changed}: the run will differ from an uninterrupted one",
                stacklevel=3,
            )
        if self.is_main:
            self._say(f"resumed {latest} at step {self.step} of {self.total_steps}")

    def _loop(self) -> None:
        cfg = self.config
        stop = min(self.total_steps, cfg.stop_at_step) if cfg.stop_at_step else self.total_steps
        self.train_model.train()
        while self.step < stop:
            epoch, first = divmod(self.step, self.steps_per_epoch)
            batches, begun = iter(self._train_loader(epoch, first)), self.step
            while self.step < stop:
                if not self.distributed:  # the dataset may draw random numbers: snapshot first
                    self._snapshot = (self.step, _rng_state())
                batch = next(batches, None)
                if batch is None:
                    if self.step == begun:
                        raise RuntimeError(f"epoch {epoch} gave no batch: did the training set shrink?")
                    break
                loss, logs, lr = self._train_step(batch)
                self._after_step(epoch, loss, logs, lr, stop)

    def _train_loader(self, epoch: int, first_batch: int) -> DataLoader:
        cfg = self.config
        sampler = EpochSampler(
            self.train_dataset, self.world_size, self.rank, seed=cfg.seed, start=first_batch * cfg.batch_size
        )
        sampler.set_epoch(epoch)
        set_epoch = getattr(self.train_dataset, "set_epoch", None)
        if callable(set_epoch):  # augmentation that depends on the epoch (StereoDataset, VideoDataset)
            set_epoch(epoch)
        return DataLoader(
            self.train_dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_seed_worker,
            # seeds the workers' generators per (seed, epoch) and leaves the global generator alone
            generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch),
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _train_step(self, batch: Any) -> tuple[torch.Tensor, Mapping[str, Any], float]:
        batch = move_to(batch, self.device, channels_last=self.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.method.loss(self.train_model, batch)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
            raise TypeError(
                f"{type(self.method).__name__}.loss must return (loss, logs dict), got {type(out).__name__}"
            )
        loss, logs = out
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad):
            raise ValueError(
                f"{type(self.method).__name__}.loss must return a one-element tensor that requires grad as the loss"
            )
        self.scaler.scale(loss.reshape(())).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self._updating = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        self._updating = False
        return loss.detach(), logs, lr

    def _after_step(self, epoch: int, loss: torch.Tensor, logs: Mapping[str, Any], lr: float, stop: int) -> None:
        cfg, step = self.config, self.step
        if self._bar is not None:
            self._bar.update(1)
        if step % cfg.log_every == 0 or step == self.total_steps:
            self._write_log(epoch, loss, logs, lr)
        if self.val_dataset is not None and _has_validate(self.method):
            if (cfg.validate_every and step % cfg.validate_every == 0) or step == self.total_steps:
                metrics = self.validate()
                if self.is_main and metrics:
                    self._val_log.write({"step": step, "epoch": epoch, **metrics, "time": round(self.elapsed, 3)})
                    if self._tb is not None:
                        for k, v in metrics.items():
                            self._tb.add_scalar(f"val/{k}", v, step)
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == stop:
            self.save()

    def _write_log(self, epoch: int, loss: torch.Tensor, logs: Mapping[str, Any], lr: float) -> None:
        bad = [k for k in logs if k in _RESERVED_LOG_KEYS]
        if bad:
            raise ValueError(f"{type(self.method).__name__}.loss logs use reserved names {bad}")
        keys = sorted(logs)
        if self.distributed:  # average the loss and the log values over the processes
            parts = [torch.as_tensor(logs[k], dtype=torch.float32, device=self.device).reshape(()) for k in keys]
            t = torch.stack([loss.float().reshape(()), *parts])
            dist.all_reduce(t)
            values = (t / self.world_size).tolist()
            loss_value, logged = values[0], dict(zip(keys, values[1:]))
        else:
            loss_value, logged = float(loss), {k: float(logs[k]) for k in keys}
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"{self.method.name}: the loss is {loss_value} at step {self.step}; logs {logged}")
        if not self.is_main:
            return
        row = {"step": self.step, "epoch": epoch, "lr": lr, "loss": loss_value}
        self._log.write({**row, **{k: logged[k] for k in logs}, "time": round(self.elapsed, 3)})
        if self._tb is not None:
            self._tb.add_scalar("train/loss", loss_value, self.step)
            self._tb.add_scalar("train/lr", lr, self.step)
            for k, v in logged.items():
                self._tb.add_scalar(f"train/{k}", v, self.step)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss_value:.4g}", lr=f"{lr:.3g}", refresh=False)

    def _save_on_interrupt(self) -> None:
        """Ctrl-C: keep the last consistent state (single process only)."""
        if self.distributed or not self.is_main or self._log is None:
            return
        if self._updating:
            self._say("interrupted while updating the weights: nothing saved; resume from the last checkpoint")
            return
        if self._snapshot is not None and self._snapshot[0] == self.step:
            rng = self._snapshot[1]  # interrupted within the step: the state of its start
        else:
            rng = _rng_state()  # interrupted after the update (logging, validation, saving)
        self.save(rng)
        self._say(f"interrupted: saved step {self.step} to {self.out_dir / 'latest.pt'} (resume=True continues)")

    def _say(self, message: str) -> None:
        if self.is_main:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stderr)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


def train_worker(
    method: Method, config: TrainConfig, train_dataset: Dataset, val_dataset: Dataset | None = None
) -> Trainer:
    """Train in this process, alone or as one process of a ``torchrun`` launch; returns the trainer.

    A training script calls it the same way in both cases::

        torchrun --nproc_per_node=2 train.py --batch-size 8 ...   # or: python train.py ...

    Under torchrun (``WORLD_SIZE > 1``) it joins the process group, trains with
    DistributedDataParallel (``batch_size`` per process) and leaves the group at the end.
    """
    trainer = Trainer(method, config, train_dataset, val_dataset)
    trainer.fit()
    return trainer
