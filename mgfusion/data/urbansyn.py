"""UrbanSyn (https://www.urbansyn.org) under ``$DETECTRON2_DATASETS/urbansyn``, in Cityscapes' classes.

Layout of the Hugging Face release ``UrbanSyn/UrbanSyn`` (7,539 frames of 2048x1024)::

    urbansyn/rgb/rgb_<n>.png
    urbansyn/ss/ss_<n>.png                          # grey values = Cityscapes train ids 0..18 (see below)
    urbansyn/panoptic/panoptic_<n>.png              # RGB, one colour per instance of the dynamic (thing) classes
    urbansyn/ss/ss_<n>_labelTrainIds.png            # made by ``python datasets/prepare_urbansyn.py``
    urbansyn/urbansyn_instance_train.json           # made by the script (COCO, RLE, Cityscapes label ids)

What is verified and what is assumed (datasets/README.md, UrbanSyn): the release's README states the ``rgb``
resolution and that ``ss`` holds the 19 Cityscapes training classes as grey values; other values (the
release's "unlabeled") are mapped to 255 (ignore). The encoding of ``panoptic/*.png`` could not be checked
against an authoritative description, so the preparation relies only on (a) each instance having its own colour
and (b) black (0, 0, 0) being no instance: an instance is a colour's region, its class the majority ``ss`` class
under it; regions whose class is not one of Cityscapes' 8 thing classes are skipped.

Names: ``mgf_urbansyn_sem_seg_train`` (19 classes) and ``mgf_urbansyn_instance_seg_train`` (8 thing classes), all
frames; the synthetic-to-real protocol trains on them and evaluates on Cityscapes val.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from .catalog import RequiredPath, datasets_root
from .labelmaps import (
    CITYSCAPES_LABEL_TO_TRAIN_ID,
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

__all__ = ["URBANSYN_SCRIPT", "prepare_urbansyn", "read_urbansyn_semantic", "register_urbansyn"]

URBANSYN_SCRIPT = "python datasets/prepare_urbansyn.py"
_TRAIN_TO_LABEL = np.zeros(256, dtype=np.int64)
for _label, _train in CITYSCAPES_LABEL_TO_TRAIN_ID.items():
    _TRAIN_TO_LABEL[_train] = _label


def _modality_file(folder: str, prefix: str, suffix: str, stem: str) -> str:
    """``rgb_<n>`` -> ``<folder>/<prefix>_<n><suffix>`` (UrbanSyn names each modality's files by its folder)."""
    return os.path.join(folder, f"{prefix}_{stem.split('_', 1)[1]}{suffix}")


def read_urbansyn_semantic(path: str) -> np.ndarray:
    """(H, W) uint8 train ids of an ``ss`` PNG: grey values 0..18 kept, every other value -> 255 (ignore)."""
    ss = read_label_png(path)
    if ss.ndim == 3:  # a grey image stored with 3 equal channels
        if not (ss[..., :3] == ss[..., :1]).all():
            raise ValueError(f"'{path}' has differing colour channels; expected a grey class-id image")
        ss = ss[..., 0]
    return np.where(ss <= 18, ss, 255).astype(np.uint8)


def _urbansyn_one(pair: tuple[str, str], urbansyn: str) -> dict[str, Any]:
    image, ss_file = pair
    stem = os.path.basename(image)[: -len(".png")]
    train_ids = read_urbansyn_semantic(ss_file)
    write_label_png(ss_file[: -len(".png")] + TRAIN_ID_SUFFIX, train_ids)
    panoptic_file = _modality_file(os.path.join(urbansyn, "panoptic"), "panoptic", ".png", stem)
    colours = read_label_png(panoptic_file)
    if colours.ndim != 3 or colours.shape[2] < 3 or colours.shape[:2] != train_ids.shape:
        raise ValueError(f"'{panoptic_file}' is not an RGB instance PNG of the size of '{ss_file}'")
    segments = rgb_to_id(colours[..., :3])
    category_of = {}
    for segment in np.unique(segments).tolist():
        if segment == 0:
            continue
        classes, counts = np.unique(train_ids[segments == segment], return_counts=True)
        majority = int(classes[np.argmax(counts)])
        category_of[segment] = int(_TRAIN_TO_LABEL[majority]) if majority < 19 else 0
    height, width = train_ids.shape
    return {"image": {"file_name": os.path.basename(image), "height": int(height), "width": int(width)},
            "annotations": instance_annotations(segments, category_of)}  # fmt: skip


def prepare_urbansyn(urbansyn_root: str, workers: int = 1) -> list[str]:
    """Write ``ss/*_labelTrainIds.png`` and ``urbansyn_instance_train.json``; returns the json path."""
    rgb = os.path.join(urbansyn_root, "rgb")
    ss = functools.partial(_modality_file, os.path.join(urbansyn_root, "ss"), "ss", ".png")
    pairs = paired_files(rgb, "", ".png", "", label_name=ss)
    panoptic = functools.partial(_modality_file, os.path.join(urbansyn_root, "panoptic"), "panoptic", ".png")
    paired_files(rgb, "", ".png", "", label_name=panoptic)  # raises naming the first missing panoptic PNG
    results = _parallel_map(functools.partial(_urbansyn_one, urbansyn=urbansyn_root), pairs, workers, "UrbanSyn")
    out = os.path.join(urbansyn_root, "urbansyn_instance_train.json")
    return [write_instance_json(out, results)]


def register_urbansyn(root: str | os.PathLike | None = None) -> list[str]:
    """Register ``mgf_urbansyn_{sem_seg,instance_seg}_train`` under ``root`` (default ``$DETECTRON2_DATASETS``)."""
    root_path = datasets_root(root)
    urbansyn = os.path.join(root_path, "urbansyn")
    rgb, ss = os.path.join(urbansyn, "rgb"), os.path.join(urbansyn, "ss")
    json_file = os.path.join(urbansyn, "urbansyn_instance_train.json")
    folders = [RequiredPath(rgb, "images (rgb/)"), RequiredPath(ss, "semantic labels (ss/)")]
    pairs = functools.partial(
        paired_files, rgb, "", ".png", "", label_name=functools.partial(_modality_file, ss, "ss", TRAIN_ID_SUFFIX),
        hint=f"Create them with {URBANSYN_SCRIPT}.",
    )
    return register_train_source("urbansyn", pairs, json_file, rgb, root=root_path, required=folders, script=URBANSYN_SCRIPT)
