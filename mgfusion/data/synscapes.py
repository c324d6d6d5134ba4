"""Synscapes (7D Labs / Linköping University) under ``$DETECTRON2_DATASETS/synscapes``, in Cityscapes' classes.

Layout of the download (25,000 frames; https://synscapes.on.liu.se/features.html)::

    synscapes/img/rgb/<n>.png                       # 1440x720 (img/rgb-2k: an up-scaled 2048x1024 copy)
    synscapes/img/class/<n>.png                     # Cityscapes label ids
    synscapes/img/instance/<n>.png                  # RGB, instance id = R + 256 G + 256^2 B (0 = none)
    synscapes/meta/<n>.json                         # "instance": {"class": {instance id: Cityscapes label id}, ...}
    synscapes/img/class/<n>_labelTrainIds.png       # made by ``python datasets/prepare_synscapes.py``
    synscapes/synscapes_instance_train.json         # made by the script (COCO, RLE, Cityscapes label ids)

The labels are at the native 1440x720, so ``img/rgb`` is used. Names: ``mgf_synscapes_sem_seg_train`` (19
classes) and ``mgf_synscapes_instance_seg_train`` (8 thing classes), all frames; the synthetic-to-real protocol
trains on them and evaluates on Cityscapes val.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import numpy as np

from .catalog import RequiredPath, datasets_root
from .labelmaps import (
    CITYSCAPES_LABEL_TO_TRAIN_ID,
    apply_lookup,
    lookup_table,
    read_label_png,
    rgb_to_id,
    write_label_png,
)
from .preparation import _parallel_map
from .street import (
    TRAIN_ID_SUFFIX,
    instance_annotations,
    paired_files,
    register_train_source,
    write_instance_json,
)

__all__ = ["SYNSCAPES_SCRIPT", "prepare_synscapes", "register_synscapes"]

SYNSCAPES_SCRIPT = "python datasets/prepare_synscapes.py"


def _synscapes_one(stem: str, synscapes: str, table: np.ndarray) -> dict[str, Any]:
    class_file = os.path.join(synscapes, "img", "class", stem + ".png")
    labels = read_label_png(class_file)
    if labels.ndim != 2:
        raise ValueError(f"'{class_file}' is not a single-channel PNG of Cityscapes label ids")
    write_label_png(os.path.join(synscapes, "img", "class", stem + TRAIN_ID_SUFFIX),
                    apply_lookup(labels, table, what=f"'{class_file}'"))  # fmt: skip
    instance_file = os.path.join(synscapes, "img", "instance", stem + ".png")
    rgb = read_label_png(instance_file)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"'{instance_file}' is not an RGB instance PNG (id = R + 256 G + 256^2 B)")
    instance_ids = rgb_to_id(rgb)
    with open(os.path.join(synscapes, "meta", stem + ".json"), encoding="utf-8") as f:
        classes = json.load(f)["instance"]["class"]
    category_of = {int(k): int(v) for k, v in classes.items()}
    present = set(np.unique(instance_ids).tolist()) - {0}
    height, width = labels.shape
    return {
        "image": {"file_name": stem + ".png", "height": int(height), "width": int(width)},
        "annotations": instance_annotations(instance_ids, category_of),
        "unclassified": len(present - set(category_of)),
    }


def prepare_synscapes(synscapes_root: str, workers: int = 1) -> dict[str, Any]:
    """Write ``img/class/*_labelTrainIds.png`` and ``synscapes_instance_train.json``.

    Returns:
        ``{"json": path, "images": n, "unclassified": number of instance ids in ``img/instance`` without a class in
        ``meta/*.json`` (they get no annotation)}``.
    """
    rgb = os.path.join(synscapes_root, "img", "rgb")
    pairs = paired_files(rgb, os.path.join(synscapes_root, "meta"), ".png", ".json")
    for folder in ("class", "instance"):  # raises naming the first missing file
        paired_files(rgb, os.path.join(synscapes_root, "img", folder), ".png", ".png")
    stems = [os.path.basename(image)[: -len(".png")] for image, _ in pairs]
    convert = functools.partial(_synscapes_one, synscapes=synscapes_root, table=lookup_table(CITYSCAPES_LABEL_TO_TRAIN_ID))
    results = _parallel_map(convert, stems, workers, "Synscapes")
    out = os.path.join(synscapes_root, "synscapes_instance_train.json")
    write_instance_json(out, results)
    return {"json": out, "images": len(results), "unclassified": sum(r["unclassified"] for r in results)}


def register_synscapes(root: str | os.PathLike | None = None) -> list[str]:
    """Register ``mgf_synscapes_{sem_seg,instance_seg}_train`` under ``root`` (default ``$DETECTRON2_DATASETS``)."""
    root_path = datasets_root(root)
    synscapes = os.path.join(root_path, "synscapes")
    rgb, classes = os.path.join(synscapes, "img", "rgb"), os.path.join(synscapes, "img", "class")
    json_file = os.path.join(synscapes, "synscapes_instance_train.json")
    folders = [RequiredPath(rgb, "images (img/rgb/)"), RequiredPath(classes, "class labels (img/class/)")]
    pairs = functools.partial(paired_files, rgb, classes, ".png", TRAIN_ID_SUFFIX, hint=f"Create them with {SYNSCAPES_SCRIPT}.")
    return register_train_source("synscapes", pairs, json_file, rgb, root=root_path, required=folders, script=SYNSCAPES_SCRIPT)
