"""Small building blocks shared by the pixel decoder and the transformer decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def dropout_or_identity(p: float) -> nn.Module:
    """Dropout, or Identity for p == 0 (nn.Dropout(0) still draws a mask in training)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def feed_forward(dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    """Linear(dim, hidden) -> ReLU -> dropout -> Linear(hidden, dim), on (..., dim) tokens."""
    return nn.Sequential(
        nn.Linear(dim, hidden_dim), nn.ReLU(), dropout_or_identity(dropout), nn.Linear(hidden_dim, dim)
    )


def small_tensor(values, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """A small constant tensor on ``device`` built from Python values without a blocking host-to-device copy."""
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)
