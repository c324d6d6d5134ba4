"""Encoder registry, timm-based encoders, pyramid necks and the master-auxiliary fusion backbone.

Depends on torch and timm only (the detectron2 adapter lives in :mod:`mgfusion.modeling.backbone`).

>>> from mgfusion.backbones import build_encoder, list_encoders
>>> enc = build_encoder("sam2_hiera_micro")
>>> feats = enc(torch.randn(1, 3, 100, 132))          # {4: (1,32,25,33), 8: ..., 16: ..., 32: (1,256,4,5)}
"""

from . import zoo as _zoo  # noqa: F401  (registers the built-in encoders)
from .base import IMAGENET_MEAN_255, IMAGENET_STD_255, Encoder, LevelSpec, output_hw, pad_to_multiple
from .fixed_input import FixedSizeInput, fill_canvas
from .fusion import FusionBackbone, argmax_stride, build_fusion_backbone, count_injected_parameters, read_profile_ef
from .injection import InjectionOperator, build_injection, list_injections, match_channels, register_injection
from .necks import PyramidNeck, build_neck, list_necks, register_neck
from .registry import UnknownEncoderError, build_encoder, get_encoder_factory, list_encoders, register_encoder
from .sam2_fpn import SAM2FpnEncoder, SAM2FpnNeck, load_sam2_neck_weights
from .timm_encoders import HierarchicalEncoder, PlainViTEncoder, create_timm_trunk
from .weights import (
    WEIGHT_FAMILIES,
    CheckpointMismatchError,
    CheckpointReadError,
    WeightFamily,
    load_weights_into,
    read_state_dict,
)

__all__ = [
    "FusionBackbone", "argmax_stride", "build_fusion_backbone", "count_injected_parameters", "read_profile_ef",
    "InjectionOperator", "build_injection", "list_injections", "match_channels", "register_injection",
    "Encoder", "LevelSpec", "IMAGENET_MEAN_255", "IMAGENET_STD_255", "output_hw", "pad_to_multiple",
    "PyramidNeck", "build_neck", "list_necks", "register_neck",
    "UnknownEncoderError", "build_encoder", "get_encoder_factory", "list_encoders", "register_encoder",
    "HierarchicalEncoder", "PlainViTEncoder", "create_timm_trunk",
    "SAM2FpnEncoder", "SAM2FpnNeck", "load_sam2_neck_weights", "FixedSizeInput", "fill_canvas",
    "WEIGHT_FAMILIES", "CheckpointMismatchError", "CheckpointReadError", "WeightFamily", "load_weights_into",
    "read_state_dict",
]
