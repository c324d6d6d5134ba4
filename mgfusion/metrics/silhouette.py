"""Batched silhouette coefficient on a stratified subsample (docs/metrics.md, SCS).

For every (item, labelling) the subsample takes, from each cluster u with c_u of n usable points,
``min(c_u, max(2, round(target * c_u / n)))`` members uniformly at random (all points when ``n <= target``): the
members with the lowest random keys. The keys are shared by all labellings of an item, so the subsamples of the
different k overlap heavily and one distance matrix on their union serves all of them (each subsample on its own
is still an exact stratified draw). The silhouette is sklearn's: ``s_i = (b_i - a_i) / max(a_i, b_i)``, 0 for
members of singleton clusters, averaged over the subsample. Distances are built in row blocks (bounded memory), only
on and above the diagonal of the symmetric distance matrix.
"""

from __future__ import annotations

import torch

__all__ = ["silhouette_from_masks", "stratified_mask", "valid_clusterings"]

_BLOCK_ROWS = 128  # rows per distance block (~1 MB for 2000 points: stays in cache); fixed, so the summation
# order of an image never depends on the other images of the batch


def _onehot(labels: torch.Tensor, n_clusters: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    oh = labels.unsqueeze(-1) == torch.arange(n_clusters, device=labels.device)
    return oh if keep is None else oh & keep.unsqueeze(-1)


def valid_clusterings(labels: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Bool ``(G,L)``: at least 2 non-empty clusters and no cluster with exactly one member."""
    counts = _onehot(labels, n_clusters).sum(dim=-2)
    return ((counts > 0).sum(-1) >= 2) & ~(counts == 1).any(-1)


def stratified_mask(labels: torch.Tensor, n_clusters: int, target: int, gen: torch.Generator,
                    usable: torch.Tensor | None = None) -> torch.Tensor:
    """Bool ``(G,L,n)``: the stratified subsample of each labelling ``labels`` ``(G,L,n)`` (values < n_clusters).

    ``usable`` ``(G,L,n)`` marks points that may be drawn (default: all). Keys come from the CPU generator ``gen``
    and are the same for every item, so items never influence each other.
    """
    n = labels.shape[-1]
    if usable is None:
        usable = torch.ones_like(labels, dtype=torch.bool)
    order = torch.argsort(torch.rand(n, generator=gen)).to(labels.device).expand_as(labels)
    lab = labels.gather(-1, order)  # gather: far faster than index_select on the last dimension
    use = usable.gather(-1, order)
    oh = _onehot(lab, n_clusters, use)  # (G,L,n,K) in key order
    rank = (oh.long().cumsum(dim=-2) * oh).sum(-1) - 1  # position inside the own cluster
    counts = oh.sum(dim=-2)  # (G,L,K)
    n_use = counts.sum(-1, keepdim=True)
    share = torch.round(target * counts.to(torch.float64) / n_use.clamp_min(1).to(torch.float64)).long()
    take = torch.where(n_use <= target, counts, torch.minimum(counts, share.clamp_min(2)))
    chosen_sorted = use & (rank < take.gather(-1, lab.clamp(0, n_clusters - 1)))
    return torch.empty_like(chosen_sorted).scatter_(-1, order, chosen_sorted)


def _cluster_distance_sums(left: torch.Tensor, right_t: torch.Tensor, onehot_rows: torch.Tensor) -> torch.Tensor:
    """``D @ onehot_rows`` ``(G,m,c)`` for the Euclidean distance matrix ``D`` ``(G,m,m)`` of the augmented points.

    ``D`` is symmetric, so only its blocks on and right of the diagonal are built (row blocks of ``_BLOCK_ROWS``
    points, one GEMM, clamp and sqrt each): each block adds ``block @ onehot`` to its rows and
    ``block^T @ onehot`` to its columns. Half the distance work and square roots of the full matrix.
    """
    g, m, _ = left.shape
    sums = torch.zeros(g, m, onehot_rows.shape[-1], dtype=torch.float32, device=left.device)
    rows = _BLOCK_ROWS
    for s in range(0, m, rows):
        e = min(s + rows, m)
        block = torch.bmm(left[:, s:e], right_t[:, :, s:]).clamp_min_(0.0).sqrt_()  # rows s:e, columns s:
        sums[:, s:e] += torch.bmm(block, onehot_rows[:, s:])
        if e < m:
            sums[:, e:] += torch.bmm(block[:, :, e - s:].transpose(1, 2), onehot_rows[:, s:e])
    return sums


def silhouette_from_masks(points: torch.Tensor, labels: torch.Tensor, chosen: torch.Tensor,
                          n_clusters: int) -> torch.Tensor:
    """Mean silhouette ``(G,L)`` of ``points`` ``(G,n,d)`` under each labelling ``labels`` ``(G,L,n)``, computed
    over the points ``chosen`` ``(G,L,n)`` for that labelling (0 where fewer than 2 clusters are present)."""
    g, n_lab, _n = labels.shape
    d = points.shape[-1]
    union = chosen.any(dim=1)  # (G,n)
    m = int(union.sum(-1).max())
    idx = torch.argsort((~union).to(torch.uint8), dim=-1, stable=True)[:, :m]  # union members first
    pts = points.to(torch.float32).gather(1, idx.unsqueeze(-1).expand(g, m, d))
    lab = labels.gather(2, idx.unsqueeze(1).expand(g, n_lab, m))
    sel = chosen.gather(2, idx.unsqueeze(1).expand(g, n_lab, m))
    onehot = _onehot(lab, n_clusters, sel).to(torch.float32)  # (G,L,m,K)
    n_cols = n_lab * n_clusters
    onehot_rows = torch.zeros(g, m, -(-n_cols // 16) * 16, device=points.device)  # 16-multiple: faster GEMM
    onehot_rows[..., :n_cols] = onehot.permute(0, 2, 1, 3).reshape(g, m, n_cols)
    # |p|^2 + |q|^2 - 2 p.q as one GEMM of augmented vectors [p, |p|^2, 1] . [-2q, 1, |q|^2].
    sq = pts.square().sum(-1, keepdim=True)
    ones = torch.ones_like(sq)
    left = torch.cat([pts, sq, ones], dim=-1)
    right_t = torch.cat([-2.0 * pts, ones, sq], dim=-1).transpose(1, 2).contiguous()
    sums = _cluster_distance_sums(left, right_t, onehot_rows)[..., :n_cols]
    sums = sums.reshape(g, m, n_lab, n_clusters).transpose(1, 2)  # (G,L,m,K) distance sums to every cluster
    counts = onehot.sum(dim=2, keepdim=True)  # (G,L,1,K)
    own_count = (onehot * counts).sum(-1)
    a = (sums * onehot).sum(-1) / (own_count - 1).clamp_min(1.0)
    other = torch.where(onehot.bool() | (counts == 0), torch.full_like(sums, float("inf")),
                        sums / counts.clamp_min(1.0))
    b = other.amin(dim=-1)
    denom = torch.maximum(a, b)
    ok = sel & (own_count > 1) & torch.isfinite(b) & (denom > 0)
    s_i = torch.where(ok, (b - a) / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(a))
    present = (counts.squeeze(2) > 0).sum(-1)
    mean = s_i.sum(-1) / sel.sum(-1).clamp_min(1)
    return torch.where(present >= 2, mean, torch.zeros_like(mean))
