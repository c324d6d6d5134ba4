"""Registry-wide contract test (timm-style): every registered encoder, random init, two odd input sizes.

The large encoders (ViT-L, SAM ViT-L, Hiera-L) run in the ``slow`` group (CI runs it too); the others also check
the backward pass: every trainable parameter that the pyramid depends on gets a finite gradient.
"""

import math
import re

import pytest
import torch

from mgfusion.backbones import build_encoder, list_encoders

SIZES = [(100, 132), (64, 96)]
_LARGE = re.compile(r"(vitl\d+|samvit_l|hiera_l)")


def _small(names):
    return [n for n in names if not _LARGE.search(n)]


def test_large_encoder_pattern_selects_the_large_sizes():
    large = [n for n in list_encoders() if _LARGE.search(n)]
    assert {"dinov3_vitl16", "dinov2_vitl14", "samvit_l", "sam2_hiera_l"} <= set(large)
    assert not any(s in n for n in large for s in ("vits", "vitb", "micro", "hiera_t", "hiera_s", "hiera_b"))


@pytest.mark.parametrize("name", list_encoders())
def test_encoder_pyramid_matches_declaration(name):
    """Every registered encoder returns the pyramid it declares. The large sizes (ViT-L, Hiera-L: 300 M parameters,
    seconds of random initialisation each) run on the meta device: the same code path and output shapes without
    allocating or computing values; their values are checked on the small sizes of the same architectures."""
    torch.manual_seed(0)
    device = torch.device("meta" if _LARGE.search(name) else "cpu")
    with device:
        enc = build_encoder(name).eval()
    assert tuple(enc.out_strides) == (4, 8, 16, 32)
    assert set(enc.out_channels) == set(enc.out_strides)
    assert len(enc.pixel_mean) == 3 and len(enc.pixel_std) == 3 and min(enc.pixel_std) > 1.0, "0-255 units"
    assert isinstance(enc.size_divisibility, int) and enc.size_divisibility > 0
    shape = enc.output_shape()
    for h, w in SIZES:
        with torch.no_grad():
            out = enc(torch.randn(1, 3, h, w, device=device))
        assert list(out) == list(enc.out_strides)
        for s, f in out.items():
            assert tuple(f.shape) == (1, enc.out_channels[s], math.ceil(h / s), math.ceil(w / s)), (name, s, (h, w))
            assert shape[s].channels == f.shape[1] and shape[s].stride == s and f.device.type == device.type
            assert device.type == "meta" or torch.isfinite(f).all()


@pytest.mark.parametrize("name", _small(list_encoders()))
def test_encoder_backward_reaches_every_used_parameter(name):
    """A loss on all four levels gives finite gradients, non-zero on the input stem; parameters without a gradient
    are exactly those the forward does not use (e.g. heads timm builds but the pyramid never calls)."""
    torch.manual_seed(0)
    enc = build_encoder(name).train()
    x = torch.randn(1, 3, 64, 96, requires_grad=True)
    out = enc(x)
    sum(f.float().square().mean() for f in out.values()).backward()
    grads = {n: p.grad for n, p in enc.named_parameters() if p.requires_grad}
    assert grads, f"{name} has no trainable parameters"
    with_grad = {n: g for n, g in grads.items() if g is not None}
    assert all(torch.isfinite(g).all() for g in with_grad.values()), name
    assert x.grad is not None and x.grad.abs().sum() > 0, f"{name}: no gradient reaches the input"
    # the stem (first parameter created) must learn; a large share of the parameters must receive gradients
    first = next(n for n, p in enc.named_parameters() if p.requires_grad)
    assert with_grad.get(first) is not None and with_grad[first].abs().sum() > 0, (name, first)
    used = sum(grads[n].numel() for n in with_grad) / sum(p.numel() for p in enc.parameters() if p.requires_grad)
    assert used > 0.9, f"{name}: only {used:.0%} of the trainable parameters get a gradient"
