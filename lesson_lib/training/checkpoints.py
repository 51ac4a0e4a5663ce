"""Checkpoints and weights files: written atomically, read with clear errors.

- :func:`save_checkpoint` / :func:`load_checkpoint`: the trainer's full state (model, optimizer,
  schedule, random states, configuration), enough to resume a run bit for bit;
- :func:`export_weights`: a small file with the model alone (float16 by default) and the
  method's configuration, which :func:`lesson_lib.methods.load_model` rebuilds a model from;
- :func:`load_weights_into`: part of a model (e.g. a flow network trained in an earlier stage)
  from another run's checkpoint or weights file.

Every error names the file and what was expected (:class:`CheckpointError`).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CHECKPOINT_KEYS",
    "CHECKPOINT_VERSION",
    "WEIGHTS_FORMAT",
    "CheckpointError",
    "CheckpointNotFoundError",
    "save_checkpoint",
    "load_checkpoint",
    "export_weights",
    "load_weights_into",
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

RESERVED_LOG_KEYS = ("step", "epoch", "lr", "loss", "time")

WEIGHTS_FORMAT = 1
"""Format of the small weights files (:func:`export_weights`)."""


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
    method: str | None = None,
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
        want = method if isinstance(method, str) else getattr(method, "name", method)
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


def export_weights(
    checkpoint: str | os.PathLike, out: str | os.PathLike, *, half: bool = True, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write the model of a training checkpoint as a small weights file (no optimizer state;
    float16 with ``half``, which halves the size): ``{"format_version", "weights_format",
    "method", "method_config", "model", "meta"}``. Returns the path."""
    state = load_checkpoint(checkpoint, required=("method", "model", "method_config"))
    model = {k: (v.half() if half and v.is_floating_point() else v) for k, v in state["model"].items()}
    info = {"step": state.get("step"), "train_config": state.get("config"), "elapsed_s": state.get("elapsed")}
    info.update(meta or {})
    return save_checkpoint(
        out,
        {"format_version": CHECKPOINT_VERSION, "weights_format": WEIGHTS_FORMAT, "method": state["method"],
         "method_config": state["method_config"], "model": model, "meta": info},
    )


def load_weights_into(
    module: nn.Module, path: str | os.PathLike, prefix: str = "", *, method: str | None = None
) -> nn.Module:
    """Load the entries of a checkpoint's or weights file's model whose names start with
    ``prefix`` (the prefix removed) into ``module``: part of a model from another run, e.g. the
    flow network of TrianFlow's first stage into the second stage's model
    (``load_weights_into(model.flow, "runs/flow/latest.pt", prefix="flow.")``).

    Every parameter and buffer of ``module`` must be found with the same shape; values are
    converted to ``module``'s dtype (weights files are float16). Returns ``module``.

    Raises:
        CheckpointNotFoundError / CheckpointError: missing or corrupt file, another method than
            ``method``, no entry with ``prefix``, or entries that do not fit ``module`` (the
            message names the path and the first mismatching parameter).
    """
    state = load_checkpoint(path, required=("model",), method=method)
    saved = state["model"]
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"{path} has no model state dict (entry 'model' is {type(saved).__name__})")
    if saved and all(k.startswith("module.") for k in saved):
        saved = {k[len("module.") :]: v for k, v in saved.items()}
    part = {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}
    if not part:
        raise CheckpointError(f"{path} holds no model entry starting with {prefix!r}")
    problem = _shape_problem(module, part)
    if problem is not None:
        raise CheckpointError(f"{path} (entries {prefix!r}*) does not fit the module: {problem}")
    own = module.state_dict()
    module.load_state_dict({k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in part.items()})
    return module
