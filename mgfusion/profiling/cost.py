"""Computational cost of encoders and of a fused pair (the paper's Table 11): params, GFLOPs (multiply-adds), images/s."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


def count_params(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable


def gflops(module: nn.Module, x: torch.Tensor) -> float | None:
    """Forward cost of ``module(x)`` in billions of multiply-adds (the "GFLOPs" of most papers and of fvcore).

    Counted by PyTorch's own ``FlopCounterMode`` at the operator level (convolutions, matrix products, attention
    kernels), which, unlike fvcore's JIT trace, follows every call of a composite model: fvcore counted a fused
    DINOv3 + SAM2 pair as less than the SAM2 encoder alone and skipped ``scaled_dot_product_attention``.
    Returns None if the forward pass cannot be counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    except Exception as e:  # noqa: BLE001 - a counting failure must not fail a profile; the table shows "–"
        logger.warning("could not count the FLOPs of %s: %s", type(module).__name__, e)
        return None
    return counter.get_total_flops() / 2 / 1e9  # FlopCounterMode counts a multiply-add as two FLOPs


def throughput(module: nn.Module, x: torch.Tensor, *, repeats: int = 3, warmup: int = 1) -> float:
    """Images per second of ``module(x)`` (batch of ``x.shape[0]``), median over ``repeats`` timed runs."""
    def run() -> None:
        with torch.inference_mode():
            module(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    times.sort()
    return x.shape[0] / times[len(times) // 2]


def cost_row(name: str, module: nn.Module, x: torch.Tensor, *, repeats: int = 3) -> dict[str, Any]:
    """One row of the cost table for ``module`` at the input ``x`` (B,3,H,W); only ``x[:1]`` is used.

    Returns ``{"model", "params_M", "trainable_M" (millions), "GFLOPs" (None if untraceable), "images_per_s",
    "input" ("HxW"), "device"}``.
    """
    module = module.eval()
    total, trainable = count_params(module)
    return {
        "model": name,
        "params_M": total / 1e6,
        "trainable_M": trainable / 1e6,
        "GFLOPs": gflops(module, x[:1]),
        "images_per_s": throughput(module, x[:1], repeats=repeats),
        "input": f"{x.shape[-2]}x{x.shape[-1]}",
        "device": str(x.device),
    }


def cost_input_size(resolution: int | Sequence[int] | None, max_size: int | None) -> tuple[int, int]:
    """Input size of the cost table: ``[H, W]`` as given, an int short side as a square, else ``max_size`` (512)."""
    if resolution is not None and not isinstance(resolution, int):
        return int(resolution[0]), int(resolution[1])
    side = int(resolution or max_size or 512)
    return side, side


class CostTable:
    """Params / GFLOPs / images-per-second of each encoder and of the recommended fused pair (paper Table 11).

    Args:
        input_hw: (H, W) of the random input every row is measured on.
        device: where the models and the input live.
        repeats: timed forward passes per row (median reported).
    """

    def __init__(self, input_hw: tuple[int, int], device: torch.device, *, repeats: int = 3) -> None:
        self.input_hw, self.device, self.repeats = input_hw, device, repeats

    def rows(self, encoders: Mapping[str, nn.Module], recommendation: Mapping[str, Any] | None = None
             ) -> list[dict[str, Any]]:
        """One :func:`cost_row` per encoder, plus ``fused <master> + <auxiliary> @OS<stride>`` if recommended."""
        from mgfusion.backbones import (
            FusionBackbone,  # the cost of the fused pair needs the fusion module itself
        )

        x = torch.randn(1, 3, *self.input_hw, device=self.device)
        rows = [cost_row(name, enc, x, repeats=self.repeats) for name, enc in encoders.items()]
        if recommendation:
            r = recommendation
            fused = FusionBackbone(master=encoders[r["master"]], auxiliary=encoders[r["auxiliary"]],
                                   inject={int(r["stride"]): "replace"})
            rows.append(cost_row(f"fused {r['master']} + {r['auxiliary']} @OS{r['stride']}", fused, x,
                                 repeats=self.repeats))
        return rows
