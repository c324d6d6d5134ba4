"""Image decoding and checks: 16-bit images scaled by value/257 (not clipped), range-less images refused,
tiny and elongated images skipped with a reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from mgfusion.profiling.loader import (
    ProfileImageDataset,
    UnsupportedImageError,
    decode_rgb,
    size_problem,
)
from mgfusion.profiling.sources import ImageRecord


def test_sixteen_bit_grey_and_colour_png_are_scaled_not_clipped(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    Image.fromarray(v[..., 0]).save(tmp_path / "grey16.png")
    cv2.imwrite(str(tmp_path / "rgb16.png"), v[..., ::-1])  # cv2 writes BGR
    cv2.imwrite(str(tmp_path / "grey16.tif"), v[..., 1])
    expect = np.rint(v / 257.0).astype(np.uint8)
    grey = decode_rgb(str(tmp_path / "grey16.png"))
    assert grey.dtype == np.uint8 and grey.shape == (20, 30, 3)
    assert (grey == expect[..., :1]).all()
    assert (decode_rgb(str(tmp_path / "rgb16.png")) == expect).all()
    assert (decode_rgb(str(tmp_path / "grey16.tif")) == expect[..., 1:2]).all()
    assert (grey == 255).mean() < 0.01, "convert('RGB') would clip almost every pixel to 255"
    # an 8-bit image stored as 16-bit (x257) decodes to exactly the 8-bit values
    eight = rng.integers(0, 256, (20, 30)).astype(np.uint16)
    Image.fromarray(eight * 257).save(tmp_path / "x257.png")
    assert (decode_rgb(str(tmp_path / "x257.png"))[..., 0] == eight).all()


def test_float_and_32_bit_images_are_refused(tmp_path):
    Image.fromarray(np.full((40, 40), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(UnsupportedImageError, match=r"f\.tif: 'F' \(float\) image has no defined value range"):
        decode_rgb(str(tmp_path / "f.tif"))


def test_size_rules_and_their_messages(tmp_path):
    assert size_problem(48, 64, min_side=32, max_aspect=8) is None
    assert size_problem(1, 1, min_side=32, max_aspect=8) == "too small: 1x1 px, shorter side 1 < min_image_side=32"
    assert size_problem(40, 400, min_side=32, max_aspect=8) == (
        "extreme aspect ratio: 40x400 px, long/short side 10.0 > max_aspect_ratio=8")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    item = ProfileImageDataset([ImageRecord("dot", str(tmp_path / "dot.png"))], resolution=[64, 64])[0]
    assert item == {"id": "dot", "skipped": f"{tmp_path / 'dot.png'}: too small: 1x1 px, shorter side 1 < "
                                            "min_image_side=32"}
