"""Loaders that turn COCO-panoptic style annotation files into detectron2 dataset dicts."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .catalog import RequiredPath, register_dataset

__all__ = ["load_coco_panoptic", "load_semantic_from_panoptic_json", "register_coco_panoptic"]


def _read_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _label_file(folder: str, file_name: str) -> str:
    return os.path.join(folder, os.path.splitext(file_name)[0] + ".png")


def load_coco_panoptic(
    panoptic_json: str,
    image_root: str,
    panoptic_root: str,
    metadata: Mapping[str, Any],
    sem_seg_root: str | None = None,
    *,
    image_subpath: Callable[[dict], str] | None = None,
    sem_seg_subpath: Callable[[dict], str] | None = None,
) -> list[dict]:
    """Dataset dicts of a COCO-panoptic annotation file.

    Unlike detectron2's loader, the image file of each annotation is taken from the json's ``images`` list (so
    ``.png`` images work) and, with ``sem_seg_root``, a semantic PNG is added as ``sem_seg_file_name`` (by default
    the one with the annotation's stem). ``segments_info`` category ids become contiguous ids (see
    :mod:`mgfusion.data.categories`) and each segment gets ``isthing``.

    Args:
        image_subpath: json image entry -> image path relative to ``image_root`` (default: its ``file_name``).
        sem_seg_subpath: json image entry -> semantic PNG path relative to ``sem_seg_root`` (default: the
            annotation's ``file_name`` with a ``.png`` suffix).

    Returns:
        ``[{file_name, image_id, height, width, pan_seg_file_name, segments_info[, sem_seg_file_name]}, ...]``
    """
    content = _read_json(panoptic_json)
    images = {img["id"]: img for img in content["images"]}
    thing_map = metadata["thing_dataset_id_to_contiguous_id"]
    stuff_map = metadata["stuff_dataset_id_to_contiguous_id"]
    dicts = []
    for ann in content["annotations"]:
        image = images[ann["image_id"]]
        segments = []
        for seg in ann["segments_info"]:
            category_id = int(seg["category_id"])
            isthing = category_id in thing_map
            segments.append(
                {**seg, "category_id": (thing_map if isthing else stuff_map)[category_id], "isthing": isthing}
            )
        relative_image = image_subpath(image) if image_subpath else image["file_name"]
        record = {
            "file_name": os.path.join(image_root, relative_image),
            "image_id": ann["image_id"],
            "height": image["height"],
            "width": image["width"],
            "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
            "segments_info": segments,
        }
        if sem_seg_root is not None:
            record["sem_seg_file_name"] = (
                os.path.join(sem_seg_root, sem_seg_subpath(image))
                if sem_seg_subpath
                else _label_file(sem_seg_root, ann["file_name"])
            )
        dicts.append(record)
    if not dicts:
        raise ValueError(f"No annotations in panoptic json '{panoptic_json}'.")
    return dicts


def load_semantic_from_panoptic_json(panoptic_json: str, image_root: str, sem_seg_root: str) -> list[dict]:
    """Semantic-segmentation dicts for the images of a panoptic json whose semantic PNGs live in ``sem_seg_root``.

    Returns:
        ``[{file_name, image_id, height, width, sem_seg_file_name}, ...]``
    """
    content = _read_json(panoptic_json)
    images = {img["id"]: img for img in content["images"]}
    dicts = []
    for ann in content["annotations"]:
        image = images[ann["image_id"]]
        dicts.append(
            {
                "file_name": os.path.join(image_root, image["file_name"]),
                "image_id": ann["image_id"],
                "height": image["height"],
                "width": image["width"],
                "sem_seg_file_name": _label_file(sem_seg_root, ann["file_name"]),
            }
        )
    if not dicts:
        raise ValueError(f"No annotations in panoptic json '{panoptic_json}'.")
    return dicts


def register_coco_panoptic(
    name: str,
    paths: Mapping[str, str],
    metadata: Mapping[str, Any],
    *,
    root: Path,
    required: Sequence[RequiredPath] = (),
    prepare: Callable[[], object] | None = None,
) -> None:
    """Register a COCO-panoptic dataset with semantic PNGs (``evaluator_type="coco_panoptic_seg"``).

    Args:
        paths: ``image_root``, ``panoptic_root``, ``panoptic_json``, ``sem_seg_root`` and ``json_file`` (the
            COCO instance json used for instance AP); all stored in the metadata.
        metadata: Mask2Former-style panoptic metadata (:func:`mgfusion.data.categories.panoptic_metadata`).
    """
    loader = functools.partial(
        load_coco_panoptic, paths["panoptic_json"], paths["image_root"], paths["panoptic_root"], dict(metadata),
        sem_seg_root=paths["sem_seg_root"],
    )  # fmt: skip
    register_dataset(
        name,
        loader,
        {**metadata, **paths, "evaluator_type": "coco_panoptic_seg", "ignore_label": 255, "label_divisor": 1000},
        root=root,
        required=required,
        prepare=prepare,
    )
