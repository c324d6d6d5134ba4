"""Where profiled images come from: a folder of images, a COCO-style JSON, or a registered detectron2 dataset.

Each source yields :class:`ImageRecord` s in a deterministic order; records may carry label references (COCO
annotations, a semantic PNG, a panoptic PNG + segments) used for the supervised SC_gt counterpart.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class ImageRecord:
    """One image to profile.

    Attributes:
        image_id: unique, stable id (used as the resume key).
        path: image file.
        annotations: COCO-style instance annotations (``segmentation`` polygons/RLE, ``category_id``), if any.
        sem_seg_path: semantic label PNG (class index per pixel, ``ignore_label`` for void), if any.
        pan_seg_path / segments_info: COCO panoptic PNG and its segments, if any.
        ignore_label: void value in ``sem_seg_path``.
    """

    image_id: str
    path: str
    annotations: list[dict[str, Any]] | None = None
    sem_seg_path: str | None = None
    pan_seg_path: str | None = None
    segments_info: list[dict[str, Any]] | None = None
    ignore_label: int = 255
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_labels(self) -> bool:
        """True when the record carries any label that SC_gt can use."""
        return bool(self.annotations) or bool(self.sem_seg_path) or bool(self.pan_seg_path)


class SourceError(ValueError):
    """A profiling source is missing, empty or unknown."""


def images_from_folder(folder: str | os.PathLike) -> list[ImageRecord]:
    """All images under ``folder`` (recursive, sorted by relative path); the relative path is the image id."""
    root = Path(folder)
    if not root.is_dir():
        raise SourceError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise SourceError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return [ImageRecord(image_id=str(p.relative_to(root)), path=str(p)) for p in files]


def images_from_coco_json(json_path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[ImageRecord]:
    """Images (and instance annotations, if present) of a COCO-style JSON.

    ``image_root`` defaults to the JSON's folder; ``file_name`` entries are resolved relative to it.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise SourceError(f"COCO JSON not found: {json_path}")
    with open(json_path, encoding="utf-8") as f:
        coco = json.load(f)
    if "images" not in coco:
        raise SourceError(f"{json_path} has no 'images' list; not a COCO-style JSON")
    root = Path(image_root) if image_root else json_path.parent
    anns: dict[Any, list[dict[str, Any]]] = {}
    for a in coco.get("annotations", []):
        if "segmentation" in a:
            anns.setdefault(a["image_id"], []).append(a)
    records = []
    for im in sorted(coco["images"], key=lambda d: str(d["id"])):
        rec = ImageRecord(image_id=str(im["id"]), path=str(root / im["file_name"]), annotations=anns.get(im["id"]))
        rec.extra["height"], rec.extra["width"] = im.get("height"), im.get("width")
        records.append(rec)
    if not records:
        raise SourceError(f"{json_path} lists no images")
    return records


def images_from_detectron2(name: str) -> list[ImageRecord]:
    """Images (and labels) of a dataset registered in detectron2's ``DatasetCatalog``.

    A name not registered yet is looked up after registering mgfusion's datasets under ``$DETECTRON2_DATASETS``
    (names registered by the caller are left as they are); an unknown name raises :class:`SourceError` listing the
    valid names.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    _register_project_datasets(name)
    if name not in DatasetCatalog.list():
        raise SourceError(f"unknown dataset {name!r}; registered datasets: {', '.join(sorted(DatasetCatalog.list()))}")
    ignore = int(getattr(MetadataCatalog.get(name), "ignore_label", 255))
    records = []
    for i, d in enumerate(DatasetCatalog.get(name)):
        records.append(ImageRecord(
            image_id=str(d.get("image_id", i)),
            path=d["file_name"],
            annotations=[a for a in d.get("annotations", []) if "segmentation" in a] or None,
            sem_seg_path=d.get("sem_seg_file_name"),
            pan_seg_path=d.get("pan_seg_file_name"),
            segments_info=d.get("segments_info"),
            ignore_label=ignore,
        ))
    if not records:
        raise SourceError(f"dataset {name!r} has no images")
    return records


def _register_project_datasets(name: str) -> None:
    from detectron2.data import DatasetCatalog

    if name in DatasetCatalog.list():
        return
    from mgfusion.data import register_all

    register_all()


def resolve_source(
    *, images: str | None = None, dataset: str | None = None, image_root: str | None = None,
    max_images: int | None = None,
) -> list[ImageRecord]:
    """Records from exactly one of ``images`` (folder or ``.json``) or ``dataset`` (detectron2 name)."""
    if bool(images) == bool(dataset):
        raise SourceError("give exactly one image source: images=DIR|COCO.json or dataset=NAME")
    if dataset:
        records = images_from_detectron2(dataset)
    elif str(images).endswith(".json"):
        records = images_from_coco_json(images, image_root)
    else:
        records = images_from_folder(images)
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        raise SourceError("image ids are not unique in the source; cannot resume safely")
    return records[:max_images] if max_images else records
