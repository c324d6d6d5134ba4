"""Training augmentations of the paper's protocol (docs/training.md), built from plain numbers.

Policies (``AugmentationConfig.policy``, registry :data:`AUGMENTATION_POLICIES`):

* ``scale_jitter`` (Cityscapes, ADE20K): resize the short side to one of ``base_size * s`` for
  ``s = min_scale, min_scale + scale_step, ..., max_scale`` (long side capped at ``max_size``), then a random
  absolute crop of ``crop_size`` (h, w). Cityscapes: base 1024, 0.5-2.0, max 4096, crop 512x1024;
  ADE20K: base 512, 0.5-2.0, max 2048, crop 512x512.
* ``lsj`` (COCO): large-scale jitter: scale the image to fit ``lsj_size`` times a factor in
  [min_scale, max_scale] (0.1-2.0), then crop / pad (bottom-right) to ``lsj_size`` x ``lsj_size``.
* ``none``: no geometric change.

Every policy can add SSD-style colour jitter (brightness, contrast, saturation, hue) and a horizontal flip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from detectron2.data import transforms as T

from mgfusion.utils.registry import Registry

__all__ = [
    "AUGMENTATION_POLICIES",
    "AugmentationConfig",
    "ColorJitter",
    "ColorJitterTransform",
    "build_train_augmentations",
    "scale_jitter_short_sides",
]


class ColorJitterTransform(T.Transform):
    """Photometric distortion with fixed parameters; geometry and labels are unchanged.

    Args:
        brightness: value added to every channel (0 = off).
        contrast: factor multiplying all channels (1 = off).
        saturation: factor multiplying HSV saturation (1 = off).
        hue: shift of the OpenCV hue channel, in units of 2 degrees (0 = off).
        contrast_first: apply contrast before (True) or after (False) the HSV changes.
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, contrast_first: bool):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB."""
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"ColorJitterTransform expects an (H, W, 3) uint8 RGB image, got {img.dtype} {img.shape}")
        out = img.astype(np.float32) + self.brightness
        if self.contrast_first:
            out *= self.contrast
        if self.saturation != 1.0 or self.hue != 0.0:
            hsv = cv2.cvtColor(out.clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
            hsv[..., 1] = (hsv[..., 1] * self.saturation).clip(0, 255)
            hsv[..., 0] = (hsv[..., 0] + self.hue) % 180
            out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        if not self.contrast_first:
            out *= self.contrast
        return out.clip(0, 255).astype(np.uint8)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> T.Transform:
        return T.NoOpTransform()


class ColorJitter(T.Augmentation):
    """SSD-style colour jitter: each of brightness (+-32), contrast (x0.5-1.5), saturation (x0.5-1.5) and hue
    (+-18, i.e. +-36 degrees) is applied with probability 0.5; contrast goes first or last at random."""

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18.0,
    ):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        def maybe(value: float, off: float) -> float:
            return value if np.random.rand() < 0.5 else off

        return ColorJitterTransform(
            brightness=maybe(np.random.uniform(-self.brightness_delta, self.brightness_delta), 0.0),
            contrast=maybe(np.random.uniform(*self.contrast_range), 1.0),
            saturation=maybe(np.random.uniform(*self.saturation_range), 1.0),
            hue=maybe(float(np.random.randint(-int(self.hue_delta), int(self.hue_delta) + 1)), 0.0),
            contrast_first=bool(np.random.rand() < 0.5),
        )


@dataclass(frozen=True, kw_only=True)
class AugmentationConfig:
    """Plain-number description of a training augmentation (see the module docstring for the policies)."""

    policy: str = "scale_jitter"
    base_size: int = 1024
    min_scale: float = 0.5
    max_scale: float = 2.0
    scale_step: float = 0.1
    max_size: int = 4096
    crop_size: tuple[int, int] | None = (512, 1024)
    single_category_max_area: float = 1.0
    lsj_size: int = 1024
    color_jitter: bool = True
    flip_prob: float = 0.5
    pad_value: float = 128.0
    ignore_label: int = 255

    def __post_init__(self) -> None:
        AUGMENTATION_POLICIES.get(self.policy)  # RegistryError (a ValueError) naming the valid policies
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale} and {self.max_scale}")
        if self.scale_step <= 0:
            raise ValueError(f"scale_step must be > 0, got {self.scale_step}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must lie in [0, 1], got {self.flip_prob}")
        if self.crop_size is not None:
            crop = tuple(int(c) for c in self.crop_size)
            if len(crop) != 2 or min(crop) <= 0:
                raise ValueError(f"crop_size must be two positive ints (height, width), got {self.crop_size}")
            object.__setattr__(self, "crop_size", crop)
        if min(self.base_size, self.max_size, self.lsj_size) <= 0:
            raise ValueError("base_size, max_size and lsj_size must be positive")
        if not 0.0 < self.single_category_max_area <= 1.0:
            raise ValueError(f"single_category_max_area must lie in (0, 1], got {self.single_category_max_area}")


def scale_jitter_short_sides(base_size: int, min_scale: float, max_scale: float, scale_step: float) -> list[int]:
    """Short-side choices ``int(base_size * k * scale_step)`` for the multiples of ``scale_step`` in range.

    With (1024, 0.5, 2.0, 0.1) this is the reference's ``[int(x * 0.1 * 1024) for x in range(5, 21)]``.
    """
    first, last = round(min_scale / scale_step), round(max_scale / scale_step)
    return [int(round(k * scale_step, 6) * base_size) for k in range(first, last + 1)]


#: policy name -> ``fn(config, seg_pad_value) -> list of geometric augmentations``
AUGMENTATION_POLICIES: Registry[Callable[[AugmentationConfig, int], list[T.Augmentation]]] = Registry(
    "augmentation policy"
)


@AUGMENTATION_POLICIES.register("scale_jitter")
def _scale_jitter(config: AugmentationConfig, seg_pad_value: int) -> list[T.Augmentation]:
    sizes = scale_jitter_short_sides(config.base_size, config.min_scale, config.max_scale, config.scale_step)
    augs: list[T.Augmentation] = [T.ResizeShortestEdge(sizes, config.max_size, sample_style="choice")]
    if config.crop_size is not None:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                "absolute", config.crop_size, config.single_category_max_area, config.ignore_label
            )
        )
    return augs


@AUGMENTATION_POLICIES.register("lsj")
def _large_scale_jitter(config: AugmentationConfig, seg_pad_value: int) -> list[T.Augmentation]:
    size = config.lsj_size
    return [
        T.ResizeScale(config.min_scale, config.max_scale, target_height=size, target_width=size),
        T.FixedSizeCrop((size, size), pad=True, pad_value=config.pad_value, seg_pad_value=seg_pad_value),
    ]


@AUGMENTATION_POLICIES.register("none")
def _no_geometry(config: AugmentationConfig, seg_pad_value: int) -> list[T.Augmentation]:
    return []


def build_train_augmentations(config: AugmentationConfig, seg_pad_value: int) -> list[T.Augmentation]:
    """The augmentation list of ``config``: geometry, then colour jitter, then flip.

    Args:
        seg_pad_value: value of padded label pixels (the ignore label for semantic maps, 0 for binary masks and
            panoptic id maps, where 0 is VOID).
    """
    augs = AUGMENTATION_POLICIES.get(config.policy)(config, seg_pad_value)
    if config.color_jitter:
        augs.append(ColorJitter())
    if config.flip_prob > 0:
        augs.append(T.RandomFlip(prob=config.flip_prob, horizontal=True, vertical=False))
    return augs
