"""BDD100K semantic segmentation (the 10K images) under ``$DETECTRON2_DATASETS/bdd100k``.

Layout of ``bdd100k_images_10k.zip`` and ``bdd100k_sem_seg_labels_trainval.zip``; the masks already hold
Cityscapes' 19 train ids (255 = ignore), so nothing needs preparing::

    bdd100k/images/10k/{train,val}/<name>.jpg               # 1280x720; 7,000 train / 1,000 val with labels
    bdd100k/labels/sem_seg/masks/{train,val}/<name>.png

Names: ``mgf_bdd100k_sem_seg_{train,val}`` (19 classes, mIoU with detectron2's ``SemSegEvaluator``).
"""

from __future__ import annotations

import functools
import os

from .catalog import RequiredPath, datasets_root, mgf_name
from .street import paired_files, register_semantic

__all__ = ["register_bdd100k"]


def register_bdd100k(root: str | os.PathLike | None = None) -> list[str]:
    """Register ``mgf_bdd100k_sem_seg_{train,val}`` under ``root`` (default ``$DETECTRON2_DATASETS``)."""
    root_path = datasets_root(root)
    names = []
    for split in ("train", "val"):
        images = os.path.join(root_path, "bdd100k", "images", "10k", split)
        masks = os.path.join(root_path, "bdd100k", "labels", "sem_seg", "masks", split)
        names.append(register_semantic(
            mgf_name(f"bdd100k_sem_seg_{split}"), functools.partial(paired_files, images, masks, ".jpg", ".png"),
            image_root=images, root=root_path,
            required=[RequiredPath(images, f"{split} images (images/10k/{split})"),
                      RequiredPath(masks, f"{split} masks (labels/sem_seg/masks/{split})")],
        ))  # fmt: skip
    return names
