"""FixedSizeInput: an encoder that only ever sees fixed-size tiles (SAM / SAM2 at 1024x1024, paper §4.1), checked
against the authors' (disabled) tiling: a 512x1024 crop stacked twice, a 1024x2048 image cut into two halves."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mgfusion.backbones import FixedSizeInput, build_encoder, fill_canvas

MICRO_HIERA = {"embed_dim": 32, "num_heads": 1, "stages": (1, 1, 2, 1), "global_att_blocks": (3,)}
TINY_SAM = {"depth": 2, "embed_dim": 64, "num_heads": 2, "global_attn_indexes": [1]}


def _hiera(**kwargs):
    torch.manual_seed(0)
    return build_encoder("sam2_hiera_t_fpn", timm_kwargs=MICRO_HIERA, neck_channels=32, **kwargs).eval()


def _seen(encoder) -> list[tuple[int, ...]]:
    """Records the input shape of every call of ``encoder``."""
    shapes: list[tuple[int, ...]] = []
    encoder.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    return shapes


def _run(enc, x):
    with torch.no_grad():
        return enc(x)


def test_fill_canvas_pads_with_zeros_or_repeats_the_image():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    assert torch.equal(fill_canvas(x, 4, 5, "zeros")[0, 0], torch.tensor(
        [[0, 1, 2, 0, 0], [3, 4, 5, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0.]]))
    assert torch.equal(fill_canvas(x, 5, 4, "repeat")[0, 0], torch.tensor(
        [[0, 1, 2, 0], [3, 4, 5, 3], [0, 1, 2, 0], [3, 4, 5, 3], [0, 1, 2, 0.]]))
    with pytest.raises(ValueError, match="canvas 1x5 is smaller than the input 2x3"):
        fill_canvas(x, 1, 5, "zeros")


def test_sam_encoders_see_1024x1024_and_the_decoder_gets_its_strides():
    """Cityscapes: a 512x1024 training crop is one 1024x1024 encoder input, a 1024x2048 test image two."""
    for inner in (_hiera(), build_encoder("samvit_b", timm_kwargs=TINY_SAM, neck_channels=16).eval()):
        enc = FixedSizeInput(encoder=inner, input_size=1024)
        seen = _seen(inner)
        crop = _run(enc, torch.randn(1, 3, 512, 1024))
        assert seen == [(1, 3, 1024, 1024)]
        assert {s: tuple(f.shape[-2:]) for s, f in crop.items()} == {4: (128, 256), 8: (64, 128), 16: (32, 64),
                                                                     32: (16, 32)}
        seen.clear()
        with torch.device("meta"):  # a full image: shapes only
            full = enc.to("meta")(torch.empty(1, 3, 1024, 2048))
        assert seen == [(2, 3, 1024, 1024)]
        assert {s: tuple(f.shape) for s, f in full.items()} == {
            s: (1, inner.out_channels[s], 1024 // s, 2048 // s) for s in (4, 8, 16, 32)}


def test_repeat_fill_is_the_authors_stacked_crop_and_halves_are_their_test_split():
    inner = _hiera()
    enc = FixedSizeInput(encoder=inner, input_size=(128, 128), fill="repeat")
    crop = torch.randn(2, 3, 64, 128)
    out, stacked = _run(enc, crop), _run(inner, torch.cat([crop, crop], dim=2))
    for s in (4, 8, 16, 32):  # the top half of the stacked crop's features
        assert torch.equal(out[s], stacked[s][..., : 64 // s, :])
    image = torch.randn(1, 3, 128, 256)
    out = _run(enc, image)
    left, right = _run(inner, image[..., :128]), _run(inner, image[..., 128:])
    for s in (4, 8, 16, 32):  # (one batch of two tiles vs two single runs: equal up to float rounding)
        torch.testing.assert_close(out[s], torch.cat([left[s], right[s]], dim=-1))


def test_zero_fill_of_odd_sizes_equals_padding_then_cropping():
    inner = _hiera()
    enc = FixedSizeInput(encoder=inner, input_size=(64, 96))
    seen = _seen(inner)
    x = torch.randn(2, 3, 70, 100)  # 2 x 2 tiles per image
    out = _run(enc, x)
    assert seen == [(8, 3, 64, 96)]
    canvas = F.pad(x, (0, 92, 0, 58))
    for s in (4, 8, 16, 32):
        assert out[s].shape == (2, 32, math.ceil(70 / s), math.ceil(100 / s))
        for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
            tile = _run(inner, canvas[..., 64 * i: 64 * (i + 1), 96 * j: 96 * (j + 1)])[s]
            h, w = 64 // s, 96 // s
            ref = tile[..., : max(0, min(h, out[s].shape[-2] - i * h)), : max(0, min(w, out[s].shape[-1] - j * w))]
            torch.testing.assert_close(out[s][..., i * h: i * h + ref.shape[-2], j * w: j * w + ref.shape[-1]], ref)


def test_duplicated_level_survives_tiling():
    enc = FixedSizeInput(encoder=_hiera(reproduce_b9=True), input_size=64)
    out = _run(enc, torch.randn(1, 3, 100, 140))
    assert out[32] is out[16] and out[16].shape[-2:] == (7, 9)


def test_freezing_and_validation():
    inner = build_encoder("sam2_hiera_t_fpn", timm_kwargs=MICRO_HIERA, freeze=True)
    enc = FixedSizeInput(encoder=inner, input_size=64).train()
    assert enc.frozen and not inner.training and enc.registry_name == "sam2_hiera_t_fpn"
    assert (enc.out_channels, enc.pixel_mean) == (inner.out_channels, inner.pixel_mean)
    with pytest.raises(ValueError, match=r"input_size \(1000, 1000\) must be positive multiples of 32"):
        FixedSizeInput(encoder=inner, input_size=1000)
    with pytest.raises(ValueError, match="fill='reflect'; valid: zeros, repeat"):
        FixedSizeInput(encoder=inner, input_size=64, fill="reflect")


def test_without_input_size_the_encoder_sees_the_batch_as_it_comes():
    inner = _hiera(reproduce_b9=True)
    enc = FixedSizeInput(encoder=inner, input_size=None)
    seen = _seen(inner)
    x = torch.randn(2, 3, 70, 100)
    out, ref = _run(enc, x), _run(inner, x)
    assert seen == [(2, 3, 70, 100), (2, 3, 70, 100)]
    assert all(torch.equal(out[s], ref[s]) for s in (4, 8, 16, 32)) and out[32] is out[16]
