"""TrianFlow's depth stage with the flow it is given: the oracle control (chapter 09).

**The oracle arms use ground truth** (the world's exact flow, ``--oracle-flow``): they are an
experiment, not self-supervised learning. They separate "this depth stage cannot learn here"
from "the learnt flow is not good enough": the same loss (the paper's, ``--depth-loss paper``),
the same data, schedule and seed, and only the flow differs.

Arms (each ``python -m lesson_lib train trianflow --stage depth ...`` for ``--steps`` steps):

- ``oracle``: the world's exact forward flow and its validity, consecutive frames;
- ``oracle_gap2``: the same with a frame and the one two steps later (twice the baseline);
- ``learnt_frozen``: the flow network of ``--flow-weights`` (default: the shipped
  ``trianflow.pt``'s), kept fixed;
- ``learnt_joint``: the same flow network trained on through the epipolar loss and the
  triangulated points, the paper's default (at ``--flow-lr-scale`` of the learning rate).

Each arm's validation abs rel (median-scaled, 40 frames) is printed every ``--validate-every``
steps side by side, then each final model's abs rel on the test split (100 images, the course's
protocol, ``python -m lesson_lib evaluate``). An arm whose run is complete is not trained again;
an interrupted one resumes.

    python benchmarks/trianflow_oracle.py [--arms oracle learnt_frozen ...] [--steps 600]
        [--out-dir runs/trianflow_oracle] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARMS = {
    "oracle": ["--oracle-flow"],
    "oracle_gap2": ["--oracle-flow", "--frame-gap", "2"],
    "learnt_frozen": ["--freeze-flow"],
    "learnt_joint": [],
}


def _run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def _val(path: Path) -> dict[int, float]:
    if not path.is_file():
        return {}
    with open(path) as f:
        return {int(r["step"]): float(r["abs_rel_median"]) for r in csv.DictReader(f)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--validate-every", type=int, default=100)
    p.add_argument("--flow-weights", default=str(REPO / "lesson_lib" / "weights" / "trianflow.pt"))
    p.add_argument("--out-dir", default="runs/trianflow_oracle")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    py = sys.executable
    results = {}
    for arm in args.arms:
        run = out / arm
        done = max(_val(run / "val.csv"), default=0) >= args.steps
        if not done:
            cmd = [py, "-m", "lesson_lib", "train", "trianflow", "--stage", "depth", "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--validate-every",
                   str(args.validate_every), "--checkpoint-every", str(args.validate_every), "--out-dir", str(run),
                   "--no-progress", *ARMS[arm]]
            if not arm.startswith("oracle"):
                cmd += ["--flow-weights", args.flow_weights]
            if (run / "latest.pt").is_file():
                cmd.append("--resume")
            _run(cmd)
        report = run / "test.json"
        if not report.is_file():
            _run([py, "-m", "lesson_lib", "evaluate", str(run / "latest.pt"), "--json", str(report)])
        with open(report) as f:
            test = json.load(f)
        results[arm] = {"val": _val(run / "val.csv"), "test_abs_rel": test["results"]["median-scaled"]["abs_rel"]}
    steps = sorted({s for r in results.values() for s in r["val"]})
    print("\nvalidation abs rel (median-scaled, 40 frames); the oracle arms use the world's exact flow (ground truth)")
    print(f"{'step':>6}" + "".join(f"{a:>15}" for a in results))
    for s in steps:
        print(f"{s:>6}" + "".join(f"{r['val'].get(s, float('nan')):15.3f}" for r in results.values()))
    print(f"{'test':>6}" + "".join(f"{r['test_abs_rel']:15.3f}" for r in results.values()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
