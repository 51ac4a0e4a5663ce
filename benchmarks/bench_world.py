"""Rendering speed of the synthetic world (appendix A1).

Times what one frame of a training set costs: the left and right views (images with
mip-mapped textures, z-depth, object ids) and the forward optical flow to the next frame, at
128x416 by default. Prints frames per second and the ratio to the target of 10 frames/s.

    python benchmarks/bench_world.py [--frames 60] [--height 128] [--width 416] [--device cpu|cuda] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from lesson_lib.data import synthetic
from lesson_lib.course.env import device_name as machine_name
from lesson_lib.data.world import CameraConfig, MotionConfig, Renderer, StreetConfig, build_world

TARGET_FPS = 10.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=416)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    cam = CameraConfig(height=args.height, width=args.width)
    t0 = time.perf_counter()
    world = build_world(args.seed, args.frames + 1, StreetConfig(), MotionConfig())
    renderer = Renderer(world, args.device)
    t_build = time.perf_counter() - t0
    K = cam.K
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def frame(f: int):
        t = float(world.route[f, 3])
        vl = renderer.render(renderer.camera_pose(f), K, cam.height, cam.width, t)
        vr = renderer.render(renderer.camera_pose(f, right=True), K, cam.height, cam.width, t)
        sync()
        return vl, vr

    with torch.no_grad():
        frame(0)  # warm-up
        times, prev = [], frame(0)
        for f in range(1, args.frames + 1):
            s = time.perf_counter()
            vl, vr = frame(f)
            depth_prev = prev[0].depth.cpu().numpy()
            vel = prev[0].vel.permute(1, 2, 0).cpu().numpy()
            synthetic.flow_from_depth(depth_prev, vel, renderer.camera_pose(f - 1), renderer.camera_pose(f), K,
                                      float(world.route[f, 3] - world.route[f - 1, 3]), vl.depth.cpu().numpy())
            times.append(time.perf_counter() - s)
            prev = (vl, vr)
    med = statistics.median(times)
    fps = 1.0 / med
    device_name = machine_name(args.device) + ("" if args.device.startswith("cuda") else f" ({torch.get_num_threads()} threads)")
    print(f"device: {device_name}; torch {torch.__version__}")
    print(f"resolution {cam.height}x{cam.width}, {args.frames} frames, world build {t_build:.2f} s")
    print(f"per frame (stereo pair + depth + flow): median {med * 1000:.1f} ms, "
          f"p90 {np.percentile(times, 90) * 1000:.1f} ms -> {fps:.1f} frames/s")
    print(f"target {TARGET_FPS:.0f} frames/s: ratio {fps / TARGET_FPS:.2f}x ({'met' if fps >= TARGET_FPS else 'NOT met'})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": device_name, "median_ms": med * 1000, "fps": fps, "height": cam.height,
                       "width": cam.width, "frames": args.frames}, fh, indent=2)


if __name__ == "__main__":
    main()
