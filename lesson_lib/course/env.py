"""Notebook set-up and the environment check of chapter 00 (seeding and the device come from
:mod:`lesson_lib.training`, re-exported here for the notebooks)."""

from __future__ import annotations

import platform
from importlib import metadata

import numpy as np
import torch

from ..training.distributed import pick_device
from ..training.randomness import seed_everything

__all__ = ["setup_notebook", "seed_everything", "pick_device", "versions", "device_name", "environment_report"]

_PACKAGES = ("torch", "kornia", "numpy", "matplotlib", "scikit-image", "ipywidgets", "jupyterlab")


def setup_notebook(seed: int = 0) -> torch.device:
    """The one set-up line at the top of every notebook: seeds, figure style, device.

    Returns the device the chapter computes on (GPU if present).
    """
    import matplotlib as mpl

    seed_everything(seed)
    torch.set_printoptions(precision=4, sci_mode=False)
    np.set_printoptions(precision=4, suppress=True)
    mpl.rcParams.update(
        {
            "figure.dpi": 90,
            "figure.figsize": (9.0, 3.5),
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "image.cmap": "magma",
            "font.size": 10,
        }
    )
    return pick_device()


def versions() -> dict[str, str]:
    """Installed versions of the packages the course relies on."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    if "torch" in out:
        # the build matters as much as the version: 2.13.0+cpu, or 2.13.0+cu130 (PyPI's default
        # on Linux), whose package metadata both read 2.13.0
        out["torch"] = torch.__version__
    return out


def device_name(device: torch.device | str = "cpu") -> str:
    """A readable name of the machine that computes: the GPU's name for a CUDA device, else the
    CPU model from ``/proc/cpuinfo`` (benchmarks print it beside their figures)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def environment_report() -> str:
    """A short report: package versions, the compute device and what it means for the course."""
    lines = [f"{k:>13}: {v}" for k, v in versions().items()]
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        mem = torch.cuda.get_device_properties(0).total_memory / 2**30
        lines.append(f"{'device':>13}: CUDA GPU {name} ({mem:.0f} GiB): full training runs are practical")
    else:
        lines.append(
            f"{'device':>13}: CPU only ({torch.get_num_threads()} threads): every chapter runs; "
            "training chapters use short runs and the committed weights"
        )
        if torch.version.cuda:
            lines.append(f"{'':>13}  (PyTorch's GPU build, which runs on the CPU too; its CPU-only build is "
                         "much smaller: see README)")
    return "\n".join(lines)
