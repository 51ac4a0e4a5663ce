"""Everything the course needs a GPU to check, in one command that fits a short GPU loan.

GPU time is lent rarely and briefly, so this script runs every CUDA-only check at once, keeps
going when one part fails, and leaves one summary (printed, and as JSON) to copy into
``benchmarks/RESULTS.md``. Parts, in order, each with its own time budget:

1. ``tests``: the tests that skip without CUDA (found in ``tests/`` by their
   ``skipif(not torch.cuda.is_available())`` decorator, an ``if not torch.cuda.is_available():
   pytest.skip(...)`` in their body, or a ``pytest.mark.cuda``), run by pytest in a subprocess.
   A test that still skips on the GPU machine counts as a failure.
2. ``data``: a few worlds of the synthetic training split rendered on the CPU (nothing is
   downloaded or cached).
3. ``benchmark``: the Monodepth training step (the :class:`~lesson_lib.training.Trainer`'s own
   step: forward at four scales, the loss, backward, Adam) at 128x416, batch 8, encoder width
   64 (ResNet-18) and 16, plain float32 against the fast path (mixed precision + channels-last):
   images/s and peak memory (``torch.cuda.max_memory_allocated``), after warm-up, timed between
   two ``torch.cuda.synchronize()``. Target (as ``bench_monodepth_train.py``): fast path >= 2x.
4. ``syncs``: host syncs of the fast path. The Monodepth loss exactly as the trainer calls it
   (autocast, ``value_checks(False)``) must call nothing that reads tensor data (counted with
   ``lesson_lib.training.syncs.HostSyncCounter``), and whole trainer steps (forward, backward, Adam) must make no
   synchronizing CUDA call (``torch.cuda.set_sync_debug_mode("warn")``).
5. ``steps``: every registered method's training step (default options, ``step_batch`` images at
   the data's size) through the trainer, three ways: eager (the fast path), ``compile``
   (``torch.compile`` in mode "reduce-overhead": CUDA graphs where safe) and ``cuda_graph`` (the
   whole step captured once and replayed): ms and steps/s after warm-up (and the compile's own
   seconds); for the eager step, the kernels per step and the GPU's busy share (kernel time /
   wall time, from ``torch.profiler``); and the largest batch (doubling from ``step_batch``)
   whose step's peak memory stays within ``memory_budget_gib``. A mode that fails is reported
   with its error; the part fails only when the eager step does. TrianFlow's depth stage is one
   more entry (``trianflow:depth``, RANSAC with a fixed 1,024 samples: the adaptive default
   reads its count on the host, which neither a compiled nor a captured step allows).
6. ``methods``: every registered method (:func:`lesson_lib.methods.available`) built with its
   defaults and trained a couple of hundred steps through the ``Trainer`` on the fast path:
   first in a short run that stops with a checkpoint, then resumed from it (the resume path
   runs on CUDA too); the loss must stay finite and fall, the final validation and a depth
   prediction from the saved checkpoint must be finite.

::

    python benchmarks/gpu_check.py                      # all parts; expected 2-4 minutes on an H200
    python benchmarks/gpu_check.py --quick              # everything shrunk: a first try in ~1 minute
    python benchmarks/gpu_check.py --out $OUT/gpu_check.json --parts tests,benchmark
    python benchmarks/gpu_check.py --budget methods=90  # a part's time budget in seconds

Without a CUDA GPU it prints ``no CUDA GPU: nothing to check`` and exits 0. ``--device cpu``
runs parts 2-5 on the CPU instead (the fast path through ``fast_path_on_cpu``), to test this
script itself; the numbers mean nothing there. Exit status: 0 when no part failed, 1 otherwise.
The default budgets add up to 8.7 minutes; each part stops at its budget (a part that runs over
is cut off and fails), so the whole script ends within 9 minutes (a device command may run 10).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout where lesson_lib is not installed
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from lesson_lib.course.env import device_name  # noqa: E402
from lesson_lib.training.syncs import HostSyncCounter  # noqa: E402

PARTS = ("tests", "data", "benchmark", "syncs", "steps", "methods")
TARGET_SPEEDUP = 2.0  # the fast path against float32, as bench_monodepth_train.py


@dataclasses.dataclass
class Settings:
    """Sizes and time budgets (seconds) of a run; :data:`QUICK` shrinks everything."""

    height: int = 128
    width: int = 416
    sequences: int = 2  # rendered worlds of the train split ...
    frames: int = 8  # ... and frames per world (2 x 8 = 16 stereo pairs, 8+ video snippets)
    bench_batch: int = 8
    bench_widths: tuple[int, ...] = (64, 16)
    bench_warmup: int = 5
    bench_steps: int = 30
    sync_width: int = 16
    sync_batch: int = 4
    sync_steps: int = 3
    train_steps: int = 200
    train_batch: int = 4
    step_batch: int = 8
    step_warmup: int = 3
    step_steps: int = 10
    step_modes: tuple[str, ...] = ("eager", "compile", "cuda_graph")
    memory_budget_gib: float = 16.0
    budgets: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"tests": 100, "data": 40, "benchmark": 60, "syncs": 30, "steps": 160, "methods": 130}
    )


QUICK = Settings(height=64, width=96, sequences=1, frames=6, bench_batch=2, bench_widths=(16,), bench_warmup=2,
                 bench_steps=4, sync_batch=2, sync_steps=2, train_steps=12, train_batch=2, step_batch=2, step_warmup=1,
                 step_steps=2, step_modes=("eager", "cuda_graph"), memory_budget_gib=1.0,
                 budgets={"tests": 90, "data": 30, "benchmark": 30, "syncs": 20, "steps": 60, "methods": 60})


# --------------------------------------------------------------------------------------------
# Time limits


class PartTimeout(Exception):
    """A part ran past its time budget."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`PartTimeout` in the enclosed code after ``seconds`` (SIGALRM; a no-op off
    the main thread or without SIGALRM)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def _raise(signum, frame):
        raise PartTimeout(f"cut off at its time budget of {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# --------------------------------------------------------------------------------------------
# 1. The CUDA-only tests


def _without_cuda(test: ast.AST) -> bool:
    """Whether a condition reads "no CUDA": ``not <...>.cuda.is_available()``."""
    return (isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
            and "cuda.is_available" in ast.unparse(test.operand))


def _skipif_without_cuda(node: ast.AST) -> bool:
    """``pytest.mark.skipif(not ...cuda.is_available(), ...)``."""
    return (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("skipif") and bool(node.args)
            and _without_cuda(node.args[0]))


def _skips_without_cuda(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A ``pytest.mark.cuda`` or ``skipif(not ...cuda.is_available(), ...)`` decorator, or an
    ``if not ...cuda.is_available():`` that skips in the body. A test that skips *with* CUDA
    (``skipif(torch.cuda.is_available())``: it checks the CPU-only behaviour) is not one."""
    for dec in fn.decorator_list:
        if "mark.cuda" in ast.unparse(dec) or _skipif_without_cuda(dec):
            return True
    for node in ast.walk(fn):
        if isinstance(node, ast.If) and _without_cuda(node.test):
            if any("skip" in ast.unparse(n) for n in node.body if isinstance(n, (ast.Expr, ast.Raise))):
                return True
    return False


def find_cuda_tests(tests_dir: str | os.PathLike = REPO / "tests") -> list[str]:
    """pytest node ids (``tests/test_x.py::test_y``, relative to the repository) of the tests
    that skip without CUDA: a ``skipif(not ...cuda.is_available(), ...)`` or ``pytest.mark.cuda``
    decorator, a ``pytestmark`` of that kind for the whole module, or an
    ``if not torch.cuda.is_available():`` that skips in the test's body."""
    tests_dir = Path(tests_dir)
    ids = []
    for path in sorted(tests_dir.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        module_wide = any(
            isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
            and ("mark.cuda" in ast.unparse(n.value) or any(_skipif_without_cuda(c) for c in ast.walk(n.value)))
            for n in tree.body
        )
        functions = (ast.FunctionDef, ast.AsyncFunctionDef)
        for node in tree.body:
            fns = [(node, "")] if isinstance(node, functions) else []
            if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                fns = [(n, node.name + "::") for n in node.body if isinstance(n, functions)]
            for fn, prefix in fns:
                if fn.name.startswith("test") and (module_wide or _skips_without_cuda(fn)):
                    ids.append(f"{rel.as_posix()}::{prefix}{fn.name}")
    return ids


def tests_verdict(count: dict[str, int], rc: int | None, *, cuda: bool, timeout_s: float = 0) -> list[str]:
    """What is wrong with a pytest run (empty: nothing). ``count``: outcomes ``passed``,
    ``failure``, ``error``, ``skipped``; ``rc``: pytest's exit status, None if it timed out.
    On a CUDA machine (``cuda``) a skip is wrong too: these tests skip only without CUDA."""
    problems = []
    if rc is None:
        problems.append(f"pytest timed out after {timeout_s:.0f} s")
    elif rc != 0 and not (count["failure"] or count["error"]):
        problems.append(f"pytest exited with status {rc}")  # e.g. 4: bad arguments, 5: nothing collected
    if count["failure"] or count["error"]:
        problems.append(f"{count['failure']} failed, {count['error']} errors")
    if cuda and count["skipped"]:
        problems.append(f"{count['skipped']} skipped on a CUDA machine")
    if not count["passed"] and (cuda or not count["skipped"]):
        problems.append("no test passed")
    return problems


def missing_imports(test_file: str | os.PathLike) -> list[str]:
    """The top-level packages a test file imports at module level that this Python lacks
    (e.g. kornia on a GPU image that does not ship it): pytest could not even collect it."""
    import importlib.util

    path = Path(test_file)
    if not path.is_absolute():
        path = REPO / path
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    local = {p.stem for p in path.parent.iterdir()}  # helper modules beside the tests
    return sorted(n for n in names if n not in local and importlib.util.find_spec(n) is None)


def run_cuda_tests(node_ids: list[str], *, timeout_s: float, cuda: bool = True) -> dict[str, Any]:
    """Run ``node_ids`` with pytest in a subprocess (from the repository root, the repository on
    ``PYTHONPATH``, the project's ``addopts`` left out: they need nbval). Counts come from a
    JUnit XML report. On a CUDA machine (``cuda``) a skipped test is a failure. Tests whose
    file imports a package this Python lacks are listed as ``not_run`` (with the package), not
    run, and not counted as failures: the machine lacks them, the code may be fine."""
    if not node_ids:
        return {"status": "FAIL", "error": "no test that skips without CUDA was found in tests/"}
    lacking = {f: missing_imports(f) for f in {n.split("::")[0] for n in node_ids}}
    not_run = {n: lacking[n.split("::")[0]] for n in node_ids if lacking[n.split("::")[0]]}
    runnable = [n for n in node_ids if n not in not_run]
    if not runnable:
        return {"status": "FAIL", "error": f"no test could run here (missing packages): {not_run}",
                "selected": node_ids, "not_run": not_run}
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-o", "addopts=",
               f"--junitxml={xml}", *runnable]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        try:
            run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
            rc, output = run.returncode, run.stdout + run.stderr
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or ""
            rc, output = None, (out.decode() if isinstance(out, bytes) else out) + f"\n[timed out after {timeout_s:.0f} s]"
        cases = []
        if xml.is_file():
            for case in ET.parse(xml).getroot().iter("testcase"):
                outcome, reason = "passed", ""
                for tag in ("failure", "error", "skipped"):
                    child = case.find(tag)
                    if child is not None:
                        outcome, reason = tag, (child.get("message") or "")[:300]
                        break
                cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                              "reason": reason, "seconds": float(case.get("time") or 0)})
    count = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failure", "error", "skipped")}
    problems = tests_verdict(count, rc, cuda=cuda, timeout_s=timeout_s)
    return {
        "status": "FAIL" if problems else "PASS",
        "error": "; ".join(problems) or None,
        "selected": node_ids,
        "not_run": not_run,
        "passed": count["passed"], "failed": count["failure"], "errors": count["error"], "skipped": count["skipped"],
        "cases": cases,
        "returncode": rc,
        "output_tail": output[-3000:],
    }


# --------------------------------------------------------------------------------------------
# 2. Data


def render_worlds(settings: Settings) -> list:
    """``settings.sequences`` worlds x ``settings.frames`` frames of the train split at
    ``height x width``, rendered on the CPU, not cached."""
    from lesson_lib.data.synthetic import load_split

    return load_split("train", settings.sequences, settings.frames, height=settings.height, width=settings.width,
                      use_cache=False, progress=False)


def stereo_batch(sequences: list, batch_size: int) -> dict[str, torch.Tensor]:
    """``{"left", "right": (batch_size, 3, H, W)}``: the first pairs of ``sequences`` (repeated
    if there are fewer)."""
    from lesson_lib.data.synthetic import StereoDataset

    ds = StereoDataset(sequences, augment=False)
    items = [ds[i % len(ds)] for i in range(batch_size)]
    return {k: torch.stack([it[k] for it in items]) for k in ("left", "right")}


class _FixedBatch(torch.utils.data.Dataset):
    def __init__(self, batch: dict[str, torch.Tensor]):
        self.batch = batch

    def __len__(self) -> int:
        return len(next(iter(self.batch.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.batch.items()}


def _monodepth_trainer(device: torch.device, batch: dict[str, torch.Tensor], encoder_width: int, fast: bool,
                       out_dir: str | os.PathLike):
    from lesson_lib.methods.monodepth import Monodepth, MonodepthConfig
    from lesson_lib.training import TrainConfig, Trainer

    cfg = TrainConfig(steps=10**6, batch_size=len(batch["left"]), device=device.type, amp=fast, channels_last=fast,
                      fast_path_on_cpu=fast and device.type == "cpu", out_dir=str(out_dir), progress=False,
                      tensorboard=False, overwrite=True)
    trainer = Trainer(Monodepth(MonodepthConfig(encoder_width=encoder_width)), cfg, _FixedBatch(batch))
    trainer.train_model.train()
    return trainer


# --------------------------------------------------------------------------------------------
# 3. The training-step benchmark


def bench_train_step(device: torch.device | str, batch: dict[str, torch.Tensor], *, encoder_width: int, fast: bool,
                     steps: int, warmup: int, budget_s: float | None = None) -> dict[str, Any]:
    """Images/s, ms per step and peak memory of Monodepth's training step through the trainer.

    ``fast``: the fast path (mixed precision + channels-last; on the CPU through
    ``fast_path_on_cpu``), else float32 with the default memory format. ``warmup`` steps (cuDNN
    picks its algorithms), then up to ``steps`` steps between two synchronisations. With
    ``budget_s`` both stop early when it runs out (the warm-up at half of it), after at least
    one step each; ``steps`` in the result says how many were timed. Peak memory:
    ``torch.cuda.max_memory_allocated`` over the timed steps (model, Adam state and
    activations), None on the CPU.
    """
    from lesson_lib.training import move_to

    device = torch.device(device)
    budget_s = math.inf if budget_s is None else budget_s
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _monodepth_trainer(device, batch, encoder_width, fast, tmp)
        on_device = move_to(batch, trainer.device, channels_last=trainer.channels_last)
        for _ in range(warmup):
            loss, _, _ = trainer.train_step(on_device)  # the trainer's own step: autocast, value checks off
            if time.perf_counter() - t_start > budget_s / 2:
                break
        _sync(trainer.device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        done, t0 = 0, time.perf_counter()
        while done < steps:
            loss, _, _ = trainer.train_step(on_device)
            done += 1
            if time.perf_counter() - t_start > budget_s:
                break
        _sync(trainer.device)
        dt = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(trainer.device) / 2**20 if device.type == "cuda" else None
        row = {
            "encoder_width": encoder_width,
            "mode": "fast" if fast else "fp32",
            "amp_dtype": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "float32",
            "channels_last": trainer.channels_last,
            "batch_size": len(batch["left"]),
            "size": list(batch["left"].shape[-2:]),
            "steps": done,
            "ms_per_step": 1000 * dt / done,
            "images_per_s": done * len(batch["left"]) / dt,
            "peak_mib": peak,
            "loss": float(loss),
        }
        del trainer, on_device, loss
    _free(device)
    return row


def benchmark_part(device: torch.device, sequences: list, settings: Settings, budget_s: float) -> dict[str, Any]:
    """Each encoder width of ``settings.bench_widths``, float32 then the fast path, sharing the
    budget: a row gets what is left divided by the rows still to run."""
    batch = stereo_batch(sequences, settings.bench_batch)
    rows, t0 = [], time.perf_counter()
    n = 2 * len(settings.bench_widths)
    for width in settings.bench_widths:
        for fast in (False, True):
            left = 0.85 * budget_s - (time.perf_counter() - t0)
            rows.append(bench_train_step(device, batch, encoder_width=width, fast=fast, steps=settings.bench_steps,
                                         warmup=settings.bench_warmup, budget_s=max(1.0, left / (n - len(rows)))))
    speedups = {}
    for width in settings.bench_widths:
        fp32, fast = (next(r for r in rows if r["encoder_width"] == width and r["mode"] == m) for m in ("fp32", "fast"))
        speedups[str(width)] = fast["images_per_s"] / fp32["images_per_s"]
    bad = [f"width {r['encoder_width']} {r['mode']}: loss {r['loss']}" for r in rows if not _finite(r["loss"])]
    short = [f"width {r['encoder_width']} {r['mode']}" for r in rows if r["steps"] < settings.bench_steps]
    return {
        "status": "FAIL" if bad else "PASS",
        "error": "; ".join(bad) or None,
        "cut_by_budget": short,
        "rows": rows,
        "speedup": speedups,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": {w: s >= TARGET_SPEEDUP for w, s in speedups.items()} if device.type == "cuda" else None,
    }


# --------------------------------------------------------------------------------------------
# 4. Host syncs

# The counter (lesson_lib.training.syncs.HostSyncCounter) records each tensor call that would make
# a GPU's host wait (bool(t), .item(), nonzero, boolean-mask indexing, a copy to the CPU, ...) with
# the innermost lesson_lib line that made it (lesson_lib/warping.py:179). Works on any device.


def _where(filename: str, lineno: int) -> str:
    path = Path(filename)
    return f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}:{lineno}"


def loss_host_syncs(trainer: Any, batch: Any) -> list[str]:
    """The host syncs of ``trainer.method.loss`` called as the trainer calls it (its autocast,
    value checks off, its step context) on ``batch`` (moved like the trainer moves it)."""
    from lesson_lib._validate import value_checks
    from lesson_lib.training import move_to

    batch = move_to(batch, trainer.device, channels_last=trainer.channels_last)
    with HostSyncCounter() as counter:
        with trainer.autocast(), value_checks(False):
            trainer.method.loss(trainer.train_model, batch, trainer.step_context())
    return counter.calls


def cuda_step_syncs(trainer: Any, batch: Any, steps: int) -> list[str]:
    """Synchronizing CUDA calls during ``steps`` whole trainer steps (forward, backward, Adam),
    reported by ``torch.cuda.set_sync_debug_mode("warn")`` as ``file:line: message``."""
    from lesson_lib.training import move_to

    batch = move_to(batch, trainer.device, channels_last=trainer.channels_last)
    for _ in range(2):  # warm-up: cuDNN's algorithm search, Adam's state
        trainer.train_step(batch)
    torch.cuda.synchronize(trainer.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                trainer.train_step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(trainer.device)
    return [f"{_where(w.filename, w.lineno)}: {str(w.message).splitlines()[0][:160]}"
            for w in caught if "synchroniz" in str(w.message).lower()
            # torch's own notice that the mode exists ("... is a prototype feature ...") is not a sync
            and "prototype feature" not in str(w.message)]


def syncs_part(device: torch.device, sequences: list, settings: Settings) -> dict[str, Any]:
    batch = stereo_batch(sequences, settings.sync_batch)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _monodepth_trainer(device, batch, settings.sync_width, True, tmp)
        in_loss = loss_host_syncs(trainer, batch)
        in_steps = cuda_step_syncs(trainer, batch, settings.sync_steps) if device.type == "cuda" else None
        del trainer
    _free(device)
    problems = []
    if in_loss:
        problems.append(f"{len(in_loss)} host syncs in the loss: {sorted(set(in_loss))[:5]}")
    if in_steps:
        problems.append(f"{len(in_steps)} synchronizing CUDA calls in {settings.sync_steps} steps: "
                        f"{sorted(set(in_steps))[:5]}")
    return {
        "status": "FAIL" if problems else "PASS",
        "error": "; ".join(problems) or None,
        "loss_host_syncs": len(in_loss),
        "loss_sync_calls": in_loss[:20],
        "step_syncs": None if in_steps is None else len(in_steps),
        "step_sync_calls": None if in_steps is None else in_steps[:20],
        "steps_checked": settings.sync_steps if in_steps is not None else 0,
    }


# --------------------------------------------------------------------------------------------
# 5. Every method's step: eager, compiled, captured; kernels, busy share, largest batch


def _method_batch(method: Any, sequences: list, batch_size: int) -> dict[str, Any]:
    train, _ = method_datasets(method, sequences)
    return torch.utils.data.default_collate([train[i % len(train)] for i in range(batch_size)])


# The steps part's entries beyond every registered method's default configuration: TrianFlow's
# depth stage, with the fixed-count RANSAC that a compiled or captured step needs.
EXTRA_STEP_ENTRIES = {"trianflow:depth": {"stage": "depth", "ransac_iters": 1024}}


def _entry_method(entry: str) -> Any:
    """The method of a steps-part entry: a registered name, or one of :data:`EXTRA_STEP_ENTRIES`."""
    import dataclasses

    from lesson_lib import methods

    name = entry.split(":")[0]
    method = methods.build_method(name)
    if entry in EXTRA_STEP_ENTRIES:
        method = methods.build_method(name, dataclasses.replace(method.config, **EXTRA_STEP_ENTRIES[entry]))
    return method


def _step_trainer(name: str, device: torch.device, batch: dict[str, Any], out_dir: Path, **options: Any) -> Any:
    from lesson_lib.training import TrainConfig, Trainer

    method = _entry_method(name)
    if hasattr(method, "load_pretrained"):
        method.load_pretrained = False  # a later stage's step without an earlier stage's file
    n = len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))
    cfg = TrainConfig(steps=10**6, batch_size=n, device=device.type, fast_path_on_cpu=device.type == "cpu",
                      out_dir=str(out_dir), progress=False, tensorboard=False, overwrite=True, **options)
    trainer = Trainer(method, cfg, _FixedBatch({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}))
    trainer.set_mode(True)
    return trainer


def time_steps(trainer: Any, batch: Any, warmup: int, steps: int) -> dict[str, Any]:
    """ms per step of ``trainer.train_step`` after ``warmup`` steps (the first one's seconds too:
    a compile or a capture happens there), between two synchronisations."""
    t0 = time.perf_counter()
    loss, _, _ = trainer.train_step(batch)
    _sync(trainer.device)
    first_s = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        trainer.train_step(batch)
    _sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _, _ = trainer.train_step(batch)
    _sync(trainer.device)
    dt = (time.perf_counter() - t0) / steps
    return {"ms_per_step": 1000 * dt, "steps_per_s": 1 / dt, "first_step_s": first_s, "loss": float(loss)}


def profile_steps(trainer: Any, batch: Any, steps: int) -> dict[str, Any]:
    """Kernels per step and the device's busy share (kernel time / wall time) over ``steps``
    steps, from ``torch.profiler``; on the CPU the ATen operations per step instead."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(trainer.device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.train_step(batch)
        _sync(trainer.device)
    wall_us = (time.perf_counter() - t0) * 1e6
    events = prof.events()
    if cuda:
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_us = sum(getattr(e, "device_time", None) or getattr(e, "cuda_time", 0) for e in kernels)
        return {"kernels_per_step": len(kernels) / steps, "kernel_ms_per_step": busy_us / 1000 / steps,
                "busy_share": busy_us / wall_us}
    ops = [e for e in events if e.name.startswith("aten::")]
    return {"aten_ops_per_step": len(ops) / steps, "kernels_per_step": None, "busy_share": None}


def largest_batch(name: str, device: torch.device, sequences: list, start: int, budget_gib: float,
                  out_dir: Path, deadline: float) -> dict[str, Any]:
    """The largest batch (``start`` doubled) whose eager step peaks within ``budget_gib`` GiB."""
    if device.type != "cuda":
        return {"largest_batch": None, "reason": "peak memory is measured on CUDA"}
    best, peak_of, b = None, {}, start
    while time.perf_counter() < deadline:
        trainer = on_device = None
        try:
            batch = _method_batch(_entry_method(name), sequences, b)
            trainer = _step_trainer(name, device, batch, out_dir)
            on_device = _to(trainer, batch)
            torch.cuda.reset_peak_memory_stats(device)
            for _ in range(2):
                trainer.train_step(on_device)
            _sync(device)
            peak = torch.cuda.max_memory_allocated(device) / 2**30
        except torch.OutOfMemoryError:
            peak = math.inf
        finally:
            trainer = on_device = None
            _free(device)
        peak_of[b] = peak
        if peak > budget_gib:
            break
        best, b = b, 2 * b
    return {"largest_batch": best, "budget_gib": budget_gib, "peak_gib_by_batch": peak_of}


def _to(trainer: Any, batch: Any) -> Any:
    from lesson_lib.training import move_to

    return move_to(batch, trainer.device, channels_last=trainer.channels_last)


def step_report(name: str, device: torch.device, sequences: list, settings: Settings, budget_s: float) -> dict[str, Any]:
    t_start = time.perf_counter()
    batch = _method_batch(_entry_method(name), sequences, settings.step_batch)
    report: dict[str, Any] = {"batch_size": settings.step_batch, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in settings.step_modes:
            if time.perf_counter() - t_start > 0.8 * budget_s:
                report["modes"][mode] = {"error": "not run: the method's share of the budget is spent"}
                continue
            options = {"eager": {}, "compile": {"compile": True}, "cuda_graph": {"cuda_graph": True}}[mode]
            if mode == "cuda_graph" and device.type != "cuda":
                report["modes"][mode] = {"error": "not run: CUDA graphs need CUDA"}
                continue
            try:
                trainer = _step_trainer(name, device, batch, Path(tmp) / mode, **options)
                on_device = _to(trainer, batch)
                row = time_steps(trainer, on_device, settings.step_warmup, settings.step_steps)
                if mode == "eager":
                    row.update(profile_steps(trainer, on_device, max(1, settings.step_steps // 2)))
                report["modes"][mode] = row
            except Exception as exc:  # reported per mode; only the eager step's failure fails the part
                report["modes"][mode] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            finally:
                trainer = on_device = None
                _free(device)
        deadline = t_start + budget_s
        report.update(largest_batch(name, device, sequences, settings.step_batch, settings.memory_budget_gib,
                                    Path(tmp) / "largest", deadline))
    eager = report["modes"].get("eager", {})
    for mode, row in report["modes"].items():
        if "ms_per_step" in row and "ms_per_step" in eager:
            row["vs_eager"] = eager["ms_per_step"] / row["ms_per_step"]
    report["status"] = "PASS" if "ms_per_step" in eager and _finite(eager["loss"]) else "FAIL"
    return report


def steps_part(device: torch.device, sequences: list, settings: Settings, budget_s: float) -> dict[str, Any]:
    from lesson_lib import methods

    names, results, t0 = [*methods.available(), *EXTRA_STEP_ENTRIES], {}, time.perf_counter()
    for i, name in enumerate(names):
        share = (0.95 * budget_s - (time.perf_counter() - t0)) / (len(names) - i)
        try:
            results[name] = step_report(name, device, sequences, settings, max(5.0, share))
        except PartTimeout:
            raise
        except Exception as exc:
            results[name] = {"status": "FAIL", "error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc()[-2000:]}
    failed = [n for n, r in results.items() if r["status"] != "PASS"]
    return {"status": "FAIL" if failed else "PASS", "error": f"eager step failed: {', '.join(failed)}" if failed else None,
            "methods": results}


# --------------------------------------------------------------------------------------------
# 6. A short training of every method


def method_datasets(method: Any, sequences: list) -> tuple[Any, Any]:
    """``(train, val)`` datasets of the rendered ``sequences`` as the method declares them (its
    ``data_kind`` and ``data_options``, :func:`lesson_lib.training.datasets.datasets_from_worlds`):
    the same worlds for training (augmented) and validation."""
    from lesson_lib.training.datasets import datasets_from_worlds

    return datasets_from_worlds(method.data_kind, sequences, sequences, 0, **method.data_options())


def _image_of(item: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    image = item["left"] if "left" in item else item["target"]
    baseline = item.get("baseline")
    return image[None], item["K"][None], None if baseline is None else torch.as_tensor(baseline).reshape(1)


def train_method(name: str, device: torch.device | str, sequences: list, *, steps: int, batch_size: int,
                 budget_s: float, out_dir: str | os.PathLike, lr: float | None = None) -> dict[str, Any]:
    """Train the registered method ``name`` (default options) for ``steps`` steps on the fast
    path: a first fifth stopping with a checkpoint, then resumed from it to the end (or as far
    as ``budget_s`` allows: the rest is cut at a step that fits, the schedule unchanged). Then
    the host syncs of its loss (as the trainer calls it), its final validation, and a depth
    prediction from its checkpoint through :func:`lesson_lib.methods.load_model`."""
    from lesson_lib import methods
    from lesson_lib.training import TrainConfig, Trainer, read_log

    device = torch.device(device)
    t0 = time.perf_counter()
    method = methods.build_method(name)
    train, val = method_datasets(method, sequences)
    out_dir = Path(out_dir)
    extra = {} if lr is None else {"lr": lr}

    def config(**kw: Any) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=batch_size, device=device.type, seed=0, log_every=1,
                           checkpoint_every=0, progress=False, tensorboard=False, out_dir=str(out_dir),
                           fast_path_on_cpu=device.type == "cpu", **extra, **kw)

    first = max(1, steps // 5)
    trainer = Trainer(method, config(stop_at_step=first, overwrite=True), train, val)
    trainer.fit()
    amp = str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "float32"
    channels_last = trainer.channels_last
    per_step = (time.perf_counter() - t0) / first  # includes the start: an overestimate
    room = 0.85 * budget_s - (time.perf_counter() - t0)
    stop = min(steps, first + max(0, int(room / per_step)))
    if stop > first:
        trainer = Trainer(methods.build_method(name), config(resume=True, stop_at_step=0 if stop == steps else stop),
                          train, val)
        trainer.fit()
    seconds = time.perf_counter() - t0

    log = read_log(out_dir / "log.csv")
    losses = log.get("loss", [])
    k = max(1, min(5, len(losses) // 4))
    loss_first = statistics.fmean(losses[:k]) if losses else math.nan
    loss_last = statistics.fmean(losses[-k:]) if losses else math.nan
    val_log = read_log(out_dir / "val.csv") if (out_dir / "val.csv").is_file() else {}
    val_metrics = {m: v[-1] for m, v in val_log.items() if m not in ("step", "epoch", "time")}

    batch = torch.utils.data.default_collate([train[i % len(train)] for i in range(batch_size)])
    syncs = loss_host_syncs(trainer, batch)
    del trainer
    prediction = None
    model, loaded, _ = methods.load_model(out_dir / "latest.pt", device)
    item = (val or train)[0]
    if "depth" in loaded.predicts:
        image, K, baseline = _image_of(item)
        depth = loaded.predict_depth(model, image.to(device), K.to(device),
                                     None if baseline is None else baseline.to(device))
        prediction = {"shape": list(depth.shape), "finite": bool(torch.isfinite(depth).all()),
                      "median": float(depth.median()), "what": "depth"}
    elif "flow" in loaded.predicts:
        flow = loaded.predict_flow(model, item["target"][None].to(device), item["sources"][None, -1].to(device))
        prediction = {"shape": list(flow.shape), "finite": bool(torch.isfinite(flow).all()),
                      "median": float(flow.norm(dim=1).median()), "what": "flow length"}
    del model

    problems = []
    if not all(_finite(v) for v in losses):
        problems.append("a loss is not finite")
    if len(losses) != stop:
        problems.append(f"{len(losses)} logged steps, expected {stop}")
    if not loss_last < loss_first:
        problems.append(f"the loss did not fall ({loss_first:.4g} -> {loss_last:.4g})")
    if not all(_finite(v) for v in val_metrics.values()):
        problems.append(f"validation not finite: {val_metrics}")
    if prediction is not None and not prediction["finite"]:
        problems.append("the prediction (depth, or flow for a flow method) is not finite")
    return {
        "status": "FAIL" if problems else "PASS",
        "error": "; ".join(problems) or None,
        "data_kind": method.data_kind,
        "amp_dtype": amp,
        "channels_last": channels_last,
        "steps": stop,
        "steps_asked": steps,
        "resumed_at": first,
        "cut_by_budget": stop < steps,
        "batch_size": batch_size,
        "seconds": seconds,
        "steps_per_s": stop / seconds,
        "loss_first": loss_first,
        "loss_last": loss_last,
        "val": val_metrics,
        "prediction": prediction,
        "loss_host_syncs": len(syncs),
        "loss_sync_calls": sorted(set(syncs))[:10],
    }


def methods_part(device: torch.device, sequences: list, settings: Settings, budget_s: float,
                 names: tuple[str, ...] | None = None) -> dict[str, Any]:
    from lesson_lib import methods

    names = names or methods.available()
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(names):
            share = (0.95 * budget_s - (time.perf_counter() - t0)) / (len(names) - i)
            try:
                results[name] = train_method(name, device, sequences, steps=settings.train_steps,
                                             batch_size=settings.train_batch, budget_s=max(5.0, share),
                                             out_dir=Path(tmp) / name)
            except PartTimeout:
                raise
            except Exception as exc:
                results[name] = {"status": "FAIL", "error": f"{type(exc).__name__}: {exc}",
                                 "traceback": traceback.format_exc()[-2000:]}
            _free(device)
    failed = [n for n, r in results.items() if r["status"] != "PASS"]
    return {
        "status": "FAIL" if failed or not results else "PASS",
        "error": f"failed: {', '.join(failed)}" if failed else (None if results else "no registered method"),
        "methods": results,
    }


# --------------------------------------------------------------------------------------------
# The summary


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        try:  # a failure here must not stop the checks
            props = torch.cuda.get_device_properties(device)
            env.update({
                "cudnn": torch.backends.cudnn.version(),
                "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
                "bf16_supported": torch.cuda.is_bf16_supported(),
            })
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # newer torch deprecates allow_tf32 for fp32_precision
                env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
                env["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        except Exception as exc:
            env["environment_error"] = f"{type(exc).__name__}: {exc}"
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except Exception:
        env["git_commit"] = None
    return env


def _fmt(x: Any, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec) if isinstance(x, (int, float)) else str(x)


def describe(name: str, part: dict[str, Any]) -> list[str]:
    """A few readable lines about one part's result."""
    lines = []
    if part.get("error"):
        lines.append(f"error: {part['error']}")
    if name == "tests":
        if "cases" in part:
            lines.append(f"{part['passed']} passed, {part['failed']} failed, {part['errors']} errors, "
                         f"{part['skipped']} skipped")
            lines += [f"{c['outcome']:>8}  {c['test']}  {c['seconds']:.1f} s {c['reason']}".rstrip()
                      for c in part["cases"]]
        lines += [f"{'not run':>8}  {t}  (this Python lacks {', '.join(pkgs)})"
                  for t, pkgs in (part.get("not_run") or {}).items()]
    elif name == "data" and "pairs" in part:
        lines.append(f"{part['sequences']} worlds x {part['frames']} frames at {part['height']}x{part['width']}")
    elif name == "benchmark" and "rows" in part:
        mem = "peak MiB" if any(r["peak_mib"] is not None for r in part["rows"]) else "(peak memory: CUDA only)"
        lines.append(f"{'width':>5} {'mode':<5} {'dtype':<9} {'CL':<3} {'img/s':>8} {'ms/step':>8} {'steps':>5} {mem:>9}")
        for r in part["rows"]:
            cl = "on" if r["channels_last"] else "off"
            lines.append(f"{r['encoder_width']:>5} {r['mode']:<5} {r['amp_dtype']:<9} {cl:<3} {r['images_per_s']:>8.1f} "
                         f"{r['ms_per_step']:>8.1f} {r['steps']:>5} {_fmt(r['peak_mib'], '.0f'):>9}")
        if part.get("cut_by_budget"):
            lines.append(f"fewer timed steps than asked (budget): {', '.join(part['cut_by_budget'])}")
        for w, s in part["speedup"].items():
            met = part["target_met"]
            verdict = "" if met is None else f" (target {TARGET_SPEEDUP:g}x: {'MET' if met[w] else 'NOT MET'})"
            lines.append(f"width {w}: fast path {s:.2f}x float32{verdict}")
    elif name == "syncs" and "loss_host_syncs" in part:
        lines.append(f"host syncs in the Monodepth loss as the trainer calls it: {part['loss_host_syncs']}")
        if part["step_syncs"] is not None:
            lines.append(f"synchronizing CUDA calls in {part['steps_checked']} whole trainer steps: {part['step_syncs']}")
        calls = sorted(set((part["loss_sync_calls"] or []) + (part["step_sync_calls"] or [])))
        lines += [f"  {c}" for c in calls[:10]]
    elif name == "steps" and "methods" in part:
        for m, r in part["methods"].items():
            if "modes" not in r:
                lines.append(f"{m}: {r['status']} {r.get('error')}")
                continue
            for mode, row in r["modes"].items():
                if "ms_per_step" not in row:
                    lines.append(f"{m} {mode}: {row.get('error')}")
                    continue
                extra = ""
                if row.get("kernels_per_step") is not None:
                    extra = f", {row['kernels_per_step']:.0f} kernels/step, GPU busy {100 * row['busy_share']:.0f} %"
                elif row.get("aten_ops_per_step") is not None:
                    extra = f", {row['aten_ops_per_step']:.0f} ATen ops/step"
                lines.append(f"{m} {mode} (batch {r['batch_size']}): {row['ms_per_step']:.1f} ms/step "
                             f"({row['steps_per_s']:.1f} steps/s, {row.get('vs_eager', 1.0):.2f}x eager), first step "
                             f"{row['first_step_s']:.1f} s{extra}")
            if r.get("largest_batch") is not None:
                lines.append(f"{m}: largest batch within {r['budget_gib']:g} GiB: {r['largest_batch']}")
    elif name == "methods" and "methods" in part:
        for m, r in part["methods"].items():
            if "loss_first" not in r:
                lines.append(f"{m}: {r['status']} {r.get('error')}")
                continue
            val = ", ".join(f"{k} {_fmt(v)}" for k, v in list(r["val"].items())[:3])
            lines.append(f"{m} ({r['data_kind']}, {r['amp_dtype']}, CL {'on' if r['channels_last'] else 'off'}): "
                         f"{r['status']}, {r['steps']} steps (resumed at {r['resumed_at']}"
                         f"{', cut by the budget' if r['cut_by_budget'] else ''}) in {r['seconds']:.1f} s, "
                         f"loss {r['loss_first']:.4g} -> {r['loss_last']:.4g}, loss host syncs {r['loss_host_syncs']}"
                         + (f", val {val}" if val else "")
                         + (f", {r['prediction'].get('what', 'depth')} median {r['prediction']['median']:.3g}" if r["prediction"] else ""))
    return lines


def summary_text(summary: dict[str, Any]) -> str:
    env = summary["environment"]
    head = f"gpu_check on {env['device']} | torch {env['torch']} | CUDA {env['cuda']}"
    if "cudnn" in env:
        head += (f" | cuDNN {env['cudnn']} | {env['gpu_memory_gib']} GiB"
                 f" | TF32 matmul {env.get('tf32_matmul')}, cuDNN {env.get('tf32_cudnn')}")
    lines = ["", "=" * 100, head, f"python {env['python']} | {env['date']} | commit {env['git_commit']}"
             + (" | --quick" if summary["quick"] else ""), "-" * 100]
    for name, part in summary["parts"].items():
        lines.append(f"[{part['status']}] {name} ({part.get('seconds', 0):.1f} s)")
        lines += [f"    {line}" for line in describe(name, part)]
    lines += ["-" * 100, f"overall: {summary['status']} in {summary['seconds']:.0f} s"
              + (f"; JSON: {summary['out']}" if summary.get("out") else ""), "=" * 100]
    return "\n".join(lines)


def _write(summary: dict[str, Any], out: Path | None) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2, default=str))


def run_part(name: str, fn: Callable[[float], dict[str, Any]], budget_s: float, summary: dict[str, Any],
             out: Path | None) -> dict[str, Any]:
    """Run one part under its time budget; an exception becomes a FAIL with its traceback."""
    print(f"[{name}] running (budget {budget_s:.0f} s)...", flush=True)
    t0 = time.perf_counter()
    try:
        with time_limit(budget_s):
            result = fn(budget_s)
    except Exception as exc:  # one part's failure must not hide the others
        result = {"status": "FAIL", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-3000:]}
    result["seconds"] = time.perf_counter() - t0
    result["budget_s"] = budget_s
    summary["parts"][name] = result
    _write(summary, out)
    error = f": {result['error']}" if result.get("error") else ""
    print(f"[{name}] {result['status']} in {result['seconds']:.1f} s{error}", flush=True)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_check.json", help="where the JSON summary goes (default: gpu_check.json)")
    ap.add_argument("--quick", action="store_true", help="shrink everything (64x96 images, a few steps)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)} "
                    "(benchmark, syncs and methods need data)")
    ap.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS",
                    help="a part's time budget (repeatable)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cuda (default); cpu runs the parts on the CPU to test this script")
    args = ap.parse_args(argv)
    args.parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    for item in args.budget:
        part, _, value = item.partition("=")
        if part not in PARTS:
            ap.error(f"--budget {item}: unknown part {part!r}")
        try:
            if float(value) <= 0:
                raise ValueError
        except ValueError:
            ap.error(f"--budget {item}: expected PART=SECONDS with SECONDS > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA GPU: nothing to check (this machine: {device_name('cpu')}; torch {torch.__version__})")
        return 0
    settings = dataclasses.replace(QUICK if args.quick else Settings())
    settings.budgets = dict(settings.budgets)
    for item in args.budget:
        part, _, value = item.partition("=")
        settings.budgets[part] = float(value)
    out = Path(args.out) if args.out else None
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"environment": environment(device), "quick": args.quick, "device": device.type,
                               "settings": dataclasses.asdict(settings), "parts": {}, "status": "RUNNING",
                               "out": str(out) if out else None}
    env = summary["environment"]
    print(f"gpu_check on {env['device']} (torch {env['torch']}, CUDA {env['cuda']}); parts: {', '.join(args.parts)}",
          flush=True)
    torch.manual_seed(0)
    data: dict[str, Any] = {}

    def tests(budget: float) -> dict[str, Any]:
        if device.type != "cuda":
            return {"status": "SKIP", "error": None, "reason": "on the CPU the CUDA tests only skip"}
        return run_cuda_tests(find_cuda_tests(), timeout_s=budget - 5, cuda=True)

    def render(budget: float) -> dict[str, Any]:
        data["sequences"] = render_worlds(settings)
        return {"status": "PASS", "error": None, "sequences": settings.sequences, "frames": settings.frames,
                "height": settings.height, "width": settings.width,
                "pairs": sum(len(s) for s in data["sequences"])}

    def needs_data(fn: Callable[..., dict[str, Any]]) -> Callable[[float], dict[str, Any]]:
        def run(budget: float) -> dict[str, Any]:
            if "sequences" not in data:
                return {"status": "FAIL", "error": "no data (the data part failed or was not selected)"}
            return fn(budget)
        return run

    parts = {
        "tests": tests,
        "data": render,
        "benchmark": needs_data(lambda b: benchmark_part(device, data["sequences"], settings, b)),
        "syncs": needs_data(lambda b: syncs_part(device, data["sequences"], settings)),
        "steps": needs_data(lambda b: steps_part(device, data["sequences"], settings, b)),
        "methods": needs_data(lambda b: methods_part(device, data["sequences"], settings, b)),
    }
    selected = list(args.parts)
    if any(p in selected for p in ("benchmark", "syncs", "steps", "methods")) and "data" not in selected:
        selected.append("data")
    for name in PARTS:
        if name in selected:
            run_part(name, parts[name], settings.budgets[name], summary, out)
    failed = [n for n, p in summary["parts"].items() if p["status"] == "FAIL"]
    summary["status"] = "FAIL" if failed else "PASS"
    summary["failed_parts"] = failed
    summary["seconds"] = time.perf_counter() - t0
    _write(summary, out)
    try:
        text = summary_text(summary)
    except Exception:  # the numbers matter more than their layout
        text = json.dumps(summary, indent=2, default=str) + "\n" + traceback.format_exc()
    print(text, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
