"""Frequency Content FC (docs/metrics.md, FC): share of the Hann-windowed power spectrum at radius >= ``cut``.

The map is z-scored, clipped to mean +- ``clip`` and multiplied by a symmetric 2-D Hann window; the power spectrum
comes from ``rfft2`` (half spectrum), with per-bin weights that count every full-spectrum bin exactly once.
Radial grids (both normalised so the spectrum corners have radius 1):

* ``linspace`` (reference; docs/differences.md, B4): bin (i, j) of the centred spectrum sits at
  ``u_i = -1 + 2 i / (H - 1)``, ``v_j = -1 + 2 j / (W - 1)``, radius ``sqrt(u^2 + v^2) / sqrt(2)``; for even sizes
  the grid is offset from the DC bin by 1/(n - 1). Reproduced exactly.
* ``fftfreq`` (paper / corrected): the true frequencies ``f`` in cycles/pixel, radius ``|f| / (0.5 sqrt(2))``.
"""

from __future__ import annotations

import functools

import torch

from mgfusion.metrics.primitives import hann2d, zscore

__all__ = ["frequency_content", "rfft_band_weights"]


def _full_mask_linspace(h: int, w: int, cut: float) -> torch.Tensor:
    yy = torch.linspace(-1.0, 1.0, h, dtype=torch.float32).view(h, 1)
    xx = torch.linspace(-1.0, 1.0, w, dtype=torch.float32).view(1, w)
    rr = torch.sqrt(yy**2 + xx**2)
    rr = rr / rr.max().clamp_min(1e-6)
    high_centred = rr >= cut
    # Undo the centring roll (shift by h//2, w//2) so entry [k, l] belongs to FFT bin (k, l).
    return torch.roll(high_centred, shifts=(-(h // 2), -(w // 2)), dims=(0, 1))


def _full_mask_fftfreq(h: int, w: int, cut: float) -> torch.Tensor:
    fy = torch.fft.fftfreq(h, dtype=torch.float64).view(h, 1)
    fx = torch.fft.fftfreq(w, dtype=torch.float64).view(1, w)
    return torch.sqrt(fy**2 + fx**2) / (0.5 * 2.0**0.5) >= cut


@functools.lru_cache(maxsize=64)
def rfft_band_weights(h: int, w: int, cut: float, grid: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(H, W//2+1)`` so that sums over the rfft half spectrum equal full-spectrum sums.

    Returns ``(high, total)``: ``sum(P_half * high)`` = full-spectrum power at radius >= cut,
    ``sum(P_half * total)`` = full-spectrum power. Cached per shape/rule/device; do not modify.
    """
    full = (_full_mask_linspace if grid == "linspace" else _full_mask_fftfreq)(h, w, cut).to(torch.float32)
    wh = w // 2 + 1
    mirror = torch.roll(torch.flip(full, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))  # full[(-k) % h, (-l) % w]
    twice = torch.ones(wh, dtype=torch.float32)
    twice[0] = 0.0
    if w % 2 == 0:
        twice[-1] = 0.0
    high = full[:, :wh] + twice.view(1, wh) * mirror[:, :wh]
    total = 1.0 + twice.view(1, wh).expand(h, wh)
    return high.to(device), total.contiguous().to(device)


def frequency_content(scalar_map: torch.Tensor, *, cut: float = 0.15, clip: float = 8.0,
                      grid: str = "linspace") -> torch.Tensor:
    """FC ``(B,)`` in [0, 1] of a scalar map ``(B,H,W)``."""
    b, h, w = scalar_map.shape
    z = zscore(scalar_map)
    mu = z.flatten(1).mean(dim=1).view(b, 1, 1)
    z = torch.maximum(torch.minimum(z, mu + clip), mu - clip) * hann2d(h, w, scalar_map.device)
    power = torch.fft.rfft2(z).abs().square()
    high_w, total_w = rfft_band_weights(h, w, float(cut), grid, scalar_map.device)
    high = (power * high_w).flatten(1).sum(dim=1)
    total = (power * total_w).flatten(1).sum(dim=1).clamp_min(1e-8)
    return (high / total).clamp(0.0, 1.0)
