"""ADE20K (SceneParsing 150) registration under ``$DETECTRON2_DATASETS/ADEChallengeData2016``.

Names (``mgf_`` + detectron2's / Mask2Former's name; their own registrations stay untouched):
    ``mgf_ade20k_sem_seg_{train,val}``   150 classes, labels in ``annotations_detectron2/`` (0-based, 255 = "other")
    ``mgf_ade20k_panoptic_{train,val}``  150 categories (100 things, 50 stuff), ``ade20k_panoptic_{split}[.json]``
    ``mgf_ade20k_instance_{train,val}``  the 100 thing classes, COCO json ``ade20k_instance_{split}.json``

Derived files come from ``datasets/prepare_ade20k_sem_seg.py`` and ``datasets/prepare_ade20k_pan_ins_seg.py``.
Category dataset ids are the 1-based SceneParsing class indices in all three.
"""

from __future__ import annotations

import functools
import os

from detectron2.data.datasets.coco import load_sem_seg

from .catalog import RequiredPath, datasets_root, mgf_name, register_dataset
from .categories import (
    ade20k_categories,
    instance_metadata,
    panoptic_metadata,
    semantic_metadata,
)
from .loaders import load_coco_instances, register_coco_panoptic

__all__ = ["ADE20K_PANOPTIC_SCRIPT", "ADE20K_SEMSEG_SCRIPT", "ADE20K_SPLIT_DIRS", "register_ade20k"]

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
    sem_meta = {**semantic_metadata(categories), "ignore_label": 255}
    pan_meta = panoptic_metadata(categories)
    inst_meta = {**instance_metadata(categories), "ignore_label": 255}
    names = []
    for split in ADE20K_SPLIT_DIRS:
        paths = ade20k_split_paths(str(root_path), split)
        images = RequiredPath(paths["image_root"], f"{split} images")
        semantic = RequiredPath(
            paths["sem_seg_root"], "folder of 0-based semantic PNGs", f"create it with {ADE20K_SEMSEG_SCRIPT}"
        )
        panoptic_hint = f"create it with {ADE20K_PANOPTIC_SCRIPT}"
        instances_json = RequiredPath(paths["json_file"], "instance annotation json", panoptic_hint)

        name = mgf_name(f"ade20k_sem_seg_{split}")
        register_dataset(
            name,
            functools.partial(load_sem_seg, paths["sem_seg_root"], paths["image_root"], gt_ext="png", image_ext="jpg"),
            {**sem_meta, "image_root": paths["image_root"], "sem_seg_root": paths["sem_seg_root"],
             "evaluator_type": "sem_seg"},
            root=root_path,
            required=[images, semantic],
        )  # fmt: skip
        names.append(name)

        name = mgf_name(f"ade20k_panoptic_{split}")
        register_coco_panoptic(
            name,
            paths,
            pan_meta,
            root=root_path,
            required=[
                images, semantic, instances_json,  # the instance json: instance AP of the panoptic model
                RequiredPath(paths["panoptic_json"], "panoptic annotation json", panoptic_hint),
                RequiredPath(paths["panoptic_root"], "folder of panoptic PNGs", panoptic_hint),
            ],
        )  # fmt: skip
        names.append(name)

        name = mgf_name(f"ade20k_instance_{split}")
        register_dataset(
            name,
            functools.partial(load_coco_instances, paths["json_file"], paths["image_root"], inst_meta),
            {**inst_meta, "image_root": paths["image_root"], "json_file": paths["json_file"], "evaluator_type": "coco"},
            root=root_path,
            required=[images, instances_json],
        )
        names.append(name)
    return names
