"""Dataset mappers: detectron2 dataset dict -> model input dict (RGB images, Mask2Former targets).

Every mapper returns ``{"image": uint8 (3, H, W) RGB tensor, "height", "width" (original size), "file_name",
"image_id" (when the dataset has one)}``. Training mappers add ``"instances"`` (``gt_classes`` int64 (N,),
``gt_masks`` bool (N, H, W) at the augmented size) and, where the dataset has semantic labels, ``"sem_seg"``
(int64 (H, W), 255 = ignore). Constructors are keyword-only (Hydra ``_target_`` nodes); augmentation arguments
are described in :mod:`mgfusion.data.augmentation`.
"""

from __future__ import annotations

import abc
import copy
import sys
from typing import Any, ClassVar

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from mgfusion.utils.registry import Registry

from .augmentation import AugmentationConfig, build_train_augmentations
from .labelmaps import read_label_png, rgb_to_id
from .targets import (
    instance_targets,
    panoptic_targets,
    semantic_targets,
    transform_label_map,
)

__all__ = [
    "TRAIN_MAPPERS",
    "InstanceTrainMapper",
    "PanopticTrainMapper",
    "SemanticTrainMapper",
    "TestMapper",
]


def read_rgb_image(dataset_dict: dict[str, Any]) -> np.ndarray:
    """The dict's image as (H, W, 3) uint8 RGB; checks/sets its height and width. Errors name the file."""
    path = dataset_dict["file_name"]
    try:
        image = utils.read_image(path, format="RGB")
    except (OSError, ValueError) as err:
        raise OSError(f"Cannot read image '{path}': {err}") from err
    utils.check_image_size(dataset_dict, image)
    return image


def _base_record(dataset_dict: dict[str, Any], image: np.ndarray) -> dict[str, Any]:
    record = {
        "file_name": dataset_dict["file_name"],
        "height": dataset_dict["height"],
        "width": dataset_dict["width"],
        "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
    }
    if "image_id" in dataset_dict:
        record["image_id"] = dataset_dict["image_id"]
    return record


def _require(dataset_dict: dict[str, Any], keys: tuple[str, ...], mapper: str) -> None:
    missing = [k for k in keys if k not in dataset_dict]
    if missing:
        raise KeyError(
            f"{mapper} needs {list(keys)} in each dataset dict, but '{dataset_dict.get('file_name')}' lacks "
            f"{missing}. Use the mapper of the dataset's task (instance / semantic / panoptic)."
        )


class _TrainMapper(abc.ABC):
    """Shared training flow: read image and labels, augment, build targets."""

    task: ClassVar[str]
    required_keys: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        *,
        policy: str = "scale_jitter",
        base_size: int = 1024,
        min_scale: float = 0.5,
        max_scale: float = 2.0,
        scale_step: float = 0.1,
        max_size: int = 4096,
        crop_size: tuple[int, int] | list[int] | None = (512, 1024),
        single_category_max_area: float = 1.0,
        lsj_size: int = 1024,
        color_jitter: bool = True,
        flip_prob: float = 0.5,
        pad_value: float = 128.0,
        ignore_label: int = 255,
    ):
        self.augmentation = AugmentationConfig(
            policy=policy, base_size=base_size, min_scale=min_scale, max_scale=max_scale, scale_step=scale_step,
            max_size=max_size, crop_size=None if crop_size is None else tuple(crop_size),
            single_category_max_area=single_category_max_area, lsj_size=lsj_size, color_jitter=color_jitter,
            flip_prob=flip_prob, pad_value=pad_value, ignore_label=ignore_label,
        )  # fmt: skip
        if self.task != "semantic" and single_category_max_area < 1.0:
            raise ValueError(
                f"single_category_max_area < 1 needs semantic labels at crop time; it is supported by the semantic "
                f"mapper only, not by the {self.task} mapper"
            )
        self.ignore_label = ignore_label
        self.augmentations = T.AugmentationList(build_train_augmentations(self.augmentation, self._seg_pad_value()))

    def _seg_pad_value(self) -> int:
        return 0  # binary masks and panoptic ids (0 = VOID) pad with 0

    def _label_for_crop(self, dataset_dict: dict[str, Any]) -> np.ndarray | None:
        return None

    @abc.abstractmethod
    def _targets(
        self, dataset_dict: dict[str, Any], aug_input: T.AugInput, transforms: T.TransformList
    ) -> dict[str, Any]:
        """The task's target entries (``instances`` and possibly ``sem_seg``) at the augmented size."""

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        dataset_dict = copy.deepcopy(dataset_dict)
        _require(dataset_dict, ("file_name", *self.required_keys), type(self).__name__)
        image = read_rgb_image(dataset_dict)
        aug_input = T.AugInput(image, sem_seg=self._label_for_crop(dataset_dict))
        transforms = self.augmentations(aug_input)
        record = _base_record(dataset_dict, aug_input.image)
        record.update(self._targets(dataset_dict, aug_input, transforms))
        return record

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.augmentation})"


class InstanceTrainMapper(_TrainMapper):
    """Instance segmentation (COCO / Cityscapes / ADE20K instance): masks from polygons or RLE, crowd dropped."""

    task = "instance"
    required_keys = ("annotations",)

    def _targets(self, dataset_dict, aug_input, transforms):
        original_hw = (dataset_dict["height"], dataset_dict["width"])
        image_hw = tuple(aug_input.image.shape[:2])
        return {"instances": instance_targets(dataset_dict["annotations"], transforms, original_hw, image_hw)}


class SemanticTrainMapper(_TrainMapper):
    """Semantic segmentation: ``sem_seg`` plus one mask per class present (ignore pixels in none)."""

    task = "semantic"
    required_keys = ("sem_seg_file_name",)

    def _seg_pad_value(self) -> int:
        return self.augmentation.ignore_label

    def _label_for_crop(self, dataset_dict):
        labels = read_label_png(dataset_dict["sem_seg_file_name"])
        if labels.ndim != 2:
            raise ValueError(f"Semantic label '{dataset_dict['sem_seg_file_name']}' must be a 1-channel PNG")
        return labels if labels.dtype == np.uint8 else labels.astype(np.float64)

    def _targets(self, dataset_dict, aug_input, transforms):
        sem_seg = aug_input.sem_seg.astype(np.int64)
        return {"sem_seg": torch.from_numpy(sem_seg), "instances": semantic_targets(sem_seg, self.ignore_label)}


class PanopticTrainMapper(_TrainMapper):
    """Panoptic segmentation: one mask per non-crowd segment; ``sem_seg`` derived from the panoptic map."""

    task = "panoptic"
    required_keys = ("pan_seg_file_name", "segments_info")

    def _targets(self, dataset_dict, aug_input, transforms):
        pan_ids = transform_label_map(transforms, rgb_to_id(read_label_png(dataset_dict["pan_seg_file_name"])))
        sem_seg, instances = panoptic_targets(pan_ids, dataset_dict["segments_info"], self.ignore_label)
        return {"sem_seg": torch.from_numpy(sem_seg), "instances": instances}


#: the training mapper class of each task (``TRAIN_MAPPERS.get(task)``)
TRAIN_MAPPERS: Registry[type[_TrainMapper]] = Registry("train mapper")
for _mapper in (InstanceTrainMapper, SemanticTrainMapper, PanopticTrainMapper):
    TRAIN_MAPPERS.register(_mapper.task, _mapper)


class TestMapper:
    """Inference mapper: resize the short side to ``min_size`` (long side at most ``max_size``; 0 = no resize).

    ``height``/``width`` keep the original size, at which evaluators expect the predictions.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, *, min_size: int = 0, max_size: int = 0):
        if min_size < 0 or max_size < 0:
            raise ValueError(f"min_size and max_size must be >= 0, got {min_size} and {max_size}")
        self.min_size, self.max_size = min_size, max_size
        self.resize = T.ResizeShortestEdge(min_size, max_size or sys.maxsize) if min_size > 0 else None

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        dataset_dict = dict(dataset_dict)
        image = read_rgb_image(dataset_dict)
        if self.resize is not None:
            image = self.resize.get_transform(image).apply_image(image)
        return _base_record(dataset_dict, image)

    def __repr__(self) -> str:
        return f"TestMapper(min_size={self.min_size}, max_size={self.max_size})"
