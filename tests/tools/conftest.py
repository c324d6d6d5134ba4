"""Shared fixtures for tool tests: small image folders built from real CC0 photos (scikit-image) and shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _photos() -> list[tuple[str, np.ndarray]]:
    from skimage import data

    return [("astronaut", data.astronaut()), ("coffee", data.coffee()), ("chelsea", data.chelsea())]


def _shapes(seed: int, h: int = 96, w: int = 128) -> tuple[np.ndarray, list[dict]]:
    """A textured background with a few coloured rectangles; returns the image and COCO polygon annotations."""
    rng = np.random.default_rng(seed)
    img = (rng.normal(110, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
    anns = []
    for k in range(3):
        y0, x0 = int(rng.integers(0, h - 30)), int(rng.integers(0, w - 40))
        hh, ww = int(rng.integers(12, 30)), int(rng.integers(12, 40))
        img[y0:y0 + hh, x0:x0 + ww] = rng.integers(0, 255, 3)
        poly = [x0, y0, x0 + ww, y0, x0 + ww, y0 + hh, x0, y0 + hh]
        anns.append({"segmentation": [poly], "category_id": 1 + k % 2, "area": float(hh * ww), "iscrowd": 0,
                     "bbox": [x0, y0, ww, hh]})
    return img, anns


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """3 real photos (downscaled) + 3 generated images + 1 corrupt file."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name, arr in _photos():
        Image.fromarray(arr).resize((128, 96)).save(folder / f"{name}.png")
    for i in range(3):
        Image.fromarray(_shapes(i)[0]).save(folder / f"shapes_{i}.jpg")
    (folder / "zz_corrupt.png").write_bytes(b"this is not a png")
    return folder


@pytest.fixture
def coco_json(tmp_path) -> Path:
    """A COCO-style JSON with 4 generated images and polygon annotations."""
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(4):
        img, anns = _shapes(10 + i)
        Image.fromarray(img).save(root / "images" / f"{i:04d}.png")
        images.append({"id": i, "file_name": f"images/{i:04d}.png", "height": img.shape[0], "width": img.shape[1]})
        for a in anns:
            annotations.append({**a, "id": len(annotations) + 1, "image_id": i})
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return path
