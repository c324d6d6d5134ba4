"""Computational cost (the paper's Table 11): params, GFLOPs (multiply-adds), images/s.

* :class:`CostTable`: each profiled encoder and the recommended fused pair at the profile's input size;
* :func:`model_cost`: the whole segmentation model (backbone + pixel decoder + transformer decoder), e.g. at the
  paper's 1024x2048 Cityscapes input; :func:`write_model_cost` puts it into a training run's folder and
  :func:`model_costs` builds the models of training configs / run folders for a profile's ``cost.md``.

FLOPs are counted by PyTorch's ``FlopCounterMode`` on a forward pass over *meta* tensors (the module's own
parameters and buffers are swapped for meta copies with ``torch.func.functional_call``), so counting costs no
compute or memory, does not touch the model's weights, and gives the same number on every device: on a CPU the
attention kernel (``_scaled_dot_product_flash_attention_for_cpu``) has no FLOP formula and a real forward pass
would leave attention out, while on meta tensors attention decomposes into counted matrix products. Counted:
convolutions and matrix products (incl. attention); not counted: element-wise ops, normalisation, and the
deformable sampling (``grid_sample``) of the pixel decoder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mgfusion.utils.io import atomic_write_text

logger = logging.getLogger(__name__)


def count_params(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable


def meta_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Meta-device copies (shape and dtype only) of every parameter and buffer of ``module``, by name."""
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    return {k: torch.empty_like(v, device="meta") for k, v in named}


def meta_call(module: nn.Module, *args: Any) -> Any:
    """``module(*args)`` with the module's parameters and buffers swapped for meta copies (weights untouched)."""
    from torch.func import functional_call

    return functional_call(module, meta_state(module), args)


def count_gflops(run: Callable[[], Any]) -> float:
    """Billions of multiply-adds counted by ``FlopCounterMode`` while ``run()`` executes (no autograd)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() / 2 / 1e9  # FlopCounterMode counts a multiply-add as two FLOPs


def gflops(module: nn.Module, x: torch.Tensor) -> float | None:
    """Forward cost of ``module(x)`` in billions of multiply-adds (the "GFLOPs" of most papers and of fvcore).

    Counted on meta tensors (module docstring), which, unlike fvcore's JIT trace, follows every call of a
    composite model: fvcore counted a fused DINOv3 + SAM2 pair as less than the SAM2 encoder alone and skipped
    ``scaled_dot_product_attention``. Returns None if the forward pass cannot be counted.
    """
    x = torch.empty(x.shape, dtype=x.dtype, device="meta")
    try:
        return count_gflops(lambda: meta_call(module, x))
    except Exception as e:  # noqa: BLE001 - a counting failure must not fail a profile; the table shows "–"
        logger.warning("could not count the FLOPs of %s: %s", type(module).__name__, e)
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


# ---- the whole segmentation model -------------------------------------------------------------------------------
#: the parts of a Mask2Former-style model, run in this order by :func:`model_cost`
MODEL_PARTS = ("backbone", "pixel_decoder", "transformer_decoder")


def _has_dynamic_stride(model: nn.Module) -> bool:
    return any(bool(getattr(m, "dynamic_stride", False)) for m in model.modules())


@contextlib.contextmanager
def inference_mode_of(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` for the duration, then every submodule's own ``training`` flag restored."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


def model_cost(model: nn.Module, image_hw: Sequence[int]) -> dict[str, Any]:
    """Parameters and inference GFLOPs (the model in eval mode) of a whole segmentation model at one input size, per
    part and in total.

    Args:
        model: a Mask2Former-style model with ``backbone`` (normalized (1,3,H,W) -> features), ``pixel_decoder``
            (features -> (mask features, multi-scale features)) and ``transformer_decoder`` submodules (mgfusion's
            ``MaskFormer``); a DDP wrapper is unwrapped. Its weights are not touched (counted on meta tensors).
        image_hw: the input ``(H, W)`` in pixels, e.g. ``(1024, 2048)`` (the paper's Cityscapes input).

    Returns:
        ``{"input": "HxW", "params_M", "trainable_M", "GFLOPs", "parts": {part: {"params_M", "trainable_M",
        "GFLOPs"}}, "other_params_M", "flops_note"}``: millions of parameters, billions of multiply-adds;
        ``other_params_M`` = parameters outside the three parts (e.g. a criterion's).
    """
    model = getattr(model, "module", model)
    missing = [p for p in MODEL_PARTS if not isinstance(getattr(model, p, None), nn.Module)]
    if missing:
        raise TypeError(f"model_cost needs a model with {', '.join(MODEL_PARTS)} submodules (Mask2Former); "
                        f"{type(model).__name__} lacks {missing}")
    if _has_dynamic_stride(model):
        raise ValueError("model_cost: the fusion backbone chooses its injection stride per batch from the images "
                         "(backbone.fusion.dynamic=true), so the cost depends on the data; count a fixed stride "
                         "instead (backbone.fusion.stride=S)")
    h, w = (int(v) for v in image_hw)
    x = torch.empty(1, 3, h, w, device="meta")
    feats: dict[str, Any] = {}
    with inference_mode_of(model):  # the inference cost (e.g. without a distilled-away auxiliary), no training losses
        flops = {
            "backbone": count_gflops(lambda: feats.update(backbone=meta_call(model.backbone, x))),
            "pixel_decoder": count_gflops(
                lambda: feats.update(pixel=meta_call(model.pixel_decoder, feats["backbone"]))),
            "transformer_decoder": count_gflops(
                lambda: meta_call(model.transformer_decoder, feats["pixel"][1], feats["pixel"][0])),
        }
    parts = {}
    for name in MODEL_PARTS:
        total, trainable = count_params(getattr(model, name))
        parts[name] = {"params_M": total / 1e6, "trainable_M": trainable / 1e6, "GFLOPs": flops[name]}
    total, trainable = count_params(model)
    return {"input": f"{h}x{w}", "params_M": total / 1e6, "trainable_M": trainable / 1e6,
            "GFLOPs": sum(flops.values()), "parts": parts,
            "other_params_M": total / 1e6 - sum(p["params_M"] for p in parts.values()),
            "flops_note": "multiply-adds of convolutions and matrix products (incl. attention), counted by "
                          "FlopCounterMode on meta tensors; element-wise ops and grid_sample not counted"}


def model_cost_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`model_cost` results (one row each; ``rows[i]["model"]`` names the model)."""
    head = ("| Model | Input | Params (M) | Backbone / pixel dec. / transformer dec. params (M) | GFLOPs | "
            "Backbone / pixel dec. / transformer dec. GFLOPs |")
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        p = r["parts"]
        lines.append(f"| {r.get('model', '')} | {r['input']} | {r['params_M']:.1f} | "
                     + " / ".join(f"{p[k]['params_M']:.1f}" for k in MODEL_PARTS) + f" | {r['GFLOPs']:.0f} | "
                     + " / ".join(f"{p[k]['GFLOPs']:.0f}" for k in MODEL_PARTS) + " |")
    return "\n".join(lines) + "\n"


def write_model_cost(model: nn.Module, output_dir: str | os.PathLike, image_hw: Sequence[int] = (1024, 2048)
                     ) -> dict[str, Any] | None:
    """Write ``model_cost.json`` and ``model_cost.md`` (:func:`model_cost` at ``image_hw``, default the paper's
    1024x2048 Cityscapes input) into a training run's ``output_dir``; returns the cost.

    Models without the Mask2Former parts (e.g. a test model) get no file and None (logged), so a training run can
    always call this.
    """
    inner = getattr(model, "module", model)
    if not all(isinstance(getattr(inner, p, None), nn.Module) for p in MODEL_PARTS):
        logger.info("model_cost: %s has no %s submodules; no model_cost.json written", type(inner).__name__,
                    "/".join(MODEL_PARTS))
        return None
    if _has_dynamic_stride(inner):
        logger.info("model_cost: the injection stride changes per batch (dynamic fusion); no model_cost.json written")
        return None
    cost = {"model": type(inner).__name__, **model_cost(inner, image_hw)}
    atomic_write_text(os.path.join(output_dir, "model_cost.json"), json.dumps(cost, indent=2) + "\n")
    atomic_write_text(os.path.join(output_dir, "model_cost.md"), model_cost_markdown([cost]))
    return cost


def model_costs(configs: Sequence[str], image_hw: Sequence[int]) -> list[dict[str, Any]]:
    """:func:`model_cost` of the model of each training config (a run folder holding ``config.yaml``, or a config
    file), built on the CPU with random weights by ``mgfusion.engine.build.build_model``.

    Only the counted forward matters, so the encoders' weight files are not loaded and the model is built for
    semantic outputs (instance / panoptic post-processing needs the dataset's registered metadata and is not
    counted anyway).
    """
    from omegaconf import OmegaConf, open_dict

    # the training model builder, imported only when asked (profiling does not otherwise depend on the engine)
    from mgfusion.engine.build import build_model

    rows = []
    for cfg_path in configs:
        path = os.path.join(cfg_path, "config.yaml") if os.path.isdir(cfg_path) else cfg_path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"cost_models entry {cfg_path}: {path} not found (give a training run folder or "
                                    "its config.yaml)")
        cfg = OmegaConf.load(path)
        with open_dict(cfg):
            backbone = cfg.backbone
            for node in [backbone[p] for p in ("master", "auxiliary") if p in backbone] + [backbone]:
                if "weights" in node:
                    node.weights = None
            cfg.model.semantic_on, cfg.model.instance_on, cfg.model.panoptic_on = True, False, False
        model = build_model(cfg, torch.device("cpu"))
        rows.append({"model": os.path.abspath(cfg_path), **model_cost(model, image_hw)})
        del model
    return rows
