"""Category tables and metadata builders shared by the dataset families.

Conventions (the Mask2Former convention for panoptic data):

* A panoptic dataset has K categories (things and stuff) with dataset ids; their contiguous ids are
  ``0..K-1`` in category-list order. ``stuff_classes`` lists all K names (so a semantic evaluator covers every
  category), ``thing_classes`` lists the thing names in contiguous-id order.
* ``thing_dataset_id_to_contiguous_id`` maps thing dataset ids into that global contiguous space;
  ``stuff_dataset_id_to_contiguous_id`` maps *every* dataset id (things included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

__all__ = [
    "ADE20K_INSTANCE_CLASSES",
    "ADE20K_INSTANCE_TO_SEMANTIC",
    "ade20k_categories",
    "distinct_colors",
    "instance_metadata",
    "panoptic_metadata",
    "semantic_metadata",
]

# The 100 classes of the ADE20K instance-segmentation challenge (SceneParsing "instanceInfo100"), in the order of
# their ids 1..100, which the red channel of `annotations_instance/*.png` stores.
ADE20K_INSTANCE_CLASSES: tuple[str, ...] = (
    "bed", "windowpane", "cabinet", "person", "door", "table", "curtain", "chair", "car", "painting",
    "sofa", "shelf", "mirror", "armchair", "seat", "fence", "desk", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "box", "column", "signboard", "chest of drawers", "counter", "sink", "fireplace",
    "refrigerator", "stairs", "case", "pool table", "pillow", "screen door", "bookcase", "coffee table",
    "toilet", "flower", "book", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "arcade machine", "bus", "towel", "light", "truck", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "apparel", "pole", "bannister", "ottoman",
    "bottle", "van", "ship", "fountain", "washer", "plaything", "stool", "barrel", "basket", "bag",
    "minibike", "oven", "ball", "food", "step", "trade name", "microwave", "pot", "animal", "bicycle",
    "dishwasher", "screen", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "plate", "monitor", "bulletin board", "radiator", "glass", "clock", "flag",
)  # fmt: skip

# For instance class i (0-based, i.e. id i+1), the 0-based index of the same class among the 150 SceneParsing
# classes (detectron2's ADE20K_SEM_SEG_CATEGORIES). Matched by name; the eight names that differ between the
# two lists (windowpane/window, bathtub/tub, railing/rail, streetlight/street lamp, television receiver/tv,
# airplane/plane, apparel/clothes, ashcan/trash can) were matched by meaning.
ADE20K_INSTANCE_TO_SEMANTIC: tuple[int, ...] = (
    7, 8, 10, 12, 14, 15, 18, 19, 20, 22, 23, 24, 27, 30, 31, 32, 33, 35, 36, 37, 38, 39, 41, 42, 43, 44, 45,
    47, 49, 50, 53, 55, 56, 57, 58, 62, 64, 65, 66, 67, 69, 70, 71, 72, 73, 74, 75, 76, 78, 80, 81, 82, 83, 85,
    86, 87, 88, 89, 90, 92, 93, 95, 97, 98, 102, 103, 104, 107, 108, 110, 111, 112, 115, 116, 118, 119, 120,
    121, 123, 124, 125, 126, 127, 129, 130, 132, 133, 134, 135, 136, 137, 138, 139, 142, 143, 144, 146, 147,
    148, 149,
)  # fmt: skip


def distinct_colors(n: int, seed: int = 0) -> list[list[int]]:
    """``n`` deterministic, well-spread RGB colours (lists of 3 ints in 0..255) for visualization metadata."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    sat = 0.55 + 0.4 * rng.random(n)
    val = 0.65 + 0.3 * rng.random(n)
    h6 = hues * 6.0
    sector = np.floor(h6).astype(int) % 6
    frac = h6 - np.floor(h6)
    p, q, t = val * (1 - sat), val * (1 - frac * sat), val * (1 - (1 - frac) * sat)
    table = np.stack(
        [
            np.stack([val, t, p], 1), np.stack([q, val, p], 1), np.stack([p, val, t], 1),
            np.stack([p, q, val], 1), np.stack([t, p, val], 1), np.stack([val, p, q], 1),
        ]
    )  # fmt: skip
    rgb = table[sector, np.arange(n)]
    return (np.round(rgb * 255).astype(int)).tolist()


def ade20k_categories() -> list[dict[str, Any]]:
    """The 150 SceneParsing categories as panoptic categories: dataset id = 1-based class index, 100 things."""
    thing_indices = set(ADE20K_INSTANCE_TO_SEMANTIC)
    colors = distinct_colors(len(ADE20K_SEM_SEG_CATEGORIES), seed=150)
    return [
        {"id": i + 1, "name": name.strip(), "isthing": int(i in thing_indices), "color": colors[i]}
        for i, name in enumerate(ADE20K_SEM_SEG_CATEGORIES)
    ]


def panoptic_metadata(categories: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mask2Former-style panoptic metadata (see module docstring) from ``[{id, name, isthing, color}, ...]``."""
    thing_map, stuff_map = {}, {}
    for contiguous_id, cat in enumerate(categories):
        if cat["isthing"]:
            thing_map[int(cat["id"])] = contiguous_id
        stuff_map[int(cat["id"])] = contiguous_id
    return {
        "thing_classes": [c["name"] for c in categories if c["isthing"]],
        "thing_colors": [list(c["color"]) for c in categories if c["isthing"]],
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": [list(c["color"]) for c in categories],
        "thing_dataset_id_to_contiguous_id": thing_map,
        "stuff_dataset_id_to_contiguous_id": stuff_map,
    }


def instance_metadata(categories: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Instance-segmentation metadata for the thing categories: contiguous ids ``0..T-1`` in sorted-id order.

    This is the mapping detectron2's ``load_coco_json`` derives from a COCO json, so both agree.
    """
    things = sorted((c for c in categories if c["isthing"]), key=lambda c: int(c["id"]))
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [list(c["color"]) for c in things],
        "thing_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(things)},
    }


def semantic_metadata(categories: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Semantic-segmentation metadata: every category is a class, contiguous ids ``0..K-1`` in list order.

    ``stuff_dataset_id_to_contiguous_id`` lets detectron2's ``SemSegEvaluator`` write dataset ids into its
    prediction json.
    """
    return {
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": [list(c["color"]) for c in categories],
        "stuff_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(categories)},
    }
