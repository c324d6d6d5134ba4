"""Encoders built on timm models: plain ViTs (+ a pyramid neck) and hierarchical trunks (native 4-stage pyramid).

* :class:`PlainViTEncoder`: DINOv3, DINOv2, SAM ViT. The trunk sees the input zero-padded to a multiple of its patch
  (and of 32 when the patch divides 32, so the stride-32 level is an exact 2x subsampling); the neck
  (``paper`` | ``vitdet`` | ``raw``, see :mod:`mgfusion.backbones.necks`) builds strides 4/8/16/32 from the last
  block's patch tokens after the final norm, or from one tapped block per level (``taps``).
* :class:`HierarchicalEncoder`: SAM2 Hiera, Swin. Stage outputs are the pyramid (input padded to a multiple of 32).

Both accept the tuning options of :mod:`mgfusion.backbones.tuning` (``tuning`` = full | frozen | last_n | lora,
``last_n_blocks``, ``lora``, ``grad_checkpointing``), applied after the weights are loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
from torch import nn

from .base import DEFAULT_STRIDES, Encoder
from .necks import build_neck
from .tuning import TuningSettings, apply_tuning
from .weights import load_weights_into


def create_timm_trunk(
    model_name: str,
    *,
    family: str,
    weights: str | os.PathLike | None = None,
    strict: bool = True,
    prune_norm: bool = False,
    **timm_kwargs: Any,
) -> nn.Module:
    """Create a headless timm model and load weights.

    Args:
        model_name: timm architecture name, e.g. ``vit_base_patch16_dinov3_qkvb``.
        family: weight family for checkpoint conversion (see :data:`mgfusion.backbones.weights.WEIGHT_FAMILIES`).
        weights: ``None`` (random init), a local file (official release layout or timm layout), ``"hub"`` (timm's
            default pretrained tag, needs internet) or ``"hub:<tag>"``.
        strict: strict key matching for local files.
        prune_norm: remove the final norm (SAM's conv neck for SAM ViT) in addition to the classifier head.
        **timm_kwargs: forwarded to ``timm.create_model`` (architecture overrides such as ``depth=``).
    """
    weights = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    from_hub = isinstance(weights, str) and (weights == "hub" or weights.startswith("hub:"))
    name = model_name + ("." + weights.split(":", 1)[1] if from_hub and ":" in weights else "")
    model = timm.create_model(name, pretrained=from_hub, num_classes=0, **timm_kwargs)
    model.prune_intermediate_layers(_all_blocks(model), prune_norm=prune_norm, prune_head=True)
    if weights and not from_hub:
        load_weights_into(model, weights, family, strict=strict)
    return model


def _all_blocks(model: nn.Module) -> list[int]:
    """Indices covering every block/stage (timm's feature_info order) so that pruning removes only the head."""
    return [len(model.feature_info) - 1]


def _pixel_stats(model: nn.Module) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = tuple(float(m) * 255.0 for m in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(s) * 255.0 for s in cfg.get("std", (0.229, 0.224, 0.225)))
    return mean, std  # type: ignore[return-value]


class PlainViTEncoder(Encoder):
    """A plain (single-stride) timm ViT + pyramid neck.

    Args:
        model_name: timm name (e.g. ``vit_base_patch16_dinov3_qkvb``).
        family: ``dinov3`` | ``dinov2`` | ``samvit`` (checkpoint conversion and final-norm handling).
        weights / strict: see :func:`create_timm_trunk`.
        neck: ``paper`` (docs/fusion.md, default), ``vitdet`` or ``raw``.
        neck_channels: output channels per level (int or 4 values); ``None`` = the neck's default
            (paper 128/256/512/1024, vitdet 256).
        taps: ``None`` = the last block for every level; otherwise block indices (negative allowed), either one
            index for all levels or one per level (stride 4, 8, 16, 32 order).
        final_norm: apply the trunk's final norm to the tapped tokens (DINOv2/v3 default True; SAM has none).
        timm_kwargs: extra ``timm.create_model`` arguments.
        tuning, last_n_blocks, lora, grad_checkpointing: see :mod:`mgfusion.backbones.tuning` (``full`` trains
            everything; ``lora`` needs ``peft``).
    """

    def __init__(
        self,
        *,
        model_name: str,
        family: str,
        weights: str | os.PathLike | None = None,
        strict: bool = True,
        neck: str = "paper",
        neck_channels: int | Sequence[int] | None = None,
        taps: int | Sequence[int] | None = None,
        final_norm: bool = True,
        strides: Sequence[int] = DEFAULT_STRIDES,
        timm_kwargs: dict[str, Any] | None = None,
        tuning: str = "full",
        last_n_blocks: int = 3,
        lora: Mapping[str, Any] | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        settings = TuningSettings.from_config(tuning, last_n_blocks=last_n_blocks, lora=lora,
                                              grad_checkpointing=grad_checkpointing)
        self.trunk = create_timm_trunk(
            model_name, family=family, weights=weights, strict=strict, prune_norm=not final_norm,
            **(timm_kwargs or {}),
        )
        n_blocks = len(self.trunk.blocks)
        tap_list = [-1] if taps is None else ([taps] if isinstance(taps, int) else list(taps))
        self.taps = [t % n_blocks if -n_blocks <= t < n_blocks else _bad_tap(t, n_blocks) for t in tap_list]
        if max(self.taps) < n_blocks - 1:  # drop blocks after the last tap: no unused parameters in DDP
            self.trunk.prune_intermediate_layers(self.taps, prune_norm=not final_norm, prune_head=True)
        self.final_norm = final_norm
        self.patch_size = int(self.trunk.patch_embed.patch_size[0])
        self.size_divisibility = 32 if 32 % self.patch_size == 0 else self.patch_size
        self.out_strides = tuple(int(s) for s in strides)
        neck_kwargs: dict[str, Any] = {"in_channels": self.trunk.embed_dim, "patch_size": self.patch_size,
                                       "strides": self.out_strides}
        if neck_channels is not None:
            neck_kwargs["out_channels"] = neck_channels
        self.neck = build_neck(neck, **neck_kwargs)
        if len(self.taps) not in (1, len(self.out_strides)):
            raise ValueError(f"taps needs 1 or {len(self.out_strides)} block indices, got {tap_list}")
        self.out_channels = dict(self.neck.out_channels)
        self.pixel_mean, self.pixel_std = _pixel_stats(self.trunk)
        self.embed_dim = int(self.trunk.embed_dim)
        apply_tuning(self, settings)

    def transformer_blocks(self) -> list[nn.Module]:
        """The trunk's blocks in forward order (``trunk.blocks``, after dropping those past the last tap)."""
        return list(self.trunk.blocks)

    def level_only_parameters(self, stride: int) -> list[nn.Parameter]:
        return self.neck.level_parameters(stride)

    def forward_padded(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        unique = sorted(set(self.taps))
        maps = self.trunk.forward_intermediates(
            x, indices=unique, norm=self.final_norm, stop_early=True, output_fmt="NCHW", intermediates_only=True
        )
        by_block = dict(zip(unique, maps))
        return self.neck([by_block[t] for t in self.taps], (x.shape[-2], x.shape[-1]))


def _bad_tap(t: int, n: int) -> int:
    raise ValueError(f"tap {t} is out of range for a trunk with {n} blocks (valid: {-n}..{n - 1})")


class HierarchicalEncoder(Encoder):
    """A hierarchical timm trunk (SAM2 Hiera, Swin) whose 4 stage outputs are the stride 4/8/16/32 pyramid.

    Args:
        model_name: timm name (e.g. ``sam2_hiera_base_plus``).
        family: ``sam2`` | ``swin``.
        weights / strict: see :func:`create_timm_trunk`.
        timm_kwargs: extra ``timm.create_model`` arguments.
        tuning, last_n_blocks, lora, grad_checkpointing: see :mod:`mgfusion.backbones.tuning`.
    """

    def __init__(
        self,
        *,
        model_name: str,
        family: str,
        weights: str | os.PathLike | None = None,
        strict: bool = True,
        timm_kwargs: dict[str, Any] | None = None,
        tuning: str = "full",
        last_n_blocks: int = 3,
        lora: Mapping[str, Any] | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        settings = TuningSettings.from_config(tuning, last_n_blocks=last_n_blocks, lora=lora,
                                              grad_checkpointing=grad_checkpointing)
        self.trunk = create_timm_trunk(
            model_name, family=family, weights=weights, strict=strict, prune_norm=True, **(timm_kwargs or {})
        )
        info = self.trunk.feature_info
        if len(info) != 4:
            raise ValueError(f"{model_name} has {len(info)} stages; a 4-stage trunk is required")
        self.out_strides = tuple(int(f["reduction"]) for f in info)
        if self.out_strides != DEFAULT_STRIDES:
            raise ValueError(f"{model_name} stage strides are {self.out_strides}, expected {DEFAULT_STRIDES}")
        self.out_channels = {int(f["reduction"]): int(f["num_chs"]) for f in info}
        self.size_divisibility = 32
        self.pixel_mean, self.pixel_std = _pixel_stats(self.trunk)
        apply_tuning(self, settings)

    def transformer_blocks(self) -> list[nn.Module]:
        """The trunk's blocks in forward order: Hiera's ``trunk.blocks`` (all stages), Swin's
        ``trunk.layers[j].blocks[k]`` (ConvNeXt's ``trunk.stages[j].blocks[k]``) flattened."""
        if hasattr(self.trunk, "blocks"):
            return list(self.trunk.blocks)
        for stages in ("layers", "stages"):  # Swin; ConvNeXt-like trunks
            if all(hasattr(stage, "blocks") for stage in getattr(self.trunk, stages, [None])):
                return [block for stage in getattr(self.trunk, stages) for block in stage.blocks]
        raise TypeError(f"the blocks of a {type(self.trunk).__name__} trunk are unknown (no `blocks`, and no "
                        "`layers`/`stages` with `blocks`); tuning=last_n/lora and layer decay need them")

    def forward_padded(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        maps = self.trunk.forward_intermediates(x, indices=4, norm=False, output_fmt="NCHW", intermediates_only=True)
        return dict(zip(self.out_strides, maps))
