"""Loaders that turn COCO instance and COCO-panoptic annotation files into detectron2 dataset dicts.

The category ids of a file are mapped through the registered metadata (never re-derived from the file), so a
file whose categories differ from the metadata is an error naming the file, not a silently different class list.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json

from .catalog import RequiredPath, register_dataset

__all__ = [
    "check_categories",
    "load_coco_instances",
    "load_coco_panoptic",
    "load_semantic_from_panoptic_json",
    "panoptic_category_names",
    "register_coco_panoptic",
]


def _read_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _label_file(folder: str, file_name: str) -> str:
    return os.path.join(folder, os.path.splitext(file_name)[0] + ".png")


def check_categories(json_file: str, found: Mapping[int, str], expected: Mapping[int, str]) -> None:
    """Raise ``ValueError`` naming ``json_file`` unless its categories ``found`` (id -> name) are exactly
    ``expected``.

    The model's class count, the evaluators' class lists and the contiguous ids all come from the registered
    metadata, so an annotation file with other (or fewer) categories cannot be used under that name.
    """
    found = {int(k): str(v) for k, v in found.items()}
    expected = {int(k): str(v) for k, v in expected.items()}
    if found == expected:
        return
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    renamed = {i: (found[i], expected[i]) for i in sorted(set(found) & set(expected)) if found[i] != expected[i]}
    details = []
    if missing:
        details.append(f"missing category ids {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if extra:
        details.append(f"unexpected category ids {extra[:10]}{' ...' if len(extra) > 10 else ''}")
    if renamed:
        first = list(renamed.items())[:5]
        details.append("different names (file vs expected): " + ", ".join(f"{i}: {a!r} vs {b!r}" for i, (a, b) in first))
    raise ValueError(
        f"The categories of '{json_file}' do not match the dataset's metadata ({len(found)} in the file, "
        f"{len(expected)} expected): {'; '.join(details)}. The file must list all {len(expected)} categories with "
        f"the ids and names of the original dataset (see datasets/README.md); register a dataset of your own for "
        f"another class list."
    )


def panoptic_category_names(metadata: Mapping[str, Any]) -> dict[int, str]:
    """Dataset id -> name of every category of panoptic ``metadata`` (Mask2Former's convention, where
    ``stuff_classes`` lists all categories, or detectron2's, where stuff and thing maps are disjoint and
    ``thing_classes`` lists all categories)."""
    names = {int(d): metadata["stuff_classes"][c] for d, c in metadata["stuff_dataset_id_to_contiguous_id"].items()}
    for d, c in metadata["thing_dataset_id_to_contiguous_id"].items():
        if int(d) not in names:
            names[int(d)] = metadata["thing_classes"][c]
    return names


def load_coco_instances(json_file: str, image_root: str, metadata: Mapping[str, Any]) -> list[dict]:
    """Dataset dicts of a COCO instance json with category ids mapped by ``thing_dataset_id_to_contiguous_id``.

    detectron2's ``load_coco_json(json_file, image_root, dataset_name)`` writes the file's class list into the
    dataset's metadata (which collides with a registered metadata that differs). Here the file is parsed under a
    scratch metadata entry, its categories must equal the registered things (:func:`check_categories`), and the
    category ids are mapped to the registered contiguous ids.

    Returns:
        ``[{file_name, image_id, height, width, annotations: [{category_id (contiguous), bbox, bbox_mode,
        segmentation, iscrowd}, ...]}, ...]``
    """
    id_map = {int(k): int(v) for k, v in metadata["thing_dataset_id_to_contiguous_id"].items()}
    classes = list(metadata["thing_classes"])
    if sorted(id_map.values()) != list(range(len(classes))):
        raise ValueError(
            f"instance metadata needs contiguous thing ids 0..{len(classes) - 1} (one per thing class), "
            f"got {sorted(id_map.values())[:10]}..."
        )
    scratch = f"__mgfusion_coco_scratch_{uuid.uuid4().hex}"  # "coco": no warning about non-1..N ids
    try:
        dicts = load_coco_json(json_file, image_root, dataset_name=scratch)
        parsed = MetadataCatalog.get(scratch)
        file_classes, file_map = list(parsed.thing_classes), dict(parsed.thing_dataset_id_to_contiguous_id)
    finally:
        MetadataCatalog.remove(scratch)
    check_categories(
        json_file,
        {dataset_id: file_classes[i] for dataset_id, i in file_map.items()},
        {dataset_id: classes[i] for dataset_id, i in id_map.items()},
    )
    to_registered = {file_map[dataset_id]: id_map[dataset_id] for dataset_id in id_map}
    for record in dicts:
        for ann in record["annotations"]:
            ann["category_id"] = to_registered[ann["category_id"]]
    if not dicts:
        raise ValueError(f"No images in instance json '{json_file}'.")
    return dicts


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
    found = {c["id"]: c["name"] for c in content["categories"]}
    check_categories(panoptic_json, found, panoptic_category_names(metadata))
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
