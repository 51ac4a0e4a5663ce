"""Textures for the synthetic world, built from images shipped inside scikit-image, with mip-maps
so that distant surfaces are filtered instead of aliased (appendix A1).

Sources (all inside the scikit-image wheel, nothing downloaded): ``brick``, ``grass`` and
``gravel`` (CC0). Each material is a 256x256 RGB tile covering a known size in metres; façades
have their windows baked into the tile so the mip-maps filter them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TEX = 256
LEVELS = 9  # 256, 128, ..., 1

# material ids
ROAD, ASPHALT, SIDEWALK, KERB, LOT, CAR, CANOPY, POLE = range(8)
FACADES = (8, 9, 10, 11)
N_MATERIALS = 12

LANE = 3.5  # lane width [m]; a road is two lanes
ROAD_TILE_LENGTH = 6.0  # dashed centre line period [m]


@dataclass(frozen=True)
class TextureAtlas:
    """All materials' mip pyramids in one flat buffer, for gather-based trilinear sampling.

    Attributes:
        texels: ``(3, total)`` float32 RGB.
        offsets: ``(N_MATERIALS, LEVELS)`` int64 start of each level in ``texels``.
        tile_m: ``(N_MATERIALS, 2)`` metres covered by one tile along (a, b).
    """

    texels: torch.Tensor
    offsets: torch.Tensor
    tile_m: torch.Tensor

    @property
    def rows(self) -> torch.Tensor:
        """``(total, 3)`` float16: one texel per row, the layout the samplers gather from (half
        precision halves the memory traffic of the random gathers; the error, < 5e-4, is below
        the 8-bit quantisation of the rendered images)."""
        if not hasattr(self, "_rows"):
            object.__setattr__(self, "_rows", self.texels.T.contiguous().half())
        return self._rows

    def to(self, device: torch.device | str) -> TextureAtlas:
        return TextureAtlas(self.texels.to(device), self.offsets.to(device), self.tile_m.to(device))


def _gray(name: str) -> np.ndarray:
    from skimage import data, transform

    img = getattr(data, name)().astype(np.float32) / 255.0
    img = transform.resize(img, (TEX, TEX), anti_aliasing=True, preserve_range=True).astype(np.float32)
    # make the tile seamless: blend with its half-shifted copy towards the borders
    ramp = np.minimum(np.arange(TEX), TEX - 1 - np.arange(TEX)) / (TEX / 2)
    w = np.minimum(ramp[:, None], ramp[None, :])
    shifted = np.roll(np.roll(img, TEX // 2, 0), TEX // 2, 1)
    return w * img + (1 - w) * shifted


def _tint(gray: np.ndarray, rgb: tuple[float, float, float], contrast: float = 1.0, level: float = 0.0) -> np.ndarray:
    g = (gray - gray.mean()) * contrast + gray.mean() + level
    return np.clip(g[None] * np.asarray(rgb, np.float32)[:, None, None], 0, 1)


def _facade(base: np.ndarray, window_rgb: tuple[float, float, float], tile_m: tuple[float, float]) -> np.ndarray:
    """A façade tile: ``base`` with one window baked in (frame, glass with a vertical gradient)."""
    a = (np.arange(TEX) + 0.5) / TEX * tile_m[0]
    b = (np.arange(TEX) + 0.5) / TEX * tile_m[1]
    A, B = np.meshgrid(a, b)
    win = (A > 0.9) & (A < tile_m[0] - 0.9) & (B > 0.9) & (B < tile_m[1] - 0.8)
    frame = (A > 0.8) & (A < tile_m[0] - 0.8) & (B > 0.8) & (B < tile_m[1] - 0.7) & ~win
    out = base.copy()
    glass = np.asarray(window_rgb, np.float32)[:, None, None] * (0.7 + 0.3 * (B / tile_m[1]))[None]
    out[:, win] = glass[:, win]
    out[:, frame] = 0.85
    return out


def _road(asphalt: np.ndarray) -> np.ndarray:
    """Road tile across its full width (two lanes) and one dash period along it."""
    u = (np.arange(TEX) + 0.5) / TEX * 2 * LANE  # across
    v = (np.arange(TEX) + 0.5) / TEX * ROAD_TILE_LENGTH  # along
    U, V = np.meshgrid(u, v)
    centre = (np.abs(U - LANE) < 0.08) & (V < ROAD_TILE_LENGTH / 2)
    edges = (np.abs(U - 0.3) < 0.07) | (np.abs(U - (2 * LANE - 0.3)) < 0.07)
    out = asphalt.copy()
    out[:, centre | edges] = 0.85
    return out


def build_atlas() -> TextureAtlas:
    """Build every material's tile and mip pyramid (deterministic)."""
    gravel, brick, grass = _gray("gravel"), _gray("brick"), _gray("grass")
    asphalt = _tint(gravel, (0.33, 0.33, 0.35), contrast=0.8)
    tiles: dict[int, tuple[np.ndarray, tuple[float, float]]] = {
        ROAD: (_road(asphalt), (2 * LANE, ROAD_TILE_LENGTH)),
        ASPHALT: (asphalt, (4.0, 4.0)),
        SIDEWALK: (_tint(brick, (0.72, 0.70, 0.66), contrast=0.7), (2.0, 2.0)),
        KERB: (_tint(gravel, (0.6, 0.6, 0.6), contrast=0.6), (1.0, 1.0)),
        LOT: (_tint(grass, (0.35, 0.5, 0.25)), (4.0, 4.0)),
        CAR: (_tint(gravel, (1.0, 1.0, 1.0), contrast=0.25, level=0.35), (2.0, 2.0)),
        CANOPY: (_tint(grass, (0.3, 0.55, 0.25), contrast=1.3), (3.0, 3.0)),
        POLE: (_tint(gravel, (0.5, 0.5, 0.52), contrast=0.5), (1.0, 1.0)),
    }
    facade_bases = [
        (_tint(brick, (0.75, 0.42, 0.32)), (0.25, 0.3, 0.38), (3.0, 3.2)),
        (_tint(gravel, (0.85, 0.78, 0.62), contrast=0.8), (0.2, 0.27, 0.35), (3.5, 3.4)),
        (_tint(brick, (0.62, 0.62, 0.64), contrast=0.9), (0.18, 0.22, 0.3), (2.6, 3.0)),
        (_tint(gravel, (0.9, 0.9, 0.88), contrast=0.6), (0.3, 0.36, 0.45), (4.0, 3.6)),
    ]
    for mat, (base, win, tile) in zip(FACADES, facade_bases):
        tiles[mat] = (_facade(base, win, tile), tile)
    chunks, offsets, tile_m = [], np.zeros((N_MATERIALS, LEVELS), np.int64), np.zeros((N_MATERIALS, 2), np.float32)
    pos = 0
    for mat in range(N_MATERIALS):
        img, tile = tiles[mat]
        level = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None]
        for lev in range(LEVELS):
            offsets[mat, lev] = pos
            chunks.append(level[0].reshape(3, -1))
            pos += level.shape[-1] * level.shape[-2]
            if lev + 1 < LEVELS:
                level = F.avg_pool2d(level, 2)
        tile_m[mat] = tile
    return TextureAtlas(torch.cat(chunks, dim=1), torch.from_numpy(offsets), torch.from_numpy(tile_m))


def sample_atlas(atlas: TextureAtlas, mat: torch.Tensor, a: torch.Tensor, b: torch.Tensor, level: torch.Tensor,
                 trilinear: bool = True) -> torch.Tensor:
    """Trilinear, wrapping texture look-up.

    Args:
        mat: ``(N,)`` material ids; a, b: ``(N,)`` surface coordinates in metres;
        level: ``(N,)`` mip level (0 = full resolution), fractional.

    Returns:
        ``(3, N)`` colours: bilinear within the two nearest mip levels, blended linearly
        between them (with ``trilinear=False``: bilinear in the nearest level only, half the
        cost). Tiles repeat (power-of-two sizes, so wrapping is a bit mask).
    """
    level = level.clamp(0, LEVELS - 1)
    if trilinear:
        l0 = level.floor().long()
        lev = torch.stack([l0, (l0 + 1).clamp(max=LEVELS - 1)])  # (2, N)
        t = level - l0.to(level.dtype)
    else:
        lev = level.round().long()[None]  # (1, N)
        t = None
    tile = atlas.tile_m.index_select(0, mat)
    size = torch.bitwise_right_shift(torch.full_like(lev, TEX), lev)  # texels per side at each level
    sf = size.to(a.dtype)
    x = (a / tile[:, 0])[None] * sf - 0.5
    y = (b / tile[:, 1])[None] * sf - 0.5
    x0f, y0f = x.floor(), y.floor()
    fx, fy = x - x0f, y - y0f
    m = size - 1
    x0, y0 = x0f.long() & m, y0f.long() & m
    x1, y1 = (x0 + 1) & m, (y0 + 1) & m
    base = atlas.offsets.index_select(0, mat).gather(1, lev.T).T  # (2, N)
    r0, r1 = base + y0 * size, base + y1 * size
    idx = torch.stack([r0 + x0, r0 + x1, r1 + x0, r1 + x1])  # (4, 2, N)
    taps = atlas.rows.index_select(0, idx.reshape(-1)).to(a.dtype).reshape(4, lev.shape[0], -1, 3)  # one gather
    w = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    if t is not None:
        w = w * torch.stack([1 - t, t])[None]
    return (taps * w[..., None]).sum(dim=(0, 1)).T
