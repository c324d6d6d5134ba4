"""Build Mask2Former training targets (``Instances`` with ``gt_classes`` and ``gt_masks``) from labels.

All functions work at the augmented image size and return:
    ``gt_classes``: int64 tensor (N,), contiguous class ids;
    ``gt_masks``: bool tensor (N, H, W), no empty masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Instances

from .labelmaps import lookup_segment_labels

__all__ = [
    "instance_targets",
    "mask_instances",
    "panoptic_targets",
    "semantic_targets",
    "transform_label_map",
]


def transform_label_map(transforms: T.TransformList, labels: np.ndarray) -> np.ndarray:
    """Apply geometric ``transforms`` to an integer label map with nearest sampling; returns (H', W') int64.

    uint8 maps go through PIL; other integer maps through float64 (exact below 2^53), because torch has no
    nearest interpolation for integer tensors.
    """
    if labels.dtype == np.uint8:
        return transforms.apply_segmentation(labels).astype(np.int64)
    return transforms.apply_segmentation(labels.astype(np.float64)).astype(np.int64)


def mask_instances(
    classes: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray, image_hw: tuple[int, int]
) -> Instances:
    """``Instances`` of the non-empty ``masks`` (N, H, W) bool with ``classes`` (N,) int64 (numpy or torch)."""
    if masks.shape[0] > 0:
        keep = masks.reshape(masks.shape[0], -1).any(1)
        classes, masks = classes[keep], masks[keep]
    instances = Instances(image_hw)
    instances.gt_classes = torch.as_tensor(classes, dtype=torch.int64)
    instances.gt_masks = torch.as_tensor(masks, dtype=torch.bool)
    return instances


def _empty(image_hw: tuple[int, int]) -> Instances:
    return mask_instances(torch.zeros(0, dtype=torch.int64), torch.zeros((0, *image_hw), dtype=torch.bool), image_hw)


def _polygons_to_rle(annotation: dict, original_hw: tuple[int, int]) -> dict:
    """The annotation with polygon segmentation replaced by an RLE at the original image size."""
    segm = annotation.get("segmentation")
    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects(segm, *original_hw))
        annotation = {**annotation, "segmentation": rle}
    return annotation


def instance_targets(
    annotations: Sequence[dict],
    transforms: T.TransformList,
    original_hw: tuple[int, int],
    image_hw: tuple[int, int],
) -> Instances:
    """Targets from detectron2 instance annotations (polygons or RLE); crowd annotations are dropped.

    Polygons are rasterized at the original size first, so every mask is transformed as a binary map (exact, and
    cropping polygons would need ``shapely``); geometric padding must fill 0.
    """
    annos = [
        utils.transform_instance_annotations(_polygons_to_rle(obj, original_hw), transforms, image_hw)
        for obj in annotations
        if obj.get("iscrowd", 0) == 0
    ]
    if not annos:
        return _empty(image_hw)
    instances = utils.annotations_to_instances(annos, image_hw, mask_format="bitmask")
    return mask_instances(instances.gt_classes, instances.gt_masks.tensor, image_hw)


def semantic_targets(sem_seg: np.ndarray, ignore_label: int) -> Instances:
    """One mask per class present in ``sem_seg`` (H, W) int64; ``ignore_label`` pixels belong to none."""
    valid = sem_seg[sem_seg != ignore_label]
    if valid.size and valid.min() < 0:
        raise ValueError(f"semantic labels must be >= 0 (or the ignore label {ignore_label}), got {valid.min()}")
    classes = np.flatnonzero(np.bincount(valid)) if valid.size else np.zeros(0, dtype=np.int64)
    return mask_instances(classes, sem_seg[None] == classes[:, None, None], tuple(sem_seg.shape))


def panoptic_targets(
    pan_ids: np.ndarray, segments_info: Sequence[dict], ignore_label: int
) -> tuple[np.ndarray, Instances]:
    """Semantic map and per-segment targets from a panoptic id map.

    Args:
        pan_ids: (H, W) int64 segment ids (0 or unknown ids = VOID).
        segments_info: ``[{id, category_id (contiguous), iscrowd}, ...]``.
    Returns:
        sem_seg: (H, W) int64 class of every pixel's segment (crowd segments included), ``ignore_label`` on VOID.
        instances: one mask per non-crowd segment present in the map (crowd regions belong to no mask).
    """
    ids = np.asarray([s["id"] for s in segments_info], dtype=np.int64)
    categories = np.asarray([s["category_id"] for s in segments_info], dtype=np.int64)
    crowd = np.asarray([bool(s.get("iscrowd", 0)) for s in segments_info], dtype=bool)
    sem_seg = lookup_segment_labels(pan_ids, ids, categories, fill=ignore_label)
    image_hw = tuple(pan_ids.shape)
    if not (~crowd).any():
        return sem_seg, _empty(image_hw)
    masks = pan_ids[None] == ids[~crowd][:, None, None]
    return sem_seg, mask_instances(categories[~crowd], masks, image_hw)
