"""Benchmark the course's RANSAC for the fundamental matrix against kornia's.

The task is the one TrianFlow solves for every training pair: estimate F from 6,000
correspondences of which 30 % are outliers. Both estimators get the same data, threshold
(Sampson distance, pixels) and confidence:

- course: ``lesson_lib.twoview.ransac_fundamental(p1, p2, threshold, confidence,
  generator=torch.Generator().manual_seed(seed))`` (8-point samples, hypotheses scored in
  batches, local optimisation of each new best model, a final Sampson-weighted refit);
- kornia: ``kornia.geometry.ransac.RANSAC(model_type="fundamental", inl_th=threshold,
  confidence=confidence, seed=seed)`` with its other defaults (7-point samples in batches of 2048,
  Levenberg-Marquardt local optimisation and refinement).

The data (``--trials`` scenes, seeded): random points 4-60 m in front of a KITTI-like camera
(416 x 128, fx = 0.58 W, fy = 1.92 H) moving 0.5-1.2 m forward with a turn of up to 4 degrees
and a little sideways drift; pixel noise ``--noise`` (0.5 px) on both images; a share
``--outliers`` of the second image's points replaced by uniformly random pixels.

Accuracy, per trial and side, against the known truth:

- RMS Sampson distance (px) of the *true* inliers to the estimated F (the noise sets its floor:
  the true F scores about ``--noise`` there too, printed as "true F");
- recall of the true inliers and the share of the outliers accepted as inliers;
- rotation error and translation-direction error (degrees) after ``E = K^T F K`` and
  :func:`lesson_lib.twoview.recover_pose` on each side's inliers (the same pose recovery for both,
  so only F differs).

Time: each side runs once as warm-up on every trial, then the two sides alternate ``--repeats``
times per trial (so a background load hits both alike); the median per trial is reported.
Single-threaded by default (``--threads 1``), float32 inputs, CPU.

Usage::

    python benchmarks/bench_twoview.py [--trials 5] [--repeats 5] [--n 6000] [--outliers 0.3]
        [--noise 0.5] [--threshold 1.0] [--confidence 0.99] [--threads 1] [--seed 0] [--json PATH]

The ratio column is ``kornia median / course median``: above 1 the course is faster. The stated
target is a ratio of at least 2 at equal or better accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

import kornia
from kornia.geometry.ransac import RANSAC

from lesson_lib import pose, twoview
from lesson_lib.course.env import device_name

TARGET_RATIO = 2.0
F64 = torch.float64


def make_trial(seed: int, n: int, outliers: float, noise: float):
    """One scene: ``(p1, p2)`` float32 ``(n, 2)``, the outlier mask, K, and the true (R, t)."""
    g = torch.Generator().manual_seed(seed)
    w, h = 416, 128
    K = torch.tensor([[0.58 * w, 0.0, (w - 1) / 2], [0.0, 1.92 * h, (h - 1) / 2], [0.0, 0.0, 1.0]], dtype=F64)
    yaw = math.radians(float(torch.rand((), generator=g, dtype=F64)) * 8 - 4)
    R = pose.axis_angle_to_matrix(torch.tensor([[0.0, yaw, 0.0]], dtype=F64))[0]
    forward = 0.5 + 0.7 * float(torch.rand((), generator=g, dtype=F64))
    t = torch.tensor([0.05 * float(torch.randn((), generator=g, dtype=F64)), 0.0, -forward], dtype=F64)
    # points visible in both views: draw pixels and depths in view 1, keep those seen in view 2
    X = torch.empty(0, 3, dtype=F64)
    while len(X) < n:
        m = 4 * n
        uv = torch.rand(m, 2, generator=g, dtype=F64) * torch.tensor([w - 1.0, h - 1.0], dtype=F64)
        z = 4.0 + 56.0 * torch.rand(m, generator=g, dtype=F64)
        P = torch.cat([uv, torch.ones(m, 1, dtype=F64)], 1) @ torch.linalg.inv(K).T * z[:, None]
        P2 = P @ R.T + t
        q = P2 @ K.T
        ok = (P2[:, 2] > 1.0) & (q[:, 0] / q[:, 2] >= 0) & (q[:, 0] / q[:, 2] <= w - 1) & (q[:, 1] / q[:, 2] >= 0) & (q[:, 1] / q[:, 2] <= h - 1)
        X = torch.cat([X, P[ok]])
    X = X[:n]
    p1, p2 = twoview.project_pair(X, K, K, R, t)
    p1 = p1 + noise * torch.randn(p1.shape, generator=g, dtype=F64)
    p2 = p2 + noise * torch.randn(p2.shape, generator=g, dtype=F64)
    out = torch.rand(n, generator=g) < outliers
    p2[out] = torch.rand(int(out.sum()), 2, generator=g, dtype=F64) * torch.tensor([w - 1.0, h - 1.0], dtype=F64)
    return p1.float(), p2.float(), out, K, R, t


def accuracy(F: torch.Tensor, inliers: torch.Tensor, trial) -> dict[str, float]:
    p1, p2, out, K, R, t = trial
    q1, q2 = p1.double(), p2.double()
    F = F.double()
    rms = float(twoview.sampson_distance(F, q1[~out], q2[~out]).square().mean().sqrt())
    E = twoview.essential_from_fundamental(F, K, K)
    R_e, t_e, _ = twoview.recover_pose(E, q1, q2, K, K, mask=inliers)
    rot, tdir = twoview.pose_error(R_e, t_e, R, t)
    return {
        "rms_sampson_px": rms,
        "recall": float((inliers & ~out).sum() / (~out).sum()),
        "outliers_accepted": float((inliers & out).sum() / out.sum()),
        "rotation_deg": float(rot),
        "translation_deg": float(tdir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--outliers", type=float, default=0.3)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--threshold", type=float, default=1.0)
    parser.add_argument("--confidence", type=float, default=0.99)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.repeats < 1:
        parser.error("--trials and --repeats must be >= 1")
    torch.set_num_threads(args.threads)

    print(f"device : cpu ({device_name('cpu')})")
    print(f"torch  : {torch.__version__}   kornia: {kornia.__version__}   threads: {torch.get_num_threads()}")
    print(f"task   : {args.n} correspondences, {args.outliers:.0%} outliers, {args.noise} px noise, "
          f"threshold {args.threshold} px, confidence {args.confidence}; {args.trials} trials, "
          f"median of {args.repeats} timed runs each")
    print()

    rows = []
    for k in range(args.trials):
        seed = args.seed + k
        trial = make_trial(seed, args.n, args.outliers, args.noise)
        p1, p2 = trial[0], trial[1]

        def course():
            return twoview.ransac_fundamental(p1, p2, args.threshold, args.confidence,
                                              generator=torch.Generator().manual_seed(seed))

        kornia_ransac = RANSAC(model_type="fundamental", inl_th=args.threshold, confidence=args.confidence, seed=seed)

        def theirs():
            return kornia_ransac(p1, p2)

        results = {"course": course(), "kornia": theirs()}  # warm-up, and the estimates scored below
        times = {"course": [], "kornia": []}
        for _ in range(args.repeats):
            for name, fn in (("course", course), ("kornia", theirs)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        true_rms = float(twoview.sampson_distance(
            twoview.fundamental_from_essential(twoview.essential_from_pose(trial[4], trial[5]), trial[3], trial[3]),
            p1[~trial[2]].double(), p2[~trial[2]].double()).square().mean().sqrt())
        row = {"trial": k, "seed": seed, "true_F_rms_sampson_px": true_rms}
        for name in ("course", "kornia"):
            F, inl = results[name]
            row[name] = {"ms": 1e3 * statistics.median(times[name]), **accuracy(F, inl.bool(), trial)}
        rows.append(row)

    head = f"{'trial':>5} {'side':>7} {'ms':>8} {'RMS Sampson px':>15} {'recall':>7} {'outl. acc.':>10} {'rot deg':>8} {'t dir deg':>9}"
    print(head)
    for row in rows:
        for name in ("course", "kornia"):
            r = row[name]
            print(f"{row['trial']:>5} {name:>7} {r['ms']:8.1f} {r['rms_sampson_px']:15.4f} {r['recall']:7.3f} "
                  f"{r['outliers_accepted']:10.4f} {r['rotation_deg']:8.3f} {r['translation_deg']:9.3f}")
        print(f"{row['trial']:>5} {'true F':>7} {'':>8} {row['true_F_rms_sampson_px']:15.4f}")
    print()
    mean = lambda side, key: statistics.mean(r[side][key] for r in rows)  # noqa: E731
    summary = {side: {key: mean(side, key) for key in rows[0][side]} for side in ("course", "kornia")}
    ratio = summary["kornia"]["ms"] / summary["course"]["ms"]
    print("mean over trials:")
    for side in ("course", "kornia"):
        s = summary[side]
        print(f"  {side:>6}: {s['ms']:7.1f} ms   RMS Sampson {s['rms_sampson_px']:.4f} px   recall {s['recall']:.3f}   "
              f"outliers accepted {s['outliers_accepted']:.4f}   rotation {s['rotation_deg']:.3f} deg   "
              f"translation {s['translation_deg']:.3f} deg")
    better = all(summary["course"][k] <= summary["kornia"][k] for k in ("rms_sampson_px", "rotation_deg", "translation_deg"))
    print(f"  speed-up (kornia ms / course ms): {ratio:.2f}x   target >= {TARGET_RATIO:g}x at equal or better accuracy: "
          f"{'met' if ratio >= TARGET_RATIO and better else 'NOT met'}"
          f" (accuracy {'equal or better' if better else 'worse'} on the mean RMS Sampson, rotation and translation errors)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "device": device_name("cpu"), "torch": torch.__version__,
                       "kornia": kornia.__version__, "trials": rows, "summary": summary, "ratio": ratio}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
