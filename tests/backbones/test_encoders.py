"""Registry-wide contract test (timm-style): every registered encoder, random init, two odd input sizes."""

import math

import pytest
import torch

from mgfusion.backbones import build_encoder, list_encoders

SIZES = [(100, 132), (64, 96)]


@pytest.mark.parametrize("name", list_encoders())
def test_encoder_pyramid_matches_declaration(name):
    torch.manual_seed(0)
    enc = build_encoder(name).eval()
    assert tuple(enc.out_strides) == (4, 8, 16, 32)
    assert set(enc.out_channels) == set(enc.out_strides)
    assert len(enc.pixel_mean) == 3 and len(enc.pixel_std) == 3 and min(enc.pixel_std) > 1.0, "0-255 units"
    assert isinstance(enc.size_divisibility, int) and enc.size_divisibility > 0
    shape = enc.output_shape()
    for h, w in SIZES:
        with torch.no_grad():
            out = enc(torch.randn(1, 3, h, w))
        assert list(out) == list(enc.out_strides)
        for s, f in out.items():
            assert tuple(f.shape) == (1, enc.out_channels[s], math.ceil(h / s), math.ceil(w / s)), (name, s, (h, w))
            assert shape[s].channels == f.shape[1] and shape[s].stride == s
            assert torch.isfinite(f).all()
