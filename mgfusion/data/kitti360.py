"""KITTI-360 2D instance segmentation under ``$DETECTRON2_DATASETS/KITTI-360``, in Cityscapes' 8 thing classes.

Layout of the downloads "Perspective Images for Train & Val" and "Semantics" (``data_2d_semantics``)::

    KITTI-360/data_2d_raw/<sequence>/image_00/data_rect/<10-digit frame>.png              # 1408x376
    KITTI-360/data_2d_semantics/train/<sequence>/image_00/{semantic,instance}/<frame>.png
    KITTI-360/data_2d_semantics/train/2013_05_28_drive_{train,val}_frames.txt            # official split
    KITTI-360/kitti360_instance_{train,val}.json        # made by ``python datasets/prepare_kitti360.py``

Each split-file line is ``<image path> <semantic label path>`` relative to ``KITTI-360/``; the instance label is
the semantic path with ``semantic`` replaced by ``instance`` (as kitti360scripts' evaluation finds it). Instance
PNGs (16 bit) hold ``label id * 1000 + instance`` for separated objects and the bare label id otherwise
(kitti360scripts ``evaluation/semantic_2d/instance.py``); KITTI-360 label ids 0..33 are Cityscapes' ids
(kitti360scripts ``helpers/labels.py``). Values below 1000 of a thing class become crowd regions, as in
Cityscapes.

Names: ``mgf_kitti360_instance_seg_{train,val}``: Cityscapes' 8 thing classes, COCO mask AP (the official
KITTI-360 benchmark instead weights pixels by its confidence maps and scores 7 classes including building;
see datasets/README.md).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from .catalog import RequiredPath, datasets_root, mgf_name
from .labelmaps import read_label_png
from .preparation import _parallel_map
from .street import instance_annotations, register_instances, write_instance_json

__all__ = ["KITTI360_SCRIPT", "KITTI360_SPLIT_FILES", "prepare_kitti360", "read_split_file", "register_kitti360"]

KITTI360_SCRIPT = "python datasets/prepare_kitti360.py"
KITTI360_SPLIT_FILES = {
    split: os.path.join("data_2d_semantics", "train", f"2013_05_28_drive_{split}_frames.txt") for split in ("train", "val")
}


def read_split_file(kitti_root: str, split: str) -> list[tuple[str, str]]:
    """(image, instance label) paths relative to ``kitti_root`` of the official ``split`` file, in file order."""
    path = os.path.join(kitti_root, KITTI360_SPLIT_FILES[split])
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"'{path}' line {number}: expected '<image> <semantic label>', got {line.strip()!r}")
            image, semantic = fields
            parent, frame = os.path.split(semantic)
            if os.path.basename(parent) != "semantic":
                raise ValueError(f"'{path}' line {number}: the label path {semantic!r} is not in a 'semantic' folder")
            pairs.append((image, os.path.join(os.path.dirname(parent), "instance", frame)))
    if not pairs:
        raise ValueError(f"'{path}' lists no frames.")
    return pairs


def _kitti360_one(pair: tuple[str, str], kitti_root: str) -> dict[str, Any]:
    image, instance = pair
    instance_file = os.path.join(kitti_root, instance)
    if not os.path.isfile(instance_file):
        raise FileNotFoundError(f"KITTI-360 instance label '{instance_file}' (for '{image}') does not exist.")
    ids = read_label_png(instance_file).astype(np.int64)
    if ids.ndim != 2:
        raise ValueError(f"'{instance_file}' is not a single-channel 16-bit instance PNG")
    category_of = {v: (v // 1000 if v >= 1000 else v) for v in np.unique(ids).tolist()}
    height, width = ids.shape
    return {"image": {"file_name": image, "height": int(height), "width": int(width)},
            "annotations": instance_annotations(ids, category_of, crowd=[v for v in category_of if v < 1000])}  # fmt: skip


def prepare_kitti360(kitti_root: str, workers: int = 1, splits=("train", "val")) -> list[str]:
    """Write ``kitti360_instance_{train,val}.json`` from the official split files; returns the jsons."""
    outputs = []
    for split in splits:
        pairs = read_split_file(kitti_root, split)
        missing = [image for image, _ in pairs if not os.path.isfile(os.path.join(kitti_root, image))]
        if missing:
            raise FileNotFoundError(f"{len(missing)} KITTI-360 images of the {split} split are missing, e.g. "
                                    f"'{os.path.join(kitti_root, missing[0])}'.")  # fmt: skip
        results = _parallel_map(functools.partial(_kitti360_one, kitti_root=kitti_root), pairs, workers, f"KITTI-360 {split}")
        out = os.path.join(kitti_root, f"kitti360_instance_{split}.json")
        outputs.append(write_instance_json(out, results))
    return outputs


def register_kitti360(root: str | os.PathLike | None = None) -> list[str]:
    """Register ``mgf_kitti360_instance_seg_{train,val}`` under ``root`` (default ``$DETECTRON2_DATASETS``)."""
    root_path = datasets_root(root)
    kitti = os.path.join(root_path, "KITTI-360")
    names = []
    for split in ("train", "val"):
        json_file = os.path.join(kitti, f"kitti360_instance_{split}.json")
        names.append(register_instances(
            mgf_name(f"kitti360_instance_seg_{split}"), json_file, kitti, root=root_path,
            required=[RequiredPath(os.path.join(kitti, "data_2d_raw"), "images (data_2d_raw/)"),
                      RequiredPath(json_file, "instance annotation json", f"create it with {KITTI360_SCRIPT}")],
        ))  # fmt: skip
    return names
