"""Conversions that derive training files from the raw datasets (used by the scripts in ``datasets/``).

* :func:`prepare_ade20k_semantic`: ``annotations/`` (0 = other, 1..150) -> ``annotations_detectron2/`` (0..149, 255).
* :func:`prepare_ade20k_panoptic_and_instance`: ``annotations/`` + ``annotations_instance/`` (R = instance class
  1..100, G = instance id) -> COCO-panoptic PNGs + json and a COCO instance json (150-class dataset ids).
* :func:`prepare_coco_semantic_from_panoptic`: COCO panoptic PNGs -> semantic PNGs with contiguous ids 0..132
  (things first, the Mask2Former convention), 255 for unlabeled pixels.
* :func:`prepare_cityscapes`: ``*_gtFine_labelIds.png`` -> ``*_gtFine_labelTrainIds.png`` (the same map as
  cityscapesscripts' ``createTrainIdLabelImgs``, read from the label-id PNG instead of re-drawing the polygons),
  then the panoptic PNGs + json with cityscapesscripts' ``createPanopticImgs`` (category ids = label ids).

Every function walks files in sorted order, is deterministic, processes images in parallel with ``workers``
processes (1 = in this process) and writes each output file atomically (:mod:`mgfusion.utils.io`: temporary file,
fsync, rename), so a killed run leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from mgfusion.utils.io import atomic_write_text

from .categories import ADE20K_INSTANCE_TO_SEMANTIC, ade20k_categories
from .labelmaps import (
    id_to_rgb,
    lookup_segment_labels,
    mask_bbox_xywh,
    mask_to_rle,
    read_label_png,
    rgb_to_id,
    write_label_png,
)

__all__ = [
    "prepare_ade20k_panoptic_and_instance",
    "prepare_ade20k_semantic",
    "prepare_cityscapes",
    "prepare_coco_semantic_from_panoptic",
]

T = TypeVar("T")
R = TypeVar("R")


def _parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str) -> list[R]:
    if workers <= 1:
        return [fn(item) for item in tqdm(items, desc=desc, leave=False)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(fn, items, chunksize=16), total=len(items), desc=desc, leave=False))


def _write_json(path: str, content: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(content))


def _pngs(folder: str) -> list[str]:
    files = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    if not files:
        raise FileNotFoundError(f"No .png label files in '{folder}'.")
    return files


# ------------------------------------------------------------------------------------------------- ADE20K


def _ade_semantic_one(name: str, src: str, dst: str) -> None:
    raw = read_label_png(os.path.join(src, name)).astype(np.int64)
    write_label_png(os.path.join(dst, name), np.where(raw == 0, 255, raw - 1))


_ADE20K_FOLDERS = {"train": "training", "val": "validation"}


def prepare_ade20k_semantic(ade_root: str, workers: int = 1, splits: Sequence[str] = ("train", "val")) -> list[str]:
    """Write ``annotations_detectron2/{training,validation}`` from ``annotations/``; returns the folders."""
    outputs = []
    for folder in (_ADE20K_FOLDERS[split] for split in splits):
        src = os.path.join(ade_root, "annotations", folder)
        dst = os.path.join(ade_root, "annotations_detectron2", folder)
        os.makedirs(dst, exist_ok=True)
        _parallel_map(functools.partial(_ade_semantic_one, src=src, dst=dst), _pngs(src), workers, f"ADE20K {folder}")
        outputs.append(dst)
    return outputs


def _image_number(stem: str) -> int:
    """``ADE_val_00000042`` -> 42 (the image id used in the jsons)."""
    return int(stem.rsplit("_", 1)[-1])


def _ade_panoptic_one(name: str, semantic_dir: str, instance_dir: str, panoptic_dir: str) -> dict[str, Any]:
    """Convert one ADE20K image; returns its image entry, panoptic annotation and instance annotations."""
    stem = os.path.splitext(name)[0]
    semantic = read_label_png(os.path.join(semantic_dir, name)).astype(np.int64)  # 0 = other, 1..150
    instance_rgb = read_label_png(os.path.join(instance_dir, name))
    instance_class, instance_id = instance_rgb[..., 0].astype(np.int64), instance_rgb[..., 1].astype(np.int64)
    thing_to_semantic = np.asarray((-1, *ADE20K_INSTANCE_TO_SEMANTIC)) + 1  # instance class 1..100 -> 1..150
    is_thing_class = np.zeros(151, dtype=bool)
    is_thing_class[thing_to_semantic[1:]] = True

    panoptic = np.zeros(semantic.shape, dtype=np.int64)
    segments, instances = [], []
    for inst in np.unique(instance_id[instance_id > 0]).tolist():
        mask = instance_id == inst
        classes, counts = np.unique(instance_class[mask], return_counts=True)
        inst_class = int(classes[np.argmax(counts)])
        if not 1 <= inst_class <= 100:
            continue
        segment_id = len(segments) + 1
        panoptic[mask] = segment_id
        category_id = int(thing_to_semantic[inst_class])
        area, bbox = int(mask.sum()), mask_bbox_xywh(mask)
        segments.append({"id": segment_id, "category_id": category_id, "area": area, "bbox": bbox, "iscrowd": 0})
        instances.append(
            {"category_id": category_id, "area": area, "bbox": bbox, "iscrowd": 0, "segmentation": mask_to_rle(mask)}
        )
    stuff_free = (panoptic == 0) & (semantic > 0) & ~is_thing_class[semantic]
    for category_id in np.unique(semantic[stuff_free]).tolist():
        mask = stuff_free & (semantic == category_id)
        segment_id = len(segments) + 1
        panoptic[mask] = segment_id
        segments.append(
            {"id": segment_id, "category_id": int(category_id), "area": int(mask.sum()), "bbox": mask_bbox_xywh(mask),
             "iscrowd": 0}
        )  # fmt: skip
    write_label_png(os.path.join(panoptic_dir, name), id_to_rgb(panoptic))
    image_id = _image_number(stem)
    height, width = semantic.shape
    return {
        "image": {"id": image_id, "file_name": f"{stem}.jpg", "height": int(height), "width": int(width)},
        "panoptic": {"image_id": image_id, "file_name": name, "segments_info": segments},
        "instances": [{**ann, "image_id": image_id} for ann in instances],
    }


def prepare_ade20k_panoptic_and_instance(
    ade_root: str, workers: int = 1, splits: Sequence[str] = ("train", "val")
) -> list[str]:
    """Write ``ade20k_panoptic_{train,val}[.json]`` and ``ade20k_instance_{train,val}.json``; returns the jsons.

    Pixels of a thing class not covered by an instance annotation, and "other" pixels, are VOID (id 0).
    """
    categories = ade20k_categories()
    outputs = []
    for split in splits:
        folder = _ADE20K_FOLDERS[split]
        semantic_dir = os.path.join(ade_root, "annotations", folder)
        instance_dir = os.path.join(ade_root, "annotations_instance", folder)
        panoptic_dir = os.path.join(ade_root, f"ade20k_panoptic_{split}")
        os.makedirs(panoptic_dir, exist_ok=True)
        convert = functools.partial(
            _ade_panoptic_one, semantic_dir=semantic_dir, instance_dir=instance_dir, panoptic_dir=panoptic_dir
        )
        results = _parallel_map(convert, _pngs(instance_dir), workers, f"ADE20K panoptic {split}")
        images = [r["image"] for r in results]
        instance_annotations = [ann for r in results for ann in r["instances"]]
        for index, ann in enumerate(instance_annotations, start=1):
            ann["id"] = index
        panoptic_json = os.path.join(ade_root, f"ade20k_panoptic_{split}.json")
        instance_json = os.path.join(ade_root, f"ade20k_instance_{split}.json")
        _write_json(
            panoptic_json,
            {"images": images, "annotations": [r["panoptic"] for r in results], "categories": categories},
        )
        _write_json(
            instance_json,
            {
                "images": images,
                "annotations": instance_annotations,
                "categories": [c for c in categories if c["isthing"]],
            },
        )
        outputs += [panoptic_json, instance_json]
    return outputs


# --------------------------------------------------------------------------------------------------- COCO


def _coco_semantic_one(annotation: dict[str, Any], panoptic_root: str, out_dir: str, id_map: dict[int, int]) -> None:
    ids = rgb_to_id(read_label_png(os.path.join(panoptic_root, annotation["file_name"])))
    segments: Iterable[dict] = annotation["segments_info"]
    segment_ids = [s["id"] for s in segments]
    labels = [id_map[s["category_id"]] for s in segments]
    semantic = lookup_segment_labels(ids, segment_ids, labels, fill=255)
    write_label_png(os.path.join(out_dir, os.path.splitext(annotation["file_name"])[0] + ".png"), semantic)


def prepare_coco_semantic_from_panoptic(
    panoptic_json: str,
    panoptic_root: str,
    out_dir: str,
    category_order: Sequence[int] | None = None,
    workers: int = 1,
) -> str:
    """Write one semantic PNG per panoptic annotation into ``out_dir``; returns ``out_dir``.

    Contiguous id i is the category with dataset id ``category_order[i]`` (default: the json's category order;
    COCO's script passes detectron2's ``COCO_CATEGORIES`` order, things first). Crowd segments keep their class.
    """
    with open(panoptic_json, encoding="utf-8") as f:
        content = json.load(f)
    order = [int(c["id"]) for c in content["categories"]] if category_order is None else list(category_order)
    id_map = {category_id: i for i, category_id in enumerate(order)}
    os.makedirs(out_dir, exist_ok=True)
    convert = functools.partial(_coco_semantic_one, panoptic_root=panoptic_root, out_dir=out_dir, id_map=id_map)
    _parallel_map(convert, content["annotations"], workers, os.path.basename(out_dir))
    return out_dir


# --------------------------------------------------------------------------------------------- Cityscapes


def _cityscapes_train_id_lut() -> np.ndarray:
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, 255, dtype=np.uint8)
    for label in labels:
        if 0 <= label.id < 256:
            lut[label.id] = label.trainId if 0 <= label.trainId < 255 else 255
    return lut


def _cityscapes_train_ids_one(label_file: str, lut: np.ndarray) -> None:
    labels = read_label_png(label_file)
    write_label_png(label_file.replace("_labelIds.png", "_labelTrainIds.png"), lut[labels])


def prepare_cityscapes(
    cityscapes_root: str, splits: Sequence[str] = ("train", "val"), workers: int = 1, verbose: bool = False
) -> list[str]:
    """Write ``labelTrainIds`` PNGs and ``gtFine/cityscapes_panoptic_{split}[.json]``; returns the panoptic jsons."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    gt_root = os.path.join(cityscapes_root, "gtFine")
    lut = _cityscapes_train_id_lut()
    for split in splits:
        files = sorted(glob.glob(os.path.join(gt_root, split, "*", "*_gtFine_labelIds.png")))
        if not files:
            raise FileNotFoundError(f"No '*_gtFine_labelIds.png' under '{os.path.join(gt_root, split)}'.")
        _parallel_map(functools.partial(_cityscapes_train_ids_one, lut=lut), files, workers, f"trainIds {split}")
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        convert2panoptic(cityscapesPath=gt_root, setNames=list(splits))
    return [os.path.join(gt_root, f"cityscapes_panoptic_{split}.json") for split in splits]
