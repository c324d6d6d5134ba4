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


# ------------------------------------------------------------------------------------------ device comparisons
#: ``(rtol, atol)`` of metric values computed on an accelerator against the same computation on the CPU (or against
#: another accelerator computation whose kernels may differ, e.g. for another batch size). float32 kernels sum in a
#: different order there; on the CPU, perturbing the features by 2e-7 (relative) and the images by 1e-7 moves EF by
#: < 2e-5 and every other value by < 2e-6 on these tests' inputs, so these bounds leave a wide margin for round-off
#: while any real device bug (a lost mask, a wrong dtype, a misplaced tensor) moves values by far more. SCS (and SC)
#: pass through k-means, whose discrete choices (k-means++ candidates, the screened restart) round-off may tip.
ACCELERATOR_TOLERANCE: dict[str, tuple[float, float]] = {"EF": (1e-3, 1e-2), "SCS": (0.0, 5e-3), "SC": (0.0, 5e-3)}
ACCELERATOR_DEFAULT_TOLERANCE = (1e-3, 1e-4)


def accelerator_tolerance(key: str) -> tuple[float, float]:
    """``(rtol, atol)`` of metric ``key`` for comparisons involving an accelerator (see ACCELERATOR_TOLERANCE)."""
    return ACCELERATOR_TOLERANCE.get(key, ACCELERATOR_DEFAULT_TOLERANCE)


def assert_metrics_match(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], device: torch.device, *,
                         cpu_tol: tuple[float, float] | None = None, what: str = "") -> None:
    """``got`` and ``want`` (``{name: (B,) tensor}``) hold the same keys and values.

    On the CPU the values must be bit-identical (``cpu_tol=None``) or within ``cpu_tol = (rtol, atol)``; on an
    accelerator within :func:`accelerator_tolerance` (``want`` may live on the CPU).
    """
    assert set(got) == set(want), (what, sorted(set(got) ^ set(want)))
    for key, value in want.items():
        g, w = got[key], value.to(got[key].device)
        if torch.device(device).type == "cpu":
            if cpu_tol is None:
                assert torch.equal(g, w), (what, key, g, w)
            else:
                torch.testing.assert_close(g, w, rtol=cpu_tol[0], atol=cpu_tol[1], msg=f"{what} {key}")
        else:
            rtol, atol = accelerator_tolerance(key)
            torch.testing.assert_close(g, w, rtol=rtol, atol=atol, msg=f"{what} {key}")


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two labellings ``(n,)`` group the points alike (equal up to renaming the clusters)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))
