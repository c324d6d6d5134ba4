"""detectron2 adapter: any mgfusion encoder (or the fusion backbone) as a detectron2 ``Backbone``.

The encoder's stride-4/8/16/32 maps become ``res2..res5``. Registered in ``BACKBONE_REGISTRY`` as
``EncoderBackbone``; Hydra configs instantiate it with keyword arguments, yacs configs through
:func:`add_mgfusion_config` + ``cfg.MODEL.BACKBONE.NAME = "EncoderBackbone"`` (a single encoder, or the fusion
backbone when ``MODEL.MGFUSION.AUXILIARY`` is set).
"""

from __future__ import annotations

from typing import Any

import torch
from detectron2.config import CfgNode, configurable
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec
from torch import nn

from mgfusion.backbones import build_encoder, build_fusion_backbone
from mgfusion.backbones.registry import check_encoder_weights

#: detectron2 level names for the pyramid strides.
STRIDE_TO_NAME = {4: "res2", 8: "res3", 16: "res4", 32: "res5"}


def add_mgfusion_config(cfg: CfgNode) -> CfgNode:
    """Add ``cfg.MODEL.MGFUSION`` for yacs users of :class:`EncoderBackbone`.

    ENCODER, WEIGHTS, FREEZE, NECK ("" = the encoder's default), SIZE_DIVISIBILITY; and the fusion backbone:
    AUXILIARY (a registered encoder name; "" = no fusion), AUXILIARY_WEIGHTS, AUXILIARY_NECK, FUSION_STRIDES
    (injection strides), FUSION_OPERATOR (``replace``, the paper's, ``add``, ``gated``, ``concat``), TRAIN_MASTER.
    A WEIGHTS key takes a weights file, ``hub`` or ``random``; left empty, a foundation encoder is refused (random
    initialisation must be asked for) and a micro encoder is built randomly initialised.
    """
    m = cfg.MODEL.MGFUSION = CfgNode()
    m.ENCODER = "dinov3_vitb16"
    m.WEIGHTS = ""
    m.FREEZE = False
    m.NECK = ""
    m.SIZE_DIVISIBILITY = 32
    m.AUXILIARY = ""
    m.AUXILIARY_WEIGHTS = ""
    m.AUXILIARY_NECK = ""
    m.FUSION_STRIDES = [16]
    m.FUSION_OPERATOR = "replace"
    m.TRAIN_MASTER = True
    return cfg


@BACKBONE_REGISTRY.register()
class EncoderBackbone(Backbone):
    """A detectron2 ``Backbone`` wrapping an mgfusion encoder.

    Args:
        encoder: an encoder module (``forward(x) -> {stride: map}``, ``out_strides``, ``out_channels``,
            ``pixel_mean``, ``pixel_std``), or a registered encoder name built with ``encoder_kwargs``.
        size_divisibility: batch padding multiple the meta-architecture should apply (32 keeps every level aligned;
            encoders pad internally to their own rule).
        encoder_kwargs: forwarded to :func:`mgfusion.backbones.build_encoder` when ``encoder`` is a name.

    ``forward(x: (B,3,H,W) normalized)`` returns ``{"res2": (B,C,H/4,W/4), ..., "res5": (B,C,H/32,W/32)}``.
    """

    @configurable
    def __init__(self, *, encoder: nn.Module | str, size_divisibility: int = 32, **encoder_kwargs: Any) -> None:
        super().__init__()
        if isinstance(encoder, str):
            encoder = build_encoder(encoder, **encoder_kwargs)
        elif encoder_kwargs:
            raise TypeError(f"encoder_kwargs {sorted(encoder_kwargs)} are only valid with an encoder name")
        strides = tuple(getattr(encoder, "out_strides", ()))
        if strides != tuple(STRIDE_TO_NAME):
            raise ValueError(f"EncoderBackbone needs an encoder with out_strides {tuple(STRIDE_TO_NAME)}, got {strides}")
        self.encoder = encoder
        self._size_divisibility = int(size_divisibility)
        self._out_features = [STRIDE_TO_NAME[s] for s in strides]
        self._out_feature_strides = {STRIDE_TO_NAME[s]: s for s in strides}
        self._out_feature_channels = {STRIDE_TO_NAME[s]: int(encoder.out_channels[s]) for s in strides}

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec | None = None) -> dict[str, Any]:
        m = cfg.MODEL.MGFUSION
        check_encoder_weights(m.ENCODER, m.WEIGHTS, key="MODEL.MGFUSION.WEIGHTS")
        kwargs: dict[str, Any] = {"weights": m.WEIGHTS or None, "freeze": bool(m.FREEZE)}
        if m.NECK:
            kwargs["neck"] = m.NECK
        if not m.AUXILIARY:
            return {"encoder": m.ENCODER, "size_divisibility": m.SIZE_DIVISIBILITY, **kwargs}
        check_encoder_weights(m.AUXILIARY, m.AUXILIARY_WEIGHTS, key="MODEL.MGFUSION.AUXILIARY_WEIGHTS")
        aux_kwargs: dict[str, Any] = {"weights": m.AUXILIARY_WEIGHTS or None}
        if m.AUXILIARY_NECK:
            aux_kwargs["neck"] = m.AUXILIARY_NECK
        fused = build_fusion_backbone(
            master=build_encoder(m.ENCODER, **kwargs), auxiliary=build_encoder(m.AUXILIARY, **aux_kwargs),
            fusion={"stride": [int(s) for s in m.FUSION_STRIDES], "operator": m.FUSION_OPERATOR},
            train_master=bool(m.TRAIN_MASTER),
        )  # fmt: skip
        return {"encoder": fused, "size_divisibility": m.SIZE_DIVISIBILITY}

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return {"size_divisibility": self._size_divisibility, "square_size": 0}

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        """RGB mean in 0-255 units that inputs must be normalized with."""
        return tuple(self.encoder.pixel_mean)

    @property
    def pixel_std(self) -> tuple[float, float, float]:
        """RGB std in 0-255 units that inputs must be normalized with."""
        return tuple(self.encoder.pixel_std)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder(x)
        return {STRIDE_TO_NAME[s]: feats[s] for s in self._out_feature_strides.values()}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
