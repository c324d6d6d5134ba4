"""Ground-truth "predictions" in the model output format the evaluators consume.

Feeding them to :func:`~mgfusion.evaluation.build_evaluator`'s evaluators must give perfect scores; this checks
a dataset registration and evaluation pipeline end to end, and documents the output format:

* ``"instances"``: ``Instances`` at the original size with ``pred_masks`` bool (N, H, W), ``pred_classes`` int64
  (contiguous ids of the dataset metadata), ``scores`` float32, ``pred_boxes``.
* ``"sem_seg"``: float32 (C, H, W) class scores, C = ``len(metadata.stuff_classes)``.
* ``"panoptic_seg"``: ``(ids int32 (H, W), [{"id", "category_id" (contiguous), "isthing"}, ...])``, 0 = VOID.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import detection_utils as utils
from detectron2.structures import BitMasks, Instances

from mgfusion.data.labelmaps import lookup_segment_labels, read_label_png, rgb_to_id

__all__ = ["ground_truth_outputs"]


def _image_hw(dataset_dict: dict[str, Any]) -> tuple[int, int]:
    if "height" in dataset_dict and "width" in dataset_dict:
        return int(dataset_dict["height"]), int(dataset_dict["width"])
    with open(dataset_dict["file_name"], "rb") as f:
        from PIL import Image

        width, height = Image.open(f).size
    return height, width


def _panoptic(dataset_dict: dict[str, Any]) -> tuple[np.ndarray, list[dict]]:
    ids = rgb_to_id(read_label_png(dataset_dict["pan_seg_file_name"]))
    segments = [s for s in dataset_dict["segments_info"] if not s.get("iscrowd", 0)]
    keep = np.asarray([s["id"] for s in segments], dtype=np.int64)
    ids = np.where(np.isin(ids, keep), ids, 0)
    return ids, segments


def _instances(dataset_dict: dict[str, Any], metadata: Any, image_hw: tuple[int, int]) -> Instances:
    if "annotations" in dataset_dict:
        annos = [a for a in dataset_dict["annotations"] if not a.get("iscrowd", 0)]
        gt = utils.annotations_to_instances(annos, image_hw, mask_format="bitmask")
        masks, classes = gt.gt_masks.tensor, gt.gt_classes
    else:
        ids, segments = _panoptic(dataset_dict)
        things = set(metadata.thing_dataset_id_to_contiguous_id.values())
        segments = [s for s in segments if s["category_id"] in things]
        masks = (
            torch.from_numpy(ids)[None] == torch.tensor([s["id"] for s in segments], dtype=torch.int64)[:, None, None]
        )
        classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
    instances = Instances(image_hw)
    instances.pred_masks = masks.to(torch.bool)
    instances.pred_classes = classes
    instances.scores = torch.ones(len(classes), dtype=torch.float32)
    instances.pred_boxes = BitMasks(instances.pred_masks).get_bounding_boxes()
    return instances


def _semantic_scores(dataset_dict: dict[str, Any], metadata: Any) -> torch.Tensor:
    ignore = metadata.get("ignore_label", 255)
    if "sem_seg_file_name" in dataset_dict:
        labels = read_label_png(dataset_dict["sem_seg_file_name"]).astype(np.int64)
    else:
        ids, segments = _panoptic(dataset_dict)
        labels = lookup_segment_labels(ids, [s["id"] for s in segments], [s["category_id"] for s in segments], ignore)
    labels = torch.from_numpy(np.where(labels == ignore, 0, labels))
    return F.one_hot(labels, len(metadata.stuff_classes)).permute(2, 0, 1).to(torch.float32)


def ground_truth_outputs(dataset_dict: dict[str, Any], metadata: Any, tasks: Sequence[str]) -> dict[str, Any]:
    """Model-style outputs for ``tasks`` (``instance``/``semantic``/``panoptic``) copied from the ground truth."""
    outputs: dict[str, Any] = {}
    if "instance" in tasks:
        outputs["instances"] = _instances(dataset_dict, metadata, _image_hw(dataset_dict))
    if "semantic" in tasks:
        outputs["sem_seg"] = _semantic_scores(dataset_dict, metadata)
    if "panoptic" in tasks:
        ids, segments = _panoptic(dataset_dict)
        info = [
            {"id": int(s["id"]), "category_id": int(s["category_id"]), "isthing": bool(s["isthing"])} for s in segments
        ]
        outputs["panoptic_seg"] = (torch.from_numpy(ids.astype(np.int32)), info)
    return outputs
