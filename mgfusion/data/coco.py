"""COCO 2017 instance and panoptic registration under ``$DETECTRON2_DATASETS/coco`` (detectron2's layout).

Names (``mgf_`` + detectron2's / Mask2Former's name; detectron2's own registrations stay untouched):
    ``mgf_coco_2017_{train,val}``                        instances, detectron2's ``coco`` metadata (80 things)
    ``mgf_coco_2017_{train,val}_panoptic``               panoptic, detectron2's "standard" panoptic metadata
    ``mgf_coco_2017_{train,val}_panoptic_with_sem_seg``  panoptic + semantic PNGs ``coco/panoptic_semseg_{split}2017``
                                                         (made by ``datasets/prepare_coco_semantic_annos_from_panoptic.py``),
                                                         Mask2Former's metadata (133 contiguous classes, things first)
"""

from __future__ import annotations

import functools
import os

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES, _get_builtin_metadata

from .catalog import RequiredPath, datasets_root, mgf_name, register_dataset
from .categories import panoptic_metadata
from .loaders import load_coco_instances, load_coco_panoptic, register_coco_panoptic

__all__ = ["COCO_SEMSEG_SCRIPT", "register_coco"]

COCO_SEMSEG_SCRIPT = "python datasets/prepare_coco_semantic_annos_from_panoptic.py"
_SPLITS = ("train", "val")


def _split_paths(root: str, split: str) -> dict[str, str]:
    coco = os.path.join(root, "coco")
    return {
        "image_root": os.path.join(coco, f"{split}2017"),
        "json_file": os.path.join(coco, "annotations", f"instances_{split}2017.json"),
        "panoptic_root": os.path.join(coco, f"panoptic_{split}2017"),
        "panoptic_json": os.path.join(coco, "annotations", f"panoptic_{split}2017.json"),
        "sem_seg_root": os.path.join(coco, f"panoptic_semseg_{split}2017"),
    }


def register_coco(root: str | os.PathLike | None = None) -> list[str]:
    """Register the COCO 2017 names under ``root`` (default ``$DETECTRON2_DATASETS``); returns the names."""
    root_path = datasets_root(root)
    instance_meta = {**_get_builtin_metadata("coco"), "ignore_label": 255}
    standard_meta = _get_builtin_metadata("coco_panoptic_standard")
    names = []
    for split in _SPLITS:
        paths = _split_paths(str(root_path), split)
        images = RequiredPath(paths["image_root"], f"{split}2017 images")
        instances_json = RequiredPath(paths["json_file"], "instance annotation json")
        panoptic = [
            RequiredPath(paths["panoptic_json"], "panoptic annotation json"),
            RequiredPath(paths["panoptic_root"], "folder of panoptic PNGs"),
        ]

        name = mgf_name(f"coco_2017_{split}")
        register_dataset(
            name,
            functools.partial(load_coco_instances, paths["json_file"], paths["image_root"], instance_meta),
            {**instance_meta, "image_root": paths["image_root"], "json_file": paths["json_file"],
             "evaluator_type": "coco"},
            root=root_path,
            required=[images, instances_json],
        )  # fmt: skip

        register_dataset(
            f"{name}_panoptic",
            functools.partial(
                load_coco_panoptic, paths["panoptic_json"], paths["image_root"], paths["panoptic_root"], standard_meta
            ),
            {**standard_meta, "image_root": paths["image_root"], "panoptic_root": paths["panoptic_root"],
             "panoptic_json": paths["panoptic_json"], "json_file": paths["json_file"],
             "evaluator_type": "coco_panoptic_seg", "ignore_label": 255, "label_divisor": 1000},
            root=root_path,
            required=[images, *panoptic],
        )  # fmt: skip

        register_coco_panoptic(
            f"{name}_panoptic_with_sem_seg",
            paths,
            panoptic_metadata(COCO_CATEGORIES),
            root=root_path,
            required=[
                images, *panoptic, instances_json,  # the instance json: instance AP of the panoptic model
                RequiredPath(paths["sem_seg_root"], "folder of semantic PNGs", f"create it with {COCO_SEMSEG_SCRIPT}"),
            ],
        )  # fmt: skip
        names += [name, f"{name}_panoptic", f"{name}_panoptic_with_sem_seg"]
    return names
