"""Small building blocks shared by the pixel decoder and the transformer decoder."""

from __future__ import annotations

from torch import nn


def dropout_or_identity(p: float) -> nn.Module:
    """Dropout, or Identity for p == 0 (nn.Dropout(0) still draws a mask in training)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def feed_forward(dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    """Linear(dim, hidden) -> ReLU -> dropout -> Linear(hidden, dim), on (..., dim) tokens."""
    return nn.Sequential(
        nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True), dropout_or_identity(dropout), nn.Linear(hidden_dim, dim)
    )
