"""Mask2Former meta-architecture on detectron2's input/output conventions.

Two ways to build it:

* Hydra (what ``tools/train_net.py`` does): ``hydra.utils.instantiate(cfg.model, backbone=..., metadata=...)`` with
  ``configs/model/mask2former.yaml``;
* detectron2's yacs route: ``MaskFormer`` is registered in ``META_ARCH_REGISTRY`` and reads the ``MODEL.MASK_FORMER``
  and ``MODEL.SEM_SEG_HEAD`` nodes added by :func:`add_maskformer_config` (key names as in the original Mask2Former
  code, defaults = the paper's settings, i.e. ``configs/model/mask2former.yaml``)::

      cfg = add_maskformer_config(add_mgfusion_config(get_cfg()))
      cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
      cfg.MODEL.BACKBONE.NAME = "EncoderBackbone"        # MODEL.MGFUSION: an encoder, or a fusion (AUXILIARY)
      model = detectron2.modeling.build_model(cfg)

  ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` are not used (the backbone's own RGB statistics are); inputs are RGB
  (``add_maskformer_config`` sets ``INPUT.FORMAT = "RGB"``); the metadata is that of ``DATASETS.TEST[0]``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.data import Metadata, MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import BitMasks, ImageList
from torch import Tensor, nn

from mgfusion.backbones.distillation import pop_auxiliary_losses

from .criterion import SetCriterion
from .inference import instance_inference, panoptic_inference, semantic_inference
from .matcher import HungarianMatcher, Target
from .pixel_decoder import MSDeformAttnPixelDecoder
from .transformer_decoder import MultiScaleMaskedTransformerDecoder

__all__ = ["MaskFormer", "add_maskformer_config"]

PixelDecoderFactory = Callable[[dict[str, ShapeSpec]], nn.Module]
REQUIRED_FEATURES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


#: ``MODEL.MASK_FORMER`` defaults: the paper's settings (the values of configs/model/mask2former.yaml).
_MASK_FORMER_DEFAULTS = {
    "NUM_OBJECT_QUERIES": 100, "HIDDEN_DIM": 256, "NHEADS": 8, "DIM_FEEDFORWARD": 2048, "DEC_LAYERS": 10,
    "PRE_NORM": False, "DROPOUT": 0.0, "ENFORCE_INPUT_PROJ": False, "SIZE_DIVISIBILITY": 32,
    "CLASS_WEIGHT": 2.0, "MASK_WEIGHT": 5.0, "DICE_WEIGHT": 5.0, "NO_OBJECT_WEIGHT": 0.1, "DEEP_SUPERVISION": True,
    "TRAIN_NUM_POINTS": 12544, "OVERSAMPLE_RATIO": 3.0, "IMPORTANCE_SAMPLE_RATIO": 0.75,
    "TEST": {"SEMANTIC_ON": True, "INSTANCE_ON": False, "PANOPTIC_ON": False, "OBJECT_MASK_THRESHOLD": 0.8,
             "OVERLAP_THRESHOLD": 0.8, "SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": False},
}  # fmt: skip
#: pixel-decoder keys set in ``MODEL.SEM_SEG_HEAD`` (detectron2 already has NUM_CLASSES, CONVS_DIM, NORM, ...).
_PIXEL_DECODER_DEFAULTS = {
    "CONVS_DIM": 256, "MASK_DIM": 256, "NORM": "GN", "IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "COMMON_STRIDE": 4, "TRANSFORMER_ENC_LAYERS": 6,
    "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
    "DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 4, "DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": 8,
    "DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD": 1024, "DEFORM_ATTN_IMPL": "embedding_bag",
}  # fmt: skip


def add_maskformer_config(cfg: CfgNode) -> CfgNode:
    """Add the yacs keys :meth:`MaskFormer.from_config` reads, with the paper's settings as defaults.

    ``MODEL.MASK_FORMER``: NUM_OBJECT_QUERIES, HIDDEN_DIM, NHEADS, DIM_FEEDFORWARD, DEC_LAYERS (counting the
    prediction from the initial queries, as Mask2Former's: 10 = 9 decoder layers), PRE_NORM, DROPOUT,
    ENFORCE_INPUT_PROJ, SIZE_DIVISIBILITY, loss weights CLASS_WEIGHT / MASK_WEIGHT / DICE_WEIGHT / NO_OBJECT_WEIGHT,
    DEEP_SUPERVISION, point sampling TRAIN_NUM_POINTS / OVERSAMPLE_RATIO / IMPORTANCE_SAMPLE_RATIO, and
    ``TEST.{SEMANTIC_ON, INSTANCE_ON, PANOPTIC_ON, OBJECT_MASK_THRESHOLD, OVERLAP_THRESHOLD,
    SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE}``. ``MODEL.SEM_SEG_HEAD`` (the pixel decoder): NUM_CLASSES, CONVS_DIM,
    MASK_DIM, NORM, IN_FEATURES, COMMON_STRIDE, TRANSFORMER_ENC_LAYERS, DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
    DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS, DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS,
    DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD, DEFORM_ATTN_IMPL. Instances kept per image:
    ``TEST.DETECTIONS_PER_IMAGE``.
    """
    cfg.MODEL.MASK_FORMER = CfgNode(copy.deepcopy(_MASK_FORMER_DEFAULTS))
    cfg.MODEL.SEM_SEG_HEAD.update(copy.deepcopy(_PIXEL_DECODER_DEFAULTS))
    cfg.INPUT.FORMAT = "RGB"
    return cfg


def _check_backbone(backbone: Backbone) -> None:
    shapes = backbone.output_shape()
    wrong = {
        name: (shapes[name].stride if name in shapes else None)
        for name, stride in REQUIRED_FEATURES.items()
        if name not in shapes or shapes[name].stride != stride
    }
    if wrong:
        raise ValueError(
            f"MaskFormer needs backbone features {REQUIRED_FEATURES} (name: stride); "
            f"got {{name: stride}} = { {k: v.stride for k, v in shapes.items()} }, wrong or missing: {sorted(wrong)}"
        )


def _thing_flags(metadata: Metadata | None, num_classes: int, needed: bool) -> Tensor:
    """bool (K,) True for thing classes, from ``metadata.thing_dataset_id_to_contiguous_id``."""
    mapping = getattr(metadata, "thing_dataset_id_to_contiguous_id", None) if metadata is not None else None
    if mapping is None:
        if needed:
            raise ValueError(
                "instance and panoptic inference need metadata with thing_dataset_id_to_contiguous_id "
                "(which contiguous class ids are things); pass metadata= or set instance_on/panoptic_on false"
            )
        return torch.ones(num_classes, dtype=torch.bool)
    flags = torch.zeros(num_classes, dtype=torch.bool)
    ids = list(mapping.values())
    bad = [i for i in ids if not 0 <= i < num_classes]
    if bad:
        raise ValueError(f"thing contiguous ids {bad} are outside [0, num_classes={num_classes})")
    flags[ids] = True
    return flags


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask2Former: backbone -> pixel decoder -> masked-attention transformer decoder -> set criterion / inference.

    Inputs follow detectron2: a list of dicts with "image" (uint8 (3, H, W) RGB), optional "height"/"width"
    (output size, default the image size) and, in training, "instances" with ``gt_classes`` (int64 (N,)) and
    ``gt_masks`` ((N, H, W) bool/uint8 tensor or ``BitMasks``). Training returns the criterion's weighted loss
    dict, plus any losses the backbone computed (``loss_distill_s16``); eval returns one dict per image with
    "sem_seg" (K, H, W), "instances" and/or "panoptic_seg"
    ((H, W) int32, segments_info) depending on the ``*_on`` flags.

    Args:
        backbone: detectron2 Backbone with res2..res5 at strides 4/8/16/32 (and optionally ``pixel_mean``,
            ``pixel_std`` (RGB, 0-255) and ``size_divisibility``).
        num_classes: K foreground classes.
        metadata: dataset Metadata; ``thing_dataset_id_to_contiguous_id`` is needed for instance/panoptic.
        pixel_decoder: callable(input_shape) -> pixel decoder (a Hydra ``_partial_`` node); default
            :class:`MSDeformAttnPixelDecoder` with Mask2Former's settings.
        transformer_decoder: callable(in_channels=, mask_dim=, num_classes=, num_queries=) -> decoder; default
            :class:`MultiScaleMaskedTransformerDecoder`.
        criterion: callable(num_classes=) -> criterion; default :class:`SetCriterion`.
        num_queries: object queries (100; 200 for COCO).
        semantic_on, instance_on, panoptic_on: which outputs inference produces.
        object_mask_threshold, overlap_threshold: panoptic thresholds.
        test_topk_per_image: instances kept per image.
        size_divisibility: batch padding multiple; the max with the backbone's is used.
        pixel_mean, pixel_std: RGB normalization (0-255 units); default the backbone's, else ImageNet's.
        sem_seg_postprocess_before_inference: resize masks to the output size before semantic inference
            (always the case when instance or panoptic outputs are on).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        num_classes: int,
        metadata: Metadata | None = None,
        pixel_decoder: PixelDecoderFactory | None = None,
        transformer_decoder: Callable[..., nn.Module] | None = None,
        criterion: Callable[..., nn.Module] | None = None,
        num_queries: int = 100,
        semantic_on: bool = True,
        instance_on: bool = False,
        panoptic_on: bool = False,
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
        test_topk_per_image: int = 100,
        size_divisibility: int = 32,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
        sem_seg_postprocess_before_inference: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not (semantic_on or instance_on or panoptic_on):
            raise ValueError("at least one of semantic_on, instance_on, panoptic_on must be true")
        _check_backbone(backbone)
        self.backbone = backbone
        self.num_classes = num_classes
        self.metadata = metadata
        self.pixel_decoder = (pixel_decoder or MSDeformAttnPixelDecoder)(backbone.output_shape())
        self.transformer_decoder = (transformer_decoder or MultiScaleMaskedTransformerDecoder)(
            in_channels=self.pixel_decoder.conv_dim,
            mask_dim=self.pixel_decoder.mask_dim,
            num_classes=num_classes,
            num_queries=num_queries,
        )
        self.criterion = (criterion or SetCriterion)(num_classes=num_classes)
        self.num_queries = num_queries
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.test_topk_per_image = test_topk_per_image
        self.size_divisibility = max(int(size_divisibility), int(getattr(backbone, "size_divisibility", 0) or 0))
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference or instance_on or panoptic_on
        self.register_buffer(
            "is_thing", _thing_flags(metadata, num_classes, needed=instance_on or panoptic_on), persistent=False
        )
        mean = pixel_mean if pixel_mean is not None else getattr(backbone, "pixel_mean", (123.675, 116.28, 103.53))
        std = pixel_std if pixel_std is not None else getattr(backbone, "pixel_std", (58.395, 57.12, 57.375))
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"pixel_mean and pixel_std need 3 (RGB) values, got {list(mean)} and {list(std)}")
        self.register_buffer("pixel_mean", torch.tensor([float(v) for v in mean]).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor([float(v) for v in std]).view(-1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        """Keyword arguments from a yacs config prepared with :func:`add_maskformer_config` (detectron2's
        ``build_model`` route); the backbone comes from ``MODEL.BACKBONE`` (e.g. ``EncoderBackbone``)."""
        if "MASK_FORMER" not in cfg.MODEL:
            raise KeyError("cfg.MODEL.MASK_FORMER is missing: call mgfusion.modeling.add_maskformer_config(cfg) "
                           "before building MaskFormer from a yacs config")
        mf, head = cfg.MODEL.MASK_FORMER, cfg.MODEL.SEM_SEG_HEAD
        if mf.DEC_LAYERS < 2:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS={mf.DEC_LAYERS} must be >= 2 (it counts the prediction "
                             "from the initial queries)")
        pixel_decoder = functools.partial(
            MSDeformAttnPixelDecoder, conv_dim=head.CONVS_DIM, mask_dim=head.MASK_DIM, norm=head.NORM,
            num_heads=head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS,
            num_points=head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            num_layers=head.TRANSFORMER_ENC_LAYERS, dim_feedforward=head.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD,
            dropout=mf.DROPOUT, in_features=list(head.IN_FEATURES),
            transformer_in_features=list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            common_stride=head.COMMON_STRIDE, deform_attn_impl=head.DEFORM_ATTN_IMPL,
        )  # fmt: skip
        transformer_decoder = functools.partial(
            MultiScaleMaskedTransformerDecoder, hidden_dim=mf.HIDDEN_DIM, num_heads=mf.NHEADS,
            dim_feedforward=mf.DIM_FEEDFORWARD, num_layers=mf.DEC_LAYERS - 1, pre_norm=mf.PRE_NORM,
            dropout=mf.DROPOUT, enforce_input_project=mf.ENFORCE_INPUT_PROJ,
        )  # fmt: skip
        matcher = HungarianMatcher(class_weight=mf.CLASS_WEIGHT, mask_weight=mf.MASK_WEIGHT,
                                   dice_weight=mf.DICE_WEIGHT, num_points=mf.TRAIN_NUM_POINTS)
        criterion = functools.partial(
            SetCriterion, matcher=matcher, class_weight=mf.CLASS_WEIGHT, mask_weight=mf.MASK_WEIGHT,
            dice_weight=mf.DICE_WEIGHT, no_object_weight=mf.NO_OBJECT_WEIGHT, num_points=mf.TRAIN_NUM_POINTS,
            oversample_ratio=mf.OVERSAMPLE_RATIO, importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
            deep_supervision=mf.DEEP_SUPERVISION,
        )  # fmt: skip
        return {
            "backbone": build_backbone(cfg),
            "num_classes": head.NUM_CLASSES,
            "metadata": MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None,
            "pixel_decoder": pixel_decoder,
            "transformer_decoder": transformer_decoder,
            "criterion": criterion,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "semantic_on": mf.TEST.SEMANTIC_ON,
            "instance_on": mf.TEST.INSTANCE_ON,
            "panoptic_on": mf.TEST.PANOPTIC_ON,
            "object_mask_threshold": mf.TEST.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": mf.TEST.OVERLAP_THRESHOLD,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: list[dict]) -> ImageList:
        """Normalize uint8 RGB images and pad them into one (B, 3, H_pad, W_pad) float batch."""
        images = []
        for x in batched_inputs:
            image = x["image"]
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f'"image" must be a (3, H, W) RGB tensor, got shape {tuple(image.shape)}')
            images.append((image.to(self.device, non_blocking=True).float() - self.pixel_mean) / self.pixel_std)
        return ImageList.from_tensors(images, self.size_divisibility)

    def forward(self, batched_inputs: list[dict]) -> dict[str, Tensor] | list[dict]:
        images = self.preprocess_image(batched_inputs)
        outputs = self.forward_head(images.tensor)
        # losses the backbone computed itself (feature distillation, mgfusion.backbones.distillation)
        backbone_losses = pop_auxiliary_losses(self.backbone) if self.training else {}
        if self.training:
            if any("instances" not in x for x in batched_inputs):
                raise ValueError('training inputs need "instances" with gt_classes and gt_masks')
            targets = self.prepare_targets([x["instances"] for x in batched_inputs], images)
            return {**self.criterion(outputs, targets), **backbone_losses}
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.postprocess(outputs, batched_inputs, images)

    def forward_head(self, images: Tensor) -> dict:
        """Raw query predictions of normalized, padded images (B, 3, H, W) (H, W multiples of ``size_divisibility``):
        ``pred_logits`` (B, Q, K+1) class logits (last = no object), ``pred_masks`` (B, Q, H/4, W/4) mask logits and,
        in training, ``aux_outputs`` (the same per intermediate decoder layer)."""
        features = self.backbone(images)
        mask_features, multi_scale_features = self.pixel_decoder(features)
        return self.transformer_decoder(multi_scale_features, mask_features)

    def semantic_scores(self, images: Sequence[Tensor]) -> list[Tensor]:
        """Semantic scores (K, h, w) of each RGB image (3, h, w) (0-255, uint8 or float) at its own size.

        The scores are what semantic inference takes the argmax of (:func:`semantic_inference` on the query
        predictions cropped to the image, no resize). Sliding-window and test-time-augmented inference
        (:mod:`mgfusion.inference.test_time`) average them over windows, scales and flips.
        """
        batch = self.preprocess_image([{"image": image} for image in images])
        outputs = self.forward_head(batch.tensor)
        padded_size = batch.tensor.shape[-2:]
        scores = []
        with torch.autocast(device_type=self.device.type, enabled=False):
            for mask_cls, mask_pred, (h, w) in zip(outputs["pred_logits"], outputs["pred_masks"], batch.image_sizes):
                mask_pred = _resize(mask_pred.float()[None], padded_size)[0][:, :h, :w]
                scores.append(semantic_inference(mask_cls.float(), mask_pred))
        return scores

    def prepare_targets(self, instances: list, images: ImageList) -> list[Target]:
        """Per image {"labels": (T,), "masks": bool (T, H_pad, W_pad)} on the model's device."""
        height, width = images.tensor.shape[-2:]
        targets = []
        for inst, image_size in zip(instances, images.image_sizes):
            gt_masks = inst.gt_masks
            masks = gt_masks.tensor if isinstance(gt_masks, BitMasks) else torch.as_tensor(gt_masks)
            if masks.dim() != 3 or tuple(masks.shape[1:]) != tuple(image_size):
                raise ValueError(
                    f"gt_masks must be (N, H, W) at the image size {tuple(image_size)}, got {tuple(masks.shape)}"
                )
            masks = masks.to(self.device, non_blocking=True).bool()
            padded = masks.new_zeros((masks.shape[0], height, width))
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            targets.append({"labels": inst.gt_classes.to(self.device, non_blocking=True), "masks": padded})
        return targets

    def postprocess(self, outputs: dict, batched_inputs: list[dict], images: ImageList) -> list[dict]:
        """detectron2 output dicts per image, at each input's "height" x "width"."""
        results = []
        padded_size = images.tensor.shape[-2:]
        for i, (mask_cls, mask_pred) in enumerate(zip(outputs["pred_logits"], outputs["pred_masks"])):
            image_size = images.image_sizes[i]
            out_h = int(batched_inputs[i].get("height", image_size[0]))
            out_w = int(batched_inputs[i].get("width", image_size[1]))
            mask_cls = mask_cls.float()
            mask_pred = _resize(mask_pred.float()[None], padded_size)[0]
            if self.sem_seg_postprocess_before_inference:
                mask_pred = _crop_and_resize(mask_pred, image_size, (out_h, out_w))
            result: dict = {}
            if self.semantic_on:
                sem_seg = semantic_inference(mask_cls, mask_pred)
                if not self.sem_seg_postprocess_before_inference:
                    sem_seg = _crop_and_resize(sem_seg, image_size, (out_h, out_w))
                result["sem_seg"] = sem_seg
            if self.panoptic_on:
                result["panoptic_seg"] = panoptic_inference(
                    mask_cls,
                    mask_pred,
                    is_thing=self.is_thing,
                    object_mask_threshold=self.object_mask_threshold,
                    overlap_threshold=self.overlap_threshold,
                )
            if self.instance_on:
                result["instances"] = instance_inference(
                    mask_cls,
                    mask_pred,
                    topk=self.test_topk_per_image,
                    is_thing=self.is_thing if self.panoptic_on else None,
                )
            results.append(result)
        return results


def _resize(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of (N, C, h, w) maps to ``size`` (no-op when equal)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def _crop_and_resize(maps: Tensor, image_size: Sequence[int], output_size: Sequence[int]) -> Tensor:
    """Drop the batch padding of (C, H_pad, W_pad) maps and resize them to the output size (C, H_out, W_out)."""
    cropped = maps[:, : image_size[0], : image_size[1]]
    return _resize(cropped[None], output_size)[0]
