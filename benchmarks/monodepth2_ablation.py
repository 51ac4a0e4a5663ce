"""Monodepth2's ablation on the synthetic world (chapter 11): scores training runs of the
``monodepth2`` method on the test split and writes the table chapter 11 prints.

Each run is a training checkpoint (``OUT_DIR/latest.pt``) of the same short schedule (the
commands are in ``lesson_lib/weights/README.md``); for each, on the 100 test images: the
median-scaled metrics (the course's protocol), the median-scaled abs rel on the pixels of moving
cars (images with at least 100 such pixels; the scale still comes from the whole image), and the
validation curve the run logged.

    python benchmarks/monodepth2_ablation.py --out lesson_lib/weights/monodepth2_ablation.json \\
        A_baseline=runs/abl_A_baseline A_min=runs/abl_A_min ...
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from lesson_lib import evaluation, methods, metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="NAME=RUN_DIR (a training folder holding latest.pt, log.csv, val.csv)")
    p.add_argument("--out", required=True, help="the JSON file to write")
    ns = p.parse_args()
    data = evaluation.test_split("test")
    rows = {}
    for spec in ns.runs:
        name, _, folder = spec.partition("=")
        folder = Path(folder)
        t0 = time.perf_counter()
        model, method, _ = methods.load_model(folder / "latest.pt")
        predict = evaluation.model_predictor(model, method)
        per_image = evaluation.per_image_metrics(predict, data, post_processing=(False,), metric=False)["median-scaled"]
        cars_each = evaluation.region_abs_rel(predict, data)  # moving-car pixels, images with >= 100 of them
        cars, n_cars = float(cars_each.mean()), len(cars_each)
        with open(folder / "val.csv") as f:
            curve = {int(r["step"]): float(r["abs_rel_median"]) for r in csv.DictReader(f)}
        with open(folder / "log.csv") as f:
            log = list(csv.DictReader(f))
        cfg = method.config
        rows[name] = {
            "variant": cfg.variant, "min_reprojection": cfg.min_reprojection, "automask": cfg.automask,
            "full_res": cfg.full_res, "ssim_weight": cfg.ssim_weight, "smoothness": cfg.smoothness,
            "smoothness_weight": cfg.smoothness_weight, "steps": int(log[-1]["step"]),
            "train_seconds": float(log[-1]["time"]), "test": metrics.average_metrics(per_image),
            "abs_rel_per_image": [r["abs_rel"] for r in per_image],
            "moving_cars_abs_rel": cars, "moving_cars_images": n_cars, "val_curve": curve,
        }
        print(f"{name:<14} {cfg.variant:<24} test abs rel {rows[name]['test']['abs_rel']:.4f}, moving cars "
              f"{cars:.4f} ({n_cars} images), val {curve}  ({time.perf_counter() - t0:.1f} s)")
    Path(ns.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
