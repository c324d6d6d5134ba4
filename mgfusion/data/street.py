"""Shared pieces of the street-scene datasets labelled in Cityscapes' classes (GTA5, SYNTHIA, Synscapes, UrbanSyn,
KITTI-360, BDD100K, Mapillary Vistas, ACDC): metadata, image/label pairing, registration, and the helpers their
preparation code uses to write train-id PNGs and COCO instance jsons.

Every such dataset predicts Cityscapes' classes, so a model trained on one is evaluated on another (the synthetic-
to-real and domain-generalisation protocols):

* semantic names: the 19 classes in train-id order (:data:`~mgfusion.data.labelmaps.CITYSCAPES_TRAIN_CLASSES`),
  labels are train-id PNGs (255 = ignore), ``evaluator_type="sem_seg"`` (detectron2's ``SemSegEvaluator``, mIoU);
  the metadata equals :func:`~mgfusion.data.cityscapes.cityscapes_semantic_metadata`.
* instance names: Cityscapes' 8 thing classes (category ids = Cityscapes label ids 24..33, contiguous 0..7 in
  label-id order, as :func:`~mgfusion.data.cityscapes.cityscapes_instance_metadata`), read from a COCO json with
  RLE masks written by the dataset's preparation script; ``evaluator_type="coco"`` (COCO mask AP).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mgfusion.utils.io import atomic_write_text

from .catalog import RequiredPath, mgf_name, register_dataset
from .cityscapes import cityscapes_instance_metadata, cityscapes_semantic_metadata
from .labelmaps import mask_bbox_xywh, mask_to_rle
from .loaders import load_coco_instances

__all__ = [
    "THING_LABEL_IDS",
    "TRAIN_ID_SUFFIX",
    "instance_annotations",
    "paired_files",
    "register_instances",
    "register_semantic",
    "register_train_source",
    "semantic_dicts",
    "street_instance_metadata",
    "street_semantic_metadata",
    "thing_categories",
    "write_instance_json",
]

#: suffix of the derived train-id PNGs written next to a dataset's own labels (the mmsegmentation / DAFormer name)
TRAIN_ID_SUFFIX = "_labelTrainIds.png"
#: Cityscapes label ids of the 8 thing classes (person, rider, car, truck, bus, train, motorcycle, bicycle).
THING_LABEL_IDS: tuple[int, ...] = (24, 25, 26, 27, 28, 31, 32, 33)


def street_semantic_metadata() -> dict[str, Any]:
    """Metadata of a semantic dataset in Cityscapes' 19 train ids, evaluated by detectron2's ``SemSegEvaluator``."""
    return {**cityscapes_semantic_metadata(), "evaluator_type": "sem_seg"}


def street_instance_metadata(json_file: str, image_root: str) -> dict[str, Any]:
    """Metadata of an instance dataset in Cityscapes' 8 thing classes read from the COCO json ``json_file``."""
    return {
        **cityscapes_instance_metadata(),
        "json_file": json_file,
        "image_root": image_root,
        "evaluator_type": "coco",
    }


def thing_categories() -> list[dict[str, Any]]:
    """The COCO ``categories`` of the instance jsons: ``[{"id": 24, "name": "person"}, ...]`` (label-id order)."""
    meta = cityscapes_instance_metadata()
    return [{"id": label_id, "name": meta["thing_classes"][index]}
            for label_id, index in sorted(meta["thing_dataset_id_to_contiguous_id"].items())]  # fmt: skip


def _images_under(image_dir: str, image_suffix: str, recursive: bool) -> list[str]:
    """Image paths relative to ``image_dir`` ending in ``image_suffix``, sorted."""
    if not recursive:
        return sorted(f for f in os.listdir(image_dir) if f.endswith(image_suffix))
    found = []
    for folder, _, files in os.walk(image_dir):
        relative = os.path.relpath(folder, image_dir)
        found += [os.path.normpath(os.path.join(relative, f)) for f in files if f.endswith(image_suffix)]
    return sorted(found)


def paired_files(
    image_dir: str,
    label_dir: str,
    image_suffix: str,
    label_suffix: str,
    *,
    recursive: bool = False,
    label_name: Callable[[str], str] | None = None,
    hint: str = "",
) -> list[tuple[str, str]]:
    """(image, label) path pairs: each ``<stem><image_suffix>`` under ``image_dir`` with its label
    ``<stem><label_suffix>`` at the same relative place under ``label_dir`` (or ``label_name(stem)``).

    Raises:
        FileNotFoundError: no image, or labels missing (count, first missing path and ``hint``, e.g. the script
            that creates them).
    """
    relative = _images_under(image_dir, image_suffix, recursive)
    if not relative:
        raise FileNotFoundError(f"No '*{image_suffix}' images found under '{image_dir}'.")
    pairs = []
    for path in relative:
        stem = path[: -len(image_suffix)]
        label = label_name(stem) if label_name else stem + label_suffix
        pairs.append((os.path.join(image_dir, path), os.path.join(label_dir, label)))
    missing = [(image, label) for image, label in pairs if not os.path.isfile(label)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(pairs)} label files are missing, e.g. '{missing[0][1]}' (the label of "
            f"'{missing[0][0]}'). {hint}".rstrip()
        )
    return pairs


def semantic_dicts(pairs: Iterable[tuple[str, str]], image_root: str) -> list[dict[str, Any]]:
    """``[{file_name, image_id (path relative to image_root, no suffix), sem_seg_file_name}, ...]``."""
    return [
        {"file_name": image, "image_id": os.path.splitext(os.path.relpath(image, image_root))[0],
         "sem_seg_file_name": label}
        for image, label in pairs
    ]  # fmt: skip


def _load_semantic(pairs: Callable[[], list[tuple[str, str]]], image_root: str) -> list[dict[str, Any]]:
    return semantic_dicts(pairs(), image_root)


def register_semantic(
    name: str,
    pairs: Callable[[], list[tuple[str, str]]],
    *,
    image_root: str,
    root: Path,
    required: Sequence[RequiredPath],
    **metadata: Any,
) -> str:
    """Register a 19-class semantic dataset whose (image, train-id label) pairs ``pairs()`` lists; returns ``name``."""
    register_dataset(
        name,
        functools.partial(_load_semantic, pairs, image_root),
        {**street_semantic_metadata(), "image_root": image_root, **metadata},
        root=root,
        required=required,
    )
    return name


def register_instances(
    name: str, json_file: str, image_root: str, *, root: Path, required: Sequence[RequiredPath], **metadata: Any
) -> str:
    """Register an 8-class instance dataset read from the COCO json ``json_file``; returns ``name``."""
    meta = {**street_instance_metadata(json_file, image_root), **metadata}
    register_dataset(
        name,
        functools.partial(load_coco_instances, json_file, image_root, meta),
        meta,
        root=root,
        required=required,
    )
    return name


def register_train_source(
    prefix: str,
    pairs: Callable[[], list[tuple[str, str]]],
    json_file: str,
    image_root: str,
    *,
    root: Path,
    required: Sequence[RequiredPath],
    script: str,
) -> list[str]:
    """Register a training source's ``mgf_<prefix>_sem_seg_train`` (train-id pairs ``pairs()``) and
    ``mgf_<prefix>_instance_seg_train`` (COCO json ``json_file`` made by ``script``); returns the two names."""
    return [
        register_semantic(mgf_name(f"{prefix}_sem_seg_train"), pairs, image_root=image_root, root=root,
                          required=required),
        register_instances(mgf_name(f"{prefix}_instance_seg_train"), json_file, image_root, root=root,
                           required=[*required, RequiredPath(json_file, "instance annotation json",
                                                             f"create it with {script}")]),
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------ preparation


def instance_annotations(
    segment_ids: np.ndarray, category_of: Mapping[int, int], crowd: Iterable[int] = ()
) -> list[dict[str, Any]]:
    """COCO annotations (RLE masks) of the segments of an id map that are Cityscapes things.

    Args:
        segment_ids: (H, W) integer map; each value is one segment.
        category_of: segment id -> Cityscapes label id; segments whose label id is not one of
            :data:`THING_LABEL_IDS` (stuff, void) and ids not in the map get no annotation.
        crowd: segment ids that are crowd regions (``iscrowd=1``: a group of things without instance separation).
    Returns:
        ``[{category_id (label id), segmentation (RLE), area, bbox (xywh), iscrowd}, ...]`` in segment-id order.
    """
    crowd = {int(c) for c in crowd}
    annotations = []
    for segment in np.unique(segment_ids).tolist():
        category = category_of.get(int(segment))
        if category not in THING_LABEL_IDS:
            continue
        mask = segment_ids == segment
        annotations.append(
            {"category_id": int(category), "segmentation": mask_to_rle(mask), "area": int(mask.sum()),
             "bbox": mask_bbox_xywh(mask), "iscrowd": int(segment in crowd)}
        )  # fmt: skip
    return annotations


def write_instance_json(path: str, records: Sequence[Mapping[str, Any]]) -> str:
    """Atomically write a COCO instance json of ``records`` = ``[{"image": {file_name (relative to the image root),
    height, width}, "annotations": [...]}, ...]`` (image ids ``1..N`` in record order); categories are
    :func:`thing_categories`. Returns ``path``."""
    out_images, out_annotations = [], []
    for index, record in enumerate(records, start=1):
        out_images.append({**record["image"], "id": index})
        for ann in record["annotations"]:
            out_annotations.append({**ann, "id": len(out_annotations) + 1, "image_id": index})
    content = {"images": out_images, "annotations": out_annotations, "categories": thing_categories()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, json.dumps(content))
    return path
