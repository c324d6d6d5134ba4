"""Synthetic segmentation dataset: textured shapes on textured backgrounds, in real COCO / semantic formats.

Each image shows 2 stuff regions ("grass", "sand") split by a wavy boundary (or one of them alone) and a few
overlapping textured shapes of 4 thing classes ("disk", "box", "triangle", "ring"). Classes differ by shape and
colour, but colours are jittered, all surfaces are textured, shapes are rotated, sized and occluded at random and
rings have holes, so the task is learnable by a small model in minutes of CPU training but not trivial.

Files written for a split (under ``<root>/<variant>/``, see :func:`variant_dir`)::

    images/<split>/000001.png              RGB images
    annotations/instances_<split>.json     COCO instances (thing categories, RLE masks of the visible parts)
    annotations/panoptic_<split>.json      COCO panoptic (things and stuff)
    panoptic_<split>/000001.png            COCO panoptic PNGs (segment id = R + 256 G + 256^2 B)
    semantic_<split>/000001.png            semantic labels, contiguous ids 0..5 (things first), no ignore pixels
    MANIFEST.json                          the generating config; written last

Generation is deterministic (same config -> identical bytes), lazy (first load of a registered name) and
atomic: a variant is written into a temporary sibling folder and renamed into place only when complete, so a
killed generation never leaves a folder that a later run takes as complete.

Registered names (:func:`register_synthetic`): ``mgf_synthetic_{train,val}`` (instance, evaluator "coco"),
``mgf_synthetic_{train,val}_sem_seg`` (semantic, "sem_seg"), ``mgf_synthetic_{train,val}_panoptic`` (panoptic with
``sem_seg_file_name``, "coco_panoptic_seg"). Default root: ``$DETECTRON2_DATASETS/mgfusion_synthetic``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from .catalog import datasets_root, mgf_name, register_dataset
from .categories import instance_metadata, panoptic_metadata, semantic_metadata
from .labelmaps import id_to_rgb, mask_bbox_xywh, mask_to_rle
from .loaders import (
    load_coco_instances,
    load_semantic_from_panoptic_json,
    register_coco_panoptic,
)

__all__ = [
    "SPLITS",
    "SYNTHETIC_CATEGORIES",
    "Scene",
    "SyntheticConfig",
    "generate",
    "iter_scenes",
    "register_synthetic",
    "render_scene",
    "synthetic_dataset_names",
    "variant_dir",
]

FORMAT_VERSION = 1
SPLITS = ("train", "val")
DEFAULT_SUBDIR = "mgfusion_synthetic"

# Things first, then stuff; contiguous id = list index. `hue` is the class's base hue in [0, 1).
SYNTHETIC_CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "disk", "isthing": 1, "color": [220, 60, 50], "hue": 0.00},
    {"id": 2, "name": "box", "isthing": 1, "color": [50, 90, 220], "hue": 0.62},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [230, 200, 40], "hue": 0.14},
    {"id": 4, "name": "ring", "isthing": 1, "color": [180, 60, 200], "hue": 0.82},
    {"id": 5, "name": "grass", "isthing": 0, "color": [80, 160, 70], "hue": 0.30},
    {"id": 6, "name": "sand", "isthing": 0, "color": [200, 170, 120], "hue": 0.09},
)
NUM_THINGS = sum(c["isthing"] for c in SYNTHETIC_CATEGORIES)
NUM_STUFF = len(SYNTHETIC_CATEGORIES) - NUM_THINGS


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """What to generate. Sizes in pixels; object sizes as fractions of the image side."""

    image_size: int = 128
    num_train: int = 64
    num_val: int = 16
    seed: int = 0
    min_objects: int = 2
    max_objects: int = 6
    min_object_size: float = 0.14
    max_object_size: float = 0.36
    min_visible_fraction: float = 0.004  # of the image area; smaller (occluded) instances are re-drawn

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 pixels, got {self.image_size}")
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError(f"num_train and num_val must be >= 1, got {self.num_train} and {self.num_val}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not 0 < self.min_object_size <= self.max_object_size < 1:
            raise ValueError(
                f"need 0 < min_object_size <= max_object_size < 1, got {self.min_object_size}, "
                f"{self.max_object_size}"
            )

    def num_images(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val}[_check_split(split)]

    def digest(self) -> str:
        payload = json.dumps({"v": FORMAT_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"Unknown synthetic split '{split}'; valid splits: {list(SPLITS)}")
    return split


# ---------------------------------------------------------------------------------------------- rendering


@dataclass
class Scene:
    """One rendered image with its labels.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        stuff_map: (H, W) int64 stuff index in ``[0, NUM_STUFF)`` for every pixel (also under objects).
        instance_map: (H, W) int64, 0 = background, k = k-th instance (1-based) for visible object pixels.
        instance_classes: (N,) int64 thing index in ``[0, NUM_THINGS)`` of instance k+1.
    """

    image: np.ndarray
    stuff_map: np.ndarray
    instance_map: np.ndarray
    instance_classes: np.ndarray

    def semantic_map(self) -> np.ndarray:
        """(H, W) uint8 contiguous class ids: thing index for object pixels, NUM_THINGS + stuff index elsewhere."""
        classes = np.concatenate([[0], self.instance_classes]).astype(np.int64)
        sem = np.where(self.instance_map > 0, classes[self.instance_map], NUM_THINGS + self.stuff_map)
        return sem.astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) float32 noise in about [-1, 1], smooth at the scale of size / cells."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC).clip(-2.5, 2.5) / 2.5


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, kind: str) -> np.ndarray:
    """(H, W) float32 texture in about [-1, 1] of the given kind ("noise", "stripes" or "checker")."""
    size = yy.shape[0]
    if kind == "noise":
        return 0.6 * _smooth_noise(rng, size, int(rng.integers(3, 9))) + 0.4 * rng.uniform(-1, 1, yy.shape).astype(
            np.float32
        )
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(0.05, 0.12) * size
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / period
    if kind == "stripes":
        return np.sin(2 * np.pi * u + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / period
    return np.sign(np.sin(np.pi * u) * np.sin(np.pi * v)).astype(np.float32)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    pixel = np.array([[[h * 180.0, s * 255.0, v * 255.0]]], dtype=np.float32)
    return cv2.cvtColor(pixel.clip(0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _surface(rng: np.random.Generator, yy, xx, hue: float, kind: str, amplitude: float) -> np.ndarray:
    """(H, W, 3) float32 RGB surface: a jittered colour of ``hue`` modulated by a texture."""
    colour = _hsv_to_rgb((hue + rng.uniform(-0.05, 0.05)) % 1.0, rng.uniform(0.45, 0.9), rng.uniform(0.5, 0.95))
    shade = 1.0 + amplitude * _texture(rng, yy, xx, kind)
    return colour[None, None, :] * shade[:, :, None]


def _shape_mask(thing: int, yy, xx, cy: float, cx: float, size: float, theta: float, hole: float) -> np.ndarray:
    """(H, W) bool mask of thing class ``thing`` centred at (cy, cx) with diameter ``size``, rotated by theta."""
    dy, dx = yy - cy, xx - cx
    radius = size / 2
    if thing == 0:  # disk
        return dy**2 + dx**2 <= radius**2
    if thing == 1:  # box
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        half = radius * 0.8
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if thing == 2:  # equilateral triangle with circumradius `radius`
        inside = np.ones(yy.shape, dtype=bool)
        for k in range(3):
            a = theta + 2 * np.pi * k / 3
            inside &= dx * np.cos(a) + dy * np.sin(a) <= radius / 2
        return inside
    d2 = dy**2 + dx**2  # ring
    return (d2 <= radius**2) & (d2 > (hole * radius) ** 2)


def _stuff_layout(rng: np.random.Generator, yy, xx, size: int) -> np.ndarray:
    """(H, W) int64 stuff index map: one stuff class, or two split by a wavy line through the central region."""
    if rng.random() < 0.2:
        return np.full(yy.shape, int(rng.integers(NUM_STUFF)), dtype=np.int64)
    theta = rng.uniform(0, np.pi)
    py, px = rng.uniform(0.3, 0.7, size=2) * size
    across = (xx - px) * np.cos(theta) + (yy - py) * np.sin(theta)
    along = -(xx - px) * np.sin(theta) + (yy - py) * np.cos(theta)
    period = rng.uniform(0.4, 1.0) * size
    wave = rng.uniform(0.02, 0.1) * size * np.sin(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))
    first = int(rng.integers(NUM_STUFF))
    return np.where(across > wave, 1 - first, first).astype(np.int64)


def render_scene(rng: np.random.Generator, config: SyntheticConfig) -> Scene:
    """Render one scene (see :class:`Scene`) with the random generator ``rng``."""
    size = config.image_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    stuff_map = _stuff_layout(rng, yy, xx, size)
    image = np.zeros((size, size, 3), dtype=np.float32)
    for stuff, (hue, kind) in enumerate([(SYNTHETIC_CATEGORIES[NUM_THINGS]["hue"], "noise"),
                                         (SYNTHETIC_CATEGORIES[NUM_THINGS + 1]["hue"], "stripes")]):  # fmt: skip
        surface = _surface(rng, yy, xx, hue, kind, amplitude=rng.uniform(0.15, 0.3))
        image = np.where((stuff_map == stuff)[:, :, None], surface, image)

    min_area = max(16, int(config.min_visible_fraction * size * size))
    instance_map = np.zeros((size, size), dtype=np.int64)
    classes: list[int] = []
    wanted = int(rng.integers(config.min_objects, config.max_objects + 1))
    for _ in range(wanted * 10):  # bounded number of attempts
        if len(classes) == wanted:
            break
        thing = int(rng.integers(NUM_THINGS))
        diameter = rng.uniform(config.min_object_size, config.max_object_size) * size
        cy, cx = rng.uniform(0.1, 0.9, size=2) * size
        mask = _shape_mask(thing, yy, xx, cy, cx, diameter, rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 0.6))
        candidate = np.where(mask, len(classes) + 1, instance_map)
        areas = np.bincount(candidate.ravel(), minlength=len(classes) + 2)[1:]
        if areas.min() < min_area:
            continue  # the new shape is too small or hides an earlier one: try another
        kind = ("noise", "stripes", "checker")[int(rng.integers(3))]
        surface = _surface(rng, yy, xx, SYNTHETIC_CATEGORIES[thing]["hue"], kind, rng.uniform(0.1, 0.3))
        image = np.where(mask[:, :, None], surface, image)
        instance_map = candidate
        classes.append(thing)

    image = image * rng.uniform(0.85, 1.15) + rng.normal(0.0, 4.0, image.shape)
    return Scene(
        image=image.clip(0, 255).astype(np.uint8),
        stuff_map=stuff_map,
        instance_map=instance_map,
        instance_classes=np.asarray(classes, dtype=np.int64),
    )


def _scene_rng(config: SyntheticConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, SPLITS.index(split), index])


def iter_scenes(config: SyntheticConfig, split: str) -> Iterator[Scene]:
    """The scenes of ``split`` in order; scene i depends only on (seed, split, i)."""
    for index in range(config.num_images(split)):
        yield render_scene(_scene_rng(config, split, index), config)


# ------------------------------------------------------------------------------------------------ writing


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, sort_keys=True, separators=(",", ":")), encoding="utf-8")


def _write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG", optimize=False, compress_level=6)


STUFF_SEGMENT_ID_BASE = 1000  # panoptic segment id of stuff index s is 1000 + s; things use 1..N


def _write_split(config: SyntheticConfig, split: str, out: Path) -> None:
    for sub in (f"images/{split}", f"panoptic_{split}", f"semantic_{split}", "annotations"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    thing_cats = [c for c in SYNTHETIC_CATEGORIES if c["isthing"]]
    stuff_cats = [c for c in SYNTHETIC_CATEGORIES if not c["isthing"]]
    images, instances, panoptic = [], [], []
    size = config.image_size
    for index, scene in enumerate(iter_scenes(config, split)):
        image_id = index + 1
        stem = f"{image_id:06d}"
        images.append({"id": image_id, "file_name": f"{stem}.png", "height": size, "width": size})
        _write_png(out / f"images/{split}/{stem}.png", scene.image)
        _write_png(out / f"semantic_{split}/{stem}.png", scene.semantic_map())

        pan_ids = np.where(scene.instance_map > 0, scene.instance_map, STUFF_SEGMENT_ID_BASE + scene.stuff_map)
        _write_png(out / f"panoptic_{split}/{stem}.png", id_to_rgb(pan_ids))
        segments = []
        for k, thing in enumerate(scene.instance_classes.tolist(), start=1):
            mask = scene.instance_map == k
            area, bbox = int(mask.sum()), mask_bbox_xywh(mask)
            category_id = thing_cats[thing]["id"]
            segments.append({"id": k, "category_id": category_id, "area": area, "bbox": bbox, "iscrowd": 0})
            instances.append(
                {
                    "id": len(instances) + 1, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
                    "area": area, "bbox": bbox, "segmentation": mask_to_rle(mask),
                }
            )  # fmt: skip
        for stuff, cat in enumerate(stuff_cats):
            mask = pan_ids == STUFF_SEGMENT_ID_BASE + stuff
            if mask.any():
                segments.append(
                    {
                        "id": STUFF_SEGMENT_ID_BASE + stuff, "category_id": cat["id"], "area": int(mask.sum()),
                        "bbox": mask_bbox_xywh(mask), "iscrowd": 0,
                    }
                )  # fmt: skip
        panoptic.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments})

    public = [{k: c[k] for k in ("id", "name", "isthing", "color")} for c in SYNTHETIC_CATEGORIES]
    info = {"description": f"mgfusion synthetic shapes, {split} split", "version": str(FORMAT_VERSION)}
    _write_json(
        out / f"annotations/instances_{split}.json",
        {"info": info, "images": images, "annotations": instances, "categories": [c for c in public if c["isthing"]]},
    )
    _write_json(
        out / f"annotations/panoptic_{split}.json",
        {"info": info, "images": images, "annotations": panoptic, "categories": public},
    )


def variant_dir(root: str | os.PathLike | None, config: SyntheticConfig) -> Path:
    """Folder of the variant ``config`` under ``root`` (default ``$DETECTRON2_DATASETS/mgfusion_synthetic``)."""
    base = datasets_root() / DEFAULT_SUBDIR if root is None else Path(os.path.expanduser(str(root)))
    name = f"{config.image_size}px-{config.num_train}+{config.num_val}-seed{config.seed}-{config.digest()}"
    return base / name


def _manifest(config: SyntheticConfig) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "config": dataclasses.asdict(config), "digest": config.digest()}


def is_complete(directory: Path, config: SyntheticConfig) -> bool:
    """Whether ``directory`` holds a complete generation of ``config``."""
    manifest = directory / "MANIFEST.json"
    if not manifest.is_file():
        return False
    return json.loads(manifest.read_text(encoding="utf-8")) == _manifest(config)


def generate(config: SyntheticConfig | None = None, root: str | os.PathLike | None = None) -> Path:
    """Generate the variant ``config`` (default settings if None) under ``root`` unless it is already complete;
    returns its folder.

    Writes into a temporary sibling folder and renames it into place when done, so concurrent or killed
    generations never expose a partial dataset (a concurrent winner's folder is kept, ours discarded).
    """
    config = SyntheticConfig() if config is None else config
    target = variant_dir(root, config)
    if is_complete(target, config):
        return target
    if target.exists():
        raise FileExistsError(
            f"'{target}' exists but is not a complete synthetic dataset for this config (MANIFEST.json missing "
            f"or different). Remove it to regenerate."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        for split in SPLITS:
            _write_split(config, split, staging)
        _write_json(staging / "MANIFEST.json", _manifest(config))
        try:
            os.rename(staging, target)
        except OSError:
            if not is_complete(target, config):  # not a concurrent generation that won the race
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


# ------------------------------------------------------------------------------------------- registration


def synthetic_dataset_names(split: str) -> dict[str, str]:
    """The registered names of ``split`` by task: ``{"instance": ..., "semantic": ..., "panoptic": ...}``."""
    _check_split(split)
    return {
        "instance": mgf_name(f"synthetic_{split}"),
        "semantic": mgf_name(f"synthetic_{split}_sem_seg"),
        "panoptic": mgf_name(f"synthetic_{split}_panoptic"),
    }


def _paths(directory: Path, split: str) -> dict[str, str]:
    return {
        "image_root": str(directory / "images" / split),
        "json_file": str(directory / "annotations" / f"instances_{split}.json"),
        "panoptic_json": str(directory / "annotations" / f"panoptic_{split}.json"),
        "panoptic_root": str(directory / f"panoptic_{split}"),
        "sem_seg_root": str(directory / f"semantic_{split}"),
    }


def register_synthetic(root: str | os.PathLike | None = None, **config_kwargs: Any) -> SyntheticConfig:
    """Register the synthetic dataset names (idempotent; the data is generated on first load).

    Args:
        root: parent folder of the variants (default ``$DETECTRON2_DATASETS/mgfusion_synthetic``).
        **config_kwargs: fields of :class:`SyntheticConfig` (image_size, num_train, num_val, seed, ...).
    Returns:
        The config the names now point to.
    """
    config = SyntheticConfig(**config_kwargs)
    root_path = None if root is None else Path(os.path.expanduser(str(root)))
    directory = variant_dir(root_path, config)
    categories = [{k: c[k] for k in ("id", "name", "isthing", "color")} for c in SYNTHETIC_CATEGORIES]
    pan_meta = panoptic_metadata(categories)
    inst_meta = instance_metadata(categories)
    common = {"ignore_label": 255, "synthetic_config": dataclasses.asdict(config), "synthetic_dir": str(directory)}
    prepare = functools.partial(generate, config, root_path)
    for split in SPLITS:
        names, paths = synthetic_dataset_names(split), _paths(directory, split)
        register_dataset(
            names["instance"],
            functools.partial(load_coco_instances, paths["json_file"], paths["image_root"], inst_meta),
            {**common, **inst_meta, "evaluator_type": "coco",
             "image_root": paths["image_root"], "json_file": paths["json_file"]},
            root=directory,
            prepare=prepare,
        )  # fmt: skip
        register_dataset(
            names["semantic"],
            functools.partial(
                load_semantic_from_panoptic_json, paths["panoptic_json"], paths["image_root"], paths["sem_seg_root"]
            ),
            {**common, **semantic_metadata(categories), "evaluator_type": "sem_seg",
             "image_root": paths["image_root"], "sem_seg_root": paths["sem_seg_root"]},
            root=directory,
            prepare=prepare,
        )  # fmt: skip
        register_coco_panoptic(names["panoptic"], paths, {**common, **pan_meta}, root=directory, prepare=prepare)
    return config
