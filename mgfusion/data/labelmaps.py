"""Small vectorized helpers for label maps: panoptic RGB <-> id, segment-id -> label lookup, PNG reading."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["rgb_to_id", "id_to_rgb", "lookup_segment_labels", "read_label_png", "write_label_png"]


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


def write_label_png(path: str, labels: np.ndarray) -> None:
    """Write a (H, W) label map with values in 0..255 as an 8-bit PNG."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"label values must lie in 0..255 for an 8-bit PNG, got {labels.min()}..{labels.max()}")
    Image.fromarray(labels.astype(np.uint8)).save(path)
