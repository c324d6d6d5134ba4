"""Computational cost of encoders and of a fused pair (the paper's Table 11): params, GFLOPs (fvcore), images/s."""

from __future__ import annotations

import logging
import time
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
    """Forward GFLOPs of ``module(x)`` counted by fvcore (one multiply-add = one FLOP, fvcore's convention).

    Returns None if fvcore cannot trace the model.
    """
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:  # pragma: no cover - fvcore is a dependency
        return None
    try:
        with torch.no_grad():
            analysis = FlopCountAnalysis(module, (x,))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            return float(analysis.total()) / 1e9
    except Exception as e:  # tracing failures should not fail a profile; reported in the table as "–"
        logger.warning("fvcore could not count FLOPs of %s: %s", type(module).__name__, e)
        return None


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
    """One row of the cost table for ``module`` at the input ``x`` (B,3,H,W)."""
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
