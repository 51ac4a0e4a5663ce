"""Shape, dtype and device checks shared by every module.

Each public function of ``lesson_lib`` checks its inputs at the top with these helpers, so a
wrong layout fails at once with a message that names the argument, the expected shape and the
received one, instead of a broadcasting surprise twenty lines later.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def check_same_device(**tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` if the given tensors do not all live on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must be on one device, got {listing}")


def check_positive(value: float | torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` (a number or tensor) is finite and > 0."""
    t = torch.as_tensor(value)
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
