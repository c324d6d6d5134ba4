"""All metrics of one pyramid level for a batch of images whose feature maps have the same size.

One channel standardisation and one eigen-decomposition per image feed the EF PCA map and (when the SCS uses all
pixels) the SCS projection. Images whose features are constant (every channel constant up to float32 rounding) get
SFC = SCS = SC = 0 and a zero PCA map and L2 map, hence EF = 0 (docs/metrics.md, known answers).
"""

from __future__ import annotations

from collections.abc import Collection

import torch

from mgfusion.metrics.config import MetricConfig
from mgfusion.metrics.edges import edge_fidelity, image_centerlines
from mgfusion.metrics.pca import centre_channels, first_component_map, principal_scores
from mgfusion.metrics.primitives import channel_l2, luminance
from mgfusion.metrics.structure import (
    scs_sample_indices,
    structural_clustering_score,
    structural_clustering_score_sklearn,
    structured_feature_contrast,
)

__all__ = ["level_metrics"]


def level_metrics(features: torch.Tensor, rgb01: torch.Tensor | None, *, stride: int, cfg: MetricConfig,
                  seed: int, parts: Collection[str]) -> dict[str, torch.Tensor]:
    """Per-image metrics ``{name: (B,) float32}`` for finite float32 ``features`` ``(B,C,H,W)``.

    ``rgb01`` ``(B,3,H0,W0)`` in [0,1] covering exactly the features' field of view (needed for EF).
    """
    b, _c, h, w = features.shape
    l2 = channel_l2(features)
    use_torch_scs = "SC" in parts and cfg.scs_backend == "torch"
    sub = scs_sample_indices(h * w, cfg.scs_samples, seed, features.device) if use_torch_scs else None
    cf = centre_channels(features, subsample=sub)  # one pass: statistics, full Gram and the SCS pixels' Gram
    keep = (~cf.constant()).to(torch.float32)
    l2 = l2 * keep.view(b, 1, 1)
    out: dict[str, torch.Tensor] = {}
    share_scores = use_torch_scs and sub is None
    scores = None
    if "EF" in parts or share_scores:
        scores = principal_scores(cf, cfg.scs_pca_dims if share_scores else 1)
    if "SC" in parts:
        sfc = structured_feature_contrast(l2, grid=cfg.sfc_grid, min_cell=cfg.sfc_min_cell,
                                          intra_floor=cfg.sfc_intra_floor) * keep
        if cfg.scs_backend == "torch":
            scs = structural_clustering_score(cf, cfg=cfg, seed=seed, scores=scores if share_scores else None)
        else:
            scs = structural_clustering_score_sklearn(features, cfg=cfg, seed=seed)
        scs = scs * keep
        out.update(SFC=sfc, SCS=scs, SC=torch.sqrt(sfc * scs))
    if "EF" in parts:
        pca_map = first_component_map(scores[..., 0], h, w) * keep.view(b, 1, 1)
        centre = image_centerlines(luminance(rgb01, (h, w), antialias=cfg.image_antialias), cfg)
        out.update(edge_fidelity(pca_map, l2, centre, stride=stride, cfg=cfg))
    return {k: v.to(torch.float32) for k, v in out.items()}
