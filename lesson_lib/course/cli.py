"""The command line: ``python -m lesson_lib COMMAND ...``.

Commands:
  start [--dir DIR]           open the course as a learner: your own copy of the chapters with the
                              exercises blank (written once, never overwritten), in JupyterLab
  train METHOD [options]      train a model (methods: see 'train --help'); --help lists the options
  evaluate WEIGHTS [options]  depth metrics of a trained model on a synthetic split or on KITTI raw
  predict IMAGE... [options]  coloured disparity PNG and raw .npy for each image
  export-weights CKPT OUT     a small weights file from a training checkpoint
  student SRC [--out DIR]     write student versions of notebooks (solutions removed)
  run-notebooks NOTEBOOK...   execute notebooks top to bottom in place, storing outputs
  book [--out DIR]            build the course as a website (every chapter with its stored outputs;
                              needs pip install -r requirements-book.txt)

``--help`` after any command lists its options. ``train``, ``evaluate`` and ``predict`` work for
every method of the registry (:mod:`lesson_lib.methods`): a checkpoint or weights file names its
method. Every option of ``train`` comes from a typed configuration:
:class:`~lesson_lib.training.TrainConfig` (the loop), the method's own options dataclass and the
data's (:class:`SyntheticData`). Under ``torchrun`` the same ``train`` command trains on
several processes. A wrong argument ends with one line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..training.datasets import SyntheticData
from ..training import CheckpointError, TrainConfig, config_from_args, config_to_argparse

__all__ = ["SyntheticData", "main", "main_train", "main_evaluate", "main_predict", "main_export"]


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


class _Parser(argparse.ArgumentParser):
    """argparse with one line ``error: ...`` on a wrong argument (no usage dump), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} ('{self.prog} --help' lists the options)\n")


def _device(name: str) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda``; ValueError with a clear message for CUDA without a GPU."""
    from ..training import pick_device

    return pick_device(None if name == "auto" else name)


def _load_worlds(split: str, sequences: int, frames: int, size: dict[str, int], what: str) -> list:
    from ..training.datasets import load_worlds

    return load_worlds(split, sequences, frames, size, what)


# --------------------------------------------------------------------------------------------
# train


def _train_parser(name: str) -> argparse.ArgumentParser:
    from .. import methods

    cls = methods.get_method(name)
    p = _Parser(
        prog=f"python -m lesson_lib train {name}",
        description=f"Train {name} on the synthetic world. Example: python -m lesson_lib train {name} "
        "--steps 3000 --out-dir runs/" + name,
    )
    config_to_argparse(p, TrainConfig)
    config_to_argparse(p, cls.config_class)
    config_to_argparse(p, SyntheticData)
    return p


def main_train(argv: list[str]) -> int:
    from .. import methods

    names = methods.available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m lesson_lib train METHOD [options]\n\nmethods: " + ", ".join(names)
              + "\n\n'python -m lesson_lib train METHOD --help' lists the options.")
        return 0 if argv else 2
    name = argv[0]
    if name not in names:
        return _fail(f"unknown method {name!r}; available: {', '.join(names)}")
    from ..training import train_worker

    cls = methods.get_method(name)
    parser = _train_parser(name)
    ns = parser.parse_args(argv[1:])
    if ns.steps == 0 and any(a == "--steps" or a.startswith("--steps=") for a in argv[1:]):
        parser.error("--steps must be >= 1 (leave it out to train for --epochs passes over the data)")
    try:
        train_cfg = config_from_args(TrainConfig, ns)
        method_cfg = config_from_args(cls.config_class, ns)
        data_cfg = config_from_args(SyntheticData, ns)
        _device(train_cfg.device)
    except ValueError as exc:
        parser.error(str(exc))
    out = Path(train_cfg.out_dir)
    if (out / "latest.pt").is_file() and not (train_cfg.resume or train_cfg.overwrite):
        return _fail(f"{out} already holds a run ({out / 'latest.pt'}): add --resume to continue it, "
                     "--overwrite to start afresh, or choose another --out-dir")
    method = cls(method_cfg)
    try:  # before the data, which may take minutes to render: e.g. the depth stage's flow weights
        method.build_model()
    except (CheckpointError, ValueError) as exc:
        return _fail(str(exc))
    train, val = method.build_datasets(data_cfg, train_cfg.seed)
    try:
        trainer = train_worker(method, train_cfg, train, val)
    except (FileExistsError, CheckpointError, ValueError) as exc:
        return _fail(str(exc))
    if trainer.is_main:
        print(f"trained {trainer.step} steps in {trainer.elapsed:.0f} s on {trainer.device}; "
              f"checkpoint {out / 'latest.pt'}")
    return 0


# --------------------------------------------------------------------------------------------
# evaluate


def _describe(method: Any) -> str:
    return method.describe()


def main_evaluate(argv: list[str]) -> int:
    from ..evaluation import MAX_DEPTH, TEST_FRAMES, TEST_SEQUENCES

    p = _Parser(
        prog="python -m lesson_lib evaluate",
        description="The depth metrics of a trained model (any method) with the course's protocol (chapter 10): "
        "per image then averaged, depth <= 80 m, in metres (methods with metric depth) and median-scaled, without "
        "and with the flip post-processing; on a synthetic split (whole image), or on KITTI raw with a split file "
        "such as Eigen's test files (--kitti ROOT --split-file FILE; Garg crop).",
    )
    p.add_argument("weights", help="a weights file (lesson_lib/weights/*.pt) or a training checkpoint (latest.pt)")
    p.add_argument("--split", default="test", choices=("test", "test_shifted", "val"), help="the split (default: test)")
    p.add_argument("--sequences", type=int, default=TEST_SEQUENCES, help=f"worlds of the split (default: {TEST_SEQUENCES})")
    p.add_argument("--frames", type=int, default=TEST_FRAMES, help=f"frames per world (default: {TEST_FRAMES})")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--motion-sequences", type=int, default=12,
                   help="video methods: training worlds (x 10 frames) whose mean motion is ATE's second baseline (default: 12)")
    p.add_argument("--crop", default=None, choices=("none", "garg"),
                   help="the evaluated region: none (the whole image; default on the synthetic splits) or garg "
                   "(Garg et al.'s crop; default on KITTI)")
    p.add_argument("--kitti", default=None, metavar="ROOT",
                   help="evaluate on KITTI raw instead (the folder holding the date folders); needs --split-file")
    p.add_argument("--split-file", default=None,
                   help="with --kitti: one frame per line, '<date>/<drive> <frame> <l|r>' (e.g. the Eigen test files)")
    p.add_argument("--img-ext", default=".png", help="with --kitti: the image file ending (default: .png)")
    p.add_argument("--height", type=int, default=375, help="with --kitti: images and LiDAR depth at this size (default: 375)")
    p.add_argument("--width", type=int, default=1242, help="with --kitti: (default: 1242, KITTI's full size)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: CUDA if present")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    ns = p.parse_args(argv)
    if ns.sequences < 1 or ns.frames < 1 or ns.batch_size < 1 or ns.motion_sequences < 1:
        p.error("--sequences, --frames, --batch-size and --motion-sequences must be >= 1")
    if (ns.kitti is None) != (ns.split_file is None):
        p.error("--kitti and --split-file go together")
    if ns.height < 1 or ns.width < 1:
        p.error("--height and --width must be >= 1")
    if ns.kitti is not None:
        return _evaluate_kitti(ns)
    from .. import methods
    from ..evaluation import evaluate_method
    from ..metrics import format_metrics

    try:
        device = _device(ns.device)
        model, method, _ = methods.load_model(ns.weights, device)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    crop = None if ns.crop in (None, "none") else ns.crop
    worlds = _load_worlds(ns.split, ns.sequences, ns.frames, {}, f"{ns.split} split")
    motion = []
    if "poses" in method.predicts and ns.frames >= 5:
        motion = _load_worlds("train", ns.motion_sequences, 10, {}, "mean motion from")
    r = evaluate_method(model, method, worlds, batch_size=ns.batch_size, crop=crop, motion_worlds=motion)
    report: dict[str, Any] = {"weights": str(ns.weights), "method": method.name, "split": ns.split}
    if "results" in r:
        print(f"{ns.weights}: {_describe(method)}, {r['images']} images of the {ns.split} split, "
              f"depth <= {MAX_DEPTH:.0f} m, {'Garg crop' if crop else 'whole image'}, {r['depth_seconds']:.1f} s on {device}")
        print(format_metrics(r["results"]))
        report.update(images=r["images"], crop=crop or "none", results=r["results"])
    if "ate" in r:
        ate = r["ate"]
        m, still, moving = ate["model"], ate["no_motion"], ate["mean_motion"]
        print(f"ATE-5 (SfMLearner's convention, m, {m['snippets']} snippets): model {m['ate_mean']:.4f} +- "
              f"{m['ate_std']:.4f}; no-motion baseline {still['ate_mean']:.4f} +- {still['ate_std']:.4f}; "
              f"mean-motion baseline {moving['ate_mean']:.4f} +- {moving['ate_std']:.4f}"
              + (" (3-frame model: poses chained)" if ate["chained"] else ""))
        report["ate"] = ate
    if "relative_pose" in r:
        rel = r["relative_pose"]
        print(f"two-view pose, target to next frame ({rel['pairs']} pairs): rotation error "
              f"{rel['rotation_deg_mean']:.3f} deg, translation-direction error {rel['direction_deg_mean']:.2f} deg, "
              f"{rel['failures']} failed")
        report["relative_pose"] = rel
    if "flow" in r:
        flow = dict(r["flow"])
        print(f"{ns.weights}: {_describe(method)}, flow of {flow['pairs']} frame pairs of the {ns.split} split, "
              f"{flow.pop('seconds'):.1f} s on {device}")
        print(f"{'EPE (px)':<18}{'all':>10}{'static':>10}{'moving':>10}")
        for label, key in (("model", "epe"), ("zero flow", "zero_flow_epe")):
            print(f"{label:<18}" + "".join(f"{flow[f'{key}_{k}']:10.3f}" for k in ("all", "static", "moving")))
        if "results" in r:
            report["flow"] = flow
        else:  # a flow model alone
            report["pairs"] = flow.pop("pairs")
            report["flow"] = flow
    for reason in r["skipped"]:
        print(f"not measured: {reason}: use --frames 5 or more", file=sys.stderr)
    if "results" not in r and "flow" not in r:
        return _fail(f"nothing to evaluate for {_describe(method)} on {ns.frames} frames per world")
    if ns.json:
        Path(ns.json).write_text(json.dumps(report, indent=2))
    return 0


def _evaluate_kitti(ns: argparse.Namespace) -> int:
    """``evaluate --kitti ROOT --split-file FILE``: the depth metrics on KITTI raw frames (LiDAR
    depth projected at ``--height x --width``, Garg crop unless ``--crop none``)."""
    from .. import methods
    from ..data.kitti import KittiStereo
    from ..evaluation import MAX_DEPTH, evaluate_model
    from ..metrics import format_metrics

    try:
        device = _device(ns.device)
        model, method, _ = methods.load_model(ns.weights, device)
        data = KittiStereo(ns.kitti, ns.split_file, height=ns.height, width=ns.width, img_ext=ns.img_ext)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    crop = None if ns.crop == "none" else "garg"
    t0 = time.perf_counter()
    try:
        results = evaluate_model(model, method, data, batch_size=ns.batch_size, crop=crop)
    except (FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    print(f"{ns.weights}: {_describe(method)}, {len(data)} KITTI frames of {ns.split_file}, "
          f"{ns.height}x{ns.width}, depth <= {MAX_DEPTH:.0f} m, {'Garg crop' if crop else 'whole image'}, "
          f"{time.perf_counter() - t0:.1f} s on {device}")
    print(format_metrics(results))
    if ns.json:
        report = {"weights": str(ns.weights), "method": method.name, "kitti": str(ns.kitti),
                  "split_file": str(ns.split_file), "images": len(data), "size": [ns.height, ns.width],
                  "crop": crop or "none", "results": results}
        Path(ns.json).write_text(json.dumps(report, indent=2))
    return 0


# --------------------------------------------------------------------------------------------
# predict


def main_predict(argv: list[str]) -> int:
    from .. import weights

    p = _Parser(
        prog="python -m lesson_lib predict",
        description="Predict the disparity of each image with a trained model (any method); writes "
        "OUT/<name>_disp.png (coloured, bright = near) and OUT/<name>_disp.npy (float32 (H, W)). For Monodepth "
        "the disparity is a fraction of the image width: multiply by the width for pixels; depth = focal_px * "
        "baseline / pixels. For monocular methods it is inverse depth up to an unknown scale.",
    )
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...) or folders (every image in them, in "
                   "natural file-name order, e.g. a video's frames)")
    p.add_argument("--weights", default=None,
                   help=f"weights or checkpoint (default: the course's {weights.DEFAULT}, shipped with the package)")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument("--post-process", action="store_true", help="blend with the mirrored image's prediction")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: CUDA if present")
    ns = p.parse_args(argv)
    from matplotlib import pyplot as plt

    from .. import methods
    from ..data.folder import read_image
    from .plotting import colorize

    from ..data.folder import ImageFolder

    files: list[str] = []
    for f in ns.images:
        if Path(f).is_dir():
            try:
                files += [str(q) for q in ImageFolder(f).paths]
            except FileNotFoundError as exc:
                return _fail(str(exc))
        else:
            files.append(f)
    ns.images = files
    missing = [f for f in ns.images if not Path(f).is_file()]
    if missing:
        return _fail("no image file at " + ", ".join(missing))
    try:
        device = _device(ns.device)
        model, method, _ = methods.load_model(ns.weights or weights.path(), device)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    if "depth" not in method.predicts:  # a flow model (TrianFlow's first stage): flow of consecutive images
        return _predict_flow(model, method, ns.images, out, device)
    for f in ns.images:
        try:
            image = torch.from_numpy(read_image(f)).permute(2, 0, 1)[None].to(device)
        except ValueError as exc:
            return _fail(str(exc))
        disp = method.predict_disparity(model, image, post_processing=ns.post_process)
        a = disp[0, 0].cpu().numpy().astype(np.float32)
        stem = Path(f).stem
        np.save(out / f"{stem}_disp.npy", a)
        plt.imsave(out / f"{stem}_disp.png", colorize(a))
        unit = "of the width" if method.metric_depth else "(inverse depth, up to scale)"
        print(f"{f}: {a.shape[1]}x{a.shape[0]}, disparity {a.min():.4f}-{a.max():.4f} {unit} "
              f"-> {out / (stem + '_disp.png')}, {out / (stem + '_disp.npy')}")
    return 0


def _predict_flow(model: Any, method: Any, files: list[str], out: Path, device: torch.device) -> int:
    from matplotlib import pyplot as plt

    from ..data.folder import read_image
    from .plotting import flow_to_rgb

    if len(files) < 2:
        return _fail("a flow model needs at least two images: the flow goes from each image to the next one given")
    try:
        images = [torch.from_numpy(read_image(f)).permute(2, 0, 1)[None].to(device) for f in files]
    except ValueError as exc:
        return _fail(str(exc))
    for f1, f2, a, b in zip(files, files[1:], images, images[1:]):
        if a.shape != b.shape:
            return _fail(f"{f1} and {f2} have different sizes ({tuple(a.shape[-2:])} and {tuple(b.shape[-2:])})")
        flow = method.predict_flow(model, a, b)[0].cpu().numpy().astype(np.float32)  # (2, H, W)
        stem = f"{Path(f1).stem}_to_{Path(f2).stem}"
        np.save(out / f"{stem}_flow.npy", flow)
        plt.imsave(out / f"{stem}_flow.png", flow_to_rgb(flow))
        length = np.sqrt((flow**2).sum(0))
        print(f"{f1} -> {f2}: flow up to {length.max():.1f} px (median {np.median(length):.1f}) -> "
              f"{out / (stem + '_flow.png')} (colour: direction, brightness: length), {out / (stem + '_flow.npy')} "
              f"(float32 (2, H, W): du, dv in pixels)")
    return 0


# --------------------------------------------------------------------------------------------
# export-weights


def main_export(argv: list[str]) -> int:
    p = _Parser(prog="python -m lesson_lib export-weights",
                description="Write the model of a training checkpoint as a small weights file (float16 by default).")
    p.add_argument("checkpoint", help="a training checkpoint (OUT_DIR/latest.pt)")
    p.add_argument("out", help="the weights file to write")
    p.add_argument("--fp32", action="store_true", help="keep float32 (twice the size)")
    ns = p.parse_args(argv)
    from ..training import export_weights

    try:
        path = export_weights(ns.checkpoint, ns.out, half=not ns.fp32)
    except (CheckpointError, FileNotFoundError) as exc:
        return _fail(str(exc))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


# --------------------------------------------------------------------------------------------
# the dispatcher


def main(argv: list[str] | None = None) -> int:
    """``python -m lesson_lib COMMAND ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "start":
        from .start import main as start_main

        return start_main(rest)
    if command == "student":
        from .student import main as student_main

        return student_main(rest)
    if command == "run-notebooks":
        from .notebooks import main as run_main

        return run_main(rest)
    if command == "book":
        from .book import main as book_main

        return book_main(rest)
    commands = {"train": main_train, "evaluate": main_evaluate, "predict": main_predict, "export-weights": main_export}
    if command in commands:
        return commands[command](rest)
    print(f"error: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2
