"""The course's training, evaluation and prediction commands (``python -m lesson_lib ...``).

::

    python -m lesson_lib train monodepth [options]      # options generated from the configs
    python -m lesson_lib evaluate WEIGHTS [options]     # the seven depth metrics on the test split
    python -m lesson_lib predict IMAGE... [--weights W] # coloured disparity PNG + raw .npy
    python -m lesson_lib export-weights CHECKPOINT OUT  # a small weights file from a checkpoint

``--help`` after any command lists its options. Every option of ``train`` comes from a typed
configuration: :class:`~lesson_lib.training.TrainConfig` (the loop),
:class:`~lesson_lib.monodepth.MonodepthConfig` (the method) and :class:`SyntheticStereoData`
(the data). Under ``torchrun`` the same ``train`` command trains on several processes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .training import CheckpointError, TrainConfig, _field, config_from_args, config_to_argparse

__all__ = ["SyntheticStereoData", "DEFAULT_WEIGHTS", "main_train", "main_evaluate", "main_predict", "main_export"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "data" / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "monodepth_lr.pt"
"""The Monodepth weights committed with the course (see ``data/weights/README.md``)."""

TEST_SEQUENCES, TEST_FRAMES = 20, 5
"""The synthetic test split the course reports: seeds 20000-20019, 5 frames each (100 images)."""


@dataclass
class SyntheticStereoData:
    """Which stereo pairs of the synthetic world to train and validate on (appendix A1)."""

    train_sequences: int = _field(200, "training worlds (seeds 0..N-1 of the train split)")
    train_frames: int = _field(10, "frames rendered per training world")
    val_sequences: int = _field(8, "validation worlds (seeds 10000..)")
    val_frames: int = _field(5, "frames per validation world")
    image_height: int = _field(128, "rendered image height")
    image_width: int = _field(416, "rendered image width")

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < (0 if name.startswith("val_") else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be >= {0 if name.startswith('val_') else 1}, got {value}")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------------------------------
# train


def _train_parser() -> argparse.ArgumentParser:
    from .monodepth import MonodepthConfig

    p = argparse.ArgumentParser(
        prog="python -m lesson_lib train monodepth",
        description="Train Monodepth (chapter 06) on stereo pairs of the synthetic world. "
        "Example: python -m lesson_lib train monodepth --steps 3000 --input-height 64 --input-width 224 "
        "--out-dir runs/monodepth_lr",
    )
    config_to_argparse(p, TrainConfig)
    config_to_argparse(p, MonodepthConfig)
    config_to_argparse(p, SyntheticStereoData)
    return p


def main_train(argv: list[str]) -> int:
    methods = ("monodepth",)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m lesson_lib train METHOD [options]\n\nmethods: " + ", ".join(methods)
              + "\n\n'python -m lesson_lib train monodepth --help' lists the options.")
        return 0 if argv else 2
    if argv[0] not in methods:
        return _fail(f"unknown method {argv[0]!r}; available: {', '.join(methods)}")
    from .data.synthetic import StereoDataset, load_split
    from .monodepth import Monodepth, MonodepthConfig
    from .training import train_worker

    parser = _train_parser()
    ns = parser.parse_args(argv[1:])
    try:
        train_cfg = config_from_args(TrainConfig, ns)
        method_cfg = config_from_args(MonodepthConfig, ns)
        data_cfg = config_from_args(SyntheticStereoData, ns)
    except ValueError as exc:
        parser.error(str(exc))
    size = dict(height=data_cfg.image_height, width=data_cfg.image_width)
    train = StereoDataset(load_split("train", data_cfg.train_sequences, data_cfg.train_frames, **size),
                          augment=True, seed=train_cfg.seed)
    val = None
    if data_cfg.val_sequences and data_cfg.val_frames:
        val = StereoDataset(load_split("val", data_cfg.val_sequences, data_cfg.val_frames, **size), augment=False)
    try:
        trainer = train_worker(Monodepth(method_cfg), train_cfg, train, val)
    except (FileExistsError, CheckpointError) as exc:
        return _fail(str(exc))
    if trainer.is_main:
        print(f"trained {trainer.step} steps in {trainer.elapsed:.0f} s on {trainer.device}; "
              f"checkpoint {Path(train_cfg.out_dir) / 'latest.pt'}")
    return 0


# --------------------------------------------------------------------------------------------
# evaluate


def main_evaluate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lesson_lib evaluate",
        description="The depth metrics of a trained Monodepth model on the synthetic test split: in metres "
        "and median-scaled, without and with the flip post-processing.",
    )
    p.add_argument("weights", help="a weights file (data/weights/*.pt) or a training checkpoint (latest.pt)")
    p.add_argument("--split", default="test", choices=("test", "test_shifted", "val"), help="the split (default: test)")
    p.add_argument("--sequences", type=int, default=TEST_SEQUENCES, help=f"worlds of the split (default: {TEST_SEQUENCES})")
    p.add_argument("--frames", type=int, default=TEST_FRAMES, help=f"frames per world (default: {TEST_FRAMES})")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: CUDA if present")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    ns = p.parse_args(argv)
    if ns.sequences < 1 or ns.frames < 1 or ns.batch_size < 1:
        p.error("--sequences, --frames and --batch-size must be >= 1")
    from .data.synthetic import StereoDataset, load_split
    from .env import pick_device
    from .metrics import format_metrics
    from .monodepth import evaluate, load_model

    device = pick_device(None if ns.device == "auto" else ns.device)
    try:
        model, config, meta = load_model(ns.weights, device)
    except (CheckpointError, FileNotFoundError) as exc:
        return _fail(str(exc))
    data = StereoDataset(load_split(ns.split, ns.sequences, ns.frames), augment=False)
    t0 = time.perf_counter()
    results = evaluate(model, config, data, batch_size=ns.batch_size)
    print(f"{ns.weights}: Monodepth ({config.variant}), {len(data)} images of the {ns.split} split, "
          f"depth <= 80 m, {time.perf_counter() - t0:.1f} s on {device}")
    print(format_metrics(results))
    if ns.json:
        Path(ns.json).write_text(json.dumps({"weights": str(ns.weights), "split": ns.split, "images": len(data),
                                             "results": results}, indent=2))
    return 0


# --------------------------------------------------------------------------------------------
# predict


def main_predict(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lesson_lib predict",
        description="Predict the disparity of each image with a trained Monodepth model; writes "
        "OUT/<name>_disp.png (coloured, bright = near) and OUT/<name>_disp.npy (float32 (H, W) disparity as "
        "a fraction of the image width: multiply by the width for pixels; depth = focal_px * baseline / pixels).",
    )
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="weights or checkpoint (default: the course's Monodepth)")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument("--post-process", action="store_true", help="blend with the mirrored image's prediction")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: CUDA if present")
    ns = p.parse_args(argv)
    from matplotlib import pyplot as plt

    from .data.folder import read_image
    from .env import pick_device
    from .monodepth import load_model, predict_disparity
    from .plotting import colorize

    missing = [f for f in ns.images if not Path(f).is_file()]
    if missing:
        return _fail("no image file at " + ", ".join(missing))
    device = pick_device(None if ns.device == "auto" else ns.device)
    try:
        model, config, _ = load_model(ns.weights, device)
    except (CheckpointError, FileNotFoundError) as exc:
        return _fail(str(exc))
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in ns.images:
        try:
            image = torch.from_numpy(read_image(f)).permute(2, 0, 1)[None].to(device)
        except ValueError as exc:
            return _fail(str(exc))
        disp = predict_disparity(model, image, post_processing=ns.post_process, size=config.input_size)
        a = disp[0, 0].cpu().numpy().astype(np.float32)
        stem = Path(f).stem
        np.save(out / f"{stem}_disp.npy", a)
        plt.imsave(out / f"{stem}_disp.png", colorize(a))
        print(f"{f}: {a.shape[1]}x{a.shape[0]}, disparity {a.min():.4f}-{a.max():.4f} of the width "
              f"-> {out / (stem + '_disp.png')}, {out / (stem + '_disp.npy')}")
    return 0


# --------------------------------------------------------------------------------------------
# export-weights


def main_export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m lesson_lib export-weights",
                description="Write the model of a training checkpoint as a small weights file (float16 by default).")
    p.add_argument("checkpoint", help="a training checkpoint (OUT_DIR/latest.pt)")
    p.add_argument("out", help="the weights file to write")
    p.add_argument("--fp32", action="store_true", help="keep float32 (twice the size)")
    ns = p.parse_args(argv)
    from .monodepth import export_weights

    try:
        path = export_weights(ns.checkpoint, ns.out, half=not ns.fp32)
    except (CheckpointError, FileNotFoundError) as exc:
        return _fail(str(exc))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0
