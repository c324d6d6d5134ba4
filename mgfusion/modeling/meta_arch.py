"""Mask2Former meta-architecture on detectron2's input/output conventions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from detectron2.data import Metadata
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.structures import BitMasks, ImageList
from torch import Tensor, nn

from mgfusion.backbones.distillation import pop_auxiliary_losses

from .criterion import SetCriterion
from .inference import instance_inference, panoptic_inference, semantic_inference
from .matcher import Target
from .pixel_decoder import MSDeformAttnPixelDecoder
from .transformer_decoder import MultiScaleMaskedTransformerDecoder

__all__ = ["MaskFormer"]

PixelDecoderFactory = Callable[[dict[str, ShapeSpec]], nn.Module]
REQUIRED_FEATURES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


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
        features = self.backbone(images.tensor)
        # losses the backbone computed itself (feature distillation, mgfusion.backbones.distillation)
        backbone_losses = pop_auxiliary_losses(self.backbone) if self.training else {}
        mask_features, multi_scale_features = self.pixel_decoder(features)
        outputs = self.transformer_decoder(multi_scale_features, mask_features)
        if self.training:
            if any("instances" not in x for x in batched_inputs):
                raise ValueError('training inputs need "instances" with gt_classes and gt_masks')
            targets = self.prepare_targets([x["instances"] for x in batched_inputs], images)
            return {**self.criterion(outputs, targets), **backbone_losses}
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.postprocess(outputs, batched_inputs, images)

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
