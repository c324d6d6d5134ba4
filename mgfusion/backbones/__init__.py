"""Encoder registry, timm-based encoders, pyramid necks and the master-auxiliary fusion backbone.

Depends on torch and timm only (the detectron2 adapter lives in :mod:`mgfusion.modeling.backbone`).

>>> from mgfusion.backbones import build_encoder, list_encoders
>>> enc = build_encoder("sam2_hiera_micro")
>>> feats = enc(torch.randn(1, 3, 100, 132))          # {4: (1,32,25,33), 8: ..., 16: ..., 32: (1,256,4,5)}
"""

from . import zoo as _zoo  # noqa: F401  (registers the built-in encoders)
from .base import (
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    Encoder,
    LevelSpec,
    output_hw,
    pad_to_multiple,
)
from .distillation import (
    DistillationSettings,
    FeatureDistillation,
    pop_auxiliary_losses,
)
from .fixed_input import FixedSizeInput, fill_canvas
from .fusion import (
    INFERENCE_MODES,
    FusionBackbone,
    argmax_stride,
    build_fusion_backbone,
    count_injected_parameters,
    read_profile_ef,
)
from .injection import (
    InjectionOperator,
    build_injection,
    list_injections,
    match_channels,
    register_injection,
)
from .necks import PyramidNeck, build_neck, list_necks, register_neck
from .registry import (
    UnknownEncoderError,
    build_encoder,
    get_encoder_factory,
    list_encoders,
    register_encoder,
)
from .sam2_fpn import SAM2FpnEncoder, SAM2FpnNeck, load_sam2_neck_weights
from .timm_encoders import HierarchicalEncoder, PlainViTEncoder, create_timm_trunk
from .tuning import (
    TUNING_MODES,
    LoraSettings,
    TuningMismatchError,
    TuningSettings,
    layer_decay_scales,
    layer_ids,
    merge_lora,
    tuning_record,
)
from .weights import (
    WEIGHT_FAMILIES,
    CheckpointMismatchError,
    CheckpointReadError,
    WeightFamily,
    load_weights_into,
    read_state_dict,
)

__all__ = [
    "IMAGENET_MEAN_255",
    "IMAGENET_STD_255",
    "INFERENCE_MODES",
    "TUNING_MODES",
    "WEIGHT_FAMILIES",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "DistillationSettings",
    "Encoder",
    "FeatureDistillation",
    "FixedSizeInput",
    "FusionBackbone",
    "HierarchicalEncoder",
    "InjectionOperator",
    "LevelSpec",
    "LoraSettings",
    "PlainViTEncoder",
    "PyramidNeck",
    "SAM2FpnEncoder",
    "SAM2FpnNeck",
    "TuningMismatchError",
    "TuningSettings",
    "UnknownEncoderError",
    "WeightFamily",
    "argmax_stride",
    "build_encoder",
    "build_fusion_backbone",
    "build_injection",
    "build_neck",
    "count_injected_parameters",
    "create_timm_trunk",
    "fill_canvas",
    "get_encoder_factory",
    "layer_decay_scales",
    "layer_ids",
    "list_encoders",
    "list_injections",
    "list_necks",
    "load_sam2_neck_weights",
    "load_weights_into",
    "match_channels",
    "merge_lora",
    "output_hw",
    "pad_to_multiple",
    "pop_auxiliary_losses",
    "read_profile_ef",
    "read_state_dict",
    "register_encoder",
    "register_injection",
    "register_neck",
    "tuning_record",
]
