"""Prediction files: overlay PNG, semantic label PNG, COCO-style instance JSON, COCO panoptic PNG + segments JSON.

Every file is written atomically (temporary file + rename), so a killed run never leaves a truncated output.

* semantic ``<name>.png``: class ids (contiguous, as the model predicts them); 8-bit with 255 = no class when the
  model has at most 255 classes, else 16-bit with 65535 = no class.
* instances ``<name>.json``: ``{"file_name", "height", "width", "annotations": [...]}``; each annotation is a COCO
  result (``category_id`` = dataset category id, ``segmentation`` = RLE with ``counts`` as a string, ``bbox`` =
  [x, y, w, h], ``score``) plus ``category_name`` and ``class_id`` (contiguous id), sorted by decreasing score.
* panoptic ``<name>.png`` (segment id = R + 256 G + 256² B) + ``<name>.json`` = the image's COCO panoptic
  annotation (``file_name``, ``segments_info`` with ``id``, ``category_id`` (dataset id), ``isthing``, ``iscrowd``,
  ``area``, ``bbox``, plus ``category_name``); :func:`write_panoptic_index` collects them into one COCO panoptic JSON.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

from mgfusion.data.labelmaps import id_to_rgb
from mgfusion.modeling.inference import masks_to_boxes
from mgfusion.utils.io import atomic_write_bytes, atomic_write_text
from mgfusion.visualization import draw_prediction

from .classes import ClassTable
from .predictor import IGNORE_LABEL, Prediction

__all__ = [
    "instances_to_coco",
    "overlay_image",
    "panoptic_to_coco",
    "semantic_png_array",
    "write_instances_json",
    "write_overlay_png",
    "write_panoptic",
    "write_panoptic_index",
    "write_png",
    "write_semantic_png",
]


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Atomically write an (H, W) or (H, W, 3) uint8/uint16 array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def semantic_png_array(pred: Prediction, num_classes: int) -> np.ndarray:
    """(H, W) uint8 (<= 255 classes; 255 = no class) or uint16 (65535 = no class) label array."""
    if num_classes <= 255:
        return pred.semantic_labels(ignore_label=IGNORE_LABEL).astype(np.uint8)
    return pred.semantic_labels(ignore_label=65535).astype(np.uint16)


def write_semantic_png(path: str | os.PathLike, pred: Prediction, num_classes: int) -> None:
    write_png(path, semantic_png_array(pred, num_classes))


def _xywh(box: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def instances_to_coco(pred: Prediction, classes: ClassTable) -> dict[str, Any]:
    """The instance JSON document of one prediction (see the module docstring)."""
    if pred.instances is None:
        raise ValueError(f"{pred.source}: the model predicts no instances")
    inst = pred.instances
    masks = inst.pred_masks.numpy().astype(np.uint8)
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if len(inst) else []
    annotations = []
    for k in range(len(inst)):
        cls = int(inst.pred_classes[k])
        rle = rles[k]
        annotations.append({
            "category_id": classes.dataset_ids[cls], "category_name": classes.names[cls], "class_id": cls,
            "score": float(inst.scores[k]), "bbox": _xywh(inst.pred_boxes.tensor[k].tolist()),
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        })  # fmt: skip
    return {"file_name": pred.source, "height": pred.height, "width": pred.width, "annotations": annotations}


def write_instances_json(path: str | os.PathLike, pred: Prediction, classes: ClassTable) -> None:
    atomic_write_text(path, json.dumps(instances_to_coco(pred, classes)) + "\n")


def panoptic_to_coco(pred: Prediction, classes: ClassTable, png_name: str) -> dict[str, Any]:
    """The COCO panoptic annotation of one prediction (``png_name`` = its PNG's file name)."""
    if pred.panoptic_seg is None:
        raise ValueError(f"{pred.source}: the model predicts no panoptic segmentation")
    seg = pred.panoptic_seg.long()
    info = pred.segments_info or []
    ids = torch.tensor([s["id"] for s in info], dtype=torch.long)
    masks = seg[None] == ids[:, None, None] if len(info) else torch.zeros((0, *seg.shape), dtype=torch.bool)
    areas = masks.flatten(1).sum(1).tolist()
    boxes = masks_to_boxes(masks).tolist()
    segments = []
    for s, area, box in zip(info, areas, boxes):
        cls = int(s["category_id"])
        segments.append({"id": int(s["id"]), "category_id": classes.dataset_ids[cls],
                         "category_name": classes.names[cls], "isthing": int(bool(s["isthing"])), "iscrowd": 0,
                         "area": int(area), "bbox": _xywh(box)})
    return {"image_id": os.path.splitext(png_name)[0], "file_name": png_name, "image_file": pred.source,
            "height": pred.height, "width": pred.width, "segments_info": segments}


def write_panoptic(png_path: str | os.PathLike, json_path: str | os.PathLike, pred: Prediction,
                   classes: ClassTable) -> None:
    """The panoptic PNG and its annotation JSON (PNG first, so a finished JSON implies its PNG)."""
    write_png(png_path, id_to_rgb(pred.panoptic_seg.numpy()))
    annotation = panoptic_to_coco(pred, classes, os.path.basename(os.fspath(png_path)))
    atomic_write_text(json_path, json.dumps(annotation) + "\n")


def write_panoptic_index(path: str | os.PathLike, annotations: Sequence[dict[str, Any]],
                         classes: ClassTable) -> None:
    """One COCO panoptic JSON (``images``, ``annotations``, ``categories``) over per-image annotations."""
    images = [{"id": a["image_id"], "file_name": os.path.basename(a["image_file"]), "height": a["height"],
               "width": a["width"]} for a in annotations]
    payload = {"images": images, "annotations": list(annotations), "categories": classes.categories()}
    atomic_write_text(path, json.dumps(payload) + "\n")


def overlay_image(image_rgb: np.ndarray, pred: Prediction, classes: ClassTable, *, task: str | None = None,
                  score_threshold: float = 0.0) -> np.ndarray:
    """``pred`` drawn on ``image_rgb`` (H, W, 3) uint8 with detectron2's Visualizer (the dataset's class names and
    colours); ``task`` None = the richest the prediction has. Returns (H, W, 3) uint8 RGB."""
    return draw_prediction(image_rgb, pred.to_detectron2(), classes.visual_metadata(), task=task,
                           score_threshold=score_threshold)


def write_overlay_png(path: str | os.PathLike, image_rgb: np.ndarray, pred: Prediction, classes: ClassTable, *,
                      task: str | None = None, score_threshold: float = 0.0) -> None:
    """Write :func:`overlay_image` as PNG."""
    write_png(path, overlay_image(image_rgb, pred, classes, task=task, score_threshold=score_threshold))
