"""Mapillary Vistas (v1.2 labels, 66 classes) mapped to Cityscapes' 19 classes, under ``$DETECTRON2_DATASETS/mapillary``.

Either release works; ``python datasets/prepare_mapillary.py`` finds which one is unpacked::

    mapillary/config.json  mapillary/{training,validation}/{images/*.jpg, labels/*.png}            # v1.2 release
    mapillary/config_v1.2.json  mapillary/{training,validation}/{images, v1.2/labels}              # v2.0 release
    mapillary/cityscapes_trainIdLabel/{train,val}/label/<name>.png    # made by the script (Rein's layout)

The script maps the 66 v1.2 classes to Cityscapes train ids with
:data:`~mgfusion.data.labelmaps.MAPILLARY_V12_TO_TRAIN_ID` (the benchmarks of Rein, VFMSeg and MFuser) and checks
the release's class list against :data:`~mgfusion.data.labelmaps.MAPILLARY_V12_CLASSES` first.

Names: ``mgf_mapillary_sem_seg_{train,val}`` (18,000 / 2,000 images at full resolution; 19 classes, mIoU).
"""

from __future__ import annotations

import functools
import json
import os

from .catalog import RequiredPath, datasets_root, mgf_name
from .labelmaps import (
    MAPILLARY_V12_CLASSES,
    MAPILLARY_V12_TO_TRAIN_ID,
    apply_lookup,
    lookup_table,
    read_label_png,
    write_label_png,
)
from .preparation import _parallel_map
from .street import paired_files, register_semantic

__all__ = ["MAPILLARY_SCRIPT", "mapillary_release", "prepare_mapillary", "register_mapillary"]

MAPILLARY_SCRIPT = "python datasets/prepare_mapillary.py"
_FOLDERS = {"train": "training", "val": "validation"}
#: release -> (class config file, labels folder below {training,validation})
_RELEASES = {"v1.2": ("config.json", "labels"), "v2.0": ("config_v1.2.json", os.path.join("v1.2", "labels"))}


def mapillary_release(mapillary_root: str) -> tuple[str, str, str]:
    """(release, config json, labels subfolder) of the Mapillary Vistas release unpacked at ``mapillary_root``.

    Raises:
        FileNotFoundError: neither layout (or both, which is ambiguous) is present; the message lists both.
    """
    found = [
        (release, os.path.join(mapillary_root, config), labels)
        for release, (config, labels) in _RELEASES.items()
        if os.path.isfile(os.path.join(mapillary_root, config))
        and os.path.isdir(os.path.join(mapillary_root, "training", labels))
    ]
    if len(found) != 1:
        layouts = "; ".join(f"{r}: {c} + training/{lab}/" for r, (c, lab) in _RELEASES.items())
        state = "both are present" if found else "neither is present"
        raise FileNotFoundError(
            f"Cannot tell the Mapillary Vistas release under '{mapillary_root}' ({state}). Expected one of: {layouts}."
        )
    return found[0]


def _check_classes(config_json: str) -> None:
    with open(config_json, encoding="utf-8") as f:
        names = tuple(label["readable"] for label in json.load(f)["labels"])
    if names != MAPILLARY_V12_CLASSES:
        raise ValueError(
            f"'{config_json}' lists {len(names)} classes that differ from the 66 Mapillary Vistas v1.2 classes the "
            f"Cityscapes mapping is defined for (first difference at id "
            f"{next((i for i, (a, b) in enumerate(zip(names, MAPILLARY_V12_CLASSES)) if a != b), min(len(names), 66))})."
        )


def _mapillary_one(name: str, src: str, dst: str, table) -> None:
    label_file = os.path.join(src, name)
    labels = read_label_png(label_file)
    if labels.ndim != 2:
        raise ValueError(f"'{label_file}' is not a single-channel (palette) label PNG of Mapillary class ids")
    write_label_png(os.path.join(dst, name), apply_lookup(labels, table, what=f"'{label_file}'"))


def prepare_mapillary(mapillary_root: str, workers: int = 1, splits=("train", "val")) -> list[str]:
    """Write ``cityscapes_trainIdLabel/{train,val}/label/*.png`` (Cityscapes train ids); returns the folders."""
    release, config_json, labels_subdir = mapillary_release(mapillary_root)
    _check_classes(config_json)
    table = lookup_table(MAPILLARY_V12_TO_TRAIN_ID)
    outputs = []
    for split in splits:
        src = os.path.join(mapillary_root, _FOLDERS[split], labels_subdir)
        dst = os.path.join(mapillary_root, "cityscapes_trainIdLabel", split, "label")
        names = sorted(f for f in os.listdir(src) if f.endswith(".png"))
        if not names:
            raise FileNotFoundError(f"No '*.png' labels in '{src}'.")
        os.makedirs(dst, exist_ok=True)
        convert = functools.partial(_mapillary_one, src=src, dst=dst, table=table)
        _parallel_map(convert, names, workers, f"Mapillary {release} {split}")
        outputs.append(dst)
    return outputs


def register_mapillary(root: str | os.PathLike | None = None) -> list[str]:
    """Register ``mgf_mapillary_sem_seg_{train,val}`` under ``root`` (default ``$DETECTRON2_DATASETS``)."""
    root_path = datasets_root(root)
    names = []
    for split, folder in _FOLDERS.items():
        images = os.path.join(root_path, "mapillary", folder, "images")
        labels = os.path.join(root_path, "mapillary", "cityscapes_trainIdLabel", split, "label")
        pairs = functools.partial(paired_files, images, labels, ".jpg", ".png", hint=f"Create them with {MAPILLARY_SCRIPT}.")
        names.append(register_semantic(
            mgf_name(f"mapillary_sem_seg_{split}"), pairs, image_root=images, root=root_path,
            required=[RequiredPath(images, f"{split} images ({folder}/images)"),
                      RequiredPath(labels, "labels in Cityscapes train ids", f"create them with {MAPILLARY_SCRIPT}")],
        ))  # fmt: skip
    return names
