"""GTA5 ("Playing for Data") registration under ``$DETECTRON2_DATASETS/gta`` and its train-id preparation.

Layout (the two downloads ``images`` and ``labels`` unpacked side by side, as Rein, VFMSeg and MFuser expect)::

    gta/images/<5-digit>.png                    # 1914x1052 (a few differ), 24,966 frames
    gta/labels/<5-digit>.png                    # palette PNG, Cityscapes label ids 0..33
    gta/labels/<5-digit>_labelTrainIds.png      # made by ``python datasets/prepare_gta5.py``

Name: ``mgf_gta5_sem_seg_train``: all frames, 19 Cityscapes classes. The domain-generalisation works this
project compares with (Rein, VFMSeg, MFuser) train on all 24,966 frames, so no split is applied.
"""

from __future__ import annotations

import functools
import os

import cv2
import numpy as np
from PIL import Image

from .catalog import RequiredPath, datasets_root, mgf_name
from .labelmaps import (
    CITYSCAPES_LABEL_TO_TRAIN_ID,
    apply_lookup,
    lookup_table,
    read_label_png,
    write_label_png,
)
from .preparation import _parallel_map
from .street import TRAIN_ID_SUFFIX, paired_files, register_semantic

__all__ = ["GTA5_SCRIPT", "prepare_gta5", "register_gta5"]

GTA5_SCRIPT = "python datasets/prepare_gta5.py"


def _train_id_file(label_file: str) -> str:
    return label_file[: -len(".png")] + TRAIN_ID_SUFFIX


def _gta5_one(stem: str, images: str, labels: str, table: np.ndarray) -> str | None:
    """Write one train-id PNG; returns ``stem`` when the label had to be resized to its image's size."""
    label_file = os.path.join(labels, stem + ".png")
    label = read_label_png(label_file)
    if label.ndim != 2:
        raise ValueError(f"'{label_file}' is not a single-channel (palette) label PNG of Cityscapes label ids")
    train_ids = apply_lookup(label, table, what=f"'{label_file}'")
    with Image.open(os.path.join(images, stem + ".png")) as image:
        width, height = image.size
    resized = train_ids.shape != (height, width)
    if resized:  # as HGFormer does for the frames whose label has another size than the image
        train_ids = cv2.resize(train_ids, (width, height), interpolation=cv2.INTER_NEAREST)
    write_label_png(_train_id_file(label_file), train_ids)
    return stem if resized else None


def prepare_gta5(gta_root: str, workers: int = 1) -> dict[str, object]:
    """Write ``labels/<stem>_labelTrainIds.png`` (Cityscapes label id -> train id, 255 ignore) for every image.

    A few GTA5 frames come with a label of another size than the image; their train-id label is resized to the
    image (nearest neighbour) and listed in the result.

    Returns:
        ``{"written": number of files, "resized": [stems]}``.
    """
    images, labels = os.path.join(gta_root, "images"), os.path.join(gta_root, "labels")
    stems = sorted(f[: -len(".png")] for f in os.listdir(images) if f.endswith(".png"))
    if not stems:
        raise FileNotFoundError(f"No '*.png' images in '{images}'.")
    missing = [s for s in stems if not os.path.isfile(os.path.join(labels, s + ".png"))]
    if missing:
        raise FileNotFoundError(f"{len(missing)} GTA5 labels are missing, e.g. '{os.path.join(labels, missing[0])}.png'.")
    convert = functools.partial(_gta5_one, images=images, labels=labels, table=lookup_table(CITYSCAPES_LABEL_TO_TRAIN_ID))
    resized = [s for s in _parallel_map(convert, stems, workers, "GTA5 train ids") if s is not None]
    return {"written": len(stems), "resized": resized}


def register_gta5(root: str | os.PathLike | None = None) -> list[str]:
    """Register ``mgf_gta5_sem_seg_train`` under ``root`` (default ``$DETECTRON2_DATASETS``); returns the names."""
    root_path = datasets_root(root)
    gta = os.path.join(root_path, "gta")
    images, labels = os.path.join(gta, "images"), os.path.join(gta, "labels")
    pairs = functools.partial(
        paired_files, images, labels, ".png", TRAIN_ID_SUFFIX, hint=f"Create them with {GTA5_SCRIPT}."
    )
    name = register_semantic(
        mgf_name("gta5_sem_seg_train"), pairs, image_root=images, root=root_path,
        required=[RequiredPath(images, "images (images/*.png)"), RequiredPath(labels, "labels (labels/*.png)")],
    )  # fmt: skip
    return [name]
