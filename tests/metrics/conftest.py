"""Shared fixtures for mgfusion.metrics tests: real CC0 photos from scikit-image and small map builders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(autouse=True, scope="package")
def _single_thread():
    """These tests use small maps: one intra-op thread is fastest and immune to OpenMP spin on busy machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def photos() -> dict[str, torch.Tensor]:
    """scikit-image's CC0 photos as (1,3,H,W) uint8 tensors."""
    skdata = pytest.importorskip("skimage.data")
    return {name: torch.from_numpy(getattr(skdata, name)()).permute(2, 0, 1)[None].contiguous()
            for name in ("astronaut", "coffee", "chelsea")}


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B,C,H,W) with replicate padding."""
    k = 2 * int(3 * sigma) + 1
    t = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-t**2 / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode="replicate"), g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(F.pad(x, (0, 0, k // 2, k // 2), mode="replicate"), g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def shift_map(x: torch.Tensor, cells: int) -> torch.Tensor:
    """Shift (B,C,H,W) content by `cells` down and right (replicate fill at the top/left)."""
    return F.pad(x, (cells, 0, cells, 0), mode="replicate")[..., : x.shape[-2], : x.shape[-1]]


def image_features(photo: torch.Tensor, stride: int, channels: int = 16, seed: int = 0) -> torch.Tensor:
    """Image-aligned features: random linear mixtures of the photo's colours at feature resolution."""
    h, w = -(-photo.shape[-2] // stride), -(-photo.shape[-1] // stride)
    rgb = F.interpolate(photo.float() / 255.0, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    mix = torch.randn(channels, 3, generator=torch.Generator().manual_seed(seed))
    return torch.einsum("oc,bchw->bohw", mix, rgb)


def edge_features(photo: torch.Tensor, stride: int) -> torch.Tensor:
    """Features built from the image's own edges: luminance, its Sobel x/y responses and gradient magnitude."""
    from mgfusion.metrics.primitives import luminance, to_unit_rgb

    h, w = -(-photo.shape[-2] // stride), -(-photo.shape[-1] // stride)
    y = luminance(to_unit_rgb(photo), (h, w), antialias=True).unsqueeze(1)
    k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]).view(1, 1, 3, 3) / 4
    yp = F.pad(y, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(yp, k), F.conv2d(yp, k.transpose(2, 3))
    return torch.cat([y, gx, gy, torch.sqrt(gx**2 + gy**2)], dim=1)


@pytest.fixture(scope="session")
def helpers():
    """Namespace of map builders (blur, shift, image-aligned features)."""
    class H:
        blur = staticmethod(gaussian_blur)
        shift = staticmethod(shift_map)
        image_features = staticmethod(image_features)
        edge_features = staticmethod(edge_features)

    return H
