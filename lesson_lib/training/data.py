"""Feeding the data: the epoch sampler that makes resumption exact, validation shards, and moving
batches to the device."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

__all__ = ["EpochSampler", "ShardSampler", "move_to", "batch_len"]


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


class ShardSampler(Sampler[int]):
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


def batch_len(batch: Any) -> int:
    """Number of samples in a collated batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for v in values:
        n = batch_len(v)
        if n:
            return n
    return 0
