"""SYNTHIA-RAND-CITYSCAPES under ``$DETECTRON2_DATASETS/synthia``, mapped to Cityscapes' classes.

Layout of ``SYNTHIA_RAND_CITYSCAPES.rar`` (9,400 frames of 1280x760)::

    synthia/RGB/<7-digit>.png
    synthia/GT/LABELS/<7-digit>.png                  # 16-bit, 3 channels: R = SYNTHIA class id, G = instance id
    synthia/GT/LABELS/<7-digit>_labelTrainIds.png    # made by ``python datasets/prepare_synthia.py``
    synthia/synthia_instance_train.json              # made by the script (COCO, RLE, Cityscapes label ids)

Class ids map to Cityscapes train ids by :data:`~mgfusion.data.labelmaps.SYNTHIA_TO_TRAIN_ID` (16 of the 19
classes occur). Instances: every (class, instance id) pair of a thing class (pedestrian, rider, car, bus,
motorcycle, bicycle) is one instance; thing pixels with instance id 0 become one crowd region per class.

Names: ``mgf_synthia_sem_seg_train`` (19 classes) and ``mgf_synthia_instance_seg_train`` (Cityscapes' 8 thing
classes); the synthetic-to-real protocol trains on them and evaluates on Cityscapes val.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import cv2
import numpy as np

from .catalog import RequiredPath, datasets_root
from .labelmaps import (
    CITYSCAPES_LABEL_TO_TRAIN_ID,
    SYNTHIA_TO_TRAIN_ID,
    apply_lookup,
    lookup_table,
    write_label_png,
)
from .preparation import _parallel_map
from .street import (
    THING_LABEL_IDS,
    TRAIN_ID_SUFFIX,
    instance_annotations,
    paired_files,
    register_train_source,
    write_instance_json,
)

__all__ = ["SYNTHIA_SCRIPT", "prepare_synthia", "read_synthia_label", "register_synthia"]

SYNTHIA_SCRIPT = "python datasets/prepare_synthia.py"
_TO_TRAIN_ID = lookup_table(SYNTHIA_TO_TRAIN_ID)
#: SYNTHIA class id -> Cityscapes label id (0 = unlabeled) of the same class
_TO_LABEL_ID = lookup_table(
    {synthia: label for synthia, train in SYNTHIA_TO_TRAIN_ID.items()
     for label, t in CITYSCAPES_LABEL_TO_TRAIN_ID.items() if t == train}, fill=0,
)  # fmt: skip


def read_synthia_label(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, instance ids) of a ``GT/LABELS`` PNG: its red and green 16-bit channels, (H, W) int64 each."""
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # PIL cannot read 16-bit RGB PNGs; cv2 gives BGR order
    if raw is None:
        raise OSError(f"Cannot read SYNTHIA label '{path}'.")
    if raw.ndim != 3 or raw.shape[2] < 3:
        raise ValueError(f"'{path}' is not a 3-channel SYNTHIA label PNG (R = class id, G = instance id)")
    return raw[..., 2].astype(np.int64), raw[..., 1].astype(np.int64)


def _synthia_one(stem: str, labels_dir: str) -> dict[str, Any]:
    label_file = os.path.join(labels_dir, stem + ".png")
    classes, instances = read_synthia_label(label_file)
    write_label_png(os.path.join(labels_dir, stem + TRAIN_ID_SUFFIX),
                    apply_lookup(classes, _TO_TRAIN_ID, what=f"'{label_file}'"))  # fmt: skip
    label_ids = apply_lookup(classes, _TO_LABEL_ID, what=f"'{label_file}'").astype(np.int64)
    # one segment per (label id, instance id) of a thing class; instance 0 is a crowd region of its class
    segments = np.where(np.isin(label_ids, THING_LABEL_IDS), label_ids * 65536 + instances, 0)
    category_of = {s: s // 65536 for s in np.unique(segments).tolist() if s}
    height, width = classes.shape
    return {
        "image": {"file_name": stem + ".png", "height": int(height), "width": int(width)},
        "annotations": instance_annotations(segments, category_of, crowd=[s for s in category_of if s % 65536 == 0]),
    }


def prepare_synthia(synthia_root: str, workers: int = 1) -> list[str]:
    """Write ``GT/LABELS/*_labelTrainIds.png`` and ``synthia_instance_train.json``; returns the json path."""
    rgb, labels = os.path.join(synthia_root, "RGB"), os.path.join(synthia_root, "GT", "LABELS")
    stems = [os.path.basename(image)[: -len(".png")] for image, _ in paired_files(rgb, labels, ".png", ".png")]
    convert = functools.partial(_synthia_one, labels_dir=labels)
    results = _parallel_map(convert, stems, workers, "SYNTHIA")
    out = os.path.join(synthia_root, "synthia_instance_train.json")
    return [write_instance_json(out, results)]


def register_synthia(root: str | os.PathLike | None = None) -> list[str]:
    """Register ``mgf_synthia_{sem_seg,instance_seg}_train`` under ``root`` (default ``$DETECTRON2_DATASETS``)."""
    root_path = datasets_root(root)
    synthia = os.path.join(root_path, "synthia")
    rgb, labels = os.path.join(synthia, "RGB"), os.path.join(synthia, "GT", "LABELS")
    json_file = os.path.join(synthia, "synthia_instance_train.json")
    folders = [RequiredPath(rgb, "images (RGB/)"), RequiredPath(labels, "labels (GT/LABELS/)")]
    pairs = functools.partial(paired_files, rgb, labels, ".png", TRAIN_ID_SUFFIX, hint=f"Create them with {SYNTHIA_SCRIPT}.")
    return register_train_source("synthia", pairs, json_file, rgb, root=root_path, required=folders, script=SYNTHIA_SCRIPT)
