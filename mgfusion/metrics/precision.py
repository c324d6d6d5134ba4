"""Spatial Precision SP (SPEC §3.5): how fast the high-passed L2 map decorrelates under shifts.

The channel-L2 map minus its 3x3 box mean (``sp_pad="zero"``: zero padding counted in the mean, the reference's
bug B1 that makes the border dominate; ``"replicate"``: replicate padding) is z-scored. For each radius r of the
log-spaced list (SPEC §3.5 step 2) the normalised cross-correlation between the map and its copy shifted by r along
each of the 4 unique directions (x, y and both diagonals; opposite shifts give identical values) is computed over
the overlap only and averaged. The length is the first radius whose mean NCC falls below ``tau`` (the last radius
if none); with ``interpolate`` the crossing is located by linear interpolation of the NCC curve starting at
NCC(0) = 1, so it varies continuously with sharpness. ``SP = kappa / (kappa + length * unit)`` with unit = 1
(feature pixels, reference) or the stride (image pixels, paper / corrected).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from mgfusion.metrics.primitives import zscore

__all__ = ["shift_radii", "spatial_precision", "highpass"]

_DIRECTIONS = ((1, 0), (0, 1), (1, 1), (1, -1))


@functools.lru_cache(maxsize=64)
def shift_radii(height: int, width: int, num_radii: int = 16, rmax_frac: float = 0.6) -> tuple[int, ...]:
    """Unique rounded log-spaced radii in [1, r_max], r_max = max(1, floor(rmax_frac * min(H, W)))."""
    r_max = max(1, int(rmax_frac * min(height, width)))
    log_end = torch.log10(torch.tensor(float(r_max), dtype=torch.float32))
    radii = torch.logspace(0, float(log_end), steps=max(1, num_radii), dtype=torch.float32)
    radii = torch.round(radii).clamp(min=1, max=r_max).to(torch.int64)
    return tuple(int(r) for r in torch.unique(radii).tolist()) or (1,)


def highpass(l2map: torch.Tensor, kernel: int, pad: str) -> torch.Tensor:
    """``l2map`` minus its ``kernel x kernel`` box mean (odd kernel; ``pad`` = "zero" or "replicate")."""
    if kernel <= 1:
        return l2map
    k = kernel + (kernel % 2 == 0)
    x = l2map.unsqueeze(1)
    if pad == "zero":
        blur = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=True)
    else:
        blur = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)
    return l2map - blur.squeeze(1)


def _overlap_ncc(m: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """NCC ``(B,)`` between ``m`` and ``m`` shifted by (dx, dy), over the overlap (0 when there is none)."""
    _, h, w = m.shape
    if abs(dx) >= w or abs(dy) >= h:
        return torch.zeros(m.shape[0], dtype=m.dtype, device=m.device)
    ya, yb = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xa, xb = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    a = m[:, ya, xa].flatten(1)
    b = m[:, yb, xb].flatten(1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)


def spatial_precision(l2map: torch.Tensor, *, stride: int, tau: float = 0.5, num_radii: int = 16,
                      rmax_frac: float = 0.6, highpass_kernel: int = 3, pad: str = "zero",
                      units: str = "feature", interpolate: bool = False,
                      kappa: float = 64.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(SP, length)``, both ``(B,)``: SP in (0, 1] and the decorrelation length in feature pixels."""
    b, h, w = l2map.shape
    m = zscore(highpass(l2map, highpass_kernel, pad))
    radii = shift_radii(h, w, num_radii, rmax_frac)
    corr = torch.stack([torch.stack([_overlap_ncc(m, dx * r, dy * r) for dx, dy in _DIRECTIONS]).mean(dim=0)
                        for r in radii], dim=1)  # (B,R)
    r_t = torch.tensor(radii, dtype=torch.float32, device=l2map.device)
    below = corr < tau
    first = torch.where(below.any(dim=1), below.to(torch.int64).argmax(dim=1),
                        torch.full((b,), len(radii) - 1, device=l2map.device))
    length = r_t[first]
    if interpolate:
        prev_r = torch.cat([r_t.new_zeros(1), r_t])[first]
        prev_c = torch.cat([corr.new_ones(b, 1), corr], dim=1).gather(1, first.view(b, 1)).squeeze(1)
        cur_c = corr.gather(1, first.view(b, 1)).squeeze(1)
        frac = ((prev_c - tau) / (prev_c - cur_c).clamp_min(1e-12)).clamp(0.0, 1.0)
        length = torch.where(below.any(dim=1), prev_r + frac * (length - prev_r), length)
    unit = float(stride) if units == "image" else 1.0
    sp = kappa / (kappa + length * unit)
    return sp.clamp(0.0, 1.0), length
