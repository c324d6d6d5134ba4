"""Point sampling of mask logits/labels and uncertainty-based importance sampling (PointRend style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["point_sample", "sample_uncertain_points"]


def point_sample(maps: Tensor, points: Tensor) -> Tensor:
    """Bilinearly sample maps at normalized points (zero outside, ``align_corners=False``).

    Args:
        maps: (N, C, H, W) float maps.
        points: (N, P, 2) or (N, R, P, 2) normalized (x, y) in [0, 1].

    Returns:
        (N, C, P) or (N, C, R, P).
    """
    grid = 2.0 * points - 1.0
    squeeze = grid.dim() == 3
    if squeeze:
        grid = grid.unsqueeze(1)
    out = F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(2) if squeeze else out


@torch.no_grad()
def sample_uncertain_points(
    mask_logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Points biased towards uncertain mask pixels (|logit| small).

    ``oversample_ratio * num_points`` random points are scored by -|logit|; the ``importance_sample_ratio``
    most uncertain fraction of ``num_points`` is kept and the rest is filled with fresh uniform points.

    Args:
        mask_logits: (N, H, W) float mask logits.

    Returns:
        (N, num_points, 2) normalized (x, y) points, in mask_logits' dtype and device.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    num_masks = mask_logits.shape[0]
    device, dtype = mask_logits.device, mask_logits.dtype
    num_candidates = int(num_points * oversample_ratio)
    candidates = torch.rand(num_masks, num_candidates, 2, device=device, dtype=dtype, generator=generator)
    uncertainty = -point_sample(mask_logits.unsqueeze(1), candidates).squeeze(1).abs()  # (N, num_candidates)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    top = uncertainty.topk(num_uncertain, dim=1).indices
    chosen = candidates.gather(1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        extra = torch.rand(num_masks, num_random, 2, device=device, dtype=dtype, generator=generator)
        chosen = torch.cat([chosen, extra], dim=1)
    return chosen
