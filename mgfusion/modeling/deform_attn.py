"""Multi-scale deformable attention (Deformable DETR), as used by Mask2Former's pixel decoder, in plain PyTorch.

Two interchangeable implementations of the sampling-and-weighting core are registered in the
``DEFORM_ATTN_IMPLS`` registry and compute the same numbers (bilinear sampling with zero padding outside each level,
``align_corners=False`` pixel centres, i.e. the semantics of the original CUDA op):

* ``"grid_sample"``: one ``F.grid_sample`` per level with the heads folded into the batch, accumulated level by
  level. The textbook formulation; sampling runs in fp32.
* ``"embedding_bag"``: the 4 bilinear corners of every sampling point become rows of a zero-bordered value table
  and one ``F.embedding_bag(mode="sum")`` with per-sample weights (bilinear weight x attention weight) gathers
  and reduces all levels, points and corners in a single kernel. Its backward is written by hand: the value
  gradient is the transposed gather (entries sorted by table row, a second ``embedding_bag``, no scatter) and
  the weight/location gradients come from per-corner dot products. Runs in fp32 (fp64 for fp64 inputs); several
  times faster than the grid_sample path on CPU and no large intermediate tensors.

:func:`ms_deform_attn_reference` spells the same definition out corner by corner (explicit reads, autograd for the
gradients); it is the yardstick both implementations are checked against (tests, ``benchmarks/gpu_check.py``), not a
registered implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgfusion.utils.registry import Registry

from .layers import small_tensor

__all__ = [
    "DEFORM_ATTN_IMPLS",
    "MSDeformAttn",
    "ms_deform_attn",
    "ms_deform_attn_embedding_bag",
    "ms_deform_attn_grid_sample",
    "ms_deform_attn_reference",
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
    num_tokens = sum(h * w for h, w in spatial_shapes)
    if value.shape[1] != num_tokens:
        raise ValueError(
            f"value has {value.shape[1]} tokens but spatial_shapes {list(spatial_shapes)} sum to {num_tokens}"
        )
    if value.shape[0] != sampling_locations.shape[0] or value.shape[2] != sampling_locations.shape[2]:
        raise ValueError(
            f"batch/heads of value {tuple(value.shape[:3:2])} and sampling_locations "
            f"{tuple(sampling_locations.shape[:3:2])} differ"
        )


DEFORM_ATTN_IMPLS: Registry[DeformAttnFn] = Registry("deformable attention implementation")


def _compute_dtype(x: Tensor) -> torch.dtype:
    """fp32 for half types, else the tensor's own float dtype (fp64 stays fp64)."""
    return torch.promote_types(x.dtype, torch.float32)


@DEFORM_ATTN_IMPLS.register("grid_sample")
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
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    dtype = _compute_dtype(value)
    sizes = [h * w for h, w in spatial_shapes]  # no int(): torch.export (ONNX) keeps the sizes symbolic
    values = value.to(dtype).split(sizes, dim=1)
    grids = 2.0 * sampling_locations.to(dtype) - 1.0
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(batch * heads, 1, num_queries, num_levels, num_points)
    out = value.new_zeros((batch * heads, head_dim, num_queries), dtype=dtype)
    for level, (height, width) in enumerate(spatial_shapes):
        level_value = values[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, height, width)
        level_grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, num_queries, num_points, 2)
        samples = F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + (samples * weights[:, :, :, level]).sum(-1)  # (B*M, D, Lq)
    out = out.view(batch, heads * head_dim, num_queries).transpose(1, 2)
    return out.to(value.dtype)


class _PaddedLevels:
    """Layout of the zero-bordered value table used by the gather implementation.

    Every level's (H, W) map gets a zero border of 1 px at the top/left and 2 px at the bottom/right; the padded
    maps are flattened and concatenated, so padded token n of image b, head m is table row (b * N_pad + n) * M + m.
    """

    def __init__(self, spatial_shapes: SpatialShapes, batch: int, heads: int) -> None:
        self.shapes = [(int(h), int(w)) for h, w in spatial_shapes]
        self.sizes = [h * w for h, w in self.shapes]
        self.padded_sizes = [(h + 3) * (w + 3) for h, w in self.shapes]
        self.starts = [sum(self.padded_sizes[:i]) for i in range(len(self.shapes))]
        self.num_padded = sum(self.padded_sizes)
        self.batch, self.heads = batch, heads
        self.num_rows = batch * self.num_padded * heads

    def pad(self, value: Tensor) -> Tensor:
        """(B, N, M, D) values -> (B * N_pad * M, D) table."""
        batch, _, heads, dim = value.shape
        table = value.new_zeros(batch, self.num_padded, heads * dim)
        for level, (start, size), (h, w) in zip(
            value.split(self.sizes, dim=1), zip(self.starts, self.padded_sizes), self.shapes
        ):
            interior = table[:, start : start + size].view(batch, h + 3, w + 3, heads * dim)[:, 1 : h + 1, 1 : w + 1]
            interior.copy_(level.reshape(batch, h, w, heads * dim))
        return table.view(-1, dim)

    def unpad(self, table: Tensor) -> Tensor:
        """(B * N_pad * M, D) table -> (B, N, M, D) values (border rows dropped)."""
        dim = table.shape[-1]
        table = table.view(self.batch, self.num_padded, self.heads * dim)
        levels = [
            table[:, start : start + size].view(self.batch, h + 3, w + 3, -1)[:, 1 : h + 1, 1 : w + 1]
            for start, size, (h, w) in zip(self.starts, self.padded_sizes, self.shapes)
        ]
        return torch.cat([lv.reshape(self.batch, h * w, self.heads, dim) for lv, (h, w) in zip(levels, self.shapes)], 1)

    def shift_counts(self, top_left_counts: Tensor, corner: int) -> Tensor:
        """Per-row entry counts of ``corner`` (0..3 = TL, TR, BL, BR) from the top-left counts (num_rows,)."""
        if corner == 0:
            return top_left_counts
        counts = top_left_counts.view(self.batch, self.num_padded, self.heads)
        shifted = torch.zeros_like(counts)
        for start, size, (_, w) in zip(self.starts, self.padded_sizes, self.shapes):
            shift = {1: 1, 2: w + 3, 3: w + 4}[corner]  # tokens right / down / down-right in the padded map
            shifted[:, start + shift : start + size] = counts[:, start : start + size - shift]
        return shifted.view(-1)

    def corners(
        self, sampling_locations: Tensor, dtype: torch.dtype, with_inside: bool = True
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Table rows of the 4 bilinear corners of every sampling point, and the fractional position.

        Points are clamped to [-1, W_l] x [-1, H_l] pixels: beyond that both corners of a sample fall in the zero
        border, exactly as bilinear sampling with zero padding.

        Returns:
            rows: (B, Lq, M, L, P, 4) int32/int64 rows of the (top-left, top-right, bottom-left, bottom-right)
                corners; frac: (B, Lq, M, L, P, 2) (x, y) offsets from the top-left corner in ``dtype``;
            inside: bool (B, Lq, M, L, P, 2), False where the clamp was active (no location gradient); None
                unless ``with_inside``.
        """
        batch, _, heads, num_levels, num_points, _ = sampling_locations.shape
        device = sampling_locations.device
        index_dtype = torch.int32 if self.num_rows < 2**31 - 1 else torch.int64
        # per-(level, point) constants as contiguous (L, P, ...) tensors: broadcasting them over the leading
        # dims is much faster than broadcasting (L, 1, ...) ones
        size_wh = self.level_point_sizes(num_points, dtype, device)  # (L, P, 2)
        row_len = small_tensor([w + 3 for _, w in self.shapes], index_dtype, device)
        row_len = row_len.view(num_levels, 1).expand(num_levels, num_points).contiguous()
        pixel = (sampling_locations.to(dtype) * size_wh).sub_(0.5)  # (B, Lq, M, L, P, 2), pixel centres at integers
        inside = (pixel > -1.0) & (pixel < size_wh) if with_inside else None
        pixel = torch.minimum(pixel.clamp_min_(-1.0), size_wh)
        corner = pixel.floor()
        frac = pixel.sub_(corner)
        corner = corner.to(index_dtype)
        # top-left row = ((b * N_pad + start_l + (y + 1) * row_len + (x + 1)) * M + m)
        level_base = small_tensor(self.starts, index_dtype, device).view(num_levels, 1) + row_len + 1
        base = (
            torch.arange(batch, device=device, dtype=index_dtype).view(batch, 1, 1, 1, 1) * self.num_padded
            + level_base.view(1, 1, 1, num_levels, num_points)
        ) * heads + torch.arange(heads, device=device, dtype=index_dtype).view(1, 1, heads, 1, 1)
        top_left = (corner[..., 1] * row_len + corner[..., 0]).mul_(heads).add_(base)  # (B, Lq, M, L, P)
        offsets = torch.stack([torch.zeros_like(row_len), torch.ones_like(row_len), row_len, row_len + 1], -1) * heads
        rows = top_left.unsqueeze(-1) + offsets  # (B, Lq, M, L, P, 4)
        return rows, frac, inside

    def level_point_sizes(self, num_points: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """(W_l, H_l) per level, repeated per point: contiguous (L, P, 2)."""
        sizes = small_tensor([[w, h] for h, w in self.shapes], dtype, device)
        return sizes.view(-1, 1, 2).expand(-1, num_points, 2).contiguous()


def _bilinear_weights(frac: Tensor, attention: Tensor) -> Tensor:
    """Attention-scaled weights of the (TL, TR, BL, BR) corners: (..., 2) (x, y) fractions, (...) -> (..., 4)."""
    fx, fy = frac[..., 0], frac[..., 1]
    bottom = attention * fy
    top = attention - bottom  # attention * (1 - fy)
    weights = frac.new_empty(fx.shape + (4,))
    torch.mul(top, fx, out=weights[..., 1])
    torch.sub(top, weights[..., 1], out=weights[..., 0])  # top * (1 - fx)
    torch.mul(bottom, fx, out=weights[..., 3])
    torch.sub(bottom, weights[..., 3], out=weights[..., 2])
    return weights


def _transposed_gather(
    layout: _PaddedLevels, rows: Tensor, frac: Tensor, attention: Tensor, grad: Tensor
) -> Tensor:
    """Value-table gradient of the weighted gather: ``grad_table[r] = sum of weight * grad[bag]`` over entries at r.

    The sampling points are sorted once by their top-left row; each corner is a fixed offset from the top-left
    inside a level, so this order also sorts every corner's rows and each corner's scatter becomes a gather: an
    ``embedding_bag`` whose bags are the table rows (bag sizes are shifted top-left counts).

    Args:
        layout: table layout; rows: (B, Lq, M, L, P, 4) corner rows; frac: (B, Lq, M, L, P, 2) fractional
            positions; attention: (B, Lq, M, L, P); grad: (B*Lq*M, D) output gradient.

    Returns:
        (layout.num_rows, D) gradient of the value table.
    """
    points_per_bag = rows.shape[3] * rows.shape[4]
    sorted_top_left, order = torch.sort(rows[..., 0].flatten())
    bags = torch.div(order, points_per_bag, rounding_mode="floor")
    frac = frac.reshape(-1, 2).index_select(0, order)
    fx, fy = frac[:, 0], frac[:, 1]
    attention = attention.flatten().index_select(0, order)
    bottom = attention * fy
    top = attention - bottom
    top_right, bottom_right = top * fx, bottom * fx
    corner_weights = [top - top_right, top_right, bottom - bottom_right, bottom_right]
    # entries per table row from the sorted rows: searchsorted is deterministic and, unlike bincount, needs no
    # device-to-host sync on GPUs
    row_ids = torch.arange(layout.num_rows + 1, dtype=sorted_top_left.dtype, device=sorted_top_left.device)
    top_left_counts = torch.searchsorted(sorted_top_left, row_ids).diff()
    grad_table = None
    for corner, weights in enumerate(corner_weights):
        counts = layout.shift_counts(top_left_counts, corner)
        starts = counts.cumsum(0) - counts
        part = F.embedding_bag(bags, grad, starts, per_sample_weights=weights, mode="sum")
        grad_table = part if grad_table is None else grad_table.add_(part)
    return grad_table


class _GatherDeformAttn(torch.autograd.Function):
    """Deformable attention as a weighted gather (``F.embedding_bag``) with a hand-written backward.

    Backward: the value gradient is the transposed gather, done as a second ``embedding_bag`` over the entries
    sorted by table row (no scatter); the corner dot products <grad, value> for the weight and location gradients
    come from ``embedding_bag``'s per-sample-weight gradient. All arithmetic runs in fp32 (fp64 for fp64 inputs).
    """

    @staticmethod
    def forward(ctx, value, sampling_locations, attention_weights, spatial_shapes):
        batch, _, heads, head_dim = value.shape
        num_queries = sampling_locations.shape[1]
        dtype = _compute_dtype(value)
        layout = _PaddedLevels(spatial_shapes, batch, heads)
        table = layout.pad(value.to(dtype))
        rows, frac, inside = layout.corners(sampling_locations, dtype, with_inside=ctx.needs_input_grad[1])
        attention = attention_weights.to(dtype)
        weights = _bilinear_weights(frac, attention)
        entries = rows.shape[3] * rows.shape[4] * 4
        out = F.embedding_bag(rows.view(-1, entries), table, per_sample_weights=weights.view(-1, entries), mode="sum")
        ctx.save_for_backward(table, rows, frac, inside, attention)
        ctx.layout, ctx.value_dtype = layout, value.dtype
        ctx.loc_dtype, ctx.attn_dtype = sampling_locations.dtype, attention_weights.dtype
        return out.view(batch, num_queries, heads * head_dim).to(value.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        table, rows, frac, inside, attention = ctx.saved_tensors
        layout: _PaddedLevels = ctx.layout
        head_dim = table.shape[-1]
        grad = grad_out.to(table.dtype).reshape(-1, head_dim)  # (B * Lq * M, D), one row per bag
        grad_value = grad_locations = grad_attention = None
        if ctx.needs_input_grad[0]:
            grad_value = layout.unpad(_transposed_gather(layout, rows, frac, attention, grad)).to(ctx.value_dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            d_tl, d_tr, d_bl, d_br = _corner_dots(rows, table, grad).unbind(-1)  # <grad, value at corner>
            fx, fy = frac[..., 0], frac[..., 1]
            dx_top, dx_bottom = d_tr - d_tl, d_br - d_bl
            top = torch.addcmul(d_tl, fx, dx_top)  # <grad, value> interpolated along x on the top/bottom rows
            dy = torch.addcmul(d_bl, fx, dx_bottom).sub_(top)
            if ctx.needs_input_grad[2]:
                grad_attention = torch.addcmul(top, fy, dy).to(ctx.attn_dtype)
            if ctx.needs_input_grad[1]:
                dx = torch.addcmul(dx_top, fy, dx_bottom - dx_top)
                size_wh = layout.level_point_sizes(frac.shape[-2], frac.dtype, frac.device)
                scale = (attention.unsqueeze(-1) * size_wh).mul_(inside)
                grad_locations = torch.stack([dx, dy], dim=-1).mul_(scale).to(ctx.loc_dtype)
        return grad_value, grad_locations, grad_attention, None


def _corner_dots(rows: Tensor, table: Tensor, grad: Tensor) -> Tensor:
    """<grad[bag], table[row]> for every corner entry: (B, Lq, M, L, P, 4).

    This is the gradient of the weighted gather w.r.t. its per-entry weights, so ``embedding_bag``'s own
    backward computes it (from a forward with dummy weights).
    """
    entries_per_bag = rows.shape[3] * rows.shape[4] * 4
    with torch.enable_grad():
        dummy = table.new_ones(rows.numel()).view(-1, entries_per_bag).requires_grad_()
        gathered = F.embedding_bag(rows.view(-1, entries_per_bag), table, per_sample_weights=dummy, mode="sum")
        (dots,) = torch.autograd.grad(gathered, dummy, grad)
    return dots.view(rows.shape)


@DEFORM_ATTN_IMPLS.register("embedding_bag")
def ms_deform_attn_embedding_bag(
    value: Tensor, spatial_shapes: SpatialShapes, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Deformable attention core as one fused weighted gather (``F.embedding_bag``) with a fused backward.

    Same arguments, result and semantics as :func:`ms_deform_attn_grid_sample`; computes in fp32 (fp64 for fp64
    inputs) and returns value's dtype.
    """
    _check_inputs(value, spatial_shapes, sampling_locations, attention_weights)
    return _GatherDeformAttn.apply(value, sampling_locations, attention_weights, spatial_shapes)


def ms_deform_attn_reference(
    value: Tensor, spatial_shapes: SpatialShapes, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """The definition, corner by corner: for every level and each of the 4 bilinear corners, read the value at the
    corner (zero outside the map), weight it by its bilinear and attention weights and add it up.

    Slow and memory-hungry (one (B, Lq, M, P, D) read per level and corner) but obviously right; gradients come from
    autograd. Run it in float64 as the yardstick for the registered implementations. Same arguments and result as
    :func:`ms_deform_attn_grid_sample`, computed in value's dtype.
    """
    _check_inputs(value, spatial_shapes, sampling_locations, attention_weights)
    batch, _, heads, head_dim = value.shape
    num_queries = sampling_locations.shape[1]
    out = value.new_zeros(batch, num_queries, heads, head_dim)
    image = torch.arange(batch, device=value.device).view(batch, 1, 1, 1)
    head = torch.arange(heads, device=value.device).view(1, 1, heads, 1)
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        height, width = int(height), int(width)
        level_value = value[:, start : start + height * width].reshape(batch, height, width, heads, head_dim)
        start += height * width
        x = sampling_locations[:, :, :, level, :, 0] * width - 0.5  # (B, Lq, M, P) pixel coordinates
        y = sampling_locations[:, :, :, level, :, 1] * height - 0.5
        x0, y0 = x.detach().floor(), y.detach().floor()
        for dy in (0, 1):
            for dx in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                bilinear = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
                inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
                read = level_value[image, yi.clamp(0, height - 1).long(), xi.clamp(0, width - 1).long(), head]
                weight = attention_weights[:, :, :, level] * bilinear * inside
                out = out + (weight.unsqueeze(-1) * read).sum(3)
    return out.reshape(batch, num_queries, heads * head_dim)


def _get_impl(name: str) -> DeformAttnFn:
    """The registered implementation ``name`` (RegistryError, a ValueError, names the valid ones)."""
    return DEFORM_ATTN_IMPLS.get(name)


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
        impl: a name in ``DEFORM_ATTN_IMPLS`` ("embedding_bag" or "grid_sample").

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
        impl: deformable attention core, a name in ``DEFORM_ATTN_IMPLS``.
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
        # (L, P, 2) level sizes and (B or 1, Lq, 1, L, P, 2) reference points, contiguous for fast broadcasting
        size_wh = small_tensor([[w, h] for h, w in spatial_shapes], sampling.dtype, query.device)
        size_wh = size_wh.view(levels, 1, 2).expand(levels, points, 2).contiguous()
        if reference_points.dim() == 3:
            reference_points = reference_points.unsqueeze(2)  # one point shared by all levels
        reference_points = reference_points.to(sampling.dtype)[:, :, None, :, None, :]
        reference_points = reference_points.expand(-1, -1, 1, levels, points, 2).contiguous()
        locations = torch.addcdiv(reference_points, offsets, size_wh)
        out = self.core(value, spatial_shapes, locations, attention)
        return self.output_proj(out)
