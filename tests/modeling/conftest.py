"""Shared fixtures for the Mask2Former tests: a tiny real detectron2 Backbone and a coloured-shapes dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.structures import Instances
from hydra import compose, initialize_config_dir
from torch import nn

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

# (name, RGB colour) of the synthetic classes; classes 0-1 are things (rectangles, discs), 2 is stuff (ground)
SHAPE_CLASSES = [("rectangle", (230, 40, 40)), ("disc", (40, 90, 230)), ("ground", (60, 170, 60))]


class TinyBackbone(Backbone):
    """Four strided conv stages giving res2..res5 at strides 4/8/16/32, with the mgfusion adapter attributes."""

    def __init__(self, channels: tuple[int, int, int, int] = (16, 24, 32, 48)) -> None:
        super().__init__()
        c2, c3, c4, c5 = channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, c2, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(c2, c2, 3, stride=2, padding=1), nn.ReLU()
        )
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU())
            for cin, cout in [(c2, c3), (c3, c4), (c4, c5)]
        )
        names, strides = ["res2", "res3", "res4", "res5"], [4, 8, 16, 32]
        self._shapes = {name: ShapeSpec(channels=c, stride=s) for name, c, s in zip(names, channels, strides)}
        self.pixel_mean = (123.675, 116.28, 103.53)
        self.pixel_std = (58.395, 57.12, 57.375)

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"res2": self.stem(x)}
        y = out["res2"]
        for name, stage in zip(["res3", "res4", "res5"], self.stages):
            y = stage(y)
            out[name] = y
        return out

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)


def make_shapes_image(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: a grey background, a green "ground" band at the bottom, 1-3 red rectangles / blue discs.

    Returns (uint8 (H, W, 3) RGB image, bool (N, H, W) segment masks, int64 (N,) classes); the ground is the
    last segment, things do not overlap each other.
    """
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    ground = np.zeros((height, width), dtype=bool)
    ground[int(height * rng.uniform(0.7, 0.8)) :, :] = True
    taken = ground.copy()
    masks, classes = [], []
    yy, xx = np.mgrid[:height, :width]
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            cls = int(rng.integers(0, 2))
            size = int(rng.integers(height // 6, height // 3))
            cy = int(rng.integers(size // 2, int(height * 0.7) - size // 2))
            cx = int(rng.integers(size // 2, width - size // 2))
            if cls == 0:
                mask = (abs(yy - cy) <= size // 2) & (abs(xx - cx) <= int(size * 0.7) // 2 + 2)
            else:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 2) ** 2
            if not (mask & taken).any():
                break
        else:
            continue
        taken |= mask
        masks.append(mask)
        classes.append(cls)
    for mask, cls in zip(masks, classes):
        image[mask] = SHAPE_CLASSES[cls][1]
    image[ground] = SHAPE_CLASSES[2][1]
    masks.append(ground)
    classes.append(2)
    return image, np.stack(masks), np.array(classes, dtype=np.int64)


def make_shapes_dataset(num_images: int, size: int = 64, seed: int = 0) -> list[dict]:
    """detectron2 training dicts ("image" uint8 (3, H, W) RGB, "height", "width", "instances")."""
    rng = np.random.default_rng(seed)
    data = []
    for i in range(num_images):
        image, masks, classes = make_shapes_image(rng, size, size)
        instances = Instances((size, size))
        instances.gt_classes = torch.from_numpy(classes)
        instances.gt_masks = torch.from_numpy(masks)
        data.append(
            {
                "image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                "height": size,
                "width": size,
                "image_id": i,
                "instances": instances,
            }
        )
    return data


@pytest.fixture
def tiny_backbone() -> TinyBackbone:
    torch.manual_seed(0)
    return TinyBackbone()


@pytest.fixture(scope="session")
def tiny_model_cfg():
    """The composed configs/model/mask2former_tiny.yaml node (num_classes still mandatory)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(overrides=["+model=mask2former_tiny"])
    return cfg.model


@pytest.fixture(autouse=True)
def single_thread():
    """Small tensors gain nothing from threads, and one thread keeps timings stable on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
