"""Paired comparison of trained models on the synthetic test splits (the intervals the weights
README quotes for runs that are not shipped, such as the 8,000-step SfMLearner).

For every split, each model's median-scaled abs rel on the 100 images (the course's protocol,
chapter 10), then for every pair ``A-B`` asked for, the difference of means with its 95 %
paired-bootstrap interval over the test worlds (:func:`lesson_lib.evaluation.paired_bootstrap`,
the images of one world resampled together).

    python benchmarks/compare_models.py md2=lesson_lib/weights/monodepth2.pt \\
        sfm8k=runs/sfmlearner_no_mask_8k.pt --pair md2-sfm8k
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lesson_lib import evaluation, methods


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="NAME=WEIGHTS (a weights file or a training checkpoint)")
    p.add_argument("--pair", action="append", default=[], metavar="A-B",
                   help="a difference to report (repeatable); default: every model against the first")
    p.add_argument("--split", action="append", choices=("test", "test_shifted", "val"),
                   help="splits to score (repeatable; default: test and test_shifted)")
    ns = p.parse_args()
    files = dict(spec.split("=", 1) for spec in ns.models)
    if len(files) != len(ns.models) or any(not n or not f for n, f in files.items()):
        p.error("give each model as NAME=WEIGHTS, each NAME once")
    names = list(files)
    pairs = [tuple(x.split("-", 1)) for x in ns.pair] or [(n, names[0]) for n in names[1:]]
    for a, b in pairs:
        if a not in files or b not in files:
            p.error(f"--pair {a}-{b}: both names must be among {names}")
    loaded = {n: methods.load_model(f) for n, f in files.items()}
    for split in ns.split or ["test", "test_shifted"]:
        data = evaluation.test_split(split)
        world = [i // evaluation.TEST_FRAMES for i in range(len(data))]
        abs_rel = {}
        for name, (model, method, _) in loaded.items():
            with torch.no_grad():
                rows = evaluation.per_image_metrics(evaluation.model_predictor(model, method), data,
                                                    post_processing=(False,), metric=False)
            abs_rel[name] = np.array([r["abs_rel"] for r in rows["median-scaled"]])
            print(f"{split:<13} {name:<16} abs rel {abs_rel[name].mean():.4f}  ({len(data)} images, median-scaled)")
        for a, b in pairs:
            d = evaluation.paired_bootstrap(abs_rel[a], abs_rel[b], world)
            print(f"{split:<13} {a} - {b}: {d['mean']:+.4f}  95 % interval [{d['low']:+.4f}, {d['high']:+.4f}] "
                  f"over {d['groups']} worlds")


if __name__ == "__main__":
    main()
