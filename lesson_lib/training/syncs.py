"""Count the tensor calls that make a GPU's host wait (host syncs), each with the library line
that made it.

On a GPU, work is queued and the host runs ahead; a call that needs a tensor's *value* on the
host (``bool(t)``, ``float(t)``, ``.item()``, ``.tolist()``, ``.numpy()``, ``.cpu()``), or whose
output *shape* depends on values (``nonzero``, ``masked_select``, ``unique``, indexing with a
boolean mask), makes the host wait until the queue is empty: a *host sync*. A training step
should make none (the course's value checks, which read data, are switched off inside it with
:func:`lesson_lib._validate.value_checks` ``(False)``).

:class:`HostSyncCounter` is a :class:`~torch.overrides.TorchFunctionMode`: it sees every tensor
call made under it, so the syncs a step *would* make on a GPU are counted on any device, the
CPU included. Each one is recorded as a :class:`HostSync`: the call's name and the innermost
line of ``lesson_lib`` that made it (``lesson_lib/warping.py:179``)::

    >>> import torch
    >>> x = torch.arange(4.0)
    >>> with HostSyncCounter() as counter:
    ...     _ = bool((x > 1).any()), x.sum().item()
    >>> counter.names
    ['__bool__', 'item']

What it cannot see: a sync inside a kernel that never returns to Python, and CUDA's own
synchronising calls; on a GPU, ``torch.cuda.set_sync_debug_mode("warn")`` reports those
(``benchmarks/gpu_check.py`` does both). The tests ``tests/test_mixed_precision.py`` and
``tests/test_fast_path.py`` use this counter too.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["SYNCING_CALLS", "HostSync", "HostSyncCounter", "bool_index", "copies_to_host"]

#: Tensor calls that copy data to the host, or whose output shape depends on tensor values:
#: on a GPU each one makes the host wait for the device.
SYNCING_CALLS = frozenset({
    "__bool__", "item", "tolist", "__float__", "__int__", "__index__", "__array__", "numpy", "cpu",
    "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount", "equal", "allclose",
    "is_nonzero",
})

_PACKAGE = Path(__file__).resolve().parents[1]  # lesson_lib/
_ROOT = _PACKAGE.parent  # where lines are named from: lesson_lib/warping.py:179
_HERE = Path(__file__).resolve()


def bool_index(index: Any) -> bool:
    """Whether an index (``t[index]``) holds a boolean tensor: it is turned into positions with
    ``nonzero``, whose output shape depends on the values (a host sync)."""
    if isinstance(index, torch.Tensor):
        return index.dtype == torch.bool
    if isinstance(index, (tuple, list)):
        return any(bool_index(i) for i in index)
    return False


def copies_to_host(args: tuple, kwargs: dict) -> bool:
    """Whether ``t.to(...)`` called with ``args`` and ``kwargs`` copies a tensor that is not on the
    CPU to the CPU (``t.to("cpu")``, or to a CPU tensor's device)."""
    if not (args and isinstance(args[0], torch.Tensor) and args[0].device.type != "cpu"):
        return False
    for x in (*args[1:], kwargs.get("device")):
        if isinstance(x, (str, torch.device)) and torch.device(x).type == "cpu":
            return True
        if isinstance(x, torch.Tensor) and x.device.type == "cpu":
            return True
    return False


@dataclass(frozen=True)
class HostSync:
    """One host sync: the tensor call's ``name`` (``"item"``, ``"__getitem__"``, ...) and
    ``where``, the innermost ``lesson_lib`` line that made it (``"lesson_lib/warping.py:179"``),
    or ``"outside lesson_lib"``."""

    name: str
    where: str

    def __str__(self) -> str:
        return f"{self.name} at {self.where}"


def _library_line() -> str:
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename).resolve()
        if path != _HERE and path.is_relative_to(_PACKAGE):
            return f"{path.relative_to(_ROOT).as_posix()}:{frame.lineno}"
    return "outside lesson_lib"


class HostSyncCounter(TorchFunctionMode):
    """Records every tensor call made under it that would sync a GPU's host with the device
    (:data:`SYNCING_CALLS`, boolean-mask indexing, a copy to the CPU), in order.

    Attributes:
        syncs: the :class:`HostSync` records.
    """

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[HostSync] = []

    @property
    def names(self) -> list[str]:
        """The calls' names, in order: ``["__bool__", "item"]``."""
        return [s.name for s in self.syncs]

    @property
    def calls(self) -> list[str]:
        """The calls with their lines, in order: ``["item at lesson_lib/warping.py:179"]``."""
        return [str(s) for s in self.syncs]

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if (name in SYNCING_CALLS or (name in ("__getitem__", "__setitem__") and bool_index(args[1]))
                or (name == "to" and copies_to_host(args, kwargs))):
            self.syncs.append(HostSync(name, _library_line()))
        return func(*args, **kwargs)
