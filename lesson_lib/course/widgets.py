"""Interactive explorers. Each widget wraps a plain function that draws one figure, so the
notebooks can call the same function headless (and the tests can too)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from ..stereo import depth_error_from_disparity_error, disparity_to_depth

__all__ = ["stereo_depth_figure", "stereo_explorer"]


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
