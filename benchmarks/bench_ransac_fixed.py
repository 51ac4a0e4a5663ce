"""TrianFlow's relative poses with RANSAC stopping adaptively (the default, ``ransac_iters=0``:
1,024 to 4,096 samples by the inlier share, a count read on the host) against a fixed number
of samples (``--ransac-iters N``: nothing read on the host, what a compiled or CUDA-graph step
needs), with the shipped TrianFlow weights on the test worlds' 3-frame snippets.

Prints, per setting: the mean rotation and translation-direction errors (degrees) of the
motion to the next frame, failures (no usable pose), seconds per pair, and the ratio of each
error to the adaptive run's. Adaptive is the reference run, side by side.

    python benchmarks/bench_ransac_fixed.py [--sequences 4] [--frames 12] [--iters 256 1024 2048]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from lesson_lib import methods, weights
from lesson_lib.data.synthetic import VideoDataset
from lesson_lib.evaluation import pose_predictor, relative_pose_errors
from lesson_lib.training.datasets import load_worlds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--iters", type=int, nargs="+", default=[256, 1024, 2048])
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    model, method, _ = methods.load_model(weights.path("trianflow.pt"))
    model.eval()
    worlds = load_worlds("test", args.sequences, args.frames)
    pairs = VideoDataset(list(worlds), 3, flow=False, skip_static=False)
    K = torch.as_tensor(np.asarray(worlds[0].K), dtype=torch.float32)
    print(f"{len(pairs)} pairs ({args.sequences} test worlds x {args.frames} frames), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rows = []
    for iters in [0, *args.iters]:
        m = methods.build_method("trianflow", dataclasses.replace(method.config, ransac_iters=iters))
        t0 = time.perf_counter()
        res = relative_pose_errors(pose_predictor(model, m, K), pairs)
        sec = (time.perf_counter() - t0) / res["pairs"]
        rows.append(("adaptive" if iters == 0 else f"fixed {iters}", res, sec))
    ref = rows[0][1]
    print(f"{'RANSAC':>12} {'rotation deg':>13} {'direction deg':>14} {'failures':>9} {'s/pair':>7} "
          f"{'rot ratio':>10} {'dir ratio':>10}")
    for name, res, sec in rows:
        print(f"{name:>12} {res['rotation_deg_mean']:13.4f} {res['direction_deg_mean']:14.3f} {res['failures']:9d} "
              f"{sec:7.3f} {res['rotation_deg_mean'] / ref['rotation_deg_mean']:10.3f} "
              f"{res['direction_deg_mean'] / ref['direction_deg_mean']:10.3f}")


if __name__ == "__main__":
    main()
