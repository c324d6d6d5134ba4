"""Batched PCA of channel-standardised feature maps (SPEC P2) without materialising the standardised data.

Each channel is z-scored over its N pixels with the population std + 1e-6. With centred data ``c = x - mean``
``(B,C,N)`` and ``s = 1 / (std + 1e-6)``, the standardised covariance is ``diag(s) c c^T diag(s)`` and the
scores are ``c^T diag(s) V``; the std itself is read off the diagonal of ``c c^T``. One eigen-decomposition per
(image, level) serves the EF PCA map and, when the SCS uses all pixels, the SCS projection; it is done on the
smaller of the C x C covariance and the N x N Gram matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["CentredFeatures", "centre_channels", "principal_scores", "first_component_map"]


@dataclass
class CentredFeatures:
    """Channel-centred features ``centred`` ``(B,C,N)``, population ``std`` ``(B,C)``, channel ``mean`` ``(B,C)``
    and, when C <= N, the product ``gram = centred centred^T`` ``(B,C,C)``."""

    centred: torch.Tensor
    std: torch.Tensor
    mean: torch.Tensor
    gram: torch.Tensor | None

    @property
    def inv_scale(self) -> torch.Tensor:
        """``1 / (std + 1e-6)`` ``(B,C)``: the per-channel z-score factor."""
        return 1.0 / (self.std + 1e-6)

    def constant(self, rel_tol: float = 1e-5) -> torch.Tensor:
        """Bool ``(B,)``: every channel constant up to float32 rounding (std <= rel_tol x |mean| scale)."""
        scale = (self.mean.abs() + self.std).amax(dim=1)
        return self.std.amax(dim=1) <= rel_tol * scale


def centre_channels(features: torch.Tensor) -> CentredFeatures:
    """Centre ``(B,C,H,W)`` features per channel (float32) and compute their std (and C x C product if C <= N)."""
    x = features.flatten(2).to(torch.float32)
    mean = x.mean(dim=2, keepdim=True)
    centred = x - mean
    n = centred.shape[2]
    if centred.shape[1] <= n:
        gram = torch.bmm(centred, centred.transpose(1, 2))
        var = gram.diagonal(dim1=1, dim2=2) / n
    else:
        gram = None
        var = torch.linalg.vector_norm(centred, dim=2).square() / n
    return CentredFeatures(centred, var.clamp_min(0.0).sqrt(), mean.squeeze(2), gram)


def principal_scores(centred: torch.Tensor, inv_scale: torch.Tensor, k: int,
                     gram: torch.Tensor | None = None) -> torch.Tensor:
    """Scores ``(B,N,k)`` of the ``k`` leading principal components of ``diag(inv_scale) centred``.

    ``centred`` ``(B,C,N)`` must have zero-mean rows; ``gram`` = ``centred centred^T`` if already known. Columns
    are ordered by decreasing variance; the sign of each component is arbitrary (every metric using them is
    sign-invariant). Exact (``eigh``).
    """
    _, c, n = centred.shape
    k = max(1, min(k, c, n))
    if c <= n:
        if gram is None:
            gram = torch.bmm(centred, centred.transpose(1, 2))
        cov = gram * inv_scale.unsqueeze(2) * inv_scale.unsqueeze(1)
        _, vecs = torch.linalg.eigh(cov)
        top = vecs[:, :, -k:].flip(-1) * inv_scale.unsqueeze(2)  # (B,C,k), folds in the channel scaling
        return torch.bmm(centred.transpose(1, 2), top)
    scaled = centred * inv_scale.square().unsqueeze(2)
    vals, vecs = torch.linalg.eigh(torch.bmm(centred.transpose(1, 2), scaled))
    top_vals = vals[:, -k:].flip(-1).clamp_min(0.0).sqrt()
    return vecs[:, :, -k:].flip(-1) * top_vals.unsqueeze(1)


def first_component_map(scores0: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Min-max normalised first-component scores ``(B,N)`` -> map ``(B,H,W)`` in [0,1]; 0 where range < 1e-8."""
    lo = scores0.amin(dim=1, keepdim=True)
    rng = scores0.amax(dim=1, keepdim=True) - lo
    ok = rng >= 1e-8
    out = torch.where(ok, (scores0 - lo) / torch.where(ok, rng, torch.ones_like(rng)), torch.zeros_like(scores0))
    return out.view(-1, height, width)
