"""Small vectorized helpers for label maps and masks: panoptic RGB <-> id, segment-id -> label lookup, PNG reading
and writing, and a binary mask's COCO box and RLE (the one implementation used by the loaders, the preparation
code, the synthetic generator and the test trees); and the official tables that map other datasets' label ids to
Cityscapes' 19 train ids (:data:`CITYSCAPES_LABEL_TO_TRAIN_ID`, :data:`SYNTHIA_TO_TRAIN_ID`,
:data:`MAPILLARY_V12_TO_TRAIN_ID`) with :func:`lookup_table` / :func:`apply_lookup` to apply them."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from mgfusion.utils.io import atomic_open

__all__ = [
    "CITYSCAPES_LABEL_TO_TRAIN_ID",
    "CITYSCAPES_TRAIN_CLASSES",
    "MAPILLARY_V12_CLASSES",
    "MAPILLARY_V12_TO_TRAIN_ID",
    "SYNTHIA_TO_TRAIN_ID",
    "apply_lookup",
    "id_to_rgb",
    "lookup_segment_labels",
    "lookup_table",
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


# ------------------------------------------------------------------------ label tables -> Cityscapes train ids

#: Cityscapes' 19 evaluated classes in train-id order (cityscapesscripts ``helpers/labels.py``).
CITYSCAPES_TRAIN_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

#: Cityscapes label id -> train id of the 19 evaluated classes (cityscapesscripts ``helpers/labels.py``; every other
#: id is ignored). The same ids label GTA5 (``labels/*.png``), Synscapes (``img/class``) and KITTI-360's
#: Cityscapes-compatible ids 0..33; this is the table of mmsegmentation's/DAFormer's ``convert_datasets/gta.py``.
CITYSCAPES_LABEL_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

#: SYNTHIA-RAND-CITYSCAPES class id (red channel of ``GT/LABELS/*.png``) -> Cityscapes train id: the table of the
#: dataset's README that UDA/DG works apply (DAFormer ``tools/convert_datasets/synthia.py``, used by MFuser):
#: 1 sky, 2 building, 3 road, 4 sidewalk, 5 fence, 6 vegetation, 7 pole, 8 car, 9 traffic sign, 10 pedestrian,
#: 11 bicycle, 12 motorcycle, 15 traffic light, 17 rider, 19 bus, 21 wall; terrain (16), truck (18) and train (20)
#: are listed although SYNTHIA-RAND-CITYSCAPES has no such pixels. 0 void, 13 parking-slot, 14 road-work and
#: 22 lanemarking are ignored.
SYNTHIA_TO_TRAIN_ID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10,
    10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}  # fmt: skip

#: The 66 Mapillary Vistas v1.2 classes (``readable`` names of ``config.json`` / ``config_v1.2.json``) in the order
#: of their ids 0..65, which the palette PNGs ``{training,validation}/labels/*.png`` store.
MAPILLARY_V12_CLASSES: tuple[str, ...] = (
    "Bird", "Ground Animal", "Curb", "Fence", "Guard Rail", "Barrier", "Wall", "Bike Lane", "Crosswalk - Plain",
    "Curb Cut", "Parking", "Pedestrian Area", "Rail Track", "Road", "Service Lane", "Sidewalk", "Bridge",
    "Building", "Tunnel", "Person", "Bicyclist", "Motorcyclist", "Other Rider", "Lane Marking - Crosswalk",
    "Lane Marking - General", "Mountain", "Sand", "Sky", "Snow", "Terrain", "Vegetation", "Water", "Banner",
    "Bench", "Bike Rack", "Billboard", "Catch Basin", "CCTV Camera", "Fire Hydrant", "Junction Box", "Mailbox",
    "Manhole", "Phone Booth", "Pothole", "Street Light", "Pole", "Traffic Sign Frame", "Utility Pole",
    "Traffic Light", "Traffic Sign (Back)", "Traffic Sign (Front)", "Trash Can", "Bicycle", "Boat", "Bus", "Car",
    "Caravan", "Motorcycle", "On Rails", "Other Vehicle", "Trailer", "Truck", "Wheeled Slow", "Car Mount",
    "Ego Vehicle", "Unlabeled",
)  # fmt: skip

#: Mapillary Vistas v1.2 class id -> Cityscapes train id, the mapping of the domain-generalisation benchmarks of
#: Rein, VFMSeg and MFuser (Rein ``tools/convert_datasets/mapillary2cityscape.py --train_id``, from
#: openseg.pytorch): a class maps to the Cityscapes class of the same name; besides, traffic-sign front/back/frame
#: -> traffic sign, On Rails -> train, bicyclist/motorcyclist/other rider -> rider, pole/utility pole/street light
#: -> pole, curb/curb cut/pedestrian area -> sidewalk, bike lane/crosswalk/parking/service lane/lane markings ->
#: road. The other 32 classes are ignored. (HGFormer/RobustNet use a narrower table; see datasets/README.md.)
MAPILLARY_V12_TO_TRAIN_ID: dict[int, int] = {
    2: 1, 3: 4, 6: 3, 7: 0, 8: 0, 9: 1, 10: 0, 11: 1, 13: 0, 14: 0, 15: 1, 17: 2, 19: 11, 20: 12, 21: 12, 22: 12,
    23: 0, 24: 0, 27: 10, 29: 9, 30: 8, 44: 5, 45: 5, 46: 7, 47: 5, 48: 6, 49: 7, 50: 7, 52: 18, 54: 15, 55: 13,
    57: 17, 58: 16, 61: 14,
}  # fmt: skip


def lookup_table(mapping: dict[int, int], size: int = 256, fill: int = 255) -> np.ndarray:
    """(size,) uint8 lookup table: ``table[k] = mapping.get(k, fill)`` (label ids must lie in 0..size-1)."""
    table = np.full(size, fill, dtype=np.uint8)
    for source, target in mapping.items():
        if not 0 <= int(source) < size:
            raise ValueError(f"label id {source} does not fit a lookup table of size {size}")
        table[int(source)] = target
    return table


def apply_lookup(labels: np.ndarray, table: np.ndarray, *, what: str = "label map") -> np.ndarray:
    """``table[labels]`` for an integer (H, W) label map; values beyond the table are an error naming ``what``."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= table.size):
        raise ValueError(
            f"{what} has label values {int(labels.min())}..{int(labels.max())}, outside the table's 0..{table.size - 1}"
        )
    return table[labels]
