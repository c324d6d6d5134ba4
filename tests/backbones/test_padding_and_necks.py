"""Padding (never resizing) inside encoders, the three ViT necks, and multi-layer taps."""

import math

import pytest
import torch
import torch.nn.functional as F

from mgfusion.backbones import build_encoder, build_neck, list_necks, pad_to_multiple


@pytest.mark.parametrize("name", ["dinov3_micro16", "sam2_hiera_micro", "dinov2_vits14"])
def test_odd_input_equals_crop_of_explicitly_padded_input(name):
    """The encoder pads (zeros after normalization) and crops back: identical to padding by hand."""
    torch.manual_seed(0)
    enc = build_encoder(name).eval()
    x = torch.randn(1, 3, 75, 90)
    xp = pad_to_multiple(x, enc.size_divisibility)
    assert xp.shape[-1] % enc.size_divisibility == 0 and xp.shape[-2] > 75
    with torch.no_grad():
        out, out_padded = enc(x), enc(xp)
    for s in enc.out_strides:
        h, w = math.ceil(75 / s), math.ceil(90 / s)
        torch.testing.assert_close(out[s], out_padded[s][..., :h, :w], rtol=0, atol=0)


def test_paper_neck_is_nearest_resize_plus_1x1_conv():
    torch.manual_seed(0)
    enc = build_encoder("dinov3_micro16", neck="paper").eval()
    raw = build_encoder("dinov3_micro16", neck="raw").eval()
    raw.trunk.load_state_dict(enc.trunk.state_dict())
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        tokens = enc.trunk.forward_intermediates(x, indices=[3], norm=True, output_fmt="NCHW",
                                                 intermediates_only=True)[0]
        out, out_raw = enc(x), raw(x)
    assert tokens.shape[-2:] == (4, 6)
    # stride 4 = every token repeated 4x4; stride 16 = the tokens; stride 32 = every other token
    torch.testing.assert_close(out_raw[4], tokens.repeat_interleave(4, -2).repeat_interleave(4, -1))
    torch.testing.assert_close(out_raw[16], tokens)
    torch.testing.assert_close(out_raw[32], tokens[..., ::2, ::2])
    for s in (4, 8, 16, 32):
        conv = enc.neck.proj[str(s)]
        torch.testing.assert_close(out[s], conv(out_raw[s]), rtol=1e-5, atol=1e-5)
    assert enc.out_channels == {4: 32, 8: 64, 16: 96, 32: 128}
    assert raw.out_channels == {s: 96 for s in (4, 8, 16, 32)}


def test_vitdet_neck_shapes_and_structure():
    assert set(list_necks()) >= {"paper", "vitdet", "raw"}
    neck = build_neck("vitdet", in_channels=64, patch_size=16, out_channels=32)
    tokens = torch.randn(1, 64, 5, 7)  # stride-16 grid of an 80x112 padded input
    out = neck([tokens], (80, 112))
    assert {s: tuple(v.shape[-2:]) for s, v in out.items()} == {4: (20, 28), 8: (10, 14), 16: (5, 7), 32: (3, 4)}
    assert all(v.shape[1] == 32 for v in out.values())
    with torch.no_grad():  # ViTDet's samplers: identity at 16, 2x2 max-pool at 32, non-overlapping 2x2 deconvs below
        torch.testing.assert_close(out[16], neck.output["16"](tokens))
        torch.testing.assert_close(out[32], neck.output["32"](F.max_pool2d(tokens, 2, ceil_mode=True)))
        poked = tokens.clone()
        poked[0, :, 2, 3] += 1.0
        for s, k in ((8, 2), (4, 4)):  # one token reaches exactly its own k x k block of the stride-s map
            moved = (neck.resample[str(s)](poked) - neck.resample[str(s)](tokens)).abs().sum(1)[0] > 0
            block = torch.zeros_like(moved)
            block[2 * k: 3 * k, 3 * k: 4 * k] = True
            assert torch.equal(moved, block), s
    # patch-14 tokens are resampled to the stride-16 grid first
    neck14 = build_neck("vitdet", in_channels=64, patch_size=14, out_channels=(8, 16, 24, 32))
    out14 = neck14([torch.randn(1, 64, 5, 7)], (70, 98))
    assert {s: v.shape[1] for s, v in out14.items()} == {4: 8, 8: 16, 16: 24, 32: 32}
    assert out14[16].shape[-2:] == (math.ceil(70 / 16), math.ceil(98 / 16))


def test_unknown_neck_lists_valid_ones():
    with pytest.raises(KeyError, match="Registered pyramid necks: paper, raw, vitdet"):
        build_neck("fpn", in_channels=8, patch_size=16)


def test_vitdet_neck_on_an_encoder():
    enc = build_encoder("dinov3_micro16", neck="vitdet", neck_channels=48).eval()
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 50, 70))
    assert {s: tuple(v.shape[1:]) for s, v in out.items()} == {
        4: (48, 13, 18), 8: (48, 7, 9), 16: (48, 4, 5), 32: (48, 2, 3)}


def test_multi_layer_taps_one_block_per_level_and_pruning():
    torch.manual_seed(0)
    enc = build_encoder("dinov3_micro16", neck="raw", taps=[0, 1, 2, 2]).eval()
    assert len(enc.trunk.blocks) == 3, "blocks after the last tap are dropped"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = enc(x)
        inter = enc.trunk.forward_intermediates(x, indices=[0, 1, 2], norm=True, output_fmt="NCHW",
                                                intermediates_only=True)
    torch.testing.assert_close(out[16], inter[2])
    torch.testing.assert_close(out[8], F.interpolate(inter[1], scale_factor=2, mode="nearest"))
    torch.testing.assert_close(out[4], F.interpolate(inter[0], scale_factor=4, mode="nearest"))
    assert not torch.allclose(out[16], F.interpolate(out[8], size=out[16].shape[-2:], mode="nearest"))


@pytest.mark.parametrize("taps", [[9], [0, 1], [-7]])
def test_bad_taps_are_rejected(taps):
    with pytest.raises(ValueError, match="tap|taps"):
        build_encoder("dinov3_micro16", taps=taps)
