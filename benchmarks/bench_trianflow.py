"""Throughput of TrianFlow's two costly steps (chapter 09), on the CPU or a GPU.

1. **Flow training step**: the flow network (:class:`~lesson_lib.models.FlowNet`) on a batch
   of frame pairs in both directions, the occlusion-aware flow loss
   (:func:`lesson_lib.methods.trianflow.flow_loss`), backward, Adam; frame pairs per second and
   ms per step, at the CPU models' 64x224 and the data's 128x416. On CUDA also the fast path
   (bf16 autocast + channels-last) against float32.
2. **Pose from F**: :func:`lesson_lib.twoview.ransac_fundamental` on ``--n`` correspondences
   (TrianFlow samples 6,000 per pair) with 30 % outliers, then ``E = K^T F K`` and
   :func:`lesson_lib.twoview.recover_pose`; correspondences per second and ms per pair.
3. **Depth-stage training step** at 128x416 (the frozen flow network both ways, pose from F
   on 6,000 correspondences per pair, triangulation, the depth loss at four scales, backward,
   Adam), against SfMLearner's training step on the same snippets (the reference: the pose
   network's method), images per second and the ratio.

Each figure is the median of ``--repeats`` timed runs after warm-up, timed between
``torch.cuda.synchronize()`` calls on a GPU.

    python benchmarks/bench_trianflow.py [--device cpu|cuda] [--batch-size 4] [--repeats 10]
        [--n 6000] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lesson_lib import pose, twoview  # noqa: E402
from lesson_lib.course.env import device_name  # noqa: E402
from lesson_lib.methods.trianflow import TrianFlowConfig, TrianFlowNet, flow_loss  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flow_step(device: torch.device, size: tuple[int, int], batch: int, fast: bool, repeats: int) -> dict:
    torch.manual_seed(0)
    cfg = TrianFlowConfig()
    net = TrianFlowNet(cfg).to(device)
    if fast:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    a = torch.rand(batch, 3, *size, generator=g).to(device)
    b = torch.roll(a, shifts=3, dims=3)  # a shifted copy: a realistic, learnable pair
    if fast:
        a, b = a.contiguous(memory_format=torch.channels_last), b.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            fw, bw = net(a, b)
        loss, _ = flow_loss(fw, bw, a, b, cfg)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sec = _median_time(step, device, repeats, warmup=3)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"size": list(size), "batch": batch, "fast_path": fast, "ms_per_step": 1000 * sec, "pairs_per_s": batch / sec,
            "peak_mib": peak}


def pose_from_f(device: torch.device, n: int, repeats: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    W, H = 416, 128
    K = torch.tensor([[0.58 * W, 0, (W - 1) / 2], [0, 1.92 * H, (H - 1) / 2], [0, 0, 1.0]], dtype=torch.float64)
    X = torch.stack([(torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 30,
                     (torch.rand(n, generator=g, dtype=torch.float64) - 0.7) * 4,
                     4 + 56 * torch.rand(n, generator=g, dtype=torch.float64)], 1)
    R = pose.axis_angle_to_matrix(torch.tensor([[0.0, 0.03, 0.0]], dtype=torch.float64))[0]
    t = torch.tensor([0.05, 0.0, -0.8], dtype=torch.float64)
    p1, p2 = twoview.project_pair(X, K, K, R, t)
    p1 = p1 + 0.5 * torch.randn(p1.shape, generator=g, dtype=torch.float64)
    p2 = p2 + 0.5 * torch.randn(p2.shape, generator=g, dtype=torch.float64)
    out = torch.rand(n, generator=g) < 0.3
    p2[out] = torch.rand(int(out.sum()), 2, generator=g, dtype=torch.float64) * torch.tensor([W, H], dtype=torch.float64)
    p1, p2, K = p1.float().to(device), p2.float().to(device), K.float().to(device)
    result = {}

    def run() -> None:
        F, inliers = twoview.ransac_fundamental(p1, p2, threshold=1.0, confidence=0.99,
                                                generator=torch.Generator(device=device).manual_seed(seed))
        E = twoview.essential_from_fundamental(F, K, K)
        R_, t_, _ = twoview.recover_pose(E, p1, p2, K, K, mask=inliers)
        result["rot_deg"], result["dir_deg"] = twoview.pose_error(R_.double().cpu(), t_.double().cpu(), R, t)

    sec = _median_time(run, device, repeats, warmup=2)
    return {"n": n, "ms_per_pair": 1000 * sec, "correspondences_per_s": n / sec,
            "rotation_error_deg": float(result["rot_deg"]), "direction_error_deg": float(result["dir_deg"])}


def _snippets(batch: int, size: tuple[int, int]) -> dict:
    """A batch of real 3-frame snippets of the synthetic world (a moving camera: F is defined)."""
    from lesson_lib.data.synthetic import VideoDataset, load_split

    data = VideoDataset(load_split("test", 2, 5, *size, progress=False), 3, flow=False)
    return torch.utils.data.default_collate([data[i % len(data)] for i in range(batch)])


def depth_step(device: torch.device, batch: int, repeats: int) -> dict:
    """ms per training step of TrianFlow's depth stage and of SfMLearner, same snippets."""
    from lesson_lib.methods.sfmlearner import SfMLearner, SfMLearnerConfig
    from lesson_lib.methods.trianflow import TrianFlow
    from lesson_lib.training import StepContext
    from lesson_lib.training.method import step_generator

    snip = {k: v.to(device) if torch.is_tensor(v) else v for k, v in _snippets(batch, (128, 416)).items()}
    out = {}
    for name, method in (("trianflow_depth", TrianFlow(TrianFlowConfig(stage="depth"))),
                         ("sfmlearner", SfMLearner(SfMLearnerConfig(pose_width=8, multiscale="upsample")))):
        torch.manual_seed(0)
        method.load_pretrained = False  # an untrained (frozen) flow network costs the same
        model = method.build_model().to(device)
        frozen = {id(p) for m in (method.frozen_modules(model) if hasattr(method, "frozen_modules") else []) for p in m.parameters()}
        opt = torch.optim.Adam([p for p in model.parameters() if id(p) not in frozen], lr=1e-4)
        calls = [0]

        def step() -> None:
            ctx = StepContext(step=calls[0], generator=step_generator(0, calls[0], device=device), device=device)
            calls[0] += 1
            opt.zero_grad(set_to_none=True)
            loss, _ = method.loss(model, snip, ctx)
            loss.backward()
            opt.step()

        sec = _median_time(step, device, repeats, warmup=2)
        out[name] = {"ms_per_step": 1000 * sec, "snippets_per_s": batch / sec}
    out["ratio"] = out["trianflow_depth"]["ms_per_step"] / out["sfmlearner"]["ms_per_step"]
    out["batch"] = batch
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    ap.add_argument("--json", default=None)
    ns = ap.parse_args()
    if ns.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: use --device cpu")
        return 1
    if ns.threads:
        torch.set_num_threads(ns.threads)
    device = torch.device(ns.device)
    print(f"device: {device_name(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"python {platform.python_version()}")
    rows = []
    for size in ((64, 224), (128, 416)):
        for fast in ((False, True) if device.type == "cuda" else (False,)):
            rows.append(flow_step(device, size, ns.batch_size, fast, ns.repeats))
    print(f"\n1. flow training step (both directions, loss, backward, Adam), batch {ns.batch_size}, median of {ns.repeats}")
    print(f"   {'input':>9} {'mode':<20} {'ms/step':>9} {'pairs/s':>9} {'peak MiB':>9}")
    for r in rows:
        mode = "bf16 + channels-last" if r["fast_path"] else "float32"
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
        print(f"   {r['size'][0]:>4}x{r['size'][1]:<4} {mode:<20} {r['ms_per_step']:9.1f} {r['pairs_per_s']:9.1f} {peak:>9}")
    pf = pose_from_f(device, ns.n, max(3, ns.repeats // 2))
    print(f"\n2. pose from F: RANSAC (8-point, 1 px Sampson, 0.99) + recover_pose on {pf['n']} correspondences, 30 % outliers")
    print(f"   {pf['ms_per_pair']:.1f} ms per pair, {pf['correspondences_per_s']:,.0f} correspondences/s; "
          f"pose error {pf['rotation_error_deg']:.3f} deg rotation, {pf['direction_error_deg']:.2f} deg direction")
    ds = depth_step(device, ns.batch_size, max(3, ns.repeats // 2))
    print(f"\n3. training step at 128x416, batch {ds['batch']}, median of {max(3, ns.repeats // 2)} "
          f"(the reference: SfMLearner's step on the same snippets)")
    for name in ("trianflow_depth", "sfmlearner"):
        r = ds[name]
        print(f"   {name:<16} {r['ms_per_step']:9.1f} ms/step {r['snippets_per_s']:7.2f} snippets/s")
    print(f"   TrianFlow's depth step takes {ds['ratio']:.2f}x SfMLearner's")
    if ns.json:
        Path(ns.json).write_text(json.dumps({"device": device_name(device), "torch": torch.__version__,
                                             "flow_step": rows, "pose_from_f": pf, "depth_step": ds}, indent=2))
    if any(not math.isfinite(r["ms_per_step"]) for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
