"""lesson_lib.keyed_random: random numbers as a pure function of a key tensor (what a compiled
or CUDA-graph-captured step draws), and the fixed-count RANSAC built on it. Known answers (the
hash against a plain-Python lowbias32), statistics with wide margins (never flaky: fixed keys),
distinctness by construction, the samplers against the wrong samplers they could be, and a
fixed-count RANSAC that reads nothing on the host yet finds F on a scene with outliers."""

import math

import pytest
import torch

from lesson_lib import keyed_random as kr
from lesson_lib import twoview as tv
from lesson_lib._validate import value_checks
from lesson_lib.keyed_random import KeyedRandom
from lesson_lib.training import StepContext, step_generator
from lesson_lib.training.opcount import OpCounter
from lesson_lib.twoview.ransac import _sample

M32 = 0xFFFFFFFF


def _lowbias32(x: int) -> int:
    """Wellons' lowbias32 in plain Python integers (the reference)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def test_hash_equals_plain_python_lowbias32_on_the_whole_range():
    values = [0, 1, 2, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, M32]
    values += torch.randint(0, 1 << 32, (500,), generator=torch.Generator().manual_seed(0), dtype=torch.int64).tolist()
    got = kr._hash32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [_lowbias32(v) for v in values]
    assert _lowbias32(1) != 1 and len(set(got)) == len(set(values))  # a bijection on 32 bits


def test_the_same_key_repeats_and_every_draw_and_key_differs():
    a, b = KeyedRandom.from_seed(12345), KeyedRandom.from_seed(12345)
    first, second = a.bits((1000,)), a.bits((1000,))
    assert torch.equal(first, b.bits((1000,))) and torch.equal(second, b.bits((1000,)))
    assert (first != second).float().mean() > 0.99  # the counter moves the stream
    other = KeyedRandom.from_seed(12346).bits((1000,))
    assert (first != other).float().mean() > 0.99
    high = KeyedRandom.from_seed(12345 + (1 << 40)).bits((1000,))  # keys that differ in the high word only
    assert (first != high).float().mean() > 0.99
    assert first.dtype == torch.int64 and int(first.min()) >= 0 and int(first.max()) <= M32


def test_uniform_numbers_and_bounded_integers_look_uniform():
    r = KeyedRandom.from_seed(7)
    u = kr.rand(r, (200_000,))
    assert u.dtype == torch.float32 and float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    counts = torch.bincount(kr.randint(r, 10, (200_000,)), minlength=10).double()
    chi2 = float(((counts - 20_000) ** 2 / 20_000).sum())
    assert counts.numel() == 10 and chi2 < 40.0  # 9 degrees of freedom: p < 1e-5 above 40
    # neighbouring indices are not correlated (a plain counter would be)
    x = u.double() - 0.5
    assert abs(float((x[1:] * x[:-1]).mean() / x.var())) < 0.01
    bounds = torch.tensor([1, 2, 3, 1000])
    draws = kr.randint(r, bounds, (5000, 4))
    assert bool((draws >= 0).all() and (draws < bounds).all()) and int(draws[:, 3].max()) > 990
    assert bool((draws[:, 0] == 0).all())


def test_permutations_are_permutations_and_torch_generators_are_torch_itself():
    r = KeyedRandom.from_seed(3)
    p = kr.randperm(r, 6000)
    assert torch.equal(p.sort().values, torch.arange(6000)) and not torch.equal(p, torch.arange(6000))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(kr.randperm(g1, 50), torch.randperm(50, generator=g2))
    assert torch.equal(kr.rand(g1, (3, 4)), torch.rand(3, 4, generator=g2))
    assert torch.equal(kr.randint(g1, 9, (7,)), torch.randint(9, (7,), generator=g2))


def test_bad_keys_sources_and_bounds_get_clear_errors():
    with pytest.raises(TypeError, match="0-d int64"):
        KeyedRandom(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="0-d int64"):
        KeyedRandom(torch.tensor(1.5))
    with pytest.raises(TypeError, match="0-d int64"):
        KeyedRandom(3)
    with pytest.raises(TypeError, match="torch.Generator, a KeyedRandom or None"):
        kr.rand(42, (3,))
    with pytest.raises(ValueError, match="high"):
        kr.randint(KeyedRandom.from_seed(0), 0, (3,))
    with pytest.raises(TypeError, match="KeyedRandom"):
        kr.randint(torch.Generator(), torch.tensor([3]), (3,))


def test_the_step_context_key_follows_the_step_seed():
    a = StepContext(step=0, generator=step_generator(1, 5), device=torch.device("cpu"))
    b = StepContext(step=0, generator=step_generator(1, 5), device=torch.device("cpu"))
    c = StepContext(step=0, generator=step_generator(1, 6), device=torch.device("cpu"))
    assert a.key.dtype == torch.int64 and a.key.ndim == 0 and int(a.key) == a.generator.initial_seed() % kr.KEY_LIMIT
    assert torch.equal(a.random().bits((100,)), b.random().bits((100,)))
    assert not torch.equal(a.random().bits((100,)), c.random().bits((100,)))


# -- the sync-free distinct sampler and the fixed-count RANSAC --------------------------------


@pytest.mark.parametrize("source", ["keyed", "torch"])
@pytest.mark.parametrize("n", [9, 65, 100, 6000])
def test_sync_free_samples_are_distinct_and_cover_every_index_evenly(source, n):
    gen = KeyedRandom.from_seed(n) if source == "keyed" else torch.Generator().manual_seed(n)
    idx = _sample(4, 2000, n, gen, torch.device("cpu"), sync_free=True)
    assert idx.shape == (4, 2000, 8) and idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < n
    s = idx.sort(-1).values
    assert not bool((s[..., 1:] == s[..., :-1]).any())  # distinct within every sample
    if n <= 100:
        counts = torch.bincount(idx.flatten(), minlength=n).double()
        expected = idx.numel() / n
        assert float(((counts - expected).abs() / expected).max()) < 0.2
        # each position is uniform too (the shift must not favour small indices late in a sample)
        last = torch.bincount(idx[..., -1].flatten(), minlength=n).double()
        assert float(((last - 8000 / n).abs() / (8000 / n)).max()) < 0.5


def test_the_samplers_wrong_twins_fail_the_same_checks():
    """Without the shift, draws repeat; shifting past unsorted earlier choices (or with > instead
    of >=) also repeats: the distinctness check above catches each."""
    gen = KeyedRandom.from_seed(1)
    n, bounds = 65, 65 - torch.arange(8)
    r = (kr.rand(gen, (4, 2000, 8)) * bounds).long().minimum(bounds - 1)

    def build(strict: bool, sort: bool, shift: bool = True):
        chosen = [r[..., 0]]
        for j in range(1, 8):
            v = r[..., j]
            if shift:
                taken = torch.stack(chosen, -1)
                for t in (taken.sort(-1).values if sort else taken).unbind(-1):
                    v = v + ((v > t) if strict else (v >= t)).long()
            chosen.append(v)
        return torch.stack(chosen, -1)

    def repeats(idx):
        s = idx.sort(-1).values
        return bool((s[..., 1:] == s[..., :-1]).any())

    assert not repeats(build(strict=False, sort=True))
    assert repeats(build(strict=False, sort=True, shift=False))
    assert repeats(build(strict=True, sort=True))
    assert repeats(build(strict=False, sort=False))


def _scene_with_outliers(n=1500, outliers=0.3, noise=0.3, seed=0):
    from lesson_lib import pose

    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    R = pose.axis_angle_to_matrix(torch.tensor([[0.02, -0.05, 0.01]], dtype=torch.float64))[0]
    t = torch.tensor([0.3, -0.05, 1.0], dtype=torch.float64)
    X = torch.stack([torch.rand(4 * n, generator=g, dtype=torch.float64) * 8 - 4,
                     torch.rand(4 * n, generator=g, dtype=torch.float64) * 6 - 3,
                     torch.rand(4 * n, generator=g, dtype=torch.float64) * 10 + 4], -1)
    X = X[tv.in_front(R, t, X)][:n]
    p1, p2 = tv.project_pair(X, K, K, R, t)
    p1 = p1 + noise * torch.randn(p1.shape, generator=g, dtype=torch.float64)
    p2 = p2 + noise * torch.randn(p2.shape, generator=g, dtype=torch.float64)
    out = torch.rand(n, generator=g) < outliers
    p2[out] = torch.rand(int(out.sum()), 2, generator=g, dtype=torch.float64) * torch.tensor([640.0, 480.0],
                                                                                                dtype=torch.float64)
    return p1, p2, out, K, R, t


@pytest.mark.parametrize("source", ["keyed", "torch"])
def test_fixed_count_ransac_finds_F_and_reads_nothing_on_the_host(source):
    p1, p2, out, K, R, t = _scene_with_outliers()
    gen = (lambda: KeyedRandom.from_seed(9)) if source == "keyed" else (lambda: torch.Generator().manual_seed(9))
    source_ = gen()  # made outside the count: a key from a Python number is copied in once per step, by the trainer
    with value_checks(False), OpCounter() as ops:
        F, inl, info = tv.ransac_fundamental(p1.float(), p2.float(), threshold=1.0, generator=source_, iterations=600,
                                             return_info=True)
    assert ops.syncs == [] and ops.host_copies == []
    assert int(info.hypotheses) == 600 and float(info.required) == 600.0 and math.isfinite(float(info.formula))
    assert float((inl & ~out).sum() / (~out).sum()) > 0.9 and float((inl & out).sum() / out.sum()) < 0.02
    R_e, t_e, _ = tv.recover_pose(tv.essential_from_fundamental(F.double(), K, K), p1, p2, K, K, mask=inl)
    rot, tdir = tv.pose_error(R_e, t_e, R, t)
    assert float(rot) < 0.5 and float(tdir) < 3.0, (rot, tdir)
    F2, inl2 = tv.ransac_fundamental(p1.float(), p2.float(), threshold=1.0, generator=gen(), iterations=600)
    assert torch.equal(F, F2) and torch.equal(inl, inl2)  # the same source, the same answer
    # the adaptive estimate reads its count on the host: the counter sees it
    source_ = gen()
    with value_checks(False), OpCounter() as adaptive:
        tv.ransac_fundamental(p1.float(), p2.float(), threshold=1.0, generator=source_)
    assert adaptive.syncs


def test_fixed_count_ransac_batches_like_single_calls_and_rejects_bad_counts():
    p1, p2, *_ = _scene_with_outliers(n=400, seed=1)
    q1, q2, *_ = _scene_with_outliers(n=400, seed=2)
    F, _ = tv.ransac_fundamental(torch.stack([p1, q1]).float(), torch.stack([p2, q2]).float(),
                                 generator=KeyedRandom.from_seed(0), iterations=300)
    for i, (a, b) in enumerate(((p1, p2), (q1, q2))):
        Fi, _ = tv.ransac_fundamental(a.float(), b.float(), generator=torch.Generator().manual_seed(i), iterations=300)
        x = (F[i] / F[i].norm()).double()
        y = (Fi / Fi.norm()).double()
        assert min(float((x - y).abs().max()), float((x + y).abs().max())) < 0.05
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="iterations"):
            tv.ransac_fundamental(p1, p2, iterations=bad)
