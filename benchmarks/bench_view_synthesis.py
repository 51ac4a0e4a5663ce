"""Benchmark the course's view-synthesis building blocks against kornia's.

Two pairs, each timed as forward + backward in the same process, side by side:

1. "photometric loss": ``lesson_lib.losses.photometric_error(pred, target, reduction="mean")``
   (alpha 0.85, 3x3 box-window SSIM, reflection padding) versus the same combination built from
   kornia: ``0.85 * kornia.losses.ssim_loss(pred, target, 3, reduction="none").mean(1) +
   0.15 * |pred - target|.mean(1)``, averaged. kornia's SSIM uses a 3x3 *Gaussian* window, so
   the two losses are close but not equal; both values are printed. Gradient w.r.t. ``pred``.
2. "rigid warp": ``lesson_lib.warping.rigid_warp(source, depth, T_t_to_s, K)`` versus
   ``kornia.geometry.depth.warp_frame_depth(source, depth, T_t_to_s, K)``; the loss is the sum of
   the warped image, gradients w.r.t. ``source`` and ``depth``. Before anything is timed the two
   warped images must agree to 1e-4 in float32 (``--warp-tol``) and to 1e-10 when the same inputs
   are computed in float64.

Each timed call is: clear the gradients, forward, ``loss.backward()``. The first 3 calls of each
side are warm-up; then the two sides alternate for ``--repeats`` rounds (so a background load
hits both alike) and the median is reported. On CUDA, ``torch.cuda.synchronize()`` brackets
every timed call.

Usage::

    python benchmarks/bench_view_synthesis.py [--device cpu|cuda] [--repeats 30]
        [--batch 4] [--height 128] [--width 416] [--seed 0] [--warp-tol 1e-4]
        [--json results.json]

The ratio column is ``kornia median / course median``: above 1 the course's version is faster
(2.0 means twice as fast). The stated target is a ratio of at least 1.5 on both pairs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

import kornia
from kornia.geometry.depth import warp_frame_depth
from kornia.losses import ssim_loss

from lesson_lib import losses, warping
from lesson_lib.course.env import device_name

TARGET_RATIO = 1.5
ALPHA = 0.85
WARMUP = 3
WARP_TOL64 = 1e-10


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------


def smooth_images(b: int, c: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Images in [0, 1] with image-like smoothness: random values on a grid 8x coarser,
    bilinearly upsampled (so the bilinear warp is compared on a realistic signal, not noise)."""
    low = torch.rand(b, c, max(h // 8, 2), max(w // 8, 2), device=device, dtype=dtype)
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=True)


def kitti_like_K(b: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    K = torch.tensor(
        [[0.58 * w, 0.0, w / 2 - 0.5], [0.0, 1.92 * h, h / 2 - 0.5], [0.0, 0.0, 1.0]],
        device=device,
        dtype=dtype,
    )
    return K.expand(b, 3, 3).contiguous()


def small_random_poses(b: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(B, 4, 4)`` rigid motions: rotation of a few hundredths of a radian about a random
    axis (exp of a skew matrix), translation of about 0.1 (forward motion of 0.2 to 0.4)."""
    w = 0.02 * torch.randn(b, 3, dtype=torch.float64)
    skew = torch.zeros(b, 3, 3, dtype=torch.float64)
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
    skew = skew - skew.transpose(1, 2)
    T = torch.eye(4, dtype=torch.float64).repeat(b, 1, 1)
    T[:, :3, :3] = torch.linalg.matrix_exp(skew)
    T[:, :3, 3] = 0.05 * torch.randn(b, 3, dtype=torch.float64)
    T[:, 2, 3] += 0.2 + 0.2 * torch.rand(b, dtype=torch.float64)
    return T.to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# the two sides of each pair
# ----------------------------------------------------------------------------------------------


def course_photometric(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return losses.photometric_error(pred, target, alpha=ALPHA, reduction="mean")


def kornia_photometric(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    dssim = ssim_loss(pred, target, window_size=3, reduction="none").mean(1, keepdim=True)
    l1 = (pred - target).abs().mean(1, keepdim=True)
    return (ALPHA * dssim + (1 - ALPHA) * l1).mean()


def course_warp(source, depth, T, K) -> torch.Tensor:
    return warping.rigid_warp(source, depth, T, K)[0]


def kornia_warp(source, depth, T, K) -> torch.Tensor:
    return warp_frame_depth(source, depth, T, K)


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_side_by_side(
    fns: dict[str, Callable[[], None]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Warm each function up, then alternate them ``repeats`` times; seconds per call."""
    for fn in fns.values():
        for _ in range(WARMUP):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def fwd_bwd(loss_fn: Callable[[], torch.Tensor], leaves: list[torch.Tensor]) -> Callable[[], None]:
    def step() -> None:
        for t in leaves:
            t.grad = None
        loss_fn().backward()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=416)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the numbers to this JSON file")
    parser.add_argument(
        "--warp-tol",
        type=float,
        default=1e-4,
        help="largest float32 difference allowed between the two warps before timing (default 1e-4)",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    dtype = torch.float32
    b, h, w = args.batch, args.height, args.width

    print(f"device : {device.type} ({device_name(device)})")
    print(f"torch  : {torch.__version__}   kornia: {kornia.__version__}   threads: {torch.get_num_threads()}")
    print(f"input  : batch {b}, {h}x{w}, {dtype}, {args.repeats} repeats (median) after {WARMUP} warm-up runs")
    print()

    # ---- inputs ------------------------------------------------------------------------------
    target = smooth_images(b, 3, h, w, device, dtype)
    pred = (target + 0.05 * torch.randn_like(target)).clamp(0, 1).requires_grad_(True)
    source = smooth_images(b, 3, h, w, device, dtype).requires_grad_(True)
    depth = (2.0 + 48.0 * torch.rand(b, 1, h, w, device=device, dtype=dtype)).requires_grad_(True)
    K = kitti_like_K(b, h, w, device, dtype)
    T = small_random_poses(b, device, dtype)

    # ---- checks: same computation on both sides ----------------------------------------------
    with torch.no_grad():
        lc = float(course_photometric(pred, target))
        lk = float(kornia_photometric(pred, target))
        warp_diff = float((course_warp(source, depth, T, K) - kornia_warp(source, depth, T, K)).abs().max())
        s64, d64, T64, K64 = (t.double() for t in (source, depth, T, K))
        warp_diff64 = float((course_warp(s64, d64, T64, K64) - kornia_warp(s64, d64, T64, K64)).abs().max())
    print("checks:")
    print(
        f"  photometric loss : course {lc:.6f}   kornia {lk:.6f}   "
        f"(box vs Gaussian 3x3 SSIM window, so close but not equal)"
    )
    ok32 = warp_diff < args.warp_tol
    ok64 = warp_diff64 < WARP_TOL64
    print(
        f"  rigid warp       : max |course - kornia| = {warp_diff:.3e} in {dtype} "
        f"(< {args.warp_tol:g}: {'OK' if ok32 else 'FAIL'}), "
        f"{warp_diff64:.3e} in float64 (< {WARP_TOL64:g}: {'OK' if ok64 else 'FAIL'})"
    )
    if not (ok32 and ok64):
        print(
            "rigid warp outputs differ; not timing. (In float32 both sides round the projected\n"
            "coordinates to about 1e-4 pixel, and next to the zero padding at the image border the\n"
            "output changes by up to one intensity unit per pixel, so float32 differences of about\n"
            "1e-4 are rounding; the float64 difference shows whether the computations agree.)",
            file=sys.stderr,
        )
        return 1
    print()

    # ---- timing ------------------------------------------------------------------------------
    pairs = {
        "photometric loss": {
            "course": fwd_bwd(lambda: course_photometric(pred, target), [pred]),
            "kornia": fwd_bwd(lambda: kornia_photometric(pred, target), [pred]),
        },
        "rigid warp": {
            "course": fwd_bwd(lambda: course_warp(source, depth, T, K).sum(), [source, depth]),
            "kornia": fwd_bwd(lambda: kornia_warp(source, depth, T, K).sum(), [source, depth]),
        },
    }
    rows = []
    for name, fns in pairs.items():
        times = time_side_by_side(fns, args.repeats, device)
        c_ms = 1e3 * statistics.median(times["course"])
        k_ms = 1e3 * statistics.median(times["kornia"])
        rows.append({"name": name, "course_ms": c_ms, "kornia_ms": k_ms, "ratio": k_ms / c_ms})

    print("forward + backward, median ms")
    print(f"  {'name':<18} {'course':>10} {'kornia':>10} {'kornia/course':>14}")
    for r in rows:
        print(f"  {r['name']:<18} {r['course_ms']:>10.3f} {r['kornia_ms']:>10.3f} {r['ratio']:>13.2f}x")
    met = all(r["ratio"] >= TARGET_RATIO for r in rows)
    print()
    print(
        f"target: course at least {TARGET_RATIO}x faster than kornia on both pairs -> "
        f"{'MET' if met else 'NOT MET'}"
    )

    if args.json:
        out = {
            "device": device.type,
            "device_name": device_name(device),
            "torch": torch.__version__,
            "kornia": kornia.__version__,
            "threads": torch.get_num_threads(),
            "batch": b,
            "height": h,
            "width": w,
            "dtype": str(dtype),
            "repeats": args.repeats,
            "warmup": WARMUP,
            "seed": args.seed,
            "checks": {
                "photometric_course": lc,
                "photometric_kornia": lk,
                "warp_max_abs_diff": warp_diff,
                "warp_max_abs_diff_float64": warp_diff64,
            },
            "results": rows,
            "target_ratio": TARGET_RATIO,
            "target_met": met,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
