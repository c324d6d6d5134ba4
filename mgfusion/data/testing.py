"""Tiny datasets in the real on-disk layouts of COCO, Cityscapes and ADE20K, rendered from synthetic scenes.

For tests and smoke runs of the real registration / preparation / evaluation code without downloading data.
Each writer renders :func:`~mgfusion.data.synthetic.render_scene` scenes, maps the 4 synthetic thing classes and
2 stuff classes onto real categories, and writes the files the real datasets ship (raw annotations only; the
derived files are then made by the project's preparation code, as a user would). The first image's last
instance is a crowd region (COCO ``iscrowd``, Cityscapes group id, ADE20K: no instance annotation), and
Cityscapes / ADE20K images get an unlabeled band (void / "other") along the top.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from PIL import Image

from .categories import ADE20K_INSTANCE_TO_SEMANTIC
from .labelmaps import id_to_rgb
from .preparation import (
    prepare_ade20k_panoptic_and_instance,
    prepare_ade20k_semantic,
    prepare_cityscapes,
    prepare_coco_semantic_from_panoptic,
)
from .synthetic import Scene, SyntheticConfig, render_scene

__all__ = ["write_tiny_coco", "write_tiny_cityscapes", "write_tiny_ade20k", "write_tiny_datasets", "tiny_scenes"]

# synthetic thing index -> real category; synthetic stuff index -> real category
COCO_THINGS, COCO_STUFF = (1, 3, 18, 44), (184, 187)  # person car dog bottle / tree-merged, sky-other-merged
CITYSCAPES_THINGS, CITYSCAPES_STUFF = (24, 25, 26, 33), (7, 23)  # person rider car bicycle / road sky
ADE_THINGS, ADE_STUFF = (4, 9, 1, 83), (1, 3)  # instance ids: person car bed bicycle / semantic ids: wall sky
VOID_ROWS = 3


def tiny_scenes(num_images: int, size: int, seed: int) -> Iterator[Scene]:
    """``num_images`` synthetic scenes of ``size`` x ``size`` pixels, deterministic in ``seed``."""
    config = SyntheticConfig(image_size=size, num_train=num_images, num_val=1, seed=seed, min_objects=3)
    for index in range(num_images):
        yield render_scene(np.random.default_rng([seed, 7, index]), config)


def _crowd_instance(scene: Scene, image_index: int) -> int:
    """1-based id of the instance that is a crowd region (0 = none)."""
    return len(scene.instance_classes) if image_index == 0 else 0


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[-2]
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content), encoding="utf-8")


def write_tiny_coco(
    root: str | os.PathLike,
    split: str = "val",
    num_images: int = 2,
    size: int = 64,
    seed: int = 0,
    polygons: bool = False,
) -> Path:
    """``coco/{split}2017``, instance + panoptic jsons and PNGs, then ``panoptic_semseg_{split}2017`` via
    :func:`prepare_coco_semantic_from_panoptic`. Instance masks are RLE, or with ``polygons`` the non-crowd ones
    are contour polygons (as in real COCO; they then differ slightly from the panoptic masks)."""
    coco = Path(root) / "coco"
    image_dir, pan_dir = coco / f"{split}2017", coco / f"panoptic_{split}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    pan_dir.mkdir(parents=True, exist_ok=True)
    images, instances, panoptic = [], [], []
    for index, scene in enumerate(tiny_scenes(num_images, size, seed)):
        image_id = 1000 + index
        stem = f"{image_id:012d}"
        Image.fromarray(scene.image).save(image_dir / f"{stem}.jpg", quality=95)
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": size, "width": size})
        crowd = _crowd_instance(scene, index)
        pan_ids = np.where(scene.instance_map > 0, scene.instance_map, 100 + scene.stuff_map)
        segments = []
        for k, thing in enumerate(scene.instance_classes.tolist(), start=1):
            mask = scene.instance_map == k
            category = COCO_THINGS[thing]
            segmentation = _polygons(mask) if polygons and k != crowd else _rle(mask)
            instances.append(
                {"id": len(instances) + 1, "image_id": image_id, "category_id": category, "iscrowd": int(k == crowd),
                 "area": int(mask.sum()), "bbox": _bbox(mask), "segmentation": segmentation}
            )  # fmt: skip
            segments.append({"id": k, "category_id": category, "iscrowd": int(k == crowd), "area": int(mask.sum()),
                             "bbox": _bbox(mask)})  # fmt: skip
        for stuff in np.unique(scene.stuff_map[scene.instance_map == 0]).tolist():
            mask = pan_ids == 100 + stuff
            segments.append({"id": 100 + stuff, "category_id": COCO_STUFF[stuff], "iscrowd": 0, "area": int(mask.sum()),
                             "bbox": _bbox(mask)})  # fmt: skip
        Image.fromarray(id_to_rgb(pan_ids)).save(pan_dir / f"{stem}.png")
        panoptic.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments})
    things = [{"id": c["id"], "name": c["name"], "supercategory": "x"} for c in COCO_CATEGORIES if c["isthing"]]
    _json(coco / "annotations" / f"instances_{split}2017.json",
          {"images": images, "annotations": instances, "categories": things})  # fmt: skip
    pan_json = coco / "annotations" / f"panoptic_{split}2017.json"
    _json(pan_json, {"images": images, "annotations": panoptic, "categories": list(COCO_CATEGORIES)})
    prepare_coco_semantic_from_panoptic(
        str(pan_json), str(pan_dir), str(coco / f"panoptic_semseg_{split}2017"), [c["id"] for c in COCO_CATEGORIES]
    )
    return coco


def write_tiny_cityscapes(
    root: str | os.PathLike, split: str = "val", num_images: int = 2, size: int = 96, seed: int = 1
) -> Path:
    """``cityscapes/leftImg8bit`` + ``gtFine`` (labelIds, instanceIds), then ``labelTrainIds`` and the panoptic
    files via :func:`prepare_cityscapes` (as ``datasets/prepare_cityscapes.py`` does)."""
    city = "frankfurt"
    base = Path(root) / "cityscapes"
    image_dir, gt_dir = base / "leftImg8bit" / split / city, base / "gtFine" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for index, scene in enumerate(tiny_scenes(num_images, size, seed)):
        stem = f"{city}_000000_{index:06d}"
        label_ids = np.where(
            scene.instance_map > 0,
            np.asarray((0, *CITYSCAPES_THINGS))[np.concatenate([[0], scene.instance_classes + 1])[scene.instance_map]],
            np.asarray(CITYSCAPES_STUFF)[scene.stuff_map],
        )
        label_ids[:VOID_ROWS] = 0  # "unlabeled"
        crowd = _crowd_instance(scene, index)
        instance_ids = np.where(
            (scene.instance_map > 0) & (scene.instance_map != crowd), label_ids * 1000 + scene.instance_map, label_ids
        )
        instance_ids[:VOID_ROWS] = 0
        Image.fromarray(scene.image).save(image_dir / f"{stem}_leftImg8bit.png")
        Image.fromarray(label_ids.astype(np.uint8)).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(instance_ids.astype(np.uint16)).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
    prepare_cityscapes(str(base), splits=[split])
    return base


def write_tiny_ade20k(root: str | os.PathLike, num_images: int = 2, size: int = 64, seed: int = 2) -> Path:
    """``ADEChallengeData2016`` with images, raw ``annotations`` and ``annotations_instance`` for both splits,
    then the derived files via :func:`prepare_ade20k_semantic` and :func:`prepare_ade20k_panoptic_and_instance`."""
    ade = Path(root) / "ADEChallengeData2016"
    semantic_of_thing = np.asarray(ADE20K_INSTANCE_TO_SEMANTIC) + 1
    for split, folder in (("train", "training"), ("val", "validation")):
        dirs = {k: ade / k / folder for k in ("images", "annotations", "annotations_instance")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        for index, scene in enumerate(tiny_scenes(num_images, size, seed + (split == "val"))):
            stem = f"ADE_{split}_{index + 1:08d}"
            instance_class = np.asarray((0, *ADE_THINGS))[np.concatenate([[0], scene.instance_classes + 1])]
            semantic = np.where(
                scene.instance_map > 0,
                np.concatenate([[0], semantic_of_thing[instance_class[1:] - 1]])[scene.instance_map],
                np.asarray(ADE_STUFF)[scene.stuff_map],
            )
            semantic[:VOID_ROWS] = 0  # "other"
            unannotated = _crowd_instance(scene, index)  # a thing region without instance annotation -> VOID
            annotated = (scene.instance_map > 0) & (scene.instance_map != unannotated)
            annotated[:VOID_ROWS] = False
            rgb = np.zeros((size, size, 3), dtype=np.uint8)
            rgb[..., 0] = np.where(annotated, instance_class[scene.instance_map], 0)
            rgb[..., 1] = np.where(annotated, scene.instance_map, 0)
            Image.fromarray(scene.image).save(dirs["images"] / f"{stem}.jpg", quality=95)
            Image.fromarray(semantic.astype(np.uint8)).save(dirs["annotations"] / f"{stem}.png")
            Image.fromarray(rgb).save(dirs["annotations_instance"] / f"{stem}.png")
    prepare_ade20k_semantic(str(ade))
    prepare_ade20k_panoptic_and_instance(str(ade))
    return ade


def write_tiny_datasets(root: str | os.PathLike) -> Path:
    """All three tiny datasets (COCO val, Cityscapes val, ADE20K train+val) under ``root``; returns ``root``."""
    write_tiny_coco(root)
    write_tiny_cityscapes(root)
    write_tiny_ade20k(root)
    return Path(root)
