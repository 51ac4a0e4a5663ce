"""Operations one training step dispatches, per registered method (measured on the CPU).

A GPU step made of thousands of tiny kernels is launch-bound: the GPU waits for the host to
launch the next one (Monodepth's step at 128x416, batch 8, was 20 % busy on an H200 with about
2,700 kernels a step). The number of ATen operations a step dispatches is what sets that count,
and it is the same on the CPU, so it is measured here without a GPU
(:class:`lesson_lib.training.opcount.OpCounter`).

For each method in :func:`lesson_lib.methods.available` (default configuration, Monodepth with
the packed loss its GPU step runs; TrianFlow's
default stage is the flow stage) on random images, one step: the network forward and the loss
(value checks off, as the trainer runs them), the backward, and Adam's update (PyTorch's
default implementation on the CPU: one small update per parameter tensor; on a GPU PyTorch
picks its ``foreach`` version, a few operations for all of them, and ``fused=True`` is one
kernel). Printed per method: the operations of each phase, the reference count (below), the
ratio, the most frequent operations, and every sync or host-to-device copy the counter flags.

Reference, counted before Monodepth's loss was fused (the code of that day; 2-core AMD EPYC
CPU, torch 2.13.0+cpu, default configurations, 128x416, batch 8, Adam after one warm-up step).
All dispatched operations, and in brackets the *kernels*: the operations that are not mere
views (``OpCounter.kernels``), about what a GPU launches:

    method        forward+loss     backward       Adam (CPU)   total
    monodepth      1782 (1156)    1344 (933)      794          3920
    monodepth2     2158 (1279)    1621 (1085)     938          4717
    sfmlearner     1381 (817)     1120 (721)     1100          3601
    trianflow      2936 (1741)    4510 (3214)     632          8078

After (same machine): Monodepth with the loss a GPU runs (``loss_layout="packed"``, set here:
all scales at once) 335 + 434 operations (540 kernels, 0.25 of the reference); the other methods
within a few per cent of theirs (benchmarks/RESULTS.md). The CPU trains Monodepth with the
per-scale layout (faster there; 1548 operations).

On the CPU Adam is PyTorch's per-parameter loop (9 operations a parameter tensor, and a
``.item()`` of its step count each: the syncs the script lists under ``optimizer``); the
trainer's GPU step gets the ``foreach`` version (a few dozen for all parameters) or, with
``fused=True``, a single kernel.

    python benchmarks/bench_step_ops.py [--height 128] [--width 416] [--batch-size 8]
        [--top 8] [--methods monodepth ...]
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from lesson_lib import methods
from lesson_lib.training import StepContext, step_generator
from lesson_lib.training.opcount import count_step, example_batch

REFERENCE = {
    # method: (forward+loss, backward, optimizer) operations, counted before the loss was fused
    "monodepth": (1782, 1344, 794),
    "monodepth2": (2158, 1621, 938),
    "sfmlearner": (1381, 1120, 1100),
    "trianflow": (2936, 4510, 632),
}
REFERENCE_KERNELS = {
    # method: (forward+loss, backward) operations that are not views
    "monodepth": (1156, 933),
    "monodepth2": (1279, 1085),
    "sfmlearner": (817, 721),
    "trianflow": (1741, 3214),
}


def measure(name: str, size: tuple[int, int], batch_size: int) -> dict:
    """One counted step of method ``name``: ``{"phases": {phase: ops}, "top", "flagged", "loss"}``."""
    torch.manual_seed(0)
    method = methods.build_method(name)
    if hasattr(method.config, "loss_layout"):  # the layout the GPU step runs (auto picks it on a GPU)
        method.config.loss_layout = "packed"
    if hasattr(method, "load_pretrained"):
        method.load_pretrained = False
    model = method.build_model().train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    device = torch.device("cpu")
    ctx = StepContext(step=0, generator=step_generator(0, 0, 0, device), device=device)
    batch = example_batch(method, batch_size, size)
    count_step(method, model, batch, ctx, optimizer, where=False)  # warm-up: Adam's state is made here
    counter = count_step(method, model, batch, ctx, optimizer)
    return {
        "phases": {p: counter.total(p) for p in ("forward", "backward", "optimizer")},
        "kernels": {p: counter.kernels(p) for p in ("forward", "backward", "optimizer")},
        "top": counter.top(),
        "flagged": [str(f) for f in counter.flagged],
        "loss": float(counter.loss),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=416)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--top", type=int, default=8, help="how many of the most frequent operations to print")
    parser.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    args = parser.parse_args(argv)
    names = args.methods or list(methods.available())
    size = (args.height, args.width)
    default_size = size == (128, 416) and args.batch_size == 8
    print(f"operations per training step, {args.height}x{args.width}, batch {args.batch_size}, CPU, "
          f"torch {torch.__version__}")
    print(f"{'method':<12} {'fwd+loss':>9} {'backward':>9} {'optim':>7} {'total':>7} {'reference':>10} {'ratio':>6}")
    for name in names:
        r = measure(name, size, args.batch_size)
        ph = r["phases"]
        total = sum(ph.values())
        ref = REFERENCE.get(name) if default_size else None
        ref_total = sum(ref) if ref else None
        ref_txt = f"{ref_total:>10}" if ref_total else f"{'-':>10}"
        ratio = f"{total / ref_total:6.2f}" if ref_total else f"{'-':>6}"
        print(f"{name:<12} {ph['forward']:>9} {ph['backward']:>9} {ph['optimizer']:>7} {total:>7} {ref_txt} {ratio}")
        if ref:
            kn, ref_kn = r["kernels"], REFERENCE_KERNELS[name]
            fwd_bwd, ref_fwd_bwd = ph["forward"] + ph["backward"], ref[0] + ref[1]
            k_now, k_ref = kn["forward"] + kn["backward"], sum(ref_kn)
            print(f"{'':<12} forward+backward: {fwd_bwd} operations vs {ref_fwd_bwd} ({fwd_bwd / ref_fwd_bwd:.2f}), "
                  f"kernels {k_now} vs {k_ref} ({k_now / k_ref:.2f})")
        print(f"{'':<12} top: " + ", ".join(f"{op.removeprefix('aten.')} {n}" for op, n in r["top"][: args.top]))
        syncs = [f for f in r["flagged"] if f.startswith("sync")]
        copies = [f for f in r["flagged"] if not f.startswith("sync")]
        print(f"{'':<12} syncs: {len(syncs)}, host data / host-to-device: {len(copies)}")
        for f, n in Counter(r["flagged"]).most_common():
            print(f"{'':<14}{n:>3} x {f}")


if __name__ == "__main__":
    main()
