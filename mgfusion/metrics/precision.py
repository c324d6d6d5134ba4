"""Spatial Precision SP (docs/metrics.md, SP): how fast the high-passed L2 map decorrelates under shifts.

The channel-L2 map minus its 3x3 box mean (``sp_pad="zero"``: zero padding counted in the mean, the reference's
bug B1 of docs/differences.md, which makes the border dominate; ``"replicate"``: replicate padding) is z-scored.
For each radius r of the log-spaced list (docs/metrics.md, SP) the normalised cross-correlation between the map and its copy shifted by r along
each of the 4 unique directions (x, y and both diagonals; opposite shifts give identical values) is computed over
the overlap only (in float64, from the overlap's product sum and integral-image sums) and averaged. The length
is the first radius whose mean NCC falls below ``tau`` (the last radius if none); with ``interpolate`` the
crossing is located by linear interpolation of the NCC curve starting at NCC(0) = 1, so it varies continuously
with sharpness. ``SP = kappa / (kappa + length * unit)`` with unit = 1
(feature pixels, reference) or the stride (image pixels, paper / corrected).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from mgfusion.metrics.primitives import zscore

__all__ = ["highpass", "shift_radii", "spatial_precision"]

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


@functools.lru_cache(maxsize=64)
def _shift_geometry(height: int, width: int, radii: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Per shift (radius-major, 4 directions each): overlap origin in the map (ya, xa), in the shifted copy
    (yb, xb) and overlap size (oh, ow); size 0 when the shift leaves no overlap."""
    rows = []
    for r in radii:
        for dx, dy in _DIRECTIONS:
            sx, sy = dx * r, dy * r
            oh, ow = max(height - abs(sy), 0), max(width - abs(sx), 0)
            rows.append((max(-sy, 0), max(-sx, 0), max(sy, 0), max(sx, 0), oh, ow))
    return tuple(rows)


def _corner_index(table_w: int, y0: torch.Tensor, x0: torch.Tensor, oh: torch.Tensor, ow: torch.Tensor):
    """Flat indices of the 4 integral-image corners of windows [y0, y0+oh) x [x0, x0+ow)."""
    y1, x1 = y0 + oh, x0 + ow
    return y1 * table_w + x1, y0 * table_w + x1, y1 * table_w + x0, y0 * table_w + x0


def _window_sums(table: torch.Tensor, corners) -> torch.Tensor:
    """Window sums ``(B,S)`` from a flattened integral image ``(B, (H+1)(W+1))``."""
    a, b, c, d = corners
    return table[:, a] - table[:, b] - table[:, c] + table[:, d]


def _shift_correlations(m: torch.Tensor, radii: tuple[int, ...]) -> torch.Tensor:
    """Mean NCC over the 4 directions ``(B,R)``: each NCC over the overlap of ``m`` ``(B,H,W)`` and its shifted
    copy (float64: product sums per shift, the other window sums from integral images); 0 without overlap."""
    b, h, w = m.shape
    geo = _shift_geometry(h, w, radii)
    sab = torch.stack([(m[:, ya: ya + oh, xa: xa + ow] * m[:, yb: yb + oh, xb: xb + ow]).sum(dim=(1, 2))
                       if oh and ow else m.new_zeros(b) for ya, xa, yb, xb, oh, ow in geo], dim=1)
    g = torch.tensor(geo, dtype=torch.int64, device=m.device)
    ya, xa, yb, xb, oh, ow = g.unbind(1)
    n = (oh * ow).to(m.dtype)
    tables = torch.nn.functional.pad(torch.stack([m, m.square()]).cumsum(2).cumsum(3), (1, 0, 1, 0)).flatten(2)
    corners_a, corners_b = _corner_index(w + 1, ya, xa, oh, ow), _corner_index(w + 1, yb, xb, oh, ow)
    sa, saa = _window_sums(tables[0], corners_a), _window_sums(tables[1], corners_a)
    sb, sbb = _window_sums(tables[0], corners_b), _window_sums(tables[1], corners_b)
    n_safe = n.clamp_min(1.0)
    cov = sab - sa * sb / n_safe
    norm = (saa - sa * sa / n_safe).clamp_min(0.0).sqrt() * (sbb - sb * sb / n_safe).clamp_min(0.0).sqrt()
    ncc = torch.where(n > 0, cov / (norm + 1e-8), torch.zeros_like(cov))
    return ncc.view(b, len(radii), len(_DIRECTIONS)).mean(dim=2)


def spatial_precision(l2map: torch.Tensor, *, stride: int, tau: float = 0.5, num_radii: int = 16,
                      rmax_frac: float = 0.6, highpass_kernel: int = 3, pad: str = "zero",
                      units: str = "feature", interpolate: bool = False,
                      kappa: float = 64.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(SP, length)``, both ``(B,)``: SP in (0, 1] and the decorrelation length in feature pixels."""
    b, h, w = l2map.shape
    m = zscore(highpass(l2map, highpass_kernel, pad)).to(torch.float64)
    radii = shift_radii(h, w, num_radii, rmax_frac)
    corr = _shift_correlations(m, radii[:1])
    # Only the first radius below tau matters. On the CPU (where the check costs nothing) the other radii are skipped
    # when every map already decorrelates at the first one - the usual case with the zero-padded high-pass (B1).
    if len(radii) > 1 and not (m.device.type == "cpu" and bool((corr < tau).all())):
        corr = torch.cat([corr, _shift_correlations(m, radii[1:])], dim=1)
    else:
        corr = torch.cat([corr, corr.new_zeros(b, len(radii) - 1)], dim=1)  # never read: radius 1 already crossed
    corr = corr.to(torch.float32)  # (B,R)
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
