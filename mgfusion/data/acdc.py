"""ACDC (adverse conditions: fog, night, rain, snow) under ``$DETECTRON2_DATASETS/acdc``.

Layout of ``rgb_anon_trainvaltest.zip`` and ``gt_trainval.zip``; the ground truth ships Cityscapes train ids
(``*_gt_labelTrainIds.png``), so nothing needs preparing::

    acdc/rgb_anon/{fog,night,rain,snow}/{train,val}/<sequence>/<frame>_rgb_anon.png
    acdc/gt/{fog,night,rain,snow}/{train,val}/<sequence>/<frame>_gt_labelTrainIds.png

Names: ``mgf_acdc_{fog,night,rain,snow}_sem_seg_{train,val}`` (one condition) and ``mgf_acdc_sem_seg_{train,val}``
(the four conditions together, 1,600 train / 406 val images); 19 classes, mIoU.
"""

from __future__ import annotations

import functools
import os

from .catalog import RequiredPath, datasets_root, mgf_name
from .street import paired_files, register_semantic

__all__ = ["ACDC_CONDITIONS", "register_acdc"]

ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


def _acdc_pairs(acdc: str, conditions: tuple[str, ...], split: str) -> list[tuple[str, str]]:
    pairs = []
    for condition in conditions:
        pairs += paired_files(
            os.path.join(acdc, "rgb_anon", condition, split), os.path.join(acdc, "gt", condition, split),
            "_rgb_anon.png", "_gt_labelTrainIds.png", recursive=True,
        )  # fmt: skip
    return pairs


def register_acdc(root: str | os.PathLike | None = None) -> list[str]:
    """Register the ACDC names under ``root`` (default ``$DETECTRON2_DATASETS``); returns them."""
    root_path = datasets_root(root)
    acdc = os.path.join(root_path, "acdc")
    names = []
    for split in ("train", "val"):
        for conditions, label in [((c,), c) for c in ACDC_CONDITIONS] + [(ACDC_CONDITIONS, "")]:
            required = []
            for c in conditions:
                required += [RequiredPath(os.path.join(acdc, "rgb_anon", c, split), f"{c} {split} images (rgb_anon)"),
                             RequiredPath(os.path.join(acdc, "gt", c, split), f"{c} {split} labels (gt)")]  # fmt: skip
            name = mgf_name(f"acdc_{label}_sem_seg_{split}" if label else f"acdc_sem_seg_{split}")
            names.append(register_semantic(
                name, functools.partial(_acdc_pairs, acdc, conditions, split),
                image_root=os.path.join(acdc, "rgb_anon"), root=root_path, required=required,
                conditions=list(conditions),
            ))  # fmt: skip
    return names
