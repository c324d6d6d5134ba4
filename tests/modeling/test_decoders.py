"""Pixel decoder and transformer decoder: shapes, masked-attention masks, intermediate predictions, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec

from mgfusion.modeling import (
    MSDeformAttnPixelDecoder,
    MultiScaleMaskedTransformerDecoder,
    sine_position_embedding,
)
from mgfusion.modeling.transformer_decoder import _attention_mask

SHAPES = {
    name: ShapeSpec(channels=c, stride=s)
    for name, c, s in [("res2", 8, 4), ("res3", 12, 8), ("res4", 16, 16), ("res5", 20, 32)]
}


def features(height=64, width=96, batch=2):
    generator = torch.Generator().manual_seed(0)
    return {
        name: torch.randn(batch, spec.channels, height // spec.stride, width // spec.stride, generator=generator)
        for name, spec in SHAPES.items()
    }


def small_pixel_decoder(**kwargs):
    return MSDeformAttnPixelDecoder(
        SHAPES, conv_dim=32, mask_dim=24, num_heads=4, num_points=2, num_layers=2, dim_feedforward=64, **kwargs
    )


def test_pixel_decoder_shapes():
    torch.manual_seed(0)
    mask_features, multi_scale = small_pixel_decoder()(features())
    assert mask_features.shape == (2, 24, 16, 24)
    assert [tuple(x.shape) for x in multi_scale] == [(2, 32, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12)]


def test_pixel_decoder_rejects_missing_features_and_wrong_stride():
    with pytest.raises(ValueError, match=r"missing \['res2'\]"):
        MSDeformAttnPixelDecoder({k: v for k, v in SHAPES.items() if k != "res2"})
    with pytest.raises(ValueError, match="common_stride=8"):
        MSDeformAttnPixelDecoder(SHAPES, common_stride=8)
    with pytest.raises(ValueError, match=r"precision='fp16' is not one of \['fp32', 'autocast'\].*pixel_decoder"):
        MSDeformAttnPixelDecoder(SHAPES, precision="fp16")
    with pytest.raises(ValueError, match="pos_embed_eps must be >= 0"):
        MSDeformAttnPixelDecoder(SHAPES, pos_embed_eps=-1.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_fp32_pixel_decoder_ignores_the_callers_autocast(dtype, device):
    torch.manual_seed(0)
    decoder = small_pixel_decoder().to(device)
    assert decoder.precision == "fp32", "the default is the original Mask2Former's float32 pixel decoder"
    inputs = {k: v.to(device) for k, v in features().items()}
    with torch.no_grad():
        expected_masks, _ = decoder(inputs)
        with torch.autocast(device.type, dtype=dtype):
            masks, levels = decoder({k: v.to(dtype) for k, v in inputs.items()})  # half inputs are upcast
    assert masks.dtype == torch.float32 and all(x.dtype == torch.float32 for x in levels)
    # the same float32 computation on inputs rounded to half precision
    torch.testing.assert_close(masks, expected_masks, rtol=0.02, atol=0.02)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
        masks_fp32_inputs, _ = decoder(inputs)
    torch.testing.assert_close(masks_fp32_inputs, expected_masks, rtol=1e-6, atol=1e-6)  # float32, not half


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_pixel_decoder_follows_the_callers_autocast(dtype, device):
    torch.manual_seed(0)
    decoder = small_pixel_decoder(precision="autocast").to(device)
    inputs = {k: v.to(device) for k, v in features().items()}
    with torch.no_grad():
        expected_masks, _ = decoder(inputs)
        with torch.autocast(device.type, dtype=dtype):
            masks, levels = decoder(inputs)
    assert masks.dtype == dtype and all(x.dtype == dtype for x in levels)
    torch.testing.assert_close(masks.float(), expected_masks, rtol=0.05, atol=0.05)
    assert not torch.equal(masks.float(), expected_masks), "autocast changed nothing: the switch has no effect"


def test_fp32_pixel_decoder_keeps_float64():
    torch.manual_seed(0)
    decoder = small_pixel_decoder().double()
    masks, levels = decoder({k: v.double() for k, v in features().items()})
    assert masks.dtype == torch.float64 and all(x.dtype == torch.float64 for x in levels)


def test_attention_mask_equals_thresholded_downsampled_full_resolution_mask():
    generator = torch.Generator().manual_seed(1)
    mask_embed = torch.randn(2, 5, 6, generator=generator)
    mask_features = torch.randn(2, 6, 16, 24, generator=generator)
    mask_features[:, 0] = 1.0
    mask_embed[0, 3] = torch.tensor([-5.0, 0, 0, 0, 0, 0])  # logit -5 everywhere: an empty mask
    full = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
    level_features = F.interpolate(mask_features, size=(4, 6), mode="bilinear", align_corners=False).flatten(2)
    allowed = _attention_mask(mask_embed, level_features)
    expected = F.interpolate(full, size=(4, 6), mode="bilinear", align_corners=False).flatten(2).sigmoid() >= 0.5
    assert not expected[0, 3].any()
    expected |= ~expected.any(-1, keepdim=True)  # queries with an empty mask attend everywhere
    assert allowed.shape == (2, 1, 5, 24)
    assert torch.equal(allowed[:, 0], expected)


def test_decoder_eval_output_is_the_last_training_prediction():
    torch.manual_seed(0)
    decoder = MultiScaleMaskedTransformerDecoder(
        in_channels=32,
        num_classes=4,
        mask_dim=24,
        hidden_dim=32,
        num_queries=7,
        num_heads=4,
        dim_feedforward=64,
        num_layers=4,
    )
    with torch.no_grad():
        mask_features, multi_scale = small_pixel_decoder()(features())
    train_out = decoder.train()(multi_scale, mask_features)
    eval_out = decoder.eval()(multi_scale, mask_features)
    assert set(eval_out) == {"pred_logits", "pred_masks"}
    assert train_out["layer_logits"].shape == (5, 2, 7, 5) and train_out["layer_masks"].shape == (5, 2, 7, 16, 24)
    assert len(train_out["aux_outputs"]) == 4
    torch.testing.assert_close(eval_out["pred_logits"], train_out["pred_logits"])
    torch.testing.assert_close(eval_out["pred_masks"], train_out["pred_masks"])
    torch.testing.assert_close(train_out["aux_outputs"][1]["pred_masks"], train_out["layer_masks"][1])
    # the initial prediction comes from the learnable queries alone: identical for both images
    torch.testing.assert_close(train_out["layer_logits"][0, 0], train_out["layer_logits"][0, 1])


def test_decoder_rejects_wrong_number_of_levels():
    decoder = MultiScaleMaskedTransformerDecoder(in_channels=32, num_classes=3, mask_dim=24, hidden_dim=32, num_heads=4)
    with pytest.raises(ValueError, match="3 feature levels, got 2"):
        decoder([torch.zeros(1, 32, 2, 2)] * 2, torch.zeros(1, 24, 8, 8))


def test_sine_position_embedding_formula():
    pos = sine_position_embedding(3, 4, 8)
    assert pos.shape == (12, 8)
    # pixel (row 1, col 2): y = 2/3 * 2pi, x = 3/4 * 2pi; frequencies 10000^(2*(k//2)/4) for k in 0..3
    y, x = 2 / 3 * 2 * math.pi, 3 / 4 * 2 * math.pi
    expected = [math.sin(y), math.cos(y), math.sin(y / 100), math.cos(y / 100)]
    expected += [math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]
    torch.testing.assert_close(pos[1 * 4 + 2], torch.tensor(expected), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sine_position_embedding(2, 2, 6)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        sine_position_embedding(2, 2, 8, eps=-1e-6)


@pytest.mark.parametrize("eps", [1e-6, 0.0, 0.5])
def test_sine_position_embedding_divides_by_size_plus_eps(eps):
    height, width, channels = 3, 5, 16
    pos = sine_position_embedding(height, width, channels, eps=eps).double()
    feats = channels // 2
    k = torch.arange(feats, dtype=torch.float64)
    freq = 10000.0 ** (2 * (k // 2) / feats)
    rows = (torch.arange(1, height + 1, dtype=torch.float64) / (height + eps) * 2 * math.pi)[:, None] / freq
    cols = (torch.arange(1, width + 1, dtype=torch.float64) / (width + eps) * 2 * math.pi)[:, None] / freq
    phase = torch.where(k % 2 == 0, 0.0, math.pi / 2)  # cos on odd channels
    expected_y = torch.sin(rows + phase)[:, None, :].expand(height, width, feats)
    expected_x = torch.sin(cols + phase)[None, :, :].expand(height, width, feats)
    expected = torch.cat([expected_y, expected_x], -1).reshape(height * width, channels)
    torch.testing.assert_close(pos, expected, rtol=0, atol=2e-6)
    if eps == 0.5:  # the normaliser is really used: far from the eps = 0 embedding
        assert (pos - sine_position_embedding(height, width, channels, eps=0.0).double()).abs().max() > 0.1


def test_pixel_decoder_passes_its_position_eps():
    torch.manual_seed(0)
    decoder = small_pixel_decoder()
    assert decoder.pos_embed_eps == 1e-6
    with torch.no_grad():
        for layer in decoder.encoder:  # positions reach the output only through the sampling offsets/weights
            layer.attn.sampling_proj.weight.normal_(0, 0.1)
        default = decoder(features())[0]
        decoder.pos_embed_eps = 0.5
        shifted = decoder(features())[0]
    assert (default - shifted).abs().max() > 1e-3
