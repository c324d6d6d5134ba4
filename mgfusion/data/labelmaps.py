"""Small vectorized helpers for label maps and masks: panoptic RGB <-> id, segment-id -> label lookup, PNG reading
and writing, and a binary mask's COCO box and RLE (the one implementation used by the loaders, the preparation
code, the synthetic generator and the test trees)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from mgfusion.utils.io import atomic_open

__all__ = [
    "id_to_rgb",
    "lookup_segment_labels",
    "mask_bbox_xywh",
    "mask_to_rle",
    "read_label_png",
    "rgb_to_id",
    "write_label_png",
]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 COCO-panoptic PNG -> (H, W) int64 segment ids ``R + 256 G + 256^2 B``."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer segment ids (< 2^24) -> (H, W, 3) uint8 COCO-panoptic colours."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def lookup_segment_labels(ids: np.ndarray, segment_ids: np.ndarray, labels: np.ndarray, fill: int) -> np.ndarray:
    """Map each pixel's segment id to its segment's label; pixels of unknown segments get ``fill``.

    Args:
        ids: (H, W) integer segment-id map.
        segment_ids: (S,) distinct segment ids.
        labels: (S,) label of each segment.
        fill: label of pixels whose id is not in ``segment_ids`` (e.g. VOID id 0).
    Returns:
        (H, W) int64 label map.
    """
    segment_ids = np.asarray(segment_ids, dtype=np.int64)
    if segment_ids.size == 0:
        return np.full(ids.shape, fill, dtype=np.int64)
    order = np.argsort(segment_ids)
    sorted_ids, sorted_labels = segment_ids[order], np.asarray(labels, dtype=np.int64)[order]
    pos = np.searchsorted(sorted_ids, ids).clip(max=sorted_ids.size - 1)
    return np.where(sorted_ids[pos] == ids, sorted_labels[pos], fill)


def read_label_png(path: str, dtype=None) -> np.ndarray:
    """A label PNG as a writable numpy array (``dtype`` as given, else the PNG's own)."""
    with Image.open(path) as img:
        return np.array(img, dtype=dtype)


def write_label_png(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Atomically write a (H, W) label map with values in 0..255 as an 8-bit PNG, or a (H, W, 3) uint8 RGB array
    (e.g. a panoptic PNG from :func:`id_to_rgb`) as an RGB PNG."""
    labels = np.asarray(labels)
    if labels.ndim == 3:
        if labels.dtype != np.uint8 or labels.shape[2] != 3:
            raise ValueError(f"an RGB label PNG needs an (H, W, 3) uint8 array, got {labels.dtype} {labels.shape}")
        image = Image.fromarray(labels)
    else:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError(f"label values must lie in 0..255 for an 8-bit PNG, got {labels.min()}..{labels.max()}")
        image = Image.fromarray(labels.astype(np.uint8))
    with atomic_open(path, "wb") as f:
        image.save(f, format="PNG")


def mask_bbox_xywh(mask: np.ndarray) -> list[int]:
    """COCO box ``[x, y, width, height]`` (pixels, integers) of the True pixels of a (H, W) bool mask.

    Raises:
        ValueError: the mask is empty (an empty segment has no box; callers must not write one).
    """
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("an empty mask has no bounding box")
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE ``{"size": [H, W], "counts": str}`` of a (H, W) bool mask, JSON-serialisable (pycocotools and
    detectron2 accept the ``str`` counts as they accept bytes)."""
    rle = mask_util.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
