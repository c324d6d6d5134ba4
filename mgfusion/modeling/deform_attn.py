"""Multi-scale deformable attention (Deformable DETR), as used by Mask2Former's pixel decoder, in plain PyTorch.

Two interchangeable implementations of the sampling-and-weighting core are registered in
``DEFORM_ATTN_IMPLS`` and compute the same numbers (bilinear sampling with zero padding outside each level,
``align_corners=False`` pixel centres, i.e. the semantics of the original CUDA op):

* ``"grid_sample"``: one ``F.grid_sample`` per level with the heads folded into the batch, accumulated level by
  level. The textbook formulation; sampling runs in fp32.
* ``"embedding_bag"``: the 4 bilinear corners of every sampling point become rows of a zero-bordered value table
  and one ``F.embedding_bag(mode="sum")`` with per-sample weights (bilinear weight x attention weight) gathers
  and reduces all levels, points and corners in a single fused kernel. Faster on CPU and GPU; indices and
  weights are computed in fp32, the gather runs in the value's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DEFORM_ATTN_IMPLS",
    "MSDeformAttn",
    "ms_deform_attn",
    "ms_deform_attn_embedding_bag",
    "ms_deform_attn_grid_sample",
]

SpatialShapes = Sequence[tuple[int, int]]
DeformAttnFn = Callable[[Tensor, SpatialShapes, Tensor, Tensor], Tensor]


def _check_inputs(
    value: Tensor, spatial_shapes: SpatialShapes, sampling_locations: Tensor, attention_weights: Tensor
) -> None:
    if value.dim() != 4:
        raise ValueError(f"value must be (B, N, heads, head_dim), got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be (B, Lq, heads, levels, points, 2), "
            f"got shape {tuple(sampling_locations.shape)}"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"attention_weights shape {tuple(attention_weights.shape)} must equal sampling_locations shape "
            f"without the last dim {tuple(sampling_locations.shape[:-1])}"
        )
    num_levels = sampling_locations.shape[3]
    if len(spatial_shapes) != num_levels:
        raise ValueError(f"got {len(spatial_shapes)} spatial shapes for {num_levels} levels")
    num_tokens = sum(int(h) * int(w) for h, w in spatial_shapes)
    if value.shape[1] != num_tokens:
        raise ValueError(
            f"value has {value.shape[1]} tokens but spatial_shapes {list(spatial_shapes)} sum to {num_tokens}"
        )
    if value.shape[0] != sampling_locations.shape[0] or value.shape[2] != sampling_locations.shape[2]:
        raise ValueError(
            f"batch/heads of value {tuple(value.shape[:3:2])} and sampling_locations "
            f"{tuple(sampling_locations.shape[:3:2])} differ"
        )


def _compute_dtype(x: Tensor) -> torch.dtype:
    """fp32 for half types, else the tensor's own float dtype (fp64 stays fp64)."""
    return torch.promote_types(x.dtype, torch.float32)


def ms_deform_attn_grid_sample(
    value: Tensor, spatial_shapes: SpatialShapes, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Deformable attention core with one ``F.grid_sample`` per level (fp32 sampling).

    Args:
        value: (B, N, M, D) values of all levels, flattened row-major per level and concatenated;
            N = sum(H_l * W_l), M heads of D channels.
        spatial_shapes: L pairs (H_l, W_l) of Python ints.
        sampling_locations: (B, Lq, M, L, P, 2) sampling points as (x, y) in [0, 1] of each level's extent
            (0 and 1 are the outer edges of the border pixels); points outside read zeros.
        attention_weights: (B, Lq, M, L, P) weights of the samples (softmax over L*P in the module).

    Returns:
        (B, Lq, M*D) weighted sums, in value's dtype.
    """
    _check_inputs(value, spatial_shapes, sampling_locations, attention_weights)
    batch, _, heads, head_dim = value.shape
    num_queries, num_levels, num_points = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    dtype = _compute_dtype(value)
    sizes = [int(h) * int(w) for h, w in spatial_shapes]
    values = value.to(dtype).split(sizes, dim=1)
    grids = 2.0 * sampling_locations.to(dtype) - 1.0
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(batch * heads, 1, num_queries, num_levels, num_points)
    out = value.new_zeros((batch * heads, head_dim, num_queries), dtype=dtype)
    for level, (height, width) in enumerate(spatial_shapes):
        level_value = values[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, int(height), int(width))
        level_grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, num_queries, num_points, 2)
        samples = F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + (samples * weights[:, :, :, level]).sum(-1)  # (B*M, D, Lq)
    out = out.view(batch, heads * head_dim, num_queries).transpose(1, 2)
    return out.to(value.dtype)


def _padded_value_table(value: Tensor, spatial_shapes: SpatialShapes) -> tuple[Tensor, int]:
    """Per-level value maps with a zero border (1 px top/left, 2 px bottom/right), flattened and concatenated.

    Returns ((B * N_pad * M, D) table whose row ``(b * N_pad + n) * M + m`` holds head m of padded token n of
    image b, N_pad).
    """
    batch, _, heads, head_dim = value.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes]
    padded = [
        F.pad(level.reshape(batch, int(h), int(w), heads * head_dim), (0, 0, 1, 2, 1, 2)).flatten(1, 2)
        for level, (h, w) in zip(value.split(sizes, dim=1), spatial_shapes)
    ]
    table = torch.cat(padded, dim=1)
    return table.reshape(-1, head_dim), table.shape[1]


def _bilinear_corner_indices_and_weights(
    spatial_shapes: SpatialShapes,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    num_padded_tokens: int,
) -> tuple[Tensor, Tensor]:
    """Table rows and weights of the 4 bilinear corners of every sampling point.

    Points are clamped to [-1, W_l] x [-1, H_l] pixels: beyond that both corners of a sample fall in the zero
    border, exactly as bilinear sampling with zero padding (the clamp also zeroes the location gradient there,
    as zero padding does). Returns (B, Lq, M, L*P*4) int64 rows and weights (fp32, or fp64 for fp64 input).
    """
    batch, num_queries, heads, num_levels, num_points, _ = sampling_locations.shape
    device = sampling_locations.device
    dtype = _compute_dtype(sampling_locations)
    size_wh = torch.tensor([[int(w), int(h)] for h, w in spatial_shapes], dtype=dtype, device=device)
    row_len = torch.tensor([int(w) + 3 for _, w in spatial_shapes], dtype=torch.int64, device=device)
    starts, total = [], 0
    for h, w in spatial_shapes:
        starts.append(total)
        total += (int(h) + 3) * (int(w) + 3)
    level_start = torch.tensor(starts, dtype=torch.int64, device=device)

    pixel = sampling_locations.to(dtype) * size_wh[:, None, :] - 0.5  # (B, Lq, M, L, P, 2) in pixel units
    pixel = torch.minimum(pixel.clamp_min(-1.0), size_wh[:, None, :])
    corner = pixel.floor()
    frac = pixel - corner
    corner = corner.to(torch.int64) + 1  # top-left corner in the padded map
    # row of the top-left corner: ((b * N_pad + level_start + y * row_len + x) * M + m)
    token = level_start[:, None] + corner[..., 1] * row_len[:, None] + corner[..., 0]  # (B, Lq, M, L, P)
    batch_offset = torch.arange(batch, device=device).view(batch, 1, 1, 1, 1) * num_padded_tokens
    head_offset = torch.arange(heads, device=device).view(1, 1, heads, 1, 1)
    top_left = (token + batch_offset) * heads + head_offset
    corner_offsets = torch.stack(
        [torch.zeros_like(row_len), torch.ones_like(row_len), row_len, row_len + 1], dim=-1
    ) * heads  # (L, 4)
    rows = top_left.unsqueeze(-1) + corner_offsets[:, None, :]  # (B, Lq, M, L, P, 4)

    fx, fy = frac[..., 0], frac[..., 1]
    weight_x = torch.stack([1.0 - fx, fx], dim=-1)  # (..., 2)
    weight_y = torch.stack([1.0 - fy, fy], dim=-1) * attention_weights.to(dtype).unsqueeze(-1)
    weights = (weight_y.unsqueeze(-1) * weight_x.unsqueeze(-2)).flatten(-2)  # (..., 4): TL, TR, BL, BR
    corners = num_levels * num_points * 4
    return rows.view(batch, num_queries, heads, corners), weights.view(batch, num_queries, heads, corners)


def ms_deform_attn_embedding_bag(
    value: Tensor, spatial_shapes: SpatialShapes, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Deformable attention core as one fused gather-and-sum (``F.embedding_bag``).

    Same arguments, result and semantics as :func:`ms_deform_attn_grid_sample`; the gather runs in value's dtype.
    """
    _check_inputs(value, spatial_shapes, sampling_locations, attention_weights)
    batch, _, heads, head_dim = value.shape
    num_queries = sampling_locations.shape[1]
    table, num_padded = _padded_value_table(value, spatial_shapes)
    rows, weights = _bilinear_corner_indices_and_weights(
        spatial_shapes, sampling_locations, attention_weights, num_padded
    )
    out = F.embedding_bag(
        rows.flatten(0, 2), table, per_sample_weights=weights.flatten(0, 2).to(table.dtype), mode="sum"
    )
    return out.view(batch, num_queries, heads * head_dim).to(value.dtype)


DEFORM_ATTN_IMPLS: dict[str, DeformAttnFn] = {
    "grid_sample": ms_deform_attn_grid_sample,
    "embedding_bag": ms_deform_attn_embedding_bag,
}


def _get_impl(name: str) -> DeformAttnFn:
    try:
        return DEFORM_ATTN_IMPLS[name]
    except KeyError:
        raise ValueError(
            f"unknown deformable attention implementation {name!r}; valid: {sorted(DEFORM_ATTN_IMPLS)}"
        ) from None


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    *,
    impl: str = "embedding_bag",
) -> Tensor:
    """Multi-scale deformable attention core: ``out[b,q,m] = sum_{l,p} a[b,q,m,l,p] * V_l,m(loc[b,q,m,l,p])``.

    Args:
        value: (B, N, M, D), N = sum(H_l * W_l) tokens of all levels (row-major per level, concatenated).
        spatial_shapes: L pairs (H_l, W_l) of Python ints (no host sync needed).
        sampling_locations: (B, Lq, M, L, P, 2) normalized (x, y) in [0, 1]; outside reads zeros.
        attention_weights: (B, Lq, M, L, P).
        impl: a key of ``DEFORM_ATTN_IMPLS`` ("embedding_bag" or "grid_sample").

    Returns:
        (B, Lq, M*D) in value's dtype.
    """
    return _get_impl(impl)(value, spatial_shapes, sampling_locations, attention_weights)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (value/offset/weight projections around :func:`ms_deform_attn`).

    Args:
        embed_dim: channels C of queries, values and output.
        num_heads: heads M (C must be divisible by M).
        num_levels: feature levels L.
        num_points: sampling points P per head and level.
        impl: deformable attention core, a key of ``DEFORM_ATTN_IMPLS``.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        *,
        impl: str = "embedding_bag",
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.core = _get_impl(impl)
        self.impl = impl
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        # one projection for the (x, y) offsets and the attention logits of every head, level and point
        self.sampling_proj = nn.Linear(embed_dim, num_heads * num_levels * num_points * 3)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start on a ring of M directions (point p at distance p+1 px), attention uniform."""
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        nn.init.zeros_(self.sampling_proj.weight)
        angles = torch.arange(heads, dtype=torch.float32) * (2.0 * math.pi / heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        scale = torch.arange(1, points + 1, dtype=torch.float32).view(1, 1, points, 1)
        offsets = directions.view(heads, 1, 1, 2).repeat(1, levels, points, 1) * scale
        with torch.no_grad():
            self.sampling_proj.bias.zero_()
            self.sampling_proj.bias[: heads * levels * points * 2] = offsets.flatten()
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self, query: Tensor, reference_points: Tensor, value: Tensor, spatial_shapes: SpatialShapes
    ) -> Tensor:
        """Attend from every query to P points per head and level around its reference point.

        Args:
            query: (B, Lq, C) queries (with positional embedding added).
            reference_points: (B or 1, Lq, 2) or (B or 1, Lq, L, 2) normalized (x, y) in [0, 1].
            value: (B, N, C) input tokens of all levels, N = sum(H_l * W_l).
            spatial_shapes: L pairs (H_l, W_l) of Python ints.

        Returns:
            (B, Lq, C).
        """
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        if len(spatial_shapes) != levels:
            raise ValueError(f"MSDeformAttn built for {levels} levels got {len(spatial_shapes)} spatial shapes")
        value = self.value_proj(value).view(batch, value.shape[1], heads, self.embed_dim // heads)
        sampling = self.sampling_proj(query)
        sampling = sampling.to(_compute_dtype(sampling))  # offsets and softmax in fp32 under autocast
        num_offsets = heads * levels * points * 2
        offsets = sampling[..., :num_offsets].view(batch, num_queries, heads, levels, points, 2)
        attention = sampling[..., num_offsets:].view(batch, num_queries, heads, levels * points).softmax(-1)
        attention = attention.view(batch, num_queries, heads, levels, points)
        size_wh = torch.tensor(
            [[int(w), int(h)] for h, w in spatial_shapes], dtype=sampling.dtype, device=query.device
        )
        if reference_points.dim() == 3:
            reference_points = reference_points.unsqueeze(2)  # one point shared by all levels
        locations = reference_points.to(sampling.dtype)[:, :, None, :, None, :] + offsets / size_wh[:, None, :]
        out = self.core(value, spatial_shapes, locations, attention)
        return self.output_proj(out)
