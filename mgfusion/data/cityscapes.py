"""Cityscapes (fine) registration under ``$DETECTRON2_DATASETS/cityscapes`` (detectron2's layout).

Names:
    ``cityscapes_fine_instance_seg_{train,val}``  8 thing classes; masks read from ``*_gtFine_instanceIds.png``
                                                  (exact RLE masks, crowd groups kept with ``iscrowd=1``)
    ``cityscapes_fine_sem_seg_{train,val}``       19 classes from ``*_gtFine_labelTrainIds.png``
    ``cityscapes_fine_panoptic_{train,val}``      ``gtFine/cityscapes_panoptic_{split}[.json]``

The derived files (``labelTrainIds``, panoptic PNGs/json) come from ``python datasets/prepare_cityscapes.py``.
Unlike detectron2's builtin instance loader, this one needs neither the polygon jsons nor ``shapely``.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES, _get_builtin_metadata
from detectron2.structures import BoxMode

from .catalog import RequiredPath, datasets_root, register_dataset
from .labelmaps import read_label_png
from .loaders import load_coco_panoptic

__all__ = [
    "register_cityscapes",
    "load_cityscapes_instances",
    "load_cityscapes_semantic",
    "load_cityscapes_panoptic",
    "CITYSCAPES_SCRIPT",
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


def _instance_label_ids_to_contiguous() -> dict[int, int]:
    from cityscapesscripts.helpers.labels import labels

    instance_labels = [lab for lab in labels if lab.hasInstances and not lab.ignoreInEval]
    return {lab.id: i for i, lab in enumerate(instance_labels)}


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
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append(
            {
                "iscrowd": int(instance_id < 1000),
                "category_id": label_to_contiguous[label_id],
                "segmentation": rle,
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
    """Instance dicts with RLE masks from ``*_gtFine_instanceIds.png`` (category ids contiguous 0..7)."""
    files = _list_images(image_dir, gt_dir, "instanceIds")
    record = functools.partial(_instance_record, label_to_contiguous=_instance_label_ids_to_contiguous())
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


def _panoptic_metadata() -> dict:
    """detectron2's Cityscapes panoptic metadata: contiguous ids are train ids; class lists hold all 19 names."""
    names = [c["name"] for c in CITYSCAPES_CATEGORIES]
    colors = [list(c["color"]) for c in CITYSCAPES_CATEGORIES]
    return {
        "thing_classes": names,
        "thing_colors": colors,
        "stuff_classes": names,
        "stuff_colors": colors,
        "thing_dataset_id_to_contiguous_id": {c["id"]: c["trainId"] for c in CITYSCAPES_CATEGORIES if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: c["trainId"] for c in CITYSCAPES_CATEGORIES if not c["isthing"]},
    }


def register_cityscapes(root: str | os.PathLike | None = None) -> list[str]:
    """Register the Cityscapes fine names under ``root`` (default ``$DETECTRON2_DATASETS``); returns the names."""
    root_path = datasets_root(root)
    meta = _get_builtin_metadata("cityscapes")
    names = []
    for split in _SPLITS:
        image_dir = os.path.join(root_path, "cityscapes", "leftImg8bit", split)
        gt_dir = os.path.join(root_path, "cityscapes", "gtFine", split)
        folders = [RequiredPath(image_dir, f"{split} images (leftImg8bit)"), RequiredPath(gt_dir, "gtFine labels")]

        name = f"cityscapes_fine_instance_seg_{split}"
        register_dataset(
            name,
            functools.partial(load_cityscapes_instances, image_dir, gt_dir),
            {**meta, "image_dir": image_dir, "gt_dir": gt_dir, "evaluator_type": "cityscapes_instance"},
            root=root_path,
            required=folders,
        )
        names.append(name)

        name = f"cityscapes_fine_sem_seg_{split}"
        register_dataset(
            name,
            functools.partial(load_cityscapes_semantic, image_dir, gt_dir),
            {**meta, "image_dir": image_dir, "gt_dir": gt_dir, "evaluator_type": "cityscapes_sem_seg",
             "ignore_label": 255},
            root=root_path,
            required=folders,
        )  # fmt: skip
        names.append(name)

        panoptic_root = os.path.join(root_path, "cityscapes", "gtFine", f"cityscapes_panoptic_{split}")
        panoptic_json = f"{panoptic_root}.json"
        pan_meta = _panoptic_metadata()
        name = f"cityscapes_fine_panoptic_{split}"
        hint = f"create it with {CITYSCAPES_SCRIPT}"
        register_dataset(
            name,
            functools.partial(load_cityscapes_panoptic, image_dir, gt_dir, panoptic_root, panoptic_json, pan_meta),
            {**pan_meta, "image_root": image_dir, "panoptic_root": panoptic_root, "panoptic_json": panoptic_json,
             "gt_dir": gt_dir, "evaluator_type": "cityscapes_panoptic_seg", "ignore_label": 255,
             "label_divisor": 1000},
            root=root_path,
            required=[*folders, RequiredPath(panoptic_json, "panoptic annotation json", hint),
                      RequiredPath(panoptic_root, "folder of panoptic PNGs", hint)],
        )  # fmt: skip
        names.append(name)
    return names
