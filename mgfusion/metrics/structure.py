"""Structural Coherence: SFC, SCS and SC = sqrt(SFC * SCS) (docs/metrics.md, SFC / SCS / SC).

``structured_feature_contrast`` works on the channel-L2 map; ``structural_clustering_score`` on channel-standardised
features (``pca.standardize_channels``), batched over images with the torch k-means / silhouette of this package.
``structural_clustering_score_sklearn`` reproduces the reference code's sklearn path image by image (one
``numpy.random.default_rng(seed)`` per image instead of one per batch, the only deliberate difference).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from mgfusion.metrics.config import MetricConfig
from mgfusion.metrics.kmeans import kmeans_labels
from mgfusion.metrics.pca import CentredFeatures, principal_scores
from mgfusion.metrics.primitives import zscore
from mgfusion.metrics.silhouette import (
    silhouette_from_masks,
    stratified_mask,
    valid_clusterings,
)

__all__ = [
    "median_of_valid",
    "scs_sample_indices",
    "sfc_grid_shape",
    "structural_clustering_score",
    "structural_clustering_score_sklearn",
    "structured_feature_contrast",
]


def sfc_grid_shape(height: int, width: int, grid: int, min_cell: int) -> tuple[int, int]:
    """Cells per side ``(g_y, g_x)``: ``min(G, H // min_cell)`` (at least 1), likewise for the width."""
    return max(1, min(grid, height // min_cell)), max(1, min(grid, width // min_cell))


def structured_feature_contrast(l2map: torch.Tensor, *, grid: int = 16, min_cell: int = 1,
                                intra_floor: float = 1e-6) -> torch.Tensor:
    """Bounded SFC ``(B,)`` of the channel-L2 map ``(B,H,W)``: inter / (inter + max(intra, floor)), in [0, 1].

    The z-scored map is cropped to a whole number of ``g_y x g_x`` cells (bottom/right remainder dropped); inter =
    population variance of cell means, intra = mean population variance inside cells.
    """
    b, h, w = l2map.shape
    gy, gx = sfc_grid_shape(h, w, grid, min_cell)
    kh, kw = h // gy, w // gx
    m = zscore(l2map)[:, : gy * kh, : gx * kw].reshape(b, gy, kh, gx, kw).permute(0, 1, 3, 2, 4)
    cells = m.reshape(b, gy * gx, kh * kw)
    means = cells.mean(dim=2)
    inter = means.var(dim=1, unbiased=False)
    intra = cells.var(dim=2, unbiased=False).mean(dim=1).clamp_min(intra_floor)
    return (inter / (inter + intra)).clamp(0.0, 1.0)


def median_of_valid(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """numpy-style median ``(B,)`` of the valid entries of ``values`` ``(B,L)`` (mean of middle two); 0 if none."""
    filled = torch.where(valid, values, torch.full_like(values, float("inf")))
    srt = filled.sort(dim=1).values
    cnt = valid.sum(dim=1)
    lo = ((cnt - 1).clamp_min(0) // 2).unsqueeze(1)
    hi = (cnt // 2).clamp_max(values.shape[1] - 1).unsqueeze(1)
    med = 0.5 * (srt.gather(1, lo) + srt.gather(1, hi)).squeeze(1)
    return torch.where(cnt > 0, med, torch.zeros_like(med))


@functools.lru_cache(maxsize=64)
def scs_sample_indices(n_pixels: int, n_samples: int, seed: int, device: torch.device) -> torch.Tensor | None:
    """Uniform pixel subsample (without replacement) used by SCS, or ``None`` when all pixels are used.

    Cached: the same arguments return the same tensor (do not modify it), which ``pca.centre_channels`` and
    ``pca.principal_scores`` use to recognise the subsample they prepared.
    """
    if n_pixels <= n_samples:
        return None
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randperm(n_pixels, generator=gen)[:n_samples].sort().values.to(device)


def structural_clustering_score(cf: CentredFeatures, *, cfg: MetricConfig, seed: int = 0,
                                scores: torch.Tensor | None = None) -> torch.Tensor:
    """SCS ``(B,)`` in [0, 1] from channel-centred features ``cf`` (``pca.centre_channels``), docs/metrics.md (SCS).

    ``scores`` ``(B,N,>=d)``: optional precomputed principal scores of all N pixels, reused when the SCS uses every
    pixel (N <= ``scs_samples``). Images whose PCA components all have (near) zero spread get 0.
    """
    b, c, n_pix = cf.x.shape
    out = torch.zeros(b, dtype=torch.float32, device=cf.x.device)
    sub = scs_sample_indices(n_pix, cfg.scs_samples, seed, cf.x.device)
    n = n_pix if sub is None else sub.numel()
    ks = [k for k in cfg.scs_ks if 2 <= k <= min(max(n // 2, 2), n - 1)]
    if n < 8 or not ks:
        return out
    d = max(1, min(cfg.scs_pca_dims, c, n - 1))
    if sub is None and scores is not None and scores.shape[-1] >= d:
        pts = scores[..., :d]
    else:
        pts = principal_scores(cf, d, index=sub)
    # population std over the points (written out: ``std`` over the middle dimension is ~15x slower on the CPU)
    spread = (pts - pts.mean(dim=1, keepdim=True)).square().mean(dim=1).sqrt().amax(dim=1)
    keep = spread >= 1e-12
    labels = kmeans_labels(pts, ks, n_init=cfg.scs_n_init, screen_iter=cfg.scs_screen_iter,
                           screen_points=cfg.scs_screen_points,
                           max_iter=cfg.scs_max_iter, tol=cfg.scs_tol, seed=seed)  # (B,L,n)
    k_max = max(ks)
    ok = valid_clusterings(labels, k_max)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) + 1)
    chosen = stratified_mask(labels, k_max, cfg.scs_sil_samples, gen)
    sil = silhouette_from_masks(pts, labels, chosen, k_max)
    ok &= torch.isfinite(sil)
    scs = (median_of_valid(sil, ok) + 1.0) / 2.0
    scs = torch.where(ok.any(dim=1) & keep, scs, torch.zeros_like(scs))
    return out.copy_(scs)


def structural_clustering_score_sklearn(features: torch.Tensor, *, cfg: MetricConfig, seed: int = 0) -> torch.Tensor:
    """SCS ``(B,)`` via numpy/sklearn exactly as the reference code computes it for a single image."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    b, _c = features.shape[:2]
    flat = features.detach().to(torch.float32).flatten(2).transpose(1, 2).cpu().numpy()
    vals = []
    for i in range(b):
        rng = np.random.default_rng(seed)
        x = flat[i]
        ch_std = x.std(axis=0, ddof=0)
        if not np.isfinite(x).all() or float(ch_std.max()) < 1e-12:
            vals.append(0.0)
            continue
        x = (x - x.mean(0, keepdims=True)) / (ch_std + 1e-6)
        if x.shape[0] > cfg.scs_samples:
            x = x[rng.choice(x.shape[0], cfg.scs_samples, replace=False)]
        n = x.shape[0]
        cap = int(max(1, min(cfg.scs_pca_dims, x.shape[1], n - 1)))
        if n < 8:
            vals.append(0.0)
            continue
        if x.shape[1] > cap:
            x = PCA(n_components=cap, random_state=seed).fit_transform(x)
        if float(np.max(x.std(axis=0, ddof=0))) < 1e-12:
            vals.append(0.0)
            continue
        scores = []
        for k in [k for k in cfg.scs_ks if 2 <= k <= min(max(n // 2, 2), n - 1)]:
            labels = KMeans(n_clusters=k, n_init=cfg.scs_n_init, random_state=seed).fit_predict(x)
            uniq, counts = np.unique(labels, return_counts=True)
            if uniq.size < 2 or counts.min() < 2:
                continue
            if n > cfg.scs_sil_samples:
                chunks = []
                for u, cnt in zip(uniq, counts):
                    take = max(2, round(cfg.scs_sil_samples * cnt / n))
                    members = np.where(labels == u)[0]
                    chunks.append(members if members.size <= take else rng.choice(members, take, replace=False))
                sel = np.concatenate(chunks)
                s = silhouette_score(x[sel], labels[sel], metric="euclidean")
            else:
                s = silhouette_score(x, labels, metric="euclidean")
            if np.isfinite(s):
                scores.append(s)
        vals.append((float(np.median(scores)) + 1.0) / 2.0 if scores else 0.0)
    return torch.tensor(vals, dtype=torch.float32, device=features.device)
