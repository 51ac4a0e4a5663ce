"""Typed configuration and the command line: every field of a config dataclass becomes an option.

:func:`option` declares a field with its help text (and e.g. ``choices``);
:func:`config_to_argparse` turns a dataclass into options, :func:`config_from_args` back into an
instance (which validates itself), :func:`config_to_argv` into arguments for another process.
:class:`TrainConfig` holds everything the training loop needs besides the method and the data.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TrainConfig",
    "TRAJECTORY_FIELDS",
    "option",
    "check_choices",
    "NetworkOptions",
    "config_to_argparse",
    "config_from_args",
    "config_to_argv",
]


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its command-line help (and e.g. ``choices``) in the metadata."""
    return field(default=default, metadata={"help": help, **metadata})


def check_choices(config: Any) -> None:
    """Raise ``ValueError`` if a field with ``metadata["choices"]`` holds another value (called by
    each config's ``__post_init__``)."""
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        if choices is not None and getattr(config, f.name) not in choices:
            raise ValueError(
                f"{type(config).__name__}.{f.name} must be one of {tuple(choices)}, got {getattr(config, f.name)!r}"
            )


class NetworkOptions:
    """What the options dataclasses of the depth methods share (Monodepth, SfMLearner, ...):
    ``encoder_width``, ``scales`` and the network input size ``input_height`` /
    ``input_width`` (0: the data's own size). Mix it into the dataclass and call
    :meth:`check_network_options` from its ``__post_init__``."""

    encoder_width: int
    scales: tuple[int, ...]
    input_height: int
    input_width: int

    @property
    def input_size(self) -> tuple[int, int] | None:
        """``(height, width)`` the networks run at, or None for the data's own size."""
        return (self.input_height, self.input_width) if self.input_height else None

    def check_network_options(self, nonnegative: tuple[str, ...] = ()) -> None:
        """Normalise ``scales`` and check the shared fields (and the named weights are >= 0);
        ``ValueError`` naming the class and the field."""
        name = type(self).__name__
        self.scales = tuple(int(s) for s in self.scales)
        check_choices(self)
        if self.encoder_width < 1:
            raise ValueError(f"{name}.encoder_width must be >= 1, got {self.encoder_width}")
        check_input_size(self)
        s = self.scales
        if not s or list(s) != sorted(set(s)) or s[0] != 0 or s[-1] > 3:
            raise ValueError(f"{name}.scales must be increasing, start at 0 and stay <= 3, got {s}")
        for field_name in nonnegative:
            if not getattr(self, field_name) >= 0:
                raise ValueError(f"{name}.{field_name} must be >= 0, got {getattr(self, field_name)}")


def check_input_size(config: Any) -> None:
    """``ValueError`` unless ``config.input_height`` / ``input_width`` are both 0 (the data's own
    size) or both positive multiples of 32 (shared by every method's options)."""
    name = type(config).__name__
    if (config.input_height == 0) != (config.input_width == 0):
        raise ValueError(f"{name}: give both input_height and input_width, or neither")
    for field_name in ("input_height", "input_width"):
        v = getattr(config, field_name)
        if v < 0 or v % 32:
            raise ValueError(f"{name}.{field_name} must be 0 or a positive multiple of 32, got {v}")


@dataclass
class TrainConfig:
    """Everything the training loop needs besides the method and the data.

    Each field is a command-line option (``--batch-size 8``, ``--amp/--no-amp``, ...) through
    :func:`config_to_argparse`. The length of the run is ``steps`` optimizer steps, or
    ``epochs`` passes over the training set when ``steps`` is 0; ``milestones`` are fractions
    of that length, so the schedule scales with it.
    """

    epochs: int = option(20, "passes over the training set (used when --steps is 0)")
    steps: int = option(0, "optimizer steps of the whole run; 0: epochs x batches per epoch")
    batch_size: int = option(8, "samples per step (per process under torchrun)")
    lr: float = option(1e-4, "learning rate of Adam")
    weight_decay: float = option(0.0, "decoupled weight decay (AdamW); 0: plain Adam")
    milestones: tuple[float, ...] = option(
        (0.75,), "step decay: fractions of the run after which the learning rate is multiplied by gamma"
    )
    gamma: float = option(0.1, "factor of the learning rate at each milestone")
    grad_clip: float = option(0.0, "clip the gradient norm to this value; 0: no clipping")
    seed: int = option(0, "seed of the initialisation, the data order and all random draws")
    device: str = option("auto", "where to train; auto: CUDA if present", choices=("auto", "cpu", "cuda"))
    amp: bool = option(True, "mixed precision on CUDA (the CPU trains in float32 unless --fast-path-on-cpu)")
    amp_dtype: str = option(
        "auto", "mixed-precision type; auto: bf16 where supported, else fp16", choices=("auto", "bf16", "fp16")
    )
    channels_last: bool = option(True, "channels-last memory format for the model and 4-D inputs (CUDA only)")
    fast_path_on_cpu: bool = option(
        False, "also use mixed precision (bf16) and channels-last on the CPU: slower there, but it runs the "
        "GPU's fast path where no GPU is present (for tests)"
    )
    deterministic: bool = option(False, "deterministic algorithms (slower on CUDA; the CPU is always deterministic)")
    num_workers: int = option(0, "data-loading worker processes (with CUDA the batches also go through pinned memory)")
    compile: bool = option(
        False, "torch.compile the method's loss (forward and loss; backward follows it); on CUDA in mode "
        "'reduce-overhead', which replays CUDA graphs where it is safe"
    )
    cuda_graph: bool = option(
        False, "CUDA only: capture one whole step (forward, loss, backward, Adam) as a CUDA graph after a few "
        "warm-up steps and replay it for every later step (the batch is copied into the graph's own tensors)"
    )
    fused_adam: bool = option(True, "on CUDA, the fused Adam kernel (one launch for every parameter)")
    log_every: int = option(10, "write a row of log.csv every N steps (and at the last step)")
    validate_every: int = option(0, "validate every N steps and at the end; 0: only at the end")
    checkpoint_every: int = option(1000, "write latest.pt every N steps (and at the end); 0: only at the end")
    keep_checkpoints: bool = option(False, "also keep step_N.pt at every checkpoint")
    out_dir: str = option("runs/run", "folder of the logs and checkpoints")
    resume: bool = option(False, "continue from OUT_DIR/latest.pt if it exists")
    overwrite: bool = option(False, "start afresh even if OUT_DIR already holds a run")
    stop_at_step: int = option(
        0, "stop with a checkpoint at this step without changing the schedule (resume later); 0: run to the end"
    )
    progress: bool = option(True, "show a progress bar (terminal or notebook; rank 0 only)")
    tensorboard: bool = option(True, "also write TensorBoard events to OUT_DIR if TensorBoard is installed")

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
        check_choices(self)
        if self.cuda_graph and self.device == "cpu":
            raise ValueError("TrainConfig.cuda_graph needs CUDA (--device cuda or auto on a GPU machine)")


# Fields whose change between an interrupted run and its resumption changes the trajectory.
TRAJECTORY_FIELDS = ("epochs", "steps", "batch_size", "lr", "weight_decay", "milestones", "gamma", "grad_clip", "seed")


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
