"""Supervised counterparts of SC for validation - OUR RECONSTRUCTION, not the authors' code.

Definitions: docs/metrics.md (supervised counterparts).

The paper reports an "SC_gt" computed from semantic and instance labels, but no code or formula survives. Ours:

1. Labels are downsampled to the feature grid by majority vote of the labelled pixels of each ``stride x stride``
   block (blocks without labelled pixels are left out). Label maps smaller than the grid's field of view are padded with
   ``ignore_label``.
2. ``SFC_gt``: the 16x16 grid of SFC is replaced by the label segments: on the z-scored channel-L2 map,
   inter = size-weighted variance of segment means, intra = pooled within-segment variance (both over labelled
   cells), ``SFC_gt = inter / (inter + max(intra, 1e-6))`` (the correlation ratio eta^2).
3. ``SCS_gt``: the k-means labels of SCS are replaced by the labels: silhouette on the same 32-d PCA pixel
   subsample as SCS (stratified silhouette subsample, unlabelled pixels excluded), mapped to [0,1] by (s + 1) / 2;
   0 when fewer than two segments are present.
4. With both label maps the semantic and instance values are averaged; ``SC_gt = sqrt(SFC_gt * SCS_gt)``.

``spearman`` is the rank correlation used to compare metric and label-based scores (Table 7 / RQ4).

``ef_gt`` is the supervised counterpart of EF (ours, docs/metrics.md "EF_gt"): the corrected EC/NC with the
ground-truth segment boundaries in place of the image edges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mgfusion.metrics.concentration import edge_concentration
from mgfusion.metrics.config import MetricConfig, resolve_config
from mgfusion.metrics.pca import centre_channels, pca_map, principal_scores
from mgfusion.metrics.primitives import (
    channel_l2,
    interior_mask,
    minmax_in_interior,
    sobel_magnitude,
    top_fraction_mask,
    zscore,
)
from mgfusion.metrics.silhouette import silhouette_from_masks, stratified_mask
from mgfusion.metrics.structure import scs_sample_indices

__all__ = ["boundary_cells", "downsample_labels", "ef_gt", "sc_gt", "segment_ids", "spearman"]


def downsample_labels(labels: torch.Tensor, grid_hw: tuple[int, int], stride: int,
                      ignore_label: int = 255) -> torch.Tensor:
    """Majority-vote labels ``(B,H,W)`` int64 of label maps ``(B,H0,W0)`` on a ``grid_hw`` grid at ``stride``.

    The vote counts labelled pixels only (ties: smallest label); a block without any labelled pixel gets
    ``ignore_label``.
    """
    if labels.ndim != 3:
        raise ValueError(f"label maps must be (B,H0,W0), got shape {tuple(labels.shape)}")
    h, w = grid_hw
    b, h0, w0 = labels.shape
    if math.ceil(h0 / stride) != h or math.ceil(w0 / stride) != w:
        raise ValueError(f"label maps of size {h0}x{w0} do not match a {h}x{w} feature grid at stride {stride} "
                         f"(expected ceil(H0/stride) = {h}, ceil(W0/stride) = {w})")
    lab = labels.long()
    pad_h, pad_w = h * stride - h0, w * stride - w0
    if pad_h or pad_w:
        lab = torch.nn.functional.pad(lab, (0, pad_w, 0, pad_h), value=ignore_label)
    blocks = lab.view(b, h, stride, w, stride).permute(0, 1, 3, 2, 4).reshape(b, h, w, stride * stride)
    vals = blocks.sort(dim=-1).values
    pos = torch.arange(vals.shape[-1], device=vals.device).expand_as(vals)
    starts = torch.ones_like(vals, dtype=torch.bool)
    starts[..., 1:] = vals[..., 1:] != vals[..., :-1]
    run_start = torch.where(starts, pos, torch.zeros_like(pos)).cummax(dim=-1).values
    run_len = torch.where(vals == ignore_label, torch.full_like(pos, -1), pos - run_start + 1)
    return vals.gather(-1, run_len.argmax(dim=-1, keepdim=True)).squeeze(-1)


def _compact(labels: torch.Tensor, ignore_label: int) -> tuple[torch.Tensor, int]:
    """Per-image consecutive ids ``(B,N)`` (-1 = ignored) and the largest per-image segment count."""
    b, _n = labels.shape
    ok = labels != ignore_label
    if not bool(ok.any()):
        return torch.full_like(labels, -1), 1
    shift = labels.clamp_min(0)
    key = torch.arange(b, device=labels.device).view(b, 1) * (int(shift.max()) + 1) + shift
    _, inv = torch.unique(key[ok], return_inverse=True)
    ids = torch.full_like(labels, -1)
    ids[ok] = inv
    first = torch.where(ok, ids, torch.full_like(ids, torch.iinfo(ids.dtype).max)).amin(dim=1, keepdim=True)
    ids = torch.where(ok, ids - first, ids)
    return ids, int(ids.max()) + 1


def _sfc_from_segments(l2map: torch.Tensor, ids: torch.Tensor, n_seg: int, floor: float) -> torch.Tensor:
    m = zscore(l2map).flatten(1)
    ok = ids >= 0
    onehot = ((ids.unsqueeze(-1) == torch.arange(n_seg, device=ids.device)) & ok.unsqueeze(-1)).to(m.dtype)
    counts = onehot.sum(1)  # (B,K)
    n_lab = counts.sum(1).clamp_min(1)
    seg_mean = torch.einsum("bn,bnk->bk", m, onehot) / counts.clamp_min(1)
    mean = (seg_mean * counts).sum(1) / n_lab
    inter = (counts * (seg_mean - mean.unsqueeze(1)).square()).sum(1) / n_lab
    own_mean = torch.einsum("bnk,bk->bn", onehot, seg_mean)
    intra = (((m - own_mean) * ok).square().sum(1) / n_lab).clamp_min(floor)
    return (inter / (inter + intra)).clamp(0.0, 1.0)


def _scs_from_segments(points: torch.Tensor, ids: torch.Tensor, n_seg: int, target: int, seed: int) -> torch.Tensor:
    lab = ids.clamp_min(0).unsqueeze(1)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) + 1)
    chosen = stratified_mask(lab, n_seg, target, gen, usable=(ids >= 0).unsqueeze(1))
    sil = silhouette_from_masks(points, lab, chosen, n_seg)[:, 0]
    present = ((lab[:, 0].unsqueeze(-1) == torch.arange(n_seg, device=ids.device)) & (ids >= 0).unsqueeze(-1)).any(1)
    return torch.where(present.sum(1) >= 2, (sil + 1.0) / 2.0, torch.zeros_like(sil))


def _one_batch(features, label_maps, stride, ignore_label, seed, cfg) -> dict[str, torch.Tensor]:
    feats = features.detach().to(torch.float32)
    _b, c, h, w = feats.shape
    l2 = channel_l2(feats)
    sub = scs_sample_indices(h * w, cfg.scs_samples, seed, feats.device)
    cf = centre_channels(feats, subsample=sub)
    n = h * w if sub is None else sub.numel()
    pts = principal_scores(cf, max(1, min(cfg.scs_pca_dims, c, n - 1)), index=sub)
    sfc, scs = [], []
    for labels in label_maps:
        grid = downsample_labels(labels.to(feats.device), (h, w), stride, ignore_label).flatten(1)
        ids, n_seg = _compact(grid, ignore_label)
        sfc.append(_sfc_from_segments(l2, ids, n_seg, cfg.sfc_intra_floor))
        sub_ids = ids if sub is None else ids[:, sub]
        scs.append(_scs_from_segments(pts, sub_ids, n_seg, cfg.scs_sil_samples, seed))
    sfc_gt, scs_gt = torch.stack(sfc).mean(0), torch.stack(scs).mean(0)
    return {"SFC_gt": sfc_gt, "SCS_gt": scs_gt, "SC_gt": torch.sqrt(sfc_gt * scs_gt)}


def sc_gt(features: torch.Tensor, *, stride: int, semantic: torch.Tensor | None = None,
          instance: torch.Tensor | None = None, ignore_label: int = 255,
          valid_hw: torch.Tensor | Sequence[Sequence[int]] | None = None, seed: int = 0,
          **hparams: Any) -> dict[str, torch.Tensor]:
    """Label-based ``SFC_gt, SCS_gt, SC_gt`` ``(B,)`` of features ``(B,C,H,W)`` (our reconstruction, see module doc).

    ``semantic`` / ``instance``: ``(B,H0,W0)`` integer label maps (at least one), ``ignore_label`` marks unlabelled
    pixels; ``valid_hw``: per-image valid size inside padded features/labels. ``hparams``: MetricConfig fields
    (``scs_pca_dims``, ``scs_samples``, ``scs_sil_samples``, ``sfc_intra_floor`` are used).
    """
    cfg = resolve_config("reference", hparams)
    label_maps = [x for x in (semantic, instance) if x is not None]
    if not label_maps:
        raise ValueError("sc_gt needs at least one of semantic= or instance= label maps")
    if features.ndim != 4 or any(x.shape[0] != features.shape[0] for x in label_maps):
        raise ValueError("features must be (B,C,H,W) and every label map (B,H0,W0) with the same B")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN/Inf values")
    with torch.no_grad():
        if valid_hw is None:
            return _one_batch(features, label_maps, stride, ignore_label, seed, cfg)
        rows = valid_hw.tolist() if isinstance(valid_hw, torch.Tensor) else [list(r) for r in valid_hw]
        parts = []
        for i, (h0, w0) in enumerate(rows):
            hf, wf = math.ceil(h0 / stride), math.ceil(w0 / stride)
            parts.append(_one_batch(features[i: i + 1, :, :hf, :wf], [x[i: i + 1, :h0, :w0] for x in label_maps],
                                    stride, ignore_label, seed, cfg))
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def spearman(metric_values: Sequence[float] | torch.Tensor,
             label_scores: Sequence[float] | torch.Tensor) -> tuple[float, float]:
    """Spearman rank correlation ``(rho, p_value)`` between paired metric and label-based scores (n >= 3)."""
    from scipy.stats import spearmanr

    x = np.asarray(torch.as_tensor(metric_values, dtype=torch.float64).cpu(), dtype=float).reshape(-1)
    y = np.asarray(torch.as_tensor(label_scores, dtype=torch.float64).cpu(), dtype=float).reshape(-1)
    if x.size != y.size or x.size < 3:
        raise ValueError(f"spearman needs two equally long sequences of >= 3 values, got {x.size} and {y.size}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("spearman is undefined for a constant sequence")
    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


# ---------------------------------------------------------------------------------------------------------------
# EF_gt: supervised edge fidelity (ours; definition in docs/metrics.md, "EF_gt")
# ---------------------------------------------------------------------------------------------------------------

def segment_ids(semantic: torch.Tensor | None = None, instance: torch.Tensor | None = None) -> torch.Tensor:
    """One non-negative segment id per pixel ``(B,H0,W0)`` int64 from the (semantic, instance) label pair.

    Every value, including void (-1) and "no instance" (-1), is a value of its own, so an object's outline against
    unlabelled background or void is a segment boundary.
    """
    maps = [x.long() for x in (semantic, instance) if x is not None]
    if not maps:
        raise ValueError("segment_ids needs at least one of semantic= or instance= label maps")
    if any(int(x.min()) < -1 for x in maps if x.numel()):
        raise ValueError("label maps must hold ids >= -1 (-1 = void / no instance)")
    ids = maps[0] + 1
    for x in maps[1:]:
        ids = ids * (int(x.max()) + 2) + (x + 1)
    return ids


def boundary_cells(grid_ids: torch.Tensor) -> torch.Tensor:
    """Bool ``(B,H,W)``: cells whose segment id differs from one of their 4 neighbours (both sides marked).

    ``grid_ids`` ``(B,H,W)`` int64; negative ids mark cells outside the image and never form a boundary.
    """
    known = grid_ids >= 0
    out = torch.zeros_like(grid_ids, dtype=torch.bool)
    for dim in (1, 2):
        n = grid_ids.shape[dim]
        a, b = grid_ids.narrow(dim, 0, n - 1), grid_ids.narrow(dim, 1, n - 1)
        diff = (a != b) & known.narrow(dim, 0, n - 1) & known.narrow(dim, 1, n - 1)
        out.narrow(dim, 0, n - 1).logical_or_(diff)
        out.narrow(dim, 1, n - 1).logical_or_(diff)
    return out


def _ef_gt_batch(features: torch.Tensor, seg: torch.Tensor, stride: int, cfg: MetricConfig) -> dict[str, torch.Tensor]:
    feats = features.detach().to(torch.float32)
    _, _, h, w = feats.shape
    grid = downsample_labels(seg.to(feats.device), (h, w), stride, ignore_label=-1)
    boundary = boundary_cells(grid)
    valid = interior_mask(h, w, cfg.border, feats.device)
    grad = sobel_magnitude(pca_map(feats))
    energy = grad.clamp_min(0.0) * valid
    strong = top_fraction_mask(minmax_in_interior(grad, cfg.border), cfg.q_feat, cfg.border)
    out = edge_concentration("corrected", energy, strong, boundary & valid, border=cfg.border, r1=cfg.r1,
                             r2=cfg.outer_radius)
    share = (boundary & valid).flatten(1).sum(1).to(torch.float32) / valid.sum().clamp_min(1).to(torch.float32)
    res = {"EC_gt": out["EC"], "NC_gt": out["NC"], "EF_gt": cfg.ef_scale * out["EC"] * out["NC"],
           "EC_gt_lift": out["EC_lift"], "NC_gt_lift": out["NC_lift"], "EF_gt_lift": out["EC_lift"] * out["NC_lift"]}
    undefined = (share <= 0).view(-1)  # a single segment (or no interior): the alignment is undefined
    res = {k: torch.where(undefined, torch.full_like(v, float("nan")), v).to(torch.float32) for k, v in res.items()}
    res["GT_boundary_share"] = share
    return res


def ef_gt(features: torch.Tensor, *, stride: int, semantic: torch.Tensor | None = None,
          instance: torch.Tensor | None = None, valid_hw: torch.Tensor | Sequence[Sequence[int]] | None = None,
          **hparams: Any) -> dict[str, torch.Tensor]:
    """Supervised edge fidelity of features ``(B,C,H,W)`` at ``stride`` against ground-truth segment boundaries.

    The corrected variant's EC/NC (chance-corrected, distance-weighted closeness of the strong edges of the PCA
    first-component map) with the ground-truth boundary cells in place of the image edge centerlines:
    ``EF_gt = ef_scale * EC_gt * NC_gt`` in [0, 100] (0 = chance, 100 = all strong-edge energy on the boundaries).
    Labels: ``semantic`` / ``instance`` ``(B,H0,W0)`` integer maps (at least one; -1 = void / no instance, a
    value of its own); the per-pixel (semantic, instance) pair is the segment, taken to the grid by majority vote.

    Returns ``(B,)`` float32: ``EC_gt, NC_gt, EF_gt, EC_gt_lift, NC_gt_lift, EF_gt_lift`` (NaN for images without
    any boundary inside the valid grid) and ``GT_boundary_share`` (fraction of valid cells on a boundary).
    ``hparams``: MetricConfig fields (``q_feat``, ``border``, ``r1``, ``r2``, ``ef_scale`` are used). Full
    definition: docs/metrics.md (EF_gt).
    """
    cfg = resolve_config("reference", hparams)
    seg = segment_ids(semantic, instance)
    if features.ndim != 4 or seg.shape[0] != features.shape[0]:
        raise ValueError("features must be (B,C,H,W) and every label map (B,H0,W0) with the same B")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN/Inf values")
    with torch.no_grad():
        if valid_hw is None:
            return _ef_gt_batch(features, seg, stride, cfg)
        rows = valid_hw.tolist() if isinstance(valid_hw, torch.Tensor) else [list(r) for r in valid_hw]
        parts = []
        for i, (h0, w0) in enumerate(rows):
            hf, wf = math.ceil(h0 / stride), math.ceil(w0 / stride)
            parts.append(_ef_gt_batch(features[i: i + 1, :, :hf, :wf], seg[i: i + 1, :h0, :w0], stride, cfg))
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
