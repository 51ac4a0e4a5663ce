"""Training throughput and peak memory of the Monodepth step (chapter 06).

One optimizer step of Monodepth (network forward at four scales, the full loss, backward,
Adam) on a batch of stereo pairs of the synthetic world, timed three ways side by side:

- ``plain loop``: a hand-written float32 loop (``model(left)``, ``monodepth_loss``,
  ``loss.backward()``, ``opt.step()``), the reference;
- ``trainer fp32``: the course's :class:`~lesson_lib.training.Trainer` step with
  ``--no-amp --no-channels-last``;
- ``trainer fast``: the Trainer's fast path, mixed precision (bf16 where supported, else fp16
  with a GradScaler) and channels-last memory. Both are CUDA-only: on the CPU the trainer
  trains in float32 and this row equals ``trainer fp32``.

Each row runs in its own process, so the peak memory is that row's alone: on CUDA
``torch.cuda.max_memory_allocated``, on the CPU the process's peak resident set (which
includes the Python interpreter and torch itself, about 0.4 GB).

    python benchmarks/bench_monodepth_train.py [--device cpu|cuda] [--batch-size 8]
        [--height 128] [--width 416] [--encoder-width 64] [--steps 10] [--warmup 3] [--json PATH]

Prints images per second, ms per step, peak memory and the speed-up over the plain loop.
Target on a GPU: the fast path at least 2x the plain loop.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from lesson_lib.course.env import device_name

MODES = ("plain", "trainer_fp32", "trainer_fast")
LABELS = {"plain": "plain loop (fp32)", "trainer_fp32": "trainer fp32", "trainer_fast": "trainer fast (AMP + CL)"}
TARGET = 2.0


def _batch(args) -> dict[str, torch.Tensor]:
    from lesson_lib.data.synthetic import StereoDataset, load_split

    n_seq = max(1, (args.batch_size + 3) // 4)
    ds = StereoDataset(load_split("val", n_seq, 4, height=args.height, width=args.width, progress=False), augment=False)
    items = [ds[i % len(ds)] for i in range(args.batch_size)]
    return {k: torch.stack([it[k] for it in items]) for k in ("left", "right")}


def child(args) -> dict:
    """Time one mode in this process; returns its numbers."""
    from lesson_lib.methods.monodepth import Monodepth, MonodepthConfig, monodepth_loss
    from lesson_lib.training import TrainConfig, Trainer

    torch.manual_seed(0)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    method = Monodepth(MonodepthConfig(encoder_width=args.encoder_width))
    batch = _batch(args)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    if args.mode == "plain":
        model = method.build_model().to(dev).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        left, right = batch["left"].to(dev), batch["right"].to(dev)

        def step():
            opt.zero_grad(set_to_none=True)
            loss, _ = monodepth_loss(model(left), left, right, method.config)
            loss.backward()
            opt.step()
            return loss
    else:
        fast = args.mode == "trainer_fast"

        class _One(torch.utils.data.Dataset):
            def __len__(self):
                return args.batch_size

            def __getitem__(self, i):
                return {k: v[i] for k, v in batch.items()}

        cfg = TrainConfig(steps=10**6, batch_size=args.batch_size, device=dev.type, amp=fast, channels_last=fast,
                          out_dir=str(Path(args.tmp) / args.mode), progress=False, tensorboard=False, overwrite=True)
        trainer = Trainer(method, cfg, _One())
        trainer.train_model.train()

        def step():
            loss, _, _ = trainer.train_step(batch)  # the trainer's own step: autocast, scaler, channels-last
            return loss

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        loss = step()
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    if not torch.isfinite(loss.detach()).all():
        raise RuntimeError(f"{args.mode}: the loss is not finite")
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    med = statistics.median(times)
    return {"mode": args.mode, "ms_per_step": 1000 * med, "images_per_s": args.batch_size / med,
            "peak_mib": peak, "loss": float(loss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=416)
    ap.add_argument("--encoder-width", type=int, default=64, help="64: ResNet-18 (the paper's size); 16: the CPU model")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--mode", choices=MODES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.mode is not None:
        print(json.dumps(child(args)))
        return

    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            cmd = [sys.executable, __file__, "--mode", mode, "--tmp", tmp] + [
                f"--{k.replace('_', '-')}={getattr(args, k)}"
                for k in ("device", "batch_size", "height", "width", "encoder_width", "steps", "warmup")
            ]
            r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            if r.returncode != 0:
                sys.exit(f"{mode} failed:\n{r.stderr}")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))

    ref = rows[0]["images_per_s"]
    mem = "peak GPU memory (MiB)" if args.device.startswith("cuda") else "peak RSS (MiB)"
    print(f"Monodepth training step, batch {args.batch_size}, {args.height}x{args.width}, encoder width "
          f"{args.encoder_width}, median of {args.steps} steps after {args.warmup} warm-up")
    print(f"device: {device_name(args.device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"  {'mode':<26}{'images/s':>10}{'ms/step':>10}{mem:>24}{'vs plain':>10}")
    for r in rows:
        print(f"  {LABELS[r['mode']]:<26}{r['images_per_s']:>10.2f}{r['ms_per_step']:>10.1f}{r['peak_mib']:>24.0f}"
              f"{r['images_per_s'] / ref:>9.2f}x")
    fast = rows[-1]["images_per_s"] / ref
    if args.device.startswith("cuda"):
        print(f"target: fast path at least {TARGET:.0f}x the plain loop on a GPU -> {'MET' if fast >= TARGET else 'NOT MET'}"
              f" ({fast:.2f}x)")
    else:
        print("on the CPU mixed precision and channels-last are off (CUDA only): the fast path is the fp32 step")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name(args.device), "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
