"""Input checks and the float32 guard for geometry, shared by every module.

Each public function of ``lesson_lib`` checks its inputs at the top with these helpers, so a
wrong layout fails at once with a message that names the argument, the expected shape and the
received one, instead of a broadcasting surprise twenty lines later.

Two kinds of checks:

- *Layout checks* (:func:`check_tensor`, :func:`check_same_device`) read only shapes, dtypes
  and devices. They cost nothing and always run.
- *Value checks* (finite, non-negative, positive: :func:`check_positive` and the checks the
  modules write with ``bool(...)`` on tensor data) read the data. On a GPU each one makes the
  host wait for the device (a sync), so they can be switched off with
  :func:`value_checks` ``(False)``: the trainer does this around its training step, where
  the inputs come from the course's own code. They are on by default, so a notebook or a
  student's call still gets a clear ``ValueError``.

And one guard: :func:`float32_geometry` keeps coordinate maths (matrix products and divisions
by depth) in float32 or float64 under mixed precision.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import TypeVar

import torch

Dim = int | str | None


def _fmt(spec: Sequence[Dim]) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in spec) + ")"


def check_tensor(
    x: object,
    name: str,
    spec: Sequence[Dim] | None = None,
    *,
    floating: bool = True,
    dims: dict[str, int] | None = None,
) -> dict[str, int]:
    """Check that ``x`` is a tensor of the layout ``spec`` and return the named sizes.

    ``spec`` lists one entry per dimension: an ``int`` must match exactly, a ``str`` names a
    size that must agree everywhere it appears (also across calls sharing ``dims``), ``None``
    accepts anything. With ``floating`` the dtype must be a floating-point type.

    Raises:
        TypeError: ``x`` is not a ``torch.Tensor``.
        ValueError: wrong number of dimensions, a wrong size, or a non-floating dtype; the
            message names ``name``, the expected layout and the received shape or dtype.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    dims = {} if dims is None else dims
    if spec is not None:
        if x.ndim != len(spec):
            raise ValueError(
                f"{name}: expected shape {_fmt(spec)} ({len(spec)} dimensions), "
                f"got {tuple(x.shape)}"
            )
        for size, want in zip(x.shape, spec):
            if want is None:
                continue
            if isinstance(want, int):
                ok = size == want
            else:
                ok = dims.setdefault(want, size) == size
            if not ok:
                bound = {k: v for k, v in dims.items() if k in spec}
                raise ValueError(
                    f"{name}: expected shape {_fmt(spec)}"
                    + (f" with {bound}" if bound else "")
                    + f", got {tuple(x.shape)}"
                )
    if floating and not x.dtype.is_floating_point:
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    return dims


def check_number(value: object, name: str, *, integer: bool = False) -> float | int:
    """Check that ``value`` is a real number (an ``int`` with ``integer``) and return it.

    A Python or NumPy number passes, and so does a tensor with one element (it is read with
    ``.item()``); a tensor of any other size, a string or ``None`` raises a ``TypeError`` that
    names ``name`` and what was received. ``bool`` is not a number here.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name}: expected a number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {'an integer' if integer else 'a number'}, got {type(value).__name__}")
    if integer:
        if not isinstance(value, numbers.Integral):
            if not float(value).is_integer():
                raise TypeError(f"{name}: expected an integer, got {value!r}")
        return int(value)
    return value


def check_same_device(**tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` if the given tensors do not all live on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must be on one device, got {listing}")


def check_positive(value: float | torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` (a number or tensor) is finite and > 0.

    A tensor is a value check (it reads the data, a host sync on a GPU) and is skipped inside
    :func:`value_checks` ``(False)``, as in the trainer's training step; a Python number is
    always checked (free).
    """
    if isinstance(value, numbers.Real):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0, got {value}")
        return
    if isinstance(value, torch.Tensor) and not value_checks_enabled():
        return
    t = torch.as_tensor(value)
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"{name} must be finite and > 0, got {value}")


# --------------------------------------------------------------------------------------------
# Value checks on and off

_VALUE_CHECKS: ContextVar[bool] = ContextVar("lesson_lib_value_checks", default=True)


def value_checks_enabled() -> bool:
    """Whether value checks (finite / non-negative / positive tests that read tensor data) run
    in the current context. True unless inside :func:`value_checks` ``(False)``, and False
    while ``torch.compile`` traces the code: a check reads tensor data, which would split the
    compiled graph and make the host wait for the device (a compiled step is the trainer's
    hot path, where the checks are off anyway)."""
    if torch.compiler.is_compiling():
        return False
    return _VALUE_CHECKS.get()


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Switch value checks on or off for the enclosed code (also usable as a decorator).

    A value check such as ``bool((disparity < 0).any())`` copies a result from the GPU to the
    host, so the host waits for every queued kernel: a Monodepth training step made about 32 of
    these waits. The trainer runs its training step inside ``value_checks(False)``; shape,
    dtype and device checks still run there. Results never depend on the switch, only whether
    bad values raise a ``ValueError``.

    The switch is a :class:`~contextvars.ContextVar`: it is per thread (and per asyncio task),
    and a new thread starts with checks on.

    Example:
        >>> with value_checks(False):
        ...     value_checks_enabled()
        False
        >>> value_checks_enabled()
        True
    """
    token = _VALUE_CHECKS.set(bool(enabled))
    try:
        yield
    finally:
        _VALUE_CHECKS.reset(token)


# --------------------------------------------------------------------------------------------
# Geometry in float32 under mixed precision

_F = TypeVar("_F", bound=Callable[..., object])


def _at_least_float32(x: object) -> object:
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype.itemsize < 4:
        return x.float()
    return x


def float32_geometry(fn: _F) -> _F:
    """Decorator: run ``fn`` with autocast off and its half-precision tensor arguments in float32.

    Under ``torch.autocast`` matrix products run in bfloat16 or float16 (8 or 11 significant
    bits). For pixel coordinates that is not enough: ``K R K^-1 [u, v, 1]^T`` on a 416-pixel-wide
    image is off by more than a pixel, and the rigid warp's sampling points by several (the
    measurement is in ``tests/test_mixed_precision.py``). So every geometry function of
    :mod:`lesson_lib.camera`, :mod:`lesson_lib.pose` and :mod:`lesson_lib.warping`

    - turns autocast off for the device types of its tensor arguments (it stays on for the
      code around it, and the network is unaffected),
    - casts float16 / bfloat16 tensor arguments to float32; float32 and float64 ones are kept,

    so its results, and in particular every coordinate, are float32 (float64 for float64
    inputs) whatever the caller's precision. Gradients flow through the casts. Without
    autocast and with float32 inputs it changes nothing.
    """

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        devices = {
            a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)
        }
        with contextlib.ExitStack() as stack:
            for dev in devices:
                if torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev):
                    stack.enter_context(torch.autocast(dev, enabled=False))
            args = tuple(_at_least_float32(a) for a in args)
            kwargs = {k: _at_least_float32(v) for k, v in kwargs.items()}
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
