"""Pyramid necks that turn a plain ViT's single-stride token map into the 4-level pyramid Mask2Former needs.

All necks take a list of token maps ``tokens[i]: (B, D, h, w)`` (one per output level, or a single map used for all
levels), the trunk's patch size, and the padded input size ``(Hp, Wp)``, and return ``{stride: (B, C_s, ceil(Hp/s),
ceil(Wp/s))}``.

* ``paper``  (docs/fusion.md, the encoders' pyramids): nearest resize of the token grid to each stride's grid + per-level 1x1 conv (with bias) to
  ``out_channels`` (default 128/256/512/1024). No deconvolution, no pooling.
* ``vitdet`` (ViTDet's simple feature pyramid): from the stride-16 map, deconv x2 (+LN+GELU) x2 for stride 4, deconv x2
  for stride 8, identity for 16, max-pool 2 for 32; then per level 1x1 conv + LN + 3x3 conv + LN to ``out_channels``.
* ``raw``: nearest resize only, no parameters (``D`` channels at every level); the projection-free mode for profiling
  a ViT's own features (docs/metrics.md, which features are measured).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from mgfusion.utils.registry import Registry

from .base import DEFAULT_STRIDES

#: the pyramid necks of plain ViTs, by name (``paper``, ``vitdet``, ``raw``)
NECKS: Registry[Callable[..., "PyramidNeck"]] = Registry("pyramid neck")


def register_neck(name: str) -> Callable:
    """Decorator registering a :class:`PyramidNeck` subclass under ``name`` (a taken name is a RegistryError)."""
    return NECKS.register(name)


def list_necks() -> list[str]:
    """Registered neck names."""
    return NECKS.names()


def build_neck(name: str, **kwargs) -> "PyramidNeck":
    """Build the neck registered as ``name`` (``paper``, ``vitdet`` or ``raw``); unknown names list the valid ones."""
    return NECKS.get(name)(**kwargs)


def _per_level(values: int | Sequence[int], strides: Sequence[int], what: str) -> tuple[int, ...]:
    if isinstance(values, int):
        return (values,) * len(strides)
    values = tuple(int(v) for v in values)
    if len(values) != len(strides):
        raise ValueError(f"{what} needs one value per stride {tuple(strides)}, got {values}")
    return values


class PyramidNeck(nn.Module):
    """Base class: ``forward(tokens, padded_hw) -> {stride: (B, C_s, ceil(Hp/s), ceil(Wp/s))}``."""

    def __init__(self, in_channels: int, patch_size: int, strides: Sequence[int] = DEFAULT_STRIDES) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.patch_size = int(patch_size)
        self.strides = tuple(int(s) for s in strides)
        self.out_channels: dict[int, int] = {}

    def level_parameters(self, stride: int) -> list[nn.Parameter]:
        """Parameters that feed only the output level ``stride`` (none for parameter-free necks)."""
        return []

    @staticmethod
    def _level_tokens(tokens: Sequence[torch.Tensor], n_levels: int) -> list[torch.Tensor]:
        if len(tokens) == 1:
            return list(tokens) * n_levels
        if len(tokens) != n_levels:
            raise ValueError(f"expected 1 or {n_levels} token maps (one per level), got {len(tokens)}")
        return list(tokens)


def _nearest_to_stride(t: torch.Tensor, padded_hw: tuple[int, int], stride: int) -> torch.Tensor:
    """Nearest resize of a token map to the stride-``stride`` grid of the padded input, ``ceil(Hp/s) x ceil(Wp/s)``."""
    size = (math.ceil(padded_hw[0] / stride), math.ceil(padded_hw[1] / stride))
    if tuple(t.shape[-2:]) == size:
        return t
    return F.interpolate(t, size=size, mode="nearest")


@register_neck("raw")
class RawPyramidNeck(PyramidNeck):
    """Nearest resize of the token map to each stride, no projection (channels = trunk width at every level)."""

    def __init__(self, in_channels: int, patch_size: int, strides: Sequence[int] = DEFAULT_STRIDES) -> None:
        super().__init__(in_channels, patch_size, strides)
        self.out_channels = {s: self.in_channels for s in self.strides}

    def forward(self, tokens: Sequence[torch.Tensor], padded_hw: tuple[int, int]) -> dict[int, torch.Tensor]:
        maps = self._level_tokens(tokens, len(self.strides))
        return {s: _nearest_to_stride(t, padded_hw, s) for s, t in zip(self.strides, maps)}


@register_neck("paper")
class PaperPyramidNeck(PyramidNeck):
    """The paper's neck (docs/fusion.md): nearest resize of the token grid to each stride + per-level 1x1 conv (with bias)."""

    def __init__(
        self,
        in_channels: int,
        patch_size: int,
        strides: Sequence[int] = DEFAULT_STRIDES,
        out_channels: int | Sequence[int] = (128, 256, 512, 1024),
    ) -> None:
        super().__init__(in_channels, patch_size, strides)
        chans = _per_level(out_channels, self.strides, "out_channels")
        self.out_channels = dict(zip(self.strides, chans))
        self.proj = nn.ModuleDict({str(s): nn.Conv2d(self.in_channels, c, 1) for s, c in self.out_channels.items()})

    def level_parameters(self, stride: int) -> list[nn.Parameter]:
        return list(self.proj[str(stride)].parameters())

    def forward(self, tokens: Sequence[torch.Tensor], padded_hw: tuple[int, int]) -> dict[int, torch.Tensor]:
        maps = self._level_tokens(tokens, len(self.strides))
        return {s: self.proj[str(s)](_nearest_to_stride(t, padded_hw, s)) for s, t in zip(self.strides, maps)}


@register_neck("vitdet")
class ViTDetPyramidNeck(PyramidNeck):
    """ViTDet's simple feature pyramid (deconv / identity / max-pool from a stride-16 map) + 1x1/3x3 output convs.

    Token maps with a patch size other than 16 (DINOv2: 14) are first resized bilinearly to the stride-16 grid.
    """

    _SCALE_FROM_16 = {4: 4.0, 8: 2.0, 16: 1.0, 32: 0.5}

    def __init__(
        self,
        in_channels: int,
        patch_size: int,
        strides: Sequence[int] = DEFAULT_STRIDES,
        out_channels: int | Sequence[int] = 256,
    ) -> None:
        super().__init__(in_channels, patch_size, strides)
        unsupported = [s for s in self.strides if s not in self._SCALE_FROM_16]
        if unsupported:
            raise ValueError(f"vitdet neck supports strides {sorted(self._SCALE_FROM_16)}, got {unsupported}")
        chans = _per_level(out_channels, self.strides, "out_channels")
        self.out_channels = dict(zip(self.strides, chans))
        d = self.in_channels
        self.resample = nn.ModuleDict()
        self.output = nn.ModuleDict()
        for s, c in self.out_channels.items():
            if s == 4:
                sampler = nn.Sequential(
                    nn.ConvTranspose2d(d, d // 2, 2, stride=2), LayerNorm2d(d // 2), nn.GELU(),
                    nn.ConvTranspose2d(d // 2, d // 4, 2, stride=2),
                )
                mid = d // 4
            elif s == 8:
                sampler, mid = nn.ConvTranspose2d(d, d // 2, 2, stride=2), d // 2
            elif s == 16:
                sampler, mid = nn.Identity(), d
            else:
                sampler, mid = nn.MaxPool2d(2, stride=2, ceil_mode=True), d
            self.resample[str(s)] = sampler
            self.output[str(s)] = nn.Sequential(
                nn.Conv2d(mid, c, 1, bias=False), LayerNorm2d(c),
                nn.Conv2d(c, c, 3, padding=1, bias=False), LayerNorm2d(c),
            )

    def level_parameters(self, stride: int) -> list[nn.Parameter]:
        return [*self.resample[str(stride)].parameters(), *self.output[str(stride)].parameters()]

    def forward(self, tokens: Sequence[torch.Tensor], padded_hw: tuple[int, int]) -> dict[int, torch.Tensor]:
        maps = self._level_tokens(tokens, len(self.strides))
        out = {}
        for s, t in zip(self.strides, maps):
            if self.patch_size != 16:
                size16 = (math.ceil(padded_hw[0] / 16), math.ceil(padded_hw[1] / 16))
                t = F.interpolate(t, size=size16, mode="bilinear", align_corners=False)
            out[s] = self.output[str(s)](self.resample[str(s)](t))
        return out
