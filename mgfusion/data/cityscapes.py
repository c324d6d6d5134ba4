"""Cityscapes (fine) registration under ``$DETECTRON2_DATASETS/cityscapes`` (detectron2's layout).

Names (``mgf_`` + detectron2's name; detectron2's own registrations stay untouched):
    ``mgf_cityscapes_fine_instance_seg_{train,val}``  8 thing classes (contiguous 0..7 in label-id order); masks
                                                      read from ``*_gtFine_instanceIds.png`` (exact RLE masks,
                                                      crowd groups kept with ``iscrowd=1``)
    ``mgf_cityscapes_fine_sem_seg_{train,val}``       19 classes (train ids) from ``*_gtFine_labelTrainIds.png``
    ``mgf_cityscapes_fine_panoptic_{train,val}``      ``gtFine/cityscapes_panoptic_{split}[.json]``, contiguous
                                                      ids = train ids (detectron2's panoptic metadata)

The derived files (``labelTrainIds``, panoptic PNGs/json) come from ``python datasets/prepare_cityscapes.py``.
Unlike detectron2's builtin instance loader, this one needs neither the polygon jsons nor ``shapely``.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from detectron2.data.datasets.builtin_meta import (
    CITYSCAPES_CATEGORIES,
    _get_builtin_metadata,
)
from detectron2.structures import BoxMode

from .catalog import RequiredPath, datasets_root, mgf_name, register_dataset
from .labelmaps import mask_to_rle, read_label_png
from .loaders import load_coco_panoptic

__all__ = [
    "CITYSCAPES_SCRIPT",
    "cityscapes_instance_metadata",
    "cityscapes_panoptic_metadata",
    "cityscapes_semantic_metadata",
    "load_cityscapes_instances",
    "load_cityscapes_panoptic",
    "load_cityscapes_semantic",
    "register_cityscapes",
]

CITYSCAPES_SCRIPT = "python datasets/prepare_cityscapes.py"
_SPLITS = ("train", "val")
_IMAGE_SUFFIX = "_leftImg8bit.png"
_FIRST_INSTANCE_LABEL_ID = 24  # Cityscapes label ids below 24 have no instances


def _list_images(image_dir: str, gt_dir: str, gt_suffix: str) -> list[tuple[str, str]]:
    """(image file, ground-truth file) pairs, city by city, in sorted order."""
    pairs = []
    for city in sorted(os.listdir(image_dir)):
        for basename in sorted(os.listdir(os.path.join(image_dir, city))):
            if not basename.endswith(_IMAGE_SUFFIX):
                continue
            stem = basename[: -len(_IMAGE_SUFFIX)]
            pairs.append(
                (os.path.join(image_dir, city, basename), os.path.join(gt_dir, city, f"{stem}_gtFine_{gt_suffix}.png"))
            )
    if not pairs:
        raise FileNotFoundError(f"No '*{_IMAGE_SUFFIX}' images found under '{image_dir}'.")
    missing = [gt for _, gt in pairs if not os.path.isfile(gt)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(pairs)} Cityscapes label files are missing, e.g. '{missing[0]}'. "
            f"Create the derived label files with {CITYSCAPES_SCRIPT}."
        )
    return pairs


def _by_train_id() -> list[dict]:
    return sorted(CITYSCAPES_CATEGORIES, key=lambda c: c["trainId"])


def cityscapes_instance_metadata() -> dict:
    """Instance metadata: detectron2's ``cityscapes`` class lists plus colours and the label id -> contiguous id
    map of the 8 thing classes (``{24: 0, 25: 1, ..., 33: 7}``, label-id order), which instance inference needs."""
    things = sorted((c for c in CITYSCAPES_CATEGORIES if c["isthing"]), key=lambda c: c["id"])
    return {
        **_get_builtin_metadata("cityscapes"),
        "thing_colors": [list(c["color"]) for c in things],
        "stuff_colors": [list(c["color"]) for c in _by_train_id()],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
        "ignore_label": 255,
    }


def cityscapes_semantic_metadata() -> dict:
    """Semantic metadata: the 19 classes in train-id order, ``stuff_dataset_id_to_contiguous_id`` = label id ->
    train id, ignore label 255."""
    return {
        **_get_builtin_metadata("cityscapes"),
        "stuff_colors": [list(c["color"]) for c in _by_train_id()],
        "stuff_dataset_id_to_contiguous_id": {c["id"]: c["trainId"] for c in _by_train_id()},
        "ignore_label": 255,
    }


def cityscapes_panoptic_metadata() -> dict:
    """detectron2's Cityscapes panoptic metadata: contiguous ids are train ids; class lists hold all 19 names;
    thing and stuff maps (label id -> train id) are disjoint."""
    categories = _by_train_id()
    names = [c["name"] for c in categories]
    colors = [list(c["color"]) for c in categories]
    return {
        "thing_classes": names,
        "thing_colors": colors,
        "stuff_classes": names,
        "stuff_colors": colors,
        "thing_dataset_id_to_contiguous_id": {c["id"]: c["trainId"] for c in categories if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: c["trainId"] for c in categories if not c["isthing"]},
        "ignore_label": 255,
        "label_divisor": 1000,
    }


def _instance_record(files: tuple[str, str], label_to_contiguous: dict[int, int]) -> dict:
    image_file, instance_file = files
    ids = read_label_png(instance_file).astype(np.int64)
    annotations = []
    for instance_id in np.unique(ids[ids >= _FIRST_INSTANCE_LABEL_ID]).tolist():
        label_id = instance_id // 1000 if instance_id >= 1000 else instance_id  # ids < 1000 are crowd groups
        if label_id not in label_to_contiguous:
            continue
        mask = ids == instance_id
        ys, xs = np.nonzero(mask)
        annotations.append(
            {
                "iscrowd": int(instance_id < 1000),
                "category_id": label_to_contiguous[label_id],
                "segmentation": mask_to_rle(mask),
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                "bbox_mode": BoxMode.XYXY_ABS,
            }
        )
    return {
        "file_name": image_file,
        "image_id": os.path.basename(image_file),
        "height": int(ids.shape[0]),
        "width": int(ids.shape[1]),
        "annotations": annotations,
    }


def load_cityscapes_instances(image_dir: str, gt_dir: str, num_workers: int = 8) -> list[dict]:
    """Instance dicts with RLE masks from ``*_gtFine_instanceIds.png`` (category ids contiguous 0..7, as in
    :func:`cityscapes_instance_metadata`)."""
    files = _list_images(image_dir, gt_dir, "instanceIds")
    label_to_contiguous = cityscapes_instance_metadata()["thing_dataset_id_to_contiguous_id"]
    record = functools.partial(_instance_record, label_to_contiguous=label_to_contiguous)
    workers = max(1, min(num_workers, os.cpu_count() or 1, len(files)))
    if workers == 1:
        return [record(f) for f in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(record, files))


def load_cityscapes_semantic(image_dir: str, gt_dir: str) -> list[dict]:
    """Semantic dicts ``{file_name, image_id, sem_seg_file_name}`` with ``*_gtFine_labelTrainIds.png`` labels."""
    return [
        {"file_name": image, "image_id": os.path.basename(image), "sem_seg_file_name": label}
        for image, label in _list_images(image_dir, gt_dir, "labelTrainIds")
    ]


def _city_subpath(image: dict, suffix: str) -> str:
    """``<city>/<image id><suffix>``; the panoptic json's image id is ``<city>_<seq>_<frame>``."""
    stem = str(image["id"])
    return os.path.join(stem.split("_")[0], stem + suffix)


def load_cityscapes_panoptic(
    image_dir: str, gt_dir: str, panoptic_root: str, panoptic_json: str, meta: dict
) -> list[dict]:
    """Panoptic dicts of ``gtFine/cityscapes_panoptic_{split}.json`` with ``labelTrainIds`` as ``sem_seg_file_name``."""
    return load_coco_panoptic(
        panoptic_json,
        image_dir,
        panoptic_root,
        meta,
        sem_seg_root=gt_dir,
        image_subpath=functools.partial(_city_subpath, suffix=_IMAGE_SUFFIX),
        sem_seg_subpath=functools.partial(_city_subpath, suffix="_gtFine_labelTrainIds.png"),
    )


def register_cityscapes(root: str | os.PathLike | None = None) -> list[str]:
    """Register the Cityscapes fine names under ``root`` (default ``$DETECTRON2_DATASETS``); returns the names."""
    root_path = datasets_root(root)
    hint = f"create it with {CITYSCAPES_SCRIPT}"
    names = []
    for split in _SPLITS:
        image_dir = os.path.join(root_path, "cityscapes", "leftImg8bit", split)
        gt_dir = os.path.join(root_path, "cityscapes", "gtFine", split)
        folders = [RequiredPath(image_dir, f"{split} images (leftImg8bit)"), RequiredPath(gt_dir, "gtFine labels")]
        folder_meta = {"image_dir": image_dir, "gt_dir": gt_dir}

        name = mgf_name(f"cityscapes_fine_instance_seg_{split}")
        register_dataset(
            name,
            functools.partial(load_cityscapes_instances, image_dir, gt_dir),
            {**cityscapes_instance_metadata(), **folder_meta, "evaluator_type": "cityscapes_instance"},
            root=root_path,
            required=folders,
        )
        names.append(name)

        name = mgf_name(f"cityscapes_fine_sem_seg_{split}")
        register_dataset(
            name,
            functools.partial(load_cityscapes_semantic, image_dir, gt_dir),
            {**cityscapes_semantic_metadata(), **folder_meta, "evaluator_type": "cityscapes_sem_seg"},
            root=root_path,
            required=folders,
        )
        names.append(name)

        panoptic_root = os.path.join(root_path, "cityscapes", "gtFine", f"cityscapes_panoptic_{split}")
        panoptic_json = f"{panoptic_root}.json"
        pan_meta = cityscapes_panoptic_metadata()
        name = mgf_name(f"cityscapes_fine_panoptic_{split}")
        register_dataset(
            name,
            functools.partial(load_cityscapes_panoptic, image_dir, gt_dir, panoptic_root, panoptic_json, pan_meta),
            {**pan_meta, "image_root": image_dir, "panoptic_root": panoptic_root, "panoptic_json": panoptic_json,
             "gt_dir": gt_dir, "evaluator_type": "cityscapes_panoptic_seg"},
            root=root_path,
            required=[*folders, RequiredPath(panoptic_json, "panoptic annotation json", hint),
                      RequiredPath(panoptic_root, "folder of panoptic PNGs", hint)],
        )  # fmt: skip
        names.append(name)
    return names
