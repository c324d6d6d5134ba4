"""Edge Fidelity EF = lambda * EC * NC * FC * SP (docs/metrics.md, EF), batched over images of one size.

Preprocessing (docs/metrics.md, EF preprocessing): image luminance at feature resolution -> Sobel -> min-max in V
-> centerlines (top ``q_img`` local maxima); PCA map -> Sobel (energy w, zero outside V) -> min-max in V -> strong
edges E_F (top ``q_feat``). EC/NC follow ``cfg.concentration`` (``concentration`` module), FC uses the PCA map or
the z-scored L2 map (``cfg.fc_map``), SP the L2 map. The reference clips the product to [0, 1] before scaling;
every factor is already in [0, 1], so that clip is kept for all variants and changes nothing.
"""

from __future__ import annotations

import torch

from mgfusion.metrics.concentration import edge_concentration
from mgfusion.metrics.config import MetricConfig
from mgfusion.metrics.precision import spatial_precision
from mgfusion.metrics.primitives import (
    centerlines,
    interior_mask,
    minmax_in_interior,
    sobel_magnitude,
    top_fraction_mask,
)
from mgfusion.metrics.spectrum import frequency_content

__all__ = ["edge_fidelity", "image_centerlines"]


def image_centerlines(lum: torch.Tensor, cfg: MetricConfig) -> torch.Tensor:
    """Bool ``(B,H,W)`` image edge centerlines from luminance at feature resolution (docs/metrics.md, EF
    preprocessing)."""
    return centerlines(minmax_in_interior(sobel_magnitude(lum), cfg.border), cfg.q_img, cfg.border)


def edge_fidelity(pca_map: torch.Tensor, l2map: torch.Tensor, centre: torch.Tensor, *, stride: int,
                  cfg: MetricConfig) -> dict[str, torch.Tensor]:
    """EC, NC, FC, SP, EF (+ EC/NC chance levels and lifts, EF_lift, SP_len) as ``(B,)`` float32 tensors.

    ``pca_map`` ``(B,H,W)`` in [0,1], ``l2map`` ``(B,H,W)`` channel L2 norm, ``centre`` image centerlines.
    """
    h, w = pca_map.shape[-2:]
    valid = interior_mask(h, w, cfg.border, pca_map.device)
    grad = sobel_magnitude(pca_map)
    energy = grad.clamp_min(0.0) * valid
    strong = top_fraction_mask(minmax_in_interior(grad, cfg.border), cfg.q_feat, cfg.border)
    out = edge_concentration(cfg.concentration, energy, strong, centre, border=cfg.border, r1=cfg.r1,
                             r2=cfg.outer_radius)
    fc_input = pca_map if cfg.fc_map == "pca" else l2map
    out["FC"] = frequency_content(fc_input, cut=cfg.fc_cut, clip=cfg.fc_clip, grid=cfg.fc_grid)
    out["SP"], out["SP_len"] = spatial_precision(
        l2map, stride=stride, tau=cfg.sp_tau, num_radii=cfg.sp_num_radii, rmax_frac=cfg.sp_rmax_frac,
        highpass_kernel=cfg.sp_highpass, pad=cfg.sp_pad, units=cfg.sp_units, interpolate=cfg.sp_interpolate,
        kappa=cfg.sp_kappa)
    product = out["EC"] * out["NC"] * out["FC"] * out["SP"]
    out["EF"] = cfg.ef_scale * product.clamp(0.0, 1.0)
    out["EF_lift"] = out["EC_lift"] * out["NC_lift"]
    return out
