"""Tiny but real detectron2-format components for the engine tests: an mgfusion encoder, a per-pixel segmentation
meta-architecture (detectron2 list-of-dicts in, loss dict / ``sem_seg`` outputs out) and a synthetic semantic
segmentation dataset registered in detectron2's ``DatasetCatalog`` with PNG files on disk."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.modeling import Backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from PIL import Image
from torch import nn

from mgfusion.backbones import Encoder
from mgfusion.utils.io import atomic_open

CLASSES = ["background", "square", "disk"]


class TinyConvEncoder(Encoder):
    """Four strided conv stages (strides 4/8/16/32, ``width`` channels each, GroupNorm)."""

    def __init__(self, *, width: int = 8) -> None:
        super().__init__()
        self.out_channels = {s: width for s in self.out_strides}
        self.stem = nn.Sequential(nn.Conv2d(3, width, 4, stride=4), nn.GroupNorm(2, width), nn.ReLU())
        self.stages = nn.ModuleList(nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
                                    for _ in range(3))

    def forward_padded(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        feats = {4: self.stem(x)}
        for stride, stage in zip((8, 16, 32), self.stages):
            feats[stride] = stage(feats[stride // 2])
        return feats


class TinySegmentor(nn.Module):
    """Per-pixel classifier on the sum of the backbone's levels (1x1-projected to 16 channels, resized to stride 8),
    following detectron2's meta-architecture conventions; works with any res2..res5 backbone.

    Training: ``{"loss_sem_seg": mean cross-entropy over non-ignored pixels}``. Eval: ``[{"sem_seg": (C, H, W)}]``
    at each input's ``height`` x ``width`` (semantic segmentation only).
    ``train_step_delay_s`` slows each training forward (tests that kill a run mid-training).
    """

    def __init__(self, *, backbone: Backbone, metadata: Any, num_classes: int, ignore_label: int = 255,
                 train_step_delay_s: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.metadata = metadata
        self.ignore_label = ignore_label
        self.train_step_delay_s = train_step_delay_s
        self.lateral = nn.ModuleDict({name: nn.Conv2d(shape.channels, 16, 1)
                                      for name, shape in backbone.output_shape().items()})
        self.head = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
                                  nn.Conv2d(16, num_classes, 1))
        self.register_buffer("pixel_mean", torch.tensor(backbone.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(backbone.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.backbone.size_divisibility)
        feats = self.backbone(images.tensor)
        size = feats["res3"].shape[-2:]
        fused = sum(F.interpolate(self.lateral[name](f), size=size, mode="bilinear", align_corners=False)
                    for name, f in feats.items())
        logits = self.head(fused)
        logits = F.interpolate(logits, size=images.tensor.shape[-2:], mode="bilinear", align_corners=False)
        if self.training:
            if self.train_step_delay_s:
                time.sleep(self.train_step_delay_s)
            targets = ImageList.from_tensors([x["sem_seg"].to(self.device) for x in batched_inputs],
                                             self.backbone.size_divisibility, pad_value=self.ignore_label).tensor
            return {"loss_sem_seg": F.cross_entropy(logits.float(), targets, ignore_index=self.ignore_label)}
        return [
            {"sem_seg": sem_seg_postprocess(logit.float(), size, x.get("height", size[0]), x.get("width", size[1]))}
            for logit, x, size in zip(logits, batched_inputs, images.image_sizes)
        ]


def _draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with a square (class 1) and a disk (class 2) on a noisy background, and its label map."""
    image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    label = np.zeros((size, size), np.uint8)
    s, (y, x) = size // 3, rng.integers(0, size - size // 3, 2)
    label[y:y + s, x:x + s] = 1
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 6, size - size // 6, 2)
    label[(yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2] = 2
    image[label == 1] = (220, 40, 40)
    image[label == 2] = (40, 40, 220)
    return image, label


def register_tiny_shapes(*, root: str, prefix: str = "tiny_shapes", size: int = 64, num_train: int = 8,
                         num_val: int = 4, seed: int = 0) -> list[str]:
    """Write the images/labels under ``root`` (if missing) and (re-)register ``<prefix>_train`` / ``<prefix>_val``."""
    rng = np.random.default_rng(seed)
    names = []
    for split, count in (("train", num_train), ("val", num_val)):
        dicts = []
        for i in range(count):
            image, label = _draw(rng, size)
            paths = {k: os.path.join(root, split, f"{i:03d}_{k}.png") for k in ("image", "label")}
            for key, array in (("image", image), ("label", label)):
                if not os.path.isfile(paths[key]):
                    with atomic_open(paths[key], "wb") as f:
                        Image.fromarray(array).save(f, format="PNG")
            dicts.append({"file_name": paths["image"], "sem_seg_file_name": paths["label"], "height": size,
                          "width": size, "image_id": i})
        name = f"{prefix}_{split}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda d=dicts: [dict(x) for x in d])
        MetadataCatalog.get(name).set(stuff_classes=list(CLASSES), ignore_label=255, evaluator_type="sem_seg")
        names.append(name)
    return names


def sem_seg_evaluator(*, dataset_name: str, output_dir: str) -> SemSegEvaluator:
    """detectron2's SemSegEvaluator with a numpy-2 safe label reader (docs/install.md)."""
    return SemSegEvaluator(dataset_name, distributed=True, output_dir=output_dir,
                           sem_seg_loading_fn=lambda f, dtype: np.asarray(Image.open(f), dtype=dtype))
