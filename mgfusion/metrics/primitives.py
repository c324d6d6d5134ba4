"""Shared image/map primitives of the SC/EF suite (docs/metrics.md, primitives), batched over images.

Maps are float32 tensors ``(B, H, W)`` on any device. The valid region V is the interior left after removing a
``border`` of pixels on every side; functions take ``border`` instead of a mask because V is always that
rectangle. Small constant tensors (Sobel kernels, Hann windows) are cached per shape/device.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = [
    "RANGE_TOLERANCE",
    "centerlines",
    "channel_l2",
    "dilate",
    "hann2d",
    "image_scale",
    "interior",
    "interior_mask",
    "luminance",
    "minmax_in_interior",
    "sobel_magnitude",
    "to_unit_rgb",
    "top_fraction_mask",
    "zscore",
]

EPS = 1e-8


#: Relative slack of the declared image range: values within ``RANGE_TOLERANCE * image_range`` outside
#: ``[0, image_range]`` are float round-off and clipped; anything further out is an error.
RANGE_TOLERANCE = 1e-6


def image_scale(dtype: torch.dtype, image_range: float | None) -> float:
    """The maximum of the value scale of images of ``dtype`` (see ``to_unit_rgb`` for the rule)."""
    if image_range is not None:
        if isinstance(image_range, bool) or not isinstance(image_range, (int, float)) \
                or not math.isfinite(image_range) or image_range <= 0:
            raise ValueError(f"image_range must be a positive finite number (the maximum of the value scale, "
                             f"e.g. 1.0 or 255.0), got {image_range!r}")
        image_range = float(image_range)
    if dtype == torch.uint8:
        if image_range is not None and image_range != 255.0:
            raise ValueError(f"uint8 images are 0..255; image_range={image_range} contradicts that "
                             "(omit image_range for uint8 images)")
        return 255.0
    if dtype == torch.bool or dtype.is_complex:
        raise ValueError(f"images of dtype {dtype} are not supported; pass uint8 (0..255) or float RGB with "
                         "image_range")
    if image_range is None:
        if dtype.is_floating_point:
            raise ValueError(f"{dtype} images need an explicit value range: pass image_range=1.0 (0..1 images) "
                             "or image_range=255.0 (0..255 images)")
        raise ValueError(f"{dtype} images need an explicit value range: pass image_range=<the maximum of the "
                         f"scale>, e.g. {float(torch.iinfo(dtype).max)} for the full {dtype} range "
                         "(only uint8 images default to 0..255)")
    return image_range


def to_unit_rgb(images: torch.Tensor, image_range: float | None = None) -> torch.Tensor:
    """RGB images ``(B,3,H,W)`` -> float32 in [0, 1] (divided by the maximum of their value scale).

    The scale is never guessed: uint8 images are 0..255 (``image_range`` omitted or 255); floating-point images
    need ``image_range`` (1.0 for 0..1 images, 255.0 for 0..255 images); other integer types (e.g. uint16) need it
    too (e.g. 65535.0, or 4095.0 for 12-bit data). Values outside ``[0, image_range]`` by more than
    ``RANGE_TOLERANCE`` (1e-6) x ``image_range`` raise a ValueError naming the observed minimum and maximum and the
    offending images (e.g. bicubic overshoot such as 1.0001 on a 0..1 image); smaller excursions are float
    round-off and are clipped. The result is in the channels_last memory layout.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B,3,H,W) RGB, got shape {tuple(images.shape)}")
    scale = image_scale(images.dtype, image_range)
    # channels_last: the bilinear resize to every feature resolution would otherwise copy the image into that
    # layout on every call (the same values either way).
    x = images.to(dtype=torch.float32, memory_format=torch.channels_last)
    if images.dtype != torch.uint8 and x.numel():
        flat = x.flatten(1)
        lo, hi = flat.amin(dim=1), flat.amax(dim=1)
        slack = RANGE_TOLERANCE * scale
        bad = (lo < -slack) | (hi > scale + slack)
        if bool(bad.any()):
            ids = bad.nonzero().flatten().tolist()
            raise ValueError(
                f"images hold values in [{float(lo.min()):.6g}, {float(hi.max()):.6g}] (images {ids}), outside the "
                f"declared range [0, {scale:g}] (image_range={scale:g}); pass the range the images really use "
                f"or clip them (e.g. images.clamp(0, {scale:g})) before computing metrics")
    return (x / scale).clamp_(0.0, 1.0)


def luminance(rgb01: torch.Tensor, size: tuple[int, int], *, antialias: bool = False) -> torch.Tensor:
    """Linear Rec.709 luma ``(B,H,W)`` of ``rgb01`` ``(B,3,H0,W0)`` resized to ``size`` (docs/metrics.md, primitives).

    Bilinear resize (align_corners=False; ``antialias`` optional, off in the reference) *before* sRGB
    linearisation, as the reference does; result clipped to [0, 1].
    """
    x = rgb01
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    x = x.clamp(0.0, 1.0)
    lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).pow(2.4))
    y = 0.2126 * lin[:, 0] + 0.7152 * lin[:, 1] + 0.0722 * lin[:, 2]
    return y.clamp_(0.0, 1.0)


@functools.lru_cache(maxsize=16)
def _sobel_weight(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    kx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 4.0
    return torch.stack([kx, kx.t()]).unsqueeze(1).to(device=device, dtype=dtype)  # (2,1,3,3)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude ``(B,H,W)`` with 1/4-scaled kernels and replicate padding."""
    xp = F.pad(x.unsqueeze(1), (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(xp, _sobel_weight(x.device, x.dtype))
    return torch.sqrt(g[:, 0].square() + g[:, 1].square())


def interior(x: torch.Tensor, border: int) -> torch.Tensor:
    """View of the valid interior of ``x`` ``(..., H, W)`` (may be empty)."""
    if border <= 0:
        return x
    return x[..., border: x.shape[-2] - border, border: x.shape[-1] - border]


@functools.lru_cache(maxsize=64)
def interior_mask(height: int, width: int, border: int, device: torch.device) -> torch.Tensor:
    """Bool ``(H,W)`` mask of V; cached, do not modify."""
    m = torch.zeros(height, width, dtype=torch.bool, device=device)
    interior(m, border).fill_(True)
    return m


def minmax_in_interior(x: torch.Tensor, border: int) -> torch.Tensor:
    """Min-max normalise ``(B,H,W)`` with min/max taken inside V, then clip to [0, 1]."""
    vals = interior(x, border).flatten(1)
    if vals.shape[1] == 0:
        return torch.zeros_like(x)
    lo = vals.amin(dim=1)
    rng = vals.amax(dim=1) - lo
    den = torch.where(rng > EPS, rng, torch.ones_like(rng))
    return ((x - lo.view(-1, 1, 1)) / den.view(-1, 1, 1)).clamp_(0.0, 1.0)


def top_fraction_mask(x: torch.Tensor, q: float, border: int, *, min_range: float = 1e-6) -> torch.Tensor:
    """Exactly ``ceil(q |V|)`` largest pixels of ``x`` ``(B,H,W)`` inside V, bool ``(B,H,W)``.

    Nothing is selected when ``|V| < 4`` or the value range inside V is below ``min_range``. Ties at the
    threshold are broken deterministically (lowest row-major index first).
    """
    out = torch.zeros_like(x, dtype=torch.bool)
    vals = interior(x, border).flatten(1)
    n_valid = vals.shape[1]
    if n_valid < 4:
        return out
    k = max(1, math.ceil(q * float(n_valid)))
    thr = torch.topk(vals, k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
    above = vals > thr
    ties = vals == thr
    need = k - above.sum(dim=1, keepdim=True)
    sel = above | (ties & (ties.cumsum(dim=1) <= need))
    ok = (vals.amax(dim=1) - vals.amin(dim=1)) >= min_range
    sel &= ok.view(-1, 1)
    interior(out, border).copy_(sel.view(interior(x, border).shape))
    return out


def centerlines(grad01: torch.Tensor, q: float, border: int) -> torch.Tensor:
    """Edge centerlines: in V, in the top-q of ``grad01`` and a 3x3 local maximum (-1e-6 slack)."""
    top = top_fraction_mask(grad01, q, border)
    pooled = F.max_pool2d(grad01.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    return top & (grad01 >= pooled - 1e-6)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Chebyshev dilation of a bool ``(B,H,W)`` mask by ``radius`` pixels (square element)."""
    if radius <= 0:
        return mask.clone()
    k = 2 * radius + 1
    x = mask.unsqueeze(1).to(torch.float32)
    if radius == 1:
        return F.max_pool2d(x, k, stride=1, padding=radius).squeeze(1) > 0
    # the square maximum is separable: a column pass then a row pass (half the work for radius 4)
    x = F.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))
    return F.max_pool2d(x, (1, k), stride=1, padding=(0, radius)).squeeze(1) > 0


def zscore(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-image z-score of ``(B, ...)`` over all non-batch dims with the unbiased std clamped at ``eps``.

    A single-element map has std 0 (not NaN), so it maps to 0.
    """
    flat = x.flatten(1)
    mean = flat.mean(dim=1, keepdim=True)
    if flat.shape[1] > 1:
        std = flat.std(dim=1, keepdim=True).clamp_min(eps)
    else:
        std = torch.full_like(mean, eps)
    return ((flat - mean) / std).view_as(x)


def channel_l2(features: torch.Tensor) -> torch.Tensor:
    """Channel L2 norm ``(B,H,W)`` of float32 features ``(B,C,H,W)``, in row chunks of ~4 MB."""
    b, c, h, w = features.shape
    out = torch.empty(b, h, w, dtype=features.dtype, device=features.device)
    rows = max(1, (1 << 20) // max(1, b * c * w))
    for r in range(0, h, rows):
        out[:, r: r + rows] = features[:, :, r: r + rows].square().sum(dim=1)
    return out.sqrt_()


@functools.lru_cache(maxsize=64)
def hann2d(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Separable symmetric Hann window ``(H,W)`` float32 (zeros at both ends); cached, do not modify."""
    wy = torch.hann_window(height, periodic=False, device=device, dtype=torch.float32)
    wx = torch.hann_window(width, periodic=False, device=device, dtype=torch.float32)
    return (wy.view(-1, 1) * wx.view(1, -1)).clamp_min(0.0)
