"""cost_row / CostTable: parameter counts, fvcore GFLOPs (exact on a convolution), throughput, the fused pair."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mgfusion.backbones import build_encoder
from mgfusion.profiling.cost import CostTable, cost_input_size, cost_row


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
