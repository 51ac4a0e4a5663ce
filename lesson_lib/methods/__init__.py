"""The methods of the course, one module per paper, and the registry that finds them by name.

- :mod:`~lesson_lib.methods.monodepth`  -- Monodepth (Godard et al., CVPR 2017), chapter 06
- :mod:`~lesson_lib.methods.sfmlearner` -- SfMLearner (Zhou et al., CVPR 2017), chapter 07
- :mod:`~lesson_lib.methods.trianflow`  -- TrianFlow (Zhao et al., CVPR 2020), chapter 09 (flow, then depth)
- :mod:`~lesson_lib.methods.monodepth2` -- Monodepth2 (Godard et al., ICCV 2019), chapter 11
- :mod:`~lesson_lib.methods.common`     -- what the monocular methods share: their depth inference

A method module reads like the paper: its loss, its networks' assembly and its options (see
:class:`lesson_lib.training.Method` for the contract). Everything generic lives elsewhere:
evaluation in :mod:`lesson_lib.evaluation`, weights files in
:mod:`lesson_lib.training.checkpoints`, resizing in :mod:`lesson_lib.images`.

Every command (``train``, ``evaluate``, ``predict``) dispatches through this registry, and a
checkpoint or weights file names its method, so :func:`load_model` rebuilds any trained model
from its file alone.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..training import CheckpointError, Method, load_checkpoint

__all__ = ["register", "get_method", "available", "build_method", "config_from_dict", "load_model"]

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Add a method class to the registry under ``cls.name`` (usable as a decorator)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name == "method":
        raise ValueError(f"{cls.__name__} needs a class attribute 'name' to be registered")
    if getattr(cls, "config_class", None) is None:
        raise ValueError(f"{cls.__name__} needs a class attribute 'config_class' (its options dataclass)")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"a method named {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def available() -> tuple[str, ...]:
    """The names of the registered methods, sorted."""
    return tuple(sorted(_REGISTRY))


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; ``KeyError`` listing the available ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available())}") from None


def config_from_dict(name: str, values: Mapping[str, Any]) -> Any:
    """The method's options dataclass from a dict (as stored in checkpoints): unknown keys are
    ignored, old names listed in the class's ``LEGACY_NAMES`` are renamed."""
    cls = get_method(name).config_class
    legacy = getattr(cls, "LEGACY_NAMES", {})
    known = {f.name for f in dataclasses.fields(cls)}
    renamed = {legacy.get(k, k): v for k, v in values.items()}
    return cls(**{k: v for k, v in renamed.items() if k in known})


def build_method(name: str, config: Any = None) -> Method:
    """An instance of the method ``name`` with ``config`` (its dataclass, a dict, or None: defaults)."""
    cls = get_method(name)
    if isinstance(config, Mapping):
        config = config_from_dict(name, config)
    return cls(config)


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, Method, dict[str, Any]]:
    """A trained model from a training checkpoint (``latest.pt``) or a weights file
    (:func:`lesson_lib.training.export_weights`), whatever its method: in eval mode on
    ``device``, in float32.

    Returns ``(model, method, meta)``: ``method`` is the configured :class:`Method` (its
    ``predict_depth`` / ``predict_disparity`` run the model), ``meta`` the file's notes.

    Raises:
        CheckpointNotFoundError / CheckpointError: missing, corrupt, of an unknown method, or not
            matching the network its configuration describes (the message names the path).
    """
    required = ("method", "model", "method_config")
    state = load_checkpoint(path, required=required)
    name = state["method"]
    if name not in _REGISTRY:
        raise CheckpointError(f"{path} is a model of method {name!r}, which this lesson_lib does not know "
                              f"(available: {', '.join(available())})")
    raw = state["method_config"]
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: method_config is a {type(raw).__name__}, not a dict")
    try:
        method = build_method(name, config_from_dict(name, raw))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid method_config: {exc}") from exc
    if hasattr(method, "load_pretrained"):
        method.load_pretrained = False  # the file holds every weight: no part comes from another run's file
    model = method.build_model()
    load_checkpoint(path, model, required=required, method=name)
    model = model.float().to(device).eval()
    return model, method, dict(state.get("meta") or {})


from .monodepth import Monodepth  # noqa: E402  (registers the course's methods)
from .sfmlearner import SfMLearner  # noqa: E402
from .trianflow import TrianFlow  # noqa: E402
from .monodepth2 import Monodepth2  # noqa: E402

register(Monodepth)
register(SfMLearner)
register(TrianFlow)
register(Monodepth2)
