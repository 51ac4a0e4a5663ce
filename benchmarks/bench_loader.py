"""How fast the trainer's data arrives: samples per second for each number of loader workers.

At GPU speed a training step of the course's methods takes a few milliseconds, so the data can
become the limit: one process prepares a few hundred augmented items per second. This script
times the trainer's own loader (:meth:`lesson_lib.training.Trainer` builds it from
``TrainConfig.num_workers``; with CUDA the batches go through pinned memory) over the datasets
each method declares (``Method.data_kind`` and ``data_options``: stereo pairs for Monodepth,
snippets for the video methods), augmentation on, for every worker count asked for, and prints
samples/s and the ratio to loading in the main process (0 workers) side by side.

    python benchmarks/bench_loader.py [--workers 0,1,2,4] [--batches 20] [--batch-size 8]
                                      [--sequences 24] [--frames 10] [--height 128] [--width 416]
                                      [--methods monodepth,sfmlearner] [--json PATH]

The worlds are rendered once (not cached) before timing; the first batch (the workers starting)
is left out of the timing; later epochs' loaders (and their workers' start) are timed, as the
trainer makes a fresh loader per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from lesson_lib import methods  # noqa: E402
from lesson_lib.course.env import device_name  # noqa: E402
from lesson_lib.training.datasets import datasets_from_worlds  # noqa: E402
from lesson_lib.data.synthetic import load_split  # noqa: E402
from lesson_lib.training import TrainConfig, Trainer  # noqa: E402


def samples_per_second(method_name: str, worlds: list, workers: int, batches: int, batch_size: int) -> float:
    """Items per second from the trainer's loader of epoch 0 with ``workers`` worker processes."""
    method = methods.build_method(method_name)
    if hasattr(method, "load_pretrained"):
        method.load_pretrained = False
    train, _ = datasets_from_worlds(method.data_kind, worlds, None, 0, **method.data_options())
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(steps=10**6, batch_size=batch_size, num_workers=workers, device="cpu", out_dir=tmp,
                          progress=False, tensorboard=False)
        trainer = Trainer(method, cfg, train)
        epochs = iter(range(10**6))
        it = iter(trainer.train_loader(next(epochs)))
        next(it)  # workers start
        t0, n = time.perf_counter(), 0
        while n < batches:  # a fresh loader per epoch, as the trainer does
            if next(it, None) is None:
                it = iter(trainer.train_loader(next(epochs)))
                continue
            n += 1
        dt = time.perf_counter() - t0
    return n * batch_size / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--sequences", type=int, default=24)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=416)
    ap.add_argument("--methods", default="monodepth,sfmlearner")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    names = [n for n in args.methods.split(",") if n]
    print(f"{device_name('cpu')}, {os.cpu_count()} CPUs, torch {torch.__version__}; {args.sequences} worlds x "
          f"{args.frames} frames at {args.height}x{args.width}, batch {args.batch_size}, {args.batches} batches timed")
    worlds = load_split("train", args.sequences, args.frames, height=args.height, width=args.width,
                        use_cache=False, progress=False)
    rows = []
    print(f"{'method':<12}" + "".join(f"{f'{w} workers':>14}" for w in counts) + "   (samples/s; ratio to 0 workers)")
    for name in names:
        rates = [samples_per_second(name, worlds, w, args.batches, args.batch_size) for w in counts]
        base = rates[counts.index(0)] if 0 in counts else rates[0]
        print(f"{name:<12}" + "".join(f"{r:>8.0f} ({r / base:.2f}x)" for r in rates))
        rows.append({"method": name, "workers": counts, "samples_per_s": rates})
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": device_name("cpu"), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
