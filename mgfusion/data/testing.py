"""Tiny datasets in the real on-disk layouts of COCO, Cityscapes and ADE20K, rendered from synthetic scenes.

For tests and smoke runs of the real registration / preparation / training / evaluation code without
downloading data. Each writer renders :func:`~mgfusion.data.synthetic.render_scene` scenes (cropped to the
requested height x width), maps the 4 synthetic thing classes and 2 stuff classes onto real categories and writes
the files the real dataset ships (the raw annotations). With ``prepare=True`` (default) it then makes the derived
files with the project's preparation code (:mod:`mgfusion.data.preparation`, what ``datasets/prepare_*.py`` run);
with ``prepare=False`` the tree is what a user has right after unpacking the downloads, and the
``datasets/prepare_*.py`` scripts can be run on it.

Conventions: the first image of each split has a crowd region (COCO ``iscrowd`` with an uncompressed RLE,
Cityscapes instance id = label id, ADE20K a thing region without instance annotation); Cityscapes / ADE20K images
get an unlabeled band (void / "other") along the top :data:`VOID_ROWS` rows.

API::

    write_tiny_coco(root, splits=("train", "val"), num_images=2, height=64, width=96, polygons=False, prepare=True)
    write_tiny_cityscapes(root, splits=("train", "val"), num_images=2, height=64, width=128, prepare=True)
    write_tiny_ade20k(root, splits=("train", "val"), num_images=2, height=64, width=80, prepare=True)
    write_tiny_datasets(root, families=("coco", "cityscapes", "ade20k"), prepare=True)
    TINY_WRITERS["coco"](root, ...)      # the writer of a family by name; DATASET_FAMILY["coco_panoptic"] == "coco"

Street scenes in Cityscapes' classes, each in its real layout and own label encoding (:func:`cityscapes_scene_labels`
gives the Cityscapes encoding they start from)::

    write_tiny_gta5(root, num_images=2, prepare=True)          write_tiny_synthia(root, num_images=2, prepare=True)
    write_tiny_bdd100k(root, splits=("train", "val"))          write_tiny_synscapes(root, num_images=2, prepare=True)
    write_tiny_mapillary(root, release="v1.2", prepare=True)   write_tiny_urbansyn(root, num_images=2, prepare=True)
    write_tiny_acdc(root, num_images=2)  # per condition       write_tiny_kitti360(root, num_images=2, prepare=True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from PIL import Image

from .categories import ADE20K_INSTANCE_TO_SEMANTIC, distinct_colors
from .labelmaps import (
    CITYSCAPES_LABEL_TO_TRAIN_ID,
    id_to_rgb,
    lookup_table,
    mask_bbox_xywh,
    mask_to_rle,
)
from .preparation import (
    prepare_ade20k_panoptic_and_instance,
    prepare_ade20k_semantic,
    prepare_cityscapes,
    prepare_coco_semantic_from_panoptic,
)
from .synthetic import Scene, SyntheticConfig, render_scene

__all__ = [
    "DATASET_FAMILY",
    "STREET_CONFIG_FAMILIES",
    "TINY_WRITERS",
    "VOID_ROWS",
    "cityscapes_scene_labels",
    "tiny_scenes",
    "write_tiny_acdc",
    "write_tiny_ade20k",
    "write_tiny_bdd100k",
    "write_tiny_cityscapes",
    "write_tiny_coco",
    "write_tiny_datasets",
    "write_tiny_gta5",
    "write_tiny_kitti360",
    "write_tiny_mapillary",
    "write_tiny_synscapes",
    "write_tiny_synthia",
    "write_tiny_urbansyn",
]

# synthetic thing index -> real category; synthetic stuff index -> real category
COCO_THINGS, COCO_STUFF = (1, 3, 18, 44), (184, 187)  # person car dog bottle / tree-merged, sky-other-merged
CITYSCAPES_THINGS, CITYSCAPES_STUFF = (24, 25, 26, 33), (7, 23)  # person rider car bicycle / road sky
ADE_THINGS, ADE_STUFF = (4, 9, 1, 83), (1, 3)  # instance ids: person car bed bicycle / semantic ids: wall sky
VOID_ROWS = 3
MIN_INSTANCE_PIXELS = 16  # smaller fragments left by the crop become background
CITYSCAPES_CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau"), "test": ("berlin",)}
ADE20K_FOLDERS = {"train": "training", "val": "validation"}

#: family of each dataset config in configs/dataset/ (the synthetic family needs no tree: it is generated)
DATASET_FAMILY = {
    f"{family}_{task}": family
    for family, tasks in (
        ("coco", ("instance", "panoptic")),
        ("cityscapes", ("instance", "semantic", "panoptic")),
        ("ade20k", ("instance", "semantic", "panoptic")),
    )
    for task in tasks
}
#: the street-scene configs (source -> targets): every family whose tree each one reads, source first
STREET_CONFIG_FAMILIES: dict[str, tuple[str, ...]] = {
    "kitti360_instance": ("kitti360",),
    "synthia_to_cs_instance": ("synthia", "cityscapes"),
    "synscapes_to_cs_instance": ("synscapes", "cityscapes"),
    "urbansyn_to_cs_instance": ("urbansyn", "cityscapes"),
    "synthia_to_cs_bdd_map": ("synthia", "cityscapes", "bdd100k", "mapillary"),
    "gta5_to_cs_bdd_map": ("gta5", "cityscapes", "bdd100k", "mapillary"),
    "cs_to_bdd_map_acdc": ("cityscapes", "bdd100k", "mapillary", "acdc"),
    "cs_to_acdc": ("cityscapes", "acdc"),
}
DATASET_FAMILY.update({name: families[0] for name, families in STREET_CONFIG_FAMILIES.items()})


def _crop_scene(scene: Scene, height: int, width: int) -> Scene:
    """The top-left ``height`` x ``width`` part, instances renumbered 1..N, crop fragments dropped."""
    instance_map = scene.instance_map[:height, :width]
    areas = np.bincount(instance_map.ravel(), minlength=len(scene.instance_classes) + 1)
    keep = np.flatnonzero(areas[1:] >= MIN_INSTANCE_PIXELS) + 1
    renumber = np.zeros(len(areas), dtype=np.int64)
    renumber[keep] = np.arange(1, len(keep) + 1)
    return Scene(
        image=np.ascontiguousarray(scene.image[:height, :width]),
        stuff_map=scene.stuff_map[:height, :width],
        instance_map=renumber[instance_map],
        instance_classes=scene.instance_classes[keep - 1],
    )


def tiny_scenes(num_images: int, height: int, width: int, seed: int) -> Iterator[Scene]:
    """``num_images`` synthetic scenes of ``height`` x ``width`` pixels with at least 2 instances each,
    deterministic in ``seed``."""
    side = max(height, width)
    config = SyntheticConfig(image_size=side, num_train=num_images, num_val=1, seed=seed, min_objects=3)
    for index in range(num_images):
        for attempt in range(100):
            scene = _crop_scene(render_scene(np.random.default_rng([seed, 7, index, attempt]), config), height, width)
            if len(scene.instance_classes) >= 2:
                break
        else:  # pragma: no cover - a 3-object scene keeps 2 objects in a crop of at least half its side
            raise RuntimeError(f"no scene with 2 visible instances in {height}x{width} (seed {seed}, image {index})")
        yield scene


def _crowd_instance(scene: Scene, image_index: int) -> int:
    """1-based id of the instance that is a crowd region (0 = none): the last one of the first image."""
    return len(scene.instance_classes) if image_index == 0 else 0


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a bool mask as COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` (pixel corners)."""
    contours = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[-2]
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: ``{"counts": [run lengths, column-major, starting with 0s], "size": [H, W]}``."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"counts": counts, "size": list(mask.shape)}


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content), encoding="utf-8")


def _save(path: Path, array: np.ndarray, **save_kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save_kwargs)


# --------------------------------------------------------------------------------------------------- COCO


def _coco_split(coco: Path, split: str, num_images: int, height: int, width: int, seed: int, polygons: bool) -> None:
    images, instances, panoptic = [], [], []
    for index, scene in enumerate(tiny_scenes(num_images, height, width, seed)):
        image_id = 1000 * (split == "val") + 139 + index
        stem = f"{image_id:012d}"
        _save(coco / f"{split}2017" / f"{stem}.jpg", scene.image, quality=95)
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": height, "width": width, "license": 1})
        crowd = _crowd_instance(scene, index)
        # segment ids use two bytes of the PNG, as real COCO panoptic ids do
        thing_ids = 300 * np.arange(len(scene.instance_classes) + 1) + 7
        pan_ids = np.where(scene.instance_map > 0, thing_ids[scene.instance_map], 100 + scene.stuff_map)
        segments = []
        for k, thing in enumerate(scene.instance_classes.tolist(), start=1):
            mask = scene.instance_map == k
            category = COCO_THINGS[thing]
            segmentation = _uncompressed_rle(mask) if k == crowd else _polygons(mask) if polygons else mask_to_rle(mask)
            instances.append(
                {"id": len(instances) + 1, "image_id": image_id, "category_id": category, "iscrowd": int(k == crowd),
                 "area": int(mask.sum()), "bbox": mask_bbox_xywh(mask), "segmentation": segmentation}
            )  # fmt: skip
            segments.append({"id": int(thing_ids[k]), "category_id": category, "iscrowd": int(k == crowd),
                             "area": int(mask.sum()), "bbox": mask_bbox_xywh(mask)})  # fmt: skip
        for stuff in np.unique(scene.stuff_map[scene.instance_map == 0]).tolist():
            mask = pan_ids == 100 + stuff
            segments.append({"id": 100 + stuff, "category_id": COCO_STUFF[stuff], "iscrowd": 0,
                             "area": int(mask.sum()), "bbox": mask_bbox_xywh(mask)})  # fmt: skip
        _save(coco / f"panoptic_{split}2017" / f"{stem}.png", id_to_rgb(pan_ids))
        panoptic.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments})
    info = {"description": "mgfusion tiny COCO-layout test data", "year": 2017}
    licenses = [{"id": 1, "name": "CC0", "url": ""}]
    things = [{"id": c["id"], "name": c["name"], "supercategory": "thing"} for c in COCO_CATEGORIES if c["isthing"]]
    _write_json(coco / "annotations" / f"instances_{split}2017.json",
                {"info": info, "licenses": licenses, "images": images, "annotations": instances,
                 "categories": things})  # fmt: skip
    pan_categories = [{k: c[k] for k in ("id", "name", "isthing", "color")} for c in COCO_CATEGORIES]
    _write_json(coco / "annotations" / f"panoptic_{split}2017.json",
                {"info": info, "licenses": licenses, "images": images, "annotations": panoptic,
                 "categories": pan_categories})  # fmt: skip


def write_tiny_coco(
    root: str | os.PathLike,
    splits: Sequence[str] = ("train", "val"),
    num_images: int = 2,
    height: int = 64,
    width: int = 96,
    seed: int = 0,
    polygons: bool = False,
    prepare: bool = True,
) -> Path:
    """``coco/{split}2017/*.jpg``, ``annotations/{instances,panoptic}_{split}2017.json`` (all 80 / 133 COCO
    categories), ``panoptic_{split}2017/*.png``; with ``prepare`` also ``panoptic_semseg_{split}2017/`` (as
    ``datasets/prepare_coco_semantic_annos_from_panoptic.py`` writes it). Returns the ``coco`` folder.

    Instance masks are RLE (identical to the panoptic segments), or with ``polygons`` the non-crowd ones are contour
    polygons as in real COCO (they then differ slightly from the panoptic masks); crowd regions are uncompressed RLE.
    """
    coco = Path(root) / "coco"
    for offset, split in enumerate(splits):
        _coco_split(coco, split, num_images, height, width, seed + 10 * offset, polygons)
        if prepare:
            prepare_coco_semantic_from_panoptic(
                str(coco / "annotations" / f"panoptic_{split}2017.json"), str(coco / f"panoptic_{split}2017"),
                str(coco / f"panoptic_semseg_{split}2017"), [c["id"] for c in COCO_CATEGORIES],
            )  # fmt: skip
    return coco


# --------------------------------------------------------------------------------------------- Cityscapes


def _cityscapes_polygons(label_ids: np.ndarray, instance_ids: np.ndarray) -> dict:
    """``*_gtFine_polygons.json``: stuff regions, then instances (crowd groups as ``<label>group``)."""
    from cityscapesscripts.helpers.labels import id2label

    objects = []
    for label_id in np.unique(label_ids).tolist():
        if label_id == 0 or id2label[label_id].hasInstances:
            continue
        for polygon in _polygons(label_ids == label_id):
            objects.append({"label": id2label[label_id].name, "polygon": np.reshape(polygon, (-1, 2)).tolist()})
    for instance_id in np.unique(instance_ids[instance_ids >= 24]).tolist():
        crowd = instance_id < 1000
        label = id2label[instance_id if crowd else instance_id // 1000].name + ("group" if crowd else "")
        for polygon in _polygons(instance_ids == instance_id):
            objects.append({"label": label, "polygon": np.reshape(polygon, (-1, 2)).tolist()})
    return {"imgHeight": int(label_ids.shape[0]), "imgWidth": int(label_ids.shape[1]), "objects": objects}


def cityscapes_scene_labels(scene: Scene, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A tiny scene in Cityscapes' encoding (what every street-scene writer starts from).

    Returns:
        ``label_ids`` (H, W) int64 Cityscapes label ids (things person/rider/car/bicycle, stuff road/sky,
        0 = unlabeled in the top :data:`VOID_ROWS` rows); ``instance_ids`` (H, W) int64 as in
        ``*_gtFine_instanceIds.png`` (``label * 1000 + k`` for instance k, the bare label id for stuff and for the
        crowd instance); ``instance_map`` (H, W) int64 instance numbers 1..N (0 = none, void band cleared);
        ``crowd`` the 1-based number of the crowd instance (0 = none; the last instance of image 0).
    """
    things = np.asarray((0, *CITYSCAPES_THINGS))[np.concatenate([[0], scene.instance_classes + 1])]
    label_ids = np.where(scene.instance_map > 0, things[scene.instance_map],
                         np.asarray(CITYSCAPES_STUFF)[scene.stuff_map])  # fmt: skip
    label_ids[:VOID_ROWS] = 0  # "unlabeled"
    instance_map = scene.instance_map.copy()
    instance_map[:VOID_ROWS] = 0
    crowd = _crowd_instance(scene, index)
    instance_ids = np.where((instance_map > 0) & (instance_map != crowd), label_ids * 1000 + instance_map, label_ids)
    return label_ids, instance_ids, instance_map, crowd


def write_tiny_cityscapes(
    root: str | os.PathLike,
    splits: Sequence[str] = ("train", "val"),
    num_images: int = 2,
    height: int = 64,
    width: int = 128,
    seed: int = 1,
    prepare: bool = True,
) -> Path:
    """``cityscapes/leftImg8bit/{split}/<city>/*_leftImg8bit.png`` and ``gtFine/{split}/<city>/*_gtFine_{labelIds,
    instanceIds,color}.png`` + ``*_gtFine_polygons.json`` as in ``gtFine_trainvaltest.zip``; with ``prepare`` also
    ``*_gtFine_labelTrainIds.png`` and ``gtFine/cityscapes_panoptic_{split}[.json]`` via
    :func:`~mgfusion.data.preparation.prepare_cityscapes` (what ``datasets/prepare_cityscapes.py`` runs).
    Images alternate between two cities of the split. Returns the ``cityscapes`` folder."""
    from cityscapesscripts.helpers.labels import id2label

    base = Path(root) / "cityscapes"
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label_id, label in id2label.items():
        if 0 <= label_id < 256:
            palette[label_id] = label.color
    for offset, split in enumerate(splits):
        cities = CITYSCAPES_CITIES[split]
        for index, scene in enumerate(tiny_scenes(num_images, height, width, seed + 10 * offset)):
            city = cities[index % len(cities)]
            stem = f"{city}_{index:06d}_{19 + index:06d}"
            image_dir, gt_dir = base / "leftImg8bit" / split / city, base / "gtFine" / split / city
            label_ids, instance_ids = cityscapes_scene_labels(scene, index)[:2]
            _save(image_dir / f"{stem}_leftImg8bit.png", scene.image)
            _save(gt_dir / f"{stem}_gtFine_labelIds.png", label_ids.astype(np.uint8))
            _save(gt_dir / f"{stem}_gtFine_instanceIds.png", instance_ids.astype(np.uint16))
            _save(gt_dir / f"{stem}_gtFine_color.png", palette[label_ids])
            _write_json(gt_dir / f"{stem}_gtFine_polygons.json", _cityscapes_polygons(label_ids, instance_ids))
    if prepare:
        prepare_cityscapes(str(base), splits=list(splits))
    return base


# ------------------------------------------------------------------------------------------------- ADE20K


def write_tiny_ade20k(
    root: str | os.PathLike,
    splits: Sequence[str] = ("train", "val"),
    num_images: int = 2,
    height: int = 64,
    width: int = 80,
    seed: int = 2,
    prepare: bool = True,
) -> Path:
    """``ADEChallengeData2016/images/{training,validation}/*.jpg``, ``annotations/`` (0 = other, 1..150) and
    ``annotations_instance/`` (R = instance class 1..100, G = instance id) as unpacked from the downloads; with
    ``prepare`` also ``annotations_detectron2/``, ``ade20k_panoptic_{train,val}[.json]`` and
    ``ade20k_instance_{train,val}.json`` (what ``datasets/prepare_ade20k_*.py`` run). Returns the ADE folder."""
    ade = Path(root) / "ADEChallengeData2016"
    semantic_of_thing = np.asarray(ADE20K_INSTANCE_TO_SEMANTIC) + 1
    for offset, split in enumerate(splits):
        folder = ADE20K_FOLDERS[split]
        for index, scene in enumerate(tiny_scenes(num_images, height, width, seed + 10 * offset)):
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
            rgb = np.zeros((height, width, 3), dtype=np.uint8)
            rgb[..., 0] = np.where(annotated, instance_class[scene.instance_map], 0)
            rgb[..., 1] = np.where(annotated, scene.instance_map, 0)
            _save(ade / "images" / folder / f"{stem}.jpg", scene.image, quality=95)
            _save(ade / "annotations" / folder / f"{stem}.png", semantic.astype(np.uint8))
            _save(ade / "annotations_instance" / folder / f"{stem}.png", rgb)
    if prepare:
        prepare_ade20k_semantic(str(ade), splits=splits)
        prepare_ade20k_panoptic_and_instance(str(ade), splits=splits)
    return ade


# ------------------------------------------------------------------- street scenes in Cityscapes' classes
# Each writer renders the tiny scenes in Cityscapes' encoding (cityscapes_scene_labels) and re-encodes them in the
# dataset's own ids and files; with ``prepare`` it runs the preparation the dataset's datasets/prepare_*.py runs.

_LABEL_TO_TRAIN = lookup_table(CITYSCAPES_LABEL_TO_TRAIN_ID)
#: Cityscapes label id -> SYNTHIA class id (inverse of SYNTHIA_TO_TRAIN_ID on the tiny scenes' classes)
_SYNTHIA_OF_LABEL = {0: 0, 7: 3, 23: 1, 24: 10, 25: 17, 26: 8, 33: 11}
#: Cityscapes label id -> Mapillary v1.2 id per image (road alternates between road, lane marking and bike lane;
#: the void band between "Unlabeled" and "Bird", both ignored)
_MAPILLARY_OF_LABEL = ({0: 65, 7: 13, 23: 27, 24: 19, 25: 20, 26: 55, 33: 52},
                       {0: 0, 7: 24, 23: 27, 24: 19, 25: 21, 26: 55, 33: 52},
                       {0: 65, 7: 7, 23: 27, 24: 19, 25: 22, 26: 55, 33: 52})  # fmt: skip
KITTI360_SEQUENCES = {"train": "2013_05_28_drive_0000_sync", "val": "2013_05_28_drive_0010_sync"}


def _cityscapes_palette() -> np.ndarray:
    from cityscapesscripts.helpers.labels import id2label

    palette = np.zeros((256, 3), dtype=np.uint8)
    for label_id, label in id2label.items():
        if 0 <= label_id < 256:
            palette[label_id] = label.color
    return palette


def _save_palette_png(path: Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """An 8-bit palette ("P") PNG, as GTA5 and Mapillary ship their labels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(palette.reshape(-1).tolist())
    image.save(path)


def _street_scenes(num_images: int, height: int, width: int, seed: int):
    for index, scene in enumerate(tiny_scenes(num_images, height, width, seed)):
        yield index, scene, *cityscapes_scene_labels(scene, index)


def write_tiny_gta5(root: str | os.PathLike, num_images: int = 2, height: int = 64, width: int = 128, seed: int = 3,
                    prepare: bool = True) -> Path:  # fmt: skip
    """``gta/images/<5-digit>.png`` and ``gta/labels/<5-digit>.png`` (palette PNGs of Cityscapes label ids);
    with ``prepare`` also ``labels/*_labelTrainIds.png``. Returns the ``gta`` folder."""
    from .gta5 import prepare_gta5

    gta, palette = Path(root) / "gta", _cityscapes_palette()
    for index, scene, label_ids, *_ in _street_scenes(num_images, height, width, seed):
        _save(gta / "images" / f"{index + 1:05d}.png", scene.image)
        _save_palette_png(gta / "labels" / f"{index + 1:05d}.png", label_ids, palette)
    if prepare:
        prepare_gta5(str(gta))
    return gta


def write_tiny_bdd100k(root: str | os.PathLike, splits: Sequence[str] = ("train", "val"), num_images: int = 2,
                       height: int = 64, width: int = 112, seed: int = 4, prepare: bool = True) -> Path:  # fmt: skip
    """``bdd100k/images/10k/{split}/<name>.jpg`` and ``labels/sem_seg/masks/{split}/<name>.png`` (train ids, 255 =
    ignore); nothing to prepare (``prepare`` is accepted for the writers' common signature). Returns ``bdd100k``."""
    bdd = Path(root) / "bdd100k"
    for offset, split in enumerate(splits):
        for index, scene, label_ids, *_ in _street_scenes(num_images, height, width, seed + 10 * offset):
            name = f"{7 * index + 13 * offset:07x}-{index + 100:08x}"
            _save(bdd / "images" / "10k" / split / f"{name}.jpg", scene.image, quality=95)
            _save(bdd / "labels" / "sem_seg" / "masks" / split / f"{name}.png", _LABEL_TO_TRAIN[label_ids])
    return bdd


def write_tiny_mapillary(root: str | os.PathLike, splits: Sequence[str] = ("train", "val"), num_images: int = 2,
                         height: int = 64, width: int = 96, seed: int = 5, release: str = "v1.2",
                         prepare: bool = True) -> Path:  # fmt: skip
    """Mapillary Vistas with v1.2 labels in the layout of the ``release`` ("v1.2": ``config.json`` +
    ``{training,validation}/{images,labels}``; "v2.0": ``config_v1.2.json`` + ``{split}/v1.2/labels``); labels are
    palette PNGs of v1.2 class ids. With ``prepare`` also ``cityscapes_trainIdLabel/``. Returns ``mapillary``."""
    from .labelmaps import MAPILLARY_V12_CLASSES
    from .mapillary import _FOLDERS, _RELEASES, prepare_mapillary

    mapillary = Path(root) / "mapillary"
    config_name, labels_subdir = _RELEASES[release]
    colors = distinct_colors(len(MAPILLARY_V12_CLASSES), seed=66)
    labels = [{"name": name.lower().replace(" ", "-"), "readable": name, "color": colors[i],
               "instances": False, "evaluate": name != "Unlabeled"} for i, name in enumerate(MAPILLARY_V12_CLASSES)]  # fmt: skip
    _write_json(mapillary / config_name, {"labels": labels, "version": "1.2", "mapping": "public"})
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(colors)] = colors
    for offset, split in enumerate(splits):
        folder = mapillary / _FOLDERS[split]
        for index, scene, label_ids, *_ in _street_scenes(num_images, height, width, seed + 10 * offset):
            table = _MAPILLARY_OF_LABEL[(index + offset) % len(_MAPILLARY_OF_LABEL)]
            name = f"m{offset}{index:02d}AbCdEfGhIjKlMnOpQr"
            _save(folder / "images" / f"{name}.jpg", scene.image, quality=95)
            _save_palette_png(folder / labels_subdir / f"{name}.png", lookup_table(table, fill=0)[label_ids], palette)
    if prepare:
        prepare_mapillary(str(mapillary), splits=splits)
    return mapillary


def write_tiny_acdc(root: str | os.PathLike, splits: Sequence[str] = ("train", "val"), num_images: int = 2,
                    height: int = 64, width: int = 112, seed: int = 6, prepare: bool = True) -> Path:  # fmt: skip
    """ACDC: for each condition and split, ``rgb_anon/<condition>/<split>/<sequence>/*_rgb_anon.png`` and
    ``gt/.../*_gt_{labelIds,labelTrainIds}.png`` (``num_images`` per condition and split); nothing to prepare
    (``prepare`` is accepted for the writers' common signature). Returns the ``acdc`` folder."""
    from .acdc import ACDC_CONDITIONS

    acdc = Path(root) / "acdc"
    for c, condition in enumerate(ACDC_CONDITIONS):
        for offset, split in enumerate(splits):
            scenes = _street_scenes(num_images, height, width, seed + 10 * offset + 100 * c)
            for index, scene, label_ids, *_ in scenes:
                sequence = f"GOPR{475 + 10 * c + offset:04d}"
                stem = f"{sequence}_frame_{41 + index:06d}"
                _save(acdc / "rgb_anon" / condition / split / sequence / f"{stem}_rgb_anon.png", scene.image)
                gt = acdc / "gt" / condition / split / sequence
                _save(gt / f"{stem}_gt_labelIds.png", label_ids.astype(np.uint8))
                _save(gt / f"{stem}_gt_labelTrainIds.png", _LABEL_TO_TRAIN[label_ids])
    return acdc


def write_tiny_synthia(root: str | os.PathLike, num_images: int = 2, height: int = 64, width: int = 128, seed: int = 7,
                       prepare: bool = True) -> Path:  # fmt: skip
    """SYNTHIA-RAND-CITYSCAPES: ``synthia/RGB/<7-digit>.png`` and ``GT/LABELS/<7-digit>.png`` (16-bit, R = SYNTHIA
    class id, G = instance id; the crowd instance of image 0 gets instance id 0). With ``prepare`` also the
    train-id PNGs and ``synthia_instance_train.json``. Returns the ``synthia`` folder."""
    from .synthia import prepare_synthia

    synthia = Path(root) / "synthia"
    for index, scene, label_ids, _, instance_map, crowd in _street_scenes(num_images, height, width, seed):
        stem = f"{index:07d}"
        _save(synthia / "RGB" / f"{stem}.png", scene.image)
        raw = np.zeros((height, width, 3), dtype=np.uint16)  # BGR for cv2: channel 2 = red = class
        raw[..., 2] = lookup_table(_SYNTHIA_OF_LABEL, fill=0)[label_ids]
        raw[..., 1] = np.where(instance_map != crowd, instance_map, 0)
        (synthia / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(synthia / "GT" / "LABELS" / f"{stem}.png"), raw)
    if prepare:
        prepare_synthia(str(synthia))
    return synthia


def write_tiny_synscapes(root: str | os.PathLike, num_images: int = 2, height: int = 64, width: int = 128,
                         seed: int = 8, prepare: bool = True) -> Path:  # fmt: skip
    """Synscapes: ``synscapes/img/{rgb,class,instance}/<n>.png`` (class = Cityscapes label ids, instance = RGB-encoded
    ids ``label * 100000 + k``) and ``meta/<n>.json`` with each instance's class. With ``prepare`` also the train-id
    PNGs and ``synscapes_instance_train.json``. Returns the ``synscapes`` folder."""
    from .synscapes import prepare_synscapes

    synscapes = Path(root) / "synscapes"
    for index, scene, label_ids, _, instance_map, _ in _street_scenes(num_images, height, width, seed):
        stem = str(index + 1)
        ids = np.where(instance_map > 0, label_ids * 100000 + instance_map, 0)
        _save(synscapes / "img" / "rgb" / f"{stem}.png", scene.image)
        _save(synscapes / "img" / "class" / f"{stem}.png", label_ids.astype(np.uint8))
        _save(synscapes / "img" / "instance" / f"{stem}.png", id_to_rgb(ids))
        classes = {str(i): int(i) // 100000 for i in np.unique(ids).tolist() if i}
        _write_json(synscapes / "meta" / f"{stem}.json",
                    {"camera": {"intrinsic": {"resx": width, "resy": height}},
                     "instance": {"class": classes, "occluded": {k: 0.0 for k in classes}}})  # fmt: skip
    if prepare:
        prepare_synscapes(str(synscapes))
    return synscapes


def write_tiny_urbansyn(root: str | os.PathLike, num_images: int = 2, height: int = 64, width: int = 128,
                        seed: int = 9, prepare: bool = True) -> Path:  # fmt: skip
    """UrbanSyn: ``urbansyn/rgb/rgb_<4-digit>.png``, ``ss/ss_<n>.png`` (train ids; 19 = the void band) and
    ``panoptic/panoptic_<n>.png`` (one colour per instance: R = instance number, B = train id, an assumed encoding;
    see :mod:`mgfusion.data.urbansyn`). With ``prepare`` also the train-id PNGs and ``urbansyn_instance_train.json``.
    Returns the ``urbansyn`` folder."""
    from .urbansyn import prepare_urbansyn

    urbansyn = Path(root) / "urbansyn"
    for index, scene, label_ids, _, instance_map, _ in _street_scenes(num_images, height, width, seed):
        number = f"{index + 1:04d}"
        train_ids = np.where(label_ids == 0, 19, _LABEL_TO_TRAIN[label_ids]).astype(np.uint8)
        colours = np.zeros((height, width, 3), dtype=np.uint8)
        colours[..., 0] = instance_map
        colours[..., 2] = np.where(instance_map > 0, train_ids, 0)
        _save(urbansyn / "rgb" / f"rgb_{number}.png", scene.image)
        _save(urbansyn / "ss" / f"ss_{number}.png", train_ids)
        _save(urbansyn / "panoptic" / f"panoptic_{number}.png", colours)
    if prepare:
        prepare_urbansyn(str(urbansyn))
    return urbansyn


def write_tiny_kitti360(root: str | os.PathLike, splits: Sequence[str] = ("train", "val"), num_images: int = 2,
                        height: int = 48, width: int = 128, seed: int = 10, prepare: bool = True) -> Path:  # fmt: skip
    """KITTI-360: ``data_2d_raw/<sequence>/image_00/data_rect/<frame>.png``, ``data_2d_semantics/train/<sequence>/
    image_00/{semantic,instance}/<frame>.png`` (label ids; instance ``label * 1000 + k``, the crowd instance as the
    bare label id) and the split files ``2013_05_28_drive_{train,val}_frames.txt``. With ``prepare`` also
    ``kitti360_instance_{train,val}.json``. Returns the ``KITTI-360`` folder."""
    from .kitti360 import KITTI360_SPLIT_FILES, prepare_kitti360

    kitti = Path(root) / "KITTI-360"
    for offset, split in enumerate(splits):
        sequence, lines = KITTI360_SEQUENCES[split], []
        for index, scene, label_ids, instance_ids, *_ in _street_scenes(num_images, height, width, seed + 10 * offset):
            frame = f"{250 + 10 * index:010d}.png"
            image = Path("data_2d_raw") / sequence / "image_00" / "data_rect" / frame
            labels = Path("data_2d_semantics") / "train" / sequence / "image_00"
            _save(kitti / image, scene.image)
            _save(kitti / labels / "semantic" / frame, label_ids.astype(np.uint8))
            _save(kitti / labels / "instance" / frame, instance_ids.astype(np.uint16))
            lines.append(f"{image.as_posix()} {(labels / 'semantic' / frame).as_posix()}")
        (kitti / KITTI360_SPLIT_FILES[split]).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if prepare:
        prepare_kitti360(str(kitti), splits=splits)
    return kitti


#: family name -> writer (``writer(root, splits=..., num_images=..., prepare=...)``)
TINY_WRITERS: dict[str, Callable[..., Path]] = {
    "coco": write_tiny_coco,
    "cityscapes": write_tiny_cityscapes,
    "ade20k": write_tiny_ade20k,
    "gta5": write_tiny_gta5,
    "bdd100k": write_tiny_bdd100k,
    "mapillary": write_tiny_mapillary,
    "acdc": write_tiny_acdc,
    "synthia": write_tiny_synthia,
    "synscapes": write_tiny_synscapes,
    "urbansyn": write_tiny_urbansyn,
    "kitti360": write_tiny_kitti360,
}


def write_tiny_datasets(
    root: str | os.PathLike, families: Sequence[str] = ("coco", "cityscapes", "ade20k"), prepare: bool = True
) -> Path:
    """The tiny trees of ``families`` (train and val splits each) under ``root``; returns ``root``."""
    for family in families:
        TINY_WRITERS[family](root, prepare=prepare)
    return Path(root)
