"""Mask2Former's transformer decoder: learnable queries, masked cross-attention round-robin over scales."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import Tensor, nn

from .layers import dropout_or_identity, feed_forward
from .position_encoding import sine_position_embedding

__all__ = ["MaskPredictionHead", "MultiHeadAttention", "MultiScaleMaskedTransformerDecoder"]


class MultiHeadAttention(nn.Module):
    """Batch-first multi-head attention on ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """query (B, Lq, C), key/value (B or 1, Lk, C); attn_mask bool broadcastable to (B, heads, Lq, Lk), True
        where attention is allowed. Returns (B, Lq, C)."""
        batch, length, dim = query.shape
        q = self._split_heads(self.q_proj(query))
        k = self._split_heads(self.k_proj(key))
        v = self._split_heads(self.v_proj(value))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class _AttentionBlock(nn.Module):
    """Residual attention with post-norm (Mask2Former default) or pre-norm."""

    def __init__(self, dim: int, num_heads: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = dropout_or_identity(dropout)
        self.pre_norm = pre_norm

    def forward(
        self, x: Tensor, query_pos: Tensor, key: Tensor | None, value: Tensor | None, attn_mask: Tensor | None
    ) -> Tensor:
        """x (B, Q, C) queries; key (memory + its positions) and value (memory) (B or 1, Lk, C), both None for
        self-attention over x."""
        h = self.norm(x) if self.pre_norm else x
        query = h + query_pos
        if key is None:
            key, value = query, h
        x = x + self.dropout(self.attn(query, key, value, attn_mask))
        return x if self.pre_norm else self.norm(x)


class _FeedForwardBlock(nn.Module):
    def __init__(self, dim: int, dim_feedforward: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.ffn = feed_forward(dim, dim_feedforward, dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = dropout_or_identity(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor) -> Tensor:
        if self.pre_norm:
            return x + self.dropout(self.ffn(self.norm(x)))
        return self.norm(x + self.dropout(self.ffn(x)))


class _DecoderLayer(nn.Module):
    """Masked cross-attention to one scale, self-attention among queries, FFN."""

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.cross_attn = _AttentionBlock(dim, num_heads, dropout, pre_norm)
        self.self_attn = _AttentionBlock(dim, num_heads, dropout, pre_norm)
        self.ffn = _FeedForwardBlock(dim, dim_feedforward, dropout, pre_norm)

    def forward(self, x: Tensor, query_pos: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor) -> Tensor:
        """x (B, Q, C); key = memory + positions, value = memory (B, Lk, C); attn_mask bool (B, 1, Q, Lk)."""
        x = self.cross_attn(x, query_pos, key, value, attn_mask)
        x = self.self_attn(x, query_pos, None, None, None)
        return self.ffn(x)


class MaskPredictionHead(nn.Module):
    """Class logits and mask embeddings of the (normalized) queries.

    ``forward`` returns class logits (B, Q, K+1) and mask embeddings (B, Q, mask_dim); a mask is the dot product
    of its embedding with the per-pixel mask features.
    """

    def __init__(self, dim: int, num_classes: int, mask_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, mask_dim)
        )

    def forward(self, queries: Tensor) -> tuple[Tensor, Tensor]:
        x = self.norm(queries)
        return self.class_embed(x), self.mask_embed(x)


def _attention_mask(mask_embed: Tensor, level_mask_features: Tensor) -> Tensor:
    """Masked-attention mask from the current mask prediction at one level's resolution.

    Mask logits at the level's size equal the bilinear downsampling of the full-resolution logits (both are
    linear in the mask features), so they are computed from pre-downsampled features. A query may attend where
    sigmoid(logit) >= 0.5; queries whose mask is empty attend everywhere.

    Args:
        mask_embed: (B, Q, D); level_mask_features: (B, D, h*w).

    Returns:
        bool (B, 1, Q, h*w), True = attend.
    """
    allowed = torch.bmm(mask_embed, level_mask_features.to(mask_embed.dtype)) >= 0
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    return allowed.unsqueeze(1)


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Mask2Former's transformer decoder.

    Learnable query features and positions pass ``num_layers`` layers; layer i cross-attends to scale
    ``i % num_feature_levels`` (coarse to fine) restricted to the foreground of the previous prediction, then
    self-attends and applies an FFN. Predictions (class logits and masks) are made from the initial queries and
    after every layer (deep supervision).

    Args:
        in_channels: channels of the pixel decoder's multi-scale features.
        num_classes: K foreground classes (logits have K+1 entries, the last is "no object").
        mask_dim: channels of the mask features.
        hidden_dim, num_heads, dim_feedforward, dropout: transformer width settings.
        num_queries: number of queries.
        num_layers: decoder layers (9 in Mask2Former; its DEC_LAYERS=10 counts the initial prediction).
        pre_norm: pre-norm instead of post-norm residual blocks.
        enforce_input_project: 1x1 conv on the multi-scale features even when in_channels == hidden_dim.
        num_feature_levels: scales used round-robin.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        mask_dim: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        num_layers: int = 9,
        pre_norm: bool = False,
        dropout: float = 0.0,
        enforce_input_project: bool = False,
        num_feature_levels: int = 3,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.num_layers = num_layers
        self.num_feature_levels = num_feature_levels
        self.hidden_dim = hidden_dim
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(conv)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Identity())
        self.layers = nn.ModuleList(
            _DecoderLayer(hidden_dim, num_heads, dim_feedforward, dropout, pre_norm) for _ in range(num_layers)
        )
        self.head = MaskPredictionHead(hidden_dim, num_classes, mask_dim)
        for layer in self.layers:
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def forward(
        self, multi_scale_features: list[Tensor], mask_features: Tensor, *, return_intermediate: bool | None = None
    ) -> dict:
        """Decode queries into class logits and masks.

        Args:
            multi_scale_features: ``num_feature_levels`` maps, coarse to fine, (B, in_channels, h_l, w_l).
            mask_features: (B, mask_dim, H, W) per-pixel embeddings (stride 4).
            return_intermediate: also return the predictions of every layer (default: in training mode).

        Returns:
            dict with ``pred_logits`` (B, Q, K+1) and ``pred_masks`` (B, Q, H, W) mask logits of the last layer;
            with intermediates also ``layer_logits`` (L, B, Q, K+1), ``layer_masks`` (L, B, Q, H, W) for all
            L = num_layers + 1 predictions (initial queries first) and ``aux_outputs``, the first L-1 of them as
            a list of {"pred_logits", "pred_masks"} dicts (views).
        """
        if len(multi_scale_features) != self.num_feature_levels:
            raise ValueError(
                f"decoder expects {self.num_feature_levels} feature levels, got {len(multi_scale_features)}"
            )
        if return_intermediate is None:
            return_intermediate = self.training
        batch = mask_features.shape[0]
        keys, values, level_mask_features = [], [], []
        for level, x in enumerate(multi_scale_features):
            height, width = x.shape[-2:]
            src = self.input_proj[level](x).flatten(2).transpose(1, 2) + self.level_embed.weight[level]
            pos = sine_position_embedding(height, width, self.hidden_dim, device=x.device)
            values.append(src)
            keys.append(src + pos.to(src.dtype))  # shared by the layers attending to this level
            level_mask_features.append(
                F.interpolate(mask_features, size=(height, width), mode="bilinear", align_corners=False).flatten(2)
            )

        queries = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
        query_pos = self.query_embed.weight.unsqueeze(0)
        logits, mask_embed = self.head(queries)
        all_logits, all_mask_embeds = [logits], [mask_embed]
        for i, layer in enumerate(self.layers):
            level = i % self.num_feature_levels
            attn_mask = _attention_mask(mask_embed, level_mask_features[level])
            queries = layer(queries, query_pos, keys[level], values[level], attn_mask)
            logits, mask_embed = self.head(queries)
            all_logits.append(logits)
            all_mask_embeds.append(mask_embed)

        height, width = mask_features.shape[-2:]
        pixels = mask_features.flatten(2)
        if not return_intermediate:
            pred_masks = torch.bmm(mask_embed, pixels.to(mask_embed.dtype)).view(batch, -1, height, width)
            return {"pred_logits": logits, "pred_masks": pred_masks}
        num_preds = len(all_mask_embeds)
        embeds = torch.stack(all_mask_embeds, dim=1).flatten(1, 2)  # (B, L*Q, D)
        masks = torch.bmm(embeds, pixels.to(embeds.dtype)).view(batch, num_preds, -1, height, width)
        layer_masks = masks.transpose(0, 1)  # (L, B, Q, H, W) view of a (B, L, Q, H, W) tensor
        layer_logits = torch.stack(all_logits, dim=0)
        # unbind: per-layer views whose joint backward is one stack (indexing would zero-fill per layer)
        per_layer = list(zip(layer_logits.unbind(0), layer_masks.unbind(0)))
        return {
            "pred_logits": per_layer[-1][0],
            "pred_masks": per_layer[-1][1],
            "layer_logits": layer_logits,
            "layer_masks": layer_masks,
            "aux_outputs": [{"pred_logits": lg, "pred_masks": mk} for lg, mk in per_layer[:-1]],
        }
