"""A classical local stereo matcher: cost volume, winner-take-all, left-right check (chapter 05).

The baseline that chapter 05's optimiser is compared with. No smoothness prior: every pixel
picks, on its own, the disparity whose aggregated matching cost is lowest.

1. **Cost volume** ``C[d, y, x]``: how badly the left pixel ``x`` matches the right pixel
   ``x - d``, for every integer ``d`` in ``0 .. max_disp``, aggregated over a square window
   (:func:`lesson_lib.losses.box_filter`) so that one pixel's noise does not decide alone. Three per-pixel costs:

   - ``"sad"``: mean absolute colour difference;
   - ``"census"``: share of differing bits of the census transforms (each pixel compared
     with its neighbours in a ``census_window`` square, on grey values); robust to
     brightness and contrast changes between the two cameras;
   - ``"photometric"``: the course's photometric error (chapter 04, SSIM + L1, alpha 0.85).

   All three lie in ``[0, 1]``. Where the match falls outside the other image (``x - d < 0``
   for the left view) the entry is ``+inf``.
2. **Winner-take-all** ``d* = argmin_d C[d]``, refined to sub-pixel precision by fitting a
   parabola through the costs at ``d* - 1``, ``d*``, ``d* + 1``: its minimum lies at
   ``d* + (C[d*-1] - C[d*+1]) / (2 (C[d*-1] - 2 C[d*] + C[d*+1]))``.
3. **Left-right check**: a left pixel is consistent when the right disparity map, read at the
   pixel it matches (``x - d_left``), gives back the same disparity (within ``threshold``).
   Occluded pixels (seen by one camera only) and most mismatches fail it.
4. **Fill**: a pixel that failed the check most likely belongs to the background (it is hidden
   behind something nearer in the other view), so it takes the smaller of the nearest
   consistent disparities to its left and right on its row.

Conventions (shared by the whole course): the left pixel ``x`` matches the right pixel
``x - d`` with ``d >= 0`` in pixels; the right pixel ``x`` matches the left pixel ``x + d``;
disparity maps are ``(B, 1, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import losses
from ._validate import check_same_device, check_tensor
from .warping import stereo_warp

__all__ = [
    "COSTS",
    "census_bits",
    "stereo_cost_volume",
    "winner_take_all",
    "left_right_check",
    "fill_inconsistent",
    "match",
]

COSTS = ("sad", "census", "photometric")


def _check_window(window: int, name: str = "window") -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"{name} must be an odd integer >= 1, got {window!r}")


def _check_max_disp(max_disp: int, width: int) -> None:
    if isinstance(max_disp, bool) or not isinstance(max_disp, int) or max_disp < 0:
        raise ValueError(f"max_disp must be an integer >= 0, got {max_disp!r}")
    if max_disp >= width:
        raise ValueError(f"max_disp must be < the image width {width}, got {max_disp}")


def census_bits(image: torch.Tensor, window: int = 5) -> torch.Tensor:
    """Census bits ``(B, window**2 - 1, H, W)`` bool of an image ``(B, C, H, W)`` (chapter 05): for
    every neighbour in the ``window`` square (centre excluded), True where the neighbour's grey
    value (channel mean) is smaller than the centre's. Replicated border.

    The hard census transform that stereo matching compares bit by bit (Hamming distance in
    :func:`stereo_cost_volume`); the flow loss of chapter 09 uses a soft, differentiable one,
    :func:`lesson_lib.losses.census_transform`."""
    check_tensor(image, "image", ("B", None, "H", "W"))
    _check_window(window, "census_window")
    g = image.mean(1, keepdim=True)
    r = window // 2
    p = F.pad(g, (r, r, r, r), mode="replicate")
    h, w = g.shape[-2:]
    bits = [
        (p[..., i : i + h, j : j + w] < g)
        for i in range(window)
        for j in range(window)
        if (i, j) != (r, r)
    ]
    return torch.cat(bits, dim=1)


_CHUNK = 24  # census bits per int32 code: two 12-bit table look-ups count them


def _pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """``(B, N, H, W)`` bool to ``(B, ceil(N / 24), H, W)`` int32 codes of 24 bits each."""
    codes = []
    for start in range(0, bits.shape[1], _CHUNK):
        chunk = bits[:, start : start + _CHUNK].to(torch.int32)
        weights = (2 ** torch.arange(chunk.shape[1], device=bits.device, dtype=torch.int32)).view(1, -1, 1, 1)
        codes.append((chunk * weights).sum(1, keepdim=True, dtype=torch.int32))
    return torch.cat(codes, dim=1)


_POPCOUNT12 = torch.tensor([bin(i).count("1") for i in range(1 << 12)], dtype=torch.int32)


def _hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Number of differing bits of packed codes ``(B, K, H, W)``, as ``(B, 1, H, W)`` int32."""
    table = _POPCOUNT12.to(a.device)
    x = a ^ b
    return (table[x & 4095] + table[x >> 12]).sum(1, keepdim=True)


def _pixel_cost(a: torch.Tensor, b: torch.Tensor, cost: str, nbits: int) -> torch.Tensor:
    """Per-pixel cost of ``a`` against ``b`` (same columns already lined up), ``(B, 1, H, w)``."""
    if cost == "sad":
        return (a - b).abs().mean(1, keepdim=True)
    if cost == "census":  # share of differing census bits
        return _hamming(a, b) / nbits
    if a.shape[-1] < 2:  # SSIM's reflection padding needs two columns: L1 alone
        return (a - b).abs().mean(1, keepdim=True)
    return losses.photometric_error(b, a)  # in [0, 1]


@torch.no_grad()
def stereo_cost_volume(
    left: torch.Tensor,
    right: torch.Tensor,
    max_disp: int,
    window: int = 5,
    cost: str = "census",
    reference: str = "left",
    census_window: int = 5,
) -> torch.Tensor:
    """Aggregated matching cost of every integer disparity ``0 .. max_disp`` of a rectified
    stereo pair (chapter 05). (The flow network's search over 2-D displacements is another
    volume: :func:`lesson_lib.models.flow.correlation_volume`.)

    Args:
        left, right: ``(B, C, H, W)`` rectified pair in ``[0, 1]``.
        max_disp: largest disparity tried, in pixels (``0 <= max_disp < W``).
        window: side of the square (odd) over which the per-pixel cost is averaged.
        cost: ``"sad"``, ``"census"`` or ``"photometric"`` (see the module docstring).
        reference: ``"left"`` for the left view's volume (left ``x`` against right ``x - d``),
            or ``"right"`` for the right view's (right ``x`` against left ``x + d``).
        census_window: side of the census transform's square (``cost="census"`` only).

    Returns:
        ``(B, max_disp + 1, H, W)``: entry ``d`` is the cost of disparity ``d``, in ``[0, 1]``,
        ``+inf`` where the match falls outside the other image. At ``500 x 741`` with 65
        disparities it takes 96 MB in float32.

    Raises:
        ValueError: wrong shapes, a negative or too large ``max_disp``, an even window, or an
            unknown ``cost`` / ``reference``.
    """
    dims = check_tensor(left, "left", ("B", "C", "H", "W"))
    check_tensor(right, "right", ("B", "C", "H", "W"), dims=dims)
    check_same_device(left=left, right=right)
    _check_max_disp(max_disp, left.shape[-1])
    _check_window(window)
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    if reference not in ("left", "right"):
        raise ValueError(f"reference must be 'left' or 'right', got {reference!r}")
    if reference == "right":  # mirrored, the right view becomes a left view: x + d -> x' - d
        flipped = stereo_cost_volume(
            right.flip(-1), left.flip(-1), max_disp, window, cost, "left", census_window
        )
        return flipped.flip(-1)
    a, b, nbits = left, right, 0
    if cost == "census":
        nbits = census_window**2 - 1
        a, b = _pack_bits(census_bits(left, census_window)), _pack_bits(census_bits(right, census_window))
    bsz, _, h, w = left.shape
    vol = torch.empty(bsz, max_disp + 1, h, w, dtype=left.dtype, device=left.device)
    for d in range(max_disp + 1):
        # left columns d .. W-1 against right columns 0 .. W-1-d; the first d columns (no match)
        # repeat column d so that the box filter sees finite values, and become inf below
        c = _pixel_cost(a[..., d:], b[..., : w - d], cost, nbits)
        vol[:, d : d + 1, :, d:] = c
        if d:
            vol[:, d : d + 1, :, :d] = c[..., :1]
    vol = losses.box_filter(vol, window)
    cols = torch.arange(w, device=left.device).view(1, 1, 1, w)
    disps = torch.arange(max_disp + 1, device=left.device).view(1, -1, 1, 1)
    return vol.masked_fill(cols < disps, float("inf"))


def winner_take_all(volume: torch.Tensor, subpixel: bool = True) -> torch.Tensor:
    """The disparity of lowest cost at every pixel, ``(B, 1, H, W)`` (chapter 05).

    With ``subpixel`` the integer winner ``d*`` moves to the minimum of the parabola through
    the costs at ``d* - 1, d*, d* + 1`` (by at most half a pixel); pixels whose winner lies at
    either end of the range, or whose neighbours' costs are infinite or not convex, keep ``d*``.
    """
    check_tensor(volume, "volume", ("B", None, "H", "W"))
    n = volume.shape[1]
    if n < 1:
        raise ValueError("volume: needs at least one disparity")
    best = volume.argmin(dim=1, keepdim=True)
    disp = best.to(volume.dtype)
    if not subpixel or n < 3:
        return disp
    lo = (best - 1).clamp(min=0)
    hi = (best + 1).clamp(max=n - 1)
    c0 = volume.gather(1, best)
    cm = volume.gather(1, lo)
    cp = volume.gather(1, hi)
    curv = cm - 2 * c0 + cp
    ok = (best > 0) & (best < n - 1) & torch.isfinite(cm) & torch.isfinite(cp) & (curv > 0)
    safe = torch.where(ok, curv, torch.ones_like(curv))
    offset = torch.where(ok, (cm - cp) / (2 * safe), torch.zeros_like(curv)).clamp(-0.5, 0.5)
    return disp + offset


def left_right_check(
    disp_left: torch.Tensor, disp_right: torch.Tensor, threshold: float = 1.0
) -> torch.Tensor:
    """Left pixels whose match agrees: ``|d_L(x) - d_R(x - d_L(x))| <= threshold`` (chapter 05).

    ``d_R`` is read at ``x - d_L(x)`` by bilinear interpolation
    (:func:`lesson_lib.warping.stereo_warp`). A left pixel whose match falls outside the
    right image is inconsistent too.

    Args:
        disp_left: ``(B, 1, H, W)`` left disparity (pixels, ``>= 0``).
        disp_right: ``(B, 1, H, W)`` right disparity (the right pixel ``x`` matches the left
            pixel ``x + d_R``).
        threshold: largest disagreement still consistent, in pixels (``>= 0``).

    Returns:
        ``(B, 1, H, W)`` bool, True where consistent; False marks occlusions and mismatches.
    """
    dims = check_tensor(disp_left, "disp_left", ("B", 1, "H", "W"))
    check_tensor(disp_right, "disp_right", ("B", 1, "H", "W"), dims=dims)
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    back, inside = stereo_warp(disp_right, disp_left, "right")
    return inside & ((disp_left - back).abs() <= threshold)


def fill_inconsistent(disparity: torch.Tensor, consistent: torch.Tensor) -> torch.Tensor:
    """Replace the pixels that failed the left-right check by the background (chapter 05).

    An occluded pixel belongs to the farther surface, so each pixel where ``consistent`` is
    False takes the *smaller* of the nearest consistent disparities to its left and to its
    right on the same row (only the one that exists near the image border). A row with no
    consistent pixel keeps its values.

    Args:
        disparity: ``(B, 1, H, W)``; consistent: ``(B, 1, H, W)`` bool (True = keep).

    Returns:
        ``(B, 1, H, W)`` the filled map.
    """
    dims = check_tensor(disparity, "disparity", ("B", 1, "H", "W"))
    check_tensor(consistent, "consistent", ("B", 1, "H", "W"), dims=dims, floating=False)
    ok = consistent.bool()
    w = disparity.shape[-1]
    idx = torch.arange(w, device=disparity.device).view(1, 1, 1, w).expand_as(disparity)
    left_i = torch.where(ok, idx, torch.full_like(idx, -1)).cummax(-1).values
    right_i = torch.where(ok, idx, torch.full_like(idx, w)).flip(-1).cummin(-1).values.flip(-1)
    inf = torch.full_like(disparity, float("inf"))
    from_left = torch.where(left_i >= 0, disparity.gather(-1, left_i.clamp(min=0)), inf)
    from_right = torch.where(right_i < w, disparity.gather(-1, right_i.clamp(max=w - 1)), inf)
    fill = torch.minimum(from_left, from_right)
    fill = torch.where(torch.isinf(fill), disparity, fill)
    return torch.where(ok, disparity, fill)


def match(
    left: torch.Tensor,
    right: torch.Tensor,
    max_disp: int,
    window: int = 5,
    cost: str = "census",
    census_window: int = 5,
    subpixel: bool = True,
    threshold: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole local matcher: both views' cost volumes, winner-take-all, left-right check.

    Returns:
        ``(disp_left, disp_right, consistent)``, each ``(B, 1, H, W)``; ``consistent`` is the
        left view's :func:`left_right_check` mask.
    """
    kw = dict(window=window, cost=cost, census_window=census_window)
    d_l = winner_take_all(stereo_cost_volume(left, right, max_disp, reference="left", **kw), subpixel)
    d_r = winner_take_all(stereo_cost_volume(left, right, max_disp, reference="right", **kw), subpixel)
    return d_l, d_r, left_right_check(d_l, d_r, threshold)

