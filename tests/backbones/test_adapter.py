"""detectron2 Backbone adapter over mgfusion encoders."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, build_backbone

from mgfusion.backbones import build_encoder
from mgfusion.modeling.backbone import EncoderBackbone, add_mgfusion_config


@pytest.mark.parametrize("name", ["sam2_hiera_micro", "dinov3_micro16"])
def test_output_shape_matches_real_outputs(name):
    bb = EncoderBackbone(encoder=build_encoder(name)).eval()
    assert isinstance(bb, Backbone)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        out = bb(x)
    shapes = bb.output_shape()
    assert list(out) == ["res2", "res3", "res4", "res5"] == list(shapes)
    for k, f in out.items():
        assert f.shape[1] == shapes[k].channels
        assert f.shape[-2:] == (96 // shapes[k].stride, 128 // shapes[k].stride)
    assert bb.size_divisibility == 32 and bb.padding_constraints["size_divisibility"] == 32
    assert bb.pixel_mean == pytest.approx((123.675, 116.28, 103.53))


def test_registered_in_detectron2_and_buildable_from_yacs():
    assert BACKBONE_REGISTRY.get("EncoderBackbone") is EncoderBackbone
    cfg = add_mgfusion_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "EncoderBackbone"
    cfg.MODEL.MGFUSION.ENCODER = "sam2_hiera_micro"
    cfg.MODEL.MGFUSION.FREEZE = True
    bb = build_backbone(cfg)
    assert isinstance(bb, EncoderBackbone) and bb.encoder.frozen
    assert bb.output_shape()["res5"].channels == 256


def test_name_with_kwargs_and_errors():
    bb = EncoderBackbone(encoder="dinov3_micro16", neck="raw")
    assert {s.channels for s in bb.output_shape().values()} == {96}
    with pytest.raises(TypeError, match="only valid with an encoder name"):
        EncoderBackbone(encoder=build_encoder("dinov3_micro16"), neck="raw")
