"""Mask2Former pixel decoder: multi-scale deformable-attention encoder + FPN-style path to stride 4."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from fvcore.nn import weight_init
from torch import Tensor, nn

from .deform_attn import MSDeformAttn
from .layers import dropout_or_identity, feed_forward
from .position_encoding import ORIGINAL_POS_EPS, sine_position_embedding

__all__ = ["PIXEL_DECODER_PRECISIONS", "DeformableEncoderLayer", "MSDeformAttnPixelDecoder"]

#: ``precision`` settings of :class:`MSDeformAttnPixelDecoder` (docs/mask2former_head.md):
#: ``fp32`` runs the whole pixel decoder in float32 with autocast off, as the original Mask2Former does;
#: ``autocast`` runs it under the caller's autocast (offsets, attention softmax and sampling stay float32).
PIXEL_DECODER_PRECISIONS = ("fp32", "autocast")


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then a ReLU FFN."""

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        num_levels: int,
        num_points: int,
        dim_feedforward: int,
        dropout: float,
        deform_attn_impl: str,
    ) -> None:
        super().__init__()
        self.attn = MSDeformAttn(dim, num_heads, num_levels, num_points, impl=deform_attn_impl)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = feed_forward(dim, dim_feedforward, dropout)
        self.dropout1 = dropout_or_identity(dropout)
        self.dropout2 = dropout_or_identity(dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: Sequence[tuple[int, int]]
    ) -> Tensor:
        """src: (B, N, C) tokens of all levels; pos: (1 or B, N, C); reference_points: (1, N, 2) in [0, 1]."""
        src = self.norm1(src + self.dropout1(self.attn(src + pos, reference_points, src, spatial_shapes)))
        return self.norm2(src + self.dropout2(self.ffn(src)))


def _level_reference_points(spatial_shapes: Sequence[tuple[int, int]], device: torch.device) -> Tensor:
    """Pixel centres of every level as normalized (x, y): (1, N, 2) float32."""
    points = []
    for height, width in spatial_shapes:
        ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1))
    return torch.cat(points, dim=0).unsqueeze(0)


class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder.

    The ``transformer_in_features`` (strides 8/16/32 by default) are projected to ``conv_dim`` (1x1 conv + norm),
    given sine positions + a learnable level embedding and refined jointly by ``num_layers`` deformable
    encoder layers. Higher-resolution inputs (res2) join through FPN lateral convs (1x1, norm) added to the
    bilinearly upsampled coarser output and a 3x3 output conv (norm, ReLU). A 1x1 conv on the stride
    ``common_stride`` map gives the per-pixel mask embeddings.

    Args:
        input_shape: backbone ``output_shape()`` (name -> ShapeSpec with channels and stride).
        conv_dim: channels of the encoder and FPN maps.
        mask_dim: channels of the mask features.
        norm: detectron2 norm name for the convs ("GN" = GroupNorm with 32 groups, "" for none).
        num_heads, num_points, num_layers, dim_feedforward, dropout: deformable encoder settings.
        in_features: backbone features used (stride order irrelevant).
        transformer_in_features: the subset refined by the deformable encoder.
        common_stride: stride of the mask features.
        deform_attn_impl: deformable attention core (see ``DEFORM_ATTN_IMPLS``).
        precision: ``fp32`` (the original's: float32 with autocast off, half-precision inputs upcast; float64
            inputs stay float64) or ``autocast`` (the caller's autocast applies); see ``PIXEL_DECODER_PRECISIONS``.
        pos_embed_eps: normaliser offset of the sine positions, which divide by (H + eps); the default is the
            original's 1e-6, 0 divides by H.
    """

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        conv_dim: int = 256,
        mask_dim: int = 256,
        norm: str = "GN",
        num_heads: int = 8,
        num_points: int = 4,
        num_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        transformer_in_features: Sequence[str] = ("res3", "res4", "res5"),
        common_stride: int = 4,
        deform_attn_impl: str = "embedding_bag",
        precision: str = "fp32",
        pos_embed_eps: float = ORIGINAL_POS_EPS,
    ) -> None:
        super().__init__()
        if precision not in PIXEL_DECODER_PRECISIONS:
            raise ValueError(f"pixel decoder precision={precision!r} is not one of {list(PIXEL_DECODER_PRECISIONS)} "
                             "(model.pixel_decoder.precision)")
        if not pos_embed_eps >= 0:
            raise ValueError(f"pos_embed_eps must be >= 0, got {pos_embed_eps} (model.pixel_decoder.pos_embed_eps)")
        self.precision = precision
        self.pos_embed_eps = float(pos_embed_eps)
        missing = [name for name in in_features if name not in input_shape]
        if missing:
            raise ValueError(
                f"pixel decoder needs backbone features {list(in_features)}; missing {missing}, "
                f"backbone provides {sorted(input_shape)}"
            )
        not_used = [name for name in transformer_in_features if name not in in_features]
        if not_used:
            raise ValueError(f"transformer_in_features {not_used} are not in in_features {list(in_features)}")
        # coarse to fine: level 0 is the largest stride
        self.in_features = sorted(in_features, key=lambda name: -input_shape[name].stride)
        self.transformer_in_features = sorted(transformer_in_features, key=lambda name: -input_shape[name].stride)
        self.fpn_features = [
            name
            for name in self.in_features
            if name not in self.transformer_in_features
            and input_shape[name].stride < input_shape[self.transformer_in_features[-1]].stride
        ]
        finest = input_shape[self.in_features[-1]].stride
        if finest != common_stride:
            raise ValueError(
                f"common_stride={common_stride} must equal the finest input stride; "
                f"{self.in_features[-1]} has stride {finest}"
            )
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim
        self.common_stride = common_stride
        self.num_levels = len(self.transformer_in_features)

        self.input_proj = nn.ModuleList()
        for name in self.transformer_in_features:
            proj = nn.Sequential(
                nn.Conv2d(input_shape[name].channels, conv_dim, kernel_size=1),
                get_norm(norm, conv_dim) or nn.Identity(),
            )
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
            self.input_proj.append(proj)
        self.level_embed = nn.Parameter(torch.empty(self.num_levels, conv_dim))
        nn.init.normal_(self.level_embed)
        self.encoder = nn.ModuleList(
            DeformableEncoderLayer(
                conv_dim,
                num_heads=num_heads,
                num_levels=self.num_levels,
                num_points=num_points,
                dim_feedforward=dim_feedforward,
                dropout=dropout,
                deform_attn_impl=deform_attn_impl,
            )
            for _ in range(num_layers)
        )

        use_bias = norm == ""
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for name in self.fpn_features:
            lateral = Conv2d(
                input_shape[name].channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim)
            )
            output = Conv2d(
                conv_dim,
                conv_dim,
                kernel_size=3,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            self.lateral_convs.append(lateral)
            self.output_convs.append(output)
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.mask_features)

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Run the pixel decoder.

        Args:
            features: backbone maps by name, (B, C_name, H / stride, W / stride).

        Returns:
            mask_features: (B, mask_dim, H / common_stride, W / common_stride).
            multi_scale_features: the encoder outputs, coarse to fine (res5, res4, res3 by default),
                each (B, conv_dim, H_l, W_l). float32 (float64 for float64 inputs) with ``precision="fp32"``.
        """
        if self.precision == "autocast":
            return self._decode(features)
        used = {name: features[name] for name in self.in_features}
        device_type = next(iter(used.values())).device.type
        no_autocast = (
            torch.autocast(device_type=device_type, enabled=False)
            if torch.amp.is_autocast_available(device_type)
            else contextlib.nullcontext()  # a device without autocast runs in the inputs' dtype anyway
        )
        with no_autocast:
            return self._decode({name: x.to(torch.promote_types(x.dtype, torch.float32)) for name, x in used.items()})

    def _decode(self, features: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """The decoder body, in whatever precision context :meth:`forward` set up."""
        srcs, positions, spatial_shapes = [], [], []
        for level, name in enumerate(self.transformer_in_features):
            x = self.input_proj[level](features[name])
            height, width = x.shape[-2:]
            spatial_shapes.append((height, width))  # no int(): symbolic sizes must stay symbolic in torch.export
            srcs.append(x.flatten(2).transpose(1, 2))
            pos = sine_position_embedding(height, width, self.conv_dim, eps=self.pos_embed_eps, device=x.device)
            positions.append(pos + self.level_embed[level])
        src = torch.cat(srcs, dim=1)
        pos = torch.cat(positions, dim=0).unsqueeze(0).to(src.dtype)
        reference_points = _level_reference_points(spatial_shapes, src.device)
        for layer in self.encoder:
            src = layer(src, pos, reference_points, spatial_shapes)

        batch = src.shape[0]
        sizes = [h * w for h, w in spatial_shapes]
        outs = [
            tokens.transpose(1, 2).reshape(batch, self.conv_dim, h, w)
            for tokens, (h, w) in zip(src.split(sizes, dim=1), spatial_shapes)
        ]
        multi_scale_features = list(outs)
        y = outs[-1]
        for name, lateral, output in zip(self.fpn_features, self.lateral_convs, self.output_convs):
            lat = lateral(features[name])
            y = output(lat + F.interpolate(y, size=lat.shape[-2:], mode="bilinear", align_corners=False))
        return self.mask_features(y), multi_scale_features
