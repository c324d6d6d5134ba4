"""ADE20K (SceneParsing 150) registration under ``$DETECTRON2_DATASETS/ADEChallengeData2016``.

Names:
    ``ade20k_sem_seg_{train,val}``   150 classes, labels in ``annotations_detectron2/`` (0-based, 255 = "other")
    ``ade20k_panoptic_{train,val}``  150 categories (100 things, 50 stuff), ``ade20k_panoptic_{split}[.json]``
    ``ade20k_instance_{train,val}``  the 100 thing classes, COCO json ``ade20k_instance_{split}.json``

Derived files come from ``datasets/prepare_ade20k_sem_seg.py`` and ``datasets/prepare_ade20k_pan_ins_seg.py``.
Category dataset ids are the 1-based SceneParsing class indices in all three.
"""

from __future__ import annotations

import functools
import os

from detectron2.data.datasets.coco import load_coco_json, load_sem_seg

from .catalog import RequiredPath, datasets_root, register_dataset
from .categories import ade20k_categories, instance_metadata, panoptic_metadata
from .loaders import register_coco_panoptic

__all__ = ["register_ade20k", "ADE20K_SEMSEG_SCRIPT", "ADE20K_PANOPTIC_SCRIPT", "ADE20K_SPLIT_DIRS"]

ADE20K_SEMSEG_SCRIPT = "python datasets/prepare_ade20k_sem_seg.py"
ADE20K_PANOPTIC_SCRIPT = "python datasets/prepare_ade20k_pan_ins_seg.py"
ADE20K_SPLIT_DIRS = {"train": "training", "val": "validation"}


def ade20k_split_paths(root: str, split: str) -> dict[str, str]:
    """Paths of one split under the datasets root."""
    ade = os.path.join(root, "ADEChallengeData2016")
    folder = ADE20K_SPLIT_DIRS[split]
    return {
        "image_root": os.path.join(ade, "images", folder),
        "sem_seg_root": os.path.join(ade, "annotations_detectron2", folder),
        "panoptic_root": os.path.join(ade, f"ade20k_panoptic_{split}"),
        "panoptic_json": os.path.join(ade, f"ade20k_panoptic_{split}.json"),
        "json_file": os.path.join(ade, f"ade20k_instance_{split}.json"),
    }


def register_ade20k(root: str | os.PathLike | None = None) -> list[str]:
    """Register the ADE20K names under ``root`` (default ``$DETECTRON2_DATASETS``); returns the names."""
    root_path = datasets_root(root)
    categories = ade20k_categories()
    pan_meta = panoptic_metadata(categories)
    names = []
    for split in ADE20K_SPLIT_DIRS:
        paths = ade20k_split_paths(str(root_path), split)
        images = RequiredPath(paths["image_root"], f"{split} images")
        semantic = RequiredPath(
            paths["sem_seg_root"], "folder of 0-based semantic PNGs", f"create it with {ADE20K_SEMSEG_SCRIPT}"
        )
        panoptic_hint = f"create it with {ADE20K_PANOPTIC_SCRIPT}"

        name = f"ade20k_sem_seg_{split}"
        register_dataset(
            name,
            functools.partial(load_sem_seg, paths["sem_seg_root"], paths["image_root"], gt_ext="png", image_ext="jpg"),
            {"stuff_classes": pan_meta["stuff_classes"], "stuff_colors": pan_meta["stuff_colors"],
             "image_root": paths["image_root"], "sem_seg_root": paths["sem_seg_root"], "evaluator_type": "sem_seg",
             "ignore_label": 255},
            root=root_path,
            required=[images, semantic],
        )  # fmt: skip

        register_coco_panoptic(
            f"ade20k_panoptic_{split}",
            paths,
            pan_meta,
            root=root_path,
            required=[
                images, semantic,
                RequiredPath(paths["panoptic_json"], "panoptic annotation json", panoptic_hint),
                RequiredPath(paths["panoptic_root"], "folder of panoptic PNGs", panoptic_hint),
            ],
        )  # fmt: skip

        name = f"ade20k_instance_{split}"
        register_dataset(
            name,
            functools.partial(load_coco_json, paths["json_file"], paths["image_root"], name),
            {**instance_metadata(categories), "image_root": paths["image_root"], "json_file": paths["json_file"],
             "evaluator_type": "coco"},
            root=root_path,
            required=[images, RequiredPath(paths["json_file"], "instance annotation json", panoptic_hint)],
        )  # fmt: skip
        names += [f"ade20k_sem_seg_{split}", f"ade20k_panoptic_{split}", name]
    return names
