"""Normalized 2-D sine positional embedding (DETR style) for feature maps without padding masks."""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Mask2Former's normaliser offset: positions are divided by (H + eps) and (W + eps) (docs/mask2former_head.md).
ORIGINAL_POS_EPS = 1e-6


def sine_position_embedding(
    height: int,
    width: int,
    num_channels: int,
    *,
    temperature: float = 10000.0,
    eps: float = ORIGINAL_POS_EPS,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sine/cosine embedding of normalized (y, x) pixel positions.

    Row i and column j are mapped to (i + 1) / (H + eps) * 2 pi and (j + 1) / (W + eps) * 2 pi; each is encoded
    with ``num_channels / 2`` interleaved sin/cos frequencies ``temperature ** (2 * (k // 2) / (num_channels / 2))``;
    the y-half comes first. The arithmetic is float32 in the order of Mask2Former's ``PositionEmbeddingSine``
    (normalise, scale, divide by the frequency), so with the default ``eps`` the result equals the original's bit for
    bit; ``eps=0`` divides by H and W exactly.

    Args:
        height, width: map size in pixels.
        num_channels: embedding channels (divisible by 4).
        temperature: frequency base.
        eps: normaliser offset (>= 0).
        device, dtype: of the returned tensor (computed in float32 and cast).

    Returns:
        (H * W, num_channels) tensor, rows in row-major pixel order.
    """
    if num_channels % 4 != 0:
        raise ValueError(f"num_channels must be divisible by 4 for a 2-D sine embedding, got {num_channels}")
    if not eps >= 0:
        raise ValueError(f"the position normaliser eps must be >= 0, got {eps}")
    feats = num_channels // 2
    scale = 2.0 * math.pi
    k = torch.arange(feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / feats)

    def encode(size: int) -> Tensor:  # (size,) positions -> (size, feats): sin on even, cos on odd channels
        pos = torch.arange(1, size + 1, dtype=torch.float32, device=device)
        pos = pos / (pos[-1:] + eps) * scale
        angles = pos[:, None] / dim_t
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=-1).flatten(1)

    pos_y = encode(height)[:, None, :].expand(height, width, feats)
    pos_x = encode(width)[None, :, :].expand(height, width, feats)
    return torch.cat([pos_y, pos_x], dim=-1).reshape(height * width, num_channels).to(dtype)
