"""Random numbers as a pure function of a key tensor: what a training step can draw when it is
compiled (``torch.compile``) or captured as a CUDA graph.

A ``torch.Generator`` keeps its state on the host: ``torch.compile`` cannot follow more than one
draw from it through a step, and every draw is a call the host makes. :class:`KeyedRandom`
instead computes each random number from a 0-d ``int64`` *key* tensor (on the device, seeded
per step by the trainer), a draw counter and the element's index, by an integer hash
(Wellons' ``lowbias32``, twice): tensor operations only, so a compiled or captured step traces
them like any other arithmetic, and the same key gives the same numbers on every device.

Every sampler in the course takes ``generator``, which may be a ``torch.Generator`` (or None:
PyTorch's global one) or a :class:`KeyedRandom`; :func:`rand`, :func:`randint` and
:func:`randperm` dispatch on it. With a ``torch.Generator`` they are exactly PyTorch's own
``torch.rand``/``randint``/``randperm`` (drawn on the generator's device, moved to ``device``).

The numbers are not cryptographic and the 32-bit hash has its limits: :func:`rand` has 24
random bits, :func:`randint` a bias below ``high / 2**32``, and permutations break the rare
ties of equal hashes by position. Ample for sampling correspondences and RANSAC hypotheses.
"""

from __future__ import annotations

import torch

__all__ = ["KEY_LIMIT", "KeyedRandom", "RandomSource", "rand", "randint", "randperm"]

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio: spreads consecutive draw counters over the 32 bits
KEY_LIMIT = 1 << 62  # keys lie in [0, KEY_LIMIT)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2^32`` for ``x`` in ``[0, 2^32)`` (int64) and a constant ``c < 2^32``, in two
    16-bit halves of ``c`` so that no int64 product overflows."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + ((x * hi) & 0xFFFF) * 65536) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """Wellons' ``lowbias32`` on int64 values in ``[0, 2^32)`` (logical shifts: the values are
    non-negative)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


class KeyedRandom:
    """A stream of random numbers computed from ``key`` (a 0-d integer tensor, ``0 <= key <
    2**62``) and a draw counter: the ``i``-th element of the ``c``-th draw is
    ``h(h(i xor h(key_lo xor h(key_hi xor c·φ))) xor key_hi)`` with ``h`` a 32-bit integer hash.

    Each call of :meth:`bits` (and of the module's :func:`rand`, :func:`randint`,
    :func:`randperm` on this stream) advances the counter, so successive draws differ; a new
    stream with the same key repeats them. The counter is a Python int: a compiled step draws in
    the same order every time, so it traces to constants.
    """

    def __init__(self, key: torch.Tensor) -> None:
        if not isinstance(key, torch.Tensor) or key.ndim != 0 or key.dtype not in (torch.int64, torch.int32):
            shape = tuple(key.shape) if isinstance(key, torch.Tensor) else type(key).__name__
            raise TypeError(f"key: expected a 0-d int64 tensor, got {shape}")
        self.key = key.long()
        self.draws = 0

    @classmethod
    def from_seed(cls, seed: int, device: torch.device | str = "cpu") -> "KeyedRandom":
        """A stream whose key is the integer ``seed`` (reduced modulo ``2**62``), on ``device``."""
        return cls(torch.tensor(int(seed) % KEY_LIMIT, dtype=torch.int64, device=device))

    @classmethod
    def from_generator(cls, generator: torch.Generator | None, device: torch.device | str = "cpu") -> "KeyedRandom":
        """A stream keyed by one draw from ``generator`` (None: PyTorch's global generator)."""
        gdev = generator.device if generator is not None else torch.device(device)
        key = torch.randint(KEY_LIMIT, (), generator=generator, device=gdev, dtype=torch.int64)
        return cls(key.to(device))

    @property
    def device(self) -> torch.device:
        return self.key.device

    def bits(self, shape: tuple[int, ...] | torch.Size, device: torch.device | str | None = None) -> torch.Tensor:
        """Uniform 32-bit random integers, int64 in ``[0, 2**32)``, of ``shape``, on ``device``
        (default: the key's)."""
        shape = tuple(int(s) for s in shape)
        count = 1
        for s in shape:
            count *= s
        if count >= 1 << 32:
            raise ValueError(f"KeyedRandom draws fewer than 2**32 numbers at once, asked for shape {shape}")
        self.draws += 1
        key = self.key.to(device) if device is not None else self.key
        lo, hi = key & _M32, (key >> 32) & _M32
        stream = _hash32(lo ^ _hash32(hi ^ ((self.draws * _GOLDEN) & _M32)))
        index = torch.arange(count, dtype=torch.int64, device=key.device)
        return _hash32(_hash32(index ^ stream) ^ hi).reshape(shape)


RandomSource = torch.Generator | KeyedRandom | None


def _torch_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def _to(x: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    return x if device is None else x.to(device)


def _check(generator: RandomSource) -> None:
    if generator is not None and not isinstance(generator, (torch.Generator, KeyedRandom)):
        raise TypeError(f"generator: expected a torch.Generator, a KeyedRandom or None, got {type(generator).__name__}")


def rand(generator: RandomSource, shape: tuple[int, ...], device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform float32 numbers in ``[0, 1)`` of ``shape`` on ``device``."""
    _check(generator)
    if isinstance(generator, KeyedRandom):
        return (generator.bits(shape, device) >> 8).float() * 2.0**-24
    return _to(torch.rand(shape, generator=generator, device=_torch_device(generator, device)), device)


def randint(generator: RandomSource, high: int, shape: tuple[int, ...],
            device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform int64 numbers in ``[0, high)`` of ``shape`` on ``device``; ``high`` may also be an
    int64 tensor broadcast against ``shape`` (a :class:`KeyedRandom` only), each element drawn
    below its own bound."""
    _check(generator)
    if isinstance(generator, KeyedRandom):
        if not isinstance(high, torch.Tensor) and not 1 <= int(high) < 1 << 31:
            raise ValueError(f"high must lie in [1, 2**31), got {high}")
        return (generator.bits(shape, device) * high) >> 32
    if isinstance(high, torch.Tensor):
        raise TypeError("randint with a tensor of bounds needs a KeyedRandom")
    return _to(torch.randint(int(high), shape, generator=generator, device=_torch_device(generator, device)), device)


def randperm(generator: RandomSource, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A random permutation of ``0 .. n-1`` (int64) on ``device``."""
    _check(generator)
    if isinstance(generator, KeyedRandom):
        return generator.bits((n,), device).argsort(stable=True)
    return _to(torch.randperm(n, generator=generator, device=_torch_device(generator, device)), device)
