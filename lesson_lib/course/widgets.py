"""Interactive explorers. Each widget wraps a plain function that draws one figure, so the
notebooks can call the same function headless (and the tests can too)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..stereo import depth_error_from_disparity_error, disparity_to_depth

__all__ = ["stereo_depth_figure", "stereo_explorer", "image_depth_figure", "depth_explorer"]


def stereo_depth_figure(
    focal: float = 721.0, baseline: float = 0.54, disparity: float = 20.0, disparity_error: float = 1.0
) -> Figure:
    """Depth from disparity for one camera rig (chapter 01).

    Left: ``Z = f B / d`` over disparities 1..128 px, with the chosen disparity and the depth
    interval that ``d +- disparity_error`` maps to. Right: the depth error versus depth
    (``Z**2 dd / (f B)``), with the chosen point.
    """
    if disparity <= disparity_error:
        raise ValueError(f"disparity ({disparity}) must exceed its error ({disparity_error})")
    d = torch.linspace(1.0, 128.0, 400, dtype=torch.float64)
    z = disparity_to_depth(d, focal, baseline, min_depth=1e-6, max_depth=1e9)
    z0 = float(focal * baseline / disparity)
    z_near = float(focal * baseline / (disparity + disparity_error))
    z_far = float(focal * baseline / (disparity - disparity_error))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    a1.plot(d, z, color="C0")
    a1.axvspan(disparity - disparity_error, disparity + disparity_error, color="C1", alpha=0.25)
    a1.axhspan(z_near, z_far, color="C1", alpha=0.25)
    a1.plot([disparity], [z0], "o", color="C1")
    a1.set_xlabel("disparity d [px]")
    a1.set_ylabel("depth Z [m]")
    a1.set_ylim(0, min(float(z.max()), 4 * z_far))
    a1.set_title(f"Z = fB/d = {z0:.2f} m; d +- {disparity_error:g} px -> [{z_near:.2f}, {z_far:.2f}] m")
    zz = torch.linspace(0.5, 100.0, 400, dtype=torch.float64)
    a2.plot(zz, depth_error_from_disparity_error(zz, focal, baseline, disparity_error), color="C0")
    a2.plot([z0], [float(depth_error_from_disparity_error(torch.tensor(z0), focal, baseline, disparity_error))], "o", color="C1")
    a2.set_xlabel("depth Z [m]")
    a2.set_ylabel(f"depth error for {disparity_error:g} px [m]")
    a2.set_title(f"f = {focal:.0f} px, B = {baseline:.2f} m: error grows as Z^2")
    fig.tight_layout()
    return fig


def stereo_explorer():
    """Sliders for focal length, baseline, disparity and disparity error driving
    :func:`stereo_depth_figure`. Returns the ipywidgets ``interactive`` object."""
    import ipywidgets as w

    def show(focal, baseline, disparity, disparity_error):
        stereo_depth_figure(focal, baseline, max(disparity, disparity_error + 0.5), disparity_error)
        plt.show()

    style = {"description_width": "110px"}
    layout = w.Layout(width="420px")
    return w.interactive(
        show,
        focal=w.FloatSlider(value=721.0, min=100.0, max=2000.0, step=10.0, description="focal f [px]", style=style, layout=layout),
        baseline=w.FloatSlider(value=0.54, min=0.05, max=2.0, step=0.01, description="baseline B [m]", style=style, layout=layout),
        disparity=w.FloatSlider(value=20.0, min=2.0, max=128.0, step=0.5, description="disparity d [px]", style=style, layout=layout),
        disparity_error=w.FloatSlider(value=1.0, min=0.1, max=1.5, step=0.05, description="error [px]", style=style, layout=layout),
    )


def image_depth_figure(image: torch.Tensor | np.ndarray, models: Mapping[str, tuple[Any, Any]], title: str = "") -> Figure:
    """An image and the inverse depth each model predicts for it (chapter 11).

    Args:
        image: ``(3, H, W)`` float in [0, 1] or ``(H, W, 3)`` uint8 (as :func:`lesson_lib.data.folder.read_image`).
        models: ``{name: (model, method)}`` as :func:`lesson_lib.methods.load_model` returns them.

    Each map is the model's disparity (``method.predict_disparity``) divided by its median: the
    monocular models know depth only up to scale, so the maps show relative inverse depth
    (1 = the image's median depth; 2 = half as far), one colour bar each.
    """
    from .plotting import show_map

    x = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image
    if x.ndim == 3 and x.shape[-1] == 3 and x.shape[0] != 3:
        x = x.permute(2, 0, 1)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"image: expected (3, H, W) or (H, W, 3), got {tuple(x.shape)}")
    if not models:
        raise ValueError("models: give at least one (model, method) pair")
    n = 1 + len(models)
    aspect = x.shape[1] / x.shape[2]
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2 * aspect + 0.7), squeeze=False)
    axes = axes[0]
    axes[0].imshow(x.permute(1, 2, 0).clamp(0, 1).numpy())
    axes[0].set_title(title or f"{x.shape[2]} x {x.shape[1]} px")
    axes[0].axis("off")
    for ax, (name, (model, method)) in zip(axes[1:], models.items()):
        device = next(model.parameters()).device
        disp = method.predict_disparity(model, x[None].to(device))[0, 0].float().cpu()
        rel = disp / disp.median()
        show_map(ax, rel, "inverse_depth", unit="x median", vmin=0.0, vmax=float(rel.quantile(0.98)), title=name)
    fig.tight_layout()
    return fig


def depth_explorer(models: Mapping[str, tuple[Any, Any]], folder: str | Path | None = None):
    """Choose an image (from ``folder``, or upload one) and see what each model predicts for it
    (:func:`image_depth_figure`). Returns the ipywidgets box."""
    import io

    import ipywidgets as w
    from PIL import Image

    from ..data.folder import ImageFolder

    files = ImageFolder(folder).paths if folder is not None else []
    choose = w.Dropdown(options=[(p.name, str(p)) for p in files], description="image", layout=w.Layout(width="420px"))
    upload = w.FileUpload(accept="image/*", multiple=False, description="or upload")
    out = w.Output()

    def draw(image, title):
        with out:
            out.clear_output(wait=True)
            image_depth_figure(image, models, title)
            plt.show()

    def on_choose(change=None):
        if choose.value:
            from ..data.folder import read_image

            draw(read_image(choose.value), Path(choose.value).name)

    def on_upload(change):
        value = upload.value
        item = value[0] if isinstance(value, (list, tuple)) else next(iter(value.values()))
        data = bytes(item["content"])
        img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        draw(img, item.get("name", "uploaded image"))

    choose.observe(on_choose, names="value")
    upload.observe(on_upload, names="value")
    on_choose()
    return w.VBox([w.HBox([choose, upload]), out])
