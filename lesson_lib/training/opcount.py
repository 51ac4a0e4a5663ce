"""Count the operations a training step dispatches, and find the ones that stall a GPU.

A GPU runs one kernel per operation; when a step is made of thousands of tiny operations the
GPU spends its time waiting for the host to launch them (a *launch-bound* step), and an
operation that makes the host wait for the GPU (a *sync*) empties the queue every time. Both
can be measured on the CPU, before any GPU is at hand: every ATen operation PyTorch runs
passes through its dispatcher, and a :class:`~torch.utils._python_dispatch.TorchDispatchMode`
sees each one, forward, backward (autograd's engine runs the backward's operations through
the same dispatcher) and the optimiser's update alike.

:class:`OpCounter` counts them per *phase* (``"forward"`` for the network and the loss,
``"backward"``, ``"optimizer"``), by operation name, and flags three kinds:

- **syncs** (:data:`SYNC_OPS`): operations whose result, or whose output *shape*, depends on
  tensor values, so that on a GPU the host must wait for the device: ``.item()`` /
  ``float(t)`` / ``bool(t)`` (``aten._local_scalar_dense``), ``nonzero``, ``masked_select``,
  ``unique``, ``aten.equal``, ``_assert_async``, linear algebra's error checks, and indexing
  with a boolean mask (``aten.index`` / ``index_put_`` with a bool index tensor: the mask is
  turned into indices with ``nonzero`` inside the kernel). A copy from another device to the
  CPU (``.cpu()``, ``.numpy()``) is one too.
- **host data** (:data:`HOST_DATA_OPS`): a tensor built from Python or NumPy data
  (``torch.tensor(...)``, ``torch.as_tensor(number)``, ``torch.from_numpy`` then ``.to``),
  which PyTorch dispatches as ``aten.lift_fresh`` / ``lift_fresh_copy``. On a GPU such a tensor
  is made on the CPU and copied to the device inside the step: a host-to-device copy, which a
  CUDA graph cannot capture.
- **host-to-device copies**: ``aten._to_copy`` / ``copy_`` from a CPU tensor into a tensor on
  another device, and factory calls (``zeros``, ``arange``, ``full``, ...) that create a CPU
  tensor while the step runs on another device (``device`` given to the counter).

The limit of a CPU measurement: on the CPU every tensor is a CPU tensor, so the last kind
cannot be told apart from ordinary work there (a factory call with ``device=x.device`` and one
with no device both arrive as ``device="cpu"``); it is counted only when the step runs on
another device. ``torch.tensor(...)`` (host data) and every sync are seen on any device.
Operations that never reach the dispatcher are not seen: pure Python arithmetic, and the
``nonzero`` a CPU kernel runs internally (a boolean index is flagged from its arguments).

Example:
    >>> model = torch.nn.Linear(3, 1)
    >>> with OpCounter() as ops:
    ...     with ops.phase("forward"):
    ...         loss = model(torch.ones(2, 3)).sum()
    ...     with ops.phase("backward"):
    ...         loss.backward()
    >>> ops.total("forward") > 0, ops.syncs
    (True, [])

:func:`count_step` runs one step of a :class:`~lesson_lib.training.Method` under the counter,
as the trainer runs it (value checks off); ``benchmarks/bench_step_ops.py`` prints the counts
of every registered method.
"""

from __future__ import annotations

import contextlib
import traceback
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["SYNC_OPS", "HOST_DATA_OPS", "FACTORY_OPS", "VIEW_OPS", "Flagged", "OpCounter", "count_step", "example_batch"]

SYNC_OPS = frozenset({
    "aten._local_scalar_dense",  # .item(), float(t), int(t), bool(t)
    "aten.item",
    "aten.is_nonzero",
    "aten.nonzero",
    "aten.masked_select",
    "aten.equal",
    "aten._assert_async",
    "aten._assert_scalar",
    "aten.unique_consecutive",
    "aten._unique",
    "aten._unique2",
    "aten.unique_dim",
    "aten._linalg_check_errors",
    "aten.allclose",
    "aten.repeat_interleave",  # without output_size its output size is data-dependent
})
"""ATen operations (overload packets) that make the host wait for the device."""

HOST_DATA_OPS = frozenset({"aten.lift_fresh", "aten.lift_fresh_copy"})
"""How a tensor built from Python or NumPy data (``torch.tensor``) enters the dispatcher."""

FACTORY_OPS = frozenset({
    "aten.empty", "aten.empty_strided", "aten.zeros", "aten.ones", "aten.full", "aten.arange",
    "aten.linspace", "aten.logspace", "aten.eye", "aten.scalar_tensor", "aten.rand", "aten.randn",
    "aten.randint", "aten.randperm", "aten.normal", "aten.tensor",
})
"""Operations that create a tensor on the device named in their arguments."""

VIEW_OPS = frozenset({
    "aten.detach", "aten.view", "aten._unsafe_view", "aten.slice", "aten.select", "aten.expand",
    "aten.unsqueeze", "aten.squeeze", "aten.transpose", "aten.permute", "aten.t", "aten.as_strided",
    "aten.alias", "aten.split", "aten.split_with_sizes", "aten.unbind", "aten.narrow", "aten.diagonal",
    "aten.unfold", "aten.view_as_real", "aten.view_as_complex", "aten.lift_fresh",
})
"""Operations that only make a new view of existing memory: no GPU kernel is launched for
them (:meth:`OpCounter.kernels` leaves them out; ``reshape`` that copies arrives as ``clone``
or ``_unsafe_view`` after a copy and is counted by its copy)."""

_BOOL_INDEX_OPS = frozenset({"aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"})


@dataclass
class Flagged:
    """One flagged operation: its name, the phase, why, and where in the course's code it came from."""

    op: str
    phase: str
    kind: str  # "sync", "host_data" or "host_to_device"
    where: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.op} ({self.phase}) at {self.where}"


def _where() -> str:
    """The innermost frame of the caller's code outside torch and this module (``file:line``)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        name = frame.filename.replace("\\", "/")
        if "/torch/" in name or name.endswith("/opcount.py"):
            continue
        return f"{name.rsplit('/', 2)[-2]}/{name.rsplit('/', 1)[-1]}:{frame.lineno} ({frame.name})"
    return "?"


def _devices(values: Any) -> set[str]:
    flat, _ = tree_flatten(values)
    return {t.device.type for t in flat if isinstance(t, torch.Tensor)}


class OpCounter(TorchDispatchMode):
    """A dispatch mode that counts ATen operations per phase and flags syncs and host copies.

    Args:
        device: where the step is meant to run (default: wherever its tensors are). A factory
            call that makes a CPU tensor, or a copy from the CPU, counts as a host-to-device
            copy only when this is not the CPU.
        where: record the source line of each flagged operation (on by default).

    Attributes:
        counts: ``{phase: Counter({op name: calls})}``, op names as ``"aten.add"``.
        flagged: the flagged operations (:class:`Flagged`), in order.
    """

    def __init__(self, device: torch.device | str | None = None, where: bool = True) -> None:
        super().__init__()
        self.where = where
        self.counts: dict[str, Counter] = {}
        self.flagged: list[Flagged] = []
        self.loss: torch.Tensor | None = None
        self._phase = "forward"
        self._device_type = None if device is None else torch.device(device).type

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute the operations of the enclosed code to phase ``name``."""
        before, self._phase = self._phase, name
        try:
            yield
        finally:
            self._phase = before

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        self.counts.setdefault(self._phase, Counter())[name] += 1
        kind = self._kind(name, args, kwargs)
        if kind is not None:
            self.flagged.append(Flagged(name, self._phase, kind, _where() if self.where else "?"))
        return func(*args, **kwargs)

    def _kind(self, name: str, args: tuple, kwargs: Mapping[str, Any]) -> str | None:
        if name in SYNC_OPS:
            return "sync"
        if name in HOST_DATA_OPS:
            return "host_data"
        if name in _BOOL_INDEX_OPS and len(args) > 1:
            flat, _ = tree_flatten(args[1])
            if any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in flat):
                return "sync"
        if name in ("aten._to_copy", "aten.copy_", "aten.copy"):
            src = args[1] if name != "aten._to_copy" else args[0]
            dst = kwargs.get("device") if name == "aten._to_copy" else args[0].device
            if isinstance(src, torch.Tensor) and dst is not None:
                dst_type = torch.device(dst).type
                if src.device.type != "cpu" and dst_type == "cpu":
                    return "sync"  # device to host: waits for the device
                if src.device.type == "cpu" and dst_type != "cpu":
                    return "host_to_device"
        on_device = self._device_type is not None and self._device_type != "cpu"
        if on_device and name in FACTORY_OPS:
            device = kwargs.get("device")
            if device is None or torch.device(device).type == "cpu":
                return "host_to_device"
        return None

    # -- reading the counts -------------------------------------------------------------------

    def total(self, phase: str | None = None) -> int:
        """Operations dispatched in ``phase`` (all phases if None)."""
        if phase is not None:
            return sum(self.counts.get(phase, Counter()).values())
        return sum(sum(c.values()) for c in self.counts.values())

    def kernels(self, phase: str | None = None) -> int:
        """Operations of ``phase`` (all if None) that compute something, i.e. not in
        :data:`VIEW_OPS`: about the number of kernels the step launches on a GPU."""
        return sum(n for p, c in self.counts.items() if phase is None or p == phase
                   for op, n in c.items() if op not in VIEW_OPS)

    def top(self, n: int = 10, phase: str | None = None) -> list[tuple[str, int]]:
        """The ``n`` most frequent operations of ``phase`` (all phases if None)."""
        merged = Counter()
        for p, c in self.counts.items():
            if phase is None or p == phase:
                merged.update(c)
        return merged.most_common(n)

    @property
    def syncs(self) -> list[Flagged]:
        """The flagged operations that make the host wait for the device."""
        return [f for f in self.flagged if f.kind == "sync"]

    @property
    def host_copies(self) -> list[Flagged]:
        """Tensors built from host data and host-to-device copies inside the counted code."""
        return [f for f in self.flagged if f.kind in ("host_data", "host_to_device")]


def count_step(
    method: Any,
    model: torch.nn.Module,
    batch: Mapping[str, Any],
    ctx: Any = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    device: torch.device | str | None = None,
    where: bool = True,
) -> OpCounter:
    """Run one training step of ``method`` under an :class:`OpCounter`, as the trainer runs it.

    ``method.loss(model, batch, ctx)`` inside :func:`lesson_lib._validate.value_checks`
    ``(False)`` (phase ``"forward"``), ``loss.backward()`` (``"backward"``), and
    ``optimizer.step()`` when an optimiser is given (``"optimizer"``). Gradients are zeroed
    (set to None) before, outside the count.

    Returns:
        The counter; ``counter.loss`` holds the step's loss (detached).
    """
    from .._validate import value_checks

    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    else:
        model.zero_grad(set_to_none=True)
    counter = OpCounter(device=device, where=where)
    with counter:
        with counter.phase("forward"), value_checks(False):
            loss, _ = method.loss(model, batch, ctx)
        with counter.phase("backward"):
            loss.backward()
        if optimizer is not None:
            with counter.phase("optimizer"):
                optimizer.step()
    counter.loss = loss.detach()
    return counter


def example_batch(
    method: Any, batch_size: int = 8, size: tuple[int, int] = (128, 416), seed: int = 0
) -> dict[str, torch.Tensor]:
    """A batch of random images shaped as ``method``'s data (for counting and compiling).

    ``{"left", "right"}`` for stereo methods; ``{"target", "sources" (B, S, 3, H, W), "K"}``
    for video methods (``S`` from ``method.data_options()["snippet_length"]``, default 3
    frames), with a focal length of about the width and the principal point at the centre.
    Values are uniform in ``[0, 1]``: the operation counts do not depend on them.
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    if getattr(method, "data_kind", "stereo") == "stereo":
        return {"left": torch.rand(batch_size, 3, h, w, generator=gen),
                "right": torch.rand(batch_size, 3, h, w, generator=gen)}
    options = method.data_options() if hasattr(method, "data_options") else {}
    n_sources = int(options.get("snippet_length", 3)) - 1
    K = torch.tensor([[0.58 * w, 0.0, (w - 1) / 2], [0.0, 1.92 * h, (h - 1) / 2], [0.0, 0.0, 1.0]])
    return {"target": torch.rand(batch_size, 3, h, w, generator=gen),
            "sources": torch.rand(batch_size, n_sources, 3, h, w, generator=gen),
            "K": K.expand(batch_size, 3, 3).clone()}
