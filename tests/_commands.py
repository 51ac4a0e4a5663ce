"""Running the course's command line as a real subprocess, for the tests (shared by the command,
Monodepth, SfMLearner and TrianFlow tests)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_command(*args: object, cache: str | os.PathLike | None = None, timeout: float = 300
                ) -> subprocess.CompletedProcess:
    """``python -m lesson_lib ARGS...`` from the repository root, output captured as text, with one
    thread (``OMP_NUM_THREADS=1``, as the tests' in-process comparisons use) and, when ``cache``
    is given, the rendered worlds cached there (``LESSON_LIB_CACHE``)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if cache is not None:
        env["LESSON_LIB_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "lesson_lib", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Compute in this process with one thread, as the commands do (OMP_NUM_THREADS=1), so that a
    pixel's error cannot land on the other side of a threshold through a different summation order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
