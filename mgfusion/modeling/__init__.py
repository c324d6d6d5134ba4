"""Mask2Former on detectron2's registries: meta-architecture, pixel decoder (multi-scale deformable attention),
masked-attention transformer decoder, Hungarian matcher, set criterion and semantic/instance/panoptic inference.

``EncoderBackbone`` adapts any mgfusion encoder (or fusion backbone) to a detectron2 ``Backbone`` (``BACKBONE_REGISTRY``).
``MaskFormer`` is registered in detectron2's ``META_ARCH_REGISTRY``; build it from Hydra with
``hydra.utils.instantiate(cfg.model, backbone=..., metadata=...)`` (configs/model/mask2former.yaml).
"""

from .backbone import EncoderBackbone, add_mgfusion_config
from .criterion import SetCriterion
from .deform_attn import (
    DEFORM_ATTN_IMPLS,
    MSDeformAttn,
    ms_deform_attn,
    ms_deform_attn_embedding_bag,
    ms_deform_attn_grid_sample,
)
from .inference import instance_inference, masks_to_boxes, panoptic_inference, semantic_inference
from .matcher import HungarianMatcher
from .meta_arch import MaskFormer
from .pixel_decoder import MSDeformAttnPixelDecoder
from .point_sampling import point_sample, sample_uncertain_points
from .position_encoding import sine_position_embedding
from .transformer_decoder import MultiScaleMaskedTransformerDecoder

__all__ = [
    "EncoderBackbone",
    "add_mgfusion_config",
    "DEFORM_ATTN_IMPLS",
    "HungarianMatcher",
    "MSDeformAttn",
    "MSDeformAttnPixelDecoder",
    "MaskFormer",
    "MultiScaleMaskedTransformerDecoder",
    "SetCriterion",
    "instance_inference",
    "masks_to_boxes",
    "ms_deform_attn",
    "ms_deform_attn_embedding_bag",
    "ms_deform_attn_grid_sample",
    "panoptic_inference",
    "point_sample",
    "sample_uncertain_points",
    "semantic_inference",
    "sine_position_embedding",
]
