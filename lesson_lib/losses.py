"""Photometric losses and smoothness (chapter 04).

- SSIM with a 3x3 box window over reflection-padded images, ``C1 = 0.01**2``, ``C2 = 0.03**2``
  (images in ``[0, 1]``), as in Monodepth and monodepth2.
- The per-pixel photometric error ``alpha * clamp((1 - SSIM) / 2, 0, 1) + (1 - alpha) * |a - b|``
  with ``alpha = 0.85``, averaged over colour channels.
- Edge-aware smoothness of mean-normalised disparity: disparity gradients are penalised less
  where the image has strong gradients (depth edges usually coincide with image edges).

Every loss is available per pixel (``reduction="none"``, a ``(B, 1, H, W)`` map) and reduced
(``"mean"``), with an optional mask of valid pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import check_same_device, check_tensor

__all__ = [
    "census_transform",
    "census_error",
    "C1",
    "C2",
    "box_filter",
    "window_mean3",
    "ssim",
    "ssim_from_means",
    "ssim_components",
    "photometric_error",
    "smoothness",
    "masked_mean",
]

C1 = 0.01**2
C2 = 0.03**2


def _sum3x3(p: torch.Tensor) -> torch.Tensor:
    """Sum over each 3x3 window, without padding (``(H, W)`` becomes ``(H-2, W-2)``): the nine
    shifted views added in row-major order, the order ``avg_pool2d`` adds them in. The views
    come from one view of all 3x3 windows ``(..., 3, 3, H-2, W-2)`` unbound row by row (7 view
    operations instead of 18 slices: on a GPU, fewer launches)."""
    windows = p.unfold(-2, 3, 1).unfold(-2, 3, 1).movedim((-2, -1), (-4, -3))
    views = [v for row in windows.unbind(-4) for v in row.unbind(-3)]
    s = views[0] + views[1]
    for v in views[2:]:
        s += v
    return s


class _Mean3x3(torch.autograd.Function):
    """``F.avg_pool2d(p, kernel_size=3, stride=1)`` in both directions, with the same roundings:
    forward the window sum divided by 9; backward each pixel collects ``grad / 9`` from the
    windows that contain it (the zero-padded window sum). On the CPU several times faster."""

    @staticmethod
    def forward(ctx, p: torch.Tensor) -> torch.Tensor:
        return _sum3x3(p) / 9

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _sum3x3(F.pad(grad / 9, (2, 2, 2, 2)))


def window_mean3(padded: torch.Tensor) -> torch.Tensor:
    """The mean over each 3x3 window of an already padded tensor ``(..., H, W)``, without more
    padding: ``(..., H - 2, W - 2)``, the values and gradients of
    ``F.avg_pool2d(padded, kernel_size=3, stride=1)`` (what :func:`box_filter` uses after its
    reflection padding; for callers that pad in their own way)."""
    check_tensor(padded, "padded")
    if padded.ndim < 2 or min(padded.shape[-2:]) < 3:
        raise ValueError(f"padded: expected (..., H, W) with H and W >= 3 (padded by a pixel on each side), "
                         f"got shape {tuple(padded.shape)}")
    return _Mean3x3.apply(padded)


def box_filter(x: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Mean over each ``window x window`` square (odd ``window``), size kept (chapters 04, 05).

    The borders are padded by reflection (by replication along a side of at most
    ``window // 2`` pixels, too short to reflect). SSIM's means (chapter 04) use ``window=3``;
    the matcher of chapter 05 averages its costs over larger squares.

    - ``window=3``: the nine shifted views of the padded input added in the order
      ``avg_pool2d`` adds them, with a small custom backward. Values and gradients equal, to the
      last bit in float32 and float64 on the CPU, those of
      ``F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel_size=3, stride=1)``, and it
      is several times faster.
    - any other odd ``window``: separable, a row pass then a column pass, each an
      ``avg_pool2d`` of the reflection-padded rows or columns (``window=1`` returns ``x``).

    Args:
        x: ``(B, C, H, W)`` (or ``(C, H, W)``), any number of channels.
        window: side of the square, an odd integer ``>= 1``.

    Returns:
        The filtered tensor, shaped like ``x``.

    Example:
        >>> box_filter(torch.ones(1, 1, 4, 5), 5).shape
        torch.Size([1, 1, 4, 5])
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 1, got {window!r}")
    check_tensor(x, "x")
    if x.ndim not in (3, 4):
        raise ValueError(f"x: expected shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    if window == 1:
        return x
    r = window // 2
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    if window == 3:
        return _Mean3x3.apply(F.pad(x, (1, 1, 1, 1), mode=mode))
    x = F.pad(x, (r, r, 0, 0), mode=mode)
    x = F.avg_pool2d(x, kernel_size=(1, window), stride=1)
    x = F.pad(x, (0, 0, r, r), mode=mode)
    return F.avg_pool2d(x, kernel_size=(window, 1), stride=1)


def _check_pair(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    dims = check_tensor(a, na, ("B", "C", "H", "W"))
    check_tensor(b, nb, ("B", "C", "H", "W"), dims=dims)
    check_same_device(**{na: a, nb: b})


def _means(x: torch.Tensor, y: torch.Tensor):
    """The 3x3 window means of ``x``, ``y``, ``x²``, ``y²``, ``xy``."""
    c = x.shape[1]
    # one pass for x's three moments, one for y's two: when y (the target) needs no gradient,
    # its moments stay out of the backward pass
    xx, yy, xy = x * x, y * y, x * y
    mu_x, exx, exy = torch.split(box_filter(torch.cat([x, xx, xy], dim=1)), c, dim=1)
    mu_y, eyy = torch.split(box_filter(torch.cat([y, yy], dim=1)), c, dim=1)
    return mu_x, mu_y, exx, eyy, exy


def _moments(x: torch.Tensor, y: torch.Tensor):
    mu_x, mu_y, exx, eyy, exy = _means(x, y)
    return mu_x, mu_y, exx - mu_x * mu_x, eyy - mu_y * mu_y, exy - mu_x * mu_y


def ssim(x: torch.Tensor, y: torch.Tensor, c1: float = C1, c2: float = C2) -> torch.Tensor:
    """Per-pixel, per-channel SSIM ``(B, C, H, W)`` of two images ``(B, C, H, W)`` (chapter 04).

    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
    with means, variances and covariance over 3x3 box windows.
    """
    _check_pair(x, y, "x", "y")
    return ssim_from_means(*_means(x, y), c1, c2)


def ssim_from_means(
    mu_x: torch.Tensor, mu_y: torch.Tensor, exx: torch.Tensor, eyy: torch.Tensor, exy: torch.Tensor,
    c1: float = C1, c2: float = C2,
) -> torch.Tensor:
    """SSIM from the window means of ``x``, ``y``, ``x²``, ``y²`` and ``xy`` (any shape, all
    alike): the formula of :func:`ssim` for callers that take the window means their own way
    (Monodepth's loss over all scales at once)."""
    sxx, syy, sxy = exx - mu_x * mu_x, eyy - mu_y * mu_y, exy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    return num / den


def ssim_components(
    x: torch.Tensor, y: torch.Tensor, c1: float = C1, c2: float = C2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SSIM's three factors (chapter 04): luminance ``(2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)``,
    contrast ``(2 s_x s_y + C2) / (s_x^2 + s_y^2 + C2)`` and structure
    ``(s_xy + C3) / (s_x s_y + C3)`` with ``C3 = C2 / 2``; their product is :func:`ssim`."""
    _check_pair(x, y, "x", "y")
    mu_x, mu_y, sxx, syy, sxy = _moments(x, y)
    sx, sy = sxx.clamp(min=0).sqrt(), syy.clamp(min=0).sqrt()
    c3 = c2 / 2
    lum = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    con = (2 * sx * sy + c2) / (sxx + syy + c2)
    struct = (sxy + c3) / (sx * sy + c3)
    return lum, con, struct


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over the pixels where ``mask`` (broadcastable, bool or 0/1) is set.

    An empty mask gives 0 (still attached to the graph), never NaN.
    """
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype).expand_as(values)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def _reduce(loss_map: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    if mask is not None:
        check_tensor(mask, "mask", (loss_map.shape[0], 1, loss_map.shape[2], loss_map.shape[3]), floating=False)
    if reduction == "none":
        return loss_map if mask is None else loss_map * mask.to(loss_map.dtype)
    if reduction == "mean":
        return masked_mean(loss_map, mask)
    raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")


def photometric_error(
    pred: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.85,
    mask: torch.Tensor | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    """``alpha * clamp((1 - SSIM) / 2, 0, 1) + (1 - alpha) * |pred - target|``, averaged over
    channels (chapter 04).

    Args:
        pred, target: ``(B, C, H, W)`` images in ``[0, 1]``.
        alpha: weight of the SSIM term (0.85 in Monodepth and monodepth2).
        mask: optional ``(B, 1, H, W)`` valid pixels.
        reduction: ``"none"`` for the ``(B, 1, H, W)`` map (zero outside ``mask``), or
            ``"mean"`` for the mean over valid pixels.
    """
    _check_pair(pred, target, "pred", "target")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    l1 = (pred - target).abs().mean(1, keepdim=True)
    if alpha == 0.0:
        return _reduce(l1, mask, reduction)
    dssim = ((1 - ssim(pred, target)) / 2).clamp(0, 1).mean(1, keepdim=True)
    return _reduce(alpha * dssim + (1 - alpha) * l1, mask, reduction)


def census_transform(image: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Soft census transform (Zabih and Woodfill 1994; the soft form of UnFlow and UFlow): for
    every pixel and each of the ``window**2 - 1`` neighbours ``n`` of its window, the sign of the
    grey-level difference made smooth, ``(I_n - I_p) / sqrt(0.81 + (I_n - I_p)^2)`` (grey level
    ``I`` in ``[0, 255]``). Only the order of intensities counts, not their scale, so it is
    robust to brightness changes. Returns ``(B, window**2 - 1, H, W)``; neighbours outside the
    image read the border pixel."""
    check_tensor(image, "image", ("B", None, "H", "W"))
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 3, got {window}")
    grey = 255.0 * image.mean(1, keepdim=True)
    r = window // 2
    padded = F.pad(grey, (r, r, r, r), mode="replicate")
    h, w = grey.shape[-2:]
    out = []
    for dv in range(window):
        for du in range(window):
            if dv == r and du == r:
                continue
            d = padded[:, :, dv : dv + h, du : du + w] - grey
            out.append(d / torch.sqrt(0.81 + d * d))
    return torch.cat(out, dim=1)


def census_error(pred: torch.Tensor, target: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Soft Hamming distance of the census transforms of two images, ``(B, 1, H, W)`` in
    ``[0, 1)``: the mean over neighbours of ``d^2 / (0.1 + d^2)``, ``d`` the difference of the
    soft signs (:func:`census_transform`). 0 where the two patches order their pixels alike."""
    _check_pair(pred, target, "pred", "target")
    d = census_transform(pred, window) - census_transform(target, window)
    d2 = d * d
    return (d2 / (0.1 + d2)).mean(1, keepdim=True)


def smoothness(
    disparity: torch.Tensor,
    image: torch.Tensor,
    order: int = 1,
    normalize: bool = True,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Edge-aware smoothness of a disparity map (chapter 04).

    First order: ``|dx d*| exp(-|dx I|) + |dy d*| exp(-|dy I|)``, image gradients averaged over
    colour channels, with ``d* = d / mean(d)`` per image when ``normalize`` (so the loss does not
    reward shrinking the disparity; the mean is over ``mask`` when one is given). Second order uses ``|dxx d*|`` and ``|dyy d*|`` weighted by
    the image gradient at the same pixel.

    With ``reduction="mean"`` the x and y terms are averaged separately and added (the x term
    has ``W - 1`` columns, the y term ``H - 1`` rows); with ``"none"`` the ``(B, 1, H, W)`` map
    holds both terms at each pixel (zero where a difference does not exist). With ``mask`` a
    difference counts only when all the pixels it uses are valid, so disparity outside the mask
    changes nothing.

    Args:
        disparity: ``(B, 1, H, W)``, > 0 when ``normalize``.
        image: ``(B, C, H, W)`` the image whose edges allow disparity edges.
    """
    dims = check_tensor(disparity, "disparity", ("B", 1, "H", "W"))
    check_tensor(image, "image", ("B", None, "H", "W"), dims=dims)
    check_same_device(disparity=disparity, image=image)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    m = None
    if mask is not None:  # pixels outside the mask must not matter, not even through mean(d)
        check_tensor(mask, "mask", (disparity.shape[0], 1, disparity.shape[2], disparity.shape[3]), floating=False)
        m = mask.to(disparity.dtype)
    if normalize:
        if m is None:
            mean_d = disparity.mean(dim=(2, 3), keepdim=True)
        else:
            mean_d = (disparity * m).sum(dim=(2, 3), keepdim=True) / m.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
        d = disparity / (mean_d + 1e-7)
    else:
        d = disparity
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    if order == 1:
        gx = (d[..., :, 1:] - d[..., :, :-1]).abs() * torch.exp(-ix)
        gy = (d[..., 1:, :] - d[..., :-1, :]).abs() * torch.exp(-iy)
        pad_x, pad_y = (0, 1, 0, 0), (0, 0, 0, 1)
    else:
        gx = (d[..., :, 2:] + d[..., :, :-2] - 2 * d[..., :, 1:-1]).abs() * torch.exp(-(ix[..., :, 1:] + ix[..., :, :-1]) / 2)
        gy = (d[..., 2:, :] + d[..., :-2, :] - 2 * d[..., 1:-1, :]).abs() * torch.exp(-(iy[..., 1:, :] + iy[..., :-1, :]) / 2)
        pad_x, pad_y = (1, 1, 0, 0), (0, 0, 1, 1)
    if m is not None:
        mx = _crop_like(m, gx, order, "x")
        my = _crop_like(m, gy, order, "y")
    if reduction == "mean":
        if m is None:
            return gx.mean() + gy.mean()
        return masked_mean(gx, mx) + masked_mean(gy, my)
    if m is not None:  # the map too keeps only differences whose pixels are all valid
        gx, gy = gx * mx, gy * my
    return _reduce(F.pad(gx, pad_x) + F.pad(gy, pad_y), mask, reduction)


def _crop_like(m: torch.Tensor, g: torch.Tensor, order: int, axis: str) -> torch.Tensor:
    """The mask entries that line up with a gradient map: a difference counts only when all the
    pixels it uses are valid."""
    if axis == "x":
        parts = [m[..., :, i : m.shape[-1] - order + i] for i in range(order + 1)]
    else:
        parts = [m[..., i : m.shape[-2] - order + i, :] for i in range(order + 1)]
    out = parts[0]
    for p in parts[1:]:
        out = out * p
    return out
