"""Normalized 2-D sine positional embedding (DETR style) for feature maps without padding masks."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_position_embedding(
    height: int,
    width: int,
    num_channels: int,
    *,
    temperature: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sine/cosine embedding of normalized (y, x) pixel positions.

    Row i and column j are mapped to (i + 1) / H * 2 pi and (j + 1) / W * 2 pi; each is encoded with
    ``num_channels / 2`` interleaved sin/cos frequencies ``temperature ** (2 * (k // 2) / (num_channels / 2))``;
    the y-half comes first.

    Returns:
        (H * W, num_channels) tensor, rows in row-major pixel order.
    """
    if num_channels % 4 != 0:
        raise ValueError(f"num_channels must be divisible by 4 for a 2-D sine embedding, got {num_channels}")
    feats = num_channels // 2
    scale = 2.0 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / height * scale
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / width * scale
    k = torch.arange(feats, dtype=torch.float32, device=device)
    inv_freq = temperature ** (-(2.0 * torch.div(k, 2, rounding_mode="floor")) / feats)

    def encode(pos: Tensor) -> Tensor:  # (n,) -> (n, feats): sin on even, cos on odd channels
        angles = pos[:, None] * inv_freq[None, :]
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=-1).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, feats)
    pos_x = encode(x)[None, :, :].expand(height, width, feats)
    return torch.cat([pos_y, pos_x], dim=-1).reshape(height * width, num_channels).to(dtype)
