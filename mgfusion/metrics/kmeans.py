"""Batched, deterministic k-means (k-means++ init + Lloyd) for the SCS, on any device.

Images are processed in cache-sized chunks; inside a chunk all images, cluster counts and restarts run as one tensor
program, and the chunk stops as soon as its own runs have converged. Restarts are screened:
every k-means++ restart runs ``screen_iter`` Lloyd steps, then the restart with the lowest inertia per (image, k)
runs on to convergence (sklearn's rule: total squared centre shift <= ``tol`` x mean feature variance; at most
``max_iter`` steps in all). On image features the screened choice reaches an inertia within ~1 % of the best of all
restarts run to convergence (silhouettes agree to ~1e-3), at a fraction of the cost. Empty clusters keep their
centre; a point exactly equidistant from two centres counts for both in the centre update.

Randomness comes only from a CPU generator seeded with ``seed``; every image uses the same stream, so results do
not depend on the batch composition or order. The k-means++ init for k is the first k centres of one greedy
k-means++ run with ``max(ks)`` centres (2 + floor(ln max k) local trials per centre).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["kmeans_labels"]

_CHUNK_ELEMENTS = 1 << 21  # distance-buffer entries per chunk (8 MB of float32)


def _kmeanspp(x: torch.Tensor, xx: torch.Tensor, n_centres: int, n_init: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ centres ``(G, n_init, K, d)`` for points ``x`` ``(G,n,d)`` (``xx`` = squared norms)."""
    g, n, d = x.shape
    trials = 2 + int(math.log(n_centres))
    u_first = torch.rand(n_init, generator=gen).to(x.device)
    u_cand = torch.rand(max(n_centres - 1, 0), n_init, trials, generator=gen).to(x.device)
    gi = torch.arange(g, device=x.device).view(g, 1, 1)
    first = (u_first * n).long().clamp_max(n - 1).view(1, n_init).expand(g, n_init)
    centres = [x[gi[:, :, 0], first]]  # (G,R,d)
    xt = x.transpose(1, 2)
    closest = (xx.unsqueeze(1) - 2 * torch.bmm(centres[0], xt) + centres[0].square().sum(-1, keepdim=True))
    closest = closest.clamp_min_(0.0)  # (G,R,n)
    for step in range(n_centres - 1):
        cums = closest.cumsum(dim=2)
        targets = u_cand[step].unsqueeze(0) * cums[:, :, -1:]  # (G,R,T)
        cand = torch.searchsorted(cums, targets).clamp_max_(n - 1)
        cand_pts = x[gi, cand]  # (G,R,T,d)
        flat = cand_pts.reshape(g, n_init * trials, d)
        dist = xx.unsqueeze(1) - 2 * torch.bmm(flat, xt) + flat.square().sum(-1, keepdim=True)
        dist = torch.minimum(dist.clamp_min_(0.0).view(g, n_init, trials, n), closest.unsqueeze(2))
        best = dist.sum(dim=3).argmin(dim=2)  # (G,R)
        pick = best.view(g, n_init, 1, 1)
        centres.append(cand_pts.gather(2, pick.expand(g, n_init, 1, d)).squeeze(2))
        closest = dist.gather(2, pick.expand(g, n_init, 1, n)).squeeze(2)
    return torch.stack(centres, dim=2)


def _distances(x_t: torch.Tensor, centres: torch.Tensor, pad: torch.Tensor,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """``|c|^2 - 2 x.c`` ``(G,S,K,n)`` (squared distance minus |x|^2); +inf for padded centres."""
    g, s, k, d = centres.shape
    flat = centres.reshape(g, s * k, d)
    cc = (flat.square().sum(-1) + pad.reshape(1, s * k)).unsqueeze(-1)
    if out is None:
        return torch.baddbmm(cc, flat, x_t, alpha=-2.0).view(g, s, k, -1)
    torch.baddbmm(cc, flat, x_t, alpha=-2.0, out=out.view(g, s * k, -1))
    return out


def _first_argmin(dist: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """Index of the first minimum over dim 2 (faster than ``min`` with indices on CPU), int64 ``(G,S,n)``."""
    k = dist.shape[2]
    rank = torch.arange(k, 0, -1, dtype=dist.dtype, device=dist.device).view(1, 1, k, 1)
    return (k - torch.where(dist == best, rank, 0.0).amax(dim=2)).long()


def _lloyd(x_aug: torch.Tensor, x_t: torch.Tensor, centres: torch.Tensor, pad: torch.Tensor, n_iter: int,
           tol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to ``n_iter`` Lloyd steps, converged runs frozen; ``x_aug`` = points with a trailing column of ones.

    A point equidistant from two centres counts for both in the update (exact float ties only). Returns centres
    ``(G,S,K,d)``, distances ``(G,S,K,n)`` to them and their per-point minimum ``(G,S,1,n)``.
    """
    g, s, k, d = centres.shape
    frozen = torch.zeros(g, s, 1, 1, dtype=torch.bool, device=x_aug.device)
    dist = _distances(x_t, centres, pad)
    best = dist.amin(dim=2, keepdim=True)
    onehot = torch.empty_like(dist)
    for _ in range(n_iter):
        torch.eq(dist, best, out=onehot)
        sums = torch.bmm(onehot.view(g, s * k, -1), x_aug).view(g, s, k, d + 1)
        counts = sums[..., d:]
        new = torch.where(counts > 0, sums[..., :d] / counts.clamp_min(1.0), centres)
        new = torch.where(frozen, centres, new)
        shift = (new - centres).square().sum(dim=(2, 3), keepdim=True)
        frozen = frozen | (shift <= tol.view(g, 1, 1, 1))
        centres = new
        dist = _distances(x_t, centres, pad, out=dist)
        best = dist.amin(dim=2, keepdim=True)
        if bool(frozen.all()):
            break
    return centres, dist, best


def kmeans_labels(x: torch.Tensor, ks: Sequence[int], *, n_init: int = 10, screen_iter: int = 3,
                  max_iter: int = 40, tol: float = 1e-4, seed: int = 0) -> torch.Tensor:
    """Cluster labels ``(G, len(ks), n)`` (int64) of points ``x`` ``(G,n,d)`` for every k in ``ks``.

    ``n_init`` k-means++ restarts per (image, k), screened after ``screen_iter`` Lloyd steps (see module doc).
    Items are processed in chunks small enough to keep the distance buffers cache-sized and to stop each chunk as
    soon as its own runs have converged.
    """
    g, n, _d = x.shape
    ks = [int(k) for k in ks]
    if max(ks) > n:
        raise ValueError(f"cannot form {max(ks)} clusters from {n} points")
    chunk = max(1, _CHUNK_ELEMENTS // (len(ks) * n_init * max(ks) * n))
    return torch.cat([_kmeans_chunk(x[i: i + chunk].to(torch.float32), ks, n_init, screen_iter, max_iter, tol, seed)
                      for i in range(0, g, chunk)])


def _kmeans_chunk(x: torch.Tensor, ks: list[int], n_init: int, screen_iter: int, max_iter: int, tol: float,
                  seed: int) -> torch.Tensor:
    g, _n, d = x.shape
    k_max = max(ks)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    x_t = x.transpose(1, 2).contiguous()
    x_aug = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)
    xx = x.square().sum(-1)
    tol_abs = tol * x.var(dim=1, unbiased=False).mean(dim=1)  # (G,)
    init = _kmeanspp(x, xx, k_max, n_init, gen)  # (G,R,K,d)
    n_k = len(ks)
    pad_k = torch.tensor([[0.0 if j < k else float("inf") for j in range(k_max)] for k in ks], device=x.device)
    # Screening: every (k, restart) pair as one run.
    centres = init.unsqueeze(1).expand(g, n_k, n_init, k_max, d).reshape(g, n_k * n_init, k_max, d)
    pad_runs = pad_k.repeat_interleave(n_init, dim=0)
    centres, _, nearest = _lloyd(x_aug, x_t, centres, pad_runs, screen_iter, tol_abs)
    best = nearest.sum(dim=(2, 3)).view(g, n_k, n_init).argmin(dim=2)  # lowest inertia per (G,L)
    idx = (best + torch.arange(n_k, device=x.device).view(1, n_k) * n_init).view(g, n_k, 1, 1)
    chosen = centres.gather(1, idx.expand(g, n_k, k_max, d))
    _, dist, nearest = _lloyd(x_aug, x_t, chosen, pad_k, max(max_iter - screen_iter, 0), tol_abs)
    return _first_argmin(dist, nearest)
