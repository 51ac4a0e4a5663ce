"""Why does the per-pixel minimum hurt on the synthetic world? (chapter 11, section 4)

For each checkpoint ``step_N.pt`` of one or more Monodepth2 runs (trained with
``--keep-checkpoints``), on 60 snippets of the validation split (previous, target, next frame):

- **depth**: abs rel, median-scaled (the course's protocol); the median of the per-image
  median-scaling factors and their spread (std / mean); the share of pixels whose disparity sits
  at its ceiling (sigmoid above 0.99, depth at the floor of 0.1);
- **pose**: the predicted translation to the previous and to the next frame, ``|t_prev|`` and
  ``|t_next|`` (in the depth's units: scaled by the image's median-scaling factor, so in metres),
  against the true step, and the angle between the predicted ``t_next`` and the true one;
- **the minimum's choice**: with the model's own depth and poses, the share of pixels where the
  previous frame's error is the smaller (what the per-pixel minimum picks), and the mean of the
  minimum and of the average of the two errors.

Run it on a run trained with the minimum and on its ablation without it to see where they part:

    python -m lesson_lib train monodepth2 $common $B --no-automask --keep-checkpoints --out-dir runs/diag_B_min
    python -m lesson_lib train monodepth2 $common $B --no-min-reprojection --no-automask --keep-checkpoints --out-dir runs/diag_B_base
    python benchmarks/monodepth2_min_diagnosis.py runs/diag_B_base runs/diag_B_min

(``$common`` and ``$B`` as in the weights README's ablation, with ``--checkpoint-every 100``.)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lesson_lib import methods  # noqa: E402
from lesson_lib.data import VideoDataset, load_split  # noqa: E402
from lesson_lib.losses import photometric_error  # noqa: E402
from lesson_lib.methods.monodepth2 import min_reprojection  # noqa: E402
from lesson_lib.warping import rigid_warp  # noqa: E402


def snippets_batch(n_worlds: int = 6, frames: int = 12) -> dict:
    worlds = load_split("val", n_worlds, frames, progress=False)
    data = VideoDataset(worlds, 3, flow=False, skip_static=False)
    picks = np.linspace(0, len(data) - 1, 60).round().astype(int)
    return torch.utils.data.default_collate([data[int(i)] for i in picks])


@torch.no_grad()
def diagnose(path: Path, batch: dict) -> dict:
    model, method = methods.load_model(path, "cpu")[:2]
    model.eval()
    target, sources, K = method.network_inputs(batch)
    disp = method.predict_disparity(model, target)  # (B, 1, h, w) at the network's input size
    depth = 1.0 / disp
    T = method.predict_poses(model, target, sources)  # (B, 2, 4, 4): to the previous, to the next frame
    full = 1.0 / method.predict_disparity(model, batch["target"])[:, 0]  # at the image's size, as the protocol scores it
    gt = batch["depth"][:, 0]
    valid = (gt > 0) & (gt <= 80.0)
    scale = torch.stack([g[v].median() / d[v].median() for d, g, v in zip(full, gt, valid)])
    pred = (full * scale[:, None, None]).clamp(1e-3, 80.0)
    abs_rel = torch.stack([((p[v] - g[v]).abs() / g[v]).mean() for p, g, v in zip(pred, gt, valid)])
    t_pred = T[:, :, :3, 3] * scale[:, None, None]  # metres, with each image's median factor
    t_true = batch["T_t_to_s"][:, :, :3, 3].to(t_pred.dtype)
    cos = torch.nn.functional.cosine_similarity(t_pred[:, 1], t_true[:, 1], dim=1).clamp(-1, 1)
    errs, oks = [], []
    for j in range(2):
        warped, ok = rigid_warp(sources[:, j], depth, T[:, j], K)
        errs.append(photometric_error(warped, target, alpha=0.0)[:, 0])
        oks.append(ok[:, 0].bool())
    err, ok = torch.stack(errs, 1), torch.stack(oks, 1)
    best, source = min_reprojection(err, ok)
    both = ok.all(1)
    sig = (disp - 0.01) / 10.0
    return {
        "abs_rel": float(abs_rel.mean()),
        "factor": float(scale.median()),
        "factor_spread": float(scale.std() / scale.mean()),
        "at_ceiling": float((sig > 0.99).float().mean()),
        "t_prev": float(t_pred[:, 0].norm(dim=1).median()),
        "t_next": float(t_pred[:, 1].norm(dim=1).median()),
        "t_true": float(t_true[:, 1].norm(dim=1).median()),
        "t_next_angle": float(torch.rad2deg(torch.arccos(cos)).median()),
        "picks_prev": float((source[:, 0] == 0)[both].float().mean()),
        "min_err": float(best[:, 0][both].mean()),
        "mean_err": float(err.mean(1)[both].mean()),
    }


@torch.no_grad()
def truth_errors(batch: dict, input_size: tuple[int, int] = (64, 224)) -> dict:
    """The same error terms with the true depth (the sky far away) and the true poses, at the
    networks' input size: what the loss would be if the model were right."""
    from lesson_lib.camera import resize_intrinsics
    from lesson_lib.images import resize

    b, n = batch["sources"].shape[:2]
    target = resize(batch["target"], input_size)
    sources = resize(batch["sources"].flatten(0, 1), input_size).reshape(b, n, 3, *input_size)
    K = resize_intrinsics(batch["K"], tuple(batch["target"].shape[-2:]), input_size)
    depth = torch.nn.functional.interpolate(batch["depth"], size=input_size, mode="nearest")
    depth = torch.where(depth > 0, depth, torch.full_like(depth, 1000.0))
    errs, oks = [], []
    for j in range(n):
        warped, ok = rigid_warp(sources[:, j], depth, batch["T_t_to_s"][:, j].to(depth.dtype), K)
        errs.append(photometric_error(warped, target, alpha=0.0)[:, 0])
        oks.append(ok[:, 0].bool())
    err, ok = torch.stack(errs, 1), torch.stack(oks, 1)
    best, source = min_reprojection(err, ok)
    both = ok.all(1)
    return {"picks_prev": float((source[:, 0] == 0)[both].float().mean()), "min_err": float(best[:, 0][both].mean()),
            "mean_err": float(err.mean(1)[both].mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding step_N.pt checkpoints")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the table (JSON) and, beside it (.npz), three snippets' targets, true depth "
                             "and each run's last disparity maps, at the networks' input size")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    batch = snippets_batch()
    record: dict = {"truth": None, "runs": {}}
    head = (f"{'run':<14}{'step':>6}{'abs rel':>9}{'factor':>8}{'spread':>8}{'ceiling':>9}"
            f"{'|t_prev| m':>11}{'|t_next| m':>11}{'true m':>8}{'t_next deg':>11}{'picks prev':>11}{'min err':>9}{'mean err':>9}")
    print(head)
    truth = truth_errors(batch)
    record["truth"] = truth
    print(f"{'(the truth)':<14}{'':>6}{'':>9}{'':>8}{'':>8}{'':>9}{'':>11}{'':>11}{'':>8}{'':>11}"
          f"{truth['picks_prev']:11.1%}{truth['min_err']:9.4f}{truth['mean_err']:9.4f}")
    for run in args.runs:
        files = sorted(run.glob("step_*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))
        if not files:
            raise SystemExit(f"{run}: no step_N.pt checkpoints (train with --keep-checkpoints)")
        record["runs"][run.name] = {}
        for f in files:
            r = diagnose(f, batch)
            record["runs"][run.name][int(re.findall(r"[0-9]+", f.stem)[0])] = r
            print(f"{run.name:<14}{int(re.findall(r'[0-9]+', f.stem)[0]):>6}{r['abs_rel']:9.3f}{r['factor']:8.2f}"
                  f"{r['factor_spread']:8.1%}{r['at_ceiling']:9.1%}{r['t_prev']:11.3f}{r['t_next']:11.3f}{r['t_true']:8.3f}"
                  f"{r['t_next_angle']:11.1f}{r['picks_prev']:11.1%}{r['min_err']:9.4f}{r['mean_err']:9.4f}", flush=True)


    if args.out is not None:
        save_record(args.out, record, batch, [sorted(r.glob("step_*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))[-1]
                                              for r in args.runs])


def save_record(out: Path, record: dict, batch: dict, last: list[Path], picks: tuple[int, ...] = (5, 30, 50)) -> None:
    """The table as JSON; three snippets' targets (uint8), true depth and each run's last disparity (float16) as .npz."""
    import json

    from lesson_lib.images import resize

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    idx = list(picks)
    arrays = {}
    for path in last:
        model, method = methods.load_model(path, "cpu")[:2]
        model.eval()
        with torch.no_grad():
            target = method.network_inputs({k: batch[k][idx] for k in ("target", "sources", "K")})[0]
            arrays[f"disp_{path.parent.name}"] = method.predict_disparity(model, target)[:, 0].numpy().astype(np.float16)
    size = tuple(arrays[next(iter(arrays))].shape[-2:])
    arrays["target"] = (resize(batch["target"][idx], size).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    arrays["depth"] = torch.nn.functional.interpolate(batch["depth"][idx], size=size, mode="nearest")[:, 0].numpy().astype(np.float16)
    np.savez_compressed(out.with_suffix(".npz"), **arrays)
    print(f"wrote {out} and {out.with_suffix('.npz')}")


if __name__ == "__main__":
    main()
