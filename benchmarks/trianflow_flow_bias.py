"""Does TrianFlow's flow loss prefer a flow shorter than the true one? (chapter 09)

Two measurements on the test split's frame pairs, both against the world's exact flow:

1. **The loss along the true flow.** The flow stage's loss (``flow_loss``: photometric error of
   both directions over the network's four levels plus the flow smoothness) evaluated for the
   scaled fields ``alpha * F_true`` (every level resampled from it, as the network's levels would
   hold it), for each loss variant. A loss whose minimum lies at ``alpha < 1`` pulls a network
   towards flows shorter than the truth, whatever the network can represent. (The backward field
   is taken as ``-alpha * F_true``, an approximation: the occlusion mask is off.)
2. **The networks' gain.** For each weights file, the flow's component along the true flow
   divided by the true flow's length (``sum p.g / sum g.g``), in bins of the true flow's length,
   over the static, visible surface pixels; 1 is unbiased.

    python benchmarks/trianflow_flow_bias.py [--weights A.pt B.pt ...] [--pairs 15]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
ALPHAS = (0.0, 0.6, 0.8, 0.9, 1.0, 1.1)
BINS = (0.0, 4.0, 8.0, 16.0, 32.0, 1e9)


def _pairs(count: int):
    from lesson_lib.training.datasets import load_worlds
    from lesson_lib.data.synthetic import VideoDataset

    data = VideoDataset(load_worlds("test", 20, 5, dict(height=128, width=416), "test split"), 3,
                        skip_static=False, flow=True)
    step = max(1, len(data) // count)
    return [data[i] for i in range(0, len(data), step)][:count]


def loss_scan(items) -> None:
    from lesson_lib.methods.trianflow import TrianFlowConfig, flow_loss
    from lesson_lib.models.flow import upsample_flow

    variants = {
        "level resolution, smoothness 0.1": TrianFlowConfig(loss_resolution="level"),
        "level resolution, smoothness 0": TrianFlowConfig(loss_resolution="level", smoothness_weight=0.0),
        "input resolution, smoothness 0.1": TrianFlowConfig(loss_resolution="input"),
    }
    print(f"1. the flow loss at alpha x the true flow, mean over {len(items)} test pairs")
    print(f"{'loss':<36}" + "".join(f"{a:>9.1f}" for a in ALPHAS) + f"{'argmin':>9}")
    for name, cfg in variants.items():
        total = np.zeros(len(ALPHAS))
        for it in items:
            im1, im2, gt = it["target"][None], it["sources"][None, -1], it["flow"][None]
            for j, a in enumerate(ALPHAS):
                levels = lambda f: {lv: upsample_flow(f, (128 >> lv, 416 >> lv)) for lv in (2, 3, 4, 5)}  # noqa: E731
                with torch.no_grad():
                    loss, _ = flow_loss(levels(a * gt), levels(-a * gt), im1, im2, cfg, occlusion=False)
                total[j] += float(loss)
        total /= len(items)
        print(f"{name:<36}" + "".join(f"{v:9.4f}" for v in total) + f"{ALPHAS[int(np.argmin(total))]:9.1f}")


def gains(items, weights: list[str]) -> None:
    from lesson_lib.methods import load_model

    print(f"\n2. the network's flow along the true flow / the true flow's length, {len(items)} test pairs")
    labels = [f"{lo:g}-{hi:g} px" if hi < 1e8 else f">{lo:g} px" for lo, hi in zip(BINS[:-1], BINS[1:])]
    print(f"{'weights':<44}" + "".join(f"{b:>10}" for b in labels) + f"{'EPE':>8}")
    for path in weights:
        model, method, _ = load_model(path)
        model.eval()
        num, den, epe, n = np.zeros(len(labels)), np.zeros(len(labels)), 0.0, 0
        for it in items:
            gt = it["flow"][None]
            with torch.no_grad():
                pred = method.predict_flow(model, it["target"][None], it["sources"][None, -1])
            m = (it["flow_valid"].bool() & (it["depth"] > 0) & ~it["moving"].bool())[0]
            g, p = gt[0][:, m].T.double().numpy(), pred[0][:, m].T.double().numpy()
            k = np.digitize(np.linalg.norm(g, axis=1), BINS) - 1
            np.add.at(num, k, (p * g).sum(1))
            np.add.at(den, k, (g * g).sum(1))
            epe += float(np.linalg.norm(p - g, axis=1).sum())
            n += len(g)
        name = str(path) if len(str(path)) <= 43 else "..." + str(path)[-40:]
        print(f"{name:<44}" + "".join(f"{a / d:10.3f}" if d else f"{'-':>10}" for a, d in zip(num, den))
              + f"{epe / n:8.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="*", default=[str(REPO / "lesson_lib" / "weights" / "trianflow.pt")])
    p.add_argument("--pairs", type=int, default=15)
    args = p.parse_args(argv)
    items = _pairs(args.pairs)
    loss_scan(items)
    if args.weights:
        gains(items, args.weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
