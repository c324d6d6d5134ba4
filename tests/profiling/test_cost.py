"""cost_row / CostTable / model_cost: parameter counts, GFLOPs (exact on a convolution and on attention), throughput,
the fused pair, the whole segmentation model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mgfusion.backbones import build_encoder
from mgfusion.profiling.cost import (
    CostTable,
    cost_input_size,
    cost_row,
    gflops,
    model_cost,
    write_model_cost,
)


def test_cost_row_of_a_convolution_is_exact():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    conv.bias.requires_grad_(False)
    row = cost_row("conv", conv, torch.randn(2, 3, 16, 20), repeats=1)
    assert row["params_M"] == pytest.approx((8 * 3 * 9 + 8) / 1e6)
    assert row["trainable_M"] == pytest.approx(8 * 3 * 9 / 1e6)
    assert row["GFLOPs"] == pytest.approx(16 * 20 * 8 * 3 * 9 / 1e9)  # fvcore: one multiply-add = one FLOP
    assert row["images_per_s"] > 0 and row["input"] == "16x20" and row["device"] == "cpu"


def test_cost_table_counts_encoders_and_the_fused_pair():
    torch.manual_seed(0)
    encs = {n: build_encoder(n, freeze=True) for n in ("dinov3_micro16", "sam2_hiera_micro")}
    rows = CostTable((64, 64), torch.device("cpu"), repeats=1).rows(
        encs, {"master": "dinov3_micro16", "auxiliary": "sam2_hiera_micro", "stride": 8})
    assert [r["model"] for r in rows] == ["dinov3_micro16", "sam2_hiera_micro",
                                          "fused dinov3_micro16 + sam2_hiera_micro @OS8"]
    assert rows[2]["params_M"] == pytest.approx(rows[0]["params_M"] + rows[1]["params_M"], rel=1e-6)
    for r in rows:  # encoders return {stride: map}; the FLOP count must still trace them
        assert r["GFLOPs"] is not None and r["GFLOPs"] > 0
    assert rows[2]["GFLOPs"] == pytest.approx(rows[0]["GFLOPs"] + rows[1]["GFLOPs"], rel=1e-2)  # replace adds ~0
    assert cost_input_size([32, 48], 1024) == (32, 48) and cost_input_size(512, 1024) == (512, 512)
    assert cost_input_size(None, 800) == (800, 800)


def test_attention_flops_are_counted_on_every_device():
    """A real CPU forward hides attention from FlopCounterMode (its CPU kernel has no formula); the meta count
    gives the exact 2 N^2 d multiply-adds of softmax(Q K^T) V."""
    class Attention(nn.Module):
        def forward(self, x):
            return torch.nn.functional.scaled_dot_product_attention(x, x, x)

    n, d = 64, 16
    assert gflops(Attention(), torch.randn(1, 1, n, d)) == pytest.approx(2 * n * n * d / 1e9)


def test_model_cost_of_the_demo_segmentation_model(tmp_path):
    from mgfusion.engine.build import build_model
    from mgfusion.engine.data import register_datasets
    from tests.engine.helpers import compose_train

    cfg = compose_train("backbone=fusion_micro_d3s2", "model=mask2former_tiny", "dataset=synthetic_instance",
                        f"dataset.register.root={tmp_path / 'data'}", f"output_dir={tmp_path}")
    register_datasets(cfg.dataset)
    model = build_model(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, large = model_cost(model, (64, 128)), write_model_cost(model, tmp_path, image_hw=(128, 256))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "weights untouched"
    assert next(model.parameters()).device.type == "cpu"
    total = sum(p.numel() for p in model.parameters()) / 1e6
    parts = large["parts"]
    assert large["params_M"] == pytest.approx(total)
    assert sum(p["params_M"] for p in parts.values()) + large["other_params_M"] == pytest.approx(total)
    assert parts["backbone"]["params_M"] == pytest.approx(sum(p.numel() for p in model.backbone.parameters()) / 1e6)
    assert large["GFLOPs"] == pytest.approx(sum(p["GFLOPs"] for p in parts.values()))
    x = torch.zeros(1, 3, 128, 256)
    assert parts["backbone"]["GFLOPs"] == pytest.approx(gflops(model.backbone.encoder, x))
    assert all(p["GFLOPs"] > 0 for p in parts.values()) and large["input"] == "128x256"
    # 4x the pixels: the pixel decoder's convolutions cost 4x (+ its fixed-size parts), the backbone more than 3x
    assert large["parts"]["pixel_decoder"]["GFLOPs"] >= 3.9 * small["parts"]["pixel_decoder"]["GFLOPs"]
    assert large["parts"]["backbone"]["GFLOPs"] > 3 * small["parts"]["backbone"]["GFLOPs"]
    written = json.loads((tmp_path / "model_cost.json").read_text())
    assert written["model"] == "MaskFormer" and written["GFLOPs"] == pytest.approx(large["GFLOPs"])
    assert "| MaskFormer | 128x256 |" in (tmp_path / "model_cost.md").read_text()
    with pytest.raises(TypeError, match="lacks \\['pixel_decoder', 'transformer_decoder'\\]"):
        model_cost(_only_backbone(), (32, 32))
    other = tmp_path / "other"
    other.mkdir()
    assert write_model_cost(_only_backbone(), other) is None and not list(other.iterdir()), "no file, no crash"


def _only_backbone() -> nn.Module:
    m = nn.Module()
    m.backbone = nn.Conv2d(3, 3, 1)
    return m
