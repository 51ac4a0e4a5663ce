"""The figures every chapter draws alike: images, colour-mapped depth, point clouds, cameras."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = [
    "QUANTITIES",
    "Quantity",
    "to_numpy_image",
    "colorize",
    "show_images",
    "show_map",
    "show_maps",
    "flow_legend",
    "plot_point_cloud",
    "draw_camera",
    "flow_to_rgb",
    "plot_world_map",
]


@dataclass(frozen=True)
class Quantity:
    """How the course draws one kind of map: its colour map and its default unit."""

    cmap: str
    unit: str
    meaning: str


QUANTITIES: dict[str, Quantity] = {
    "depth": Quantity("magma_r", "m", "near = bright"),
    "disparity": Quantity("magma", "px", "near = bright"),
    "inverse_depth": Quantity("magma", "1/m", "near = bright"),
    "error": Quantity("viridis", "m", "larger = brighter"),
    "loss": Quantity("viridis", "", "larger = brighter"),
    "similarity": Quantity("RdBu", "", "1 = identical, 0 white"),
    "weight": Quantity("gray", "", "1 = white"),
    "mask": Quantity("gray", "", "1 = white"),
}
"""One colour convention for the whole course. Depth and disparity both show **near as bright**
(depth with the reversed magma, disparity with magma), so a colour means the same distance in
either; errors and losses use viridis, which no distance map uses; similarities (SSIM and its
terms: 1 for identical patches, down to -1) use the diverging RdBu on [-1, 1], white at 0, red
below, so a negative value stands out; weights and masks are grey. Optical flow is drawn with
:func:`flow_to_rgb` and explained by :func:`flow_legend`."""


def to_numpy_image(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(1, C, H, W)``, ``(C, H, W)``, ``(H, W)`` tensor or array to ``(H, W)`` / ``(H, W, 3)``
    NumPy for matplotlib (the first image of a batch)."""
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"cannot show an array of shape {np.shape(x)} as an image")
    return a


def colorize(
    x: torch.Tensor | np.ndarray,
    cmap: str = "magma",
    vmin: float | None = None,
    vmax: float | None = None,
    mask: torch.Tensor | np.ndarray | None = None,
) -> np.ndarray:
    """Colour-map a depth or disparity map to ``(H, W, 3)`` RGB in ``[0, 1]``; pixels outside
    ``mask`` are grey. The range defaults to the 2nd-98th percentile of the valid pixels."""
    a = to_numpy_image(x).astype(np.float64)
    m = np.ones(a.shape, bool) if mask is None else to_numpy_image(mask).astype(bool)
    vals = a[m & np.isfinite(a)]
    if vals.size == 0:
        raise ValueError("nothing valid to colour-map")
    lo = np.percentile(vals, 2) if vmin is None else vmin
    hi = np.percentile(vals, 98) if vmax is None else vmax
    t = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = plt.get_cmap(cmap)(t)[..., :3]
    rgb[~m | ~np.isfinite(a)] = 0.5
    return rgb


def show_images(
    images: Sequence[torch.Tensor | np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    cmap: str | Sequence[str | None] | None = None,
    colorbar: bool | Sequence[bool] = False,
    vmin: float | None = None,
    vmax: float | None = None,
    width: float = 4.0,
) -> Figure:
    """Show images side by side; single-channel ones through ``cmap`` (default magma).

    ``cmap`` and ``colorbar`` may be given per image. Returns the figure.
    """
    n = len(images)
    ncols = ncols or n
    nrows = (n + ncols - 1) // ncols
    first = to_numpy_image(images[0])
    aspect = first.shape[0] / first.shape[1]
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, width * aspect * nrows + 0.4), squeeze=False
    )
    cmaps = cmap if isinstance(cmap, (list, tuple)) else [cmap] * n
    bars = colorbar if isinstance(colorbar, (list, tuple)) else [colorbar] * n
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        a = to_numpy_image(images[i])
        im = ax.imshow(a, cmap=None if a.ndim == 3 else (cmaps[i] or "magma"), vmin=vmin, vmax=vmax)
        if titles is not None:
            ax.set_title(titles[i])
        if bars[i] and a.ndim == 2:
            fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02)
    fig.tight_layout()
    return fig


def _quantity(name: str) -> Quantity:
    if name not in QUANTITIES:
        raise ValueError(f"unknown quantity {name!r}; the course draws {', '.join(QUANTITIES)}")
    return QUANTITIES[name]


def show_map(
    ax,
    values: torch.Tensor | np.ndarray,
    quantity: str,
    *,
    unit: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    mask: torch.Tensor | np.ndarray | None = None,
    title: str | None = None,
):
    """Draw one map on ``ax`` with the course's colour map for ``quantity`` (see
    :data:`QUANTITIES`) and a colour bar labelled with the quantity and its unit.

    The values themselves are drawn (not a pre-coloured RGB image), so the colour bar reads in
    the map's own unit. Pixels outside ``mask`` or not finite are grey. The range defaults to
    the 2nd-98th percentile of the valid pixels. Returns the colour bar.
    """
    q = _quantity(quantity)
    a = to_numpy_image(values).astype(np.float64)
    if a.ndim != 2:
        raise ValueError(f"{quantity}: expected a single-channel map, got shape {np.shape(values)}")
    m = np.isfinite(a) if mask is None else to_numpy_image(mask).astype(bool) & np.isfinite(a)
    if not m.any():
        raise ValueError(f"{quantity}: nothing valid to draw")
    lo = float(np.percentile(a[m], 2)) if vmin is None else vmin
    hi = float(np.percentile(a[m], 98)) if vmax is None else vmax
    cmap = plt.get_cmap(q.cmap).with_extremes(bad="0.5")
    im = ax.imshow(np.ma.masked_array(a, ~m), cmap=cmap, vmin=lo, vmax=max(hi, lo + 1e-12))
    ax.axis("off")
    if title is not None:
        ax.set_title(title)
    unit = q.unit if unit is None else unit
    label = quantity.replace("_", " ") + (f" ({unit})" if unit else "")
    bar = ax.figure.colorbar(im, ax=ax, fraction=0.035, pad=0.02)
    bar.set_label(f"{label}, {q.meaning}", fontsize=8)
    return bar


def show_maps(
    maps: Sequence[torch.Tensor | np.ndarray],
    quantities: Sequence[str | None],
    titles: Sequence[str] | None = None,
    *,
    units: Sequence[str | None] | None = None,
    vmin: float | Sequence[float | None] | None = None,
    vmax: float | Sequence[float | None] | None = None,
    masks: Sequence[torch.Tensor | np.ndarray | None] | None = None,
    ncols: int | None = None,
    width: float = 4.0,
) -> Figure:
    """Maps side by side, each with its colour bar and unit (:func:`show_map`); a ``None``
    quantity shows an image (RGB or grey) as it is. ``units``, ``vmin``, ``vmax`` may be given
    per map; ``masks`` (one per map, or ``None``) greys out the pixels outside each map's mask.
    Returns the figure."""
    n = len(maps)
    if len(quantities) != n or (titles is not None and len(titles) != n):
        raise ValueError(f"got {n} maps, {len(quantities)} quantities and {len(titles or [])} titles")
    per = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * n  # noqa: E731
    units_, lo, hi = per(units), per(vmin), per(vmax)
    masks_ = [None] * n if masks is None else list(masks)
    if len(masks_) != n:
        raise ValueError(f"got {n} maps and {len(masks_)} masks")
    ncols = ncols or n
    nrows = (n + ncols - 1) // ncols
    first = to_numpy_image(maps[0])
    aspect = first.shape[0] / first.shape[1]
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols * 1.15, width * aspect * nrows + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        title = titles[i] if titles is not None else None
        if quantities[i] is None:
            a = to_numpy_image(maps[i])
            ax.imshow(a, cmap=None if a.ndim == 3 else "gray")
            if title is not None:
                ax.set_title(title)
        else:
            show_map(ax, maps[i], quantities[i], unit=units_[i], vmin=lo[i], vmax=hi[i], mask=masks_[i], title=title)
    fig.tight_layout()
    return fig


def flow_legend(ax, max_flow: float = 1.0, size: int = 101, unit: str = "px"):
    """The colour wheel of :func:`flow_to_rgb` on ``ax``: the colour of a flow vector
    ``(u, v)`` at its place, up to ``max_flow`` at the rim (image axes: ``v`` points down)."""
    r = np.linspace(-max_flow, max_flow, size)
    u, v = np.meshgrid(r, r)
    rgb = flow_to_rgb(np.stack([u, v]), valid=np.hypot(u, v) <= max_flow, max_flow=max_flow)
    ax.imshow(rgb, extent=(-max_flow, max_flow, max_flow, -max_flow))
    ax.grid(False)
    ax.set_xlabel(f"u ({unit})")
    ax.set_ylabel(f"v ({unit})")
    ax.set_title("flow colour wheel", fontsize=9)
    return ax


def plot_point_cloud(
    points: torch.Tensor | np.ndarray,
    colors: torch.Tensor | np.ndarray | None = None,
    ax=None,
    max_points: int = 30000,
    elev: float = -70.0,
    azim: float = -90.0,
    seed: int = 0,
    size: float = 0.5,
):
    """Scatter camera-frame points ``(3, N)`` in 3-D (x right, y down, z forward) with their
    colours ``(3, N)`` in ``[0, 1]``. A random subset of ``max_points`` is drawn (seeded).

    The default view looks from above and behind the camera, so depth reads as distance.
    Returns the 3-D axes.
    """
    P = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    if P.ndim != 2 or P.shape[0] != 3:
        raise ValueError(f"points: expected shape (3, N), got {P.shape}")
    C = None
    if colors is not None:
        C = colors.detach().cpu().numpy() if isinstance(colors, torch.Tensor) else np.asarray(colors)
        if C.shape != P.shape:
            raise ValueError(f"colors: expected shape {P.shape}, got {C.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.choice(P.shape[1], size=min(max_points, P.shape[1]), replace=False)
    if ax is None:
        fig = plt.figure(figsize=(7, 6))
        ax = fig.add_subplot(projection="3d")
    ax.scatter(P[0, idx], P[2, idx], -P[1, idx], c=None if C is None else C[:, idx].T, s=size, depthshade=False)
    ax.set_xlabel("X (right) [m]")
    ax.set_ylabel("Z (forward) [m]")
    ax.set_zlabel("-Y (up) [m]")
    ax.view_init(elev=elev, azim=azim)
    return ax


def draw_camera(ax, T_cam_to_world: torch.Tensor, size: float = 0.3, color: str = "C0", label: str | None = None):
    """Draw a camera as a small pyramid on 3-D axes made by :func:`plot_point_cloud`.

    ``T_cam_to_world`` is ``(4, 4)``: it maps camera-frame points into the plotted frame.
    """
    T = T_cam_to_world.detach().cpu().double()
    corners = torch.tensor(
        [[0, 0, 0], [-1, -0.75, 1.5], [1, -0.75, 1.5], [1, 0.75, 1.5], [-1, 0.75, 1.5]], dtype=torch.float64
    ).T * size
    W = (T[:3, :3] @ corners + T[:3, 3:4]).numpy()
    for i, j in [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1)]:
        ax.plot([W[0, i], W[0, j]], [W[2, i], W[2, j]], [-W[1, i], -W[1, j]], color=color, lw=1.5)
    if label:
        ax.text(W[0, 0], W[2, 0], -W[1, 0], label, color=color)
    return ax


def flow_to_rgb(flow: torch.Tensor | np.ndarray, valid: torch.Tensor | np.ndarray | None = None, max_flow: float | None = None) -> np.ndarray:
    """Colour-code optical flow ``(2, H, W)``: hue is the direction, saturation the magnitude
    (relative to ``max_flow``, default the 99th percentile); invalid pixels are black."""
    from matplotlib.colors import hsv_to_rgb

    f = flow.detach().cpu().numpy() if isinstance(flow, torch.Tensor) else np.asarray(flow)
    if f.ndim == 4:
        f = f[0]
    if f.ndim != 3 or f.shape[0] != 2:
        raise ValueError(f"flow: expected shape (2, H, W), got {np.shape(flow)}")
    mag = np.hypot(f[0], f[1])
    ok = np.ones(mag.shape, bool) if valid is None else to_numpy_image(valid).astype(bool)
    scale = max_flow or (np.percentile(mag[ok], 99) if ok.any() else 1.0) or 1.0
    hsv = np.stack([(np.arctan2(f[1], f[0]) / (2 * np.pi)) % 1.0, np.clip(mag / scale, 0, 1), np.ones_like(mag)], -1)
    rgb = hsv_to_rgb(hsv)
    rgb[~ok] = 0.0
    return rgb


def plot_world_map(world, frames: Sequence[int] | None = None, ax=None, radius: float = 90.0, time: float = 0.0):
    """Top view of a synthetic world around the route: box footprints (buildings grey, cars
    coloured, moving cars outlined in red), the route, and the camera at ``frames``."""
    from matplotlib.patches import Rectangle

    from ..data.textures import CAR

    b = world.boxes
    route = world.route
    frames = list(frames) if frames is not None else [0]
    centre = route[frames, :2].mean(0)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    lo = b.lo + b.vel * time
    hi = b.hi + b.vel * time
    keep = np.all(np.abs((lo[:, [0, 2]] + hi[:, [0, 2]]) / 2 - centre) < radius, axis=1)
    for i in np.nonzero(keep)[0]:
        moving = np.abs(b.vel[i]).sum() > 0
        colour = np.clip(b.tint[i], 0, 1) if b.side[i] == CAR else (0.6, 0.6, 0.6)
        ax.add_patch(Rectangle((lo[i, 0], lo[i, 2]), hi[i, 0] - lo[i, 0], hi[i, 2] - lo[i, 2],
                               facecolor=colour, edgecolor="red" if moving else "none", lw=1.2 if moving else 0))
    ax.plot(route[:, 0], route[:, 1], color="C0", lw=1.2, label="route")
    for f in frames:
        x, z, yaw = route[f, :3]
        ax.arrow(x, z, 6 * np.sin(yaw), 6 * np.cos(yaw), width=0.6, color="C1")
    ax.set_xlim(centre[0] - radius, centre[0] + radius)
    ax.set_ylim(centre[1] - radius, centre[1] + radius)
    ax.set_aspect("equal")
    ax.set_xlabel("x (east) [m]")
    ax.set_ylabel("z (north) [m]")
    return ax
